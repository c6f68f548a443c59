"""twin.trust.participation: notices and polls scoped to a place, one answer per resident."""

from __future__ import annotations

import pandas as pd
import pytest

from tests.sessions import store_users
from tests.test_trust import USERS, twin_store  # noqa: F401  (fixtures)
from twin.errors import DuplicateIdError, PermissionDeniedError, ValidationError
from twin.trust import User
from twin.trust import participation as part

Q = [{"question": "加装电梯?", "choices": ["赞成", "反对", "<b>弃权</b>"]}]
P1 = User("p1", "resident", resident_id="P1", building_code="B1")
P2 = User("p2", "resident", resident_id="P2", building_code="B2")
P3 = USERS["resident"]  # lives in B3, grid 02 (R02)
P9 = User("p9", "resident", building_code="B1")


@pytest.fixture(autouse=True)
def residents_stored(twin_store):  # noqa: F811
    """The residents above as stored users (the library acts only for those)."""
    store_users(twin_store, P1, P2, P9)


def test_poll_life_and_one_answer_per_resident(twin_store):  # noqa: F811
    poll = part.publish(twin_store, USERS["official"], kind="poll", scope_kind="community",
                        scope_id="001", title="电梯", questions=Q)
    part.answer(twin_store, P1, poll["id"], ["赞成"])
    part.answer(twin_store, P2, poll["id"], ["反对"])
    part.answer(twin_store, P3, poll["id"], ["赞成"])
    with pytest.raises(DuplicateIdError, match="already answered"):
        part.answer(twin_store, P1, poll["id"], ["反对"])
    assert part.has_answered(twin_store, P1, poll["id"])
    overall = part.results(twin_store, poll["id"]).set_index("choice")["answers"].to_dict()
    assert overall == {"赞成": 2, "反对": 1, "<b>弃权</b>": 0}
    by_b = part.results(twin_store, poll["id"], by="building")
    assert by_b.loc[by_b["building_code"] == "B1", ["choice", "answers"]].values.tolist() == [
        ["赞成", 1], ["反对", 0], ["<b>弃权</b>", 0]]
    by_grid = part.results(twin_store, poll["id"], by="grid")
    assert by_grid.groupby("grid_code")["answers"].sum().to_dict() == {
        "45031100100101": 2, "45031100100102": 1}
    layer = part.results_layer(twin_store, poll["id"], by="grid")
    assert len(layer) == 2 and layer.crs.to_epsg() == 4326
    assert "<b>弃权</b>: 0" in layer["tooltip"].iloc[0]  # plain text for innerText tooltips
    assert layer.set_index("code").loc["45031100100101", "answers"] == 2
    assert set(layer["leading"]) <= {"赞成", "反对"}
    with pytest.raises(ValidationError, match="not an option"):
        part.answer(twin_store, P9, poll["id"], ["也许"])


def test_scope_decides_who_sees_and_answers(twin_store):  # noqa: F811
    poll = part.publish(twin_store, USERS["official"], kind="poll", scope_kind="building",
                        scope_id="B3", title="B3 only", questions=Q)
    notice = part.publish(twin_store, USERS["grid_worker"], kind="notice", scope_kind="grid",
                          scope_id="R01", title="停水通知", body="周六 9:00-12:00")
    assert part.notices_for(twin_store, P3)["id"].tolist() == [poll["id"]]
    assert part.notices_for(twin_store, P1)["id"].tolist() == [notice["id"]]
    assert len(part.notices_for(twin_store, USERS["planner"])) == 2
    with pytest.raises(PermissionDeniedError, match="only residents there"):
        part.answer(twin_store, P1, poll["id"], ["赞成"])
    with pytest.raises(ValidationError, match="notice"):
        part.answer(twin_store, P1, notice["id"], ["赞成"])
    with pytest.raises(PermissionDeniedError):
        part.notices_for(twin_store, None)


@pytest.mark.parametrize("role, ok", [
    ("admin", True), ("official", True), ("grid_worker", True), ("dispatcher", False),
    ("planner", False), ("data_staff", False), ("resident", False),
])
def test_who_may_publish(twin_store, role, ok):  # noqa: F811
    kwargs = dict(kind="notice", scope_kind="grid", scope_id="R01", title="通知")
    if ok:
        assert part.publish(twin_store, USERS[role], **kwargs)["created_by"] == USERS[role].username
    else:
        with pytest.raises(PermissionDeniedError):
            part.publish(twin_store, USERS[role], **kwargs)


def test_grid_workers_publish_only_in_their_grids(twin_store):  # noqa: F811
    gw = USERS["grid_worker"]  # R01: B1, B2
    part.publish(twin_store, gw, kind="notice", scope_kind="building", scope_id="B2", title="x")
    for scope_kind, scope_id in (("grid", "R02"), ("building", "B3"), ("community", "001")):
        with pytest.raises(PermissionDeniedError, match="only to their grids"):
            part.publish(twin_store, gw, kind="notice", scope_kind=scope_kind,
                         scope_id=scope_id, title="x")


@pytest.mark.parametrize("kind, questions, match", [
    ("poll", None, "needs questions"),
    ("poll", [{"question": "q", "choices": ["a"]}], "two different"),
    ("poll", Q + Q, "exactly one"),
    ("vote", Q, "kind must be"),
])
def test_bad_polls_are_refused(twin_store, kind, questions, match):  # noqa: F811
    with pytest.raises(ValidationError, match=match):
        part.publish(twin_store, USERS["admin"], kind=kind, scope_kind="community",
                     scope_id="001", title="t", questions=questions)


def test_closed_polls_and_retention(twin_store):  # noqa: F811
    poll = part.publish(twin_store, USERS["admin"], kind="survey", scope_kind="community",
                        scope_id="001", title="满意度", questions=Q + [
                            {"question": "物业?", "choices": ["好", "差"]}],
                        closes_at="2026-01-31T00:00:00Z")
    part.answer(twin_store, P1, poll["id"], ["赞成", "好"], now="2026-01-10T00:00:00Z")
    with pytest.raises(ValidationError, match="closed"):
        part.answer(twin_store, P2, poll["id"], ["赞成", "好"], now="2026-02-10T00:00:00Z")
    assert part.answers_of(twin_store, P1)["poll_id"].tolist() == [poll["id"]]
    assert part.anonymise_answers(twin_store, pd.Timestamp("2026-01-20", tz="UTC")) == 1
    assert part.answers_of(twin_store, P1).empty
    assert part.results(twin_store, poll["id"], question=1).set_index("choice")[
        "answers"].to_dict() == {"好": 1, "差": 0}
    with pytest.raises(DuplicateIdError):  # the pseudonym still allows one answer only
        part.answer(twin_store, P1, poll["id"], ["反对", "差"], now="2026-01-21T00:00:00Z")
