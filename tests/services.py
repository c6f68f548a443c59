"""Finding the real services the tests need, and failing (CI) or skipping (locally) without them."""

from __future__ import annotations

import os
import shutil
import socket

import pytest

from twin.settings import require_services

POSTGIS_URL = os.environ.get(
    "TWIN_TEST_POSTGIS_URL", "postgresql+psycopg://twin:twin@127.0.0.1:5432/twin"
)
MQTT_HOST = os.environ.get("TWIN_TEST_MQTT_HOST", "127.0.0.1")
MQTT_PORT = int(os.environ.get("TWIN_TEST_MQTT_PORT", "18830"))
CHROMIUM = os.environ.get("TWIN_TEST_CHROMIUM", "/usr/bin/chromium")


def missing(what: str, hint: str) -> None:
    """Fail when services are required (CI=true / TWIN_REQUIRE_SERVICES=1), otherwise skip."""
    message = f"{what} is not available: {hint}"
    if require_services():
        pytest.fail(message + " (services are required: CI=true or TWIN_REQUIRE_SERVICES=1)")
    pytest.skip(message)


def port_open(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1):
            return True
    except OSError:
        return False


def chromium_path() -> str:
    path = shutil.which(CHROMIUM) or (CHROMIUM if os.path.exists(CHROMIUM) else None)
    if not path:
        missing("Chromium", "run `make test` as root, or apt-get install chromium")
    return path
