"""公开 The public transparency page (no login): reports and fixes, recent fixes, staff at work."""

from __future__ import annotations

import pydeck as pdk
import streamlit as st

from twin import trust
from twin.deck import offline_deck
from ui import community_service, organisations_view
from ui.common import current_language, open_twin, t

LANG = current_language()

st.title(t("public.title", LANG))
st.caption(t("public.caption", LANG))

opened = open_twin(LANG)
if opened is None:
    st.stop()
store, twin_layers = opened

summary = trust.public_summary(store)


def service() -> None:
    """Volunteer hours and residents' proposals: counts per grid, no names."""
    st.subheader(t("svc.public", LANG))
    community_service.indicators(store, None, LANG, community_service.grid_names(twin_layers))
    community_service.proposals_map(store, None, twin_layers.get("grid_cells"))


if summary.empty:
    st.info(t("public.no_cases", LANG))
    service()
    st.stop()

# -- reports and fixes per month and per grid ----------------------------------------------------
st.subheader(t("public.over_time", LANG))
headers = {"reported": t("public.reported", LANG), "fixed": t("public.fixed", LANG)}
st.bar_chart(summary.monthly.rename(columns=headers), stack=False)
per_grid = summary.per_grid.rename(columns=headers)
per_grid.index.name = t("public.grid", LANG)
st.dataframe(per_grid, width="stretch")

# -- recently fixed cases: anonymised, locations rounded (twin.trust.public) ----------------------
st.subheader(t("public.recent", LANG))
recent = summary.recent
st.dataframe(recent.rename(columns={
    "category": t("public.category", LANG), "grid": t("public.grid", LANG),
    "closed_on": t("public.closed_at", LANG), "lon": t("public.lon", LANG),
    "lat": t("public.lat", LANG),
}), hide_index=True, width="stretch")
if len(recent):
    points = recent[["lon", "lat"]]
    st.pydeck_chart(offline_deck(
        [pdk.Layer("ScatterplotLayer", points, id="public-fixed", get_position=["lon", "lat"],
                   get_radius=50, get_fill_color=[40, 160, 90, 160])],
        pdk.ViewState(longitude=float(points["lon"].mean()),
                      latitude=float(points["lat"].mean()), zoom=15), height=320,
    ), height=320)

# -- the organisations' work: names and rates, no person, small counts hidden -------------------
organisations_view.public_performance(store, LANG)

# -- the work of grid workers and departments ----------------------------------------------------
st.subheader(t("public.staff", LANG))
for by, title in (("assignee", t("public.by_person", LANG)),
                  ("department", t("public.by_department", LANG))):
    if by in summary.staff:
        st.dataframe(summary.staff[by].rename(columns={
            by: title, "handled": t("public.handled", LANG),
            "ontime_close_rate": t("public.ontime_rate", LANG),
        }), hide_index=True, width="stretch")
service()
