"""City-scale batch work over stored events on Dask: re-enrichment after a grid change, counts.

The events of a period are cut into parts by time (months, or finer slices of them) and space
(lon/lat tiles, half-open so that a point on an edge belongs to one tile only); each part is
read by a Dask worker straight from the store and handled by the single-process code —
:func:`twin.enrich.assign_grids` for the new grid cells, :func:`twin.query.hotspots.hex_counts`
and a count per unit for :func:`twin.query.counts_per_grid` — and the small results are added
up. The parts form a ``dask_geopandas.GeoDataFrame`` (:func:`events_frame`) for any other
city-wide work. Without a scheduler set (``TWIN_BATCH_SCHEDULER``) a LocalCluster of
``TWIN_BATCH_WORKERS`` processes runs on this machine; with ``tcp://host:8786`` the work goes
to that cluster (its workers need the twin installed and the store reachable).

Events without coordinates have no tile: the batch leaves them out (they cannot be
re-assigned, and hot spots skip them too); everything else equals the single-process answer
on the same data (``tests/test_batch.py``).
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import geopandas as gpd
import numpy as np
import pandas as pd

from twin import settings
from twin.enrich import ASSIGNED_NAMES, PolygonIndex, assign_grids, grid_index
from twin.errors import ValidationError
from twin.query._common import QueryResult
from twin.query.counts import LEVELS, counts_of_grouped
from twin.query.hotspots import hex_counts, spots_of_counts
from twin.store.eventparts import month_start

LOGGER = logging.getLogger(__name__)

#: Columns of a re-enrichment's changes: the event, its stored grid and the new assignment.
CHANGE_COLUMNS = ("id", "observed_at", "old_grid_code", *ASSIGNED_NAMES)


@dataclass(frozen=True)
class StoreRef:
    """How a worker opens the store the work reads: its URL (with password) and schema."""

    url: str
    schema: str | None = None

    @classmethod
    def of(cls, store: Any) -> StoreRef:
        """Return the reference of an open store (embedded path, or PostGIS URL and schema)."""
        engine = getattr(store, "engine", None)
        if engine is not None:
            return cls(engine.url.render_as_string(hide_password=False), store.schema)
        return cls(str(store.url))

    def __repr__(self) -> str:  # never show the password (it travels to the workers only)
        return f"StoreRef({self.url.split('@')[-1]!r}, schema={self.schema!r})"

    def open(self) -> Any:
        """Return this process's store for the reference (opened once per process)."""
        return _opened(self)


@functools.lru_cache(maxsize=8)
def _opened(ref: StoreRef) -> Any:
    from twin.store import open_store

    return open_store(ref.url, **({"schema": ref.schema} if ref.schema else {}))


@dataclass(frozen=True)
class Part:
    """One part of the work: events of ``start <= observed_at < end`` in one lon/lat tile.

    The tile is ``x0 <= lon < x1`` and ``y0 <= lat < y1``; the last tile of a row (column)
    also holds ``lon == x1`` (``lat == y1``).
    """

    start: pd.Timestamp
    end: pd.Timestamp
    tile: tuple[float, float, float, float]
    last_x: bool
    last_y: bool


def plan(start: Any, end: Any, *, tiles: tuple[int, int] = (2, 2),
         extent: tuple[float, float, float, float] | None = None,
         slices: int = 1) -> list[Part]:
    """Cut ``[start, end)`` into months (each into *slices*) and the plane into tiles.

    *tiles* (columns, rows) split *extent* (the city's bounds) evenly; the outer tiles reach
    the edges of the world, so that every located event has exactly one tile.
    """
    from twin.timeutil import to_utc

    start, end = to_utc(start), to_utc(end)
    if not end > start:
        raise ValidationError(f"end {end} must come after start {start}")
    columns, rows = (int(n) for n in tiles)
    if columns < 1 or rows < 1 or slices < 1:
        raise ValidationError(f"tiles and slices must be 1 or more; got {tiles}, {slices}")
    x0, y0, x1, y1 = extent or (-180.0, -90.0, 180.0, 90.0)
    xs = np.r_[-180.0, np.linspace(x0, x1, columns + 1)[1:-1], 180.0]
    ys = np.r_[-90.0, np.linspace(y0, y1, rows + 1)[1:-1], 90.0]
    inner = [m for m in pd.date_range(month_start(start), end, freq="MS") if start < m < end]
    edges = [start, *inner, end]
    periods = []
    for low, high in zip(edges[:-1], edges[1:], strict=True):
        cuts = pd.date_range(low, high, periods=slices + 1)
        periods += list(zip(cuts[:-1], cuts[1:], strict=True))
    return [
        Part(a, b, (float(xs[i]), float(ys[j]), float(xs[i + 1]), float(ys[j + 1])),
             i == columns - 1, j == rows - 1)
        for a, b in periods for i in range(columns) for j in range(rows)
    ]


def stored_period(store: Any) -> tuple[pd.Timestamp, pd.Timestamp] | None:
    """Return the months spanned by the stored events, ``[first month, after the last)``."""
    stored = store.event_months(pd.Timestamp("2200-01-01", tz="UTC"))
    months = [m for m, rows in stored.items() if rows]  # not the empty partitions made ahead
    if not months:
        return None
    return months[0], months[-1] + pd.offsets.MonthBegin(1)


def read_part(part: Part, ref: Any) -> gpd.GeoDataFrame:
    """Return the events of *part*.

    On a worker *ref* is a :class:`StoreRef` (its own connection); in this process, the store.
    """
    store = ref.open() if isinstance(ref, StoreRef) else ref
    frame = store.read_events(part.start, part.end, bbox=part.tile)
    x0, y0, x1, y1 = part.tile
    lon, lat = frame["lon"].to_numpy(float), frame["lat"].to_numpy(float)
    keep = (lon >= x0) & ((lon < x1) | part.last_x) & (lat >= y0) & ((lat < y1) | part.last_y)
    return frame[keep].reset_index(drop=True)


def events_frame(store: Any, parts: list[Part]) -> Any:
    """Return the events of *parts* as a lazy ``dask_geopandas.GeoDataFrame``, a partition each."""
    import dask.dataframe as dd
    import dask_geopandas  # noqa: F401 (registers the GeoDataFrame backend)

    meta = store.read_events(parts[0].start, parts[0].start).iloc[:0]
    with _as_stored():
        return dd.from_map(read_part, parts, ref=StoreRef.of(store), meta=meta,
                           enforce_metadata=False)


def _as_stored() -> Any:
    """Dask settings under which the parts keep the store's column types.

    (Dask would otherwise turn text columns into Arrow strings, with NA for None: the answers
    would no longer be the single-process path's.)
    """
    import dask

    return dask.config.set({"dataframe.convert-string": False})


@contextmanager
def batch_client(address: str | None = None, *, workers: int | None = None,
                 processes: bool = True) -> Iterator[Any]:
    """Yield a Dask client of the scheduler at *address*, else of a LocalCluster.

    *address* defaults to ``TWIN_BATCH_SCHEDULER``; the LocalCluster has *workers*
    (``TWIN_BATCH_WORKERS``) single-threaded processes (threads with ``processes=False``).
    """
    from distributed import Client, LocalCluster

    address = address or settings.get("batch_scheduler")
    if address:
        with Client(address) as client:
            yield client
        return
    n = int(workers or settings.get("batch_workers"))
    with LocalCluster(n_workers=n, threads_per_worker=1, processes=processes,
                      dashboard_address=None) as cluster, Client(cluster) as client:
        yield client


# -- re-enrichment after a grid change ---------------------------------------------------------


def _differs(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Elementwise a != b for object arrays where None equals None."""
    a_none, b_none = pd.isna(a), pd.isna(b)
    a = np.where(a_none, "", a).astype(object)  # no NA left to compare
    b = np.where(b_none, "", b).astype(object)
    return ~((a_none & b_none) | (~a_none & ~b_none & (a == b)))


def reassigned(events: gpd.GeoDataFrame, grids: PolygonIndex) -> pd.DataFrame:
    """Return the events whose assignment changes under *grids* (:data:`CHANGE_COLUMNS`).

    The single-process step, as :func:`twin.enrich.assign_grids` does it at ingest.
    """
    new = assign_grids(events[["id", "observed_at", "geometry"]], grids)
    changed = np.zeros(len(events), dtype=bool)
    for name in ASSIGNED_NAMES:
        changed |= _differs(events[name].to_numpy(dtype=object), new[name].to_numpy(dtype=object))
    out = pd.DataFrame({"id": events["id"].to_numpy(dtype=object),
                        "observed_at": events["observed_at"].to_numpy(),
                        "old_grid_code": events["grid_code"].to_numpy(dtype=object),
                        **{n: new[n].to_numpy(dtype=object) for n in ASSIGNED_NAMES}})
    return out[changed].reset_index(drop=True)


def _reassign_part(events: gpd.GeoDataFrame, grids: PolygonIndex, target: Any,
                   write: bool) -> pd.DataFrame:
    """Return the changes of one part (with *write*, stored) and a row of its tally.

    *target* is the store, or on a worker the :class:`StoreRef` it opens.
    """
    changes = reassigned(events, grids)
    if write and len(changes):
        (target.open() if isinstance(target, StoreRef) else target).reassign_events(changes)
    return pd.concat([changes, _tally(len(events))], ignore_index=True)


def _tally(events: int) -> pd.DataFrame:
    """Return a row without an id that carries the number of events a part read."""
    row = {c: [None] for c in CHANGE_COLUMNS}
    row["observed_at"] = pd.Series([pd.NaT], dtype="datetime64[us, UTC]")
    return pd.DataFrame({**row, "events": [events]})


@dataclass
class Reenrichment:
    """What re-assigning stored events to new grid cells found (and, with ``write``, wrote)."""

    events: int
    changes: pd.DataFrame  # CHANGE_COLUMNS, sorted by observed_at and id
    parts: int
    written: bool


def reenrich(store: Any, grid_cells: gpd.GeoDataFrame, *, start: Any = None, end: Any = None,
             client: Any = None, tiles: tuple[int, int] = (2, 2), slices: int = 1,
             write: bool = False) -> Reenrichment:
    """Re-assign the stored events of ``[start, end)`` to *grid_cells*, on Dask or in-process.

    With a Dask *client* the period is cut into :func:`plan`'s parts, each read and
    re-assigned on a worker (and, with *write*, its changes written there); without one, the
    same work is done here a month at a time (the single-process path: one month of events in
    memory, not the whole period). Both give the same changes. Default period: every stored
    month.
    """
    period = stored_period(store)
    if period is None:
        return Reenrichment(0, _tally(0).iloc[:0].drop(columns="events"), 0, write)
    start = period[0] if start is None else _utc(start)
    end = period[1] if end is None else _utc(end)
    grids = grid_index(grid_cells)
    if client is None:
        months = plan(start, end, tiles=(1, 1))  # one tile: the world (located events only)
        changes = pd.concat([_reassign_part(read_part(part, store), grids, store, write)
                             for part in months], ignore_index=True)
        parts = len(months)
    else:
        extent = tuple(grid_cells.to_crs(4326).total_bounds)
        chosen = plan(start, end, tiles=tiles, extent=extent, slices=slices)
        frame = events_frame(store, chosen)
        scattered = client.scatter(grids, broadcast=True)
        meta = _tally(0).iloc[:0]
        with _as_stored():
            changes = frame.map_partitions(_reassign_part, scattered, StoreRef.of(store), write,
                                           meta=meta, enforce_metadata=False).compute()
        parts = len(chosen)
    total = int(changes["events"].fillna(0).sum())
    changes = changes[changes["id"].notna()].drop(columns="events")
    changes = changes.sort_values(["observed_at", "id"], kind="stable").reset_index(drop=True)
    LOGGER.info("re-enrichment: %d events in %d parts, %d change grid", total, parts,
                len(changes))
    return Reenrichment(total, changes, parts, write)


# -- counts and hot-spot inputs over a period --------------------------------------------------


def _count_part(events: gpd.GeoDataFrame, key: str, resolution: int) -> pd.DataFrame:
    """Count one part's events per unit (``unit``), without one, and per H3 cell (``h3``)."""
    units = events[key].to_numpy(dtype=object)
    located = pd.Series(units[pd.notna(units)], dtype=object).value_counts()
    cells = hex_counts(events["lon"], events["lat"], resolution)
    rows = [("unit", k, int(v)) for k, v in located.items()]
    rows += [("unassigned", None, int(pd.isna(units).sum()))]
    rows += [("h3", k, int(v)) for k, v in cells.items()]
    return pd.DataFrame(rows, columns=["what", "key", "n"]).astype({"n": "int64"})


@dataclass
class HistoryCounts:
    """Events of a period counted per unit and per H3 cell: the inputs of counts and hot spots."""

    units: pd.Series  # unit code → events
    unassigned: int
    cells: pd.Series  # H3 cell → events
    parts: int


def history_counts(store: Any, *, start: Any, end: Any, level: str = "grid",
                   resolution: int = 10, client: Any = None, tiles: tuple[int, int] = (2, 2),
                   slices: int = 1) -> HistoryCounts:
    """Count the located events of ``[start, end)`` per unit of *level* and per H3 cell.

    With a Dask *client*, part by part on the workers (:func:`plan`), added up here; without
    one, in this process over the whole period. Turn them into answers with
    :func:`counts_answer` and :func:`spots_answer`.
    """
    if level not in LEVELS:
        raise ValidationError(f"level must be one of {', '.join(LEVELS)}, got {level!r}")
    key = LEVELS[level]
    if client is None:
        events = store.read_events(start, end)
        events = events[events["lon"].notna() & events["lat"].notna()]
        counted, parts = _count_part(events, key, resolution), 1
    else:
        chosen = plan(start, end, tiles=tiles, extent=_extent(store), slices=slices)
        meta = pd.DataFrame({"what": pd.Series(dtype=object), "key": pd.Series(dtype=object),
                             "n": pd.Series(dtype="int64")})
        with _as_stored():
            counted = events_frame(store, chosen).map_partitions(
                _count_part, key, resolution, meta=meta, enforce_metadata=False).compute()
        parts = len(chosen)
    sums = counted.groupby(["what", counted["key"].fillna("")], sort=True)["n"].sum()

    def part(what: str) -> pd.Series:
        found = sums[what] if what in sums.index.get_level_values(0) else pd.Series(dtype=int)
        return found.astype("int64").rename_axis(None)

    unassigned = int(part("unassigned").sum())
    return HistoryCounts(part("unit"), unassigned, part("h3"), parts)


def _extent(store: Any) -> tuple[float, float, float, float] | None:
    try:
        grids = store.read_layer("grid_cells")
    except Exception:  # no grid layer: tiles over the whole world
        return None
    return tuple(grids.to_crs(4326).total_bounds) if len(grids) else None


def counts_answer(store: Any, counts: HistoryCounts, *, level: str, start: Any,
                  end: Any) -> QueryResult:
    """Return :func:`twin.query.counts_per_grid`'s answer for events from *counts*."""
    grouped = {"unit": np.asarray(counts.units.index, dtype=object),
               "count": counts.units.to_numpy(dtype="int64")}
    params = {"source": "events", "level": level, "start": _utc(start), "end": _utc(end),
              "type": None, "where": [], "sum": None}
    return counts_of_grouped(store, grouped, counts.unassigned, params, "dask")


def spots_answer(store: Any, counts: HistoryCounts, *, start: Any, end: Any,
                 resolution: int = 10, k: int = 1, alpha: float = 0.05,
                 correction: str = "fdr_bh", min_count: int = 3) -> QueryResult:
    """Return :func:`twin.query.hot_spots`' answer for events from *counts* (same resolution)."""
    params = {"source": "events", "start": _utc(start), "end": _utc(end), "type": None,
              "resolution": resolution, "k": k, "alpha": float(alpha),
              "correction": correction, "min_count": min_count}
    return spots_of_counts(store, counts.cells, params)


def _utc(value: Any) -> pd.Timestamp | None:
    from twin.timeutil import to_utc

    return None if value is None else to_utc(value)
