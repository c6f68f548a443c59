"""分析 Analysis (planners): the planner queries of twin.query, drawn on the map, exported."""

from __future__ import annotations

import tempfile
from pathlib import Path

import geopandas as gpd
import pandas as pd
import pydeck as pdk
import streamlit as st

from twin import deck, query
from twin.errors import TwinError
from ui.common import current_language, error_text, open_twin, t

LANG = current_language()
st.title(t("analysis.title", LANG))
opened = open_twin(LANG)
if opened is None:
    st.stop()
store, twin_layers = opened

QUERIES = {
    "coverage": (t("analysis.q.coverage", LANG), lambda: query.coverage(store, output="grids")),
    "blind_spots": (t("analysis.q.blind_spots", LANG),
                    lambda: query.coverage(store, output="blind_spots")),
    "parking": (t("analysis.q.parking", LANG), lambda: query.parking_balance(store, level="grid")),
    "life_circles": (t("analysis.q.life_circles", LANG), lambda: query.life_circles(store)),
    "hot_spots": (t("analysis.q.hot_spots", LANG), lambda: query.hot_spots(store, "cases")),
    "counts": (t("analysis.q.counts", LANG), lambda: query.counts_per_grid(store, "cases")),
}
name = st.selectbox(t("analysis.pick", LANG), list(QUERIES),
                    format_func=lambda q: QUERIES[q][0], key="analysis_query")
if st.button(t("analysis.run", LANG), key="analysis_run"):
    try:
        st.session_state["analysis_result"] = (name, QUERIES[name][1]())
    except (TwinError, ImportError) as exc:
        st.session_state.pop("analysis_result", None)
        st.error(t("analysis.failed", LANG, error=error_text(exc, LANG, what="an analysis")))
stored = st.session_state.get("analysis_result")
if not stored or stored[0] != name:
    st.caption(t("analysis.hint", LANG))
    st.stop()
result = stored[1]
frame = result.frame
st.caption(t("analysis.rows", LANG, count=len(frame), method=result.method))
if isinstance(frame, gpd.GeoDataFrame) and len(frame):
    shown = frame.to_crs(4326)
    attrs = [c for c in shown.columns if c != shown.geometry.name][:6]
    text = pd.Series(QUERIES[name][0], index=shown.index, dtype="string")
    for col in attrs:
        text = text + ("\n" + col + ": " + shown[col].astype("string")).fillna("")
    geo = gpd.GeoDataFrame({"tooltip": text.astype(object)}, geometry=shown.geometry.values,
                           crs=4326)
    layer = pdk.Layer("GeoJsonLayer", geo.__geo_interface__, id="result", pickable=True,
                      filled=True, stroked=True, get_fill_color=[244, 180, 0, 120],
                      get_line_color=[255, 255, 255, 200], line_width_min_pixels=1,
                      point_radius_min_pixels=4)
    base = [x for x in deck.make_deck(twin_layers, ["roads", "grid_cells"], LANG).layers]
    st.pydeck_chart(deck.offline_deck([*base, layer], deck.fit_view(tuple(shown.total_bounds)),
                                      tooltip=deck.TEXT_TOOLTIP, height=520),
                    key="analysis_map", height=520)
st.dataframe(pd.DataFrame(frame).drop(columns="geometry", errors="ignore"), width="stretch",
             hide_index=True)
if result.summary is not None:
    st.dataframe(result.summary, width="stretch")

with tempfile.TemporaryDirectory() as folder:
    cols = st.columns(3)
    formats = (("csv", "text/csv"), ("geojson", "application/geo+json"),
               ("gpkg", "application/geopackage+sqlite3"))
    for col, (ext, mime) in zip(cols, formats, strict=True):
        if ext != "csv" and not isinstance(frame, gpd.GeoDataFrame):
            continue
        path = result.to_file(Path(folder) / f"{name}.{ext}")
        col.download_button(t("analysis.download", LANG, format=ext.upper()), path.read_bytes(),
                            file_name=path.name, mime=mime, key=f"dl_{ext}")
