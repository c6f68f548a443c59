"""我的网格 My grid, for one hand on a phone: my cases first, then report by tapping the map.

No controls in the sidebar: the page is one column that reads top to bottom at 390 px.
"""

from __future__ import annotations

import streamlit as st

from twin import trust
from ui import picker
from ui.auth import current_user, origin
from ui.cases_view import NOTICE, case_detail, case_list, category_names
from ui.common import (
    current_language,
    error_text,
    md,
    notify,
    open_twin,
    show_notice,
    t,
    widget_key,
)
from ui.live import live_alarms

LANG = current_language()
PLACE_KEY = "mygrid.place"
FORM_KEY = "mygrid.form"

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
mine_cells = grid_cells.loc[grid_cells["grid_code"].isin(mine)]
names = ", ".join(sorted(mine_cells["name"].astype(str))) if "name" in mine_cells else ""
st.caption(t("mygrid.grids", LANG, grids=md(names or ", ".join(sorted(mine)))))
show_notice(NOTICE)

# -- my cases first ------------------------------------------------------------------------------
st.subheader(t("mygrid.cases", LANG))
table = trust.visible_cases(store, user, grid_cells)
open_cases = table.loc[table["state"] != "closed"]
chosen = case_list(open_cases, LANG, key="mygrid_cases", grid_cells=grid_cells, height=240)
if chosen:
    case_detail(store, user, chosen, grid_cells, LANG, key="mygrid",
                buildings=twin_layers.get("buildings"), compact=True)
else:
    st.caption(t("cases.pick", LANG))

# -- report: tap the map -------------------------------------------------------------------------
st.subheader(t("mygrid.report", LANG))
st.caption(t("casework.tap_hint", LANG))
form_round = st.session_state.setdefault(FORM_KEY, 0)  # a new round after each report
tapped = picker.pick_place(mine_cells, key=f"mygrid_pick_{form_round}",
                           picked=st.session_state.get(PLACE_KEY),
                           buildings=twin_layers.get("buildings"), cases=open_cases)
if tapped is not None and tapped != st.session_state.get(PLACE_KEY):
    st.session_state[PLACE_KEY] = tapped
    st.rerun()  # draw the marker where the finger was
located, failed = picker.device_location(t("casework.locate", LANG),
                                         key=f"mygrid_locate_{form_round}")
if located is not None and located != st.session_state.get(PLACE_KEY):
    st.session_state[PLACE_KEY] = located
    st.rerun()
if failed:
    st.warning(t("casework.locate_failed", LANG))
place = st.session_state.get(PLACE_KEY)
if place is None:
    st.info(t("casework.no_place", LANG))
else:
    st.caption(f"{t('mygrid.lon', LANG)} {place[0]:.6f} · {t('mygrid.lat', LANG)} {place[1]:.6f}")

cat_names = category_names(LANG)
# a report taken starts a new round (a fresh form); a refused one keeps what was typed
with st.form(f"report_case_{form_round}"):
    category = st.selectbox(t("mygrid.category", LANG), list(cat_names),
                            format_func=cat_names.__getitem__,
                            key=widget_key(f"report_cat_{form_round}", LANG))
    description = st.text_area(t("mygrid.description", LANG), height=80,
                               key=f"report_text_{form_round}")
    photo = st.file_uploader(t("mygrid.photo", LANG), type=["jpg", "jpeg", "png", "webp"],
                             key=f"report_photo_{form_round}")
    sent = st.form_submit_button(t("mygrid.submit", LANG), type="primary", width="stretch")
if sent:
    if place is None:
        st.error(t("casework.no_place", LANG))
    else:
        try:
            photos = [] if photo is None else [trust.store_photo(photo.getvalue())]
            case = trust.report_case(store, user, origin=origin(), category=category,
                                      lon=place[0], lat=place[1], description=description,
                                      source="patrol", grid_cells=grid_cells, photos=photos)
        except trust.OutsideGridsError as exc:
            near = exc.nearest or {}
            st.error(t("casework.outside", LANG, grid=md(near.get("name", "—")),
                       metres=near.get("distance_m", "—")))
            if near:
                st.session_state[PLACE_KEY] = (near["lon"], near["lat"])
                st.info(t("casework.moved", LANG, grid=md(near["name"])))
        except Exception as exc:  # the form's edge: a message, the form stays usable
            st.error(error_text(exc, LANG, what="reporting a case"))
        else:
            st.session_state[PLACE_KEY] = None
            st.session_state[FORM_KEY] = form_round + 1
            st.session_state["mygrid_cases-picked"] = case["id"]
            notify(t("mygrid.reported", LANG, id=case["id"]), NOTICE, toast=True)
            st.rerun()

live_alarms(store, LANG, tuple(sorted(mine)))
