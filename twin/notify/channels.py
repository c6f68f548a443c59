"""Notification channels: where messages go, for which role's view, grid and recipient."""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import pandas as pd

from twin.errors import NotFoundError, ValidationError
from twin.i18n import LANGUAGES, normalize_language
from twin.schema import NOTIFY_CHANNELS, NOTIFY_KINDS, ROLES

#: The events GridTwin sends today; other features add theirs (docs/notify.md).
#: the events a channel may take (each with its texts notify.<event>.title/.text)
EVENTS = ("case.assigned", "alarm.opened", "task.posted", "proposal.decided")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
_EVENT = re.compile(r"^[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)+$")


@dataclass(frozen=True)
class Channel:
    """One channel as stored (see :data:`twin.schema.NOTIFY_CHANNELS`)."""

    id: str
    kind: str
    url: str
    role: str
    secret: str | None = None
    grid: str | None = None
    recipient: str | None = None
    events: tuple[str, ...] = EVENTS
    lang: str = "zh-CN"
    enabled: bool = True

    def takes(self, event: str, grids: Iterable[str], recipients: Iterable[str]) -> bool:
        """Whether the channel takes *event* about *grids*, addressed to *recipients*."""
        return (self.enabled and event in self.events
                and (not self.grid or self.grid in set(grids))
                and (not self.recipient or self.recipient in set(recipients)))

    def listed(self) -> dict[str, Any]:
        """Return the channel as an administrator sees it: no secret, URL tokens masked."""
        return {"id": self.id, "kind": self.kind, "url": redact_url(self.url), "role": self.role,
                "grid": self.grid or "", "recipient": self.recipient or "",
                "events": list(self.events), "lang": self.lang, "enabled": self.enabled,
                "secret": "***" if self.secret else ""}


def redact_url(url: str) -> str:
    """Return *url* with what may be a credential masked: user info, path and query.

    ``wecombot://KEY`` → ``wecombot://***``; ``https://u:p@host/hook/abc?t=1`` →
    ``https://***@host/***``.
    """
    try:
        parts = urlsplit(url)
    except ValueError:
        return "***"
    host = parts.hostname or ""
    if parts.scheme not in ("http", "https", "json", "jsons", "form", "forms", "xml", "xmls"):
        return f"{parts.scheme}://***"
    user = "***@" if parts.username or parts.password else ""
    port = f":{parts.port}" if parts.port else ""
    rest = "/***" if parts.path.strip("/") or parts.query else ""
    return f"{parts.scheme}://{user}{host}{port}{rest}"


def check_channel(fields: Mapping[str, Any]) -> dict[str, Any]:
    """Return a channel's fields checked and completed, or raise ValidationError saying why."""
    row = dict(fields)
    problems = []
    if not _NAME.match(str(row.get("id") or "")):
        problems.append(f"the id {row.get('id')!r} must be 1-64 letters, digits, '.', '_' or '-'")
    kind = row.get("kind") or "webhook"
    if kind not in NOTIFY_KINDS:
        problems.append(f"kind must be one of {list(NOTIFY_KINDS)}, not {kind!r}")
    url = str(row.get("url") or "").strip()
    scheme = url.split("://", 1)[0].lower() if "://" in url else ""
    if kind == "webhook":
        if scheme not in ("http", "https"):
            problems.append(f"a webhook URL starts with https:// (or http:// on a closed "
                            f"network); got {redact_url(url) if url else 'nothing'}")
        if not row.get("secret") or len(str(row["secret"])) < 16:
            problems.append("a webhook needs a secret of at least 16 characters (it signs "
                            "every request; e.g. `python -c 'import secrets; print(secrets."
                            "token_hex(32))'`)")
    elif kind == "apprise" and not scheme:
        problems.append("an apprise URL names its service, e.g. wecombot://KEY, "
                        "dingtalk://TOKEN, mailto://user:pass@host, json://host/path")
    role = row.get("role")
    if role not in ROLES:
        problems.append(f"role must be one of {list(ROLES)} (the view the channel gets), "
                        f"not {role!r}")
    events = row.get("events") or list(EVENTS)
    if isinstance(events, str):
        events = [e.strip() for e in events.split(",") if e.strip()]
    bad = [e for e in events if not _EVENT.match(str(e))]
    if bad:
        problems.append(f"events are dotted names such as {', '.join(EVENTS)}; got {bad}")
    try:
        lang = normalize_language(row.get("lang") or "zh-CN")
    except Exception:
        problems.append(f"lang must be one of {list(LANGUAGES)}, not {row.get('lang')!r}")
        lang = "zh-CN"
    if problems:
        raise ValidationError("notification channel: " + "; ".join(problems) + ".")
    return {
        "id": row["id"], "kind": kind, "url": url, "secret": row.get("secret") or None,
        "role": role, "grid": (row.get("grid") or None), "recipient": row.get("recipient") or None,
        "events": sorted(set(events)), "lang": lang,
        "enabled": bool(row.get("enabled", True)), "created_by": row.get("created_by"),
        "updated_at": row.get("updated_at") or pd.Timestamp.now(tz="UTC"),
    }


def _channel(row: Mapping[str, Any]) -> Channel:
    events = row.get("events")
    events = json.loads(events) if isinstance(events, str) else (events or list(EVENTS))

    def text(name: str) -> str | None:
        value = row.get(name)
        return None if value is None or (isinstance(value, float) and pd.isna(value)) \
            or value is pd.NA else str(value)

    enabled = row.get("enabled")
    return Channel(id=str(row["id"]), kind=str(row["kind"]), url=str(row["url"]),
                   role=str(row["role"]), secret=text("secret"), grid=text("grid"),
                   recipient=text("recipient"), events=tuple(events),
                   lang=text("lang") or "zh-CN",
                   enabled=True if enabled is None or enabled is pd.NA else bool(enabled))


def read_channels(store, *, enabled_only: bool = False) -> list[Channel]:
    """Return the stored channels (only the enabled ones if asked), by id."""
    frame = store.read_rows(NOTIFY_CHANNELS, enabled=True) if enabled_only \
        else store.read_rows(NOTIFY_CHANNELS)
    return [_channel(r) for r in frame.to_dict("records")]


def save_channel(store, fields: Mapping[str, Any]) -> Channel:
    """Create or replace a channel (checked first: nothing is stored when a field is wrong)."""
    row = check_channel(fields)
    store.put_rows(NOTIFY_CHANNELS, pd.DataFrame([row]), on_conflict="update")
    return _channel(row)


def get_channel(store, channel_id: str) -> Channel:
    """Return one channel; NotFoundError naming the stored ones if it is not there."""
    found = store.read_rows(NOTIFY_CHANNELS, id=channel_id)
    if found.empty:
        names = [c.id for c in read_channels(store)]
        raise NotFoundError(f"no notification channel {channel_id!r}; channels: "
                            f"{', '.join(names) or 'none yet'}")
    return _channel(found.iloc[0].to_dict())


def set_enabled(store, channel_id: str, enabled: bool) -> Channel:
    """Enable or disable a channel (messages for a disabled one go dead, to be requeued)."""
    channel = get_channel(store, channel_id)
    row = {**channel.__dict__, "events": list(channel.events), "enabled": enabled}
    return save_channel(store, row)
