"""Run the live-feed pipeline: MQTT, a JSONL recording or the in-process simulator → store.

A thin shim over ``gridtwin feeds``: ``python scripts/run_feeds.py --help`` shows the options.
"""

from __future__ import annotations

import sys

from twin.cli import run_command


def main(argv: list[str] | None = None) -> int:
    return run_command("feeds", argv)


if __name__ == "__main__":
    sys.exit(main())
