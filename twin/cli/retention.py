"""``gridtwin retention``: anonymise or purge personal data of business older than the period."""

from __future__ import annotations

import argparse
import logging

from twin.cli._common import add_json_option, add_store_option, open_store, print_json

NAME = "retention"
HELP = "anonymise or purge personal data past retention; archive and drop old event months"
DESCRIPTION = (
    "Anonymise reporters of cases closed, and residents of poll answers given, more than --days "
    "ago (default TWIN_RETENTION_DAYS, 1095); delete versions of the residents layer replaced "
    "before then, and notifications delivered more than 30 days ago. Then make event "
    "partitions ahead (PostGIS) and, when --keep-months (default TWIN_EVENTS_KEEP_MONTHS; 0 "
    "keeps all) is set, archive each older month of events to a GeoParquet file in "
    "--archive-dir, read it back, and drop the month. The run is audited; the audit log is kept."
)
EPILOG = """\
examples:
  gridtwin retention --dry-run                 count only
  gridtwin retention --days 1095 --store URL
  gridtwin retention --keep-months 13 --archive-dir /srv/archive/events
(also: gridtwin-retention …, python scripts/retention.py …)

exit codes: 0 done, 2 refused (nothing changed), 1 failure
"""


def configure(p: argparse.ArgumentParser) -> None:
    add_store_option(p)
    p.add_argument("--days", type=int, help="retention period in days")
    p.add_argument("--dry-run", action="store_true", help="count only, change nothing")
    p.add_argument("--keep-months", type=int, metavar="N",
                   help="whole months of events kept before the current one (0: all)")
    p.add_argument("--archive-dir", metavar="FOLDER",
                   help="folder of the GeoParquet archives of dropped event months")
    add_json_option(p, "what was (or would be) anonymised and deleted")


def run(args: argparse.Namespace) -> int:
    from twin.retention import apply_event_retention, apply_retention

    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    with open_store(args) as store:
        report = apply_retention(store, days=args.days, dry_run=args.dry_run)
        events = apply_event_retention(store, months=args.keep_months, folder=args.archive_dir,
                                       dry_run=args.dry_run)
    archived = [{"month": f"{a.month:%Y-%m}", "rows": a.rows,
                 "file": None if a.path is None else str(a.path)} for a in events.archived]
    if getattr(args, "json", False):
        print_json({"dry_run": args.dry_run, "cutoff": report.cutoff,
                    "cases_anonymised": report.cases_anonymised,
                    "answers_anonymised": report.answers_anonymised,
                    "versions_purged": report.versions_purged,
                    "login_attempts_deleted": report.login_attempts_deleted,
                    "notifications_deleted": report.notifications_deleted,
                    "events": {"keep_months": events.keep_months, "cutoff": events.cutoff,
                               "partitions_made": events.partitions_made,
                               "archived": archived}})
        return 0
    verb = "would anonymise" if args.dry_run else "anonymised"
    purged = "; ".join(f"{name} versions {', '.join(map(str, gone)) or 'none'}"
                       for name, gone in report.versions_purged.items())
    print(f"{verb}: {report.cases_anonymised} case reporters, {report.answers_anonymised} poll "
          f"answers; {'would delete' if args.dry_run else 'deleted'}: {purged} "
          f"(older than {report.cutoff:%Y-%m-%d}), {report.login_attempts_deleted} login "
          f"attempts (older than a day), {report.notifications_deleted} notifications "
          "(delivered more than 30 days ago)")
    if events.partitions_made:
        print(f"event partitions made: {', '.join(events.partitions_made)}")
    for a in archived:
        print(f"events of {a['month']}: {a['rows']} rows "
              + ("would be archived and dropped" if args.dry_run
                 else f"archived to {a['file']} and dropped"))
    return 0


def main(argv: list[str] | None = None) -> int:
    """``gridtwin-retention`` (and ``python scripts/retention.py``)."""
    from twin.cli import run_command

    return run_command(NAME, argv)
