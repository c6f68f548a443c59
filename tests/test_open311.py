"""Open311 GeoReport v2: services and requests in XML and JSON, plain text, imports."""

from __future__ import annotations

import json
import re
import xml.etree.ElementTree as ET

import numpy as np
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


# -- XML (the spec's default) and JSON, plain text, limits ---------------------------------------

W3C = r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(Z|[+-]\d{2}:\d{2})$"


def _items(xml: bytes, root: str, item: str) -> list[ET.Element]:
    assert xml.startswith(b"<?xml version='1.0' encoding='utf-8'?>")
    tree = ET.fromstring(xml)
    assert tree.tag == root
    assert {child.tag for child in tree} <= {item}
    return list(tree)


def test_services_xml_and_json_carry_exactly_the_spec_fields_in_order():
    svcs = open311.services(lang="en")
    items = _items(open311.services_xml(svcs), "services", "service")
    assert len(items) == len(cases.load_categories())
    for el in items:
        assert tuple(child.tag for child in el) == open311.SERVICE_FIELDS
        assert el.findtext("metadata") == "false" and el.findtext("type") == "realtime"
    first = items[0]
    assert first.findtext("service_code") == svcs[0]["service_code"]
    assert first.findtext("service_name") == "Water manhole cover"
    assert json.loads(open311.services_json(svcs)) == svcs
    assert all(tuple(s) == open311.SERVICE_FIELDS for s in svcs)


@pytest.fixture
def reported(store, grid_cells):
    """Three cases: HTML in a description, a 5,000-character one, and a phone in the text."""
    cells = grid_cells.assign(grid_worker=["w1", "w2"])
    common = dict(category="E0101", lon=LON + 0.0005, lat=LAT + 0.0005, source="resident",
                  actor="r1", role="resident", grid_cells=cells, at="2026-03-02T02:00:00Z",
                  reporter={"name": "张三", "phone": "13812345678"})
    cases.report(store, description=HTML, case_id="C-HTML", photos=["http://x/p.jpg"],
                 address="桂花路<b>1</b>号", **common)
    cases.report(store, description="长" * 5000, case_id="C-LONG", **common)
    cases.report(store, description="垃圾很多，请联系13912345678或139-1234-5678，"
                 "身份证450311199001011234", case_id="C-PHONE", **common)
    cases.transition(store, "C-HTML", "file", actor="d1", role="dispatcher",
                     at="2026-03-02T02:30:00Z")
    return store


HTML = ('<p>垃圾 &amp; 杂物<br/>堆在 <a href="javascript:alert(1)">路口</a></p>'
        '<script>alert("x")</script><style>p{}</style><p>已拍照 &lt;3 &#x4e2d;</p>')


def test_requests_xml_has_the_spec_fields_in_order_and_plain_text(reported):
    records = open311.requests(reported.read_cases())
    xml = open311.requests_xml(records)
    items = {el.findtext("service_request_id"): el
             for el in _items(xml, "service_requests", "request")}
    assert set(items) == {"C-HTML", "C-LONG", "C-PHONE"}
    for el in items.values():
        assert tuple(child.tag for child in el) == open311.REQUEST_FIELDS
        assert re.match(W3C, el.findtext("requested_datetime"))
        assert re.match(W3C, el.findtext("updated_datetime"))
        assert el.findtext("status") == "open"
        assert float(el.findtext("lat")) == pytest.approx(LAT + 0.0005)
        assert float(el.findtext("long")) == pytest.approx(LON + 0.0005)
    html = items["C-HTML"]
    assert html.findtext("description") == "垃圾 & 杂物\n堆在 路口\n\n已拍照 <3 中"
    assert html.findtext("address") == "桂花路1号"
    assert html.findtext("requested_datetime") == "2026-03-02T10:00:00+08:00"
    assert re.match(W3C, html.findtext("expected_datetime"))  # filed: the deadline runs
    assert items["C-LONG"].findtext("expected_datetime") == ""  # not filed yet
    assert html.findtext("media_url") == "http://x/p.jpg"
    assert html.findtext("address_id") == ""  # empty, as the spec's examples write it
    long = items["C-LONG"].findtext("description")
    assert len(long) == open311.DESCRIPTION_MAX and long.endswith("…")
    assert items["C-PHONE"].findtext("description") == (
        "垃圾很多，请联系139****5678或139-****-5678，身份证4503**********1234")
    # JSON says the same, with nulls where XML has empty elements
    as_json = json.loads(open311.requests_json(records))
    assert as_json == records
    assert {r["service_request_id"]: r["description"] for r in as_json} == {
        k: el.findtext("description") for k, el in items.items()}
    for blob in (xml, open311.requests_json(records)):
        text = blob.decode("utf-8")
        assert "13812345678" not in text and "张三" not in text  # the reporter, never
        assert "13912345678" not in text and "<script" not in text and "alert" not in text


def test_one_request_is_a_list_of_one_in_both_formats(reported):
    records = open311.requests(reported.read_cases())
    [one] = [r for r in records if r["service_request_id"] == "C-HTML"]
    [el] = _items(open311.requests_xml([one]), "service_requests", "request")
    assert el.findtext("service_request_id") == "C-HTML"
    assert json.loads(open311.requests_json([one])) == [one]


def test_serialisers_take_plain_frames_with_timestamps_and_missing_fields():
    frame = pd.DataFrame({
        "service_request_id": ["R1"], "status": ["closed"],
        "requested_datetime": [pd.Timestamp("2026-03-02T02:00:00.123Z")],
        "lat": [np.float64(25.08)], "long": [np.nan], "description": ["<i>ok</i>"],
        "reporter": ["13812345678"],
    })
    [el] = _items(open311.requests_xml(frame), "service_requests", "request")
    assert tuple(child.tag for child in el) == open311.REQUEST_FIELDS
    assert el.findtext("requested_datetime") == "2026-03-02T10:00:00+08:00"
    assert (el.findtext("description"), el.findtext("long")) == ("ok", "")
    [rec] = json.loads(open311.requests_json(frame))
    assert list(rec) == list(open311.REQUEST_FIELDS) and rec["long"] is None
    assert b"13812345678" not in open311.requests_json(frame)


@pytest.mark.parametrize(("given", "expected"), [
    ("plain text", "plain text"),
    ("a < b and c > d, A&B", "a < b and c > d, A&B"),
    ("x<y", "x<y"),
    ("line 1<br>line 2", "line 1\nline 2"),
    ("<p>one</p><p>two</p>", "one\n\ntwo"),
    ("<script>alert(1)</script>ok", "ok"),
    ("&lt;b&gt;bold&lt;/b&gt; &amp;&nbsp;&#20013;", "<b>bold</b> & 中"),
    ("  lots   of\tspace \r\n\r\n\r\n\r\nend  ", "lots of space\n\nend"),
    ("bell\x07 and nul\x00 gone", "bell and nul gone"),
    (None, None),
    (float("nan"), None),
])
def test_plain_text(given, expected):
    assert open311.plain_text(given) == expected


def test_plain_text_cuts_at_the_limit():
    assert open311.plain_text("abcdef", limit=4) == "abc…"
    assert open311.plain_text("abcd", limit=4) == "abcd"


def test_write_file_picks_the_format_and_refuses_others(tmp_path):
    svcs = open311.services()
    xml = open311.write_file(tmp_path / "services.xml", "services", svcs)
    assert ET.parse(xml).getroot().tag == "services"
    js = open311.write_file(tmp_path / "services.json", "services", svcs)
    assert json.loads(js.read_text(encoding="utf-8")) == svcs
    forced = open311.write_file(tmp_path / "out.txt", "services", svcs, format="xml")
    assert forced.read_bytes() == xml.read_bytes()
    with pytest.raises(ValidationError, match=r"\.xml or \.json"):
        open311.write_file(tmp_path / "services.csv", "services", svcs)
    with pytest.raises(ValidationError, match="format"):
        open311.write_file(tmp_path / "s.xml", "services", svcs, format="yaml")
    with pytest.raises(ValidationError, match="requests"):
        open311.write_file(tmp_path / "s.xml", "cases", svcs)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.txt", "services.json",
                                                         "services.xml"]


def test_text_made_plain_once_is_not_taken_for_markup_again():
    frame = pd.DataFrame({"service_request_id": ["R1"],
                          "description": ["写成 &lt;b&gt;粗体&lt;/b&gt; 的字"]})
    records = open311.requests_xml(frame)
    [el] = _items(records, "service_requests", "request")
    assert el.findtext("description") == "写成 <b>粗体</b> 的字"
    # records of this module go to either format as they are
    once = open311._records(frame, "requests")
    [again] = json.loads(open311.requests_json(once))
    assert again["description"] == "写成 <b>粗体</b> 的字"


def test_nothing_to_export_is_an_empty_list_in_both_formats():
    empty = open311.requests(pd.DataFrame(columns=["id", "status", "service_code"]))
    assert empty == [] and json.loads(open311.requests_json(empty)) == []
    assert _items(open311.requests_xml(empty), "service_requests", "request") == []


def test_control_characters_anywhere_still_make_well_formed_xml():
    [el] = _items(open311.requests_xml([{"service_request_id": "R\x01-1",
                                         "media_url": "http://x/\x0bp.jpg"}]),
                  "service_requests", "request")
    assert (el.findtext("service_request_id"), el.findtext("media_url")) == (
        "R-1", "http://x/p.jpg")


def test_export_command_writes_xml_or_json_by_the_file_name(tmp_path, capsys):
    from scripts import export

    xml, js = tmp_path / "services.xml", tmp_path / "services.json"
    assert export.main(["open311", "services", "--out", str(xml)]) == 0
    assert export.main(["open311", "services", "--out", str(js), "--lang", "en"]) == 0
    items = _items(xml.read_bytes(), "services", "service")
    assert len(items) == len(json.loads(js.read_text(encoding="utf-8")))
    assert export.main(["open311", "services", "--out", str(tmp_path / "s.csv")]) == 2
    assert ".xml or .json" in capsys.readouterr().err
    assert not (tmp_path / "s.csv").exists()


def test_an_xml_export_imports_back_as_the_same_cases(reported, grid_cells):
    exported = open311.requests(reported.read_cases())
    back = open311.read_records(open311.requests_xml(exported), "requests")
    # XML holds text: the same values as JSON, empty for null or ""
    assert back == [{k: None if v in (None, "") else str(v) for k, v in r.items()}
                    for r in open311.read_records(open311.requests_json(exported), "requests")]
    assert {r["lat"] for r in back} == {str(round(LAT + 0.0005, 7))}
    renamed = [dict(r, service_request_id="X-" + r["service_request_id"]) for r in back]
    cells = grid_cells.assign(grid_worker=["w1", "w2"])
    created = open311.import_requests(reported, renamed, actor="sync", grid_cells=cells)
    assert sorted(created) == ["X-C-HTML", "X-C-LONG", "X-C-PHONE"]
    html = reported.get_case("X-C-HTML")
    assert html["description"] == "垃圾 & 杂物\n堆在 路口\n\n已拍照 <3 中"
    assert pd.Timestamp(html["requested_at"]) == pd.Timestamp("2026-03-02T02:00:00Z")


@pytest.mark.parametrize(("data", "match"), [
    (b'<?xml version="1.0"?><!DOCTYPE x [<!ENTITY a "b">]><service_requests/>', "DOCTYPE"),
    (b"<service_requests><request>", "well-formed"),
    (b"<services/>", "expected <service_requests>"),
    (b'{"service_request_id": "1"}', "list of objects"),
    (b"hello", "XML or JSON"),
])
def test_read_records_refuses_what_is_not_georeport(data, match):
    with pytest.raises(ValidationError, match=match):
        open311.read_records(data, "requests")


def test_a_latitude_that_is_not_a_number_is_refused():
    with pytest.raises(ValidationError, match="lat must be a number"):
        open311.requests_xml([{"service_request_id": "R1", "lat": "north"}])


def test_a_number_at_the_cut_is_masked_whole():
    text = "长" * (open311.DESCRIPTION_MAX - 5) + "13812345678"
    [rec] = open311.requests(pd.DataFrame({"id": ["R1"], "description": [text],
                                           "status": ["filed"], "service_code": ["E0101"]}))
    assert rec["description"].endswith("138*…") and "1234" not in rec["description"]
