"""Test users stored as login would find them, and signed in to an AppTest session."""

from __future__ import annotations

import pandas as pd

from twin import trust
from twin.store import open_store, resolve_url

PASSWORD = "test-password"


def store_users(store, *users: trust.User) -> list[trust.User]:
    """Store each of *users* (replacing any of that name); return them as the store has them.

    The library acts only for stored users (:func:`twin.trust.resolve`): a test makes its
    ``User`` objects real through here before passing them to a scoped reader or a step.
    """
    return [
        trust.create_user(store, user.username, PASSWORD, user.role,
                          display_name=user.display_name, grids=user.grids,
                          resident_id=user.resident_id, building_code=user.building_code,
                          org_id=user.org_id, actor="tests", replace_existing=True)
        for user in users
    ]


def sign_in_as(at, user: trust.User | None, url: str | None = None):
    """Store *user* (replacing any of that name) and put their name into *at*'s session."""
    if user is None:
        return at
    with open_store(url or resolve_url()) as store:
        store_users(store, user)
    at.session_state["auth.user"] = user.username
    at.session_state["auth.last_activity"] = pd.Timestamp.now(tz="UTC").isoformat()
    return at
