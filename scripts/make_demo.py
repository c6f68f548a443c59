"""Build the fictional Guilin demo community into a GeoPackage or a PostGIS schema.

A thin shim over ``gridtwin make-demo``: ``python scripts/make_demo.py --help`` shows the options.
"""

from __future__ import annotations

import sys

from twin.cli import run_command


def main(argv: list[str] | None = None) -> int:
    return run_command("make-demo", argv)


if __name__ == "__main__":
    sys.exit(main())
