"""tests/services.py: a missing service fails the run in CI and is skipped only locally."""

from __future__ import annotations

import pytest

from tests.services import missing


@pytest.mark.parametrize(("env", "value"), [("CI", "true"), ("TWIN_REQUIRE_SERVICES", "1")])
def test_a_missing_service_fails_when_services_are_required(monkeypatch, env, value):
    monkeypatch.delenv("CI", raising=False)
    monkeypatch.delenv("TWIN_REQUIRE_SERVICES", raising=False)
    monkeypatch.setenv(env, value)
    with pytest.raises(pytest.fail.Exception, match="Mosquitto is not available"):
        missing("Mosquitto", "run `make test`")


def test_a_missing_service_is_skipped_only_when_nothing_requires_it(monkeypatch):
    monkeypatch.delenv("CI", raising=False)
    monkeypatch.delenv("TWIN_REQUIRE_SERVICES", raising=False)
    with pytest.raises(pytest.skip.Exception, match="Mosquitto is not available"):
        missing("Mosquitto", "run `make test`")
