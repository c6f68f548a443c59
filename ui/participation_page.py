"""参与 Participation: notices, polls and surveys; residents answer, staff publish, see results."""

from __future__ import annotations

import json

import pandas as pd
import pydeck as pdk
import streamlit as st
from streamlit.errors import StreamlitAPIException

from twin import trust
from twin.deck import TEXT_TOOLTIP, data_layer, offline_deck, polygon_rings
from twin.errors import TwinError
from twin.trust import participation
from ui.auth import origin, require_page
from ui.common import current_language, error_text, md, open_twin, t, widget_key

LANG = current_language()
user = require_page("page.participation", LANG)

st.title(t("part.title", LANG))
opened = open_twin(LANG)
if opened is None:
    st.stop()
store, twin_layers = opened
notices = participation.notices_for(store, user)
scope_names = {"building": t("roles.part.scope.building", LANG),
               "grid": t("roles.part.scope.grid", LANG),
               "community": t("roles.part.scope.community", LANG)}

# -- a resident's way to report a problem and follow it (ui/resident_page.py) --------------------
if trust.can(user, "page.my_reports"):
    try:
        st.page_link("ui/resident_page.py", label=t("roles.part.report_link", LANG),
                     icon=":material/report:")
    except StreamlitAPIException:  # run on its own (AppTest), outside the app's navigation
        pass

# -- notices and polls (what a resident sees; staff see all) -------------------------------------
st.subheader(t("part.notices", LANG))
if notices.empty:
    st.caption(t("part.none", LANG))
for notice in notices.to_dict("records"):
    with st.container(border=True):
        # titles, bodies, questions and choices are user text: escaped (md) or plain (st.text)
        st.markdown(f"**{md(notice['title'])}**")
        st.caption(f"{scope_names.get(notice['scope_kind'], md(notice['scope_kind']))} · "
                   f"{md(notice['scope_id'])}")
        if notice["body"]:
            st.text(str(notice["body"]))
        questions = json.loads(notice["questions"]) if notice["questions"] else []
        if not questions or not trust.can(user, "participation.answer"):
            continue
        if participation.has_answered(store, user, notice["id"]):
            st.success(t("part.answered", LANG))
            continue
        with st.form(f"answer_{notice['id']}"):
            picks = [st.radio(md(q["question"]), q["choices"], format_func=md,
                              key=f"q_{notice['id']}_{i}") for i, q in enumerate(questions)]
            if st.form_submit_button(t("part.submit", LANG)):
                try:
                    participation.answer(store, user, notice["id"], picks, origin=origin())
                    st.success(t("part.thanks", LANG))
                except TwinError as exc:
                    st.error(error_text(exc, LANG, what="answering a poll"))

# -- a resident's own data -------------------------------------------------------------------------
if trust.can(user, "data.export_own"):
    st.subheader(t("part.my_data", LANG))
    if st.button(t("part.prepare_export", LANG), key="own_prepare"):
        data = trust.export_own_data(store, user, origin=origin())
        st.session_state["own_data"] = json.dumps(data, ensure_ascii=False, indent=2)
    if st.session_state.get("own_data"):
        st.download_button(t("part.export_own", LANG), st.session_state["own_data"],
                           file_name="my_gridtwin_data.json", mime="application/json")

# -- publish (officials, admins, grid workers in their grids) ----------------------------------
if trust.can(user, "participation.publish"):
    st.subheader(t("part.publish", LANG))
    with st.form("publish"):
        kinds = {"notice": t("part.kind.notice", LANG), "poll": t("part.kind.poll", LANG),
                 "survey": t("part.kind.survey", LANG)}
        kind = st.selectbox(t("part.kind", LANG), participation.KINDS,
                            format_func=lambda k: kinds.get(k, k),
                            key=widget_key("pub_kind", LANG))
        scope_kind = st.selectbox(t("part.scope", LANG), participation.SCOPES,
                                  format_func=lambda k: scope_names.get(k, k),
                                  key=widget_key("pub_scope", LANG))
        scope_id = st.text_input(t("part.scope_id", LANG), key="pub_scope_id")
        title = st.text_input(t("part.notice_title", LANG), key="pub_title")
        body = st.text_area(t("part.body", LANG), key="pub_body")
        question = st.text_input(t("part.question", LANG), key="pub_question")
        choices = st.text_area(t("part.choices", LANG), key="pub_choices")
        if st.form_submit_button(t("part.publish_button", LANG)):
            questions = None
            if kind != "notice":
                questions = [{"question": question, "choices": choices.splitlines()}]
            try:
                made = participation.publish(store, user, kind=kind, scope_kind=scope_kind,
                                             scope_id=scope_id, title=title, body=body,
                                             questions=questions, origin=origin())
                st.success(t("part.published", LANG, id=md(made["id"])))
            except TwinError as exc:
                st.error(error_text(exc, LANG, what="publishing a notice"))

# -- results per building or grid, on the map ----------------------------------------------------
polls = notices.loc[notices["kind"] != "notice"] if not notices.empty else notices
if trust.can(user, "participation.results") and len(polls):
    st.subheader(t("part.results", LANG))
    poll_id = st.selectbox(t("part.poll", LANG), polls["id"].tolist(), key="res_poll",
                           format_func=lambda i: str(polls.set_index("id").loc[i, "title"]))
    by = st.radio(t("part.by", LANG), participation.RESULT_BY, horizontal=True, key="res_by")
    st.dataframe(participation.results(store, poll_id, by=by), hide_index=True, width="stretch")
    layer = participation.results_layer(store, poll_id, by=by, layers=twin_layers)
    if len(layer):
        # only what the map draws; every string goes through the deck's inert data
        data = pd.DataFrame({"id": layer["code"].astype(str).to_numpy(),
                             "tooltip": layer["tooltip"].to_numpy(),
                             "polygon": polygon_rings(layer.geometry.values)})
        centre = layer.union_all().centroid
        st.pydeck_chart(offline_deck(
            [data_layer("PolygonLayer", data, id="poll-results", get_polygon="polygon",
                        get_fill_color=[230, 120, 40, 150], pickable=True)],
            pdk.ViewState(longitude=centre.x, latitude=centre.y, zoom=15),
            tooltip=TEXT_TOOLTIP, height=360,
        ), height=360)
