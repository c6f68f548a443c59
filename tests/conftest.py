"""Shared fixtures: a store parametrised over both implementations, tiny hand-built layers."""

from __future__ import annotations

import uuid

import geopandas as gpd
import pandas as pd
import pytest
from shapely.geometry import Point, Polygon, box

from tests.services import POSTGIS_URL, missing
from twin.store import open_store

STORE_KINDS = ["embedded", "postgis"]


@pytest.fixture(autouse=True)
def cheap_hashes(monkeypatch):
    """Lighter argon2 parameters in tests (production keeps RFC 9106's: see docs/trust.md)."""
    monkeypatch.setenv("TWIN_ARGON2_TIME_COST", "1")
    monkeypatch.setenv("TWIN_ARGON2_MEMORY_KIB", "1024")


@pytest.fixture(scope="module")
def chromium():
    """The machine's headless Chromium through Playwright (one per test module: a module that
    drives its own sync Playwright, as the wall's does, must not find another running)."""
    from tests.browser import CHROMIUM_ARGS
    from tests.services import chromium_path

    path = chromium_path()
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        missing("Playwright", "pip install playwright (never `playwright install`)")
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=path, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


@pytest.fixture(scope="session")
def postgis_url() -> str:
    """The PostGIS test database URL, after checking that it answers and has PostGIS."""
    import sqlalchemy as sa

    try:
        engine = sa.create_engine(POSTGIS_URL)
        with engine.connect() as conn:
            conn.execute(sa.text("SELECT postgis_version()"))
        engine.dispose()
    except Exception as exc:  # any failure to reach it means the service is missing
        missing("PostGIS", f"{POSTGIS_URL.split('@')[-1]}: {str(exc).splitlines()[0]}; "
                "run `make test` (it installs and starts it as root)")
    return POSTGIS_URL


@pytest.fixture(scope="session", autouse=True)
def audit_dir(tmp_path_factory):
    """Keep the audit key and anchored heads of the test stores out of the project's data/."""
    import os

    folder = tmp_path_factory.mktemp("audit")
    before = os.environ.get("TWIN_AUDIT_DIR")
    os.environ["TWIN_AUDIT_DIR"] = str(folder)
    yield folder
    if before is None:
        os.environ.pop("TWIN_AUDIT_DIR", None)
    else:
        os.environ["TWIN_AUDIT_DIR"] = before


def _open(kind: str, tmp_path, request):
    if kind == "embedded":
        return open_store(tmp_path / "twin.gpkg")
    url = request.getfixturevalue("postgis_url")
    return open_store(url, schema=f"t_{uuid.uuid4().hex[:10]}", drop_schema_on_close=True)


@pytest.fixture(params=STORE_KINDS)
def store(request, tmp_path):
    """A fresh, empty store of each kind."""
    s = _open(request.param, tmp_path, request)
    yield s
    s.close()


@pytest.fixture(params=STORE_KINDS)
def store_factory(request, tmp_path):
    """Open a second connection to the same store (for concurrency tests)."""
    opened = []
    first = _open(request.param, tmp_path, request)
    opened.append(first)

    def again():
        if request.param == "embedded":
            s = open_store(first.url)
        else:
            s = open_store(POSTGIS_URL, schema=first.schema)
        opened.append(s)
        return s

    yield first, again
    for s in reversed(opened):
        s.close()


@pytest.fixture(scope="session")
def generated_cases() -> pd.DataFrame:
    """A few thousand generated cases with every status, late and on-time steps, reworks …"""
    from datetime import UTC, datetime

    from twin.scenario import make_cases, make_scenario

    sc = make_scenario("community", 0, residents=False, spaces=False)
    cases = make_cases(sc, 3000, seed=11, start=datetime(2025, 12, 20, tzinfo=UTC),
                       end=datetime(2026, 3, 10, tzinfo=UTC))
    # holes the indicators must survive: no grid, no filing deadline, a step after as-of
    cases.loc[cases.index[:40], "grid_code"] = None
    cases.loc[cases.index[40:80], "file_deadline"] = pd.NaT
    return cases


LON, LAT = 110.29, 25.08
D = 0.001  # about 100 m


@pytest.fixture
def grid_cells() -> gpd.GeoDataFrame:
    """Two unit grids side by side, in two responsibility grids."""
    return gpd.GeoDataFrame(
        {
            "grid_code": ["45031100100101", "45031100100102"],
            "county_code": ["450311"] * 2,
            "street_code": ["001"] * 2,
            "community_code": ["001"] * 2,
            "sequence": ["01", "02"],
            "name": ["一网格", "二网格"],
            "resp_grid_id": ["R01", "R02"],
            "management_level": ["A", "B"],
        },
        geometry=[box(LON, LAT, LON + D, LAT + D), box(LON + D, LAT, LON + 2 * D, LAT + D)],
        crs=4326,
    )


@pytest.fixture
def buildings() -> gpd.GeoDataFrame:
    """Three small footprints with Chinese names."""
    def fp(x: float) -> Polygon:
        return box(LON + x, LAT + 0.0004, LON + x + 0.0003, LAT + 0.0005)

    return gpd.GeoDataFrame(
        {
            "building_code": ["B1", "B2", "B3"],
            "name": ["1栋", "2栋", "桂花苑3栋"],
            "use": ["residential"] * 3,
            "floors": [6, 11, 18],
            "height_m": [18.0, 33.0, 54.0],
            "households": [24, 66, 108],
        },
        geometry=[fp(0.0001), fp(0.0005), fp(0.0013)],
        crs=4326,
    )


@pytest.fixture
def cameras() -> gpd.GeoDataFrame:
    return gpd.GeoDataFrame(
        {"camera_id": ["C1"], "heading_deg": [90.0], "fov_deg": [60.0], "range_m": [40.0]},
        geometry=[Point(LON + 0.0002, LAT + 0.0002)],
        crs=4326,
    )


def pytest_terminal_summary(terminalreporter):
    """Say how many tests ran on each store, so a run shows that PostGIS was really exercised."""
    counts = {}
    for outcome in ("passed", "failed", "skipped", "error"):
        for report in terminalreporter.stats.get(outcome, []):
            if report.when != "call" and outcome != "skipped":
                continue
            for kind in STORE_KINDS:
                if f"[{kind}" in report.nodeid or f"-{kind}]" in report.nodeid \
                        or f"-{kind}-" in report.nodeid:
                    counts.setdefault(kind, {}).setdefault(outcome, 0)
                    counts[kind][outcome] += 1
    if counts:
        terminalreporter.write_sep("-", "tests per store")
        for kind in STORE_KINDS:
            line = ", ".join(f"{n} {o}" for o, n in sorted(counts.get(kind, {}).items())) or "none"
            terminalreporter.write_line(f"{kind}: {line}")


#: The slowest modules, slowest first (a full run's --durations): run first, so that the two
#: processes of `make test` (pytest-xdist, one module per process at a time) end together
#: instead of one of them finishing a long browser module alone at the end.
SLOW_FIRST = (
    "test_browser_language", "test_browser_casework", "test_browser_wall", "test_browser_roles",
    "test_browser_attacks", "test_browser", "test_browser_planner", "test_browser_orgs",
    "test_browser_volunteers", "test_browser_sessions", "test_security", "test_trust",
    "test_demo", "test_trust_audit", "test_store_postgis", "test_store", "test_make_demo",
    "test_load_layer_cli", "test_feeds_once", "test_api", "test_api_open311",
)


def pytest_collection_modifyitems(items):
    """Order the modules slowest first (stable: tests keep their order within a module)."""
    rank = {name: i for i, name in enumerate(SLOW_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.stem, len(rank)))
