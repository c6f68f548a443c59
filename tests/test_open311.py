from __future__ import annotations

import json

import pandas as pd
import pytest

from tests.conftest import LAT, LON
from twin import cases, open311
from twin.errors import ValidationError


def test_services_list_every_category_with_the_georeport_fields():
    svcs = open311.services()
    assert len(svcs) == len(cases.load_categories())
    garbage = next(s for s in svcs if s["service_code"] == "E0101")
    assert garbage == {"service_code": "E0101", "service_name": "暴露垃圾",
                       "description": garbage["description"], "metadata": False,
                       "type": "realtime", "keywords": "暴露垃圾,Exposed garbage,event",
                       "group": "市容环境"}
    assert open311.services(lang="en")[0]["service_name"] == "Water manhole cover"


def test_requests_round_trip_through_json(store, grid_cells):
    cells = grid_cells.assign(grid_worker=["w1", "w2"])
    c = cases.report(store, category="E0101", lon=LON + 0.0005, lat=LAT + 0.0005,
                     description="垃圾", source="resident", actor="r1", role="resident",
                     grid_cells=cells, at="2026-03-02T02:00:00Z", photos=["http://x/p.jpg"],
                     reporter={"phone": "13812345678"}, address="桂花路1号")
    cases.transition(store, c["id"], "file", actor="d1", role="dispatcher",
                     at="2026-03-02T02:30:00Z")
    exported = open311.requests(store.read_cases())
    [req] = exported
    assert set(req) == set(open311.REQUEST_FIELDS)
    assert (req["status"], req["status_notes"]) == ("open", "已立案")
    assert req["service_name"] == "暴露垃圾"
    assert req["agency_responsible"] == "社区 450311001001"
    assert req["requested_datetime"] == "2026-03-02T10:00:00+08:00"
    assert req["expected_datetime"] is not None and req["media_url"] == "http://x/p.jpg"
    assert "13812345678" not in json.dumps(exported, ensure_ascii=False)
    # import into the same store under new ids, one of them closed
    again = json.loads(json.dumps(exported))
    again[0]["service_request_id"] = "EXT-1"
    closed = dict(again[0], service_request_id="EXT-2", status="closed",
                  updated_datetime="2026-03-03T10:00:00+08:00")
    assert open311.import_requests(store, again + [closed], actor="sync", grid_cells=cells) == [
        "EXT-1", "EXT-2"]
    assert open311.import_requests(store, again, actor="sync") == []  # idempotent
    assert store.get_case("EXT-1")["status"] == "collected"
    ext2 = store.get_case("EXT-2")
    assert ext2["status"] == "closed"
    assert pd.Timestamp(ext2["closed_at"]) == pd.Timestamp("2026-03-03T02:00:00Z")
    assert store.get_case("EXT-1")["grid_code"] == "45031100100101"
    with pytest.raises(ValidationError, match="lacks"):
        open311.import_requests(store, [{"service_request_id": "X"}], actor="sync")


def test_services_import_adds_a_city_category_and_refuses_a_bad_code():
    table = open311.import_services([{"service_code": "E0551", "service_name": "高空抛物"},
                                     {"service_code": "E0101", "service_name": "暴露垃圾"}])
    row = table.loc["E0551"]
    assert (row["name_zh"], row["family"], bool(row["city_extension"])) == (
        "高空抛物", "event", True)
    with pytest.raises(ValidationError, match="new codes need"):
        open311.import_services([{"service_code": "X9", "service_name": "?"}])
