"""The planner's day in a real Chromium (1920×1080): every query with a changed parameter, drawn
with a legend in units, tooltips with rounded values, and a what-if camera that changes coverage.
"""

from __future__ import annotations

import math
import re

import pandas as pd
import pytest

from tests.browser import (
    ARTIFACTS,
    reload_midway,
    settle,
    streamlit_server,
    wait_until,
)
from tests.test_browser import demo_copy, quiet_points
from twin import deck, i18n

pytestmark = pytest.mark.browser

WAIT_MS = 90_000
CHART = "[data-testid='stDeckGlJsonChart']"
LEGEND = ".gt-legend"
PLANNER, PASSWORD = "planner_wang", "demo-password-2"
LONG_FLOAT = re.compile(r"\d\.\d{4,}")  # what a raw float looks like; rounded values never do


def zh(key: str, **fmt) -> str:
    return i18n.t(key, "zh-CN", **fmt)



@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """The demo with a year of cases (so hot spots have something to find) and a planner."""
    from twin import scenario, trust
    from twin.store import open_store

    gpkg = demo_copy(tmp_path_factory.mktemp("planner"))
    with open_store(gpkg) as store:
        layers = {n: store.read_layer(n) for n in ("grid_cells", "buildings")}
        now = pd.Timestamp.now(tz="UTC")
        cases = scenario.make_cases(layers, 300, start=now - pd.Timedelta(days=365), end=now)
        cases["id"] = "PL-" + cases["id"].astype(str)  # demo_copy's cases hold the SC ids
        for row in cases.drop(columns="geometry", errors="ignore").to_dict("records"):
            store.create_case(row)
        trust.create_user(store, PLANNER, PASSWORD, "planner", display_name="王规划")
    with streamlit_server(gpkg) as url:
        yield url, gpkg


@pytest.fixture
def page(chromium, server):
    url, _ = server
    context = chromium.new_context(viewport={"width": 1920, "height": 1080}, locale="zh-CN")
    page = context.new_page()
    page.errors = []
    page.on("pageerror", lambda error: page.errors.append(str(error)))
    page.goto(url, wait_until="domcontentloaded")
    page.get_by_label("用户名").fill(PLANNER)
    page.get_by_label("密码").fill(PASSWORD)
    page.get_by_role("button", name="登录").click()
    page.get_by_role("button", name=zh("auth.logout")).wait_for(timeout=WAIT_MS)  # signed in
    settle(page)
    heading = page.get_by_role("heading", name=zh("analysis.title"))
    for _ in range(3):  # a click during the sign-in's last rerun can be lost: click again
        page.get_by_role("link", name=zh("nav.analysis"), exact=True).click()
        try:
            heading.wait_for(timeout=40_000)
            break
        except Exception:  # noqa: BLE001 - Playwright's timeout
            shot(page, "planner-nav.png")
    heading.wait_for(timeout=WAIT_MS)
    yield page
    shot(page, "planner-last.png")  # where the journey ended, passed or failed
    context.close()


def shot(page, name: str, *, full_page: bool = True) -> None:
    """Screenshot into tests/artifacts (full_page=False keeps the scrolled-to part in view)."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / name), full_page=full_page, timeout=WAIT_MS)



def shown_value(box) -> str:
    """What a select box shows: its text, or its input's value (a searchable box)."""
    inputs = box.locator("input")
    return box.inner_text() + (inputs.first.input_value() if inputs.count() else "")


def choose(page, label: str, option: str) -> None:
    """Pick *option* in the Streamlit select box labelled *label*; wait for the rerun."""
    box = page.locator("[data-testid='stSelectbox']").filter(has_text=label).first
    box.click()
    page.get_by_role("option", name=option, exact=True).click()
    wait_until(lambda: option in shown_value(box), 30, f"{option} to be chosen")
    settle(page)


def set_number(page, label: str, value) -> None:
    """Type *value* into the number input labelled *label*; again if a rerun reset it."""
    box = page.get_by_label(label, exact=True)
    for _ in range(3):
        wait_until(lambda: box.count() == 1, 60, f"one {label} (the last form's gone)")
        box.fill(str(value))
        box.press("Tab")
        settle(page)
        if float(box.input_value()) == float(value):
            return
    raise AssertionError(f"{label} does not keep {value}: {box.input_value()}")


def run_and_wait(page, must_read: str) -> str:
    """Submit the parameters; wait for the legend that reads *must_read*; return its text.

    A click that lands while the last rerun replaces the form is lost; it is repeated then.
    """
    legend = page.locator(LEGEND).filter(has_text=must_read).first
    for _ in range(3):
        settle(page)
        page.get_by_role("button", name=zh("analysis.run")).click()
        try:
            legend.wait_for(state="visible", timeout=40_000)
            break
        except Exception:  # noqa: BLE001 - Playwright's timeout: submit again
            continue
    legend.wait_for(state="visible", timeout=WAIT_MS)
    page.locator(f"{CHART} canvas").first.wait_for(timeout=WAIT_MS)
    return legend.inner_text()


def hover_text(page, chart_index: int, dx: float = 0.0, dy: float = 0.0) -> str | None:
    """The tooltip at an offset from the centre of chart *chart_index* (None if none shows)."""
    box = page.locator(f"{CHART} canvas").nth(chart_index).bounding_box()
    x, y = box["x"] + box["width"] / 2 + dx, box["y"] + box["height"] / 2 + dy
    tooltip = page.locator(".deck-tooltip:visible")  # one per map; the hovered one shows
    for attempt in range(10):  # the map may still be settling: move in again
        page.mouse.move(x - 40 + attempt, y - 40)
        page.mouse.move(x, y, steps=5)
        try:
            return wait_until(lambda: tooltip.count() and tooltip.first.is_visible()
                              and tooltip.first.inner_text().strip(), 8, "a tooltip")
        except AssertionError:
            continue
    return None


QUERIES = [
    # question, (parameter label, new value) or (select label, option), text the legend must show
    ("analysis.q.coverage", ("number", "planner.p.min_area", 20), "%"),
    ("analysis.q.blind_spots", ("number", "planner.p.min_area", 50), zh("planner.unit.m2")),
    ("analysis.q.parking", ("number", "planner.p.spaces_per_household", 1.2),
     zh("planner.unit.spaces")),
    ("analysis.q.life_circles", ("number", "planner.p.circle", 900), zh("planner.unit.kinds")),
    ("analysis.q.hot_spots", ("select", "planner.p.correction", "planner.correction.bonferroni"),
     zh("planner.col.spot")),
    ("analysis.q.counts", ("select", "planner.p.level", "planner.level.resp_grid"),
     zh("planner.unit.cases")),
]


def test_planner_runs_every_query_sees_legends_and_tries_a_camera(page, server):
    _, gpkg = server
    for i, (question, change, must_read) in enumerate(QUERIES):
        choose(page, zh("analysis.pick"), zh(question))
        about = "planner.about." + question.split(".")[-1]
        page.get_by_text(zh(about)).wait_for(timeout=WAIT_MS)  # this question's form is drawn
        settle(page)
        kind, label_key, value = change
        if kind == "number":
            label = zh(label_key, minutes=15) if label_key == "planner.p.circle" else zh(label_key)
            set_number(page, label, value)
        else:
            choose(page, zh(label_key), zh(value))
        text = run_and_wait(page, must_read)
        assert must_read in text and ("–" in text or "(" in text), text  # classes or counts
        assert not LONG_FLOAT.search(text), text
        shot(page, f"planner-{i + 1}-{question.split('.')[-1]}.png")
        if question == "analysis.q.coverage":
            tip = hover_text(page, 0)
            assert tip and "%" in tip and zh("planner.col.coverage_share") in tip, tip
            assert not LONG_FLOAT.search(tip), tip
            shot(page, "planner-1-coverage-tooltip.png")
        if question == "analysis.q.hot_spots":
            # the honest labels and the correction chosen are said on the page
            assert zh("planner.correction.bonferroni") in page.locator("body").inner_text()
        if i == 2:
            reload_midway(page)  # still the planner, still on the analysis page
            page.get_by_text(zh("analysis.pick")).first.wait_for(timeout=WAIT_MS)
    assert not page.errors, page.errors

    # what-if: back to coverage, click an open place in a grid, add a camera, compare
    choose(page, zh("analysis.pick"), zh("analysis.q.coverage"))
    page.get_by_text(zh("planner.about.coverage")).wait_for(timeout=WAIT_MS)
    run_and_wait(page, "%")
    points, _, grids = quiet_points(gpkg, grid_code=_busiest_grid(gpkg))
    pick = page.locator(f"{CHART} canvas").nth(1)
    pick.wait_for(timeout=WAIT_MS)
    pick.scroll_into_view_if_needed()
    settle(page)
    at = projector_for(page, 1, deck.fit_view(tuple(grids.total_bounds), height=430))
    x, y = at(points.iloc[0].x, points.iloc[0].y)
    chosen = page.get_by_text(re.compile(zh("planner.whatif.chosen", lon="", lat="")[:4]))
    for dx in (0, 6, -6, 12):  # a click can land while the map still settles: try close by
        page.mouse.click(x + dx, y)
        try:
            chosen.first.wait_for(timeout=15_000)
            break
        except Exception:  # noqa: BLE001 - Playwright's timeout: click again
            continue
    chosen.first.wait_for(timeout=WAIT_MS)
    shot(page, "planner-7-whatif-place.png")
    page.get_by_role("button", name=zh("planner.whatif.run")).click()
    gained = page.locator("[data-testid='stMetric']").filter(has_text=zh("planner.m.covered_gain"))
    gained.first.wait_for(timeout=WAIT_MS)
    value = gained.first.locator("[data-testid='stMetricValue']").inner_text()
    assert value.startswith("+"), value
    number = float(re.sub(r"[^\d.\-]", "", value.split(zh("planner.unit.m2"))[0]))
    assert number > 0, value  # the coverage number changed
    share = page.locator("[data-testid='stMetric']").filter(has_text=zh("planner.m.coverage"))
    text = share.last.inner_text()
    assert re.search(r"\+\d+\.\d\d " + zh("planner.unit.pp"), text), text
    assert not LONG_FLOAT.search(page.locator("[data-testid='stMetric']").first.inner_text())
    after = page.locator(f"{CHART} canvas").nth(3)  # before and after, side by side
    after.wait_for(timeout=WAIT_MS)
    after.evaluate("e => e.scrollIntoView({block: 'center'})")
    wait_until(lambda: 0 <= after.bounding_box()["y"] < 1080 - 300, 10, "the after map in view")
    settle(page)
    tip = hover_text(page, 3)
    assert tip and zh("planner.before") in tip and zh("planner.after") in tip, tip
    assert not LONG_FLOAT.search(tip), tip
    shot(page, "planner-8-whatif-result.png", full_page=False)
    assert not page.errors, page.errors


def projector_for(page, index: int, view):
    """(lon, lat) → page pixels on chart *index*, drawn with *view* (pitch 0)."""
    box = page.locator(f"{CHART} canvas").nth(index).bounding_box()
    scale = 512 * 2**view.zoom
    merc = lambda la: math.log(math.tan(math.pi / 4 + math.radians(la) / 2))  # noqa: E731

    def at(lon: float, lat: float) -> tuple[float, float]:
        dx = (lon - view.longitude) / 360 * scale
        dy = (merc(view.latitude) - merc(lat)) / (2 * math.pi) * scale
        return box["x"] + box["width"] / 2 + dx, box["y"] + box["height"] / 2 + dy

    return at


def _busiest_grid(gpkg) -> str:
    """The grid with the most public space (room for a camera away from everything)."""
    from twin.store import open_store

    with open_store(gpkg) as store:
        grids = store.read_layer("grid_cells")
    return str(grids.to_crs(32649).assign(a=lambda f: f.area).sort_values("a").iloc[-1]
               ["grid_code"])
