"""twin.features without HTTP: parsing the OGC query, CRS axes, version at a time, paging."""

from __future__ import annotations

import pandas as pd
import pytest

from tests.conftest import LAT, LON
from twin import features
from twin.errors import ValidationError

BUILDINGS = features.collection("buildings")


@pytest.mark.parametrize("text, crs, expected", [
    ("1,2,3,4", features.CRS84, (1.0, 2.0, 3.0, 4.0)),
    ("1,2,0,3,4,9", features.CRS84, (1.0, 2.0, 3.0, 4.0)),  # heights dropped
    ("25,110,26,111", features.EPSG4326, (110.0, 25.0, 111.0, 26.0)),  # latitude first
    ("25,110,26,111", features.EPSG4490, (110.0, 25.0, 111.0, 26.0)),
    (None, features.CRS84, None),
])
def test_bbox_in_each_crs_comes_back_as_lon_lat(text, crs, expected):
    got = features.parse_bbox(text, crs)
    assert got == expected or got == pytest.approx(expected, abs=1e-6)


@pytest.mark.parametrize("text", ["1,2,3", "a,b,c,d", "3,2,1,4", "1,4,3,2", "1,2,3,inf", ""])
def test_bad_bboxes_are_refused(text):
    with pytest.raises(features.BadBBoxError):
        features.parse_bbox(text)


@pytest.mark.parametrize("text, start, end", [
    ("2026-01-02T03:04:05Z", "2026-01-02T03:04:05Z", "2026-01-02T03:04:05Z"),
    ("2026-01-01T00:00:00+08:00/..", "2025-12-31T16:00:00Z", None),
    ("../2026-01-01T00:00:00Z", None, "2026-01-01T00:00:00Z"),
    ("/2026-01-01T00:00:00Z", None, "2026-01-01T00:00:00Z"),
    ("2026-01-01/2026-02-01", "2026-01-01T00:00:00Z", "2026-02-01T00:00:00Z"),
])
def test_datetime_instants_and_open_intervals(text, start, end):
    got = features.parse_datetime(text)
    assert got == (None if start is None else pd.Timestamp(start),
                   None if end is None else pd.Timestamp(end))


@pytest.mark.parametrize("text", ["yesterday", "../..", "..", "2026-02-01/2026-01-01",
                                  "2026-01-01/2026-01-02/2026-01-03"])
def test_bad_datetimes_are_refused(text):
    with pytest.raises(features.BadDatetimeError):
        features.parse_datetime(text)


def test_query_checks_limits_filters_and_crs():
    q = features.make_query(BUILDINGS, limit=5, offset=10, properties={"floors": "7"},
                            crs="EPSG:4490")
    assert (q.limit, q.offset, dict(q.equals), q.crs) == (5, 10, {"floors": 7},
                                                          features.EPSG4490)
    with pytest.raises(features.PageTooLargeError):
        features.make_query(BUILDINGS, limit=11, max_limit=10)
    with pytest.raises(ValidationError, match="cannot filter on 'colour'"):
        features.make_query(BUILDINGS, properties={"colour": "red"})
    with pytest.raises(ValidationError, match="is not a int"):
        features.make_query(BUILDINGS, properties={"floors": "many"})
    with pytest.raises(features.BadCrsError):
        features.make_query(BUILDINGS, crs="EPSG:3857")
    with pytest.raises(ValidationError, match="version or at"):
        features.make_query(BUILDINGS, version=1, at="2026-01-01T00:00:00Z")
    residents = features.collection("residents")
    assert "phone" not in residents.queryables and "building_code" in residents.queryables


def test_a_page_is_read_with_the_stores_sql_and_the_version_at_a_time(store, buildings):
    store.write_layer("buildings", buildings.iloc[:2], actor="t", source="t")
    store.write_layer("buildings", buildings, actor="t", source="t")
    q = features.make_query(BUILDINGS, bbox=f"{LON},{LAT},{LON + 0.0009},{LAT + 0.001}",
                            limit=1)
    page = features.read(store, None, "buildings", q)
    assert (page.matched, page.returned, page.has_next, page.version) == (2, 1, True, 2)
    assert [f["id"] for f in features.geojson_features(page)] == ["B1"]
    first = store.layer_versions("buildings")[0].created_at
    assert features.layer_version_at(store, "buildings", first) == 1
    old = features.read(store, None, "buildings",
                        features.make_query(BUILDINGS, at=first.isoformat(), limit=10))
    assert (old.version, old.matched) == (1, 2)
    rows, matched, version = store.read_features("buildings", equals={"name": "桂花苑3栋"})
    assert (matched, version) == (1, 2) and rows["building_code"].tolist() == ["B3"]
