"""What only the PostGIS store has: indexes, migrations, connection errors, COPY escaping."""

from __future__ import annotations

import dataclasses
import json
import socket
import threading
import uuid
from datetime import timedelta

import geopandas as gpd
import pandas as pd
import pytest
import sqlalchemy as sa
from shapely.geometry import box

import layers
from tests.test_store import T0, _events
from twin.errors import ConfigError, StoreUnavailableError, TwinError
from twin.store import open_store
from twin.store.migrations import MIGRATIONS
from twin.store.postgis import PostGISStore

HOSTILE = [
    "'); DROP TABLE twin_audit; --",
    'say "hi"; DELETE FROM twin_cases',
    "tab\there\nnew line\r\nCRLF",
    "back\\slash \\N \\. \\\\",
    "\\N",
    "",
    "桂花苑 <b>3栋</b> O'Brien",
]


def _schema() -> str:
    return f"t_{uuid.uuid4().hex[:10]}"


@pytest.fixture
def pg(postgis_url):
    store = PostGISStore(postgis_url, schema=_schema(), drop_schema_on_close=True)
    yield store
    store.close()


def _scalars(store: PostGISStore, sql: str, **params) -> list:
    with store.engine.connect() as conn:
        return list(conn.execute(sa.text(sql), params).scalars())


def _buildings(n: int, names: list[str] | None = None) -> gpd.GeoDataFrame:
    xs = [110.29 + 0.0002 * i for i in range(n)]
    return gpd.GeoDataFrame(
        {
            "building_code": [f"B{i:05d}" for i in range(n)],
            "name": names if names is not None else [f"{i}栋" for i in range(n)],
            "floors": [6 + i % 20 for i in range(n)],
        },
        geometry=[box(x, 25.08, x + 0.0001, 25.0801) for x in xs],
        crs=4326,
    )


# -- opening --------------------------------------------------------------------------------------


def test_migrations_are_recorded_and_reopening_changes_nothing(pg, postgis_url):
    assert _scalars(pg, "SELECT version FROM twin_schema_migrations ORDER BY version") == [
        m.version for m in MIGRATIONS
    ]
    pg.create_case({"id": "C1", "status": "collected"})
    again = PostGISStore(postgis_url, schema=pg.schema)
    try:
        assert again.get_case("C1")["status"] == "collected"
        assert _scalars(again, "SELECT count(*) FROM twin_schema_migrations") == [len(MIGRATIONS)]
    finally:
        again.close()
    assert pg.get_case("C1")["version"] == 1  # closing the second store left the first usable


def test_two_stores_opening_a_fresh_schema_at_once_both_succeed(postgis_url):
    schema, opened, errors = _schema(), [], []
    barrier = threading.Barrier(2)

    def open_one():
        barrier.wait()
        try:
            opened.append(PostGISStore(postgis_url, schema=schema))
        except Exception as exc:  # collected and asserted below
            errors.append(exc)

    threads = [threading.Thread(target=open_one) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    try:
        assert errors == [] and len(opened) == 2
        assert _scalars(opened[0], "SELECT version FROM twin_schema_migrations") == [
            m.version for m in MIGRATIONS
        ]
    finally:
        for s in opened[1:]:
            s.close()
        if opened:
            opened[0]._drop_schema_on_close = True
            opened[0].close()


def test_open_store_takes_a_plain_postgresql_url_and_a_schema_parameter(postgis_url):
    schema = _schema()
    plain = postgis_url.replace("postgresql+psycopg://", "postgresql://")
    store = open_store(f"{plain}?schema={schema}", drop_schema_on_close=True)
    try:
        assert isinstance(store, PostGISStore) and store.schema == schema
        assert store.engine.dialect.driver == "psycopg"
        assert _scalars(store, "SELECT current_schema()") == [schema]
    finally:
        store.close()
    assert _scalars_public(postgis_url, schema) == []  # dropped on close


def _scalars_public(url: str, schema: str) -> list:
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            return list(
                conn.execute(
                    sa.text("SELECT nspname FROM pg_namespace WHERE nspname = :s"), {"s": schema}
                ).scalars()
            )
    finally:
        engine.dispose()


@pytest.mark.parametrize("schema", ["Twin", "1abc", "a-b", "x; DROP SCHEMA public", "a" * 64])
def test_a_bad_schema_name_is_refused_before_connecting(schema):
    with pytest.raises(ConfigError, match="schema name"):
        PostGISStore("postgresql+psycopg://u:p@127.0.0.1:1/db", schema=schema)


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_a_server_that_does_not_answer_is_unavailable_without_the_password(caplog):
    url = f"postgresql+psycopg://twin:S3cret-pw@127.0.0.1:{_closed_port()}/twin"
    with caplog.at_level("DEBUG"), pytest.raises(StoreUnavailableError) as info:
        PostGISStore(url)
    message = str(info.value)
    assert "S3cret-pw" not in message and "S3cret-pw" not in caplog.text
    assert "twin:***@" in caplog.text  # the log names the store, masked
    assert "127.0.0.1" in message and "TWIN_DATABASE_URL" in message
    assert info.value.__cause__ is None and info.value.__suppress_context__


def test_a_refused_login_is_unavailable_and_the_password_never_shows(postgis_url):
    # the test server may trust local logins whatever the password: use an unknown role instead
    url = sa.make_url(postgis_url).set(
        username=f"nobody_{uuid.uuid4().hex[:6]}", password="Wr0ng-secret"
    )
    with pytest.raises(StoreUnavailableError) as info:
        PostGISStore(url.render_as_string(hide_password=False))
    assert "Wr0ng-secret" not in str(info.value)
    assert "password" in str(info.value)  # the hint says to check it


def test_the_url_attribute_and_repr_mask_the_password(pg, postgis_url):
    masked = sa.make_url(postgis_url).render_as_string(hide_password=True)
    assert pg.url == masked and "***" in masked and repr(pg) == f"PostGISStore({masked!r})"


# -- indexes --------------------------------------------------------------------------------------


def test_gist_and_filter_indexes_exist(pg, buildings):
    pg.write_layer("buildings", buildings, actor="a", source="t")
    rows = _scalars(
        pg, "SELECT indexname || ' ' || indexdef FROM pg_indexes WHERE schemaname = :s", s=pg.schema
    )
    text = "\n".join(rows)
    for table in ("twin_events", "twin_cases", "buildings"):
        assert any(
            r.startswith(f"{table}_geom_gist ") and "USING gist (geom)" in r for r in rows
        ), text
    for column in ("observed_at", "grid_code"):
        assert f"twin_events_{column}_idx" in text
    for column in ("status", "grid_code", "requested_at", "filed_at"):
        assert f"twin_cases_{column}_idx" in text
    assert "twin_cases_grid_code_requested_at_idx ON" in text and \
        "(grid_code, requested_at)" in text


def test_a_schema_made_before_the_case_indexes_gets_them_by_migration(pg, postgis_url):
    with pg.engine.begin() as conn:  # as a schema at migration 1
        for name in ("requested_at", "filed_at", "grid_code_requested_at"):
            conn.execute(sa.text(f'DROP INDEX "twin_cases_{name}_idx"'))
        conn.execute(sa.text("DELETE FROM twin_schema_migrations WHERE version > 1"))
    again = PostGISStore(postgis_url, schema=pg.schema)
    try:
        names = _scalars(again, "SELECT indexname FROM pg_indexes WHERE schemaname = :s",
                         s=pg.schema)
        assert {"twin_cases_filed_at_idx", "twin_cases_grid_code_requested_at_idx"} <= set(names)
        assert 2 in _scalars(again, "SELECT version FROM twin_schema_migrations")
    finally:
        again.close()


def test_a_schema_made_before_the_case_rollup_gets_it_by_migration(
    pg, postgis_url, generated_cases, monkeypatch
):
    from twin import kpi
    from twin.schema import CASES
    from twin.store import rollup
    from twin.store.base import CASE_COMPONENTS

    pg.put_rows(CASES, generated_cases.iloc[:1000])
    with pg.engine.begin() as conn:  # as a schema at migration 4, before the rollup
        for name in rollup.trigger_names():
            conn.execute(sa.text(f'DROP TRIGGER "{name}" ON twin_cases'))
        conn.execute(sa.text(f'DROP TABLE "{rollup.TABLE}", "{rollup.META}"'))
        conn.execute(sa.text("DELETE FROM twin_schema_migrations WHERE version = 5"))
    pg.put_rows(CASES, generated_cases.iloc[1000:])  # written while nothing kept a rollup
    reads = []
    real = rollup.finish
    monkeypatch.setattr(rollup, "finish", lambda *a, **k: reads.append(1) or real(*a, **k))
    again = PostGISStore(postgis_url, schema=pg.schema)
    try:
        assert 5 in _scalars(again, "SELECT version FROM twin_schema_migrations")
        got = again.case_counts(list(kpi.COUNTS), by=["grid_code"], period="month")
        want = again.case_counts({n: f"({CASE_COMPONENTS[n]})" for n in kpi.COUNTS},
                                 by=["grid_code"], period="month")
        assert reads == [1] and got["filed"].sum() == generated_cases["filed_at"].notna().sum()
        pd.testing.assert_frame_equal(got, want)
        again.update_case(generated_cases["id"].iloc[5], {"filed_at": None},
                          expected_version=int(generated_cases["version"].iloc[5]))
        assert again.case_counts(["filed"], by=["grid_code"], period="month")["filed"].sum() \
            == got["filed"].sum() - bool(generated_cases["filed_at"].notna().iloc[5])
    finally:
        again.close()


def test_a_bbox_event_query_uses_the_gist_index(pg):
    events = _events(3000)
    events["lon"] = [110.0 + (i % 60) * 0.01 for i in range(3000)]
    events["lat"] = [25.0 + (i // 60) * 0.01 for i in range(3000)]
    assert pg.append_events(events) == 3000
    seen: list[tuple[str, dict]] = []

    def capture(conn, cursor, statement, parameters, context, executemany):
        if "twin_events" in statement and statement.lstrip().startswith("SELECT"):
            seen.append((statement, parameters))

    sa.event.listen(pg.engine, "before_cursor_execute", capture)
    try:
        got = pg.read_events(bbox=(110.0, 25.0, 110.015, 25.015))
    finally:
        sa.event.remove(pg.engine, "before_cursor_execute", capture)
    assert sorted(got["id"]) == ["m0", "m1", "m60", "m61"]
    statement, parameters = seen[-1]
    with pg.engine.connect() as conn:
        conn.exec_driver_sql("ANALYZE twin_events")
        conn.exec_driver_sql("SET enable_seqscan = off")
        plan = "\n".join(r[0] for r in conn.exec_driver_sql("EXPLAIN " + statement, parameters))
    assert "twin_events_geom_gist" in plan, plan


# -- layers ---------------------------------------------------------------------------------------


def test_layer_tables_hold_exactly_the_declared_columns(pg, buildings):
    pg.write_layer("buildings", buildings, actor="a", source="t")
    pg.write_layer(
        "residents",
        pd.DataFrame({"resident_id": ["R1"], "building_code": ["B1"]}),
        actor="a",
        source="t",
    )
    spec = layers.get_layer("buildings")

    def columns(table):
        return _scalars(
            pg,
            "SELECT column_name FROM information_schema.columns WHERE "
            "table_schema = :s AND table_name = :t ORDER BY ordinal_position",
            s=pg.schema,
            t=table,
        )

    assert columns("buildings") == spec.column_names + ["geom"]
    assert columns("buildings__history") == ["_version", *spec.column_names, "geom"]
    assert columns("residents") == layers.get_layer("residents").column_names
    assert _scalars(pg, "SELECT DISTINCT ST_SRID(geom) FROM buildings") == [4326]


def test_a_column_declared_later_is_added_and_old_versions_read_it_as_empty(pg, monkeypatch):
    spec = layers.get_layer("buildings")
    older = dataclasses.replace(spec, columns=tuple(c for c in spec.columns if c.name != "address"))
    monkeypatch.setattr(layers, "get_layer", lambda name: older)
    pg.write_layer("buildings", _buildings(2), actor="a", source="old spec")
    monkeypatch.undo()
    newer = _buildings(2)
    newer["address"] = ["七星路1号", None]
    pg.write_layer("buildings", newer, actor="a", source="new spec")
    assert pg.read_layer("buildings")["address"].tolist() == ["七星路1号", None]
    assert pg.read_layer("buildings", version=1)["address"].tolist() == [None, None]


def test_concurrent_writers_of_a_layer_get_consecutive_versions(postgis_url, pg, buildings):
    other = PostGISStore(postgis_url, schema=pg.schema)
    barrier, errors = threading.Barrier(2), []

    def write(store, n):
        barrier.wait()
        try:
            store.write_layer("buildings", buildings.iloc[:n], actor=f"w{n}", source="t")
        except Exception as exc:  # collected and asserted below
            errors.append(exc)

    threads = [threading.Thread(target=write, args=(s, n)) for s, n in ((pg, 1), (other, 2))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    other.close()
    assert errors == []
    versions = pg.layer_versions("buildings")
    assert [v.version for v in versions] == [1, 2]
    assert [v.current for v in versions] == [False, True]
    assert len(pg.read_layer("buildings")) == versions[-1].rows


def test_hostile_text_round_trips_as_data_through_copy(pg):
    frame = _buildings(len(HOSTILE), names=HOSTILE)
    frame["attrs"] = [{"note": h, h: [h]} for h in HOSTILE]
    pg.write_layer("buildings", frame, actor="'; --", source='"x"; DROP')
    got = pg.read_layer("buildings")
    assert got["name"].tolist() == HOSTILE
    assert got["attrs"].map(lambda t: json.loads(t)["note"]).tolist() == HOSTILE
    assert pg.layer_versions("buildings")[0].actor == "'; --"
    # nothing was dropped: the audit holds just this load, with the hostile actor as data
    assert pg.read_audit()[["actor", "action"]].values.tolist() == [["'; --", "layer.write"]]
    assert pg.verify_audit() is None and pg.read_cases().empty


def test_hostile_values_in_events_cases_and_audit_round_trip(pg):
    events = _events(len(HOSTILE))
    events["id"] = HOSTILE[:-2] + ["x", "y"]  # ids must be unique and non-empty
    events["source_id"] = HOSTILE
    assert pg.append_events(events) == len(HOSTILE)
    got = pg.read_events(kind=None)
    assert got.set_index("id").loc[events["id"], "source_id"].tolist() == HOSTILE
    assert pg.read_events(grid_code=HOSTILE[0]).empty
    for i, text in enumerate(HOSTILE):
        pg.create_case({"id": f"C{i}", "description": text, "data": {"t": text}})
        pg.append_audit(text, "view", text, {text: text}, text)
    assert pg.read_cases()["description"].tolist() == HOSTILE
    assert pg.read_audit()["actor"].tolist() == HOSTILE
    assert pg.verify_audit() is None


def test_events_with_a_missing_id_store_nothing(pg):
    events = _events(3)
    events.loc[1, "id"] = None
    with pytest.raises(TwinError, match="id"):
        pg.append_events(events)
    assert pg.read_events().empty


def test_event_times_are_utc_and_received_at_is_filled(pg):
    events = _events(2)
    events["received_at"] = [T0 + timedelta(seconds=1), None]
    pg.append_events(events)
    got = pg.read_events()
    assert got["received_at"].iloc[0] == pd.Timestamp(T0 + timedelta(seconds=1))
    assert got["received_at"].iloc[1] > pd.Timestamp(T0)
    assert str(got["received_at"].dt.tz) == "UTC"


def test_an_older_schema_gets_the_case_columns_filled_from_the_data(pg, postgis_url):
    from tests.test_store_embedded import OLD_CASE_DATA
    from twin.schema import CASE_DATA_COLUMNS

    pg.create_case({"id": "C1", "status": "handling", "data": OLD_CASE_DATA})
    pg.create_case({"id": "C2", "status": "collected", "data": {"photos": []}})
    with pg.engine.begin() as conn:  # as a schema made before the columns existed
        for name in CASE_DATA_COLUMNS:
            conn.execute(sa.text(f'ALTER TABLE twin_cases DROP COLUMN "{name}"'))
    again = PostGISStore(postgis_url, schema=pg.schema)
    try:
        got = again.get_case("C1")
        assert got["filed_at"] == pd.Timestamp("2026-03-02T02:00:00Z")
        assert got["first_rework_at"] == pd.Timestamp("2026-03-02T05:30:00.250Z")
        assert got["handle_deadline"] == pd.Timestamp("2026-03-03T08:00:00Z")
        assert (got["timer_stage"], got["timer_unit"], got["post"]) == (
            "handle", "working_days", "grid_worker")
        assert (got["reworks"], got["returns"], got["supervised"], got["extended"]) == (
            2, 0, 2, True)
        assert got["dispatched_at"] is None and got["timer_deadline"] is None
        other = again.get_case("C2")
        assert (other["extended"], other["supervised"], other["filed_at"]) == (False, 0, None)
    finally:
        again.close()
