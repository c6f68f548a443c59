"""Streamlit entry of the cockpit: page config, language switch, login, the pages of each role."""

from __future__ import annotations

from pathlib import Path

import streamlit as st

from twin import access
from twin.i18n import LANGUAGE_NAMES, LANGUAGES
from ui.common import current_language, t

st.set_page_config(
    page_title=t("app.title", current_language()),
    page_icon="🏙️",
    layout="wide",
    initial_sidebar_state="expanded",
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


def pages_of(user) -> dict[str, list[st.Page]]:
    """The sections and pages *user* may open (None: the public pages only)."""
    role = None if user is None else user.role
    sections = {
        t("nav.section.cockpit", LANG): [
            access.can(user, "page.map") and role != "grid_worker"
            and page("ui/cockpit_page.py", t("nav.cockpit", LANG), ":material/dashboard:", "cockpit"),
            role == "grid_worker" and page("ui/my_grid_page.py", t("nav.my_grid", LANG), ":material/location_on:",
                                           "my-grid"),
            access.can(user, "page.cases") and page("ui/cases_page.py", t("nav.cases", LANG),
                                                   ":material/assignment:", "cases"),
            access.can(user, "page.queries") and page("ui/analysis_page.py",
                                                     t("nav.analysis", LANG), ":material/analytics:", "analysis"),
            access.can(user, "page.layers") and page("ui/layers_page.py", t("nav.layers", LANG),
                                                    ":material/layers:", "layers"),
        ],
        t("nav.section.community", LANG): [
            access.can(user, "page.participation") and page(
                "ui/participation_page.py", t("nav.participation", LANG), ":material/how_to_vote:", "participation"),
            access.can(user, "page.public") and page("ui/public_page.py", t("nav.public", LANG),
                                                    ":material/campaign:", "public"),
            access.can(user, "page.audit") and page("ui/audit_page.py", t("nav.audit", LANG),
                                                   ":material/verified_user:", "audit"),
        ],
    }
    return {name: [p for p in entries if p] for name, entries in sections.items()
            if any(entries)}


from ui import auth  # noqa: E402 - after set_page_config: the gate may draw the login form

USER = auth.login_gate(LANG)
with st.sidebar:
    auth.logout_button(LANG)
PAGES = pages_of(USER)
if PAGES:
    st.navigation(PAGES).run()
elif USER is not None:
    st.warning(t("nav.nothing", LANG))
