"""传感器 IoT devices: what they measure, where they belong, battery and state."""

from twin.schema import Column, LayerSpec, MapStyle

KINDS = ("parking", "air", "smoke", "water_leak", "noise", "manhole", "elevator", "water_meter",
         "door", "gas")

SPEC = LayerSpec(
    name="sensors",
    title_zh="传感器",
    title_en="Sensors",
    geometry_type="Point",
    id_field="sensor_id",
    columns=(
        Column("sensor_id", "text", "设备编号", "Sensor id", required=True,
               aliases=("id", "device_id", "设备编号")),
        Column("name", "text", "名称", "Name"),
        Column("kind", "text", "类型", "Kind", required=True, choices=KINDS,
               aliases=("type", "类型")),
        Column("properties", "json", "监测项", "Measured properties",
               doc='property → unit, e.g. {"pm25": "ug/m3"} (SensorThings ObservedProperty)'),
        Column("ref_building", "text", "所属楼栋", "Building", doc="building_code it belongs to"),
        Column("ref_lot", "text", "所属停车场", "Parking lot", doc="lot_id it belongs to"),
        Column("battery_level", "float", "电量", "Battery", unit="0–1", min=0, max=1,
               aliases=("batteryLevel", "battery")),
        Column("device_state", "text", "设备状态", "State",
               choices=("ok", "low_battery", "fault", "offline"), aliases=("deviceState",)),
        Column("report_interval_s", "int", "上报周期", "Report interval", unit="s", min=1),
    ),
    style=MapStyle(fill=(180, 90, 255, 230), radius_m=2.5, z_order=70),
    tooltip=("name", "sensor_id", "kind", "device_state", "battery_level"),
    fiware_type="Device",
)
