"""Cases as a user may see and move them: scoped lists, steps run and audited as the user."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import pandas as pd

from twin import cases, cockpit
from twin.errors import PermissionDeniedError
from twin.trust.permissions import User, can, require
from twin.trust.privacy import unit_grids_of
from twin.trust.users import resolve


def allowed_actions(case: Mapping[str, Any], user: User | None) -> list[str]:
    """Return the steps *user* may take on *case* now (none for the public or a disabled user)."""
    if user is None or user.is_anonymous or user.disabled:
        return []
    return cases.allowed_actions(dict(case), user.role)


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
    user = resolve(store, user)
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
    user = require(resolve(store, user), "cases.report")
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




def visible_cases(store, user: User | None, grid_cells: pd.DataFrame | None = None) -> pd.DataFrame:
    """Return the cases *user* may see, with their state now.

    Case handlers see every case, except grid workers: only the cases of their unit grids and
    those assigned to them.

    Raises
    ------
    PermissionDeniedError
        If *user* does not handle cases (``page.cases``).
    """
    user = require(resolve(store, user), "page.cases")
    table = cockpit.cases_at(store.read_cases())
    if user.role == "grid_worker":
        mine = unit_grids_of(user, grid_cells)
        table = table.loc[table["grid_code"].isin(mine) | (table["assignee"] == user.username)]
    return table


def _may_see(case: Mapping[str, Any], user: User, grid_cells: pd.DataFrame | None) -> bool:
    if user.role != "grid_worker":
        return True
    return (case.get("grid_code") in unit_grids_of(user, grid_cells)
            or case.get("assignee") == user.username)


def read_case(store, user: User | None, case_id: str,
              grid_cells: pd.DataFrame | None = None) -> dict[str, Any]:
    """Return one case as *user* may see it (see :func:`visible_cases` and :func:`case_for_role`).

    Raises
    ------
    PermissionDeniedError
        If *user* does not handle cases, or the case is outside a grid worker's grids.
    NotFoundError
        If there is no such case.
    """
    user = require(resolve(store, user), "page.cases")
    case = store.get_case(case_id)
    if not _may_see(case, user, grid_cells):
        raise PermissionDeniedError(
            f"case {case_id!r} is not in the grids of {user.username!r}; ask the dispatcher"
        )
    return case_for_role(case, user)


def case_history(store, user: User | None, case_id: str,
                 grid_cells: pd.DataFrame | None = None) -> pd.DataFrame:
    """Return the steps of one case (who, when, what), if *user* may see the case."""
    read_case(store, user, case_id, grid_cells)
    return store.case_history(case_id)
