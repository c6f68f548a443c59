"""twin.trust.users under attack, on both stores: parallel guessing, enumeration, lockout of others.

Each attack of issue 22 is replayed against the library as an attacker would run it, and the
test checks that the defence promised in docs/trust.md ("Login") held.
"""

from __future__ import annotations

import re
import threading
from concurrent.futures import ThreadPoolExecutor

import pandas as pd
import pytest

from tests.sessions import store_users
from twin import settings, trust
from twin.errors import PermissionDeniedError
from twin.schema import LOGIN_ATTEMPTS
from twin.trust import User, participation
from twin.trust import users as users_module

#: The middle of a login window: no test here may cross into the next one by chance.
NOW = pd.Timestamp("2026-12-06 10:07:30", tz="UTC")
RIGHT = "the-right-password"



@pytest.fixture
def checks(monkeypatch):
    """Count the passwords actually checked (argon2 verifications), thread-safe."""
    seen: list[bool] = []
    lock = threading.Lock()
    real = users_module.verify_password

    def counting(password_hash, password):
        ok = real(password_hash, password)
        with lock:
            seen.append(ok)
        return ok

    monkeypatch.setattr(users_module, "verify_password", counting)
    return seen


def _try(store, name, password, origin="web:10.0.0.66", now=NOW):
    """Return what a login attempt answered: the user, or (error class, message, minutes)."""
    try:
        return trust.authenticate(store, name, password, origin=origin, now=now)
    except trust.LoginError as exc:
        return type(exc).__name__, str(exc), getattr(exc, "minutes", None)


def test_16_threads_of_40_guesses_are_stopped_at_the_limit(store, checks):
    trust.create_user(store, "admin", RIGHT, "admin")
    limit = settings.get("max_failed_logins")
    audit_before = len(store.read_audit())
    start = threading.Barrier(16)

    def attacker(t: int) -> list:
        start.wait()
        # the right password is the 21st guess of every thread: by then far more than the
        # limit were tried, so every one of them must be refused unchecked
        guesses = [RIGHT if i == 20 else f"guess-{t}-{i}" for i in range(40)]
        return [_try(store, "admin", g) for g in guesses]

    with ThreadPoolExecutor(16) as pool:
        answers = [a for t in pool.map(attacker, range(16)) for a in t]
    assert len(answers) == 640
    assert not [a for a in answers if isinstance(a, User)], "a guess got in"
    assert len(checks) == limit and not any(checks)  # exactly the allowance was checked
    kinds = pd.Series([a[0] for a in answers]).value_counts().to_dict()
    assert kinds == {"LoginError": limit - 1, "AccountLockedError": 640 - limit + 1}
    # the log holds the checked attempts and the first refusal of each kind, not 640 rows
    new = store.read_audit().iloc[audit_before:]
    assert new["action"].value_counts().to_dict() == {"login.failed": limit, "login.locked": 2}
    # and the right password is refused, unchecked, from that client until the window ends
    assert _try(store, "admin", RIGHT)[0] == "AccountLockedError"
    assert len(checks) == limit


def test_known_and_unknown_names_get_the_same_answers_after_the_same_work(store, checks):
    trust.create_user(store, "alice", RIGHT, "planner")
    answers = {}
    for name, origin in (("alice", "web:10.0.0.1"), ("nobody", "web:10.0.0.2")):
        before = len(checks)
        answers[name] = [_try(store, name, "wrong-password", origin) for _ in range(8)]
        answers[name + ".checks"] = len(checks) - before  # type: ignore[assignment]

    def same(answer, name):
        return answer[0], answer[1].replace(repr(name), "NAME"), answer[2]

    assert [same(a, "alice") for a in answers["alice"]] == [
        same(a, "nobody") for a in answers["nobody"]]
    assert answers["alice.checks"] == answers["nobody.checks"] == settings.get(
        "max_failed_logins")
    kinds = [a[0] for a in answers["nobody"]]
    assert kinds.count("AccountLockedError") == 8 - settings.get("max_failed_logins") + 1
    assert "locked" in answers["nobody"][-1][1]


def test_nobody_can_lock_another_user_out_from_another_client(store):
    trust.create_user(store, "admin", RIGHT, "admin")
    for i in range(20):
        _try(store, "admin", f"guess-{i}", origin="web:203.0.113.9")
    assert _try(store, "admin", RIGHT, origin="web:203.0.113.9")[0] == "AccountLockedError"
    user = trust.authenticate(store, "admin", RIGHT, origin="web:10.1.1.1", now=NOW)
    assert user.username == "admin" and user.role == "admin"


def test_a_client_trying_many_names_is_slowed_other_clients_are_not(store, monkeypatch):
    monkeypatch.setenv("TWIN_MAX_LOGINS_PER_CLIENT", "12")
    trust.create_user(store, "bob", RIGHT, "planner")
    sprayer = "web:198.51.100.7"
    answers = [_try(store, f"name{i}", "Passw0rd!", origin=sprayer) for i in range(20)]
    assert [a[0] for a in answers] == ["LoginError"] * 12 + ["AccountLockedError"] * 8
    assert "from here" in answers[-1][1]
    assert _try(store, "bob", RIGHT, origin=sprayer)[0] == "AccountLockedError"
    assert trust.authenticate(store, "bob", RIGHT, origin="web:10.2.2.2", now=NOW).role == (
        "planner")


def test_a_throttled_client_adds_no_rows_however_fast_it_sends(store, monkeypatch):
    monkeypatch.setenv("TWIN_MAX_LOGINS_PER_CLIENT", "8")
    trust.create_user(store, "admin", RIGHT, "admin")
    for i in range(10):  # the client's allowance (8) is used up, its first refusal audited
        _try(store, "admin", f"guess-{i}")
    audit, attempts = len(store.read_audit()), len(store.read_rows(LOGIN_ATTEMPTS))
    answers = {_try(store, name, "guess")[0] for name in ("admin", "nobody", "root")
               for _ in range(20)}
    assert answers == {"AccountLockedError"}
    assert len(store.read_audit()) == audit  # not one audit row per refused attempt
    assert len(store.read_rows(LOGIN_ATTEMPTS)) == attempts  # nor one attempt row


def test_the_window_ends_a_success_renews_an_admin_unlocks(store, monkeypatch):
    monkeypatch.setenv("TWIN_MAX_FAILED_LOGINS", "3")
    trust.create_user(store, "carol", RIGHT, "official")
    for _ in range(3):
        _try(store, "carol", "wrong-password")
    locked = _try(store, "carol", RIGHT)
    assert locked[0] == "AccountLockedError" and 1 <= locked[2] <= 15
    later = NOW + pd.Timedelta(minutes=settings.get("lockout_min"))
    assert trust.authenticate(store, "carol", RIGHT, origin="web:10.0.0.66", now=later)
    # a success gives a fresh allowance: two more slips do not lock the user out
    for _ in range(2):
        assert _try(store, "carol", "wrong-password", now=later)[0] == "LoginError"
    assert isinstance(_try(store, "carol", RIGHT, now=later), User)
    # an administrator's unlock renews the allowance from every client at once
    for _ in range(3):
        _try(store, "carol", "wrong-password", now=later)
    assert _try(store, "carol", RIGHT, now=later)[0] == "AccountLockedError"
    monkeypatch.setattr(users_module, "_now", lambda: later)  # the admin acts in that window
    listed = trust.list_users(store).set_index("username").loc["carol"]
    assert listed["failed_logins"] == 5 and pd.notna(listed["locked_until"])
    trust.update_user(store, "carol", unlock=True, actor="adm")
    assert pd.isna(trust.list_users(store).set_index("username").loc["carol", "locked_until"])
    assert isinstance(_try(store, "carol", RIGHT, now=later), User)


def test_attempts_are_stored_per_slot_with_hostile_names(store):
    name = "x" * 3000 + "\ud800'; DROP TABLE twin_users; --"
    for _ in range(3):
        assert _try(store, name, "pw", origin="web:" + "y" * 500)[0] == "LoginError"
    rows = store.read_rows(LOGIN_ATTEMPTS, scope="user")
    assert len(rows) == 3 and set(rows["outcome"]) == {"failed"}
    assert rows["username"].str.len().max() == 64 and rows["client"].str.len().max() == 128
    assert sorted(rows["slot"]) == [1, 2, 3]


# -- the library acts only for users it authenticated ----------------------------------------


@pytest.fixture
def small_twin(store, grid_cells, buildings):
    """Two grids, three buildings, three residents and two stored users (a planner, a worker)."""
    store.write_layer("grid_cells", grid_cells.assign(grid_worker=["gw1", "gw2"],
                                                      grid_worker_phone=["13900001111",
                                                                         "13900002222"]),
                      actor="t", source="t")
    store.write_layer("buildings", buildings.assign(
        grid_code=["45031100100101", "45031100100101", "45031100100102"],
        resp_grid_id=["R01", "R01", "R02"], community_code=["001"] * 3), actor="t", source="t")
    store.write_layer("residents", pd.DataFrame({
        "resident_id": ["P1", "P2", "P3"], "building_code": ["B1", "B2", "B3"],
        "name": ["张三", "欧阳娜娜", "李四"],
        "phone": ["13812345678", "13700001234", "13600005678"],
        "household_size": [3, 2, 4]}), actor="t", source="t")
    store_users(store, User("pla", "planner"), User("gw1", "grid_worker", grids=("R01",)))
    return store


MADE_UP = User("mallory", "admin")


@pytest.mark.parametrize("call", [
    lambda s, u: trust.read_residents(s, u),
    lambda s, u: trust.read_layer(s, u, "grid_cells"),
    lambda s, u: trust.visible_cases(s, u),
    lambda s, u: trust.read_case(s, u, "C-1"),
    lambda s, u: trust.transition_case(s, u, "C-1", "file"),
    lambda s, u: trust.report_case(s, u, category="x", lon=0, lat=0, source="patrol"),
    lambda s, u: trust.read_audit(s, u),
    lambda s, u: trust.export_audit_csv(s, u),
    lambda s, u: trust.export_own_data(s, u),
    lambda s, u: participation.publish(s, u, kind="notice", scope_kind="community",
                                       scope_id="001", title="t"),
    lambda s, u: participation.answer(s, u, "P-1", ["a"]),
    lambda s, u: participation.notices_for(s, u),
], ids=["read_residents", "read_layer", "visible_cases", "read_case", "transition_case",
        "report_case", "read_audit", "export_audit_csv", "export_own_data", "publish", "answer",
        "notices_for"])
def test_a_made_up_user_gets_nothing(small_twin, call):
    audit_before = len(small_twin.read_audit())
    with pytest.raises(PermissionDeniedError, match="not an enabled user"):
        call(small_twin, MADE_UP)
    with pytest.raises(PermissionDeniedError, match="not an enabled user"):
        call(small_twin, User("mallory", "resident", resident_id="P1", building_code="B1"))
    assert len(small_twin.read_audit()) == audit_before  # nothing was read, nothing changed


def test_rights_come_from_the_store_not_from_the_object(small_twin):
    # a stored planner dressing up as a grid worker still gets a planner's counts
    rows = trust.read_residents(small_twin, User("pla", "grid_worker", grids=("R01", "R02")))
    assert list(rows.columns) == ["building_code", "households", "residents"]
    # a grid worker claiming another grid still sees only their own
    rows = trust.read_residents(small_twin, User("gw1", "grid_worker", grids=("R02",)))
    assert sorted(rows["resident_id"]) == ["P1", "P2"]
    # a disabled user's object is refused at once
    trust.update_user(small_twin, "gw1", disabled=True, actor="adm")
    with pytest.raises(PermissionDeniedError, match="not an enabled user"):
        trust.read_residents(small_twin, User("gw1", "grid_worker", grids=("R01",)))
    assert trust.resolve(small_twin, None).is_anonymous


def test_minutes_are_until_the_window_ends(store):
    trust.create_user(store, "dave", RIGHT, "planner")
    for _ in range(settings.get("max_failed_logins")):
        last = _try(store, "dave", "wrong-password")
    width = settings.get("lockout_min")
    start = pd.Timestamp(int(NOW.timestamp() // (width * 60)) * width * 60, unit="s", tz="UTC")
    left = (start + pd.Timedelta(minutes=width) - NOW).total_seconds() / 60
    assert last[2] == int(-(-left // 1))
    assert re.search(rf"locked for {last[2]} min", last[1])


# -- administrators manage users through twin.trust.admin (issue 17: the users page) ------------


@pytest.fixture
def admins(store):
    """An admin and a planner, stored."""
    from twin.trust import admin

    boss, planner = store_users(store, User("boss", "admin"), User("plan1", "planner"))
    return admin, boss, planner


def test_an_admin_creates_a_user_with_a_password_shown_once_and_they_log_in(store, admins):
    admin, boss, _ = admins
    made = admin.add_user(store, boss, "newbie", "dispatcher", display_name="新人",
                          origin="web:10.1.1.1")
    assert len(made.password) == admin.GENERATED_PASSWORD_LENGTH
    assert trust.authenticate(store, "newbie", made.password, origin="t").role == "dispatcher"
    row = store.read_audit().query("action == 'user.create' and target == 'user:newbie'")
    assert row["actor"].tolist() == ["boss"] and row["origin"].tolist() == ["web:10.1.1.1"]
    assert made.password not in store.read_audit()["detail"].astype(str).str.cat()
    table = admin.users_table(store, boss)
    assert "password_hash" not in table
    assert table.set_index("username").loc["newbie", "enabled"]


@pytest.mark.parametrize("kwargs, match", [
    ({"username": "gw", "role": "grid_worker"}, "needs"),
    ({"username": "res", "role": "resident"}, "resident id or a building"),
    ({"username": "x y", "role": "planner"}, "no spaces"),
    ({"username": "p2", "role": "king"}, "unknown role"),
    ({"username": "p3", "role": "planner", "password": "short"}, "at least 8"),
    ({"username": "plan1", "role": "planner"}, "exists"),
])
def test_a_bad_new_user_is_refused_with_a_message(store, admins, kwargs, match):
    from twin.errors import ValidationError

    admin, boss, _ = admins
    before = len(admin.users_table(store, boss))
    with pytest.raises(ValidationError, match=match):
        admin.add_user(store, boss, **kwargs)
    assert len(admin.users_table(store, boss)) == before


def test_only_admins_manage_users(store, admins):
    admin, _, planner = admins
    for call in (lambda: admin.users_table(store, planner),
                 lambda: admin.add_user(store, planner, "sneaky", "admin"),
                 lambda: admin.change_user(store, planner, "plan1", role="admin"),
                 lambda: admin.reset_password(store, planner, "boss"),
                 lambda: admin.users_table(store, User("plan1", "admin"))):  # rights: stored
        with pytest.raises(PermissionDeniedError):
            call()
    assert trust.get_user(store, "plan1").role == "planner"
    # a made-up User named after the admin gets the admin's stored rights, nothing more
    assert len(admin.users_table(store, User("boss", "resident"))) == 2


def test_change_role_grids_disable_and_reset(store, admins):
    from twin.errors import ValidationError

    admin, boss, _ = admins
    changed = admin.change_user(store, boss, "plan1", role="grid_worker", grids="R01, R02")
    assert (changed.role, changed.grids) == ("grid_worker", ("R01", "R02"))
    with pytest.raises(ValidationError, match="needs grids"):
        admin.change_user(store, boss, "plan1", grids="")
    admin.change_user(store, boss, "plan1", disabled=True)
    assert trust.session_user(store, "plan1") is None
    admin.change_user(store, boss, "plan1", disabled=False)
    again = admin.reset_password(store, boss, "plan1")
    assert trust.authenticate(store, "plan1", again.password, origin="t").username == "plan1"
    with pytest.raises(trust.LoginError):
        trust.authenticate(store, "plan1", "test-password", origin="t")
    actions = store.read_audit().query("target == 'user:plan1' and actor == 'boss'")["action"]
    assert actions.tolist() == ["user.update"] * 4  # the refused change wrote nothing


def test_the_last_admin_cannot_be_removed(store, admins):
    admin, boss, _ = admins
    for change in ({"role": "planner"}, {"disabled": True}):
        with pytest.raises(PermissionDeniedError, match="last enabled administrator"):
            admin.change_user(store, boss, "boss", **change)
    assert trust.session_user(store, "boss").role == "admin"
    admin.add_user(store, boss, "boss2", "admin")
    admin.change_user(store, boss, "boss", role="planner")  # another admin remains
    assert trust.get_user(store, "boss").role == "planner"
    boss2 = trust.get_user(store, "boss2")
    with pytest.raises(PermissionDeniedError, match="last enabled administrator"):
        admin.change_user(store, boss2, "boss2", disabled=True)
