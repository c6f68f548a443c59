"""A lived-in demo: a year of cases, alarms, notices, polls and sensor history in a demo store."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import numpy as np
import pandas as pd

from twin import orgdemo
from twin.cases import (
    TRANSITIONS_BY_ACTION,
    data_columns,
    load_categories,
    route,
)
from twin.cockpit import nearest_building
from twin.demo_community import populate_community
from twin.errors import ValidationError
from twin.feeds.rules import load_rules
from twin.scenario import _located_points, make_events
from twin.schema import ALARMS, ANSWERS, CASE_HISTORY, CASES, NOTICES, coerce_table
from twin.timeutil import to_local, to_utc
from twin.trust.participation import resident_key
from twin.trust.permissions import User
from twin.trust.privacy import layer_or_empty
from twin.workcal import load_calendar

LOGGER = logging.getLogger(__name__)

#: How a case's life goes after it is collected: name → (share of cases, actions in order).
#: Every path is checked against :data:`twin.cases.TRANSITIONS` when the module is imported.
PATHS: dict[str, tuple[float, tuple[str, ...]]] = {
    "evaluated": (0.30, ("file", "dispatch", "handle", "feedback", "check", "close", "evaluate")),
    "closed": (0.22, ("file", "dispatch", "handle", "feedback", "check", "close")),
    "reworked": (0.05, ("file", "dispatch", "handle", "feedback", "rework", "feedback", "check",
                        "close", "evaluate")),
    "extended": (0.06, ("file", "dispatch", "handle", "request_extension", "extend", "feedback",
                        "check", "close")),
    "returned": (0.04, ("file", "dispatch", "return", "dispatch", "handle", "feedback", "check",
                        "close")),
    "recategorised": (0.03, ("file", "recategorise", "dispatch", "handle", "feedback", "check",
                             "close", "evaluate")),
    "supervised": (0.08, ("file", "dispatch", "handle", "supervise", "feedback", "check",
                          "close")),
    "held": (0.03, ("file", "dispatch", "handle", "hold")),
    "resumed": (0.02, ("file", "dispatch", "handle", "hold", "resume", "feedback", "check",
                       "close")),
    "force_closed": (0.03, ("file", "dispatch", "handle", "force_close")),
    "cancelled": (0.03, ("cancel",)),
    "filed_cancelled": (0.02, ("file", "cancel")),
    "leader_supervised": (0.09, ("file", "dispatch", "supervise", "handle", "feedback", "check",
                                 "close", "evaluate")),
}

#: Who takes each step: action → (actor, role); ``worker`` is the case's grid worker (or the
#: department when a department handles it).
ACTORS: dict[str, tuple[str, str]] = {
    "file": ("dispatcher", "dispatcher"), "dispatch": ("dispatcher", "dispatcher"),
    "cancel": ("dispatcher", "dispatcher"), "recategorise": ("dispatcher", "dispatcher"),
    "close": ("dispatcher", "dispatcher"), "rework": ("dispatcher", "dispatcher"),
    "handle": ("worker", "grid_worker"), "feedback": ("worker", "grid_worker"),
    "return": ("worker", "grid_worker"), "request_extension": ("worker", "grid_worker"),
    "check": ("worker", "grid_worker"), "extend": ("official", "official"),
    "hold": ("official", "official"), "resume": ("official", "official"),
    "force_close": ("official", "official"), "evaluate": ("official", "official"),
    "supervise": ("dispatcher", "dispatcher"),
}
NOTES = {
    "cancel": "重复上报或不属于受理范围", "return": "不属于本网格/部门职责,退回重新派遣",
    "rework": "核查未通过,现场仍有问题", "hold": "需专项资金,暂时无法处置",
    "force_close": "经领导研究决定结案", "request_extension": "需协调物业和施工单位,申请延期",
}
#: Working hours (or the unit given) between a step and the one before it: (low, high, unit).
GAPS: dict[str, tuple[float, float, str]] = {
    "file": (0.1, 1.6, "working_hours"), "dispatch": (0.05, 0.6, "working_hours"),
    "return": (0.2, 2.0, "working_hours"), "handle": (0.05, 1.0, "working_hours"),
    "rework": (0.2, 1.0, "working_hours"), "check": (0.05, 0.5, "working_hours"),
    "close": (0.02, 0.3, "working_hours"), "evaluate": (2.0, 40.0, "working_hours"),
    "extend": (0.5, 3.0, "working_hours"), "hold": (1.0, 8.0, "working_hours"),
    "resume": (5.0, 30.0, "working_days"), "force_close": (3.0, 20.0, "working_days"),
    "cancel": (0.1, 1.0, "working_hours"), "recategorise": (0.05, 0.5, "working_hours"),
    "supervise": (0.1, 1.0, "working_hours"),
}
SOURCES = ("patrol", "resident", "camera", "sensor", "instruction")
SOURCE_P = (0.5, 0.25, 0.08, 0.1, 0.07)
#: Sensor-fed categories: the alarm rules' case categories (data/rules.csv) by sensor kind.
SENSOR_CATEGORY = {"smoke": "P0150", "manhole": "P0102", "water_leak": "E0402",
                   "noise": "E0301"}
PER_GRID_DAY = 0.6  # cases a day per unit grid: about 7 a day in a 12-grid community


def _path_statuses(actions: tuple[str, ...]) -> list[tuple[str, str]]:
    """(from, to) status of each step of a path after ``collect``; refuse an invalid path."""
    status, out = "collected", []
    for action in actions:
        t = TRANSITIONS_BY_ACTION[action]
        if status not in t.sources:
            raise ValidationError(f"demo path step {action!r} is not allowed from {status!r}")
        new = t.target or status
        out.append((status, new))
        status = new
    return out


_PATH_STATUSES = {name: _path_statuses(steps) for name, (_, steps) in PATHS.items()}
#: Where recent cases wait at *now*, in turn ("collected" first: waiting to be filed).
WAITING = ("collected", "filed", "dispatched", "handling", "fed_back", "checked")
WAIT_DAYS, WAIT_PER_STATUS = 6, 3  # of the cases requested in the last 6 days, 3 per status


@dataclass
class _Layers:
    grid_cells: pd.DataFrame
    buildings: pd.DataFrame
    sensors: pd.DataFrame
    cameras: pd.DataFrame
    residents: pd.DataFrame


def _layers(store) -> _Layers:
    got = {n: layer_or_empty(store, n) for n in ("grid_cells", "buildings", "sensors", "cameras",
                                                 "residents")}
    if got["grid_cells"].empty or got["buildings"].empty:
        raise ValidationError("populate needs the demo layers (grid_cells, buildings …) in the "
                              "store first; build them with make-demo.")
    return _Layers(**got)


def _demo_user(store, role: str) -> User | None:
    from twin.trust import list_users

    users = list_users(store)
    users = users.loc[users["role"] == role].sort_values("username")
    if users.empty:
        return None
    row = users.iloc[0]
    grids = row.get("grids")
    grids = json.loads(grids) if isinstance(grids, str) else (grids or [])

    def opt(v: Any) -> str | None:
        return None if v is None or pd.isna(v) else str(v)

    return User(str(row["username"]), role, grids=tuple(grids),
                resident_id=opt(row.get("resident_id")),
                building_code=opt(row.get("building_code")))


def populate(store, *, seed: int = 0, now: Any = None, days: int = 395,
             per_day: float | None = None, events: int = 20_000) -> dict[str, int]:
    """Fill a demo store with a year of governance life up to *now*, deterministically.

    The store must hold the demo layers and users (``make-demo``). Written in bulk: cases through
    every path of :data:`PATHS` (each history a valid path of :data:`twin.cases.TRANSITIONS`,
    steps on the working calendar, some open and some overdue at *now*), alarms with their
    outcomes (some promoted to cases), notices and polls with residents' answers, and a week of
    sensor readings and camera alerts before *now*.

    Parameters
    ----------
    store
        A :class:`twin.store.Store` with the demo layers and demo users.
    seed
        Same seed and *now*, same demo.
    now
        The demo's present (default: this minute); cases are requested in the *days* before.
    days, per_day
        How far back the cases go (395: thirteen months, so that the month a year before the
        last full one is complete for 同比) and how many a day are reported on average (default
        :data:`PER_GRID_DAY` per unit grid, so a street gets ten times a community's).
    events
        Sensor readings and camera alerts in the last week.

    Returns
    -------
    dict
        How many ``cases``, ``history`` steps, ``alarms``, ``notices``, ``answers`` and
        ``events`` were written.

    Raises
    ------
    ValidationError
        If the store lacks the demo layers or a count is not positive (nothing is written).
    """
    if not (isinstance(days, int) and days > 0 and (per_day is None or per_day > 0)
            and events >= 0):
        raise ValidationError(f"populate needs days > 0 (an integer), per_day > 0 and events >= 0;"
                              f" got days={days!r}, per_day={per_day!r}, events={events!r}")
    now = to_utc(pd.Timestamp.now(tz="UTC").floor("min") if now is None else now)
    layers = _layers(store)
    rng = np.random.default_rng(np.random.SeedSequence([seed, 17]))
    cal = load_calendar()
    cats = load_categories()
    if per_day is None:
        per_day = PER_GRID_DAY * len(layers.grid_cells)
    n = max(1, int(round(days * per_day)))
    plan = _plan(layers, n, rng, now, days, cats)
    steps = _step_times(plan, rng, now, cal, cats)
    users = {r: _demo_user(store, r) for r in ("grid_worker", "resident")}
    cases, history = _assemble(plan, steps, layers, cats, users)
    alarms = _open_once(store, _alarms(plan, cases, layers, rng, now))
    notices, answers = _participation(layers, users["resident"], rng, now)
    readings = _events(layers, seed, now, events)
    counts = {
        "cases": store.put_rows(CASES, cases),
        "history": store.put_rows(CASE_HISTORY, history),
        "alarms": store.put_rows(ALARMS, alarms),
        "notices": store.put_rows(NOTICES, notices),
        "answers": store.put_rows(ANSWERS, answers),
        "events": store.append_events(readings) if len(readings) else 0,
    }
    for key, written in orgdemo.populate(store, seed=seed, now=now, days=days,  # 共建共治
                                         grid_cells=layers.grid_cells,
                                         buildings=layers.buildings).items():
        counts[key] += written
    populate_community(store, counts, seed=seed, now=now, days=days,
                       grid_cells=layers.grid_cells, residents=layers.residents)
    store.append_audit("make_demo", "demo.populate", "store",
                       {"seed": seed, "now": now.isoformat(), **counts}, "twin.demo")
    LOGGER.info("demo populated: %s", counts)
    return counts


# -- the cases' plan: where, what, who, which path ------------------------------------------------


def _plan(layers: _Layers, n: int, rng: np.random.Generator, now: pd.Timestamp, days: int,
          cats: pd.DataFrame) -> pd.DataFrame:
    """One row per case: place, category, source, path and request time."""
    scenario = {"grid_cells": layers.grid_cells, "buildings": layers.buildings,
                "cameras": layers.cameras, "sensors": layers.sensors}
    pts = _located_points(scenario, int(n * 1.3) + 10, rng, 20.0)
    pts = pts.loc[pts["grid_code"].notna()].iloc[:n].reset_index(drop=True)
    n = len(pts)
    names = np.array(list(PATHS))
    shares = np.array([PATHS[p][0] for p in names])
    path = rng.choice(names, size=n, p=shares / shares.sum())
    source = rng.choice(np.array(SOURCES), size=n, p=SOURCE_P)
    codes = cats.index.to_numpy(dtype=object)
    # common problems more often: garbage, cleaning, bikes, vending, lamps first
    weight = np.where(np.isin(codes, ["E0101", "E0102", "E0501", "E0502", "P0105", "P0301",
                                      "E0201", "E0550"]), 4.0, 1.0)
    code = rng.choice(codes, size=n, p=weight / weight.sum())
    # sensor cases are alarms promoted to cases, at the sensor, with the rule's category
    sensor_id = np.full(n, None, dtype=object)
    fed = layers.sensors.loc[layers.sensors["kind"].isin(list(SENSOR_CATEGORY))]
    is_sensor = np.flatnonzero(source == "sensor")
    if len(fed) and len(is_sensor):
        pick = fed.iloc[rng.integers(0, len(fed), len(is_sensor))]
        sensor_id[is_sensor] = pick["sensor_id"].to_numpy(dtype=object)
        code[is_sensor] = pick["kind"].map(SENSOR_CATEGORY).to_numpy(dtype=object)
        for col in ("lon", "lat"):
            pts.loc[is_sensor, col] = np.round(
                pick.geometry.x if col == "lon" else pick.geometry.y, 7).to_numpy()
        for col in ("grid_code", "resp_grid_id", "community_code", "street_code"):
            pts.loc[is_sensor, col] = pick[col].to_numpy(dtype=object)
    else:
        source[is_sensor] = "patrol"
    # a recategorised case starts under another category of its family
    first_code = code.copy()
    recat = np.flatnonzero(path == "recategorised")
    for i in recat:
        same = codes[(cats["family"].to_numpy() == cats.at[code[i], "family"]) & (codes != code[i])]
        first_code[i] = same[rng.integers(0, len(same))] if len(same) else code[i]
    path[recat[first_code[recat] == code[recat]]] = "closed"
    # reported uniformly over the days, more in the daytime (local), none in the future
    day = now.normalize() - pd.to_timedelta(rng.integers(0, days, n), unit="D")
    hour = np.clip(rng.normal(11.5, 3.2, n), 6.5, 21.5)
    requested = (day.tz_convert(to_local(now).tz).normalize()
                 + pd.to_timedelta(hour, unit="h")).tz_convert("UTC")
    requested = requested.where(requested < now, now - pd.to_timedelta(
        rng.uniform(0.2, 6, n), unit="h")).floor("s")
    level = pts["grid_code"].map(layers.grid_cells.set_index("grid_code")["management_level"])
    plan = pd.DataFrame({
        "path": path, "source": source, "code": code, "first_code": first_code,
        "sensor_id": sensor_id, "requested_at": requested,
        "area_class": level.where(level.isin(["A", "B", "C"]), "B").to_numpy(dtype=object),
        "urgency": np.where(rng.random(n) < 0.05, "urgent", "normal"),
        **{c: pts[c].to_numpy() for c in ("lon", "lat", "grid_code", "resp_grid_id",
                                          "community_code", "street_code")},
    })
    # the address of the building the case is at or next to
    near = nearest_building(layers.buildings, plan["lon"].to_numpy(), plan["lat"].to_numpy())
    address = layers.buildings.set_index("building_code")["address"] \
        if "address" in layers.buildings else pd.Series(dtype=object)
    lookup = {k: v for k, v in address.items() if isinstance(v, str) and v}
    plan["address"] = np.array([lookup.get(c) for c in near], dtype=object)
    plan = plan.sort_values("requested_at", kind="stable").reset_index(drop=True)
    local_day = to_local(plan["requested_at"]).dt.strftime("%Y%m%d")
    plan["id"] = local_day + "-d" + pd.Series(rng.choice(16**7, size=n, replace=False)
                                               ).map("{:07x}".format)
    alarm = plan["source"].eq("sensor")
    stamp = plan["requested_at"].dt.strftime("%Y%m%dT%H%M%S")
    rule = plan["code"].map({v: k for k, v in _SENSOR_RULES.items()})
    plan["alarm_id"] = (rule + "/" + plan["sensor_id"].astype(str) + "/" + stamp).where(alarm)
    twice = alarm & plan["alarm_id"].duplicated()  # one alarm per sensor and moment
    plan.loc[twice, ["source", "alarm_id"]] = ["patrol", None]
    alarm &= ~twice
    plan.loc[alarm, "id"] = "A-" + plan.loc[alarm, "alarm_id"].str.replace("/", "-")
    return plan


#: rule of data/rules.csv → the category its alarms become (for the demo's sensor cases)
_SENSOR_RULES = {"smoke": "P0150", "manhole_open": "P0102", "water_leak": "E0402",
                 "noise_high": "E0301"}


def _limits(cats: pd.DataFrame, codes: np.ndarray, area: np.ndarray, stage: str
            ) -> tuple[np.ndarray, np.ndarray]:
    rows = cats.loc[codes]
    if stage == "handle":
        table = rows[["handle_limit_a", "handle_limit_b", "handle_limit_c"]].astype(float)
        pick = pd.Series(area).map({"A": 0, "B": 1, "C": 2}).fillna(1).astype(int).to_numpy()
        return table.to_numpy()[np.arange(len(rows)), pick], rows["handle_unit"].to_numpy()
    return rows[f"{stage}_limit"].astype(float).to_numpy(), rows[f"{stage}_unit"].to_numpy()


def _step_times(plan: pd.DataFrame, rng: np.random.Generator, now: pd.Timestamp, cal,
                cats: pd.DataFrame) -> pd.DataFrame:
    """One row per step (collect first): time, stage timer started and deadlines, on the calendar.

    Steps are placed position by position for all cases at once (vectorised calendar arithmetic
    on naive UTC ``datetime64`` arrays); steps that would fall after *now* are left out, so
    recent cases are still open.
    """
    nat = np.datetime64("NaT", "ns")

    def add(starts: np.ndarray, amounts: np.ndarray, units: np.ndarray) -> np.ndarray:
        out = np.full(len(starts), nat)
        ok = ~np.isnat(starts)
        if ok.any():
            out[ok] = cal.deadlines(starts[ok], np.asarray(amounts)[ok],
                                    np.asarray(units)[ok]).tz_convert(None).to_numpy()
        return out

    paths = [("collect", *PATHS[p][1]) for p in plan["path"]]
    lengths = np.array([len(p) for p in paths])
    case = np.repeat(np.arange(len(plan)), lengths)
    pos = np.concatenate([np.arange(k) for k in lengths])
    action = np.concatenate([np.array(p, dtype=object) for p in paths])
    m, n = len(action), len(plan)
    at, due, total = (np.full(m, nat) for _ in range(3))
    stage = np.full(m, None, dtype=object)
    stage_unit = np.full(m, None, dtype=object)
    requested = plan["requested_at"].dt.tz_convert(None).to_numpy()
    last = requested.copy()
    handle_due, tot = np.full(n, nat), np.full(n, nat)
    area = plan["area_class"].to_numpy(dtype=object)
    # how much of the handling limit feedback takes: about 1 in 5 late, supervised ones late
    late = np.where(plan["path"].isin(["supervised"]).to_numpy(),
                    rng.uniform(1.2, 3.0, n), rng.gamma(4.0, 0.13, n))
    final = plan["code"].to_numpy(dtype=object)
    first = plan["first_code"].to_numpy(dtype=object)
    for k in range(lengths.max()):
        rows = np.flatnonzero(pos == k)
        ci, act = case[rows], action[rows]
        codes = np.where(_after_recat(ci, rows, pos, action), final[ci], first[ci])
        h_amount, h_unit = _limits(cats, codes, area[ci], "handle")
        c_amount, c_unit = _limits(cats, codes, area[ci], "check")
        if k == 0:
            t = requested[ci]
        else:
            amount = np.zeros(len(rows))
            unit = np.full(len(rows), "working_hours", dtype=object)
            for a, (lo, hi, u) in GAPS.items():
                sel = act == a
                amount[sel] = rng.uniform(lo, hi, sel.sum())
                unit[sel] = u
            for a, share in (("feedback", late[ci]), ("request_extension", 0.6)):
                sel = act == a
                amount[sel] = (h_amount * share)[sel]
                unit[sel] = h_unit[sel]
            t = add(last[ci], amount, unit).astype("datetime64[s]").astype("datetime64[ns]")
            # a timeout supervision comes once the handling deadline has passed
            hd = handle_due[ci]
            sup = (act == "supervise") & ~np.isnat(hd) & (hd > t)
            t[sup] = hd[sup] + np.timedelta64(20, "m")
        # stage timers the step (re)starts
        started = np.full(len(rows), nat)
        st = np.full(len(rows), None, dtype=object)
        st_unit = np.full(len(rows), None, dtype=object)
        for stage_name, acts in (("file", ("collect",)), ("dispatch", ("file", "return")),
                                 ("handle", ("dispatch", "rework", "resume")),
                                 ("check", ("feedback",))):
            sel = np.isin(act, acts)
            if sel.any():
                amt, un = _limits(cats, codes[sel], area[ci][sel], stage_name)
                started[sel] = add(t[sel], amt, un)
                st[sel] = stage_name
                st_unit[sel] = un
        hd = handle_due[ci].copy()
        restarts = np.isin(act, ("dispatch", "rework", "resume"))
        hd[restarts] = started[restarts]
        ext = act == "extend"
        if ext.any():
            hd[ext] = add(hd[ext], h_amount[ext] * 0.8 + 1, h_unit[ext])
            started[ext] = hd[ext]
        handle_due[ci] = hd
        # the total deadline: handling deadline + check limit (once filed: from the dispatch
        # deadline + the handling limit; a recategorisation recomputes it with the new limits)
        base = np.full(len(rows), nat)
        refile = np.isin(act, ("file", "recategorise"))
        if refile.any():
            dispatch_due = np.where(act == "file", started, due[np.maximum(rows - 1, 0)])
            base[refile] = add(dispatch_due[refile], h_amount[refile], h_unit[refile])
        base[restarts | ext] = hd[restarts | ext]
        new_total = add(base, c_amount, c_unit)
        tt = np.where(np.isnat(new_total), tot[ci], new_total)
        tot[ci] = tt
        at[rows], due[rows], total[rows], stage[rows] = t, started, tt, st
        stage_unit[rows] = st_unit
        last[ci] = t
    # whole seconds: both stores keep them exactly, so the same seed gives the same demo anywhere
    def utc(v: np.ndarray) -> pd.Series:
        return to_utc(pd.Series(v).dt.floor("s"))

    frame = pd.DataFrame({"case": case, "pos": pos, "action": action, "at": utc(at),
                          "due": utc(due), "total": utc(total), "stage": stage,
                          "unit": stage_unit})
    # a step after now has not happened yet (nor any after it)
    cut = (frame["at"] > now).groupby(frame["case"]).cummax().to_numpy().copy()
    # and a few recent cases wait at each open status (some of them overdue by now)
    status = np.concatenate([["collected", *(to for _, to in _PATH_STATUSES[p])]
                             for p in plan["path"]])
    recent = (plan["requested_at"] > now - pd.Timedelta(days=WAIT_DAYS)).to_numpy()[case]
    stop = lengths.copy()
    for target in WAITING:
        rows = np.flatnonzero((status == target) & ~cut & recent & (stop[case] == lengths[case])
                              & (pos < lengths[case] - 1))
        pick = rng.choice(rows, size=min(WAIT_PER_STATUS, len(rows)), replace=False)
        stop[case[pick]] = pos[pick] + 1
    cut |= pos >= stop[case]
    return frame.loc[~cut].reset_index(drop=True)


def _after_recat(ci, rows, pos, action) -> np.ndarray:
    """Tell, per step row, whether the case's final category applies (not before a recategorise)."""
    recat_pos = {}
    for i in np.flatnonzero(action == "recategorise"):
        recat_pos[i - pos[i]] = pos[i]
    if not recat_pos:
        return np.ones(len(rows), dtype=bool)
    starts = rows - pos[rows]
    limit = np.array([recat_pos.get(s, -1) for s in starts])
    return (limit < 0) | (pos[rows] >= limit)


def _iso(ts: Any) -> str | None:
    return None if ts is None or pd.isna(ts) else pd.Timestamp(ts).isoformat()


def _assemble(plan: pd.DataFrame, steps: pd.DataFrame, layers: _Layers, cats: pd.DataFrame,
              users: dict[str, User | None]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Build the case rows and history rows from the plan and the steps taken (as twin.cases)."""
    cells = layers.grid_cells
    routes = {}
    for code, first, grid, resp, comm in plan[["code", "first_code", "grid_code", "resp_grid_id",
                                               "community_code"]].itertuples(index=False):
        for c in (code, first):
            if (c, grid) not in routes:
                place = {"grid_code": grid, "resp_grid_id": resp, "community_code": comm}
                routes[(c, grid)] = route(cats.loc[c], place, cells)
    grid_worker = cells.set_index("grid_code")["grid_worker"].dropna().to_dict()
    worker_user = users.get("grid_worker")
    my_grids = set(worker_user.grids) if worker_user else set()
    resident_user = users.get("resident")
    reporters = _reporters(plan, layers, resident_user)
    records = plan.to_dict("records")
    cat_of = cats.to_dict("index")
    steps = steps.sort_values(["case", "pos"], kind="stable")
    for col in ("at", "due", "total"):  # whole UTC seconds, as isoformat() writes them
        text = steps[col].dt.strftime("%Y-%m-%dT%H:%M:%S+00:00")
        steps[f"{col}_iso"] = text.astype(object).where(steps[col].notna(), None)
    bounds = np.flatnonzero(np.diff(steps["case"].to_numpy())) + 1
    all_rows = list(steps.itertuples(index=False))
    starts = np.concatenate([[0], bounds])
    ends = np.concatenate([bounds, [len(all_rows)]])
    case_rows, hist_rows = [], []
    for lo, hi in zip(starts, ends, strict=True):
        group = all_rows[lo:hi]
        ci = group[0].case
        p = records[ci]
        code = p["first_code"]
        routed = routes[(code, p["grid_code"])]
        worker = (worker_user.username if worker_user and p["resp_grid_id"] in my_grids
                  else routed["assignee"])
        cat = cat_of[code]
        data: dict[str, Any] = {
            "category": {"zh": cat["name_zh"], "en": cat["name_en"], "major": cat["major_code"],
                         "minor": cat["minor_code"]},
            "photos": [], "reporter": reporters[ci],
            "address": p["address"] if isinstance(p["address"], str) else None,
            "route": routed["route"], "post": routed["post"], "times": {}, "counts": {},
            "deadlines": {}, "timer": None, "supervision": [], "possible_duplicates": [],
            "demo": True,
        }
        status, closed_at, deadline_at = None, None, None
        dept, assignee = routed["department"], routed["assignee"]
        for row in group:
            a, ts, iso_at = row.action, row.at, row.at_iso
            step: dict[str, Any] = {}
            if a == "collect":
                actor, role = _collector(p, worker, reporters[ci])
                data["times"]["collected"] = iso_at
                step = {"route": routed["route"]}
                new = "collected"
            else:
                t = TRANSITIONS_BY_ACTION[a]
                actor, role = ACTORS[a]
                if a == "check":  # always the grid's own worker, on site
                    actor = (worker_user.username if worker_user and p["resp_grid_id"] in my_grids
                             else grid_worker.get(p["grid_code"]) or "gridworker")
                elif actor == "worker":
                    actor = worker if (worker and data["post"] == "grid_worker") else dept
                    role = "grid_worker" if data["post"] == "grid_worker" else "official"
                data["times"][a] = iso_at
                data["counts"][a] = data["counts"].get(a, 0) + 1
                new = t.target or status
                if a == "recategorise":
                    old, code = code, p["code"]
                    routed = routes[(code, p["grid_code"])]
                    cat = cat_of[code]
                    dept, assignee = routed["department"], routed["assignee"]
                    data["category"] = {"zh": cat["name_zh"], "en": cat["name_en"],
                                        "major": cat["major_code"], "minor": cat["minor_code"]}
                    data.update(route=routed["route"], post=routed["post"])
                    step = {"old": old, "new": code, "route": routed["route"]}
                elif a == "dispatch":
                    step = {"department": dept, "assignee": assignee}
                elif a == "return":
                    data["counts"]["returned"] = data["counts"].get("returned", 0) + 1
                elif a == "rework":
                    data["times"].setdefault("first_rework", iso_at)
                elif a in ("feedback", "check"):
                    # no photos: the demo has no files to show (the lists exist, as after a
                    # step taken without photos)
                    data.setdefault("photos_after" if a == "feedback" else "photos_check", [])
                elif a == "close":
                    closed_at = ts
                elif a == "force_close":
                    closed_at, data["forced"] = ts, True
                elif a == "evaluate":
                    data["evaluation"] = 60 + int(p["id"][-3:], 16) % 41
                elif a == "hold":
                    data["held_since"] = iso_at
                elif a == "resume":
                    data.pop("held_since", None)
                elif a == "request_extension":
                    data["extension_request"] = {"amount": None, "unit": None, "at": iso_at}
                elif a == "extend":
                    step = {"old_deadline": data["deadlines"].get("handle"),
                            "new_deadline": row.due_iso}
                    data["extended"] = True
                    data.pop("extension_request", None)
                elif a == "supervise":
                    kind = "leader" if p["path"] == "leader_supervised" else "timeout"
                    if kind == "leader":
                        actor, role = "official", "official"
                    data["supervision"].append({"kind": kind, "at": iso_at, "stage": (
                        data["timer"] or {}).get("stage")})
                    step = {"kind": kind}
            # the running timer after the step
            if isinstance(row.stage, str):
                data["deadlines"][row.stage] = row.due_iso
                step[f"{row.stage}_deadline"] = row.due_iso
                data["timer"] = {"stage": row.stage, "start": iso_at, "deadline": row.due_iso,
                                 "unit": row.unit}
            if a == "extend":
                data["deadlines"]["handle"] = row.due_iso
                if data["timer"] and data["timer"].get("stage") == "handle":
                    data["timer"]["deadline"] = row.due_iso
            if not pd.isna(row.total):
                data["deadlines"]["total"] = row.total_iso
                deadline_at = row.total
            if a == "check":
                data["timer"] = {"stage": "close", "start": iso_at,
                                 "deadline": data["deadlines"].get("total"),
                                 "unit": "urgent_hours"}
            if new in ("closed", "evaluated", "cancelled", "on_hold"):
                data["timer"] = None
            hist_rows.append({"case_id": p["id"], "version": row.pos + 1, "at": ts,
                              "actor": actor, "role": role, "action": a, "from_status": status,
                              "to_status": new, "note": NOTES.get(a, ""),
                              "data": json.dumps(step, ensure_ascii=False, default=str)})
            status = new
        case_rows.append({
            "id": p["id"], "version": len(group), "status": status, "service_code": code,
            "family": cat["family"], "source": p["source"],
            "description": f"{cat['name_zh']}:{cat['filing_condition']}(演示)",
            **{k: p[k] for k in ("lon", "lat", "grid_code", "resp_grid_id", "community_code",
                                 "street_code", "area_class", "urgency")},
            "assignee": assignee, "department": dept, "requested_at": p["requested_at"],
            "updated_at": group[-1].at, "deadline_at": deadline_at,
            "closed_at": closed_at, **data_columns(data),
            "data": json.dumps(data, ensure_ascii=False, default=str),
        })
    cases = coerce_table(CASES, pd.DataFrame(case_rows))
    history = coerce_table(CASE_HISTORY, pd.DataFrame(hist_rows))
    return cases, history


def _collector(p: pd.Series, worker: str | None, reporter: dict) -> tuple[str, str]:
    if p["source"] == "patrol" and worker:
        return worker, "grid_worker"
    if p["source"] == "resident":
        # residents without a login report through the public channel
        return reporter.get("username") or "public-report", "resident"
    if p["source"] == "instruction":
        return "official", "official"
    return "system", "dispatcher"


def _reporters(plan: pd.DataFrame, layers: _Layers, resident: User | None) -> list[dict]:
    """Pick the resident who reported each resident case (a neighbour in its grid): ids only."""
    out: list[dict] = [{} for _ in range(len(plan))]
    res = layers.residents
    if res.empty:
        return out
    where = layers.buildings.set_index("building_code")["grid_code"]
    grid = res["building_code"].map(where)
    ids = res["resident_id"].to_numpy(dtype=object)
    pools = {g: ids[np.flatnonzero(grid.to_numpy() == g)] for g in grid.dropna().unique()}
    rng = np.random.default_rng(len(plan))
    for i in np.flatnonzero(plan["source"].to_numpy() == "resident"):
        g = plan.at[i, "grid_code"]
        pool = pools.get(g)
        if resident and resident.building_code and g == where.get(resident.building_code) \
                and rng.random() < 0.4:
            out[i] = {"resident_id": resident.resident_id, "username": resident.username}
        else:  # a neighbour in the grid, or anyone where nobody lives in the grid
            pool = pool if pool is not None and len(pool) else ids
            out[i] = {"resident_id": str(pool[rng.integers(0, len(pool))])}
    return out


def _open_once(store, alarms: pd.DataFrame) -> pd.DataFrame:
    """Leave out the open alarms whose (rule, source) has one open in the store already.

    One open alarm per (rule, source) is the store's rule (docs/feeds.md): a demo built again
    into a PostGIS store (``make-demo --force`` adds to it) keeps the open alarm it has.
    """
    held = store.read_rows(ALARMS, status="open")
    if held.empty or alarms.empty:
        return alarms
    keys = ["rule_id", "source_id"]
    clash = pd.MultiIndex.from_frame(alarms[keys].astype(str)).isin(
        pd.MultiIndex.from_frame(held[keys].astype(str)))
    return alarms.loc[~(clash & (alarms["status"] == "open").to_numpy())]


# -- alarms, participation, sensor history --------------------------------------------------------

#: Alarm life after it opened, by share: the statuses it went through (ALARM_TRANSITIONS).
ALARM_PATHS = (
    (0.4, ("acknowledged", "resolved", "closed")),
    (0.05, ("acknowledged", "resolved")),
    (0.2, ("resolved", "closed")),
    (0.15, ("acknowledged", "closed")),  # a false alarm, dismissed
    (0.1, ("closed",)),
    (0.1, ("acknowledged",)),
)


def _alarms(plan: pd.DataFrame, cases: pd.DataFrame, layers: _Layers, rng: np.random.Generator,
            now: pd.Timestamp) -> pd.DataFrame:
    """Alarms of the sensors: the ones promoted to the sensor cases, and others handled apart."""
    from twin.feeds.rules import ALARM_TRANSITIONS

    rules = load_rules()
    sensors = layers.sensors
    if sensors.empty:
        return coerce_table(ALARMS, pd.DataFrame(columns=[c.name for c in ALARMS.columns]))
    rows = []
    by_id = sensors.set_index("sensor_id", drop=False)
    status_of = cases.set_index("id")["status"]
    closed_of = cases.set_index("id")["closed_at"]
    # promoted: in progress while the case is open, closed when it is
    for p in plan.loc[plan["alarm_id"].notna()].itertuples(index=False):
        rule_id = p.alarm_id.split("/")[0]
        done = status_of[p.id] in ("closed", "evaluated", "cancelled")
        at = closed_of[p.id] if done and not pd.isna(closed_of[p.id]) else p.requested_at
        hist = [("open", "in_progress", p.requested_at, f"case {p.id}")]
        if done:
            hist.append(("in_progress", "closed", at, "case closed"))
        rows.append(_alarm_row(rules, by_id, rule_id, p.sensor_id, p.requested_at, hist,
                               case_id=p.id))
    # others: a few a week over the year, the last days still open or acknowledged
    kinds = {r: rules.at[r, "applies_to"] for r in ("smoke", "manhole_open", "water_leak",
                                                    "elevator_fault", "pm25_high", "noise_high")
             if r in rules.index}
    shares = np.array([a[0] for a in ALARM_PATHS])
    hours_ago = np.concatenate([rng.uniform(48, 365 * 24, 150), rng.uniform(0.1, 36, 8)])
    opened = (now - pd.to_timedelta(np.sort(hours_ago)[::-1], unit="h")).floor("s")
    for i, at in enumerate(opened):
        rule_id = list(kinds)[rng.integers(0, len(kinds))]
        pool = sensors.loc[sensors["kind"] == kinds[rule_id], "sensor_id"]
        if pool.empty:
            continue
        sensor = pool.iloc[rng.integers(0, len(pool))]
        age_h = (now - at) / pd.Timedelta(hours=1)
        path = ALARM_PATHS[rng.choice(len(ALARM_PATHS), p=shares)][1]
        if age_h < 48:  # recent: open, or acknowledged by the duty officer
            path = ("acknowledged",) if i % 2 else ()
        hist, status, t = [], "open", at
        for new in path:
            if new not in ALARM_TRANSITIONS[status]:
                raise ValidationError(f"demo alarm path {path} breaks ALARM_TRANSITIONS")
            t = min(t + pd.Timedelta(minutes=float(rng.uniform(3, 240))).floor("s"), now)
            hist.append((status, new, t, "误报" if new == "closed" and status != "resolved"
                         else ""))
            status = new
        rows.append(_alarm_row(rules, by_id, rule_id, sensor, at, hist))
    frame = pd.DataFrame(rows).drop_duplicates("id")
    return coerce_table(ALARMS, frame)


def _alarm_row(rules: pd.DataFrame, sensors: pd.DataFrame, rule_id: str, sensor_id: str,
               at: pd.Timestamp, hist: list, case_id: str | None = None) -> dict[str, Any]:
    rule = rules.loc[rule_id]
    s = sensors.loc[sensor_id]
    status = hist[-1][1] if hist else "open"
    threshold = None if pd.isna(rule["threshold"]) else float(rule["threshold"])
    value = 1.0 if rule["kind"] == "state" else round((threshold or 1.0) * 1.3, 1)
    resolved = next((h[2] for h in hist if h[1] in ("resolved", "closed")), None)
    return {
        "id": f"{rule_id}/{sensor_id}/{pd.Timestamp(at):%Y%m%dT%H%M%S}", "rule_id": rule_id,
        "source_id": sensor_id, "source_kind": "sensor", "status": status,
        "severity": rule["severity"], "opened_at": at,
        "updated_at": hist[-1][2] if hist else at, "resolved_at": resolved,
        "property": rule["property"], "value": value,
        "lon": round(float(s.geometry.x), 7), "lat": round(float(s.geometry.y), 7),
        **{c: s[c] for c in ("grid_code", "resp_grid_id", "community_code", "street_code")},
        "building_code": s.get("ref_building"), "lot_id": s.get("ref_lot"), "case_id": case_id,
        "data": json.dumps({
            "name_zh": rule["name_zh"], "name_en": rule["name_en"], "op": rule["op"],
            "threshold": threshold, "since": pd.Timestamp(at).isoformat(),
            "case_category": rule["case_category"] or None,
            "history": [{"at": _iso(t), "actor": "official", "from": a, "to": b, "note": note}
                        for a, b, t, note in hist]}, ensure_ascii=False),
    }


NOTICE_TEXTS = (
    ("notice", "community", "停水通知", "因管网维修,本周六 8:00-14:00 小区停水,请提前储水。", None),
    ("notice", "grid", "垃圾分类宣传周", "本网格开展垃圾分类宣传,欢迎居民到广场参加活动。", None),
    ("notice", "building", "电梯年检", "本楼电梯将于下周二上午年检,期间暂停使用。", None),
    ("poll", "community", "小区增设电动车充电桩选址",
     "请选择您认为最合适的充电桩位置。",
     [{"question": "充电桩建在哪里?", "choices": ["东门停车场", "北区广场", "地下车库"]}]),
    ("poll", "grid", "网格夜间巡逻时间", "请选择夜间巡逻最需要的时段。",
     [{"question": "最需要巡逻的时段", "choices": ["20-22点", "22-24点", "0-2点"]}]),
    ("survey", "building", "楼道环境满意度调查", "请对本楼道的环境打分。",
     [{"question": "楼道卫生", "choices": ["满意", "一般", "不满意"]},
      {"question": "照明情况", "choices": ["满意", "一般", "不满意"]}]),
    ("poll", "community", "社区健身器材更新", "社区计划更新健身器材,请选择优先项目。",
     [{"question": "优先更新", "choices": ["乒乓球台", "儿童滑梯", "健身路径"]}]),
)


def _participation(layers: _Layers, resident: User | None, rng: np.random.Generator,
                   now: pd.Timestamp) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Notices and polls for the community, grids and buildings; residents' answers to them."""
    buildings = layers.buildings.sort_values("building_code")
    community = str(buildings["community_code"].dropna().iloc[0])
    home = resident.building_code if resident and resident.building_code else \
        str(buildings["building_code"].iloc[0])
    home_row = buildings.loc[buildings["building_code"] == home]
    home_row = home_row if len(home_row) else buildings.iloc[:1]
    scope = {"community": community, "grid": str(home_row["resp_grid_id"].iloc[0]),
             "building": str(home_row["building_code"].iloc[0])}
    notices = []
    for i, (kind, scope_kind, title, body, questions) in enumerate(NOTICE_TEXTS):
        created = now - pd.Timedelta(days=int(3 + 9 * (len(NOTICE_TEXTS) - i)))
        notices.append({
            "id": f"{kind[0].upper()}-demo{i:04d}", "kind": kind, "scope_kind": scope_kind,
            "scope_id": scope[scope_kind], "title": title, "body": body,
            "questions": json.dumps(questions or [], ensure_ascii=False),
            "created_by": "gridworker" if scope_kind != "community" else "official",
            "created_at": created,
            "closes_at": None if kind == "notice" else now + pd.Timedelta(days=14 + 7 * i),
        })
    notices = pd.DataFrame(notices)
    res = layers.residents
    answers = []
    if not res.empty:
        placed = res[["resident_id", "building_code"]].merge(
            buildings[["building_code", "grid_code", "resp_grid_id", "community_code"]],
            on="building_code")
        for poll in notices.loc[notices["kind"] != "notice"].itertuples(index=False):
            col = {"community": "community_code", "grid": "resp_grid_id",
                   "building": "building_code"}[poll.scope_kind]
            who = placed.loc[placed[col] == poll.scope_id]
            who = who.loc[rng.random(len(who)) < 0.3]
            if resident is not None and poll.id == notices.loc[
                    notices["kind"] != "notice", "id"].iloc[0]:
                who = who.loc[who["resident_id"] != resident.resident_id]  # left for the demo
            questions = json.loads(poll.questions)
            picks = [rng.choice(len(q["choices"]), size=len(who),
                                p=_skew(len(q["choices"]))) for q in questions]
            when = poll.created_at + pd.to_timedelta(
                rng.uniform(0.5, (now - poll.created_at) / pd.Timedelta(hours=1), len(who)), "h"
            ).floor("s")
            for j, r in enumerate(who.itertuples(index=False)):
                user = User(r.resident_id, "resident", resident_id=r.resident_id)
                answers.append({
                    "poll_id": poll.id, "resident_key": resident_key(poll.id, user),
                    "resident_id": r.resident_id, "building_code": r.building_code,
                    "grid_code": r.grid_code, "resp_grid_id": r.resp_grid_id,
                    "community_code": r.community_code,
                    "answer": json.dumps([q["choices"][picks[k][j]]
                                          for k, q in enumerate(questions)], ensure_ascii=False),
                    "answered_at": when[j],
                })
    answers_frame = pd.DataFrame(answers, columns=[c.name for c in ANSWERS.columns])
    return coerce_table(NOTICES, notices), coerce_table(ANSWERS, answers_frame)


def _skew(k: int) -> np.ndarray:
    w = np.arange(k, 0, -1, dtype=float) + 1
    return w / w.sum()


def _events(layers: _Layers, seed: int, now: pd.Timestamp, n: int) -> pd.DataFrame:
    """Make a week of sensor readings and camera alerts before *now* (twin.scenario.make_events)."""
    if n <= 0 or layers.sensors.empty:
        return pd.DataFrame()
    kinds = ("obs", "camera") if not layers.cameras.empty else ("obs",)
    scenario = {"sensors": layers.sensors, "cameras": layers.cameras}
    return make_events(scenario, n, seed=seed + 7000, start=now - timedelta(days=7),
                       end=now.to_pydatetime(), kinds=kinds)
