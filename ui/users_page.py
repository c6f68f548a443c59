"""用户 Users: administrators list, create, change, disable and reset users (twin.trust.admin)."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from twin.errors import TwinError
from twin.trust import admin
from ui import organisations_view
from ui.auth import origin, require_page, t_role
from ui.common import current_language, error_text, local_time, md, present_store, t

LANG = current_language()
user = require_page("page.users", LANG)
st.title(t("users.title", LANG))
store = present_store()
if store is None:
    st.warning(t("users.no_store", LANG))
    st.stop()

FLASH = "users.flash"


def flash(text: str, password: str | None = None) -> None:
    """Keep a message (and a password to show once) for the next run, then rerun."""
    st.session_state[FLASH] = (text, password)
    st.rerun()


# a message of the last action; a new password is shown this once and then forgotten
shown = st.session_state.pop(FLASH, None)
if shown:
    st.success(shown[0])
    if shown[1]:
        st.code(shown[1], language=None)
        st.caption(t("users.password_once", LANG))

table = admin.users_table(store, user)
view = pd.DataFrame({
    t("users.col.username", LANG): table["username"],
    t("users.col.name", LANG): table["display_name"].fillna(""),
    t("users.col.role", LANG): table["role"].map(lambda r: t_role(r, LANG)),
    t("users.col.grids", LANG): table["grids"],
    t("users.col.enabled", LANG): table["enabled"],
    t("users.col.last_login", LANG): local_time(table["last_login_at"]).fillna("—"),
    t("users.col.failed", LANG): table["failed_logins"],
})
st.dataframe(view, hide_index=True, width="stretch", key="users_table")

roles = list(admin.assignable_roles())

# -- create ---------------------------------------------------------------------------------------
st.subheader(t("users.create", LANG))
with st.form("user_create", clear_on_submit=True):
    c1, c2, c3 = st.columns(3)
    username = c1.text_input(t("users.col.username", LANG), key="new_username")
    display = c2.text_input(t("users.col.name", LANG), key="new_display")
    role = c3.selectbox(t("users.col.role", LANG), roles, format_func=lambda r: t_role(r, LANG),
                        key="new_role")
    c4, c5, c6 = st.columns(3)
    grids = c4.text_input(t("users.grids_hint", LANG), key="new_grids")
    building = c5.text_input(t("users.building", LANG), key="new_building")
    resident = c6.text_input(t("users.resident", LANG), key="new_resident")
    org = st.text_input(t("orgs.user_org", LANG), key="new_org")
    password = st.text_input(t("users.password_optional", LANG), type="password",
                             key="new_password")
    if st.form_submit_button(t("users.create_button", LANG)):
        try:
            made = admin.add_user(store, user, username, role, display_name=display, grids=grids,
                                  building_code=building, resident_id=resident, org_id=org,
                                  password=password or None, origin=origin())
        except TwinError as exc:
            st.error(error_text(exc, LANG, what="creating a user"))
        else:
            flash(t("users.created", LANG, name=md(made.user.username)),
                  None if password else made.password)

# -- change -------------------------------------------------------------------------------------
st.subheader(t("users.change", LANG))
if table.empty:
    st.stop()
name = st.selectbox(t("users.pick", LANG), table["username"].tolist(), key="users_pick")
row = table.set_index("username").loc[name]
with st.form(f"user_change_{name}"):
    c1, c2, c3 = st.columns(3)
    new_role = c1.selectbox(t("users.col.role", LANG), roles, index=roles.index(row["role"]),
                            format_func=lambda r: t_role(r, LANG), key=f"edit_role_{name}")
    new_grids = c2.text_input(t("users.grids_hint", LANG), value=row["grids"],
                              key=f"edit_grids_{name}")
    enabled = c3.checkbox(t("users.col.enabled", LANG), value=bool(row["enabled"]),
                          key=f"edit_enabled_{name}")
    if st.form_submit_button(t("users.save", LANG)):
        try:
            admin.change_user(store, user, name, role=new_role, grids=new_grids,
                              disabled=not enabled, origin=origin())
        except TwinError as exc:
            st.error(error_text(exc, LANG, what="changing a user"))
        else:
            flash(t("users.saved", LANG, name=md(name)))

if st.button(t("users.reset", LANG), key=f"reset_{name}"):
    try:
        again = admin.reset_password(store, user, name, origin=origin())
    except TwinError as exc:
        st.error(error_text(exc, LANG, what="resetting a password"))
    else:
        flash(t("users.reset_done", LANG, name=md(name)), again.password)

# -- the organisations that govern with the community (layer organisations) -------------------
organisations_view.editor(store, user, LANG)
