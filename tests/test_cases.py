from __future__ import annotations

import threading

import geopandas as gpd
import pandas as pd
import pytest

from tests.conftest import LAT, LON
from twin import cases, kpi
from twin.errors import PermissionDeniedError, StaleUpdateError, ValidationError

TZ = "Asia/Shanghai"
IN_G1 = (LON + 0.0005, LAT + 0.0005)
IN_G2 = (LON + 0.0015, LAT + 0.0005)


def t(text: str) -> pd.Timestamp:
    return pd.Timestamp(f"2026-03-{text}", tz=TZ)


@pytest.fixture
def cells(grid_cells) -> gpd.GeoDataFrame:
    return grid_cells.assign(grid_worker=["w1", "w2"])


def new_case(store, cells, category="E0101", where=IN_G1, at="02 10:00", actor="w1", **kw):
    return cases.report(store, category=category, lon=where[0], lat=where[1],
                        description="路边垃圾堆放", source="patrol", actor=actor,
                        role="grid_worker", grid_cells=cells, at=t(at), **kw)


def step(store, case, action, role, actor, at, cells=None, **kw):
    return cases.transition(store, case["id"], action, actor=actor, role=role, at=t(at),
                            grid_cells=cells, **kw)


# -- the declared table --------------------------------------------------------------------------


def test_the_state_machine_table_is_consistent():
    reachable, frontier = {"collected"}, ["collected"]
    while frontier:
        status = frontier.pop()
        for tr in cases.TRANSITIONS:
            if status in tr.sources and tr.target and tr.target not in reachable:
                reachable.add(tr.target)
                frontier.append(tr.target)
    assert reachable == set(cases.STATUSES)
    for tr in cases.TRANSITIONS:
        assert set(tr.sources) <= set(cases.STATUSES) and set(tr.roles) <= set(cases.ROLES)
        assert not set(tr.sources) & set(cases.TERMINAL) or tr.action == "evaluate"
    for status in cases.OPEN_STATUSES:
        assert any(status in tr.sources and tr.target for tr in cases.TRANSITIONS), status
    assert "planner" not in {r for tr in cases.TRANSITIONS for r in tr.roles}


ROUTES = [
    ("event in a grid goes to its territory and grid worker", "E0101", IN_G1,
     "territory:450311001001", "w1", "grid_worker"),
    ("event in the other grid", "E0501", IN_G2, "territory:450311001001", "w2", "grid_worker"),
    ("component goes to its owner", "P0101", IN_G1, "WATER", None, "department"),
    ("event outside every grid falls back to the owner", "E0101", (LON - 0.01, LAT), "SANIT",
     None, "department"),
]


@pytest.mark.parametrize("code,where,department,assignee,post", [r[1:] for r in ROUTES],
                         ids=[r[0] for r in ROUTES])
def test_routing(cells, code, where, department, assignee, post):
    place = cases.locate(*where, cells)
    routed = cases.route(cases.lookup_category(code), place, cells)
    assert (routed["department"], routed["assignee"], routed["post"]) == (
        department, assignee, post)


def test_find_duplicates_in_metres_hours_category_and_status():
    now = t("02 12:00")
    frame = pd.DataFrame({
        "id": ["near", "far", "other", "old", "closed"],
        "service_code": ["E0101", "E0101", "E0102", "E0101", "E0101"],
        "status": ["filed", "filed", "filed", "filed", "closed"],
        "lon": [LON + 0.0003, LON + 0.0008, LON, LON, LON],  # 0.0003° ≈ 30 m here
        "lat": [LAT] * 5,
        "requested_at": [now - pd.Timedelta(hours=h) for h in (1, 1, 1, 30, 1)],
    })
    found = cases.find_duplicates(frame, category="E0101", lon=LON, lat=LAT, at=now, hours=24)
    assert found["id"].tolist() == ["near"]
    assert 25 < found["distance_m"].iloc[0] < 35


# -- on both stores ------------------------------------------------------------------------------


def test_the_full_loop_records_who_and_when(store, cells):
    c = new_case(store, cells)  # Monday 2 March 2026, 10:00 in Guilin, grid A
    assert (c["status"], c["grid_code"], c["area_class"], c["assignee"]) == (
        "collected", "45031100100101", "A", "w1")
    c = step(store, c, "file", "dispatcher", "d1", "02 10:30")
    # dispatch 0.5 wh → 11:00, handle 2 wh (class A) → 14:30+1h = 15:30, check 0.5 wh → 16:00
    assert c["deadline_at"] == t("02 16:00")
    c = step(store, c, "dispatch", "dispatcher", "d1", "02 10:45")
    c = step(store, c, "handle", "grid_worker", "w1", "02 11:00", cells)
    c = step(store, c, "feedback", "grid_worker", "w1", "02 14:40", cells, photos=["after.jpg"])
    c = step(store, c, "check", "grid_worker", "w1", "02 14:50", cells)
    c = step(store, c, "close", "dispatcher", "d1", "02 15:00")
    c = step(store, c, "evaluate", "official", "o1", "02 16:00", score=95)
    assert c["status"] == "evaluated" and c["closed_at"] == t("02 15:00")
    steps = store.case_history(c["id"])
    assert steps["action"].tolist() == ["collect", "file", "dispatch", "handle", "feedback",
                                        "check", "close", "evaluate"]
    assert steps["role"].tolist() == ["grid_worker", "dispatcher", "dispatcher", "grid_worker",
                                      "grid_worker", "grid_worker", "dispatcher", "official"]
    assert steps["version"].tolist() == list(range(1, 9))
    assert pd.to_datetime(steps["at"], utc=True).is_monotonic_increasing
    row = kpi.indicators(cases.case_table(store.read_cases()), as_of=t("31 00:00")).iloc[0]
    assert (row["due"], row["closed"], row["closed_on_time"], row["handled_on_time"]) == (
        1, 1, 1, 1)


SIDE_PATHS = {
    "cancel": ([("cancel", "dispatcher", "d1", {"note": "不属于受理范围"})], "cancelled"),
    "return and re-dispatch": ([
        ("file", "dispatcher", "d1", {}), ("dispatch", "dispatcher", "d1", {}),
        ("return", "grid_worker", "w1", {"note": "不是本网格"}),
        ("dispatch", "dispatcher", "d1", {"assignee": "w2"})], "dispatched"),
    "rework then close": ([
        ("file", "dispatcher", "d1", {}), ("dispatch", "dispatcher", "d1", {}),
        ("handle", "grid_worker", "w1", {}), ("feedback", "grid_worker", "w1", {}),
        ("rework", "grid_worker", "w1", {"note": "仍有垃圾"}),
        ("feedback", "grid_worker", "w1", {}), ("check", "grid_worker", "w1", {}),
        ("close", "dispatcher", "d1", {})], "closed"),
    "extension": ([
        ("file", "dispatcher", "d1", {}), ("dispatch", "dispatcher", "d1", {}),
        ("handle", "grid_worker", "w1", {}),
        ("request_extension", "grid_worker", "w1", {"note": "需清运车", "amount": 1,
                                                     "unit": "working_days"}),
        ("extend", "official", "o1", {})], "handling"),
    "hold and resume": ([
        ("file", "dispatcher", "d1", {}), ("dispatch", "dispatcher", "d1", {}),
        ("hold", "official", "o1", {"note": "产权纠纷"}), ("resume", "official", "o1", {})],
        "handling"),
    "supervision and forced close": ([
        ("file", "dispatcher", "d1", {}), ("supervise", "official", "o1", {"kind": "leader"}),
        ("supervise", "dispatcher", "d1", {"kind": "timeout"}),
        ("force_close", "official", "o1", {"note": "领导批示结案"})], "closed"),
    "category change re-routes": ([
        ("file", "dispatcher", "d1", {}),
        ("recategorise", "dispatcher", "d1", {"service_code": "P0101"})], "filed"),
}


@pytest.mark.parametrize("path", list(SIDE_PATHS))
def test_side_paths(store, cells, path):
    steps, final = SIDE_PATHS[path]
    c = new_case(store, cells)
    for i, (action, role, actor, kw) in enumerate(steps):
        c = step(store, c, action, role, actor, f"02 {11 + i // 2}:{(i % 2) * 30:02d}", cells,
                 **kw)
    assert c["status"] == final
    history = store.case_history(c["id"])
    assert history["action"].tolist() == ["collect"] + [s[0] for s in steps]
    data = cases._data(c)
    if path == "rework then close":
        assert data["counts"]["rework"] == 1 and data["times"]["first_rework"]
    if path == "extension":
        # dispatched 11:30 + 2 wh (12:00, then 14:30-16:00) → 16:00; one working day more →
        # Tue 3 March 16:00; the total adds the 0.5 wh check → 16:30
        assert data["deadlines"]["handle"] == t("03 16:00").tz_convert("UTC").isoformat()
        assert data["extended"] is True
        assert c["deadline_at"] == t("03 16:30")
    if path == "supervision and forced close":
        assert [s["kind"] for s in data["supervision"]] == ["leader", "timeout"]
        assert data["forced"] is True and c["closed_at"] is not None
    if path == "category change re-routes":
        assert (c["service_code"], c["family"], c["department"], c["assignee"]) == (
            "P0101", "component", "WATER", None)
        assert data["category"]["zh"] == "上水井盖"
    if path == "return and re-dispatch":
        assert c["assignee"] == "w2" and data["counts"]["return"] == 1


REFUSED = [
    # status of the case, action, role, actor, fields, error, message
    ("collected", "file", "grid_worker", "w1", {}, PermissionDeniedError, "only dispatcher"),
    ("collected", "file", "resident", "r1", {}, PermissionDeniedError, "may not file"),
    ("collected", "file", "planner", "p1", {}, PermissionDeniedError, "may not file"),
    ("collected", "file", "janitor", "x", {}, PermissionDeniedError, "unknown role"),
    ("collected", "dispatch", "dispatcher", "d1", {}, ValidationError, "allowed from filed"),
    ("collected", "close", "dispatcher", "d1", {}, ValidationError, "it is collected"),
    ("collected", "cancel", "dispatcher", "d1", {}, ValidationError, "needs a note"),
    ("collected", "fly", "admin", "a1", {}, ValidationError, "unknown action"),
    ("filed", "supervise", "dispatcher", "d1", {"kind": "leader"}, PermissionDeniedError,
     "for officials"),
    ("filed", "dispatch", "dispatcher", "d1", {"colour": "red"}, ValidationError, "colour"),
    ("filed", "force_close", "dispatcher", "d1", {"note": "x"}, PermissionDeniedError,
     "only official, admin"),
    ("fed_back", "check", "grid_worker", "w2", {}, PermissionDeniedError, "own grids"),
    ("fed_back", "check", "dispatcher", "d1", {}, PermissionDeniedError, "may not check"),
    ("fed_back", "close", "dispatcher", "d1", {}, ValidationError, "From fed_back: check"),
    ("fed_back", "extend", "official", "o1", {"amount": 1, "unit": "working_days"},
     ValidationError, "allowed from dispatched, handling"),
]


def _to(store, cells, status):
    c = new_case(store, cells)
    plan = {"filed": [("file", "dispatcher", "d1")],
            "fed_back": [("file", "dispatcher", "d1"), ("dispatch", "dispatcher", "d1"),
                         ("handle", "grid_worker", "w1"), ("feedback", "grid_worker", "w1")]}
    for i, (action, role, actor) in enumerate(plan.get(status, [])):
        c = step(store, c, action, role, actor, f"02 10:{10 + i:02d}", cells)
    assert c["status"] == status
    return c


@pytest.mark.parametrize("status", sorted({r[0] for r in REFUSED}))
def test_wrong_role_or_status_is_refused_and_nothing_changes(store, cells, status):
    c = _to(store, cells, status)  # one case per status, every refusal of that status tried on it
    before, steps_before = store.get_case(c["id"]), store.case_history(c["id"])
    for _status, action, role, actor, fields, error, match in [r for r in REFUSED
                                                               if r[0] == status]:
        with pytest.raises(error, match=match):
            step(store, c, action, role, actor, "02 11:00", cells, **fields)
        assert store.get_case(c["id"]) == before, (action, role)
        pd.testing.assert_frame_equal(store.case_history(c["id"]), steps_before)


def test_grid_workers_report_only_in_their_grids(store, cells):
    with pytest.raises(PermissionDeniedError, match="own grids"):
        new_case(store, cells, where=IN_G2, actor="w1")
    assert store.read_cases().empty
    with pytest.raises(ValidationError, match="unknown category"):
        new_case(store, cells, category="E9999")
    with pytest.raises(PermissionDeniedError, match="source 'resident'"):
        cases.report(store, category="E0101", lon=IN_G1[0], lat=IN_G1[1], description="x",
                     source="patrol", actor="r1", role="resident", at=t("02 10:00"))
    assert store.read_cases().empty


def test_steps_are_kept_in_time_order(store, cells):
    c = new_case(store, cells, at="02 10:00")
    with pytest.raises(ValidationError, match="before the case's last step"):
        step(store, c, "file", "dispatcher", "d1", "02 09:00")


def test_concurrent_transitions_exactly_one_wins(store_factory, cells):
    first, again = store_factory
    c = _to(first, cells, "filed")
    stores = [first, again()]
    results, barrier = [], threading.Barrier(2)

    def attempt(s, who):
        case = s.get_case(c["id"])
        barrier.wait()
        try:
            # both read the same version before either writes
            s.update_case  # noqa: B018 - the store is ready
            cases.transition(_Pinned(s, case), c["id"], "dispatch", actor=who, role="dispatcher",
                             at=t("02 11:00"), assignee=who)
            results.append(("won", who))
        except StaleUpdateError as exc:
            assert "changed by someone else" in str(exc)
            results.append(("stale", who))

    threads = [threading.Thread(target=attempt, args=(s, f"d{i}")) for i, s in enumerate(stores)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert sorted(r[0] for r in results) == ["stale", "won"]
    winner = next(who for outcome, who in results if outcome == "won")
    final = first.get_case(c["id"])
    assert (final["status"], final["assignee"]) == ("dispatched", winner)
    assert first.case_history(c["id"])["action"].tolist() == ["collect", "file", "dispatch"]


class _Pinned:
    """A store whose get_case returns the copy read before the race (both racers saw it)."""

    def __init__(self, store, case):
        self._store, self._case = store, case

    def get_case(self, case_id):
        return self._case

    def __getattr__(self, name):
        return getattr(self._store, name)


def test_warning_overdue_and_escalation(store, cells):
    c = new_case(store, cells, at="02 10:00")
    c = step(store, c, "file", "dispatcher", "d1", "02 10:30")
    c = step(store, c, "dispatch", "dispatcher", "d1", "02 10:40")
    # handling: 2 working hours (grid A) from 10:40 → 14:30 + 40 min = 15:10
    table = cases.case_table(store.read_cases())
    assert table["handle_deadline"].iloc[0] == t("02 15:10")
    states = [cases.timer_states(table, t(f"02 {hm}"))["timer_state"].iloc[0]
              for hm in ("11:00", "13:00", "14:50", "15:20")]
    assert states == ["ok", "ok", "warning", "overdue"]  # warning: last 20 % = last 24 min
    assert cases.timer_states(table, t("02 13:00"), warn_before_hours=2)["timer_state"].iloc[0] \
        == "warning"  # 1 h 10 min of working time left
    assert cases.overdue(store, t("02 14:00")).empty
    assert cases.escalate_overdue(store, t("02 15:20")) == [c["id"]]
    assert cases.escalate_overdue(store, t("02 15:30")) == []  # once per stage
    supervised = cases._data(store.get_case(c["id"]))["supervision"]
    assert [(s["kind"], s["stage"]) for s in supervised] == [("timeout", "handle")]


def test_a_supervision_round_lists_when_dry_then_supervises_once(store, cells):
    c = new_case(store, cells, at="02 10:00")
    c = step(store, c, "file", "dispatcher", "d1", "02 10:30")
    c = step(store, c, "dispatch", "dispatcher", "d1", "02 10:40")
    assert cases.supervise_overdue(store, t("02 15:00"), dry_run=True).timeouts == []
    dry = cases.supervise_overdue(store, t("02 15:20"), dry_run=True)
    assert dry == cases.Supervision([], [c["id"]], dry_run=True)
    assert store.get_case(c["id"])["version"] == c["version"]  # nothing changed
    assert cases.supervise_overdue(store, t("02 15:20")) == cases.Supervision([], [c["id"]])
    assert cases.supervise_overdue(store, t("02 15:30"), dry_run=True).timeouts == []
    # a report never filed is overdue at filing, but 督办 only follows filing: it is left on
    # the dispatcher's overdue list, and the round goes on (it stopped on it before)
    waiting = new_case(store, cells, at="02 11:00")
    late = cases.supervise_overdue(store, t("05 10:00"))
    assert waiting["id"] in set(cases.overdue(store, t("05 10:00"))["id"])
    assert waiting["id"] not in late.timeouts
    assert store.get_case(waiting["id"])["version"] == waiting["version"]


def test_duplicates_are_offered_and_merged(store, cells):
    first = new_case(store, cells, at="02 10:00")
    second = new_case(store, cells, at="02 11:00", where=(IN_G1[0] + 0.0002, IN_G1[1]),
                      photos=["p2.jpg"], reporter={"name": "张三"})
    assert cases._data(second)["possible_duplicates"] == [first["id"]]
    third = new_case(store, cells, category="E0102", at="02 11:05")
    assert cases._data(third)["possible_duplicates"] == []
    master = cases.merge(store, second["id"], first["id"], actor="d1", role="dispatcher",
                         at=t("02 11:10"))
    assert store.get_case(second["id"])["status"] == "merged"
    assert cases._data(master)["duplicates"] == [second["id"]]
    assert "p2.jpg" in cases._data(master)["photos"]
    assert store.case_history(first["id"])["action"].tolist() == ["collect", "merge_in"]
    with pytest.raises(ValidationError, match="categories differ"):
        cases.merge(store, third["id"], first["id"], actor="d1", role="dispatcher")


def test_every_action_is_documented():
    from pathlib import Path

    text = (Path(__file__).resolve().parent.parent / "docs" / "cases.md").read_text()
    for tr in cases.TRANSITIONS:
        row = f"| `{tr.action}` | {tr.label_zh} {tr.label_en} | {', '.join(tr.sources) or '—'} | "
        assert row in text, tr.action
        assert ", ".join(tr.roles) in text


def test_stage_deadlines_for_many_cases_agree_with_the_calendar():
    frame = pd.DataFrame({"service_code": ["E0101", "E0101", "E0105", "E0401"],
                          "area_class": ["A", "C", "B", None]})
    starts = pd.Series([t("02 10:00"), t("06 16:00"), t("02 10:00"), t("02 23:00")])
    due = cases.stage_deadlines(frame, "handle", starts)
    # E0101: 2 wh (A) / 8 wh (C: Fri 1.5 h + Mon 6.5 h); E0105: 20 working days;
    # E0401: 2 urgent hours (B default)
    assert due.tolist() == [t("02 12:00"), t("09 17:30"), t("30 10:00"), t("03 01:00")]
    with pytest.raises(ValidationError, match="unknown stage"):
        cases.stage_deadlines(frame, "lunch", starts)
