"""The PostGIS schema: DDL derived from the declared specs, and ordered, recorded migrations."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

import sqlalchemy as sa

from twin.errors import ConfigError
from twin.schema import (
    API_KEYS,
    AUDIT,
    CASE_DATA_COLUMNS,
    CASES,
    COMMUNITY_TABLES,
    EVENTS,
    NOTIFY_CHANNELS,
    OUTBOX,
    POINTS_LEDGER,
    SESSION_SEEN,
    SESSIONS,
    TABLES,
    LayerSpec,
    TableSpec,
)
from twin.store import rollup
from twin.store.dialect import (
    HISTORY_SUFFIX,
    POSTGRES,
    SRID,
    VERSION_COLUMN,
    key_columns,
    quote,
)

LOGGER = logging.getLogger(__name__)

SQL_TYPES = POSTGRES.types
# Append-only tables written at feed rate (table → its time column). Every index is paid for on
# every stored row, so these keep only what reading them needs: the key compared bytewise
# (COLLATE "C": no locale comparisons while the primary key is checked), one BRIN index on the
# time column (rows arrive roughly in time order, so a few block ranges hold a period) and no
# geometry column or GiST index: every read is a period, and a bbox is a filter on lon/lat
# within it. Measured on the 2-core test machine, 100,000 events COPied into a table of
# 300,000: 48,000-69,000 rows/s with the btree and GiST indexes, 180,000-200,000 rows/s lean.
APPEND_ONLY: dict[str, str] = {EVENTS.name: "observed_at"}


def _point_expression() -> str:
    return f"ST_SetSRID(ST_MakePoint(lon, lat), {SRID})"


def table_ddl(table: TableSpec) -> list[str]:
    """``CREATE TABLE`` and index statements for a core table, derived from its TableSpec.

    Tables with ``point=True`` get a ``geom`` column generated from lon/lat (so it can never
    disagree with them) and a GiST index on it; :data:`APPEND_ONLY` tables get neither (their
    key compared bytewise and a BRIN index on their time column instead).
    """
    name = quote(table.name)
    keys = key_columns(table)
    lean = table.name in APPEND_ONLY
    lines = [
        f"{quote(c.name)} {SQL_TYPES[c.dtype]}"
        + (' COLLATE "C"' if lean and c.name in keys else "")
        + (" NOT NULL" if c.name in keys else "")
        for c in table.columns
    ]
    if lean:
        return [
            f"CREATE TABLE IF NOT EXISTS {name} (\n  "
            + ",\n  ".join([*lines, f"PRIMARY KEY ({', '.join(quote(k) for k in keys)})"])
            + "\n)",
            brin_ddl(table),
        ]
    if table.point:
        lines.append(
            f"geom geometry(Point,{SRID}) GENERATED ALWAYS AS ({_point_expression()}) STORED"
        )
    lines.append(f"PRIMARY KEY ({', '.join(quote(k) for k in keys)})")
    statements = [f"CREATE TABLE IF NOT EXISTS {name} (\n  " + ",\n  ".join(lines) + "\n)"]
    if table.point:
        statements.append(
            f"CREATE INDEX IF NOT EXISTS {quote(table.name + '_geom_gist')} "
            f"ON {name} USING gist (geom)"
        )
    return statements + POSTGRES.index_ddl(table)


def brin_name(table_name: str) -> str:
    return f"{table_name}_{APPEND_ONLY[table_name]}_brin"


def brin_ddl(table: TableSpec) -> str:
    """Return the BRIN index on the time column of an :data:`APPEND_ONLY` table.

    It summarises each block range as soon as it is full (``autosummarize``: a work item for
    autovacuum), not only when the table is vacuumed: a table growing by millions of rows
    between vacuums would otherwise have every read of the last hour scan all of them.
    """
    column = APPEND_ONLY[table.name]
    return (
        f"CREATE INDEX IF NOT EXISTS {quote(brin_name(table.name))} "
        f"ON {quote(table.name)} USING brin ({quote(column)}) WITH (autosummarize = on)"
    )


def _brin_autosummarize(conn: sa.Connection) -> None:
    """Turn on ``autosummarize`` for the BRIN indexes built before it was declared.

    A partitioned index (events since migration 15) was declared with it and passes it to
    each partition's; PostgreSQL refuses to set options on it, so it is left alone.
    """
    for name in APPEND_ONLY:
        if _relkind(conn, brin_name(name)) == "i":
            conn.execute(sa.text(f"ALTER INDEX {quote(brin_name(name))} "
                                 "SET (autosummarize = on)"))


def table_exists(conn: sa.Connection, table: str) -> bool:
    """Whether *table* exists in the current schema."""
    return bool(table_columns(conn, table))


def layer_ddl(spec: LayerSpec) -> list[str]:
    """Return the DDL of layer *spec*'s ``<name>__history``: a table partitioned by version.

    Each version is one LIST partition (:func:`partition_name`), written whole by COPY before it
    is attached; ``<name>`` is a view of the current version's partition (:func:`view_ddl`). A
    partitioned GiST index on the parent makes every attached partition carry one.
    """
    columns = [
        f"{quote(c.name)} {SQL_TYPES[c.dtype]}{' NOT NULL' if c.name == spec.id_field else ''}"
        for c in spec.all_columns
    ]
    geom = [f"geom geometry(Geometry,{SRID})"] if spec.geometry_type else []
    history = quote(spec.name + HISTORY_SUFFIX)
    statements = [
        f"CREATE TABLE IF NOT EXISTS {history} (\n  "
        + ",\n  ".join([f"{quote(VERSION_COLUMN)} INTEGER NOT NULL", *columns, *geom])
        + f"\n) PARTITION BY LIST ({quote(VERSION_COLUMN)})",
    ]
    if spec.geometry_type:
        statements.append(
            f"CREATE INDEX IF NOT EXISTS {quote(layer_gist_index(spec.name))} "
            f"ON {history} USING gist (geom)"
        )
    return statements


def layer_gist_index(layer: str) -> str:
    """Return the name of the (partitioned) GiST index on the geometries of *layer*'s history."""
    return layer + "_geom_gist"


def partition_name(layer: str, version: int) -> str:
    """Return the name of the partition of ``<layer>__history`` holding *version*."""
    return f"{layer}__v{int(version)}"


def partition_ddl(layer: str, version: int) -> str:
    """Return ``CREATE TABLE`` of a detached partition for *version* of *layer*.

    It has the parent's columns, and a CHECK matching the partition bound, so that ``ATTACH
    PARTITION`` proves the rows belong without scanning them. Created in the writing transaction,
    it can be filled with ``COPY … FREEZE``.
    """
    part = partition_name(layer, version)
    return (
        f"CREATE TABLE {quote(part)} (LIKE {quote(layer + HISTORY_SUFFIX)}, "
        f"CONSTRAINT {quote(part + '_version')} CHECK ({quote(VERSION_COLUMN)} IS NOT NULL "
        f"AND {quote(VERSION_COLUMN)} = {int(version)}))"
    )


def partition_index_ddl(
    layer: str, version: int, id_field: str | None, geometry: bool
) -> list[str]:
    """Return the statements indexing a filled partition (built once, after the COPY).

    The primary key on the id field serves the current view's lookups by id; the GiST index is
    attached to the parent's partitioned one by ``ATTACH PARTITION``.
    """
    part = partition_name(layer, version)
    out = []
    if id_field:
        out.append(
            f"ALTER TABLE {quote(part)} ADD CONSTRAINT {quote(part + '_pkey')} "
            f"PRIMARY KEY ({quote(id_field)})"
        )
    if geometry:
        out.append(f"CREATE INDEX {quote(part + '_geom_gist')} ON {quote(part)} USING gist (geom)")
    return out


def attach_ddl(layer: str, version: int) -> str:
    """Return the statement attaching *version*'s filled and indexed partition to the history."""
    return (
        f"ALTER TABLE {quote(layer + HISTORY_SUFFIX)} ATTACH PARTITION "
        f"{quote(partition_name(layer, version))} FOR VALUES IN ({int(version)})"
    )


def view_columns(conn: sa.Connection, name: str) -> list[str]:
    """Return the columns of relation *name* in the current schema, in order (empty: none)."""
    return list(
        conn.execute(
            sa.text(
                "SELECT column_name FROM information_schema.columns "
                "WHERE table_schema = current_schema() AND table_name = :t "
                "ORDER BY ordinal_position"
            ),
            {"t": name},
        ).scalars()
    )


def point_view(conn: sa.Connection, layer: str, version: int, columns: list[str]) -> None:
    """Make the view ``<layer>`` select *columns* of *version*'s partition (same transaction).

    ``CREATE OR REPLACE VIEW`` keeps objects that depend on the view; when the columns changed
    (a column declared later) the view is dropped and made again.
    """
    have = view_columns(conn, layer)
    select = ", ".join(quote(c) for c in columns)
    body = f"AS SELECT {select} FROM {quote(partition_name(layer, version))}"
    if have and have != columns:
        conn.execute(sa.text(f"DROP VIEW {quote(layer)}"))
    conn.execute(sa.text(f"CREATE OR REPLACE VIEW {quote(layer)} {body}"))


def table_columns(conn: sa.Connection, table: str) -> set[str]:
    """Return the names of the columns *table* has in the current schema (empty: no table)."""
    return set(view_columns(conn, table))


def missing_columns(conn: sa.Connection, table: str, wanted: list[tuple[str, str]]) -> list[str]:
    """``ALTER TABLE … ADD COLUMN`` statements for the (name, dtype) pairs *table* lacks."""
    have = table_columns(conn, table)
    return [
        f"ALTER TABLE {quote(table)} ADD COLUMN IF NOT EXISTS {quote(name)} {SQL_TYPES[dtype]}"
        for name, dtype in wanted
        if name not in have
    ]


# -- migrations --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Migration:
    """One step of the schema, applied once per schema, in order, and recorded."""

    version: int
    description: str
    apply: Callable[[sa.Connection], None]


def _create_core_tables(conn: sa.Connection) -> None:
    for table in TABLES:
        for statement in table_ddl(table):
            conn.execute(sa.text(statement))


def _case_indexes(conn: sa.Connection) -> None:
    for statement in POSTGRES.index_ddl(CASES):
        conn.execute(sa.text(statement))


def _relkind(conn: sa.Connection, name: str) -> str | None:
    """Return the kind of relation *name* in the current schema (``r`` table, ``v`` view …)."""
    return conn.execute(
        sa.text(
            "SELECT c.relkind::text FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE n.nspname = current_schema() AND c.relname = :t"
        ),
        {"t": name},
    ).scalar()


def refuse_dependents(conn: sa.Connection, table: str, change: str) -> None:
    """Raise a clear error if views of the user's depend on *table* (a migration would fail).

    PostgreSQL refuses to drop or retype what a view reads; instead of its raw error, say which
    views they are and what to do.
    """
    if _relkind(conn, table) is None:
        return
    views = conn.execute(
        sa.text(
            "SELECT DISTINCT v.oid::regclass::text FROM pg_depend d "
            "JOIN pg_rewrite r ON r.oid = d.objid JOIN pg_class v ON v.oid = r.ev_class "
            "WHERE d.classid = 'pg_rewrite'::regclass AND d.refobjid = CAST(:t AS regclass) "
            "AND v.oid <> d.refobjid ORDER BY 1"
        ),
        {"t": quote(table)},
    ).scalars().all()
    if views:
        raise ConfigError(
            f"upgrading the GridTwin schema needs to {change} {table}, but these views of yours "
            f"read it: {', '.join(views)}. Save their definitions (pg_get_viewdef), drop them, "
            "open the store again to finish the upgrade, then create them again"
        )


def _partition_layer_histories(conn: sa.Connection) -> None:
    """Turn every declared layer's plain ``<layer>__history`` (+ ``<layer>``) into partitions.

    Every version found, in the history rows or in ``twin_layer_versions``, becomes a partition
    (an empty one for a version without rows); ``<layer>`` becomes the view of the current one.
    Only declared layers are touched: a table of the user's that happens to end in
    ``__history`` is left alone.
    """
    from twin import layers

    for name in layers.names():
        if _relkind(conn, name + HISTORY_SUFFIX) == "r":
            _partition_one_layer(conn, name)


def _partition_one_layer(conn: sa.Connection, layer: str) -> None:
    history, old = layer + HISTORY_SUFFIX, layer + HISTORY_SUFFIX + "_unpartitioned"
    columns = view_columns(conn, history)
    keys = conn.execute(
        sa.text(
            "SELECT a.attname FROM pg_index i JOIN pg_attribute a "
            "ON a.attrelid = i.indrelid AND a.attnum = ANY(i.indkey) "
            "WHERE i.indrelid = CAST(:t AS regclass) AND i.indisprimary"
        ),
        {"t": quote(history)},
    ).scalars().all()
    id_field = next((k for k in keys if k != VERSION_COLUMN), None)
    geometry = "geom" in columns
    shown = view_columns(conn, layer)  # the old current table's columns: the view's
    versions = sorted(
        set(
            conn.execute(
                sa.text(f"SELECT DISTINCT {quote(VERSION_COLUMN)} FROM {quote(history)}")
            ).scalars()
        )
        | set(
            conn.execute(
                sa.text("SELECT version FROM twin_layer_versions WHERE layer = :l"), {"l": layer}
            ).scalars()
        )
    )
    current = conn.execute(
        sa.text("SELECT version FROM twin_layer_versions WHERE layer = :l AND current"),
        {"l": layer},
    ).scalar()
    for table in (history, layer):
        refuse_dependents(conn, table, "replace")
    LOGGER.info("layer %s: %d versions moved into partitions", layer, len(versions))
    conn.execute(sa.text(f"ALTER TABLE {quote(history)} RENAME TO {quote(old)}"))
    kind = _relkind(conn, layer)
    if kind == "r":  # the old current table (its GiST index has the name the parent's takes)
        conn.execute(sa.text(f"DROP TABLE {quote(layer)}"))
    elif kind == "v":
        conn.execute(sa.text(f"DROP VIEW {quote(layer)}"))
    conn.execute(
        sa.text(
            f"CREATE TABLE {quote(history)} (LIKE {quote(old)}) "
            f"PARTITION BY LIST ({quote(VERSION_COLUMN)})"
        )
    )
    if geometry:
        conn.execute(
            sa.text(
                f"CREATE INDEX {quote(layer_gist_index(layer))} "
                f"ON {quote(history)} USING gist (geom)"
            )
        )
    names = ", ".join(quote(c) for c in columns)
    for version in versions:
        conn.execute(sa.text(partition_ddl(layer, version)))
        conn.execute(
            sa.text(
                f"INSERT INTO {quote(partition_name(layer, version))} ({names}) "
                f"SELECT {names} FROM {quote(old)} WHERE {quote(VERSION_COLUMN)} = :v"
            ),
            {"v": version},
        )
        for statement in partition_index_ddl(layer, version, id_field, geometry):
            conn.execute(sa.text(statement))
        conn.execute(sa.text(attach_ddl(layer, version)))
    conn.execute(sa.text(f"DROP TABLE {quote(old)}"))
    if current is not None:
        point_view(conn, layer, current, [c for c in shown if c in columns] or
                   [c for c in columns if c != VERSION_COLUMN])


def _lean_events(conn: sa.Connection) -> None:
    """Events as an :data:`APPEND_ONLY` table: what an existing schema had is dropped.

    The generated ``geom`` column goes (and its GiST index with it), the btree indexes on
    observed_at, grid_code and kind go, the id is compared bytewise and a BRIN index on
    observed_at is built. Idempotent: a schema created lean already is left as it is.
    """
    name = quote(EVENTS.name)
    refuse_dependents(conn, EVENTS.name, "drop the geom column of and retype the id of")
    statements = [
        f"ALTER TABLE {name} DROP COLUMN IF EXISTS geom",
        *(
            f"DROP INDEX IF EXISTS {quote(f'{EVENTS.name}_{column}_idx')}"
            for column in ("observed_at", "grid_code", "kind")
        ),
        f'ALTER TABLE {name} ALTER COLUMN "id" TYPE TEXT COLLATE "C"',
        brin_ddl(EVENTS),
    ]
    for statement in statements:
        conn.execute(sa.text(statement))


def build_case_rollup(conn: sa.Connection) -> None:
    """(Re)create the monthly case-count rollup and its triggers, filled from the cases.

    See :mod:`twin.store.rollup`: after this every change of ``twin_cases`` keeps it right.
    """
    lock(conn, "gridtwin:case-rollup")
    for statement in rollup.postgis_statements(CASES.name):
        conn.execute(sa.text(statement))
    LOGGER.info("case rollup %s built from %d cases", rollup.TABLE, conn.execute(
        sa.text(f"SELECT count(*) FROM {quote(CASES.name)}")).scalar())


def _sync_case_rollup(conn: sa.Connection) -> None:
    """Rebuild the rollup when what it sums changed since it was built, or a trigger is gone."""
    built = None
    if table_exists(conn, rollup.META):
        built = conn.execute(
            sa.text(f"SELECT fingerprint FROM {quote(rollup.META)} WHERE name = :n"),
            {"n": rollup.TABLE},
        ).scalar()
    triggers = set(conn.execute(
        sa.text("SELECT tgname FROM pg_trigger WHERE tgrelid = CAST(:t AS regclass)"),
        {"t": quote(CASES.name)},
    ).scalars())
    if built != rollup.fingerprint("postgis") or not set(rollup.trigger_names()) <= triggers:
        LOGGER.info("case rollup %s: definition changed, rebuilding", rollup.TABLE)
        build_case_rollup(conn)


AUDIT_GUARD = "twin_audit_append_only"


def _audit_append_only(conn: sa.Connection) -> None:
    """Refuse UPDATE, DELETE and TRUNCATE of the audit log with triggers.

    The triggers stop every role that is not the table's owner from changing or removing
    rows through the application; the owner could still disable them, which is why
    :func:`twin.store.audit_roles.protect_audit_table` gives the table (and this function)
    to a separate NOLOGIN role. Created only when missing, so that a store whose table was
    given away still opens (only the owner may create or replace them).
    """
    append_only(conn, AUDIT.name, AUDIT_GUARD, "the audit log",
                "audit rows are only ever appended (docs/trust.md, Audit log)")


def append_only(conn: sa.Connection, table: str, guard: str, what: str, hint: str) -> None:
    """Make *table* append-only: the trigger function *guard* refuses UPDATE, DELETE, TRUNCATE.

    The function and its two triggers are created only where missing (idempotent, and a table
    given to another owner still opens); the refusal names *what* and says *hint*.
    """
    exists = conn.execute(
        sa.text("SELECT 1 FROM pg_proc WHERE proname = :f "
                "AND pronamespace = current_schema()::regnamespace"), {"f": guard}
    ).scalar()
    if not exists:
        conn.execute(sa.text(
            f"CREATE FUNCTION {guard}() RETURNS trigger LANGUAGE plpgsql AS $$\n"
            "BEGIN\n"
            f"  RAISE EXCEPTION '{what} is append-only: % on % refused', TG_OP,\n"
            "    TG_TABLE_NAME USING ERRCODE = 'insufficient_privilege',\n"
            f"    HINT = '{hint}';\n"
            "END $$"
        ))
    triggers = set(conn.execute(
        sa.text("SELECT tgname FROM pg_trigger WHERE tgrelid = CAST(:t AS regclass)"),
        {"t": quote(table)},
    ).scalars())
    for name, when, level in ((f"{guard}_rows", "UPDATE OR DELETE", "ROW"),
                              (f"{guard}_truncate", "TRUNCATE", "STATEMENT")):
        if name not in triggers:
            conn.execute(sa.text(
                f"CREATE TRIGGER {name} BEFORE {when} ON {quote(table)} "
                f"FOR EACH {level} EXECUTE FUNCTION {guard}()"
            ))


def _sessions(conn: sa.Connection) -> None:
    """Create the session tables (twin.trust.sessions) and an index to end a user's sessions."""
    for table in (SESSIONS, SESSION_SEEN):
        for statement in table_ddl(table):
            conn.execute(sa.text(statement))
    conn.execute(sa.text(
        f"CREATE INDEX IF NOT EXISTS {quote(SESSIONS.name + '_username_idx')} "
        f"ON {quote(SESSIONS.name)} (username)"
    ))


MIGRATIONS: tuple[Migration, ...] = (
    Migration(1, "core tables derived from twin.schema", _create_core_tables),
    Migration(2, "case indexes on requested_at, filed_at and (grid_code, requested_at)",
              _case_indexes),
    Migration(3, "layer versions as LIST partitions of <layer>__history; <layer> a view",
              _partition_layer_histories),
    Migration(4, "events append-only: id COLLATE \"C\", BRIN on observed_at, no geom/GiST/btrees",
              _lean_events),
    Migration(5, "monthly case-count rollup (twin_case_months) kept by triggers on twin_cases",
              build_case_rollup),
    Migration(6, "BRIN indexes of append-only tables summarise each block range once full",
              _brin_autosummarize),
    Migration(7, "audit log append-only: triggers refuse UPDATE, DELETE and TRUNCATE",
              _audit_append_only),
    Migration(8, "login sessions (twin_sessions, twin_session_seen), by id hash and by user",
              _sessions),
    Migration(9, "one open alarm per (rule, source): duplicates closed, unique partial index",
              lambda conn: _alarm_once(conn)),  # defined below, with the other additions
    Migration(10, "API keys of the HTTP service (twin_api_keys), by key id and by user",
              lambda conn: _api_keys(conn)),
    Migration(11, "notifications: channels (twin_notify_channels) and the outbox (twin_outbox) "
              "with its (status, next_at) index", lambda conn: _notify_tables(conn)),
    Migration(13, "organisations: users.org_id, cases.org_id and org_deadline, indexed",
              lambda conn: _organisations(conn)),
    Migration(14, "volunteer tasks, sign-ups, proposals, supports; points ledger append-only",
              lambda conn: _community_tables(conn)),
    Migration(15, "events as monthly RANGE partitions of observed_at (+ DEFAULT), BRIN each, "
              "id unique per partition", lambda conn: _partition_events(conn)),
)


def _api_keys(conn: sa.Connection) -> None:
    """Create the API key table (twin.trust.apikeys) and an index to list a user's keys."""
    for statement in table_ddl(API_KEYS):
        conn.execute(sa.text(statement))
    conn.execute(sa.text(
        f"CREATE INDEX IF NOT EXISTS {quote(API_KEYS.name + '_username_idx')} "
        f"ON {quote(API_KEYS.name)} (username)"
    ))


def _notify_tables(conn: sa.Connection) -> None:
    """Create the notification channels and the outbox the delivery workers claim from."""
    for table in (NOTIFY_CHANNELS, OUTBOX):
        for statement in table_ddl(table):
            conn.execute(sa.text(statement))


def _organisations(conn: sa.Connection) -> None:
    """Add the organisation of a user and of a case (issue 21), filled from the cases' data.

    ``org_admin``/``org_staff`` users carry their ``org_id``; a case routed or handed to an
    organisation carries it too, with the organisation's own handling deadline
    (twin.organisations). Indexed: an organisation's staff list their cases by it.
    """
    from twin.schema import USERS

    for table, columns in ((USERS, ("org_id",)), (CASES, ("org_id", "org_deadline"))):
        if not table_columns(conn, table.name):
            continue  # made whole by _sync_core_columns after the migrations
        types = {c.name: c.dtype for c in table.columns}
        for name in columns:
            conn.execute(sa.text(
                f"ALTER TABLE {quote(table.name)} ADD COLUMN IF NOT EXISTS {quote(name)} "
                f"{SQL_TYPES[types[name]]}"))
        conn.execute(sa.text(
            f"CREATE INDEX IF NOT EXISTS {quote(table.name + '_org_id_idx')} "
            f"ON {quote(table.name)} (org_id)"))
    if table_columns(conn, CASES.name):
        fill_case_columns(conn, ["org_id", "org_deadline"])


def _alarm_once(conn: sa.Connection) -> None:
    """Close duplicate open alarms (all but the earliest), then index one per (rule, source).

    Feed workers open alarms with ``INSERT … ON CONFLICT DO NOTHING``: with this index the
    database, not the luck of delivery, keeps an episode to one alarm (docs/feeds.md).
    """
    from twin.store.sql import alarm_once_ddl

    for statement in alarm_once_ddl():
        conn.execute(sa.text(statement))


POINTS_GUARD = "twin_points_append_only"


def _community_tables(conn: sa.Connection) -> None:
    """Create the tables of volunteers, points and proposals; make the ledger append-only."""
    for table in COMMUNITY_TABLES:
        for statement in table_ddl(table):
            conn.execute(sa.text(statement))
    for statement in (
        f"CREATE UNIQUE INDEX IF NOT EXISTS {quote(POINTS_LEDGER.name + '_ref_key')} "
        f"ON {quote(POINTS_LEDGER.name)} (ref)",
        f"CREATE INDEX IF NOT EXISTS {quote(POINTS_LEDGER.name + '_account_idx')} "
        f"ON {quote(POINTS_LEDGER.name)} (account)",
    ):
        conn.execute(sa.text(statement))
    _points_append_only(conn)


def _points_append_only(conn: sa.Connection) -> None:
    """Refuse UPDATE, DELETE and TRUNCATE of the points ledger with triggers (as migration 7)."""
    if table_exists(conn, POINTS_LEDGER.name):
        append_only(conn, POINTS_LEDGER.name, POINTS_GUARD, "the points ledger",
                    "correct points with a new entry (reason adjust), docs/volunteers.md")


def _partition_events(conn: sa.Connection) -> None:
    """Move the events into monthly partitions (:mod:`twin.store.eventparts`), rows kept."""
    from twin import settings

    partition_events(conn, ahead=int(settings.get("events_partitions_ahead")))


def partition_events(conn: sa.Connection, ahead: int = 3) -> None:
    """Turn the plain events table into monthly partitions (migration 15), keeping every row.

    See :mod:`twin.store.eventparts`. The old table is renamed, a partitioned one made like it
    (columns, the id's bytewise collation, the BRIN index on the parent), the DEFAULT partition
    and the partitions of every month with events (and of this month and *ahead* more) made
    and filled, the old table
    dropped. Idempotent: a partitioned table is left as it is.
    """
    import pandas as pd

    from twin.store.eventparts import (
        DEFAULT,
        PARENT,
        ensure_partitions,
        is_partitioned,
        months,
        unique_id,
    )

    if is_partitioned(conn):
        return
    refuse_dependents(conn, PARENT, "partition")
    old = PARENT + "_unpartitioned"
    conn.execute(sa.text(f"ALTER TABLE {quote(PARENT)} RENAME TO {quote(old)}"))
    conn.execute(sa.text(f"DROP INDEX IF EXISTS {quote(brin_name(PARENT))}"))
    conn.execute(sa.text(
        f"ALTER TABLE {quote(old)} RENAME CONSTRAINT {quote(PARENT + '_pkey')} "
        f"TO {quote(old + '_pkey')}"))
    conn.execute(sa.text(
        f"CREATE TABLE {quote(PARENT)} (LIKE {quote(old)} INCLUDING DEFAULTS) "
        "PARTITION BY RANGE (observed_at)"))
    conn.execute(sa.text(
        f"CREATE INDEX {quote(brin_name(PARENT))} ON {quote(PARENT)} USING brin (observed_at) "
        "WITH (autosummarize = on)"))
    conn.execute(sa.text(f"CREATE TABLE {quote(DEFAULT)} PARTITION OF {quote(PARENT)} DEFAULT"))
    unique_id(conn, DEFAULT)
    stored = conn.execute(sa.text(
        f"SELECT DISTINCT date_trunc('month', observed_at AT TIME ZONE 'UTC') FROM {quote(old)} "
        "WHERE observed_at IS NOT NULL")).scalars()
    now = pd.Timestamp.now(tz="UTC")
    made = ensure_partitions(conn, [*(pd.Timestamp(s, tz="UTC") for s in stored),
                                    *months(now, now + pd.DateOffset(months=ahead))])
    # the partitions exist before the rows move: each row is written once, into its month
    rows = conn.execute(sa.text(
        f"INSERT INTO {quote(PARENT)} SELECT * FROM {quote(old)}")).rowcount
    conn.execute(sa.text(f"DROP TABLE {quote(old)}"))
    LOGGER.info("events: %d rows moved into %d monthly partitions", rows, len(made))


def _sync_core_columns(conn: sa.Connection) -> None:
    """Create tables a newer twin.schema declares, and add columns a newer TableSpec declares.

    Case columns that mirror a value of the case's ``data`` are filled from it when added.
    """
    for table in TABLES:
        wanted = [(c.name, c.dtype) for c in table.columns]
        have = table_columns(conn, table.name)
        statements = missing_columns(conn, table.name, wanted)
        if not have:  # no such table yet
            statements = table_ddl(table)
        for statement in statements:
            LOGGER.info("schema: %s", statement.splitlines()[0])
            conn.execute(sa.text(statement))
        if table is CASES and have:
            fill_case_columns(conn, [n for n in CASE_DATA_COLUMNS if n not in have])
        if have and statements:  # an index on a column just added (IF NOT EXISTS: cheap)
            for statement in POSTGRES.index_ddl(table):
                conn.execute(sa.text(statement))


def fill_case_columns(conn: sa.Connection, names: list[str]) -> None:
    """Fill the given case columns of every case from its ``data`` JSON, in SQL."""
    if not names:
        return
    types = {c.name: c.dtype for c in CASES.columns}
    sets = []
    for name in names:
        path, how = CASE_DATA_COLUMNS[name]
        at = "'{" + ",".join(path) + "}'"
        if how == "count":
            value = (
                f"CASE WHEN jsonb_typeof(data #> {at}) = 'array' "
                f"THEN jsonb_array_length(data #> {at}) ELSE 0 END"
            )
        elif types[name] in ("int", "bool"):
            default = "0" if types[name] == "int" else "false"
            value = f"COALESCE((data #>> {at})::{SQL_TYPES[types[name]]}, {default})"
        else:
            value = f"(data #>> {at})::{SQL_TYPES[types[name]]}"
        sets.append(f"{quote(name)} = {value}")
    result = conn.execute(
        sa.text(f"UPDATE {quote(CASES.name)} SET {', '.join(sets)} WHERE data IS NOT NULL")
    )
    LOGGER.info("filled %s of %d cases from their data", ", ".join(names), result.rowcount)


def lock(conn: sa.Connection, key: str) -> None:
    """Take a transaction-scoped advisory lock named *key* (released at commit or rollback)."""
    conn.execute(sa.text("SELECT pg_advisory_xact_lock(hashtext(:k))"), {"k": key})


def migrate(conn: sa.Connection, schema: str | None) -> list[int]:
    """Bring *schema* (None: public) up to date inside the caller's transaction.

    Serialised with an advisory lock so that two processes opening a fresh schema at once do
    not race. Returns the versions applied now (empty when it was up to date).
    """
    lock(conn, f"gridtwin:migrate:{schema or 'public'}")
    if schema:
        # CREATE SCHEMA IF NOT EXISTS needs CREATE on the database even when the schema
        # exists: a role given only its schema (docs/trust.md, Audit log) must still open it
        if not conn.execute(sa.text("SELECT 1 FROM pg_namespace WHERE nspname = :s"),
                            {"s": schema}).scalar():
            conn.execute(sa.text(f"CREATE SCHEMA IF NOT EXISTS {quote(schema)}"))
        conn.execute(
            sa.text("SELECT set_config('search_path', :p, true)"), {"p": f"{quote(schema)},public"}
        )
    conn.execute(
        sa.text(
            "CREATE TABLE IF NOT EXISTS twin_schema_migrations ("
            "version INTEGER PRIMARY KEY, description TEXT NOT NULL, "
            "applied_at TIMESTAMPTZ NOT NULL DEFAULT now())"
        )
    )
    done = set(conn.execute(sa.text("SELECT version FROM twin_schema_migrations")).scalars())
    applied = []
    for migration in MIGRATIONS:
        if migration.version in done:
            continue
        LOGGER.info(
            "schema %s: migration %d (%s)",
            schema or "public",
            migration.version,
            migration.description,
        )
        migration.apply(conn)
        conn.execute(
            sa.text("INSERT INTO twin_schema_migrations (version, description) VALUES (:v, :d)"),
            {"v": migration.version, "d": migration.description},
        )
        applied.append(migration.version)
    _sync_core_columns(conn)
    _sync_case_rollup(conn)
    _audit_append_only(conn)  # an audit table dropped and made again gets its triggers back
    _points_append_only(conn)  # and so does the points ledger
    return applied
