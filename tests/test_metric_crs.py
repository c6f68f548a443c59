"""The one metric-CRS choice of twin.crs: the UTM zone (with its edges), and the centred one."""

from __future__ import annotations

import geopandas as gpd
import numpy as np
import pyproj
import pytest
from pyproj.aoi import AreaOfInterest
from pyproj.database import query_utm_crs_info
from shapely.geometry import Point

from twin import crs
from twin.errors import ValidationError
from twin.query import _common

BELOW_108 = float(np.nextafter(108.0, -np.inf))
BELOW_180 = float(np.nextafter(180.0, -np.inf))

EDGES = [
    ("on the 108° edge: the zone east of it", 108.0, 25.0, 32649),
    ("just west of 108°", BELOW_108, 25.0, 32648),
    ("180° closes zone 60", 180.0, 25.0, 32660),
    ("just west of 180° (once zone 1 by rounding)", BELOW_180, 25.0, 32660),
    ("-180° opens zone 1", -180.0, 25.0, 32601),
    ("the equator is north", 110.0, 0.0, 32649),
    ("just south of it", 110.0, -1e-9, 32749),
    ("the poles", 110.0, 90.0, 32649),
    ("Guilin", 110.29, 25.08, 32649),
    ("Sydney", 151.2, -33.9, 32756),
]


@pytest.mark.parametrize(("why", "lon", "lat", "epsg"), EDGES, ids=[e[0] for e in EDGES])
def test_the_utm_zone_at_and_near_its_edges(why, lon, lat, epsg):
    assert crs.utm_epsg(lon, lat) == epsg
    assert crs.utm_crs(lon, lat) == f"EPSG:{epsg}"


def test_the_queries_and_the_library_share_one_formula():
    assert _common.utm_crs is crs.utm_crs
    lons = np.concatenate([np.arange(-180, 181, 6.0), np.arange(-179.5, 180, 1.0)])
    for lon in lons:
        for lat in (-45.0, 0.0, 25.0):
            centre = gpd.GeoSeries([Point(lon, lat)], crs=4326)
            assert crs.local_metric_crs(centre).to_epsg() == crs.utm_epsg(lon, lat)


@pytest.mark.parametrize("lon", [-177.0, -0.5, 0.5, 73.6, 108.3, 113.99, 134.7, 179.5])
def test_zones_agree_with_the_proj_database_inside_a_zone(lon):
    for lat in (-33.0, 25.0):
        found = query_utm_crs_info(datum_name="WGS 84",
                                   area_of_interest=AreaOfInterest(lon, lat, lon, lat))
        assert [int(f.code) for f in found] == [crs.utm_epsg(lon, lat)]


@pytest.mark.parametrize(("lon", "lat"), [(200.0, 25.0), (-181.0, 0.0), (110.0, 95.0),
                                          (float("nan"), 25.0), (500_000.0, 2_770_000.0)])
def test_coordinates_that_are_not_degrees_are_refused(lon, lat):
    with pytest.raises(ValidationError, match="not a longitude/latitude.*Reproject"):
        crs.utm_epsg(lon, lat)


def test_the_two_metric_crs_mean_different_things_near_a_zone_edge():
    # 113.9°E is near zone 49's east edge: UTM grid north is ~1.2° off true north there, so a
    # point 1 km due north drifts ~21 m sideways in UTM and stays on the axis in the centred CRS
    lon, lat = 113.9, 25.0
    north_lon, north_lat, _ = pyproj.Geod(ellps="WGS84").fwd(lon, lat, 0.0, 1000.0)
    pts = gpd.GeoSeries([Point(lon, lat), Point(north_lon, north_lat)], crs=4326)
    utm = pts.to_crs(crs.local_metric_crs(pts))
    centred = pts.to_crs(crs.centred_equidistant_crs(pts))
    assert abs(centred.iloc[1].x - centred.iloc[0].x) < 0.01
    assert 15 < abs(utm.iloc[1].x - utm.iloc[0].x) < 30
    for frame in (utm, centred):  # both are metric: the distance is 1 km within 0.1 %
        assert frame.iloc[0].distance(frame.iloc[1]) == pytest.approx(1000.0, rel=1e-3)


@pytest.mark.parametrize("lat", [18.0, 25.0, 45.0])
def test_offsets_in_metres_land_where_the_geodesic_does(lat):
    # the camera cones' layout: metres east and north of each point, against pyproj's geodesic
    rng = np.random.default_rng(3)
    bearing = rng.uniform(0, 360, 500)
    for reach, within in ((50.0, 0.001), (300.0, 0.01), (1000.0, 0.1)):
        east, north = reach * np.sin(np.radians(bearing)), reach * np.cos(np.radians(bearing))
        lon, lat2 = crs.offset_lonlat(np.full(500, 110.29), np.full(500, lat), east, north)
        geod = pyproj.Geod(ellps="WGS84")
        want_lon, want_lat, _ = geod.fwd(np.full(500, 110.29), np.full(500, lat), bearing,
                                         np.full(500, reach))
        assert geod.inv(lon, lat2, want_lon, want_lat)[2].max() < within


@pytest.mark.parametrize(("reach", "within"), [(50, 0.001), (300, 0.01), (1000, 0.1)])
def test_metres_from_a_place_are_the_geodesic_distance_and_invert_offsets(reach, within):
    rng = np.random.default_rng(3)
    bearing = rng.uniform(0, 360, 500)
    lat = rng.uniform(-60, 60, 500)
    lon = rng.uniform(-180, 180, 500)
    geod = pyproj.Geod(ellps="WGS84")
    there_lon, there_lat, _ = geod.fwd(lon, lat, bearing, np.full(500, reach))
    east, north = crs.metres_from(lon, lat, there_lon, there_lat)
    assert np.abs(np.hypot(east, north) - reach).max() < within
    back = crs.offset_lonlat(lon, lat, east, north)
    assert np.allclose(back[0], there_lon, atol=1e-9) and np.allclose(back[1], there_lat, atol=1e-9)
    # across the antimeridian: a few metres, not a world away
    assert abs(crs.metres_from(179.99999, 0, -179.99999, 0)[0] - 2.23) < 0.01


def test_the_centred_crs_is_centred_on_the_geometries():
    cams = gpd.GeoSeries([Point(110.28, 25.07), Point(110.30, 25.09)], crs=4326)
    assert crs.centred_equidistant_crs(cams).startswith("+proj=aeqd +lat_0=25.0800000 "
                                                        "+lon_0=110.2900000")
    assert crs.centred_equidistant_crs(cams.to_crs(4547)) == crs.centred_equidistant_crs(cams)
