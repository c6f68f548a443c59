"""Deterministic synthetic twins: a Guilin community, tiled up to a street, a district and a city.

Everything here is fictional: names, phone numbers, ID numbers and grid workers are generated, and
every generated ID number carries a deliberately wrong check character (see :func:`id_check_char`)
so it can never be a real person's valid number. Only the county codes (GB/T 2260) are real.

One community template is laid out in a local metric CRS (UTM 49N) the way Chinese residential
communities are: walled compounds separated by roads, rows of south-facing slab blocks, gates,
internal roads, unit grids that tile the community. Larger scales repeat the template with
vectorised offsets and fresh codes, names and attributes; they never call the builder per community.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import geopandas as gpd
import numpy as np
import pandas as pd
import shapely
from pyproj import Transformer
from shapely.geometry import LineString, Point, Polygon

import layers
from twin.enrich import assign_grids, grid_index
from twin.errors import ValidationError
from twin.schema import CASES, CRS, EVENTS, coerce_table, validate_layer_frame
from twin.timeutil import to_utc

LOGGER = logging.getLogger(__name__)

ANCHOR = (110.29, 25.08)  # lon, lat of the demo community's centre (Yanshan District, Guilin)
LOCAL_CRS = "EPSG:32649"  # UTM zone 49N: metres
TILE_W, TILE_H = 900.0, 720.0  # one community, road centreline to road centreline
ROUND = 8  # decimal places of stored lon/lat (about 1 mm)

# (level size in tiles) community-in-street 5×4, street-in-district 5×2, district-in-city 2×5
SCALES: dict[str, tuple[int, int, int]] = {
    # name: (communities per street, streets per district, districts)
    "community": (1, 1, 1),
    "street": (20, 1, 1),
    "district": (20, 10, 1),
    "city": (20, 10, 10),
}
# fraction of the template's sensors and cameras kept per community (a city is sparser)
DENSITY = {"community": 1.0, "street": 1.0, "district": 1.0, "city": 0.55}
CAMERA_DENSITY = {"community": 1.0, "street": 1.0, "district": 1.0, "city": 0.5}

COUNTIES = (  # real GB/T 2260 codes of Guilin's districts and counties
    ("450311", "雁山区"),
    ("450302", "秀峰区"),
    ("450303", "叠彩区"),
    ("450304", "象山区"),
    ("450305", "七星区"),
    ("450312", "临桂区"),
    ("450321", "阳朔县"),
    ("450323", "灵川县"),
    ("450324", "全州县"),
    ("450325", "兴安县"),
)
STREET_NAMES = (
    "雁湖街道",
    "丹桂街道",
    "良雁街道",
    "桂岭街道",
    "漓东街道",
    "芳洲街道",
    "榕溪街道",
    "月岩街道",
    "金湾街道",
    "枫林街道",
)
COMMUNITY_NAMES = (
    "桂馨",
    "丹霞",
    "雁鸣",
    "芳华",
    "翠竹",
    "金桂",
    "玉兰",
    "榕荫",
    "清漓",
    "山水",
    "瑞丰",
    "和美",
    "春晖",
    "锦绣",
    "兰亭",
    "福泽",
    "安居",
    "晴岚",
    "碧溪",
    "梅岭",
    "松涛",
    "新桥",
    "凤鸣",
)
ROAD_STEMS = (
    "桂雁",
    "丹桂",
    "雁鸣",
    "漓雁",
    "芳杏",
    "月桂",
    "榕溪",
    "青峰",
    "瑞桂",
    "金岭",
    "翠屏",
    "兰桂",
    "雁湖",
    "云岭",
    "花溪",
    "凤岭",
    "桂香",
    "良丰",
    "南溪",
    "碧湾",
)
CN_NUM = ("", "一", "二", "三", "四", "五", "六", "七", "八", "九")
SURNAMES = np.array(list("王李张刘陈杨黄赵吴周徐孙马朱胡郭何高林罗韦蒙覃莫陆梁唐廖秦蒋谢邓"))
SURNAME_P = np.array(
    [
        8,
        8,
        7,
        6,
        6,
        5,
        6,
        4,
        4,
        3,
        3,
        2,
        2,
        2,
        2,
        2,
        2,
        2,
        2,
        2,
        3,
        2,
        2,
        2,
        2,
        3,
        3,
        2,
        2,
        2,
        2,
        2,
    ],
    dtype=float,
)
GIVEN = np.array(
    list(
        "伟芳娜敏静丽强磊军洋勇艳杰娟涛明超秀霞平刚桂英华玉兰文辉建国志红梅"
        "海燕凤云丹宇浩然欣怡子轩梓涵雨佳俊晨思琪家"
    )
)
PROPERTIES = {  # SensorThings ObservedProperty → unit of measurement, per sensor kind
    "parking": {"occupied": "0/1"},
    "air": {"pm25": "ug/m3", "pm10": "ug/m3", "no2": "ug/m3"},
    "smoke": {"smoke": "0/1"},
    "water_leak": {"leak": "0/1"},
    "noise": {"noise": "dBA"},
    "manhole": {"open": "0/1", "tilt": "deg"},
    "elevator": {"running": "0/1", "fault": "0/1"},
}
REPORT_INTERVAL_S = {
    "parking": 60,
    "air": 300,
    "smoke": 3600,
    "water_leak": 3600,
    "noise": 60,
    "manhole": 600,
    "elevator": 60,
}
KIND_NAMES = {
    "parking": "车位检测器",
    "air": "空气质量监测站",
    "smoke": "烟感",
    "water_leak": "水浸",
    "noise": "噪声监测",
    "manhole": "智能井盖",
    "elevator": "电梯监测",
}

# ID numbers: GB 11643 weights and check characters; generated numbers use a wrong one on purpose
_ID_WEIGHTS = np.array([7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2])
_ID_CHECK = np.array(list("10X98765432"))


# ---------------------------------------------------------------------------------------------
# The community template (local metres, origin at the community's south-west road crossing)


@dataclass
class Template:
    """One community's features in local metres, with template-level attributes."""

    layers: dict[str, pd.DataFrame]  # each has a ``geometry`` column of local shapely geometries


def _lattice_box(x0: float, y0: float, x1: float, y1: float, xs, ys) -> Polygon:
    """Return a box with a vertex wherever a cut line meets its edges, so shared edges match."""
    bottom = [(x, y0) for x in xs if x0 < x < x1]
    right = [(x1, y) for y in ys if y0 < y < y1]
    top = [(x, y1) for x in reversed(xs) if x0 < x < x1]
    left = [(x0, y) for y in reversed(ys) if y0 < y < y1]
    ring = [(x0, y0), *bottom, (x1, y0), *right, (x1, y1), *top, (x0, y1), *left]
    return Polygon(ring)


def _box(x0: float, y0: float, x1: float, y1: float) -> Polygon:
    return shapely.box(x0, y0, x1, y1)


GRID_BOXES = (  # (x0, y0, x1, y1, quadrant): 12 unit grids tiling the 900 × 720 m community
    (0, 0, 160, 360, "A"),
    (160, 0, 310, 360, "A"),
    (310, 0, 450, 360, "A"),
    (450, 0, 680, 180, "B"),
    (680, 0, 900, 180, "B"),
    (450, 180, 900, 360, "B"),
    (0, 360, 450, 480, "C"),
    (0, 480, 450, 600, "C"),
    (0, 600, 450, 720, "C"),
    (450, 360, 660, 720, "D"),
    (660, 360, 900, 540, "D"),
    (660, 540, 900, 720, "D"),
)
COMPOUNDS = {  # wall box, name, the side the main gate faces, floors class
    "A": ((20, 20, 437, 347), "桂馨苑", "east", "low"),
    "B": ((463, 20, 880, 347), "丹桂园", "west", "mid"),
    "C": ((20, 373, 437, 700), "漓江雅居", "east", "high"),
    "D": ((463, 373, 880, 700), "社区服务中心", "west", "public"),
}
SLABS = {  # footprint width, depth, column gap, row gap, units (stairwells), surface lot in front
    "low": (60.0, 12.0, 15.0, 22.0, 3, True),
    "mid": (60.0, 13.0, 15.0, 35.0, 3, True),
    "high": (60.0, 14.0, 25.0, 50.0, 2, False),
}


def _grid_lines() -> tuple[list[float], list[float]]:
    xs = sorted({b[0] for b in GRID_BOXES} | {b[2] for b in GRID_BOXES})
    ys = sorted({b[1] for b in GRID_BOXES} | {b[3] for b in GRID_BOXES})
    return xs, ys


def _template(rng: np.random.Generator) -> Template:
    """Lay out one community; small Python loops are fine here, it runs once per scenario."""
    xs, ys = _grid_lines()
    grids = pd.DataFrame(
        {
            "sequence": [f"{i + 1:02d}" for i in range(len(GRID_BOXES))],
            "quadrant": [b[4] for b in GRID_BOXES],
            "geometry": [_lattice_box(*b[:4], xs, ys) for b in GRID_BOXES],
        }
    )
    sizes: list[int] = []
    while sum(sizes) < len(grids):
        sizes.append(int(rng.choice([1, 2, 3], p=[0.15, 0.5, 0.35])))
    sizes[-1] -= sum(sizes) - len(grids)
    grids["resp_seq"] = np.repeat(np.arange(1, len(sizes) + 1), sizes)
    boundary = _lattice_box(0, 0, TILE_W, TILE_H, xs, ys)

    bld, roads, gates, lots, spaces, facilities = [], [], [], [], [], []
    for (x0, y0, x1, y1), cname, gate_side, klass in COMPOUNDS.values():
        ring = LineString(
            [
                (x0 + 10, y0 + 10),
                (x1 - 10, y0 + 10),
                (x1 - 10, y1 - 10),
                (x0 + 10, y1 - 10),
                (x0 + 10, y0 + 10),
            ]
        )
        roads.append({"name": f"{cname}环路", "kind": "internal", "width_m": 6.0, "geometry": ring})
        if klass == "public":
            lane_x, lane_y = 671.0, 536.0
        else:
            w, d, gx, gy, units, has_lot = SLABS[klass]
            bx0, bx1 = x0 + 22, x1 - 22
            by0, by1 = y0 + 22 + (42 if has_lot else 0), y1 - 22
            ncol = int((bx1 - bx0 + gx) // (w + gx))
            nrow = int((by1 - by0 + gy) // (d + gy))
            sx = bx0 + (bx1 - bx0 - (ncol * w + (ncol - 1) * gx)) / 2
            sy = by0 + (by1 - by0 - (nrow * d + (nrow - 1) * gy)) / 2
            lane_x = sx + (ncol // 2) * (w + gx) - gx / 2
            lane_y = sy + (nrow // 2) * (d + gy) - gy / 2
            keep = rng.random((nrow, ncol)) >= 0.03
            number = 0
            for r in range(nrow):
                for c in range(ncol):
                    number += 1
                    if not keep[r, c]:
                        continue
                    bx, by = sx + c * (w + gx), sy + r * (d + gy)
                    bld.append(
                        {
                            "name": f"{cname}{number}栋",
                            "klass": klass,
                            "units": units,
                            "use": "residential",
                            "geometry": _box(bx, by, bx + w, by + d),
                        }
                    )
            if has_lot:
                lx0, lx1, ly0, ly1 = bx0, lane_x - 8, y0 + 14, y0 + 34
                lots.append(
                    {
                        "name": f"{cname}地面停车场",
                        "kind": "surface",
                        "fee": 2.0,
                        "operator": f"桂林{cname}物业服务有限公司",
                        "geometry": _box(lx0, ly0, lx1, ly1),
                    }
                )
                n_per_row = int((lx1 - lx0) // 2.5)
                for yy in (ly0 + 2.5, ly1 - 2.5):
                    for k in range(n_per_row):
                        spaces.append(
                            {"lot": len(lots) - 1, "geometry": Point(lx0 + 1.25 + 2.5 * k, yy)}
                        )
            else:
                ux0, uy0 = sx, sy
                ux1, uy1 = sx + (w + gx) + w, sy + 2 * (d + gy)
                lots.append(
                    {
                        "name": f"{cname}地下车库",
                        "kind": "underground",
                        "fee": 3.0,
                        "operator": f"桂林{cname}物业服务有限公司",
                        "geometry": _box(ux0, uy0, ux1, uy1),
                    }
                )
                for yy in np.arange(uy0 + 3, uy1 - 2, 10.0):
                    for xx in np.arange(ux0 + 1.25, ux1 - 1, 2.5):
                        spaces.append({"lot": len(lots) - 1, "geometry": Point(xx, yy)})
        roads.append(
            {
                "name": f"{cname}中路",
                "kind": "internal",
                "width_m": 6.0,
                "geometry": LineString([(lane_x, y0 + 10), (lane_x, y1 - 10)]),
            }
        )
        roads.append(
            {
                "name": f"{cname}横路",
                "kind": "internal",
                "width_m": 6.0,
                "geometry": LineString([(x0 + 10, lane_y), (x1 - 10, lane_y)]),
            }
        )
        # main gate onto the secondary road, side gate onto the arterial
        gx_main = x1 if gate_side == "east" else x0
        road_x = TILE_W / 2
        side_y, road_y = (y0, 0.0) if y0 < TILE_H / 2 else (y1, TILE_H)
        gates.append({"name": f"{cname}正门", "at": (gx_main, lane_y), "road": (road_x, lane_y)})
        gates.append({"name": f"{cname}侧门", "at": (lane_x, side_y), "road": (lane_x, road_y)})
        for g in gates[-2:]:
            roads.append(
                {
                    "name": f"{g['name']}进出道",
                    "kind": "internal",
                    "width_m": 7.0,
                    "geometry": LineString([g["at"], g["road"]]),
                }
            )

    # the public quadrant D: service centre, kindergarten, clinic, market, shop-houses, park
    for name, use, floors, box in (
        ("桂馨社区党群服务中心", "public", 3, (490, 395, 550, 420)),
        ("桂馨幼儿园", "public", 3, (490, 560, 540, 590)),
        ("社区卫生服务站", "public", 4, (580, 395, 640, 415)),
        ("桂馨农贸市场", "commercial", 2, (700, 395, 800, 435)),
        ("沿街商住楼1栋", "mixed", 6, (690, 660, 750, 672)),
        ("沿街商住楼2栋", "mixed", 6, (765, 660, 825, 672)),
    ):
        bld.append(
            {
                "name": name,
                "klass": f"fixed{floors}",
                "units": 2,
                "use": use,
                "geometry": _box(*box),
            }
        )
    # on-street parking along the east kerb of the north–south secondary road
    lots.append(
        {
            "name": "桂馨路路侧停车",
            "kind": "on_street",
            "fee": 4.0,
            "operator": "雁山区停车管理中心(虚构)",
            "geometry": _box(TILE_W / 2 + 5.5, 60, TILE_W / 2 + 8, 300),
        }
    )
    for k in range(40):
        spaces.append({"lot": len(lots) - 1, "geometry": Point(TILE_W / 2 + 6.75, 63 + 6 * k)})

    buildings = pd.DataFrame(bld)
    b_center = shapely.point_on_surface(buildings.geometry.values)
    facilities = [
        ("社区党群服务中心", "community_center", 200, "08:30-17:30", Point(520, 407)),
        ("日间照料中心", "elderly_care", 40, "08:00-18:00", Point(535, 412)),
        ("桂馨幼儿园", "kindergarten", 270, "07:30-17:30", Point(515, 575)),
        ("社区卫生服务站", "clinic", 30, "08:00-20:00", Point(610, 405)),
        ("桂馨农贸市场", "market", 120, "06:00-19:00", Point(750, 415)),
        ("社区大药房", "pharmacy", 10, "08:00-22:00", Point(645, 420)),
        ("桂馨公园", "park", 800, "全天", _box(700, 460, 860, 640)),
        ("全民健身广场", "sports", 150, "06:00-22:00", Point(780, 600)),
        # outside the community, for the life circles
        ("雁湖小学", "school", 1800, "07:30-17:30", _box(300, -420, 460, -300)),
        ("雁湖中学", "school", 2400, "07:00-21:30", Point(TILE_W + 450, 900)),
        ("雁山区颐养院", "elderly_care", 300, "全天", Point(TILE_W + 320, 200)),
        ("雁湖农贸市场", "market", 300, "06:00-19:00", Point(-260, 520)),
        ("雁山公园", "park", 5000, "全天", _box(200, TILE_H + 300, 600, TILE_H + 600)),
        ("雁山区人民医院(虚构)", "clinic", 600, "全天", Point(TILE_W + 700, TILE_H + 500)),
        ("桂馨社区公交站", "bus_stop", None, "06:00-23:00", Point(TILE_W / 2 - 60, -18)),
    ]
    facilities = pd.DataFrame(
        facilities, columns=["name", "kind", "capacity", "opening_hours", "geometry"]
    )

    # cameras: two at every gate (out along the access road, and in), poles at road junctions
    cams = []
    for g in gates:
        (gx, gy), (rx, ry) = g["at"], g["road"]
        out = float(np.degrees(np.arctan2(rx - gx, ry - gy)) % 360)
        ux, uy = (rx - gx) / np.hypot(rx - gx, ry - gy), (ry - gy) / np.hypot(rx - gx, ry - gy)
        cams.append({"name": f"{g['name']}(出)", "heading": out, "at": (gx - 3 * ux, gy - 3 * uy)})
        cams.append(
            {
                "name": f"{g['name']}(入)",
                "heading": (out + 180) % 360,
                "at": (gx + 2 * ux, gy + 2 * uy),
            }
        )
    mx, my, o = TILE_W / 2, TILE_H / 2, 12.0
    junctions = [
        ("中心路口东北角", (mx + o, my + o), 0),
        ("中心路口西北角", (mx - o, my + o), 270),
        ("中心路口西南角", (mx - o, my - o), 180),
        ("中心路口东南角", (mx + o, my - o), 90),
        ("南路口西侧", (mx - o, o), 270),
        ("南路口东侧", (mx + o, o), 90),
        ("北路口西侧", (mx - o, TILE_H - o), 270),
        ("北路口东侧", (mx + o, TILE_H - o), 90),
        ("西路口南侧", (o, my - o), 180),
        ("西路口北侧", (o, my + o), 0),
        ("东路口南侧", (TILE_W - o, my - o), 180),
        ("东路口北侧", (TILE_W - o, my + o), 0),
        ("西南转角", (o, o), 0),
        ("东南转角", (TILE_W - o, o), 270),
        ("东北转角", (TILE_W - o, TILE_H - o), 180),
        ("西北转角", (o, TILE_H - o), 90),
    ]
    for name, at, heading in junctions:
        cams.append({"name": name, "heading": float(heading), "at": at})
    cameras = pd.DataFrame(
        {
            "name": [c["name"] for c in cams],
            "heading": [c["heading"] for c in cams],
            "geometry": [Point(c["at"]) for c in cams],
        }
    )

    lots_df = pd.DataFrame(lots)
    spaces_df = pd.DataFrame(spaces)
    lots_df["total_spaces"] = np.bincount(spaces_df["lot"], minlength=len(lots_df))

    # sensors: parking detectors, air, noise, smoke, leak, manhole covers, elevators
    sens = []
    surface = spaces_df.index[spaces_df["lot"].map(lots_df["kind"]).eq("surface")].to_numpy()
    for i in rng.choice(surface, size=min(24, len(surface)), replace=False):
        sens.append(
            {
                "kind": "parking",
                "lot": int(spaces_df.at[i, "lot"]),
                "space": int(i),
                "geometry": spaces_df.at[i, "geometry"],
            }
        )
    for (x0, y0, x1, y1), *_rest in COMPOUNDS.values():
        sens.append({"kind": "air", "geometry": Point((x0 + x1) / 2 + 7, (y0 + y1) / 2 + 7)})
    for at in ((mx + 9, 150.0), (mx - 9, 580.0)):
        sens.append({"kind": "air", "geometry": Point(at)})
    for at in ((mx + 9, 60.0), (mx - 9, 300.0), (150.0, my + 9), (760.0, my - 9)):
        sens.append({"kind": "noise", "geometry": Point(at)})
    residential = np.flatnonzero(buildings["use"].eq("residential").to_numpy())
    tall = np.flatnonzero(buildings["klass"].isin(["mid", "high"]).to_numpy())
    for kind, pool, count in (
        ("smoke", residential, 25),
        ("water_leak", residential, 8),
        ("elevator", tall, 15),
    ):
        for i in np.sort(rng.choice(pool, size=min(count, len(pool)), replace=False)):
            c = b_center[i]
            sens.append(
                {
                    "kind": kind,
                    "building": int(i),
                    "geometry": Point(c.x + rng.uniform(-20, 20), c.y + rng.uniform(-3, 3)),
                }
            )
    rings = [r["geometry"] for r in roads if r["name"].endswith("环路")]
    for k in range(10):
        ring = rings[k % len(rings)]
        sens.append(
            {"kind": "manhole", "geometry": ring.interpolate(float(rng.uniform(0, ring.length)))}
        )
    sensors = pd.DataFrame(sens)
    for col in ("lot", "space", "building"):
        sensors[col] = sensors.get(col, pd.Series(np.nan)).fillna(-1).astype(int)

    return Template(
        layers={
            "grid_cells": grids,
            "community": pd.DataFrame({"geometry": [boundary]}),
            "buildings": buildings,
            "parking": lots_df,
            "parking_spaces": spaces_df,
            "cameras": cameras,
            "sensors": sensors,
            "facilities": facilities,
            "roads": pd.DataFrame(roads),
        }
    )


# ---------------------------------------------------------------------------------------------
# Placing communities: codes, names and offsets, all as arrays


def _placements(scale: str) -> pd.DataFrame:
    per_street, per_district, districts = SCALES[scale]
    i = np.arange(per_street * per_district * districts)
    comm, street, dist = i % 20, (i // 20) % 10, i // 200
    col = comm % 5 + 5 * (street % 5) + 25 * (dist % 2)
    row = comm // 5 + 4 * (street // 5) + 8 * (dist // 2)
    counties = np.array([c for c, _ in COUNTIES])[dist]
    county_names = np.array([n for _, n in COUNTIES])[dist]
    street_part = np.char.zfill((street + 1).astype(str), 3)
    comm_part = np.char.zfill((comm + 1).astype(str), 3)
    names = np.array(COMMUNITY_NAMES)[(comm + 7 * street + 3 * dist) % len(COMMUNITY_NAMES)]
    street_names = np.array(STREET_NAMES)[street % len(STREET_NAMES)]
    return pd.DataFrame(
        {
            "county": counties,
            "county_name": county_names,
            "street": street_part,
            "street_name": street_names,
            "community": comm_part,
            "name": np.char.add(names, "社区"),
            "col": col - col.min(),
            "row": row - row.min(),
        }
    ).assign(
        street9=lambda f: f["county"] + f["street"],
        code12=lambda f: f["county"] + f["street"] + f["community"],
    )


class _Projector:
    """Local tile coordinates → EPSG:4326, with the whole layout centred on :data:`ANCHOR`."""

    def __init__(self, ncol: int, nrow: int) -> None:
        x, y = Transformer.from_crs(CRS, LOCAL_CRS, always_xy=True).transform(*ANCHOR)
        self.x0 = x - ncol * TILE_W / 2
        self.y0 = y - nrow * TILE_H / 2
        self.to_lonlat = Transformer.from_crs(LOCAL_CRS, CRS, always_xy=True)

    def __call__(self, geoms: np.ndarray, dx: np.ndarray, dy: np.ndarray) -> np.ndarray:
        counts = shapely.get_num_coordinates(geoms)
        ox = np.repeat(dx, counts) + self.x0
        oy = np.repeat(dy, counts) + self.y0

        def move(coords: np.ndarray) -> np.ndarray:
            lon, lat = self.to_lonlat.transform(coords[:, 0] + ox, coords[:, 1] + oy)
            return np.round(np.column_stack([lon, lat]), ROUND)

        return shapely.transform(np.asarray(geoms, dtype=object), move)


def _tile(frame: pd.DataFrame, place: pd.DataFrame, project: _Projector) -> pd.DataFrame:
    """Repeat a template frame once per community; adds ``_c`` (community row) and ``_t``."""
    n_t, n_c = len(frame), len(place)
    c = np.repeat(np.arange(n_c), n_t)
    t = np.tile(np.arange(n_t), n_c)
    out = frame.drop(columns="geometry").iloc[t].reset_index(drop=True)
    out["_c"], out["_t"] = c, t
    geoms = np.tile(frame["geometry"].to_numpy(dtype=object), n_c)
    pc, pr = place["col"].to_numpy(), place["row"].to_numpy()
    out["geometry"] = project(geoms, pc[c] * TILE_W, pr[c] * TILE_H)
    return out


def _seq(values: np.ndarray, width: int) -> np.ndarray:
    return np.char.zfill(np.asarray(values).astype(str), width).astype(object)


def _people(rng: np.random.Generator, n: int) -> np.ndarray:
    """Fictional zh-CN names: a common surname and one or two given-name characters."""
    sur = rng.choice(SURNAMES, size=n, p=SURNAME_P / SURNAME_P.sum())
    g1 = rng.choice(GIVEN, size=n)
    g2 = np.where(rng.random(n) < 0.7, rng.choice(GIVEN, size=n), "")
    return np.char.add(np.char.add(sur, g1), g2).astype(object)


def _phones(rng: np.random.Generator, n: int) -> np.ndarray:
    """Fictional mobile numbers on the 170 virtual-operator prefix."""
    return np.char.add("170", _seq(rng.integers(0, 10**8, size=n), 8).astype(str)).astype(object)


def id_check_char(first17: np.ndarray | list[str]) -> np.ndarray:
    """Return the GB 11643 (ISO 7064 MOD 11-2) check character of 17-digit ID number stems."""
    stems = np.asarray(first17, dtype="<U17")
    digits = stems.view(np.uint32).reshape(len(stems), 17).astype(np.int64) - ord("0")
    return _ID_CHECK[(digits @ _ID_WEIGHTS) % 11]


def is_fictional_id(numbers: np.ndarray | list[str]) -> np.ndarray:
    """Return True where an 18-character ID number's check character is wrong (generated ones)."""
    values = np.char.upper(np.asarray(numbers, dtype="<U18"))
    last = values.view("<U1").reshape(len(values), 18)[:, 17]
    return last != id_check_char(values.astype("<U17"))


def _fictional_ids(stems: np.ndarray) -> np.ndarray:
    """Append a check character that is deliberately wrong: the one after the right one."""
    right = id_check_char(stems)
    position = np.argmax(right[:, None] == _ID_CHECK[None, :], axis=1)
    wrong = _ID_CHECK[(position + 1) % 11]
    return np.char.add(np.asarray(stems, dtype="<U17"), wrong).astype(object)


# ---------------------------------------------------------------------------------------------
# The scenario


def make_scenario(
    scale: str = "community",
    seed: int = 0,
    *,
    residents: bool | None = None,
    spaces: bool | None = None,
    validate: bool = True,
) -> dict[str, gpd.GeoDataFrame | pd.DataFrame]:
    """Generate a whole fictional twin: layer name → frame, identical for the same arguments.

    Parameters
    ----------
    scale
        ``community`` (one ~0.65 km² community in Yanshan District, Guilin), ``street`` (20
        communities), ``district`` (200) or ``city`` (2,000, in ten real Guilin county codes).
    seed
        Seed of the numpy random generator; the same seed gives the same rows.
    residents
        Include the fictional ``residents`` table (one row per household); default only at
        community scale.
    spaces
        Include the ``parking_spaces`` layer; default at community and street scale.
    validate
        Run :func:`twin.schema.validate_layer_frame` on every layer (canonical columns and types).

    Returns
    -------
    dict
        Frames in EPSG:4326 keyed by layer name, located layers with their grids assigned.

    Raises
    ------
    ValidationError
        If *scale* is not one of :data:`SCALES`.
    """
    if scale not in SCALES:
        raise ValidationError(f"unknown scale {scale!r}; choose one of {', '.join(SCALES)}.")
    residents = scale == "community" if residents is None else residents
    spaces = scale in ("community", "street") if spaces is None else spaces
    streams = np.random.SeedSequence(seed).spawn(10)
    rng = {
        name: np.random.default_rng(s)
        for name, s in zip(
            (
                "template",
                "grids",
                "buildings",
                "people",
                "cameras",
                "sensors",
                "parking",
                "facilities",
                "roads",
                "spare",
            ),
            streams,
            strict=True,
        )
    }
    template = _template(rng["template"])
    place = _placements(scale)
    project = _Projector(int(place["col"].max()) + 1, int(place["row"].max()) + 1)
    tl = template.layers
    out: dict[str, pd.DataFrame] = {}

    # -- community and unit grids
    comm = _tile(tl["community"], place, project)
    comm_frame = pd.DataFrame(
        {
            "community_code": place["code12"].to_numpy(dtype=object),
            "name": place["name"].to_numpy(dtype=object),
            "street_code": place["street9"].to_numpy(dtype=object),
            "street_name": place["street_name"].to_numpy(dtype=object),
            "county_code": place["county"].to_numpy(dtype=object),
            "county_name": place["county_name"].to_numpy(dtype=object),
        }
    )
    g = _tile(tl["grid_cells"], place, project)
    p = place.iloc[g["_c"]].reset_index(drop=True)
    r = rng["grids"]
    n = len(g)
    resp_keys = p["code12"] + "-R" + _seq(g["resp_seq"].to_numpy(), 2)
    uniq, resp_inv = np.unique(resp_keys.to_numpy(dtype=str), return_inverse=True)
    workers, worker_phones = _people(r, len(uniq)), _phones(r, len(uniq))
    public = g["quadrant"].eq("D").to_numpy()
    grid_cells = gpd.GeoDataFrame(
        {
            "grid_code": (p["code12"] + g["sequence"]).to_numpy(dtype=object),
            "county_code": p["county"].to_numpy(dtype=object),
            "street_code": p["street"].to_numpy(dtype=object),
            "community_code": p["community"].to_numpy(dtype=object),
            "sequence": g["sequence"].to_numpy(dtype=object),
            "name": (p["name"] + "第" + g["sequence"] + "网格").to_numpy(dtype=object),
            "resp_grid_id": resp_keys.to_numpy(dtype=object),
            "grid_worker": workers[resp_inv],
            "grid_worker_phone": worker_phones[resp_inv],
            "management_level": np.where(
                public, "A", r.choice(np.array(["A", "B", "C"]), size=n, p=[0.2, 0.6, 0.2])
            ).astype(object),
            "land_use": np.where(public, "公共管理与公共服务用地", "居住用地").astype(object),
            "responsible_body": (p["name"] + "居民委员会").to_numpy(dtype=object),
            "valid_from": pd.Timestamp("2025-01-01").date(),
        },
        geometry=g["geometry"].to_numpy(),
        crs=CRS,
    )
    index = grid_index(grid_cells)

    # -- buildings and their households
    b = _tile(tl["buildings"], place, project)
    p = place.iloc[b["_c"]].reset_index(drop=True)
    r = rng["buildings"]
    n = len(b)
    klass = b["klass"].to_numpy(dtype=str)
    fixed = np.char.startswith(klass, "fixed")
    floors = np.select(
        [klass == "low", klass == "mid", klass == "high", fixed],
        [
            6 + r.choice([-1, 0, 0, 0, 1], size=n),
            11 + r.choice([-2, 0, 0, 1], size=n),
            18 - r.choice([0, 0, 1, 2], size=n),
            np.where(fixed, np.char.replace(klass, "fixed", ""), "0").astype(np.int64),
        ],
        default=1,
    )
    units = b["units"].to_numpy()
    use = b["use"].to_numpy(dtype=object)
    res_floors = np.where(use == "residential", floors, np.where(use == "mixed", floors - 1, 0))
    households = res_floors * units * 2
    hh_sizes = r.choice(
        np.arange(1, 7), size=int(households.sum()), p=[0.16, 0.30, 0.24, 0.18, 0.08, 0.04]
    )
    hh_building = np.repeat(np.arange(n), households)
    residents_count = np.bincount(hh_building, weights=hh_sizes, minlength=n).astype(np.int64)
    built = np.select(
        [klass == "low", klass == "mid", klass == "high"],
        [
            r.integers(1995, 2003, size=n),
            r.integers(2005, 2011, size=n),
            r.integers(2014, 2020, size=n),
        ],
        default=2012,
    )
    seq_in_comm = b.groupby("_c").cumcount().to_numpy() + 1
    building_code = (p["code12"] + "-B" + _seq(seq_in_comm, 3)).to_numpy(dtype=object)
    buildings = gpd.GeoDataFrame(
        {
            "building_code": building_code,
            "name": b["name"].to_numpy(dtype=object),
            "use": use,
            "floors": floors,
            "height_m": np.round(floors * 3.0 + r.uniform(0.0, 0.9, size=n), 1),
            "units": units,
            "households": households,
            "residents_count": residents_count,
            "built_year": built,
            "address": (
                "广西壮族自治区桂林市" + p["county_name"] + p["street_name"] + p["name"] + b["name"]
            ).to_numpy(dtype=object),
        },
        geometry=b["geometry"].to_numpy(),
        crs=CRS,
    )
    comm_frame["population"] = np.bincount(
        b["_c"], weights=residents_count, minlength=len(place)
    ).astype(np.int64)
    out["community"] = gpd.GeoDataFrame(comm_frame, geometry=comm["geometry"].to_numpy(), crs=CRS)
    out["grid_cells"] = grid_cells

    # -- roads: arterials along the tiling lines (split at every junction), template roads
    out["roads"] = _roads(tl["roads"], place, project, rng["roads"])

    # -- parking lots and spaces
    lt = _tile(tl["parking"], place, project)
    p = place.iloc[lt["_c"]].reset_index(drop=True)
    lot_seq = lt.groupby("_c").cumcount().to_numpy() + 1
    lot_id = (p["code12"] + "-P" + _seq(lot_seq, 2)).to_numpy(dtype=object)
    out["parking"] = gpd.GeoDataFrame(
        {
            "lot_id": lot_id,
            "name": (p["name"] + lt["name"].str.replace("桂馨路", "")).to_numpy(dtype=object),
            "kind": lt["kind"].to_numpy(dtype=object),
            "total_spaces": lt["total_spaces"].to_numpy(),
            "fee_per_hour": lt["fee"].to_numpy(dtype=float),
            "operator": lt["operator"].to_numpy(dtype=object),
        },
        geometry=lt["geometry"].to_numpy(),
        crs=CRS,
    )
    n_lots = len(tl["parking"])
    lot_of = lambda c, t: c * n_lots + t  # noqa: E731 - row of a community's template lot
    space_ids = None
    if spaces:
        st = _tile(tl["parking_spaces"], place, project)
        r = rng["parking"]
        rows = lot_of(st["_c"].to_numpy(), st["lot"].to_numpy())
        k = st.groupby(["_c", "lot"]).cumcount().to_numpy() + 1
        space_ids = (pd.Series(lot_id[rows]) + "-" + _seq(k, 3)).to_numpy(dtype=object)
        u = r.random(len(st))
        out["parking_spaces"] = gpd.GeoDataFrame(
            {
                "space_id": space_ids,
                "lot_id": lot_id[rows],
                "kind": np.select(
                    [u < 0.03, u < 0.13], ["accessible", "charging"], default="standard"
                ).astype(object),
            },
            geometry=st["geometry"].to_numpy(),
            crs=CRS,
        )

    # -- facilities
    ft = _tile(tl["facilities"], place, project)
    p = place.iloc[ft["_c"]].reset_index(drop=True)
    out["facilities"] = gpd.GeoDataFrame(
        {
            "facility_id": (p["code12"] + "-F" + _seq(ft["_t"].to_numpy() + 1, 2)).to_numpy(
                dtype=object
            ),
            "name": ft["name"]
            .str.replace("桂馨", "")
            .radd(p["name"].str[:2])
            .where(ft["name"].str.contains("桂馨"), ft["name"])
            .to_numpy(dtype=object),
            "kind": ft["kind"].to_numpy(dtype=object),
            "capacity": pd.array(ft["capacity"], dtype="Int64"),
            "opening_hours": ft["opening_hours"].to_numpy(dtype=object),
        },
        geometry=ft["geometry"].to_numpy(),
        crs=CRS,
    )

    # -- cameras
    r = rng["cameras"]
    ct = _tile(tl["cameras"], place, project)
    ct = ct[r.random(len(ct)) < CAMERA_DENSITY[scale]].reset_index(drop=True)
    p = place.iloc[ct["_c"]].reset_index(drop=True)
    n = len(ct)
    cam_seq = ct.groupby("_c").cumcount().to_numpy() + 1
    out["cameras"] = gpd.GeoDataFrame(
        {
            "camera_id": (p["code12"] + "-C" + _seq(cam_seq, 3)).to_numpy(dtype=object),
            "name": (p["name"] + ct["name"]).to_numpy(dtype=object),
            "heading_deg": np.round((ct["heading"].to_numpy() + r.normal(0, 2, n)) % 360, 1),
            "fov_deg": r.choice([60.0, 70.0, 80.0, 90.0, 100.0, 110.0], size=n),
            "range_m": r.integers(30, 81, size=n).astype(float),
            "mount_height_m": np.round(r.uniform(3.5, 6.0, size=n), 1),
            "status": r.choice(
                np.array(["online", "offline", "maintenance"]), size=n, p=[0.95, 0.03, 0.02]
            ).astype(object),
        },
        geometry=ct["geometry"].to_numpy(),
        crs=CRS,
    )

    # -- sensors
    r = rng["sensors"]
    s = _tile(tl["sensors"], place, project)
    s = s[r.random(len(s)) < DENSITY[scale]].reset_index(drop=True)
    p = place.iloc[s["_c"]].reset_index(drop=True)
    n = len(s)
    kind = s["kind"].to_numpy(dtype=object)
    n_b = len(tl["buildings"])
    b_row = s["_c"].to_numpy() * n_b + s["building"].to_numpy()
    has_b = s["building"].to_numpy() >= 0
    has_l = s["lot"].to_numpy() >= 0
    l_row = lot_of(s["_c"].to_numpy(), s["lot"].to_numpy())
    battery = np.round(r.uniform(0.05, 1.0, size=n), 2)
    u = r.random(n)
    state = np.select(
        [u < 0.01, u < 0.03, battery < 0.15], ["fault", "offline", "low_battery"], default="ok"
    ).astype(object)
    attrs = np.full(n, None, dtype=object)
    if spaces:
        space_row = s["space"].to_numpy()
        # spaces are tiled per community in template order: row = c * n_spaces + template row
        n_sp = len(tl["parking_spaces"])
        on_space = space_row >= 0
        attrs[on_space] = (
            '{"space_id": "'
            + pd.Series(space_ids[s["_c"].to_numpy()[on_space] * n_sp + space_row[on_space]])
            + '"}'
        ).to_numpy(dtype=object)
    sensor_seq = s.groupby("_c").cumcount().to_numpy() + 1
    props = {k: json.dumps(v, ensure_ascii=False, sort_keys=True) for k, v in PROPERTIES.items()}
    out["sensors"] = gpd.GeoDataFrame(
        {
            "sensor_id": (p["code12"] + "-S" + _seq(sensor_seq, 3)).to_numpy(dtype=object),
            "name": (p["name"] + pd.Series(kind).map(KIND_NAMES) + _seq(sensor_seq, 3)).to_numpy(
                dtype=object
            ),
            "kind": kind,
            "properties": pd.Series(kind).map(props).to_numpy(dtype=object),
            "ref_building": np.where(
                has_b,
                building_code[np.where(has_b, b_row, 0)] if len(building_code) else None,
                None,
            ),
            "ref_lot": np.where(has_l, lot_id[np.where(has_l, l_row, 0)], None),
            "battery_level": battery,
            "device_state": state,
            "report_interval_s": pd.Series(kind).map(REPORT_INTERVAL_S).to_numpy(),
            "attrs": attrs,
        },
        geometry=s["geometry"].to_numpy(),
        crs=CRS,
    )
    out["buildings"] = buildings

    for name in ("buildings", "parking", "parking_spaces", "cameras", "sensors", "facilities"):
        if name in out:
            out[name] = assign_grids(out[name], index)

    if residents:
        out["residents"] = _residents(
            buildings,
            hh_sizes,
            hh_building,
            res_floors,
            units,
            place.iloc[b["_c"]]["county"].to_numpy(),
            rng["people"],
        )

    ordered = {name: out[name] for name in layers.names() if name in out}
    if validate:
        ordered = {
            name: validate_layer_frame(layers.get_layer(name), frame)
            for name, frame in ordered.items()
        }
    return ordered


def _roads(
    template: pd.DataFrame, place: pd.DataFrame, project: _Projector, rng: np.random.Generator
) -> gpd.GeoDataFrame:
    """Arterials along the tiling lines, secondary roads between compounds, internal roads."""
    mx, my = TILE_W / 2, TILE_H / 2
    secondary = pd.DataFrame(
        {
            "name": ["路", "路", "街", "街"],
            "kind": "secondary",
            "width_m": 16.0,
            "geometry": [
                LineString([(mx, 0), (mx, my)]),
                LineString([(mx, my), (mx, TILE_H)]),
                LineString([(0, my), (mx, my)]),
                LineString([(mx, my), (TILE_W, my)]),
            ],
        }
    )
    t = _tile(pd.concat([secondary, template], ignore_index=True), place, project)
    p = place.iloc[t["_c"]].reset_index(drop=True)
    names = np.where(t["_t"] < len(secondary), p["name"].str[:2] + t["name"], t["name"])
    local = pd.DataFrame(
        {
            "road_id": (p["code12"] + "-R" + _seq(t["_t"].to_numpy() + 1, 2)).to_numpy(
                dtype=object
            ),
            "name": names.astype(object),
            "kind": t["kind"].to_numpy(dtype=object),
            "width_m": t["width_m"].to_numpy(dtype=float),
            "geometry": t["geometry"].to_numpy(),
        }
    )
    ncol, nrow = int(place["col"].max()) + 1, int(place["row"].max()) + 1
    parts = []
    for axis, nlines, nsegs, step, along, suffix in (
        ("V", ncol + 1, 2 * nrow, TILE_W, TILE_H / 2, "路"),
        ("H", nrow + 1, 2 * ncol, TILE_H, TILE_W / 2, "大道"),
    ):
        line, seg = np.divmod(np.arange(nlines * nsegs), nsegs)
        fixed, a0 = line * step, seg * along
        start = np.column_stack([fixed, a0]) if axis == "V" else np.column_stack([a0, fixed])
        end = start + (np.array([0.0, along]) if axis == "V" else np.array([along, 0.0]))
        stem = (line + (0 if axis == "V" else 7)) % len(ROAD_STEMS)
        label = np.char.add(
            np.char.add(
                np.array(ROAD_STEMS)[stem], np.array(CN_NUM)[(line // len(ROAD_STEMS)) % 10]
            ),
            suffix,
        )
        major = line % 5 == 0
        parts.append(
            pd.DataFrame(
                {
                    "road_id": np.char.add(
                        np.char.add(f"RD-{axis}", _seq(line, 3).astype(str)),
                        np.char.add("-", _seq(seg, 3).astype(str)),
                    ).astype(object),
                    "name": label.astype(object),
                    "kind": np.where(major, "primary", "secondary").astype(object),
                    "width_m": np.where(major, 30.0, 24.0),
                    "geometry": project(
                        shapely.linestrings(np.stack([start, end], axis=1)),
                        np.zeros(len(start)),
                        np.zeros(len(start)),
                    ),
                }
            )
        )
    frame = pd.concat([*parts, local], ignore_index=True)
    return gpd.GeoDataFrame(
        frame.drop(columns="geometry"), geometry=frame["geometry"].to_numpy(), crs=CRS
    )


def _residents(
    buildings: pd.DataFrame,
    hh_sizes: np.ndarray,
    hh_building: np.ndarray,
    res_floors: np.ndarray,
    units: np.ndarray,
    counties: np.ndarray,
    rng: np.random.Generator,
) -> pd.DataFrame:
    """One fictional household per dwelling: unit, room, head's name, phone, ID number, tags."""
    n = len(hh_sizes)
    households = res_floors * units * 2
    k = np.arange(n) - np.repeat(np.cumsum(households) - households, households)
    per_unit = res_floors[hh_building] * 2
    unit = k // per_unit + 1
    first = np.where(buildings["use"].to_numpy()[hh_building] == "mixed", 2, 1)
    floor = (k % per_unit) // 2 + first
    door = (k % per_unit) % 2 + 1
    room = np.char.add(floor.astype(str), _seq(door, 2).astype(str))
    age = rng.integers(22, 93, size=n)
    born = np.char.add(
        np.char.add((2026 - age).astype(str), _seq(rng.integers(1, 13, size=n), 2).astype(str)),
        _seq(rng.integers(1, 29, size=n), 2).astype(str),
    )
    stems = np.char.add(
        np.char.add(counties[hh_building].astype(str), born),
        _seq(rng.integers(0, 1000, size=n), 3).astype(str),
    )
    u = rng.random(n)
    tags = np.select(
        [
            (hh_sizes == 1) & (age >= 70),
            (hh_sizes == 2) & (age >= 75) & (u < 0.5),
            u < 0.02,
            u < 0.05,
            u < 0.06,
        ],
        ["独居老人", "空巢老人", "残疾人", "低保户", "退役军人"],
        default="",
    ).astype(object)
    tags[tags == ""] = None
    code = buildings["building_code"].to_numpy(dtype=str)[hh_building]
    rid = np.char.add(np.char.add(np.char.add(code, "-"), unit.astype(str)), np.char.add("-", room))
    return pd.DataFrame(
        {
            "resident_id": rid.astype(object),
            "building_code": code.astype(object),
            "unit": unit.astype(str).astype(object),
            "room": room.astype(object),
            "name": _people(rng, n),
            "phone": _phones(rng, n),
            "id_number": _fictional_ids(stems),
            "household_size": hh_sizes,
            "tags": tags,
        }
    )


# ---------------------------------------------------------------------------------------------
# Cases and events at located points (benchmarks and tests)

CASE_STATUSES = ("filed", "dispatched", "handling", "fed_back", "checked", "closed", "cancelled")
CASE_STATUS_P = (0.06, 0.08, 0.12, 0.05, 0.04, 0.62, 0.03)
CATEGORIES = (  # family, minor-class code, name, handling limit in hours
    ("component", "0101", "上水井盖破损", 4),
    ("component", "0103", "雨水井盖缺失", 4),
    ("component", "0110", "路灯不亮", 24),
    ("component", "0206", "停车设施损坏", 72),
    ("component", "0301", "垃圾箱满溢", 4),
    ("component", "0402", "绿地脏乱", 24),
    ("event", "0101", "暴露垃圾", 4),
    ("event", "0102", "道路不洁", 2),
    ("event", "0301", "施工占道", 8),
    ("event", "0402", "道路积水", 2),
    ("event", "0501", "店外经营", 4),
    ("event", "0509", "共享单车乱停放", 2),
)
CASE_SOURCES = ("patrol", "resident", "camera", "sensor", "instruction")


def _window(start: datetime | None, end: datetime | None) -> tuple[pd.Timestamp, pd.Timestamp]:
    end_ts = to_utc(end or datetime(2026, 3, 1, tzinfo=UTC))
    start_ts = to_utc(start) if start is not None else end_ts - timedelta(days=90)
    if not start_ts < end_ts:
        raise ValidationError(f"start {start_ts} must be before end {end_ts}.")
    return start_ts, end_ts


def _located_points(
    scenario: dict, n: int, rng: np.random.Generator, jitter_m: float
) -> gpd.GeoDataFrame:
    """*n* points near buildings, cameras and sensors, with their grids assigned."""
    pools = [
        scenario[name].geometry.values
        for name in ("buildings", "cameras", "sensors")
        if name in scenario and len(scenario[name])
    ]
    if not pools:
        raise ValidationError("the scenario has no buildings, cameras or sensors to place on.")
    anchors = shapely.point_on_surface(np.concatenate(pools))
    picked = anchors[rng.integers(0, len(anchors), size=n)]
    lat = shapely.get_y(picked)
    dx, dy = rng.normal(0, jitter_m, size=(2, n))
    lon = shapely.get_x(picked) + dx / (111_320.0 * np.cos(np.radians(lat)))
    points = gpd.GeoDataFrame(
        {"lon": np.round(lon, 7), "lat": np.round(lat + dy / 110_540.0, 7)},
        geometry=shapely.points(np.round(lon, 7), np.round(lat + dy / 110_540.0, 7)),
        crs=CRS,
    )
    return assign_grids(points, scenario["grid_cells"])


def make_cases(
    scenario: dict,
    n: int,
    seed: int = 0,
    start: datetime | None = None,
    end: datetime | None = None,
) -> pd.DataFrame:
    """Generate *n* plausible cases (columns of :data:`twin.schema.CASES`) inside the scenario.

    Cases are requested uniformly between *start* and *end* (default: the 90 days before
    2026-03-01 UTC) near buildings, cameras and sensors; most are closed, some late, some open,
    some on hold or cancelled. The step times, deadlines, timer and counts of
    :data:`twin.schema.CASE_DATA_COLUMNS` are filled consistently with the status (filed late,
    reworked, extended, handled late …), so the indicators of ``twin.kpi`` mean something.

    Raises
    ------
    ValidationError
        If the window is empty or the scenario has nothing to place cases on.
    """
    rng = np.random.default_rng(np.random.SeedSequence([seed, 1]))
    t0, t1 = _window(start, end)
    pts = _located_points(scenario, n, rng, 25.0)
    cat = rng.integers(0, len(CATEGORIES), size=n)
    family, code, label, limit = (np.array(x)[cat] for x in zip(*CATEGORIES, strict=True))
    status = rng.choice(np.array(CASE_STATUSES), size=n, p=CASE_STATUS_P)
    span = (t1 - t0).total_seconds()
    requested = t0 + pd.to_timedelta(np.sort(rng.uniform(0, span, size=n)), unit="s")
    deadline = requested + pd.to_timedelta(limit.astype(float), unit="h")
    took = limit.astype(float) * rng.gamma(2.0, 0.4, size=n)  # hours; about 1 in 5 late
    closed = np.isin(status, ["closed", "cancelled"])
    closed_at = pd.Series(requested + pd.to_timedelta(took, unit="h")).where(closed)
    updated = pd.Series(requested + pd.to_timedelta(took * rng.uniform(0.1, 1, n), unit="h"))
    updated = closed_at.where(closed, updated)
    grids = scenario["grid_cells"].set_index("grid_code")
    grid = pts["grid_code"]
    worker = grid.map(grids["grid_worker"]) if "grid_worker" in grids else grid.map(lambda _: None)
    level = grid.map(grids["management_level"]).fillna("B")
    # version = 1 (create) + one per step taken to reach the status
    steps = pd.Series(status).map(dict(zip(CASE_STATUSES, (2, 3, 4, 5, 6, 7, 2), strict=True)))
    frame = pd.DataFrame(
        {
            "id": np.char.add(f"SC{seed}-", _seq(np.arange(1, n + 1), 7).astype(str)),
            "version": steps,
            "status": status,
            "service_code": code,
            "family": family,
            "source": rng.choice(np.array(CASE_SOURCES), size=n, p=[0.45, 0.25, 0.15, 0.1, 0.05]),
            "description": np.char.add(label, "(模拟)"),
            "lon": pts["lon"].to_numpy(),
            "lat": pts["lat"].to_numpy(),
            "grid_code": grid.to_numpy(dtype=object),
            "resp_grid_id": pts["resp_grid_id"].to_numpy(dtype=object),
            "community_code": pts["community_code"].to_numpy(dtype=object),
            "street_code": pts["street_code"].to_numpy(dtype=object),
            "area_class": level.to_numpy(dtype=object),
            "urgency": np.where(rng.random(n) < 0.05, "urgent", "normal"),
            "assignee": worker.to_numpy(dtype=object),
            "department": np.where(family == "component", "市政设施管理所", "城市管理综合执法队"),
            "requested_at": requested,
            "updated_at": updated,
            "deadline_at": deadline,
            "closed_at": closed_at,
            "data": json.dumps({"generated": True, "seed": seed}),
        }
    )
    steps = _case_steps(frame, limit.astype(float), took, rng=np.random.default_rng(
        np.random.SeedSequence([seed, 3])))
    for name, values in steps.items():
        frame[name] = values
    return coerce_table(CASES, frame)


# Where each step of the loop falls, as a share of the time from request to the case's last
# step (closing for closed cases), and the statuses that have passed it.
_STEP_SHARE = {"file": 0.05, "dispatch": 0.15, "rework": 0.6, "feedback": 0.75, "check": 0.9}
_PASSED = {
    "file": ("filed", "dispatched", "handling", "on_hold", "fed_back", "checked", "closed"),
    "dispatch": ("dispatched", "handling", "on_hold", "fed_back", "checked", "closed"),
    "feedback": ("fed_back", "checked", "closed"),
    "check": ("checked", "closed"),
}
_LAST_STEP = {"filed": "file", "dispatched": "dispatch", "handling": "dispatch",
              "on_hold": "dispatch", "fed_back": "feedback", "checked": "check"}


def _case_steps(
    frame: pd.DataFrame, limit_h: np.ndarray, took_h: np.ndarray, rng: np.random.Generator
) -> dict[str, Any]:
    """Step times, deadlines, timer and counts of generated cases, consistent with the status.

    A separate random stream, so the columns drawn before keep their values. Some handling
    cases are on long-term hold (挂账); about 1 in 10 filed late, 1 in 20 reworked, 1 in 15
    extended, half the cancelled ones cancelled after filing.
    """
    n = len(frame)
    status = frame["status"].to_numpy(dtype=object).copy()
    status[(status == "handling") & (rng.random(n) < 0.1)] = "on_hold"
    requested = pd.Series(frame["requested_at"].to_numpy())
    hour = pd.Timedelta(hours=1)
    # the time scale: closing time for closed cases, the last step's time for open ones
    last_share = pd.Series(status).map(lambda s: _STEP_SHARE.get(_LAST_STEP.get(s, ""), 1.0))
    updated = pd.Series(frame["updated_at"].to_numpy())
    scale = ((updated - requested) / hour).to_numpy() / last_share.to_numpy()
    scale = np.where(status == "closed", took_h, scale)

    def at(share: float | np.ndarray, mask: np.ndarray) -> pd.Series:
        times = requested + pd.to_timedelta(scale * share, unit="h")
        return times.where(mask)

    def passed(step: str) -> np.ndarray:
        return np.isin(status, _PASSED[step])

    cancelled = status == "cancelled"
    filed_then_cancelled = cancelled & (rng.random(n) < 0.5)
    # filed before dispatch (share 0.15); the filing deadline is 2 hours after the report, so
    # long cases are sometimes filed late
    filed_at = at(rng.uniform(0.01, 0.12, n), passed("file") | filed_then_cancelled)
    file_deadline = requested + 2 * hour
    dispatched_at = at(_STEP_SHARE["dispatch"], passed("dispatch"))
    dispatched_at = dispatched_at.where(dispatched_at.isna() | (dispatched_at > filed_at),
                                        filed_at + pd.Timedelta(minutes=1))
    fed_back = passed("feedback")
    reworked = fed_back & (rng.random(n) < 0.05)
    first_rework_at = at(_STEP_SHARE["rework"], reworked)
    fed_back_at = at(_STEP_SHARE["feedback"], fed_back)
    checked_at = at(_STEP_SHARE["check"], passed("check"))
    extended = passed("dispatch") & (rng.random(n) < 0.065)
    handle_deadline = (requested + pd.to_timedelta(limit_h * (0.8 + 0.5 * extended), unit="h"))
    handle_deadline = handle_deadline.where(passed("dispatch"))
    cancelled_at = pd.Series(frame["closed_at"].to_numpy()).where(cancelled)
    family = frame["family"].to_numpy(dtype=object)
    stage = pd.Series(status).map({"filed": "dispatch", "dispatched": "handle",
                                   "handling": "handle", "fed_back": "check",
                                   "checked": "close"})
    timer_start = pd.Series(updated).where(stage.notna())
    timer_deadline = pd.Series(np.select(
        [stage.eq("dispatch"), stage.eq("handle"), stage.eq("check"), stage.eq("close")],
        [filed_at + hour, handle_deadline, fed_back_at + hour / 2,
         pd.Series(frame["deadline_at"].to_numpy())],
        pd.NaT,
    )).where(stage.notna())
    timer_deadline = pd.to_datetime(timer_deadline, utc=True)
    timer_deadline = timer_deadline.where(
        timer_deadline.isna() | (timer_deadline > timer_start), timer_start + hour)
    return {
        "status": status,
        "filed_at": filed_at,
        "dispatched_at": dispatched_at,
        "fed_back_at": fed_back_at,
        "checked_at": checked_at,
        "cancelled_at": cancelled_at,
        "first_rework_at": first_rework_at,
        "file_deadline": file_deadline,
        "handle_deadline": handle_deadline,
        "timer_stage": stage.to_numpy(dtype=object),
        "timer_start": timer_start,
        "timer_deadline": timer_deadline,
        "timer_unit": np.where(stage.notna(), "urgent_hours", None),
        "reworks": reworked.astype("int64"),
        "returns": (passed("dispatch") & (rng.random(n) < 0.02)).astype("int64"),
        "supervised": (passed("file") & (rng.random(n) < 0.03)).astype("int64"),
        "extended": extended,
        "post": np.where(family == "event", "grid_worker", "department"),
    }


EVENT_KINDS = ("obs", "camera", "report")
CAMERA_ALERTS = ("intrusion", "illegal_parking", "garbage_exposed", "crowding", "fire_lane_blocked")


def make_events(
    scenario: dict,
    n: int,
    seed: int = 0,
    start: datetime | None = None,
    end: datetime | None = None,
    *,
    kinds: tuple[str, ...] = EVENT_KINDS,
) -> pd.DataFrame:
    """Generate *n* feed events (columns of :data:`twin.schema.EVENTS`), oldest first.

    ``obs`` events are sensor readings with values for the sensor's declared properties;
    ``camera`` events are AI alerts of a camera; ``report`` events are residents' reports near
    buildings. Ids are unique per seed, so replaying the same seed re-sends the same ids.

    Raises
    ------
    ValidationError
        If *kinds* names an unknown kind or the scenario lacks the layer a kind needs.
    """
    unknown = sorted(set(kinds) - set(EVENT_KINDS))
    if unknown or not kinds:
        raise ValidationError(f"unknown event kinds {unknown}; choose from {list(EVENT_KINDS)}.")
    rng = np.random.default_rng(np.random.SeedSequence([seed, 2]))
    t0, t1 = _window(start, end)
    weights = np.array([{"obs": 0.9, "camera": 0.07, "report": 0.03}[k] for k in kinds])
    kind = rng.choice(np.array(kinds), size=n, p=weights / weights.sum())
    observed = t0 + pd.to_timedelta(np.sort(rng.uniform(0, (t1 - t0).total_seconds(), n)), "s")
    frame = pd.DataFrame(
        {
            "id": np.char.add(f"EV{seed}-", _seq(np.arange(1, n + 1), 8).astype(str)),
            "kind": kind,
            "observed_at": observed,
            "received_at": observed + pd.to_timedelta(rng.uniform(0.05, 3.0, n), "s"),
        }
    )
    for name in (
        "source_id",
        "lon",
        "lat",
        "grid_code",
        "resp_grid_id",
        "community_code",
        "street_code",
        "building_code",
        "lot_id",
        "payload",
    ):
        frame[name] = None
    for k, layer, id_col in (
        ("obs", "sensors", "sensor_id"),
        ("camera", "cameras", "camera_id"),
        ("report", "buildings", "building_code"),
    ):
        rows = np.flatnonzero(kind == k)
        if not len(rows):
            continue
        if layer not in scenario or not len(scenario[layer]):
            raise ValidationError(f"{k} events need the {layer} layer in the scenario.")
        src = scenario[layer].iloc[rng.integers(0, len(scenario[layer]), size=len(rows))]
        pts = shapely.point_on_surface(src.geometry.values)
        frame.loc[rows, "source_id"] = src[id_col].to_numpy(dtype=object)
        frame.loc[rows, "lon"] = np.round(shapely.get_x(pts), 7)
        frame.loc[rows, "lat"] = np.round(shapely.get_y(pts), 7)
        for col in ("grid_code", "resp_grid_id", "community_code", "street_code"):
            frame.loc[rows, col] = src[col].to_numpy(dtype=object)
        if k == "obs":
            frame.loc[rows, "building_code"] = src["ref_building"].to_numpy(dtype=object)
            frame.loc[rows, "lot_id"] = src["ref_lot"].to_numpy(dtype=object)
            frame.loc[rows, "payload"] = _readings(src["kind"].to_numpy(dtype=str), rng)
        elif k == "camera":
            alert = rng.choice(np.array(CAMERA_ALERTS), size=len(rows))
            conf = np.round(rng.uniform(0.5, 0.99, len(rows)), 2)
            frame.loc[rows, "payload"] = [
                f'{{"alert": "{a}", "confidence": {c}}}' for a, c in zip(alert, conf, strict=True)
            ]
        else:
            frame.loc[rows, "building_code"] = src["building_code"].to_numpy(dtype=object)
            label = np.array([c[2] for c in CATEGORIES])[
                rng.integers(0, len(CATEGORIES), len(rows))
            ]
            frame.loc[rows, "payload"] = [
                json.dumps({"description": f"{x}(居民上报,模拟)"}, ensure_ascii=False)
                for x in label
            ]
    return coerce_table(EVENTS, frame)


def _readings(kinds: np.ndarray, rng: np.random.Generator) -> list[str]:
    """Plausible observation values for each sensor kind, as canonical JSON text."""
    n = len(kinds)
    pm25 = np.round(rng.gamma(3.0, 12.0, n), 1)
    values = {
        "parking": lambda i: {"occupied": int(rng_bits[i] < 0.6)},
        "air": lambda i: {
            "no2": float(no2[i]),
            "pm10": float(round(pm25[i] * 1.6, 1)),
            "pm25": float(pm25[i]),
        },
        "smoke": lambda i: {"smoke": int(rng_bits[i] < 0.002)},
        "water_leak": lambda i: {"leak": int(rng_bits[i] < 0.005)},
        "noise": lambda i: {"noise": float(noise[i])},
        "manhole": lambda i: {"open": int(rng_bits[i] < 0.003), "tilt": float(tilt[i])},
        "elevator": lambda i: {
            "fault": int(rng_bits[i] < 0.002),
            "running": int(rng_bits[i] > 0.3),
        },
    }
    rng_bits = rng.random(n)
    no2 = np.round(rng.gamma(4.0, 6.0, n), 1)
    noise = np.round(rng.normal(52, 8, n), 1)
    tilt = np.round(np.abs(rng.normal(0, 1.5, n)), 1)
    return [
        json.dumps({"values": values.get(k, lambda i: {})(i)}, sort_keys=True)
        for i, k in enumerate(kinds)
    ]
