"""Volunteer tasks, the points ledger and residents' proposals: twin.trust, on both stores."""

from __future__ import annotations

import json
import sqlite3
import threading
import uuid

import pandas as pd
import pytest
from shapely.geometry import box

from tests.conftest import LAT, LON, STORE_KINDS
from tests.sessions import store_users
from twin import cases, points, trust
from twin.errors import DuplicateIdError, PermissionDeniedError, ValidationError
from twin.schema import OUTBOX, POINTS_LEDGER, VOLUNTEER_SIGNUPS
from twin.store import open_store
from twin.trust import User, outgoing
from twin.trust import proposals as prop
from twin.trust import volunteers as vol

D = 0.001  # about 100 m: the side of a unit grid
START = pd.Timestamp("2026-03-07 01:00", tz="UTC")  # a Saturday morning in Guilin
END = START + pd.Timedelta(hours=3)
#: a square of about 40 m by 40 m inside the first grid: the task's area
AREA = box(LON + 0.0003, LAT + 0.0003, LON + 0.0007, LAT + 0.0007)
INSIDE = (LON + 0.0005, LAT + 0.0005)
NEAR = (LON + 0.00085, LAT + 0.0005)  # ≈ 15 m east of the area: within a 20 m tolerance
FAR = (LON + 0.0025, LAT + 0.0005)  # ≈ 180 m east of it


def users(store) -> dict[str, User]:
    made = store_users(
        store, User("off", "official"), User("adm", "admin"), User("disp", "dispatcher"),
        User("gw", "grid_worker", grids=("R02",)),
        User("v1", "volunteer", display_name="王志愿"), User("v2", "volunteer"),
        User("v3", "volunteer", resident_id="P3"),
        User("r1", "resident", resident_id="P1", building_code="B1"),
        User("r2", "resident", resident_id="P2", building_code="B2"),
        User("r3", "resident", resident_id="P3", building_code="B3"))
    return {u.username: u for u in made}


@pytest.fixture(scope="module", params=STORE_KINDS)
def community(request, tmp_path_factory):
    """One store of each kind for the module (each test uses its own tasks and accounts)."""
    import geopandas as gpd

    if request.param == "embedded":
        store = open_store(tmp_path_factory.mktemp("vol") / "twin.gpkg")
        again = lambda: open_store(store.url)  # noqa: E731
    else:
        url = request.getfixturevalue("postgis_url")
        store = open_store(url, schema=f"t_{uuid.uuid4().hex[:10]}", drop_schema_on_close=True)
        again = lambda: open_store(url, schema=store.schema)  # noqa: E731
    cells = gpd.GeoDataFrame(
        {"grid_code": ["45031100100101", "45031100100102"], "county_code": ["450311"] * 2,
         "street_code": ["001"] * 2, "community_code": ["001"] * 2, "sequence": ["01", "02"],
         "name": ["一网格", "二网格"], "resp_grid_id": ["R01", "R02"]},
        geometry=[box(LON, LAT, LON + D, LAT + D), box(LON + D, LAT, LON + 2 * D, LAT + D)],
        crs=4326)
    store.write_layer("grid_cells", cells, actor="t", source="t")
    store.write_layer("buildings", gpd.GeoDataFrame(
        {"building_code": ["B1", "B2", "B3"], "name": ["1栋", "2栋", "3栋"],
         "grid_code": ["45031100100101", "45031100100101", "45031100100102"],
         "resp_grid_id": ["R01", "R01", "R02"], "community_code": ["001"] * 3},
        geometry=[box(LON + x, LAT + 0.0004, LON + x + 0.0003, LAT + 0.0005)
                  for x in (0.0001, 0.0005, 0.0013)], crs=4326), actor="t", source="t")
    try:
        yield store, cells, users(store), again
    finally:
        store.close()


def _task(store, who, cells, **kw):
    spec = {"kind": "patrol", "title": "夜间巡逻", "starts_at": START, "ends_at": END,
            "capacity": 2, "area": AREA, "tolerance_m": 20.0, **kw}
    return vol.post_task(store, who, grid_cells=cells, now=START - pd.Timedelta(days=1), **spec)


def test_tasks_posted_checked_in_and_out_on_site_hours_points_others_hidden(community):
    store, cells, u, _ = community
    with pytest.raises(PermissionDeniedError, match="volunteers.post"):
        _task(store, u["v1"], cells)
    with pytest.raises(PermissionDeniedError, match="not in your grids"):
        _task(store, u["gw"], cells)  # the area lies in R01, the grid worker has R02
    with pytest.raises(ValidationError, match="end after it starts"):
        _task(store, u["off"], cells, ends_at=START)
    with pytest.raises(ValidationError, match="at least one volunteer"):
        _task(store, u["off"], cells, capacity=0)
    task = _task(store, u["off"], cells)
    assert (task["grid_code"], task["resp_grid_id"]) == ("45031100100101", "R01")
    assert AREA.contains(vol.task_area(task).representative_point())
    tid = task["id"]
    early = START - pd.Timedelta(hours=1)
    vol.sign_up(store, u["v1"], tid, now=early)
    vol.sign_up(store, u["v2"], tid, now=early)
    with pytest.raises(DuplicateIdError, match="already"):
        vol.sign_up(store, u["v1"], tid, now=early)
    with pytest.raises(ValidationError, match="full"):
        vol.sign_up(store, u["v3"], tid, now=early)
    with pytest.raises(ValidationError, match="minutes before it starts"):
        vol.check_in(store, u["v1"], tid, *INSIDE, now=early)
    with pytest.raises(ValidationError, match=r"you are 1[5-9]\d m outside the task's area "
                                              r"\(allowed 20 m\)"):
        vol.check_in(store, u["v1"], tid, *FAR, now=START)
    assert pd.isna(store.read_rows(VOLUNTEER_SIGNUPS, volunteer="v1")["checkin_at"].iloc[0])
    assert store.read_audit().iloc[-1]["action"] == "volunteer_task.checkin_refused"
    vol.check_in(store, u["v1"], tid, *NEAR, now=START + pd.Timedelta(minutes=5))
    done = vol.check_out(store, u["v1"], tid, *INSIDE, now=START + pd.Timedelta(hours=2,
                                                                                   minutes=5))
    assert done["hours"] == 2.0 and 10 < done["checkin_m"] <= 20
    assert vol.my_points(store, u["v1"])[0] == 20
    with pytest.raises(ValidationError, match="already"):
        vol.check_out(store, u["v1"], tid, *INSIDE, now=START + pd.Timedelta(hours=2, minutes=9))
    # a volunteer sees open tasks (counts, no names) and only their own sign-ups
    shown = vol.open_tasks(store, u["v3"], near=FAR, now=START).set_index("id").loc[tid]
    assert (shown["taken"], shown["left"]) == (2, 0) and 150 < shown["distance_m"] < 200
    assert not {"volunteer", "created_by", "name"} & set(shown.index)
    assert vol.my_tasks(store, u["v2"])["hours"].isna().all()
    assert vol.my_tasks(store, u["v3"]).empty
    with pytest.raises(PermissionDeniedError):
        vol.roster(store, u["v2"], tid)
    roster = vol.roster(store, u["off"], tid)
    assert roster.set_index("volunteer").loc["v1", "name"] == "王志愿"
    per_grid = vol.hours_per_grid(store, None)
    assert per_grid.to_dict("records") == [{"grid_code": "45031100100101", "tasks": 1,
                                            "volunteers": 1, "hours": 2.0}]


def test_two_volunteers_racing_for_the_last_place_one_gets_it(community):
    first, cells, u, again = community
    task = _task(first, u["off"], cells, capacity=2)
    vol.sign_up(first, u["v1"], task["id"], now=START)
    stores = [again(), again()]
    barrier, outcomes = threading.Barrier(2), {}

    def race(store, who):
        barrier.wait()
        try:
            vol.sign_up(store, u[who], task["id"], now=START)
            outcomes[who] = "in"
        except ValidationError as exc:
            outcomes[who] = str(exc)

    threads = [threading.Thread(target=race, args=(s, w))
               for s, w in zip(stores, ("v2", "v3"), strict=True)]
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    finally:
        for s in stores:
            s.close()
    assert sorted(o if o == "in" else "full" for o in outcomes.values()) == ["full", "in"]
    held = first.read_rows(VOLUNTEER_SIGNUPS, task_id=task["id"], status="signed_up")
    assert len(held) == 2
    # a place given back is free again
    loser = next(w for w, o in outcomes.items() if o != "in")
    winner = next(w for w, o in outcomes.items() if o == "in")
    vol.cancel_sign_up(first, u[winner], task["id"])
    vol.sign_up(first, u[loser], task["id"], now=START)


def test_a_valid_report_and_a_poll_answer_earn_points_through_their_loops(community):
    store, cells, u, _ = community
    lon, lat = cells.geometry.iloc[0].centroid.coords[0]
    at = pd.Timestamp("2026-03-03 09:00", tz="Asia/Shanghai")
    case = trust.report_case(store, u["r3"], category="E0101", lon=lon, lat=lat,
                             description="垃圾暴露", source="resident", at=at, grid_cells=cells)
    for i, action in enumerate(("file", "dispatch", "handle", "feedback", "check")):
        role = {"handle": "official", "feedback": "official", "check": "admin"}.get(
            action, "dispatcher")
        cases.transition(store, case["id"], action, actor="x", role=role,
                         at=at + pd.Timedelta(hours=1 + i))
    assert points.balance(store, "r3") == 0
    trust.transition_case(store, u["disp"], case["id"], "close", at=at + pd.Timedelta(hours=7))
    assert points.balance(store, "r3") == points.RULES["valid_report"]
    poll = trust.participation.publish(
        store, u["off"], kind="poll", scope_kind="community", scope_id="001", title="议题",
        questions=[{"question": "同意吗？", "choices": ["同意", "不同意"]}])
    trust.participation.answer(store, u["r2"], poll["id"], ["同意"])
    assert vol.my_points(store, u["r2"])[0] == points.RULES["poll_answer"]
    assert points.verify_ledger(store).ok


def test_proposals_support_once_masked_and_adopted_as_task_or_case(community):
    store, cells, u, _ = community
    lon, lat = cells.geometry.iloc[1].centroid.coords[0]
    wish = prop.propose(store, u["r1"], kind="wish", title="给独居老人送菜", lon=lon, lat=lat,
                        grid_cells=cells)
    project = prop.propose(store, u["r1"], kind="micro_project", title="修补3栋前路面",
                           body="坑洼积水", lon=lon, lat=lat, grid_cells=cells)
    bench = prop.propose(store, u["r2"], kind="micro_project", title="加装长椅",
                         lon=lon, lat=lat, grid_cells=cells)
    with pytest.raises(ValidationError, match="outside every grid"):
        prop.propose(store, u["r1"], kind="wish", title="远处", lon=LON - 0.01, lat=LAT,
                     grid_cells=cells)
    with pytest.raises(PermissionDeniedError):
        prop.propose(store, u["v1"], kind="wish", title="x", lon=lon, lat=lat, grid_cells=cells)
    with pytest.raises(ValidationError, match="you made this proposal"):
        prop.support(store, u["r1"], wish["id"])
    assert prop.support(store, u["r2"], wish["id"]) == 1
    assert prop.support(store, u["r3"], wish["id"]) == 2
    with pytest.raises(DuplicateIdError, match="once each"):
        prop.support(store, u["r2"], wish["id"])
    seen = prop.list_proposals(store, u["r2"]).set_index("id")
    assert seen.loc[wish["id"], "proposer"] == prop.MASKED and seen.loc[wish["id"], "supported"]
    assert seen.loc[bench["id"], "proposer"] == "r2" and seen.loc[bench["id"], "mine"]
    assert seen.loc[wish["id"], "supports"] == 2
    assert prop.list_proposals(store, u["off"]).set_index("id").loc[wish["id"], "proposer"] \
        == "r1"
    with pytest.raises(PermissionDeniedError):
        prop.decide(store, u["r2"], wish["id"], adopt=True, reason="好")
    with pytest.raises(ValidationError, match="say why"):
        prop.decide(store, u["off"], bench["id"], adopt=False, reason=" ")
    prop.decide(store, u["off"], bench["id"], adopt=False, reason="人行道太窄，放不下")
    adopted = prop.decide(store, u["off"], wish["id"], adopt=True, reason="志愿者每周送一次",
                          outcome="task", grid_cells=cells,
                          task={"kind": "elderly_visit", "starts_at": START, "ends_at": END,
                                "capacity": 3})
    task = vol.get_task(store, adopted["outcome_id"])
    assert (task["proposal_id"], task["kind"], task["grid_code"]) == (
        wish["id"], "elderly_visit", "45031100100102")
    as_case = prop.decide(store, u["off"], project["id"], adopt=True, reason="纳入民生微实事",
                          outcome="case", case={"category": "E0101"}, grid_cells=cells)
    made = store.get_case(as_case["outcome_id"])
    assert (made["source"], made["grid_code"]) == ("instruction", "45031100100102")
    with pytest.raises(ValidationError, match="adopted already"):
        prop.support(store, u["r3"], project["id"])
    assert points.balance(store, "r1") == 2 * points.RULES["proposal_adopted"]
    public = prop.list_proposals(store, None)
    assert sorted(public["id"]) == sorted([wish["id"], project["id"]])
    assert "proposer" not in public and public["reason"].notna().all()
    layer = prop.proposals_layer(store, None)
    assert len(layer) == 2 and not layer.geometry.is_empty.any()
    summary = prop.proposal_summary(store, None).set_index("grid_code")
    assert summary.loc["45031100100102"].to_dict() == {"proposed": 3, "adopted": 2,
                                                      "declined": 1, "supports": 2}


def test_volunteers_hear_of_tasks_in_their_grid_and_proposers_of_decisions(community):
    store, cells, u, _ = community
    outgoing.save_channel(store, u["adm"], id="vol-grid1", kind="webhook",
                          url="https://ops.example/vol", secret="s" * 32, role="volunteer",
                          grid="45031100100101", events="task.posted")
    outgoing.save_channel(store, u["adm"], id="r1-phone", kind="apprise",
                          url="json://127.0.0.1/r1", role="resident", recipient="r1",
                          events="proposal.decided")
    near = _task(store, u["off"], cells, title="通知测试：一网格巡逻")
    elsewhere = _task(store, u["off"], cells, title="通知测试：二网格", area=None,
                      lon=LON + 1.5 * D, lat=LAT + 0.5 * D)
    lon, lat = cells.geometry.iloc[0].centroid.coords[0]
    wish = prop.propose(store, u["r1"], kind="wish", title="通知测试：装路灯", lon=lon, lat=lat,
                        grid_cells=cells)
    prop.decide(store, u["off"], wish["id"], adopt=False, reason="已列入明年计划")
    sent = store.read_rows(OUTBOX)
    told = sent.loc[sent["channel"] == "vol-grid1", "subject"].tolist()
    assert f"task:{near['id']}" in told and f"task:{elsewhere['id']}" not in told
    decided = sent.loc[sent["subject"] == f"proposal:{wish['id']}"]
    assert decided["channel"].tolist() == ["r1-phone"]
    payload = decided["payload"].iloc[0]
    payload = json.loads(payload) if isinstance(payload, str) else payload
    assert "已列入明年计划" in payload["text"] and "不予采纳" in payload["text"]


# -- last: it breaks the ledger of the module's store on purpose ---------------------------


def _tamper(store, seq: int) -> None:
    if store.url.startswith("postgresql"):
        import sqlalchemy as sa

        with pytest.raises(sa.exc.DBAPIError, match="append-only"):  # the trigger refuses
            with store.engine.begin() as conn:
                conn.execute(sa.text("UPDATE twin_points_ledger SET delta = 500 WHERE seq = :s"),
                             {"s": seq})
        with store.engine.begin() as conn:  # as the table's owner: its triggers off first
            conn.execute(sa.text("ALTER TABLE twin_points_ledger DISABLE TRIGGER USER"))
            conn.execute(sa.text("UPDATE twin_points_ledger SET delta = 500 WHERE seq = :s"),
                         {"s": seq})
    else:
        with sqlite3.connect(store.path) as conn:
            conn.execute("UPDATE twin_points_ledger SET delta = 500 WHERE seq = ?", (seq,))


def test_ledger_balances_once_per_ref_and_a_silent_edit_is_detected(community):
    store, cells, u, _ = community
    at = pd.Timestamp("2026-01-05 02:00", tz="UTC")
    first = points.award(store, [
        {"account": "acct-a", "delta": 5, "reason": "valid_report", "ref": "case:C1"},
        {"account": "acct-b", "delta": 1, "reason": "poll_answer", "ref": "poll:P1:r2"},
        {"account": "acct-a", "delta": 1, "reason": "poll_answer", "ref": "poll:P1:r1"},
    ], at=at)
    assert first["seq"].diff().iloc[1:].tolist() == [1, 1]
    again = points.award(store, {"account": "acct-a", "delta": 5, "reason": "valid_report",
                                 "ref": "case:C1"}, at=at)
    assert again.empty  # the same ref earns once
    with pytest.raises(ValidationError, match="unknown point reasons"):
        points.award(store, {"account": "acct-a", "delta": 5, "reason": "bribe", "ref": "x"})
    assert points.balance(store, "acct-a") == 6 and points.balance(store, "nobody") == 0
    held = points.balances(store).set_index("account")["points"]
    assert (held["acct-a"], held["acct-b"]) == (6, 1)
    assert vol.verify_points(store, u["adm"]).ok
    with pytest.raises(PermissionDeniedError):
        vol.verify_points(store, u["off"])
    with pytest.raises(PermissionDeniedError):
        vol.my_points(store, u["off"])
    rows = len(store.read_rows(POINTS_LEDGER))
    seq = int(first["seq"].iloc[1])
    _tamper(store, seq)
    check = vol.verify_points(store, u["adm"])
    assert (check.ok, check.first_bad_seq, check.reason) == (False, seq, "changed")
    assert len(store.read_rows(POINTS_LEDGER)) == rows
