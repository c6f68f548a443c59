"""停车场 Parking lots: surface, underground or on-street, as polygons or points."""

from twin.schema import Column, LayerSpec, MapStyle

#: The ``kind`` of OpenStreetMap ``parking=*`` values and of the Chinese names operators use
#: (multi-storey car parks have no kind of their own: map them with --values).
KIND_VALUES: tuple[tuple[str, str], ...] = (
    ("surface", "surface"), ("rooftop", "surface"), ("underground", "underground"),
    ("street_side", "on_street"), ("lane", "on_street"), ("on_kerb", "on_street"),
    ("half_on_kerb", "on_street"), ("layby", "on_street"), ("地面", "surface"),
    ("露天", "surface"), ("地下", "underground"), ("地下车库", "underground"),
    ("路边", "on_street"), ("路侧", "on_street"), ("路内", "on_street"), ("占道", "on_street"),
)

#: OpenStreetMap ``fee=yes/no`` says whether, not how much: free is 0, paid is unknown.
FEE_VALUES = (("no", 0.0), ("yes", None), ("免费", 0.0), ("收费", None))

SPEC = LayerSpec(
    name="parking",
    title_zh="停车场",
    title_en="Parking lots",
    geometry_type="Polygon",
    also_geometry_types=("Point",),
    id_field="lot_id",
    columns=(
        Column("lot_id", "text", "停车场编号", "Lot id", required=True, aliases=("id", "编号")),
        Column("name", "text", "名称", "Name", aliases=("名称",)),
        Column("kind", "text", "类型", "Kind", required=True,
               choices=("surface", "underground", "on_street"),
               aliases=("parking", "type", "类型"), values=KIND_VALUES),
        Column("total_spaces", "int", "车位总数", "Total spaces", unit="个", min=0,
               required=True, aliases=("totalSpotNumber", "capacity", "车位数", "泊位数")),
        Column("fee_per_hour", "float", "收费", "Fee", unit="元/小时", min=0,
               aliases=("fee", "收费标准"), values=FEE_VALUES),
        Column("operator", "text", "运营单位", "Operator", aliases=("运营单位",)),
    ),
    style=MapStyle(fill=(60, 200, 120, 170), line=(20, 120, 60, 255), radius_m=8, z_order=20),
    tooltip=("name", "lot_id", "kind", "total_spaces"),
    fiware_type="OffStreetParking",
)
