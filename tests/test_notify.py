"""Notifications out, on both stores: outbox, claiming, retries, signatures, apprise, privacy.

A real HTTP receiver (http.server in a thread, on a free local port) stands in for the
systems that take webhooks; it is down (nothing listening, then 500s) for a while and comes
back. Time is an injected clock: no test sleeps through a backoff.
"""

from __future__ import annotations

import json
import random
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pandas as pd
import pytest

from tests.conftest import LAT, LON
from twin import notify, trust
from twin.errors import PermissionDeniedError, StaleUpdateError, ValidationError
from twin.notify import channels as notify_channels
from twin.schema import OUTBOX
from twin.trust import outgoing

SECRET = "s3cret-for-tests-0123456789"
T0 = pd.Timestamp("2026-12-01T08:00Z")
POLICY = notify.RetryPolicy(max_attempts=8, base_s=30, cap_s=3600, lease_s=60, timeout_s=5)


class Clock:
    """An injected clock: returns ``now``; tests move it forward."""

    def __init__(self, start: pd.Timestamp = T0) -> None:
        self.now = start

    def __call__(self) -> pd.Timestamp:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += pd.Timedelta(seconds=seconds)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Receiver:
    """A local HTTP receiver recording every request; ``mode`` says how it answers.

    ``ok`` → 200; ``fail`` → 500 and ``redirect`` → 302 (nothing kept); ``lost`` → the
    request is kept but the answer is 500 (a receiver that processed it and crashed before
    answering: it will come again, and the idempotency key dedupes it).
    """

    def __init__(self, port: int | None = None) -> None:
        self.port = port or free_port()
        self.requests: list[dict] = []
        self.mode = "ok"
        self.server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    def start(self) -> None:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - the http.server hook
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                if receiver.mode in ("ok", "lost"):
                    receiver.requests.append({"path": self.path, "headers": self.headers,
                                              "body": body})
                code = {"ok": 200, "redirect": 302}.get(receiver.mode, 500)
                self.send_response(code)
                if code == 302:  # followed as a GET by a naive client: no delivery
                    self.send_header("Location", "/elsewhere")
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args) -> None:
                pass

        ThreadingHTTPServer.allow_reuse_address = True
        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()

    def keys(self) -> list[str]:
        return [r["headers"].get("Idempotency-Key") for r in self.requests]


@pytest.fixture
def receiver():
    r = Receiver()
    yield r
    r.stop()


def channel(store, cid: str, url: str, **fields) -> notify.Channel:
    kind = fields.pop("kind", "webhook")
    return notify_channels.save_channel(store, {
        "id": cid, "kind": kind, "url": url, "secret": SECRET if kind == "webhook" else None,
        "role": fields.pop("role", "dispatcher"), **fields})


def outbox(store) -> pd.DataFrame:
    return store.read_rows(OUTBOX)


def deliver(store, clock, **options) -> notify.DeliveryReport:
    options.setdefault("policy", POLICY)
    options.setdefault("rng", random.Random(7))
    return notify.deliver_due(store, clock=clock, **options)


def enqueue_alarms(store, n: int, *, grid: str = "45031100100101") -> None:
    for i in range(n):
        notify.enqueue(store, "alarm.opened", f"alarm:a{i}",
                       {"alarm_id": f"a{i}", "rule": {"zh": "烟感", "en": "Smoke"},
                        "source_id": f"S{i}", "property": "smoke", "value": 1,
                        "severity": "critical", "grid_code": grid, "opened_local": "08:00"},
                       grids=(grid,), at=T0)


# -- the receiver is down, then back: every event arrives, once per key ---------------------------


def test_a_receiver_down_for_a_while_gets_every_event_once_signed_after_backoff(store):
    receiver = Receiver()  # its port is free: nothing listens yet (connections are refused)
    clock = Clock()
    try:
        channel(store, "ops", receiver.url)
        enqueue_alarms(store, 5)
        enqueue_alarms(store, 5)  # the same events again: stored once per channel
        assert len(outbox(store)) == 5

        first = deliver(store, clock)
        assert (first.claimed, first.retried) == (5, 5) and "unreachable" in first.errors[0]
        rows = outbox(store)
        assert set(rows["status"]) == {"pending"} and set(rows["attempts"]) == {1}
        waits = (rows["next_at"] - T0).dt.total_seconds()
        assert waits.between(15, 30).all()  # 30 s, jittered down to no less than half
        assert deliver(store, clock).claimed == 0  # not before its time
        clock.now = rows["next_at"].min() - pd.Timedelta(seconds=1)
        assert deliver(store, clock).claimed == 0

        receiver.start()
        receiver.mode = "lost"  # up, takes the requests, answers 500
        clock.now = rows["next_at"].max()
        second_at = clock.now
        second = deliver(store, clock)
        assert (second.claimed, second.retried) == (5, 5) and "HTTP 500" in second.errors[0]
        again = outbox(store).set_index("id")
        assert set(again["attempts"]) == {2}
        second_waits = (again["next_at"] - second_at).dt.total_seconds()
        # each wait is at least the one before (60 s jittered into [30, 60])
        assert second_waits.between(30, 60).all()
        assert (second_waits >= waits.set_axis(rows["id"]).reindex(again.index)).all()

        receiver.mode = "ok"
        clock.now = again["next_at"].max()
        third = deliver(store, clock)
        assert (third.claimed, third.delivered) == (5, 5)
        done = outbox(store)
        assert set(done["status"]) == {"delivered"} and done["delivered_at"].notna().all()
        assert deliver(store, clock).claimed == 0

        keys = receiver.keys()
        assert len(keys) == 10  # twice each: the first answers were lost
        assert sorted(set(keys)) == sorted(done["id"])  # after dedupe: each event once
        for request in receiver.requests:
            headers, body = request["headers"], request["body"]
            assert notify.verify(SECRET, body, headers["X-GridTwin-Timestamp"],
                                 headers["X-GridTwin-Signature"], now=clock.now.timestamp())
            assert not notify.verify("another-secret-0000", body,
                                     headers["X-GridTwin-Timestamp"],
                                     headers["X-GridTwin-Signature"], now=clock.now.timestamp())
            payload = json.loads(body)
            assert payload["id"] == headers["Idempotency-Key"] and payload["event"] == \
                headers["X-GridTwin-Event"] == "alarm.opened"
            assert payload["title"] == "告警：烟感" and "S" in payload["text"]
        summary = notify.status(store)
        assert summary["statuses"] == {"delivered": {"rows": 5, "next_at": summary["statuses"][
            "delivered"]["next_at"]}} and summary["dead"] == []
    finally:
        receiver.stop()


def test_signatures_refuse_a_replay_and_a_changed_body():
    body = b'{"a":1}'
    signed = notify.signature(SECRET, 1_800_000_000, body)
    assert signed.startswith("sha256=") and len(signed) == 71
    assert notify.verify(SECRET, body, "1800000000", signed, now=1_800_000_100)
    assert not notify.verify(SECRET, body, "1800000000", signed, now=1_800_000_000 + 301)
    assert not notify.verify(SECRET, b'{"a":2}', "1800000000", signed, now=1_800_000_000)
    assert not notify.verify(SECRET, body, "1800000001", signed, now=1_800_000_000)
    assert not notify.verify(SECRET, body, None, signed)
    assert not notify.verify(SECRET, body, "soon", signed)


def test_two_workers_at_once_send_each_row_once(store_factory, receiver):
    first, again = store_factory
    second = again()
    receiver.start()
    channel(first, "ops", receiver.url)
    enqueue_alarms(first, 12)
    clock = Clock(T0 + pd.Timedelta(seconds=1))
    reports: dict[str, list] = {"w1": [], "w2": []}
    start = threading.Barrier(2)

    def work(store, name: str) -> None:
        start.wait()
        while True:
            done = deliver(store, clock, worker=name, limit=2)
            reports[name].append(done.delivered)
            if done.claimed == 0:
                return

    threads = [threading.Thread(target=work, args=(s, n))
               for s, n in ((first, "w1"), (second, "w2"))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    keys = receiver.keys()
    assert len(keys) == 12 and len(set(keys)) == 12  # no row sent twice, none lost
    assert sum(reports["w1"]) + sum(reports["w2"]) == 12
    assert set(outbox(first)["status"]) == {"delivered"}


def store_url(store) -> str:
    """The --store argument that opens *store* again (a PostGIS URL names its schema)."""
    if not hasattr(store, "schema"):
        return store.url
    return f"{store._url.render_as_string(hide_password=False)}?schema={store.schema}"


def test_a_message_is_dead_after_the_retry_limit_and_can_be_requeued(store, receiver, capsys):
    from twin.cli import main

    receiver.start()
    receiver.mode = "fail"
    clock = Clock()
    channel(store, "ops", receiver.url)
    enqueue_alarms(store, 1)
    policy = notify.RetryPolicy(max_attempts=3, base_s=10, cap_s=100)
    outcomes = []
    receiver.mode = "redirect"
    for _ in range(4):
        done = deliver(store, clock, policy=policy)
        outcomes.append((done.claimed, done.retried, done.dead, done.errors[:1]))
        clock.advance(100)
        receiver.mode = "fail"
    assert [o[:3] for o in outcomes] == [(1, 1, 0), (1, 1, 0), (1, 0, 1), (0, 0, 0)]
    assert "HTTP 302" in outcomes[0][3][0] and "HTTP 500" in outcomes[1][3][0]
    row = outbox(store).iloc[0]
    assert (row["status"], row["attempts"]) == ("dead", 3) and "HTTP 500" in row["last_error"]
    report = notify.status(store)
    assert report["statuses"]["dead"]["rows"] == 1
    assert report["dead"][0]["id"] == row["id"] and "HTTP 500" in report["dead"][0]["last_error"]
    assert main(["notify", "--status", "--store", store_url(store)]) == 0
    assert f"dead {row['id']} alarm.opened" in capsys.readouterr().out

    admin = trust.create_user(store, "root", "root-password-1", "admin")
    dispatcher = trust.create_user(store, "disp", "d-password-12", "dispatcher")
    with pytest.raises(PermissionDeniedError):
        outgoing.requeue_dead(store, dispatcher)
    assert outgoing.requeue_dead(store, admin) == 1
    receiver.mode = "ok"  # the worker command, on real time, sends it
    assert main(["notify", "--once", "--json", "--store", store_url(store)]) == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["delivered"] == 1
    assert len(receiver.requests) == 1 and set(outbox(store)["status"]) == {"delivered"}


# -- apprise, offline: its own json:// scheme against the local receiver --------------------------


def test_an_apprise_channel_sends_title_and_text_offline(store, receiver):
    receiver.start()
    channel(store, "wecom-like", f"json://127.0.0.1:{receiver.port}/apprise", kind="apprise",
            role="grid_worker", lang="en")
    enqueue_alarms(store, 1)
    done = deliver(store, Clock(T0 + pd.Timedelta(seconds=1)))
    assert done.delivered == 1, done.errors
    request = receiver.requests[0]
    message = json.loads(request["body"])
    assert request["path"].startswith("/apprise")
    assert message["title"] == "Alarm: Smoke" and "S0" in message["message"]
    assert request["headers"]["Idempotency-Key"] == outbox(store)["id"].iloc[0]
    receiver.stop()  # down: apprise reports the failure, the row waits for its retry
    enqueue_alarms(store, 2)
    later = deliver(store, Clock(T0 + pd.Timedelta(seconds=2)))
    assert (later.claimed, later.retried) == (1, 1) and "apprise could not send" in later.errors[0]


# -- what causes notifications writes them in its own transaction ---------------------------------


@pytest.fixture
def people(store, grid_cells):
    """An admin, a dispatcher and two grid workers; the grid cells name the worker of R01."""
    grid_cells = grid_cells.assign(grid_worker=["gw1", "gw2"])
    return {
        "admin": trust.create_user(store, "admin1", "admin-password-1", "admin"),
        "dispatcher": trust.create_user(store, "disp", "disp-password-1", "dispatcher"),
        "gw1": trust.create_user(store, "gw1", "gw1-password-12", "grid_worker", grids=["R01"]),
        "gw2": trust.create_user(store, "gw2", "gw2-password-12", "grid_worker", grids=["R02"]),
        "grid_cells": grid_cells,
    }


def test_a_case_dispatched_to_a_grid_worker_enqueues_one_notification_for_them(store, people):
    admin = people["admin"]
    for cid, recipient in (("gw1-phone", "gw1"), ("gw2-phone", "gw2")):
        outgoing.save_channel(store, admin, id=cid, kind="webhook",
                              url=f"https://ops.example/{cid}", secret=SECRET,
                              role="grid_worker", recipient=recipient, events="case.assigned")
    outgoing.save_channel(store, admin, id="alarms", kind="webhook", url="https://ops.example/a",
                          secret=SECRET, role="official", events="alarm.opened")
    case = trust.report_case(store, people["dispatcher"], category="E0101", lon=LON + 0.0003,
                             lat=LAT + 0.0003, description="垃圾暴露", source="instruction",
                             grid_cells=people["grid_cells"],
                             reporter={"name": "张三", "phone": "13812345678"})
    trust.transition_case(store, people["dispatcher"], case["id"], "file")
    assert outbox(store).empty  # filing assigns nobody
    dispatched = trust.transition_case(store, people["dispatcher"], case["id"], "dispatch",
                                       assignee="gw1")
    rows = outbox(store)
    assert len(rows) == 1
    row = rows.iloc[0]
    assert (row["channel"], row["event"], row["subject"], row["role"]) == (
        "gw1-phone", "case.assigned", f"case:{case['id']}", "grid_worker")
    assert "gw1" in row["recipient"]
    payload = json.loads(row["payload"])
    assert payload["data"]["case_id"] == case["id"] and payload["data"]["assignee"] == "gw1"
    assert payload["data"]["personal"]["reporter"]["phone"] == "13812345678"  # webhook, handler
    assert payload["title"].startswith("案件派遣")
    assert dispatched["status"] == "dispatched"
    # a step that assigns nobody writes nothing
    trust.transition_case(store, people["gw1"], case["id"], "handle",
                          grid_cells=people["grid_cells"])
    assert len(outbox(store)) == 1
    listed = outgoing.list_channels(store, admin)
    assert {c["secret"] for c in listed} == {"***"}
    assert {c["url"] for c in listed} == {"https://ops.example/***"}
    assert store.search_audit(contains={"action": "notify.channel"})[1] == 3
    with pytest.raises(PermissionDeniedError):
        outgoing.list_channels(store, people["dispatcher"])
    # rows of a write that fails are never stored: the transaction takes them with it
    current = store.get_case(case["id"])
    rows = notify.outbox_rows(store, "case.assigned", f"case:{case['id']}",
                              notify.case_event(current), recipients=["gw2"], key="again")
    assert len(rows) == 1
    with pytest.raises(StaleUpdateError):
        store.update_case(case["id"], {"urgency": "urgent"},
                          expected_version=int(current["version"]) - 1, outbox=rows)
    with pytest.raises(ValidationError):  # a dispatch from "handling" is refused
        trust.transition_case(store, people["dispatcher"], case["id"], "dispatch",
                              assignee="gw2")
    assert len(outbox(store)) == 1
    store.update_case(case["id"], {"urgency": "urgent"},
                      expected_version=int(current["version"]), outbox=rows)
    assert len(outbox(store)) == 2


def test_an_alarm_opened_is_told_to_the_subscribers_of_its_grid_once(store, grid_cells):
    import geopandas as gpd
    from shapely.geometry import Point

    from twin.feeds.models import Registry
    from twin.feeds.rules import RuleEngine, load_rules
    from twin.schema import ALARMS

    channel(store, "r01", "https://ops.example/r01", role="grid_worker", grid="R01",
            events=["alarm.opened"])
    channel(store, "unit-102", "https://ops.example/102", role="official",
            grid="45031100100102", events=["alarm.opened"])
    channel(store, "cases-only", "https://ops.example/c", role="official",
            events=["case.assigned"])
    cameras = gpd.GeoDataFrame(  # one camera in each unit grid
        {"camera_id": ["C1", "C2"], "heading_deg": [90.0] * 2, "fov_deg": [60.0] * 2,
         "range_m": [40.0] * 2},
        geometry=[Point(LON + 0.0002, LAT + 0.0002), Point(LON + 0.0015, LAT + 0.0002)],
        crs=4326)
    registry = Registry.from_layers({"cameras": cameras, "grid_cells": grid_cells})
    now = pd.Timestamp("2026-12-01T08:00Z")
    # two feed workers see the same camera alerts: the database opens each alarm once, and
    # only the worker that opened it writes its notifications
    engines = [RuleEngine(store, load_rules(), registry, on_case=lambda a: None)
               for _ in range(2)]
    conds = pd.DataFrame({"rule_id": "camera_fire", "source_id": ["C1", "C2"],
                          "at": [now, now], "active": [True, True], "value": [0.9, 0.95],
                          "source_kind": "camera", "property": "fire_smoke"})
    opened = [len(engine.apply(conds, now)) for engine in engines]
    assert opened == [2, 0]
    alarms = store.read_rows(ALARMS).set_index("source_id")
    rows = outbox(store)
    assert sorted(zip(rows["channel"], rows["subject"], strict=True)) == [
        ("r01", f"alarm:{alarms.loc['C1', 'id']}"),
        ("unit-102", f"alarm:{alarms.loc['C2', 'id']}")]
    payload = json.loads(rows.set_index("channel").loc["unit-102", "payload"])
    assert payload["event"] == "alarm.opened" and payload["data"]["source_id"] == "C2"
    assert payload["data"]["grid_code"] == "45031100100102" and payload["title"].startswith("告警")


# -- privacy and channel checks (pure) ------------------------------------------------------------


REPORTER = {"reporter": {"name": "欧阳娜娜", "phone": "13812345678", "username": "r1"}}


@pytest.mark.parametrize(("role", "kind", "expected"), [
    ("grid_worker", "webhook", REPORTER),
    ("dispatcher", "webhook", REPORTER),
    ("grid_worker", "apprise", {"reporter": {"name": "欧***", "phone": "138****5678"}}),
    ("official", "apprise", {"reporter": {"name": "欧***", "phone": "138****5678"}}),
    ("planner", "webhook", {}),
    ("resident", "webhook", {}),
    ("data_staff", "apprise", {}),
])
def test_personal_fields_go_only_as_the_channel_role_may_see_them(role, kind, expected):
    assert outgoing.notification_view(REPORTER, role, kind) == expected
    assert notify.no_personal(REPORTER, role, kind) == {}


@pytest.mark.parametrize(("fields", "message"), [
    ({"id": "a b"}, "letters, digits"),
    ({"url": "ftp://x"}, "https://"),
    ({"secret": "short"}, "at least 16"),
    ({"role": "boss"}, "role must be one of"),
    ({"events": "Case Assigned"}, "dotted names"),
    ({"lang": "fr"}, "lang must be"),
    ({"kind": "apprise", "url": "no-scheme"}, "names its service"),
])
def test_a_wrong_channel_is_refused_saying_what_to_fix(fields, message):
    good = {"id": "ops", "kind": "webhook", "url": "https://h/x", "secret": SECRET,
            "role": "official"}
    with pytest.raises(ValidationError, match=message):
        notify_channels.check_channel({**good, **fields})


@pytest.mark.parametrize(("url", "shown"), [
    ("wecombot://BOTKEY", "wecombot://***"),
    ("dingtalk://TOKEN/SECRET", "dingtalk://***"),
    ("mailto://user:pass@mail.example", "mailto://***"),
    ("https://u:p@host.example:8443/hook/abc?t=1", "https://***@host.example:8443/***"),
    ("json://127.0.0.1:9000", "json://127.0.0.1:9000"),
])
def test_channel_urls_are_listed_without_their_tokens(url, shown):
    assert notify.redact_url(url) == shown


def test_the_worker_loop_waits_for_a_store_that_does_not_answer(store, receiver):
    from twin.errors import StoreUnavailableError

    receiver.start()
    channel(store, "ops", receiver.url)
    enqueue_alarms(store, 2)
    stop = threading.Event()

    class Blinking:  # the database away for the first pass
        failed = 0

        def __getattr__(self, name):
            return getattr(store, name)

        def claim_outbox(self, *args, **kwargs):
            if not self.failed:
                self.failed += 1
                raise StoreUnavailableError("PostgreSQL does not answer")
            if len(receiver.requests) >= 2:
                stop.set()
            return store.claim_outbox(*args, **kwargs)

    total = notify.run(Blinking(), stop=stop, interval_s=0.01, policy=POLICY)
    assert total.delivered == 2 and len(receiver.requests) == 2
