"""Streamlit entry of the cockpit: page config, language switch, login, the pages of each role."""

from __future__ import annotations

from pathlib import Path

import streamlit as st

from twin import trust
from twin.i18n import LANGUAGE_NAMES, LANGUAGES
from ui.common import current_language, run_page, t

st.set_page_config(
    page_title=t("app.title", current_language()),
    page_icon="🏙️",
    layout="wide",
    initial_sidebar_state="auto",  # open on a desk, closed on a phone (out of the way)
)

with st.sidebar:
    st.selectbox(
        t("sidebar.language", current_language()),
        LANGUAGES,
        format_func=LANGUAGE_NAMES.__getitem__,
        key="lang",
    )

LANG = current_language()
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
        (town, "ui/public_page.py", t("nav.public", LANG), ":material/campaign:", "public",
         "page.public"),
        (town, "ui/audit_page.py", t("nav.audit", LANG), ":material/verified_user:", "audit",
         "page.audit"),
    )


def pages_of(user) -> dict[str, list[st.Page]]:
    """The sections and pages *user* may open (None: the public pages only), as trust decides."""
    sections: dict[str, list[st.Page]] = {}
    for section, path, title, icon, url, permission in navigation():
        made = trust.can(user, permission) and page(path, title, icon, url)
        if made:
            sections.setdefault(section, []).append(made)
    return sections


from ui import auth  # noqa: E402 - after set_page_config: the gate may draw the login form

USER = auth.login_gate(LANG)
with st.sidebar:
    auth.logout_button(LANG)
PAGES = pages_of(USER)
if PAGES:
    NAV = st.navigation(PAGES)
    if USER is not None and auth.take_just_signed_in():
        st.switch_page(next(iter(PAGES.values()))[0])  # the role's home, not the public page
    run_page(NAV, LANG)  # an unexpected error is a message, never a traceback
elif USER is not None:
    st.warning(t("nav.nothing", LANG))
