"""配套设施 Life-circle facilities: schools, clinics, elderly care, markets, parks."""

from twin.schema import Column, LayerSpec, MapStyle

KINDS = ("school", "kindergarten", "clinic", "elderly_care", "market", "park", "community_center",
         "sports", "pharmacy", "bus_stop", "other")

#: Facility kinds of OpenStreetMap ``amenity=*`` (and ``leisure``/``highway`` values exports
#: put in one "type" column) and of the Chinese names offices use.
KIND_VALUES: tuple[tuple[str, str], ...] = (
    ("school", "school"), ("college", "school"), ("kindergarten", "kindergarten"),
    ("childcare", "kindergarten"), ("clinic", "clinic"), ("doctors", "clinic"),
    ("hospital", "clinic"), ("nursing_home", "elderly_care"), ("marketplace", "market"),
    ("community_centre", "community_center"), ("park", "park"), ("sports_centre", "sports"),
    ("pitch", "sports"), ("fitness_centre", "sports"), ("pharmacy", "pharmacy"),
    ("chemist", "pharmacy"), ("bus_stop", "bus_stop"), ("bus_station", "bus_stop"),
    ("学校", "school"), ("小学", "school"), ("中学", "school"), ("幼儿园", "kindergarten"),
    ("诊所", "clinic"), ("卫生服务站", "clinic"), ("社区卫生服务中心", "clinic"),
    ("医院", "clinic"), ("养老院", "elderly_care"), ("日间照料中心", "elderly_care"),
    ("菜市场", "market"), ("农贸市场", "market"), ("超市", "market"), ("公园", "park"),
    ("社区服务中心", "community_center"), ("党群服务中心", "community_center"),
    ("健身", "sports"), ("体育场", "sports"), ("药店", "pharmacy"), ("公交站", "bus_stop"),
)

SPEC = LayerSpec(
    name="facilities",
    title_zh="配套设施",
    title_en="Facilities",
    geometry_type="Point",
    also_geometry_types=("Polygon",),
    id_field="facility_id",
    columns=(
        Column("facility_id", "text", "设施编号", "Facility id", required=True, aliases=("id",)),
        Column("name", "text", "名称", "Name", aliases=("名称",)),
        Column("kind", "text", "类型", "Kind", required=True, choices=KINDS,
               aliases=("amenity", "type", "类型"), values=KIND_VALUES),
        Column("capacity", "int", "容量", "Capacity", min=0),
        Column("opening_hours", "text", "开放时间", "Opening hours"),
    ),
    style=MapStyle(fill=(255, 110, 80, 230), radius_m=6, z_order=40),
    tooltip=("name", "facility_id", "kind", "capacity"),
    fiware_type="PointOfInterest",
)
