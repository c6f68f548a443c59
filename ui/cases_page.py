"""案件 Cases: a filterable list, one case's detail with history and timers, the allowed actions."""

from __future__ import annotations

import streamlit as st

from twin import trust
from ui.auth import current_user
from ui.cases_view import NOTICE, case_detail, case_list, grid_names
from ui.common import current_language, open_twin, show_notice, status_names, t

LANG = current_language()
user = current_user()
st.title(t("cases.title", LANG))
opened = open_twin(LANG)
if opened is None:
    st.stop()
store, twin_layers = opened
grid_cells = twin_layers.get("grid_cells")
table = trust.visible_cases(store, user, grid_cells)

names = status_names(LANG)
f1, f2, f3 = st.columns(3)
states = f1.multiselect(t("cases.filter.state", LANG), ["overdue", "warning", "open", "closed"],
                        default=["overdue", "warning", "open"], format_func=names.__getitem__,
                        key="cases_state")
named = grid_names(grid_cells)
grids = f2.multiselect(t("cases.filter.grid", LANG), sorted(table["grid_code"].dropna().unique()),
                       format_func=lambda c: named.get(c, c), key="cases_grid",
                       placeholder=t("casework.all_grids", LANG))
text = f3.text_input(t("cases.filter.text", LANG), key="cases_text")
shown = table.loc[table["state"].isin(states)]
if grids:
    shown = shown.loc[shown["grid_code"].isin(grids)]
if text:
    shown = shown.loc[shown["description"].astype(str).str.contains(text, regex=False)
                      | shown["id"].astype(str).str.contains(text, regex=False)]
st.caption(t("cases.count", LANG, count=len(shown), total=len(table)))
show_notice(NOTICE)
picked = case_list(shown, LANG, key="cases_list", grid_cells=grid_cells)
if picked:
    case_detail(store, user, picked, grid_cells, LANG, key="cases",
                buildings=twin_layers.get("buildings"))
else:
    st.caption(t("cases.pick", LANG))
