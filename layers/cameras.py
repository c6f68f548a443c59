"""摄像头 Cameras with where they look: heading, field of view and range."""

import numpy as np
import pandas as pd

from twin.schema import Column, LayerSpec, MapStyle

#: A camera's range when the file gives none: 30 m, what the community surveillance cameras of
#: the demo see a face or a plate at (fixed cameras 20-40 m, domes up to 50 m at night).
DEFAULT_RANGE_M = 30.0
#: OpenStreetMap ``camera:type``: a dome or panning camera sees all round.
FOV_VALUES = (("dome", 360.0), ("panning", 360.0), ("fixed", None))


def all_round_heading(frame: pd.DataFrame) -> np.ndarray:
    """0° (north) for cameras that see all round (360°), whose heading does not matter."""
    fov = pd.to_numeric(frame["fov_deg"], errors="coerce").to_numpy(dtype="float64")
    return np.where(fov >= 360, 0.0, np.nan)


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
               required=True, doc="clockwise from north; 0 for a 360° camera without one",
               aliases=("heading", "direction", "camera:direction", "朝向"),
               default=all_round_heading),
        Column("fov_deg", "float", "视场角", "Field of view", unit="°", min=1, max=360,
               required=True, aliases=("fov", "视角", "camera:type"), values=FOV_VALUES),
        Column("range_m", "float", "视距", "Range", unit="m", min=1, max=500, required=True,
               aliases=("range", "视距"), default=DEFAULT_RANGE_M,
               doc=f"{DEFAULT_RANGE_M:g} m when the file gives none"),
        Column("mount_height_m", "float", "安装高度", "Mount height", unit="m", min=0, max=100,
               aliases=("height", "安装高度")),
        Column("status", "text", "状态", "Status", choices=("online", "offline", "maintenance"),
               aliases=("状态",)),
    ),
    style=MapStyle(fill=(255, 200, 0, 230), line=(120, 80, 0, 255), radius_m=3, z_order=60),
    tooltip=("name", "camera_id", "heading_deg", "fov_deg", "range_m", "status"),
    fiware_type="Device",
)
