"""One language at a time: every page, as every demo role, in zh-CN and English, in Chromium.

The rule, so that a failure means a string in the wrong language and nothing else:

- **What is checked**: every visible text of the page's chrome: headings, labels, buttons,
  tabs, metric labels, captions, select and multiselect values and placeholders, alerts,
  the navigation, the column headers of tables and data frames.
- **What is left out**: values that come from the twin's data (any text of a layer, a user's
  name: a place called 桂花路 stays 桂花路 in English), the cells of data frames and tables,
  maps and their tooltips, code blocks, icons drawn from a font (their ligature names are
  not words) and the language selector itself (it names both languages on purpose).
- **English mode** fails on any Han character left after removing data values.
- **Chinese mode** fails on any English word (two or more Latin letters) left after removing
  data values, except the units and codes of :data:`ALLOWED_LATIN`.
"""

from __future__ import annotations

import re

import pandas as pd
import pytest

from tests.browser import ARTIFACTS, streamlit_server, wait_until, write_small_twin
from twin import i18n, trust
from twin.schema import USERS
from twin.store import open_store

pytestmark = pytest.mark.browser

WAIT_MS = 60_000
#: Latin words that are at home in Chinese text: units, codes, formats, product names.
ALLOWED_LATIN = {
    "m", "km", "km²", "m²", "kg", "kWh", "dB", "PM", "AQI", "CO", "NO", "SO", "ID", "GPS",
    "CSV", "GeoJSON", "GeoPackage", "Shapefile", "KML", "JSON", "URL", "GridTwin", "MQTT",
    "PostGIS", "Gi", "OK", "QR", "Excel", "zip", "gpkg", "shp", "png", "jpg", "jpeg", "PNG",
    "JPEG", "JPG", "WebP", "MB", "KB", "GB", "HMAC",
}
HAN = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]")
LATIN_WORD = re.compile(r"[A-Za-z][A-Za-z²]+")

#: the page's visible chrome texts (JavaScript run in the page; see the module docstring)
TEXTS_JS = r"""
() => {
  const skip = "[data-testid='stIconMaterial'], [data-testid='stDeckGlJsonChart'], "
    + "[data-testid='stCode'], code, pre, script, style, .st-key-lang, "
    + "[data-testid='stDataFrameResizable'] [role='gridcell'], [data-testid='stTable'] td, "
    + "[data-testid='stSkeleton'], [data-testid='stStatusWidget']";
  const out = [];
  const walker = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT);
  while (walker.nextNode()) {
    const node = walker.currentNode;
    const text = node.textContent.trim();
    if (!text) continue;
    const el = node.parentElement;
    if (!el || el.closest(skip)) continue;
    const header = el.closest("[role='columnheader'], th");
    if (!header) {
      const rects = el.getClientRects();
      const style = getComputedStyle(el);
      if (!rects.length || style.visibility === "hidden" || style.display === "none") continue;
      const box = el.getBoundingClientRect();
      if (box.right <= 0 || box.bottom <= 0) continue;  // moved off screen (collapsed sidebar)
    }
    out.push(text);
  }
  const typed = "input:not([type='password']):not([type='checkbox']):not([type='radio'])";
  for (const input of document.querySelectorAll(typed)) {
    if (input.closest(skip) || !input.value || !input.getClientRects().length) continue;
    const box = input.getBoundingClientRect();
    if (box.right > 0 && box.bottom > 0) out.push(input.value.trim());
  }
  return out;
}
"""


@pytest.fixture(scope="module")
def twin(tmp_path_factory):
    """The small twin with the demo users; and every text value of its data."""
    gpkg = write_small_twin(tmp_path_factory.mktemp("language") / "twin.gpkg")
    values: set[str] = set()
    with open_store(gpkg) as store:
        trust.create_demo_users(store, actor="tests")
        for name in store.layers():
            frame = pd.DataFrame(store.read_layer(name)).drop(columns="geometry", errors="ignore")
            for column in frame.columns:
                values.update(str(v) for v in frame[column].dropna().unique())
        users = store.read_rows(USERS)
        values.update(users["username"].dropna().astype(str))
        values.update(users["display_name"].dropna().astype(str))
    return gpkg, sorted((v for v in values if v.strip()), key=len, reverse=True)


@pytest.fixture(scope="module")
def server(twin):
    with streamlit_server(twin[0]) as url:
        yield url


BUSY = ("[data-testid='stStatusWidget'], [data-testid='stSkeleton'], [data-stale='true'], "
        "[data-testid='stSpinner']")


def settled_texts(page) -> list[str]:
    """The page's chrome texts once the app has finished drawing it.

    Streamlit shows its "running" widget only after a moment, so a finished-looking page may
    be one whose rerun has not started: the texts count once no element is busy or stale and
    three samples in a row agree.
    """
    seen: list[list[str]] = []

    def stable() -> list[str] | None:
        busy = page.evaluate(f"() => !!document.querySelector({BUSY!r})")
        seen.append(None if busy else page.evaluate(TEXTS_JS))
        return seen[-1] if len(seen) >= 3 and seen[-1] is not None \
            and seen[-1] == seen[-2] == seen[-3] else None

    return wait_until(stable, 90, "the page to settle")


def wrong_language(texts: list[str], lang: str, data_values: list[str]) -> list[str]:
    """The texts that hold a word of the other language once data values are taken out."""
    found = []
    for text in dict.fromkeys(texts):
        rest = text
        for value in data_values:
            if value in rest:
                rest = rest.replace(value, " ")
        if lang == "en":
            if HAN.search(rest):
                found.append(text)
        elif any(word not in ALLOWED_LATIN for word in LATIN_WORD.findall(rest)):
            found.append(text)
    return found


@pytest.mark.parametrize("texts, lang, bad", [
    (["Cases", "桂花路 is a road", "网格"], "en", ["网格"]),
    (["案件", "2 km", "PM2.5", "Page not found", "桂花路 R01"], "zh-CN", ["Page not found"]),
])
def test_the_rule_sees_the_other_language_and_spares_data(texts, lang, bad):
    assert wrong_language(texts, lang, ["桂花路", "R01"]) == bad


def switch_language(page, lang: str) -> None:
    if lang == "zh-CN":
        return
    page.locator(".st-key-lang").click()
    page.get_by_role("option", name=i18n.LANGUAGE_NAMES[lang]).click()
    page.get_by_role("button", name=i18n.t("auth.logout", lang)).wait_for(timeout=WAIT_MS)
    wait_until(lambda: any(c["name"] == "twin_lang" and c["value"] == lang
                           for c in page.context.cookies()), 30, "the language kept")


ROLES = sorted(trust.DEMO_USERS)


@pytest.mark.parametrize("lang", i18n.LANGUAGES)
@pytest.mark.parametrize("username", ROLES)
def test_every_page_shows_one_language(chromium, server, twin, username, lang):
    _, data_values = twin
    context = chromium.new_context(viewport={"width": 1920, "height": 1080}, locale="zh-CN")
    try:
        page = context.new_page()
        page.goto(server, wait_until="domcontentloaded")
        page.get_by_label(i18n.t("auth.username", "zh-CN")).fill(username)
        page.get_by_label(i18n.t("auth.password", "zh-CN")).fill(trust.DEMO_USERS[username][1])
        page.get_by_role("button", name=i18n.t("auth.submit", "zh-CN")).click()
        page.get_by_role("button", name=i18n.t("auth.logout", "zh-CN")).wait_for(timeout=WAIT_MS)
        settled_texts(page)
        switch_language(page, lang)
        links = page.locator("[data-testid='stSidebarNav'] a")
        wait_until(lambda: links.count(), 60, "the navigation")
        paths = [a.get_attribute("href").rsplit("/", 1)[-1] for a in links.all()]
        problems = {}
        base = server.rstrip("/")
        for path in paths:  # by address: the wall has no sidebar to click on
            page.goto(f"{base}/{path}", wait_until="domcontentloaded")
            page.locator(".st-key-logout").wait_for(state="attached", timeout=WAIT_MS)
            bad = wrong_language(settled_texts(page), lang, data_values)
            if bad:
                problems[path] = bad
                page.screenshot(path=str(ARTIFACTS / f"language-{lang}-{username}-{path}.png"))
        assert not problems, f"{username} in {lang}: texts in the other language: {problems}"
    finally:
        context.close()
