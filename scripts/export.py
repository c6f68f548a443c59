"""Export the indicator report (CSV / Excel) and Open311 GeoReport v2 JSON from the store.

A thin shim over ``gridtwin export``: ``python scripts/export.py --help`` shows the options.
"""

from __future__ import annotations

import sys

from twin.cli import run_command


def main(argv: list[str] | None = None) -> int:
    return run_command("export", argv)


if __name__ == "__main__":
    sys.exit(main())
