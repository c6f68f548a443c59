"""Query 7: a layer, event kind or case category counted per grid or community over a period.

On PostGIS the counting is a GROUP BY inside the database.
"""

from __future__ import annotations

import logging
from typing import Any

import geopandas as gpd
import numpy as np
import pandas as pd
import shapely

from twin.errors import ValidationError
from twin.query import sql as q
from twin.query._common import QueryResult, current_version, field_of, read, spec_of
from twin.query.proximity import OPS, _mask, _use_sql, parse_where
from twin.schema import CASES, CRS, EVENTS

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
        ts = pd.Timestamp(value)
    except (TypeError, ValueError):
        raise ValidationError(
            f"{name} must be a date or time like 2026-03-01T08:00, got {value!r}"
        ) from None
    return ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")


def units(store: Any, level: str, versions: dict) -> gpd.GeoDataFrame:
    """Return the units of *level* with their geometry.

    Unit grids; grids dissolved by responsibility grid; or the community boundaries (grids
    dissolved by community when there is none).
    """
    if level not in LEVELS:
        raise ValidationError(f"level must be one of {', '.join(LEVELS)}, got {level!r}")
    key = LEVELS[level]
    if level == "community":
        from twin.query._common import read_optional

        community = read_optional(store, "community", versions)
        if community is not None and len(community):
            return community[["community_code", "name", "geometry"]].rename(
                columns={"community_code": "unit"}
            )
    grids = read(store, "grid_cells", versions)
    if level == "grid":
        return grids[["grid_code", "name", "geometry"]].rename(columns={"grid_code": "unit"})
    if level == "community":
        grids = grids.assign(
            community_code=grids.county_code + grids.street_code + grids.community_code
        )
    merged = grids.dissolve(by=key, as_index=False)[[key, "geometry"]]
    merged["name"] = merged[key]
    return merged.rename(columns={key: "unit"})[["unit", "name", "geometry"]]


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
    unit_frame = units(store, level, versions)
    if use_sql:
        grouped, unassigned = _counts_sql(store, source, key, t0, t1, type, conditions, sum)
        if source not in TABLE_SOURCES:
            versions[source] = current_version(store, source)
    else:
        grouped, unassigned = _counts_memory(
            store, source, key, t0, t1, type, conditions, sum, versions
        )
    out = unit_frame.merge(grouped, on="unit", how="left")
    out["count"] = out["count"].fillna(0).astype("int64")
    if sum is not None:
        out[f"sum_{sum}"] = out[f"sum_{sum}"].fillna(0).astype(float)
    out = out[[c for c in out.columns if c != "geometry"] + ["geometry"]]
    out = gpd.GeoDataFrame(out, geometry="geometry", crs=CRS).sort_values("unit")
    outside = sorted(set(grouped["unit"]) - set(unit_frame["unit"]))
    params = {
        "source": source,
        "level": level,
        "start": t0,
        "end": t1,
        "type": type,
        "where": [list(c) for c in conditions],
        "sum": sum,
    }
    notes = {"unassigned": int(unassigned), "units_not_in_layer": outside}
    return QueryResult(
        "counts",
        out.reset_index(drop=True),
        params,
        None,
        versions,
        "postgis" if use_sql else "memory",
        notes=notes,
    )


def _counts_memory(store, source, key, t0, t1, type_, conditions, sum_, versions):
    if source == "events":
        frame = store.read_events(t0, t1, kind=type_)
    elif source == "cases":
        frame = store.read_cases()
        times = pd.to_datetime(frame["requested_at"], utc=True)
        keep = np.ones(len(frame), dtype=bool)
        if t0 is not None:
            keep &= (times >= t0).to_numpy()
        if t1 is not None:
            keep &= (times < t1).to_numpy()
        if type_ is not None:
            keep &= (frame["service_code"] == type_).to_numpy()
        frame = frame[keep]
    else:
        frame = read(store, source, versions)
        frame = frame[_mask(frame, conditions)]
    unassigned = int(frame[key].isna().sum())
    frame = frame[frame[key].notna()]
    agg = {"count": (key, "size")}
    if sum_ is not None:
        agg[f"sum_{sum_}"] = (sum_, "sum")
    grouped = (
        pd.DataFrame(frame).groupby(key).agg(**agg).reset_index().rename(columns={key: "unit"})
    )
    return grouped, unassigned


def _counts_sql(store, source, key, t0, t1, type_, conditions, sum_):
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
    total = f", sum({q.ident(sum_)}) AS {q.ident('sum_' + sum_)}" if sum_ else ""
    sql = (
        f"SELECT {q.ident(key)} AS unit, count(*) AS count{total} FROM {tbl}{where} "
        "GROUP BY 1 ORDER BY 1"
    )
    rows = q.run(store, sql, params)
    unassigned = rows.loc[rows["unit"].isna(), "count"].sum()
    grouped = rows[rows["unit"].notna()].copy()
    grouped["count"] = grouped["count"].astype("int64")
    if sum_:
        grouped[f"sum_{sum_}"] = grouped[f"sum_{sum_}"].astype(float)
    return grouped, int(unassigned)


_ = shapely  # geometry of units comes from geopandas dissolve
