"""议事协商 Proposals: residents propose at a place and support; the community adopts or declines.

Everything goes through twin.trust.proposals: residents see proposals with the proposer masked
(except their own), support each once, and read every decision's reason; officials and admins
adopt a proposal as a volunteer task or a case, or decline it, with a reason.
"""

from __future__ import annotations

import datetime as dt

import pandas as pd
import streamlit as st

from twin import trust
from twin.errors import TwinError, ValidationError
from twin.timeutil import local_zone
from twin.trust import my_reports, proposals
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
from ui.community_service import (
    choose_place,
    kind_names,
    my_points,
    proposal_kinds,
    proposals_map,
    status_names,
)

LANG = current_language()
user = require_page("page.proposals", LANG)
st.title(t("prop.title", LANG))
opened = open_twin(LANG)
if opened is None:
    st.stop()
store, twin_layers = opened
show_notice("proposals")
kinds, statuses = proposal_kinds(LANG), status_names(LANG)
cells = twin_layers.get("grid_cells")
my_points(store, user, LANG)


def done(message: str) -> None:
    notify(message, "proposals")
    st.rerun()


# -- propose at a place ------------------------------------------------------------------------
if trust.can(user, "proposals.propose"):
    st.subheader(t("prop.new", LANG))
    here = choose_place(cells, LANG, key="prop_place",
                        buildings=twin_layers.get("buildings"))
    with st.form("prop_form", clear_on_submit=True):
        kind = st.selectbox(t("prop.kind", LANG), list(kinds), format_func=kinds.__getitem__,
                            key="prop_kind")
        title = st.text_input(t("prop.title_field", LANG), key="prop_title",
                              max_chars=proposals.TITLE_MAX)
        body = st.text_area(t("prop.body", LANG), key="prop_body")
        if st.form_submit_button(t("prop.send", LANG), type="primary"):
            try:
                if here is None:
                    raise ValidationError(t("prop.need_place", LANG))
                made = proposals.propose(store, user, kind=kind, title=title, body=body,
                                         lon=here[0], lat=here[1], grid_cells=cells,
                                         origin=origin())
            except TwinError as exc:
                st.error(error_text(exc, LANG, what="a proposal"))
            else:
                done(t("prop.sent", LANG, title=md(made["title"])))

# -- the proposals: support once; decisions with their reasons ----------------------------------
rows = proposals.list_proposals(store, user)
st.subheader(t("prop.list", LANG))
if rows.empty:
    st.caption(t("prop.none", LANG))
else:
    proposals_map(store, user, cells, status=("open", "adopted"))
    st.caption(t("prop.map_legend", LANG))
may_support = trust.can(user, "proposals.support")
for row in rows.head(30).to_dict("records"):
    with st.container(border=True, key=f"prop_{row['id']}"):
        who = t("prop.by_you", LANG) if row["mine"] else (
            row["proposer"] if row["proposer"] != proposals.MASKED else t("prop.by_resident",
                                                                            LANG))
        st.markdown(f"**{md(row['title'])}** · {kinds.get(row['kind'], row['kind'])} · "
                    f"{statuses.get(row['status'], row['status'])}")
        st.caption(f"{local_time(pd.Series([row['created_at']])).iloc[0]} · {md(who)} · "
                   + t("prop.supports", LANG, count=int(row["supports"])))
        if row["body"]:
            st.text(str(row["body"]))
        if row["status"] != "open" and row["reason"]:
            st.caption(t("prop.reason", LANG) + " " + md(str(row["reason"])))
        if may_support and row["status"] == "open" and not row["mine"]:
            if row["supported"]:
                st.caption(t("prop.you_support", LANG))
            elif st.button(t("prop.support", LANG), key=f"prop_support_{row['id']}"):
                try:
                    proposals.support(store, user, row["id"], origin=origin())
                except TwinError as exc:
                    st.error(error_text(exc, LANG, what="supporting a proposal"))
                else:
                    done(t("prop.supported", LANG, title=md(row["title"])))

# -- the community decides: adopt as a task or a case, or decline, with a reason ----------------
if trust.can(user, "proposals.decide"):
    st.subheader(t("prop.review", LANG))
    waiting = rows.loc[rows["status"] == "open"] if len(rows) else rows
    if waiting.empty:
        st.caption(t("prop.review_none", LANG))
    else:
        labels = dict(zip(waiting["id"], waiting["title"] + " · " + t(
            "prop.supports", LANG, count="") + waiting["supports"].astype(str), strict=True))
        chosen = st.selectbox(t("prop.choose", LANG), list(labels), key="prop_choose",
                              format_func=labels.__getitem__)
        outcome = st.radio(t("prop.outcome", LANG), ["task", "case"], horizontal=True,
                           key="prop_outcome", format_func=lambda o: t("prop.as_task", LANG)
                           if o == "task" else t("prop.as_case", LANG))
        with st.form("prop_decide"):
            reason = st.text_area(t("prop.reason_field", LANG), key="prop_reason")
            spec: dict = {}
            if outcome == "task":
                vol_kinds = kind_names(LANG)
                task_kind = st.selectbox(t("vol.kind", LANG), list(vol_kinds),
                                         format_func=vol_kinds.__getitem__, key="prop_task_kind")
                day = st.date_input(t("vol.day", LANG), key="prop_task_day",
                                    value=dt.date.today() + dt.timedelta(days=7))
                start = st.time_input(t("vol.start", LANG), dt.time(9, 0), key="prop_task_start")
                hours = st.number_input(t("vol.hours", LANG), 0.5, 12.0, 2.0, 0.5,
                                        key="prop_task_hours")
                capacity = st.number_input(t("vol.capacity", LANG), 1, 100, 3,
                                           key="prop_task_capacity")
                starts = pd.Timestamp(dt.datetime.combine(day, start)).tz_localize(
                    local_zone())
                spec = {"task": {"kind": task_kind, "starts_at": starts,
                                 "ends_at": starts + pd.Timedelta(hours=float(hours)),
                                 "capacity": int(capacity)}}
            else:
                cats = my_reports.categories_for_report(LANG)
                names = dict(zip(cats["code"], cats["name"], strict=True))
                spec = {"case": {"category": st.selectbox(
                    t("prop.category", LANG), list(names), format_func=names.__getitem__,
                    key="prop_category")}}
            adopt = st.form_submit_button(t("prop.adopt", LANG), type="primary")
            decline = st.form_submit_button(t("prop.decline", LANG))
            if adopt or decline:
                try:
                    made = proposals.decide(store, user, chosen, adopt=adopt, reason=reason,
                                            outcome=outcome, grid_cells=cells, origin=origin(),
                                            **(spec if adopt else {}))
                except TwinError as exc:
                    st.error(error_text(exc, LANG, what="deciding a proposal"))
                else:
                    done(t("prop.decided", LANG, status=statuses[made["status"]]))
