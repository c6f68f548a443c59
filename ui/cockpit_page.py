"""驾驶舱 The cockpit: KPI tiles, the thematic map, drill-down, linked charts, live alarms."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from twin import cockpit, deck
from ui import community_service, mapview, organisations_view
from ui.auth import current_user
from ui.common import current_language, local_time, open_twin, t
from ui.live import alarm_panel, live_events

LANG = current_language()
user = current_user()

st.title(t("cockpit.title", LANG))
opened = open_twin(LANG)
if opened is None:
    st.stop()
store, twin_layers = opened
if "grid_cells" not in twin_layers:
    st.info(t("cockpit.no_grids", LANG))
    st.stop()

controls = mapview.sidebar_controls(LANG)
scope = mapview.drill_scope(twin_layers, LANG)
data = mapview.cockpit_data(store, twin_layers, controls, scope, LANG)

# -- KPI tiles ----------------------------------------------------------------------------------
mapview.kpi_tiles(data.kpis, LANG)
if data.hidden:
    st.caption(t("cockpit.hidden", LANG, count=sum(data.hidden.values())))

# -- map | selection, charts, alarms ------------------------------------------------------------
map_col, side_col = st.columns([3, 1])
with map_col:
    st.caption(t("nav.map", LANG))
    event = mapview.draw_map(data, controls, LANG, key="map")
    mapview.legend(controls, LANG)
with side_col:
    picked = deck.selected_feature(event)
    mapview.feature_detail(store, twin_layers, data, picked, user, LANG)
    in_scope = data.grids["grid_code"].astype(str)
    in_scope = tuple(sorted(in_scope)) if scope.level != "district" or scope.grids else None
    names = dict(zip(data.grids["grid_code"].astype(str), data.grids["name"], strict=True))
    st.subheader(t("live.alarms.title", LANG))
    alarm_panel(store, user, LANG, grid_cells=twin_layers["grid_cells"], grids=in_scope,
                grid_names=names, acted=3, key="cockpit-alarms")
    live_events(store, LANG, in_scope, grid_names=names)

chart_col, drill_col = st.columns(2)
with chart_col:
    st.subheader(t("cockpit.trend", LANG))
    # local time as text: the chart's own time axis would speak English ("05 AM", "Mon 07")
    trend = data.trend.assign(time=local_time(data.trend["time"], "%m-%d %H:%M")).rename(
        columns={"time": t("cockpit.time", LANG), "count": t("cockpit.reports", LANG)})
    st.bar_chart(trend, x=t("cockpit.time", LANG), y=t("cockpit.reports", LANG), height=220)
with drill_col:
    st.subheader(t("cockpit.drill", LANG))
    table = data.drill.rename(columns=mapview.indicator_labels(LANG))
    if len(table):
        st.bar_chart(pd.DataFrame(table).set_index(mapview.indicator_labels(LANG)["name"])[
            [mapview.indicator_labels(LANG)["open_cases"]]], height=220, horizontal=True)
    st.dataframe(table, hide_index=True, width="stretch", height=220)
st.caption(t("cockpit.as_of", LANG, time=local_time(pd.Series([cockpit.as_time(data.at)])).iloc[0]))

# -- the organisations governing with the community: each one's indicators ----------------------
organisations_view.performance(store, user, LANG)
with st.expander(t("svc.indicators", LANG)):  # volunteer hours and proposals per grid
    community_service.indicators(store, user, LANG, names)
