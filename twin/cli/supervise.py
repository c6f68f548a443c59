"""``gridtwin supervise``: one round of timeout supervision (督办) of overdue cases."""

from __future__ import annotations

import argparse
import logging

from twin.cli._common import add_json_option, add_store_option, open_store, print_json

NAME = "supervise"
HELP = "put overdue cases under timeout supervision (督办); hand back organisations' late cases"
DESCRIPTION = (
    "One round of timeout supervision, as a scheduler runs it (every 10 minutes is usual): "
    "cases an organisation held past its own limit go back to the community, then every case "
    "whose stage deadline (working calendar) has passed is put under timeout supervision once "
    "per stage. Each is a case step by the actor 'system', on the case's timeline."
)
EPILOG = """\
examples:
  gridtwin supervise --dry-run                 list what would be supervised
  gridtwin supervise --store URL               one round (cron: */10 * * * *)
  gridtwin supervise --now 2026-03-10T09:00+08:00 --json

exit codes: 0 done, 2 refused (nothing changed), 1 failure
"""


def configure(p: argparse.ArgumentParser) -> None:
    add_store_option(p)
    p.add_argument("--now", metavar="TIME", help="the time to judge deadlines at (default now)")
    p.add_argument("--dry-run", action="store_true", help="list only, change nothing")
    add_json_option(p, "the cases supervised (or that would be)")


def run(args: argparse.Namespace) -> int:
    import pandas as pd

    from twin import cases
    from twin.errors import ValidationError
    from twin.store.base import layer_or_empty
    from twin.timeutil import to_utc

    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        now = None if args.now is None else to_utc(pd.Timestamp(args.now))
    except ValueError:
        raise ValidationError(f"--now {args.now!r} is not a time; give it as ISO 8601, "
                              "e.g. 2026-03-10T09:00+08:00") from None
    with open_store(args) as store:
        grid_cells = layer_or_empty(store, "grid_cells")
        done = cases.supervise_overdue(store, now, dry_run=args.dry_run,
                                       grid_cells=grid_cells if len(grid_cells) else None)
    if getattr(args, "json", False):
        print_json({"dry_run": done.dry_run, "organisations": done.organisations,
                    "timeouts": done.timeouts})
        return 0
    verb = "would be" if done.dry_run else "were"
    print(f"{len(done.organisations)} cases {verb} handed back from organisations past their "
          f"own limit{': ' + ', '.join(done.organisations) if done.organisations else ''}")
    print(f"{len(done.timeouts)} overdue cases {verb} put under timeout supervision"
          f"{': ' + ', '.join(done.timeouts) if done.timeouts else ''}")
    return 0


def main(argv: list[str] | None = None) -> int:
    """``gridtwin-supervise``."""
    from twin.cli import run_command

    return run_command(NAME, argv)
