"""Input safety: hostile SQL on both stores; script payloads in a real browser stay text."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
import urllib.request

import pandas as pd
import pytest

from tests import services
from tests.browser import CHROMIUM_ARGS, LAT, LON, ROOT, free_port, write_small_twin
from tests.sessions import store_users
from twin import cases, trust
from twin.errors import LayerNotFoundError, TwinError, ValidationError
from twin.schema import USERS
from twin.store import open_store
from twin.trust import User

HOSTILE = [
    "x'); DROP TABLE twin_audit; --",
    'x"; DROP TABLE twin_cases; --',
    "' OR '1'='1",
    "1; DELETE FROM twin_users",
    "Robert'); DROP TABLE buildings;--",
]
PAYLOAD = '<img src=x onerror="window.__xss=1"><script>window.__xss=1</script>'



def _intact(store) -> None:
    """The store's tables are all there and the audit chain holds."""
    assert store.read_layer("buildings") is not None
    store.read_cases()
    trust.list_users(store)
    assert trust.verify_audit_chain(store).ok


@pytest.mark.parametrize("name", HOSTILE + ["buildings__history", "twin_audit", "../etc/passwd"])
def test_hostile_layer_names_are_refused(store, buildings, name):
    store.write_layer("buildings", buildings, actor="t", source="t")
    with pytest.raises(LayerNotFoundError):
        store.read_layer(name)
    with pytest.raises(LayerNotFoundError):
        store.write_layer(name, buildings, actor="t", source="t")
    with pytest.raises(LayerNotFoundError):
        store.layer_versions(name)
    _intact(store)


@pytest.mark.parametrize("field", HOSTILE)
def test_hostile_field_names_are_refused(store, buildings, field):
    store.write_layer("buildings", buildings, actor="t", source="t")
    with pytest.raises(ValidationError):
        store.write_layer("buildings", buildings.assign(**{field: 1}), actor="t", source="t")
    with pytest.raises(ValidationError):
        store.read_rows(USERS, **{field: "x"})
    _intact(store)


def test_hostile_values_are_stored_and_read_back_literally(store, buildings):
    hostile = buildings.assign(name=HOSTILE[:3], attrs=[json.dumps({"k": v}) for v in HOSTILE[2:5]])
    store.write_layer("buildings", hostile, actor=HOSTILE[0], source=HOSTILE[1], note=HOSTILE[3])
    back = store.read_layer("buildings")
    assert back["name"].tolist() == HOSTILE[:3]
    assert [json.loads(a)["k"] for a in back["attrs"]] == HOSTILE[2:5]
    assert store.layer_versions("buildings")[-1].actor == HOSTILE[0]
    for value in HOSTILE:
        assert store.read_rows(USERS, username=value).empty
        assert store.read_cases(grid_code=value).empty
        assert store.read_cases(status=value).empty
        assert store.read_events(kind=value, grid_code=value).empty
        with pytest.raises(trust.LoginError):
            trust.authenticate(store, value, value)
        store.append_audit(value, value, value, {"v": value}, value)
    trust.create_user(store, "victim", "long enough", "admin")
    assert len(store.read_rows(USERS)) == 1
    log = store.read_audit()
    assert set(HOSTILE) <= set(log["target"])
    case = cases.report(store, category=str(cases.load_categories().index[0]), lon=LON, lat=LAT,
                        description=HOSTILE[1], source="patrol", actor=HOSTILE[0],
                        role="dispatcher")
    assert store.get_case(case["id"])["description"] == HOSTILE[1]
    _intact(store)


# -- a real browser: nothing a user typed runs ---------------------------------------------------

WRAPPER = """
import runpy
import streamlit as st
from twin import trust
from twin.trust import safe_text
from twin.store import open_store
from ui.auth import current_user, sign_in
from ui.common import get_store, store_url

store = get_store(store_url())
if current_user() is None:
    sign_in(trust.create_user(store, "resident", "long enough", "resident", resident_id="P1",
                              building_code="B-X", replace_existing=True))
case = store.read_cases().iloc[0]
st.markdown("CASE: " + safe_text(case["description"]))
st.caption(safe_text(store.read_layer("buildings").set_index("building_code").loc["B-X", "name"]))
st.dataframe(store.read_layer("buildings")[["building_code", "name"]])
runpy.run_path({page!r}, run_name="__main__")
st.markdown("END-OF-PAGE")
"""


@pytest.fixture(scope="module")
def hostile_server(tmp_path_factory):
    folder = tmp_path_factory.mktemp("xss")
    gpkg = write_small_twin(folder / "t.gpkg")  # building B-X is named with an onerror payload
    with open_store(gpkg) as store:
        cases.report(store, category=str(cases.load_categories().index[0]), lon=LON + 0.001,
                     lat=LAT + 0.001, description=PAYLOAD, source="patrol", actor="t",
                     role="dispatcher")
        from twin.trust import participation

        admin, = store_users(store, User("adm", "admin"))
        participation.publish(store, admin, kind="poll", scope_kind="building",
                              scope_id="B-X", title=PAYLOAD, body=PAYLOAD,
                              questions=[{"question": PAYLOAD, "choices": [PAYLOAD, "ok"]}])
    script = folder / "wrapper.py"
    script.write_text(textwrap.dedent(WRAPPER).format(
        page=str(ROOT / "ui" / "participation_page.py")))
    port = free_port()
    env = {**os.environ, "TWIN_DATABASE_URL": str(gpkg), "PYTHONPATH": str(ROOT),
           "STREAMLIT_BROWSER_GATHER_USAGE_STATS": "false"}
    log = open(folder / "streamlit.log", "wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "streamlit", "run", str(script), "--server.headless", "true",
         "--server.port", str(port), "--server.address", "127.0.0.1",
         "--server.fileWatcherType", "none"],
        cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(f"{base}/_stcore/health", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            try:
                code = proc.wait(timeout=0.25)
            except subprocess.TimeoutExpired:
                code = None
            assert code is None, (folder / "streamlit.log").read_text()
            assert time.monotonic() < deadline, "streamlit did not start"
        yield base
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=20)
        log.close()


@pytest.mark.browser
def test_script_payloads_show_as_text_and_never_run(hostile_server):
    path = services.chromium_path()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=path, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 2400}, locale="en")
            dialogs = []
            page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
            page.goto(hostile_server, wait_until="domcontentloaded")
            page.get_by_text("END-OF-PAGE").wait_for(timeout=60_000)
            page.get_by_text("CASE:").wait_for(timeout=60_000)
            body = page.inner_text("body")
            # the payload is visible as the characters typed, in the case, notice and question
            assert body.count('<img src=x onerror="window.__xss=1">') >= 3
            assert "<script>window.__xss=1</script>" in body
            assert page.evaluate("window.__xss") is None
            assert page.locator("img[src='x']").count() == 0
            assert page.locator("script:text('window.__xss')").count() == 0
            assert dialogs == []
        finally:
            browser.close()


def test_user_text_in_json_exports_stays_data(store):
    trust.create_user(store, "r1", "long enough", "resident", resident_id=PAYLOAD)
    user = trust.get_user(store, "r1")
    data = trust.export_own_data(store, user)
    assert json.loads(json.dumps(data))["user"]["username"] == "r1"
    assert isinstance(data["resident"], list)


def test_errors_never_echo_passwords(store, caplog):
    trust.create_user(store, "u1", "s3cret-password", "planner")
    with pytest.raises(TwinError):
        trust.authenticate(store, "u1", "wrong-s3cret")
    assert "s3cret" not in caplog.text
    assert "s3cret" not in store.read_audit().to_string()
    assert "s3cret" not in pd.DataFrame(trust.list_users(store)).to_string()
