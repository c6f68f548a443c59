"""twin.trust.privacy and exports: every path to personal data masks per role and audits.

A planner's query, a layer read and a layer file all go through one decision
(:func:`twin.trust.protect`); the residents' masked view masks their free attributes too.
"""

from __future__ import annotations

import json

import geopandas as gpd
import pytest
from shapely.geometry import Point

from tests.conftest import LAT, LON
from tests.test_trust import PHONE, USERS, twin_store  # noqa: F401 (fixtures)
from twin import trust
from twin.errors import PermissionDeniedError

PHONES = ["13900001111", "13900002222"]


def _personal_reads(store) -> list[dict]:
    log = store.read_audit()
    return log.loc[log["action"] == "personal.read"].to_dict("records")


def _within(store, user):
    return trust.query_as(store, user, "within", layer="grid_cells", distance_m=500,
                          point=(LON, LAT), origin="test")


@pytest.mark.parametrize("role", ["admin", "data_staff"])
def test_a_query_shows_staff_phones_in_full_to_data_roles_and_audits_it(twin_store, role):  # noqa: F811
    before = len(_personal_reads(twin_store))
    answer = _within(twin_store, USERS[role])
    assert sorted(answer.frame["grid_worker_phone"]) == PHONES
    reads = _personal_reads(twin_store)
    assert len(reads) == before + 1
    detail = reads[-1]["detail"]
    detail = json.loads(detail) if isinstance(detail, str) else detail
    assert reads[-1]["target"] == "query:within" and detail["rows"] == 2
    assert PHONES[0] not in json.dumps(detail)  # the log holds counts, never the values


@pytest.mark.parametrize("role", ["official", "planner"])
def test_a_query_masks_staff_phones_for_other_staff_without_an_audit_row(twin_store, role):  # noqa: F811
    before = len(_personal_reads(twin_store))
    answer = _within(twin_store, USERS[role])
    assert sorted(answer.frame["grid_worker_phone"]) == ["139****1111", "139****2222"]
    assert len(_personal_reads(twin_store)) == before


def test_a_command_without_a_named_user_gets_no_personal_columns(twin_store):  # noqa: F811
    answer = _within(twin_store, None)
    assert len(answer.frame) == 2
    assert "grid_worker_phone" not in answer.frame and "attrs" not in answer.frame


@pytest.mark.parametrize("role", ["resident", "dispatcher", "grid_worker"])
def test_roles_without_planner_queries_are_refused(twin_store, role):  # noqa: F811
    with pytest.raises(PermissionDeniedError, match="may not queries.run"):
        _within(twin_store, USERS[role])


@pytest.mark.parametrize("role, expected", [
    ("admin", PHONES), ("planner", ["139****1111", "139****2222"]), (None, None),
])
def test_layer_reads_and_exports_follow_the_same_rule(twin_store, tmp_path, role, expected):  # noqa: F811
    user = USERS.get(role)
    frame = trust.read_layer(twin_store, user, "grid_cells")
    out, rows = trust.export_layer(twin_store, user, "grid_cells", tmp_path / "cells.geojson")
    assert rows == 2
    written = gpd.read_file(out)
    for table in (frame, written):
        if expected is None:
            assert "grid_worker_phone" not in table
        else:
            assert sorted(table["grid_worker_phone"]) == expected


def test_residents_masked_view_masks_their_free_attributes(twin_store):  # noqa: F811
    residents = trust.read_layer(twin_store, USERS["admin"], "residents")
    twin_store.write_layer("residents", residents.assign(
        phone=PHONE, attrs=[{"emergency_phone": "13512345678", "health": "糖尿病"}] * 3),
        actor="t", source="t")
    masked = trust.read_residents(twin_store, USERS["admin"])
    assert masked["attrs"].eq("***").all()
    assert "13512345678" not in masked.to_json(force_ascii=False)
    assert "糖尿病" not in masked.to_json(force_ascii=False)
    scoped = trust.read_residents(twin_store, USERS["grid_worker"])  # their own grid: in full
    assert "糖尿病" in scoped.to_json(force_ascii=False)


def test_a_query_over_residents_never_shows_them_in_full(twin_store):  # noqa: F811
    points = gpd.GeoDataFrame({"id": ["p"]}, geometry=[Point(LON, LAT)], crs=4326)
    frame = points.assign(phone=PHONE, name="张三")
    shown = trust.protect(twin_store, USERS["admin"], frame, ["residents"], what="test")
    assert shown["phone"].tolist() == ["138****5678"] and shown["name"].tolist() == ["张*"]
