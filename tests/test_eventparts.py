"""Events on PostGIS as monthly partitions: made ahead, a DEFAULT one, the migration keeps rows."""

from __future__ import annotations

import threading
import time
import uuid

import pandas as pd
import pytest
import sqlalchemy as sa

from twin import settings
from twin.schema import EVENTS
from twin.store import eventparts, open_store
from twin.store.migrations import partition_events, table_ddl


def _events(prefix: str, times: list[str]) -> pd.DataFrame:
    return pd.DataFrame({
        "id": [f"{prefix}{i}" for i in range(len(times))],
        "kind": "obs", "source_id": "S1",
        "observed_at": pd.to_datetime(times, utc=True, format="ISO8601"),
        "lon": 110.29, "lat": 25.08, "grid_code": "45031100100101",
        "payload": [{"values": {"pm25": 30.0 + i}} for i in range(len(times))],
    })


@pytest.fixture
def pg(postgis_url):
    store = open_store(postgis_url, schema=f"t_{uuid.uuid4().hex[:10]}",
                       drop_schema_on_close=True)
    yield store
    store.close()


def _where(store) -> dict[str, str]:
    """Event id → the partition holding it."""
    with store.engine.begin() as conn:
        return dict(conn.execute(sa.text(
            f"SELECT id, tableoid::regclass::text FROM {EVENTS.name}")).fetchall())


def _brin_partitions(store) -> set[str]:
    with store.engine.begin() as conn:
        return set(conn.execute(sa.text(
            "SELECT tablename FROM pg_indexes WHERE schemaname = :s AND indexdef LIKE "
            "'%USING brin (observed_at)%'"), {"s": store.schema}).scalars())


def test_partitions_are_made_ahead_and_late_or_early_events_wait_in_the_default(pg):
    now = pd.Timestamp.now(tz="UTC")
    ahead = int(settings.get("events_partitions_ahead"))
    with pg.engine.begin() as conn:
        assert eventparts.is_partitioned(conn)
        made = eventparts.partitions(conn)
    assert list(made) == eventparts.months(now, now + pd.DateOffset(months=ahead))
    # a backlog of 2024 and a clock set in 2031: no partition, still stored (DEFAULT) and read
    odd = _events("odd", ["2024-05-03T08:00Z", "2024-05-20T09:00Z", "2031-01-02T00:00Z"])
    assert pg.append_events(odd) == 3
    assert set(_where(pg).values()) == {eventparts.DEFAULT}
    assert pg.append_events(odd) == 0  # the id is unique in the DEFAULT partition too
    assert pg.ensure_event_partitions() == ["twin_events_p202405", "twin_events_p203101"]
    assert _where(pg) == {"odd0": "twin_events_p202405", "odd1": "twin_events_p202405",
                          "odd2": "twin_events_p203101"}
    assert pg.append_events(odd) == 0  # …and in the partitions they moved to
    got = pg.read_events("2024-05-01", "2024-06-01")
    assert got["id"].tolist() == ["odd0", "odd1"]
    # the BRIN index of the parent is every partition's
    assert {"twin_events_p202405", "twin_events_p203101", eventparts.DEFAULT,
            *made.values()} <= _brin_partitions(pg)
    assert pg.ensure_event_partitions() == []  # idempotent


def test_an_insert_waits_while_another_worker_makes_its_months_partition(pg):
    # worker B makes March's partition (not committed yet) while worker A stores a March
    # event: A must wait and land in the new partition, not fail PostgreSQL's recheck of
    # DEFAULT's bounds after the ATTACH (two ingest workers on a replayed backlog)
    march = pd.Timestamp("2026-03-01", tz="UTC")
    errors: list[BaseException] = []

    def store_one():
        try:
            pg.append_events(_events("late", ["2026-03-02T00:49:51Z"]))
        except BaseException as exc:  # noqa: BLE001 - reported by the assertion below
            errors.append(exc)

    def a_waits(conn) -> bool:
        return bool(conn.execute(sa.text(
            "SELECT count(*) FROM pg_locks l JOIN pg_class c ON c.oid = l.relation "
            "JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE NOT l.granted AND n.nspname = :s"), {"s": pg.schema}).scalar())

    writer = threading.Thread(target=store_one)
    with pg.engine.connect() as maker, pg.engine.connect() as looker:
        making = maker.begin()
        assert eventparts.ensure_partitions(maker, [march]) == ["twin_events_p202603"]
        writer.start()
        deadline = time.monotonic() + 30
        while not a_waits(looker):
            looker.rollback()
            assert time.monotonic() < deadline, "the insert never waited for the partition"
            time.sleep(0.05)
        making.commit()
    writer.join(30)
    assert not writer.is_alive() and errors == []
    assert _where(pg) == {"late0": "twin_events_p202603"}


def test_migration_15_moves_a_plain_events_table_into_partitions_keeping_every_row(pg):
    # a store as it was before migration 15: the lean plain table of migrations 1 and 4
    rows = _events("old", ["2025-11-30T23:59:59Z", "2025-12-01T00:00:00Z", "2026-02-14T12:00:00Z"])
    with pg.engine.begin() as conn:
        conn.execute(sa.text(f"DROP TABLE {EVENTS.name} CASCADE"))
        for statement in table_ddl(EVENTS):
            conn.execute(sa.text(statement))
    pg.append_events(rows)
    before = pg.read_events()
    with pg.engine.begin() as conn:
        assert not eventparts.is_partitioned(conn)
        partition_events(conn, ahead=0)
        partition_events(conn, ahead=0)  # a second run changes nothing
    after = pg.read_events()
    pd.testing.assert_frame_equal(after, before)
    assert _where(pg) == {"old0": "twin_events_p202511", "old1": "twin_events_p202512",
                          "old2": "twin_events_p202602"}
    assert pg.append_events(rows) == 0


def test_dropping_a_month_refuses_when_it_holds_rows_its_archive_does_not(pg, tmp_path):
    from twin.errors import StaleUpdateError

    pg.append_events(_events("m", ["2025-03-01T00:00Z", "2025-03-31T23:59Z"]))
    pg.ensure_event_partitions()
    with pytest.raises(StaleUpdateError, match="arrived since the export"):
        pg.drop_event_month("2025-03-15", expected=1)
    assert len(pg.read_events("2025-03-01", "2025-04-01")) == 2
    assert pg.drop_event_month("2025-03-15", expected=2) == 2
    with pg.engine.begin() as conn:
        assert pd.Timestamp("2025-03-01", tz="UTC") not in eventparts.partitions(conn)
        eventparts.ensure_partitions(conn, [pd.Timestamp("2025-01-01", tz="UTC")])
    # a partition that stayed empty goes with the retention, without an archive file
    from twin.retention import apply_event_retention

    done = apply_event_retention(pg, months=1, now="2025-06-15T00:00Z", folder=tmp_path)
    assert done.archived == [] and list(tmp_path.iterdir()) == []
    with pg.engine.begin() as conn:
        assert min(eventparts.partitions(conn)) > pd.Timestamp("2025-06-01", tz="UTC")


def test_a_feed_worker_makes_the_partitions_ahead_once_a_day_and_keeps_ingesting():
    from twin.feeds.models import Registry
    from twin.feeds.pipeline import Pipeline

    class Store:
        calls: list = []

        def ensure_event_partitions(self, until):
            self.calls.append(until)
            if len(self.calls) == 1:
                raise PermissionError("may not create tables")  # logged, not fatal
            return []

    store = Store()
    pipeline = Pipeline(store, Registry.from_layers({}))
    now = pd.Timestamp.now(tz="UTC")
    pipeline.tick(now)
    pipeline.tick(now)
    pipeline._partitions_day = None  # as on the next day
    pipeline.tick(now)
    pipeline.tick(now)
    ahead = int(settings.get("events_partitions_ahead"))
    assert len(store.calls) == 2
    assert store.calls[1] == now.normalize() + pd.DateOffset(months=ahead)
