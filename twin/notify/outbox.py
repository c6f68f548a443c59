"""Notifications into the outbox: which channels take an event, and each one's message."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from twin import i18n
from twin.notify.channels import Channel, read_channels
from twin.schema import OUTBOX
from twin.timeutil import to_local, to_utc

#: What a channel may see of an event's personal fields: ``view(personal, role, kind)`` returns
#: the fields to send (empty: none). :func:`twin.trust.outgoing.notification_view` decides for
#: the twin's own events; the default sends none.
View = Callable[[Mapping[str, Any], str, str], Mapping[str, Any]]


def no_personal(personal: Mapping[str, Any], role: str, kind: str) -> dict[str, Any]:
    """Return nothing: by default no personal field leaves the twin."""
    return {}


def row_id(key: str, channel: str) -> str:
    """Return the idempotency key of event *key* sent to *channel* (the outbox row's id)."""
    return "n-" + hashlib.sha256(f"{key}\x1f{channel}".encode()).hexdigest()[:40]


def plain(value: Any) -> Any:
    """Return *value* as JSON can hold it (times as ISO text in UTC, NaN as None)."""
    if isinstance(value, Mapping):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    if isinstance(value, pd.Timestamp):
        return None if pd.isna(value) else to_utc(value).isoformat()
    if isinstance(value, np.generic):
        value = value.item()
    if value is pd.NA or value is pd.NaT or (isinstance(value, float) and np.isnan(value)):
        return None
    return value


def local_time(value: Any) -> str:
    """Return a time as the people reading a message expect it: local, to the minute."""
    if value is None or (not isinstance(value, str) and pd.isna(value)):
        return "-"
    return f"{to_local(pd.Timestamp(value)):%Y-%m-%d %H:%M}"


def render(event: str, data: Mapping[str, Any], lang: str) -> tuple[str, str]:
    """Return the title and text of *event* in *lang* (catalog ``notify.<event>.title/text``).

    A value given in both languages (``{"zh": …, "en": …}``) is taken in *lang*.
    """
    zh = lang.startswith("zh")
    fields = {k: (v.get("zh" if zh else "en", v.get("zh")) if isinstance(v, Mapping) else
                  ("-" if v is None else v)) for k, v in data.items()}
    return (i18n.t(f"notify.{event}.title", lang, **fields),
            i18n.t(f"notify.{event}.text", lang, **fields))


def outbox_rows(
    store,
    event: str,
    subject: str,
    data: Mapping[str, Any],
    *,
    grids: Iterable[str] = (),
    recipients: Iterable[str] = (),
    personal: Mapping[str, Any] | None = None,
    view: View | None = None,
    key: str | None = None,
    at: Any = None,
    channels: Sequence[Channel] | None = None,
) -> pd.DataFrame:
    """Return the outbox rows of one event: one per channel that takes it (see :func:`enqueue`).

    For a store write that must carry them in its own transaction (``store.update_case(…,
    outbox=rows)``, ``store.open_alarms(…, outbox=rows)``). *channels* (default: the enabled
    ones, read now) lets a caller raising many events read them once.
    """
    grids = [g for g in grids if g]
    recipients = sorted({r for r in recipients if r})
    channels = read_channels(store, enabled_only=True) if channels is None else channels
    chosen = [c for c in channels if c.takes(event, grids, recipients)]
    if not chosen:
        return pd.DataFrame(columns=[c.name for c in OUTBOX.columns])
    when = pd.Timestamp.now(tz="UTC") if at is None else to_utc(pd.Timestamp(at))
    key = key or f"{event}:{subject}"
    facts = plain(dict(data))
    rows = []
    for channel in chosen:
        shown = plain(dict((view or no_personal)(personal or {}, channel.role, channel.kind)))
        title, text = render(event, facts, channel.lang)
        rid = row_id(key, channel.id)
        body = {"id": rid, "event": event, "subject": subject, "at": when.isoformat(),
                "lang": channel.lang, "title": title, "text": text,
                "data": {**facts, **({"personal": shown} if shown else {})}}
        rows.append({"id": rid, "event": event, "subject": subject, "channel": channel.id,
                     "recipient": channel.recipient or (",".join(recipients) or None),
                     "role": channel.role, "payload": json.dumps(body, ensure_ascii=False,
                                                                 sort_keys=True),
                     "status": "pending", "attempts": 0, "created_at": when, "next_at": when})
    return pd.DataFrame(rows)


def enqueue(
    store,
    event: str,
    subject: str,
    data: Mapping[str, Any],
    *,
    grids: Iterable[str] = (),
    recipients: Iterable[str] = (),
    personal: Mapping[str, Any] | None = None,
    view: View | None = None,
    key: str | None = None,
    at: Any = None,
    channels: Sequence[Channel] | None = None,
) -> int:
    """Put the notifications of one event in the outbox, in a transaction of their own.

    The arguments are described in :mod:`twin.notify` (and are :func:`outbox_rows`'s).

    Returns
    -------
    int
        How many rows were new: one per channel that takes the event; an event enqueued twice
        under the same *key* is stored once per channel.
    """
    rows = outbox_rows(store, event, subject, data, grids=grids, recipients=recipients,
                       personal=personal, view=view, key=key, at=at, channels=channels)
    return store.enqueue(rows) if len(rows) else 0


# -- the twin's own events -----------------------------------------------------------------------


def _json(value: Any) -> dict[str, Any]:
    if isinstance(value, Mapping):
        return dict(value)
    if value is None or (isinstance(value, float) and np.isnan(value)) or value == "":
        return {}
    return json.loads(value)


def case_event(case: Mapping[str, Any]) -> dict[str, Any]:
    """Return the facts a ``case.assigned`` message carries (no personal data; see docs)."""
    data = _json(case.get("data"))
    deadline = (data.get("deadlines") or {}).get("handle") or case.get("deadline_at")
    place = data.get("address") or case.get("grid_code") or "-"
    category = data.get("category") or {}
    return {
        "case_id": case["id"], "status": case.get("status"),
        "category": {"zh": category.get("zh") or case.get("service_code"),
                     "en": category.get("en") or case.get("service_code")},
        "service_code": case.get("service_code"), "description": case.get("description"),
        "place": place, "lon": case.get("lon"), "lat": case.get("lat"),
        "grid_code": case.get("grid_code"), "resp_grid_id": case.get("resp_grid_id"),
        "assignee": case.get("assignee"), "department": case.get("department"),
        "recipient": case.get("assignee") or case.get("department"),
        "urgency": case.get("urgency"), "deadline": plain(pd.Timestamp(deadline))
        if deadline else None, "deadline_local": local_time(deadline),
    }


def case_personal(case: Mapping[str, Any]) -> dict[str, Any]:
    """Return the personal fields of a case a notification may carry (its reporter)."""
    reporter = _json(case.get("data")).get("reporter") or {}
    return {"reporter": reporter} if reporter else {}


def alarm_event(alarm: Mapping[str, Any]) -> dict[str, Any]:
    """Return the facts an ``alarm.opened`` message carries."""
    data = _json(alarm.get("data"))
    value = alarm.get("value")
    return {
        "alarm_id": alarm["id"], "rule_id": alarm.get("rule_id"), "status": alarm.get("status"),
        "rule": {"zh": data.get("name_zh") or alarm.get("rule_id"),
                 "en": data.get("name_en") or alarm.get("rule_id")},
        "severity": alarm.get("severity"), "source_id": alarm.get("source_id"),
        "source_kind": alarm.get("source_kind"), "property": alarm.get("property"),
        "value": None if value is None or pd.isna(value) else float(value),
        "threshold": data.get("threshold"), "lon": alarm.get("lon"), "lat": alarm.get("lat"),
        "grid_code": alarm.get("grid_code"), "resp_grid_id": alarm.get("resp_grid_id"),
        "building_code": alarm.get("building_code"),
        "opened_at": plain(pd.Timestamp(alarm["opened_at"])),
        "opened_local": local_time(alarm.get("opened_at")),
    }


def alarm_rows(store, alarms: pd.DataFrame | Iterable[Mapping[str, Any]]) -> pd.DataFrame:
    """Return the ``alarm.opened`` rows of *alarms* for the channels of their grids.

    Every alarm the twin records is told, one already resolved when it was recorded (late
    readings) too: its ``status`` says so. For :meth:`twin.store.Store.open_alarms`, which
    keeps only those of the alarms it inserts (a worker that lost the race sends nothing).
    """
    records = alarms.to_dict("records") if isinstance(alarms, pd.DataFrame) else list(alarms)
    channels = read_channels(store, enabled_only=True)
    if not channels or not records:
        return pd.DataFrame(columns=[c.name for c in OUTBOX.columns])
    frames = [outbox_rows(store, "alarm.opened", f"alarm:{a['id']}", alarm_event(a),
                          grids=(a.get("grid_code"), a.get("resp_grid_id")),
                          at=a.get("updated_at") or a.get("opened_at"), channels=channels)
              for a in records]
    frames = [f for f in frames if len(f)]
    if not frames:
        return pd.DataFrame(columns=[c.name for c in OUTBOX.columns])
    return pd.concat(frames, ignore_index=True)
