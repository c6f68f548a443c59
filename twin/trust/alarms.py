"""Alarms as a user may see and handle them: scoped lists, acknowledge, dismiss, promote (audited).

The cockpit, the big screen (wall) and any later face call these with the user they
authenticated; who may do what is decided here, from :data:`twin.trust.PERMISSIONS`:

* ``alarms.read`` — staff see the active alarms; a grid worker only those of their own grids;
* ``alarms.acknowledge`` — whoever is on duty (a grid worker in their own grids) says "seen";
* ``alarms.dismiss`` — a false or irrelevant alarm is closed, always with a reason;
* ``alarms.promote`` — an alarm becomes a case (source sensor or video) through
  :func:`twin.cases.report`, routed by the case rules (事件先属地后属主, 部件先属主后属地).

Every step is written to the audit log (``alarm.acknowledge``, ``alarm.dismiss``,
``alarm.promote``; a refusal as ``alarm.denied``) and to the alarm's own history (its ``data``),
so no new columns are needed: the alarm's state stays in :data:`twin.schema.ALARMS` on both
stores. A promotion is made once: the case id is derived from the alarm id, so a second
promotion (another screen, a double click) is refused by the store's unique key.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pandas as pd

from twin.errors import (
    DuplicateIdError,
    LayerNotFoundError,
    NotFoundError,
    PermissionDeniedError,
    ValidationError,
)
from twin.feeds import rules
from twin.schema import ALARMS
from twin.trust.permissions import User, can, require
from twin.trust.privacy import unit_grids_of
from twin.trust.users import resolve

#: Severities, most urgent first: the order in which alarms pop up.
SEVERITIES = ("critical", "warning", "info")
#: Statuses of an alarm that still needs someone (see :data:`twin.feeds.rules.ACTIVE`).
ACTIVE = rules.ACTIVE
#: Longest reason kept for a dismissal (characters).
MAX_REASON = 500


def _grids_of(store, user: User, grid_cells: pd.DataFrame | None) -> set[str] | None:
    """Return the unit and responsibility grids a grid worker works in (None: every grid).

    Without *grid_cells* the store's current unit grids expand the responsibility grids.
    """
    if user.role != "grid_worker":
        return None
    if grid_cells is None:
        try:
            grid_cells = store.read_layer("grid_cells")
        except LayerNotFoundError:
            grid_cells = None
    return unit_grids_of(user, grid_cells) | set(user.grids)


def _in(alarms: pd.DataFrame, grids: set[str]) -> pd.Series:
    """Return True for the alarms whose unit or responsibility grid is one of *grids*."""
    where = alarms["grid_code"].isin(sorted(grids))
    if "resp_grid_id" in alarms:
        where |= alarms["resp_grid_id"].isin(sorted(grids))
    return where


def _data(alarm: dict[str, Any]) -> dict[str, Any]:
    value = alarm.get("data")
    if isinstance(value, dict):
        return dict(value)
    if value is None or (isinstance(value, float) and np.isnan(value)) or value == "":
        return {}
    return json.loads(value)


def visible_alarms(store, user: User | None, *, grid_cells: pd.DataFrame | None = None,
                   grids: tuple[str, ...] | list[str] | None = None,
                   active_only: bool = True) -> pd.DataFrame:
    """Return the alarms *user* may see, most urgent first (critical, warning, info; newest first).

    Parameters
    ----------
    store
        A :class:`twin.store.Store`.
    user
        Who is looking; a grid worker sees only the alarms of their own unit grids.
    grid_cells
        The unit grids (to expand a grid worker's responsibility grids).
    grids
        Only these unit grids (a drill-down); None: every grid the user may see.
    active_only
        Only alarms that still need someone (open, acknowledged, in progress).

    Returns
    -------
    pandas.DataFrame
        The alarm rows with ``name_zh``, ``name_en`` (the rule's name) and ``rank`` (0 is most
        urgent).

    Raises
    ------
    PermissionDeniedError
        If *user* may not read alarms (``alarms.read``).
    """
    user = require(resolve(store, user), "alarms.read")
    table = store.read_rows(ALARMS, status=ACTIVE) if active_only else store.read_rows(ALARMS)
    mine = _grids_of(store, user, grid_cells)
    if mine is not None:
        table = table.loc[_in(table, mine)]
    if grids is not None:
        table = table.loc[table["grid_code"].isin(list(grids))]
    table = table.copy()
    data = [_data(a) for a in table[["data"]].to_dict("records")] if len(table) else []
    table["name_zh"] = [d.get("name_zh") for d in data] if data else pd.Series(dtype=object)
    table["name_en"] = [d.get("name_en") for d in data] if data else pd.Series(dtype=object)
    rank = table["severity"].map({s: i for i, s in enumerate(SEVERITIES)}).fillna(len(SEVERITIES))
    # an acknowledged alarm has been seen: it pops up after the unseen ones of its severity
    table["rank"] = (rank * 2 + table["status"].ne("open").astype(int)).astype(int)
    opened = pd.to_datetime(table["opened_at"], utc=True)
    order = table.assign(_opened=opened).sort_values(["rank", "_opened", "id"],
                                                     ascending=[True, False, True])
    return order.drop(columns="_opened").reset_index(drop=True)


def allowed_alarm_actions(alarm: Any, user: User | None) -> list[str]:
    """Return what *user* may do with *alarm* now: ``acknowledge``, ``promote``, ``dismiss``.

    For the buttons of a page; each step checks again against the stored user and alarm (and a
    grid worker's grids) when it is taken.
    """
    if user is None or user.is_anonymous or user.disabled:
        return []
    status = alarm["status"]
    if status not in ACTIVE:
        return []
    has_case = alarm.get("case_id") is not None and not pd.isna(alarm.get("case_id"))
    out = []
    if status == "open" and can(user, "alarms.acknowledge"):
        out.append("acknowledge")
    if not has_case and can(user, "alarms.promote"):
        out.append("promote")
    if can(user, "alarms.dismiss"):
        out.append("dismiss")
    return out


def case_category(alarm: Any) -> str | None:
    """Return the case category (service code) the alarm's rule names, or None."""
    return _data(dict(alarm)).get("case_category") or None


def _alarm(store, alarm_id: str) -> dict[str, Any]:
    found = store.read_rows(ALARMS, id=str(alarm_id))
    if found.empty:
        raise NotFoundError(f"no alarm {alarm_id!r}; it may have been removed — reload the list")
    return found.iloc[0].to_dict()


def _authorise(store, user: User | None, alarm_id: str, permission: str,
               grid_cells: pd.DataFrame | None, origin: str) -> tuple[User, dict[str, Any]]:
    """Return the stored user and alarm if *user* may take *permission* on it (refusals audited)."""
    user = resolve(store, user)
    action = permission.split(".", 1)[1]
    try:
        require(user, permission)
        alarm = _alarm(store, alarm_id)
        mine = _grids_of(store, user, grid_cells)
        if mine is not None and not _in(pd.DataFrame([alarm]), mine).iloc[0]:
            raise PermissionDeniedError(
                f"alarm {alarm_id} is in grid {alarm.get('grid_code')!r}, not in the grids of "
                f"{user.username!r}; the duty officer or that grid's worker handles it")
    except PermissionDeniedError as exc:
        if not user.is_anonymous:
            store.append_audit(user.username, "alarm.denied", f"alarm:{alarm_id}",
                               {"action": action, "role": user.role, "reason": str(exc)}, origin)
        raise
    return user, alarm


def _refuse_unless_active(alarm: dict[str, Any], action: str) -> None:
    if alarm["status"] not in ACTIVE:
        raise ValidationError(
            f"alarm {alarm['id']} is already {alarm['status']}; only open, acknowledged or "
            f"in-progress alarms can be {action} — reload the list")


def acknowledge_alarm(store, user: User | None, alarm_id: str, *, origin: str = "",
                      grid_cells: pd.DataFrame | None = None) -> dict[str, Any]:
    """Acknowledge (确认) an open alarm as *user*: seen, someone is on it. Audited.

    Returns
    -------
    dict
        The stored alarm, ``acknowledged``.

    Raises
    ------
    PermissionDeniedError
        If *user* may not acknowledge alarms, or (a grid worker) not in that grid.
    ValidationError
        If the alarm is no longer open.
    NotFoundError
        If there is no such alarm.
    """
    user, alarm = _authorise(store, user, alarm_id, "alarms.acknowledge", grid_cells, origin)
    if alarm["status"] != "open":
        raise ValidationError(f"alarm {alarm_id} is {alarm['status']}, not open: someone "
                              "already handled it — reload the list")
    done = rules.set_alarm_status(store, alarm_id, "acknowledged", actor=user.username,
                                  note="acknowledged")
    store.append_audit(user.username, "alarm.acknowledge", f"alarm:{alarm_id}",
                       {"role": user.role, "from": alarm["status"]}, origin)
    return done


def dismiss_alarm(store, user: User | None, alarm_id: str, reason: str, *, origin: str = "",
                  grid_cells: pd.DataFrame | None = None) -> dict[str, Any]:
    """Dismiss (忽略) an alarm as *user* with a *reason* (a false alarm, a test …). Audited.

    The alarm is closed; the reason, who and when are kept in its history and the audit log.

    Raises
    ------
    ValidationError
        If *reason* is empty or longer than :data:`MAX_REASON`, or the alarm is not active
        (nothing is written).
    PermissionDeniedError
        If *user* may not dismiss alarms.
    NotFoundError
        If there is no such alarm.
    """
    text = " ".join(str(reason or "").split())
    if not text:
        raise ValidationError("say why the alarm is dismissed (a false alarm, a test, "
                              "already handled …); the reason is kept in the audit log")
    if len(text) > MAX_REASON:
        raise ValidationError(f"the reason has {len(text)} characters; keep it under "
                              f"{MAX_REASON}")
    user, alarm = _authorise(store, user, alarm_id, "alarms.dismiss", grid_cells, origin)
    _refuse_unless_active(alarm, "dismissed")
    done = rules.set_alarm_status(store, alarm_id, "closed", actor=user.username,
                                  note=f"dismissed: {text}")
    store.append_audit(user.username, "alarm.dismiss", f"alarm:{alarm_id}",
                       {"role": user.role, "from": alarm["status"], "reason": text}, origin)
    return done


def promote_alarm(store, user: User | None, alarm_id: str, *, category: str | None = None,
                  grid_cells: pd.DataFrame | None = None, origin: str = "") -> dict[str, Any]:
    """Turn an alarm into a case (转案件) as *user*, routed by the case rules. Audited.

    The case's category is *category*, else the one the alarm's rule names
    (``case_category`` of data/rules.csv); its source is ``camera`` for a camera alarm, else
    ``sensor``. The alarm records the case and moves to ``in_progress``.

    Parameters
    ----------
    store, user, alarm_id
        The store, who promotes, and which alarm.
    category
        The case category (service code), when the rule names none or another fits better.
    origin
        Where the request came from (``web``, a command), kept in the audit log.
    grid_cells
        The unit grids: they place the case in its grid and route it to the grid's worker or the
        owner department (without them the case has no grid and no assignee).

    Returns
    -------
    dict
        The alarm as stored, with ``case_id``.

    Raises
    ------
    ValidationError
        If the alarm is not active or was promoted already, or neither *category* nor the
        rule names a category.
    PermissionDeniedError
        If *user* may not promote alarms.
    """
    user, alarm = _authorise(store, user, alarm_id, "alarms.promote", grid_cells, origin)
    _refuse_unless_active(alarm, "promoted")
    if alarm.get("case_id") and not pd.isna(alarm["case_id"]):
        raise ValidationError(f"alarm {alarm_id} is already case {alarm['case_id']}")
    if not (category or _data(alarm).get("case_category")):
        raise ValidationError(f"alarm {alarm_id}: its rule names no case category; pick the "
                              "category (service code) of the case")
    try:
        done = rules.promote_alarm(store, alarm_id, actor=user.username, role=user.role,
                                   category=category, grid_cells=grid_cells, alarm=alarm,
                                   existing_ok=False)
    except DuplicateIdError:
        raise ValidationError(f"alarm {alarm_id} was promoted to a case meanwhile (by another "
                              "screen); reload the list") from None
    store.append_audit(user.username, "case.collect", f"case:{done['case_id']}",
                       {"role": user.role, "source": "alarm", "alarm": alarm_id}, origin)
    store.append_audit(user.username, "alarm.promote", f"alarm:{alarm_id}",
                       {"role": user.role, "from": alarm["status"], "case": done["case_id"]},
                       origin)
    return done
