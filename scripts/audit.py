"""Check the audit log, protect its PostGIS table, or reset its anchor after a restore.

A thin shim over ``gridtwin audit``: ``python scripts/audit.py --help`` shows the options.
"""

from __future__ import annotations

import sys

from twin.cli import run_command


def main(argv: list[str] | None = None) -> int:
    return run_command("audit", argv)


if __name__ == "__main__":
    sys.exit(main())
