"""LayerSpec + GeoDataFrame → pydeck layers: the twin's map, drawn offline from its layers."""

from __future__ import annotations

import json
import logging
import math
import secrets
import weakref
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import geopandas as gpd
import numpy as np
import pandas as pd
import pydeck as pdk
import shapely
from pydeck.bindings.json_tools import default_serialize

from twin import layercache, settings
from twin import layers as declared
from twin.crs import wgs84_to_gcj02
from twin.enrich import CONE_SEGMENTS, camera_cones  # noqa: F401 (re-exported)
from twin.lru import LRUCache
from twin.schema import LayerSpec
from twin.timeutil import local_zone

LOGGER = logging.getLogger(__name__)

#: Decimal places sent for longitude/latitude: 1e-6 degrees is about 10 cm, plenty for a map.
COORD_DECIMALS = 6
#: Polygons and lines of the thematic map are simplified to this many metres (a pixel at zoom 17).
SIMPLIFY_M = 1.0
#: Metres in a degree of latitude: turns :data:`SIMPLIFY_M` into a tolerance in degrees (a degree
#: of longitude is shorter, so the tolerance is never coarser than asked).
M_PER_DEGREE = 111_320.0
#: Display coordinate systems: the twin's WGS84, or GCJ-02 to line up with Chinese web tiles.
DISPLAY_CRS = ("wgs84", "gcj02")
#: Tiles of a configured basemap drawn at most (BitmapLayers, one per tile of the first view).
MAX_TILES = 64
TILES_ID = "basemap-tiles"
#: The land under the twin: the community polygon filled in a colour that suits a dark theme.
LAND_COLOR = (24, 31, 44, 255)
#: Camera view cones: the camera's colour, this transparent.
CONE_ALPHA = 60
#: Where the map opens when there is nothing to fit (Guilin, the demo community's city).
DEFAULT_VIEW = {"longitude": 110.29, "latitude": 25.28, "zoom": 14.0}
#: The map's height in pixels, and the width assumed when fitting the initial view.
MAP_HEIGHT = 620
MAP_WIDTH = 900
TOOLTIP_STYLE = {
    "backgroundColor": "rgba(14, 17, 23, 0.92)",
    "color": "#e6edf3",
    "border": "1px solid #00e5ff",
    "borderRadius": "4px",
    "fontSize": "12px",
    "whiteSpace": "pre-line",
    "maxWidth": "320px",
}
#: The tooltip of every map: each feature's ``tooltip`` text, inserted as text (never HTML).
TEXT_TOOLTIP = {"text": "{tooltip}", "style": TOOLTIP_STYLE}
BASEMAP_LAND_ID = "basemap-land"
CONES_SUFFIX = "cones"

_KIND_OF_TYPE_ID = {0: "Point", 1: "LineString", 3: "Polygon", 4: "Point", 5: "LineString",
                    6: "Polygon"}


@dataclass(frozen=True)
class LegendEntry:
    """One layer in the map legend: its name, title and the colour it is drawn in."""

    name: str
    title: str
    color: tuple[int, int, int, int]

    @property
    def hex(self) -> str:
        r, g, b, _ = self.color
        return f"#{r:02x}{g:02x}{b:02x}"


# -- inert data: nothing a value holds is read as a deck.gl expression -------------------------

#: deck.gl's JSON converter (which Streamlit runs over the whole deck, data included) reads a
#: string value starting ``@@=`` as code and ``@@#`` as a constant or enumeration, and an object
#: with a ``@@type`` or ``@@function`` key as a class or a function call. Every value from the
#: twin that starts with ``@@`` is therefore marked (:data:`INERT_MARK` put in front).
CONVERTER_PREFIX = "@@"
CONVERTER_PREFIXES = ("@@=", "@@#", "@@type", "@@function")
#: WORD JOINER: invisible and zero-width, so a marked value reads the same in a tooltip. A value
#: that already starts with it is marked too, so :func:`plain_value` undoes exactly one mark.
INERT_MARK = "\u2060"
_MARKED = (CONVERTER_PREFIX, INERT_MARK)
#: What :func:`pandas.api.types.infer_dtype` calls an array that holds at least one string.
_WITH_STRINGS = ("string", "mixed", "mixed-integer")


def inert_value(value: Any) -> Any:
    """*value* with every string (nested lists and dict keys too) safe from deck.gl's converter.

    A string that starts with ``@@`` (any of :data:`CONVERTER_PREFIXES`) or with
    :data:`INERT_MARK` gets :data:`INERT_MARK` in front; anything else comes back unchanged.
    For whole columns use :func:`inert_strings` (vectorised).
    """
    if isinstance(value, str):
        return INERT_MARK + value if value.startswith(_MARKED) else value
    if isinstance(value, Mapping):
        return {inert_value(k): inert_value(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [inert_value(v) for v in value]
    return value


def plain_value(value: Any) -> Any:
    """Undo :func:`inert_value` on a string read back from the map (a selection's id)."""
    if isinstance(value, str) and value.startswith(INERT_MARK):
        return value[len(INERT_MARK):]
    return value


def inert_strings(values: Any) -> list:
    """Top-level strings of *values* marked as :func:`inert_value` does (one vectorised pass).

    Marked values are rare, so the common case must cost next to nothing beyond the list
    itself: a text column is searched in its own (Arrow) storage, an object column through one
    search of its joined text, before any string is looked at one by one.
    """
    column = pd.Series(values, dtype=object) if not isinstance(values, pd.Series) else values
    if isinstance(column.dtype, pd.StringDtype):
        hit = column.str.startswith(_MARKED, na=False).to_numpy(dtype=bool)
        out = column.to_numpy(dtype=object, na_value=None)
    else:
        out = column.to_numpy(dtype=object, na_value=None)
        kind = pd.api.types.infer_dtype(out, skipna=True)
        if kind not in _WITH_STRINGS:
            return out.tolist()  # no string in it (numbers, lists of numbers, nothing)
        strings = out[pd.notna(out)] if kind == "string" else \
            [v for v in out if isinstance(v, str)]  # (lists of coordinates are not searched)
        joined = "\x1f".join(strings)
        if CONVERTER_PREFIX not in joined and INERT_MARK not in joined:
            return out.tolist()
        hit = pd.Series(out, dtype=object).str.startswith(_MARKED, na=False).to_numpy(dtype=bool)
    if hit.any():
        out = out.copy()
        out[hit] = INERT_MARK + out[hit]
    return out.tolist()


# -- records ----------------------------------------------------------------------------------


def _column_list(series: pd.Series) -> list:
    """Return a column as plain Python values for JSON (missing values as None), strings inert."""
    if isinstance(series.dtype, np.dtype) and series.dtype.kind in "biuf":
        return series.to_numpy().tolist()
    return inert_strings(series)


def records(frame: pd.DataFrame) -> list[dict[str, Any]]:
    """Rows of *frame* as deck.gl's data: a list of ``{column: value}`` objects.

    The same as ``frame.to_dict(orient="records")`` (what pydeck does with a frame), built from
    whole columns at once, several times faster on the map's tens of thousands of rows. Every
    string value and column name is made inert (:func:`inert_value`): an id or a name typed as
    ``@@=f()`` is drawn as that text, never run as an expression. Nested values are meant to
    be numbers (coordinates, colours): nested strings are only made inert by :func:`data_layer`
    for list data.
    """
    names = [inert_value(str(c)) for c in frame.columns]
    columns = [_column_list(frame[c]) for c in frame.columns]
    return [dict(zip(names, row, strict=True)) for row in zip(*columns, strict=True)]


def data_layer(kind: str, data: Any = None, **props: Any) -> pdk.Layer:
    """Return a pydeck layer whose data is inert: every map layer of the twin is made here.

    A frame *data* becomes :func:`records`; a list of records goes through :func:`inert_value`;
    a string (a URL pydeck would load) or None is passed as is. *props* are the layer's own
    (accessor strings such as ``"[lon, lat]"`` are pydeck's expressions on purpose).
    """
    if isinstance(data, pd.DataFrame):
        data = records(data)
    elif isinstance(data, (list, tuple, Mapping)):
        data = inert_value(data)
    layer = pdk.Layer(kind, data, **props)
    _INERT_LAYERS.add(layer)
    return layer


def _made_inert(layer: pdk.Layer) -> pdk.Layer:
    """*layer* with inert data: layers not made by :func:`data_layer` are converted here."""
    if layer not in _INERT_LAYERS:
        data = layer.data
        if isinstance(data, (list, tuple, Mapping)):
            layer.data = inert_value(data)
        _INERT_LAYERS.add(layer)
    return layer


_layer = data_layer  # the builders below call it by its short name
#: Layers whose data is already inert (made by :func:`data_layer`, or converted once).
_INERT_LAYERS: weakref.WeakSet[pdk.Layer] = weakref.WeakSet()


# -- ids --------------------------------------------------------------------------------------


def layer_id(spec: LayerSpec, kind: str) -> str:
    """Return the deck layer id of *spec*'s geometries of *kind*.

    The declared geometry type gets the bare layer name (what selection reports); the other
    allowed types get ``<name>-<kind>`` (``parking-point``).
    """
    return spec.name if kind == spec.geometry_type else f"{spec.name}-{kind.lower()}"


def layer_name(deck_layer_id: str) -> str:
    """Return the declared layer a deck layer id belongs to (inverse of :func:`layer_id`)."""
    return deck_layer_id.split("-", 1)[0]


# -- tooltips ---------------------------------------------------------------------------------


def _as_text(series: pd.Series) -> pd.Series:
    """Values as display strings (``18.0`` → ``18``, ``0.857`` → ``0.86``), missing as NA."""
    return pd.Series(_text_values(series), index=series.index, dtype="string")


def _text_values(series: pd.Series) -> np.ndarray:
    """:func:`_as_text` as an object array, None where missing or empty.

    Numbers and object columns are turned into text by ``str()`` of each value, as
    ``astype("string")`` does, without its per-value overhead (the slowest step of a tooltip);
    numbers are rounded to two decimals first and lose a trailing ``.0``.
    """
    if pd.api.types.is_bool_dtype(series.dtype):
        text = series.astype("string").to_numpy(dtype=object, na_value=None)
    elif pd.api.types.is_numeric_dtype(series.dtype):
        number = pd.to_numeric(series, errors="coerce").astype("Float64").round(2)
        values = number.to_numpy(dtype="float64", na_value=np.nan).tolist()
        text = [None if v != v else str(v).removesuffix(".0") for v in values]
    elif series.dtype == object:
        values = series.to_numpy()
        missing = pd.isna(values).tolist()
        text = [None if gone else v if type(v) is str else str(v)
                for v, gone in zip(values.tolist(), missing, strict=True)]
    else:
        text = series.astype("string").to_numpy(dtype=object, na_value=None)
    out = np.empty(len(series), dtype=object)
    out[:] = text
    out[(out == "") | series.isna().to_numpy(dtype=bool)] = None
    return out


def tooltip_text(spec: LayerSpec, frame: pd.DataFrame, lang: str = "zh-CN") -> pd.Series:
    """Return every feature's hover text: the layer title, then ``label: value`` per tooltip field.

    Lines are separated by newlines; empty values are left out. The text is shown with the
    tooltip's ``text`` mode, which the browser inserts as text (``innerText``), never parsed as
    HTML, so values from outside (``<img onerror=…>``) cannot run. Built with vectorised pandas
    string operations, one per field.
    """
    fields = [f for f in spec.tooltip if f in frame]
    if len(frame) == 0 or not fields:
        return pd.Series(spec.title(lang), index=frame.index, dtype=object)
    key = (spec.name, lang, tuple(fields), len(frame),
           pd.util.hash_pandas_object(frame[fields].astype(object), index=False).to_numpy()
           .tobytes())  # every row's hash in order: the same rows in another order differ
    text = _TOOLTIPS.get(key, lambda: _tooltip_text(spec, frame[fields], lang))
    return pd.Series(text, index=frame.index, dtype=object)


def _tooltip_text(spec: LayerSpec, frame: pd.DataFrame, lang: str) -> np.ndarray:
    out = np.full(len(frame), spec.title(lang), dtype=object)
    for field in frame.columns:
        out = _append_line(out, spec.column(field).label(lang), frame[field])
    return out


def _append_line(texts: np.ndarray, label: str, values: Any) -> np.ndarray:
    r"""Return *texts* with a ``\nlabel: value`` line where the value is not empty."""
    text = _text_values(pd.Series(values).reset_index(drop=True))
    known = text != None  # noqa: E711 - elementwise on an object array
    out = texts.copy()
    out[known] = out[known] + ("\n" + label + ": ") + text[known]
    return out


# -- geometry → deck data ---------------------------------------------------------------------


def display_xy(lon: Any, lat: Any, crs: str = "wgs84") -> tuple[np.ndarray, np.ndarray]:
    """Longitudes and latitudes (WGS84) as drawn: unchanged, or in GCJ-02 (vectorised), rounded.

    Raises
    ------
    ConfigError
        If *crs* is not one of :data:`DISPLAY_CRS`.
    """
    x = np.asarray(lon, dtype="float64")
    y = np.asarray(lat, dtype="float64")
    if _display_crs(crs) == "gcj02" and len(x):
        x, y = wgs84_to_gcj02(x, y)
    return np.round(x, COORD_DECIMALS), np.round(y, COORD_DECIMALS)


def _display_crs(crs: str | None) -> str:
    name = (crs or "wgs84").strip().lower().replace("-", "")
    name = {"wgs84": "wgs84", "epsg:4326": "wgs84", "4326": "wgs84", "gcj02": "gcj02"}.get(name)
    if name is None:
        from twin.errors import ConfigError

        raise ConfigError(f"unknown display CRS {crs!r}; choose one of {', '.join(DISPLAY_CRS)} "
                          "(TWIN_TILE_CRS=gcj02 for AMap, Tencent or other Chinese web tiles)")
    return name


def _coords(values: np.ndarray, simplify_m: float, crs: str) -> tuple[np.ndarray, tuple]:
    if simplify_m > 0:
        values = shapely.simplify(values, simplify_m / M_PER_DEGREE, preserve_topology=True)
    _, coords, offsets = shapely.to_ragged_array(values, include_z=False)
    x, y = display_xy(coords[:, 0], coords[:, 1], crs)
    return np.column_stack([x, y]), offsets


def polygon_rings(values: np.ndarray, *, simplify_m: float = 0.0, crs: str = "wgs84"
                  ) -> list[list[list[list[float]]]]:
    """Return polygons as deck.gl ``[ring][vertex][lon, lat]`` lists, outer ring first, then holes.

    Coordinates come out of GEOS in one vectorised call (``to_ragged_array``); the nesting is
    list slicing of one flat coordinate list. *simplify_m* simplifies first (metres, topology
    kept); *crs* ``gcj02`` shifts the coordinates for Chinese web tiles.
    """
    if len(values) == 0:
        return []
    coords, (ring_offsets, poly_offsets) = _coords(values, simplify_m, crs)
    flat = coords.tolist()
    ring_bounds = zip(ring_offsets[:-1].tolist(), ring_offsets[1:].tolist(), strict=True)
    rings = [flat[a:b] for a, b in ring_bounds]
    poly_bounds = zip(poly_offsets[:-1].tolist(), poly_offsets[1:].tolist(), strict=True)
    return [rings[a:b] for a, b in poly_bounds]


#: Rings of the thematic map's polygons, kept for the same geometries (see :func:`_rings_of`).
_RINGS = LRUCache(16)


def _rings_of(values: Any, simplify_m: float, crs: str) -> list[list[list[list[float]]]]:
    """:func:`polygon_rings` of *values*, computed once for the same geometry objects.

    The cockpit's grids, buildings and parking lots are rows of the same layer frame rerun
    after rerun: their shapely geometries (immutable) are the very same objects, so their
    addresses are the key. The entry holds the array, so no address is reused while it lives.
    The lists are shared by every map made from them: only read, never changed.
    """
    array = np.asarray(values, dtype=object)
    key = (array.tobytes(), simplify_m, crs)
    return _RINGS.get(key, lambda: (array, polygon_rings(array, simplify_m=simplify_m,
                                                          crs=crs)))[1]


def line_paths(values: np.ndarray, *, simplify_m: float = 0.0, crs: str = "wgs84"
               ) -> list[list[list[float]]]:
    """Return LineStrings as deck.gl ``[vertex][lon, lat]`` lists (coordinates in one call)."""
    if len(values) == 0:
        return []
    coords, (offsets,) = _coords(values, simplify_m, crs)
    flat = coords.tolist()
    return [flat[a:b] for a, b in zip(offsets[:-1].tolist(), offsets[1:].tolist(), strict=True)]


def _single_part(frame: gpd.GeoDataFrame) -> gpd.GeoDataFrame:
    """Multi-part geometries split into parts (each part keeps its feature's attributes)."""
    values = frame.geometry.values
    if (shapely.get_type_id(values) >= 4).any():
        return frame.explode(index_parts=False)
    return frame


def _base_columns(spec: LayerSpec, frame: gpd.GeoDataFrame, lang: str) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "id": frame[spec.id_field].astype("string").astype(object).to_numpy(),
            "tooltip": tooltip_text(spec, frame, lang).to_numpy(),
        }
    )


def _elevation(spec: LayerSpec, frame: pd.DataFrame) -> np.ndarray:
    """Extrusion heights in metres: the ``extrude_by`` column, else 3 m a floor, else 3 m."""
    height = pd.to_numeric(frame[spec.style.extrude_by], errors="coerce").astype("float64")
    if "floors" in frame:
        height = height.fillna(pd.to_numeric(frame["floors"], errors="coerce") * 3.0)
    return height.fillna(3.0).clip(lower=0.5).round(1).to_numpy()


def _polygon_layer(spec: LayerSpec, frame: gpd.GeoDataFrame, lang: str, crs: str = "wgs84",
                   simplify_m: float = 0.0) -> pdk.Layer:
    style = spec.style
    data = _base_columns(spec, frame, lang)
    data["polygon"] = polygon_rings(frame.geometry.values, simplify_m=simplify_m, crs=crs)
    extruded = bool(style.extrude_by) and style.extrude_by in frame
    props: dict[str, Any] = {}
    if extruded:
        data["elevation"] = _elevation(spec, frame)
        props = {"get_elevation": "elevation", "material": True}
    return _layer(
        "PolygonLayer",
        data,
        id=layer_id(spec, "Polygon"),
        get_polygon="polygon",
        filled=style.fill[3] > 0,
        stroked=True,
        extruded=extruded,
        get_fill_color=list(style.fill),
        get_line_color=list(style.line),
        get_line_width=style.line_width_m,
        line_width_units="'meters'",
        line_width_min_pixels=1,
        pickable=True,
        auto_highlight=True,
        highlight_color=[255, 255, 255, 90],
        **props,
    )


def _point_layer(spec: LayerSpec, frame: gpd.GeoDataFrame, lang: str, crs: str = "wgs84",
                 simplify_m: float = 0.0) -> pdk.Layer:
    style = spec.style
    data = _base_columns(spec, frame, lang)
    xy = shapely.get_coordinates(frame.geometry.values)
    data["lon"], data["lat"] = display_xy(xy[:, 0], xy[:, 1], crs)
    return _layer(
        "ScatterplotLayer",
        data,
        id=layer_id(spec, "Point"),
        get_position="[lon, lat]",
        get_radius=style.radius_m,
        radius_units="'meters'",
        radius_min_pixels=3,
        filled=True,
        stroked=True,
        get_fill_color=list(style.fill),
        get_line_color=list(style.line),
        line_width_min_pixels=1,
        pickable=True,
        auto_highlight=True,
        highlight_color=[255, 255, 255, 120],
    )


def _path_layer(spec: LayerSpec, frame: gpd.GeoDataFrame, lang: str, crs: str = "wgs84",
                simplify_m: float = 0.0) -> pdk.Layer:
    style = spec.style
    data = _base_columns(spec, frame, lang)
    data["path"] = line_paths(frame.geometry.values, simplify_m=simplify_m, crs=crs)
    width: Any = style.line_width_m
    if "width_m" in frame:
        data["width"] = (
            pd.to_numeric(frame["width_m"], errors="coerce").fillna(style.line_width_m).to_numpy()
        )
        width = "width"
    return _layer(
        "PathLayer",
        data,
        id=layer_id(spec, "LineString"),
        get_path="path",
        get_color=list(style.line),
        get_width=width,
        width_units="'meters'",
        width_min_pixels=1.5,
        cap_rounded=True,
        joint_rounded=True,
        pickable=True,
        auto_highlight=True,
        highlight_color=[255, 255, 255, 120],
    )


_BUILDERS = {"Polygon": _polygon_layer, "Point": _point_layer, "LineString": _path_layer}


def spec_layers(spec: LayerSpec, frame: gpd.GeoDataFrame, lang: str = "zh-CN", *,
                crs: str = "wgs84", simplify_m: float = 0.0) -> list[pdk.Layer]:
    """Return the deck layers of one declared layer: one per geometry kind, plus camera cones.

    Parameters
    ----------
    spec
        The layer's declaration; its ``style`` sets colours, sizes and extrusion.
    frame
        The layer's features in EPSG:4326, as the store returns them.
    lang
        ``zh-CN`` or ``en``: the language of the tooltips.
    crs
        ``wgs84`` (as stored) or ``gcj02`` (to line up with Chinese web tiles).
    simplify_m
        Simplify polygons and lines to this many metres first (0: as stored).

    Returns
    -------
    list of pydeck.Layer
        Each with ``id`` (see :func:`layer_id`) and only the columns it draws: ``id``,
        ``tooltip`` and its coordinates (plus ``elevation`` / ``width`` where styled).
    """
    if spec.geometry_type is None or len(frame) == 0:
        return []
    if frame.crs is not None and not frame.crs.equals("EPSG:4326"):
        frame = frame.to_crs(4326)
    frame = _single_part(frame)
    type_ids = shapely.get_type_id(frame.geometry.values)
    kinds = pd.Series(type_ids).map(_KIND_OF_TYPE_ID).to_numpy()
    out: list[pdk.Layer] = []
    if spec.name == "cameras":
        cones = camera_cones(frame[kinds == "Point"])
        if len(cones):
            out.append(_cone_layer(spec, cones, crs))
    order = [spec.geometry_type, *(k for k in ("Polygon", "LineString", "Point")
                                   if k != spec.geometry_type)]
    for kind in order:
        mask = kinds == kind
        if mask.any():
            out.append(_BUILDERS[kind](spec, frame[mask], lang, crs, simplify_m))
    return out


# -- camera view cones ------------------------------------------------------------------------


def _cone_layer(spec: LayerSpec, cones: gpd.GeoDataFrame, crs: str = "wgs84") -> pdk.Layer:
    r, g, b, _ = spec.style.fill
    data = pd.DataFrame({"polygon": polygon_rings(cones.geometry.values, crs=crs)})
    return _layer(
        "PolygonLayer",
        data,
        id=f"{spec.name}-{CONES_SUFFIX}",
        get_polygon="polygon",
        filled=True,
        stroked=True,
        get_fill_color=[r, g, b, CONE_ALPHA],
        get_line_color=[r, g, b, 2 * CONE_ALPHA],
        get_line_width=0.5,
        line_width_units="'meters'",
        line_width_min_pixels=1,
        pickable=False,
    )


# -- the deck ---------------------------------------------------------------------------------


def _bounds(frames: Iterable[gpd.GeoDataFrame]) -> tuple[float, float, float, float] | None:
    boxes = [f.to_crs(4326).total_bounds for f in frames if len(f) and f.crs is not None]
    boxes = [b for b in boxes if np.isfinite(b).all()]
    if not boxes:
        return None
    arr = np.array(boxes)
    return (arr[:, 0].min(), arr[:, 1].min(), arr[:, 2].max(), arr[:, 3].max())


def _mercator_y(lat: float) -> float:
    lat = max(min(lat, 85.0), -85.0)
    return math.log(math.tan(math.pi / 4 + math.radians(lat) / 2))


def fit_view(
    bounds: tuple[float, float, float, float] | None,
    *,
    width: int = MAP_WIDTH,
    height: int = MAP_HEIGHT,
    padding: int = 30,
    pitch: float = 0.0,
    bearing: float = 0.0,
) -> pdk.ViewState:
    """Return a view centred on *bounds* (lon/lat) at the largest zoom that shows all of it.

    Uses deck.gl's Web Mercator convention (a 512 px world at zoom 0); the zoom is capped at 19.
    """
    if bounds is None:
        return pdk.ViewState(**DEFAULT_VIEW, pitch=pitch, bearing=bearing)
    minx, miny, maxx, maxy = bounds
    lon = (minx + maxx) / 2
    y_mid = (_mercator_y(miny) + _mercator_y(maxy)) / 2
    lat = math.degrees(2 * math.atan(math.exp(y_mid)) - math.pi / 2)
    span_x = max((maxx - minx) / 360.0, 1e-9)  # of the world's width
    span_y = max((_mercator_y(maxy) - _mercator_y(miny)) / (2 * math.pi), 1e-9)
    zoom_x = math.log2(max(width - 2 * padding, 1) / (512 * span_x))
    zoom_y = math.log2(max(height - 2 * padding, 1) / (512 * span_y))
    zoom = round(min(zoom_x, zoom_y, 19.0), 2)
    return pdk.ViewState(
        longitude=round(lon, 7), latitude=round(lat, 7), zoom=zoom, pitch=pitch, bearing=bearing
    )


def _land_layer(community: gpd.GeoDataFrame, crs: str = "wgs84",
                simplify_m: float = 0.0) -> pdk.Layer | None:
    polys = _single_part(community.to_crs(4326) if community.crs else community)
    polys = polys[shapely.get_type_id(polys.geometry.values) == 3]
    if len(polys) == 0:
        return None
    return _layer(
        "PolygonLayer",
        pd.DataFrame({"polygon": polygon_rings(polys.geometry.values, simplify_m=simplify_m,
                                               crs=crs)}),
        id=BASEMAP_LAND_ID,
        get_polygon="polygon",
        filled=True,
        stroked=False,
        get_fill_color=list(LAND_COLOR),
        pickable=False,
    )


def make_deck(
    twin_layers: Mapping[str, gpd.GeoDataFrame],
    visible: Iterable[str],
    lang: str = "zh-CN",
    view_state: pdk.ViewState | None = None,
) -> pdk.Deck:
    """Return the cockpit map: the visible layers over the twin's own basemap, with no map provider.

    Parameters
    ----------
    twin_layers
        Layer name → features (EPSG:4326), e.g. everything the store holds.
    visible
        Names of the layers to draw; drawn in the declared order (``MapStyle.z_order``).
        Names without data are ignored.
    lang
        ``zh-CN`` or ``en``, for the tooltips.
    view_state
        Where the camera starts; by default fitted to the community boundary (or to all data).

    Returns
    -------
    pydeck.Deck
        With ``map_provider=None``: no basemap tiles, nothing fetched from outside. The land is
        the community polygon; one tooltip template (``{tooltip}``) serves every layer.

    Raises
    ------
    LayerNotFoundError
        If a name in *twin_layers* or *visible* is not a declared layer.
    """
    wanted = set(visible)
    for name in wanted | set(twin_layers):
        declared.get_layer(name)
    deck_layers: list[pdk.Layer] = []
    community = twin_layers.get("community")
    if community is not None and len(community):
        land = _land_layer(community)
        if land is not None:
            deck_layers.append(land)
    for name, spec in declared.registry().items():
        if name in wanted and name in twin_layers:
            deck_layers.extend(spec_layers(spec, twin_layers[name], lang))
    if view_state is None:
        fit_to = [community] if community is not None and len(community) else twin_layers.values()
        view_state = fit_view(_bounds(fit_to))
    return offline_deck(deck_layers, view_state, tooltip=TEXT_TOOLTIP)


# -- what the map panel shows beside the deck -------------------------------------------------


def legend(names: Iterable[str], lang: str = "zh-CN") -> list[LegendEntry]:
    """Return the legend entries of the declared layers *names*, in draw order."""
    wanted = set(names)
    out = []
    for name, spec in declared.registry().items():
        if name in wanted and spec.geometry_type is not None:
            style = spec.style
            filled = style.fill[3] > 0 and spec.geometry_type != "LineString"
            color = style.fill if filled else style.line
            out.append(LegendEntry(name, spec.title(lang), tuple(color)))
    return out


def selected_feature(selection: Mapping[str, Any] | None) -> tuple[str, str] | None:
    """Return the (layer, feature id) a ``st.pydeck_chart`` selection event points at, if any.

    The id is the stored one: the mark :func:`records` put on an ``@@…`` id is taken off.
    """
    if not selection:
        return None
    objects = (selection.get("selection") or {}).get("objects") or {}
    for deck_id, picked in objects.items():
        if picked:
            first = picked[0]
            if isinstance(first, Mapping) and first.get("id") is not None:
                return layer_name(deck_id), str(plain_value(first["id"]))
    return None


def feature_table(
    spec: LayerSpec, frame: pd.DataFrame, feature_id: str, lang: str = "zh-CN"
) -> pd.DataFrame:
    """Return one feature's attributes as rows of (label, value), labelled from the spec.

    Empty values and personal columns are left out (who may see those is decided elsewhere).
    Returns an empty frame when the id is not in *frame*.
    """
    rows = frame[frame[spec.id_field].astype("string") == str(feature_id)]
    columns = [c for c in spec.all_columns if c.name in frame and not c.personal]
    if rows.empty:
        return pd.DataFrame({"label": [], "value": []})
    record = rows.iloc[0]
    labels, values = [], []
    for col in columns:  # one feature: a handful of columns, not a hot path
        value = record[col.name]
        if value is None or (not isinstance(value, (list, dict)) and pd.isna(value)) or value == "":
            continue
        labels.append(col.label(lang))
        values.append(_as_text(pd.Series([value])).iloc[0])
    return pd.DataFrame({"label": labels, "value": values})


def map_counts(twin_layers: Mapping[str, pd.DataFrame]) -> dict[str, int]:
    """Return the map's headline counts: buildings, households, cameras, sensors, unit grids."""

    def rows(name: str) -> int:
        frame = twin_layers.get(name)
        return 0 if frame is None else int(len(frame))

    buildings = twin_layers.get("buildings")
    households = 0
    if buildings is not None and "households" in buildings:
        households = int(pd.to_numeric(buildings["households"], errors="coerce").fillna(0).sum())
    return {
        "buildings": rows("buildings"),
        "households": households,
        "cameras": rows("cameras"),
        "sensors": rows("sensors"),
        "grid_cells": rows("grid_cells"),
    }


# -- the cockpit's thematic map ---------------------------------------------------------------

#: Low → middle → high of a choropleth (dark teal, amber, red), alpha included.
RAMP = ((22, 78, 99, 170), (244, 180, 0, 200), (230, 57, 70, 230))
#: Colours of case states; overdue is red, drawn largest and on top.
CASE_COLORS = {
    "open": (0, 229, 255, 220),
    "warning": (255, 193, 7, 235),
    "overdue": (255, 23, 68, 255),
    "closed": (120, 130, 140, 150),
}
SENSOR_COLORS = {"ok": (46, 204, 113, 230), "alarm": (255, 23, 68, 255),
                 "offline": (110, 110, 120, 200)}
ALARM_COLOR = (255, 0, 200, 255)
#: Parking lots by the share of free spaces: full (red) → plenty (green); unknown grey.
PARKING_EMPTY, PARKING_FULL, PARKING_UNKNOWN = (46, 204, 113, 200), (230, 57, 70, 220), \
    (110, 110, 120, 160)
#: Thematic layers of the cockpit map, in draw order (the toggles list them this way).
THEMATIC = ("grid_cells", "density", "buildings", "parking", "cameras", "sensors", "cases",
            "alarms")
DENSITY_ID = "density"
CODES_ID = "grid_cells-codes"


def ramp_colors(values: Any, low: tuple = RAMP[0], mid: tuple = RAMP[1],
                high: tuple = RAMP[2]) -> list[list[int]]:
    """RGBA colours of *values* on a three-stop ramp from 0 to their maximum (vectorised)."""
    v = pd.to_numeric(pd.Series(values), errors="coerce").fillna(0).to_numpy(dtype=float)
    top = v.max() if len(v) and v.max() > 0 else 1.0
    x = np.clip(v / top, 0, 1)[:, None]
    lo, md, hi = (np.array(c, dtype=float)[None, :] for c in (low, mid, high))
    out = np.where(x < 0.5, lo + (md - lo) * (x * 2), md + (hi - md) * ((x - 0.5) * 2))
    return np.rint(out).astype(int).tolist()


def _lines(base: pd.Series, extra: Mapping[str, pd.Series]) -> list:
    """Append ``label: value`` lines to tooltip texts (vectorised per line, empty ones left out)."""
    out = base.to_numpy(dtype=object, na_value="")
    for label, values in extra.items():
        out = _append_line(out, label, values)
    return out.tolist()


def _rows(frame: pd.DataFrame, spec_name: str | None, lang: str, title: str | None = None
          ) -> pd.Series:
    if spec_name is not None:
        return tooltip_text(declared.get_layer(spec_name), frame, lang).reset_index(drop=True)
    return pd.Series(title or "", index=range(len(frame)), dtype="string")


def _polygons(frame: gpd.GeoDataFrame) -> gpd.GeoDataFrame:
    frame = _single_part(frame)
    return frame[shapely.get_type_id(frame.geometry.values) == 3]


def grid_layers(grids: gpd.GeoDataFrame, indicator: str, labels: Mapping[str, str],
                lang: str = "zh-CN", crs: str = "wgs84") -> list[pdk.Layer]:
    """Return unit grids as a choropleth of *indicator*, with their codes written on them."""
    if len(grids) == 0:
        return []
    polys = _polygons(grids)
    data = pd.DataFrame({"id": polys["grid_code"].astype(str).to_numpy()})
    extra = {labels.get(k, k): polys[k] for k in ("open_cases", "overdue", "reports", "alarms",
                                                   "households") if k in polys}
    data["tooltip"] = _lines(_rows(polys, "grid_cells", lang), extra)
    data["polygon"] = _rings_of(polys.geometry.values, SIMPLIFY_M, crs)
    data["color"] = ramp_colors(polys[indicator].to_numpy())
    points = shapely.point_on_surface(grids.geometry.values)
    lon, lat = display_xy(shapely.get_x(points), shapely.get_y(points), crs)
    codes = pd.DataFrame({
        "lon": lon, "lat": lat, "text": grids["grid_code"].astype(str).str[-4:].to_numpy(),
    })
    return [
        _layer("PolygonLayer", data, id="grid_cells", get_polygon="polygon", filled=True,
                  stroked=True, get_fill_color="color", get_line_color=[0, 229, 255, 200],
                  get_line_width=2, line_width_units="'meters'", line_width_min_pixels=1,
                  pickable=True, auto_highlight=True, highlight_color=[255, 255, 255, 60]),
        _layer("TextLayer", codes, id=CODES_ID, get_position="[lon, lat]", get_text="text",
                  get_size=13, get_color=[230, 237, 243, 230], pickable=False,
                  font_family="'Noto Sans CJK SC', sans-serif"),
    ]


def building_layer(buildings: gpd.GeoDataFrame, metric: str, labels: Mapping[str, str],
                   lang: str = "zh-CN", extrude: bool = False, crs: str = "wgs84"
                   ) -> list[pdk.Layer]:
    """Return buildings coloured by *metric* (open cases, alarms, households), maybe extruded."""
    if len(buildings) == 0:
        return []
    polys = _polygons(buildings)
    data = pd.DataFrame({"id": polys["building_code"].astype(str).to_numpy()})
    extra = {labels.get(k, k): polys[k] for k in ("open_cases", "alarms") if k in polys}
    data["tooltip"] = _lines(_rows(polys, "buildings", lang), extra)
    data["polygon"] = _rings_of(polys.geometry.values, SIMPLIFY_M, crs)
    data["color"] = ramp_colors(polys[metric].to_numpy())
    props: dict[str, Any] = {}
    if extrude:
        data["elevation"] = _elevation(declared.get_layer("buildings"), polys)
        props = {"get_elevation": "elevation", "material": True}
    return [_layer("PolygonLayer", data, id="buildings", get_polygon="polygon", filled=True,
                      stroked=True, extruded=extrude, get_fill_color="color",
                      get_line_color=[255, 255, 255, 120], get_line_width=0.5,
                      line_width_units="'meters'", line_width_min_pixels=1, pickable=True,
                      auto_highlight=True, highlight_color=[255, 255, 255, 90], **props)]


def _scatter(layer_id: str, frame: pd.DataFrame, tooltip: list, colors: list, radius: Any,
             *, line: tuple = (14, 17, 23, 230), line_px: float = 1, min_px: float = 3,
             ids: pd.Series | None = None, crs: str = "wgs84") -> pdk.Layer:
    lon, lat = display_xy(pd.to_numeric(frame["lon"]).to_numpy(dtype=float),
                          pd.to_numeric(frame["lat"]).to_numpy(dtype=float), crs)
    data = pd.DataFrame({
        "id": (ids if ids is not None else frame["id"]).astype(str).to_numpy(),
        "tooltip": tooltip, "lon": lon, "lat": lat, "color": colors,
    })
    if not isinstance(radius, (int, float)):
        data["radius"] = radius
        radius = "radius"
    return _layer("ScatterplotLayer", data, id=layer_id, get_position="[lon, lat]",
                     get_radius=radius, radius_units="'meters'", radius_min_pixels=min_px,
                     filled=True, stroked=True, get_fill_color="color", get_line_color=list(line),
                     line_width_min_pixels=line_px, pickable=True, auto_highlight=True,
                     highlight_color=[255, 255, 255, 120])


def _xy(frame: gpd.GeoDataFrame) -> pd.DataFrame:
    points = shapely.point_on_surface(frame.geometry.values)
    return pd.DataFrame({"lon": shapely.get_x(points), "lat": shapely.get_y(points)})


def case_layers(cases: pd.DataFrame, labels: Mapping[str, str], status_names: Mapping[str, str],
                lang: str = "zh-CN", density: bool = True, crs: str = "wgs84"
                ) -> list[pdk.Layer]:
    """Cases by state (overdue red, large, white-ringed, drawn last) and a density hexagon layer."""
    if len(cases) == 0:
        return []
    order = cases["state"].map({"closed": 0, "open": 1, "warning": 2, "overdue": 3})
    frame = cases.loc[order.sort_values(kind="stable").index].reset_index(drop=True)
    state = frame["state"].astype(str)
    base = pd.Series(labels.get("case", "case"), index=frame.index, dtype="string")
    tip = _lines(base, {labels.get("id", "id"): frame["id"],
                        labels.get("state", "state"): state.map(status_names).fillna(state),
                        labels.get("category", "category"): frame["service_code"],
                        labels.get("description", "description"): frame["description"],
                        labels.get("deadline", "deadline"): pd.to_datetime(
                            frame["deadline_at"], utc=True).dt.tz_convert(local_zone())
                        .dt.strftime("%m-%d %H:%M")})
    colors = [list(CASE_COLORS.get(s, CASE_COLORS["open"])) for s in state]
    radius = np.where(state == "overdue", 9.0, np.where(state == "closed", 3.0, 5.0))
    out = []
    if density:
        live = frame.loc[state != "closed"]
        lon, lat = display_xy(pd.to_numeric(live["lon"]).to_numpy(dtype=float),
                              pd.to_numeric(live["lat"]).to_numpy(dtype=float), crs)
        pts = pd.DataFrame({"lon": lon.round(5), "lat": lat.round(5)})  # 1 m: a 40 m hexagon
        out.append(_layer("HexagonLayer", pts, id=DENSITY_ID, get_position="[lon, lat]",
                             radius=40, elevation_scale=0, extruded=False, coverage=0.9,
                             opacity=0.35, pickable=False,
                             color_range=[[22, 78, 99], [42, 120, 130], [120, 160, 90],
                                          [244, 180, 0], [240, 110, 40], [230, 57, 70]]))
    out.append(_scatter("cases", frame, tip, colors, radius,
                        line=(255, 255, 255, 255), line_px=1.5, crs=crs))
    return out


def sensor_layer(sensors: gpd.GeoDataFrame, labels: Mapping[str, str],
                 state_names: Mapping[str, str], lang: str = "zh-CN", crs: str = "wgs84"
                 ) -> list[pdk.Layer]:
    """Sensors coloured by state (ok, alarm, offline) with their live values in the tooltip."""
    if len(sensors) == 0:
        return []
    xy = _xy(sensors)
    state = sensors["state"].astype(str).reset_index(drop=True)
    tip = _lines(_rows(sensors, "sensors", lang),
                 {labels.get("state", "state"): state.map(lambda s: state_names.get(s, s)),
                  labels.get("values", "values"): sensors["values"]})
    colors = [list(SENSOR_COLORS.get(s, SENSOR_COLORS["ok"])) for s in state]
    return [_scatter("sensors", xy, tip, colors, 4.0, ids=sensors["sensor_id"], crs=crs)]


def alarm_layer(alarms: pd.DataFrame, labels: Mapping[str, str], lang: str = "zh-CN",
                crs: str = "wgs84") -> list[pdk.Layer]:
    """Open alarms: large magenta discs with a white ring, drawn above everything."""
    alarms = alarms.loc[alarms["lon"].notna() & alarms["lat"].notna()] if len(alarms) else alarms
    if len(alarms) == 0:
        return []
    frame = alarms.reset_index(drop=True)
    base = pd.Series(labels.get("alarm", "alarm"), index=frame.index, dtype="string")
    tip = _lines(base, {labels.get("source", "source"): frame["source_id"],
                        labels.get("property", "property"): frame.get("property"),
                        labels.get("value", "value"): frame.get("value"),
                        labels.get("severity", "severity"): frame.get("severity")})
    return [_scatter("alarms", frame, tip, [list(ALARM_COLOR)] * len(frame), 12.0,
                     line=(255, 255, 255, 255), line_px=2, min_px=6, crs=crs)]


def parking_layer(parking: gpd.GeoDataFrame, labels: Mapping[str, str], lang: str = "zh-CN",
                  crs: str = "wgs84") -> list[pdk.Layer]:
    """Parking lots coloured by live availability, with free / total spaces in the tooltip."""
    if len(parking) == 0:
        return []
    share = pd.to_numeric(parking["free_share"], errors="coerce").to_numpy(dtype=float)
    known = ~np.isnan(share)
    empty, full = np.array(PARKING_EMPTY, float), np.array(PARKING_FULL, float)
    mix = full + (empty - full) * np.nan_to_num(share)[:, None]
    colors = np.where(known[:, None], mix, np.array(PARKING_UNKNOWN, float))
    colors = np.rint(colors).astype(int).tolist()
    tip = _lines(_rows(parking, "parking", lang),
                 {labels.get("available", "available"): parking["available"]})
    kinds = shapely.get_type_id(parking.geometry.values)
    if (kinds == 3).all():
        data = pd.DataFrame({"id": parking["lot_id"].astype(str).to_numpy(), "tooltip": tip,
                             "polygon": _rings_of(parking.geometry.values, SIMPLIFY_M, crs),
                             "color": colors})
        return [_layer("PolygonLayer", data, id="parking", get_polygon="polygon",
                          filled=True, stroked=True, get_fill_color="color",
                          get_line_color=[255, 255, 255, 160], line_width_min_pixels=1,
                          pickable=True, auto_highlight=True)]
    return [_scatter("parking", _xy(parking), tip, colors, 10.0, ids=parking["lot_id"],
                     crs=crs)]


class CompactDeck(pdk.Deck):
    """A :class:`pydeck.Deck` whose JSON is compact: no indentation, encoded in C.

    pydeck indents its JSON (``indent=2``), which makes Python's pure-Python encoder run and
    roughly triples the bytes; Streamlit sends whatever ``to_json`` returns, so this is what
    keeps a district-scale map small and fast. The content is the same.
    """

    def to_json(self) -> str:
        if not any(layer in _FROZEN for layer in self.layers):
            return _dumps(self)
        # the same text as _dumps(self): each layer encoded alone (a frozen one once), the
        # deck around them with a one-off token in their place
        token = secrets.token_hex(16)
        attrs = default_serialize(self)
        attrs["layers"] = token
        layers = ",".join(_frozen_json(layer) if layer in _FROZEN else _dumps(layer)
                          for layer in self.layers)
        return _dumps(attrs).replace(f'"{token}"', f"[{layers}]", 1)


def _dumps(value: Any) -> str:
    return json.dumps(value, sort_keys=True, default=default_serialize, separators=(",", ":"))


#: Layers built once and only read after (:func:`_static`); their JSON is encoded once.
_FROZEN: weakref.WeakSet[pdk.Layer] = weakref.WeakSet()
_FROZEN_JSON: weakref.WeakKeyDictionary[pdk.Layer, str] = weakref.WeakKeyDictionary()


def _frozen_json(layer: pdk.Layer) -> str:
    text = _FROZEN_JSON.get(layer)
    if text is None:
        text = _FROZEN_JSON[layer] = _dumps(layer)
    return text


def offline_deck(layers: list[pdk.Layer], view_state: pdk.ViewState | Mapping[str, Any], *,
                 tooltip: Mapping[str, Any] | bool = False, height: int = MAP_HEIGHT
                 ) -> CompactDeck:
    """Return a deck that fetches nothing from outside: every map of the twin is made here.

    No map provider, and pydeck's map-style sentinel left in place: Streamlit reads the sentinel
    as "no basemap". Any other style, ``None`` included, makes Streamlit fetch CARTO's style from
    the internet, which an offline cockpit (and a resident's privacy) must never do. The data of
    every layer is inert (:func:`inert_value`), also of layers a page made with ``pdk.Layer``.
    """
    layers = [_made_inert(layer) for layer in layers]
    return CompactDeck(layers=layers, initial_view_state=view_state, map_provider=None,
                       tooltip=tooltip, height=height)


_TOOLTIPS = LRUCache(32)


def _static(name: str, frame: gpd.GeoDataFrame, lang: str, crs: str,
            make: Callable[[], list[pdk.Layer]]) -> list[pdk.Layer]:
    """Return layers drawn from one layer frame alone (land, roads, cameras), built once.

    Once per frame, language and display CRS, and only read after: their JSON is encoded once
    too (:class:`CompactDeck`).
    """

    def frozen() -> list[pdk.Layer]:
        made = make()
        _FROZEN.update(layer for layer in made if isinstance(layer, pdk.Layer))
        return made

    return layercache.of_frame(frame, ("basemap", name, lang, crs), frozen)


def tile_bounds(x: np.ndarray, y: np.ndarray, z: int) -> np.ndarray:
    """Web Mercator tiles (x, y, z) → ``[west, south, east, north]`` in degrees (vectorised)."""
    n = 2.0 ** z
    x = np.asarray(x, dtype=float)
    y = np.asarray(y, dtype=float)

    def lat(row: np.ndarray) -> np.ndarray:
        return np.degrees(np.arctan(np.sinh(np.pi * (1 - 2 * row / n))))

    return np.column_stack([x / n * 360 - 180, lat(y + 1), (x + 1) / n * 360 - 180, lat(y)])


def tile_layers(url: str, bounds: tuple[float, float, float, float], zoom: float,
                max_tiles: int = MAX_TILES) -> list[pdk.Layer]:
    """Return a raster basemap from a tile URL template: one BitmapLayer per tile over *bounds*.

    deck.gl's ``TileLayer`` cannot draw images from pydeck's JSON (its sub-layers are made by a
    JavaScript callback), so the tiles covering the view are listed here at the view's zoom (one
    level finer for sharpness), coarser until at most *max_tiles* are needed. *url* holds
    ``{z}``, ``{x}`` and ``{y}`` (``{s}`` becomes ``a``). The tiles are in the tile provider's
    own datum: GCJ-02 providers need the twin drawn in GCJ-02 (``TWIN_TILE_CRS=gcj02``).
    """
    minx, miny, maxx, maxy = bounds
    z = int(min(max(math.ceil(zoom) + 1, 1), 19))
    while True:
        n = 2 ** z
        xs = np.clip(np.floor((np.array([minx, maxx]) + 180) / 360 * n), 0, n - 1).astype(int)
        merc = np.log(np.tan(np.pi / 4 + np.radians(np.clip([maxy, miny], -85, 85)) / 2))
        ys = np.clip(np.floor((1 - merc / np.pi) / 2 * n), 0, n - 1).astype(int)
        count = (xs[1] - xs[0] + 1) * (ys[1] - ys[0] + 1)
        if count <= max_tiles or z == 0:
            break
        z -= 1
    gx, gy = np.meshgrid(np.arange(xs[0], xs[1] + 1), np.arange(ys[0], ys[1] + 1))
    gx, gy = gx.ravel(), gy.ravel()
    boxes = np.round(tile_bounds(gx, gy, z), 7).tolist()
    template = url.replace("{s}", "a")
    return [
        _layer("BitmapLayer", None, id=f"{TILES_ID}-{z}-{x}-{y}",
                  image=template.replace("{z}", str(z)).replace("{x}", str(x))
                  .replace("{y}", str(y)), bounds=box, pickable=False)
        for x, y, box in zip(gx.tolist(), gy.tolist(), boxes, strict=True)
    ]


def display_bounds(bounds: tuple[float, float, float, float] | None, crs: str = "wgs84"
                   ) -> tuple[float, float, float, float] | None:
    """*bounds* (WGS84) as drawn in the display *crs* (corners shifted to GCJ-02 when asked)."""
    if bounds is None:
        return None
    x, y = display_xy([bounds[0], bounds[2]], [bounds[1], bounds[3]], crs)
    return (float(x[0]), float(y[0]), float(x[1]), float(y[1]))


def thematic_deck(
    data: Any,
    visible: Iterable[str],
    labels: Mapping[str, str],
    lang: str = "zh-CN",
    *,
    building_metric: str = "open_cases",
    grid_indicator: str = "open_cases",
    extrude: bool = False,
    view_state: pdk.ViewState | None = None,
    status_names: Mapping[str, str] | None = None,
    state_names: Mapping[str, str] | None = None,
    height: int = MAP_HEIGHT,
    tile_url: str | None = None,
    tile_crs: str | None = None,
    selected: tuple[str, str] | None = None,
) -> pdk.Deck:
    """Return the cockpit map of a :class:`twin.cockpit.CockpitData`, offline unless tiles are set.

    Basemap (land, roads) always; then the visible thematic layers of :data:`THEMATIC` in
    that order, each with ``id`` and the common ``tooltip`` column only. *labels* gives the
    tooltip labels (the page takes them from the catalogs).

    Parameters
    ----------
    data
        What :func:`twin.cockpit.cockpit_data` built.
    visible
        The thematic layers to draw (names of :data:`THEMATIC`).
    labels
        Tooltip labels by indicator or field name (from the catalogs).
    lang
        ``zh-CN`` or ``en``: the language of the tooltips.
    building_metric, grid_indicator
        What buildings and unit grids are coloured by.
    extrude
        Extrude buildings by their height.
    view_state
        The kept view; default fitted to the grids in scope.
    status_names, state_names
        Case status and sensor state names shown in tooltips.
    height
        Map height in pixels.
    tile_url
        A raster tile URL template (``…/{z}/{x}/{y}.png``) drawn under everything; default the
        ``tile_url`` setting (``TWIN_TILE_URL``). Empty: no tiles, no request leaves the machine.
    tile_crs
        ``wgs84`` or ``gcj02``: the datum of the tiles; with ``gcj02`` every coordinate of the
        twin is shifted to GCJ-02 so it lines up with Chinese web maps. Default the ``tile_crs``
        setting (``TWIN_TILE_CRS``). Ignored without a tile URL.
    selected
        The (layer, id) picked on the map (:func:`selected_feature`): a unit grid or building
        picked is outlined on top of everything, so it stays marked while its details are read.

    Returns
    -------
    CompactDeck
        With ``map_provider=None`` and compact JSON.
    """
    wanted = set(visible)
    url = settings.get("tile_url") if tile_url is None else tile_url
    crs = _display_crs((settings.get("tile_crs") if tile_crs is None else tile_crs)
                       if url else "wgs84")
    base = data.layers
    layers_out: list[pdk.Layer] = []
    community = base.get("community")
    if view_state is None:
        fit = data.grids if len(data.grids) else community
        box = _bounds([fit]) if fit is not None else None
        view_state = fit_view(display_bounds(box, crs), height=height)
    if url:
        box = _bounds([data.grids]) if len(data.grids) else None
        if box is None and community is not None and len(community):
            box = _bounds([community])
        if box is not None:
            layers_out.extend(tile_layers(url, display_bounds(box, crs), view_state.zoom))
    if community is not None and len(community) and not url:
        layers_out.extend(_static("land", community, "", crs, lambda: [
            x for x in [_land_layer(community, crs, SIMPLIFY_M)] if x is not None]))
    if "roads" in base:
        roads = base["roads"]
        layers_out.extend(_static("roads", roads, lang, crs, lambda: spec_layers(
            declared.get_layer("roads"), roads, lang, crs=crs, simplify_m=SIMPLIFY_M)))
    if "grid_cells" in wanted:
        layers_out.extend(grid_layers(data.grids, grid_indicator, labels, lang, crs))
    if "buildings" in wanted:
        layers_out.extend(building_layer(data.buildings, building_metric, labels, lang, extrude,
                                         crs))
    if "parking" in wanted and len(data.parking) and "geometry" in data.parking:
        layers_out.extend(parking_layer(data.parking, labels, lang, crs))
    if "cameras" in wanted and "cameras" in base and len(base["cameras"]):
        cameras = base["cameras"]
        layers_out.extend(_static("cameras", cameras, lang, crs, lambda: spec_layers(
            declared.get_layer("cameras"), cameras, lang, crs=crs)))
    if "sensors" in wanted and len(data.sensors) and "geometry" in data.sensors:
        layers_out.extend(sensor_layer(data.sensors, labels, state_names or {}, lang, crs))
    if {"cases", "density"} & wanted:
        made = case_layers(data.cases, labels, status_names or {}, lang,
                           density="density" in wanted, crs=crs)
        layers_out.extend(x for x in made if x.id != "cases" or "cases" in wanted)
    if "alarms" in wanted:
        layers_out.extend(alarm_layer(data.alarms, labels, lang, crs))
    if selected is not None and selected[0] in wanted:
        layers_out.extend(selected_layers(data, selected, crs))
    return offline_deck(layers_out, view_state, tooltip=TEXT_TOOLTIP, height=height)


#: The deck layer id and colour of the outline of the feature picked on the map.
SELECTED_ID = "selected"
SELECTED_COLOR = (255, 255, 255, 255)


def selected_layers(data: Any, picked: tuple[str, str], crs: str = "wgs84") -> list[pdk.Layer]:
    """Return the outline of the unit grid or building *picked* (layer, id), if it is shown.

    Not pickable: a click goes to the shapes below, as before. Other layers (points) have
    none: deck.gl's hover highlight marks them well enough at their size.
    """
    frames = {"grid_cells": (data.grids, "grid_code"),
              "buildings": (data.buildings, "building_code")}
    name, feature_id = picked
    frame, id_field = frames.get(name, (None, None))
    if frame is None or id_field not in frame or not len(frame):
        return []
    shapes = _polygons(frame[frame[id_field].astype(str).to_numpy() == str(feature_id)])
    if shapes.empty:
        return []
    outline = pd.DataFrame({"polygon": _rings_of(shapes.geometry.values, SIMPLIFY_M, crs)})
    return [_layer("PolygonLayer", outline, id=SELECTED_ID, get_polygon="polygon",
                   filled=False, stroked=True, get_line_color=list(SELECTED_COLOR),
                   get_line_width=3, line_width_units="'pixels'", pickable=False)]


# -- labels of the big screen (names on grids and buildings) ------------------------------------

#: Layer ids of the name labels (not pickable: tooltips stay those of the shapes below).
GRID_NAMES_ID = "grid_cells-names"
BUILDING_NAMES_ID = "buildings-names"
#: The font of map labels: the machine's Noto CJK (fonts-noto-cjk), nothing fetched.
LABEL_FONT = "'Noto Sans CJK SC', 'Noto Sans SC', 'Microsoft YaHei', sans-serif"


def name_labels(frame: gpd.GeoDataFrame, text: pd.Series, layer_id: str, *, size: float = 14,
                color: tuple[int, ...] = (230, 237, 243, 235), crs: str = "wgs84") -> pdk.Layer:
    """Return a TextLayer writing *text* on each feature of *frame* (at a point on its surface).

    deck.gl's TextLayer draws only the characters of its font atlas, by default ASCII: Chinese
    names need ``characterSet: "auto"`` (the atlas is built from the strings shown). The text is
    inert like every value on the map, with a dark outline so it reads on any fill.

    Parameters
    ----------
    frame
        Features with a geometry (grid cells, buildings) in EPSG:4326.
    text
        One label per row of *frame* (empty labels are left out).
    layer_id
        The deck layer id (:data:`GRID_NAMES_ID`, :data:`BUILDING_NAMES_ID`).
    size, color
        Pixel size and RGBA colour of the text.
    crs
        The display datum (``wgs84`` or ``gcj02``).
    """
    labels = pd.Series(text, index=frame.index).fillna("").astype(str)
    keep = labels.str.strip().ne("").to_numpy() & ~frame.geometry.is_empty.to_numpy()
    shown = frame.loc[keep]
    points = shapely.point_on_surface(shown.geometry.values)
    lon, lat = display_xy(shapely.get_x(points), shapely.get_y(points), crs)
    data = pd.DataFrame({"lon": lon, "lat": lat, "text": labels[keep].to_numpy()})
    return _layer("TextLayer", data, id=layer_id, get_position="[lon, lat]", get_text="text",
                  get_size=size, get_color=list(color), pickable=False, character_set="'auto'",
                  font_family=f'"{LABEL_FONT}"', font_weight=600, outline_width=3,
                  outline_color=[14, 17, 23, 255], font_settings={"sdf": True},
                  get_text_anchor="'middle'", get_alignment_baseline="'center'",
                  billboard=True)
