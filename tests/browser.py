"""Helpers of the UI tests: a small hand-made twin, a streamlit server process, pixel checks."""

from __future__ import annotations

import io
import math
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import geopandas as gpd
from shapely.geometry import LineString, Point, box

from twin.store import open_store

ROOT = Path(__file__).resolve().parent.parent
ARTIFACTS = ROOT / "tests" / "artifacts"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
]

# The small community: 400 m × 300 m around (LON, LAT), two unit grids, five buildings.
LON, LAT = 110.29, 25.08
DX, DY = 0.004, 0.0027  # ≈ 400 m, 300 m
CENTRE_BUILDING = "B-C"
XSS_BUILDING = "B-X"
XSS_NAME = '<img src="x" onerror="window.__xss=1">'


def _rect(cx: float, cy: float, w_m: float, h_m: float):
    """A footprint centred on (cx, cy) degrees, w_m × h_m metres."""
    dlon = w_m / (111_320 * math.cos(math.radians(cy))) / 2
    dlat = h_m / 110_574 / 2
    return box(cx - dlon, cy - dlat, cx + dlon, cy + dlat)


def small_twin_layers() -> dict[str, gpd.GeoDataFrame]:
    """Hand-made layers of a tiny community; the centre building sits at the map's centre."""
    cx, cy = LON + DX / 2, LAT + DY / 2
    community = gpd.GeoDataFrame(
        {"community_code": ["450311001001"], "name": ["桂花社区"], "population": [1200]},
        geometry=[box(LON, LAT, LON + DX, LAT + DY)], crs=4326)
    grid_cells = gpd.GeoDataFrame(
        {"grid_code": ["45031100100101", "45031100100102"], "county_code": ["450311"] * 2,
         "street_code": ["001"] * 2, "community_code": ["001"] * 2, "sequence": ["01", "02"],
         "name": ["一网格", "二网格"], "resp_grid_id": ["R01", "R02"],
         "grid_worker": ["张三", "李四"], "grid_worker_phone": ["13812345678", "13987654321"]},
        geometry=[box(LON, LAT, cx, LAT + DY), box(cx, LAT, LON + DX, LAT + DY)], crs=4326)
    buildings = gpd.GeoDataFrame(
        {"building_code": [CENTRE_BUILDING, "B-1", "B-2", "B-3", XSS_BUILDING],
         "name": ["桂花苑中心楼", "1栋", "2栋", "3栋", XSS_NAME],
         "use": ["residential", "residential", "residential", "commercial", "residential"],
         "floors": [6, 11, 18, 2, 3],
         "height_m": [18.0, 33.0, 54.0, 8.0, 9.0],
         "households": [48, 66, 108, 0, 12]},
        geometry=[_rect(cx, cy, 70, 50),
                  _rect(LON + 0.0006, LAT + 0.0006, 30, 20),
                  _rect(LON + 0.0006, LAT + 0.0021, 30, 20),
                  _rect(LON + 0.0034, LAT + 0.0021, 40, 20),
                  _rect(LON + 0.0031, LAT + 0.0006, 50, 40)],
        crs=4326)
    roads = gpd.GeoDataFrame(
        {"road_id": ["R1", "R2"], "name": ["桂花路", "丹桂巷"], "kind": ["secondary", "internal"],
         "width_m": [12.0, 6.0]},
        geometry=[LineString([(LON, LAT + 0.0012), (LON + DX, LAT + 0.0012)]),
                  LineString([(LON + 0.0012, LAT), (LON + 0.0012, LAT + DY)])],
        crs=4326)
    cameras = gpd.GeoDataFrame(
        {"camera_id": ["C1", "C2"], "name": ["东门", "北门"], "heading_deg": [90.0, 0.0],
         "fov_deg": [60.0, 90.0], "range_m": [50.0, 40.0], "status": ["online", "offline"]},
        geometry=[Point(LON + 0.0015, LAT + 0.0013), Point(LON + 0.0025, LAT + 0.0024)],
        crs=4326)
    sensors = gpd.GeoDataFrame(
        {"sensor_id": ["S1", "S2", "S3"], "kind": ["air", "smoke", "parking"],
         "device_state": ["ok", "low_battery", "ok"], "battery_level": [0.9, 0.1, 0.75]},
        geometry=[Point(LON + 0.0005, LAT + 0.0013), Point(LON + 0.0033, LAT + 0.0013),
                  Point(LON + 0.0036, LAT + 0.0010)],
        crs=4326)
    return {"community": community, "grid_cells": grid_cells, "buildings": buildings,
            "roads": roads, "cameras": cameras, "sensors": sensors}


def write_small_twin(path: Path) -> Path:
    """Write :func:`small_twin_layers` into an embedded store at *path* and return the path."""
    from twin.twin import put_layer

    with open_store(path) as store:
        for name, frame in small_twin_layers().items():  # grid_cells first: grids get assigned
            put_layer(store, name, frame, actor="tests", source="tests/browser.py")
    return path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return response.status == 200
    except (urllib.error.URLError, OSError):
        return False


@contextmanager
def streamlit_server(database_url: str | Path, timeout: float = 60.0) -> Iterator[str]:
    """Run ``python -m ui.serve run app.py`` (streamlit run, offline, with the session routes)
    on a free port against *database_url*; yield its base URL.

    The process (and its children) is always killed on exit. Waiting polls the health endpoint;
    between polls it waits on the process itself, so a server that dies is reported at once.
    """
    port = free_port()
    env = {**os.environ, "TWIN_DATABASE_URL": str(database_url),
           "STREAMLIT_BROWSER_GATHER_USAGE_STATS": "false"}
    log = ARTIFACTS / f"streamlit-{port}.log"
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "ui.serve", "run", "app.py", "--server.headless", "true",
             "--server.port", str(port), "--server.address", "127.0.0.1",
             "--browser.gatherUsageStats", "false", "--server.fileWatcherType", "none"],
            cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
        )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + timeout
        while not _healthy(f"{base}/_stcore/health"):
            try:
                code = proc.wait(timeout=0.25)  # poll interval that also notices a crash
            except subprocess.TimeoutExpired:
                code = None
            if code is not None:
                raise RuntimeError(f"streamlit exited with {code}: {log.read_text()[-2000:]}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"streamlit did not answer in {timeout} s: {log.read_text()}")
        yield base
    finally:
        stop_process_group(proc)


def stop_process_group(proc: subprocess.Popen) -> None:
    """Stop a server started in its own process group: TERM, then KILL after 10 s."""
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)


def distinct_colours(png: bytes) -> int:
    """How many distinct colours an image has (a blank canvas has one or two)."""
    from PIL import Image

    image = Image.open(io.BytesIO(png)).convert("RGB")
    colours = image.getcolors(maxcolors=1 << 20)
    return len(colours) if colours is not None else 1 << 20


def pixels_of(png: bytes, colour: tuple[int, ...], tolerance: int = 6) -> int:
    """How many pixels of an image are *colour* (RGB, each channel within *tolerance*)."""
    import numpy as np
    from PIL import Image

    rgb = np.asarray(Image.open(io.BytesIO(png)).convert("RGB"), dtype=np.int16)
    return int((np.abs(rgb - np.array(colour[:3])) <= tolerance).all(axis=2).sum())


def is_local(url: str) -> bool:
    """True for URLs that stay on this machine: localhost, 127.0.0.1, data: and blob:."""
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    if parts.scheme in {"data", "blob", "about"}:
        return True
    return parts.hostname in {"127.0.0.1", "localhost", "::1"}


def reload_midway(page, timeout_ms: float = 60_000) -> None:
    """Reload *page* as F5 would, and wait until the app is back with the user still logged in.

    The session survives in its HttpOnly cookie (docs/trust.md, Sessions): after the reload the
    logout button (key ``logout``, in the sidebar, present even while a phone's sidebar is
    collapsed) is there again and the login form is not. A journey marks the spot with
    ``# RELOAD-MIDWAY`` and calls this.
    """
    page.reload(wait_until="domcontentloaded")
    page.locator(".st-key-logout").wait_for(state="attached", timeout=timeout_ms)
    # the login form's own password field (key login_password), not any password input: the
    # users page has one for a new user's password, drawn a moment after the logout button
    if page.locator(".st-key-login_password").count():
        raise AssertionError("the reload landed on the login form: the session did not resume")


def wait_until(predicate, timeout_s: float = 60.0, what: str = "condition"):
    """Poll *predicate* (each call is a browser round trip) until it returns a truthy value."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")


def settle(page, timeout_ms: float = 60_000) -> None:
    """Wait until the app has finished its run: the script is not running and Streamlit's
    "running" indicator is gone (a click made during a rerun may be dropped by it)."""
    page.wait_for_function(
        "() => document.querySelector('[data-testid=\"stApp\"]')"
        "?.getAttribute('data-test-script-state') === 'notRunning'"
        " && !document.querySelector('[data-testid=\"stStatusWidget\"]')", timeout=timeout_ms)


def watch_text(page, text: str):
    """Start watching *page* for *text*; return a check that says whether it has been shown.

    A message shown for one run only (a notice the next rerun replaces, a toast) may come and
    go between two polls of a busy machine: an observer in the page remembers it.
    """
    page.evaluate(
        """(t) => {
          const seen = (window.__gtSeen = window.__gtSeen || {});
          seen[t] = false;
          const look = () => { if (document.body.textContent.includes(t)) seen[t] = true; };
          new MutationObserver(look).observe(document.body,
            {childList: true, subtree: true, characterData: true});
          look();
        }""", text)
    return lambda: page.evaluate("(t) => Boolean(window.__gtSeen && window.__gtSeen[t])", text)


def organisation_areas() -> gpd.GeoDataFrame:
    """Organisations of the small community: two estates' property companies, their owners'
    committee, a social organisation serving everyone (layer ``organisations``)."""
    west, east = box(LON, LAT, LON + 0.0015, LAT + DY), box(LON + 0.0028, LAT, LON + DX, LAT + DY)
    return gpd.GeoDataFrame(
        {"area_id": ["PM1-A", "PM2-A", "OC1-A", "SO1-A"],
         "org_id": ["PM1", "PM2", "OC1", "SO1"],
         "name": ["桂花苑物业", "丹桂园物业", "桂花苑业委会", "邻里互助社"],
         "org_type": ["property_company", "property_company", "owners_committee",
                      "social_organisation"],
         "services": ["E0101=2 working_hours; P0201", "E0101; E0550=1 working_days", "E0301",
                      ""],
         "working_hours": ["08:00-12:00", "", "", ""],
         "working_days": ["daily", "workdays", "workdays", "workdays"],
         "office_phone": ["0773-5551001", "0773-5551002", "", ""],
         "contact_name": ["王经理", "李经理", "赵主任", "钱社工"],
         "contact_phone": ["13800000001", "13800000002", "13800000003", "13800000004"],
         "valid_from": ["2025-01-01"] * 4, "valid_to": [None] * 4},
        geometry=[west, east, west, box(LON, LAT, LON + DX, LAT + DY)], crs=4326)
