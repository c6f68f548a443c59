"""Events on PostGIS as monthly RANGE partitions of ``observed_at``: made ahead, dropped whole.

``twin_events`` is partitioned by month (UTC) into ``twin_events_pYYYYMM`` tables, with a
DEFAULT partition (``twin_events_default``) so that an insert never fails for want of one:
events of a month that has no partition yet (a gateway replaying a year-old backlog, a clock
set in the future) land there and are moved into their month's partition when it is made
(:func:`ensure_partitions`). The parent carries the BRIN index on ``observed_at``
(``autosummarize``), so every partition has its own.

A partitioned table cannot have a unique index without the partition key, so an event id is
unique **within its month's partition** (a unique index per partition, made with it): a
redelivered message has the same ``observed_at`` and so the same partition, and ingest keeps
storing each message once (``ON CONFLICT DO NOTHING`` finds the partition's index). An id
reused by a sender a month later is a new event.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

import pandas as pd
import sqlalchemy as sa

from twin.errors import StaleUpdateError
from twin.schema import EVENTS
from twin.store.dialect import quote
from twin.timeutil import to_utc

LOGGER = logging.getLogger(__name__)

PARENT = EVENTS.name
DEFAULT = f"{PARENT}_default"
_PREFIX = f"{PARENT}_p"
_LOCK = "gridtwin:event-partitions"


def month_start(value: object) -> pd.Timestamp:
    """Return the first instant (UTC) of the month holding *value*."""
    stamp = to_utc(value)
    return stamp.normalize().replace(day=1)


def months(first: object, last: object) -> list[pd.Timestamp]:
    """Return the month starts from *first*'s month to *last*'s, both included."""
    start, stop = month_start(first), month_start(last)
    return list(pd.date_range(start, stop, freq="MS")) if stop >= start else []


def part_name(month: object) -> str:
    """Return the name of the partition holding the events of *month*."""
    return f"{_PREFIX}{month_start(month):%Y%m}"


def _bounds(month: pd.Timestamp) -> tuple[str, str]:
    start = month_start(month)
    end = start + pd.offsets.MonthBegin(1)
    return f"{start:%Y-%m-%d} 00:00:00+00", f"{end:%Y-%m-%d} 00:00:00+00"


def _lock(conn: sa.Connection) -> None:
    conn.execute(sa.text("SELECT pg_advisory_xact_lock(hashtext(:k))"), {"k": _LOCK})


def unique_id(conn: sa.Connection, table: str) -> None:
    """Index the id of one partition uniquely (the dedupe of ingest, see the module)."""
    conn.execute(sa.text(
        f"CREATE UNIQUE INDEX IF NOT EXISTS {quote(table + '_id')} ON {quote(table)} (id)"))


def is_partitioned(conn: sa.Connection) -> bool:
    """Whether the events table of the current schema is partitioned."""
    return bool(conn.execute(sa.text(
        "SELECT c.relkind = 'p' FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
        "WHERE n.nspname = current_schema() AND c.relname = :t"), {"t": PARENT}).scalar())


def partitions(conn: sa.Connection) -> dict[pd.Timestamp, str]:
    """Return the monthly partitions attached to the events table: month start → name."""
    names = conn.execute(sa.text(
        "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
        "WHERE i.inhparent = CAST(:t AS regclass)"), {"t": quote(PARENT)}).scalars()
    out = {}
    for name in names:
        if name.startswith(_PREFIX) and name[len(_PREFIX):].isdigit():
            out[pd.Timestamp(f"{name[len(_PREFIX):]}01", tz="UTC")] = name
    return dict(sorted(out.items()))


def default_months(conn: sa.Connection) -> list[pd.Timestamp]:
    """Return the months of the events waiting in the DEFAULT partition."""
    stamps = conn.execute(sa.text(
        f"SELECT DISTINCT date_trunc('month', observed_at AT TIME ZONE 'UTC') "
        f"FROM {quote(DEFAULT)} WHERE observed_at IS NOT NULL")).scalars()
    return sorted(pd.Timestamp(s, tz="UTC") for s in stamps)


def ensure_partitions(conn: sa.Connection, wanted: Iterable[pd.Timestamp]) -> list[str]:
    """Make the partitions of the *wanted* months and of every month waiting in DEFAULT.

    A new partition is made apart, filled with its month's rows moved out of DEFAULT, given
    its unique id index, then attached (PostgreSQL checks DEFAULT holds none of its rows any
    more). Serialised by an advisory lock: workers and ``gridtwin retention`` may call it at
    once. Returns the names of the partitions made.

    While partitions are made, writes to the events table wait (a SHARE ROW EXCLUSIVE lock on
    it, taken only when there is one to make): an insert routed to DEFAULT by the partitions
    it saw before an ATTACH would otherwise fail PostgreSQL's recheck of DEFAULT's bounds
    once the ATTACH commits (another ingest worker making its month's partition meanwhile).
    """
    _lock(conn)
    have = partitions(conn)
    wanted = {month_start(m) for m in wanted}
    if not (wanted | set(default_months(conn))) - set(have):
        return []
    conn.execute(sa.text(f"LOCK TABLE {quote(PARENT)} IN SHARE ROW EXCLUSIVE MODE"))
    made = []
    for month in sorted(wanted | set(default_months(conn))):  # again: rows came in since
        if month in have:
            continue
        name, (low, high) = part_name(month), _bounds(month)
        conn.execute(sa.text(
            f"CREATE TABLE {quote(name)} (LIKE {quote(PARENT)} INCLUDING DEFAULTS, "
            f"CONSTRAINT {quote(name + '_month')} CHECK (observed_at IS NOT NULL AND "
            f"observed_at >= '{low}' AND observed_at < '{high}'))"))
        moved = conn.execute(sa.text(
            f"WITH gone AS (DELETE FROM {quote(DEFAULT)} WHERE observed_at >= '{low}' "
            f"AND observed_at < '{high}' RETURNING *) INSERT INTO {quote(name)} "
            "SELECT * FROM gone")).rowcount
        unique_id(conn, name)
        conn.execute(sa.text(
            f"ALTER TABLE {quote(PARENT)} ATTACH PARTITION {quote(name)} "
            f"FOR VALUES FROM ('{low}') TO ('{high}')"))
        made.append(name)
        LOGGER.info("events: partition %s made (%d rows moved from the default)", name, moved)
    return made


def drop_partition(conn: sa.Connection, month: pd.Timestamp, expected: int) -> int:
    """Detach and drop *month*'s partition, if it holds exactly *expected* rows.

    *expected* is the row count of the archive written of it: a partition that gained rows
    since (a late event) is refused, so nothing that is not in the archive is dropped.

    Raises
    ------
    StaleUpdateError
        If the partition holds another number of rows than *expected*.
    """
    name = partitions(conn).get(month_start(month))
    if name is None:
        return 0
    conn.execute(sa.text(f"LOCK TABLE {quote(name)} IN ACCESS EXCLUSIVE MODE"))
    rows = int(conn.execute(sa.text(f"SELECT count(*) FROM {quote(name)}")).scalar())
    if rows != expected:
        raise StaleUpdateError(
            f"events partition {name} holds {rows} rows, its archive {expected}: events "
            "arrived since the export; nothing was dropped. Run the retention again.")
    conn.execute(sa.text(f"ALTER TABLE {quote(PARENT)} DETACH PARTITION {quote(name)}"))
    conn.execute(sa.text(f"DROP TABLE {quote(name)}"))
    LOGGER.info("events: partition %s (%d rows) detached and dropped", name, rows)
    return rows
