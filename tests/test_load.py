"""twin.load.load_file without a store: formats, encodings, mapping, types, ids, repairs, CRS."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
import pyogrio
import pytest
import shapely
from shapely.geometry import LineString, Point, box

from tests.data import make_load_fixtures as fx
from twin import layers
from twin.crs import gcj02_to_bd09, wgs84_to_gcj02
from twin.errors import ValidationError
from twin.load import LoadError, load_file
from twin.load_formats import detect_dbf_encoding, parse_degrees
from twin.schema import validate_layer_frame

LON, LAT = fx.LON, fx.LAT
OSM = Path(__file__).parent / "data" / "osm"  # real OpenStreetMap data (ODbL; see its README)


def issues(report, kind):
    return [i for i in report["issues"] if i["kind"] == kind]


def write_geojson(tmp_path, frame, name="in.geojson"):
    path = tmp_path / name
    frame.to_file(path, driver="GeoJSON")
    return path


def buildings_frame(**columns):
    n = len(next(iter(columns.values())))
    return gpd.GeoDataFrame(columns, geometry=[fx.footprint(i) for i in range(n)], crs=4326)


def test_the_result_is_canonical_and_the_report_is_json(tmp_path):
    path = fx.make_bowtie(tmp_path)
    result = load_file("buildings", path)
    validate_layer_frame(layers.get_layer("buildings"), result.frame)  # does not raise
    assert list(result.frame.columns) == layers.get_layer("buildings").column_names + ["geometry"]
    text = json.dumps(result.report, ensure_ascii=False)
    assert json.loads(text)["counts"] == {
        "read": 3, "loaded": 4, "repaired": 1, "rejected": 0, "warnings": 0,
        "split_parts_added": 1, "values_emptied": 0,
    }  # fmt: skip
    assert set(result.report["timings_s"]) >= {"read", "check", "total"}


def test_every_unmapped_field_is_kept_in_attrs_and_map_wins(tmp_path):
    frame = buildings_frame(
        code=["B1", "B2"], levels=[3, 4], **{"building:levels": [5, 6]},
        物业=["甲物业", None], 备注=["北门", "南门"],
    )  # fmt: skip
    path = write_geojson(tmp_path, frame)
    auto = load_file("buildings", path)
    assert auto.frame["floors"].tolist() == [5, 6]  # aliases in declared order: building:levels
    mapped = load_file("buildings", path, mapping={"floors": "levels"})
    assert mapped.frame["floors"].tolist() == [3, 4]
    assert mapped.report["mapping"]["floors"] == "levels"
    attrs = [json.loads(a) for a in mapped.frame["attrs"]]
    assert attrs[0] == {"building:levels": 5, "物业": "甲物业", "备注": "北门"}
    assert attrs[1]["备注"] == "南门"
    assert mapped.report["attrs_fields"] == ["building:levels", "物业", "备注"]


def test_a_value_that_does_not_fit_is_left_empty_and_reported_or_under_strict_rejected(tmp_path):
    frame = buildings_frame(code=["B1", "B2", "B3"], floors=["6层", "六", "7"],
                            use=["Residential", "house", "飞船"], height=[18, -3, 21])  # fmt: skip
    path = write_geojson(tmp_path, frame)
    result = load_file("buildings", path)
    f = result.frame
    assert f["building_code"].tolist() == ["B1", "B2", "B3"]  # no feature lost
    assert f["floors"].astype(object).tolist() == [6, pd.NA, 7]  # unit stripped; 六 left empty
    assert f["use"].tolist() == ["residential", "residential", None]  # house: the OSM value map
    assert f["height_m"].tolist()[0] == 18 and pd.isna(f["height_m"][1])
    bad = [i for i in result.report["issues"] if i["severity"] == "repaired"]
    assert [(i["row"], i["id"], i["kind"]) for i in bad] == [
        (2, "B2", "bad_value"), (3, "B3", "bad_choice"), (2, "B2", "out_of_range")]
    assert "floors: '六' is not a whole number; left empty; the file's value is kept in attrs" \
        == bad[0]["message"]
    assert result.report["counts"] | {"values_emptied": 3, "repaired": 2, "rejected": 0} \
        == result.report["counts"]
    # the file's values of the changed fields are kept with the feature
    assert json.loads(f["attrs"][1]) == {"floors": "六", "use": "house", "height": -3}
    assert json.loads(f["attrs"][2])["use"] == "飞船"
    mapped = issues(result.report, "values_mapped")[0]["message"]
    assert mapped.startswith("use (from use): 1 value(s) mapped: 'house' → residential ×1")
    with pytest.raises(LoadError, match=r"rejected under --strict: 3 issue\(s\)") as info:
        load_file("buildings", path, strict=True)
    assert info.value.report["counts"]["read"] == 3
    assert isinstance(info.value, ValidationError)


def test_out_of_range_and_missing_required_values_are_rejected(tmp_path):
    cams = gpd.GeoDataFrame(
        {"camera_id": ["C1", "C2", "C3"], "heading": [90, 400, 10], "fov": [60, 60, None],
         "range": [30, 30, 30]},
        geometry=[Point(LON, LAT)] * 3, crs=4326,
    )  # fmt: skip
    result = load_file("cameras", write_geojson(tmp_path, cams))
    assert result.frame["camera_id"].tolist() == ["C1"]
    assert issues(result.report, "out_of_range")[0]["id"] == "C2"
    assert "fov_deg is required" in issues(result.report, "missing_value")[0]["message"]


def test_missing_ids_are_stable_and_derived_from_geometry(tmp_path):
    frame = buildings_frame(name=["a", "b", "c"])
    frame.loc[2, "geometry"] = frame.geometry[0]  # the same footprint twice
    path = write_geojson(tmp_path, frame)
    one = load_file("buildings", path).frame["building_code"].tolist()
    two = load_file("buildings", path).frame["building_code"].tolist()
    assert one == two and len(set(one)) == 3
    assert one[2] == one[0] + "-2"
    other = load_file("cameras", write_geojson(tmp_path, gpd.GeoDataFrame(
        {"heading": [1], "fov": [60], "range": [5]}, geometry=[Point(LON, LAT)], crs=4326),
        "c.geojson"))  # fmt: skip
    assert other.frame["camera_id"][0].startswith("cam-")


def test_numeric_codes_from_a_dbf_stay_whole(tmp_path):
    frame = buildings_frame(code=[1203.0, 1204.0])
    path = tmp_path / "codes.shp"
    pyogrio.write_dataframe(frame, path)
    assert load_file("buildings", path).frame["building_code"].tolist() == ["1203", "1204"]


def test_a_cpg_is_honoured_and_detection_reports_its_choice(tmp_path):
    shp = fx.make_gbk_shapefile_without_cpg(tmp_path)
    assert detect_dbf_encoding(shp.with_suffix(".dbf")) == "GB18030"
    shp.with_suffix(".cpg").write_text("936")
    result = load_file("buildings", shp)
    assert result.report["encoding"] == {"chosen": "GBK", "how": ".cpg says 936"}
    assert result.frame["name"][0] == "桂花苑0栋"
    utf8 = tmp_path / "utf8.shp"
    pyogrio.write_dataframe(buildings_frame(code=["B1"], name=["一栋"]), utf8, encoding="UTF-8")
    utf8.with_suffix(".cpg").unlink()
    got = load_file("buildings", utf8)
    assert got.report["encoding"]["chosen"] == "UTF-8" and got.frame["name"][0] == "一栋"


def test_csv_with_bom_degree_strings_and_a_wkt_table(tmp_path):
    path = tmp_path / "cams.csv"
    path.write_bytes(
        "编号,经度,纬度,朝向,视角,视距\n"
        "C1,110°17'24\"E,25°4'48\"N,90,60,30\n"
        "C2,110.29,25.08,90,60,30\n"
        "C3,abc,25.08,90,60,30\n".encode("utf-8-sig")
    )
    result = load_file("cameras", path)
    assert result.report["encoding"]["chosen"] == "UTF-8"
    assert result.frame["camera_id"].tolist() == ["C1", "C2"]
    assert result.frame.geometry.x[0] == pytest.approx(110 + 17 / 60 + 24 / 3600)
    assert issues(result.report, "bad_coordinates")[0]["row"] == 3
    wkt = tmp_path / "roads.csv"
    wkt.write_text('id,name,wkt\nR1,甲路,"LINESTRING (110.29 25.08, 110.3 25.08)"\nR2,乙路,nope\n')
    got = load_file("roads", wkt)
    assert got.frame["road_id"].tolist() == ["R1"] and got.frame["name"][0] == "甲路"


def test_parse_degrees():
    s = pd.Series(["110.5", "110°30'", "25度30分0秒", "110°30'W", "12°75'", None])
    got = parse_degrees(s)
    assert got[:4].tolist() == [110.5, 110.5, 25.5, -110.5]
    assert got[4:].isna().all()


def test_geopackage_layers_and_zip_folders_need_a_choice(tmp_path):
    gpkg = tmp_path / "two.gpkg"
    pyogrio.write_dataframe(buildings_frame(code=["B1"]), gpkg, layer="楼栋")
    pyogrio.write_dataframe(buildings_frame(code=["X1", "X2"]), gpkg, layer="其他")
    with pytest.raises(LoadError, match=r"holds 2 layers .*--source-layer"):
        load_file("buildings", gpkg)
    assert len(load_file("buildings", gpkg, source_layer="其他").frame) == 2
    with pytest.raises(LoadError, match="has no layer 'x'"):
        load_file("buildings", gpkg, source_layer="x")
    folder = tmp_path / "two_shp"
    folder.mkdir()
    for name in ("a", "b"):
        pyogrio.write_dataframe(buildings_frame(code=[name]), folder / f"{name}.shp")
    archive = tmp_path / "both.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for part in folder.iterdir():
            zf.write(part, f"数据/{part.name}")
    with pytest.raises(LoadError, match=r"several data files \(a.shp, b.shp\)"):
        load_file("buildings", archive)
    assert load_file("buildings", archive, source_layer="b").frame["building_code"][0] == "b"


def test_a_shapefile_without_its_dbf_is_rejected(tmp_path):
    shp = tmp_path / "x.shp"
    pyogrio.write_dataframe(buildings_frame(code=["B1"]), shp)
    shp.with_suffix(".dbf").unlink()
    with pytest.raises(LoadError, match=r"the .dbf \(attribute table\) is missing"):
        load_file("buildings", shp)


@pytest.mark.parametrize(
    ("maker", "message"),
    [
        (fx.make_empty_dbf, r"is empty \(0 bytes\): every feature would lose its attributes"),
        (fx.make_garbage_dbf, r"is not a dBASE file \(168 bytes"),
        (fx.make_truncated_dbf, r"declares 83 records .* hold only 41: it was cut short"),
        (fx.make_foreign_dbf, r"has 3 attribute records for 83 shapes in the .shp/.shx"),
        (fx.make_foreign_dbf_without_shx, r"has 3 attribute records for 83 shapes in"),
    ],
)
def test_a_shapefile_whose_dbf_is_empty_or_broken_is_refused(tmp_path, maker, message):
    path = maker(tmp_path)
    if maker is fx.make_empty_dbf:  # GDAL itself reads it without a word, attributes gone
        assert list(pyogrio.read_dataframe(path).columns) == ["geometry"]
    with pytest.raises(LoadError, match=message) as info:
        load_file("buildings", path)
    assert "send the shapefile again with all its parts" in str(info.value)
    assert info.value.report["layer"] == "buildings"


def test_a_zip_bomb_is_refused_from_its_entries_without_unpacking(tmp_path, monkeypatch):
    import tempfile
    import time

    bomb = fx.make_zip_bomb(tmp_path)
    assert bomb.stat().st_size < 4e6
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    t0 = time.perf_counter()
    with pytest.raises(LoadError, match=r"would unpack to 3.0 GiB .*refused without unpacking"):
        load_file("buildings", bomb)
    assert time.perf_counter() - t0 < 2  # unpacking 3 GiB alone takes longer
    assert list(scratch.iterdir()) == []  # not even a temporary folder was made
    with pytest.raises(LoadError, match=r"inflates 1,029:1 .*past the 100:1"):
        load_file("buildings", fx.make_ratio_bomb(tmp_path))
    # the limits are parameters: past the ratio, the zeros are no dBASE file either
    with pytest.raises(LoadError, match=r"buildings.dbf .* is not a dBASE file"):
        load_file("buildings", fx.make_ratio_bomb(tmp_path), max_zip_ratio=2000)
    ordinary = fx.make_zipped_shapefile(tmp_path)
    assert len(load_file("buildings", ordinary).frame) == 3
    with pytest.raises(LoadError, match=r"would unpack to 1.\d KiB .*than the 1000 bytes"):
        load_file("buildings", ordinary, max_unzipped_bytes=1000)


def test_a_zip_entry_holding_more_than_it_says_is_refused_while_unpacking(tmp_path):
    import struct

    bomb = fx.make_ratio_bomb(tmp_path)
    data = bytearray(bomb.read_bytes())
    # the .dbf of zeros now says it unpacks to 1,000 bytes (local and central header)
    local, central = data.find(b"PK\x03\x04"), data.find(b"PK\x01\x02")
    struct.pack_into("<I", data, local + 22, 1000)
    struct.pack_into("<I", data, central + 24, 1000)
    bomb.write_bytes(bytes(data))
    with pytest.raises(LoadError, match=r"cannot unpack buildings.dbf: Bad CRC-32"):
        load_file("buildings", bomb)


def test_only_the_entries_a_load_reads_are_unpacked(tmp_path):
    import contextlib

    from twin.load_formats import unzip_checked

    archive = fx.make_zipped_shapefile(tmp_path)
    with zipfile.ZipFile(archive, "a") as zf:
        zf.writestr("说明.pdf", b"%PDF" + bytes(1 << 20))
        zf.writestr("../../escape.shp", b"x")
        zf.writestr("folder/", b"")
    with contextlib.ExitStack() as stack:
        folder = unzip_checked(archive, stack)
        got = sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())
    assert got == ["楼栋.dbf", "楼栋.prj", "楼栋.shp", "楼栋.shx"]
    assert not folder.exists() and not (tmp_path.parent / "escape.shp").exists()


def test_wrong_geometry_types_are_rejected_and_parking_takes_polygons_and_points(tmp_path):
    mixed = gpd.GeoDataFrame(
        {"lot_id": ["P1", "P2", "P3"], "kind": ["surface"] * 3, "total_spaces": [5, 6, 7]},
        geometry=[box(LON, LAT, LON + D, LAT + D), Point(LON, LAT),
                  LineString([(LON, LAT), (LON + D, LAT)])],
        crs=4326,
    )  # fmt: skip
    result = load_file("parking", write_geojson(tmp_path, mixed))
    assert result.frame["lot_id"].tolist() == ["P1", "P2"]
    assert "this is a LineString" in issues(result.report, "wrong_geometry_type")[0]["message"]


D = 0.001


def test_multipoints_split_with_derived_ids(tmp_path):
    cams = gpd.GeoDataFrame(
        {"camera_id": ["C1"], "heading": [0], "fov": [60], "range": [20]},
        geometry=[shapely.MultiPoint([(LON, LAT), (LON + D, LAT), (LON + 2 * D, LAT)])],
        crs=4326,
    )  # fmt: skip
    result = load_file("cameras", write_geojson(tmp_path, cams))
    assert result.frame["camera_id"].tolist() == ["C1", "C1-2", "C1-3"]
    assert issues(result.report, "split_multipart")[0]["id"] == "C1"


def test_bd09_points_are_converted_and_features_far_away_reported(tmp_path):
    glon, glat = wgs84_to_gcj02([LON, LON + D], [LAT, LAT])
    blon, blat = gcj02_to_bd09(glon, glat)
    frame = pd.DataFrame({"camera_id": ["C1", "C2", "C3"], "lon": [*blon, 116.4],
                          "lat": [*blat, 39.9], "heading": [1] * 3, "fov": [60] * 3,
                          "range": [9] * 3})  # fmt: skip
    path = tmp_path / "bd.csv"
    frame.to_csv(path, index=False)
    result = load_file("cameras", path, crs="bd09")
    x = result.frame.geometry.x.to_numpy()
    assert np.abs(x[:2] - [LON, LON + D]).max() < 1e-6
    far = issues(result.report, "far_outside")
    assert [i["id"] for i in far] == ["C3"] and "km from the middle of the data" in far[0][
        "message"
    ]
    area = box(LON - D, LAT - D, LON + 2 * D, LAT + D)
    near = load_file("cameras", path, crs="bd09", area=area)
    assert [i["id"] for i in issues(near.report, "far_outside")] == ["C3"]
    assert "community boundary" in issues(near.report, "far_outside")[0]["message"]


def test_gk_numbers_without_a_crs_are_rejected_naming_the_zone(tmp_path):
    gk = buildings_frame(code=["B1", "B2"]).to_crs(4525)
    path = tmp_path / "gk.shp"
    pyogrio.write_dataframe(gk, path)
    path.with_suffix(".prj").unlink()
    with pytest.raises(LoadError, match=r"no CRS .*projected numbers.*--crs 4525"):
        load_file("buildings", path)
    got = load_file("buildings", path, crs="EPSG:4525")
    assert got.frame.geometry.bounds.minx.min() == pytest.approx(LON, abs=1e-6)


def test_grid_codes_are_derived_from_parts_and_parts_from_codes(tmp_path):
    cells = gpd.GeoDataFrame(
        {"grid_code": [None, "45031100100102"], "county_code": ["450311", None],
         "street_code": ["001", None], "community_code": ["001", None],
         "sequence": ["01", None], "resp_grid_id": ["R1", "R1"]},
        geometry=[box(LON, LAT, LON + D, LAT + D), box(LON + D, LAT, LON + 2 * D, LAT + D)],
        crs=4326,
    )  # fmt: skip
    result = load_file("grid_cells", write_geojson(tmp_path, cells))
    f = result.frame
    assert f["grid_code"].tolist() == ["45031100100101", "45031100100102"]
    assert f["sequence"].tolist() == ["01", "02"] and f["county_code"][1] == "450311"
    assert not issues(result.report, "grid_overlap")


def test_a_table_layer_loads_from_a_spreadsheet(tmp_path):
    path = tmp_path / "居民.xlsx"
    pd.DataFrame(
        {"resident_id": ["R1", "R2"], "楼栋编码": ["B1", "B2"], "姓名": ["张三", "李四"]}
    ).to_excel(path, index=False)
    spec = layers.get_layer("residents")
    result = load_file("residents", path)
    assert len(result.frame) == 2 and "geometry" not in result.frame
    assert list(result.frame.columns) == spec.column_names
    assert result.report["crs"] is None
    assert result.frame["name"].tolist() == ["张三", "李四"]  # matched by the zh label 姓名


def test_table_rows_without_ids_get_stable_ids_told_apart_by_their_other_fields(tmp_path):
    path = tmp_path / "居民.xlsx"
    pd.DataFrame({"楼栋编码": ["B1", "B2", "B2"], "姓名": ["张三", "李四", "李四"],
                  "备注": ["x", None, "y"]}).to_excel(path, index=False)  # fmt: skip
    first = load_file("residents", path).frame["resident_id"].tolist()
    assert len(set(first)) == 3 and all(i.startswith("res-") for i in first)
    assert load_file("residents", path).frame["resident_id"].tolist() == first


def test_unreadable_input_is_a_load_error_with_a_hint(tmp_path):
    (tmp_path / "x.xls").write_bytes(b"\xd0\xcf")
    with pytest.raises(LoadError, match=r"Save it as .xlsx"):
        load_file("buildings", tmp_path / "x.xls")
    empty = tmp_path / "empty.csv"
    empty.write_text("lon,lat\n")
    with pytest.raises(LoadError, match="holds no features"):
        load_file("cameras", empty)
    nocoords = tmp_path / "nocoords.csv"
    nocoords.write_text("id,name\nC1,x\n")
    with pytest.raises(LoadError, match="--lon COL --lat COL"):
        load_file("cameras", nocoords)


def test_the_fixture_script_writes_every_case(tmp_path):
    assert fx.main(tmp_path / "out") == 0
    made = {p.name for p in (tmp_path / "out").rglob("*") if p.is_file()}
    assert {"bowtie.geojson", "停车场.csv", "楼栋.zip", "swapped.csv"} <= made


@pytest.mark.parametrize(
    ("attrs", "expected"),
    [
        ('{"a": 1, "b": "x"}', '{"a": 1, "b": "x"}'),  # canonical: kept as it is
        ('{"b":"x","a":1}', '{"a": 1, "b": "x"}'),  # not canonical: re-serialised
        ('{"备注": "北门"}', '{"备注": "北门"}'),
        ("[1, 2]", "[1, 2]"),
        (None, None),
    ],
)
def test_validating_twice_keeps_canonical_values_and_fixes_the_rest(attrs, expected):
    spec = layers.get_layer("buildings")
    frame = buildings_frame(building_code=["B1", "B2"], floors=[3, None])
    frame["attrs"] = [attrs, '{"z": 0, "a": [1, {"y": 2, "x": 1}]}']
    once = validate_layer_frame(spec, frame)
    assert once["attrs"].tolist() == [expected, '{"a": [1, {"x": 1, "y": 2}], "z": 0}']
    twice = validate_layer_frame(spec, once)
    pd.testing.assert_frame_equal(pd.DataFrame(twice), pd.DataFrame(once))
    assert str(twice["floors"].dtype) == "Int64"
    assert twice["floors"].isna().tolist() == [False, True]


@pytest.mark.parametrize("bad", ["1, 2", "{", '{"a": 1} x', ""])
def test_json_that_only_parses_when_joined_is_still_rejected(bad):
    spec = layers.get_layer("buildings")
    frame = buildings_frame(building_code=["B1", "B2"])
    frame["attrs"] = [bad, "2"]
    with pytest.raises(ValidationError, match="attrs"):
        validate_layer_frame(spec, frame)


# -- the loader's frame is handed to the store without a second full validation ---------------


def _handover_cases(tmp_path):
    """(layer, file, options) loads covering repairs, splits, attrs, generated ids, a table."""
    cams = tmp_path / "cams.csv"
    cams.write_text("编号,经度,纬度,朝向,视角,视距\nC1,110.29,25.08,90,60,30\nC2,abc,25.08,90,60,30\n")
    mixed = buildings_frame(floors=[3, 4, 5])  # no ids: generated from the geometry
    mixed["备注"] = ["北门", None, "南门"]
    path = tmp_path / "居民.xlsx"
    pd.DataFrame({"resident_id": ["R1"], "楼栋编码": ["B1"], "姓名": ["张三"]}).to_excel(
        path, index=False
    )
    return [
        ("buildings", fx.make_bowtie(tmp_path), {}),
        ("buildings", fx.make_gbk_shapefile_without_cpg(tmp_path), {}),
        ("buildings", write_geojson(tmp_path, mixed), {}),
        ("cameras", cams, {}),
        ("cameras", fx.make_gcj02_points(tmp_path), {"crs": "gcj02"}),
        ("residents", path, {}),
    ]


def test_a_loaded_frame_is_exactly_what_full_validation_returns(tmp_path, grid_cells):
    from twin.enrich import assign_grids
    from twin.schema import layer_frame_to_store

    for name, path, options in _handover_cases(tmp_path):
        spec = layers.get_layer(name)
        loaded = load_file(name, path, **options).frame
        # the full check, geometry validity included, finds nothing to change
        assert_same_frame(validate_layer_frame(spec, loaded), loaded)
        if spec.located and spec.geometry_type is not None:
            loaded = assign_grids(loaded, grid_cells)
            assert loaded["grid_code"].notna().any() or name == "cameras"
        handed = layer_frame_to_store(spec, loaded, prevalidated=True)
        assert_same_frame(handed, validate_layer_frame(spec, loaded))


def assert_same_frame(got, want):
    assert type(got) is type(want)
    pd.testing.assert_frame_equal(pd.DataFrame(got).drop(columns="geometry", errors="ignore"),
                                  pd.DataFrame(want).drop(columns="geometry", errors="ignore"))
    if "geometry" in want:
        assert got.crs == want.crs
        assert shapely.equals_exact(got.geometry.values, want.geometry.values, 0).all()


def test_a_frame_handed_over_as_validated_is_still_checked(tmp_path, grid_cells):
    from twin.schema import layer_frame_to_store

    spec = layers.get_layer("buildings")
    loaded = load_file("buildings", fx.make_bowtie(tmp_path)).frame
    assert_same_frame(layer_frame_to_store(spec, loaded, prevalidated=True), loaded)
    bad = {
        "columns out of order": loaded[loaded.columns[::-1]],
        "an extra column": loaded.assign(extra=1),
        "another CRS": loaded.to_crs(3857),
        "rows taken out": loaded.iloc[1:],
        "not a GeoDataFrame": pd.DataFrame(loaded),
    }
    for frame in bad.values():
        with pytest.raises(ValidationError, match="handed over as already validated"):
            layer_frame_to_store(spec, frame, prevalidated=True)
    # the assigned columns are the ones that changed: they are converted and checked
    odd = loaded.assign(grid_code=pd.Series([45031100100101, None, None, 7], dtype=object))
    handed = layer_frame_to_store(spec, odd, prevalidated=True)
    assert handed["grid_code"].tolist() == ["45031100100101", None, None, "7"]
    assert_same_frame(handed, validate_layer_frame(spec, odd))


def test_load_layer_assigns_the_grids_assign_grids_gives(store, grid_cells, tmp_path):
    """The grid positions located while the frame is validated are those of assign_grids."""
    from twin.enrich import ASSIGNED_NAMES, assign_grids
    from twin.load import load_layer

    store.write_layer("grid_cells", grid_cells, actor="t", source="test")
    frame = buildings_frame(building_code=[f"B{i}" for i in range(60)], floors=[3] * 60)
    frame.loc[3, "geometry"] = box(0, 0, 1, 1)  # far away: in no grid
    # the features are located before they are split and before rows are rejected: a row
    # rejected early shifts the rest, and a split feature's parts lie in two grids
    grids = assign_grids(frame, grid_cells)["grid_code"]
    first, other = 10, int(np.flatnonzero((grids != grids[10]) & grids.notna())[0])
    frame["geometry"] = frame.geometry.astype(object)
    frame.loc[5, "geometry"] = shapely.MultiPolygon([frame.geometry[first], frame.geometry[other]])
    frame.loc[1, "geometry"] = None  # rejected: no geometry
    path = write_geojson(tmp_path, gpd.GeoDataFrame(frame, geometry="geometry", crs=4326))
    result = load_layer(store, "buildings", path, actor="t")
    stored = store.read_layer("buildings").set_index("building_code")
    want = assign_grids(load_file("buildings", path).frame, grid_cells)
    want = want.set_index("building_code").loc[stored.index]
    assert result.report["counts"]["loaded"] == 60  # 59 rows, one of them in two parts
    for name in ASSIGNED_NAMES:
        assert stored[name].tolist() == want[name].tolist()
    assert stored["grid_code"].notna().sum() > 1 and stored.loc["B3", "grid_code"] is None
    assert stored.loc["B5", "grid_code"] == grids[first]
    assert stored.loc["B5-2", "grid_code"] == grids[other] != grids[first]
    assert "B1" not in stored.index


def test_ids_padded_with_any_whitespace_str_strip_knows_are_found_and_empty_ones():
    """The loader strips only the ids Arrow finds padded: it must find what str.strip strips."""
    from twin.load import _padded

    chars = [chr(i) for i in range(0x110000) if not 0xD800 <= i < 0xE000]
    texts = pd.Series([f"B{c}" for c in chars] + [f"{c}B" for c in chars] + [None, "", "B 1"],
                      dtype=object)
    expected = [t is not None and t != t.strip() for t in texts]
    padded, blank = _padded(texts)
    assert padded.tolist() == expected
    assert blank.tolist() == [t == "" for t in texts]


GEN = "generated"
IDS = [  # ids of the file, rows rejected before, ids after (GEN: a stable id), duplicate rows
    ([" B1", "B1", "", "\u3000", None, "B2", "B2", "B3", np.nan], [7],
     ["B1", "B1", GEN, GEN, GEN, "B2", "B2", "B3", GEN], [1, 2]),
    (["B1", "B2", "B3"], [], ["B1", "B2", "B3"], []),
    (["B1", "B1", "B3"], [3], ["B1", "B1", "B3"], [1, 2]),
    (["B1", "B1", "B3"], [2], ["B1", "B1", "B3"], []),  # a rejected row's id is no duplicate
    ([None, None], [], [GEN, GEN], []),
    ([" ", "a "], [], [GEN, "a"], []),
    ([1, "B1", None, " B1"], [], [1, "B1", GEN, "B1"], [2, 4]),
]


@pytest.mark.parametrize(("ids", "rejected", "expected", "duplicates"), IDS)
def test_ids_are_stripped_emptied_told_apart_and_generated(ids, rejected, expected, duplicates):
    from twin.load import _ids, _Issues

    spec = layers.get_layer("buildings")
    n = len(ids)
    out = pd.DataFrame({spec.id_field: pd.Series(ids, dtype=object), "name": ["x"] * n})
    geoms = shapely.box(np.arange(n), 0, np.arange(n) + 1, 1)
    rows = np.arange(1, n + 1)
    issues = _Issues()
    out, dup = _ids(spec, out, geoms, rows, np.isin(rows, rejected), issues)
    got = out[spec.id_field].tolist()
    assert [GEN if isinstance(v, str) and v.startswith("bui-") else v for v in got] == expected
    assert rows[dup].tolist() == duplicates
    assert sorted(i["row"] for i in issues.items if i["kind"] == "duplicate_id") == duplicates
    generated = [i for i in issues.items if i["kind"] == "generated_ids"]
    assert len(generated) == (GEN in expected)
    if generated:
        assert generated[0]["message"].startswith(f"{expected.count(GEN)} feature(s) had no")


# -- real OpenStreetMap files: attributes never cost a feature -----------------------------------


def _rejected_kinds(report) -> set[str]:
    return {i["kind"] for i in report["issues"] if i["severity"] == "rejected"}


def test_osm_buildings_keep_every_footprint_whatever_their_tags():
    """489 buildings of central Helsinki as overpass-turbo exports them: building=yes/apartments/
    roof …, building:levels 2.5 and 3.5. Only footprints that are no area are rejected."""
    result = load_file("buildings", OSM / "helsinki_buildings.geojson")
    rep, f = result.report, result.frame
    assert rep["counts"]["read"] == 489 and rep["counts"]["rejected"] == 7
    assert _rejected_kinds(rep) == {"degenerate_geometry"}  # unclosed rings cut by the extract
    assert rep["mapping"] == {"name": "name", "use": "building", "floors": "building:levels",
                              "height_m": "height"}
    attrs = f["attrs"].map(json.loads)
    building = attrs.map(lambda a: a["building"])
    # the declared OSM value map: apartments → residential …; yes (use unknown) → empty
    assert (f["use"][building == "apartments"] == "residential").all()
    assert (f["use"][building == "church"] == "public").all()
    assert f["use"][building == "yes"].isna().all() and (building == "yes").sum() > 350
    # a value outside the use choices (building=ship …) is left empty, its feature kept
    odd = [i for i in rep["issues"] if i["kind"] == "bad_choice"]
    assert odd and all(i["severity"] == "repaired" and "left empty" in i["message"] for i in odd)
    assert f["building_code"].str.startswith("bui-").all()
    # half floors (a loft): the value is left empty and listed, the footprint kept
    half = [i for i in rep["issues"] if i["kind"] == "bad_value"]
    assert sorted(i["message"].split("'")[1] for i in half) == ["2.5", "2.5", "3.5", "3.5"]
    levels = attrs.map(lambda a: a.get("building:levels"))
    assert f["floors"][levels.isin(["2.5", "3.5"])].isna().sum() >= 4
    assert (f["floors"][levels == "6"] == 6).all()
    assert rep["counts"]["values_emptied"] == len(odd) + len(half)
    with pytest.raises(LoadError, match="rejected under --strict"):
        load_file("buildings", OSM / "helsinki_buildings.geojson", strict=True)


def test_osm_cameras_load_with_declared_and_given_defaults():
    """221 cameras tagged man_made=surveillance: 6 say camera:type=dome, none has a heading."""
    path = OSM / "helsinki_cameras.geojson"
    declared = load_file("cameras", path)
    assert declared.report["counts"]["loaded"] == 6  # domes see all round: heading 0, 30 m
    assert (declared.frame["fov_deg"] == 360).all() and (declared.frame["heading_deg"] == 0).all()
    assert (declared.frame["range_m"] == 30).all()
    missing = [i for i in declared.report["issues"] if i["kind"] == "missing_value"]
    assert len(missing) == 2 * 215 and "--set heading_deg=VALUE" in missing[0]["message"]
    given = load_file("cameras", path, defaults={"fov_deg": "90", "heading_deg": 0})
    f = given.frame
    assert len(f) == 221 and given.report["counts"]["rejected"] == 0
    assert sorted(f["fov_deg"].unique()) == [90, 360]  # the domes keep their map
    defaults = {i["message"].split(":")[0]: i["message"]
                for i in given.report["issues"] if i["kind"] == "default_applied"}
    assert "215 feature(s) had none; set to 90.0, the given (--set) default" in defaults["fov_deg"]
    assert "30.0, the declared default" in defaults["range_m"]
    # tag values mapped by the user: a revolving camera sees all round
    revolving = load_file("cameras", path, mapping={"fov_deg": "revolving"},
                          values={"fov_deg": {"YES": 360}})
    assert revolving.report["counts"]["loaded"] == 34


@pytest.mark.parametrize(
    ("defaults", "values", "message"),
    [
        ({"fov_deg": 400}, None, r"--set fov_deg=400: 400 does not fit fov_deg \(a number in "),
        ({"camera_id": "C1"}, None, r"'camera_id' is the id \(ids cannot have a default\)"),
        ({"colour": "red"}, None, r"'colour' is not one of its fields"),
        ({"status": "broken"}, None, r"does not fit status \(\['online', 'offline'"),
        (None, {"status": {"on": "up"}}, r"--values status:on=up: 'up' is not one of"),
        (None, {"colour": {"a": "b"}}, r"cameras has no field 'colour'"),
    ],
)
def test_defaults_and_value_maps_that_cannot_apply_are_refused_first(defaults, values, message):
    with pytest.raises(LoadError, match=message):
        load_file("cameras", OSM / "helsinki_cameras.geojson", defaults=defaults, values=values)


def test_osm_parking_rejects_the_stray_line_and_loads_the_rest():
    """43 car parks (areas and points) and one parking aisle tagged amenity=parking."""
    path = OSM / "helsinki_parking.geojson"
    result = load_file("parking", path, defaults={"kind": "surface", "total_spaces": 0},
                       values={"kind": {"inline": "on_street"}})
    rep = result.report
    rejected = [(i["row"], i["kind"]) for i in rep["issues"] if i["severity"] == "rejected"]
    assert (44, "wrong_geometry_type") in rejected  # the aisle, the file's last row
    assert _rejected_kinds(rep) == {"wrong_geometry_type", "degenerate_geometry"}
    assert rep["counts"]["rejected"] == 3 and rep["counts"]["read"] == 44
    assert set(result.frame.geom_type) == {"Polygon", "Point"}
    fees = result.frame["fee_per_hour"]
    assert (fees.dropna() == 0).all() and fees.isna().any()  # fee=no is free; fee=yes unknown


@pytest.mark.parametrize("fmt", ["gpkg", "geojson", "kml", "csv"])
def test_one_stray_line_among_100_lots_is_rejected_alone(tmp_path, fmt):
    geoms = [box(LON + i * D, LAT, LON + i * D + D / 2, LAT + D / 2) if i % 2
             else Point(LON + i * D, LAT) for i in range(99)]
    geoms.insert(57, LineString([(LON, LAT), (LON + D, LAT)]))
    lots = gpd.GeoDataFrame({"lot_id": [f"P{i}" for i in range(100)], "kind": ["surface"] * 100,
                             "total_spaces": [10] * 100}, geometry=geoms, crs=4326)
    path = tmp_path / f"lots.{fmt}"
    if fmt == "csv":
        pd.DataFrame(lots.drop(columns="geometry")).assign(wkt=lots.geometry.to_wkt()).to_csv(
            path, index=False)
    else:
        pyogrio.write_dataframe(lots, path, driver={"kml": "KML"}.get(fmt))
    result = load_file("parking", path)
    assert result.report["counts"]["loaded"] == 99 and result.report["counts"]["rejected"] == 1
    bad = issues(result.report, "wrong_geometry_type")
    assert [i["row"] for i in bad] == [58] and "this is a LineString" in bad[0]["message"]
    assert "P57" not in set(result.frame["lot_id"])


def test_a_closed_line_where_areas_are_wanted_becomes_their_polygon(tmp_path):
    ring = list(fx.footprint(1).exterior.coords)
    frame = gpd.GeoDataFrame({"building_code": ["B1", "B2", "B3"]},
                             geometry=[fx.footprint(0), LineString(ring),
                                       LineString(ring[:3])], crs=4326)
    result = load_file("buildings", write_geojson(tmp_path, frame))
    assert result.frame["building_code"].tolist() == ["B1", "B2"]
    got = result.frame.geometry[1]
    assert got.geom_type == "Polygon" and got.symmetric_difference(fx.footprint(1)).area < 1e-12
    assert issues(result.report, "ring_to_polygon")[0]["row"] == 2
    assert issues(result.report, "wrong_geometry_type")[0]["row"] == 3  # an open line stays out


def test_a_single_part_multipolygon_is_not_reported_as_split(tmp_path):
    frame = gpd.GeoDataFrame({"building_code": ["B1"]},
                             geometry=[shapely.MultiPolygon([fx.footprint(0)])], crs=4326)
    result = load_file("buildings", write_geojson(tmp_path, frame))
    assert result.frame.geom_type.tolist() == ["Polygon"]
    assert result.report["counts"]["repaired"] == 0 and not issues(result.report, "split_multipart")


# -- a --crs that cannot be right is refused unless forced ---------------------------------------


def _wgs84_gpkg(tmp_path):
    path = tmp_path / "楼栋.gpkg"
    pyogrio.write_dataframe(buildings_frame(code=["B1", "B2", "B3", "B4"]), path)
    return path


def _gk_csv(tmp_path, epsg=4546):
    pts = gpd.GeoSeries([Point(LON + i * D, LAT + i * D) for i in range(4)], crs=4326)
    pts = pts.to_crs(epsg)
    path = tmp_path / "gk.csv"
    pd.DataFrame({"camera_id": [f"C{i}" for i in range(4)], "x": pts.x.round(2),
                  "y": pts.y.round(2), "heading": 0, "fov": 60, "range": 30}).to_csv(
        path, index=False)
    return path


def _prj_shapefile(tmp_path, epsg=4546):
    path = tmp_path / "gk" / "楼栋.shp"
    path.parent.mkdir()
    pyogrio.write_dataframe(buildings_frame(code=["B1", "B2", "B3"]).to_crs(epsg), path)
    return path


CRS_CASES = [
    # (id, file maker, layer, --crs, the refusal; None: loads)
    ("4547-on-wgs84-gpkg", _wgs84_gpkg, "buildings", "4547",
     r"楼栋.gpkg says its CRS is EPSG:4326 \(degrees\) and its coordinates fit it .*"
     r"--crs 4547 \(EPSG:4547\) contradicts it"),
    ("4547-on-geojson-degrees", lambda t: write_geojson(t, buildings_frame(code=["B1", "B2"])),
     "buildings", "4547", r"--crs 4547 is in metres but the coordinates look like degrees"),
    ("other-zone-than-the-prj", _prj_shapefile, "buildings", "4549",
     r"says its CRS is EPSG:4546 \(metres\) and its coordinates fit it.*--crs 4549"),
    ("gcj02-in-helsinki", lambda t: OSM / "helsinki_cameras.geojson", "cameras", "gcj02",
     r"--crs gcj02 is a Chinese CRS but under it no feature lies in China"),
    ("cgcs2000-on-wgs84-gpkg", _wgs84_gpkg, "buildings", "cgcs2000", None),
    ("gcj02-on-wgs84-gpkg", _wgs84_gpkg, "buildings", "gcj02", None),
    ("the-prj's-own-zone", _prj_shapefile, "buildings", "4546", None),
    ("right-zone-for-a-csv", _gk_csv, "cameras", "4546", None),
]


@pytest.mark.parametrize(("maker", "layer", "crs", "refusal"), [c[1:] for c in CRS_CASES],
                         ids=[c[0] for c in CRS_CASES])
def test_a_crs_that_cannot_be_right_is_refused_unless_forced(tmp_path, maker, layer, crs,
                                                             refusal):
    path = maker(tmp_path)
    options = {"crs": crs, "defaults": {"fov_deg": 360}} if layer == "cameras" else {"crs": crs}
    if refusal is None:
        result = load_file(layer, path, **options)
        assert not issues(result.report, "crs_forced")
        return
    with pytest.raises(LoadError, match=refusal) as info:
        load_file(layer, path, **options)
    assert "add --force-crs to load the features where they land" in str(info.value)
    forced = load_file(layer, path, force_crs=True, **options)
    assert forced.report["counts"]["loaded"] > 0
    warned = issues(forced.report, "crs_forced")
    assert warned and all("Loaded anyway (--force-crs)" in i["message"] for i in warned)


def test_4547_on_a_wgs84_geopackage_forced_says_every_doubt(tmp_path):
    forced = load_file("buildings", _wgs84_gpkg(tmp_path), crs="4547", force_crs=True)
    said = " ".join(i["message"] for i in issues(forced.report, "crs_forced"))
    assert "contradicts it" in said and "look like degrees" in said
    assert "4 distinct positions of the file fall within 0.00 m" in said  # the collapse
    assert "no feature lies in China" in said
    b = shapely.bounds(forced.frame.geometry.values)
    assert np.ptp(b[:, 0]) < 1e-6  # where --crs 4547 puts them: one point off Borneo


def test_a_load_landing_far_from_the_community_is_refused_unless_forced(tmp_path):
    community = box(LON - D, LAT - D, LON + 5 * D, LAT + 5 * D)
    path = _gk_csv(tmp_path)  # CGCS2000 GK by central meridian 111°E (Guilin)
    assert load_file("cameras", path, crs="4546", area=community).report["counts"]["loaded"] == 4
    with pytest.raises(LoadError, match=r"every feature lies more than 2 km outside the "
                       r"community boundary \(the nearest 3\d\d.\d km\)"):
        load_file("cameras", path, crs="4547", area=community)  # the zone of 114°E
    forced = load_file("cameras", path, crs="4547", area=community, force_crs=True)
    assert len(issues(forced.report, "far_outside")) == 4 and issues(forced.report, "crs_forced")


@pytest.mark.parametrize(
    ("values", "defaults", "want_values", "want_defaults"),
    [
        (["use:apartments=residential", "use:yes=", "fov_deg: dome = 360"],
         ["fov_deg=360", "status = online"],
         {"use": {"apartments": "residential", "yes": ""}, "fov_deg": {"dome": "360"}},
         {"fov_deg": "360", "status": "online"}),
        ([], [], {}, {}),
    ],
)
def test_values_and_defaults_are_parsed_from_the_command_line_form(values, defaults, want_values,
                                                                  want_defaults):
    from twin.load import parse_defaults, parse_values

    assert parse_values(values) == want_values
    assert parse_defaults(defaults) == want_defaults


@pytest.mark.parametrize("item", ["use=residential", "use:apartments", ":a=b"])
def test_a_misspelt_values_item_says_how_to_write_it(item):
    from twin.load import parse_values

    with pytest.raises(LoadError, match=r"write it as FIELD:FROM=TO"):
        parse_values([item])


@pytest.mark.parametrize("item", ["fov_deg", "fov_deg=", "=360"])
def test_a_misspelt_set_item_says_how_to_write_it(item):
    from twin.load import parse_defaults

    with pytest.raises(LoadError, match=r"write it as FIELD=VALUE"):
        parse_defaults([item])


@pytest.mark.parametrize(
    ("layer", "column", "source", "given", "expected"),
    [
        ("facilities", "kind", "amenity", ["doctors", "Marketplace", "community_centre", "bench"],
         ["clinic", "market", "community_center", None]),
        ("facilities", "kind", "类型", ["幼儿园", "卫生服务站", "菜市场", "公园"],
         ["kindergarten", "clinic", "market", "park"]),
        ("parking", "kind", "parking", ["street_side", "underground", "地面", "路边"],
         ["on_street", "underground", "surface", "on_street"]),
        ("buildings", "use", "用途", ["住宅", "商住", "厂房", "yes"],
         ["residential", "mixed", "industrial", None]),
    ],
)
def test_declared_value_maps_translate_osm_tags_and_chinese_names(tmp_path, layer, column,
                                                                   source, given, expected):
    spec = layers.get_layer(layer)
    frame = gpd.GeoDataFrame(
        {spec.id_field: [f"X{i}" for i in range(4)], source: given, "total_spaces": 5},
        geometry=[Point(LON + i * D, LAT) if layer != "buildings" else fx.footprint(i)
                  for i in range(4)], crs=4326)
    result = load_file(layer, write_geojson(tmp_path, frame))
    got = result.frame.set_index(spec.id_field)[column].reindex([f"X{i}" for i in range(4)])
    want = [e for e in expected]
    if spec.column(column).required and None in expected:  # a required kind rejects its row
        assert result.report["counts"]["rejected"] == expected.count(None)
        want = [e for e in expected if e is not None]
        got = got.dropna()
    assert [None if pd.isna(v) else v for v in got] == want


# -- the GCJ-02 region at China's borders and in its seas (issue 18) -----------------------------


def test_gcj02_points_near_borders_and_in_the_seas_load_shifted_exactly_inside_china(store,
                                                                                    tmp_path):
    """A file of AMap (GCJ-02) points on both sides of China's borders, in its seas and at
    its islands, loaded into each store: the points in China come back at their true WGS84
    position (shifted 300-700 m), the neighbours' points exactly where the file put them."""
    from tests.test_crs import SHIFTED, UNSHIFTED, metres
    from twin.load import load_layer

    names = sorted(SHIFTED) + sorted(UNSHIFTED)
    truth = np.array([{**SHIFTED, **UNSHIFTED}[n] for n in names])
    inside = np.isin(names, list(SHIFTED))
    glon, glat = wgs84_to_gcj02(truth[:, 0], truth[:, 1])  # what AMap shows for them
    glon, glat = np.round(glon, 7), np.round(glat, 7)
    frame = fx._cameras(glon, glat)
    frame["name"] = names
    path = tmp_path / "amap_border_points.csv"
    frame.to_csv(path, index=False)

    result = load_layer(store, "cameras", path, actor="t", crs="gcj02")
    assert result.report["counts"]["loaded"] == len(names) and result.report["counts"][
        "rejected"] == 0
    assert result.report["crs"]["converted"] == "gcj02 → WGS84"
    kept = issues(result.report, "outside_china_not_shifted")
    assert len(kept) == 1 and kept[0]["message"].startswith(f"{int((~inside).sum())} feature(s)")
    stored = store.read_layer("cameras").set_index("name").loc[names]
    x, y = stored.geometry.x.to_numpy(), stored.geometry.y.to_numpy()
    # inside: back at the true position (the inverse is exact to 1e-9°; the CSV keeps 1e-7°)
    off = metres(x[inside], y[inside], truth[inside, 0], truth[inside, 1])
    assert off.max() < 0.05, dict(zip(np.array(names)[inside], off, strict=True))
    moved = metres(x[inside], y[inside], glon[inside], glat[inside])
    assert (moved > 200).all() and (moved < 800).all()
    # outside: untouched, to the centimetre (Seoul, Hanoi, Vladivostok, Sinuiju, Boten …)
    still = metres(x[~inside], y[~inside], glon[~inside], glat[~inside])
    assert still.max() < 0.01, dict(zip(np.array(names)[~inside], still, strict=True))


@pytest.mark.parametrize(
    "cells",
    [
        [box(0, 0, 1, 1), box(1, 0, 2, 1), box(0, 1, 2, 2)],  # edge to edge: a coverage
        [box(0, 0, 1.5, 1), box(1, 0, 2, 1), box(0, 1, 2, 2)],  # overlapping: not one
        [box(0, 0, 1, 1), box(1.5, 0, 2, 1)],  # apart: a multipolygon
    ],
)
def test_the_community_area_is_the_union_of_the_boundaries(store, cells):
    """Communities that tile take GEOS's coverage union; any others the general one: same area."""
    from twin.load import community_area

    frame = gpd.GeoDataFrame(
        {"community_code": [f"45031100{i:04d}" for i in range(len(cells))],
         "name": [f"c{i}" for i in range(len(cells))]},
        geometry=[shapely.affinity.translate(c, LON, LAT) for c in cells], crs=4326,
    )
    assert community_area(store) is None
    store.write_layer("community", frame, actor="t", source="test")
    got = community_area(store)
    want = shapely.union_all(frame.geometry.values)
    assert shapely.is_valid(got) and got.equals(want)
    assert shapely.equals_exact(shapely.normalize(got), shapely.normalize(want), 0)
