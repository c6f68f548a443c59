"""Every role's daily job in a real Chromium: data staff load, admin manages users, residents.

Each journey checks the store after each step (what the page claims must be what was written)
and keeps screenshots in tests/artifacts/roles-*.png.
"""

from __future__ import annotations

import json
import math
import re

import pytest
from playwright.sync_api import TimeoutError as PlaywrightTimeout
from playwright.sync_api import expect
from shapely.geometry import Point

from tests.browser import (
    ARTIFACTS,
    distinct_colours,
    reload_midway,
    settle,
    streamlit_server,
    wait_until,
    write_small_twin,
)
from tests.test_trust_roles import PNG, data_home, osm_buildings
from twin import i18n, layers, trust
from twin.store import open_store
from twin.trust import participation

pytestmark = pytest.mark.browser

WAIT_MS = 60_000
LANG = "zh-CN"
PASSWORD = "roles-password-1"
POLL_TITLE = "加装电梯意见征集"


def t(key: str, **fmt) -> str:
    return i18n.t(key, LANG, **fmt)



@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """The small twin with a data staff, an admin, a resident of B-1 and a poll for B-1."""
    folder = tmp_path_factory.mktemp("roles")
    gpkg = write_small_twin(folder / "roles.gpkg")
    with open_store(gpkg) as store:
        trust.create_user(store, "boss", PASSWORD, "admin", actor="tests")
        trust.create_user(store, "ds", PASSWORD, "data_staff", actor="tests")
        trust.create_user(store, "res", PASSWORD, "resident", resident_id="P1",
                          building_code="B-1", actor="tests")
        participation.publish(store, trust.get_user(store, "boss"), kind="poll",
                              scope_kind="building", scope_id="B-1", title=POLL_TITLE,
                              questions=[{"question": "是否同意加装电梯？",
                                          "choices": ["同意", "不同意"]}])
    mp = pytest.MonkeyPatch()  # photos of the journey land in this folder, not the repository
    home = folder / "data_home"
    home.mkdir()
    mp.setenv("TWIN_DATA_DIR", str(data_home(home)))
    try:
        with streamlit_server(gpkg) as url:
            yield url, gpkg, home
    finally:
        mp.undo()


def browse(chromium, server, phone: bool = False):
    url = server[0]
    size = {"width": 390, "height": 844} if phone else {"width": 1920, "height": 1080}
    context = chromium.new_context(viewport=size, locale=LANG, is_mobile=phone,
                                   has_touch=phone, device_scale_factor=2 if phone else 1)
    page = context.new_page()
    page.set_default_timeout(WAIT_MS)  # a shared 2-core machine: clicks may wait for a busy app
    page.errors = []
    page.on("pageerror", lambda error: page.errors.append(str(error)))
    page.goto(url, wait_until="domcontentloaded")
    return context, page


def close_sidebar(page) -> None:
    """On a phone the sidebar opens over the page: close it when it is open."""
    sidebar = page.locator("[data-testid='stSidebar']")
    sidebar.wait_for(state="attached", timeout=WAIT_MS)
    if sidebar.get_attribute("aria-expanded") == "false" or \
            sidebar.get_attribute("data-collapsed") == "true":
        return
    sidebar.hover()
    page.locator("[data-testid='stSidebarCollapseButton'] button").first.click()
    page.wait_for_function(
        "() => document.querySelector('[data-testid=\"stSidebar\"]')"
        ".getAttribute('data-collapsed') !== 'false'", timeout=WAIT_MS)


def log_in(page, username: str, password: str = PASSWORD, phone: bool = False) -> None:
    if phone:
        page.get_by_label(t("auth.username")).wait_for(timeout=WAIT_MS)
        close_sidebar(page)
    page.get_by_label(t("auth.username")).fill(username)
    page.get_by_label(t("auth.password")).fill(password)
    page.get_by_role("button", name=t("auth.submit")).click()
    page.get_by_role("button", name=t("auth.logout")).wait_for(timeout=WAIT_MS)


def go(page, title: str, phone: bool = False, heading: str | None = None) -> None:
    """Open a page from the navigation (opening the sidebar on a phone first)."""
    settle(page)
    if phone:
        opener = page.locator("[data-testid='stExpandSidebarButton'], "
                              "[data-testid='stSidebarCollapsedControl'] button")
        if opener.first.is_visible():
            opener.first.click()
    page.locator("[data-testid='stSidebarNav'] a").filter(has_text=title).first.click()
    page.get_by_role("heading", name=heading or title).first.wait_for(timeout=WAIT_MS)
    if phone:
        close_sidebar(page)


def choose(page, label: str, option: str, box=None) -> None:
    """Pick *option* in the select box labelled *label* (or the locator *box*).

    The list opens on a click, or, when a rerun closed it again, on the arrow key.
    """
    box = box or page.locator("[data-testid='stSelectbox']").filter(has_text=label).first
    box.scroll_into_view_if_needed()
    wanted = page.get_by_role("option", name=option, exact=True).first
    for opener in (lambda: box.click(), lambda: box.locator("input").press("ArrowDown"),
                   lambda: box.locator("button").first.click()):
        settle(page)  # a rerun still drawing would close the list again
        opener()
        try:
            wanted.wait_for(timeout=10_000)
            break
        except PlaywrightTimeout:
            continue
    wanted.click()
    expect(box.locator("input")).to_have_value(option, timeout=WAIT_MS)



def shot(page, name: str) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    settle(page)
    page.screenshot(path=str(ARTIFACTS / f"roles-{name}.png"), full_page=True)


def current(gpkg, layer: str):
    with open_store(gpkg) as store:
        return next(v for v in store.layer_versions(layer) if v.current)


def test_data_staff_upload_dry_run_load_and_roll_back(chromium, server, tmp_path):
    _, gpkg, _ = server
    before = current(gpkg, "buildings")
    title = f"{layers.get_layer('buildings').title(LANG)} (buildings)"
    upload = tmp_path / "osm_buildings.geojson"
    upload.write_bytes(osm_buildings())
    context, page = browse(chromium, server)
    try:
        log_in(page, "ds")
        go(page, t("nav.layers"))
        page.locator("[data-testid='stFileUploader'] input[type=file]").set_input_files(upload)
        page.locator("[data-testid='stFileChipName'][title='osm_buildings.geojson']").wait_for(
            timeout=WAIT_MS)
        choose(page, t("roles.load.layer"), f"{layers.get_layer('buildings').title(LANG)} "
                                            "(buildings)")
        settle(page)
        page.get_by_role("button", name=t("roles.load.dry_run")).click()
        report = page.get_by_text(t("roles.load.dry_report", name="osm_buildings.geojson"))
        report.wait_for(timeout=WAIT_MS)
        metrics = page.locator("[data-testid='stMetric']")
        assert metrics.filter(has_text=t("roles.load.would_load")).first.inner_text().endswith("2")
        assert metrics.filter(has_text=t("roles.load.rejected")).first.inner_text().endswith("1")
        page.get_by_text(t("roles.load.rejected_row", row=3,
                           reason="buildings takes Polygon; this is a LineString")).wait_for()
        page.locator("[data-testid='stDataFrame']").last.scroll_into_view_if_needed()
        shot(page, "data-staff-dry-run")
        assert current(gpkg, "buildings").version == before.version  # a dry run writes nothing
        page.get_by_role("button", name=t("roles.load.load")).click()
        done = current_after(gpkg, before.version)
        page.get_by_text(t("roles.load.loaded", layer=f"{layers.get_layer('buildings').title(LANG)}"
                         " (buildings)", version=done.version, rows=2)).wait_for(timeout=WAIT_MS)
        assert done.rows == 2 and done.actor == "ds" and done.source.startswith("osm_buildings")
        shot(page, "data-staff-loaded")
        reload_midway(page)  # still logged in, still on the layers page
        page.get_by_text(t("layers.pick")).first.wait_for(timeout=WAIT_MS)
        choose(page, t("layers.pick"), f"{layers.get_layer('buildings').title(LANG)} (buildings)")
        settle(page)
        page.get_by_role("button", name=t("roles.rollback.button", version=before.version)
                         ).click()
        page.get_by_text(t("roles.rollback.done", layer=title, version=before.version,
                           rows=before.rows)).wait_for(timeout=WAIT_MS)
        back = current(gpkg, "buildings")
        assert (back.version, back.rows) == (before.version, before.rows)
        shot(page, "data-staff-rolled-back")
        assert not page.errors, page.errors
    except Exception:
        page.screenshot(path=str(ARTIFACTS / "roles-FAILED.png"), full_page=True)
        raise
    finally:
        context.close()


def current_after(gpkg, version: int, timeout_s: float = 60.0):
    """The current version of buildings once it is newer than *version* (the load committed)."""
    import time

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        now = current(gpkg, "buildings")
        if now.version > version:
            return now
        time.sleep(0.25)  # polling the store, the condition itself
    raise AssertionError(f"no version after {version} in {timeout_s} s")


def test_admin_creates_a_user_changes_their_role_and_they_log_in(chromium, server):
    from ui.auth import t_role

    _, gpkg, _ = server
    context, page = browse(chromium, server)
    try:
        log_in(page, "boss")
        go(page, t("nav.users"), heading=t("users.title"))
        form = page.locator("[data-testid='stForm']").filter(
            has=page.get_by_role("button", name=t("users.create_button")))
        form.get_by_label(t("users.col.username")).fill("newdisp")
        form.get_by_label(t("users.col.name")).fill("新调度员")
        choose(page, t("users.col.role"), t_role("dispatcher", LANG))
        form.get_by_role("button", name=t("users.create_button")).click()
        page.get_by_text(t("users.created", name="newdisp")).wait_for(timeout=WAIT_MS)
        password = page.locator("[data-testid='stCode'] code").first.inner_text().strip()
        assert re.fullmatch(r"[A-Za-z0-9]{14}", password), password
        with open_store(gpkg) as store:
            assert trust.get_user(store, "newdisp").role == "dispatcher"
            made = store.read_audit().query("action == 'user.create'")
            assert made["target"].iloc[-1] == "user:newdisp" and made["actor"].iloc[-1] == "boss"
        shot(page, "admin-created")
        reload_midway(page)
        page.get_by_text(t("users.pick")).first.wait_for(timeout=WAIT_MS)
        choose(page, t("users.pick"), "newdisp")
        edit = page.locator("[data-testid='stForm']").filter(
            has=page.get_by_role("button", name=t("users.save")))
        # the form of the picked user is drawn (it held the first user's role before)
        expect(edit.locator("[data-testid='stSelectbox'] input").first).to_have_value(
            t_role("dispatcher", LANG), timeout=WAIT_MS)
        settle(page)
        choose(page, "", t_role("planner", LANG),
               box=edit.locator("[data-testid='stSelectbox']").first)
        edit.get_by_role("button", name=t("users.save")).click()
        page.get_by_text(t("users.saved", name="newdisp")).wait_for(timeout=WAIT_MS)
        with open_store(gpkg) as store:
            assert trust.get_user(store, "newdisp").role == "planner"
        assert page.locator("[data-testid='stCode']").count() == 0  # the password is gone
        shot(page, "admin-changed-role")
        assert not page.errors, page.errors
    except Exception:
        page.screenshot(path=str(ARTIFACTS / "roles-FAILED.png"), full_page=True)
        raise
    finally:
        context.close()
    context, page = browse(chromium, server)
    try:
        log_in(page, "newdisp", password)
        page.locator("[data-testid='stSidebarNav'] a").filter(
            has_text=t("nav.analysis")).first.wait_for(timeout=WAIT_MS)
        assert page.locator("[data-testid='stSidebarNav'] a").filter(
            has_text=t("nav.cases")).count() == 0  # a planner, not a dispatcher any more
        with open_store(gpkg) as store:
            logins = store.read_audit().query("action == 'login' and actor == 'newdisp'")
            assert json.loads(logins["detail"].iloc[-1])["role"] == "planner"
        shot(page, "admin-new-user-logged-in")
    except Exception:
        page.screenshot(path=str(ARTIFACTS / "roles-FAILED.png"), full_page=True)
        raise
    finally:
        context.close()


def tap_building(page, gpkg, code: str) -> None:
    """Tap building *code* on the resident page's map (its view is fitted to the buildings)."""
    from twin.deck import fit_view

    MAP_WIDTH, MAP_HEIGHT = 340, 320  # noqa: N806 - as ui/resident_page.py fits its view

    with open_store(gpkg) as store:
        buildings = store.read_layer("buildings")
        community = store.read_layer("community")  # the view is fitted to it
    canvas = page.locator("[data-testid='stDeckGlJsonChart'] canvas").first
    canvas.wait_for(timeout=WAIT_MS)
    wait_until(lambda: distinct_colours(canvas.screenshot()) >= 3, what="the map to draw")
    view = fit_view(tuple(community.total_bounds), width=MAP_WIDTH, height=MAP_HEIGHT)
    point = buildings.set_index("building_code").geometry[code].representative_point()
    scale = 512 * 2 ** view.zoom
    merc = lambda la: math.log(math.tan(math.pi / 4 + math.radians(la) / 2))  # noqa: E731
    box = canvas.bounding_box()
    x = box["x"] + box["width"] / 2 + (point.x - view.longitude) / 360 * scale
    y = box["y"] + box["height"] / 2 + (merc(view.latitude) - merc(point.y)) / (2 * math.pi) \
        * scale
    page.touchscreen.tap(x, y)  # a phone: a finger, not a mouse



def test_resident_on_a_phone_reports_with_a_photo_follows_and_answers_a_poll(
        chromium, server, tmp_path):
    _, gpkg, data_dir = server
    photo = tmp_path / "problem.png"
    photo.write_bytes(PNG)
    context, page = browse(chromium, server, phone=True)
    try:
        log_in(page, "res", phone=True)
        go(page, t("roles.rep.title"), phone=True)
        place = page.locator("[data-testid='stSelectbox']").filter(has_text=t("roles.rep.place"))
        chosen = expect(place.locator("input"))
        for _ in range(3):  # the map takes taps once its component is ready: tap until it does
            tap_building(page, gpkg, "B-2")  # the place picked on the map …
            try:
                chosen.to_have_value("2栋 (B-2)", timeout=10_000)  # … shows in the list
                break
            except AssertionError:
                continue
        chosen.to_have_value("2栋 (B-2)", timeout=1_000)
        form = page.locator("[data-testid='stForm']")
        form.get_by_label(t("roles.rep.description")).fill("楼下垃圾堆了三天")
        form.locator("input[type=file]").set_input_files(photo)
        form.locator("[data-testid='stFileChipName'][title='problem.png']").wait_for(
            timeout=WAIT_MS)
        shot(page, "resident-report-form")
        form.get_by_role("button", name=t("roles.rep.send")).click()
        # the confirmation with the case's number: at the top of the page, and as a toast
        # where the resident is (two elements while the toast lasts)
        page.get_by_text(re.compile("已收到您的反映")).first.wait_for(timeout=WAIT_MS)
        with open_store(gpkg) as store:
            cases = store.read_cases()
        assert len(cases) == 1
        case = cases.iloc[0]
        data = case["data"] if isinstance(case["data"], dict) else json.loads(case["data"])
        assert case["source"] == "resident" and data["reporter"]["username"] == "res"
        assert data["address"] == "2栋" and case["grid_code"] == "45031100100101"
        with open_store(gpkg) as store:
            b2 = store.read_layer("buildings").set_index("building_code").geometry["B-2"]
        assert b2.contains(Point(case["lon"], case["lat"]))
        assert (data_dir / data["photos"][0]).read_bytes() == PNG
        status = page.get_by_text(re.compile("暴露垃圾 · 信息收集 · 处理中")).first
        status.wait_for(timeout=WAIT_MS)
        status.scroll_into_view_if_needed()
        shot(page, "resident-reported")
        reload_midway(page)  # the phone reloads the tab: still the resident
        with open_store(gpkg) as store:  # the centre files it; the resident follows
            trust.create_user(store, "disp", PASSWORD, "dispatcher", actor="tests")
            trust.transition_case(store, trust.get_user(store, "disp"), case["id"], "file")
        go(page, t("nav.participation"), phone=True, heading=t("part.title"))
        poll = page.locator("[data-testid='stForm']").filter(has_text="是否同意加装电梯")
        poll.get_by_text("同意", exact=True).click()
        poll.get_by_role("button", name=t("part.submit")).click()
        page.get_by_text(t("part.thanks")).wait_for(timeout=WAIT_MS)
        with open_store(gpkg) as store:
            poll_id = participation.notices_for(store, trust.get_user(store, "res"))["id"].iloc[0]
            assert participation.has_answered(store, trust.get_user(store, "res"), poll_id)
            answers = participation.results(store, poll_id).set_index("choice")["answers"]
            assert answers.to_dict() == {"同意": 1, "不同意": 0}
        shot(page, "resident-poll-answered")
        go(page, t("roles.rep.title"), phone=True)
        page.get_by_text(re.compile("暴露垃圾 · 已立案 · 处理中")).wait_for(timeout=WAIT_MS)
        page.locator("[data-testid='stDataFrame']").last.scroll_into_view_if_needed()
        shot(page, "resident-follows")
        assert not page.errors, page.errors
    except Exception:
        page.screenshot(path=str(ARTIFACTS / "roles-FAILED.png"), full_page=True)
        raise
    finally:
        context.close()
