"""Retention: personal data of finished business anonymised or purged; old event months archived."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from twin import settings
from twin.errors import ValidationError
from twin.schema import LOGIN_ATTEMPTS, OUTBOX
from twin.store.base import purge_plan
from twin.timeutil import to_utc
from twin.trust import participation

LOGGER = logging.getLogger(__name__)

#: What a case's reporter becomes once the retention period has passed.
ANONYMISED = {"anonymised": True}

#: Layers made of personal data whose replaced versions the retention run deletes.
PERSONAL_LAYERS = ("residents",)

#: Login attempts (names as typed, client addresses) are kept this long: they throttle logins
#: within their window (``TWIN_LOCKOUT_MIN``) and help look into an attack for a day after.
LOGIN_ATTEMPTS_KEPT = pd.Timedelta(days=1)
#: How long a delivered notification stays in the outbox (its payload is what its recipient saw,
#: names and places included); pending and dead ones stay until delivered or dealt with.
NOTIFICATIONS_KEPT = pd.Timedelta(days=30)


@dataclass
class RetentionReport:
    """What a retention run changed (or, with ``dry_run``, would change)."""

    cutoff: pd.Timestamp
    cases_anonymised: int = 0
    answers_anonymised: int = 0
    versions_purged: dict[str, list[int]] = field(default_factory=dict)
    login_attempts_deleted: int = 0
    notifications_deleted: int = 0
    dry_run: bool = False


def apply_retention(
    store,
    *,
    days: int | None = None,
    now: Any = None,
    actor: str = "retention",
    origin: str = "scripts/retention.py",
    dry_run: bool = False,
) -> RetentionReport:
    """Anonymise or purge personal data of finished business older than *days*.

    Reporters of cases closed before the cutoff are removed from the case (the step is kept in
    its history); answers to polls given before it keep the answer and the place but lose the
    resident (a per-poll pseudonym still allows one answer each); login attempts older than
    :data:`LOGIN_ATTEMPTS_KEPT` are deleted, and notifications delivered more than
    :data:`NOTIFICATIONS_KEPT` ago; versions of the residents
    layer that were replaced before the cutoff are deleted with their history rows — every
    version created before the cutoff except the newest of them (it may have stayed current
    until recently) and the current one. The run is audited; the audit log itself is never
    changed: it holds ids and counts, not personal values.

    Parameters
    ----------
    store
        The store.
    days
        The retention period (default ``TWIN_RETENTION_DAYS``).
    now
        The time the period is counted back from (default: now).
    actor, origin
        Who runs it and from where, for the audit log.
    dry_run
        Count only; change nothing (the run is still audited).

    Raises
    ------
    ValidationError
        If *days* is not a positive number.
    """
    days = int(settings.get("retention_days") if days is None else days)
    if days <= 0:
        raise ValidationError(f"the retention period must be a positive number of days; got {days}")
    now = pd.Timestamp.now(tz="UTC") if now is None else pd.Timestamp(now)
    cutoff = now - pd.Timedelta(days=days)
    report = RetentionReport(cutoff, dry_run=dry_run)
    report.cases_anonymised = _anonymise_reporters(store, cutoff, days, actor, dry_run)
    report.answers_anonymised = participation.anonymise_answers(store, cutoff, dry_run=dry_run)
    for name in PERSONAL_LAYERS:
        report.versions_purged[name] = _purge_versions(store, name, cutoff, actor, dry_run)
    report.login_attempts_deleted = store.delete_rows_before(
        LOGIN_ATTEMPTS, "at", now - max(LOGIN_ATTEMPTS_KEPT, _lockout_window()), dry_run=dry_run)
    report.notifications_deleted = store.delete_rows_before(
        OUTBOX, "delivered_at", now - NOTIFICATIONS_KEPT, dry_run=dry_run)
    store.append_audit(actor, "retention.run", "personal_data",
                       {"days": days, "cutoff": cutoff.isoformat(), "dry_run": dry_run,
                        "cases": report.cases_anonymised, "answers": report.answers_anonymised,
                        "versions": report.versions_purged,
                        "login_attempts": report.login_attempts_deleted,
                        "notifications": report.notifications_deleted},
                       origin)
    LOGGER.info("retention (%d days, dry run %s): %s", days, dry_run, report)
    return report


@dataclass
class ArchivedMonth:
    """One month of events archived and dropped (with ``dry_run``: that would be)."""

    month: pd.Timestamp
    rows: int
    path: Path | None = None


@dataclass
class EventRetentionReport:
    """What an events retention run made, archived and dropped."""

    keep_months: int
    cutoff: pd.Timestamp | None
    partitions_made: list[str] = field(default_factory=list)
    archived: list[ArchivedMonth] = field(default_factory=list)
    dry_run: bool = False


def apply_event_retention(
    store,
    *,
    months: int | None = None,
    now: Any = None,
    folder: str | Path | None = None,
    actor: str = "retention",
    origin: str = "scripts/retention.py",
    dry_run: bool = False,
) -> EventRetentionReport:
    """Make event partitions ahead, then archive and drop the months older than *months*.

    Every month of events before the cutoff (the current month's start, *months* months back)
    is first written to a GeoParquet file in *folder* (:func:`twin.archive.export_month`),
    read back and counted; only then is it dropped (on PostGIS its partition detached and
    dropped, in the embedded store its rows deleted), and only if the store still holds
    exactly the rows archived. Readers see the months kept unchanged.

    Parameters
    ----------
    store
        The store.
    months
        Whole months kept before the current one (default ``TWIN_EVENTS_KEEP_MONTHS``;
        0 keeps everything and only makes partitions).
    now
        The time counted back from (default: now).
    folder
        The archive folder (default ``TWIN_EVENTS_ARCHIVE_DIR``).
    actor, origin
        Who runs it and from where, for the audit log.
    dry_run
        List the months only; make, write and drop nothing.

    Raises
    ------
    ValidationError
        If *months* is negative, or an archive cannot be read back (nothing dropped).
    StaleUpdateError
        If events of a month arrived during its export (that month is not dropped).
    """
    from twin.archive import export_month
    from twin.store.eventparts import month_start

    keep = int(settings.get("events_keep_months") if months is None else months)
    if keep < 0:
        raise ValidationError(f"months of events kept must be 0 or more; got {keep}")
    now = pd.Timestamp.now(tz="UTC") if now is None else to_utc(now)
    ahead = now + pd.DateOffset(months=int(settings.get("events_partitions_ahead")))
    report = EventRetentionReport(keep, None, dry_run=dry_run)
    if not dry_run:
        report.partitions_made = store.ensure_event_partitions(ahead)
    if keep:
        report.cutoff = month_start(now) - pd.DateOffset(months=keep)
        for month, rows in store.event_months(report.cutoff).items():
            if dry_run:
                report.archived.append(ArchivedMonth(month, rows))
                continue
            if not rows:  # a partition made ahead that stayed empty: nothing to archive
                store.drop_event_month(month, 0)
                continue
            path, written = export_month(store, month, folder, rows_hint=rows)
            store.drop_event_month(month, written)
            report.archived.append(ArchivedMonth(month, written, path))
    if keep or report.partitions_made:
        store.append_audit(actor, "retention.events", "twin_events",
                           {"keep_months": keep, "dry_run": dry_run,
                            "cutoff": None if report.cutoff is None else report.cutoff.isoformat(),
                            "partitions_made": report.partitions_made,
                            "archived": [{"month": f"{a.month:%Y-%m}", "rows": a.rows,
                                          "file": a.path and a.path.name}
                                         for a in report.archived]},
                           origin)
    LOGGER.info("events retention (%d months, dry run %s): %s", keep, dry_run, report)
    return report


def _lockout_window() -> pd.Timedelta:
    """Return the login throttling window (attempts inside it still count)."""
    return pd.Timedelta(minutes=float(settings.get("lockout_min")))


def _anonymise_reporters(store, cutoff: pd.Timestamp, days: int, actor: str,
                         dry_run: bool) -> int:
    cases = store.read_cases()
    closed = pd.to_datetime(cases["closed_at"], utc=True)
    old = cases.loc[closed.notna() & (closed < cutoff)]
    count = 0
    for record in old.drop(columns="geometry", errors="ignore").to_dict("records"):
        data = record["data"]
        data = json.loads(data) if isinstance(data, str) else dict(data or {})
        reporter = data.get("reporter")
        if (not reporter or reporter == ANONYMISED) and not data.get("co_reporters"):
            continue
        count += 1
        if dry_run:
            continue
        data["reporter"] = dict(ANONYMISED)
        data.pop("co_reporters", None)
        store.update_case(record["id"], {"data": data}, expected_version=int(record["version"]),
                          history={"actor": actor, "role": "admin", "action": "anonymise",
                                   "from_status": record["status"],
                                   "to_status": record["status"],
                                   "note": f"retention: older than {days} days"})
    return count


def _purge_versions(store, name: str, cutoff: pd.Timestamp, actor: str,
                    dry_run: bool) -> list[int]:
    """Delete the versions of layer *name* replaced before *cutoff*; return them."""
    versions = store.layer_versions(name)
    created = pd.to_datetime(pd.Series([v.created_at for v in versions], dtype=object),
                             utc=True)
    before_cutoff = [v.version for v, at in zip(versions, created, strict=True) if at < cutoff]
    if not before_cutoff:
        return []
    newest_old = max(before_cutoff)
    if dry_run:
        return purge_plan(versions, newest_old)
    return store.purge_layer_versions(name, newest_old, actor=actor)
