"""What the cockpit pages draw, computed without streamlit: KPI tiles, choropleths, drill-down."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import geopandas as gpd
import numpy as np
import pandas as pd
import shapely

from twin import cases as caseloop
from twin import kpi, layercache, schema
from twin.crs import utm_crs
from twin.errors import LayerNotFoundError, ValidationError
from twin.lru import LRUCache
from twin.store.base import Store
from twin.timeutil import local_zone, to_local, to_utc
from twin.twin import Twin

LOGGER = logging.getLogger(__name__)

#: The time-window filter of the cockpit: name → length.
WINDOWS: dict[str, timedelta] = {
    "1h": timedelta(hours=1),
    "24h": timedelta(hours=24),
    "7d": timedelta(days=7),
}
#: Metrics buildings can be coloured by, and indicators grid cells can be coloured by.
BUILDING_METRICS = ("open_cases", "alarms", "households")
GRID_INDICATORS = ("open_cases", "overdue", "reports", "alarms", "households")
#: Drill-down levels, top first; a scope is a path down them.
LEVELS = ("district", "street", "community", "grid")
#: Digits of the unit-grid code that name a street and a community (GB/T 2260 county + 3 + 3).
STREET_DIGITS, COMMUNITY_DIGITS = 9, 12
#: Features of a layer sent to the map at most, per layer. Past its budget a layer is thinned to
#: its most important features (cases: overdue first; sensors: alarm and offline first) or, for
#: buildings and cameras, left to the grid choropleth until the user drills down (see ``hidden``).
#: At district scale (20,000 buildings) this is what keeps a rerun under 1 s and 5 MB.
FEATURE_BUDGET = {"buildings": 3000, "cameras": 1000, "sensors": 1500, "cases": 2000}
#: Budget of a layer not named in :data:`FEATURE_BUDGET`.
MAX_FEATURES = 5000
#: Cases, events and alarms read from a store are reused while its watermark is unchanged;
#: a store that cannot tell its watermark is re-read after this many seconds.
INPUT_TTL_S = 5.0
#: Entries kept by each of the cockpit's small caches (inputs, building indexes).
CACHE_ENTRIES = 8
#: Sensors are online when they reported within this many of their report intervals.
ONLINE_INTERVALS = 3.0
#: How far back the live state of sensors and parking lots is read.
LIVE_LOOKBACK = timedelta(hours=1)
#: A case is drawn on the building it lies within this many metres of.
CASE_BUILDING_M = 30.0
KPI_NAMES = ("reports_today", "open", "overdue", "on_hold", "close_rate", "ontime_close_rate",
             "sensors_online", "parking_available", "air_quality")
CASE_STATES = ("open", "warning", "overdue", "closed")
_OPEN_ALARMS = ("open", "acknowledged", "in_progress")
_TERMINAL = set(caseloop.TERMINAL) | {"cancelled"}


# -- scope ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Scope:
    """Where the cockpit looks: a path down street → community → grid, and the grids allowed.

    ``street`` and ``community`` are the leading 9 and 12 digits of unit-grid codes; ``grid`` a
    whole unit-grid code. ``grids`` restricts everything to those unit grids (a grid worker's).
    """

    street: str | None = None
    community: str | None = None
    grid: str | None = None
    grids: frozenset[str] | None = None

    @property
    def level(self) -> str:
        """The deepest level chosen: ``district``, ``street``, ``community`` or ``grid``."""
        if self.grid:
            return "grid"
        if self.community:
            return "community"
        return "street" if self.street else "district"

    @property
    def prefix(self) -> str:
        """The unit-grid code prefix of the scope (empty at district level)."""
        return self.grid or self.community or self.street or ""

    def mask(self, grid_codes: pd.Series) -> np.ndarray:
        """Return True for the rows whose unit grid lies in the scope (vectorised prefix test)."""
        codes = grid_codes.astype("string")
        keep = np.ones(len(codes), dtype=bool)
        if self.prefix:
            hit = codes == self.grid if self.grid else codes.str.startswith(self.prefix)
            keep &= hit.fillna(False).to_numpy(dtype=bool)
        if self.grids is not None:
            keep &= codes.isin(sorted(self.grids)).fillna(False).to_numpy(dtype=bool)
        return keep

    def down(self, code: str) -> Scope:
        """Return the scope one level further down, at the child unit *code*."""
        level = LEVELS[min(LEVELS.index(self.level) + 1, len(LEVELS) - 1)]
        return Scope(**{**self._path(), level: code, "grids": self.grids})

    def _path(self) -> dict[str, str | None]:
        return {"street": self.street, "community": self.community, "grid": self.grid}


# -- inputs (the only I/O) ---------------------------------------------------------------------


@dataclass
class CockpitInputs:
    """Everything the cockpit reads from the store for one moment: layers, cases, events, alarms."""

    at: pd.Timestamp
    window: str
    layers: dict[str, gpd.GeoDataFrame]
    cases: pd.DataFrame
    events: pd.DataFrame
    live: pd.DataFrame
    alarms: pd.DataFrame


def as_time(value: Any = None) -> pd.Timestamp:
    """Return a timezone-aware UTC timestamp: *value* (naive means UTC), or now."""
    return pd.Timestamp.now(tz="UTC") if value is None else to_utc(value)


def window_length(window: str) -> timedelta:
    """Return the length of a time window name (``1h``, ``24h``, ``7d``).

    Raises
    ------
    ValidationError
        If *window* is not one of :data:`WINDOWS`.
    """
    try:
        return WINDOWS[window]
    except KeyError:
        raise ValidationError(
            f"unknown time window {window!r}; choose one of {', '.join(WINDOWS)}"
        ) from None


def _twin(source: Store | Twin) -> Twin:
    return source if isinstance(source, Twin) else Twin(source)


def read_alarms(store: Store) -> pd.DataFrame:
    """Return the alarms table, or an empty frame when the store does not keep alarms yet."""
    table = getattr(schema, "ALARMS", None)
    empty = pd.DataFrame(columns=["id", "status", "severity", "source_id", "opened_at",
                                  "resolved_at", "property", "value", "lon", "lat",
                                  "grid_code", "building_code", "case_id"])
    if table is None:
        return empty
    try:
        return store.read_rows(table)
    except (NotImplementedError, LayerNotFoundError):
        return empty


_INPUTS = LRUCache(CACHE_ENTRIES)
#: Open cases' buildings, per buildings frame and case positions (see :func:`nearest_building`).
_NEAREST = LRUCache(CACHE_ENTRIES)


def clear_caches() -> None:
    """Forget every cached read and index (tests; after restoring a store from a backup)."""
    _INPUTS.clear()
    _NEAREST.clear()
    layercache.clear()


def store_watermark(store: Store) -> Hashable | None:
    """Return a token that changes whenever the store's cases, events or alarms may have changed.

    :meth:`twin.store.base.Store.watermark`: for a file store the size and modification time
    of the file and its write-ahead log; None when the store cannot tell (the cockpit then
    re-reads every :data:`INPUT_TTL_S` seconds).
    """
    return store.watermark()


def _read_key(store: Store) -> tuple:
    mark = store_watermark(store)
    if mark is None:
        mark = ("ttl", int(time.monotonic() // INPUT_TTL_S))
    return (type(store).__name__, getattr(store, "url", id(store)), id(store), mark)


def _read_cases(store: Store) -> pd.DataFrame:
    cases = pd.DataFrame(store.read_cases())
    if len(cases) == 0:
        return cases
    # the timers and step times once per change of the table, not on every rerun
    return caseloop.case_table(cases.drop(columns="geometry", errors="ignore"))


def load_inputs(source: Store | Twin, *, at: Any = None, window: str = "24h",
                layers: dict[str, gpd.GeoDataFrame] | None = None) -> CockpitInputs:
    """Read what the cockpit needs at time *at* (default now) for the time *window*.

    Layers are *layers* when given (a page's per-version cache), else read through the
    :class:`~twin.twin.Twin`; events are read only for the window (reports and camera alerts)
    and the last hour (sensor readings). Cases, events and alarms are read again only when the
    store's :func:`store_watermark` changes, so a rerun with nothing new reads nothing.
    """
    twin = _twin(source)
    ts = as_time(at)
    span = window_length(window)
    if layers is None:
        layers = {name: twin.layer(name) for name in twin.versions()}
    frames = dict(layers)
    store = twin.store
    key = _read_key(store)
    cases = _INPUTS.get((*key, "cases"), lambda: _read_cases(store))
    if len(cases):
        cases = cases.loc[pd.to_datetime(cases["requested_at"], utc=True) <= ts]
    # now (``at`` None) reads open-ended, so later reruns reuse it while nothing is written
    end = None if at is None else ts + timedelta(microseconds=1)
    events = _since(key, "events", ts - span, end, lambda start: _events(store, start, end))
    live = _since(key, "obs", ts - LIVE_LOOKBACK, end,
                  lambda start: pd.DataFrame(store.read_events(start, end, kind="obs")))
    events = _until(events, ts - span, ts)
    live = _until(live, ts - LIVE_LOOKBACK, ts)
    alarms = _INPUTS.get((*key, "alarms"), lambda: read_alarms(store))
    return CockpitInputs(ts, window, frames, cases, events, live, alarms)


def _since(key: tuple, what: str, start: pd.Timestamp, end: pd.Timestamp | None,
           read: Callable[[pd.Timestamp], pd.DataFrame]) -> pd.DataFrame:
    """Events from *start* on, from a cached read that began no later (else read afresh)."""
    cached = _INPUTS.get((*key, what, end), lambda: (start, read(start)))
    if cached[0] <= start:
        return cached[1]
    fresh = (start, read(start))
    _INPUTS.put((*key, what, end), fresh)
    return fresh[1]


def _events(store: Store, start: pd.Timestamp, end: pd.Timestamp | None) -> pd.DataFrame:
    events = pd.DataFrame(store.read_events(start, end))
    return events.loc[events["kind"] != "obs"] if len(events) else events


def _until(events: pd.DataFrame, start: pd.Timestamp, end: pd.Timestamp) -> pd.DataFrame:
    """Events with ``start <= observed_at <= end`` (a cached read may cover more)."""
    if len(events) == 0:
        return events
    observed = pd.to_datetime(events["observed_at"], utc=True)
    return events.loc[(observed >= start) & (observed <= end)]


# -- the twin at time t -------------------------------------------------------------------------


def cases_at(cases: pd.DataFrame, at: Any = None) -> pd.DataFrame:
    """Cases as they stood at *at*: requested by then, with their ``state`` at that moment.

    ``state`` is ``closed`` (closed, cancelled or merged by *at*), ``overdue`` (open and past
    its stage or total deadline, unless on hold: 挂账 stops the clock), ``warning`` (the
    running stage timer near its end, see :func:`twin.cases.timer_states`) or ``open``.
    Timers come from :func:`twin.cases.case_table`.
    """
    ts = as_time(at)
    columns = ["id", "status", "state", "service_code", "description", "lon", "lat",
               "grid_code", "assignee", "requested_at", "deadline_at", "closed_at"]
    if cases is None or len(cases) == 0:
        return pd.DataFrame({c: pd.Series(dtype=object) for c in columns})
    frame = pd.DataFrame(cases)
    if "held" in frame and "timer_deadline" in frame:  # already a case table (load_inputs)
        table = frame
    else:
        table = caseloop.case_table(frame.drop(columns="geometry", errors="ignore"))
    requested = pd.to_datetime(table["requested_at"], utc=True)
    table = table.loc[requested <= ts].copy()
    closed_at = pd.to_datetime(table["closed_at"], utc=True)
    finished = table["status"].isin(_TERMINAL) & (closed_at.isna() | (closed_at <= ts))
    deadline = pd.to_datetime(table["deadline_at"], utc=True)
    timer = pd.to_datetime(table["timer_deadline"], utc=True)
    # an on-hold case (挂账) has its clock stopped: it stays open but is never overdue
    held = table["status"].eq("on_hold")
    late = ((deadline < ts) | (timer < ts)).fillna(False) & ~held
    state = np.where(finished, "closed", np.where(late, "overdue", "open")).astype(object)
    running = table.loc[~finished & table["status"].isin(caseloop.OPEN_STATUSES)]
    if len(running) and running["timer_deadline"].notna().any():
        timers = caseloop.timer_states(running, ts).set_index("id")["timer_state"]
        warn = table["id"].map(timers).eq("warning").to_numpy() & (state == "open")
        state[warn] = "warning"
    table["state"] = state
    filed = pd.to_datetime(table["filed_at"], utc=True)
    fallback = requested.loc[table.index].where(table["status"] != "collected")
    table["filed_at"] = filed.fillna(fallback.astype(filed.dtype))
    return table


def _local_midnight(ts: pd.Timestamp) -> pd.Timestamp:
    return to_local(ts).normalize().tz_convert("UTC")


def _payload_values(payloads: pd.Series) -> pd.DataFrame:
    """Return the ``values`` objects of event payloads spread into columns (one JSON decode)."""
    texts = [p if isinstance(p, str) else json.dumps(p if isinstance(p, dict) else {})
             for p in payloads]
    decoded = json.loads("[" + ",".join(texts) + "]") if texts else []
    rows = [d.get("values", d) if isinstance(d, dict) else {} for d in decoded]
    return pd.DataFrame(rows, index=payloads.index)


def latest_readings(live: pd.DataFrame) -> pd.DataFrame:
    """Return every sensor's newest reading: ``source_id``, ``observed_at``, a column a value."""
    if live is None or len(live) == 0:
        return pd.DataFrame({"source_id": pd.Series(dtype=object),
                             "observed_at": pd.Series(dtype="datetime64[ns, UTC]")})
    last = live.sort_values("observed_at").drop_duplicates("source_id", keep="last")
    values = _payload_values(last["payload"])
    out = pd.concat([last[["source_id", "observed_at", "lot_id"]], values], axis=1)
    return out.reset_index(drop=True)


def sensor_states(sensors: pd.DataFrame, readings: pd.DataFrame, alarms: pd.DataFrame,
                  at: Any = None) -> pd.DataFrame:
    """Every sensor's ``state`` (``alarm``, ``ok``, ``offline``), last report and live values.

    A sensor is online when it reported within :data:`ONLINE_INTERVALS` report intervals (or,
    with no reading at all in the store's recent past, when its declared ``device_state`` is not
    ``offline``); it is in alarm while an alarm about it is open.
    """
    ts = as_time(at)
    out = pd.DataFrame(sensors).drop(columns="geometry", errors="ignore")
    seen = out["sensor_id"].map(readings.set_index("source_id")["observed_at"]) if len(
        readings) else pd.Series(pd.NaT, index=out.index, dtype="datetime64[ns, UTC]")
    interval = pd.to_numeric(out.get("report_interval_s"), errors="coerce").fillna(300.0)
    fresh = (ts - pd.to_datetime(seen, utc=True)).dt.total_seconds() <= interval * ONLINE_INTERVALS
    if len(readings):
        online = fresh.fillna(False)
    else:
        online = out.get("device_state", pd.Series("ok", index=out.index)).ne("offline")
    alarmed = set(alarms.loc[alarms["status"].isin(_OPEN_ALARMS), "source_id"]) if len(
        alarms) else set()
    out["last_seen"] = seen
    out["online"] = online.to_numpy(dtype=bool)
    out["state"] = np.where(out["sensor_id"].isin(alarmed), "alarm",
                            np.where(out["online"], "ok", "offline"))
    value_cols = [c for c in readings.columns if c not in ("source_id", "observed_at", "lot_id")]
    if value_cols:
        table = readings.set_index("source_id")[value_cols]
        text = pd.Series("", index=table.index, dtype="string")
        for col in value_cols:  # one vectorised string op per property, not per sensor
            val = table[col].astype("string")
            text = text + (col + "=" + val + " ").fillna("")
        out["values"] = out["sensor_id"].map(text.str.strip()).astype(object)
    else:
        out["values"] = None
    if "geometry" in sensors:
        out = gpd.GeoDataFrame(out, geometry=sensors.geometry.values, crs=sensors.crs)
    return out


def parking_state(lots: pd.DataFrame, sensors: pd.DataFrame | None,
                  readings: pd.DataFrame) -> pd.DataFrame:
    """Lots with ``available`` spaces from their sensors' last readings (NaN when none report).

    The share of a lot's reporting space sensors that are free is applied to its total spaces.
    """
    out = lots.copy()
    total = pd.to_numeric(out.get("total_spaces"), errors="coerce")
    available = pd.Series(np.nan, index=out.index)
    if len(readings) and "occupied" in readings and sensors is not None and len(sensors):
        lot_of = sensors.set_index("sensor_id")["ref_lot"] if "ref_lot" in sensors else None
        r = readings.loc[readings["occupied"].notna()].copy()
        lot = r["source_id"].map(lot_of) if lot_of is not None else r["lot_id"]
        r["lot"] = lot.fillna(r.get("lot_id"))
        free_share = 1.0 - pd.to_numeric(r["occupied"], errors="coerce").groupby(r["lot"]).mean()
        share = out["lot_id"].map(free_share)
        available = (share * total).round()
    out["available"] = available
    out["free_share"] = (available / total.replace(0, np.nan)).round(3)
    return out


# -- aggregation --------------------------------------------------------------------------------


def _count_by(keys: pd.Series, index: pd.Index) -> np.ndarray:
    if len(keys) == 0:
        return np.zeros(len(index), dtype="int64")
    counts = keys.value_counts()
    return counts.reindex(index).fillna(0).astype("int64").to_numpy()


def grid_table(grid_cells: gpd.GeoDataFrame, cases_t: pd.DataFrame, events: pd.DataFrame,
               alarms: pd.DataFrame, buildings: pd.DataFrame | None) -> gpd.GeoDataFrame:
    """Return unit grids with their indicators: open, overdue cases, reports, alarms, households.

    Also derives the full ``street`` and ``community`` codes (leading digits of the grid code).
    """
    cols = [c for c in ("grid_code", "name", "resp_grid_id", "grid_worker", "management_level")
            if c in grid_cells]
    out = gpd.GeoDataFrame(grid_cells[cols].copy(), geometry=grid_cells.geometry.values,
                           crs=grid_cells.crs)
    code = out["grid_code"].astype(str)
    out["street"] = code.str[:STREET_DIGITS]
    out["community"] = code.str[:COMMUNITY_DIGITS]
    index = pd.Index(code)
    open_cases = cases_t.loc[cases_t["state"] != "closed"]
    out["open_cases"] = _count_by(open_cases["grid_code"], index)
    out["overdue"] = _count_by(cases_t.loc[cases_t["state"] == "overdue", "grid_code"], index)
    out["reports"] = _count_by(events["grid_code"], index) if len(events) else 0
    live_alarms = alarms.loc[alarms["status"].isin(_OPEN_ALARMS)] if len(alarms) else alarms
    out["alarms"] = _count_by(live_alarms["grid_code"], index) if len(live_alarms) else 0
    if buildings is not None and "households" in buildings:
        hh = pd.to_numeric(buildings["households"], errors="coerce").groupby(
            buildings["grid_code"]).sum()
        out["households"] = code.map(hh).fillna(0).astype("int64").to_numpy()
    else:
        out["households"] = 0
    return out


def nearest_building(buildings: gpd.GeoDataFrame, lon: np.ndarray, lat: np.ndarray,
                     max_m: float = CASE_BUILDING_M) -> np.ndarray:
    """Return the building code each point lies in or within *max_m* metres of (None otherwise).

    One STRtree query for all points, in a local metric CRS (UTM of the buildings).
    """
    if len(buildings) == 0 or len(lon) == 0:
        return np.full(len(lon), None, dtype=object)
    lon = np.asarray(lon, dtype="float64")
    lat = np.asarray(lat, dtype="float64")
    # the same open cases on the same buildings rerun after rerun: looked up once (the entry
    # holds the frame, so its id cannot be reused while the entry lives)
    key = (id(buildings), len(buildings), max_m, lon.tobytes(), lat.tobytes())
    held = _NEAREST.get(key, lambda: (buildings, _nearest_building(buildings, lon, lat, max_m)))
    return held[1].copy()


def _nearest_building(buildings: gpd.GeoDataFrame, lon: np.ndarray, lat: np.ndarray,
                      max_m: float) -> np.ndarray:
    out = np.full(len(lon), None, dtype=object)
    metric, tree, codes = _building_index(buildings)
    points = gpd.GeoSeries(gpd.points_from_xy(lon, lat), crs=4326).to_crs(metric).values
    pos, hit = tree.query_nearest(points, max_distance=max_m, all_matches=False)
    out[pos] = codes[hit]
    return out


def _building_index(buildings: gpd.GeoDataFrame) -> tuple[str, shapely.STRtree, np.ndarray]:
    """Return the metric CRS, STRtree and codes of *buildings*, built once per frame."""

    def make() -> tuple[str, shapely.STRtree, np.ndarray]:
        minx, miny, maxx, maxy = buildings.total_bounds
        metric = utm_crs((minx + maxx) / 2, (miny + maxy) / 2)
        tree = shapely.STRtree(buildings.geometry.to_crs(metric).values)
        return metric, tree, buildings["building_code"].to_numpy(dtype=object)

    return layercache.of_frame(buildings, "building-index", make)


def building_table(buildings: gpd.GeoDataFrame, cases_t: pd.DataFrame,
                   alarms: pd.DataFrame) -> gpd.GeoDataFrame:
    """Return buildings with ``open_cases`` (within :data:`CASE_BUILDING_M`) and open ``alarms``."""
    keep = [c for c in ("building_code", "name", "use", "floors", "height_m", "households",
                        "residents_count", "address", "grid_code") if c in buildings]
    out = buildings[keep + ["geometry"]].copy()
    index = pd.Index(out["building_code"].astype(str))
    open_cases = cases_t.loc[cases_t["state"] != "closed"]
    codes = nearest_building(buildings, pd.to_numeric(open_cases["lon"]).to_numpy(),
                             pd.to_numeric(open_cases["lat"]).to_numpy())
    out["open_cases"] = _count_by(pd.Series(codes).dropna(), index)
    if len(alarms) and "building_code" in alarms:
        live = alarms.loc[alarms["status"].isin(_OPEN_ALARMS), "building_code"].dropna()
        out["alarms"] = _count_by(live, index)
    else:
        out["alarms"] = 0
    out["households"] = pd.to_numeric(out.get("households"), errors="coerce").fillna(0)
    return out


def close_rates(cases_t: pd.DataFrame, at: Any = None) -> dict[str, float | None]:
    """结案率 and 按期结案率 (%) as of *at*, from :func:`twin.kpi.indicators`."""
    if len(cases_t) == 0:
        return {"close_rate": None, "ontime_close_rate": None}
    row = kpi.indicators(cases_t, as_of=as_time(at), compare=False).iloc[0]

    def pct(name: str) -> float | None:
        value = row.get(name)
        return None if value is None or pd.isna(value) else round(float(value), 2)

    return {"close_rate": pct("close_rate"), "ontime_close_rate": pct("ontime_close_rate")}


def kpi_tiles(cases_t: pd.DataFrame, sensors: pd.DataFrame, parking: pd.DataFrame,
              readings: pd.DataFrame, at: Any = None) -> dict[str, Any]:
    """Return the cockpit's KPI tiles (see :data:`KPI_NAMES`); unknown values are None.

    ``sensors_online`` is ``(online, total)``; ``air_quality`` the mean of the air sensors'
    latest PM2.5 (µg/m³).
    """
    ts = as_time(at)
    requested = pd.to_datetime(cases_t["requested_at"], utc=True)
    open_mask = cases_t["state"] != "closed"
    out: dict[str, Any] = {
        "reports_today": int((requested >= _local_midnight(ts)).sum()),
        "open": int(open_mask.sum()),
        "overdue": int((cases_t["state"] == "overdue").sum()),
        "on_hold": int((open_mask & cases_t["status"].eq("on_hold")).sum()),
        **close_rates(cases_t, ts),
        "sensors_online": (int(sensors["online"].sum()), len(sensors)) if len(sensors) else None,
        "parking_available": None,
        "air_quality": None,
    }
    if len(parking) and parking["available"].notna().any():
        out["parking_available"] = int(parking["available"].sum())
    if len(readings) and "pm25" in readings:
        pm = pd.to_numeric(readings["pm25"], errors="coerce").dropna()
        out["air_quality"] = round(float(pm.mean()), 1) if len(pm) else None
    return out


def drill_table(grids: gpd.GeoDataFrame, buildings: gpd.GeoDataFrame | None, scope: Scope,
                names: dict[str, str]) -> pd.DataFrame:
    """One row per child unit of the scope: ``code``, ``name`` and the summed grid indicators.

    District → streets, street → communities, community → unit grids, grid → buildings.
    """
    sums = ["open_cases", "overdue", "reports", "alarms", "households"]
    if scope.level == "grid":
        if buildings is None or len(buildings) == 0:
            return pd.DataFrame(columns=["code", "name", "open_cases", "alarms", "households"])
        rows = buildings.loc[scope.mask(buildings["grid_code"])]
        table = pd.DataFrame({"code": rows["building_code"], "name": rows.get("name"),
                              "open_cases": rows["open_cases"], "alarms": rows["alarms"],
                              "households": rows["households"].astype("int64")})
        return table.sort_values(["open_cases", "code"], ascending=[False, True]).reset_index(
            drop=True)
    key = {"district": "street", "street": "community", "community": "grid_code"}[scope.level]
    rows = grids.loc[scope.mask(grids["grid_code"])]
    table = rows.groupby(key, sort=True)[sums].sum().reset_index().rename(columns={key: "code"})
    if key == "grid_code":
        table["name"] = table["code"].map(rows.set_index("grid_code")["name"])
    else:
        table["name"] = table["code"].map(names)
    table["name"] = table["name"].fillna(table["code"])
    return table[["code", "name", *sums]]


def unit_names(layers: dict[str, gpd.GeoDataFrame]) -> dict[str, str]:
    """Street and community code → name, from the community layer."""
    community = layers.get("community")
    if community is None or len(community) == 0:
        return {}
    out = {}
    if "street_name" in community and "street_code" in community:
        out.update(zip(community["street_code"].astype(str), community["street_name"],
                       strict=True))
    out.update(zip(community["community_code"].astype(str), community["name"], strict=True))
    return out


def hourly(times: pd.Series, at: Any, window: str) -> pd.DataFrame:
    """Return counts per hour (per day for ``7d``) over the window ending at *at*, local labels."""
    ts = as_time(at)
    span = window_length(window)
    freq = "D" if span > timedelta(days=1) else "h"
    zone = local_zone()
    local = to_utc(times).dt.tz_convert(zone)
    local = local[(local > (ts - span).tz_convert(zone)) & (local <= ts.tz_convert(zone))]
    bins = pd.date_range((ts - span).tz_convert(zone).floor(freq),
                         ts.tz_convert(zone).floor(freq), freq=freq)
    counts = local.dt.floor(freq).value_counts().reindex(bins, fill_value=0)
    return pd.DataFrame({"time": bins.tz_localize(None), "count": counts.to_numpy()})


# -- the big screen: rankings and trends with 同比 / 环比 ----------------------------------------

#: Columns of :func:`grid_ranking`, worst grid first.
RANKING_COLUMNS = ("code", "name", "open_cases", "overdue", "on_hold", "ontime_close_rate")
#: Metrics of :func:`trends`: reports this month so far, and the two close rates.
TREND_METRICS = ("reports", "close_rate", "ontime_close_rate")


def grid_ranking(grids: pd.DataFrame, cases_t: pd.DataFrame, at: Any = None) -> pd.DataFrame:
    """Rank the unit grids of *grids*: most overdue first, then most open, then worst on time.

    Parameters
    ----------
    grids
        :func:`grid_table` rows of the grids to rank (``grid_code``, ``name``, ``open_cases``,
        ``overdue``).
    cases_t
        :func:`cases_at` of the same scope at *at* (case-table columns).
    at
        When the books are closed for the on-time close rate (default now).

    Returns
    -------
    pandas.DataFrame
        :data:`RANKING_COLUMNS`; ``on_hold`` counts open cases on hold (挂账, never overdue),
        ``ontime_close_rate`` is 按期结案率 (%) of the grid's filed cases, NaN when none was due.
    """
    out = pd.DataFrame({
        "code": grids["grid_code"].astype(str).to_numpy(),
        "name": grids["name"].to_numpy() if "name" in grids else grids["grid_code"].to_numpy(),
        "open_cases": grids["open_cases"].to_numpy(dtype="int64"),
        "overdue": grids["overdue"].to_numpy(dtype="int64"),
    })
    index = pd.Index(out["code"])
    if len(cases_t):
        held = cases_t.loc[cases_t["state"].ne("closed") & cases_t["status"].eq("on_hold")]
        out["on_hold"] = _count_by(held["grid_code"], index)
        filed = cases_t.loc[pd.to_datetime(cases_t["filed_at"], utc=True).notna()
                            & cases_t["grid_code"].notna()]
        rates = kpi.indicators(filed, by="grid", as_of=as_time(at), compare=False) if len(
            filed) else pd.DataFrame(columns=["grid_code", "ontime_close_rate"])
        out["ontime_close_rate"] = out["code"].map(
            rates.set_index("grid_code")["ontime_close_rate"].astype(float)).to_numpy()
    else:
        out["on_hold"] = 0
        out["ontime_close_rate"] = np.nan
    order = out.assign(_rate=out["ontime_close_rate"].fillna(101.0))
    order = order.sort_values(["overdue", "open_cases", "_rate", "code"],
                              ascending=[False, False, True, True], kind="stable")
    return out.loc[order.index, list(RANKING_COLUMNS)].reset_index(drop=True)


def _month_start(ts: pd.Timestamp) -> pd.Timestamp:
    """Return the first moment of *ts*'s local calendar month, in UTC."""
    local = to_local(ts)
    return local.normalize().replace(day=1).tz_convert("UTC")


def _change(now: float, before: float, points: bool) -> float:
    """Percentage points for rates (*points*), else the relative change in %; NaN if unknown."""
    if pd.isna(now) or pd.isna(before):
        return np.nan
    if points:
        return float(now) - float(before)
    return np.nan if before == 0 else (float(now) - float(before)) / float(before) * 100.0


def trends(cases_t: pd.DataFrame, at: Any = None) -> pd.DataFrame:
    """Compare this month so far with last month (环比) and a year before (同比), same span.

    ``reports`` counts cases reported since the local month began, compared as a relative
    change (%) with the same number of days of the month before and of the same month a year
    before; ``close_rate`` and ``ontime_close_rate`` are :func:`twin.kpi.indicators` of the
    month's filed cases as of *at*, compared in percentage points (kpi's own 同比/环比).

    Returns
    -------
    pandas.DataFrame
        One row per :data:`TREND_METRICS`: ``metric``, ``value``, ``mom``, ``yoy``, ``unit``
        (``count`` or ``%``); a comparison with no data is NaN.
    """
    ts = as_time(at)
    start = _month_start(ts)
    span = ts - start
    requested = pd.to_datetime(cases_t["requested_at"], utc=True) if len(cases_t) else \
        pd.Series(dtype="datetime64[ns, UTC]")

    def reported(since: pd.Timestamp) -> int:
        return int(((requested >= since) & (requested < since + span)).sum())

    now_n = reported(start)
    rows = [{"metric": "reports", "value": float(now_n), "unit": "count",
             "mom": _change(now_n, reported(_month_start(start - pd.Timedelta(days=1))), False),
             "yoy": _change(now_n, reported(start - pd.DateOffset(years=1)), False)}]
    period = f"{to_local(ts):%Y-%m}"
    table = kpi.indicators(cases_t, period=period, as_of=ts) if len(cases_t) else pd.DataFrame()
    for name in TREND_METRICS[1:]:
        row = table.iloc[0] if len(table) else {}
        rows.append({"metric": name, "value": row.get(name, np.nan), "unit": "%",
                     "mom": row.get(f"{name}_mom", np.nan), "yoy": row.get(f"{name}_yoy", np.nan)})
    out = pd.DataFrame(rows, columns=["metric", "value", "mom", "yoy", "unit"])
    for c in ("value", "mom", "yoy"):
        out[c] = pd.to_numeric(out[c], errors="coerce").astype(float)
    return out


def daily_reports(cases_t: pd.DataFrame, at: Any = None, days: int = 30) -> pd.DataFrame:
    """Cases reported per local day over the *days* days ending at *at* (``day``, ``count``)."""
    ts = as_time(at)
    zone = local_zone()
    end = ts.tz_convert(zone).normalize()
    bins = pd.date_range(end - pd.Timedelta(days=days - 1), end, freq="D")
    local = pd.to_datetime(cases_t["requested_at"], utc=True).dt.tz_convert(zone) if len(
        cases_t) else pd.Series(dtype=f"datetime64[ns, {zone}]")
    local = local[(local >= bins[0]) & (local <= ts.tz_convert(zone))]
    counts = local.dt.normalize().value_counts().reindex(bins, fill_value=0)
    return pd.DataFrame({"day": bins.tz_localize(None), "count": counts.to_numpy()})


# -- the page's data --------------------------------------------------------------------------


@dataclass
class CockpitData:
    """What a cockpit page draws for one moment and scope (frames hold only the needed columns).

    ``buildings``, ``cases``, ``sensors`` and the cameras in ``layers`` are limited to their
    :data:`FEATURE_BUDGET`; when a layer holds more in scope, ``hidden`` says how many were left
    out (drill down to see them).
    """

    at: pd.Timestamp
    window: str
    scope: Scope
    kpis: dict[str, Any]
    grids: gpd.GeoDataFrame
    buildings: gpd.GeoDataFrame
    cases: pd.DataFrame
    alarms: pd.DataFrame
    sensors: pd.DataFrame
    parking: pd.DataFrame
    events: pd.DataFrame
    drill: pd.DataFrame
    trend: pd.DataFrame
    names: dict[str, str]
    layers: dict[str, gpd.GeoDataFrame] = field(default_factory=dict)
    hidden: dict[str, int] = field(default_factory=dict)
    #: the big screen's panels (``cockpit_data(..., wall=True)``), else empty
    ranking: pd.DataFrame = field(default_factory=pd.DataFrame)
    trends: pd.DataFrame = field(default_factory=pd.DataFrame)
    daily: pd.DataFrame = field(default_factory=pd.DataFrame)


def _in_scope(frame: pd.DataFrame, scope: Scope) -> pd.DataFrame:
    """Return the rows of *frame* in *scope*: *frame* itself when the scope keeps every row.

    Handing back the same frame lets what is derived from a layer frame (its building index,
    its map layers) be found again on the next rerun instead of being built anew.
    """
    if frame is None or len(frame) == 0 or "grid_code" not in frame:
        return frame
    keep = scope.mask(frame["grid_code"])
    return frame if keep.all() else frame.loc[keep]


def budget(name: str) -> int:
    """Return the most features of layer *name* the map is sent (:data:`FEATURE_BUDGET`)."""
    return FEATURE_BUDGET.get(name, MAX_FEATURES)


def _limit(frame: pd.DataFrame, name: str, hidden: dict[str, int],
           order: pd.Series | None = None) -> pd.DataFrame:
    """Return the first :func:`budget` features of *frame* by *order* (all if it fits)."""
    most = budget(name)
    if len(frame) <= most:
        return frame
    hidden[name] = len(frame) - most
    if order is not None:  # keep the most important: the first by *order*
        return frame.loc[order.sort_values(kind="stable").index[:most]]
    return frame.iloc[:most]


def _whole_or_none(frame: pd.DataFrame, name: str, hidden: dict[str, int]) -> pd.DataFrame:
    """*frame* when it fits its budget, else none of it (the grid choropleth stands for it)."""
    if len(frame) <= budget(name):
        return frame
    hidden[name] = len(frame)
    return frame.iloc[:0]


def build(inputs: CockpitInputs, scope: Scope | None = None, *,
          wall: bool = False) -> CockpitData:
    """Turn what was read into what the page draws, for *scope* (pure, no I/O).

    With *wall* also the big screen's grid ranking, trends (同比/环比) and daily reports.

    Raises
    ------
    ValidationError
        If the inputs have no ``grid_cells`` layer (the cockpit's spine).
    """
    scope = scope or Scope()
    layers = inputs.layers
    if "grid_cells" not in layers:
        raise ValidationError("the cockpit needs the grid_cells layer; load it with "
                              "scripts/load_layer.py or build the demo with scripts/make_demo.py")
    at = inputs.at
    cases_all = cases_at(inputs.cases, at)
    readings = latest_readings(inputs.live)
    alarms = inputs.alarms
    if len(alarms):
        opened = pd.to_datetime(alarms["opened_at"], utc=True)
        resolved = pd.to_datetime(alarms["resolved_at"], utc=True)
        alarms = alarms.loc[(opened <= at) & (resolved.isna() | (resolved > at))
                            & alarms["status"].isin(_OPEN_ALARMS)]
    buildings_all = layers.get("buildings")
    sensors_all = layers.get("sensors")
    sensors = sensor_states(sensors_all, readings, alarms, at) if sensors_all is not None else \
        pd.DataFrame(columns=["sensor_id", "online", "state"])
    lots = layers.get("parking")
    parking = parking_state(lots, sensors_all, readings) if lots is not None else \
        pd.DataFrame(columns=["lot_id", "available"])
    events = inputs.events
    grids_all = grid_table(layers["grid_cells"], cases_all, events, alarms, buildings_all)
    cases_s = _in_scope(cases_all, scope)
    sensors_s = _in_scope(sensors, scope)
    parking_s = _in_scope(parking, scope)
    readings_s = readings.loc[readings["source_id"].isin(sensors_s["sensor_id"])] if len(
        readings) else readings
    kpis = kpi_tiles(cases_s, sensors_s, parking_s, readings_s, at)
    hidden: dict[str, int] = {}
    buildings = gpd.GeoDataFrame(columns=["building_code", "geometry"], geometry="geometry",
                                 crs=4326)
    buildings_scoped = None
    if buildings_all is not None and len(buildings_all):
        in_scope = _in_scope(buildings_all, scope)
        if len(in_scope) <= budget("buildings") or scope.level == "grid":
            buildings_scoped = building_table(in_scope, cases_s, alarms)
            buildings = _whole_or_none(buildings_scoped, "buildings", hidden)
        else:  # a whole street or district: the grid choropleth stands for its buildings
            hidden["buildings"] = len(in_scope)
    span = window_length(inputs.window)
    closed_at = pd.to_datetime(cases_s["closed_at"], utc=True)
    shown = cases_s.loc[(cases_s["state"] != "closed") | (closed_at > at - span)]
    rank = shown["state"].map({"overdue": 0, "warning": 1, "open": 2, "closed": 3})
    shown = _limit(shown, "cases", hidden, rank)
    names = unit_names(layers)
    drill = drill_table(grids_all, buildings_scoped, scope, names)
    grids = grids_all.loc[scope.mask(grids_all["grid_code"])] if scope.level != "district" \
        or scope.grids is not None else grids_all
    events_s = _in_scope(events, scope)
    trend = hourly(cases_s["requested_at"], at, inputs.window)
    basemap = {n: layers[n] for n in ("community", "roads") if n in layers}
    for name in ("cameras", "facilities"):
        if name in layers:
            basemap[name] = _whole_or_none(_in_scope(layers[name], scope), name, hidden)
    sensor_rank = sensors_s["state"].map({"alarm": 0, "offline": 1}).fillna(2) if len(
        sensors_s) and "state" in sensors_s else None
    out = CockpitData(
        at=at, window=inputs.window, scope=scope, kpis=kpis, grids=grids,
        buildings=buildings, cases=shown, alarms=_in_scope(alarms, scope),
        sensors=_limit(sensors_s, "sensors", hidden, sensor_rank), parking=parking_s,
        events=events_s,
        drill=drill, trend=trend, names=names, layers=basemap, hidden=hidden,
    )
    if wall:
        ranked = grids_all.loc[scope.mask(grids_all["grid_code"])]
        out.ranking = grid_ranking(ranked, cases_s, at)
        out.trends = trends(cases_s, at)
        out.daily = daily_reports(cases_s, at)
    return out


def cockpit_data(source: Store | Twin, *, at: Any = None, window: str = "24h",
                 scope: Scope | None = None,
                 layers: dict[str, gpd.GeoDataFrame] | None = None,
                 wall: bool = False) -> CockpitData:
    """Everything the cockpit page draws at time *at* for *scope*: read, then :func:`build`.

    This is the page's whole data-building step, callable without streamlit (the benchmark
    times it).

    Parameters
    ----------
    source
        A store, or a :class:`~twin.twin.Twin` whose layers are cached per version.
    at
        The moment shown (default now): cases and events up to it, alarms open at it.
    window
        ``1h``, ``24h`` or ``7d``: the span of the reports, trend and recently closed cases.
    scope
        Street / community / grid drill-down and allowed grids (default: everything).
    layers
        The store's current layers when the caller caches them (default: read them).
    wall
        Also compute the big screen's ranking, trends and daily reports (see :func:`build`).

    Returns
    -------
    CockpitData

    Raises
    ------
    ValidationError
        For an unknown window, or a store without grid cells.
    """
    return build(load_inputs(source, at=at, window=window, layers=layers), scope,
                 wall=wall)
