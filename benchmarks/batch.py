"""Re-enrichment of a year of stored events after a grid change: Dask LocalCluster vs one process.

``python -m benchmarks --only batch [--scale street]``, or ``python -m benchmarks.batch --events
N``: N events spread over a year (one month a partition on PostGIS) at the scale's points,
assigned to its grid cells, are stored; the grid cells then move about 40 m east and
:func:`twin.batch.reenrich` finds every event whose assignment changes — once in this process
(a month at a time, as `reenrich` does without a cluster) and once on a LocalCluster of two
worker processes (parts by month, × 2 tiles from a million events on, read and re-assigned on
the workers, which have opened the store on an untimed month first). The two lists of changes
must be equal. Nothing is written back (both sides would write the same rows).
"""

from __future__ import annotations

import argparse
import json
import sys

import numpy as np
import pandas as pd
import shapely
from shapely import affinity

from benchmarks import scenarios
from benchmarks.common import Figure, figure, measure, pg_store

NAME = "batch"
TITLE = "Re-enrichment of stored events after a grid change (Dask LocalCluster vs one process)"
EVENTS = {"community": 100_000, "street": 1_000_000, "district": 3_000_000,
          "city": 10_000_000}
QUICK_SCALES = ("community",)
YEAR = pd.Timestamp("2025-01-01", tz="UTC")


def stored_year(store, scen: dict, n: int, chunk: int = 500_000) -> None:
    """Store *n* readings spread over 2025 at the scenario's points, assigned to its grids."""
    from twin.enrich import assign_grids, grid_index

    grids = grid_index(scen["grid_cells"])
    seconds = 365 * 86_400
    for start in range(0, n, chunk):
        m = min(chunk, n - start)
        pts = scenarios.points(scen, m, seed=start)
        assigned = assign_grids(pts[["geometry"]], grids)
        ids = np.char.add("B", np.arange(start, start + m).astype(str))
        offsets = (np.arange(start, start + m, dtype=np.int64) * seconds) // n
        store.append_events(pd.DataFrame({
            "id": ids, "kind": "obs", "source_id": "S1",
            "observed_at": YEAR + pd.to_timedelta(offsets, "s"),
            "lon": shapely.get_x(pts.geometry.values), "lat": shapely.get_y(pts.geometry.values),
            **{c: assigned[c].to_numpy(dtype=object)
               for c in ("grid_code", "resp_grid_id", "community_code", "street_code")},
            "payload": '{"values": {"pm25": 35.0}}',
        }))


def moved(scen: dict):
    grids = scen["grid_cells"].copy()
    grids["geometry"] = grids.geometry.map(lambda g: affinity.translate(g, xoff=0.0004))
    return grids


def measure_scale(scale: str, n: int, workers: int = 2, repeats: int = 1) -> Figure:
    from twin import batch

    scen = scenarios.scenario(scale)
    new = moved(scen)
    with pg_store("batch") as store:
        stored_year(store, scen, n)
        alone = measure(lambda: batch.reenrich(store, new), repeats=repeats, warmup=0)
        tiles = (1, 1) if n <= 200_000 else (2, 1)
        with batch.batch_client(workers=workers) as client:
            # a long-running cluster's workers have imported the twin and opened the store:
            # one month first, untimed, so that the figure is the work and not that
            batch.reenrich(store, new, client=client, start=YEAR,
                           end=YEAR + pd.offsets.MonthBegin(1))
            spread = measure(lambda: batch.reenrich(store, new, client=client, tiles=tiles),
                             repeats=repeats, warmup=0)
    same = alone.answer.changes.equals(spread.answer.changes) and \
        alone.answer.events == spread.answer.events == n
    return figure(NAME, f"{n:,} events, 12 months", scale,
                  {"events": n, "changed": len(alone.answer.changes),
                   "parts": spread.answer.parts},
                  f"twin.batch.reenrich on a LocalCluster ({workers} worker processes)",
                  "twin.batch.reenrich in one process", spread, alone, same,
                  notes="PostGIS; the grid cells moved ~40 m east; changes compared row by row")


def run(scale: str, quick: bool) -> list[Figure]:
    return [measure_scale(scale, EVENTS[scale] // (10 if quick else 1))]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--scale", default="street")
    p.add_argument("--events", type=int, default=None)
    p.add_argument("--workers", type=int, default=2)
    args = p.parse_args(argv)
    fig = measure_scale(args.scale, args.events or EVENTS[args.scale], args.workers)
    print(json.dumps(fig.as_dict(), default=str), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
