"""Declarations that everything derives from: columns, layer specs, and the store's own tables."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import geopandas as gpd
import numpy as np
import pandas as pd
import shapely

from twin.errors import DuplicateIdError, ValidationError
from twin.timeutil import to_utc

DTYPES = ("text", "int", "float", "bool", "date", "datetime", "json")
GEOMETRY_TYPES = ("Point", "LineString", "Polygon")
CRS = "EPSG:4326"
#: shapely type id of each geometry type a layer declares, and of its multi-part form.
GEOMETRY_TYPE_IDS = {"Point": 0, "LineString": 1, "Polygon": 3}
MULTI_TYPE_IDS = {0: 4, 1: 5, 3: 6}
#: Name of every shapely geometry type id (for messages).
GEOMETRY_TYPE_NAMES = {0: "Point", 1: "LineString", 2: "LinearRing", 3: "Polygon",
                       4: "MultiPoint", 5: "MultiLineString", 6: "MultiPolygon",
                       7: "GeometryCollection"}
#: Text read as a boolean (trimmed, lower-cased): staff files through the loader, values written
#: through :func:`coerce_series`. Declared once.
BOOLEAN_WORDS = {"true": True, "false": False, "1": True, "0": False, "是": True, "否": False,
                 "yes": True, "no": False, "y": True, "n": False, "t": True, "f": False,
                 "1.0": True, "0.0": False}


@dataclass(frozen=True)
class Column:
    """A typed attribute with its unit, zh/en labels and validation rules."""

    name: str
    dtype: str
    label_zh: str
    label_en: str
    unit: str | None = None
    required: bool = False
    choices: tuple[str, ...] | None = None
    min: float | None = None
    max: float | None = None
    personal: bool = False
    aliases: tuple[str, ...] = ()
    doc: str = ""
    #: Value map of the loader: (source value, value) pairs; source values match ignoring case
    #: and surrounding spaces; a value of None leaves the column empty (e.g. OSM building=yes)
    values: tuple[tuple[str, Any], ...] = ()
    #: The loader's default for features without a value: a value, or a function of the
    #: converted frame returning one value per row (None/NaN where it gives none)
    default: Any = None

    def __post_init__(self) -> None:
        if self.dtype not in DTYPES:
            raise ValueError(f"column {self.name}: dtype {self.dtype!r} not in {DTYPES}")
        for source, value in self.values:
            if self.choices is not None and value is not None and value not in self.choices:
                raise ValueError(
                    f"column {self.name}: value map {source!r} → {value!r} is not a choice"
                )

    def label(self, lang: str = "zh-CN") -> str:
        text = self.label_zh if lang.startswith("zh") else self.label_en
        return f"{text} ({self.unit})" if self.unit else text


@dataclass(frozen=True)
class MapStyle:
    """How a layer is drawn: RGBA colours, sizes in metres, draw order."""

    fill: tuple[int, int, int, int] = (80, 140, 220, 160)
    line: tuple[int, int, int, int] = (255, 255, 255, 200)
    radius_m: float = 4.0
    line_width_m: float = 1.0
    extrude_by: str | None = None
    z_order: int = 50
    visible: bool = True


# Every located feature is assigned these when it enters the twin (see twin.enrich).
ASSIGNED_COLUMNS: tuple[Column, ...] = (
    Column("grid_code", "text", "单元网格", "Unit grid"),
    Column("resp_grid_id", "text", "责任网格", "Responsibility grid"),
    Column("community_code", "text", "社区", "Community"),
    Column("street_code", "text", "街道", "Street"),
)
# Whatever the source file carried that no declared column takes: nothing staff send is lost.
ATTRS = Column("attrs", "json", "其他属性", "Other attributes")


@dataclass(frozen=True)
class LayerSpec:
    """One layer, declared once: the table, the loader, the map and the labels derive from it."""

    name: str
    title_zh: str
    title_en: str
    geometry_type: str | None
    id_field: str
    columns: tuple[Column, ...]
    also_geometry_types: tuple[str, ...] = ()
    located: bool = True
    style: MapStyle = field(default_factory=MapStyle)
    tooltip: tuple[str, ...] = ()
    fiware_type: str | None = None
    doc: str = ""
    #: A check of the whole loaded frame beyond the columns' rules (``gridtwin load`` runs it
    #: before anything is written): a function raising ValidationError, or None.
    check: Any = None

    def __post_init__(self) -> None:
        names = [c.name for c in self.columns]
        if self.id_field not in names:
            raise ValueError(f"layer {self.name}: id field {self.id_field!r} is not a column")
        if len(set(names)) != len(names):
            raise ValueError(f"layer {self.name}: duplicate column names")
        for gt in (self.geometry_type, *self.also_geometry_types):
            if gt is not None and gt not in GEOMETRY_TYPES:
                raise ValueError(f"layer {self.name}: geometry type {gt!r} not in {GEOMETRY_TYPES}")

    @property
    def all_columns(self) -> tuple[Column, ...]:
        """Declared columns, then the assigned grid columns (located layers), then ``attrs``."""
        return self.columns + (ASSIGNED_COLUMNS if self.located else ()) + (ATTRS,)

    @property
    def column_names(self) -> list[str]:
        return [c.name for c in self.all_columns]

    @property
    def geometry_types(self) -> tuple[str, ...]:
        return () if self.geometry_type is None else (self.geometry_type, *self.also_geometry_types)

    @property
    def personal_columns(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.columns if c.personal)

    def column(self, name: str) -> Column:
        for c in self.all_columns:
            if c.name == name:
                return c
        raise KeyError(name)

    def title(self, lang: str = "zh-CN") -> str:
        return self.title_zh if lang.startswith("zh") else self.title_en


@dataclass(frozen=True)
class TableSpec:
    """A store table that is not a layer (events, cases, audit …), declared once for both stores."""

    name: str
    columns: tuple[Column, ...]
    key: str
    point: bool = False  # carries a point geometry built from lon/lat


def _c(name: str, dtype: str, doc: str = "", **kw: Any) -> Column:
    return Column(name, dtype, name, name, doc=doc, **kw)


EVENTS = TableSpec(
    "twin_events",
    (
        _c("id", "text", "unique message id; appending the same id twice stores it once"),
        _c("kind", "text", "obs, camera, report, alarm …"),
        _c("source_id", "text", "sensor, camera or reporter the event came from"),
        _c("observed_at", "datetime", "when it happened (UTC)"),
        _c("received_at", "datetime", "when the twin stored it (UTC)"),
        _c("lon", "float"),
        _c("lat", "float"),
        *ASSIGNED_COLUMNS,
        _c("building_code", "text"),
        _c("lot_id", "text"),
        _c("payload", "json", "values, alert kind, description … as sent"),
    ),
    key="id",
    point=True,
)

CASES = TableSpec(
    "twin_cases",
    (
        _c("id", "text", "service_request_id in Open311"),
        _c("version", "int", "optimistic-concurrency counter, +1 on every update"),
        _c("status", "text"),
        _c("service_code", "text", "category (minor class) code"),
        _c("family", "text", "component or event"),
        _c("source", "text", "patrol, resident, camera, sensor, instruction"),
        _c("description", "text"),
        _c("lon", "float"),
        _c("lat", "float"),
        *ASSIGNED_COLUMNS,
        _c("area_class", "text"),
        _c("urgency", "text"),
        _c("assignee", "text"),
        _c("department", "text"),
        _c("requested_at", "datetime"),
        _c("updated_at", "datetime"),
        _c("deadline_at", "datetime"),
        _c("closed_at", "datetime"),
        # Step times, deadlines and timer of the loop, kept as columns (written by twin.cases
        # from the case's data) so that indicators and timers read no JSON.
        _c("filed_at", "datetime", "立案: when the case was filed"),
        _c("dispatched_at", "datetime", "派遣: when it was (last) dispatched"),
        _c("fed_back_at", "datetime", "处理反馈: when handling was (last) reported"),
        _c("checked_at", "datetime", "核查: when it was (last) checked"),
        _c("cancelled_at", "datetime", "作废: when it was cancelled"),
        _c("first_rework_at", "datetime", "返工: the first rework"),
        _c("file_deadline", "datetime", "filing deadline"),
        _c("handle_deadline", "datetime", "handling deadline (after any extension)"),
        _c("timer_stage", "text", "stage whose timer runs: file, dispatch, handle, check, close"),
        _c("timer_start", "datetime", "when the running timer started"),
        _c("timer_deadline", "datetime", "when the running timer runs out"),
        _c("timer_unit", "text", "time-limit unit of the running timer (twin.workcal.UNITS)"),
        _c("reworks", "int", "how many times the case was sent back to handling"),
        _c("returns", "int", "how many times the receiver returned it"),
        _c("supervised", "int", "how many supervisions (督办) it had"),
        _c("extended", "bool", "the handling deadline was extended"),
        _c("post", "text", "post of the receiver: grid_worker, department or organisation"),
        _c("org_id", "text", "the organisation the case was routed or handed to (kept after it "
           "was escalated back to the community)"),
        _c("org_deadline", "datetime", "the organisation's own handling deadline, on its own "
           "working hours (its time limit for the category)"),
        _c("data", "json", "everything else the case carries (photos, reporter, timers …)"),
    ),
    key="id",
    point=True,
)

#: Case columns that mirror a value of the case's ``data`` JSON: column → (path in data, how).
#: ``value`` takes the value at the path, ``count`` the length of the list there. twin.cases
#: fills them on every write; the stores fill them from ``data`` when they add the columns to
#: an older database.
CASE_DATA_COLUMNS: dict[str, tuple[tuple[str, ...], str]] = {
    "filed_at": (("times", "file"), "value"),
    "dispatched_at": (("times", "dispatch"), "value"),
    "fed_back_at": (("times", "feedback"), "value"),
    "checked_at": (("times", "check"), "value"),
    "cancelled_at": (("times", "cancel"), "value"),
    "first_rework_at": (("times", "first_rework"), "value"),
    "file_deadline": (("deadlines", "file"), "value"),
    "handle_deadline": (("deadlines", "handle"), "value"),
    "timer_stage": (("timer", "stage"), "value"),
    "timer_start": (("timer", "start"), "value"),
    "timer_deadline": (("timer", "deadline"), "value"),
    "timer_unit": (("timer", "unit"), "value"),
    "reworks": (("counts", "rework"), "value"),
    "returns": (("counts", "return"), "value"),
    "supervised": (("supervision",), "count"),
    "extended": (("extended",), "value"),
    "post": (("post",), "value"),
    "org_id": (("org", "id"), "value"),
    "org_deadline": (("org", "deadline"), "value"),
}

CASE_HISTORY = TableSpec(
    "twin_case_history",
    (
        _c("case_id", "text"),
        _c("version", "int", "the case's version after this step"),
        _c("at", "datetime"),
        _c("actor", "text"),
        _c("role", "text"),
        _c("action", "text", "create, file, dispatch, handle … (see twin.cases)"),
        _c("from_status", "text"),
        _c("to_status", "text"),
        _c("note", "text"),
        _c("data", "json"),
    ),
    key="case_id,version",
)

AUDIT = TableSpec(
    "twin_audit",
    (
        _c("seq", "int", "position in the chain, from 1"),
        _c("at", "datetime"),
        _c("actor", "text"),
        _c("action", "text"),
        _c("target", "text"),
        _c("detail", "json"),
        _c("origin", "text", "where the request came from (host, script)"),
        _c("prev_hash", "text"),
        _c("hash", "text", "sha256 over prev_hash and this row"),
    ),
    key="seq",
)

LAYER_VERSIONS = TableSpec(
    "twin_layer_versions",
    (
        _c("layer", "text"),
        _c("version", "int"),
        _c("created_at", "datetime"),
        _c("actor", "text"),
        _c("source", "text"),
        _c("rows", "int"),
        _c("note", "text"),
        _c("report", "json"),
        _c("current", "bool"),
    ),
    key="layer,version",
)

DEAD_LETTERS = TableSpec(
    "twin_dead_letters",
    (
        _c("id", "text",
           "hash of topic, payload and reason: a redelivered bad message is kept once"),
        _c("received_at", "datetime", "when the feed received it (UTC)"),
        _c("topic", "text", "MQTT topic, replay file or simulator it came on"),
        _c("reason", "text", "malformed_json, unknown_sensor, bad_time, out_of_range, "
           "non_finite_number, nul_character …"),
        _c("detail", "text", "what exactly was wrong, for the person fixing the device"),
        _c("payload", "text", "the raw payload as received (UTF-8, invalid bytes replaced), "
           "its first 4 KiB when longer"),
        _c("payload_bytes", "int", "size of the whole payload in bytes (UTF-8)"),
        _c("payload_sha256", "text", "SHA-256 of the whole payload (hex), also when cut"),
    ),
    key="id",
)

ALARM_STATUSES = ("open", "acknowledged", "in_progress", "resolved", "closed")

ALARMS = TableSpec(
    "twin_alarms",
    (
        _c("id", "text", "rule id, source id and opening time"),
        _c("rule_id", "text", "row of data/rules.csv that raised it"),
        _c("source_id", "text", "sensor or camera the alarm is about"),
        _c("source_kind", "text", "sensor or camera"),
        _c("status", "text", "open → acknowledged → in_progress → resolved → closed",
           choices=ALARM_STATUSES),
        _c("severity", "text", "info, warning, critical"),
        _c("opened_at", "datetime"),
        _c("updated_at", "datetime"),
        _c("resolved_at", "datetime"),
        _c("property", "text", "observed property the rule tests (pm25, smoke …)"),
        _c("value", "float", "the value that raised (or last kept up) the alarm"),
        _c("lon", "float"),
        _c("lat", "float"),
        *ASSIGNED_COLUMNS,
        _c("building_code", "text"),
        _c("lot_id", "text"),
        _c("case_id", "text", "the case it was promoted to"),
        _c("data", "json", "rule name, threshold, history of status changes …"),
    ),
    key="id",
    point=True,
)

#: The roles of users, declared once (twin.cases routes steps by them, twin.trust grants
#: permissions to them; ``public`` — not logged in — is not a role a user can hold).
ROLES = ("admin", "official", "dispatcher", "grid_worker", "planner", "data_staff", "resident",
         "org_admin", "org_staff", "volunteer")
#: Roles that work for one organisation (layer ``organisations``; the user's ``org_id``): they
#: see and act only on the cases assigned to it (twin.trust.organisations).
ORG_ROLES = ("org_admin", "org_staff")

USERS = TableSpec(
    "twin_users",
    (
        Column("username", "text", "用户名", "Username", required=True),
        Column("display_name", "text", "显示名", "Display name", personal=True),
        Column("role", "text", "角色", "Role", choices=ROLES, required=True),
        Column("grids", "json", "责任网格", "Grids", doc="responsibility grids of a grid worker"),
        Column("resident_id", "text", "居民编号", "Resident id"),
        Column("building_code", "text", "楼栋", "Building"),
        Column("org_id", "text", "所属组织", "Organisation",
               doc="the organisation (layer organisations) of an org_admin or org_staff user"),
        Column("password_hash", "text", "口令散列", "Password hash", doc="argon2id"),
        Column("disabled", "bool", "停用", "Disabled"),
        Column("failed_logins", "int", "失败次数", "Failed logins"),
        Column("locked_until", "datetime", "锁定至", "Locked until"),
        Column("last_login_at", "datetime", "上次登录", "Last login"),
        Column("created_at", "datetime", "创建时间", "Created"),
        Column("updated_at", "datetime", "更新时间", "Updated"),
    ),
    key="username",
)

#: What became of a login attempt (twin.trust.users: one row per claimed attempt slot).
LOGIN_OUTCOMES = ("claimed", "pending", "ok", "failed", "refused", "unlock")

LOGIN_ATTEMPTS = TableSpec(
    "twin_login_attempts",
    (
        _c("id", "text", "the slot an attempt claimed: hash of scope and window, then a number; "
           "the unique key is what makes two parallel attempts never share one"),
        _c("scope", "text", "user (a name from one client), client (every name from one client), "
           "refused (first refusal of a window) or unlock (an administrator's unlock)"),
        _c("username", "text", "the name as typed (cut to 64 characters)"),
        _c("client", "text", "where the attempt came from (web:<ip>, a script …)"),
        _c("bucket", "int", "the throttling window: minutes since 1970 // TWIN_LOCKOUT_MIN"),
        _c("slot", "int", "the attempt's number within its scope and window, from 1"),
        _c("at", "datetime"),
        _c("outcome", "text", "claimed (a client's slot); pending until the password was "
           "checked, then ok or failed; refused; unlock",
           choices=LOGIN_OUTCOMES),
    ),
    key="id",
)

NOTICE_KINDS = ("notice", "poll", "survey")
NOTICE_SCOPES = ("building", "grid", "community")

NOTICES = TableSpec(
    "twin_notices",
    (
        _c("id", "text"),
        _c("kind", "text", "notice (read only), poll (one question), survey (several)",
           choices=NOTICE_KINDS),
        _c("scope_kind", "text", "building, grid (unit or responsibility) or community",
           choices=NOTICE_SCOPES),
        _c("scope_id", "text", "building code, grid code / responsibility grid, community code"),
        _c("title", "text"),
        _c("body", "text"),
        _c("questions", "json", '[{"question": "…", "choices": ["…", …]}, …]'),
        _c("created_by", "text"),
        _c("created_at", "datetime"),
        _c("closes_at", "datetime", "answers are accepted until then (empty: no end)"),
    ),
    key="id",
)

ANSWERS = TableSpec(
    "twin_poll_answers",
    (
        _c("poll_id", "text"),
        _c("resident_key", "text", "pseudonym of the resident for this poll: one answer each"),
        _c("resident_id", "text", "the resident (emptied by the retention script)"),
        _c("building_code", "text"),
        _c("grid_code", "text"),
        _c("resp_grid_id", "text"),
        _c("community_code", "text"),
        _c("answer", "json", "one chosen option per question"),
        _c("answered_at", "datetime"),
    ),
    key="poll_id,resident_key",
)

#: A cockpit login that survives a reload (twin.trust.sessions; docs/trust.md, Sessions). The
#: browser holds the id in an HttpOnly cookie; the store holds only its SHA-256.
SESSIONS = TableSpec(
    "twin_sessions",
    (
        _c("id_hash", "text", "SHA-256 (hex) of the session id; the id itself is never stored"),
        _c("username", "text", "the user the session was opened for"),
        _c("created_at", "datetime"),
        _c("expires_at", "datetime", "absolute end (created_at + TWIN_SESSION_MAX_HOURS)"),
        _c("revoked_at", "datetime", "set at logout, or when the user is disabled or their "
           "password changes; a revoked session never resumes"),
        _c("origin", "text", "where it was opened (web:<ip>)"),
    ),
    key="id_hash",
)

#: When each session was last used: written apart from :data:`SESSIONS` so that a session
#: being used can never write back over its revocation (each row is replaced whole).
SESSION_SEEN = TableSpec(
    "twin_session_seen",
    (
        _c("id_hash", "text"),
        _c("last_seen_at", "datetime", "idle timeout: TWIN_SESSION_TIMEOUT_MIN after this"),
    ),
    key="id_hash",
)

#: Where notifications go (twin.notify; docs/notify.md): a webhook or an apprise URL, for one
#: role's view of the events of a grid (or of every grid), optionally addressed to one person.
NOTIFY_KINDS = ("webhook", "apprise")
NOTIFY_CHANNELS = TableSpec(
    "twin_notify_channels",
    (
        _c("id", "text", "the channel's name (letters, digits, . _ -)"),
        _c("kind", "text", "webhook (signed JSON POST) or apprise (WeCom, DingTalk, SMS, e-mail …)",
           choices=NOTIFY_KINDS),
        _c("url", "text", "https://… of the receiver, or an apprise URL (wecombot://, dingtalk://, "
           "mailto://, json:// …); it may carry a token: listed masked"),
        _c("secret", "text", "webhook HMAC-SHA256 key (never listed)"),
        _c("role", "text", "the role whose view of the events the channel gets", choices=ROLES),
        _c("grid", "text", "unit grid code or responsibility grid id; empty: every grid"),
        _c("recipient", "text", "only events addressed to this user or department; empty: all"),
        _c("events", "json", "event names the channel takes (case.assigned, alarm.opened …)"),
        _c("lang", "text", "language of the message texts: zh-CN or en"),
        _c("enabled", "bool"),
        _c("created_by", "text"),
        _c("updated_at", "datetime"),
    ),
    key="id",
)

#: Delivery state of an outbox row (twin.notify).
OUTBOX_STATUSES = ("pending", "sending", "delivered", "dead")

#: Notifications waiting to leave, written in the transaction of what caused them; delivered
#: at least once by ``gridtwin notify`` workers (claimed, retried with backoff, then dead).
OUTBOX = TableSpec(
    "twin_outbox",
    (
        _c("id", "text", "idempotency key: hash of the event key and the channel (sent as the "
           "Idempotency-Key header; a receiver dedupes on it)"),
        _c("event", "text", "case.assigned, alarm.opened …"),
        _c("subject", "text", "what it is about: case:<id>, alarm:<id> …"),
        _c("channel", "text", "the channel (twin_notify_channels.id) it goes to"),
        _c("recipient", "text", "the user or department it is addressed to, if any"),
        _c("role", "text", "the role whose view the payload is"),
        _c("payload", "json", "the message as that role may see it (title, text, data)"),
        _c("status", "text", "pending → sending → delivered, or back to pending, or dead",
           choices=OUTBOX_STATUSES),
        _c("attempts", "int", "delivery attempts so far"),
        _c("created_at", "datetime"),
        _c("next_at", "datetime", "not tried again before this time (backoff)"),
        _c("claimed_by", "text", "the worker sending it now"),
        _c("claimed_until", "datetime", "the claim's lease: another worker may take it after"),
        _c("delivered_at", "datetime"),
        _c("last_error", "text", "why the last attempt failed"),
    ),
    key="id",
)

#: API keys of the HTTP service (twin.trust.apikeys; docs/api.md). The key is shown once, at
#: creation; the store keeps only the SHA-256 of its secret part, so a copy of the table opens
#: nothing. A key acts as its user: role, grids and rights are read from twin_users on each use.
API_KEYS = TableSpec(
    "twin_api_keys",
    (
        _c("key_id", "text", "public part of the key (gtk_<key_id>_<secret>), shown in lists"),
        _c("secret_hash", "text", "SHA-256 (hex) of the secret part; the secret is never stored"),
        _c("username", "text", "the user the key acts as (and so their role)"),
        _c("label", "text", "what the key is for (the partner, the platform)"),
        _c("rate_per_min", "int", "requests per minute allowed (token bucket, per process)"),
        _c("created_at", "datetime"),
        _c("created_by", "text"),
        _c("revoked_at", "datetime", "set when revoked; a revoked key is refused at once"),
    ),
    key="key_id",
)

# -- volunteers, points and deliberation (twin.trust.volunteers, twin.points, twin.trust.proposals)

TASK_KINDS = ("patrol", "elderly_visit", "event_help", "other")
TASK_STATUSES = ("open", "cancelled", "done")

#: A volunteer task the community posts: where (a point, or an area), when, how many people.
VOLUNTEER_TASKS = TableSpec(
    "twin_volunteer_tasks",
    (
        _c("id", "text"),
        _c("kind", "text", "patrol, elderly_visit (独居老人探访), event_help, other",
           choices=TASK_KINDS),
        _c("title", "text"),
        _c("description", "text"),
        _c("lon", "float", "the task's place (the centre of its area)"),
        _c("lat", "float"),
        *ASSIGNED_COLUMNS,
        _c("area", "json", "GeoJSON polygon of the task's area (empty: the point)"),
        _c("tolerance_m", "float", "how far outside the area (or from the point) a check-in "
           "or check-out may be, metres", min=0),
        _c("starts_at", "datetime"),
        _c("ends_at", "datetime"),
        _c("capacity", "int", "how many volunteers it needs", min=1),
        _c("status", "text", "open, cancelled, done", choices=TASK_STATUSES),
        _c("created_by", "text"),
        _c("created_at", "datetime"),
        _c("proposal_id", "text", "the residents' proposal it came from, if any"),
    ),
    key="id",
    point=True,
)

SIGNUP_STATUSES = ("signed_up", "cancelled")

#: A volunteer's place on a task: signed up, checked in and out on site, hours.
VOLUNTEER_SIGNUPS = TableSpec(
    "twin_volunteer_signups",
    (
        _c("task_id", "text"),
        _c("volunteer", "text", "username"),
        _c("status", "text", "signed_up or cancelled", choices=SIGNUP_STATUSES),
        _c("signed_up_at", "datetime"),
        _c("checkin_at", "datetime"),
        _c("checkin_lon", "float"),
        _c("checkin_lat", "float"),
        _c("checkin_m", "float", "metres outside the task's area at check-in (0: inside)"),
        _c("checkout_at", "datetime"),
        _c("checkout_lon", "float"),
        _c("checkout_lat", "float"),
        _c("checkout_m", "float", "metres outside the task's area at check-out"),
        _c("hours", "float", "service hours recorded at check-out", min=0),
    ),
    key="task_id,volunteer",
)

POINT_REASONS = ("service_hours", "valid_report", "poll_answer", "proposal_adopted", "adjust")

#: The points ledger (积分): append-only, each row HMAC-chained like the audit log
#: (twin.auditchain); on PostGIS triggers refuse UPDATE, DELETE and TRUNCATE (migration 14).
POINTS_LEDGER = TableSpec(
    "twin_points_ledger",
    (
        _c("seq", "int", "position in the chain, from 1"),
        _c("at", "datetime"),
        _c("account", "text", "username of the resident or volunteer who earns"),
        _c("delta", "int", "points earned (negative: spent or corrected)"),
        _c("reason", "text", "service_hours, valid_report, poll_answer, proposal_adopted, adjust",
           choices=POINT_REASONS),
        _c("ref", "text", "what earned them (task:…, case:…, poll:…); one entry per ref"),
        _c("actor", "text", "who or what granted them"),
        _c("prev_hash", "text"),
        _c("hash", "text", "HMAC-SHA256 under the audit key over prev_hash and this row"),
    ),
    key="seq",
)

PROPOSAL_KINDS = ("wish", "micro_project")  # 微心愿, 民生微实事
PROPOSAL_STATUSES = ("open", "adopted", "declined")
PROPOSAL_OUTCOMES = ("task", "case")

#: A resident's proposal (议事协商) at a place; the community adopts or declines it.
PROPOSALS = TableSpec(
    "twin_proposals",
    (
        _c("id", "text"),
        _c("kind", "text", "wish (微心愿) or micro_project (民生微实事)", choices=PROPOSAL_KINDS),
        _c("title", "text"),
        _c("body", "text"),
        _c("lon", "float"),
        _c("lat", "float"),
        *ASSIGNED_COLUMNS,
        _c("proposer", "text", "username (personal: shown to the proposer and staff only)"),
        _c("created_at", "datetime"),
        _c("status", "text", "open, adopted, declined", choices=PROPOSAL_STATUSES),
        _c("decided_by", "text"),
        _c("decided_at", "datetime"),
        _c("reason", "text", "why it was adopted or declined (shown to residents)"),
        _c("outcome_kind", "text", "task or case", choices=PROPOSAL_OUTCOMES),
        _c("outcome_id", "text", "the volunteer task or case it became"),
    ),
    key="id",
    point=True,
)

#: One support per resident and proposal (the key refuses a second).
PROPOSAL_SUPPORTS = TableSpec(
    "twin_proposal_supports",
    (
        _c("proposal_id", "text"),
        _c("supporter", "text", "username"),
        _c("at", "datetime"),
    ),
    key="proposal_id,supporter",
)

#: The tables of volunteers, points and deliberation (created by migration 14 on PostGIS).
COMMUNITY_TABLES = (VOLUNTEER_TASKS, VOLUNTEER_SIGNUPS, POINTS_LEDGER, PROPOSALS,
                    PROPOSAL_SUPPORTS)

TABLES = (
    EVENTS, CASES, CASE_HISTORY, AUDIT, LAYER_VERSIONS, DEAD_LETTERS, ALARMS,
    USERS, NOTICES, ANSWERS, LOGIN_ATTEMPTS, SESSIONS, SESSION_SEEN,
    NOTIFY_CHANNELS, OUTBOX, API_KEYS, *COMMUNITY_TABLES,
)


# ---------------------------------------------------------------------------------------------
# Coercion and validation, shared by both stores and the loader


def _json_text(value: Any) -> Any:
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return None
    if isinstance(value, str):
        value = json.loads(value)  # must be JSON; re-written canonically so stores agree
    return json.dumps(value, ensure_ascii=False, sort_keys=True, default=str)


def coerce_series(series: pd.Series, column: Column) -> pd.Series:
    """Convert *series* to the column's dtype; raise ValidationError naming the bad values."""
    try:
        return _convert(series, column)
    except (ValueError, TypeError) as exc:
        raise ValidationError(
            f"column {column.name!r} must be {column.dtype}; values that do not convert: "
            f"{_bad_examples(series, column)} ({exc}). "
            "Fix them in the source file or map another field with --map."
        ) from None


_BOOLS = {True: True, False: False, **BOOLEAN_WORDS}  # 1 and 0 hash as True and False


def _is_text_dtype(kind: Any) -> bool:
    """Tell whether a dtype is one of pandas' text dtypes (``str``/``string``), not object."""
    return isinstance(kind, pd.StringDtype)


def _already(series: pd.Series, dtype: str) -> pd.Series | None:
    """Return *series* when it already holds the dtype's canonical values, else None.

    A frame validated once (by the loader, then by the store) is checked again here, cheaply:
    the pandas dtype, or for object columns the inferred type of every value, must be the
    canonical one — nothing is taken on trust from a flag.
    """
    kind = series.dtype
    if dtype == "int":
        return series if isinstance(kind, pd.Int64Dtype) else None
    if dtype == "float":
        return series if kind == np.dtype("float64") else None
    if dtype == "bool":
        return series if isinstance(kind, pd.BooleanDtype) else None
    if dtype == "datetime":
        utc = isinstance(kind, pd.DatetimeTZDtype) and str(kind.tz) in ("UTC", "utc")
        return series if utc else None
    if dtype in ("text", "date") and pd.api.types.is_object_dtype(kind):
        wanted = "string" if dtype == "text" else "date"
        if pd.api.types.infer_dtype(series, skipna=False) == wanted:
            return series  # nothing missing (the common case): one C pass, no isna
        inferred = pd.api.types.infer_dtype(series, skipna=True)
        if inferred == "empty":  # nothing but None/NaN (an absent column): all None
            return _absent(series.index)
        if inferred == wanted:
            return series.where(series.notna(), None) if series.isna().any() else series
    if dtype == "json" and (pd.api.types.is_object_dtype(kind) or _is_text_dtype(kind)):
        return _canonical_json_texts(series.astype(object))
    return None


def _canonical_json_texts(series: pd.Series) -> pd.Series | None:
    """Return *series* if its values are None or canonical JSON text (checked in two C calls).

    Each value parsed alone is one JSON value, so the values joined into one array parse to as
    many elements; re-serialised canonically, that array is the values joined by ", " exactly
    when every value already is canonical.
    """
    present = series.notna().to_numpy()
    if not present.any():
        return series.where(present, None)
    texts = series[present]
    if pd.api.types.infer_dtype(texts, skipna=False) != "string":
        return None
    values = texts.tolist()
    try:
        parsed = json.loads("[" + ",".join(values) + "]")
    except ValueError:
        return None
    if not isinstance(parsed, list) or len(parsed) != len(values):
        return None
    again = json.dumps(parsed, ensure_ascii=False, sort_keys=True, default=str)
    if again != "[" + ", ".join(values) + "]":
        return None
    return series.where(present, None)


#: Columns of at most this many values are converted value by value (:func:`_small`): pandas
#: spends ~0.1–0.4 ms on each operation however short the column, which was most of the cost
#: of a single-row read or a batch of Open311 posts (a case has 41 columns).
SMALL = 64


def is_missing(value: Any) -> bool:
    """Tell whether a cell is empty: None, NaN, pd.NA or NaT."""
    return (value is None or value is pd.NA or value is pd.NaT
            or (isinstance(value, float) and value != value))


#: Python types of an empty cell, and of cells that may be empty (NaN is a float).
_NONE = type(None)
_MAYBE_EMPTY = {float, np.float64, type(pd.NA), type(pd.NaT)}


def _integers(kinds: set[type]) -> bool:
    return all((k is int or issubclass(k, np.integer)) for k in kinds)


def _canonical(values: list, dtype: str) -> list | None:
    """Return *values* as the column's canonical Python values (None where empty), or None.

    Only values already of the column's Python type (or empty) are taken here — text to parse,
    numbers as text, mixed kinds go the vectorised way (:func:`coerce_series`), which also
    words the errors. The types of the values are told apart in one pass (a set of types).
    Times are UTC Timestamps (naive ones taken as UTC, as the vectorised path takes them).
    """
    if dtype == "json":  # the per-value rule of the vectorised path itself
        return [_json_text(v) for v in values]
    kinds = set(map(type, values))
    if kinds & _MAYBE_EMPTY:
        values = [None if is_missing(v) else v for v in values]
        kinds = set(map(type, values))
    kinds.discard(_NONE)
    if dtype == "text":
        return values if kinds <= {str} else None
    if dtype == "int" and _integers(kinds) and bool not in kinds:
        return [None if v is None else int(v) for v in values]
    if dtype == "float" and _integers(kinds - {float, np.float64}) and bool not in kinds:
        return [None if v is None else float(v) for v in values]
    if dtype == "bool" and (kinds <= {bool, np.bool_} or (  # SQLite gives booleans as 0 and 1
            kinds <= {int} and all(v in (0, 1) for v in values if v is not None))):
        return [None if v is None else bool(v) for v in values]
    if dtype == "datetime":
        if kinds <= {pd.Timestamp, datetime}:
            return [None if v is None else to_utc(v) for v in values]
        if kinds <= {str} and all(v is None or _RFC3339.fullmatch(v) for v in values):
            return [None if v is None else to_utc(datetime.fromisoformat(v))
                    for v in values]
    return None


#: Times as text that both this path and pandas' ISO 8601 parser read alike: RFC 3339's form
#: (the stores' own, ``isoformat()``'s), to the microsecond, with or without a zone.
_RFC3339 = re.compile(r"\d{4}-\d\d-\d\d[T ]\d\d:\d\d:\d\d(\.\d{1,6})?(Z|[+-]\d\d:\d\d)?")


def _small(series: pd.Series, dtype: str) -> pd.Series | None:
    """Convert a short text or object column value by value; None when the vectorised path must.

    The result is exactly what the vectorised conversion gives (the tests hold the two equal);
    an object column of text with nothing missing is returned as it is.
    """
    kind = series.dtype
    if not (pd.api.types.is_object_dtype(kind) or _is_text_dtype(kind)):
        return None
    values = series.tolist()
    done = _from_values(values, dtype, series.index)
    if (done is not None and dtype == "text" and pd.api.types.is_object_dtype(kind)
            and all(v is w for v, w in zip(values, done.tolist(), strict=True))):
        return series  # already canonical: the same series, no copy
    return done


def _from_values(values: list, dtype: str, index: pd.Index) -> pd.Series | None:
    """Return the typed column of *values* (see :func:`_small`), or None."""
    if dtype == "datetime":  # typed as pandas types them: nothing as seconds, text as us
        kinds = {type(v) for v in values if not is_missing(v)}
        if not kinds:
            return pd.Series(np.full(len(values), np.datetime64("NaT", "s")), index=index,
                             dtype="datetime64[s, UTC]")
        if kinds <= {str} and all(is_missing(v) or _stored_time(v) for v in values):
            # the stores' own fixed-width form, e.g. 2026-12-07T06:30:00.123Z
            stamps = [None if is_missing(v) else datetime.fromisoformat(v).replace(tzinfo=None)
                      for v in values]
            return pd.Series(np.array(stamps, dtype="datetime64[us]"), index=index,
                             dtype="datetime64[us, UTC]")
        return None
    canon = _canonical(values, dtype)
    if canon is None:
        return None
    if dtype == "int":
        return pd.Series(pd.array(canon, dtype="Int64"), index=index)
    if dtype == "float":
        return pd.Series(np.array([np.nan if v is None else v for v in canon], dtype="float64"),
                         index=index)
    if dtype == "bool":
        return pd.Series(pd.array(canon, dtype="boolean"), index=index)
    return pd.Series(canon, index=index, dtype=object)  # text, json


def coerce_values(values: Sequence[Any], column: Column) -> pd.Series:
    """:func:`coerce_series` of values as a database driver fetched them (a sequence).

    A few values already of the column's type become the typed column directly, with no
    object column in between (reading a user or a key is a few values in many columns).
    """
    values = list(values)
    if len(values) <= SMALL:
        done = _from_values(values, column.dtype, pd.RangeIndex(len(values)))
        if done is not None:
            return done
    return coerce_series(pd.Series(values, dtype=object), column)


def coerce_records(table: TableSpec, records: Sequence[Mapping[str, Any]]
                   ) -> dict[str, list] | None:
    """Return the table's columns of a few records as lists of canonical Python values.

    The short form of :func:`coerce_table` for the rows a store writes in one transaction (a
    batch of cases and their first steps, audit rows): no frame is built. None when there are
    more than :data:`SMALL` records, a field is unknown or a value needs the vectorised
    conversion — then :func:`coerce_table` does it (and words the error).
    """
    if len(records) > SMALL:
        return None
    names = {c.name for c in table.columns}
    if any(k not in names for r in records for k in r):
        return None
    out = {}
    for col in table.columns:
        values = _canonical([r.get(col.name) for r in records], col.dtype)
        if values is None:
            return None
        out[col.name] = values
    return out


def _stored_time(value: str) -> bool:
    """Tell whether *value* is a time as the embedded store writes it (24 characters, UTC)."""
    return (len(value) == 24 and value[10] == "T" and value[19] == "." and value[23] == "Z"
            and value[:4].isdigit())



def _convert(series: pd.Series, column: Column) -> pd.Series:
    dtype = column.dtype
    kind = series.dtype
    if kind.kind in "iu" and dtype in ("int", "float"):  # numpy integers: whole by nature
        return series.astype("Int64" if dtype == "int" else "float64")
    if kind == np.dtype(bool) and dtype == "bool":
        return series.astype("boolean")
    if len(series) <= SMALL:  # told apart value by value: cheaper than _already's checks
        done = _small(series, dtype)
        if done is not None:
            return done
    done = _already(series, dtype)
    if done is not None:
        return done
    if dtype == "text":
        return series.astype("string").astype(object).where(series.notna(), None)
    if dtype == "int":
        out = pd.to_numeric(series, errors="raise")
        if (out.dropna() % 1 != 0).any():
            raise ValueError("not whole numbers")
        return out.astype("Int64")
    if dtype == "float":
        return pd.to_numeric(series, errors="raise").astype("float64")
    if dtype == "bool":
        if (series.notna() & ~series.map(lambda v: _hashable_in(v, _BOOLS))).any():
            raise ValueError("not booleans")
        out = series.map(lambda v: _BOOLS.get(v.strip().lower() if isinstance(v, str) else v))
        return out.astype("boolean")
    if dtype == "date":
        out = pd.to_datetime(series, errors="raise").dt.date
        return out.where(series.notna(), None)
    if dtype == "datetime":
        return pd.to_datetime(series, errors="raise", utc=True, format="ISO8601")
    # built as a list: a text-typed result would turn None back into NaN
    return pd.Series([_json_text(v) for v in series.tolist()], index=series.index, dtype=object)


def _hashable_in(value: Any, mapping: dict) -> bool:
    key = value.strip().lower() if isinstance(value, str) else value
    try:
        return key in mapping
    except TypeError:
        return False


def _bad_examples(series: pd.Series, column: Column, limit: int = 5) -> list:
    bad = []
    for value in series.dropna().tolist():  # only on the error path
        try:
            _convert(pd.Series([value], dtype=object), column)
        except (ValueError, TypeError):
            bad.append(value)
            if len(bad) >= limit:
                break
    return bad


def check_rules(frame: pd.DataFrame, columns: tuple[Column, ...], id_column: str) -> None:
    """Check required, range and choice rules; raise ValidationError listing offending ids."""
    ids = frame[id_column] if id_column in frame else pd.Series(frame.index, index=frame.index)
    problems = []
    for col in columns:
        if col.name not in frame:
            continue
        s = frame[col.name]
        if col.required:
            missing = s.isna()
            if missing.any():
                problems.append(f"{col.name} is required but empty for {_ids(ids[missing])}")
        if col.choices is not None:
            bad = s.notna() & ~s.isin(col.choices)
            if bad.any():
                problems.append(
                    f"{col.name} must be one of {list(col.choices)}; got "
                    f"{sorted(set(s[bad].astype(str)))[:5]} for {_ids(ids[bad])}"
                )
        if col.min is not None or col.max is not None:
            num = pd.to_numeric(s, errors="coerce")
            bad = num.notna() & (
                (num < col.min if col.min is not None else False)
                | (num > col.max if col.max is not None else False)
            )
            if bad.any():
                problems.append(
                    f"{col.name} must lie in [{col.min}, {col.max}]"
                    f"{' ' + col.unit if col.unit else ''}; out of range for {_ids(ids[bad])}"
                )
    if problems:
        raise ValidationError("; ".join(problems) + ". Correct the source data and load again.")


def _ids(series: pd.Series, limit: int = 5) -> str:
    values = [str(v) for v in series.tolist()]
    more = f" and {len(values) - limit} more" if len(values) > limit else ""
    return ", ".join(values[:limit]) + more


def duplicated(values: pd.Series) -> np.ndarray:
    """Mark every value that occurs more than once (``duplicated(keep=False)``).

    Unique values, the usual case, are recognised first by one hash pass that keeps no
    positions (about half the cost of marking them).
    """
    if values.is_unique:
        return np.zeros(len(values), dtype=bool)
    return values.duplicated(keep=False).to_numpy()


def _absent(index: pd.Index) -> pd.Series:
    """Return an absent optional column: all None, as object (as text it would be converted).

    (``pd.Series(None, dtype=object)`` would hold NaN.)
    """
    return pd.Series(np.full(len(index), None, dtype=object), index=index)


def _absent_column(index: pd.Index, column: Column) -> pd.Series:
    """Return a column the frame lacks, empty and already of the column's canonical dtype.

    An all-None text, date or JSON column is what :func:`coerce_series` would return for it;
    it is made so here rather than made, checked and made again (4 of a load's columns).
    """
    if column.dtype in ("text", "date", "json"):
        return _absent(index)
    return coerce_series(_absent(index), column)


def validate_layer_frame(
    spec: LayerSpec, frame: pd.DataFrame, *, check_validity: bool = True
) -> gpd.GeoDataFrame | pd.DataFrame:
    """Return *frame* as the layer's canonical table, or raise a ValidationError saying why not.

    Canonical means: exactly ``spec.column_names`` in order (missing optional columns added as
    empty), values of the declared types, unique non-empty ids, geometries of an allowed type,
    non-empty, in EPSG:4326. Nothing is repaired here: repairing is the loader's job. Columns
    that already hold canonical values are checked, not converted again, so validating a
    validated frame is cheap.

    Parameters
    ----------
    spec
        The layer.
    frame
        Its features.
    check_validity
        Test every geometry with ``shapely.is_valid``. Only the loader, which has just tested
        and repaired every geometry, passes False; the stores always check.
    """
    unknown = [c for c in frame.columns if c not in spec.column_names and c != "geometry"]
    if unknown:
        raise ValidationError(
            f"layer {spec.name!r} has no columns {unknown}; declared columns are "
            f"{spec.column_names}. Put extra fields into 'attrs' or load the file with "
            "scripts/load_layer.py, which keeps them there."
        )
    # copy=False: the columns are the frame's own (copy-on-write keeps them safe to share) or
    # made here, not copied into one block per dtype
    out = pd.DataFrame(
        {
            col.name: coerce_series(frame[col.name], col) if col.name in frame
            else _absent_column(frame.index, col)
            for col in spec.all_columns
        },
        index=frame.index,
        copy=False,
    )
    if spec.id_field not in frame or out[spec.id_field].isna().any():
        raise ValidationError(
            f"layer {spec.name!r}: every feature needs an id in {spec.id_field!r}; "
            f"{int(out[spec.id_field].isna().sum())} have none. The loader generates stable ids."
        )
    dup = duplicated(out[spec.id_field])
    if dup.any():
        raise DuplicateIdError(
            f"layer {spec.name!r}: duplicate {spec.id_field} values "
            f"{_ids(out.loc[dup, spec.id_field].drop_duplicates())}; ids must be unique."
        )
    check_rules(out, spec.columns, spec.id_field)
    if spec.geometry_type is None:
        return out.reset_index(drop=True)
    if not isinstance(frame, gpd.GeoDataFrame) or frame.geometry.name not in frame:
        raise ValidationError(
            f"layer {spec.name!r} needs {spec.geometry_type} geometries; the data have none."
        )
    geoms = frame.geometry
    if geoms.crs is None:
        raise ValidationError(
            f"layer {spec.name!r}: the data have no CRS; set one (e.g. gdf.set_crs(4326)) "
            "or load with --crs."
        )
    if not geoms.crs.equals(CRS):
        geoms = geoms.to_crs(CRS)
    values = geoms.values
    empty = shapely.is_missing(values) | shapely.is_empty(values)
    if empty.any():
        raise ValidationError(
            f"layer {spec.name!r}: empty or missing geometry for "
            f"{_ids(out.loc[empty, spec.id_field])}."
        )
    kinds = pd.Series(shapely.get_type_id(values), index=frame.index)
    allowed = [GEOMETRY_TYPE_IDS[t] for t in spec.geometry_types]
    bad = ~kinds.isin(allowed)
    if bad.any():
        got = sorted({GEOMETRY_TYPE_NAMES.get(k, "?") for k in kinds[bad]})
        raise ValidationError(
            f"layer {spec.name!r} takes {'/'.join(spec.geometry_types)} geometries; got {got} for "
            f"{_ids(out.loc[bad, spec.id_field])}. Convert them or load with scripts/load_layer.py."
        )
    invalid = ~shapely.is_valid(values) if check_validity else np.zeros(len(values), dtype=bool)
    if invalid.any():
        raise ValidationError(
            f"layer {spec.name!r}: invalid geometry for {_ids(out.loc[invalid, spec.id_field])}; "
            "scripts/load_layer.py repairs them (or rejects them with --strict)."
        )
    # copy=False: the columns were just made here (copy-on-write guards the geometries)
    return gpd.GeoDataFrame(out, geometry=geoms.values, crs=CRS, copy=False).reset_index(drop=True)


@dataclass(frozen=True, eq=False)
class ValidatedLayer:
    """A layer frame :func:`validate_layer_frame` returned: the stores write it unchecked again.

    Checking a whole frame again cost a fifth of a 100,000-feature load, so the loader hands
    over what it validated as this type (:func:`twin.load.load_layer` → :func:`twin.twin.
    put_layer` → :meth:`twin.store.base.Store.write_layers`). Only the grid columns
    :func:`twin.enrich.assign_grids` fills may change after validation (:meth:`with_frame`);
    :func:`layer_frame_to_store` checks those, and the shape of the table, nothing else.

    Attributes
    ----------
    name
        The layer.
    frame
        Exactly what ``validate_layer_frame`` returned (grid columns aside).
    located
        Optionally, where the features lie in the grid cells the loader read
        (``GridCells.cells.locate``, computed while the frame was validated), so that
        :func:`twin.twin.put_layer` need not locate them again; None: not known.
    """

    name: str
    frame: pd.DataFrame
    located: Any = None

    def with_frame(self, frame: pd.DataFrame) -> ValidatedLayer:
        """Return the same layer with its grid columns assigned again (nothing else changed)."""
        return ValidatedLayer(self.name, frame)

    def __len__(self) -> int:
        return len(self.frame)


def layer_frame_to_store(
    spec: LayerSpec, frame: pd.DataFrame | ValidatedLayer, *, prevalidated: bool = False
) -> gpd.GeoDataFrame | pd.DataFrame:
    """Return the frame a store writes: :func:`validate_layer_frame`'s, or a re-checked handover.

    The stores call this on every frame they are given. A :class:`ValidatedLayer` (or, with
    *prevalidated*, a frame said to be one) is what ``validate_layer_frame`` returned (every value
    canonical, every geometry tested and repaired) with at most the grid columns
    :func:`twin.enrich.assign_grids` fills changed since, so only what can have changed is
    checked: the exact canonical columns in order, a fresh 0..n-1 index, the CRS, and the
    assigned columns' values and rules. Every other frame gets the full validation.
    """
    if isinstance(frame, ValidatedLayer):
        if frame.name != spec.name:
            raise ValidationError(
                f"a validated {frame.name!r} frame was handed over as layer {spec.name!r}; "
                "write each layer under its own name"
            )
        frame, prevalidated = frame.frame, True
    if not prevalidated:
        return validate_layer_frame(spec, frame)
    expected = spec.column_names + (["geometry"] if spec.geometry_type else [])
    is_geo = isinstance(frame, gpd.GeoDataFrame)
    if (
        list(frame.columns) != expected
        or not isinstance(frame.index, pd.RangeIndex)
        or frame.index.start != 0
        or frame.index.step != 1
        or (spec.geometry_type is not None and not (
            is_geo and frame.geometry.name == "geometry"
            and frame.crs is not None and frame.crs.equals(CRS)))
        or (spec.geometry_type is None and is_geo)
    ):
        raise ValidationError(
            f"layer {spec.name!r}: the frame handed over as already validated is not the "
            "canonical table validate_layer_frame returns; write it with Store.write_layer."
        )
    assigned = [c for c in ASSIGNED_COLUMNS if spec.located]
    if not assigned:
        return frame
    out = frame.copy(deep=False)
    for col in assigned:
        out[col.name] = coerce_series(out[col.name], col)
    check_rules(out, tuple(assigned), spec.id_field)
    return out


def coerce_table(table: TableSpec, frame: pd.DataFrame) -> pd.DataFrame:
    """Return *frame* with exactly the table's columns, typed; unknown columns are an error."""
    known = {c.name for c in table.columns} | {"geometry"}
    unknown = [c for c in frame.columns if c not in known]
    if unknown:
        raise ValidationError(
            f"table {table.name}: unknown fields {unknown}; "
            f"allowed: {[c.name for c in table.columns]}"
        )
    frame = frame.reset_index(drop=True)
    # built in one step (a column inserted at a time costs pandas ~0.2 ms each) and without
    # copying the columns into one block per dtype (copy-on-write keeps them safe to share)
    return pd.DataFrame({
        col.name: coerce_series(frame[col.name] if col.name in frame else _absent(frame.index),
                                col)
        for col in table.columns
    }, index=frame.index, copy=False)
