"""twin.layercache: one read per layer version, shared by the twin, queries, cockpit and maps."""

from __future__ import annotations

import pytest

from twin import cockpit, deck, layercache, query
from twin.twin import Twin


@pytest.fixture
def counted_reads(store, monkeypatch):
    """The store's layer reads, by layer name."""
    reads: list[str] = []
    real = store.read_layer

    def read_layer(name, *args, **kwargs):
        reads.append(name)
        return real(name, *args, **kwargs)

    monkeypatch.setattr(store, "read_layer", read_layer)
    layercache.clear()
    yield reads
    layercache.clear()


def test_one_read_per_version_whoever_asks(store, buildings, grid_cells, counted_reads):
    store.write_layers({"buildings": buildings, "grid_cells": grid_cells}, actor="t", source="t")
    twin_frame = Twin(store).layer("buildings")
    page_frames = layercache.layers(store)
    query.nearest(store, "buildings", 2, point=(110.2905, 25.0805), engine="memory")  # a query too
    assert counted_reads.count("buildings") == 1
    assert page_frames["buildings"] is twin_frame is Twin(store).layer("buildings")
    assert set(page_frames) == {"buildings", "grid_cells"}

    store.write_layers({"buildings": buildings.head(2)}, actor="t", source="t")  # a new version
    assert len(Twin(store).layer("buildings")) == 2 == len(layercache.layers(store)["buildings"])
    assert counted_reads.count("buildings") == 2


def test_derived_objects_follow_the_frame(store, buildings, counted_reads):
    store.write_layers({"buildings": buildings}, actor="t", source="t")
    frame = layercache.layers(store)["buildings"]
    built: list[int] = []
    first = layercache.of_frame(frame, "k", lambda: built.append(1) or object())
    assert layercache.of_frame(frame, "k", lambda: built.append(1) or object()) is first
    assert built == [1]
    index = cockpit._building_index(frame)
    assert cockpit._building_index(frame) is index  # the cockpit's index, kept with the frame
    layers = deck._static("buildings", frame, "en", "EPSG:4326", lambda: [object()])
    assert deck._static("buildings", frame, "en", "EPSG:4326", lambda: [object()]) is layers
    store.write_layers({"buildings": buildings.head(2)}, actor="t", source="t")
    newer = layercache.layers(store)["buildings"]
    assert cockpit._building_index(newer) is not index
    assert len(cockpit._building_index(newer)[2]) == 2
