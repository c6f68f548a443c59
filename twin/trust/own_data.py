"""A resident's own data: everything the twin holds about them, and who looked at it."""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from typing import Any

import pandas as pd

from twin.errors import TwinError
from twin.trust import participation
from twin.trust.permissions import User, require
from twin.trust.privacy import read_residents
from twin.trust.users import resolve

LOGGER = logging.getLogger(__name__)



def export_own_data(store, user: User, *, origin: str = "") -> dict[str, Any]:
    """Everything the twin holds about a resident, as a JSON-ready dict (and who looked at it).

    Raises
    ------
    PermissionDeniedError
        If *user* is not a resident.
    """
    user = require(resolve(store, user), "data.export_own")
    record = read_residents(store, user, origin=origin)
    reported = [
        {k: (v.isoformat() if isinstance(v, pd.Timestamp) else v) for k, v in c.items()
         if k in ("id", "status", "service_code", "description", "requested_at", "closed_at")}
        for c in store.read_cases().drop(columns="geometry", errors="ignore").to_dict("records")
        if _reported_by(c, user)
    ]
    answers = []
    try:
        answers = participation.answers_of(store, user).to_dict("records")
    except TwinError:
        LOGGER.exception("answers of %s", user.username)
    views = _views_of(store, user)
    store.append_audit(user.username, "data.export_own", f"resident:{user.resident_id}", {},
                       origin)
    return json.loads(json.dumps({
        "user": {"username": user.username, "role": user.role, "building": user.building_code},
        "resident": record.to_dict("records"),
        "reported_cases": reported,
        "poll_answers": answers,
        "views_of_my_data": views.to_dict("records"),
    }, ensure_ascii=False, default=str))


def _views_of(store, user: User) -> pd.DataFrame:
    """Return the reads of residents' data naming *user*'s record or made by *user* (audit).

    Searched in the database, not by reading the whole log.
    """
    every = 2**62
    found = [store.search_audit(contains={"action": "residents.read", "actor": user.username},
                                limit=every)[0]]
    found[0] = found[0].loc[found[0]["actor"] == user.username]
    if user.resident_id:
        found.append(store.search_audit(
            contains={"action": "residents.read", "detail": str(user.resident_id)},
            limit=every)[0])
    views = pd.concat(found).drop_duplicates("seq").sort_values("seq")
    return views.loc[views["action"] == "residents.read", ["at", "actor", "action"]]


def _reported_by(case: Mapping[str, Any], user: User) -> bool:
    data = case.get("data")
    data = json.loads(data) if isinstance(data, str) else (data or {})
    reporter = data.get("reporter") or {}
    return isinstance(reporter, dict) and reporter.get("username") == user.username


