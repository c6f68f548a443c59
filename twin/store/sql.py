"""The one SQL parent of the stores: what both do, written once over a :class:`Dialect`.

:class:`SQLStore` holds the orchestration — layer versions, rollbacks, purges, events and case
reads, case creation and updates (one set of messages), the audit chain, the case counts,
declared tables. A concrete store (:mod:`twin.store.embedded`, :mod:`twin.store.postgis`)
keeps only its connections and what its database does in bulk: how a layer version's rows
are written and made current, how events are encoded and appended, how many rows are read
fast. Statements bind their parameters as ``:name`` on both.
"""

from __future__ import annotations

import abc
import contextlib
import json
import logging
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

import geopandas as gpd
import pandas as pd

from twin import audit_anchor, auditchain
from twin import layers as declared
from twin.errors import (
    DuplicateIdError,
    LayerNotFoundError,
    NotFoundError,
    StaleUpdateError,
    ValidationError,
)
from twin.schema import (
    ALARMS,
    ASSIGNED_COLUMNS,
    AUDIT,
    CASE_HISTORY,
    CASES,
    EVENTS,
    LAYER_VERSIONS,
    Column,
    LayerSpec,
    TableSpec,
    ValidatedLayer,
    coerce_records,
    coerce_series,
    coerce_table,
    is_missing,
    layer_frame_to_store,
)
from twin.store import outbox, rollup
from twin.store.base import (
    GRID_NAMES,
    TIMED_TABLES,
    BBox,
    LayerVersion,
    Store,
    audit_hash,
    case_columns,
    check_expected,
    count_frame,
    current_stamps,
    feature_equals,
    layer_audit,
    page_features,
    plan_case_counts,
    prepare_case_grids,
    prepare_equals,
    prepare_rows,
    purge_plan,
    regrid_plan,
    with_points,
)
from twin.store.dialect import Dialect, canonical_json, key_columns, quote
from twin.store.eventparts import month_start
from twin.timeutil import local_zone, to_utc

LOGGER = logging.getLogger(__name__)

_CASE_COLUMNS = {c.name: c for c in CASES.columns}
_FIXED_CASE_FIELDS = ("id", "version")
_VERSIONS = quote(LAYER_VERSIONS.name)
_STAMPS: dict[str, str] = {}  # dialect → the head of the current-versions SELECT


def _in_boxes(boxes: Sequence[tuple[float, float, float, float]], params: dict[str, Any]) -> str:
    """Return the SQL of "a case's place lies in one of *boxes*" (false for none)."""
    terms = []
    for i, box in enumerate(boxes):
        params.update({f"bx{i}_0": float(box[0]), f"by{i}_0": float(box[1]),
                       f"bx{i}_1": float(box[2]), f"by{i}_1": float(box[3])})
        terms.append(f"({quote('lon')} BETWEEN :bx{i}_0 AND :bx{i}_1 AND "
                     f"{quote('lat')} BETWEEN :by{i}_0 AND :by{i}_1)")
    return f"({' OR '.join(terms)})" if terms else "1 = 0"


def stored_value(value: Any, column: Column, *, json_as_stored: bool = False) -> Any:
    """Return one fetched cell as the plain Python value a case dict holds (None when NULL).

    JSON comes back canonical: re-serialised, unless *json_as_stored* (a store that keeps the
    canonical text it was given, as the embedded one does).
    """
    if value is None:
        return None
    if column.dtype == "datetime":
        return pd.Timestamp(value).tz_convert("UTC")
    if column.dtype == "json":  # PostgreSQL gives its own form of JSON: the stores' canonical one
        return value if json_as_stored else canonical_json(json.loads(value))
    if column.dtype in ("int", "float", "bool"):
        return {"int": int, "float": float, "bool": bool}[column.dtype](value)
    return value


def never_written(name: str) -> LayerNotFoundError:
    """Return the error of a layer read before it was ever loaded."""
    return LayerNotFoundError(
        f"layer {name!r} has not been loaded into this store yet; load it with "
        f"`python scripts/load_layer.py {name} FILE`"
    )


def _chosen_columns(spec: LayerSpec, names: Sequence[str]) -> list[Column]:
    """Return the declared columns *names* and the id field, in the declared order."""
    if isinstance(names, str):
        names = [names]
    unknown = [n for n in names if n not in spec.column_names]
    if unknown:
        raise ValidationError(
            f"layer {spec.name!r} has no columns {unknown}; its columns are {spec.column_names}."
        )
    wanted = {*names, spec.id_field}
    return [c for c in spec.all_columns if c.name in wanted]


def no_version(name: str, version: int, versions: Sequence[LayerVersion]) -> NotFoundError:
    """Return the error of a layer version that does not exist."""
    return NotFoundError(
        f"layer {name!r} has no version {version}; its versions are "
        f"{[v.version for v in versions]} (see scripts/load_layer.py --list or "
        "store.layer_versions)"
    )


def no_case(case_id: str) -> NotFoundError:
    """Return the error of a case id that is not stored."""
    return NotFoundError(
        f"no case {case_id!r} in the store; check the id (read_cases lists the cases)"
    )


class SQLStore(Store):
    """A store kept in an SQL database: the shared orchestration over :attr:`dialect`.

    Subclasses give the connections (:meth:`_write`, :meth:`_read`, :meth:`_rows`,
    :meth:`_execute`, :meth:`_frame`, :meth:`_insert`) and their bulk paths (layer rows, events,
    column reads, counted rows, declared rows); see each hook.
    """

    dialect: Dialect

    # -- connections (the subclass's) ---------------------------------------------------------

    @abc.abstractmethod
    def _write(self) -> contextlib.AbstractContextManager[Any]:
        """Open a write transaction: one writer at a time, committed or rolled back."""

    @abc.abstractmethod
    def _read(
        self, *, repeatable: bool = False, single: bool = False
    ) -> contextlib.AbstractContextManager[Any]:
        """Open a read: every query inside sees one committed state.

        *repeatable*: catalogs are read in the same snapshot too (PostgreSQL); *single*: only
        one statement is run, so no transaction needs opening for it.
        """

    @abc.abstractmethod
    def _rows(self, conn: Any, sql: str, params: Mapping[str, Any] | None = None) -> list[tuple]:
        """Run a SELECT with ``:name`` parameters; return its rows as tuples."""

    @abc.abstractmethod
    def _execute(
        self, conn: Any, sql: str, params: Mapping[str, Any] | Sequence[Mapping] | None = None
    ) -> int:
        """Run a statement (a list of parameter mappings: once per mapping); return rowcount."""

    @abc.abstractmethod
    def _frame(self, columns: Sequence[Column], rows: list[tuple]) -> pd.DataFrame:
        """Return a typed frame (:func:`twin.schema.coerce_series` dtypes) of fetched rows."""

    @abc.abstractmethod
    def _insert_rows(self, conn: Any, table: TableSpec, rows: list[tuple], conflict: str = ""
                     ) -> int:
        """Insert rows of bound values, in the table's column order; return how many were written.

        *conflict* is an ``ON CONFLICT`` tail.
        """

    def _insert(self, conn: Any, table: TableSpec, frame: pd.DataFrame, conflict: str = "") -> int:
        """Insert a frame coerced with coerce_table (*conflict*: an ``ON CONFLICT`` tail)."""
        values = [self.dialect.values(frame[c.name], c.dtype) for c in table.columns]
        return self._insert_rows(conn, table, list(zip(*values, strict=True)), conflict)

    def _insert_records(self, conn: Any, table: TableSpec, records: Sequence[Mapping[str, Any]],
                        conflict: str = "") -> int:
        """Insert records (mappings of the table's fields), coerced as coerce_table would.

        A few records of values already of their types are bound value by value
        (:func:`twin.schema.coerce_records`): a store writes a case, its first step or an audit
        row this way many times a second, and a frame per write cost more than the write.
        """
        columns = coerce_records(table, records)
        if columns is None:
            return self._insert(conn, table, coerce_table(table, pd.DataFrame(list(records))),
                                conflict)
        bind = self.dialect.value
        values = [[bind(v, c.dtype) for v in columns[c.name]] for c in table.columns]
        return self._insert_rows(conn, table, list(zip(*values, strict=True)), conflict)

    def _hold(self, conn: Any, *what: str) -> None:
        """Hold a lock named by *what* until the transaction ends (no-op: writers take turns)."""

    # -- bulk paths (the subclass's) ------------------------------------------------------------

    @abc.abstractmethod
    def _ensure_layer_tables(self, conn: Any, spec: LayerSpec) -> None:
        """Create (or bring up to the declaration) the tables of a layer's versions."""

    @abc.abstractmethod
    def _write_rows(self, conn: Any, spec: LayerSpec, frame: pd.DataFrame, version: int) -> None:
        """Write the rows of a validated frame as *version* of the layer (not yet current)."""

    @abc.abstractmethod
    def _show_version(self, conn: Any, spec: LayerSpec, version: int) -> None:
        """Make what readers of the layer's current table see *version*'s rows."""

    @abc.abstractmethod
    def _drop_versions(
        self, conn: Any, spec: LayerSpec, gone: list[int], versions: list[LayerVersion]
    ) -> int:
        """Delete the rows of the versions *gone*; return how many rows went."""

    @abc.abstractmethod
    def _layer_rows(
        self, conn: Any, spec: LayerSpec, version: int, *, current: bool,
        columns: Sequence[Column] | None = None,
    ) -> gpd.GeoDataFrame | pd.DataFrame:
        """Read *version* of a layer (*current*: it is the current one), sorted by its id.

        Only *columns* (and the geometry) when given; all the declared ones otherwise.
        """

    @abc.abstractmethod
    def _locked_cases(self, conn: Any, ids: list[str], columns: list[Column]) -> pd.DataFrame:
        """Read the *columns* of the cases *ids*, locked against other writers to the commit."""

    @abc.abstractmethod
    def _case_columns(
        self, conn: Any, columns: list[Column], where: list[str], params: dict[str, Any]
    ) -> pd.DataFrame:
        """Only these case columns of the cases matching *where*, sorted by id, in bulk."""

    @abc.abstractmethod
    def _count_rows(self, conn: Any, query: Any) -> pd.DataFrame | list[tuple]:
        """Run a count query (:class:`twin.store.base.CountQuery`); its rows, read in bulk."""

    @abc.abstractmethod
    def _put_rows(self, table: TableSpec, rows: pd.DataFrame, conflict: str) -> int:
        """Insert checked rows with an ``ON CONFLICT`` tail, in one transaction; the count."""

    def _rollup_key(self, name: str) -> str:
        """Return the SQL of a rollup slice key as the cases hold it."""
        return quote(name)

    #: The time zone whose local months the case rollup sums (set when the store opens and
    #: brings its rollup up to date; see :mod:`twin.store.rollup`).
    _rollup_zone: str | None = None

    def _rollup_usable(self, conn: Any) -> bool:
        """Whether the case rollup can answer the months it holds.

        Not when the zone setting changed since the store opened: its months are another
        zone's (the store rebuilds the rollup when it opens next); the GROUP BY answers.
        """
        return self._rollup_zone == local_zone()

    def _before_counts(self, conn: Any) -> None:
        """Prepare the read transaction of :meth:`case_counts` (settings of the session)."""

    # -- layers -----------------------------------------------------------------------------------

    def _after_rows_written(self, spec: LayerSpec, version: int) -> None:
        """Run inside write_layers' transaction once a layer's rows are in (a hook)."""

    def write_layers(
        self,
        frames: Mapping[str, gpd.GeoDataFrame | pd.DataFrame | ValidatedLayer],
        *,
        actor: str,
        source: str,
        note: str = "",
        report: dict | None = None,
        case_grids: pd.DataFrame | None = None,
        expect: Mapping[str, int | None] | None = None,
    ) -> list[LayerVersion]:
        """Store several layers (and re-grid cases) in one transaction; see :class:`Store`.

        Layers are locked in name order, so two loads of overlapping layers cannot deadlock;
        the versions are made current last, just before the commit (a PostGIS view repointed
        locks its readers out until then).
        """
        checked = [
            (spec := declared.get_layer(name), layer_frame_to_store(spec, frame))
            for name, frame in frames.items()
        ]
        wanted = None if case_grids is None else prepare_case_grids(case_grids)
        created_at = self.dialect.now()
        expect = dict(expect or {})
        written = []
        with self._write() as conn:
            for name in sorted(set(frames) | set(expect)):
                self._hold(conn, "layer", name)
            if expect:
                check_expected(expect, self._current_stamps(conn, list(expect)))
            if wanted is not None and len(wanted):
                self._regrid_cases(conn, wanted, actor=actor, source=source, note=note,
                                   at=created_at)
            for spec, frame in checked:
                version = self._write_version(conn, spec, frame, created_at, actor, source,
                                              note, report)
                self._audit(conn, actor, "layer.write", f"layer:{spec.name}",
                            layer_audit(version), source)
                self._after_rows_written(spec, version.version)
                written.append(version)
            for (spec, _), version in zip(checked, written, strict=True):
                self._show_version(conn, spec, version.version)
        for version in written:
            LOGGER.info("%s wrote version %d of layer %s (%d rows) from %s", actor,
                        version.version, version.layer, version.rows, source)
        return written

    def _write_version(
        self,
        conn: Any,
        spec: LayerSpec,
        frame: gpd.GeoDataFrame | pd.DataFrame,
        created_at: pd.Timestamp,
        actor: str,
        source: str,
        note: str,
        report: dict | None,
    ) -> LayerVersion:
        """Write one validated layer frame as its next version, recorded as current."""
        self._ensure_layer_tables(conn, spec)
        version = int(self._rows(
            conn,
            f"SELECT COALESCE(MAX({quote('version')}), 0) + 1 FROM {_VERSIONS} "
            f"WHERE {quote('layer')} = :layer",
            {"layer": spec.name},
        )[0][0])
        self._write_rows(conn, spec, frame, version)
        record = {
            "layer": spec.name, "version": version, "created_at": created_at, "actor": actor,
            "source": source, "rows": len(frame), "note": note, "report": report,
            "current": False,
        }
        self._insert_records(conn, LAYER_VERSIONS, [record])
        self._flag_current(conn, spec.name, version)
        return LayerVersion(
            layer=spec.name, version=version, created_at=created_at, actor=actor, source=source,
            rows=len(frame), note=note,
            report=None if report is None else json.loads(canonical_json(report)), current=True,
        )

    def _flag_current(self, conn: Any, name: str, version: int) -> None:
        self._execute(
            conn,
            f"UPDATE {_VERSIONS} SET {quote('current')} = ({quote('version')} = :version) "
            f"WHERE {quote('layer')} = :layer",
            {"version": int(version), "layer": name},
        )

    def _regrid_cases(
        self, conn: Any, wanted: pd.DataFrame, *, actor: str, source: str, note: str,
        at: pd.Timestamp,
    ) -> None:
        """Move cases to new grids (inside the caller's transaction): columns, version, step."""
        stored_columns = [_CASE_COLUMNS[n] for n in ("id", "version", "status", *GRID_NAMES)]
        stored = self._locked_cases(conn, wanted["id"].tolist(), stored_columns)
        updates, steps = regrid_plan(wanted, stored, actor=actor, source=source, note=note,
                                     at=at)
        if updates.empty:
            return
        sets = ", ".join(f"{quote(n)} = :{n}" for n in GRID_NAMES)
        later = self.dialect.greatest.format(a=quote("updated_at"), b=":at")
        stamp = self.dialect.time(at)
        self._execute(
            conn,
            f"UPDATE {quote(CASES.name)} SET {sets}, version = version + 1, updated_at = {later} "
            "WHERE id = :id AND version = :expected",
            [{**r, "expected": int(r["expected"]), "at": stamp}
             for r in updates.to_dict("records")],
        )
        self._insert(conn, CASE_HISTORY, steps)
        LOGGER.info("%d cases moved to their new grids", len(updates))

    def _select(
        self, conn: Any, table: TableSpec, order: str, clauses: Sequence[str] = (),
        params: Mapping[str, Any] | None = None,
    ) -> pd.DataFrame:
        names = ", ".join(self.dialect.select(c) for c in table.columns)
        where = f" WHERE {' AND '.join(clauses)}" if clauses else ""
        rows = self._rows(
            conn, f"SELECT {names} FROM {quote(table.name)}{where} ORDER BY {order}", params
        )
        return self._frame(table.columns, rows)

    def _versions(self, conn: Any, name: str) -> list[LayerVersion]:
        # a few rows, converted value by value: decoding a frame costs more than reading them
        rows = self._rows(
            conn,
            f"SELECT {', '.join(self.dialect.select(c) for c in LAYER_VERSIONS.columns)} "
            f"FROM {_VERSIONS} WHERE {quote('layer')} = :l ORDER BY {quote('version')}",
            {"l": name},
        )
        names = [c.name for c in LAYER_VERSIONS.columns]
        out = []
        for row in rows:
            r = dict(zip(names, row, strict=True))
            out.append(LayerVersion(
                layer=r["layer"],
                version=int(r["version"]),
                created_at=pd.Timestamp(r["created_at"]).tz_convert("UTC"),
                actor=r["actor"],
                source=r["source"],
                rows=int(r["rows"]),
                note=r["note"] or "",
                report=json.loads(r["report"]) if r["report"] else None,
                current=bool(r["current"]),
            ))
        return out

    def layer_versions(self, name: str) -> list[LayerVersion]:
        spec = declared.get_layer(name)
        with self._read() as conn:
            return self._versions(conn, spec.name)

    def current_versions(self, names: Sequence[str]) -> dict[str, tuple[int, str] | None]:
        """Return ``{name: (version, created_at text)}`` of the current versions, in one SELECT.

        The planner queries ask on every call: no whole version records are decoded.
        """
        names = list(dict.fromkeys(names))
        for name in names:
            declared.get_layer(name)
        if not names:
            return {}
        with self._read(single=True) as conn:
            return self._current_stamps(conn, names)

    def _current_stamps(self, conn: Any, names: list[str]) -> dict[str, tuple[int, str] | None]:
        params: dict[str, Any] = {}
        among = self.dialect.any_of("layer", "names", names, params)
        head = _STAMPS.get(self.dialect.name)
        if head is None:  # the planner queries ask on every call: the SQL is made once
            head = _STAMPS[self.dialect.name] = (
                f"SELECT {quote('layer')}, {quote('version')}, "
                f"{self.dialect.as_text('created_at')} FROM {_VERSIONS} WHERE {quote('current')} "
            )
        return current_stamps(self._rows(conn, f"{head}AND {among}", params), names)

    def _pick_version(self, conn: Any, spec: LayerSpec, version: int | None) -> tuple[int, bool]:
        """Return the version to read (None: the current one) and whether it is the current."""
        versions = self._versions(conn, spec.name)
        if not versions:
            raise never_written(spec.name)
        now = next(v.version for v in versions if v.current)
        version = now if version is None else int(version)
        if version not in {v.version for v in versions}:
            raise no_version(spec.name, version, versions)
        return version, version == now

    def read_layer(
        self, name: str, version: int | None = None, *, columns: Sequence[str] | None = None
    ) -> gpd.GeoDataFrame | pd.DataFrame:
        spec = declared.get_layer(name)
        chosen = None if columns is None else _chosen_columns(spec, columns)
        # the version is chosen in this snapshot and its rows read in the same one
        with self._read(repeatable=True) as conn:
            version, current = self._pick_version(conn, spec, version)
            return self._layer_rows(conn, spec, version, current=current, columns=chosen)

    def read_features(
        self, name: str, *, version: int | None = None,
        bbox: tuple[float, float, float, float] | None = None,
        equals: Mapping[str, Any] | None = None, limit: int | None = None, offset: int = 0,
    ) -> tuple[gpd.GeoDataFrame | pd.DataFrame, int, int]:
        spec = declared.get_layer(name)
        equals = feature_equals(spec.name, equals)
        with self._read(repeatable=True) as conn:
            version, current = self._pick_version(conn, spec, version)
            frame, matched = self._feature_page(conn, spec, version, current, bbox, equals,
                                                limit, offset)
        return frame, matched, version

    def _feature_page(
        self, conn: Any, spec: LayerSpec, version: int, current: bool,
        bbox: tuple[float, float, float, float] | None, equals: dict[str, Any],
        limit: int | None, offset: int,
    ) -> tuple[gpd.GeoDataFrame | pd.DataFrame, int]:
        """One page of a version's features (the store's SQL; this default pages in memory)."""
        return page_features(self._layer_rows(conn, spec, version, current=current), spec.name,
                             bbox=bbox, equals=equals, limit=limit, offset=offset)

    def set_current_version(self, name: str, version: int, *, actor: str) -> LayerVersion:
        spec = declared.get_layer(name)
        version = int(version)
        with self._write() as conn:
            self._hold(conn, "layer", spec.name)
            versions = self._versions(conn, spec.name)
            if not versions:
                raise never_written(spec.name)
            if version not in {v.version for v in versions}:
                raise no_version(spec.name, version, versions)
            previous = next((v.version for v in versions if v.current), None)
            self._ensure_layer_tables(conn, spec)
            self._show_version(conn, spec, version)
            self._flag_current(conn, spec.name, version)
            chosen = next(v for v in self._versions(conn, spec.name) if v.version == version)
            self._audit(conn, actor, "layer.rollback", f"layer:{spec.name}",
                        layer_audit(chosen, previous=previous))
        LOGGER.info("%s made version %d of layer %s current", actor, version, spec.name)
        return chosen

    def purge_layer_versions(self, name: str, before_version: int, *, actor: str) -> list[int]:
        spec = declared.get_layer(name)
        with self._write() as conn:
            self._hold(conn, "layer", spec.name)
            versions = self._versions(conn, spec.name)
            gone = purge_plan(versions, before_version)
            if not gone:
                return []
            rows = int(self._drop_versions(conn, spec, gone, versions))
            params: dict[str, Any] = {"layer": spec.name}
            among = self.dialect.any_of("version", "gone", gone, params)
            self._execute(
                conn,
                f"DELETE FROM {_VERSIONS} WHERE {quote('layer')} = :layer AND {among} "
                f"AND NOT {quote('current')}",
                params,
            )
            self._audit(conn, actor, "layer.purge", f"layer:{spec.name}",
                        {"layer": spec.name, "versions": gone, "rows": rows})
        LOGGER.info("%s purged versions %s of layer %s (%d rows)", actor, gone, spec.name, rows)
        return gone

    # -- events -----------------------------------------------------------------------------------

    def read_events(
        self,
        start: datetime | None = None,
        end: datetime | None = None,
        *,
        bbox: BBox | None = None,
        grid_code: str | None = None,
        kind: str | None = None,
    ) -> gpd.GeoDataFrame:
        """Events with ``start <= observed_at < end`` in *bbox* and grid, oldest first.

        Events keep no geometry column: the bbox is a filter on lon/lat and the points are
        built from them.
        """
        clauses, params = self._time_range("observed_at", start, end)
        if bbox is not None:
            x0, y0, x1, y1 = (float(v) for v in bbox)
            clauses.append("lon >= :x0 AND lon <= :x1 AND lat >= :y0 AND lat <= :y1")
            params.update(x0=x0, y0=y0, x1=x1, y1=y1)
        for name, value in (("grid_code", grid_code), ("kind", kind)):
            if value is not None:
                clauses.append(f"{quote(name)} = :{name}")
                params[name] = value
        order = f"{quote('observed_at')}, {self.dialect.order('id')}"
        with self._read() as conn:
            frame = self._select(conn, EVENTS, order, clauses, params)
        return with_points(frame)

    def reassign_events(self, changes: pd.DataFrame) -> int:
        if not len(changes):
            return 0
        names = [c.name for c in ASSIGNED_COLUMNS]
        sets = ", ".join(f"{quote(n)} = :{n}" for n in names)
        times = to_utc(pd.Series(changes["observed_at"].to_numpy()))
        rows = [
            {"id": str(i), "observed_at": self.dialect.time(t),
             **{n: (None if pd.isna(v) else str(v)) for n, v in zip(names, values, strict=True)}}
            for i, t, *values in zip(changes["id"], times, *(changes[n] for n in names),
                                     strict=True)
        ]
        with self._write() as conn:
            return int(self._execute(
                conn, f"UPDATE {quote(EVENTS.name)} SET {sets} "
                "WHERE id = :id AND observed_at = :observed_at", rows))

    def ensure_event_partitions(self, until: Any = None) -> list[str]:
        return []  # one events table; PostGIS partitions it by month (PostGISStore)

    def drop_event_month(self, month: Any, expected: int) -> int:
        start = month_start(month)
        clauses, params = self._time_range("observed_at", start,
                                           start + pd.offsets.MonthBegin(1))
        where = f"FROM {quote(EVENTS.name)} WHERE {' AND '.join(clauses)}"
        with self._write() as conn:
            rows = int(self._rows(conn, f"SELECT count(*) {where}", params)[0][0])
            if rows != expected:
                raise StaleUpdateError(
                    f"events of {start:%Y-%m}: {rows} stored, {expected} archived: events "
                    "arrived since the export; nothing was deleted. Run the retention again.")
            if rows:
                self._execute(conn, f"DELETE {where}", params)
        return rows

    def _time_range(self, column: str, start: Any, end: Any) -> tuple[list[str], dict[str, Any]]:
        clauses: list[str] = []
        params: dict[str, Any] = {}
        for name, bound, op in (("start", start, ">="), ("end", end, "<")):
            if bound is not None:
                clauses.append(f"{quote(column)} {op} :{name}")
                params[name] = self.dialect.time(bound)
        return clauses, params

    # -- declared tables --------------------------------------------------------------------------

    def put_rows(
        self, table: TableSpec, frame: pd.DataFrame, *, on_conflict: str = "ignore"
    ) -> int:
        rows = prepare_rows(table, frame, on_conflict)
        if rows.empty:
            return 0
        conflict = _conflict_tail(table, on_conflict)
        written = int(self._put_rows(table, rows, conflict))
        LOGGER.debug("%s: %d of %d rows written", table.name, written, len(rows))
        return written

    def read_rows(self, table: TableSpec, **equals: Any) -> pd.DataFrame:
        clauses, params = self._equals(table, equals)
        with self._read() as conn:
            return self._select(conn, table, self._key_order(table), clauses, params)

    def read_row(self, table: TableSpec, **equals: Any) -> dict[str, Any] | None:
        clauses, params = self._equals(table, equals)
        names = ", ".join(self.dialect.select(c) for c in table.columns)
        with self._read() as conn:  # one row, converted value by value (no frame)
            rows = self._rows(conn, f"SELECT {names} FROM {quote(table.name)} WHERE "
                                    f"{' AND '.join(clauses) or '1 = 1'} "
                                    f"ORDER BY {self._key_order(table)} LIMIT 1", params)
        if not rows:
            return None
        as_stored = not self.dialect.json_cast
        return {c.name: stored_value(v, c, json_as_stored=as_stored)
                for c, v in zip(table.columns, rows[0], strict=True)}

    def _equals(self, table: TableSpec, equals: dict[str, Any]) -> tuple[list[str], dict]:
        """Return the WHERE clauses and parameters of a :meth:`read_rows` filter."""
        by_name = {c.name: c for c in table.columns}
        clauses: list[str] = []
        params: dict[str, Any] = {}
        for i, (name, typed) in enumerate(prepare_equals(table, equals)):
            values = self.dialect.values(typed, by_name[name].dtype)
            if not values:
                clauses.append(self.dialect.false)
                continue
            marks = []
            for j, value in enumerate(values):
                params[f"v{i}_{j}"] = value
                marks.append(f":v{i}_{j}")
            clauses.append(f"{quote(name)} IN ({', '.join(marks)})")
        return clauses, params

    def _key_order(self, table: TableSpec) -> str:
        text = {c.name for c in table.columns if c.dtype == "text"}
        return ", ".join(self.dialect.order(k) if k in text else quote(k)
                         for k in key_columns(table))

    def put_row_capped(self, table: TableSpec, row: Mapping[str, Any], *,
                       within: Mapping[str, Any], cap: int) -> bool:
        rows = prepare_rows(table, pd.DataFrame([dict(row)]), "update")
        keys = key_columns(table)
        by_name = {c.name: c for c in table.columns}
        clauses, params = [], {}
        for i, (name, typed) in enumerate(prepare_equals(table, dict(within))):
            params[f"w{i}"] = self.dialect.values(typed, by_name[name].dtype)[0]
            clauses.append(f"{quote(name)} = :w{i}")
        own = []
        for i, name in enumerate(keys):  # the row itself does not count against its cap
            params[f"k{i}"] = self.dialect.values(rows[name], by_name[name].dtype)[0]
            own.append(f"{quote(name)} = :k{i}")
        where = " AND ".join([*clauses, f"NOT ({' AND '.join(own)})"])
        with self._write() as conn:
            self._hold(conn, table.name, *(f"{k}={within[k]}" for k in sorted(within)))
            taken = int(self._rows(conn, f"SELECT count(*) FROM {quote(table.name)} "
                                         f"WHERE {where}", params)[0][0])
            if taken >= int(cap):
                return False
            self._insert(conn, table, rows, _conflict_tail(table, "update"))
        return True

    def append_chained(self, table: TableSpec, frame: pd.DataFrame, *, fields: Sequence[str],
                       unique: str | None = None) -> pd.DataFrame:
        frame = pd.DataFrame(frame).reset_index(drop=True)
        with self._write() as conn:
            self._hold(conn, table.name)
            last = self._rows(conn, f"SELECT seq, hash FROM {quote(table.name)} "
                                    "ORDER BY seq DESC LIMIT 1")
            seq, prev = (int(last[0][0]), str(last[0][1])) if last else (
                0, auditchain.GENESIS_HASH)
            if unique is not None and len(frame):
                wanted = frame[unique].astype(str).tolist()
                seen: set[str] = set()
                for start in range(0, len(wanted), 500):
                    chunk = wanted[start:start + 500]
                    marks = ", ".join(f":u{i}" for i in range(len(chunk)))
                    seen |= {str(r[0]) for r in self._rows(
                        conn, f"SELECT {quote(unique)} FROM {quote(table.name)} "
                              f"WHERE {quote(unique)} IN ({marks})",
                        {f"u{i}": v for i, v in enumerate(chunk)})}
                fresh = ~frame[unique].astype(str).isin(seen) & \
                    ~frame[unique].astype(str).duplicated()
                frame = frame.loc[fresh].reset_index(drop=True)
            if frame.empty:
                return coerce_table(table, frame)
            rows = coerce_table(table, frame.assign(seq=range(seq + 1, seq + 1 + len(frame))))
            key = auditchain.audit_key()
            links, hashes = [], []
            for _, row, _, _ in auditchain.columns_of(
                    rows.assign(prev_hash=None, hash=None), fields):
                links.append(prev)
                prev = auditchain.row_hash(prev, row, key, fields)
                hashes.append(prev)
            rows["prev_hash"], rows["hash"] = links, hashes
            self._insert(conn, table, rows)
        return rows

    def delete_rows_before(self, table: TableSpec, column: str, before: Any, *,
                           dry_run: bool = False) -> int:
        times = {c.name for c in table.columns if c.dtype == "datetime"}
        if table.name not in TIMED_TABLES or column not in times:
            raise ValidationError(
                f"rows are deleted by age only from {', '.join(TIMED_TABLES)} (by a time "
                f"column); not from {table.name} by {column!r}")
        where = f"FROM {quote(table.name)} WHERE {quote(column)} < :before"
        params = {"before": self.dialect.time(to_utc(before))}
        with self._write() as conn:
            count = int(self._rows(conn, f"SELECT count(*) {where}", params)[0][0])
            if count and not dry_run:
                self._execute(conn, f"DELETE {where}", params)
        return count

    # -- cases ------------------------------------------------------------------------------------

    def _case(self, conn: Any, case_id: str) -> dict[str, Any]:
        # one keyed row through the key's index, converted value by value (no frame)
        rows = self._rows(
            conn,
            f"SELECT {', '.join(self.dialect.select(c) for c in CASES.columns)} "
            f"FROM {quote(CASES.name)} WHERE id = :id",
            {"id": case_id},
        )
        if not rows:
            raise no_case(case_id)
        as_stored = not self.dialect.json_cast
        return {c.name: stored_value(v, c, json_as_stored=as_stored)
                for c, v in zip(CASES.columns, rows[0], strict=True)}

    def _step(self, case_id: str, version: int, history: dict[str, Any]) -> pd.DataFrame:
        step = {**history, "case_id": case_id, "version": version}
        step.setdefault("at", self.dialect.now())
        return coerce_table(CASE_HISTORY, pd.DataFrame([step]))

    def create_case(
        self, case: dict[str, Any], *, history: dict[str, Any] | None = None,
        outbox: pd.DataFrame | list | None = None,
    ) -> dict[str, Any]:
        record = {**case, "version": 1}
        record.setdefault("updated_at", self.dialect.now())
        frame = coerce_table(CASES, pd.DataFrame([record]))
        case_id = frame.loc[0, "id"]
        if case_id is None or pd.isna(case_id):
            raise ValidationError("a case needs an id; give one (the cases module makes them)")
        steps = None if history is None else self._step(case_id, 1, history)
        with self._write() as conn:
            if not self._insert(conn, CASES, frame, " ON CONFLICT (id) DO NOTHING"):
                raise DuplicateIdError(
                    f"case {case_id!r} exists already; change it with update_case or give the "
                    "new case another id"
                )
            if steps is not None:
                self._insert(conn, CASE_HISTORY, steps)
            self._enqueue(conn, outbox)
            return self._case(conn, case_id)

    def create_cases(
        self,
        cases: Sequence[dict[str, Any]],
        *,
        histories: Sequence[dict[str, Any]],
        audits: Sequence[tuple[str, str, str, dict[str, Any], str]] = (),
    ) -> int:
        if len(histories) != len(cases):
            raise ValidationError(f"{len(cases)} cases need {len(cases)} first steps; "
                                  f"got {len(histories)}")
        if not cases:
            return 0
        now = self.dialect.now()
        records = [{"updated_at": now, **c, "version": 1} for c in cases]
        steps = [{"at": now, **h, "case_id": c["id"], "version": 1}
                 for c, h in zip(cases, histories, strict=True)]
        ids = [r.get("id") for r in records]
        if any(i is None or is_missing(i) for i in ids) or len(set(map(str, ids))) != len(ids):
            raise ValidationError("every new case needs its own id (the cases module makes them)")
        with self._write() as conn:
            written = self._insert_records(conn, CASES, records, " ON CONFLICT (id) DO NOTHING")
            if written != len(records):
                raise DuplicateIdError(f"{len(records) - written} of {len(records)} case ids "
                                       "exist already; nothing of the batch was stored")
            self._insert_records(conn, CASE_HISTORY, steps)
            rows = self._audit_many(conn, audits)
        if rows:
            audit_anchor.anchor_row(self, rows[-1])
        return int(written)

    def update_case(
        self,
        case_id: str,
        changes: dict[str, Any],
        *,
        expected_version: int,
        history: dict[str, Any] | None = None,
        outbox: pd.DataFrame | list | None = None,
    ) -> dict[str, Any]:
        unknown = sorted(k for k in changes if k not in _CASE_COLUMNS)
        fixed = sorted(k for k in changes if k in _FIXED_CASE_FIELDS)
        problems = []
        if unknown:
            problems.append(f"cases have no fields {unknown}")
        if fixed:
            problems.append(
                f"{fixed} cannot be changed: the store keeps the id and counts the "
                "version itself (pass expected_version)"
            )
        if problems:
            allowed = [n for n in _CASE_COLUMNS if n not in _FIXED_CASE_FIELDS]
            raise ValidationError("; ".join(problems) + f". Fields that can change: {allowed}.")
        values = {**changes}
        values.setdefault("updated_at", self.dialect.now())
        columns = [_CASE_COLUMNS[k] for k in values]
        params = {  # only the changed columns are typed (a whole case row costs more)
            f"p_{c.name}": self.dialect.values(
                coerce_series(pd.Series([values[c.name]], dtype=object), c), c.dtype
            )[0]
            for c in columns
        }
        params.update(id=case_id, expected=int(expected_version))
        sets = ", ".join(f"{quote(c.name)} = {self.dialect.mark(c, f'p_{c.name}')}"
                         for c in columns)
        expected_version = int(expected_version)
        steps = None if history is None else self._step(case_id, expected_version + 1, history)
        with self._write() as conn:
            changed = self._execute(
                conn,
                f"UPDATE {quote(CASES.name)} SET {sets}, version = version + 1 "
                "WHERE id = :id AND version = :expected",
                params,
            )
            if not changed:
                now = self._rows(conn, f"SELECT version FROM {quote(CASES.name)} WHERE id = :id",
                                 {"id": case_id})
                if not now:
                    raise no_case(case_id)
                raise StaleUpdateError(
                    f"case {case_id} was changed by someone else (now version {now[0][0]}, you "
                    f"had {expected_version}); reload it and try again"
                )
            if steps is not None:
                self._insert(conn, CASE_HISTORY, steps)
            self._enqueue(conn, outbox)
            return self._case(conn, case_id)

    def get_case(self, case_id: str) -> dict[str, Any]:
        with self._read(single=True) as conn:
            return self._case(conn, case_id)

    def case_history(self, case_id: str) -> pd.DataFrame:
        with self._read() as conn:
            return self._select(conn, CASE_HISTORY, "version", ["case_id = :id"], {"id": case_id})

    def read_cases(
        self,
        *,
        status: str | None = None,
        grid_code: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        columns: Sequence[str] | None = None,
        boxes: Sequence[tuple[float, float, float, float]] | None = None,
    ) -> gpd.GeoDataFrame | pd.DataFrame:
        clauses, params = self._time_range("requested_at", since, until)
        for name, value in (("status", status), ("grid_code", grid_code)):
            if value is not None:
                clauses.append(f"{quote(name)} = :{name}")
                params[name] = value
        if boxes is not None:
            clauses.append(_in_boxes(boxes, params))
        if columns is None:
            with self._read() as conn:
                frame = self._select(conn, CASES, self.dialect.order("id"), clauses, params)
            return with_points(frame)
        wanted, points = case_columns(columns)
        fetched = list(wanted)
        if points:
            fetched += [_CASE_COLUMNS[n] for n in ("lon", "lat") if _CASE_COLUMNS[n] not in wanted]
        with self._read() as conn:
            frame = self._case_columns(conn, fetched, clauses, params)
        if not points:
            return frame[[c.name for c in wanted]]
        return with_points(frame)[[*(c.name for c in wanted), "geometry"]]

    def case_counts(
        self,
        components: dict[str, str] | Sequence[str] | None = None,
        *,
        by: Sequence[str] = (),
        period: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        as_of: datetime | None = None,
    ) -> pd.DataFrame:
        """Count cases per slice and period (see :meth:`Store.case_counts`).

        Months that the rollup holds (:mod:`twin.store.rollup`) are summed from it; the rest is
        ONE ``GROUP BY`` over the cases, in the same read (one snapshot).
        """
        cases = quote(CASES.name)
        with self._read() as conn:
            self._before_counts(conn)

            def span(where: str, params: dict[str, Any]) -> tuple[Any, Any]:
                return self._rows(
                    conn, f"SELECT min(filed_at), max(filed_at) FROM {cases} WHERE {where}", params
                )[0]

            def grouped(lo: Any, hi: Any) -> pd.DataFrame:
                query = plan_case_counts(
                    components, by, period, lo, hi, as_of, span=span, table=CASES.name,
                    quote=quote, fence=self.dialect.fence, time=self.dialect.time,
                )
                rows = [] if query is None else self._count_rows(conn, query)
                return count_frame(query, rows, by=by, components=components, period=period)

            def from_rollup(plan: rollup.RollupSplit) -> pd.DataFrame:
                query = rollup.read_query(plan, quote=quote, key=self._rollup_key)
                return rollup.finish(query, self._count_rows(conn, query), plan, components)

            return rollup.counts(
                components, by, period, since, until, as_of,
                from_rollup=from_rollup if self._rollup_usable(conn) else None, grouped=grouped,
            )

    # -- audit ------------------------------------------------------------------------------------

    def append_audit(
        self,
        actor: str,
        action: str,
        target: str,
        detail: dict[str, Any] | None = None,
        origin: str = "",
    ) -> dict[str, Any]:
        """Append one row to the keyed audit chain (serialised: no two rows share a seq).

        The anchored head (:mod:`twin.audit_anchor`) moves after the commit, so it never runs
        ahead of what is stored.
        """
        with self._write() as conn:
            row = self._audit(conn, actor, action, target, detail, origin)
        audit_anchor.anchor_row(self, row)
        return row

    def _audit(
        self,
        conn: Any,
        actor: str,
        action: str,
        target: str,
        detail: dict[str, Any] | None = None,
        origin: str = "",
    ) -> dict[str, Any]:
        """Append one audit row inside the caller's write transaction (the audit lock held).

        The one place a row joins the chain: :func:`twin.store.base.audit_hash` over the
        previous row's hash, at the next seq after both the stored and the anchored head (a
        seq is never used twice, even after rows were deleted).
        """
        self._hold(conn, "audit")
        last = self._rows(conn, f"SELECT seq, hash FROM {quote(AUDIT.name)} "
                                "ORDER BY seq DESC LIMIT 1")
        seq, prev = audit_anchor.next_link(self, last[0] if last else None)
        row = {
            "seq": seq,
            "at": self.dialect.now(),
            "actor": actor,
            "action": action,
            "target": target,
            "detail": canonical_json(detail),
            "origin": origin,
            "prev_hash": prev,
        }
        row["hash"] = audit_hash(prev, row)
        self._insert_records(conn, AUDIT, [row])
        return row

    def _audit_many(
        self, conn: Any, audits: Sequence[tuple[str, str, str, dict[str, Any] | None, str]]
    ) -> list[dict[str, Any]]:
        """Append several audit rows in the caller's write transaction, as :meth:`_audit` does.

        One lock, one read of the head and one insert for the lot; each row links to the one
        before it exactly as if appended one by one.
        """
        if not audits:
            return []
        self._hold(conn, "audit")
        last = self._rows(conn, f"SELECT seq, hash FROM {quote(AUDIT.name)} "
                                "ORDER BY seq DESC LIMIT 1")
        seq, prev = audit_anchor.next_link(self, last[0] if last else None)
        now = self.dialect.now()
        key = auditchain.audit_key()  # read once for the batch
        rows = []
        for actor, action, target, detail, origin in audits:
            row = {"seq": seq, "at": now, "actor": actor, "action": action, "target": target,
                   "detail": canonical_json(detail), "origin": origin, "prev_hash": prev}
            row["hash"] = prev = audit_hash(prev, row, key)
            rows.append(row)
            seq += 1
        self._insert_records(conn, AUDIT, rows)
        return rows

    def search_audit(
        self, *, contains: Mapping[str, str] | None = None, start: Any = None, end: Any = None,
        before: int | None = None, limit: int = 100,
    ) -> tuple[pd.DataFrame, int]:
        searchable = ("actor", "action", "target", "detail", "origin")
        wanted = {k: str(v) for k, v in (contains or {}).items() if v not in (None, "")}
        if set(wanted) - set(searchable) or int(limit) < 1:
            raise ValidationError(
                f"the audit log is searched in {', '.join(searchable)} with a limit ≥ 1; "
                f"got {sorted(wanted)} and limit {limit}")
        clauses, params = [], {}
        for i, (column, text) in enumerate(sorted(wanted.items())):
            value = self.dialect.as_text(column) if column == "detail" else quote(column)
            clauses.append(f"{self.dialect.position}({value}, :c{i}) > 0")
            params[f"c{i}"] = text
        for name, op, value in (("start", ">=", start), ("end", "<", end)):
            if value is not None:
                clauses.append(f"{quote('at')} {op} :{name}")
                params[name] = self.dialect.time(to_utc(value))
        where = f" WHERE {' AND '.join(clauses)}" if clauses else ""
        page, page_params = list(clauses), {**params, "limit": int(limit)}
        if before is not None:
            page.append("seq < :before")
            page_params["before"] = int(before)
        with self._read() as conn:
            total = self._rows(conn, f"SELECT count(*) FROM {quote(AUDIT.name)}{where}",
                               params)[0][0]
            rows = self._select(conn, AUDIT, "seq DESC LIMIT :limit", page, page_params)
        return rows, int(total)

    def read_audit(self, since: int | None = None) -> pd.DataFrame:
        with self._read() as conn:
            if since is None:
                return self._select(conn, AUDIT, "seq")
            return self._select(conn, AUDIT, "seq", ["seq >= :since"], {"since": int(since)})

    # -- alarms once per (rule, source, episode), whatever the number of workers ---------------

    def open_alarms(self, alarms: pd.DataFrame,
                    outbox: pd.DataFrame | None = None) -> list[str]:
        """Insert each alarm unless its (rule, source) has one whose time span meets its episode.

        An alarm spans ``opened_at`` to its end (open-ended while active); an episode spans
        ``since`` (``data.since``, when the condition began) to ``until`` (None: going on). Each
        (rule, source) is locked for the transaction (PostgreSQL advisory lock; the embedded
        store has one writer at a time), and the unique partial index refuses a second open
        alarm whatever happens (``ON CONFLICT DO NOTHING``, no target: every unique index).
        """
        rows = prepare_rows(ALARMS, alarms.drop(columns=["since", "until"]), "ignore")
        since = [self.dialect.time(v) for v in alarms["since"]]
        until = [self.dialect.time(_FAR_FUTURE if v is None or pd.isna(v) else v)
                 for v in alarms["until"]]
        table = quote(ALARMS.name)
        names = ", ".join(quote(c.name) for c in ALARMS.columns)
        marks = ", ".join(self.dialect.mark(c, f"p_{c.name}") for c in ALARMS.columns)
        sql = (
            f"INSERT INTO {table} ({names}) SELECT {marks} "
            f"WHERE NOT EXISTS (SELECT 1 FROM {table} a "
            "WHERE a.rule_id = :p_rule_id AND a.source_id = :p_source_id AND a.opened_at <= :until "
            f"AND (a.status IN ({_ACTIVE_SQL}) OR {_ENDED_SQL} >= :since)) ON CONFLICT DO NOTHING"
        )
        values = {c.name: self.dialect.values(rows[c.name], c.dtype) for c in ALARMS.columns}
        inserted = []
        with self._write() as conn:
            if self.dialect.name == "sqlite" and not getattr(self, "_alarm_index_made", False):
                for statement in alarm_once_ddl():
                    self._execute(conn, statement)
                self._alarm_index_made = True
            for key in sorted(set(zip(rows["rule_id"], rows["source_id"], strict=True))):
                self._hold(conn, "alarm", *key)
            for i in range(len(rows)):
                params = {f"p_{name}": column[i] for name, column in values.items()}
                params.update(since=since[i], until=until[i])
                if self._execute(conn, sql, params) > 0:
                    inserted.append(rows["id"].iloc[i])
            if outbox is not None and len(outbox) and inserted:
                opened = {f"alarm:{i}" for i in inserted}
                self._enqueue(conn, outbox[outbox["subject"].isin(opened)])
        return inserted

    def resolve_alarms(self, ends: pd.DataFrame, now: Any) -> list[str]:
        """Resolve the active alarm of each (rule, source) opened before its episode's end."""
        sql = (
            f"UPDATE {quote(ALARMS.name)} SET status = 'resolved', resolved_at = :ended, "
            f"updated_at = :now WHERE rule_id = :rule_id AND source_id = :source_id "
            f"AND status IN ({_ACTIVE_SQL}) AND opened_at <= :ended RETURNING id"
        )
        done = []
        with self._write() as conn:
            for row in ends.sort_values(["rule_id", "source_id"]).itertuples(index=False):
                done += [r[0] for r in self._rows(conn, sql, {
                    "rule_id": row.rule_id, "source_id": row.source_id,
                    "ended": self.dialect.time(row.resolved_at), "now": self.dialect.time(now)})]
        return done

    def link_alarm_case(self, alarm_id: str, case_id: str, data: str, now: Any) -> bool:
        """Record an alarm's case (once) and move an open or acknowledged one to in_progress."""
        column = next(c for c in ALARMS.columns if c.name == "data")
        sql = (
            f"UPDATE {quote(ALARMS.name)} SET case_id = :case_id, status = CASE WHEN status IN "
            "('open', 'acknowledged') THEN 'in_progress' ELSE status END, "
            f"data = {self.dialect.mark(column, 'data')}, updated_at = :now "
            "WHERE id = :id AND case_id IS NULL"
        )
        with self._write() as conn:
            return self._execute(conn, sql, {"case_id": case_id, "data": data, "id": alarm_id,
                                              "now": self.dialect.time(now)}) > 0

    def active_alarm_keys(self) -> set[tuple[str, str]]:
        """Return the (rule_id, source_id) of every active alarm: one lean query, no frame."""
        with self._read(single=True) as conn:
            rows = self._rows(conn, f"SELECT rule_id, source_id FROM {quote(ALARMS.name)} "
                                    f"WHERE status IN ({_ACTIVE_SQL})")
        return {(r[0], r[1]) for r in rows}

    def events_last_seen(self, start: Any, kind: str = "obs") -> pd.Series:
        """Latest ``observed_at`` per source among events of *kind* since *start* (the store's)."""
        with self._read(single=True) as conn:
            rows = self._rows(
                conn,
                f"SELECT source_id, max(observed_at) FROM {quote(EVENTS.name)} "
                "WHERE observed_at >= :start AND kind = :kind GROUP BY source_id",
                {"start": self.dialect.time(start), "kind": kind},
            )
        return pd.Series(pd.to_datetime([r[1] for r in rows], utc=True, format="ISO8601"),
                         index=pd.Index([r[0] for r in rows], name="source_id"),
                         dtype="datetime64[us, UTC]")

    def events_of(self, sources: Sequence[str], start: Any, kind: str) -> pd.DataFrame:
        """Events of *kind* from *sources* observed since *start*, oldest first (id breaks ties)."""
        params: dict[str, Any] = {"start": self.dialect.time(start), "kind": kind}
        within = self.dialect.any_of("source_id", "src", list(sources), params)
        clauses = ["observed_at >= :start", "kind = :kind", within]
        order = f"{quote('observed_at')}, {self.dialect.order('id')}"
        with self._read() as conn:
            return self._select(conn, EVENTS, order, clauses, params)


    # -- the notification outbox (twin.notify) ---------------------------------------------------

    def _enqueue(self, conn: Any, rows: pd.DataFrame | list | None) -> int:
        """Write outbox rows inside the caller's transaction (a key stored already is kept)."""
        return outbox.insert(self, conn, rows)

    def enqueue(self, rows: pd.DataFrame | list) -> int:
        """Write outbox rows in a transaction of their own; return how many were new."""
        with self._write() as conn:
            return self._enqueue(conn, rows)

    def claim_outbox(self, worker: str, now: Any, *, lease_s: float = 60.0,
                     limit: int = 20) -> pd.DataFrame:
        """Claim due outbox rows for *worker* (see :mod:`twin.store.outbox`); return them."""
        now = to_utc(pd.Timestamp(now))
        with self._write() as conn:
            return outbox.claim(self, conn, worker, now, now + pd.Timedelta(seconds=lease_s),
                                limit)

    def settle_outbox(self, row_id: str, worker: str, *, status: str, now: Any,
                      next_at: Any = None, error: str | None = None) -> bool:
        """Record an attempt's outcome: delivered, pending again (at *next_at*) or dead."""
        if status not in ("delivered", "pending", "dead"):
            raise ValidationError(f"an attempt ends delivered, pending or dead; not {status!r}")
        with self._write() as conn:
            return outbox.settle(self, conn, row_id, worker, status=status,
                                 now=to_utc(pd.Timestamp(now)),
                                 next_at=None if next_at is None else to_utc(pd.Timestamp(next_at)),
                                 error=error)

    def outbox_summary(self) -> pd.DataFrame:
        """Rows per delivery status, with the earliest next try and the latest row."""
        with self._read() as conn:
            rows = outbox.summary(self, conn)
        frame = pd.DataFrame(rows, columns=["status", "rows", "next_at", "latest"])
        frame["rows"] = frame["rows"].astype(int)
        for column in ("next_at", "latest"):
            frame[column] = pd.to_datetime(frame[column], utc=True, format="ISO8601")
        return frame

    def requeue_outbox(self, ids: Sequence[str] | None = None, now: Any = None) -> int:
        """Put dead outbox rows (all, or *ids*) back to pending; return how many."""
        when = to_utc(pd.Timestamp(now)) if now is not None else self.dialect.now()
        with self._write() as conn:
            return outbox.requeue(self, conn, None if ids is None else list(ids), when)


# -- alarms once per (rule, source, episode), whatever the number of workers ----------------------

#: Alarm statuses of an episode still going on: no second alarm of its (rule, source) opens
#: while one of these is stored (the check of :meth:`SQLStore.open_alarms`, under a lock).
ACTIVE_ALARMS = ("open", "acknowledged", "in_progress")
#: The unique partial index refusing a second *open* alarm of a (rule, source) whatever any
#: worker does: migration 9 on PostGIS, made on first use in the embedded store. Open only:
#: acknowledged and in-progress alarms are people's work, which may outlive an episode (a
#: case still being handled) and which imports and the demo write as they were.
ALARM_ONCE_INDEX = "twin_alarms_one_open"
_ACTIVE_SQL = ", ".join(f"'{s}'" for s in ACTIVE_ALARMS)
#: When an inactive alarm's episode ended: resolved_at, else (closed by hand) its last change.
_ENDED_SQL = "coalesce(a.resolved_at, a.updated_at, a.opened_at)"
_FAR_FUTURE = pd.Timestamp("9999-01-01", tz="UTC")


def alarm_once_ddl() -> list[str]:
    """Return the statements closing duplicate open alarms, then indexing one per key.

    Stores written before the index existed (several workers each opening the same alarm)
    may hold several open alarms of one (rule, source): all but the earliest are closed
    (``resolved_at`` set to their last change) so that the index can be built.
    """
    alarms = quote(ALARMS.name)
    return [
        f"UPDATE {alarms} SET status = 'closed', "
        f"resolved_at = coalesce(resolved_at, updated_at, opened_at) "
        f"WHERE status = 'open' AND EXISTS (SELECT 1 FROM {alarms} b "
        f"WHERE b.rule_id = {alarms}.rule_id AND b.source_id = {alarms}.source_id "
        f"AND b.status = 'open' AND (b.opened_at < {alarms}.opened_at "
        f"OR (b.opened_at = {alarms}.opened_at AND b.id < {alarms}.id)))",
        f"CREATE UNIQUE INDEX IF NOT EXISTS {quote(ALARM_ONCE_INDEX)} ON {alarms} "
        "(rule_id, source_id) WHERE status = 'open'",
    ]


def _conflict_tail(table: TableSpec, on_conflict: str) -> str:
    """Return the ``ON CONFLICT`` tail of an insert: keep the stored row, or replace it."""
    keys = key_columns(table)
    if on_conflict == "update":
        assign = ", ".join(f"{quote(c.name)} = excluded.{quote(c.name)}"
                           for c in table.columns if c.name not in keys)
        action = f"DO UPDATE SET {assign}"
    else:
        action = "DO NOTHING"
    return f" ON CONFLICT ({', '.join(quote(k) for k in keys)}) {action}"
