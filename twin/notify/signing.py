"""Webhook signatures: HMAC-SHA256 over a timestamp and the body, checked within a tolerance.

A webhook carries ``X-GridTwin-Timestamp: <unix seconds>`` and
``X-GridTwin-Signature: sha256=<hex>``, the HMAC-SHA256 under the channel's secret of
``<timestamp>.<body bytes>``. A receiver recomputes it over the raw body, compares in constant
time and refuses a timestamp older (or newer) than a few minutes: a captured request cannot be
replayed later, and a body changed on the way does not verify (docs/notify.md).
"""

from __future__ import annotations

import hashlib
import hmac
import time

#: Header names of a webhook request (docs/notify.md).
SIGNATURE_HEADER = "X-GridTwin-Signature"
TIMESTAMP_HEADER = "X-GridTwin-Timestamp"
EVENT_HEADER = "X-GridTwin-Event"
IDEMPOTENCY_HEADER = "Idempotency-Key"
#: Seconds a receiver accepts between the signed timestamp and its own clock.
TOLERANCE_S = 300


def signature(secret: str, timestamp: str | int, body: bytes) -> str:
    """Return the ``sha256=<hex>`` signature of *body* sent at *timestamp* under *secret*."""
    message = str(int(timestamp)).encode("ascii") + b"." + body
    return "sha256=" + hmac.new(secret.encode("utf-8"), message, hashlib.sha256).hexdigest()


def verify(secret: str, body: bytes, timestamp: str | None, signed: str | None, *,
           now: float | None = None, tolerance_s: float = TOLERANCE_S) -> bool:
    """Return True if *signed* is *body*'s signature at *timestamp*, sent within the tolerance.

    Parameters
    ----------
    secret
        The channel's secret, shared with the receiver.
    body
        The raw request body, as received (before any JSON parsing).
    timestamp, signed
        The ``X-GridTwin-Timestamp`` and ``X-GridTwin-Signature`` headers.
    now
        The receiver's clock in Unix seconds (default: now).
    tolerance_s
        Largest accepted difference between *timestamp* and *now*.
    """
    if not timestamp or not signed or not timestamp.strip().isdigit():
        return False
    clock = time.time() if now is None else float(now)
    if abs(clock - int(timestamp)) > tolerance_s:
        return False
    return hmac.compare_digest(signature(secret, timestamp, body), signed.strip())
