"""Planner queries: known answers on hand-built cases, bad parameters, and both stores agreeing."""

from __future__ import annotations

import math
import uuid
from datetime import UTC, datetime

import geopandas as gpd
import numpy as np
import pandas as pd
import pytest
import shapely
from pyproj import Transformer
from scipy.sparse import csr_matrix
from shapely.geometry import LineString, Point, box

import twin.query as Q
from twin.errors import LayerNotFoundError, NotFoundError, TwinError, ValidationError
from twin.query.hotspots import getis_ord_gi_star, ring_weights
from twin.store import open_store

UTM = "EPSG:32649"
X0, Y0 = Transformer.from_crs(4326, UTM, always_xy=True).transform(110.29, 25.08)
T0 = datetime(2026, 3, 2, 8, 0, tzinfo=UTC)


def local(geoms, **columns) -> gpd.GeoDataFrame:
    """A layer frame from geometries in metres around the anchor (UTM 49N), stored in EPSG:4326."""
    moved = [shapely.affinity.translate(g, X0, Y0) for g in geoms]
    return gpd.GeoDataFrame(columns, geometry=moved, crs=UTM).to_crs(4326)


def lonlat(x: float, y: float) -> tuple[float, float]:
    return Transformer.from_crs(UTM, 4326, always_xy=True).transform(X0 + x, Y0 + y)


def grid(x0=-500, y0=-500, x1=1500, y1=500) -> gpd.GeoDataFrame:
    """Two unit grids side by side covering the hand-built scene."""
    mid = (x0 + x1) / 2
    return local(
        [box(x0, y0, mid, y1), box(mid, y0, x1, y1)],
        grid_code=["45031100100101", "45031100100102"],
        county_code=["450311"] * 2,
        street_code=["001"] * 2,
        community_code=["001"] * 2,
        sequence=["01", "02"],
        name=["一网格", "二网格"],
        resp_grid_id=["R01", "R01"],
    )


@pytest.fixture
def emb(tmp_path):
    s = open_store(tmp_path / "q.gpkg")
    s.write_layer("grid_cells", grid(), actor="t", source="t")
    yield s
    s.close()


def put(store, name, frame):
    store.write_layer(name, frame, actor="test", source="test")


def clinic_and_homes(xs) -> tuple[gpd.GeoDataFrame, gpd.GeoDataFrame]:
    """A clinic at the origin and 10 × 10 m homes whose west wall is *xs* metres east of it."""
    facilities = local([Point(0, 0)], facility_id=["F1"], kind=["clinic"], name=["卫生服务站"])
    homes = local(
        [box(x, -5, x + 10, 5) for x in xs],
        building_code=[f"B{x}" for x in xs],
        name=[f"{x}" for x in xs],
        use=["residential"] * len(xs),
        households=[10] * len(xs),
        residents_count=[30] * len(xs),
    )
    return facilities, homes


# -- known answers ---------------------------------------------------------------------------------


def test_within_distance_keeps_299_m_and_drops_301_m(emb):
    facilities, homes = clinic_and_homes([299, 301])
    put(emb, "buildings", homes)
    r = Q.within_distance(emb, "buildings", 300, point=lonlat(0, 0))
    assert r.frame["building_code"].tolist() == ["B299"]
    assert r.frame["distance_m"].iloc[0] == pytest.approx(299, abs=0.01)
    assert (r.crs, r.method, r.versions["buildings"]) == (UTM, "straight-line", 1)
    assert r.frame.crs.equals("EPSG:4326")


def test_within_distance_of_a_feature_leaves_it_out(emb):
    facilities, homes = clinic_and_homes([20, 40, 200])
    put(emb, "buildings", homes)
    r = Q.within_distance(emb, "buildings", 15, of="buildings:B20")
    assert r.frame["building_code"].tolist() == ["B40"]
    assert r.frame["distance_m"].iloc[0] == pytest.approx(10, abs=0.01)


@pytest.mark.parametrize(
    ("xs", "lacking"), [([299], []), ([301], ["B301"]), ([299, 301], ["B301"])]
)
def test_life_circle_5_minutes_is_300_m_straight_line(emb, xs, lacking):
    facilities, homes = clinic_and_homes(xs)
    put(emb, "buildings", homes)
    put(emb, "facilities", facilities)
    r = Q.life_circles(emb)
    assert r.method == "straight-line"
    got = r.frame.loc[r.frame["lacks_5min"] == "clinic", "building_code"].tolist()
    assert got == lacking
    five = r.summary[(r.summary.minutes == 5) & (r.summary.kind == "clinic")].iloc[0]
    assert (five.buildings_lacking, five.residents_lacking) == (len(lacking), 30.0 * len(lacking))
    assert (r.frame["lacks_10min"] == "").all()


def test_life_circle_walks_along_roads_when_there_are_some(emb):
    # a street along y = 0 and a lane north at x = 279 up to the home at y 20–30: 279 + 20 = 299 m;
    # the second home is 150 m off in a straight line but 150 + 160 = 310 m away on foot
    facilities, _ = clinic_and_homes([0])
    homes = local(
        [box(279, 20, 289, 30), box(-5, 150, 5, 160)],
        building_code=["NEAR", "FAR"],
        use=["residential"] * 2,
        households=[10, 20],
    )
    roads = local(
        [
            LineString([(-400, 0), (1400, 0)]),
            LineString([(279, 0), (279, 20)]),
            LineString([(160, 0), (160, 155), (5, 155)]),
        ],
        road_id=["R1", "R2", "R3"],
        kind=["secondary", "path", "path"],
    )
    put(emb, "buildings", homes)
    put(emb, "facilities", facilities)
    put(emb, "roads", roads)
    r = Q.life_circles(emb, kinds="clinic")
    assert r.method == "network"
    d = dict(zip(r.frame.building_code, r.frame.dist_clinic_m, strict=True))
    assert d["NEAR"] == pytest.approx(299, abs=0.01)
    assert d["FAR"] == pytest.approx(160 + 155 + 155, abs=0.01)
    assert r.frame.set_index("building_code")["lacks_5min"].to_dict() == {
        "NEAR": "",
        "FAR": "clinic",
    }
    straight = Q.life_circles(emb, kinds="clinic", method="straight-line")
    assert straight.method == "straight-line"
    assert straight.frame.set_index("building_code")["lacks_5min"].to_dict()["FAR"] == ""
    people = r.summary.set_index("minutes").loc[5, "residents_lacking"]
    assert people == pytest.approx(20 * Q.lifecircle.PERSONS_PER_HOUSEHOLD)


def test_nearest_order_and_live_state_filter(emb):
    lots = local(
        [box(x, -5, x + 10, 5) for x in (10, 20, 35)],
        lot_id=["P10", "P20", "P35"],
        kind=["surface"] * 3,
        total_spaces=[5, 50, 500],
    )
    put(emb, "parking", lots)
    r = Q.nearest(emb, "parking", 2, point=lonlat(0, 0))
    assert r.frame["lot_id"].tolist() == ["P10", "P20"]
    assert r.frame["rank"].tolist() == [1, 2]
    assert r.frame["distance_m"].round(2).tolist() == [10.0, 20.0]
    state = pd.DataFrame({"lot_id": ["P10", "P20", "P35"], "available_spaces": [0, 3, 9]})
    free = Q.nearest(emb, "parking", 2, point=lonlat(0, 0), state=state, where="available_spaces>0")
    assert free.frame["lot_id"].tolist() == ["P20", "P35"]
    assert free.frame["available_spaces"].tolist() == [3, 9]
    assert list(r.frame.columns[-3:]) == ["distance_m", "rank", "geometry"]
    assert list(free.frame.columns[-3:]) == ["geometry", "available_spaces", "rank"]
    assert free.frame["rank"].tolist() == [1, 2] and free.frame.geometry.name == "geometry"
    big = Q.nearest(emb, "parking", 5, point=lonlat(0, 0), where=[("total_spaces", ">=", 50)])
    assert big.frame["lot_id"].tolist() == ["P20", "P35"]


def _wall_scene(emb):
    # a camera at the origin looking east (90°), 60° wide, 100 m; a wall 20–25 m east of it
    cams = local(
        [Point(0, 0)],
        camera_id=["C1"],
        heading_deg=[90.0],
        fov_deg=[60.0],
        range_m=[100.0],
        status=["online"],
    )
    wall = local([box(20, -60, 25, 60)], building_code=["WALL"], use=["other"])
    put(emb, "cameras", cams)
    put(emb, "buildings", wall)


def test_a_camera_behind_a_wall_sees_nothing_past_it(emb):
    _wall_scene(emb)
    views = Q.coverage(emb, output="cameras")
    visible = gpd.GeoSeries(views.frame.geometry, crs=4326).to_crs(UTM).iloc[0]
    assert visible.bounds[2] - X0 <= 20 + 1e-6  # nothing east of the wall's face
    expected = 20 * 20 * math.tan(math.radians(30))  # the triangle in front of the wall
    assert visible.area == pytest.approx(expected, rel=1e-3)
    assert views.frame["blocked_share"].iloc[0] > 0.9
    assert Q.cameras_seeing(emb, lonlat(10, 0)).frame["camera_id"].tolist() == ["C1"]
    assert Q.cameras_seeing(emb, lonlat(50, 0)).frame.empty
    assert Q.cameras_seeing(emb, lonlat(-10, 0)).frame.empty  # behind the camera


def test_coverage_shares_and_blind_spots_add_up(emb):
    _wall_scene(emb)
    grids = Q.coverage(emb, output="grids").frame
    public = grids["public_area_m2"].sum()
    assert public == pytest.approx(2000 * 1000 - 5 * 120, rel=1e-6)
    covered = grids["covered_area_m2"].sum()
    assert covered == pytest.approx(20 * 20 * math.tan(math.radians(30)), rel=1e-3)
    blind = Q.coverage(emb, output="blind_spots", min_area_m2=0).frame
    assert blind["area_m2"].sum() == pytest.approx(public - covered, rel=1e-6)
    assert set(blind["grid_code"]) == {"45031100100101", "45031100100102"}


def test_what_if_adding_a_camera_or_a_clinic(emb):
    _wall_scene(emb)
    new = [
        {
            "camera_id": "C2",
            "heading_deg": 90.0,
            "fov_deg": 90.0,
            "range_m": 50.0,
            "lon": lonlat(30, 0)[0],
            "lat": lonlat(30, 0)[1],
        }
    ]
    r = Q.what_if(emb, "coverage", add=new)
    s = r.summary.set_index("measure")
    assert s.loc["covered_area_m2", "delta"] == pytest.approx(math.pi * 50**2 / 4, rel=5e-3)
    assert s.loc["cameras", "after"] == 2
    assert len(open_store(emb.url).read_layer("cameras")) == 1  # nothing saved
    gone = Q.what_if(emb, "coverage", remove=["C1"])
    assert gone.summary.set_index("measure").loc["covered_area_m2", "after"] == 0
    facilities, homes = clinic_and_homes([299, 450])
    put(emb, "buildings", homes)
    put(emb, "facilities", facilities)
    moved = Q.what_if(emb, "life_circles", move={"F1": lonlat(200, 0)})
    row = moved.summary[(moved.summary.minutes == 5) & (moved.summary.kind == "clinic")].iloc[0]
    assert (row.buildings_lacking_before, row.buildings_lacking_after) == (1, 0)
    assert moved.frame.set_index("building_code")["lacks_5min_changed"].to_dict() == {
        "B299": False,
        "B450": True,
    }


def test_counts_per_grid_and_responsibility_grid(emb):
    _facilities, homes = clinic_and_homes([0, 100, 600, 700, 800])
    homes["grid_code"] = ["45031100100101"] * 2 + ["45031100100102"] * 3
    homes["resp_grid_id"] = "R01"
    put(emb, "buildings", homes)
    r = Q.counts_per_grid(emb, "buildings", sum="households")
    assert r.frame[["unit", "count", "sum_households"]].values.tolist() == [
        ["45031100100101", 2, 20.0],
        ["45031100100102", 3, 30.0],
    ]
    resp = Q.counts_per_grid(emb, "buildings", level="resp_grid")
    assert resp.frame[["unit", "count"]].values.tolist() == [["R01", 5]]
    ev = pd.DataFrame(
        {
            "id": ["e1", "e2", "e3", "e4"],
            "kind": ["alarm", "alarm", "obs", "alarm"],
            "observed_at": [T0, T0, T0, T0.replace(month=4)],
            "lon": [110.29] * 4,
            "lat": [25.08] * 4,
            "grid_code": ["45031100100101", "45031100100102", "45031100100102", "45031100100102"],
        }
    )
    emb.append_events(ev)
    alarms = Q.counts_per_grid(emb, "events", type="alarm", start="2026-03-01", end="2026-04-01")
    assert alarms.frame["count"].tolist() == [1, 1]


def test_gi_star_matches_a_hand_computed_example():
    # a centre cell with 10 cases and its six neighbours with none, k = 1 (self included):
    # x̄ = 10/7, S = sqrt(100/7 − 100/49) = sqrt(600)/7. Centre: Σwx = 10, Σw = 7 → z = 0.
    # Neighbour: Σwx = 10, Σw = 4, n·Σw² − (Σw)² = 28 − 16 = 12 →
    # z = (10 − 40/7) / (sqrt(600)/7 · sqrt(12/6)) = 30 / sqrt(1200) = √3 / 2.
    import h3

    centre = h3.latlng_to_cell(25.08, 110.29, 10)
    ring = sorted(set(h3.grid_disk(centre, 1)) - {centre})
    cells = [centre, *ring]
    w = ring_weights(cells, 1)
    assert w.sum(axis=1).ravel().tolist() == [[7.0, 4.0, 4.0, 4.0, 4.0, 4.0, 4.0]]
    z, p = getis_ord_gi_star(np.array([10.0, 0, 0, 0, 0, 0, 0]), w)
    assert z[0] == pytest.approx(0.0, abs=1e-12)
    assert z[1:] == pytest.approx([math.sqrt(3) / 2] * 6)
    assert p[1] == pytest.approx(math.erfc(math.sqrt(3) / 2 / math.sqrt(2)))
    flat, p_flat = getis_ord_gi_star(np.ones(3), csr_matrix(np.ones((3, 3))))
    assert flat.tolist() == [0, 0, 0] and p_flat.tolist() == [1, 1, 1]


def test_hot_spots_find_a_cluster(emb):
    rng = np.random.default_rng(1)
    n = 60
    lon, lat = lonlat(300, 0)
    spread = np.c_[rng.uniform(-0.004, 0.012, n), rng.uniform(-0.004, 0.004, n)]
    pts = np.r_[
        np.c_[np.full(40, lon), np.full(40, lat)] + rng.normal(0, 0.00005, (40, 2)),
        spread + [110.29, 25.08],
    ]
    emb.append_events(
        pd.DataFrame(
            {
                "id": [f"A{i}" for i in range(len(pts))],
                "kind": "alarm",
                "observed_at": T0,
                "lon": pts[:, 0],
                "lat": pts[:, 1],
            }
        )
    )
    emb.create_case({"id": "K1", "status": "filed", "lon": lon, "lat": lat, "requested_at": T0})
    assert Q.hot_spots(emb, "cases").notes["points"] == 1
    r = Q.hot_spots(emb, "events", type="alarm", resolution=10)
    assert r.frame["count"].sum() == len(pts)
    top = r.frame.sort_values("count").iloc[-1]
    assert top["spot"] == "hot" and top["gi_z"] > 1.96 and top["confidence"] >= 95
    assert r.notes["points"] == len(pts)


def test_results_write_geojson_gpkg_and_csv(emb, tmp_path):
    _facilities, homes = clinic_and_homes([10, 20])
    put(emb, "buildings", homes)
    r = Q.within_distance(emb, "buildings", 100, point=lonlat(0, 0))
    for ext in ("geojson", "gpkg", "csv"):
        path = r.to_file(tmp_path / f"out.{ext}")
        back = pd.read_csv(path) if ext == "csv" else gpd.read_file(path)
        assert back["building_code"].tolist() == ["B10", "B20"]
    with pytest.raises(ValidationError, match=".geojson"):
        r.to_file(tmp_path / "out.xlsx")


# -- bad parameters --------------------------------------------------------------------------------

BAD = [
    (lambda s: Q.within_distance(s, "nope", 10, point=lonlat(0, 0)), LayerNotFoundError, "nope"),
    (
        lambda s: Q.within_distance(s, 'buildings"; DROP TABLE x; --', 10, point=lonlat(0, 0)),
        LayerNotFoundError,
        "unknown layer",
    ),
    (lambda s: Q.within_distance(s, "buildings", -5, point=lonlat(0, 0)), ValidationError, "≥ 0"),
    (
        lambda s: Q.within_distance(s, "buildings", "far", point=lonlat(0, 0)),
        ValidationError,
        "number",
    ),
    (
        lambda s: Q.within_distance(s, "buildings", 10, point=(116.4, 39.9)),
        ValidationError,
        "outside the community area",
    ),
    (
        lambda s: Q.within_distance(s, "buildings", 10, point=(25.08, 110.29)),
        ValidationError,
        "swapped",
    ),
    (lambda s: Q.within_distance(s, "buildings", 10), ValidationError, "either point"),
    (
        lambda s: Q.within_distance(s, "residents", 10, point=lonlat(0, 0)),
        ValidationError,
        "no geometry",
    ),
    (lambda s: Q.within_distance(s, "buildings", 10, of="buildings:NOPE"), NotFoundError, "NOPE"),
    (lambda s: Q.nearest(s, "buildings", 0, point=lonlat(0, 0)), ValidationError, "at least 1"),
    (
        lambda s: Q.nearest(s, "buildings", 3, point=lonlat(0, 0), where="x; drop>1"),
        ValidationError,
        "cannot read",
    ),
    (
        lambda s: Q.nearest(s, "buildings", 3, point=lonlat(0, 0), where="secret>1"),
        ValidationError,
        "cannot filter",
    ),
    (lambda s: Q.counts_per_grid(s, "buildings", level="city"), ValidationError, "level"),
    (lambda s: Q.counts_per_grid(s, "roads"), ValidationError, "not assigned"),
    (lambda s: Q.counts_per_grid(s, "events", start="yesterday"), ValidationError, "start"),
    (lambda s: Q.life_circles(s, circles={5: -300}), ValidationError, "> 0"),
    (lambda s: Q.life_circles(s, kinds="casino"), ValidationError, "casino"),
    (lambda s: Q.life_circles(s, method="fly"), ValidationError, "method"),
    (lambda s: Q.hot_spots(s, "tweets"), ValidationError, "source"),
    (lambda s: Q.hot_spots(s, "cases", resolution=3), ValidationError, "resolution"),
    (lambda s: Q.coverage(s, output="everything"), ValidationError, "output"),
    (lambda s: Q.parking_balance(s, walk_m=-1), ValidationError, "walk_m"),
    (lambda s: Q.what_if(s, "coverage"), ValidationError, "say what changes"),
    (lambda s: Q.what_if(s, "coverage", remove=["C404"]), NotFoundError, "C404"),
    (lambda s: Q.what_if(s, "coverage", move={"C1": (116.4, 39.9)}), ValidationError, "outside"),
]


@pytest.fixture(scope="module")
def scene(tmp_path_factory):
    """One small store shared by the read-only bad-parameter cases."""
    s = open_store(tmp_path_factory.mktemp("bad") / "q.gpkg")
    put(s, "grid_cells", grid())
    _wall_scene(s)
    facilities, homes = clinic_and_homes([10])
    put(s, "buildings", homes)
    put(s, "facilities", facilities)
    yield s
    s.close()


@pytest.mark.parametrize(("call", "error", "match"), BAD)
def test_bad_parameters_get_a_clear_error(scene, call, error, match):
    with pytest.raises(error, match=match) as info:
        call(scene)
    assert isinstance(info.value, TwinError)


# -- both stores give the same answers -------------------------------------------------------------


@pytest.fixture(scope="module")
def scenario():
    from twin.scenario import make_cases, make_events, make_scenario

    s = make_scenario("community", 0, residents=False, spaces=False)
    return s, make_events(s, 1500, 0), make_cases(s, 30, 0)


@pytest.fixture(scope="module")
def both(scenario, tmp_path_factory, postgis_url):
    layers_, events, cases = scenario
    emb = open_store(tmp_path_factory.mktemp("diff") / "twin.gpkg")
    pg = open_store(postgis_url, schema=f"t_{uuid.uuid4().hex[:10]}", drop_schema_on_close=True)
    for s in (emb, pg):
        for name, frame in layers_.items():
            s.write_layer(name, frame, actor="t", source="scenario")
        s.append_events(events)
        for case in cases.to_dict("records"):
            s.create_case(case)
    yield emb, pg, layers_
    emb.close()
    pg.close()


def _in_view(layers_, i):
    """A point 5 m in front of camera *i*."""
    cam = layers_["cameras"].iloc[i]
    p = gpd.GeoSeries([cam.geometry], crs=4326).to_crs(UTM).iloc[0]
    h = math.radians(cam.heading_deg)
    q = gpd.GeoSeries([Point(p.x + 5 * math.sin(h), p.y + 5 * math.cos(h))], crs=UTM).to_crs(4326)
    return (q.iloc[0].x, q.iloc[0].y)


def _centre(layers_, code_index=0):
    c = layers_["buildings"].geometry.iloc[code_index].centroid
    return (c.x, c.y)


DIFF = {
    "within_point": lambda s, L: Q.within_distance(s, "buildings", 150, point=_centre(L)),
    "within_feature": lambda s, L: Q.within_distance(
        s, "facilities", 400, of=("buildings", L["buildings"].building_code.iloc[5])
    ),
    "nearest": lambda s, L: Q.nearest(s, "buildings", 7, point=_centre(L, 10)),
    "nearest_filtered": lambda s, L: Q.nearest(
        s,
        "parking",
        2,
        point=_centre(L, 20),
        state=pd.DataFrame({"lot_id": L["parking"].lot_id, "available_spaces": [0, 5, 9, 1]}),
        where="available_spaces>0",
    ),
    "counts_layer": lambda s, L: Q.counts_per_grid(s, "buildings", sum="households"),
    "counts_events": lambda s, L: Q.counts_per_grid(
        s, "events", level="resp_grid", start="2026-01-01", type="camera"
    ),
    "counts_cases": lambda s, L: Q.counts_per_grid(s, "cases", level="community"),
    "coverage": lambda s, L: Q.coverage(s, output="grids"),
    "blind_spots": lambda s, L: Q.coverage(s, output="blind_spots"),
    "seeing": lambda s, L: Q.cameras_seeing(s, _in_view(L, 3)),
    "parking": lambda s, L: Q.parking_balance(s),
    "life_circles": lambda s, L: Q.life_circles(s),
    "hot_spots": lambda s, L: Q.hot_spots(s, "events", type="camera"),
    "what_if": lambda s, L: Q.what_if(s, "life_circles", remove=[L["facilities"].facility_id[0]]),
}


@pytest.mark.parametrize("name", list(DIFF))
def test_embedded_and_postgis_give_the_same_answer(both, name):
    emb, pg, layers_ = both
    a, b = DIFF[name](emb, layers_), DIFF[name](pg, layers_)
    assert (a.crs, a.parameters.keys(), a.versions) == (b.crs, b.parameters.keys(), b.versions)
    if name.startswith(("within", "nearest", "counts")):
        assert b.method == "postgis" and a.method != "postgis"
    assert len(a.frame) == len(b.frame) and list(a.frame.columns) == list(b.frame.columns)
    assert len(a.frame) > 0
    for col in a.frame.columns:
        x, y = a.frame[col], b.frame[col]
        if col == "geometry":
            ax = gpd.GeoSeries(x, crs=4326).to_crs(UTM)
            by = gpd.GeoSeries(y, crs=4326).to_crs(UTM)
            assert np.allclose(ax.area, by.area, rtol=1e-3, atol=1e-6)
        elif pd.api.types.is_float_dtype(x) and pd.api.types.is_float_dtype(y):
            assert np.allclose(x.to_numpy(float), y.to_numpy(float), rtol=1e-3, equal_nan=True), col
        else:
            assert x.astype(str).tolist() == y.astype(str).tolist(), col
    if a.summary is not None:
        pd.testing.assert_frame_equal(a.summary, b.summary, rtol=1e-3)


def test_postgis_reads_survive_a_dropped_connection_and_leave_no_transaction(both, monkeypatch):
    """Planner reads run in autocommit without a ping; a pooled connection the server dropped
    (as after a restart) is replaced and the statement run again, not reported as an outage."""
    import sqlalchemy as sa

    emb, pg, layers_ = both
    first = Q.within_distance(pg, "buildings", 150, point=_centre(layers_)).frame
    with pg.read_engine.connect() as conn:
        pid = conn.execute(sa.text("SELECT pg_backend_pid()")).scalar_one()
        assert conn.execute(sa.text("SELECT now() = statement_timestamp()")).scalar_one()
    with pg.engine.begin() as conn:  # the server drops the pooled read connection
        assert conn.execute(sa.text("SELECT pg_terminate_backend(:p)"), {"p": pid}).scalar_one()
    from twin.query import sql

    tries = []
    real = sql._read_once
    monkeypatch.setattr(sql, "_read_once", lambda *a: tries.append(1) or real(*a))
    again = Q.within_distance(pg, "buildings", 150, point=_centre(layers_)).frame
    assert len(tries) == 2  # the dead connection, then a new one
    assert again["building_code"].tolist() == first["building_code"].tolist()
    with pg.read_engine.connect() as conn:
        assert conn.execute(sa.text("SELECT pg_backend_pid()")).scalar_one() != pid


def test_a_server_that_does_not_answer_is_a_store_error_not_a_driver_error(both, monkeypatch):
    import sqlalchemy as sa

    from twin.errors import StoreUnavailableError

    emb, pg, layers_ = both
    gone = sa.create_engine("postgresql+psycopg://twin@127.0.0.1:1/twin",
                            connect_args={"connect_timeout": 2})  # nothing listens on port 1
    monkeypatch.setattr(pg, "read_engine", gone)
    for ask in (lambda: Q.within_distance(pg, "buildings", 150, point=_centre(layers_)),
                lambda: Q.counts_per_grid(pg, "buildings")):
        with pytest.raises(StoreUnavailableError, match="did not answer.*check that the server"):
            ask()


def test_point_queries_are_planned_once_and_other_reads_keep_postgres_choice(both):
    """Within and nearest are prepared under a generic plan (their plan does not depend on the
    point); a counts query over a period on the same pooled connection gets PostgreSQL's own
    choice back, and the answers are those of the plan-per-call reads."""
    from twin.query import sql

    emb, pg, layers_ = both

    def plan_mode() -> str:
        pooled = pg.read_engine.raw_connection()  # the one pooled connection these reads used
        try:
            with pooled.driver_connection.cursor() as cursor:
                cursor.execute("SHOW plan_cache_mode")
                return cursor.fetchone()[0]
        finally:
            pooled.close()

    centre = _centre(layers_)
    planned = [Q.within_distance(pg, "buildings", 150, point=centre).frame for _ in range(3)]
    assert plan_mode() == "force_generic_plan"
    Q.counts_per_grid(pg, "events", type="alarm", start="2026-03-01", end="2026-04-01")
    assert plan_mode() == "auto"
    per_call = sql.run_versioned  # the same statement without one_plan: planned at every call
    try:
        sql.run_versioned = lambda *a, **k: per_call(*a, **{**k, "one_plan": False})
        again = Q.within_distance(pg, "buildings", 150, point=centre).frame
    finally:
        sql.run_versioned = per_call
    assert plan_mode() == "auto"
    for frame in planned:
        assert frame["building_code"].tolist() == again["building_code"].tolist()
        assert np.allclose(frame["distance_m"], again["distance_m"])
    assert len(again) and again["distance_m"].le(150).all()


@pytest.mark.parametrize(("text", "driver"), [
    ("SELECT a::text FROM t WHERE b = :b", "SELECT a::text FROM t WHERE b = %(b)s"),
    ("SELECT 7 % 2, CAST(:x AS int), ARRAY[:y]", "SELECT 7 %% 2, CAST(%(x)s AS int), ARRAY[%(y)s]"),
    ("SELECT x FROM t WHERE y = ANY(:_layers)", "SELECT x FROM t WHERE y = ANY(%(_layers)s)"),
])
def test_bound_names_become_the_drivers(text, driver):
    from twin.query.sql import _driver_sql

    assert _driver_sql(text) == driver


# -- the command line ------------------------------------------------------------------------------


def test_cli_writes_the_answer_and_refuses_bad_parameters(emb, tmp_path, capsys):
    from scripts.query import main

    _facilities, homes = clinic_and_homes([10, 20, 400])
    put(emb, "buildings", homes)
    lon, lat = lonlat(0, 0)
    out = tmp_path / "near.geojson"
    code = main(
        [
            "within",
            "--param",
            "layer=buildings",
            "--param",
            "distance_m=100",
            "--param",
            f"point={lon},{lat}",
            "--db",
            str(emb.url),
            "--out",
            str(out),
        ]
    )
    assert code == 0
    assert gpd.read_file(out)["building_code"].tolist() == ["B10", "B20"]
    assert '"method": "straight-line"' in capsys.readouterr().out
    for argv, message in [
        (
            [
                "within",
                "--param",
                "layer=nope",
                "--param",
                "distance_m=1",
                "--param",
                f"point={lon},{lat}",
            ],
            "unknown layer 'nope'",
        ),
        (
            [
                "nearest",
                "--param",
                "layer=buildings",
                "--param",
                "k=0",
                "--param",
                f"point={lon},{lat}",
            ],
            "k must be at least 1",
        ),
        (["within", "--param", "layer=buildings", "--param", "distance_m=1"], "either point"),
        (["counts", "--param", "source=buildings", "--param", "colour=red"], "no parameter"),
        (["teleport"], "unknown query"),
    ]:
        assert main([*argv, "--db", str(emb.url), "--out", str(tmp_path / "x.csv")]) == 2
        err = capsys.readouterr().err
        assert message in err and "hint:" in err and "Traceback" not in err


# -- hot spots: honest statistics (issue 17) ------------------------------------------------------


@pytest.mark.parametrize(
    ("correction", "expected"),
    [
        # Benjamini-Hochberg by hand: sorted p·m/rank = .04, .06, .0533, .05 → step-up minima
        ("fdr_bh", [0.05, 0.05, 0.01 * 4, 0.05]),
        ("bonferroni", [0.12, 0.16, 0.04, 0.2]),
        ("none", [0.03, 0.04, 0.01, 0.05]),
    ],
)
def test_p_values_are_adjusted_for_many_cells(correction, expected):
    from twin.query.hotspots import adjust_p

    got = adjust_p(np.array([0.03, 0.04, 0.01, 0.05]), correction)
    assert got == pytest.approx(expected)
    assert adjust_p(np.array([0.9, 0.5]), "bonferroni").tolist() == [1.0, 1.0]


def test_one_case_makes_no_hot_spot(emb):
    lon, lat = lonlat(300, 0)
    emb.create_case({"id": "K1", "status": "filed", "lon": lon, "lat": lat, "requested_at": T0})
    # the old rule (raw p < 0.05 and z > 0, no minimum count) called empty cells next to one
    # case hot; with no correction they are now "too few", not hot
    naive = Q.hot_spots(emb, "cases", correction="none", min_count=1).frame
    looked_hot = (naive["gi_p"] < 0.05) & (naive["gi_z"] > 0) & (naive["count"] == 0)
    assert looked_hot.any() and (naive.loc[looked_hot, "spot"] == "too few").all()
    honest = Q.hot_spots(emb, "cases")
    assert honest.parameters["correction"] == "fdr_bh" and honest.parameters["min_count"] == 3
    assert set(honest.frame["spot"]) <= {"not significant", "too few"}
    assert honest.notes["hot"] == 0 and honest.notes["cold"] == 0
    assert (honest.frame["confidence"] == 0).all()
    assert (honest.frame["gi_p_adj"] >= honest.frame["gi_p"] - 1e-15).all()


def _cluster_and_noise(emb, cluster=40, noise=60, seed=1):
    rng = np.random.default_rng(seed)
    lon, lat = lonlat(300, 0)
    spread = np.c_[rng.uniform(-0.004, 0.012, noise), rng.uniform(-0.004, 0.004, noise)]
    pts = np.r_[
        np.c_[np.full(cluster, lon), np.full(cluster, lat)] + rng.normal(0, 0.00005, (cluster, 2)),
        spread + [110.29, 25.08],
    ]
    emb.append_events(pd.DataFrame({"id": [f"A{i}" for i in range(len(pts))], "kind": "alarm",
                                    "observed_at": T0, "lon": pts[:, 0], "lat": pts[:, 1]}))
    return pts


def test_a_known_cluster_stays_hot_under_every_correction_and_hot_cells_hold_cases(emb):
    _cluster_and_noise(emb)
    hot = {}
    for correction in ("none", "fdr_bh", "bonferroni"):
        r = Q.hot_spots(emb, "events", type="alarm", correction=correction)
        f = r.frame
        top = f.sort_values("count").iloc[-1]
        assert top["spot"] == "hot" and top["confidence"] >= 95, correction
        called = f[f["spot"] == "hot"]
        assert (called["count"] >= 3).all() and (called["gi_p_adj"] < 0.05).all()
        assert ((f["spot"] == "not significant") == (f["gi_p_adj"] >= 0.05)).all()
        hot[correction] = r.notes["hot"]
    assert hot["none"] >= hot["fdr_bh"] >= hot["bonferroni"] >= 1


def test_gi_star_z_scores_agree_with_esda(emb):
    esda = pytest.importorskip("esda")  # dev extra: a test-only oracle
    from libpysal.weights import WSP

    _cluster_and_noise(emb, seed=7)
    r = Q.hot_spots(emb, "events", type="alarm", k=2, correction="none")
    cells = r.frame["h3"].tolist()
    w = WSP(ring_weights(cells, 2)).to_W(silence_warnings=True)
    g = esda.G_Local(r.frame["count"].to_numpy(float), w, transform="B", star=True,
                     permutations=0)
    assert np.allclose(r.frame["gi_z"].to_numpy(), g.Zs, atol=1e-9)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"correction": "holm"}, "correction must be one of fdr_bh, bonferroni, none"),
        ({"min_count": 0}, "min_count"),
        ({"alpha": "five"}, "alpha must lie between 0 and 1"),
        ({"alpha": 1.5}, "alpha must lie between 0 and 1"),
    ],
)
def test_bad_hot_spot_parameters_are_refused(emb, kwargs, match):
    with pytest.raises(ValidationError, match=match):
        Q.hot_spots(emb, "cases", **kwargs)


def test_what_if_a_second_camera_closes_the_blind_spot_behind_a_building(emb):
    # 100 × 100 m (two grids of 50 × 100); an all-round camera in the middle; a 10 × 20 m
    # building east of it casts the only blind spot, between the building and the east edge
    put(emb, "grid_cells", grid(0, 0, 100, 100))
    put(emb, "buildings", local([box(70, 40, 80, 60)], building_code=["B1"], use=["other"]))
    put(emb, "cameras", local([Point(50, 50)], camera_id=["C1"], heading_deg=[0.0],
                              fov_deg=[360.0], range_m=[200.0], status=["online"]))
    blind = Q.coverage(emb, output="blind_spots")
    assert len(blind.frame) == 1 and blind.frame["grid_code"].iloc[0].endswith("02")
    east = {"camera_id": "C9", "heading_deg": 0.0, "fov_deg": 360.0, "range_m": 200.0,
            "lon": lonlat(95, 50)[0], "lat": lonlat(95, 50)[1]}
    # both cameras stand on the building's axis: two slivers (< 20 m²) along its long walls
    # stay unseen by either, and are not blind spots at min_area_m2=20
    r = Q.what_if(emb, "coverage", add=[east], min_area_m2=20)
    s = r.summary.set_index("measure")
    assert (s.loc["blind_spots", "before"], s.loc["blind_spots", "after"]) == (1, 0)
    assert s.loc["blind_spot_area_m2", "before"] == pytest.approx(blind.frame["area_m2"].sum())
    assert Q.what_if(emb, "coverage", add=[east]).summary.set_index("measure").loc[
        "blind_spots", "after"] == 2  # at the default 10 m² the slivers count
    assert s.loc["blind_spot_area_m2", "delta"] < 0 and s.loc["coverage_share", "delta"] > 0
    assert r.notes["blind_spots_closed"] == 1
    assert r.frame["blind_spots_closed"].tolist() == [0, 1]
    # a camera far off in the west corner changes nothing
    west = {**east, "camera_id": "C8", "range_m": 5.0, "lon": lonlat(2, 2)[0],
            "lat": lonlat(2, 2)[1]}
    none = Q.what_if(emb, "coverage", add=[west], min_area_m2=10)
    assert none.notes["blind_spots_closed"] == 0
    with pytest.raises(ValidationError, match="min_area_m2"):
        Q.what_if(emb, "coverage", add=[west], min_area_m2=-1)


def test_life_circles_must_reach_farther_for_a_longer_walk(emb):
    facilities, homes = clinic_and_homes([10])
    put(emb, "buildings", homes)
    put(emb, "facilities", facilities)
    with pytest.raises(ValidationError, match="10 min is 300 m but 5 min is 400 m"):
        Q.life_circles(emb, circles={5: 400, 10: 300})
    assert Q.life_circles(emb, circles={5: 200, 10: 600}).parameters["circles"] == {5: 200.0,
                                                                                     10: 600.0}
