"""The embedded store: a GeoPackage file written with sqlite3, that QGIS and GDAL open directly."""

from __future__ import annotations

import contextlib
import json
import logging
import sqlite3
import threading
import weakref
from collections.abc import Collection, Iterator, Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

import geopandas as gpd
import numpy as np
import pandas as pd
import shapely

from twin import audit_anchor
from twin import layers as declared
from twin.errors import (
    ConfigError,
    DuplicateIdError,
    LayerNotFoundError,
    NotFoundError,
    StaleUpdateError,
    StoreUnavailableError,
    ValidationError,
)
from twin.schema import (
    AUDIT,
    CASE_DATA_COLUMNS,
    CASE_HISTORY,
    CASES,
    CRS,
    EVENTS,
    LAYER_VERSIONS,
    TABLES,
    Column,
    LayerSpec,
    TableSpec,
    coerce_series,
    coerce_table,
    layer_frame_to_store,
)
from twin.store import gpkg, rollup
from twin.store.base import (
    GRID_NAMES,
    BBox,
    LayerVersion,
    PreparedEvents,
    Store,
    audit_hash,
    case_columns,
    check_expected,
    checked_events,
    count_columns,
    count_frame,
    current_stamps,
    layer_audit,
    plan_case_counts,
    prepare_case_grids,
    prepare_equals,
    prepare_rows,
    purge_plan,
    read_csv_columns,
    regrid_plan,
    with_points,
)

LOGGER = logging.getLogger(__name__)

CACHE_KIB = 256 * 1024  # page cache per connection (SQLite allocates it as it is used)
BUSY_TIMEOUT_S = 30.0  # how long a writer waits for another writer before giving up
HISTORY_SUFFIX = "__history"
VERSION_COLUMN = "_version"
GEOMETRY_COLUMN = "geom"
FID = "fid"
# Secondary indexes of the store's own tables, by the filters read_events / read_cases /
# case_counts offer (a tuple is a composite index).
INDEXES: dict[str, tuple[str | tuple[str, ...], ...]] = {
    EVENTS.name: ("observed_at", "grid_code"),
    CASES.name: ("status", "grid_code", "requested_at", "filed_at", ("grid_code", "requested_at")),
}
# SQLite keeps a FROM subquery ending so as one step (no flattening): the period and its as-of
# of each case are then computed once, not once per count that uses them.
_FENCE = " LIMIT -1"
_CASE_COLUMNS = {c.name: c for c in CASES.columns}
_FIXED_CASE_FIELDS = ("id", "version")

q = gpkg.quote


def path_of(url: str | Path) -> Path:
    """Return the file path of an embedded store URL: a path, ``file://PATH`` or ``gpkg://PATH``."""
    text = str(url)
    for prefix in ("gpkg://", "file://"):
        if text.startswith(prefix):
            text = text[len(prefix) :]
            break
    if not text:
        raise ConfigError(
            f"store URL {str(url)!r} names no file; give a path such as data/twin.gpkg"
        )
    return Path(text).expanduser()


def _now() -> pd.Timestamp:
    # milliseconds: the precision a GeoPackage DATETIME keeps, so what we return is what is stored
    return pd.Timestamp.now(tz="UTC").floor("ms")


def _sql_time(value: datetime | str) -> str:
    stamp = pd.Timestamp(value)
    stamp = stamp.tz_localize("UTC") if stamp.tzinfo is None else stamp.tz_convert("UTC")
    return gpkg.format_datetimes(pd.Series([stamp]))[0]


def _python_value(value: Any, dtype: str) -> Any:
    """Return a coerced cell as a plain Python value (None when missing), as both stores do."""
    if value is None or value is pd.NaT or (not isinstance(value, str) and pd.isna(value)):
        return None
    if dtype == "int":
        return int(value)
    if dtype == "float":
        return float(value)
    if dtype == "bool":
        return bool(value)
    if dtype == "datetime":
        return pd.Timestamp(value).tz_convert("UTC")
    return value


def _decode(
    columns: Sequence[Column],
    rows: list[tuple],
    *,
    geometry: bool = False,
    canonical_json: bool = False,
) -> pd.DataFrame | gpd.GeoDataFrame:
    """Typed frame (through coerce_series, as the PostGIS store does) from fetched rows.

    With *canonical_json* JSON text is returned as stored: the store's own tables only ever
    receive canonical JSON (written through coerce_series), and re-parsing it costs most of the
    time of reading many events. Layer tables are re-checked, since people edit them in QGIS.
    """
    names = [c.name for c in columns] + ([GEOMETRY_COLUMN] if geometry else [])
    raw = (
        pd.DataFrame.from_records(rows, columns=names)
        if rows
        else pd.DataFrame({n: pd.Series([], dtype=object) for n in names})
    )
    out = pd.DataFrame(
        {
            c.name: raw[c.name].astype(object).where(raw[c.name].notna(), None)
            if canonical_json and c.dtype == "json"
            else coerce_series(raw[c.name], c)
            for c in columns
        },
        index=raw.index,
    )
    if not geometry:
        return out
    geoms = gpkg.decode_geometries(raw[GEOMETRY_COLUMN].tolist())
    return gpd.GeoDataFrame(out, geometry=geoms, crs=CRS)


def _stored_value(value: Any, dtype: str) -> Any:
    """Return one stored cell as the plain Python value the store's dicts hold."""
    if value is None:
        return None
    if dtype == "datetime":
        return pd.Timestamp(value).tz_convert("UTC")
    if dtype == "bool":
        return bool(value)
    if dtype == "int":
        return int(value)
    if dtype == "float":
        return float(value)
    return value


def _decode_columns(columns: Sequence[Column], rows: list[tuple]) -> pd.DataFrame:
    """Typed frame from sqlite3 rows of the store's own tables, one vectorised step per column.

    With pyarrow the fixed-width GeoPackage DATETIME text is parsed by Arrow's ISO 8601 cast
    (C code); without it by pandas.
    """
    try:
        import pyarrow as pa
    except ImportError:  # pragma: no cover - pyarrow comes with the project's pandas
        pa = None
    values = list(zip(*rows, strict=True)) if rows else [() for _ in columns]
    out = {}
    for c, column in zip(columns, values, strict=True):
        if c.dtype == "datetime" and pa is not None:
            stamps = pa.array(column, type=pa.string()).cast(pa.timestamp("ms", tz="UTC"))
            out[c.name] = pd.Series(stamps.to_pandas()).astype("datetime64[us, UTC]")
            continue
        raw = pd.Series(np.asarray(column, dtype=object), dtype=object)
        if c.dtype == "datetime":
            out[c.name] = pd.to_datetime(raw, utc=True, format="ISO8601").astype(
                "datetime64[us, UTC]"
            )
        elif c.dtype == "int":
            out[c.name] = pd.to_numeric(raw).astype("Int64")
        elif c.dtype == "bool":
            out[c.name] = pd.to_numeric(raw).astype("Int64").astype("boolean")
        elif c.dtype == "float":
            out[c.name] = pd.to_numeric(raw).astype("float64")
        else:
            out[c.name] = pd.Series(raw, dtype="str")
    return pd.DataFrame(out, index=pd.RangeIndex(len(rows)))


def _table_ddl(table: TableSpec) -> list[str]:
    """CREATE statements for one of the store's own tables, derived from its TableSpec."""
    keys = table.key.split(",")
    columns = ", ".join(
        f"{q(c.name)} {gpkg.SQL_TYPES[c.dtype]}{' NOT NULL' if c.name in keys else ''}"
        for c in table.columns
    )
    # GeoPackage wants an INTEGER primary key on every table; the declared key is UNIQUE instead
    statements = [
        f"CREATE TABLE IF NOT EXISTS {q(table.name)} ({FID} INTEGER PRIMARY KEY AUTOINCREMENT "
        f"NOT NULL, {columns}, UNIQUE ({', '.join(q(k) for k in keys)}))"
    ]
    return statements + _index_ddl(table)


def _index_name(table: TableSpec, columns: str | tuple[str, ...]) -> str:
    return f"{table.name}__{'__'.join((columns,) if isinstance(columns, str) else columns)}"


def _index_ddl(table: TableSpec) -> list[str]:
    out = []
    for columns in INDEXES.get(table.name, ()):
        names = (columns,) if isinstance(columns, str) else columns
        out.append(
            f"CREATE INDEX IF NOT EXISTS {q(_index_name(table, columns))} ON {q(table.name)} "
            f"({', '.join(q(c) for c in names)})"
        )
    return out


def _table_columns(conn: sqlite3.Connection, table: str) -> list[str]:
    return [row[1] for row in conn.execute(f"PRAGMA table_info({q(table)})")]


def _add_missing_columns(
    conn: sqlite3.Connection, table: str, columns: Sequence[Column], existing: Sequence[str]
) -> None:
    # a column declared after the table was made: old rows read it as empty
    for c in columns:
        if c.name not in existing:
            LOGGER.info("adding column %s to %s", c.name, table)
            conn.execute(f"ALTER TABLE {q(table)} ADD COLUMN {q(c.name)} {gpkg.SQL_TYPES[c.dtype]}")


def _fill_case_columns(conn: sqlite3.Connection, names: Sequence[str]) -> None:
    """Fill case columns just added to an older file from each case's ``data`` (JSON1 SQL)."""
    if not names:
        return
    sets = []
    for name in names:
        path, how = CASE_DATA_COLUMNS[name]
        where = "$." + ".".join(path)
        value = f"json_extract(data, '{where}')"
        dtype = _CASE_COLUMNS[name].dtype
        if how == "count":
            value = f"coalesce(json_array_length(data, '{where}'), 0)"
        elif dtype == "datetime":  # ISO 8601 in data → the GeoPackage DATETIME form
            value = f"strftime('%Y-%m-%dT%H:%M:%fZ', {value})"
        elif dtype == "int":
            value = f"coalesce({value}, 0)"
        elif dtype == "bool":
            value = f"coalesce({value}, 0)"
        sets.append(f"{q(name)} = {value}")
    count = conn.execute(
        f"UPDATE {q(CASES.name)} SET {', '.join(sets)} WHERE json_valid(data)"
    ).rowcount
    LOGGER.info("filled %s of %d cases from their data", ", ".join(names), count)


def _geometry_type_name(spec: LayerSpec) -> str:
    return "GEOMETRY" if spec.also_geometry_types else spec.geometry_type.upper()


def _packed_counts(conn: sqlite3.Connection, query: Any) -> pd.DataFrame:
    """Run a count query of text and integer columns: its rows as a frame, parsed in bulk.

    A grid × month table is a few hundred thousand rows; Python tuples and a frame built from
    them cost ~2 s there. SQLite writes the rows as one CSV text instead (``printf``: one call
    a row; text quoted with ``"`` doubled, NULL empty), which pyarrow parses in C, as the
    PostGIS store does.
    """
    columns = [_CASE_COLUMNS[k] for k in query.by] + [
        Column(n, "int", n, n) for n in count_columns(query)[len(query.by):]
    ]
    if any(c.dtype != "text" for c in columns[:len(query.by)]):
        raise ValueError(f"packed counts take text slices only; got {query.by}")
    texts = [
        f"""CASE WHEN {q(c.name)} IS NULL THEN '' ELSE printf('"%w"', {q(c.name)}) END"""
        for c in columns[:len(query.by)]
    ]
    numbers = [q(c.name) for c in columns[len(query.by):]]
    numbers_sql = f"printf('{','.join(['%d'] * len(numbers))}', {', '.join(numbers)})"
    line = " || ',' || ".join([*texts, numbers_sql])
    packed = conn.execute(
        f"SELECT group_concat({line}, char(10)) FROM ({query.sql}) AS _counted", query.params
    ).fetchone()[0]
    if not packed:
        return pd.DataFrame({c.name: pd.Series([], dtype=object) for c in columns})
    table = read_csv_columns((packed + "\n").encode("utf-8"), columns)
    return table.to_pandas().astype({c.name: "str" for c in columns if c.dtype == "text"})


class EmbeddedStore(Store):
    """A GeoPackage 1.3 file holding the twin's layers (every version), events, cases and audit.

    Each layer ``<name>`` is a GeoPackage table holding its current version — what QGIS and GDAL
    show — and ``<name>__history`` keeps the rows of every version with a ``_version`` column.
    Every write is one SQLite transaction (``BEGIN IMMEDIATE``), so a failed write leaves the
    file as it was and two processes writing the same file take turns. Spatial filtering is done
    in memory (no SpatiaLite, no GeoPackage R-tree: plain sqlite3 cannot maintain one).

    Parameters
    ----------
    url
        A file path, ``file://PATH`` or ``gpkg://PATH``. The file is created if missing.

    Raises
    ------
    ConfigError
        If the folder does not exist or the file is not a GeoPackage.
    """

    def __init__(self, url: str | Path) -> None:
        self.url = str(url)
        self.path = path_of(url)
        if self.path.is_dir():
            raise ConfigError(
                f"store path {self.path} is a folder; give a file such as {self.path / 'twin.gpkg'}"
            )
        if not self.path.parent.is_dir():
            raise ConfigError(
                f"folder {self.path.parent} does not exist; create it (mkdir -p "
                f"{self.path.parent}) or choose another path for the store"
            )
        self._lock = threading.Lock()
        self._local = threading.local()
        self._generation = 0
        self._connections: list[tuple[weakref.ref, sqlite3.Connection]] = []
        self._initialise()

    # -- connections and transactions -----------------------------------------------------------

    def _connect(self) -> sqlite3.Connection:
        try:
            conn = sqlite3.connect(
                self.path, timeout=BUSY_TIMEOUT_S, isolation_level=None, check_same_thread=False
            )
            # WAL: readers (the cockpit, QGIS) do not wait for writers (feeds), nor block them
            conn.execute("PRAGMA journal_mode=WAL")
            # a bigger page cache than SQLite's 2 MB: writing a million cases updates five
            # indexes at random places, which otherwise re-reads pages from disk every row
            conn.execute(f"PRAGMA cache_size = -{CACHE_KIB}")
        except sqlite3.DatabaseError as exc:
            if "not a database" in str(exc):
                raise ConfigError(
                    f"{self.path} is not a GeoPackage (nor any SQLite file); "
                    "choose another path for the store"
                ) from None
            raise StoreUnavailableError(
                f"cannot open the store file {self.path}: {exc}; check that it is readable and "
                "writable and that the disk is not full"
            ) from exc
        return conn

    def _conn(self) -> sqlite3.Connection:
        """Return this thread's connection (Streamlit and the feeds share one store)."""
        conn = getattr(self._local, "conn", None)
        if conn is None or self._local.generation != self._generation:
            conn = self._connect()
            with self._lock:
                self._close_orphans()
                self._connections.append((weakref.ref(threading.current_thread()), conn))
                self._local.conn, self._local.generation = conn, self._generation
        return conn

    def _close_orphans(self) -> None:
        alive = []
        for ref, conn in self._connections:
            thread = ref()
            if thread is not None and thread.is_alive():
                alive.append((ref, conn))
            else:
                conn.close()
        self._connections = alive

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        """Run a write transaction: locked at once (IMMEDIATE), committed, or rolled back."""
        conn = self._conn()
        try:
            conn.execute("BEGIN IMMEDIATE")
        except sqlite3.OperationalError as exc:
            raise StoreUnavailableError(
                f"{self.path} is locked by another writer ({exc}) for more than "
                f"{BUSY_TIMEOUT_S:.0f} s; finish or cancel edits in other programs (QGIS) and "
                "try again"
            ) from exc
        try:
            yield conn
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise

    @contextlib.contextmanager
    def _snapshot(self) -> Iterator[sqlite3.Connection]:
        """Run a read transaction: every query inside sees the same committed state."""
        conn = self._conn()
        conn.execute("BEGIN")
        try:
            yield conn
        finally:
            if conn.in_transaction:
                conn.execute("COMMIT")

    def _initialise(self) -> None:
        conn = self._conn()
        if not gpkg.is_geopackage(conn) and gpkg.has_tables(conn):
            raise ConfigError(
                f"{self.path} is an SQLite database but not a GeoPackage; "
                "choose another path for the store"
            )
        if self._is_complete(conn):
            return
        with self._transaction() as conn:
            gpkg.initialise(conn)
            for table in TABLES:
                existing = _table_columns(conn, table.name)
                if existing:
                    _add_missing_columns(conn, table.name, table.columns, existing)
                    if table is CASES:
                        added = [n for n in CASE_DATA_COLUMNS if n not in existing]
                        _fill_case_columns(conn, added)
                for statement in _table_ddl(table):
                    conn.execute(statement)
                gpkg.register_table(conn, table.name, description=f"GridTwin {table.name}")
            if not self._rollup_current(conn):
                self._build_case_rollup(conn)
        # GDAL checks application_id in the main file's header, which WAL only updates at a
        # checkpoint: make it one now so a fresh file is a GeoPackage to GDAL at once
        self._conn().execute("PRAGMA wal_checkpoint(TRUNCATE)")

    def _is_complete(self, conn: sqlite3.Connection) -> bool:
        if not gpkg.is_geopackage(conn):
            return False
        indexes = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='index'")}
        for table in TABLES:
            existing = set(_table_columns(conn, table.name))
            if not existing or any(c.name not in existing for c in table.columns):
                return False
            if any(_index_name(table, c) not in indexes for c in INDEXES.get(table.name, ())):
                return False  # a file made before an index was declared: create it on open
        return self._rollup_current(conn)

    @staticmethod
    def _rollup_current(conn: sqlite3.Connection) -> bool:
        """Whether the case rollup exists and was built with today's definition."""
        if not _table_columns(conn, rollup.META):
            return False
        row = conn.execute(
            f"SELECT fingerprint FROM {q(rollup.META)} WHERE name = ?", (rollup.TABLE,)
        ).fetchone()
        triggers = {r[0] for r in conn.execute(
            "SELECT name FROM sqlite_master WHERE type = 'trigger' AND tbl_name = ?",
            (CASES.name,))}
        return row is not None and row[0] == rollup.fingerprint("embedded") and \
            set(rollup.trigger_names()) <= triggers

    @staticmethod
    def _pause_case_rollup(conn: sqlite3.Connection, ids: list[str], on_conflict: str) -> None:
        """Before a bulk write of cases: note the batch, take out what it replaces, pause.

        The row triggers would upsert the rollup once per case; a batch is cheaper counted
        once, grouped (:func:`twin.store.rollup.sqlite_batch`). Inside the write's transaction.
        """
        batch = q(rollup.BATCH)
        conn.execute(f"CREATE TEMP TABLE IF NOT EXISTS {batch} (id TEXT PRIMARY KEY)")
        conn.execute(f"DELETE FROM temp.{batch}")
        conn.executemany(f"INSERT INTO temp.{batch} (id) VALUES (?)", [(i,) for i in ids])
        if on_conflict == "update":  # stored cases are replaced: their counts go first
            conn.execute(rollup.sqlite_batch(CASES.name, -1))
        else:  # stored cases are kept as they are: only the new ones count
            conn.execute(  # one look-up per batch row (IN would walk every stored id)
                f"DELETE FROM temp.{batch} WHERE EXISTS (SELECT 1 FROM {q(CASES.name)} AS _c "
                f"WHERE _c.id = {batch}.id)"
            )
        conn.execute(f"INSERT INTO {q(rollup.PAUSED)} (paused) VALUES (1)")

    @staticmethod
    def _resume_case_rollup(conn: sqlite3.Connection) -> None:
        """After a bulk write of cases: count the batch as stored now, and resume the triggers."""
        conn.execute(f"DELETE FROM {q(rollup.PAUSED)}")
        conn.execute(rollup.sqlite_batch(CASES.name, 1))
        conn.execute(f"DELETE FROM {q(rollup.TABLE)} WHERE cases = 0")
        conn.execute(f"DELETE FROM temp.{q(rollup.BATCH)}")

    @staticmethod
    def _build_case_rollup(conn: sqlite3.Connection) -> None:
        """(Re)create the monthly case-count rollup, its triggers and calendar, from the cases.

        Inside the caller's transaction; see :mod:`twin.store.rollup`. A file written before
        the rollup existed gets it here, when it is opened.
        """
        for statement, rows in rollup.sqlite_statements(CASES.name, gpkg.format_datetimes):
            if rows:
                conn.executemany(statement, rows)
            else:
                conn.execute(statement)
        LOGGER.info("case rollup %s built", rollup.TABLE)

    def close(self) -> None:
        """Close every connection this store opened (it reconnects if used again)."""
        with self._lock:
            for _, conn in self._connections:
                conn.close()
            self._connections = []
            self._generation += 1

    # -- generic rows -----------------------------------------------------------------------------

    @staticmethod
    def _insert(
        conn: sqlite3.Connection, table: TableSpec, frame: pd.DataFrame, *, or_ignore: bool = False
    ) -> None:
        """Insert a frame already coerced with coerce_table, as bound parameters."""
        values = [gpkg.to_sql_values(frame[c.name], c.dtype) for c in table.columns]
        names = ", ".join(q(c.name) for c in table.columns)
        marks = ", ".join("?" for _ in table.columns)
        verb = "INSERT OR IGNORE" if or_ignore else "INSERT"
        conn.executemany(
            f"{verb} INTO {q(table.name)} ({names}) VALUES ({marks})",
            list(zip(*values, strict=True)),
        )

    @staticmethod
    def _select(
        conn: sqlite3.Connection,
        table: TableSpec,
        order: str,
        clauses: Sequence[str] = (),
        params: Sequence[Any] = (),
    ) -> pd.DataFrame:
        names = ", ".join(q(c.name) for c in table.columns)
        where = f" WHERE {' AND '.join(clauses)}" if clauses else ""
        rows = conn.execute(
            f"SELECT {names} FROM {q(table.name)}{where} ORDER BY {order}", tuple(params)
        ).fetchall()
        return _decode(table.columns, rows, canonical_json=True)

    def put_rows(
        self, table: TableSpec, frame: pd.DataFrame, *, on_conflict: str = "ignore"
    ) -> int:
        rows = prepare_rows(table, frame, on_conflict)
        if rows.empty:
            return 0
        keys = [k.strip() for k in table.key.split(",")]
        names = ", ".join(q(c.name) for c in table.columns)
        marks = ", ".join("?" for _ in table.columns)
        if on_conflict == "update":
            assign = ", ".join(
                f"{q(c.name)} = excluded.{q(c.name)}" for c in table.columns if c.name not in keys
            )
            verb, tail = (
                "INSERT",
                f" ON CONFLICT ({', '.join(q(k) for k in keys)}) DO UPDATE SET {assign}",
            )
        else:
            verb, tail = "INSERT OR IGNORE", ""
        values = [gpkg.to_sql_values(rows[c.name], c.dtype) for c in table.columns]
        with self._transaction() as conn:
            if table is CASES:
                self._pause_case_rollup(conn, rows["id"].tolist(), on_conflict)
            before = conn.total_changes
            conn.executemany(
                f"{verb} INTO {q(table.name)} ({names}) VALUES ({marks}){tail}",
                list(zip(*values, strict=True)),
            )
            written = conn.total_changes - before
            if table is CASES:
                self._resume_case_rollup(conn)  # after counting: its changes are not rows
        LOGGER.debug("%s: %d of %d rows written", table.name, written, len(rows))
        return written

    def read_rows(self, table: TableSpec, **equals: Any) -> pd.DataFrame:
        clauses, params = [], []
        for name, typed in prepare_equals(table, equals):
            column = next(c for c in table.columns if c.name == name)
            values = gpkg.to_sql_values(typed, column.dtype)
            if not values:
                clauses.append("0")
                continue
            clauses.append(f"{q(name)} IN ({', '.join('?' for _ in values)})")
            params.extend(values)
        order = ", ".join(q(k.strip()) for k in table.key.split(","))
        return self._select(self._conn(), table, order, clauses, params)

    # -- layers -----------------------------------------------------------------------------------

    def _ensure_layer_tables(self, conn: sqlite3.Connection, spec: LayerSpec) -> None:
        """Create (or bring up to the declaration) the layer's current and history tables."""
        geometry = spec.geometry_type is not None
        description = f"{spec.title_zh} {spec.title_en}"
        for table, history in ((spec.name, False), (spec.name + HISTORY_SUFFIX, True)):
            existing = _table_columns(conn, table)
            if existing and not history and existing != self._current_columns(spec):
                # the current table shows exactly the declared columns, in order; it is
                # refilled from the history in this same transaction, so rebuild it
                LOGGER.info("rebuilding table %s for the declared columns", table)
                conn.execute(f"DROP TABLE {q(table)}")
                existing = []
            if existing:
                _add_missing_columns(conn, table, spec.all_columns, existing)
            else:
                columns = [f"{FID} INTEGER PRIMARY KEY AUTOINCREMENT NOT NULL"]
                if geometry:
                    columns.append(f"{q(GEOMETRY_COLUMN)} {_geometry_type_name(spec)}")
                columns += [
                    f"{q(c.name)} {gpkg.SQL_TYPES[c.dtype]}"
                    f"{' NOT NULL' if c.name == spec.id_field else ''}"
                    for c in spec.all_columns
                ]
                if history:
                    columns += [
                        f"{VERSION_COLUMN} INTEGER NOT NULL",
                        f"UNIQUE ({VERSION_COLUMN}, {q(spec.id_field)})",
                    ]
                else:
                    columns.append(f"UNIQUE ({q(spec.id_field)})")
                conn.execute(f"CREATE TABLE {q(table)} ({', '.join(columns)})")
            gpkg.register_table(
                conn,
                table,
                description=description + (" (every version)" if history else ""),
                geometry_type=_geometry_type_name(spec) if geometry else None,
                geometry_column=GEOMETRY_COLUMN,
            )

    @staticmethod
    def _current_columns(spec: LayerSpec) -> list[str]:
        geometry = [GEOMETRY_COLUMN] if spec.geometry_type is not None else []
        return [FID, *geometry, *spec.column_names]

    @staticmethod
    def _layer_select(spec: LayerSpec) -> str:
        names = [q(n) for n in spec.column_names]
        if spec.geometry_type is not None:
            names.append(q(GEOMETRY_COLUMN))
        return ", ".join(names)

    def _make_current(self, conn: sqlite3.Connection, spec: LayerSpec, version: int) -> None:
        """Replace the current table's rows with those of *version*; update the extent."""
        columns = self._layer_select(spec)
        current, history = q(spec.name), q(spec.name + HISTORY_SUFFIX)
        conn.execute(f"DELETE FROM {current}")
        conn.execute(
            f"INSERT INTO {current} ({columns}) SELECT {columns} FROM {history} "
            f"WHERE {VERSION_COLUMN} = ? ORDER BY {q(spec.id_field)}",
            (version,),
        )
        conn.execute(
            f"UPDATE {q(LAYER_VERSIONS.name)} SET {q('current')} = ({q('version')} = ?) "
            f"WHERE {q('layer')} = ?",
            (version, spec.name),
        )
        bounds = None
        if spec.geometry_type is not None:
            blobs = [row[0] for row in conn.execute(f"SELECT {q(GEOMETRY_COLUMN)} FROM {current}")]
            if blobs:
                bounds = shapely.total_bounds(gpkg.decode_geometries(blobs))
        gpkg.touch(conn, spec.name, bounds)

    def _after_rows_written(self, spec: LayerSpec, version: int) -> None:
        """Run inside write_layers' transaction after a layer's rows are written (a hook)."""

    def write_layers(
        self,
        frames: dict[str, gpd.GeoDataFrame | pd.DataFrame],
        *,
        actor: str,
        source: str,
        note: str = "",
        report: dict | None = None,
        case_grids: pd.DataFrame | None = None,
        expect: Mapping[str, int | None] | None = None,
        _prevalidated: Collection[str] = (),
    ) -> list[LayerVersion]:
        checked = [
            (
                spec := declared.get_layer(name),
                layer_frame_to_store(spec, frame, prevalidated=name in _prevalidated),
            )
            for name, frame in frames.items()
        ]
        wanted = None if case_grids is None else prepare_case_grids(case_grids)
        created_at = _now()
        written = []
        with self._transaction() as conn:  # IMMEDIATE: no other writer until the commit
            if expect:
                check_expected(expect, self._current_stamps(conn, list(expect)))
            if wanted is not None and len(wanted):
                self._regrid_cases(conn, wanted, actor=actor, source=source, note=note,
                                   at=created_at)
            for spec, frame in checked:
                version = self._write_one(conn, spec, frame, created_at, actor, source, note,
                                          report)
                self._audit(conn, actor, "layer.write", f"layer:{spec.name}",
                            layer_audit(version), source)
                self._after_rows_written(spec, version.version)
                written.append(version)
        for version in written:
            LOGGER.info("%s wrote version %d of layer %s (%d rows) from %s", actor,
                        version.version, version.layer, version.rows, source)
        return written

    def _write_one(
        self,
        conn: sqlite3.Connection,
        spec: LayerSpec,
        frame: gpd.GeoDataFrame | pd.DataFrame,
        created_at: pd.Timestamp,
        actor: str,
        source: str,
        note: str,
        report: dict | None,
    ) -> LayerVersion:
        """Write one validated layer frame as its next version and make it current."""
        values = [gpkg.to_sql_values(frame[c.name], c.dtype) for c in spec.all_columns]
        names = [q(n) for n in spec.column_names]
        if spec.geometry_type is not None:
            values.append(gpkg.encode_geometries(frame.geometry.values))
            names.append(q(GEOMETRY_COLUMN))
        self._ensure_layer_tables(conn, spec)
        version = conn.execute(
            f"SELECT coalesce(max({q('version')}), 0) + 1 FROM {q(LAYER_VERSIONS.name)} "
            f"WHERE {q('layer')} = ?",
            (spec.name,),
        ).fetchone()[0]
        values.append([version] * len(frame))
        names.append(VERSION_COLUMN)
        conn.executemany(
            f"INSERT INTO {q(spec.name + HISTORY_SUFFIX)} ({', '.join(names)}) "
            f"VALUES ({', '.join('?' for _ in names)})",
            list(zip(*values, strict=True)),
        )
        record = {
            "layer": spec.name,
            "version": version,
            "created_at": created_at,
            "actor": actor,
            "source": source,
            "rows": len(frame),
            "note": note,
            "report": report,
            "current": False,
        }
        self._insert(conn, LAYER_VERSIONS, coerce_table(LAYER_VERSIONS, pd.DataFrame([record])))
        self._make_current(conn, spec, version)
        if spec.geometry_type is not None:
            self._widen_history_extent(conn, spec, frame)
        return LayerVersion(
            layer=spec.name,
            version=version,
            created_at=created_at,
            actor=actor,
            source=source,
            rows=len(frame),
            note=note,
            report=report,
            current=True,
        )

    def _regrid_cases(
        self,
        conn: sqlite3.Connection,
        wanted: pd.DataFrame,
        *,
        actor: str,
        source: str,
        note: str,
        at: pd.Timestamp,
    ) -> None:
        """Move cases to new grids (inside the caller's transaction): columns, version, step."""
        conn.execute("CREATE TEMP TABLE IF NOT EXISTS _regrid_ids (id TEXT PRIMARY KEY)")
        conn.execute("DELETE FROM _regrid_ids")
        conn.executemany("INSERT INTO _regrid_ids (id) VALUES (?)", [(i,) for i in wanted["id"]])
        stored_columns = [_CASE_COLUMNS[n] for n in ("id", "version", "status", *GRID_NAMES)]
        rows = conn.execute(
            f"SELECT {', '.join(q(c.name) for c in stored_columns)} FROM {q(CASES.name)} "
            "WHERE id IN (SELECT id FROM _regrid_ids)"
        ).fetchall()
        conn.execute("DELETE FROM _regrid_ids")
        updates, steps = regrid_plan(
            wanted, _decode_columns(stored_columns, rows), actor=actor, source=source,
            note=note, at=at,
        )
        if updates.empty:
            return
        stamp = _sql_time(at)
        conn.executemany(
            f"UPDATE {q(CASES.name)} SET {', '.join(f'{q(n)} = ?' for n in GRID_NAMES)}, "
            "version = version + 1, updated_at = max(coalesce(updated_at, ''), ?) "
            "WHERE id = ? AND version = ?",
            [
                (*(r[n] for n in GRID_NAMES), stamp, r["id"], int(r["expected"]))
                for r in updates.to_dict("records")
            ],
        )
        self._insert(conn, CASE_HISTORY, steps)
        LOGGER.info("%d cases moved to their new grids", len(updates))

    @staticmethod
    def _widen_history_extent(
        conn: sqlite3.Connection, spec: LayerSpec, frame: gpd.GeoDataFrame
    ) -> None:
        table = spec.name + HISTORY_SUFFIX
        old = conn.execute(
            "SELECT min_x, min_y, max_x, max_y FROM gpkg_contents WHERE table_name = ?", (table,)
        ).fetchone()
        bounds = np.asarray(frame.total_bounds, dtype=float)
        if old is not None and None not in old:
            bounds = np.where(np.isfinite(bounds), bounds, old)
            bounds = np.r_[np.minimum(bounds[:2], old[:2]), np.maximum(bounds[2:], old[2:])]
        gpkg.touch(conn, table, bounds)

    def _versions(self, conn: sqlite3.Connection, name: str) -> list[LayerVersion]:
        frame = self._select(conn, LAYER_VERSIONS, q("version"), [f"{q('layer')} = ?"], [name])
        return [
            LayerVersion(
                layer=r["layer"],
                version=int(r["version"]),
                created_at=r["created_at"],
                actor=r["actor"],
                source=r["source"],
                rows=int(r["rows"]),
                note=r["note"] or "",
                report=json.loads(r["report"]) if r["report"] else None,
                current=bool(r["current"]),
            )
            for r in frame.to_dict("records")
        ]

    def layer_versions(self, name: str) -> list[LayerVersion]:
        declared.get_layer(name)
        with self._snapshot() as conn:
            return self._versions(conn, name)

    def current_versions(self, names: Sequence[str]) -> dict[str, tuple[int, str] | None]:
        """Return ``{name: (version, created_at text)}`` of the current versions, in one SELECT.

        Read on this thread's connection without decoding whole version records (what
        :meth:`layer_versions` does, ~10 ms): the planner queries ask on every call.
        """
        names = list(dict.fromkeys(names))
        for name in names:
            declared.get_layer(name)
        if not names:
            return {}
        return self._current_stamps(self._conn(), names)

    @staticmethod
    def _current_stamps(conn: sqlite3.Connection, names: list[str]
                        ) -> dict[str, tuple[int, str] | None]:
        marks = ", ".join("?" for _ in names)
        rows = conn.execute(
            f"SELECT {q('layer')}, {q('version')}, {q('created_at')} FROM {q(LAYER_VERSIONS.name)} "
            f"WHERE {q('current')} AND {q('layer')} IN ({marks})",
            names,
        ).fetchall()
        return current_stamps(rows, names)

    def _missing_version(self, name: str, version: int, versions: list[LayerVersion]) -> None:
        raise NotFoundError(
            f"layer {name!r} has no version {version}; its versions are "
            f"{[v.version for v in versions]} (see scripts/load_layer.py --list or "
            "store.layer_versions)"
        )

    def read_layer(self, name: str, version: int | None = None) -> gpd.GeoDataFrame | pd.DataFrame:
        spec = declared.get_layer(name)
        geometry = spec.geometry_type is not None
        with self._snapshot() as conn:
            versions = self._versions(conn, name)
            if not versions:
                raise LayerNotFoundError(
                    f"layer {name!r} has not been loaded into {self.path} yet; load it with "
                    f"`python scripts/load_layer.py {name} FILE`"
                )
            order = f"{q(spec.id_field)}, {FID}"
            if version is None:
                rows = conn.execute(
                    f"SELECT {self._layer_select(spec)} FROM {q(spec.name)} ORDER BY {order}"
                ).fetchall()
            else:
                version = int(version)
                if version not in {v.version for v in versions}:
                    self._missing_version(name, version, versions)
                rows = conn.execute(
                    f"SELECT {self._layer_select(spec)} FROM {q(spec.name + HISTORY_SUFFIX)} "
                    f"WHERE {VERSION_COLUMN} = ? ORDER BY {order}",
                    (version,),
                ).fetchall()
        return _decode(spec.all_columns, rows, geometry=geometry)

    def set_current_version(self, name: str, version: int, *, actor: str) -> LayerVersion:
        spec = declared.get_layer(name)
        version = int(version)
        with self._transaction() as conn:
            versions = self._versions(conn, name)
            if version not in {v.version for v in versions}:
                self._missing_version(name, version, versions)
            previous = next((v.version for v in versions if v.current), None)
            self._ensure_layer_tables(conn, spec)
            self._make_current(conn, spec, version)
            chosen = next(v for v in self._versions(conn, name) if v.version == version)
            self._audit(conn, actor, "layer.rollback", f"layer:{name}",
                        layer_audit(chosen, previous=previous))
        LOGGER.info("%s made version %d of layer %s current", actor, version, name)
        return chosen

    def purge_layer_versions(self, name: str, before_version: int, *, actor: str) -> list[int]:
        spec = declared.get_layer(name)
        with self._transaction() as conn:
            gone = purge_plan(self._versions(conn, name), before_version)
            if not gone:
                return []
            marks = ", ".join("?" for _ in gone)
            rows = 0
            if _table_columns(conn, spec.name + HISTORY_SUFFIX):
                rows = conn.execute(
                    f"DELETE FROM {q(spec.name + HISTORY_SUFFIX)} "
                    f"WHERE {VERSION_COLUMN} IN ({marks})",
                    gone,
                ).rowcount
            conn.execute(
                f"DELETE FROM {q(LAYER_VERSIONS.name)} WHERE {q('layer')} = ? "
                f"AND {q('version')} IN ({marks}) AND NOT {q('current')}",
                [name, *gone],
            )
            self._audit(conn, actor, "layer.purge", f"layer:{name}",
                        {"layer": name, "versions": gone, "rows": rows})
        LOGGER.info("%s purged versions %s of layer %s (%d rows)", actor, gone, name, rows)
        return gone

    # -- events -----------------------------------------------------------------------------------

    def prepare_events(self, events: pd.DataFrame) -> PreparedEvents:
        table = coerce_table(EVENTS, events)
        return PreparedEvents(checked_events(table.astype({"received_at": "datetime64[ns, UTC]"})))

    def append_events(self, events: pd.DataFrame | PreparedEvents) -> int:
        if not isinstance(events, PreparedEvents):
            events = self.prepare_events(events)
        table = events.frame
        with self._transaction() as conn:
            before = conn.total_changes
            self._insert(conn, EVENTS, table, or_ignore=True)
            added = conn.total_changes - before
        LOGGER.debug("stored %d of %d events", added, len(table))
        return added

    def read_events(
        self,
        start: datetime | None = None,
        end: datetime | None = None,
        *,
        bbox: BBox | None = None,
        grid_code: str | None = None,
        kind: str | None = None,
    ) -> gpd.GeoDataFrame:
        clauses: list[str] = []
        params: list[Any] = []
        if start is not None:
            clauses.append("observed_at >= ?")
            params.append(_sql_time(start))
        if end is not None:
            clauses.append("observed_at < ?")
            params.append(_sql_time(end))
        if bbox is not None:
            min_lon, min_lat, max_lon, max_lat = (float(b) for b in bbox)
            clauses.append("lon >= ? AND lon <= ? AND lat >= ? AND lat <= ?")
            params += [min_lon, max_lon, min_lat, max_lat]
        if grid_code is not None:
            clauses.append("grid_code = ?")
            params.append(grid_code)
        if kind is not None:
            clauses.append("kind = ?")
            params.append(kind)
        with self._snapshot() as conn:
            frame = self._select(conn, EVENTS, "observed_at, id", clauses, params)
        return with_points(frame)

    # -- cases ------------------------------------------------------------------------------------

    def _steps(self, case_id: str, version: int, history: dict[str, Any]) -> pd.DataFrame:
        step = {**history, "case_id": case_id, "version": version}
        step.setdefault("at", _now())
        return coerce_table(CASE_HISTORY, pd.DataFrame([step]))

    def _get_case(self, conn: sqlite3.Connection, case_id: str) -> dict[str, Any]:
        # one keyed row through the UNIQUE index, converted value by value (no frame)
        row = conn.execute(
            f"SELECT {', '.join(q(c.name) for c in CASES.columns)} FROM {q(CASES.name)} "
            "WHERE id = ?",
            (case_id,),
        ).fetchone()
        if row is None:
            raise NotFoundError(
                f"no case {case_id!r} in the store; check the id (read_cases lists the cases)"
            )
        return {c.name: _stored_value(v, c.dtype) for c, v in zip(CASES.columns, row, strict=True)}

    def create_case(
        self, case: dict[str, Any], *, history: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        record = {**case, "version": 1}
        record.setdefault("updated_at", _now())
        frame = coerce_table(CASES, pd.DataFrame([record]))
        case_id = frame.loc[0, "id"]
        if case_id is None:
            raise ValidationError("a case needs an id; give one (the cases module makes them)")
        steps = None if history is None else self._steps(case_id, 1, history)
        with self._transaction() as conn:
            if conn.execute(f"SELECT 1 FROM {q(CASES.name)} WHERE id = ?", (case_id,)).fetchone():
                raise DuplicateIdError(
                    f"case {case_id!r} exists already; change it with update_case or give the "
                    "new case another id"
                )
            self._insert(conn, CASES, frame)
            if steps is not None:
                self._insert(conn, CASE_HISTORY, steps)
            return self._get_case(conn, case_id)

    def update_case(
        self,
        case_id: str,
        changes: dict[str, Any],
        *,
        expected_version: int,
        history: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        unknown = sorted(k for k in changes if k not in _CASE_COLUMNS)
        fixed = sorted(k for k in changes if k in _FIXED_CASE_FIELDS)
        problems = []
        if unknown:
            problems.append(f"cases have no fields {unknown}")
        if fixed:
            problems.append(
                f"{fixed} cannot be changed: the store keeps the id and counts the "
                "version itself (pass expected_version)"
            )
        if problems:
            allowed = [n for n in _CASE_COLUMNS if n not in _FIXED_CASE_FIELDS]
            raise ValidationError("; ".join(problems) + f". Fields that can change: {allowed}.")
        values = {**changes}
        values.setdefault("updated_at", _now())
        bound = {
            k: gpkg.to_sql_values(
                coerce_series(pd.Series([v], dtype=object), _CASE_COLUMNS[k]),
                _CASE_COLUMNS[k].dtype,
            )[0]
            for k, v in values.items()
        }
        expected_version = int(expected_version)
        steps = None if history is None else self._steps(case_id, expected_version + 1, history)
        sets = ", ".join(f"{q(k)} = ?" for k in bound)
        with self._transaction() as conn:
            cursor = conn.execute(
                f"UPDATE {q(CASES.name)} SET {sets}, version = version + 1 "
                "WHERE id = ? AND version = ?",
                (*bound.values(), case_id, expected_version),
            )
            if cursor.rowcount == 0:
                row = conn.execute(
                    f"SELECT version FROM {q(CASES.name)} WHERE id = ?", (case_id,)
                ).fetchone()
                if row is None:
                    raise NotFoundError(
                        f"no case {case_id!r} in the store; check the id "
                        "(read_cases lists the cases)"
                    )
                raise StaleUpdateError(
                    f"case {case_id} was changed by someone else (now version {row[0]}, you had "
                    f"{expected_version}); reload it and try again"
                )
            if steps is not None:
                self._insert(conn, CASE_HISTORY, steps)
            return self._get_case(conn, case_id)

    def get_case(self, case_id: str) -> dict[str, Any]:
        with self._snapshot() as conn:
            return self._get_case(conn, case_id)

    def case_history(self, case_id: str) -> pd.DataFrame:
        with self._snapshot() as conn:
            return self._select(conn, CASE_HISTORY, "version", ["case_id = ?"], [case_id])

    def read_cases(
        self,
        *,
        status: str | None = None,
        grid_code: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        columns: Sequence[str] | None = None,
    ) -> gpd.GeoDataFrame | pd.DataFrame:
        equals = {"status": status, "grid_code": grid_code}
        if columns is not None:
            return self._read_case_columns(columns, equals, since, until)
        clauses: list[str] = []
        params: list[Any] = []
        for name, value in equals.items():
            if value is not None:
                clauses.append(f"{q(name)} = ?")
                params.append(value)
        for bound, op in ((since, ">="), (until, "<")):
            if bound is not None:
                clauses.append(f"requested_at {op} ?")
                params.append(_sql_time(bound))
        with self._snapshot() as conn:
            frame = self._select(conn, CASES, "id", clauses, params)
        return with_points(frame)

    def _read_case_columns(
        self,
        columns: Sequence[str],
        equals: dict[str, str | None],
        since: datetime | None,
        until: datetime | None,
    ) -> pd.DataFrame | gpd.GeoDataFrame:
        """Only the asked columns, in one SELECT, decoded column by column (no per-row Python).

        (GDAL's Arrow reader would be faster, but it links its own SQLite: two SQLite copies on
        one file in one process break each other's POSIX locks, and it read stale data here.)
        """
        wanted, points = case_columns(columns)
        fetched = list(wanted)
        if points:
            fetched += [c for c in (_CASE_COLUMNS["lon"], _CASE_COLUMNS["lat"]) if c not in wanted]
        clauses: list[str] = []
        params: list[Any] = []
        for name, value in equals.items():
            if value is not None:
                clauses.append(f"{q(name)} = ?")
                params.append(value)
        for bound, op in ((since, ">="), (until, "<")):
            if bound is not None:
                clauses.append(f"requested_at {op} ?")
                params.append(_sql_time(bound))
        where = f" WHERE {' AND '.join(clauses)}" if clauses else ""
        select = ", ".join(q(c.name) for c in fetched) or "id"
        with self._snapshot() as conn:
            rows = conn.execute(
                f"SELECT {select} FROM {q(CASES.name)}{where} ORDER BY id", tuple(params)
            ).fetchall()
        frame = _decode_columns(fetched, rows)
        if not points:
            return frame[[c.name for c in wanted]]
        out = with_points(frame)
        return out[[*(c.name for c in wanted), "geometry"]]

    def case_counts(
        self,
        components: dict[str, str] | Sequence[str] | None = None,
        *,
        by: Sequence[str] = (),
        period: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        as_of: datetime | None = None,
    ) -> pd.DataFrame:
        """Count cases per slice and period (see :meth:`Store.case_counts`).

        Months that the rollup holds (:mod:`twin.store.rollup`) are summed from it; the rest is
        ONE ``GROUP BY`` over the cases, in the same read transaction (one snapshot). Times are
        fixed-width ISO 8601 UTC text here, so comparing the text compares the times.
        """
        with self._snapshot() as conn:

            def span(where: str, params: dict[str, Any]) -> tuple[Any, Any]:
                return conn.execute(
                    f"SELECT min(filed_at), max(filed_at) FROM {q(CASES.name)} WHERE {where}",
                    params,
                ).fetchone()

            def grouped(lo: Any, hi: Any) -> pd.DataFrame:
                query = plan_case_counts(
                    components, by, period, lo, hi, as_of, span=span, table=CASES.name,
                    quote=q, fence=_FENCE, time=_sql_time,
                )
                rows = [] if query is None else conn.execute(query.sql, query.params).fetchall()
                return count_frame(query, rows, by=by, components=components, period=period)

            def from_rollup(plan: rollup.RollupSplit) -> pd.DataFrame:
                query = rollup.read_query(plan, quote=q, key=rollup.sqlite_value)
                return rollup.finish(query, _packed_counts(conn, query), plan, components)

            return rollup.counts(
                components, by, period, since, until, as_of,
                from_rollup=from_rollup if self._rollup_covers(conn) else None, grouped=grouped,
            )

    @staticmethod
    def _rollup_covers(conn: sqlite3.Connection) -> bool:
        """Whether every filed case is inside the rollup's calendar (two index look-ups).

        (min and max in one SELECT would scan the index: SQLite optimises a lone min or max.)
        """
        first = conn.execute(f"SELECT min(filed_at) FROM {q(CASES.name)}").fetchone()[0]
        if first is None:
            return True
        last = conn.execute(f"SELECT max(filed_at) FROM {q(CASES.name)}").fetchone()[0]
        low, high = gpkg.format_datetimes(pd.Series(rollup.calendar_bounds())).tolist()
        return low <= first and last < high

    # -- audit ------------------------------------------------------------------------------------

    def append_audit(
        self,
        actor: str,
        action: str,
        target: str,
        detail: dict[str, Any] | None = None,
        origin: str = "",
    ) -> dict[str, Any]:
        with self._transaction() as conn:
            row = self._audit(conn, actor, action, target, detail, origin)
        audit_anchor.anchor_row(self, row)  # after the commit: the head never runs ahead
        return row

    def _audit(
        self,
        conn: sqlite3.Connection,
        actor: str,
        action: str,
        target: str,
        detail: dict[str, Any] | None = None,
        origin: str = "",
    ) -> dict[str, Any]:
        """Append one audit row inside the caller's write transaction (which serialises it)."""
        detail_column = next(c for c in AUDIT.columns if c.name == "detail")
        detail_text = coerce_series(pd.Series([detail], dtype=object), detail_column)[0]
        last = conn.execute(
            f"SELECT seq, hash FROM {q(AUDIT.name)} ORDER BY seq DESC LIMIT 1"
        ).fetchone()
        seq, prev = audit_anchor.next_link(self, last)  # never a seq used before, even if deleted
        row = {
            "seq": seq,
            "at": _now(),
            "actor": actor,
            "action": action,
            "target": target,
            "detail": detail_text,
            "origin": origin,
            "prev_hash": prev,
        }
        row["hash"] = audit_hash(prev, row)
        EmbeddedStore._insert(conn, AUDIT, coerce_table(AUDIT, pd.DataFrame([row])))
        return row

    def read_audit(self, since: int | None = None) -> pd.DataFrame:
        with self._snapshot() as conn:
            if since is None:
                return self._select(conn, AUDIT, "seq")
            return self._select(conn, AUDIT, "seq", ["seq >= ?"], [int(since)])
