"""The audit log as people read it: filter, export as CSV, verify the chain online and offline."""

from __future__ import annotations

import hashlib
import io
import json
from dataclasses import dataclass
from typing import Any

import pandas as pd

from twin import audit_anchor, auditchain
from twin.auditchain import ChainCheck
from twin.trust.permissions import User, require
from twin.trust.users import resolve

__all__ = ["AuditPage", "ChainCheck", "audit_page", "export_audit_csv", "read_audit",
           "verify_audit_chain", "verify_audit_csv"]

HEAD_ACTION = "audit.export_head"
_HEAD_LABEL = "gridtwin audit export"
# OWASP CSV injection: a cell starting with one of these is a formula to spreadsheets; the
# apostrophe itself is escaped too, so that removing one leading apostrophe undoes it exactly
FORMULA_START = ("=", "+", "-", "@", "\t", "\r", "'")


def verify_audit_chain(store, *, incremental: bool = False) -> ChainCheck:
    """Check the store's keyed audit chain and its anchored head.

    A full check (the default) reads every row; ``incremental=True`` (the audit page on each
    visit) reads only the rows since the last verified checkpoint (see
    :func:`twin.audit_anchor.verify_chain` for what each proves).
    """
    return audit_anchor.verify_chain(store, incremental=incremental)


def read_audit(
    store,
    user: User | None,
    *,
    actor: str | None = None,
    action: str | None = None,
    target: str | None = None,
    start: Any = None,
    end: Any = None,
) -> pd.DataFrame:
    """Return the whole audit log filtered, in chain order (admin only; for exports).

    Substrings of actor, action and target; the page reads one page at a time
    (:func:`audit_page`).
    """
    log = audit_page(store, user, actor=actor, action=action, target=target, start=start,
                     end=end, limit=None).rows
    return log.iloc[::-1].reset_index(drop=True)


@dataclass(frozen=True)
class AuditPage:
    """Rows of the audit log, newest first, and where the next (older) page starts."""

    rows: pd.DataFrame
    total: int
    next_before: int | None


def audit_page(
    store,
    user: User | None,
    *,
    actor: str | None = None,
    action: str | None = None,
    target: str | None = None,
    start: Any = None,
    end: Any = None,
    before: int | None = None,
    limit: int | None = 100,
) -> AuditPage:
    """Return one page of the audit log, newest first, filtered in the database (admin only).

    *before* is the ``next_before`` of the page before it; ``limit=None`` reads every match.
    """
    require(resolve(store, user), "audit.read")
    rows, total = store.search_audit(
        contains={"actor": actor, "action": action, "target": target}, start=start, end=end,
        before=before, limit=limit if limit is not None else 2**62)
    more = limit is not None and len(rows) == limit and int(rows["seq"].iloc[-1]) > 1
    return AuditPage(rows.reset_index(drop=True), total,
                     int(rows["seq"].iloc[-1]) if more else None)


def export_audit_csv(store, user: User | None, *, origin: str = "", **filters: Any) -> bytes:
    """Return the (filtered) audit log as UTF-8 CSV with its hashes and a signed head.

    The last line is the signed head (action ``audit.export_head``): how many rows the file
    holds, a digest of their seqs and hashes, the filters, and an HMAC of all that under the
    audit key, so :func:`verify_audit_csv` fails a file that was cut short or edited. Cells
    that a spreadsheet would take for a formula get a leading apostrophe. The export is
    audited.
    """
    log = read_audit(store, user, **filters)
    used = {k: str(v) for k, v in filters.items() if v is not None and v != ""}
    store.append_audit(user.username, "audit.export", "audit",  # type: ignore[union-attr]
                       {"rows": len(log), "filters": used}, origin)
    out = log.astype(object)
    out["at"] = log["at"].map(lambda ts: pd.Timestamp(ts).isoformat() if not pd.isna(ts) else "")
    out["seq"] = log["seq"].astype(str)
    head = _signed_head(out, used)
    trailer = dict.fromkeys(out.columns, "")
    trailer.update(action=HEAD_ACTION, detail=json.dumps(head, sort_keys=True))
    out = pd.concat([out, pd.DataFrame([trailer])], ignore_index=True)
    buffer = io.StringIO()
    out.map(_neutralise).to_csv(buffer, index=False)
    return ("\ufeff" + buffer.getvalue()).encode("utf-8")  # BOM: Excel opens UTF-8 as such


def _neutralise(value: Any) -> Any:
    """Make a text cell inert in spreadsheets (OWASP: a leading apostrophe)."""
    if isinstance(value, str) and value.startswith(FORMULA_START):
        return "'" + value
    return value


def _restore(value: str) -> str:
    return value[1:] if value.startswith("'") else value


def _digest(frame: pd.DataFrame) -> str:
    text = "\n".join(f"{s}:{h}" for s, h in zip(frame["seq"], frame["hash"], strict=True))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _signed_head(rows: pd.DataFrame, filters: dict[str, str], key: bytes | None = None) -> dict:
    key = key or auditchain.audit_key()
    head = {
        "rows": len(rows),
        "first_seq": int(rows["seq"].iloc[0]) if len(rows) else None,
        "last_seq": int(rows["seq"].iloc[-1]) if len(rows) else None,
        "digest": _digest(rows),
        "filters": filters,
        "key_id": auditchain.key_id(key),
    }
    head["mac"] = auditchain.mac(key, _HEAD_LABEL, head)
    return head


def verify_audit_csv(data: bytes | str, key: bytes | None = None) -> ChainCheck:
    """Check an exported audit CSV offline: its signed head, then each row's keyed hash.

    The head must be the file's last line and carry a valid HMAC under the audit key (*key*,
    default the configured one: an auditor needs it as the twin does), and name exactly the
    rows in the file. An unfiltered export is checked as a chain from its first row; a
    filtered one row by row (each row's hash covers its content and its link).
    """
    key = key or auditchain.audit_key()
    text = data.decode("utf-8-sig") if isinstance(data, bytes) else data.lstrip("\ufeff")
    log = pd.read_csv(io.StringIO(text), dtype=str, keep_default_na=False).map(_restore)
    if log.empty or log["action"].iloc[-1] != HEAD_ACTION:
        return ChainCheck(False, max(len(log), 0), None,
                          "no signed head at the end of the file: it was cut short or edited "
                          "(or exported before exports were signed)", "export")
    try:
        head = json.loads(log["detail"].iloc[-1])
        signature = head.pop("mac")
    except (ValueError, KeyError, AttributeError):
        return ChainCheck(False, len(log) - 1, None, "the signed head is unreadable", "export")
    rows = log.iloc[:-1]
    if auditchain.mac(key, _HEAD_LABEL, head) != signature:
        why = ("it was signed with another audit key"
               if head.get("key_id") != auditchain.key_id(key) else "it was edited")
        return ChainCheck(False, len(rows), None, f"the head's signature does not match: {why}",
                          "export")
    if head.get("rows") != len(rows) or head.get("digest") != _digest(rows):
        return ChainCheck(False, len(rows), None,
                          f"the head names {head.get('rows')} rows ({head.get('first_seq')}–"
                          f"{head.get('last_seq')}) but the file holds {len(rows)} others or "
                          "fewer: rows were cut off, removed, added or reordered", "export")
    frame = rows.assign(
        seq=rows["seq"].astype(int),
        at=rows["at"].map(pd.Timestamp),
        detail=rows["detail"].map(lambda d: json.loads(d) if d else None),
    )
    filtered = bool(head.get("filters"))
    prev_seq = int(head["first_seq"]) - 1 if filtered and head.get("first_seq") else 0
    run = auditchain.check_run(auditchain.columns_of(frame), key, prev_seq=prev_seq,
                               linked=not filtered, keyed=False)
    if run.bad_seq is not None:
        return ChainCheck(False, len(rows), run.bad_seq, f"broken at row {run.bad_seq}: "
                          f"{run.message}", run.reason, len(rows), run.legacy_rows)
    what = "filtered export, every row authentic" if filtered else "intact"
    return ChainCheck(True, len(rows), None, f"{what}: {len(rows)} rows", "intact", len(rows),
                      run.legacy_rows)
