"""The store contract, run against both the embedded GeoPackage store and PostGIS."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta

import geopandas as gpd
import pandas as pd
import pytest
import shapely

from twin import layers
from twin.errors import (
    ConfigError,
    DuplicateIdError,
    LayerNotFoundError,
    NotFoundError,
    StaleUpdateError,
    TwinError,
    ValidationError,
)
from twin.schema import ALARMS, CASE_HISTORY, CASES, DEAD_LETTERS, EVENTS, validate_layer_frame
from twin.store import open_store
from twin.store.base import Store

T0 = datetime(2026, 3, 2, 8, 0, tzinfo=UTC)


def assert_same_layer(got: gpd.GeoDataFrame, sent: gpd.GeoDataFrame, name: str) -> None:
    want = validate_layer_frame(layers.get_layer(name), sent)
    assert list(got.columns) == list(want.columns)
    assert got.crs.equals("EPSG:4326")
    attrs = [c for c in want.columns if c != "geometry"]
    pd.testing.assert_frame_equal(
        pd.DataFrame(got[attrs]).reset_index(drop=True),
        pd.DataFrame(want[attrs]).reset_index(drop=True),
        check_dtype=False,
    )
    assert shapely.equals_exact(got.geometry.values, want.geometry.values, tolerance=1e-9).all()


# -- layers ---------------------------------------------------------------------------------------


def test_write_then_read_round_trips_the_declared_columns(store, buildings):
    v = store.write_layer("buildings", buildings, actor="data-staff", source="test.geojson")
    assert (v.layer, v.version, v.rows, v.actor, v.source) == (
        "buildings", 1, 3, "data-staff", "test.geojson"
    )
    got = store.read_layer("buildings")
    assert_same_layer(got, buildings, "buildings")
    assert got.loc[got.building_code == "B3", "name"].item() == "桂花苑3栋"
    assert store.layers() == ["buildings"]


def test_a_read_of_some_columns_is_the_same_as_those_of_a_whole_read(store, buildings):
    """columns= reads those (in declared order), the id and the geometry: nothing else."""
    store.write_layer("buildings", buildings, actor="a", source="v1")
    store.write_layer("buildings", buildings.iloc[:2], actor="a", source="v2")
    for version in (1, None):
        whole = store.read_layer("buildings", version=version)
        got = store.read_layer("buildings", version=version, columns=["floors", "name"])
        assert list(got.columns) == ["building_code", "name", "floors", "geometry"]
        pd.testing.assert_frame_equal(
            pd.DataFrame(got.drop(columns="geometry")),
            pd.DataFrame(whole[["building_code", "name", "floors"]]),
        )
        assert got.geometry.equals(whole.geometry) and got.crs == whole.crs
    assert list(store.read_layer("buildings", columns=()).columns) == ["building_code", "geometry"]
    with pytest.raises(ValidationError, match="no columns \\['storeys'\\]"):
        store.read_layer("buildings", columns=["floors", "storeys"])


def test_every_version_is_kept_and_readable(store, buildings):
    store.write_layer("buildings", buildings, actor="a", source="v1")
    newer = buildings.iloc[:2].copy()
    newer["floors"] = [7, 12]
    v2 = store.write_layer("buildings", newer, actor="b", source="v2", note="resurvey")
    assert v2.version == 2
    assert store.read_layer("buildings")["floors"].tolist() == [7, 12]
    assert store.read_layer("buildings", version=1)["floors"].tolist() == [6, 11, 18]
    history = store.layer_versions("buildings")
    assert [(h.version, h.actor, h.rows, h.current) for h in history] == [
        (1, "a", 3, False), (2, "b", 2, True)
    ]
    assert history[1].note == "resurvey"


def test_rollback_makes_an_old_version_current(store, buildings):
    store.write_layer("buildings", buildings, actor="a", source="v1")
    store.write_layer("buildings", buildings.iloc[:1], actor="a", source="v2")
    store.set_current_version("buildings", 1, actor="admin")
    assert len(store.read_layer("buildings")) == 3
    assert [h.current for h in store.layer_versions("buildings")] == [True, False]
    with pytest.raises(NotFoundError, match="version 9"):
        store.set_current_version("buildings", 9, actor="admin")
    with pytest.raises(NotFoundError):
        store.read_layer("buildings", version=9)


def test_current_versions_follow_writes_and_rollbacks(store, buildings):
    assert store.current_versions(["buildings", "parking"]) == {"buildings": None, "parking": None}
    store.write_layer("buildings", buildings, actor="a", source="v1")
    first = store.current_versions(["buildings"])["buildings"]
    store.write_layer("buildings", buildings.iloc[:1], actor="a", source="v2")
    second = store.current_versions(["buildings", "parking", "buildings"])
    assert list(second) == ["buildings", "parking"] and second["parking"] is None
    assert first[0] == 1 and second["buildings"][0] == 2
    store.set_current_version("buildings", 1, actor="admin")
    assert store.current_versions(["buildings"]) == {"buildings": first}
    # the generic answer (from layer_versions) agrees with the store's own quick read
    generic = Store.current_versions(store, ["buildings", "parking"])
    assert [(k, v and v[0]) for k, v in generic.items()] == [("buildings", 1), ("parking", None)]
    with pytest.raises(LayerNotFoundError):
        store.current_versions(["buildingz"])


def test_attribute_table_layer_round_trips(store):
    residents = pd.DataFrame({
        "resident_id": ["R1", "R2"], "building_code": ["B1", "B1"], "name": ["张三", "李四"],
        "phone": ["13800005678", None], "household_size": [3, 1],
    })
    store.write_layer("residents", residents, actor="a", source="t")
    got = store.read_layer("residents")
    assert "geometry" not in got.columns
    assert got["name"].tolist() == ["张三", "李四"]
    assert got["phone"].tolist()[1] is None or pd.isna(got["phone"].tolist()[1])


BAD_LAYER_INPUTS = [
    ("unknown layer", "buildingz", None, LayerNotFoundError, "declared layers"),
    ("hostile name", "buildings; DROP TABLE twin_audit;--", None, LayerNotFoundError, "unknown"),
    ("wrong geometry type", "buildings", "points", ValidationError, "Polygon"),
    ("duplicate id", "buildings", "dup", DuplicateIdError, "B1"),
    ("missing id", "buildings", "noid", ValidationError, "needs an id"),
    ("bad type", "buildings", "badint", ValidationError, "floors"),
    ("out of range", "buildings", "range", ValidationError, "floors"),
    ("unknown column", "buildings", "extra", ValidationError, "attrs"),
    ("no crs", "buildings", "nocrs", ValidationError, "CRS"),
]


def _spoil(buildings: gpd.GeoDataFrame, how: str | None) -> gpd.GeoDataFrame:
    b = buildings.copy()
    if how == "points":
        b = b.set_geometry(b.representative_point())
    elif how == "dup":
        b["building_code"] = ["B1", "B1", "B3"]
    elif how == "noid":
        b.loc[1, "building_code"] = None
    elif how == "badint":
        b["floors"] = ["6", "eleven", "18"]
    elif how == "range":
        b["floors"] = [6, -1, 18]
    elif how == "extra":
        b["colour"] = "red"
    elif how == "nocrs":
        b = b.set_crs(None, allow_override=True)
    return b


@pytest.mark.parametrize(
    "name,how,error,match", [c[1:] for c in BAD_LAYER_INPUTS], ids=[c[0] for c in BAD_LAYER_INPUTS]
)
def test_bad_layer_input_raises_and_changes_nothing(store, buildings, name, how, error, match):
    store.write_layer("buildings", buildings, actor="a", source="good")
    with pytest.raises(error, match=match) as info:
        store.write_layer(name, _spoil(buildings, how), actor="a", source="bad")
    assert isinstance(info.value, TwinError)
    assert [v.version for v in store.layer_versions("buildings")] == [1]
    assert_same_layer(store.read_layer("buildings"), buildings, "buildings")


def test_a_write_that_fails_midway_leaves_the_previous_version(store, buildings, monkeypatch):
    store.write_layer("buildings", buildings, actor="a", source="good")

    def explode(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(store, "_after_rows_written", explode)
    with pytest.raises(RuntimeError, match="disk full"):
        store.write_layer("buildings", buildings.iloc[:1], actor="a", source="half")
    monkeypatch.undo()
    assert [v.version for v in store.layer_versions("buildings")] == [1]
    assert len(store.read_layer("buildings")) == 3
    v = store.write_layer("buildings", buildings.iloc[:2], actor="a", source="again")
    assert v.version == 2 and len(store.read_layer("buildings")) == 2


def _regrid_fixture(store, buildings, grid_cells):
    store.write_layer("grid_cells", grid_cells, actor="a", source="grids v1")
    store.write_layer("buildings", buildings.assign(grid_code="45031100100101"), actor="a",
                      source="b v1")
    store.create_case(_case("OPEN", status="handling", grid_code="45031100100101",
                            resp_grid_id="R01"))
    store.create_case(_case("SAME", status="filed", grid_code="45031100100101",
                            resp_grid_id="R01"))


def test_write_layers_writes_several_layers_and_moves_cases_in_one_transaction(
    store, buildings, grid_cells
):
    _regrid_fixture(store, buildings, grid_cells)
    renamed = grid_cells.assign(grid_code=["45031100100191", "45031100100192"])
    grids = pd.DataFrame({"id": ["OPEN", "SAME"], "grid_code": ["45031100100191", "45031100100101"],
                          "resp_grid_id": ["R09", "R01"], "community_code": [None, None],
                          "street_code": [None, None], "version": [1, 1]})
    written = store.write_layers(
        {"grid_cells": renamed, "buildings": buildings.assign(grid_code="45031100100191")},
        actor="staff", source="grids v2", note="new grids", case_grids=grids,
    )
    assert [(v.layer, v.version, v.actor) for v in written] == [
        ("grid_cells", 2, "staff"), ("buildings", 2, "staff")]
    assert store.read_layer("buildings")["grid_code"].unique().tolist() == ["45031100100191"]
    moved = store.get_case("OPEN")
    assert (moved["grid_code"], moved["resp_grid_id"], moved["version"]) == (
        "45031100100191", "R09", 2)
    step = store.case_history("OPEN").iloc[-1]
    assert (step["version"], step["action"], step["actor"], step["to_status"]) == (
        2, "regrid", "staff", "handling")
    assert '"45031100100101"' in step["data"] and '"45031100100191"' in step["data"]
    assert store.get_case("SAME")["version"] == 1  # grids unchanged: left alone
    with pytest.raises(StaleUpdateError):  # optimistic concurrency sees the regrid
        store.update_case("OPEN", {"status": "fed_back"}, expected_version=1)
    audit = store.read_audit()
    writes = audit.loc[audit["action"] == "layer.write"]
    assert writes["target"].tolist()[-2:] == ["layer:grid_cells", "layer:buildings"]
    assert writes["actor"].tolist()[-1] == "staff" and store.verify_audit() is None


def test_write_layers_that_fails_midway_leaves_every_layer_and_case(
    store, buildings, grid_cells, monkeypatch
):
    _regrid_fixture(store, buildings, grid_cells)
    audit_before = len(store.read_audit())
    seen = []

    def explode(spec, version):
        seen.append(spec.name)
        if spec.name == "buildings":  # after the grid cells and the cases were written
            raise RuntimeError("disk full")

    monkeypatch.setattr(store, "_after_rows_written", explode)
    grids = pd.DataFrame({"id": ["OPEN"], "grid_code": ["45031100100191"]})
    with pytest.raises(RuntimeError, match="disk full"):
        store.write_layers({"grid_cells": grid_cells.iloc[:1], "buildings": buildings.iloc[:1]},
                           actor="staff", source="grids v2", case_grids=grids)
    monkeypatch.undo()
    assert seen == ["grid_cells", "buildings"]
    assert [v.version for v in store.layer_versions("grid_cells")] == [1]
    assert [v.version for v in store.layer_versions("buildings")] == [1]
    assert len(store.read_layer("grid_cells")) == 2 and len(store.read_layer("buildings")) == 3
    case = store.get_case("OPEN")
    assert (case["grid_code"], case["version"]) == ("45031100100101", 1)
    assert len(store.case_history("OPEN")) == 0 and len(store.read_audit()) == audit_before


@pytest.mark.parametrize("grids,error,match", [
    (pd.DataFrame({"id": ["OPEN"], "grid_code": ["X"], "version": [7]}), StaleUpdateError,
     "grid cells again"),
    (pd.DataFrame({"id": ["GONE"], "grid_code": ["X"]}), NotFoundError, "GONE"),
    (pd.DataFrame({"grid_code": ["X"]}), ValidationError, "case_grids"),
    (pd.DataFrame({"id": ["OPEN"], "status": ["closed"]}), ValidationError, "case_grids"),
], ids=["stale", "unknown case", "no id", "not a grid column"])
def test_write_layers_with_bad_case_grids_writes_nothing(store, buildings, grid_cells, grids,
                                                         error, match):
    _regrid_fixture(store, buildings, grid_cells)
    with pytest.raises(error, match=match):
        store.write_layers({"grid_cells": grid_cells}, actor="a", source="t", case_grids=grids)
    assert [v.version for v in store.layer_versions("grid_cells")] == [1]
    assert store.get_case("OPEN")["version"] == 1


def test_layer_loads_and_rollbacks_are_audited(store, buildings):
    store.write_layer("buildings", buildings, actor="staff", source="b.geojson", note="first")
    store.write_layer("buildings", buildings.iloc[:1], actor="staff", source="b2.geojson")
    store.set_current_version("buildings", 1, actor="admin")
    audit = store.read_audit()
    rows = audit.loc[audit["target"] == "layer:buildings"]
    assert rows[["actor", "action"]].values.tolist() == [
        ["staff", "layer.write"], ["staff", "layer.write"], ["admin", "layer.rollback"]]
    import json
    details = [json.loads(d) for d in rows["detail"]]
    assert details[0] == {"layer": "buildings", "version": 1, "rows": 3,
                          "source": "b.geojson", "note": "first"}
    assert details[2] == {"layer": "buildings", "version": 1, "previous": 2}
    assert rows["at"].notna().all() and store.verify_audit() is None
    with pytest.raises(NotFoundError):
        store.set_current_version("buildings", 9, actor="admin")
    assert len(store.read_audit()) == len(audit)  # a refused rollback is not logged as done


def test_reading_a_layer_never_written_says_what_to_do(store):
    with pytest.raises(LayerNotFoundError, match="load_layer"):
        store.read_layer("cameras")


# -- events ---------------------------------------------------------------------------------------


def _events(n: int, start: int = 0) -> pd.DataFrame:
    return pd.DataFrame({
        "id": [f"m{i}" for i in range(start, start + n)],
        "kind": ["obs" if i % 2 == 0 else "camera" for i in range(start, start + n)],
        "source_id": [f"S{i % 3}" for i in range(start, start + n)],
        "observed_at": [T0 + timedelta(minutes=i) for i in range(start, start + n)],
        "lon": [110.29 + 0.0001 * i for i in range(start, start + n)],
        "lat": [25.08 + 0.0001 * (i % 10) for i in range(start, start + n)],
        "grid_code": ["45031100100101" if i < 20 else "45031100100102"
                      for i in range(start, start + n)],
        "payload": [{"values": {"pm25": 30.0 + i}} for i in range(start, start + n)],
    })


def test_events_append_idempotently_by_id(store):
    assert store.append_events(_events(30)) == 30
    assert store.append_events(_events(10, start=25)) == 5  # m25..m29 already stored
    assert store.append_events(_events(30)) == 0
    got = store.read_events()
    assert got["id"].tolist() == [f"m{i}" for i in range(35)]
    assert list(got.columns) == [c.name for c in EVENTS.columns] + ["geometry"]
    assert got.loc[got.id == "m3", "payload"].item() == '{"values": {"pm25": 33.0}}'
    assert str(got["observed_at"].dt.tz) == "UTC"


def test_an_id_repeated_inside_one_batch_is_stored_once(store):
    batch = pd.concat([_events(5), _events(3, start=2)], ignore_index=True)  # m2..m4 twice
    assert store.append_events(batch) == 5
    assert store.append_events(pd.concat([_events(2, start=4), _events(2, start=5)],
                                         ignore_index=True)) == 2  # m4 stored, m5 twice
    got = store.read_events()
    assert got["id"].tolist() == [f"m{i}" for i in range(7)]
    assert got.loc[got.id == "m3", "payload"].item() == '{"values": {"pm25": 33.0}}'


def test_payloads_given_as_json_text_are_stored_as_json(store):
    events = _events(3)
    events["payload"] = ['{"values": {"pm25": 30.0}}', '{ "values" : { "no2":1, "pm25":2 } }',
                         None]
    assert store.append_events(events) == 3
    got = store.read_events().set_index("id")["payload"]
    assert got.tolist() == ['{"values": {"pm25": 30.0}}', '{"values": {"no2": 1, "pm25": 2}}',
                            None]
    bad = _events(2, start=10)
    bad["payload"] = ['{"values": {"pm25": 1.0}}', '{"values": ']
    with pytest.raises(ValidationError, match="payload|JSON"):
        store.append_events(bad)
    assert len(store.read_events()) == 3


def test_prepared_events_are_checked_before_and_written_only_by_append(store):
    prepared = store.prepare_events(_events(30))
    assert len(prepared) == 30 and store.read_events().empty  # nothing written yet
    assert store.append_events(prepared) == 30
    assert store.append_events(store.prepare_events(_events(10, start=25))) == 5
    got = store.read_events()
    assert got["id"].tolist() == [f"m{i}" for i in range(35)]
    assert got.loc[got.id == "m3", "payload"].item() == '{"values": {"pm25": 33.0}}'
    assert got["received_at"].notna().all()  # filled with the time of preparing
    noid = _events(3, start=40)
    noid.loc[1, "id"] = None
    with pytest.raises(ValidationError, match="every event needs an id; 1 of 3"):
        store.prepare_events(noid)
    with pytest.raises(ValidationError, match="every event needs an id"):
        store.append_events(noid)
    assert len(store.read_events()) == 35


def test_events_filter_by_time_bbox_grid_and_kind(store):
    store.append_events(_events(40))
    window = store.read_events(T0 + timedelta(minutes=5), T0 + timedelta(minutes=10))
    assert window["id"].tolist() == ["m5", "m6", "m7", "m8", "m9"]
    boxed = store.read_events(bbox=(110.29, 25.08, 110.2905, 25.0803))
    assert sorted(boxed["id"]) == ["m0", "m1", "m2", "m3"]
    assert store.read_events(grid_code="45031100100102")["id"].tolist() == [
        f"m{i}" for i in range(20, 40)
    ]
    cams = store.read_events(kind="camera", grid_code="45031100100101")
    assert cams["id"].tolist() == [f"m{i}" for i in range(1, 20, 2)]


def test_a_batch_with_a_bad_event_stores_none_of_it(store):
    bad = _events(5)
    bad["observed_at"] = bad["observed_at"].astype(object)
    bad.loc[3, "observed_at"] = "not a time"
    with pytest.raises(ValidationError, match="observed_at"):
        store.append_events(bad)
    assert store.read_events().empty


# -- cases ----------------------------------------------------------------------------------------


def _case(case_id: str = "C1", **kw) -> dict:
    case = {"id": case_id, "status": "collected", "service_code": "0101", "family": "event",
            "source": "patrol", "description": "垃圾暴露 <script>alert(1)</script>",
            "lon": 110.2902, "lat": 25.0802, "grid_code": "45031100100101",
            "requested_at": T0, "data": {"photos": ["p1.jpg"]}}
    case.update(kw)
    return case


def test_cases_are_created_read_and_updated_with_versions(store):
    created = store.create_case(_case())
    assert created["version"] == 1
    assert created["description"] == "垃圾暴露 <script>alert(1)</script>"
    updated = store.update_case("C1", {"status": "filed", "assignee": "王网格"}, expected_version=1)
    assert (updated["version"], updated["status"], updated["assignee"]) == (2, "filed", "王网格")
    assert store.get_case("C1")["status"] == "filed"
    store.create_case(_case("C2", grid_code="45031100100102"))
    assert store.read_cases()["id"].tolist() == ["C1", "C2"]
    assert store.read_cases(status="filed")["id"].tolist() == ["C1"]
    assert store.read_cases(grid_code="45031100100102")["id"].tolist() == ["C2"]
    assert list(store.read_cases().columns) == [c.name for c in CASES.columns] + ["geometry"]


def test_a_few_cases_written_value_by_value_read_back_as_a_long_batch_written_as_a_frame(store):
    # create_cases binds a few records value by value (twin.schema.coerce_records) and more
    # than SMALL through a frame (coerce_table); both must store exactly the same values
    import numpy as np

    from twin.schema import SMALL

    def batch(prefix: str, n: int) -> tuple[list[dict], list[dict]]:
        cases = [_case(f"{prefix}{i:03d}", requested_at=pd.Timestamp(T0) + pd.Timedelta(
                     microseconds=1734, nanoseconds=567),  # floored as each store keeps it
                       updated_at=T0.replace(tzinfo=None),  # naive: taken as UTC
                       lon=np.float64(110.29), reworks=np.int64(2), extended=np.bool_(True),
                       handle_deadline=None, assignee=None if i % 2 else "王网格",
                       data={"photos": [], "n": i % 2})
                 for i in range(n)]
        steps = [{"actor": "w1", "role": "grid_worker", "action": "collect",
                  "to_status": "collected", "data": {"route": "grid"}}] * n
        return cases, steps

    for prefix, n in (("F", SMALL + 1), ("R", 2)):
        cases, steps = batch(prefix, n)
        store.create_cases(cases, histories=steps, audits=[("w1", "case.collect", "c", {}, "")])
    # a value to parse (a number as text) sends a short batch the vectorised way as well
    text, steps = batch("T", 2)
    store.create_cases([{**c, "lat": "25.0802"} for c in text], histories=steps)
    got = store.read_cases().drop(columns=["geometry", "updated_at"]).set_index("id")
    for prefix in ("R", "T"):
        for i in range(2):
            pd.testing.assert_series_equal(got.loc[f"{prefix}{i:03d}"], got.loc[f"F{i:03d}"],
                                           check_names=False)
    assert got.loc["R000", "requested_at"] == got.loc["F000", "requested_at"]
    assert got.loc["R001", "assignee"] is None
    steps = store.case_history("R000")
    assert steps["data"].tolist() == ['{"route": "grid"}']
    audit = store.read_audit()
    assert audit["action"].tolist().count("case.collect") == 2


def test_read_cases_in_boxes_reads_only_the_cases_placed_in_them(store):
    for i, lon in enumerate((110.2900, 110.2910, 110.3000)):
        store.create_case(_case(f"B{i}", lon=lon, lat=25.08))
    box = (110.2895, 25.0795, 110.2910, 25.0805)  # edges included
    assert store.read_cases(boxes=[box], columns=["id"])["id"].tolist() == ["B0", "B1"]
    far = (110.2995, 25.0795, 110.3005, 25.0805)
    assert store.read_cases(boxes=[box, far])["id"].tolist() == ["B0", "B1", "B2"]
    assert store.read_cases(boxes=[], columns=["id"]).empty


def test_read_row_gives_the_first_row_read_rows_gives_as_plain_values(store):
    from twin.schema import API_KEYS, USERS
    from twin.trust import create_user
    from twin.trust.apikeys import create_key

    create_user(store, "bob", "a-long-password-123", "grid_worker", grids=["4503"], actor="t")
    create_user(store, "amy", "a-long-password-123", "official", actor="t")
    create_key(store, "bob", label="app", actor="t")
    for table, equals in ((USERS, {"username": "bob"}), (USERS, {"role": ["official", "x"]}),
                          (API_KEYS, {"username": "bob"}), (USERS, {})):
        row = store.read_row(table, **equals)
        first = store.read_rows(table, **equals).iloc[0]
        assert list(row) == [c.name for c in table.columns]
        for name, value in row.items():
            assert (value is None) if pd.isna(first[name]) else (value == first[name]), name
    assert store.read_row(USERS, username="nobody") is None
    assert store.read_row(USERS)["username"] == "amy"  # by key order
    assert isinstance(store.read_row(USERS, username="bob")["created_at"], pd.Timestamp)
    with pytest.raises(ValidationError):
        store.read_row(USERS, nickname="bob")


def test_case_steps_are_recorded_with_the_update_in_one_transaction(store):
    store.create_case(_case(), history={"actor": "w1", "role": "grid_worker", "action": "collect",
                                        "to_status": "collected", "at": T0})
    store.update_case("C1", {"status": "filed"}, expected_version=1,
                      history={"actor": "d1", "role": "dispatcher", "action": "file",
                               "from_status": "collected", "to_status": "filed",
                               "at": T0 + timedelta(minutes=5), "data": {"minutes": 5}})
    with pytest.raises(StaleUpdateError):
        store.update_case("C1", {"status": "x"}, expected_version=1,
                          history={"actor": "d2", "action": "file"})
    steps = store.case_history("C1")
    assert list(steps.columns) == [c.name for c in CASE_HISTORY.columns]
    assert steps[["version", "actor", "action", "to_status"]].values.tolist() == [
        [1, "w1", "collect", "collected"], [2, "d1", "file", "filed"]
    ]
    assert steps["data"].tolist()[1] == '{"minutes": 5}'


def test_read_cases_selects_columns_and_a_requested_at_window(store):
    store.create_case(_case("C2", requested_at=T0 + timedelta(days=2), filed_at=T0,
                            handle_deadline=T0 + timedelta(hours=3), extended=True, reworks=2,
                            post="grid_worker", description="it's \"quoted\", a,b\nline"))
    store.create_case(_case("C1", status="filed", description=""))
    store.create_case(_case("C3", requested_at=T0 + timedelta(days=5), description=None))
    cols = ["id", "status", "filed_at", "handle_deadline", "extended", "reworks", "post",
            "description"]
    got = store.read_cases(columns=cols)
    assert isinstance(got, pd.DataFrame) and not isinstance(got, gpd.GeoDataFrame)
    assert list(got.columns) == cols
    assert got["id"].tolist() == ["C1", "C2", "C3"]
    assert got["filed_at"].tolist()[1] == pd.Timestamp(T0)
    assert got["filed_at"].isna().tolist() == [True, False, True]
    assert str(got["filed_at"].dtype) == "datetime64[us, UTC]"
    assert got["handle_deadline"][1] == pd.Timestamp(T0 + timedelta(hours=3))
    assert got["extended"].tolist()[1] is True and pd.isna(got["extended"][0])
    assert got["reworks"].tolist()[1] == 2 and str(got["reworks"].dtype) == "Int64"
    # text round-trips: quotes, commas, newlines; an empty text is not a missing one
    assert got["description"][1] == 'it\'s "quoted", a,b\nline'
    assert got["description"][0] == "" and pd.isna(got["description"][2])
    # the full read agrees with the column read
    full = store.read_cases()
    pd.testing.assert_series_equal(full["filed_at"].astype("datetime64[us, UTC]"),
                                   got["filed_at"], check_names=False)
    window = store.read_cases(since=T0 + timedelta(days=1), until=T0 + timedelta(days=5),
                              columns=["id"])
    assert window["id"].tolist() == ["C2"]  # until is exclusive
    assert store.read_cases(since=T0 + timedelta(days=1))["id"].tolist() == ["C2", "C3"]
    assert store.read_cases(status="filed", columns=["id", "status"])["id"].tolist() == ["C1"]
    assert store.read_cases(status="o'brien", columns=["id"]).empty  # a literal, not SQL
    assert list(store.read_cases(status="none", columns=["id", "extended"]).columns) == [
        "id", "extended"]
    points = store.read_cases(grid_code="45031100100101", columns=["id", "geometry"])
    assert isinstance(points, gpd.GeoDataFrame) and list(points.columns) == ["id", "geometry"]
    assert points.geometry.x.round(4).tolist() == [110.2902] * 3
    with pytest.raises(ValidationError, match="colour"):
        store.read_cases(columns=["id", "colour"])


def test_get_case_is_a_keyed_read(store):
    store.create_case(_case("C1", filed_at=T0, extended=False, reworks=0))
    got = store.get_case("C1")
    assert set(got) == {c.name for c in CASES.columns}
    assert got["filed_at"] == pd.Timestamp(T0) and got["filed_at"].tzinfo is not None
    assert (got["extended"], got["reworks"], got["lon"]) == (False, 0, 110.2902)
    assert got["version"] == 1 and isinstance(got["version"], int)


BAD_CASE_CALLS = [  # one wording on both stores (the shared parent words them once)
    ("duplicate id", lambda s: s.create_case(_case()), DuplicateIdError,
     r"case 'C1' exists already; change it with update_case"),
    ("stale update", lambda s: s.update_case("C1", {"status": "x"}, expected_version=0),
     StaleUpdateError, r"case C1 was changed by someone else \(now version 1, you had 0\); "
     "reload it"),
    ("missing case", lambda s: s.update_case("nope", {"status": "x"}, expected_version=1),
     NotFoundError, r"no case 'nope' in the store; check the id"),
    ("missing get", lambda s: s.get_case("nope"), NotFoundError,
     r"no case 'nope' in the store; check the id"),
    ("unknown field", lambda s: s.update_case("C1", {"colour": "x"}, expected_version=1),
     ValidationError, r"cases have no fields \['colour'\]\. Fields that can change"),
    ("version is not a field", lambda s: s.update_case("C1", {"version": 7}, expected_version=1),
     ValidationError, r"\['version'\] cannot be changed: the store keeps the id"),
]


@pytest.mark.parametrize("call,error,match", [c[1:] for c in BAD_CASE_CALLS],
                         ids=[c[0] for c in BAD_CASE_CALLS])
def test_bad_case_calls_raise_and_change_nothing(store, call, error, match):
    store.create_case(_case())
    before = store.get_case("C1")
    with pytest.raises(error, match=match):
        call(store)
    assert store.get_case("C1") == before


def test_concurrent_updates_exactly_one_wins(store_factory):
    first, again = store_factory
    first.create_case(_case())
    stores = [first, again()]
    results, barrier = [], threading.Barrier(2)

    def attempt(s, who):
        barrier.wait()
        try:
            s.update_case("C1", {"assignee": who}, expected_version=1)
            results.append(("won", who))
        except StaleUpdateError:
            results.append(("stale", who))

    threads = [threading.Thread(target=attempt, args=(s, f"w{i}")) for i, s in enumerate(stores)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(r[0] for r in results) == ["stale", "won"]
    winner = next(who for outcome, who in results if outcome == "won")
    assert first.get_case("C1")["assignee"] == winner
    assert first.get_case("C1")["version"] == 2


# -- audit ----------------------------------------------------------------------------------------


def test_audit_is_a_hash_chain_that_detects_tampering(store):
    for i in range(5):
        store.append_audit("official1", "view", f"resident:R{i}", {"fields": ["phone"]}, "10.0.0.8")
    log = store.read_audit()
    assert log["seq"].tolist() == [1, 2, 3, 4, 5]
    assert store.verify_audit() is None
    _tamper(store, seq=3)
    assert store.verify_audit() == 3


def test_concurrent_audit_appends_keep_one_chain(store_factory):
    first, again = store_factory
    stores = [first, again()]

    def write(s, who):
        for i in range(10):
            s.append_audit(who, "view", f"x{i}")

    threads = [threading.Thread(target=write, args=(s, f"u{i}")) for i, s in enumerate(stores)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert first.read_audit()["seq"].tolist() == list(range(1, 21))
    assert first.verify_audit() is None


def _tamper(store, seq: int) -> None:
    """Change one audit row behind the store's back, as an intruder with database access would."""
    if type(store).__name__ == "EmbeddedStore":
        import sqlite3

        with sqlite3.connect(store.path) as conn:
            conn.execute("UPDATE twin_audit SET actor = 'nobody' WHERE seq = ?", (seq,))
    else:
        import sqlalchemy as sa

        with store.engine.begin() as conn:  # as the table's owner: its triggers off first
            conn.execute(sa.text("ALTER TABLE twin_audit DISABLE TRIGGER USER"))
            conn.execute(sa.text("UPDATE twin_audit SET actor = 'nobody' WHERE seq = :s"),
                         {"s": seq})


# -- opening --------------------------------------------------------------------------------------


def test_unknown_url_scheme_lists_the_known_ones():
    with pytest.raises(ConfigError, match="postgresql"):
        open_store("mysql://root@localhost/twin")


# -- simple declared tables: put_rows / read_rows -------------------------------------------------


def _alarms(*rows: tuple[str, str, str, float]) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "id": [r[0] for r in rows],
            "rule_id": ["pm25_high"] * len(rows),
            "source_id": [r[1] for r in rows],
            "status": [r[2] for r in rows],
            "opened_at": [T0] * len(rows),
            "value": [r[3] for r in rows],
            "lon": [110.29] * len(rows),
            "lat": [25.08] * len(rows),
            "data": [{"threshold": 75, "name": "细颗粒物超标"}] * len(rows),
        }
    )


def test_put_rows_ignores_or_updates_existing_keys(store):
    rows = _alarms(("a1", "S1", "open", 80.0), ("a2", "S2", "open", 90.0))
    assert store.put_rows(ALARMS, rows) == 2
    # ignore: the stored row stays as it was
    assert store.put_rows(ALARMS, _alarms(("a1", "S1", "resolved", 10.0))) == 0
    assert store.read_rows(ALARMS, id="a1")["status"].tolist() == ["open"]
    # update: the stored row is replaced; a new key in the same batch is inserted
    assert store.put_rows(
        ALARMS, _alarms(("a1", "S1", "resolved", 10.0), ("a3", "S3", "open", 99.0)),
        on_conflict="update",
    ) == 2
    got = store.read_rows(ALARMS)
    assert got["id"].tolist() == ["a1", "a2", "a3"]
    assert got["status"].tolist() == ["resolved", "open", "open"]
    assert got["value"].tolist() == [10.0, 90.0, 99.0]
    assert got["opened_at"].iloc[0] == pd.Timestamp(T0)
    assert got["data"].iloc[0] == '{"name": "细颗粒物超标", "threshold": 75}'
    assert list(got.columns) == [c.name for c in ALARMS.columns]


def test_read_rows_filters_by_equality_and_lists(store):
    store.put_rows(ALARMS, _alarms(("a1", "S1", "open", 80.0), ("a2", "S2", "resolved", 1.0),
                                   ("a3", "S1", "acknowledged", 85.0)))
    assert store.read_rows(ALARMS, source_id="S1")["id"].tolist() == ["a1", "a3"]
    assert store.read_rows(ALARMS, source_id="S1", status="open")["id"].tolist() == ["a1"]
    assert store.read_rows(ALARMS, status=("open", "resolved"))["id"].tolist() == ["a1", "a2"]
    assert store.read_rows(ALARMS, status=[]).empty
    assert store.read_rows(ALARMS, source_id="S1; DROP TABLE twin_alarms").empty
    assert len(store.read_rows(ALARMS)) == 3
    assert store.read_rows(DEAD_LETTERS).empty


def test_read_rows_orders_text_keys_bytewise_and_number_keys_as_numbers(store):
    steps = pd.DataFrame({"case_id": ["C2", "C10", "C2", "C10"], "version": [2, 2, 1, 1],
                          "at": [T0] * 4, "actor": "t", "role": "dispatcher", "action": "file",
                          "from_status": "collected", "to_status": "filed"})
    assert store.put_rows(CASE_HISTORY, steps) == 4
    history = store.read_rows(CASE_HISTORY)  # key (case_id text, version bigint)
    assert list(zip(history["case_id"], history["version"], strict=True)) == [
        ("C10", 1), ("C10", 2), ("C2", 1), ("C2", 2)]


def test_dead_letters_keep_the_raw_payload(store):
    raw = '{"id": "m1", "values": {"pm25": 乱码\t\\x00\n'  # PostgreSQL text holds no NUL
    rows = pd.DataFrame({"id": ["d1"], "received_at": [T0], "topic": ["gridtwin/c/obs"],
                         "reason": ["malformed_json"], "payload": [raw]})
    assert store.put_rows(DEAD_LETTERS, rows) == 1
    assert store.put_rows(DEAD_LETTERS, rows) == 0
    got = store.read_rows(DEAD_LETTERS, reason="malformed_json")
    assert got["payload"].tolist() == [raw]


@pytest.mark.parametrize(
    "rows,kwargs,match",
    [
        (_alarms(("a1", "S1", "opened", 1.0)), {}, "status must be one of"),
        (_alarms(("a1", "S1", "open", 1.0)).assign(colour="red"), {}, "unknown fields"),
        (_alarms(("a1", "S1", "open", 1.0)).assign(id=None), {}, "needs its key"),
        (_alarms(("a1", "S1", "open", 1.0)), {"on_conflict": "replace"}, "on_conflict"),
    ],
)
def test_bad_put_rows_raise_and_store_nothing(store, rows, kwargs, match):
    with pytest.raises(ValidationError, match=match):
        store.put_rows(ALARMS, rows, **kwargs)
    assert store.read_rows(ALARMS).empty


def test_read_rows_rejects_unknown_columns(store):
    with pytest.raises(ValidationError, match="has no columns"):
        store.read_rows(ALARMS, colour="red")


def test_new_grid_cells_reassign_located_layers_and_open_cases(store, buildings, grid_cells):
    from twin.twin import put_layer

    put_layer(store, "grid_cells", grid_cells, actor="a", source="grids v1")
    put_layer(store, "buildings", buildings, actor="a", source="b v1")
    west, east = (110.2905, 25.0805), (110.2915, 25.0805)  # in the first and the second grid
    for case_id, status, (lon, lat) in (("OPEN", "handling", east), ("SHUT", "closed", east),
                                        ("STAY", "filed", west)):
        east_side = lon == east[0]
        store.create_case(_case(case_id, status=status, lon=lon, lat=lat,
                                grid_code="45031100100102" if east_side else "45031100100101",
                                resp_grid_id="R02" if east_side else "R01",
                                community_code="450311001001", street_code="450311001"))
    store.create_case(_case("NOWHERE", lon=None, lat=None, grid_code="OLD"))
    # the new cells: the second grid is split off under a new code and a new worker's grid
    moved = grid_cells.assign(grid_code=["45031100100101", "45031100100199"],
                              resp_grid_id=["R01", "R09"])
    v = put_layer(store, "grid_cells", moved, actor="staff", source="grids v2")
    assert (v.layer, v.version) == ("grid_cells", 2)
    got = store.read_layer("buildings").set_index("building_code")
    assert got["grid_code"].to_dict() == {
        "B1": "45031100100101", "B2": "45031100100101", "B3": "45031100100199"}
    assert [x.version for x in store.layer_versions("buildings")] == [1, 2]
    assert store.layer_versions("buildings")[-1].source == "grids v2"
    case = store.get_case("OPEN")
    assert (case["grid_code"], case["resp_grid_id"], case["version"]) == (
        "45031100100199", "R09", 2)
    assert store.case_history("OPEN")["action"].tolist() == ["regrid"]
    shut = store.get_case("SHUT")  # closed cases keep the grid they were handled in
    assert (shut["grid_code"], shut["version"]) == ("45031100100102", 1)
    assert store.get_case("STAY")["version"] == 1  # same grid: not touched
    assert store.get_case("NOWHERE")["grid_code"] == "OLD"  # no position: not touched
    audit = store.read_audit()
    assert audit.loc[audit["action"] == "layer.write", "target"].tolist()[-2:] == [
        "layer:grid_cells", "layer:buildings"]


# -- counts behind the indicators, in the database ---------------------------------------------


def test_generated_cases_cover_every_path(generated_cases):
    c = generated_cases
    assert set(c["status"]) >= {"filed", "dispatched", "handling", "on_hold", "fed_back",
                                "checked", "closed", "cancelled"}
    assert c["first_rework_at"].notna().sum() > 20 and c["extended"].sum() > 20
    late_close = c["closed_at"] > c["deadline_at"]
    assert 0 < late_close.sum() < c["closed_at"].notna().sum()
    assert (c["filed_at"] > c["file_deadline"]).any()
    assert (c["fed_back_at"] > c["handle_deadline"]).any()
    assert c["cancelled_at"].notna().any() and c["cancelled_at"].notna().sum() > c.loc[
        c["status"] == "cancelled", "filed_at"].notna().sum() > 0


@pytest.mark.parametrize("by,period,window,as_of", [
    (["grid_code"], "month", (None, None), None),
    (["grid_code"], "month", (None, None), datetime(2026, 2, 14, 3, tzinfo=UTC)),
    (["department", "post"], "day", (datetime(2026, 1, 1, tzinfo=UTC),
                                     datetime(2026, 1, 20, tzinfo=UTC)), None),
    ([], "quarter", (None, None), None),
    (["resp_grid_id"], None, (datetime(2026, 1, 31, 16, tzinfo=UTC),
                               datetime(2026, 2, 28, 16, tzinfo=UTC)),
     datetime(2026, 2, 28, 16, tzinfo=UTC)),
    ([], None, (None, None), datetime(2026, 3, 5, tzinfo=UTC)),
    (["reworks", "closed_at"], "month", (None, None), None),  # slices that are not text
])
def test_case_counts_in_the_store_equal_the_counts_in_memory(
    store, generated_cases, by, period, window, as_of
):
    from twin import kpi
    from twin.cases import case_table

    store.put_rows(CASES, generated_cases)
    since, until = window
    got = store.case_counts(list(kpi.COUNTS), by=by, period=period, since=since, until=until,
                            as_of=as_of)
    # the same counts from the case table in pandas (twin.kpi.case_counts)
    wanted = [c.name for c in CASES.columns if c.name not in ("data", "description")]
    table = case_table(store.read_cases(columns=wanted))
    filed = table["filed_at"]
    keep = filed.notna()
    if since is not None:
        keep &= (filed >= since) & (filed < until)
    sub = table.loc[keep]
    head = list(by)
    if period is None:
        flags = kpi.case_counts(sub, pd.Timestamp(as_of))
    else:
        freq = {"day": "D", "month": "M", "quarter": "Q"}[period]
        local = sub["filed_at"].dt.tz_convert("Asia/Shanghai").dt.tz_localize(None)
        periods = local.dt.to_period(freq)
        ends = (periods + 1).dt.start_time.dt.tz_localize("Asia/Shanghai").dt.tz_convert("UTC")
        if as_of is not None:
            ends = ends.clip(upper=pd.Timestamp(as_of))
        flags = kpi.case_counts(sub, ends)
        flags["period"] = periods.astype(str)
        head.append("period")
    for c in by:
        flags[c] = sub[c].to_numpy(dtype=object)
    if head:
        want = flags.groupby(head, dropna=False, sort=True)[list(kpi.COUNTS)].sum().reset_index()
    else:
        want = flags[list(kpi.COUNTS)].sum().to_frame().T
    assert list(got.columns) == [*head, *kpi.COUNTS]
    assert len(got) == len(want) > 0

    def plain(frame: pd.DataFrame) -> pd.DataFrame:
        frame = frame.reset_index(drop=True).astype({c: "int64" for c in kpi.COUNTS})
        for c in head:
            frame[c] = frame[c].astype(object).where(frame[c].notna(), None)
        return frame

    pd.testing.assert_frame_equal(plain(got), plain(want))
    assert got["filed"].sum() > 0 and got["closed_on_time"].sum() > 0


def test_indicators_from_the_store_equal_those_in_memory(store, generated_cases):
    from twin import kpi
    from twin.cases import case_table

    store.put_rows(CASES, generated_cases)
    table = case_table(store.read_cases())
    for kwargs in ({"by": "grid", "freq": "M"},
                   {"by": ["department", "person"], "period": "2026-02"},
                   {"period": "2026-02", "as_of": "2026-02-20T00:00:00Z"},
                   {"by": "post", "freq": "Q", "as_of": "2026-02-01T00:00:00Z"}):
        got = kpi.indicators(store, **kwargs)
        want = kpi.indicators(table, **kwargs)
        assert len(got) > 0
        pd.testing.assert_frame_equal(got, want, check_dtype=False)


def test_case_counts_keep_awkward_slice_values_apart(store, generated_cases):
    """Empty, missing, quoted and comma-holding slice values each get their own row."""
    cases = generated_cases[generated_cases["filed_at"].notna()].head(8).copy()
    odd = ["", None, 'a,"b"', "line\nbreak", "街道,一", "", None, "x"]
    cases["grid_code"] = pd.Series(odd, index=cases.index, dtype=object)
    store.put_rows(CASES, cases)
    got = store.case_counts(["filed"], by=["grid_code"],
                            as_of=datetime(2030, 1, 1, tzinfo=UTC))
    codes = got["grid_code"].astype(object).where(got["grid_code"].notna(), None).tolist()
    assert codes == ["", "a,\"b\"", "line\nbreak", "x", "街道,一", None]
    assert got["filed"].tolist() == [2, 1, 1, 1, 1, 2]
    monthly = store.case_counts(["filed"], by=["grid_code"], period="month")  # the rollup's
    keys = monthly["grid_code"].astype(object).where(monthly["grid_code"].notna(), "<none>")
    assert monthly.groupby(keys.tolist(), sort=False)["filed"].sum().to_dict() == {
        "": 2, "a,\"b\"": 1, "line\nbreak": 1, "x": 1, "街道,一": 1, "<none>": 2}


def test_case_counts_of_an_empty_cohort(store):
    got = store.case_counts(["filed", "closed"], by=["grid_code"], period="month")
    assert list(got.columns) == ["grid_code", "period", "filed", "closed"] and got.empty
    one = store.case_counts(["filed"], as_of=T0)
    assert one.to_dict("records") == [{"filed": 0}]


def test_case_counts_take_checked_expressions_and_bind_values(store, generated_cases):
    store.put_rows(CASES, generated_cases)
    got = store.case_counts({"held": "status = 'on_hold' AND filed_at <= {as_of}"},
                            as_of=datetime(2030, 1, 1, tzinfo=UTC))
    assert got["held"].item() == (generated_cases["status"] == "on_hold").sum() > 0
    for components, by, period, match in [
        (["luck"], [], "month", "unknown count components"),
        ({"x": "1 = 1; DROP TABLE twin_cases"}, [], "month", "not allowed"),
        ({"x": "status = 'a' OR length(description) > 0"}, [], "month", "not allowed"),
        ({"x": "status = 'a' -- "}, [], "month", "not allowed"),
        (["filed"], ["planet"], "month", "takes distinct case columns"),
        (["filed"], ["data"], "month", "takes distinct case columns"),
        (["filed"], [], "week", "period must be one of"),
        (["filed"], [], None, "needs as_of"),
    ]:
        with pytest.raises(ValidationError, match=match):
            store.case_counts(components, by=by, period=period)
    assert len(store.read_cases(columns=["id"])) == len(generated_cases)


# -- the monthly rollup behind case_counts ----------------------------------------------------


def _rollup_reads(monkeypatch) -> list[int]:
    """Record each answer case_counts takes from the rollup (how many rows it gave)."""
    from twin.store import rollup

    calls: list[int] = []
    real = rollup.finish

    def finish(*args, **kwargs):
        out = real(*args, **kwargs)
        calls.append(len(out))
        return out

    monkeypatch.setattr(rollup, "finish", finish)
    return calls


def _grouped(names) -> dict[str, str]:
    """The same counts written so that the rollup does not know them: always the GROUP BY."""
    from twin.store.base import CASE_COMPONENTS

    return {n: f"({CASE_COMPONENTS[n]})" for n in names}


MONTH_EDGES = [pd.Timestamp("2025-12-31T16:00Z"), pd.Timestamp("2026-02-28T16:00Z")]


def _same_by_rollup_and_group_by(store, reads: list[int]) -> None:
    from twin import kpi

    for by, since, until, as_of in [
        (["grid_code"], None, None, None),
        (["street_code", "resp_grid_id"], None, None, None),
        ([], *MONTH_EDGES, None),
        (["grid_code", "community_code"], None, None, datetime(2026, 2, 14, 3, tzinfo=UTC)),
        (["grid_code"], MONTH_EDGES[0], None, MONTH_EDGES[1]),  # as_of on a month edge
    ]:
        before = len(reads)
        got = store.case_counts(list(kpi.COUNTS), by=by, period="month", since=since,
                                until=until, as_of=as_of)
        assert len(reads) == before + 1  # answered from the rollup (and GROUP BY past as_of)
        want = store.case_counts(_grouped(kpi.COUNTS), by=by, period="month", since=since,
                                 until=until, as_of=as_of)
        assert len(reads) == before + 1 and len(got) > 0
        pd.testing.assert_frame_equal(got, want)


def test_the_rollup_answers_as_the_group_by_after_random_writes(
    store, generated_cases, grid_cells, monkeypatch
):
    """Differential: bulk writes, new cases, transitions and re-grids keep the rollup right."""
    import numpy as np

    rng = np.random.default_rng(7)
    cases = pd.DataFrame(generated_cases).drop(columns="geometry", errors="ignore")
    codes = [*grid_cells["grid_code"], None, ""]
    cases["grid_code"] = rng.choice(np.array(codes, dtype=object), len(cases))
    store.put_rows(CASES, cases.iloc[:1200])
    reads = _rollup_reads(monkeypatch)
    _same_by_rollup_and_group_by(store, reads)

    for _, row in cases.iloc[1200:1240].iterrows():  # cases created one by one
        record = {k: (None if pd.isna(v) else v) for k, v in row.items()
                  if k not in ("version", "data")}
        store.create_case(record, history={"actor": "t", "action": "create"})
    ids = cases["id"].iloc[:1240].to_numpy()
    for case_id in rng.choice(ids, 60, replace=False):  # transitions, in and across months
        case = store.get_case(case_id)
        filed = case["filed_at"] or pd.Timestamp("2026-01-15T02:00Z")
        changes = [
            {"status": "closed", "closed_at": filed + pd.Timedelta(days=int(rng.integers(1, 40)))},
            {"status": "cancelled", "cancelled_at": filed + pd.Timedelta(hours=5)},
            {"status": "on_hold"},
            {"filed_at": filed + pd.Timedelta(days=int(rng.integers(-30, 30)))},
            {"filed_at": None},
            {"extended": not case["extended"], "dispatched_at": filed + pd.Timedelta(hours=1)},
            {"description": "only words changed"},
        ][int(rng.integers(0, 7))]
        store.update_case(case_id, changes, expected_version=case["version"])
    _same_by_rollup_and_group_by(store, reads)

    moved = rng.choice(ids, 300, replace=False)  # grids loaded again: cases move
    grids = pd.DataFrame({"id": moved, "grid_code": rng.choice(np.array(codes, dtype=object), 300),
                          "resp_grid_id": rng.choice(["R01", "R02", None], 300),
                          "community_code": "001", "street_code": rng.choice(["001", "002"], 300)})
    store.write_layers({"grid_cells": grid_cells}, actor="t", source="grids v2", case_grids=grids)
    _same_by_rollup_and_group_by(store, reads)

    again = cases.iloc[1100:1400].copy()  # a bulk write over stored and new cases
    again["closed_at"] = again["closed_at"] + pd.Timedelta(days=3)
    again["grid_code"] = rng.choice(np.array(codes, dtype=object), len(again))
    assert store.put_rows(CASES, again.iloc[:150], on_conflict="update") == 150
    # 1100-1249 are stored by now: only the 150 others are new (the rollup's rows not counted)
    assert store.put_rows(CASES, again.assign(status="closed"), on_conflict="ignore") == 150
    _same_by_rollup_and_group_by(store, reads)


@pytest.mark.parametrize("kwargs", [
    {"by": ["department"], "period": "month"},  # a slice the rollup does not keep
    {"by": ["grid_code"], "period": "day"},
    {"by": ["grid_code"], "period": "month", "since": datetime(2026, 1, 10, tzinfo=UTC),
     "until": datetime(2026, 3, 1, tzinfo=UTC)},  # bounds inside months
    {"by": ["grid_code"], "period": "month", "as_of": datetime(2025, 12, 25, tzinfo=UTC)},
    {"by": ["grid_code"], "period": None, "as_of": datetime(2026, 2, 1, tzinfo=UTC)},
])
def test_counts_the_rollup_does_not_hold_go_through_the_group_by(
    store, generated_cases, monkeypatch, kwargs
):
    from twin import kpi

    store.put_rows(CASES, generated_cases)
    reads = _rollup_reads(monkeypatch)
    got = store.case_counts(list(kpi.COUNTS), **kwargs)
    custom = store.case_counts({"filed": "filed_at <= {as_of}", "held": "status = 'on_hold'"},
                               **kwargs)
    assert sum(reads) == 0  # the rollup holds none of these counts
    want = store.case_counts(_grouped(kpi.COUNTS), **kwargs)
    pd.testing.assert_frame_equal(got, want)
    assert len(got) > 0 and custom["filed"].tolist() == got["filed"].tolist()


def test_a_case_filed_before_the_rollup_calendar_is_counted_all_the_same(store, generated_cases):
    """The embedded calendar starts in 1992 (no daylight saving time in Shanghai since)."""
    from twin import kpi

    old = generated_cases.head(50).copy()
    old["filed_at"] = pd.Timestamp("1991-12-15T02:00Z")
    store.put_rows(CASES, old)
    got = store.case_counts(list(kpi.COUNTS), by=["grid_code"], period="month")
    want = store.case_counts(_grouped(kpi.COUNTS), by=["grid_code"], period="month")
    pd.testing.assert_frame_equal(got, want)
    assert got["period"].iloc[0] == "1991-12" and got["filed"].sum() == 50


def test_the_current_month_is_counted_as_of_now_not_as_of_its_end(store, generated_cases,
                                                                   monkeypatch):
    """A month not ended by as_of comes from the GROUP BY: its counts as of as_of differ."""
    from twin import kpi

    store.put_rows(CASES, generated_cases)
    reads = _rollup_reads(monkeypatch)
    as_of = datetime(2026, 2, 10, tzinfo=UTC)
    got = store.case_counts(list(kpi.COUNTS), by=["grid_code"], period="month", as_of=as_of)
    at_end = store.case_counts(list(kpi.COUNTS), by=["grid_code"], period="month")
    assert len(reads) == 2 and reads[0] < len(got)  # Dec and Jan from the rollup, Feb not
    feb = got["period"] == "2026-02"
    assert feb.any() and (got.loc[feb, "closed"].sum()
                          < at_end.loc[at_end["period"] == "2026-02", "closed"].sum())
    later = got["period"] == "2026-03"  # in the cohort, but not filed yet as of as_of
    assert later.any() and got.loc[later, list(kpi.COUNTS)].to_numpy().sum() == 0


# -- retention of layer versions -----------------------------------------------------------------


def test_purge_layer_versions_keeps_the_current_one_and_is_audited(store, buildings):
    for i in range(4):
        store.write_layer("buildings", buildings.iloc[: 3 - i % 3], actor="a", source=f"v{i + 1}")
    store.set_current_version("buildings", 2, actor="admin")  # v2 current, v4 the newest
    assert store.purge_layer_versions("buildings", 4, actor="keeper") == [1, 3]
    assert [(v.version, v.current) for v in store.layer_versions("buildings")] == [
        (2, True), (4, False)]
    assert len(store.read_layer("buildings")) == 2
    assert len(store.read_layer("buildings", version=4)) == 3
    with pytest.raises(NotFoundError):
        store.read_layer("buildings", version=1)
    last = store.read_audit().iloc[-1]
    assert (last["actor"], last["action"], last["target"]) == ("keeper", "layer.purge",
                                                               "layer:buildings")
    assert '"versions": [1, 3]' in last["detail"] and store.verify_audit() is None
    assert store.purge_layer_versions("buildings", 99, actor="keeper") == [4]
    assert store.purge_layer_versions("buildings", 99, actor="keeper") == []
    assert [v.version for v in store.layer_versions("buildings")] == [2]
    with pytest.raises(ValidationError, match="positive"):
        store.purge_layer_versions("buildings", 0, actor="keeper")
    with pytest.raises(LayerNotFoundError):
        store.purge_layer_versions("planets", 2, actor="keeper")


# -- what the two stores share, and what a store offers beyond the contract ------------------------


def test_a_validated_layer_is_written_without_a_second_validation(store, buildings, monkeypatch):
    from twin import schema
    from twin.schema import ValidatedLayer

    spec = layers.get_layer("buildings")
    checked = validate_layer_frame(spec, buildings)
    calls = []
    real = schema.validate_layer_frame
    monkeypatch.setattr(schema, "validate_layer_frame",
                        lambda *a, **k: calls.append(1) or real(*a, **k))
    v = store.write_layers({"buildings": ValidatedLayer("buildings", checked)}, actor="a",
                           source="t")[0]
    assert (v.version, v.rows, calls) == (1, 3, [])
    assert_same_layer(store.read_layer("buildings"), buildings, "buildings")
    with pytest.raises(ValidationError, match="handed over as layer 'parking'"):
        store.write_layers({"parking": ValidatedLayer("buildings", checked)}, actor="a",
                           source="t")
    with pytest.raises(ValidationError, match="not the canonical table"):
        store.write_layers({"buildings": ValidatedLayer("buildings", buildings.iloc[::-1])},
                           actor="a", source="t")
    assert [h.version for h in store.layer_versions("buildings")] == [1]


def test_the_watermark_moves_with_a_write_and_not_with_a_read(store):
    mark = store.watermark()
    if mark is None:  # a store that cannot tell (PostGIS): the cockpit re-reads on a timer
        assert store.fast_reader() is not None
        return
    store.read_cases()
    assert store.watermark() == mark
    store.create_case(_case())
    assert store.watermark() != mark


def test_only_a_store_that_runs_sql_for_queries_offers_a_fast_reader(store):
    reader = store.fast_reader()
    if reader is None:
        assert type(store).__name__ == "EmbeddedStore"
        return
    assert reader.schema == (store.schema or "public")
    pooled = reader.connection()
    try:
        with pooled.driver_connection.cursor() as cursor:
            cursor.execute("SELECT current_schema()")
            assert cursor.fetchone()[0] == reader.schema
    finally:
        pooled.close()


#: The orchestration both stores share: written once in twin.store.sql.SQLStore.
SHARED = (
    "write_layers", "read_layer", "layer_versions", "current_versions", "set_current_version",
    "purge_layer_versions", "read_events", "put_rows", "read_rows", "create_case",
    "update_case", "get_case", "case_history", "read_cases", "case_counts", "append_audit",
    "read_audit", "_audit", "_regrid_cases", "_versions", "_current_stamps", "_select",
)


@pytest.mark.parametrize("name", SHARED)
def test_the_concrete_stores_do_not_redo_the_shared_orchestration(name):
    from twin.store.embedded import EmbeddedStore
    from twin.store.postgis import PostGISStore
    from twin.store.sql import SQLStore

    assert name in vars(SQLStore)
    for concrete in (EmbeddedStore, PostGISStore):
        assert issubclass(concrete, SQLStore)
        assert name not in vars(concrete), f"{concrete.__name__} redefines {name}"


def test_the_rollup_counts_the_months_of_the_zone_setting(store_factory, generated_cases,
                                                          monkeypatch):
    """Months are local months of the ``timezone`` setting; a store opened after the setting
    changed rebuilds its rollup for the new zone, one opened before answers by the GROUP BY."""
    first, again = store_factory
    first.put_rows(CASES, generated_cases)
    monkeypatch.setenv("TWIN_TIMEZONE", "Asia/Kathmandu")  # +05:45: no month edge in common
    filed = pd.to_datetime(generated_cases["filed_at"], utc=True).dropna()
    want = filed.dt.tz_convert("Asia/Kathmandu").dt.strftime("%Y-%m").value_counts().sort_index()
    shanghai = filed.dt.tz_convert("Asia/Shanghai").dt.strftime("%Y-%m").value_counts()
    assert not want.equals(shanghai.sort_index())  # the cases straddle month edges

    reads = _rollup_reads(monkeypatch)
    stale = first.case_counts(["filed"], period="month")  # opened in Shanghai's months
    assert reads == []  # its rollup holds the old zone's months: the GROUP BY answers
    reopened = again()
    fresh = reopened.case_counts(["filed"], period="month")
    assert len(reads) == 1  # rebuilt for Kathmandu on opening, and read
    for got in (stale, fresh):
        assert got.set_index("period")["filed"].to_dict() == want.to_dict()
