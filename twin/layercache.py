"""The layers of a store, read once per version and shared by everything that draws or queries.

One cache for the whole twin: :class:`twin.twin.Twin`, the spatial queries (``twin.query``), the
cockpit, the maps (``twin.deck``) and the pages all take a layer's current frame from here, so a
version is read from the store once and held once in memory, whoever asks first. Objects derived
from a layer (metric geometries, spatial trees, units, building indexes, basemap layers) are kept
with the version they were made from (:func:`derived`) or with the frame itself
(:func:`of_frame`), and go when a new version becomes current.

Frames are shared: nobody changes one in place (a new version is a new frame).
"""

from __future__ import annotations

import logging
import threading
import weakref
from collections.abc import Callable, Hashable, Iterable
from typing import Any

import geopandas as gpd

from twin.errors import LayerNotFoundError
from twin.lru import LRUCache

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
# Objects derived from a frame handed over without its store and version (a page's layers).
_BY_FRAME = LRUCache(64)


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
    _BY_FRAME.clear()


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


def of_frame(frame: Any, key: Hashable, build: Callable[[], Any]) -> Any:
    """``build()`` once per *frame* and *key*; later calls with the same frame get the same object.

    The frame's identity is the key: frames are never changed in place (a new version is a new
    frame), and the entry holds the frame, so its identity cannot be reused while the entry lives.
    """
    return _BY_FRAME.get((id(frame), len(frame), key), lambda: (frame, build()))[1]


def layers(store: Any, names: Iterable[str] | None = None) -> dict[str, gpd.GeoDataFrame]:
    """Return the current frame of each layer in *names* that has a current version.

    *names* defaults to every layer the store holds; the versions are looked up in one read.
    """
    wanted = store.layers() if names is None else list(names)
    return {name: layer(store, name, stamp)
            for name, stamp in stamps(store, wanted).items() if stamp is not None}
