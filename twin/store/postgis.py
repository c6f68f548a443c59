"""The PostGIS store: versioned layers, events, cases and audit in PostgreSQL through psycopg 3.

What it shares with the embedded store is :class:`twin.store.sql.SQLStore`'s; here are its
connections (one engine per process, a read engine for the planner queries), its layer
versions as partitions behind a view, and its bulk paths (:mod:`twin.store.pgcopy`).
"""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import geopandas as gpd
import numpy as np
import pandas as pd
import shapely
import sqlalchemy as sa

from twin.errors import ConfigError, StoreUnavailableError, ValidationError
from twin.schema import (
    CASES,
    CRS,
    EVENTS,
    LAYER_VERSIONS,
    Column,
    LayerSpec,
    TableSpec,
    coerce_table,
)
from twin.store import eventparts
from twin.store.base import (
    LayerVersion,
    PreparedEvents,
    checked_events,
    feature_equals,
    typed_columns,
)
from twin.store.dialect import HISTORY_SUFFIX, POSTGRES, SRID, VERSION_COLUMN, quote
from twin.store.migrations import (
    attach_ddl,
    layer_ddl,
    lock,
    migrate,
    missing_columns,
    partition_ddl,
    partition_index_ddl,
    partition_name,
    view_columns,
)
from twin.store.pgcopy import (
    aggregate,
    binary_rows,
    copy_binary,
    copy_events,
    copy_field,
    copy_rows,
    count_rows,
    json_texts,
    layer_copy_binary,
    unpack_columns,
)
from twin.store.sql import SQLStore
from twin.timeutil import local_zone, to_utc

LOGGER = logging.getLogger(__name__)

SCHEMA_NAME = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")
# rows of a layer encoded at a time: the server parses one piece while the next is encoded
LAYER_COPY_ROWS = 10_000
AGG_CHUNK_ROWS = 2_000_000  # about this many rows per packed value of a column read
# hash aggregation of a few hundred thousand (grid, month) groups fits in memory with this
COUNT_WORK_MEM = "256MB"
_CASE_ID = next(c for c in CASES.columns if c.name == "id")
_ENGINES: dict[tuple[str, str | None, bool], sa.Engine] = {}
_ENGINES_LOCK = threading.Lock()
#: The key column of every current-layer view, first: GDAL takes a column of this name as the
#: FID, QGIS offers the first integer column of a view as its key.
KEY_COLUMN = "ogc_fid"
_KEY_BITS = (1 << 53) - 1  # positive, and exact in a double (JavaScript, JSON readers)


def history_schema(schema: str | None) -> str:
    """Return the schema holding the version partitions of the twin in *schema*.

    Apart from the layers, so that a desktop GIS listing the twin's schema shows each layer
    once (the current version's view) and its history once (``<layer>__history``), not one
    more layer per version.
    """
    name = f"{schema or 'public'}_history"
    if len(name) > 63:  # PostgreSQL's name limit: keep it unique to the schema
        import hashlib

        name = f"{name[:46]}_{hashlib.sha1(name.encode()).hexdigest()[:8]}_history"
    return name


def key_expression(id_field: str) -> str:
    """Return the SQL of a layer view's key: a stable 53-bit integer from the feature's id.

    The same id gives the same key in every version and every session (``hashtextextended``
    is what hash partitioning relies on, so it does not change between PostgreSQL releases);
    two of 100,000 ids share one with a chance of about 1 in 2 million.
    """
    return f"(hashtextextended({quote(id_field)}::text, 0) & {_KEY_BITS})"


def key_view(conn: sa.Connection, spec: LayerSpec, version: int) -> None:
    """Make the view ``<layer>`` show *version*'s partition, with the key column first.

    ``CREATE OR REPLACE VIEW`` keeps objects that depend on the view; when the columns changed
    (a column declared later, or a view from before the key) it is dropped and made again.
    """
    columns = spec.column_names + (["geom"] if spec.geometry_type else [])
    have = view_columns(conn, spec.name)
    select = ", ".join([f"{key_expression(spec.id_field)} AS {KEY_COLUMN}",
                        *(quote(c) for c in columns)])
    if have and have != [KEY_COLUMN, *columns]:
        conn.execute(sa.text(f"DROP VIEW {quote(spec.name)}"))
    conn.execute(sa.text(
        f"CREATE OR REPLACE VIEW {quote(spec.name)} AS SELECT {select} "
        f"FROM {quote(partition_name(spec.name, version))}"
    ))
    conn.execute(sa.text(
        f"COMMENT ON COLUMN {quote(spec.name)}.{KEY_COLUMN} IS "
        f"'stable key of {spec.id_field} (the same in every version)'"
    ))


def _partition_exists(conn: sa.Connection, name: str) -> bool:
    """Whether partition *name* exists on the search path (it lives in the history schema)."""
    return conn.execute(sa.text("SELECT to_regclass(:n) IS NOT NULL"),
                        {"n": quote(name)}).scalar()


def _engine(url: sa.URL, schema: str | None, *, reads: bool = False) -> sa.Engine:
    """One engine per (URL, schema, kind) per process; sessions run in UTC with the schema first.

    The *reads* engine serves single read-only statements (the planner queries): it runs them
    in autocommit, one round trip each — a lone SELECT sees one snapshot without BEGIN and
    ROLLBACK around it — and does not ping a pooled connection before use; its callers retry
    once on a connection the server has dropped (:func:`twin.query.sql.run_read`).
    """
    key = (url.render_as_string(hide_password=False), schema, reads)
    with _ENGINES_LOCK:
        engine = _ENGINES.get(key)
        if engine is None:
            path = f"{schema},{history_schema(schema)},public" if schema else \
                f"public,{history_schema(schema)}"
            options = f"-ctimezone=UTC -csearch_path={path}"
            connect_args: dict[str, Any] = {"options": options, "application_name": "gridtwin"}
            if "connect_timeout" not in url.query:
                connect_args["connect_timeout"] = 5
            if reads:
                engine = sa.create_engine(url, connect_args=connect_args,
                                          isolation_level="AUTOCOMMIT")
            else:
                engine = sa.create_engine(url, connect_args=connect_args, pool_pre_ping=True)
            _ENGINES[key] = engine
        return engine


def _forget_engine(engine: sa.Engine) -> None:
    with _ENGINES_LOCK:
        for key in [k for k, e in _ENGINES.items() if e is engine]:
            del _ENGINES[key]



def _frame(
    rows: Sequence[Sequence[Any]], columns: Sequence[Column], geometry: bool = False
) -> pd.DataFrame | gpd.GeoDataFrame:
    """Return fetched rows as a frame with the columns coerced to their canonical dtypes."""
    # plain tuples: from_records probes each SQLAlchemy Row for attributes (an exception per
    # row and column), which made reading 24,000 grid cells ~7x slower than the rows themselves
    raw = typed_columns([tuple(r) for r in rows], columns, extra=["geom"] if geometry else [])
    out = pd.DataFrame({c.name: raw[c.name] for c in columns}, index=pd.RangeIndex(len(rows)))
    if not geometry:
        return out
    wkb = raw["geom"].to_numpy(dtype=object)
    return gpd.GeoDataFrame(out, geometry=shapely.from_wkb(wkb), crs=CRS)


def _page_frame(spec: LayerSpec, rows: Sequence[Sequence[Any]], geometry: bool
                ) -> gpd.GeoDataFrame | pd.DataFrame:
    """Return rows of a page of features as the driver gave them (a page is for serving)."""
    names = [c.name for c in spec.all_columns]
    # object columns as fetched: inferring pandas' string dtype would cost more than the read
    frame = pd.DataFrame([tuple(r[:len(names)]) for r in rows], columns=names, dtype=object)
    if not geometry:
        return frame
    wkb = np.array([bytes(r[len(names)]) for r in rows], dtype=object)
    return gpd.GeoDataFrame(frame, geometry=shapely.from_wkb(wkb), crs=CRS)


def _feature_where(
    spec: LayerSpec, bbox: tuple[float, float, float, float] | None, equals: dict[str, Any]
) -> tuple[str, dict[str, Any]]:
    """Return the WHERE of a page of features: in *bbox* (the GiST index), columns equal."""
    clauses, params = [], {}
    for i, (column, value) in enumerate(equals.items()):
        clauses.append(f"{quote(column)} = :_e{i}")
        params[f"_e{i}"] = value
    if bbox is not None and spec.geometry_type is not None:
        clauses.append(f"ST_Intersects(geom, ST_MakeEnvelope(:_x0, :_y0, :_x1, :_y1, {SRID}))")
        params.update(zip(("_x0", "_y0", "_x1", "_y1"), map(float, bbox), strict=True))
    return (f" WHERE {' AND '.join(clauses)}" if clauses else ""), params


def _select_list(columns: Sequence[Column], geometry: bool) -> str:
    parts = [POSTGRES.select(c) for c in columns]
    if geometry:
        parts.append("ST_AsBinary(geom) AS geom")
    return ", ".join(parts)


@dataclass(frozen=True)
class PostGISReader:
    """What :meth:`PostGISStore.fast_reader` gives the planner queries: a schema, connections.

    The connections come from the store's read engine: autocommit, one round trip per
    single read-only statement, no ping before use (a dropped one is replaced by the caller,
    :func:`twin.query.sql.run_read`).
    """

    store: PostGISStore

    @property
    def schema(self) -> str:
        """Return the schema holding the twin's tables."""
        return self.store.schema or "public"

    def connection(self) -> Any:
        """Return a pooled DBAPI (psycopg) connection; ``close()`` gives it back to the pool."""
        return self.store.read_engine.raw_connection()


class PostGISStore(SQLStore):
    """A twin kept in a PostgreSQL + PostGIS database (one schema per twin).

    Parameters
    ----------
    url
        ``postgresql+psycopg://user:password@host:port/db`` (``postgresql://`` works too; an
        optional ``?schema=NAME`` selects the schema).
    schema
        Schema holding the twin's tables; created if missing. None means ``public``.
    drop_schema_on_close
        Drop the schema and everything in it on :meth:`close` (tests).

    Raises
    ------
    ConfigError
        If the URL or schema name is not usable, or the database lacks the postgis extension.
    StoreUnavailableError
        If the server does not answer or refuses the login.
    """

    dialect = POSTGRES

    def __init__(
        self, url: str, schema: str | None = None, drop_schema_on_close: bool = False
    ) -> None:
        try:
            parsed = sa.make_url(str(url))
        except sa.exc.ArgumentError:
            raise ConfigError(
                "not a PostgreSQL URL; use postgresql+psycopg://user:password@host:port/db"
            ) from None
        if parsed.drivername in ("postgresql", "postgres"):
            parsed = parsed.set(drivername="postgresql+psycopg")
        if parsed.drivername != "postgresql+psycopg":
            raise ConfigError(
                f"PostGIS store URLs use the psycopg 3 driver; got {parsed.drivername!r}. "
                "Write postgresql+psycopg://user:password@host:port/db"
            )
        if "schema" in parsed.query:
            schema = schema or str(parsed.query["schema"])
            parsed = parsed.difference_update_query(["schema"])
        if schema is not None and not SCHEMA_NAME.match(schema):
            raise ConfigError(
                f"schema name {schema!r} is not allowed; use lower-case letters, digits and _ "
                "(at most 63, not starting with a digit), e.g. twin_demo"
            )
        self._url = parsed
        self.url = parsed.render_as_string(hide_password=True)
        self.schema = schema
        self._drop_schema_on_close = drop_schema_on_close
        self.engine = _engine(parsed, schema)
        self.read_engine = _engine(parsed, schema, reads=True)
        self._closed = False
        self._history: str | None = None
        try:
            self._open()
        except Exception:
            for engine in (self.engine, self.read_engine):
                engine.dispose()
                _forget_engine(engine)
            raise
        LOGGER.info("opened PostGIS store %s (schema %s)", self.url, schema or "public")

    # -- connections ------------------------------------------------------------------------------

    def _unavailable(self, exc: BaseException) -> StoreUnavailableError:
        reason = str(getattr(exc, "orig", None) or exc).strip().splitlines()
        text = reason[0] if reason else type(exc).__name__
        if self._url.password:
            text = text.replace(str(self._url.password), "***")
        where = f"{self._url.host or 'localhost'}:{self._url.port or 5432}/{self._url.database}"
        LOGGER.warning("PostGIS store %s unavailable: %s", self.url, text)
        return StoreUnavailableError(
            f"PostgreSQL at {where} does not answer or refuses the login ({text}). "
            "Start PostgreSQL there (e.g. `pg_ctlcluster 15 main start`) and check "
            "TWIN_DATABASE_URL (host, port, database, user and password)."
        )

    @contextmanager
    def _begin(self) -> Iterator[sa.Connection]:
        """Yield a connection in a transaction, committed on success; lost server → unavailable."""
        try:
            conn = self.engine.connect()
        except sa.exc.DBAPIError as exc:
            raise self._unavailable(exc) from None
        try:
            with conn.begin():
                yield conn
        except sa.exc.DBAPIError as exc:
            if exc.connection_invalidated:
                raise self._unavailable(exc) from None
            raise
        finally:
            conn.close()

    def fast_reader(self) -> PostGISReader:
        """Return the reader the planner queries run their SQL through."""
        return PostGISReader(self)

    @contextmanager
    def _write(self) -> Iterator[sa.Connection]:
        with self._begin() as conn:
            yield conn

    @contextmanager
    def _read(
        self, *, repeatable: bool = False, single: bool = False
    ) -> Iterator[sa.Connection]:
        with self._begin() as conn:
            if repeatable:  # catalogs (which partition a view shows) are not snapshot-bound
                conn.execute(sa.text("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ"))
            yield conn

    def _hold(self, conn: sa.Connection, *what: str) -> None:
        """Take a transaction-level advisory lock (layer loads and audit rows take turns)."""
        lock(conn, ":".join(("gridtwin", self.schema or "public", *what)))

    def _open(self) -> None:
        with self._begin() as conn:
            if (
                conn.execute(
                    sa.text("SELECT 1 FROM pg_extension WHERE extname = 'postgis'")
                ).scalar()
                is None
            ):
                raise ConfigError(
                    f"database {self._url.database!r} at {self._url.host}:{self._url.port or 5432} "
                    "has no PostGIS; as a superuser run `CREATE EXTENSION postgis;` in it "
                    "(install the package first, e.g. apt-get install postgresql-15-postgis-3)"
                )
            self._rollup_zone = local_zone()  # migrate brings the rollup to this zone
            applied = migrate(conn, self.schema)
            self._history_apart(conn)
        if applied:
            LOGGER.info("schema %s migrated to %s", self.schema or "public", applied[-1])

    def _history_apart(self, conn: sa.Connection) -> None:
        """Keep version partitions in the history schema and give every layer view its key.

        Stores written before (partitions beside the views, views without a key) are brought
        to it when opened; afterwards this is two catalog reads. Inside :meth:`_open`'s
        transaction, after the migrations (whose advisory lock it holds).
        """
        from twin import layers

        schema, history = self.schema or "public", history_schema(self.schema)
        self._history = self._usable_history_schema(conn, history)
        if self._history is None:  # partitions stay beside the views; keys all the same
            history = schema
        conn.execute(sa.text("SELECT set_config('search_path', :p, true)"),
                     {"p": f"{quote(schema)},{quote(history)},public"})
        parts = conn.execute(sa.text(
            "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
            "JOIN pg_class p ON p.oid = i.inhparent JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE n.nspname = :s AND p.relname LIKE :h"
        ), {"s": schema, "h": "%" + HISTORY_SUFFIX}).scalars().all()
        for part in parts if history != schema else ():
            conn.execute(sa.text(
                f"ALTER TABLE {quote(schema)}.{quote(part)} SET SCHEMA {quote(history)}"))
        current = dict(conn.execute(sa.text(
            "SELECT layer, version FROM twin_layer_versions WHERE current")).fetchall())
        for name, version in current.items():
            if name not in layers.names():
                continue
            have = view_columns(conn, name)
            if have and have[0] != KEY_COLUMN and _partition_exists(
                conn, partition_name(name, version)
            ):
                key_view(conn, layers.get_layer(name), version)
        if parts and history != schema:
            LOGGER.info("moved %d version partitions to schema %s", len(parts), history)

    @staticmethod
    def _usable_history_schema(conn: sa.Connection, history: str) -> str | None:
        """Return the history schema, created if missing; None if this role may not.

        A role given only its own schema (docs/trust.md, Audit log) cannot create another:
        then the partitions stay in the twin's schema (a desktop GIS lists them too) until an
        administrator runs ``CREATE SCHEMA <schema>_history AUTHORIZATION <role>``.
        """
        exists = conn.execute(sa.text("SELECT 1 FROM pg_namespace WHERE nspname = :s"),
                              {"s": history}).scalar()
        if not exists:
            if not conn.execute(sa.text(
                "SELECT has_database_privilege(current_database(), 'CREATE')"
            )).scalar():
                LOGGER.warning("cannot create schema %s: version partitions stay beside the "
                               "layers; ask an administrator to create it for this role",
                               history)
                return None
            conn.execute(sa.text(f"CREATE SCHEMA IF NOT EXISTS {quote(history)}"))
            return history
        usable = conn.execute(sa.text(
            "SELECT has_schema_privilege(:s, 'CREATE') AND has_schema_privilege(:s, 'USAGE')"
        ), {"s": history}).scalar()
        return history if usable else None

    def close(self) -> None:
        """Dispose of the connections; drop the schema when asked to at construction."""
        if self._closed:
            return
        self._closed = True
        try:
            if self._drop_schema_on_close and self.schema:
                with self._begin() as conn:
                    conn.execute(sa.text(f"DROP SCHEMA IF EXISTS {quote(self.schema)} CASCADE"))
                    conn.execute(sa.text(
                        f"DROP SCHEMA IF EXISTS {quote(history_schema(self.schema))} CASCADE"))
                _forget_engine(self.engine)
                _forget_engine(self.read_engine)
        finally:
            self.engine.dispose()
            self.read_engine.dispose()


    # -- statements ---------------------------------------------------------------------------

    @staticmethod
    def _rows(conn: sa.Connection, sql: str, params: Mapping[str, Any] | None = None
              ) -> list[tuple]:
        return [tuple(r) for r in conn.execute(sa.text(sql), params or {}).fetchall()]

    @staticmethod
    def _execute(
        conn: sa.Connection, sql: str,
        params: Mapping[str, Any] | Sequence[Mapping] | None = None,
    ) -> int:
        return conn.execute(sa.text(sql), params or {}).rowcount

    @staticmethod
    def _frame(columns: Sequence[Column], rows: list[tuple]) -> pd.DataFrame:
        return _frame(rows, columns)

    @staticmethod
    def _insert_rows(
        conn: sa.Connection, table: TableSpec, rows: list[tuple], conflict: str = ""
    ) -> int:
        if not rows:
            return 0
        columns = ", ".join(quote(c.name) for c in table.columns)
        marks = ", ".join(POSTGRES.mark(c, f"p_{c.name}") for c in table.columns)
        names = [f"p_{c.name}" for c in table.columns]
        params = [dict(zip(names, row, strict=True)) for row in rows]
        return conn.execute(
            sa.text(f"INSERT INTO {quote(table.name)} ({columns}) VALUES ({marks}){conflict}"),
            params[0] if len(params) == 1 else params,
        ).rowcount

    def _put_rows(self, table: TableSpec, rows: pd.DataFrame, conflict: str) -> int:
        """COPY into a temporary table, then one ``INSERT … SELECT … ON CONFLICT``."""
        columns = ", ".join(quote(c.name) for c in table.columns)
        staging = f"_in_{table.name}"
        fields = {c.name: copy_field(rows[c.name], c.dtype) for c in table.columns}
        with self._begin() as conn:
            conn.execute(sa.text(
                f"CREATE TEMP TABLE {quote(staging)} AS SELECT {columns} "
                f"FROM {quote(table.name)} WITH NO DATA"
            ))
            copy_rows(conn, staging, fields)
            written = conn.execute(sa.text(
                f"INSERT INTO {quote(table.name)} ({columns}) SELECT {columns} "
                f"FROM {quote(staging)}{conflict}"
            )).rowcount
            conn.execute(sa.text(f"DROP TABLE {quote(staging)}"))
        return int(written)

    # -- layers: a partition of ``<name>__history`` per version, the view ``<name>`` on one -----

    def _ensure_layer_tables(self, conn: sa.Connection, spec: LayerSpec) -> None:
        """Create the partitioned history of *spec*, or add the columns declared since.

        A column added to the parent is added to every partition (old versions read it empty).
        """
        history = spec.name + HISTORY_SUFFIX
        wanted = [(c.name, c.dtype) for c in spec.all_columns]
        statements = missing_columns(conn, history, wanted)
        if len(statements) == len(wanted):  # no table yet
            statements = layer_ddl(spec)
        for statement in statements:
            LOGGER.info("layer %s: %s", spec.name, statement.splitlines()[0])
            conn.execute(sa.text(statement))

    def _write_rows(
        self, conn: sa.Connection, spec: LayerSpec, frame: pd.DataFrame, version: int
    ) -> None:
        """Write a version as a new partition: COPY, indexes built once, then attached.

        The partition is created in this transaction, so COPY can write the rows frozen, and its
        indexes are built once over the whole version (faster than growing them row by row).
        """
        columns = [VERSION_COLUMN, *spec.column_names] + (["geom"] if spec.geometry_type else [])
        pieces = (
            layer_copy_binary(spec, frame.iloc[start : start + LAYER_COPY_ROWS], version)
            for start in range(0, len(frame), LAYER_COPY_ROWS)
        )
        conn.execute(sa.text(partition_ddl(spec.name, version)))
        copy_binary(conn, partition_name(spec.name, version), columns, pieces, freeze=True)
        for statement in partition_index_ddl(
            spec.name, version, spec.id_field, bool(spec.geometry_type)
        ):
            conn.execute(sa.text(statement))
        conn.execute(sa.text(attach_ddl(spec.name, version)))
        if self._history is not None:  # apart: a desktop GIS lists the layers once each
            conn.execute(sa.text(
                f"ALTER TABLE {quote(partition_name(spec.name, version))} "
                f"SET SCHEMA {quote(self._history)}"
            ))

    def _show_version(self, conn: sa.Connection, spec: LayerSpec, version: int) -> None:
        """Make the view ``<name>`` show *version*'s partition (same transaction), keyed."""
        key_view(conn, spec, version)

    def _drop_versions(
        self, conn: sa.Connection, spec: LayerSpec, gone: list[int],
        versions: list[LayerVersion],
    ) -> int:
        for version in gone:
            if _partition_exists(conn, partition_name(spec.name, version)):
                conn.execute(sa.text(f"DROP TABLE {quote(partition_name(spec.name, version))}"))
        return sum(v.rows for v in versions if v.version in gone)

    def _layer_rows(
        self, conn: sa.Connection, spec: LayerSpec, version: int, *, current: bool,
        columns: Sequence[Column] | None = None,
    ) -> gpd.GeoDataFrame | pd.DataFrame:
        """Read the version's own partition: the view may show a version committed since."""
        geometry = spec.geometry_type is not None
        columns = spec.all_columns if columns is None else columns
        rows = conn.execute(sa.text(
            f"SELECT {_select_list(columns, geometry)} "
            f"FROM {quote(partition_name(spec.name, version))} "
            f"ORDER BY {POSTGRES.order(spec.id_field)}"
        )).fetchall()
        return _frame(rows, columns, geometry)

    def read_features(
        self, name: str, *, version: int | None = None,
        bbox: tuple[float, float, float, float] | None = None,
        equals: Mapping[str, Any] | None = None, limit: int | None = None, offset: int = 0,
    ) -> tuple[gpd.GeoDataFrame | pd.DataFrame, int, int]:
        """Read a page of the current version in one statement (the fast reader), else as others.

        The current version is chosen inside the statement, from ``twin_layer_versions`` in
        the same snapshot as the rows (the history table, pruned to that version's partition
        at run time): one round trip, no transaction. A page past the end, or of a given
        version, takes the general path (which also says why nothing is there).
        """
        from twin import layers
        from twin.query.sql import run_read

        spec = layers.get_layer(name)
        if version is None and spec.geometry_type is not None:
            equals = feature_equals(spec.name, equals)
            where, params = _feature_where(spec, bbox, equals)
            current = (f"{quote(VERSION_COLUMN)} = (SELECT {quote('version')} FROM "
                       f"{quote(LAYER_VERSIONS.name)} WHERE {quote('layer')} = :_layer "
                       f"AND {quote('current')})")
            where = f"{where} AND {current}" if where else f" WHERE {current}"
            names, rows = run_read(self, (
                f"SELECT {_select_list(spec.all_columns, True)}, count(*) OVER () AS _matched, "
                f"{quote(VERSION_COLUMN)} FROM {quote(spec.name + HISTORY_SUFFIX)}{where} "
                f"ORDER BY {POSTGRES.order(spec.id_field)} LIMIT :_limit OFFSET :_offset"),
                {**params, "_layer": spec.name, "_limit": limit, "_offset": offset},
                one_plan=True)  # planning it costs far more than running it: once per connection
            if rows:
                return (_page_frame(spec, [r[:-2] for r in rows], True), int(rows[0][-2]),
                        int(rows[0][-1]))
        return super().read_features(name, version=version, bbox=bbox, equals=equals,
                                     limit=limit, offset=offset)

    def _feature_page(
        self, conn: sa.Connection, spec: LayerSpec, version: int, current: bool,
        bbox: tuple[float, float, float, float] | None, equals: dict[str, Any],
        limit: int | None, offset: int,
    ) -> tuple[gpd.GeoDataFrame | pd.DataFrame, int]:
        """One page in SQL: the version's partition, its GiST index for *bbox*, LIMIT/OFFSET.

        Values come as the driver returns them (not coerced: a page is for serving).
        """
        geometry = spec.geometry_type is not None
        where, params = _feature_where(spec, bbox, equals)
        table = quote(partition_name(spec.name, version))
        rows = conn.execute(sa.text(
            f"SELECT {_select_list(spec.all_columns, geometry)}, count(*) OVER () AS _matched "
            f"FROM {table}{where} ORDER BY {POSTGRES.order(spec.id_field)} "
            f"LIMIT :_limit OFFSET :_offset"
        ), {**params, "_limit": limit, "_offset": offset}).fetchall()
        if rows:
            matched = int(rows[0][-1])
        else:  # past the end: the window had no row to count on
            matched = int(conn.execute(sa.text(f"SELECT count(*) FROM {table}{where}"),
                                       params).scalar())
        return _page_frame(spec, [r[:-1] for r in rows], geometry), matched

    # -- events -----------------------------------------------------------------------------------

    def prepare_events(self, events: pd.DataFrame) -> PreparedEvents:
        """Coerce and check events, and encode them as binary COPY rows (no database work)."""
        payload = events["payload"] if "payload" in events else None
        if payload is not None and json_texts(payload):
            # JSON text goes to jsonb as it is: the server parses it anyway (rejecting what is
            # not JSON) and keeps its own normal form, so canonicalising it here would be a
            # second parse and serialisation of every payload on the ingest path
            blank = pd.Series(np.full(len(events), None, dtype=object), index=events.index)
            frame = coerce_table(EVENTS, events.assign(payload=blank))
            texts = payload.to_numpy(dtype=object)
            frame["payload"] = pd.Series(np.where(pd.isna(texts), None, texts), dtype=object)
        else:
            frame = coerce_table(EVENTS, events)
        frame = checked_events(frame)
        return PreparedEvents(frame, binary_rows(EVENTS.columns, frame))

    def append_events(self, events: pd.DataFrame | PreparedEvents) -> int:
        """Append events; ids already stored are ignored. Returns how many were new.

        The batch is COPied straight into the events table inside a savepoint: the common
        case (every id new) costs one COPY. When an id is already stored (a redelivery after a
        crash, another worker's copy, or an id twice in the batch) the COPY fails on the
        primary key, the savepoint is rolled back, and the batch goes through a temporary table
        and ``INSERT … ON CONFLICT DO NOTHING`` instead, so each id is stored exactly once.

        Raises
        ------
        ValidationError
            If a value does not convert or an id is missing (nothing is stored).
        """
        import psycopg

        if not isinstance(events, PreparedEvents) or events.encoded is None:
            events = self.prepare_events(getattr(events, "frame", events))
        if not len(events):
            return 0
        try:
            inserted = self._insert_new_events(events.encoded, len(events))
        except psycopg.errors.DataError as exc:
            reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise ValidationError(
                f"table {EVENTS.name}: a payload is not JSON PostgreSQL accepts ({reason}); "
                "nothing was stored. Send payloads as objects or as valid JSON text."
            ) from None
        LOGGER.debug("events: %d sent, %d new", len(events), inserted)
        return int(inserted)

    def _insert_new_events(self, rows: memoryview, count: int) -> int:
        """COPY events (all new: one COPY; else through a temporary table); return how many new."""
        import psycopg

        names = [c.name for c in EVENTS.columns]
        columns = ", ".join(quote(c) for c in names)
        with self._begin() as conn:
            try:
                with conn.begin_nested():
                    copy_events(conn, EVENTS.name, names, rows)
                inserted = count
            except psycopg.errors.UniqueViolation:
                conn.execute(
                    sa.text(
                        f"CREATE TEMP TABLE _twin_events_in (LIKE {quote(EVENTS.name)}) "
                        "ON COMMIT DROP"
                    )
                )
                copy_events(conn, "_twin_events_in", names, rows)
                # no conflict target: the id is unique within its month's partition, an
                # index on each partition (twin.store.eventparts), not one on the parent
                inserted = conn.execute(
                    sa.text(
                        f"INSERT INTO {quote(EVENTS.name)} ({columns}) SELECT {columns} "
                        "FROM _twin_events_in ON CONFLICT DO NOTHING"
                    )
                ).rowcount
        return int(inserted)

    def ensure_event_partitions(self, until: Any = None) -> list[str]:
        now = pd.Timestamp.now(tz="UTC")
        with self._begin() as conn:
            return eventparts.ensure_partitions(
                conn, eventparts.months(now, now if until is None else to_utc(until)))

    def event_months(self, before: Any) -> dict[pd.Timestamp, int]:
        """Months of the partitions starting before *before* (empty ones too), and of DEFAULT's.

        Each partition is counted on its own (a scan of that month only, never the table).
        """
        cutoff = to_utc(before)
        out: dict[pd.Timestamp, int] = {}
        with self._read() as conn:
            for month, name in eventparts.partitions(conn).items():
                if month < cutoff:
                    out[month] = int(conn.execute(sa.text(
                        f"SELECT count(*) FROM {quote(name)} WHERE observed_at < :b"),
                        {"b": cutoff.to_pydatetime()}).scalar())
            for month in eventparts.default_months(conn):
                if month < cutoff:
                    out[month] = out.get(month, 0) + int(conn.execute(sa.text(
                        f"SELECT count(*) FROM {quote(eventparts.DEFAULT)} WHERE observed_at "
                        ">= :a AND observed_at < :b"), {"a": month.to_pydatetime(), "b": (
                            month + pd.offsets.MonthBegin(1)).to_pydatetime()}).scalar())
        return dict(sorted(out.items()))  # empty partitions too: retention drops them

    def drop_event_month(self, month: Any, expected: int) -> int:
        """Detach and drop the month's partition; a month with none is deleted row by row."""
        with self._begin() as conn:
            has_partition = eventparts.month_start(month) in eventparts.partitions(conn)
            if has_partition:
                return eventparts.drop_partition(conn, month, expected)
        return super().drop_event_month(month, expected)

    # -- cases ------------------------------------------------------------------------------------

    def _locked_cases(
        self, conn: sa.Connection, ids: list[str], columns: list[Column]
    ) -> pd.DataFrame:
        rows = conn.execute(
            sa.text(
                f"SELECT {_select_list(columns, False)} FROM {quote(CASES.name)} "
                "WHERE id = ANY(:ids) ORDER BY id FOR UPDATE"
            ),
            {"ids": ids},
        ).fetchall()
        return _frame(rows, columns)

    def _case_columns(
        self, conn: sa.Connection, columns: list[Column], where: list[str],
        params: dict[str, Any],
    ) -> pd.DataFrame:
        """Each column comes as one value per chunk of rows: packed binary or CSV text.

        (a timestamptz is 8 bytes of µs since 2000.) Fetching a million rows (or COPY
        messages) one by one costs more in Python than everything else. There is no ORDER BY on
        the server: rows are put in id order here (a bytewise sort is COLLATE "C"), which saves
        sorting a million rows in SQL.
        """
        if not columns:
            return pd.DataFrame(index=pd.RangeIndex(0))
        aggregates = ", ".join(aggregate(c) for c in [_CASE_ID, *columns])
        where_sql = " WHERE " + " AND ".join(where) if where else ""
        estimate = conn.execute(
            sa.text("SELECT reltuples FROM pg_class WHERE oid = CAST(:t AS regclass)"),
            {"t": quote(CASES.name)},
        ).scalar()
        parts = max(1, int(max(estimate or 0, 0) // AGG_CHUNK_ROWS) + 1)
        chunks = conn.execute(
            sa.text(
                f"SELECT {aggregates} FROM {quote(CASES.name)}{where_sql} "
                f"GROUP BY abs(hashtext(id) % {parts})"
            ),
            params,
        ).fetchall()
        return unpack_columns(chunks, columns)

    def _count_rows(self, conn: sa.Connection, query: Any) -> pd.DataFrame | list[tuple]:
        return count_rows(conn, query)

    def _before_counts(self, conn: sa.Connection) -> None:
        conn.execute(sa.text(f"SET LOCAL work_mem = '{COUNT_WORK_MEM}'"))
