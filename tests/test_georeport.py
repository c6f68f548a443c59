"""The GeoReport v2 server's words, without HTTP: posted fields, bodies, filters, errors."""

from __future__ import annotations

import xml.etree.ElementTree as ET

import pandas as pd
import pytest

from twin import georeport
from twin.errors import NotFoundError, ValidationError

OK = {"service_code": "E0101", "lat": "25.08", "long": "110.29"}


def test_a_fixmystreet_form_is_read_with_its_attributes_and_contact():
    body = (b"api_key=k&jurisdiction_id=450311001001&service_code=E0101&lat=25.08&long=110.29"
            b"&description=%E5%9E%83%E5%9C%BE&email=a%40b.cn&first_name=Li&last_name=Lei"
            b"&attribute%5Bsize%5D=big")
    posted = georeport.parse_post(georeport.parse_body(
        body, "application/x-www-form-urlencoded"))
    assert (posted.service_code, posted.lat, posted.lon) == ("E0101", 25.08, 110.29)
    assert posted.description == "垃圾" and posted.api_key == "k"
    assert posted.contact == {"email": "a@b.cn", "first_name": "Li", "last_name": "Lei"}
    assert posted.attributes == {"size": "big"} and posted.jurisdiction_id == "450311001001"


@pytest.mark.parametrize(("fields", "message"), [
    ({"lat": "1", "long": "2"}, "service_code is required"),
    ({"service_code": "E0101", "long": "2"}, "lat is required"),
    ({**OK, "lat": "north"}, "number of degrees"),
    ({**OK, "long": "200"}, "outside -180..180"),
    ({**OK, "lat": "nan"}, "outside -90..90"),
    ({**OK, "media_url": "file:///etc/passwd"}, "http"),
    ({**OK, "email": "not-an-address"}, "not an e-mail"),
    ({**OK, "description": "x" * 4001}, "at most 4000"),
    ({**OK, "service_code": ["E0101"]}, "must be text"),
])
def test_bad_posts_name_the_field(fields, message):
    with pytest.raises(ValidationError, match=message):
        georeport.parse_post(fields)


@pytest.mark.parametrize(("body", "kind", "message"), [
    (b"{", "application/json", "malformed JSON"),
    (b"<a><b></a>", "text/xml", "malformed XML"),
    (b"\xff\xfe", "application/x-www-form-urlencoded", "not UTF-8"),
    (b"x" * (georeport.MAX_BODY_BYTES + 1), "application/x-www-form-urlencoded", "at most"),
])
def test_bad_bodies_are_refused(body, kind, message):
    with pytest.raises(ValidationError, match=message):
        georeport.parse_body(body, kind)


def test_a_multipart_body_gives_the_fields_and_the_photo():
    boundary = "XyZ"
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"service_code\"\r\n\r\n"
            f"E0101\r\n--{boundary}\r\nContent-Disposition: form-data; name=\"media\"; "
            f"filename=\"p.png\"\r\nContent-Type: image/png\r\n\r\n").encode() + b"\x89PNG\x00" \
        + f"\r\n--{boundary}--\r\n".encode()
    fields = georeport.parse_body(body, f"multipart/form-data; boundary={boundary}")
    assert fields == {"service_code": "E0101", "media": b"\x89PNG\x00"}


def test_filters_select_by_id_code_status_and_window():
    cases = pd.DataFrame({
        "id": ["a", "b", "c"], "service_code": ["E0101", "E0102", "E0101"],
        "status": ["filed", "closed", "collected"],
        "requested_at": pd.to_datetime(["2026-03-01T00:00Z", "2026-03-02T00:00Z",
                                        "2025-01-01T00:00Z"], utc=True)})
    now = pd.Timestamp("2026-03-05T00:00Z")

    def ids(**query):
        return list(georeport.apply_filter(cases, georeport.parse_filter(query), now)["id"])

    assert ids() == ["b", "a"]  # the last 90 days, newest first
    assert ids(service_request_id="c,a") == ["a", "c"]  # ids: nothing else applies
    assert ids(service_code="E0101") == ["a"]
    assert ids(status="closed") == ["b"] and ids(status="open") == ["a"]
    assert ids(start_date="2024-01-01T00:00:00+08:00", end_date="2026-03-01T12:00:00Z") == [
        "a", "c"]
    with pytest.raises(ValidationError, match="needs its offset"):
        georeport.parse_filter({"start_date": "2026-03-01T00:00:00"})
    with pytest.raises(ValidationError, match="before start_date"):
        georeport.parse_filter({"start_date": "2026-03-02T00:00:00Z",
                                "end_date": "2026-03-01T00:00:00Z"})


def test_errors_discovery_and_definitions_are_the_specs_documents():
    root = ET.fromstring(georeport.errors_body([(400, "lat is required")], "xml"))
    assert (root.tag, root.find("error/code").text) == ("errors", "400")
    assert georeport.errors_body([(404, "x")], "json") == b'[{"code": 404, "description": "x"}]\n'
    doc = ET.fromstring(georeport.discovery_body(georeport.discovery("http://h/open311/v2"),
                                                 "xml"))
    assert [f.text for f in doc.iter("format")] == ["text/xml", "application/json"]
    with pytest.raises(NotFoundError, match="E0101"):
        georeport.service_definition("X1", [{"service_code": "E0101"}])
    assert georeport.split_format("requests/abc.json") == ("requests/abc", "json")
    with pytest.raises(NotFoundError):
        georeport.split_format("requests.csv")
