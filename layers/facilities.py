"""配套设施 Life-circle facilities: schools, clinics, elderly care, markets, parks."""

from twin.schema import Column, LayerSpec, MapStyle

KINDS = ("school", "kindergarten", "clinic", "elderly_care", "market", "park", "community_center",
         "sports", "pharmacy", "bus_stop", "other")

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
               aliases=("amenity", "type", "类型")),
        Column("capacity", "int", "容量", "Capacity", min=0),
        Column("opening_hours", "text", "开放时间", "Opening hours"),
    ),
    style=MapStyle(fill=(255, 110, 80, 230), radius_m=6, z_order=40),
    tooltip=("name", "facility_id", "kind", "capacity"),
    fiware_type="PointOfInterest",
)
