"""The cockpit in a real browser: login → first map, back to the cockpit, a language switch.

Each step is timed in headless Chromium (Playwright, the system browser) from the user's action
to the map drawn on screen, on the lived-in demo community served as `make demo` serves it. The
anchor is the floor: the same layers as the cockpit draws them, in a static
``pydeck.Deck.to_html`` page (deck.gl inlined, nothing fetched) opened in the same browser —
no server, no Python on the way. Ours ÷ floor says what the server round trips cost.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.common import Figure, Timing

NAME = "browser"
TITLE = "The cockpit in a real browser (Chromium): login, page switch, language"
DESCRIPTION = """
The lived-in demo community (`gridtwin make-demo`) served by `python -m ui.serve run app.py`, as
`make demo` serves it, opened in headless Chromium (Playwright with the system browser, 1920×1080,
a new browser context per round). Each step is timed from the user's action to the map drawn
(the deck canvas showing many colours): logging in as the official, going back to the cockpit
from the cases page, switching the language to English. The floor is the same map — the
cockpit's own deck (`twin.cockpit.cockpit_data` then `twin.deck.thematic_deck`) — as a static
`pydeck.Deck.to_html(offline=True)` page opened in the same browser, timed from navigation to the
map drawn. Ratios are ours ÷ floor (lower is better; 1 would be as fast as a static file).
"""
SCALES = ("community",)
QUICK_SCALES = ("community",)
ROOT = Path(__file__).resolve().parents[1]
USER, PASSWORD = "official", "official-demo"
#: The issue's limits for each step, in seconds.
LIMITS = {"login → first map": 3.0, "back to the cockpit": 1.5, "language switch": 1.5}
VISIBLE = ("grid_cells", "buildings", "parking", "cameras", "sensors", "cases", "alarms")


def _demo(folder: Path) -> Path:
    path = folder / "demo.gpkg"
    subprocess.run([sys.executable, "-m", "twin.cli", "make-demo", "--store", str(path),
                    "--force"], check=True, cwd=ROOT, capture_output=True)
    return path


def _floor_page(store_path: Path, folder: Path) -> Path:
    """The cockpit's map as a static HTML page beside pydeck's own deck.gl bundle.

    Nothing leaves the machine: the page's links to CDNs (basemap library, fonts, styles) are
    taken out, and the bundle is a file next to it (inlined into the page, as
    ``to_html(offline=True)`` does, Chromium refuses it: "Identifier 'r' has already been
    declared").
    """
    import collections
    import shutil

    import pydeck

    from twin import cockpit, deck
    from twin.store import open_store

    with open_store(store_path) as store:
        data = cockpit.cockpit_data(store)
        made = deck.thematic_deck(data, VISIBLE, collections.defaultdict(str))
    html = made.to_html(as_string=True, offline=False, iframe_height=1080)
    lines = [line for line in html.splitlines() if "https://" not in line]
    lines.insert(next(i for i, line in enumerate(lines) if "</head>" in line),
                 "<script src='deck.js'></script>")
    bundle = Path(pydeck.__file__).parent / "nbextension" / "static" / "index.js"
    shutil.copyfile(bundle, folder / "deck.js")
    page = folder / "floor.html"
    page.write_text("\n".join(lines), encoding="utf-8")
    return page


def _drawn(page, selector: str, timeout_s: float = 120.0) -> None:
    """Wait until the deck canvas under *selector* has drawn (many colours on it)."""
    from tests.browser import distinct_colours

    page.wait_for_selector(f"{selector} canvas", timeout=timeout_s * 1000)
    deadline = time.monotonic() + timeout_s
    from playwright.sync_api import Error as PlaywrightError

    target = page.locator(selector).first

    def colours() -> int:
        try:
            return distinct_colours(target.screenshot(timeout=10_000))
        except PlaywrightError:  # the rerun after a login replaced the map: look again
            return 0

    while colours() < 8:
        if time.monotonic() > deadline:
            raise TimeoutError(f"the map under {selector} did not draw in {timeout_s} s")


def _round(browser, base: str, floor: Path) -> dict[str, float]:
    """One visit: every step's seconds, and the floor's."""
    from tests.browser import settle
    from twin import i18n

    chart = "[data-testid='stDeckGlJsonChart']"
    out: dict[str, float] = {}
    context = browser.new_context(viewport={"width": 1920, "height": 1080}, locale="zh-CN")
    try:
        page = context.new_page()
        page.goto(base, wait_until="domcontentloaded")
        page.get_by_label(i18n.t("auth.username", "zh-CN")).fill(USER)
        page.get_by_label(i18n.t("auth.password", "zh-CN")).fill(PASSWORD)
        t0 = time.perf_counter()
        page.get_by_role("button", name=i18n.t("auth.submit", "zh-CN")).click()
        _drawn(page, chart)
        out["login → first map"] = time.perf_counter() - t0

        settle(page)  # a click during a rerun may be dropped: each starts on a quiet page
        page.get_by_role("link", name=i18n.t("nav.cases", "zh-CN")).first.click()
        page.wait_for_url("**/cases")
        page.locator(chart).first.wait_for(state="detached")
        settle(page)
        t0 = time.perf_counter()
        page.get_by_role("link", name=i18n.t("nav.cockpit", "zh-CN")).first.click()
        _drawn(page, chart)
        out["back to the cockpit"] = time.perf_counter() - t0

        settle(page)
        page.locator(".st-key-lang").click()  # the language picker (keyed, in the sidebar)
        t0 = time.perf_counter()
        page.get_by_role("option", name=i18n.LANGUAGE_NAMES["en"]).click()
        page.get_by_text(i18n.t("cockpit.title", "en")).first.wait_for(timeout=120_000)
        _drawn(page, chart)
        out["language switch"] = time.perf_counter() - t0

        static = context.new_page()
        t0 = time.perf_counter()
        static.goto(floor.as_uri(), wait_until="commit")
        _drawn(static, "body")
        out["floor"] = time.perf_counter() - t0
    finally:
        context.close()
    return out


def run(scale: str, quick: bool) -> list[Figure]:
    """Time each step over a few visits (3 quick, 7 full); one figure per step."""
    from playwright.sync_api import sync_playwright

    from tests.browser import CHROMIUM_ARGS, free_port, stop_process_group
    from tests.services import chromium_path

    rounds = 3 if quick else 7
    with tempfile.TemporaryDirectory(prefix="bench-browser-") as tmp:
        folder = Path(tmp)
        store_path = _demo(folder)
        floor = _floor_page(store_path, folder)
        port = free_port()
        env = {**os.environ, "TWIN_DATABASE_URL": str(store_path)}
        server = subprocess.Popen(
            [sys.executable, "-m", "ui.serve", "run", "app.py", "--server.port", str(port),
             "--server.address", "127.0.0.1", "--server.headless", "true",
             "--browser.gatherUsageStats", "false", "--server.fileWatcherType", "none"],
            cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            start_new_session=True)
        try:
            _wait_healthy(f"http://127.0.0.1:{port}/_stcore/health", server)
            with sync_playwright() as p:
                browser = p.chromium.launch(executable_path=chromium_path(), args=CHROMIUM_ARGS)
                try:
                    _round(browser, f"http://127.0.0.1:{port}", floor)  # warm-up
                    visits = [_round(browser, f"http://127.0.0.1:{port}", floor)
                              for _ in range(rounds)]
                finally:
                    browser.close()
        finally:
            stop_process_group(server)
    floor_t = Timing([v["floor"] for v in visits], None, 0.0)
    figures = []
    for step, limit in LIMITS.items():
        ours = Timing([v[step] for v in visits], None, 0.0)
        figures.append(Figure(
            NAME, step, scale, {"rounds": rounds}, "GridTwin in Chromium",
            "static pydeck.Deck.to_html of the same map (the floor)",
            ours_s=ours.median, anchor_s=floor_t.median, repeats=rounds, same_answer=None,
            ours_p95_s=ours.pct(0.95), anchor_p95_s=floor_t.pct(0.95),
            notes=f"limit {limit:g} s; ours ÷ floor {ours.median / floor_t.median:.2f}",
            extra={"limit_s": limit, "ours_runs": ours.times, "floor_runs": floor_t.times}))
    return figures


def _wait_healthy(url: str, server: subprocess.Popen, timeout_s: float = 90.0) -> None:
    import urllib.request

    deadline = time.monotonic() + timeout_s
    while True:
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        if server.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"the cockpit server did not come up at {url}")
        time.sleep(0.2)
