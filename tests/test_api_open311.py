"""Open311 GeoReport v2 over real HTTP on both stores: every endpoint in XML and JSON, posts
located, routed, timed and audited as the key's owner, FixMyStreet's client shape, errors."""

from __future__ import annotations

import asyncio
import json
import xml.etree.ElementTree as ET
from concurrent.futures import ThreadPoolExecutor

import pytest

from tests.conftest import LAT, LON, STORE_KINDS, D
from tests.served import serve

V2 = "/open311/v2"
INSIDE = {"lat": f"{LAT + D * 0.3:.7f}", "long": f"{LON + D * 0.4:.7f}"}  # grid …01
PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 64


@pytest.fixture(scope="module", params=STORE_KINDS)
def served(request, tmp_path_factory):
    url = request.getfixturevalue("postgis_url") if request.param == "postgis" else None
    yield from serve(request.param, tmp_path_factory, url)


def xml(response) -> ET.Element:
    assert response.headers["content-type"].startswith("text/xml"), response.text
    return ET.fromstring(response.content)


def error(response, status: int, fmt: str = "xml") -> str:
    """The description of the spec's single error, after checking its status and code."""
    assert response.status_code == status, response.text
    if fmt == "json":
        (item,) = response.json()
        assert item["code"] == status
        return item["description"]
    root = xml(response)
    assert root.tag == "errors"
    assert root.find("error/code").text == str(status)
    return root.find("error/description").text


def audit(store, action: str):
    log = store.read_audit()
    return log.loc[log["action"] == action]


def test_discovery_services_and_definitions_in_xml_and_json(served):
    root = xml(served.get(f"{V2}/discovery.xml"))
    assert root.find("endpoints/endpoint/specification").text.endswith("GeoReport_v2")
    assert root.find("endpoints/endpoint/url").text == served.base + V2
    doc = served.get(f"{V2}/discovery.json").json()
    assert {"text/xml", "application/json"} <= set(doc["endpoints"][0]["formats"])
    codes = [s.find("service_code").text for s in xml(served.get(f"{V2}/services.xml"))]
    listed = served.get(f"{V2}/services.json", headers={"Accept-Language": "en"}).json()
    assert codes == [s["service_code"] for s in listed] and "E0101" in codes
    assert next(s for s in listed if s["service_code"] == "E0101")["service_name"] \
        == "Exposed garbage"
    definition = xml(served.get(f"{V2}/services/E0101.xml"))
    assert definition.tag == "service_definition"
    assert definition.find("service_code").text == "E0101"
    assert served.get(f"{V2}/services/E0101.json").json() == {"service_code": "E0101",
                                                              "attributes": []}
    assert "no service" in error(served.get(f"{V2}/services/X9999.json"), 404, "json")
    assert "not a GeoReport v2 path" in error(served.get(f"{V2}/tokens/1.xml"), 404)
    assert "end in .xml or .json" in error(served.get(f"{V2}/requests.csv"), 404)


def test_fixmystreet_reads_services_and_posts_a_form_and_reads_the_id_back(served):
    # what FixMyStreet's Open311 client sends: GET services.xml?jurisdiction_id=…, then a
    # form-encoded POST requests.xml with api_key, jurisdiction_id and the report
    assert xml(served.get(f"{V2}/services.xml", params={"jurisdiction_id": "450311001001"}))
    form = {"jurisdiction_id": "450311001001", "api_key": served.keys["partner"],
            "service_code": "E0101", **INSIDE,
            "description": "title: 垃圾堆\n\ndetail: 楼下垃圾 13812345678\n\n"
                           "Submitted via FixMyStreet",
            "email": "li@example.cn", "first_name": "Li", "last_name": "Lei",
            "attribute[easting]": "123", "attribute[size]": "big"}
    before = len(audit(served.store, "case.collect"))
    answer = served.post(f"{V2}/requests.xml", data=form)
    assert answer.status_code == 200, answer.text
    root = xml(answer)
    assert root.tag == "service_requests"
    case_id = root.find("request/service_request_id").text
    assert case_id and "45031100100101" in root.find("request/service_notice").text
    case = served.store.get_case(case_id)
    data = case["data"] if isinstance(case["data"], dict) else json.loads(case["data"])
    # located, routed (an event goes to the territory, the grid's worker), timed, kept
    assert case["grid_code"] == "45031100100101" and case["community_code"] == "450311001001"
    assert case["department"] == "territory:450311001001" and case["assignee"] == "gw1"
    assert case["source"] == "resident" and case["status"] == "collected"
    assert data["deadlines"]["file"] and data["timer"]["stage"] == "file"
    assert data["reporter"]["username"] == "fms" and data["reporter"]["email"] == "li@example.cn"
    assert data["attributes"] == {"easting": "123", "size": "big"}
    rows = audit(served.store, "case.collect")
    assert len(rows) == before + 1
    assert rows.iloc[-1]["actor"] == "fms" and rows.iloc[-1]["target"] == f"case:{case_id}"
    # the partner reads its own request back in full; the public sees it without text
    own = served.get(f"{V2}/requests/{case_id}.xml", role="partner")
    assert xml(own).find("request/service_request_id").text == case_id
    assert "138****5678" in xml(own).find("request/description").text
    public = served.get(f"{V2}/requests/{case_id}.json").json()[0]
    assert public["description"] is None and public["status"] == "open"
    assert public["lat"] != pytest.approx(float(INSIDE["lat"]), abs=1e-7)  # rounded


def test_a_json_post_and_a_photo_upload(served):
    body = {"service_code": "P0101", **INSIDE, "description": "井盖松动",
            "media_url": "https://example.cn/p.jpg"}
    answer = served.post(f"{V2}/requests.json", json=body,
                         headers={"X-API-Key": served.keys["dispatcher"]})
    assert answer.status_code == 200, answer.text
    (item,) = answer.json()
    case = served.store.get_case(item["service_request_id"])
    data = case["data"] if isinstance(case["data"], dict) else json.loads(case["data"])
    assert data["photos"] == ["https://example.cn/p.jpg"]
    upload = served.post(f"{V2}/requests.json", data={**body, "api_key": served.keys["partner"]},
                         files={"media": ("p.png", PNG, "image/png")})
    assert upload.status_code == 200, upload.text
    case = served.store.get_case(upload.json()[0]["service_request_id"])
    data = case["data"] if isinstance(case["data"], dict) else json.loads(case["data"])
    assert data["photos"][0].startswith("photos/") and data["photos"][0].endswith(".png")
    bad = served.post(f"{V2}/requests.json", data={**body, "api_key": served.keys["partner"]},
                      files={"media": ("p.png", b"not an image", "image/png")})
    assert "JPEG, PNG or WebP" in error(bad, 400, "json")


def test_requests_with_the_specs_filters_by_role(served):
    key = {"X-API-Key": served.keys["dispatcher"]}
    def post(code_grid):
        code, grid = code_grid
        return served.post(f"{V2}/requests.json", headers=key,
                           json={"service_code": code, "lat": INSIDE["lat"],
                                 "long": f"{LON + D * (0.5 if grid == 1 else 1.5):.7f}",
                                 "description": f"{code} {grid}"}).json()[0][
            "service_request_id"]

    with ThreadPoolExecutor(3) as pool:  # filed together, ids in the order asked
        made = list(pool.map(post, (("E0101", 1), ("E0102", 2), ("E0101", 2))))
    listed = served.get(f"{V2}/requests.json", role="dispatcher",
                        params={"service_request_id": ",".join(made[:2])}).json()
    assert {r["service_request_id"] for r in listed} == set(made[:2])
    e0102 = served.get(f"{V2}/requests.xml", role="dispatcher",
                       params={"service_code": "E0102", "status": "open"})
    assert [r.find("service_request_id").text for r in xml(e0102)] == [made[1]]
    assert served.get(f"{V2}/requests.json", role="dispatcher",
                      params={"status": "closed"}).json() == []
    window = {"start_date": "2020-01-01T00:00:00+08:00", "end_date": "2020-02-01T00:00:00Z"}
    assert served.get(f"{V2}/requests.json", role="dispatcher", params=window).json() == []
    # a grid worker sees the requests of their grids only (the library's rule)
    mine = {r["service_request_id"] for r in served.get(
        f"{V2}/requests.json", role="grid_worker", params={"service_request_id": ",".join(made)}
    ).json()}
    assert mine == {made[0]}
    reads = audit(served.store, "open311.read")
    assert set(reads["actor"]) >= {"dis", "gw1"}
    assert "W3C" in error(served.get(f"{V2}/requests.xml", params={"start_date": "yesterday"}),
                          400)
    assert "open or closed" in error(served.get(f"{V2}/requests.json",
                                                params={"status": "fixed"}), 400, "json")
    assert "no service request" in error(served.get(f"{V2}/requests/nope.xml"), 404)


def test_keys_are_required_and_bad_ones_refused(served):
    form = {"service_code": "E0101", **INSIDE, "description": "x"}
    assert "api_key" in error(served.post(f"{V2}/requests.xml", data=form), 403)
    refused = served.post(f"{V2}/requests.xml", data={**form, "api_key": "gt_nonsense"})
    assert refused.status_code in (401, 403)
    assert xml(refused).find("error/description").text
    assert served.get(f"{V2}/requests.json", headers={"X-API-Key": "gt_bad"}).status_code \
        in (401, 403)


@pytest.mark.parametrize(("fmt", "content_type", "payload", "says"), [
    ("xml", "application/xml", b"<request><service_code>E0101</service_code>", "malformed XML"),
    ("json", "application/json", b'{"service_code": "E0101",', "malformed JSON"),
    ("json", "application/json", b"[1, 2]", "one object"),
    ("xml", "application/xml", b'<!DOCTYPE r [<!ENTITY x "y">]><r/>', "DOCTYPE"),
])
def test_malformed_bodies_get_the_specs_errors(served, fmt, content_type, payload, says):
    answer = served.post(f"{V2}/requests.{fmt}", content=payload,
                         headers={"Content-Type": content_type,
                                  "X-API-Key": served.keys["partner"]})
    assert says in error(answer, 400, fmt)


def test_bad_fields_places_and_jurisdictions_are_refused_and_nothing_is_stored(served):
    key = {"X-API-Key": served.keys["partner"]}
    before = len(served.store.read_cases())
    outside = served.post(f"{V2}/requests.xml", headers=key,
                          data={"service_code": "E0101", "lat": f"{LAT + 0.01}",
                                "long": f"{LON + D / 2}", "description": "far away"})
    text = error(outside, 400)
    assert "outside every grid" in text and "一网格" in text
    assert "service_code is required" in error(served.post(
        f"{V2}/requests.xml", headers=key, data={**INSIDE}), 400)
    assert "lat is required" in error(served.post(
        f"{V2}/requests.json", headers=key, data={"service_code": "E0101"}), 400, "json")
    assert "X9999" in error(served.post(f"{V2}/requests.xml", headers=key,
                                        data={"service_code": "X9999", **INSIDE}), 400)
    assert "not served here" in error(served.post(
        f"{V2}/requests.xml", headers=key,
        data={"service_code": "E0101", **INSIDE, "jurisdiction_id": "110101001001"}), 404)
    assert len(served.store.read_cases()) == before


def test_posts_arriving_together_are_filed_as_one_batch():
    # a batch costs the store about as much for one post as for thirty: the first post of an
    # idle moment waits a few milliseconds for the others (it was filed alone before, and
    # the rest one batch later)
    from twin.api.open311 import Intake

    sizes = []

    class Recording(Intake):
        def _file(self, items):
            sizes.append(len(items))
            return [f"filed {item}" for item in items]

    async def clients():
        intake = Recording(store=None, limiter=None)

        async def post(i):
            await asyncio.sleep(0.001 * (i % 3))  # within two milliseconds of each other
            return await intake.submit(i)

        return await asyncio.gather(*(post(i) for i in range(12)))

    assert asyncio.run(clients()) == [f"filed {i}" for i in range(12)]
    assert sizes == [12]


def test_clients_answered_together_are_filed_together_again():
    # a server hands the answers of a batch out one after another, and each client's next
    # post costs the event loop time too: the next batch is gathered while posts keep coming
    # (filing what had arrived at once split 32 clients into batches of 11 and 21)
    import time

    from twin.api.open311 import Intake

    sizes = []

    class Recording(Intake):
        def _file(self, items):
            sizes.append(len(items))
            time.sleep(0.01)  # the store's work, in the thread pool
            return [f"filed {item}" for item in items]

    async def clients():
        intake = Recording(store=None, limiter=None)

        async def client(i):
            answers = []
            for round_ in range(3):
                answers.append(await intake.submit((i, round_)))
                await asyncio.sleep(0.0006 * i)  # the answers go out, the next posts come in
            return answers

        return await asyncio.gather(*(client(i) for i in range(24)))

    answers = asyncio.run(clients())
    assert answers[5] == [f"filed {(5, r)}" for r in range(3)]
    assert sizes == [24, 24, 24]


def test_concurrent_posts_are_filed_together_and_none_is_lost(served):
    before_cases = len(served.store.read_cases())
    before_audit = len(audit(served.store, "case.collect"))
    form = {"api_key": served.keys["partner"], "service_code": "E0101", **INSIDE,
            "description": "并发"}
    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(lambda i: served.post(f"{V2}/requests.xml",
                                                      data={**form, "description": f"并发 {i}"}),
                                range(16)))
    assert [a.status_code for a in answers] == [200] * 16
    ids = {xml(a).find("request/service_request_id").text for a in answers}
    assert len(ids) == 16
    assert len(served.store.read_cases()) == before_cases + 16
    assert len(audit(served.store, "case.collect")) == before_audit + 16
    assert served.store.verify_audit() is None  # the batch's rows chain like single ones
