"""The embedded store: a GeoPackage file written with sqlite3, that QGIS and GDAL open directly."""

from __future__ import annotations

import contextlib
import logging
import sqlite3
import threading
import weakref
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import geopandas as gpd
import numpy as np
import pandas as pd

from twin.errors import ConfigError, StoreUnavailableError
from twin.schema import (
    CASE_DATA_COLUMNS,
    CASES,
    CRS,
    EVENTS,
    TABLES,
    Column,
    LayerSpec,
    TableSpec,
    coerce_table,
)
from twin.store import gpkg, rollup
from twin.store.base import (
    LayerVersion,
    PreparedEvents,
    checked_events,
    count_columns,
    page_features,
    read_csv_columns,
    typed_columns,
)
from twin.store.dialect import (
    HISTORY_SUFFIX,
    SQLITE,
    VERSION_COLUMN,
    format_datetimes,
    quote,
    to_sql_values,
)
from twin.store.sql import SQLStore
from twin.timeutil import local_zone, to_utc

LOGGER = logging.getLogger(__name__)

CACHE_KIB = 256 * 1024  # page cache per connection (SQLite allocates it as it is used)
BUSY_TIMEOUT_S = 30.0  # how long a writer waits for another writer before giving up
GEOMETRY_COLUMN = "geom"
FID = "fid"
_CASE_COLUMNS = {c.name: c for c in CASES.columns}

q = quote


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
    raw = typed_columns(rows, columns, extra=[GEOMETRY_COLUMN] if geometry else [],
                        stored_json=canonical_json)
    out = pd.DataFrame({c.name: raw[c.name] for c in columns}, index=pd.RangeIndex(len(rows)))
    if not geometry:
        return out
    geoms = gpkg.decode_geometries(raw[GEOMETRY_COLUMN].tolist())
    return gpd.GeoDataFrame(out, geometry=geoms, crs=CRS)


def _plain(columns: Sequence[Column], rows: list[tuple]) -> gpd.GeoDataFrame:
    """Return rows of a page of features as stored (not coerced: a page is for serving)."""
    names = [c.name for c in columns]
    # object columns as fetched: inferring pandas' string dtype would cost more than the read
    raw = pd.DataFrame(rows, columns=[*names, GEOMETRY_COLUMN], dtype=object)
    geoms = gpkg.decode_geometries(raw[GEOMETRY_COLUMN].tolist())
    return gpd.GeoDataFrame(raw[names], geometry=geoms, crs=CRS)


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
        f"{q(c.name)} {SQLITE.types[c.dtype]}{' NOT NULL' if c.name in keys else ''}"
        for c in table.columns
    )
    # GeoPackage wants an INTEGER primary key on every table; the declared key is UNIQUE instead
    statements = [
        f"CREATE TABLE IF NOT EXISTS {q(table.name)} ({FID} INTEGER PRIMARY KEY AUTOINCREMENT "
        f"NOT NULL, {columns}, UNIQUE ({', '.join(q(k) for k in keys)}))"
    ]
    return statements + SQLITE.index_ddl(table)


def _table_columns(conn: sqlite3.Connection, table: str) -> list[str]:
    return [row[1] for row in conn.execute(f"PRAGMA table_info({q(table)})")]


def _add_missing_columns(
    conn: sqlite3.Connection, table: str, columns: Sequence[Column], existing: Sequence[str]
) -> None:
    # a column declared after the table was made: old rows read it as empty
    for c in columns:
        if c.name not in existing:
            LOGGER.info("adding column %s to %s", c.name, table)
            conn.execute(f"ALTER TABLE {q(table)} ADD COLUMN {q(c.name)} {SQLITE.types[c.dtype]}")


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
    """Return the column's type for gpkg_geometry_columns: the declared one (POINT …).

    A layer that declares more than one kind (parking: areas and points) holds both in one
    column, which the standard calls GEOMETRY; GDAL warns on a POLYGON column holding points.
    """
    return "GEOMETRY" if spec.also_geometry_types else spec.geometry_type.upper()


def _listed(spec: LayerSpec) -> bool:
    """Whether a layer is entered in gpkg_contents, so that GIS programs list it.

    Map layers are; a layer without geometry is a list of people (residents) and is not,
    like the store's own tables (users, cases, audit …): see docs/loading.md.
    """
    return spec.geometry_type is not None


ABOUT_TABLE = "gridtwin_about"
ABOUT_ROWS = (
    ("what", "GridTwin store: the map layers (current version) and every version (__history)."),
    ("sharing", "Do not send this file: it is the twin's database. For someone else, write "
                "`gridtwin export gpkg --user NAME out.gpkg`: only what that user may see."),
    ("index", "Every layer has the standard GeoPackage rtree spatial index."),
)


def _write_about(conn: sqlite3.Connection) -> None:
    """Write a small attributes table saying what the file is (listed; nothing private).

    GDAL lists every table of a GeoPackage, registered or not, unless gpkg_contents names at
    least one attributes table: this one keeps the store's own tables off the layer list.
    """
    conn.execute(
        f"CREATE TABLE IF NOT EXISTS {ABOUT_TABLE} ({FID} INTEGER PRIMARY KEY AUTOINCREMENT "
        "NOT NULL, key TEXT NOT NULL UNIQUE, value TEXT)"
    )
    conn.executemany(
        f"INSERT INTO {ABOUT_TABLE} (key, value) VALUES (?, ?) "
        "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
        ABOUT_ROWS,
    )
    gpkg.register_table(conn, ABOUT_TABLE, description="GridTwin: what this file is")


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


@contextlib.contextmanager
def _bulk(
    conn: sqlite3.Connection, table: str, spec: LayerSpec, *, replace: bool = False
) -> Iterator[None]:
    """Write many rows of a layer table with its spatial index kept in one bulk step.

    The standard triggers would call five SQL functions per row; instead the rtree triggers
    are set aside for the inserts (inside the caller's transaction: no other connection sees
    the table without them) and the new rows' envelopes entered at once, vectorised. With
    *replace* the table is emptied by the block, and its index with it.
    """
    if spec.geometry_type is None or not gpkg.has_spatial_index(conn, table, GEOMETRY_COLUMN):
        yield
        return
    triggers = gpkg.set_aside_triggers(conn, table, GEOMETRY_COLUMN)
    before = conn.execute(f"SELECT coalesce(max({FID}), 0) FROM {q(table)}").fetchone()[0]
    if replace:
        conn.execute(f"DELETE FROM {q(gpkg.rtree_name(table, GEOMETRY_COLUMN))}")
        before = 0
    yield
    gpkg.fill_spatial_index(conn, table, GEOMETRY_COLUMN, FID, where=f"{FID} > ?",
                            params=(before,))
    for statement in triggers:
        conn.execute(statement)


class EmbeddedStore(SQLStore):
    """A GeoPackage 1.3 file holding the twin's layers (every version), events, cases and audit.

    Each layer ``<name>`` is a GeoPackage table holding its current version — what QGIS and GDAL
    show — and ``<name>__history`` keeps the rows of every version with a ``_version`` column.
    Every write is one SQLite transaction (``BEGIN IMMEDIATE``), so a failed write leaves the
    file as it was and two processes writing the same file take turns. Spatial filtering is done
    in memory (no SpatiaLite). Every layer table carries the standard GeoPackage rtree
    spatial index, kept by the standard triggers (whose SQL functions every connection of the
    store registers, :func:`twin.store.gpkg.register_functions`), so QGIS and GDAL use it and
    may edit the file.

    Parameters
    ----------
    url
        A file path, ``file://PATH`` or ``gpkg://PATH``. The file is created if missing.

    Raises
    ------
    ConfigError
        If the folder does not exist or the file is not a GeoPackage.
    """

    dialect = SQLITE

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
            # the standard rtree triggers (ours, or GDAL's after QGIS edited the file) call them
            gpkg.register_functions(conn)
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
    def _write(self) -> Iterator[sqlite3.Connection]:
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
    def _read(
        self, *, repeatable: bool = False, single: bool = False
    ) -> Iterator[sqlite3.Connection]:
        """Run a read transaction: every query inside sees the same committed state.

        (Every SQLite read transaction is repeatable; one statement needs none around it.)
        """
        conn = self._conn()
        if single:
            yield conn
            return
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
        self._rollup_zone = local_zone()  # _is_complete or the build below makes it current
        if self._is_complete(conn):
            return
        with self._write() as conn:
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
                gpkg.unregister_table(conn, table.name)  # private: not a layer (older files)
            _write_about(conn)
            self._index_layers(conn)
            if not self._rollup_current(conn):
                self._build_case_rollup(conn)
        # GDAL checks application_id in the main file's header, which WAL only updates at a
        # checkpoint: make it one now so a fresh file is a GeoPackage to GDAL at once
        self._conn().execute("PRAGMA wal_checkpoint(TRUNCATE)")

    def _is_complete(self, conn: sqlite3.Connection) -> bool:
        if not gpkg.is_geopackage(conn):
            return False
        listed = dict(conn.execute("SELECT table_name, data_type FROM gpkg_contents").fetchall())
        if ABOUT_TABLE not in listed or any(t.name in listed for t in TABLES):
            return False  # a file from before: its private tables were listed
        if any(
            not gpkg.has_spatial_index(conn, table, column)
            for table, column in conn.execute(
                "SELECT table_name, column_name FROM gpkg_geometry_columns"
            ).fetchall()
        ):
            return False
        if any(name in listed for name in self._unlisted_layers()):
            return False
        indexes = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='index'")}
        for table in TABLES:
            existing = set(_table_columns(conn, table.name))
            if not existing or any(c.name not in existing for c in table.columns):
                return False
            names = SQLITE.indexes.get(table.name, ())
            if any(SQLITE.index_name(table.name, c) not in indexes for c in names):
                return False  # a file made before an index was declared: create it on open
        return self._rollup_current(conn)

    @staticmethod
    def _unlisted_layers() -> list[str]:
        from twin import layers

        specs = [layers.get_layer(n) for n in layers.names()]
        return [t for s in specs if not _listed(s) for t in (s.name, s.name + HISTORY_SUFFIX)]

    def _index_layers(self, conn: sqlite3.Connection) -> None:
        """Unlist private layers; give every listed feature table its spatial index (old files)."""
        for name in self._unlisted_layers():
            gpkg.unregister_table(conn, name)
        for table, column in conn.execute(
            "SELECT table_name, column_name FROM gpkg_geometry_columns"
        ).fetchall():
            if _table_columns(conn, table):
                gpkg.create_spatial_index(conn, table, column, FID)

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
        for statement, rows in rollup.sqlite_statements(CASES.name, format_datetimes):
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

    def watermark(self) -> tuple:
        """Return the size and modification time of the file and its write-ahead log.

        Every commit changes one of them (a write lands in the log first, a checkpoint moves it
        into the file), so equal tokens mean nothing was written in between.
        """
        stamp = []
        for file in (self.path, self.path.with_name(self.path.name + "-wal")):
            try:
                info = file.stat()
            except OSError:
                stamp.append(None)
            else:
                stamp.append((info.st_size, info.st_mtime_ns))
        return tuple(stamp)

    # -- statements ---------------------------------------------------------------------------

    @staticmethod
    def _rows(conn: sqlite3.Connection, sql: str, params: Mapping[str, Any] | None = None
              ) -> list[tuple]:
        return conn.execute(sql, params or {}).fetchall()

    @staticmethod
    def _execute(
        conn: sqlite3.Connection, sql: str,
        params: Mapping[str, Any] | Sequence[Mapping] | None = None,
    ) -> int:
        if isinstance(params, list):
            return conn.executemany(sql, params).rowcount
        return conn.execute(sql, params or {}).rowcount

    @staticmethod
    def _frame(columns: Sequence[Column], rows: list[tuple]) -> pd.DataFrame:
        return _decode(columns, rows, canonical_json=True)

    @staticmethod
    def _insert_rows(
        conn: sqlite3.Connection, table: TableSpec, rows: list[tuple], conflict: str = ""
    ) -> int:
        names = ", ".join(q(c.name) for c in table.columns)
        marks = ", ".join("?" for _ in table.columns)
        return conn.executemany(
            f"INSERT INTO {q(table.name)} ({names}) VALUES ({marks}){conflict}", rows
        ).rowcount

    def _put_rows(self, table: TableSpec, rows: pd.DataFrame, conflict: str) -> int:
        with self._write() as conn:
            if table is CASES:
                self._pause_case_rollup(
                    conn, rows["id"].tolist(), "update" if "DO UPDATE" in conflict else "ignore"
                )
            before = conn.total_changes
            self._insert(conn, table, rows, conflict)
            written = conn.total_changes - before
            if table is CASES:
                self._resume_case_rollup(conn)  # after counting: its changes are not rows
        return written

    # -- layers: a GeoPackage table of the current version, and one of every version --------

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
                gpkg.drop_spatial_index(conn, table, GEOMETRY_COLUMN)
                gpkg.unregister_table(conn, table)  # the type may have changed too
                conn.execute(f"DROP TABLE {q(table)}")
                existing = []
            if existing:
                _add_missing_columns(conn, table, spec.all_columns, existing)
            else:
                columns = [f"{FID} INTEGER PRIMARY KEY AUTOINCREMENT NOT NULL"]
                if geometry:
                    columns.append(f"{q(GEOMETRY_COLUMN)} {_geometry_type_name(spec)}")
                columns += [
                    f"{q(c.name)} {SQLITE.types[c.dtype]}"
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
            if not _listed(spec):
                gpkg.unregister_table(conn, table)
                continue
            gpkg.register_table(
                conn,
                table,
                description=description + (" (every version)" if history else ""),
                geometry_type=_geometry_type_name(spec) if geometry else None,
                geometry_column=GEOMETRY_COLUMN,
            )
            if geometry:
                gpkg.create_spatial_index(conn, table, GEOMETRY_COLUMN, FID)

    @staticmethod
    def _current_columns(spec: LayerSpec) -> list[str]:
        geometry = [GEOMETRY_COLUMN] if spec.geometry_type is not None else []
        return [FID, *geometry, *spec.column_names]

    @staticmethod
    def _layer_select(spec: LayerSpec, columns: Sequence[Column] | None = None) -> str:
        names = [q(c.name) for c in (spec.all_columns if columns is None else columns)]
        if spec.geometry_type is not None:
            names.append(q(GEOMETRY_COLUMN))
        return ", ".join(names)

    def _write_rows(
        self, conn: sqlite3.Connection, spec: LayerSpec, frame: pd.DataFrame, version: int
    ) -> None:
        """Write the GeoPackage rows of a version into ``<name>__history``; widen its extent."""
        values = [to_sql_values(frame[c.name], c.dtype) for c in spec.all_columns]
        names = [q(n) for n in spec.column_names]
        if spec.geometry_type is not None:
            values.append(gpkg.encode_geometries(frame.geometry.values))
            names.append(q(GEOMETRY_COLUMN))
        values.append([version] * len(frame))
        names.append(VERSION_COLUMN)
        history = spec.name + HISTORY_SUFFIX
        with _bulk(conn, history, spec):
            conn.executemany(
                f"INSERT INTO {q(history)} ({', '.join(names)}) "
                f"VALUES ({', '.join('?' for _ in names)})",
                list(zip(*values, strict=True)),
            )
        if spec.geometry_type is not None:
            self._widen_history_extent(conn, spec, frame)

    def _show_version(self, conn: sqlite3.Connection, spec: LayerSpec, version: int) -> None:
        """Replace the current table's rows with those of *version*; update the extent."""
        columns = self._layer_select(spec)
        current, history = q(spec.name), q(spec.name + HISTORY_SUFFIX)
        with _bulk(conn, spec.name, spec, replace=True):
            conn.execute(f"DELETE FROM {current}")
            conn.execute(
                f"INSERT INTO {current} ({columns}) SELECT {columns} FROM {history} "
                f"WHERE {VERSION_COLUMN} = ? ORDER BY {q(spec.id_field)}",
                (version,),
            )
        bounds = None
        if spec.geometry_type is not None:
            blobs = [row[0] for row in conn.execute(f"SELECT {q(GEOMETRY_COLUMN)} FROM {current}")]
            env = gpkg.envelopes(blobs)  # from the blobs' headers: no WKB parsed
            if len(env) and np.isfinite(env).any():
                bounds = (np.nanmin(env[:, 0]), np.nanmin(env[:, 2]), np.nanmax(env[:, 1]),
                          np.nanmax(env[:, 3]))
        gpkg.touch(conn, spec.name, bounds)

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

    def _drop_versions(
        self, conn: sqlite3.Connection, spec: LayerSpec, gone: list[int],
        versions: list[LayerVersion],
    ) -> int:
        if not _table_columns(conn, spec.name + HISTORY_SUFFIX):
            return 0
        return conn.execute(
            f"DELETE FROM {q(spec.name + HISTORY_SUFFIX)} "
            f"WHERE {VERSION_COLUMN} IN ({', '.join('?' for _ in gone)})",
            gone,
        ).rowcount

    def _layer_rows(
        self, conn: sqlite3.Connection, spec: LayerSpec, version: int, *, current: bool,
        columns: Sequence[Column] | None = None,
    ) -> gpd.GeoDataFrame | pd.DataFrame:
        order = f"{q(spec.id_field)}, {FID}"
        columns = spec.all_columns if columns is None else columns
        select = self._layer_select(spec, columns)
        if current:
            rows = conn.execute(
                f"SELECT {select} FROM {q(spec.name)} ORDER BY {order}"
            ).fetchall()
        else:
            rows = conn.execute(
                f"SELECT {select} FROM {q(spec.name + HISTORY_SUFFIX)} "
                f"WHERE {VERSION_COLUMN} = ? ORDER BY {order}",
                (version,),
            ).fetchall()
        return _decode(columns, rows, geometry=spec.geometry_type is not None)

    def _feature_page(
        self, conn: sqlite3.Connection, spec: LayerSpec, version: int, current: bool,
        bbox: tuple[float, float, float, float] | None, equals: dict[str, Any],
        limit: int | None, offset: int,
    ) -> tuple[gpd.GeoDataFrame | pd.DataFrame, int]:
        """One page: the current table's rtree finds the candidates of *bbox*, SQL the equals.

        Values come as stored (:func:`_plain`). The rtree holds envelopes: the candidates are
        checked exactly with shapely before the page is cut. A past version (no rtree of its
        own) is read whole and filtered.
        """
        if not current or spec.geometry_type is None or not gpkg.has_spatial_index(
                conn, spec.name, GEOMETRY_COLUMN):
            return super()._feature_page(conn, spec, version, current, bbox, equals, limit,
                                         offset)
        clauses, params = [], {}
        for i, (column, value) in enumerate(equals.items()):
            clauses.append(f"{q(column)} = :e{i}")
            params[f"e{i}"] = value
        if bbox is not None:
            clauses.append(
                f"{FID} IN (SELECT id FROM {q(gpkg.rtree_name(spec.name, GEOMETRY_COLUMN))} "
                "WHERE maxx >= :x0 AND minx <= :x1 AND maxy >= :y0 AND miny <= :y1)")
            params.update(zip(("x0", "y0", "x1", "y1"), map(float, bbox), strict=True))
        where = f" WHERE {' AND '.join(clauses)}" if clauses else ""
        select = (f"SELECT {self._layer_select(spec)} FROM {q(spec.name)}{where} "
                  f"ORDER BY {q(spec.id_field)}, {FID}")
        if bbox is None:  # no exact check to make: the page and the count in SQL
            matched = conn.execute(f"SELECT count(*) FROM {q(spec.name)}{where}",
                                   params).fetchone()[0]
            rows = conn.execute(f"{select} LIMIT :lim OFFSET :off",
                                {**params, "lim": -1 if limit is None else limit,
                                 "off": offset}).fetchall()
            return _plain(spec.all_columns, rows), int(matched)
        frame = _plain(spec.all_columns, conn.execute(select, params).fetchall())
        return page_features(frame, spec.name, bbox=bbox, limit=limit, offset=offset)

    # -- events -----------------------------------------------------------------------------------

    def prepare_events(self, events: pd.DataFrame) -> PreparedEvents:
        table = coerce_table(EVENTS, events)
        return PreparedEvents(checked_events(table.astype({"received_at": "datetime64[ns, UTC]"})))

    def event_months(self, before: Any) -> dict[pd.Timestamp, int]:
        # times are ISO text (UTC, "…Z"): the month is the first seven characters
        with self._read() as conn:
            rows = self._rows(
                conn,
                f"SELECT substr(observed_at, 1, 7), count(*) FROM {quote(EVENTS.name)} "
                "WHERE observed_at < :before GROUP BY 1 ORDER BY 1",
                {"before": self.dialect.time(to_utc(before))},
            )
        return {pd.Timestamp(f"{month}-01", tz="UTC"): int(n) for month, n in rows if month}

    def append_events(self, events: pd.DataFrame | PreparedEvents) -> int:
        if not isinstance(events, PreparedEvents):
            events = self.prepare_events(events)
        table = events.frame
        with self._write() as conn:
            before = conn.total_changes
            self._insert(conn, EVENTS, table, " ON CONFLICT DO NOTHING")
            added = conn.total_changes - before
        LOGGER.debug("stored %d of %d events", added, len(table))
        return added

    # -- cases ------------------------------------------------------------------------------------

    def _locked_cases(
        self, conn: sqlite3.Connection, ids: list[str], columns: list[Column]
    ) -> pd.DataFrame:
        """Read the cases (the IMMEDIATE write transaction has locked the whole file already)."""
        conn.execute("CREATE TEMP TABLE IF NOT EXISTS _regrid_ids (id TEXT PRIMARY KEY)")
        conn.execute("DELETE FROM _regrid_ids")
        conn.executemany("INSERT INTO _regrid_ids (id) VALUES (?)", [(i,) for i in ids])
        rows = conn.execute(
            f"SELECT {', '.join(q(c.name) for c in columns)} FROM {q(CASES.name)} "
            "WHERE id IN (SELECT id FROM _regrid_ids)"
        ).fetchall()
        conn.execute("DELETE FROM _regrid_ids")
        return _decode_columns(columns, rows)

    def _case_columns(
        self, conn: sqlite3.Connection, columns: list[Column], where: list[str],
        params: dict[str, Any],
    ) -> pd.DataFrame:
        """One SELECT, decoded column by column (no per-row Python).

        (GDAL's Arrow reader would be faster, but it links its own SQLite: two SQLite copies on
        one file in one process break each other's POSIX locks, and it read stale data here.)
        """
        where_sql = f" WHERE {' AND '.join(where)}" if where else ""
        select = ", ".join(q(c.name) for c in columns) or "id"
        rows = conn.execute(
            f"SELECT {select} FROM {q(CASES.name)}{where_sql} ORDER BY id", params
        ).fetchall()
        return _decode_columns(columns, rows)

    def _count_rows(self, conn: sqlite3.Connection, query: Any) -> pd.DataFrame | list[tuple]:
        """Run a count query (times are fixed-width UTC text here: text compares as time)."""
        if any(_CASE_COLUMNS[k].dtype != "text" for k in query.by):
            return conn.execute(query.sql, query.params).fetchall()
        return _packed_counts(conn, query)

    @staticmethod
    def _rollup_key(name: str) -> str:
        return rollup.sqlite_value(name)

    def _rollup_usable(self, conn: sqlite3.Connection) -> bool:
        """Whether every filed case is inside the rollup's calendar (two index look-ups).

        (min and max in one SELECT would scan the index: SQLite optimises a lone min or max.)
        """
        if not super()._rollup_usable(conn):
            return False
        first = conn.execute(f"SELECT min(filed_at) FROM {q(CASES.name)}").fetchone()[0]
        if first is None:
            return True
        last = conn.execute(f"SELECT max(filed_at) FROM {q(CASES.name)}").fetchone()[0]
        low, high = format_datetimes(pd.Series(rollup.calendar_bounds())).tolist()
        return low <= first and last < high
