"""摄像头 Cameras with where they look: heading, field of view and range."""

from twin.schema import Column, LayerSpec, MapStyle

SPEC = LayerSpec(
    name="cameras",
    title_zh="摄像头",
    title_en="Cameras",
    geometry_type="Point",
    id_field="camera_id",
    columns=(
        Column("camera_id", "text", "摄像头编号", "Camera id", required=True,
               aliases=("id", "编号", "设备编号")),
        Column("name", "text", "名称", "Name", aliases=("名称",)),
        Column("heading_deg", "float", "朝向", "Heading", unit="°", min=0, max=360,
               required=True, doc="clockwise from north", aliases=("heading", "direction", "朝向")),
        Column("fov_deg", "float", "视场角", "Field of view", unit="°", min=1, max=360,
               required=True, aliases=("fov", "视角")),
        Column("range_m", "float", "视距", "Range", unit="m", min=1, max=500, required=True,
               aliases=("range", "视距")),
        Column("mount_height_m", "float", "安装高度", "Mount height", unit="m", min=0, max=100,
               aliases=("height", "安装高度")),
        Column("status", "text", "状态", "Status", choices=("online", "offline", "maintenance"),
               aliases=("状态",)),
    ),
    style=MapStyle(fill=(255, 200, 0, 230), line=(120, 80, 0, 255), radius_m=3, z_order=60),
    tooltip=("name", "camera_id", "heading_deg", "fov_deg", "range_m", "status"),
    fiware_type="Device",
)
