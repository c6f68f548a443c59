"""The live panels: active alarms with their actions, and the newest events, refreshed on their own.

Both run as fragments: they refresh without rerunning the page, so the map keeps its view.
Alarms come from :mod:`twin.trust.alarms` (scoped to the user) and every action is a library
call that takes the user: the panel decides nothing itself.
"""

from __future__ import annotations

import html
import logging
from datetime import UTC, datetime, timedelta
from typing import Any

import pandas as pd
import streamlit as st

from twin import cases as caseloop
from twin.store import Store
from twin.trust import alarms as alarm_work
from ui.common import error_text, local_time, t

LOGGER = logging.getLogger(__name__)

REFRESH_S = 10
WINDOW = timedelta(hours=24)
SHOWN = 15
#: Alarms with their own action row; the rest are listed in a table.
ACTED = 4
SEEN_KEY = "alarms_seen"
#: How an alarm card looks on every page (the most urgent one pulses when critical).
ALARM_CSS = """<style>
.gt-alarm {border-radius: 6px; padding: .3rem .55rem; font-size: .85rem; line-height: 1.25rem;
  border-left: 6px solid #3aa0ff; background: rgba(58, 160, 255, .12); margin-bottom: .5rem;}
.gt-alarm.gt-critical {border-left-color: #ff1744; background: rgba(255, 23, 68, .18);}
.gt-alarm.gt-warning {border-left-color: #ffb300; background: rgba(255, 179, 0, .14);}
.gt-alarm.gt-top.gt-critical {animation: gt-pulse 1.6s ease-in-out infinite;}
@keyframes gt-pulse {50% {box-shadow: 0 0 18px 3px rgba(255, 23, 68, .75);}}
.gt-sev {font-weight: 700;} .gt-status {color: #9fb3c8; font-size: .75rem;}
.gt-where {color: #9fb3c8; font-size: .75rem;}
.gt-alarm-count {color: #ff8a95; font-weight: 600; font-size: .9rem;}
</style>"""


def severity_names(lang: str) -> dict[str, str]:
    return {"critical": t("alarm.sev.critical", lang), "warning": t("alarm.sev.warning", lang),
            "info": t("alarm.sev.info", lang)}


def status_names(lang: str) -> dict[str, str]:
    return {"open": t("alarm.status.open", lang),
            "acknowledged": t("alarm.status.acknowledged", lang),
            "in_progress": t("alarm.status.in_progress", lang)}


@st.cache_data(show_spinner=False)
def category_names(lang: str) -> dict[str, str]:
    """Service code → ``code · name`` in *lang* (the promote picker)."""
    cats = caseloop.load_categories()
    names = cats["name_zh"] if lang.startswith("zh") else cats["name_en"]
    return dict(zip(cats["service_code"], cats["service_code"] + " · " + names, strict=True))


def _name(alarm: Any, lang: str) -> str:
    name = alarm.get("name_zh") if lang.startswith("zh") else alarm.get("name_en")
    return str(name) if isinstance(name, str) and name else str(alarm.get("rule_id", ""))


def _line(alarm: Any, lang: str, grid_names: dict[str, str]) -> str:
    grid = alarm.get("grid_code")
    where = grid_names.get(grid, grid) if isinstance(grid, str) else t("alarm.no_grid", lang)
    when = local_time(pd.Series([alarm["opened_at"]]), "%m-%d %H:%M").iloc[0]
    return f"{when} · {alarm['source_id']} · {where}"


def _card(alarm: Any, lang: str, grid_names: dict[str, str], *, top: bool) -> None:
    """The alarm as a coloured card (text escaped): severity, name, status, where and when."""
    severity = str(alarm["severity"])
    status = status_names(lang).get(alarm["status"], alarm["status"])
    sev = severity_names(lang).get(severity, severity)
    css = f"gt-alarm gt-{html.escape(severity)}" + (" gt-top" if top else "")
    st.markdown(
        f'<div class="{css}" data-alarm="{html.escape(str(alarm["id"]))}">'
        f'<span class="gt-sev">{html.escape(sev)}</span> '
        f'<b>{html.escape(_name(alarm, lang))}</b> '
        f'<span class="gt-status">{html.escape(status)}</span><br>'
        f'<span class="gt-where">{html.escape(_line(alarm, lang, grid_names))}</span></div>',
        unsafe_allow_html=True)


def _act(what: str, call, lang: str) -> None:
    """Run one alarm action; on success tell the user and refresh the page, else say why.

    The whole page reruns (not only the panel) so that tiles, map and ranking count the alarm's
    new state at once; the map keeps its view (same initial view).
    """
    try:
        call()
    except Exception as exc:  # the panel's edge: the library's message, never a traceback
        st.session_state["alarm_error"] = error_text(exc, lang, what=f"alarm {what}")
    else:
        st.session_state["alarm_done"] = what
    st.rerun()


def _actions(store: Store, user, alarm: Any, lang: str, grid_cells, key: str) -> None:
    """The buttons of one alarm, as the library allows them to *user*."""
    allowed = alarm_work.allowed_alarm_actions(alarm, user)
    if not allowed:
        return
    alarm_id = str(alarm["id"])
    cols = st.columns(len(allowed))
    for col, action in zip(cols, allowed, strict=True):
        with col:
            if action == "acknowledge" and st.button(
                    t("alarm.acknowledge", lang), key=f"{key}-ack-{alarm_id}",
                    width="stretch"):
                _act("acknowledge", lambda: alarm_work.acknowledge_alarm(
                    store, user, alarm_id, origin="web", grid_cells=grid_cells), lang)
            elif action == "promote":
                _promote(store, user, alarm, lang, grid_cells, key)
            elif action == "dismiss":
                with st.popover(t("alarm.dismiss", lang), width="stretch"):
                    reason = st.text_input(t("alarm.dismiss.reason", lang),
                                           key=f"{key}-why-{alarm_id}",
                                           placeholder=t("alarm.dismiss.hint", lang))
                    if st.button(t("alarm.dismiss.confirm", lang), key=f"{key}-dis-{alarm_id}",
                                 type="primary"):
                        _act("dismiss", lambda why=reason: alarm_work.dismiss_alarm(
                            store, user, alarm_id, why, origin="web",
                            grid_cells=grid_cells), lang)


def _promote(store: Store, user, alarm: Any, lang: str, grid_cells, key: str) -> None:
    """One click when the rule names the case category; else pick the category first."""
    alarm_id = str(alarm["id"])

    def promote(category: str | None = None) -> None:
        _act("promote", lambda: alarm_work.promote_alarm(
            store, user, alarm_id, category=category, grid_cells=grid_cells, origin="web"), lang)

    if alarm_work.case_category(alarm):
        if st.button(t("alarm.promote", lang), key=f"{key}-case-{alarm_id}", type="primary",
                     width="stretch"):
            promote()
        return
    with st.popover(t("alarm.promote", lang), width="stretch"):
        names = category_names(lang)
        code = st.selectbox(t("alarm.promote.category", lang), list(names),
                            format_func=names.__getitem__, key=f"{key}-cat-{alarm_id}")
        if st.button(t("alarm.promote.confirm", lang), key=f"{key}-pc-{alarm_id}",
                     type="primary"):
            promote(code)


def _announce(alarms: pd.DataFrame, lang: str, key: str) -> None:
    """Pop up (toast) the alarms this panel has not shown yet, most urgent first.

    A critical alarm stays 30 s (or until closed by hand), the others 10 s.
    """
    seen = st.session_state.setdefault(f"{SEEN_KEY}-{key}", set())
    fresh = alarms.loc[~alarms["id"].isin(seen) & alarms["status"].eq("open")]
    for alarm in fresh.head(3).to_dict("records"):
        sev = severity_names(lang).get(alarm["severity"], alarm["severity"])
        st.toast(f"{sev} · {_name(alarm, lang)} · {alarm['source_id']}",
                 icon=":material/emergency_home:" if alarm["severity"] == "critical"
                 else ":material/warning:",
                 duration=30 if alarm["severity"] == "critical" else "long")
    seen.update(alarms["id"])


def _outcome(lang: str) -> None:
    done = st.session_state.pop("alarm_done", None)
    if done:
        st.toast({"acknowledge": t("alarm.done.acknowledge", lang),
                  "dismiss": t("alarm.done.dismiss", lang),
                  "promote": t("alarm.done.promote", lang)}[done], icon=":material/check_circle:")
    problem = st.session_state.pop("alarm_error", None)
    if problem:
        st.error(problem)


@st.fragment(run_every=REFRESH_S)
def alarm_panel(store: Store, user, lang: str, *, grid_cells=None,
                grids: tuple[str, ...] | None = None, building: str | None = None,
                grid_names: dict[str, str] | None = None, acted: int = ACTED,
                listed: int = SHOWN, key: str = "alarms") -> None:
    """Active alarms in scope, most urgent first, each with the actions the user may take.

    The first is a prominent banner; new ones pop up as a toast. Only *grids* (and *building*)
    when given: a drill-down keeps the panel in scope.
    """
    names = grid_names or {}
    st.markdown(ALARM_CSS, unsafe_allow_html=True)
    _outcome(lang)
    try:
        alarms = alarm_work.visible_alarms(store, user, grid_cells=grid_cells, grids=grids)
    except Exception as exc:  # the panel's edge: a failing read must not take the page down
        LOGGER.warning("reading alarms failed: %s", exc)
        st.warning(t("live.error", lang))
        return
    if building is not None and len(alarms):
        alarms = alarms.loc[alarms["building_code"] == building]
    if len(alarms) == 0:
        st.success(t("live.no_alarms", lang))
        return
    _announce(alarms, lang, key)
    count = html.escape(t("live.alarms", lang, count=len(alarms)))
    st.markdown(f'<div class="gt-alarm-count">{count}</div>', unsafe_allow_html=True)
    for i, alarm in enumerate(alarms.head(acted).to_dict("records")):
        with st.container(key=f"{key}-row-{i}"):
            _card(alarm, lang, names, top=i == 0)
            _actions(store, user, alarm, lang, grid_cells, key)
    rest = alarms.iloc[acted:listed]
    if len(rest):
        sev = severity_names(lang)
        st.dataframe(pd.DataFrame({
            t("live.col.time", lang): local_time(rest["opened_at"], "%H:%M:%S"),
            t("live.col.severity", lang): rest["severity"].map(sev).fillna(rest["severity"]),
            t("live.col.source", lang): rest["source_id"],
            t("live.col.value", lang): rest["property"].astype(str) + " "
            + rest["value"].astype(str),
            t("live.col.grid", lang): rest["grid_code"].map(names).fillna(rest["grid_code"]),
        }), hide_index=True, width="stretch", height=min(35 * (len(rest) + 1) + 3, 180))


@st.fragment(run_every=REFRESH_S)
def live_events(store: Store, lang: str, grids: tuple[str, ...] | None = None,
                building: str | None = None, *, height: int = 200,
                grid_names: dict[str, str] | None = None) -> None:
    """The latest events (24 h), newest first; only in *grids* (and *building*) when given."""
    st.subheader(t("live.title", lang))
    try:
        events = store.read_events(datetime.now(UTC) - WINDOW)
    except Exception:  # the panel's edge: a failing read must not take the page down
        LOGGER.exception("reading live events failed")
        st.warning(t("live.error", lang))
        return
    if grids is not None and len(events):
        events = events.loc[events["grid_code"].isin(list(grids))]
    if building is not None and len(events):
        events = events.loc[events["building_code"] == building]
    if len(events) == 0:
        st.caption(t("live.empty", lang))
        return
    latest = events.tail(SHOWN).iloc[::-1]
    names = grid_names or {}
    st.dataframe(pd.DataFrame({
        t("live.col.time", lang): local_time(latest["observed_at"], "%H:%M:%S"),
        t("live.col.kind", lang): latest["kind"].map(_kind_names(lang)).fillna(latest["kind"]),
        t("live.col.source", lang): latest["source_id"],
        t("live.col.grid", lang): latest["grid_code"].map(names).fillna(latest["grid_code"]),
    }), hide_index=True, width="stretch", height=height)
    st.caption(t("live.count", lang, count=len(events)))


def _kind_names(lang: str) -> dict[str, str]:
    return {"obs": t("live.kind.obs", lang), "camera": t("live.kind.camera", lang),
            "report": t("live.kind.report", lang), "alarm": t("live.kind.alarm", lang)}


def live_alarms(store: Store, lang: str, grids: tuple[str, ...] | None = None) -> None:
    """The live panel as the phone page (my grid) uses it: alarms, then the latest events.

    Kept for ui/my_grid_page.py; it reads through :mod:`twin.trust.alarms` now (the session's
    user, their grids) and offers the actions that user may take.
    """
    from ui.auth import current_user

    st.subheader(t("live.title", lang))
    alarm_panel(store, current_user(), lang, grids=grids, acted=2, key="grid-alarms")
    live_events(store, lang, grids)
