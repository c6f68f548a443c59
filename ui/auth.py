"""Login for the cockpit: the form, the session (with a timeout), logout, the public pages."""

from __future__ import annotations

import logging

import pandas as pd
import streamlit as st

from twin import settings, trust
from twin.errors import TwinError
from twin.trust import User
from ui.common import get_store, md, present_store, store_url, t

LOGGER = logging.getLogger(__name__)

#: Pages that need no login (``page.<name>`` keys of :data:`twin.trust.PERMISSIONS`).
PUBLIC = tuple(trust.pages_for(None))

SESSION_KEY = "auth.user"
JUST_SIGNED_IN_KEY = "auth.just_signed_in"
ACTIVITY_KEY = "auth.last_activity"
EXPIRED_KEY = "auth.expired"


def origin() -> str:
    """Where the request comes from, for the audit log: ``web:<ip>`` (or ``web`` if unknown)."""
    try:
        ip = st.context.ip_address
    except Exception:  # older servers: no client address
        ip = None
    # login throttling counts per client: only a real address names one (AppTest gives a mock)
    return f"web:{ip}" if isinstance(ip, str) and ip else "web"


def _store():
    return get_store(store_url())


def sign_in(user: User) -> None:
    """Put *user* into this session (after a successful login, or in tests)."""
    st.session_state[SESSION_KEY] = user.username  # rights are read anew on every request
    st.session_state[ACTIVITY_KEY] = pd.Timestamp.now(tz="UTC").isoformat()
    st.session_state.pop(EXPIRED_KEY, None)


def sign_out() -> None:
    """Forget the user of this session."""
    for key in (SESSION_KEY, ACTIVITY_KEY):
        st.session_state.pop(key, None)


def current_user() -> User | None:
    """The logged-in user of this session as the store holds them now, or None.

    An idle session past the timeout ends here, and so does the session of a user disabled or
    removed since they logged in; a changed role or grid takes effect on the next request.
    """
    username = st.session_state.get(SESSION_KEY)
    if not isinstance(username, str) or not username:
        return None
    if trust.session_expired(st.session_state.get(ACTIVITY_KEY)):
        LOGGER.info("session of %s expired", username)
        sign_out()
        st.session_state[EXPIRED_KEY] = True
        return None
    try:
        store = present_store()
        user = None if store is None else trust.session_user(store, username)
    except TwinError as exc:  # the store is away: out for now, back in when it answers again
        LOGGER.warning("cannot check the session of %s: %s", username, exc)
        return None
    if user is None:
        LOGGER.info("session of %s ended: the user is disabled or gone", username)
        sign_out()
        return None
    st.session_state[ACTIVITY_KEY] = pd.Timestamp.now(tz="UTC").isoformat()
    return user


def _oidc_configured() -> bool:
    try:
        return "auth" in st.secrets
    except Exception:  # no secrets file at all
        return False


def _oidc_user() -> User | None:
    """The user behind an OIDC login (``st.login``), when a provider is configured in secrets."""
    info = getattr(st, "user", None)
    if info is None or not getattr(info, "is_logged_in", False):
        return None
    email = str(info.get("email") or "")
    try:
        user = trust.get_user(_store(), email)
    except Exception:
        st.error(t("auth.oidc_unknown"))
        return None
    return None if user.disabled else user


def login_form(lang: str | None = None) -> User | None:
    """Render the login form; on success sign the user in and return them."""
    if st.session_state.pop(EXPIRED_KEY, False):
        st.info(t("auth.expired", lang))
    with st.form("login", clear_on_submit=False):
        st.subheader(t("auth.title", lang))
        username = st.text_input(t("auth.username", lang), key="login_username")
        password = st.text_input(t("auth.password", lang), type="password", key="login_password")
        submitted = st.form_submit_button(t("auth.submit", lang))
    if _oidc_configured() and st.button(t("auth.oidc", lang)):
        st.login()
    if not submitted:
        return None
    try:
        user = trust.authenticate(_store(), username, password, origin=origin())
    except trust.AccountLockedError as exc:  # the same for every name, stored or not
        st.error(t("auth.locked", lang, minutes=exc.minutes or f"{settings.get('lockout_min'):g}"))
        return None
    except trust.LoginError:
        st.error(t("auth.failed", lang))
        return None
    sign_in(user)
    # start again without the form, on the user's first page rather than the public one
    st.session_state[JUST_SIGNED_IN_KEY] = True
    st.rerun()
    return user


def take_just_signed_in() -> bool:
    """True once, on the first run after a successful login (the app then opens the home page)."""
    return bool(st.session_state.pop(JUST_SIGNED_IN_KEY, False))


def login_gate(lang: str | None = None) -> User | None:
    """The logged-in user, or None after rendering the login form (the caller shows PUBLIC pages).

    Enforces the session timeout; shows why a login failed (wrong password, locked account).
    """
    user = current_user()
    if user is not None:
        return user
    if _oidc_configured():
        user = _oidc_user()
        if user is not None:
            sign_in(user)
            return user
    return login_form(lang)


def logout_button(lang: str | None = None) -> None:
    """Show who is logged in and a logout button (in the sidebar)."""
    user = current_user()
    if user is None:
        return
    st.caption(t("auth.logged_in_as", lang, name=md(user.name), role=t_role(user.role, lang)))
    if st.button(t("auth.logout", lang), key="logout"):
        try:
            trust.record_logout(_store(), user, origin=origin())
        except Exception:  # logging out must work even if the store is gone
            LOGGER.exception("audit of logout failed")
        sign_out()
        if _oidc_configured() and getattr(getattr(st, "user", None), "is_logged_in", False):
            st.logout()
        st.rerun()


def role_labels(lang: str | None = None) -> dict[str, str]:
    """Every role of :data:`twin.trust.EVERYONE` → its name in the UI language.

    The keys are spelled out so that the catalog test sees each one; a test checks that they
    are exactly the declared roles.
    """
    return {
        "admin": t("role.admin", lang), "official": t("role.official", lang),
        "dispatcher": t("role.dispatcher", lang), "grid_worker": t("role.grid_worker", lang),
        "planner": t("role.planner", lang), "data_staff": t("role.data_staff", lang),
        "resident": t("role.resident", lang), "public": t("role.public", lang),
    }


def t_role(role: str, lang: str | None = None) -> str:
    """The role's name in the UI language."""
    return role_labels(lang).get(role, role)


def require_page(permission: str, lang: str | None = None) -> User | None:
    """At the top of a page: the user if they may open it, else a message and ``st.stop()``."""
    user = current_user()
    if trust.can(user, permission):
        return user
    if user is None:
        st.warning(t("auth.login_needed", lang))
    else:
        st.error(t("auth.forbidden", lang, role=t_role(user.role, lang)))
    st.stop()
    return None
