"""AppTest of the role pages: users (admin), layers upload (data staff), my reports (residents)."""

from __future__ import annotations

import pytest
from streamlit.testing.v1 import AppTest

from tests.browser import ROOT, write_small_twin
from tests.sessions import sign_in_as
from twin import i18n, trust
from twin.store import open_store
from twin.trust import User

ROLES = ("admin", "official", "dispatcher", "grid_worker", "planner", "data_staff", "resident")


@pytest.fixture
def gpkg(tmp_path, monkeypatch):
    path = write_small_twin(tmp_path / "t.gpkg")
    monkeypatch.setenv("TWIN_DATABASE_URL", str(path))
    return path


def _user(role: str) -> User:
    return User(f"u_{role}", role, grids=("R01",) if role == "grid_worker" else (),
                resident_id="P1" if role == "resident" else None,
                building_code="B-1" if role == "resident" else None)


def _page(name: str, role: str) -> AppTest:
    at = AppTest.from_file(str(ROOT / "ui" / name), default_timeout=60)
    at.session_state["lang"] = "en"
    return sign_in_as(at, _user(role)).run()


@pytest.mark.parametrize("name, allowed, marker", [
    ("users_page.py", {"admin"}, "users.create"),
    ("layers_page.py", {"admin", "data_staff"}, "roles.load.title"),
    ("resident_page.py", {"resident"}, "roles.rep.new"),
])
@pytest.mark.parametrize("role", ROLES)
def test_each_role_page_opens_for_its_roles_only(gpkg, name, allowed, marker, role):
    at = _page(name, role)
    assert not at.exception, at.exception
    headers = [h.value for h in at.subheader]
    if role in allowed:
        assert i18n.t(marker, "en") in headers
    else:
        assert not headers and at.error  # "your role may not open this page"


def test_users_page_creates_a_user_and_shows_the_password_once(gpkg):
    at = _page("users_page.py", "admin")
    at.text_input(key="new_username").input("helper1")
    at.selectbox(key="new_role").set_value("planner")
    at.button[0].click().run()  # the form's submit button
    assert not at.exception
    shown = [c.value for c in at.code]
    assert len(shown) == 1 and len(shown[0]) == 14
    with open_store(gpkg) as store:
        assert trust.authenticate(store, "helper1", shown[0], origin="t").role == "planner"
    at.run()
    assert not at.code  # shown once only


@pytest.mark.parametrize("name, role", [
    ("users_page.py", "admin"), ("layers_page.py", "data_staff"),
    ("resident_page.py", "resident"),
])
def test_english_pages_have_no_chinese_words_of_their_own(gpkg, name, role):
    import re

    at = _page(name, role)
    assert not at.exception
    words = [*(e.value for e in (*at.title, *at.subheader, *at.caption, *at.info)),
             *(w.label for w in (*at.text_input, *at.selectbox, *at.button, *at.checkbox,
                                 *at.text_area))]
    words += [str(o) for box in at.selectbox if box.label in {"Role", "Kind of problem",
                                                               "What kind of problem"}
              for o in box.options]
    chinese = [w for w in words if re.search(r"[\u4e00-\u9fff]", str(w))]
    assert words and not chinese, chinese
