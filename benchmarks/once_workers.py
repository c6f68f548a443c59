"""Ingest with 1, 2 and 4 workers of one shared subscription, rules on: rate and duplicates.

``python -m benchmarks.once_workers [--scale community] [--hours 2]`` publishes the simulator's
traffic of the scenario community for *hours* of simulated time (its episodes of bad air,
smoke, leaks, open manholes, camera alerts) to ``scripts/run_feeds.py`` ×k on
``$share/<group>/…``, rules on (data/rules.csv), into a fresh PostGIS schema each run, and
reports messages/s from the first publish to the last event stored, then checks what the
database holds: every message once, never two alarms of one (rule, source) overlapping in
time, one case per auto-case alarm. The figures are quoted in docs/scale.md.
"""

from __future__ import annotations

import argparse
import json
import secrets
import signal
import subprocess
import sys
import time

import pandas as pd

from benchmarks import scenarios
from benchmarks.common import BROKER, PG_URL, Figure, Timing, figure, pg_store, sql_rows
from benchmarks.ingest import ROOT, publish
from twin.feeds.models import Registry
from twin.feeds.simulator import Simulator
from twin.schema import ALARMS

NAME = "once_workers"
TITLE = "Ingest with 1, 2 and 4 workers of one shared subscription, rules on (issue 20)"
SCALES = ("community",)
QUICK_SCALES = ("community",)
#: Hours of simulated traffic a pass publishes (the full pass: docs/scale.md's 12 hours).
HOURS = {True: 3.0, False: 12.0}


def workers(store, k: int, topic: str, rules: bool) -> list[subprocess.Popen]:
    """Start *k* ``run_feeds.py`` in one shared subscription; return once all are subscribed."""
    host, port = BROKER.split(":")
    group = f"once{secrets.token_hex(3)}"
    procs = [subprocess.Popen(
        [sys.executable, str(ROOT / "scripts" / "run_feeds.py"), "--source",
         f"mqtt://{host}:{port}", "--topic", f"$share/{group}/{topic}", "--db",
         f"{PG_URL}?schema={store.schema}", "--client-id", f"{group}-{i}",
         *([] if rules else ["--no-rules"])],
        cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        for i in range(k)]
    for p in procs:
        if not p.stderr.readline().rstrip().endswith("ready"):
            raise RuntimeError("a worker did not start")
    return procs


def stop(procs: list[subprocess.Popen]) -> None:
    for p in procs:
        p.send_signal(signal.SIGTERM)
    for p in procs:
        try:
            p.wait(timeout=60)
        except subprocess.TimeoutExpired:
            p.kill()


def check(store, n: int) -> dict:
    """What the database holds after a run: duplicates of anything are failures."""
    events = sql_rows(store, "SELECT count(*), count(DISTINCT id) FROM twin_events")[0]
    alarms = store.read_rows(ALARMS)
    overlapping = 0
    for _, group in alarms.groupby(["rule_id", "source_id"]):
        spans = group.sort_values("opened_at")
        ends = spans["resolved_at"].fillna(pd.Timestamp("9999-01-01", tz="UTC").as_unit("us"))
        overlapping += int((spans["opened_at"].iloc[1:].to_numpy()
                            <= ends.iloc[:-1].to_numpy()).sum())
    cases = store.read_cases()
    linked = alarms["case_id"].dropna()
    return {"events": int(events[0]), "distinct": int(events[1]), "published": n,
            "alarms": len(alarms), "overlapping_alarms": overlapping,
            "auto_cases": len(cases), "cases_linked": int(linked.nunique()),
            "alarms_sharing_a_case": int(linked.duplicated().sum())}


def run_once(scen: dict, k: int, hours: float, rules: bool) -> dict:
    with pg_store("once") as store:
        for name in ("community", "grid_cells", "buildings", "parking", "cameras", "sensors"):
            store.write_layer(name, scen[name], actor="bench", source="scenario")
        registry = Registry.from_store(store)
        sim = Simulator(registry.sensors, registry.cameras, seed=7)
        end = pd.Timestamp.now(tz="UTC").floor("s") - pd.Timedelta(minutes=1)
        messages = sim.messages(end - pd.Timedelta(hours=hours), end)
        base = f"gridtwin/once{secrets.token_hex(3)}"
        payloads = [m.payload for m in messages if m.topic.endswith("/obs")]
        camera = [m.payload for m in messages if m.topic.endswith("/camera")]
        procs = workers(store, k, f"{base}/+", rules)
        try:
            t0 = time.perf_counter()
            publish(f"{base}/obs", payloads)
            publish(f"{base}/camera", camera)
            n = len(payloads) + len(camera)
            while sql_rows(store, "SELECT count(*) FROM twin_events")[0][0] < n:
                if time.perf_counter() - t0 > 900:
                    raise TimeoutError("not everything stored in 15 minutes")
                time.sleep(0.05)
            elapsed = time.perf_counter() - t0
            time.sleep(8)  # a tick or two: offline alarms, the case sweep
        finally:
            stop(procs)
        return {"workers": k, "rules": rules, "messages": n, "seconds": round(elapsed, 2),
                "per_s": round(n / elapsed), **check(store, n)}


def clean(result: dict) -> bool:
    """Every message stored once, no two alarms of a key overlapping, no case shared."""
    return (result["events"] == result["distinct"] == result["published"]
            and result["overlapping_alarms"] == 0 and result["alarms_sharing_a_case"] == 0
            and result["cases_linked"] == result["auto_cases"])


def run(scale: str, quick: bool) -> list[Figure]:
    """Throughput of 1, 2 and 4 workers, rules on; the anchor is the 1-worker run."""
    scen = scenarios.scenario(scale)
    results = [run_once(scen, k, HOURS[quick], True) for k in (1, 2, 4)]
    one = Timing([results[0]["per_s"]], None, 0.0)
    return [figure(NAME, f"{r['workers']} worker(s), rules on", scale,
                   {"messages": r["messages"], "alarms": r["alarms"],
                    "auto_cases": r["auto_cases"]},
                   f"{r['workers']} run_feeds.py in one $share group", "1 worker",
                   Timing([r["per_s"]], None, 0.0), one, clean(r), unit="per_s",
                   notes="same answer = every message stored once, no overlapping alarms of "
                   "one (rule, source), one case per auto-case alarm", extra=r)
            for r in results]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--scale", default="community")
    p.add_argument("--hours", type=float, default=2.0)
    p.add_argument("--workers", default="1,2,4")
    p.add_argument("--no-rules-too", action="store_true", help="also measure without rules")
    args = p.parse_args(argv)
    scen = scenarios.scenario(args.scale)
    for k in (int(v) for v in args.workers.split(",")):
        for rules in ((True, False) if args.no_rules_too else (True,)):
            print(json.dumps(run_once(scen, k, args.hours, rules)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
