"""The HTTP service over real HTTP (uvicorn in a thread, httpx) on both stores.

Every endpoint, each role's view (masked for roles without access, full and audited for those
with), keys refused and rate-limited, tokens, problem details, the OpenAPI document, and GDAL's
OAPIF driver reading the collections.
"""

from __future__ import annotations

import json
import logging
import shutil
import subprocess
import time
import uuid

import geopandas as gpd
import httpx
import pandas as pd
import pytest
from shapely.geometry import box

from tests.conftest import LAT, LON, STORE_KINDS, D
from tests.served import Served, running
from tests.sessions import PASSWORD, store_users
from twin.api.app import ApiSettings, create_app
from twin.schema import ALARMS
from twin.store import open_store
from twin.trust import User
from twin.trust.apikeys import create_key, revoke_key

PHONE = "13812345678"
USERS = {
    "admin": User("adm", "admin"),
    "official": User("off", "official"),
    "dispatcher": User("dis", "dispatcher"),
    "grid_worker": User("gw1", "grid_worker", grids=("R01",)),
    "planner": User("pla", "planner"),
    "resident": User("res", "resident", resident_id="P3", building_code="B3"),
}
NOW = pd.Timestamp("2026-06-01T08:00:00Z")


def _layers():
    cells = gpd.GeoDataFrame({
        "grid_code": ["45031100100101", "45031100100102"], "county_code": ["450311"] * 2,
        "street_code": ["001"] * 2, "community_code": ["001"] * 2, "sequence": ["01", "02"],
        "name": ["一网格", "二网格"], "resp_grid_id": ["R01", "R02"],
        "management_level": ["A", "B"], "grid_worker": ["gw1", "gw2"],
        "grid_worker_phone": [PHONE, "13900002222"],
    }, geometry=[box(LON, LAT, LON + D, LAT + D), box(LON + D, LAT, LON + 2 * D, LAT + D)],
        crs=4326)
    n = 25  # a row of small footprints, west to east, across both grids
    step = 2 * D / n
    buildings = gpd.GeoDataFrame({
        "building_code": [f"B{i}" for i in range(1, n + 1)],
        "name": [f"{i}栋" for i in range(1, n + 1)],
        "use": ["residential" if i % 5 else "commercial" for i in range(1, n + 1)],
        "floors": [6 + i % 12 for i in range(1, n + 1)],
        "height_m": [3.0 * (6 + i % 12) for i in range(1, n + 1)],
        "households": [24] * n,
        "grid_code": ["45031100100101" if i * step < D else "45031100100102" for i in range(n)],
        "resp_grid_id": ["R01" if i * step < D else "R02" for i in range(n)],
        "community_code": ["001"] * n,
    }, geometry=[box(LON + i * step + step * 0.1, LAT + 0.0004, LON + i * step + step * 0.8,
                     LAT + 0.0005) for i in range(n)], crs=4326)
    residents = pd.DataFrame({
        "resident_id": ["P1", "P2", "P3"], "building_code": ["B1", "B2", "B23"],
        "name": ["张三", "欧阳娜娜", "李四"], "phone": [PHONE, "13700001234", "13600005678"],
        "id_number": ["450311199001011234", "45031119850202222X", "450311197003033333"],
        "household_size": [3, 2, 4], "tags": ["独居老人", None, None],
    })
    return cells, buildings, residents


def _alarm(i: int, grid: str, minutes_ago: float) -> dict:
    opened = NOW - pd.Timedelta(minutes=minutes_ago)
    return {
        "id": f"smoke/S{i}/{opened:%Y%m%dT%H%M%S}", "rule_id": "smoke", "source_id": f"S{i}",
        "source_kind": "sensor", "status": "open", "severity": "critical", "opened_at": opened,
        "updated_at": opened, "resolved_at": None, "property": "smoke", "value": 1.0,
        "lon": LON + (0.0005 if grid.endswith("01") else 0.0015), "lat": LAT + 0.0005,
        "grid_code": grid, "resp_grid_id": "R01" if grid.endswith("01") else "R02",
        "community_code": "001", "street_code": "001", "building_code": None, "lot_id": None,
        "case_id": None, "data": json.dumps({"name_zh": "烟感报警", "name_en": "smoke alarm"}),
    }


@pytest.fixture(scope="module", params=STORE_KINDS)
def served(request, tmp_path_factory):
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("TWIN_ARGON2_TIME_COST", "1")
        mp.setenv("TWIN_ARGON2_MEMORY_KIB", "1024")
        if request.param == "embedded":
            store = open_store(tmp_path_factory.mktemp("api") / "twin.gpkg")
        else:
            store = open_store(request.getfixturevalue("postgis_url"),
                               schema=f"t_{uuid.uuid4().hex[:10]}", drop_schema_on_close=True)
        cells, buildings, residents = _layers()
        store.write_layer("grid_cells", cells, actor="t", source="t")
        store.write_layer("buildings", buildings.iloc[:20], actor="t", source="t")  # version 1
        store.write_layer("buildings", buildings, actor="t", source="t")  # version 2: 25
        store.write_layer("residents", residents, actor="t", source="t")
        store.put_rows(ALARMS, pd.DataFrame([_alarm(1, "45031100100101", 30),
                                             _alarm(2, "45031100100102", 600)]))
        store_users(store, *USERS.values())
        keys = {role: create_key(store, u.username, label="tests", actor="tests")[0]
                for role, u in USERS.items()}
        keys["limited"] = create_key(store, "pla", rate_per_min=3, actor="tests")[0]
        app = create_app(store, settings=ApiSettings(cors_origins=("http://gis.example",),
                                                     max_limit=50))
        try:
            with running(app) as base:
                yield Served(request.param, base, store, keys)
        finally:
            store.close()


def audit(store, action: str) -> pd.DataFrame:
    log = store.read_audit()
    return log.loc[log["action"] == action]


# -- health, landing, conformance, OpenAPI ------------------------------------------------------


def test_health_readiness_landing_and_conformance(served):
    assert served.get("/healthz").json() == {"status": "ok"}
    assert served.get("/readyz").json()["status"] == "ready"
    landing = served.get("/ogc").json()
    rels = {link["rel"]: link["href"] for link in landing["links"]}
    assert rels["service-desc"].endswith("/ogc/api") and rels["data"].endswith("/collections")
    conf = served.get("/ogc/conformance").json()["conformsTo"]
    assert "http://www.opengis.net/spec/ogcapi-features-2/1.0/conf/crs" in conf


def test_the_openapi_document_is_valid(served):
    from openapi_spec_validator import validate

    doc = served.get("/ogc/api").json()
    validate(doc)
    assert "/ogc/collections/{cid}/items" in doc["paths"]
    params = {p["name"] for p in doc["paths"]["/ogc/collections/{cid}/items"]["get"]["parameters"]}
    assert {"bbox", "bbox-crs", "datetime", "limit", "offset", "crs", "version", "at"} <= params
    assert set(doc["components"]["securitySchemes"]) == {"apiKeyHeader", "apiKeyQuery",
                                                         "bearerToken"}


# -- what each caller sees ----------------------------------------------------------------------


def test_anonymous_sees_only_public_collections_without_personal_data(served):
    ids = [c["id"] for c in served.get("/ogc/collections").json()["collections"]]
    assert "buildings" in ids and "grid_cells" in ids
    assert not {"residents", "cases", "alarms", "events"} & set(ids)
    cells = served.get("/ogc/collections/grid_cells/items").json()
    assert cells["numberReturned"] == 2
    assert all("grid_worker_phone" not in f["properties"] for f in cells["features"])
    assert served.get("/ogc/collections/residents/items").status_code == 404


def test_each_role_sees_what_the_library_allows_and_reads_are_audited_as_the_key_owner(served):
    def phones(role):
        body = served.get("/ogc/collections/grid_cells/items", role=role).json()
        return [f["properties"].get("grid_worker_phone") for f in body["features"]]

    before = len(audit(served.store, "personal.read"))
    assert phones("admin")[0] == PHONE  # full, audited under the key's owner
    shown = audit(served.store, "personal.read").iloc[before:]
    assert list(shown["actor"]) == ["adm"] and "grid_cells" in shown.iloc[0]["target"]
    assert phones("planner")[0] == "138****5678"  # masked, nothing to audit
    assert len(audit(served.store, "personal.read")) == before + 1

    def residents(role):
        response = served.get("/ogc/collections/residents/items", role=role)
        assert response.status_code == 200, response.text
        return [f["properties"] for f in response.json()["features"]]

    before = len(audit(served.store, "residents.read"))
    mine = residents("grid_worker")  # R01: buildings B1…B12 → P1, P2 in full
    assert [(r["resident_id"], r["phone"]) for r in mine] == [("P1", PHONE),
                                                              ("P2", "13700001234")]
    assert [r["name"] for r in residents("admin")] == ["张*", "欧***", "李*"]
    assert [r["resident_id"] for r in residents("resident")] == ["P3"]
    counts = residents("official")
    assert {r["building_code"]: r["households"] for r in counts} == {"B1": 1, "B2": 1, "B23": 1}
    assert "phone" not in counts[0]
    reads = audit(served.store, "residents.read").iloc[before:]
    assert list(reads["actor"]) == ["gw1", "adm", "res"]  # counts are not personal reads
    collections = {c["id"] for c in served.get("/ogc/collections", role="dispatcher")
                   .json()["collections"]}
    assert {"cases", "alarms", "events", "residents"} <= collections
    resident_sees = {c["id"] for c in served.get("/ogc/collections", role="resident")
                     .json()["collections"]}
    assert "alarms" not in resident_sees and "residents" in resident_sees


def test_alarms_by_role_and_datetime(served):
    body = served.get("/ogc/collections/alarms/items", role="dispatcher").json()
    assert body["numberMatched"] == 2 and body["features"][0]["geometry"]["type"] == "Point"
    mine = served.get("/ogc/collections/alarms/items", role="grid_worker").json()
    assert [f["properties"]["grid_code"] for f in mine["features"]] == ["45031100100101"]
    since = (NOW - pd.Timedelta(hours=1)).isoformat().replace("+00:00", "Z")
    recent = served.get("/ogc/collections/alarms/items", role="dispatcher",
                        params={"datetime": f"{since}/.."}).json()
    assert recent["numberMatched"] == 1
    until = served.get("/ogc/collections/alarms/items", role="dispatcher",
                       params={"datetime": f"../{since}"}).json()
    assert until["numberMatched"] == 1
    assert served.get("/ogc/collections/alarms/items", role="resident").status_code == 404


# -- items: bbox, paging, filters, CRS, versions -------------------------------------------------


def test_a_bbox_page_with_paging_links_and_counts(served):
    west = f"{LON},{LAT},{LON + D * 0.999},{LAT + D}"  # the first grid
    first = served.get("/ogc/collections/buildings/items", params={"bbox": west, "limit": 5})
    assert first.headers["content-type"].startswith("application/geo+json")
    assert first.headers["Content-Crs"] == "<http://www.opengis.net/def/crs/OGC/1.3/CRS84>"
    body = first.json()
    matched = body["numberMatched"]
    assert matched == 13 and body["numberReturned"] == 5  # B1…B13 reach into it
    assert [f["id"] for f in body["features"]] == ["B1", "B10", "B11", "B12", "B13"]
    links = {link["rel"]: link["href"] for link in body["links"]}
    assert "prev" not in links and "offset=5" in links["next"]
    seen = [f["id"] for f in body["features"]]
    while "next" in links:
        page = httpx.get(links["next"], timeout=30).json()
        seen += [f["id"] for f in page["features"]]
        links = {link["rel"]: link["href"] for link in page["links"]}
        assert "prev" in links
    assert len(seen) == len(set(seen)) == matched
    everything = served.get("/ogc/collections/buildings/items", params={"limit": 50}).json()
    assert everything["numberMatched"] == 25 and everything["layerVersion"] == 2


def test_property_filters_versions_and_single_items(served):
    shops = served.get("/ogc/collections/buildings/items",
                       params={"use": "commercial", "limit": 50}).json()
    assert sorted(f["id"] for f in shops["features"]) == ["B10", "B15", "B20", "B25", "B5"]
    floors = served.get("/ogc/collections/buildings/items", params={"floors": "7"}).json()
    assert [f["id"] for f in floors["features"]] == ["B1", "B13", "B25"]
    old = served.get("/ogc/collections/buildings/items", params={"version": 1, "limit": 50})
    assert old.json()["numberMatched"] == 20 and old.headers["X-Twin-Layer-Version"] == "1"
    created = served.store.layer_versions("buildings")[0].created_at
    at = served.get("/ogc/collections/buildings/items",
                    params={"at": created.isoformat(), "limit": 50}).json()
    assert at["layerVersion"] == 1
    one = served.get("/ogc/collections/buildings/items/B3")
    assert one.status_code == 200 and one.json()["properties"]["name"] == "3栋"
    missing = served.get("/ogc/collections/buildings/items/B25", params={"version": 1})
    assert missing.status_code == 404
    assert missing.json()["type"].endswith("unknown-feature")


def test_crs_cgcs2000_and_epsg4326_are_latitude_first(served):
    plain = served.get("/ogc/collections/buildings/items/B1").json()["geometry"]["coordinates"]
    for uri in ("http://www.opengis.net/def/crs/EPSG/0/4490",
                "http://www.opengis.net/def/crs/EPSG/0/4326"):
        response = served.get("/ogc/collections/buildings/items/B1", params={"crs": uri})
        assert response.headers["Content-Crs"] == f"<{uri}>"
        lat, lon = response.json()["geometry"]["coordinates"][0][0]
        assert abs(lon - plain[0][0][0]) < 1e-6 and abs(lat - plain[0][0][1]) < 1e-6
    # a bbox in latitude-first axes (bbox-crs) selects the same buildings
    crs84 = served.get("/ogc/collections/buildings/items",
                       params={"bbox": f"{LON},{LAT},{LON + D / 2},{LAT + D}"}).json()
    latlon = served.get("/ogc/collections/buildings/items", params={
        "bbox": f"{LAT},{LON},{LAT + D},{LON + D / 2}",
        "bbox-crs": "http://www.opengis.net/def/crs/EPSG/0/4490"}).json()
    assert crs84["numberMatched"] == latlon["numberMatched"] > 0


# -- problems ------------------------------------------------------------------------------------


ITEMS = "/ogc/collections/buildings/items"


@pytest.mark.parametrize("path, params, kind, status, lang", [
    (ITEMS, {"bbox": "1,2,3"}, "bad-bbox", 400, "zh-CN"),
    (ITEMS, {"bbox": "110.3,25,110.2,25.1"}, "bad-bbox", 400, "en"),
    ("/ogc/collections/nowhere/items", {}, "unknown-collection", 404, "zh-CN"),
    (ITEMS, {"datetime": "yesterday"}, "bad-datetime", 400, "en"),
    (ITEMS, {"datetime": "2026-02-01/2026-01-01"}, "bad-datetime", 400, "zh-CN"),
    (ITEMS, {"limit": 51}, "oversized-page", 400, "en"),
    (ITEMS, {"crs": "EPSG:3857"}, "bad-crs", 400, "zh-CN"),
    (ITEMS, {"colour": "red"}, "bad-parameter", 400, "en"),
    (ITEMS, {"limit": "many"}, "bad-parameter", 400, "zh-CN"),
])
def test_bad_input_gets_problem_details_in_the_callers_language(served, path, params, kind,
                                                                status, lang):
    from twin.i18n import t

    accept = {"zh-CN": "zh-CN,zh;q=0.9,en;q=0.5", "en": "en-GB,en;q=0.9,zh;q=0.1"}[lang]
    response = served.get(path, params=params, headers={"Accept-Language": accept})
    assert response.status_code == status
    assert response.headers["content-type"] == "application/problem+json"
    assert response.headers["Content-Language"] == lang
    body = response.json()
    assert body["type"].endswith(kind) and body["status"] == status
    assert body["title"] == t(f"api.problem.{kind}.title", lang)


def test_a_malformed_json_body_is_a_problem(served):
    response = httpx.post(served.base + "/auth/token", content=b"{not json",
                          headers={"Content-Type": "application/json",
                                   "Accept-Language": "en"}, timeout=30)
    assert response.status_code == 400
    assert response.json()["type"].endswith("malformed-body")


# -- keys, tokens, limits, logs, CORS -------------------------------------------------------------


def test_unknown_and_revoked_keys_are_refused_never_read_as_the_public(served):
    forged = served.keys["planner"][:-4] + "AAAA"
    for key in ("gtk_nope_nope", forged, "not a key"):
        response = served.get("/ogc/collections", headers={"X-API-Key": key})
        assert response.status_code == 401 and response.json()["type"].endswith("key-refused")
        assert response.headers["WWW-Authenticate"].startswith("Bearer")
    text, record = create_key(served.store, "pla", actor="tests")
    assert served.get("/ogc/collections", params={"api_key": text}).status_code == 200
    revoke_key(served.store, record.key_id, actor="tests")
    assert served.get("/ogc/collections", params={"api_key": text}).status_code == 401


def test_a_key_past_its_rate_is_told_when_to_come_back(served):
    codes = [served.get("/ogc", role="limited").status_code for _ in range(4)]
    assert codes == [200, 200, 200, 429]
    limited = served.get("/ogc", role="limited")
    assert limited.status_code == 429 and int(limited.headers["Retry-After"]) >= 1
    assert limited.json()["type"].endswith("rate-limited")


def test_tokens_for_a_key_or_a_password_act_as_their_user(served):
    by_key = httpx.post(served.base + "/auth/token", headers={"X-API-Key": served.keys["admin"]},
                        json={}, timeout=30)
    assert by_key.status_code == 200, by_key.text
    bearer = {"Authorization": f"Bearer {by_key.json()['access_token']}"}
    who = served.get("/auth/whoami", headers=bearer).json()
    assert (who["username"], who["via"]) == ("adm", "token")
    by_password = httpx.post(served.base + "/auth/token", timeout=30,
                             json={"username": "dis", "password": PASSWORD})
    token = by_password.json()["access_token"]
    assert served.get("/auth/whoami", headers={"Authorization": f"Bearer {token}"}
                      ).json()["role"] == "dispatcher"
    wrong = httpx.post(served.base + "/auth/token", timeout=30,
                       json={"username": "dis", "password": "wrong-password"})
    assert wrong.status_code == 403
    tampered = served.get("/auth/whoami", headers={"Authorization": f"Bearer {token[:-2]}xx"})
    assert tampered.status_code == 401


def test_access_log_is_one_json_line_per_request_with_the_owner_never_the_key(served, caplog):
    with caplog.at_level(logging.INFO, logger="twin.api.access"):
        served.get("/ogc/collections", role="planner")
        served.get("/ogc/collections", params={"api_key": served.keys["admin"]})
        deadline = time.monotonic() + 5
        while len(caplog.records) < 2 and time.monotonic() < deadline:
            time.sleep(0.01)
    lines = [json.loads(r.getMessage()) for r in caplog.records if r.name == "twin.api.access"]
    assert [(x["path"], x["status"], x["owner"]) for x in lines[-2:]] == [
        ("/ogc/collections", 200, "pla"), ("/ogc/collections", 200, "adm")]
    assert all(isinstance(x["ms"], float) for x in lines)
    assert not any(key in caplog.text for key in served.keys.values())


def test_cors_answers_only_the_configured_origin(served):
    ok = served.get("/ogc", headers={"Origin": "http://gis.example"})
    assert ok.headers.get("access-control-allow-origin") == "http://gis.example"
    other = served.get("/ogc", headers={"Origin": "http://evil.example"})
    assert "access-control-allow-origin" not in other.headers


# -- a desktop GIS client: GDAL's OAPIF driver ---------------------------------------------------


def test_gdal_oapif_lists_and_reads_the_collections(served):
    ogrinfo = shutil.which("ogrinfo") or "/usr/bin/ogrinfo"
    url = f"OAPIF:{served.base}/ogc"
    listing = subprocess.run([ogrinfo, "-ro", "-so", url], capture_output=True, text=True,
                             timeout=60)
    assert listing.returncode == 0, listing.stderr
    assert "buildings" in listing.stdout and "grid_cells" in listing.stdout
    assert "residents" not in listing.stdout  # the public's list
    summary = subprocess.run([ogrinfo, "-ro", "-so", url, "buildings"], capture_output=True,
                             text=True, timeout=60)
    assert summary.returncode == 0, summary.stderr
    assert "Feature Count: 25" in summary.stdout
    # a key in the connection string: every link the client follows carries it
    keyed = f"{url}?api_key={served.keys['grid_worker']}"
    alarms = subprocess.run([ogrinfo, "-ro", "-so", keyed, "alarms"], capture_output=True,
                            text=True, timeout=60)
    assert "Feature Count: 1" in alarms.stdout, alarms.stdout + alarms.stderr  # their grid only
    residents = subprocess.run([ogrinfo, "-ro", "-q", keyed, "residents"], capture_output=True,
                               text=True, timeout=60)
    assert PHONE in residents.stdout and "13600005678" not in residents.stdout
