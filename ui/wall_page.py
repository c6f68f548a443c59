"""大屏 The big screen of the command centre: one 1920×1080 view, no scrolling, no sidebar.

Top: street → community → grid → building pickers. Left: ranking of grids and trends with
同比/环比. Centre: KPI tiles and the map with grid and building names. Right: alarms, most urgent
first, each acknowledged, dismissed with a reason or made a case in one click, and the live
events. Every panel follows the drill-down and refreshes on its own (fragments), keeping the
map's view.
"""

from __future__ import annotations

import html
import math

import pandas as pd
import streamlit as st

from twin import cockpit, deck
from ui import mapview
from ui.auth import require_page
from ui.common import current_language, error_text, local_time, open_twin, t
from ui.live import alarm_panel, live_events

LANG = current_language()
user = require_page("page.wall", LANG)

BOARD_REFRESH_S = 30
MAP_HEIGHT = mapview.WALL_MAP_HEIGHT
RANKED = 10
DRILLED = "wall_drilled_by_map"  # a click on the map drilled down: the page follows
WALL_LAYERS = ("grid_cells", "buildings", "cases", "sensors", "alarms")

CSS = """
<style>
[data-testid="stSidebar"], [data-testid="stSidebarCollapsedControl"],
header[data-testid="stHeader"], [data-testid="stDecoration"] {display: none !important;}
[data-testid="stMainBlockContainer"] {padding: 0.5rem 1rem 0 1rem !important;
  max-width: 100% !important;}
[data-testid="stMain"] [data-testid="stVerticalBlock"] {gap: 0.45rem;}
.stApp {background: radial-gradient(circle at 50% 0%, #0f1d33 0%, #070b14 70%);}
.gt-title {font-size: 1.55rem; font-weight: 700; color: #7fe7ff; letter-spacing: .08em;
  line-height: 2.4rem; white-space: nowrap;}
.gt-clock {font-size: 1.05rem; color: #9fb3c8; text-align: right; line-height: 2.4rem;}
.gt-panel {background: rgba(18, 30, 50, .78); border: 1px solid rgba(0, 229, 255, .25);
  border-radius: 6px; padding: .35rem .6rem; margin-bottom: .3rem;}
.gt-panel h4 {font-size: .95rem; color: #7fe7ff; margin: 0 0 .25rem 0; padding: 0;}
.gt-tiles {display: grid; grid-template-columns: repeat(6, 1fr); gap: .45rem;}
.gt-tile {background: rgba(18, 30, 50, .85); border: 1px solid rgba(0, 229, 255, .3);
  border-radius: 6px; padding: .3rem .6rem; height: 84px; overflow: hidden;}
.gt-tile .l {font-size: .8rem; color: #9fb3c8;}
.gt-tile .v {font-size: 1.8rem; font-weight: 700; color: #e6edf3; line-height: 2.2rem;}
.gt-tile .s {font-size: .72rem; color: #9fb3c8; white-space: nowrap; overflow: hidden;
  text-overflow: ellipsis;}
.gt-tile.bad .v {color: #ff5c6c;}
table.gt-rank {width: 100%; border-collapse: collapse; font-size: .95rem;}
table.gt-rank th {color: #9fb3c8; font-weight: 500; text-align: right; padding: 2px 4px;}
table.gt-rank td {text-align: right; padding: 6px 4px; border-top: 1px solid #1f2d44;}
table.gt-rank th:nth-child(-n+2), table.gt-rank td:nth-child(-n+2) {text-align: left;}
table.gt-rank tr.hot td {color: #ff8a95;}
.gt-trend {display: grid; grid-template-columns: 1.25fr .95fr 1.15fr 1.15fr; font-size: .9rem;
  row-gap: 8px; white-space: nowrap; margin-bottom: .4rem;}
.gt-trend .h {color: #9fb3c8;} .gt-up {color: #2ee59d;} .gt-down {color: #ff5c6c;}
.gt-h {font-size: 1.05rem; font-weight: 600; color: #7fe7ff; line-height: 1.6rem;
  margin-bottom: .5rem;}
.st-key-wall-alarms .stButton button, .st-key-wall-alarms [data-testid="stPopover"] button
  {min-height: 1.9rem; padding: 0 .4rem; font-size: .8rem;}
[data-testid="stToastContainer"] {right: auto !important; left: 34% !important;
  top: auto !important; bottom: 1.2rem !important; width: 30rem;}
[data-testid="stToast"] {background: rgba(18, 30, 50, .95) !important;
  border: 1px solid #00e5ff !important;}
.st-key-wall-right h3 {font-size: 1.05rem; line-height: 1.7rem; margin: 0;
  padding: 0; color: #7fe7ff;}
</style>
"""


def _pct(value: float) -> str:
    return "—" if value is None or pd.isna(value) else f"{value:.1f}%"


def _change(value: float, unit: str) -> str:
    """A comparison as an arrow and the change: points for rates, % for counts."""
    if value is None or pd.isna(value):
        return '<span class="h">—</span>'
    arrow, css = ("▲", "gt-up") if value > 0 else ("▼", "gt-down") if value < 0 else ("■", "h")
    suffix = t("wall.points", LANG) if unit == "%" else "%"
    return f'<span class="{css}">{arrow} {abs(value):.1f}{html.escape(suffix)}</span>'


# -- the header: title, drill-down pickers, back to the cockpit ---------------------------------


def drill_row(twin_layers: dict) -> tuple[cockpit.Scope, str | None]:
    """Street → community → grid → building pickers in one row; returns the scope and building."""
    cells = twin_layers["grid_cells"]
    codes = cells["grid_code"].astype(str)
    names = cockpit.unit_names(twin_layers)
    grid_names = dict(zip(codes, cells["name"], strict=True))
    every = t("drill.all", LANG)
    title, c1, c2, c3, c4, back = st.columns([2.3, 1.3, 1.3, 1.5, 1.5, 0.8],
                                             vertical_alignment="center")
    title.markdown(f'<div class="gt-title">{html.escape(t("wall.title", LANG))}</div>',
                   unsafe_allow_html=True)
    streets = sorted(codes.str[: cockpit.STREET_DIGITS].unique())
    street = c1.selectbox(t("drill.street", LANG), [None, *streets], key="wall_street",
                          format_func=lambda c: every if c is None else names.get(c, c),
                          label_visibility="collapsed")
    communities = sorted(codes[codes.str.startswith(street or "")]
                         .str[: cockpit.COMMUNITY_DIGITS].unique())
    community = c2.selectbox(t("drill.community", LANG), [None, *communities],
                             key="wall_community", label_visibility="collapsed",
                             format_func=lambda c: every if c is None else names.get(c, c))
    in_community = sorted(codes[codes.str.startswith(community or street or "")])
    grid = c3.selectbox(t("drill.grid", LANG), [None, *in_community], key="wall_grid",
                        label_visibility="collapsed",
                        format_func=lambda c: t("wall.all_grids", LANG) if c is None
                        else grid_names.get(c, c))
    building = None
    buildings = twin_layers.get("buildings")
    if grid and buildings is not None and len(buildings):
        mine = buildings.loc[buildings["grid_code"].astype(str) == grid]
        labels = dict(zip(mine["building_code"].astype(str),
                          mine["name"].fillna(mine["building_code"]).astype(str), strict=True))
        building = c4.selectbox(t("wall.building", LANG), [None, *sorted(labels)],
                                key="wall_building", label_visibility="collapsed",
                                format_func=lambda c: t("wall.all_buildings", LANG) if c is None
                                else labels.get(c, c))
    else:
        c4.selectbox(t("wall.building", LANG), [None], key="wall_building_none",
                     label_visibility="collapsed", disabled=True,
                     format_func=lambda c: t("wall.pick_grid_first", LANG))
    back.page_link("ui/cockpit_page.py", label=t("wall.back", LANG), icon=":material/dashboard:")
    if grid and not grid.startswith(community or street or ""):
        grid, building = None, None
    if community and not community.startswith(street or ""):
        community = None
    return cockpit.Scope(street=street, community=community, grid=grid), building


# -- the board: ranking, trends, tiles, map ------------------------------------------------------


def ranking_html(data: cockpit.CockpitData) -> str:
    """The grids of the scope, worst first: open, overdue, on hold, on-time close rate."""
    rows = data.ranking.head(RANKED)
    head = "".join(f"<th>{html.escape(h)}</th>" for h in (
        "#", t("wall.rank.grid", LANG), t("wall.rank.open", LANG), t("wall.rank.overdue", LANG),
        t("wall.rank.on_hold", LANG), t("wall.rank.ontime", LANG)))
    body = "".join(
        f'<tr class="{"hot" if r.overdue else ""}" data-grid="{html.escape(r.code)}">'
        f"<td>{i}</td><td>{html.escape(str(r.name))}</td><td>{r.open_cases}</td>"
        f"<td>{r.overdue}</td><td>{r.on_hold}</td><td>{_pct(r.ontime_close_rate)}</td></tr>"
        for i, r in enumerate(rows.itertuples(index=False), start=1))
    return (f'<div class="gt-panel gt-ranking"><h4>{html.escape(t("wall.ranking", LANG))}</h4>'
            f'<table class="gt-rank"><tr>{head}</tr>{body}</table></div>')


def trends_html(data: cockpit.CockpitData) -> str:
    """This month so far with 环比 and 同比, and reports per day as small bars (SVG)."""
    names = {"reports": t("wall.trend.reports", LANG),
             "close_rate": t("kpi.close_rate", LANG),
             "ontime_close_rate": t("kpi.ontime_close_rate", LANG)}
    cells = [f'<span class="h">{html.escape(h)}</span>' for h in (
        t("wall.trend.metric", LANG), t("wall.trend.month", LANG), t("wall.trend.mom", LANG),
        t("wall.trend.yoy", LANG))]
    for r in data.trends.itertuples(index=False):
        value = f"{r.value:,.0f}" if r.unit == "count" else _pct(r.value)
        cells += [html.escape(names[r.metric]), value, _change(r.mom, r.unit),
                  _change(r.yoy, r.unit)]
    grid = "".join(f"<div>{c}</div>" for c in cells)
    return (f'<div class="gt-panel gt-trends"><h4>{html.escape(t("wall.trends", LANG))}</h4>'
            f'<div class="gt-trend">{grid}</div>{_bars(data.daily)}</div>')


def _bars(daily: pd.DataFrame, width: int = 400, height: int = 250) -> str:
    """Reports per day as an inline SVG bar chart with its first and last day."""
    if daily.empty:
        return ""
    top = max(int(daily["count"].max()), 1)
    step = width / len(daily)
    bars = "".join(
        f'<rect x="{i * step + 1:.1f}" y="{height - 16 - (c / top) * (height - 30):.1f}" '
        f'width="{max(step - 2, 1):.1f}" height="{(c / top) * (height - 30):.1f}" '
        f'fill="#00b8d4"><title>{d:%m-%d}: {c}</title></rect>'
        for i, (d, c) in enumerate(zip(daily["day"], daily["count"], strict=True)))
    first, last = daily["day"].iloc[0], daily["day"].iloc[-1]
    caption = html.escape(t("wall.trend.daily", LANG, days=len(daily), most=top))
    return (f'<svg viewBox="0 0 {width} {height}" width="100%" height="{height}">{bars}'
            f'<text x="0" y="{height - 2}" fill="#9fb3c8" font-size="11">{first:%m-%d}</text>'
            f'<text x="{width}" y="{height - 2}" fill="#9fb3c8" font-size="11" '
            f'text-anchor="end">{last:%m-%d}</text>'
            f'<text x="{width / 2}" y="12" fill="#9fb3c8" font-size="11" '
            f'text-anchor="middle">{caption}</text></svg>')


def tiles_html(data: cockpit.CockpitData) -> str:
    """Six KPI tiles; overdue counts only running clocks (on-hold cases are apart)."""
    k = data.kpis
    online = k.get("sensors_online")
    tiles = [
        ("", t("kpi.reports_today", LANG), f"{k['reports_today']:,}",
         t("wall.tile.as_of", LANG, time=local_time(pd.Series([data.at]), "%H:%M").iloc[0])),
        ("", t("kpi.open", LANG), f"{k['open']:,}",
         t("wall.tile.on_hold", LANG, count=k.get("on_hold", 0))),
        ("bad" if k["overdue"] else "", t("kpi.overdue", LANG), f"{k['overdue']:,}",
         t("wall.tile.overdue_of", LANG, open=k["open"] - k.get("on_hold", 0))),
        ("", t("kpi.close_rate", LANG), _pct(k["close_rate"]), t("wall.tile.year", LANG)),
        ("", t("kpi.ontime_close_rate", LANG), _pct(k["ontime_close_rate"]),
         t("wall.tile.year", LANG)),
        ("bad" if len(data.alarms) else "", t("wall.tile.alarms", LANG), f"{len(data.alarms):,}",
         t("wall.tile.sensors", LANG, online=online[0] if online else 0,
           total=online[1] if online else 0)),
    ]
    body = "".join(
        f'<div class="gt-tile {css}" data-tile="{i}"><div class="l">{html.escape(label)}</div>'
        f'<div class="v">{html.escape(value)}</div><div class="s">{html.escape(sub)}</div></div>'
        for i, (css, label, value, sub) in enumerate(tiles))
    return f'<div class="gt-tiles">{body}</div>'


def building_bounds(twin_layers: dict, building: str | None) -> tuple | None:
    """The extent of the chosen building, widened to about 150 m around it."""
    if building is None or "buildings" not in twin_layers:
        return None
    rows = twin_layers["buildings"]
    rows = rows.loc[rows["building_code"].astype(str) == building]
    if rows.empty:
        return None
    minx, miny, maxx, maxy = rows.total_bounds
    pad = 0.0015
    return (minx - pad, miny - pad * math.cos(math.radians(miny)), maxx + pad,
            maxy + pad * math.cos(math.radians(maxy)))


def draw_map(data: cockpit.CockpitData, twin_layers: dict, building: str | None) -> None:
    """The thematic map (grids coloured by overdue cases) with grid and building names."""
    chart = deck.thematic_deck(
        data, WALL_LAYERS, mapview.tooltip_labels(LANG), LANG, grid_indicator="overdue",
        view_state=mapview.fitted_view(data, MAP_HEIGHT, building_bounds(twin_layers, building)),
        status_names=mapview.status_names(LANG),
        state_names=mapview.sensor_state_names(LANG), height=MAP_HEIGHT)
    if len(data.grids):
        chart.layers.append(deck.name_labels(data.grids, data.grids["name"],
                                             deck.GRID_NAMES_ID, size=15))
    if data.scope.level == "grid" and len(data.buildings) and "name" in data.buildings:
        chart.layers.append(deck.name_labels(data.buildings, data.buildings["name"],
                                             deck.BUILDING_NAMES_ID, size=12,
                                             color=(255, 226, 140, 235)))
    # a map per drill level and place: a drill starts the new map with nothing selected
    key = "wall-map-" + "-".join(str(part) for part in (data.scope.level, data.scope.street,
                                                        data.scope.community, data.scope.grid))
    st.pydeck_chart(chart, height=MAP_HEIGHT, key=key, selection_mode="single-object",
                    on_select=drill_on_click(twin_layers, key))


def drill_on_click(twin_layers: dict, key: str):
    """A click on the map drills down to what was clicked: a grid, or a building in its grid.

    The callback sets the drill pickers (it runs before any widget of the next run exists) and
    asks the board for a whole-page run, so the header, panels and alarms follow the click.
    """
    def drill() -> None:
        picked = deck.selected_feature(st.session_state.get(key))
        if picked is None:
            return
        layer, feature = picked
        if layer == "grid_cells":
            grid, building = feature, None
        elif layer == "buildings" and twin_layers.get("buildings") is not None:
            rows = twin_layers["buildings"]
            rows = rows.loc[rows["building_code"].astype(str) == feature, "grid_code"]
            if rows.empty or pd.isna(rows.iloc[0]):
                return
            grid, building = str(rows.iloc[0]), feature
        else:
            return
        st.session_state.update({
            "wall_street": grid[: cockpit.STREET_DIGITS],
            "wall_community": grid[: cockpit.COMMUNITY_DIGITS],
            "wall_grid": grid, DRILLED: True})
        if building is None:  # the picker's own first option ("all buildings"), not a blank
            st.session_state.pop("wall_building", None)
        else:
            st.session_state["wall_building"] = building

    return drill


@st.fragment(run_every=BOARD_REFRESH_S)
def board(store, twin_layers: dict, scope: cockpit.Scope, building: str | None) -> None:
    """Ranking and trends (left), tiles and map (centre): one read, refreshed on its own."""
    if st.session_state.pop(DRILLED, False):
        st.rerun(scope="app")  # a click on the map drilled down: the whole page follows
    try:
        data = cockpit.cockpit_data(store, scope=scope, layers=twin_layers, wall=True)
    except Exception as exc:  # the board's edge: a message in place of the panels
        st.error(t("cockpit.error", LANG, error=error_text(exc, LANG, what="the wall board")))
        return
    left, centre = st.columns([1.05, 2.45])
    with left, st.container(key="wall-left"):
        st.markdown(ranking_html(data), unsafe_allow_html=True)
        st.markdown(trends_html(data), unsafe_allow_html=True)
    with centre, st.container(key="wall-centre"):
        st.markdown(tiles_html(data), unsafe_allow_html=True)
        try:
            draw_map(data, twin_layers, building)
        except Exception as exc:  # the map's edge
            st.error(t("map.error", LANG, error=error_text(exc, LANG, what="the wall map")))


# -- the page -----------------------------------------------------------------------------------

st.markdown(CSS, unsafe_allow_html=True)
opened = open_twin(LANG)
if opened is None:
    st.stop()
store, twin_layers = opened
if "grid_cells" not in twin_layers:
    st.info(t("cockpit.no_grids", LANG))
    st.stop()

scope, building = drill_row(twin_layers)
cells = twin_layers["grid_cells"]
grid_names = dict(zip(cells["grid_code"].astype(str), cells["name"], strict=True))
in_scope = cells["grid_code"].astype(str)
in_scope = tuple(sorted(in_scope[scope.mask(in_scope)])) if scope.level != "district" else None

board_col, right = st.columns([3.5, 1.25])
with board_col:
    board(store, twin_layers, scope, building)
with right, st.container(key="wall-right"):
    st.markdown(f'<div class="gt-h">{html.escape(t("live.alarms.title", LANG))}</div>',
                unsafe_allow_html=True)
    with st.container(key="wall-alarms"):
        alarm_panel(store, user, LANG, grid_cells=cells, grids=in_scope, building=building,
                    grid_names=grid_names, acted=3, listed=6, key="wall")
    with st.container(key="wall-live"):
        live_events(store, LANG, in_scope, building, height=250, grid_names=grid_names)
