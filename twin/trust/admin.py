"""What administrators and data staff do in a browser: manage users, load and roll back layers.

Every function takes the acting user, re-reads them from the store
(:func:`twin.trust.users.resolve`) and asks the permission table before doing anything; the
pages only call these. User changes go through :func:`twin.trust.users.create_user` and
:func:`twin.trust.users.update_user` (audited there); layer loads through the same
:func:`twin.load.load_layer` and ``Store.set_current_version`` that ``gridtwin load`` uses, so
no loading rule is written twice.
"""

from __future__ import annotations

import re
import secrets
import string
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from twin.errors import PermissionDeniedError, ValidationError
from twin.schema import ROLES, USERS
from twin.trust.permissions import User, require
from twin.trust.users import _grids, create_user, get_user, list_users, resolve, update_user

#: Length of a generated password (shown once; the user is asked to change it).
GENERATED_PASSWORD_LENGTH = 14
_ALPHABET = string.ascii_letters + string.digits  # no look-alike trouble with punctuation


def assignable_roles() -> tuple[str, ...]:
    """Return the roles an administrator may give a user (the declared roles, in order)."""
    return ROLES


def generate_password(length: int = GENERATED_PASSWORD_LENGTH) -> str:
    """Return a random password of *length* letters and digits (``secrets``, never logged)."""
    return "".join(secrets.choice(_ALPHABET) for _ in range(length))


@dataclass(frozen=True)
class NewPassword:
    """A user and the password made for them, to be shown once to the administrator."""

    user: User
    password: str


def _admin(store, actor: User | None) -> User:
    return require(resolve(store, actor), "users.manage")


def users_table(store, actor: User | None) -> pd.DataFrame:
    """Return every user for the users page: name, role, grids, enabled, last login, lock.

    No password hash, no resident record (personal data the page does not need).

    Raises
    ------
    PermissionDeniedError
        If *actor* may not manage users.
    """
    _admin(store, actor)
    users = list_users(store)
    keep = ["username", "display_name", "role", "grids", "disabled", "last_login_at",
            "failed_logins", "locked_until", "created_at"]
    out = users[[c for c in keep if c in users]].copy()
    out["grids"] = out["grids"].map(_grid_text)
    out["enabled"] = ~out["disabled"].fillna(False).astype(bool)
    return out.drop(columns="disabled").sort_values("username").reset_index(drop=True)


def _grid_text(value: Any) -> str:
    return ", ".join(_grids(value))


def parse_grids(text: str | Iterable[str] | None) -> tuple[str, ...]:
    """Return grid ids from text typed as ``R01, R02`` (commas, spaces or new lines)."""
    if text is None:
        return ()
    if not isinstance(text, str):
        return tuple(str(g).strip() for g in text if str(g).strip())
    return tuple(g for g in re.split(r"[\s,，;；]+", text) if g)


def add_user(
    store,
    actor: User | None,
    username: str,
    role: str,
    *,
    display_name: str = "",
    grids: Iterable[str] | str = (),
    resident_id: str | None = None,
    building_code: str | None = None,
    password: str | None = None,
    origin: str = "",
    org_id: str | None = None,
) -> NewPassword:
    """Create a user as administrator *actor*; audited as ``user.create``.

    Parameters
    ----------
    store
        The store.
    actor
        The administrator doing it.
    username, role, display_name, grids, resident_id, building_code, org_id
        The new user (see :func:`twin.trust.users.create_user`); an organisation's staff need
        their ``org_id``.
    password
        An initial password; None makes a random one, returned so the page can show it once.
    origin
        Where the request came from (audit log).

    Returns
    -------
    NewPassword
        The user and their initial password.

    Raises
    ------
    PermissionDeniedError
        If *actor* may not manage users.
    ValidationError
        For a bad name or role, a short password, a grid worker without grids, a resident
        without a record or building; DuplicateIdError (a ValidationError) if the name exists.
    """
    admin = _admin(store, actor)
    if role not in ROLES:
        raise ValidationError(f"unknown role {role!r}; roles are {', '.join(ROLES)}")
    password = password or generate_password()
    user = create_user(
        store, username, password, role, display_name=display_name.strip(),
        grids=parse_grids(grids), resident_id=(resident_id or "").strip() or None,
        building_code=(building_code or "").strip() or None, actor=admin.username, origin=origin,
        org_id=(org_id or "").strip() or None,
    )
    return NewPassword(user, password)


def _enabled_admins(store) -> set[str]:
    rows = store.read_rows(USERS, role="admin")
    return set(rows.loc[~rows["disabled"].fillna(False).astype(bool), "username"])


def _keep_an_admin(store, username: str, *, role: str | None, disabled: bool | None) -> None:
    """Refuse a change that would leave the twin without an enabled administrator."""
    loses = (role is not None and role != "admin") or bool(disabled)
    if loses and _enabled_admins(store) <= {username}:
        raise PermissionDeniedError(
            f"{username!r} is the last enabled administrator; make another user admin first"
        )


def change_user(
    store,
    actor: User | None,
    username: str,
    *,
    role: str | None = None,
    grids: Iterable[str] | str | None = None,
    disabled: bool | None = None,
    origin: str = "",
) -> User:
    """Change a user's role, grids or enabled state as administrator *actor*; audited.

    The change takes effect at the user's next request (sessions re-read the user).

    Raises
    ------
    PermissionDeniedError
        If *actor* may not manage users, or the change would remove the last enabled admin.
    NotFoundError
        If there is no such user.
    ValidationError
        For an unknown role, or a grid worker left without grids.
    """
    admin = _admin(store, actor)
    if role is not None and role not in ROLES:
        raise ValidationError(f"unknown role {role!r}; roles are {', '.join(ROLES)}")
    _keep_an_admin(store, username, role=role, disabled=disabled)
    new_grids = None if grids is None else parse_grids(grids)
    if role == "grid_worker" or (role is None and new_grids is not None):
        current = get_user(store, username)
        effective = new_grids if new_grids is not None else current.grids
        if (role or current.role) == "grid_worker" and not effective:
            raise ValidationError(f"grid worker {username!r} needs grids (e.g. R01)")
    return update_user(store, username, actor=admin.username, origin=origin, role=role,
                       grids=new_grids, disabled=disabled)


def reset_password(store, actor: User | None, username: str, *, origin: str = "") -> NewPassword:
    """Give *username* a new random password (shown once) and lift any login lock; audited.

    Raises
    ------
    PermissionDeniedError
        If *actor* may not manage users.
    NotFoundError
        If there is no such user.
    """
    admin = _admin(store, actor)
    password = generate_password()
    user = update_user(store, username, actor=admin.username, origin=origin, password=password)
    return NewPassword(user, password)


# -- layers: the same library calls as ``gridtwin load`` ----------------------------------------

_SAFE_NAME = re.compile(r"[^\w.\-]+")


def upload_name(name: str) -> str:
    """Return a file name safe to write: the last part of *name*, odd characters replaced.

    The extension is kept (the loader reads the format from it); nothing the uploader chose
    can climb out of the folder the file is written to.
    """
    base = Path(str(name).replace("\\", "/")).name.strip()
    safe = _SAFE_NAME.sub("_", base).lstrip(".")
    if not safe or safe in {".", ".."}:
        raise ValidationError(
            "the uploaded file has no usable name; rename it (e.g. layer.geojson)")
    return safe[-120:]


def load_upload(
    store,
    actor: User | None,
    layer: str,
    name: str,
    data: bytes,
    *,
    dry_run: bool,
    note: str = "",
    **options: Any,
) -> Any:
    """Check (*dry_run*) or load an uploaded file as the next version of *layer*, as *actor*.

    The bytes are written under their own (made safe) name into a private temporary folder,
    read there by :func:`twin.load.load_layer` with *options* (``crs``, ``values``,
    ``defaults``, ``mapping``, ``lon``/``lat`` …, as ``gridtwin load`` passes them) and
    removed. The version is written by the store with *actor* as its author (audited there).

    Returns
    -------
    twin.load.LoadResult
        The report (``report["dry_run"]`` says whether anything was written) and the version.

    Raises
    ------
    PermissionDeniedError
        If *actor* may not load layers.
    LoadError
        If the file cannot be loaded (``.report`` says why); the store is unchanged.
    """
    from twin.load import load_layer

    user = require(resolve(store, actor), "layers.load")
    if not data:
        raise ValidationError("the uploaded file is empty; choose the file again")
    with tempfile.TemporaryDirectory(prefix="twin-upload-") as folder:
        path = Path(folder) / upload_name(name)
        path.write_bytes(data)
        result = load_layer(store, layer, path, actor=user.username, dry_run=dry_run,
                            note=note, **{k: v for k, v in options.items() if v not in (None, "")})
    result.report.get("source", {}).pop("path", None)  # a server path: not for the page
    return result


def rollback_layer(store, actor: User | None, layer: str, version: int) -> Any:
    """Make an earlier *version* of *layer* current again, as *actor* (audited by the store).

    Raises
    ------
    PermissionDeniedError
        If *actor* may not roll layers back.
    NotFoundError
        If the version does not exist.
    """
    from twin import layers

    user = require(resolve(store, actor), "layers.rollback")
    layers.get_layer(layer)
    return store.set_current_version(layer, int(version), actor=user.username)


def load_report_rows(report: dict[str, Any]) -> pd.DataFrame:
    """Return the issues of a load report as a table, the worst first (rejected, repaired …)."""
    order = {"rejected": 0, "repaired": 1, "warning": 2, "info": 3}
    issues = pd.DataFrame(report.get("issues") or [],
                          columns=["severity", "row", "id", "kind", "message"])
    if issues.empty:
        return issues
    issues["rank"] = issues["severity"].map(order).fillna(9)
    issues = issues.sort_values(["rank", "row"], kind="stable").drop(columns="rank")
    return issues.reset_index(drop=True)
