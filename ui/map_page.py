"""地图 The map page: layer toggles and legend, counts, the map, the picked feature, live events."""

from __future__ import annotations

import html

import streamlit as st

import layers as declared
from twin import deck
from ui.common import current_language, open_twin, t
from ui.live import live_events

LANG = current_language()

st.title(t("map.title", LANG))
st.caption(t("map.caption", LANG))

opened = open_twin(LANG)
if opened is None:
    st.stop()
store, twin_layers = opened

# -- layer toggles and legend (sidebar) ---------------------------------------------------------
drawable = [n for n, s in declared.registry().items() if n in twin_layers and s.geometry_type]
default_on = [n for n in drawable if declared.get_layer(n).style.visible]
with st.sidebar:
    st.subheader(t("map.layers", LANG))
    visible = st.multiselect(
        t("map.layers.pick", LANG),
        drawable,
        default=default_on,
        format_func=lambda name: declared.get_layer(name).title(LANG),
        key="map_layers",
        help=t("map.layers.help", LANG),
    )
    swatches = "".join(
        f'<div><span style="color:{e.hex}">■</span> {html.escape(e.title)}</div>'
        for e in deck.legend(visible, LANG)
    )
    if swatches:
        st.caption(t("map.legend", LANG))
        st.markdown(swatches, unsafe_allow_html=True)

# -- headline counts -----------------------------------------------------------------------------
counts = deck.map_counts(twin_layers)
labels = {
    "buildings": t("kpi.buildings", LANG),
    "households": t("kpi.households", LANG),
    "cameras": t("kpi.cameras", LANG),
    "sensors": t("kpi.sensors", LANG),
    "grid_cells": t("kpi.grid_cells", LANG),
}
for column, key in zip(st.columns(len(counts)), counts, strict=True):
    column.metric(labels[key], f"{counts[key]:,}")

# -- the map and the picked feature ------------------------------------------------------------
map_column, side_column = st.columns([3, 1])
with map_column:
    event = st.pydeck_chart(
        deck.make_deck(twin_layers, visible, LANG),
        on_select="rerun",
        selection_mode="single-object",
        key="map",
        height=deck.MAP_HEIGHT,
    )
with side_column:
    st.subheader(t("map.selected", LANG))
    picked = deck.selected_feature(event)
    if picked is None or picked[0] not in twin_layers:
        st.caption(t("map.select_hint", LANG))
    else:
        name, feature_id = picked
        spec = declared.get_layer(name)
        table = deck.feature_table(spec, twin_layers[name], feature_id, LANG)
        st.markdown(f"**{spec.title(LANG)}**")
        st.text(feature_id)
        if table.empty:
            st.caption(t("map.feature_missing", LANG))
        else:
            st.dataframe(
                table.rename(columns={"label": t("map.attribute", LANG),
                                      "value": t("map.value", LANG)}),
                hide_index=True,
                width="stretch",
            )
    live_events(store, LANG)
