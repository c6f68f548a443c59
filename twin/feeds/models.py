"""The message contract: observations, camera alerts and reports decoded a batch at a time."""

from __future__ import annotations

import hashlib
import itertools
import json
import logging
import math
import re
from dataclasses import dataclass, field
from datetime import datetime
from typing import Annotated, Any

import geopandas as gpd
import msgspec
import numpy as np
import pandas as pd

from twin.enrich import Enricher
from twin.schema import DEAD_LETTERS, EVENTS

LOGGER = logging.getLogger(__name__)

TOPIC_KINDS = {"obs": "obs", "camera": "camera", "reports": "report"}


@dataclass(frozen=True)
class Property:
    """An observed property (SensorThings ObservedProperty): unit and physically possible range."""

    name: str
    unit: str
    min: float
    max: float
    fiware: str


#: Properties a sensor may report; values outside [min, max] are dead-lettered.
PROPERTIES: dict[str, Property] = {p.name: p for p in (
    Property("occupied", "0/1", 0, 1, "ParkingSpot.status (occupied/free)"),
    Property("pm25", "ug/m3", 0, 1000, "AirQualityObserved.pm25"),
    Property("pm10", "ug/m3", 0, 2000, "AirQualityObserved.pm10"),
    Property("no2", "ug/m3", 0, 2000, "AirQualityObserved.no2"),
    Property("noise", "dBA", 0, 150, "NoiseLevelObserved.LAeq"),
    Property("smoke", "0/1", 0, 1, "Device.value (smoke detector)"),
    Property("gas", "0/1", 0, 1, "Device.value (gas detector)"),
    Property("leak", "0/1", 0, 1, "Device.value (water leak)"),
    Property("open", "0/1", 0, 1, "Device.value (manhole cover open)"),
    Property("tilt", "deg", 0, 180, "Device.value (manhole cover tilt)"),
    Property("running", "0/1", 0, 1, "Device.deviceState (elevator)"),
    Property("fault", "0/1", 0, 1, "Device.deviceState (elevator fault)"),
    Property("door", "0/1", 0, 1, "Device.value (door magnet open)"),
    Property("flow", "m3", 0, 1e7, "WaterObserved.flow"),
    Property("battery", "0-1", 0, 1, "Device.batteryLevel"),
    Property("temperature", "degC", -60, 90, "WeatherObserved.temperature"),
)}
_PROPERTY_CODE = {name: code for code, name in enumerate(PROPERTIES)}
#: What a sensor of each kind (``layers/sensors.py``) may report when its row declares no
#: ``properties``; a declaration, e.g. ``{"pm25": "ug/m3"}``, replaces this list.
KIND_PROPERTIES: dict[str, tuple[str, ...]] = {
    "parking": ("occupied",),
    "air": ("pm25", "pm10", "no2", "temperature"),
    "smoke": ("smoke",),
    "water_leak": ("leak",),
    "noise": ("noise",),
    "manhole": ("open", "tilt"),
    "elevator": ("running", "fault"),
    "water_meter": ("flow",),
    "door": ("door",),
    "gas": ("gas",),
}
#: Reported by any device whatever it declares (FIWARE Device.batteryLevel).
DEVICE_PROPERTIES = ("battery",)


@dataclass(frozen=True)
class Limits:
    """What one message may hold before it is dead-lettered unread (see docs/feeds.md).

    Checked before or while parsing, so that no message can make decoding fail, take long or
    reach the store with something the store refuses.
    """

    #: A message's payload, in bytes (a 50-observation gateway message is about 6 KB).
    max_message_bytes: int = 256 * 2**10
    #: Nesting of JSON arrays and objects (the contract needs 3: array, observation, values).
    max_depth: int = 16
    #: Digits of an integer literal (float64 holds 309; Python refuses more than 4,300).
    max_number_digits: int = 1000
    #: Characters of a message id (PostgreSQL's btree holds about 2,700 bytes).
    max_id_chars: int = 200
    #: Bytes of a dead letter's payload kept (its size and SHA-256 are of the whole).
    dead_payload_bytes: int = 4 * 2**10


LIMITS = Limits()
CAMERA_KINDS = ("crowd", "fire_smoke", "illegal_parking", "garbage", "intrusion", "fall")
#: Clock skew allowed for devices whose clocks run ahead.
MAX_FUTURE = pd.Timedelta(minutes=5)
EARLIEST = pd.Timestamp("2000-01-01", tz="UTC")
_OFFSET = r"(?:Z|[+-]\d{2}:?\d{2})$"


@dataclass
class Message:
    """One delivery from a source: the raw payload, where it came from, how to acknowledge it."""

    topic: str
    payload: bytes
    received_at: datetime  # timezone-aware (UTC); a pandas Timestamp is one too
    token: Any = None  # the source's handle for acknowledging (MQTT mid, replay line …)

    @property
    def kind(self) -> str:
        """obs, camera or report, from the topic's last level (obs when unknown)."""
        return TOPIC_KINDS.get(self.topic.rsplit("/", 1)[-1], "obs")


@dataclass
class Registry:
    """What the feed knows about its devices: sensors and cameras with their enrichment.

    Built once per layer version (sensors do not move); each batch is joined to it by id,
    and reports are enriched per batch with the same :class:`twin.enrich.Enricher`.
    """

    sensors: pd.DataFrame
    cameras: pd.DataFrame
    enricher: Enricher = field(default_factory=Enricher)
    _lookup: _DeviceArrays | None = field(default=None, init=False, repr=False, compare=False)

    @property
    def sensor_arrays(self) -> _DeviceArrays:
        """The sensors as a position per id and one array per column (built on first use)."""
        if self._lookup is None or self._lookup.frame is not self.sensors:
            self._lookup = _DeviceArrays(self.sensors)
        return self._lookup

    @classmethod
    def from_layers(cls, layers: dict[str, gpd.GeoDataFrame]) -> Registry:
        """Build the registry from layer frames (``sensors``, ``cameras``, grids, buildings …)."""
        enricher = Enricher(
            grid_cells=layers.get("grid_cells"), buildings=layers.get("buildings"),
            parking=layers.get("parking"), cameras=layers.get("cameras"),
        )
        return cls(
            sensors=_devices(layers.get("sensors"), "sensor_id", enricher),
            cameras=_devices(layers.get("cameras"), "camera_id", enricher),
            enricher=enricher,
        )

    @classmethod
    def from_store(cls, store) -> Registry:
        """Build the registry from the current layers of *store* (missing layers are skipped)."""
        frames = {}
        for name in ("sensors", "cameras", "grid_cells", "buildings", "parking"):
            if store.layer_versions(name):
                frames[name] = store.read_layer(name)
        return cls.from_layers(frames)


def _devices(frame: gpd.GeoDataFrame | None, key: str, enricher: Enricher) -> pd.DataFrame:
    columns = [key, "kind", "properties", "ref_building", "ref_lot", "report_interval_s"]
    if frame is None or len(frame) == 0:
        return pd.DataFrame(columns=[*columns, "lon", "lat", *ENRICH_OUT]).set_index(key)
    out = pd.DataFrame({c: frame[c].to_numpy(dtype=object) if c in frame else None
                        for c in columns})
    out["lon"] = frame.geometry.x.to_numpy()
    out["lat"] = frame.geometry.y.to_numpy()
    found = enricher.enrich(out["lon"], out["lat"])
    for c in ENRICH_OUT:
        out[c] = found[c].to_numpy(dtype=object)
    # a device's declared building or lot wins over the polygon it happens to stand in
    for declared, column in (("ref_building", "building_code"), ("ref_lot", "lot_id")):
        out[column] = out[declared].where(out[declared].notna(), out[column])
    out["report_interval_s"] = pd.to_numeric(out["report_interval_s"]).fillna(300)
    return out.set_index(key)


ENRICH_OUT = ("grid_code", "resp_grid_id", "community_code", "street_code", "building_code",
              "lot_id", "camera_ids")


class _DeviceArrays:
    """A device table as ``{id: position}`` and plain arrays: per-batch joins without pandas."""

    def __init__(self, frame: pd.DataFrame) -> None:
        self.frame = frame
        self.position = {key: i for i, key in enumerate(frame.index.tolist())}
        self.lon = frame["lon"].to_numpy(dtype=float)
        self.lat = frame["lat"].to_numpy(dtype=float)
        self.columns = {c: frame[c].to_numpy(dtype=object) for c in ENRICH_OUT}
        self.camera_json = np.array([_camera_json(c) for c in self.columns["camera_ids"]] or [],
                                    dtype=object)
        self.profile, self.lo, self.hi = _profiles(frame)


def declared_bounds(kind: Any, declared: Any) -> dict[str, tuple[float, float]]:
    """Return what a sensor may report: ``{property: (min, max)}``.

    *declared* is the sensor's ``properties`` (JSON text or an object): ``{"pm25": "ug/m3"}``
    names properties; ``{"pm25": {"unit": "ug/m3", "min": 0, "max": 500}}`` also narrows
    the range of :data:`PROPERTIES` (never widens it). Without a declaration the sensor's
    *kind* decides (:data:`KIND_PROPERTIES`), and a device of no known kind may report any
    property. :data:`DEVICE_PROPERTIES` are allowed to every device.
    """
    spec = declared
    if isinstance(spec, str):
        try:
            spec = json.loads(spec)
        except ValueError:
            spec = None
    names: Any = None
    if isinstance(spec, dict) and spec:
        names = spec
    elif isinstance(spec, (list, tuple)) and spec:
        names = {name: None for name in spec if isinstance(name, str)}
    elif isinstance(kind, str) and kind in KIND_PROPERTIES:
        names = dict.fromkeys(KIND_PROPERTIES[kind])
    else:
        names = dict.fromkeys(PROPERTIES)
    out = {}
    for name in [*names, *DEVICE_PROPERTIES]:
        prop = PROPERTIES.get(name)
        if prop is None:
            continue
        lo, hi = prop.min, prop.max
        narrow = names.get(name) if isinstance(names, dict) else None
        if isinstance(narrow, dict):
            if _number(narrow.get("min")) and math.isfinite(narrow["min"]):
                lo = max(lo, float(narrow["min"]))
            if _number(narrow.get("max")) and math.isfinite(narrow["max"]):
                hi = min(hi, float(narrow["max"]))
        out[name] = (lo, hi)
    return out


def _profiles(frame: pd.DataFrame) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Each sensor's profile, and per profile and property code the lowest and highest value.

    Sensors share a few profiles (kind and declaration), so a batch is checked by fancy
    indexing two small tables. A property a profile does not allow has the range
    (+inf, -inf), which no value is in.
    """
    kinds = frame["kind"].to_numpy(dtype=object) if "kind" in frame else [None] * len(frame)
    declared = (frame["properties"].to_numpy(dtype=object) if "properties" in frame
                else [None] * len(frame))
    keys: dict[tuple, int] = {}
    rows: list[dict[str, tuple[float, float]]] = []
    profile = np.zeros(len(frame), dtype=np.int64)
    for i, (kind, spec) in enumerate(zip(kinds, declared, strict=True)):  # once per layer
        key = (kind, spec if isinstance(spec, str) or spec is None else repr(spec))
        if key not in keys:
            keys[key] = len(rows)
            rows.append(declared_bounds(kind, spec))
        profile[i] = keys[key]
    lo = np.full((max(len(rows), 1), len(PROPERTIES)), np.inf)
    hi = np.full((max(len(rows), 1), len(PROPERTIES)), -np.inf)
    for r, bounds in enumerate(rows):
        for name, (low, high) in bounds.items():
            lo[r, _PROPERTY_CODE[name]], hi[r, _PROPERTY_CODE[name]] = low, high
    return profile, lo, hi


@dataclass
class Decoded:
    """One batch after decoding: events to store, dead letters, and the readings behind them."""

    events: pd.DataFrame
    dead: pd.DataFrame
    readings: pd.DataFrame  # event_id, source_id, observed_at, property, value, lon, lat
    alerts: pd.DataFrame    # event_id, camera_id, observed_at, kind, confidence
    duplicates: int = 0     # repeated ids inside the batch, kept once
    prepared: Any = None    # the events as the store will write them (Store.prepare_events)


class Unreadable(ValueError):
    """A payload refused before or while parsing: *reason* names the limit or the fault."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason


#: A JSON string literal (unrolled: linear time), blanked before brackets are counted.
_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"')
_OPEN, _CLOSE = np.zeros(256, dtype=np.int8), np.zeros(256, dtype=np.int8)
_OPEN[[ord("["), ord("{")]] = 1
_CLOSE[[ord("]"), ord("}")]] = 1


def nesting_depth(payload: bytes) -> int:
    """Return how deeply JSON arrays and objects nest in *payload* (brackets in strings aside).

    Counted without parsing, in C and numpy passes, so that a message nested thousands of
    levels deep is refused before a recursive parser meets it.
    """
    bare = _STRING.sub(b'""', payload)
    codes = np.frombuffer(bare, dtype=np.uint8)
    steps = _OPEN[codes].astype(np.int32) - _CLOSE[codes]
    return int(np.cumsum(steps).max()) if len(steps) else 0


def parse(payload: bytes, limits: Limits = LIMITS) -> Any:
    """Read one payload as ``json.loads`` does, within *limits*, or raise :class:`Unreadable`.

    Reasons: ``too_large`` (more than ``max_message_bytes``), ``too_deep`` (nesting past
    ``max_depth``), ``number_too_long`` (an integer of more than ``max_number_digits``
    digits), ``malformed_json`` (not JSON, or not UTF-8). Lone surrogates that ``json.loads``
    lets through are found later, on the fields that are stored (``invalid_text``).
    """
    if len(payload) > limits.max_message_bytes:
        raise Unreadable("too_large", f"the message has {len(payload):,} bytes, more than the "
                         f"{limits.max_message_bytes:,} allowed: send fewer observations a "
                         "message")
    # the cheap test first: fewer brackets than the limit cannot nest deeper than it
    if payload.count(b"[") + payload.count(b"{") > limits.max_depth:
        depth = nesting_depth(payload)
        if depth > limits.max_depth:
            raise Unreadable("too_deep", f"JSON nested {depth} levels deep, more than the "
                             f"{limits.max_depth} allowed")
    digits = limits.max_number_digits

    def bounded_int(text: str) -> int:
        if len(text) - text.startswith("-") > digits:
            raise Unreadable("number_too_long", f"an integer of {len(text):,} characters, "
                             f"more than the {digits} digits allowed")
        return int(text)

    try:
        return json.loads(payload, parse_int=bounded_int)
    except Unreadable:
        raise
    except RecursionError:  # the depth was counted above; this only makes sure
        raise Unreadable("too_deep", "JSON nested too deeply to read") from None
    except ValueError as exc:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        raise Unreadable("malformed_json", str(exc)) from None


def dead_letter_id(topic: str, raw: str, reason: str) -> str:
    """Return a stable id, so that the same bad message redelivered is stored once."""
    text = f"{topic}\n{reason}\n{raw}".encode("utf-8", "surrogatepass")
    return hashlib.sha1(text).hexdigest()[:24]


#: Lone surrogates (``"\ud800"`` in JSON, or their bytes) are not text any store can encode.
_SURROGATE = re.compile("[\ud800-\udfff]")


def storable(text: str) -> str:
    r"""Return *text* as any store keeps it: NUL written ``\u0000``, lone surrogates escaped."""
    if "\x00" in text:
        text = text.replace("\x00", "\\u0000")
    if _SURROGATE.search(text):
        text = text.encode("utf-8", "backslashreplace").decode("utf-8")
    return text


def _dead(msg: Message, raw: str | bytes, reason: str, detail: str,
          limits: Limits = LIMITS) -> dict[str, Any]:
    r"""Return a dead-letter row: payload cut to ``dead_payload_bytes``, size and hash whole.

    The row itself must be storable whatever was sent: invalid UTF-8 is kept visible as
    escapes, NUL as ``\u0000``, lone surrogates as ``\ud800``; the topic and detail are cut.
    """
    whole = raw if isinstance(raw, bytes) else raw.encode("utf-8", "surrogatepass")
    digest = hashlib.sha256(whole).hexdigest()
    kept = whole[:limits.dead_payload_bytes].decode("utf-8", errors="backslashreplace")
    topic = msg.topic if len(msg.topic) <= 512 else msg.topic[:512] + "…"
    return {"id": dead_letter_id(msg.topic, digest, reason), "received_at": msg.received_at,
            "topic": storable(topic), "reason": reason, "detail": storable(detail[:500]),
            "payload": storable(kept), "payload_bytes": len(whole), "payload_sha256": digest}


def decode_batch(messages: list[Message], registry: Registry,
                 limits: Limits | None = None) -> Decoded:
    """Decode, validate and enrich a batch; everything that fails becomes a dead letter.

    Reasons: ``malformed_json``, ``bad_message`` (a required field missing or of the wrong type),
    ``unknown_sensor``, ``unknown_camera``, ``unknown_property``, ``bad_time`` (no offset, not
    ISO 8601, before 2000 or more than five minutes ahead of its arrival), ``out_of_range``,
    ``non_finite_number`` (NaN or ±Infinity, which Python's JSON reads but PostgreSQL jsonb
    rejects) and ``nul_character`` (a ``\u0000`` in a string, which PostgreSQL text rejects):
    the last two are checked on the fields that are stored, so that one such message can never
    make the whole batch fail to store, again at every redelivery. So are ``invalid_text``
    (a lone surrogate), ``id_too_long`` and the *limits* a payload must keep before it is
    read (``too_large``, ``too_deep``, ``number_too_long``: see :func:`parse`); observations
    are also checked against what their sensor declares (``undeclared_property``) and their
    own position against the earth (``out_of_range``). Duplicate ids inside the batch are
    kept once. No payload makes this raise.
    """
    limits = limits or LIMITS
    dead: list[dict[str, Any]] = []
    objs: dict[str, list[dict]] = {kind: [] for kind in TOPIC_KINDS.values()}
    owners: dict[str, list[int]] = {kind: [] for kind in TOPIC_KINDS.values()}
    typed = _Typed(limits)
    largest = limits.max_message_bytes
    for i, msg in enumerate(messages):  # JSON parsing is per message by nature
        kind = msg.kind
        if kind == "obs" and len(msg.payload) <= largest and typed.add(i, msg.payload):
            continue
        try:
            body = parse(msg.payload, limits)
        except Unreadable as exc:
            dead.append(_dead(msg, msg.payload, exc.reason, str(exc), limits))
            continue
        body = body if type(body) is list else [body]
        if set(map(type, body)) - {dict}:  # rare: sort the objects from the rest
            for obj in body:
                if not isinstance(obj, dict):
                    dead.append(_dead(msg, json.dumps(obj, ensure_ascii=False), "bad_message",
                                      "each observation must be a JSON object", limits))
            body = [obj for obj in body if isinstance(obj, dict)]
        objs[kind] += body  # a gateway's 50 observations in one step, not one by one
        owners[kind] += [i] * len(body)
    frames, readings, alerts = [], [], []
    observations: list[tuple[int, dict]] = []
    if len(typed):
        ok, extra, observations = _valid_observations(typed, messages, registry)
        dead.extend(typed.dead)
        if ok is not None:
            frames.append(ok)
            readings.append(extra)
    for kind, decode in (("obs", _observations), ("camera", _alerts), ("report", _reports)):
        chosen = list(zip(owners[kind], objs[kind], strict=True))
        if kind == "obs":
            chosen = observations + chosen
        if chosen:
            ok, bad, extra = decode(chosen, messages, registry, limits)
            frames.append(ok)
            dead.extend(bad)
            (readings if kind == "obs" else alerts).append(extra)
    if len(frames) > 1:
        events = pd.concat(frames, ignore_index=True)
    else:
        events = frames[0] if frames else pd.DataFrame(columns=[c.name for c in EVENTS.columns])
    repeated = 0
    if len(events) and len(set(events["id"].tolist())) < len(events):  # rare: hash once more
        before = len(events)
        events = events.drop_duplicates("id").reset_index(drop=True)
        repeated = before - len(events)
    return Decoded(
        events=events,
        dead=pd.DataFrame(dead, columns=[c.name for c in DEAD_LETTERS.columns]
                          ).drop_duplicates("id"),
        readings=_concat(readings, ["event_id", "source_id", "observed_at", "property", "value",
                                    "lon", "lat"]),
        alerts=_concat(alerts, ["event_id", "camera_id", "observed_at", "kind", "confidence"]),
        duplicates=repeated,
    )


def _concat(frames: list[pd.DataFrame], columns: list[str]) -> pd.DataFrame:
    frames = [f for f in frames if f is not None and len(f)]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=columns)


def _unstorable(value: Any, max_id: int | None = None) -> str | None:
    r"""Why *value* cannot be stored: a reason, or None.

    ``non_finite_number``, ``nul_character``, ``invalid_text`` or ``id_too_long`` (a text
    longer than *max_id*, for ids). PostgreSQL jsonb has no NaN or Infinity (which
    ``json.loads`` accepts, also as an overflowing ``1e999``), PostgreSQL text holds no NUL,
    no store encodes a lone surrogate (which ``json.loads`` reads from ``"\ud800"``), and an
    id must fit a btree index entry; keys are looked at too.
    """
    if max_id is not None and type(value) is str and len(value) > max_id:
        return "id_too_long"
    stack = [value]
    while stack:
        item = stack.pop()
        kind = type(item)
        if kind is str:
            if "\x00" in item:
                return "nul_character"
            if _SURROGATE.search(item):
                return "invalid_text"
        elif kind is float:
            if not math.isfinite(item):
                return "non_finite_number"
        elif kind is dict:
            stack.extend(item)
            stack.extend(item.values())
        elif kind is list:
            stack.extend(item)
    return None


def _reject_unstorable(reject: _Reject, frame: pd.DataFrame, fields: tuple[str, ...],
                       max_id: int) -> None:
    """Dead-letter the rows whose stored *fields* cannot be stored (see :func:`_unstorable`).

    NaN/Infinity, a NUL character, a lone surrogate, or an ``id`` longer than *max_id*.
    """
    found: dict[int, tuple[str, str]] = {}
    for pos, obj in enumerate(frame["_obj"]):  # per row: this is the one-by-one path
        for name in fields:
            why = _unstorable(obj.get(name), max_id if name == "id" else None)
            if why is not None:
                found[pos] = (why, name)
                break
    if not found:
        return
    text = {"non_finite_number": "is NaN or Infinity (or holds one): send finite numbers; "
                                 "JSON has no NaN and the store cannot keep it",
            "nul_character": "contains a NUL character (\\u0000), which the store cannot keep",
            "invalid_text": "contains a lone surrogate (e.g. \\ud800), which is not text: send "
                            "UTF-8",
            "id_too_long": f"is longer than {max_id} characters: use a shorter id"}
    for reason in text:
        mask = np.zeros(len(frame), dtype=bool)
        mask[[pos for pos, (why, _) in found.items() if why == reason]] = True
        reject(mask, reason, lambda r, why=text[reason]: f"{found[r.name][1]} {why}")


def _frame(chosen: list[tuple[int, dict]], fields: tuple[str, ...]) -> pd.DataFrame:
    frame = pd.DataFrame({f: pd.Series([o.get(f) for _, o in chosen], dtype=object)
                          for f in fields})
    frame["_msg"] = [i for i, _ in chosen]
    frame["_obj"] = pd.Series([o for _, o in chosen], dtype=object)
    return frame


def _times(frame: pd.DataFrame, column: str, received: pd.Series) -> tuple[pd.Series, pd.Series]:
    """Return parsed UTC times and the mask of bad ones (no offset, unparseable, impossible)."""
    is_text = frame[column].map(lambda v: isinstance(v, str))
    text = frame[column].where(is_text, None).astype("string")
    has_offset = text.str.contains(_OFFSET, regex=True).fillna(False).astype(bool)
    parsed = pd.to_datetime(text.where(has_offset), utc=True, format="ISO8601", errors="coerce")
    bad = parsed.isna() | (parsed < EARLIEST) | (parsed > received + MAX_FUTURE)
    return parsed, bad.to_numpy()


class _Reject:
    """Collects (row mask, reason, detail) and removes rejected rows, in order of checks."""

    def __init__(self, frame: pd.DataFrame, messages: list[Message], limits: Limits) -> None:
        self.frame, self.messages, self.dead, self.limits = frame, messages, [], limits
        self.alive = np.ones(len(frame), dtype=bool)

    def __call__(self, mask: np.ndarray, reason: str, detail: Any) -> None:
        hit = np.asarray(mask, dtype=bool) & self.alive
        for pos in np.flatnonzero(hit):  # error path only
            row = self.frame.iloc[pos]
            msg = self.messages[row["_msg"]]
            text = detail(row) if callable(detail) else detail
            raw = json.dumps(row["_obj"], ensure_ascii=False, default=str)
            self.dead.append(_dead(msg, raw, reason, text, self.limits))
        self.alive &= ~hit


def _received(frame: pd.DataFrame, messages: list[Message]) -> pd.Series:
    return pd.Series([messages[i].received_at for i in frame["_msg"]], index=frame.index,
                     dtype="datetime64[us, UTC]")


def _is_text(series: pd.Series) -> np.ndarray:
    return series.map(lambda v: isinstance(v, str) and v != "").to_numpy(dtype=bool)


def _number(value: Any) -> bool:
    return type(value) is float or type(value) is int  # bool is not a number here


def _good_values(values: Any, lo: np.ndarray, hi: np.ndarray) -> bool:
    """Return True if *values* holds only properties the sensor reports, numbers in range.

    *lo* and *hi* are the sensor's range per property code; *values* must not be empty.
    """
    if type(values) is not dict or not values:
        return False
    for prop, value in values.items():
        code = _PROPERTY_CODE.get(prop)
        if code is None or not _number(value) or not lo[code] <= value <= hi[code]:
            return False
    return True


#: Integers beyond 64 bits (which JSON allows) go to the checks one by one: no float holds them.
_Int64 = Annotated[int, msgspec.Meta(ge=-(2**63), le=2**63 - 1)]
#: An empty id or sensor id, or empty values, go to the checks one by one (which name them).
_Name = Annotated[str, msgspec.Meta(min_length=1)]


class _Observation(msgspec.Struct, gc=False):
    """An observation as gateways send it, decoded straight into typed fields.

    Not a dict: no per-field lookups, and (``gc=False``) nothing for the garbage collector to
    track, a gateway's 50 observations at a time. Keys other than these are ignored, as they
    are by the checks one by one.
    """

    id: _Name
    sensor_id: _Name
    observed_at: str
    values: Annotated[dict[str, _Int64 | float], msgspec.Meta(min_length=1)]
    lon: float | None = None
    lat: float | None = None


_TYPED = msgspec.json.Decoder(_Observation | list[_Observation])


class _Typed:
    """The observations of a batch that decoded typed, as columns, with the message of each.

    A message decodes typed only if it is UTF-8 JSON whose every observation has the fields
    and types above (ids and values not empty, numbers finite, within 64 bits, no ``true`` for
    1, no NaN): then ``json.loads`` would read it to the same values. Anything else —
    malformed JSON, a missing field, text where a number belongs — is left to ``json.loads``
    and the checks one by one, which name what is wrong.

    The fields are taken into columns a message at a time, while its observations are still
    in the CPU's cache, rather than by a pass per field over the whole batch's objects later.
    """

    def __init__(self, limits: Limits = LIMITS) -> None:
        self.limits = limits
        self.dead: list[dict[str, Any]] = []  # messages that decoded typed but not plain
        self.ids: list[str] = []
        self.sensors: list[str] = []
        self.stamps: list[str] = []
        self.values: list[dict[str, float]] = []
        self.lons: list[float | None] = []
        self.lats: list[float | None] = []
        self.owners: list[int] = []  # position of the message in the batch
        self.slots: list[int] = []   # position in the message's array (-1: not an array)
        self._plain: dict[int, Any] = {}  # messages read by json.loads, each once

    def __len__(self) -> int:
        return len(self.ids)

    def add(self, owner: int, payload: bytes) -> bool:
        """Decode one message's observations; False (nothing kept) if it does not fit."""
        try:
            body = _TYPED.decode(payload)
        except (msgspec.MsgspecError, RecursionError):  # an unknown key nested very deep
            return False
        if type(body) is list:
            self.owners += [owner] * len(body)
            self.slots += range(len(body))
        else:
            body = [body]
            self.owners.append(owner)
            self.slots.append(-1)
        self.ids += [o.id for o in body]
        self.sensors += [o.sensor_id for o in body]
        self.stamps += [o.observed_at for o in body]
        self.values += [o.values for o in body]
        self.lons += [o.lon for o in body]
        self.lats += [o.lat for o in body]
        return True

    def placed(self) -> dict[int, tuple]:
        """``{index: (lon, lat)}`` of the observations that give a position (moving devices)."""
        n = len(self.ids)
        if self.lons.count(None) == n and self.lats.count(None) == n:
            return {}
        return {k: (x, y) for k, (x, y) in enumerate(zip(self.lons, self.lats, strict=True))
                if x is not None or y is not None}

    def plain(self, k: int, messages: list[Message]) -> tuple[int, dict] | None:
        """Observation *k* as ``json.loads`` reads it, for the checks one by one.

        None if its message is past a limit of :func:`parse` (an unknown key nested deep):
        the whole message is then a dead letter, in :attr:`dead`.
        """
        owner, slot = self.owners[k], self.slots[k]
        if owner not in self._plain:  # a gateway's 50 unknown sensors: one parse, not 50
            msg = messages[owner]
            try:
                self._plain[owner] = parse(msg.payload, self.limits)
            except Unreadable as exc:
                self._plain[owner] = None
                self.dead.append(_dead(msg, msg.payload, exc.reason, str(exc), self.limits))
        body = self._plain[owner]
        if body is None:
            return None
        return owner, body if slot < 0 else body[slot]


def _fields_ok(ids: list, sensors: list, values: list, devices: _DeviceArrays, max_id: int
               ) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None,
                          np.ndarray | None]:
    """Per observation: id, sensor and values pass their checks (not the time).

    The types are already known (:class:`_Observation`: ids and values not empty): a clean
    batch (the common case) is checked with set and C-level passes over the columns and one
    numpy comparison over all the values, against the range each sensor's profile allows
    for each property (:func:`declared_bounds`); any doubt falls back to the checks one
    observation at a time. Returns the mask, and when the values were read column-wise, each
    observation's count of values, every value (flattened) and each observation's row in the
    device table, for the caller to reuse.
    """
    n, position = len(ids), devices.position
    if n and (set(sensors) <= position.keys() and max(map(len, ids)) <= max_id
              and "\x00" not in "".join(ids) and "\x00" not in "".join(sensors)):
        props = list(itertools.chain.from_iterable(values))
        if set(props) <= _PROPERTY_CODE.keys():
            code = np.fromiter(map(_PROPERTY_CODE.__getitem__, props), dtype=np.int64,
                               count=len(props))
            number = np.fromiter(itertools.chain.from_iterable(map(dict.values, values)),
                                 dtype=float, count=len(props))
            counts = np.fromiter(map(len, values), dtype=np.int64, count=n)
            rows = np.fromiter(map(position.__getitem__, sensors), dtype=np.int64, count=n)
            at = np.repeat(devices.profile[rows], counts) * len(_PROPERTY_CODE) + code
            bad = ~((number >= devices.lo.ravel()[at]) & (number <= devices.hi.ravel()[at]))
            row_bad = np.zeros(n, dtype=bool)
            row_bad[np.repeat(np.arange(n), counts)[bad]] = True
            return ~row_bad, counts, number, rows
    lo, hi, profile = devices.lo, devices.hi, devices.profile
    ok = np.fromiter(
        (i != "" and len(i) <= max_id and s in position
         and _good_values(v, lo[profile[position[s]]], hi[profile[position[s]]])
         and "\x00" not in i and "\x00" not in s
         for i, s, v in zip(ids, sensors, values, strict=True)),
        dtype=bool, count=n)
    return ok, None, None, None


_COMPACT = msgspec.json.Encoder(order="sorted")


def _values_json(values: list[dict], numbers: np.ndarray, cameras: np.ndarray) -> np.ndarray:
    """Canonical JSON payloads ``{"cameras": […], "values": {…}}`` of checked observations.

    Canonical is what :func:`twin.schema.coerce_table` writes: ``json.dumps`` with sorted keys.
    Checked values are objects of known property names and numbers (*numbers*, flattened),
    so msgspec's compact text of them, one object a line, becomes exactly that once a space
    follows each ``:`` and ``,`` — provided every number prints alike in both, which holds
    for integers and for floats written without an exponent (0 and magnitudes in
    [1e-4, 1e16)); otherwise each is written by ``json.dumps``. *cameras* holds each
    observation's camera list as canonical JSON text, or None.
    """
    if not values:
        return np.array([], dtype=object)
    size = np.abs(numbers)
    if ((size == 0) | ((size >= 1e-4) & (size < 1e16))).all():
        text = _COMPACT.encode_lines(values).decode().replace('":', '": ').replace(',"', ', "')
    else:
        text = "".join(json.dumps(v, ensure_ascii=False, sort_keys=True, allow_nan=False) + "\n"
                       for v in values)
    # split in C: each observation's values, and its payload (wrapped before splitting)
    inner = np.array(text.split("\n")[:-1], dtype=object)
    out = np.array(('{"values": ' + text.replace("\n", '}\n{"values": ')).split("\n")[:-1],
                   dtype=object)
    with_cameras = np.flatnonzero(np.not_equal(cameras, None))
    if len(with_cameras):
        out[with_cameras] = ('{"cameras": ' + cameras[with_cameras] + ', "values": '
                             + inner[with_cameras] + "}")
    return out


def _valid_observations(typed: _Typed, messages: list[Message], registry: Registry):
    """Turn the typed observations that pass every check into events and readings, column-wise.

    This is the hot path of ingest: plain lists and numpy arrays, no per-row pandas. An
    observation it cannot vouch for (an empty id, an unknown sensor, a bad time or value …) is
    returned as ``json.loads`` reads it for :func:`_observations`, which applies the same
    checks one by one and dead-letters it with the first reason that fails.

    Parameters
    ----------
    typed
        The observations that decoded typed, and the message each came in.
    messages
        The batch (for the arrival times).
    registry
        The sensors and their enrichment.

    Returns
    -------
    tuple
        Events (or None when none passed), readings, and the observations left over as
        (message position, observation) pairs.
    """
    owners, n = typed.owners, len(typed)
    devices = registry.sensor_arrays
    position = devices.position
    ids, sensors, stamps, values = typed.ids, typed.sensors, typed.stamps, typed.values
    placed = typed.placed()
    pattern = re.compile(_OFFSET)
    with_offset = [t for t in set(stamps) if pattern.search(t)]  # a few shared stamps
    parsed = pd.to_datetime(pd.Series(with_offset, dtype=object), utc=True, format="ISO8601",
                            errors="coerce")
    stamp_ns = dict(zip(with_offset, parsed.to_numpy(dtype="datetime64[ns]").view(np.int64),
                        strict=True))
    nat = np.iinfo(np.int64).min
    when = np.fromiter(map(stamp_ns.get, stamps, itertools.repeat(nat, len(stamps))),
                       dtype=np.int64, count=n)
    received = _received_ns(messages)[owners]
    fields_ok, counts, numbers, rows = _fields_ok(ids, sensors, values, devices,
                                                  typed.limits.max_id_chars)
    good = (
        (when != nat) & (when >= EARLIEST.value) & (when <= received + MAX_FUTURE.value)
        & fields_ok
    )
    for k, (x, y) in placed.items():  # moving devices (rare): their position on the earth
        if x is not None and y is not None and not (abs(x) <= 180 and abs(y) <= 90):
            good[k] = False
    if good.all():
        rest, keep, take = [], np.arange(n), None
    else:
        rest = [p for k in np.flatnonzero(~good).tolist()
                if (p := typed.plain(k, messages)) is not None]
        keep = np.flatnonzero(good)
        take = keep.tolist()
    if len(keep) == 0:
        return None, None, rest
    if take is not None:
        ids, sensors, values = ([c[k] for k in take] for c in (ids, sensors, values))
        if counts is not None:
            numbers, counts, rows = numbers[np.repeat(good, counts)], counts[keep], rows[keep]
        placed = {int(np.searchsorted(keep, k)): xy for k, xy in placed.items() if good[k]}
    source = np.asarray(sensors, dtype=object)
    if rows is None:  # the batch was checked one by one
        rows = np.fromiter(map(position.__getitem__, sensors), dtype=np.int64,
                           count=len(sensors))
    lon, lat = devices.lon[rows], devices.lat[rows]
    own = [(k, x, y) for k, (x, y) in placed.items() if x is not None and y is not None]
    if own:  # a moving device's own position
        lon, lat = lon.copy(), lat.copy()
        at = [k for k, _, _ in own]
        lon[at] = [x for _, x, _ in own]
        lat[at] = [y for _, _, y in own]  # finite: the typed decoder reads no NaN or inf
    enriched = {c: devices.columns[c][rows] for c in ENRICH_OUT}
    cameras = devices.camera_json[rows]
    moved = (np.abs(lon - devices.lon[rows]) > 1e-9) | (np.abs(lat - devices.lat[rows]) > 1e-9)
    if moved.any():
        fresh = registry.enricher.enrich(lon[moved], lat[moved])
        for c in ENRICH_OUT:
            enriched[c][moved] = fresh[c].to_numpy(dtype=object)
        cameras[moved] = [_camera_json(c) for c in enriched["camera_ids"][moved]]
    if counts is None:  # the batch was checked one by one: read its values now
        counts = np.fromiter(map(len, values), dtype=np.int64, count=len(values))
        numbers = np.fromiter(itertools.chain.from_iterable(map(dict.values, values)),
                              dtype=float, count=int(counts.sum()))
    payload = _values_json(values, numbers, cameras)
    when = when[keep].astype("datetime64[ns]")
    event_ids = np.asarray(ids, dtype=object)
    # dtype=object keeps None as None (pandas 3 would infer str and use NaN); the columns come
    # in the order of the events table (no reordering copy) and stay apart (copy=False: not
    # copied into one block per dtype, which touches every value once more)
    events = pd.DataFrame({
        "id": pd.Series(event_ids, dtype=object),
        "kind": pd.Series(np.full(len(ids), "obs", dtype=object), dtype=object),
        "source_id": pd.Series(source, dtype=object),
        "observed_at": pd.DatetimeIndex(when, tz="UTC"),
        "received_at": pd.DatetimeIndex(received[keep].astype("datetime64[ns]"), tz="UTC"),
        "lon": lon, "lat": lat,
        **{c: pd.Series(enriched[c], dtype=object) for c in ENRICH_OUT[:-1]},
        "payload": pd.Series(payload, dtype=object),
    }, copy=False)
    # long form: one reading per (observation, property)
    at = np.repeat(np.arange(len(values)), counts)
    readings = pd.DataFrame({
        "event_id": pd.Series(event_ids[at], dtype=object),
        "source_id": pd.Series(source[at], dtype=object),
        "observed_at": pd.DatetimeIndex(when[at], tz="UTC"),
        "property": pd.Series(list(itertools.chain.from_iterable(values)), dtype=object),
        "value": numbers,
        "lon": lon[at], "lat": lat[at],
    }, copy=False)
    return events, readings, rest


def _camera_json(cameras: Any) -> str | None:
    """Return a device's cameras as canonical JSON text, or None when it has none."""
    if not isinstance(cameras, (list, tuple)) or not cameras:
        return None
    return json.dumps(list(cameras), ensure_ascii=False, sort_keys=True, default=str,
                      allow_nan=False)


def _received_ns(messages: list[Message]) -> np.ndarray:
    """Arrival time of every message as int64 nanoseconds since the epoch (UTC)."""
    stamps = pd.to_datetime(pd.Series([m.received_at for m in messages], dtype=object), utc=True)
    return stamps.to_numpy(dtype="datetime64[ns]").view(np.int64)


def _observations(chosen, messages, registry, limits):
    frame = _frame(chosen, ("id", "sensor_id", "observed_at", "values", "lon", "lat"))
    received = _received(frame, messages)
    reject = _Reject(frame, messages, limits)
    reject(~_is_text(frame["id"]), "bad_message", "id must be a non-empty string")
    reject(~_is_text(frame["sensor_id"]), "bad_message", "sensor_id must be a non-empty string")
    _reject_unstorable(reject, frame, ("id", "sensor_id", "values"), limits.max_id_chars)
    values_ok = frame["values"].map(lambda v: isinstance(v, dict) and len(v) > 0)
    reject(~values_ok.to_numpy(dtype=bool), "bad_message",
           "values must be an object of property → number")
    known = frame["sensor_id"].isin(registry.sensors.index).to_numpy()
    reject(~known, "unknown_sensor", lambda r: f"sensor {r['sensor_id']!r} is not in the "
           "sensors layer; load it with scripts/load_layer.py sensors")
    when, bad_time = _times(frame, "observed_at", received)
    reject(bad_time, "bad_time", lambda r: f"observed_at {r['observed_at']!r} must be ISO 8601 "
           "with an offset, after 2000 and not ahead of the receiving clock")
    # long form: one row per (observation, property)
    alive = np.flatnonzero(reject.alive)
    values = frame["values"].to_numpy(dtype=object)
    pairs = [(pos, k, v) for pos in alive for k, v in values[pos].items()]
    long = pd.DataFrame(pairs, columns=["pos", "property", "value"])
    # an integer no float can hold (JSON allows any) is out of range like any other too large
    is_num = long["value"].map(lambda v: type(v) is float or (type(v) is int and abs(v) < 2**1023))
    code = long["property"].map(_PROPERTY_CODE).fillna(-1).to_numpy(dtype=np.int64)
    prop_known = code >= 0
    num = pd.to_numeric(long["value"].where(is_num), errors="coerce")
    devices = registry.sensor_arrays
    sensor_of = frame["sensor_id"].to_numpy(dtype=object)[long["pos"].to_numpy(dtype=int)]
    profile = devices.profile[[devices.position[s] for s in sensor_of]].astype(np.int64)
    lo = np.where(prop_known, devices.lo[profile, np.maximum(code, 0)], np.nan)
    hi = np.where(prop_known, devices.hi[profile, np.maximum(code, 0)], np.nan)
    declared = prop_known & (lo <= hi)  # a property the sensor does not report: (+inf, -inf)
    out_of_range = declared & (~is_num | num.isna() | (num < lo) | (num > hi)).to_numpy()
    known_list = ", ".join(f"{p.name} [{p.min:g}, {p.max:g}] {p.unit}"
                           for p in PROPERTIES.values())
    for mask, reason, known in (
            (~prop_known, "unknown_property", lambda r: f"known: {known_list}"),
            (prop_known & ~declared, "undeclared_property",
             lambda r: f"sensor {r['sensor_id']!r} reports "
             + ", ".join(sorted(_allowed(registry, r["sensor_id"])))
             + " (its properties in the sensors layer, or its kind's)"),
            (out_of_range, "out_of_range",
             lambda r: "allowed: " + ", ".join(
                 f"{name} [{low:g}, {high:g}]"
                 for name, (low, high) in sorted(_allowed(registry, r["sensor_id"]).items())))):
        bad_pos = np.zeros(len(frame), dtype=bool)
        bad_pos[long.loc[mask, "pos"].to_numpy(dtype=int)] = True
        bad_props = long[mask].groupby("pos")["property"].agg(", ".join)
        reject(bad_pos, reason, lambda r, b=bad_props, why=reason, known=known: (
            f"{why.replace('_', ' ')}: {b.get(r.name, '')} ({known(r)})"))
    own_lon = pd.to_numeric(frame["lon"], errors="coerce").to_numpy(dtype=float)
    own_lat = pd.to_numeric(frame["lat"], errors="coerce").to_numpy(dtype=float)
    placed = np.isfinite(own_lon) & np.isfinite(own_lat)
    off_earth = placed & ~((np.abs(own_lon) <= 180) & (np.abs(own_lat) <= 90))
    reject(off_earth, "out_of_range", lambda r: f"position lon={r['lon']!r}, lat={r['lat']!r} "
           "is not on the earth: lon/lat must be WGS84 degrees (|lon| <= 180, |lat| <= 90)")
    keep = reject.alive
    ok = frame[keep]
    devices = registry.sensors.loc[ok["sensor_id"]]
    lon, lat = _moving(ok, devices)
    events = _events(ok, "obs", ok["sensor_id"], when[keep], received[keep], lon, lat, devices,
                     registry, payload=[{"values": v} for v in ok["values"]])
    long = long[long["pos"].isin(np.flatnonzero(keep))]
    pos = long["pos"].to_numpy(dtype=int)
    readings = pd.DataFrame({
        "event_id": frame["id"].to_numpy()[pos], "source_id": frame["sensor_id"].to_numpy()[pos],
        "observed_at": when.to_numpy()[pos], "property": long["property"].to_numpy(),
        "value": num[long.index].to_numpy(dtype=float),
    })
    where = pd.Series(np.arange(len(ok)), index=np.flatnonzero(keep))
    readings["lon"] = np.asarray(lon, dtype=float)[where[pos].to_numpy()] if len(pos) else []
    readings["lat"] = np.asarray(lat, dtype=float)[where[pos].to_numpy()] if len(pos) else []
    return events, reject.dead, readings


def _allowed(registry: Registry, sensor_id: str) -> dict[str, tuple[float, float]]:
    """Return what *sensor_id* may report (for the detail of a dead letter)."""
    row = registry.sensors.loc[sensor_id]
    return declared_bounds(row.get("kind"), row.get("properties"))


def _moving(ok: pd.DataFrame, devices: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """Where each observation was made: its own lon/lat (moving devices) or the sensor's."""
    lon = pd.to_numeric(ok["lon"], errors="coerce").to_numpy(dtype=float)
    lat = pd.to_numeric(ok["lat"], errors="coerce").to_numpy(dtype=float)
    own = np.isfinite(lon) & np.isfinite(lat)
    return (np.where(own, lon, devices["lon"].to_numpy(dtype=float)),
            np.where(own, lat, devices["lat"].to_numpy(dtype=float)))


def _events(ok, kind, source, when, received, lon, lat, devices, registry, payload):
    """EVENTS rows; devices' own enrichment unless the point moved (then enriched now)."""
    n = len(ok)
    enriched = pd.DataFrame({c: pd.Series([None] * n, dtype=object) for c in ENRICH_OUT})
    if devices is not None and n:
        for c in ENRICH_OUT:
            enriched[c] = devices[c].to_numpy(dtype=object)
        moved = (np.abs(lon - devices["lon"].to_numpy(dtype=float)) > 1e-9) | (
            np.abs(lat - devices["lat"].to_numpy(dtype=float)) > 1e-9)
    else:
        moved = np.ones(n, dtype=bool)
    if moved.any():
        fresh = registry.enricher.enrich(np.asarray(lon)[moved], np.asarray(lat)[moved])
        for c in ENRICH_OUT:
            enriched.loc[np.flatnonzero(moved), c] = fresh[c].to_numpy(dtype=object)
    cams = enriched["camera_ids"].map(lambda c: list(c) if isinstance(c, (list, tuple)) else [])
    payload = [_canonical({**p, "cameras": c} if c else p)
               for p, c in zip(payload, cams, strict=True)]
    out = pd.DataFrame({
        "id": ok["id"].astype(str).to_numpy(), "kind": kind,
        "source_id": np.asarray(source, dtype=object),
        "observed_at": np.asarray(when), "received_at": received.to_numpy(),
        "lon": np.asarray(lon, dtype=float), "lat": np.asarray(lat, dtype=float),
    })
    for c in ENRICH_OUT[:-1]:
        out[c] = pd.Series(enriched[c].to_numpy(dtype=object), dtype=object)
    out["payload"] = pd.Series(payload, dtype=object)
    return out


def _canonical(value: Any) -> str:
    """JSON text as :func:`twin.schema.coerce_table` writes it (sorted keys, UTF-8 kept).

    ``allow_nan=False``: PostgreSQL jsonb rejects NaN/Infinity, so writing one would fail the
    whole batch at the store; decoding dead-letters them first, this only makes sure.
    """
    return json.dumps(value, ensure_ascii=False, sort_keys=True, default=str, allow_nan=False)


def _alerts(chosen, messages, registry, limits):
    frame = _frame(chosen, ("id", "camera_id", "observed_at", "kind", "confidence",
                            "snapshot_url"))
    received = _received(frame, messages)
    reject = _Reject(frame, messages, limits)
    reject(~_is_text(frame["id"]), "bad_message", "id must be a non-empty string")
    _reject_unstorable(reject, frame, ("id", "camera_id", "kind", "confidence", "snapshot_url"),
                       limits.max_id_chars)
    reject(~frame["camera_id"].isin(registry.cameras.index).to_numpy(), "unknown_camera",
           lambda r: f"camera {r['camera_id']!r} is not in the cameras layer")
    reject(~frame["kind"].isin(CAMERA_KINDS).to_numpy(), "bad_message",
           lambda r: f"kind {r['kind']!r} is not one of {list(CAMERA_KINDS)}")
    conf = pd.to_numeric(frame["confidence"].where(
        frame["confidence"].map(lambda v: isinstance(v, (int, float)))), errors="coerce")
    reject(~((conf >= 0) & (conf <= 1)).to_numpy(), "out_of_range",
           "confidence must be a number in [0, 1]")
    when, bad_time = _times(frame, "observed_at", received)
    reject(bad_time, "bad_time", lambda r: f"observed_at {r['observed_at']!r} must be ISO 8601 "
           "with an offset, after 2000 and not ahead of the receiving clock")
    keep = reject.alive
    ok = frame[keep]
    devices = registry.cameras.loc[ok["camera_id"]]
    lon, lat = devices["lon"].to_numpy(dtype=float), devices["lat"].to_numpy(dtype=float)
    payload = [{"kind": k, "confidence": float(c), "snapshot_url": u}
               for k, c, u in zip(ok["kind"], conf[keep], ok["snapshot_url"], strict=True)]
    events = _events(ok, "camera", ok["camera_id"], when[keep], received[keep], lon, lat,
                     devices, registry, payload)
    alerts = pd.DataFrame({"event_id": ok["id"].to_numpy(), "camera_id": ok["camera_id"].to_numpy(),
                           "observed_at": when[keep].to_numpy(), "kind": ok["kind"].to_numpy(),
                           "confidence": conf[keep].to_numpy(dtype=float)})
    return events, reject.dead, alerts


REPORT_FIELDS = ("id", "service_code", "description", "lat", "long", "requested_datetime",
                 "media_url", "role", "address")


def _reports(chosen, messages, registry, limits):
    frame = _frame(chosen, REPORT_FIELDS)
    received = _received(frame, messages)
    reject = _Reject(frame, messages, limits)
    reject(~_is_text(frame["id"]), "bad_message", "id must be a non-empty string")
    reject(~_is_text(frame["service_code"]), "bad_message", "service_code is required")
    _reject_unstorable(reject, frame, REPORT_FIELDS, limits.max_id_chars)
    lon = pd.to_numeric(frame["long"], errors="coerce")
    lat = pd.to_numeric(frame["lat"], errors="coerce")
    reject(~((lon.abs() <= 180) & (lat.abs() <= 90)).to_numpy(), "out_of_range",
           "lat/long must be WGS84 degrees")
    when, bad_time = _times(frame, "requested_datetime", received)
    reject(bad_time, "bad_time", "requested_datetime must be ISO 8601 with an offset")
    keep = reject.alive
    ok = frame[keep]
    payload = [{k: o.get(k) for k in REPORT_FIELDS if k not in ("id", "lat", "long")}
               for o in ok["_obj"]]
    source = ok["role"].where(ok["role"].notna(), "resident")
    events = _events(ok, "report", source, when[keep], received[keep], lon[keep].to_numpy(),
                     lat[keep].to_numpy(), None, registry, payload)
    return events, reject.dead, None
