"""Query 6: case or alarm density in H3 hexagons and Getis-Ord Gi* hot spots over k-ring weights.

Gi* of cell i, with counts x over the n study cells, binary weights w_ij = 1 when j lies within
k rings of i (i itself included), x̄ the mean and S = sqrt(Σx²/n − x̄²)::

    Gi* = (Σ_j w_ij x_j − x̄ Σ_j w_ij) / (S · sqrt((n Σ_j w_ij² − (Σ_j w_ij)²) / (n − 1)))

Gi* is a z-score; its two-sided p-value is erfc(|z| / √2) (Getis & Ord 1992, Ord & Getis 1995).

One test per cell is many tests at once: with 40 cells and α = 0.05 about two cells look
significant by chance alone. The p-values are therefore adjusted (Benjamini–Hochberg false
discovery rate by default, Bonferroni on request) before a cell is called hot or cold, and a
cell is called hot only when it holds at least ``min_count`` points itself, cold only when at
least ``min_count`` points were to be expected in its neighbourhood: one case cannot make a hot
spot, and an empty corner of a quiet month is not a cold one.
"""

from __future__ import annotations

import logging
from typing import Any

import geopandas as gpd
import numpy as np
import pandas as pd
import shapely
from scipy.sparse import csr_matrix
from scipy.special import erfc

from twin.errors import ValidationError
from twin.query import sql as q
from twin.query._common import QueryResult, count, is_postgis, study_area
from twin.query.counts import TABLE_SOURCES, _time, records_in_period
from twin.schema import CRS

LOGGER = logging.getLogger(__name__)


def getis_ord_gi_star(x: np.ndarray, weights) -> tuple[np.ndarray, np.ndarray]:
    """Gi* z-scores and two-sided p-values of values *x* under the sparse *weights* matrix.

    *weights* must include the diagonal (Gi*, not Gi). With fewer than two cells or no variance
    every z is 0 and every p is 1.
    """
    x = np.asarray(x, dtype=float)
    n = len(x)
    if n < 2:
        return np.zeros(n), np.ones(n)
    mean = x.mean()
    s = np.sqrt(max((x * x).mean() - mean * mean, 0.0))
    w_sum = np.asarray(weights.sum(axis=1)).ravel()
    w_sq = np.asarray(weights.multiply(weights).sum(axis=1)).ravel()
    num = weights @ x - mean * w_sum
    den = s * np.sqrt(np.maximum(n * w_sq - w_sum**2, 0.0) / (n - 1))
    with np.errstate(invalid="ignore", divide="ignore"):
        z = np.where(den > 0, num / den, 0.0)
    return z, erfc(np.abs(z) / np.sqrt(2.0))


#: Multiple-testing corrections of the per-cell p-values.
CORRECTIONS = ("fdr_bh", "bonferroni", "none")
#: Labels of a cell; "too few" is a cell whose statistic looks hot or cold but whose count (or
#: expected count) is under ``min_count``.
SPOTS = ("hot", "cold", "not significant", "too few")


def adjust_p(p: np.ndarray, correction: str = "fdr_bh") -> np.ndarray:
    """Adjust the p-values of *m* simultaneous tests.

    Parameters
    ----------
    p
        Raw p-values.
    correction
        ``"fdr_bh"`` (Benjamini & Hochberg 1995: controls the expected share of false hot
        spots among those called), ``"bonferroni"`` (controls the chance of any false one;
        stricter) or ``"none"``.

    Returns
    -------
    numpy.ndarray
        Adjusted p-values, capped at 1, in the order of *p*.

    Raises
    ------
    ValidationError
        Unknown correction.
    """
    if correction not in CORRECTIONS:
        raise ValidationError(
            f"correction must be one of {', '.join(CORRECTIONS)}, got {correction!r}"
        )
    p = np.asarray(p, dtype=float)
    m = len(p)
    if m == 0 or correction == "none":
        return p.copy()
    if correction == "bonferroni":
        return np.minimum(p * m, 1.0)
    order = np.argsort(p, kind="stable")
    ranked = p[order] * m / np.arange(1, m + 1)
    ranked = np.minimum.accumulate(ranked[::-1])[::-1]  # step-up: q_(i) = min over j ≥ i
    out = np.empty(m)
    out[order] = np.minimum(ranked, 1.0)
    return out


def classify_spots(
    z: np.ndarray,
    p_adj: np.ndarray,
    counts: np.ndarray,
    expected: np.ndarray,
    alpha: float,
    min_count: int,
) -> tuple[np.ndarray, np.ndarray]:
    """Label each cell hot, cold, not significant or too few, and its confidence (99/95/90/0).

    A significant positive z is *hot* only when the cell's own count reaches *min_count*; a
    significant negative z is *cold* only when its neighbourhood was expected to hold at least
    *min_count* points (*expected*: mean count × number of neighbours). Otherwise the cell is
    *too few*: the statistic points one way, the data are too thin to say so. Confidence is
    read from the adjusted p-value and is 0 for every cell not called hot or cold.
    """
    significant = p_adj < alpha
    hot = significant & (z > 0) & (counts >= min_count)
    cold = significant & (z < 0) & (expected >= min_count)
    thin = significant & ~hot & ~cold
    spot = np.select([hot, cold, thin], ["hot", "cold", "too few"], "not significant")
    called = hot | cold
    confidence = np.select(
        [called & (p_adj < 0.01), called & (p_adj < 0.05), called & (p_adj < 0.10)],
        [99, 95, 90],
        0,
    )
    return spot.astype(str), confidence


def ring_weights(cells: list[str], k: int) -> csr_matrix:
    """Binary weights: 1 where cell j is within *k* H3 rings of cell i (self included)."""
    import h3

    pos = {c: i for i, c in enumerate(cells)}
    rows, cols = [], []
    for i, c in enumerate(cells):  # one C call per cell; grid_disk has no array form
        for d in h3.grid_disk(c, k):
            j = pos.get(d)
            if j is not None:
                rows.append(i)
                cols.append(j)
    n = len(cells)
    return csr_matrix((np.ones(len(rows)), (rows, cols)), shape=(n, n))


def _points(store: Any, source: str, t0, t1, type_) -> pd.DataFrame:
    table, time_col, type_col = TABLE_SOURCES[source]
    if is_postgis(store):  # only lon/lat of the period leave the database
        filters, params = ["lon IS NOT NULL", "lat IS NOT NULL"], {}
        if t0 is not None:
            filters.append(f"{q.ident(time_col)} >= :t0")
            params["t0"] = t0.to_pydatetime()
        if t1 is not None:
            filters.append(f"{q.ident(time_col)} < :t1")
            params["t1"] = t1.to_pydatetime()
        if type_ is not None:
            filters.append(f"{q.ident(type_col)} = :type")
            params["type"] = type_
        sql = f"SELECT lon, lat FROM {q.table(store, table.name)} WHERE {' AND '.join(filters)}"
        return q.run(store, sql, params)
    frame = records_in_period(store, source, t0, t1, type_)
    return pd.DataFrame(frame)[["lon", "lat"]].dropna()


def hot_spots(
    store: Any,
    source: str = "cases",
    *,
    start: Any = None,
    end: Any = None,
    type: str | None = None,  # noqa: A002
    resolution: int = 10,
    k: int = 1,
    alpha: float = 0.05,
    correction: str = "fdr_bh",
    min_count: int = 3,
) -> QueryResult:
    """Density of cases or events per H3 hexagon and their Getis-Ord Gi* hot and cold spots.

    Parameters
    ----------
    store
        An open store.
    source
        ``"cases"`` or ``"events"`` (alarms: ``type="alarm"``).
    start, end
        The period (cases by ``requested_at``, events by ``observed_at``).
    type
        Event ``kind`` or case ``service_code``.
    resolution
        H3 resolution, 7–12 (10: hexagons of about 15,000 m², edge ≈ 66 m).
    k
        Neighbourhood: cells within k rings count as neighbours (≥ 1).
    alpha
        Significance level for calling a cell hot or cold (after the correction).
    correction
        ``"fdr_bh"`` (default), ``"bonferroni"`` or ``"none"``: see :func:`adjust_p`.
    min_count
        Points a cell must hold to be called hot (and be expected in its neighbourhood to be
        called cold), ≥ 1.

    Returns
    -------
    QueryResult
        One hexagon per study cell (the community area's cells plus any with points):
        ``h3``, ``count``, ``density_per_km2``, ``gi_z``, ``gi_p``, ``gi_p_adj`` (corrected),
        ``spot`` (hot / cold / not significant / too few), ``confidence`` (99 / 95 / 90 / 0,
        from the corrected p-value).

    Raises
    ------
    ValidationError
        Unknown source, bad resolution, k, alpha, correction, minimum count or period.
    """
    if source not in TABLE_SOURCES:
        raise ValidationError(f"source must be 'cases' or 'events', got {source!r}")
    res = count("resolution", resolution, minimum=0)
    if not 7 <= res <= 12:
        raise ValidationError(f"resolution must lie in 7–12 for a community, got {resolution!r}")
    k = count("k", k)
    try:
        alpha_ok = 0 < float(alpha) < 1
    except (TypeError, ValueError):
        alpha_ok = False
    if not alpha_ok:
        raise ValidationError(f"alpha must lie between 0 and 1 (e.g. 0.05), got {alpha!r}")
    if correction not in CORRECTIONS:
        raise ValidationError(
            f"correction must be one of {', '.join(CORRECTIONS)}, got {correction!r}"
        )
    min_count = count("min_count", min_count)
    t0, t1 = _time("start", start), _time("end", end)
    pts = _points(store, source, t0, t1, type)
    params = {
        "source": source,
        "start": t0,
        "end": t1,
        "type": type,
        "resolution": res,
        "k": k,
        "alpha": float(alpha),
        "correction": correction,
        "min_count": min_count,
    }
    return spots_of_counts(store, hex_counts(pts["lon"], pts["lat"], res), params)


def hex_counts(lon: Any, lat: Any, resolution: int) -> pd.Series:
    """Return the number of points (*lon*, *lat*) in each H3 cell of *resolution* (by count).

    The input of :func:`spots_of_counts`; counts of parts of the points add up to the counts
    of all of them (:mod:`twin.batch` counts a year of events this way, part by part).
    """
    import h3

    point_cells = [
        h3.latlng_to_cell(la, lo, resolution)
        for lo, la in zip(np.asarray(lon, float), np.asarray(lat, float), strict=True)
    ]
    return pd.Series(point_cells, dtype=object).value_counts()


def spots_of_counts(store: Any, counts: pd.Series, params: dict[str, Any]) -> QueryResult:
    """Return :func:`hot_spots`' answer from the points counted per H3 cell (:func:`hex_counts`).

    *params* are the checked parameters of :func:`hot_spots` (resolution, k, alpha,
    correction, min_count among them); the study area is the store's.
    """
    import h3

    res, k, alpha = params["resolution"], params["k"], params["alpha"]
    correction, min_count = params["correction"], params["min_count"]
    versions: dict[str, Any] = {}
    area = study_area(store, versions)
    cells = set(counts.index)
    if area is not None:
        cells |= set(h3.geo_to_cells(shapely.geometry.mapping(area), res))
    else:
        for c in list(cells):
            cells |= set(h3.grid_disk(c, k))
    cells = sorted(cells)
    x = counts.reindex(cells).fillna(0).to_numpy(dtype=float)
    weights = ring_weights(cells, k)
    z, p = getis_ord_gi_star(x, weights)
    p_adj = adjust_p(p, correction)
    expected = (x.mean() if len(x) else 0.0) * np.asarray(weights.sum(axis=1)).ravel()
    spot, confidence = classify_spots(z, p_adj, x, expected, float(alpha), min_count)
    area_km2 = np.array([h3.cell_area(c, "km^2") for c in cells])
    boundary = [shapely.Polygon([(lng, lat) for lat, lng in h3.cell_to_boundary(c)]) for c in cells]
    frame = gpd.GeoDataFrame(
        {
            "h3": cells,
            "count": x.astype("int64"),
            "density_per_km2": x / area_km2,
            "gi_z": z,
            "gi_p": p,
            "gi_p_adj": p_adj,
            "spot": spot,
            "confidence": confidence,
        },
        geometry=boundary,
        crs=CRS,
    )
    notes = {
        "points": int(counts.sum()),
        "hot": int((spot == "hot").sum()),
        "cold": int((spot == "cold").sum()),
        "too_few": int((spot == "too few").sum()),
    }
    return QueryResult("hot_spots", frame, params, None, versions, f"h3-gi*-k{k}", notes=notes)
