"""Known answers for twin.crs: GCJ-02/BD-09, the China outline, GK zones, swapped axes."""

from __future__ import annotations

import numpy as np
import pyproj
import pytest

from twin import crs
from twin.errors import ConfigError

INSIDE = {
    "Guilin": (110.29, 25.08),
    "Beijing": (116.40, 39.90),
    "Shanghai": (121.47, 31.23),
    "Urumqi": (87.60, 43.80),
    "Lhasa": (91.10, 29.65),
    "Harbin": (126.60, 45.75),
    "Kunming": (102.70, 25.00),
    "Haikou": (110.30, 20.00),
    "Sanya": (109.50, 18.25),
    "Xiamen": (118.10, 24.50),
    "Shenzhen": (114.06, 22.54),
    "Mohe": (122.50, 52.97),
    "Kashgar": (75.99, 39.47),
    "Manzhouli": (117.45, 49.60),
    "Qingdao": (120.38, 36.07),
    "Dandong": (124.35, 40.00),
    "Hunchun": (130.37, 42.87),
    "Ruili": (97.85, 24.00),
    "Fuyuan": (134.28, 48.36),
    "Suifenhe": (131.15, 44.40),
    "Erenhot": (111.97, 43.65),
}
OUTSIDE = {
    "Tokyo": (139.69, 35.69),
    "Sydney": (151.21, -33.87),
    "Seoul": (126.98, 37.57),
    "Pyongyang": (125.75, 39.03),
    "Hanoi": (105.85, 21.03),
    "Haiphong": (106.70, 20.85),
    "Ulaanbaatar": (106.90, 47.90),
    "Taipei": (121.50, 25.03),
    "Kaohsiung": (120.30, 22.60),
    "Kathmandu": (85.30, 27.70),
    "Thimphu": (89.64, 27.47),
    "Vladivostok": (131.90, 43.10),
    "Khabarovsk": (135.07, 48.48),
    "Almaty": (76.90, 43.25),
    "Delhi": (77.20, 28.60),
    "Busan": (129.07, 35.18),
    "Vientiane": (102.60, 17.97),
}


def metres(lon1, lat1, lon2, lat2) -> np.ndarray:
    _, _, d = pyproj.Geod(ellps="WGS84").inv(lon1, lat1, lon2, lat2)
    return np.asarray(d)


def test_the_outline_is_a_valid_coarse_polygon():
    assert crs.CHINA_OUTLINE.is_valid
    assert 30 <= len(crs.CHINA_OUTLINE_LONLAT) <= 100


@pytest.mark.parametrize("name", sorted(INSIDE))
def test_cities_in_china_are_inside_the_outline(name):
    assert crs.in_china(*map(np.atleast_1d, INSIDE[name]))[0]


@pytest.mark.parametrize("name", sorted(OUTSIDE))
def test_neighbouring_cities_are_outside_the_outline(name):
    assert not crs.in_china(*map(np.atleast_1d, OUTSIDE[name]))[0]


def test_gcj02_round_trip_is_below_a_micro_degree_across_china():
    rng = np.random.default_rng(7)
    lon = rng.uniform(98, 123, 5000)
    lat = rng.uniform(22, 42, 5000)
    keep = crs.in_china(lon, lat)
    lon, lat = lon[keep], lat[keep]
    glon, glat = crs.wgs84_to_gcj02(lon, lat)
    moved = metres(lon, lat, glon, glat)
    assert np.median(moved) > 300 and moved.min() > 1  # the forward model really moves them
    back_lon, back_lat = crs.gcj02_to_wgs84(glon, glat)
    assert np.abs(back_lon - lon).max() < 1e-6
    assert np.abs(back_lat - lat).max() < 1e-6


def test_bd09_round_trip_is_below_a_micro_degree():
    lon, lat = np.array([110.29, 116.40, 121.47]), np.array([25.08, 39.90, 31.23])
    glon, glat = crs.wgs84_to_gcj02(lon, lat)
    blon, blat = crs.gcj02_to_bd09(glon, glat)
    back_lon, back_lat = crs.bd09_to_wgs84(blon, blat)
    assert np.abs(back_lon - lon).max() < 1e-6
    assert np.abs(back_lat - lat).max() < 1e-6
    # BD-09 sits a further ~0.0065° east and ~0.006° north of GCJ-02
    assert 0.005 < (blon - glon).min() and 0.004 < (blat - glat).min()


def test_guilin_gcj02_point_moves_a_few_hundred_metres_west_to_wgs84():
    # The published offset of the formula at Guilin: GCJ-02 lies east and slightly south of WGS84.
    lon, lat = crs.gcj02_to_wgs84([110.29], [25.08])
    d = metres(110.29, 25.08, lon[0], lat[0])
    assert 300 < d < 800
    assert 0.004 < 110.29 - lon[0] < 0.0075  # moved west
    assert abs(lat[0] - 25.08) < 0.004


@pytest.mark.parametrize("name", ["Tokyo", "Sydney", "Seoul", "Taipei", "Hanoi"])
@pytest.mark.parametrize(
    "convert", [crs.gcj02_to_wgs84, crs.wgs84_to_gcj02, crs.bd09_to_wgs84, crs.bd09_to_gcj02]
)
def test_points_outside_china_are_never_shifted(name, convert):
    lon, lat = OUTSIDE[name]
    got = convert([lon], [lat])
    assert (got[0][0], got[1][0]) == (lon, lat)


def test_conversions_do_not_modify_their_inputs():
    lon, lat = np.array([110.29]), np.array([25.08])
    crs.gcj02_to_wgs84(lon, lat)
    assert (lon[0], lat[0]) == (110.29, 25.08)


@pytest.mark.parametrize(
    ("value", "label", "offset", "epsg"),
    [
        (4490, "EPSG:4490", None, 4490),
        ("4490", "EPSG:4490", None, 4490),
        ("EPSG:4547", "EPSG:4547", None, 4547),
        ("epsg:4326", "EPSG:4326", None, 4326),
        ("cgcs2000", "EPSG:4490", None, 4490),
        ("CGCS2000", "EPSG:4490", None, 4490),
        ("wgs84", "EPSG:4326", None, 4326),
        ("gcj02", "gcj02", "gcj02", 4326),
        ("GCJ-02", "gcj02", "gcj02", 4326),
        ("bd09", "bd09", "bd09", 4326),
    ],
)
def test_parse_crs(value, label, offset, epsg):
    got = crs.parse_crs(value)
    assert (got.label, got.offset, got.crs.to_epsg()) == (label, offset, epsg)


@pytest.mark.parametrize("value", ["", "mars-ish", "EPSG:99999999", "gk"])
def test_parse_crs_rejects_what_it_cannot_read(value):
    with pytest.raises(ConfigError, match="EPSG code"):
        crs.parse_crs(value)


@pytest.mark.parametrize(
    ("kw", "epsg"),
    [
        ({"zone": 25}, 4513),
        ({"zone": 37}, 4525),
        ({"zone": 45}, 4533),
        ({"central_meridian": 75, "prefixed": False}, 4534),
        ({"central_meridian": 111, "prefixed": False}, 4546),
        ({"central_meridian": 135, "prefixed": False}, 4554),
        ({"zone": 13, "width": 6}, 4491),
        ({"zone": 19, "width": 6, "prefixed": False}, 4508),
    ],
)
def test_gk_epsg_codes(kw, epsg):
    assert crs.gk_epsg(**kw) == epsg
    # and pyproj agrees about the central meridian
    op = pyproj.CRS.from_epsg(epsg).coordinate_operation
    cm = {p.name: p.value for p in op.params}["Longitude of natural origin"]
    width = kw.get("width", 3)
    zone = kw.get("zone")
    want = kw["central_meridian"] if zone is None else (zone * 3 if width == 3 else zone * 6 - 3)
    assert cm == want


def test_gk_zone_is_detected_from_the_false_easting_prefix():
    # Guilin in CGCS2000 3° zone 37 (central meridian 111°E), with the zone prefix: EPSG:4525
    to_gk = pyproj.Transformer.from_crs(4490, 4525, always_xy=True)
    x, y = to_gk.transform([110.29, 110.30], [25.08, 25.09])
    assert 37_000_000 < x[0] < 38_000_000
    assert crs.detect_gk_zone(x, y) == 4525
    # the same numbers without prefix are GK-looking but carry no zone
    assert crs.detect_gk_zone(np.asarray(x) - 37e6, y) is None
    assert crs.looks_like_unprefixed_gk(np.asarray(x) - 37e6, y)
    assert crs.suggest_gk_epsg(110.29) == 4546
    # 6° zone prefixes are told apart from 3° ones
    to_6 = pyproj.Transformer.from_crs(4490, 4497, always_xy=True)  # 6° zone 19, CM 111°E
    x6, y6 = to_6.transform([110.29], [25.08])
    assert crs.detect_gk_zone(x6, y6) == 4497


@pytest.mark.parametrize(
    ("x", "y"),
    [
        ([110.29], [25.08]),
        ([500_000.0], [2_775_000.0]),
        ([37e6 + 1000], [2_775_000.0]),
        ([37_470_000.0, 38_470_000.0], [2_775_000.0] * 2),
    ],
)
def test_gk_detection_refuses_numbers_that_do_not_look_like_one_zone(x, y):
    assert crs.detect_gk_zone(x, y) is None


@pytest.mark.parametrize(
    ("x", "y", "projected"),
    [
        ([110.29], [25.08], False),
        ([25.08], [110.29], False),
        ([437_000.0], [2_775_000.0], True),
        ([np.nan], [np.nan], False),
        ([-181.0], [0.0], True),
    ],
)
def test_looks_projected(x, y, projected):
    assert crs.looks_projected(x, y) is projected


def test_swapped_coordinates_are_detected():
    lon = np.array([25.08, 110.29, 139.69, 110.29])
    lat = np.array([110.29, 25.08, 35.69, 95.0])
    got = crs.detect_swapped(lon, lat)
    # impossible latitude; fine as given; Tokyo stays (neither swapped version is in China);
    # lat 95 with lon 110 is impossible both ways round and is not flagged
    assert got.tolist() == [True, False, False, False]
    # with an expected area, a swapped version landing inside it counts
    from shapely.geometry import box

    area = box(60, 30, 70, 40)  # lat 65 would be a valid latitude, so only the area tells
    assert crs.detect_swapped([35.0], [65.0], expected=area).tolist() == [True]


def test_local_metric_crs_is_the_utm_zone_of_the_centre():
    import geopandas as gpd
    from shapely.geometry import Point

    g = gpd.GeoSeries([Point(110.29, 25.08), Point(110.30, 25.09)], crs=4326)
    assert crs.local_metric_crs(g).to_epsg() == 32649
    assert crs.local_metric_crs(gpd.GeoSeries([Point(151.2, -33.9)], crs=4326)).to_epsg() == 32756
    assert crs.local_metric_crs(g.to_crs(4547)).to_epsg() == 32649
