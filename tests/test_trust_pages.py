"""AppTest of the trust pages: login, lockout, timeout, audit, public and participation pages."""

from __future__ import annotations

import pandas as pd
import pytest
from streamlit.testing.v1 import AppTest

from tests.browser import ROOT, write_small_twin
from tests.sessions import sign_in_as, store_users
from twin import trust
from twin.errors import PermissionDeniedError
from twin.store import open_store
from twin.trust import User, participation

XSS = '<img src=x onerror="window.__xss=1">'



@pytest.fixture
def gpkg(tmp_path, monkeypatch):
    path = write_small_twin(tmp_path / "t.gpkg")
    monkeypatch.setenv("TWIN_DATABASE_URL", str(path))
    with open_store(path) as store:
        trust.create_demo_users(store)
        residents = pd.DataFrame({"resident_id": ["P1"], "building_code": ["B-1"],
                                  "name": ["张三"], "phone": ["13812345678"]})
        store.write_layer("residents", residents, actor="t", source="t")
    return path


def _page(name: str, user: User | None = None) -> AppTest:
    at = AppTest.from_file(str(ROOT / "ui" / name), default_timeout=60)
    return sign_in_as(at, user).run()


def _gate_app():
    import streamlit as st

    from ui.auth import login_gate, logout_button

    user = login_gate("en")
    st.write(f"USER={user.username if user else None} ROLE={user.role if user else None}")
    logout_button("en")


def _texts(at: AppTest) -> str:
    return " ".join(str(m.value) for m in [*at.markdown, *at.error, *at.info, *at.success,
                                             *at.warning])


@pytest.mark.parametrize("lang", ["zh-CN", "en"])
def test_every_declared_role_has_a_name_in_the_ui(lang):
    from ui.auth import role_labels, t_role

    labels = role_labels(lang)
    assert set(labels) == set(trust.EVERYONE)
    assert all(name and name != role for role, name in labels.items())
    assert t_role("grid_worker", lang) == labels["grid_worker"]


def test_login_form_logs_in_and_out_and_counts_failures(gpkg):
    at = AppTest.from_function(_gate_app, default_timeout=60).run()
    assert "USER=None" in _texts(at)
    at.text_input(key="login_username").input("admin")
    at.text_input(key="login_password").input("wrong password")
    at.button[0].click().run()
    assert "Wrong username or password" in _texts(at)
    at.text_input(key="login_password").input("admin-demo")
    at.button[0].click().run()
    assert "USER=admin" in _texts(at)
    at.button(key="logout").click().run()
    assert "USER=None" in _texts(at)
    with open_store(gpkg) as store:
        assert [a for a in store.read_audit()["action"] if a in ("login", "login.failed",
                                                                 "logout")] == [
            "login.failed", "login", "logout"]


def test_lockout_message(gpkg, monkeypatch):
    monkeypatch.setenv("TWIN_MAX_FAILED_LOGINS", "2")
    at = AppTest.from_function(_gate_app, default_timeout=60).run()
    at.text_input(key="login_username").input("planner")
    for _ in range(2):
        at.text_input(key="login_password").input("nope nope")
        at.button[0].click().run()
    assert "locked" in _texts(at)
    at.text_input(key="login_password").input("planner-demo")
    at.button[0].click().run()
    assert "locked" in _texts(at) and "USER=None" in _texts(at)


def test_an_idle_session_expires(gpkg):
    at = AppTest.from_function(_gate_app, default_timeout=60)
    at.session_state["auth.user"] = "admin"
    at.session_state["auth.last_activity"] = (
        pd.Timestamp.now(tz="UTC") - pd.Timedelta(hours=2)).isoformat()
    at.run()
    assert "USER=None" in _texts(at) and "session expired" in _texts(at)


def test_a_disabled_or_demoted_user_loses_their_rights_at_the_next_request(gpkg):
    at = sign_in_as(AppTest.from_function(_gate_app, default_timeout=60),
                    User("disp1", "dispatcher")).run()
    assert "USER=disp1" in _texts(at)
    with open_store(gpkg) as store:
        trust.update_user(store, "disp1", role="planner", actor="admin")
    at.run()
    assert "ROLE=planner" in _texts(at)
    with open_store(gpkg) as store:
        trust.update_user(store, "disp1", disabled=True, actor="admin")
    at.run()
    assert "USER=None" in _texts(at)
    with open_store(gpkg) as store:  # and the library refuses a step by a stale User object
        with pytest.raises(trust.LoginError):
            trust.authenticate(store, "disp1", "test-password")
        with pytest.raises(PermissionDeniedError, match="not an enabled user"):
            trust.visible_cases(store, User("disp1", "dispatcher"))


@pytest.mark.parametrize("role, allowed", [
    ("admin", True), ("official", False), ("dispatcher", False), ("grid_worker", False),
    ("planner", False), ("data_staff", False), ("resident", False), (None, False),
])
def test_audit_page_only_for_admins(gpkg, role, allowed):
    user = User(role, role, grids=("R01",) if role == "grid_worker" else (),
                resident_id="P1" if role == "resident" else None) if role else None
    at = _page("audit_page.py", user)
    assert not at.exception
    if allowed:
        assert "Hash chain intact" in _texts(at) or "散列链完整" in _texts(at)
        assert len(at.dataframe) == 1
    else:
        assert not at.dataframe and not at.success


def test_audit_page_shows_a_broken_chain(gpkg):
    import sqlite3

    with sqlite3.connect(gpkg) as conn:
        conn.execute("UPDATE twin_audit SET actor = 'someone else' WHERE seq = 3")
    at = _page("audit_page.py", User("admin", "admin"))
    assert "3" in at.error[0].value and not at.success


def test_public_page_needs_no_login_and_shows_no_personal_data(gpkg):
    from tests.browser import LAT, LON
    from twin import cases

    with open_store(gpkg) as store:
        case = cases.report(store, category=str(cases.load_categories().index[0]),
                            lon=LON + 0.00123, lat=LAT + 0.00177, description=XSS,
                            source="resident", actor="res", role="resident",
                            reporter={"name": "张三", "phone": "13812345678"})
        for action, role in (("file", "dispatcher"), ("dispatch", "dispatcher"),
                             ("handle", "official"), ("feedback", "official"),
                             ("check", "admin"), ("close", "dispatcher")):
            cases.transition(store, case["id"], action, actor="李四", role=role)
    at = _page("public_page.py")
    assert not at.exception
    shown = " ".join(str(df.value.to_dict()) for df in at.dataframe)
    assert "13812345678" not in shown and "张三" not in shown and "onerror" not in shown
    recent = at.dataframe[1].value
    assert recent.iloc[0, 3] == pytest.approx(LON + 0.0015) and recent.iloc[0, 4] == (
        pytest.approx(LAT + 0.0015))


def test_participation_page_residents_answer_once_staff_see_results(gpkg):
    with open_store(gpkg) as store:
        official, = store_users(store, User("off", "official"))
        poll = participation.publish(
            store, official, kind="poll", scope_kind="building", scope_id="B-1",
            title=XSS, body="**加装电梯**", questions=[{"question": "同意?",
                                                      "choices": ["同意", "不同意"]}])
    resident = User("resident", "resident", resident_id="P1", building_code="B-1")
    at = _page("participation_page.py", resident)
    assert not at.exception
    assert any("onerror" in m.value and "\\<img" in m.value for m in at.markdown)
    at.radio(key=f"q_{poll['id']}_0").set_value("不同意")
    at.button[0].click().run()
    assert not at.exception
    assert at.success and not at.error
    with open_store(gpkg) as store:
        assert participation.results(store, poll["id"]).set_index("choice")[
            "answers"].to_dict() == {"同意": 0, "不同意": 1}
    at = _page("participation_page.py", resident)
    assert not any(r.key == f"q_{poll['id']}_0" for r in at.radio)  # answered: no form
    staff = _page("participation_page.py", User("planner", "planner"))
    assert not staff.exception and len(staff.dataframe) == 1
    assert len(staff.get("deck_gl_json_chart")) == 1
    outsider = _page("participation_page.py",
                     User("r2", "resident", resident_id="P9", building_code="B-2"))
    assert not outsider.radio
