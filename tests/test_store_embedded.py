"""What only the embedded store promises: a valid GeoPackage that GDAL, pyogrio and QGIS read."""

from __future__ import annotations

import shutil
import sqlite3
import struct
import subprocess
import threading
from datetime import UTC, date, datetime, timedelta

import geopandas as gpd
import numpy as np
import pandas as pd
import pyogrio
import pytest
import shapely
from shapely.geometry import LineString, Point, Polygon

from tests.services import missing
from twin import layers
from twin.errors import ConfigError, ValidationError
from twin.schema import TABLES
from twin.store import gpkg, open_store
from twin.store.embedded import EmbeddedStore

T0 = datetime(2026, 3, 2, 8, 0, tzinfo=UTC)


@pytest.fixture
def store(tmp_path):
    s = EmbeddedStore(tmp_path / "twin.gpkg")
    yield s
    s.close()


def _fill(store: EmbeddedStore, buildings: gpd.GeoDataFrame, grid_cells: gpd.GeoDataFrame) -> None:
    store.write_layer("buildings", buildings, actor="a", source="v1")
    store.write_layer("buildings", buildings.iloc[:2], actor="a", source="v2")
    cells = grid_cells.assign(valid_from=[date(2025, 1, 1), None])
    store.write_layer("grid_cells", cells, actor="a", source="cells")
    store.write_layer(
        "residents",
        pd.DataFrame({"resident_id": ["R1"], "building_code": ["B1"], "name": ["张三"]}),
        actor="a",
        source="r",
    )
    store.append_events(
        pd.DataFrame(
            {
                "id": ["e1", "e2"],
                "kind": ["obs", "obs"],
                "observed_at": [T0, T0 + timedelta(seconds=1)],
                "lon": [110.29, 110.291],
                "lat": [25.08, 25.081],
                "payload": [{"pm25": 3}, None],
            }
        )
    )
    store.create_case(
        {"id": "C1", "status": "collected", "requested_at": T0, "lon": 110.29, "lat": 25.08},
        history={"actor": "w1", "action": "collect"},
    )
    store.append_audit("official1", "view", "resident:R1", {"fields": ["phone"]})


def test_the_file_says_it_is_a_geopackage_1_3(store):
    header = store.path.read_bytes()[:100]
    assert header[:16] == b"SQLite format 3\x00"
    assert header[68:72] == b"GPKG"  # application_id
    assert struct.unpack(">i", header[60:64])[0] == 10300  # user_version
    with sqlite3.connect(store.path) as conn:
        srs = {r[0] for r in conn.execute("SELECT srs_id FROM gpkg_spatial_ref_sys")}
        own = {r[0]: r[1] for r in conn.execute("SELECT table_name, data_type FROM gpkg_contents")}
    assert {-1, 0, 4326} <= srs
    # the store's own tables (users, cases, audit …) are not layers: only the note on the file
    assert own == {"gridtwin_about": "attributes"}
    assert not {table.name for table in TABLES} & set(own)


def test_pyogrio_lists_the_layer_tables(store, buildings, grid_cells):
    _fill(store, buildings, grid_cells)
    listed = dict(map(tuple, pyogrio.list_layers(store.path)))
    assert listed["buildings"] == "Polygon"
    assert listed["buildings__history"] == "Polygon"
    assert listed["grid_cells"] == "Polygon"
    assert listed["gridtwin_about"] is None
    private = {"residents", "residents__history", *(table.name for table in TABLES)}
    assert not private & set(listed)  # personal data and secrets are not listed as layers


def test_pyogrio_reads_the_current_version_with_the_declared_columns(store, buildings, grid_cells):
    _fill(store, buildings, grid_cells)  # buildings: version 2 (B1, B2) is current
    got = pyogrio.read_dataframe(store.path, layer="buildings")
    spec = layers.get_layer("buildings")
    assert list(got.columns) == spec.column_names + ["geometry"]
    assert got.crs.equals("EPSG:4326")
    assert got["building_code"].tolist() == ["B1", "B2"]
    assert got["floors"].tolist() == [6, 11]
    assert shapely.equals_exact(got.geometry.values, buildings.geometry.values[:2], 0).all()
    history = pyogrio.read_dataframe(store.path, layer="buildings__history")
    assert sorted(history["_version"].tolist()) == [1, 1, 1, 2, 2]
    cells = pyogrio.read_dataframe(store.path, layer="grid_cells")
    assert str(cells["valid_from"].tolist()[0])[:10] == "2025-01-01"


def test_gdal_reads_dates_and_times_from_the_store_tables(store, buildings, grid_cells):
    _fill(store, buildings, grid_cells)
    events = pyogrio.read_dataframe(  # unlisted, but readable on purpose
        store.path, layer="twin_events", LIST_ALL_TABLES="YES"
    )
    assert events["id"].tolist() == ["e1", "e2"]
    observed = pd.to_datetime(events["observed_at"], utc=True)
    assert observed.tolist() == [pd.Timestamp(T0), pd.Timestamp(T0 + timedelta(seconds=1))]


def test_ogrinfo_finds_no_errors_or_warnings(store, buildings, grid_cells):
    if shutil.which("ogrinfo") is None:
        missing("ogrinfo (gdal-bin)", "run `make test` as root, or apt-get install gdal-bin")
    _fill(store, buildings, grid_cells)
    done = subprocess.run(
        ["ogrinfo", "-ro", "-al", str(store.path)], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert done.stderr.strip() == ""  # no "ERROR", no "Warning: non-conformant content"
    assert "Layer name: buildings" in done.stdout
    assert "Layer name: twin_" not in done.stdout and "Layer name: residents" not in done.stdout
    events = subprocess.run(  # the store's own tables stay readable by name, on purpose
        ["ogrinfo", "-ro", "-oo", "LIST_ALL_TABLES=YES", str(store.path), "twin_events"],
        capture_output=True, text=True, timeout=60,
    )
    assert events.stderr.strip() == ""
    assert "observed_at (DateTime) = 2026/03/02 08:00:00+00" in events.stdout


def test_geometry_blobs_carry_a_standard_header(store, buildings):
    store.write_layer("buildings", buildings, actor="a", source="t")
    with sqlite3.connect(store.path) as conn:
        blob = conn.execute("SELECT geom FROM buildings ORDER BY building_code").fetchone()[0]
        extent = conn.execute(
            "SELECT min_x, min_y, max_x, max_y FROM gpkg_contents WHERE table_name = 'buildings'"
        ).fetchone()
    magic, version, flags, srs, minx, maxx, miny, maxy = struct.unpack("<2sBBi4d", blob[:40])
    assert (magic, version, flags, srs) == (b"GP", 0, 0b11, 4326)
    assert (minx, miny, maxx, maxy) == tuple(buildings.geometry.iloc[0].bounds)
    assert shapely.from_wkb(blob[40:]).equals(buildings.geometry.iloc[0])
    assert extent == pytest.approx(tuple(buildings.total_bounds))


def test_geometry_encoding_round_trips_every_kind():
    ring = [(0, 0), (4, 0), (4, 4), (0, 4)]
    geoms = np.array(
        [
            Point(1, 2),
            LineString([(0, 0), (1, 1)]),
            Polygon(ring, [[(1, 1), (2, 1), (2, 2)]]),
            None,
        ],
        dtype=object,
    )
    blobs = gpkg.encode_geometries(geoms)
    assert blobs[3] is None
    back = gpkg.decode_geometries(blobs)
    assert shapely.equals_exact(back[:3], geoms[:3], 0).all() and back[3] is None
    # a blob written without an envelope (as GDAL writes points) decodes too
    bare = b"GP\x00\x01" + struct.pack("<i", 4326) + shapely.to_wkb(Point(1, 2))
    assert gpkg.decode_geometries([bare])[0].equals(Point(1, 2))


def test_times_are_stored_in_the_geopackage_datetime_format(store):
    local = "2026-03-02T16:00:00.1234+08:00"  # sub-millisecond digits are cut
    store.append_events(pd.DataFrame({"id": ["e1"], "observed_at": [local]}))
    with sqlite3.connect(store.path) as conn:
        text = conn.execute("SELECT observed_at FROM twin_events").fetchone()[0]
    assert text == "2026-03-02T08:00:00.123Z"
    assert store.read_events()["observed_at"].tolist() == [pd.Timestamp("2026-03-02T08:00:00.123Z")]


@pytest.mark.parametrize("form", ["{p}", "gpkg://{p}", "file://{p}"])
def test_url_forms_open_the_same_file(tmp_path, form):
    path = tmp_path / "a.gpkg"
    with open_store(form.format(p=path)) as s:
        assert isinstance(s, EmbeddedStore) and s.path == path
        s.append_audit("a", "view", "x")
    with EmbeddedStore(path) as again:  # reopening keeps what was written
        assert again.read_audit()["seq"].tolist() == [1]


def test_a_missing_folder_is_named(tmp_path):
    with pytest.raises(ConfigError, match=f"{tmp_path / 'nope'}.*create it"):
        EmbeddedStore(tmp_path / "nope" / "twin.gpkg")


def test_a_file_that_is_not_a_geopackage_is_refused(tmp_path):
    text = tmp_path / "notes.gpkg"
    text.write_text("hello " * 200)
    with pytest.raises(ConfigError, match="not a GeoPackage"):
        EmbeddedStore(text)
    other = tmp_path / "other.sqlite"
    with sqlite3.connect(other) as conn:
        conn.execute("CREATE TABLE t (x)")
    with pytest.raises(ConfigError, match="not a GeoPackage"):
        EmbeddedStore(other)


def test_a_batch_with_an_unparseable_time_stores_none_of_it(store):
    frame = pd.DataFrame({"id": ["e1", "e2"], "observed_at": [T0.isoformat(), "not a time"]})
    with pytest.raises(ValidationError, match="observed_at"):
        store.append_events(frame)
    with pytest.raises(ValidationError, match="id"):
        store.append_events(pd.DataFrame({"id": ["e1", None], "observed_at": [T0, T0]}))
    assert store.read_events().empty


def test_one_store_serves_many_threads(store):
    errors = []

    def work(i):
        try:
            for j in range(5):
                store.append_audit(f"t{i}", "view", f"x{j}")
                store.read_audit()
        except Exception as exc:  # surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert store.read_audit()["seq"].tolist() == list(range(1, 21))
    assert store.verify_audit() is None


def test_committed_writes_are_visible_to_other_readers_while_the_store_is_open(store, buildings):
    store.write_layer("buildings", buildings, actor="a", source="t")
    # the store's connection is still open (WAL mode): a plain reader sees the committed rows
    with sqlite3.connect(store.path) as conn:
        assert conn.execute("SELECT count(*) FROM buildings").fetchone()[0] == 3
    assert len(pyogrio.read_dataframe(store.path, layer="buildings")) == 3


def test_a_column_declared_later_is_added_and_undeclared_ones_leave_the_current_table(
    store, buildings
):
    store.write_layer("buildings", buildings, actor="a", source="t")
    with sqlite3.connect(store.path) as conn:
        conn.execute("ALTER TABLE buildings DROP COLUMN address")
        conn.execute("ALTER TABLE buildings ADD COLUMN colour TEXT")
    store.write_layer("buildings", buildings, actor="a", source="t2")
    got = pyogrio.read_dataframe(store.path, layer="buildings")
    assert list(got.columns) == layers.get_layer("buildings").column_names + ["geometry"]


OLD_CASE_DATA = {
    "times": {"file": "2026-03-02T02:00:00+00:00", "first_rework": "2026-03-02T05:30:00.250+00:00"},
    "deadlines": {"handle": "2026-03-03T08:00:00+00:00"},
    "timer": {"stage": "handle", "start": "2026-03-02T03:00:00+00:00", "unit": "working_days"},
    "counts": {"rework": 2},
    "supervision": [{"kind": "timeout"}, {"kind": "leader"}],
    "extended": True,
    "post": "grid_worker",
}


def test_an_older_file_gets_the_case_columns_filled_from_the_data(store):
    from twin.schema import CASE_DATA_COLUMNS

    store.create_case({"id": "C1", "status": "handling", "data": OLD_CASE_DATA})
    store.create_case({"id": "C2", "status": "collected", "data": {"photos": []}})
    store.close()
    with sqlite3.connect(store.path) as conn:  # as a file written before the columns existed
        _drop_case_rollup(conn)  # (and so before the rollup, whose triggers read them)
        for name in ("filed_at", "requested_at", "grid_code__requested_at"):
            conn.execute(f'DROP INDEX "twin_cases__{name}"')  # nor these indexes
        for name in CASE_DATA_COLUMNS:
            conn.execute(f'ALTER TABLE twin_cases DROP COLUMN "{name}"')
    reopened = open_store(store.path)
    try:
        with sqlite3.connect(store.path) as conn:  # made on open
            indexes = {r[0] for r in conn.execute("SELECT name FROM sqlite_master")}
        assert {"twin_cases__filed_at", "twin_cases__grid_code__requested_at"} <= indexes
        got = reopened.get_case("C1")
        assert got["filed_at"] == pd.Timestamp("2026-03-02T02:00:00Z")
        assert got["first_rework_at"] == pd.Timestamp("2026-03-02T05:30:00.250Z")
        assert got["handle_deadline"] == pd.Timestamp("2026-03-03T08:00:00Z")
        assert (got["timer_stage"], got["timer_unit"], got["post"]) == (
            "handle", "working_days", "grid_worker")
        assert (got["reworks"], got["returns"], got["supervised"], got["extended"]) == (
            2, 0, 2, True)
        assert got["dispatched_at"] is None and got["timer_deadline"] is None
        other = reopened.get_case("C2")
        assert (other["extended"], other["supervised"], other["filed_at"]) == (False, 0, None)
    finally:
        reopened.close()


def _drop_case_rollup(conn: sqlite3.Connection) -> None:
    from twin.store import rollup

    for name in rollup.trigger_names():
        conn.execute(f'DROP TRIGGER "{name}"')
    for name in (rollup.TABLE, rollup.META, rollup.CALENDAR):
        conn.execute(f'DROP TABLE "{name}"')


def test_a_file_made_before_the_case_rollup_gets_it_when_opened(
    store, generated_cases, monkeypatch
):
    from twin import kpi
    from twin.schema import CASES
    from twin.store import rollup
    from twin.store.base import CASE_COMPONENTS

    store.put_rows(CASES, generated_cases.iloc[:1000])
    store.close()
    with sqlite3.connect(store.path) as conn:  # as a file written before the rollup existed
        _drop_case_rollup(conn)
        conn.executemany(  # cases written by an older version: nothing kept a rollup
            "INSERT INTO twin_cases (id, version, filed_at, grid_code, closed_at, deadline_at) "
            "VALUES (?, 1, ?, ?, ?, ?)",
            [(f"OLD{i}", f"2026-01-{10 + i:02d}T02:00:00.000Z", "G1" if i % 2 else None,
              "2026-01-30T02:00:00.000Z", "2026-01-31T02:00:00.000Z") for i in range(6)])
    reads = []
    real = rollup.finish
    monkeypatch.setattr(rollup, "finish", lambda *a, **k: reads.append(1) or real(*a, **k))
    reopened = EmbeddedStore(store.path)
    try:
        got = reopened.case_counts(list(kpi.COUNTS), by=["grid_code"], period="month")
        want = reopened.case_counts({n: f"({CASE_COMPONENTS[n]})" for n in kpi.COUNTS},
                                    by=["grid_code"], period="month")
        assert reads == [1]
        pd.testing.assert_frame_equal(got, want)
        assert got["filed"].sum() == generated_cases["filed_at"].iloc[:1000].notna().sum() + 6
        assert got.loc[got["grid_code"] == "G1", "closed_on_time"].sum() == 3
    finally:
        reopened.close()


def test_get_case_reads_one_row_among_many(store):
    from twin.schema import CASES
    from twin.store.base import utcnow

    n = 20_000
    store.put_rows(CASES, pd.DataFrame({"id": [f"C{i:05d}" for i in range(n)], "version": 1,
                                        "status": "filed", "requested_at": utcnow()}))
    for i in range(5):
        assert store.get_case(f"C{i * 3000:05d}")["id"] == f"C{i * 3000:05d}"
    # a keyed read, not a scan of the table (speed is judged in benchmarks/, not here)
    with sqlite3.connect(store.path) as conn:
        plan = conn.execute("EXPLAIN QUERY PLAN SELECT * FROM twin_cases WHERE id = ?", ("C1",))
        assert "USING INDEX" in " ".join(str(row) for row in plan.fetchall())
