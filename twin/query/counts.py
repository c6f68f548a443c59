"""Query 7: a layer, event kind or case category counted per grid or community over a period.

On PostGIS the counting is a GROUP BY inside the database.
"""

from __future__ import annotations

import logging
from typing import Any

import geopandas as gpd
import numpy as np
import pandas as pd

from twin.errors import ValidationError
from twin.query import _cache
from twin.query import sql as q
from twin.query._common import QueryResult, field_of, geoframe, spec_of
from twin.query.proximity import OPS, _mask, _use_sql, parse_where
from twin.schema import CASES, EVENTS
from twin.timeutil import to_utc

LOGGER = logging.getLogger(__name__)

LEVELS = {"grid": "grid_code", "resp_grid": "resp_grid_id", "community": "community_code"}
TABLE_SOURCES = {
    "events": (EVENTS, "observed_at", "kind"),
    "cases": (CASES, "requested_at", "service_code"),
}


def _time(name: str, value: Any) -> pd.Timestamp | None:
    if value is None or value == "":
        return None
    try:
        return to_utc(value)
    except ValidationError:
        raise ValidationError(
            f"{name} must be a date or time like 2026-03-01T08:00, got {value!r}"
        ) from None


UNIT_LAYERS = ("community", "grid_cells")


def units(
    store: Any, level: str, versions: dict, stamps: dict | None = None
) -> gpd.GeoDataFrame:
    """Return the units of *level* with their geometry (shared between calls: do not modify).

    Unit grids; grids dissolved by responsibility grid; or the community boundaries (grids
    dissolved by community when there is none). Made once per version of the layer they come
    from; *stamps* are the current stamps of :data:`UNIT_LAYERS` when the caller has them.
    """
    return _units(store, level, versions, stamps)[0]


def _units(
    store: Any, level: str, versions: dict, stamps: dict | None = None
) -> tuple[gpd.GeoDataFrame, pd.Index]:
    """Return :func:`units` and an index of their codes (its hash table kept with it)."""
    if level not in LEVELS:
        raise ValidationError(f"level must be one of {', '.join(LEVELS)}, got {level!r}")
    if stamps is None or any(n not in stamps for n in UNIT_LAYERS):
        stamps = _cache.stamps(store, UNIT_LAYERS)
    if level == "community" and stamps["community"] is not None:
        stamp = stamps["community"]
        community = _cache.layer(store, "community", stamp)
        versions["community"] = stamp[0]
        if len(community):
            return _cache.derived(store, "community", stamp, ("units", level),
                                  lambda: _indexed(_community_units(community)))
    stamp = stamps["grid_cells"]
    grids = _cache.layer(store, "grid_cells", stamp)
    versions["grid_cells"] = stamp[0]
    return _cache.derived(store, "grid_cells", stamp, ("units", level),
                          lambda: _indexed(_grid_units(grids, level)))


def _indexed(unit_frame: gpd.GeoDataFrame) -> tuple[gpd.GeoDataFrame, pd.Index]:
    index = pd.Index(unit_frame["unit"].to_numpy(dtype=object), dtype=object)
    index.get_indexer(index[:1])  # builds the hash table now, once per version
    return unit_frame, index


def _community_units(community: gpd.GeoDataFrame) -> gpd.GeoDataFrame:
    return _sorted(
        community[["community_code", "name", "geometry"]].rename(
            columns={"community_code": "unit"}
        )
    )


def _grid_units(grids: gpd.GeoDataFrame, level: str) -> gpd.GeoDataFrame:
    key = LEVELS[level]
    if level == "grid":
        return _sorted(
            grids[["grid_code", "name", "geometry"]].rename(columns={"grid_code": "unit"})
        )
    if level == "community":
        grids = grids.assign(
            community_code=grids.county_code + grids.street_code + grids.community_code
        )
    merged = grids.dissolve(by=key, as_index=False)[[key, "geometry"]]
    merged["name"] = merged[key]
    return _sorted(merged.rename(columns={key: "unit"})[["unit", "name", "geometry"]])


def _sorted(unit_frame: gpd.GeoDataFrame) -> gpd.GeoDataFrame:
    """Units in the order of the answer: by unit code."""
    return unit_frame.sort_values("unit", kind="stable").reset_index(drop=True)


def counts_per_grid(
    store: Any,
    source: str,
    *,
    level: str = "grid",
    start: Any = None,
    end: Any = None,
    type: str | None = None,  # noqa: A002 - the word planners use
    where: Any = None,
    sum: str | None = None,  # noqa: A002
    engine: str | None = None,
) -> QueryResult:
    """Count features of a layer, or events / cases, per unit of *level*.

    Features are counted by the unit they were assigned when they entered the twin (the
    ``grid_code``, ``resp_grid_id`` and ``community_code`` columns, see ``twin.enrich``); rows
    without one are reported as ``unassigned`` in the result's notes.

    Parameters
    ----------
    store
        An open store.
    source
        A declared located layer, ``"events"`` or ``"cases"``.
    level
        ``"grid"`` (unit grid), ``"resp_grid"`` (responsibility grid) or ``"community"``.
    start, end
        The period ``start <= t < end`` (UTC unless a zone is given): events by ``observed_at``,
        cases by ``requested_at``; not used for layers.
    type
        Event ``kind`` (e.g. ``alarm``) or case ``service_code``.
    where
        Conditions on the layer's declared columns, as in :func:`twin.query.nearest`.
    sum
        A numeric declared column to add up per unit as well (e.g. ``households``).
    engine
        ``"sql"`` or ``"memory"``; by default SQL GROUP BY on PostGIS, memory otherwise.

    Returns
    -------
    QueryResult
        One row per unit (zeros included): ``unit``, ``name``, ``count`` [, ``sum_<column>``].

    Raises
    ------
    LayerNotFoundError, ValidationError
        Unknown layer or level, layer without grid assignment, bad period or column.
    """
    versions: dict[str, Any] = {}
    if level not in LEVELS:
        raise ValidationError(f"level must be one of {', '.join(LEVELS)}, got {level!r}")
    key = LEVELS[level]
    t0, t1 = _time("start", start), _time("end", end)
    if t0 is not None and t1 is not None and t1 <= t0:
        raise ValidationError(f"end {t1} must come after start {t0}")
    conditions = parse_where(where)
    if source in TABLE_SOURCES:
        table, time_col, type_col = TABLE_SOURCES[source]
        if sum is not None or conditions:
            raise ValidationError(f"sum= and where= apply to layers, not to {source}")
        columns = {c.name: c for c in table.columns}
    else:
        spec = spec_of(source, geometry=False)
        if not spec.located:
            raise ValidationError(
                f"layer {source!r} is not assigned to grids; count a located layer "
                "(buildings, parking, cameras, facilities, sensors …)"
            )
        if start is not None or end is not None or type is not None:
            raise ValidationError("start, end and type apply to events and cases, not to layers")
        columns = {c.name: c for c in spec.all_columns}
        for col, _op, _v in conditions:
            field_of(spec, col)
        if sum is not None:
            field_of(spec, sum)
            if columns[sum].dtype not in ("int", "float"):
                raise ValidationError(
                    f"sum needs a numeric column; {sum!r} is {columns[sum].dtype}"
                )
    use_sql = _use_sql(store, engine)
    layer = None if source in TABLE_SOURCES else source
    names = [*UNIT_LAYERS, *([layer] if layer else [])]
    if use_sql:
        grouped, unassigned, stamps = _counts_sql(
            store, source, key, t0, t1, type, conditions, sum, names
        )
    else:
        stamps = _cache.stamps(store, names)
    unit_frame, unit_index = _units(store, level, versions, stamps)
    if layer is not None:
        if stamps[layer] is None:
            _cache.layer(store, layer, None)  # the store's LayerNotFoundError
        versions[layer] = stamps[layer][0]
    if not use_sql:
        grouped, unassigned = _counts_memory(
            store, source, key, t0, t1, type, conditions, sum, stamps.get(layer)
        )
    params = {
        "source": source,
        "level": level,
        "start": t0,
        "end": t1,
        "type": type,
        "where": [list(c) for c in conditions],
        "sum": sum,
    }
    return _answer((unit_frame, unit_index), grouped, unassigned, params, versions,
                   "postgis" if use_sql else "memory")


def counts_of_grouped(store: Any, grouped: dict[str, np.ndarray], unassigned: int,
                      params: dict[str, Any], method: str) -> QueryResult:
    """Return :func:`counts_per_grid`'s answer for events or cases counted elsewhere.

    *grouped* holds the units (``unit``) and their counts (``count``), *unassigned* the rows
    without a unit, *params* the checked parameters (``level`` among them): what
    :mod:`twin.batch` adds up over the parts of a year of events.
    """
    versions: dict[str, Any] = {}
    return _answer(_units(store, params["level"], versions), grouped, unassigned, params,
                   versions, method)


def _answer(units_: tuple[gpd.GeoDataFrame, pd.Index], grouped: dict[str, np.ndarray],
            unassigned: int, params: dict[str, Any], versions: dict[str, Any],
            method: str) -> QueryResult:
    out, outside = _join_counts(*units_, grouped, params.get("sum"))
    notes = {"unassigned": int(unassigned), "units_not_in_layer": outside}
    return QueryResult("counts", out, params, None, versions, method, notes=notes)


def _join_counts(
    unit_frame: gpd.GeoDataFrame,
    unit_index: pd.Index,
    grouped: dict[str, np.ndarray],
    sum_: str | None,
) -> tuple[gpd.GeoDataFrame, list]:
    """Every unit (in *unit_frame*'s order) with its count [and sum], zeros where none.

    *unit_index* holds the units' codes in that order. Also returns the counted units that are
    not in *unit_frame*.
    """
    at = unit_index.get_indexer(np.asarray(grouped["unit"], dtype=object))
    found = at >= 0
    columns = {"unit": unit_frame["unit"].array, "name": unit_frame["name"].array}
    counts = np.zeros(len(unit_frame), dtype="int64")
    counts[at[found]] = grouped["count"][found]
    columns["count"] = counts
    if sum_ is not None:
        sums = np.zeros(len(unit_frame), dtype=float)
        sums[at[found]] = grouped[f"sum_{sum_}"][found]
        columns[f"sum_{sum_}"] = sums
    outside = sorted(np.asarray(grouped["unit"], dtype=object)[~found].tolist())
    return geoframe(columns, unit_frame.geometry.values, len(unit_frame)), outside


def _counts_memory(store, source, key, t0, t1, type_, conditions, sum_, stamp):
    if source in TABLE_SOURCES:
        frame = records_in_period(store, source, t0, t1, type_)
    else:
        frame = _cache.layer(store, source, stamp)
        # the layer's unit codes factorized once per version; the count itself is per call
        codes, uniques = _cache.derived(store, source, stamp, ("factorized", key),
                                        lambda: _factorize(frame[key]))
        keep = _mask(frame, conditions) if conditions else slice(None)
        return _grouped(codes[keep], uniques, frame, keep, sum_)
    codes, uniques = _factorize(frame[key])
    return _grouped(codes, uniques, frame, slice(None), sum_)


def records_in_period(store: Any, source: str, t0, t1, type_: str | None) -> pd.DataFrame:
    """Read the events or cases of ``[t0, t1)`` (and of one type) into memory."""
    if source == "events":
        return store.read_events(t0, t1, kind=type_)
    frame = store.read_cases()
    times = pd.to_datetime(frame["requested_at"], utc=True)
    keep = np.ones(len(frame), dtype=bool)
    if t0 is not None:
        keep &= (times >= t0).to_numpy()
    if t1 is not None:
        keep &= (times < t1).to_numpy()
    if type_ is not None:
        keep &= (frame["service_code"] == type_).to_numpy()
    return frame[keep]


def _factorize(values: pd.Series) -> tuple[np.ndarray, np.ndarray]:
    """Codes (-1 for null) and unique values: a group-by without pandas' per-call overhead."""
    codes, uniques = pd.factorize(values.to_numpy(dtype=object))
    return codes, np.asarray(uniques, dtype=object)


def _grouped(codes, uniques, frame, keep, sum_) -> tuple[dict[str, np.ndarray], int]:
    """Count (and sum *sum_* of) the rows *keep* of *frame* per unit; also the unassigned."""
    assigned = codes >= 0
    grouped = {
        "unit": uniques,
        "count": np.bincount(codes[assigned], minlength=len(uniques)).astype("int64"),
    }
    if sum_ is not None:
        values = frame[sum_].to_numpy(dtype=float, na_value=np.nan)[keep][assigned]
        grouped[f"sum_{sum_}"] = np.bincount(
            codes[assigned], weights=np.nan_to_num(values, nan=0.0), minlength=len(uniques)
        )
    counted = grouped["count"] > 0  # units whose rows were all filtered out were not counted
    if not counted.all():
        grouped = {k: v[counted] for k, v in grouped.items()}
    return grouped, int((~assigned).sum())


def _counts_sql(store, source, key, t0, t1, type_, conditions, sum_, names):
    params: dict[str, Any] = {}
    filters = []
    if source in TABLE_SOURCES:
        table_spec, time_col, type_col = TABLE_SOURCES[source]
        tbl = q.table(store, table_spec.name)
        if t0 is not None:
            filters.append(f"{q.ident(time_col)} >= :t0")
            params["t0"] = t0.to_pydatetime()
        if t1 is not None:
            filters.append(f"{q.ident(time_col)} < :t1")
            params["t1"] = t1.to_pydatetime()
        if type_ is not None:
            filters.append(f"{q.ident(type_col)} = :type")
            params["type"] = type_
    else:
        tbl = q.table(store, source)
        for i, (col, op, value) in enumerate(conditions):
            filters.append(f"{q.ident(col)} {OPS.get(op, op) if op in OPS else op} :v{i}")
            params[f"v{i}"] = value
    where = " WHERE " + " AND ".join(filters) if filters else ""
    total = f", sum({q.ident(sum_)}) AS s" if sum_ else ""
    # grouped inside the database and sent back as one row of arrays (no per-row decoding)
    assigned = "FILTER (WHERE unit IS NOT NULL)"
    sums = f", array_agg(s) {assigned} AS sums" if sum_ else ""
    sql = (
        f"SELECT array_agg(unit) {assigned} AS units, array_agg(n) {assigned} AS counts{sums}, "
        "sum(n) FILTER (WHERE unit IS NULL) AS unassigned "
        f"FROM (SELECT {q.ident(key)} AS unit, count(*) AS n{total} FROM {tbl}{where} "
        "GROUP BY 1) g"
    )
    row, stamps = q.run_versioned_row(store, sql, params, names)
    grouped = {
        "unit": np.array(row["units"] or (), dtype=object),
        "count": np.array(row["counts"] or (), dtype="int64"),
    }
    if sum_:
        total = np.array(row["sums"] or (), dtype=float)  # NULL sums (no values) become NaN
        grouped[f"sum_{sum_}"] = np.nan_to_num(total, nan=0.0)
    return grouped, int(row["unassigned"] or 0), stamps


