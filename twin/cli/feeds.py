"""``gridtwin feeds``: the live-feed pipeline, MQTT, a JSONL recording or the simulator → store."""

from __future__ import annotations

import argparse
import gc
import logging
import signal
import sys
import threading

from twin.cli._common import add_json_option, add_store_option, open_store, print_json
from twin.errors import ValidationError

NAME = "feeds"
HELP = "run the live feeds (MQTT, a recording, the simulator) into the store"
DESCRIPTION = (
    "Run the live-feed pipeline: MQTT, a JSONL recording or the in-process simulator → store."
)
EPILOG = """\
examples:
  gridtwin feeds --source mqtt://127.0.0.1:18830 --store URL --client-id worker-1
  gridtwin feeds --source tests/data/feeds/sample.jsonl --speed 10
  gridtwin feeds --simulate --store var/demo-live.gpkg              the demo
(also: gridtwin-feeds …, python scripts/run_feeds.py …)

It runs until SIGINT / SIGTERM (or the end of a recording); the line "… ready" on stderr says
it is subscribed. exit codes: 0 stopped cleanly, 2 bad input, 1 failure
"""


def configure(p: argparse.ArgumentParser) -> None:
    p.add_argument("--source", help="mqtt://host:port or a .jsonl recording")
    p.add_argument("--simulate", action="store_true",
                   help="run the in-process simulator in real time (the demo)")
    add_store_option(p)
    p.add_argument("--topic", action="append",
                   help="MQTT topic filter, repeatable; $share/<group>/<filter> to share")
    p.add_argument("--client-id", help="stable MQTT client id (one per worker)")
    p.add_argument("--speed", type=float, help="replay speed (1 = real time)")
    p.add_argument("--seed", type=int, default=0, help="simulator seed")
    p.add_argument("--backfill-min", type=float, default=60,
                   help="simulated minutes sent at start so the cockpit has a history")
    p.add_argument("--buffer-dir", help="on-disk buffer while the store is unavailable")
    p.add_argument("--buffer-mb", type=float, default=256)
    p.add_argument("--rules", help="rules table (default data/rules.csv)")
    p.add_argument("--no-rules", action="store_true")
    p.add_argument("--batch", type=int, default=5000,
                   help="most messages per batch (one commit, then one ack each)")
    p.add_argument("--linger-ms", type=float, default=20,
                   help="MQTT: how long a batch waits for more after its first message")
    p.add_argument("-v", "--verbose", action="store_true")
    add_json_option(p, "the final counters")


def run(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if not args.source and not args.simulate:
        raise ValidationError("give --source mqtt://host:port (or a .jsonl file), or --simulate")
    from twin.feeds.models import Registry
    from twin.feeds.pipeline import Pipeline
    from twin.feeds.rules import RuleEngine, load_rules
    from twin.feeds.simulator import Simulator
    from twin.feeds.sources import SimulatorSource, open_source

    store = open_store(args)
    registry = Registry.from_store(store)
    if args.simulate:
        source = SimulatorSource(Simulator(registry.sensors, registry.cameras, seed=args.seed),
                                 backfill=args.backfill_min * 60)
    else:
        options = {"linger_s": args.linger_ms / 1000} if args.source.startswith(
            ("mqtt://", "tcp://")) else {}
        source = open_source(args.source, topics=args.topic, client_id=args.client_id,
                             speed=args.speed, **options)
    rules = None
    if not args.no_rules:
        layers = {n: store.read_layer(n) for n in ("community", "grid_cells")
                  if store.layer_versions(n)}
        rules = RuleEngine(store, load_rules(args.rules), registry, layers=layers)
    pipeline = Pipeline(store, registry, rules=rules, buffer_dir=args.buffer_dir,
                        buffer_bytes=int(args.buffer_mb * 2**20))
    # Everything built so far (modules, layers, the registry) lives as long as the process:
    # frozen, the collector's full passes skip it. Without this, each full pass triggered by
    # the objects a batch allocates (a dict per observation) walks the whole startup heap:
    # about a quarter of the decode and write CPU time with 50-observation gateway messages.
    gc.collect()
    gc.freeze()
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    subscribed = getattr(source, "subscribed", None)
    if subscribed is not None and not subscribed.wait(30):
        print(f"run_feeds: no subscription at {source.name} yet; still trying", file=sys.stderr)
    # scripts and tests wait for this line: from here on nothing published is missed
    print(f"run_feeds: {source.name} → {store!r} ready", file=sys.stderr, flush=True)
    try:
        counters = pipeline.run(source, stop=stop, max_batch=args.batch)
    finally:
        source.close()
        store.close()
    if getattr(args, "json", False):
        print_json(counters.as_dict())
    print(f"run_feeds: {counters.as_dict()}", file=sys.stderr)
    return 0


def main(argv: list[str] | None = None) -> int:
    """``gridtwin-feeds`` (and ``python scripts/run_feeds.py``)."""
    from twin.cli import run_command

    return run_command(NAME, argv)
