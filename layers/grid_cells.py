"""单元网格 Unit grids: the spine of grid governance (see DOMAIN.md, "The grid is the spine")."""

from twin.schema import Column, LayerSpec, MapStyle

SPEC = LayerSpec(
    name="grid_cells",
    title_zh="单元网格",
    title_en="Unit grids",
    geometry_type="Polygon",
    id_field="grid_code",
    located=False,
    columns=(
        Column("grid_code", "text", "网格编码", "Grid code", required=True,
               doc="county + street + community + sequence, derived from the parts",
               aliases=("code", "wgbm", "网格编码", "GRID_CODE")),
        Column("county_code", "text", "区县代码", "County code", required=True),
        Column("street_code", "text", "街道代码", "Street code", required=True,
               doc="3-digit street/town part"),
        Column("community_code", "text", "社区代码", "Community code", required=True,
               doc="3-digit community part"),
        Column("sequence", "text", "网格序号", "Sequence", required=True),
        Column("name", "text", "网格名称", "Name", aliases=("wgmc", "网格名称")),
        Column("resp_grid_id", "text", "责任网格", "Responsibility grid", required=True),
        Column("grid_worker", "text", "网格员", "Grid worker"),
        Column("grid_worker_phone", "text", "网格员电话", "Grid worker phone", personal=True),
        Column("management_level", "text", "管理等级", "Management level",
               choices=("A", "B", "C")),
        Column("land_use", "text", "用地类型", "Land use"),
        Column("responsible_body", "text", "责任主体", "Responsible body",
               doc="falls back to the territory (属地兜底) when empty"),
        Column("valid_from", "date", "生效日期", "Valid from"),
        Column("valid_to", "date", "失效日期", "Valid to"),
    ),
    style=MapStyle(fill=(0, 180, 255, 40), line=(0, 200, 255, 220), line_width_m=2, z_order=10),
    tooltip=("grid_code", "name", "resp_grid_id", "grid_worker", "management_level"),
)


def full_code(county: str, street: str, community: str, sequence: str) -> str:
    """Derive the grid code string from its stored parts (14 digits for a 2-digit sequence)."""
    return f"{county}{street}{community}{sequence}"
