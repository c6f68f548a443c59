"""Real-world-shaped bad files through the load command, on both stores: exit code, message, report,
and the previous version intact."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import shapely

from scripts.load_layer import main
from tests.data import make_load_fixtures as fx
from tests.services import POSTGIS_URL

LON, LAT = fx.LON, fx.LAT
OSM = Path(__file__).parent / "data" / "osm"  # real OpenStreetMap data (ODbL; see its README)


def db_url(store) -> str:
    """The URL the command opens for the same store (PostGIS: the test's own schema)."""
    schema = getattr(store, "schema", None)
    return f"{POSTGIS_URL}?schema={schema}" if schema else store.url


def run(store, *args, capsys):
    code = main(["--db", db_url(store), *map(str, args)])
    out, err = capsys.readouterr()
    return code, out, err


def seed(store, layer: str, frame) -> pd.DataFrame:
    """Write version 1 of *layer* and return it as read back."""
    store.write_layer(layer, frame, actor="seed", source="seed")
    return store.read_layer(layer)


def assert_unchanged(store, layer: str, before) -> None:
    versions = store.layer_versions(layer)
    assert [v.version for v in versions] == [1]
    assert versions[0].current
    pd.testing.assert_frame_equal(pd.DataFrame(store.read_layer(layer)), pd.DataFrame(before))


def assert_new_version_and_v1_intact(store, layer: str, before) -> pd.DataFrame:
    versions = store.layer_versions(layer)
    assert [v.version for v in versions] == [1, 2]
    assert versions[-1].current and not versions[0].current
    pd.testing.assert_frame_equal(pd.DataFrame(store.read_layer(layer, 1)), pd.DataFrame(before))
    return store.read_layer(layer)


class Seeded(dict):
    """Version 1 of a layer, written on first use (only the layers a test needs)."""

    def __init__(self, store, frames):
        super().__init__()
        self.store, self.frames = store, frames

    def __missing__(self, layer):
        self[layer] = seed(self.store, layer, self.frames[layer])
        return self[layer]


@pytest.fixture
def base(store, buildings, cameras):
    """Version 1 of buildings, cameras, parking and roads (so every case has a previous version)."""
    import geopandas as gpd
    from shapely.geometry import LineString, Point

    parking = gpd.GeoDataFrame(
        {"lot_id": ["P0"], "kind": ["surface"], "total_spaces": [10]},
        geometry=[Point(LON, LAT)],
        crs=4326,
    )
    roads = gpd.GeoDataFrame(
        {"road_id": ["R0"]}, geometry=[LineString([(LON, LAT), (LON + 0.001, LAT)])], crs=4326
    )
    frames = {"buildings": buildings, "cameras": cameras, "parking": parking, "roads": roads}
    return Seeded(store, frames)


# case: (id, layer, maker, extra args, exit code, message regex on stdout+stderr)
CASES = [
    (
        "bowtie",
        "buildings",
        fx.make_bowtie,
        [],
        0,
        r"1 repaired.*Self-intersection.*split into B2, B2-2",
    ),
    (
        "bowtie-strict",
        "buildings",
        fx.make_bowtie,
        ["--strict"],
        2,
        r"rejected under --strict.*invalid_geometry_repaired 1",
    ),
    (
        "two-point-ring",
        "buildings",
        fx.make_two_point_ring,
        [],
        0,
        r"loaded 1 feature.*1 rejected.*row 2 \(B9\).*collapses",
    ),
    (
        "only-two-point-rings",
        "buildings",
        fx.make_only_two_point_rings,
        [],
        2,
        r"no feature of all_slivers.geojson could be loaded.*degenerate_geometry 3",
    ),
    ("no-shx", "buildings", fx.make_shapefile_without_shx, [], 0, r"loaded 3 .*shx was missing"),
    ("gbk-no-cpg", "buildings", fx.make_gbk_shapefile_without_cpg, [], 0, r"encoding GB18030"),
    ("zipped-gbk", "buildings", fx.make_zipped_shapefile, [], 0, r"loaded 3 .*encoding GB18030"),
    (
        "lying-prj",
        "buildings",
        fx.make_lying_prj,
        [],
        2,
        r"says its CRS is EPSG:4326 \(degrees\).*\.prj is wrong.*--crs 4525",
    ),
    (
        "lying-prj-fixed",
        "buildings",
        fx.make_lying_prj,
        ["--crs", "cgcs2000"],
        0,
        r"loaded 3 .*CRS EPSG:4525",
    ),
    (
        "no-crs-metres",
        "cameras",
        fx.make_no_crs_metres,
        [],
        2,
        r"has no CRS and its coordinates are projected numbers.*--crs.*Gauss-Krüger",
    ),
    ("swapped", "cameras", fx.make_swapped, [], 0, r"2 repaired.*row 1 \(C1\): longitude and lat"),
    (
        "swapped-strict",
        "cameras",
        fx.make_swapped,
        ["--strict"],
        2,
        r"rejected under --strict.*swapped_lonlat 2",
    ),
    ("gcj02", "cameras", fx.make_gcj02_points, ["--crs", "gcj02"], 0, r"loaded 2 .*CRS EPSG:4326"),
    ("chinese-csv", "parking", fx.make_chinese_csv, [], 0, r"loaded 2 .*encoding GB18030"),
    ("xlsx", "parking", fx.make_parking_xlsx, [], 0, r"loaded 2 "),
    (
        "duplicate-ids",
        "buildings",
        fx.make_duplicate_ids,
        [],
        0,
        r"loaded 1 .*2 rejected.*building_code B1 is used by rows 1, 3",
    ),
    (
        "duplicate-ids-strict",
        "buildings",
        fx.make_duplicate_ids,
        ["--strict"],
        2,
        r"rejected under --strict.*duplicate_id 2",
    ),
    ("kml", "roads", fx.make_roads_kml, [], 0, r"loaded 2 "),
    # real OpenStreetMap files: tags never cost a feature; defaults and value maps on the line
    (
        "osm-buildings",
        "buildings",
        lambda _d: OSM / "helsinki_buildings.geojson",
        [],
        0,
        r"loaded 494 feature\(s\) from 489 read \(34 repaired, 7 rejected.*"
        r"rejected: row 13: invalid geometry \(Too few points",
    ),
    (
        "osm-cameras",
        "cameras",
        lambda _d: OSM / "helsinki_cameras.geojson",
        [],
        0,
        r"loaded 6 feature\(s\) from 221 read \(0 repaired, 215 rejected.*"
        r"heading_deg is required but empty .* --set heading_deg=VALUE",
    ),
    (
        "osm-cameras-set",
        "cameras",
        lambda _d: OSM / "helsinki_cameras.geojson",
        ["--set", "fov_deg=90", "--set", "heading_deg=0"],
        0,
        r"loaded 221 feature\(s\) from 221 read \(0 repaired, 0 rejected",
    ),
    (
        "osm-cameras-values",
        "cameras",
        lambda _d: OSM / "helsinki_cameras.geojson",
        ["--map", "fov_deg=revolving", "--values", "fov_deg:yes=360"],
        0,
        r"loaded 34 feature\(s\) from 221 read",
    ),
    (
        "osm-parking",
        "parking",
        lambda _d: OSM / "helsinki_parking.geojson",
        ["--set", "kind=surface", "--set", "total_spaces=0", "--values", "kind:inline=on_street"],
        0,
        r"loaded 43 feature\(s\) from 44 read \(\d+ repaired, 3 rejected.*"
        r"row 44: parking takes Polygon/Point; this is a LineString",
    ),
    (
        "bad-set",
        "cameras",
        lambda _d: OSM / "helsinki_cameras.geojson",
        ["--set", "fov_deg=wide"],
        2,
        r"--set fov_deg=wide: 'wide' does not fit fov_deg",
    ),
    # a --crs that contradicts the file is refused unless forced
    (
        "wrong-crs",
        "buildings",
        fx.make_wgs84_gpkg,
        ["--crs", "4547"],
        2,
        r"says its CRS is EPSG:4326 \(degrees\) and its coordinates fit it.*--crs 4547 "
        r"\(EPSG:4547\) contradicts it.*add --force-crs",
    ),
    (
        "wrong-crs-forced",
        "buildings",
        fx.make_wgs84_gpkg,
        ["--crs", "4547", "--force-crs"],
        0,
        r"loaded 5 .*warning: file: .*contradicts it.*Loaded anyway \(--force-crs\)",
    ),
    # a broken shapefile or a zip bomb is refused whole, before anything is written
    (
        "empty-dbf",
        "buildings",
        fx.make_empty_dbf,
        [],
        2,
        r"buildings.dbf \(the attribute table\) is empty \(0 bytes\).*Nothing was loaded",
    ),
    ("garbage-dbf", "buildings", fx.make_garbage_dbf, [], 2, r"buildings.dbf .* is not a dBASE"),
    (
        "truncated-dbf",
        "buildings",
        fx.make_truncated_dbf,
        [],
        2,
        r"declares 83 records but its [\d,]+ bytes hold only 41: it was cut short",
    ),
    (
        "foreign-dbf",
        "buildings",
        fx.make_foreign_dbf,
        [],
        2,
        r"buildings.dbf has 3 attribute records for 83 shapes",
    ),
    (
        "foreign-dbf-no-shx",
        "buildings",
        fx.make_foreign_dbf_without_shx,
        [],
        2,
        r"buildings.dbf has 3 attribute records for 83 shapes",
    ),
    (
        "zip-bomb",
        "buildings",
        fx.make_zip_bomb,
        [],
        2,
        r"bomb.zip would unpack to 3.0 GiB .* more than the 2.0 GiB .* refused without unpacking",
    ),
    (
        "ratio-bomb",
        "buildings",
        fx.make_ratio_bomb,
        [],
        2,
        r"buildings.dbf inflates 1,029:1 \(63.7 KiB → 64.0 MiB\), past the 100:1",
    ),
    (
        "unknown-map-field",
        "buildings",
        fx.make_bowtie,
        ["--map", "floors=层数"],
        2,
        r"--map floors=层数: the file has no field '层数'",
    ),
]


@pytest.mark.parametrize(
    ("case", "layer", "maker", "args", "code", "message"), CASES, ids=[c[0] for c in CASES]
)
def test_bad_files_through_the_command(
    store, base, tmp_path, capsys, case, layer, maker, args, code, message
):
    base[layer]
    path = maker(_dir(tmp_path))
    report = tmp_path / "report.json"
    got, out, err = run(store, layer, path, *args, "--report", report, capsys=capsys)
    assert got == code, err
    assert re.search(message, " ".join((out + err).split()), re.S), out + err
    assert "Traceback" not in err
    rep = json.loads(report.read_text(encoding="utf-8"))
    assert rep["layer"] == layer
    if code == 2:
        assert err.startswith("error: ") and len(err.strip().splitlines()) == 1
        assert_unchanged(store, layer, base[layer])
        return
    now = assert_new_version_and_v1_intact(store, layer, base[layer])
    assert len(now) == rep["counts"]["loaded"]
    version = store.layer_versions(layer)[-1]
    assert version.source.startswith(path.name + " sha256:")
    assert version.report["counts"] == rep["counts"]
    CHECKS.get(case, lambda *_: None)(now, rep, path)


def _dir(tmp_path):
    d = tmp_path / "in"
    d.mkdir(exist_ok=True)
    return d


def _check_gbk(now, rep, path):
    assert sorted(now["name"]) == ["桂花苑0栋", "桂花苑1栋", "桂花苑2栋"]
    assert rep["encoding"]["chosen"] == "GB18030" and "no .cpg" in rep["encoding"]["how"]
    assert sorted(now["building_code"]) == ["GL0000", "GL0001", "GL0002"]  # via the bldg_code alias
    assert json.loads(now["attrs"].iloc[0])["物业"] == "漓江物业"  # kept, not lost


def _check_no_shx(now, rep, path):
    assert not path.with_suffix(".shx").exists()  # the staff's folder was not written to
    assert rep["issue_counts"]["shx_restored"] == 1


def _check_lying_fixed(now, rep, path):
    b = shapely.bounds(now.geometry.values)
    assert np.allclose(b[:, 0].min(), LON, atol=1e-6) and np.allclose(b[:, 1].min(), LAT, atol=1e-6)


def _check_swapped(now, rep, path):
    x = now.sort_values("camera_id").geometry.x.to_numpy()
    assert np.allclose(x, [LON + 0.0002, LON + 0.0005, LON + 0.0007])
    assert [i["row"] for i in rep["issues"] if i["kind"] == "swapped_lonlat"] == [1, 3]


def _check_gcj02(now, rep, path):
    x = now.sort_values("camera_id").geometry.x.to_numpy()
    y = now.sort_values("camera_id").geometry.y.to_numpy()
    assert np.abs(x - [LON + 0.0002, LON + 0.0006]).max() < 1e-6  # back on the WGS84 points
    assert np.abs(y - [LAT, LAT + 1e-4]).max() < 1e-6
    assert rep["crs"]["converted"] == "gcj02 → WGS84" and "error_bound" in rep["crs"]


def _check_chinese_csv(now, rep, path):
    now = now.sort_values("lot_id")
    assert now["name"].tolist() == ["东门停车场", "地下车库"]
    assert now["total_spaces"].tolist() == [40, 120]
    assert now["fee_per_hour"].tolist() == [2.5, 3.0]
    assert rep["mapping"]["total_spaces"] == "泊位数"
    assert json.loads(now["attrs"].iloc[0])["负责人"] == "王工"


def _check_duplicates(now, rep, path):
    assert now["building_code"].tolist() == ["B2"]
    dup = [i for i in rep["issues"] if i["kind"] == "duplicate_id"]
    assert [(i["row"], i["id"]) for i in dup] == [(1, "B1"), (3, "B1")]


def _check_bowtie(now, rep, path):
    assert sorted(now["building_code"]) == ["B1", "B2", "B2-2", "B3"]
    assert shapely.is_valid(now.geometry.values).all()
    assert set(now.geom_type) == {"Polygon"}


def _check_osm_buildings(now, rep, path):
    half = [i["message"] for i in rep["issues"] if i["kind"] == "bad_value"]
    assert len(half) == 4 and all("is not a whole number; left empty" in m for m in half)
    attrs = now["attrs"].map(json.loads)
    assert (now["use"][attrs.map(lambda a: a["building"]) == "apartments"] == "residential").all()
    half = attrs.map(lambda a: a.get("building:levels")).isin(["2.5", "3.5"])
    assert half.sum() >= 4 and now["floors"][half].isna().all()  # kept, floors left empty
    assert {i["kind"] for i in rep["issues"] if i["severity"] == "rejected"} == {
        "degenerate_geometry"}


def _check_osm_cameras_set(now, rep, path):
    assert sorted(now["fov_deg"].unique()) == [90, 360] and (now["range_m"] == 30).all()


def _check_osm_parking(now, rep, path):
    assert set(now.geom_type) == {"Polygon", "Point"}
    assert [i["row"] for i in rep["issues"] if i["kind"] == "wrong_geometry_type"] == [44]


CHECKS = {
    "osm-buildings": _check_osm_buildings,
    "osm-cameras-set": _check_osm_cameras_set,
    "osm-parking": _check_osm_parking,
    "gbk-no-cpg": _check_gbk,
    "zipped-gbk": _check_gbk,
    "no-shx": _check_no_shx,
    "lying-prj-fixed": _check_lying_fixed,
    "swapped": _check_swapped,
    "gcj02": _check_gcj02,
    "chinese-csv": _check_chinese_csv,
    "duplicate-ids": _check_duplicates,
    "bowtie": _check_bowtie,
}


def test_dry_run_writes_nothing(store, base, tmp_path, capsys):
    base["buildings"]
    code, out, _ = run(
        store, "buildings", fx.make_bowtie(_dir(tmp_path)), "--dry-run", capsys=capsys
    )
    assert code == 0 and out.startswith("dry run passed")
    assert_unchanged(store, "buildings", base["buildings"])


def test_unknown_layer_and_missing_file_are_rejected(store, base, tmp_path, capsys):
    base["buildings"]
    code, _, err = run(store, "houses", tmp_path / "x.csv", capsys=capsys)
    assert code == 2 and "unknown layer 'houses'; declared layers:" in err
    code, _, err = run(store, "buildings", tmp_path / "missing.shp", capsys=capsys)
    assert code == 2 and "does not exist" in err
    assert_unchanged(store, "buildings", base["buildings"])


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--values", "use=house"], r"--values 'use=house': write it as FIELD:FROM=TO"),
        (["--set", "floors"], r"--set 'floors': write it as FIELD=VALUE"),
    ],
)
def test_misspelt_values_and_set_are_refused_with_how_to_write_them(store, base, capsys, args,
                                                                     message):
    base["buildings"]
    code, _, err = run(store, "buildings", OSM / "helsinki_buildings.geojson", *args,
                       capsys=capsys)
    assert code == 2 and re.search(message, err) and len(err.strip().splitlines()) == 1
    assert_unchanged(store, "buildings", base["buildings"])


def test_a_load_landing_far_from_the_community_is_refused_unless_forced(store, base, tmp_path,
                                                                      capsys):
    """Helsinki's buildings loaded into the store of a community in Guilin."""
    base["buildings"]
    store.write_layer("community", fx.community_boundary(), actor="seed", source="seed")
    path = OSM / "helsinki_buildings.geojson"
    code, _, err = run(store, "buildings", path, capsys=capsys)
    assert code == 2, err
    assert re.search(r"every feature lies more than 2 km outside the community boundary "
                     r"\(the nearest [\d,]+\.\d km\).*--force-crs", err)
    assert_unchanged(store, "buildings", base["buildings"])
    report = tmp_path / "r.json"
    code, out, err = run(store, "buildings", path, "--force-crs", "--report", report,
                         capsys=capsys)
    assert code == 0 and "loaded 494 feature(s)" in out
    forced = [i for i in json.loads(report.read_text())["issues"] if i["kind"] == "crs_forced"]
    assert len(forced) == 1 and "Loaded anyway (--force-crs)" in forced[0]["message"]
    assert_new_version_and_v1_intact(store, "buildings", base["buildings"])


def test_history_and_rollback(store, base, tmp_path, capsys):
    base["buildings"]
    assert run(store, "buildings", fx.make_duplicate_ids(_dir(tmp_path)), capsys=capsys)[0] == 0
    code, out, _ = run(store, "--history", "buildings", capsys=capsys)
    lines = out.rstrip("\n").splitlines()
    assert code == 0 and len(lines) == 2
    assert lines[0].startswith("  v1") and lines[1].startswith("* v2")
    assert "duplicates.geojson sha256:" in lines[1] and "2 rejected" in lines[1]
    code, out, _ = run(store, "--rollback", "buildings", "1", capsys=capsys)
    assert code == 0 and "version 1" in out
    assert [v.current for v in store.layer_versions("buildings")] == [True, False]
    pd.testing.assert_frame_equal(
        pd.DataFrame(store.read_layer("buildings")), pd.DataFrame(base["buildings"])
    )
    code, _, err = run(store, "--rollback", "buildings", "9", capsys=capsys)
    assert code == 2 and err.startswith("error: ")


def test_reloading_the_same_file_gives_the_same_generated_ids(store, tmp_path, capsys):
    path = fx._geojson(
        _dir(tmp_path),
        "no_ids.geojson",
        [
            fx._feature({"name": f"{i}栋"}, fx._ring(fx.footprint(i).exterior.coords))
            for i in range(3)
        ],
    )
    assert run(store, "buildings", path, capsys=capsys)[0] == 0
    first = store.read_layer("buildings").sort_values("name")["building_code"].tolist()
    assert run(store, "buildings", path, capsys=capsys)[0] == 0
    assert store.read_layer("buildings").sort_values("name")["building_code"].tolist() == first
    assert len(set(first)) == 3 and all(i.startswith("bui-") for i in first)


def test_grid_cells_topology_is_reported(store, base, tmp_path, capsys):
    store.write_layer("community", fx.community_boundary(), actor="seed", source="seed")
    report = tmp_path / "r.json"
    code, out, err = run(
        store, "grid_cells", fx.make_grid_cells(_dir(tmp_path)), "--report", report, capsys=capsys
    )
    assert code == 0, err
    rep = json.loads(report.read_text(encoding="utf-8"))
    kinds = {i["kind"]: i for i in rep["issues"]}
    assert "overlaps 45031100100102 by 1,000.0 m²" in kinds["grid_overlap"]["message"]
    assert (
        kinds["malformed_code"]["row"] == 3
        and "'01' is not 3 digits" in (kinds["malformed_code"]["message"])
    )
    # 200 m × 300 m boundary; the two valid grids cover 200 × 100 m² of it
    gap = float(
        re.search(r"leave ([\d,.]+) m²", kinds["grid_gap"]["message"]).group(1).replace(",", "")
    )
    assert 39_000 < gap < 41_000
    got = store.read_layer("grid_cells")
    assert sorted(got["grid_code"]) == ["45031100100101", "45031100100102"]
    assert sorted(got["name"]) == ["一网格", "二网格"]  # wgmc alias
    code, _, err = run(
        store, "grid_cells", fx.make_grid_cells(_dir(tmp_path)), "--strict", capsys=capsys
    )
    assert code == 2 and "rejected under --strict" in err
    assert len(store.layer_versions("grid_cells")) == 1


def test_internal_errors_exit_1_without_a_traceback(store, base, tmp_path, capsys, monkeypatch):
    base["buildings"]
    import twin.load

    def boom(*a, **k):
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(twin.load, "load_layer", boom)
    code, _, err = run(store, "buildings", fx.make_bowtie(_dir(tmp_path)), capsys=capsys)
    assert code == 1 and "internal error: RuntimeError: disk on fire" in err
    assert "Traceback" not in err
    assert_unchanged(store, "buildings", base["buildings"])


LARGE_N = 20_000  # finely digitised footprints: the file is over 200 MB


@pytest.fixture(scope="session")
def large_file(tmp_path_factory):
    """The 200 MB staff file, made once for both stores (never stored in the repository)."""
    path = fx.make_large(tmp_path_factory.mktemp("large"), LARGE_N)
    assert path.stat().st_size > 200e6
    return path


def test_a_200_mb_file_loads_in_one_version_and_reports_every_rejected_feature(
        store, base, large_file, tmp_path, capsys):
    import geopandas as gpd
    from shapely.geometry import box

    base["buildings"]
    # a 1 km community in the south-west corner: most of the 8 × 4 km of footprints are far out
    store.write_layer("community", gpd.GeoDataFrame(
        {"community_code": ["450311001001"], "name": ["桂花社区"]},
        geometry=[box(LON, LAT, LON + 0.01, LAT + 0.009)], crs=4326), actor="seed", source="seed")
    report = tmp_path / "report.json"
    code, out, err = run(store, "buildings", large_file, "--quiet", "--report", report,
                         capsys=capsys)
    assert code == 0, err
    assert out == ""  # --quiet
    now = assert_new_version_and_v1_intact(store, "buildings", base["buildings"])
    # the feature without geometry is rejected; the repaired bow-tie is split into two parts
    assert len(now) == LARGE_N and (now["building_code"].str.startswith("L012345")).sum() == 2
    floors = [(i % 30) + 1 for i in range(LARGE_N)]
    assert now["floors"].sum() == sum(floors) - floors[-1] + floors[12_345]
    assert shapely.get_num_coordinates(now.geometry.values).sum() > 600 * (LARGE_N - 2)
    r = json.loads(report.read_text())
    far = r["issue_counts"]["far_outside"]
    assert far > 10_000 and r["warnings_not_listed"] == far - 2000
    # past thousands of warnings, the repaired and the rejected feature are still listed
    listed = {(i["severity"], i.get("id")) for i in r["issues"]}
    assert ("repaired", "L012345") in listed
    assert any(i["severity"] == "rejected" and i.get("row") == LARGE_N for i in r["issues"])
    assert r["counts"]["rejected"] == 1 and r["counts"]["repaired"] == 1
