"""The audit log's keyed hash chain: its secret, each row's HMAC, and checking a run of rows.

Each row's ``hash`` is HMAC-SHA256, under a key kept outside the store (:func:`audit_key`),
over the previous row's hash and the row's canonical JSON. Without the key nobody can rewrite
a row and recompute the hashes after it. Rows written before the chain was keyed (plain
sha256) stay verifiable as they are, and are never rewritten: they may only form the start of
the log, and the first keyed row's HMAC covers the last of them.

What a chain alone cannot show — that rows were cut off its end, or the table emptied or
dropped — the anchored head shows (:mod:`twin.audit_anchor`, whose ``verify_chain`` checks
both). See docs/trust.md, "Audit log", for the threat model.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import numbers
import os
import secrets
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import pandas as pd

from twin import settings
from twin.errors import ConfigError

LOGGER = logging.getLogger(__name__)

GENESIS_HASH = "0" * 64
ROW_FIELDS = ("seq", "at", "actor", "action", "target", "detail", "origin")
KEY_MIN_CHARS = 32
_KEY_ID_LABEL = b"gridtwin audit key id"


# -- the secret ---------------------------------------------------------------------------------


def audit_dir() -> Path:
    """Return the folder of the key file and the anchored heads (``TWIN_AUDIT_DIR``)."""
    return Path(settings.get("audit_dir") or Path(settings.get("data_dir")) / "audit")


def audit_key() -> bytes:
    """Return the audit chain's secret: ``TWIN_AUDIT_KEY``, else the key file.

    The key file (``TWIN_AUDIT_KEY_FILE``, default ``audit.key`` in :func:`audit_dir`) is
    created with 32 random bytes, mode 0600, the first time it is needed.

    Raises
    ------
    ConfigError
        If the key is shorter than 32 characters, or the key file is readable by others.
    """
    text = settings.get("audit_key")
    if text:
        if len(text) < KEY_MIN_CHARS:
            raise ConfigError(
                f"TWIN_AUDIT_KEY has {len(text)} characters; use at least {KEY_MIN_CHARS} "
                "(e.g. `python -c 'import secrets; print(secrets.token_hex(32))'`)"
            )
        return text.encode("utf-8")
    return _key_file(Path(settings.get("audit_key_file") or audit_dir() / "audit.key"))


def _key_file(path: Path) -> bytes:
    if not path.exists():
        _create_key_file(path)
    mode = path.stat().st_mode
    if mode & 0o077:
        raise ConfigError(
            f"the audit key file {path} may be read by other users (mode {mode & 0o777:o}); "
            f"run `chmod 600 {path}`"
        )
    text = path.read_text(encoding="utf-8").strip()
    if len(text) < KEY_MIN_CHARS:
        raise ConfigError(
            f"the audit key file {path} holds {len(text)} characters; it needs at least "
            f"{KEY_MIN_CHARS}. Restore it from its backup (a new key fails every existing row)."
        )
    return text.encode("utf-8")


def _create_key_file(path: Path) -> None:
    """Write a random key to *path*, 0600, atomically; a key another process wrote wins."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            out.write(secrets.token_hex(32) + "\n")
            out.flush()
            os.fsync(out.fileno())
        try:
            os.link(tmp, path)  # never replaces a key that exists
            LOGGER.warning("created the audit key file %s; back it up apart from the store", path)
        except FileExistsError:
            pass
    finally:
        tmp.unlink(missing_ok=True)


def key_id(key: bytes) -> str:
    """Return a short public name of *key*, to tell "another key" from "changed rows"."""
    return hmac.new(key, _KEY_ID_LABEL, hashlib.sha256).hexdigest()[:16]


def mac(key: bytes, label: str, payload: Any) -> str:
    """Return HMAC-SHA256 of *payload*'s canonical JSON under *key*, separated by *label*."""
    text = json.dumps(payload, sort_keys=True, ensure_ascii=False, default=str)
    return hmac.new(key, (label + "\n" + text).encode("utf-8"), hashlib.sha256).hexdigest()


# -- one row --------------------------------------------------------------------------------------


# one encoder for every row: json.dumps with options builds a new one per call
_ENCODE = json.JSONEncoder(sort_keys=True, ensure_ascii=False, default=str).encode


def canonical(row: dict[str, Any], fields: Sequence[str] = ROW_FIELDS) -> str:
    """Return the canonical JSON of a chained row's content (the same for both stores).

    *fields* are the row's hashed columns: the audit log's by default; another chained table
    (the points ledger, :mod:`twin.points`) names its own. Whole numbers are hashed as numbers
    whatever integer type a store returned them as.
    """
    values = {k: row.get(k) for k in fields}
    if isinstance(values.get("at"), (datetime, pd.Timestamp)):
        values["at"] = pd.Timestamp(values["at"]).tz_convert("UTC").isoformat()
    if isinstance(values.get("detail"), str):
        values["detail"] = json.loads(values["detail"])
    for name, value in values.items():
        if isinstance(value, numbers.Integral) and not isinstance(value, bool):
            values[name] = int(value)
    return _ENCODE(values)


def row_hash(prev_hash: str, row: dict[str, Any], key: bytes | None = None,
             fields: Sequence[str] = ROW_FIELDS) -> str:
    """Return the keyed hash of a chained row: HMAC-SHA256 over *prev_hash* and the row."""
    message = (prev_hash + "\n" + canonical(row, fields)).encode("utf-8")
    return hmac.new(key or audit_key(), message, hashlib.sha256).hexdigest()


def legacy_hash(prev_hash: str, row: dict[str, Any]) -> str:
    """Return the unkeyed sha256 of a row as written before the chain was keyed."""
    return hashlib.sha256((prev_hash + "\n" + canonical(row)).encode("utf-8")).hexdigest()


# -- a run of rows ------------------------------------------------------------------------------


@dataclass(frozen=True)
class ChainCheck:
    """The result of checking the audit chain (of a store or of an exported file).

    *reason* is one of ``intact``, ``changed`` (a row's content or link does not match its
    hash), ``missing`` (rows absent from the middle or start), ``truncated`` (the log ends
    before its anchored head: rows cut off, the table emptied or dropped), ``anchor`` (the
    anchored head itself was altered or made with another key), ``export`` (an exported
    file's signed head is missing or does not match its rows) and ``earlier`` (an earlier
    check failed and no full check has passed since).
    """

    ok: bool
    rows: int
    first_bad_seq: int | None = None
    message: str = ""
    reason: str = "intact"
    rows_read: int = 0
    legacy_rows: int = 0
    anchored_seq: int | None = None
    incremental: bool = False


@dataclass(frozen=True)
class Run:
    """What :func:`check_run` found: the first bad row, or where the checked run ends."""

    bad_seq: int | None
    reason: str
    message: str
    last_seq: int
    last_hash: str
    keyed: bool
    legacy_rows: int
    hashes: dict[int, str]


def columns_of(frame: pd.DataFrame, fields: Sequence[str] = ROW_FIELDS) -> Iterable[tuple]:
    """Yield (seq, content row, prev_hash, hash) from a chained frame, without pandas per row.

    *fields* (the audit log's by default) must begin with ``seq`` and contain ``at``.
    """
    names = [*fields, "prev_hash", "hash"]
    arrays = [frame[n].tolist() for n in names]
    at = frame["at"]
    if isinstance(at.dtype, pd.DatetimeTZDtype):  # formatted once here, not per row below
        arrays[names.index("at")] = [None if pd.isna(t) else t.isoformat()
                                     for t in at.dt.tz_convert("UTC")]
    n = len(fields)
    for values in zip(*arrays, strict=True):
        row = dict(zip(fields, values[:n], strict=True))
        yield int(values[0]), row, values[n], values[n + 1]


def check_run(
    rows: Iterable[tuple],
    key: bytes,
    *,
    prev_seq: int = 0,
    prev_hash: str = GENESIS_HASH,
    keyed: bool = False,
    linked: bool = True,
    watch: Sequence[int] = (),
    fields: Sequence[str] = ROW_FIELDS,
) -> Run:
    """Check rows (from :func:`columns_of`) continuing a chain that ended at *prev_seq*.

    Every row must follow the one before (seq + 1, its ``prev_hash`` equal to that row's
    hash) unless *linked* is False (a filtered export: each row checked on its own), and
    carry the HMAC of its content. Plain sha256 rows (written before the chain was keyed)
    pass only before the first keyed row (*keyed*: one was seen before this run). The
    hashes of the rows in *watch* are returned, to compare with an anchored head. *fields*
    are the hashed columns of another chained table (no plain sha256 rows there).
    """
    legacy_ok = tuple(fields) == ROW_FIELDS
    legacy = 0
    hashes: dict[int, str] = {}
    watched = set(watch)
    expected = prev_seq + 1
    for seq, row, stored_prev, stored in rows:
        if linked and seq != expected:
            if seq > expected:
                span = f"row {expected}" if seq == expected + 1 else f"rows {expected}–{seq - 1}"
                return Run(expected, "missing", f"{span} missing: deleted from the log",
                           prev_seq, prev_hash, keyed, legacy, hashes)
            return Run(seq, "changed", f"row {seq} out of order (expected {expected})",
                       prev_seq, prev_hash, keyed, legacy, hashes)
        if linked and stored_prev != prev_hash:
            return Run(seq, "changed",
                       f"row {seq} does not follow row {seq - 1}: one of them was changed "
                       "or replaced", prev_seq, prev_hash, keyed, legacy, hashes)
        if hmac.compare_digest(row_hash(stored_prev, row, key, fields), str(stored)):
            keyed = True
        elif legacy_ok and not keyed and hmac.compare_digest(legacy_hash(stored_prev, row),
                                                             str(stored)):
            legacy += 1
        else:
            return Run(seq, "changed",
                       f"row {seq} does not match its hash: it was changed (or the key "
                       "differs from the one that wrote it)", prev_seq, prev_hash, keyed,
                       legacy, hashes)
        if seq in watched:
            hashes[seq] = str(stored)
        prev_seq, prev_hash, expected = seq, str(stored), seq + 1
    return Run(None, "intact", "", prev_seq, prev_hash, keyed, legacy, hashes)
