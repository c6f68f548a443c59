"""The synthetic twin: deterministic, valid, laid out like a real community, at two scales."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import numpy as np
import pandas as pd
import pytest
import shapely
from pyproj import Geod

from twin import layers
from twin.errors import ValidationError
from twin.scenario import (
    ANCHOR,
    LOCAL_CRS,
    id_check_char,
    is_fictional_id,
    make_cases,
    make_events,
    make_scenario,
)
from twin.schema import CASES, EVENTS, validate_layer_frame

LAYERS = ["community", "grid_cells", "buildings", "parking", "parking_spaces", "cameras",
          "sensors", "facilities", "roads", "residents"]


@pytest.fixture(scope="module")
def sc():
    return make_scenario("community", seed=0)


@pytest.fixture(scope="module")
def street():
    return make_scenario("street", seed=0)


def assert_same(a, b):
    assert list(a) == list(b)
    for name in a:
        attrs = [c for c in a[name].columns if c != "geometry"]
        pd.testing.assert_frame_equal(pd.DataFrame(a[name][attrs]), pd.DataFrame(b[name][attrs]))
        if "geometry" in a[name]:
            assert shapely.equals_exact(a[name].geometry.values, b[name].geometry.values, 0).all()


def test_same_seed_same_twin_different_seed_different(sc):
    assert_same(sc, make_scenario("community", seed=0))
    other = make_scenario("community", seed=1)
    assert not sc["buildings"]["floors"].equals(other["buildings"]["floors"]) or not (
        sc["sensors"]["battery_level"].equals(other["sensors"]["battery_level"]))
    assert sc["residents"]["name"].tolist() != other["residents"]["name"].tolist()


@pytest.mark.parametrize("name", LAYERS)
def test_every_layer_is_present_and_valid(sc, name):
    frame = sc[name]
    spec = layers.get_layer(name)
    assert len(frame) > 0
    assert list(frame.columns) == spec.column_names + (["geometry"] if spec.geometry_type else [])
    validate_layer_frame(spec, frame)
    if spec.located:
        assert frame["grid_code"].notna().any()


def metric(frame):
    return frame.to_crs(LOCAL_CRS)


def test_unit_grids_tile_the_community(sc):
    grids = metric(sc["grid_cells"]).geometry.values
    boundary = metric(sc["community"]).geometry.item()
    union = shapely.union_all(grids)
    assert abs(union.area - boundary.area) / boundary.area < 1e-4
    assert shapely.symmetric_difference(union, boundary).area / boundary.area < 1e-4
    # pairwise overlaps: the areas add up to the union
    assert abs(shapely.area(grids).sum() - union.area) / union.area < 1e-6
    assert 0.5e6 <= boundary.area <= 1.0e6


def test_grid_codes_follow_the_domain(sc):
    g = sc["grid_cells"]
    assert 10 <= len(g) <= 15
    assert g["grid_code"].is_unique
    assert g["grid_code"].str.fullmatch(r"450311\d{8}").all()
    assert (g["county_code"] + g["street_code"] + g["community_code"] + g["sequence"]).equals(
        g["grid_code"])
    sizes = g.groupby("resp_grid_id").size()
    assert sizes.between(1, 3).all() and len(sizes) >= 4
    assert g.groupby("resp_grid_id")["grid_worker"].nunique().eq(1).all()
    assert g["grid_worker_phone"].str.fullmatch(r"170\d{8}").all()
    assert sc["community"]["community_code"].item() == "450311001001"


def test_everything_located_gets_a_grid(sc):
    for name in ("buildings", "cameras", "sensors", "parking", "parking_spaces"):
        frame = sc[name]
        assert frame["grid_code"].notna().all(), name
        assert frame["community_code"].eq("450311001001").all(), name
        assert frame["street_code"].eq("450311001").all(), name
    # facilities: some inside the community, some a few hundred metres outside
    inside = sc["facilities"]["grid_code"].notna()
    assert inside.sum() >= 5 and (~inside).sum() >= 3


def test_centre_is_in_yanshan(sc):
    c = sc["community"].geometry.item().centroid
    _, _, dist = Geod(ellps="WGS84").inv(c.x, c.y, *ANCHOR)
    assert dist < 1000


def test_counts_and_attributes_are_plausible(sc):
    b = sc["buildings"]
    assert 60 <= len(b) <= 120
    res = b[b["use"] == "residential"]
    assert res["floors"].between(5, 18).all() and res["floors"].max() >= 16
    assert (res["households"] == res["floors"] * res["units"] * 2).all()
    assert ((b["height_m"] - b["floors"] * 3.0).abs() < 1).all()
    # slab footprints about 60 × 12 m, facing south (long side east–west)
    env = metric(res).geometry.envelope.bounds
    assert ((env.maxx - env.minx).between(55, 65) & (env.maxy - env.miny).between(10, 16)).all()
    cams = sc["cameras"]
    assert 25 <= len(cams) <= 40
    assert cams["fov_deg"].between(60, 110).all() and cams["range_m"].between(30, 80).all()
    lots = sc["parking"]
    assert len(lots) >= 3 and set(lots["kind"]) == {"surface", "underground", "on_street"}
    counts = sc["parking_spaces"].groupby("lot_id").size()
    assert counts.reindex(lots["lot_id"]).fillna(0).astype(int).tolist() == lots[
        "total_spaces"].tolist()
    assert {"school", "kindergarten", "clinic", "elderly_care", "market", "park",
            "community_center"} <= set(sc["facilities"]["kind"])
    roads = sc["roads"]
    assert {"primary", "secondary", "internal"} <= set(roads["kind"])
    assert roads.loc[roads["kind"] == "primary", "name"].str.contains("路|大道").all()


def test_sensors_declare_what_they_measure(sc):
    s = sc["sensors"]
    assert 60 <= len(s) <= 120
    assert {"parking", "air", "smoke", "water_leak", "noise", "manhole", "elevator"} <= set(
        s["kind"])
    props = s["properties"].map(json.loads)
    assert props[s["kind"] == "air"].map(lambda p: p["pm25"] == "ug/m3").all()
    assert props[s["kind"] == "noise"].map(lambda p: p["noise"] == "dBA").all()
    assert s["ref_building"].dropna().isin(sc["buildings"]["building_code"]).all()
    assert s["ref_lot"].dropna().isin(sc["parking"]["lot_id"]).all()
    assert s.loc[s["kind"] == "smoke", "ref_building"].notna().all()
    assert s["battery_level"].between(0, 1).all() and (s["report_interval_s"] > 0).all()
    low = s["battery_level"] < 0.15
    assert s.loc[low, "device_state"].isin(["low_battery", "fault", "offline"]).all()


def test_residents_are_fictional_households(sc):
    r, b = sc["residents"], sc["buildings"]
    assert r["resident_id"].is_unique
    per_building = r.groupby("building_code").size()
    hh = b.set_index("building_code")["households"]
    assert per_building.reindex(hh.index).fillna(0).astype(int).equals(hh.astype(int))
    people = r.groupby("building_code")["household_size"].sum()
    assert people.reindex(hh.index).fillna(0).astype(int).tolist() == b["residents_count"].tolist()
    assert r["id_number"].str.fullmatch(r"450311\d{11}[\dX]").all()
    assert is_fictional_id(r["id_number"].to_numpy()).all()
    assert r["phone"].str.fullmatch(r"170\d{8}").all()
    assert r["name"].str.fullmatch(r"[\u4e00-\u9fff]{2,3}").all()
    assert (r["tags"] == "独居老人").sum() > 0
    assert (r.loc[r["tags"] == "独居老人", "household_size"] == 1).all()


@pytest.mark.parametrize("stem, check", [
    ("11010519491231002", "X"),  # the example of GB 11643
    ("44052418800101001", "4"),
])
def test_id_check_character(stem, check):
    assert id_check_char([stem])[0] == check
    assert not is_fictional_id([stem + check])[0]
    assert is_fictional_id([stem + ("0" if check != "0" else "1")])[0]


def test_street_scale_tiles_twenty_communities(street):
    c, g = street["community"], street["grid_cells"]
    assert len(c) == 20 and c["community_code"].is_unique
    assert c["street_code"].eq("450311001").all()
    assert g["grid_code"].is_unique and 200 <= len(g) <= 300
    assert 1_500 <= len(street["buildings"]) <= 2_500
    assert 1_500 <= len(street["sensors"]) <= 2_500
    assert 500 <= len(street["cameras"]) <= 700
    assert "residents" not in street
    for name in ("buildings", "cameras", "sensors"):
        assert street[name]["grid_code"].notna().all()
        assert street[name][layers.get_layer(name).id_field].is_unique
    # the communities tile without overlapping each other
    areas = metric(c).geometry.values
    assert abs(shapely.area(areas).sum() - shapely.union_all(areas).area) < 1.0


def test_unknown_scale_is_refused():
    with pytest.raises(ValidationError, match="street"):
        make_scenario("planet")


T0 = datetime(2026, 1, 1, tzinfo=UTC)
T1 = datetime(2026, 2, 1, tzinfo=UTC)


def test_cases_are_located_and_plausible(sc):
    cases = make_cases(sc, 300, seed=3, start=T0, end=T1)
    assert list(cases.columns) == [col.name for col in CASES.columns]
    assert len(cases) == 300 and cases["id"].is_unique
    assert cases["requested_at"].between(T0, T1).all()
    assert (cases["deadline_at"] > cases["requested_at"]).all()
    closed = cases["status"] == "closed"
    assert closed.mean() > 0.4 and (cases.loc[closed, "closed_at"] >= cases.loc[
        closed, "requested_at"]).all()
    assert cases.loc[~cases["status"].isin(["closed", "cancelled"]), "closed_at"].isna().all()
    assert cases["grid_code"].notna().mean() > 0.9
    late = cases.loc[closed, "closed_at"] > cases.loc[closed, "deadline_at"]
    assert 0 < late.mean() < 0.5
    pd.testing.assert_frame_equal(cases, make_cases(sc, 300, seed=3, start=T0, end=T1))


def test_events_come_from_the_twins_devices(sc):
    ev = make_events(sc, 500, seed=1, start=T0, end=T1)
    assert list(ev.columns) == [col.name for col in EVENTS.columns]
    assert ev["id"].is_unique and ev["observed_at"].is_monotonic_increasing
    assert (ev["received_at"] >= ev["observed_at"]).all()
    obs = ev[ev["kind"] == "obs"]
    assert obs["source_id"].isin(sc["sensors"]["sensor_id"]).all()
    payloads = obs["payload"].map(json.loads)
    assert payloads.map(lambda p: isinstance(p["values"], dict) and len(p["values"]) > 0).all()
    assert np.isfinite(ev["lon"].astype(float)).all()
    with pytest.raises(ValidationError, match="kinds"):
        make_events(sc, 5, kinds=("gossip",))
