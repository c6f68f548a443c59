"""gridtwin make-demo (scripts/make_demo.py): a GeoPackage GDAL lists, every layer readable,
reproducible content; the same demo in a PostGIS schema; nothing half-built, no password shown."""

from __future__ import annotations

import json
import shutil
import uuid

import pandas as pd
import pyogrio
import pytest
import shapely

from scripts import make_demo
from tests.services import POSTGIS_URL
from twin import layers, orgdemo, trust
from twin.cli import main as gridtwin
from twin.errors import ValidationError
from twin.schema import USERS
from twin.settings import PROJECT_DIR
from twin.store import open_store

COMMITTED = PROJECT_DIR / "data" / "demo" / "guilin_demo.gpkg"
SCENARIO_LAYERS = ["community", "grid_cells", "residents", "roads", "parking", "parking_spaces",
                   "buildings", "facilities", "cameras", "sensors"]


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo") / "demo.gpkg"
    # the committed file holds the layers and demo users; `make demo` adds a lived-in year
    assert make_demo.main(["--out", str(out), "--seed", "0", "--no-history"]) == 0
    return out


def test_by_default_the_demo_is_lived_in_up_to_now(tmp_path):
    out = tmp_path / "lived.gpkg"
    now = "2026-12-07T10:00:00+08:00"
    assert make_demo.main(["--out", str(out), "--now", now]) == 0
    with open_store(out) as store:
        cases = store.read_cases()
        assert len(cases) > 1000 and cases["status"].nunique() >= 6
        assert (cases["status"] == "closed").any() and (cases["status"] != "closed").any()
        assert pd.to_datetime(cases["requested_at"], utc=True).max() <= pd.Timestamp(now)
        assert len(store.read_events()) > 0


def test_writes_a_geopackage_gdal_lists_with_every_layer_readable(built, capsys):
    listed = {name for name, _ in pyogrio.list_layers(built)}
    mapped = {n for n in SCENARIO_LAYERS if layers.get_layer(n).geometry_type}
    assert mapped <= listed
    assert "residents" not in listed  # people are not a GIS layer (docs/loading.md)
    for name in SCENARIO_LAYERS:
        spec = layers.get_layer(name)
        frame = pyogrio.read_dataframe(built, layer=name, LIST_ALL_TABLES="YES")
        assert set(spec.column_names) <= set(frame.columns), name
        assert len(frame) > 0, name
        if spec.geometry_type:
            assert frame.crs.to_epsg() == 4326
    assert built.stat().st_size < 5_000_000
    assert not list(built.parent.glob(".demo-*"))  # no temporary file left behind


def test_versions_record_the_script_and_seed(built):
    with open_store(built) as store:
        v = store.layer_versions("buildings")[-1]
        assert (v.actor, v.source, v.version) == ("make_demo", "scripts/make_demo.py seed=0", 1)
        assert store.read_layer("sensors")["grid_code"].notna().all()


def test_the_committed_demo_matches_a_fresh_build(built, tmp_path):
    assert COMMITTED.exists(), "run: gridtwin make-demo --force (or make data)"
    copy = tmp_path / "committed.gpkg"  # opening may upgrade a file: never the tracked one
    shutil.copyfile(COMMITTED, copy)
    with open_store(built) as fresh, open_store(copy) as committed:
        assert committed.layers() == fresh.layers()
        for name in fresh.layers():
            a, b = fresh.read_layer(name), committed.read_layer(name)
            attrs = [c for c in a.columns if c != "geometry"]
            pd.testing.assert_frame_equal(pd.DataFrame(a[attrs]), pd.DataFrame(b[attrs]),
                                          obj=name)
            if "geometry" in a:
                assert shapely.equals_exact(a.geometry.values, b.geometry.values, 1e-9).all()


def test_an_existing_file_needs_force(built, capsys):
    assert make_demo.main(["--out", str(built)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--force" in err


def test_twin_errors_become_one_line_and_exit_2(tmp_path, monkeypatch, capsys):
    def broken(*args, **kwargs):
        raise ValidationError("layer 'buildings': bad floors. Fix the template.")

    monkeypatch.setattr("twin.twin.put_layer", broken)
    out = tmp_path / "x.gpkg"
    assert make_demo.main(["--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: layer 'buildings': bad floors. Fix the template. (hint: ")
    assert len(err.splitlines()) == 1
    assert list(tmp_path.iterdir()) == []  # nothing half-built left behind


@pytest.fixture(params=["embedded", "postgis"])
def target(request, tmp_path):
    """Where to build: a new GeoPackage, or a PostGIS schema no one has made yet (dropped after)."""
    if request.param == "embedded":
        yield str(tmp_path / "built" / "demo.gpkg"), {}
        return
    request.getfixturevalue("postgis_url")
    schema = f"t_{uuid.uuid4().hex[:10]}"
    yield f"{POSTGIS_URL}?schema={schema}", {"schema": schema}
    open_store(POSTGIS_URL, schema=schema, drop_schema_on_close=True).close()


def test_builds_into_either_store_and_never_shows_the_password(target, built, tmp_path,
                                                               monkeypatch, capsys):
    url, options = target
    monkeypatch.chdir(tmp_path)  # a URL taken for a path would leave a folder here
    assert gridtwin(["make-demo", "--store", url]) == 0
    out = capsys.readouterr().out
    assert "twin:twin@" not in out and "wrote 5" in out
    if options:
        assert "twin:***@127.0.0.1" in out
        assert not any(p.name.startswith("postgresql") for p in tmp_path.rglob("*"))
    with open_store(built) as reference:
        expected = {n: len(reference.read_layer(n)) for n in SCENARIO_LAYERS}
    with open_store(POSTGIS_URL if options else url, **options) as store:
        assert {n: len(store.read_layer(n)) for n in SCENARIO_LAYERS} == expected
        assert store.layer_versions("buildings")[-1].version == 1
        users = store.read_rows(USERS)  # the demo logins; the demo's other volunteers and
        logins = users.loc[users["password_hash"].notna(), "username"]  # residents have none
        assert sorted(logins) == sorted([*trust.DEMO_USERS, *orgdemo.STAFF])  # + staff of 共建
    # a second build is refused, nothing changed; --force replaces the file or adds versions
    assert gridtwin(["make-demo", "--store", url]) == 2
    err = capsys.readouterr().err
    assert "--force" in err and len(err.strip().splitlines()) == 1 and "twin:twin@" not in err
    assert gridtwin(["make-demo", "--store", url, "--force", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["layers"] == expected and "twin:twin@" not in report["store"]
    with open_store(POSTGIS_URL if options else url, **options) as store:
        versions = [v.version for v in store.layer_versions("buildings")]
        # a database keeps its history (new grids re-assign buildings: one more version)
        assert versions[0] == 1 and (len(versions) > 1) == bool(options)
