"""ui/cases_view.py headless (streamlit AppTest): the notice of a step taken."""

from __future__ import annotations

from time import monotonic

from streamlit.testing.v1 import AppTest

from ui.cases_view import NOTICE_KEY, NOTICE_S

STEP = "已执行：派遣"


def _page():
    import streamlit as st

    from ui.cases_view import notify, show_notice

    show_notice()
    if st.button("step"):
        notify("已执行：派遣")
        st.rerun()


def test_a_notice_stays_over_the_runs_that_follow_then_goes_and_toasts_once():
    at = AppTest.from_function(_page).run()
    assert not at.success and not at.toast
    at.button[0].click().run()
    assert [s.value for s in at.success] == [STEP]
    assert [x.value for x in at.toast] == [STEP]
    # the next run (a fragment's timed run, another tap) may cut the first one short before the
    # browser drew it: the message is there again, the toast not a second time
    at.run()
    assert [s.value for s in at.success] == [STEP]
    assert not at.toast
    at.session_state[NOTICE_KEY] = {"text": STEP, "at": monotonic() - NOTICE_S - 1,
                                    "toasted": True}
    at.run()
    assert not at.success
    assert NOTICE_KEY not in at.session_state
