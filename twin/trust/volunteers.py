"""Volunteer service (志愿服务): tasks, places taken, check-in and out on site, hours, points.

The community (admin, official, a grid worker for their own grids) posts tasks — a patrol, a
visit to elderly people living alone, help at an event — at a point or in an area, with a time
window and a number of people. Volunteers (users of role ``volunteer``, who may be linked to a
resident record) sign up while places are left: the store counts and writes in one serialised
transaction (:meth:`twin.store.base.Store.put_row_capped`), so of two volunteers racing for the
last place one gets it. On site they check in and out with the device's location, which must
lie within the task's area (or near its point) give or take its tolerance, measured in metres
in a local metric CRS (:func:`twin.crs.local_metric_crs`); the hours between are recorded and
earn points (:mod:`twin.points`).

A volunteer sees open tasks (with places left, never who took them) and their own sign-ups;
staff with ``volunteers.roster`` see who signed up for a task (grid workers: in their grids).
Every step is audited.
"""

from __future__ import annotations

import json
import math
import secrets
from collections.abc import Mapping
from typing import Any

import geopandas as gpd
import numpy as np
import pandas as pd
import shapely
from shapely.geometry import Point, mapping, shape

from twin import cases, notify, points
from twin.crs import local_metric_crs
from twin.errors import DuplicateIdError, NotFoundError, PermissionDeniedError, ValidationError
from twin.schema import TASK_KINDS, USERS, VOLUNTEER_SIGNUPS, VOLUNTEER_TASKS
from twin.timeutil import to_utc
from twin.trust.permissions import User, require
from twin.trust.privacy import unit_grids_of
from twin.trust.users import resolve

#: Default tolerance of a check-in around the task's area or point, metres (GPS on a phone is
#: good to 5–30 m outdoors; a point task has no area, so its tolerance is its radius).
DEFAULT_TOLERANCE_M = 50.0
#: How long before a task starts a volunteer may check in, and after it ends check out.
EARLY = pd.Timedelta(minutes=30)
LATE = pd.Timedelta(hours=2)
#: What a volunteer may see of a task (no creator, no roster).
TASK_COLUMNS = ["id", "kind", "title", "description", "lon", "lat", "grid_code",
                "resp_grid_id", "area", "tolerance_m", "starts_at", "ends_at", "capacity",
                "status", "proposal_id"]


def _now(now: Any) -> pd.Timestamp:
    return pd.Timestamp.now(tz="UTC").floor("s") if now is None else to_utc(now)


def _audit(store, user: User, action: str, target: str, detail: dict, origin: str) -> None:
    store.append_audit(user.username, action, target, detail, origin)


# -- places: an area or a point, in metres ---------------------------------------------------------


def task_area(task: Mapping[str, Any]):
    """Return the task's area (a shapely polygon) or its point when it has none."""
    area = task.get("area")
    if isinstance(area, str) and area.strip():
        area = json.loads(area)
    if isinstance(area, Mapping) and area:
        return shape(area)
    return Point(float(task["lon"]), float(task["lat"]))


def distance_outside_m(task: Mapping[str, Any], lon: float, lat: float) -> float:
    """Return the metres (lon, lat) lies outside the task's area, or from its point (0 inside).

    Measured in the local metric CRS of the task (:func:`twin.crs.local_metric_crs`), never in
    degrees.
    """
    return float(distances_m([task], lon, lat)[0])


def distances_m(tasks: list[Mapping[str, Any]], lon: float, lat: float) -> np.ndarray:
    """Metres from (lon, lat) to each task's area or point (0 inside), in one projection."""
    if not tasks:
        return np.array([], dtype=float)
    here = Point(float(lon), float(lat))
    places = gpd.GeoSeries([task_area(t) for t in tasks] + [here], crs=4326)
    metric = places.to_crs(local_metric_crs(places))
    return np.round(shapely.distance(metric.values[:-1], metric.values[-1]), 1)


def _check_position(lon: Any, lat: Any) -> tuple[float, float]:
    try:
        lon, lat = float(lon), float(lat)
    except (TypeError, ValueError):
        raise ValidationError(f"a position needs a longitude and latitude; got ({lon}, {lat}). "
                              "Allow the location or tap the map.") from None
    if not (math.isfinite(lon) and math.isfinite(lat)
            and -180 <= lon <= 180 and -90 <= lat <= 90):
        raise ValidationError(f"({lon}, {lat}) is not a WGS84 longitude/latitude")
    return lon, lat


def _check_area(area: Any, lon: float | None, lat: float | None):
    """Return (area GeoJSON or None, lon, lat): an area's point is a point inside it."""
    if area is None or (isinstance(area, str) and not area.strip()):
        if lon is None or lat is None:
            raise ValidationError("a task needs a place: a point (lon, lat) or an area")
        return None, *_check_position(lon, lat)
    geom = shape(json.loads(area)) if isinstance(area, str) else \
        shape(area) if isinstance(area, Mapping) else area
    if not isinstance(geom, shapely.Polygon | shapely.MultiPolygon) or geom.is_empty \
            or not geom.is_valid:
        raise ValidationError("a task's area must be a valid polygon (GeoJSON, EPSG:4326)")
    minx, miny, maxx, maxy = geom.bounds
    if not (-180 <= minx <= maxx <= 180 and -90 <= miny <= maxy <= 90):
        raise ValidationError("a task's area must be in WGS84 longitude/latitude")
    if lon is None or lat is None:
        inside = geom.representative_point()
        lon, lat = inside.x, inside.y
    return mapping(geom), *_check_position(lon, lat)


# -- tasks ---------------------------------------------------------------------------------------


def post_task(
    store, user: User, *, kind: str, title: str, starts_at: Any, ends_at: Any, capacity: int,
    lon: float | None = None, lat: float | None = None, area: Any = None,
    description: str = "", tolerance_m: float = DEFAULT_TOLERANCE_M,
    grid_cells: pd.DataFrame | None = None, proposal_id: str | None = None,
    origin: str = "", now: Any = None, task_id: str | None = None,
) -> dict[str, Any]:
    """Post a volunteer task at a point or in an area (a polygon), for a time window.

    Raises
    ------
    PermissionDeniedError
        If the user may not post tasks, or a grid worker posts outside their grids.
    ValidationError
        For an unknown kind, no title, a window that ends before it starts, a capacity below
        one, a place that is not a WGS84 point or valid polygon, or a negative tolerance.
    """
    user = require(resolve(store, user), "volunteers.post")
    if kind not in TASK_KINDS:
        raise ValidationError(f"unknown task kind {kind!r}; kinds are {', '.join(TASK_KINDS)}")
    if not str(title or "").strip():
        raise ValidationError("a task needs a title saying what volunteers will do")
    try:
        starts, ends = pd.Timestamp(starts_at), pd.Timestamp(ends_at)
        starts, ends = _now(starts), _now(ends)
    except (TypeError, ValueError):
        raise ValidationError(f"a task needs a start and an end time; got {starts_at!r}, "
                              f"{ends_at!r}") from None
    if not ends > starts:
        raise ValidationError(f"the task must end after it starts ({starts} – {ends})")
    if not (isinstance(capacity, int | np.integer) and int(capacity) >= 1):
        raise ValidationError(f"a task needs at least one volunteer; got capacity {capacity!r}")
    if not (isinstance(tolerance_m, int | float) and math.isfinite(tolerance_m)
            and tolerance_m >= 0):
        raise ValidationError(f"the check-in tolerance must be metres ≥ 0; got {tolerance_m!r}")
    geo, lon, lat = _check_area(area, lon, lat)
    place = cases.locate(lon, lat, grid_cells)
    if user.role == "grid_worker" and grid_cells is not None \
            and place["grid_code"] not in unit_grids_of(user, grid_cells):
        raise PermissionDeniedError(
            f"({lon:.6f}, {lat:.6f}) is not in your grids; post tasks in your own grids")
    at = _now(now)
    row = {
        "id": task_id or f"VT{at:%Y%m%d}-{secrets.token_hex(3)}", "kind": kind,
        "title": str(title).strip(), "description": str(description or ""),
        "lon": lon, "lat": lat, **{k: place[k] for k in ("grid_code", "resp_grid_id",
                                                         "community_code", "street_code")},
        "area": json.dumps(geo) if geo else None, "tolerance_m": float(tolerance_m),
        "starts_at": starts, "ends_at": ends, "capacity": int(capacity), "status": "open",
        "created_by": user.username, "created_at": at, "proposal_id": proposal_id,
    }
    if store.put_rows(VOLUNTEER_TASKS, pd.DataFrame([row])) == 0:
        raise DuplicateIdError(f"a task {row['id']} exists already")
    _audit(store, user, "volunteer_task.post", f"task:{row['id']}",
           {"kind": kind, "capacity": int(capacity), "grid": place["grid_code"]}, origin)
    # the volunteers' channels of the task's grid hear of it (docs/notify.md)
    notify.enqueue(store, "task.posted", f"task:{row['id']}",
                   {"task_id": row["id"], "title": row["title"], "kind": kind,
                    "capacity": int(capacity), "starts_local": notify.local_time(starts),
                    "grid_code": place["grid_code"]},
                   grids=(place["grid_code"], place["resp_grid_id"]), at=at)
    return row


def get_task(store, task_id: str) -> dict[str, Any]:
    """Return one task as a dict. Raises NotFoundError if there is none."""
    rows = store.read_rows(VOLUNTEER_TASKS, id=str(task_id))
    if rows.empty:
        raise NotFoundError(f"no volunteer task {task_id!r}; choose one from the list")
    return rows.iloc[0].to_dict()


def _taken(store, task_ids: list[str] | None = None) -> pd.Series:
    signups = store.read_rows(VOLUNTEER_SIGNUPS, status="signed_up") if task_ids is None else \
        store.read_rows(VOLUNTEER_SIGNUPS, task_id=task_ids, status="signed_up")
    return signups.groupby("task_id").size() if len(signups) else pd.Series(dtype="int64")


def open_tasks(store, user: User | None, *, near: tuple[float, float] | None = None,
               now: Any = None) -> pd.DataFrame:
    """Return the tasks open for sign-up now, with places taken and left, nearest first.

    Every logged-in user may see them (volunteers to sign up, staff to follow); what is shown
    is the task, never who signed up. With *near* (lon, lat) each task carries its distance in
    metres (``distance_m``) and the nearest come first; else the soonest.
    """
    user = resolve(store, user)
    if user.is_anonymous:
        raise PermissionDeniedError("log in to see volunteer tasks")
    at = _now(now)
    tasks = store.read_rows(VOLUNTEER_TASKS, status="open")
    tasks = tasks.loc[tasks["ends_at"] > at, TASK_COLUMNS].reset_index(drop=True)
    taken = _taken(store, tasks["id"].tolist()) if len(tasks) else pd.Series(dtype="int64")
    tasks["taken"] = tasks["id"].map(taken).fillna(0).astype(int)
    tasks["left"] = (tasks["capacity"].astype(int) - tasks["taken"]).clip(lower=0)
    if near is not None and len(tasks):
        lon, lat = _check_position(*near)
        tasks["distance_m"] = distances_m(tasks.to_dict("records"), lon, lat)
        return tasks.sort_values(["distance_m", "starts_at"], ignore_index=True)
    return tasks.sort_values("starts_at", ignore_index=True)


def _signup(store, task_id: str, username: str) -> dict[str, Any] | None:
    rows = store.read_rows(VOLUNTEER_SIGNUPS, task_id=str(task_id), volunteer=username)
    return rows.iloc[0].to_dict() if len(rows) else None


def my_tasks(store, user: User) -> pd.DataFrame:
    """Return the volunteer's own sign-ups with their tasks (never anyone else's)."""
    user = require(resolve(store, user), "volunteers.sign_up")
    mine = store.read_rows(VOLUNTEER_SIGNUPS, volunteer=user.username)
    if mine.empty:
        return pd.DataFrame(columns=[*TASK_COLUMNS, "signup_status", "checkin_at",
                                     "checkout_at", "hours"])
    tasks = store.read_rows(VOLUNTEER_TASKS, id=mine["task_id"].tolist())[TASK_COLUMNS]
    out = tasks.merge(mine.rename(columns={"task_id": "id", "status": "signup_status"})[
        ["id", "signup_status", "checkin_at", "checkout_at", "hours"]], on="id")
    return out.sort_values("starts_at", ascending=False, ignore_index=True)


def sign_up(store, user: User, task_id: str, *, origin: str = "", now: Any = None
            ) -> dict[str, Any]:
    """Take a place on an open task; refused when it is full (the store decides, atomically).

    Raises
    ------
    PermissionDeniedError
        If the user is not a volunteer.
    DuplicateIdError
        If they have a place already.
    ValidationError
        If the task is not open, has ended, or has no place left.
    """
    user = require(resolve(store, user), "volunteers.sign_up")
    task = get_task(store, task_id)
    at = _now(now)
    if task["status"] != "open" or at >= task["ends_at"]:
        raise ValidationError(f"task {task_id} is no longer open for sign-up")
    held = _signup(store, task_id, user.username)
    if held is not None and held["status"] == "signed_up":
        raise DuplicateIdError(f"you have a place on task {task_id} already")
    row = {"task_id": task["id"], "volunteer": user.username, "status": "signed_up",
           "signed_up_at": at}
    if not store.put_row_capped(VOLUNTEER_SIGNUPS, row,
                                within={"task_id": task["id"], "status": "signed_up"},
                                cap=int(task["capacity"])):
        _audit(store, user, "volunteer_task.full", f"task:{task_id}", {}, origin)
        raise ValidationError(f"task {task_id} is full: all {int(task['capacity'])} places "
                              "are taken. Choose another task.")
    _audit(store, user, "volunteer_task.sign_up", f"task:{task_id}", {}, origin)
    return row


def cancel_sign_up(store, user: User, task_id: str, *, origin: str = "") -> None:
    """Give a place back (before checking in): it is open to others again."""
    user = require(resolve(store, user), "volunteers.sign_up")
    held = _signup(store, task_id, user.username)
    if held is None or held["status"] != "signed_up":
        raise ValidationError(f"you have no place on task {task_id}")
    if not pd.isna(held.get("checkin_at")):
        raise ValidationError("you checked in already; check out instead")
    store.put_rows(VOLUNTEER_SIGNUPS, pd.DataFrame([{**held, "status": "cancelled"}]),
                   on_conflict="update")
    _audit(store, user, "volunteer_task.cancel", f"task:{task_id}", {}, origin)


def _on_site(task: Mapping[str, Any], lon: Any, lat: Any) -> tuple[float, float, float]:
    lon, lat = _check_position(lon, lat)
    outside = distance_outside_m(task, lon, lat)
    tolerance = float(task.get("tolerance_m") or 0)
    if outside > tolerance:
        where = "area" if task.get("area") else "place"
        raise ValidationError(
            f"you are {outside:.0f} m outside the task's {where} (allowed {tolerance:.0f} m). "
            "Go to the task's place on the map and try again, or tap where you are.")
    return lon, lat, outside


def check_in(store, user: User, task_id: str, lon: Any, lat: Any, *, origin: str = "",
             now: Any = None) -> dict[str, Any]:
    """Check in on site: signed up, within the time window and the task's area (± tolerance).

    Raises
    ------
    ValidationError
        If the volunteer has no place, checked in already, is too early or too late, or is
        further from the task's area than its tolerance (the message says how far, in metres).
    """
    user = require(resolve(store, user), "volunteers.sign_up")
    task = get_task(store, task_id)
    held = _signup(store, task_id, user.username)
    if held is None or held["status"] != "signed_up":
        raise ValidationError(f"sign up for task {task_id} before checking in")
    if not pd.isna(held.get("checkin_at")):
        raise ValidationError(f"you checked in to task {task_id} already")
    at = _now(now)
    if at < task["starts_at"] - EARLY or at > task["ends_at"]:
        raise ValidationError(
            f"task {task_id} runs {task['starts_at']:%Y-%m-%d %H:%M} – "
            f"{task['ends_at']:%H:%M} UTC; check in from {int(EARLY.total_seconds() // 60)} "
            "minutes before it starts until it ends")
    try:
        lon, lat, outside = _on_site(task, lon, lat)
    except ValidationError as exc:
        _audit(store, user, "volunteer_task.checkin_refused", f"task:{task_id}",
               {"reason": "outside"}, origin)
        raise exc
    row = {**held, "checkin_at": at, "checkin_lon": lon, "checkin_lat": lat,
           "checkin_m": outside}
    store.put_rows(VOLUNTEER_SIGNUPS, pd.DataFrame([row]), on_conflict="update")
    _audit(store, user, "volunteer_task.checkin", f"task:{task_id}", {"outside_m": outside},
           origin)
    return row


def service_hours(task: Mapping[str, Any], checkin_at: Any, checkout_at: Any) -> float:
    """Hours of service between check-in and check-out, counted within the task's window."""
    start = max(pd.Timestamp(checkin_at), pd.Timestamp(task["starts_at"]))
    end = min(pd.Timestamp(checkout_at), pd.Timestamp(task["ends_at"]))
    return round(max(0.0, (end - start).total_seconds() / 3600), 2)


def check_out(store, user: User, task_id: str, lon: Any, lat: Any, *, origin: str = "",
              now: Any = None) -> dict[str, Any]:
    """Check out on site: hours recorded (within the task's window) and points earned.

    Raises
    ------
    ValidationError
        If the volunteer has not checked in, checked out already, is later than
        :data:`LATE` after the task's end, or is outside the area (± tolerance).
    """
    user = require(resolve(store, user), "volunteers.sign_up")
    task = get_task(store, task_id)
    held = _signup(store, task_id, user.username)
    if held is None or held["status"] != "signed_up" or pd.isna(held.get("checkin_at")):
        raise ValidationError(f"check in to task {task_id} before checking out")
    if not pd.isna(held.get("checkout_at")):
        raise ValidationError(f"you checked out of task {task_id} already")
    at = _now(now)
    if at > task["ends_at"] + LATE:
        raise ValidationError(f"task {task_id} ended more than {LATE} ago; ask its organiser "
                              "to record your hours")
    try:
        lon, lat, outside = _on_site(task, lon, lat)
    except ValidationError as exc:
        _audit(store, user, "volunteer_task.checkout_refused", f"task:{task_id}",
               {"reason": "outside"}, origin)
        raise exc
    hours = service_hours(task, held["checkin_at"], at)
    row = {**held, "checkout_at": at, "checkout_lon": lon, "checkout_lat": lat,
           "checkout_m": outside, "hours": hours}
    store.put_rows(VOLUNTEER_SIGNUPS, pd.DataFrame([row]), on_conflict="update")
    points.award(store, {"account": user.username, "delta": points.service_points(hours),
                         "reason": "service_hours", "ref": f"task:{task_id}:{user.username}"},
                 actor="volunteers", at=at)
    _audit(store, user, "volunteer_task.checkout", f"task:{task_id}", {"hours": hours}, origin)
    return row


def roster(store, user: User, task_id: str, *, grid_cells: pd.DataFrame | None = None,
           origin: str = "") -> pd.DataFrame:
    """Who signed up for a task (name, status, check-in and out, hours), for its organisers.

    Grid workers see the rosters of tasks in their grids only. Audited as
    ``volunteers.roster``.
    """
    user = require(resolve(store, user), "volunteers.roster")
    task = get_task(store, task_id)
    if user.role == "grid_worker" and grid_cells is not None and \
            task["grid_code"] not in unit_grids_of(user, grid_cells):
        _audit(store, user, "volunteers.denied", f"task:{task_id}", {}, origin)
        raise PermissionDeniedError(f"task {task_id} is not in your grids")
    rows = store.read_rows(VOLUNTEER_SIGNUPS, task_id=str(task_id))
    names = store.read_rows(USERS, username=rows["volunteer"].tolist()) if len(rows) else \
        pd.DataFrame(columns=["username", "display_name"])
    shown = dict(zip(names["username"], names["display_name"].fillna(""), strict=True))
    rows = rows.assign(name=[shown.get(v) or v for v in rows["volunteer"]])
    _audit(store, user, "volunteers.roster", f"task:{task_id}", {"rows": len(rows)}, origin)
    return rows[["volunteer", "name", "status", "signed_up_at", "checkin_at", "checkout_at",
                 "hours"]].reset_index(drop=True)


def posted_tasks(store, user: User, *, grid_cells: pd.DataFrame | None = None) -> pd.DataFrame:
    """Return the tasks an organiser may follow (grid workers: their grids), places taken."""
    user = require(resolve(store, user), "volunteers.roster")
    tasks = store.read_rows(VOLUNTEER_TASKS)
    if user.role == "grid_worker" and grid_cells is not None:
        tasks = tasks.loc[tasks["grid_code"].isin(unit_grids_of(user, grid_cells))]
    taken = _taken(store)
    tasks = tasks.assign(taken=tasks["id"].map(taken).fillna(0).astype(int))
    return tasks.sort_values("starts_at", ascending=False, ignore_index=True)


# -- indicators: hours per grid (no personal data) ------------------------------------------


def hours_per_grid(store, user: User | None = None, *, start: Any = None,
                   end: Any = None) -> pd.DataFrame:
    """Volunteer hours per unit grid: ``grid_code``, ``tasks``, ``volunteers``, ``hours``.

    Counts only, no names: for the cockpit and (anonymised) the public page.
    """
    if user is not None and not user.is_anonymous:
        user = resolve(store, user)
    require(user, "service.indicators")
    signups = store.read_rows(VOLUNTEER_SIGNUPS)
    signups = signups.loc[signups["hours"].notna()]
    if start is not None:
        signups = signups.loc[signups["checkout_at"] >= _now(start)]
    if end is not None:
        signups = signups.loc[signups["checkout_at"] < _now(end)]
    columns = ["grid_code", "tasks", "volunteers", "hours"]
    if signups.empty:
        return pd.DataFrame(columns=columns)
    tasks = store.read_rows(VOLUNTEER_TASKS, id=sorted(set(signups["task_id"])))
    joined = signups.merge(tasks[["id", "grid_code"]], left_on="task_id", right_on="id")
    joined["grid_code"] = joined["grid_code"].fillna("—")
    out = joined.groupby("grid_code").agg(tasks=("task_id", "nunique"),
                                          volunteers=("volunteer", "nunique"),
                                          hours=("hours", "sum"))
    out["hours"] = out["hours"].astype(float).round(1)
    return out.reset_index()[columns].sort_values("hours", ascending=False, ignore_index=True)


# -- points as a user may see them ---------------------------------------------------------------


def my_points(store, user: User) -> tuple[int, pd.DataFrame]:
    """Return a resident's or volunteer's own balance and entries (when, points, why)."""
    user = require(resolve(store, user), "points.own")
    rows = points.ledger(store, user.username)
    return (int(rows["delta"].sum()) if len(rows) else 0,
            rows[["at", "delta", "reason", "ref"]].sort_values("at", ascending=False,
                                                               ignore_index=True))


def points_balances(store, user: User, *, origin: str = "") -> pd.DataFrame:
    """Every account's balance with its display name, for officials (audited)."""
    user = require(resolve(store, user), "points.all")
    out = points.balances(store)
    names = store.read_rows(USERS, username=out["account"].tolist()) if len(out) else \
        pd.DataFrame(columns=["username", "display_name"])
    shown = dict(zip(names["username"], names["display_name"].fillna(""), strict=True))
    out["name"] = [shown.get(a) or a for a in out["account"]]
    _audit(store, user, "points.read", "points", {"rows": len(out)}, origin)
    return out


def verify_points(store, user: User, *, origin: str = "") -> points.LedgerCheck:
    """Check the whole points ledger for silent edits (admins), and audit the check."""
    user = require(resolve(store, user), "points.verify")
    check = points.verify_ledger(store)
    _audit(store, user, "points.verify", "points",
           {"ok": check.ok, "rows": check.rows, "first_bad_seq": check.first_bad_seq}, origin)
    return check
