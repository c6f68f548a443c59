"""Open311 POST of a report (locate, route, deadlines, store, audit): requests/s under wrk.

``python -m benchmarks --only open311`` (or ``python -m benchmarks.open311 [--seconds 15]``)
serves a community's grids with ``gridtwin``'s HTTP app in a process of its own (uvicorn, one
worker), then drives it from another process with ``wrk`` (``apt-get install -y wrk``) and a
Lua script that sends FixMyStreet's form-encoded ``POST requests.xml`` with a partner's
``api_key`` at points spread over the grids. Each 2xx answer is one located, routed, timed,
stored and audited case: after the run the store must hold exactly as many cases (and
``case.collect`` audit rows) as wrk counted 2xx answers. Run on the embedded store and on
PostGIS; the issue's target is 300 requests/s on this machine.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import httpx
import numpy as np

from benchmarks.common import PG_URL, Figure, pg_store

NAME = "open311"
TITLE = "Open311 POST requests/s (locate, route, deadlines, store, audit) under wrk"
SCALES = ("community",)
QUICK_SCALES = ("community",)
TARGET_PER_S = 300.0
ROOT = Path(__file__).resolve().parents[1]

LUA = """
local bodies = %s
local i = 0
request = function()
  i = i + 1
  return wrk.format("POST", "/open311/v2/requests.xml",
    {["Content-Type"] = "application/x-www-form-urlencoded"}, bodies[(i %% #bodies) + 1])
end
"""


def _prepare(store) -> str:
    """Write the community's grids and a partner with a key into *store*; return the key."""
    from twin.scenario import make_scenario
    from twin.trust import create_user
    from twin.trust.apikeys import create_key

    scenario = make_scenario("community", 0, residents=False, spaces=False)
    store.write_layer("grid_cells", scenario["grid_cells"], actor="bench", source="bench")
    create_user(store, "fms", "bench-password-123", "dispatcher", actor="bench")
    return create_key(store, "fms", label="bench", rate_per_min=10_000_000, actor="bench")[0]


def _bodies(store, key: str, n: int = 200) -> list[str]:
    """Form bodies as FixMyStreet posts them, at points inside the grids."""
    from twin import layercache

    cells = layercache.layer(store, "grid_cells")
    rng = np.random.default_rng(7)
    picks = cells.geometry.representative_point().to_numpy()[rng.integers(0, len(cells), n)]
    return [urlencode({
        "api_key": key, "service_code": "E0101", "lat": f"{p.y:.7f}", "long": f"{p.x:.7f}",
        "description": f"title: 垃圾\n\ndetail: 第{i}号\n\nSubmitted via FixMyStreet",
        "email": "bench@example.cn", "first_name": "Li", "last_name": "Lei",
        "attribute[ref]": str(i)}) for i, p in enumerate(picks)]


def _serve(url: str, port: int) -> None:
    """Serve the store at *url* on *port* (the server process of the benchmark)."""
    import uvicorn

    from twin.api.app import ApiSettings, create_app
    from twin.store import open_store

    app = create_app(open_store(url), settings=ApiSettings(rate_per_min=10_000_000,
                                                           anonymous_rate_per_min=10_000_000))
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", access_log=False)


@contextlib.contextmanager
def _server(url: str):
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([sys.executable, "-m", "benchmarks.open311", "--serve", url,
                             str(port)], cwd=ROOT)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(base + "/healthz", timeout=2).status_code == 200:
                    break
            if proc.poll() is not None:
                raise RuntimeError("the Open311 server did not start")
            time.sleep(0.2)  # polling for the condition "the server answers"
        yield base
    finally:
        proc.terminate()
        proc.wait(30)


def _wrk(base: str, bodies: list[str], seconds: float, connections: int) -> dict[str, Any]:
    """Run wrk against *base*; return requests, non-2xx, errors, rate and latency p50/p99."""
    if not shutil.which("wrk"):
        raise RuntimeError("wrk is not installed: apt-get install -y wrk")
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as f:
        f.write(LUA % ("{" + ",".join(json.dumps(b) for b in bodies) + "}"))
        script = f.name
    done = subprocess.run(["wrk", "-t2", f"-c{connections}", f"-d{seconds:.0f}s", "--latency",
                           "--timeout", "30s", "-s", script, base], capture_output=True,
                          text=True, check=True)
    out = done.stdout
    total = int(re.search(r"(\d+) requests in", out)[1])
    bad = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)",
                       out)

    def ms(label: str) -> float | None:
        m = re.search(rf"{label}%\s+([\d.]+)(us|ms|s)", out)
        if not m:
            return None
        return float(m[1]) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[m[2]]

    return {"requests": total, "non_2xx": int(bad[1]) if bad else 0,
            "socket_errors": sum(int(g) for g in errors.groups()) if errors else 0,
            "per_s": float(re.search(r"Requests/sec:\s+([\d.]+)", out)[1]),
            "p50_ms": ms("50"), "p99_ms": ms("99"), "raw": out}


def measure(kind: str, seconds: float, connections: int) -> Figure:
    """One run on the embedded store or PostGIS."""
    from twin.store import open_store

    with contextlib.ExitStack() as stack:
        if kind == "embedded":
            folder = Path(stack.enter_context(tempfile.TemporaryDirectory()))
            url = str(folder / "twin.gpkg")
            store = stack.enter_context(open_store(url))
        else:
            store = stack.enter_context(pg_store("o311"))
            url = f"{PG_URL}?schema={store.schema}"
        key = _prepare(store)
        bodies = _bodies(store, key)
        with _server(url) as base:  # stopped before counting: posts in flight finish first
            result = _wrk(base, bodies, seconds, connections)
        stored = len(store.read_cases(columns=["id"]))
        audited = int((store.read_audit()["action"] == "case.collect").sum())
    ok = result["requests"] - result["non_2xx"]
    return Figure(
        NAME, f"POST requests.xml, {kind}", "community", {"grids": "scenario community",
                                                         "connections": connections,
                                                         "seconds": seconds},
        ours="gridtwin serve (uvicorn, 1 worker; posts filed in batches)",
        anchor=f"target {TARGET_PER_S:.0f}/s (issue 19)", ours_s=result["per_s"],
        anchor_s=TARGET_PER_S, repeats=1,
        # every 2xx answer is a stored, audited case; posts still in flight when wrk stops
        # (at most one per connection) are stored but not counted by wrk
        same_answer=(stored == audited and ok <= stored <= ok + connections),
        ours_p95_s=(result["p99_ms"] or 0) / 1000, unit="per_s",
        notes=f"2xx {ok}, stored {stored}, audited {audited}, non-2xx {result['non_2xx']}, "
              f"socket errors {result['socket_errors']}; p50 {result['p50_ms']} ms, "
              f"p99 {result['p99_ms']} ms",
        extra={"wrk": result["raw"]})


def run(scale: str, quick: bool) -> list[Figure]:
    """The benchmark runner's entry: both stores, 10 s each (quick) or 20 s."""
    seconds = 10 if quick else 20
    return [measure(kind, seconds, 32) for kind in ("embedded", "postgis")]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.open311", description=__doc__)
    p.add_argument("--seconds", type=float, default=15)
    p.add_argument("--connections", type=int, default=32)
    p.add_argument("--store", choices=("embedded", "postgis"), action="append")
    p.add_argument("--serve", nargs=2, metavar=("URL", "PORT"), help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.serve:
        _serve(args.serve[0], int(args.serve[1]))
        return 0
    for kind in args.store or ("embedded", "postgis"):
        fig = measure(kind, args.seconds, args.connections)
        print(f"{fig.case}: {fig.ours_s:.0f} requests/s; {fig.notes}; "
              f"nothing lost: {fig.same_answer}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
