"""Layers and what is derived from them, kept per store and layer version between queries."""

from __future__ import annotations

import functools
import logging
import threading
import weakref
from collections.abc import Callable, Hashable, Iterable
from typing import Any

import geopandas as gpd
import numpy as np
import pyproj
import shapely

from twin.errors import LayerNotFoundError
from twin.schema import CRS

LOGGER = logging.getLogger(__name__)

# (version number, creation time as text): a version number alone could come back with other
# content if a layer's history were rebuilt, its creation time with it would not.
Stamp = tuple[int, str]

# Derived objects kept per layer version (metric geometries and trees in a few CRSs, units …).
MAX_DERIVED_PER_LAYER = 8


class _StoreCache:
    """What one store's queries have read: the current frame and derived objects per layer."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.frames: dict[str, tuple[Stamp, gpd.GeoDataFrame]] = {}
        self.derived: dict[str, tuple[Stamp, dict[Hashable, Any]]] = {}


_CACHES: weakref.WeakKeyDictionary[Any, _StoreCache] = weakref.WeakKeyDictionary()
_CACHES_LOCK = threading.Lock()


def _cache_of(store: Any) -> _StoreCache:
    with _CACHES_LOCK:
        entry = _CACHES.get(store)
        if entry is None:
            entry = _StoreCache()
            _CACHES[store] = entry
        return entry


def clear(store: Any | None = None) -> None:
    """Forget what was cached for *store* (every store when None)."""
    with _CACHES_LOCK:
        entries = list(_CACHES.values()) if store is None else [_CACHES.get(store)]
    for entry in entries:
        if entry is not None:
            with entry.lock:
                entry.frames.clear()
                entry.derived.clear()


# -- which version of each layer is current --------------------------------------------------------


def stamps(store: Any, names: Iterable[str]) -> dict[str, Stamp | None]:
    """Return the current version of each layer in *names* (None if never written), in one read.

    Asks :meth:`twin.store.base.Store.current_versions` (one small SELECT on either store).
    """
    return store.current_versions(list(dict.fromkeys(names)))


# -- layers and derived objects --------------------------------------------------------------------


def layer(store: Any, name: str, stamp: Stamp | None | bool = False) -> gpd.GeoDataFrame:
    """Return the current version of layer *name*, read once per version (shared: do not modify).

    Parameters
    ----------
    store
        An open store.
    name
        A declared layer.
    stamp
        Its current stamp when the caller has just read it (see :func:`stamps`).

    Raises
    ------
    LayerNotFoundError
        If the layer was never written (the store's own message).
    """
    if stamp is False:
        stamp = stamps(store, [name])[name]
    if stamp is None:
        store.read_layer(name)  # raises the store's own LayerNotFoundError
        raise LayerNotFoundError(f"layer {name!r} has no current version; load it first")
    entry = _cache_of(store)
    with entry.lock:
        held = entry.frames.get(name)
    if held is not None and held[0] == stamp:
        return held[1]
    frame = store.read_layer(name, version=stamp[0])
    LOGGER.debug("read %s version %d (%d rows) for queries", name, stamp[0], len(frame))
    with entry.lock:
        entry.frames[name] = (stamp, frame)
    return frame


def derived(store: Any, name: str, stamp: Stamp, key: Hashable, build: Callable[[], Any]) -> Any:
    """``build()`` once per version of layer *name* and *key*; later calls get the same object."""
    entry = _cache_of(store)
    with entry.lock:
        held = entry.derived.get(name)
        if held is not None and held[0] == stamp and key in held[1]:
            return held[1][key]
    value = build()
    with entry.lock:
        held = entry.derived.get(name)
        if held is None or held[0] != stamp:
            held = (stamp, {})
            entry.derived[name] = held
        if len(held[1]) >= MAX_DERIVED_PER_LAYER:
            held[1].pop(next(iter(held[1])))
        held[1][key] = value
    return value


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
