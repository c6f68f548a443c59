"""Vectorised enrichment of feed points: grid, building, lot and covering cameras."""

from __future__ import annotations

import geopandas as gpd
import numpy as np
import pytest
from shapely.geometry import Point, box

from tests.conftest import LAT, LON, D
from twin import deck
from twin.enrich import ConeIndex, Enricher, camera_cones


@pytest.fixture
def lots() -> gpd.GeoDataFrame:
    return gpd.GeoDataFrame(
        {"lot_id": ["P1", "P2"], "kind": ["surface", "surface"], "total_spaces": [10, 5]},
        geometry=[box(LON + 0.0011, LAT + 0.0001, LON + 0.0015, LAT + 0.0003),
                  Point(LON + 0.0018, LAT + 0.0002)],
        crs=4326,
    )


def test_enricher_assigns_grid_building_lot_and_cameras(grid_cells, buildings, cameras, lots):
    enricher = Enricher(grid_cells=grid_cells, buildings=buildings, parking=lots, cameras=cameras)
    # camera C1 at (+0.0002, +0.0002) looks east 40 m: (+0.0004, +0.0002) is ~20 m in front
    lon = np.array([LON + 0.0004, LON + 0.00015, LON + 0.0012, LON + 0.0002, np.nan, LON + 5])
    lat = np.array([LAT + 0.0002, LAT + 0.00045, LAT + 0.0002, LAT + 0.0008, LAT, LAT])
    got = enricher.enrich(lon, lat)
    assert got["grid_code"].tolist() == ["45031100100101", "45031100100101", "45031100100102",
                                         "45031100100101", None, None]
    assert got["resp_grid_id"].tolist()[:3] == ["R01", "R01", "R02"]
    assert got["building_code"].tolist() == [None, "B1", None, None, None, None]
    assert got["lot_id"].tolist() == [None, None, "P1", None, None, None]  # P2 is a point lot
    assert got["camera_ids"].tolist() == [("C1",), (), (), (), (), ()]


def test_cone_index_answers_many_cameras_and_points_at_once():
    n = 200
    cams = gpd.GeoDataFrame(
        {"camera_id": [f"C{i:03d}" for i in range(n)], "heading_deg": np.zeros(n),
         "fov_deg": np.full(n, 90.0), "range_m": np.full(n, 30.0)},
        geometry=[Point(LON, LAT)] * n, crs=4326,
    )
    index = ConeIndex(cams)
    ahead = Point(LON, LAT + 0.0001)  # ~11 m north, inside every cone
    behind = Point(LON, LAT - 0.0001)
    got = index.covering(np.array([ahead, behind, None], dtype=object))
    assert got[0] == tuple(f"C{i:03d}" for i in range(n))
    assert got[1] == () and got[2] == ()


def test_deck_draws_the_same_cones_the_enricher_uses(cameras):
    assert deck.camera_cones is camera_cones
    assert deck.camera_cones(cameras).geometry.iloc[0].equals(
        ConeIndex(cameras).cones.geometry.iloc[0]
    )


def test_enricher_without_layers_returns_empty_columns():
    got = Enricher().enrich([LON], [LAT + D])
    assert got.iloc[0].to_dict() == {"grid_code": None, "resp_grid_id": None,
                                     "community_code": None, "street_code": None,
                                     "building_code": None, "lot_id": None, "camera_ids": ()}
