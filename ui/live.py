"""The live panel: the latest events from the store, refreshed on its own every few seconds."""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta

import streamlit as st

from twin.store import Store
from ui.common import t

LOGGER = logging.getLogger(__name__)

REFRESH_S = 10
WINDOW = timedelta(hours=24)
SHOWN = 15
TIMEZONE = "Asia/Shanghai"


@st.fragment(run_every=REFRESH_S)
def live_events(store: Store, lang: str) -> None:
    """The newest events of the last day (refreshes without rerunning the page)."""
    st.subheader(t("live.title", lang))
    try:
        events = store.read_events(datetime.now(UTC) - WINDOW)
    except Exception:  # the panel's edge: a failing read must not take the page down
        LOGGER.exception("reading live events failed")
        st.warning(t("live.error", lang))
        return
    if len(events) == 0:
        st.caption(t("live.empty", lang))
        return
    latest = events.tail(SHOWN).iloc[::-1]
    table = latest[["observed_at", "kind", "source_id", "grid_code"]].copy()
    table["observed_at"] = table["observed_at"].dt.tz_convert(TIMEZONE).dt.strftime("%H:%M:%S")
    table.columns = [
        t("live.col.time", lang),
        t("live.col.kind", lang),
        t("live.col.source", lang),
        t("live.col.grid", lang),
    ]
    st.dataframe(table, hide_index=True, width="stretch")
    st.caption(t("live.count", lang, count=len(events)))
