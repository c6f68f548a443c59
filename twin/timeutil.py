"""Time, declared once: the local time zone from the settings, and conversion to UTC."""

from __future__ import annotations

from zoneinfo import ZoneInfo

from twin import settings


def local_zone() -> ZoneInfo:
    """Return the time zone times are shown in (``TWIN_TIMEZONE``, default Asia/Shanghai)."""
    return ZoneInfo(settings.get("timezone"))
