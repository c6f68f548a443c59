"""The cockpit map's widgets: controls, drill-down, KPI tiles, the deck, legend, feature detail."""

from __future__ import annotations

import html
import logging
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import pandas as pd
import streamlit as st

from twin import cockpit, deck, settings, trust
from twin import layers as declared
from twin.cockpit import Scope
from ui.common import DEMO_COMMANDS, error_text, md, status_names, t, widget_key

LOGGER = logging.getLogger(__name__)

VIEW_KEY = "map_view"
MAP_HEIGHT = 640
WALL_MAP_HEIGHT = 880  # the big screen's map (ui/wall_page.py)


@dataclass(frozen=True)
class Controls:
    """What the user chose in the sidebar: layers, metrics, window and the moment shown."""

    visible: tuple[str, ...]
    building_metric: str
    grid_indicator: str
    extrude: bool
    window: str
    at: pd.Timestamp | None


def indicator_labels(lang: str) -> dict[str, str]:
    """Column → label of the indicators (tooltips, tables, pickers)."""
    return {
        "code": t("col.code", lang), "name": t("col.name", lang),
        "open_cases": t("ind.open_cases", lang), "overdue": t("ind.overdue", lang),
        "reports": t("ind.reports", lang), "alarms": t("ind.alarms", lang),
        "households": t("ind.households", lang),
    }


def layer_titles(lang: str) -> dict[str, str]:
    return {
        "grid_cells": t("layer.grid_cells", lang), "density": t("layer.density", lang),
        "buildings": t("layer.buildings", lang), "parking": t("layer.parking", lang),
        "cameras": t("layer.cameras", lang), "sensors": t("layer.sensors", lang),
        "cases": t("layer.cases", lang), "alarms": t("layer.alarms", lang),
    }


def tooltip_labels(lang: str) -> dict[str, str]:
    return {
        **indicator_labels(lang),
        "case": t("tip.case", lang), "id": t("tip.id", lang), "state": t("tip.state", lang),
        "category": t("tip.category", lang), "description": t("tip.description", lang),
        "deadline": t("tip.deadline", lang), "values": t("tip.values", lang),
        "alarm": t("tip.alarm", lang), "source": t("tip.source", lang),
        "property": t("tip.property", lang), "value": t("tip.value", lang),
        "severity": t("tip.severity", lang), "available": t("tip.available", lang),
    }


def sensor_state_names(lang: str) -> dict[str, str]:
    return {"ok": t("sensor.ok", lang), "alarm": t("sensor.alarm", lang),
            "offline": t("sensor.offline", lang)}


def sidebar_controls(lang: str, *, default_layers: tuple[str, ...] | None = None) -> Controls:
    """The map's controls in the sidebar (kept in session_state by their keys)."""
    titles = layer_titles(lang)
    labels = indicator_labels(lang)
    windows = {"1h": t("window.1h", lang), "24h": t("window.24h", lang),
               "7d": t("window.7d", lang)}
    layers_key, window_key = widget_key("map_layers", lang), widget_key("window", lang)
    with st.sidebar:
        st.subheader(t("map.layers", lang))
        visible = st.multiselect(
            t("map.layers.pick", lang), deck.THEMATIC,
            # a choice carried over from the other language is the value: no default beside it
            default=None if layers_key in st.session_state else list(
                default_layers or deck.THEMATIC),
            format_func=titles.__getitem__, key=layers_key, help=t("map.layers.help", lang))
        building_metric = st.selectbox(t("map.building_metric", lang), cockpit.BUILDING_METRICS,
                                       format_func=labels.__getitem__,
                                       key=widget_key("building_metric", lang))
        grid_indicator = st.selectbox(t("map.grid_indicator", lang), cockpit.GRID_INDICATORS,
                                      format_func=labels.__getitem__,
                                      key=widget_key("grid_indicator", lang))
        extrude = st.toggle(t("map.extrude", lang), key="extrude")
        window = st.segmented_control(
            t("map.window", lang), list(windows), format_func=windows.__getitem__,
            default=None if window_key in st.session_state else "24h", key=window_key) or "24h"
        now = pd.Timestamp.now(tz="UTC").floor("min")
        hours_back = st.slider(t("map.time", lang), min_value=-168, max_value=0, value=0,
                               step=1, key="hours_back", help=t("map.time.help", lang),
                               format="%d h")
    at = None if hours_back == 0 else now + timedelta(hours=hours_back)
    return Controls(tuple(visible), building_metric, grid_indicator, extrude, window, at)


def drill_scope(twin_layers: dict, lang: str, grids: frozenset[str] | None = None) -> Scope:
    """Street → community → grid pickers (a map click on a grid cell also drills into it)."""
    cells = twin_layers["grid_cells"]
    codes = cells["grid_code"].astype(str)
    if grids is not None:
        codes = codes[codes.isin(grids)]
    names = cockpit.unit_names(twin_layers)
    grid_names = dict(zip(codes, cells.loc[codes.index, "name"], strict=True))
    every = t("drill.all", lang)
    with st.sidebar:
        st.subheader(t("drill.title", lang))
        streets = sorted(codes.str[: cockpit.STREET_DIGITS].unique())
        street = st.selectbox(t("drill.street", lang), [None, *streets],
                              key=widget_key("drill_street", lang),
                              format_func=lambda c: every if c is None else names.get(c, c))
        communities = sorted(codes[codes.str.startswith(street or "")]
                             .str[: cockpit.COMMUNITY_DIGITS].unique())
        community = st.selectbox(
            t("drill.community", lang), [None, *communities],
            key=widget_key("drill_community", lang),
            format_func=lambda c: every if c is None else names.get(c, c))
        in_community = sorted(codes[codes.str.startswith(community or street or "")])
        grid = st.selectbox(t("drill.grid", lang), [None, *in_community],
                            key=widget_key("drill_grid", lang),
                            format_func=lambda c: every if c is None else
                            f"{grid_names.get(c, c)} · {c[-4:]}")
    if grid and not grid.startswith(community or ""):
        grid = None
    if community and not community.startswith(street or ""):
        community = None
    return Scope(street=street, community=community, grid=grid, grids=grids)


def cockpit_data(store, twin_layers: dict, controls: Controls, scope: Scope, lang: str = ""):
    """The page's data from :func:`twin.cockpit.cockpit_data` (layers cached per version).

    On any failure (store gone, a layer without its columns) the user reads what happened and
    what to do, and the page stops: never a traceback.
    """
    try:
        return cockpit.cockpit_data(store, at=controls.at, window=controls.window, scope=scope,
                                    layers=twin_layers)
    except Exception as exc:  # the page's edge: the message, then stop
        st.error(t("cockpit.error", lang or None,
                   error=error_text(exc, lang or None, what="building the cockpit data")))
        st.code(DEMO_COMMANDS, language="bash")
        st.stop()


def _fmt(value: Any, suffix: str = "") -> str:
    if value is None:
        return "—"
    if isinstance(value, float):
        return f"{value:,.1f}{suffix}"
    return f"{value:,}{suffix}"


def kpi_tiles(kpis: dict[str, Any], lang: str) -> None:
    """The eight KPI tiles in one row (two rows of four on narrow screens)."""
    online = kpis.get("sensors_online")
    tiles = [
        (t("kpi.reports_today", lang), _fmt(kpis["reports_today"])),
        (t("kpi.open", lang), _fmt(kpis["open"])),
        (t("kpi.overdue", lang), _fmt(kpis["overdue"])),
        (t("kpi.close_rate", lang), _fmt(kpis["close_rate"], " %")),
        (t("kpi.ontime_close_rate", lang), _fmt(kpis["ontime_close_rate"], " %")),
        (t("kpi.sensors_online", lang), "—" if online is None else f"{online[0]:,}/{online[1]:,}"),
        (t("kpi.parking_available", lang), _fmt(kpis["parking_available"])),
        (t("kpi.air_quality", lang), _fmt(kpis["air_quality"], " µg/m³")),
    ]
    for column, (label, value) in zip(st.columns(len(tiles)), tiles, strict=True):
        column.metric(label, value, border=True)


def _view(data) -> Any:
    """The view kept across reruns and live refreshes: one per scope, fitted once."""
    views = st.session_state.setdefault(VIEW_KEY, {})
    key = (data.scope.street, data.scope.community, data.scope.grid, _display_crs())
    if key not in views:
        fit = data.grids if len(data.grids) else None
        bounds = tuple(fit.total_bounds) if fit is not None else None
        views[key] = deck.fit_view(deck.display_bounds(bounds, _display_crs()), height=MAP_HEIGHT)
    return views[key]


def fitted_view(data, height: int, bounds: tuple[float, float, float, float] | None = None,
                key: str = "wall") -> Any:
    """The view of a map fitted once per scope (and *bounds*, a building's), then kept.

    A refresh redraws the map with the same initial view, so the browser keeps the view the
    user panned or zoomed to; only a new scope (a drill-down) fits the map again.
    """
    views = st.session_state.setdefault(VIEW_KEY, {})
    scope = (key, data.scope.street, data.scope.community, data.scope.grid, bounds,
             _display_crs(), height)
    if scope not in views:
        if bounds is None and len(data.grids):
            bounds = tuple(data.grids.total_bounds)
        views[scope] = deck.fit_view(deck.display_bounds(bounds, _display_crs()), height=height)
    return views[scope]


def _display_crs() -> str:
    """The datum the map is drawn in: GCJ-02 only under GCJ-02 tiles (TWIN_TILE_URL/_CRS)."""
    return settings.get("tile_crs") if settings.get("tile_url") else "wgs84"


def draw_map(data, controls: Controls, lang: str, *, key: str) -> Any:
    """Draw the thematic deck; returns the selection event (None when the map failed)."""
    try:
        return _draw_map(data, controls, lang, key=key)
    except Exception as exc:  # the map's edge: a message in place of the map
        st.error(t("map.error", lang, error=error_text(exc, lang, what="drawing the map")))
        return None


def _draw_map(data, controls: Controls, lang: str, *, key: str) -> Any:
    chart = deck.thematic_deck(
        data, controls.visible, tooltip_labels(lang), lang,
        building_metric=controls.building_metric, grid_indicator=controls.grid_indicator,
        extrude=controls.extrude, view_state=_view(data), status_names=status_names(lang),
        state_names=sensor_state_names(lang), height=MAP_HEIGHT,
        selected=deck.selected_feature(st.session_state.get(key)))
    return st.pydeck_chart(chart, on_select="rerun", selection_mode="single-object", key=key,
                           height=MAP_HEIGHT)


def legend(controls: Controls, lang: str) -> None:
    """Colour swatches of what the map shows (text escaped)."""
    states = status_names(lang)
    sensors = sensor_state_names(lang)
    labels = indicator_labels(lang)
    entries = []
    if "grid_cells" in controls.visible or "buildings" in controls.visible:
        entries += [(deck.RAMP[0], t("legend.low", lang)), (deck.RAMP[2], t("legend.high", lang))]
    if "cases" in controls.visible:
        entries += [(deck.CASE_COLORS[s], states[s]) for s in ("open", "warning", "overdue")]
    if "sensors" in controls.visible:
        entries += [(deck.SENSOR_COLORS[s], sensors[s]) for s in ("ok", "offline")]
    if "alarms" in controls.visible:
        entries.append((deck.ALARM_COLOR, layer_titles(lang)["alarms"]))
    if "parking" in controls.visible:
        entries += [(deck.PARKING_EMPTY, t("legend.parking_free", lang)),
                    (deck.PARKING_FULL, t("legend.parking_full", lang))]
    swatches = " &nbsp; ".join(
        f'<span style="color:rgb{tuple(c[:3])}">●</span> {html.escape(text)}'
        for c, text in entries)
    st.markdown(f"{html.escape(t('map.legend', lang))}: "
                f"{html.escape(labels[controls.grid_indicator])} &nbsp; {swatches}",
                unsafe_allow_html=True)


def _attributes(name: str, frame: pd.DataFrame, feature_id: str, lang: str) -> None:
    spec = declared.get_layer(name)
    table = deck.feature_table(spec, frame, feature_id, lang)
    if table.empty:
        st.caption(t("map.feature_missing", lang))
        return
    st.dataframe(table.rename(columns={"label": t("map.attribute", lang),
                                       "value": t("map.value", lang)}),
                 hide_index=True, width="stretch")


def feature_detail(store, twin_layers: dict, data, picked, user, lang: str) -> None:
    """The picked feature: its attributes; a building its households, sensors and cases."""
    st.subheader(t("map.selected", lang))
    if picked is None:
        st.caption(t("map.select_hint", lang))
        return
    name, feature_id = picked
    st.markdown(f"**{md(layer_titles(lang).get(name, name))}** · {md(feature_id)}")
    if name == "cases":
        row = data.cases.loc[data.cases["id"].astype(str) == feature_id]
        if row.empty:
            st.caption(t("map.feature_missing", lang))
            return
        case = row.iloc[0]
        st.text(f"{status_names(lang).get(case['state'], case['state'])} · "
                f"{case['service_code']}")
        st.text(str(case["description"]))
        return
    if name == "alarms":
        st.dataframe(data.alarms.loc[data.alarms["id"].astype(str) == feature_id].T,
                     width="stretch")
        return
    if name not in twin_layers:
        return
    _attributes(name, twin_layers[name], feature_id, lang)
    if name == "grid_cells":
        row = data.grids.loc[data.grids["grid_code"].astype(str) == feature_id]
        if len(row):
            labels = indicator_labels(lang)
            values = row.iloc[0]
            cols = st.columns(3)
            for col, key in zip(cols, ("open_cases", "overdue", "alarms"), strict=True):
                col.metric(labels[key], int(values[key]))
    if name == "buildings":
        _building_detail(store, twin_layers, data, feature_id, user, lang)


def _building_detail(store, twin_layers: dict, data, code: str, user, lang: str) -> None:
    """Households (as the role may see them), the building's sensors and its open cases."""
    st.markdown(f"**{md(t('detail.households', lang))}**")
    try:
        residents = trust.read_residents(store, user, building_code=code, origin="web",
                                          buildings=twin_layers.get("buildings"),
                                          grid_cells=twin_layers.get("grid_cells"))
    except Exception:  # a missing residents layer or a refused read: say so, keep the page
        LOGGER.exception("reading residents of %s failed", code)
        residents = pd.DataFrame()
    if len(residents):
        st.dataframe(residents.drop(columns=["geometry", "attrs"], errors="ignore"),
                     hide_index=True, width="stretch", height=180)
    else:
        st.caption(t("detail.no_households", lang))
    sensors = data.sensors
    if len(sensors) and "ref_building" in sensors:
        mine = sensors.loc[sensors["ref_building"] == code, ["sensor_id", "kind", "state",
                                                              "values"]]
        if len(mine):
            st.markdown(f"**{md(t('layer.sensors', lang))}**")
            st.dataframe(mine, hide_index=True, width="stretch")
    buildings = data.buildings
    row = buildings.loc[buildings["building_code"] == code]
    if len(row):
        st.metric(t("ind.open_cases", lang), int(row.iloc[0]["open_cases"]))
