"""Login sessions that survive a reload: signed, expiring, revocable, held in the store.

A session is a random id the browser keeps in an HttpOnly, SameSite=Strict cookie as
``<id>.<signature>``. The store keeps only the id's SHA-256 (``twin_sessions``), so a copy of
the table opens nothing; the signature (HMAC-SHA256 under a key derived from the audit key)
lets a forged or truncated value be refused before the store is asked. A session resumes only
while it is signed, stored, not revoked, younger than ``TWIN_SESSION_MAX_HOURS``, used within
the last ``TWIN_SESSION_TIMEOUT_MIN`` minutes, and its user is still enabled; its rights are
read from the store on every resume, never from the session.

Setting the cookie needs an HTTP response, not a script run: a login issues a **one-time code**
(:func:`issue_code`) that the page exchanges, by a same-origin POST, for the ``Set-Cookie``
(``ui/serve.py`` adds that route to Streamlit's server). The code lives in this process only,
for a minute, and can be redeemed once; the session id never reaches the page's JavaScript.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import secrets
import threading
import time
from typing import Any

import pandas as pd

from twin import settings
from twin.schema import SESSION_SEEN, SESSIONS
from twin.trust.permissions import User
from twin.trust.users import revoke_sessions, session_user

LOGGER = logging.getLogger(__name__)

#: Name of the cookie the browser keeps the session in.
COOKIE_NAME = "twin_session"
#: Seconds a one-time code may wait to be exchanged for the cookie.
CODE_TTL_S = 60.0
#: Seconds between two writes of a session's last use (the idle clock is this coarse).
TOUCH_EVERY_S = 30.0
_DOMAIN = b"gridtwin-session-v1"


def _now() -> pd.Timestamp:
    return pd.Timestamp.now(tz="UTC")


def _key() -> bytes:
    """Return the signing key: derived from the audit key (no second secret to keep)."""
    from twin.auditchain import audit_key

    return hmac.new(audit_key(), _DOMAIN, hashlib.sha256).digest()


def _sign(session_id: str) -> str:
    return hmac.new(_key(), session_id.encode("ascii"), hashlib.sha256).hexdigest()[:32]


def _hash(session_id: str) -> str:
    return hashlib.sha256(session_id.encode("ascii")).hexdigest()


def _split(token: Any) -> str | None:
    """Return the id of a well-formed, correctly signed *token*, else None."""
    if not isinstance(token, str) or token.count(".") != 1 or len(token) > 200:
        return None
    session_id, signature = token.split(".")
    if not session_id or not session_id.isascii() or not signature.isascii():
        return None
    return session_id if hmac.compare_digest(_sign(session_id), signature) else None


def _row(store, session_id: str) -> dict[str, Any] | None:
    rows = store.read_rows(SESSIONS, id_hash=_hash(session_id))
    return None if rows.empty else rows.iloc[0].to_dict()


def _seen(store, id_hash: str) -> pd.Timestamp | None:
    rows = store.read_rows(SESSION_SEEN, id_hash=id_hash)
    if rows.empty or pd.isna(rows.iloc[0]["last_seen_at"]):
        return None
    return pd.Timestamp(rows.iloc[0]["last_seen_at"])


def _touch(store, id_hash: str, now: pd.Timestamp) -> None:
    store.put_rows(SESSION_SEEN, pd.DataFrame([{"id_hash": id_hash, "last_seen_at": now}]),
                   on_conflict="update")


def open_session(store, user: User, *, origin: str = "", now: Any = None) -> str:
    """Open a session for *user* (just authenticated) and return the cookie value.

    Parameters
    ----------
    store
        The twin's store.
    user
        A user returned by :func:`twin.trust.authenticate` (or an OIDC login).
    origin
        Where the login came from (``web:<ip>``), kept with the session.
    now
        The time of opening (tests); default now.

    Returns
    -------
    str
        ``<id>.<signature>``: what the browser keeps in the cookie and nothing else does.
    """
    now = _now() if now is None else pd.Timestamp(now)
    session_id = secrets.token_urlsafe(32)
    id_hash = _hash(session_id)
    store.put_rows(SESSIONS, pd.DataFrame([{
        "id_hash": id_hash, "username": user.username, "created_at": now,
        "expires_at": now + pd.Timedelta(hours=settings.get("session_max_hours")),
        "revoked_at": None, "origin": str(origin)[:200],
    }]))
    _touch(store, id_hash, now)
    LOGGER.info("session opened for %s", user.username)
    return f"{session_id}.{_sign(session_id)}"


def session_problem(store, token: Any, *, now: Any = None) -> str | None:
    """Return why *token* does not resume, or None when it does.

    The reasons: ``invalid``, ``revoked``, ``expired``, ``idle``, ``disabled``. Pages call
    :func:`resume_session`; this one is for tests and for telling the user why.
    """
    session_id = _split(token)
    if session_id is None:
        return "invalid"
    row = _row(store, session_id)
    if row is None:
        return "invalid"
    if not pd.isna(row["revoked_at"]):
        return "revoked"
    now = _now() if now is None else pd.Timestamp(now)
    if pd.isna(row["expires_at"]) or now >= pd.Timestamp(row["expires_at"]):
        return "expired"
    seen = _seen(store, row["id_hash"])
    if seen is None or now - seen > pd.Timedelta(minutes=settings.get("session_timeout_min")):
        return "idle"
    if session_user(store, row["username"]) is None:
        return "disabled"
    return None


def resume_session(
    store, token: Any, *, origin: str | None = None, now: Any = None
) -> User | None:
    """Return the user of the session *token* names, as the store holds them now, or None.

    Parameters
    ----------
    store
        The twin's store.
    token
        The cookie value :func:`open_session` returned (anything else is refused).
    origin
        Given when a new page load resumes the session (``web:<ip>``): the resume is then
        written to the audit log as ``session.resume``; None for the requests of a page
        already open (not audited, as a logged-in click is not).
    now
        The time of the request (tests); default now.

    Returns
    -------
    User or None
        None when the value is malformed or its signature wrong, the session unknown,
        revoked, past its absolute end or idle longer than the timeout, or the user disabled
        or gone. A session that resumes counts as used (written at most every
        :data:`TOUCH_EVERY_S` seconds).
    """
    problem = session_problem(store, token, now=now)
    if problem is not None:
        LOGGER.info("session refused: %s", problem)
        return None
    now = _now() if now is None else pd.Timestamp(now)
    row = _row(store, _split(token))  # type: ignore[arg-type] - checked above
    seen = _seen(store, row["id_hash"])
    if seen is None or (now - seen).total_seconds() >= TOUCH_EVERY_S:
        _touch(store, row["id_hash"], now)
    user = session_user(store, row["username"])
    if user is not None and origin is not None:
        store.append_audit(user.username, "session.resume", f"user:{user.username}",
                           {"role": user.role}, origin)
    return user


def end_session(store, token: Any, *, now: Any = None) -> str | None:
    """Revoke the session *token* names (logout); return its user's name, or None if unknown.

    Revocation is stored: the same cookie value replayed later, from any browser, is refused.
    """
    session_id = _split(token)
    if session_id is None:
        return None
    rows = store.read_rows(SESSIONS, id_hash=_hash(session_id))
    if rows.empty:
        return None
    revoke_sessions(store, rows, _now() if now is None else pd.Timestamp(now))
    return str(rows.iloc[0]["username"])


# -- one-time codes: the bridge from a script run to the HTTP response that sets the cookie -----

_CODES: dict[str, tuple[float, str]] = {}
_CODES_LOCK = threading.Lock()


def issue_code(token: str, *, ttl_s: float = CODE_TTL_S) -> str:
    """Return a one-time code that :func:`redeem_code` turns into *token* once, within *ttl_s*."""
    code = secrets.token_urlsafe(24)
    with _CODES_LOCK:
        now = time.monotonic()
        for stale in [c for c, (until, _) in _CODES.items() if until < now]:
            del _CODES[stale]
        _CODES[code] = (now + ttl_s, token)
    return code


def redeem_code(code: Any) -> str | None:
    """Return the token behind *code* if known and fresh (then it is gone), else None."""
    if not isinstance(code, str):
        return None
    with _CODES_LOCK:
        entry = _CODES.pop(code, None)
    if entry is None or entry[0] < time.monotonic():
        return None
    return entry[1]


def code_pending(code: Any) -> bool:
    """Return True while *code* waits to be redeemed (issued, fresh, not yet exchanged)."""
    with _CODES_LOCK:
        entry = _CODES.get(code) if isinstance(code, str) else None
    return entry is not None and entry[0] >= time.monotonic()
