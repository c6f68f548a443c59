"""Query 4: parking supply against demand per building (floating catchment) and per unit grid."""

from __future__ import annotations

import logging
from typing import Any

import geopandas as gpd
import numpy as np
import pandas as pd
import shapely

from twin.errors import ValidationError
from twin.query._common import QueryResult, positive, read, to_metric, utm_of_frame
from twin.schema import CRS

LOGGER = logging.getLogger(__name__)

WALK_M = 300.0  # how far residents walk from a parking space home
AVAILABLE_COLUMNS = ("available_spaces", "availableSpotNumber", "free_spaces")


def _available(lots: pd.DataFrame, state: pd.DataFrame | None) -> np.ndarray | None:
    """Free spaces per lot from the live state (lot_id + available_spaces), NaN where unknown."""
    if state is None:
        return None
    col = next((c for c in AVAILABLE_COLUMNS if c in state.columns), None)
    if "lot_id" not in state.columns or col is None:
        raise ValidationError(
            f"the parking state needs lot_id and one of {', '.join(AVAILABLE_COLUMNS)}; "
            f"it has {list(state.columns)}"
        )
    free = pd.Series(
        pd.to_numeric(state[col], errors="coerce").to_numpy(), index=state["lot_id"].astype(str)
    )
    free = free[~free.index.duplicated(keep="last")]
    return lots["lot_id"].astype(str).map(free).to_numpy(dtype=float)


def parking_balance(
    store: Any,
    *,
    level: str = "building",
    walk_m: float = WALK_M,
    spaces_per_household: float = 1.0,
    state: pd.DataFrame | None = None,
) -> QueryResult:
    """Parking spaces against households, per building or per unit grid.

    Per building, spaces are shared out by a two-step floating catchment: each lot's spaces are
    divided among the households living within *walk_m* of it, and a building gets its share of
    every lot within *walk_m*. Per grid, spaces of the lots assigned to the grid are set against
    the households of its buildings.

    Parameters
    ----------
    store
        An open store with buildings and parking (and grid_cells for ``level="grid"``).
    level
        ``"building"`` or ``"grid"``.
    walk_m
        Walking distance between a lot and a home, metres (straight-line).
    spaces_per_household
        The demand: spaces wanted per household.
    state
        Live state: ``lot_id`` and ``available_spaces`` (FIWARE ``availableSpotNumber``).

    Returns
    -------
    QueryResult
        Building rows: ``households``, ``demand``, ``spaces_within``, ``lots_within``,
        ``spaces_share``, ``shortfall`` [, ``available_share``]; grid rows: ``households``,
        ``demand``, ``spaces``, ``balance`` [, ``available``].

    Raises
    ------
    LayerNotFoundError, ValidationError
        Missing layers, bad level, distance or state.
    """
    if level not in ("building", "grid"):
        raise ValidationError(f"level must be 'building' or 'grid', got {level!r}")
    walk = positive("walk_m", walk_m)
    ratio = positive("spaces_per_household", spaces_per_household)
    versions: dict[str, Any] = {}
    buildings = read(store, "buildings", versions)
    lots = read(store, "parking", versions)
    free = _available(lots, state)
    households = pd.to_numeric(buildings["households"], errors="coerce").fillna(0).to_numpy(float)
    spaces = pd.to_numeric(lots["total_spaces"], errors="coerce").fillna(0).to_numpy(float)
    crs = utm_of_frame(buildings, lots)
    params = {
        "level": level,
        "walk_m": walk,
        "spaces_per_household": ratio,
        "state": None if state is None else f"{len(state)} rows",
    }
    if level == "grid":
        frame = _per_grid(store, versions, buildings, lots, households, spaces, free, ratio)
        return QueryResult("parking", frame, params, crs, versions, "assigned-grid")
    b, lot = shapely.STRtree(to_metric(lots, crs)).query(
        to_metric(buildings, crs), predicate="dwithin", distance=walk
    )
    demand = households * ratio
    n_b = len(buildings)
    catchment = np.bincount(lot, weights=demand[b], minlength=len(lots))  # demand near each lot
    with np.errstate(invalid="ignore", divide="ignore"):
        per_demand = np.where(catchment > 0, spaces / catchment, 0.0)
    out = pd.DataFrame(
        {
            "building_code": buildings["building_code"].to_numpy(),
            "name": buildings["name"].to_numpy(),
            "households": households,
            "demand": demand,
            "lots_within": np.bincount(b, minlength=n_b),
            "spaces_within": np.bincount(b, weights=spaces[lot], minlength=n_b),
        }
    )
    out["spaces_share"] = np.bincount(b, weights=per_demand[lot], minlength=n_b) * demand
    out["shortfall"] = np.maximum(demand - out["spaces_share"], 0.0)
    if free is not None:
        free0 = np.nan_to_num(free, nan=0.0)
        with np.errstate(invalid="ignore", divide="ignore"):
            free_per = np.where(catchment > 0, free0 / catchment, 0.0)
        out["available_within"] = np.bincount(b, weights=free0[lot], minlength=n_b)
        out["available_share"] = np.bincount(b, weights=free_per[lot], minlength=n_b) * demand
    frame = gpd.GeoDataFrame(out, geometry=buildings.geometry.values, crs=CRS)
    return QueryResult("parking", frame, params, crs, versions, "straight-line")


def _per_grid(store, versions, buildings, lots, households, spaces, free, ratio):
    grids = read(store, "grid_cells", versions)
    hh = pd.Series(households).groupby(buildings["grid_code"].to_numpy()).sum()
    sp = pd.Series(spaces).groupby(lots["grid_code"].to_numpy()).sum()
    out = pd.DataFrame(
        {"grid_code": grids["grid_code"].to_numpy(), "name": grids["name"].to_numpy()}
    )
    out["households"] = out["grid_code"].map(hh).fillna(0.0)
    out["demand"] = out["households"] * ratio
    out["spaces"] = out["grid_code"].map(sp).fillna(0.0)
    out["balance"] = out["spaces"] - out["demand"]
    if free is not None:
        av = pd.Series(np.nan_to_num(free)).groupby(lots["grid_code"].to_numpy()).sum()
        out["available"] = out["grid_code"].map(av).fillna(0.0)
    return gpd.GeoDataFrame(out, geometry=grids.geometry.values, crs=CRS)
