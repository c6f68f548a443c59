"""Anonymise or purge personal data of finished business older than the retention period.

A thin shim over ``gridtwin retention``: ``python scripts/retention.py --help`` shows the options.
"""

from __future__ import annotations

import sys

from twin.cli import run_command


def main(argv: list[str] | None = None) -> int:
    return run_command("retention", argv)


if __name__ == "__main__":
    sys.exit(main())
