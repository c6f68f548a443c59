"""Reliability with the real Mosquitto and PostGIS: crashes, broker restarts, outages, scale-out."""

from __future__ import annotations

import json
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import pandas as pd
import pytest

from tests.services import MQTT_HOST, MQTT_PORT, missing, port_open
from tests.test_feeds_pipeline import FlakyStore, feed_layers
from twin.feeds.models import Registry
from twin.feeds.pipeline import Pipeline
from twin.feeds.sources import MqttSource
from twin.store import open_store

ROOT = Path(__file__).resolve().parent.parent
MOSQUITTO = shutil.which("mosquitto") or "/usr/sbin/mosquitto"


@pytest.fixture
def broker() -> tuple[str, int]:
    if not port_open(MQTT_HOST, MQTT_PORT):
        missing("Mosquitto", f"nothing listens on {MQTT_HOST}:{MQTT_PORT}; run `make test`")
    return MQTT_HOST, MQTT_PORT


@pytest.fixture
def pg_store(postgis_url, grid_cells):
    """A fresh PostGIS schema holding the feed test layers."""
    schema = f"t_{uuid.uuid4().hex[:10]}"
    store = open_store(postgis_url, schema=schema, drop_schema_on_close=True)
    for name, frame in feed_layers(grid_cells).items():
        if name != "community":
            store.write_layer(name, frame, actor="test", source="test")
    yield store
    store.close()


def wait_for(condition, timeout: float = 30.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.05)


def stored_ids(store) -> list[str]:
    return store.read_events()["id"].tolist()


def publish(host: str, port: int, topic: str, ids: list[str]) -> None:
    """Publish one observation per id with QoS 1 and return when the broker acknowledged all."""
    import paho.mqtt.client as mqtt

    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
    client.connect(host, port)
    client.loop_start()
    infos = []
    for i, mid in enumerate(ids):
        body = {"id": mid, "sensor_id": "S-AIR1", "values": {"pm25": float(i % 50)},
                "observed_at": pd.Timestamp("2026-03-02T00:00Z")
                + pd.Timedelta(seconds=i)}
        body["observed_at"] = body["observed_at"].isoformat()
        infos.append(client.publish(topic, json.dumps(body), qos=1))
    for info in infos:
        info.wait_for_publish(timeout=30)
    client.disconnect()
    client.loop_stop()


def start_pipeline(store, url, topics, client_id):
    source = MqttSource(url, topics, client_id=client_id)
    assert source.subscribed.wait(10), "no SUBACK"
    pipeline = Pipeline(store, Registry.from_store(store))
    stop = threading.Event()
    thread = threading.Thread(target=pipeline.run, args=(source,),
                              kwargs={"stop": stop, "max_batch": 500}, daemon=True)
    thread.start()

    def finish():
        stop.set()
        thread.join(10)
        source.close()

    return pipeline, finish


def test_sigkill_mid_stream_then_restart_stores_every_message_once(broker, pg_store):
    host, port = broker
    topic = f"gridtwin/t{uuid.uuid4().hex[:8]}/obs"
    url = f"{pg_store.url}?schema={pg_store.schema}"
    args = [sys.executable, str(ROOT / "scripts" / "run_feeds.py"), "--source",
            f"mqtt://{host}:{port}", "--topic", topic, "--client-id", f"kill-{topic}",
            "--db", url, "--no-rules", "--batch", "200"]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    first = subprocess.Popen(args, env=env, stderr=subprocess.PIPE, text=True)
    assert first.stderr.readline().rstrip().endswith("ready")  # subscribed: session exists
    ids = [f"k{i:05d}" for i in range(2500)]
    publisher = threading.Thread(target=publish, args=(host, port, topic, ids))
    publisher.start()
    wait_for(lambda: len(stored_ids(pg_store)) >= 300, 30, "the first messages stored")
    first.send_signal(signal.SIGKILL)
    first.wait(10)
    publisher.join(60)
    assert len(stored_ids(pg_store)) < len(ids)  # killed mid-stream
    second = subprocess.Popen(args, env=env, stderr=subprocess.DEVNULL)
    try:
        wait_for(lambda: len(stored_ids(pg_store)) >= len(ids), 60, "every message stored")
    finally:
        second.terminate()
        second.wait(10)
    got = stored_ids(pg_store)
    assert sorted(got) == ids  # every message, exactly once


def test_shared_subscription_spreads_over_two_workers_without_loss(broker, pg_store):
    host, port = broker
    topic = f"gridtwin/t{uuid.uuid4().hex[:8]}/obs"
    shared = f"$share/ingest-{uuid.uuid4().hex[:6]}/{topic}"
    workers = [start_pipeline(pg_store, f"mqtt://{host}:{port}", [shared], f"w{i}-{topic}")
               for i in range(2)]
    ids = [f"s{i:05d}" for i in range(3000)]
    try:
        publish(host, port, topic, ids)
        wait_for(lambda: len(stored_ids(pg_store)) >= len(ids), 60, "every message stored")
    finally:
        for _, finish in workers:
            finish()
    assert sorted(stored_ids(pg_store)) == ids
    counts = [p.counters.stored for p, _ in workers]
    assert sum(counts) == len(ids) and min(counts) > 0, counts


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_broker_restart_mid_stream_loses_nothing_acknowledged(tmp_path, pg_store, broker):
    port = _free_port()
    conf = tmp_path / "mosquitto.conf"
    conf.write_text(
        f"listener {port} 127.0.0.1\nallow_anonymous true\npersistence true\n"
        f"persistence_location {tmp_path}/\nautosave_interval 1\nmax_queued_messages 0\n"
        "max_queued_bytes 0\nmax_inflight_messages 0\n"
        # as root mosquitto drops to user 'mosquitto', which could not write its persistence here
        + (f"user {pwd.getpwuid(os.getuid()).pw_name}\n")
    )

    def start():
        proc = subprocess.Popen([MOSQUITTO, "-c", str(conf)], stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
        wait_for(lambda: port_open("127.0.0.1", port), 10, "our mosquitto")
        return proc

    mosq = start()
    topic = f"gridtwin/t{uuid.uuid4().hex[:8]}/obs"
    pipeline, finish = start_pipeline(pg_store, f"mqtt://127.0.0.1:{port}", [topic], f"r-{topic}")
    ids = [f"b{i:05d}" for i in range(3000)]
    try:
        publish("127.0.0.1", port, topic, ids[:1500])
        mosq.send_signal(signal.SIGTERM)  # a restart: the broker saves its sessions
        mosq.wait(10)
        mosq = start()
        publish("127.0.0.1", port, topic, ids[1500:])
        wait_for(lambda: len(stored_ids(pg_store)) >= len(ids), 60, "every message stored")
    finally:
        finish()
        mosq.terminate()
        mosq.wait(10)
    assert sorted(stored_ids(pg_store)) == ids


def test_store_outage_with_mqtt_buffers_and_loses_nothing(broker, pg_store, tmp_path):
    host, port = broker
    topic = f"gridtwin/t{uuid.uuid4().hex[:8]}/obs"
    flaky = FlakyStore(pg_store)
    source = MqttSource(f"mqtt://{host}:{port}", [topic], client_id=f"o-{topic}")
    assert source.subscribed.wait(10)
    pipeline = Pipeline(flaky, Registry.from_store(pg_store), buffer_dir=tmp_path / "buf")
    stop = threading.Event()
    thread = threading.Thread(target=pipeline.run, args=(source,),
                              kwargs={"stop": stop, "max_batch": 300, "tick_s": 0.2})
    flaky.down.set()
    thread.start()
    ids = [f"o{i:05d}" for i in range(2000)]
    try:
        publish(host, port, topic, ids)
        wait_for(lambda: pipeline.counters.buffered >= len(ids), 30, "everything buffered")
        assert stored_ids(pg_store) == [] and len(pipeline.buffer) > 0
        flaky.down.clear()
        wait_for(lambda: len(stored_ids(pg_store)) >= len(ids), 30, "the buffer drained")
    finally:
        stop.set()
        thread.join(10)
        source.close()
    assert sorted(stored_ids(pg_store)) == ids and len(pipeline.buffer) == 0


def test_a_batch_closes_at_its_message_or_byte_limit_and_never_waits_past_its_linger():
    import queue

    from twin.feeds.models import Message

    source = MqttSource.__new__(MqttSource)  # the queue side only: no broker needed
    source._queue, source.linger_s, source.max_bytes = queue.SimpleQueue(), 0.05, 1000
    for i in range(20):
        source._queue.put(Message("gridtwin/x/obs", b"x" * 100, pd.Timestamp.now(tz="UTC"),
                                  token=i))
    assert len(source.fetch(5, 0.1)) == 5            # message limit
    assert len(source.fetch(50, 0.1)) == 10          # byte limit
    t0 = time.monotonic()
    rest = source.fetch(50, 0.1)                     # 5 left: all of them, then the linger
    assert [m.token for m in rest] == list(range(15, 20))
    assert time.monotonic() - t0 >= 0.05
    assert source.fetch(50, 0.01) == []              # nothing: back after the timeout
