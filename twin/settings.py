"""Typed settings declared once; read at call time from the environment, never at import time."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from twin.errors import ConfigError

PROJECT_DIR = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class Setting:
    """One setting: its name, type, default, environment variable and what it is for."""

    name: str
    type: Callable[[str], Any]
    default: Any
    doc: str

    @property
    def env(self) -> str:
        return "TWIN_" + self.name.upper()


def _bool(text: str) -> bool:
    if text.strip().lower() in {"1", "true", "yes", "on"}:
        return True
    if text.strip().lower() in {"0", "false", "no", "off", ""}:
        return False
    raise ValueError(text)


SETTINGS: tuple[Setting, ...] = (
    Setting(
        "database_url",
        str,
        "",
        "Store URL: a GeoPackage path (embedded, the default) or postgresql+psycopg://user:pw@host/db.",
    ),
    Setting(
        "data_dir",
        Path,
        PROJECT_DIR / "data",
        "Folder of the demo community and the seed tables.",
    ),
    Setting("language", str, "zh-CN", "Default user interface language: zh-CN or en."),
    Setting("timezone", str, "Asia/Shanghai", "Time zone in which times are shown."),
    Setting("mqtt_url", str, "mqtt://127.0.0.1:1883", "Broker of the live feeds."),
    Setting("tile_url", str, "", "Optional basemap tile URL; empty means the twin's own basemap."),
    Setting(
        "tile_crs",
        str,
        "wgs84",
        "Datum of the tile_url tiles: wgs84, or gcj02 (AMap, Tencent …: the twin is shifted to match).",
    ),
    Setting(
        "require_services",
        _bool,
        False,
        "Fail instead of skip when PostGIS, Mosquitto or Chromium is missing (CI sets it).",
    ),
)
_BY_NAME = {s.name: s for s in SETTINGS}


def get(name: str) -> Any:
    """Return the value of setting *name*: the ``TWIN_<NAME>`` environment variable, else the default.

    Raises
    ------
    ConfigError
        If the name is unknown or the environment value does not parse.
    """
    try:
        setting = _BY_NAME[name]
    except KeyError:
        raise ConfigError(
            f"unknown setting {name!r}; known settings: {', '.join(sorted(_BY_NAME))}"
        ) from None
    raw = os.environ.get(setting.env)
    if raw is None or (raw == "" and setting.default == ""):
        return setting.default
    try:
        return setting.type(raw)
    except ValueError:
        raise ConfigError(
            f"{setting.env}={raw!r} is not a valid {setting.type.__name__}: {setting.doc}"
        ) from None


def require_services() -> bool:
    """True when missing services must fail the run: ``CI=true`` or ``TWIN_REQUIRE_SERVICES=1``."""
    return get("require_services") or os.environ.get("CI", "").lower() == "true"


def default_store_path() -> Path:
    """The embedded store used when nothing is configured: the demo community's GeoPackage."""
    return Path(get("data_dir")) / "demo" / "guilin_demo.gpkg"
