# ruff: noqa: F811 (the fixtures imported below are parameters of the tests)
"""Rules exactly once across workers: a shared subscription, real Mosquitto and PostGIS.

Several pipelines share ``$share/<group>/<topic>`` (round-robin delivery) and one PostGIS
schema; each sees only some readings of an episode. Every alarm must open once per (rule,
source, episode), every auto-created case once, with 1 worker, 4 workers, and when a worker
is killed mid-episode and restarted.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import uuid

import pandas as pd
import pytest

# the fixtures broker and pg_store, shared with the other MQTT tests
from tests.test_feeds_mqtt import ROOT, broker, pg_store, wait_for  # noqa: F401
from twin.feeds.episodes import episodes
from twin.feeds.models import Registry
from twin.feeds.pipeline import Pipeline
from twin.feeds.rules import RuleEngine, load_rules
from twin.feeds.sources import MqttSource
from twin.schema import ALARMS
from twin.store import open_store

STEP_S = 10
MINUTES = 60
#: The episodes of the scenario: (rule, sensor) → [(first minute, last minute)] of the runs
#: of true readings that must raise an alarm. pm25 high 10–40 (30 min, > 15 min) raises one;
#: pm25 high 50–55 (5 min) raises none; smoke 20–30 and 45–47 raise one each (auto-cases).
EXPECTED = {("pm25_high", "S-AIR1"): 1, ("smoke", "S-SMK1"): 2}


def scenario(start: pd.Timestamp) -> list[tuple[str, dict]]:
    """(topic suffix, body) of an hour of air and smoke readings every 10 s, oldest first."""
    out = []
    for i in range(MINUTES * 60 // STEP_S):
        minute = i * STEP_S / 60
        at = (start + pd.Timedelta(seconds=i * STEP_S)).isoformat()
        high = 10 <= minute < 40 or 50 <= minute < 55
        smoke = 20 <= minute < 30 or 45 <= minute < 47
        out.append(("obs", {"id": f"air-{i}", "sensor_id": "S-AIR1", "observed_at": at,
                            "values": {"pm25": 90.0 if high else 40.0}}))
        out.append(("obs", {"id": f"smk-{i}", "sensor_id": "S-SMK1", "observed_at": at,
                            "values": {"smoke": int(smoke)}}))
    return out


def publish_all(host: str, port: int, topic: str, bodies: list[tuple[str, dict]],
                pause_after: int | None = None, paused: threading.Event | None = None) -> None:
    """Publish with QoS 1; after *pause_after* messages wait until *paused* is set."""
    import paho.mqtt.client as mqtt

    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
    client.connect(host, port)
    client.loop_start()
    infos = []
    for n, (_, body) in enumerate(bodies):
        if pause_after is not None and n == pause_after:
            for info in infos:
                info.wait_for_publish(timeout=30)
            paused.wait(60)
        infos.append(client.publish(topic, json.dumps(body), qos=1))
    for info in infos:
        info.wait_for_publish(timeout=30)
    client.disconnect()
    client.loop_stop()


def alarms_settled(store, cases_expected: int):
    """Condition: every expected alarm stored and resolved, and every auto-case made."""
    def check() -> bool:
        alarms = store.read_rows(ALARMS)
        counts = alarms.groupby(["rule_id", "source_id"]).size().to_dict() if len(alarms) else {}
        if any(counts.get(k, 0) < n for k, n in EXPECTED.items()):
            return False
        mine = alarms[alarms["rule_id"].isin(["pm25_high", "smoke"])]
        return bool((mine["status"] != "open").all()) and int(
            mine["case_id"].notna().sum()) >= cases_expected
    return check


def assert_once(store) -> None:
    """Exactly the expected alarms and one case per auto-case alarm; no two alarms overlap."""
    alarms = store.read_rows(ALARMS)
    counts = alarms.groupby(["rule_id", "source_id"]).size().to_dict()
    for key, n in EXPECTED.items():
        assert counts.get(key) == n, (key, counts)
    smoke = alarms[alarms["rule_id"] == "smoke"].sort_values("opened_at")
    assert smoke["case_id"].notna().all() and smoke["case_id"].is_unique
    cases = store.read_cases()
    assert sorted(cases["id"]) == sorted(smoke["case_id"])  # one case per alarm, no more
    # whatever the rule, never two alarms of one (rule, source) at once
    for _, group in alarms.groupby(["rule_id", "source_id"]):
        spans = group.sort_values("opened_at")
        ends = spans["resolved_at"].fillna(pd.Timestamp("9999-01-01", tz="UTC").as_unit("us"))
        assert (spans["opened_at"].iloc[1:].to_numpy() > ends.iloc[:-1].to_numpy()).all(), group
    pm = alarms[alarms["rule_id"] == "pm25_high"].iloc[0]
    assert pm["status"] == "resolved"


def run_workers(pg_store, host, port, n: int) -> list[Pipeline]:
    """Publish the scenario to *n* in-process workers of one shared subscription; wait."""
    topic = f"gridtwin/t{uuid.uuid4().hex[:8]}/obs"
    shared = f"$share/once-{uuid.uuid4().hex[:6]}/{topic}"
    url = f"{pg_store.url}?schema={pg_store.schema}"
    workers = []
    rules = load_rules()
    for i in range(n):
        store = open_store(url)  # a store (connections) of its own, as a worker host has
        registry = Registry.from_store(store)
        source = MqttSource(f"mqtt://{host}:{port}", [shared], client_id=f"once{i}-{topic}")
        assert source.subscribed.wait(10), "no SUBACK"
        pipeline = Pipeline(store, registry, rules=RuleEngine(store, rules, registry))
        stop = threading.Event()
        thread = threading.Thread(target=pipeline.run, args=(source,), daemon=True,
                                  kwargs={"stop": stop, "max_batch": 40, "tick_s": 0.5})
        thread.start()
        workers.append((pipeline, source, stop, thread, store))
    bodies = scenario(pd.Timestamp.now(tz="UTC").floor("s") - pd.Timedelta(hours=2))
    try:
        publish_all(host, port, topic, bodies)
        wait_for(lambda: len(pg_store.read_events()) >= len(bodies), 60, "every reading stored")
        wait_for(alarms_settled(pg_store, 2), 60, "the alarms and cases")
    finally:
        for _, source, stop, thread, store in workers:
            stop.set()
            thread.join(10)
            source.close()
            store.close()
    return [w[0] for w in workers]


@pytest.mark.parametrize("n", [1, 4])
def test_each_episode_opens_one_alarm_and_one_case_whatever_the_workers(broker, pg_store, n):
    host, port = broker
    pipelines = run_workers(pg_store, host, port, n)
    assert_once(pg_store)
    assert len(pg_store.read_events()) == len(scenario(pd.Timestamp("2026-01-01", tz="UTC")))
    if n > 1:  # round-robin: every worker took part, and more than one tried to open alarms
        assert min(p.counters.stored for p in pipelines) > 0
    opened = sum(p.counters.alarms_opened for p in pipelines)
    assert opened == len(pg_store.read_rows(ALARMS))  # the database let each open once


def test_a_worker_killed_mid_episode_and_restarted_loses_and_doubles_nothing(broker, pg_store):
    host, port = broker
    topic = f"gridtwin/t{uuid.uuid4().hex[:8]}/obs"
    shared = f"$share/kill-{uuid.uuid4().hex[:6]}/{topic}"
    url = f"{pg_store.url}?schema={pg_store.schema}"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}

    def worker(i: int) -> subprocess.Popen:
        args = [sys.executable, str(ROOT / "scripts" / "run_feeds.py"), "--source",
                f"mqtt://{host}:{port}", "--topic", shared, "--client-id", f"k{i}-{topic}",
                "--db", url, "--batch", "40"]
        proc = subprocess.Popen(args, env=env, stderr=subprocess.PIPE, text=True)
        assert proc.stderr.readline().rstrip().endswith("ready")
        return proc

    procs = [worker(i) for i in range(3)]
    bodies = scenario(pd.Timestamp.now(tz="UTC").floor("s") - pd.Timedelta(hours=2))
    half = len(bodies) // 2  # minute 30: inside the pm25 episode, just after the smoke one
    go_on = threading.Event()
    publisher = threading.Thread(target=publish_all, args=(host, port, topic, bodies),
                                 kwargs={"pause_after": half, "paused": go_on})
    publisher.start()
    try:
        wait_for(lambda: len(pg_store.read_events()) >= half * 0.6, 60, "the first half")
        procs[1].send_signal(signal.SIGKILL)  # mid-episode, with batches in flight
        procs[1].wait(10)
        go_on.set()
        publisher.join(90)
        assert len(pg_store.read_events()) < len(bodies)  # some wait for the dead worker
        procs[1] = worker(1)  # same client id: its session's messages come back to it
        wait_for(lambda: len(pg_store.read_events()) >= len(bodies), 90, "every reading stored")
        wait_for(alarms_settled(pg_store, 2), 60, "the alarms and cases")
    finally:
        go_on.set()
        for proc in procs:
            proc.terminate()
        for proc in procs:
            proc.wait(10)
    events = pg_store.read_events()
    assert sorted(events["id"]) == sorted(b["id"] for _, b in bodies)  # each once
    assert_once(pg_store)


def test_episodes_are_cut_the_same_from_any_order_of_the_readings():
    at = pd.date_range("2026-03-02", periods=8, freq="60s", tz="UTC")
    active = [False, True, True, True, False, True, False, False]
    conds = pd.DataFrame({"rule_id": "r", "source_id": "s", "at": at, "active": active,
                          "value": 1.0, "source_kind": "sensor", "property": "p"})
    durations = pd.Series({"r": 60.0})
    raised, ends = episodes(conds, durations)
    shuffled, ends2 = episodes(conds.sample(frac=1, random_state=3), durations)
    assert raised.equals(shuffled) and ends.equals(ends2)
    # one run of 3 true readings (2 minutes ≥ 1 minute) raises; the single true one does not
    assert raised[["since", "until"]].values.tolist() == [[at[1], at[4]]]
    assert ends["resolved_at"].tolist() == [at[0], at[4], at[6]]


def _alarm(alarm_id: str, opened: str, status: str = "open") -> dict:
    return {"id": alarm_id, "rule_id": "smoke", "source_id": "S-SMK1", "source_kind": "sensor",
            "status": status, "severity": "critical", "opened_at": pd.Timestamp(opened, tz="UTC"),
            "updated_at": pd.Timestamp(opened, tz="UTC"), "property": "smoke", "value": 1.0,
            "lon": 110.29, "lat": 25.08, "data": {}}


def test_the_database_refuses_a_second_open_alarm_and_migration_9_closes_old_doubles(pg_store):
    import sqlalchemy as sa

    from twin.store.sql import ALARM_ONCE_INDEX, alarm_once_ddl

    # a first-wave store: the index missing, the same smoke alarm opened by two workers
    with pg_store.engine.begin() as conn:
        conn.execute(sa.text(f'DROP INDEX "{ALARM_ONCE_INDEX}"'))
    pg_store.put_rows(ALARMS, pd.DataFrame([_alarm("smoke/S-SMK1/a", "2026-03-02T00:01Z"),
                                            _alarm("smoke/S-SMK1/b", "2026-03-02T00:02Z")]))
    with pg_store.engine.begin() as conn:
        for statement in alarm_once_ddl():  # what migration 9 runs
            conn.execute(sa.text(statement))
    got = pg_store.read_rows(ALARMS).set_index("id")["status"].to_dict()
    assert got == {"smoke/S-SMK1/a": "open", "smoke/S-SMK1/b": "closed"}
    # whatever code writes: a second open alarm of the key is refused by the index
    with pytest.raises(sa.exc.IntegrityError, match=ALARM_ONCE_INDEX):
        pg_store.put_rows(ALARMS, pd.DataFrame([_alarm("smoke/S-SMK1/c", "2026-03-02T01:00Z")]))
    # and open_alarms, under its lock, inserts nothing while one is open, and reports it
    episode = pd.DataFrame([{**_alarm("smoke/S-SMK1/d", "2026-03-02T02:00Z"),
                             "since": pd.Timestamp("2026-03-02T02:00Z"), "until": None}])
    assert pg_store.open_alarms(episode) == []
    assert len(pg_store.read_rows(ALARMS)) == 2


def test_an_episode_already_alarmed_and_resolved_is_not_alarmed_again(store):
    """A late reading of a resolved episode (another worker's, late) opens nothing."""
    first = pd.DataFrame([{**_alarm("smoke/S-SMK1/t1", "2026-03-02T00:01Z"),
                           "since": pd.Timestamp("2026-03-02T00:01Z", tz="UTC"),
                           "until": None}])
    assert store.open_alarms(first) == ["smoke/S-SMK1/t1"]
    ended = pd.DataFrame({"rule_id": ["smoke"], "source_id": ["S-SMK1"],
                          "resolved_at": [pd.Timestamp("2026-03-02T00:10Z", tz="UTC")]})
    assert store.resolve_alarms(ended, pd.Timestamp("2026-03-02T00:11Z", tz="UTC")) == [
        "smoke/S-SMK1/t1"]
    assert store.resolve_alarms(ended, pd.Timestamp("2026-03-02T00:12Z", tz="UTC")) == []
    # the same episode seen truncated (it started before the reader's window)
    late = pd.DataFrame([{**_alarm("smoke/S-SMK1/t5", "2026-03-02T00:05Z", "resolved"),
                          "resolved_at": pd.Timestamp("2026-03-02T00:10Z", tz="UTC"),
                          "since": pd.Timestamp("2026-03-02T00:05Z", tz="UTC"),
                          "until": pd.Timestamp("2026-03-02T00:10Z", tz="UTC")}])
    assert store.open_alarms(late) == []
    # the next episode, after the end, is a new alarm
    after = pd.DataFrame([{**_alarm("smoke/S-SMK1/t20", "2026-03-02T00:20Z"),
                           "since": pd.Timestamp("2026-03-02T00:20Z", tz="UTC"),
                           "until": None}])
    assert store.open_alarms(after) == ["smoke/S-SMK1/t20"]
    assert store.active_alarm_keys() == {("smoke", "S-SMK1")}
