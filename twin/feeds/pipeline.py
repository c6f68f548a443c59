"""The ingest pipeline: decode → validate → dedupe → enrich → write → state → rules → ack."""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from twin import settings
from twin.feeds.buffer import DiskBuffer
from twin.feeds.models import LIMITS, Decoded, Limits, Message, Registry, _dead, decode_batch
from twin.feeds.sources import Source
from twin.feeds.state import LiveState
from twin.schema import DEAD_LETTERS

LOGGER = logging.getLogger(__name__)

#: A batch of at least this many messages that the store refuses one by one, every one, is a
#: fault of the store, raised, not that many poison messages dead-lettered.
SYSTEMATIC = 16
#: Ids remembered to absorb redeliveries before they reach the store (between half and all
#: of this many: the most recent ones).
SEEN_IDS = 200_000


def refused_values(exc: BaseException) -> bool:
    """Return True if *exc* is a store refusing the values it was given, not a fault.

    Values: a :class:`twin.errors.ValidationError` or any ``ValueError`` (text that does not
    encode, pyarrow's ``ArrowInvalid``), or a PostgreSQL error of class 22 (data exception)
    or 54 (program limit exceeded, e.g. an index row too large). An unavailable store
    (``ConnectionError``) and anything else (a bug, a broken schema) are not.
    """
    if isinstance(exc, ConnectionError):
        return False
    if isinstance(exc, ValueError):
        return True
    state = getattr(exc, "sqlstate", None) or getattr(getattr(exc, "orig", None), "sqlstate", None)
    return isinstance(state, str) and state[:2] in ("22", "54")


def _first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return lines[0][:300] if lines else type(exc).__name__


@dataclass
class Counters:
    """How many messages met each outcome since the pipeline started.

    ``duplicates`` are events whose id was sent again (a redelivery, a publisher's retry, an
    id twice in a batch); ``retried`` are events of this worker's own batches that it wrote
    again after an attempt failed (store unavailable, or buffered on disk) and found already
    stored: the failed attempt had committed before its answer was lost. Neither is stored
    twice.
    """

    received: int = 0
    batches: int = 0
    events: int = 0
    stored: int = 0
    duplicates: int = 0
    retried: int = 0
    dead_letters: int = 0
    buffered: int = 0
    acknowledged: int = 0
    store_failures: int = 0
    alarms_opened: int = 0
    alarms_resolved: int = 0
    reasons: Counter = field(default_factory=Counter)

    def as_dict(self) -> dict:
        out = {k: v for k, v in self.__dict__.items() if k != "reasons"}
        out.update({f"dead_{k}": v for k, v in sorted(self.reasons.items())})
        return out


class _Either:
    """Set when either of two events is: the caller's stop, or run()'s own failure."""

    def __init__(self, first: threading.Event, second: threading.Event,
                 poll_s: float = 0.05) -> None:
        self.first, self.second, self.poll_s = first, second, poll_s

    def is_set(self) -> bool:
        return self.first.is_set() or self.second.is_set()

    def wait(self, timeout: float) -> bool:
        """Wait up to *timeout* seconds for either event; return whether one is set."""
        deadline = time.monotonic() + timeout
        while not self.is_set():
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            self.second.wait(min(left, self.poll_s))
        return True


class Pipeline:
    """Run batches from a source into a store, at least once and without duplicates.

    Parameters
    ----------
    store
        A :class:`twin.store.Store`.
    registry
        Sensors and cameras (default: read from the store's layers).
    rules
        A :class:`twin.feeds.rules.RuleEngine`, or None to skip rules.
    buffer_dir
        Folder of the on-disk buffer used while the store is unavailable (None: no buffer,
        the pipeline waits and retries without acknowledging).
    buffer_bytes
        The buffer's bound.
    retry_s
        Pause between attempts to reach an unavailable store.
    limits
        What a message may hold (:class:`twin.feeds.models.Limits`; default ``LIMITS``).
    """

    def __init__(self, store, registry: Registry | None = None, *, rules=None,
                 buffer_dir: str | Path | None = None, buffer_bytes: int = 256 * 2**20,
                 retry_s: float = 0.5, limits: Limits | None = None) -> None:
        self.store = store
        self.limits = limits
        self.registry = registry or Registry.from_store(store)
        self.rules = rules
        self.state = LiveState(self.registry.sensors)
        self.buffer = DiskBuffer(buffer_dir, buffer_bytes) if buffer_dir else None
        self.retry_s = retry_s
        self.counters = Counters()
        # two generations of stored ids: set operations run in C, a batch at a time
        self._seen: set[str] = set()
        self._seen_before: set[str] = set()
        self._lock = threading.Lock()
        self._partitions_day: pd.Timestamp | None = None

    # -- one batch -------------------------------------------------------------------------------

    def process(self, source: Source, messages: list[Message],
                stop: threading.Event | None = None) -> bool:
        """Store one batch and acknowledge it; returns False if stopped before it was safe."""
        if not messages:
            return True
        return self._commit(source, messages, self._decode(messages), stop)

    def _decode(self, messages: list[Message]) -> Decoded:
        """Decode a batch and have the store encode its events: all the Python work of a batch.

        Only the write is left for :meth:`_commit`, which :meth:`run` overlaps with this for
        the next batch: while the database stores one batch, this thread holds the GIL alone.
        """
        self.counters.received += len(messages)
        self.counters.batches += 1
        decoded = decode_batch(messages, self.registry, self.limits)
        if len(decoded.events):
            try:
                decoded.prepared = self.store.prepare_events(decoded.events)
            except Exception as exc:
                if not refused_values(exc):
                    raise
                decoded.prepared = None  # the commit finds the message the store refuses
        return decoded

    def _commit(self, source: Source, messages: list[Message], decoded: Decoded | None,
                stop: threading.Event | _Either | None) -> bool:
        """Write a decoded batch (or buffer it), then live state and rules, then acknowledge.

        Rules run before the acknowledgement: a worker killed between the two has its batch
        redelivered (to it, or to another worker of the group), whose rules then run on it;
        the database keeps the alarms they open to one per episode. Returns False, without
        acknowledging, if *stop* is set while the store is down and the buffer cannot take the
        batch, or the rules cannot reach the store (the broker redelivers it).
        """
        retry, parts = False, [decoded]
        while True:
            try:
                if self.buffer is not None and len(self.buffer):
                    self._drain()  # older batches first
                if parts is None:  # the store refused the batch whole: write it apart
                    parts = self._write_apart(messages, retry=retry)
                else:
                    self._write(decoded, retry=retry)
                break
            except ConnectionError as exc:  # StoreUnavailableError is one
                retry = True  # the attempt may have committed before its answer was lost
                self.counters.store_failures += 1
                if self.buffer is not None and self.buffer.has_room(messages):
                    self.buffer.push(messages)
                    self.counters.buffered += len(messages)
                    decoded = None
                    break
                LOGGER.warning("store unavailable (%s); retrying in %.1f s", exc, self.retry_s)
                if stop is not None and stop.wait(self.retry_s):
                    return False
                if stop is None:
                    time.sleep(self.retry_s)
            except Exception as exc:
                if not refused_values(exc) or parts is None:
                    raise
                LOGGER.warning("the store refused a batch of %d messages (%s); writing it apart "
                               "to dead-letter the ones it refuses", len(messages),
                               _first_line(exc))
                parts = None
        if decoded is not None:
            now = source.now()
            for part in parts:
                if not self._after_retrying(part, now, stop):
                    return False
        source.ack(messages)
        self.counters.acknowledged += len(messages)
        return True

    def _after_retrying(self, decoded: Decoded, now: pd.Timestamp,
                        stop: threading.Event | _Either | None) -> bool:
        """Run :meth:`_after` until the store answers; False if stopped while it does not."""
        while True:
            try:
                self._after(decoded, now, raise_unavailable=True)
                return True
            except ConnectionError as exc:
                self.counters.store_failures += 1
                LOGGER.warning("rules could not reach the store (%s); retrying in %.1f s",
                               exc, self.retry_s)
                if stop is not None and stop.wait(self.retry_s):
                    return False
                if stop is None:
                    time.sleep(self.retry_s)

    def _write_apart(self, messages: list[Message], *, retry: bool) -> list[Decoded]:
        """Write *messages* in halves until each one the store refuses is alone; dead-letter it.

        The decoder is meant to stop everything a store refuses; this is the second line, so
        that a message it missed costs a few more transactions instead of the worker (which
        would die on it again at every redelivery). Returns the parts that were written.

        Raises
        ------
        Exception
            The store's error, if it refused every message of a batch of at least
            :data:`SYSTEMATIC` messages one by one: that is a fault (a schema that does not
            match, say), not poison, and dead-lettering everything would hide it.
        """
        refused: list[tuple[Message, BaseException]] = []
        parts = self._halves(messages, retry, refused)
        if len(refused) == len(messages) >= SYSTEMATIC:
            raise refused[0][1]
        for message, exc in refused:
            LOGGER.warning("the store refused a message on %s: %s", message.topic,
                           _first_line(exc))
            row = _dead(message, message.payload, "store_rejected",
                        f"the store refused it: {_first_line(exc)}", self.limits or LIMITS)
            self.store.put_rows(DEAD_LETTERS, pd.DataFrame([row]))
            self.counters.dead_letters += 1
            self.counters.reasons["store_rejected"] += 1
        return parts

    def _halves(self, messages: list[Message], retry: bool,
                refused: list[tuple[Message, BaseException]]) -> list[Decoded]:
        decoded = decode_batch(messages, self.registry, self.limits)
        try:
            self._write(decoded, retry=retry)
            return [decoded]
        except ConnectionError:
            raise
        except Exception as exc:
            if not refused_values(exc):
                raise
            if len(messages) == 1:
                refused.append((messages[0], exc))
                return []
        half = len(messages) // 2
        return (self._halves(messages[:half], retry, refused)
                + self._halves(messages[half:], retry, refused))

    def _write(self, decoded: Decoded, *, retry: bool = False) -> None:
        """Store a batch's dead letters and events; count what was new, sent twice or retried.

        *retry*: an earlier attempt at this batch failed, and may have committed all the same;
        ids it finds stored count as ``retried``, not ``duplicates``.
        """
        events = decoded.events
        ids = events["id"].tolist()
        if self._seen.isdisjoint(ids) and self._seen_before.isdisjoint(ids):
            new = events  # the common case, told by two C passes over the ids
            write = decoded.prepared if decoded.prepared is not None else events
        else:
            seen, before = self._seen, self._seen_before
            fresh = np.fromiter((i not in seen and i not in before for i in ids), dtype=bool,
                                count=len(ids))
            new = write = events[fresh]
            ids = new["id"].tolist()
        self.counters.duplicates += len(events) - len(new) + decoded.duplicates
        if len(decoded.dead):
            self.store.put_rows(DEAD_LETTERS, decoded.dead)
        stored = self.store.append_events(write) if len(new) else 0
        self.counters.events += len(events) + decoded.duplicates
        self.counters.stored += stored
        if retry:
            self.counters.retried += len(new) - stored
        else:
            self.counters.duplicates += len(new) - stored
        self.counters.dead_letters += len(decoded.dead)
        self.counters.reasons.update(decoded.dead["reason"].tolist())
        self._seen.update(ids)
        if len(self._seen) > SEEN_IDS // 2:
            self._seen_before, self._seen = self._seen, set()

    def _drain(self) -> None:
        """Store the buffered batches, oldest first; raises while the store is still down."""
        while (item := self.buffer.oldest()) is not None:
            path, messages = item
            # buffered after an attempt that failed
            parts = self._write_apart(messages, retry=True)
            self.buffer.drop(path)
            LOGGER.info("stored %d buffered messages from %s", len(messages), path.name)
            for part in parts:
                self._after(part, pd.Timestamp.now(tz="UTC"))

    def _after(self, decoded: Decoded, now: pd.Timestamp, *,
               raise_unavailable: bool = False) -> None:
        """Live state, then rules; a failure here never loses data (the events are stored).

        The rules see every reading of the batch, not only those newer than this worker's
        live state: they decide from the stored events (:meth:`RuleEngine.evaluate`).
        """
        try:
            self.state.update(decoded.readings)
            if self.rules is not None:
                self.rules.evaluate(decoded.readings, decoded.alerts, now,
                                    self.state.lot_occupancy())
                self._count_alarms()
        except ConnectionError:
            if raise_unavailable:
                raise
            LOGGER.warning("alarms not decided: the store is unavailable")
        except Exception:  # rules are data written by people: log and keep ingesting
            LOGGER.exception("live state or rules failed on a batch")

    def tick(self, now: pd.Timestamp) -> None:
        """Time-driven rules (offline sensors, quiet cameras), buffer draining, partitions."""
        self._partitions_ahead()
        if self.buffer is not None and len(self.buffer):
            try:
                self._drain()
            except ConnectionError:
                pass
        if self.rules is not None:
            try:
                self.rules.tick(now, self.state.started)
                self._count_alarms()
            except ConnectionError:
                LOGGER.warning("alarms not written: the store is unavailable")
            except Exception:  # rules are data written by people: log and keep ingesting
                LOGGER.exception("time-driven rules failed")

    def _partitions_ahead(self) -> None:
        """Once a day (wall clock), make the store's event partitions of the coming months.

        Events of a month without a partition still land (in the DEFAULT one); this keeps
        them from doing so, without waiting for ``gridtwin retention``.
        """
        today = pd.Timestamp.now(tz="UTC").normalize()
        if self._partitions_day == today:
            return
        self._partitions_day = today
        ahead = today + pd.DateOffset(months=int(settings.get("events_partitions_ahead")))
        try:
            made = self.store.ensure_event_partitions(ahead)
        except ConnectionError:
            self._partitions_day = None  # the next tick tries again
            return
        except Exception:  # e.g. a role that may not create tables: events go to DEFAULT
            LOGGER.exception("event partitions not made; events wait in the DEFAULT partition")
            return
        if made:
            LOGGER.info("event partitions made: %s", ", ".join(made))

    def _count_alarms(self) -> None:
        self.counters.alarms_opened = self.rules.opened
        self.counters.alarms_resolved = self.rules.resolved

    # -- the loop --------------------------------------------------------------------------------

    def run(self, source: Source, *, stop: threading.Event | None = None,
            max_batch: int = 5000, max_wait: float = 0.2, tick_s: float = 5.0,
            log_every_s: float = 30.0) -> Counters:
        """Process batches until *stop* is set or the source is exhausted; return the counters.

        Two stages overlap: while one thread commits batch *n* (the database's work, during
        which it holds no GIL), this one fetches and decodes batch *n + 1*. Commits stay one
        at a time and in order, each batch is acknowledged by the committing thread as soon as
        it is stored, and time-driven rules run only between commits.

        An error in either thread ends the run and reaches the caller (this thread's own first,
        with the commit's logged); a commit still retrying a store that is down then gives up
        without acknowledging, so the process can exit and the broker redelivers the batch.
        """
        stop = stop or threading.Event()
        # set when this thread leaves the loop by an exception: a commit retrying against a
        # store that is down must give up then (unacknowledged: the broker redelivers), or
        # waiting for it below would never end
        failed = threading.Event()
        commit_stop = _Either(stop, failed)
        last_tick = last_log = time.monotonic()
        pending: Future | None = None
        with ThreadPoolExecutor(1, thread_name_prefix="feeds-commit") as committer:
            try:
                while not stop.is_set():
                    batch = source.fetch(max_batch, max_wait)
                    decoded = self._decode(batch) if batch else None
                    if pending is not None and (batch or pending.done() or source.exhausted):
                        stored, pending = pending.result(), None
                        if not stored:
                            break
                    if batch:
                        pending = committer.submit(self._commit, source, batch, decoded,
                                                   commit_stop)
                    now = time.monotonic()
                    if now - last_tick >= tick_s:
                        if pending is not None and not pending.result():
                            break
                        pending = None
                        self.tick(source.now())
                        last_tick = now
                    if now - last_log >= log_every_s:
                        LOGGER.info("feeds: %s", self.counters.as_dict())
                        last_log = now
                    if not batch and pending is None and source.exhausted:
                        break
            except BaseException as exc:
                failed.set()
                if pending is not None:
                    pending, last = None, pending
                    try:
                        last.result()
                    except BaseException as also:  # this thread's error is the one raised
                        if also is not exc:  # (exc may be the commit's own, from result())
                            LOGGER.error("the commit in progress failed as well", exc_info=also)
                            exc.add_note(f"the commit in progress failed as well: {also!r}")
                raise
            finally:
                if pending is not None:
                    pending.result()
        if self.buffer is not None and len(self.buffer):
            try:
                self._drain()
            except ConnectionError:
                LOGGER.warning("%d batches stay buffered in %s", len(self.buffer),
                               self.buffer.folder)
        return self.counters
