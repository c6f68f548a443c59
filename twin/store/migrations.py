"""The PostGIS schema: DDL derived from the declared specs, and ordered, recorded migrations."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

import sqlalchemy as sa

from twin.schema import (
    CASE_DATA_COLUMNS,
    CASES,
    EVENTS,
    TABLES,
    LayerSpec,
    TableSpec,
)
from twin.store import rollup

LOGGER = logging.getLogger(__name__)

SQL_TYPES = {
    "text": "TEXT",
    "int": "BIGINT",
    "float": "DOUBLE PRECISION",
    "bool": "BOOLEAN",
    "date": "DATE",
    "datetime": "TIMESTAMPTZ",
    "json": "JSONB",
}
SRID = 4326
HISTORY_SUFFIX = "__history"
VERSION_COLUMN = "_version"
# Plain btree indexes beyond the primary keys, for the filters the store offers (read_events,
# read_cases, case_counts); a tuple is a composite index.
INDEXES: dict[str, tuple[str | tuple[str, ...], ...]] = {
    EVENTS.name: ("observed_at", "grid_code", "kind"),
    CASES.name: ("status", "grid_code", "requested_at", "filed_at", ("grid_code", "requested_at")),
}


def quote(name: str) -> str:
    """Quote an SQL identifier (names come from declared specs; quoted all the same)."""
    return '"' + name.replace('"', '""') + '"'


def key_columns(table: TableSpec) -> list[str]:
    return [k.strip() for k in table.key.split(",")]


def _point_expression() -> str:
    return f"ST_SetSRID(ST_MakePoint(lon, lat), {SRID})"


def table_ddl(table: TableSpec) -> list[str]:
    """``CREATE TABLE`` and index statements for a core table, derived from its TableSpec.

    Tables with ``point=True`` get a ``geom`` column generated from lon/lat (so it can never
    disagree with them) and a GiST index on it.
    """
    name = quote(table.name)
    keys = key_columns(table)
    lines = [
        f"{quote(c.name)} {SQL_TYPES[c.dtype]}{' NOT NULL' if c.name in keys else ''}"
        for c in table.columns
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
    return statements + index_ddl(table)


def index_ddl(table: TableSpec) -> list[str]:
    """``CREATE INDEX IF NOT EXISTS`` statements of the declared :data:`INDEXES` of *table*."""
    out = []
    for columns in INDEXES.get(table.name, ()):
        names = (columns,) if isinstance(columns, str) else columns
        index = f"{table.name}_{'_'.join(names)}_idx"
        out.append(
            f"CREATE INDEX IF NOT EXISTS {quote(index)} "
            f"ON {quote(table.name)} ({', '.join(quote(c) for c in names)})"
        )
    return out


def table_exists(conn: sa.Connection, table: str) -> bool:
    """Whether *table* exists in the current schema."""
    return bool(table_columns(conn, table))


def layer_ddl(spec: LayerSpec) -> list[str]:
    """Return the DDL of layer *spec*: ``<name>`` (current) and ``<name>__history`` (all)."""
    columns = [
        f"{quote(c.name)} {SQL_TYPES[c.dtype]}{' NOT NULL' if c.name == spec.id_field else ''}"
        for c in spec.all_columns
    ]
    geom = [f"geom geometry(Geometry,{SRID})"] if spec.geometry_type else []
    current, history = quote(spec.name), quote(spec.name + HISTORY_SUFFIX)
    statements = [
        f"CREATE TABLE IF NOT EXISTS {current} (\n  "
        + ",\n  ".join([*columns, *geom, f"PRIMARY KEY ({quote(spec.id_field)})"])
        + "\n)",
        f"CREATE TABLE IF NOT EXISTS {history} (\n  "
        + ",\n  ".join(
            [
                f"{quote(VERSION_COLUMN)} INTEGER NOT NULL",
                *columns,
                *geom,
                f"PRIMARY KEY ({quote(VERSION_COLUMN)}, {quote(spec.id_field)})",
            ]
        )
        + "\n)",
    ]
    if spec.geometry_type:
        statements.append(layer_gist_ddl(spec))
    return statements


def layer_gist_index(spec: LayerSpec) -> str:
    """Return the name of the GiST index on the geometries of layer *spec*'s current table."""
    return spec.name + "_geom_gist"


def layer_gist_ddl(spec: LayerSpec) -> str:
    """Return the statement creating the GiST index of layer *spec*'s current table."""
    return (
        f"CREATE INDEX IF NOT EXISTS {quote(layer_gist_index(spec))} "
        f"ON {quote(spec.name)} USING gist (geom)"
    )


def table_columns(conn: sa.Connection, table: str) -> set[str]:
    """Return the names of the columns *table* has in the current schema (empty: no table)."""
    return set(
        conn.execute(
            sa.text(
                "SELECT column_name FROM information_schema.columns "
                "WHERE table_schema = current_schema() AND table_name = :t"
            ),
            {"t": table},
        ).scalars()
    )


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
    for statement in index_ddl(CASES):
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


MIGRATIONS: tuple[Migration, ...] = (
    Migration(1, "core tables derived from twin.schema", _create_core_tables),
    Migration(2, "case indexes on requested_at, filed_at and (grid_code, requested_at)",
              _case_indexes),
    Migration(5, "monthly case-count rollup (twin_case_months) kept by triggers on twin_cases",
              build_case_rollup),
)


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
            for statement in index_ddl(table):
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
    return applied
