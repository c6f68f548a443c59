"""The notification outbox in SQL: rows written with their cause, claimed once, settled.

:class:`twin.store.sql.SQLStore` calls these inside its own transactions. A claim is one
``UPDATE … RETURNING`` over the due rows: on PostgreSQL its subquery takes them ``FOR UPDATE
SKIP LOCKED`` (two workers never wait for, nor take, the same row); the embedded store runs one
writer at a time (``BEGIN IMMEDIATE``), so its claim is atomic as it stands.
"""

from __future__ import annotations

from typing import Any

import pandas as pd

from twin.schema import OUTBOX
from twin.store.base import prepare_rows
from twin.store.dialect import quote

_TABLE = quote(OUTBOX.name)


def insert(store: Any, conn: Any, rows: pd.DataFrame | list | None) -> int:
    """Insert outbox *rows* inside the caller's transaction; a key stored already is kept."""
    if rows is None:
        return 0
    frame = rows if isinstance(rows, pd.DataFrame) else pd.DataFrame(list(rows))
    if frame.empty:
        return 0
    frame = prepare_rows(OUTBOX, frame, "ignore")
    return int(store._insert(conn, OUTBOX, frame, " ON CONFLICT (id) DO NOTHING") or 0)


def claim(store: Any, conn: Any, worker: str, now: pd.Timestamp, lease_until: pd.Timestamp,
          limit: int) -> pd.DataFrame:
    """Claim up to *limit* due rows for *worker* (one more attempt each); return them.

    Due: pending with ``next_at <= now``, or sending with a lease run out (its worker died).
    """
    params = {"worker": worker, "now": store.dialect.time(now),
              "lease": store.dialect.time(lease_until), "limit": int(limit)}
    due = (f"SELECT id FROM {_TABLE} WHERE (status = 'pending' AND next_at <= :now) "
           "OR (status = 'sending' AND claimed_until <= :now) ORDER BY next_at, id LIMIT :limit")
    if store.dialect.name == "postgresql":
        # locked once, in a materialised CTE: a LIMIT subquery inside IN may be run again
        head = f"WITH due AS MATERIALIZED ({due} FOR UPDATE SKIP LOCKED) "
        due = "SELECT id FROM due"
    else:
        head = ""
    ids = [r[0] for r in store._rows(
        conn,
        f"{head}UPDATE {_TABLE} SET status = 'sending', claimed_by = :worker, "
        "claimed_until = :lease, attempts = attempts + 1 "
        f"WHERE id IN ({due}) RETURNING id",
        params,
    )]
    if not ids:
        return store._frame(OUTBOX.columns, [])
    where: dict[str, Any] = {}
    among = store.dialect.any_of("id", "ids", ids, where)
    return store._select(conn, OUTBOX, "next_at, id", [among], where)


def settle(store: Any, conn: Any, row_id: str, worker: str, *, status: str,
           now: pd.Timestamp, next_at: pd.Timestamp | None = None,
           error: str | None = None) -> bool:
    """Record the outcome of *worker*'s attempt at *row_id*; False if it no longer held it.

    ``delivered`` is recorded whoever holds the row (the message did arrive); a failure only by
    the worker still holding it, so a worker whose lease ran out cannot undo another's work.
    """
    params = {"id": row_id, "worker": worker, "now": store.dialect.time(now), "error": error}
    if status == "delivered":
        sql = (f"UPDATE {_TABLE} SET status = 'delivered', delivered_at = :now, "
               "claimed_by = NULL, claimed_until = NULL WHERE id = :id AND status <> 'delivered'")
    else:
        params["next_at"] = store.dialect.time(next_at if next_at is not None else now)
        params["status"] = status
        sql = (f"UPDATE {_TABLE} SET status = :status, next_at = :next_at, last_error = :error, "
               "claimed_by = NULL, claimed_until = NULL "
               "WHERE id = :id AND claimed_by = :worker AND status = 'sending'")
    return store._execute(conn, sql, params) > 0


def summary(store: Any, conn: Any) -> list[tuple]:
    """Return (status, rows, earliest next_at, latest created_at) per status."""
    return store._rows(
        conn,
        f"SELECT status, count(*), min({store.dialect.as_text('next_at')}), "
        f"max({store.dialect.as_text('created_at')}) FROM {_TABLE} GROUP BY status "
        "ORDER BY status",
    )


def requeue(store: Any, conn: Any, ids: list[str] | None, now: pd.Timestamp) -> int:
    """Put dead rows (all, or *ids*) back to pending with their attempts reset."""
    params: dict[str, Any] = {"now": store.dialect.time(now)}
    clause = "" if ids is None else " AND " + store.dialect.any_of("id", "ids", ids, params)
    return int(store._execute(
        conn,
        f"UPDATE {_TABLE} SET status = 'pending', attempts = 0, next_at = :now "
        f"WHERE status = 'dead'{clause}",
        params,
    ))
