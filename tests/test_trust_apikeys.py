"""API keys and tokens (twin.trust.apikeys): hashed, bound to a user, revocable, limited."""

from __future__ import annotations

import pandas as pd
import pytest

from tests.sessions import PASSWORD, store_users
from twin.errors import NotFoundError
from twin.schema import API_KEYS
from twin.trust import User, update_user
from twin.trust.apikeys import (
    KeyRefusedError,
    RateLimiter,
    create_key,
    issue_token,
    key_user,
    list_keys,
    revoke_key,
    token_user,
)


def test_a_key_is_stored_hashed_acts_as_its_user_and_dies_when_revoked(store):
    store_users(store, User("wang", "grid_worker", grids=("R01",)))
    text, key = create_key(store, "wang", label="platform", rate_per_min=60, actor="adm")
    row = store.read_rows(API_KEYS, key_id=key.key_id).iloc[0]
    assert text.split("_", 2)[2] not in row.to_json() and row["secret_hash"] != text
    assert "secret_hash" not in list_keys(store).columns
    user, record = key_user(store, text)
    assert (user.username, user.role, user.grids, record.rate_per_min) == (
        "wang", "grid_worker", ("R01",), 60)
    update_user(store, "wang", role="dispatcher", actor="adm")
    assert key_user(store, text)[0].role == "dispatcher"  # rights read from the store now
    assert revoke_key(store, key.key_id, actor="adm") is True
    assert revoke_key(store, key.key_id, actor="adm") is False
    with pytest.raises(KeyRefusedError) as refused:
        key_user(store, text)
    assert refused.value.reason == "revoked"
    log = store.read_audit()
    assert {"apikey.create", "apikey.revoke"} <= set(log["action"])
    with pytest.raises(NotFoundError):
        revoke_key(store, "nope")


def test_malformed_or_unknown_keys_are_refused(store):
    for text in (None, "", "gtk_", "gtk_abc", "gtk_abc_def", "x" * 300):
        with pytest.raises(KeyRefusedError):
            key_user(store, text)


def test_tokens_expire_are_signed_and_follow_their_key_and_user(store):
    store_users(store, User("li", "planner"))
    text, key = create_key(store, "li", actor="adm")
    now = pd.Timestamp("2026-06-01T08:00:00Z")
    token, until = issue_token(store, key=text, now=now)
    assert token_user(store, token, now=now)[0].username == "li"
    with pytest.raises(KeyRefusedError, match="refused"):
        token_user(store, token, now=until)
    with pytest.raises(KeyRefusedError):
        token_user(store, token[:-3] + "abc", now=now)
    by_password, _ = issue_token(store, username="li", password=PASSWORD, now=now)
    assert token_user(store, by_password, now=now)[1] is None
    revoke_key(store, key.key_id)
    with pytest.raises(KeyRefusedError):
        token_user(store, token, now=now)
    update_user(store, "li", disabled=True, actor="adm")
    with pytest.raises(KeyRefusedError):
        token_user(store, by_password, now=now)


def test_the_token_bucket_allows_a_minutes_worth_then_refills():
    limiter = RateLimiter()
    assert [limiter.take("k", 3, now=0.0) for _ in range(3)] == [0.0, 0.0, 0.0]
    wait = limiter.take("k", 3, now=0.0)
    assert wait == pytest.approx(20.0)  # one token every 20 s at 3 per minute
    assert limiter.take("k", 3, now=20.0) == 0.0
    assert limiter.take("other", 3, now=0.0) == 0.0  # buckets apart


def test_users_command_creates_lists_and_revokes_keys(tmp_path, capsys):
    import json

    from twin.cli import main
    from twin.store import open_store

    path = tmp_path / "twin.gpkg"
    with open_store(path) as store:
        store_users(store, User("wang", "grid_worker", grids=("R01",)))
    assert main(["users", "--store", str(path), "create-key", "wang", "--label", "gis",
                 "--rate", "30", "--json"]) == 0
    made = json.loads(capsys.readouterr().out)
    assert made["key"].startswith("gtk_") and made["rate_per_min"] == 30
    assert main(["users", "--store", str(path), "keys", "--json"]) == 0
    listed = capsys.readouterr().out
    assert made["key_id"] in listed and made["key"] not in listed
    assert main(["users", "--store", str(path), "revoke-key", made["key_id"]]) == 0
    assert "revoked" in capsys.readouterr().out
    with open_store(path) as store, pytest.raises(KeyRefusedError):
        key_user(store, made["key"])


def test_serve_listens_on_this_machine_only_unless_told(tmp_path, monkeypatch):
    import uvicorn

    from twin.cli import main
    from twin.store import open_store

    path = tmp_path / "twin.gpkg"
    open_store(path).close()
    calls = []
    monkeypatch.setattr(uvicorn, "run", lambda app, **kw: calls.append(kw))
    monkeypatch.delenv("TWIN_API_HOST", raising=False)
    assert main(["serve", "--store", str(path)]) == 0
    assert (calls[-1]["host"], calls[-1]["port"]) == ("127.0.0.1", 8090)
    monkeypatch.setenv("TWIN_API_HOST", "0.0.0.0")
    assert main(["serve", "--store", str(path), "--port", "9001"]) == 0
    assert (calls[-1]["host"], calls[-1]["port"]) == ("0.0.0.0", 9001)
