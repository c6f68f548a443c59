"""Standard-clean GeoPackages: the rtree spatial index, precise types, nothing private listed.

The store's own file keeps the standard index of every layer table up to date through every
write (versions, rollbacks, purges), keeps working after GDAL added or used its own index, and
lists no private table; ``export gpkg`` writes what a user's role may see, for sharing.
"""

from __future__ import annotations

import json
import sqlite3
import subprocess

import geopandas as gpd
import numpy as np
import pyogrio
import pytest
import shapely
from shapely.geometry import LineString, Point, box

from tests.conftest import LAT, LON
from tests.test_gridtwin_cli import cli, url_of
from tests.test_trust import USERS, twin_store  # noqa: F401 (fixtures)
from twin import layers, trust
from twin.errors import PermissionDeniedError, ValidationError
from twin.schema import TABLES
from twin.store import gpkg
from twin.store.embedded import EmbeddedStore


@pytest.fixture
def embedded(tmp_path):
    s = EmbeddedStore(tmp_path / "twin.gpkg")
    yield s
    s.close()


def _feature_tables(path) -> list[tuple[str, str]]:
    with sqlite3.connect(path) as conn:
        return conn.execute("SELECT table_name, column_name FROM gpkg_geometry_columns").fetchall()


def index_problems(path) -> list[str]:
    """What is wrong with the spatial indexes of every feature table of the file at *path*."""
    problems = []
    with sqlite3.connect(path) as conn:
        gpkg.register_functions(conn)
        for table, column in conn.execute(
            "SELECT table_name, column_name FROM gpkg_geometry_columns"
        ).fetchall():
            rtree = gpkg.rtree_name(table, column)
            if not gpkg.has_spatial_index(conn, table, column):
                problems.append(f"{table}: no {rtree}")
                continue
            ext = conn.execute(
                "SELECT count(*) FROM gpkg_extensions WHERE table_name = ? AND column_name = ? "
                "AND extension_name = 'gpkg_rtree_index'", (table, column)).fetchone()[0]
            if ext != 1:
                problems.append(f"{table}: no gpkg_extensions row")
            triggers = {r[0] for r in conn.execute(
                "SELECT name FROM sqlite_master WHERE type = 'trigger' AND tbl_name = ?",
                (table,))}
            # GeoPackage 1.2's update1/update3 (older GDAL) or 1.4's update5-7 (ours, GDAL 3.12)
            needed = {"insert", "update2", "update4", "delete"}
            have = {t[len(rtree) + 1:] for t in triggers if t.startswith(rtree + "_")}
            if not (needed <= have and ({"update1", "update3"} <= have
                                        or {"update5", "update6", "update7"} <= have)):
                problems.append(f"{table}: triggers {sorted(have)}")
            rows = dict(conn.execute(
                f'SELECT fid, "{column}" FROM "{table}" WHERE "{column}" IS NOT NULL'))
            entries = {r[0]: r[1:] for r in conn.execute(f'SELECT * FROM "{rtree}"')}
            if set(rows) != set(entries):
                problems.append(f"{table}: index holds {sorted(entries)}, rows {sorted(rows)}")
                continue
            for fid, blob in rows.items():
                minx, miny, maxx, maxy = gpkg.decode_geometries([blob])[0].bounds
                lo_x, hi_x, lo_y, hi_y = entries[fid]
                # rtree keeps 32-bit floats, rounded outwards
                if not (lo_x <= minx and hi_x >= maxx and lo_y <= miny and hi_y >= maxy
                        and max(minx - lo_x, hi_x - maxx, miny - lo_y, hi_y - maxy) < 1e-4):
                    problems.append(f"{table}: fid {fid} envelope {entries[fid]} is wrong")
    return problems


def _buildings(n: int, shift: float = 0.0) -> gpd.GeoDataFrame:
    return gpd.GeoDataFrame(
        {"building_code": [f"B{i}" for i in range(n)], "floors": [3 + i for i in range(n)]},
        geometry=[box(LON + shift + i * 1e-4, LAT, LON + shift + i * 1e-4 + 5e-5, LAT + 5e-5)
                  for i in range(n)],
        crs=4326,
    )


def _write(store, n=3, shift=0.0):
    store.write_layer("buildings", _buildings(n, shift), actor="t", source=f"{n}/{shift}")


# each step is done to a fresh store, after a first version of buildings and cameras
STEPS = {
    "first version": lambda s: None,
    "second version": lambda s: _write(s, 5, 0.001),
    "smaller version": lambda s: _write(s, 1, 0.002),
    "rollback": lambda s: (_write(s, 5, 0.001), s.set_current_version("buildings", 1, actor="t")),
    "purge": lambda s: (_write(s, 5, 0.001), _write(s, 2, 0.003),
                        s.purge_layer_versions("buildings", 3, actor="t")),
    "reopen": lambda s: (s.close(), EmbeddedStore(s.path).close()),
}


@pytest.mark.parametrize("step", list(STEPS))
def test_every_layer_table_has_the_standard_index_after_each_write(embedded, cameras, step):
    _write(embedded)
    embedded.write_layer("cameras", cameras, actor="t", source="c")
    STEPS[step](embedded)
    tables = {t for t, _ in _feature_tables(embedded.path)}
    assert {"buildings", "buildings__history", "cameras", "cameras__history"} <= tables
    assert index_problems(embedded.path) == []


def test_the_index_follows_the_shown_version(embedded):
    _write(embedded, 3)
    _write(embedded, 5, 0.01)
    embedded.set_current_version("buildings", 1, actor="t")
    with sqlite3.connect(embedded.path) as conn:
        far = conn.execute("SELECT count(*) FROM rtree_buildings_geom WHERE minx > ?",
                           (LON + 0.005,)).fetchone()[0]
        count = conn.execute("SELECT count(*) FROM rtree_buildings_geom").fetchone()[0]
    assert (count, far) == (3, 0)  # version 1's three, none of version 2's far ones


def _has_index_gdal(path, layer) -> tuple[bool, str]:
    done = subprocess.run(
        ["ogrinfo", "-ro", str(path), "-sql", f"SELECT HasSpatialIndex('{layer}', 'geom')"],
        capture_output=True, text=True, timeout=60)
    return "= 1" in done.stdout, done.stderr.strip()


def test_ogrinfo_and_pyogrio_report_a_spatial_index_on_every_layer(embedded, cameras, grid_cells):
    _write(embedded)
    embedded.write_layer("cameras", cameras, actor="t", source="c")
    embedded.write_layer("grid_cells", grid_cells, actor="t", source="g")
    listed = [name for name, kind in pyogrio.list_layers(embedded.path) if kind is not None]
    assert len(listed) == 6
    for name in listed:
        assert pyogrio.read_info(embedded.path, layer=name)["capabilities"][
            "fast_spatial_filter"], name
        assert _has_index_gdal(embedded.path, name) == (True, ""), name


def test_a_connection_without_the_functions_cannot_write_an_indexed_table(embedded):
    """Why every connection registers them (what failed once GDAL had added its index)."""
    _write(embedded)
    blob = gpkg.encode_geometries([Point(LON, LAT).buffer(1e-5)])[0]
    with sqlite3.connect(embedded.path) as conn, pytest.raises(
        sqlite3.OperationalError, match="no such function: ST_IsEmpty"
    ):
        conn.execute("INSERT INTO buildings (geom, building_code) VALUES (?, 'X')", (blob,))
    with sqlite3.connect(embedded.path) as conn:
        gpkg.register_functions(conn)
        conn.execute("INSERT INTO buildings (geom, building_code) VALUES (?, 'X')", (blob,))
    assert index_problems(embedded.path) == []


def _gdal_sql(path, sql) -> None:
    done = subprocess.run(["ogrinfo", str(path), "-sql", sql], capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0 and "ERROR" not in done.stderr, done.stderr


def _gdal_makes_its_own_index(path) -> None:
    with sqlite3.connect(path) as conn:  # as a file written before the store made indexes
        for table, column in conn.execute(
            "SELECT table_name, column_name FROM gpkg_geometry_columns"
        ).fetchall():
            gpkg.drop_spatial_index(conn, table, column)
    for table, column in _feature_tables(path):
        _gdal_sql(path, f"SELECT CreateSpatialIndex('{table}', '{column}')")


def _gdal_moves_a_building(path) -> None:
    _gdal_sql(path, "UPDATE buildings SET geom = (SELECT geom FROM buildings WHERE "
                    "building_code = 'B2'), floors = 9 WHERE building_code = 'B1'")


def _gdal_appends_a_building(path) -> None:
    extra = _buildings(1, 0.02).assign(building_code="G1")
    pyogrio.write_dataframe(extra, path, layer="buildings", append=True)


# what GDAL or QGIS may do to the store's file between two writes of the store
GDAL_EDITS = {
    "GDAL made its own index": _gdal_makes_its_own_index,
    "GDAL moved a feature": _gdal_moves_a_building,
    "GDAL appended a feature": _gdal_appends_a_building,
}


@pytest.mark.parametrize("edit", list(GDAL_EDITS))
def test_the_store_keeps_working_after_gdal_edits_the_file(embedded, edit):
    _write(embedded)
    path = embedded.path
    embedded.close()
    GDAL_EDITS[edit](path)
    assert index_problems(path) == []
    store = EmbeddedStore(path)
    try:
        assert len(store.read_layer("buildings")) >= 3
        _write(store, 4, 0.005)  # a new version, a rollback, a purge, on GDAL's triggers
        store.set_current_version("buildings", 1, actor="t")
        store.purge_layer_versions("buildings", 1, actor="t")
        assert len(store.read_layer("buildings")) >= 3
    finally:
        store.close()
    assert index_problems(path) == []
    assert _has_index_gdal(path, "buildings") == (True, "")


def test_an_older_file_gets_its_index_and_private_tables_unlisted_when_opened(embedded):
    _write(embedded)
    path = embedded.path
    embedded.close()
    with sqlite3.connect(path) as conn:  # as files were written before
        for table, column in _feature_tables(path):
            gpkg.drop_spatial_index(conn, table, column)
        for table in TABLES:
            gpkg.register_table(conn, table.name)
    EmbeddedStore(path).close()
    assert index_problems(path) == []
    with sqlite3.connect(path) as conn:
        listed = {r[0] for r in conn.execute("SELECT table_name FROM gpkg_contents")}
    assert not listed & {t.name for t in TABLES}


# the declared geometry kind of each map layer, as gpkg_geometry_columns must say it
EXPECTED_TYPES = {
    "community": "POLYGON", "roads": "LINESTRING", "grid_cells": "POLYGON",
    "buildings": "POLYGON", "cameras": "POINT", "sensors": "POINT",
    # a layer declaring areas and points holds both in one column: GEOMETRY by the standard
    "organisations": "POLYGON",
    "parking": "GEOMETRY", "parking_spaces": "GEOMETRY", "facilities": "GEOMETRY",
}


def _one_feature(spec) -> gpd.GeoDataFrame:
    shape = {"Point": Point(LON, LAT), "LineString": LineString([(LON, LAT), (LON + 1e-4, LAT)]),
             "Polygon": box(LON, LAT, LON + 1e-4, LAT + 1e-4)}[spec.geometry_type]
    return gpd.GeoDataFrame({spec.id_field: ["X1"]}, geometry=[shape], crs=4326)


def test_expected_types_cover_every_map_layer():
    mapped = {n for n in layers.names() if layers.get_layer(n).geometry_type is not None}
    assert set(EXPECTED_TYPES) == mapped


@pytest.mark.parametrize("name, expected", list(EXPECTED_TYPES.items()))
def test_each_layer_has_its_declared_geometry_type(embedded, name, expected):
    spec = layers.get_layer(name)
    with embedded._write() as conn:  # the tables as a first load makes them
        embedded._ensure_layer_tables(conn, spec)
    with sqlite3.connect(embedded.path) as conn:
        got = dict(conn.execute(
            "SELECT table_name, geometry_type_name FROM gpkg_geometry_columns").fetchall())
    assert got[name] == got[name + "__history"] == expected
    assert index_problems(embedded.path) == []


# -- export gpkg: what a role may see, to share ---------------------------------------------------

PHONES = ["13900001111", "13900002222"]


def _out(tmp_path):
    """A folder apart from the embedded store's file."""
    out = tmp_path / "out"
    out.mkdir(exist_ok=True)
    return out
MASKED = ["139****1111", "139****2222"]


@pytest.mark.parametrize("role, phones", [
    ("admin", PHONES), ("data_staff", PHONES), ("planner", MASKED), ("official", MASKED),
    (None, None),
])
def test_export_gpkg_holds_only_what_the_role_may_see(twin_store, tmp_path, role, phones):  # noqa: F811
    out, rows = trust.export_geopackage(twin_store, USERS.get(role), _out(tmp_path) / "shared.gpkg")
    assert rows == {"grid_cells": 2, "buildings": 3}
    listed = dict(map(tuple, pyogrio.list_layers(out)))
    assert listed == {"grid_cells": "Polygon", "buildings": "Polygon"}
    every = {r[0] for r in sqlite3.connect(out).execute(
        "SELECT name FROM sqlite_master WHERE type = 'table'")}
    assert not every & ({t.name for t in TABLES} | {"residents", "residents__history"})
    raw = out.read_bytes()
    assert b"password" not in raw and "张三".encode() not in raw  # no users, no residents
    cells = pyogrio.read_dataframe(out, layer="grid_cells")
    if phones is None:
        assert "grid_worker_phone" not in cells
    else:
        assert sorted(cells["grid_worker_phone"]) == phones
    if role == "planner":
        assert not any(p.encode() in raw for p in PHONES)
    assert index_problems(out) == []
    for name in listed:
        assert pyogrio.read_info(out, layer=name)["capabilities"]["fast_spatial_filter"]
        assert _has_index_gdal(out, name) == (True, "")


@pytest.mark.parametrize("role", ["grid_worker", "resident", "dispatcher"])
def test_export_gpkg_is_refused_to_roles_without_queries_and_nothing_is_written(
    twin_store, tmp_path, role  # noqa: F811
):
    with pytest.raises(PermissionDeniedError):
        trust.export_geopackage(twin_store, USERS[role], _out(tmp_path) / "x.gpkg")
    assert list(_out(tmp_path).iterdir()) == []


def test_export_gpkg_refuses_other_names_and_empty_stores(store, tmp_path):
    with pytest.raises(ValidationError, match=r"\*\.gpkg"):
        trust.export_geopackage(store, None, _out(tmp_path) / "x.geojson")
    with pytest.raises(ValidationError, match="no map layer"):
        trust.export_geopackage(store, None, _out(tmp_path) / "x.gpkg")
    assert list(_out(tmp_path).iterdir()) == []


def test_gridtwin_export_gpkg_as_a_user(twin_store, tmp_path, capsys):  # noqa: F811
    out = tmp_path / "for_planner.gpkg"
    code, stdout, err = cli("export", "gpkg", out, "--user", "pla", "--json",
                            "--store", url_of(twin_store), capsys=capsys)
    assert code == 0, err
    assert json.loads(stdout) == {"out": str(out), "rows": 5,
                                  "layers": {"grid_cells": 2, "buildings": 3}}
    cells = pyogrio.read_dataframe(out, layer="grid_cells")
    assert sorted(cells["grid_worker_phone"]) == MASKED
    code, _, err = cli("export", "gpkg", tmp_path / "gw.gpkg", "--user", "gw1",
                       "--store", url_of(twin_store), capsys=capsys)
    assert code == 2 and "may not" in err
    assert not (tmp_path / "gw.gpkg").exists()
    assert np.isfinite(shapely.total_bounds(cells.geometry.values)).all()
