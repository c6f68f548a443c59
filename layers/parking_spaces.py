"""车位 Individual parking spaces (optional; occupancy sensors report per space)."""

from twin.schema import Column, LayerSpec, MapStyle

SPEC = LayerSpec(
    name="parking_spaces",
    title_zh="车位",
    title_en="Parking spaces",
    geometry_type="Point",
    also_geometry_types=("Polygon",),
    id_field="space_id",
    columns=(
        Column("space_id", "text", "车位编号", "Space id", required=True),
        Column("lot_id", "text", "所属停车场", "Lot"),
        Column("kind", "text", "类型", "Kind", choices=("standard", "charging", "accessible")),
    ),
    style=MapStyle(fill=(60, 200, 120, 200), radius_m=1.5, z_order=22, visible=False),
    tooltip=("space_id", "lot_id", "kind"),
    fiware_type="ParkingSpot",
)
