"""志愿服务管理 Organisers post volunteer tasks, follow sign-ups and hours, points and the ledger.

Everything goes through twin.trust.volunteers: a grid worker posts and follows tasks in their
own grids; officials and admins everywhere; admins check the points ledger for silent edits.
"""

from __future__ import annotations

import datetime as dt

import pandas as pd
import streamlit as st

from twin import trust
from twin.errors import TwinError, ValidationError
from twin.timeutil import local_zone
from twin.trust import volunteers
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
from ui.community_service import choose_place, grid_names, indicators, kind_names

LANG = current_language()
user = require_page("page.volunteer_admin", LANG)
st.title(t("vola.title", LANG))
opened = open_twin(LANG)
if opened is None:
    st.stop()
store, twin_layers = opened
cells = twin_layers.get("grid_cells")
show_notice("volunteer_admin")
kinds = kind_names(LANG)

# -- post a task at a place ------------------------------------------------------------------
if trust.can(user, "volunteers.post"):
    st.subheader(t("vola.post", LANG))
    here = choose_place(cells, LANG, key="vola_place", locate=False,
                        buildings=twin_layers.get("buildings"))
    with st.form("vola_form"):
        kind = st.selectbox(t("vol.kind", LANG), list(kinds), format_func=kinds.__getitem__,
                            key="vola_kind")
        title = st.text_input(t("vola.task_title", LANG), key="vola_title")
        description = st.text_area(t("vola.description", LANG), key="vola_description")
        day = st.date_input(t("vol.day", LANG), value=dt.date.today() + dt.timedelta(days=3),
                            key="vola_day")
        start = st.time_input(t("vol.start", LANG), dt.time(9, 0), key="vola_start")
        hours = st.number_input(t("vol.hours", LANG), 0.5, 12.0, 2.0, 0.5, key="vola_hours")
        capacity = st.number_input(t("vol.capacity", LANG), 1, 100, 4, key="vola_capacity")
        radius = st.number_input(t("vola.radius", LANG), 10, 1000, 100, 10, key="vola_radius")
        if st.form_submit_button(t("vola.send", LANG), type="primary"):
            starts = pd.Timestamp(dt.datetime.combine(day, start)).tz_localize(local_zone())
            try:
                if here is None:
                    raise ValidationError(t("prop.need_place", LANG))
                made = volunteers.post_task(
                    store, user, kind=kind, title=title, description=description,
                    lon=here[0], lat=here[1], starts_at=starts,
                    ends_at=starts + pd.Timedelta(hours=float(hours)), capacity=int(capacity),
                    tolerance_m=float(radius), grid_cells=cells, origin=origin())
            except TwinError as exc:
                st.error(error_text(exc, LANG, what="posting a task"))
            else:
                notify(t("vola.posted", LANG, title=md(made["title"])), "volunteer_admin")
                st.rerun()

# -- the tasks, their sign-ups and hours ---------------------------------------------------------
st.subheader(t("vola.tasks", LANG))
tasks = volunteers.posted_tasks(store, user, grid_cells=cells)
names = grid_names(twin_layers)
if tasks.empty:
    st.caption(t("vol.open_none", LANG))
else:
    st.dataframe(pd.DataFrame({
        t("vola.col.start", LANG): local_time(tasks["starts_at"]),
        t("vola.task_title", LANG): tasks["title"],
        t("vol.kind", LANG): tasks["kind"].map(kinds),
        t("svc.col.grid", LANG): tasks["grid_code"].map(lambda g: names.get(g, g)),
        t("vola.col.taken", LANG): tasks["taken"].astype(str) + " / "
        + tasks["capacity"].astype(str),
        t("vola.col.status", LANG): tasks["status"],
    }), hide_index=True, width="stretch", height=260)
    labels = dict(zip(tasks["id"], local_time(tasks["starts_at"]) + " · " + tasks["title"],
                      strict=True))
    chosen = st.selectbox(t("vola.roster", LANG), list(labels), format_func=labels.__getitem__,
                          key="vola_roster")
    try:
        roster = volunteers.roster(store, user, chosen, grid_cells=cells, origin=origin())
    except TwinError as exc:
        st.error(error_text(exc, LANG, what="a task's roster"))
    else:
        st.dataframe(pd.DataFrame({
            t("vola.col.name", LANG): roster["name"],
            t("vola.col.status", LANG): roster["status"],
            t("vola.col.checkin", LANG): local_time(roster["checkin_at"]),
            t("vola.col.checkout", LANG): local_time(roster["checkout_at"]),
            t("svc.col.hours", LANG): roster["hours"],
        }), hide_index=True, width="stretch")

# -- indicators, points and the ledger ----------------------------------------------------------
st.subheader(t("svc.indicators", LANG))
indicators(store, user, LANG, names)
if trust.can(user, "points.all"):
    st.subheader(t("vola.points", LANG))
    balances = volunteers.points_balances(store, user, origin=origin())
    st.dataframe(pd.DataFrame({
        t("vola.col.name", LANG): balances["name"],
        t("svc.col.points", LANG): balances["points"],
        t("vola.col.entries", LANG): balances["entries"],
    }), hide_index=True, width="stretch", height=220)
if trust.can(user, "points.verify") and st.button(t("vola.verify", LANG), key="vola_verify"):
    check = volunteers.verify_points(store, user, origin=origin())
    if check.ok:
        st.success(t("vola.intact", LANG, rows=check.rows))
    else:
        st.error(t("vola.broken", LANG, seq=check.first_bad_seq, message=check.message))
