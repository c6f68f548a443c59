"""公开 The public transparency page (no login): reports and fixes, recent fixes, staff at work."""

from __future__ import annotations

import pandas as pd
import pydeck as pdk
import streamlit as st

from twin import access, kpi
from twin.cases import case_table
from twin.deck import offline_deck
from ui.common import current_language, open_twin, t

LANG = current_language()
RECENT = 20
TIMEZONE = "Asia/Shanghai"

st.title(t("public.title", LANG))
st.caption(t("public.caption", LANG))

opened = open_twin(LANG)
if opened is None:
    st.stop()
store, twin_layers = opened

cases = store.read_cases()
if cases.empty:
    st.info(t("public.no_cases", LANG))
    st.stop()

# -- reports and fixes per month and per grid ----------------------------------------------------
st.subheader(t("public.over_time", LANG))
requested = pd.to_datetime(cases["requested_at"], utc=True).dt.tz_convert(TIMEZONE)
closed = pd.to_datetime(cases["closed_at"], utc=True).dt.tz_convert(TIMEZONE)
reported_col, fixed_col = t("public.reported", LANG), t("public.fixed", LANG)
monthly = pd.DataFrame({
    reported_col: requested.dt.strftime("%Y-%m").value_counts(),
    fixed_col: closed.dropna().dt.strftime("%Y-%m").value_counts(),
}).fillna(0).astype(int).sort_index()
st.bar_chart(monthly, stack=False)

per_grid = pd.DataFrame({
    "grid": cases["grid_code"].fillna("—"),
    reported_col: 1,
    fixed_col: closed.notna().astype(int),
}).groupby("grid").sum()
per_grid.index.name = t("public.grid", LANG)
st.dataframe(per_grid, width="stretch")

# -- recently fixed cases: anonymised, locations rounded to ~100 m --------------------------------
st.subheader(t("public.recent", LANG))
done = cases.loc[closed.notna()].assign(_closed=closed[closed.notna()])
done = done.sort_values("_closed", ascending=False).head(RECENT)
lon, lat = access.round_location(done["lon"], done["lat"])
recent = pd.DataFrame({
    t("public.category", LANG): done["service_code"].to_numpy(),
    t("public.grid", LANG): done["grid_code"].to_numpy(),
    t("public.closed_at", LANG): done["_closed"].dt.strftime("%Y-%m-%d").to_numpy(),
    t("public.lon", LANG): lon,
    t("public.lat", LANG): lat,
})  # no description, reporter, photos or exact place: they could identify people
st.dataframe(recent, hide_index=True, width="stretch")
if len(recent):
    points = pd.DataFrame({"lon": lon, "lat": lat})
    st.pydeck_chart(offline_deck(
        [pdk.Layer("ScatterplotLayer", points, id="public-fixed", get_position=["lon", "lat"],
                   get_radius=50, get_fill_color=[40, 160, 90, 160])],
        pdk.ViewState(longitude=float(points["lon"].mean()),
                      latitude=float(points["lat"].mean()), zoom=15), height=320,
    ), height=320)

# -- the work of grid workers and departments ----------------------------------------------------
st.subheader(t("public.staff", LANG))
table = case_table(cases)
for by, title in (("assignee", t("public.by_person", LANG)),
                  ("department", t("public.by_department", LANG))):
    if table[by].notna().any():
        work = kpi.indicators(table.loc[table[by].notna()], by=by)
        shown = pd.DataFrame({
            title: work[by],
            t("public.handled", LANG): work["closed"],
            t("public.ontime_rate", LANG): work["ontime_close_rate"].round(1),
        })
        st.dataframe(shown, hide_index=True, width="stretch")
