"""Sessions in a real Chromium: a login survives a reload, deep links, logout, idle, disabled.

The browser keeps the session in an HttpOnly, SameSite=Strict cookie set by ``ui/serve.py``'s
route; these tests read it through Playwright (which sees HttpOnly cookies) to replay it in a
fresh browser, and check the store's side through :mod:`twin.trust.sessions`.
"""

from __future__ import annotations

import pandas as pd
import pytest

from tests.browser import (
    ARTIFACTS,
    reload_midway,
    settle,
    streamlit_server,
    wait_until,
    write_small_twin,
)
from twin import i18n, trust
from twin.schema import SESSION_SEEN
from twin.store import open_store
from twin.trust import sessions as ts

pytestmark = pytest.mark.browser

WAIT_MS = 60_000
ZH = "zh-CN"
LOGOUT = i18n.t("auth.logout", ZH)
LOGIN_TITLE = i18n.t("auth.title", ZH)
SIDEBAR = "[data-testid='stSidebar']"


def zh(key: str, **fmt: object) -> str:
    return i18n.t(key, ZH, **fmt)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    gpkg = write_small_twin(tmp_path_factory.mktemp("sessions") / "twin.gpkg")
    with open_store(gpkg) as store:
        trust.create_demo_users(store, actor="tests")
    with streamlit_server(gpkg) as url:
        yield url, gpkg


@pytest.fixture
def new_context(chromium, server):
    """Make fresh browser contexts (closed at the end); each is a new browser's cookie jar."""
    made = []

    def make(width: int = 1920, height: int = 1080, **kw):
        context = chromium.new_context(viewport={"width": width, "height": height},
                                       locale="zh-CN", **kw)
        made.append(context)
        page = context.new_page()
        page.errors = []
        page.on("pageerror", lambda error: page.errors.append(str(error)))
        return context, page

    yield make
    for context in made:
        context.close()


def log_in(page, username: str) -> None:
    password = trust.DEMO_USERS[username][1]
    page.get_by_label(zh("auth.username")).fill(username)
    page.get_by_label(zh("auth.password")).fill(password)
    page.get_by_role("button", name=zh("auth.submit")).click()


def logged_in(page) -> None:
    """Wait until the page shows a logged-in user (the logout button)."""
    page.get_by_role("button", name=LOGOUT).wait_for(timeout=WAIT_MS)


def login_form(page) -> None:
    """Wait until the page shows the login form, and no logout button."""
    try:
        page.get_by_label(zh("auth.password")).wait_for(timeout=WAIT_MS)
        page.get_by_role("button", name=LOGOUT).wait_for(state="detached", timeout=WAIT_MS)
    except Exception:
        page.screenshot(path=str(ARTIFACTS / "sessions-no-login-form.png"))
        raise


def session_cookie(context) -> dict | None:
    return next((c for c in context.cookies() if c["name"] == ts.COOKIE_NAME), None)


def wait_for_cookie(context) -> dict:
    return wait_until(lambda: session_cookie(context), 30, "the session cookie")


def at_path(page, path: str) -> None:
    try:
        wait_until(lambda: page.evaluate("() => location.pathname").rstrip("/").endswith(path),
                   60, f"the URL to end in {path}")
    except AssertionError as exc:
        page.screenshot(path=str(ARTIFACTS / f"sessions-not-at-{path.strip('/')}.png"))
        raise AssertionError(f"{exc}; the URL is {page.url}") from None



def no_streamlit_not_found(page) -> None:
    assert page.get_by_text("Page not found").count() == 0
    assert page.locator("[role='dialog']").count() == 0


def test_a_login_survives_a_reload_on_the_same_page(server, new_context):
    url, _ = server
    context, page = new_context()
    page.goto(url, wait_until="domcontentloaded")
    log_in(page, "official")
    logged_in(page)
    at_path(page, "/cockpit")  # the role's home has its own URL
    cookie = wait_for_cookie(context)
    assert cookie["httpOnly"] and cookie["sameSite"] == "Strict" and cookie["path"] == "/"
    assert page.evaluate("() => document.cookie").find(ts.COOKIE_NAME) == -1  # not for scripts
    settle(page)
    page.locator(f"{SIDEBAR} a[href$='/cases']").click()
    at_path(page, "/cases")
    page.get_by_role("heading", name=zh("nav.cases")).first.wait_for(timeout=WAIT_MS)
    reload_midway(page)
    logged_in(page)
    at_path(page, "/cases")
    assert page.get_by_label(zh("auth.password")).count() == 0
    page.screenshot(path=str(ARTIFACTS / "sessions-reload-cases.png"))
    assert not page.errors, page.errors


def test_deep_links_open_their_page_and_others_say_why_not(server, new_context):
    url, _ = server
    context, page = new_context()
    page.goto(f"{url}/cases", wait_until="domcontentloaded")  # logged out: log in first
    page.get_by_text(zh("routing.login_first", page=zh("nav.cases"))).wait_for(timeout=WAIT_MS)
    no_streamlit_not_found(page)
    log_in(page, "official")
    logged_in(page)
    at_path(page, "/cases")  # lands where the link pointed, not on the home page
    wait_for_cookie(context)
    page.goto(f"{url}/no-such-page", wait_until="domcontentloaded")
    page.get_by_text(zh("routing.not_found.title")).wait_for(timeout=WAIT_MS)
    no_streamlit_not_found(page)
    page.screenshot(path=str(ARTIFACTS / "sessions-not-found.png"))
    page.goto(f"{url}/audit", wait_until="domcontentloaded")  # a page an official may not open
    page.get_by_text(zh("routing.not_allowed.title")).wait_for(timeout=WAIT_MS)
    no_streamlit_not_found(page)
    page.get_by_role("link", name=zh("routing.back_home", page=zh("nav.cockpit"))).click()
    at_path(page, "/cockpit")
    logged_in(page)


def test_the_public_page_opens_without_login(server, new_context):
    url, _ = server
    _, page = new_context()
    page.goto(f"{url}/public", wait_until="domcontentloaded")
    page.get_by_role("heading", name=zh("public.title")).first.wait_for(timeout=WAIT_MS)
    login_form(page)
    no_streamlit_not_found(page)
    at_path(page, "/public")


def test_logout_ends_the_session_for_good(server, new_context):
    url, gpkg = server
    context, page = new_context()
    page.goto(url, wait_until="domcontentloaded")
    log_in(page, "dispatcher")
    logged_in(page)
    cookie = wait_for_cookie(context)
    page.get_by_role("button", name=LOGOUT).click()
    login_form(page)
    wait_until(lambda: session_cookie(context) is None, 30, "the cookie to be cleared")
    page.reload(wait_until="domcontentloaded")
    login_form(page)
    with open_store(gpkg) as store:
        assert ts.session_problem(store, cookie["value"]) == "revoked"
    other, replay = new_context()  # the old value, replayed by another browser
    other.add_cookies([cookie])
    replay.goto(f"{url}/cases", wait_until="domcontentloaded")
    login_form(replay)
    replay.get_by_text(zh("routing.login_first", page=zh("nav.cases"))).wait_for(
        timeout=WAIT_MS)


def test_an_idle_session_ends_with_a_message(server, new_context):
    url, gpkg = server
    context, page = new_context()
    page.goto(url, wait_until="domcontentloaded")
    log_in(page, "planner")
    logged_in(page)
    cookie = wait_for_cookie(context)
    # no run in progress: a run that read the session before the write below could note
    # its use after it (at most every TOUCH_EVERY_S) and so undo the backdating
    settle(page)
    with open_store(gpkg) as store:  # last used longer ago than the idle timeout
        idle = pd.Timestamp.now(tz="UTC") - pd.Timedelta(hours=2)
        store.put_rows(SESSION_SEEN, pd.DataFrame([{
            "id_hash": ts._hash(cookie["value"].split(".")[0]), "last_seen_at": idle}]),
            on_conflict="update")
        assert ts.session_problem(store, cookie["value"]) == "idle"
    page.reload(wait_until="domcontentloaded")
    login_form(page)
    page.get_by_text(zh("auth.expired")).wait_for(timeout=WAIT_MS)


def test_a_disabled_users_session_ends(server, new_context):
    url, gpkg = server
    context, page = new_context()
    page.goto(url, wait_until="domcontentloaded")
    log_in(page, "datastaff")
    logged_in(page)
    cookie = wait_for_cookie(context)
    with open_store(gpkg) as store:
        trust.update_user(store, "datastaff", disabled=True, actor="admin")
        assert ts.session_problem(store, cookie["value"]) == "revoked"
    try:
        page.reload(wait_until="domcontentloaded")
        login_form(page)
    finally:
        with open_store(gpkg) as store:
            trust.update_user(store, "datastaff", disabled=False, actor="admin")


def test_on_a_phone_the_sidebar_leaves_the_page_free(server, new_context):
    url, _ = server
    context, page = new_context(390, 844, is_mobile=True, has_touch=True)
    page.goto(url, wait_until="domcontentloaded")
    log_in(page, "gridworker")
    logged_in_somewhere = page.get_by_role("heading", name=zh("nav.my_grid")).first
    logged_in_somewhere.wait_for(timeout=WAIT_MS)
    at_path(page, "/my-grid")
    wait_for_cookie(context)

    def sidebar_out_of_the_way() -> bool:
        box = page.locator(SIDEBAR).bounding_box()
        return box is None or box["x"] + box["width"] <= 1

    wait_until(sidebar_out_of_the_way, 10, "the sidebar to be collapsed")
    page.reload(wait_until="domcontentloaded")
    logged_in_somewhere.wait_for(timeout=WAIT_MS)
    assert sidebar_out_of_the_way()
    settle(page)
    page.screenshot(path=str(ARTIFACTS / "sessions-phone-my-grid.png"))


def test_a_reload_keeps_the_chosen_language(server, new_context):
    url, _ = server
    context, page = new_context()
    page.goto(url, wait_until="domcontentloaded")
    log_in(page, "resident")
    logged_in(page)
    wait_for_cookie(context)
    page.locator(".st-key-lang").click()
    page.get_by_role("option", name=i18n.LANGUAGE_NAMES["en"]).click()
    page.get_by_role("button", name=i18n.t("auth.logout", "en")).wait_for(timeout=WAIT_MS)
    wait_until(lambda: any(c["name"] == "twin_lang" and c["value"] == "en"
                           for c in context.cookies()), 30, "the language cookie")
    page.reload(wait_until="domcontentloaded")
    page.get_by_role("button", name=i18n.t("auth.logout", "en")).wait_for(timeout=WAIT_MS)
