"""The feed pipeline on a recorded feed, both stores: decode, dead letters, state, rules, alarms."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from shapely.geometry import Point, box

from tests.conftest import LAT, LON
from twin.errors import StoreUnavailableError, ValidationError
from twin.feeds.models import Message, Registry, decode_batch
from twin.feeds.pipeline import Pipeline
from twin.feeds.rules import RuleEngine, load_rules, set_alarm_status
from twin.feeds.simulator import Simulator
from twin.feeds.sources import ReplaySource
from twin.schema import ALARMS, DEAD_LETTERS

SAMPLE = Path(__file__).parent / "data" / "feeds" / "sample.jsonl"
GOOD_IDS = {f"air-{m}" for m in range(30)} | {"smk-1", "smk-2", "p1-1", "p2-1", "cam-1", "rep-1"}
BAD = {"malformed_json": 1, "unknown_sensor": 1, "bad_time": 2, "out_of_range": 1,
       "unknown_property": 1, "bad_message": 1}


def feed_layers(grid_cells: gpd.GeoDataFrame) -> dict[str, gpd.GeoDataFrame]:
    """Sensors, a camera, a lot and a community around the conftest grid cells."""
    sensors = gpd.GeoDataFrame(
        {"sensor_id": ["S-AIR1", "S-SMK1", "S-P1", "S-P2"],
         "kind": ["air", "smoke", "parking", "parking"],
         "ref_lot": [None, None, "P1", "P1"], "ref_building": [None, "B1", None, None],
         "report_interval_s": [60, 3600, 60, 60]},
        geometry=[Point(LON + 0.0003, LAT + 0.0002), Point(LON + 0.00015, LAT + 0.00045),
                  Point(LON + 0.0012, LAT + 0.0002), Point(LON + 0.0013, LAT + 0.0002)],
        crs=4326,
    )
    cameras = gpd.GeoDataFrame(
        {"camera_id": ["C1"], "heading_deg": [90.0], "fov_deg": [60.0], "range_m": [40.0]},
        geometry=[Point(LON + 0.0002, LAT + 0.0002)], crs=4326,
    )
    parking = gpd.GeoDataFrame(
        {"lot_id": ["P1"], "kind": ["surface"], "total_spaces": [2]},
        geometry=[box(LON + 0.0011, LAT + 0.0001, LON + 0.0015, LAT + 0.0003)], crs=4326,
    )
    community = gpd.GeoDataFrame({"name": ["社区"]}, geometry=[grid_cells.union_all()], crs=4326)
    return {"sensors": sensors, "cameras": cameras, "parking": parking,
            "grid_cells": grid_cells, "community": community}


@pytest.fixture
def layers_(grid_cells):
    return feed_layers(grid_cells)


def _no_case(alarm):
    return None


def run_replay(store, layers_, *, rules=True, on_case=_no_case, **options) -> Pipeline:
    registry = Registry.from_layers(layers_)
    engine = RuleEngine(store, load_rules(), registry, layers=layers_,
                        on_case=on_case) if rules else None
    pipeline = Pipeline(store, registry, rules=engine, **options)
    pipeline.run(ReplaySource(SAMPLE), max_batch=7)
    return pipeline


def test_the_recorded_feed_is_stored_once_with_every_bad_message_dead_lettered(store, layers_):
    pipeline = run_replay(store, layers_)
    events = store.read_events()
    assert set(events["id"]) == GOOD_IDS and len(events) == len(GOOD_IDS)
    dead = store.read_rows(DEAD_LETTERS)
    assert dead["reason"].value_counts().to_dict() == BAD
    malformed = dead.loc[dead["reason"] == "malformed_json", "payload"].iloc[0]
    assert malformed.startswith('{"id": "bad-json"')
    c = pipeline.counters
    outcomes = (c.received, c.stored, c.duplicates, c.dead_letters, c.acknowledged)
    assert outcomes == (43, 36, 1, 7, 43)
    assert c.reasons == BAD
    # enrichment: grid, building (declared), lot, covering camera
    by_id = events.set_index("id")
    assert by_id.loc["air-0", "grid_code"] == "45031100100101"
    assert by_id.loc["smk-1", "building_code"] == "B1"
    assert by_id.loc["p1-1", ["lot_id", "grid_code"]].tolist() == ["P1", "45031100100102"]
    assert json.loads(by_id.loc["air-0", "payload"])["cameras"] == ["C1"]
    assert by_id.loc["rep-1", ["kind", "source_id", "grid_code"]].tolist() == [
        "report", "resident", "45031100100101"]
    # replaying it again stores nothing new
    again = run_replay(store, layers_, rules=False)
    assert again.counters.stored == 0 and len(store.read_events()) == len(GOOD_IDS)
    assert len(store.read_rows(DEAD_LETTERS)) == len(dead)


def test_live_state_keeps_the_latest_value_and_lot_occupancy(store, layers_):
    pipeline = run_replay(store, layers_, rules=False)
    assert pipeline.state.value("S-AIR1", "pm25") == 40.0
    assert pipeline.state.value("S-SMK1", "smoke") == 0.0
    occupancy = pipeline.state.lot_occupancy()
    assert occupancy.loc["P1"].to_dict() == {"monitored": 2, "occupied": 2.0, "share": 1.0}
    now = pd.Timestamp("2026-03-02T00:31Z")
    status = pipeline.state.sensors_status(now)
    assert status["online"].to_dict() == {"S-AIR1": True, "S-SMK1": True, "S-P1": False,
                                          "S-P2": False}
    grids = pipeline.state.grid_summary(now)
    assert grids.loc["45031100100101", ["sensors", "online", "mean_pm25"]].tolist() == [2, 2, 40.0]


def test_rules_open_and_auto_resolve_alarms(store, layers_):
    promoted = []
    run_replay(store, layers_, on_case=lambda alarm: promoted.append(alarm["id"]) or None)
    alarms = store.read_rows(ALARMS).set_index("rule_id")
    # PM2.5 > 75 from 08:05; the alarm opens after 15 minutes and resolves at 08:25
    pm = alarms.loc["pm25_high"]
    assert pm["opened_at"] == pd.Timestamp("2026-03-02T00:20Z")
    assert pm["status"] == "resolved" and pm["resolved_at"] == pd.Timestamp("2026-03-02T00:25Z")
    assert pm["grid_code"] == "45031100100101"
    smoke = alarms.loc["smoke"]
    assert smoke["status"] == "resolved" and smoke["building_code"] == "B1"
    assert alarms.loc["lot_full", "source_id"] == "P1"
    assert alarms.loc["camera_garbage", "source_kind"] == "camera"
    assert "manhole_open" not in alarms.index
    assert sorted(promoted) == ["smoke/S-SMK1/20260302T000300"]  # auto_case rules only


def test_one_open_alarm_per_source_and_rule_across_restarts(store, layers_):
    registry = Registry.from_layers(layers_)
    rules = load_rules()
    msgs = lambda *vals: [Message("g/c/obs", json.dumps(  # noqa: E731
        {"id": f"m{i}", "sensor_id": "S-SMK1", "observed_at": f"2026-03-02T08:0{i}:00+08:00",
         "values": {"smoke": v}}).encode(), pd.Timestamp.now(tz="UTC")) for i, v in vals]
    source = ReplaySource.__new__(ReplaySource)
    source.acked = 0
    p1 = Pipeline(store, registry, rules=RuleEngine(store, rules, registry, on_case=lambda a: None))
    p1.process(source, msgs((1, 1), (2, 1)))
    p2 = Pipeline(store, registry, rules=RuleEngine(store, rules, registry, on_case=lambda a: None))
    p2.process(source, msgs((3, 1)))
    assert store.read_rows(ALARMS, rule_id="smoke")["status"].tolist() == ["open"]
    alarm_id = store.read_rows(ALARMS, rule_id="smoke")["id"].iloc[0]
    set_alarm_status(store, alarm_id, "acknowledged", actor="值班长")
    with pytest.raises(ValidationError, match="may move to"):
        set_alarm_status(store, alarm_id, "open", actor="值班长")
    p2.process(source, msgs((4, 0)))
    got = store.read_rows(ALARMS, id=alarm_id).iloc[0]
    assert got["status"] == "resolved"
    assert [h["to"] for h in json.loads(got["data"])["history"]] == ["acknowledged"]


def test_a_smoke_alarm_becomes_a_sensor_case(store, layers_):
    run_replay(store, layers_, on_case=None)
    alarm = store.read_rows(ALARMS, rule_id="smoke").iloc[0]
    assert alarm["case_id"] is not None
    case = store.get_case(alarm["case_id"])
    assert case["source"] == "sensor" and case["service_code"] == "P0150"


class FlakyStore:
    """A store whose writes fail while ``down`` is set (the database went away)."""

    def __init__(self, store) -> None:
        self.store, self.down, self.failures = store, threading.Event(), 0

    def append_events(self, events):
        if self.down.is_set():
            self.failures += 1
            raise StoreUnavailableError("store down (test)")
        return self.store.append_events(events)

    def put_rows(self, *args, **kwargs):
        if self.down.is_set():
            raise StoreUnavailableError("store down (test)")
        return self.store.put_rows(*args, **kwargs)

    def __getattr__(self, name):
        return getattr(self.store, name)


def test_an_unavailable_store_buffers_on_disk_and_loses_nothing(store, layers_, tmp_path):
    flaky = FlakyStore(store)
    flaky.down.set()
    registry = Registry.from_layers(layers_)
    pipeline = Pipeline(flaky, registry, buffer_dir=tmp_path / "buffer")
    source = ReplaySource(SAMPLE)
    pipeline.process(source, source.fetch(20, 0))
    assert len(pipeline.buffer) == 1 and source.acked == 20  # safe on disk, acknowledged
    assert len(store.read_events()) == 0
    flaky.down.clear()
    pipeline.run(source, max_batch=7)
    assert len(pipeline.buffer) == 0
    assert set(store.read_events()["id"]) == GOOD_IDS


def test_a_full_buffer_stops_acknowledging_until_the_store_is_back(store, layers_, tmp_path):
    flaky = FlakyStore(store)
    flaky.down.set()
    pipeline = Pipeline(flaky, Registry.from_layers(layers_), buffer_dir=tmp_path / "b",
                        buffer_bytes=10, retry_s=0.01)
    source = ReplaySource(SAMPLE)
    stop = threading.Event()
    batch = source.fetch(5, 0)

    def restore_after_failures():
        while flaky.failures < 3:
            stop.wait(0.01)
        flaky.down.clear()

    helper = threading.Thread(target=restore_after_failures)
    helper.start()
    assert pipeline.process(source, batch, stop)
    helper.join()
    assert flaky.failures >= 3 and len(pipeline.buffer) == 0
    assert source.acked == 5 and len(store.read_events()) == 5


def test_the_simulator_is_deterministic_and_follows_the_day(layers_):
    registry = Registry.from_layers(layers_)
    sim = Simulator(registry.sensors, registry.cameras, seed=7)
    t0 = pd.Timestamp("2026-03-02T00:00Z")
    whole = sim.messages(t0, t0 + pd.Timedelta(hours=2))
    halves = sim.messages(t0, t0 + pd.Timedelta(hours=1)) + sim.messages(
        t0 + pd.Timedelta(hours=1), t0 + pd.Timedelta(hours=2))
    assert [m.payload for m in whole] == [m.payload for m in halves]
    assert [m.payload for m in whole] != [m.payload for m in Simulator(
        registry.sensors, registry.cameras, seed=8).messages(t0, t0 + pd.Timedelta(hours=2))]
    decoded = decode_batch(whole, registry)
    assert decoded.dead.empty and len(decoded.events) == len(whole)
    # a residential lot is fuller at 02:00 than at 13:00 local time, on average over a day
    day = decode_batch(sim.messages(t0 - pd.Timedelta(hours=8), t0 + pd.Timedelta(hours=16)),
                       registry).readings
    occ = day[day["property"] == "occupied"]
    hour = occ["observed_at"].dt.tz_convert("Asia/Shanghai").dt.hour
    night, midday = (occ.loc[hour.between(*h), "value"].mean() for h in ((0, 4), (11, 15)))
    assert night > midday + 0.3
    pm = day[day["property"] == "pm25"]
    ph = pm["observed_at"].dt.tz_convert("Asia/Shanghai").dt.hour
    rush, quiet = (pm.loc[ph.isin(h), "value"].median() for h in ([8, 18], [2, 3, 13]))
    assert rush > quiet


NOW = pd.Timestamp("2026-03-02T01:00:00Z")
EDGE_OBS = [  # the column-wise fast path must decide every one of these as the full checks do
    {"id": "ok-1", "sensor_id": "S-AIR1", "observed_at": "2026-03-02T08:00:00+08:00",
     "values": {"pm25": 40, "pm10": 60.5}},
    {"id": "moved", "sensor_id": "S-P1", "observed_at": "2026-03-02T00:59:00Z",
     "values": {"occupied": 1}, "lon": LON + 0.00015, "lat": LAT + 0.00045},
    {"id": "half-pos", "sensor_id": "S-P1", "observed_at": "2026-03-02T00:59:00Z",
     "values": {"occupied": 0}, "lon": LON + 0.5},
    {"id": "text-pos", "sensor_id": "S-P1", "observed_at": "2026-03-02T00:59:00Z",
     "values": {"occupied": 0}, "lon": str(LON + 0.0002), "lat": str(LAT + 0.0002)},
    {"id": "bool", "sensor_id": "S-SMK1", "observed_at": "2026-03-02T00:59:00Z",
     "values": {"smoke": True}},
    {"id": "nan", "sensor_id": "S-AIR1", "observed_at": "2026-03-02T00:59:00Z",
     "values": {"pm25": float("nan")}},
    {"id": "high", "sensor_id": "S-AIR1", "observed_at": "2026-03-02T00:59:00Z",
     "values": {"pm25": 1e9}},
    {"id": "prop", "sensor_id": "S-AIR1", "observed_at": "2026-03-02T00:59:00Z",
     "values": {"pm25": 3, "colour": 1}},
    {"id": "naive", "sensor_id": "S-AIR1", "observed_at": "2026-03-02T00:59:00",
     "values": {"pm25": 3}},
    {"id": "ahead", "sensor_id": "S-AIR1", "observed_at": "2026-03-02T01:06:00Z",
     "values": {"pm25": 3}},
    {"id": "old", "sensor_id": "S-AIR1", "observed_at": "1999-12-31T23:00:00Z",
     "values": {"pm25": 3}},
    {"id": "junk-time", "sensor_id": "S-AIR1", "observed_at": "yesterday+08:00",
     "values": {"pm25": 3}},
    {"id": "", "sensor_id": "S-AIR1", "observed_at": "2026-03-02T00:59:00Z",
     "values": {"pm25": 3}},
    {"id": 7, "sensor_id": "S-AIR1", "observed_at": "2026-03-02T00:59:00Z",
     "values": {"pm25": 3}},
    {"id": "who", "sensor_id": "S-NOPE", "observed_at": "2026-03-02T00:59:00Z",
     "values": {"pm25": 3}},
    {"id": "empty", "sensor_id": "S-AIR1", "observed_at": "2026-03-02T00:59:00Z", "values": {}},
    # NaN/Infinity (PostgreSQL jsonb rejects them) and NUL (PostgreSQL text rejects it)
    {"id": "inf", "sensor_id": "S-AIR1", "observed_at": "2026-03-02T00:59:00Z",
     "values": {"pm25": float("inf")}},
    {"id": "minus-inf", "sensor_id": "S-AIR1", "observed_at": "2026-03-02T00:59:00Z",
     "values": {"temperature": float("-inf")}},
    {"id": "nul\x00id", "sensor_id": "S-AIR1", "observed_at": "2026-03-02T00:59:00Z",
     "values": {"pm25": 3}},
    {"id": "nul-sensor", "sensor_id": "S-AIR1\x00", "observed_at": "2026-03-02T00:59:00Z",
     "values": {"pm25": 3}},
    {"id": "nul-key", "sensor_id": "S-AIR1", "observed_at": "2026-03-02T00:59:00Z",
     "values": {"pm25\x00": 3}},
    {"id": "nan-pos", "sensor_id": "S-P1", "observed_at": "2026-03-02T00:59:00Z",
     "values": {"occupied": 1}, "lon": float("nan"), "lat": float("inf")},  # sensor's position
    {"id": "ok-1", "sensor_id": "S-AIR1", "observed_at": "2026-03-02T08:00:00+08:00",
     "values": {"pm25": 40, "pm10": 60.5}},
    {"id": "extra", "sensor_id": "S-AIR1", "observed_at": "2026-03-02T00:59:00Z",
     "values": {"pm25": 3}, "firmware": "1.2"},  # keys we do not know are ignored
    {"id": "huge", "sensor_id": "S-AIR1", "observed_at": "2026-03-02T00:59:00Z",
     "values": {"pm25": 10**30}},  # beyond 64 bits: JSON reads it, out of range
    {"id": "vast", "sensor_id": "S-AIR1", "observed_at": "2026-03-02T00:59:00Z",
     "values": {"pm25": 10**400}},  # beyond any float
    {"id": "", "sensor_id": "S-AIR1", "observed_at": "2026-03-02T00:59:00Z",
     "values": {"pm25": 3}},
]


def _sorted(frame: pd.DataFrame, by: list[str]) -> pd.DataFrame:
    out = frame.sort_values(by).reset_index(drop=True).astype(object)
    return out.where(out.notna(), None)


def test_the_fast_decoding_path_agrees_with_the_full_checks(layers_, monkeypatch):
    import twin.feeds.models as models

    registry = Registry.from_layers(layers_)
    gateway = [o for o in EDGE_OBS[:3]]
    messages = [Message("gridtwin/x/obs", json.dumps(o).encode(), NOW, token=i)
                for i, o in enumerate(EDGE_OBS)]
    messages.append(Message("gridtwin/x/obs", json.dumps(
        [{**o, "id": f"gw-{o['id']}"} for o in gateway]).encode(), NOW))
    fast = decode_batch(messages, registry)
    def every_one_checked(typed, m, r):
        return None, None, [typed.plain(k, m) for k in range(len(typed))]

    monkeypatch.setattr(models, "_valid_observations", every_one_checked)
    full = decode_batch(messages, registry)
    assert set(fast.events["id"]) == {"ok-1", "moved", "half-pos", "text-pos", "nan-pos",
                                      "extra", "gw-ok-1", "gw-moved", "gw-half-pos"}
    reasons = dict(zip(full.dead["payload"].map(lambda p: json.loads(p)["id"]),
                       full.dead["reason"], strict=True))
    assert {k: reasons[k] for k in ("nan", "inf", "minus-inf", "nul\x00id", "nul-sensor",
                                    "nul-key")} == {
        "nan": "non_finite_number", "inf": "non_finite_number",
        "minus-inf": "non_finite_number", "nul\x00id": "nul_character",
        "nul-sensor": "nul_character", "nul-key": "nul_character"}
    assert (reasons["huge"], reasons["vast"]) == ("out_of_range", "out_of_range")
    assert not fast.dead["payload"].str.contains("\x00").any()
    assert fast.duplicates == full.duplicates == 1
    pd.testing.assert_frame_equal(_sorted(fast.events, ["id"]), _sorted(full.events, ["id"]))
    pd.testing.assert_frame_equal(_sorted(fast.readings, ["event_id", "property"]),
                                  _sorted(full.readings, ["event_id", "property"]))
    pd.testing.assert_frame_equal(_sorted(fast.dead, ["id"]), _sorted(full.dead, ["id"]))
    moved = fast.events[fast.events["id"] == "moved"].iloc[0].to_dict()  # enriched where it was
    here = registry.enricher.enrich([LON + 0.00015], [LAT + 0.00045]).iloc[0]
    assert moved["lon"] == pytest.approx(LON + 0.00015)
    assert (moved["grid_code"], moved["lot_id"]) == (here["grid_code"], None)
    assert here["grid_code"] is not None


def test_only_observations_that_fit_the_contract_decode_typed():
    from twin.feeds.models import _Typed

    by_id = {o["id"]: o for o in EDGE_OBS}
    typed = _Typed()
    gateway = [by_id["ok-1"], by_id["extra"], by_id["moved"]]
    assert typed.add(0, json.dumps(gateway).encode())
    assert typed.add(1, json.dumps(by_id["who"]).encode())  # checked later, column-wise
    assert typed.ids == ["ok-1", "extra", "moved", "who"]
    assert (typed.owners, typed.slots) == ([0, 0, 0, 1], [0, 1, 2, -1])
    # what plain JSON would read differently is left to json.loads and the checks one by one
    for key in ("bool", "nan", "text-pos", "nan-pos", 7, "huge", "vast", "", "empty"):
        assert not typed.add(2, json.dumps(by_id[key]).encode()), key
    assert not typed.add(2, json.dumps({**by_id["ok-1"], "sensor_id": ""}).encode())
    assert not typed.add(2, b'{"id": "x", "sensor_id": "S-AIR1"')  # malformed
    assert not typed.add(2, "\ufeff".encode() + json.dumps(by_id["ok-1"]).encode())
    assert len(typed) == 4
    messages = [Message("gridtwin/x/obs", json.dumps(gateway).encode(), NOW)]
    assert typed.plain(1, messages) == (0, by_id["extra"])  # as sent, unknown keys included


_NUMBERS = st.one_of(
    st.integers(-(2**63), 2**63 - 1),
    st.floats(allow_nan=False, allow_infinity=False),
    st.sampled_from([0.0, -0.0, 1e-4, 9.9e-5, 1e16, 9999999999999998.0, 1e-7, 0.1 + 0.2]),
)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(
    st.dictionaries(st.sampled_from(["pm25", "pm10", "noise", "occupied"]), _NUMBERS,
                    min_size=1),
    st.sampled_from([None, '["C-1"]', '["C-1", "C-2"]'])), max_size=20))
def test_payloads_are_the_canonical_json_whatever_the_numbers(rows):
    from twin.feeds.models import _canonical, _values_json

    values = [v for v, _ in rows]
    cameras = np.array([c for _, c in rows], dtype=object)
    numbers = np.array([x for v in values for x in v.values()], dtype=float)
    expected = [_canonical({"values": v, **({"cameras": json.loads(c)} if c else {})})
                for v, c in rows]
    assert list(_values_json(values, numbers, cameras)) == expected


# -- the overlapped run(): errors, ordering, shutdown ---------------------------------------------


def _obs(i: int, sensor: str = "S-AIR1", pm25: float = 40.0) -> dict:
    return {"id": f"run-{i}", "sensor_id": sensor, "observed_at": "2026-03-02T08:00:00+08:00",
            "values": {"pm25": pm25}}


class ListSource(ReplaySource):
    """Messages from a list, never exhausted unless *ends*; records what it acknowledges."""

    def __init__(self, payloads: list, *, ends: bool = True) -> None:
        self.name, self.ends, self.position = "list", ends, 0
        self.messages = [Message(*p, NOW, token=i) if isinstance(p, tuple) else
                         Message("gridtwin/t/obs", json.dumps(p).encode(), NOW, token=i)
                         for i, p in enumerate(payloads)]
        self.acked, self.acked_ids, self.fetches = 0, [], 0

    def fetch(self, max_items, timeout):
        self.fetches += 1
        out = self.messages[self.position:self.position + max_items]
        self.position += len(out)
        return out

    def ack(self, messages):
        self.acked += len(messages)
        self.acked_ids += [i for m in messages for i in _ids(m)]

    def now(self):
        return NOW

    @property
    def exhausted(self):
        return self.ends and self.position >= len(self.messages)


def _ids(message: Message) -> list:
    try:
        body = json.loads(message.payload)
    except (ValueError, RecursionError):  # hostile payloads (tests/test_feeds_hostile.py)
        return []
    if not isinstance(body, (list, dict)):
        return []
    return [o.get("id") for o in (body if isinstance(body, list) else [body])
            if isinstance(o, dict)]


def _run_in_thread(pipeline, source, **options):
    """Start run() on a thread; returns the thread and a dict that gets its result or error."""
    outcome = {}

    def target():
        try:
            outcome["counters"] = pipeline.run(source, **options)
        except BaseException as exc:  # handed to the test
            outcome["error"] = exc

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    return thread, outcome


def _wait_for(condition, timeout: float = 30.0) -> bool:
    """Wait until *condition()* holds (True) or *timeout* passes (False); never a fixed sleep."""
    ready = threading.Event()
    deadline = threading.Timer(timeout, ready.set)
    deadline.start()
    try:
        while not condition():
            if ready.wait(0.005):
                return condition()
        return True
    finally:
        deadline.cancel()


class FailingStore(FlakyStore):
    """A store whose append_events raises *error* (a bug, not an outage) once *armed* is set."""

    def __init__(self, store, error: BaseException, gate: threading.Event | None = None) -> None:
        super().__init__(store)
        self.error, self.gate = error, gate

    def append_events(self, events):
        if self.gate is not None:
            assert self.gate.wait(30), "the test never opened the gate"
        raise self.error


def test_a_commit_error_reaches_the_caller_of_run(store, layers_):
    failing = FailingStore(store, RuntimeError("commit failed (test)"))
    source = ListSource([_obs(i) for i in range(10)])
    pipeline = Pipeline(failing, Registry.from_layers(layers_))
    with pytest.raises(RuntimeError, match="commit failed"):
        pipeline.run(source, max_batch=3)
    assert source.acked == 0 and len(store.read_events()) == 0


def test_when_both_threads_fail_the_main_threads_error_is_raised(store, layers_):
    gate = threading.Event()
    failing = FailingStore(store, RuntimeError("commit failed (test)"), gate)
    source = ListSource([_obs(i) for i in range(10)])

    def fetch_then_fail(max_items, timeout):
        if source.fetches:
            gate.set()  # the commit of the first batch fails too, while this thread unwinds
            raise ValueError("fetch failed (test)")
        return ListSource.fetch(source, max_items, timeout)

    source.fetch = fetch_then_fail
    pipeline = Pipeline(failing, Registry.from_layers(layers_))
    with pytest.raises(ValueError, match="fetch failed") as caught:
        pipeline.run(source, max_batch=3)
    assert any("commit failed" in note for note in caught.value.__notes__)
    assert source.acked == 0


class OrderedStore(FlakyStore):
    """Records, in order, the ids each append_events stored (after it returned)."""

    def __init__(self, store) -> None:
        super().__init__(store)
        self.committed: list[str] = []

    def append_events(self, events):
        stored = self.store.append_events(events)
        self.committed += getattr(events, "frame", events)["id"].tolist()  # prepared or not
        return stored


def test_acknowledgements_never_get_ahead_of_commits_under_run(store, layers_):
    ordered = OrderedStore(store)
    source = ListSource([_obs(i) for i in range(60)])
    early = []
    plain_ack = source.ack

    def checked_ack(messages):
        ids = [json.loads(m.payload)["id"] for m in messages]
        early.extend(set(ids) - set(ordered.committed))
        plain_ack(messages)

    source.ack = checked_ack
    pipeline = Pipeline(ordered, Registry.from_layers(layers_))
    pipeline.run(source, max_batch=4)  # batch n+1 is decoded while n commits
    assert early == []
    assert ordered.committed == [f"run-{i}" for i in range(60)]  # one at a time, in order
    assert source.acked_ids == ordered.committed
    assert len(store.read_events()) == 60


def test_stop_while_a_commit_waits_for_a_down_store_returns_and_acks_nothing(store, layers_):
    flaky = FlakyStore(store)
    flaky.down.set()
    source = ListSource([_obs(i) for i in range(5)], ends=False)
    pipeline = Pipeline(flaky, Registry.from_layers(layers_), retry_s=0.01)  # no buffer
    stop = threading.Event()
    thread, outcome = _run_in_thread(pipeline, source, stop=stop, max_batch=5, max_wait=0.01)
    assert _wait_for(lambda: flaky.failures >= 2)
    stop.set()
    thread.join(timeout=60)
    assert not thread.is_alive() and "error" not in outcome
    assert source.acked == 0 and pipeline.counters.acknowledged == 0
    flaky.down.clear()
    assert len(store.read_events()) == 0


def test_a_failing_fetch_while_the_store_is_down_ends_run_without_acknowledging(store, layers_):
    flaky = FlakyStore(store)
    flaky.down.set()
    source = ListSource([_obs(i) for i in range(5)], ends=False)

    def fetch_then_fail(max_items, timeout):
        if source.fetches:
            assert _wait_for(lambda: flaky.failures >= 1)  # the commit is retrying
            raise ValueError("fetch failed (test)")
        return ListSource.fetch(source, max_items, timeout)

    source.fetch = fetch_then_fail
    # an hour between retries and nobody sets stop: only run()'s own failure can end the commit
    pipeline = Pipeline(flaky, Registry.from_layers(layers_), retry_s=3600)
    thread, outcome = _run_in_thread(pipeline, source, max_batch=5)
    thread.join(timeout=60)
    assert not thread.is_alive(), "run() hung waiting for a commit to a store that is down"
    assert isinstance(outcome.get("error"), ValueError)
    assert source.acked == 0
    flaky.down.clear()
    assert len(store.read_events()) == 0


POISON = [  # (topic, raw payload): each would make PostgreSQL refuse the whole batch
    ("gridtwin/t/obs", b'{"id": "p-nan", "sensor_id": "S-AIR1", '
     b'"observed_at": "2026-03-02T08:00:00+08:00", "values": {"pm25": NaN}}'),
    ("gridtwin/t/obs", b'{"id": "p-inf", "sensor_id": "S-AIR1", '
     b'"observed_at": "2026-03-02T08:00:00+08:00", "values": {"pm10": -Infinity}}'),
    ("gridtwin/t/obs", b'{"id": "p-overflow", "sensor_id": "S-AIR1", '
     b'"observed_at": "2026-03-02T08:00:00+08:00", "values": {"pm25": 1e999}}'),
    ("gridtwin/t/obs", b'{"id": "p-nul\\u0000", "sensor_id": "S-AIR1", '
     b'"observed_at": "2026-03-02T08:00:00+08:00", "values": {"pm25": 3}}'),
    ("gridtwin/t/obs", b'[{"id": "p-gw-ok", "sensor_id": "S-AIR1", '
     b'"observed_at": "2026-03-02T08:00:00+08:00", "values": {"pm25": 3}}, '
     b'{"id": "p-gw-nul", "sensor_id": "S-AIR1\\u0000", '
     b'"observed_at": "2026-03-02T08:00:00+08:00", "values": {"pm25": 3}}]'),
    ("gridtwin/t/camera", b'{"id": "p-cam", "camera_id": "C1", "kind": "garbage", '
     b'"observed_at": "2026-03-02T08:00:00+08:00", "confidence": 0.9, "snapshot_url": NaN}'),
    ("gridtwin/t/reports", b'{"id": "p-rep", "service_code": "P0101", '
     b'"description": "bin\\u0000full", "lat": 22.8, "long": 108.3, '
     b'"requested_datetime": "2026-03-02T08:00:00+08:00"}'),
]
POISON_REASONS = {"p-nan": "non_finite_number", "p-inf": "non_finite_number",
                  "p-overflow": "non_finite_number", "p-nul\x00": "nul_character",
                  "p-gw-nul": "nul_character", "p-cam": "non_finite_number",
                  "p-rep": "nul_character"}


def test_nan_infinity_and_nul_are_dead_lettered_and_the_pipeline_keeps_running(store, layers_):
    source = ListSource([_obs(0), *POISON, _obs(1)])
    pipeline = Pipeline(store, Registry.from_layers(layers_))
    pipeline.run(source, max_batch=3)  # raised ValidationError from the store before
    assert set(store.read_events()["id"]) == {"run-0", "run-1", "p-gw-ok"}
    dead = store.read_rows(DEAD_LETTERS)
    stored = dict(zip(dead["payload"].map(lambda p: json.loads(p)["id"]), dead["reason"],
                      strict=True))
    assert stored == POISON_REASONS
    assert pipeline.counters.reasons == {"non_finite_number": 4, "nul_character": 3}
    assert source.acked == len(source.messages)
    nul = dead.set_index("reason").loc["nul_character", "payload"].tolist()
    assert all("\\u0000" in p and "\x00" not in p for p in nul)  # kept visible, storable
    detail = dead.loc[dead["reason"] == "non_finite_number", "detail"].iloc[0]
    assert "NaN or Infinity" in detail
    # redelivered after a restart: stored once, nothing raises
    again = Pipeline(store, Registry.from_layers(layers_))
    again.run(ListSource([_obs(0), *POISON, _obs(1)]), max_batch=3)
    assert len(store.read_rows(DEAD_LETTERS)) == len(POISON_REASONS)
