"""Streamlit entry of the cockpit: page config, language switch, login, the pages of each role.

Every page has its own URL (``/cockpit``, ``/cases``, ``/public`` …) that survives a reload; the
root ``/`` opens the user's home page; a path the user may not open, or that names no page,
shows a "not found / not allowed" message in the user's language with a link home (never
Streamlit's own "Page not found").
"""

from __future__ import annotations

from pathlib import Path

import streamlit as st

from twin import trust
from twin.i18n import LANGUAGE_NAMES, LANGUAGES
from ui import auth
from ui.common import current_language, run_page, streamlit_words, t

if "lang" not in st.session_state:  # a new page load: the language this browser chose before
    st.session_state["lang"] = auth.saved_language() or current_language()

st.set_page_config(
    page_title=t("app.title", current_language()),
    page_icon="🏙️",
    layout="wide",
    initial_sidebar_state="auto",  # open on a wide screen, out of the way on a phone
)

with st.sidebar:
    st.selectbox(
        t("sidebar.language", current_language()),
        LANGUAGES,
        format_func=LANGUAGE_NAMES.__getitem__,
        key="lang",
    )

LANG = current_language()
auth.keep_language(LANG)  # a reload keeps it (a cookie, through ui/serve.py)
streamlit_words(LANG)
HERE = Path(__file__).resolve().parent


def page(path: str, title: str, icon: str, url: str, **kw) -> st.Page | None:
    """A page of ui/, or None while its file does not exist yet (pages land one by one)."""
    return st.Page(path, title=title, icon=icon, url_path=url, **kw) if (HERE / path).exists() \
        else None


def navigation() -> tuple[tuple[str, str, str, str, str, str], ...]:
    """(section, page file, title, icon, url path, permission) of every page, in *LANG*."""
    ops, town = t("nav.section.cockpit", LANG), t("nav.section.community", LANG)
    return (
        (ops, "ui/cockpit_page.py", t("nav.cockpit", LANG), ":material/dashboard:", "cockpit",
         "page.cockpit"),
        (ops, "ui/wall_page.py", t("nav.wall", LANG), ":material/tv:", "wall", "page.wall"),
        (ops, "ui/my_grid_page.py", t("nav.my_grid", LANG), ":material/location_on:", "my-grid",
         "page.my_grid"),
        (ops, "ui/cases_page.py", t("nav.cases", LANG), ":material/assignment:", "cases",
         "page.cases"),
        (ops, "ui/analysis_page.py", t("nav.analysis", LANG), ":material/analytics:", "analysis",
         "page.queries"),
        (ops, "ui/layers_page.py", t("nav.layers", LANG), ":material/layers:", "layers",
         "page.layers"),
        (town, "ui/participation_page.py", t("nav.participation", LANG),
         ":material/how_to_vote:", "participation", "page.participation"),
        (town, "ui/volunteer_page.py", t("nav.volunteer", LANG), ":material/volunteer_activism:",
         "volunteer", "page.volunteer"),
        (town, "ui/proposals_page.py", t("nav.proposals", LANG), ":material/forum:",
         "proposals", "page.proposals"),
        (town, "ui/public_page.py", t("nav.public", LANG), ":material/campaign:", "public",
         "page.public"),
        (town, "ui/audit_page.py", t("nav.audit", LANG), ":material/verified_user:", "audit",
         "page.audit"),
        (town, "ui/users_page.py", t("nav.users", LANG), ":material/manage_accounts:", "users",
         "page.users"),
        (town, "ui/resident_page.py", t("nav.my_reports", LANG), ":material/report:",
         "my-reports", "page.my_reports"),
        (town, "ui/volunteer_admin_page.py", t("nav.volunteer_admin", LANG),
         ":material/diversity_3:", "volunteer-tasks", "page.volunteer_admin"),
    )


def pages_of(user) -> dict[str, list[st.Page]]:
    """The sections and pages *user* may open (None: the public pages only), as trust decides."""
    sections: dict[str, list[st.Page]] = {}
    for section, path, title, icon, url, permission in navigation():
        made = trust.can(user, permission) and page(path, title, icon, url)
        if made:
            sections.setdefault(section, []).append(made)
    return sections


from ui.routing import asked_path, not_found_page, root_page  # noqa: E402

ASKED = asked_path(url for *_, url, _ in navigation())
USER = auth.login_gate(LANG)
with st.sidebar:
    auth.logout_button(LANG)
PAGES = pages_of(USER)
if PAGES:
    HOME = next(iter(PAGES.values()))[0]  # the role's first page; the public page when logged out
    OPEN = {page.url_path: page for pages in PAGES.values() for page in pages}
    known = {url: title for _, _, title, _, url, _ in navigation()}
    extra = [root_page(HOME, LANG)]
    if ASKED and ASKED not in OPEN:
        extra += not_found_page(ASKED, HOME, LANG, title=known.get(ASKED),
                                logged_in=USER is not None)
    first = next(iter(PAGES))
    NAV = st.navigation({**PAGES, first: [*PAGES[first], *extra]})
    if USER is not None and auth.just_signed_in():
        # the page asked for before logging in (a deep link), else the role's home; asked
        # again until it is on screen (a run cut short by another loses its switch)
        public = {page.url_path for pages in pages_of(None).values() for page in pages}
        target = OPEN[ASKED] if ASKED in OPEN and ASKED not in public else HOME
        if ASKED == target.url_path:
            auth.arrived()
        else:
            st.switch_page(target)
    auth.keep_cookie()
    run_page(NAV, LANG)  # an unexpected error is a message, never a traceback
elif USER is not None:
    st.warning(t("nav.nothing", LANG))
