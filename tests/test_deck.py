"""twin.deck: declared layers become offline pydeck layers with ids, coordinates, safe tooltips."""

from __future__ import annotations

import json
import math
import re

import geopandas as gpd
import numpy as np
import pydeck as pdk
import pytest
import shapely
from shapely.geometry import LineString, MultiPolygon, Point, Polygon, box

from tests.conftest import LAT, LON
from twin import deck, layers
from twin.crs import centred_equidistant_crs
from twin.errors import LayerNotFoundError, ValidationError

XSS = ["<script>alert(1)</script>", '<img src=x onerror="alert(1)">', "a & b's \"q\""]


def frame(**columns) -> gpd.GeoDataFrame:
    geometry = columns.pop("geometry")
    return gpd.GeoDataFrame(columns, geometry=geometry, crs=4326)


def layer_json(layer: pdk.Layer) -> dict:
    return json.loads(layer.to_json())


SQUARE = box(LON, LAT, LON + 0.001, LAT + 0.001)
HOLED = Polygon(
    [(LON, LAT), (LON + 0.002, LAT), (LON + 0.002, LAT + 0.002), (LON, LAT + 0.002)],
    [[(LON + 0.0005, LAT + 0.0005), (LON + 0.001, LAT + 0.0005), (LON + 0.001, LAT + 0.001)]],
)
ROAD = LineString([(LON, LAT), (LON + 0.001, LAT + 0.0005), (LON + 0.002, LAT)])

CASES = [
    # layer, geometry, expected deck layer type, expected coordinates of the first feature
    ("buildings", SQUARE, "PolygonLayer",
     [[list(c) for c in SQUARE.exterior.coords]]),
    ("grid_cells", HOLED, "PolygonLayer",
     [[list(c) for c in HOLED.exterior.coords], [list(c) for c in HOLED.interiors[0].coords]]),
    ("community", SQUARE, "PolygonLayer",
     [[list(c) for c in SQUARE.exterior.coords]]),
    ("roads", ROAD, "PathLayer", [list(c) for c in ROAD.coords]),
    ("sensors", Point(LON, LAT), "ScatterplotLayer", [LON, LAT]),
    ("facilities", Point(LON + 0.0001, LAT), "ScatterplotLayer", [LON + 0.0001, LAT]),
]


def one_feature(name: str, geometry) -> gpd.GeoDataFrame:
    spec = layers.get_layer(name)
    return frame(**{spec.id_field: ["F1"], "name": ["一号"], "geometry": [geometry]})


def coords_of(data: dict, kind: str):
    if kind == "PolygonLayer":
        return data["polygon"]
    if kind == "PathLayer":
        return data["path"]
    return [data["lon"], data["lat"]]


@pytest.mark.parametrize(("name", "geometry", "kind", "coords"), CASES)
def test_each_geometry_type_becomes_its_deck_layer(name, geometry, kind, coords):
    spec = layers.get_layer(name)
    (layer,) = deck.spec_layers(spec, one_feature(name, geometry), "zh-CN")
    got = layer_json(layer)
    assert got["@@type"] == kind
    assert got["id"] == name
    assert got["pickable"] is True
    (row,) = got["data"]
    got_coords = coords_of(row, kind)
    if kind == "PolygonLayer":  # rings of different lengths: compare ring by ring
        assert len(got_coords) == len(coords)
        for ring_got, ring_want in zip(got_coords, coords, strict=True):
            np.testing.assert_allclose(ring_got, ring_want, atol=1e-7)
    else:
        np.testing.assert_allclose(got_coords, coords, atol=1e-7)
    assert row["id"] == "F1"
    assert row["tooltip"].startswith(spec.title("zh-CN"))
    # only what the layer draws travels to the browser
    assert set(row) <= {"id", "tooltip", "polygon", "path", "lon", "lat", "elevation", "width"}


def test_point_layer_reads_its_position_from_lon_lat():
    spec = layers.get_layer("sensors")
    (layer,) = deck.spec_layers(spec, one_feature("sensors", Point(LON, LAT)))
    got = layer_json(layer)
    assert got["getPosition"] == "@@=[lon, lat]"
    assert got["getRadius"] == spec.style.radius_m
    assert got["radiusUnits"] == "meters"
    assert got["getFillColor"] == list(spec.style.fill)


def test_style_drives_colours_extrusion_and_widths(buildings):
    spec = layers.get_layer("buildings")
    (layer,) = deck.spec_layers(spec, buildings)
    got = layer_json(layer)
    assert got["extruded"] is True
    assert [r["elevation"] for r in got["data"]] == [18.0, 33.0, 54.0]
    assert got["getFillColor"] == list(spec.style.fill)
    assert got["getLineColor"] == list(spec.style.line)
    community = layer_json(deck.spec_layers(layers.get_layer("community"),
                                            one_feature("community", SQUARE))[0])
    assert community["filled"] is False  # a transparent fill: the boundary is an outline
    assert community["getLineWidth"] == layers.get_layer("community").style.line_width_m


def test_mixed_geometry_layers_get_one_deck_layer_per_kind():
    spec = layers.get_layer("parking")
    lots = frame(lot_id=["P1", "P2"], kind=["surface", "on_street"], total_spaces=[40, 8],
                 geometry=[SQUARE, Point(LON, LAT)])
    got = [layer_json(lyr) for lyr in deck.spec_layers(spec, lots)]
    assert [(g["id"], g["@@type"]) for g in got] == [
        ("parking", "PolygonLayer"), ("parking-point", "ScatterplotLayer")]
    assert [deck.layer_name(g["id"]) for g in got] == ["parking", "parking"]
    assert [g["data"][0]["id"] for g in got] == ["P1", "P2"]


def test_multipolygons_are_drawn_part_by_part():
    spec = layers.get_layer("buildings")
    two = MultiPolygon([SQUARE, box(LON + 0.002, LAT, LON + 0.003, LAT + 0.001)])
    (layer,) = deck.spec_layers(spec, frame(building_code=["B"], geometry=[two]))
    data = layer_json(layer)["data"]
    assert [r["id"] for r in data] == ["B", "B"]


@pytest.mark.parametrize("payload", XSS)
def test_tooltips_carry_outside_values_as_text_never_html(payload):
    spec = layers.get_layer("buildings")
    b = frame(building_code=["B1"], name=[payload], floors=[6], geometry=[SQUARE])
    (layer,) = deck.spec_layers(spec, b, "en")
    tooltip = layer_json(layer)["data"][0]["tooltip"]
    # the value arrives verbatim as one line of plain text ...
    assert tooltip.split("\n") == ["Buildings", f"Name: {payload}", "Building code: B1",
                                   "Floors (层): 6"]
    d = deck.make_deck({"buildings": b}, ["buildings"], "en")
    # ... and the deck shows tooltips in text mode: deck.gl sets innerText, the browser parses
    # no HTML (Streamlit would escape an {html} template's values, garbling any markup we add)
    assert set(d._tooltip) == {"text", "style"}
    assert d._tooltip["text"] == "{tooltip}"


@pytest.mark.parametrize(("lang", "lines"), [
    ("zh-CN", ["楼栋", "名称: 1栋", "楼栋编码: B1", "用途: residential", "层数 (层): 6",
               "户数 (户): 24"]),
    ("en", ["Buildings", "Name: 1栋", "Building code: B1", "Use: residential", "Floors (层): 6",
            "Households (户): 24"]),
])
def test_tooltip_lines_follow_the_spec_in_both_languages(buildings, lang, lines):
    text = deck.tooltip_text(layers.get_layer("buildings"), buildings, lang)
    assert text.iloc[0].split("\n") == lines  # residents_count is empty: left out


def test_tooltip_numbers_are_short():
    spec = layers.get_layer("sensors")
    s = frame(sensor_id=["S1"], kind=["air"], battery_level=[0.8567], geometry=[Point(LON, LAT)])
    assert deck.tooltip_text(spec, s, "en").iloc[0].endswith("Battery (0–1): 0.86")


# -- camera cones --------------------------------------------------------------------------


def test_camera_cone_points_east_and_has_the_sector_area():
    cams = frame(camera_id=["C1"], heading_deg=[90.0], fov_deg=[60.0], range_m=[50.0],
                 geometry=[Point(LON, LAT)])
    cones = deck.camera_cones(cams)
    metric = centred_equidistant_crs(cams)
    cone = cones.to_crs(metric).geometry.iloc[0]
    cam = cams.to_crs(metric).geometry.iloc[0]
    assert cone.is_valid
    want = math.pi * 50**2 * 60 / 360
    assert cone.area == pytest.approx(want, rel=0.02)
    minx, miny, maxx, maxy = cone.bounds
    assert minx == pytest.approx(cam.x, abs=0.01)  # the apex is the westernmost point
    assert maxx == pytest.approx(cam.x + 50, abs=0.01)  # reaches 50 m due east
    assert (maxy - cam.y) == pytest.approx(25, abs=0.1)  # ±30° of east: ±25 m north/south
    assert (cam.y - miny) == pytest.approx(25, abs=0.1)
    assert cone.centroid.x > cam.x + 20


@pytest.mark.parametrize(("heading", "direction"), [
    (0, (0, 1)), (90, (1, 0)), (180, (0, -1)), (270, (-1, 0)), (45, (1, 1))])
def test_camera_cone_heading_is_clockwise_from_north(heading, direction):
    cams = frame(camera_id=["C"], heading_deg=[float(heading)], fov_deg=[30.0], range_m=[40.0],
                 geometry=[Point(LON, LAT)])
    metric = centred_equidistant_crs(cams)
    c = deck.camera_cones(cams).to_crs(metric).geometry.iloc[0].centroid
    o = cams.to_crs(metric).geometry.iloc[0]
    v = np.array([c.x - o.x, c.y - o.y])
    d = np.array(direction, dtype=float)
    assert np.dot(v, d) / np.linalg.norm(v) / np.linalg.norm(d) > 0.999


def test_camera_cones_are_built_for_many_cameras_at_once():
    n = 500
    rng = np.random.default_rng(1)
    cams = frame(camera_id=[f"C{i}" for i in range(n)], heading_deg=rng.uniform(0, 360, n),
                 fov_deg=rng.uniform(10, 120, n), range_m=rng.uniform(5, 100, n),
                 geometry=shapely.points(LON + rng.uniform(0, 0.01, n),
                                         LAT + rng.uniform(0, 0.01, n)))
    cones = deck.camera_cones(cams)
    assert len(cones) == n and cones.crs.equals("EPSG:4326")
    area = cones.to_crs(centred_equidistant_crs(cams)).area.to_numpy()
    want = np.pi * cams.range_m.to_numpy() ** 2 * cams.fov_deg.to_numpy() / 360
    np.testing.assert_allclose(area, want, rtol=0.02)


def test_cameras_without_view_data_get_no_cone_and_missing_columns_are_named():
    cams = frame(camera_id=["C1", "C2"], heading_deg=[90.0, None], fov_deg=[60.0, 60.0],
                 range_m=[50.0, 50.0], geometry=[Point(LON, LAT), Point(LON, LAT + 0.001)])
    assert list(deck.camera_cones(cams).camera_id) == ["C1"]
    with pytest.raises(ValidationError, match="range_m"):
        deck.camera_cones(cams.drop(columns="range_m"))


def test_cameras_draw_a_translucent_cone_layer_under_the_points(cameras):
    got = [layer_json(lyr) for lyr in deck.spec_layers(layers.get_layer("cameras"), cameras)]
    assert [g["id"] for g in got] == ["cameras-cones", "cameras"]
    cone = got[0]
    assert cone["pickable"] is False
    assert cone["getFillColor"][3] < 128
    assert set(cone["data"][0]) == {"polygon"}


# -- the deck ------------------------------------------------------------------------------


@pytest.fixture
def twin_layers(grid_cells, buildings, cameras):
    community = frame(community_code=["450311001001"], name=["桂花社区"],
                      geometry=[box(LON - 0.0005, LAT - 0.0005, LON + 0.0025, LAT + 0.0015)])
    roads = frame(road_id=["R1"], name=["桂花路"], kind=["internal"], width_m=[7.0],
                  geometry=[ROAD])
    return {"community": community, "grid_cells": grid_cells, "buildings": buildings,
            "cameras": cameras, "roads": roads}


def test_deck_is_offline_with_nothing_to_fetch(twin_layers):
    d = deck.make_deck(twin_layers, list(twin_layers), "zh-CN")
    assert d.map_provider is None
    text = d.to_json()
    assert not re.search(r"https?://|//[a-z0-9.-]+\.[a-z]{2,}|mapbox:|cartocdn", text, re.I)
    # Streamlit reads this sentinel as "no basemap"; an empty map_style would inject CARTO's
    assert json.loads(text)["mapStyle"] == "__MAP_STYLE__"


def test_deck_draws_visible_layers_in_declared_order_over_the_land(twin_layers):
    d = deck.make_deck(twin_layers, ["buildings", "roads", "community", "cameras"], "en")
    ids = [lyr["id"] for lyr in json.loads(d.to_json())["layers"]]
    assert ids == ["basemap-land", "community", "roads", "buildings", "cameras-cones", "cameras"]
    hidden = deck.make_deck(twin_layers, ["buildings"], "en")
    assert [lyr["id"] for lyr in json.loads(hidden.to_json())["layers"]] == [
        "basemap-land", "buildings"]


def test_initial_view_fits_the_community_boundary(twin_layers):
    d = deck.make_deck(twin_layers, ["buildings"], "zh-CN")
    view = json.loads(d.to_json())["initialViewState"]
    minx, miny, maxx, maxy = twin_layers["community"].total_bounds
    assert view["longitude"] == pytest.approx((minx + maxx) / 2, abs=1e-6)
    assert view["latitude"] == pytest.approx((miny + maxy) / 2, abs=1e-5)
    # the 300 m wide boundary fills the map's width at that zoom: 512·2^z px per 360°
    px = (maxx - minx) / 360 * 512 * 2 ** view["zoom"]
    assert deck.MAP_WIDTH * 0.8 <= px <= deck.MAP_WIDTH
    assert view["pitch"] == 0


def test_fit_view_without_data_opens_on_the_default_city():
    view = deck.fit_view(None)
    assert (view.longitude, view.latitude) == (110.29, 25.28)


def test_unknown_layer_is_named(twin_layers):
    with pytest.raises(LayerNotFoundError, match="no_such_layer"):
        deck.make_deck(twin_layers, ["no_such_layer"], "en")


def test_empty_and_attribute_only_layers_draw_nothing(buildings):
    spec = layers.get_layer("buildings")
    assert deck.spec_layers(spec, buildings.iloc[:0]) == []
    assert deck.spec_layers(layers.get_layer("residents"), buildings) == []


# -- what the page shows beside the map ----------------------------------------------------


@pytest.mark.parametrize(("event", "want"), [
    (None, None),
    ({"selection": {"indices": {}, "objects": {}}}, None),
    ({"selection": {"indices": {"buildings": [1]},
                    "objects": {"buildings": [{"id": "B2", "tooltip": "x"}]}}},
     ("buildings", "B2")),
    ({"selection": {"indices": {"parking-point": [0]},
                    "objects": {"parking-point": [{"id": "P9"}]}}}, ("parking", "P9")),
    ({"selection": {"indices": {"cameras-cones": [0]},
                    "objects": {"cameras-cones": [{"polygon": []}]}}}, None),
])
def test_selected_feature_reads_the_streamlit_event(event, want):
    assert deck.selected_feature(event) == want


def test_feature_table_labels_from_the_spec_and_hides_personal_data(grid_cells):
    spec = layers.get_layer("grid_cells")
    cells = grid_cells.assign(grid_worker=["张三", "李四"],
                              grid_worker_phone=["13812345678", "13987654321"])
    table = deck.feature_table(spec, cells, "45031100100102", "zh-CN")
    rows = dict(zip(table.label, table.value, strict=True))
    assert rows["网格编码"] == "45031100100102"
    assert rows["网格员"] == "李四"
    assert "网格员电话" not in rows and "13987654321" not in rows.values()
    assert deck.feature_table(spec, cells, "nope", "en").empty


def test_legend_and_counts(twin_layers):
    entries = deck.legend(["cameras", "roads", "community"], "en")
    assert [(e.name, e.title) for e in entries] == [
        ("community", "Community boundary"), ("roads", "Roads"), ("cameras", "Cameras")]
    assert entries[-1].hex == "#ffc800"
    assert entries[0].color == layers.get_layer("community").style.line  # outline only
    assert deck.map_counts(twin_layers) == {
        "buildings": 3, "households": 198, "cameras": 1, "sensors": 0, "grid_cells": 2}


def test_offline_deck_keeps_the_no_basemap_sentinel():
    layer = pdk.Layer("ScatterplotLayer", [{"p": [LON, LAT]}], get_position="p")
    text = deck.offline_deck([layer], deck.fit_view(None), height=300).to_json()
    assert json.loads(text)["mapStyle"] == "__MAP_STYLE__" and "mapProvider" not in text


# -- inert data: deck.gl's JSON converter never reads a value as an expression ----------------

#: What @deck.gl/json reads as code, a constant, an enumeration, a class or a function call.
HOSTILE = ["@@=f()", "@@=[lon, lat]", "@@=-", "@@#GL.ONE", "@@#MapController", "@@#nope.nope",
           "@@type", "@@function", "@@", "@@=", deck.INERT_MARK + "@@=f()", deck.INERT_MARK]
HARMLESS = ["B-1", "一号楼", "a@@=b", " @@=f()", "@", "", "=f()", "#GL.ONE"]


def converter_hits(value, where: str = "") -> list[str]:
    """Places in *value* that @deck.gl/json would convert (strings, and keys of objects)."""
    if isinstance(value, str):
        return [where] if value.startswith(("@@=", "@@#")) else []
    if isinstance(value, dict):
        keys = [f"{where}.{k}" for k in value if k in ("@@type", "@@function")]
        return keys + [h for k, v in value.items() for h in converter_hits(v, f"{where}.{k}")]
    if isinstance(value, list):
        return [h for i, v in enumerate(value) for h in converter_hits(v, f"{where}[{i}]")]
    return []


def data_hits(deck_json: str) -> list[str]:
    """Converter hits in the data of every layer of a deck's JSON (props are pydeck's own)."""
    layers_json = json.loads(deck_json)["layers"]
    return [h for i, layer in enumerate(layers_json)
            for h in converter_hits(layer.get("data"), f"layers[{i}].data")]


@pytest.mark.parametrize("text", HOSTILE + HARMLESS)
def test_inert_value_marks_exactly_the_converter_prefixes_and_round_trips(text):
    marked = deck.inert_value(text)
    assert not marked.startswith("@@")
    assert marked == (deck.INERT_MARK + text if text in HOSTILE else text)
    assert deck.plain_value(marked) == text
    assert deck.inert_strings([text, None, 3]) == [marked, None, 3]


def test_every_converter_prefix_is_covered():
    assert all(p.startswith(deck.CONVERTER_PREFIX) for p in deck.CONVERTER_PREFIXES)
    assert all(deck.inert_value(p + "x") != p + "x" for p in deck.CONVERTER_PREFIXES)


def test_records_make_every_string_and_key_inert_and_keep_the_rest():
    import pandas as pd

    frame = pd.DataFrame({
        "id": ["@@=f()", "B-1", None], "n": [1, 2, 3], "xy": [[1.5, 2.5]] * 3,
        "mixed": ["@@type", 1, [1]], "cat": pd.Categorical(["@@#GL.ONE", "b", "b"]),
        "s": pd.array(["@@function", "a", None], dtype="string"), "@@type": ["X"] * 3})
    rows = deck.records(frame)
    assert converter_hits(rows) == []
    assert [r["id"] for r in rows] == [deck.INERT_MARK + "@@=f()", "B-1", None]
    assert rows[0]["xy"] == [1.5, 2.5] and rows[1]["n"] == 2 and rows[2]["mixed"] == [1]
    assert rows[0][deck.INERT_MARK + "@@type"] == "X"


def test_spec_layers_and_tooltips_carry_hostile_ids_as_text(buildings):
    spec = layers.get_layer("buildings")
    hostile = buildings.assign(building_code=HOSTILE[: len(buildings)],
                               name=HOSTILE[-len(buildings):])
    made = deck.spec_layers(spec, hostile, "en")
    text = deck.offline_deck(made, deck.fit_view(None)).to_json()
    assert data_hits(text) == []
    ids = [deck.plain_value(r["id"]) for layer in made for r in layer.data]
    assert ids == list(hostile["building_code"])
    # props stay pydeck expressions: only data is marked
    assert json.loads(text)["layers"][0]["getPolygon"] == "@@=polygon"


def test_offline_deck_makes_the_data_of_plain_pydeck_layers_inert_once():
    geojson = {"type": "FeatureCollection", "features": [{
        "type": "Feature", "properties": {"name": "@@#X.Y", "@@type": "ScatterplotLayer"},
        "geometry": {"type": "Point", "coordinates": [LON, LAT]}}]}
    plain = pdk.Layer("GeoJsonLayer", geojson, id="g")
    rows = pdk.Layer("ScatterplotLayer", [{"id": "@@=f()", "p": [LON, LAT]}], id="s",
                     get_position="p")
    first = deck.offline_deck([plain, rows], deck.fit_view(None)).to_json()
    again = deck.offline_deck([plain, rows], deck.fit_view(None)).to_json()
    assert data_hits(first) == [] and first == again  # a layer drawn twice is marked once
    assert json.loads(first)["layers"][1]["data"][0]["id"] == deck.INERT_MARK + "@@=f()"


@pytest.mark.parametrize("text", HOSTILE)
def test_selected_feature_gives_back_the_stored_id(text):
    event = {"selection": {"objects": {"buildings": [{"id": deck.inert_value(text)}]}}}
    assert deck.selected_feature(event) == ("buildings", text)


def test_the_thematic_map_of_a_store_with_hostile_values_is_inert(store):
    """Ids, names, case texts and sensor ids typed as expressions, through the whole cockpit."""
    import pandas as pd

    from tests.browser import small_twin_layers
    from twin import cockpit
    from twin.twin import put_layer

    twin_layers = small_twin_layers()
    buildings = twin_layers["buildings"]
    twin_layers["buildings"] = buildings.assign(
        building_code=["@@=f()", "@@#GL.ONE", "B-`x`", "@@type", "@@function"],
        name=["@@=[lon, lat]"] * len(buildings))
    twin_layers["sensors"] = twin_layers["sensors"].assign(sensor_id=["@@=s()", "S2", "@@#s"])
    for name, frame_ in twin_layers.items():
        put_layer(store, name, frame_, actor="tests", source="test_deck")
    now = pd.Timestamp.now(tz="UTC")
    store.create_case({
        "id": "@@=case()", "status": "dispatched", "service_code": "@@#E.X", "family": "event",
        "source": "patrol", "description": "@@=desc()", "lon": LON + 0.001, "lat": LAT + 0.001,
        "grid_code": "45031100100101", "requested_at": now, "updated_at": now,
        "deadline_at": now + pd.Timedelta(hours=2), "data": json.dumps({})})
    data = cockpit.cockpit_data(store, at=now)
    states = {s: s for s in ("open", "warning", "overdue", "closed", "ok", "alarm", "offline")}
    chart = deck.thematic_deck(data, deck.THEMATIC, {}, "en", status_names=states,
                               state_names=states)
    text = chart.to_json()
    assert data_hits(text) == []
    ids = {deck.plain_value(r.get("id")) for layer in chart.layers
           for r in (layer.data or []) if isinstance(r, dict)}
    assert {"@@=f()", "@@#GL.ONE", "@@type", "@@=s()", "@@=case()"} <= ids


def test_a_rerun_of_the_thematic_map_reuses_what_its_layer_frames_gave_and_stays_inert(store):
    """Cameras (and land, roads) are drawn once per layer frame and their JSON encoded once;
    polygons of the same geometries are reused: the second map is the same text, still inert."""
    import pandas as pd

    from tests.browser import small_twin_layers
    from twin import cockpit, layercache
    from twin.twin import put_layer

    twin_layers = small_twin_layers()
    twin_layers["cameras"] = twin_layers["cameras"].assign(camera_id=["@@=c()", "@@#C.2"],
                                                           name=["@@type", "@@function"])
    twin_layers["buildings"] = twin_layers["buildings"].assign(
        building_code=["@@=f()", "B-1", "B-2", "B-3", "B-X"])
    for name, frame_ in twin_layers.items():
        put_layer(store, name, frame_, actor="tests", source="test_deck")
    layers_now = layercache.layers(store)
    at = pd.Timestamp.now(tz="UTC")
    charts = [deck.thematic_deck(cockpit.cockpit_data(store, at=at, layers=layers_now),
                                 deck.THEMATIC, {}, "en") for _ in range(2)]
    texts = [chart.to_json() for chart in charts]
    first, second = ({layer.id: layer for layer in chart.layers} for chart in charts)
    assert second["cameras"] is first["cameras"]  # drawn once for the frame
    assert second["cameras-cones"] is first["cameras-cones"]
    assert second["buildings"] is not first["buildings"]  # its counts are drawn anew
    assert second["buildings"].data[0]["polygon"] is first["buildings"].data[0]["polygon"]
    for chart, text in zip(charts, texts, strict=True):
        assert text == json.dumps(chart, sort_keys=True, default=deck.default_serialize,
                                  separators=(",", ":"))  # encoded in parts, the same text
        assert data_hits(text) == []
    assert texts[0] == texts[1]
    ids = {deck.plain_value(r["id"]) for r in second["cameras"].data}
    assert ids == {"@@=c()", "@@#C.2"}


def test_rings_of_the_same_geometries_are_computed_once_and_equal_polygon_rings():
    values = np.array([SQUARE, HOLED], dtype=object)
    first = deck._rings_of(values, deck.SIMPLIFY_M, "wgs84")
    assert first == deck.polygon_rings(values, simplify_m=deck.SIMPLIFY_M)
    assert deck._rings_of(values.copy(), deck.SIMPLIFY_M, "wgs84") is first  # same objects
    assert deck._rings_of(values, deck.SIMPLIFY_M, "gcj02") != first
    other = np.array([box(LON, LAT, LON + 0.001, LAT + 0.001), HOLED], dtype=object)
    assert deck._rings_of(other, deck.SIMPLIFY_M, "wgs84") is not first  # equal, not the same


@pytest.mark.parametrize(("values", "dtype", "want"), [
    ([18.0, 0.857, 2.675, -3.0, 0.0], "float64", ["18", "0.86", "2.68", "-3", "0"]),
    ([18, None, -4], "Int64", ["18", None, "-4"]),
    ([1e16, 123456789012.345, float("nan")], "float64", ["1e+16", "123456789012.34", None]),
    ([0.5, None], "Float64", ["0.5", None]),
    ([7], "uint8", ["7"]),
])
def test_tooltip_numbers_read_as_astype_string_gives_them(values, dtype, want):
    import pandas as pd

    series = pd.Series(values, dtype=dtype)
    got = deck._as_text(series)
    assert [None if v is pd.NA else v for v in got.tolist()] == want
    rounded = pd.to_numeric(series).astype("Float64").round(2)  # the pandas way, 10× slower
    slow = rounded.astype("string").str.replace(r"\.0$", "", regex=True)
    assert got.fillna("-").tolist() == slow.where(series.notna(), pd.NA).fillna("-").tolist()


def test_tooltip_text_of_object_columns_reads_as_astype_string_gives_it():
    import pandas as pd

    values = pd.Series(["a", None, "", "x\ny", "@@=f()", float("nan"), pd.NA, 1.5, 3, True,
                        {"a": 1}, [1, 2], pd.Timestamp("2026-01-01", tz="UTC")], dtype=object)
    slow = values.astype("string")
    slow = slow.where(values.notna() & (slow != ""), pd.NA)
    assert deck._as_text(values).fillna("-").tolist() == slow.fillna("-").tolist()


def test_tooltips_of_the_same_rows_in_another_order_follow_their_rows():
    spec = layers.get_layer("sensors")
    s = frame(sensor_id=["S1", "S2"], kind=["air", "smoke"], battery_level=[0.8, 0.1],
              geometry=[Point(LON, LAT), Point(LON, LAT + 0.001)])
    first = deck.tooltip_text(spec, s, "en").tolist()
    again = deck.tooltip_text(spec, s.iloc[::-1], "en").tolist()  # a cached text must not
    assert again == first[::-1] and "S2" in again[0]                # come back in the old order


def test_the_picked_grid_or_building_is_outlined_on_top_and_nothing_else_is(store):
    import pandas as pd

    from tests.browser import small_twin_layers
    from twin import cockpit
    from twin.twin import put_layer

    for name, frame_ in small_twin_layers().items():
        put_layer(store, name, frame_, actor="tests", source="test_deck")
    data = cockpit.cockpit_data(store, at=pd.Timestamp.now(tz="UTC"))
    grid = data.grids.iloc[1]
    building = data.buildings.iloc[2]

    def outlined(selected, visible=deck.THEMATIC):
        chart = deck.thematic_deck(data, visible, {}, "en", selected=selected)
        found = [layer for layer in chart.layers if layer.id == deck.SELECTED_ID]
        assert chart.layers[-1] in found or not found  # drawn last: on top of everything
        return found[0] if found else None

    layer = outlined(("grid_cells", str(grid["grid_code"])))
    assert layer.pickable is False and layer.filled is False
    assert layer.get_line_color == list(deck.SELECTED_COLOR)
    assert layer.data[0]["polygon"] == deck.polygon_rings(
        [grid.geometry], simplify_m=deck.SIMPLIFY_M)[0]  # exactly the grid drawn below it
    layer = outlined(("buildings", str(building["building_code"])))
    assert layer.data[0]["polygon"] == deck.polygon_rings(
        [building.geometry], simplify_m=deck.SIMPLIFY_M)[0]
    assert outlined(("buildings", str(building["building_code"])), visible=["grid_cells"]) \
        is None  # a layer not shown has nothing outlined
    assert outlined(("grid_cells", "no-such-grid")) is None
    assert outlined(("sensors", "S2")) is None
    assert outlined(None) is None
