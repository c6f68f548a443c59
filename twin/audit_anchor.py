"""The anchored head of each store's audit log: one HMAC-signed file per store, outside it.

The file records the last row known to be committed (its seq and hash), the last row a
check verified (the checkpoint incremental checks start from) and the first failure found.
It lives in ``TWIN_AUDIT_DIR`` (see :func:`twin.auditchain.audit_dir`), where the store's
database role cannot reach, and is signed with the audit key, so that cutting rows off the
log's end, emptying the table or dropping it is detected: the log no longer reaches its head.
Updates are serialised by a lock file and only ever move the head forward.
"""

from __future__ import annotations

import contextlib
import hashlib
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

from twin.auditchain import audit_dir, audit_key, key_id, mac

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
