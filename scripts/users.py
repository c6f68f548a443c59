"""Manage cockpit users: create, list, disable, set password, role and grids; demo users.

A thin shim over ``gridtwin users``: ``python scripts/users.py --help`` shows the options.
"""

from __future__ import annotations

import sys

from twin.cli import run_command


def main(argv: list[str] | None = None) -> int:
    return run_command("users", argv)


if __name__ == "__main__":
    sys.exit(main())
