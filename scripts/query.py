"""Run a planner query against the twin and write the answer as GeoJSON, GeoPackage or CSV.

A thin shim over ``gridtwin query``: ``python scripts/query.py --help`` shows the options.
"""

from __future__ import annotations

import sys

from twin.cli import run_command


def main(argv: list[str] | None = None) -> int:
    return run_command("query", argv)


if __name__ == "__main__":
    sys.exit(main())
