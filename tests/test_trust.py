"""twin.trust: role by role what each user sees and may do, on both stores; audit; lockout."""

from __future__ import annotations

import json
import sqlite3

import geopandas as gpd
import pandas as pd
import pytest

from tests.sessions import store_users
from twin import retention, schema, settings, trust
from twin.cases import ROLES
from twin.errors import (
    ConfigError,
    DuplicateIdError,
    NotFoundError,
    PermissionDeniedError,
    ValidationError,
)
from twin.trust import ANONYMOUS, User

PHONE, ID_NO = "13812345678", "450311199001011234"



@pytest.fixture
def twin_store(store, grid_cells, buildings):
    """A store with two grids (R01, R02), three buildings and one resident per building."""
    grid_cells = grid_cells.assign(grid_worker=["gw1", "gw2"],
                                   grid_worker_phone=["13900001111", "13900002222"])
    store.write_layer("grid_cells", grid_cells, actor="t", source="t")
    b = buildings.assign(grid_code=["45031100100101", "45031100100101", "45031100100102"],
                         resp_grid_id=["R01", "R01", "R02"], community_code=["001"] * 3)
    store.write_layer("buildings", b, actor="t", source="t")
    residents = pd.DataFrame({
        "resident_id": ["P1", "P2", "P3"], "building_code": ["B1", "B2", "B3"],
        "name": ["张三", "欧阳娜娜", "李四"], "phone": [PHONE, "13700001234", "13600005678"],
        "id_number": [ID_NO, "45031119850202222X", "450311197003033333"],
        "household_size": [3, 2, 4], "tags": ["独居老人", None, None],
    })
    store.write_layer("residents", residents, actor="t", source="t")
    store_users(store, *USERS.values())  # the library acts only for stored users
    return store


USERS = {
    "admin": User("adm", "admin"),
    "official": User("off", "official"),
    "dispatcher": User("dis", "dispatcher"),
    "grid_worker": User("gw1", "grid_worker", grids=("R01",)),
    "planner": User("pla", "planner"),
    "data_staff": User("dat", "data_staff"),
    "resident": User("res", "resident", resident_id="P3", building_code="B3"),
    "org_admin": User("oad", "org_admin", org_id="PM1"),
    "org_staff": User("ost", "org_staff", org_id="PM1"),
    "volunteer": User("vol", "volunteer"),
}


# -- masking, escaping (pure) ---------------------------------------------------------------


@pytest.mark.parametrize("func, value, expected", [
    (trust.mask_phone, "13812345678", "138****5678"),
    (trust.mask_phone, "138 1234 5678", "138****5678"),
    (trust.mask_phone, "5678", "****78"),
    (trust.mask_id_number, "450311199001011234", "4503**********1234"),
    (trust.mask_id_number, "45031119900101123X", "4503**********123X"),
    (trust.mask_id_number, "12345", "******"),
    (trust.mask_name, "张三", "张*"),
    (trust.mask_name, "欧阳娜娜", "欧***"),
    (trust.mask_name, "王", "王*"),
    (trust.mask_other, "独居老人", "***"),
])
def test_masks(func, value, expected):
    assert func(pd.Series([value, None]) ).tolist() == [expected, None]


def test_mask_frame_picks_the_mask_by_column():
    frame = pd.DataFrame({"name": ["张三"], "phone": [PHONE], "id_number": [ID_NO], "x": [1]})
    out = trust.mask_frame(frame, ["name", "phone", "id_number"])
    assert out.iloc[0].tolist() == ["张*", "138****5678", "4503**********1234", 1]
    assert frame["phone"].iloc[0] == PHONE  # the input is not changed


@pytest.mark.parametrize("text", [
    "<script>window.__xss=1</script>", '<img src=x onerror="window.__xss=1">',
    "[click](javascript:alert(1))", "![x](http://evil.example/x.png)", ":red[big] **bold**",
])
def test_safe_text_escapes_every_markdown_and_html_meta_character(text):
    escaped = trust.safe_text(text)
    for ch in "<>[]()!*:":
        assert ch not in escaped.replace("\\" + ch, "")


def test_round_location_snaps_to_about_100_m_cells():
    lon, lat = trust.round_location([110.29123, 110.29177], [25.08049, 25.08051])
    assert lon.tolist() == [110.2915, 110.2915]
    assert lat.tolist() == [25.0805, 25.0805]


@pytest.mark.parametrize("data, ok", [
    (b"\xff\xd8\xff\xe0" + b"0" * 100, "image/jpeg"),
    (b"\x89PNG\r\n\x1a\n" + b"0" * 100, "image/png"),
    (b"RIFF\x00\x00\x00\x00WEBPVP8 ", "image/webp"),
    (b"RIFF\x00\x00\x00\x00WAVEfmt ", None),
    (b"<svg onload=alert(1)>", None),
    (b"GIF89a", None),
    (b"\xff\xd8\xff" + b"0" * (5 * 1024 * 1024), None),  # too big
])
def test_photos_are_checked_by_magic_bytes_and_size(data, ok):
    if ok:
        assert trust.check_photo(data) == ok
    else:
        with pytest.raises(trust.UploadRejectedError):
            trust.check_photo(data)


def test_session_timeout():
    now = pd.Timestamp("2026-03-01 10:00", tz="UTC")
    assert not trust.session_expired(now - pd.Timedelta(minutes=29), now, 30)
    assert trust.session_expired(now - pd.Timedelta(minutes=31), now, 30)
    assert trust.session_expired(None, now, 30)


@pytest.mark.parametrize("name, raw, value", [
    ("max_failed_logins", "3", 3),
    ("lockout_min", "2.5", 2.5),
    ("session_timeout_min", "45", 45.0),
    ("retention_days", "30", 30),
    ("upload_max_bytes", "1000", 1000),
    ("max_logins_per_client", "7", 7),
])
def test_access_settings_come_from_the_environment(monkeypatch, name, raw, value):
    monkeypatch.delenv(f"TWIN_{name.upper()}", raising=False)
    default = settings.get(name)
    monkeypatch.setenv(f"TWIN_{name.upper()}", raw)
    assert settings.get(name) == value != default


def test_docs_list_every_trust_setting_with_its_default():
    import re
    from pathlib import Path

    text = (Path(__file__).resolve().parent.parent / "docs" / "trust.md").read_text("utf-8")
    documented = dict(re.findall(r"^\| `TWIN_([A-Z0-9_]+)` \| ([^|]+) \|", text, re.M))
    assert documented
    for name, default in documented.items():
        setting = next(s for s in settings.SETTINGS if s.name == name.lower())
        assert float(default) == setting.default, name


def test_docs_list_one_demo_user_per_role_with_its_password():
    import re
    from pathlib import Path

    text = (Path(__file__).resolve().parent.parent / "docs" / "trust.md").read_text("utf-8")
    rows = re.findall(r"^\| (\w+) \| [^|]+ \| (\w+-demo) \|$", text, re.M)
    assert dict(rows) == {name: password for name, (_, password) in trust.DEMO_USERS.items()}
    # an organisation's staff belong to one: the demo's are made with its organisations
    # (twin.orgdemo) and listed in a table of their own
    assert sorted(role for role, _ in trust.DEMO_USERS.values()) == sorted(
        r for r in ROLES if r not in schema.ORG_ROLES)


@pytest.mark.parametrize("raw", ["many", "0", "-1"])
def test_bad_access_settings_are_refused_with_the_variable(monkeypatch, raw):
    monkeypatch.setenv("TWIN_MAX_FAILED_LOGINS", raw)
    with pytest.raises(ConfigError, match="TWIN_MAX_FAILED_LOGINS.*positive whole number"):
        settings.get("max_failed_logins")


def test_lockout_follows_the_setting(twin_store, monkeypatch):
    monkeypatch.setenv("TWIN_MAX_FAILED_LOGINS", "2")
    trust.create_user(twin_store, "tina", "long-enough-pw", "planner")
    with pytest.raises(trust.LoginError) as first:
        trust.authenticate(twin_store, "tina", "wrong-password")
    assert not isinstance(first.value, trust.AccountLockedError)
    with pytest.raises(trust.AccountLockedError):
        trust.authenticate(twin_store, "tina", "wrong-password")


# -- permissions, role by role --------------------------------------------------------------

PAGES = {  # role → pages it may open
    "admin": {"public", "cockpit", "wall", "cases", "kpi", "queries", "layers", "participation",
              "audit", "users", "proposals", "volunteer_admin"},
    "official": {"public", "cockpit", "wall", "cases", "kpi", "queries", "participation",
                 "proposals", "volunteer_admin"},
    "dispatcher": {"public", "cockpit", "cases", "kpi", "participation"},
    "grid_worker": {"public", "my_grid", "cases", "participation", "volunteer_admin"},
    "planner": {"public", "cockpit", "kpi", "queries", "participation"},
    "data_staff": {"public", "cockpit", "queries", "layers", "participation"},
    "resident": {"public", "participation", "my_reports", "proposals"},
    "volunteer": {"public", "volunteer"},
    "org_admin": {"public", "cases"},
    "org_staff": {"public", "cases"},
}


@pytest.mark.parametrize("role", ROLES)
def test_pages_role_by_role(role):
    assert set(trust.pages_for(USERS[role])) == PAGES[role]


def test_the_public_sees_only_the_public_page_and_unknown_permissions_fail():
    assert trust.pages_for(None) == ["public"]
    assert trust.pages_for(ANONYMOUS) == ["public"]
    with pytest.raises(ValidationError, match="unknown permission"):
        trust.can(USERS["admin"], "page.nowhere")
    with pytest.raises(PermissionDeniedError, match="only admin"):
        trust.require(USERS["official"], "audit.read")
    disabled = User("x", "admin", disabled=True)
    assert not trust.can(disabled, "page.audit")


# -- personal data through the library, role by role, on both stores ------------------------


def _last_audit(store):
    return store.read_audit().iloc[-1]


def test_grid_worker_sees_full_values_of_their_grids_only(twin_store):
    gw = USERS["grid_worker"]
    rows = trust.read_residents(twin_store, gw, origin="test")
    assert sorted(rows["resident_id"]) == ["P1", "P2"]
    assert PHONE in rows["phone"].tolist() and "张三" in rows["name"].tolist()
    audit = _last_audit(twin_store)
    assert (audit["actor"], audit["action"], audit["origin"]) == ("gw1", "residents.read", "test")
    with pytest.raises(PermissionDeniedError, match="not in the grids"):
        trust.read_residents(twin_store, gw, building_code="B3")
    assert _last_audit(twin_store)["action"] == "residents.denied"
    other, = store_users(twin_store, User("gw2", "grid_worker", grids=("R02",)))
    assert trust.read_residents(twin_store, other)["resident_id"].tolist() == ["P3"]


def test_grid_worker_bound_to_a_unit_grid_code(twin_store):
    gw, = store_users(twin_store, User("gw9", "grid_worker", grids=("45031100100102",)))
    assert trust.read_residents(twin_store, gw)["resident_id"].tolist() == ["P3"]


@pytest.mark.parametrize("role", ["admin", "data_staff"])
def test_admin_and_data_staff_see_every_row_masked(twin_store, role):
    rows = trust.read_residents(twin_store, USERS[role])
    assert len(rows) == 3
    first = rows.set_index("resident_id").loc["P1"]
    assert (first["name"], first["phone"], first["id_number"], first["tags"]) == (
        "张*", "138****5678", "4503**********1234", "***")
    assert not rows["phone"].isin([PHONE]).any()
    assert _last_audit(twin_store)["detail"]  # the view is logged


@pytest.mark.parametrize("role", ["official", "dispatcher", "planner"])
def test_officials_dispatchers_planners_see_counts(twin_store, role):
    rows = trust.read_residents(twin_store, USERS[role])
    assert list(rows.columns) == ["building_code", "households", "residents"]
    assert rows.set_index("building_code")["residents"].to_dict() == {"B1": 3, "B2": 2, "B3": 4}


def test_a_resident_sees_only_their_own_record(twin_store):
    rows = trust.read_residents(twin_store, USERS["resident"])
    assert rows["resident_id"].tolist() == ["P3"]
    assert rows["phone"].tolist() == ["13600005678"]


def test_the_public_cannot_read_residents(twin_store):
    for user in (None, ANONYMOUS):
        with pytest.raises(PermissionDeniedError):
            trust.read_residents(twin_store, user)


@pytest.mark.parametrize("role, phones", [
    ("admin", ["13900001111", "13900002222"]),
    ("data_staff", ["13900001111", "13900002222"]),
    ("official", ["139****1111", "139****2222"]),
    ("grid_worker", ["139****1111", "139****2222"]),
    ("resident", ["139****1111", "139****2222"]),
])
def test_other_layers_mask_personal_columns(twin_store, role, phones):
    frame = trust.read_layer(twin_store, USERS[role], "grid_cells")
    assert frame["grid_worker_phone"].tolist() == phones


def test_the_public_gets_layers_without_personal_columns(twin_store):
    frame = trust.read_layer(twin_store, None, "grid_cells")
    assert "grid_worker_phone" not in frame and len(frame) == 2


# -- case transitions through access --------------------------------------------------------


def test_case_transitions_respect_roles_and_grids_and_are_audited(twin_store, grid_cells):
    resident = USERS["resident"]
    lon, lat = grid_cells.geometry.iloc[1].centroid.coords[0]  # in grid 02 (R02)
    case = trust.report_case(twin_store, resident, category=_category(), lon=lon, lat=lat,
                              description="路灯坏了", source="resident", origin="test")
    assert _last_audit(twin_store)["action"] == "case.collect"
    with pytest.raises(PermissionDeniedError):
        trust.transition_case(twin_store, resident, case["id"], "file")
    dispatcher = USERS["dispatcher"]
    trust.transition_case(twin_store, dispatcher, case["id"], "file")
    trust.transition_case(twin_store, dispatcher, case["id"], "dispatch", assignee="gw2",
                           department="街道")
    gw1 = USERS["grid_worker"]
    cells = twin_store.read_layer("grid_cells")
    with pytest.raises(PermissionDeniedError, match="own grids"):
        trust.transition_case(twin_store, gw1, case["id"], "handle", grid_cells=cells)
    assert _last_audit(twin_store)["action"] == "case.denied"
    gw2, = store_users(twin_store, User("gw2", "grid_worker", grids=("R02",)))
    done = trust.transition_case(twin_store, gw2, case["id"], "handle", grid_cells=cells)
    assert done["status"] == "handling"
    actions = twin_store.read_audit()["action"].tolist()
    assert ["case.file", "case.dispatch", "case.handle"] == [
        a for a in actions if a in ("case.file", "case.dispatch", "case.handle")]
    # the reporter is personal data: visible to case handlers, hidden from planners
    stored = twin_store.get_case(case["id"])
    assert trust.case_for_role(stored, dispatcher)["data"]["reporter"]["username"] == "res"
    assert trust.case_for_role(stored, USERS["planner"])["data"]["reporter"] == "***"


def _category() -> str:
    from twin.cases import load_categories

    return str(load_categories().index[0])


# -- users, login, lockout ------------------------------------------------------------------


def test_users_and_passwords(store):
    user = trust.create_user(store, "gw1", "correct horse", "grid_worker", grids=["R01"],
                              actor="adm")
    assert user.grids == ("R01",)
    row = store.read_rows(schema.USERS, username="gw1").iloc[0]
    assert row["password_hash"].startswith("$argon2id$")
    assert "correct horse" not in store.read_audit().to_string()
    assert trust.authenticate(store, "gw1", "correct horse").role == "grid_worker"
    with pytest.raises(DuplicateIdError):
        trust.create_user(store, "gw1", "another one", "admin")
    with pytest.raises(ValidationError, match="at least"):
        trust.create_user(store, "x1", "short", "admin")
    with pytest.raises(ValidationError, match="unknown role"):
        trust.create_user(store, "x2", "long enough", "superuser")
    with pytest.raises(ValidationError, match="needs --grids"):
        trust.create_user(store, "x3", "long enough", "grid_worker")
    with pytest.raises(ValidationError, match="username"):
        trust.create_user(store, "a b'; DROP TABLE twin_users; --", "long enough", "admin")
    trust.update_user(store, "gw1", disabled=True)
    with pytest.raises(trust.LoginError):
        trust.authenticate(store, "gw1", "correct horse")
    assert "password_hash" not in trust.list_users(store)


def test_lockout_is_stored_and_survives_a_restart(store_factory, monkeypatch):
    monkeypatch.setenv("TWIN_MAX_FAILED_LOGINS", "3")
    first, again = store_factory
    trust.create_user(first, "off", "right password", "official")
    for _ in range(2):
        with pytest.raises(trust.LoginError) as info:
            trust.authenticate(first, "off", "wrong password")
        assert not isinstance(info.value, trust.AccountLockedError)
    with pytest.raises(trust.AccountLockedError):
        trust.authenticate(first, "off", "wrong password")
    restarted = again()  # a new process would open the store like this
    with pytest.raises(trust.AccountLockedError, match="locked"):
        trust.authenticate(restarted, "off", "right password")
    trust.update_user(restarted, "off", unlock=True, actor="adm")
    assert trust.authenticate(restarted, "off", "right password").username == "off"
    actions = restarted.read_audit()["action"].tolist()
    assert actions.count("login.failed") == 3 and "login.locked" in actions


def test_unknown_users_fail_like_wrong_passwords(store):
    with pytest.raises(trust.LoginError, match="wrong username or password"):
        trust.authenticate(store, "nobody", "whatever1")


# -- the audit chain -------------------------------------------------------------------------


def _tamper(store, seq: int) -> None:
    if store.url.startswith("postgresql"):
        import sqlalchemy as sa

        with store.engine.begin() as conn:  # as the table's owner: its triggers off first
            conn.execute(sa.text("ALTER TABLE twin_audit DISABLE TRIGGER USER"))
            conn.execute(sa.text("UPDATE twin_audit SET target = 'residents:nobody' "
                                 "WHERE seq = :s"), {"s": seq})
    else:
        with sqlite3.connect(store.path) as conn:
            conn.execute("UPDATE twin_audit SET target = 'residents:nobody' WHERE seq = ?",
                         (seq,))


def test_tampering_with_one_audit_row_is_detected(twin_store):
    before = len(twin_store.read_audit())  # the fixture's three layer loads
    for role in ("admin", "grid_worker", "official"):
        trust.read_residents(twin_store, USERS[role])
    check = trust.verify_audit_chain(twin_store)
    assert check.ok and check.rows == before + 2  # counts are not personal data: not logged
    gw_seq = before + 2  # the grid worker's read
    exported = trust.export_audit_csv(twin_store, USERS["admin"])
    assert trust.verify_audit_csv(exported).ok
    tampered = exported.decode("utf-8-sig").replace(",gw1,", ",gw9,", 1)
    assert tampered != exported.decode("utf-8-sig")
    assert trust.verify_audit_csv(tampered).first_bad_seq == gw_seq
    _tamper(twin_store, gw_seq)
    check = trust.verify_audit_chain(twin_store)
    assert (check.ok, check.first_bad_seq) == (False, gw_seq)


def test_only_admins_read_and_export_the_audit_log(twin_store):
    trust.read_residents(twin_store, USERS["admin"])
    for role in ROLES:
        if role == "admin":
            assert len(trust.read_audit(twin_store, USERS[role], action="residents")) == 1
        else:
            with pytest.raises(PermissionDeniedError):
                trust.export_audit_csv(twin_store, USERS[role])


# -- retention and a resident's own data -----------------------------------------------------


def test_retention_anonymises_old_reporters_and_a_resident_exports_their_data(twin_store,
                                                                              grid_cells):
    from twin import cases

    resident = USERS["resident"]
    lon, lat = grid_cells.geometry.iloc[1].centroid.coords[0]
    at = pd.Timestamp("2025-03-03 09:00", tz="Asia/Shanghai")
    now = pd.Timestamp("2026-06-01", tz="UTC")
    case = trust.report_case(twin_store, resident, category=_category(), lon=lon, lat=lat,
                              description="井盖松动", source="resident", at=at,
                              reporter={"name": "李四", "phone": "13600005678"})
    exported = trust.export_own_data(twin_store, resident)
    assert exported["resident"][0]["resident_id"] == "P3"
    assert [c["id"] for c in exported["reported_cases"]] == [case["id"]]
    for i, action in enumerate(("file", "dispatch", "handle", "feedback", "check", "close")):
        step_role = {"handle": "official", "feedback": "official", "check": "admin"}.get(
            action, "dispatcher")
        cases.transition(twin_store, case["id"], action, actor="x", role=step_role,
                         at=at + pd.Timedelta(hours=1 + i))
    report = retention.apply_retention(twin_store, days=365, now=now, dry_run=True)
    assert report.cases_anonymised == 1
    assert _data(twin_store, case["id"])["reporter"]["phone"] == "13600005678"
    assert retention.apply_retention(twin_store, days=800, now=now).cases_anonymised == 0
    retention.apply_retention(twin_store, days=365, now=now)
    data = _data(twin_store, case["id"])
    assert data["reporter"] == {"anonymised": True}
    assert trust.verify_audit_chain(twin_store).ok
    assert retention.apply_retention(twin_store, days=365, now=now).cases_anonymised == 0


def test_retention_purges_residents_versions_replaced_before_the_cutoff(twin_store):
    residents = twin_store.read_layer("residents")
    for tag in ("v2", "v3"):  # the fixture wrote v1
        twin_store.write_layer("residents", residents.assign(tags=tag), actor="t", source=tag)
    v1, v2, v3 = twin_store.layer_versions("residents")
    assert v2.created_at < v3.created_at
    cutoff = pd.Timestamp(v2.created_at) + (pd.Timestamp(v3.created_at)
                                            - pd.Timestamp(v2.created_at)) / 2
    now = cutoff + pd.Timedelta(days=30)
    dry = retention.apply_retention(twin_store, days=30, now=now, dry_run=True)
    assert dry.versions_purged == {"residents": [1]}  # v2 was current until after the cutoff
    assert len(twin_store.read_layer("residents", version=1)) == 3
    done = retention.apply_retention(twin_store, days=30, now=now, actor="keeper")
    assert done.versions_purged == {"residents": [1]}
    assert [v.version for v in twin_store.layer_versions("residents")] == [2, 3]
    with pytest.raises(NotFoundError):
        twin_store.read_layer("residents", version=1)
    assert twin_store.read_layer("residents")["tags"].tolist() == ["v3"] * 3
    log = twin_store.read_audit()
    purge, run = log.iloc[-2], log.iloc[-1]
    assert (purge["actor"], purge["action"], purge["target"]) == ("keeper", "layer.purge",
                                                                  "layer:residents")
    assert run["action"] == "retention.run"
    assert json.loads(run["detail"])["versions"] == {"residents": [1]}
    assert trust.verify_audit_chain(twin_store).ok
    later = retention.apply_retention(twin_store, days=30, now=now + pd.Timedelta(days=365))
    assert later.versions_purged == {"residents": [2]}  # never the current version
    assert [v.version for v in twin_store.layer_versions("residents")] == [3]


def _data(store, case_id):
    data = store.get_case(case_id)["data"]
    return json.loads(data) if isinstance(data, str) else data


def test_only_residents_export_their_own_data(twin_store):
    with pytest.raises(PermissionDeniedError):
        trust.export_own_data(twin_store, USERS["admin"])


def test_secrets_come_from_the_environment_or_a_secrets_file(monkeypatch):
    monkeypatch.delenv("TWIN_OIDC_SECRET", raising=False)
    assert trust.secret("oidc_secret", {"oidc_secret": "s3"}) == "s3"
    monkeypatch.setenv("TWIN_OIDC_SECRET", "env")
    assert trust.secret("oidc_secret", {"oidc_secret": "s3"}) == "env"
    assert trust.secret("nothing") is None


def test_buildings_in_scope_is_vectorised(buildings):
    b = gpd.GeoDataFrame(buildings.assign(resp_grid_id=["R01", "R02", None]))
    mask = trust.buildings_in_scope(User("g", "grid_worker", grids=("R02",)), b)
    assert mask.tolist() == [False, True, False]


def test_retention_deletes_notifications_delivered_more_than_30_days_ago(twin_store):
    from twin.schema import OUTBOX

    now = pd.Timestamp("2026-06-01T12:00Z")

    def row(name, status, created_days, delivered_days=None):
        return {"id": name, "event": "case.assigned", "subject": "case:C1", "channel": "wh",
                "recipient": "张三", "role": "grid_worker", "payload": {"title": "新案件"},
                "status": status, "attempts": 1,
                "created_at": now - pd.Timedelta(days=created_days),
                "next_at": None, "claimed_by": None, "claimed_until": None, "last_error": None,
                "delivered_at": None if delivered_days is None
                else now - pd.Timedelta(days=delivered_days)}

    twin_store.put_rows(OUTBOX, pd.DataFrame([
        row("old", "delivered", 41, 40), row("recent", "delivered", 3, 2),
        row("dead", "dead", 400), row("waiting", "pending", 90)]))
    dry = retention.apply_retention(twin_store, days=365, now=now, dry_run=True)
    assert dry.notifications_deleted == 1 and len(twin_store.read_rows(OUTBOX)) == 4
    done = retention.apply_retention(twin_store, days=365, now=now)
    assert done.notifications_deleted == 1
    # pending and dead ones stay until delivered or dealt with
    assert sorted(twin_store.read_rows(OUTBOX)["id"]) == ["dead", "recent", "waiting"]
    assert json.loads(twin_store.read_audit()["detail"].iloc[-1])["notifications"] == 1


def test_retention_deletes_login_attempts_older_than_a_day(twin_store):
    from twin.schema import AUDIT, LOGIN_ATTEMPTS

    now = pd.Timestamp("2026-06-01T12:00Z")
    ages = [pd.Timedelta(minutes=5), pd.Timedelta(hours=23), pd.Timedelta(days=2),
            pd.Timedelta(days=400)]
    twin_store.put_rows(LOGIN_ATTEMPTS, pd.DataFrame([
        {"id": f"slot{i}", "scope": "user", "username": "someone", "client": "web:10.0.0.9",
         "bucket": 1, "slot": i + 1, "at": now - age, "outcome": "failed"}
        for i, age in enumerate(ages)]))
    dry = retention.apply_retention(twin_store, days=365, now=now, dry_run=True)
    assert dry.login_attempts_deleted == 2 and len(twin_store.read_rows(LOGIN_ATTEMPTS)) == 4
    done = retention.apply_retention(twin_store, days=365, now=now)
    assert done.login_attempts_deleted == 2
    assert twin_store.read_rows(LOGIN_ATTEMPTS)["id"].tolist() == ["slot0", "slot1"]
    assert json.loads(twin_store.read_audit()["detail"].iloc[-1])["login_attempts"] == 2
    with pytest.raises(ValidationError, match="by age only from twin_login_attempts"):
        twin_store.delete_rows_before(AUDIT, "at", now)
    with pytest.raises(ValidationError, match="by age only"):
        twin_store.delete_rows_before(LOGIN_ATTEMPTS, "username", now)


# -- case work: what the step forms offer, what the case page shows ---------------------------


def _reported(store, cells, user="grid_worker", category="E0101"):
    lon, lat = cells.geometry.iloc[0].centroid.coords[0]  # in grid 01 (R01, gw1's)
    return trust.report_case(store, USERS[user], category=category, lon=lon, lat=lat,
                             description="垃圾堆放", source="patrol", grid_cells=cells)


def test_a_report_outside_every_grid_is_refused_naming_the_nearest_grid(twin_store):
    cells = twin_store.read_layer("grid_cells")
    east = cells.total_bounds[2]
    lat = float(cells.geometry.iloc[1].centroid.y)
    before = len(twin_store.read_cases())
    with pytest.raises(trust.OutsideGridsError, match="nearest grid is 二网格") as caught:
        trust.report_case(twin_store, USERS["grid_worker"], category="E0101", lon=east + 0.0093,
                          lat=lat, description="x", source="patrol", grid_cells=cells)
    near = caught.value.nearest
    # 0.0093° of longitude at this latitude: about 930 m, measured in metres, not degrees
    assert near["grid_code"] == "45031100100102" and 900 <= near["distance_m"] <= 960
    assert len(twin_store.read_cases()) == before  # nothing written: no orphan case
    # the suggested point lies just inside that grid, and a report there is accepted
    from twin.cases import locate

    assert locate(near["lon"], near["lat"], cells)["grid_code"] == "45031100100102"
    inside = trust.report_case(twin_store, USERS["dispatcher"], category="E0101",
                               lon=near["lon"], lat=near["lat"], description="x",
                               source="patrol", grid_cells=cells)
    assert inside["grid_code"] == "45031100100102"


def test_nearest_grid_inside_is_zero_metres(grid_cells):
    from twin.cases import nearest_grid

    lon, lat = grid_cells.geometry.iloc[0].centroid.coords[0]
    near = nearest_grid(lon, lat, grid_cells)
    assert near["inside"] and near["distance_m"] == 0 and near["grid_code"] == "45031100100101"
    assert nearest_grid(lon, lat, grid_cells.iloc[:0]) is None


def test_a_grid_worker_always_sees_their_own_report(twin_store):
    cells = twin_store.read_layer("grid_cells")
    case = _reported(twin_store, cells)
    gw1 = USERS["grid_worker"]
    # the grids are given to someone else afterwards: the report stays visible to its reporter
    moved = cells.assign(resp_grid_id=["R09", "R02"])
    assert case["id"] in set(trust.visible_cases(twin_store, gw1, moved)["id"])
    assert trust.read_case(twin_store, gw1, case["id"], moved)["id"] == case["id"]
    gw2, = store_users(twin_store, User("gw2", "grid_worker", grids=("R02",)))
    assert case["id"] not in set(trust.visible_cases(twin_store, gw2, cells)["id"])


def test_dispatch_offers_the_routed_department_first_and_the_grids_worker(twin_store):
    cells = twin_store.read_layer("grid_cells")
    store_users(twin_store, User("gw2", "grid_worker", grids=("R02",)))
    case = _reported(twin_store, cells)
    dispatcher = USERS["dispatcher"]
    trust.transition_case(twin_store, dispatcher, case["id"], "file", grid_cells=cells)
    people = trust.eligible_assignees(twin_store, dispatcher, case["id"], cells)
    assert people["username"].tolist()[:2] == ["gw1", "gw2"]
    assert people["covers"].tolist()[:2] == [True, False]
    departments = trust.departments(twin_store.get_case(case["id"]), cells)
    assert departments["code"].iloc[0] == "territory:450311001001" and departments["routed"].iloc[0]
    assert {"CMD", "SANIT"} <= set(departments["code"])
    # only someone who may dispatch the case now is told whom to dispatch it to
    with pytest.raises(PermissionDeniedError):
        trust.eligible_assignees(twin_store, USERS["grid_worker"], case["id"], cells)
    with pytest.raises(PermissionDeniedError):
        trust.eligible_assignees(twin_store, USERS["planner"], case["id"], cells)


def test_category_choices_have_names_and_leave_out_the_current_one():
    table = trust.category_choices({"service_code": "E0101"})
    assert "E0101" not in set(table["service_code"]) and "E0102" in set(table["service_code"])
    assert table.loc[table["service_code"] == "E0102", "name_zh"].item() == "道路不洁"


@pytest.mark.parametrize("lang, step, status, category", [
    ("zh-CN", "变更类别", "已派遣", "道路不洁"),
    ("en", "Change category", "Dispatched", "Dirty road"),
])
def test_case_card_shows_names_in_the_users_language(twin_store, lang, step, status, category):
    from twin.cases import lookup_category

    cells = twin_store.read_layer("grid_cells")
    case = _reported(twin_store, cells)
    dispatcher = USERS["dispatcher"]
    for action, fields in (("file", {}), ("dispatch", {"assignee": "gw1", "department": "CMD"}),
                           ("recategorise", {"service_code": "E0102"})):
        trust.transition_case(twin_store, dispatcher, case["id"], action, grid_cells=cells,
                              **fields)
    card = trust.case_card(twin_store, dispatcher, case["id"], cells, lang)
    assert card["category"] == category
    assert card["status"] == status and card["grid"] == "一网格"
    history = card["history"]
    assert history["step"].iloc[-1] == step
    assert history["action"].tolist() == ["collect", "file", "dispatch", "recategorise"]
    record = history["data"].iloc[-1]
    assert record["old"] == lookup_category("E0101")["name_zh" if lang == "zh-CN" else "name_en"]
    assert "E0101" not in str(record) and "E0102" not in str(record)
    assert history["data"].iloc[2]["department"] != "CMD"  # the department by name
    running = card["timers"].loc[card["timers"]["running"], "stage"].tolist()
    assert running == ["handle"] and card["running_stage"] == "handle"


@pytest.mark.parametrize("name", ["../../etc/passwd", "photos/../x.png", "photos/abc.png",
                                  "/etc/passwd", None])
def test_photo_file_takes_only_stored_photo_names(name):
    with pytest.raises(ValidationError):
        trust.photo_file(name)


def test_photo_file_finds_a_stored_photo(tmp_path, monkeypatch):
    monkeypatch.setenv("TWIN_DATA_DIR", str(tmp_path))
    png = b"\x89PNG\r\n\x1a\n" + b"0" * 32
    name = trust.store_photo(png)
    assert trust.photo_file(name).read_bytes() == png
    (tmp_path / name).unlink()
    with pytest.raises(NotFoundError):
        trust.photo_file(name)
