"""twin.trust.alarms: who sees, acknowledges, dismisses, promotes alarms; audited; both stores."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from tests.conftest import LAT, LON
from tests.sessions import store_users
from twin import cases as caseloop
from twin.errors import PermissionDeniedError, ValidationError
from twin.schema import ALARMS
from twin.trust import User, alarms

G1, G2 = "45031100100101", "45031100100102"
NOW = pd.Timestamp.now(tz="UTC").floor("s")

USERS = {
    "official": User("off", "official"),
    "dispatcher": User("dis", "dispatcher"),
    "grid_worker": User("gw1", "grid_worker", grids=("R01",)),
    "planner": User("pla", "planner"),
    "resident": User("res", "resident", building_code="B1"),
}


def alarm(rule: str, grid: str, severity: str, minutes_ago: float, *, status: str = "open",
          category: str | None = None) -> dict:
    """One stored alarm of *rule* on a sensor in *grid* (grid 1 west, grid 2 east)."""
    opened = NOW - pd.Timedelta(minutes=minutes_ago)
    lon = LON + (0.0005 if grid == G1 else 0.0015)
    return {
        "id": f"{rule}/S-{grid[-2:]}/{opened:%Y%m%dT%H%M%S}", "rule_id": rule,
        "source_id": f"S-{grid[-2:]}", "source_kind": "sensor", "status": status,
        "severity": severity, "opened_at": opened, "updated_at": opened, "resolved_at": None,
        "property": rule, "value": 1.0, "lon": lon, "lat": LAT + 0.0005, "grid_code": grid,
        "resp_grid_id": "R01" if grid == G1 else "R02", "community_code": "001",
        "street_code": "001", "building_code": None, "lot_id": None, "case_id": None,
        "data": json.dumps({"name_zh": f"{rule}报警", "name_en": f"{rule} alarm",
                            "case_category": category}),
    }


ROWS = [
    alarm("noise_high", G1, "info", 1, category="E0301"),
    alarm("smoke", G2, "critical", 30, category="P0150"),
    alarm("water_leak", G1, "warning", 5, category="E0402"),
    alarm("elevator_fault", G1, "critical", 2),
    alarm("smoke", G1, "critical", 60, status="acknowledged", category="P0150"),
    alarm("pm25_high", G2, "warning", 600, status="closed"),
]
IDS = {(r["rule_id"], r["grid_code"], r["status"]): r["id"] for r in ROWS}


@pytest.fixture
def alarm_store(store, grid_cells):
    grid_cells = grid_cells.assign(grid_worker=["gw1", "gw2"])
    store.write_layer("grid_cells", grid_cells, actor="t", source="t")
    store.put_rows(ALARMS, pd.DataFrame(ROWS))
    store_users(store, *USERS.values())
    return store, grid_cells


def audit_actions(store) -> list[tuple[str, str, str]]:
    rows = store.read_audit()
    return list(zip(rows["actor"], rows["action"], rows["target"], strict=True))


def test_active_alarms_come_critical_first_unseen_before_seen(alarm_store):
    store, cells = alarm_store
    table = alarms.visible_alarms(store, USERS["official"], grid_cells=cells)
    got = list(zip(table["rule_id"], table["severity"], table["status"], strict=True))
    assert got == [
        ("elevator_fault", "critical", "open"),     # critical, unseen, newest first
        ("smoke", "critical", "open"),
        ("smoke", "critical", "acknowledged"),      # critical but already seen
        ("water_leak", "warning", "open"),
        ("noise_high", "info", "open"),
    ]  # the closed pm25 alarm is not active
    assert table.loc[0, "name_zh"] == "elevator_fault报警"


def test_scope_and_grid_workers_see_only_their_grids(alarm_store):
    store, cells = alarm_store
    mine = alarms.visible_alarms(store, USERS["grid_worker"], grid_cells=cells)
    assert set(mine["grid_code"]) == {G1} and len(mine) == 4
    # without the grids given, the store's grid cells expand the responsibility grid R01
    assert set(alarms.visible_alarms(store, USERS["grid_worker"])["id"]) == set(mine["id"])
    drilled = alarms.visible_alarms(store, USERS["official"], grid_cells=cells, grids=[G2])
    assert list(drilled["rule_id"]) == ["smoke"]
    with pytest.raises(PermissionDeniedError, match="alarms.read"):
        alarms.visible_alarms(store, USERS["resident"], grid_cells=cells)
    with pytest.raises(PermissionDeniedError, match="not an enabled user"):
        alarms.visible_alarms(store, User("ghost", "admin"), grid_cells=cells)


def test_acknowledge_is_stored_audited_and_only_once(alarm_store):
    store, cells = alarm_store
    target = IDS[("water_leak", G1, "open")]
    done = alarms.acknowledge_alarm(store, USERS["grid_worker"], target, grid_cells=cells,
                                    origin="web")
    assert done["status"] == "acknowledged"
    stored = store.read_rows(ALARMS, id=target).iloc[0]
    history = json.loads(stored["data"])["history"]
    assert stored["status"] == "acknowledged" and history[-1]["actor"] == "gw1"
    assert ("gw1", "alarm.acknowledge", f"alarm:{target}") in audit_actions(store)
    with pytest.raises(ValidationError, match="not open"):
        alarms.acknowledge_alarm(store, USERS["official"], target, grid_cells=cells)


def test_a_grid_worker_may_not_touch_another_grids_alarm_and_the_refusal_is_audited(alarm_store):
    store, cells = alarm_store
    other = IDS[("smoke", G2, "open")]
    with pytest.raises(PermissionDeniedError, match="not in the grids of 'gw1'"):
        alarms.acknowledge_alarm(store, USERS["grid_worker"], other, grid_cells=cells)
    with pytest.raises(PermissionDeniedError, match="alarms.dismiss"):
        alarms.dismiss_alarm(store, USERS["grid_worker"], IDS[("noise_high", G1, "open")],
                             "false alarm", grid_cells=cells)
    with pytest.raises(PermissionDeniedError, match="alarms.promote"):
        alarms.promote_alarm(store, USERS["planner"], other, grid_cells=cells)
    assert store.read_rows(ALARMS, id=other).iloc[0]["status"] == "open"  # nothing changed
    denied = [a for a in audit_actions(store) if a[1] == "alarm.denied"]
    assert denied == [("gw1", "alarm.denied", f"alarm:{other}"),
                      ("gw1", "alarm.denied", f"alarm:{IDS[('noise_high', G1, 'open')]}"),
                      ("pla", "alarm.denied", f"alarm:{other}")]


@pytest.mark.parametrize("reason", ["", "   ", "x" * 501])
def test_dismissing_needs_a_reason_and_writes_nothing_without_one(alarm_store, reason):
    store, cells = alarm_store
    target = IDS[("noise_high", G1, "open")]
    with pytest.raises(ValidationError, match="reason"):
        alarms.dismiss_alarm(store, USERS["official"], target, reason, grid_cells=cells)
    assert store.read_rows(ALARMS, id=target).iloc[0]["status"] == "open"


def test_dismissing_closes_the_alarm_with_its_reason(alarm_store):
    store, cells = alarm_store
    target = IDS[("noise_high", G1, "open")]
    alarms.dismiss_alarm(store, USERS["official"], target, "  误报：施工噪声  ", grid_cells=cells,
                         origin="web")
    stored = store.read_rows(ALARMS, id=target).iloc[0]
    assert stored["status"] == "closed"
    assert json.loads(stored["data"])["history"][-1]["note"] == "dismissed: 误报：施工噪声"
    row = store.read_audit().iloc[-1]
    detail = row["detail"] if isinstance(row["detail"], dict) else json.loads(row["detail"])
    assert (row["action"], detail["reason"]) == ("alarm.dismiss", "误报：施工噪声")
    assert target not in set(alarms.visible_alarms(store, USERS["official"])["id"])
    with pytest.raises(ValidationError, match="already closed"):
        alarms.promote_alarm(store, USERS["official"], target, grid_cells=cells)


@pytest.mark.parametrize("rule, grid, family", [("water_leak", G1, "event"),
                                                ("smoke", G2, "component")])
def test_promoting_makes_one_case_routed_by_the_case_rules(alarm_store, rule, grid, family):
    store, cells = alarm_store
    target = IDS[(rule, grid, "open")]
    done = alarms.promote_alarm(store, USERS["dispatcher"], target, grid_cells=cells,
                                origin="web")
    case = store.get_case(done["case_id"])
    row = store.read_rows(ALARMS, id=target).iloc[0]
    assert (row["status"], row["case_id"]) == ("in_progress", case["id"])
    assert (case["source"], case["grid_code"], case["family"]) == ("sensor", grid, family)
    expected = caseloop.route(caseloop.lookup_category(case["service_code"]),
                              caseloop.locate(case["lon"], case["lat"], cells), cells)
    assert (case["department"], case["assignee"]) == (expected["department"],
                                                      expected["assignee"])
    if family == "event":  # events go to the territory first: the grid's worker
        assert case["assignee"] == "gw1"
    else:  # components to their owner department first (smoke detectors: FIRE)
        assert case["department"] == "FIRE" and case["assignee"] is None
    assert ("dis", "alarm.promote", f"alarm:{target}") in audit_actions(store)
    assert ("dis", "case.collect", f"case:{case['id']}") in audit_actions(store)
    with pytest.raises(ValidationError, match="already case"):
        alarms.promote_alarm(store, USERS["official"], target, grid_cells=cells)


def test_a_second_screen_promoting_the_same_alarm_is_refused_by_the_store(alarm_store):
    store, cells = alarm_store
    target = IDS[("smoke", G2, "open")]
    before = alarms._alarm(store, target)  # what the second screen read before the first acted
    alarms.promote_alarm(store, USERS["dispatcher"], target, grid_cells=cells)
    original = alarms._alarm
    try:
        alarms._alarm = lambda s, a: before  # the stale read
        with pytest.raises(ValidationError, match="promoted to a case meanwhile"):
            alarms.promote_alarm(store, USERS["official"], target, grid_cells=cells)
    finally:
        alarms._alarm = original
    assert len(store.read_cases()) == 1


def test_promoting_an_alarm_whose_rule_names_no_category_asks_for_one(alarm_store):
    store, cells = alarm_store
    target = IDS[("elevator_fault", G1, "open")]
    with pytest.raises(ValidationError, match="pick the category"):
        alarms.promote_alarm(store, USERS["official"], target, grid_cells=cells)
    done = alarms.promote_alarm(store, USERS["official"], target, category="P0401",
                                grid_cells=cells)
    assert store.get_case(done["case_id"])["service_code"] == "P0401"
