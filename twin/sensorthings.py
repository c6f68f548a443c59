"""OGC SensorThings API 1.1 (read) over the sensors layer and its stored readings; pure mapping.

Things are the features of ``sensors`` (one Location each, the same id); a Datastream is one
sensor × one observed property (``sensor_id:property``); ObservedProperties are
:data:`twin.feeds.models.PROPERTIES`; an Observation is one value of one stored reading
(``event_id:property``). Queries take ``$filter`` (``eq ne gt ge lt le`` joined by ``and``/``or``,
on ``result``, ``phenomenonTime``, ``resultTime``, ``name``, ``@iot.id``, ``properties/<x>`` …),
``$orderby``, ``$top``, ``$skip``, ``$count`` and ``$expand`` (Datastreams, Observations,
Locations, Thing, ObservedProperty), and page with ``@iot.nextLink``.

FIWARE: a layer that declares ``fiware_type`` (``Device`` for sensors) is also reachable under
that name (``/Device`` lists the Things), and its camel-case column aliases (``batteryLevel``,
``deviceState``) are accepted wherever the column's own name is (``properties/batteryLevel``).
Who may see what is decided in :mod:`twin.trust.sensing`; this module only maps and queries.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urlencode

import numpy as np
import pandas as pd

from twin.errors import NotFoundError, ValidationError

VERSION = "v1.1"
ENTITY_SETS = ("Things", "Locations", "Datastreams", "ObservedProperties", "Observations")
#: navigation name → (entity set, one or many)
NAVIGATION = {
    "Things": ("Things", True), "Thing": ("Things", False),
    "Locations": ("Locations", True), "Location": ("Locations", False),
    "Datastreams": ("Datastreams", True), "Datastream": ("Datastreams", False),
    "ObservedProperty": ("ObservedProperties", False),
    "ObservedProperties": ("ObservedProperties", True),
    "Observations": ("Observations", True),
}
#: (from set, to set) → (key column here, key column there)
LINKS = {
    ("Things", "Datastreams"): ("@iot.id", "thing_id"),
    ("Things", "Locations"): ("@iot.id", "thing_id"),
    ("Locations", "Things"): ("thing_id", "@iot.id"),
    ("Datastreams", "Things"): ("thing_id", "@iot.id"),
    ("Datastreams", "ObservedProperties"): ("observed_property_id", "@iot.id"),
    ("Datastreams", "Observations"): ("@iot.id", "datastream_id"),
    ("ObservedProperties", "Datastreams"): ("@iot.id", "observed_property_id"),
    ("Observations", "Datastreams"): ("datastream_id", "@iot.id"),
}
#: Columns used for links and queries but not shown in an entity.
HIDDEN = ("thing_id", "datastream_id", "observed_property_id", "_order")
DEFAULT_TOP = 100
MAX_TOP = 1000


# -- the entity frames -------------------------------------------------------------------------


def _iso(values: pd.Series) -> pd.Series:
    stamps = pd.to_datetime(values, utc=True)
    text = stamps.dt.strftime("%Y-%m-%dT%H:%M:%S.%f").str[:-3] + "Z"
    return text.astype(object).where(stamps.notna(), None)


def _properties_of(kind: Any, declared: Any) -> list[str]:
    from twin.feeds.models import DEVICE_PROPERTIES, KIND_PROPERTIES, PROPERTIES

    if isinstance(declared, str) and declared.strip():
        try:
            declared = json.loads(declared)
        except ValueError:
            declared = None
    names = list(declared) if isinstance(declared, dict) and declared else list(
        KIND_PROPERTIES.get(str(kind), ()))
    return [n for n in dict.fromkeys([*names, *DEVICE_PROPERTIES]) if n in PROPERTIES]


def fiware_aliases(layer: str) -> dict[str, str]:
    """Return FIWARE attribute name → column of *layer*, if the layer declares a ``fiware_type``.

    The camel-case aliases of its columns (``batteryLevel`` → ``battery_level``) are the
    FIWARE Smart Data Models' names; a layer without a FIWARE type has none.
    """
    from twin.layers import get_layer

    spec = get_layer(layer)
    if not spec.fiware_type:
        return {}
    return {alias: col.name for col in spec.columns for alias in col.aliases
            if re.fullmatch(r"[a-z]+[A-Z][A-Za-z]*", alias)}


def fiware_entity_sets() -> dict[str, str]:
    """Return FIWARE type → SensorThings entity set, for the layers this API serves."""
    from twin.layers import get_layer

    fiware = get_layer("sensors").fiware_type
    return {fiware: "Things"} if fiware else {}


def things(sensors: pd.DataFrame, *, private: bool = True) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Return the Things and Locations frames of a sensors layer frame.

    *private* False leaves out the building and parking lot a sensor belongs to (the public's
    view); coordinates are taken as given (round them before, for the public).
    """
    from twin.layers import get_layer

    spec = get_layer("sensors")
    ids = sensors["sensor_id"].astype(str)
    aliases = {col: alias for alias, col in fiware_aliases("sensors").items()}
    shown = [c for c in ("kind", "device_state", "battery_level", "report_interval_s",
                         "ref_building", "ref_lot") if c in sensors
             and (private or c not in ("ref_building", "ref_lot"))]
    props = []
    for _, row in sensors[shown].iterrows() if shown else ((None, {}) for _ in ids):
        item = {c: (None if pd.isna(v) else (v.item() if hasattr(v, "item") else v))
                for c, v in dict(row).items()}
        item.update({aliases[c]: item[c] for c in list(item) if c in aliases})
        if spec.fiware_type:
            item["fiware_type"] = spec.fiware_type
        props.append(item)
    props_series = pd.Series(props, index=sensors.index, dtype=object)
    for i, sid in zip(sensors.index, ids, strict=True):
        if spec.fiware_type:
            props_series[i]["fiware_id"] = f"urn:ngsi-ld:{spec.fiware_type}:{sid}"
    name = sensors["name"].astype(object) if "name" in sensors else ids
    thing = pd.DataFrame({
        "@iot.id": ids.to_numpy(),
        "name": name.where(pd.notna(name), ids).astype(str).to_numpy(),
        "description": (sensors["kind"].astype(str) + " sensor").to_numpy(),
        "properties": props_series.to_numpy(),
        "_declared": (sensors["properties"] if "properties" in sensors
                      else pd.Series(None, index=sensors.index)).to_numpy(),
    })
    xs, ys = sensors.geometry.x.to_numpy(), sensors.geometry.y.to_numpy()
    location = pd.DataFrame({
        "@iot.id": ids.to_numpy(),
        "name": thing["name"].to_numpy(),
        "description": thing["description"].to_numpy(),
        "encodingType": "application/geo+json",
        "location": [{"type": "Point", "coordinates": [round(float(x), 7), round(float(y), 7)]}
                     for x, y in zip(xs, ys, strict=True)],
        "thing_id": ids.to_numpy(),
    })
    return thing, location


def observed_properties() -> pd.DataFrame:
    """Return the ObservedProperties frame (every property a sensor may report)."""
    from twin.feeds.models import PROPERTIES

    return pd.DataFrame({
        "@iot.id": list(PROPERTIES),
        "name": list(PROPERTIES),
        "definition": [f"https://smartdatamodels.org/ {p.fiware}" for p in PROPERTIES.values()],
        "description": [f"{p.name} ({p.unit}); FIWARE {p.fiware}" for p in PROPERTIES.values()],
    })


def datastreams(thing: pd.DataFrame, kinds: pd.Series, hidden: set[str] = frozenset()
                ) -> pd.DataFrame:
    """Return the Datastreams frame: one per Thing × property it reports (minus *hidden*)."""
    from twin.feeds.models import PROPERTIES

    rows = []
    for tid, name, kind, declared in zip(thing["@iot.id"], thing["name"], kinds,
                                         thing["_declared"], strict=True):
        for prop in _properties_of(kind, declared):
            if prop in hidden:
                continue
            p = PROPERTIES[prop]
            rows.append({
                "@iot.id": f"{tid}:{prop}", "name": f"{name} {prop}",
                "description": f"{prop} of {name}",
                "observationType": "http://www.opengis.net/def/observationType/OGC-OM/2.0/"
                                   "OM_Measurement",
                "unitOfMeasurement": {"name": p.unit, "symbol": p.unit, "definition": p.fiware},
                "thing_id": tid, "observed_property_id": prop,
            })
    columns = ["@iot.id", "name", "description", "observationType", "unitOfMeasurement",
               "thing_id", "observed_property_id"]
    return pd.DataFrame(rows, columns=columns)


def observations(events: pd.DataFrame, streams: pd.DataFrame) -> pd.DataFrame:
    """Return the Observations frame: one per value of each reading of a known Datastream."""
    columns = ["@iot.id", "phenomenonTime", "resultTime", "result", "datastream_id", "_order"]
    if events.empty or streams.empty:
        return pd.DataFrame({c: pd.Series(dtype=object) for c in columns})
    ids, times, received, sources, values = [], [], [], [], []
    known = set(streams["@iot.id"])
    for eid, src, obs, rec, payload in zip(events["id"], events["source_id"],
                                           events["observed_at"], events["received_at"],
                                           events["payload"], strict=True):
        data = payload if isinstance(payload, dict) else json.loads(payload or "{}")
        for prop, value in (data.get("values") or {}).items():
            stream = f"{src}:{prop}"
            if stream in known:
                ids.append(f"{eid}:{prop}")
                times.append(obs)
                received.append(rec)
                sources.append(stream)
                values.append(value)
    out = pd.DataFrame({"@iot.id": ids, "phenomenonTime": pd.to_datetime(times, utc=True),
                        "resultTime": pd.to_datetime(received, utc=True),
                        "result": pd.Series(values, dtype=object), "datastream_id": sources})
    out["_order"] = np.arange(len(out))
    return out


# -- $filter ------------------------------------------------------------------------------------

_TOKEN = re.compile(r"""\s*(?:
    (?P<lp>\()|(?P<rp>\))|
    (?P<str>'(?:[^']|'')*')|
    (?P<time>\d{4}-\d{2}-\d{2}T[0-9:.]+(?:Z|[+-]\d{2}:\d{2}))|
    (?P<num>-?\d+(?:\.\d+)?(?:[eE][+-]?\d+)?)|
    (?P<word>[A-Za-z@_][A-Za-z0-9@_./]*)
)""", re.VERBOSE)
_OPS = {"eq": "__eq__", "ne": "__ne__", "gt": "__gt__", "ge": "__ge__", "lt": "__lt__",
        "le": "__le__"}
_TIMES = ("phenomenonTime", "resultTime")


def _tokens(text: str) -> list[tuple[str, str]]:
    out, pos = [], 0
    text = text.strip()
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if not m or m.end() == pos:
            raise ValidationError(f"$filter: cannot read {text[pos:pos + 20]!r}; write e.g. "
                                  "result gt 50 and phenomenonTime ge 2026-03-01T00:00:00Z")
        kind = m.lastgroup or ""
        out.append((kind, m.group(kind)))
        pos = m.end()
    return out


@dataclass
class _Parser:
    tokens: list[tuple[str, str]]
    frame: pd.DataFrame
    aliases: Mapping[str, str]
    pos: int = 0

    def peek(self) -> tuple[str, str] | None:
        return self.tokens[self.pos] if self.pos < len(self.tokens) else None

    def take(self) -> tuple[str, str]:
        tok = self.peek()
        if tok is None:
            raise ValidationError("$filter ends too early; a comparison is "
                                  "<property> <eq|ne|gt|ge|lt|le> <value>")
        self.pos += 1
        return tok

    def expr(self) -> pd.Series:
        left = self.conj()
        while (tok := self.peek()) and tok == ("word", "or"):
            self.take()
            left = left | self.conj()
        return left

    def conj(self) -> pd.Series:
        left = self.term()
        while (tok := self.peek()) and tok == ("word", "and"):
            self.take()
            left = left & self.term()
        return left

    def term(self) -> pd.Series:
        kind, text = self.take()
        if kind == "lp":
            inner = self.expr()
            if self.peek() is None or self.take()[0] != "rp":
                raise ValidationError("$filter: a '(' is not closed")
            return inner
        if kind != "word":
            raise ValidationError(f"$filter: expected a property name, got {text!r}")
        column = column_of(self.frame, text, self.aliases)
        op_kind, op = self.take()
        if op not in _OPS:
            raise ValidationError(f"$filter: unknown operator {op!r}; use "
                                  f"{', '.join(_OPS)} (joined by and / or)")
        vkind, vtext = self.take()
        value = _literal(vkind, vtext)
        if text in _TIMES:
            if not isinstance(value, pd.Timestamp):
                raise ValidationError(f"$filter: compare {text} with a time such as "
                                      "2026-03-01T00:00:00Z")
        elif isinstance(value, pd.Timestamp):
            value = value.isoformat()
        return _compare(column, op, value)


def _literal(kind: str, text: str) -> Any:
    if kind == "str":
        return text[1:-1].replace("''", "'")
    if kind == "num":
        return float(text)
    if kind == "time":
        return pd.Timestamp(text).tz_convert("UTC")
    if kind == "word" and text in ("true", "false", "null"):
        return {"true": True, "false": False, "null": None}[text]
    raise ValidationError(f"$filter: {text!r} is not a value (quote text: 'ok')")


def _compare(column: pd.Series, op: str, value: Any) -> pd.Series:
    method = _OPS[op]
    if value is None:
        result = column.isna() if op == "eq" else column.notna()
    elif isinstance(value, bool):
        flags = column.map(lambda v: v if isinstance(v, bool) else None)
        result = getattr(flags, method)(value) if op in ("eq", "ne") else flags.isna() & False
    elif isinstance(value, float):
        result = getattr(pd.to_numeric(column, errors="coerce"), method)(value)
    elif isinstance(value, pd.Timestamp):
        result = getattr(pd.to_datetime(column, utc=True, errors="coerce"), method)(value)
    else:
        text = column.astype(object).where(column.notna(), None).astype("string")
        result = getattr(text, method)(str(value))
    return pd.Series(result, index=column.index).fillna(False).astype(bool)


def column_of(frame: pd.DataFrame, path: str, aliases: Mapping[str, str]) -> pd.Series:
    """Return the values of a property path (``result``, ``properties/kind`` …) of *frame*.

    Raises
    ------
    ValidationError
        For a path the entity does not have, listing those it has.
    """
    if path.startswith("properties/") and "properties" in frame:
        key = path.split("/", 1)[1]
        key = aliases.get(key, key)
        return frame["properties"].map(lambda p: (p or {}).get(key) if isinstance(p, dict)
                                       else None)
    if path.startswith("unitOfMeasurement/") and "unitOfMeasurement" in frame:
        key = path.split("/", 1)[1]
        return frame["unitOfMeasurement"].map(lambda p: (p or {}).get(key))
    if path == "id":
        path = "@iot.id"
    if path in frame and path not in HIDDEN:
        return frame[path]
    names = [c for c in frame.columns if c not in HIDDEN and not c.startswith("_")]
    raise ValidationError(f"unknown property {path!r}; this entity has {', '.join(names)}"
                          + (" and properties/<name>" if "properties" in frame else ""))


def apply_filter(frame: pd.DataFrame, text: str | None,
                 aliases: Mapping[str, str] | None = None) -> pd.DataFrame:
    """Return the rows of *frame* that ``$filter`` *text* keeps.

    Raises
    ------
    ValidationError
        For a filter that does not parse, an unknown property, operator or value.
    """
    if not text or not str(text).strip():
        return frame
    parser = _Parser(_tokens(str(text)), frame, aliases or {})
    keep = parser.expr()
    if parser.peek() is not None:
        raise ValidationError(f"$filter: unexpected {parser.peek()[1]!r}; join comparisons "
                              "with and / or")
    return frame.loc[keep.to_numpy()]


def apply_orderby(frame: pd.DataFrame, text: str | None,
                  aliases: Mapping[str, str] | None = None) -> pd.DataFrame:
    """Return *frame* sorted by ``$orderby`` (``phenomenonTime desc, result``); stable.

    Raises
    ------
    ValidationError
        For an unknown property or a direction other than asc/desc.
    """
    if not text or not str(text).strip() or frame.empty:
        return frame
    keys, ascending = [], []
    for part in str(text).split(","):
        words = part.split()
        if not words or len(words) > 2 or (len(words) == 2 and words[1] not in ("asc", "desc")):
            raise ValidationError(f"$orderby: {part.strip()!r} is not '<property> [asc|desc]'")
        values = column_of(frame, words[0], aliases or {})
        keys.append(values.map(_sortable).to_numpy())
        ascending.append(len(words) == 1 or words[1] == "asc")
    sort = pd.DataFrame({f"k{i}": k for i, k in enumerate(keys)}, index=frame.index)
    order = sort.sort_values(list(sort.columns), ascending=ascending, kind="stable").index
    return frame.loc[order]


def _sortable(value: Any) -> Any:
    if isinstance(value, (dict, list)):
        return json.dumps(value, sort_keys=True)
    return value


# -- paths, paging, output ----------------------------------------------------------------------

_SEGMENT = re.compile(r"^(?P<name>[A-Za-z]+)(?:\((?P<id>'(?:[^']|'')*'|[^()]+)\))?$")


def parse_path(path: str) -> list[tuple[str, str | None]]:
    """``Things('S1')/Datastreams`` → ``[("Things", "S1"), ("Datastreams", None)]``.

    A FIWARE type (``Device``) names its entity set. Raises NotFoundError for anything else.
    """
    out: list[tuple[str, str | None]] = []
    aliases = fiware_entity_sets()
    for i, segment in enumerate(p for p in str(path).strip("/").split("/") if p):
        m = _SEGMENT.match(segment)
        name = m["name"] if m else segment
        name = aliases.get(name, name) if i == 0 else name
        if not m or (i == 0 and name not in ENTITY_SETS) or (i > 0 and name not in NAVIGATION):
            raise NotFoundError(f"{segment!r} is not a SensorThings path; entity sets are "
                                f"{', '.join(ENTITY_SETS)}")
        ident = m["id"]
        if ident is not None and ident.startswith("'"):
            ident = ident[1:-1].replace("''", "'")
        out.append((name, ident))
    if not out:
        raise NotFoundError("name an entity set: " + ", ".join(ENTITY_SETS))
    return out


def _int(query: Mapping[str, Any], key: str, default: int, top: int | None = None) -> int:
    raw = query.get(key)
    if raw is None or str(raw).strip() == "":
        return default
    try:
        value = int(str(raw))
    except ValueError:
        raise ValidationError(f"{key} must be a whole number, got {raw!r}") from None
    if value < 0 or (top is not None and value > top):
        raise ValidationError(f"{key} must be between 0 and {top or 'any'}, got {value}")
    return value


def self_link(base: str, entity_set: str, ident: str) -> str:
    """Return the URL of one entity (``…/Things('S1')``)."""
    return f"{base}/{entity_set}('{quote(str(ident).replace(chr(39), chr(39) * 2), safe='')}')"


def entity(row: Mapping[str, Any], entity_set: str, base: str) -> dict[str, Any]:
    """Return one entity as JSON: its fields, ``@iot.selfLink`` and navigation links."""
    out: dict[str, Any] = {}
    for key, value in row.items():
        if key in HIDDEN or key.startswith("_"):
            continue
        if isinstance(value, pd.Timestamp):
            value = value.strftime("%Y-%m-%dT%H:%M:%S.") + f"{value.microsecond // 1000:03d}Z"
        elif isinstance(value, (np.generic,)):
            value = value.item()
        elif value is not None and not isinstance(value, (dict, list, str)) and pd.isna(value):
            value = None
        out[key] = value
    link = self_link(base, entity_set, row["@iot.id"])
    out["@iot.selfLink"] = link
    for nav, (target, _many) in NAVIGATION.items():
        if (entity_set, target) in LINKS and _nav_allowed(entity_set, nav):
            out[f"{nav}@iot.navigationLink"] = f"{link}/{nav}"
    return out


def _nav_allowed(entity_set: str, nav: str) -> bool:
    allowed = {
        "Things": ("Datastreams", "Locations"), "Locations": ("Things",),
        "Datastreams": ("Thing", "ObservedProperty", "Observations"),
        "ObservedProperties": ("Datastreams",), "Observations": ("Datastream",),
    }
    return nav in allowed[entity_set]


def next_link(base_url: str, query: Mapping[str, Any], skip: int, top: int) -> str:
    """Return the URL of the next page: the same query with ``$skip`` moved on by ``$top``."""
    params = {k: v for k, v in query.items() if k != "$skip"}
    params["$skip"] = str(skip + top)
    return f"{base_url}?{urlencode(params, safe='$(),/:')}"


def parse_expand(text: str | None, entity_set: str) -> list[str]:
    """Return the navigation names of ``$expand`` (``Datastreams,Locations``) for *entity_set*.

    Raises
    ------
    ValidationError
        For a name that is not a navigation of *entity_set*.
    """
    if not text or not str(text).strip():
        return []
    names = [n.strip() for n in str(text).split(",") if n.strip()]
    for name in names:
        base = name.split("/")[0].split("(")[0]
        if base not in NAVIGATION or not _nav_allowed(entity_set, base):
            raise ValidationError(f"$expand: {entity_set} has no {base!r}; it has "
                                  + ", ".join(n for n in NAVIGATION
                                              if _nav_allowed(entity_set, n)))
    return names


def page(frame: pd.DataFrame, query: Mapping[str, Any], aliases: Mapping[str, str] | None = None
         ) -> tuple[pd.DataFrame, int, int, int]:
    """Filter, order and cut *frame* by the query; return the page, its skip, top and total."""
    top = _int(query, "$top", DEFAULT_TOP, MAX_TOP)
    skip = _int(query, "$skip", 0)
    chosen = apply_filter(frame, query.get("$filter"), aliases)
    chosen = apply_orderby(chosen, query.get("$orderby"), aliases)
    return chosen.iloc[skip:skip + top], skip, top, len(chosen)


# -- answering a request ------------------------------------------------------------------------


class Catalog:
    """The entity frames one caller may see, built on first use (Observations read only if asked).

    *builders* maps each entity set to a function returning its frame; *aliases* are the FIWARE
    names accepted for properties (:func:`fiware_aliases`).
    """

    def __init__(self, builders: Mapping[str, Any], aliases: Mapping[str, str] | None = None
                 ) -> None:
        self._builders = dict(builders)
        self._frames: dict[str, pd.DataFrame] = {}
        self.aliases = dict(aliases or {})

    def __getitem__(self, name: str) -> pd.DataFrame:
        if name not in self._frames:
            self._frames[name] = self._builders[name]()
        return self._frames[name]


_EXPAND_TOP = re.compile(r"^(?P<name>[A-Za-z]+)(?:\(\$top=(?P<top>\d+)\))?$")


def _linked(catalog: Catalog, frame: pd.DataFrame, source: str, target: str) -> pd.DataFrame:
    here, there = LINKS[(source, target)]
    other = catalog[target]
    return other.loc[other[there].isin(set(frame[here]))]


def answer(catalog: Catalog, path: str, query: Mapping[str, Any], base: str) -> dict[str, Any]:
    """Answer a SensorThings GET of *path* (below the service root *base*) with *query*.

    Returns
    -------
    dict
        One entity, or ``{"value": [...]}`` with ``@iot.count`` (``$count=true``) and
        ``@iot.nextLink`` when more rows follow.

    Raises
    ------
    NotFoundError
        For an unknown path or id.
    ValidationError
        For a bad ``$filter``, ``$orderby``, ``$expand``, ``$top`` or ``$skip``.
    """
    steps = parse_path(path)
    name, ident = steps[0]
    frame = catalog[name]
    single = ident is not None
    if ident is not None:
        frame = frame.loc[frame["@iot.id"] == ident]
        if frame.empty:
            raise NotFoundError(f"no {name} with @iot.id {ident!r}")
    for nav, ident in steps[1:]:
        target, many = NAVIGATION[nav]
        if not single or not _nav_allowed(name, nav):
            raise NotFoundError(f"{name} has no navigation {nav!r} here")
        frame = _linked(catalog, frame, name, target)
        name, single = target, not many
        if ident is not None:
            frame = frame.loc[frame["@iot.id"] == ident]
            single = True
    expand = parse_expand(query.get("$expand"), name)
    if single:
        if frame.empty:
            raise NotFoundError(f"no {name} at {path!r}")
        return _expanded(catalog, frame.iloc[:1], name, expand, base)[0]
    chosen, skip, top, total = page(frame, query, catalog.aliases)
    out: dict[str, Any] = {}
    if str(query.get("$count", "")).lower() == "true":
        out["@iot.count"] = total
    if skip + top < total:
        out["@iot.nextLink"] = next_link(f"{base}/{path.strip('/')}", query, skip, top)
    out["value"] = _expanded(catalog, chosen, name, expand, base)
    return out


def _expanded(catalog: Catalog, frame: pd.DataFrame, name: str, expand: list[str], base: str
              ) -> list[dict[str, Any]]:
    items = [entity(row, name, base) for row in frame.to_dict("records")]
    for item_spec in expand:
        m = _EXPAND_TOP.match(item_spec.split("/")[0])
        if not m:
            raise ValidationError(f"$expand: {item_spec!r}; write Name or Name($top=n)")
        nav, top = m["name"], int(m["top"]) if m["top"] else DEFAULT_TOP
        target, many = NAVIGATION[nav]
        here, there = LINKS[(name, target)]
        linked = _linked(catalog, frame, name, target)
        if target == "Observations" and "phenomenonTime" in linked:  # newest first
            linked = linked.sort_values("phenomenonTime", ascending=False, kind="stable")
        groups = {key: rows for key, rows in linked.groupby(there, sort=False)}
        for item, key in zip(items, frame[here], strict=True):
            rows = groups.get(key)
            entities = [] if rows is None else [entity(r, target, base) for r in
                                                rows.head(top).to_dict("records")]
            item[nav] = entities if many else (entities[0] if entities else None)
    return items


def time_floor(text: str | None) -> pd.Timestamp | None:
    """Return the earliest ``phenomenonTime`` a ``$filter`` of and-joined comparisons allows.

    ``phenomenonTime ge 2026-03-01T00:00:00Z and result gt 3`` → 2026-03-01; None when the
    filter has ``or`` or no lower bound on the time (the reader then takes its default window).
    """
    if not text or re.search(r"\bor\b", str(text)):
        return None
    found = re.findall(r"phenomenonTime\s+(?:ge|gt|eq)\s+(\S+)", str(text))
    stamps = []
    for value in found:
        try:
            stamps.append(pd.Timestamp(value.strip(")")).tz_convert("UTC"))
        except (ValueError, TypeError):
            continue
    return max(stamps) if stamps else None
