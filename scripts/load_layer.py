"""Load a staff file as a new version of a layer; show a layer's history; roll a layer back.

A thin shim over ``gridtwin load``: ``python scripts/load_layer.py --help`` shows the options.
"""

from __future__ import annotations

import sys

from twin.cli import run_command


def main(argv: list[str] | None = None) -> int:
    return run_command("load", argv)


if __name__ == "__main__":
    sys.exit(main())
