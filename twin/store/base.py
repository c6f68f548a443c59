"""The store contract: one abstract interface that the embedded and PostGIS stores implement."""

from __future__ import annotations

import abc
import hashlib
import json
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

import geopandas as gpd
import pandas as pd


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

    @abc.abstractmethod
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

        The frame is validated with :func:`twin.schema.validate_layer_frame` first.

        Raises
        ------
        LayerNotFoundError
            If *name* is not a declared layer.
        ValidationError
            If the frame breaks a declared rule (wrong geometry type, duplicate id …).
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
        self, *, status: str | None = None, grid_code: str | None = None
    ) -> gpd.GeoDataFrame:
        """Cases, optionally of one status or unit grid, sorted by id."""

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

