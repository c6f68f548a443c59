"""Queries 1 and 2: features within N metres, and the k nearest (optionally by live state)."""

from __future__ import annotations

import logging
import re
from typing import Any

import geopandas as gpd
import numpy as np
import pandas as pd
import shapely

from twin.errors import NotFoundError, ValidationError
from twin.query import _cache
from twin.query import sql as q
from twin.query._common import (
    AREA_LAYERS,
    QueryResult,
    check_in_area,
    count,
    geoframe,
    is_postgis,
    lonlat,
    none_for_null,
    positive,
    read,
    sort_key_distance,
    spec_of,
    study_area,
    utm_crs,
)
from twin.schema import CRS, LayerSpec

LOGGER = logging.getLogger(__name__)

OPS = {"=": "=", "==": "=", "!=": "<>", "<": "<", "<=": "<=", ">": ">", ">=": ">="}
_CONDITION = re.compile(r"^\s*([A-Za-z_][A-Za-z0-9_]*)\s*(<=|>=|!=|==|=|<|>)\s*(.+?)\s*$")


# -- the target: a point or another feature -------------------------------------------------------


def _target(store: Any, point: Any, of: Any, versions: dict) -> tuple[shapely.Geometry, str, Any]:
    """Return the geometry to measure from (EPSG:4326), its metric CRS and the feature left out.

    A point is only read here; the caller checks it against the study area (see
    :func:`_check_point`) once it knows the current versions.
    """
    if (point is None) == (of is None):
        raise ValidationError("give either point=lon,lat or of=layer:id (exactly one of them)")
    if point is not None:
        lon, lat = lonlat(point)
        return shapely.Point(lon, lat), utm_crs(lon, lat), None
    if isinstance(of, str):
        if ":" not in of:
            raise ValidationError(f"of must be layer:id (e.g. buildings:B1), got {of!r}")
        of = tuple(of.split(":", 1))
    try:
        layer, fid = of
    except (TypeError, ValueError):
        raise ValidationError(f"of must be (layer, id) or 'layer:id', got {of!r}") from None
    spec = spec_of(layer)
    frame = read(store, layer, versions)
    hit = np.flatnonzero(frame[spec.id_field].astype(str).to_numpy() == str(fid))
    if not len(hit):
        raise NotFoundError(
            f"layer {layer!r} has no feature with {spec.id_field} = {fid!r}; check the id"
        )
    geom = frame.geometry.iloc[hit[0]]
    c = geom.centroid
    return geom, utm_crs(c.x, c.y), (layer, str(fid))


def _check_point(
    store: Any, point: Any, target: shapely.Geometry, versions: dict, stamps: dict
) -> None:
    """Refuse a *point* target outside the study area (features of the twin are inside)."""
    if point is not None:
        check_in_area(study_area(store, versions, stamps), target.x, target.y)


def _names(layer: str, point: Any) -> list[str]:
    """Return the layers whose versions a query reads: the area's too when from a point."""
    return [*AREA_LAYERS, layer] if point is not None else [layer]


# -- filters --------------------------------------------------------------------------------------


def parse_where(where: Any) -> list[tuple[str, str, Any]]:
    """Read conditions as ``(column, op, value)`` from a dict, tuples or ``"col>=3"`` text."""
    if where is None or where == "" or where == []:
        return []
    if isinstance(where, dict):
        return [(k, "=", v) for k, v in where.items()]
    if isinstance(where, (str, tuple)):
        where = [where]
    out = []
    for item in where:
        if isinstance(item, str):
            m = _CONDITION.match(item)
            if not m:
                raise ValidationError(
                    f"cannot read the condition {item!r}; write column op value, e.g. "
                    "available_spaces>0 or kind=clinic (ops: = != < <= > >=)"
                )
            col, op, raw = m.groups()
            try:
                value: Any = float(raw)
            except ValueError:
                value = raw.strip("'\"")
            item = (col, op, value)
        try:
            col, op, value = item
        except (TypeError, ValueError):
            raise ValidationError(f"a condition is (column, op, value); got {item!r}") from None
        if op not in OPS:
            raise ValidationError(f"unknown operator {op!r}; use one of {', '.join(OPS)}")
        out.append((col, OPS[op], value))
    return out


def _mask(frame: pd.DataFrame, conditions: list[tuple[str, str, Any]]) -> np.ndarray:
    keep = np.ones(len(frame), dtype=bool)
    for col, op, value in conditions:
        s = frame[col]
        number = isinstance(value, (int, float, np.number)) and not isinstance(value, bool)
        if number and not pd.api.types.is_numeric_dtype(s):
            s = pd.to_numeric(s, errors="coerce")
        elif not number and pd.api.types.is_numeric_dtype(s):
            raise ValidationError(f"column {col!r} is numeric; compare it with a number")
        res = {
            "=": s == value,
            "<>": s != value,
            "<": s < value,
            "<=": s <= value,
            ">": s > value,
            ">=": s >= value,
        }[op]
        keep &= res.fillna(False).to_numpy(dtype=bool)
    return keep


def _split_conditions(spec: LayerSpec, conditions, state: pd.DataFrame | None):
    """Conditions on declared columns (go to the layer) and on live-state columns."""
    on_layer, on_state = [], []
    for cond in conditions:
        col = cond[0]
        if state is not None and col in state.columns and col != spec.id_field:
            on_state.append(cond)
        elif col in spec.column_names and spec.column(col).dtype != "json":
            on_layer.append(cond)
        else:
            known = [c for c in spec.column_names if c != "attrs"]
            known += [] if state is None else [c for c in state.columns if c != spec.id_field]
            raise ValidationError(
                f"cannot filter {spec.name!r} on {col!r}; columns: {', '.join(known)}"
            )
    return on_layer, on_state


def _state_ids(spec: LayerSpec, state: pd.DataFrame | None, on_state) -> pd.DataFrame | None:
    """Return the live-state rows that pass the state conditions (id column first)."""
    if state is None:
        return None
    if spec.id_field not in state.columns:
        raise ValidationError(
            f"the live state for {spec.name!r} needs an {spec.id_field!r} column; it has "
            f"{list(state.columns)}"
        )
    state = pd.DataFrame(state).copy()
    state[spec.id_field] = state[spec.id_field].astype(str)
    return state[_mask(state, on_state)].drop_duplicates(spec.id_field)


# -- query 1: within distance ---------------------------------------------------------------------


def within_distance(
    store: Any,
    layer: str,
    distance_m: float,
    *,
    point: Any = None,
    of: Any = None,
    engine: str | None = None,
) -> QueryResult:
    """Features of *layer* within *distance_m* metres of a point or of another feature.

    Parameters
    ----------
    store
        An open store.
    layer
        A declared layer with geometry.
    distance_m
        The distance in metres (≥ 0), measured in the UTM zone of the point.
    point
        ``(lon, lat)`` in EPSG:4326, or ``"lon,lat"``.
    of
        ``(layer, id)`` or ``"layer:id"``: measure from that feature instead (it is left out).
    engine
        ``"sql"`` or ``"memory"``; by default SQL on PostGIS, memory otherwise.

    Returns
    -------
    QueryResult
        The layer's columns plus ``distance_m``, nearest first (ties by id).

    Raises
    ------
    LayerNotFoundError, ValidationError, NotFoundError
        Unknown layer, bad distance or point, point outside the area, unknown feature.
    """
    spec = spec_of(layer)
    distance = positive("distance_m", distance_m)
    versions: dict[str, Any] = {}
    target, crs, self_id = _target(store, point, of, versions)
    use_sql = _use_sql(store, engine)
    names = _names(layer, point)
    if use_sql:
        frame, stamps = _within_sql(store, spec, target, crs, distance, self_id, names)
    else:
        stamps = _cache.stamps(store, names)
    _check_point(store, point, target, versions, stamps)
    if not use_sql:
        frame = _within_memory(store, spec, stamps[layer], target, crs, distance, self_id)
    versions.setdefault(layer, _version_of(store, layer, stamps[layer]))
    params = {"layer": layer, "distance_m": distance, "point": point, "of": of}
    return QueryResult(
        "within", frame, params, crs, versions, "postgis" if use_sql else "straight-line"
    )


def _use_sql(store: Any, engine: str | None) -> bool:
    if engine not in (None, "sql", "memory"):
        raise ValidationError(f"engine must be 'sql' or 'memory', got {engine!r}")
    if engine == "sql" and not is_postgis(store):
        raise ValidationError("engine='sql' needs a PostGIS store")
    return engine != "memory" and is_postgis(store)


def _version_of(store: Any, layer: str, stamp: Any) -> int:
    """Return the version number of *stamp*; the store's own error if never written."""
    if stamp is None:
        _cache.layer(store, layer, None)  # raises LayerNotFoundError
    return stamp[0]


def _within_memory(store, spec, stamp, target, crs, distance, self_id) -> gpd.GeoDataFrame:
    _version_of(store, spec.name, stamp)
    frame = _cache.layer(store, spec.name, stamp)
    geoms, tree = _cache.metric_index(store, spec.name, stamp, frame, crs)
    tgt = _cache.project(target, crs)
    idx = tree.query(tgt, predicate="dwithin", distance=distance)
    arrays = _cache.column_arrays(store, spec.name, stamp, frame)
    return _pick(arrays, spec, idx, shapely.distance(geoms[idx], tgt), self_id)


def _pick(
    arrays, spec, idx, distance, self_id, k: int | None = None, rank: bool = False
) -> gpd.GeoDataFrame:
    """Rows *idx* of the layer with their *distance*, nearest first (ties by id), at most *k*.

    *arrays* are the layer's column arrays and geometry (see ``_cache.column_arrays``). With
    *rank*, a ``rank`` column (1, 2 …) after the distance.
    """
    values, geometry = arrays
    ids = np.asarray(values[spec.id_field])[idx].astype(str)
    distance = np.asarray(distance, dtype=float)
    if self_id is not None and self_id[0] == spec.name:
        keep = ids != self_id[1]
        idx, distance, ids = idx[keep], distance[keep], ids[keep]
    order = np.lexsort((ids, sort_key_distance(distance)))[:k]
    rows = idx[order]
    columns = {c: v.take(rows) for c, v in values.items()}
    for c in spec.all_columns:
        if c.dtype == "json" and c.name in columns:
            columns[c.name] = none_for_null(columns[c.name])
    columns["distance_m"] = distance[order]
    if rank:
        columns["rank"] = np.arange(1, len(rows) + 1)
    return geoframe(columns, geometry.take(rows), len(rows))


_TARGET_SQL = (
    "WITH q AS (SELECT ST_GeomFromWKB(:wkb, 4326) AS g, "
    "ST_Transform(ST_GeomFromWKB(:wkb, 4326), :srid) AS gm)"
)


def _within_sql(store, spec, target, crs, distance, self_id, names):
    tbl = q.table(store, spec.name)
    idf = f"t.{q.ident(spec.id_field)}"
    params = {
        "wkb": shapely.to_wkb(target),
        "srid": q.srid(crs),
        "d": distance,
        "pad": distance * 1.01 + 10.0,
    }
    not_self = ""
    if self_id is not None and self_id[0] == spec.name:
        not_self = f" AND {idf}::text <> :self"
        params["self"] = self_id[1]
    # Each candidate of the index (bounding boxes) is projected and measured once: OFFSET 0
    # keeps the inner SELECT whole, so its distance is not computed again by the filter and
    # the ORDER BY (the distance test is the inclusive one of ST_DWithin).
    sql = (
        f"{_TARGET_SQL} SELECT {q.select_list(spec.all_columns, alias='c')}, c.distance_m "
        "FROM (SELECT t.*, ST_Distance(ST_Transform(t.geom, :srid), q.gm) AS distance_m "
        f"FROM {tbl} t, q WHERE t.geom && ST_Transform(ST_Expand(q.gm, :pad), 4326){not_self} "
        "OFFSET 0) c WHERE c.distance_m <= :d "
        f"ORDER BY round(c.distance_m::numeric, 3), c.{q.ident(spec.id_field)}"
    )
    columns, rows, stamps = q.run_versioned(store, sql, params, names, one_plan=True)
    return q.typed_frame(spec, columns, rows, ["distance_m"]), stamps


# -- query 2: k nearest ---------------------------------------------------------------------------


def nearest(
    store: Any,
    layer: str,
    k: int = 5,
    *,
    point: Any = None,
    of: Any = None,
    where: Any = None,
    state: pd.DataFrame | None = None,
    engine: str | None = None,
) -> QueryResult:
    """Find the *k* features of *layer* nearest to a point or feature, optionally filtered.

    Parameters
    ----------
    store
        An open store.
    layer
        A declared layer with geometry.
    k
        How many (≥ 1).
    point, of
        Where to measure from, as in :func:`within_distance`.
    where
        Conditions on declared columns or live-state columns: ``{"kind": "surface"}``,
        ``[("available_spaces", ">", 0)]`` or ``"available_spaces>0"``.
    state
        Live state, one row per feature keyed by the layer's id field (e.g. ``lot_id`` and
        ``available_spaces``); when given, only features present in it are candidates and its
        columns are joined to the answer.
    engine
        ``"sql"`` or ``"memory"``; by default SQL on PostGIS (KNN ``<->``), memory otherwise.

    Returns
    -------
    QueryResult
        At most *k* rows, nearest first (ties by id), with ``distance_m`` and ``rank``.

    Raises
    ------
    LayerNotFoundError, ValidationError, NotFoundError
        Unknown layer or column, k < 1, bad point or point outside the area, unknown feature.
    """
    spec = spec_of(layer)
    k = count("k", k)
    versions: dict[str, Any] = {}
    conditions = parse_where(where)
    on_layer, on_state = _split_conditions(spec, conditions, state)
    target, crs, self_id = _target(store, point, of, versions)
    live = _state_ids(spec, state, on_state)
    use_sql = _use_sql(store, engine)
    names = _names(layer, point)
    if use_sql:
        frame, stamps = _nearest_sql(store, spec, target, crs, k, self_id, on_layer, live, names)
    else:
        stamps = _cache.stamps(store, names)
    _check_point(store, point, target, versions, stamps)
    if not use_sql:
        frame = _nearest_memory(store, spec, stamps[layer], target, crs, k, self_id, on_layer,
                                live)
    versions.setdefault(layer, _version_of(store, layer, stamps[layer]))
    if live is not None:
        extra = live.drop(
            columns=[c for c in live.columns if c in frame.columns and c != spec.id_field]
        )
        frame = frame.merge(extra, on=spec.id_field, how="left")
        frame = gpd.GeoDataFrame(frame, geometry="geometry", crs=CRS)
        frame["rank"] = np.arange(1, len(frame) + 1)  # after the live columns
    params = {
        "layer": layer,
        "k": k,
        "point": point,
        "of": of,
        "where": [list(c) for c in conditions],
        "state": None if state is None else f"{len(state)} rows",
    }
    return QueryResult(
        "nearest", frame, params, crs, versions, "postgis" if use_sql else "straight-line"
    )


def _nearest_memory(store, spec, stamp, target, crs, k, self_id, on_layer, live):
    """Find the k nearest in memory: STRtree candidates in a growing radius, exact distances."""
    _version_of(store, spec.name, stamp)
    frame = _cache.layer(store, spec.name, stamp)
    keep = _mask(frame, on_layer)
    if live is not None:
        keep &= frame[spec.id_field].astype(str).isin(live[spec.id_field]).to_numpy()
    geoms, tree = _cache.metric_index(store, spec.name, stamp, frame, crs)
    tgt = _cache.project(target, crs)
    wanted = k + (self_id is not None and self_id[0] == spec.name)
    candidates = np.flatnonzero(keep)
    if len(candidates) > NEAREST_SCAN:
        candidates = _nearest_candidates(tree, geoms, tgt, keep, wanted, candidates)
    distance = shapely.distance(geoms[candidates], tgt)
    arrays = _cache.column_arrays(store, spec.name, stamp, frame)
    return _pick(arrays, spec, candidates, distance, self_id, k, rank=live is None)


# Up to this many candidate features are measured one by one; beyond, an STRtree narrows them.
NEAREST_SCAN = 2_000


def _nearest_candidates(tree, geoms, tgt, keep, wanted, every) -> np.ndarray:
    """Features within a radius that surely holds the *wanted* nearest of those kept.

    The radius grows from the nearest feature's distance until at least *wanted* kept features
    lie within it and the *wanted*-th of them is closer than the radius (ties to the
    millimetre included), so no feature outside it can be in the answer.
    """
    _, gap = tree.query_nearest(tgt, return_distance=True)
    radius = max(float(gap.min()) if len(gap) else 0.0, 1.0) * 2.0 + 10.0
    x0, y0, x1, y1 = shapely.total_bounds(geoms)
    reach = float(np.hypot(x1 - x0, y1 - y0)) + float(tgt.distance(shapely.box(x0, y0, x1, y1)))
    while radius <= reach:
        hit = tree.query(tgt, predicate="dwithin", distance=radius)
        hit = hit[keep[hit]]
        if len(hit) >= wanted:
            d = sort_key_distance(shapely.distance(geoms[hit], tgt))
            if np.partition(d, wanted - 1)[wanted - 1] + 0.001 <= radius:
                return hit
        radius *= 4.0
    return every


def _nearest_sql(store, spec, target, crs, k, self_id, on_layer, live, names):
    tbl = q.table(store, spec.name)
    idf = f"t.{q.ident(spec.id_field)}"
    params: dict[str, Any] = {"wkb": shapely.to_wkb(target), "srid": q.srid(crs), "k": k}
    filters = []
    for i, (col, op, value) in enumerate(on_layer):
        filters.append(f"t.{q.ident(col)} {op} :v{i}")  # op from the OPS whitelist
        params[f"v{i}"] = value
    if self_id is not None and self_id[0] == spec.name:
        filters.append(f"{idf}::text <> :self")
        params["self"] = self_id[1]
    if live is not None:
        filters.append(f"{idf}::text = ANY(:ids)")
        params["ids"] = live[spec.id_field].tolist()
    where = "".join(f" AND {f}" for f in filters)
    dist = "ST_Distance(ST_Transform(t.geom, :srid), q.gm)"
    # KNN (<->, GiST) finds k candidates; the k-th of them bounds the true k-th metric distance,
    # and an exact metric search within that bound gives the answer, ties broken by id.
    sql = (
        f"{_TARGET_SQL}, cand AS (SELECT {dist} AS d FROM {tbl} t, q WHERE TRUE{where} "
        "ORDER BY t.geom <-> q.g LIMIT :k), r AS (SELECT max(d) AS dmax FROM cand) "
        f"SELECT {q.select_list(spec.all_columns)}, {dist} AS distance_m FROM {tbl} t, q, r "
        "WHERE r.dmax IS NOT NULL "
        "AND t.geom && ST_Transform(ST_Expand(q.gm, r.dmax * 1.01 + 10), 4326) "
        f"AND ST_DWithin(ST_Transform(t.geom, :srid), q.gm, r.dmax + 0.001){where} "
        f"ORDER BY round({dist}::numeric, 3), {idf} LIMIT :k"
    )
    columns, rows, stamps = q.run_versioned(store, sql, params, names, one_plan=True)
    return q.typed_frame(spec, columns, rows, ["distance_m"], rank=live is None), stamps
