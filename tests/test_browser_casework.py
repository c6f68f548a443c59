"""Case work in a real Chromium: every step's form carries its fields, the store says it happened.

One small twin, one server, the journeys in order (each one leaves the case where the next one
starts): the dispatcher files a case, dispatches it to a person and recategorises it with the
picker; the official approves an extension with a new deadline; the grid worker, on a 390x844
phone, handles the case and feeds back with photos, then reports a new case by tapping the map;
the official evaluates the closed case with a score. After each step the store is checked.
"""

from __future__ import annotations

import io
import json
import os
import re
import time

import pandas as pd
import pytest

from tests.browser import (
    ARTIFACTS,
    LAT,
    LON,
    ROOT,
    reload_midway,
    settle,
    small_twin_layers,
    streamlit_server,
    wait_until,
    watch_text,
)
from tests.test_browser import (
    CANVAS,
    CHART,
    WAIT_MS,
)
from twin import i18n, trust
from twin.store import open_store
from twin.timeutil import local_zone

pytestmark = pytest.mark.browser

PASSWORD = "casework-pass-1"
ZH = "zh-CN"
TERRITORY = "territory:450311001001"


def zh(key: str, **fmt) -> str:
    return i18n.t(key, ZH, **fmt)


def write_twin(path):
    """The small test twin whose grid workers are stored users, with four users and one report."""
    from twin.twin import put_layer

    layers = small_twin_layers()
    layers["grid_cells"]["grid_worker"] = ["zhangsan", "lisi"]  # usernames: routing finds them
    with open_store(path) as store:
        for name, frame in layers.items():
            put_layer(store, name, frame, actor="tests", source="test_browser_casework")
        trust.create_user(store, "disp", PASSWORD, "dispatcher", display_name="调度员小王")
        trust.create_user(store, "chief", PASSWORD, "official", display_name="值班长老李")
        trust.create_user(store, "zhangsan", PASSWORD, "grid_worker", display_name="张三",
                          grids=["R01"])
        trust.create_user(store, "lisi", PASSWORD, "grid_worker", display_name="李四",
                          grids=["R02"])
        cells = store.read_layer("grid_cells")
        case = trust.report_case(store, trust.get_user(store, "zhangsan"), category="E0101",
                                 lon=LON + 0.001, lat=LAT + 0.001, description="楼下垃圾堆放",
                                 source="patrol", grid_cells=cells)
    return path, case["id"]


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    """A data folder of the test's own (photos land there), with the project's seed tables."""
    folder = tmp_path_factory.mktemp("casework-data")
    for name in ("seed", "rules.csv"):
        (folder / name).symlink_to(ROOT / "data" / name)
    before = os.environ.get("TWIN_DATA_DIR")
    os.environ["TWIN_DATA_DIR"] = str(folder)
    try:
        yield folder
    finally:
        if before is None:
            os.environ.pop("TWIN_DATA_DIR", None)
        else:
            os.environ["TWIN_DATA_DIR"] = before


@pytest.fixture(scope="module")
def server(tmp_path_factory, data_dir):
    path, case_id = write_twin(tmp_path_factory.mktemp("casework") / "casework.gpkg")
    with streamlit_server(path) as url:
        yield url, path, case_id


def new_page(chromium, url, *, phone: bool = False, where=None):
    size = {"width": 390, "height": 844} if phone else {"width": 1920, "height": 1080}
    located = {} if where is None else {
        "geolocation": {"longitude": where[0], "latitude": where[1], "accuracy": 10},
        "permissions": ["geolocation"]}
    context = chromium.new_context(viewport=size, locale="zh-CN", is_mobile=phone,
                                   has_touch=phone, device_scale_factor=2 if phone else 1,
                                   **located)
    page = context.new_page()
    page.errors = []
    page.on("pageerror", lambda error: page.errors.append(str(error)))
    page.goto(url, wait_until="domcontentloaded")
    return context, page


def log_in(page, username: str) -> None:
    page.get_by_label("用户名").fill(username)
    page.get_by_label("密码").fill(PASSWORD)
    page.get_by_role("button", name="登录").click()


def shot(page, name: str) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / name), full_page=True)


def stored(path, case_id: str) -> dict:
    """The case as the store holds it now, its data as a dict."""
    with open_store(path) as store:
        case = store.get_case(case_id)
    if isinstance(case.get("data"), str):
        case["data"] = json.loads(case["data"])
    return case


def wait_for_case(path, case_id: str, predicate, what: str) -> dict:
    return wait_until(lambda: (lambda c: c if predicate(c) else None)(stored(path, case_id)),
                      60, what)


def open_cases_page(page) -> None:
    """Go to the Cases page once the login has landed on the role's home page."""
    page.get_by_text(zh("auth.logout")).first.wait_for(timeout=WAIT_MS)
    marker = page.get_by_text(zh("cases.filter.state"))

    def there():
        page.get_by_role("link", name=zh("nav.cases")).first.click()
        try:
            marker.first.wait_for(timeout=5_000)
        except Exception:  # the login's switch to the home page came after the click
            return False
        return True

    wait_until(there, 60, "the Cases page")
    page.locator("[data-testid='stDataFrame'] canvas").first.wait_for(timeout=WAIT_MS)


def pick_first_row(page, case_id: str) -> None:
    """Select the list's first row (the case with the nearest deadline) until its detail shows."""
    detail = page.get_by_text(zh("case.detail", id=case_id))

    def selected():
        try:
            grid = page.locator("[data-testid='stDataFrame']").first
            grid.scroll_into_view_if_needed(timeout=5_000)
            box = grid.bounding_box()
            page.mouse.click(box["x"] + 12, box["y"] + 35 + 17)  # the row marker of row one
            detail.first.wait_for(timeout=4_000)
        except Exception:  # the list was drawn anew meanwhile: again
            return False
        return True

    wait_until(selected, 60, f"case {case_id} to be selected")


def retried(action, what: str) -> None:
    """Run a browser *action* until it works: a page still running redraws elements under it."""

    def attempt():
        try:
            action()
        except Exception:  # detached or not there yet
            return False
        return True

    wait_until(attempt, 60, what)


def scroll_to(page, text: str) -> None:
    retried(lambda: page.get_by_text(text).first.scroll_into_view_if_needed(timeout=5_000),
            f"{text!r} to scroll into view")


def choose_action(page, step: str) -> None:
    """Pick the step in the action selectbox until its form's button shows (the page may still
    be running after the previous step)."""
    button = page.get_by_role("button", name=f"{zh('case.apply')} · {step}")

    def shown():
        try:
            choose(page, zh("case.action"), step)
            button.wait_for(timeout=5_000)
        except Exception:  # the select was redrawn under the click: try again
            page.keyboard.press("Escape")
            return False
        return True

    wait_until(shown, 60, f"the form of {step}")


def choose(page, label: str, option: str) -> None:
    """Pick *option* (text it contains) in the selectbox labelled *label*."""
    box = page.locator("[data-testid='stSelectbox']", has_text=label).first
    box.scroll_into_view_if_needed(timeout=5_000)
    box.locator("input").click(timeout=5_000)
    box.locator("input").fill(option, timeout=5_000)
    page.get_by_role("option", name=re.compile(re.escape(option))).first.click(timeout=5_000)
    page.wait_for_timeout(300)  # the select closes; the next widget is then in place


TIMINGS: dict[str, float] = {}  # step → seconds from the click to the refreshed page


def apply(page, step: str) -> None:
    page.started = time.monotonic()
    page.get_by_role("button", name=f"{zh('case.apply')} · {step}").click()


def applied(page, step: str) -> None:
    """Wait for the step's notice on the page run again; keep how long the step took."""
    page.get_by_text(zh("case.applied", action=step)).first.wait_for(timeout=WAIT_MS)
    TIMINGS[step] = round(time.monotonic() - page.started, 2)
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    (ARTIFACTS / "casework-step-seconds.json").write_text(
        json.dumps(TIMINGS, ensure_ascii=False, indent=1), encoding="utf-8")


def photo(colour: tuple[int, int, int]) -> dict:
    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (64, 48), colour).save(buffer, format="PNG")
    return {"name": "site.png", "mimeType": "image/png", "buffer": buffer.getvalue()}


def steps_of(case_id: str, path) -> list[str]:
    with open_store(path) as store:
        return store.case_history(case_id)["action"].tolist()


# -- the journeys, in order --------------------------------------------------------------------


def test_dispatcher_files_dispatches_to_a_person_and_recategorises(chromium, server):
    url, path, case_id = server
    context, page = new_page(chromium, url)
    try:
        log_in(page, "disp")
        open_cases_page(page)
        pick_first_row(page, case_id)
        choose_action(page, "立案")
        apply(page, "立案")
        applied(page, "立案")
        wait_for_case(path, case_id, lambda c: c["status"] == "filed", "the case filed")

        reload_midway(page)  # F5 mid-journey: still logged in, same page
        pick_first_row(page, case_id)
        choose_action(page, "派遣")
        choose(page, zh("casework.assignee"), "张三")
        shot(page, "casework-dispatch-form.png")
        apply(page, "派遣")
        applied(page, "派遣")
        case = wait_for_case(path, case_id, lambda c: c["status"] == "dispatched",
                             "the case dispatched")
        assert case["assignee"] == "zhangsan" and case["department"] == TERRITORY

        choose_action(page, "变更类别")
        choose(page, zh("casework.category"), "道路不洁")
        apply(page, "变更类别")
        applied(page, "变更类别")
        case = wait_for_case(path, case_id, lambda c: c["service_code"] == "E0102",
                             "the new category")
        assert case["status"] == "dispatched" and case["data"]["category"]["zh"] == "道路不洁"
        # the detail shows names, never the code, and the history names the people and steps
        page.locator("[data-testid='stMetric']", has_text="道路不洁").first.wait_for(
            timeout=WAIT_MS)
        body = page.locator("[data-testid='stMain']").inner_text()
        assert "E0102" not in body and "E0101" not in body
        assert "Dispatch" not in body and "Change category" not in body
        assert "张三" in body and "一网格" in body  # assignee and grid by name
        page.locator(CANVAS).first.wait_for(timeout=WAIT_MS)  # the case's small map
        scroll_to(page, zh("case.detail", id=case_id))
        shot(page, "casework-dispatcher.png")
        assert steps_of(case_id, path) == ["collect", "file", "dispatch", "recategorise"]
        assert not page.errors, page.errors
    except Exception:
        shot(page, "casework-failed.png")
        raise
    finally:
        context.close()


def test_official_approves_an_extension_with_a_new_deadline(chromium, server):
    url, path, case_id = server
    before = stored(path, case_id)
    old = pd.Timestamp(before["data"]["deadlines"]["handle"])
    context, page = new_page(chromium, url)
    try:
        log_in(page, "chief")
        open_cases_page(page)
        pick_first_row(page, case_id)
        reload_midway(page)  # F5 mid-journey: still logged in, same page
        pick_first_row(page, case_id)
        choose_action(page, "延期")
        page.get_by_text(zh("casework.extend.date")).first.wait_for(timeout=WAIT_MS)
        shot(page, "casework-extend-form.png")
        apply(page, "延期")
        applied(page, "延期")
        case = wait_for_case(path, case_id, lambda c: c["data"].get("extended"),
                             "the extension")
        # the form's default: the day after the current deadline, 17:30 local time
        day = old.tz_convert(local_zone()).normalize() + pd.Timedelta(days=1, hours=17,
                                                                       minutes=30)
        assert pd.Timestamp(case["data"]["deadlines"]["handle"]) == day
        assert case["status"] == "dispatched" and case["extended"]
        shot(page, "casework-official-extend.png")
        assert not page.errors, page.errors
    except Exception:
        shot(page, "casework-failed.png")
        raise
    finally:
        context.close()


def test_grid_worker_on_a_phone_handles_feeds_back_and_reports_by_tapping(
        chromium, server, data_dir):
    url, path, case_id = server
    context, page = new_page(chromium, url, phone=True)
    try:
        log_in(page, "zhangsan")
        page.get_by_text(zh("mygrid.cases")).first.wait_for(timeout=WAIT_MS)
        shot(page, "casework-phone-home.png")
        pick_first_row(page, case_id)
        choose_action(page, "处置")
        uploader = page.locator("[data-testid='stFileUploader']",
                                has_text=zh("casework.photos.before")).first
        uploader.locator("input[type=file]").set_input_files(photo((200, 80, 40)))
        page.get_by_text("site.png").first.wait_for(timeout=WAIT_MS)
        apply(page, "处置")
        applied(page, "处置")
        # the notice comes up from the foot of the phone's screen, not over the case card
        page.wait_for_function(
            "text => [...document.querySelectorAll('[data-testid=stToast]')].some(t => "
            "t.innerText.includes(text) && t.getBoundingClientRect().top > innerHeight / 2)",
            arg=zh("case.applied", action="处置"), timeout=WAIT_MS)
        shot(page, "casework-phone-notice.png")
        case = wait_for_case(path, case_id, lambda c: c["status"] == "handling", "handling")
        assert len(case["data"]["photos_before"]) == 1
        assert (data_dir / case["data"]["photos_before"][0]).is_file()

        reload_midway(page)  # F5 mid-journey: still logged in, same page
        pick_first_row(page, case_id)
        choose_action(page, "处理反馈")
        uploader = page.locator("[data-testid='stFileUploader']",
                                has_text=zh("casework.photos.after")).first
        uploader.locator("input[type=file]").set_input_files(photo((40, 160, 90)))
        page.get_by_text("site.png").first.wait_for(timeout=WAIT_MS)
        apply(page, "处理反馈")
        applied(page, "处理反馈")
        case = wait_for_case(path, case_id, lambda c: c["status"] == "fed_back", "fed back")
        assert len(case["data"]["photos_after"]) == 1
        # the page ran again: the grid worker's next step is the check, both photos show
        page.get_by_role("button", name=f"{zh('case.apply')} · 核查").wait_for(timeout=WAIT_MS)
        wait_until(lambda: page.locator("[data-testid='stImage'] img").count() == 2, 60,
                   "the photos before and after")
        scroll_to(page, zh("casework.photos"))
        shot(page, "casework-phone-feedback.png")

        # report a new case: tap the map (the picker is the page's last map)
        with open_store(path) as store:
            before = set(store.read_cases()["id"])
        picker = page.locator(CHART).last
        retried(lambda: picker.scroll_into_view_if_needed(timeout=5_000), "the tap map")
        picker.locator("canvas").first.wait_for(timeout=WAIT_MS)
        caption = page.get_by_text(re.compile(zh("mygrid.lon") + r" 110\.\d{6}"))

        def tapped():
            box = picker.bounding_box()
            page.mouse.click(box["x"] + box["width"] * 0.3, box["y"] + box["height"] * 0.5)
            try:
                caption.first.wait_for(timeout=4_000)
            except Exception:  # the map was still drawing: tap again
                return False
            return True

        wait_until(tapped, 60, "a tap on the map to pick a place")
        settle(page)  # the tap's reruns are done: the form is the one that stays
        page.get_by_label(zh("mygrid.description")).fill("路灯不亮")
        shot(page, "casework-phone-report.png")
        notice_shown = watch_text(page, zh("mygrid.reported", id=""))
        submit = page.get_by_role("button", name=zh("mygrid.submit"))
        submit.click()

        def reported():
            with open_store(path) as store:
                table = store.read_cases()
            new = table.loc[~table["id"].isin(before)]
            return (new,) if len(new) else None  # (a frame has no truth value)

        def stored_or_tapped_again():
            found = reported()
            if found is None:
                settle(page)  # the page is idle: a submission taken is stored by now
                found = reported()
                if found is None and page.get_by_label(zh("mygrid.description")).input_value(
                        timeout=5_000) == "路灯不亮":
                    submit.click()  # the tap was lost on a busy machine: tap again, as people do
            return found

        (new,) = wait_until(stored_or_tapped_again, 90, "the reported case stored")
        assert len(new) == 1
        wait_until(notice_shown, 60, "the notice with the new case's number")
        report = new.iloc[0]
        assert report["grid_code"] == "45031100100101"  # the left grid: zhangsan's
        assert LON < report["lon"] < LON + 0.002 and LAT < report["lat"] < LAT + 0.0027
        # the form is empty again, and the new case is on the worker's list
        text = page.get_by_label(zh("mygrid.description"))
        # (while the page reruns the old form may still be drawn beside the new one)
        wait_until(lambda: text.evaluate_all("els => els.length === 1 && els[0].value === ''"),
                   60, "an empty report form")  # one look in the page: the count and value agree
        detail = page.get_by_text(zh("case.detail", id=report["id"])).first
        detail.wait_for(timeout=WAIT_MS)
        retried(lambda: detail.scroll_into_view_if_needed(timeout=5_000), "the new case")
        shot(page, "casework-phone-reported.png")
        assert not page.errors, page.errors
    except Exception:
        shot(page, "casework-failed.png")
        raise
    finally:
        context.close()


def test_official_evaluates_the_closed_case_with_a_score(chromium, server):
    url, path, case_id = server
    with open_store(path) as store:  # the check and the close are not this journey's steps
        cells = store.read_layer("grid_cells")
        trust.transition_case(store, trust.get_user(store, "zhangsan"), case_id, "check",
                              grid_cells=cells)
        trust.transition_case(store, trust.get_user(store, "disp"), case_id, "close",
                              grid_cells=cells)
    context, page = new_page(chromium, url)
    try:
        log_in(page, "chief")
        open_cases_page(page)
        reload_midway(page)  # F5 on the cases page: still the official, still on the page
        page.get_by_text(zh("cases.filter.state")).first.wait_for(timeout=WAIT_MS)
        states = page.locator("[data-testid='stMultiSelect']",
                              has_text=zh("cases.filter.state")).first
        states.locator("input").click()
        page.get_by_role("option", name=zh("state.closed")).first.click()
        page.keyboard.press("Escape")
        pick_first_row(page, case_id)
        choose_action(page, "综合评价")
        thumb = page.get_by_role("slider").first
        thumb.focus()
        for _ in range(5):
            thumb.press("ArrowLeft")
        # the slider's own value: "85" alone would also match a case id such as "…-eb8552e0"
        page.locator("[data-testid='stSliderThumbValue']").filter(
            has_text=re.compile(r"^85$")).first.wait_for(timeout=WAIT_MS)
        apply(page, "综合评价")
        applied(page, "综合评价")
        case = wait_for_case(path, case_id, lambda c: c["status"] == "evaluated", "evaluated")
        assert case["data"]["evaluation"] == 85
        scroll_to(page, zh("case.history"))
        shot(page, "casework-evaluated.png")
        assert steps_of(case_id, path)[-3:] == ["check", "close", "evaluate"]
        # in English the same case speaks English: status, category and labels
        english = page.get_by_text(i18n.t("case.detail", "en", id=case_id)).first
        retried(lambda: (choose(page, zh("sidebar.language"), "English"),
                         english.wait_for(timeout=10_000)), "the page in English")
        page.locator("[data-testid='stMetric']", has_text="Dirty road").first.wait_for(
            timeout=WAIT_MS)
        assert page.locator("[data-testid='stMetric']", has_text="Evaluated").count() == 1
        settle(page)  # the run in English is over: no Chinese element left from the last one
        main = page.locator("[data-testid='stMain']").inner_text()
        for word in ("已评价", "道路不洁", "计时", "照片", "办理过程", "责任部门"):
            assert word not in main, word
        scroll_to(page, i18n.t("case.history", "en"))
        shot(page, "casework-evaluated-en.png")
        assert not page.errors, page.errors
    except Exception:
        shot(page, "casework-failed.png")
        raise
    finally:
        context.close()


def test_a_report_from_the_devices_place_outside_every_grid_names_the_nearest(
        chromium, server):
    url, path, _ = server
    west = (LON - 0.0093, LAT + 0.0013)  # about 940 m west of the community
    context, page = new_page(chromium, url, phone=True, where=west)
    try:
        log_in(page, "zhangsan")
        page.get_by_text(zh("mygrid.report")).first.wait_for(timeout=WAIT_MS)
        reload_midway(page)  # the phone reloads the tab: still the grid worker, same page
        page.get_by_text(zh("mygrid.report")).first.wait_for(timeout=WAIT_MS)
        locate = page.get_by_role("button", name=zh("casework.locate"))
        retried(lambda: locate.scroll_into_view_if_needed(timeout=5_000), "the locate button")
        locate.click()
        page.get_by_text(f"{zh('mygrid.lon')} {west[0]:.6f}").first.wait_for(timeout=WAIT_MS)
        with open_store(path) as store:
            before = len(store.read_cases())
        page.get_by_label(zh("mygrid.description")).fill("井盖缺失")
        page.get_by_role("button", name=zh("mygrid.submit")).click()
        message = page.get_by_text(re.compile("最近的网格是「一网格」，相距 9[0-9]{2} 米"))
        message.first.wait_for(timeout=WAIT_MS)
        retried(lambda: message.first.scroll_into_view_if_needed(timeout=5_000), "the message")
        shot(page, "casework-phone-outside.png")
        with open_store(path) as store:
            assert len(store.read_cases()) == before  # refused: no orphan case
        # the place moved just inside the nearest grid; reporting again is accepted
        page.get_by_text(zh("casework.moved", grid="一网格")).first.wait_for(timeout=WAIT_MS)
        page.get_by_label(zh("mygrid.description")).fill("井盖缺失")
        page.get_by_role("button", name=zh("mygrid.submit")).click()
        page.get_by_text(re.compile(zh("mygrid.reported", id="") + r"\d{8}-")).first.wait_for(
            timeout=WAIT_MS)
        with open_store(path) as store:
            table = store.read_cases()
        assert len(table) == before + 1
        new = table.sort_values("requested_at").iloc[-1]
        assert new["grid_code"] == "45031100100101" and abs(new["lon"] - LON) < 0.0002
        assert not page.errors, page.errors
    except Exception:
        shot(page, "casework-failed.png")
        raise
    finally:
        context.close()
