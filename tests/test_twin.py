"""put_layer assigns grids from the stored grid cells; the Twin caches layers per version."""

from __future__ import annotations

import pytest

from twin.errors import LayerNotFoundError, StaleUpdateError
from twin.twin import Twin, current_grid_cells, current_version, put_layer


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


def _renumbered(grid_cells):
    """The same two grids with the first one's code changed (a new survey)."""
    return grid_cells.assign(grid_code=["45031100100109", "45031100100102"],
                             sequence=["09", "02"])


def test_a_layer_is_assigned_again_when_grid_cells_were_loaded_meanwhile(
    store, grid_cells, buildings
):
    put_layer(store, "grid_cells", grid_cells, actor="t", source="grids-1")
    read_before = current_grid_cells(store)  # what a slow load read at its start
    put_layer(store, "grid_cells", _renumbered(grid_cells), actor="t", source="grids-2")
    # the store refuses a write based on the replaced grid cells, and writes nothing
    with pytest.raises(StaleUpdateError, match="grid_cells .read version 1, now 2"):
        store.write_layers({"buildings": buildings}, actor="t", source="b",
                           expect={"grid_cells": read_before.version})
    assert current_version(store, "buildings") is None
    # put_layer reads the new grid cells and assigns again
    put_layer(store, "buildings", buildings, actor="t", source="b", grid_cells=read_before)
    got = store.read_layer("buildings").set_index("building_code")["grid_code"].to_dict()
    assert got == {"B1": "45031100100109", "B2": "45031100100109", "B3": "45031100100102"}


class _LoadsFirst:
    """A store on which another writer loads *layer* just before the next write_layers."""

    def __init__(self, store, layer, frame):
        self._store, self._pending = store, (layer, frame)
        self.writes = 0

    def __getattr__(self, name):
        return getattr(self._store, name)

    def write_layers(self, frames, **kwargs):
        self.writes += 1
        if self._pending is not None:
            layer, frame = self._pending
            self._pending = None
            put_layer(self._store, layer, frame, actor="other", source="meanwhile")
        return self._store.write_layers(frames, **kwargs)


def test_grid_cells_loaded_beside_a_layer_load_do_not_undo_it(store, grid_cells, buildings):
    put_layer(store, "grid_cells", grid_cells, actor="t", source="grids-1")
    put_layer(store, "buildings", buildings, actor="t", source="b-1")
    # while the new grid cells re-assign buildings version 1, someone loads version 2
    racing = _LoadsFirst(store, "buildings", buildings.iloc[1:])
    put_layer(racing, "grid_cells", _renumbered(grid_cells), actor="t", source="grids-2")
    assert racing.writes == 2  # the first write was refused, the second re-read version 2
    got = store.read_layer("buildings").set_index("building_code")["grid_code"].to_dict()
    assert got == {"B2": "45031100100109", "B3": "45031100100102"}  # version 2, new grids
    assert [v.source for v in store.layer_versions("buildings")] == ["b-1", "meanwhile",
                                                                     "grids-2"]


def test_put_layer_without_grids_keeps_the_frames_own_columns(store, cameras):
    put_layer(store, "cameras", cameras.assign(grid_code="X1"), actor="t", source="c.csv")
    assert store.read_layer("cameras")["grid_code"].tolist() == ["X1"]


def test_twin_reads_once_per_version_and_rereads_when_it_changes(store, buildings):
    twin = Twin(store)
    assert twin.versions() == {}
    with pytest.raises(LayerNotFoundError, match="gridtwin make-demo"):
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
