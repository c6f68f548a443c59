"""What the queries derive from layers (metric geometries, trees, column arrays) and coordinates.

The layers themselves, and the per-version store of derived objects, are the twin's one layer
cache, :mod:`twin.layercache`, shared with the twin, cockpit and maps; its functions are
re-exported here for the query modules.
"""

from __future__ import annotations

import functools
from typing import Any

import geopandas as gpd
import numpy as np
import pyproj
import shapely

from twin.layercache import Stamp, clear, derived, layer, stamps
from twin.schema import CRS

__all__ = ["Stamp", "clear", "column_arrays", "crs_object", "derived", "layer", "metric_index",
           "project", "stamps", "transformer"]


def metric_index(
    store: Any, name: str, stamp: Stamp, frame: gpd.GeoDataFrame, crs: str
) -> tuple[np.ndarray, shapely.STRtree]:
    """Return the layer's geometries in the metric *crs* and an STRtree over them (per version)."""

    def build() -> tuple[np.ndarray, shapely.STRtree]:
        geoms = frame.geometry.to_crs(crs).values.to_numpy()
        return geoms, shapely.STRtree(geoms)

    return derived(store, name, stamp, ("metric", crs), build)


def column_arrays(
    store: Any, name: str, stamp: Stamp, frame: gpd.GeoDataFrame
) -> tuple[dict[str, Any], Any]:
    """Return the layer's columns as arrays (geometry apart) once per version.

    Picking a few rows then takes them from the arrays without a DataFrame lookup per column.
    """

    def build() -> tuple[dict[str, Any], Any]:
        geometry = frame.geometry.name
        columns = {c: frame[c].array for c in frame.columns if c != geometry}
        return columns, frame.geometry.values

    return derived(store, name, stamp, "columns", build)


# -- coordinates -----------------------------------------------------------------------------------


@functools.lru_cache(maxsize=64)
def crs_object(crs: str) -> pyproj.CRS:
    """Return a cached :class:`pyproj.CRS` for *crs* (parsing ``"EPSG:4326"`` costs each time)."""
    return pyproj.CRS.from_user_input(crs)


@functools.lru_cache(maxsize=64)
def transformer(source: str, target: str) -> pyproj.Transformer:
    """Return a cached (lon, lat order) transformer between two CRSs."""
    return pyproj.Transformer.from_crs(source, target, always_xy=True)


def project(geom: shapely.Geometry, crs: str, source: str = CRS) -> shapely.Geometry:
    """One geometry from *source* (EPSG:4326 by default) into *crs*."""
    tr = transformer(source, crs)

    def move(xy: np.ndarray) -> np.ndarray:
        x, y = tr.transform(xy[:, 0], xy[:, 1])
        return np.column_stack([x, y])

    return shapely.transform(geom, move)
