"""A bounded on-disk buffer of raw batches, kept while the store is unavailable."""

from __future__ import annotations

import base64
import json
import logging
import os
from pathlib import Path

import pandas as pd

from twin.feeds.models import Message

LOGGER = logging.getLogger(__name__)


class DiskBuffer:
    """Batches of raw messages, one fsynced file each, replayed oldest first.

    A message written here is as safe as a stored one, so the pipeline acknowledges it; when
    the buffer holds *max_bytes* the pipeline stops acknowledging and the broker keeps the rest.

    Parameters
    ----------
    folder
        Where the batch files go (created if missing); survives a restart of the process.
    max_bytes
        The bound.
    """

    def __init__(self, folder: str | Path, max_bytes: int = 256 * 2**20) -> None:
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.max_bytes = max_bytes

    def files(self) -> list[Path]:
        return sorted(self.folder.glob("batch-*.jsonl"))

    def __len__(self) -> int:
        return len(self.files())

    @property
    def size(self) -> int:
        return sum(p.stat().st_size for p in self.files())

    def has_room(self, messages: list[Message]) -> bool:
        return self.size + sum(len(m.payload) * 2 + 120 for m in messages) <= self.max_bytes

    def push(self, messages: list[Message]) -> Path:
        """Write a batch durably (write, fsync, rename) and return its file."""
        files = self.files()
        number = int(files[-1].stem.split("-")[1]) + 1 if files else 1
        path = self.folder / f"batch-{number:09d}.jsonl"
        tmp = path.with_suffix(".tmp")
        with open(tmp, "w", encoding="utf-8") as f:
            for m in messages:
                f.write(json.dumps({"topic": m.topic, "received_at": m.received_at.isoformat(),
                                    "payload": base64.b64encode(m.payload).decode()}) + "\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        LOGGER.info("store unavailable: %d messages buffered in %s", len(messages), path.name)
        return path

    def oldest(self) -> tuple[Path, list[Message]] | None:
        files = self.files()
        if not files:
            return None
        lines = files[0].read_text("utf-8").splitlines()
        return files[0], [
            Message(r["topic"], base64.b64decode(r["payload"]), pd.Timestamp(r["received_at"]))
            for r in map(json.loads, lines)
        ]

    def drop(self, path: Path) -> None:
        path.unlink(missing_ok=True)
