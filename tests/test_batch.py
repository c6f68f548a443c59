"""Dask batch work on a small LocalCluster equals the single-process path on the same events."""

from __future__ import annotations

import uuid

import pandas as pd
import pytest
from shapely import affinity

from twin import batch
from twin import query as Q
from twin.store import open_store

START, END = "2026-07-01T00:00Z", "2026-10-01T00:00Z"


@pytest.fixture(scope="module")
def cluster():
    """Two workers (threads: a process cluster takes seconds to start on a busy machine)."""
    with batch.batch_client(workers=2, processes=False) as client:
        yield client


@pytest.fixture(scope="module")
def scene():
    from twin.scenario import make_events, make_scenario

    layers = make_scenario("community", 0, residents=False, spaces=False)
    events = make_events(layers, 1200, 0, pd.Timestamp(START), pd.Timestamp("2026-09-30"))
    # the grid changes: every cell moves about 40 m east (boundaries redrawn)
    moved = layers["grid_cells"].copy()
    moved["geometry"] = moved.geometry.map(lambda g: affinity.translate(g, xoff=0.0004))
    return layers, events, moved


@pytest.fixture(scope="module", params=["embedded", "postgis"])
def store(request, scene, tmp_path_factory):
    layers, events, _ = scene
    if request.param == "embedded":
        s = open_store(tmp_path_factory.mktemp("batch") / "twin.gpkg")
    else:
        url = request.getfixturevalue("postgis_url")
        s = open_store(url, schema=f"t_{uuid.uuid4().hex[:10]}", drop_schema_on_close=True)
    s.write_layer("grid_cells", layers["grid_cells"], actor="t", source="scenario")
    s.append_events(events)
    yield s
    s.close()


def test_the_plan_covers_every_located_point_once():
    parts = batch.plan(START, END, tiles=(3, 2), extent=(110.0, 25.0, 110.3, 25.2), slices=2)
    assert len(parts) == 3 * 2 * 3 * 2  # months × slices × tiles
    assert parts[0].start == pd.Timestamp(START) and parts[-1].end == pd.Timestamp(END)
    edges = [(110.1, 25.1), (110.0, 25.0), (180.0, 90.0), (-180.0, -90.0), (110.2, 25.2)]
    july = [p for p in parts if p.start == pd.Timestamp(START)]
    for x, y in edges:
        holders = [p for p in july if p.tile[0] <= x and (x < p.tile[2] or p.last_x)
                   and p.tile[1] <= y and (y < p.tile[3] or p.last_y)]
        assert len(holders) == 1, (x, y)


# the Dask path reads both stores alike: PostGIS, where a city's events are (the embedded
# store's writes are in the command's test below)
@pytest.mark.parametrize("store", ["postgis"], indirect=True)
def test_reenrichment_on_dask_equals_the_single_process_path_and_writes_it(store, scene,
                                                                           cluster):
    _, events, moved = scene
    alone = batch.reenrich(store, moved)
    spread = batch.reenrich(store, moved, client=cluster, tiles=(2, 1), write=True)
    assert spread.parts == 3 * 2 and alone.parts == 3  # here: the three months in turn
    assert spread.events == alone.events == events["lon"].notna().sum()
    assert 0 < len(alone.changes) < alone.events  # some events change grid, not all
    pd.testing.assert_frame_equal(spread.changes, alone.changes)
    # written by the workers, part by part: the stored events now carry the new grids
    assert batch.reenrich(store, moved).changes.empty
    stored = store.read_events().set_index("id")
    first = alone.changes.iloc[0]
    assert stored.loc[first["id"], "grid_code"] == first["grid_code"]


def test_counts_and_hot_spots_over_the_period_on_dask_equal_the_queries(store, cluster):
    counted = batch.history_counts(store, start=START, end=END, client=cluster, tiles=(2, 1))
    alone = batch.history_counts(store, start=START, end=END)
    pd.testing.assert_series_equal(counted.units, alone.units)
    pd.testing.assert_series_equal(counted.cells, alone.cells)
    counts = batch.counts_answer(store, counted, level="grid", start=START, end=END)
    query = Q.counts_per_grid(store, "events", start=START, end=END)
    pd.testing.assert_frame_equal(counts.frame, query.frame)
    assert counts.notes == query.notes
    spots = batch.spots_answer(store, counted, start=START, end=END)
    hot = Q.hot_spots(store, "events", start=START, end=END)
    pd.testing.assert_frame_equal(spots.frame, hot.frame)
    assert spots.notes == hot.notes and (hot.frame["count"] > 0).sum() > 3


def test_gridtwin_batch_runs_both_works_in_one_process(scene, tmp_path, capsys):
    import json

    from twin.cli import main

    layers, events, moved = scene
    path = tmp_path / "twin.gpkg"
    with open_store(path) as s:
        s.write_layer("grid_cells", layers["grid_cells"], actor="t", source="scenario")
        s.append_events(events.iloc[:200])
    assert main(["batch", "reenrich", "--single", "--json", "--store", str(path)]) == 0
    assert json.loads(capsys.readouterr().out) == {"events": 200, "changed": 0, "parts": 1,
                                                   "written": False}
    with open_store(path) as s:  # the grid changes: a new version of the layer
        s.write_layer("grid_cells", moved, actor="t", source="new grids")
        expected = batch.reenrich(s, moved).changes
    assert len(expected) > 0
    assert main(["batch", "reenrich", "--single", "--write", "--out", str(tmp_path / "c.csv"),
                 "--store", str(path)]) == 0
    assert f"changed {len(expected)}" in capsys.readouterr().out
    with open_store(path) as s:
        assert batch.reenrich(s, moved).changes.empty  # stored: nothing left to change
        stored = s.read_events().set_index("id")["grid_code"]
    def codes(values):
        return [None if pd.isna(v) else v for v in values]

    assert codes(stored[expected["id"]]) == codes(expected["grid_code"])  # None: in no grid
    out = tmp_path / "counts.csv"
    assert main(["batch", "counts", "--single", "--json", "--store", str(path),
                 "--out", str(out)]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["events"] == 200 and pd.read_csv(out)["count"].sum() + \
        summary["unassigned"] == 200
    assert main(["batch", "counts", "--tiles", "2", "--store", str(path)]) == 2


@pytest.mark.parametrize(("env", "raw", "value"), [
    ("TWIN_BATCH_SCHEDULER", "tcp://10.0.0.5:8786", "tcp://10.0.0.5:8786"),
    ("TWIN_BATCH_SCHEDULER", "10.0.0.5:8786", None),  # no scheme: refused, says what to write
    ("TWIN_EVENTS_KEEP_MONTHS", "13", 13),
    ("TWIN_EVENTS_KEEP_MONTHS", "-1", None),
    ("TWIN_EVENTS_PARTITIONS_AHEAD", "0", 0),
])
def test_history_and_batch_settings_come_from_the_environment(monkeypatch, env, raw, value):
    from twin import settings
    from twin.errors import ConfigError

    monkeypatch.setenv(env, raw)
    name = env.removeprefix("TWIN_").lower()
    if value is None:
        with pytest.raises(ConfigError, match=env):
            settings.get(name)
    else:
        assert settings.get(name) == value
