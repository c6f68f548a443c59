"""Publish the simulated community traffic to an MQTT broker (QoS 1, with flow control).

A thin shim over ``gridtwin simulate``: ``python scripts/simulate.py --help`` shows the options.
"""

from __future__ import annotations

import sys

from twin.cli import run_command


def main(argv: list[str] | None = None) -> int:
    return run_command("simulate", argv)


if __name__ == "__main__":
    sys.exit(main())
