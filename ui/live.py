"""The live panel: open alarms and the newest events, refreshed on their own every few seconds."""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta

import pandas as pd
import streamlit as st

from twin import cockpit
from twin.store import Store
from ui.common import local_time, t

LOGGER = logging.getLogger(__name__)

REFRESH_S = 10
WINDOW = timedelta(hours=24)
SHOWN = 15


@st.fragment(run_every=REFRESH_S)
def live_alarms(store: Store, lang: str, grids: tuple[str, ...] | None = None) -> None:
    """Open alarms (newest first), then the latest events; only in *grids* when given.

    Runs as a fragment: it refreshes without rerunning the page, so the map keeps its view.
    """
    st.subheader(t("live.title", lang))
    try:
        alarms = cockpit.read_alarms(store)
        events = store.read_events(datetime.now(UTC) - WINDOW)
    except Exception:  # the panel's edge: a failing read must not take the page down
        LOGGER.exception("reading live alarms failed")
        st.warning(t("live.error", lang))
        return
    if len(alarms):
        alarms = alarms.loc[alarms["status"].isin(("open", "acknowledged", "in_progress"))]
    if grids is not None:
        alarms = alarms.loc[alarms["grid_code"].isin(grids)] if len(alarms) else alarms
        events = events.loc[events["grid_code"].isin(grids)] if len(events) else events
    if len(alarms):
        latest = alarms.sort_values("opened_at", ascending=False).head(SHOWN)
        table = pd.DataFrame({
            t("live.col.time", lang): local_time(latest["opened_at"], "%H:%M:%S"),
            t("live.col.severity", lang): latest["severity"],
            t("live.col.source", lang): latest["source_id"],
            t("live.col.value", lang): latest["property"].astype(str) + " "
            + latest["value"].astype(str),
            t("live.col.grid", lang): latest["grid_code"],
        })
        st.error(t("live.alarms", lang, count=len(alarms)))
        st.dataframe(table, hide_index=True, width="stretch")
    else:
        st.success(t("live.no_alarms", lang))
    if len(events) == 0:
        st.caption(t("live.empty", lang))
        return
    latest = events.tail(SHOWN).iloc[::-1]
    table = pd.DataFrame({
        t("live.col.time", lang): local_time(latest["observed_at"], "%H:%M:%S"),
        t("live.col.kind", lang): latest["kind"],
        t("live.col.source", lang): latest["source_id"],
        t("live.col.grid", lang): latest["grid_code"],
    })
    st.dataframe(table, hide_index=True, width="stretch", height=200)
    st.caption(t("live.count", lang, count=len(events)))
