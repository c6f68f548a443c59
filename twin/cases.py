"""Cases (案件): the seven-step closed loop as a declared state machine, routing, time limits."""

from __future__ import annotations

import copy
import json
import logging
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

import geopandas as gpd
import numpy as np
import pandas as pd
from shapely.geometry import Point

from twin import settings
from twin.errors import NotFoundError, PermissionDeniedError, StaleUpdateError, ValidationError
from twin.schema import CASE_DATA_COLUMNS, CASES, ORG_ROLES, ROLES
from twin.timeutil import to_local, to_utc
from twin.workcal import UNITS, WorkCalendar, load_calendar, to_datetime

LOGGER = logging.getLogger(__name__)

SOURCES = ("patrol", "resident", "camera", "sensor", "instruction")
FAMILIES = ("component", "event")
AREA_CLASSES = ("A", "B", "C")
SUPERVISION_KINDS = ("timeout", "leader", "key")
#: The evaluation (综合评价) scale: a score from 0 to 100, as the area scores of GB/T 30428.4.
SCORE_RANGE = (0, 100)

#: Every status a case can be in, with zh/en labels; the terminal ones end the loop.
STATUSES: dict[str, tuple[str, str]] = {
    "collected": ("信息收集", "Collected"),
    "filed": ("已立案", "Filed"),
    "dispatched": ("已派遣", "Dispatched"),
    "handling": ("处置中", "Being handled"),
    "fed_back": ("已反馈", "Handling reported"),
    "checked": ("已核查", "Checked"),
    "on_hold": ("挂账", "Long-term hold"),
    "closed": ("已结案", "Closed"),
    "evaluated": ("已评价", "Evaluated"),
    "cancelled": ("已作废", "Cancelled"),
    "merged": ("已合并", "Merged into another case"),
}
TERMINAL = ("closed", "evaluated", "cancelled", "merged")
OPEN_STATUSES = tuple(s for s in STATUSES if s not in TERMINAL)
_WORKING = ("filed", "dispatched", "handling", "fed_back", "checked", "on_hold")


@dataclass(frozen=True)
class Transition:
    """One step of the loop: from which statuses, to which, which roles own it, what it does."""

    action: str
    sources: tuple[str, ...]
    target: str | None  # None: the status does not change (the step is still recorded)
    roles: tuple[str, ...]
    label_zh: str
    label_en: str
    own_grid: bool = False  # a grid worker may take it only in their own grids
    note_required: bool = False
    fields: tuple[str, ...] = ()  # keyword fields the action accepts
    doc: str = ""
    effect: Callable[[Step], None] | None = None  # what the step does (collect: see report())


# -- what each step does -------------------------------------------------------------------------
# Each transition below names its effect; :func:`transition` checks the step against the table,
# then runs the effect on a :class:`Step` and writes what it produced. Effects only compute: they
# change the step's ``data``, ``changes`` and ``record``, never the store, and raise
# ValidationError before anything is written.


@dataclass
class Step:
    """One step in progress: the case before it, the new ``data``, and what the step changes.

    Effects work on this: ``data`` is the case's JSON as it will be stored, ``changes`` the column
    updates, ``record`` the step's own data kept in the case history.
    """

    case: dict[str, Any]
    at: pd.Timestamp
    role: str
    fields: dict[str, Any]
    calendar: WorkCalendar
    categories: pd.DataFrame | None
    grid_cells: gpd.GeoDataFrame | None
    data: dict[str, Any]
    cat: pd.Series
    changes: dict[str, Any] = field(default_factory=dict)
    #: the organisations layer (twin.organisations), read when a step needs it
    organisations: Callable[[], gpd.GeoDataFrame] | None = None
    record: dict[str, Any] = field(default_factory=dict)

    @property
    def deadlines(self) -> dict[str, Any]:
        """The case's deadlines by stage (``file`` … ``check``, ``total``), as ISO text."""
        return self.data["deadlines"]

    def start_stage(self, stage: str, start: pd.Timestamp) -> pd.Timestamp:
        """Start *stage*'s timer at *start* with the category's limit; return its deadline."""
        amount, unit = stage_limit(self.cat, stage, self.case.get("area_class"))
        due = self.calendar.add(start, amount, unit)
        self.deadlines[stage] = _iso(due)
        self.data["timer"] = {"stage": stage, "start": _iso(start), "deadline": _iso(due),
                              "unit": unit}
        self.record[f"{stage}_deadline"] = _iso(due)
        return due

    def total_from_handle(self, handle_due: pd.Timestamp) -> None:
        """Set the total deadline: the handling deadline plus the check stage's limit."""
        amount, unit = stage_limit(self.cat, "check", self.case.get("area_class"))
        total = self.calendar.add(handle_due, amount, unit)
        self.deadlines["total"] = _iso(total)
        self.changes["deadline_at"] = total


def _file(s: Step) -> None:
    dispatch_due = s.start_stage("dispatch", s.at)
    amount, unit = stage_limit(s.cat, "handle", s.case.get("area_class"))
    s.total_from_handle(s.calendar.add(dispatch_due, amount, unit))
    s.record["total_deadline"] = s.deadlines["total"]


def _dispatch(s: Step) -> None:
    department = s.fields.get("department") or s.case.get("department")
    assignee = s.fields.get("assignee", s.case.get("assignee"))
    s.changes.update(department=department, assignee=assignee)
    s.start_stage("handle", s.at)
    s.record.update(department=department, assignee=assignee)
    _org_clock(s, department)


def _org_clock(s: Step, department: Any) -> None:
    """Start the organisation's own clock when a case is dispatched to one (twin.organisations).

    Its deadline is its own limit for the category on its own working hours; a case dispatched
    elsewhere that no organisation had yet held drops the routed organisation.
    """
    from twin import organisations as orgs

    org_id = orgs.org_of_department(department)
    if org_id is None:
        if not (s.data.get("org") or {}).get("deadline"):
            s.data.pop("org", None)
        return
    areas = s.organisations() if s.organisations is not None else orgs.empty_areas()
    if org_id not in set(areas["org_id"].astype(str)):
        raise ValidationError(f"no organisation {org_id!r} in the organisations layer; pick one "
                              "it lists (or load it first)")
    cats = s.categories if s.categories is not None else load_categories()
    due = orgs.deadline(org_id, s.case["service_code"], s.case.get("area_class"), s.at, areas,
                        cats, s.calendar)
    s.data["org"] = {"id": org_id, "since": _iso(s.at), "deadline": _iso(due)}
    s.record.update(org=org_id, org_deadline=_iso(due))


def _return(s: Step) -> None:
    counts = s.data["counts"]
    counts["returned"] = counts.get("returned", 0) + 1
    s.start_stage("dispatch", s.at)


def _handle(s: Step) -> None:
    s.data["timer"]["handling_since"] = _iso(s.at)
    s.data.setdefault("photos_before", []).extend(s.fields.get("photos", []))


def _feedback(s: Step) -> None:
    s.data.setdefault("photos_after", []).extend(s.fields.get("photos", []))
    s.start_stage("check", s.at)


def _check(s: Step) -> None:
    s.data.setdefault("photos_check", []).extend(s.fields.get("photos", []))
    s.data["timer"] = {"stage": "close", "start": _iso(s.at), "deadline": s.deadlines.get("total"),
                       "unit": "urgent_hours"}


def _rework(s: Step) -> None:
    s.data["times"].setdefault("first_rework", _iso(s.at))
    s.total_from_handle(s.start_stage("handle", s.at))


def _close(s: Step) -> None:
    s.changes["closed_at"] = s.at
    s.data["timer"] = None


def _force_close(s: Step) -> None:
    _close(s)
    s.data["forced"] = True


def _evaluate(s: Step) -> None:
    score = s.fields.get("score")
    low, high = SCORE_RANGE
    try:
        value = float(score)
    except (TypeError, ValueError):
        value = float("nan")
    if not low <= value <= high:  # NaN fails too
        raise ValidationError(f"evaluate needs a score from {low} to {high}; got {score!r}")
    s.data["evaluation"] = value
    s.record["score"] = value


def _stop_timer(s: Step) -> None:
    s.data["timer"] = None


def _merge(s: Step) -> None:
    s.data["merged_into"] = s.fields["into"]
    s.data["timer"] = None
    s.record["into"] = s.fields["into"]


def _request_extension(s: Step) -> None:
    s.data["extension_request"] = {"amount": s.fields.get("amount"),
                                   "unit": s.fields.get("unit"), "at": _iso(s.at)}


def _extended_deadline(s: Step, old: pd.Timestamp) -> pd.Timestamp:
    """Return the new handling deadline: the date given, or the amount added to *old*."""
    if s.fields.get("deadline") is not None:
        return to_datetime(s.fields["deadline"])
    request = s.data.get("extension_request") or {}
    amount = s.fields.get("amount", request.get("amount"))
    unit = s.fields.get("unit", request.get("unit"))
    if amount is None or unit not in UNITS:
        raise ValidationError(
            f"extend needs a new deadline=… or amount=… with unit in {list(UNITS)}")
    return s.calendar.add(old, float(amount), unit)


def _extend(s: Step) -> None:
    old = pd.Timestamp(s.deadlines["handle"]) if s.deadlines.get("handle") else s.at
    new = _extended_deadline(s, old)
    if new <= old:
        raise ValidationError(f"the new deadline {new.isoformat()} is not after the current "
                              f"one {old.isoformat()}")
    s.deadlines["handle"] = _iso(new)
    if s.data.get("timer") and s.data["timer"].get("stage") == "handle":
        s.data["timer"]["deadline"] = _iso(new)
    s.data["extended"] = True
    s.data.pop("extension_request", None)
    s.total_from_handle(new)
    s.record.update(old_deadline=_iso(old), new_deadline=_iso(new))


def _hold(s: Step) -> None:
    s.data["held_since"] = _iso(s.at)
    s.data["timer"] = None


def _resume(s: Step) -> None:
    s.data.pop("held_since", None)
    s.total_from_handle(s.start_stage("handle", s.at))


def _supervise(s: Step) -> None:
    kind = s.fields.get("kind", "timeout")
    if kind not in SUPERVISION_KINDS:
        raise ValidationError(f"supervision kind must be one of {list(SUPERVISION_KINDS)}")
    if kind in ("leader", "key") and s.role not in ("official", "admin"):
        raise PermissionDeniedError(f"{kind} supervision (督办) is for officials; "
                                    f"role {s.role!r} may only supervise timeouts")
    s.data.setdefault("supervision", []).append(
        {"kind": kind, "at": _iso(s.at), "stage": (s.data.get("timer") or {}).get("stage")})
    s.record["kind"] = kind
    if s.fields.get("department"):  # handed back (an organisation missed its limit)
        department, assignee = s.fields["department"], s.fields.get("assignee")
        s.changes.update(department=department, assignee=assignee)
        s.record.update(department=department, assignee=assignee,
                        from_department=s.case.get("department"))
        if s.data.get("org"):
            s.data["org"]["escalated_at"] = _iso(s.at)


def _recategorise(s: Step) -> None:
    case, code = s.case, s.fields.get("service_code")
    new_cat = lookup_category(code, s.categories)
    if code == case["service_code"]:
        raise ValidationError(f"case {case['id']} already has category {code}")
    place = {k: case.get(k) for k in ("grid_code", "resp_grid_id", "community_code")}
    org = None
    if s.organisations is not None and case.get("lon") is not None:
        org = owners_at([case["lon"]], [case["lat"]], [code], s.at, s.organisations())[0]
    routed = route(new_cat, place, s.grid_cells, org=org)
    if org:
        s.data["org"] = {"id": org, "routed": _iso(s.at)}
    elif not (s.data.get("org") or {}).get("deadline"):
        s.data.pop("org", None)
    s.changes.update(service_code=code, family=new_cat["family"],
                     department=routed["department"], assignee=routed["assignee"])
    s.data["category"] = {"zh": new_cat["name_zh"], "en": new_cat["name_en"],
                          "major": new_cat["major_code"], "minor": new_cat["minor_code"]}
    s.data.update(route=routed["route"], post=routed["post"])
    s.record.update(old=case["service_code"], new=code, route=routed["route"])
    s.cat = new_cat
    _restart_timer(s)


def _restart_timer(s: Step) -> None:
    """Restart the running timer from its stage's start with the (new) category's limits."""
    stage = (s.data.get("timer") or {}).get("stage")
    if not stage:
        return
    due = s.start_stage(stage, pd.Timestamp(s.data["timer"]["start"]))
    if stage == "handle":
        s.total_from_handle(due)
    elif stage == "dispatch":
        s.total_from_handle(s.calendar.add(due, *stage_limit(s.cat, "handle",
                                                             s.case.get("area_class"))))


#: The state machine, declared once. docs/cases.md is written from this table.
TRANSITIONS: tuple[Transition, ...] = (
    Transition("collect", (), "collected",
               ("grid_worker", "resident", "dispatcher", "official", "admin"), "信息收集",
               "Collect", own_grid=True,
               doc="a report comes in (patrol, resident, camera, sensor, instruction)"),
    Transition("file", ("collected",), "filed", ("dispatcher", "admin"), "立案", "File",
               doc="the command centre accepts the report as a case; stage timers start",
               effect=_file),
    Transition("cancel", ("collected", "filed"), "cancelled", ("dispatcher", "admin"), "作废",
               "Cancel", note_required=True, doc="not a case (false, out of scope)",
               effect=_stop_timer),
    Transition("merge", ("collected", "filed"), "merged", ("dispatcher", "admin"), "合并",
               "Merge", fields=("into",), doc="a duplicate folded into an open case",
               effect=_merge),
    Transition("dispatch", ("filed",), "dispatched", ("dispatcher", "admin"), "派遣", "Dispatch",
               fields=("department", "assignee"),
               doc="sent to the routed department / grid worker (or the ones given)",
               effect=_dispatch),
    Transition("return", ("dispatched", "handling"), "filed",
               ("grid_worker", "official", "admin", *ORG_ROLES),
               "回退", "Return", own_grid=True, note_required=True,
               doc="the receiver says it is not theirs; the command centre re-dispatches",
               effect=_return),
    Transition("handle", ("dispatched",), "handling",
               ("grid_worker", "official", "admin", *ORG_ROLES), "处置",
               "Handle", own_grid=True, fields=("photos",),
               doc="the receiver starts handling, with photos of the place before",
               effect=_handle),
    Transition("feedback", ("handling",), "fed_back",
               ("grid_worker", "official", "admin", *ORG_ROLES),
               "处理反馈", "Report handling", own_grid=True, fields=("photos",),
               doc="the receiver reports the result, with photos", effect=_feedback),
    Transition("check", ("fed_back",), "checked", ("grid_worker", "admin"), "核查", "Check",
               own_grid=True, fields=("photos",), doc="the grid worker confirms on site",
               effect=_check),
    Transition("rework", ("fed_back",), "handling", ("grid_worker", "dispatcher", "admin"), "返工",
               "Rework", own_grid=True, note_required=True,
               doc="the check failed; handling starts again with a new handling deadline",
               effect=_rework),
    Transition("close", ("checked",), "closed", ("dispatcher", "admin"), "结案", "Close",
               doc="the command centre closes the case", effect=_close),
    Transition("evaluate", ("closed",), "evaluated", ("official", "admin"), "综合评价", "Evaluate",
               fields=("score",), doc="the case is rated (0-100)", effect=_evaluate),
    Transition("request_extension", ("dispatched", "handling"), None,
               ("grid_worker", "official", "admin", *ORG_ROLES), "申请延期", "Request extension",
               own_grid=True, note_required=True, fields=("amount", "unit"),
               effect=_request_extension),
    Transition("extend", ("dispatched", "handling"), None, ("official", "admin"), "延期", "Extend",
               fields=("deadline", "amount", "unit"),
               doc="an approved new handling deadline (a date, or an amount added to it)",
               effect=_extend),
    Transition("hold", ("dispatched", "handling"), "on_hold", ("official", "admin"), "挂账",
               "Hold", note_required=True,
               doc="long-term hold: cannot be solved now; out of the due-to-close count",
               effect=_hold),
    Transition("resume", ("on_hold",), "handling", ("official", "admin"), "恢复处置", "Resume",
               doc="back from hold; the handling deadline restarts", effect=_resume),
    Transition("supervise", _WORKING, None, ("official", "dispatcher", "admin"), "督办",
               "Supervise", fields=("kind", "department", "assignee"),
               doc="timeout (automatic or by the centre), leader or key case (officials only); "
                   "with a department, the case is handed back to it (an organisation's miss)",
               effect=_supervise),
    Transition("force_close", _WORKING, "closed", ("official", "admin"), "强制结案", "Force close",
               note_required=True, doc="closed by an official's decision", effect=_force_close),
    Transition("recategorise", ("collected", "filed", "dispatched", "handling"), None,
               ("dispatcher", "admin"), "变更类别", "Change category", fields=("service_code",),
               doc="a new category re-routes the case and recomputes the open timers",
               effect=_recategorise),
)
TRANSITIONS_BY_ACTION = {t.action: t for t in TRANSITIONS}

# which stage's timer runs in each status, and the time-limit columns of each stage
STAGE_OF_STATUS = {"collected": "file", "filed": "dispatch", "dispatched": "handle",
                   "handling": "handle", "fed_back": "check", "checked": "close"}


# -- seed tables ---------------------------------------------------------------------------------


def _seed(seed_dir: str | Path | None) -> Path:
    return Path(seed_dir) if seed_dir else Path(settings.get("data_dir")) / "seed"


CATEGORY_COLUMNS = (
    "service_code", "family", "major_code", "major_zh", "major_en", "minor_code", "name_zh",
    "name_en", "city_extension", "filing_condition", "closing_condition", "department",
    "file_limit", "file_unit", "dispatch_limit", "dispatch_unit", "handle_limit_a",
    "handle_limit_b", "handle_limit_c", "handle_unit", "check_limit", "check_unit",
)
#: Minor class codes a city may add itself (national minor codes stay below).
CITY_EXTENSION_MINOR = (50, 99)


def validate_categories(frame: pd.DataFrame, departments: pd.DataFrame | None = None
                        ) -> pd.DataFrame:
    """Check the category table; return it indexed by service code.

    Rules: all columns present; unique codes built as family letter (P component, E event) +
    2-digit major + 2-digit minor; city extensions, and only they, use minor codes 50-99;
    limits are non-negative numbers with a unit from :data:`twin.workcal.UNITS`; the department
    exists in the department table.

    Raises
    ------
    ValidationError
        Listing every problem found, with the service codes concerned.
    """
    missing = [c for c in CATEGORY_COLUMNS if c not in frame]
    if missing:
        raise ValidationError(f"categories.csv lacks columns {missing}")
    f = frame.copy()
    problems = []

    def bad(mask: pd.Series, what: str) -> None:
        if mask.any():
            problems.append(f"{what}: {', '.join(f.loc[mask, 'service_code'].astype(str)[:5])}")

    bad(f["service_code"].duplicated(keep=False), "duplicate service codes")
    bad(~f["family"].isin(FAMILIES), f"family must be one of {list(FAMILIES)}")
    letter = f["family"].map({"component": "P", "event": "E"}).fillna("?")
    bad(f["service_code"] != letter + f["major_code"] + f["minor_code"],
        "service_code must be P/E + major_code + minor_code")
    bad(~f["major_code"].str.fullmatch(r"\d{2}") | ~f["minor_code"].str.fullmatch(r"\d{2}"),
        "major and minor codes must be 2 digits")
    ext = f["city_extension"].str.lower().map({"true": True, "false": False})
    bad(ext.isna(), "city_extension must be true or false")
    minor = pd.to_numeric(f["minor_code"], errors="coerce")
    in_range = minor.between(*CITY_EXTENSION_MINOR)
    bad((ext == True) & ~in_range, f"city extensions need minor codes {CITY_EXTENSION_MINOR}")  # noqa: E712
    bad((ext == False) & in_range, f"minor codes {CITY_EXTENSION_MINOR} are for city extensions")  # noqa: E712
    for stage in ("file", "dispatch", "check"):
        bad(pd.to_numeric(f[f"{stage}_limit"], errors="coerce").lt(0).fillna(True),
            f"{stage}_limit must be a non-negative number")
        bad(~f[f"{stage}_unit"].isin(UNITS), f"{stage}_unit must be one of {list(UNITS)}")
    for area in "abc":
        bad(pd.to_numeric(f[f"handle_limit_{area}"], errors="coerce").lt(0).fillna(True),
            f"handle_limit_{area} must be a non-negative number")
    bad(~f["handle_unit"].isin(UNITS), f"handle_unit must be one of {list(UNITS)}")
    bad(f["name_zh"].str.strip().eq("") | f["name_en"].str.strip().eq(""),
        "names in zh and en are required")
    if departments is not None:
        bad(~f["department"].isin(departments["code"]) & f["department"].ne(""),
            "department not in departments.csv")
    if problems:
        raise ValidationError("categories.csv: " + "; ".join(problems) + ". Fix the rows.")
    f["city_extension"] = ext.astype(bool)
    return f.set_index("service_code", drop=False)


@cache
def _load_categories(path: str) -> pd.DataFrame:
    frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    departments = pd.read_csv(Path(path).parent / "departments.csv", dtype=str,
                              keep_default_na=False)
    return validate_categories(frame, departments)


def load_categories(seed_dir: str | Path | None = None) -> pd.DataFrame:
    """Load the category table (``data/seed/categories.csv``), validated, by service code."""
    return _load_categories(str((_seed(seed_dir) / "categories.csv").resolve()))


@cache
def _load_departments(path: str) -> pd.DataFrame:
    return pd.read_csv(path, dtype=str, keep_default_na=False).set_index("code", drop=False)


def load_departments(seed_dir: str | Path | None = None) -> pd.DataFrame:
    """Load the department table (``data/seed/departments.csv``) indexed by code."""
    return _load_departments(str((_seed(seed_dir) / "departments.csv").resolve()))


def lookup_category(code: str, categories: pd.DataFrame | None = None) -> pd.Series:
    """One category row.

    Raises
    ------
    ValidationError
        If the code is unknown (the message lists some known ones).
    """
    cats = load_categories() if categories is None else categories
    if code not in cats.index:
        raise ValidationError(
            f"unknown category {code!r}; known service codes include "
            f"{', '.join(cats.index[:8])} … (see data/seed/categories.csv)"
        )
    return cats.loc[code]


def stage_limit(cat: pd.Series, stage: str, area_class: str | None) -> tuple[float, str]:
    """(amount, unit) of a stage's time limit for a category and area class."""
    if stage == "handle":
        column = f"handle_limit_{(area_class or 'B').lower()}"
        return float(cat[column]), str(cat["handle_unit"])
    return float(cat[f"{stage}_limit"]), str(cat[f"{stage}_unit"])


def stage_deadlines(
    cases: pd.DataFrame,
    stage: str,
    starts: pd.Series,
    *,
    categories: pd.DataFrame | None = None,
    calendar: WorkCalendar | None = None,
) -> pd.Series:
    """Deadlines of one stage for many cases at once (vectorised; e.g. after a calendar edit).

    Parameters
    ----------
    cases
        Cases with ``service_code`` and ``area_class``.
    stage
        ``file``, ``dispatch``, ``handle`` or ``check``.
    starts
        When the stage started, one per case (same index).
    categories, calendar
        Category table and working calendar (default: the seed tables).

    Returns
    -------
    pandas.Series
        UTC deadlines, NaT where the start is missing.

    Raises
    ------
    ValidationError
        For an unknown stage or category.
    """
    if stage not in ("file", "dispatch", "handle", "check"):
        raise ValidationError(f"unknown stage {stage!r}; stages are file, dispatch, handle, check")
    cats = load_categories() if categories is None else categories
    unknown = sorted(set(cases["service_code"].dropna()) - set(cats.index))
    if unknown:
        raise ValidationError(f"unknown categories {unknown[:5]}; see data/seed/categories.csv")
    rows = cats.loc[cases["service_code"].to_numpy()]
    if stage == "handle":
        area = cases["area_class"].fillna("B").str.lower().to_numpy()
        table = rows[["handle_limit_a", "handle_limit_b", "handle_limit_c"]].astype(float)
        pick = pd.Series(area).map({"a": 0, "b": 1, "c": 2}).fillna(1).astype(int).to_numpy()
        amounts = table.to_numpy()[np.arange(len(rows)), pick]
        units = rows["handle_unit"].to_numpy()
    else:
        amounts = rows[f"{stage}_limit"].astype(float).to_numpy()
        units = rows[f"{stage}_unit"].to_numpy()
    cal = calendar or load_calendar()
    due = cal.deadlines(to_utc(starts), amounts, units)
    return pd.Series(due, index=cases.index)


# -- routing -------------------------------------------------------------------------------------


def territory_department(community_code: str | None) -> str | None:
    """Return the department code of a community's territory (its neighbourhood committee)."""
    return f"territory:{community_code}" if community_code else None


def route(
    cat: pd.Series, place: dict[str, Any], grid_cells: gpd.GeoDataFrame | None = None,
    org: str | None = None,
) -> dict[str, Any]:
    """Return who gets a case: an organisation owning it there, else the usual route.

    An organisation (*org*, from :func:`twin.organisations.owners_at`: a property company for
    the categories it owns in its estate …) comes first, the community's territory next as
    fall-back and supervisor. Events (事件先属地后属主): the grid worker of the unit grid's
    responsibility grid, in the community's territory; the category's owner department when
    the place is in no grid. Components (部件先属主后属地): the category's owner department;
    the territory when the category names no owner.

    Returns
    -------
    dict
        ``department``, ``assignee`` (or None), ``post`` (grid_worker, department or
        organisation) and ``route`` (the ordered candidates, first is used).
    """
    return route_to(cat, place, grid_worker(place, grid_cells), org)


def route_to(cat: Any, place: dict[str, Any], worker: str | None, org: str | None = None
             ) -> dict[str, Any]:
    """:func:`route` for a place whose grid worker (*worker*, or None) is known already."""
    territory = territory_department(place.get("community_code"))
    owner = cat["department"] or None
    if org:
        candidates = list(dict.fromkeys(c for c in (f"org:{org}", territory, owner) if c))
        return {"department": candidates[0], "assignee": None, "post": "organisation",
                "route": candidates}
    if cat["family"] == "event":
        candidates = [c for c in (territory, owner) if c]
        assignee = worker if territory else None
    else:
        candidates = [c for c in (owner, territory) if c]
        assignee = None if owner else worker
    department = candidates[0] if candidates else "CMD"
    return {"department": department, "assignee": assignee,
            "post": "grid_worker" if assignee else "department", "route": candidates}


def grid_worker(place: dict[str, Any], grid_cells: gpd.GeoDataFrame | None) -> str | None:
    """Return the grid worker of a place's unit grid (or of its responsibility grid)."""
    if grid_cells is None or "grid_worker" not in grid_cells or not place.get("grid_code"):
        return None
    cells = grid_cells
    same = cells[cells["grid_code"] == place["grid_code"]]
    worker = same["grid_worker"].dropna()
    if worker.empty and place.get("resp_grid_id"):  # the responsibility grid's worker
        worker = cells.loc[cells["resp_grid_id"] == place["resp_grid_id"], "grid_worker"].dropna()
    worker = worker[worker.astype(str) != ""]
    return str(worker.iloc[0]) if not worker.empty else None


def locate(lon: float, lat: float, grid_cells: gpd.GeoDataFrame | None) -> dict[str, Any]:
    """Find the unit grid, responsibility grid, community, street and area class of a point."""
    from twin.enrich import assign_grids

    place: dict[str, Any] = {"grid_code": None, "resp_grid_id": None, "community_code": None,
                             "street_code": None, "area_class": None}
    if grid_cells is None or grid_cells.empty:
        return place
    point = gpd.GeoDataFrame(geometry=[Point(lon, lat)], crs=4326)
    found = assign_grids(point, grid_cells).iloc[0]
    for key in ("grid_code", "resp_grid_id", "community_code", "street_code"):
        place[key] = None if pd.isna(found[key]) else str(found[key])
    if place["grid_code"] and "management_level" in grid_cells:
        level = grid_cells.loc[grid_cells["grid_code"] == place["grid_code"], "management_level"]
        if not level.empty and level.iloc[0] in AREA_CLASSES:
            place["area_class"] = level.iloc[0]
    return place


def nearest_grid(lon: float, lat: float, grid_cells: gpd.GeoDataFrame | None
                 ) -> dict[str, Any] | None:
    """Return the unit grid nearest to a point, with the distance in metres (0 inside it).

    Distances are measured in a local metric CRS (one STRtree query over the grids), never in
    degrees. Used to tell a reporter whose point lies outside every grid where the nearest grid
    is, instead of storing a case that belongs to no one.

    Parameters
    ----------
    lon, lat
        WGS84 position.
    grid_cells
        The unit grids (layer ``grid_cells``).

    Returns
    -------
    dict or None
        ``grid_code``, ``name`` (the grid's name or its code), ``distance_m`` (rounded to the
        metre), ``inside`` and ``lon``/``lat`` of a point just inside that grid, nearest to the
        given one; None when there are no grids.
    """
    import shapely
    from shapely.ops import nearest_points

    from twin.crs import local_metric_crs

    if grid_cells is None or len(grid_cells) == 0:
        return None
    here = gpd.GeoSeries([Point(float(lon), float(lat))], crs=4326)
    cells = grid_cells.to_crs(4326) if grid_cells.crs else grid_cells.set_crs(4326)
    metric = local_metric_crs(cells)
    polys = cells.geometry.to_crs(metric).values
    point = here.to_crs(metric).values[0]
    tree = shapely.STRtree(polys)
    hit = int(tree.query_nearest(point, all_matches=False)[0])
    poly = polys[hit]
    distance = float(shapely.distance(poly, point))
    if distance == 0:
        target = point
    else:  # a point 1 m inside the grid, on the side facing the given point
        edge = nearest_points(poly, point)[0]
        inner = poly.buffer(-1.0)
        target = nearest_points(inner if not inner.is_empty else poly, edge)[0]
    back = gpd.GeoSeries([target], crs=metric).to_crs(4326).values[0]
    row = cells.iloc[hit]
    name = row.get("name") if "name" in cells else None
    return {"grid_code": str(row["grid_code"]),
            "name": str(name) if name is not None and not pd.isna(name) and str(name) else
            str(row["grid_code"]),
            "distance_m": round(distance), "inside": distance == 0,
            "lon": round(float(back.x), 7), "lat": round(float(back.y), 7)}


# -- helpers -------------------------------------------------------------------------------------


def _data(case: dict[str, Any]) -> dict[str, Any]:
    value = case.get("data")
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return {}
    # a deep copy: a step refused half-way must leave the case it was given as it was
    return json.loads(value) if isinstance(value, str) else copy.deepcopy(dict(value))


def _iso(ts: pd.Timestamp | None) -> str | None:
    return None if ts is None or pd.isna(ts) else to_utc(ts).isoformat()


def _check_role(transition: Transition, role: str) -> None:
    if role not in ROLES:
        raise PermissionDeniedError(f"unknown role {role!r}; roles are {', '.join(ROLES)}")
    if role not in transition.roles:
        raise PermissionDeniedError(
            f"role {role!r} may not {transition.action} ({transition.label_zh}) a case; "
            f"only {', '.join(transition.roles)} may. Ask one of them."
        )


def grids_of_worker(actor: str, grid_cells: gpd.GeoDataFrame | None) -> set[str]:
    """Return the unit grids whose grid worker is *actor* (a responsibility grid covers several)."""
    if grid_cells is None or "grid_worker" not in grid_cells:
        return set()
    mine = grid_cells.loc[grid_cells["grid_worker"] == actor]
    resp = set(mine["resp_grid_id"].dropna())
    return set(grid_cells.loc[grid_cells["resp_grid_id"].isin(resp), "grid_code"]) | set(
        mine["grid_code"])


def _check_own_grid(transition: Transition, case: dict[str, Any], actor: str, role: str,
                    grids: set[str] | None) -> None:
    if role != "grid_worker" or not transition.own_grid:
        return
    if case.get("assignee") == actor:
        return
    if grids is not None and case.get("grid_code") in grids:
        return
    raise PermissionDeniedError(
        f"grid worker {actor!r} may {transition.action} only cases in their own grids or assigned "
        f"to them; case {case.get('id')} is in grid {case.get('grid_code')!r}, assigned to "
        f"{case.get('assignee')!r}. Pass grid_cells (or actor_grids) if it is theirs."
    )


def _check_own_org(transition: Transition, case: dict[str, Any], actor: str, role: str,
                   org: str | None) -> None:
    """Refuse an organisation's staff a step on a case their organisation does not hold."""
    if role not in ORG_ROLES:
        return
    if org and case.get("department") == f"org:{org}":
        return
    raise PermissionDeniedError(
        f"{actor!r} works for organisation {org!r} and may {transition.action} only the cases "
        f"assigned to it; case {case.get('id')} is with {case.get('department')!r}. Ask the "
        "command centre to dispatch it to your organisation."
    )


def _time(at: Any, case: dict[str, Any] | None = None) -> pd.Timestamp:
    ts = pd.Timestamp.now(tz="UTC") if at is None else to_datetime(at)
    if case is not None:
        last = case.get("updated_at")
        if last is not None and not pd.isna(last) and ts < pd.Timestamp(last):
            raise ValidationError(
                f"step time {ts.isoformat()} is before the case's last step "
                f"{pd.Timestamp(last).isoformat()}; steps are recorded in order."
            )
    return ts


# -- collect -------------------------------------------------------------------------------------


def report(
    store,
    *,
    category: str,
    lon: float,
    lat: float,
    description: str,
    source: str,
    actor: str,
    role: str,
    grid_cells: gpd.GeoDataFrame | None = None,
    at: Any = None,
    photos: Iterable[str] = (),
    reporter: dict[str, Any] | None = None,
    urgency: str = "normal",
    address: str | None = None,
    case_id: str | None = None,
    duplicate_hours: float = 24,
    categories: pd.DataFrame | None = None,
    calendar: WorkCalendar | None = None,
    attributes: dict[str, str] | None = None,
    organisations: gpd.GeoDataFrame | None = None,
) -> dict[str, Any]:
    """Collect (信息收集) a new case at a point; route it and start the filing timer.

    Parameters
    ----------
    store
        A :class:`twin.store.Store`.
    category
        Service code (minor class), e.g. ``E0101`` for exposed garbage.
    lon, lat
        WGS84 position.
    source
        One of :data:`SOURCES`; a resident may only report as ``resident``.
    actor, role
        Who reports, and in which role (see :data:`TRANSITIONS`).
    description
        What is wrong, in the reporter's words.
    grid_cells
        The unit grids (layer ``grid_cells``): assigns grid codes, area class and the grid worker.
    photos, reporter, urgency, address
        Kept with the case (the reporter is personal data, never exported).
    case_id
        An id to use (imports); default date + random suffix.
    categories, calendar
        Category table and working calendar (default: the seed tables).
    at
        When it was reported (default now).
    duplicate_hours
        Open cases of the same category within 50 m reported in this many hours before are
        recorded as ``possible_duplicates`` (see :func:`find_duplicates`).
    attributes
        Answers to the category's extra questions (Open311 ``attribute[code]``), kept as they are.
    organisations
        The organisations layer (default: the store's current one, if any): an organisation
        owning the category at the place gets the case first (:func:`route`).

    Returns
    -------
    dict
        The stored case (status ``collected``).

    Raises
    ------
    PermissionDeniedError
        If the role may not collect, or a grid worker reports outside their grids.
    ValidationError
        For an unknown category or source, or a position that is not a WGS84 lon/lat.
    """
    _check_report(role, source, lon, lat, description)
    cat = lookup_category(category, categories)
    ts = _time(at)
    place = locate(float(lon), float(lat), grid_cells)
    _check_collect_place(actor, role, place, grid_cells)
    areas = _organisations(store, organisations)
    org = owners_at([float(lon)], [float(lat)], [category], ts, areas)[0]
    routed = route(cat, place, grid_cells, org=org)
    cal = calendar or load_calendar()
    amount, unit = stage_limit(cat, "file", place["area_class"])
    file_deadline = cal.add(ts, amount, unit)
    duplicates = find_duplicates(store, category=category, lon=lon, lat=lat, at=ts,
                                 hours=duplicate_hours)
    data = {
        "category": {"zh": cat["name_zh"], "en": cat["name_en"], "major": cat["major_code"],
                     "minor": cat["minor_code"]},
        "photos": list(photos),
        "reporter": reporter or {},
        "address": address,
        "route": routed["route"],
        "post": routed["post"],
        "times": {"collected": _iso(ts)},
        "counts": {},
        "deadlines": {"file": _iso(file_deadline)},
        "timer": {"stage": "file", "start": _iso(ts), "deadline": _iso(file_deadline),
                  "unit": unit},
        "supervision": [],
        "possible_duplicates": duplicates["id"].tolist(),
    }
    if attributes:
        data["attributes"] = dict(attributes)
    if org:
        data["org"] = {"id": org, "routed": _iso(ts)}
    case = {
        "id": case_id or new_case_id(ts),
        "status": "collected", "service_code": category, "family": cat["family"],
        "source": source, "description": description, "lon": float(lon), "lat": float(lat),
        **{k: place[k] for k in ("grid_code", "resp_grid_id", "community_code", "street_code")},
        "area_class": place["area_class"], "urgency": urgency,
        "assignee": routed["assignee"], "department": routed["department"],
        "requested_at": ts, "updated_at": ts, "deadline_at": None, "closed_at": None,
        **data_columns(data), "data": data,
    }
    history = {"at": ts, "actor": actor, "role": role, "action": "collect", "from_status": None,
               "to_status": "collected", "note": "", "data": {"route": routed["route"]}}
    stored = store.create_case(case, history=history)
    LOGGER.info("case %s collected by %s (%s) in grid %s", case["id"], actor, role,
                place["grid_code"])
    return stored


def _organisations(store, given: gpd.GeoDataFrame | None) -> gpd.GeoDataFrame:
    """Return the organisations layer given, else the store's current one (none if not loaded)."""
    from twin import organisations

    return given if given is not None else organisations.current(store)


def owners_at(lon: Any, lat: Any, codes: Any, at: Any, areas: gpd.GeoDataFrame) -> np.ndarray:
    """Return the organisation owning each category at each place then (twin.organisations)."""
    from twin import organisations

    return organisations.owners_at(lon, lat, codes, at, areas)


def new_case_id(at: pd.Timestamp) -> str:
    """Return a new case id: the local date of *at* and a random suffix (``20260302-1a2b3c4d``)."""
    return new_case_ids(at, 1)[0]


def new_case_ids(at: pd.Timestamp, n: int) -> list[str]:
    """Return *n* new case ids of cases reported at *at* (see :func:`new_case_id`)."""
    day = f"{to_local(at):%Y%m%d}"
    return [f"{day}-{uuid.uuid4().hex[:8]}" for _ in range(n)]


def _check_report(role: str, source: str, lon: float, lat: float, description: str) -> None:
    """Refuse a report the role may not make, or whose source, position or text is wrong."""
    _check_role(TRANSITIONS_BY_ACTION["collect"], role)
    if source not in SOURCES:
        raise ValidationError(f"unknown source {source!r}; use one of {', '.join(SOURCES)}")
    if role == "resident" and source != "resident":
        raise PermissionDeniedError("a resident's report has source 'resident'")
    if not (-180 <= float(lon) <= 180 and -90 <= float(lat) <= 90):
        raise ValidationError(f"({lon}, {lat}) is not a WGS84 longitude/latitude")
    if not str(description).strip():
        raise ValidationError("a case needs a description of what is wrong")


def _check_collect_place(actor: str, role: str, place: dict[str, Any],
                         grid_cells: gpd.GeoDataFrame | None) -> None:
    """Refuse a grid worker's report from outside their own grids."""
    if role != "grid_worker" or grid_cells is None or "grid_worker" not in grid_cells:
        return
    grids = grids_of_worker(actor, grid_cells)
    if grids and place["grid_code"] not in grids:
        raise PermissionDeniedError(
            f"grid worker {actor!r} collects in their own grids ({', '.join(sorted(grids))}); "
            f"this point lies in {place['grid_code']!r}. Ask that grid's worker or the centre."
        )


# -- transitions ---------------------------------------------------------------------------------


def allowed_actions(case: dict[str, Any], role: str) -> list[str]:
    """Actions *role* may take on *case* now (for buttons in the UI)."""
    return [t.action for t in TRANSITIONS
            if case["status"] in t.sources and role in t.roles and t.action != "merge"]


def transition(
    store,
    case_id: str,
    action: str,
    *,
    actor: str,
    role: str,
    at: Any = None,
    note: str = "",
    grid_cells: gpd.GeoDataFrame | None = None,
    actor_grids: Iterable[str] | None = None,
    categories: pd.DataFrame | None = None,
    calendar: WorkCalendar | None = None,
    outbox: Callable[[dict[str, Any], dict[str, Any]], Any] | None = None,
    actor_org: str | None = None,
    organisations: gpd.GeoDataFrame | None = None,
    **fields: Any,
) -> dict[str, Any]:
    """Move a case one step along the loop, if *role* owns that step; record who and when.

    Parameters
    ----------
    store
        A :class:`twin.store.Store`.
    case_id
        The case.
    action
        One of :data:`TRANSITIONS` (``file``, ``dispatch``, ``handle``, ``feedback``, ``check``,
        ``close``, ``evaluate``, ``cancel``, ``return``, ``rework``, ``request_extension``,
        ``extend``, ``hold``, ``resume``, ``supervise``, ``force_close``, ``recategorise``).
    actor, role
        Who acts and in which role.
    at
        When (default now); not before the case's last step.
    note
        Free text kept with the step (required for cancel, return, rework, hold, force_close).
    categories, calendar
        Category table and working calendar (default: the seed tables).
    grid_cells, actor_grids
        Where a grid worker works (for steps a grid worker may take only in their own grids).
    outbox
        Called as ``outbox(case_before, case_after)`` before the step is written; the
        notification rows it returns (:func:`twin.notify.outbox_rows`) are written in the
        step's transaction (:func:`twin.trust.transition_case` passes the assignment's).
    actor_org
        The organisation an ``org_admin``/``org_staff`` works for: they act only on the cases
        it holds (department ``org:<id>``).
    organisations
        The organisations layer, for a dispatch to one (default: the store's current one).
    **fields
        What the action takes: ``department``/``assignee`` (dispatch), ``photos`` (feedback,
        check), ``deadline`` or ``amount``+``unit`` (extend), ``kind`` (supervise),
        ``service_code`` (recategorise), ``score`` (evaluate).

    Returns
    -------
    dict
        The case after the step.

    Raises
    ------
    PermissionDeniedError
        If the role does not own the step (nothing is changed).
    ValidationError
        If the step is not allowed from the case's status or a field is wrong (nothing changed).
    StaleUpdateError
        If someone else changed the case meanwhile (nothing changed; reload and decide again).
    NotFoundError
        If there is no such case.
    """
    if action not in TRANSITIONS_BY_ACTION or action == "collect":
        raise ValidationError(
            f"unknown action {action!r}; actions are "
            f"{', '.join(a for a in TRANSITIONS_BY_ACTION if a != 'collect')} (collect: report())"
        )
    t = TRANSITIONS_BY_ACTION[action]
    case = store.get_case(case_id)
    grids = set(actor_grids) if actor_grids is not None else (
        grids_of_worker(actor, grid_cells) if grid_cells is not None else None)
    _check_step(t, case, actor, role, grids, note, fields)
    _check_own_org(t, case, actor, role, actor_org)
    ts = _time(at, case)
    cal = calendar or load_calendar()
    changes, data, step_data = _apply(t, case, ts, role, fields, cal, categories, grid_cells,
                                      lambda: _organisations(store, organisations))
    status = case["status"]
    if t.target is not None:
        changes["status"] = t.target
    changes["updated_at"] = ts
    changes.update(data_columns(data))
    changes["data"] = data
    history = {"at": ts, "actor": actor, "role": role, "action": action, "from_status": status,
               "to_status": changes.get("status", status), "note": note, "data": step_data}
    rows = None if outbox is None else outbox(case, {**case, **changes})
    try:
        updated = store.update_case(case_id, changes, expected_version=int(case["version"]),
                                    history=history, outbox=rows)
    except StaleUpdateError:
        raise StaleUpdateError(
            f"case {case_id} was changed by someone else while {actor} tried to {action} it "
            f"(it was at version {case['version']}); nothing was written. Reload the case and "
            "decide again."
        ) from None
    LOGGER.info("case %s: %s by %s (%s) %s → %s", case_id, action, actor, role, status,
                history["to_status"])
    return updated


def _check_step(t: Transition, case: dict[str, Any], actor: str, role: str,
                grids: set[str] | None, note: str, fields: dict[str, Any]) -> None:
    """Refuse a step the table does not allow: role, status, own grid, fields, note."""
    _check_role(t, role)
    status = case["status"]
    if status not in t.sources:
        possible = [x.action for x in TRANSITIONS if status in x.sources]
        raise ValidationError(
            f"cannot {t.action} case {case['id']}: it is {status} ({STATUSES[status][0]}); "
            f"{t.action} is allowed from {', '.join(t.sources)}. From {status}: "
            f"{', '.join(possible) or 'nothing (the case is finished)'}."
        )
    _check_own_grid(t, case, actor, role, grids)
    unknown = sorted(set(fields) - set(t.fields))
    if unknown:
        raise ValidationError(
            f"{t.action} takes no field(s) {unknown}; it takes {list(t.fields) or 'none'}"
        )
    if t.note_required and not str(note).strip():
        raise ValidationError(f"{t.action} ({t.label_zh}) needs a note saying why")


def _apply(t: Transition, case: dict[str, Any], ts: pd.Timestamp, role: str,
           fields: dict[str, Any], cal: WorkCalendar, categories: pd.DataFrame | None,
           grid_cells: gpd.GeoDataFrame | None,
           organisations: Callable[[], gpd.GeoDataFrame] | None = None
           ) -> tuple[dict, dict, dict]:
    """Compute the column changes, the new ``data`` and the step's own data for one transition.

    Every step records its time and count; then the transition's declared effect runs.
    """
    data = _data(case)
    data.setdefault("times", {})[t.action] = _iso(ts)
    counts = data.setdefault("counts", {})
    counts[t.action] = counts.get(t.action, 0) + 1
    data.setdefault("deadlines", {})
    step = Step(case=case, at=ts, role=role, fields=fields, calendar=cal, categories=categories,
                grid_cells=grid_cells, data=data,
                cat=lookup_category(case["service_code"], categories), organisations=organisations)
    if t.effect is not None:
        t.effect(step)
    return step.changes, step.data, step.record


# -- duplicates ----------------------------------------------------------------------------------


#: How near an open case of the same category lies to be a possible duplicate (metres).
DUPLICATE_RADIUS_M = 50


def find_duplicates(
    cases: Any,
    *,
    category: str,
    lon: float,
    lat: float,
    at: Any = None,
    hours: float = 24,
    radius_m: float = DUPLICATE_RADIUS_M,
) -> gpd.GeoDataFrame:
    """Open cases of the same category within *radius_m* metres reported in the last *hours*.

    *cases* is a store or a cases GeoDataFrame. Distances are metres on the tangent plane at
    the report (:func:`twin.crs.metres_from`; vectorised). Returns those cases with a
    ``distance_m`` column, nearest first.
    """
    from twin.crs import metres_from
    from twin.store.base import Store

    frame = cases.read_cases() if isinstance(cases, Store) else cases
    ts = _time(at)
    if frame.empty:
        return frame.assign(distance_m=pd.Series(dtype="float64"))
    requested = pd.to_datetime(frame["requested_at"], utc=True)
    keep = (frame["service_code"] == category) & frame["status"].isin(OPEN_STATUSES) & (
        requested >= ts - pd.Timedelta(hours=hours)) & (requested <= ts)
    near = frame.loc[keep]
    if near.empty:
        return near.assign(distance_m=pd.Series(dtype="float64"))
    east, north = metres_from(lon, lat, near["lon"].to_numpy(dtype=float),
                              near["lat"].to_numpy(dtype=float))
    out = near.assign(distance_m=np.hypot(east, north))
    return out.loc[out["distance_m"] <= radius_m].sort_values("distance_m")


def merge(store, duplicate_id: str, into_id: str, *, actor: str, role: str, at: Any = None,
          note: str = "") -> dict[str, Any]:
    """Fold a duplicate report into an open case; the duplicate becomes ``merged``.

    The master case records the duplicate (and its photos and reporter) as a step of its own.

    Raises
    ------
    ValidationError
        If the two are the same case, the master is finished, or the categories differ.
    """
    if duplicate_id == into_id:
        raise ValidationError("a case cannot be merged into itself")
    master = store.get_case(into_id)
    dup = store.get_case(duplicate_id)
    _check_role(TRANSITIONS_BY_ACTION["merge"], role)
    if master["status"] in TERMINAL:
        raise ValidationError(f"case {into_id} is {master['status']}; merge into an open case")
    if master["service_code"] != dup["service_code"]:
        raise ValidationError(
            f"categories differ ({dup['service_code']} vs {master['service_code']}); "
            "recategorise one first"
        )
    merged = transition(store, duplicate_id, "merge", actor=actor, role=role, at=at,
                        note=note or f"duplicate of {into_id}", into=into_id)
    ts = pd.Timestamp(merged["updated_at"])
    mdata = _data(master)
    ddata = _data(dup)
    mdata.setdefault("duplicates", []).append(duplicate_id)
    mdata.setdefault("photos", []).extend(ddata.get("photos", []))
    if ddata.get("reporter"):
        mdata.setdefault("co_reporters", []).append(ddata["reporter"])
    updated_at = max(ts, pd.Timestamp(master["updated_at"]))
    try:
        return store.update_case(
            into_id, {"data": mdata, "updated_at": updated_at},
            expected_version=int(master["version"]),
            history={"at": updated_at, "actor": actor, "role": role, "action": "merge_in",
                     "from_status": master["status"], "to_status": master["status"],
                     "note": note, "data": {"duplicate": duplicate_id}})
    except StaleUpdateError:
        raise StaleUpdateError(
            f"case {into_id} changed while {duplicate_id} was merged into it; {duplicate_id} is "
            "marked merged, but reload the master and add the duplicate's photos by hand."
        ) from None


# -- timers, overdue, escalation ----------------------------------------------------------------


def data_columns(data: dict[str, Any]) -> dict[str, Any]:
    """Return the case columns that mirror *data* (:data:`twin.schema.CASE_DATA_COLUMNS`).

    Every write of a case passes them with its ``data``, so indicators and timers read the
    columns and never parse the JSON.
    """
    out: dict[str, Any] = {}
    for name, (path, how) in CASE_DATA_COLUMNS.items():
        value: Any = data
        for key in path:
            value = value.get(key) if isinstance(value, dict) else None
        if how == "count":
            value = len(value) if isinstance(value, list) else 0
        out[name] = value
    for name in ("reworks", "returns"):
        out[name] = int(out[name] or 0)
    out["extended"] = bool(out["extended"])
    return out


#: Columns :func:`case_table` guarantees, with the dtype an absent one gets.
TABLE_COLUMNS = {c.name: c.dtype for c in CASES.columns if c.name in CASE_DATA_COLUMNS}


def case_table(cases: pd.DataFrame) -> pd.DataFrame:
    """Cases with the columns the timers and indicators use, read from columns only (no JSON).

    The step times, deadlines and timer are case columns (see
    :data:`twin.schema.CASE_DATA_COLUMNS`): ``filed_at``, ``dispatched_at``, ``fed_back_at``,
    ``checked_at``, ``cancelled_at``, ``first_rework_at``, ``file_deadline``,
    ``handle_deadline``, ``timer_stage``, ``timer_start``, ``timer_deadline``, ``timer_unit``,
    ``reworks``, ``returns``, ``supervised``, ``extended``, ``post``; ``held`` is added from the
    status. Absent ones are added empty; times come back as UTC, counts as integers.
    """
    out = pd.DataFrame(cases).copy()
    for name, dtype in TABLE_COLUMNS.items():
        series = out[name] if name in out else pd.Series(None, index=out.index, dtype=object)
        if dtype == "datetime":
            out[name] = to_utc(series)
        elif dtype == "int":
            out[name] = pd.to_numeric(series, errors="coerce").fillna(0).astype(int)
        elif dtype == "bool":
            out[name] = series.astype("boolean").fillna(False).astype(bool)
        else:
            out[name] = series
    out["held"] = out["status"].eq("on_hold") if "status" in out else False
    return out


def timer_states(
    cases: pd.DataFrame,
    now: Any = None,
    *,
    calendar: WorkCalendar | None = None,
    warn_share: float = 0.2,
    warn_before_hours: float | None = None,
) -> pd.DataFrame:
    """Compute the running timer of each open case: ``ok``, ``warning`` or ``overdue`` (vectorised).

    A case is in warning when the time left (on its unit's clock: working time for working
    units) is at most *warn_share* of its stage's limit, or at most *warn_before_hours* hours when
    that is given. It is overdue when its stage deadline or total deadline has passed.

    Returns
    -------
    pandas.DataFrame
        ``id``, ``status``, ``timer_stage``, ``timer_deadline``, ``deadline_at``,
        ``remaining_s`` (on the unit's clock) and ``timer_state``.
    """
    if not 0 <= warn_share <= 1:
        raise ValidationError(f"warn_share must lie in [0, 1]; got {warn_share}")
    table = cases if "timer_deadline" in cases else case_table(cases)
    table = table.loc[table["status"].isin(OPEN_STATUSES) & table["timer_deadline"].notna()]
    ts = _time(now)
    cal = calendar or load_calendar()
    out = table[["id", "status", "timer_stage", "timer_start", "timer_deadline", "timer_unit",
                 "deadline_at"]].copy()
    if out.empty:
        return out.assign(remaining_s=pd.Series(dtype="float64"),
                          timer_state=pd.Series(dtype=object))
    units = out["timer_unit"].fillna("urgent_hours").to_numpy()
    total = cal.elapsed_seconds(out["timer_start"], out["timer_deadline"], units)
    now_arr = pd.Series(ts, index=out.index)
    remaining = cal.elapsed_seconds(now_arr, out["timer_deadline"], units)
    deadline_total = to_utc(out["deadline_at"])
    overdue = (out["timer_deadline"] < ts).to_numpy() | (deadline_total < ts).fillna(False) \
        .to_numpy()
    limit = warn_before_hours * 3600 if warn_before_hours is not None else total * warn_share
    warning = ~overdue & (remaining <= limit)
    out["remaining_s"] = remaining
    out["timer_state"] = np.select([overdue, warning], ["overdue", "warning"], "ok")
    return out


def overdue(store, now: Any = None, **options: Any) -> pd.DataFrame:
    """Open cases whose stage or total deadline has passed (see :func:`timer_states`)."""
    states = timer_states(store.read_cases(), now, **options)
    return states.loc[states["timer_state"] == "overdue"].reset_index(drop=True)


def _timeouts_due(store, ts: pd.Timestamp, calendar: WorkCalendar | None
                  ) -> list[tuple[dict[str, Any], str]]:
    """Return the overdue cases (and their stage) not yet under timeout supervision there."""
    states = overdue(store, ts, calendar=calendar)
    # a case not filed yet (overdue at the filing stage) cannot be supervised: the loop allows
    # 督办 only once a case is filed; it stays overdue on the dispatcher's list
    states = states.loc[states["status"].isin(TRANSITIONS_BY_ACTION["supervise"].sources)]
    due = []
    for case_id, stage in zip(states["id"], states["timer_stage"], strict=True):
        case = store.get_case(case_id)
        if not any(s.get("kind") == "timeout" and s.get("stage") == stage
                   for s in _data(case).get("supervision") or []):
            due.append((case, stage))
    return due


def _timeout_note(stage: str) -> str:
    """Return the timeline note of a timeout supervision, in both languages."""
    from twin import i18n

    key = f"casework.stage.{stage}"
    return (f"{i18n.t(key, 'zh-CN')}阶段超时，督办 / "
            f"overdue at the {i18n.t(key, 'en').lower()} stage: supervised")


def escalate_overdue(store, now: Any = None, *, actor: str = "system", role: str = "dispatcher",
                     calendar: WorkCalendar | None = None) -> list[str]:
    """Put every overdue case under timeout supervision (督办) once per stage; return their ids.

    A case whose current stage already has a timeout supervision is not escalated again. A case
    changed concurrently is skipped (logged) and picked up on the next run.
    """
    ts = _time(now)
    done = []
    for case, stage in _timeouts_due(store, ts, calendar):
        case_id = case["id"]
        try:
            at = max(ts, pd.Timestamp(case["updated_at"]))
            transition(store, case_id, "supervise", actor=actor, role=role, at=at,
                       note=_timeout_note(stage), calendar=calendar, kind="timeout")
            done.append(case_id)
        except (StaleUpdateError, NotFoundError, ValidationError) as exc:
            # changed meanwhile (closed, moved on): the next round sees it as it is then
            LOGGER.warning("escalation of case %s skipped: %s", case_id, exc)
    return done


def escalate_org_overdue(store, now: Any = None, *, grid_cells: pd.DataFrame | None = None,
                         areas: gpd.GeoDataFrame | None = None, actor: str = "system",
                         role: str = "dispatcher") -> list[str]:
    """Hand every case an organisation held past its own deadline back to the community.

    Each gets a timeout supervision (督办) step that moves it to the community's territory
    department (its grid worker as assignee) and records the organisation and its missed
    deadline — one timeline entry; the case's organisation (``org_id``) is kept, for its
    indicators (twin.orgkpi). A case changed concurrently is skipped and picked up on the
    next run. See :mod:`twin.organisations` for the organisations' own deadlines.

    Returns
    -------
    list of str
        The ids of the cases escalated now.
    """
    from twin import organisations

    now = to_utc(pd.Timestamp.now(tz="UTC") if now is None else now)
    late = organisations.overdue(store.read_cases(), now)
    named = organisations.names(_organisations(store, areas))
    done = []
    for case in late.to_dict("records"):
        place = {k: case.get(k) for k in ("grid_code", "resp_grid_id", "community_code")}
        territory = territory_department(case.get("community_code")) or "CMD"
        assignee = grid_worker(place, grid_cells)
        org = str(case["org_id"])
        note = (f"{named.get(org, org)} 超过自身时限 "
                f"{to_local(pd.Timestamp(case['org_deadline'])):%Y-%m-%d %H:%M}"
                f",督办并退回社区 / missed its own limit: supervised, back to the community")
        try:
            transition(store, case["id"], "supervise", actor=actor, role=role,
                       at=max(now, pd.Timestamp(case["updated_at"])), note=note,
                       kind="timeout", department=territory, assignee=assignee)
            done.append(case["id"])
        except (StaleUpdateError, ValidationError) as exc:  # changed meanwhile: next round
            LOGGER.warning("escalation of case %s skipped: %s", case["id"], exc)
    return done


@dataclass(frozen=True)
class Supervision:
    """What one round of supervision did (or, dry, would do): case ids, in order."""

    organisations: list[str]  # handed back to the community: an organisation missed its limit
    timeouts: list[str]  # put under timeout supervision (督办): a stage's deadline passed
    dry_run: bool = False


def supervise_overdue(store, now: Any = None, *, grid_cells: pd.DataFrame | None = None,
                      dry_run: bool = False) -> Supervision:
    """Run one round of timeout supervision (督办): what a scheduler calls, e.g. every 10 min.

    First the cases an organisation held past its own limit go back to the community
    (:func:`escalate_org_overdue`), then every case whose stage deadline has passed is put
    under timeout supervision once per stage (:func:`escalate_overdue`). Run it from one
    scheduler (cron, a systemd timer: ``gridtwin supervise``); a case changed meanwhile is
    skipped and taken on the next round. With *dry_run*, nothing changes and the cases that
    would be are listed.
    """
    from twin import organisations

    ts = _time(now)
    if dry_run:
        late = organisations.overdue(store.read_cases(), ts)
        return Supervision(list(late["id"]),
                           [case["id"] for case, _ in _timeouts_due(store, ts, None)], True)
    handed = escalate_org_overdue(store, ts, grid_cells=grid_cells)
    return Supervision(handed, escalate_overdue(store, ts))
