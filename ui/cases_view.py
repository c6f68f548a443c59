"""Case widgets shared by the Cases and My grid pages: the list, the detail, the action buttons."""

from __future__ import annotations

import hashlib
import html
import logging

import pandas as pd
import streamlit as st

from twin import cases, trust
from twin.errors import TwinError
from ui.auth import origin
from ui.common import error_text, local_time, md, status_names, t

LOGGER = logging.getLogger(__name__)


def case_list(table: pd.DataFrame, lang: str, *, key: str) -> str | None:
    """A sortable list of cases (deadline first); returns the id of the row picked."""
    names = status_names(lang)
    shown = table.sort_values("deadline_at", na_position="last")
    frame = pd.DataFrame({
        t("case.col.id", lang): shown["id"].astype(str),
        t("case.col.status", lang): shown["status"].map(names).fillna(shown["status"]),
        t("case.col.state", lang): shown["state"].map(names).fillna(shown["state"]),
        t("case.col.category", lang): shown["service_code"],
        t("case.col.grid", lang): shown["grid_code"],
        t("case.col.deadline", lang): local_time(shown["deadline_at"]),
        t("case.col.description", lang): shown["description"],
    })
    # the list's rows are part of its key: a filter or a new case starts a fresh selection, so
    # a row number picked in one list never points into another (or past its end)
    rows_key = hashlib.blake2b("\n".join(shown["id"].astype(str)).encode(), digest_size=8)
    event = st.dataframe(frame, hide_index=True, width="stretch", on_select="rerun",
                         selection_mode="single-row", key=f"{key}-{rows_key.hexdigest()}",
                         height=320)
    rows = (event or {}).get("selection", {}).get("rows", []) if event else []
    rows = [r for r in rows if 0 <= r < len(shown)]
    return str(shown.iloc[rows[0]]["id"]) if rows else None


def case_detail(store, user, case_id: str, grid_cells, lang: str, *, key: str) -> None:
    """One case: its fields (as the role may see them), timers, history and allowed actions."""
    try:
        case = trust.read_case(store, user, case_id, grid_cells)
    except TwinError as exc:
        st.warning(error_text(exc, lang, what="opening a case"))
        return
    names = status_names(lang)
    st.subheader(t("case.detail", lang, id=md(case_id)))
    cols = st.columns(3)
    cols[0].metric(t("case.col.status", lang), md(names.get(case["status"], case["status"])))
    cols[1].metric(t("case.col.category", lang), md(case["service_code"]))
    deadline = case.get("deadline_at")
    cols[2].metric(t("case.col.deadline", lang),
                   "—" if deadline is None or pd.isna(deadline)
                   else local_time(pd.Series([deadline])).iloc[0])
    st.text(str(case.get("description") or ""))
    timer = (case["data"] or {}).get("timer") if isinstance(case["data"], dict) else None
    if timer:
        st.caption(t("case.timer", lang, stage=timer.get("stage"),
                     deadline=local_time(pd.Series([timer.get("deadline")])).iloc[0]))
    history = trust.case_history(store, user, case_id, grid_cells)
    if len(history):
        st.markdown(f"**{html.escape(t('case.history', lang))}**")
        st.dataframe(pd.DataFrame({
            t("case.col.time", lang): local_time(history["at"]),
            t("case.col.actor", lang): history["actor"],
            t("case.col.action", lang): history["action"],
            t("case.col.status", lang): history["to_status"].map(names).fillna(
                history["to_status"]),
            t("case.col.note", lang): history["note"],
        }), hide_index=True, width="stretch")
    if user is None:
        return
    actions = trust.allowed_actions(case, user)
    if not actions:
        st.caption(t("case.no_actions", lang))
        return
    labels = {a: (cases.TRANSITIONS_BY_ACTION[a].label_zh if lang.startswith("zh")
                  else cases.TRANSITIONS_BY_ACTION[a].label_en) for a in actions}
    with st.form(f"{key}-act"):
        action = st.selectbox(t("case.action", lang), actions, format_func=labels.__getitem__)
        note = st.text_input(t("case.note", lang))
        done = st.form_submit_button(t("case.apply", lang))
    if done:
        try:
            trust.transition_case(store, user, case_id, action, origin=origin(),
                                   grid_cells=grid_cells, note=note)
        except TwinError as exc:
            st.error(error_text(exc, lang, what="a case action"))
        else:
            st.success(t("case.applied", lang, action=labels[action]))
