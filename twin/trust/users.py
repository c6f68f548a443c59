"""Users and passwords: argon2 hashes, create and change users, login with lockout, sessions."""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import os
import re
import uuid
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np
import pandas as pd

from twin import settings
from twin.errors import DuplicateIdError, NotFoundError, PermissionDeniedError, ValidationError
from twin.schema import LOGIN_ATTEMPTS, ORG_ROLES, ROLES, SESSIONS, USERS
from twin.store.base import layer_or_empty
from twin.timeutil import to_utc
from twin.trust.permissions import ANONYMOUS, User

LOGGER = logging.getLogger(__name__)



class LoginError(PermissionDeniedError):
    """A login failed (wrong name or password, disabled or locked account)."""


class AccountLockedError(LoginError):
    """Too many login attempts: refused without a check until the window ends."""

    def __init__(self, message: str, *, minutes: int = 0) -> None:
        super().__init__(message)
        #: minutes until logins are checked again
        self.minutes = minutes


def _hasher():
    from argon2 import PasswordHasher

    # a hash made with other parameters still verifies; it is re-hashed at the next login
    return PasswordHasher(time_cost=settings.get("argon2_time_cost"),
                          memory_cost=settings.get("argon2_memory_kib"))


MIN_PASSWORD_LENGTH = 8


def hash_password(password: str) -> str:
    """Return an argon2id hash of *password* (salted; never store or log the password itself).

    Raises
    ------
    ValidationError
        If the password is shorter than :data:`MIN_PASSWORD_LENGTH`.
    """
    if not isinstance(password, str) or len(password) < MIN_PASSWORD_LENGTH:
        raise ValidationError(
            f"a password needs at least {MIN_PASSWORD_LENGTH} characters; choose a longer one"
        )
    return _hasher().hash(password)


def verify_password(password_hash: str | None, password: str) -> bool:
    """Return True if *password* matches *password_hash* (same work for a missing hash)."""
    from argon2.exceptions import InvalidHashError, VerificationError

    hasher = _hasher()
    try:
        return hasher.verify(password_hash or _dummy_hash(), password) and bool(password_hash)
    except (VerificationError, InvalidHashError):
        return False


@functools.cache
def _dummy_hash() -> str:
    """Return a hash to verify when the user does not exist, taking as long as a real check."""
    return _hasher().hash(os.urandom(16).hex())


def _now() -> pd.Timestamp:
    return pd.Timestamp.now(tz="UTC")


def _grids(value: Any) -> tuple[str, ...]:
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return ()
    if isinstance(value, str):
        value = json.loads(value) if value.strip().startswith("[") else [value]
    return tuple(str(v) for v in value)


def _user_from_row(row: Mapping[str, Any]) -> User:
    def opt(v: Any) -> str | None:
        return None if v is None or (isinstance(v, float) and np.isnan(v)) or pd.isna(v) else str(v)

    return User(
        username=str(row["username"]),
        role=str(row["role"]),
        display_name=opt(row.get("display_name")) or "",
        grids=_grids(row.get("grids")),
        resident_id=opt(row.get("resident_id")),
        building_code=opt(row.get("building_code")),
        disabled=bool(row.get("disabled")) if not pd.isna(row.get("disabled")) else False,
        org_id=opt(row.get("org_id")),
    )


def _user_row(store, username: str) -> dict[str, Any] | None:
    return store.read_row(USERS, username=username)


def _put_user(store, row: dict[str, Any]) -> None:
    row = {k: v for k, v in row.items() if k in {c.name for c in USERS.columns}}
    if isinstance(row.get("grids"), (list, tuple)):
        row["grids"] = json.dumps(list(row["grids"]), ensure_ascii=False)
    store.put_rows(USERS, pd.DataFrame([row]), on_conflict="update")


def _check_username(username: str) -> str:
    username = str(username).strip()
    if not re.fullmatch(r"[\w.@\-]{2,64}", username):
        raise ValidationError(
            f"username {username!r} must be 2-64 letters, digits or . _ - @ (no spaces)"
        )
    return username


def create_user(
    store,
    username: str,
    password: str,
    role: str,
    *,
    display_name: str = "",
    grids: Iterable[str] = (),
    resident_id: str | None = None,
    building_code: str | None = None,
    actor: str = "system",
    origin: str = "",
    replace_existing: bool = False,
    org_id: str | None = None,
) -> User:
    """Create a user with an argon2 hash of *password*; the creation is audited.

    Raises
    ------
    ValidationError
        For a bad username, role or a short password, or a grid worker without grids.
    DuplicateIdError
        If the user exists (and *replace_existing* is false).
    """
    username = _check_username(username)
    user = User(username, role, display_name, tuple(grids), resident_id, building_code,
                org_id=org_id or None)
    if role in ORG_ROLES and not user.org_id:
        raise ValidationError(f"{role} {username!r} needs an organisation (--org ORG_ID from the "
                              "organisations layer)")
    if role == "grid_worker" and not user.grids:
        raise ValidationError(f"grid worker {username!r} needs --grids (responsibility grids)")
    if role == "resident" and not (resident_id or building_code):
        raise ValidationError(f"resident {username!r} needs a resident id or a building")
    if _user_row(store, username) is not None and not replace_existing:
        raise DuplicateIdError(
            f"user {username!r} exists; use set-password / set-role to change it"
        )
    now = _now()
    _put_user(store, {
        "username": username, "display_name": display_name, "role": role,
        "grids": list(user.grids), "resident_id": resident_id, "building_code": building_code,
        "org_id": user.org_id, "password_hash": hash_password(password), "disabled": False,
        "failed_logins": 0,
        "locked_until": None, "last_login_at": None, "created_at": now, "updated_at": now,
    })
    store.append_audit(actor, "user.create", f"user:{username}",
                       {"role": role, "grids": list(user.grids), "org_id": user.org_id}, origin)
    LOGGER.info("user %s created with role %s", username, role)
    return user


def get_user(store, username: str) -> User:
    """Return the user *username*. Raises NotFoundError if there is none."""
    row = _user_row(store, username)
    if row is None:
        raise NotFoundError(f"no user {username!r}; list them with `python scripts/users.py list`")
    return _user_from_row(row)


def list_users(store) -> pd.DataFrame:
    """Every user without password hashes (username, role, grids, disabled, last login …).

    ``failed_logins`` counts the failed password checks of the current login window (from any
    client); ``locked_until`` is the window's end when some client has used up the name's
    allowance (``scripts/users.py unlock NAME`` renews it).
    """
    users = store.read_rows(USERS).drop(columns=["password_hash"])
    bucket, until = _window(_now())
    rows = store.read_rows(LOGIN_ATTEMPTS, bucket=bucket, scope=("user", "unlock"))
    failed = rows.loc[rows["outcome"] == "failed"].groupby("username").size()
    users["failed_logins"] = users["username"].map(failed).fillna(0).astype("int64")
    limit = settings.get("max_failed_logins")
    pairs = rows.loc[rows["scope"] == "user", ["username", "client"]].drop_duplicates()
    locked = {  # a few rows per name and client of one window: an administrator's listing
        name for name, client in pairs.itertuples(index=False)
        if rows["id"].str.startswith(_name_prefix(rows, name, client, bucket) + ":").sum() >= limit
    }
    users["locked_until"] = pd.Series(until, index=users.index).where(
        users["username"].isin(locked))
    return users


def update_user(
    store,
    username: str,
    *,
    actor: str = "system",
    origin: str = "",
    password: str | None = None,
    role: str | None = None,
    grids: Iterable[str] | None = None,
    disabled: bool | None = None,
    unlock: bool = False,
) -> User:
    """Change a user's password, role, grids or disabled flag; every change is audited.

    Raises
    ------
    NotFoundError
        If there is no such user.
    ValidationError
        For an unknown role or a short password.
    """
    row = _user_row(store, username)
    if row is None:
        raise NotFoundError(f"no user {username!r}; create it with `scripts/users.py create`")
    changed: dict[str, Any] = {}
    if role is not None:
        if role not in ROLES:
            raise ValidationError(f"unknown role {role!r}; roles are {', '.join(ROLES)}")
        row["role"] = changed["role"] = role
    if grids is not None:
        row["grids"] = changed["grids"] = list(grids)
    if disabled is not None:
        row["disabled"] = changed["disabled"] = bool(disabled)
    if password is not None:
        row["password_hash"] = hash_password(password)
        changed["password"] = "changed"  # never the value
    if unlock or password is not None:
        row["failed_logins"], row["locked_until"] = 0, None
        changed["unlocked"] = True
    row["updated_at"] = _now()
    _put_user(store, row)
    if changed.get("unlocked"):
        unlock_logins(store, username)
    store.append_audit(actor, "user.update", f"user:{username}", changed, origin)
    if row["disabled"] or password is not None:  # a stolen or old login must not outlive this
        end_all_sessions_of(store, username)
    return _user_from_row(row)


# ---------------------------------------------------------------------------------------------
# Login throttling. Every attempt first claims a numbered slot in twin_login_attempts by an
# INSERT that the table's unique key lets only one caller win; a password is checked only by
# the holder of a slot, so however many attempts run in parallel, at most the limit per window
# are ever checked. Nothing is read and then written back: no count can be lost in a race.


def _clean(text: Any, limit: int) -> str:
    """Return *text* as storable text: no lone surrogates or NULs, at most *limit* characters."""
    text = str(text if text is not None else "")
    return text.encode("utf-8", "replace").decode("utf-8").replace("\0", "")[:limit]


def _window(now: pd.Timestamp) -> tuple[int, pd.Timestamp]:
    """Return the throttling window holding *now* (its number) and when it ends."""
    width = float(settings.get("lockout_min")) * 60
    bucket = int(now.timestamp() // width)
    return bucket, pd.Timestamp((bucket + 1) * width, unit="s", tz="UTC")


def _scope_key(*parts: Any) -> str:
    text = "\n".join(str(p) for p in parts)
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:32]


def _name_prefix(rows: pd.DataFrame, name: str, client: str, bucket: int) -> str:
    """Return the slot prefix of *name* from *client* in the window of *rows* (its attempts).

    The prefix is renewed by each success from that client and by each unlock.
    """
    mine = rows["username"] == name
    renewals = int((mine & (rows["outcome"] == "ok") & (rows["client"] == client)).sum()
                   + (mine & (rows["outcome"] == "unlock")).sum())
    return f"{_scope_key('user', name, client, bucket)}:{renewals}"


def _claim(store, prefix: str, limit: int, taken: Iterable[str], row: dict[str, Any]) -> int | None:
    """Claim the first free slot ``<prefix>:<k>`` (k ≤ *limit*); return k, or None when full.

    *taken* are slot ids already seen stored: they are skipped (rows are never removed within
    a window), every other slot is tried by an INSERT that only one caller can win.
    """
    seen = {int(i.rsplit(":", 1)[1]) for i in taken
            if i.startswith(prefix + ":") and i.rsplit(":", 1)[1].isdigit()}
    for k in range(1, limit + 1):
        if k in seen:
            continue
        claim = {**row, "id": f"{prefix}:{k}", "slot": k}
        if store.put_rows(LOGIN_ATTEMPTS, pd.DataFrame([claim]), on_conflict="ignore"):
            return k
    return None


_NAME_LOCKED = ("too many failed logins for {name!r} from this place: further logins are locked "
                "for {minutes} min; try again then or ask an administrator to unlock it")
_CLIENT_LOCKED = ("too many logins from this place: logins from here are locked for {minutes} "
                  "min; try again then")


def _locked(message: str, name: str, until: pd.Timestamp, now: pd.Timestamp) -> AccountLockedError:
    minutes = max(1, int(np.ceil((until - now).total_seconds() / 60)))
    return AccountLockedError(message.format(name=name, minutes=minutes), minutes=minutes)


def _refuse(store, prefix: str, seen: Iterable[str], row: dict[str, Any], until: pd.Timestamp,
            now: pd.Timestamp, message: str, detail: dict[str, Any]) -> AccountLockedError:
    """Return the error for a refused attempt; audit only the first refusal of a window.

    The first refusal stores a marker (the INSERT only one caller wins); once the marker is
    among the *seen* rows, a refusal writes nothing at all.
    """
    marker = {**row, "id": f"{prefix}:refused", "scope": "refused", "slot": 0,
              "outcome": "refused"}
    if marker["id"] not in set(seen) and store.put_rows(
            LOGIN_ATTEMPTS, pd.DataFrame([marker]), on_conflict="ignore"):
        store.append_audit(row["username"], "login.locked", f"user:{row['username']}",
                           {**detail, "until": until.isoformat()}, row["client"])
    return _locked(message, row["username"], until, now)


def authenticate(
    store, username: str, password: str, *, origin: str = "", now: Any = None
) -> User:
    """Check a password, throttled per name and client and per client, race-free.

    In each window of ``TWIN_LOCKOUT_MIN`` minutes a password is checked at most
    ``TWIN_MAX_FAILED_LOGINS`` times for one name from one client (*origin*), and at most
    ``TWIN_MAX_LOGINS_PER_CLIENT`` times for all names from one client; attempts past either
    limit are refused without checking. A successful login, or an administrator's
    ``update_user(..., unlock=True)``, gives the name a fresh allowance. Unknown and known
    names get the same answers after the same work. Each checked attempt is audited; of the
    refused ones only the first per window.

    Parameters
    ----------
    store
        The store.
    username, password
        As typed.
    origin
        The client: ``web:<ip>``, a script … (throttling and the audit log).
    now
        The time of the attempt (for tests; default: now).

    Returns
    -------
    User
        The user, on success.

    Raises
    ------
    AccountLockedError
        When a limit is reached (with ``minutes`` until the window ends); the attempt that
        reaches the name's limit with a wrong password raises it too.
    LoginError
        For an unknown name, a wrong password or a disabled account (one message for all).
    """
    now = _now() if now is None else to_utc(now)
    name = _clean(str(username).strip() if username else "", 64)
    client = _clean(origin, 128)
    bucket, until = _window(now)
    per_name, per_client = settings.get("max_failed_logins"), settings.get("max_logins_per_client")
    base = {"username": name, "client": client, "bucket": bucket, "at": now}
    # 1. the client's allowance, whatever the name (a client trying many names is slowed)
    client_key = _scope_key("client", client, bucket)
    taken = store.read_rows(LOGIN_ATTEMPTS, client=client, bucket=bucket)["id"].tolist()
    if _claim(store, client_key, per_client, taken,
              {**base, "scope": "client", "outcome": "claimed"}) is None:
        raise _refuse(store, client_key, taken, base, until, now, _CLIENT_LOCKED,
                      {"limit": "client", "max": per_client})
    # 2. the name's allowance from this client; renewed by a success here or an unlock
    mine = store.read_rows(LOGIN_ATTEMPTS, username=name, bucket=bucket)
    user_key = _name_prefix(mine, name, client, bucket)
    row = {**base, "scope": "user", "outcome": "pending"}
    slot = _claim(store, user_key, per_name, mine["id"], row)
    if slot is None:
        raise _refuse(store, user_key, mine["id"].tolist(), base, until, now, _NAME_LOCKED,
                      {"limit": "name", "max": per_name})
    # 3. the check itself: the same work whether or not the name exists
    stored = _user_row(store, name) if name else None
    ok = verify_password(None if stored is None else stored.get("password_hash"), password)
    reason = ("unknown user" if stored is None else "disabled" if bool(stored.get("disabled"))
              else None if ok else "wrong password")
    claimed = {**row, "id": f"{user_key}:{slot}", "slot": slot}
    if reason is not None:
        store.put_rows(LOGIN_ATTEMPTS, pd.DataFrame([{**claimed, "outcome": "failed"}]),
                       on_conflict="update")
        detail: dict[str, Any] = {"reason": reason, "attempt": slot, "of": per_name}
        last = slot >= per_name
        if last:
            detail["locked_until"] = until.isoformat()
        store.append_audit(name, "login.failed", f"user:{name}", detail, client)
        if last:
            raise _locked(_NAME_LOCKED, name, until, now)
        raise LoginError("wrong username or password (or the account is disabled); try again")
    store.put_rows(LOGIN_ATTEMPTS, pd.DataFrame([{**claimed, "outcome": "ok"}]),
                   on_conflict="update")
    stored.update(last_login_at=now, updated_at=now)
    if _hasher().check_needs_rehash(stored["password_hash"]):
        stored["password_hash"] = _hasher().hash(password)
    _put_user(store, stored)
    store.append_audit(stored["username"], "login", f"user:{stored['username']}",
                       {"role": stored["role"]}, client)
    return _user_from_row(stored)


def unlock_logins(store, username: str, *, now: Any = None) -> None:
    """Give *username* a fresh login allowance from every client in the current window."""
    now = _now() if now is None else pd.Timestamp(now)
    name = _clean(username, 64)
    bucket, _ = _window(now)
    row = {"id": f"{_scope_key('unlock', name, bucket)}:{uuid.uuid4().hex}", "scope": "unlock",
           "username": name, "client": "", "bucket": bucket, "slot": 0, "at": now,
           "outcome": "unlock"}
    store.put_rows(LOGIN_ATTEMPTS, pd.DataFrame([row]), on_conflict="ignore")


def record_logout(store, user: User, *, origin: str = "") -> None:
    """Write a user's logout to the audit log."""
    store.append_audit(user.username, "logout", f"user:{user.username}", {}, origin)


def revoke_sessions(store, rows: pd.DataFrame, now: pd.Timestamp) -> int:
    """Mark the live sessions among *rows* (of ``twin_sessions``) revoked at *now*; how many."""
    live = rows[rows["revoked_at"].isna()].copy()
    if live.empty:
        return 0
    live["revoked_at"] = now
    return store.put_rows(SESSIONS, live, on_conflict="update")


def end_all_sessions_of(store, username: str, *, now: Any = None) -> int:
    """Revoke every live session of *username* (disabled, password changed); return how many.

    Here, with the users, because changing a user ends their sessions (twin.trust.sessions
    opens and resumes them).
    """
    rows = store.read_rows(SESSIONS, username=str(username))
    ended = revoke_sessions(store, rows, _now() if now is None else pd.Timestamp(now))
    if ended:
        LOGGER.info("%d session(s) of %s ended", ended, username)
    return ended


def session_user(store, username: str | None) -> User | None:
    """Return *username* as the store holds them now, for a session's next request.

    A session keeps only the name; its rights come from here on every request, so a user
    disabled or deleted since login is out (None), and a changed role or grid takes effect
    at once.
    """
    if not username:
        return None
    row = _user_row(store, str(username))
    if row is None:
        return None
    user = _user_from_row(row)
    return None if user.disabled else user


def resolve(store, user: User | None) -> User:
    """Return who *user* is according to the store now: the only user the library acts for.

    Every scoped reader and step of :mod:`twin.trust` passes the user it was given through
    here, so a ``User`` made up by a caller carries no rights: its name must be a stored,
    enabled user, and role, grids, resident and building are taken from the store, never
    from the object. None and the public stay :data:`~twin.trust.permissions.ANONYMOUS`.

    Raises
    ------
    PermissionDeniedError
        If the name is not a stored user, or the user is disabled.
    """
    if user is None or user.is_anonymous:
        return ANONYMOUS
    current = session_user(store, user.username)
    if current is None:
        raise PermissionDeniedError(
            f"{user.username!r} is not an enabled user of this twin; log in "
            "(users come from twin.trust.authenticate, not from a User made up by a caller)"
        )
    return current


def run_as(store, username: str | None) -> User | None:
    """Return the stored user a command runs as, or None (the public) when none is named.

    Raises
    ------
    PermissionDeniedError
        If *username* is not an enabled user of this store.
    """
    if not username:
        return None
    user = session_user(store, username)
    if user is None:
        raise PermissionDeniedError(
            f"no enabled user {username!r} in this store; list them with `gridtwin users list` "
            "or leave --user out to run as the public"
        )
    return user


def session_expired(
    last_activity: Any, now: Any = None, timeout_min: float | None = None
) -> bool:
    """Return True if the session timeout passed since *last_activity* (None: expired)."""
    if last_activity is None:
        return True
    now = _now() if now is None else pd.Timestamp(now)
    timeout = timeout_min if timeout_min is not None else settings.get("session_timeout_min")
    return now - pd.Timestamp(last_activity) > pd.Timedelta(minutes=timeout)



# ---------------------------------------------------------------------------------------------
# Demo users (documented in docs/trust.md; never use these passwords outside the demo)

#: username → (role, password) of the demo: one user per role, named after it without "_"
#: (``gridworker`` / ``gridworker-demo`` for ``grid_worker``).
DEMO_USERS: dict[str, tuple[str, str]] = {
    role.replace("_", ""): (role, role.replace("_", "") + "-demo") for role in ROLES
    if role not in ORG_ROLES  # an organisation's staff belong to one: twin.orgdemo makes them
}


def create_demo_users(store, *, actor: str = "make_demo", origin: str = "") -> list[User]:
    """Create (or reset) one user per role with the documented demo passwords.

    The grid worker gets the first responsibility grid of the stored grid cells (and that
    grid's worker name); the resident is the first resident living in a building of that grid.
    """
    cells = layer_or_empty(store, "grid_cells")
    grid = display = None
    if not cells.empty:
        first = cells.sort_values("grid_code").iloc[0]
        grid, display = str(first["resp_grid_id"]), first.get("grid_worker")
    resident_id = building = None
    residents = layer_or_empty(store, "residents")
    buildings = layer_or_empty(store, "buildings")
    if not residents.empty:
        candidates = residents
        if grid is not None and not buildings.empty and "resp_grid_id" in buildings:
            mine = buildings.loc[buildings["resp_grid_id"] == grid, "building_code"]
            inside = residents.loc[residents["building_code"].isin(set(mine))]
            candidates = inside if not inside.empty else residents
        row = candidates.sort_values("resident_id").iloc[0]
        resident_id, building = str(row["resident_id"]), str(row["building_code"])
    users = []
    for username, (role, password) in DEMO_USERS.items():
        extra: dict[str, Any] = {}
        if role == "grid_worker":
            extra = {"grids": [grid or "R01"],
                     "display_name": str(display) if display and not pd.isna(display) else ""}
        if role == "resident":
            extra = {"resident_id": resident_id or "demo-resident", "building_code": building}
        users.append(create_user(store, username, password, role, actor=actor, origin=origin,
                                 replace_existing=True, **extra))
    return users
