"""Streamlit entry of the cockpit: page config, language switch, navigation to the ui/ pages."""

from __future__ import annotations

import streamlit as st

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
# One entry per page file in ui/; sections group them as the cockpit grows.
PAGES = {
    t("nav.section.cockpit", LANG): [
        st.Page("ui/map_page.py", title=t("nav.map", LANG), icon="🗺️", url_path="map",
                default=True),
    ],
}
st.navigation(PAGES).run()
