"""Run the live-feed pipeline: MQTT, a JSONL recording or the in-process simulator → store."""

from __future__ import annotations

import argparse
import gc
import logging
import signal
import sys
import threading
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from twin.errors import TwinError  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--source", help="mqtt://host:port or a .jsonl recording")
    parser.add_argument("--simulate", action="store_true",
                        help="run the in-process simulator in real time (the demo)")
    parser.add_argument("--db", help="store URL (default TWIN_DATABASE_URL, else the demo)")
    parser.add_argument("--topic", action="append",
                        help="MQTT topic filter, repeatable; $share/<group>/<filter> to share")
    parser.add_argument("--client-id", help="stable MQTT client id (one per worker)")
    parser.add_argument("--speed", type=float, help="replay speed (1 = real time)")
    parser.add_argument("--seed", type=int, default=0, help="simulator seed")
    parser.add_argument("--backfill-min", type=float, default=60,
                        help="simulated minutes sent at start so the cockpit has a history")
    parser.add_argument("--buffer-dir", help="on-disk buffer while the store is unavailable")
    parser.add_argument("--buffer-mb", type=float, default=256)
    parser.add_argument("--rules", help="rules table (default data/rules.csv)")
    parser.add_argument("--no-rules", action="store_true")
    parser.add_argument("--batch", type=int, default=5000,
                        help="most messages per batch (one commit, then one ack each)")
    parser.add_argument("--linger-ms", type=float, default=20,
                        help="MQTT: how long a batch waits for more after its first message")
    parser.add_argument("-v", "--verbose", action="store_true")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if not args.source and not args.simulate:
        parser.error("give --source mqtt://host:port (or a .jsonl file), or --simulate")
    try:
        return _run(args)
    except TwinError as exc:
        print(f"run_feeds: {exc}", file=sys.stderr)
        return 2


def _run(args: argparse.Namespace) -> int:
    from twin.feeds.models import Registry
    from twin.feeds.pipeline import Pipeline
    from twin.feeds.rules import RuleEngine, load_rules
    from twin.feeds.simulator import Simulator
    from twin.feeds.sources import SimulatorSource, open_source
    from twin.store import open_store

    store = open_store(args.db)
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
    print(f"run_feeds: {counters.as_dict()}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
