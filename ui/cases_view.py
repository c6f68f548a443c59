"""Case widgets shared by the Cases and My grid pages: the list, the detail, each step's form.

What a form offers (departments, eligible people, categories, the score's scale) and whether
the user may take the step come from the library (:mod:`twin.trust.casework`); after a step
the page runs again, so lists and detail show the case as it is now and the form is empty.
"""

from __future__ import annotations

import hashlib
import html
import logging
from datetime import datetime, time

import pandas as pd
import streamlit as st

from twin import cases, trust
from twin.errors import TwinError
from twin.timeutil import local_zone, to_local
from ui import picker
from ui.auth import origin
from ui.common import error_text, local_time, md, notify, status_names, t

LOGGER = logging.getLogger(__name__)

PHOTO_TYPES = ["jpg", "jpeg", "png", "webp"]
NOTICE = "cases"  # the notice the Cases and My grid pages share (ui.common.notify)


def category_names(lang: str) -> dict[str, str]:
    """Service code → category name in *lang* (never the bare code in a list)."""
    table = trust.category_choices()
    column = "name_zh" if lang.startswith("zh") else "name_en"
    return dict(zip(table["service_code"], table[column], strict=True))


def grid_names(grid_cells) -> dict[str, str]:
    """Unit grid code → its name (the code when it has none)."""
    if grid_cells is None or "name" not in grid_cells:
        return {}
    names = grid_cells["name"].astype(str).where(grid_cells["name"].notna(),
                                                 grid_cells["grid_code"].astype(str))
    return dict(zip(grid_cells["grid_code"].astype(str), names, strict=True))


def case_list(table: pd.DataFrame, lang: str, *, key: str, grid_cells=None,
              height: int = 320) -> str | None:
    """A list of cases (deadline first); returns the id of the case picked (kept across steps)."""
    names = status_names(lang)
    cats = category_names(lang)
    grids = grid_names(grid_cells)
    shown = table.sort_values("deadline_at", na_position="last")
    frame = pd.DataFrame({
        t("case.col.id", lang): shown["id"].astype(str),
        t("case.col.status", lang): shown["status"].map(names).fillna(shown["status"]),
        t("case.col.state", lang): shown["state"].map(names).fillna(shown["state"]),
        t("case.col.category", lang): shown["service_code"].map(cats).fillna(
            shown["service_code"]),
        t("case.col.grid", lang): shown["grid_code"].map(grids).fillna(shown["grid_code"]),
        t("case.col.deadline", lang): local_time(shown["deadline_at"]),
        t("case.col.description", lang): shown["description"],
    })
    # the list's rows are part of its key: a step that reorders the list starts a fresh
    # selection (a row number never points at another case); the case picked is kept by id
    rows_key = hashlib.blake2b("\n".join(shown["id"].astype(str)).encode(), digest_size=8)
    # (and the language: the table's column headers are drawn anew in the other language)
    event = st.dataframe(frame, hide_index=True, width="stretch", on_select="rerun",
                         selection_mode="single-row",
                         key=f"{key}-{lang}-{rows_key.hexdigest()}", height=height)
    rows = (event or {}).get("selection", {}).get("rows", []) if event else []
    rows = [r for r in rows if 0 <= r < len(shown)]
    kept = f"{key}-picked"
    if rows:
        st.session_state[kept] = str(shown.iloc[rows[0]]["id"])
    picked = st.session_state.get(kept)
    return picked if picked in set(shown["id"].astype(str)) else None


def stage_labels(lang: str) -> dict[str, str]:
    """Timer stage → its name in *lang*."""
    return {"file": t("casework.stage.file", lang), "dispatch": t("casework.stage.dispatch", lang),
            "handle": t("casework.stage.handle", lang), "check": t("casework.stage.check", lang),
            "close": t("casework.stage.close", lang), "total": t("casework.stage.total", lang)}


def unit_labels(lang: str) -> dict[str, str]:
    """Time-limit unit → its name in *lang*."""
    return {"urgent_hours": t("casework.unit.urgent_hours", lang),
            "working_hours": t("casework.unit.working_hours", lang),
            "working_days": t("casework.unit.working_days", lang),
            "calendar_days": t("casework.unit.calendar_days", lang)}


def supervision_labels(lang: str) -> dict[str, str]:
    """Supervision (督办) kind → its name in *lang*."""
    return {"timeout": t("casework.supervise.timeout", lang),
            "leader": t("casework.supervise.leader", lang),
            "key": t("casework.supervise.key", lang)}


def photo_labels(lang: str) -> dict[str, str]:
    """Photo kind of a case → its caption in *lang*."""
    return {"photos": t("casework.photos.report", lang),
            "photos_before": t("casework.photos.before", lang),
            "photos_after": t("casework.photos.after", lang),
            "photos_check": t("casework.photos.check", lang)}


def _local(ts) -> str:
    if ts is None or (not isinstance(ts, str) and pd.isna(ts)):
        return "—"
    return local_time(pd.Series([ts])).iloc[0]


def _detail_text(action: str, record: dict, lang: str) -> str:
    """What a history step did, in words (names, not codes)."""
    if action == "dispatch":
        who = " · ".join(x for x in (record.get("department"), record.get("assignee")) if x)
        return t("casework.did.dispatch", lang, to=who or "—")
    if action == "recategorise":
        return t("casework.did.recategorise", lang, old=record.get("old", ""),
                 new=record.get("new", ""))
    if action == "extend" and record.get("new_deadline"):
        return t("casework.did.extend", lang, deadline=_local(record["new_deadline"]))
    if action == "evaluate" and record.get("score") is not None:
        return t("casework.did.evaluate", lang, score=f"{float(record['score']):g}")
    if action == "supervise" and record.get("kind"):
        return supervision_labels(lang).get(record["kind"], "")
    return ""


def case_detail(store, user, case_id: str, grid_cells, lang: str, *, key: str,
                buildings=None, compact: bool = False) -> None:
    """One case: place, people, timers, photos, history and the steps the user may take."""
    try:
        card = trust.case_card(store, user, case_id, grid_cells, lang)
    except TwinError as exc:
        st.warning(error_text(exc, lang, what="opening a case"))
        return
    case = card["case"]
    st.subheader(t("case.detail", lang, id=md(case_id)))
    cols = st.columns(2 if compact else 3)
    cols[0].metric(t("case.col.status", lang), card["status"])
    cols[1].metric(t("case.col.category", lang), card["category"])
    if not compact:
        cols[2].metric(t("case.col.grid", lang), card["grid"] or "—")
    left, right = (st.container(), st.container()) if compact else st.columns(2)
    with left:
        st.markdown(md(str(case.get("description") or "")))
        facts = [(t("case.col.grid", lang), card["grid"]),
                 (t("casework.address", lang), card["address"]),
                 (t("casework.department", lang), card["department"]),
                 (t("casework.assignee", lang), card["assignee"])]
        st.markdown("  \n".join(f"**{html.escape(label)}**: {md(value or '—')}"
                                for label, value in facts))
        picker.case_map(card["lon"], card["lat"], grid_cells, case.get("grid_code"), buildings,
                        height=200 if compact else 240)
    with right:
        _timers(card, lang)
    _photos(card, lang)
    _history(card, lang)
    if user is not None:
        step_form(store, user, case, grid_cells, lang, key=key)


def _timers(card: dict, lang: str) -> None:
    timers = card["timers"]
    if not len(timers):
        return
    stages = stage_labels(lang)
    running = t("casework.running", lang)
    st.markdown(f"**{html.escape(t('casework.timers', lang))}**")
    now = timers.loc[timers["running"].astype(bool)]
    if len(now):
        st.caption(t("case.timer", lang, stage=stages.get(now.iloc[0]["stage"], ""),
                     deadline=_local(now.iloc[0]["deadline"])))
    st.dataframe(pd.DataFrame({
        t("casework.stage", lang): timers["stage"].map(stages).fillna(timers["stage"]),
        t("case.col.deadline", lang): local_time(timers["deadline"]),
        t("casework.now", lang): timers["running"].map({True: running, False: ""}),
    }), hide_index=True, width="stretch")
    st.caption(t("casework.calendar_note", lang))


def _photos(card: dict, lang: str) -> None:
    if not card["photos"]:
        return
    labels = photo_labels(lang)
    st.markdown(f"**{html.escape(t('casework.photos', lang))}**")
    for kind, names in card["photos"].items():
        files = []
        for name in names:
            try:
                files.append(str(trust.photo_file(name)))
            except TwinError as exc:
                LOGGER.warning("photo of a case not shown: %s", exc)
        if files:
            st.image(files, caption=[labels.get(kind, kind)] * len(files), width=160)


def _history(card: dict, lang: str) -> None:
    history = card["history"]
    if not len(history):
        return
    st.markdown(f"**{html.escape(t('case.history', lang))}**")
    details = [_detail_text(a, r, lang) for a, r in zip(history["action"], history["data"],
                                                          strict=True)]
    st.dataframe(pd.DataFrame({
        t("case.col.time", lang): local_time(history["at"]),
        t("case.col.actor", lang): history["who"],
        t("case.col.action", lang): history["step"],
        t("case.col.status", lang): history["status"],
        t("casework.what", lang): details,
        t("case.col.note", lang): history["note"],
    }), hide_index=True, width="stretch")


# -- each step's form ----------------------------------------------------------------------------


def step_form(store, user, case: dict, grid_cells, lang: str, *, key: str) -> None:
    """The steps the user may take now; the chosen step's form with the fields it needs."""
    actions = trust.allowed_actions(case, user)
    if not actions:
        st.caption(t("case.no_actions", lang))
        return
    steps = trust.step_names(lang)
    action = st.selectbox(t("case.action", lang), actions, format_func=steps.__getitem__,
                          key=f"{key}-action-{case['id']}")
    tr = cases.TRANSITIONS_BY_ACTION[action]
    # the case's version is in the form's key: after a step the old form is gone (the next one
    # is empty), so a second click on it cannot submit the step twice; a refused step keeps
    # what was typed
    form = f"{key}-act-{case['id']}-{case['version']}-{action}"
    with st.form(form):
        fields = _fields(store, user, case, action, grid_cells, lang, form)
        note = st.text_input(t("casework.note_required", lang) if tr.note_required
                             else t("case.note", lang), key=f"{form}-note")
        done = st.form_submit_button(f"{t('case.apply', lang)} · {steps[action]}",
                                     type="primary", width="stretch")
    if not done:
        return
    try:
        values = {k: v() if callable(v) else v for k, v in fields.items()}
        values = {k: v for k, v in values.items() if v is not None}
        trust.transition_case(store, user, case["id"], action, origin=origin(),
                              grid_cells=grid_cells, note=note, **values)
    except TwinError as exc:
        st.error(error_text(exc, lang, what="a case action"))
        return
    notify(t("case.applied", lang, action=steps[action]), NOTICE, toast=True)
    st.rerun()


def _fields(store, user, case: dict, action: str, grid_cells, lang: str, key: str) -> dict:
    """The inputs of *action*'s fields; values (or callables giving them on submit)."""
    if action == "dispatch":
        return _dispatch_fields(store, user, case, grid_cells, lang)
    if action == "recategorise":
        return _category_field(case, lang)
    if action == "evaluate":
        low, high = cases.SCORE_RANGE
        score = st.slider(t("casework.score", lang), min_value=low, max_value=high, value=90,
                          step=1, help=t("casework.score_help", lang, low=low, high=high))
        return {"score": score}
    if action == "extend":
        return _extend_fields(case, lang)
    if action == "request_extension":
        return _amount_fields(lang)
    if action in ("handle", "feedback", "check"):
        label = {"handle": t("casework.photos.before", lang),
                 "feedback": t("casework.photos.after", lang),
                 "check": t("casework.photos.check", lang)}[action]
        files = st.file_uploader(label, type=PHOTO_TYPES, accept_multiple_files=True,
                                 key=f"{key}-photos")
        return {"photos": lambda: [trust.store_photo(f.getvalue()) for f in files or []]}
    if action == "supervise":
        kinds = supervision_labels(lang)
        return {"kind": st.selectbox(t("casework.supervise.kind", lang), list(kinds),
                                     format_func=kinds.__getitem__)}
    return {}


def _dispatch_fields(store, user, case: dict, grid_cells, lang: str) -> dict:
    departments = trust.departments(case, grid_cells, trust.organisation_names(store))
    column = "name_zh" if lang.startswith("zh") else "name_en"
    dept_names = dict(zip(departments["code"], departments[column], strict=True))
    routed = set(departments.loc[departments["routed"], "code"])
    mark = t("casework.routed", lang)
    department = st.selectbox(
        t("casework.department", lang), list(dept_names),
        format_func=lambda c: f"{dept_names[c]}{mark if c in routed else ''}")
    people = trust.eligible_assignees(store, user, case["id"], grid_cells)
    names = dict(zip(people["username"], people["name"], strict=True))
    covers = set(people.loc[people["covers"].astype(bool), "username"])
    here = t("casework.in_grid", lang)
    nobody = t("casework.nobody", lang)
    assignee = st.selectbox(
        t("casework.assignee", lang), [None, *names],
        index=1 if covers else 0,
        format_func=lambda u: nobody if u is None else f"{names[u]}{here if u in covers else ''}")
    return {"department": department, "assignee": assignee}


def _category_field(case: dict, lang: str) -> dict:
    table = trust.category_choices(case)
    zh = lang.startswith("zh")
    labels = dict(zip(table["service_code"],
                      (table["major_zh" if zh else "major_en"] + " · "
                       + table["name_zh" if zh else "name_en"]), strict=True))
    code = st.selectbox(t("casework.category", lang), list(labels),
                        format_func=labels.__getitem__)
    return {"service_code": code}


def _amount_fields(lang: str) -> dict:
    units = unit_labels(lang)
    c1, c2 = st.columns(2)
    amount = c1.number_input(t("casework.amount", lang), min_value=0.5, value=1.0, step=0.5)
    unit = c2.selectbox(t("casework.unit", lang), list(units), index=2,
                        format_func=units.__getitem__)
    return {"amount": amount, "unit": unit}


def _extend_fields(case: dict, lang: str) -> dict:
    data = case.get("data") or {}
    current = (data.get("deadlines") or {}).get("handle")
    request = data.get("extension_request") or {}
    if current:
        st.caption(t("casework.current_deadline", lang, deadline=_local(current)))
    if request.get("amount"):
        st.caption(t("casework.requested", lang, amount=f"{float(request['amount']):g}",
                     unit=unit_labels(lang).get(request.get("unit"), "")))
    how = {"date": t("casework.extend.date", lang), "amount": t("casework.extend.amount", lang)}
    mode = st.radio(t("casework.extend.how", lang), list(how), format_func=how.__getitem__,
                    horizontal=True)
    base = to_local(pd.Timestamp(current)) if current else to_local(pd.Timestamp.now(tz="UTC"))
    c1, c2 = st.columns(2)
    day = c1.date_input(t("casework.extend.day", lang), value=(base + pd.Timedelta(days=1)).date())
    clock = c2.time_input(t("casework.extend.time", lang), value=time(17, 30))
    units = unit_labels(lang)
    c3, c4 = st.columns(2)
    amount = c3.number_input(t("casework.amount", lang), min_value=0.5,
                             value=float(request.get("amount") or 1.0), step=0.5)
    unit = c4.selectbox(t("casework.unit", lang), list(units),
                        index=list(units).index(request.get("unit"))
                        if request.get("unit") in units else 2, format_func=units.__getitem__)
    if mode == "date":
        local = pd.Timestamp(datetime.combine(day, clock)).tz_localize(local_zone())
        return {"deadline": local.tz_convert("UTC").isoformat()}
    return {"amount": amount, "unit": unit}
