"""居民 Residents by household: personal data, masked and audited (no geometry of their own)."""

from twin.schema import Column, LayerSpec, MapStyle

SPEC = LayerSpec(
    name="residents",
    title_zh="居民",
    title_en="Residents",
    geometry_type=None,
    id_field="resident_id",
    located=False,
    columns=(
        Column("resident_id", "text", "居民编号", "Resident id", required=True),
        Column("building_code", "text", "楼栋编码", "Building", required=True),
        Column("unit", "text", "单元", "Unit"),
        Column("room", "text", "房号", "Room"),
        Column("name", "text", "姓名", "Name", personal=True),
        Column("phone", "text", "电话", "Phone", personal=True),
        Column("id_number", "text", "身份证号", "ID number", personal=True),
        Column("household_size", "int", "户内人数", "Household size", unit="人", min=1, max=30),
        Column("tags", "text", "关注标签", "Care tags", doc="e.g. elderly living alone",
               personal=True),
    ),
    style=MapStyle(visible=False, z_order=0),
    tooltip=(),
)
