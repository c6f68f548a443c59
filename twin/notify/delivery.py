"""The delivery worker: claim due outbox rows, send them, retry with backoff, then give up."""

from __future__ import annotations

import json
import logging
import os
import random
import socket
import threading
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote, urlsplit

import pandas as pd

from twin import settings
from twin.errors import StoreUnavailableError
from twin.notify.channels import Channel, read_channels, redact_url
from twin.notify.signing import (
    EVENT_HEADER,
    IDEMPOTENCY_HEADER,
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    signature,
)
from twin.schema import OUTBOX

LOGGER = logging.getLogger(__name__)

#: apprise schemes that post to an HTTP endpoint and take ``+Header=value`` in their URL.
_APPRISE_HTTP = ("json", "jsons", "form", "forms", "xml", "xmls")


class DeliveryError(Exception):
    """An attempt failed (receiver down, refused, an error status): the row is retried."""


@dataclass(frozen=True)
class RetryPolicy:
    """How often and how long a message is retried before it is marked dead.

    Attempt *n* failed: the next waits ``min(cap_s, base_s * 2**(n-1))`` seconds times a random
    factor in [0.5, 1] (jitter: workers that failed together do not retry together). Each wait
    is at least as long as the one before it until the cap.
    """

    max_attempts: int = 8
    base_s: float = 30.0
    cap_s: float = 3600.0
    lease_s: float = 60.0
    timeout_s: float = 10.0

    @classmethod
    def from_settings(cls) -> RetryPolicy:
        """Return the policy of the ``TWIN_NOTIFY_*`` settings (docs/notify.md)."""
        return cls(max_attempts=settings.get("notify_max_attempts"),
                   base_s=settings.get("notify_backoff_s"),
                   cap_s=settings.get("notify_backoff_cap_s"),
                   lease_s=settings.get("notify_lease_s"),
                   timeout_s=settings.get("notify_timeout_s"))

    def delay(self, attempt: int, rng: random.Random) -> pd.Timedelta:
        """Return the wait after failed attempt number *attempt* (from 1)."""
        ceiling = min(self.cap_s, self.base_s * 2 ** max(attempt - 1, 0))
        # whole milliseconds: what both stores keep of a time
        return pd.Timedelta(seconds=ceiling * rng.uniform(0.5, 1.0)).round("ms")


@dataclass
class DeliveryReport:
    """What one pass of a worker did."""

    claimed: int = 0
    delivered: int = 0
    retried: int = 0
    dead: int = 0
    errors: list[str] = field(default_factory=list)


Sender = Callable[[Channel, Mapping[str, Any], pd.Timestamp, float], None]


def body_bytes(payload: Any) -> bytes:
    """Return the request body of a payload: compact, sorted JSON in UTF-8 (what is signed)."""
    value = json.loads(payload) if isinstance(payload, str) else payload
    return json.dumps(value, ensure_ascii=False, sort_keys=True,
                      separators=(",", ":")).encode("utf-8")


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    """Refuse redirects: urllib would follow a POST's 302 as a GET, and its 2xx is no delivery."""

    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


_OPENER = urllib.request.build_opener(_NoRedirect)


def send_webhook(channel: Channel, row: Mapping[str, Any], now: pd.Timestamp,
                 timeout_s: float) -> None:
    """POST the row's payload to the channel's URL, signed; raise DeliveryError unless 2xx."""
    body = body_bytes(row["payload"])
    stamp = str(int(now.timestamp()))
    headers = {
        "Content-Type": "application/json; charset=utf-8",
        "User-Agent": "GridTwin-notify",
        IDEMPOTENCY_HEADER: row["id"],
        EVENT_HEADER: row["event"],
        TIMESTAMP_HEADER: stamp,
        SIGNATURE_HEADER: signature(channel.secret or "", stamp, body),
    }
    request = urllib.request.Request(channel.url, data=body, headers=headers, method="POST")
    try:
        with _OPENER.open(request, timeout=timeout_s) as answer:
            status = answer.status
    except urllib.error.HTTPError as exc:
        raise DeliveryError(f"HTTP {exc.code} from {redact_url(channel.url)}") from None
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise DeliveryError(f"{redact_url(channel.url)} unreachable: {reason}") from None
    if not 200 <= status < 300:
        raise DeliveryError(f"HTTP {status} from {redact_url(channel.url)}")


def apprise_url(url: str, row: Mapping[str, Any]) -> str:
    """Return *url* with the idempotency key and event as headers where apprise posts HTTP."""
    scheme = urlsplit(url).scheme.lower()
    if scheme not in _APPRISE_HTTP:
        return url
    joiner = "&" if "?" in url else "?"
    return (f"{url}{joiner}+{IDEMPOTENCY_HEADER}={quote(str(row['id']))}"
            f"&+{EVENT_HEADER}={quote(str(row['event']))}")


def send_apprise(channel: Channel, row: Mapping[str, Any], now: pd.Timestamp,
                 timeout_s: float) -> None:
    """Send the row's title and text through apprise; raise DeliveryError if it fails."""
    try:
        import apprise
    except ImportError:  # pragma: no cover - a dependency; the message says what to install
        raise DeliveryError("apprise is not installed: pip install apprise") from None
    payload = json.loads(row["payload"]) if isinstance(row["payload"], str) else row["payload"]
    sender = apprise.Apprise()
    if not sender.add(apprise_url(channel.url, row)):
        raise DeliveryError(f"apprise does not understand {redact_url(channel.url)}; see "
                            "https://github.com/caronc/apprise/wiki for its URL forms")
    with apprise.LogCapture(level=logging.WARNING) as captured:
        ok = sender.notify(title=payload.get("title", ""), body=payload.get("text", ""))
        told = captured.getvalue().strip().splitlines()
    if not ok:
        raise DeliveryError(f"apprise could not send to {redact_url(channel.url)}"
                            + (f": {told[-1][:300]}" if told else ""))


SENDERS: dict[str, Sender] = {"webhook": send_webhook, "apprise": send_apprise}


def worker_name() -> str:
    """Return a name for this worker: host, process and a random part."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"


def _now() -> pd.Timestamp:
    return pd.Timestamp.now(tz="UTC")


def deliver_due(
    store,
    *,
    worker: str | None = None,
    clock: Callable[[], pd.Timestamp] | None = None,
    limit: int = 20,
    policy: RetryPolicy | None = None,
    rng: random.Random | None = None,
    senders: Mapping[str, Sender] | None = None,
) -> DeliveryReport:
    """Claim the due outbox rows (up to *limit*), send each, and record what happened.

    A row sent is ``delivered``; a failure puts it back to ``pending`` after the policy's
    backoff, or marks it ``dead`` once it has had ``max_attempts``. A row whose channel is
    gone or disabled is ``dead`` at once (requeue it when the channel is back).

    Parameters
    ----------
    store
        The store holding the outbox.
    worker
        This worker's name (default: host, pid and a random part).
    clock
        Returns the current time (UTC Timestamp); tests pass their own.
    limit
        Rows claimed in this pass.
    policy, rng
        Retry policy (default: the ``TWIN_NOTIFY_*`` settings) and the jitter's random source.
    senders
        Sender per channel kind (default :data:`SENDERS`).
    """
    worker = worker or worker_name()
    clock = clock or _now
    policy = policy or RetryPolicy.from_settings()
    rng = rng or random.Random()
    senders = {**SENDERS, **(senders or {})}
    report = DeliveryReport()
    rows = store.claim_outbox(worker, clock(), lease_s=policy.lease_s, limit=limit)
    report.claimed = len(rows)
    if not len(rows):
        return report
    channels = {c.id: c for c in read_channels(store)}
    for row in rows.to_dict("records"):
        channel = channels.get(row["channel"])
        attempt = int(row["attempts"])
        try:
            if channel is None or not channel.enabled:
                state = "removed" if channel is None else "disabled"
                store.settle_outbox(row["id"], worker, status="dead", now=clock(),
                                    error=f"channel {row['channel']!r} is {state}")
                report.dead += 1
                continue
            senders[channel.kind](channel, row, clock(), policy.timeout_s)
        except Exception as exc:  # any failure of one message is retried, never fatal to all
            now = clock()
            if not isinstance(exc, DeliveryError):
                exc = DeliveryError(f"{type(exc).__name__}: {exc}")
            report.errors.append(str(exc))
            if attempt >= policy.max_attempts:
                store.settle_outbox(row["id"], worker, status="dead", now=now, error=str(exc))
                report.dead += 1
                LOGGER.warning("notification %s dead after %d attempts: %s", row["id"],
                               attempt, exc)
            else:
                store.settle_outbox(row["id"], worker, status="pending", now=now,
                                    next_at=now + policy.delay(attempt, rng), error=str(exc))
                report.retried += 1
            continue
        store.settle_outbox(row["id"], worker, status="delivered", now=clock())
        report.delivered += 1
    return report


def run(store, *, stop: threading.Event | None = None, interval_s: float = 5.0,
        **options: Any) -> DeliveryReport:
    """Deliver until *stop* is set: a pass, then a pause of *interval_s* when nothing was due.

    A store that does not answer is waited for (a pause, then the next pass), not fatal.
    """
    stop = stop or threading.Event()
    total = DeliveryReport()
    options.setdefault("worker", worker_name())
    while not stop.is_set():
        try:
            done = deliver_due(store, **options)
        except StoreUnavailableError as exc:  # the database away for a while: wait, go on
            LOGGER.warning("notifications wait for the store: %s", exc)
            stop.wait(interval_s)
            continue
        for name in ("claimed", "delivered", "retried", "dead"):
            setattr(total, name, getattr(total, name) + getattr(done, name))
        if done.claimed == 0:
            stop.wait(interval_s)
    return total


def status(store) -> dict[str, Any]:
    """Return the outbox by status (rows, next try) and the dead rows with their last error."""
    summary = store.outbox_summary()
    dead = store.read_rows(OUTBOX, status="dead")
    return {
        "statuses": {r["status"]: {"rows": int(r["rows"]),
                                   "next_at": None if pd.isna(r["next_at"])
                                   else r["next_at"].isoformat()}
                     for r in summary.to_dict("records")},
        "dead": [{"id": r["id"], "event": r["event"], "subject": r["subject"],
                  "channel": r["channel"], "attempts": int(r["attempts"]),
                  "last_error": r["last_error"]} for r in dead.to_dict("records")],
    }
