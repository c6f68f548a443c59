"""GeoPackage 1.3 written with plain sqlite3: core tables and geometry blobs.

Its column types and value forms are the SQLite dialect's (:data:`twin.store.dialect.SQLITE`).
"""

from __future__ import annotations

import sqlite3
import struct
from collections.abc import Sequence
from typing import Any

import numpy as np
import shapely

APPLICATION_ID = 0x47504B47  # "GPKG"
USER_VERSION = 10300  # GeoPackage 1.3.0
SRS_ID = 4326

_WGS84_WKT = (
    'GEOGCS["WGS 84",DATUM["WGS_1984",SPHEROID["WGS 84",6378137,298.257223563,'
    'AUTHORITY["EPSG","7030"]],AUTHORITY["EPSG","6326"]],PRIMEM["Greenwich",0,'
    'AUTHORITY["EPSG","8901"]],UNIT["degree",0.0174532925199433,AUTHORITY["EPSG","9122"]],'
    'AXIS["Latitude",NORTH],AXIS["Longitude",EAST],AUTHORITY["EPSG","4326"]]'
)
SPATIAL_REF_SYS = (  # the three rows GeoPackage requires
    (
        "Undefined cartesian SRS",
        -1,
        "NONE",
        -1,
        "undefined",
        "undefined cartesian coordinate reference system",
    ),
    (
        "Undefined geographic SRS",
        0,
        "NONE",
        0,
        "undefined",
        "undefined geographic coordinate reference system",
    ),
    (
        "WGS 84 geodetic",
        4326,
        "EPSG",
        4326,
        _WGS84_WKT,
        "longitude/latitude coordinates in decimal degrees on the WGS 84 spheroid",
    ),
)

CORE_DDL = (
    """CREATE TABLE IF NOT EXISTS gpkg_spatial_ref_sys (
        srs_name TEXT NOT NULL,
        srs_id INTEGER NOT NULL PRIMARY KEY,
        organization TEXT NOT NULL,
        organization_coordsys_id INTEGER NOT NULL,
        definition TEXT NOT NULL,
        description TEXT)""",
    """CREATE TABLE IF NOT EXISTS gpkg_contents (
        table_name TEXT NOT NULL PRIMARY KEY,
        data_type TEXT NOT NULL,
        identifier TEXT UNIQUE,
        description TEXT DEFAULT '',
        last_change DATETIME NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ','now')),
        min_x DOUBLE, min_y DOUBLE, max_x DOUBLE, max_y DOUBLE,
        srs_id INTEGER,
        CONSTRAINT fk_gc_r_srs_id FOREIGN KEY (srs_id) REFERENCES gpkg_spatial_ref_sys(srs_id))""",
    """CREATE TABLE IF NOT EXISTS gpkg_geometry_columns (
        table_name TEXT NOT NULL,
        column_name TEXT NOT NULL,
        geometry_type_name TEXT NOT NULL,
        srs_id INTEGER NOT NULL,
        z TINYINT NOT NULL,
        m TINYINT NOT NULL,
        CONSTRAINT pk_geom_cols PRIMARY KEY (table_name, column_name),
        CONSTRAINT uk_gc_table_name UNIQUE (table_name),
        CONSTRAINT fk_gc_tn FOREIGN KEY (table_name) REFERENCES gpkg_contents(table_name),
        CONSTRAINT fk_gc_srs FOREIGN KEY (srs_id) REFERENCES gpkg_spatial_ref_sys (srs_id))""",
)

def is_geopackage(conn: sqlite3.Connection) -> bool:
    """Tell whether the file says it is a GeoPackage (application_id 'GPKG')."""
    return conn.execute("PRAGMA application_id").fetchone()[0] == APPLICATION_ID


def has_tables(conn: sqlite3.Connection) -> bool:
    """Tell whether the database holds any table at all."""
    return conn.execute("SELECT count(*) FROM sqlite_master WHERE type='table'").fetchone()[0] > 0


def initialise(conn: sqlite3.Connection) -> None:
    """Create the mandatory GeoPackage tables and SRS rows if missing; call inside a transaction."""
    conn.execute(f"PRAGMA application_id = {APPLICATION_ID}")
    conn.execute(f"PRAGMA user_version = {USER_VERSION}")
    for ddl in CORE_DDL:
        conn.execute(ddl)
    conn.executemany(
        "INSERT OR IGNORE INTO gpkg_spatial_ref_sys (srs_name, srs_id, organization, "
        "organization_coordsys_id, definition, description) VALUES (?, ?, ?, ?, ?, ?)",
        SPATIAL_REF_SYS,
    )


def register_table(
    conn: sqlite3.Connection,
    table: str,
    *,
    description: str = "",
    geometry_type: str | None = None,
    geometry_column: str = "geom",
) -> None:
    """Enter *table* in gpkg_contents (and gpkg_geometry_columns for features) if missing."""
    data_type = "attributes" if geometry_type is None else "features"
    conn.execute(
        "INSERT OR IGNORE INTO gpkg_contents (table_name, data_type, identifier, description, "
        "srs_id) VALUES (?, ?, ?, ?, ?)",
        (table, data_type, table, description, None if geometry_type is None else SRS_ID),
    )
    if geometry_type is not None:
        conn.execute(
            "INSERT OR IGNORE INTO gpkg_geometry_columns (table_name, column_name, "
            "geometry_type_name, srs_id, z, m) VALUES (?, ?, ?, ?, 0, 0)",
            (table, geometry_column, geometry_type.upper(), SRS_ID),
        )


def touch(conn: sqlite3.Connection, table: str, bounds: Sequence[float] | None = None) -> None:
    """Set *table*'s last_change to now and, if given, its extent (min x, min y, max x, max y)."""
    if bounds is None or not np.all(np.isfinite(bounds)):
        bounds = (None, None, None, None)
    conn.execute(
        "UPDATE gpkg_contents SET last_change = strftime('%Y-%m-%dT%H:%M:%fZ','now'), "
        "min_x = ?, min_y = ?, max_x = ?, max_y = ? WHERE table_name = ?",
        (*[None if b is None else float(b) for b in bounds], table),
    )


# -- geometry blobs ----------------------------------------------------------------------------

_HEADER = struct.Struct("<2sBBi4d")  # magic, version, flags, srs_id, minx, maxx, miny, maxy
_FLAGS_XY_LE = 0b0000_0011  # envelope indicator 1 (xy) in bits 1-3, little-endian bit 0
_ENVELOPE_BYTES = {0: 0, 1: 32, 2: 48, 3: 48, 4: 64}


def encode_geometries(values: Any, srs_id: int = SRS_ID) -> list[bytes | None]:
    """GeoPackage geometry blobs (header with xy envelope + ISO WKB) for an array of geometries."""
    geoms = np.asarray(values, dtype=object)
    if geoms.size == 0:
        return []
    missing = shapely.is_missing(geoms)
    wkb = shapely.to_wkb(geoms, flavor="iso", byte_order=1)
    env = shapely.bounds(geoms)[:, [0, 2, 1, 3]]  # GeoPackage order: minx, maxx, miny, maxy
    header = np.zeros(
        len(geoms),
        dtype=[
            ("magic", "S2"),
            ("version", "u1"),
            ("flags", "u1"),
            ("srs", "<i4"),
            ("env", "<f8", (4,)),
        ],
    )
    header["magic"] = b"GP"
    header["flags"] = _FLAGS_XY_LE
    header["srs"] = srs_id
    header["env"] = env
    raw = header.tobytes()
    size = _HEADER.size
    return [
        None if miss else raw[i * size : (i + 1) * size] + w
        for i, (miss, w) in enumerate(zip(missing, wkb, strict=True))
    ]


def decode_geometries(blobs: Sequence[bytes | None]) -> np.ndarray:
    """Shapely geometries from GeoPackage geometry blobs (any envelope kind; NULL → None)."""
    wkb = [
        None if b is None else bytes(b[8 + _ENVELOPE_BYTES.get((b[3] >> 1) & 0b111, 0) :])
        for b in blobs
    ]
    return shapely.from_wkb(np.asarray(wkb, dtype=object))


# -- the standard spatial index (GeoPackage rtree extension) -------------------------------------

RTREE_EXTENSION = "gpkg_rtree_index"
RTREE_DEFINITION = "http://www.geopackage.org/spec120/#extension_rtree"

_EXTENSIONS_DDL = (
    "CREATE TABLE IF NOT EXISTS gpkg_extensions (table_name TEXT, column_name TEXT, "
    "extension_name TEXT NOT NULL, definition TEXT NOT NULL, scope TEXT NOT NULL, "
    "CONSTRAINT ge_tce UNIQUE (table_name, column_name, extension_name))"
)
_EMPTY_FLAG = 0b0001_0000


def _envelope(blob: bytes | None) -> tuple[float, float, float, float] | None:
    """Return (min x, max x, min y, max y) of a geometry blob; None if NULL or empty.

    Read from the blob's header envelope when it has one (what this store writes), else from
    the WKB (GDAL writes points without an envelope).
    """
    if blob is None or len(blob) < 8 or blob[:2] != b"GP":
        return None
    flags = blob[3]
    if flags & _EMPTY_FLAG:
        return None
    kind = (flags >> 1) & 0b111
    if kind:
        order = "<" if flags & 1 else ">"
        minx, maxx, miny, maxy = struct.unpack_from(f"{order}4d", blob, 8)
        if minx != minx:  # NaN: an empty geometry written without the empty flag
            return None
        return minx, maxx, miny, maxy
    geom = shapely.from_wkb(bytes(blob[8:]))
    if geom is None or geom.is_empty:
        return None
    minx, miny, maxx, maxy = geom.bounds
    return minx, maxx, miny, maxy


def _is_empty(blob: bytes | None) -> int | None:
    if blob is None:
        return None
    return int(_envelope(blob) is None)


def _bound(index: int):
    def bound(blob: bytes | None) -> float | None:
        env = _envelope(blob)
        return None if env is None else env[index]

    return bound


def _srid(blob: bytes | None) -> int | None:
    if blob is None or len(blob) < 8:
        return None
    return struct.unpack_from("<i" if blob[3] & 1 else ">i", blob, 4)[0]


#: The SQL functions the standard rtree triggers (and GDAL's) call, as GDAL and SpatiaLite
#: name them: every connection that writes a layer table must have them.
SQL_FUNCTIONS = {
    "ST_IsEmpty": _is_empty,
    "ST_MinX": _bound(0),
    "ST_MaxX": _bound(1),
    "ST_MinY": _bound(2),
    "ST_MaxY": _bound(3),
    "ST_SRID": _srid,
}


def register_functions(conn: sqlite3.Connection) -> None:
    """Give *conn* the SQL functions the GeoPackage rtree triggers call.

    A GeoPackage whose layers carry the standard spatial index (written here, or by GDAL and
    QGIS) cannot be written without them: "no such function: ST_IsEmpty". They read the
    geometry blob's header, so each costs a few microseconds.
    """
    for name, function in SQL_FUNCTIONS.items():
        conn.create_function(name, 1, function, deterministic=True)


def rtree_name(table: str, column: str = "geom") -> str:
    """Return the name of *table*'s spatial index table, as the standard names it."""
    return f"rtree_{table}_{column}"


def has_spatial_index(conn: sqlite3.Connection, table: str, column: str = "geom") -> bool:
    """Tell whether *table* has the standard spatial index (its rtree table)."""
    return conn.execute(
        "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?",
        (rtree_name(table, column),),
    ).fetchone() is not None


def _rtree_triggers(table: str, column: str, fid: str) -> list[str]:
    """Return the standard rtree triggers (GeoPackage 1.4 annex, as GDAL 3.12 writes them)."""
    t, c, i = f'"{table}"', f'"{column}"', f'"{fid}"'
    r = f'"{rtree_name(table, column)}"'
    name = rtree_name(table, column)
    values = f"NEW.{i}, ST_MinX(NEW.{c}), ST_MaxX(NEW.{c}), ST_MinY(NEW.{c}), ST_MaxY(NEW.{c})"
    new_full = f"(NEW.{c} NOTNULL AND NOT ST_IsEmpty(NEW.{c}))"
    new_none = f"(NEW.{c} ISNULL OR ST_IsEmpty(NEW.{c}))"
    old_full = f"(OLD.{c} NOTNULL AND NOT ST_IsEmpty(OLD.{c}))"
    old_none = f"(OLD.{c} ISNULL OR ST_IsEmpty(OLD.{c}))"
    return [
        f'CREATE TRIGGER "{name}_insert" AFTER INSERT ON {t} WHEN {new_full} '
        f"BEGIN INSERT OR REPLACE INTO {r} VALUES ({values}); END",
        f'CREATE TRIGGER "{name}_update6" AFTER UPDATE OF {c} ON {t} '
        f"WHEN OLD.{i} = NEW.{i} AND {new_full} AND {old_full} BEGIN UPDATE {r} SET "
        f"minx = ST_MinX(NEW.{c}), maxx = ST_MaxX(NEW.{c}), miny = ST_MinY(NEW.{c}), "
        f"maxy = ST_MaxY(NEW.{c}) WHERE id = NEW.{i}; END",
        f'CREATE TRIGGER "{name}_update7" AFTER UPDATE OF {c} ON {t} '
        f"WHEN OLD.{i} = NEW.{i} AND {new_full} AND {old_none} "
        f"BEGIN INSERT INTO {r} VALUES ({values}); END",
        f'CREATE TRIGGER "{name}_update2" AFTER UPDATE OF {c} ON {t} '
        f"WHEN OLD.{i} = NEW.{i} AND {new_none} BEGIN DELETE FROM {r} WHERE id = OLD.{i}; END",
        f'CREATE TRIGGER "{name}_update5" AFTER UPDATE ON {t} WHEN OLD.{i} != NEW.{i} AND '
        f"{new_full} BEGIN DELETE FROM {r} WHERE id = OLD.{i}; "
        f"INSERT OR REPLACE INTO {r} VALUES ({values}); END",
        f'CREATE TRIGGER "{name}_update4" AFTER UPDATE ON {t} WHEN OLD.{i} != NEW.{i} AND '
        f"{new_none} BEGIN DELETE FROM {r} WHERE id IN (OLD.{i}, NEW.{i}); END",
        f'CREATE TRIGGER "{name}_delete" AFTER DELETE ON {t} WHEN OLD.{c} NOT NULL '
        f"BEGIN DELETE FROM {r} WHERE id = OLD.{i}; END",
    ]


def create_spatial_index(
    conn: sqlite3.Connection, table: str, column: str = "geom", fid: str = "fid"
) -> None:
    """Give *table* the standard spatial index, filled from its rows, and its triggers.

    After this every insert, update and delete keeps the index up to date (through the
    triggers, on any connection that has :func:`register_functions`). Inside the caller's
    transaction; nothing happens if the index exists.
    """
    if has_spatial_index(conn, table, column):
        return
    rtree = rtree_name(table, column)
    conn.execute(_EXTENSIONS_DDL)
    conn.execute(
        "INSERT OR IGNORE INTO gpkg_extensions (table_name, column_name, extension_name, "
        "definition, scope) VALUES (?, ?, ?, ?, 'write-only')",
        (table, column, RTREE_EXTENSION, RTREE_DEFINITION),
    )
    conn.execute(f'CREATE VIRTUAL TABLE "{rtree}" USING rtree(id, minx, maxx, miny, maxy)')
    fill_spatial_index(conn, table, column, fid)
    for statement in _rtree_triggers(table, column, fid):
        conn.execute(statement)


def fill_spatial_index(
    conn: sqlite3.Connection, table: str, column: str = "geom", fid: str = "fid",
    where: str = "", params: Sequence[Any] = (),
) -> None:
    """Enter the envelopes of *table*'s rows (those matching *where*) in its spatial index.

    One read of the blobs and one bulk insert, envelopes computed in numpy: used when the
    index is made, and by bulk writes that insert their rows with the triggers set aside.
    """
    rows = conn.execute(
        f'SELECT "{fid}", "{column}" FROM "{table}" WHERE "{column}" IS NOT NULL'
        + (f" AND ({where})" if where else ""),
        tuple(params),
    ).fetchall()
    if not rows:
        return
    fids = np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows))
    env = envelopes([r[1] for r in rows])
    keep = np.isfinite(env).all(axis=1)
    conn.executemany(
        f'INSERT OR REPLACE INTO "{rtree_name(table, column)}" VALUES (?, ?, ?, ?, ?)',
        zip(fids[keep].tolist(), *env[keep].T.tolist(), strict=True),
    )


def envelopes(blobs: Sequence[bytes | None]) -> np.ndarray:
    """(min x, max x, min y, max y) of each geometry blob, NaN for NULL or empty, vectorised.

    Blobs with a little-endian xy envelope in their header (all this store writes) are read
    from it, the others (GDAL's points have none) from their WKB.
    """
    out = np.full((len(blobs), 4), np.nan)
    if not len(blobs):
        return out
    headed = np.fromiter(
        (b is not None and len(b) >= 40 and b[3] & 0b1111 == _FLAGS_XY_LE for b in blobs),
        dtype=bool, count=len(blobs),
    )
    if headed.any():
        raw = b"".join(bytes(b[8:40]) for b, h in zip(blobs, headed, strict=True) if h)
        out[headed] = np.frombuffer(raw, dtype="<f8").reshape(-1, 4)
    rest = np.flatnonzero(~headed)
    if len(rest):
        out[rest] = _decoded_envelopes([blobs[i] for i in rest])
    return out


def _decoded_envelopes(blobs: Sequence[bytes | None]) -> np.ndarray:
    geoms = decode_geometries(blobs)
    if len(geoms) == 0:
        return np.empty((0, 4))
    bounds = shapely.bounds(geoms)[:, [0, 2, 1, 3]]
    bounds[shapely.is_empty(geoms) | shapely.is_missing(geoms)] = np.nan
    return bounds


def drop_spatial_index(conn: sqlite3.Connection, table: str, column: str = "geom") -> None:
    """Remove *table*'s spatial index, its triggers and its extension row (table dropped)."""
    conn.execute(f'DROP TABLE IF EXISTS "{rtree_name(table, column)}"')
    for (name,) in conn.execute(
        "SELECT name FROM sqlite_master WHERE type = 'trigger' AND name LIKE ? ESCAPE '\\'",
        (rtree_name(table, column).replace("_", "\\_") + "\\_%",),
    ).fetchall():
        conn.execute(f'DROP TRIGGER "{name}"')
    if conn.execute("SELECT 1 FROM sqlite_master WHERE name = 'gpkg_extensions'").fetchone():
        conn.execute("DELETE FROM gpkg_extensions WHERE table_name = ?", (table,))


def unregister_table(conn: sqlite3.Connection, table: str) -> None:
    """Take *table* out of the GeoPackage's contents: GIS programs no longer list it.

    The table itself stays (the store's own data); GDAL's feature counts go too.
    """
    conn.execute("DELETE FROM gpkg_geometry_columns WHERE table_name = ?", (table,))
    conn.execute("DELETE FROM gpkg_contents WHERE table_name = ?", (table,))
    if conn.execute("SELECT 1 FROM sqlite_master WHERE name = 'gpkg_ogr_contents'").fetchone():
        conn.execute("DELETE FROM gpkg_ogr_contents WHERE table_name = ?", (table,))


def set_aside_triggers(conn: sqlite3.Connection, table: str, column: str = "geom") -> list[str]:
    """Drop *table*'s rtree triggers and return their CREATE statements, to make them again.

    For a bulk write inside one transaction (see ``twin.store.embedded``); whoever wrote the
    triggers (this module or GDAL), they come back exactly as they were.
    """
    prefix = rtree_name(table, column).replace("_", "\\_") + "\\_%"
    rows = conn.execute(
        "SELECT name, sql FROM sqlite_master WHERE type = 'trigger' AND tbl_name = ? "
        "AND name LIKE ? ESCAPE '\\'",
        (table, prefix),
    ).fetchall()
    for name, _ in rows:
        conn.execute(f'DROP TRIGGER "{name}"')
    return [sql for _, sql in rows]
