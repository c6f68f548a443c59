"""Run the benchmarks: ``python -m benchmarks [--scale …] [--only …] [--json FILE] [--quick]``.

Each (measurement, scale) runs in a child process of its own so that peak RSS figures do not
accumulate; the figures are written as JSON, then docs/benchmarks.md and its plots are made.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from benchmarks import DEFAULT_QUICK_SCALES, MEASUREMENTS, module
from benchmarks.common import SCALES

ROOT = Path(__file__).resolve().parents[1]


def parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__.splitlines()[0])
    p.add_argument("--scale", action="append", choices=SCALES,
                   help="scale(s) to run (default: all four; a quick pass: each module's own)")
    p.add_argument("--only", action="append", choices=sorted(MEASUREMENTS),
                   help="measurement(s) to run (default: all)")
    p.add_argument("--json", type=Path, default=ROOT / "benchmarks" / "out" / "results.json",
                   help="where to write the figures (default benchmarks/out/results.json)")
    p.add_argument("--quick", action="store_true",
                   help="a quick pass (small scales, 3 repeats; `make bench`, under 5 minutes)")
    p.add_argument("--doc", type=Path, default=ROOT / "docs" / "benchmarks.md",
                   help="the report to write (default docs/benchmarks.md); --no-doc to skip")
    p.add_argument("--no-doc", action="store_true", help="write the JSON only")
    p.add_argument("--timeout", type=float, default=1800.0,
                   help="seconds allowed to one measurement at one scale (default 1800)")
    p.add_argument("--child", nargs=2, metavar=("NAME", "SCALE"), help=argparse.SUPPRESS)
    return p.parse_args(argv)


def child(name: str, scale: str, quick: bool) -> int:
    """Run one measurement at one scale in this process and print its figures as JSON."""
    figs = module(name).run(scale, quick)
    sys.stdout.write("\n@@FIGURES@@" + json.dumps([f.as_dict() for f in figs], default=str) + "\n")
    return 0


def plan(args: argparse.Namespace) -> list[tuple[str, str]]:
    out = []
    for name in args.only or list(MEASUREMENTS):
        mod = module(name)
        own = getattr(mod, "SCALES", SCALES)
        if args.scale:
            scales = [s for s in args.scale if s in own]
        elif args.quick:
            scales = list(getattr(mod, "QUICK_SCALES", DEFAULT_QUICK_SCALES))
        else:
            scales = list(own)
        out += [(name, s) for s in SCALES if s in scales]
    return out


def run_one(name: str, scale: str, quick: bool, timeout: float) -> list[dict]:
    cmd = [sys.executable, "-m", "benchmarks", "--child", name, scale] + (["--quick"] if quick
                                                                          else [])
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    t0 = time.perf_counter()
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=ROOT,
                              env=env)
    except subprocess.TimeoutExpired:
        return [{"measurement": name, "scale": scale, "error": f"timed out after {timeout:.0f} s"}]
    wall = time.perf_counter() - t0
    if done.returncode != 0 or "@@FIGURES@@" not in done.stdout:
        tail = (done.stderr or done.stdout).strip().splitlines()[-3:]
        return [{"measurement": name, "scale": scale, "error": " | ".join(tail)}]
    figs = json.loads(done.stdout.rsplit("@@FIGURES@@", 1)[1])
    for f in figs:
        f["wall_s"] = round(wall, 1)
    return figs


def machine() -> dict:
    import platform

    info = {"python": platform.python_version(), "platform": platform.platform(),
            "cores": os.cpu_count()}
    try:
        info["cpu"] = next(line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo")
                           if line.startswith("model name"))
        mem = next(line for line in open("/proc/meminfo") if line.startswith("MemTotal"))
        info["ram_gb"] = round(int(mem.split()[1]) / 1024 / 1024, 1)
        info["load_avg"] = os.getloadavg()
    except (OSError, StopIteration):
        pass
    versions = {}
    for pkg in ("geopandas", "shapely", "pandas", "numpy", "pyproj", "pyogrio", "sqlalchemy",
                "geoalchemy2", "psycopg", "streamlit", "pydeck", "paho.mqtt"):
        try:
            mod = __import__(pkg, fromlist=["__version__"])
            versions[pkg] = getattr(mod, "__version__", "?")
        except ImportError:
            versions[pkg] = "missing"
    try:
        import shapely

        versions["GEOS"] = shapely.geos_version_string
    except ImportError:
        pass
    for tool, cmd in (("ogr2ogr", ["ogr2ogr", "--version"]),
                      ("mosquitto_sub", ["mosquitto_sub", "--help"])):
        try:
            text = subprocess.run(cmd, capture_output=True, text=True, timeout=10)
            out = (text.stdout or text.stderr).strip().splitlines()
            versions[tool] = next((x for x in out if "version" in x.lower()), out[0])
        except (OSError, subprocess.SubprocessError, IndexError):
            versions[tool] = "missing"
    try:
        from benchmarks.common import pg_store, sql_rows

        with pg_store() as store:
            versions["postgresql"] = sql_rows(store, "SHOW server_version")[0][0]
            versions["postgis"] = sql_rows(store, "SELECT postgis_lib_version()")[0][0]
    except Exception as exc:  # noqa: BLE001 - the report says the database was not reachable
        versions["postgresql"] = f"unreachable ({type(exc).__name__})"
    info["versions"] = versions
    return info


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    if args.child:
        return child(*args.child, args.quick)
    todo = plan(args)
    started = time.strftime("%Y-%m-%d %H:%M:%S %z")
    results = {"started": started, "quick": args.quick, "machine": machine(), "figures": []}
    t0 = time.perf_counter()
    for name, scale in todo:
        sys.stderr.write(f"[bench] {name} @ {scale} …\n")
        sys.stderr.flush()
        for f in run_one(name, scale, args.quick, args.timeout):
            results["figures"].append(f)
            if "error" in f:
                sys.stderr.write(f"[bench]   ERROR {f['error']}\n")
            else:
                sys.stderr.write(f"[bench]   {f['case']}: ours {f['ours_s']}, anchor "
                                 f"{f['anchor_s']}, ×{f['speedup']}, same={f['same_answer']}\n")
    results["total_s"] = round(time.perf_counter() - t0, 1)
    results["machine"]["load_avg_end"] = os.getloadavg()
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(results, indent=1, default=str, ensure_ascii=False))
    sys.stderr.write(f"[bench] wrote {args.json} in {results['total_s']} s\n")
    if not args.no_doc:
        from benchmarks import report

        report.write(results, args.doc)
        sys.stderr.write(f"[bench] wrote {args.doc}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
