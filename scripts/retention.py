"""Anonymise or purge personal data of finished business older than the retention period."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

if not __package__:  # run as `python scripts/retention.py`: make the project importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from twin.errors import TwinError  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="gridtwin-retention",
        description="Anonymise reporters of cases closed, and residents of poll answers given, "
        "more than --days ago (default TWIN_RETENTION_DAYS, 1095); delete versions of the "
        "residents layer replaced before then. The run is audited; the audit log is kept.")
    p.add_argument("--store", help="store URL or GeoPackage (default: TWIN_DATABASE_URL / demo)")
    p.add_argument("--days", type=int, help="retention period in days")
    p.add_argument("--dry-run", action="store_true", help="count only, change nothing")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    from twin.retention import apply_retention
    from twin.store import open_store

    try:
        with open_store(args.store) as store:
            report = apply_retention(store, days=args.days, dry_run=args.dry_run)
    except TwinError as exc:
        print(f"retention: {exc}", file=sys.stderr)
        return 2
    verb = "would anonymise" if args.dry_run else "anonymised"
    purged = "; ".join(f"{name} versions {', '.join(map(str, gone)) or 'none'}"
                       for name, gone in report.versions_purged.items())
    print(f"{verb}: {report.cases_anonymised} case reporters, {report.answers_anonymised} poll "
          f"answers; {'would delete' if args.dry_run else 'deleted'}: {purged} "
          f"(older than {report.cutoff:%Y-%m-%d})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
