"""Hostile messages: none stops ingestion, each is a dead letter with its reason, both stores."""

from __future__ import annotations

import base64
import hashlib
import json
import threading
import uuid
from collections import Counter
from dataclasses import dataclass

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.conftest import LAT, LON
from tests.test_feeds_mqtt import broker, start_pipeline, wait_for  # noqa: F401 (fixture)
from tests.test_feeds_pipeline import NOW, FlakyStore, ListSource, feed_layers
from twin.errors import StoreUnavailableError, ValidationError
from twin.feeds.models import LIMITS, Message, Registry, decode_batch, nesting_depth, parse
from twin.feeds.pipeline import Pipeline
from twin.schema import DEAD_LETTERS

T = "2026-03-02T08:00:00+08:00"


@dataclass(frozen=True)
class Hostile:
    """One hostile message, the reason it must be dead-lettered with, and what it may store."""

    name: str
    topic: str
    payload: bytes
    reason: str
    whole: bool = True           # the dead letter is the whole message (else one observation)
    stored: tuple[str, ...] = ()  # good observations sent alongside, stored


def _obs(oid: str, **extra) -> dict:
    return {"id": oid, "sensor_id": "S-AIR1", "observed_at": T, "values": {"pm25": 12.5},
            **extra}


def _j(value) -> bytes:
    return json.dumps(value, ensure_ascii=False).encode("utf-8", "surrogatepass")


def _random_text(n: int, seed: str) -> str:
    """*n* characters that do not compress (PostgreSQL compresses index entries: 2,800 hex
    digits fit its btree, 2,800 base64 characters make "index row size 2816 exceeds")."""
    out, block = b"", seed.encode()
    while len(out) < n:
        block = hashlib.sha256(block).digest()
        out += block
    return base64.b64encode(out).decode()[:n]


def hostile(community: str, tag: str = "h") -> list[Hostile]:
    """The corpus: every attack of issue 22 on the feed, on each topic it applies to."""
    obs, cam, rep = (f"gridtwin/{community}/{k}" for k in ("obs", "camera", "reports"))
    deep = b"[" * 1000 + b"]" * 1000
    vary = sum(tag.encode()) % 5  # messages with no id differ between two corpora
    long_id = _random_text(2800, tag)
    big = "9" * 4301
    report = {"id": f"{tag}-rep", "service_code": "E0101", "description": "垃圾", "lat": LAT,
              "long": LON, "requested_datetime": T}
    camera = {"id": f"{tag}-cam", "camera_id": "C1", "observed_at": T, "kind": "garbage",
              "confidence": 0.9}
    return [
        # 1,000 levels (2 KB): RecursionError in json.loads before
        Hostile("deep_array", obs, deep + b" " * (100 + vary), "too_deep"),
        Hostile("deep_values", obs, _j(_obs(f"{tag}-dv"))[:-1] + b', "x": ' + deep + b"}",
                "too_deep"),
        Hostile("deep_unknown_key", obs, _j(_obs(f"{tag}-dk"))[:-1] + b', "x": '
                + b"[" * 5000 + b"]" * 5000 + b"}", "too_deep"),
        Hostile("deep_camera", cam, _j(camera)[:-1] + b', "snapshot_url": ' + deep + b"}",
                "too_deep"),
        Hostile("deep_report", rep, _j(report)[:-1] + b', "description": ' + deep + b"}",
                "too_deep"),
        # an integer of 4,301 digits: ValueError (int conversion limit) before
        Hostile("big_int", obs, _j(_obs(f"{tag}-bi")).replace(b"12.5", big.encode()),
                "number_too_long"),
        Hostile("big_int_report", rep, _j(report).replace(str(LAT).encode(), big.encode()),
                "number_too_long"),
        # lone surrogates, escaped and as bytes: the store could not encode them before
        Hostile("surrogate_escape", obs, _j(_obs(f"{tag}-se")).replace(
            f"{tag}-se".encode(), f"{tag}-se\\ud800".encode()), "invalid_text", whole=False),
        Hostile("surrogate_bytes", obs, _j(_obs(f"{tag}-sb\ud800")), "invalid_text",
                whole=False),
        Hostile("surrogate_camera", cam, _j({**camera, "id": f"{tag}-cam\udc00"}),
                "invalid_text", whole=False),
        Hostile("surrogate_report", rep, _j({**report, "id": f"{tag}-rs",
                                             "description": "bin \ud83d full"}),
                "invalid_text", whole=False),
        Hostile("surrogate_key", obs, _j({**_obs(f"{tag}-sk"), "values": {"\udc00": 1}}),
                "invalid_text", whole=False),
        # an id of 2,800 characters: index row size on PostGIS before
        Hostile("long_id", obs, _j(_obs(long_id)), "id_too_long", whole=False),
        Hostile("long_id_gateway", obs, _j([_obs(f"{tag}-gw-ok"), _obs(long_id + "g")]),
                "id_too_long", whole=False, stored=(f"{tag}-gw-ok",)),
        Hostile("long_id_camera", cam, _j({**camera, "id": long_id}), "id_too_long",
                whole=False),
        Hostile("long_id_report", rep, _j({**report, "id": long_id}), "id_too_long",
                whole=False),
        # 5 MB: kept whole in the dead letters before
        Hostile("too_large", obs, _j(_obs(f"{tag}-tl", firmware="x" * 5_000_000)),
                "too_large"),
        # values and positions that cannot be
        Hostile("off_the_earth", obs, _j({**_obs(f"{tag}-far"), "sensor_id": "S-P1",
                                          "values": {"occupied": 1}, "lon": 500, "lat": LAT}),
                "out_of_range", whole=False),
        Hostile("parking_pm25", obs, _j({**_obs(f"{tag}-ppm"), "sensor_id": "S-P1"}),
                "undeclared_property", whole=False),
        Hostile("huge_exponent", obs, _j(_obs(f"{tag}-he")).replace(b"12.5", b"1e999999"),
                "non_finite_number", whole=False),
        # not JSON at all
        Hostile("invalid_utf8", obs, b'{"id": "\xff\xfe' + tag.encode() + b'"}',
                "malformed_json"),
        Hostile("empty", obs, b" " * vary, "malformed_json"),
        Hostile("nul_bytes", obs, b"\x00" * (64 + vary), "malformed_json"),
        Hostile("not_closed", rep, b'{"id": "' + b"\\" * (3000 + vary), "malformed_json"),
    ]


def good_messages(community: str, n: int = 1000, tag: str = "g") -> list[tuple[str, bytes]]:
    """*n* good observations: half one a message, half in gateway messages of ten."""
    topic = f"gridtwin/{community}/obs"
    single = [(topic, _j(_obs(f"{tag}-{i:05d}", values={"pm25": float(i % 90)})))
              for i in range(n // 2)]
    rest = [_obs(f"{tag}-{i:05d}", values={"pm10": float(i % 90)}) for i in range(n // 2, n)]
    gateway = [(topic, _j(rest[k:k + 10])) for k in range(0, len(rest), 10)]
    return single + gateway


def check_dead_letters(dead: pd.DataFrame, corpus: list[Hostile]) -> None:
    """Every hostile message is a dead letter with its reason, capped, with size and hash."""
    assert Counter(dead["reason"]) == Counter(h.reason for h in corpus)
    by_hash = dict(zip(dead["payload_sha256"], dead["reason"], strict=True))
    for h in corpus:
        if h.whole:  # the dead letter is the message as sent: its hash and size match
            digest = hashlib.sha256(h.payload).hexdigest()
            assert by_hash.get(digest) == h.reason, h.name
            row = dead[dead["payload_sha256"] == digest].iloc[0]
            assert row["payload_bytes"] == len(h.payload), h.name
        else:  # the dead letter is the observation, as JSON
            body = json.loads(h.payload)
            for obj in body if isinstance(body, list) else [body]:
                if obj["id"] not in h.stored:
                    digest = hashlib.sha256(_j(obj)).hexdigest()
                    assert by_hash.get(digest) == h.reason, h.name
    for row in dead.itertuples():
        assert row.detail, row.reason
        kept = row.payload.encode("utf-8")
        assert len(kept) <= 4 * LIMITS.dead_payload_bytes  # escapes may lengthen 4 KiB
    large = dead[dead["reason"] == "too_large"].iloc[0]
    assert large["payload_bytes"] > 5_000_000 and len(large["payload"]) == 4096


# -- decoding ------------------------------------------------------------------------------------


@pytest.fixture
def registry(grid_cells) -> Registry:
    return Registry.from_layers(feed_layers(grid_cells))


@pytest.mark.parametrize("case", hostile("x"), ids=lambda h: h.name)
def test_each_hostile_message_is_dead_lettered_alone_with_its_reason(case, registry):
    decoded = decode_batch([Message(case.topic, case.payload, NOW)], registry)
    assert decoded.dead["reason"].tolist() == [case.reason]
    assert sorted(decoded.events["id"]) == sorted(case.stored)
    row = decoded.dead.iloc[0]
    for column in ("topic", "detail", "payload"):  # storable by both stores
        row[column].encode("utf-8")
        assert "\x00" not in row[column]


@settings(max_examples=300, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(st.binary(max_size=300) | st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(
        st.sampled_from(["id", "sensor_id", "values", "observed_at", "lon", "lat", "pm25",
                         "camera_id", "kind", "confidence", "service_code", "long"]) | st.text(),
        inner, max_size=6), max_leaves=30).map(
    lambda v: json.dumps(v, ensure_ascii=False).encode("utf-8", "surrogatepass")),
    st.sampled_from(["obs", "camera", "reports"]))
def test_no_payload_makes_decoding_raise(registry, payload, kind):
    decoded = decode_batch([Message(f"gridtwin/x/{kind}", payload, NOW)], registry)
    for column in ("topic", "detail", "payload"):
        for text in decoded.dead[column]:
            text.encode("utf-8")
    assert len(decoded.dead) + len(decoded.events) >= 1 or payload.strip() in (b"[]",)


@pytest.mark.parametrize("payload,depth", [
    (b"[]", 1), (b'{"a": [1, {"b": []}]}', 4), (b'["[[[[", "\\"[[["]', 1),
    (b"[" * 40 + b"]" * 40, 40), (b'{"a": "}}}}"}', 1), (b"", 0), (b"x", 0)])
def test_nesting_is_counted_outside_strings(payload, depth):
    assert nesting_depth(payload) == depth


def test_limits_are_checked_before_json_loads_meets_them():
    limits = LIMITS
    with pytest.raises(ValueError, match="more than the 16 allowed") as caught:
        parse(b"[" * 17 + b"]" * 17)
    assert caught.value.reason == "too_deep"
    assert parse(b"[" * 16 + b"]" * 16) is not None
    assert parse(b"[" + b"9" * limits.max_number_digits + b"]")[0] > 0
    assert parse(b"-" + b"9" * limits.max_number_digits) < 0
    with pytest.raises(ValueError) as caught:
        parse(b"[" + b"9" * (limits.max_number_digits + 1) + b"]")
    assert caught.value.reason == "number_too_long"
    with pytest.raises(ValueError) as caught:
        parse(b" " * (limits.max_message_bytes + 1))
    assert caught.value.reason == "too_large"


def test_values_are_checked_against_what_each_sensor_declares(grid_cells):
    layers = feed_layers(grid_cells)
    sensors = layers["sensors"].copy()
    sensors["properties"] = [json.dumps({"pm25": {"unit": "ug/m3", "max": 500}}), None,
                             json.dumps({"occupied": "0/1"}), None]
    layers["sensors"] = sensors
    registry = Registry.from_layers(layers)
    sent = {
        "ok": ("S-AIR1", {"pm25": 400}), "narrowed": ("S-AIR1", {"pm25": 600}),
        "not-declared": ("S-AIR1", {"pm10": 30}), "battery": ("S-AIR1", {"battery": 0.5}),
        "kind-smoke": ("S-SMK1", {"smoke": 1}), "kind-not": ("S-SMK1", {"noise": 50}),
        "lot": ("S-P2", {"occupied": 1, "battery": 0.9}), "lot-pm": ("S-P1", {"pm25": 10}),
        "unknown": ("S-P2", {"colour": 1}),
    }
    messages = [Message("gridtwin/x/obs", _j({"id": k, "sensor_id": s, "observed_at": T,
                                               "values": v}), NOW) for k, (s, v) in sent.items()]
    messages.append(Message("gridtwin/x/obs", _j([  # a gateway: the fast path, column-wise
        {"id": f"gw-{k}", "sensor_id": s, "observed_at": T, "values": v}
        for k, (s, v) in sent.items()]), NOW))
    decoded = decode_batch(messages, registry)
    reasons = {json.loads(p)["id"]: r for p, r in zip(decoded.dead["payload"],
                                                       decoded.dead["reason"], strict=True)}
    expected = {"narrowed": "out_of_range", "not-declared": "undeclared_property",
                "kind-not": "undeclared_property", "lot-pm": "undeclared_property",
                "unknown": "unknown_property"}
    assert reasons == {**expected, **{f"gw-{k}": r for k, r in expected.items()}}
    good = {"ok", "battery", "kind-smoke", "lot"}
    assert set(decoded.events["id"]) == good | {f"gw-{k}" for k in good}
    detail = decoded.dead.set_index("reason").loc["undeclared_property", "detail"].tolist()
    assert any("'S-P1' reports battery, occupied" in d for d in detail)


# -- a worker fed the corpus, then good messages: both stores -------------------------------------


def test_a_worker_fed_the_hostile_corpus_stores_every_good_message_after_it(store, grid_cells):
    registry = Registry.from_layers(feed_layers(grid_cells))
    corpus = hostile("x")
    good = good_messages("x")
    source = ListSource([(h.topic, h.payload) for h in corpus] + good)
    pipeline = Pipeline(store, registry)
    pipeline.run(source, max_batch=16)
    stored = set(store.read_events()["id"])
    expected = {f"g-{i:05d}" for i in range(1000)} | {i for h in corpus for i in h.stored}
    assert stored == expected
    check_dead_letters(store.read_rows(DEAD_LETTERS), corpus)
    assert source.acked == len(source.messages)  # every message acknowledged, hostile ones too
    assert pipeline.counters.dead_letters == len(corpus)
    # redelivered (a restart before the acknowledgement): nothing raises, nothing twice
    again = Pipeline(store, registry)
    again.run(ListSource([(h.topic, h.payload) for h in corpus]), max_batch=5)
    assert len(store.read_rows(DEAD_LETTERS)) == len(corpus)


class RefusingStore(FlakyStore):
    """A store that refuses (ValidationError) any batch holding an id starting ``refuse``.

    Stands for a value the decoder does not know to stop and the store rejects.
    """

    def append_events(self, events):
        frame = getattr(events, "frame", events)
        if frame["id"].str.startswith("refuse").any():
            raise ValidationError("value refused by the store (test)")
        return self.store.append_events(events)


def test_a_message_the_store_refuses_is_found_dead_lettered_and_the_rest_stored(store, layers_):
    messages = [_obs(f"run-{i}") for i in range(40)]
    messages[13] = _obs("refuse-13")
    messages[31] = _obs("refuse-31")
    source = ListSource(messages)
    pipeline = Pipeline(RefusingStore(store), Registry.from_layers(layers_))
    pipeline.run(source, max_batch=20)
    assert sorted(store.read_events()["id"]) == sorted(
        o["id"] for o in messages if not o["id"].startswith("refuse"))
    dead = store.read_rows(DEAD_LETTERS)
    assert dead["reason"].tolist() == ["store_rejected"] * 2
    assert {json.loads(p)["id"] for p in dead["payload"]} == {"refuse-13", "refuse-31"}
    assert "value refused by the store" in dead["detail"].iloc[0]
    assert source.acked == 40 and pipeline.counters.reasons["store_rejected"] == 2


def test_a_bug_in_the_store_is_not_mistaken_for_a_refused_message(store, layers_):
    class Broken(FlakyStore):
        def append_events(self, events):
            raise RuntimeError("a bug (test)")

    source = ListSource([_obs(f"run-{i}") for i in range(5)])
    with pytest.raises(RuntimeError, match="a bug"):
        Pipeline(Broken(store), Registry.from_layers(layers_)).run(source, max_batch=5)
    assert source.acked == 0 and store.read_rows(DEAD_LETTERS).empty


def test_a_store_that_refuses_every_message_of_a_batch_is_a_fault_not_poison(store, layers_):
    class Refusing(FlakyStore):
        def append_events(self, events):
            raise ValidationError("column payload is missing (test)")

    source = ListSource([_obs(f"run-{i}") for i in range(20)])
    with pytest.raises(ValidationError, match="column payload is missing"):
        Pipeline(Refusing(store), Registry.from_layers(layers_)).run(source, max_batch=20)
    assert source.acked == 0 and store.read_rows(DEAD_LETTERS).empty


@pytest.fixture
def layers_(grid_cells):
    return feed_layers(grid_cells)


# -- counters: duplicates are not retries ---------------------------------------------------------


class LostAnswerStore(FlakyStore):
    """Commits each batch, then (the first *times* calls) loses the answer: unavailable."""

    def __init__(self, store, times: int) -> None:
        super().__init__(store)
        self.times = times

    def append_events(self, events):
        stored = self.store.append_events(events)
        if self.times > 0:
            self.times -= 1
            raise StoreUnavailableError("connection lost after the commit (test)")
        return stored


@pytest.mark.parametrize("buffered", [False, True], ids=["retry", "buffer"])
def test_a_retried_batch_is_not_counted_as_duplicates(store, layers_, tmp_path, buffered):
    lossy = LostAnswerStore(store, times=3)
    pipeline = Pipeline(lossy, Registry.from_layers(layers_), retry_s=0.01,
                        buffer_dir=tmp_path / "buffer" if buffered else None)
    source = ListSource([_obs(f"run-{i}") for i in range(60)])
    pipeline.run(source, max_batch=20, tick_s=0.01)
    assert len(store.read_events()) == 60
    c = pipeline.counters
    # the first batch was committed by the attempt whose answer was lost: found on a retry
    assert (c.stored, c.retried, c.duplicates) == (40, 20, 0)
    # a true redelivery (the same ids from the source again) is a duplicate
    pipeline.run(ListSource([_obs(f"run-{i}") for i in range(10)]), max_batch=20)
    assert pipeline.counters.duplicates == 10 and pipeline.counters.retried == c.retried


# -- the real worker on the real Mosquitto --------------------------------------------------------


@pytest.fixture
def feed_store(store, grid_cells):
    """Each store, holding the feed test layers."""
    for name, frame in feed_layers(grid_cells).items():
        if name != "community":
            store.write_layer(name, frame, actor="test", source="test")
    return store


def publish_raw(host: str, port: int, items: list[tuple[str, bytes]]) -> None:
    """Publish each (topic, payload) with QoS 1; return when the broker acknowledged all."""
    import paho.mqtt.client as mqtt

    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
    client.connect(host, port)
    client.loop_start()
    infos = [client.publish(topic, payload, qos=1) for topic, payload in items]
    for info in infos:
        info.wait_for_publish(timeout=60)
    client.disconnect()
    client.loop_stop()


def _worker_threads() -> set[threading.Thread]:
    return {t for t in threading.enumerate() if t.is_alive()}


def test_a_real_worker_survives_the_corpus_and_stores_the_good_after_it(
        broker, feed_store):  # noqa: F811 (the fixture imported above)
    host, port = broker
    community = f"t{uuid.uuid4().hex[:8]}"
    corpus, good = hostile(community), good_messages(community)
    before = _worker_threads()
    pipeline, finish = start_pipeline(feed_store, f"mqtt://{host}:{port}",
                                      [f"gridtwin/{community}/#"], f"hostile-{community}")
    worker = (_worker_threads() - before)
    expected = {f"g-{i:05d}" for i in range(1000)} | {i for h in corpus for i in h.stored}
    try:
        publish_raw(host, port, [(h.topic, h.payload) for h in corpus] + good)
        wait_for(lambda: len(feed_store.read_events()) >= len(expected), 60,
                 "the good messages stored")
        wait_for(lambda: len(feed_store.read_rows(DEAD_LETTERS)) >= len(corpus), 30,
                 "the dead letters")
        assert all(t.is_alive() for t in worker), "the worker died"
    finally:
        finish()
    assert set(feed_store.read_events()["id"]) == expected
    check_dead_letters(feed_store.read_rows(DEAD_LETTERS), corpus)
    assert pipeline.counters.acknowledged == len(corpus) + len(good)


def test_two_workers_in_a_shared_subscription_survive_hostile_messages(
        broker, feed_store):  # noqa: F811 (the fixture imported above)
    host, port = broker
    community = f"t{uuid.uuid4().hex[:8]}"
    shared = f"$share/ingest-{uuid.uuid4().hex[:6]}/gridtwin/{community}/#"
    # two copies of the corpus (distinct ids), interleaved with the good messages
    corpus = hostile(community, "h1") + hostile(community, "h2")
    corpus = [h for h in corpus if h.name != "too_large"] + [
        h for h in corpus if h.name == "too_large"][:1]
    good = good_messages(community)
    items = [(h.topic, h.payload) for h in corpus]
    # two hostile, one good …: the broker's round robin hands hostile ones to both workers
    mixed = []
    for k in range(0, len(items), 2):
        mixed += [*items[k:k + 2], good[k // 2]]
    mixed += good[len(items[::2]):]
    before = _worker_threads()
    workers = [start_pipeline(feed_store, f"mqtt://{host}:{port}", [shared],
                              f"w{i}-{community}") for i in range(2)]
    threads = _worker_threads() - before
    expected = {f"g-{i:05d}" for i in range(1000)} | {i for h in corpus for i in h.stored}
    try:
        publish_raw(host, port, mixed)
        wait_for(lambda: len(feed_store.read_events()) >= len(expected), 90,
                 "the good messages stored")
        wait_for(lambda: len(feed_store.read_rows(DEAD_LETTERS)) >= len(corpus), 30,
                 "the dead letters")
        assert all(t.is_alive() for t in threads), "a worker died"
    finally:
        for _, finish in workers:
            finish()
    assert set(feed_store.read_events()["id"]) == expected
    dead = feed_store.read_rows(DEAD_LETTERS)
    assert Counter(dead["reason"]) == Counter(h.reason for h in corpus)
    counts = [p.counters.dead_letters for p, _ in workers]
    assert sum(counts) == len(corpus) and min(counts) > 0, counts  # both met hostile ones
    assert np.sum([p.counters.acknowledged for p, _ in workers]) == len(mixed)


def test_with_the_id_limit_lifted_postgis_refusing_a_long_id_costs_one_dead_letter(store,
                                                                                 layers_):
    from twin.feeds.models import Limits

    long_id = _random_text(2800, "lifted")
    source = ListSource([_obs(f"run-{i}") for i in range(30)] + [_obs(long_id)]
                        + [_obs(f"run-{i}") for i in range(30, 60)])
    pipeline = Pipeline(store, Registry.from_layers(layers_), limits=Limits(max_id_chars=10_000))
    pipeline.run(source, max_batch=25)
    stored = set(store.read_events()["id"])
    assert {f"run-{i}" for i in range(60)} <= stored and source.acked == 61
    dead = store.read_rows(DEAD_LETTERS)
    if store.url.startswith("postgresql"):  # the btree refuses it: found, dead-lettered
        assert long_id not in stored
        assert dead["reason"].tolist() == ["store_rejected"]
        assert "index row size" in dead["detail"].iloc[0]
    else:  # SQLite has no such limit
        assert long_id in stored and dead.empty
