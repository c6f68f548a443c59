"""Exported files are standard-clean: GeoJSON read back and checked against RFC 7946."""

from __future__ import annotations

import json
import math
from decimal import Decimal
from pathlib import Path

import geopandas as gpd
import numpy as np
import pytest
import shapely
from pyproj import Transformer
from shapely.geometry import Point, box

import twin.query as Q
from twin import geojson
from twin.errors import ValidationError

UTM = "EPSG:32649"
X0, Y0 = Transformer.from_crs(4326, UTM, always_xy=True).transform(110.29, 25.08)

GEOMETRY_TYPES = {
    "Point",
    "MultiPoint",
    "LineString",
    "MultiLineString",
    "Polygon",
    "MultiPolygon",
    "GeometryCollection",
}


# -- a small RFC 7946 checker (the rules a reader may rely on; §-numbers from the RFC) -----------


def _signed_area(ring: list) -> float:
    """Shoelace area: > 0 for a counter-clockwise ring in lon/lat."""
    xs = np.array([p[0] for p in ring], dtype=float)
    ys = np.array([p[1] for p in ring], dtype=float)
    return float(np.sum(xs[:-1] * ys[1:] - xs[1:] * ys[:-1]) / 2)


def _decimals(number: Decimal) -> int:
    return max(0, -number.as_tuple().exponent)


def _positions(coords, depth: int, problems: list[str], where: str) -> None:
    if depth == 0:
        if not (2 <= len(coords) <= 3):  # §3.1.1
            problems.append(f"{where}: a position has {len(coords)} numbers")
            return
        lon, lat = coords[0], coords[1]
        if not (-180 <= lon <= 180 and -90 <= lat <= 90):  # §4: WGS84 lon, lat
            problems.append(f"{where}: {float(lon)}, {float(lat)} is not WGS84 lon/lat")
        for number in coords:
            if _decimals(number) > 7:  # §11.2: ~1 cm is enough
                problems.append(f"{where}: {number} has more than 7 decimals")
        return
    for item in coords:
        _positions(item, depth - 1, problems, where)


def _polygon(rings: list, problems: list[str], where: str) -> None:
    for i, ring in enumerate(rings):
        if len(ring) < 4 or ring[0] != ring[-1]:  # §3.1.6 linear ring
            problems.append(f"{where}: ring {i} is not closed with ≥ 4 positions")
            continue
        area = _signed_area(ring)
        if i == 0 and area <= 0:  # §3.1.6: exterior counter-clockwise
            problems.append(f"{where}: exterior ring is clockwise")
        if i > 0 and area >= 0:  # holes clockwise
            problems.append(f"{where}: hole {i} is counter-clockwise")


def _geometry(geom, problems: list[str], where: str) -> None:
    if geom is None:
        return
    kind = geom.get("type")
    if kind not in GEOMETRY_TYPES:
        problems.append(f"{where}: geometry type {kind!r}")
        return
    if "crs" in geom:
        problems.append(f"{where}: geometry has a crs member")
    if kind == "GeometryCollection":
        for j, part in enumerate(geom["geometries"]):
            _geometry(part, problems, f"{where}.geometries[{j}]")
        return
    depth = {
        "Point": 0,
        "MultiPoint": 1,
        "LineString": 1,
        "MultiLineString": 2,
        "Polygon": 2,
        "MultiPolygon": 3,
    }[kind]
    _positions(geom["coordinates"], depth, problems, where)
    if kind == "Polygon":
        _polygon(geom["coordinates"], problems, where)
    elif kind == "MultiPolygon":
        for j, poly in enumerate(geom["coordinates"]):
            _polygon(poly, problems, f"{where}[{j}]")


def rfc7946_problems(text: str | bytes) -> list[str]:
    """What in *text* breaks RFC 7946 (empty when it is clean)."""

    def no_constants(name: str):
        raise ValueError(f"{name} is not a JSON number (RFC 8259 §6)")

    try:
        doc = json.loads(text, parse_float=Decimal, parse_int=Decimal, parse_constant=no_constants)
    except ValueError as exc:
        return [f"not JSON: {exc}"]
    problems = []
    if doc.get("type") != "FeatureCollection":
        problems.append(f"top-level type is {doc.get('type')!r}")
    if "crs" in doc:  # §4: removed
        problems.append("FeatureCollection has a crs member")
    for i, feature in enumerate(doc.get("features", [])):
        where = f"features[{i}]"
        if feature.get("type") != "Feature" or "geometry" not in feature:
            problems.append(f"{where} is not a Feature with a geometry member")
            continue
        if "crs" in feature:
            problems.append(f"{where} has a crs member")
        _geometry(feature["geometry"], problems, where)
    return problems


def test_the_checker_finds_what_it_is_meant_to_find():
    cw = {"type": "Polygon", "coordinates": [[[0, 0], [0, 1], [1, 1], [1, 0], [0, 0]]]}
    fine = {
        "type": "Polygon",
        "coordinates": [
            [[0, 0], [1, 0], [1, 1], [0, 1], [0, 0]],
            [[0.2, 0.2], [0.2, 0.4], [0.4, 0.4], [0.4, 0.2], [0.2, 0.2]],
        ],
    }
    ccw_hole = {
        "type": "Polygon",
        "coordinates": [fine["coordinates"][0], list(reversed(fine["coordinates"][1]))],
    }
    crs = {"type": "name", "properties": {"name": "urn:ogc:def:crs:OGC:1.3:CRS84"}}

    def fc(geom, **extra):
        return json.dumps(
            {
                "type": "FeatureCollection",
                **extra,
                "features": [{"type": "Feature", "properties": {}, "geometry": geom}],
            }
        )

    assert rfc7946_problems(fc(fine)) == []
    assert "exterior ring is clockwise" in rfc7946_problems(fc(cw))[0]
    assert "hole 1 is counter-clockwise" in rfc7946_problems(fc(ccw_hole))[0]
    assert "crs member" in rfc7946_problems(fc(fine, crs=crs))[0]
    assert (
        "more than 7 decimals"
        in rfc7946_problems(fc({"type": "Point", "coordinates": [110.123456789, 25.1]}))[0]
    )
    assert "not WGS84" in rfc7946_problems(fc({"type": "Point", "coordinates": [500000, 2.7e6]}))[0]
    assert (
        "not JSON"
        in rfc7946_problems(fc(fine).replace('"properties": {}', '"properties": {"a": NaN}'))[0]
    )


# -- answers written as the planner gets them, on both stores -------------------------------------


def local(geoms, **columns) -> gpd.GeoDataFrame:
    """A layer frame from geometries in metres around the anchor (UTM 49N), stored in EPSG:4326."""
    moved = [shapely.affinity.translate(g, X0, Y0) for g in geoms]
    return gpd.GeoDataFrame(columns, geometry=moved, crs=UTM).to_crs(4326)


def lonlat(x: float, y: float) -> tuple[float, float]:
    return Transformer.from_crs(UTM, 4326, always_xy=True).transform(X0 + x, Y0 + y)


@pytest.fixture
def scene(store):
    """Two unit grids, one camera looking east at a wall, and a few homes (both stores)."""
    grids = local(
        [box(-500, -500, 500, 500), box(500, -500, 1500, 500)],
        grid_code=["45031100100101", "45031100100102"],
        county_code=["450311"] * 2,
        street_code=["001"] * 2,
        community_code=["001"] * 2,
        sequence=["01", "02"],
        name=["一网格", "二网格"],
        resp_grid_id=["R01", "R01"],
    )
    cams = local(
        [Point(0, 0)],
        camera_id=["C1"],
        heading_deg=[90.0],
        fov_deg=[60.0],
        range_m=[100.0],
        status=["online"],
    )
    homes = local(
        [box(20, -60, 25, 60), box(-200, 100, -170, 130), box(600, 0, 640, 25)],
        building_code=["WALL", "B1", "B2"],
        use=["other", "residential", "residential"],
    )
    for name, frame in (("grid_cells", grids), ("cameras", cams), ("buildings", homes)):
        store.write_layer(name, frame, actor="test", source="test")
    return store


ANSWERS = {
    "blind_spots": lambda s: Q.coverage(s, output="blind_spots", min_area_m2=0),
    "coverage_cameras": lambda s: Q.coverage(s, output="cameras"),
    "coverage_grids": lambda s: Q.coverage(s, output="grids"),
    "within": lambda s: Q.within_distance(s, "buildings", 400, point=lonlat(0, 0)),
}


@pytest.mark.parametrize("name", list(ANSWERS))
def test_an_exported_answer_passes_rfc_7946(scene, name, tmp_path):
    result = ANSWERS[name](scene)
    assert len(result.frame) > 0
    out = tmp_path / "out"
    out.mkdir()
    path = result.to_file(out / f"{name}.geojson")
    text = path.read_bytes()
    assert rfc7946_problems(text) == []
    back = gpd.read_file(path)
    assert len(back) == len(result.frame)
    # what was written is what was answered, to the centimetre
    moved = shapely.hausdorff_distance(
        gpd.GeoSeries(back.geometry.values, crs=4326).to_crs(UTM).values,
        result.frame.geometry.to_crs(UTM).values,
    )
    assert np.nanmax(moved) < 0.02
    assert list(out.iterdir()) == [path]  # nothing left beside it


def test_blind_spots_have_holes_and_they_come_out_clockwise(scene, tmp_path):
    blind = Q.coverage(scene, output="blind_spots", min_area_m2=0)
    polys = shapely.get_parts(blind.frame.geometry.values)
    holes_in = int(shapely.get_num_interior_rings(polys).sum())
    assert holes_in >= 1  # the wall and the homes stand inside the public space
    doc = json.loads(blind.to_file(tmp_path / "blind.json").read_text())
    written = [
        poly
        for f in doc["features"]
        for poly in (
            [f["geometry"]["coordinates"]]
            if f["geometry"]["type"] == "Polygon"
            else f["geometry"]["coordinates"]
        )
    ]
    assert sum(len(poly) - 1 for poly in written) == holes_in
    assert all(_signed_area(poly[0]) > 0 for poly in written)
    assert all(_signed_area(hole) < 0 for poly in written for hole in poly[1:])


def test_clockwise_rings_nan_and_inf_and_15_decimals_are_cleaned():
    cw = shapely.Polygon(
        [(110.29, 25.08), (110.29, 25.081), (110.291, 25.081), (110.291, 25.08)],
        holes=[
            [(110.2902, 25.0802), (110.2905, 25.0802), (110.2905, 25.0805), (110.2902, 25.0805)]
        ],
    )
    assert not cw.exterior.is_ccw and cw.interiors[0].is_ccw  # both wrong for RFC 7946
    multi = shapely.MultiPolygon([cw, box(110.3, 25.1, 110.31, 25.11, ccw=False)])
    frame = gpd.GeoDataFrame(
        {"share": [math.nan, math.inf, 0.123456789012345], "name": ["一", None, "三"]},
        geometry=[cw, multi, Point(110.123456789012345, 25.1234567890123)],
        crs=4326,
    )
    text = geojson.dumps(frame)
    assert rfc7946_problems(text) == []
    doc = json.loads(text)
    assert [f["properties"]["share"] for f in doc["features"]] == [None, None, 0.123456789012345]
    assert doc["features"][2]["geometry"]["coordinates"] == [110.1234568, 25.1234568]


def test_a_frame_in_metres_is_written_in_lon_lat():
    frame = local([box(0, 0, 10, 10)], name=["x"]).to_crs(UTM)
    doc = json.loads(geojson.dumps(frame))
    lon, lat = doc["features"][0]["geometry"]["coordinates"][0][0]
    assert abs(lon - 110.29) < 0.01 and abs(lat - 25.08) < 0.01


def test_a_table_without_geometry_is_refused_and_nothing_written(tmp_path):
    with pytest.raises(ValidationError, match="csv"):
        geojson.write(gpd.pd.DataFrame({"a": [1]}), tmp_path / "x.geojson")
    assert list(tmp_path.iterdir()) == []


def test_an_existing_file_is_replaced_whole(tmp_path):
    path = Path(tmp_path / "a.geojson")
    path.write_text("old")
    geojson.write(local([Point(0, 0)], name=["x"]), path)
    assert rfc7946_problems(path.read_bytes()) == []
