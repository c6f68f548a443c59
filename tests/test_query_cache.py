"""Planner queries reuse layers per version: new versions are seen, typed rows match read_layer."""

from __future__ import annotations

import datetime

import geopandas as gpd
import numpy as np
import pandas as pd
import pytest
import shapely
from shapely.geometry import Point, box

import twin.query as Q
from tests.test_query import clinic_and_homes, grid, local, lonlat, put
from twin import layers
from twin.errors import LayerNotFoundError, ValidationError
from twin.query import _cache, proximity
from twin.query import sql as q
from twin.schema import Column, LayerSpec, coerce_series


def _homes(xs, prefix="B"):
    return clinic_and_homes(xs)[1].assign(building_code=[f"{prefix}{x}" for x in xs])


def test_a_new_version_is_seen_by_the_next_query(store):
    put(store, "grid_cells", grid())
    put(store, "buildings", _homes([10, 20]))
    first = Q.within_distance(store, "buildings", 100, point=lonlat(0, 0))
    assert first.frame["building_code"].tolist() == ["B10", "B20"]
    put(store, "buildings", _homes([30], prefix="N"))
    second = Q.within_distance(store, "buildings", 100, point=lonlat(0, 0))
    assert second.frame["building_code"].tolist() == ["N30"]
    assert (first.versions["buildings"], second.versions["buildings"]) == (1, 2)
    near = Q.nearest(store, "buildings", 3, point=lonlat(0, 0), engine="memory")
    assert near.frame["building_code"].tolist() == ["N30"]
    counts = Q.counts_per_grid(store, "buildings")
    assert counts.notes["unassigned"] == 1 and counts.versions["buildings"] == 2


def test_a_rollback_is_seen_too(store):
    put(store, "grid_cells", grid())
    put(store, "buildings", _homes([10]))
    put(store, "buildings", _homes([20]))
    assert Q.nearest(store, "buildings", 1, point=lonlat(0, 0)).frame["distance_m"][0] == (
        pytest.approx(20, abs=0.01)
    )
    store.set_current_version("buildings", 1, actor="test")
    r = Q.nearest(store, "buildings", 1, point=lonlat(0, 0), engine="memory")
    assert r.frame["building_code"].tolist() == ["B10"] and r.versions["buildings"] == 1


def test_the_study_area_follows_the_grid_version(store):
    put(store, "grid_cells", grid())
    put(store, "buildings", _homes([10]))
    far = lonlat(3000, 0)
    with pytest.raises(ValidationError, match="outside the community area"):
        Q.within_distance(store, "buildings", 100, point=far)
    put(store, "grid_cells", grid(x1=4000))  # the area now reaches the point
    r = Q.within_distance(store, "buildings", 100, point=far)
    assert r.frame.empty and r.versions["grid_cells"] == 2


def test_changing_a_returned_frame_leaves_the_cache_alone(tmp_path):
    from twin.store import open_store

    with open_store(tmp_path / "c.gpkg") as s:
        put(s, "grid_cells", grid())
        put(s, "buildings", _homes([10, 20]))
        r = Q.within_distance(s, "buildings", 100, point=lonlat(0, 0))
        r.frame.loc[0, "building_code"] = "CHANGED"
        r.frame["extra"] = 1
        read = Q._common.read(s, "buildings", {})
        read["name"] = "changed"
        again = Q.within_distance(s, "buildings", 100, point=lonlat(0, 0))
        assert again.frame["building_code"].tolist() == ["B10", "B20"]
        assert "extra" not in again.frame.columns
        assert _cache.layer(s, "buildings")["name"].tolist() == ["10", "20"]


def test_quick_version_read_agrees_with_the_store(store):
    put(store, "grid_cells", grid())
    put(store, "buildings", _homes([10]))
    put(store, "buildings", _homes([20]))
    stamps = _cache.stamps(store, ["grid_cells", "buildings", "parking"])
    assert stamps["parking"] is None
    for name in ("grid_cells", "buildings"):
        current = [v for v in store.layer_versions(name) if v.current]
        assert stamps[name][0] == current[0].version
    with pytest.raises(LayerNotFoundError):
        Q.within_distance(store, "parking", 10, point=lonlat(0, 0))


def test_a_replaced_geopackage_is_read_again(tmp_path):
    from twin.store import open_store

    path = tmp_path / "r.gpkg"
    s = open_store(path)
    put(s, "grid_cells", grid())
    assert _cache.stamps(s, ["grid_cells"])["grid_cells"][0] == 1
    s.close()
    path.unlink()
    for extra in ("-wal", "-shm"):
        path.with_name(path.name + extra).unlink(missing_ok=True)
    other = open_store(path)
    assert _cache.stamps(other, ["grid_cells"]) == {"grid_cells": None}
    other.close()


# -- nearest in memory: the STRtree radius search gives the full scan's answer ----------------


@pytest.fixture(scope="module")
def scatter(tmp_path_factory):
    """300 small buildings scattered over the grid, some with households, some without."""
    from twin.store import open_store

    rng = np.random.default_rng(7)
    xy = rng.uniform([-480, -480], [1480, 480], size=(300, 2))
    homes = local(
        [box(x, y, x + 8, y + 8) for x, y in xy],
        building_code=[f"S{i:03d}" for i in range(300)],
        use=["residential"] * 300,
        households=[int(v) for v in rng.integers(0, 4, 300)],
    )
    s = open_store(tmp_path_factory.mktemp("scatter") / "s.gpkg")
    put(s, "grid_cells", grid())
    put(s, "buildings", homes)
    yield s
    s.close()


@pytest.mark.parametrize(
    ("k", "where", "at"),
    [
        (1, None, (0, 0)),
        (5, None, (700, 100)),
        (12, "households>=3", (-400, -400)),
        (40, "households=0", (1400, 400)),
        (300, None, (500, 0)),
        (3, "households>99", (0, 0)),
    ],
)
def test_nearest_by_radius_equals_the_full_scan(scatter, monkeypatch, k, where, at):
    full = Q.nearest(scatter, "buildings", k, point=lonlat(*at), where=where)
    monkeypatch.setattr(proximity, "NEAREST_SCAN", 0)
    tree = Q.nearest(scatter, "buildings", k, point=lonlat(*at), where=where)
    pd.testing.assert_frame_equal(tree.frame, full.frame)
    assert len(full.frame) == min(k, (_households(scatter, where)).sum())


def _households(store, where):
    frame = store.read_layer("buildings")
    if where is None:
        return np.ones(len(frame), dtype=bool)
    return proximity._mask(frame, proximity.parse_where(where))


def test_nearest_of_a_feature_by_radius_leaves_it_out(scatter, monkeypatch):
    monkeypatch.setattr(proximity, "NEAREST_SCAN", 0)
    r = Q.nearest(scatter, "buildings", 4, of="buildings:S010")
    assert len(r.frame) == 4 and "S010" not in r.frame["building_code"].tolist()
    d = r.frame["distance_m"].to_numpy()
    assert (np.diff(d) >= 0).all()


# -- typed rows from SQL ------------------------------------------------------------------------

SPEC = LayerSpec(
    name="typed_probe",
    title_zh="类型",
    title_en="Types",
    geometry_type="Point",
    id_field="code",
    columns=tuple(
        Column(name, dtype, name, name)
        for name, dtype in [
            ("code", "text"),
            ("count", "int"),
            ("share", "float"),
            ("open", "bool"),
            ("since", "date"),
            ("seen", "datetime"),
            ("extra", "json"),
        ]
    ),
    located=False,
)
ROWS = [
    (
        "A",
        3,
        0.5,
        True,
        datetime.date(2026, 1, 2),
        datetime.datetime(2026, 1, 2, 3, 4, tzinfo=datetime.UTC),
        '{"b": 1, "a": [1]}',
        None,
        12.5,
    ),
    ("B", None, None, None, None, None, None, '{"x": "是"}', 0.0),
    ("C", 7, 2, False, datetime.date(2026, 2, 3), None, "[]", None, 1.0),
]


def _coerced(rows):
    names = [c.name for c in SPEC.all_columns] + ["distance_m"]
    raw = (
        pd.DataFrame.from_records(rows, columns=names)
        if rows
        else pd.DataFrame({n: pd.Series([], dtype=object) for n in names})
    )
    out = pd.DataFrame({c.name: coerce_series(raw[c.name], c) for c in SPEC.all_columns})
    for c in SPEC.all_columns:  # query answers say None for empty JSON, whatever else was read
        if c.dtype == "json":
            out[c.name] = pd.Series(np.where(out[c.name].isna(), None, out[c.name]), dtype=object)
    out["distance_m"] = raw["distance_m"].astype(float)
    return out


@pytest.mark.parametrize("rows", [ROWS, ROWS[1:2], []], ids=["mixed", "nulls", "empty"])
def test_typed_frame_matches_coerce_series(rows):
    names = [c.name for c in SPEC.all_columns] + ["distance_m", "geom"]
    points = [shapely.to_wkb(Point(110 + i, 25)) for i in range(len(rows))]
    got = q.typed_frame(
        SPEC, names, [(*r, p) for r, p in zip(rows, points, strict=True)], ["distance_m"]
    )
    want = _coerced(rows)
    assert list(got.columns) == [*want.columns, "geometry"]
    pd.testing.assert_frame_equal(
        pd.DataFrame(got.drop(columns="geometry")), want, check_index_type=False
    )
    assert got.crs.equals("EPSG:4326") and len(got.geometry) == len(rows)


def test_typed_frame_falls_back_when_values_are_not_what_the_type_says():
    names = [c.name for c in SPEC.all_columns] + ["geom"]
    rows = [("A", "4", "0.25", "true", "2026-01-02", None, None, None, shapely.to_wkb(Point(0, 0)))]
    got = q.typed_frame(SPEC, names, rows)
    assert got["count"].dtype == "Int64" and got["count"][0] == 4
    assert got["share"][0] == 0.25 and bool(got["open"][0]) is True
    assert got["since"][0] == datetime.date(2026, 1, 2)


def test_the_layers_declared_have_the_types_typed_frame_knows():
    known = {"text", "int", "float", "bool", "date", "datetime", "json"}
    for spec in layers.registry().values():
        assert {c.dtype for c in spec.all_columns} <= known, spec.name


# -- both stores: the same frame, dtypes and nulls included ------------------------------------


@pytest.fixture(scope="module")
def pair(tmp_path_factory, postgis_url):
    """The same homes (some with empty text, numbers and JSON) in both kinds of store."""
    import uuid

    from twin.store import open_store

    homes = _homes([10, 20, 40, 80])
    homes["name"] = ["十", None, "四十", None]
    homes["households"] = pd.array([10, None, 3, None], dtype="Int64")
    homes["height_m"] = [None, 9.5, None, 30.0]
    homes["attrs"] = [None, {"b": 1, "a": "是"}, None, {"k": [1, 2]}]
    # a unit code the grids lack (ZZ) on a home that households>=10 filters out
    homes["grid_code"] = ["45031100100101", "45031100100101", "ZZ", None]
    emb = open_store(tmp_path_factory.mktemp("pair") / "p.gpkg")
    pg = open_store(postgis_url, schema=f"t_{uuid.uuid4().hex[:10]}", drop_schema_on_close=True)
    for s in (emb, pg):
        put(s, "grid_cells", grid())
        put(s, "buildings", homes)
    yield emb, pg
    emb.close()
    pg.close()


@pytest.mark.parametrize(
    "ask",
    [
        lambda s: Q.within_distance(s, "buildings", 100, point=lonlat(0, 0)),
        lambda s: Q.within_distance(s, "buildings", 1, point=lonlat(-300, 0)),
        lambda s: Q.within_distance(s, "buildings", 50, of="buildings:B20"),
        lambda s: Q.nearest(s, "buildings", 3, point=lonlat(0, 0)),
        lambda s: Q.nearest(s, "buildings", 2, point=lonlat(0, 0), where="households>=3"),
        lambda s: Q.counts_per_grid(s, "buildings", level="resp_grid", sum="households"),
        lambda s: Q.counts_per_grid(s, "buildings", where="households>=10", sum="height_m"),
        lambda s: Q.counts_per_grid(s, "buildings"),
    ],
    ids=["within", "within_none", "within_of", "nearest", "nearest_where", "counts",
         "counts_where", "counts_grid"],
)
def test_both_stores_give_the_same_frame(pair, ask):
    emb, pg = pair
    a, b = ask(emb), ask(pg)
    assert a.versions == b.versions and a.method != b.method == "postgis"
    assert a.notes == b.notes
    pd.testing.assert_frame_equal(
        pd.DataFrame(a.frame).drop(columns="geometry"),
        pd.DataFrame(b.frame).drop(columns="geometry"),
        rtol=1e-6,
    )
    assert shapely.equals_exact(a.frame.geometry.values, b.frame.geometry.values, 1e-9).all()
    assert a.frame.crs.equals(b.frame.crs)


def test_connections_of_ended_threads_are_closed(tmp_path):
    import threading

    from twin.store import open_store

    with open_store(tmp_path / "t.gpkg") as s:
        put(s, "grid_cells", grid())
        for _ in range(6):
            worker = threading.Thread(target=_cache.stamps, args=(s, ["grid_cells"]))
            worker.start()
            worker.join()
        assert len(s._connections) <= 2  # the last worker's, maybe this one's
        assert _cache.stamps(s, ["grid_cells"])["grid_cells"][0] == 1


@pytest.mark.parametrize("n", [3, 0])
def test_geoframe_equals_the_public_constructors(n):
    from twin.query._common import geoframe, geoframe_public

    text = pd.Series(["a", None, "c"][:n], dtype=object)
    columns = {
        "code": text.array,  # a NumpyExtensionArray of objects, as Series.array.take gives
        "label": np.array(["x", "y", None][:n], dtype=object),
        "count": pd.array([1, None, 3][:n], dtype="Int64"),
        "flag": pd.array([True, None, False][:n], dtype="boolean"),
        "value": pd.Series([0.5, np.nan, 2.0][:n]).array,
        "distance_m": np.array([1.0, 2.0, 3.0][:n]),
    }
    geometry = gpd.array.from_shapely([Point(i, 0) for i in range(n)], crs="EPSG:4326")
    fast, public = geoframe(columns, geometry, n), geoframe_public(columns, geometry, n)
    pd.testing.assert_frame_equal(fast, public)
    assert type(fast) is gpd.GeoDataFrame and fast.geometry.name == "geometry"
    assert fast.crs.equals("EPSG:4326") and fast["code"].dtype == object
    fast.loc[:, "label"] = "changed"  # the answer is the caller's to change
    assert columns["label"].tolist() == ["x", "y", None][:n]


def test_answers_do_not_share_column_labels():
    from twin.query._common import geoframe

    geometry = gpd.array.from_shapely([Point(0, 0)], crs="EPSG:4326")
    a = geoframe({"code": np.array(["a"], dtype=object)}, geometry, 1)
    a.columns.name = "renamed"
    a["extra"] = 1
    b = geoframe({"code": np.array(["b"], dtype=object)}, geometry, 1)
    assert b.columns.name is None and list(b.columns) == ["code", "geometry"]


def _imports(package: str) -> dict[str, set[str]]:
    """Module → the modules of *package* it imports (at the top or inside a function)."""
    import ast
    import importlib
    from pathlib import Path

    folder = Path(importlib.import_module(package).__file__).parent
    names = {f"{package}.{p.stem}" for p in folder.glob("*.py") if p.stem != "__init__"}
    out: dict[str, set[str]] = {}
    for name in names:
        tree = ast.parse((folder / (name.rsplit(".", 1)[1] + ".py")).read_text("utf-8"))
        found = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module:
                found |= {f"{node.module}.{a.name}" for a in node.names} | {node.module}
            elif isinstance(node, ast.Import):
                found |= {a.name for a in node.names}
        out[name] = (found & names) - {name}
    return out


@pytest.mark.parametrize("package", ["twin.query", "twin.store"])
def test_the_query_and_store_modules_import_each_other_without_a_cycle(package):
    graph = _imports(package)
    assert graph["twin.query._cache" if package == "twin.query" else "twin.store.dialect"] == set()

    def reach(start: str) -> set[str]:
        seen, todo = set(), list(graph[start])
        while todo:
            name = todo.pop()
            if name not in seen:
                seen.add(name)
                todo += graph[name]
        return seen

    cycles = sorted(name for name in graph if name in reach(name))
    assert cycles == [], f"modules on an import cycle: {cycles}"


def test_the_sql_paths_are_chosen_by_the_stores_fast_reader_not_its_engine(store):
    from twin.query._common import is_postgis

    reader = store.fast_reader()
    assert is_postgis(store) == (reader is not None)
    if reader is None:
        with pytest.raises(ValidationError, match="runs no planner queries in SQL"):
            q.table(store, "buildings")
    else:
        assert q.table(store, "buildings") == f'"{reader.schema}"."buildings"'
