"""我的网格 My grid (phone width): my grids' map, my open cases by deadline, alarms, reports."""

from __future__ import annotations

import streamlit as st

from twin import cases, trust
from twin.errors import TwinError
from ui import mapview
from ui.auth import current_user, origin
from ui.cases_view import case_detail, case_list
from ui.common import current_language, error_text, md, open_twin, t
from ui.live import live_alarms

LANG = current_language()
user = current_user()
st.title(t("mygrid.title", LANG))
opened = open_twin(LANG)
if opened is None or user is None:
    st.stop()
store, twin_layers = opened
grid_cells = twin_layers.get("grid_cells")
mine = frozenset(trust.unit_grids_of(user, grid_cells))
if not mine:
    st.info(t("mygrid.none", LANG))
    st.stop()
st.caption(t("mygrid.grids", LANG, grids=md(", ".join(sorted(mine)))))

controls = mapview.sidebar_controls(LANG, default_layers=("grid_cells", "buildings", "sensors",
                                                          "cases", "alarms"))
scope = mapview.drill_scope(twin_layers, LANG, grids=mine)
data = mapview.cockpit_data(store, twin_layers, controls, scope, LANG)
mapview.kpi_tiles(data.kpis, LANG)
event = mapview.draw_map(data, controls, LANG, key="mygrid_map")
picked = mapview.deck.selected_feature(event)
mapview.feature_detail(store, twin_layers, data, picked, user, LANG)

st.subheader(t("mygrid.cases", LANG))
table = trust.visible_cases(store, user, grid_cells)
open_cases = table.loc[table["state"] != "closed"]
chosen = case_list(open_cases, LANG, key="mygrid_cases")
if chosen:
    case_detail(store, user, chosen, grid_cells, LANG, key="mygrid")

live_alarms(store, LANG, tuple(sorted(mine)))

st.subheader(t("mygrid.report", LANG))
categories = cases.load_categories()
cat_names = dict(zip(categories["service_code"],
                     categories["name_zh" if LANG.startswith("zh") else "name_en"], strict=True))
mine_cells = grid_cells.loc[grid_cells["grid_code"].isin(mine)]
centre = mine_cells.geometry.union_all().representative_point()
with st.form("report_case"):
    category = st.selectbox(t("mygrid.category", LANG), list(cat_names),
                            format_func=lambda c: f"{c} {cat_names[c]}")
    c1, c2 = st.columns(2)
    lon = c1.number_input(t("mygrid.lon", LANG), value=round(centre.x, 6), format="%.6f")
    lat = c2.number_input(t("mygrid.lat", LANG), value=round(centre.y, 6), format="%.6f")
    description = st.text_area(t("mygrid.description", LANG))
    photo = st.file_uploader(t("mygrid.photo", LANG), type=["jpg", "jpeg", "png", "webp"])
    sent = st.form_submit_button(t("mygrid.submit", LANG))
if sent:
    try:
        photos = [] if photo is None else [trust.store_photo(photo.getvalue())]
        case = trust.report_case(store, user, origin=origin(), category=category, lon=lon,
                                  lat=lat, description=description, source="patrol",
                                  grid_cells=grid_cells, photos=photos)
    except TwinError as exc:
        st.error(error_text(exc, LANG, what="reporting a case"))
    else:
        st.success(t("mygrid.reported", LANG, id=case["id"]))
