"""The lived-in demo: a year of valid case histories, alarms, polls and readings, repeatable."""

from __future__ import annotations

import json
import time

import pandas as pd
import pytest

from tests.conftest import STORE_KINDS, _open
from twin import kpi
from twin.cases import STATUSES, TERMINAL, TRANSITIONS_BY_ACTION, timer_states
from twin.demo import PATHS, populate
from twin.errors import ValidationError
from twin.feeds.rules import ALARM_TRANSITIONS
from twin.scenario import make_scenario
from twin.schema import ALARMS, ANSWERS, CASE_HISTORY, NOTICES
from twin.trust import create_demo_users, get_user, public_summary
from twin.trust.participation import notices_for
from twin.twin import put_layer

NOW = pd.Timestamp("2026-11-18 03:30", tz="UTC")  # a Wednesday, 11:30 in Guilin


@pytest.fixture(scope="module")
def scenario():
    return make_scenario("community", 0)


def _demo_store(store, scenario):
    for name in ["community", "grid_cells"] + [n for n in scenario
                                               if n not in ("community", "grid_cells")]:
        put_layer(store, name, scenario[name], actor="test", source="tests/test_demo.py")
    create_demo_users(store, actor="test")
    return store


@pytest.fixture(scope="module", params=STORE_KINDS)
def demo(request, tmp_path_factory, scenario):
    """One populated demo store of each kind, shared by the read-only tests of this module."""
    store = _open(request.param, tmp_path_factory.mktemp("demo"), request)
    _demo_store(store, scenario)
    started = time.perf_counter()
    counts = populate(store, seed=3, now=NOW)
    yield store, counts, time.perf_counter() - started
    store.close()


def test_populate_writes_a_year_of_everything_in_seconds(demo):
    store, counts, seconds = demo
    assert counts["cases"] > 2000 and counts["history"] > 5 * counts["cases"]
    assert min(counts.values()) > 0, counts
    assert seconds < 30, f"populate took {seconds:.1f} s"
    cases = store.read_cases()
    assert len(cases) == counts["cases"]
    requested = pd.to_datetime(cases["requested_at"], utc=True)
    assert requested.max() <= NOW and requested.min() <= NOW - pd.Timedelta(days=365)
    # every status and side path of the loop is there
    assert {"collected", "filed", "dispatched", "handling", "fed_back", "on_hold", "closed",
            "evaluated", "cancelled"} <= set(cases["status"])
    history = store.read_rows(CASE_HISTORY)
    assert {"return", "rework", "extend", "request_extension", "hold", "resume", "supervise",
            "force_close", "recategorise", "evaluate", "cancel"} <= set(history["action"])
    data = [json.loads(d) for d in cases["data"]]
    addresses = [d["address"] for d in data]
    assert all(a is None or (isinstance(a, str) and "社区" in a) for a in addresses)
    assert sum(a is not None for a in addresses) > len(cases) / 2
    scores = [json.loads(d).get("evaluation") for d in cases.loc[
        cases["status"] == "evaluated", "data"]]
    assert scores and all(60 <= s <= 100 for s in scores)
    # open cases at now, some of them overdue
    states = timer_states(cases, NOW)
    assert (states["timer_state"] == "overdue").sum() > 5
    assert (states["timer_state"] == "ok").sum() > 5


def test_every_case_history_is_a_valid_path_of_the_state_machine(demo):
    store, _, _ = demo
    cases = store.read_cases(columns=["id", "status", "version", "updated_at"]).set_index("id")
    history = store.read_rows(CASE_HISTORY).sort_values(["case_id", "version"])
    assert set(history["case_id"]) == set(cases.index)
    for case_id, steps in history.groupby("case_id"):
        first = steps.iloc[0]
        assert (first["action"], first["from_status"], first["to_status"]) == \
            ("collect", None, "collected"), case_id
        assert steps["version"].tolist() == list(range(1, len(steps) + 1)), case_id
        assert steps["at"].is_monotonic_increasing, case_id
        status = "collected"
        for step in steps.iloc[1:].itertuples(index=False):
            t = TRANSITIONS_BY_ACTION[step.action]
            assert step.from_status == status and status in t.sources, (case_id, step.action)
            assert step.role in t.roles, (case_id, step.action, step.role)
            assert step.to_status == (t.target or status), (case_id, step.action)
            if t.note_required:
                assert step.note.strip(), (case_id, step.action)
            status = step.to_status
        case = cases.loc[case_id]
        assert case["status"] == status and case["version"] == len(steps), case_id
        assert pd.Timestamp(case["updated_at"]) == pd.Timestamp(steps["at"].iloc[-1]), case_id


def test_the_indicators_have_real_numbers_and_comparisons(demo):
    store, _, _ = demo
    month = f"{(NOW - pd.DateOffset(months=1)):%Y-%m}"
    table = kpi.indicators(store, period=month, as_of=NOW)
    row = table.iloc[0]
    assert row["filed"] > 50
    assert 50 < row["close_rate"] <= 100 and 30 < row["ontime_close_rate"] < row["close_rate"]
    for rate in ("close_rate", "ontime_close_rate"):
        assert pd.notna(row[f"{rate}_yoy"]) and pd.notna(row[f"{rate}_mom"]), rate
    # the same month a year earlier has its own cases
    year_ago = f"{(NOW - pd.DateOffset(months=13)):%Y-%m}"
    assert kpi.indicators(store, period=year_ago, as_of=NOW).iloc[0]["filed"] > 50
    # slices for rankings: every grid has cases
    grids = kpi.indicators(store, by="grid", period=month, as_of=NOW)
    assert len(grids) >= 10 and grids["grade"].notna().all()


def test_the_public_page_shows_fixes_and_no_personal_data(demo, scenario):
    store, _, _ = demo
    summary = public_summary(store)
    assert not summary.empty and len(summary.recent) == 20
    assert summary.monthly["fixed"].sum() > 1000 and len(summary.monthly) >= 13
    residents = scenario["residents"]
    secrets = set(residents["name"]) | set(residents["phone"]) | set(residents["id_number"]) | \
        set(residents["resident_id"])
    secrets -= set(scenario["grid_cells"]["grid_worker"])  # staff are named: their work is public
    frames = [summary.monthly.reset_index(), summary.per_grid.reset_index(), summary.recent,
              *summary.staff.values()]
    shown = {str(v) for f in frames for v in f.to_numpy().ravel()}
    assert not shown & secrets
    assert not any("演示" in v for v in shown)  # no case description
    cases = store.read_cases()
    assert not set(summary.recent["lon"]) & set(cases["lon"])  # rounded places only


def test_residents_report_cases_and_answer_polls_in_their_scope(demo):
    store, counts, _ = demo
    cases = store.read_cases()
    reporters = [json.loads(d).get("reporter") or {} for d in cases.loc[
        cases["source"] == "resident", "data"]]
    assert reporters and all(r.get("resident_id") for r in reporters)
    assert not any("name" in r or "phone" in r for r in reporters)
    history = store.read_rows(CASE_HISTORY, action="collect", role="resident")
    assert set(history["actor"]) == {"resident", "public-report"}
    resident = get_user(store, "resident")
    assert any(r.get("username") == "resident" for r in reporters)
    notices = store.read_rows(NOTICES)
    assert set(notices["kind"]) == {"notice", "poll", "survey"}
    assert set(notices["scope_kind"]) == {"community", "grid", "building"}
    mine = notices_for(store, resident)
    assert len(mine) == len(notices)  # all scoped to the demo resident's place
    answers = store.read_rows(ANSWERS)
    assert len(answers) == counts["answers"] and answers["poll_id"].nunique() == 4
    assert (answers.groupby("poll_id")["resident_key"].nunique()
            == answers.groupby("poll_id").size()).all()
    polls = notices.set_index("id")
    for poll_id, rows in answers.groupby("poll_id"):
        scope = polls.at[poll_id, "scope_kind"]
        col = {"community": "community_code", "grid": "resp_grid_id",
               "building": "building_code"}[scope]
        assert (rows[col] == polls.at[poll_id, "scope_id"]).all()
        choices = [q["choices"] for q in json.loads(polls.at[poll_id, "questions"])]
        for answer in rows["answer"]:
            assert all(a in c for a, c in zip(json.loads(answer), choices, strict=True))
    # one poll is left for the demo resident to answer
    assert not answers["resident_id"].eq(resident.resident_id).all()


def test_alarms_have_outcomes_and_promoted_ones_point_at_their_case(demo):
    store, _, _ = demo
    alarms = store.read_rows(ALARMS)
    assert {"open", "acknowledged", "in_progress", "resolved", "closed"} <= set(alarms["status"])
    promoted = alarms.loc[alarms["case_id"].notna()]
    assert len(promoted) > 50
    cases = store.read_cases().set_index("id")
    assert set(promoted["case_id"]) <= set(cases.index)
    assert (cases.loc[promoted["case_id"], "source"] == "sensor").all()
    finished = cases.loc[promoted["case_id"], "status"].isin(TERMINAL).to_numpy()
    assert (promoted.loc[finished, "status"] == "closed").all()
    assert (promoted.loc[~finished, "status"] == "in_progress").all()
    for alarm in alarms.itertuples(index=False):
        status = "open"
        for h in json.loads(alarm.data)["history"]:
            assert h["from"] == status and h["to"] in ALARM_TRANSITIONS[status], alarm.id
            status = h["to"]
        assert status == alarm.status
    recent = pd.to_datetime(alarms["opened_at"], utc=True) > NOW - pd.Timedelta(hours=48)
    apart = recent & alarms["case_id"].isna()  # not promoted: still on the duty officer's desk
    assert apart.sum() >= 5
    assert alarms.loc[apart, "status"].isin(["open", "acknowledged"]).all()


def test_a_week_of_sensor_history_before_now(demo):
    store, counts, _ = demo
    events = store.read_events(NOW - pd.Timedelta(days=7), NOW + pd.Timedelta(seconds=1))
    assert len(events) == counts["events"]
    assert {"obs", "camera"} == set(events["kind"])
    assert events["grid_code"].notna().all()


def test_the_same_seed_gives_the_same_demo(store, scenario, tmp_path):
    from twin.store import open_store

    _demo_store(store, scenario)
    other = _demo_store(open_store(tmp_path / "other.gpkg"), scenario)
    try:
        populate(store, seed=5, now=NOW, days=40, events=500)
        populate(other, seed=5, now=NOW, days=40, events=500)
        a, b = store.read_cases(), other.read_cases()
        pd.testing.assert_frame_equal(pd.DataFrame(a.drop(columns="geometry")),
                                      pd.DataFrame(b.drop(columns="geometry")))
        ha = store.read_rows(CASE_HISTORY)
        hb = other.read_rows(CASE_HISTORY)
        pd.testing.assert_frame_equal(ha, hb)
        for table in (ALARMS, NOTICES, ANSWERS):
            pd.testing.assert_frame_equal(
                pd.DataFrame(store.read_rows(table)).drop(columns="geometry", errors="ignore"),
                pd.DataFrame(other.read_rows(table)).drop(columns="geometry", errors="ignore"))
    finally:
        other.close()


def test_another_seed_gives_another_demo(store, scenario):
    _demo_store(store, scenario)
    populate(store, seed=1, now=NOW, days=20, events=0)
    first = store.read_cases(columns=["id"])["id"]
    populate(store, seed=2, now=NOW, days=20, events=0)
    assert len(store.read_cases(columns=["id"])) > len(first)


def test_a_second_demo_into_the_same_store_keeps_one_open_alarm_per_rule_and_source(
        store, scenario):
    _demo_store(store, scenario)
    populate(store, seed=3, now=NOW, days=30, events=0)
    populate(store, seed=3, now=NOW + pd.Timedelta(hours=5), days=30, events=0)  # again, later
    still = store.read_rows(ALARMS, status="open")
    assert len(still) and not still.duplicated(["rule_id", "source_id"]).any()


def test_a_store_without_the_demo_layers_is_refused(store):
    with pytest.raises(ValidationError, match="make-demo"):
        populate(store, now=NOW)
    assert store.read_cases().empty


@pytest.mark.parametrize("bad", [{"days": 0}, {"days": 1.5}, {"per_day": -1}, {"events": -5}])
def test_bad_sizes_are_refused_before_anything_is_read(bad):
    with pytest.raises(ValidationError, match="populate needs days"):
        populate(None, now=NOW, **bad)


def test_every_path_is_a_valid_walk_and_every_status_is_known():
    from twin.demo import _path_statuses

    for name, (share, actions) in PATHS.items():
        assert share > 0
        assert all(to in STATUSES for _, to in _path_statuses(actions)), name
    with pytest.raises(ValidationError, match="not allowed"):
        _path_statuses(("dispatch",))



def test_the_cockpit_tiles_show_real_numbers_at_now(demo):
    """What issue 17 met: 0, 0, 0 and "—" for both close rates; now every tile has a value."""
    from twin import cockpit

    store, _, _ = demo
    cockpit.clear_caches()
    inputs = cockpit.load_inputs(store, at=NOW)
    cases_t = cockpit.cases_at(inputs.cases, NOW)
    tiles = cockpit.kpi_tiles(cases_t, pd.DataFrame(), pd.DataFrame(), pd.DataFrame(), NOW)
    assert tiles["reports_today"] > 0 and tiles["open"] > 10 and tiles["overdue"] > 0
    assert 50 < tiles["close_rate"] < 100 and 30 < tiles["ontime_close_rate"] < 100
    assert len(inputs.live) > 100 and len(inputs.alarms) > 100  # the last hour's readings
    assert len(cockpit.hourly(pd.to_datetime(inputs.events["observed_at"], utc=True), NOW,
                              "24h")) > 0


def test_the_state_machine_carries_on_from_every_open_demo_case(demo, scenario):
    """The library's own steps work on the demo's cases: their data are what twin.cases wrote."""
    from twin.cases import OPEN_STATUSES, allowed_actions, transition

    store, _, _ = demo
    cases = store.read_cases()
    later = NOW + pd.Timedelta(hours=1)
    fields = {"evaluate": {"score": 88}}
    tried = set()
    for status in OPEN_STATUSES + ("closed",):
        mine = cases.loc[cases["status"] == status]
        if mine.empty:
            continue
        case = mine.iloc[0].to_dict()
        action = next(a for a in ("file", "handle", "feedback", "check", "close", "resume",
                                  "evaluate", "dispatch") if a in allowed_actions(case, "admin"))
        after = transition(store, case["id"], action, actor="admin", role="admin", at=later,
                           note="demo test", grid_cells=scenario["grid_cells"],
                           **fields.get(action, {}))
        assert after["version"] == case["version"] + 1
        tried.add(status)
    assert {"collected", "filed", "dispatched", "handling", "fed_back", "checked", "on_hold",
            "closed"} <= tried
