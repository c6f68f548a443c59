"""scripts/users.py: create, list, disable, passwords, roles, grids and demo users, both stores."""

from __future__ import annotations

import pytest

from scripts.users import main
from tests.services import POSTGIS_URL
from twin import trust


def url(store) -> str:
    schema = getattr(store, "schema", None)
    return f"{POSTGIS_URL}?schema={schema}" if schema else str(store.url)


def run(store, *args, capsys=None):
    code = main(["--store", url(store), *args])
    return code


def test_demo_creates_one_user_per_role_with_the_documented_passwords(store, capsys):
    assert run(store, "--demo") == 0
    out = capsys.readouterr().out
    for username, (role, password) in trust.DEMO_USERS.items():
        assert f"password {password}" in out
        assert trust.authenticate(store, username, password).role == role
    assert run(store, "--demo") == 0  # again: reset, not a duplicate error
    assert sorted(trust.list_users(store)["role"]) == sorted(
        r for r, _ in trust.DEMO_USERS.values())


def test_create_list_and_change_users(store, capsys, monkeypatch):
    monkeypatch.setenv("TWIN_NEW_PASSWORD", "first password")
    assert run(store, "create", "wang", "--role", "grid_worker", "--grids", "R01, R02",
               "--name", "王芳") == 0
    assert trust.get_user(store, "wang").grids == ("R01", "R02")
    assert run(store, "list") == 0
    listed = capsys.readouterr().out
    assert "wang" in listed and "argon2" not in listed and "first password" not in listed
    assert run(store, "set-role", "wang", "dispatcher") == 0
    assert run(store, "set-grids", "wang", "R03") == 0
    monkeypatch.setenv("TWIN_NEW_PASSWORD", "second password")
    assert run(store, "set-password", "wang") == 0
    user = trust.authenticate(store, "wang", "second password")
    assert (user.role, user.grids) == ("dispatcher", ("R03",))
    assert run(store, "disable", "wang") == 0
    with pytest.raises(trust.LoginError):
        trust.authenticate(store, "wang", "second password")
    assert run(store, "enable", "wang") == 0
    assert run(store, "unlock", "wang") == 0
    assert trust.authenticate(store, "wang", "second password").username == "wang"
    actions = store.read_audit()["action"].tolist()
    assert actions.count("user.update") == 6 and "user.create" in actions
    assert "second password" not in store.read_audit().to_string()


@pytest.mark.parametrize("args, message", [
    (["create", "x1", "--role", "king"], "unknown role"),
    (["create", "x2", "--role", "grid_worker"], "needs --grids"),
    (["set-role", "nobody", "admin"], "no user"),
    (["create", "bad name", "--role", "admin"], "username"),
])
def test_refusals_are_one_line_and_exit_2(store, capsys, monkeypatch, args, message):
    monkeypatch.setenv("TWIN_NEW_PASSWORD", "long enough")
    assert run(store, *args) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1


def test_short_passwords_are_refused(store, capsys, monkeypatch):
    monkeypatch.setenv("TWIN_NEW_PASSWORD", "short")
    assert run(store, "create", "li", "--role", "planner") == 2
    assert "at least 8" in capsys.readouterr().err


def test_retention_script_dry_run_and_run(store, capsys):
    from scripts.retention import main as retention

    assert retention(["--store", url(store), "--days", "30", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "would anonymise: 0 case reporters, 0 poll answers" in out
    assert "would delete: residents versions none" in out
    assert retention(["--store", url(store), "--days", "30"]) == 0
    assert "deleted: residents versions none" in capsys.readouterr().out
    assert store.read_audit()["action"].tolist()[-1] == "retention.run"
    assert retention(["--store", url(store), "--days", "-3"]) == 2
