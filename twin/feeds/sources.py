"""Where messages come from, behind one interface: MQTT, JSONL replay and the simulator."""

from __future__ import annotations

import abc
import json
import logging
import queue
import threading
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd

from twin.errors import ConfigError
from twin.feeds.models import Message
from twin.feeds.transport import MqttSecurity, broker_address, connect, mqtt_client, refused

LOGGER = logging.getLogger(__name__)


def utcnow() -> pd.Timestamp:
    return pd.Timestamp.now(tz="UTC")


class Source(abc.ABC):
    """A stream of messages; each is acknowledged only once its batch is safely stored."""

    name: str = "source"

    @abc.abstractmethod
    def fetch(self, max_items: int, timeout: float) -> list[Message]:
        """Up to *max_items* messages, waiting at most *timeout* seconds for the first."""

    def ack(self, messages: list[Message]) -> None:  # noqa: B027 (optional hook)
        """Tell the source these messages are stored (MQTT: PUBACK); default nothing."""

    def now(self) -> pd.Timestamp:
        """Return the source's clock: wall time, or the replayed time."""
        return utcnow()

    @property
    def exhausted(self) -> bool:
        """True when no message will ever come again (a replay at its end)."""
        return False

    def close(self) -> None:  # noqa: B027 (optional hook)
        """Release connections."""


class ReplaySource(Source):
    """Replay a recorded JSONL feed: one ``{"t": seconds, "topic": …, "payload": …}`` a line.

    Parameters
    ----------
    path
        The recording (see ``tests/data/feeds/record.py``).
    speed
        1.0 replays in real time, 10.0 ten times faster, None as fast as possible.
    """

    def __init__(self, path: str | Path, speed: float | None = None) -> None:
        self.name = f"replay:{Path(path).name}"
        self.records = [json.loads(line) for line in Path(path).read_text("utf-8").splitlines()
                        if line.strip()]
        self.speed = speed
        self.position = 0
        self.acked = 0
        self._started = time.monotonic()
        self._now: pd.Timestamp | None = None

    def fetch(self, max_items: int, timeout: float) -> list[Message]:
        out = []
        while self.position < len(self.records) and len(out) < max_items:
            rec = self.records[self.position]
            if self.speed:
                wait = rec.get("t", 0) / self.speed - (time.monotonic() - self._started)
                if wait > 0:
                    if out:
                        break
                    time.sleep(min(wait, timeout))
                    if wait > timeout:
                        break
            payload = rec["payload"]
            raw = payload.encode("utf-8") if isinstance(payload, str) else json.dumps(
                payload, ensure_ascii=False).encode("utf-8")
            out.append(Message(rec["topic"], raw, utcnow(), token=self.position))
            self.position += 1
        return out

    def ack(self, messages: list[Message]) -> None:
        self.acked += len(messages)

    @property
    def exhausted(self) -> bool:
        return self.position >= len(self.records)


class SimulatorSource(Source):
    """The in-process simulator as a source: messages become due on the wall clock.

    Parameters
    ----------
    simulator
        A :class:`twin.feeds.simulator.Simulator`.
    start
        Simulated time of the first message (default now); *backfill* seconds before start are
        sent at once so that the cockpit shows a recent history.
    """

    def __init__(self, simulator, *, start: pd.Timestamp | None = None,
                 backfill: float = 0.0) -> None:
        self.name = "simulator"
        self.simulator = simulator
        self._cursor = (start or utcnow()).floor("s") - pd.Timedelta(seconds=backfill)
        self._pending: list[Message] = []

    def fetch(self, max_items: int, timeout: float) -> list[Message]:
        deadline = time.monotonic() + timeout
        while not self._pending:
            now = utcnow().floor("s")
            if now > self._cursor:
                self._pending = self.simulator.messages(self._cursor, now)
                self._cursor = now
            if self._pending or time.monotonic() >= deadline:
                break
            time.sleep(min(0.2, max(0.0, deadline - time.monotonic())))
        out, self._pending = self._pending[:max_items], self._pending[max_items:]
        return out


class MqttSource(Source):
    """Subscribe with QoS 1 in a persistent MQTT v5 session; PUBACK only after the commit.

    paho-mqtt 2 with ``manual_ack=True``: a message the process received but did not store is
    redelivered by the broker after a crash or reconnect (the session outlives the
    connection: stable client id, ``clean_start=False``, a long session expiry).

    Parameters
    ----------
    url
        ``mqtt://host:port``, or ``mqtts://host:8883`` for TLS.
    topics
        Topic filters; a shared subscription ``$share/<group>/<filter>`` spreads messages over
        the workers of a group.
    client_id
        Stable id of this worker (its session); default one derived from the host and topics.
    receive_maximum
        How many unacknowledged messages the broker may send this client at once.
    linger_s
        How long a batch waits for more messages after its first one (a few tens of
        milliseconds: fewer, larger commits at a small cost in latency).
    max_bytes
        Payload bytes after which a batch closes (about 20,000 observations in gateway
        messages): bounds a transaction's size and what a crash makes the broker redeliver.
    security
        TLS and login (:class:`twin.feeds.transport.MqttSecurity`; default from the settings).

    Raises
    ------
    ConfigError
        If the URL is not an MQTT one, TLS with the broker fails (an untrusted certificate)
        or the broker refuses the login; an unreachable broker is retried instead.
    """

    #: Why the broker refused this client (a login it rejects): fetch raises it.
    refusal: ConfigError | None = None

    def __init__(self, url: str, topics: list[str], *, client_id: str | None = None,
                 session_expiry_s: int = 7 * 86400, receive_maximum: int = 20_000,
                 keepalive: int = 30, linger_s: float = 0.02,
                 max_bytes: int = 2 * 2**20, security: MqttSecurity | None = None) -> None:
        from paho.mqtt.packettypes import PacketTypes
        from paho.mqtt.properties import Properties

        host, port = broker_address(url)
        self.name = url
        self.topics = list(topics)
        stable = uuid.uuid5(uuid.NAMESPACE_URL, url + "|".join(topics)).hex[:12]
        self.client_id = client_id or f"gridtwin-ingest-{stable}"
        self.linger_s = linger_s
        self.max_bytes = max_bytes
        self._queue: queue.SimpleQueue[Message] = queue.SimpleQueue()
        self._generation = 0
        self._lock = threading.Lock()
        self.connected = threading.Event()
        self.subscribed = threading.Event()
        self.client = mqtt_client(url, client_id=self.client_id, security=security,
                                  manual_ack=True)
        self.client.reconnect_delay_set(min_delay=0.2, max_delay=2)
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = self._on_disconnect
        self.client.on_message = self._on_message
        self.client.on_subscribe = lambda *args: self.subscribed.set()
        props = Properties(PacketTypes.CONNECT)
        props.SessionExpiryInterval = session_expiry_s
        props.ReceiveMaximum = receive_maximum
        try:  # at once: a certificate or a login the broker refuses is said now, in one line
            connect(self.client, url, keepalive=keepalive, clean_start=False, properties=props)
        except ConfigError:
            self.client.loop_stop()
            raise
        except OSError as exc:  # not reachable yet: keep trying in the background
            LOGGER.warning("MQTT broker %s:%d not reachable (%s); retrying", host, port, exc)
            self.client.connect_async(host, port, keepalive=keepalive, clean_start=False,
                                      properties=props)
            self.client.loop_start()

    def _on_connect(self, client, userdata, flags, reason, properties) -> None:
        if reason.is_failure:
            LOGGER.error("MQTT connect to %s refused: %s", self.name, reason)
            self.refusal = refused(self.name, reason)
            client.disconnect()  # retrying a refused login forever helps nobody
            return
        with self._lock:
            self._generation += 1
        client.subscribe([(t, 1) for t in self.topics])
        LOGGER.info("MQTT %s connected as %s (session present: %s)", self.name,
                    self.client_id, flags.session_present)
        self.connected.set()

    def _on_disconnect(self, client, userdata, flags, reason, properties) -> None:
        self.connected.clear()
        if self.refusal is not None:
            return  # refused: not reconnecting (fetch raises the refusal)
        LOGGER.warning("MQTT %s disconnected (%s); reconnecting", self.name, reason)

    def _on_message(self, client, userdata, msg) -> None:
        # paho's network thread: enqueue only (a datetime is ten times cheaper than a Timestamp);
        # an exception here would end that thread, and with it this worker's deliveries
        try:
            topic = msg.topic
        except UnicodeDecodeError:  # brokers refuse topics that are not UTF-8; in case one did not
            topic = bytes(msg._topic).decode("utf-8", "backslashreplace")
        self._queue.put(Message(topic, msg.payload, datetime.now(UTC),
                                token=(self._generation, msg.mid, msg.qos)))

    def fetch(self, max_items: int, timeout: float) -> list[Message]:
        """Up to *max_items* messages: what is queued, then more until ``linger_s`` has passed.

        A batch closes at *max_items*, at ``max_bytes`` of payload (gateways pack many
        observations in one message) or ``linger_s`` after its first message, whichever comes
        first; under load the queue alone fills it.
        """
        get = self._queue.get
        try:
            out = [get(timeout=timeout)]
        except queue.Empty:
            if self.refusal is not None:
                raise self.refusal from None
            return []
        size = len(out[0].payload)
        deadline = time.monotonic() + self.linger_s
        while len(out) < max_items and size < self.max_bytes:
            try:
                out.append(get(block=False))
            except queue.Empty:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                try:
                    out.append(get(timeout=left))
                except queue.Empty:
                    break
            size += len(out[-1].payload)
        return out

    def ack(self, messages: list[Message]) -> None:
        # a message of an earlier connection is redelivered by the broker: acknowledging its
        # old packet id on the new connection could acknowledge another message
        with self._lock:
            current = self._generation
        for m in messages:
            generation, mid, qos = m.token
            if qos and generation == current:
                self.client.ack(mid, qos)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def open_source(url: str, *, topics: list[str] | None = None, client_id: str | None = None,
                speed: float | None = None, **options) -> Source:
    """Open a source by URL: ``mqtt://host:port``, ``mqtts://host:port`` or a ``.jsonl`` path.

    Raises
    ------
    ConfigError
        If the URL is neither.
    """
    if url.startswith(("mqtt://", "tcp://", "mqtts://", "ssl://")):
        return MqttSource(url, topics or ["gridtwin/+/obs", "gridtwin/+/camera",
                                          "gridtwin/+/reports"], client_id=client_id, **options)
    if url.endswith(".jsonl") or url.startswith("replay:"):
        return ReplaySource(url.removeprefix("replay:"), speed=speed)
    raise ConfigError(f"unknown feed source {url!r}; use mqtt://host:port or a .jsonl recording")
