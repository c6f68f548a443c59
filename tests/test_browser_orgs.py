"""A property company's staff member on a phone handles the case in their estate; the public
page shows every organisation's work without personal data (a real Chromium, 390x844)."""

from __future__ import annotations

import pandas as pd
import pytest

from tests.browser import (
    LAT,
    LON,
    organisation_areas,
    reload_midway,
    settle,
    small_twin_layers,
    streamlit_server,
    wait_until,
)
from tests.test_browser import WAIT_MS
from tests.test_browser_casework import (
    PASSWORD,
    applied,
    apply,
    choose_action,
    data_dir,  # noqa: F401  (the module's data folder: photos and seed tables)
    new_page,
    pick_first_row,
    shot,
    stored,
    zh,
)
from twin import trust
from twin.store import open_store

pytestmark = pytest.mark.browser

AT = pd.Timestamp("2026-03-02 01:00", tz="UTC")  # a Monday morning in Guilin


def write_twin(path):
    """The small twin with its organisations, a dispatcher and two property companies' staff;
    one case dispatched to each company's estate."""
    from twin.twin import put_layer

    with open_store(path) as store:
        for name, frame in {**small_twin_layers(), "organisations": organisation_areas()}.items():
            put_layer(store, name, frame, actor="tests", source="test_browser_orgs")
        trust.create_user(store, "disp", PASSWORD, "dispatcher")
        trust.create_user(store, "gw", PASSWORD, "grid_worker", grids=["R01"])
        trust.create_user(store, "pm1", PASSWORD, "org_staff", org_id="PM1",
                          display_name="桂花苑物业客服")
        trust.create_user(store, "pm2", PASSWORD, "org_staff", org_id="PM2")
        cells = store.read_layer("grid_cells")
        ids = []
        for where, at in (((LON + 0.0006, LAT + 0.0006), AT),
                          ((LON + 0.0034, LAT + 0.0021), AT + pd.Timedelta(minutes=1))):
            case = trust.report_case(store, trust.get_user(store, "disp"), category="E0101",
                                     lon=where[0], lat=where[1], description="小区内垃圾堆放",
                                     source="resident", at=at, grid_cells=cells,
                                     reporter={"name": "张一", "phone": "13911112222"})
            for step, minutes in (("file", 5), ("dispatch", 9)):
                trust.transition_case(store, trust.get_user(store, "disp"), case["id"], step,
                                      at=at + pd.Timedelta(minutes=minutes), grid_cells=cells)
            ids.append(case["id"])
    return path, ids


@pytest.fixture(scope="module")
def server(tmp_path_factory, data_dir):  # noqa: F811
    path, ids = write_twin(tmp_path_factory.mktemp("orgs") / "orgs.gpkg")
    with streamlit_server(path) as url:
        yield url, path, ids


def test_property_staff_handle_their_estates_case_on_a_phone(chromium, server):
    url, path, (mine, theirs) = server
    assert stored(path, mine)["department"] == "org:PM1"
    assert stored(path, theirs)["department"] == "org:PM2"
    context, page = new_page(chromium, url, phone=True)
    try:
        page.get_by_label("用户名").fill("pm1")
        page.get_by_label("密码").fill(PASSWORD)
        page.get_by_role("button", name="登录").click()
        # their home is the case list: their estate's case only, not the other company's
        page.get_by_text(zh("cases.count", count=1, total=1)).first.wait_for(timeout=WAIT_MS)
        pick_first_row(page, mine)
        assert zh("case.detail", id=theirs) not in page.locator("body").inner_text()
        choose_action(page, "处置")
        apply(page, "处置")
        applied(page, "处置")
        wait_until(lambda: stored(path, mine)["status"] == "handling", 60, "handling")

        reload_midway(page)  # F5 mid-journey: still logged in, same page
        settle(page)
        pick_first_row(page, mine)
        choose_action(page, "处理反馈")
        apply(page, "处理反馈")
        applied(page, "处理反馈")
        case = wait_until(lambda: (lambda c: c if c["status"] == "fed_back" else None)(
            stored(path, mine)), 60, "fed back")
        shot(page, "orgs-phone-feedback.png")
        assert case["department"] == "org:PM1" and case["org_id"] == "PM1"
        with open_store(path) as store:
            steps = store.case_history(mine)
            audit = store.read_audit()
        assert steps["actor"].tolist()[-2:] == ["pm1", "pm1"]
        assert steps["role"].tolist()[-2:] == ["org_staff", "org_staff"]
        assert "case.read" in set(audit.loc[audit["actor"] == "pm1", "action"])
        assert stored(path, theirs)["status"] == "dispatched"  # untouched
        assert not page.errors, page.errors
    finally:
        context.close()


def test_the_public_page_shows_each_organisations_work_without_personal_data(chromium, server):
    url, _, _ = server
    context, page = new_page(chromium, f"{url}/public", phone=True)
    try:
        page.get_by_text(zh("orgs.public")).first.wait_for(timeout=WAIT_MS)
        settle(page)
        text = page.locator("[data-testid='stMain']").inner_text()
        for name in organisation_areas()["name"]:
            assert name in text
        assert zh("orgs.suppressed") in text  # one case each: counts too small to publish
        for personal in ("王经理", "13800000001", "张一", "13911112222", "0773-5551001"):
            assert personal not in text
        shot(page, "orgs-public.png")
        assert not page.errors, page.errors
    finally:
        context.close()
