"""Case intake in batches: many reports located, routed, timed and stored in one transaction.

:func:`twin.cases.report` files one report with one round of reads and writes. Reports that
arrive together (Open311 posts gathered for a few milliseconds by the HTTP face) go through
:func:`report_many` instead: one point-in-grid lookup for all of them (the grid index kept with
the grid layer's frame), routes and filing deadlines computed for the whole batch, one read of
the recent cases for duplicates, and one transaction for the cases, their first steps and
their audit rows. Each case comes out exactly as :func:`twin.cases.report` would make it.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

import geopandas as gpd
import numpy as np
import pandas as pd
import shapely

from twin import cases as cases_mod
from twin import layercache
from twin.enrich import grid_index
from twin.errors import TwinError, ValidationError
from twin.timeutil import to_utc
from twin.workcal import WorkCalendar, load_calendar

LOGGER = logging.getLogger(__name__)

#: Columns of the recent cases read once per batch to find possible duplicates.
_DUPLICATE_COLUMNS = ["id", "service_code", "status", "requested_at", "lon", "lat"]


def _index(grid_cells: gpd.GeoDataFrame):
    """Return the grid index of a grid layer's frame, built once per frame."""
    return layercache.of_frame(grid_cells, "intake.grid_index", lambda: grid_index(grid_cells))


def _workers(grid_cells: gpd.GeoDataFrame) -> tuple[dict[str, str], dict[str, str]]:
    """Grid code → its grid worker, and responsibility grid → the first worker named in it."""
    def build() -> tuple[dict[str, str], dict[str, str]]:
        if "grid_worker" not in grid_cells:
            return {}, {}
        named = grid_cells.loc[grid_cells["grid_worker"].notna()
                               & (grid_cells["grid_worker"].astype(str) != "")]
        by_grid = dict(zip(named["grid_code"].astype(str), named["grid_worker"].astype(str),
                           strict=True))
        by_resp: dict[str, str] = {}
        for resp, worker in zip(named["resp_grid_id"], named["grid_worker"].astype(str),
                                strict=True):
            if resp is not None and not pd.isna(resp):
                by_resp.setdefault(str(resp), worker)
        return by_grid, by_resp
    return layercache.of_frame(grid_cells, "intake.workers", build)


def _levels(grid_cells: gpd.GeoDataFrame) -> dict[str, str]:
    """Grid code → area class (management level A/B/C)."""
    def build() -> dict[str, str]:
        if "management_level" not in grid_cells:
            return {}
        return {str(g): str(level) for g, level in zip(grid_cells["grid_code"],
                                                        grid_cells["management_level"],
                                                        strict=True)
                if level in cases_mod.AREA_CLASSES}
    return layercache.of_frame(grid_cells, "intake.levels", build)


def locate_many(lon: Sequence[float], lat: Sequence[float],
                grid_cells: gpd.GeoDataFrame | None) -> pd.DataFrame:
    """Return the places of many points at once, as :func:`twin.cases.locate` gives them.

    Columns ``grid_code``, ``resp_grid_id``, ``community_code``, ``street_code``, ``area_class``.
    """
    n = len(lon)
    columns = ("grid_code", "resp_grid_id", "community_code", "street_code", "area_class")
    if grid_cells is None or len(grid_cells) == 0 or n == 0:
        return pd.DataFrame({c: [None] * n for c in columns})
    index = _index(grid_cells)
    where = index.locate(shapely.points(np.asarray(lon, dtype=float),
                                        np.asarray(lat, dtype=float)), crs=4326)
    out = {c: index.take(c, where) for c in columns[:4]}
    levels = _levels(grid_cells)
    out["area_class"] = np.array([levels.get(g) for g in out["grid_code"]], dtype=object)
    return pd.DataFrame(out, dtype=object)


def _worker(place: Mapping[str, Any], workers: tuple[dict[str, str], dict[str, str]]
            ) -> str | None:
    """Return the grid worker of a place (:func:`twin.cases.grid_worker`) from prepared maps."""
    grid = place.get("grid_code")
    if not grid:
        return None
    return workers[0].get(grid) or (workers[1].get(place.get("resp_grid_id") or "")
                                    if place.get("resp_grid_id") else None)


def _around(reports: Sequence[Mapping[str, Any]], radius_m: float = cases_mod.DUPLICATE_RADIUS_M
            ) -> list[tuple[float, float, float, float]]:
    """Return a box around each report reaching a little past *radius_m* every way.

    The store reads only the cases in them: a duplicate check reads the few cases near the
    reports, not every case of the day.
    """
    from twin.crs import offset_lonlat

    lon = np.array([float(r["lon"]) for r in reports])
    lat = np.array([float(r["lat"]) for r in reports])
    reach = radius_m + 1  # on the tangent plane the distances are measured on; a metre spare
    west, south = offset_lonlat(lon, lat, -reach, -reach)
    east, north = offset_lonlat(lon, lat, reach, reach)
    return list(zip(west.tolist(), south.tolist(), east.tolist(), north.tolist(), strict=True))


def _duplicates(recent: pd.DataFrame, reports: Sequence[Mapping[str, Any]], ts: pd.Timestamp,
                hours: float, radius_m: float = cases_mod.DUPLICATE_RADIUS_M) -> list[list[str]]:
    """Return, per report, the ids :func:`twin.cases.find_duplicates` finds (one array step)."""
    from twin.crs import metres_from

    found: list[list[str]] = [[] for _ in reports]
    if recent.empty or not reports:
        return found
    requested = pd.to_datetime(recent["requested_at"], utc=True)
    near = recent.loc[recent["status"].isin(cases_mod.OPEN_STATUSES)
                      & (requested >= ts - pd.Timedelta(hours=hours)) & (requested <= ts)]
    codes = np.array([r["category"] for r in reports], dtype=object)
    near = near.loc[near["service_code"].isin(set(codes))]
    if near.empty:
        return found
    # metres from each report (rows) to each open case (columns), on the report's tangent plane
    east, north = metres_from(np.array([float(r["lon"]) for r in reports])[:, None],
                              np.array([float(r["lat"]) for r in reports])[:, None],
                              near["lon"].to_numpy(dtype=float)[None, :],
                              near["lat"].to_numpy(dtype=float)[None, :])
    dist = np.hypot(east, north)
    dist[codes[:, None] != near["service_code"].to_numpy(dtype=object)[None, :]] = np.inf
    ids = near["id"].to_numpy(dtype=object)
    order = np.argsort(dist, axis=1, kind="stable")
    for i in np.flatnonzero((dist <= radius_m).any(axis=1)):  # only reports with a duplicate
        ranked = order[i]
        found[i] = [str(v) for v in ids[ranked][dist[i, ranked] <= radius_m]]
    return found


def report_many(
    store,
    reports: Sequence[Mapping[str, Any]],
    *,
    grid_cells: gpd.GeoDataFrame | None = None,
    categories: pd.DataFrame | None = None,
    calendar: WorkCalendar | None = None,
    at: Any = None,
    duplicate_hours: float = 24,
    places: Sequence[Mapping[str, Any]] | None = None,
) -> list[dict[str, Any] | TwinError]:
    """Collect many reports at once; return, per report, its stored case or why it was refused.

    Parameters
    ----------
    store
        A :class:`twin.store.Store`.
    reports
        One mapping per report with the arguments of :func:`twin.cases.report` (``category``,
        ``lon``, ``lat``, ``description``, ``source``, ``actor``, ``role``, optionally
        ``photos``, ``reporter``, ``urgency``, ``address``, ``attributes``) and, for the audit
        row written with the case, ``origin`` (``audit=False`` writes none).
    grid_cells
        The unit grids (the layer cache's frame: its index is built once and kept with it).
    categories, calendar
        Category table and working calendar (default: the seed tables).
    at
        When they were reported (default now; one time for the batch).
    duplicate_hours
        As in :func:`twin.cases.report` (one read of the recent cases for the whole batch).
    places
        What :func:`locate_many` gave for these reports when the caller located them already
        (in order, one per report).

    Returns
    -------
    list
        In the order of *reports*: the stored case (a dict as :func:`twin.cases.report`
        returns it), or the :class:`~twin.errors.TwinError` that refused that report (an
        unknown category, a bad position, a grid worker outside their grids). A refused report
        stores nothing; the others are stored together.

    Raises
    ------
    TwinError
        If the store refuses the batch (nothing of it is stored).
    """
    ts = cases_mod._time(at)
    results: list[dict[str, Any] | TwinError | None] = [None] * len(reports)
    checked: list[tuple[int, Mapping[str, Any], pd.Series]] = []
    known: dict[str, pd.Series] = {}
    for i, rep in enumerate(reports):
        try:
            cases_mod._check_report(rep["role"], rep["source"], rep["lon"], rep["lat"],
                                    rep["description"])
            code = str(rep["category"])
            if code not in known:
                known[code] = cases_mod.lookup_category(code, categories)
            checked.append((i, rep, known[code]))
        except TwinError as exc:
            results[i] = exc
        except (KeyError, TypeError, ValueError) as exc:
            results[i] = ValidationError(f"report {i} is incomplete or wrong: {exc}")
    if places is not None and len(places) == len(reports):
        located = [dict(places[i]) for i, _, _ in checked]
    else:
        located = locate_many([float(r["lon"]) for _, r, _ in checked],
                              [float(r["lat"]) for _, r, _ in checked], grid_cells
                              ).to_dict("records")
    keep: list[tuple[int, Mapping[str, Any], pd.Series, dict[str, Any]]] = []
    for (i, rep, cat), place in zip(checked, located, strict=True):
        try:
            cases_mod._check_collect_place(rep["actor"], rep["role"], place, grid_cells)
        except TwinError as exc:
            results[i] = exc
            continue
        keep.append((i, rep, cat, place))
    if keep:
        stored = _store(store, keep, ts, grid_cells, categories, calendar, duplicate_hours)
        for (i, *_), case in zip(keep, stored, strict=True):
            results[i] = case
    return results  # type: ignore[return-value]


def _store(store, keep, ts, grid_cells, categories, calendar, duplicate_hours) -> list[dict]:
    """Build the cases of the accepted reports and store them with their steps and audit rows."""
    workers = _workers(grid_cells) if grid_cells is not None and len(grid_cells) else ({}, {})
    frame = pd.DataFrame({"service_code": [r["category"] for _, r, _, _ in keep],
                          "area_class": [p["area_class"] for *_, p in keep]})
    due = cases_mod.stage_deadlines(frame, "file", pd.Series([ts] * len(frame)),
                                    categories=categories, calendar=calendar or load_calendar())
    reports = [r for _, r, _, _ in keep]
    recent = store.read_cases(since=(ts - pd.Timedelta(hours=duplicate_hours)).to_pydatetime(),
                              # the embedded store keeps milliseconds: a bound 1 ms on
                              until=(ts + pd.Timedelta(milliseconds=1)).to_pydatetime(),
                              columns=_DUPLICATE_COLUMNS, boxes=_around(reports))
    duplicates = _duplicates(recent, reports, ts, duplicate_hours)
    iso = cases_mod._iso(ts)
    # an organisation owning the category at the place gets the case first (twin.cases.route)
    orgs = cases_mod.owners_at([float(r["lon"]) for _, r, _, _ in keep],
                               [float(r["lat"]) for _, r, _, _ in keep],
                               [r["category"] for _, r, _, _ in keep], ts,
                               cases_mod._organisations(store, None))
    cases, histories, audits = [], [], []
    fresh = iter(cases_mod.new_case_ids(ts, len(keep)))
    for (_, rep, cat, place), file_due, dupes, org in zip(keep, due, duplicates, orgs,
                                                          strict=True):
        routed = cases_mod.route_to(cat, dict(place), _worker(place, workers), org)
        unit = cases_mod.stage_limit(cat, "file", place["area_class"])[1]
        deadline = cases_mod._iso(to_utc(file_due))
        data = {
            "category": {"zh": cat["name_zh"], "en": cat["name_en"], "major": cat["major_code"],
                         "minor": cat["minor_code"]},
            "photos": list(rep.get("photos") or ()),
            "reporter": dict(rep.get("reporter") or {}),
            "address": rep.get("address"),
            "route": routed["route"], "post": routed["post"],
            "times": {"collected": iso}, "counts": {},
            "deadlines": {"file": deadline},
            "timer": {"stage": "file", "start": iso, "deadline": deadline, "unit": unit},
            "supervision": [],
            "possible_duplicates": dupes,
        }
        if rep.get("attributes"):
            data["attributes"] = dict(rep["attributes"])
        if org:
            data["org"] = {"id": org, "routed": iso}
        case = {
            "id": next(fresh) if not rep.get("case_id") else rep["case_id"],
            "status": "collected", "service_code": rep["category"], "family": cat["family"],
            "source": rep["source"], "description": rep["description"],
            "lon": float(rep["lon"]), "lat": float(rep["lat"]),
            **{k: place[k] for k in ("grid_code", "resp_grid_id", "community_code",
                                     "street_code")},
            "area_class": place["area_class"], "urgency": rep.get("urgency", "normal"),
            "assignee": routed["assignee"], "department": routed["department"],
            "requested_at": ts, "updated_at": ts, "deadline_at": None, "closed_at": None,
            **cases_mod.data_columns(data), "data": data,
        }
        cases.append(case)
        histories.append({"at": ts, "actor": rep["actor"], "role": rep["role"],
                          "action": "collect", "from_status": None, "to_status": "collected",
                          "note": "", "data": {"route": routed["route"]}})
        if rep.get("audit", True):
            audits.append((rep["actor"], "case.collect", f"case:{case['id']}",
                           {"role": rep["role"], "source": rep["source"]},
                           rep.get("origin", "")))
    store.create_cases(cases, histories=histories, audits=audits)
    LOGGER.info("intake: %d cases collected in one batch", len(cases))
    return [{**c, "version": 1} for c in cases]

