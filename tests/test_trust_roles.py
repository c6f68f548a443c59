"""Data staff load and roll back layers, residents report and follow: twin.trust, both stores."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.browser import LAT, LON, ROOT, small_twin_layers
from tests.sessions import store_users
from twin import trust
from twin.errors import PermissionDeniedError, ValidationError
from twin.load_formats import LoadError
from twin.trust import User, admin, my_reports

#: the smallest PNG there is: a photo the upload check accepts
PNG = (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\x00\x01\x00\x00\x00\x01\x08\x06\x00\x00"
       b"\x00\x1f\x15\xc4\x89\x00\x00\x00\rIDATx\x9cc\xf8\x0f\x00\x00\x01\x01\x00\x05\x18\xd8N"
       b"\x00\x00\x00\x00IEND\xaeB`\x82")


def osm_buildings(stray_line: bool = True) -> bytes:
    """An OSM-like GeoJSON of two buildings and, by mistake, a footway (a LineString)."""
    def square(x, y, d=0.0002):
        return [[[x, y], [x + d, y], [x + d, y + d], [x, y + d], [x, y]]]

    features = [
        {"type": "Feature", "properties": {"osm_id": "way/1", "building": "apartments",
                                           "name": "新1栋", "building:levels": "6"},
         "geometry": {"type": "Polygon", "coordinates": square(LON + 0.001, LAT + 0.001)}},
        {"type": "Feature", "properties": {"osm_id": "way/2", "building": "yes",
                                           "name": "新2栋", "building:levels": "3"},
         "geometry": {"type": "Polygon", "coordinates": square(LON + 0.002, LAT + 0.001)}},
    ]
    if stray_line:
        features.append({"type": "Feature", "properties": {"osm_id": "way/3",
                                                           "highway": "footway"},
                         "geometry": {"type": "LineString", "coordinates": [
                             [LON + 0.001, LAT + 0.002], [LON + 0.003, LAT + 0.002]]}})
    return json.dumps({"type": "FeatureCollection", "features": features},
                      ensure_ascii=False).encode()


def data_home(folder: Path) -> Path:
    """A data folder for a test: the seed tables and rules of the repository, its own photos."""
    for name in ("seed", "rules.csv"):
        (folder / name).symlink_to(ROOT / "data" / name)
    return folder


@pytest.fixture
def twin_store(store, tmp_path, monkeypatch):
    """The small twin in *store*, its users, photos kept under tmp_path."""
    from twin.twin import put_layer

    monkeypatch.setenv("TWIN_DATA_DIR", str(data_home(tmp_path)))
    for name, frame in small_twin_layers().items():
        put_layer(store, name, frame, actor="tests", source="tests")
    store_users(store, User("ds", "data_staff"), User("plan", "planner"),
                User("res1", "resident", building_code="B-1", resident_id="P1"),
                User("res2", "resident", building_code="B-2", resident_id="P2"),
                User("gw", "grid_worker", grids=("R01",)))
    return store


def test_data_staff_dry_run_load_and_roll_back(twin_store):
    store = twin_store
    ds = trust.get_user(store, "ds")
    before = [v.version for v in store.layer_versions("buildings")]
    dry = admin.load_upload(store, ds, "buildings", "../../osm buildings.geojson",
                            osm_buildings(), dry_run=True)
    assert dry.report["dry_run"] and dry.report["counts"]["loaded"] == 2
    rejected = admin.load_report_rows(dry.report).iloc[0]
    assert (rejected["severity"], rejected["row"]) == ("rejected", 3)
    assert "LineString" in rejected["message"]
    assert "path" not in dry.report["source"]  # no server path reaches a page
    assert [v.version for v in store.layer_versions("buildings")] == before  # nothing written
    done = admin.load_upload(store, ds, "buildings", "osm.geojson", osm_buildings(),
                             dry_run=False, values={"use": {"yes": "residential"}}, note="osm")
    assert done.version.rows == 2 and done.version.actor == "ds"
    assert set(store.read_layer("buildings")["use"]) == {"residential"}
    assert done.version.source.startswith("osm.geojson")
    back = admin.rollback_layer(store, ds, "buildings", before[-1])
    assert back.version == before[-1] and len(store.read_layer("buildings")) == 5
    assert store.read_audit()["action"].isin(["layer.write", "layer.rollback"]).sum() >= 2


def test_only_loaders_load_and_bad_files_leave_the_layer_alone(twin_store):
    store = twin_store
    plan, ds = trust.get_user(store, "plan"), trust.get_user(store, "ds")
    with pytest.raises(PermissionDeniedError, match="layers.load"):
        admin.load_upload(store, plan, "buildings", "b.geojson", osm_buildings(), dry_run=True)
    with pytest.raises(PermissionDeniedError, match="layers.rollback"):
        admin.rollback_layer(store, plan, "buildings", 1)
    versions = len(store.layer_versions("buildings"))
    with pytest.raises(LoadError):
        admin.load_upload(store, ds, "buildings", "b.geojson", b"{not json", dry_run=False)
    with pytest.raises(ValidationError, match="empty"):
        admin.load_upload(store, ds, "buildings", "b.geojson", b"", dry_run=False)
    assert len(store.layer_versions("buildings")) == versions


@pytest.mark.parametrize("name, safe", [
    ("../../etc/passwd.geojson", "passwd.geojson"), ("楼栋 数据.zip", "楼栋_数据.zip"),
    ("C:\\x\\a.gpkg", "a.gpkg"), ("..", None), ("", None),
])
def test_upload_names_cannot_leave_their_folder(name, safe):
    if safe is None:
        with pytest.raises(ValidationError):
            admin.upload_name(name)
    else:
        assert admin.upload_name(name) == safe


def test_a_resident_reports_with_a_photo_and_follows_only_their_own(twin_store, tmp_path):
    store = twin_store
    res1, res2 = trust.get_user(store, "res1"), trust.get_user(store, "res2")
    cells = store.read_layer("grid_cells")
    where = my_reports.places(res1, store.read_layer("buildings"))
    assert where.iloc[0]["building_code"] == "B-1"  # their own building first
    case = my_reports.report_problem(
        store, res1, category="E0101", description="楼下有垃圾", lon=where.iloc[0]["lon"],
        lat=where.iloc[0]["lat"], photo=PNG, grid_cells=cells, origin="web:1.2.3.4")
    assert case["source"] == "resident" and case["grid_code"] == "45031100100101"
    photo = (case["data"] if isinstance(case["data"], dict) else json.loads(case["data"]))
    assert (tmp_path / photo["photos"][0]).read_bytes() == PNG
    other = my_reports.report_problem(store, res2, category="E0401", description="积水",
                                      lon=where.iloc[1]["lon"], lat=where.iloc[1]["lat"],
                                      grid_cells=cells)
    mine = my_reports.my_reports(store, res1, "en")
    assert mine["id"].tolist() == [case["id"]]
    assert (mine.iloc[0]["status_text"], mine.iloc[0]["category"]) == (
        "Collected", "Exposed garbage")
    assert "assignee" not in mine
    steps = my_reports.report_steps(store, res1, case["id"], "zh-CN")
    assert steps[["step", "by"]].values.tolist() == [["信息收集", "您"]]
    with pytest.raises(PermissionDeniedError, match="not one of your reports"):
        my_reports.report_steps(store, res1, other["id"])
    assert store.read_audit().query("action == 'case.denied'")["actor"].tolist() == ["res1"]
    with pytest.raises(PermissionDeniedError):
        my_reports.my_reports(store, trust.get_user(store, "gw"))


@pytest.mark.parametrize("kwargs, error, match", [
    ({"photo": b"GIF89a not allowed"}, ValidationError, "JPEG, PNG or WebP"),
    ({"description": "  "}, ValidationError, "description is empty"),
    ({"lon": LON - 0.01}, ValidationError, "outside the community"),
    ({"category": "NOPE"}, ValidationError, "unknown category"),
])
def test_a_bad_report_writes_no_case(twin_store, kwargs, error, match):
    store = twin_store
    res1 = trust.get_user(store, "res1")
    args = {"category": "E0101", "description": "垃圾", "lon": LON + 0.001, "lat": LAT + 0.001,
            "grid_cells": store.read_layer("grid_cells"), **kwargs}
    with pytest.raises(error, match=match):
        my_reports.report_problem(store, res1, **args)
    assert store.read_cases().empty
