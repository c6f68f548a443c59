"""The store contract: one abstract interface that the embedded and PostGIS stores implement."""

from __future__ import annotations

import abc
import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

import geopandas as gpd
import pandas as pd

from twin.errors import NotFoundError, StaleUpdateError, ValidationError
from twin.schema import (
    ASSIGNED_COLUMNS,
    CASE_HISTORY,
    CASES,
    Column,
    TableSpec,
    check_rules,
    coerce_table,
)

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


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


def audit_hash(prev_hash: str, row: dict[str, Any]) -> str:
    """The chain hash of an audit row: sha256 over the previous hash and the row's canonical JSON.

    Both stores call this, so a chain written by one verifies the same way as the other.
    """
    fields = {k: row.get(k) for k in ("seq", "at", "actor", "action", "target", "detail", "origin")}
    if isinstance(fields["at"], (datetime, pd.Timestamp)):
        fields["at"] = pd.Timestamp(fields["at"]).tz_convert("UTC").isoformat()
    if isinstance(fields["detail"], str):
        fields["detail"] = json.loads(fields["detail"])
    text = json.dumps(fields, sort_keys=True, ensure_ascii=False, default=str)
    return hashlib.sha256((prev_hash + "\n" + text).encode("utf-8")).hexdigest()


GENESIS_HASH = "0" * 64


class Store(abc.ABC):
    """Where the twin keeps its layers (versioned), events, cases and audit log.

    Implementations: :class:`twin.store.embedded.EmbeddedStore` (a GeoPackage file) and
    :class:`twin.store.postgis.PostGISStore`. Both take and return GeoDataFrames in EPSG:4326 with
    exactly the declared columns (``LayerSpec.column_names`` / ``TableSpec.columns``) in order.
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
        frames: dict[str, gpd.GeoDataFrame | pd.DataFrame],
        *,
        actor: str,
        source: str,
        note: str = "",
        report: dict | None = None,
        case_grids: pd.DataFrame | None = None,
    ) -> list[LayerVersion]:
        """Store several layers as their next versions, and re-grid cases, in ONE transaction.

        Every frame is validated first; then each layer gets a new current version, each
        changed case its new grid columns, and the audit log a ``layer.write`` row per layer —
        all committed together, or nothing at all.

        Parameters
        ----------
        frames
            Layer name → its features (see :meth:`write_layer`).
        actor, source, note, report
            Recorded with every version written (and in the audit log).
        case_grids
            Cases to move to new grids: ``id`` and the columns of
            :data:`twin.schema.ASSIGNED_COLUMNS`; optionally ``version``, the version the
            caller read. A case whose grid columns change gets them, ``version + 1``,
            ``updated_at`` now and a ``regrid`` step in its history; unchanged ones are left
            alone.

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
            If a case of *case_grids* is no longer at the given ``version`` (nothing is
            written; read the cases again and retry).
        """

    @abc.abstractmethod
    def read_layer(self, name: str, version: int | None = None) -> gpd.GeoDataFrame | pd.DataFrame:
        """The current (or the given) version of layer *name*, sorted by its id field.

        Raises
        ------
        LayerNotFoundError
            If the layer is not declared or has never been written.
        NotFoundError
            If that version does not exist.
        """

    @abc.abstractmethod
    def layer_versions(self, name: str) -> list[LayerVersion]:
        """Every version of layer *name*, oldest first (empty if never written)."""

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

    def layers(self) -> list[str]:
        """Names of the layers that have a current version."""
        import layers as declared

        return [n for n in declared.names() if self.layer_versions(n)]

    # -- events ---------------------------------------------------------------------------------

    @abc.abstractmethod
    def append_events(self, events: pd.DataFrame) -> int:
        """Append events (columns of :data:`twin.schema.EVENTS`); ids already stored are ignored.

        Returns the number of events newly stored. The whole batch is one transaction.
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

    # -- cases ----------------------------------------------------------------------------------

    @abc.abstractmethod
    def create_case(
        self, case: dict[str, Any], *, history: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        """Store a new case (fields of :data:`twin.schema.CASES`) at version 1 and return it.

        *history* (fields of :data:`twin.schema.CASE_HISTORY` but ``case_id`` and ``version``)
        is recorded as the case's first step in the same transaction.

        Raises
        ------
        DuplicateIdError
            If a case with that id exists.
        """

    @abc.abstractmethod
    def update_case(
        self,
        case_id: str,
        changes: dict[str, Any],
        *,
        expected_version: int,
        history: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        """Apply *changes* if the stored case is still at *expected_version*; return the new case.

        ``version`` becomes ``expected_version + 1`` and ``updated_at`` now (unless given).
        *history* is recorded as a step at the new version in the same transaction; steps are
        never changed or deleted.

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
    ) -> gpd.GeoDataFrame | pd.DataFrame:
        """Cases, optionally of one status or unit grid, requested in ``[since, until)``, by id.

        Parameters
        ----------
        status, grid_code
            Only cases with this status / in this unit grid.
        since, until
            Only cases with ``since <= requested_at < until`` (either bound may be left out).
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
    def read_audit(self) -> pd.DataFrame:
        """The whole audit log in chain order."""

    def verify_audit(self) -> int | None:
        """Return the seq of the first row whose hash does not match the chain, or None if intact."""
        prev = GENESIS_HASH
        for row in self.read_audit().to_dict("records"):
            if row["prev_hash"] != prev or audit_hash(prev, row) != row["hash"]:
                return int(row["seq"])
            prev = row["hash"]
        return None

    # -- life cycle -----------------------------------------------------------------------------

    def close(self) -> None:
        """Release connections."""

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.url!r})"


ON_CONFLICT = ("ignore", "update")


def prepare_rows(table: TableSpec, frame: pd.DataFrame, on_conflict: str) -> pd.DataFrame:
    """The rows of a :meth:`Store.put_rows` call typed and checked, as both stores need them."""
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
        typed = coerce_table(table, pd.DataFrame({name: pd.Series(values, dtype=object)}))[name]
        out.append((name, typed))
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
