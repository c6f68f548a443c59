"""OGC API Features items at district scale (a bbox page of 100 buildings): gridtwin serve vs
pygeoapi's PostgreSQL provider on the same PostGIS table, under a real load generator (wrk)."""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np
import shapely

from benchmarks import scenarios
from benchmarks.common import PG_URL, Figure, pg_store

NAME = "serve"
TITLE = "OGC API Features: a bbox page of 100 buildings (gridtwin serve vs pygeoapi)"
DESCRIPTION = """
The scenario's buildings written to PostGIS as a layer version (its own partition, GiST index).
Both servers answer `GET /collections/buildings/items?bbox=…&limit=100` over that same table:
ours is `gridtwin serve` (FastAPI + uvicorn, one process; the anonymous caller, so the
library's access rules run with nothing to mask), the anchor pygeoapi 0.24's PostgreSQL provider
(Starlette app under uvicorn, one process) configured on the layer's current-version view, which
PostgreSQL prunes to the same partition (pygeoapi cannot reflect a partition itself). The
load is `wrk` (2 threads, 8 connections, a few seconds per side, sides interleaved) cycling
over 20 bboxes that each hold at least 100 buildings: the throughput; then one connection (one
request at a time, no queueing): the p95 latency, from wrk's histogram. Both
servers and wrk share the 2-core machine (with the other work on it at the time): the ratio is
the figure to read, the absolute numbers are a floor.
"""
SCALES = ("district",)
QUICK_SCALES = ("district",)
CONNECTIONS = 8
SECONDS_QUICK, SECONDS = 4, 8
ROUNDS = 2  # interleaved rounds of each side
PAGE = 100

WRK_SCRIPT = """
local paths = {}
local i = 0
init = function(args)
  for line in io.lines(args[1]) do paths[#paths + 1] = line end
end
request = function()
  i = (i % #paths) + 1
  return wrk.format("GET", paths[i])
end
done = function(summary, latency, requests)
  io.write(string.format("@@WRK@@ %d %d %d %.3f %.3f\\n", summary.requests,
    summary.errors.status + summary.errors.connect + summary.errors.read
    + summary.errors.write + summary.errors.timeout, summary.duration,
    latency:percentile(95) / 1000.0, latency:percentile(50) / 1000.0))
end
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait(url: str, proc: subprocess.Popen, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited: {proc.stderr.read().decode()[-800:]}")
        try:
            if httpx.get(url, timeout=5).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"{url} did not answer in {timeout} s")


def bboxes(buildings, n: int = 20, seed: int = 0) -> list[tuple[float, float, float, float]]:
    """*n* boxes around random buildings, each grown until it holds at least PAGE buildings."""
    rng = np.random.default_rng(seed)
    geoms = buildings.geometry.to_numpy()
    tree = shapely.STRtree(geoms)
    centres = shapely.centroid(geoms[rng.integers(0, len(geoms), size=n)])
    out = []
    for c in centres:
        half = 0.001
        while True:
            box = (c.x - half, c.y - half, c.x + half, c.y + half)
            if len(tree.query(shapely.box(*box), predicate="intersects")) >= PAGE:
                break
            half *= 1.3
        out.append(tuple(round(v, 6) for v in box))
    return out


def _pygeoapi(folder: Path, schema: str, table: str, port: int) -> subprocess.Popen:
    import sqlalchemy as sa
    import yaml

    u = sa.make_url(PG_URL)
    config = {
        "server": {"bind": {"host": "127.0.0.1", "port": port}, "url": f"http://127.0.0.1:{port}",
                   "mimetype": "application/json; charset=UTF-8", "encoding": "utf-8",
                   "language": "en-US", "limit": 10, "map": {"url": "", "attribution": ""},
                   "languages": ["en-US"]},
        "logging": {"level": "ERROR"},
        "metadata": {"identification": {"title": "bench", "description": "bench",
                                        "keywords": [], "terms_of_service": "",
                                        "url": "http://example.org"},
                     "license": {"name": "CC-BY 4.0",
                                 "url": "https://creativecommons.org/licenses/by/4.0/"},
                     "provider": {"name": "bench", "url": "http://example.org"},
                     "contact": {k: "bench" for k in (
                         "name", "position", "address", "city", "stateorprovince",
                         "postalcode", "country", "phone", "fax", "email", "url", "hours",
                         "instructions", "role")}},
        "resources": {"buildings": {
            "type": "collection", "title": "buildings", "description": "buildings",
            "keywords": [], "extents": {"spatial": {"bbox": [-180, -90, 180, 90],
                                                    "crs": "http://www.opengis.net/def/crs/OGC/"
                                                           "1.3/CRS84"}},
            "links": [],
            "providers": [{
                "type": "feature", "name": "PostgreSQL",
                "data": {"host": u.host, "port": u.port or 5432, "dbname": u.database,
                         "user": u.username, "password": u.password or "",
                         "search_path": [schema, "public"]},
                "id_field": "building_code", "table": table, "geom_field": "geom",
            }],
        }},
    }
    cfg = folder / "pygeoapi.yml"
    cfg.write_text(yaml.safe_dump(config, allow_unicode=True))
    openapi = folder / "openapi.yml"
    env = dict(os.environ, PYGEOAPI_CONFIG=str(cfg), PYGEOAPI_OPENAPI=str(openapi))
    bindir = Path(sys.executable).parent
    made = subprocess.run([str(bindir / "pygeoapi"), "openapi", "generate", str(cfg),
                           "--output-file", str(openapi)], env=env, capture_output=True,
                          text=True)
    if made.returncode != 0:
        raise RuntimeError(f"pygeoapi openapi generate failed: {made.stderr[-800:]}")
    return subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "pygeoapi.starlette_app:APP", "--host", "127.0.0.1",
         "--port", str(port), "--log-level", "warning", "--no-access-log"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def _ours(schema: str, port: int) -> subprocess.Popen:
    env = dict(os.environ, TWIN_DATABASE_URL=f"{PG_URL}?schema={schema}",
               TWIN_API_ANONYMOUS_RATE_PER_MIN=str(10**9))
    return subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "--factory", "twin.api.app:app_from_environment",
         "--host", "127.0.0.1", "--port", str(port), "--log-level", "warning",
         "--no-access-log"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def _wrk(base: str, paths_file: Path, script: Path, seconds: int,
         connections: int = CONNECTIONS) -> dict:
    threads = min(2, connections)
    done = subprocess.run(
        ["wrk", f"-t{threads}", f"-c{connections}", f"-d{seconds}s", "--timeout", "10s", "-s",
         str(script), base, "--", str(paths_file)],
        capture_output=True, text=True, check=True)
    m = re.search(r"@@WRK@@ (\d+) (\d+) (\d+) ([\d.]+) ([\d.]+)", done.stdout)
    requests, errors, micros, p95_ms, p50_ms = m.groups()
    return {"requests": int(requests), "errors": int(errors),
            "per_s": int(requests) / (int(micros) / 1e6), "p95_ms": float(p95_ms),
            "p50_ms": float(p50_ms)}


def _matched(url: str) -> int:
    return int(httpx.get(url, timeout=30).json()["numberMatched"])


def run(scale: str, quick: bool) -> list[Figure]:
    if shutil.which("wrk") is None:
        raise RuntimeError("wrk is not installed: apt-get install -y wrk")
    scen = scenarios.scenario(scale)
    buildings = scen["buildings"]
    boxes = bboxes(buildings)
    seconds = SECONDS_QUICK if quick else SECONDS
    with tempfile.TemporaryDirectory(prefix="bench-serve-") as tmp, pg_store() as store:
        folder = Path(tmp)
        store.write_layer("buildings", buildings, actor="bench", source="bench")
        table = "buildings"  # the view of the current version (a partition is not reflected)
        ours_port, anchor_port = _free_port(), _free_port()
        servers = {"ours": _ours(store.schema, ours_port),
                   "anchor": _pygeoapi(folder, store.schema, table, anchor_port)}
        try:
            bases = {"ours": f"http://127.0.0.1:{ours_port}",
                     "anchor": f"http://127.0.0.1:{anchor_port}"}
            prefixes = {"ours": "/ogc/collections/buildings/items",
                        "anchor": "/collections/buildings/items"}
            _wait(bases["ours"] + "/readyz", servers["ours"])
            _wait(bases["anchor"] + "/collections", servers["anchor"])
            script = folder / "paths.lua"
            script.write_text(WRK_SCRIPT)
            files = {}
            for side, prefix in prefixes.items():
                files[side] = folder / f"{side}.txt"
                files[side].write_text("".join(
                    f"{prefix}?bbox={','.join(map(str, b))}&limit={PAGE}&f=json\n"
                    for b in boxes))
            first = f"{prefixes['ours']}?bbox={','.join(map(str, boxes[0]))}&limit={PAGE}"
            same = _matched(bases["ours"] + first) == _matched(
                bases["anchor"] + first.replace(prefixes["ours"], prefixes["anchor"]))
            runs: dict[str, list[dict]] = {"ours": [], "anchor": []}
            for side in ("ours", "anchor"):  # warm both
                _wrk(bases[side], files[side], script, 1)
            alone: dict[str, list[dict]] = {"ours": [], "anchor": []}
            for _ in range(ROUNDS):
                for side in ("ours", "anchor"):
                    runs[side].append(_wrk(bases[side], files[side], script, seconds))
                    # latency: one connection, one request at a time (no queueing)
                    alone[side].append(_wrk(bases[side], files[side], script, seconds, 1))
        finally:
            for proc in servers.values():
                proc.terminate()
                proc.wait(10)
    best = {side: max(r, key=lambda x: x["per_s"]) for side, r in runs.items()}
    median = {side: float(np.median([x["per_s"] for x in r])) for side, r in runs.items()}
    p95 = {side: float(np.median([x["p95_ms"] for x in r])) / 1000 for side, r in alone.items()}
    return [Figure(
        NAME, "items: bbox page of 100 buildings (throughput)", scale,
        {"buildings": len(buildings), "page": PAGE, "bboxes": len(boxes),
         "connections": CONNECTIONS, "seconds": seconds, "rounds": ROUNDS},
        "gridtwin serve (FastAPI, uvicorn, 1 process)",
        "pygeoapi 0.24 PostgreSQL provider (Starlette, uvicorn, 1 process)",
        ours_s=median["ours"], anchor_s=median["anchor"], repeats=ROUNDS, same_answer=same,
        ours_p95_s=p95["ours"], anchor_p95_s=p95["anchor"], unit="per_s",
        notes="requests/s: wrk -t2 -c8, median of rounds; p95: wrk -t1 -c1 (one request at a "
              "time), median of rounds",
        extra={"runs": runs, "best": best, "one_connection": alone,
               "p95_at_8_connections_s": {side: float(np.median([x["p95_ms"] for x in r]))
                                          / 1000 for side, r in runs.items()}},
    )]


if __name__ == "__main__":  # a quick look: python -m benchmarks.serve
    for fig in run("district", quick=True):
        print(json.dumps(fig.as_dict(), indent=1, default=str))
