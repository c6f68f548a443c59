"""Login for the cockpit: the form, the session that survives a reload, logout, the public pages.

A login opens a stored session (:func:`twin.trust.open_session`); the browser keeps it in an
HttpOnly, SameSite=Strict cookie, set by the route ``ui/serve.py`` adds: the page posts a
one-time code there (one small same-origin fetch), never the session itself. A new page load
(F5, a wall screen's reload, a deep link) resumes from the cookie; every later request of the
page checks the session again, so a logout elsewhere, a disabled user or an idle timeout ends
it at the next click.
"""

from __future__ import annotations

import json
import logging

import pandas as pd
import streamlit as st

from twin import settings, trust
from twin.errors import TwinError
from twin.trust import User
from twin.trust.sessions import COOKIE_NAME
from ui.common import get_store, md, present_store, store_url, t

LOGGER = logging.getLogger(__name__)

#: Pages that need no login (``page.<name>`` keys of :data:`twin.trust.PERMISSIONS`).
PUBLIC = tuple(trust.pages_for(None))

SESSION_KEY = "auth.user"
JUST_SIGNED_IN_KEY = "auth.just_signed_in"
ACTIVITY_KEY = "auth.last_activity"
EXPIRED_KEY = "auth.expired"
#: the session's cookie value (kept server-side in this tab's state, checked on every run)
TOKEN_KEY = "auth.token"
#: a one-time code waiting to be exchanged for the cookie by the page
CODE_KEY = "auth.cookie_code"
#: the cookie should be cleared on the next run (after a logout or a refused resume)
CLEAR_KEY = "auth.clear_cookie"
#: a cookie value this tab already found refused (not asked again, not audited again)
REFUSED_KEY = "auth.refused_cookie"
#: reasons of a refused session that the user is told as "expired"
EXPIRY_REASONS = ("idle", "expired")
SESSION_ROUTE, LOGOUT_ROUTE = "/_twin/session", "/_twin/logout"  # ui/serve.py serves them
LANGUAGE_ROUTE, LANGUAGE_COOKIE = "/_twin/language", "twin_lang"
#: the language the browser's cookie holds, as far as this tab knows
SAVED_LANGUAGE_KEY = "auth.saved_lang"


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


def _cookie(name: str = COOKIE_NAME) -> str | None:
    """A cookie the browser sent when this page was loaded (the session's by default)."""
    try:
        value = st.context.cookies.get(name)
    except Exception:  # no browser behind this run (AppTest, bare mode)
        return None
    return value if isinstance(value, str) and value else None


def saved_language() -> str | None:
    """The language this browser chose before (its cookie), for a new page load; else None."""
    from twin.i18n import LANGUAGES

    lang = _cookie(LANGUAGE_COOKIE)
    st.session_state.setdefault(SAVED_LANGUAGE_KEY, lang)
    return lang if lang in LANGUAGES else None


def keep_language(lang: str) -> None:
    """Have the browser remember *lang* (a cookie) when it differs from what it holds."""
    from twin.i18n import DEFAULT_LANGUAGE

    if (st.session_state.get(SAVED_LANGUAGE_KEY) or DEFAULT_LANGUAGE) != lang:
        _post(LANGUAGE_ROUTE, {"lang": lang})
        st.session_state[SAVED_LANGUAGE_KEY] = lang


def sign_in(user: User, token: str | None = None) -> None:
    """Put *user* into this session (after a successful login, a resumed cookie, or in tests).

    *token* is the stored session behind it (None: this tab only, as AppTest signs in).
    """
    st.session_state[SESSION_KEY] = user.username  # rights are read anew on every request
    st.session_state[ACTIVITY_KEY] = pd.Timestamp.now(tz="UTC").isoformat()
    st.session_state.pop(EXPIRED_KEY, None)
    if token:
        st.session_state[TOKEN_KEY] = token
    else:
        st.session_state.pop(TOKEN_KEY, None)


def sign_out() -> None:
    """Forget the user of this tab (the stored session is ended by :func:`logout_button`)."""
    for key in (SESSION_KEY, ACTIVITY_KEY, TOKEN_KEY, CODE_KEY):
        st.session_state.pop(key, None)


def _refused(store, token: str) -> None:
    """Remember that *token* does not resume; say so if it merely expired; clear the cookie."""
    try:
        reason = trust.session_problem(store, token)
    except TwinError:
        reason = None
    LOGGER.info("session refused: %s", reason)
    if reason in EXPIRY_REASONS:
        st.session_state[EXPIRED_KEY] = True
    st.session_state[REFUSED_KEY] = token
    st.session_state[CLEAR_KEY] = True


def _from_cookie() -> User | None:
    """The user of the session cookie of a new page load, or None (then the login form)."""
    cookie = _cookie()
    if cookie is None or cookie == st.session_state.get(REFUSED_KEY):
        return None
    try:
        store = present_store()
        user = None if store is None else trust.resume_session(store, cookie, origin=origin())
    except TwinError as exc:  # the store is away: log in again when it answers
        LOGGER.warning("cannot resume a session: %s", exc)
        return None
    if user is None:
        _refused(store, cookie)
        return None
    sign_in(user, cookie)
    return user


def current_user() -> User | None:
    """The logged-in user of this session as the store holds them now, or None.

    A tab with a stored session checks it on every request: ended by a logout, past its idle
    timeout or lifetime, or its user disabled or removed, it is out here. A changed role or
    grid takes effect on the next request. A tab without one resumes the browser's cookie.
    """
    username = st.session_state.get(SESSION_KEY)
    if not isinstance(username, str) or not username:
        return _from_cookie()
    token = st.session_state.get(TOKEN_KEY)
    if token:
        try:
            store = present_store()
            user = None if store is None else trust.resume_session(store, token)
        except TwinError as exc:  # the store is away: out for now, back in when it answers
            LOGGER.warning("cannot check the session of %s: %s", username, exc)
            return None
        if user is None:
            sign_out()
            if store is not None:
                _refused(store, token)
        return user
    return _tab_user(username)


def _tab_user(username: str) -> User | None:
    """The user of a tab signed in without a stored session (AppTest, OIDC), timed out here."""
    if trust.session_expired(st.session_state.get(ACTIVITY_KEY)):
        LOGGER.info("session of %s expired", username)
        sign_out()
        st.session_state[EXPIRED_KEY] = True
        return None
    try:
        store = present_store()
        user = None if store is None else trust.session_user(store, username)
    except TwinError as exc:  # the store is away: out for now, back in when it answers
        LOGGER.warning("cannot check the session of %s: %s", username, exc)
        return None
    if user is None:
        LOGGER.info("session of %s ended: the user is disabled or gone", username)
        sign_out()
        return None
    st.session_state[ACTIVITY_KEY] = pd.Timestamp.now(tz="UTC").isoformat()
    return user


def _post(route: str, body: dict[str, str]) -> None:
    """Let the page POST *body* to one of our routes (same origin, cookies included)."""
    from streamlit import config

    base = (config.get_option("server.baseUrlPath") or "").strip("/")
    url = f"/{base}{route}" if base else route
    st.html(
        "<script>fetch(" + json.dumps(url) + ", {method: 'POST', credentials: 'same-origin', "
        "headers: {'Content-Type': 'application/json'}, body: "
        + json.dumps(json.dumps(body)) + "});</script>",
        unsafe_allow_javascript=True,
    )


def keep_cookie() -> None:
    """Hand the browser a pending session cookie, or clear a dead one (once, on this run).

    The app calls it on a run that stays on screen (not one that switches page at once), so
    the small script reaches the page and runs.
    """
    code = st.session_state.get(CODE_KEY)
    if code and trust.code_pending(code):  # sent again until the page has exchanged it
        _post(SESSION_ROUTE, {"code": code})
    elif code:
        st.session_state.pop(CODE_KEY, None)
    elif st.session_state.pop(CLEAR_KEY, False):
        _post(LOGOUT_ROUTE, {})


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
    _open_session(user)
    # start again without the form, on the user's first page rather than the public one
    st.session_state[JUST_SIGNED_IN_KEY] = True
    st.rerun()
    return user


def _open_session(user: User) -> None:
    """Sign *user* in with a stored session, and queue the cookie for the page."""
    try:
        token = trust.open_session(_store(), user, origin=origin())
    except TwinError as exc:  # no stored session: this tab only (a reload logs out)
        LOGGER.warning("cannot open a session for %s: %s", user.username, exc)
        token = None
    sign_in(user, token)
    if token:
        st.session_state[CODE_KEY] = trust.issue_code(token)
        st.session_state.pop(CLEAR_KEY, None)


def just_signed_in() -> bool:
    """True from a successful login until :func:`arrived` (the app opens the first page)."""
    return bool(st.session_state.get(JUST_SIGNED_IN_KEY, False))


def arrived() -> None:
    """The first page after a login is on screen: :func:`just_signed_in` is False again."""
    st.session_state.pop(JUST_SIGNED_IN_KEY, None)



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
            _open_session(user)
            return user
    return login_form(lang)


def logout_button(lang: str | None = None) -> None:
    """Show who is logged in and a logout button (in the sidebar)."""
    user = current_user()
    if user is None:
        return
    st.caption(t("auth.logged_in_as", lang, name=md(user.name), role=t_role(user.role, lang)))
    if st.button(t("auth.logout", lang), key="logout"):
        token = st.session_state.get(TOKEN_KEY)
        try:
            if token:
                trust.end_session(_store(), token)  # the cookie is refused from now on
            trust.record_logout(_store(), user, origin=origin())
        except Exception:  # logging out must work even if the store is gone
            LOGGER.exception("ending the session or its audit failed")
        sign_out()
        st.session_state[CLEAR_KEY] = True
        if token:
            st.session_state[REFUSED_KEY] = token  # this tab's cookie: not resumed again
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
        "resident": t("role.resident", lang), "volunteer": t("role.volunteer", lang),
        "public": t("role.public", lang),
        "org_admin": t("role.org_admin", lang), "org_staff": t("role.org_staff", lang),
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
