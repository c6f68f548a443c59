"""楼栋 Buildings: footprints with use, floors, height and how many live there."""

from twin.schema import Column, LayerSpec, MapStyle

#: The ``use`` of OpenStreetMap ``building=*`` values (wiki Key:building, by its categories) and
#: of the Chinese names offices use. ``yes`` is a building of unknown use: left empty.
_OSM_USE = {
    "residential": (
        "apartments", "barracks", "bungalow", "cabin", "detached", "dormitory", "farm", "ger",
        "house", "houseboat", "residential", "semidetached_house", "static_caravan",
        "stilt_house", "terrace", "tree_house",
    ),
    "commercial": ("commercial", "hotel", "kiosk", "office", "retail", "supermarket"),
    "industrial": ("factory", "industrial", "manufacture", "warehouse"),
    "public": (
        "cathedral", "chapel", "church", "civic", "college", "fire_station", "government",
        "hospital", "kindergarten", "monastery", "mosque", "museum", "public", "religious",
        "school", "shrine", "sports_centre", "sports_hall", "stadium", "synagogue", "temple",
        "toilets", "train_station", "transportation", "university",
    ),
    "other": (
        "barn", "boathouse", "bunker", "carport", "construction", "container", "cowshed",
        "farm_auxiliary", "garage", "garages", "gatehouse", "greenhouse", "hut", "outbuilding",
        "parking", "roof", "ruins", "service", "shed", "silo", "stable", "storage_tank", "sty",
        "transformer_tower", "utility", "water_tower",
    ),
}
_ZH_USE = {
    "residential": ("住宅", "居住", "住宅楼", "宿舍", "民居"),
    "commercial": ("商业", "商铺", "商场", "办公", "写字楼", "酒店", "商务"),
    "industrial": ("工业", "厂房", "仓库", "仓储"),
    "public": ("公共", "公建", "公共服务", "学校", "医院", "幼儿园", "政府", "社区服务中心"),
    "mixed": ("商住", "综合", "混合", "商住混合"),
    "other": ("其他", "其它", "车库", "附属", "配套"),
}
USE_VALUES: tuple[tuple[str, str | None], ...] = (
    ("yes", None),
    *((name, use) for vocabulary in (_OSM_USE, _ZH_USE) for use, names in vocabulary.items()
      for name in names),
)

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
               aliases=("building", "用途"), values=USE_VALUES),
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
