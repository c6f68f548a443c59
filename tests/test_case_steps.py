"""The case state machine drives each step's declared effect (no per-action branching)."""

from __future__ import annotations

import copy
import inspect
import re

import pandas as pd
import pytest

from twin import cases
from twin.errors import PermissionDeniedError, ValidationError
from twin.workcal import load_calendar

AT = pd.Timestamp("2026-03-02 02:00", tz="UTC")  # Monday 10:00 in Guilin


def test_every_step_but_collect_declares_its_effect():
    for t in cases.TRANSITIONS:
        if t.action == "collect":
            assert t.effect is None  # report() collects
        else:
            assert callable(t.effect), t.action


def test_the_machine_runs_the_effect_it_is_given_and_names_no_action():
    source = inspect.getsource(cases._apply) + inspect.getsource(cases.transition)
    actions = "|".join(re.escape(t.action) for t in cases.TRANSITIONS if t.action != "collect")
    assert not re.search(rf"""==\s*["']({actions})["']|in \(["']({actions})["']""", source)


def _handling_case() -> dict:
    """A case being handled, as a store returns it, with data as a dict."""
    data = {"times": {}, "counts": {}, "timer": {"stage": "handle", "start": AT.isoformat(),
                                                 "deadline": "2026-03-02T06:00:00+00:00",
                                                 "unit": "working_hours"},
            "deadlines": {"handle": "2026-03-02T06:00:00+00:00"}, "supervision": []}
    return {"id": "c1", "status": "handling", "service_code": "E0101", "area_class": "B",
            "department": "territory:450311001001", "assignee": "w1", "version": 3,
            "updated_at": AT, "data": data}


def _run(action: str, case: dict, role: str = "admin", **fields):
    t = cases.TRANSITIONS_BY_ACTION[action]
    return cases._apply(t, case, AT + pd.Timedelta(hours=1), role, fields, load_calendar(),
                        None, None)


REFUSED = [
    ("extend", {"amount": 1}, ValidationError, "unit in"),
    ("extend", {"deadline": "2026-03-02T05:00Z"}, ValidationError, "not after the current"),
    ("supervise", {"kind": "loud"}, ValidationError, "supervision kind"),
    ("recategorise", {"service_code": "E0101"}, ValidationError, "already has category"),
    ("recategorise", {"service_code": "X9999"}, ValidationError, "unknown category"),
]


@pytest.mark.parametrize(("action", "fields", "error", "match"), REFUSED,
                         ids=[f"{r[0]}-{r[3]}" for r in REFUSED])
def test_a_refused_effect_leaves_the_case_as_it_was(action, fields, error, match):
    case = _handling_case()
    before = copy.deepcopy(case)
    with pytest.raises(error, match=match):
        _run(action, case, **fields)
    assert case == before


def test_leader_supervision_is_for_officials():
    with pytest.raises(PermissionDeniedError, match="for officials"):
        _run("supervise", _handling_case(), role="dispatcher", kind="leader")


def test_effects_compute_changes_data_and_the_step_record():
    case = _handling_case()
    changes, data, record = _run("extend", case, role="official", amount=2, unit="working_hours")
    # 14:00 local is in the lunch break: 2 working hours run 14:30-16:30
    assert record == {"old_deadline": "2026-03-02T06:00:00+00:00",
                      "new_deadline": "2026-03-02T08:30:00+00:00"}
    assert data["timer"]["deadline"] == data["deadlines"]["handle"] == record["new_deadline"]
    assert data["extended"] is True and data["counts"] == {"extend": 1}
    assert changes["deadline_at"] == pd.Timestamp(data["deadlines"]["total"])
    assert case["data"]["deadlines"]["handle"] == "2026-03-02T06:00:00+00:00"  # not mutated

    changes, data, record = _run("force_close", _handling_case())
    assert changes == {"closed_at": AT + pd.Timedelta(hours=1)}
    assert data["timer"] is None and data["forced"] is True and record == {}


def _closed_case() -> dict:
    case = _handling_case()
    case.update(status="closed", closed_at=AT)
    case["data"]["timer"] = None
    return case


@pytest.mark.parametrize("score", [None, -1, 100.5, "abc", float("nan")])
def test_evaluate_needs_a_score_on_the_declared_scale(score):
    case = _closed_case()
    before = copy.deepcopy(case)
    with pytest.raises(ValidationError, match=r"score from 0 to 100"):
        _run("evaluate", case, role="official", score=score)
    assert case == before


def test_evaluate_keeps_the_score_in_the_case_and_its_step():
    assert cases.SCORE_RANGE == (0, 100)
    _, data, record = _run("evaluate", _closed_case(), role="official", score=85)
    assert data["evaluation"] == 85.0 and record == {"score": 85.0}


def test_handle_keeps_photos_of_the_place_before():
    case = _handling_case()
    case["status"] = "dispatched"
    _, data, _ = _run("handle", case, role="grid_worker", photos=["photos/" + "a" * 20 + ".png"])
    assert data["photos_before"] == ["photos/" + "a" * 20 + ".png"]
    assert "photos" in cases.TRANSITIONS_BY_ACTION["handle"].fields
