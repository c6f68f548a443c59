"""Query 5: GB 50180-2018 life circles — who lacks which facility within a 5/10/15-minute walk."""

from __future__ import annotations

import itertools
import logging
from typing import Any

import geopandas as gpd
import numpy as np
import pandas as pd
import shapely

from twin.errors import ValidationError
from twin.query import network
from twin.query._common import QueryResult, positive, read, read_optional, to_metric, utm_of_frame
from twin.schema import CRS

LOGGER = logging.getLogger(__name__)

# GB 50180-2018 (城市居住区规划设计标准), 2.0.2–2.0.4: the 15-, 10- and 5-minute life circles are
# the areas reached on foot in about 15, 10 and 5 minutes, i.e. 800–1,000 m, 500 m and 300 m.
CIRCLES_M: dict[int, float] = {5: 300.0, 10: 500.0, 15: 1000.0}
# Residents per household where a building gives households but no head count (2020 census, 2.62).
PERSONS_PER_HOUSEHOLD = 2.62
RESIDENTIAL_USES = ("residential", "mixed")
METHODS = ("auto", "network", "straight-line")


def _circles(circles: Any) -> dict[int, float]:
    if circles is None:
        return dict(CIRCLES_M)
    if isinstance(circles, str):  # "5=300,10=500,15=1000"
        try:
            circles = dict(p.split("=") for p in circles.split(","))
        except ValueError:
            raise ValidationError(
                f"circles must read minutes=metres,…, e.g. 5=300,10=500,15=1000; got {circles!r}"
            ) from None
    try:
        out = {
            int(k): positive(f"circle {k} min", v, allow_zero=False)
            for k, v in dict(circles).items()
        }
    except (TypeError, ValueError) as exc:
        if isinstance(exc, ValidationError):
            raise
        raise ValidationError(f"circles must map minutes to metres, got {circles!r}") from None
    if not out:
        raise ValidationError("give at least one circle, e.g. {5: 300}")
    out = dict(sorted(out.items()))
    pairs = list(out.items())
    for (m0, d0), (m1, d1) in itertools.pairwise(pairs):
        if d1 <= d0:
            raise ValidationError(
                f"a longer walk must reach farther: {m1} min is {d1:g} m but {m0} min is "
                f"{d0:g} m; give the {m1}-minute circle more than {d0:g} m"
            )
    return out


def residents_of(buildings: pd.DataFrame, persons_per_household: float) -> np.ndarray:
    """Residents per building: the head count if known, else households × persons per household."""
    heads = pd.to_numeric(buildings["residents_count"], errors="coerce").astype(float)
    hh = pd.to_numeric(buildings["households"], errors="coerce").astype(float)
    hh = hh * persons_per_household
    return heads.fillna(hh).fillna(0).to_numpy(dtype=float)


def compute(
    buildings: gpd.GeoDataFrame,
    facilities: gpd.GeoDataFrame,
    roads: gpd.GeoDataFrame | None,
    *,
    circles: dict[int, float],
    kinds: list[str],
    method: str,
    persons_per_household: float,
    crs: str | None = None,
) -> tuple[gpd.GeoDataFrame, pd.DataFrame, str, str]:
    """Per-building distances and lacks, plus the summary, for frames in EPSG:4326.

    Returns the building frame, the summary, the method used and the metric CRS.
    """
    crs = crs or utm_of_frame(buildings, facilities)
    use_network = method == "network" or (method == "auto" and roads is not None and len(roads))
    if use_network and (roads is None or not len(roads)):
        raise ValidationError("method='network' needs the roads layer; load it or use 'auto'")
    b_geom = to_metric(buildings, crs)
    f_geom = to_metric(facilities, crs) if len(facilities) else np.array([], dtype=object)
    f_kind = facilities["kind"].to_numpy() if len(facilities) else np.array([], dtype=object)
    limit = max(circles.values())
    dist: dict[str, np.ndarray] = {}
    if use_network:
        net = network.build(to_metric(roads, crs), np.concatenate([b_geom, f_geom]))
        n_b = len(b_geom)
        for kind in kinds:
            src = n_b + np.flatnonzero(f_kind == kind)
            d = net.distances(src, limit)
            dist[kind] = d[net.leaf[:n_b]]
    else:
        for kind in kinds:
            mine = f_geom[f_kind == kind]
            d = np.full(len(b_geom), np.inf)
            if len(mine) and len(b_geom):
                (i, _j), near = shapely.STRtree(mine).query_nearest(
                    b_geom, return_distance=True, all_matches=False
                )
                d[i] = near
            dist[kind] = d
    out = pd.DataFrame(
        {
            "building_code": buildings["building_code"].to_numpy(),
            "name": buildings["name"].to_numpy(),
            "residents": residents_of(buildings, persons_per_household),
        }
    )
    for kind in kinds:
        d = dist[kind]
        out[f"dist_{kind}_m"] = np.where(np.isfinite(d) & (d <= limit), d, np.nan)
    rows = []
    for minutes, metres in circles.items():
        lacks = np.zeros((len(out), len(kinds)), dtype=bool)
        for j, kind in enumerate(kinds):
            lacks[:, j] = ~(dist[kind] <= metres)
            rows.append(
                {
                    "minutes": minutes,
                    "distance_m": metres,
                    "kind": kind,
                    "buildings_lacking": int(lacks[:, j].sum()),
                    "residents_lacking": float(out["residents"].to_numpy()[lacks[:, j]].sum()),
                }
            )
        names = np.array(kinds, dtype=object)
        out[f"lacks_{minutes}min"] = [",".join(names[row]) for row in lacks]
        out[f"lacks_{minutes}min_count"] = lacks.sum(axis=1)
    frame = gpd.GeoDataFrame(out, geometry=buildings.geometry.values, crs=CRS)
    summary = pd.DataFrame(
        rows, columns=["minutes", "distance_m", "kind", "buildings_lacking", "residents_lacking"]
    )
    return frame, summary, "network" if use_network else "straight-line", crs


def inputs(store: Any, versions: dict, uses: Any) -> tuple:
    buildings = read(store, "buildings", versions)
    facilities = read(store, "facilities", versions)
    roads = read_optional(store, "roads", versions)
    if uses:
        if isinstance(uses, str):
            uses = [u for u in uses.split(",") if u]
        keep = buildings["use"].isin(list(uses)) | buildings["use"].isna()
        buildings = buildings[keep].reset_index(drop=True)
    return buildings, facilities, roads


def life_circles(
    store: Any,
    *,
    circles: Any = None,
    kinds: Any = None,
    method: str = "auto",
    uses: Any = RESIDENTIAL_USES,
    persons_per_household: float = PERSONS_PER_HOUSEHOLD,
) -> QueryResult:
    """Which buildings, and how many residents, lack each facility kind within each life circle.

    Parameters
    ----------
    store
        An open store with buildings and facilities (and roads for walking distances).
    circles
        Minutes → metres; default :data:`CIRCLES_M` (GB 50180-2018: 5 min ≈ 300 m,
        10 min ≈ 500 m, 15 min ≈ 800–1,000 m, the upper figure taken).
    kinds
        Facility kinds to check (default: every kind present in the facilities layer).
    method
        ``"auto"`` (walking network when the roads layer has features, straight-line otherwise),
        ``"network"`` or ``"straight-line"``.
    uses
        Building uses that count as homes (buildings with no use given are included); empty for
        every building.
    persons_per_household
        Used where a building has households but no head count.

    Returns
    -------
    QueryResult
        One row per building with ``residents``, ``dist_<kind>_m`` (NaN beyond the largest
        circle), ``lacks_<n>min`` (comma-separated kinds); ``summary`` has buildings and
        residents lacking per circle and kind; ``method`` says network or straight-line.

    Raises
    ------
    LayerNotFoundError, ValidationError
        Missing buildings or facilities layer, bad circles, method or kind.
    """
    if method not in METHODS:
        raise ValidationError(f"method must be one of {', '.join(METHODS)}, got {method!r}")
    circles = _circles(circles)
    pph = positive("persons_per_household", persons_per_household)
    versions: dict[str, Any] = {}
    buildings, facilities, roads = inputs(store, versions, uses)
    kinds = _kinds(kinds, facilities)
    frame, summary, used, crs = compute(
        buildings,
        facilities,
        roads,
        circles=circles,
        kinds=kinds,
        method=method,
        persons_per_household=pph,
    )
    params = {
        "circles": circles,
        "kinds": kinds,
        "method": method,
        "uses": uses,
        "persons_per_household": pph,
    }
    return QueryResult("life_circles", frame, params, crs, versions, used, summary=summary)


def _kinds(kinds: Any, facilities: pd.DataFrame) -> list[str]:
    from twin.layers.facilities import KINDS

    if kinds is None or kinds == "":
        return sorted(set(facilities["kind"].dropna()))
    if isinstance(kinds, str):
        kinds = [k for k in kinds.split(",") if k]
    bad = [k for k in kinds if k not in KINDS]
    if bad:
        raise ValidationError(f"unknown facility kinds {bad}; kinds: {', '.join(KINDS)}")
    return list(dict.fromkeys(kinds))
