"""Secrets from the environment or a secrets mapping; never logged."""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any


def secret(name: str, secrets: Mapping[str, Any] | None = None) -> str | None:
    """Return a secret from the environment (``TWIN_<NAME>``) or a secrets mapping; never logged."""
    value = os.environ.get("TWIN_" + name.upper())
    if value:
        return value
    if secrets is not None and name in secrets:
        return str(secrets[name])
    return None


