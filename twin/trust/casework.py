"""Cases as a user may see and move them: scoped lists, steps run and audited as the user."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from twin import cases, cockpit, points, settings
from twin.errors import NotFoundError, PermissionDeniedError, TwinError, ValidationError
from twin.schema import ORG_ROLES, USERS
from twin.trust.outgoing import assignment_rows
from twin.trust.permissions import User, can, require
from twin.trust.privacy import unit_grids_of
from twin.trust.users import resolve

#: Photos a case carries, by the step that added them, in the order a case page shows them.
PHOTO_KINDS = ("photos", "photos_before", "photos_after", "photos_check")


class OutsideGridsError(ValidationError):
    """A report's place lies outside every unit grid; ``nearest`` says which grid is nearest.

    ``nearest`` is what :func:`twin.cases.nearest_grid` returned (grid code, name, distance in
    metres, a point just inside that grid), so a page can offer the reporter that grid.
    """

    def __init__(self, message: str, nearest: dict[str, Any] | None) -> None:
        super().__init__(message)
        self.nearest = nearest


def allowed_actions(case: Mapping[str, Any], user: User | None) -> list[str]:
    """Return the steps *user* may take on *case* now (none for the public or a disabled user)."""
    if user is None or user.is_anonymous or user.disabled:
        return []
    if user.role in ORG_ROLES and not _held_by_org(case, user):
        return []  # an organisation's staff act only on what their organisation holds
    return cases.allowed_actions(dict(case), user.role)


def _held_by_org(case: Mapping[str, Any], user: User) -> bool:
    """Whether *user*'s organisation holds *case* now (it is dispatched to it)."""
    return bool(user.org_id) and case.get("department") == f"org:{user.org_id}"


def _of_org(case: Mapping[str, Any], user: User) -> bool:
    """Whether *case* was given to *user*'s organisation (held now, or escalated back)."""
    org = case.get("org_id")
    return bool(user.org_id) and (_held_by_org(case, user) or (
        isinstance(org, str) and org == user.org_id))


def transition_case(
    store,
    user: User,
    case_id: str,
    action: str,
    *,
    origin: str = "",
    grid_cells: pd.DataFrame | None = None,
    **kwargs: Any,
) -> dict[str, Any]:
    """Move a case one step as *user* (role and grids from the user) and audit the step.

    See :func:`twin.cases.transition` for the actions and their fields. A step that assigns
    the case writes its notifications in the step's transaction
    (:func:`twin.trust.outgoing.assignment_rows`).

    Raises
    ------
    PermissionDeniedError
        If the role does not own the step or the case is outside a grid worker's grids.
    """
    user = resolve(store, user)
    if user.is_anonymous or user.disabled:
        raise PermissionDeniedError("log in to work on cases")
    grids = unit_grids_of(user, grid_cells) if user.role == "grid_worker" else None
    try:
        case = cases.transition(
            store, case_id, action, actor=user.username, role=user.role, actor_grids=grids,
            grid_cells=grid_cells, actor_org=user.org_id,
            outbox=lambda before, after: assignment_rows(store, before, after, action), **kwargs)
    except PermissionDeniedError as exc:
        store.append_audit(user.username, "case.denied", f"case:{case_id}",
                           {"action": action, "role": user.role, "reason": str(exc)}, origin)
        raise
    store.append_audit(user.username, f"case.{action}", f"case:{case_id}",
                       {"role": user.role, "status": case["status"],
                        "version": int(case["version"])}, origin)
    if action == "close":  # the loop closed as valid: the resident who reported it earns
        points.award_valid_report(store, case)
    return case


def report_case(store, user: User, *, origin: str = "", **kwargs: Any) -> dict[str, Any]:
    """Report a new case as *user* (see :func:`twin.cases.report`) and audit it."""
    user = require(resolve(store, user), "cases.report")
    _refuse_outside_grids(kwargs.get("lon"), kwargs.get("lat"), kwargs.get("grid_cells"))
    reporter = dict(kwargs.pop("reporter", None) or {})
    reporter.setdefault("username", user.username)
    if user.resident_id:
        reporter.setdefault("resident_id", user.resident_id)
    case = cases.report(store, actor=user.username, role=user.role, reporter=reporter, **kwargs)
    store.append_audit(user.username, "case.collect", f"case:{case['id']}",
                       {"role": user.role, "source": case["source"]}, origin)
    return case


def report_cases(store, items: Sequence[tuple[User, Mapping[str, Any]]], *,
                 grid_cells: pd.DataFrame | None = None) -> list[dict[str, Any] | TwinError]:
    """Report many cases at once, each as its user (see :func:`twin.intake.report_many`).

    The batch form of :func:`report_case` for intake that arrives together (Open311 posts):
    the same checks per report — the user resolved against the store and allowed to report,
    a place inside a grid — then one located, routed and timed batch stored in one transaction
    with its ``case.collect`` audit rows.

    Parameters
    ----------
    store
        The store.
    items
        ``(user, report)`` pairs; *report* holds the arguments of :func:`report_case` (and
        ``origin``).
    grid_cells
        The unit grids (the layer cache's frame).

    Returns
    -------
    list
        Per item, the stored case or the error that refused it (nothing of it stored).
    """
    from twin import intake

    users: dict[str, User | TwinError] = {}
    results: list[dict[str, Any] | TwinError | None] = [None] * len(items)
    batch: list[tuple[int, dict[str, Any]]] = []
    for i, (user, report) in enumerate(items):
        key = user.username if user is not None else ""
        if key not in users:
            try:
                users[key] = require(resolve(store, user), "cases.report")
            except TwinError as exc:
                users[key] = exc
        who = users[key]
        if isinstance(who, TwinError):
            results[i] = who
            continue
        reporter = dict(report.get("reporter") or {})
        reporter.setdefault("username", who.username)
        if who.resident_id:
            reporter.setdefault("resident_id", who.resident_id)
        batch.append((i, {**report, "reporter": reporter, "actor": who.username,
                          "role": who.role}))
    if grid_cells is not None and len(grid_cells) and batch:
        # one lookup for the batch; the nearest grid is sought only for the few outside
        where = intake.locate_many([_degrees(r.get("lon")) for _, r in batch],
                                   [_degrees(r.get("lat")) for _, r in batch], grid_cells)
        inside, places = [], []
        for (i, report), place in zip(batch, where.to_dict("records"), strict=True):
            try:
                if place["grid_code"] is None:
                    _refuse_outside_grids(report.get("lon"), report.get("lat"), grid_cells)
                inside.append((i, report))
                places.append(place)
            except TwinError as exc:
                results[i] = exc
        batch = inside
    else:
        places = None
    done = intake.report_many(store, [r for _, r in batch], grid_cells=grid_cells,
                              places=places)
    for (i, _), result in zip(batch, done, strict=True):
        results[i] = result
    return results  # type: ignore[return-value]


def _degrees(value: Any) -> float:
    """Return a coordinate as a float (NaN for none: twin.cases says what is wrong)."""
    try:
        return float(value)
    except (TypeError, ValueError):
        return float("nan")


def _refuse_outside_grids(lon: Any, lat: Any, grid_cells: pd.DataFrame | None) -> None:
    """Refuse a report outside every unit grid (a case no one would get), naming the nearest."""
    if grid_cells is None or len(grid_cells) == 0 or lon is None or lat is None:
        return
    try:
        lon, lat = float(lon), float(lat)
    except (TypeError, ValueError):
        return  # twin.cases.report says what is wrong with the position
    if not (-180 <= lon <= 180 and -90 <= lat <= 90):
        return
    if cases.locate(lon, lat, grid_cells)["grid_code"] is not None:
        return
    near = cases.nearest_grid(lon, lat, grid_cells)
    where = (f"; the nearest grid is {near['name']} ({near['grid_code']}), "
             f"{near['distance_m']} m away" if near else "")
    raise OutsideGridsError(
        f"({lon:.6f}, {lat:.6f}) lies outside every grid of the community{where}. "
        "Pick a place inside a grid, or report it to the command centre.", near)


def case_for_role(case: Mapping[str, Any], user: User | None) -> dict[str, Any]:
    """Return a case as *user* may see it: the reporter only for staff who handle cases."""
    out = dict(case)
    data = out.get("data")
    data = json.loads(data) if isinstance(data, str) else dict(data or {})
    # only those who handle cases see who reported them; an organisation's staff only while
    # their organisation holds the case
    if not can(user, "page.cases") or (user is not None and user.role in ORG_ROLES
                                       and not _held_by_org(out, user)):
        for key in ("reporter", "co_reporters"):
            if key in data:
                data[key] = "***"
    out["data"] = data
    return out




def visible_cases(store, user: User | None, grid_cells: pd.DataFrame | None = None) -> pd.DataFrame:
    """Return the cases *user* may see, with their state now.

    Case handlers see every case, except grid workers: only the cases of their unit grids and
    those assigned to them; and an organisation's staff: only the cases given to their
    organisation (held now, or handed back after it missed its limit).

    Raises
    ------
    PermissionDeniedError
        If *user* does not handle cases (``page.cases``).
    """
    user = require(resolve(store, user), "page.cases")
    stored = store.read_cases()
    if user.role in ORG_ROLES:
        stored = stored.loc[stored["org_id"].astype(object).eq(user.org_id or "\0")]
    table = cockpit.cases_at(stored)
    if user.role == "grid_worker":
        mine = unit_grids_of(user, grid_cells)
        keep = table["grid_code"].isin(mine) | (table["assignee"] == user.username)
        keep |= table["id"].isin(_reported_by(stored, user.username, exclude=table["id"][keep]))
        table = table.loc[keep]
    return table


def _reported_by(stored: pd.DataFrame, username: str, exclude: pd.Series) -> set[str]:
    """Ids of the cases *username* reported (a reporter always sees their own reports)."""
    if len(stored) == 0 or "data" not in stored:
        return set()
    rest = stored.loc[~stored["id"].isin(exclude)]
    # the JSON holds the reporter's name as text: only the few rows that mention it are parsed
    text = rest["data"].astype(str)
    maybe = rest.loc[text.str.contains(json.dumps(username), regex=False)]
    return {case_id for case_id, data in zip(maybe["id"], maybe["data"], strict=True)
            if (_as_dict(data).get("reporter") or {}).get("username") == username}


def _as_dict(data: Any) -> dict[str, Any]:
    if isinstance(data, str):
        return json.loads(data)
    return dict(data) if isinstance(data, Mapping) else {}


def _may_see(case: Mapping[str, Any], user: User, grid_cells: pd.DataFrame | None) -> bool:
    if user.role in ORG_ROLES:
        return _of_org(case, user)
    if user.role != "grid_worker":
        return True
    return (case.get("grid_code") in unit_grids_of(user, grid_cells)
            or case.get("assignee") == user.username
            or (_as_dict(case.get("data")).get("reporter") or {}).get("username")
            == user.username)


def read_case(store, user: User | None, case_id: str,
              grid_cells: pd.DataFrame | None = None) -> dict[str, Any]:
    """Return one case as *user* may see it (see :func:`visible_cases` and :func:`case_for_role`).

    Raises
    ------
    PermissionDeniedError
        If *user* does not handle cases, or the case is outside a grid worker's grids.
    NotFoundError
        If there is no such case.
    """
    user = require(resolve(store, user), "page.cases")
    case = store.get_case(case_id)
    if not _may_see(case, user, grid_cells):
        if user.role in ORG_ROLES:
            store.append_audit(user.username, "case.denied", f"case:{case_id}",
                               {"action": "read", "role": user.role, "org_id": user.org_id}, "")
            raise PermissionDeniedError(
                f"case {case_id!r} was not given to organisation {user.org_id!r}; "
                "ask the command centre")
        raise PermissionDeniedError(
            f"case {case_id!r} is not in the grids of {user.username!r}; ask the dispatcher"
        )
    shown = case_for_role(case, user)
    if user.role in ORG_ROLES:  # every view by an organisation's staff is audited
        store.append_audit(user.username, "case.read", f"case:{case_id}",
                           {"role": user.role, "org_id": user.org_id,
                            "reporter_shown": shown["data"].get("reporter") != "***"}, "")
    return shown


def case_history(store, user: User | None, case_id: str,
                 grid_cells: pd.DataFrame | None = None) -> pd.DataFrame:
    """Return the steps of one case (who, when, what), if *user* may see the case."""
    read_case(store, user, case_id, grid_cells)
    return store.case_history(case_id)


# -- what a step's form offers -------------------------------------------------------------------


def _may_take(store, user: User | None, case_id: str, action: str,
              grid_cells: pd.DataFrame | None) -> tuple[User, dict[str, Any]]:
    """Return the stored user and the case, if *user* may take *action* on it now."""
    user = require(resolve(store, user), "page.cases")
    case = read_case(store, user, case_id, grid_cells)
    if action not in allowed_actions(case, user):
        raise PermissionDeniedError(
            f"{user.username!r} may not {action} case {case_id} now (it is {case['status']})")
    return user, case


def _territory_name(community_code: str | None, grid_cells: pd.DataFrame | None) -> str | None:
    """Return the responsible body of a community, as its grids name it (属地: 社区居委会)."""
    if grid_cells is None or not community_code or "responsible_body" not in grid_cells:
        return None
    full = grid_cells["grid_code"].astype(str).str[:12]
    bodies = grid_cells.loc[full == str(community_code), "responsible_body"].dropna()
    bodies = bodies[bodies.astype(str) != ""]
    return str(bodies.iloc[0]) if len(bodies) else None


def departments(case: Mapping[str, Any] | None = None,
                grid_cells: pd.DataFrame | None = None,
                organisations: Mapping[str, str] | None = None) -> pd.DataFrame:
    """Return the departments a case can go to, the routed ones first.

    Parameters
    ----------
    case
        The case (its route and community); None: the seed departments only.
    grid_cells
        The unit grids, to name the community's territory (its responsible body).
    organisations
        Organisation id → name (:func:`twin.trust.organisations.organisation_names`): each
        organisation (``org:<id>``) may be dispatched a case.

    Returns
    -------
    pandas.DataFrame
        ``code``, ``name_zh``, ``name_en``, ``routed`` (on the case's route, in route order).
    """
    table = cases.load_departments()[["code", "name_zh", "name_en"]].reset_index(drop=True)
    if organisations:
        table = pd.concat([table, pd.DataFrame({
            "code": [f"org:{o}" for o in organisations],
            "name_zh": list(organisations.values()), "name_en": list(organisations.values())})],
            ignore_index=True)
    route: list[str] = []
    if case is not None:
        data = _as_dict(case.get("data"))
        route = [str(c) for c in data.get("route") or [] if c]
        territory = cases.territory_department(case.get("community_code"))
        extra = [c for c in (territory, case.get("department")) if c and c not in set(
            table["code"])]
        body = _territory_name(case.get("community_code"), grid_cells)
        for code in dict.fromkeys(extra):
            community = code.split(":", 1)[1] if code.startswith("territory:") else code
            table = pd.concat([table, pd.DataFrame({
                "code": [code],
                "name_zh": [body or f"社区居委会（{community}）"],
                "name_en": [f"Neighbourhood committee {community}" if not body
                            else f"Neighbourhood committee ({body})"]})], ignore_index=True)
    rank = {code: i for i, code in enumerate(route)}
    table["routed"] = table["code"].isin(rank)
    order = table["code"].map(rank).fillna(len(rank)).astype(int)
    return table.assign(_o=order).sort_values(["_o"], kind="stable").drop(columns="_o") \
        .reset_index(drop=True)


def eligible_assignees(store, user: User | None, case_id: str,
                       grid_cells: pd.DataFrame | None = None) -> pd.DataFrame:
    """Return the people *user* may dispatch a case to: enabled grid workers, its grid's first.

    Parameters
    ----------
    store, user, case_id
        The store, who dispatches, and the case.
    grid_cells
        The unit grids (to tell whose grids hold the case).

    Returns
    -------
    pandas.DataFrame
        ``username``, ``name`` (display name or username), ``covers`` (the case lies in their
        grids); the workers of the case's grid first, then the others by name.

    Raises
    ------
    PermissionDeniedError
        If *user* may not dispatch this case now.
    """
    _, case = _may_take(store, user, case_id, "dispatch", grid_cells)
    rows = store.read_rows(USERS, role="grid_worker")
    rows = rows.loc[~rows["disabled"].fillna(False).astype(bool)]
    if rows.empty:
        return pd.DataFrame({"username": [], "name": [], "covers": []})
    workers = [resolve(store, User(str(u), "grid_worker")) for u in rows["username"]]
    covers = [case.get("grid_code") in unit_grids_of(w, grid_cells) for w in workers]
    out = pd.DataFrame({"username": [w.username for w in workers],
                        "name": [w.name for w in workers], "covers": covers})
    return out.sort_values(["covers", "name"], ascending=[False, True]).reset_index(drop=True)


def category_choices(case: Mapping[str, Any] | None = None) -> pd.DataFrame:
    """Return the categories a case may be given: code, names and major class in zh and en.

    The case's own category is left out (recategorising to it is refused).
    """
    table = cases.load_categories()[["service_code", "family", "major_zh", "major_en",
                                     "name_zh", "name_en"]].reset_index(drop=True)
    if case is not None:
        table = table.loc[table["service_code"] != case.get("service_code")]
    return table.reset_index(drop=True)


# -- what a case page shows ----------------------------------------------------------------------


#: Steps recorded in a case's history that are not transitions of the loop.
OTHER_STEPS = {"merge_in": ("并入重复上报", "Duplicate merged in")}


def step_names(lang: str) -> dict[str, str]:
    """Return action → step name in *lang* (zh-CN or en), from :data:`twin.cases.TRANSITIONS`."""
    zh = str(lang).startswith("zh")
    names = {t.action: (t.label_zh if zh else t.label_en) for t in cases.TRANSITIONS}
    names.update({k: v[0] if zh else v[1] for k, v in OTHER_STEPS.items()})
    return names


def people_names(store, names: Any) -> dict[str, str]:
    """Username (or a grid's worker name) → how to show that person: their display name.

    Names that are no stored user are shown as they are (``system``, a grid worker named in the
    grid layer). Display names of staff are not personal data of residents.
    """
    wanted = {str(n) for n in names if n is not None and not pd.isna(n) and str(n)}
    if not wanted:
        return {}
    rows = store.read_rows(USERS, username=tuple(sorted(wanted)))
    shown = {str(u): (str(d) if d is not None and not pd.isna(d) and str(d) else str(u))
             for u, d in zip(rows["username"], rows["display_name"], strict=True)}
    return {n: shown.get(n, n) for n in wanted}


def _category_name(code: Any, lang: str) -> str:
    try:
        row = cases.lookup_category(str(code))
    except ValidationError:
        return str(code)
    return str(row["name_zh" if str(lang).startswith("zh") else "name_en"])


def case_card(store, user: User | None, case_id: str, grid_cells: pd.DataFrame | None = None,
              lang: str = "zh-CN") -> dict[str, Any]:
    """Return one case as a page shows it: names instead of codes, timers, photos, history.

    Parameters
    ----------
    store, user, case_id
        The store, who looks, and the case (refused as :func:`read_case` refuses).
    grid_cells
        The unit grids (grid names; a grid worker's scope).
    lang
        ``zh-CN`` or ``en``: the language of category, grid, department, step and status names.

    Returns
    -------
    dict
        ``case`` (as the role may see it), ``category``, ``grid`` (name), ``department`` (name),
        ``assignee`` (display name), ``address``, ``lon``/``lat``, ``timers`` (a frame of
        ``stage``, ``deadline`` in UTC and ``running``), ``photos`` (kind → stored names),
        ``evaluation`` and ``history`` (a frame of ``at``, ``who``, ``step``, ``action``,
        ``status``, ``note`` and ``data`` — the step's own record, with category codes turned
        into names and people into display names).
    """
    zh = str(lang).startswith("zh")
    case = read_case(store, user, case_id, grid_cells)
    data = case["data"]
    history = store.case_history(case_id)
    people = people_names(store, [case.get("assignee"), *history["actor"],
                                  *(_as_dict(d).get("assignee") for d in history["data"])])
    from twin import organisations as orgs

    depts = departments(case, grid_cells, orgs.names(orgs.current(store))).set_index("code")
    name_col = "name_zh" if zh else "name_en"

    def dept_name(code: Any) -> str:
        if code is None or (isinstance(code, float) and np.isnan(code)) or not str(code):
            return ""
        return str(depts[name_col].get(str(code), code))

    grid = case.get("grid_code")
    grid_name = grid or ""
    if grid and grid_cells is not None and "name" in grid_cells:
        named = grid_cells.loc[grid_cells["grid_code"].astype(str) == str(grid), "name"]
        grid_name = str(named.iloc[0]) if len(named) and str(named.iloc[0]) else str(grid)
    deadlines = data.get("deadlines") or {}
    running = (data.get("timer") or {}).get("stage")
    stages = [s for s in ("file", "dispatch", "handle", "check", "total") if deadlines.get(s)]
    timers = pd.DataFrame({"stage": stages,
                           "deadline": pd.to_datetime([deadlines[s] for s in stages], utc=True),
                           "running": [s == running for s in stages]})
    statuses = {k: v[0] if zh else v[1] for k, v in cases.STATUSES.items()}
    steps = step_names(lang)
    records = [_named_record(_as_dict(d), lang, people, dept_name) for d in history["data"]]
    shown_history = pd.DataFrame({
        "at": pd.to_datetime(history["at"], utc=True),
        "who": [people.get(str(a), str(a)) for a in history["actor"]],
        "action": history["action"].astype(str).to_numpy(),
        "step": history["action"].map(steps).fillna(history["action"]).to_numpy(),
        "status": history["to_status"].map(statuses).fillna("").to_numpy(),
        "note": history["note"].fillna("").astype(str).to_numpy(),
        "data": records,
    })
    return {
        "case": case,
        "status": statuses.get(case["status"], case["status"]),
        "category": _category_name(case["service_code"], lang),
        "grid": grid_name,
        "department": dept_name(case.get("department")),
        "assignee": people.get(str(case.get("assignee")), "") if case.get("assignee") else "",
        "address": data.get("address") or "",
        "lon": case.get("lon"), "lat": case.get("lat"),
        "timers": timers, "running_stage": running,
        "photos": {k: list(data.get(k) or []) for k in PHOTO_KINDS if data.get(k)},
        "evaluation": data.get("evaluation"),
        "history": shown_history,
    }


def _named_record(record: dict[str, Any], lang: str, people: Mapping[str, str],
                  dept_name: Any) -> dict[str, Any]:
    """Return a history step's record with category codes as names and people as display names."""
    out = dict(record)
    for key in ("old", "new"):
        if key in out:
            out[key] = _category_name(out[key], lang)
    if out.get("assignee"):
        out["assignee"] = people.get(str(out["assignee"]), str(out["assignee"]))
    if out.get("department"):
        out["department"] = dept_name(out["department"])
    return out


_PHOTO_NAME = re.compile(r"photos/[0-9a-f]{20}\.(jpeg|png|webp)")


def photo_file(name: str) -> Path:
    """Return where a case's stored photo (``photos/<hash>.<ext>``) is kept.

    Only names :func:`twin.trust.store_photo` gives are accepted, so a name stored in a case
    can never point elsewhere on the server.

    Raises
    ------
    ValidationError
        For any other name.
    NotFoundError
        If the photo is not there (any more).
    """
    if not isinstance(name, str) or not _PHOTO_NAME.fullmatch(name):
        raise ValidationError(f"{name!r} is not the name of a stored photo")
    path = Path(settings.get("data_dir")) / name
    if not path.is_file():
        raise NotFoundError(f"photo {name} is not in the photo folder any more")
    return path
