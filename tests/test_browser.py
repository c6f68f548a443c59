"""The cockpit in a real headless Chromium: the map draws offline, hovers, switches language."""

from __future__ import annotations

import math
import shutil
import time

import pytest

from tests import services
from tests.browser import (
    ARTIFACTS,
    CENTRE_BUILDING,
    CHROMIUM_ARGS,
    ROOT,
    XSS_BUILDING,
    XSS_NAME,
    distinct_colours,
    is_local,
    small_twin_layers,
    streamlit_server,
    write_small_twin,
)
from twin import deck

pytestmark = pytest.mark.browser

WAIT_MS = 60_000
CHART = "[data-testid='stDeckGlJsonChart']"
CANVAS = f"{CHART} canvas"


@pytest.fixture(scope="module")
def chromium():
    path = services.chromium_path()
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        services.missing("Playwright", "pip install playwright (never `playwright install`)")
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=path, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    gpkg = write_small_twin(tmp_path_factory.mktemp("browser") / "t.gpkg")
    with streamlit_server(gpkg) as url:
        yield url


@pytest.fixture
def page(chromium, server):
    context = chromium.new_context(viewport={"width": 1600, "height": 1000}, locale="zh-CN")
    page = context.new_page()
    page.requests = []
    page.on("request", lambda request: page.requests.append(request.url))
    page.errors = []
    page.on("pageerror", lambda error: page.errors.append(str(error)))
    page.goto(server, wait_until="domcontentloaded")
    yield page
    context.close()


def wait_until(predicate, timeout_s: float = 60.0, what: str = "condition"):
    """Poll *predicate* (each call is a browser round trip) until it returns a truthy value."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")


def wait_for_map(page) -> bytes:
    """Wait until the deck canvas exists and has drawn (many colours); return its screenshot."""
    page.wait_for_selector(CANVAS, timeout=WAIT_MS)
    chart = page.locator(CHART).first

    def drawn() -> bytes | None:
        png = chart.screenshot()
        return png if distinct_colours(png) >= 8 else None

    return wait_until(drawn, what="the map canvas to draw")


def screen_point(page, lon: float, lat: float) -> tuple[float, float]:
    """Where (lon, lat) lands on the page, from the map's initial view (pitch 0, Web Mercator)."""
    box = page.locator(CANVAS).first.bounding_box()
    layers = small_twin_layers()
    view = deck.fit_view(tuple(layers["community"].total_bounds))
    scale = 512 * 2 ** view.zoom
    merc = lambda la: math.log(math.tan(math.pi / 4 + math.radians(la) / 2))  # noqa: E731
    dx = (lon - view.longitude) / 360 * scale
    dy = (merc(view.latitude) - merc(lat)) / (2 * math.pi) * scale
    return box["x"] + box["width"] / 2 + dx, box["y"] + box["height"] / 2 + dy


def hover_tooltip(page, building_code: str) -> str:
    """Move the mouse onto a building's footprint and return the tooltip's text."""
    footprint = small_twin_layers()["buildings"].set_index("building_code").geometry[building_code]
    x, y = screen_point(page, footprint.centroid.x, footprint.centroid.y)
    page.mouse.move(x - 40, y - 40)
    page.mouse.move(x, y, steps=5)
    tooltip = page.locator(".deck-tooltip")
    wait_until(lambda: tooltip.count() and tooltip.first.is_visible()
               and building_code in tooltip.first.inner_text(),
               what=f"the tooltip of {building_code}")
    return tooltip.first.inner_text()


def shot(page, name: str) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / name), full_page=True)


def test_map_draws_offline_hovers_and_switches_language(page):
    wait_for_map(page)
    page.get_by_text("社区数字孪生地图").wait_for(timeout=WAIT_MS)
    shot(page, "map-zh.png")

    text = hover_tooltip(page, CENTRE_BUILDING)
    assert text.splitlines()[0] == "楼栋"
    assert "名称: 桂花苑中心楼" in text and "层数 (层): 6" in text
    shot(page, "map-zh-tooltip.png")

    # an attribute with markup is shown as text: no element is created, no handler runs
    text = hover_tooltip(page, XSS_BUILDING)
    assert f"名称: {XSS_NAME}" in text
    assert page.locator(".deck-tooltip img").count() == 0
    assert page.evaluate("window.__xss") is None

    # switch to English in the sidebar
    page.locator("[data-testid='stSidebar'] [data-testid='stSelectbox']").first.click()
    page.get_by_role("option", name="English").click()
    page.get_by_text("Community digital twin map").wait_for(timeout=WAIT_MS)
    page.get_by_text("Layers shown").wait_for(timeout=WAIT_MS)
    wait_for_map(page)
    text = wait_until(lambda: (t := hover_tooltip(page, CENTRE_BUILDING)).startswith("Buildings")
                      and t, what="an English tooltip")
    assert "Name: 桂花苑中心楼" in text and "Floors (层): 6" in text
    shot(page, "map-en-tooltip.png")

    outside = [url for url in page.requests if not is_local(url)]
    assert page.requests and not outside, f"requests that leave this machine: {outside}"
    assert not page.errors, page.errors


def test_map_screenshot_for_the_readme(chromium, server):
    """The README's picture: the demo community when it has been generated, else the test twin."""
    from twin.settings import default_store_path

    demo = default_store_path()
    if demo.exists():
        with streamlit_server(demo) as url:
            readme_screenshot(chromium, url)
    else:
        readme_screenshot(chromium, server)


def readme_screenshot(chromium, url: str) -> None:
    context = chromium.new_context(viewport={"width": 1600, "height": 1000}, locale="zh-CN")
    try:
        page = context.new_page()
        page.goto(url, wait_until="domcontentloaded")
        page.get_by_text("社区数字孪生地图").wait_for(timeout=WAIT_MS)
        wait_for_map(page)
        page.mouse.move(5, 5)  # no tooltip in the picture
        shot(page, "map.png")
    finally:
        context.close()
    docs = ROOT / "docs" / "img"
    docs.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(ARTIFACTS / "map.png", docs / "map.png")
    assert distinct_colours((docs / "map.png").read_bytes()) >= 8
