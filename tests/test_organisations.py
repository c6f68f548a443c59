"""Organisations on both stores: loaded with history, routing and their own clocks, escalation
back to the community, scoped access of their staff, indicators (public ones anonymised)."""

from __future__ import annotations

import json

import geopandas as gpd
import pandas as pd
import pytest

from tests.browser import DX, DY, LAT, LON, organisation_areas, small_twin_layers
from tests.sessions import store_users
from tests.test_trust_roles import data_home
from twin import cases, intake, organisations, orgkpi, trust
from twin.errors import PermissionDeniedError, ValidationError
from twin.load import load_layer
from twin.trust import User
from twin.twin import put_layer

# Saturday 2026-03-07 10:00 in Guilin: the community's calendar is closed until Monday, the
# first property company works every day 08:00-12:00
AT = pd.Timestamp("2026-03-07 02:00", tz="UTC")
B1 = (LON + 0.0006, LAT + 0.0006)  # in the first estate (PM1), grid 1
B3 = (LON + 0.0034, LAT + 0.0021)  # in the second estate (PM2), grid 2
OUTSIDE_ESTATES = (LON + 0.0021, LAT + 0.0013)


def _residents() -> pd.DataFrame:
    return pd.DataFrame({"resident_id": ["P1", "P3"], "building_code": ["B-1", "B-3"],
                         "name": ["张一", "李三"], "phone": ["13911112222", "13933334444"],
                         "id_number": ["450311199001011234", "450311199001015678"],
                         "household_size": [3, 2], "tags": ["", ""]})


@pytest.fixture
def org_store(store, tmp_path, monkeypatch):
    monkeypatch.setenv("TWIN_DATA_DIR", str(data_home(tmp_path)))
    for name, frame in small_twin_layers().items():
        put_layer(store, name, frame, actor="tests", source="tests")
    put_layer(store, "residents", _residents(), actor="tests", source="tests")
    put_layer(store, "organisations", organisation_areas(), actor="tests", source="tests")
    store_users(store, User("admin1", "admin"), User("disp", "dispatcher"),
                User("boss", "official"), User("gw", "grid_worker", grids=("R01",)),
                User("gw2", "grid_worker", grids=("R02",)),
                User("pm1", "org_staff", org_id="PM1"), User("pm1a", "org_admin", org_id="PM1"),
                User("pm2", "org_staff", org_id="PM2"))
    return store


def _data(row) -> dict:
    return json.loads(row["data"]) if isinstance(row["data"], str) else dict(row["data"])


def _report(store, where, code="E0101", at=AT, who="gw"):
    return trust.report_case(store, User(who, "grid_worker"), category=code, lon=where[0],
                             lat=where[1], description="楼下垃圾", source="patrol", at=at,
                             reporter={"name": "张一", "phone": "13911112222"},
                             grid_cells=small_twin_layers()["grid_cells"])


def _step(store, who, role, case_id, action, at, **kw):
    return trust.transition_case(store, User(who, role), case_id, action, at=at,
                                 grid_cells=small_twin_layers()["grid_cells"], **kw)


def _dispatched(store, where, code="E0101", at=AT, **dispatch):
    case = _report(store, where, code, at)
    _step(store, "disp", "dispatcher", case["id"], "file", at + pd.Timedelta(minutes=2))
    return _step(store, "disp", "dispatcher", case["id"], "dispatch",
                 at + pd.Timedelta(minutes=4), **dispatch)


def test_organisations_load_like_a_layer_with_history_and_the_admin_edits_them(store, tmp_path):
    path = tmp_path / "orgs.geojson"
    areas = organisation_areas()
    areas.to_file(path, driver="GeoJSON")
    first = load_layer(store, "organisations", path, actor="datastaff")
    areas.loc[areas["org_id"] == "PM2", "name"] = "丹桂园物业(新)"
    areas.to_file(path, driver="GeoJSON")
    load_layer(store, "organisations", path, actor="datastaff")
    assert [v.version for v in store.layer_versions("organisations")] == [1, 2]
    assert set(store.read_layer("organisations", version=first.version.version)["name"]) >= {
        "丹桂园物业"}
    assert organisations.names(organisations.current(store))["PM2"] == "丹桂园物业(新)"

    store_users(store, User("admin1", "admin"), User("disp", "dispatcher"))
    table = trust.organisations_for_edit(store, User("admin1", "admin"))
    assert "geometry" not in table and len(table) == 4
    table.loc[table["org_id"] == "PM1", "services"] = "E0101=3 working_hours"
    trust.save_organisations(store, User("admin1", "admin"), table)
    versions = store.layer_versions("organisations")
    assert [v.version for v in versions] == [1, 2, 3] and versions[-1].actor == "admin1"
    saved = organisations.current(store)
    assert saved.loc[saved["org_id"] == "PM1", "services"].iloc[0] == "E0101=3 working_hours"
    assert saved.geometry.equals(store.read_layer("organisations", version=2).geometry)

    bad = table.copy()
    bad.loc[bad["org_id"] == "PM1", "services"] = "E0101=3 fortnights"
    with pytest.raises(ValidationError, match="fortnights"):
        trust.save_organisations(store, User("admin1", "admin"), bad)
    with pytest.raises(PermissionDeniedError):
        trust.save_organisations(store, User("disp", "dispatcher"), table)
    assert len(store.layer_versions("organisations")) == 3  # nothing written


@pytest.mark.parametrize(("text", "match"), [
    ("E0101=4", "CODE=AMOUNT UNIT"), ("X0101", "CODE"), ("E9999", "unknown category"),
    ("E0101=2 weeks", "unit"),
])
def test_services_that_cannot_be_read_are_refused(text, match):
    with pytest.raises(ValidationError, match=match):
        organisations.parse_services(text, set(cases.load_categories().index))


def test_routing_own_clocks_escalation_and_scoped_access(org_store):
    store = org_store
    # the property company first, for the categories it owns in its estate
    c1 = _dispatched(store, B1)
    assert c1["department"] == "org:PM1" and c1["org_id"] == "PM1"
    assert _data(c1)["route"][:2] == ["org:PM1", "territory:450311001001"]
    # its own limit (2 working hours) on its own hours (08:00-12:00 every day): Sunday 08:04
    assert pd.Timestamp(c1["org_deadline"]) == pd.Timestamp("2026-03-08 00:04", tz="UTC")
    assert pd.Timestamp(_data(c1)["deadlines"]["handle"]) > pd.Timestamp(c1["org_deadline"])
    # not owned there, or not owned at all: the community as usual
    assert _report(store, OUTSIDE_ESTATES)["department"] == "territory:450311001001"
    assert _report(store, B1, "E0105")["department"] == "territory:450311001001"
    c2 = _dispatched(store, B3)
    assert c2["department"] == "org:PM2"
    # the dispatcher may hand a case to any organisation
    c3 = _dispatched(store, OUTSIDE_ESTATES, "E0601", department="org:SO1", assignee=None)
    assert c3["department"] == "org:SO1" and c3["org_id"] == "SO1"
    with pytest.raises(ValidationError, match="no organisation"):
        _dispatched(store, OUTSIDE_ESTATES, "E0601", department="org:NOPE", assignee=None)

    pm1, pm2 = trust.resolve(store, User("pm1", "org_staff")), User("pm2", "org_staff")
    assert set(trust.visible_cases(store, pm1)["id"]) == {c1["id"]}
    assert set(trust.visible_cases(store, pm2)["id"]) == {c2["id"]}
    with pytest.raises(PermissionDeniedError, match="not given to organisation"):
        trust.read_case(store, pm1, c2["id"])
    with pytest.raises(PermissionDeniedError):
        _step(store, "pm2", "org_staff", c1["id"], "handle", AT + pd.Timedelta(minutes=6))
    assert trust.read_case(store, pm1, c1["id"])["data"]["reporter"]["phone"] == "13911112222"
    assert trust.allowed_actions(trust.read_case(store, pm1, c1["id"]), pm1) == [
        "return", "handle", "request_extension"]
    _step(store, "pm1", "org_staff", c1["id"], "handle", AT + pd.Timedelta(minutes=6))
    # residents: only of the estate's buildings, masked; another estate's refused
    mine = trust.read_residents(store, pm1)
    assert list(mine["resident_id"]) == ["P1"] and mine["phone"].iloc[0] == "139****2222"
    with pytest.raises(PermissionDeniedError, match="outside the service area"):
        trust.read_residents(store, pm1, building_code="B-3")
    audit = store.read_audit()
    assert {"case.denied", "case.read", "residents.denied", "residents.read"} <= set(
        audit.loc[audit["actor"].isin(["pm1", "pm2"]), "action"])

    # the second company reports in time; the first misses its own limit: back to the community
    _step(store, "pm2", "org_staff", c2["id"], "handle", AT + pd.Timedelta(minutes=8))
    _step(store, "pm2", "org_staff", c2["id"], "feedback", AT + pd.Timedelta(minutes=30))
    late = AT + pd.Timedelta(hours=23)  # Sunday 09:00: past PM1's Sunday 08:04
    assert list(organisations.overdue(store.read_cases(), late)["id"]) == [c1["id"]]
    assert cases.escalate_org_overdue(store, late, grid_cells=small_twin_layers()[
        "grid_cells"]) == [c1["id"]]
    assert cases.escalate_org_overdue(store, late + pd.Timedelta(hours=1)) == []
    back = store.get_case(c1["id"])
    assert back["department"] == "territory:450311001001" and back["assignee"] == "张三"
    assert back["org_id"] == "PM1" and back["supervised"] == 1
    step = store.case_history(c1["id"]).iloc[-1]
    assert step["action"] == "supervise" and "桂花苑物业" in step["note"]
    record = _data(step)
    assert record["from_department"] == "org:PM1" and record["kind"] == "timeout"
    # the company still sees the case it was given, but no longer acts or sees the reporter
    seen = trust.read_case(store, pm1, c1["id"])
    assert seen["data"]["reporter"] == "***" and trust.allowed_actions(seen, pm1) == []
    with pytest.raises(PermissionDeniedError, match="only the cases assigned"):
        _step(store, "pm1", "org_staff", c1["id"], "feedback", late + pd.Timedelta(hours=2))

    # the loop ends for the second case: checked by the grid, closed, evaluated
    t = late + pd.Timedelta(hours=26)
    _step(store, "gw2", "grid_worker", c2["id"], "check", t)
    _step(store, "disp", "dispatcher", c2["id"], "close", t + pd.Timedelta(minutes=5))
    _step(store, "boss", "official", c2["id"], "evaluate", t + pd.Timedelta(minutes=9), score=90)

    table = trust.organisation_indicators(store, User("boss", "official"), as_of=t + pd.Timedelta(
        hours=1)).set_index("org_id")
    assert table.loc["PM1", ["owned", "due", "on_time", "escalated"]].tolist() == [1, 1, 0, 1]
    assert table.loc["PM2", ["owned", "due", "on_time", "reported"]].tolist() == [1, 1, 1, 1]
    assert table.loc["PM2", "on_time_rate"] == 100 and table.loc["PM2", "satisfaction"] == 90
    assert table.loc["PM1", "on_time_rate"] == 0 and table.loc["OC1", "owned"] == 0
    own = trust.organisation_indicators(store, pm2)
    assert list(own["org_id"]) == ["PM2"]

    public = trust.public_organisations(store)
    assert public["owned"].isna().all() and public["on_time_rate"].isna().all()
    assert not {"contact_name", "contact_phone", "org_id", "office_phone"} & set(public.columns)
    shown = orgkpi.public_indicators(store.read_cases(), organisations.current(store),
                                            min_count=1).set_index("name")
    assert shown.loc["丹桂园物业", "satisfaction"] == 90 and shown.loc["桂花苑物业", "owned"] == 1


def test_owners_are_found_for_many_points_at_once_by_place_category_and_date():
    areas = organisation_areas()
    areas.loc[areas["org_id"] == "PM2", "valid_to"] = "2026-02-28"  # its contract ended
    areas = gpd.GeoDataFrame(areas.assign(
        valid_from=pd.to_datetime(areas["valid_from"]).dt.date,
        valid_to=pd.to_datetime(areas["valid_to"]).dt.date), crs=4326)
    lon = [B1[0], B1[0], B3[0], B3[0], OUTSIDE_ESTATES[0], LON + DX + 1]
    lat = [B1[1], B1[1], B3[1], B3[1], OUTSIDE_ESTATES[1], LAT + DY]
    codes = ["E0101", "E0301", "E0101", "E0101", "E0101", "E0101"]
    at = pd.to_datetime(["2026-03-02"] * 3 + ["2026-02-27"] + ["2026-03-02"] * 2, utc=True)
    got = organisations.owners_at(lon, lat, codes, at, areas)
    # the property company before the owners' committee; an ended contract owns nothing
    assert list(got) == ["PM1", "OC1", None, "PM2", None, None]
    cal = organisations.org_calendar(organisations.table(areas).set_index("org_id").loc["PM1"])
    assert cal.is_working_day(pd.Timestamp("2026-03-07"))  # a Saturday: PM1 works every day
    with pytest.raises(ValidationError, match="HH:MM-HH:MM"):
        organisations.parse_hours("12:00-08:00")
    with pytest.raises(ValidationError, match="different types"):
        organisations.check(areas.assign(org_id=["PM1", "PM2", "PM1", "SO1"]))


def test_organisation_staff_need_an_organisation(store):
    with pytest.raises(ValidationError, match="needs an organisation"):
        trust.create_user(store, "nobody", "a-long-password", "org_staff")
    assert cases.route(cases.lookup_category("E0101"), {"community_code": "450311001001"},
                       org="PM1")["post"] == "organisation"


def test_a_file_whose_services_cannot_be_read_is_refused_and_nothing_written(store, tmp_path):
    path = tmp_path / "orgs.geojson"
    areas = organisation_areas()
    areas.loc[0, "services"] = "E0101=2 fortnights"
    areas.to_file(path, driver="GeoJSON")
    with pytest.raises(ValidationError, match="PM1.*fortnights"):
        load_layer(store, "organisations", path, actor="datastaff")
    assert store.layer_versions("organisations") == []


def test_a_batch_of_reports_is_routed_to_organisations_as_one_report_is(org_store):
    cells = small_twin_layers()["grid_cells"]
    spots = [B1, B3, OUTSIDE_ESTATES]
    report = {"category": "E0101", "description": "楼下垃圾", "source": "resident",
              "actor": "res", "role": "resident"}
    single = [cases.report(org_store, lon=x, lat=y, grid_cells=cells, at=AT, **report)
              for x, y in spots]
    batch = intake.report_many(org_store, [{**report, "lon": x, "lat": y} for x, y in spots],
                               grid_cells=cells, at=AT)  # Open311 posts come in batches
    assert [c["department"] for c in single[:2]] == ["org:PM1", "org:PM2"]
    assert not str(single[2]["department"]).startswith("org:")
    for one, many in zip(single, batch, strict=True):
        stored = org_store.get_case(many["id"])
        assert (stored["department"], stored["org_id"], stored["assignee"]) == (
            one["department"], one["org_id"], one["assignee"])
        assert _data(stored)["route"] == _data(one)["route"]
