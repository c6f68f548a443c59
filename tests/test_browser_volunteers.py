"""A volunteer signs up and checks in on site; residents propose and support: real Chromium, phone.

Each journey checks the store after each step and keeps screenshots in
tests/artifacts/volunteers-*.png.
"""

from __future__ import annotations

import pandas as pd
import pytest

from tests.browser import (
    ARTIFACTS,
    LAT,
    LON,
    reload_midway,
    settle,
    streamlit_server,
    wait_until,
    write_small_twin,
)
from tests.test_browser_roles import PASSWORD, close_sidebar
from twin import i18n, trust
from twin.schema import PROPOSAL_SUPPORTS, PROPOSALS, VOLUNTEER_SIGNUPS
from twin.store import open_store
from twin.trust import volunteers

pytestmark = pytest.mark.browser

WAIT_MS = 60_000
LANG = "zh-CN"
SITE = (LON + 0.0010, LAT + 0.0010)  # the task's place, in the first grid
TITLE = "夜间平安巡逻"


def t(key: str, **fmt) -> str:
    return i18n.t(key, LANG, **fmt)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """The small twin with an official, a volunteer, two residents and a task going on now."""
    gpkg = write_small_twin(tmp_path_factory.mktemp("volunteers") / "volunteers.gpkg")
    with open_store(gpkg) as store:
        official = trust.create_user(store, "boss", PASSWORD, "official", actor="tests")
        trust.create_user(store, "vol1", PASSWORD, "volunteer", actor="tests")
        for name, building in (("res1", "B-1"), ("res2", "B-2")):
            trust.create_user(store, name, PASSWORD, "resident", building_code=building,
                              actor="tests")
        now = pd.Timestamp.now(tz="UTC").floor("s")
        task = volunteers.post_task(
            store, official, kind="patrol", title=TITLE, lon=SITE[0], lat=SITE[1],
            starts_at=now - pd.Timedelta(minutes=10), ends_at=now + pd.Timedelta(hours=3),
            capacity=2, tolerance_m=40.0, grid_cells=store.read_layer("grid_cells"))
    with streamlit_server(gpkg) as url:
        yield url, gpkg, task["id"]


def phone(chromium, url: str, where: tuple[float, float], path: str = ""):
    context = chromium.new_context(
        viewport={"width": 390, "height": 844}, locale=LANG, is_mobile=True, has_touch=True,
        device_scale_factor=2, permissions=["geolocation"],
        geolocation={"longitude": where[0], "latitude": where[1], "accuracy": 10})
    page = context.new_page()
    page.set_default_timeout(WAIT_MS)
    page.errors = []
    page.on("pageerror", lambda error: page.errors.append(str(error)))
    page.goto(url.rstrip("/") + path, wait_until="domcontentloaded")
    return context, page


def log_in(page, username: str) -> None:
    page.get_by_label(t("auth.username")).wait_for(timeout=WAIT_MS)
    close_sidebar(page)
    page.get_by_label(t("auth.username")).fill(username)
    page.get_by_label(t("auth.password")).fill(PASSWORD)
    page.get_by_role("button", name=t("auth.submit")).click()
    page.get_by_role("button", name=t("auth.logout")).wait_for(timeout=WAIT_MS)


def click(page, name: str) -> None:
    """Click the button named *name* once the app has settled (a rerun may redraw it)."""
    settle(page)
    button = page.get_by_role("button", name=name).first
    button.scroll_into_view_if_needed()
    button.click()


def locate(page, lon: float) -> None:
    """Ask the browser for the device's place and wait until the page shows it."""
    click(page, t("svc.locate"))
    page.get_by_text(f"{lon:.6f}").first.wait_for(timeout=WAIT_MS)


def shot(page, name: str) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"volunteers-{name}.png"), full_page=True)


def test_a_volunteer_signs_up_and_checks_in_on_site(chromium, server):
    url, gpkg, task_id = server
    context, page = phone(chromium, url, SITE, "/volunteer")
    try:
        log_in(page, "vol1")
        page.get_by_role("heading", name=t("vol.title")).first.wait_for()
        page.get_by_text(TITLE).first.wait_for()
        click(page, t("vol.sign_up"))
        page.get_by_text(t("vol.signed_up", title=TITLE)).first.wait_for()
        with open_store(gpkg) as store:
            held = store.read_rows(VOLUNTEER_SIGNUPS, task_id=task_id, volunteer="vol1")
        assert held["status"].tolist() == ["signed_up"]
        reload_midway(page)  # RELOAD-MIDWAY: the phone reloads the tab, still the volunteer
        page.get_by_role("heading", name=t("vol.mine")).first.wait_for()
        close_sidebar(page)
        locate(page, SITE[0])  # on site (a refusal off site: tests/test_volunteers.py)
        click(page, t("vol.check_in"))
        page.get_by_text(t("vol.checked_in_now")).first.wait_for()
        shot(page, "checked-in")
        with open_store(gpkg) as store:
            row = store.read_rows(VOLUNTEER_SIGNUPS, task_id=task_id, volunteer="vol1").iloc[0]
        assert pd.notna(row["checkin_at"]) and row["checkin_m"] <= 40
        assert abs(row["checkin_lon"] - SITE[0]) < 1e-6
        assert not page.errors, page.errors
    except Exception:
        shot(page, "failed-volunteer")
        raise
    finally:
        context.close()


def test_a_resident_proposes_and_another_supports(chromium, server):
    url, gpkg, _ = server
    where = (LON + 0.0008, LAT + 0.0020)
    context, page = phone(chromium, url, where, "/proposals")
    try:
        log_in(page, "res1")
        page.get_by_role("heading", name=t("prop.new")).first.wait_for()
        close_sidebar(page)
        locate(page, where[0])
        page.get_by_label(t("prop.title_field")).fill("楼下加装休息长椅")
        page.get_by_label(t("prop.body")).fill("老人散步走累了没处坐")
        click(page, t("prop.send"))
        page.get_by_text(t("prop.sent", title="楼下加装休息长椅")).first.wait_for()
        with open_store(gpkg) as store:
            made = store.read_rows(PROPOSALS)
        assert made[["title", "proposer", "grid_code"]].values.tolist() == [
            ["楼下加装休息长椅", "res1", "45031100100101"]]
    except Exception:
        shot(page, "failed-propose")
        raise
    finally:
        context.close()
    context, page = phone(chromium, url, where, "/proposals")
    try:
        log_in(page, "res2")
        page.get_by_text("楼下加装休息长椅").first.wait_for()
        page.get_by_text(t("prop.by_resident")).first.wait_for()  # the proposer is masked
        assert page.get_by_text("res1").count() == 0
        click(page, t("prop.support"))
        page.get_by_text(t("prop.you_support")).first.wait_for()
        wait_until(lambda: page.get_by_text(t("prop.supports", count=1)).count(), 60,
                   "one support shown")
        shot(page, "supported")
        with open_store(gpkg) as store:
            supports = store.read_rows(PROPOSAL_SUPPORTS)
        assert supports["supporter"].tolist() == ["res2"]
        assert not page.errors, page.errors
    except Exception:
        shot(page, "failed-support")
        raise
    finally:
        context.close()
