"""Batch intake: each case as twin.cases.report makes it; one transaction, all or nothing."""

from __future__ import annotations

import pandas as pd
import pytest

from tests.conftest import LAT, LON, D
from twin import cases, intake
from twin.errors import DuplicateIdError, PermissionDeniedError, ValidationError

AT = pd.Timestamp("2026-03-02T02:00:00Z")  # a Monday morning, local working hours


def reports(n: int = 4) -> list[dict]:
    spots = [(LON + D * 0.3, LAT + D * 0.5, "E0101"), (LON + D * 1.5, LAT + D * 0.5, "P0101"),
             (LON + D * 0.31, LAT + D * 0.5, "E0101"), (LON + D * 1.7, LAT + D * 0.2, "E0102")]
    return [{"category": code, "lon": lon, "lat": lat, "description": f"r{i}",
             "source": "resident", "actor": "res", "role": "resident", "origin": "test"}
            for i, (lon, lat, code) in enumerate(spots[:n])]


def test_a_batch_makes_the_cases_report_makes_and_audits_them(store, grid_cells):
    grid_cells = grid_cells.assign(grid_worker=["gw1", "gw2"])
    one = [cases.report(store, category=r["category"], lon=r["lon"], lat=r["lat"],
                        description=r["description"], source="resident", actor="res",
                        role="resident", grid_cells=grid_cells, at=AT) for r in reports()]
    many = intake.report_many(store, reports(), grid_cells=grid_cells, at=AT)
    for single, batched in zip(one, many, strict=True):
        stored = store.get_case(batched["id"])
        for key in ("grid_code", "resp_grid_id", "community_code", "street_code", "area_class",
                    "department", "assignee", "family", "status", "source"):
            assert stored[key] == single[key], key
        sd, bd = cases._data(single), cases._data(stored)
        assert bd["deadlines"] == sd["deadlines"] and bd["route"] == sd["route"]
        assert bd["timer"] == sd["timer"]
    # the third report lies 10 m from the first: a possible duplicate of both earlier E0101s
    assert set(cases._data(store.get_case(many[2]["id"]))["possible_duplicates"]) >= {
        one[0]["id"], one[2]["id"]}
    log = store.read_audit()
    assert (log["action"] == "case.collect").sum() == 4
    assert store.verify_audit() is None
    assert len(store.case_history(many[0]["id"])) == 1


def test_refused_reports_are_told_why_and_the_rest_are_stored(store, grid_cells):
    batch = reports(2) + [
        {**reports(1)[0], "category": "X9999"},
        {**reports(1)[0], "lon": 500},
        {**reports(1)[0], "role": "grid_worker", "actor": "gw2",
         "source": "patrol"},  # gw2's grids are R02; the point is in grid …01
    ]
    cells = grid_cells.assign(grid_worker=["gw1", "gw2"])
    out = intake.report_many(store, batch, grid_cells=cells, at=AT)
    assert [type(o).__name__ for o in out[:2]] == ["dict", "dict"]
    assert isinstance(out[2], ValidationError) and "X9999" in str(out[2])
    assert isinstance(out[3], ValidationError)
    assert isinstance(out[4], PermissionDeniedError)
    assert len(store.read_cases()) == 2


def test_create_cases_is_all_or_nothing(store, grid_cells):
    first = intake.report_many(store, reports(1), grid_cells=grid_cells, at=AT)[0]
    before = len(store.read_audit())
    case = {**first, "id": "fresh-1"}
    again = {**first}  # its id exists
    step = {"at": AT, "actor": "res", "role": "resident", "action": "collect",
            "to_status": "collected"}
    with pytest.raises(DuplicateIdError, match="nothing of the batch"):
        store.create_cases([case, again], histories=[step, step],
                           audits=[("res", "case.collect", "case:x", {}, "")] * 2)
    with pytest.raises(ValidationError, match="first steps"):
        store.create_cases([case], histories=[])
    assert len(store.read_cases()) == 1 and len(store.read_audit()) == before


@pytest.mark.parametrize(("bearing", "metres", "found"),
                         [(45, 49.0, True), (225, 49.0, True), (45, 51.0, False), (0, 51.0, False)])
def test_duplicates_are_found_within_50_m_in_any_direction_and_not_beyond(
        store, grid_cells, bearing, metres, found):
    import numpy as np

    from twin.crs import offset_lonlat

    first = intake.report_many(store, reports(1), grid_cells=grid_cells, at=AT)[0]
    east, north = metres * np.sin(np.radians(bearing)), metres * np.cos(np.radians(bearing))
    lon, lat = offset_lonlat(first["lon"], first["lat"], east, north)
    again = {**reports(1)[0], "lon": float(lon), "lat": float(lat)}
    later = intake.report_many(store, [again], grid_cells=grid_cells,
                               at=AT + pd.Timedelta(minutes=5))[0]
    dupes = cases._data(store.get_case(later["id"]))["possible_duplicates"]
    assert dupes == ([first["id"]] if found else [])
