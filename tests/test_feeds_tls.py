# ruff: noqa: F811 (the fixtures imported below are parameters of the tests)
"""Secured MQTT: a second Mosquitto with TLS and a password file made here, in tmp.

The pipeline connects with the CA, a login (and a client certificate) from the settings and
stores what a secured publisher sends; a wrong password and an untrusted CA are refused at
once with an error that says which, and the password is never shown.
"""

from __future__ import annotations

import json
import logging
import os
import pwd
import shutil
import subprocess
import threading
import uuid
from pathlib import Path

import pandas as pd
import pytest

from tests.services import port_open

# the fixture pg_store, shared with the other MQTT tests
from tests.test_feeds_mqtt import MOSQUITTO, _free_port, pg_store, wait_for  # noqa: F401
from twin.errors import ConfigError
from twin.feeds.models import Registry
from twin.feeds.pipeline import Pipeline
from twin.feeds.sources import MqttSource
from twin.feeds.transport import MqttSecurity, connect, mqtt_client

PASSWORD = "s3cret-" + uuid.uuid4().hex[:8]
OPENSSL = shutil.which("openssl") or "/usr/bin/openssl"
PASSWD = shutil.which("mosquitto_passwd") or "/usr/bin/mosquitto_passwd"


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run([OPENSSL, *args], cwd=cwd, check=True, capture_output=True)


def make_ca(folder: Path, name: str) -> None:
    """A self-signed authority ``<name>.crt`` / ``<name>.key``."""
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
             "-keyout", f"{name}.key", "-out", f"{name}.crt", "-subj", f"/CN={name}", cwd=folder)


def make_cert(folder: Path, name: str, ca: str, *, server: bool) -> None:
    """A key and a certificate signed by *ca* (a server's names 127.0.0.1 and localhost)."""
    _openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", f"{name}.key",
             "-out", f"{name}.csr", "-subj", f"/CN={name}", cwd=folder)
    ext = folder / f"{name}.ext"
    ext.write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n"
                   if server else "extendedKeyUsage=clientAuth\n")
    _openssl("x509", "-req", "-in", f"{name}.csr", "-CA", f"{ca}.crt", "-CAkey", f"{ca}.key",
             "-CAcreateserial", "-days", "2", "-out", f"{name}.crt", "-extfile", ext.name,
             cwd=folder)


@pytest.fixture(scope="module")
def tls_broker(tmp_path_factory):
    """Mosquitto on two free ports: TLS + password, and TLS + password + client certificate."""
    tmp_path = tmp_path_factory.mktemp("tls")
    for what in ("ca", "rogue"):
        make_ca(tmp_path, what)
    make_cert(tmp_path, "server", "ca", server=True)
    make_cert(tmp_path, "client", "ca", server=False)
    subprocess.run([PASSWD, "-b", "-c", str(tmp_path / "passwd"), "worker", PASSWORD],
                   check=True, capture_output=True)
    (tmp_path / "password.txt").write_text(PASSWORD + "\n")
    ports = _free_port(), _free_port()
    tls = (f"cafile {tmp_path}/ca.crt\ncertfile {tmp_path}/server.crt\n"
           f"keyfile {tmp_path}/server.key\n")
    conf = tmp_path / "mosquitto.conf"
    conf.write_text(
        "per_listener_settings false\nallow_anonymous false\n"
        f"password_file {tmp_path}/passwd\nmax_queued_messages 0\n"
        f"user {pwd.getpwuid(os.getuid()).pw_name}\n"
        f"listener {ports[0]} 127.0.0.1\n{tls}require_certificate false\n"
        f"listener {ports[1]} 127.0.0.1\n{tls}require_certificate true\n"
    )
    for path in tmp_path.iterdir():
        path.chmod(0o644)
    proc = subprocess.Popen([MOSQUITTO, "-c", str(conf)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    try:
        wait_for(lambda: all(port_open("127.0.0.1", p) for p in ports), 10, "TLS mosquitto")
    except AssertionError:
        proc.kill()
        raise AssertionError(proc.communicate(timeout=5)[1]) from None
    yield tmp_path, ports
    proc.terminate()
    proc.wait(10)


@pytest.fixture
def secured(monkeypatch, tls_broker):
    """The settings of a worker with the right CA and login."""
    folder, ports = tls_broker
    monkeypatch.setenv("TWIN_MQTT_CA_FILE", str(folder / "ca.crt"))
    monkeypatch.setenv("TWIN_MQTT_USERNAME", "worker")
    monkeypatch.setenv("TWIN_MQTT_PASSWORD_FILE", str(folder / "password.txt"))
    return folder, ports


def publish_secured(url: str, topic: str, ids: list[str]) -> None:
    client = mqtt_client(url)  # the same settings as the workers
    connect(client, url)
    infos = [client.publish(topic, json.dumps({
        "id": i, "sensor_id": "S-AIR1", "values": {"pm25": 30.0},
        "observed_at": (pd.Timestamp.now(tz="UTC").floor("s")
                        - pd.Timedelta(minutes=5)).isoformat()}), qos=1) for i in ids]
    for info in infos:
        info.wait_for_publish(timeout=30)
    client.disconnect()
    client.loop_stop()


def run_until_stored(store, url: str, topic: str, ids: list[str], **source_options) -> None:
    source = MqttSource(url, [topic], client_id=f"tls-{topic}", **source_options)
    assert source.subscribed.wait(10), "no SUBACK over TLS"
    pipeline = Pipeline(store, Registry.from_store(store))
    stop = threading.Event()
    thread = threading.Thread(target=pipeline.run, args=(source,), kwargs={"stop": stop})
    thread.start()
    try:
        publish_secured(url, topic, ids)
        wait_for(lambda: len(store.read_events()) >= len(ids), 30, "every message stored")
    finally:
        stop.set()
        thread.join(10)
        source.close()
    assert sorted(store.read_events()["id"]) == sorted(ids)


def test_a_worker_with_the_ca_and_its_login_connects_over_tls_and_stores(secured, pg_store):
    _, ports = secured
    topic = f"gridtwin/t{uuid.uuid4().hex[:8]}/obs"
    run_until_stored(pg_store, f"mqtts://127.0.0.1:{ports[0]}", topic,
                     [f"tls-{i}" for i in range(50)])


def test_a_client_certificate_from_the_settings_is_presented(secured, pg_store, monkeypatch):
    folder, ports = secured
    monkeypatch.setenv("TWIN_MQTT_CERT_FILE", str(folder / "client.crt"))
    monkeypatch.setenv("TWIN_MQTT_KEY_FILE", str(folder / "client.key"))
    topic = f"gridtwin/t{uuid.uuid4().hex[:8]}/obs"
    run_until_stored(pg_store, f"mqtts://127.0.0.1:{ports[1]}", topic,
                     [f"cert-{i}" for i in range(20)])


def test_a_wrong_password_is_refused_with_a_clear_error_that_hides_it(secured, monkeypatch,
                                                                      caplog):
    _, ports = secured
    wrong = "wrong-" + uuid.uuid4().hex[:6]
    monkeypatch.delenv("TWIN_MQTT_PASSWORD_FILE")
    monkeypatch.setenv("TWIN_MQTT_PASSWORD", wrong)
    caplog.set_level(logging.DEBUG)
    with pytest.raises(ConfigError, match=r"refused the connection: .*(authori|password).*"
                                          r"check TWIN_MQTT_USERNAME and TWIN_MQTT_PASSWORD"
                       ) as info:
        MqttSource(f"mqtts://127.0.0.1:{ports[0]}", ["gridtwin/x/obs"], client_id="wrong-pw")
    assert wrong not in str(info.value) and wrong not in caplog.text
    shown = repr(MqttSecurity.from_settings(f"mqtts://127.0.0.1:{ports[0]}"))
    assert wrong not in shown and "password=***" in shown


def test_an_untrusted_ca_is_refused_with_a_clear_error(secured, monkeypatch):
    folder, ports = secured
    monkeypatch.setenv("TWIN_MQTT_CA_FILE", str(folder / "rogue.crt"))
    with pytest.raises(ConfigError, match=r"TLS with the MQTT broker .* failed: the broker's "
                                          r"certificate is not trusted.*TWIN_MQTT_CA_FILE"):
        MqttSource(f"mqtts://127.0.0.1:{ports[0]}", ["gridtwin/x/obs"], client_id="rogue-ca")


def test_plain_mqtt_to_a_tls_listener_is_not_silently_accepted(secured):
    _, ports = secured
    with pytest.raises((ConfigError, OSError)):
        client = mqtt_client(f"mqtt://127.0.0.1:{ports[0]}")
        connect(client, f"mqtt://127.0.0.1:{ports[0]}", timeout=3)


@pytest.mark.parametrize(("env", "message"), [
    ({"TWIN_MQTT_CA_FILE": "/nonexistent/ca.pem"}, "TWIN_MQTT_CA_FILE=.*no such file"),
    ({"TWIN_MQTT_PASSWORD": "x", "TWIN_MQTT_PASSWORD_FILE": "/etc/hostname"}, "not both"),
    ({"TWIN_MQTT_KEY_FILE": "/etc/hostname"}, "without TWIN_MQTT_CERT_FILE"),
])
def test_bad_security_settings_say_what_to_fix(monkeypatch, env, message):
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(ConfigError, match=message):
        MqttSecurity.from_settings("mqtts://127.0.0.1:8883")


def test_the_simulator_publishes_over_tls_with_the_same_settings(secured, pg_store):
    from twin.cli import run_command

    _, ports = secured
    url = f"mqtts://127.0.0.1:{ports[0]}"
    community = f"c{uuid.uuid4().hex[:6]}"
    source = MqttSource(url, [f"gridtwin/{community}/#"], client_id=f"sim-{community}")
    assert source.subscribed.wait(10)
    try:
        code = run_command("simulate", ["--mqtt", url, "--store",
                                        f"{pg_store.url}?schema={pg_store.schema}",
                                        "--community", community, "--rate", "1000",
                                        "--hours", "0.2"])
        assert code == 0
        got: list = []
        wait_for(lambda: got.extend(source.fetch(1000, 0.2)) or len(got) > 10, 20,
                 "the simulator's messages over TLS")
    finally:
        source.close()
    assert all(m.topic.startswith(f"gridtwin/{community}/") for m in got)


def test_the_simulator_says_why_the_broker_refused_it(secured, monkeypatch, pg_store, capsys):
    from twin.cli import run_command

    _, ports = secured
    monkeypatch.setenv("TWIN_MQTT_PASSWORD_FILE", "")
    monkeypatch.setenv("TWIN_MQTT_PASSWORD", "not-it")
    code = run_command("simulate", ["--mqtt", f"mqtts://127.0.0.1:{ports[0]}", "--store",
                                    f"{pg_store.url}?schema={pg_store.schema}", "--rate", "10",
                                    "--hours", "0.01"])
    err = capsys.readouterr().err
    assert code == 2 and "refused the connection" in err and "not-it" not in err
