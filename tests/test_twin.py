"""put_layer assigns grids from the stored grid cells; the Twin caches layers per version."""

from __future__ import annotations

import pytest

from twin.errors import LayerNotFoundError
from twin.twin import Twin, current_version, put_layer


def test_put_layer_assigns_grids_from_the_stored_grid_cells(store, grid_cells, buildings):
    put_layer(store, "grid_cells", grid_cells, actor="t", source="grids.gpkg")
    v = put_layer(store, "buildings", buildings, actor="t", source="b.geojson", note="first")
    assert (v.version, v.rows, v.note) == (1, 3, "first")
    got = store.read_layer("buildings").set_index("building_code")
    # B1 and B2 lie in the first grid, B3 in the second (see tests/conftest.py)
    assert got["grid_code"].to_dict() == {
        "B1": "45031100100101", "B2": "45031100100101", "B3": "45031100100102"}
    assert got["resp_grid_id"].to_dict() == {"B1": "R01", "B2": "R01", "B3": "R02"}
    assert got["community_code"].eq("450311001001").all()
    assert got["street_code"].eq("450311001").all()


def test_put_layer_without_grids_keeps_the_frames_own_columns(store, cameras):
    put_layer(store, "cameras", cameras.assign(grid_code="X1"), actor="t", source="c.csv")
    assert store.read_layer("cameras")["grid_code"].tolist() == ["X1"]


def test_twin_reads_once_per_version_and_rereads_when_it_changes(store, buildings):
    twin = Twin(store)
    assert twin.versions() == {}
    with pytest.raises(LayerNotFoundError, match="make_demo"):
        twin.layer("buildings")
    with pytest.raises(LayerNotFoundError, match="declared layers"):
        twin.layer("no_such_layer")
    put_layer(store, "buildings", buildings, actor="t", source="v1")
    first = twin.layer("buildings")
    assert len(first) == 3
    assert twin.layer("buildings") is first  # cached: same version
    # another writer (not through this Twin) makes version 2 current
    put_layer(store, "buildings", buildings.iloc[:1], actor="other", source="v2")
    assert twin.versions() == {"buildings": 2}
    second = twin.layer("buildings")
    assert second is not first and len(second) == 1
    store.set_current_version("buildings", 1, actor="admin")
    assert len(twin.layer("buildings")) == 3
    assert current_version(store, "buildings").version == 1
    twin.put_layer("buildings", buildings.iloc[:2], actor="t", source="v3")
    assert len(twin.layer("buildings")) == 2 and twin.versions() == {"buildings": 3}
