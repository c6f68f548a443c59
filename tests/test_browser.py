"""The cockpit in a real headless Chromium on a copy of the demo: draws offline, hovers, clicks."""

from __future__ import annotations

import math
import os
import shutil
from pathlib import Path

import pytest

from tests.browser import (
    ARTIFACTS,
    ROOT,
    distinct_colours,
    is_local,
    pixels_of,
    settle,
    streamlit_server,
    wait_until,
    write_small_twin,
)
from twin import deck, i18n

pytestmark = pytest.mark.browser

WAIT_MS = 60_000
CHART = "[data-testid='stDeckGlJsonChart']"
CANVAS = f"{CHART} canvas"



USER, PASSWORD = "duty_chief", "demo-password-1"


def demo_copy(folder) -> Path:
    """The demo GeoPackage copied to *folder* (the committed file is never modified), with a few
    cases and a user to log in; the small test twin when the demo has not been generated."""
    import json

    import pandas as pd

    from twin import scenario, trust
    from twin.settings import default_store_path
    from twin.store import open_store

    demo = default_store_path()
    path = folder / "demo.gpkg"
    if demo.exists():
        shutil.copyfile(demo, path)
    else:
        write_small_twin(path)
    with open_store(path) as store:
        layers = {n: store.read_layer(n) for n in ("grid_cells", "buildings")}
        now = pd.Timestamp.now(tz="UTC")
        cases = scenario.make_cases(layers, 12, start=now - pd.Timedelta(days=2), end=now)
        for row in cases.drop(columns="geometry", errors="ignore").to_dict("records"):
            row["data"] = json.dumps({"generated": True})
            store.create_case(row)
        trust.create_user(store, USER, PASSWORD, "official", display_name="值班长")
    return path


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    gpkg = demo_copy(tmp_path_factory.mktemp("browser"))
    with streamlit_server(gpkg) as url:
        yield url, gpkg


def log_in(page) -> None:
    page.get_by_label("用户名").fill(USER)
    page.get_by_label("密码").fill(PASSWORD)
    page.get_by_role("button", name="登录").click()


@pytest.fixture
def visitor(chromium, server):
    """A browser on the app, not logged in (a resident): every request and page error recorded."""
    url, _ = server
    context = chromium.new_context(viewport={"width": 1920, "height": 1080}, locale="zh-CN")
    page = context.new_page()
    page.requests = []
    page.on("request", lambda request: page.requests.append(request.url))
    page.errors = []
    page.on("pageerror", lambda error: page.errors.append(str(error)))
    page.goto(url, wait_until="domcontentloaded")
    yield page
    context.close()


@pytest.fixture
def page(visitor):
    """The same browser, logged in as the duty chief."""
    log_in(visitor)
    return visitor


def assert_offline(page) -> None:
    outside = [url for url in page.requests if not is_local(url)]
    assert page.requests and not outside, f"requests that leave this machine: {outside}"
    assert not page.errors, page.errors


def test_public_page_draws_its_map_offline(visitor):
    visitor.get_by_text(i18n.t("public.recent", "zh-CN")).first.wait_for(timeout=WAIT_MS)
    wait_for_map(visitor)
    assert_offline(visitor)



def wait_for_map(page, timeout_s: float = WAIT_MS / 1000) -> bytes:
    """Wait until the deck canvas exists and has drawn (many colours); return its screenshot.

    *timeout_s* bounds each of the two waits (a first map after a login on a starved machine
    loads deck.gl's code and draws on the CPU: give it longer).
    """
    from playwright.sync_api import Error as PlaywrightError

    try:
        page.wait_for_selector(CANVAS, timeout=timeout_s * 1000)
    except PlaywrightError as exc:
        shot(page, "map-not-drawn.png")
        charts = page.evaluate(
            "(sel) => [...document.querySelectorAll(sel)].map(e => e.outerHTML.slice(0, 600))",
            CHART)
        state = page.evaluate("() => document.querySelector('[data-testid=\"stApp\"]')"
                              "?.getAttribute('data-test-script-state')")
        errors = getattr(page, "errors", None)
        raise AssertionError(f"no map canvas in {timeout_s:.0f} s (script {state}; charts "
                             f"{charts}; page errors {errors}); see map-not-drawn.png") from exc
    chart = page.locator(CHART).first

    def drawn() -> bytes | None:
        try:
            png = chart.screenshot(timeout=10_000)
        except PlaywrightError:  # a rerun replaced the map meanwhile: look at the new one
            return None
        return png if distinct_colours(png) >= 8 else None

    return wait_until(drawn, timeout_s, "the map canvas to draw")


def projector(page, grids, height: int | None = None):
    """(lon, lat) → page pixels, from the map's initial view (fitted to the grids, pitch 0)."""
    box = page.locator(CANVAS).first.bounding_box()
    view = deck.fit_view(tuple(grids.total_bounds), height=height or mapview_height())
    scale = 512 * 2 ** view.zoom
    merc = lambda la: math.log(math.tan(math.pi / 4 + math.radians(la) / 2))  # noqa: E731

    def at(lon: float, lat: float) -> tuple[float, float]:
        dx = (lon - view.longitude) / 360 * scale
        dy = (merc(view.latitude) - merc(lat)) / (2 * math.pi) * scale
        return box["x"] + box["width"] / 2 + dx, box["y"] + box["height"] / 2 + dy

    return at


def mapview_height() -> int:
    from ui.mapview import MAP_HEIGHT

    return MAP_HEIGHT


def tooltip_at(page, x: float, y: float, timeout_s: float = 5.0) -> str | None:
    page.mouse.move(x - 30, y - 30)
    page.mouse.move(x, y, steps=4)
    tooltip = page.locator(".deck-tooltip")
    try:
        wait_until(lambda: tooltip.count() and tooltip.first.is_visible()
                   and tooltip.first.inner_text().strip(), timeout_s, "a tooltip")
    except AssertionError:
        return None
    return tooltip.first.inner_text()


def click_on_map(page, x: float, y: float, shown: str, done, what: str) -> str:
    """Click (x, y) under a tooltip naming *shown* until ``done()``; return that tooltip.

    On a busy machine reruns race the page: the login's, a selection's, the live panels', the
    wall's timed board. A click made while one redraws the map is dropped, and a hover meanwhile
    finds no tooltip. Each try therefore starts on an idle page, and the map is clicked again
    only when the page is idle again and ``done()`` is still false (the click was lost, not
    slow), as a person clicks again when nothing happened.
    """
    under: list[str] = []

    def attempt() -> bool:
        settle(page)  # a click during a rerun may be dropped
        if done():  # the last click was taken after all
            return True
        tooltip = tooltip_at(page, x, y)
        if tooltip is None:  # the map is being drawn again: look again once it is idle
            return False
        assert shown in tooltip, tooltip  # another feature's: the map is not what we drew
        under.append(tooltip)
        page.mouse.click(x, y)
        try:
            wait_until(done, 10, what)
        except AssertionError:
            return False  # not yet: the next try waits for the page to be idle first
        return True

    wait_until(attempt, 150, f"a click on the map: {what}")
    assert under, f"{what} with no click on the map"
    return under[-1]


def quiet_points(gpkg, grid_code: str | None = None):
    """Points far from every point feature: in a building (default) or in a grid's open space."""
    import geopandas as gpd
    import numpy as np
    import shapely

    from twin.store import open_store

    with open_store(gpkg) as store:
        buildings = store.read_layer("buildings")
        grids = store.read_layer("grid_cells")
        others = [store.read_layer(n) for n in ("sensors", "cameras", "parking")
                  if n in store.layers()]
        cases = store.read_cases()
    dots = np.concatenate([shapely.get_coordinates(f.geometry.values) for f in others]
                          + [cases[["lon", "lat"]].to_numpy(dtype=float)])
    tree = shapely.STRtree(shapely.points(dots))
    if grid_code is None:
        candidates = shapely.point_on_surface(buildings.geometry.values)
        keys = buildings["building_code"].to_numpy()
    else:
        cell = grids.set_index("grid_code").geometry[grid_code]
        minx, miny, maxx, maxy = cell.bounds
        xs, ys = np.meshgrid(np.linspace(minx, maxx, 25), np.linspace(miny, maxy, 25))
        pts = shapely.points(xs.ravel(), ys.ravel())
        pts = pts[shapely.contains(cell, pts) & ~shapely.intersects(
            shapely.union_all(shapely.buffer(buildings.geometry.values, 0.0002)), pts)]  # ≈ 20 m
        candidates, keys = pts, np.array([grid_code] * len(pts))
    _, nearest = tree.query_nearest(candidates, return_distance=True)
    order = np.argsort(-nearest)
    return gpd.GeoSeries(candidates[order], crs=4326), keys[order], grids


def shot(page, name: str) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / name), full_page=True)


def test_cockpit_draws_offline_hovers_clicks_and_switches_language(page, server):
    _, gpkg = server
    page.get_by_text("智慧社区治理驾驶舱").first.wait_for(timeout=WAIT_MS)
    unpicked = wait_for_map(page)
    page.get_by_text("按期结案率").first.wait_for(timeout=WAIT_MS)
    shot(page, "cockpit-zh.png")

    points, codes, grids = quiet_points(gpkg)
    to_screen = projector(page, grids)
    text = None
    for point, code in list(zip(points, codes, strict=True))[:8]:  # the quietest buildings
        text = tooltip_at(page, *to_screen(point.x, point.y))
        if text and text.startswith("楼栋"):
            assert code in text
            break
    assert text and text.startswith("楼栋") and "未结案件" in text, text
    shot(page, "cockpit-zh-tooltip.png")

    grid_code = grids["grid_code"].iloc[0]
    spots, _, _ = quiet_points(gpkg, grid_code)
    x, y = to_screen(spots.iloc[0].x, spots.iloc[0].y)
    panel = page.locator("[data-testid='stMarkdown']", has_text=grid_code)
    click_on_map(page, x, y, grid_code, lambda: panel.count() > 0,
                 "the side panel to show the clicked grid")
    page.get_by_text("超期案件").first.wait_for(timeout=WAIT_MS)
    page.mouse.move(1, 1)  # off the map: no hover highlight, no tooltip in the picture
    # the map is drawn again after the selection, not left blank, with the grid outlined
    outline = lambda png: pixels_of(png, deck.SELECTED_COLOR)  # noqa: E731
    wait_until(lambda: outline(wait_for_map(page)) > outline(unpicked) + 100, WAIT_MS / 1000,
               "the picked grid to be outlined on the map")
    shot(page, "cockpit-zh-grid.png")

    page.locator("[data-testid='stSidebar'] [data-testid='stSelectbox']").first.click()
    page.get_by_role("option", name="English").click()
    page.get_by_text("Community governance cockpit").first.wait_for(timeout=WAIT_MS)
    page.get_by_text("On-time close rate").first.wait_for(timeout=WAIT_MS)
    wait_for_map(page)
    shot(page, "cockpit-en.png")

    assert_offline(page)


def test_cockpit_screenshot_for_the_readme(page):
    """The README's picture of the map: written to tests/artifacts; copied over docs/img/map.png
    only when asked (``TWIN_UPDATE_README_SHOT=1``), so a test run never edits tracked files."""
    page.get_by_text("智慧社区治理驾驶舱").first.wait_for(timeout=WAIT_MS)
    wait_for_map(page)
    page.mouse.move(5, 5)  # no tooltip in the picture
    picture = ARTIFACTS / "map.png"
    page.screenshot(path=str(picture))
    assert distinct_colours(picture.read_bytes()) >= 8
    if os.environ.get("TWIN_UPDATE_README_SHOT") == "1":
        docs = ROOT / "docs" / "img"
        docs.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(picture, docs / "map.png")
