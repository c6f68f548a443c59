"""Tap-to-pick maps: a place chosen by tapping the map (phones), and a case's small map.

``st.pydeck_chart(on_select="rerun")`` reports picked *objects*, never the tapped coordinate.
So the picker lays a nearly transparent, pickable layer of small tap targets (discs of
:data:`CELL_M` metres, centred on a square lattice, so they cover the grids without gaps) over
the grids; the object a tap picks carries its centre's longitude and latitude. The targets are
built once per grid frame and cell size, vectorised (numpy lattice, ``shapely.contains_xy``,
one pyproj transform).
"""

from __future__ import annotations

import math
from functools import lru_cache

import geopandas as gpd
import numpy as np
import pandas as pd
import shapely
import streamlit as st
from pyproj import Transformer

from twin import deck
from twin.crs import local_metric_crs

#: Side of one tap target's lattice cell, metres: finer than a building, coarse enough to send.
CELL_M = 12.0
PICKER_ID = "picker"
MARKER_COLOR = [230, 57, 70, 255]
GRID_LINE = [0, 229, 255, 220]


def _lattice(geoms: tuple, size_m: float) -> pd.DataFrame:
    """Centres (lon, lat) of a square lattice of *size_m* metres inside the union of *geoms*."""
    series = gpd.GeoSeries(list(geoms), crs=4326)
    metric = local_metric_crs(series)
    shape = series.to_crs(metric).union_all()
    minx, miny, maxx, maxy = shape.bounds
    xs = np.arange(minx + size_m / 2, maxx, size_m)
    ys = np.arange(miny + size_m / 2, maxy, size_m)
    gx, gy = np.meshgrid(xs, ys)
    gx, gy = gx.ravel(), gy.ravel()
    shapely.prepare(shape)
    inside = shapely.contains_xy(shape, gx, gy)
    back = Transformer.from_crs(metric, 4326, always_xy=True)
    lon, lat = back.transform(gx[inside], gy[inside])
    return pd.DataFrame({"lon": np.round(lon, 7), "lat": np.round(lat, 7)})


@lru_cache(maxsize=8)
def _cached_lattice(geoms: tuple, size_m: float) -> pd.DataFrame:
    return _lattice(geoms, size_m)  # shapely geometries hash by value: same grids, same targets


def tap_targets(grid_cells: gpd.GeoDataFrame, size_m: float = CELL_M) -> pd.DataFrame:
    """Return the tap targets over *grid_cells*: one ``lon``/``lat`` centre per lattice cell."""
    geoms = tuple(grid_cells.to_crs(4326).geometry.values)
    return _cached_lattice(geoms, float(size_m))


def _grid_layer(grid_cells: gpd.GeoDataFrame, highlight: str | None = None) -> list:
    cells = grid_cells.to_crs(4326)
    polys = cells.loc[shapely.get_type_id(cells.geometry.values) == 3]
    if len(polys) == 0:
        return []
    chosen = polys["grid_code"].astype(str).eq(str(highlight)).to_numpy()
    fill = np.where(chosen[:, None], [[0, 229, 255, 70]], [[0, 229, 255, 18]]).tolist()
    data = pd.DataFrame({"id": polys["grid_code"].astype(str).to_numpy(),
                         "polygon": deck.polygon_rings(polys.geometry.values), "color": fill})
    points = shapely.point_on_surface(polys.geometry.values)
    names = polys["name"] if "name" in polys else polys["grid_code"]
    labels = pd.DataFrame({"lon": shapely.get_x(points), "lat": shapely.get_y(points),
                           "text": names.astype(str).to_numpy()})
    return [
        deck.data_layer("PolygonLayer", data, id="picker-grids", get_polygon="polygon",
                        filled=True, stroked=True, get_fill_color="color",
                        get_line_color=GRID_LINE, line_width_min_pixels=1.5, pickable=False),
        deck.data_layer("TextLayer", labels, id="picker-grid-names", get_position="[lon, lat]",
                        get_text="text", get_size=13, get_color=[230, 237, 243, 230],
                        pickable=False, character_set="auto",
                        font_family="'Noto Sans CJK SC', sans-serif"),
    ]


def _buildings_layer(buildings: gpd.GeoDataFrame | None) -> list:
    if buildings is None or len(buildings) == 0:
        return []
    polys = buildings.to_crs(4326)
    polys = polys.loc[shapely.get_type_id(polys.geometry.values) == 3]
    data = pd.DataFrame({"polygon": deck.polygon_rings(polys.geometry.values,
                                                       simplify_m=deck.SIMPLIFY_M)})
    return [deck.data_layer("PolygonLayer", data, id="picker-buildings", get_polygon="polygon",
                            filled=True, stroked=True, get_fill_color=[120, 130, 150, 120],
                            get_line_color=[255, 255, 255, 90], line_width_min_pixels=1,
                            pickable=False)]


def _points(lon: float, lat: float) -> pd.DataFrame:
    return pd.DataFrame({"lon": [float(lon)], "lat": [float(lat)]})


def _marker(lon: float, lat: float, layer_id: str = "picker-marker") -> list:
    return [deck.data_layer("ScatterplotLayer", _points(lon, lat), id=layer_id,
                            get_position="[lon, lat]", get_radius=7, radius_units="'meters'",
                            radius_min_pixels=8, get_fill_color=MARKER_COLOR, stroked=True,
                            get_line_color=[255, 255, 255, 255], line_width_min_pixels=2,
                            pickable=False)]


def _cases_layer(cases: pd.DataFrame | None) -> list:
    if cases is None or len(cases) == 0:
        return []
    pts = pd.DataFrame({"id": cases["id"].astype(str).to_numpy(),
                        "lon": pd.to_numeric(cases["lon"]).to_numpy(),
                        "lat": pd.to_numeric(cases["lat"]).to_numpy()})
    state = cases["state"].astype(str).to_numpy() if "state" in cases else np.full(len(pts),
                                                                                   "open")
    pts["color"] = [list(deck.CASE_COLORS.get(s, deck.CASE_COLORS["open"])) for s in state]
    return [deck.data_layer("ScatterplotLayer", pts, id="picker-cases",
                            get_position="[lon, lat]", get_radius=4, radius_units="'meters'",
                            radius_min_pixels=4, get_fill_color="color", pickable=False)]


def _view(grid_cells: gpd.GeoDataFrame, height: int, width: int):
    bounds = tuple(grid_cells.to_crs(4326).total_bounds)
    return deck.fit_view(bounds, width=width, height=height, padding=10)


def pick_place(grid_cells: gpd.GeoDataFrame, *, key: str, picked: tuple[float, float] | None,
               buildings: gpd.GeoDataFrame | None = None, cases: pd.DataFrame | None = None,
               height: int = 380, size_m: float = CELL_M) -> tuple[float, float] | None:
    """Draw *grid_cells* with tap targets; return the (lon, lat) tapped in this run, if any.

    *picked* (the place chosen so far) is drawn as a red marker. Grids, buildings and cases
    are drawn but not pickable, so a tap always lands on a target.
    """
    targets = tap_targets(grid_cells, size_m)
    layers = [*_grid_layer(grid_cells), *_buildings_layer(buildings), *_cases_layer(cases)]
    layers.append(deck.data_layer(
        "ScatterplotLayer", targets, id=PICKER_ID, get_position="[lon, lat]",
        get_radius=size_m / math.sqrt(2), radius_units="'meters'", filled=True, stroked=False,
        get_fill_color=[255, 255, 255, 1], pickable=True, auto_highlight=True,
        highlight_color=[255, 255, 255, 60]))
    if picked is not None:
        layers.extend(_marker(*picked))
    chart = deck.offline_deck(layers, _view(grid_cells, height, 390), height=height)
    event = st.pydeck_chart(chart, on_select="rerun", selection_mode="single-object", key=key,
                            height=height)
    objects = ((event or {}).get("selection") or {}).get("objects") or {}
    hit = objects.get(PICKER_ID) or []
    if hit and isinstance(hit[0], dict) and "lon" in hit[0] and "lat" in hit[0]:
        return float(hit[0]["lon"]), float(hit[0]["lat"])
    return None


def case_map(lon: float, lat: float, grid_cells: gpd.GeoDataFrame | None,
             grid_code: str | None, buildings: gpd.GeoDataFrame | None = None,
             *, height: int = 240) -> None:
    """A small, static map of a case: its grid highlighted, nearby buildings, the place."""
    if lon is None or lat is None or pd.isna(lon) or pd.isna(lat):
        return
    layers: list = []
    if grid_cells is not None and len(grid_cells):
        layers += _grid_layer(grid_cells, highlight=grid_code)
    if buildings is not None and len(buildings):
        near = buildings.cx[lon - 0.003:lon + 0.003, lat - 0.003:lat + 0.003]
        layers += _buildings_layer(near)
    layers += _marker(lon, lat, "case-marker")
    d = 0.0012  # about 120 m each side: the street around the case
    view = deck.fit_view((lon - d, lat - d * 0.9, lon + d, lat + d * 0.9), width=600,
                         height=height, padding=0)
    st.pydeck_chart(deck.offline_deck(layers, view, height=height), height=height)


# -- the device's location -----------------------------------------------------------------------
# A components-v2 button (inline JavaScript, no build, nothing fetched): the browser's own
# Geolocation API, which answers offline from GPS on a phone. Browsers give it only to secure
# pages (https, or localhost) and only after the user allows it; otherwise the error comes back.

_LOCATE_JS = """
export default function(component) {
  const { data, setTriggerValue, parentElement } = component;
  let button = parentElement.querySelector('button');
  if (!button) {
    button = document.createElement('button');
    button.className = 'gt-locate';
    parentElement.appendChild(button);
  }
  button.textContent = data.label;
  button.onclick = () => {
    if (!('geolocation' in navigator)) { setTriggerValue('failed', 'unsupported'); return; }
    button.disabled = true;
    navigator.geolocation.getCurrentPosition(
      (p) => { button.disabled = false;
               setTriggerValue('position', {lon: p.coords.longitude, lat: p.coords.latitude,
                                            accuracy: p.coords.accuracy}); },
      (e) => { button.disabled = false; setTriggerValue('failed', String(e.code)); },
      {enableHighAccuracy: true, timeout: 15000, maximumAge: 30000});
  };
}
"""
_LOCATE_CSS = """
.gt-locate { width: 100%; min-height: 2.75rem; border-radius: .5rem; cursor: pointer;
  border: 1px solid var(--st-border-color, #888); background: var(--st-secondary-background-color);
  color: var(--st-text-color); font: inherit; }
"""
_locate = None


def device_location(label: str, *, key: str) -> tuple[tuple[float, float] | None, str | None]:
    """A button that asks the browser for the device's position.

    Returns
    -------
    tuple
        ((lon, lat), None) in the run after the browser answered; (None, code) when it refused
        (``1`` denied, ``2`` unavailable, ``3`` timeout, ``unsupported``); (None, None) otherwise.
    """
    global _locate
    if _locate is None:
        _locate = st.components.v2.component("gridtwin_locate", js=_LOCATE_JS, css=_LOCATE_CSS)
    result = _locate(key=key, data={"label": label}, on_position_change=lambda: None,
                     on_failed_change=lambda: None)
    position = getattr(result, "position", None)
    if isinstance(position, dict) and "lon" in position and "lat" in position:
        return (float(position["lon"]), float(position["lat"])), None
    failed = getattr(result, "failed", None)
    return None, (str(failed) if failed else None)
