"""Check the seed tables (categories, departments, working calendar) and print what they hold.

A thin shim over ``gridtwin seed``: ``python scripts/seed.py --help`` shows the options.
"""

from __future__ import annotations

import sys

from twin.cli import run_command


def main(argv: list[str] | None = None) -> int:
    return run_command("seed", argv)


if __name__ == "__main__":
    sys.exit(main())
