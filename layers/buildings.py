"""楼栋 Buildings: footprints with use, floors, height and how many live there."""

from twin.schema import Column, LayerSpec, MapStyle

SPEC = LayerSpec(
    name="buildings",
    title_zh="楼栋",
    title_en="Buildings",
    geometry_type="Polygon",
    id_field="building_code",
    columns=(
        Column("building_code", "text", "楼栋编码", "Building code", required=True,
               aliases=("code", "bldg_code", "楼栋编码", "编码", "id")),
        Column("name", "text", "名称", "Name", aliases=("bldg_name", "楼栋名称", "名称")),
        Column("use", "text", "用途", "Use",
               choices=("residential", "commercial", "public", "mixed", "industrial", "other"),
               aliases=("building", "用途")),
        Column("floors", "int", "层数", "Floors", unit="层", min=0, max=200,
               aliases=("building:levels", "levels", "层数", "cs")),
        Column("height_m", "float", "高度", "Height", unit="m", min=0, max=700,
               aliases=("height", "高度")),
        Column("units", "int", "单元数", "Units (stairwells)", min=0, aliases=("单元数",)),
        Column("households", "int", "户数", "Households", unit="户", min=0,
               aliases=("户数", "hh")),
        Column("residents_count", "int", "居住人数", "Residents", unit="人", min=0,
               aliases=("population", "人口", "居住人数")),
        Column("built_year", "int", "建成年份", "Built", min=1800, max=2100),
        Column("address", "text", "地址", "Address", aliases=("addr", "地址")),
    ),
    style=MapStyle(fill=(200, 200, 210, 220), line=(90, 90, 110, 255), extrude_by="height_m",
                   z_order=30),
    tooltip=("name", "building_code", "use", "floors", "households", "residents_count"),
    fiware_type="Building",
)
