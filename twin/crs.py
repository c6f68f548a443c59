"""Coordinate systems staff data arrive in: --crs parsing, GCJ-02/BD-09, GK zones, sanity checks."""

from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import numpy as np
import pyproj
import shapely

from twin.errors import ConfigError, ValidationError

LOGGER = logging.getLogger(__name__)

WGS84 = "EPSG:4326"
CGCS2000 = "EPSG:4490"

# -- the GCJ-02 region -----------------------------------------------------------------------------
#
# GCJ-02 offsets apply where AMap applies them: China's land — the mainland with its border
# regions, Hainan, Taiwan, Hong Kong, Macau and the South China Sea islands — and the sea along
# its coasts; nowhere in a neighbouring country (Seoul, Pyongyang, Hanoi, Ulaanbaatar,
# Vladivostok … are never shifted). The region ships as data, data/regions/gcj02_region.geojson
# (installed as twin/regions/…; twin/regions links to data/regions in a checkout): Natural Earth's
# 1:10m borders (public domain) and the sea within 100 km of that land that is nearer to it than to
# any other country. data/regions/README.md says how it was built and how far it can be wrong;
# docs/loading.md gives the error bound in metres.

REGION_DIR = Path(__file__).resolve().parent / "regions"
GCJ02_REGION_FILE = REGION_DIR / "gcj02_region.geojson"


@cache
def gcj02_region():
    """Return the region where GCJ-02 coordinates carry the offset: a prepared (Multi)Polygon.

    Read once from :data:`GCJ02_REGION_FILE` (lon/lat, EPSG:4326) and prepared, so that
    :func:`in_china` tests a million points in a fraction of a second.

    Raises
    ------
    ConfigError
        If the region file is missing or unreadable (a broken install).
    """
    try:
        collection = json.loads(GCJ02_REGION_FILE.read_text(encoding="utf-8"))
        geom = shapely.from_geojson(json.dumps(collection["features"][0]["geometry"]))
    except (OSError, ValueError, KeyError, IndexError, shapely.errors.GEOSException) as exc:
        raise ConfigError(
            f"the GCJ-02 region {GCJ02_REGION_FILE} is missing or unreadable ({exc}); "
            "reinstall gridtwin (the file ships in the package) or restore data/regions/."
        ) from None
    shapely.prepare(geom)
    return geom


def __getattr__(name: str):
    # CHINA_OUTLINE: the old name of the region, read on first use (keeps `import twin.crs` cheap)
    if name == "CHINA_OUTLINE":
        return gcj02_region()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


#: Side of the cells of the lookup grid that settles most points without the polygon (degrees).
REGION_GRID_DEG = 0.5


@cache
def _region_grid() -> tuple[float, float, float, np.ndarray]:
    """Classify a grid over the region once: 1 cell wholly inside, 0 wholly outside, 2 on the edge.

    Built on first use (~12,000 cells, a fraction of a second); :func:`in_china` then needs the
    polygon only for points in edge cells, a few percent of them.
    """
    region = gcj02_region()
    xmin, ymin, xmax, ymax = region.bounds
    step = REGION_GRID_DEG
    nx, ny = int(np.ceil((xmax - xmin) / step)), int(np.ceil((ymax - ymin) / step))
    x0, y0 = np.meshgrid(xmin + step * np.arange(nx), ymin + step * np.arange(ny))
    cells = shapely.box(x0, y0, x0 + step, y0 + step)
    state = np.full(cells.shape, 2, dtype="int8")
    state[shapely.contains_properly(region, cells)] = 1
    state[~shapely.intersects(region, cells)] = 0
    return xmin, ymin, step, state


def in_china(lon: np.ndarray, lat: np.ndarray) -> np.ndarray:
    """Tell which (lon, lat) pairs lie in the GCJ-02 region (China's land and coastal sea).

    Vectorised: a lookup in a 0.5° grid classified once against the region settles the points
    in cells wholly inside or outside it; one ``shapely.contains_xy`` on the prepared region
    settles the rest (cells the region's edge crosses). About 0.1-0.3 s per million points.

    Parameters
    ----------
    lon, lat
        Longitudes and latitudes in degrees (array-likes of one shape). NaN is outside.

    Returns
    -------
    numpy.ndarray
        Booleans of the same shape, True where the point is inside (see :func:`gcj02_region`).
    """
    lon = np.asarray(lon, dtype="float64")
    lat = np.asarray(lat, dtype="float64")
    xmin, ymin, step, state = _region_grid()
    with np.errstate(invalid="ignore"):
        ix = np.floor((lon - xmin) / step)
        iy = np.floor((lat - ymin) / step)
    ny, nx = state.shape
    ok = (ix >= 0) & (ix < nx) & (iy >= 0) & (iy < ny)  # False for NaN
    cls = np.zeros(lon.shape, dtype="int8")
    cls[ok] = state[iy[ok].astype("intp"), ix[ok].astype("intp")]
    out = cls == 1
    edge = cls == 2
    if edge.any():
        out[edge] = shapely.contains_xy(gcj02_region(), lon[edge], lat[edge])
    return out


# -- GCJ-02 and BD-09 ----------------------------------------------------------------------------
#
# The forward model is the public GCJ-02 formula (Krasovsky 1940 ellipsoid parameters and the
# trigonometric offset series) shared by the common open-source converters; it matches AMap's own
# conversion to within a few metres in eastern China, worse on the western plateau (STACK_NOTES).
# The inverse is not closed-form: it is solved by fixed-point iteration to within INVERSE_TOL_DEG,
# so WGS84 → GCJ-02 → WGS84 round trips agree to better than 1e-8° (about 1 mm). The error of a
# converted point is therefore the model's error (metres), not the inversion's.

_A = 6378245.0
_EE = 0.00669342162296594323
_X_PI = np.pi * 3000.0 / 180.0
INVERSE_TOL_DEG = 1e-9
_MAX_ITER = 30


def _gcj_offset(lon: np.ndarray, lat: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    x = lon - 105.0
    y = lat - 35.0
    sq = np.sqrt(np.abs(x))
    common = (20.0 * np.sin(6.0 * x * np.pi) + 20.0 * np.sin(2.0 * x * np.pi)) * 2.0 / 3.0
    dlat = (
        -100.0
        + 2.0 * x
        + 3.0 * y
        + 0.2 * y * y
        + 0.1 * x * y
        + 0.2 * sq
        + common
        + (20.0 * np.sin(y * np.pi) + 40.0 * np.sin(y / 3.0 * np.pi)) * 2.0 / 3.0
        + (160.0 * np.sin(y / 12.0 * np.pi) + 320.0 * np.sin(y * np.pi / 30.0)) * 2.0 / 3.0
    )
    dlon = (
        300.0
        + x
        + 2.0 * y
        + 0.1 * x * x
        + 0.1 * x * y
        + 0.1 * sq
        + common
        + (20.0 * np.sin(x * np.pi) + 40.0 * np.sin(x / 3.0 * np.pi)) * 2.0 / 3.0
        + (150.0 * np.sin(x / 12.0 * np.pi) + 300.0 * np.sin(x / 30.0 * np.pi)) * 2.0 / 3.0
    )
    radlat = lat / 180.0 * np.pi
    magic = 1.0 - _EE * np.sin(radlat) ** 2
    sqrtmagic = np.sqrt(magic)
    dlat = (dlat * 180.0) / ((_A * (1.0 - _EE)) / (magic * sqrtmagic) * np.pi)
    dlon = (dlon * 180.0) / (_A / sqrtmagic * np.cos(radlat) * np.pi)
    return dlon, dlat


def _arrays(lon, lat) -> tuple[np.ndarray, np.ndarray]:
    lon = np.array(lon, dtype="float64", copy=True, ndmin=1)
    lat = np.array(lat, dtype="float64", copy=True, ndmin=1)
    if lon.shape != lat.shape:
        raise ValueError(f"lon and lat differ in shape: {lon.shape} vs {lat.shape}")
    return lon, lat


def wgs84_to_gcj02(lon, lat) -> tuple[np.ndarray, np.ndarray]:
    """WGS84 → GCJ-02 (the forward model). Points outside China are returned unchanged."""
    lon, lat = _arrays(lon, lat)
    inside = in_china(lon, lat)
    dlon, dlat = _gcj_offset(lon[inside], lat[inside])
    lon[inside] += dlon
    lat[inside] += dlat
    return lon, lat


def _invert(forward, lon: np.ndarray, lat: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Solve forward(x) = target by fixed-point iteration (the offsets vary slowly)."""
    x, y = lon.copy(), lat.copy()
    for _ in range(_MAX_ITER):
        fx, fy = forward(x, y)
        ex, ey = fx - lon, fy - lat
        x -= ex
        y -= ey
        if x.size == 0 or max(np.abs(ex).max(), np.abs(ey).max()) < INVERSE_TOL_DEG:
            break
    return x, y


def gcj02_to_wgs84(lon, lat) -> tuple[np.ndarray, np.ndarray]:
    """GCJ-02 → WGS84 by inverting the forward model; points outside China are unchanged.

    Accuracy: exact to 1e-9° with respect to the model; the model is within a few metres of AMap's
    conversion in eastern China.
    """
    lon, lat = _arrays(lon, lat)
    inside = in_china(lon, lat)

    def forward(x, y):
        dx, dy = _gcj_offset(x, y)
        return x + dx, y + dy

    lon[inside], lat[inside] = _invert(forward, lon[inside], lat[inside])
    return lon, lat


def gcj02_to_bd09(lon, lat) -> tuple[np.ndarray, np.ndarray]:
    """GCJ-02 → BD-09 (Baidu's public formula). Points outside China are unchanged."""
    lon, lat = _arrays(lon, lat)
    inside = in_china(lon, lat)
    lon[inside], lat[inside] = _gcj_to_bd(lon[inside], lat[inside])
    return lon, lat


def _gcj_to_bd(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    z = np.sqrt(x * x + y * y) + 0.00002 * np.sin(y * _X_PI)
    theta = np.arctan2(y, x) + 0.000003 * np.cos(x * _X_PI)
    return z * np.cos(theta) + 0.0065, z * np.sin(theta) + 0.006


def bd09_to_gcj02(lon, lat) -> tuple[np.ndarray, np.ndarray]:
    """BD-09 → GCJ-02 by inverting Baidu's forward formula; points outside China are unchanged."""
    lon, lat = _arrays(lon, lat)
    inside = in_china(lon, lat)
    lon[inside], lat[inside] = _invert(_gcj_to_bd, lon[inside], lat[inside])
    return lon, lat


def bd09_to_wgs84(lon, lat) -> tuple[np.ndarray, np.ndarray]:
    """BD-09 → GCJ-02 → WGS84; points outside China are unchanged."""
    lon, lat = _arrays(lon, lat)
    inside = in_china(lon, lat)
    gx, gy = bd09_to_gcj02(lon[inside], lat[inside])
    lon[inside], lat[inside] = gcj02_to_wgs84(gx, gy)
    return lon, lat


# -- parsing --crs -------------------------------------------------------------------------------

OFFSET_SYSTEMS = ("gcj02", "bd09")
_NAMES = {
    "wgs84": WGS84,
    "wgs 84": WGS84,
    "wgs-84": WGS84,
    "4326": WGS84,
    "cgcs2000": CGCS2000,
    "cgcs 2000": CGCS2000,
    "cgcs-2000": CGCS2000,
    "gcj02": "gcj02",
    "gcj-02": "gcj02",
    "gcj": "gcj02",
    "amap": "gcj02",
    "mars": "gcj02",
    "bd09": "bd09",
    "bd-09": "bd09",
    "baidu": "bd09",
    "bd09ll": "bd09",
}


@dataclass(frozen=True)
class CrsChoice:
    """What ``--crs`` asked for: a pyproj CRS, or an offset system on top of WGS84 lon/lat."""

    label: str  # what is reported: "EPSG:4547", "gcj02", "bd09"
    crs: pyproj.CRS  # the CRS of the numbers (WGS84 for gcj02/bd09)
    offset: str | None = None  # "gcj02" / "bd09" when the numbers still need converting

    @property
    def is_cgcs2000_family(self) -> bool:
        return self.label == CGCS2000


def parse_crs(value: str | int | pyproj.CRS) -> CrsChoice:
    """Parse a ``--crs`` value: an EPSG code (4490, "EPSG:4547"), wgs84, cgcs2000, gcj02 or bd09.

    Raises
    ------
    ConfigError
        If the value names no CRS; the message lists the accepted forms.
    """
    if isinstance(value, pyproj.CRS):
        return CrsChoice(value.to_string(), value)
    text = str(value).strip()
    key = text.lower()
    named = _NAMES.get(key)
    if named in OFFSET_SYSTEMS:
        return CrsChoice(named, pyproj.CRS.from_user_input(WGS84), offset=named)
    if named is not None:
        return CrsChoice(named, pyproj.CRS.from_user_input(named))
    m = re.fullmatch(r"(?:epsg\s*:\s*)?(\d{4,6})", key)
    try:
        crs = pyproj.CRS.from_epsg(int(m.group(1))) if m else pyproj.CRS.from_user_input(text)
    except (pyproj.exceptions.CRSError, ValueError):
        raise ConfigError(
            f"--crs {text!r} is not a coordinate reference system; use an EPSG code "
            "(4490, 4326, EPSG:4547 …), cgcs2000, wgs84, gcj02 or bd09."
        ) from None
    label = f"EPSG:{m.group(1)}" if m else crs.to_string()
    return CrsChoice(label, crs)


#: The datums of Chinese surveying (CGCS2000, Xi'an 1980, Beijing 1954): a CRS on them, or an
#: offset system, is a Chinese CRS, whose data must lie in China.
CHINESE_DATUMS = (4490, 4610, 4214)


def is_chinese(choice: CrsChoice) -> bool:
    """Tell whether a ``--crs`` only makes sense in China (a Chinese datum, GCJ-02 or BD-09)."""
    if choice.offset:
        return True
    geodetic = choice.crs.geodetic_crs
    return geodetic is not None and geodetic.to_epsg() in CHINESE_DATUMS


def looks_like_degrees(x: np.ndarray, y: np.ndarray) -> bool:
    """Tell whether every coordinate could be degrees (|x| ≤ 180, |y| ≤ 90): not metres."""
    x = np.asarray(x, dtype="float64")
    y = np.asarray(y, dtype="float64")
    ok = np.isfinite(x) & np.isfinite(y)
    return bool(ok.any() and (np.abs(x[ok]) <= 180).all() and (np.abs(y[ok]) <= 90).all())


# -- Gauss-Krüger zones of CGCS2000 --------------------------------------------------------------
#
# EPSG:4491-4501  6° zones 13-23 with the zone number as false-easting prefix (x = zone·10⁶ + …)
# EPSG:4502-4512  6° zones, central meridians 75°E-135°E, no prefix (x ≈ 500 000 ± 350 000)
# EPSG:4513-4533  3° zones 25-45 with the zone prefix, central meridian = 3·zone
# EPSG:4534-4554  3° zones, central meridians 75°E-135°E, no prefix
# A prefix of 13-23 can only be a 6° zone and 25-45 only a 3° zone, so the prefix fixes the CRS.


def gk_epsg(
    zone: int | None = None,
    *,
    central_meridian: float | None = None,
    width: int = 3,
    prefixed: bool = True,
) -> int:
    """Return the EPSG code of a CGCS2000 Gauss-Krüger zone.

    Parameters
    ----------
    zone
        The zone number (3° zones 25-45, 6° zones 13-23); or give *central_meridian*.
    central_meridian
        Degrees east (3° zones: 75, 78, … 135; 6° zones: 75, 81, … 135).
    width
        3 or 6 (degrees).
    prefixed
        Whether eastings carry the zone number as a prefix.
    """
    if width not in (3, 6):
        raise ValueError(f"Gauss-Krüger zone width must be 3 or 6, got {width}")
    if zone is None:
        if central_meridian is None:
            raise ValueError("give a zone or a central meridian")
        zone = round(central_meridian / 3) if width == 3 else round((central_meridian + 3) / 6)
    lo, hi = (25, 45) if width == 3 else (13, 23)
    if not lo <= zone <= hi:
        raise ValueError(f"CGCS2000 {width}° zones are {lo}-{hi}; got {zone}")
    if width == 3:
        return (4513 if prefixed else 4534) + zone - 25
    return (4491 if prefixed else 4502) + zone - 13


def looks_projected(x: np.ndarray, y: np.ndarray) -> bool:
    """Tell whether coordinates cannot be degrees: some |x| > 180 or |y| > 180 (metres, feet …).

    |y| up to 180 is allowed because swapped lon/lat puts longitudes in the y column.
    """
    x = np.asarray(x, dtype="float64")
    y = np.asarray(y, dtype="float64")
    ok = np.isfinite(x) & np.isfinite(y)
    if not ok.any():
        return False
    return bool((np.abs(x[ok]) > 180).any() or (np.abs(y[ok]) > 180).any())


def detect_gk_zone(x: np.ndarray, y: np.ndarray) -> int | None:
    """EPSG code of the CGCS2000 GK zone whose prefixed eastings these look like, else None.

    The numbers must look like Gauss-Krüger in China: every easting shares one zone prefix
    (13-23 or 25-45 million) with an in-zone part of 150-850 km, and northings lie in
    1 500-6 100 km (18°N-55°N).
    """
    x = np.asarray(x, dtype="float64")
    y = np.asarray(y, dtype="float64")
    ok = np.isfinite(x) & np.isfinite(y)
    if not ok.any():
        return None
    x, y = x[ok], y[ok]
    zones = np.unique(np.floor(x / 1e6).astype("int64"))
    if zones.size != 1:
        return None
    zone = int(zones[0])
    inner = x - zone * 1e6
    if not ((inner > 150_000) & (inner < 850_000)).all():
        return None
    if not ((y > 1_500_000) & (y < 6_100_000)).all():
        return None
    if 25 <= zone <= 45:
        return gk_epsg(zone, width=3)
    if 13 <= zone <= 23:
        return gk_epsg(zone, width=6)
    return None


def looks_like_unprefixed_gk(x: np.ndarray, y: np.ndarray) -> bool:
    """Tell whether numbers look like unprefixed GK eastings and northings in China."""
    x = np.asarray(x, dtype="float64")
    y = np.asarray(y, dtype="float64")
    ok = np.isfinite(x) & np.isfinite(y)
    if not ok.any():
        return False
    x, y = x[ok], y[ok]
    return bool(((x > 150_000) & (x < 850_000) & (y > 1_500_000) & (y < 6_100_000)).all())


def suggest_gk_epsg(lon: float) -> int | None:
    """Return the unprefixed CGCS2000 3° zone (EPSG:4534-4554) whose meridian is nearest *lon*."""
    cm = 3 * round(lon / 3)
    if 75 <= cm <= 135:
        return gk_epsg(central_meridian=cm, width=3, prefixed=False)
    return None


# -- swapped axes and metric work ----------------------------------------------------------------


def detect_swapped(lon: np.ndarray, lat: np.ndarray, expected=None) -> np.ndarray:
    """Boolean array: which points look like (lat, lon) given as (lon, lat).

    A point counts as swapped when it is impossible as given but valid swapped (|lat| > 90,
    |lon| ≤ 90), or when it lies outside the *expected* area (a shapely geometry in EPSG:4326;
    default the GCJ-02 region, China's land and coastal sea) as given but inside it swapped. A
    point inside both, or outside both, is not flagged.
    """
    lon = np.asarray(lon, dtype="float64")
    lat = np.asarray(lat, dtype="float64")
    region = gcj02_region() if expected is None else expected
    impossible = (np.abs(lat) > 90) & (np.abs(lon) <= 90) & (np.abs(lat) <= 180)
    inside = shapely.contains_xy(region, lon, lat)
    inside_swapped = shapely.contains_xy(region, lat, lon)
    return impossible | (~inside & inside_swapped)


# The one choice of a metric CRS. Distances, areas and buffers are computed in the WGS 84 UTM zone
# of the data's centre (utm_epsg / utm_crs / local_metric_crs): a standard EPSG code that every
# QueryResult reports and PostGIS can use too; scale error stays below 0.1 % across a community.
# Where true bearings from one point matter (camera view cones: heading is clockwise from true
# north, while UTM grid north is off by up to ~3° at a zone's edge), centred_equidistant_crs gives
# an azimuthal equidistant projection around the data instead. Nothing else picks a metric CRS.


def utm_epsg(lon: float, lat: float) -> int:
    """Return the EPSG code of the WGS 84 UTM zone holding (lon, lat).

    Zone *n* covers longitudes ``[-186 + 6n, -180 + 6n)``; a point on a zone's edge belongs to
    the zone east of it, except 180° itself, which closes zone 60. Latitude 0 is north.

    Raises
    ------
    ValidationError
        If (lon, lat) is not a longitude/latitude in degrees.
    """
    lon, lat = float(lon), float(lat)
    if not (-180.0 <= lon <= 180.0 and -90.0 <= lat <= 90.0):  # also refuses NaN
        raise ValidationError(
            f"({lon}, {lat}) is not a longitude/latitude in degrees; the metric CRS is chosen "
            "from WGS 84 (EPSG:4326) coordinates. Reproject the data first."
        )
    index = int(np.floor((lon + 180.0) / 6.0))
    west = -180.0 + 6.0 * index  # exact; the sum above may round across an edge, this may not
    index += -1 if lon < west else 1 if lon >= west + 6.0 else 0
    zone = min(index, 59) + 1
    return (32600 if lat >= 0 else 32700) + zone


def utm_crs(lon: float, lat: float) -> str:
    """Return ``"EPSG:<code>"`` of the UTM zone holding (lon, lat) (see :func:`utm_epsg`)."""
    return f"EPSG:{utm_epsg(lon, lat)}"


def _centre_lonlat(geoms) -> tuple[float, float]:
    """Centre of the bounds of *geoms* in EPSG:4326 (reprojected when they have another CRS)."""
    crs = getattr(geoms, "crs", None)
    if crs is not None and not pyproj.CRS.from_user_input(crs).equals(WGS84):
        geoms = geoms.to_crs(WGS84)
    values = getattr(geoms, "geometry", geoms)
    values = getattr(values, "values", values)
    arr = np.asarray(values, dtype=object).ravel()
    arr = arr[~(shapely.is_missing(arr) | shapely.is_empty(arr))] if arr.size else arr
    if arr.size == 0:
        raise ValueError("no geometries to choose a local metric CRS from")
    xmin, ymin, xmax, ymax = shapely.total_bounds(arr)
    return (xmin + xmax) / 2, (ymin + ymax) / 2


def local_metric_crs(geoms) -> pyproj.CRS:
    """Return a metric CRS for distances and areas near *geoms*: the UTM zone of their centre.

    *geoms* is a GeoSeries/GeoDataFrame (reprojected to EPSG:4326 when it has another CRS), a
    shapely geometry or an array of them in EPSG:4326.
    """
    return pyproj.CRS.from_epsg(utm_epsg(*_centre_lonlat(geoms)))


#: The WGS84 ellipsoid: semi-major axis (m) and first eccentricity squared.
_WGS84_A = 6378137.0
_WGS84_E2 = (1 / 298.257223563) * (2 - 1 / 298.257223563)


def offset_lonlat(lon, lat, east_m, north_m) -> tuple[np.ndarray, np.ndarray]:
    """Return the places *east_m* and *north_m* metres from (*lon*, *lat*), in degrees.

    Each offset is laid out on the ellipsoid's tangent plane at its own point (the meridian and
    prime-vertical radii of curvature there): true metres and bearings from every point, not
    from one projection centre, in a few array operations. Against the geodesic (pyproj.Geod)
    the error grows with the square of the distance: under a centimetre out to 500 m at 25°N,
    ~4 cm at 1 km. For short reaches such as camera view cones (``twin.enrich.camera_cones``).
    """
    lon, lat = np.asarray(lon, dtype=float), np.asarray(lat, dtype=float)
    east, north = _metres_per_radian(lat)
    return (lon + np.degrees(np.asarray(east_m) / east),
            lat + np.degrees(np.asarray(north_m) / north))


def _metres_per_radian(lat: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Metres per radian of longitude and of latitude at *lat* (degrees), on the ellipsoid."""
    phi = np.radians(lat)
    w = np.sqrt(1.0 - _WGS84_E2 * np.sin(phi) ** 2)
    return _WGS84_A / w * np.cos(phi), _WGS84_A * (1.0 - _WGS84_E2) / w**3


def metres_from(lon0, lat0, lon, lat) -> tuple[np.ndarray, np.ndarray]:
    """Return how many metres east and north (*lon*, *lat*) lie from (*lon0*, *lat0*).

    The inverse of :func:`offset_lonlat` on the tangent plane at (*lon0*, *lat0*), with the
    same error bound: for short reaches such as a report's possible duplicates within 50 m
    (``twin.cases.find_duplicates``), with no projection to build.
    """
    lon0, lat0 = np.asarray(lon0, dtype=float), np.asarray(lat0, dtype=float)
    east, north = _metres_per_radian(lat0)
    dlon = (np.asarray(lon, dtype=float) - lon0 + 180.0) % 360.0 - 180.0  # across 180°
    return (np.radians(dlon) * east, np.radians(np.asarray(lat, dtype=float) - lat0) * north)


def centred_equidistant_crs(geoms) -> str:
    """Return an azimuthal equidistant CRS centred on *geoms*: true metres and bearings from there.

    For measuring geometry built from bearings from one place; distances and areas elsewhere
    use :func:`local_metric_crs`. *geoms* as for :func:`local_metric_crs`.
    """
    lon0, lat0 = _centre_lonlat(geoms)
    return f"+proj=aeqd +lat_0={lat0:.7f} +lon_0={lon0:.7f} +x_0=0 +y_0=0 +ellps=WGS84 +units=m"
