"""GeoJSON as RFC 7946 has it: WGS84 lon/lat, no ``crs`` member, right-hand rings, centimetres."""

from __future__ import annotations

import io
import logging
import os
import uuid
from pathlib import Path

import geopandas as gpd
import numpy as np
import pyogrio

from twin.errors import ValidationError

LOGGER = logging.getLogger(__name__)

# 7 decimals of a degree are 1.1 cm of latitude: finer digits are noise from reprojection.
PRECISION = 7

# GDAL's GeoJSON driver (checked on GDAL 3.12: tests/test_exports.py reads back what it wrote):
# RFC7946=YES drops the crs member, reprojects to WGS84 and orients every ring by the right-hand
# rule (Polygon, MultiPolygon and polygons inside a GeometryCollection); NaN becomes null.
_OPTIONS = {"RFC7946": "YES", "COORDINATE_PRECISION": PRECISION, "WRITE_NAME": "NO"}


def _wgs84(frame: gpd.GeoDataFrame) -> gpd.GeoDataFrame:
    if not isinstance(frame, gpd.GeoDataFrame):
        raise ValidationError(
            f"GeoJSON needs features with a geometry, got a {type(frame).__name__}; write .csv"
        )
    # answers and layers are in EPSG:4326 by contract; a frame that lost its CRS is taken as such
    frame = frame.set_crs(4326) if frame.crs is None else frame.to_crs(4326)
    floats = [c for c in frame.columns if c != frame.geometry.name and frame[c].dtype.kind == "f"]
    if floats:
        # GDAL skips a property that is ±inf (with a warning); RFC 8259 has no such number: null
        frame = frame.copy()
        for col in floats:
            frame[col] = frame[col].where(np.isfinite(frame[col]))
    return frame


def dumps(frame: gpd.GeoDataFrame) -> bytes:
    """Return *frame* as an RFC 7946 FeatureCollection (UTF-8 bytes).

    Coordinates are WGS84 longitude, latitude rounded to :data:`PRECISION` decimals, exterior rings
    counter-clockwise and holes clockwise, no ``crs`` member; non-finite numbers become ``null``.

    Raises
    ------
    ValidationError
        If *frame* has no geometry column.
    """
    frame = _wgs84(frame)
    buffer = io.BytesIO()
    pyogrio.write_dataframe(frame, buffer, driver="GeoJSON", layer="features", **_OPTIONS)
    return buffer.getvalue()


def write(frame: gpd.GeoDataFrame, path: str | Path) -> Path:
    """Write *frame* to *path* as RFC 7946 GeoJSON (see :func:`dumps`); return the path.

    The file appears whole or not at all: it is written beside *path* and renamed over it.

    Raises
    ------
    ValidationError
        If *frame* has no geometry column.
    """
    path = write_whole(Path(path), dumps(frame))
    LOGGER.info("wrote %d features to %s (RFC 7946)", len(frame), path)
    return path


def write_whole(path: str | Path, data: bytes) -> Path:
    """Write *data* to *path* whole or not at all (beside it, then renamed over it)."""
    path = Path(path)
    part = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.part")
    try:
        part.write_bytes(data)
        os.replace(part, path)
    finally:
        part.unlink(missing_ok=True)
    return path
