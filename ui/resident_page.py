"""我的反映 My reports: a resident reports a problem with a photo and follows their reports.

Everything goes through twin.trust.my_reports (the same report function grid workers use);
the page shows only what it returns: the resident's own reports, nobody else's name.
"""

from __future__ import annotations

import pandas as pd
import streamlit as st

from twin import settings
from twin.deck import (
    TEXT_TOOLTIP,
    data_layer,
    fit_view,
    offline_deck,
    polygon_rings,
    selected_feature,
)
from twin.errors import TwinError
from twin.trust import my_reports
from ui.auth import origin, require_page
from ui.common import (
    current_language,
    error_text,
    local_time,
    md,
    notify,
    open_twin,
    show_notice,
    t,
)
from ui.community_service import my_points

LANG = current_language()
user = require_page("page.my_reports", LANG)
st.title(t("roles.rep.title", LANG))
opened = open_twin(LANG)
if opened is None:
    st.stop()
store, twin_layers = opened

PLACE = "rep_place"
MAP_PICK = "rep_map"
MAP_WIDTH, MAP_HEIGHT = 340, 320  # fitted for a phone: the whole community in view

show_notice("resident")
my_points(store, user, LANG)  # points earned for valid reports, poll answers, proposals

buildings = twin_layers.get("buildings")
places = my_reports.places(user, buildings)
codes = places["building_code"].tolist()
names = dict(zip(places["building_code"], places["name"], strict=True))

# -- where: tap a building on the map, or choose it from the list ---------------------------------
st.subheader(t("roles.rep.new", LANG))
# the tap of the last run (the map's state), read before the list and the highlight are drawn
tapped = selected_feature(st.session_state.get(MAP_PICK))
if tapped and tapped[1] in names and st.session_state.get("rep_last_tap") != tapped[1]:
    st.session_state[PLACE] = st.session_state["rep_last_tap"] = tapped[1]
if buildings is not None and len(buildings) and codes:
    chosen = st.session_state.get(PLACE, codes[0])
    data = pd.DataFrame({"id": buildings["building_code"].astype(str).to_numpy(),
                         "tooltip": buildings["building_code"].astype(str).map(names).to_numpy(),
                         "polygon": polygon_rings(buildings.geometry.values)})
    data["fill"] = [[240, 140, 40, 220] if c == chosen else [40, 120, 200, 150]
                    for c in data["id"]]
    context = []
    area = twin_layers.get("community")
    extent = area if area is not None and len(area) else buildings  # the whole community
    if area is not None and len(area):  # the community's outline: where a report may be placed
        context.append(data_layer(
            "PolygonLayer", pd.DataFrame({"polygon": polygon_rings(area.geometry.values)}),
            id="rep-area", get_polygon="polygon", filled=True, stroked=True,
            get_fill_color=[255, 255, 255, 12], get_line_color=[160, 170, 180],
            line_width_min_pixels=1, pickable=False))
    st.pydeck_chart(offline_deck(
        [*context,
         data_layer("PolygonLayer", data, id="rep-buildings", get_polygon="polygon",
                    get_fill_color="fill", get_line_color=[20, 60, 120],
                    line_width_min_pixels=1, pickable=True, auto_highlight=True)],
        fit_view(tuple(extent.total_bounds), width=MAP_WIDTH, height=MAP_HEIGHT),
        tooltip=TEXT_TOOLTIP, height=MAP_HEIGHT,
    ), height=MAP_HEIGHT, on_select="rerun", selection_mode="single-object", key=MAP_PICK)
    st.caption(t("roles.rep.map_hint", LANG))
if not codes:
    st.info(t("roles.rep.no_places", LANG))
    st.stop()
place = st.selectbox(t("roles.rep.place", LANG), codes, key=PLACE,
                     format_func=lambda c: f"{names[c]} ({c})")

# -- what, with a photo ----------------------------------------------------------------------
cats = my_reports.categories_for_report(LANG)
cat_names = dict(zip(cats["code"], cats["name"], strict=True))
with st.form("rep_form", clear_on_submit=True):
    category = st.selectbox(t("roles.rep.category", LANG), cats["code"].tolist(),
                            format_func=cat_names.__getitem__, key="rep_category")
    description = st.text_area(t("roles.rep.description", LANG), key="rep_description")
    photo = st.file_uploader(t("roles.rep.photo", LANG), type=["jpg", "jpeg", "png", "webp"],
                             key="rep_photo",  # the library's limit, shown by the browser too
                             max_upload_size=max(1, settings.get("upload_max_bytes") >> 20))
    if st.form_submit_button(t("roles.rep.send", LANG), type="primary"):
        where = places.set_index("building_code").loc[place]
        try:
            case = my_reports.report_problem(
                store, user, category=category, description=description,
                lon=float(where["lon"]), lat=float(where["lat"]),
                photo=photo.getvalue() if photo is not None else None,
                address=names[place], grid_cells=twin_layers.get("grid_cells"), origin=origin())
        except TwinError as exc:
            st.error(error_text(exc, LANG, what="reporting a problem"))
        else:
            notify(t("roles.rep.sent", LANG, id=md(case["id"])), "resident", toast=True)
            st.session_state["rep_follow"] = case["id"]
            st.rerun()

# -- follow: my reports, their status and steps in plain words ------------------------------
st.subheader(t("roles.rep.mine", LANG))
mine = my_reports.my_reports(store, user, LANG)
if mine.empty:
    st.caption(t("roles.rep.none", LANG))
    st.stop()
when = local_time(mine["requested_at"])
for i, report in enumerate(mine.head(20).to_dict("records")):  # cards: readable on a phone
    with st.container(border=True):
        done = t("roles.rep.finished", LANG) if report["finished"] else t("roles.rep.open", LANG)
        st.markdown(f"**{md(report['category'])}** · {md(report['status_text'])} · {done}")
        st.caption(f"{when.iloc[i]} · {t('roles.rep.photo_count', LANG, n=report['photos'])}")
        st.text(str(report["description"]))
ids = mine["id"].tolist()
if st.session_state.get("rep_follow") not in ids:
    st.session_state["rep_follow"] = ids[0]
label = dict(zip(ids, local_time(mine["requested_at"]) + " · " + mine["category"], strict=True))
follow = st.selectbox(t("roles.rep.follow", LANG), ids, key="rep_follow",
                      format_func=label.__getitem__)
row = mine.set_index("id").loc[follow]
state = t("roles.rep.finished", LANG) if row["finished"] else t("roles.rep.open", LANG)
st.markdown(f"**{md(row['status_text'])}** · {state}")
steps = my_reports.report_steps(store, user, follow, LANG)
st.dataframe(pd.DataFrame({
    t("roles.rep.col.when", LANG): local_time(steps["at"]),
    t("roles.rep.col.step", LANG): steps["step"],
    t("roles.rep.col.status", LANG): steps["status_text"],
    t("roles.rep.col.by", LANG): steps["by"],
}), hide_index=True, width="stretch", key="rep_steps")
