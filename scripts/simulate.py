"""Publish the simulated community traffic to an MQTT broker (QoS 1, with flow control)."""

from __future__ import annotations

import argparse
import sys
import threading
import time
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from twin.errors import TwinError  # noqa: E402

#: paho cannot hold more than 65,535 unacknowledged QoS 1 messages; stay well below.
MAX_IN_FLIGHT = 20_000


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--mqtt", required=True, help="mqtt://host:port")
    parser.add_argument("--rate", type=float, default=0,
                        help="messages per second (0: the simulator's own real-time pace)")
    parser.add_argument("--db", help="store whose sensors and cameras are simulated")
    parser.add_argument("--community", default="demo")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--hours", type=float, default=1.0,
                        help="simulated hours to publish when --rate is given")
    args = parser.parse_args(argv)
    try:
        return _run(args)
    except TwinError as exc:
        print(f"simulate: {exc}", file=sys.stderr)
        return 2


def _run(args: argparse.Namespace) -> int:
    from urllib.parse import urlparse

    import paho.mqtt.client as mqtt

    from twin.feeds.models import Registry
    from twin.feeds.simulator import Simulator
    from twin.store import open_store

    store = open_store(args.db)
    registry = Registry.from_store(store)
    store.close()
    sim = Simulator(registry.sensors, registry.cameras, community=args.community, seed=args.seed)
    url = urlparse(args.mqtt)
    window = threading.Semaphore(MAX_IN_FLIGHT)
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
    client.on_publish = lambda *a: window.release()
    client.connect(url.hostname, url.port or 1883)
    client.loop_start()
    sent = 0
    start = time.monotonic()
    cursor = pd.Timestamp.now(tz="UTC").floor("s")
    try:
        while True:
            if args.rate:
                end = cursor + pd.Timedelta(hours=args.hours)
                messages = sim.messages(cursor, end)
                cursor = end
            else:
                now = pd.Timestamp.now(tz="UTC").floor("s")
                messages = sim.messages(cursor, now) if now > cursor else []
                cursor = max(cursor, now)
            for m in messages:
                window.acquire()  # flow control: block while too many are unacknowledged
                client.publish(m.topic, m.payload, qos=1)
                sent += 1
                if args.rate:
                    delay = sent / args.rate - (time.monotonic() - start)
                    if delay > 0:
                        time.sleep(delay)
            if args.rate:
                break
            time.sleep(1)
    except KeyboardInterrupt:
        pass
    for _ in range(MAX_IN_FLIGHT):
        window.acquire()  # wait for every PUBACK
    client.disconnect()
    client.loop_stop()
    print(f"simulate: published {sent} messages", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
