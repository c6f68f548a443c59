"""twin.trust.sessions: signed, expiring, revocable login sessions, on both stores."""

from __future__ import annotations

import pandas as pd
import pytest

from tests.sessions import store_users
from twin import trust
from twin.schema import SESSIONS, USERS
from twin.trust import User
from twin.trust import sessions as ts

T0 = pd.Timestamp("2026-03-02 09:00", tz="UTC")


@pytest.fixture
def users(store):
    return store_users(store, User("off", "official"), User("gw1", "grid_worker", grids=("R01",)))


def test_a_session_resumes_with_the_users_current_rights(store, users):
    token = trust.open_session(store, users[0], origin="web:1.2.3.4", now=T0)
    user = trust.resume_session(store, token, now=T0 + pd.Timedelta(minutes=5))
    assert user is not None and (user.username, user.role) == ("off", "official")
    trust.update_user(store, "off", role="planner", actor="tests")  # rights come from the store
    assert trust.resume_session(store, token, now=T0 + pd.Timedelta(minutes=6)).role == "planner"


def test_the_store_keeps_only_a_hash_of_the_id(store, users):
    token = trust.open_session(store, users[0], now=T0)
    session_id = token.split(".")[0]
    rows = store.read_rows(SESSIONS)
    assert len(rows) == 1 and rows.iloc[0]["id_hash"] != session_id
    assert session_id not in rows.astype(str).to_string()
    assert rows.iloc[0]["username"] == "off"


@pytest.mark.parametrize("mangle", [
    lambda t: t + "0",  # signature changed
    lambda t: "x" + t,  # id changed: signature no longer fits
    lambda t: t.split(".")[0],  # no signature
    lambda t: t.replace(".", ".."),
    lambda t: "",
    lambda t: None,
    lambda t: 12345,
    lambda t: "é." + t.split(".")[1],
])
def test_a_forged_or_broken_value_is_refused(store, users, mangle):
    token = trust.open_session(store, users[0], now=T0)
    assert ts.session_problem(store, mangle(token), now=T0) == "invalid"
    assert trust.resume_session(store, mangle(token), now=T0) is None


def test_a_well_signed_id_that_was_never_opened_is_refused(store, users):
    forged = "A" * 43
    assert ts.session_problem(store, f"{forged}.{ts._sign(forged)}", now=T0) == "invalid"


def test_idle_sessions_end_and_use_keeps_them_alive(store, users, monkeypatch):
    monkeypatch.setenv("TWIN_SESSION_TIMEOUT_MIN", "10")
    token = trust.open_session(store, users[0], now=T0)
    for minute in (8, 16, 24):  # each use within 10 minutes of the one before
        assert trust.resume_session(store, token, now=T0 + pd.Timedelta(minutes=minute))
    assert ts.session_problem(store, token, now=T0 + pd.Timedelta(minutes=35)) == "idle"
    assert trust.resume_session(store, token, now=T0 + pd.Timedelta(minutes=35)) is None


def test_a_session_ends_at_its_absolute_lifetime_however_active(store, users, monkeypatch):
    monkeypatch.setenv("TWIN_SESSION_MAX_HOURS", "1")
    monkeypatch.setenv("TWIN_SESSION_TIMEOUT_MIN", "30")
    token = trust.open_session(store, users[0], now=T0)
    for minute in range(20, 60, 20):
        assert trust.resume_session(store, token, now=T0 + pd.Timedelta(minutes=minute))
    assert ts.session_problem(store, token, now=T0 + pd.Timedelta(minutes=61)) == "expired"


def test_logout_revokes_the_value_for_good(store, users):
    token = trust.open_session(store, users[0], now=T0)
    other = trust.open_session(store, users[0], now=T0)  # a second browser
    assert trust.end_session(store, token, now=T0 + pd.Timedelta(minutes=1)) == "off"
    assert ts.session_problem(store, token, now=T0 + pd.Timedelta(minutes=2)) == "revoked"
    assert trust.resume_session(store, other, now=T0 + pd.Timedelta(minutes=2)) is not None
    assert trust.end_session(store, "nonsense") is None


def test_a_resume_cannot_write_back_over_a_revocation(store, users):
    token = trust.open_session(store, users[0], now=T0)
    trust.end_session(store, token, now=T0 + pd.Timedelta(minutes=1))
    # a resume that had passed its checks just before writes its use afterwards
    ts._touch(store, ts._hash(token.split(".")[0]), T0 + pd.Timedelta(minutes=2))
    assert ts.session_problem(store, token, now=T0 + pd.Timedelta(minutes=3)) == "revoked"


@pytest.mark.parametrize("change", [{"disabled": True}, {"password": "a-new-password-1"}])
def test_disabling_a_user_or_changing_their_password_ends_all_their_sessions(
        store, users, change):
    tokens = [trust.open_session(store, users[0]) for _ in range(3)]
    keep = trust.open_session(store, users[1])
    trust.update_user(store, "off", actor="adm", **change)
    assert [ts.session_problem(store, t) for t in tokens] == ["revoked"] * 3
    assert trust.resume_session(store, keep) is not None
    if "disabled" in change:  # enabled again: the old sessions stay ended
        trust.update_user(store, "off", disabled=False, actor="adm")
        assert trust.resume_session(store, tokens[0]) is None


def test_a_user_disabled_behind_the_librarys_back_is_refused(store, users):
    token = trust.open_session(store, users[0])
    row = store.read_rows(USERS, username="off")
    store.put_rows(USERS, row.assign(disabled=True), on_conflict="update")
    assert ts.session_problem(store, token) == "disabled"
    assert trust.resume_session(store, token) is None


def test_end_all_sessions_of_counts_only_live_ones(store, users):
    tokens = [trust.open_session(store, users[0]) for _ in range(2)]
    trust.end_session(store, tokens[0])
    assert trust.end_all_sessions_of(store, "off") == 1
    assert trust.end_all_sessions_of(store, "off") == 0


def test_resuming_a_new_page_load_is_audited_a_click_is_not(store, users):
    token = trust.open_session(store, users[0])
    before = len(store.read_audit())
    trust.resume_session(store, token)
    trust.resume_session(store, token, origin="web:10.0.0.9")
    log = store.read_audit()
    new = log.iloc[before:]
    assert list(new["action"]) == ["session.resume"]
    assert new.iloc[0]["origin"] == "web:10.0.0.9"


def test_one_time_codes_are_redeemed_once_and_expire():
    code = trust.issue_code("tok.en")
    assert trust.redeem_code(code) == "tok.en"
    assert trust.redeem_code(code) is None
    stale = trust.issue_code("tok.en", ttl_s=-1)
    assert trust.redeem_code(stale) is None
    assert trust.redeem_code(None) is None and trust.redeem_code("unknown") is None
