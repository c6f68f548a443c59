"""The points ledger (积分制): append-only, hash-chained like the audit log; balances derived.

Residents and volunteers earn points for service hours, reports that turn out valid and poll
answers. Every entry is a row of :data:`twin.schema.POINTS_LEDGER` chained by
:func:`twin.auditchain.row_hash` (HMAC-SHA256 under the audit key over the previous row's hash
and the row's :data:`FIELDS`), so that a row edited, inserted or removed in the store fails
:func:`verify_ledger`. Nothing ever updates a row: a correction is a new entry (reason
``adjust``); on PostGIS triggers refuse UPDATE, DELETE and TRUNCATE (migration 14). Balances
are sums over the ledger, never a stored number that could drift from it.

Each entry names what earned it (``ref``): an entry whose ref is already in the ledger is not
written again, so awarding is idempotent (a case closed, re-opened and closed again earns once).
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import pandas as pd

from twin import auditchain
from twin.errors import ValidationError
from twin.schema import POINT_REASONS, POINTS_LEDGER

LOGGER = logging.getLogger(__name__)

#: The columns each entry's hash covers (``seq`` first, as twin.auditchain expects).
FIELDS = ("seq", "at", "account", "delta", "reason", "ref", "actor")

#: Points per reason (service hours: per hour begun after the first quarter of an hour).
RULES: Mapping[str, int] = {
    "service_hours": 10,  # per hour of volunteer service
    "valid_report": 5,  # a reported problem closed as valid
    "poll_answer": 1,  # an answer to a poll or survey
    "proposal_adopted": 20,  # a proposal the community adopted
}


@dataclass(frozen=True)
class LedgerCheck:
    """What :func:`verify_ledger` found: ``ok``, how many rows, and the first bad one."""

    ok: bool
    rows: int
    first_bad_seq: int | None = None
    reason: str = "intact"
    message: str = ""


def service_points(hours: float) -> int:
    """Points for *hours* of service: :data:`RULES` per hour, rounded to the nearest quarter."""
    if hours is None or not math.isfinite(float(hours)) or float(hours) < 0:
        raise ValidationError(f"service hours must be a number ≥ 0; got {hours!r}")
    return int(round(RULES["service_hours"] * round(float(hours) * 4) / 4))


def award(store, entries: pd.DataFrame | list[dict[str, Any]] | dict[str, Any], *,
          actor: str = "system", at: Any = None) -> pd.DataFrame:
    """Append entries (``account``, ``delta``, ``reason``, ``ref``; optional ``at``, ``actor``).

    Entries whose ``ref`` is already in the ledger (or repeated) are skipped; entries worth
    nothing are not written. Returns the rows written, with their ``seq`` and ``hash``.

    Raises
    ------
    ValidationError
        For an unknown reason, a missing account or ref, or a delta that is not whole.
    """
    frame = pd.DataFrame([entries] if isinstance(entries, dict) else entries)
    if frame.empty:
        return frame
    missing = [c for c in ("account", "delta", "reason", "ref") if c not in frame]
    if missing:
        raise ValidationError(f"ledger entries need account, delta, reason and ref; "
                              f"{missing} missing")
    bad = sorted(set(frame["reason"]) - set(POINT_REASONS))
    if bad:
        raise ValidationError(f"unknown point reasons {bad}; reasons are {list(POINT_REASONS)}")
    if frame[["account", "ref"]].isna().any(axis=None) or \
            (frame["account"].astype(str).str.strip() == "").any():
        raise ValidationError("every ledger entry needs an account (a username) and a ref")
    now = pd.Timestamp.now(tz="UTC") if at is None or pd.isna(at) else pd.Timestamp(at)
    if "at" not in frame:
        frame["at"] = now
    frame["at"] = pd.to_datetime(frame["at"], utc=True).dt.floor("s")
    if "actor" not in frame:
        frame["actor"] = actor
    frame = frame.loc[pd.to_numeric(frame["delta"]) != 0]
    frame = frame.sort_values("at", kind="stable")[["at", "account", "delta", "reason", "ref",
                                                     "actor"]]
    written = store.append_chained(POINTS_LEDGER, frame, fields=FIELDS, unique="ref")
    LOGGER.debug("points: %d of %d entries written", len(written), len(frame))
    return written


def ledger(store, account: str | None = None) -> pd.DataFrame:
    """Return the ledger (one account's entries, or all), oldest first."""
    rows = store.read_rows(POINTS_LEDGER) if account is None else \
        store.read_rows(POINTS_LEDGER, account=account)
    return rows.sort_values("seq").reset_index(drop=True)


def balances(store) -> pd.DataFrame:
    """Return every account's balance: ``account``, ``points``, ``entries``, highest first."""
    rows = ledger(store)
    if rows.empty:
        return pd.DataFrame({"account": [], "points": [], "entries": []})
    out = rows.groupby("account").agg(points=("delta", "sum"), entries=("seq", "size"))
    out["points"] = out["points"].astype(int)
    return out.reset_index().sort_values(["points", "account"], ascending=[False, True],
                                         ignore_index=True)


def balance(store, account: str) -> int:
    """Return the points *account* holds: the sum of its ledger entries."""
    rows = ledger(store, account)
    return int(rows["delta"].sum()) if len(rows) else 0


def verify_ledger(store) -> LedgerCheck:
    """Check every ledger row against its chain: an edit, insertion or removal is named.

    The rows must run 1, 2, 3 … each naming the previous row's hash and carrying the HMAC of
    its content under the audit key (:func:`twin.auditchain.check_run`).
    """
    rows = ledger(store)
    run = auditchain.check_run(auditchain.columns_of(rows, FIELDS), auditchain.audit_key(),
                               fields=FIELDS)
    if run.bad_seq is None:
        return LedgerCheck(True, len(rows))
    message = run.message.replace("deleted from the log", "deleted from the ledger")
    return LedgerCheck(False, len(rows), run.bad_seq, run.reason, message)


def award_valid_report(store, case: Mapping[str, Any]) -> pd.DataFrame:
    """Award the resident who reported *case*, once, when the case loop closed it as valid.

    Called where a case is closed (:func:`twin.trust.casework.transition_case`, action
    ``close`` — not ``force_close`` nor ``cancel``). Only reports with ``source`` resident
    whose reporter is a user (a username in the case's reporter) earn.
    """
    data = case.get("data")
    if isinstance(data, str):
        data = json.loads(data)
    who = ((data or {}).get("reporter") or {}).get("username")
    if case.get("source") != "resident" or case.get("status") != "closed" or not who:
        return pd.DataFrame()
    return award(store, {"account": who, "delta": RULES["valid_report"],
                         "reason": "valid_report", "ref": f"case:{case['id']}"},
                 actor="cases", at=case.get("closed_at"))
