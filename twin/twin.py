"""The Twin: a store's layers held in memory, re-read when a newer version becomes current."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import geopandas as gpd
import pandas as pd

from twin import layercache, layers
from twin.enrich import ASSIGNED_NAMES, GRID_INDEX_COLUMNS, assign_grids, grid_index
from twin.errors import LayerNotFoundError, StaleUpdateError
from twin.schema import ValidatedLayer, validate_layer_frame
from twin.store.base import LayerVersion, Store

LOGGER = logging.getLogger(__name__)

GRID_LAYER = "grid_cells"
# a case edited, or the grid cells or a located layer loaded, while grids are assigned makes
# the write start over
REGRID_ATTEMPTS = 3

Frame = gpd.GeoDataFrame | pd.DataFrame
READ_GRIDS = object()  # put_layer's default: read the current grid cells from the store


def current_version(store: Store, name: str) -> LayerVersion | None:
    """Return the current version of layer *name* in *store*, or None if never written."""
    for version in reversed(store.layer_versions(name)):
        if version.current:
            return version
    return None


@dataclass(frozen=True)
class GridCells:
    """The grid cells features are assigned to, and the version of ``grid_cells`` they are.

    ``cells`` is the layer (or its :class:`twin.enrich.PolygonIndex`), None when the store
    has never had grid cells; ``version`` is then None too.
    """

    cells: Any
    version: int | None


def current_grid_cells(store: Store) -> GridCells:
    """Return the store's current ``grid_cells`` layer and its version.

    Only the columns features are assigned from (:data:`twin.enrich.GRID_INDEX_COLUMNS`) and
    the geometry are read: the rest (names, workers, phones, attrs …) would only be converted
    and dropped by :func:`twin.enrich.grid_index`.
    """
    version = current_version(store, GRID_LAYER)
    if version is None:
        return GridCells(None, None)
    cells = store.read_layer(GRID_LAYER, version=version.version, columns=GRID_INDEX_COLUMNS)
    return GridCells(cells, version.version)


def put_layer(
    store: Store,
    name: str,
    frame: Frame | ValidatedLayer,
    *,
    actor: str,
    source: str,
    note: str = "",
    report: dict | None = None,
    grid_cells: Any = READ_GRIDS,
) -> LayerVersion:
    """Write *frame* as the next version of layer *name*, its grids assigned first.

    For located layers the unit grid, responsibility grid, community and street of every feature
    come from the store's current ``grid_cells`` (when there are any; otherwise the frame's own
    values are kept).

    Loading ``grid_cells`` re-assigns every located layer that has a current version and every
    open case to the new grids, in the same transaction (:meth:`Store.write_layers`): each
    such layer gets a new version, each case whose grid changes a ``regrid`` step. Closed cases
    keep the grids they were handled in.

    Parameters
    ----------
    store
        Where to write.
    name
        A declared layer.
    frame
        The features, in any CRS the store accepts; or a :class:`twin.schema.ValidatedLayer`
        (what the loader validated: the store then re-checks only the grid columns assigned
        here).
    actor, source, note, report
        Recorded with the version (who, from what file or script, why, loader report).
    grid_cells
        The result of :func:`current_grid_cells` when the caller has it already
        (:func:`twin.load.load_layer` reads it while the file is being checked); by default
        it is read here. If other grid cells are loaded before the write, they are read and
        the features assigned again.

    Returns
    -------
    LayerVersion
        The version written.

    Raises
    ------
    LayerNotFoundError
        If *name* is not a declared layer.
    ValidationError
        If the frame breaks a declared rule; nothing is written.
    """
    spec = layers.get_layer(name)
    if name == GRID_LAYER:
        return _put_grid_cells(store, frame, actor=actor, source=source, note=note, report=report)
    write = dict(actor=actor, source=source, note=note, report=report)
    if not spec.located or spec.geometry_type is None:
        return store.write_layers({name: frame}, **write)[0]
    # where the loader found the features in *grid_cells* (valid only with those cells)
    located = frame.located if isinstance(frame, ValidatedLayer) else None
    for attempt in range(1, REGRID_ATTEMPTS + 1):
        grids = current_grid_cells(store) if grid_cells is READ_GRIDS else grid_cells
        assigned = frame
        if grids.cells is None:
            LOGGER.info("no grid_cells in %r yet; %s keeps its own grid columns", store, name)
        elif len(grids.cells) and isinstance(frame, ValidatedLayer):
            assigned = frame.with_frame(assign_grids(frame.frame, grids.cells, located=located))
        elif len(grids.cells):
            assigned = assign_grids(frame, grids.cells)
        try:
            return store.write_layers({name: assigned}, expect={GRID_LAYER: grids.version},
                                      **write)[0]
        except StaleUpdateError:
            if attempt == REGRID_ATTEMPTS:
                raise
            LOGGER.info("grid cells loaded while %s was assigned; assigning again", name)
            grid_cells, located = READ_GRIDS, None
    raise AssertionError("unreachable")  # pragma: no cover


def _put_grid_cells(
    store: Store, frame: Frame | ValidatedLayer, *, actor: str, source: str, note: str,
    report: dict | None,
) -> LayerVersion:
    """Write new grid cells with every located layer and open case re-assigned to them."""
    from twin.cases import OPEN_STATUSES

    grids = (frame.frame if isinstance(frame, ValidatedLayer)
             else validate_layer_frame(layers.get_layer(GRID_LAYER), frame))
    index = grid_index(grids) if len(grids) else None
    for attempt in range(1, REGRID_ATTEMPTS + 1):
        frames: dict[str, Frame | ValidatedLayer] = {
            GRID_LAYER: ValidatedLayer(GRID_LAYER, grids)
        }
        read: dict[str, int | None] = {}  # the versions re-assigned (a load meanwhile: again)
        for spec in layers.registry().values():
            if not spec.located or spec.geometry_type is None or spec.name == GRID_LAYER:
                continue
            version = current_version(store, spec.name)
            read[spec.name] = None if version is None else version.version
            if version is None:
                continue
            located = store.read_layer(spec.name, version=version.version)
            frames[spec.name] = located if index is None else assign_grids(located, index)
        cases = store.read_cases(columns=["id", "version", "status", "geometry"])
        cases = cases.loc[cases["status"].isin(OPEN_STATUSES) & cases.geometry.notna()]
        case_grids = None
        if len(cases) and index is not None:
            placed = assign_grids(cases, index)
            case_grids = pd.DataFrame(placed[["id", "version", *ASSIGNED_NAMES]])
        try:
            written = store.write_layers(frames, actor=actor, source=source, note=note,
                                         report=report, case_grids=case_grids, expect=read)
        except StaleUpdateError:
            if attempt == REGRID_ATTEMPTS:
                raise
            LOGGER.info("a case or a located layer changed while grids were assigned; "
                        "assigning again")
            continue
        LOGGER.info("grid cells loaded; re-assigned %s and %d open cases",
                    ", ".join(frames) or "no layers", 0 if case_grids is None else len(case_grids))
        return written[0]
    raise AssertionError("unreachable")  # pragma: no cover


class Twin:
    """The layers of a store, each re-read only when its current version changes.

    The frames come from the twin's one layer cache (:mod:`twin.layercache`), shared with the
    queries, the cockpit and the maps: treat them as read-only.

    Parameters
    ----------
    store
        The store to read from (and write to through :meth:`put_layer`).
    """

    def __init__(self, store: Store) -> None:
        self.store = store

    def versions(self) -> dict[str, int]:
        """Return layer name → current version number, for every layer the store holds."""
        stamps = layercache.stamps(self.store, layers.names())
        return {name: stamp[0] for name, stamp in stamps.items() if stamp is not None}

    def layer(self, name: str) -> Frame:
        """Return the current version of layer *name*.

        Raises
        ------
        LayerNotFoundError
            If the layer is not declared or the store has no version of it.
        """
        layers.get_layer(name)
        stamp = layercache.stamps(self.store, [name])[name]
        if stamp is None:
            raise LayerNotFoundError(
                f"layer {name!r} has no data in {self.store!r} yet; load it with "
                f"`gridtwin load` or build the demo with `gridtwin make-demo`."
            )
        return layercache.layer(self.store, name, stamp)

    def put_layer(self, name: str, frame: Frame, **kwargs) -> LayerVersion:
        """Write a layer through :func:`put_layer` (the next read sees the new version)."""
        return put_layer(self.store, name, frame, **kwargs)

    def clear(self) -> None:
        """Forget the cached layers of this twin's store."""
        layercache.clear(self.store)
