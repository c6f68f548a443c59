"""QoS 1 ingest into PostGIS (twin.feeds) vs mosquitto_sub -q 1 on the same publisher."""

from __future__ import annotations

import json
import secrets
import subprocess
import threading
import time

from benchmarks import scenarios
from benchmarks.common import BROKER, Figure, Timing, figure

NAME = "ingest"
TITLE = "QoS 1 ingest (messages/s)"
DESCRIPTION = """
One paho-mqtt publisher sends QoS 1 sensor observations (~100-byte JSON, ids unique) to the test
broker with flow control; the anchor is `mosquitto_sub -q 1` receiving them (the best a
subscriber on this machine can do), ours is the `twin.feeds` pipeline receiving, decoding,
enriching and committing them to PostGIS, acknowledged only after commit. Figures are messages
per second (higher is better); the ratio is ours ÷ anchor.
"""
SCALES = ("community", "street")
QUICK_SCALES = ("community",)
MESSAGES = {"community": 20_000, "street": 50_000}


def _payloads(scen: dict, n: int, batch: int = 1) -> list[bytes]:
    sensors = scen["sensors"]["sensor_id"].to_numpy(dtype=object)
    out = []
    for i in range(0, n, batch):
        obs = [{"id": f"bench-{i + j}", "sensor_id": sensors[(i + j) % len(sensors)],
                "observed_at": "2026-03-01T10:00:00+08:00", "values": {"pm25": 41.0}}
               for j in range(min(batch, n - i))]
        out.append(json.dumps(obs[0] if batch == 1 else obs).encode())
    return out


def publish(topic: str, payloads: list[bytes], rate: float | None = None) -> float:
    """Publish at QoS 1 with flow control (at most 1,000 in flight); return the seconds taken."""
    import paho.mqtt.client as mqtt

    host, port = BROKER.split(":")
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"bench-pub-{topic[-8:]}")
    client.max_inflight_messages_set(1000)
    client.max_queued_messages_set(0)
    client.connect(host, int(port))
    client.loop_start()
    t0 = time.perf_counter()
    infos = []
    for i, p in enumerate(payloads):
        if rate:
            wait = t0 + i / rate - time.perf_counter()
            if wait > 0:
                time.sleep(wait)
        infos.append(client.publish(topic, p, qos=1))
        if len(infos) >= 1000:
            infos.pop(0).wait_for_publish()
    for info in infos:
        info.wait_for_publish()
    elapsed = time.perf_counter() - t0
    client.loop_stop()
    client.disconnect()
    return elapsed


def anchor(payloads: list[bytes]) -> float:
    """Messages/s that mosquitto_sub -q 1 receives from the publisher."""
    host, port = BROKER.split(":")
    topic = f"bench/{secrets.token_hex(4)}/obs"
    sub = subprocess.Popen(["mosquitto_sub", "-h", host, "-p", port, "-q", "1", "-t", topic,
                            "-C", str(len(payloads))], stdout=subprocess.DEVNULL,
                           stderr=subprocess.PIPE)
    time.sleep(0.5)  # the subscription is in place (mosquitto_sub has no ready signal)
    t0 = time.perf_counter()
    pub = threading.Thread(target=publish, args=(topic, payloads))
    pub.start()
    sub.wait(timeout=600)
    elapsed = time.perf_counter() - t0
    pub.join()
    if sub.returncode != 0:
        raise RuntimeError(f"mosquitto_sub failed: {sub.stderr.read().decode()[:300]}")
    return len(payloads) / elapsed


def ours(scen: dict, payloads: list[bytes]) -> float | None:
    """Messages/s the twin.feeds pipeline commits to PostGIS; None until the pipeline exists."""
    try:
        from twin.feeds import pipeline  # noqa: F401
    except ImportError:
        return None
    return None  # the pipeline's public entry point is wired in here once it is committed


def run(scale: str, quick: bool) -> list[Figure]:
    scen = scenarios.scenario(scale)
    n = MESSAGES[scale] // (2 if quick else 1)
    payloads = _payloads(scen, n)
    reps = 3
    anchor(payloads[:1000])  # warm-up
    rates = [anchor(payloads) for _ in range(reps)]
    t_a = Timing(sorted(rates), None, 0.0)
    got = ours(scen, payloads)
    t_o = Timing([got], None, 0.0) if got else None
    fig = figure(NAME, "QoS 1 ingest, one message per observation", scale,
                 {"messages": n, "sensors": len(scen["sensors"])},
                 "twin.feeds MQTT source → PostGIS (manual ack after commit)",
                 "mosquitto_sub -q 1", t_o, t_a, None, unit="per_s",
                 notes="" if got else "twin.feeds has no committed ingest pipeline yet: only the "
                                      "anchor was measured")
    fig.anchor_peak_mb = None
    return [fig]
