"""``gridtwin simulate``: publish the simulated community traffic to an MQTT broker (QoS 1)."""

from __future__ import annotations

import argparse
import sys
import threading
import time

from twin.cli._common import FAILURE, add_json_option, add_store_option, open_store, print_json
from twin.errors import ConfigError, ValidationError

NAME = "simulate"
HELP = "publish simulated sensor and camera traffic to MQTT"
DESCRIPTION = (
    "Publish the simulated community traffic to an MQTT broker (QoS 1, with flow control)."
)
EPILOG = """\
examples:
  gridtwin simulate --mqtt mqtt://127.0.0.1:18830                 real time, until Ctrl-C
  gridtwin simulate --mqtt mqtt://127.0.0.1:18830 --rate 2000 --hours 1
(also: gridtwin-simulate …, python scripts/simulate.py …)

exit codes: 0 published, 2 bad input, 1 failure (e.g. the broker cannot be reached)
"""

#: paho cannot hold more than 65,535 unacknowledged QoS 1 messages; stay well below.
MAX_IN_FLIGHT = 20_000


def configure(p: argparse.ArgumentParser) -> None:
    p.add_argument("--mqtt", required=True, help="mqtt://host:port")
    p.add_argument("--rate", type=float, default=0,
                   help="messages per second (0: the simulator's own real-time pace)")
    add_store_option(p, help="store whose sensors and cameras are simulated "
                     "(default: TWIN_DATABASE_URL, then the demo GeoPackage)")
    p.add_argument("--community", default="demo")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--hours", type=float, default=1.0,
                   help="simulated hours to publish when --rate is given")
    add_json_option(p, "the number of messages published")


def run(args: argparse.Namespace) -> int:
    import pandas as pd

    from twin.feeds.models import Registry
    from twin.feeds.simulator import Simulator
    from twin.feeds.transport import broker_address, connect, mqtt_client

    try:
        host, port = broker_address(args.mqtt)
    except ConfigError:
        raise ValidationError(f"--mqtt {args.mqtt!r}: write it as mqtt://host:port "
                              "(mqtts://host:8883 for TLS)") from None
    with open_store(args) as store:
        registry = Registry.from_store(store)
    sim = Simulator(registry.sensors, registry.cameras, community=args.community, seed=args.seed)
    window = threading.Semaphore(MAX_IN_FLIGHT)
    client = mqtt_client(args.mqtt)  # TLS and login from the settings (docs/feeds.md)
    client.on_publish = lambda *a: window.release()
    try:
        connect(client, args.mqtt)  # a refused certificate or login: ConfigError, one line
    except OSError as exc:
        sys.stderr.write(f"error: cannot reach the MQTT broker {host}:{port}: "
                         f"{exc} (hint: start the broker, or check --mqtt)\n")
        return FAILURE
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
    if getattr(args, "json", False):
        print_json({"published": sent})
    print(f"simulate: published {sent} messages", file=sys.stderr)
    return 0


def main(argv: list[str] | None = None) -> int:
    """``gridtwin-simulate`` (and ``python scripts/simulate.py``)."""
    from twin.cli import run_command

    return run_command(NAME, argv)
