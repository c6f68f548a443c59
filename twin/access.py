"""Who may see and do what: users, roles and permissions, masking, login and audit."""

from __future__ import annotations

import functools
import html
import io
import json
import logging
import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import pandas as pd

from twin import settings
from twin.cases import TRANSITIONS_BY_ACTION
from twin.errors import NotFoundError, PermissionDeniedError, TwinError, ValidationError
from twin.schema import ROLES, USERS

LOGGER = logging.getLogger(__name__)

# ---------------------------------------------------------------------------------------------
# Roles and permissions, declared once

#: Everyone who is not logged in (the public transparency page). The roles of users are
#: declared once, in :data:`twin.schema.ROLES`.
ANONYMOUS_ROLE = "public"
STAFF = tuple(r for r in ROLES if r != "resident")
EVERYONE = (*ROLES, ANONYMOUS_ROLE)

#: permission → the roles that hold it. Pages are ``page.<name>``; the UI and the library ask
#: :func:`can` / :func:`require`; docs/trust.md is written from this table.
PERMISSIONS: dict[str, tuple[str, ...]] = {
    "page.public": EVERYONE,
    "page.map": STAFF,
    "page.cases": ("admin", "official", "dispatcher", "grid_worker"),
    "page.kpi": ("admin", "official", "dispatcher", "planner"),
    "page.queries": ("admin", "official", "planner", "data_staff"),
    "page.layers": ("admin", "data_staff"),
    "page.participation": ROLES,
    "page.audit": ("admin",),
    "page.users": ("admin",),
    "users.manage": ("admin",),
    "audit.read": ("admin",),
    "layers.load": ("admin", "data_staff"),
    "layers.rollback": ("admin", "data_staff"),
    "participation.publish": ("admin", "official", "grid_worker"),
    "participation.answer": ("resident",),
    "participation.results": STAFF,
    "cases.report": TRANSITIONS_BY_ACTION["collect"].roles,
    "data.export_own": ("resident",),
    "retention.run": ("admin",),
}

#: How each role sees personal data (columns flagged ``personal=True``):
#: ``grids`` full values, only of residents of buildings in the user's grids;
#: ``self`` full values of the user's own record only; ``masked`` every row, identifiers masked;
#: ``counts`` numbers per building only; ``none`` nothing.
PERSONAL_ACCESS: dict[str, str] = {
    "grid_worker": "grids",
    "resident": "self",
    "admin": "masked",
    "data_staff": "masked",
    "official": "counts",
    "dispatcher": "counts",
    "planner": "counts",
    ANONYMOUS_ROLE: "none",
}


@dataclass(frozen=True)
class User:
    """A logged-in person (or :data:`ANONYMOUS`): who, in which role, where they work or live."""

    username: str
    role: str
    display_name: str = ""
    grids: tuple[str, ...] = ()  # responsibility grids (or unit grid codes) of a grid worker
    resident_id: str | None = None  # a resident's own record in the residents layer
    building_code: str | None = None  # a resident's building (scope of notices and polls)
    disabled: bool = False

    def __post_init__(self) -> None:
        if self.role not in EVERYONE:
            raise ValidationError(f"unknown role {self.role!r}; roles are {', '.join(ROLES)}")

    @property
    def name(self) -> str:
        return self.display_name or self.username

    @property
    def is_anonymous(self) -> bool:
        return self.role == ANONYMOUS_ROLE


ANONYMOUS = User("anonymous", ANONYMOUS_ROLE)


def can(user: User | None, permission: str) -> bool:
    """Return True if *user* (None: not logged in) holds *permission*.

    Raises
    ------
    ValidationError
        If the permission is not declared in :data:`PERMISSIONS`.
    """
    if permission not in PERMISSIONS:
        raise ValidationError(
            f"unknown permission {permission!r}; declared: {', '.join(sorted(PERMISSIONS))}"
        )
    user = user or ANONYMOUS
    return not user.disabled and user.role in PERMISSIONS[permission]


def require(user: User | None, permission: str) -> User:
    """Return *user* if they hold *permission*, else raise PermissionDeniedError saying who may."""
    if not can(user, permission):
        role = (user or ANONYMOUS).role
        raise PermissionDeniedError(
            f"role {role!r} may not {permission}; only {', '.join(PERMISSIONS[permission])} may. "
            "Log in as one of them or ask an administrator."
        )
    return user  # type: ignore[return-value]


def pages_for(user: User | None) -> list[str]:
    """Return the page names (``page.<name>``) *user* may open, in declaration order."""
    return [p.split(".", 1)[1] for p in PERMISSIONS if p.startswith("page.") and can(user, p)]


# ---------------------------------------------------------------------------------------------
# Escaping and masking (pure, vectorised)

_MARKDOWN_SPECIAL = re.compile(r"([\\`*_{}\[\]()#+\-.!|<>~$:&\"'=/^%@])")


def safe_text(value: Any) -> str:
    """*value* as Streamlit markdown that shows literally: no HTML, links, images or directives.

    Every ASCII punctuation character markdown gives a meaning is backslash-escaped (CommonMark
    shows an escaped character as itself), so ``<img onerror=…>`` stays text.
    """
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return ""
    return _MARKDOWN_SPECIAL.sub(r"\\\1", str(value)).replace("\n", "  \n")


def html_text(value: Any) -> str:
    """*value* escaped for HTML (for the rare ``unsafe_allow_html`` block and tooltips)."""
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return ""
    return html.escape(str(value), quote=True)


def _text(series: pd.Series) -> pd.Series:
    return series.astype("string")


def mask_phone(series: pd.Series) -> pd.Series:
    """``13812345678`` → ``138****5678``; short numbers keep only the last two digits."""
    s = _text(series).str.replace(r"\s", "", regex=True)
    long = s.str.len() >= 7
    out = (s.str[:3] + "****" + s.str[-4:]).where(long, "****" + s.str[-2:])
    return out.astype(object).where(series.notna() & (s.str.len() > 0), None)


def mask_id_number(series: pd.Series) -> pd.Series:
    """``450311199001011234`` → ``4503**********1234``: the middle hidden, the length kept."""
    s = _text(series).str.strip()
    n = s.str.len().fillna(0).astype(int)
    stars = pd.Series(["*" * max(k - 8, 2) for k in n.tolist()], index=s.index, dtype="string")
    out = (s.str[:4] + stars + s.str[-4:]).where(n > 8, "*" * 6)
    return out.astype(object).where(series.notna() & (n > 0), None)


def mask_name(series: pd.Series) -> pd.Series:
    """``张三`` → ``张*``, ``欧阳娜娜`` → ``欧***``: the first character kept."""
    s = _text(series).str.strip()
    n = s.str.len().fillna(0).astype(int)
    stars = pd.Series(["*" * max(k - 1, 1) for k in n.tolist()], index=s.index, dtype="string")
    out = s.str[:1] + stars
    return out.astype(object).where(series.notna() & (n > 0), None)


def mask_other(series: pd.Series) -> pd.Series:
    """Any other personal value: ``***`` when present."""
    return pd.Series(np.where(series.notna(), "***", None), index=series.index, dtype=object)


def _masker(column: str):
    low = column.lower()
    if "phone" in low or "tel" in low or "mobile" in low:
        return mask_phone
    if "id_number" in low or "idcard" in low or "id_card" in low:
        return mask_id_number
    if low == "name" or low.endswith("_name") or low.startswith("name"):
        return mask_name
    return mask_other


def mask_frame(frame: pd.DataFrame, columns: Iterable[str]) -> pd.DataFrame:
    """Return a copy of *frame* with its personal *columns* masked (phone, ID, name, others)."""
    out = frame.copy()
    for column in columns:
        if column in out:
            out[column] = _masker(column)(out[column])
    return out


def round_location(lon: Any, lat: Any, step: float | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Snap coordinates to the centres of a *step*-degree grid (default ~100 m) for public views."""
    step = float(step or settings.get("public_round_deg"))
    lon = np.asarray(lon, dtype=float)
    lat = np.asarray(lat, dtype=float)
    return (np.floor(lon / step) * step + step / 2).round(7), (
        np.floor(lat / step) * step + step / 2
    ).round(7)


# ---------------------------------------------------------------------------------------------
# Passwords, users, login


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
    from twin.errors import DuplicateIdError

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
# Personal data through the library


def _scope_grids(user: User, grid_cells: pd.DataFrame | None) -> set[str]:
    """Return the unit grids of a grid worker: responsibility grids expanded, codes as given."""
    grids = set(user.grids)
    if grid_cells is None or grid_cells.empty:
        return grids
    inside = grid_cells["resp_grid_id"].isin(grids) | grid_cells["grid_code"].isin(grids)
    return set(grid_cells.loc[inside, "grid_code"]) | grids


def buildings_in_scope(user: User, buildings: pd.DataFrame,
                       grid_cells: pd.DataFrame | None = None) -> pd.Series:
    """Boolean mask of the *buildings* in a grid worker's grids (unit or responsibility)."""
    grids = _scope_grids(user, grid_cells)
    mask = pd.Series(False, index=buildings.index)
    for column in ("grid_code", "resp_grid_id"):
        if column in buildings:
            mask |= buildings[column].isin(grids)
    return mask


def layer_or_empty(store, name: str) -> pd.DataFrame:
    """Return the current layer *name*, or an empty frame when it was never loaded."""
    from twin.errors import LayerNotFoundError

    try:
        return store.read_layer(name)
    except LayerNotFoundError:
        return pd.DataFrame()


def read_residents(
    store,
    user: User | None,
    *,
    building_code: str | None = None,
    origin: str = "",
    buildings: pd.DataFrame | None = None,
    grid_cells: pd.DataFrame | None = None,
) -> pd.DataFrame:
    """Return the residents *user* may see, as their role allows (see :data:`PERSONAL_ACCESS`).

    Grid workers get full values of residents of buildings in their grids only; residents their
    own record; admin and data staff every row with identifiers masked; officials, dispatchers and
    planners counts per building (``building_code``, ``households``, ``residents``); the public
    nothing. Every call that returns personal values is written to the audit log.

    Parameters
    ----------
    store
        The store.
    user
        Who reads (None: not logged in).
    building_code
        Only this building.
    origin
        Where the request came from (host, script) for the audit log.
    buildings, grid_cells
        The layers (read from the store when not given).

    Raises
    ------
    PermissionDeniedError
        For the public, and for a grid worker asking for a building outside their grids.
    """
    from twin.layers import get_layer

    user = user or ANONYMOUS
    mode = PERSONAL_ACCESS.get(user.role, "none")
    if user.disabled or mode == "none":
        raise PermissionDeniedError(
            f"role {user.role!r} may not read residents; log in as staff or as a resident"
        )
    spec = get_layer("residents")
    residents = layer_or_empty(store, "residents")
    if residents.empty:
        residents = pd.DataFrame(columns=spec.column_names)
    if building_code is not None:
        residents = residents.loc[residents["building_code"] == building_code]
    if mode == "counts":
        counts = residents.groupby("building_code").agg(
            households=("resident_id", "size"), residents=("household_size", "sum")
        ).reset_index()
        counts["residents"] = counts["residents"].astype("int64")
        return counts
    if mode == "grids":
        if buildings is None:
            buildings = layer_or_empty(store, "buildings")
        if grid_cells is None:
            grid_cells = layer_or_empty(store, "grid_cells")
        mine = set(buildings.loc[buildings_in_scope(user, buildings, grid_cells),
                                 "building_code"]) if not buildings.empty else set()
        if building_code is not None and building_code not in mine:
            store.append_audit(user.username, "residents.denied", f"building:{building_code}",
                               {"role": user.role, "grids": list(user.grids)}, origin)
            raise PermissionDeniedError(
                f"building {building_code!r} is not in the grids of {user.username!r} "
                f"({', '.join(user.grids) or 'none'}); ask its grid worker"
            )
        out = residents.loc[residents["building_code"].isin(mine)]
    elif mode == "self":
        out = residents.loc[residents["resident_id"] == (user.resident_id or "\0")]
    else:  # masked
        out = mask_frame(residents, spec.personal_columns)
    out = pd.DataFrame(out).reset_index(drop=True)
    store.append_audit(
        user.username, "residents.read",
        f"building:{building_code}" if building_code else "residents",
        {"role": user.role, "mode": mode, "rows": len(out),
         "resident_ids": out["resident_id"].astype(str).tolist()[:200] if mode != "masked" else []},
        origin,
    )
    return out


def read_layer(store, user: User | None, name: str, *, origin: str = "") -> pd.DataFrame:
    """Layer *name* as *user* may see it: personal columns masked unless their role needs them.

    The residents layer goes through :func:`read_residents`. Other layers with personal columns
    (the grid workers' phones of ``grid_cells``) show full values to admin and data staff only.
    """
    from twin.layers import get_layer

    if name == "residents":
        return read_residents(store, user, origin=origin)
    user = user or ANONYMOUS
    frame = store.read_layer(name)
    personal = get_layer(name).personal_columns
    if not personal:
        return frame
    if user.role in ("admin", "data_staff"):
        store.append_audit(user.username, "layer.read_personal", f"layer:{name}",
                           {"columns": list(personal), "rows": len(frame)}, origin)
        return frame
    if user.is_anonymous:
        return frame.drop(columns=list(personal))
    return mask_frame(frame, personal)


def unit_grids_of(user: User, grid_cells: pd.DataFrame | None) -> set[str]:
    """Return the unit grid codes a grid worker is responsible for (their grids expanded)."""
    return _scope_grids(user, grid_cells)


def transition_case(
    store,
    user: User,
    case_id: str,
    action: str,
    *,
    origin: str = "",
    grid_cells: pd.DataFrame | None = None,
    **kwargs: Any,
) -> dict[str, Any]:
    """Move a case one step as *user* (role and grids from the user) and audit the step.

    See :func:`twin.cases.transition` for the actions and their fields.

    Raises
    ------
    PermissionDeniedError
        If the role does not own the step or the case is outside a grid worker's grids.
    """
    from twin import cases

    if user.is_anonymous or user.disabled:
        raise PermissionDeniedError("log in to work on cases")
    grids = unit_grids_of(user, grid_cells) if user.role == "grid_worker" else None
    try:
        case = cases.transition(store, case_id, action, actor=user.username, role=user.role,
                                actor_grids=grids, **kwargs)
    except PermissionDeniedError as exc:
        store.append_audit(user.username, "case.denied", f"case:{case_id}",
                           {"action": action, "role": user.role, "reason": str(exc)}, origin)
        raise
    store.append_audit(user.username, f"case.{action}", f"case:{case_id}",
                       {"role": user.role, "status": case["status"],
                        "version": int(case["version"])}, origin)
    return case


def report_case(store, user: User, *, origin: str = "", **kwargs: Any) -> dict[str, Any]:
    """Report a new case as *user* (see :func:`twin.cases.report`) and audit it."""
    from twin import cases

    require(user, "cases.report")
    reporter = dict(kwargs.pop("reporter", None) or {})
    reporter.setdefault("username", user.username)
    if user.resident_id:
        reporter.setdefault("resident_id", user.resident_id)
    case = cases.report(store, actor=user.username, role=user.role, reporter=reporter, **kwargs)
    store.append_audit(user.username, "case.collect", f"case:{case['id']}",
                       {"role": user.role, "source": case["source"]}, origin)
    return case


def case_for_role(case: Mapping[str, Any], user: User | None) -> dict[str, Any]:
    """Return a case as *user* may see it: the reporter only for staff who handle cases."""
    out = dict(case)
    data = out.get("data")
    data = json.loads(data) if isinstance(data, str) else dict(data or {})
    if not can(user, "page.cases"):  # only those who handle cases see who reported them
        for key in ("reporter", "co_reporters"):
            if key in data:
                data[key] = "***"
    out["data"] = data
    return out


# ---------------------------------------------------------------------------------------------
# Audit log: read, filter, export, verify


@dataclass(frozen=True)
class ChainCheck:
    """The result of checking the audit chain."""

    ok: bool
    rows: int
    first_bad_seq: int | None = None
    message: str = ""


def verify_audit_chain(store) -> ChainCheck:
    """Check every row's hash against the chain; name the first row that was changed or removed."""
    rows = len(store.read_audit())
    bad = store.verify_audit()
    if bad is None:
        return ChainCheck(True, rows, None, f"intact: {rows} rows")
    return ChainCheck(False, rows, int(bad),
                      f"broken at row {bad}: it or the row before it was changed or removed")


def read_audit(
    store,
    user: User | None,
    *,
    actor: str | None = None,
    action: str | None = None,
    target: str | None = None,
    start: Any = None,
    end: Any = None,
) -> pd.DataFrame:
    """Return the audit log filtered (admin only); substrings of actor, action and target."""
    require(user, "audit.read")
    log = store.read_audit()
    keep = pd.Series(True, index=log.index)
    for column, value in (("actor", actor), ("action", action), ("target", target)):
        if value:
            keep &= log[column].astype(str).str.contains(str(value), regex=False)
    if start is not None:
        keep &= log["at"] >= pd.Timestamp(start).tz_localize("UTC") if pd.Timestamp(
            start).tzinfo is None else log["at"] >= pd.Timestamp(start)
    if end is not None:
        keep &= log["at"] < pd.Timestamp(end).tz_localize("UTC") if pd.Timestamp(
            end).tzinfo is None else log["at"] < pd.Timestamp(end)
    return log.loc[keep].reset_index(drop=True)


def export_audit_csv(store, user: User | None, *, origin: str = "", **filters: Any) -> bytes:
    """Return the (filtered) audit log as UTF-8 CSV with its hashes; the export is audited.

    An auditor can re-check the chain from the file: each ``hash`` is sha256 over ``prev_hash``
    and the row (see :func:`twin.store.base.audit_hash`).
    """
    log = read_audit(store, user, **filters)
    store.append_audit(user.username, "audit.export", "audit",  # type: ignore[union-attr]
                       {"rows": len(log), "filters": {k: str(v) for k, v in filters.items() if v}},
                       origin)
    out = log.copy()
    out["at"] = out["at"].map(lambda ts: pd.Timestamp(ts).isoformat() if not pd.isna(ts) else "")
    buffer = io.StringIO()
    out.to_csv(buffer, index=False)
    return ("\ufeff" + buffer.getvalue()).encode("utf-8")  # BOM: Excel opens UTF-8 as such


def verify_audit_csv(data: bytes | str) -> ChainCheck:
    """Check the chain of an exported (unfiltered) audit CSV, as an auditor would offline."""
    from twin.store.base import GENESIS_HASH, audit_hash

    text = data.decode("utf-8-sig") if isinstance(data, bytes) else data.lstrip("\ufeff")
    log = pd.read_csv(io.StringIO(text), dtype=str, keep_default_na=False)
    prev = GENESIS_HASH
    for row in log.to_dict("records"):
        row["seq"] = int(row["seq"])
        row["at"] = pd.Timestamp(row["at"])
        row["detail"] = json.loads(row["detail"]) if row["detail"] else None
        if row["prev_hash"] != prev or audit_hash(prev, row) != row["hash"]:
            return ChainCheck(False, len(log), row["seq"], f"broken at row {row['seq']}")
        prev = row["hash"]
    return ChainCheck(True, len(log), None, f"intact: {len(log)} rows")


# ---------------------------------------------------------------------------------------------
# Uploads and secrets

UPLOAD_TYPES: dict[str, tuple[bytes, ...]] = {
    "image/jpeg": (b"\xff\xd8\xff",),
    "image/png": (b"\x89PNG\r\n\x1a\n",),
    "image/webp": (b"RIFF",),  # and b"WEBP" at offset 8
}


class UploadRejectedError(ValidationError):
    """An uploaded file is too big or not an allowed type."""


def check_photo(data: bytes, *, max_bytes: int | None = None) -> str:
    """Return the MIME type of an uploaded photo after checking its size and magic bytes.

    Raises
    ------
    UploadRejectedError
        If it is larger than the limit (5 MB) or not a JPEG, PNG or WebP by its content (the
        file name and the browser's claimed type are not trusted).
    """
    limit = int(max_bytes or settings.get("upload_max_bytes"))
    if len(data) > limit:
        raise UploadRejectedError(
            f"the photo has {len(data) / 1e6:.1f} MB; the limit is {limit / 1e6:.0f} MB. "
            "Send a smaller photo."
        )
    for mime, magics in UPLOAD_TYPES.items():
        if any(data.startswith(m) for m in magics):
            if mime == "image/webp" and data[8:12] != b"WEBP":
                continue
            return mime
    raise UploadRejectedError("only JPEG, PNG or WebP photos are accepted; convert it first")


def secret(name: str, secrets: Mapping[str, Any] | None = None) -> str | None:
    """Return a secret from the environment (``TWIN_<NAME>``) or a secrets mapping; never logged."""
    value = os.environ.get("TWIN_" + name.upper())
    if value:
        return value
    if secrets is not None and name in secrets:
        return str(secrets[name])
    return None


# ---------------------------------------------------------------------------------------------
# A resident's own data (retention: twin.retention)


def export_own_data(store, user: User, *, origin: str = "") -> dict[str, Any]:
    """Everything the twin holds about a resident, as a JSON-ready dict (and who looked at it).

    Raises
    ------
    PermissionDeniedError
        If *user* is not a resident.
    """
    require(user, "data.export_own")
    record = read_residents(store, user, origin=origin)
    reported = [
        {k: (v.isoformat() if isinstance(v, pd.Timestamp) else v) for k, v in c.items()
         if k in ("id", "status", "service_code", "description", "requested_at", "closed_at")}
        for c in store.read_cases().drop(columns="geometry", errors="ignore").to_dict("records")
        if _reported_by(c, user)
    ]
    answers = []
    from twin import participation

    try:
        answers = participation.answers_of(store, user).to_dict("records")
    except TwinError:
        LOGGER.exception("answers of %s", user.username)
    log = store.read_audit()
    own = log.loc[log["detail"].astype(str).str.contains(str(user.resident_id or "\0"),
                                                         regex=False)
                  | (log["actor"] == user.username)]
    views = own.loc[own["action"] == "residents.read", ["at", "actor", "action"]]
    store.append_audit(user.username, "data.export_own", f"resident:{user.resident_id}", {},
                       origin)
    return json.loads(json.dumps({
        "user": {"username": user.username, "role": user.role, "building": user.building_code},
        "resident": record.to_dict("records"),
        "reported_cases": reported,
        "poll_answers": answers,
        "views_of_my_data": views.to_dict("records"),
    }, ensure_ascii=False, default=str))


def _reported_by(case: Mapping[str, Any], user: User) -> bool:
    data = case.get("data")
    data = json.loads(data) if isinstance(data, str) else (data or {})
    reporter = data.get("reporter") or {}
    return isinstance(reporter, dict) and reporter.get("username") == user.username


def with_role(user: User, role: str) -> User:
    """Return a copy of *user* in another role (for tests and previews; nothing is stored)."""
    return replace(user, role=role)


__all__ = [
    "ANONYMOUS",
    "PERMISSIONS",
    "PERSONAL_ACCESS",
    "AccountLockedError",
    "LoginError",
    "User",
    "authenticate",
    "can",
    "check_photo",
    "create_user",
    "mask_frame",
    "read_residents",
    "require",
    "safe_text",
    "verify_audit_chain",
]


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
