"""``python -m twin.cli``: the ``gridtwin`` command from a checkout or any environment."""

from __future__ import annotations

import sys

from twin.cli import main

if __name__ == "__main__":
    sys.exit(main())
