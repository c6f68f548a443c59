"""The store contract: one abstract interface that the embedded and PostGIS stores implement."""

from __future__ import annotations

import abc
import re
from collections.abc import Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import geopandas as gpd
import numpy as np
import pandas as pd

from twin import auditchain
from twin.auditchain import GENESIS_HASH  # noqa: F401 - kept importable from here
from twin.errors import LayerNotFoundError, NotFoundError, StaleUpdateError, ValidationError
from twin.schema import (
    ASSIGNED_COLUMNS,
    CASE_HISTORY,
    CASES,
    CRS,
    LOGIN_ATTEMPTS,
    OUTBOX,
    SMALL,
    Column,
    TableSpec,
    ValidatedLayer,
    check_rules,
    coerce_series,
    coerce_table,
    coerce_values,
)
from twin.timeutil import local_zone, to_utc

BBox = tuple[float, float, float, float]  # min lon, min lat, max lon, max lat (EPSG:4326)


@dataclass(frozen=True)
class LayerVersion:
    """One version of a layer: who wrote it, when, from what, and how many rows."""

    layer: str
    version: int
    created_at: datetime
    actor: str
    source: str
    rows: int
    note: str = ""
    report: dict | None = None
    current: bool = True


@dataclass(frozen=True)
class PreparedEvents:
    """Events validated and encoded by a store's :meth:`Store.prepare_events`.

    *frame* holds the canonical events; *encoded* is that store's own form of them, ready to
    be written (PostGIS: binary COPY rows), or None.
    """

    frame: pd.DataFrame
    encoded: Any = None

    def __len__(self) -> int:
        return len(self.frame)


def checked_events(frame: pd.DataFrame) -> pd.DataFrame:
    """Check canonical events (:func:`twin.schema.coerce_table` of EVENTS) before a write.

    Every event needs an id; a missing arrival time becomes now. Raises ValidationError,
    before anything is written, when an id is missing.
    """
    missing = int(frame["id"].isna().sum())
    if missing:
        raise ValidationError(
            f"every event needs an id; {missing} of {len(frame)} have none. "
            "Nothing was stored; give each message a unique id."
        )
    received = frame["received_at"]
    if received.isna().any():
        now = pd.Timestamp.now(tz="UTC").as_unit(received.dt.unit)
        frame = frame.assign(received_at=received.fillna(now))
    return frame


def with_points(frame: pd.DataFrame) -> gpd.GeoDataFrame:
    """Add point geometries built from lon/lat (None where either is missing).

    Events keep no geometry column in either store (they are written at feed rate), nor do
    the embedded store's cases: readers get points made from their coordinates.
    """
    import shapely

    lon = frame["lon"].to_numpy(dtype=float, na_value=np.nan)
    lat = frame["lat"].to_numpy(dtype=float, na_value=np.nan)
    points = shapely.points(np.column_stack([lon, lat])) if len(frame) else np.array([], object)
    points = np.where(np.isfinite(lon) & np.isfinite(lat), points, None)
    return gpd.GeoDataFrame(frame, geometry=points, crs=CRS)


def utcnow() -> datetime:
    return datetime.now(UTC)


def audit_hash(prev_hash: str, row: dict[str, Any], key: bytes | None = None) -> str:
    """Chain-hash an audit row: HMAC-SHA256 under the audit key over the previous hash and row.

    Both stores call this, so a chain written by one verifies the same way as the other. The
    key lives outside the store (:func:`twin.auditchain.audit_key`); rows written before the
    chain was keyed carry :func:`twin.auditchain.legacy_hash` and stay verifiable. *key* is
    the audit key when the caller read it already (once for a batch of rows).
    """
    return auditchain.row_hash(prev_hash, row, key)


def typed_columns(rows: Sequence[Sequence[Any]], columns: Sequence[Column], *,
                  extra: Sequence[str] = (), stored_json: bool = False) -> dict[str, pd.Series]:
    """Return fetched rows as typed columns (:func:`twin.schema.coerce_series` dtypes).

    *extra* names trailing fields of each row returned as fetched (a geometry). With
    *stored_json* JSON text is returned as stored (the store's own tables only ever receive
    canonical JSON). A short result (at most :data:`twin.schema.SMALL` rows: a user, a key, a
    case) is typed value by value (:func:`twin.schema.coerce_values`): pandas' inference of
    each column's type would cost more than the rows themselves; longer ones are inferred in
    one ``from_records``.
    """
    names = [*(c.name for c in columns), *extra]
    if len(rows) > SMALL:
        raw = pd.DataFrame.from_records(rows, columns=names)
        fields = {n: raw[n] for n in names}
        typed = {c.name: _as_stored(fields[c.name]) if stored_json and c.dtype == "json"
                 else coerce_series(fields[c.name], c) for c in columns}
    else:
        index = pd.RangeIndex(len(rows))
        fields = dict(zip(names, zip(*rows, strict=True), strict=True)) if rows else {
            n: () for n in names}
        typed = {c.name: pd.Series(list(fields[c.name]), index=index, dtype=object)
                 if stored_json and c.dtype == "json" else coerce_values(fields[c.name], c)
                 for c in columns}
        fields = {n: pd.Series(list(fields[n]), index=index, dtype=object) for n in extra}
    return {**typed, **{n: fields[n] for n in extra}}


def _as_stored(texts: pd.Series) -> pd.Series:
    """Return JSON text as stored: objects, None where missing."""
    return texts.astype(object).where(texts.notna(), None)


def layer_or_empty(store: Store, name: str) -> pd.DataFrame:
    """Return the current layer *name* of *store*, or an empty frame when it was never loaded."""
    try:
        return store.read_layer(name)
    except LayerNotFoundError:
        return pd.DataFrame()


def current_stamps(
    rows: Iterable[Sequence[Any]], names: Iterable[str]
) -> dict[str, tuple[int, str] | None]:
    """Return ``{layer: (version, created_at text)}`` from rows of current versions.

    *rows* are (layer, version, created_at); the highest version wins, and the *names* without
    a row get None.
    """
    out: dict[str, tuple[int, str] | None] = dict.fromkeys(names)
    for layer, version, created in rows:
        held = out.get(layer)
        if held is None or int(version) > held[0]:
            out[layer] = (int(version), str(created))
    return out


def check_expected(
    expect: Mapping[str, int | None], current: Mapping[str, tuple[int, str] | None]
) -> None:
    """Raise StaleUpdateError if a layer's current version is not the one the writer read.

    *expect* maps a layer to the version its writer read (None: it had none); *current*
    is :func:`current_stamps` of the same layers, read under the write's locks.
    """
    now = {name: (current.get(name) or (None,))[0] for name in expect}
    moved = [name for name, read in expect.items() if read != now[name]]
    if moved:
        what = ", ".join(f"{name} (read version {expect[name]}, now {now[name]})"
                         for name in moved)
        raise StaleUpdateError(
            f"written meanwhile: {what}; nothing was written. Read the layers again and retry."
        )


class Store(abc.ABC):
    """Where the twin keeps its layers (versioned), events, cases and audit log.

    Implementations: :class:`twin.store.embedded.EmbeddedStore` (a GeoPackage file) and
    :class:`twin.store.postgis.PostGISStore`, children of :class:`twin.store.sql.SQLStore`,
    which holds what they share over a dialect (:mod:`twin.store.dialect`). Both take and
    return GeoDataFrames in EPSG:4326 with exactly the declared columns
    (``LayerSpec.column_names`` / ``TableSpec.columns``) in order.
    Every method that writes is atomic: when it raises, nothing it was asked to do is stored.
    Times come back as timezone-aware UTC pandas Timestamps.
    """

    url: str

    # -- layers ---------------------------------------------------------------------------------

    def write_layer(
        self,
        name: str,
        frame: gpd.GeoDataFrame | pd.DataFrame,
        *,
        actor: str,
        source: str,
        note: str = "",
        report: dict | None = None,
    ) -> LayerVersion:
        """Store *frame* as the next version of layer *name* and make it current, atomically.

        The one-layer case of :meth:`write_layers`; the frame is validated with
        :func:`twin.schema.validate_layer_frame` first, and the load is audited.

        Raises
        ------
        LayerNotFoundError
            If *name* is not a declared layer.
        ValidationError
            If the frame breaks a declared rule (wrong geometry type, duplicate id …).
        """
        return self.write_layers(
            {name: frame}, actor=actor, source=source, note=note, report=report
        )[0]

    @abc.abstractmethod
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
        """Store several layers as their next versions, and re-grid cases, in ONE transaction.

        Every frame is validated first; then each layer gets a new current version, each
        changed case its new grid columns, and the audit log a ``layer.write`` row per layer —
        all committed together, or nothing at all.

        Parameters
        ----------
        frames
            Layer name → its features (see :meth:`write_layer`), or a
            :class:`twin.schema.ValidatedLayer`, which is not validated again (only its
            assigned grid columns are checked; see :func:`twin.schema.layer_frame_to_store`).
        actor, source, note, report
            Recorded with every version written (and in the audit log).
        case_grids
            Cases to move to new grids: ``id`` and the columns of
            :data:`twin.schema.ASSIGNED_COLUMNS`; optionally ``version``, the version the
            caller read. A case whose grid columns change gets them, ``version + 1``,
            ``updated_at`` now and a ``regrid`` step in its history; unchanged ones are left
            alone.
        expect
            Layer → the version the frames were derived from (None: the layer had none),
            checked under the write's locks: the grid cells features were assigned to, the
            located layers re-assigned to new grid cells. A write based on a version another
            writer has replaced fails instead of undoing that writer's work.

        Returns
        -------
        list of LayerVersion
            The versions written, in the order of *frames*.

        Raises
        ------
        LayerNotFoundError
            If a name is not a declared layer.
        ValidationError
            If a frame breaks a declared rule or *case_grids* lacks ``id`` (nothing is written).
        NotFoundError
            If *case_grids* names a case that does not exist (nothing is written).
        StaleUpdateError
            If a case of *case_grids* is no longer at the given ``version``, or a layer of
            *expect* at its version (nothing is written; read them again and retry).
        """

    @abc.abstractmethod
    def read_layer(
        self, name: str, version: int | None = None, *, columns: Sequence[str] | None = None
    ) -> gpd.GeoDataFrame | pd.DataFrame:
        """Read the current (or the given) version of layer *name*, sorted by its id field.

        Parameters
        ----------
        name
            A declared layer.
        version
            The version to read; the current one when None.
        columns
            Only these declared columns (the id field and the geometry always come), in the
            declared order: what a lookup needs, without fetching and converting the rest.

        Raises
        ------
        LayerNotFoundError
            If the layer is not declared or has never been written.
        NotFoundError
            If that version does not exist.
        ValidationError
            If *columns* names a column the layer does not declare.
        """

    def read_features(
        self, name: str, *, version: int | None = None,
        bbox: tuple[float, float, float, float] | None = None,
        equals: Mapping[str, Any] | None = None, limit: int | None = None, offset: int = 0,
    ) -> tuple[gpd.GeoDataFrame | pd.DataFrame, int, int]:
        """Return one page of a layer's features, how many match in all, and the version read.

        The features of *version* (None: the current one) whose geometry intersects *bbox*
        (lon/lat, EPSG:4326) and whose columns equal *equals*, sorted by the layer's id, from
        *offset*, at most *limit*. The stores answer with their SQL and spatial index, and
        give the values as the database holds them (dates may be text: a page is for serving,
        not for computing); this default reads the version whole.

        Raises
        ------
        LayerNotFoundError, NotFoundError
            As :meth:`read_layer`; ValidationError for a column the layer does not declare.
        """
        if version is None:
            stamp = self.current_versions([name]).get(name)
            if stamp is None:
                raise LayerNotFoundError(f"layer {name!r} has no version in this store yet")
            version = stamp[0]
        frame, matched = page_features(self.read_layer(name, version), name, bbox=bbox,
                                       equals=equals, limit=limit, offset=offset)
        return frame, matched, int(version)

    @abc.abstractmethod
    def layer_versions(self, name: str) -> list[LayerVersion]:
        """Every version of layer *name*, oldest first (empty if never written)."""

    def current_versions(self, names: Sequence[str]) -> dict[str, tuple[int, str] | None]:
        """Return the current version of each layer in *names*, as cheaply as the store can.

        For callers that ask on every request whether a layer changed (the planner queries'
        cache): one small read instead of :meth:`layer_versions`' full records.

        Returns
        -------
        dict
            ``{name: (version, created_at as text)}``, None for a layer never written. The
            creation time tells a version apart from one given the same number after its
            history was rebuilt; its text is only compared with this store's own.

        Raises
        ------
        LayerNotFoundError
            If a name is not a declared layer.
        """
        names = list(dict.fromkeys(names))
        rows = [
            (v.layer, v.version, v.created_at)
            for name in names
            for v in self.layer_versions(name)
            if v.current
        ]
        return current_stamps(rows, names)

    @abc.abstractmethod
    def set_current_version(self, name: str, version: int, *, actor: str) -> LayerVersion:
        """Make an existing version current again (a rollback); returns that version.

        The rollback is written to the audit log (``layer.rollback``: who, which version, and
        the version that was current) in the same transaction.

        Raises
        ------
        NotFoundError
            If the version does not exist.
        """

    @abc.abstractmethod
    def purge_layer_versions(self, name: str, before_version: int, *, actor: str) -> list[int]:
        """Delete the versions of layer *name* older than *before_version*, never the current one.

        Their history rows and version records go in one transaction, audited there
        (``layer.purge``: which versions, how many rows). For retention: old versions take
        space and may hold personal data that must go.

        Returns
        -------
        list of int
            The versions deleted (empty when there were none).

        Raises
        ------
        LayerNotFoundError
            If *name* is not a declared layer.
        ValidationError
            If *before_version* is not a positive integer.
        """

    def layers(self) -> list[str]:
        """Names of the layers that have a current version."""
        from twin import layers as declared

        return [n for n in declared.names() if self.layer_versions(n)]

    # -- events ---------------------------------------------------------------------------------

    @abc.abstractmethod
    def prepare_events(self, events: pd.DataFrame) -> PreparedEvents:
        """Validate and encode events for :meth:`append_events`, without touching the store.

        A feed worker prepares batch n + 1 this way while batch n is being written (the
        database's work, during which the worker holds no GIL). Raises ValidationError as
        :meth:`append_events` would, before anything is written.
        """

    @abc.abstractmethod
    def append_events(self, events: pd.DataFrame | PreparedEvents) -> int:
        """Append events (columns of :data:`twin.schema.EVENTS`); ids already stored are ignored.

        *events* is a frame, or what :meth:`prepare_events` made of one. Returns the number of
        events newly stored. The whole batch is one transaction.
        """

    @abc.abstractmethod
    def read_events(
        self,
        start: datetime | None = None,
        end: datetime | None = None,
        *,
        bbox: BBox | None = None,
        grid_code: str | None = None,
        kind: str | None = None,
    ) -> gpd.GeoDataFrame:
        """Events with ``start <= observed_at < end`` in *bbox* and grid, oldest first."""

    @abc.abstractmethod
    def reassign_events(self, changes: pd.DataFrame) -> int:
        """Set the grid columns of stored events to a new assignment (after a grid change).

        *changes* has ``id``, ``observed_at`` (which finds the event's month) and the four
        assigned columns (:data:`twin.schema.ASSIGNED_COLUMNS`), as :func:`twin.batch.reenrich`
        finds them. One transaction; returns the events updated.
        """

    # -- events history: months, partitions, retention (twin.retention) ----------------------

    @abc.abstractmethod
    def ensure_event_partitions(self, until: Any = None) -> list[str]:
        """Make the event partitions of this month up to *until*'s month (default: this one).

        Also for the months of events waiting in the DEFAULT partition, which are moved into
        theirs. PostGIS only (:mod:`twin.store.eventparts`); the embedded store keeps events
        in one table and makes none. Returns the names of the partitions made.
        """

    @abc.abstractmethod
    def event_months(self, before: Any) -> dict[pd.Timestamp, int]:
        """Months (first instant, UTC) holding events observed before *before*, and their rows.

        On PostGIS also the empty partitions of such months (0 rows), which retention drops.
        """

    @abc.abstractmethod
    def drop_event_month(self, month: Any, expected: int) -> int:
        """Delete the events of *month* (UTC), provided they are exactly *expected* rows.

        *expected* is the row count of the archive made of the month: rows that arrived since
        are never deleted unarchived. On PostGIS the month's partition is detached and
        dropped. Returns the rows deleted.

        Raises
        ------
        StaleUpdateError
            If the month holds another number of rows than *expected* (nothing deleted).
        """

    # -- simple declared tables (dead letters, alarms …) ----------------------------------------

    @abc.abstractmethod
    def put_rows(
        self, table: TableSpec, frame: pd.DataFrame, *, on_conflict: str = "ignore"
    ) -> int:
        """Insert rows into a declared table in one transaction; return how many were written.

        Parameters
        ----------
        table
            One of :data:`twin.schema.TABLES` (dead letters, alarms …); the rows are typed and
            checked against its columns first.
        frame
            Rows with (a subset of) the table's columns; absent columns are stored empty.
        on_conflict
            What to do with a row whose key is already stored: ``"ignore"`` keeps the stored
            row, ``"update"`` replaces it with the new one.

        Raises
        ------
        ValidationError
            For unknown columns, values that do not convert, a broken choice or range rule,
            a missing key or an unknown *on_conflict* (nothing is written).
        """

    @abc.abstractmethod
    def read_rows(self, table: TableSpec, **equals: Any) -> pd.DataFrame:
        """Rows of a declared table whose columns equal the given values, sorted by its key.

        A list or tuple value matches any of its items (``status=("open", "acknowledged")``).
        Values are bound as parameters; column names must be the table's.

        Raises
        ------
        ValidationError
            If a name is not a column of *table* or a value does not convert to its type.
        """

    @abc.abstractmethod
    def read_row(self, table: TableSpec, **equals: Any) -> dict[str, Any] | None:
        """Return the first row :meth:`read_rows` gives, as a dict of plain values (or None).

        For the one-row lookups made on every request (a user, an API key): no frame is
        built. Missing values are None; times are UTC Timestamps; JSON is canonical text.

        Raises
        ------
        ValidationError
            As :meth:`read_rows`.
        """

    @abc.abstractmethod
    def put_row_capped(self, table: TableSpec, row: Mapping[str, Any], *,
                       within: Mapping[str, Any], cap: int) -> bool:
        """Insert (or replace) one row unless *cap* other rows matching *within* are stored.

        Counting and writing are one transaction, serialised per *within* (an advisory lock on
        PostgreSQL; one writer at a time in the embedded store): of two callers racing for the
        last place, one gets it. Returns False (nothing written) when the cap is reached.

        Raises
        ------
        ValidationError
            As :meth:`put_rows` for the row, or for a *within* name that is not a column.
        """

    @abc.abstractmethod
    def append_chained(self, table: TableSpec, frame: pd.DataFrame, *, fields: Sequence[str],
                       unique: str | None = None) -> pd.DataFrame:
        """Append rows to a hash-chained table (``seq``, ``prev_hash``, ``hash`` columns).

        In one serialised transaction each row gets the next ``seq`` and the HMAC of
        :func:`twin.auditchain.row_hash` over the previous row's hash and its *fields*. Rows
        whose *unique* column value is already stored (or repeated in *frame*) are skipped.
        Returns the rows written, with their seq and hashes.
        """

    @abc.abstractmethod
    def delete_rows_before(self, table: TableSpec, column: str, before: Any, *,
                           dry_run: bool = False) -> int:
        """Delete the rows of a declared table whose time *column* is before *before*.

        For tables that hold what is only needed for a while (login attempts); never the
        audit log, cases, events or layers, which have their own retention. Returns how many
        rows were (with *dry_run*: would be) deleted, in one transaction.

        Raises
        ------
        ValidationError
            If *table* is not one of :data:`TIMED_TABLES` or *column* not a time of it.
        """

    # -- cases ----------------------------------------------------------------------------------

    @abc.abstractmethod
    def create_case(
        self, case: dict[str, Any], *, history: dict[str, Any] | None = None,
        outbox: pd.DataFrame | list | None = None,
    ) -> dict[str, Any]:
        """Store a new case (fields of :data:`twin.schema.CASES`) at version 1 and return it.

        *history* (fields of :data:`twin.schema.CASE_HISTORY` but ``case_id`` and ``version``)
        is recorded as the case's first step in the same transaction, and so are the
        notifications *outbox* (rows of :data:`twin.schema.OUTBOX`, see :mod:`twin.notify`).

        Raises
        ------
        DuplicateIdError
            If a case with that id exists.
        """

    @abc.abstractmethod
    def create_cases(
        self,
        cases: Sequence[dict[str, Any]],
        *,
        histories: Sequence[dict[str, Any]],
        audits: Sequence[tuple[str, str, str, dict[str, Any], str]] = (),
    ) -> int:
        """Store many new cases, their first steps and audit rows in ONE transaction.

        The batch form of :meth:`create_case` for intake (Open311 posts gathered for a few
        milliseconds): every case at version 1 with its step (``histories``, one per case, in
        order), then the audit rows ``(actor, action, target, detail, origin)`` appended to
        the chain. All or nothing; returns the number of cases stored.

        Raises
        ------
        DuplicateIdError
            If one of the ids exists (nothing is written).
        ValidationError
            If *histories* does not hold one step per case.
        """

    @abc.abstractmethod
    def update_case(
        self,
        case_id: str,
        changes: dict[str, Any],
        *,
        expected_version: int,
        history: dict[str, Any] | None = None,
        outbox: pd.DataFrame | list | None = None,
    ) -> dict[str, Any]:
        """Apply *changes* if the stored case is still at *expected_version*; return the new case.

        ``version`` becomes ``expected_version + 1`` and ``updated_at`` now (unless given).
        *history* is recorded as a step at the new version in the same transaction; steps are
        never changed or deleted. The notifications *outbox* (rows of :data:`twin.schema.
        OUTBOX`) are written in that transaction too: none when the update is refused.

        Raises
        ------
        NotFoundError
            If there is no such case.
        StaleUpdateError
            If the case was changed since *expected_version* (nothing is written).
        """

    @abc.abstractmethod
    def get_case(self, case_id: str) -> dict[str, Any]:
        """One case as a dict. Raises NotFoundError if absent."""

    @abc.abstractmethod
    def case_history(self, case_id: str) -> pd.DataFrame:
        """Every recorded step of a case, oldest first (columns of CASE_HISTORY)."""

    @abc.abstractmethod
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
        """Cases, optionally of one status or unit grid, requested in ``[since, until)``, by id.

        Parameters
        ----------
        status, grid_code
            Only cases with this status / in this unit grid.
        since, until
            Only cases with ``since <= requested_at < until`` (either bound may be left out).
        boxes
            Only cases whose place lies in one of these ``(min lon, min lat, max lon, max lat)``
            boxes, edges included (e.g. around new reports, to look for their duplicates).
        columns
            Only these columns of :data:`twin.schema.CASES`, in this order: a plain DataFrame
            read in one query without decoding anything else (what indicators over a million
            cases need). Add ``"geometry"`` to get a GeoDataFrame of points. None: every
            column and the points.

        Raises
        ------
        ValidationError
            If *columns* names something that is not a case column.
        """

    @abc.abstractmethod
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
        """Count cases per slice and period inside the database: ONE ``GROUP BY`` query.

        The cohort is the cases filed (立案) in ``[since, until)`` (``filed_at``; cases never
        filed are left out). Each component is summed as a conditional count (``SUM(CASE WHEN
        … THEN 1 ELSE 0 END)``) with ``{as_of}`` standing for the time the case is counted as
        of: the end of its period (clipped to *as_of*), or *as_of* without a period.

        Parameters
        ----------
        components
            Names of :data:`CASE_COMPONENTS` (None: all of them), or name → SQL boolean
            expression over case columns (checked by :func:`check_components`).
        by
            Case columns to slice by (e.g. ``grid_code``, ``department``).
        period
            ``"day"``, ``"month"``, ``"quarter"`` or ``"year"`` of ``filed_at`` in local time
            (settings ``timezone``): adds a ``period`` column (``2026-03``, ``2026-03-02``,
            ``2026Q1``, ``2026``). None: no period; then *as_of* is required.
        since, until
            Bounds of ``filed_at`` (values are bound as parameters).
        as_of
            When the books are closed; steps after it do not count. With a *period*, each period
            is counted as of its own end, or *as_of* if earlier.

        Returns
        -------
        pandas.DataFrame
            The *by* columns, ``period`` (with a period), then one int64 column per component;
            one row per slice (and period) that has cases in the cohort, sorted (empty values
            last). Without *by* and *period*: exactly one row.

        Raises
        ------
        ValidationError
            For an unknown component, column or period, an expression that is not a plain
            boolean over case columns, or a missing *as_of* without a period.
        """

    # -- audit ----------------------------------------------------------------------------------

    @abc.abstractmethod
    def append_audit(
        self,
        actor: str,
        action: str,
        target: str,
        detail: dict[str, Any] | None = None,
        origin: str = "",
    ) -> dict[str, Any]:
        """Append one row to the hash-chained audit log (serialised: no two rows share a seq)."""

    @abc.abstractmethod
    def read_audit(self, since: int | None = None) -> pd.DataFrame:
        """Read the audit log in chain order: every row, or the rows from seq *since* on."""

    @abc.abstractmethod
    def search_audit(
        self, *, contains: Mapping[str, str] | None = None, start: Any = None, end: Any = None,
        before: int | None = None, limit: int = 100,
    ) -> tuple[pd.DataFrame, int]:
        """Return a page of the audit log, newest first, and how many rows match in all.

        Parameters
        ----------
        contains
            Column (``actor``, ``action``, ``target``, ``detail``, ``origin``) → a text each
            matching row holds (case-sensitive substring; empty texts are ignored).
        start, end
            Rows at or after *start* and before *end* (UTC, or aware times).
        before
            Rows with a ``seq`` below this one (the next page after a page ending there).
        limit
            At most this many rows (≥ 1).

        Raises
        ------
        ValidationError
            For another column or a *limit* below 1.
        """

    def verify_audit(self) -> int | None:
        """Check the whole keyed chain and its anchored head (twin.audit_anchor.verify_chain).

        Returns the seq of the first row that was changed or is missing (the first one cut off
        the end, 1 for an emptied or dropped table), or None if the log is intact.
        """
        from twin import audit_anchor

        return audit_anchor.verify_chain(self).first_bad_seq

    # -- what a store can do beyond the contract ------------------------------------------------

    def watermark(self) -> Hashable | None:
        """Return a token that changes whenever cases, events or alarms may have changed.

        Cheap (no query): the cockpit asks on every rerun whether to read again. None: the
        store cannot tell, and readers re-read after a while instead.
        """
        return None

    def fast_reader(self) -> Any | None:
        """Return this store's reader for planner queries run inside the database, or None.

        A PostGIS store gives a :class:`twin.store.postgis.PostGISReader` (its schema and a
        pooled read-only connection); :mod:`twin.query` then runs its SQL paths. None: the
        queries work in memory on :meth:`read_layer` frames.
        """
        return None

    # -- alarms once per (rule, source, episode) across feed workers (docs/feeds.md) --------------

    @abc.abstractmethod
    def open_alarms(self, alarms: pd.DataFrame,
                    outbox: pd.DataFrame | None = None) -> list[str]:
        """Insert alarms (ALARMS columns plus ``since``/``until``, their episode) once each.

        *outbox*: notifications (rows of :data:`twin.schema.OUTBOX` whose ``subject`` is
        ``alarm:<id>``) written in the same transaction for the alarms inserted now only.

        An alarm is inserted unless its (rule, source) already has one whose time span meets
        the episode (checked under a lock per key); the database refuses a second open alarm of
        a (rule, source) whatever happens (a unique partial index). Returns the ids inserted
        now: a worker that lost the race gets none.
        """

    @abc.abstractmethod
    def resolve_alarms(self, ends: pd.DataFrame, now: Any) -> list[str]:
        """Resolve the active alarm of each (``rule_id``, ``source_id``, ``resolved_at``).

        Only an alarm opened before that end is resolved. Returns the ids resolved now (none
        when another worker did first).
        """

    @abc.abstractmethod
    def link_alarm_case(self, alarm_id: str, case_id: str, data: str, now: Any) -> bool:
        """Record an alarm's case unless it has one (open/acknowledged → in_progress).

        Returns True if recorded now, False if the alarm had a case already.
        """

    @abc.abstractmethod
    def active_alarm_keys(self) -> set[tuple[str, str]]:
        """Return the (rule_id, source_id) of every open, acknowledged or in-progress alarm."""

    @abc.abstractmethod
    def events_last_seen(self, start: Any, kind: str = "obs") -> pd.Series:
        """Latest stored ``observed_at`` per source of events of *kind* since *start*."""

    @abc.abstractmethod
    def events_of(self, sources: Sequence[str], start: Any, kind: str) -> pd.DataFrame:
        """Return the stored events of *kind* from *sources* since *start*, oldest first."""

    # -- the notification outbox (twin.notify; docs/notify.md) -------------------------------------

    @abc.abstractmethod
    def enqueue(self, rows: pd.DataFrame | list) -> int:
        """Write outbox rows (:data:`twin.schema.OUTBOX`) in one transaction; return the new."""

    @abc.abstractmethod
    def claim_outbox(self, worker: str, now: Any, *, lease_s: float = 60.0,
                     limit: int = 20) -> pd.DataFrame:
        """Claim up to *limit* due outbox rows for *worker* until ``now + lease_s``.

        Due: pending with ``next_at <= now``, or claimed by a worker whose lease ran out. Each
        claimed row counts one more attempt. Two workers never claim the same row at once.
        """

    @abc.abstractmethod
    def settle_outbox(self, row_id: str, worker: str, *, status: str, now: Any,
                      next_at: Any = None, error: str | None = None) -> bool:
        """Record an attempt: ``delivered``, ``pending`` (tried again at *next_at*) or ``dead``.

        Returns False when the row was no longer *worker*'s (its lease ran out and another
        worker took it); a delivery is recorded whoever holds the row.
        """

    @abc.abstractmethod
    def outbox_summary(self) -> pd.DataFrame:
        """Rows per status (``status``, ``rows``, earliest ``next_at``, ``latest`` created)."""

    @abc.abstractmethod
    def requeue_outbox(self, ids: Sequence[str] | None = None, now: Any = None) -> int:
        """Put dead outbox rows (all, or *ids*) back to pending with no attempts; the count."""

    # -- life cycle -----------------------------------------------------------------------------

    def close(self) -> None:  # noqa: B027 - a store with nothing to release need not override
        """Release connections."""

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.url!r})"


ON_CONFLICT = ("ignore", "update")


def feature_equals(name: str, equals: Mapping[str, Any] | None) -> dict[str, Any]:
    """Return *equals* checked against the columns layer *name* declares (ValidationError)."""
    from twin import layers as declared

    spec = declared.get_layer(name)
    out = dict(equals or {})
    for column in out:
        if column not in spec.column_names:
            raise ValidationError(f"layer {name!r} has no column {column!r}; its columns: "
                                  f"{', '.join(spec.column_names)}")
    return out


def page_features(
    frame: pd.DataFrame, name: str, *, bbox: tuple[float, float, float, float] | None = None,
    equals: Mapping[str, Any] | None = None, limit: int | None = None, offset: int = 0,
) -> tuple[pd.DataFrame, int]:
    """Filter a layer frame by *bbox* and *equals* and cut one page of it; return it and the count.

    (:meth:`Store.read_features` in memory: for a version without a spatial index to use.)
    """
    import shapely

    keep = np.ones(len(frame), dtype=bool)
    for column, value in feature_equals(name, equals).items():
        keep &= (frame[column] == value).fillna(False).to_numpy(dtype=bool)
    if bbox is not None and isinstance(frame, gpd.GeoDataFrame):
        keep &= shapely.intersects(frame.geometry.to_numpy(), shapely.box(*bbox))
    matched = frame.loc[keep]
    stop = None if limit is None else offset + limit
    return matched.iloc[offset:stop].reset_index(drop=True), len(matched)


def prepare_rows(table: TableSpec, frame: pd.DataFrame, on_conflict: str) -> pd.DataFrame:
    """Type and check the rows of a :meth:`Store.put_rows` call, as both stores need them."""
    if on_conflict not in ON_CONFLICT:
        raise ValidationError(
            f"on_conflict must be one of {list(ON_CONFLICT)}; got {on_conflict!r}"
        )
    rows = coerce_table(table, pd.DataFrame(frame).drop(columns="geometry", errors="ignore"))
    keys = [k.strip() for k in table.key.split(",")]
    if rows[keys].isna().any(axis=None):
        raise ValidationError(
            f"table {table.name}: every row needs its key {keys}; "
            f"{int(rows[keys].isna().any(axis=1).sum())} rows lack it. Nothing was stored."
        )
    check_rules(rows, table.columns, keys[0])
    # the last row of a key wins inside one batch, as it would over two batches
    return rows.drop_duplicates(keys, keep="last").reset_index(drop=True)


def prepare_equals(table: TableSpec, equals: dict[str, Any]) -> list[tuple[str, pd.Series]]:
    """(column, typed values) pairs of a :meth:`Store.read_rows` filter; names are checked."""
    columns = {c.name: c for c in table.columns}
    unknown = [name for name in equals if name not in columns]
    if unknown:
        raise ValidationError(
            f"table {table.name} has no columns {unknown}; filter on {list(columns)}"
        )
    out = []
    for name, value in equals.items():
        values = list(value) if isinstance(value, (list, tuple, set, frozenset)) else [value]
        # only the filtered column is typed: coercing the table's others (absent, empty) cost
        # most of a one-row read (an API key checked on every request)
        out.append((name, coerce_series(pd.Series(values, dtype=object), columns[name])))
    return out


_CASE_COLUMNS = {c.name: c for c in CASES.columns}


def case_columns(columns: Sequence[str]) -> tuple[list[Column], bool]:
    """Return the CASES columns a :meth:`Store.read_cases` call asks for, and if it wants points.

    Raises
    ------
    ValidationError
        If a name is not a case column (nor ``geometry``), or is given twice.
    """
    if isinstance(columns, str):
        columns = [columns]
    names = list(columns)
    unknown = [n for n in names if n not in _CASE_COLUMNS and n != "geometry"]
    if unknown or len(set(names)) != len(names):
        raise ValidationError(
            f"read_cases(columns=…) takes distinct names of {list(_CASE_COLUMNS)} or 'geometry'; "
            f"got {names}"
        )
    return [_CASE_COLUMNS[n] for n in names if n != "geometry"], "geometry" in names


GRID_NAMES = tuple(c.name for c in ASSIGNED_COLUMNS)


def prepare_case_grids(case_grids: pd.DataFrame) -> pd.DataFrame:
    """Check and type the ``case_grids`` of :meth:`Store.write_layers`: id, grids, version."""
    frame = pd.DataFrame(case_grids).drop(columns="geometry", errors="ignore")
    allowed = {"id", "version", *GRID_NAMES}
    unknown = sorted(set(frame.columns) - allowed)
    if "id" not in frame or unknown:
        raise ValidationError(
            f"case_grids takes columns id, {', '.join(GRID_NAMES)} and optionally version; "
            f"got {list(frame.columns)}"
        )
    if frame["id"].isna().any() or frame["id"].duplicated().any():
        raise ValidationError("case_grids needs one row per case id, none empty")
    table = TableSpec("case_grids", tuple(_CASE_COLUMNS[n] for n in allowed if n in frame), "id")
    out = coerce_table(table, frame)
    for name in GRID_NAMES:
        if name not in out:
            out[name] = pd.Series(None, index=out.index, dtype=object)
    return out


def regrid_plan(
    wanted: pd.DataFrame, stored: pd.DataFrame, *, actor: str, source: str, note: str,
    at: pd.Timestamp,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Return the case updates and history steps that move cases to their new grids.

    Parameters
    ----------
    wanted
        :func:`prepare_case_grids` output.
    stored
        The same cases as stored now (read inside the writing transaction): ``id``,
        ``version``, ``status`` and the grid columns.
    actor, source, note, at
        Who loads the grids, from what, why and when (recorded in each ``regrid`` step).

    Returns
    -------
    (updates, steps)
        ``updates``: ``id``, the version read (``expected``) and the new grid columns, for the
        cases whose grids change; ``steps``: their ``regrid`` rows of CASE_HISTORY.

    Raises
    ------
    NotFoundError
        If a case of *wanted* is not stored.
    StaleUpdateError
        If a case is no longer at the version *wanted* gives.
    """
    now = stored.rename(columns={c: f"{c}_now" for c in stored.columns if c != "id"})
    merged = wanted.merge(now, on="id", how="left", indicator=True)
    missing = merged.loc[merged["_merge"] == "left_only", "id"].tolist()
    if missing:
        raise NotFoundError(
            f"cases {missing[:5]} do not exist; re-read the open cases before loading grids"
        )
    if "version" in wanted:
        given = merged["version"].notna()
        stale = given & (merged["version"] != merged["version_now"])
        if stale.any():
            raise StaleUpdateError(
                f"cases {merged.loc[stale, 'id'].tolist()[:5]} changed while the grids were "
                "assigned; nothing was written. Load the grid cells again."
            )
    changed = pd.Series(False, index=merged.index)
    for name in GRID_NAMES:
        new, old = merged[name], merged[f"{name}_now"]
        changed |= ~((new == old).fillna(False) | (new.isna() & old.isna()))
    moved = merged.loc[changed].reset_index(drop=True)
    updates = pd.DataFrame({"id": moved["id"], "expected": moved["version_now"].astype("int64")})
    for name in GRID_NAMES:
        updates[name] = moved[name].astype(object).where(moved[name].notna(), None)
    olds = moved[[f"{n}_now" for n in GRID_NAMES]].astype(object)
    news = moved[list(GRID_NAMES)].astype(object)
    details = [  # one small dict per moved case, only when grids are loaded
        {"from": dict(zip(GRID_NAMES, o, strict=True)), "to": dict(zip(GRID_NAMES, n, strict=True)),
         "source": source}
        for o, n in zip(
            olds.where(olds.notna(), None).itertuples(index=False),
            news.where(news.notna(), None).itertuples(index=False),
            strict=True,
        )
    ]
    steps = coerce_table(
        CASE_HISTORY,
        pd.DataFrame({
            "case_id": moved["id"],
            "version": moved["version_now"].astype("int64") + 1,
            "at": at,
            "actor": actor,
            "action": "regrid",
            "from_status": moved["status_now"],
            "to_status": moved["status_now"],
            "note": note or "new grid cells",
            "data": pd.Series(details, dtype=object),
        }),
    )
    return updates, steps


def layer_audit(version: LayerVersion, *, previous: int | None = None) -> dict[str, Any]:
    """Return the audit detail of a layer write or rollback."""
    detail: dict[str, Any] = {"layer": version.layer, "version": version.version}
    if previous is None:
        detail.update(rows=version.rows, source=version.source, note=version.note)
    else:
        detail["previous"] = previous
    return detail


def purge_plan(versions: Sequence[LayerVersion], before_version: int) -> list[int]:
    """Return the versions :meth:`Store.purge_layer_versions` deletes (older, never current).

    Raises
    ------
    ValidationError
        If *before_version* is not a positive integer.
    """
    if isinstance(before_version, bool) or not isinstance(before_version, (int, float)) or \
            int(before_version) != before_version or before_version < 1:
        raise ValidationError(
            f"before_version must be a positive whole version number; got {before_version!r}"
        )
    return [v.version for v in versions if v.version < before_version and not v.current]


def read_csv_columns(data: bytes, columns: Sequence[Column]) -> Any:
    """Parse CSV rows of the *columns* into a pyarrow table (both stores pack results so).

    Text fields are quoted (``"…"`` with ``""`` inside); NULL is an empty unquoted field.

    An unquoted empty field is NULL and a quoted one an empty text, which is exactly what
    pyarrow's reader tells apart with ``quoted_strings_can_be_null=False``.
    """
    import pyarrow as pa
    from pyarrow import csv

    types = {
        "text": pa.string(), "json": pa.string(), "int": pa.int64(), "float": pa.float64(),
        "bool": pa.bool_(), "datetime": pa.int64(), "date": pa.date32(),
    }
    names = [c.name for c in columns]
    if not data:
        return pa.table({c.name: pa.array([], type=types[c.dtype]) for c in columns}).select(
            names
        ).cast(_arrow_schema(columns))
    table = csv.read_csv(
        pa.BufferReader(data),
        read_options=csv.ReadOptions(column_names=names, block_size=1 << 24),
        parse_options=csv.ParseOptions(newlines_in_values=True, ignore_empty_lines=False),
        convert_options=csv.ConvertOptions(
            column_types={c.name: types[c.dtype] for c in columns},
            null_values=[""],
            strings_can_be_null=True,
            quoted_strings_can_be_null=False,
            true_values=["t"],
            false_values=["f"],
        ),
    )
    return table.cast(_arrow_schema(columns))


def _arrow_schema(columns: Sequence[Column]) -> Any:
    import pyarrow as pa

    types = {
        "text": pa.string(), "json": pa.string(), "int": pa.int64(), "float": pa.float64(),
        "bool": pa.bool_(), "datetime": pa.timestamp("us", tz="UTC"), "date": pa.date32(),
    }
    return pa.schema([(c.name, types[c.dtype]) for c in columns])


# -- counts behind the indicators ------------------------------------------------------------

AS_OF = "{as_of}"
_FILED = "filed_at <= {as_of}"
_DISPATCHED = _FILED + " AND dispatched_at <= {as_of}"
_NOT_CANCELLED = "(cancelled_at IS NULL OR cancelled_at > {as_of})"
_NOT_HELD = "(status IS NULL OR status <> 'on_hold')"

#: The additive counts behind the indicators (GB/T 30428.4; definitions in docs/cases.md), each
#: an SQL boolean over CASES columns that is true when the case counts. ``{as_of}`` is the time
#: the case is counted as of. Both stores run exactly these; :func:`twin.kpi.case_counts` is the
#: same in pandas, and a contract test checks that they agree.
CASE_COMPONENTS: dict[str, str] = {
    "filed": _FILED,
    "cancelled": _FILED + " AND cancelled_at <= {as_of}",
    "filed_on_time": _FILED + " AND (file_deadline IS NULL OR filed_at <= file_deadline)",
    "dispatched": _DISPATCHED,
    "reworked": _DISPATCHED + " AND first_rework_at <= {as_of}",
    "extended": _DISPATCHED + " AND extended",
    "handled": _DISPATCHED + " AND fed_back_at <= {as_of}",
    "due_to_handle": _DISPATCHED + f" AND {_NOT_CANCELLED} AND ((handle_deadline <= {{as_of}} "
    f"AND {_NOT_HELD}) OR fed_back_at <= {{as_of}})",
    "handled_on_time": _DISPATCHED + " AND fed_back_at <= {as_of} AND fed_back_at <= "
    "handle_deadline",
    "due": _FILED + f" AND {_NOT_CANCELLED} AND ((deadline_at <= {{as_of}} AND {_NOT_HELD}) "
    "OR closed_at <= {as_of})",
    "closed": _FILED + f" AND {_NOT_CANCELLED} AND closed_at <= {{as_of}}",
    "closed_on_time": _FILED + f" AND {_NOT_CANCELLED} AND closed_at <= {{as_of}} "
    "AND closed_at <= deadline_at",
}

#: Tables whose old rows :meth:`Store.delete_rows_before` may delete (needed only for a while).
TIMED_TABLES = (LOGIN_ATTEMPTS.name, OUTBOX.name)

#: Periods of :meth:`Store.case_counts` → pandas frequency.
COUNT_PERIODS = {"day": "D", "month": "M", "quarter": "Q", "year": "Y"}
_TOKEN = re.compile(r"\s+|'[^']*'|\{as_of\}|<=|>=|<>|[=<>()]|[A-Za-z_][A-Za-z0-9_]*|.")
_KEYWORDS = {"AND", "OR", "NOT", "IS", "NULL", "TRUE", "FALSE"}


def check_components(
    components: dict[str, str] | Sequence[str] | None,
) -> tuple[dict[str, str], list[str]]:
    """Return the components of a :meth:`Store.case_counts` call and the columns they read.

    Names must be of :data:`CASE_COMPONENTS`; an expression may hold only case column names,
    ``AND OR NOT IS NULL TRUE FALSE``, comparisons, parentheses, quoted text without quotes
    inside, and ``{as_of}`` — nothing else reaches the SQL.

    Raises
    ------
    ValidationError
        For an unknown name or anything else in an expression.
    """
    if components is None:
        chosen = dict(CASE_COMPONENTS)
    elif isinstance(components, dict):
        chosen = {str(k): str(v) for k, v in components.items()}
    else:
        names = [components] if isinstance(components, str) else list(components)
        unknown = [n for n in names if n not in CASE_COMPONENTS]
        if unknown:
            raise ValidationError(
                f"unknown count components {unknown}; choose from {list(CASE_COMPONENTS)} "
                "or pass name → SQL boolean expression"
            )
        chosen = {n: CASE_COMPONENTS[n] for n in names}
    if not chosen:
        raise ValidationError("case_counts needs at least one component to count")
    used: list[str] = []
    for name, expression in chosen.items():
        for token in _TOKEN.findall(expression):
            if token.isspace() or token.startswith("'") or token == AS_OF or token in (
                "<=", ">=", "<>", "=", "<", ">", "(", ")"
            ):
                continue
            if token.upper() in _KEYWORDS:
                continue
            if token in _CASE_COLUMNS:
                if token not in used:
                    used.append(token)
                continue
            raise ValidationError(
                f"count component {name!r}: {token!r} is not allowed; write a boolean over the "
                f"case columns {list(_CASE_COLUMNS)} with AND/OR/NOT, IS NULL, comparisons, "
                "quoted text and {as_of}"
            )
    return chosen, used


def count_slices(by: Sequence[str]) -> list[str]:
    """Check the slice columns of :meth:`Store.case_counts` (case columns, distinct)."""
    names = [by] if isinstance(by, str) else list(by)
    bad = [n for n in names if n not in _CASE_COLUMNS or _CASE_COLUMNS[n].dtype == "json"]
    if bad or len(set(names)) != len(names):
        raise ValidationError(
            f"case_counts(by=…) takes distinct case columns (not data), e.g. grid_code, "
            f"department; got {names}"
        )
    return names


def period_edges(
    first: Any, last: Any, period: str
) -> tuple[list[str], list[pd.Timestamp]]:
    """Return the labels of the local periods from *first* to *last*, and their edges in UTC.

    There is one edge more than labels: period *i* is ``[edges[i], edges[i + 1])``.
    """
    freq = COUNT_PERIODS[period]
    zone = local_zone()
    lo = to_utc(first).tz_convert(zone).tz_localize(None)
    hi = to_utc(last).tz_convert(zone).tz_localize(None)
    periods = pd.period_range(pd.Period(lo, freq), pd.Period(hi, freq), freq=freq)
    starts = [p.start_time for p in periods] + [(periods[-1] + 1).start_time]
    edges = [pd.Timestamp(s).tz_localize(zone).tz_convert("UTC") for s in starts]
    return [str(p) for p in periods], edges


def _tree(column: str, edges: Sequence[str], leaves: Sequence[str], lo: int, hi: int) -> str:
    """Return a balanced CASE over *edges* picking the leaf of the period holding *column*."""
    if hi - lo == 1:
        return leaves[lo]
    mid = (lo + hi) // 2
    return (
        f"CASE WHEN {column} < {edges[mid]} THEN {_tree(column, edges, leaves, lo, mid)} "
        f"ELSE {_tree(column, edges, leaves, mid, hi)} END"
    )


@dataclass(frozen=True)
class CountQuery:
    """The SQL of a :meth:`Store.case_counts` call, with its parameters and how to read it."""

    sql: str
    params: dict[str, Any]
    names: list[str]
    by: list[str]
    labels: list[str] | None


def plan_case_counts(
    components: dict[str, str] | Sequence[str] | None,
    by: Sequence[str],
    period: str | None,
    since: Any,
    until: Any,
    as_of: Any,
    *,
    span: Any,
    table: str,
    quote: Any,
    fence: str,
    time: Any,
) -> CountQuery | None:
    """Build the one ``GROUP BY`` query of :meth:`Store.case_counts` (both stores).

    Parameters
    ----------
    components, by, period, since, until, as_of
        As :meth:`Store.case_counts` takes them.
    span
        ``span(where_sql, params) -> (min filed_at, max filed_at)`` of the cohort (the store
        answers it from its ``filed_at`` index); only called with a *period*.
    table, quote
        The cases table and the store's identifier quoting.
    fence
        SQL ending a subquery so that the planner keeps it (computes the period and its as-of
        once per case rather than once per use).
    time
        Turns a UTC Timestamp into the store's bound time value.

    Returns
    -------
    CountQuery or None
        None when the cohort is empty (the caller returns an empty frame).
    """
    chosen, used = check_components(components)
    keys = count_slices(by)
    if period is not None and period not in COUNT_PERIODS:
        raise ValidationError(
            f"period must be one of {list(COUNT_PERIODS)} or None; got {period!r}"
        )
    if period is None and as_of is None:
        raise ValidationError("case_counts without a period needs as_of (when books close)")
    params: dict[str, Any] = {}
    where = ["filed_at IS NOT NULL"]
    for name, bound, op in (("since", since, ">="), ("until", until, "<")):
        if bound is not None:
            where.append(f"filed_at {op} :{name}")
            params[name] = time(to_utc(bound))
    where_sql = " AND ".join(where)
    stop = None if as_of is None else to_utc(as_of)
    names = list(chosen)
    keys_sql = [quote(k) for k in keys]
    labels = None
    if period is None:
        params["as_of"] = time(stop)
        sums = [
            f"SUM(CASE WHEN {chosen[n].replace(AS_OF, ':as_of')} THEN 1 ELSE 0 END) AS _s{i}"
            for i, n in enumerate(names)
        ]
        group = f" GROUP BY {', '.join(keys_sql)}" if keys else ""
        sql = f"SELECT {', '.join([*keys_sql, *sums])} FROM {quote(table)} WHERE {where_sql}{group}"
        return CountQuery(sql, params, names, keys, None)
    first, last = span(where_sql, dict(params))
    if first is None or last is None:
        return None
    labels, edges = period_edges(first, last, period)
    ends = [e if stop is None else min(e, stop) for e in edges[1:]]
    for i, edge in enumerate(edges):
        params[f"b{i}"] = time(edge)
    for i, end in enumerate(ends):
        params[f"e{i}"] = time(end)
    m = len(labels)
    edge_marks = [f":b{i}" for i in range(m + 1)]
    k_tree = _tree("filed_at", edge_marks, [str(i) for i in range(m)], 0, m)
    e_tree = _tree("filed_at", edge_marks, [f":e{i}" for i in range(m)], 0, m)
    columns = [quote(c) for c in dict.fromkeys([*keys, *used, "filed_at"])]
    inner = (
        f"SELECT {', '.join(columns)}, {k_tree} AS _k, {e_tree} AS _e FROM {quote(table)} "
        f"WHERE {where_sql}{fence}"
    )
    flags = [
        f"CASE WHEN {chosen[n].replace(AS_OF, '_e')} THEN 1 ELSE 0 END AS _c{i}"
        for i, n in enumerate(names)
    ]
    middle = f"SELECT {', '.join([*keys_sql, '_k', *flags])} FROM ({inner}) AS _r{fence}"
    sums = [f"SUM(_c{i}) AS _s{i}" for i in range(len(names))]
    group = ", ".join([*keys_sql, "_k"])
    sql = f"SELECT {', '.join([*keys_sql, '_k', *sums])} FROM ({middle}) AS _f GROUP BY {group}"
    return CountQuery(sql, params, names, keys, labels)


def count_columns(query: CountQuery) -> list[str]:
    """Names of the columns of a :class:`CountQuery`'s result, in order."""
    return [*query.by, *(["_k"] if query.labels is not None else []),
            *(f"_s{i}" for i in range(len(query.names)))]


def count_frame(query: CountQuery | None, rows: Sequence[Sequence[Any]] | pd.DataFrame, *,
                by: Sequence[str], components: dict[str, str] | Sequence[str] | None,
                period: str | None) -> pd.DataFrame:
    """Return the DataFrame of :meth:`Store.case_counts` from the rows of its query (sorted).

    *rows* are plain tuples, or already a frame with the columns of :func:`count_columns`
    (what a store reads in bulk, e.g. from ``COPY … TO STDOUT``).
    """
    keys = count_slices(by)
    names = list(check_components(components)[0])
    head = [*keys, *(["period"] if period is not None else [])]
    if query is None or len(rows) == 0:
        out = pd.DataFrame({c: pd.Series([], dtype=object) for c in head})
        for n in names:
            out[n] = pd.Series([], dtype="int64")
        if query is not None and period is None and not keys:
            out.loc[0] = [0] * len(names)
            out = out.astype("int64")
        return out
    raw = rows if isinstance(rows, pd.DataFrame) else pd.DataFrame(
        [tuple(r) for r in rows], columns=count_columns(query))
    data: dict[str, Any] = {  # typed as read_cases types them
        k: pd.Series(raw[k], dtype="str") if _CASE_COLUMNS[k].dtype == "text"
        else coerce_series(raw[k], _CASE_COLUMNS[k]) for k in keys
    }
    if period is not None:
        labels = np.asarray(query.labels, dtype=object)
        data["period"] = labels[raw["_k"].to_numpy(dtype="int64")]
    for i, n in enumerate(names):
        counted = raw[f"_s{i}"]
        data[n] = counted.to_numpy() if counted.dtype == "int64" else \
            pd.to_numeric(counted).fillna(0).astype("int64").to_numpy()
    out = pd.DataFrame(data)  # one frame of the columns (a column at a time costs more here)
    if head:
        out = out.sort_values(head, na_position="last", kind="stable").reset_index(drop=True)
    return out
