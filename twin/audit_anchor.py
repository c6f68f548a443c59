"""The anchored head of each store's audit log: one HMAC-signed file per store, outside it.

The file records the last row known to be committed (its seq and hash), the last row a
check verified (the checkpoint incremental checks start from) and the first failure found.
It lives in ``TWIN_AUDIT_DIR`` (see :func:`twin.auditchain.audit_dir`), where the store's
database role cannot reach, and is signed with the audit key, so that cutting rows off the
log's end, emptying the table or dropping it is detected: the log no longer reaches its head.
Updates are serialised by a lock file and only ever move the head forward.
:func:`verify_chain` checks a store's chain (:mod:`twin.auditchain`) against its head.
"""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import json
import logging
import os
import re
import secrets
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from twin.auditchain import (
    GENESIS_HASH,
    ChainCheck,
    Run,
    audit_dir,
    audit_key,
    check_run,
    columns_of,
    key_id,
    mac,
)

try:  # POSIX; elsewhere concurrent writers of one head file are not serialised
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

LOGGER = logging.getLogger(__name__)

_LABEL = "gridtwin audit anchor"


@dataclass(frozen=True)
class Head:
    """The last committed row: its seq, hash and when it was anchored."""

    seq: int
    hash: str
    at: str = ""


@dataclass(frozen=True)
class Checkpoint:
    """The last row a check verified, and what the chain was like up to it."""

    seq: int
    hash: str
    keyed: bool
    legacy_rows: int = 0
    at: str = ""


@dataclass(frozen=True)
class AnchorState:
    """A store's anchor file as read: *valid* is False when it is unreadable or forged."""

    path: Path
    valid: bool = True
    head: Head | None = None
    checkpoint: Checkpoint | None = None
    broken: dict[str, Any] | None = None
    problem: str = ""


def identity(store: Any) -> str:
    """Name a store independently of the login used: its file, or its server, db and schema."""
    path = getattr(store, "path", None)
    if path is not None:
        return f"gpkg:{Path(path).resolve()}"
    parts = urlsplit(str(store.url))
    schema = getattr(store, "schema", None) or "public"
    return f"postgresql://{parts.hostname}:{parts.port or 5432}{parts.path}#{schema}"


def identity_of(store: Any) -> str:
    """Return :func:`identity` of a store, or of the embedded store at a path."""
    if isinstance(store, (str, Path)):
        return f"gpkg:{Path(store).resolve()}"
    return identity(store)


def anchor_path(store: Any) -> Path:
    """Return the anchor file of *store* (or of the embedded store at a path)."""
    name = identity_of(store)
    slug = re.sub(r"[^A-Za-z0-9]+", "-", name.rsplit("/", 1)[-1])[-40:].strip("-")
    digest = hashlib.sha256(name.encode("utf-8")).hexdigest()[:16]
    return audit_dir() / "anchors" / f"{slug}-{digest}.json"


def load(store: Any, key: bytes | None = None) -> AnchorState:
    """Read and check the anchor file of *store* (an absent file: a valid, empty state)."""
    path = anchor_path(store)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return AnchorState(path)
    key = key or audit_key()
    try:
        data = json.loads(text)
        signature = data.pop("mac")
    except (ValueError, KeyError, AttributeError):
        return AnchorState(path, False, problem="it is not a signed anchor file")
    if mac(key, _LABEL, data) != signature:
        theirs = data.get("key_id")
        why = ("it was written with another audit key"
               if theirs and theirs != key_id(key) else "it was altered")
        head = data.get("head")
        return AnchorState(path, False, Head(**head) if isinstance(head, dict) else None,
                           problem=f"its signature does not match: {why}")
    return AnchorState(
        path,
        True,
        Head(**data["head"]) if data.get("head") else None,
        Checkpoint(**data["checkpoint"]) if data.get("checkpoint") else None,
        data.get("broken"),
    )


def advance(
    store: Any,
    *,
    head: tuple[int, str] | None = None,
    checkpoint: tuple[int, str, bool, int] | None = None,
    broken: dict[str, Any] | None = None,
    clear_broken: bool = False,
) -> None:
    """Move the anchored head and checkpoint forward, record or clear a failure.

    Never moves either back (another process may have anchored a later row meanwhile) and
    never overwrites an anchor file that is not valid: that stays as evidence.
    """
    key = audit_key()
    now = datetime.now(UTC).isoformat()
    with _locked(anchor_path(store)) as path:
        state = load(store, key)
        if not state.valid:
            LOGGER.error("audit anchor %s is not valid (%s); left as it is", path, state.problem)
            return
        new_head, new_point, new_broken = state.head, state.checkpoint, state.broken
        if head is not None and (new_head is None or head[0] > new_head.seq):
            new_head = Head(int(head[0]), str(head[1]), now)
        if checkpoint is not None and (new_point is None or checkpoint[0] >= new_point.seq):
            new_point = Checkpoint(int(checkpoint[0]), str(checkpoint[1]), bool(checkpoint[2]),
                                   int(checkpoint[3]), now)
        if clear_broken:
            new_broken = None
        if broken is not None and (new_broken is None or broken["seq"] < new_broken["seq"]):
            new_broken = {**broken, "at": now}
        if (new_head, new_point, new_broken) == (state.head, state.checkpoint, state.broken):
            return
        _write(path, key, identity_of(store), new_head, new_point, new_broken)


def _write(
    path: Path,
    key: bytes,
    name: str,
    head: Head | None,
    point: Checkpoint | None,
    broken: dict[str, Any] | None,
) -> None:
    data = {
        "version": 1,
        "store": name,
        "key_id": key_id(key),
        "head": asdict(head) if head else None,
        "checkpoint": asdict(point) if point else None,
        "broken": broken,
    }
    data["mac"] = mac(key, _LABEL, data)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
    try:
        with open(tmp, "w", encoding="utf-8") as out:
            json.dump(data, out, ensure_ascii=False, indent=1)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, path)  # readers see the old file or the new one, never half of one
    finally:
        tmp.unlink(missing_ok=True)


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[Path]:
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    with open(path.with_name(path.name + ".lock"), "a") as lock:
        if fcntl is not None:
            fcntl.flock(lock.fileno(), fcntl.LOCK_EX)
        try:
            yield path
        finally:
            if fcntl is not None:
                fcntl.flock(lock.fileno(), fcntl.LOCK_UN)


def move(old: str | Path, new: str | Path) -> None:
    """Carry an embedded store's anchor along when its file is moved into place (make_demo).

    The anchor of *new*'s previous file, if any, is set aside as ``*.replaced-<time>.json``.
    """
    source, target = anchor_path(Path(old)), anchor_path(Path(new))
    with _locked(target):
        if target.exists():
            stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S")
            target.replace(target.with_name(f"{target.stem}.replaced-{stamp}.json"))
        if not source.exists():
            return
        state = load(Path(old))
        if state.valid:
            _write(target, audit_key(), identity_of(Path(new)), state.head, state.checkpoint,
                   state.broken)
        source.unlink()
        source.with_name(source.name + ".lock").unlink(missing_ok=True)


def reset(store: Any, actor: str, origin: str = "") -> dict[str, Any]:
    """Set a store's anchor aside after a deliberate replacement (a restored backup); audited.

    The old file is kept as ``*.reset-<time>.json``; an ``audit.anchor_reset`` row records
    the head it held, and becomes the new anchored head. Use it only when the log was
    replaced on purpose: it accepts the log as it now is.
    """
    path = anchor_path(store)
    state = load(store)
    with _locked(path):
        if path.exists():
            stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S")
            path.replace(path.with_name(f"{path.stem}.reset-{stamp}.json"))
    detail = {"previous_head": asdict(state.head) if state.head else None,
              "previous_valid": state.valid, "problem": state.problem}
    return store.append_audit(actor, "audit.anchor_reset", "audit", detail, origin)


# -- the chain of a store against its head ---------------------------------------------------


def next_link(store: Any, last: tuple[int, str] | None) -> tuple[int, str]:
    """Return (seq, prev_hash) of the next row, given the store's last (seq, hash) or None.

    The next seq follows the larger of the stored and the anchored head, so a seq is never
    used twice even after rows were deleted; when the anchored head is ahead of the store
    (or differs from the stored row at its seq) the new row links to the anchored hash, so
    the gap or change stays visible in the chain for good.
    """
    state = load(store)
    head = state.head if state.valid else None
    if head is not None and (last is None or head.seq >= int(last[0])):
        return head.seq + 1, head.hash
    if last is None:
        return 1, GENESIS_HASH
    return int(last[0]) + 1, str(last[1])


def anchor_row(store: Any, row: dict[str, Any]) -> None:
    """Record a committed row as the store's anchored head (call after its commit)."""
    advance(store, head=(int(row["seq"]), str(row["hash"])))


def verify_chain(store: Any, *, incremental: bool = False) -> ChainCheck:
    """Check a store's audit chain and its anchored head; record the result.

    A full check reads every row. An incremental check (the audit page on each visit)
    reads only the rows from the last verified checkpoint on, plus the anchored head: it
    proves that the checkpoint row is unchanged, every row since is linked and keyed, and
    the log still reaches its anchored head — not that rows before the checkpoint are
    unchanged (a full check does; an earlier failure is reported until one passes).
    Without a checkpoint it is a full check.
    """
    key = audit_key()
    state = load(store)  # before the rows: every row it anchors is committed
    if not state.valid:
        check = ChainCheck(False, 0, state.head.seq if state.head else 1,
                           f"the anchored head {state.path} is not valid: {state.problem}",
                           "anchor", incremental=incremental)
        return check
    point = state.checkpoint if incremental else None
    if point is not None and state.head is not None and state.head.seq < point.seq:
        point = None  # an anchor older than the checkpoint: start where both agree
    since = point.seq if point is not None else None
    frame = store.read_audit(since=since) if since is not None else store.read_audit()
    rows = columns_of(frame)
    watch = [state.head.seq] if state.head is not None else []
    legacy_before, read = 0, len(frame)
    if point is not None:
        first = next(rows, None)
        if first is None or first[0] != point.seq or str(first[3]) != point.hash:
            # the last verified row is gone or changed: only a full check says what happened
            point, frame = None, store.read_audit()
            rows, read = columns_of(frame), read + len(frame)
    if point is None:
        run = check_run(rows, key, watch=watch)
    else:  # the checkpoint row's content is checked against its hash again, then the rest
        run = check_run(itertools.chain([first], rows), key, prev_seq=point.seq - 1,
                        prev_hash=first[2], keyed=point.keyed, watch=watch)
        legacy_before = point.legacy_rows - (0 if point.keyed else 1)
    run = _against_head(run, state.head)
    anchored = state.head.seq if state.head else None
    if run.bad_seq is not None:
        advance(store, broken={"seq": run.bad_seq, "reason": run.reason,
                                            "message": run.message})
        return ChainCheck(False, run.last_seq, run.bad_seq, run.message, run.reason,
                          read, run.legacy_rows, anchored, point is not None)
    if point is not None and state.broken:
        seq = int(state.broken["seq"])
        return ChainCheck(False, run.last_seq, seq,
                          f"an earlier check failed: {state.broken['message']}; run the full "
                          "check once the log is restored", "earlier", read,
                          run.legacy_rows, anchored, True)
    legacy = run.legacy_rows + legacy_before
    if run.last_seq:
        advance(store, head=(run.last_seq, run.last_hash),
                             checkpoint=(run.last_seq, run.last_hash, run.keyed, legacy),
                             clear_broken=point is None)
    what = f"intact: {run.last_seq} rows"
    if legacy:
        what += f" ({legacy} written before the chain was keyed)"
    if anchored is None:
        what += "; no anchored head on this machine yet (anchored now)"
    return ChainCheck(True, run.last_seq, None, what, "intact", read, legacy,
                      anchored, point is not None)


def _against_head(run: Run, head: Any) -> Run:
    """Fail an intact run that stops short of, or disagrees with, the anchored head."""
    if run.bad_seq is not None or head is None:
        return run
    if run.last_seq < head.seq:
        first = run.last_seq + 1
        span = f"row {first}" if first == head.seq else f"rows {first}–{head.seq}"
        return Run(first, "truncated",
                   f"the log ends at row {run.last_seq} but its head was anchored at row "
                   f"{head.seq} ({head.at}): {span} cut off, or the table emptied or dropped",
                   run.last_seq, run.last_hash, run.keyed, run.legacy_rows, run.hashes)
    seen = run.hashes.get(head.seq)
    if seen is not None and seen != head.hash:
        return Run(head.seq, "changed",
                   f"row {head.seq} differs from the anchored head: it was replaced",
                   run.last_seq, run.last_hash, run.keyed, run.legacy_rows, run.hashes)
    return run
