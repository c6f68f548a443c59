"""twin.load.load_file without a store: formats, encodings, mapping, types, ids, repairs, CRS."""

from __future__ import annotations

import json
import zipfile

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
        "split_parts_added": 1,
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


def test_values_that_do_not_convert_reject_their_row_or_under_strict_the_load(tmp_path):
    frame = buildings_frame(code=["B1", "B2", "B3"], floors=["6层", "六", "7"],
                            use=["Residential", "house", "commercial"])  # fmt: skip
    path = write_geojson(tmp_path, frame)
    result = load_file("buildings", path)
    assert result.frame["building_code"].tolist() == ["B1", "B3"]
    assert result.frame["floors"].tolist() == [6, 7]  # unit suffix stripped
    assert result.frame["use"].tolist() == ["residential", "commercial"]  # case normalised
    bad = issues(result.report, "bad_value") + issues(result.report, "bad_choice")
    assert [(i["row"], i["id"]) for i in bad] == [(2, "B2")]  # one reason per rejected row
    assert "floors: '六' is not a whole number" in bad[0]["message"]
    with pytest.raises(LoadError, match="rejected under --strict.*bad_value 1") as info:
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
    floors = [3] * 60
    floors[1] = "three"  # rejected: not a whole number
    frame = buildings_frame(building_code=[f"B{i}" for i in range(60)], floors=floors)
    frame.loc[3, "geometry"] = box(0, 0, 1, 1)  # far away: in no grid
    # the features are located before they are split and before rows are rejected: a row
    # rejected early shifts the rest, and a split feature's parts lie in two grids
    grids = assign_grids(frame, grid_cells)["grid_code"]
    first, other = 10, int(np.flatnonzero((grids != grids[10]) & grids.notna())[0])
    frame["geometry"] = frame.geometry.astype(object)
    frame.loc[5, "geometry"] = shapely.MultiPolygon([frame.geometry[first], frame.geometry[other]])
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


def test_ids_padded_with_any_whitespace_str_strip_knows_are_found():
    """The loader strips only the ids Arrow finds padded: it must find what str.strip strips."""
    from twin.load import _padded

    chars = [chr(i) for i in range(0x110000) if not 0xD800 <= i < 0xE000]
    texts = pd.Series([f"B{c}" for c in chars] + [f"{c}B" for c in chars] + [None, "", "B 1"],
                      dtype=object)
    expected = [t is not None and t != t.strip() for t in texts]
    assert _padded(texts).tolist() == expected
