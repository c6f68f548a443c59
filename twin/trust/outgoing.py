"""What leaves the twin in notifications: each role's view, and who may set up the channels.

:mod:`twin.notify` delivers; this module decides, once, what a channel may carry and who may
administer channels and the outbox (``notify.manage``, audited):

* personal fields of an event (a case's reporter) go only to channels whose role handles cases
  (``page.cases``, as :func:`twin.trust.casework.case_for_role` decides for the case page):
  in full through a signed webhook to a system the administrator set up, masked
  (``张*``, ``138****5678``) through messaging services (apprise: WeCom, DingTalk, SMS, e-mail),
  which leave the community's network; no other role gets them;
* a case step that assigns the case (dispatch, or a re-route of a case being handled) writes
  its ``case.assigned`` notifications in the step's own transaction (:func:`assignment_rows`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pandas as pd

from twin import notify
from twin.notify import channels as notify_channels
from twin.trust.permissions import User, can, require
from twin.trust.privacy import mask_name, mask_phone
from twin.trust.users import resolve

#: Statuses in which a case is someone's to handle: a new assignee then is told.
_ASSIGNED = ("dispatched", "handling")


def notification_view(personal: Mapping[str, Any], role: str, kind: str) -> dict[str, Any]:
    """Return the personal fields a channel of *role* and *kind* may carry (see module)."""
    if not personal or not can(User("notify", role), "page.cases"):
        return {}
    if kind == "webhook":
        return dict(personal)
    out: dict[str, Any] = {}
    for key, person in personal.items():
        if not isinstance(person, Mapping):
            continue
        shown = {}
        for field, value in person.items():
            if value in (None, ""):
                continue
            low = field.lower()
            if "phone" in low or "mobile" in low or "tel" in low:
                shown[field] = mask_phone(pd.Series([str(value)]))[0]
            elif low == "name" or low.endswith("_name"):  # a person's name, not a login
                shown[field] = mask_name(pd.Series([str(value)]))[0]
        if shown:
            out[key] = shown
    return out


def assignment_rows(store, before: Mapping[str, Any], after: Mapping[str, Any],
                    action: str) -> pd.DataFrame | None:
    """Return the ``case.assigned`` outbox rows of a case step, or None if it assigns nobody.

    A dispatch always assigns; another step does when it leaves the case being handled with
    another assignee or department (a change of category re-routes it).
    """
    moved = any(after.get(k) != before.get(k) for k in ("assignee", "department"))
    if action != "dispatch" and not (moved and after.get("status") in _ASSIGNED):
        return None
    recipients = [r for r in (after.get("assignee"), after.get("department")) if r]
    version = int(before.get("version") or 0) + 1
    return notify.outbox_rows(
        store, "case.assigned", f"case:{after['id']}", notify.case_event(after),
        grids=(after.get("grid_code"), after.get("resp_grid_id")), recipients=recipients,
        personal=notify.case_personal(after), view=notification_view,
        key=f"case.assigned:{after['id']}:v{version}", at=after.get("updated_at"))


# -- administration (notify.manage) --------------------------------------------------------------


def _admin(store, user: User | None) -> User:
    return require(resolve(store, user), "notify.manage")


def list_channels(store, user: User | None) -> list[dict[str, Any]]:
    """Return the channels as an administrator sees them (no secrets, URL tokens masked)."""
    _admin(store, user)
    return [c.listed() for c in notify.read_channels(store)]


def save_channel(store, user: User | None, *, origin: str = "", **fields: Any) -> dict[str, Any]:
    """Create or replace a channel as *user* (an administrator); audited without its secret.

    Raises
    ------
    PermissionDeniedError
        If the user may not manage notifications.
    ValidationError
        If a field is wrong (nothing is stored); the message says which and how.
    """
    admin = _admin(store, user)
    channel = notify_channels.save_channel(store, {**fields, "created_by": admin.username})
    listed = channel.listed()
    store.append_audit(admin.username, "notify.channel", f"channel:{channel.id}", listed, origin)
    return listed


def enable_channel(store, user: User | None, channel_id: str, enabled: bool, *,
                   origin: str = "") -> dict[str, Any]:
    """Enable or disable a channel as an administrator (audited)."""
    admin = _admin(store, user)
    listed = notify_channels.set_enabled(store, channel_id, enabled).listed()
    store.append_audit(admin.username, "notify.channel", f"channel:{channel_id}", listed, origin)
    return listed


def outbox_status(store, user: User | None) -> dict[str, Any]:
    """Return the outbox by status and its dead rows (see :func:`twin.notify.status`)."""
    _admin(store, user)
    return notify.status(store)


def requeue_dead(store, user: User | None, ids: list[str] | None = None, *,
                 origin: str = "") -> int:
    """Put dead notifications (all, or *ids*) back in the queue as an administrator (audited)."""
    admin = _admin(store, user)
    count = store.requeue_outbox(ids)
    store.append_audit(admin.username, "notify.requeue", "outbox",
                       {"ids": ids, "rows": count}, origin)
    return count
