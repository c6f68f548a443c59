"""分析 Analysis (planners): each query with its parameters, drawn with a legend; what-if."""

from __future__ import annotations

import re
import tempfile
from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
import shapely
import streamlit as st

from twin import deck, trust
from twin import legend as lg
from twin.errors import TwinError
from twin.query.hotspots import CORRECTIONS
from ui.auth import current_user, origin
from ui.common import current_language, error_text, md, open_twin, t

LANG = current_language()
st.title(t("analysis.title", LANG))
opened = open_twin(LANG)
if opened is None:
    st.stop()
store, twin_layers = opened
user = current_user()
MAP_H = 560
PAIR_H = 430

# -- words ------------------------------------------------------------------------------------

UNITS = {
    "m2": t("planner.unit.m2", LANG), "pct": "%", "m": t("planner.unit.m", LANG),
    "spaces": t("planner.unit.spaces", LANG), "households": t("planner.unit.households", LANG),
    "people": t("planner.unit.people", LANG), "kinds": t("planner.unit.kinds", LANG),
    "cases": t("planner.unit.cases", LANG), "per_km2": t("planner.unit.per_km2", LANG),
    "none": "",
}
COLUMNS = {
    "name": t("planner.col.name", LANG), "grid_code": t("planner.col.grid_code", LANG),
    "public_area_m2": t("planner.col.public_area_m2", LANG),
    "covered_area_m2": t("planner.col.covered_area_m2", LANG),
    "coverage_share": t("planner.col.coverage_share", LANG),
    "blind_spot": t("planner.col.blind_spot", LANG), "area_m2": t("planner.col.area_m2", LANG),
    "households": t("planner.col.households", LANG), "demand": t("planner.col.demand", LANG),
    "spaces": t("planner.col.spaces", LANG), "balance": t("planner.col.balance", LANG),
    "spaces_within": t("planner.col.spaces_within", LANG),
    "shortfall": t("planner.col.shortfall", LANG), "residents": t("planner.col.residents", LANG),
    "lacks_count": t("planner.col.lacks_count", LANG), "lacks": t("planner.col.lacks", LANG),
    "count": t("planner.col.count", LANG), "density_per_km2": t("planner.col.density", LANG),
    "gi_z": t("planner.col.gi_z", LANG), "gi_p_adj": t("planner.col.gi_p_adj", LANG),
    "confidence": t("planner.col.confidence", LANG), "spot": t("planner.col.spot", LANG),
    "unit": t("planner.col.unit", LANG), "building_code": t("planner.col.building_code", LANG),
    "h3": t("planner.col.h3", LANG), "gi_p": t("planner.col.gi_p", LANG),
    "minutes": t("planner.col.minutes", LANG), "distance_m": t("planner.col.distance_m", LANG),
    "kind": t("planner.col.kind", LANG),
    "buildings_lacking": t("planner.col.buildings_lacking", LANG),
    "residents_lacking": t("planner.col.residents_lacking", LANG),
    "lots_within": t("planner.col.lots_within", LANG),
    "spaces_share": t("planner.col.spaces_share", LANG),
}
KINDS = {
    "school": t("planner.kind.school", LANG), "kindergarten": t("planner.kind.kindergarten", LANG),
    "clinic": t("planner.kind.clinic", LANG), "elderly_care": t("planner.kind.elderly_care", LANG),
    "market": t("planner.kind.market", LANG), "park": t("planner.kind.park", LANG),
    "community_center": t("planner.kind.community_center", LANG),
    "sports": t("planner.kind.sports", LANG), "pharmacy": t("planner.kind.pharmacy", LANG),
    "bus_stop": t("planner.kind.bus_stop", LANG), "other": t("planner.kind.other", LANG),
}
SPOTS = {
    "hot": (t("planner.spot.hot", LANG), (215, 48, 39)),
    "cold": (t("planner.spot.cold", LANG), (69, 117, 180)),
    "too few": (t("planner.spot.too_few", LANG), (150, 130, 200)),
    "not significant": (t("planner.spot.not_significant", LANG), (190, 190, 190)),
}
QUERY_NAMES = {
    "coverage": t("analysis.q.coverage", LANG), "blind_spots": t("analysis.q.blind_spots", LANG),
    "parking": t("analysis.q.parking", LANG), "life_circles": t("analysis.q.life_circles", LANG),
    "hot_spots": t("analysis.q.hot_spots", LANG), "counts": t("analysis.q.counts", LANG),
}
CORRECTION_NAMES = {"fdr_bh": t("planner.correction.fdr_bh", LANG),
                    "bonferroni": t("planner.correction.bonferroni", LANG),
                    "none": t("planner.correction.none", LANG)}
SOURCE_NAMES = {"cases": t("planner.source.cases", LANG),
                "alarms": t("planner.source.alarms", LANG)}
#: H3 resolution → its hexagon's edge, metres (what a planner knows a cell by)
CELL_EDGE_M = {7: 1220, 8: 461, 9: 174, 10: 66, 11: 25, 12: 9}

# -- parameters -------------------------------------------------------------------------------


def _source(params: dict) -> dict:
    """'alarms' is events of type alarm for the library."""
    if params.pop("source") == "alarms":
        return {"source": "events", "type": "alarm", **params}
    return {"source": "cases", **params}


def ask_parameters(name: str) -> tuple[str, dict, dict]:
    """Draw the parameters of query *name*; return the library query, its parameters, extras."""
    k = f"p_{name}_"
    cols = st.columns(4)
    if name in ("coverage", "blind_spots"):
        online = cols[0].checkbox(t("planner.p.only_online", LANG), key=k + "online")
        area = cols[1].number_input(t("planner.p.min_area", LANG), 0.0, 10_000.0, 10.0, 5.0,
                                    key=k + "area", help=t("planner.p.min_area_help", LANG))
        output = "grids" if name == "coverage" else "blind_spots"
        return "coverage", {"output": output, "min_area_m2": area, "only_online": online}, {}
    if name == "parking":
        level = cols[0].selectbox(t("planner.p.level", LANG), ["grid", "building"], key=k + "lv",
                                  format_func=lambda v: t("planner.level.grid", LANG)
                                  if v == "grid" else t("planner.level.building", LANG))
        walk = cols[1].number_input(t("planner.p.walk_m", LANG), 50, 2000, 300, 50, key=k + "walk",
                                    help=t("planner.p.walk_m_help", LANG))
        ratio = cols[2].number_input(t("planner.p.spaces_per_household", LANG), 0.1, 5.0, 1.0,
                                     0.1, key=k + "ratio")
        return "parking", {"level": level, "walk_m": float(walk),
                           "spaces_per_household": float(ratio)}, {}
    if name == "life_circles":
        m5 = cols[0].number_input(t("planner.p.circle", LANG, minutes=5), 50, 3000, 300, 50,
                                  key=k + "5")
        m10 = cols[1].number_input(t("planner.p.circle", LANG, minutes=10), 50, 3000, 500, 50,
                                   key=k + "10")
        m15 = cols[2].number_input(t("planner.p.circle", LANG, minutes=15), 50, 3000, 1000, 50,
                                   key=k + "15")
        shown = cols[3].selectbox(t("planner.p.shown_circle", LANG), [5, 10, 15], index=2,
                                  key=k + "shown",
                                  format_func=lambda m: t("planner.minutes", LANG, minutes=m))
        return "life_circles", {"circles": {5: m5, 10: m10, 15: m15}}, {"minutes": shown}
    if name == "hot_spots":
        source = cols[0].selectbox(t("planner.p.source", LANG), list(SOURCE_NAMES),
                                   key=k + "src", format_func=SOURCE_NAMES.get)
        res = cols[1].select_slider(t("planner.p.cell", LANG), list(CELL_EDGE_M), 10,
                                    key=k + "res", format_func=lambda r: t(
                                        "planner.cell_edge", LANG, metres=CELL_EDGE_M[r]))
        ring = cols[2].number_input(t("planner.p.k", LANG), 1, 5, 1, 1, key=k + "k",
                                    help=t("planner.p.k_help", LANG))
        alpha = cols[3].selectbox(t("planner.p.alpha", LANG), [0.01, 0.05, 0.10], index=1,
                                  key=k + "alpha", format_func=lambda a: f"{a:.2f}")
        more = st.columns(4)
        correction = more[0].selectbox(t("planner.p.correction", LANG), list(CORRECTIONS),
                                       key=k + "corr", format_func=CORRECTION_NAMES.get,
                                       help=t("planner.p.correction_help", LANG))
        least = more[1].number_input(t("planner.p.min_count", LANG), 1, 100, 3, 1, key=k + "min",
                                     help=t("planner.p.min_count_help", LANG))
        return "hot_spots", _source({"source": source, "resolution": res, "k": int(ring),
                                     "alpha": alpha, "correction": correction,
                                     "min_count": int(least)}), {}
    source = cols[0].selectbox(t("planner.p.source", LANG), list(SOURCE_NAMES), key=k + "src",
                               format_func=SOURCE_NAMES.get)
    level = cols[1].selectbox(t("planner.p.level", LANG), ["grid", "resp_grid", "community"],
                              key=k + "lv", format_func=lambda v: {
                                  "grid": t("planner.level.grid", LANG),
                                  "resp_grid": t("planner.level.resp_grid", LANG),
                                  "community": t("planner.level.community", LANG)}[v])
    return "counts", _source({"source": source, "level": level}), {}


# -- how a result is drawn --------------------------------------------------------------------


def _kind_names(series: pd.Series) -> pd.Series:
    text = series.astype("string").fillna("")
    for code, label in sorted(KINDS.items(), key=lambda kv: -len(kv[0])):
        text = text.str.replace(rf"\b{code}\b", label, regex=True)
    return text.str.replace(",", "、" if LANG == "zh-CN" else ", ", regex=False)


def style_of(name: str, frame: pd.DataFrame, extras: dict) -> dict:
    """What to colour, how, and which lines the tooltip has, for query *name*'s frame."""
    f = frame
    if name == "coverage":
        return {"value": f["coverage_share"], "ramp": "good", "unit": "pct", "scale": 100,
                "title": f["name"], "head": COLUMNS["coverage_share"],
                "lines": [("public_area_m2", "m2", 1), ("covered_area_m2", "m2", 1),
                          ("coverage_share", "pct", 100)]}
    if name == "blind_spots":
        title = t("planner.blind_spot_no", LANG) + " " + f["blind_spot"].astype(str)
        return {"value": f["area_m2"], "ramp": "sequential", "unit": "m2", "scale": 1,
                "title": title, "head": COLUMNS["area_m2"],
                "lines": [("grid_code", None, 1), ("area_m2", "m2", 1)]}
    if name == "parking" and "balance" in f:
        return {"value": f["balance"], "ramp": "diverging_r", "unit": "spaces", "scale": 1,
                "title": f["name"], "head": COLUMNS["balance"],
                "lines": [("households", "households", 1), ("demand", "spaces", 1),
                          ("spaces", "spaces", 1), ("balance", "spaces", 1)]}
    if name == "parking":
        return {"value": f["shortfall"], "ramp": "sequential", "unit": "spaces", "scale": 1,
                "title": f["name"].fillna(f["building_code"]), "head": COLUMNS["shortfall"],
                "lines": [("households", "households", 1), ("demand", "spaces", 1),
                          ("spaces_within", "spaces", 1), ("shortfall", "spaces", 1)]}
    if name == "life_circles":
        m = extras["minutes"]
        f = f.assign(lacks_count=f[f"lacks_{m}min_count"], lacks=_kind_names(f[f"lacks_{m}min"]))
        return {"value": f["lacks_count"], "ramp": "sequential", "unit": "kinds", "scale": 1,
                "title": f["name"].fillna(f["building_code"]), "frame": f,
                "head": t("planner.lacks_within", LANG, minutes=m),
                "lines": [("residents", "people", 1), ("lacks_count", "kinds", 1),
                          ("lacks", None, 1)]}
    if name == "hot_spots":
        return {"spots": f["spot"], "title": f["spot"].map({k: v[0] for k, v in SPOTS.items()}),
                "head": COLUMNS["spot"],
                "lines": [("count", "cases", 1), ("density_per_km2", "per_km2", 1),
                          ("gi_z", "none", 1), ("gi_p_adj", "none", 1),
                          ("confidence", "pct", 1)]}
    return {"value": f["count"], "ramp": "sequential", "unit": "cases", "scale": 1,
            "title": f["name"].fillna(f["unit"]), "head": COLUMNS["count"],
            "lines": [("count", "cases", 1)]}


DECIMALS = {"gi_z": 2, "gi_p_adj": 3, "confidence": 0, "count": 0, "residents": 0,
            "households": 0, "demand": 0, "spaces": 0, "balance": 0, "spaces_within": 0,
            "shortfall": 0, "lacks_count": 0}


def tooltips(style: dict, frame: pd.DataFrame) -> list[str]:
    """Readable hover lines: labels, rounded values, units (plain text, never HTML)."""
    if "confidence" in frame:  # a confidence only where a cell was called hot or cold
        frame = frame.assign(confidence=frame["confidence"].where(frame["confidence"] > 0))
    lines = []
    for col, unit, scale in style["lines"]:
        if col not in frame:
            continue
        if unit is None:
            lines.append((COLUMNS[col], frame[col].astype(object)))
        else:
            lines.append((COLUMNS[col], lg.format_values(frame[col], UNITS[unit], scale=scale,
                                                          decimals=DECIMALS.get(col))))
    return lg.tooltip_lines(style["title"].fillna("").astype(str), lines)


def colour(style: dict, values=None) -> tuple[lg.Legend, list]:
    """The legend and the colours of the style's values (or of *values*, classed alike)."""
    if "spots" in style:
        return lg.categorical(style["spots"], style["head"], SPOTS, alpha=190)
    data = style["value"] if values is None else values
    return lg.numeric(data, style["head"], UNITS[style["unit"]], ramp_name=style["ramp"],
                      scale=style["scale"], missing_label=t("planner.no_data", LANG))


def result_layer(frame: gpd.GeoDataFrame, colours: list, tips: list, layer_id: str):
    """The answer's polygons as a pickable layer (multi-parts drawn as their parts)."""
    data = pd.DataFrame({"tooltip": tips, "color": colours, "geometry": frame.geometry.values})
    parts = gpd.GeoDataFrame(data, geometry="geometry", crs=4326).explode(index_parts=False)
    parts = parts[shapely.get_type_id(parts.geometry.values) == 3]
    rows = pd.DataFrame({"id": np.arange(len(parts)).astype(str),
                         "tooltip": parts["tooltip"].to_numpy(), "color": parts["color"].tolist()})
    rows["polygon"] = deck.polygon_rings(parts.geometry.values, simplify_m=deck.SIMPLIFY_M)
    return deck.data_layer("PolygonLayer", rows, id=layer_id, get_polygon="polygon",
                           filled=True, stroked=True, get_fill_color="color",
                           get_line_color=[40, 40, 40, 200], line_width_min_pixels=1,
                           pickable=True, auto_highlight=True,
                           highlight_color=[255, 255, 255, 90])


def base_layers() -> list:
    return list(deck.make_deck(twin_layers, ["roads", "grid_cells"], LANG).layers)


def show_legend(legend: lg.Legend, where=st) -> None:
    where.markdown(lg.legend_html(legend), unsafe_allow_html=True)  # every text escaped


def readable_table(frame: pd.DataFrame, style: dict | None = None) -> pd.DataFrame:
    """The answer's table: names and units for columns, shares in per cent, rounded numbers."""
    out = pd.DataFrame(frame).drop(columns="geometry", errors="ignore").copy()
    units = {c: (u, k) for c, u, k in (style or {}).get("lines", []) if u not in (None, "none")}
    names = {}
    for col in out.columns:
        unit, scale = units.get(col, (None, 1))
        if pd.api.types.is_float_dtype(out[col]):
            out[col] = (out[col] * scale).round(DECIMALS.get(col, 1 if scale == 1 else 2))
        label = COLUMNS.get(col)
        if col.startswith("dist_") and col.endswith("_m"):
            kind = col[5:-2]
            label = t("planner.col.dist", LANG, kind=KINDS.get(kind, kind))
            unit = "m"
        elif re.fullmatch(r"lacks_\d+min", col):
            label = t("planner.col.lacks_in", LANG, minutes=col[6:-3])
            out[col] = _kind_names(out[col])
        elif re.fullmatch(r"lacks_\d+min_count", col):
            label = t("planner.col.lacks_count_in", LANG, minutes=col[6:-9])
            unit = "kinds"
        if label is not None:
            names[col] = f"{label} ({UNITS[unit]})" if unit and UNITS.get(unit) else label
    if "spot" in out:
        out["spot"] = out["spot"].map({k: v[0] for k, v in SPOTS.items()}).fillna(out["spot"])
    if "kind" in out:
        out["kind"] = out["kind"].map(KINDS).fillna(out["kind"])
    if "distance_m" in out:
        names["distance_m"] = f"{COLUMNS['distance_m']} ({UNITS['m']})"
    return out.rename(columns=names)


# -- the question and its answer --------------------------------------------------------------

name = st.selectbox(t("analysis.pick", LANG), list(QUERY_NAMES), format_func=QUERY_NAMES.get,
                    key="analysis_query")
ABOUT = {
    "coverage": t("planner.about.coverage", LANG),
    "blind_spots": t("planner.about.blind_spots", LANG),
    "parking": t("planner.about.parking", LANG),
    "life_circles": t("planner.about.life_circles", LANG),
    "hot_spots": t("planner.about.hot_spots", LANG),
    "counts": t("planner.about.counts", LANG),
}
with st.form(f"analysis_form_{name}"):
    st.caption(ABOUT[name])
    query_name, params, extras = ask_parameters(name)
    run = st.form_submit_button(t("analysis.run", LANG), type="primary")
if run:
    try:
        answer = trust.query_as(store, user, query_name, origin=origin(), **params)
        st.session_state["analysis_result"] = (name, answer, extras)
    except (TwinError, ImportError) as exc:
        st.session_state.pop("analysis_result", None)
        st.error(t("analysis.failed", LANG, error=error_text(exc, LANG, what="an analysis")))
stored = st.session_state.get("analysis_result")
if not stored or stored[0] != name:
    st.caption(t("analysis.hint", LANG))
    result = None
else:
    _, result, extras = stored

if result is not None:
    frame = result.frame
    style = style_of(name, frame, extras)
    shown_frame = style.get("frame", frame)
    st.caption(t("analysis.rows", LANG, count=len(frame), method=md(result.method)))
    map_col, side = st.columns([3, 1])
    if isinstance(frame, gpd.GeoDataFrame) and len(frame):
        legend, colours = colour(style)
        layer = result_layer(frame.to_crs(4326), colours, tooltips(style, shown_frame), "result")
        view = deck.fit_view(tuple(frame.to_crs(4326).total_bounds), height=MAP_H)
        with map_col:
            st.pydeck_chart(deck.offline_deck([*base_layers(), layer], view,
                                              tooltip=deck.TEXT_TOOLTIP, height=MAP_H),
                            key="analysis_map", height=MAP_H)
        show_legend(legend, side)
    notes = result.notes
    if "coverage_share" in notes:
        side.metric(t("planner.m.coverage", LANG),
                    lg.format_value(notes["coverage_share"], "%", scale=100))
        side.metric(t("planner.m.covered", LANG),
                    lg.format_value(notes["covered_area_m2"], UNITS["m2"]))
    if name == "blind_spots":
        side.metric(t("planner.m.blind_spots", LANG), f"{len(frame):,}")
    if name == "hot_spots":
        side.metric(t("planner.spot.hot", LANG), notes.get("hot", 0))
        side.metric(t("planner.spot.cold", LANG), notes.get("cold", 0))
        side.caption(t("planner.hot_note", LANG, points=notes.get("points", 0),
                       correction=CORRECTION_NAMES[result.parameters["correction"]],
                       alpha=f"{result.parameters['alpha']:.2f}",
                       min_count=result.parameters["min_count"]))
    st.dataframe(readable_table(shown_frame, style), width="stretch", hide_index=True)
    if result.summary is not None:
        st.dataframe(readable_table(result.summary), width="stretch", hide_index=True)
    with tempfile.TemporaryDirectory() as folder:
        cols = st.columns(3)
        formats = (("csv", "text/csv"), ("geojson", "application/geo+json"),
                   ("gpkg", "application/geopackage+sqlite3"))
        for col, (ext, mime) in zip(cols, formats, strict=True):
            if ext != "csv" and not isinstance(frame, gpd.GeoDataFrame):
                continue
            path = result.to_file(Path(folder) / f"{name}.{ext}")
            col.download_button(t("analysis.download", LANG, format=ext.upper()),
                                path.read_bytes(), file_name=path.name, mime=mime,
                                key=f"dl_{ext}")

# -- what-if ----------------------------------------------------------------------------------

#: the question → what the what-if changes (coverage: cameras, life circles: facilities)
WHATIF = {"coverage": "coverage", "blind_spots": "coverage", "life_circles": "life_circles"}
PICK_ID, PLACE_ID = "whatif-pick", "whatif-place"
MAX_PICK_CELLS = 4000


def study_bounds() -> tuple[float, float, float, float]:
    """Where a camera or facility may go: the unit grids (they tile the community)."""
    grids = twin_layers.get("grid_cells")
    frame = grids if grids is not None and len(grids) else twin_layers["community"]
    return tuple(float(v) for v in frame.to_crs(4326).total_bounds)


def pick_cells(bounds: tuple[float, float, float, float]) -> pd.DataFrame:
    """Squares of about 15 m over the unit grids: click one to choose a place (vectorised)."""
    x0, y0, x1, y1 = bounds
    lat = (y0 + y1) / 2
    m_lon, m_lat = 111_320 * np.cos(np.radians(lat)), 110_574
    area_m2 = (x1 - x0) * m_lon * (y1 - y0) * m_lat
    side = max(15.0, float(np.sqrt(area_m2 / MAX_PICK_CELLS)))
    xs = np.arange(x0, x1, side / m_lon)
    ys = np.arange(y0, y1, side / m_lat)
    gx, gy = (a.ravel() for a in np.meshgrid(xs, ys))
    boxes = shapely.box(gx, gy, gx + side / m_lon, gy + side / m_lat)
    grids = twin_layers.get("grid_cells")
    if grids is not None and len(grids):
        keep = shapely.intersects(shapely.union_all(grids.to_crs(4326).geometry.values), boxes)
        boxes = boxes[keep]
    centre = shapely.centroid(boxes)
    rows = pd.DataFrame({"id": np.arange(len(boxes)).astype(str),
                         "lon": shapely.get_x(centre).round(7),
                         "lat": shapely.get_y(centre).round(7),
                         "tooltip": t("planner.whatif.pick_tip", LANG)})
    rows["polygon"] = deck.polygon_rings(boxes)
    return rows


def picked_place(event) -> tuple[float, float] | None:
    """The centre of the square picked on the what-if map, if one was picked."""
    objects = ((event or {}).get("selection") or {}).get("objects") or {}
    hit = objects.get(PICK_ID) or []
    if not hit:
        return None
    return float(hit[0]["lon"]), float(hit[0]["lat"])


def pick_map(target: str, place: tuple[float, float] | None):
    """The map to choose the place on: existing cameras or facilities, squares, the choice."""
    shown = ["roads", "grid_cells", "buildings",
             "cameras" if target == "coverage" else "facilities"]
    layers = list(deck.make_deck(twin_layers, [n for n in shown if n in twin_layers],
                                 LANG).layers)
    layers.append(deck.data_layer(
        "PolygonLayer", pick_cells(study_bounds()), id=PICK_ID, get_polygon="polygon",
        filled=True, stroked=False, get_fill_color=[255, 255, 255, 14], pickable=True,
        auto_highlight=True, highlight_color=[0, 229, 255, 170]))
    if place is not None:
        layers.append(deck.data_layer(
            "ScatterplotLayer", pd.DataFrame({"lon": [place[0]], "lat": [place[1]],
                                              "tooltip": [t("planner.whatif.place", LANG)]}),
            id=PLACE_ID, get_position="[lon, lat]", get_radius=6, radius_units="'meters'",
            radius_min_pixels=7, get_fill_color=[255, 0, 200, 255],
            get_line_color=[255, 255, 255, 255], stroked=True, line_width_min_pixels=2))
    view = deck.fit_view(study_bounds(), height=PAIR_H)
    return st.pydeck_chart(deck.offline_deck(layers, view, tooltip=deck.TEXT_TOOLTIP,
                                             height=PAIR_H),
                           on_select="rerun", selection_mode="single-object",
                           key=f"whatif_pick_{target}", height=PAIR_H)


def whatif_change(target: str, mode: str, place: tuple[float, float]) -> dict:
    """The change to try, from the controls: add a new feature or move one to *place*."""
    lon, lat = place
    if mode == "move":
        return {"move": {st.session_state[f"wi_{target}_which"]: (lon, lat)}}
    if target == "coverage":
        return {"add": [{"camera_id": "WHATIF-1", "name": t("planner.whatif.new_camera", LANG),
                         "heading_deg": float(st.session_state["wi_heading"]),
                         "fov_deg": float(st.session_state["wi_fov"]),
                         "range_m": float(st.session_state["wi_range"]), "status": "online",
                         "lon": lon, "lat": lat}]}
    kind = st.session_state["wi_kind"]
    return {"add": [{"facility_id": "WHATIF-F1", "kind": kind, "lon": lon, "lat": lat,
                     "name": t("planner.whatif.new_facility", LANG, kind=KINDS[kind])}]}


def whatif_controls(target: str) -> str:
    """Add or move, which feature, and the new one's properties (bounded as the layer is)."""
    mode = st.radio(t("planner.whatif.mode", LANG), ["add", "move"], horizontal=True,
                    key=f"wi_{target}_mode",
                    format_func=lambda m: t("planner.whatif.add", LANG) if m == "add"
                    else t("planner.whatif.move", LANG))
    layer = twin_layers.get("cameras" if target == "coverage" else "facilities")
    if mode == "move":
        idf = "camera_id" if target == "coverage" else "facility_id"
        names = (layer["name"].fillna(layer[idf]) if "name" in layer else layer[idf]).astype(str)
        label = dict(zip(layer[idf].astype(str), names + " · " + layer[idf].astype(str),
                         strict=True))
        st.selectbox(t("planner.whatif.which", LANG), list(label), key=f"wi_{target}_which",
                     format_func=label.get)
    elif target == "coverage":
        st.number_input(t("planner.whatif.heading", LANG), 0, 359, 0, 15, key="wi_heading")
        st.number_input(t("planner.whatif.fov", LANG), 1, 360, 360, 10, key="wi_fov")
        st.number_input(t("planner.whatif.range", LANG), 1, 500, 30, 5, key="wi_range")
    else:
        st.selectbox(t("planner.whatif.kind", LANG), [k for k in KINDS if k != "other"],
                     key="wi_kind", format_func=KINDS.get)
    return mode


def coverage_pair(answer) -> None:
    """Before and after, side by side, classed alike: coverage share per unit grid."""
    f = answer.frame
    s = answer.summary.set_index("measure")
    cols = st.columns(4)
    cols[0].metric(t("planner.m.coverage", LANG),
                   lg.format_value(s.loc["coverage_share", "after"], "%", scale=100),
                   lg.format_value(s.loc["coverage_share", "delta"], t("planner.unit.pp", LANG),
                                   scale=100, decimals=2, sign=True))
    cols[1].metric(t("planner.m.covered_gain", LANG),
                   lg.format_value(s.loc["covered_area_m2", "delta"], UNITS["m2"], sign=True))
    fewer = int(s.loc["blind_spots", "delta"])
    cols[2].metric(t("planner.m.blind_spots", LANG), f"{int(s.loc['blind_spots', 'after']):,}",
                   f"{fewer:+,}" if fewer else None, delta_color="inverse")
    cols[3].metric(t("planner.m.closed", LANG), f"{answer.notes.get('blind_spots_closed', 0):,}")
    both = pd.concat([f["coverage_share_before"], f["coverage_share_after"]], ignore_index=True)
    legend, colours = lg.numeric(both, COLUMNS["coverage_share"], "%", ramp_name="good",
                                 scale=100)
    n = len(f)
    pct = lambda c: lg.format_values(f[c], "%", scale=100)  # noqa: E731
    tips = lg.tooltip_lines(f["name"].astype(str), [
        (t("planner.before", LANG), pct("coverage_share_before")),
        (t("planner.after", LANG), pct("coverage_share_after")),
        (t("planner.change", LANG), lg.format_values(f["delta"], t("planner.unit.pp", LANG),
                                                     scale=100, decimals=2, sign=True)),
        (t("planner.m.closed", LANG), lg.format_values(f["blind_spots_closed"], decimals=0))])
    pair(f, [colours[:n], colours[n:]], tips, legend)


def life_pair(answer, minutes: int, kind: str) -> None:
    """Before and after, side by side: buildings lacking *kind* within *minutes*."""
    f = answer.frame
    s = answer.summary
    row = s[(s["minutes"] == minutes) & (s["kind"] == kind)]
    gained = int(-row["residents_delta"].sum()) if len(row) else 0
    homes = int(-row["buildings_delta"].sum()) if len(row) else 0
    cols = st.columns(3)
    cols[0].metric(t("planner.m.people_gained", LANG, minutes=minutes, kind=KINDS[kind]),
                   f"{gained:,} {UNITS['people']}")
    cols[1].metric(t("planner.m.buildings_gained", LANG), f"{homes:,}")
    if len(row):
        cols[2].metric(t("planner.m.people_lacking", LANG),
                       f"{int(row['residents_lacking_after'].sum()):,} {UNITS['people']}",
                       f"{int(row['residents_delta'].sum()):+,}", delta_color="inverse")
    pattern = rf"\b{kind}\b"
    lacks_b = f[f"lacks_{minutes}min_before"].astype("string").str.contains(pattern, na=False)
    lacks_a = f[f"lacks_{minutes}min_after"].astype("string").str.contains(pattern, na=False)
    cats = {"lacks": (t("planner.whatif.lacks", LANG, kind=KINDS[kind], minutes=minutes),
                      (215, 48, 39)),
            "newly": (t("planner.whatif.newly", LANG), (0, 229, 255)),
            "within": (t("planner.whatif.within", LANG), (49, 163, 84))}
    before = np.where(lacks_b, "lacks", "within")
    after = np.where(lacks_a, "lacks", np.where(lacks_b, "newly", "within"))
    legend, colours_a = lg.categorical(after, t("planner.whatif.reach", LANG), cats)
    _, colours_b = lg.categorical(before, "", cats)
    tips = lg.tooltip_lines(f["name"].fillna(f["building_code"]).astype(str), [
        (COLUMNS["residents"], lg.format_values(f["residents"], UNITS["people"], decimals=0)),
        (t("planner.before", LANG), pd.Series(before).map(lambda c: cats[c][0])),
        (t("planner.after", LANG), pd.Series(after).map(lambda c: cats[c][0]))])
    pair(f, [colours_b, colours_a], tips, legend)


def pair(frame, colours: list, tips: list, legend: lg.Legend) -> None:
    """Two maps side by side (before, after) over the same view, and one legend."""
    view = deck.fit_view(tuple(frame.to_crs(4326).total_bounds), height=PAIR_H, width=700)
    maps = st.columns([5, 5, 2])
    for col, title, c, key in zip(maps[:2], (t("planner.before", LANG), t("planner.after", LANG)),
                                  colours, ("before", "after"), strict=True):
        col.markdown(f"**{md(title)}**")
        layer = result_layer(frame.to_crs(4326), c, tips, f"whatif-{key}")
        with col:
            st.pydeck_chart(deck.offline_deck([*base_layers(), layer], view,
                                              tooltip=deck.TEXT_TOOLTIP, height=PAIR_H),
                            key=f"whatif_map_{key}", height=PAIR_H)
    show_legend(legend, maps[2])


def changed_kind(target: str, mode: str) -> str | None:
    """The facility kind the what-if added or moved (life circles), else None."""
    if target != "life_circles":
        return None
    if mode == "add":
        return st.session_state["wi_kind"]
    facilities = twin_layers["facilities"]
    which = facilities["facility_id"].astype(str) == st.session_state[f"wi_{target}_which"]
    return str(facilities.loc[which, "kind"].iloc[0])


if name in WHATIF:
    target = WHATIF[name]
    st.subheader(t("planner.whatif.title", LANG))
    st.caption(t("planner.whatif.hint", LANG))
    place_key = f"whatif_place_{target}"
    left, right = st.columns([2, 1])
    with left:
        event = pick_map(target, st.session_state.get(place_key))
    new_place = picked_place(event)
    if new_place is not None and new_place != st.session_state.get(place_key):
        st.session_state[place_key] = new_place
        st.rerun()  # draw the marker where the click was
    place = st.session_state.get(place_key)
    with right:
        mode = whatif_controls(target)
        if place is None:
            st.info(t("planner.whatif.no_place", LANG))
        else:
            st.caption(t("planner.whatif.chosen", LANG, lon=f"{place[0]:.5f}",
                         lat=f"{place[1]:.5f}"))
        go = st.button(t("planner.whatif.run", LANG), type="primary", disabled=place is None,
                       key="whatif_run")
    if go and place is not None:
        extra = ({"min_area_m2": params.get("min_area_m2", 10.0)} if target == "coverage"
                 else {"circles": params["circles"]})
        try:
            answer = trust.query_as(store, user, "what_if", origin=origin(), query=target,
                                    **whatif_change(target, mode, place), **extra)
            st.session_state["whatif_result"] = (target, answer, changed_kind(target, mode))
        except (TwinError, KeyError) as exc:
            st.session_state.pop("whatif_result", None)
            st.error(t("planner.whatif.failed", LANG,
                       error=error_text(exc, LANG, what="a what-if")))
    done = st.session_state.get("whatif_result")
    if done and done[0] == target:
        if target == "coverage":
            coverage_pair(done[1])
        else:
            life_pair(done[1], extras.get("minutes", 15), done[2])
