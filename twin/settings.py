"""Typed settings declared once; read at call time from the environment, never at import time."""

from __future__ import annotations

import os
import zoneinfo
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

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


def _positive_int(text: str) -> int:
    value = int(text)
    if value <= 0:
        raise ValueError("must be a positive whole number")
    return value


def _positive_float(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise ValueError("must be a positive number")
    return value


def _time_zone(text: str) -> str:
    name = text.strip()
    try:
        zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        raise ValueError(name) from None
    return name


def _whole(text: str) -> int:
    value = int(text)
    if value < 0:
        raise ValueError("must be 0 or a positive whole number")
    return value


def _scheduler(text: str) -> str:
    address = text.strip()
    if address and not address.startswith(("tcp://", "tls://", "inproc://")):
        raise ValueError(address)
    return address


_positive_int.__name__ = "positive whole number"
_whole.__name__ = "whole number (0 or more)"
_scheduler.__name__ = "Dask scheduler address (tcp://host:8786) or empty"
_positive_float.__name__ = "positive number"
_time_zone.__name__ = "IANA time zone name (e.g. Asia/Shanghai)"


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
    Setting(
        "timezone",
        _time_zone,
        "Asia/Shanghai",
        "The community's time zone (twin.timeutil.local_zone): times are stored in UTC and shown "
        "in it; local days, months and quarters are counted in it.",
    ),
    Setting("mqtt_url", str, "mqtt://127.0.0.1:1883", "Broker of the live feeds."),
    Setting("tile_url", str, "", "Optional basemap tile URL; empty means the twin's own basemap."),
    Setting(
        "tile_crs",
        str,
        "wgs84",
        "Datum of the tile_url tiles: wgs84, or gcj02 (AMap, Tencent …: the twin is shifted "
        "to match).",
    ),
    Setting(
        "require_services",
        _bool,
        False,
        "Fail instead of skip when PostGIS, Mosquitto or Chromium is missing (CI sets it).",
    ),
    # -- trust: login, personal data, uploads (twin.trust; docs/trust.md) --
    Setting(
        "session_timeout_min", _positive_float, 30.0,
        "Minutes of inactivity after which a cockpit login expires.",
    ),
    Setting(
        "session_max_hours", _positive_float, 12.0,
        "Hours after which a cockpit login ends however active it was (a new login needed).",
    ),
    Setting(
        "max_failed_logins", _positive_int, 5,
        "Password checks allowed for one name from one client in each login window; "
        "further attempts are refused unchecked until the window ends (a success renews it).",
    ),
    Setting(
        "lockout_min", _positive_float, 15.0,
        "Minutes of a login window: how long refused attempts wait at most.",
    ),
    Setting(
        "max_logins_per_client", _positive_int, 30,
        "Login attempts (any names) allowed from one client in each login window.",
    ),
    Setting(
        "retention_days", _positive_int, 365 * 3,
        "Days personal data of finished business (closed cases, closed polls, replaced "
        "residents versions) are kept before scripts/retention.py anonymises or purges them.",
    ),
    # -- events history and city-scale batch work (twin.retention, twin.batch; docs/scale.md) --
    Setting(
        "events_keep_months", _whole, 0,
        "Whole months of events kept before the current one; older months are archived to "
        "events_archive_dir, checked, then dropped by `gridtwin retention`. 0: keep all.",
    ),
    Setting(
        "events_archive_dir", str, "",
        "Folder of the GeoParquet archives of dropped event months; empty: the archive/events "
        "folder of data_dir.",
    ),
    Setting(
        "events_partitions_ahead", _whole, 3,
        "Months of event partitions made ahead of the current one on PostGIS (by the feed "
        "workers at start and by `gridtwin retention`); later events wait in the DEFAULT one.",
    ),
    Setting(
        "batch_scheduler", _scheduler, "",
        "Dask scheduler of batch work (twin.batch), e.g. tcp://10.0.0.5:8786; empty: a "
        "LocalCluster on this machine.",
    ),
    Setting(
        "batch_workers", _positive_int, 2,
        "Worker processes of the LocalCluster batch work starts when no scheduler is set.",
    ),
    Setting(
        "public_round_deg", _positive_float, 0.001,
        "Cell size in degrees (0.001 is about 100 m) to which public views round locations.",
    ),
    Setting(
        "upload_max_bytes", _positive_int, 5 * 1024 * 1024,
        "Largest photo a user may upload, in bytes.",
    ),
    Setting(
        "argon2_time_cost", _positive_int, 3,
        "argon2id passes of password hashes (RFC 9106 low-memory profile: 3).",
    ),
    Setting(
        "argon2_memory_kib", _positive_int, 65536,
        "argon2id memory of password hashes in KiB (RFC 9106 low-memory profile: 64 MiB).",
    ),
    # -- the audit log's keyed chain and anchored head (twin.auditchain; docs/trust.md) --
    Setting(
        "audit_key", str, "",
        "Secret (at least 32 characters) of the audit log's HMAC chain; empty: read from "
        "audit_key_file. Every process writing one store needs the same key; never put it "
        "in the store.",
    ),
    Setting(
        "audit_key_file", str, "",
        "File holding the audit key (mode 0600); empty: audit.key in audit_dir, created "
        "with a random key on first use.",
    ),
    Setting(
        "audit_dir", str, "",
        "Folder outside every store for the audit key file and the anchored heads of the "
        "audit logs (one signed file per store); empty: the audit folder of data_dir.",
    ),
    # -- secured MQTT for feed workers and the simulator (twin.feeds.transport; docs/feeds.md) --
    Setting(
        "mqtt_tls", _bool, False,
        "Connect to the broker over TLS even with an mqtt:// URL (mqtts:// always does); the "
        "broker's certificate and host name are checked.",
    ),
    Setting(
        "mqtt_ca_file", str, "",
        "PEM file of the authorities trusted for the broker's certificate; empty: the "
        "system's.",
    ),
    Setting(
        "mqtt_cert_file", str, "",
        "PEM client certificate, when the broker asks for one (require_certificate).",
    ),
    Setting("mqtt_key_file", str, "", "PEM key of mqtt_cert_file (keep it mode 0600)."),
    # -- the HTTP service: gridtwin serve (twin.api; docs/api.md) --
    Setting(
        "api_host", str, "127.0.0.1",
        "Address gridtwin serve listens on: this machine only unless set (0.0.0.0: every "
        "network; put a TLS proxy in front).",
    ),
    Setting("api_port", _positive_int, 8090, "Port gridtwin serve listens on."),
    Setting(
        "api_cors_origins", str, "",
        "Comma-separated origins whose web pages may call the API (CORS); empty: none, * : any.",
    ),
    Setting(
        "api_rate_per_min", _positive_int, 600,
        "Requests per minute a new API key may make (token bucket per key, in each server "
        "process); `gridtwin users create-key --rate` sets a key's own.",
    ),
    Setting(
        "api_anonymous_rate_per_min", _positive_int, 600,
        "Requests per minute from one client address without a key (in each server process).",
    ),
    Setting(
        "api_token_minutes", _positive_float, 15.0,
        "Minutes a short-lived API token (POST /auth/token) stays valid.",
    ),
    Setting(
        "api_max_limit", _positive_int, 1000,
        "Most features one page of /ogc/collections/{id}/items may hold (limit=).",
    ),
    Setting("mqtt_username", str, "", "MQTT login name; empty: anonymous."),
    Setting(
        "mqtt_password", str, "",
        "MQTT password (secret: prefer mqtt_password_file); never logged or shown.",
    ),
    Setting(
        "mqtt_password_file", str, "",
        "File whose first line is the MQTT password (mode 0600; a container secret).",
    ),
    # -- notifications out (twin.notify; docs/notify.md) ---------------------------------------
    Setting("notify_max_attempts", _positive_int, 8,
            "Delivery attempts of a notification before it is marked dead."),
    Setting("notify_backoff_s", _positive_float, 30.0,
            "Wait after the first failed attempt (seconds); doubled after each one, with jitter."),
    Setting("notify_backoff_cap_s", _positive_float, 3600.0,
            "Longest wait between two attempts (seconds)."),
    Setting("notify_lease_s", _positive_float, 60.0,
            "How long a worker holds a claimed notification before another may take it."),
    Setting("notify_timeout_s", _positive_float, 10.0,
            "Seconds a webhook or apprise request may take before it counts as failed."),
)
_BY_NAME = {s.name: s for s in SETTINGS}


def get(name: str) -> Any:
    """Return setting *name*: the ``TWIN_<NAME>`` environment variable, else the default.

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
            f"{setting.env}={raw!r} is not a valid {setting.type.__name__}: {setting.doc} "
            f"Set it to a valid value or unset it for the default ({setting.default!r})."
        ) from None


def require_services() -> bool:
    """Return True when missing services must fail the run: ``CI=true`` or that setting."""
    return get("require_services") or os.environ.get("CI", "").lower() == "true"


def default_store_path() -> Path:
    """Return the embedded store used when nothing is configured: the demo GeoPackage."""
    return Path(get("data_dir")) / "demo" / "guilin_demo.gpkg"
