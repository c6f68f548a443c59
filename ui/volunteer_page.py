"""志愿服务 A volunteer's phone page: where I am, open tasks near me, my tasks, check in and out.

Everything goes through twin.trust.volunteers: the page shows open tasks (places left, never
who took them) and the volunteer's own sign-ups, and passes the place the device reported (or
the volunteer tapped) to check-in and check-out, which the library measures in metres.
"""

from __future__ import annotations

import pandas as pd
import streamlit as st

from twin.errors import TwinError
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
from ui.community_service import choose_place, kind_names, my_points

LANG = current_language()
user = require_page("page.volunteer", LANG)
st.title(t("vol.title", LANG))
opened = open_twin(LANG)
if opened is None:
    st.stop()
store, twin_layers = opened
show_notice("volunteer")
kinds = kind_names(LANG)


def act(step, task_id: str, done: str, *args) -> None:
    """Run a library step for this task; a refusal is shown, success flashed after a rerun."""
    try:
        step(store, user, task_id, *args, origin=origin())
    except TwinError as exc:
        st.error(error_text(exc, LANG, what="a volunteer task"))
    else:
        notify(done, "volunteer")
        st.rerun()


def when(value, fmt: str = "%Y-%m-%d %H:%M") -> str:
    return local_time(pd.Series([value]), fmt).iloc[0]


def window(task) -> str:
    return f"{when(task['starts_at'])} – {when(task['ends_at'], '%H:%M')}"


# -- where am I: the device's location or a tap on the map -----------------------------------------
st.subheader(t("vol.where", LANG))
here = choose_place(twin_layers.get("grid_cells"), LANG, key="vol_place",
                    buildings=twin_layers.get("buildings"))
my_points(store, user, LANG)

# -- my tasks: check in and out on site ---------------------------------------------------------
st.subheader(t("vol.mine", LANG))
mine = volunteers.my_tasks(store, user)
active = mine.loc[mine["signup_status"] == "signed_up"] if len(mine) else mine
if active.empty:
    st.caption(t("vol.mine_none", LANG))
for task in active.head(10).to_dict("records"):
    with st.container(border=True, key=f"vol_mine_{task['id']}"):
        st.markdown(f"**{md(task['title'])}** · {kinds.get(task['kind'], task['kind'])}")
        st.caption(window(task))
        if pd.notna(task["hours"]):  # checked out
            st.caption(t("vol.done", LANG, hours=f"{float(task['hours']):.2f}"))
        elif pd.notna(task["checkin_at"]):
            st.caption(t("vol.checked_in", LANG, time=when(task["checkin_at"])))
            if st.button(t("vol.check_out", LANG), key=f"vol_out_{task['id']}",
                         disabled=here is None, type="primary"):
                act(volunteers.check_out, task["id"], t("vol.checked_out", LANG), *here)
        else:
            if st.button(t("vol.check_in", LANG), key=f"vol_in_{task['id']}",
                         disabled=here is None, type="primary"):
                act(volunteers.check_in, task["id"], t("vol.checked_in_now", LANG), *here)
            if st.button(t("vol.cancel", LANG), key=f"vol_cancel_{task['id']}"):
                act(volunteers.cancel_sign_up, task["id"], t("vol.cancelled", LANG))
        if here is None:
            st.caption(t("vol.need_place", LANG))

# -- open tasks near me ------------------------------------------------------------------------
st.subheader(t("vol.open", LANG))
tasks = volunteers.open_tasks(store, user, near=here)
held = set(active["id"]) if len(active) else set()
tasks = tasks.loc[~tasks["id"].isin(held)]
if tasks.empty:
    st.caption(t("vol.open_none", LANG))
for task in tasks.head(10).to_dict("records"):
    with st.container(border=True, key=f"vol_task_{task['id']}"):
        st.markdown(f"**{md(task['title'])}** · {kinds.get(task['kind'], task['kind'])}")
        line = t("vol.places", LANG, left=int(task["left"]), capacity=int(task["capacity"]))
        if "distance_m" in task:
            line += " · " + t("vol.distance", LANG, metres=f"{task['distance_m']:.0f}")
        st.caption(f"{window(task)} · {line}")
        if task["description"]:
            st.text(str(task["description"]))
        if st.button(t("vol.sign_up", LANG), key=f"vol_up_{task['id']}",
                     disabled=int(task["left"]) == 0):
            act(volunteers.sign_up, task["id"], t("vol.signed_up", LANG, title=task["title"]))
