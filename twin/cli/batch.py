"""``gridtwin batch``: city-scale work over stored events on Dask (re-enrichment, counts)."""

from __future__ import annotations

import argparse
import logging

from twin.cli._common import add_json_option, add_store_option, open_store, print_json

NAME = "batch"
HELP = "re-assign stored events after a grid change, or count a period of them, on Dask"
DESCRIPTION = (
    "reenrich: re-assign the stored events (default: every month) to the current grid_cells "
    "layer (load the new grids first: gridtwin load grid_cells FILE) and, with --write, store "
    "the new assignment. counts: count the events of a period per unit and per H3 cell, and "
    "their hot spots. Both run on a Dask LocalCluster of --workers processes (default "
    "TWIN_BATCH_WORKERS), on the scheduler of --scheduler (default TWIN_BATCH_SCHEDULER, e.g. "
    "tcp://10.0.0.5:8786), or in this process with --single; the answers are the same."
)
EPILOG = """\
examples:
  gridtwin batch reenrich --store URL                      what the new grids change
  gridtwin batch reenrich --store URL --write --out changes.csv
  gridtwin batch counts --start 2025-01-01 --end 2026-01-01 --out counts.csv
  TWIN_BATCH_SCHEDULER=tcp://10.0.0.5:8786 gridtwin batch counts --start … --end …

exit codes: 0 done, 2 refused (nothing changed), 1 failure
"""


def configure(p: argparse.ArgumentParser) -> None:
    p.add_argument("work", choices=("reenrich", "counts"), help="what to run")
    add_store_option(p)
    p.add_argument("--start", help="first time of the period (default: the first month stored)")
    p.add_argument("--end", help="end of the period, excluded (default: after the last month)")
    p.add_argument("--write", action="store_true", help="reenrich: store the new assignment")
    p.add_argument("--level", default="grid", choices=("grid", "resp_grid", "community"),
                   help="counts: the units counted (default grid)")
    p.add_argument("--resolution", type=int, default=10, help="counts: H3 resolution (10)")
    p.add_argument("--tiles", default="2x2", help="space tiles, COLUMNSxROWS (default 2x2)")
    p.add_argument("--scheduler", help="a Dask scheduler address (tcp://host:8786)")
    p.add_argument("--workers", type=int, help="processes of the LocalCluster")
    p.add_argument("--single", action="store_true", help="run in this process, without Dask")
    p.add_argument("--out", help="CSV of the changes (reenrich) or the counts per unit")
    add_json_option(p, "the summary")


def run(args: argparse.Namespace) -> int:
    import contextlib

    from twin import batch
    from twin.errors import ValidationError

    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        tiles = tuple(int(v) for v in args.tiles.lower().split("x"))
        assert len(tiles) == 2
    except (ValueError, AssertionError):
        raise ValidationError(f"--tiles must be COLUMNSxROWS like 2x2; got {args.tiles!r}") \
            from None
    with open_store(args) as store, contextlib.ExitStack() as stack:
        client = None if args.single else stack.enter_context(
            batch.batch_client(args.scheduler, workers=args.workers))
        if args.work == "reenrich":
            found = batch.reenrich(store, store.read_layer("grid_cells"), start=args.start,
                                   end=args.end, client=client, tiles=tiles, write=args.write)
            summary = {"events": found.events, "changed": len(found.changes),
                       "parts": found.parts, "written": found.written}
            table = found.changes
        else:
            period = batch.stored_period(store)
            start = args.start or (period and period[0])
            end = args.end or (period and period[1])
            if start is None or end is None:
                raise ValidationError("no events stored: nothing to count")
            counts = batch.history_counts(store, start=start, end=end, level=args.level,
                                          resolution=args.resolution, client=client,
                                          tiles=tiles)
            answer = batch.counts_answer(store, counts, level=args.level, start=start, end=end)
            spots = batch.spots_answer(store, counts, start=start, end=end,
                                       resolution=args.resolution)
            summary = {"events": int(counts.units.sum()) + counts.unassigned,
                       "unassigned": counts.unassigned, "units": int(len(counts.units)),
                       "h3_cells": int(len(counts.cells)), "hot": spots.notes["hot"],
                       "cold": spots.notes["cold"], "parts": counts.parts}
            table = answer.frame.drop(columns="geometry")
    if args.out:
        table.to_csv(args.out, index=False)
    if getattr(args, "json", False):
        print_json(summary)
    else:
        print(", ".join(f"{k} {v}" for k, v in summary.items())
              + (f"; written to {args.out}" if args.out else ""))
    return 0


def main(argv: list[str] | None = None) -> int:
    """``gridtwin batch`` (console entry)."""
    from twin.cli import run_command

    return run_command(NAME, argv)
