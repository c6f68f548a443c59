"""Time declared once: the community's local time zone, and conversion of any time to UTC."""

from __future__ import annotations

from datetime import date, datetime
from typing import Any, overload

import numpy as np
import pandas as pd

from twin import settings
from twin.errors import ValidationError

__all__ = ["local_zone", "to_local", "to_utc"]

UTC = "UTC"


def local_zone() -> str:
    """Return the community's time zone (setting ``timezone``, default ``Asia/Shanghai``).

    Times are stored in UTC and shown in this zone; local days, months and quarters (indicator
    periods, case ids, the working calendar when its table names no zone) are counted in it. It
    is read at call time, so ``TWIN_TIMEZONE`` takes effect without a restart.

    Raises
    ------
    ConfigError
        If ``TWIN_TIMEZONE`` is not an IANA time zone name.
    """
    return settings.get("timezone")


@overload
def to_utc(value: pd.Series, naive_zone: str | None = None) -> pd.Series: ...
@overload
def to_utc(value: pd.Index | np.ndarray | list | tuple, naive_zone: str | None = None
           ) -> pd.DatetimeIndex: ...
@overload
def to_utc(value: Any, naive_zone: str | None = None) -> pd.Timestamp: ...


def to_utc(value: Any, naive_zone: str | None = None) -> Any:
    """Return *value* as timezone-aware UTC time, of the same kind.

    Aware times are converted; naive ones are taken to be in *naive_zone* (default UTC, the
    zone times are stored in; pass :func:`local_zone` for wall-clock times typed by a person).

    Parameters
    ----------
    value
        A ``pandas.Series`` or ``Index`` (datetime, or text parsed as ISO 8601; offsets may differ
        between rows), a ``Timestamp``, ``datetime``, ``date``, ``numpy.datetime64`` or ISO 8601
        text. Lists and arrays come back as a ``DatetimeIndex``.
    naive_zone
        Time zone of naive values (default UTC).

    Returns
    -------
    Series, DatetimeIndex or Timestamp
        In UTC. Missing values (None, NaT, empty text in a Series) stay missing: NaT.

    Raises
    ------
    ValidationError
        If a value is not a time (a number, unparseable text …).
    """
    zone = naive_zone or UTC
    if isinstance(value, pd.Series):
        return _series_to_utc(value, zone)
    if isinstance(value, pd.Index | np.ndarray | list | tuple):
        index = value if isinstance(value, pd.Index) else pd.Index(list(value))
        return pd.DatetimeIndex(_series_to_utc(pd.Series(index), zone), name=index.name)
    return _scalar_to_utc(value, zone)


def to_local(value: Any) -> Any:
    """Return *value* (as :func:`to_utc` takes it; naive means UTC) in :func:`local_zone`."""
    utc = to_utc(value)
    zone = local_zone()
    return utc.dt.tz_convert(zone) if isinstance(utc, pd.Series) else utc.tz_convert(zone)


def _scalar_to_utc(value: Any, zone: str) -> pd.Timestamp:
    if value is None or value is pd.NaT or (isinstance(value, float) and np.isnan(value)):
        return pd.NaT
    if isinstance(value, bool) or not isinstance(value, datetime | date | str | np.datetime64):
        raise ValidationError(f"not a time: {value!r}; give an ISO 8601 string or a datetime")
    try:
        stamp = pd.Timestamp(value)
    except ValueError:
        raise ValidationError(
            f"not a time: {value!r}; give an ISO 8601 string like 2026-03-02T09:30+08:00"
        ) from None
    if stamp is pd.NaT:
        return pd.NaT
    if stamp.tzinfo is None:
        return stamp.tz_localize(zone).tz_convert(UTC)
    return stamp.tz_convert(UTC)


def _series_to_utc(series: pd.Series, zone: str) -> pd.Series:
    dtype = series.dtype
    if isinstance(dtype, pd.DatetimeTZDtype):
        return series if str(dtype.tz) == UTC else series.dt.tz_convert(UTC)
    if pd.api.types.is_datetime64_dtype(dtype):
        return series.dt.tz_localize(zone).dt.tz_convert(UTC)
    if pd.api.types.is_numeric_dtype(dtype) and series.notna().any():
        raise ValidationError(
            f"not times: numbers such as {series.dropna().iloc[0]!r}; give ISO 8601 text or "
            "datetimes")
    try:
        # one vectorised parse (any offsets) when naive means UTC, the common case
        utc = pd.to_datetime(series, utc=True, format="ISO8601")
    except (ValueError, TypeError):
        bad = pd.to_datetime(series, utc=True, format="ISO8601", errors="coerce").isna() & (
            series.notna() & series.astype(str).str.strip().ne(""))
        raise ValidationError(
            f"not times: {series[bad].head(3).tolist()}; give ISO 8601 text like "
            "2026-03-02T09:30+08:00 or datetimes"
        ) from None
    if zone == UTC:
        return utc
    try:
        parsed = pd.to_datetime(series, format="ISO8601")
    except ValueError:  # naive and aware times mixed, or several offsets: one at a time
        return pd.to_datetime(series.map(lambda v: _scalar_to_utc(v, zone)), utc=True)
    if isinstance(parsed.dtype, pd.DatetimeTZDtype):
        return parsed.dt.tz_convert(UTC)
    return parsed.dt.tz_localize(zone).dt.tz_convert(UTC)
