"""SensorThings API (read) over real HTTP on both stores: entities, $filter, $orderby, $top,
$skip, $expand, nextLink paging, FIWARE aliases, the public's view and audited staff reads."""

from __future__ import annotations

import httpx
import pytest

from tests.conftest import STORE_KINDS
from tests.served import READINGS, serve
from twin import sensorthings
from twin.errors import ValidationError

STA = "/sta/v1.1"


@pytest.fixture(scope="module", params=STORE_KINDS)
def served(request, tmp_path_factory):
    url = request.getfixturevalue("postgis_url") if request.param == "postgis" else None
    yield from serve(request.param, tmp_path_factory, url)


def ids(answer: dict) -> list[str]:
    return [e["@iot.id"] for e in answer["value"]]


def test_root_things_locations_datastreams_and_expand(served):
    root = served.get(STA).json()
    assert {v["name"] for v in root["value"]} == set(sensorthings.ENTITY_SETS)
    things = served.get(f"{STA}/Things", role="admin",
                        params={"$expand": "Datastreams,Locations", "$orderby": "@iot.id"}).json()
    assert ids(things) == ["S1", "S2", "S3"]
    s1 = things["value"][0]
    assert {d["@iot.id"] for d in s1["Datastreams"]} == {"S1:pm25", "S1:pm10", "S1:no2",
                                                         "S1:temperature", "S1:battery"}
    assert s1["Locations"][0]["location"]["type"] == "Point"
    assert s1["properties"]["fiware_type"] == "Device"
    assert s1["properties"]["batteryLevel"] == 0.9  # FIWARE alias of battery_level
    assert s1["@iot.selfLink"] == f"{served.base}{STA}/Things('S1')"
    one = served.get(f"{STA}/Datastreams('S1:pm25')", role="admin",
                      params={"$expand": "Thing,ObservedProperty"}).json()
    assert one["Thing"]["@iot.id"] == "S1" and one["ObservedProperty"]["name"] == "pm25"
    assert one["unitOfMeasurement"]["symbol"] == "ug/m3"
    # the FIWARE type names the entity set, its attribute names filter
    low = served.get(f"{STA}/Device", role="admin",
                     params={"$filter": "properties/batteryLevel lt 0.6"}).json()
    assert ids(low) == ["S2", "S3"]


def test_observations_filter_order_top_skip_and_next_links(served):
    pm25 = sorted(((v["pm25"], e) for e, s, _, v in READINGS if "pm25" in v), reverse=True)
    query = {"$filter": "result gt 20 and phenomenonTime ge 2020-01-01T00:00:00Z",
             "$orderby": "result desc", "$top": "2", "$count": "true"}
    first = served.get(f"{STA}/Datastreams('S1:pm25')/Observations", role="admin",
                       params=query).json()
    above = [e for value, e in pm25 if value > 20]
    assert first["@iot.count"] == len(above) == 3
    assert ids(first) == [f"{e}:pm25" for e in above[:2]]
    rest = httpx.get(first["@iot.nextLink"], headers={"X-API-Key": served.keys["admin"]},
                     timeout=60).json()
    assert ids(rest) == [f"{above[2]}:pm25"] and "@iot.nextLink" not in rest
    skip = served.get(f"{STA}/Observations", role="admin",
                      params={"$orderby": "phenomenonTime desc", "$skip": "1",
                              "$top": "1"}).json()
    assert ids(skip) == ["E0:pm10"] or ids(skip) == ["E0:pm25"]
    expanded = served.get(f"{STA}/Datastreams", role="admin",
                          params={"$filter": "@iot.id eq 'S3:occupied'",
                                  "$expand": "Observations($top=1)"}).json()
    (stream,) = expanded["value"]
    assert [o["@iot.id"] for o in stream["Observations"]] == ["E3:occupied"]  # newest first
    assert served.get(f"{STA}/Observations('E3:occupied')", role="admin").json()["result"] == 1


@pytest.mark.parametrize(("path", "params", "status"), [
    ("/Things", {"$filter": "result gt"}, 400),
    ("/Things", {"$filter": "nosuch eq 1"}, 400),
    ("/Things", {"$top": "5000"}, 400),
    ("/Things", {"$orderby": "name sideways"}, 400),
    ("/Things", {"$expand": "Observations"}, 400),
    ("/Widgets", {}, 404),
    ("/Things('nope')", {}, 404),
])
def test_bad_queries_are_problem_details(served, path, params, status):
    answer = served.get(STA + path, params=params)
    assert answer.status_code == status, answer.text
    assert answer.headers["content-type"].startswith("application/problem+json")


def test_the_public_sees_rounded_places_and_no_home_presence_readings(served):
    staff = served.get(f"{STA}/Locations('S2')", role="dispatcher").json()
    public = served.get(f"{STA}/Locations('S2')").json()
    assert staff["location"]["coordinates"] != public["location"]["coordinates"]
    assert public["location"]["coordinates"][0] == pytest.approx(
        staff["location"]["coordinates"][0], abs=0.001)
    assert "S2:door" in ids(served.get(f"{STA}/Datastreams", role="dispatcher").json())
    shown = ids(served.get(f"{STA}/Datastreams").json())
    assert "S2:door" not in shown and "S1:pm25" in shown
    assert "E2:door" not in ids(served.get(f"{STA}/Observations").json())
    assert "ref_building" not in served.get(f"{STA}/Things('S1')").json()["properties"]
    assert served.get(f"{STA}/Things('S1')", role="planner").json()["properties"][
        "ref_building"] == "B1"
    assert served.get(f"{STA}/Datastreams('S2:door')").status_code == 404
    log = served.store.read_audit()
    reads = log.loc[(log["action"] == "personal.read")
                    & log["target"].str.startswith("sensorthings:")]
    assert {"dis", "pla"} <= set(reads["actor"]) and "anonymous" not in set(reads["actor"])


@pytest.mark.parametrize(("text", "message"), [
    ("result eq", "ends too early"), ("(result gt 1", "not closed"),
    ("result like 3", "unknown operator"), ("result gt 1 result", "unexpected"),
    ("phenomenonTime gt 3", "compare phenomenonTime with a time"),
])
def test_filter_errors_say_what_to_write(text, message):
    frame = sensorthings.observations(*_tiny())
    with pytest.raises(ValidationError, match=message):
        sensorthings.apply_filter(frame, text)


def _tiny():
    import pandas as pd

    events = pd.DataFrame({"id": ["E"], "source_id": ["S"], "observed_at": ["2026-01-01T00:00Z"],
                           "received_at": ["2026-01-01T00:00Z"],
                           "payload": ['{"values": {"pm25": 3}}']})
    return events, pd.DataFrame({"@iot.id": ["S:pm25"]})
