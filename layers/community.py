"""社区边界 The community boundary."""

from twin.schema import Column, LayerSpec, MapStyle

SPEC = LayerSpec(
    name="community",
    title_zh="社区边界",
    title_en="Community boundary",
    geometry_type="Polygon",
    id_field="community_code",
    located=False,
    columns=(
        Column("community_code", "text", "社区代码", "Community code", required=True,
               doc="12-digit statistical area code: county (6) + street (3) + community (3)"),
        Column("name", "text", "社区名称", "Name", required=True),
        Column("street_code", "text", "街道代码", "Street code", doc="9 digits: county + street"),
        Column("street_name", "text", "街道", "Street"),
        Column("county_code", "text", "区县代码", "County code", doc="GB/T 2260"),
        Column("county_name", "text", "区县", "County"),
        Column("population", "int", "人口", "Population", unit="人", min=0),
    ),
    style=MapStyle(fill=(0, 0, 0, 0), line=(0, 229, 255, 255), line_width_m=4, z_order=5),
    tooltip=("name", "community_code", "population"),
    fiware_type="AdministrativeArea",
)
