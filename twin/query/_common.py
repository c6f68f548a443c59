"""What every planner query shares: the result type, parameter checks, metric CRS, layer reads."""

from __future__ import annotations

import functools
import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import geopandas as gpd
import numpy as np
import pandas as pd
import shapely

from twin import layers
from twin.crs import utm_crs
from twin.errors import LayerNotFoundError, ValidationError
from twin.query import _cache
from twin.schema import CRS, LayerSpec

LOGGER = logging.getLogger(__name__)

# A point this far outside the community (or grid) area is still accepted: a planner clicking on
# the boundary road should not be refused.
AREA_SLACK_M = 100.0


@dataclass
class QueryResult:
    """The answer of a planner query: features in EPSG:4326 and what produced them.

    Attributes
    ----------
    name
        The query's name (``within``, ``nearest``, ``coverage`` …).
    frame
        The answer's features (or rows) in EPSG:4326.
    parameters
        The parameters the query ran with, defaults filled in.
    crs
        The metric CRS in which distances and areas were computed (e.g. ``EPSG:32649``).
    versions
        The version of each layer read, by layer name (what-if layers are marked ``"what-if"``).
    method
        How distances were measured or where the work ran: ``straight-line``, ``network``,
        ``postgis`` …
    summary
        An optional small table that sums the answer up (life circles, what-if).
    """

    name: str
    frame: gpd.GeoDataFrame | pd.DataFrame
    parameters: dict[str, Any]
    crs: str | None
    versions: dict[str, Any]
    method: str
    summary: pd.DataFrame | None = None
    notes: dict[str, Any] = field(default_factory=dict)

    def metadata(self) -> dict[str, Any]:
        """Everything but the features, as JSON-friendly values."""
        return {
            "name": self.name,
            "parameters": {k: _plain(v) for k, v in self.parameters.items()},
            "crs": self.crs,
            "versions": dict(self.versions),
            "method": self.method,
            "rows": len(self.frame),
            **{k: _plain(v) for k, v in self.notes.items()},
        }

    def to_file(self, path: str | Path) -> Path:
        """Write the features to GeoJSON, GeoPackage or CSV, chosen by the file's extension.

        GeoJSON is written as RFC 7946 has it (:func:`twin.geojson.write`): WGS84, no ``crs``
        member, exterior rings counter-clockwise and holes clockwise, 7 decimals.

        Raises
        ------
        ValidationError
            If the extension is not ``.geojson``/``.json``, ``.gpkg`` or ``.csv``.
        """
        path = Path(path)
        ext = path.suffix.lower()
        frame = _writable(self.frame)
        if ext == ".csv":
            table = pd.DataFrame(frame)
            if isinstance(frame, gpd.GeoDataFrame):
                table[frame.geometry.name] = shapely.to_wkt(
                    frame.geometry.values, rounding_precision=7
                )
            table.to_csv(path, index=False)
        elif ext in {".geojson", ".json", ".gpkg"}:
            if not isinstance(frame, gpd.GeoDataFrame):
                raise ValidationError(
                    f"query {self.name!r} returns a table without geometry; write it to .csv"
                )
            if ext == ".gpkg":
                frame.to_file(path, driver="GPKG", engine="pyogrio", layer=self.name)
            else:
                from twin import geojson  # RFC 7946: no crs member, right-hand rings, 1 cm

                geojson.write(frame, path)
        else:
            raise ValidationError(
                f"cannot write {path.name!r}: use a .geojson, .gpkg or .csv file name"
            )
        return path


def _plain(value: Any) -> Any:
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (np.floating,)):
        return float(value)
    if isinstance(value, (tuple, list)):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (pd.DataFrame, gpd.GeoDataFrame)):
        return f"<{len(value)} rows>"
    if isinstance(value, (pd.Timestamp,)):
        return value.isoformat()
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    return str(value)


def _writable(frame: pd.DataFrame) -> pd.DataFrame:
    """Turn lists and dicts into text so every format can hold them."""
    frame = frame.copy()
    for col in frame.columns:
        if isinstance(frame, gpd.GeoDataFrame) and col == frame.geometry.name:
            continue
        if (
            frame[col].dtype == object
            and frame[col].map(lambda v: isinstance(v, (list, tuple, dict, set))).any()
        ):
            frame[col] = (
                frame[col]
                .map(lambda v: ",".join(map(str, v)) if isinstance(v, (list, tuple, set)) else v)
                .astype(object)
            )
    return frame


# -- parameter checks -----------------------------------------------------------------------------


def spec_of(name: Any, *, geometry: bool = True) -> LayerSpec:
    """Return the declared spec of layer *name*; refuse anything undeclared before any SQL is built.

    Raises
    ------
    LayerNotFoundError
        If the layer is not declared.
    ValidationError
        If the query needs geometries and the layer has none.
    """
    if not isinstance(name, str):
        raise LayerNotFoundError(f"layer name must be text, got {name!r}")
    spec = layers.get_layer(name)
    if geometry and spec.geometry_type is None:
        raise ValidationError(
            f"layer {name!r} has no geometry; choose one of: "
            f"{', '.join(n for n, s in layers.registry().items() if s.geometry_type)}"
        )
    return spec


def field_of(spec: LayerSpec, name: Any) -> str:
    """Return a declared column of *spec*, refusing others (names reach SQL only from here)."""
    if not isinstance(name, str) or name not in spec.column_names:
        raise ValidationError(
            f"layer {spec.name!r} has no column {name!r}; columns: {', '.join(spec.column_names)}"
        )
    return name


def positive(name: str, value: Any, *, allow_zero: bool = True) -> float:
    """*value* as a finite number ≥ 0 (> 0 unless *allow_zero*), else a ValidationError."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ValidationError(f"{name} must be a number of metres, got {value!r}") from None
    if not math.isfinite(number) or number < 0 or (number == 0 and not allow_zero):
        bound = "≥ 0" if allow_zero else "> 0"
        raise ValidationError(f"{name} must be {bound}, got {value!r}")
    return number


def count(name: str, value: Any, *, minimum: int = 1) -> int:
    """*value* as a whole number ≥ *minimum*, else a ValidationError."""
    try:
        number = int(value)
        if number != float(value):
            raise ValueError
    except (TypeError, ValueError):
        raise ValidationError(f"{name} must be a whole number, got {value!r}") from None
    if number < minimum:
        raise ValidationError(f"{name} must be at least {minimum}, got {value!r}")
    return number


def lonlat(value: Any, name: str = "point") -> tuple[float, float]:
    """Read a (lon, lat) pair from a tuple, a shapely Point or ``"lon,lat"`` text."""
    if isinstance(value, shapely.Point):
        value = (value.x, value.y)
    if isinstance(value, str):
        value = value.replace(" ", "").split(",")
    try:
        lon, lat = (float(v) for v in value)
    except (TypeError, ValueError):
        raise ValidationError(
            f"{name} must be longitude,latitude in degrees (e.g. 110.29,25.08), got {value!r}"
        ) from None
    if not (-180 <= lon <= 180 and -90 <= lat <= 90):
        raise ValidationError(
            f"{name} {lon},{lat} is not a longitude,latitude pair in degrees; "
            "is it in a projected CRS or swapped?"
        )
    return lon, lat


def utm_of_frame(*frames: gpd.GeoDataFrame | None) -> str:
    """Return the UTM zone at the centre of the frames' combined extent."""
    bounds = [f.total_bounds for f in frames if f is not None and len(f)]
    if not bounds:
        raise ValidationError("there are no features to measure; load the layers first")
    b = np.array(bounds)
    x0, y0, x1, y1 = b[:, 0].min(), b[:, 1].min(), b[:, 2].max(), b[:, 3].max()
    return utm_crs((x0 + x1) / 2, (y0 + y1) / 2)


# -- reading from a store -------------------------------------------------------------------------


def is_postgis(store: Any) -> bool:
    """Tell whether *store* runs planner queries in SQL (it has a fast reader: PostGIS)."""
    return store.fast_reader() is not None


def current_version(store: Any, name: str) -> int | None:
    """Return the current version number of layer *name*, None if it was never written."""
    stamp = _cache.stamps(store, [name])[name]
    return None if stamp is None else stamp[0]


def read(store: Any, name: str, versions: dict[str, Any]) -> gpd.GeoDataFrame:
    """Return the current version of layer *name*, recording its version in *versions*.

    The frame is read once per version and shared between queries (see ``twin.query._cache``):
    callers must not modify it in place (assigning columns to a copy is fine).
    """
    spec_of(name, geometry=False)
    stamp = _cache.stamps(store, [name])[name]
    frame = _cache.layer(store, name, stamp)
    versions[name] = stamp[0]
    return frame.copy(deep=False)


def read_optional(store: Any, name: str, versions: dict[str, Any]) -> gpd.GeoDataFrame | None:
    """Like :func:`read`, but None when the layer was never written."""
    try:
        return read(store, name, versions)
    except LayerNotFoundError:
        return None


AREA_LAYERS = ("community", "grid_cells")


def study_area(
    store: Any, versions: dict[str, Any], stamps: dict[str, Any] | None = None
) -> shapely.Geometry | None:
    """Return the community boundary, else the union of the unit grids, else None (no check).

    The union is made once per version of the layer it comes from (prepared for fast point
    tests). *stamps* are the current stamps of :data:`AREA_LAYERS` when the caller already has
    them (see ``twin.query._cache.stamps``).
    """
    if stamps is None or any(n not in stamps for n in AREA_LAYERS):
        stamps = _cache.stamps(store, AREA_LAYERS)
    for name in AREA_LAYERS:
        stamp = stamps[name]
        if stamp is None:
            continue
        frame = _cache.layer(store, name, stamp)
        versions[name] = stamp[0]
        if len(frame):
            return _cache.derived(store, name, stamp, "area", lambda f=frame: _area(f))
    return None


def _area(frame: gpd.GeoDataFrame) -> shapely.Geometry:
    area = shapely.union_all(frame.geometry.values)
    shapely.prepare(area)
    area.covers(shapely.Point(0, 0))  # GEOS builds the prepared index on first use: do it here
    return area


def check_in_area(
    area: shapely.Geometry | None, lon: float, lat: float, name: str = "point"
) -> None:
    """Refuse a point more than :data:`AREA_SLACK_M` outside the study area.

    Raises
    ------
    ValidationError
        Naming the point and the area's bounds.
    """
    if area is None:
        return
    point = shapely.Point(lon, lat)
    if area.covers(point):
        return
    crs = utm_crs(lon, lat)
    gap = _cache.project(area, crs).distance(_cache.project(point, crs))
    if gap > AREA_SLACK_M:
        x0, y0, x1, y1 = area.bounds
        raise ValidationError(
            f"{name} {lon:.6f},{lat:.6f} lies {gap:,.0f} m outside the community area "
            f"(lon {x0:.5f}–{x1:.5f}, lat {y0:.5f}–{y1:.5f}); pick a point inside it "
            "(longitude first)"
        )


def geoframe(columns: dict[str, Any], geometry: Any, n: int) -> gpd.GeoDataFrame:
    """Build a GeoDataFrame of *n* rows from column arrays and a GeometryArray (with its CRS).

    Object arrays stay ``object`` (pandas would make text ``str``, unlike ``read_layer``). Built
    in one step from the arrays (pandas' ``DataFrame._from_arrays`` without its per-column
    checks, then geopandas' own ``_from_mgr``): a query answer is a few dozen rows, where the
    public constructors' per-column work is most of the cost. Falls back to them
    (:func:`geoframe_public`) if a pandas or geopandas release lacks those methods.
    """
    arrays = [_plain_array(v) for v in columns.values()]
    arrays.append(geometry)
    try:
        frame = pd.DataFrame._from_arrays(
            arrays,
            columns=_column_index((*columns, "geometry")).view(),  # a name set stays its own
            index=pd.RangeIndex(n),
            verify_integrity=False,
        )
        out = gpd.GeoDataFrame._from_mgr(frame._mgr, frame._mgr.axes)
        out._geometry_column_name = "geometry"
    except (AttributeError, TypeError) as exc:  # pragma: no cover - other library versions
        LOGGER.debug("fast frame construction unavailable (%s); using the public one", exc)
        return geoframe_public(columns, geometry, n)
    return out


@functools.lru_cache(maxsize=256)
def _column_index(names: tuple[str, ...]) -> pd.Index:
    """Return the column labels *names* as one shared (immutable) Index per set of names."""
    return pd.Index(list(names))


def _plain_array(values: Any) -> Any:
    """*values* as what a DataFrame column holds: numpy arrays, or pandas extension arrays."""
    if isinstance(values, (np.ndarray, pd.arrays.NumpyExtensionArray, list, tuple)):
        array = np.asarray(values)
        return array.astype(object) if array.dtype.kind in "OSU" else array
    if pd.api.types.is_object_dtype(getattr(values, "dtype", None)):
        return np.asarray(values, dtype=object)
    return values


def geoframe_public(columns: dict[str, Any], geometry: Any, n: int) -> gpd.GeoDataFrame:
    """:func:`geoframe` through the public constructors (the reference it must agree with)."""
    index = pd.RangeIndex(n)
    data = {
        name: pd.Series(values, dtype=object, index=index, copy=False)
        if pd.api.types.is_object_dtype(getattr(values, "dtype", None))
        else values
        for name, values in columns.items()
    }
    data["geometry"] = geometry
    return gpd.GeoDataFrame(data, index=index, geometry="geometry", copy=False)


def none_for_null(values: Any) -> np.ndarray:
    """Object values with None for every null.

    ``read_layer`` gives JSON nulls as NaN or None depending on the other rows read with them;
    query answers always say None, so a subset of rows reads the same on both stores.
    """
    out = np.asarray(values, dtype=object).copy()
    out[pd.isna(out)] = None
    return out


def to_metric(frame: gpd.GeoDataFrame, crs: str) -> np.ndarray:
    """Return the frame's geometries in the metric CRS, as a shapely array."""
    return frame.geometry.to_crs(crs).values


def to_wgs84(values: np.ndarray, crs: str) -> gpd.GeoSeries:
    return gpd.GeoSeries(values, crs=crs).to_crs(CRS)


def sort_key_distance(distance: np.ndarray) -> np.ndarray:
    """Distances rounded to the millimetre, so both stores break ties the same way (by id)."""
    return np.round(np.asarray(distance, dtype=float), 3)
