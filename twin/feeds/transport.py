"""Secured MQTT: TLS (CA, optional client certificate) and username/password, from settings.

Sources and the simulator build their paho clients through :func:`mqtt_client` and connect
through :func:`connect`, so that a broker that refuses them says why in one line — an
untrusted certificate, a wrong password — instead of a worker retrying forever in silence.
Secrets come from the environment or from files (``TWIN_MQTT_PASSWORD_FILE``); they are never
logged or shown (:class:`MqttSecurity`'s repr masks the password).
"""

from __future__ import annotations

import logging
import ssl
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from twin import settings
from twin.errors import ConfigError

LOGGER = logging.getLogger(__name__)

#: URL scheme → (TLS, default port).
SCHEMES = {"mqtt": (False, 1883), "tcp": (False, 1883), "mqtts": (True, 8883),
           "ssl": (True, 8883)}


@dataclass(frozen=True)
class MqttSecurity:
    """How a client proves itself to the broker and checks the broker: TLS and a login.

    Attributes
    ----------
    tls
        Connect over TLS, checking the broker's certificate and host name.
    ca_file
        PEM file of the certificate authorities trusted for the broker (None: the system's).
    cert_file, key_file
        The client's certificate and key (PEM) when the broker asks for one.
    username, password
        The login (None: anonymous). The password never appears in a repr or a log.
    """

    tls: bool = False
    ca_file: str | None = None
    cert_file: str | None = None
    key_file: str | None = None
    username: str | None = None
    password: str | None = field(default=None, repr=False)

    def __repr__(self) -> str:
        shown = ", ".join(f"{k}={getattr(self, k)!r}" for k in
                          ("tls", "ca_file", "cert_file", "key_file", "username"))
        return f"MqttSecurity({shown}, password={'***' if self.password else None})"

    @classmethod
    def from_settings(cls, url: str) -> MqttSecurity:
        """Read the security of *url* from the ``mqtt_*`` settings (see twin/settings.py).

        TLS is on for ``mqtts://`` (or ``ssl://``) URLs, or when ``mqtt_tls`` is set.

        Raises
        ------
        ConfigError
            If a named file does not exist, a key comes without its certificate, or the
            password is given twice (value and file).
        """
        scheme = urlparse(url).scheme
        tls = SCHEMES.get(scheme, (False, 0))[0] or settings.get("mqtt_tls")
        files = {name: settings.get(f"mqtt_{name}") or None
                 for name in ("ca_file", "cert_file", "key_file")}
        for name, path in files.items():
            if path and not Path(path).is_file():
                raise ConfigError(f"TWIN_MQTT_{name.upper()}={path!r}: no such file; give the "
                                  "path of a PEM file readable by this process")
        if files["key_file"] and not files["cert_file"]:
            raise ConfigError("TWIN_MQTT_KEY_FILE is set without TWIN_MQTT_CERT_FILE: a client "
                              "key goes with its certificate")
        if any(files.values()) and not tls:
            raise ConfigError("MQTT certificate files are set but TLS is off: use an mqtts:// "
                              "URL (port 8883) or set TWIN_MQTT_TLS=1")
        return cls(tls=bool(tls), **files, username=settings.get("mqtt_username") or None,
                   password=_password())

    def apply(self, client: Any) -> None:
        """Configure a paho client: TLS context and login (before it connects)."""
        if self.tls:
            context = ssl.create_default_context(cafile=self.ca_file)  # verifies host names
            if self.cert_file:
                context.load_cert_chain(self.cert_file, self.key_file)
            client.tls_set_context(context)
        if self.username is not None:
            client.username_pw_set(self.username, self.password)
        elif self.password is not None:
            raise ConfigError("TWIN_MQTT_PASSWORD is set without TWIN_MQTT_USERNAME")


def _password() -> str | None:
    """Return the MQTT password: the setting, else the first line of its file (None: none)."""
    value, path = settings.get("mqtt_password"), settings.get("mqtt_password_file")
    if value and path:
        raise ConfigError("set TWIN_MQTT_PASSWORD or TWIN_MQTT_PASSWORD_FILE, not both")
    if path:
        try:
            lines = Path(path).read_text("utf-8").splitlines()
        except OSError as exc:
            raise ConfigError(f"TWIN_MQTT_PASSWORD_FILE={path!r} cannot be read "
                              f"({exc.strerror}); give a file readable by this process") from None
        return lines[0] if lines else ""
    return value or None


def broker_address(url: str) -> tuple[str, int]:
    """Return (host, port) of an ``mqtt://``, ``mqtts://`` … URL.

    Raises
    ------
    ConfigError
        If the URL is not one of :data:`SCHEMES` with a host.
    """
    parsed = urlparse(url)
    if parsed.scheme not in SCHEMES or not parsed.hostname:
        raise ConfigError(f"MQTT URL {url!r} must look like mqtt://host:1883 or "
                          "mqtts://host:8883 (TLS)")
    return parsed.hostname, parsed.port or SCHEMES[parsed.scheme][1]


def mqtt_client(url: str, *, client_id: str = "", security: MqttSecurity | None = None,
                **options: Any) -> Any:
    """Return a paho MQTT v5 client for *url*, secured by *security* (default: settings)."""
    import paho.mqtt.client as mqtt

    broker_address(url)
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id,
                         protocol=mqtt.MQTTv5, **options)
    (security or MqttSecurity.from_settings(url)).apply(client)
    return client


def refused(url: str, reason: Any) -> ConfigError:
    """Return the error of a broker refusing the connection (CONNACK *reason*)."""
    text = str(reason)
    hint = ("check TWIN_MQTT_USERNAME and TWIN_MQTT_PASSWORD (or _FILE)"
            if any(w in text.lower() for w in ("password", "authori", "username"))
            else "check the broker's log and its access control")
    return ConfigError(f"the MQTT broker at {url} refused the connection: {text}; {hint}")


def tls_failed(url: str, exc: ssl.SSLError) -> ConfigError:
    """Return the error of a TLS handshake that failed (an untrusted or wrong certificate)."""
    if isinstance(exc, ssl.SSLCertVerificationError):
        detail = f"the broker's certificate is not trusted ({exc.verify_message})"
    else:
        detail = getattr(exc, "reason", None) or str(exc)
    return ConfigError(
        f"TLS with the MQTT broker at {url} failed: {detail}; check that TWIN_MQTT_CA_FILE is "
        "the authority that signed the broker's certificate and that the URL's host name is "
        "in that certificate"
    )


def connect(client: Any, url: str, *, keepalive: int = 30, timeout: float = 10.0,
            **options: Any) -> None:
    """Connect *client* now, start its loop and wait for the broker's answer.

    Raises
    ------
    ConfigError
        If TLS fails (untrusted certificate) or the broker refuses the login.
    OSError
        If the broker cannot be reached (a caller may retry later).
    """
    host, port = broker_address(url)
    answered, outcome = threading.Event(), {}
    previous = client.on_connect

    def on_connect(c, userdata, flags, reason, properties) -> None:
        outcome["reason"] = reason
        answered.set()
        if previous is not None:
            previous(c, userdata, flags, reason, properties)

    client.on_connect = on_connect
    try:
        client.connect(host, port, keepalive=keepalive, **options)
    except ssl.SSLError as exc:
        raise tls_failed(url, exc) from None
    client.loop_start()
    if not answered.wait(timeout):
        client.loop_stop()
        raise OSError(f"the MQTT broker at {url} did not answer within {timeout:.0f} s")
    client.on_connect = previous
    reason = outcome["reason"]
    if reason.is_failure:
        client.disconnect()
        client.loop_stop()
        raise refused(url, reason)
