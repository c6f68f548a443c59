"""组织 Organisations in the pages: the admin's editor, each organisation's indicators."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from twin import trust
from twin.errors import TwinError
from twin.layers import get_layer
from ui.auth import origin
from ui.common import error_text, md, t


def type_names(lang: str) -> dict[str, str]:
    """Organisation type → its name in *lang* (keys spelled out for the catalog test)."""
    return {
        "party_committee": t("orgs.type.party_committee", lang),
        "residents_committee": t("orgs.type.residents_committee", lang),
        "property_company": t("orgs.type.property_company", lang),
        "owners_committee": t("orgs.type.owners_committee", lang),
        "co_building_unit": t("orgs.type.co_building_unit", lang),
        "social_organisation": t("orgs.type.social_organisation", lang),
    }


def _labels(lang: str) -> dict[str, str]:
    return {
        "name": t("orgs.col.name", lang), "org_type": t("orgs.col.type", lang),
        "owned": t("orgs.col.owned", lang), "due": t("orgs.col.due", lang),
        "on_time": t("orgs.col.on_time", lang), "on_time_rate": t("orgs.col.on_time_rate", lang),
        "escalated": t("orgs.col.escalated", lang), "rework_rate": t("orgs.col.rework_rate", lang),
        "satisfaction": t("orgs.col.satisfaction", lang),
    }


def performance(store, user, lang: str) -> None:
    """Each organisation's indicators the user may see (the cockpit, an organisation's own)."""
    if not trust.can(user, "organisations.indicators"):
        return
    table = trust.organisation_indicators(store, user)
    if table.empty:
        return
    st.subheader(t("orgs.performance", lang))
    shown = table[["name", "org_type", "owned", "due", "on_time", "on_time_rate", "escalated",
                   "rework_rate", "satisfaction"]].copy()
    shown["org_type"] = shown["org_type"].map(type_names(lang)).fillna(shown["org_type"])
    for col in ("on_time_rate", "rework_rate", "satisfaction"):
        shown[col] = shown[col].round(1)
    st.dataframe(shown.rename(columns=_labels(lang)), hide_index=True, width="stretch",
                 key="orgs_performance")
    st.caption(t("orgs.performance_note", lang))


def public_performance(store, lang: str) -> None:
    """The organisations' work as the public may see it: no person, small counts hidden."""
    table = trust.public_organisations(store)
    if table.empty:
        return
    st.subheader(t("orgs.public", lang))
    types, labels, hidden = type_names(lang), _labels(lang), t("orgs.suppressed", lang)

    def figure(value: object, unit: str = "") -> str:
        return hidden if pd.isna(value) else f"{value:g}{unit}"

    # one line per organisation: readable on a phone, plain text (names are escaped)
    for row in table.itertuples(index=False):
        st.markdown(
            f"**{md(row.name)}** · {md(types.get(row.org_type, row.org_type))}  \n"
            f"{labels['owned']} {figure(row.owned)} · {labels['on_time_rate']} "
            f"{figure(row.on_time_rate)} · {labels['rework_rate']} {figure(row.rework_rate)} · "
            f"{labels['satisfaction']} {figure(row.satisfaction)}")
    st.caption(t("orgs.public_note", lang))


def editor(store, user, lang: str) -> None:
    """The administrator's editor of the organisations layer (its shapes come from files)."""
    st.subheader(t("orgs.editor", lang))
    if not st.toggle(t("orgs.editor_open", lang), key="orgs_editor_open"):
        return  # opening reads the contacts (personal data): audited, so only on request
    table = trust.organisations_for_edit(store, user, origin=origin())
    if table.empty:
        st.info(t("orgs.editor_empty", lang))
        return
    spec = get_layer("organisations")
    names = {c: spec.column(c).label(lang) for c in table.columns}
    types = list(type_names(lang))
    edited = st.data_editor(
        table, hide_index=True, width="stretch", num_rows="fixed", key="orgs_editor",
        disabled=["area_id"],
        column_config={
            **{c: st.column_config.TextColumn(names[c]) for c in table.columns},
            "org_type": st.column_config.SelectboxColumn(names["org_type"], options=types,
                                                         required=True),
            "working_days": st.column_config.SelectboxColumn(
                names["working_days"], options=["workdays", "daily"]),
            "valid_from": st.column_config.DateColumn(names["valid_from"]),
            "valid_to": st.column_config.DateColumn(names["valid_to"]),
        })
    st.caption(t("orgs.editor_hint", lang))
    if st.button(t("orgs.editor_save", lang), key="orgs_editor_save"):
        try:
            made = trust.save_organisations(store, user, pd.DataFrame(edited), origin=origin())
        except TwinError as exc:
            st.error(error_text(exc, lang, what="saving organisations"))
        else:
            st.success(t("orgs.editor_saved", lang, version=made.version))
