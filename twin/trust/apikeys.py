"""API keys and short-lived tokens of the HTTP service: who a request acts as, and how often.

A key is ``gtk_<key_id>_<secret>``: random, shown once when created (:func:`create_key`), bound
to a stored user and so to that user's role, grids and rights, which are read from the store
on every use (:func:`twin.trust.users.session_user`): a key of a user disabled or moved to
another role follows at once. The store keeps the key id and the SHA-256 of the secret only
(``twin_api_keys``): the secret has 256 bits of entropy, so a fast hash is enough, and a copy
of the table opens nothing. A key can be revoked (:func:`revoke_key`), which is stored and
takes effect on the next request.

A **token** (:func:`issue_token`) is a signed, expiring string (HMAC-SHA256 under a key derived
from the audit key, as sessions are) given in exchange for a key or a username and password
(:func:`twin.trust.authenticate`, throttled and audited as any login); a token issued for a key
dies with the key.

Rate limits are a token bucket per key (per client address for the anonymous), kept **in the
server process**: with several server processes each counts apart (docs/api.md).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
import secrets
import threading
import time
from dataclasses import dataclass
from typing import Any

import pandas as pd

from twin import settings
from twin.errors import NotFoundError, PermissionDeniedError, ValidationError
from twin.schema import API_KEYS
from twin.trust.permissions import User
from twin.trust.users import authenticate, get_user, session_user

LOGGER = logging.getLogger(__name__)

__all__ = ["ApiKey", "KeyRefusedError", "RateLimiter", "create_key", "issue_token",
           "key_user", "list_keys", "revoke_key", "token_user"]

KEY_PREFIX = "gtk_"
TOKEN_PREFIX = "gtt_"
_DOMAIN = b"gridtwin-api-token-v1"


class KeyRefusedError(PermissionDeniedError):
    """A key or token that opens nothing: unknown, malformed, revoked, expired, user disabled.

    ``reason`` is one of ``invalid``, ``revoked``, ``expired``, ``disabled``; the message is
    the same for all (a caller learns nothing about which keys exist).
    """

    def __init__(self, reason: str) -> None:
        super().__init__("API key or token refused: unknown, revoked, expired or its user is "
                         "disabled; ask an administrator for a key (gridtwin users create-key)")
        self.reason = reason


@dataclass(frozen=True)
class ApiKey:
    """A key as the service sees it once checked: its id, owner and allowance (no secret)."""

    key_id: str
    username: str
    rate_per_min: int
    label: str = ""


def _now() -> pd.Timestamp:
    return pd.Timestamp.now(tz="UTC")


def _hash(secret: str) -> str:
    return hashlib.sha256(secret.encode("ascii")).hexdigest()


def _split_key(text: Any) -> tuple[str, str] | None:
    if not isinstance(text, str) or not text.startswith(KEY_PREFIX) or len(text) > 200:
        return None
    parts = text[len(KEY_PREFIX):].split("_", 1)
    if len(parts) != 2 or not all(p and p.isascii() for p in parts):
        return None
    return parts[0], parts[1]


def create_key(
    store, username: str, *, label: str = "", rate_per_min: int | None = None,
    actor: str = "system", origin: str = "",
) -> tuple[str, ApiKey]:
    """Create a key for stored user *username*; return the key text (shown once) and its record.

    Parameters
    ----------
    store
        The twin's store.
    username
        An existing user: the key acts as them.
    label
        What the key is for (a partner, a platform).
    rate_per_min
        Requests per minute allowed (default ``TWIN_API_RATE_PER_MIN``).
    actor, origin
        Who creates it and from where (the audit log).

    Raises
    ------
    NotFoundError
        If there is no such user.
    ValidationError
        If *rate_per_min* is not a positive whole number.
    """
    user = get_user(store, username)
    rate = settings.get("api_rate_per_min") if rate_per_min is None else rate_per_min
    if not isinstance(rate, int) or isinstance(rate, bool) or rate <= 0:
        raise ValidationError(f"rate {rate_per_min!r} must be a positive whole number of "
                              "requests per minute")
    key_id = secrets.token_hex(6)
    secret = secrets.token_urlsafe(32)
    store.put_rows(API_KEYS, pd.DataFrame([{
        "key_id": key_id, "secret_hash": _hash(secret), "username": user.username,
        "label": str(label)[:200], "rate_per_min": rate, "created_at": _now(),
        "created_by": str(actor)[:64], "revoked_at": None,
    }]))
    store.append_audit(actor, "apikey.create", f"user:{user.username}",
                       {"key_id": key_id, "label": label, "rate_per_min": rate}, origin)
    return f"{KEY_PREFIX}{key_id}_{secret}", ApiKey(key_id, user.username, rate, str(label))


def list_keys(store, username: str | None = None) -> pd.DataFrame:
    """Return the keys (of *username*, or all), without their hashes, oldest first."""
    rows = store.read_rows(API_KEYS, **({"username": username} if username else {}))
    return rows.drop(columns=["secret_hash"]).sort_values("created_at").reset_index(drop=True)


def revoke_key(store, key_id: str, *, actor: str = "system", origin: str = "") -> bool:
    """Revoke key *key_id* (its id or its full text); return False if it was already revoked.

    Raises
    ------
    NotFoundError
        If no key has that id.
    """
    split = _split_key(key_id)
    key_id = split[0] if split else str(key_id)
    rows = store.read_rows(API_KEYS, key_id=key_id)
    if rows.empty:
        raise NotFoundError(f"no API key {key_id!r}; list them with `gridtwin users keys`")
    if not pd.isna(rows.iloc[0]["revoked_at"]):
        return False
    store.put_rows(API_KEYS, rows.assign(revoked_at=_now()), on_conflict="update")
    store.append_audit(actor, "apikey.revoke", f"user:{rows.iloc[0]['username']}",
                       {"key_id": key_id}, origin)
    return True


def _key_row(store, text: Any) -> tuple[dict[str, Any], User]:
    split = _split_key(text)
    if split is None:
        raise KeyRefusedError("invalid")
    row = store.read_row(API_KEYS, key_id=split[0])
    if row is None or not hmac.compare_digest(row["secret_hash"], _hash(split[1])):
        raise KeyRefusedError("invalid")
    if not pd.isna(row["revoked_at"]):
        raise KeyRefusedError("revoked")
    user = session_user(store, row["username"])
    if user is None:
        raise KeyRefusedError("disabled")
    return row, user


def _record(row: dict[str, Any]) -> ApiKey:
    return ApiKey(str(row["key_id"]), str(row["username"]), int(row["rate_per_min"]),
                  str(row["label"] or ""))


def key_user(store, text: Any) -> tuple[User, ApiKey]:
    """Return the user key *text* acts as (as stored now) and the key's record.

    Raises
    ------
    KeyRefusedError
        If the key is malformed, unknown, revoked, or its user disabled or gone.
    """
    row, user = _key_row(store, text)
    return user, _record(row)


# -- short-lived tokens ---------------------------------------------------------------------------


def _token_key() -> bytes:
    from twin.auditchain import audit_key

    return hmac.new(audit_key(), _DOMAIN, hashlib.sha256).digest()


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode("ascii").rstrip("=")


def issue_token(
    store, *, key: str | None = None, username: str | None = None, password: str | None = None,
    origin: str = "", now: Any = None,
) -> tuple[str, pd.Timestamp]:
    """Exchange a key, or a username and password, for a signed token; return it and its end.

    The token lasts ``TWIN_API_TOKEN_MINUTES``. A password login goes through
    :func:`twin.trust.authenticate` (throttled per name and client, audited); a token of a key
    is refused once the key is revoked.

    Raises
    ------
    KeyRefusedError
        For a refused key.
    twin.trust.LoginError
        For a wrong username or password (or a locked account).
    ValidationError
        If neither a key nor a username and password are given.
    """
    now = _now() if now is None else pd.Timestamp(now)
    if key:
        user, record = key_user(store, key)
        key_id: str | None = record.key_id
    elif username and password is not None:
        user, key_id = authenticate(store, username, password, origin=origin, now=now), None
    else:
        raise ValidationError("give an API key, or a username and a password")
    until = now + pd.Timedelta(minutes=settings.get("api_token_minutes"))
    payload = _b64(json.dumps({"u": user.username, "k": key_id, "exp": int(until.timestamp())},
                              separators=(",", ":")).encode())
    store.append_audit(user.username, "apitoken.issue", f"user:{user.username}",
                       {"key_id": key_id, "until": until.isoformat()}, origin)
    signature = _b64(hmac.new(_token_key(), payload.encode(), hashlib.sha256).digest())
    return f"{TOKEN_PREFIX}{payload}.{signature}", until


def token_user(store, token: Any, *, now: Any = None) -> tuple[User, ApiKey | None]:
    """Return the user a token acts as (as stored now) and its key (None: a password token).

    Raises
    ------
    KeyRefusedError
        If the token is malformed, forged, expired, its key revoked or its user disabled.
    """
    if not isinstance(token, str) or not token.startswith(TOKEN_PREFIX) or len(token) > 500:
        raise KeyRefusedError("invalid")
    payload, _, signature = token[len(TOKEN_PREFIX):].partition(".")
    wanted = _b64(hmac.new(_token_key(), payload.encode("ascii", "replace"),
                           hashlib.sha256).digest())
    if not hmac.compare_digest(wanted, signature):
        raise KeyRefusedError("invalid")
    data = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    now = _now() if now is None else pd.Timestamp(now)
    if now.timestamp() >= data["exp"]:
        raise KeyRefusedError("expired")
    record = None
    if data.get("k"):
        rows = store.read_rows(API_KEYS, key_id=data["k"])
        if rows.empty or not pd.isna(rows.iloc[0]["revoked_at"]):
            raise KeyRefusedError("revoked")
        record = _record(rows.iloc[0].to_dict())
    user = session_user(store, data["u"])
    if user is None:
        raise KeyRefusedError("disabled")
    return user, record


# -- rate limits ----------------------------------------------------------------------------------


class RateLimiter:
    """Token buckets by name, in this process: *rate* per minute, bursts up to a minute's worth.

    Thread-safe. :meth:`take` answers whether one more request may pass now, and if not, in how
    many seconds it may.
    """

    def __init__(self) -> None:
        self._buckets: dict[str, tuple[float, float]] = {}
        self._lock = threading.Lock()

    def take(self, name: str, rate_per_min: int, *, now: float | None = None) -> float:
        """Take one token from bucket *name*; return 0 if it passed, else seconds to wait."""
        now = time.monotonic() if now is None else now
        capacity, per_s = float(rate_per_min), rate_per_min / 60.0
        with self._lock:
            tokens, then = self._buckets.get(name, (capacity, now))
            tokens = min(capacity, tokens + (now - then) * per_s)
            if tokens >= 1.0:
                self._buckets[name] = (tokens - 1.0, now)
                return 0.0
            self._buckets[name] = (tokens, now)
            return (1.0 - tokens) / per_s

