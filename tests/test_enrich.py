"""Assigning features to unit grids: hand-built cases, ties, outside points, CRS, the index."""

from __future__ import annotations

import geopandas as gpd
import numpy as np
import pytest
from shapely.geometry import LineString, Point, Polygon, box

from tests.conftest import LAT, LON, D
from twin.enrich import PolygonIndex, assign_grids, grid_index
from twin.errors import ValidationError

G1, G2 = "45031100100101", "45031100100102"


def features(*geoms) -> gpd.GeoDataFrame:
    return gpd.GeoDataFrame({"fid": range(len(geoms))}, geometry=list(geoms), crs=4326)


CASES = [
    ("inside the first grid", Point(LON + D / 2, LAT + D / 2), G1),
    ("inside the second grid", Point(LON + 1.5 * D, LAT + D / 2), G2),
    ("on the shared edge: smaller code wins", Point(LON + D, LAT + D / 2), G1),
    ("on the outer edge counts as inside", Point(LON + 2 * D, LAT + D / 2), G2),
    ("outside every grid", Point(LON - D, LAT), None),
    ("polygon mostly in grid 2 goes by its representative point",
     box(LON + 0.9 * D, LAT + 0.2 * D, LON + 1.9 * D, LAT + 0.4 * D), G2),
    ("L-shaped polygon whose centroid is outside it",
     Polygon([(LON + 1.1 * D, LAT + 0.1 * D), (LON + 1.9 * D, LAT + 0.1 * D),
              (LON + 1.9 * D, LAT + 0.2 * D), (LON + 1.2 * D, LAT + 0.2 * D),
              (LON + 1.2 * D, LAT + 0.9 * D), (LON + 1.1 * D, LAT + 0.9 * D)]), G2),
    ("line inside grid 1", LineString([(LON + 0.1 * D, LAT + 0.1 * D),
                                       (LON + 0.3 * D, LAT + 0.2 * D)]), G1),
]


@pytest.mark.parametrize("label, geom, expected", CASES, ids=[c[0] for c in CASES])
def test_assign_grids_hand_built_cases(grid_cells, label, geom, expected):
    got = assign_grids(features(geom), grid_cells)
    assert got["grid_code"].iloc[0] == expected
    if expected is None:
        assert got[["resp_grid_id", "community_code", "street_code"]].isna().all(axis=None)
    else:
        row = grid_cells.set_index("grid_code").loc[expected]
        assert got["resp_grid_id"].iloc[0] == row["resp_grid_id"]
        assert got["community_code"].iloc[0] == "450311001001"
        assert got["street_code"].iloc[0] == "450311001"


def test_a_whole_batch_at_once_keeps_order_and_rows(grid_cells):
    geoms = [c[1] for c in CASES]
    frame = features(*geoms)
    got = assign_grids(frame, grid_cells)
    assert got["grid_code"].tolist() == [c[2] for c in CASES]
    assert got["fid"].tolist() == list(range(len(CASES)))
    assert "grid_code" not in frame  # the input is not changed


def test_tie_break_does_not_depend_on_grid_order(grid_cells):
    edge = features(Point(LON + D, LAT + D / 2))
    reversed_grids = grid_cells.iloc[::-1].reset_index(drop=True)
    assert assign_grids(edge, reversed_grids)["grid_code"].item() == G1


def test_missing_geometry_gets_none(grid_cells):
    frame = features(Point(LON + D / 2, LAT + D / 2), None)
    assert assign_grids(frame, grid_cells)["grid_code"].tolist() == [G1, None]


def test_features_in_another_crs_are_converted(grid_cells):
    metric = features(Point(LON + 1.5 * D, LAT + D / 2)).to_crs(32649)
    got = assign_grids(metric, grid_cells)
    assert got["grid_code"].item() == G2
    assert got.crs.to_epsg() == 32649


def test_codes_come_from_the_grid_code_when_parts_are_missing(grid_cells):
    bare = grid_cells[["grid_code", "resp_grid_id", "geometry"]]
    got = assign_grids(features(Point(LON + D / 2, LAT + D / 2)), bare)
    assert got[["community_code", "street_code"]].iloc[0].tolist() == [
        "450311001001", "450311001"]


def test_a_prebuilt_index_is_reused_across_batches(grid_cells):
    index = grid_index(grid_cells)
    a = assign_grids(features(Point(LON + D / 2, LAT + D / 2)), index)
    b = assign_grids(features(Point(LON + 1.5 * D, LAT + D / 2)), index)
    assert (a["grid_code"].item(), b["grid_code"].item()) == (G1, G2)


def test_polygon_index_hands_out_attributes_and_breaks_ties_by_key():
    polys = gpd.GeoDataFrame(
        {"code": ["b", "a", "c"], "owner": ["乙", "甲", "丙"]},
        geometry=[box(0, 0, 10, 10), box(5, 0, 15, 10), box(20, 0, 30, 10)],
        crs=32649,
    )
    index = PolygonIndex(polys, key="code", columns=["owner"])
    pts = np.array([Point(7, 5), Point(2, 5), Point(25, 5), Point(50, 5)], dtype=object)
    assert index.locate(pts).tolist() == [1, 0, 2, -1]
    got = index.lookup(pts)
    assert got["code"].tolist() == ["a", "b", "c", None]
    assert got["owner"].tolist() == ["甲", "乙", "丙", None]


def test_bad_inputs_say_what_is_wrong(grid_cells):
    with pytest.raises(ValidationError, match="GeoDataFrame"):
        assign_grids(grid_cells.drop(columns="geometry").iloc[:, :2], grid_cells)
    with pytest.raises(ValidationError, match="grid_code"):
        assign_grids(features(Point(LON, LAT)), grid_cells.drop(columns="grid_code"))
    with pytest.raises(ValidationError, match="nope"):
        PolygonIndex(grid_cells, key="grid_code", columns=["nope"])


def test_representative_points_pass_points_through_and_drop_missing_or_empty():
    from shapely.geometry import Point as P

    from twin.enrich import representative_points

    square = box(0, 0, 2, 2)
    pts = np.array([P(1, 1), None, P(), square, Polygon()], dtype=object)
    got = representative_points(pts)
    assert got[0] is pts[0]  # the very same object: no point_on_surface on points
    assert got[1] is None and got[2] is None and got[4] is None
    assert square.covers(got[3])


def test_ties_among_many_overlapping_polygons_go_to_the_smallest_key_in_one_batch():
    # four polygons over the same spot, keys out of order; points in one, two, three and none
    polys = gpd.GeoDataFrame(
        {"code": ["d", "b", "c", "a"]},
        geometry=[box(0, 0, 10, 10), box(0, 0, 10, 10), box(5, 0, 15, 10), box(8, 0, 9, 10)],
        crs=32649,
    )
    index = PolygonIndex(polys, key="code", columns=[])
    pts = np.array([Point(2, 5), Point(12, 5), Point(8.5, 5), Point(50, 5), Point(6, 5)],
                   dtype=object)
    assert index.lookup(pts)["code"].tolist() == ["b", "c", "a", None, "b"]
    assert index.locate_points(pts).tolist() == [1, 2, 3, -1, 1]


def test_enricher_shares_points_across_layers_and_lists_covering_cameras(grid_cells):
    from twin.enrich import Enricher

    cams = gpd.GeoDataFrame(
        {"camera_id": ["C2", "C1"], "heading_deg": [90.0, 90.0], "fov_deg": [90.0, 90.0],
         "range_m": [500.0, 500.0]},
        geometry=[Point(LON, LAT + D / 2), Point(LON, LAT + D / 2)], crs=4326)
    enricher = Enricher(grid_cells=grid_cells, cameras=cams)
    got = enricher.enrich([LON + D / 2, LON - D, np.nan], [LAT + D / 2, LAT, LAT])
    assert got["grid_code"].tolist() == [G1, None, None]
    assert got["camera_ids"].tolist() == [("C1", "C2"), (), ()]
    assert got["building_code"].tolist() == [None, None, None]


def test_large_and_small_batches_find_the_same_pairs():
    """The point-tree path (batch larger than the polygons) equals one query per point."""
    import shapely

    from twin.enrich import PointBatch, intersecting_pairs

    ring = Polygon([(0, 0), (4, 0), (4, 4), (0, 4)], [[(1, 1), (3, 1), (3, 3), (1, 3)]])
    concave = Polygon([(5, 0), (9, 0), (9, 4), (7, 1), (5, 4)])
    polygons = np.array([ring, concave, box(3, 3, 6, 6), box(0, 0, 1, 1)], dtype=object)
    rng = np.random.default_rng(7)
    # random points, every vertex and edge midpoint, points in the hole, and missing points
    coords = np.vstack([rng.uniform(-1, 10, (400, 2)), shapely.get_coordinates(polygons),
                        [(2, 0), (2, 2), (4, 2), (7, 1), (6, 2.5)]])
    points = np.array([*shapely.points(coords), None], dtype=object)
    tree = shapely.STRtree(polygons)
    expected = set(zip(*tree.query(points, predicate="intersects"), strict=True))
    large = intersecting_pairs(PointBatch(points), polygons, tree)
    assert len(points) > len(polygons) and set(zip(*large, strict=True)) == expected
    edge, hole = len(coords) - 5, len(coords) - 4  # (2, 0) on the ring's edge; (2, 2) in its hole
    assert (edge, 0) in expected and (hole, 0) not in expected
    for i in range(0, len(points), 3):  # batches smaller than the polygons take the other path
        small = intersecting_pairs(PointBatch(points[i:i + 3]), polygons, tree)
        assert {(a + i, b) for a, b in zip(*small, strict=True)} == {
            (a, b) for a, b in expected if i <= a < i + 3}
