"""道路 Roads and paths: the basemap, and the walking network of the life circles."""

from twin.schema import Column, LayerSpec, MapStyle

SPEC = LayerSpec(
    name="roads",
    title_zh="道路",
    title_en="Roads",
    geometry_type="LineString",
    id_field="road_id",
    located=False,
    columns=(
        Column("road_id", "text", "道路编号", "Road id", required=True, aliases=("id", "osm_id")),
        Column("name", "text", "名称", "Name", aliases=("名称",)),
        Column("kind", "text", "等级", "Kind",
               choices=("primary", "secondary", "internal", "path"), aliases=("highway",)),
        Column("width_m", "float", "宽度", "Width", unit="m", min=0, max=100, aliases=("width",)),
    ),
    style=MapStyle(line=(90, 100, 120, 255), line_width_m=6, z_order=8),
    tooltip=("name", "kind", "width_m"),
)
