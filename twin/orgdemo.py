"""The demo's organisations (共建共治), their staff and a year of their cases.

Two property companies, an owners' committee, two co-building units and a social organisation.

Called once by :func:`twin.demo.populate`. Written in bulk, planned vectorised: places in the
organisations' areas (grids by :func:`twin.enrich.assign_grids`, owners by
:func:`twin.organisations.owners_at`), deadlines on the community's calendar
(:func:`twin.cases.stage_deadlines`) and on each organisation's own
(:func:`twin.organisations.org_deadlines`); each case's history is what
:data:`twin.cases.TRANSITIONS` would write along its path — routed to the organisation, handled
on its clock, some reworked, some late and handed back to the community under timeout
supervision (督办), many evaluated; the latest still open.
"""

from __future__ import annotations

import json
import logging
from typing import Any

import geopandas as gpd
import numpy as np
import pandas as pd
import shapely

from twin import cases as loop
from twin.crs import local_metric_crs
from twin.schema import CASE_HISTORY, CASES, coerce_table
from twin.timeutil import local_zone, to_local, to_utc
from twin.trust.privacy import layer_or_empty

LOGGER = logging.getLogger(__name__)

#: Cases a day given to organisations (about 180 a year in the demo community).
PER_DAY = 0.45
#: The demo's organisation staff (fictional; never use these passwords elsewhere):
#: username → (role, organisation, display name, password). Listed in docs/trust.md.
STAFF: dict[str, tuple[str, str, str, str]] = {
    "pm1admin": ("org_admin", "PM1", "桂馨苑物业 经理", "pm1admin-demo"),
    "pm1staff": ("org_staff", "PM1", "桂馨苑物业 客服", "pm1staff-demo"),
    "pm2staff": ("org_staff", "PM2", "丹桂园物业 客服", "pm2staff-demo"),
    "ocstaff": ("org_staff", "OC1", "桂馨苑业委会", "ocstaff-demo"),
    "schoolstaff": ("org_staff", "CB1", "共建学校 后勤", "schoolstaff-demo"),
    "socialstaff": ("org_staff", "SO1", "邻里守望社工站", "socialstaff-demo"),
}
#: (org id, share of the cases, outcomes: on time, reworked, late → escalated)
SHARES = {"PM1": 0.36, "PM2": 0.28, "OC1": 0.08, "CB1": 0.1, "CB2": 0.08, "SO1": 0.1}
OUTCOMES = ("on_time", "reworked", "late")
OUTCOME_P = {"PM1": (0.72, 0.1, 0.18), "PM2": (0.55, 0.15, 0.3)}
OTHER_P = (0.75, 0.1, 0.15)


# -- the organisations ---------------------------------------------------------------------------


def _estates(buildings: gpd.GeoDataFrame) -> list[gpd.GeoDataFrame]:
    """Return the residential estates by name (``桂馨苑12栋`` → 桂馨苑), largest first."""
    homes = buildings.loc[buildings["use"].isin(["residential", "mixed"])]
    names = homes["name"].astype(str).str.replace(r"\d+\s*[栋幢号楼]$", "", regex=True)
    groups = [homes.loc[names == n] for n in names.value_counts().index]
    return [g for g in groups if len(g) >= 3]


def _area(frame: gpd.GeoSeries, metric: Any, margin_m: float) -> Any:
    """Return the hull of the shapes, *margin_m* metres wider, back in WGS84."""
    hull = shapely.convex_hull(shapely.union_all(frame.to_crs(metric).values)).buffer(margin_m)
    return gpd.GeoSeries([hull], crs=metric).to_crs(4326).values[0]


def demo_areas(grid_cells: gpd.GeoDataFrame, buildings: gpd.GeoDataFrame,
               facilities: gpd.GeoDataFrame) -> gpd.GeoDataFrame:
    """Return the demo's organisations layer (one service area each).

    Two estates' property companies, their owners' committee, a school and a clinic
    (co-building units), a social organisation serving the whole community.
    """
    metric = local_metric_crs(grid_cells)
    community = shapely.union_all(grid_cells.geometry.values)
    estates = _estates(buildings)
    if len(estates) < 2:  # a community without named estates: its buildings split west/east
        order = buildings.geometry.centroid.x.sort_values().index
        half = len(order) // 2
        estates = [buildings.loc[order[:half]], buildings.loc[order[half:]]]
    first, second = (_area(e.geometry, metric, 15) for e in estates[:2])
    name_1 = str(estates[0]["name"].iloc[0]).rstrip("0123456789栋幢号楼 ") or "第一小区"
    name_2 = str(estates[1]["name"].iloc[0]).rstrip("0123456789栋幢号楼 ") or "第二小区"
    inside = facilities.loc[facilities.geometry.intersects(community)] if len(facilities) \
        else facilities
    units = []
    for kinds, org_id, fallback, services in (
            (("school", "kindergarten"), "CB1", "学校",
             "E0501=1 working_hours; E0201=4 working_hours"),
            (("clinic", "hospital"), "CB2", "卫生服务站", "E0502=2 working_hours; E0102")):
        found = inside.loc[inside["kind"].isin(kinds)] if "kind" in inside else inside.iloc[0:0]
        shape = found.geometry.iloc[:1] if len(found) else gpd.GeoSeries(
            [community.centroid], crs=4326)
        name = str(found["name"].iloc[0]) if len(found) and "name" in found else fallback
        units.append((org_id, name, _area(shape, metric, 60).intersection(community), services))
    rows = [
        ("PM1", f"{name_1}物业服务有限公司", "property_company", first,
         "E0101=2 working_hours; E0102=2 working_hours; P0301=4 working_hours; P0201; "
         "P0550=1 working_days; E0550=2 working_hours; E0501", "08:00-12:00, 13:30-18:00",
         "daily", "0773-5550101", "王建华", "13807730101"),
        ("PM2", f"{name_2}物业管理处", "property_company", second,
         "E0101=3 working_hours; E0102; P0301; P0550=2 working_days; E0550=4 working_hours",
         "", "workdays", "0773-5550202", "李秀兰", "13807730202"),
        ("OC1", f"{name_1}业主委员会", "owners_committee", first, "E0301=2 working_days",
         "19:00-21:00", "workdays", "", "陈国庆", "13907730303"),
        *((o, n, "co_building_unit", a, s, "", "workdays", "", "", "") for o, n, a, s in units),
        ("SO1", "邻里守望社工站", "social_organisation", community, "", "09:00-17:00", "daily",
         "0773-5550606", "周晓梅", "13607730606"),
    ]
    frame = pd.DataFrame(rows, columns=["org_id", "name", "org_type", "geometry", "services",
                                        "working_hours", "working_days", "office_phone",
                                        "contact_name", "contact_phone"])
    frame.insert(0, "area_id", frame["org_id"] + "-A")
    frame["valid_from"] = pd.Timestamp("2024-01-01").date()
    frame["valid_to"] = None
    return gpd.GeoDataFrame(frame, geometry="geometry", crs=4326)


def create_staff(store, *, actor: str = "make_demo") -> list[Any]:
    """Create (or reset) the demo's organisation staff with their documented passwords."""
    from twin.trust import create_user

    return [create_user(store, name, password, role, display_name=display, org_id=org,
                        actor=actor, replace_existing=True)
            for name, (role, org, display, password) in STAFF.items()]


# -- a year of their cases -----------------------------------------------------------------------

#: The paths of the organisations' cases after collect (each a walk of twin.cases.TRANSITIONS;
#: ``supervise`` hands the case back to the community, as twin.cases.escalate_org_overdue does).
PATHS = {
    "on_time": ("file", "dispatch", "handle", "feedback", "check", "close", "evaluate"),
    "reworked": ("file", "dispatch", "handle", "feedback", "rework", "feedback", "check",
                 "close", "evaluate"),
    "late": ("file", "dispatch", "handle", "supervise", "feedback", "check", "close",
             "evaluate"),
}


def _points_in(area: Any, n: int, rng: np.random.Generator) -> np.ndarray:
    """Return *n* random points inside *area* (rejection sampling over its bounds)."""
    x0, y0, x1, y1 = area.bounds
    out = np.empty((0, 2))
    while len(out) < n:
        xy = np.column_stack([rng.uniform(x0, x1, 4 * n + 8), rng.uniform(y0, y1, 4 * n + 8)])
        out = np.vstack([out, xy[shapely.contains_xy(area, xy[:, 0], xy[:, 1])]])
    return out[:n]


def _hours(rng: np.random.Generator, low: float, high: float, n: int) -> pd.TimedeltaIndex:
    return pd.to_timedelta(rng.uniform(low, high, n), unit="h")


def _plan(areas: gpd.GeoDataFrame, grid_cells: gpd.GeoDataFrame, rng: np.random.Generator,
          now: pd.Timestamp, days: int) -> pd.DataFrame:
    """Return one row per case: organisation, category, place, path and the time of each step."""
    from twin.enrich import assign_grids
    from twin.organisations import org_deadlines, owners_at, parse_services

    n = max(1, int(round(days * PER_DAY)))
    orgs = np.array(list(SHARES))
    org = orgs[rng.choice(len(orgs), size=n, p=np.array(list(SHARES.values())) / sum(
        SHARES.values()))]
    by_org = areas.set_index("org_id")
    grids = shapely.union_all(grid_cells.geometry.values)
    lon, lat = np.empty(n), np.empty(n)
    code = np.empty(n, dtype=object)
    for o in np.unique(org):
        mine = org == o
        xy = _points_in(by_org.loc[o, "geometry"].intersection(grids), int(mine.sum()), rng)
        lon[mine], lat[mine] = xy[:, 0], xy[:, 1]
        owned = sorted(parse_services(by_org.loc[o, "services"])) or ["E0601"]
        code[mine] = rng.choice(owned, int(mine.sum()))
    days_back = np.sort(rng.uniform(0, days, n))[::-1]
    local_day = to_local(now).normalize().tz_localize(None) - pd.to_timedelta(
        np.floor(days_back), unit="D")
    minutes = rng.integers(8 * 60 + 30, 17 * 60 + 30, n)
    t0 = to_utc(pd.Series(local_day.tz_localize(local_zone()) + pd.to_timedelta(minutes,
                                                                                  unit="m")))
    plan = gpd.GeoDataFrame({"org": org, "code": code, "lon": lon, "lat": lat},
                            geometry=gpd.points_from_xy(lon, lat), crs=4326)
    plan = pd.DataFrame(assign_grids(plan, grid_cells).drop(columns="geometry"))
    level = grid_cells.set_index("grid_code")["management_level"] if \
        "management_level" in grid_cells else pd.Series(dtype=object)
    plan["area_class"] = plan["grid_code"].map(level).where(
        lambda s: s.isin(loop.AREA_CLASSES), None)
    plan["collect"] = t0.to_numpy()
    plan["routed"] = owners_at(lon, lat, code, plan["collect"], areas)
    plan["path"] = [OUTCOMES[int(rng.choice(3, p=OUTCOME_P.get(o, OTHER_P)))] for o in org]
    plan["file"] = plan["collect"] + _hours(rng, 0.1, 1.0, n)
    plan["dispatch"] = plan["file"] + _hours(rng, 0.05, 0.5, n)
    for column in ("collect", "file", "dispatch"):  # whole seconds, as stored
        plan[column] = pd.to_datetime(plan[column], utc=True).dt.floor("s")
    cats = loop.load_categories()
    plan["org_due"] = org_deadlines(org, code, plan["area_class"], plan["dispatch"], areas,
                                    cats)
    span = (plan["org_due"] - plan["dispatch"]).clip(lower=pd.Timedelta(minutes=12))
    plan["handle"] = plan["dispatch"] + span * rng.uniform(0.05, 0.3, n)
    plan["feedback"] = plan["dispatch"] + span * rng.uniform(0.35, 0.7, n)
    plan["rework"] = plan["feedback"] + _hours(rng, 0.2, 1.0, n)
    plan["feedback2"] = plan["rework"] + _hours(rng, 0.5, 4.0, n)
    plan["supervise"] = plan["org_due"] + _hours(rng, 0.5, 3.0, n)
    late = plan["path"] == "late"
    plan.loc[late, "feedback"] = plan.loc[late, "supervise"] + _hours(rng, 1, 8, int(late.sum()))
    last = plan["feedback"].where(plan["path"] != "reworked", plan["feedback2"])
    plan["check"] = last + _hours(rng, 0.1, 1.0, n)
    plan["close"] = plan["check"] + _hours(rng, 0.05, 0.5, n)
    plan["evaluate"] = plan["close"] + _hours(rng, 2, 30, n)
    plan["evaluated"] = rng.random(n) < 0.7
    plan["score"] = np.clip(plan["path"].map({"on_time": 88, "reworked": 74, "late": 68})
                            + rng.integers(-8, 12, n), 60, 100)
    plan["id"] = [f"{to_local(t):%Y%m%d}-{int(r):08x}" for t, r in zip(
        plan["collect"], rng.integers(0, 2**32, n), strict=True)]
    plan["source"] = np.where(rng.random(n) < 0.5, "patrol", "resident")
    for column in ("collect", "file", "dispatch", "handle", "feedback", "rework", "feedback2",
                   "supervise", "check", "close", "evaluate"):  # whole seconds, as stored
        plan[column] = pd.to_datetime(plan[column], utc=True).dt.floor("s")
    return plan



def _deadlines(plan: pd.DataFrame) -> pd.DataFrame:
    """Return the community's stage deadlines of every case (vectorised, as twin.cases does)."""
    frame = pd.DataFrame({"service_code": plan["code"], "area_class": plan["area_class"]})

    def due(stage: str, starts: pd.Series) -> pd.Series:
        return loop.stage_deadlines(frame, stage, starts)

    out = pd.DataFrame(index=plan.index)
    out["file"] = due("file", plan["collect"])
    out["dispatch"] = due("dispatch", plan["file"])
    out["total_at_file"] = due("check", due("handle", out["dispatch"]))
    out["handle"] = due("handle", plan["dispatch"])
    out["handle2"] = due("handle", plan["rework"])
    out["total2"] = due("check", out["handle2"])
    out["check"] = due("check", plan["feedback"])
    out["check2"] = due("check", plan["feedback2"])
    return out


def _iso(ts: Any) -> str | None:
    return None if ts is None or pd.isna(ts) else to_utc(pd.Timestamp(ts)).isoformat()


def _staff_of(org: str) -> str:
    return next((u for u, (_, o, _, _) in STAFF.items() if o == org), "system")


def _histories(plan: pd.DataFrame, due: pd.DataFrame, grid_cells: gpd.GeoDataFrame,
               areas: gpd.GeoDataFrame, now: pd.Timestamp) -> tuple[list, list]:
    """Build each case's row and history along its path, up to *now*, as twin.cases writes."""
    cats = loop.load_categories().to_dict("index")
    names = dict(zip(areas["org_id"], areas["name"], strict=True))
    case_rows, hist_rows = [], []
    routes: dict[tuple, dict[str, Any]] = {}  # one lookup per place (and category)
    workers: dict[tuple, str] = {}
    for p, d in zip(plan.to_dict("records"), due.to_dict("records"), strict=True):
        cat, org, code = cats[p["code"]], p["org"], p["code"]
        place = {k: p[k] for k in ("grid_code", "resp_grid_id", "community_code")}
        key = tuple(place.values())
        if key not in workers:
            workers[key] = loop.grid_worker(place, grid_cells) or "system"
        worker = workers[key]
        if (code, p["routed"], key) not in routes:  # the grid's worker is not asked: an org
            routes[(code, p["routed"], key)] = loop.route(  # is routed first, the grid second
                pd.Series(cat), place, None if p["routed"] else grid_cells, org=p["routed"])
        routed = routes[(code, p["routed"], key)]
        territory = loop.territory_department(p["community_code"]) or "CMD"
        staff = _staff_of(org)
        data: dict[str, Any] = {
            "category": {"zh": cat["name_zh"], "en": cat["name_en"], "major": cat["major_code"],
                         "minor": cat["minor_code"]},
            "photos": [], "reporter": {} if p["source"] == "patrol" else {
                "resident_id": p["resident_id"], "channel": "12345"},
            "address": None, "route": routed["route"], "post": routed["post"], "times": {},
            "counts": {}, "deadlines": {}, "timer": None, "supervision": [],
            "possible_duplicates": [], "demo": True}
        if p["routed"]:
            data["org"] = {"id": p["routed"], "routed": _iso(p["collect"])}
        row = {"status": "collected", "department": routed["department"],
               "assignee": routed["assignee"], "deadline_at": None, "closed_at": None}
        steps = [("collect", p["collect"])]
        actions = PATHS[p["path"]] if p["evaluated"] else PATHS[p["path"]][:-1]
        feedbacks = iter(["feedback", "feedback2"])
        steps += [(a, p[next(feedbacks)] if a == "feedback" else p[a]) for a in actions]
        for version, (action, at) in enumerate(steps, start=1):
            if at > now:
                break
            iso, record = _iso(at), {}
            before = row["status"]
            if action == "collect":
                who, role = (worker, "grid_worker") if p["source"] == "patrol" else (
                    "dispatcher", "dispatcher")
                data["times"]["collected"] = iso
                data["deadlines"]["file"] = _iso(d["file"])
                data["timer"] = _timer("file", iso, d["file"], cat["file_unit"])
                record = {"route": routed["route"]}
            else:
                t = loop.TRANSITIONS_BY_ACTION[action]
                data["times"][action] = iso
                data["counts"][action] = data["counts"].get(action, 0) + 1
                who, role = _actor(action, staff, worker, data)
                record = _effect(action, at, p, d, cat, data, row, territory, worker, org, names)
                row["status"] = t.target or row["status"]
            hist_rows.append({"case_id": p["id"], "version": version, "at": at, "actor": who,
                              "role": role, "action": action, "from_status": None if
                              action == "collect" else before, "to_status": row["status"],
                              "note": _note(action, org, names, p),
                              "data": json.dumps(record, ensure_ascii=False, default=str)})
            row["updated_at"], row["version"] = at, version
        case_rows.append({
            "id": p["id"], "version": row["version"], "status": row["status"],
            "service_code": code, "family": cat["family"], "source": p["source"],
            "description": f"{cat['name_zh']}(演示,共建组织承办)",
            **{k: p[k] for k in ("lon", "lat", "grid_code", "resp_grid_id", "community_code",
                                 "street_code", "area_class")},
            "urgency": "normal", "assignee": row["assignee"], "department": row["department"],
            "requested_at": p["collect"], "updated_at": row["updated_at"],
            "deadline_at": row["deadline_at"], "closed_at": row["closed_at"],
            **loop.data_columns(data), "data": json.dumps(data, ensure_ascii=False, default=str)})
    return case_rows, hist_rows


def _timer(stage: str, start: str | None, deadline: Any, unit: str) -> dict[str, Any]:
    return {"stage": stage, "start": start, "deadline": _iso(deadline), "unit": unit}


def _actor(action: str, staff: str, worker: str, data: dict[str, Any]) -> tuple[str, str]:
    """Who takes a step: the organisation's staff while it holds the case, else the community."""
    if action in ("handle", "feedback"):
        held = not (data.get("org") or {}).get("escalated_at")
        return (staff, "org_staff") if held else (worker, "grid_worker")
    if action == "check":
        return worker, "grid_worker"
    if action == "evaluate":
        return "official", "official"
    return ("system" if action == "supervise" else "dispatcher"), "dispatcher"


def _note(action: str, org: str, names: dict[str, str], p: dict[str, Any]) -> str:
    if action == "rework":
        return "核查未通过,需重新处置"
    if action == "supervise":
        return (f"{names.get(org, org)} 超过自身时限 {to_local(p['org_due']):%Y-%m-%d %H:%M}"
                ",督办并退回社区 / missed its own limit: supervised, back to the community")
    return ""


def _effect(action: str, at: pd.Timestamp, p: dict[str, Any], d: dict[str, Any],
            cat: dict[str, Any], data: dict[str, Any], row: dict[str, Any], territory: str,
            worker: str, org: str, names: dict[str, str]) -> dict[str, Any]:
    """Apply one step's effect to the case's data and row; return the step's record."""
    iso, dl = _iso(at), data["deadlines"]
    if action == "file":
        dl["dispatch"], dl["total"] = _iso(d["dispatch"]), _iso(d["total_at_file"])
        data["timer"] = _timer("dispatch", iso, d["dispatch"], cat["dispatch_unit"])
        row["deadline_at"] = d["total_at_file"]
        return {"dispatch_deadline": dl["dispatch"], "total_deadline": dl["total"]}
    if action == "dispatch":
        row["department"], row["assignee"] = f"org:{org}", None
        dl["handle"] = _iso(d["handle"])
        data["timer"] = _timer("handle", iso, d["handle"], cat["handle_unit"])
        data["org"] = {"id": org, "since": iso, "deadline": _iso(p["org_due"])}
        return {"department": row["department"], "assignee": None,
                "handle_deadline": dl["handle"], "org": org, "org_deadline": _iso(p["org_due"])}
    if action == "handle":
        data["timer"]["handling_since"] = iso
        data.setdefault("photos_before", [])
        return {}
    if action == "feedback":
        again = "rework" in data["times"]
        dl["check"] = _iso(d["check2" if again else "check"])
        data.setdefault("photos_after", [])
        data["timer"] = _timer("check", iso, dl["check"], cat["check_unit"])
        return {"check_deadline": dl["check"]}
    if action == "rework":
        data["times"].setdefault("first_rework", iso)
        dl["handle"], dl["total"] = _iso(d["handle2"]), _iso(d["total2"])
        data["timer"] = _timer("handle", iso, d["handle2"], cat["handle_unit"])
        row["deadline_at"] = d["total2"]
        return {"handle_deadline": dl["handle"]}
    if action == "supervise":
        data["supervision"].append({"kind": "timeout", "at": iso,
                                    "stage": (data["timer"] or {}).get("stage")})
        before = row["department"]
        row["department"], row["assignee"] = territory, worker
        data["org"]["escalated_at"] = iso
        return {"kind": "timeout", "department": territory, "assignee": worker,
                "from_department": before}
    if action == "check":
        data.setdefault("photos_check", [])
        data["timer"] = {"stage": "close", "start": iso, "deadline": dl.get("total"),
                         "unit": "urgent_hours"}
        return {}
    if action == "close":
        row["closed_at"], data["timer"] = at, None
        return {}
    data["evaluation"] = float(p["score"])  # evaluate
    return {"score": float(p["score"])}


def populate(store, *, seed: int, now: pd.Timestamp, days: int,
             grid_cells: gpd.GeoDataFrame, buildings: gpd.GeoDataFrame) -> dict[str, int]:
    """Write the organisations layer, their staff and a year of their cases into *store*.

    Same *seed* and *now*, same cases (the staff's password hashes are salted anew).

    Returns
    -------
    dict
        How many ``cases`` and ``history`` steps were written (added to the demo's counts).
    """
    from twin.twin import put_layer

    rng = np.random.default_rng(np.random.SeedSequence([seed, 21]))
    facilities = layer_or_empty(store, "facilities")
    put_layer(store, "organisations", demo_areas(grid_cells, buildings, facilities),
              actor="make_demo", source="twin.orgdemo")
    areas = layer_or_empty(store, "organisations")
    create_staff(store)
    plan = _plan(areas, grid_cells, rng, now, days)
    plan = plan.loc[plan["collect"] <= now].reset_index(drop=True)
    # residents' reports name a resident (the hotline took them); without residents: patrols
    residents = layer_or_empty(store, "residents")
    if residents.empty:
        plan["source"] = "patrol"
        plan["resident_id"] = None
    else:
        ids = residents["resident_id"].astype(str).to_numpy()
        plan["resident_id"] = ids[rng.integers(0, len(ids), len(plan))]
    cases, history = _histories(plan, _deadlines(plan), grid_cells, areas, now)
    counts = {"cases": store.put_rows(CASES, coerce_table(CASES, pd.DataFrame(cases))),
              "history": store.put_rows(CASE_HISTORY,
                                        coerce_table(CASE_HISTORY, pd.DataFrame(history)))}
    LOGGER.info("demo organisations: %s", counts)
    return counts
