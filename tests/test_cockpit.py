"""twin.cockpit: the twin at time t, KPI tiles, grid and building indicators, scope, drill-down."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from tests.browser import CENTRE_BUILDING, LAT, LON, write_small_twin
from twin import cockpit
from twin.errors import ValidationError
from twin.store import open_store

NOW = pd.Timestamp("2026-03-02 04:00", tz="UTC")  # 12:00 in Shanghai
G1, G2 = "45031100100101", "45031100100102"


def case(i, grid, *, status="dispatched", hours_ago=2.0, due_in=10.0, closed_ago=None, lon=None):
    requested = NOW - pd.Timedelta(hours=hours_ago)
    return {
        "id": f"C{i}", "status": status, "service_code": "E0101", "family": "event",
        "source": "patrol", "description": f"case {i}",
        "lon": lon if lon is not None else (LON + 0.001 if grid == G1 else LON + 0.003),
        "lat": LAT + 0.0013, "grid_code": grid, "requested_at": requested,
        "updated_at": requested, "deadline_at": requested + pd.Timedelta(hours=hours_ago + due_in),
        "closed_at": None if closed_ago is None else NOW - pd.Timedelta(hours=closed_ago),
        "data": json.dumps({"times": {"file": requested.isoformat()}}),
    }


CASES = [
    case(1, G1),                                          # open
    case(2, G1, hours_ago=30, due_in=-5),                 # overdue since 5 h after it was due
    case(3, G2, status="closed", hours_ago=20, due_in=5, closed_ago=10),   # closed on time
    case(4, G2, status="closed", hours_ago=5, due_in=2, closed_ago=1),     # closed at t-1 h
    case(5, G2, hours_ago=-3),                            # reported after NOW: not yet there
]


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    path = write_small_twin(tmp_path_factory.mktemp("cockpit") / "t.gpkg")
    s = open_store(path)
    for row in CASES:
        s.create_case(row)
    cx, cy = LON + 0.002, LAT + 0.00135  # the centre building
    s.append_events(pd.DataFrame({
        "id": ["E1", "E2", "E3"], "kind": ["obs", "obs", "report"],
        "source_id": ["S1", "S3", "B-C"],
        "observed_at": [NOW - pd.Timedelta(minutes=2)] * 2 + [NOW - pd.Timedelta(hours=3)],
        "received_at": [NOW] * 3, "lon": [LON + 0.0005, LON + 0.0036, cx],
        "lat": [LAT + 0.0013, LAT + 0.0010, cy], "grid_code": [G1, G2, G2],
        "payload": ['{"values": {"pm25": 41.5}}', '{"values": {"occupied": 1}}',
                    '{"description": "x"}']}))
    yield s
    s.close()


def test_cases_at_a_moment_have_their_state_then():
    table = cockpit.cases_at(pd.DataFrame(CASES), NOW)
    states = dict(zip(table["id"], table["state"], strict=True))
    assert states == {"C1": "open", "C2": "overdue", "C3": "closed", "C4": "closed"}
    earlier = cockpit.cases_at(pd.DataFrame(CASES), NOW - pd.Timedelta(hours=2.5))
    states = dict(zip(earlier["id"], earlier["state"], strict=True))
    assert states["C4"] == "open" and "C1" not in states  # C4 closed later; C1 not reported yet


def test_kpis_grid_values_and_sensors(store):
    data = cockpit.cockpit_data(store, at=NOW, window="24h")
    k = data.kpis
    assert (k["open"], k["overdue"]) == (2, 1)
    assert k["reports_today"] == 2  # C1 and C4 were reported after midnight in Shanghai
    assert k["air_quality"] == 41.5
    assert k["sensors_online"] == (2, 3)  # S2 has no reading in the last hour
    grids = data.grids.set_index("grid_code")
    assert grids.loc[G1, "open_cases"] == 2 and grids.loc[G1, "overdue"] == 1
    assert grids.loc[G2, "open_cases"] == 0 and grids.loc[G2, "reports"] == 1
    assert grids.loc[G1, "households"] + grids.loc[G2, "households"] == 234
    sensors = data.sensors.set_index("sensor_id")
    assert sensors.loc["S1", "state"] == "ok" and sensors.loc["S2", "state"] == "offline"
    assert sensors.loc["S1", "values"] == "pm25=41.5"
    assert set(data.cases["id"]) == {"C1", "C2", "C3", "C4"}  # C3 closed 10 h ago: in 24 h


def test_window_and_time_slider(store):
    short = cockpit.cockpit_data(store, at=NOW, window="1h")
    assert set(short.cases["id"]) == {"C1", "C2"}  # closed ones outside the last hour dropped
    before = cockpit.cockpit_data(store, at=NOW - pd.Timedelta(hours=4), window="24h")
    assert before.kpis["open"] == 2 and "C1" not in set(before.cases["id"])
    with pytest.raises(ValidationError, match="1h, 24h, 7d"):
        cockpit.cockpit_data(store, window="2h")


def test_scope_limits_everything_and_drills_down(store):
    top = cockpit.cockpit_data(store, at=NOW)
    assert top.scope.level == "district" and list(top.drill["code"]) == ["450311001"]
    grid = cockpit.Scope().down("450311001").down("450311001001").down(G2)
    assert grid.level == "grid" and grid.grid == G2
    data = cockpit.cockpit_data(store, at=NOW, scope=grid)
    assert set(data.grids["grid_code"]) == {G2}
    assert data.kpis["open"] == 0 and set(data.cases["grid_code"]) <= {G2}
    assert set(data.drill["code"]) <= set(data.buildings["building_code"])
    community = cockpit.cockpit_data(store, at=NOW, scope=cockpit.Scope(community="450311001001"))
    assert list(community.drill["code"]) == [G1, G2]
    mine = cockpit.cockpit_data(store, at=NOW, scope=cockpit.Scope(grids=frozenset({G1})))
    assert set(mine.cases["grid_code"]) == {G1} and set(mine.grids["grid_code"]) == {G1}


def test_cases_count_on_the_building_they_are_at(store):
    data = cockpit.cockpit_data(store, at=NOW)
    counts = data.buildings.set_index("building_code")["open_cases"]
    assert counts.sum() <= 2 and counts.loc[CENTRE_BUILDING] == 0


def test_a_rerun_finds_the_layer_frame_and_its_case_buildings_again(store):
    """In the whole district the scope hands back the layer frame itself (its building index
    is found again), and the open cases' buildings are looked up once for the same positions."""
    from tests.browser import small_twin_layers

    buildings = small_twin_layers()["buildings"].assign(grid_code=[G1, G1, G1, G2, G2])
    assert cockpit._in_scope(buildings, cockpit.Scope()) is buildings
    assert len(cockpit._in_scope(buildings, cockpit.Scope(grids=frozenset({G2})))) == 2
    lon, lat = [LON + 0.0006, LON + 0.9], [LAT + 0.0006, LAT]
    first = cockpit.nearest_building(buildings, lon, lat)
    assert first.tolist() == ["B-1", None]
    first[0] = "changed"  # a caller's copy: the kept answer is not touched
    assert cockpit.nearest_building(buildings, lon, lat).tolist() == ["B-1", None]
    assert cockpit.nearest_building(buildings, lon[:1], lat[:1]).tolist() == ["B-1"]


def test_large_layers_are_left_to_the_choropleth_or_thinned(store, monkeypatch):
    monkeypatch.setitem(cockpit.FEATURE_BUDGET, "buildings", 2)
    monkeypatch.setitem(cockpit.FEATURE_BUDGET, "cases", 1)
    data = cockpit.cockpit_data(store, at=NOW)
    # too many buildings for a whole district: none drawn, the grid choropleth stands for them
    assert len(data.buildings) == 0 and data.hidden["buildings"] == 5
    assert data.kpis["open"] == 2 and data.grids["open_cases"].sum() == 2  # counts stay whole
    assert list(data.cases["state"]) == ["overdue"] and data.hidden["cases"] >= 1  # most urgent
    grid = cockpit.cockpit_data(store, at=NOW, scope=cockpit.Scope(grid=G2))
    assert len(grid.buildings) <= 2 or grid.hidden["buildings"] > 0


def test_sensors_in_alarm_or_offline_are_kept_first(store, monkeypatch):
    monkeypatch.setitem(cockpit.FEATURE_BUDGET, "sensors", 1)
    data = cockpit.cockpit_data(store, at=NOW)
    every = cockpit.cockpit_data(store, at=NOW, scope=cockpit.Scope())
    assert len(data.sensors) == 1 and data.hidden["sensors"] >= 1
    states = set(every.sensors["state"]) if len(every.sensors) > 1 else set()
    if states - {"ok"}:
        assert data.sensors["state"].iloc[0] != "ok"


def test_reads_are_reused_until_the_store_changes(tmp_path):
    path = write_small_twin(tmp_path / "w.gpkg")
    cockpit.clear_caches()
    with open_store(path) as s:
        first = cockpit.cockpit_data(s, at=NOW)
        mark = cockpit.store_watermark(s)
        assert cockpit.store_watermark(s) == mark  # reading changes nothing
        again = cockpit.cockpit_data(s, at=NOW)
        assert again.kpis == first.kpis
        s.create_case(CASES[0])  # a write: the next rerun must see it
        assert cockpit.store_watermark(s) != mark
        after = cockpit.cockpit_data(s, at=NOW)
        assert after.kpis["open"] == first.kpis["open"] + 1


def test_live_reads_are_reused_as_time_moves_on(store, monkeypatch):
    calls = []
    real = store.read_events
    monkeypatch.setattr(store, "read_events", lambda *a, **k: calls.append(a) or real(*a, **k))
    cockpit.clear_caches()
    cockpit.cockpit_data(store)
    n = len(calls)
    assert n == 2  # the window's events and the last hour's readings
    cockpit.cockpit_data(store)  # a rerun with nothing written reads no events again
    assert len(calls) == n


# -- 挂账 stops the clock; the big screen's ranking and trends --------------------------------


def test_a_case_on_hold_is_open_but_never_overdue():
    held = case(6, G2, status="on_hold", hours_ago=40, due_in=-20)  # its deadline long passed
    table = cockpit.cases_at(pd.DataFrame([*CASES, held]), NOW)
    states = dict(zip(table["id"], table["state"], strict=True))
    assert states["C6"] == "open" and states["C2"] == "overdue"
    kpis = cockpit.kpi_tiles(table, pd.DataFrame(), pd.DataFrame(), pd.DataFrame(), NOW)
    assert (kpis["open"], kpis["overdue"], kpis["on_hold"]) == (3, 1, 1)
    resumed = cockpit.cases_at(pd.DataFrame([*CASES, {**held, "status": "handling"}]), NOW)
    assert dict(zip(resumed["id"], resumed["state"], strict=True))["C6"] == "overdue"


def test_ranking_puts_the_grid_with_most_overdue_first_and_follows_the_scope(store):
    data = cockpit.cockpit_data(store, at=NOW, wall=True)
    ranking = data.ranking
    assert list(ranking.columns) == list(cockpit.RANKING_COLUMNS)
    assert list(ranking["code"]) == [G1, G2]  # G1: 1 overdue of 2 open; G2: none open
    assert ranking.loc[0, ["open_cases", "overdue", "on_hold"]].tolist() == [2, 1, 0]
    grid = cockpit.cockpit_data(store, at=NOW, wall=True,
                                scope=cockpit.Scope(street="450311001", grid=G2))
    assert list(grid.ranking["code"]) == [G2]
    assert cockpit.cockpit_data(store, at=NOW).ranking.empty  # the cockpit does not pay for it


def _filed(i, requested, *, closed=None, due_h=24.0):
    requested = pd.Timestamp(requested, tz="Asia/Shanghai").tz_convert("UTC")
    return {**case(i, G1), "requested_at": requested, "updated_at": requested,
            "filed_at": requested, "status": "closed" if closed else "handling",
            "deadline_at": requested + pd.Timedelta(hours=due_h),
            "closed_at": None if closed is None else requested + pd.Timedelta(hours=closed)}


def test_trends_compare_the_month_so_far_with_last_month_and_last_year():
    at = pd.Timestamp("2026-03-10 12:00", tz="Asia/Shanghai")
    rows = [
        _filed(1, "2026-03-02 09:00", closed=2), _filed(2, "2026-03-03 09:00", closed=30),
        _filed(3, "2026-03-04 09:00", closed=5), _filed(4, "2026-03-05 09:00"),  # overdue, open
        _filed(5, "2026-02-02 09:00", closed=1), _filed(6, "2026-02-03 09:00", closed=1),
        _filed(7, "2026-02-20 09:00", closed=1),  # after the same span of February: not counted
        _filed(8, "2025-03-05 09:00", closed=1),
    ]
    table = cockpit.cases_at(pd.DataFrame(rows), at)
    got = cockpit.trends(table, at).set_index("metric")
    assert got.loc["reports", "value"] == 4
    assert got.loc["reports", "mom"] == pytest.approx(100.0)   # 4 against 2 in Feb 1–10
    assert got.loc["reports", "yoy"] == pytest.approx(300.0)   # 4 against 1 in March 2025
    assert got.loc["close_rate", "value"] == pytest.approx(75.0)         # 3 closed of 4 due
    assert got.loc["ontime_close_rate", "value"] == pytest.approx(50.0)  # 2 on time of 4
    assert got.loc["ontime_close_rate", "mom"] == pytest.approx(-50.0)   # Feb: 100 %
    daily = cockpit.daily_reports(table, at, days=10)
    assert len(daily) == 10 and daily["count"].sum() == 4
    assert daily.iloc[-1]["day"] == pd.Timestamp("2026-03-10")
