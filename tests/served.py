"""A small twin served over real HTTP (uvicorn in a thread) for the Open311 and STA tests."""

from __future__ import annotations

import atexit
import json
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import geopandas as gpd
import httpx
import pandas as pd
from shapely.geometry import Point, box

from tests.browser import free_port
from tests.conftest import LAT, LON, D
from tests.sessions import store_users
from twin.api.app import ApiSettings, create_app
from twin.store import open_store
from twin.trust import User
from twin.trust.apikeys import create_key

USERS = {
    "admin": User("adm", "admin"),
    "dispatcher": User("dis", "dispatcher"),
    "grid_worker": User("gw1", "grid_worker", grids=("R01",)),
    "planner": User("pla", "planner"),
    "partner": User("fms", "resident", display_name="FixMyStreet 桂林", building_code="B1"),
}
NOW = pd.Timestamp.now("UTC").floor("s")


def grid_cells() -> gpd.GeoDataFrame:
    """Two unit grids side by side (community 450311001001), each with its grid worker."""
    return gpd.GeoDataFrame({
        "grid_code": ["45031100100101", "45031100100102"], "county_code": ["450311"] * 2,
        "street_code": ["001"] * 2, "community_code": ["001"] * 2, "sequence": ["01", "02"],
        "name": ["一网格", "二网格"], "resp_grid_id": ["R01", "R02"],
        "management_level": ["A", "B"], "grid_worker": ["gw1", "gw2"],
    }, geometry=[box(LON, LAT, LON + D, LAT + D), box(LON + D, LAT, LON + 2 * D, LAT + D)],
        crs=4326)


def sensors() -> gpd.GeoDataFrame:
    """An air sensor, a door magnet (a home-presence reading) and a parking sensor."""
    return gpd.GeoDataFrame({
        "sensor_id": ["S1", "S2", "S3"], "name": ["空气1", "门磁2", "车位3"],
        "kind": ["air", "door", "parking"], "battery_level": [0.9, 0.5, 0.2],
        "device_state": ["ok", "ok", "low_battery"], "ref_building": ["B1", "B1", None],
    }, geometry=[Point(LON + 0.00021, LAT + 0.00023), Point(LON + 0.00042, LAT + 0.00031),
                 Point(LON + 0.00123, LAT + 0.00052)], crs=4326)


#: (event id, sensor, minutes before NOW, values)
READINGS = [
    ("E0", "S1", 1, {"pm25": 30.0, "pm10": 50.0}), ("E1", "S1", 11, {"pm25": 80.0}),
    ("E2", "S2", 21, {"door": 1}), ("E3", "S3", 31, {"occupied": 1}),
    ("E4", "S1", 41, {"pm25": 12.5, "battery": 0.9}), ("E5", "S3", 51, {"occupied": 0}),
    ("E6", "S1", 61, {"pm25": 55.0}),
]


def events() -> pd.DataFrame:
    at = [NOW - pd.Timedelta(minutes=m) for _, _, m, _ in READINGS]
    return pd.DataFrame({
        "id": [r[0] for r in READINGS], "kind": "obs", "source_id": [r[1] for r in READINGS],
        "observed_at": at, "received_at": [t + pd.Timedelta(seconds=2) for t in at],
        "lon": LON, "lat": LAT, "payload": [json.dumps({"values": r[3]}) for r in READINGS],
    })


@dataclass
class Served:
    kind: str
    base: str
    store: object
    keys: dict[str, str]

    def get(self, path: str, *, role: str | None = None, **kw) -> httpx.Response:
        headers = dict(kw.pop("headers", {}))
        if role is not None:
            headers["X-API-Key"] = self.keys[role]
        return httpx.get(self.base + path, headers=headers, timeout=60, **kw)

    def post(self, path: str, **kw) -> httpx.Response:
        return httpx.post(self.base + path, timeout=60, **kw)


@contextmanager
def running(app) -> Iterator[str]:
    """Serve *app* with uvicorn in a thread on a free local port; yield its base URL."""
    import uvicorn

    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port,
                                           log_level="warning", access_log=False))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started and thread.is_alive() and time.monotonic() < deadline:
        time.sleep(0.02)  # polling for the condition "the server is up"
    assert server.started, "uvicorn did not start"
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)


#: One served twin per store kind for the whole session (the Open311 and SensorThings tests
#: share it: neither depends on what the other writes); stopped when the session ends.
_SERVED: dict[str, Served] = {}


def serve(kind: str, tmp_path_factory, postgis_url: str | None):
    """Yield the session's :class:`Served` twin of *kind* (embedded or postgis) under uvicorn."""
    if kind not in _SERVED:
        starting = _start(kind, tmp_path_factory, postgis_url)
        _SERVED[kind] = next(starting)
        atexit.register(lambda: next(starting, None))
    yield _SERVED[kind]


def _start(kind: str, tmp_path_factory, postgis_url: str | None):
    if kind == "embedded":
        store = open_store(tmp_path_factory.mktemp("served") / "twin.gpkg")
    else:
        store = open_store(postgis_url, schema=f"t_{uuid.uuid4().hex[:10]}",
                           drop_schema_on_close=True)
    store.write_layer("grid_cells", grid_cells(), actor="t", source="t")
    store.write_layer("sensors", sensors(), actor="t", source="t")
    store.append_events(events())
    store_users(store, *USERS.values())
    keys = {role: create_key(store, u.username, label="tests", actor="tests")[0]
            for role, u in USERS.items()}
    app = create_app(store, settings=ApiSettings(rate_per_min=100_000,
                                                 anonymous_rate_per_min=100_000))
    with running(app) as base:
        yield Served(kind, base, store, keys)
