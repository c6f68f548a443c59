"""The audit log as people read it: filter, export as CSV, verify the chain online and offline."""

from __future__ import annotations

import io
import json
from dataclasses import dataclass
from typing import Any

import pandas as pd

from twin.timeutil import to_utc
from twin.trust.permissions import User, require
from twin.trust.users import resolve


@dataclass(frozen=True)
class ChainCheck:
    """The result of checking the audit chain."""

    ok: bool
    rows: int
    first_bad_seq: int | None = None
    message: str = ""


def verify_audit_chain(store) -> ChainCheck:
    """Check every row's hash against the chain; name the first row that was changed or removed."""
    rows = len(store.read_audit())
    bad = store.verify_audit()
    if bad is None:
        return ChainCheck(True, rows, None, f"intact: {rows} rows")
    return ChainCheck(False, rows, int(bad),
                      f"broken at row {bad}: it or the row before it was changed or removed")


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
    """Return the audit log filtered (admin only); substrings of actor, action and target."""
    require(resolve(store, user), "audit.read")
    log = store.read_audit()
    keep = pd.Series(True, index=log.index)
    for column, value in (("actor", actor), ("action", action), ("target", target)):
        if value:
            keep &= log[column].astype(str).str.contains(str(value), regex=False)
    if start is not None:
        keep &= log["at"] >= to_utc(start)
    if end is not None:
        keep &= log["at"] < to_utc(end)
    return log.loc[keep].reset_index(drop=True)


def export_audit_csv(store, user: User | None, *, origin: str = "", **filters: Any) -> bytes:
    """Return the (filtered) audit log as UTF-8 CSV with its hashes; the export is audited.

    An auditor can re-check the chain from the file: each ``hash`` is sha256 over ``prev_hash``
    and the row (see :func:`twin.store.base.audit_hash`).
    """
    log = read_audit(store, user, **filters)
    store.append_audit(user.username, "audit.export", "audit",  # type: ignore[union-attr]
                       {"rows": len(log), "filters": {k: str(v) for k, v in filters.items() if v}},
                       origin)
    out = log.copy()
    out["at"] = out["at"].map(lambda ts: pd.Timestamp(ts).isoformat() if not pd.isna(ts) else "")
    buffer = io.StringIO()
    out.to_csv(buffer, index=False)
    return ("\ufeff" + buffer.getvalue()).encode("utf-8")  # BOM: Excel opens UTF-8 as such


def verify_audit_csv(data: bytes | str) -> ChainCheck:
    """Check the chain of an exported (unfiltered) audit CSV, as an auditor would offline."""
    from twin.store.base import GENESIS_HASH, audit_hash

    text = data.decode("utf-8-sig") if isinstance(data, bytes) else data.lstrip("\ufeff")
    log = pd.read_csv(io.StringIO(text), dtype=str, keep_default_na=False)
    prev = GENESIS_HASH
    for row in log.to_dict("records"):
        row["seq"] = int(row["seq"])
        row["at"] = pd.Timestamp(row["at"])
        row["detail"] = json.loads(row["detail"]) if row["detail"] else None
        if row["prev_hash"] != prev or audit_hash(prev, row) != row["hash"]:
            return ChainCheck(False, len(log), row["seq"], f"broken at row {row['seq']}")
        prev = row["hash"]
    return ChainCheck(True, len(log), None, f"intact: {len(log)} rows")


