"""Users and passwords: argon2 hashes, create and change users, login with lockout, sessions."""

from __future__ import annotations

import functools
import json
import logging
import os
import re
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np
import pandas as pd

from twin import settings
from twin.errors import DuplicateIdError, NotFoundError, PermissionDeniedError, ValidationError
from twin.schema import ROLES, USERS
from twin.trust.permissions import User
from twin.trust.privacy import layer_or_empty

LOGGER = logging.getLogger(__name__)



class LoginError(PermissionDeniedError):
    """A login failed (wrong name or password, disabled or locked account)."""


class AccountLockedError(LoginError):
    """Too many failed logins: the account is locked for a while."""


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
    )


def _user_row(store, username: str) -> dict[str, Any] | None:
    rows = store.read_rows(USERS, username=username)
    return None if rows.empty else rows.iloc[0].to_dict()


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
    user = User(username, role, display_name, tuple(grids), resident_id, building_code)
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
        "password_hash": hash_password(password), "disabled": False, "failed_logins": 0,
        "locked_until": None, "last_login_at": None, "created_at": now, "updated_at": now,
    })
    store.append_audit(actor, "user.create", f"user:{username}",
                       {"role": role, "grids": list(user.grids)}, origin)
    LOGGER.info("user %s created with role %s", username, role)
    return user


def get_user(store, username: str) -> User:
    """Return the user *username*. Raises NotFoundError if there is none."""
    row = _user_row(store, username)
    if row is None:
        raise NotFoundError(f"no user {username!r}; list them with `python scripts/users.py list`")
    return _user_from_row(row)


def list_users(store) -> pd.DataFrame:
    """Every user without password hashes (username, role, grids, disabled, last login …)."""
    return store.read_rows(USERS).drop(columns=["password_hash"])


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
    store.append_audit(actor, "user.update", f"user:{username}", changed, origin)
    return _user_from_row(row)


def authenticate(store, username: str, password: str, *, origin: str = "") -> User:
    """Check a password; count failures (stored) and lock the account after too many.

    Returns
    -------
    User
        The user, on success (the failure count is reset).

    Raises
    ------
    AccountLockedError
        If the account is locked (it unlocks by itself after ``TWIN_LOCKOUT_MIN`` minutes).
    LoginError
        For an unknown user, a wrong password or a disabled account (one message for all).
    """
    row = _user_row(store, str(username).strip()) if username else None
    now = _now()
    wrong = LoginError("wrong username or password (or the account is disabled); try again")
    if row is None:
        verify_password(None, password)  # same work as for a real user
        store.append_audit(str(username)[:64], "login.failed", f"user:{str(username)[:64]}",
                           {"reason": "unknown user"}, origin)
        raise wrong
    locked = row.get("locked_until")
    if locked is not None and not pd.isna(locked) and pd.Timestamp(locked) > now:
        minutes = int(np.ceil((pd.Timestamp(locked) - now).total_seconds() / 60))
        store.append_audit(row["username"], "login.locked", f"user:{row['username']}",
                           {"minutes_left": minutes}, origin)
        raise AccountLockedError(
            f"account {row['username']!r} is locked after too many failed logins; try again in "
            f"{minutes} min or ask an administrator to unlock it"
        )
    ok = verify_password(row.get("password_hash"), password)
    if not ok or bool(row.get("disabled")):
        failed = int(0 if pd.isna(row.get("failed_logins")) else row["failed_logins"]) + 1
        row["failed_logins"] = failed
        detail: dict[str, Any] = {"failed_logins": failed}
        if failed >= settings.get("max_failed_logins"):
            row["locked_until"] = now + pd.Timedelta(minutes=settings.get("lockout_min"))
            row["failed_logins"] = 0
            detail["locked_until"] = row["locked_until"].isoformat()
        row["updated_at"] = now
        _put_user(store, row)
        store.append_audit(row["username"], "login.failed", f"user:{row['username']}", detail,
                           origin)
        if "locked_until" in detail:
            raise AccountLockedError(
                f"too many failed logins: account {row['username']!r} is locked for "
                f"{settings.get('lockout_min'):g} min"
            )
        raise wrong
    row.update(failed_logins=0, locked_until=None, last_login_at=now, updated_at=now)
    if _hasher().check_needs_rehash(row["password_hash"]):
        row["password_hash"] = _hasher().hash(password)
    _put_user(store, row)
    store.append_audit(row["username"], "login", f"user:{row['username']}",
                       {"role": row["role"]}, origin)
    return _user_from_row(row)


def record_logout(store, user: User, *, origin: str = "") -> None:
    """Write a user's logout to the audit log."""
    store.append_audit(user.username, "logout", f"user:{user.username}", {}, origin)


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
