"""Injected markup and leaks in a real headless Chromium: `@@=` ids, Markdown polls, the demo.

The attacks of issue 22 replayed against the running app: a feature id that deck.gl's JSON
converter would run (``@@=f()``) or fail on (``@@#nope.nope``), poll choices and notices written
as Markdown (an external image, a disguised link), a backtick in a feature id, a selected case
row that a filter takes away; and the demo server, which must listen on this machine only and
ask nothing of the internet when it starts.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import socket
import subprocess
import sys
import threading
import time
import tomllib
from contextlib import contextmanager
from pathlib import Path

import pandas as pd
import pytest

from tests.browser import (
    DX,
    DY,
    LAT,
    LON,
    ROOT,
    free_port,
    is_local,
    settle,
    small_twin_layers,
    stop_process_group,
    streamlit_server,
    wait_until,
)
from tests.test_browser import (
    click_on_map,
    projector,
    shot,
    wait_for_map,
)
from twin import i18n
from twin.trust.escaping import WORD_JOINER

WAIT_MS = 60_000
#: The first map after a login: deck.gl's code loads and draws on the CPU (SwiftShader), which
#: took over a minute on two cores shared with another browser test module.
FIRST_MAP_S = 180
EVIL = "evil.example"

# -- the hostile community -------------------------------------------------------------------

#: The centre building's id: deck.gl's converter would compile and call it for every feature.
CALL_ID = "@@=f()"
#: A constant lookup deck.gl's converter fails on (TypeError): the map would not draw at all.
CONSTANT_ID = "@@#nope.nope"
#: A backtick closes the Markdown code span the header once put ids in.
TICK_ID = "B-`x` **粗** [链](http://evil.example/h)"
DISGUISED = "点击此处验证身份"
CHOICES = [f"![同意](http://{EVIL}/choice.png)", f"[{DISGUISED}](http://{EVIL}/login)",
           f"https://{EVIL}/auto www.{EVIL}", "<img src=x onerror=\"window.__xss=1\">",
           ":red[红字] :material/home: $x^2$"]
TITLE = "加装电梯征询"
BODY = f"![b](http://{EVIL}/body.png)\n[{DISGUISED}](http://{EVIL}/body)\n    缩进"
QUESTION = f"是否同意？[{DISGUISED}](http://{EVIL}/q)"
OFFICIAL, RESIDENT, PASSWORD = "duty_chief", "resident_1", "demo-password-1"


def hostile_layers():
    """The small test twin with ids and names an attacker typed (one per converter prefix)."""
    twin_layers = small_twin_layers()
    buildings = twin_layers["buildings"]
    codes = buildings["building_code"].tolist()
    codes[0] = CALL_ID          # the centre building (at the map's centre)
    codes[2] = CONSTANT_ID
    codes[3] = TICK_ID
    twin_layers["buildings"] = buildings.assign(
        building_code=codes, name=["@@=[lon, lat]", "1栋", "@@#GL.ONE", "`3栋`", "@@type"])
    twin_layers["sensors"] = twin_layers["sensors"].assign(sensor_id=["@@=s()", "S2", "@@#s"])
    return twin_layers


def write_hostile_twin(path: Path) -> Path:
    """The hostile twin, a resident of building B-1, an official, a Markdown poll, four cases."""
    from twin import trust
    from twin.store import open_store
    from twin.trust import participation
    from twin.twin import put_layer

    with open_store(path) as store:
        for name, frame in hostile_layers().items():
            put_layer(store, name, frame, actor="tests", source="test_browser_attacks")
        store.write_layer("residents", pd.DataFrame({
            "resident_id": ["P1"], "building_code": ["B-1"], "name": ["王五"],
            "phone": ["13812345678"]}), actor="tests", source="test_browser_attacks")
        official = trust.create_user(store, OFFICIAL, PASSWORD, "official", display_name="值班长")
        trust.create_user(store, RESIDENT, PASSWORD, "resident", resident_id="P1",
                           building_code="B-1", display_name="`王五` **居民**")
        participation.publish(
            store, official, kind="poll", scope_kind="building",
            scope_id="B-1", title=TITLE, body=BODY,
            questions=[{"question": QUESTION, "choices": CHOICES}])
        now = pd.Timestamp.now(tz="UTC")
        for i, (grid, text) in enumerate([("45031100100101", "路灯不亮"),
                                          ("45031100100101", "井盖缺失"),
                                          ("45031100100102", "垃圾满溢"),
                                          ("45031100100102", "路灯闪烁")]):
            at = now - pd.Timedelta(hours=1 + i)
            store.create_case({
                "id": f"K{i}", "status": "dispatched", "service_code": "E0101",
                "family": "event", "source": "patrol", "description": text,
                "lon": LON + 0.0005 + 0.0008 * i, "lat": LAT + 0.0022, "grid_code": grid,
                "requested_at": at, "updated_at": at,
                "deadline_at": at + pd.Timedelta(hours=10 + i), "data": json.dumps({})})
    return path


# -- the browser -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    gpkg = write_hostile_twin(tmp_path_factory.mktemp("attacks") / "hostile.gpkg")
    with streamlit_server(gpkg) as url:
        yield url


@pytest.fixture
def browser_page(chromium, server):
    """A fresh browser on the app: every request, page error and dialog recorded."""
    context = chromium.new_context(viewport={"width": 1920, "height": 1080}, locale="zh-CN")
    page = context.new_page()
    page.requests, page.errors = [], []
    page.on("request", lambda request: page.requests.append(request.url))
    page.on("pageerror", lambda error: page.errors.append(str(error)))
    page.goto(server, wait_until="domcontentloaded")
    yield page
    context.close()


def log_in(page, username: str) -> None:
    page.get_by_label("用户名").fill(username)
    page.get_by_label("密码").fill(PASSWORD)
    page.get_by_role("button", name="登录").click()


def nothing_injected(page) -> None:
    """No image, link or request to the attacker's host, no script ran, no error shown."""
    assert page.locator(f"img[src*='{EVIL}']").count() == 0
    assert page.locator(f"a[href*='{EVIL}']").count() == 0
    assert page.locator("[data-testid='stException']").count() == 0
    assert page.evaluate("() => window.__xss") is None
    outside = [url for url in page.requests if not is_local(url)]
    assert not outside, f"requests that leave this machine: {outside}"
    assert not page.errors, page.errors


@pytest.mark.browser
def test_markdown_poll_is_drawn_as_text_for_the_resident(browser_page):
    page = browser_page
    log_in(page, RESIDENT)
    page.get_by_text(TITLE).first.wait_for(timeout=WAIT_MS)
    options = page.locator("[data-testid='stRadio']").first
    options.wait_for(timeout=WAIT_MS)
    shot(page, "attack-poll.png")
    text = options.inner_text().replace(WORD_JOINER, "")  # the mark that stops autolinks
    for choice in CHOICES:
        assert choice in text, (choice, text)  # every choice reads as typed, brackets and all
    body = page.get_by_text("[点击此处验证身份](http://evil.example/body)").first
    assert body.is_visible()
    assert QUESTION in text  # the question is the radio's label
    # Markdown still works where the app means it: the title is bold, the user's text is not
    assert page.locator("strong", has_text=TITLE).count() == 1
    assert page.locator("strong", has_text="居民").count() == 0  # display name in the sidebar
    assert page.get_by_text("`王五` **居民**", exact=False).count() >= 1
    nothing_injected(page)


def select_on_map(page, x: float, y: float, shown: str) -> str:
    """Click (x, y) until the side panel shows *shown*; return the tooltip clicked under."""
    header = page.locator("[data-testid='stMarkdown']", has_text=shown).first
    return click_on_map(page, x, y, shown, lambda: header.count() > 0,
                        f"the side panel to show {shown!r}")


@pytest.mark.browser
def test_the_map_draws_with_expression_ids_and_shows_them_as_text(browser_page):
    page = browser_page
    log_in(page, OFFICIAL)
    page.get_by_text(i18n.t("cockpit.title", "zh-CN")).first.wait_for(
        timeout=FIRST_MAP_S * 1000)
    settle(page, FIRST_MAP_S * 1000)  # the login's reruns are over: this map is the one staying
    wait_for_map(page, FIRST_MAP_S)
    grids = small_twin_layers()["grid_cells"]
    to_screen = projector(page, grids)
    cx, cy = to_screen(LON + DX / 2, LAT + DY / 2)  # the centre building: id @@=f()
    tooltip = select_on_map(page, cx, cy, CALL_ID)
    assert CALL_ID in tooltip and "@@=[lon, lat]" in tooltip, tooltip
    tx, ty = to_screen(LON + 0.0034, LAT + 0.0021)  # the building with a backtick in its id
    tooltip = select_on_map(page, tx, ty, "B-`x` **粗**")
    assert "B-`x` **粗**" in tooltip, tooltip
    settle(page)
    shot(page, "attack-map.png")
    assert page.locator("[data-testid='stMarkdown'] code").count() == 0
    nothing_injected(page)


@pytest.mark.browser
def test_a_selected_case_row_then_a_filter_shows_no_error(browser_page):
    page = browser_page
    log_in(page, OFFICIAL)
    page.get_by_text(i18n.t("cockpit.title", "zh-CN")).first.wait_for(timeout=WAIT_MS)
    page.get_by_role("link", name=i18n.t("nav.cases", "zh-CN")).click()
    grid = page.locator("[data-testid='stDataFrame']").first
    grid.wait_for(timeout=WAIT_MS)
    page.locator("[data-testid='stDataFrame'] canvas").first.wait_for(timeout=WAIT_MS)
    settle(page)  # the page's reruns are over: the table drawn is the one that stays
    box = wait_until(grid.bounding_box, 60, "the case table on the page")
    last_row = box["y"] + 35 * 4 + 17  # the header, then rows of 35 px: the fourth (last) row
    detail = page.get_by_text(re.compile(r"案件 K\d"))

    def selected():
        page.mouse.click(box["x"] + 12, last_row)  # the row marker: selects the row
        try:
            detail.first.wait_for(timeout=3_000)
        except Exception:  # not yet drawn: click again
            return False
        return True

    wait_until(selected, 60, "a case row to be selected")
    picked = detail.first.inner_text()
    # a filter that leaves one row: the selected (fourth) row is gone
    filter_box = page.get_by_label(i18n.t("cases.filter.text", "zh-CN"))
    filter_box.fill("井盖")
    filter_box.press("Enter")
    page.get_by_text(i18n.t("cases.count", "zh-CN", count=1, total=4)).first.wait_for(
        timeout=WAIT_MS)
    page.get_by_text(i18n.t("cases.pick", "zh-CN")).first.wait_for(timeout=WAIT_MS)
    shot(page, "attack-cases-filter.png")
    assert page.locator("[data-testid='stException']").count() == 0
    assert page.get_by_text("IndexError").count() == 0 and page.get_by_text("/work").count() == 0
    assert page.get_by_text(picked).count() == 0  # the old selection did not follow
    nothing_injected(page)


# -- the demo server: this machine only, nothing asked of the internet ------------------------


def test_streamlit_config_is_private_and_hides_error_details():
    from streamlit.config import ShowErrorDetailsConfigOptions

    config = tomllib.loads((ROOT / ".streamlit" / "config.toml").read_text(encoding="utf-8"))
    assert config["server"]["address"] == "127.0.0.1"
    assert config["server"]["headless"] is True
    assert config["browser"]["gatherUsageStats"] is False
    details = config["client"]["showErrorDetails"]
    assert details == ShowErrorDetailsConfigOptions.NONE.value
    assert details in {o.value for o in ShowErrorDetailsConfigOptions}


def demo_command(env: dict[str, str] | None = None, **variables: str) -> list[str]:
    """The `make demo` streamlit command line as make would run it (``make -n``, nothing run)."""
    args = [f"{k}={v}" for k, v in variables.items()]
    out = subprocess.run(["make", "-n", "-s", "demo", f"PY={sys.executable}", *args], cwd=ROOT,
                         capture_output=True, text=True, check=True, timeout=60,
                         env={**os.environ, **(env or {})}).stdout
    script = out.replace("\\\n", " ")
    line = next(x for x in script.splitlines() if "ui.serve run" in x)
    return shlex.split(line[line.index(f"{sys.executable} -m ui.serve run"):])


@pytest.mark.parametrize(("host", "address"), [(None, "127.0.0.1"), ("0.0.0.0", "0.0.0.0")])
def test_make_demo_listens_on_localhost_unless_told(host, address):
    words = demo_command(**({} if host is None else {"HOST": host}))
    assert words[1:5] == ["-m", "ui.serve", "run", "app.py"]  # streamlit run, asking nothing
    assert words[words.index("--server.address") + 1] == address
    assert words[words.index("--browser.gatherUsageStats") + 1] == "false"


def test_a_host_in_the_environment_does_not_open_the_demo():
    """zsh exports the machine's name as HOST: only `make demo HOST=…` may change the address."""
    words = demo_command(env={"HOST": "myhost.example"})
    assert words[words.index("--server.address") + 1] == "127.0.0.1"


@contextmanager
def request_recorder():
    """A local 'proxy' that records every connection: whoever uses it asked for the internet."""
    seen: list[bytes] = []
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()
    server.settimeout(0.2)
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _ = server.accept()
            except TimeoutError:
                continue
            with conn:
                conn.settimeout(2)
                try:
                    seen.append(conn.recv(4096))
                except OSError:
                    seen.append(b"")

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.getsockname()[1]}", seen
    finally:
        stop.set()
        thread.join(5)
        server.close()


def listening_addresses(port: int) -> set[str]:
    """Local addresses with a socket listening on *port* (from /proc/net/tcp and tcp6)."""
    found = set()
    for name in ("/proc/net/tcp", "/proc/net/tcp6"):
        if not os.path.exists(name):
            continue
        for row in Path(name).read_text().splitlines()[1:]:
            local, state = row.split()[1], row.split()[3]
            address, hex_port = local.rsplit(":", 1)
            if state == "0A" and int(hex_port, 16) == port:  # 0A: LISTEN
                found.add(address)
    return found


def run_server(words: list[str], port: int, proxy: str, log: Path):
    env = {k: v for k, v in os.environ.items() if k.lower() not in ("no_proxy",)}
    env.update({"HTTP_PROXY": proxy, "HTTPS_PROXY": proxy, "http_proxy": proxy,
                "https_proxy": proxy, "ALL_PROXY": proxy, "TWIN_DATABASE_URL": str(log) + ".gpkg"})
    words = [sys.executable, *words[1:]]
    words[words.index("--server.port") + 1] = str(port)
    out = open(log, "wb")  # noqa: SIM115 - closed with the process below
    proc = subprocess.Popen([*words, "--server.fileWatcherType", "none"], cwd=ROOT, env=env,
                            stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    return proc, out


def wait_for_banner(proc, log: Path, timeout_s: float = 60.0) -> str:
    """Wait until streamlit printed its URLs (the external look-up, if any, comes before)."""
    deadline = time.monotonic() + timeout_s
    while True:
        text = log.read_text(errors="replace")
        if "URL:" in text:  # printed after the look-up, when there is one
            return text
        try:
            code = proc.wait(timeout=0.25)
        except subprocess.TimeoutExpired:
            code = None
        if code is not None:
            raise AssertionError(f"streamlit exited with {code}: {text[-2000:]}")
        if time.monotonic() > deadline:
            raise AssertionError(f"no URL banner in {timeout_s} s: {text[-2000:]}")


def stop(proc, out) -> None:
    try:
        stop_process_group(proc)
    finally:
        out.close()


def cross_origin_websocket(port: int) -> bytes:
    """Open the app's WebSocket from another origin (a page elsewhere); return the answer."""
    with socket.create_connection(("127.0.0.1", port), timeout=30) as conn:
        conn.sendall((
            f"GET /_stcore/stream HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
            "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
            f"Sec-WebSocket-Version: 13\r\nOrigin: http://{EVIL}\r\n\r\n").encode())
        return conn.recv(1024)  # the answer comes after the origin check (and any look-up)


BARE = [sys.executable, "-m", "streamlit", "run", "app.py", "--server.port", "0",
        "--server.headless", "true"]


@pytest.mark.parametrize(("how", "words", "asks_outside"), [
    ("make demo", None, False),
    ("make demo HOST=0.0.0.0", {"HOST": "0.0.0.0"}, False),
    # controls: plain `streamlit run` asks checkip.amazonaws.com when it listens on every
    # interface, and on a WebSocket from another origin; the recorder catches both
    ("streamlit run, every interface", [*BARE, "--server.address", "0.0.0.0"], True),
    ("streamlit run, 127.0.0.1", [*BARE, "--server.address", "127.0.0.1"], True),
])
def test_the_demo_server_asks_nothing_of_the_internet(how, words, asks_outside, tmp_path):
    if not isinstance(words, list):
        words = demo_command(**(words or {}))
    address = words[words.index("--server.address") + 1]
    port = free_port()
    log = tmp_path / "streamlit.log"
    with request_recorder() as (proxy, seen):
        proc, out = run_server(words, port, proxy, log)
        try:
            banner = wait_for_banner(proc, log)
            listening = listening_addresses(port)
            answer = cross_origin_websocket(port)
        finally:
            stop(proc, out)
    assert answer.startswith(b"HTTP/1.1 403"), answer  # refused, as it should be
    asked = [s.split(b"\r\n", 1)[0].decode(errors="replace") for s in seen]
    if asks_outside:
        assert any("checkip.amazonaws.com" in a for a in asked), (asked, banner)
        return
    assert asked == [], f"{how} asked the internet: {asked}"
    assert "External URL" not in banner
    if address == "127.0.0.1":
        assert listening == {"0100007F"}, listening  # 127.0.0.1 only, nothing on ::
    else:
        assert "00000000" in listening, listening  # told to: every interface
