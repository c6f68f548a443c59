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
