"""Organisations (共建共治): who owns which categories where, their own clocks and deadlines.

The organisations are data: the layer ``organisations`` (``layers/organisations.py``), one row
per service area, loaded and versioned like any layer. This module reads it (through the layer
cache, :mod:`twin.layercache`) and answers, vectorised over many cases at once:

- which organisation owns a category at a place and time (:func:`owners_at`): point in the
  service areas (one STRtree per layer version), the category among its ``services``, the
  date within its validity; a property company before an owners' committee before the others,
  the smallest area first;
- its own handling deadline for a case (:func:`org_deadlines`): its time limit for the
  category (its SLA; the category's own limit when it names none), on its own working hours
  (:func:`org_calendar`);
- which of its cases missed that deadline (:func:`overdue`); handing them back to the
  community under timeout supervision (督办) is :func:`twin.cases.escalate_org_overdue`;
- its indicators are :mod:`twin.orgkpi`'s.

Who may see or change organisations is decided in :mod:`twin.trust.organisations`.
"""

from __future__ import annotations

import functools
import logging
import re
from collections.abc import Collection
from dataclasses import replace
from datetime import date
from functools import cache
from typing import Any

import geopandas as gpd
import numpy as np
import pandas as pd
import shapely

from twin import layercache
from twin.errors import LayerNotFoundError, ValidationError
from twin.timeutil import local_zone, to_utc
from twin.workcal import UNITS, WorkCalendar, _parse_hhmm, load_calendar

LOGGER = logging.getLogger(__name__)

LAYER = "organisations"
#: A case's department when an organisation owns it: ``org:<org_id>``.
ORG_PREFIX = "org:"
#: Which organisation owns a place first when several could (a property company manages the
#: estate; the owners' committee oversees it; co-building units and social organisations serve).
TYPE_PRIORITY = ("property_company", "owners_committee", "co_building_unit",
                 "social_organisation", "residents_committee", "party_committee")
#: Statuses in which the organisation holds the case (its clock runs until it reports).
HOLDING = ("dispatched", "handling")

_SERVICE = re.compile(r"^\s*([PE]\d{4})\s*(?:=\s*([0-9]+(?:\.[0-9]+)?)\s*([a-z_]+))?\s*$")


def department_code(org_id: str) -> str:
    """Return the case department of organisation *org_id* (``org:<org_id>``)."""
    return f"{ORG_PREFIX}{org_id}"


def org_of_department(department: Any) -> str | None:
    """Return the organisation id of a case department, or None when no organisation holds it."""
    if isinstance(department, str) and department.startswith(ORG_PREFIX):
        return department[len(ORG_PREFIX):]
    return None


def parse_services(text: Any, known: Collection[str] | None = None
                   ) -> dict[str, tuple[float | None, str | None]]:
    """Parse ``E0101=4 working_hours; P0107=2 working_days; E0201`` → code → (amount, unit).

    A code alone owns the category with its own handling limit (``(None, None)``). With
    *known* (the category table's codes), a code not among them is refused.

    Raises
    ------
    ValidationError
        Naming the part that is not ``CODE`` or ``CODE=AMOUNT UNIT``, an unknown category or
        unit.
    """
    if text is None or (isinstance(text, float) and np.isnan(text)) or not str(text).strip():
        return {}
    out: dict[str, tuple[float | None, str | None]] = {}
    for part in re.split(r"[;；\n]+", str(text)):
        if not part.strip():
            continue
        found = _SERVICE.match(part)
        if not found:
            raise ValidationError(
                f"services: {part.strip()!r} is not CODE or CODE=AMOUNT UNIT "
                f"(e.g. E0101=4 working_hours; units {', '.join(UNITS)})")
        code, amount, unit = found.groups()
        if known is not None and code not in known:
            raise ValidationError(f"services: unknown category {code!r} (see "
                                  "data/seed/categories.csv)")
        if unit is not None and unit not in UNITS:
            raise ValidationError(f"services: unit {unit!r} of {code} is not one of "
                                  f"{', '.join(UNITS)}")
        out[code] = (float(amount), unit) if amount is not None else (None, None)
    return out


def parse_hours(text: Any) -> tuple[tuple[str, str], ...]:
    """Parse ``08:00-12:00, 13:30-17:30`` into working periods (empty: the community's hours).

    Raises
    ------
    ValidationError
        For a period that is not ``HH:MM-HH:MM`` with its start before its end.
    """
    if text is None or (isinstance(text, float) and np.isnan(text)) or not str(text).strip():
        return ()
    periods = []
    for part in re.split(r"[,，;；]+", str(text)):
        if not part.strip():
            continue
        pieces = [p.strip() for p in part.replace("–", "-").split("-")]
        if len(pieces) != 2 or _parse_hhmm(pieces[0]) >= _parse_hhmm(pieces[1]):
            raise ValidationError(f"working hours: {part.strip()!r} is not HH:MM-HH:MM with "
                                  "the start before the end (e.g. 08:00-12:00, 13:30-17:30)")
        periods.append((pieces[0], pieces[1]))
    return tuple(periods)


def check(areas: pd.DataFrame, known: Collection[str] | None = None) -> None:
    """Check every organisation's services and hours, and that one organisation is one kind.

    *known*: the category codes services may name (the category table's).

    Raises
    ------
    ValidationError
        Listing each organisation whose ``services`` or ``working_hours`` cannot be read.
    """
    problems = []
    for org_id, services, hours in areas[["org_id", "services", "working_hours"]].drop_duplicates(
            ).itertuples(index=False):
        for parse, value in ((lambda v: parse_services(v, known), services),
                             (parse_hours, hours)):
            try:
                parse(value)
            except ValidationError as exc:
                problems.append(f"{org_id}: {exc}")
    kinds = areas.groupby("org_id")["org_type"].nunique()
    problems += [f"{o}: its service areas name different types" for o in kinds[kinds > 1].index]
    if problems:
        raise ValidationError("organisations: " + "; ".join(problems))


# -- reading the layer -----


def empty_areas() -> gpd.GeoDataFrame:
    """Return an organisations frame without rows (no organisation loaded)."""
    from twin.layers import get_layer

    spec = get_layer(LAYER)
    return gpd.GeoDataFrame({c: pd.Series(dtype=object) for c in spec.column_names},
                            geometry=gpd.GeoSeries([], crs=4326))


@functools.cache
def _no_areas() -> gpd.GeoDataFrame:
    return empty_areas()  # built once: every report of a twin without organisations asks


def current(store) -> gpd.GeoDataFrame:
    """Return the current organisations layer of *store* (shared, do not change it), or none."""
    stamp = layercache.stamps(store, [LAYER])[LAYER]
    if stamp is None:
        return _no_areas()
    try:
        return layercache.layer(store, LAYER, stamp)
    except LayerNotFoundError:
        return _no_areas()


def table(areas: pd.DataFrame) -> pd.DataFrame:
    """One row per organisation (its first service area's columns), with ``areas`` counted."""
    cols = [c for c in areas.columns if c not in ("geometry", "area_id", "attrs")]
    if len(areas) == 0:
        return pd.DataFrame({c: pd.Series(dtype=object) for c in (*cols, "areas")})
    first = pd.DataFrame(areas[cols]).drop_duplicates("org_id").set_index("org_id")
    first["areas"] = areas.groupby("org_id").size()
    return first.reset_index()


def names(areas: pd.DataFrame) -> dict[str, str]:
    """Organisation id → name."""
    first = pd.DataFrame(areas[["org_id", "name"]]).drop_duplicates("org_id")
    return dict(zip(first["org_id"].astype(str), first["name"].astype(str), strict=True))


def _valid(areas: pd.DataFrame, days: np.ndarray) -> np.ndarray:
    """Whether each (area, local day) pair lies within the area's validity (vectorised)."""
    start = pd.to_datetime(areas["valid_from"], errors="coerce").to_numpy("datetime64[D]")
    end = pd.to_datetime(areas["valid_to"], errors="coerce").to_numpy("datetime64[D]")
    ok = np.isnat(start) | (start <= days)
    return ok & (np.isnat(end) | (days <= end))


def _readable_services(text: Any) -> dict[str, tuple[float | None, str | None]]:
    """Parse *text*; a layer written before its rules were checked owns nothing it cannot say."""
    try:
        return parse_services(text)
    except ValidationError as exc:
        LOGGER.warning("organisations: %s; that area owns nothing until it is corrected", exc)
        return {}


def _owned_codes(areas: pd.DataFrame) -> list[dict[str, tuple[float | None, str | None]]]:
    return layercache.of_frame(areas, "org-services",
                               lambda: [_readable_services(s) for s in areas["services"]])


def _area_tree(areas: gpd.GeoDataFrame) -> tuple[shapely.STRtree, np.ndarray, np.ndarray]:
    def build() -> tuple[shapely.STRtree, np.ndarray, np.ndarray]:
        geoms = np.asarray(areas.geometry.values, dtype=object)
        rank = pd.Series(areas["org_type"]).map(
            {t: i for i, t in enumerate(TYPE_PRIORITY)}).fillna(len(TYPE_PRIORITY)).to_numpy()
        return shapely.STRtree(geoms), rank, shapely.area(geoms)
    return layercache.of_frame(areas, "org-tree", build)


def owners_at(lon: Any, lat: Any, codes: Any, at: Any, areas: gpd.GeoDataFrame) -> np.ndarray:
    """Return, for each point, the organisation owning its category there then (or None).

    Vectorised: one STRtree query of all points against the service areas, then the pairs
    kept whose area is valid on the local day of *at* and whose organisation owns the point's
    category; of several, the first by :data:`TYPE_PRIORITY`, then the smallest area.

    Parameters
    ----------
    lon, lat, codes, at
        Positions (WGS84), service codes and times, one each per point (*at* may be one time).
    areas
        The organisations layer (:func:`current`).
    """
    lon = np.atleast_1d(np.asarray(lon, dtype=float))
    out = np.full(len(lon), None, dtype=object)
    if len(areas) == 0 or len(lon) == 0:
        return out
    lat = np.atleast_1d(np.asarray(lat, dtype=float))
    codes = np.broadcast_to(np.asarray(codes, dtype=object), lon.shape)
    when = pd.DatetimeIndex(np.broadcast_to(np.asarray(pd.to_datetime(at, utc=True)), lon.shape)
                            if np.ndim(at) == 0 else pd.to_datetime(at, utc=True))
    days = when.tz_convert(local_zone()).tz_localize(None).to_numpy("datetime64[D]")
    tree, rank, size = _area_tree(areas)
    point_idx, area_idx = tree.query(shapely.points(lon, lat), predicate="intersects")
    if len(point_idx) == 0:
        return out
    owned = _owned_codes(areas)
    keep = _valid(areas.iloc[area_idx], days[point_idx]) & np.fromiter(
        (codes[p] in owned[a] for p, a in zip(point_idx, area_idx, strict=True)), bool,
        count=len(point_idx))
    point_idx, area_idx = point_idx[keep], area_idx[keep]
    order = np.lexsort((size[area_idx], rank[area_idx], point_idx))
    point_idx, area_idx = point_idx[order], area_idx[order]
    first = np.unique(point_idx, return_index=True)[1]
    out[point_idx[first]] = areas["org_id"].to_numpy(dtype=object)[area_idx[first]]
    return out


def orgs_at(lon: float, lat: float, at: Any, areas: gpd.GeoDataFrame) -> dict[str, list[str]]:
    """Return the organisations serving a point then, each with the categories it owns there."""
    if len(areas) == 0:
        return {}
    tree, _, _ = _area_tree(areas)
    hits = tree.query(shapely.points(float(lon), float(lat)), predicate="intersects")
    day = pd.Timestamp(to_utc(at)).tz_convert(local_zone()).tz_localize(None)
    valid = _valid(areas.iloc[hits], np.full(len(hits), np.datetime64(day.date(), "D")))
    owned = _owned_codes(areas)
    out: dict[str, list[str]] = {}
    for a in hits[valid]:
        out.setdefault(str(areas["org_id"].iloc[a]), []).extend(sorted(owned[a]))
    return out


# -- each organisation's own clock -----


@cache
def _calendar(base: WorkCalendar, hours: tuple[tuple[str, str], ...], days: str) -> WorkCalendar:
    if not hours and days != "daily":
        return base
    periods = tuple((_parse_hhmm(a), _parse_hhmm(b)) for a, b in hours) or base.periods
    if days == "daily":  # every day a working day: weekends made working, no holidays
        span = pd.date_range(base.first_day, base.last_day, freq="D")
        weekend = frozenset(span[span.day_of_week >= 5].date)
        cal = replace(base, holidays=frozenset(), workdays=weekend, periods=periods, _arrays={})
    else:
        cal = replace(base, periods=periods, _arrays={})
    cal._build()
    return cal


def org_calendar(org: pd.Series | dict, base: WorkCalendar | None = None) -> WorkCalendar:
    """Return the working calendar of one organisation: its hours, on workdays or every day.

    Raises
    ------
    ValidationError
        If its working hours cannot be read.
    """
    days = org.get("working_days")
    days = "daily" if isinstance(days, str) and days == "daily" else "workdays"
    return _calendar(base or load_calendar(), parse_hours(org.get("working_hours")), days)


def _limits(org: pd.Series, codes: np.ndarray, area: np.ndarray, cats: pd.DataFrame
            ) -> tuple[np.ndarray, np.ndarray]:
    """Return the organisation's handling limit and unit per case (the category's by default)."""
    services = _readable_services(org.get("services"))
    known = pd.Series(codes).isin(cats.index).to_numpy()
    rows = cats.reindex(codes)
    pick = pd.Series(area).fillna("B").str.lower().map({"a": 0, "b": 1, "c": 2}).fillna(1)
    table = rows[["handle_limit_a", "handle_limit_b", "handle_limit_c"]].astype(float).to_numpy()
    amounts = np.where(known, table[np.arange(len(codes)), pick.astype(int).to_numpy()], 1.0)
    units = np.where(known, rows["handle_unit"].fillna("working_hours").to_numpy(dtype=object),
                     "working_hours").astype(object)
    for i, code in enumerate(codes):
        amount, unit = services.get(code, (None, None))
        if amount is not None:
            amounts[i], units[i] = amount, unit
    return amounts, units


def org_deadlines(org_ids: Any, codes: Any, area_classes: Any, starts: Any,
                  areas: pd.DataFrame, categories: pd.DataFrame,
                  calendar: WorkCalendar | None = None) -> pd.DatetimeIndex:
    """Return each case's deadline at its organisation: its limit on its own calendar.

    Vectorised per organisation (one :meth:`WorkCalendar.deadlines` call each). A category
    the organisation names no limit for takes its own handling limit from *categories* (the
    category table, :func:`twin.cases.load_categories`). NaT where the organisation is not in
    *areas* or the start is missing.
    """
    org_ids = np.asarray(org_ids, dtype=object)
    codes = np.asarray(codes, dtype=object)
    area_classes = np.asarray(area_classes, dtype=object)
    starts = pd.DatetimeIndex(pd.to_datetime(pd.Series(starts), utc=True))
    out = np.full(len(org_ids), np.datetime64("NaT"), dtype="datetime64[ns]")
    orgs = table(areas).set_index("org_id")
    for org_id in pd.unique(org_ids):
        if org_id is None or org_id not in orgs.index:
            continue
        mine = (org_ids == org_id) & ~starts.isna()
        if not mine.any():
            continue
        org = orgs.loc[org_id]
        amounts, units = _limits(org, codes[mine], area_classes[mine], categories)
        due = org_calendar(org, calendar).deadlines(starts[mine], amounts, units)
        out[mine] = due.tz_convert("UTC").tz_localize(None).to_numpy("datetime64[ns]")
    return to_utc(pd.DatetimeIndex(out))  # naive UTC instants


def deadline(org_id: str, code: str, area_class: Any, start: Any, areas: pd.DataFrame,
             categories: pd.DataFrame, calendar: WorkCalendar | None = None
             ) -> pd.Timestamp | None:
    """Return one case's deadline at organisation *org_id* (see :func:`org_deadlines`)."""
    due = org_deadlines([org_id], [code], [area_class], [to_utc(start)], areas, categories,
                        calendar)[0]
    return None if pd.isna(due) else due


# -- escalation: a missed limit goes back to the community (督办) -----


def overdue(cases: pd.DataFrame, now: Any = None) -> pd.DataFrame:
    """Cases an organisation still holds after its own deadline (columns only, vectorised)."""
    now = to_utc(pd.Timestamp.now(tz="UTC") if now is None else now)
    if len(cases) == 0 or "org_deadline" not in cases:
        return cases.iloc[0:0]
    due = pd.to_datetime(cases["org_deadline"], utc=True)
    holding = cases["department"].astype(str) == ORG_PREFIX + cases["org_id"].astype(str)
    late = holding & cases["status"].isin(HOLDING) & due.notna() & (due < now)
    return cases.loc[late]


def valid_today(areas: pd.DataFrame, day: date | None = None) -> np.ndarray:
    """Whether each service area is valid on *day* (default: today, local)."""
    day = day or (pd.Timestamp.now(tz=local_zone()).date())
    return _valid(areas, np.full(len(areas), np.datetime64(day, "D")))


__all__ = [
    "LAYER", "ORG_PREFIX", "TYPE_PRIORITY", "buildings_served", "check", "current",
    "deadline", "department_code", "empty_areas", "names", "org_calendar", "org_deadlines",
    "org_of_department", "orgs_at", "overdue", "owners_at", "parse_hours", "parse_services",
    "table", "valid_today",
]


def buildings_served(store, org_id: str | None, buildings: pd.DataFrame) -> set[str]:
    """Codes of the *buildings* whose footprint centre lies in organisation *org_id*'s areas."""
    areas = current(store)
    mine = areas.loc[areas["org_id"].astype(str) == str(org_id)]
    if not org_id or len(mine) == 0 or len(buildings) == 0:
        return set()
    centres = shapely.point_on_surface(np.asarray(buildings.geometry.values, dtype=object))
    tree = shapely.STRtree(np.asarray(mine.geometry.values, dtype=object))
    inside = np.unique(tree.query(centres, predicate="within")[0])
    return set(buildings["building_code"].astype(str).to_numpy()[inside])
