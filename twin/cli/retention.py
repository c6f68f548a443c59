"""``gridtwin retention``: anonymise or purge personal data of business older than the period."""

from __future__ import annotations

import argparse
import logging

from twin.cli._common import add_json_option, add_store_option, open_store, print_json

NAME = "retention"
HELP = "anonymise or purge personal data past retention"
DESCRIPTION = (
    "Anonymise reporters of cases closed, and residents of poll answers given, more than --days "
    "ago (default TWIN_RETENTION_DAYS, 1095); delete versions of the residents layer replaced "
    "before then. The run is audited; the audit log is kept."
)
EPILOG = """\
examples:
  gridtwin retention --dry-run                 count only
  gridtwin retention --days 1095 --store URL
(also: gridtwin-retention …, python scripts/retention.py …)

exit codes: 0 done, 2 refused (nothing changed), 1 failure
"""


def configure(p: argparse.ArgumentParser) -> None:
    add_store_option(p)
    p.add_argument("--days", type=int, help="retention period in days")
    p.add_argument("--dry-run", action="store_true", help="count only, change nothing")
    add_json_option(p, "what was (or would be) anonymised and deleted")


def run(args: argparse.Namespace) -> int:
    from twin.retention import apply_retention

    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    with open_store(args) as store:
        report = apply_retention(store, days=args.days, dry_run=args.dry_run)
    if getattr(args, "json", False):
        print_json({"dry_run": args.dry_run, "cutoff": report.cutoff,
                    "cases_anonymised": report.cases_anonymised,
                    "answers_anonymised": report.answers_anonymised,
                    "versions_purged": report.versions_purged,
                    "login_attempts_deleted": report.login_attempts_deleted})
        return 0
    verb = "would anonymise" if args.dry_run else "anonymised"
    purged = "; ".join(f"{name} versions {', '.join(map(str, gone)) or 'none'}"
                       for name, gone in report.versions_purged.items())
    print(f"{verb}: {report.cases_anonymised} case reporters, {report.answers_anonymised} poll "
          f"answers; {'would delete' if args.dry_run else 'deleted'}: {purged} "
          f"(older than {report.cutoff:%Y-%m-%d}), {report.login_attempts_deleted} login "
          "attempts (older than a day)")
    return 0


def main(argv: list[str] | None = None) -> int:
    """``gridtwin-retention`` (and ``python scripts/retention.py``)."""
    from twin.cli import run_command

    return run_command(NAME, argv)
