"""The monthly rollup of case counts that both stores maintain with every case write.

Why: the indicator table by grid × month over a million cases is one ``GROUP BY`` that reads
every case (PostGIS ~1.5–4 s, SQLite ~7 s). A case's contribution to the counts of its filing
month — every :data:`~twin.store.base.CASE_COMPONENTS` evaluated as of the END of that local
month (setting ``timezone``) — depends on its own row only. So the stores keep, per (unit grid
columns, local month of ``filed_at``), the sum of those contributions in :data:`TABLE`, and
triggers in the database subtract a row's old contribution and add its new one in the same
transaction as any change of ``twin_cases`` (bulk writes, case steps, re-gridding, deletes, SQL
typed by hand).

:meth:`Store.case_counts` answers from the rollup when the request is one it holds (standard
components, slices among :data:`SLICES`, ``period="month"``, bounds on month edges) for the
months that ended by *as_of*; the months after it (not ended yet: their counts as of *as_of*
differ from those as of the month end) and every other request go through the ``GROUP BY``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

import pandas as pd

from twin.schema import ASSIGNED_COLUMNS
from twin.store.dialect import quote
from twin.timeutil import local_zone, to_utc

#: The rollup table, and the table recording which definition it was built with.
TABLE = "twin_case_months"
META = "twin_rollups"
#: Slice columns the rollup keeps: the unit grid and the grids above it. They change together
#: (only when grids are loaded), so keeping all four costs no more rows than the grid alone.
SLICES: tuple[str, ...] = tuple(c.name for c in ASSIGNED_COLUMNS)
#: Bump when the way the rollup is computed changes without CASE_COMPONENTS changing: stores
#: rebuild a rollup whose recorded fingerprint differs.
REVISION = 4
#: Cases filed outside these local months are not in the embedded store's calendar; a request
#: whose cohort reaches outside is counted by the GROUP BY.
FIRST_YEAR, LAST_YEAR = 1992, 2199  # Shanghai kept no daylight saving time after 1991


def components() -> dict[str, str]:
    """Return the components the rollup sums (all of CASE_COMPONENTS), name → SQL boolean."""
    from twin.store.base import CASE_COMPONENTS

    return dict(CASE_COMPONENTS)


def used_columns() -> list[str]:
    """Return the case columns a contribution reads: slices, ``filed_at``, components'."""
    from twin.store.base import check_components

    return list(dict.fromkeys([*SLICES, "filed_at", *check_components(None)[1]]))


def fingerprint(dialect: str) -> str:
    """Return a hash of what the sums depend on; stores rebuild the rollup when it changes."""
    text = repr((REVISION, dialect, local_zone(), SLICES, sorted(components().items())))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def month_ordinal(stamp: pd.Timestamp) -> int:
    """``year * 12 + month - 1`` of the local month holding UTC time *stamp*."""
    local = stamp.tz_convert(local_zone())
    return local.year * 12 + local.month - 1


def month_start(ordinal: int) -> pd.Timestamp:
    """Return the UTC start of the local month *ordinal*."""
    return pd.Timestamp(year=ordinal // 12, month=ordinal % 12 + 1, day=1).tz_localize(
        local_zone()).tz_convert("UTC")


def month_label(ordinal: int) -> str:
    """``YYYY-MM`` of a month ordinal, as :meth:`Store.case_counts` labels months."""
    return f"{ordinal // 12:04d}-{ordinal % 12 + 1:02d}"


def calendar_bounds() -> tuple[pd.Timestamp, pd.Timestamp]:
    """Return the UTC start of the calendar's first month and the end of its last."""
    return month_start(FIRST_YEAR * 12), month_start((LAST_YEAR + 1) * 12)


def calendar() -> pd.DataFrame:
    """Return every local month the embedded store's triggers know: ordinal, UTC start and end."""
    first, last = FIRST_YEAR * 12, (LAST_YEAR + 1) * 12
    starts = pd.date_range(f"{FIRST_YEAR}-01-01", periods=last - first + 1, freq="MS")
    utc = starts.tz_localize(local_zone()).tz_convert("UTC")
    return pd.DataFrame({"month": range(first, last), "starts": utc[:-1], "ends": utc[1:]})


# -- reading ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class RollupSplit:
    """How a :meth:`Store.case_counts` call is answered, from the rollup and the GROUP BY.

    The months ``[lo, hi)`` (ordinals; None: open) come from the rollup; with ``rest`` the
    cases filed in ``[rest_since, rest_until)`` are counted by the ``GROUP BY``.
    """

    names: list[str]
    columns: list[str]
    by: list[str]
    lo: int | None
    hi: int | None
    rest: bool
    rest_since: pd.Timestamp | None
    rest_until: pd.Timestamp | None


def _month_edge(value: Any) -> int | None:
    """Return the month ordinal of *value* if it is a local month's first instant, else None."""
    stamp = to_utc(value)
    ordinal = month_ordinal(stamp)
    return ordinal if month_start(ordinal) == stamp else None


def split(
    components_: dict[str, str] | Sequence[str] | None,
    by: Sequence[str],
    period: str | None,
    since: Any,
    until: Any,
    as_of: Any,
) -> RollupSplit | None:
    """Return how the rollup answers a :meth:`Store.case_counts` call, or None if it cannot.

    The rollup holds months counted as of their ends, so it answers a month only when that is
    what the call asks: ``period="month"``, every component one of CASE_COMPONENTS, *by* among
    :data:`SLICES`, *since*/*until* on local month edges, and the month ended by *as_of* (or no
    *as_of*: every month is then counted as of its own end). Months after *as_of*'s month
    start are left to the ``GROUP BY`` (``rest``).
    """
    from twin.store.base import check_components, count_slices

    chosen, _ = check_components(components_)
    keys = count_slices(by)
    if period != "month" or any(k not in SLICES for k in keys):
        return None
    known = {expression: name for name, expression in components().items()}
    if any(expression not in known for expression in chosen.values()):
        return None
    lo = hi = None
    if since is not None and (lo := _month_edge(since)) is None:
        return None
    if until is not None and (hi := _month_edge(until)) is None:
        return None
    rest, rest_since = False, None
    if as_of is not None:
        cut = month_ordinal(to_utc(as_of))  # months before it ended by as_of
        if hi is None or cut < hi:
            rest, rest_since = True, month_start(cut)
            hi = cut
        if lo is not None and hi <= lo:
            return None  # nothing ended yet: all of it is the GROUP BY's
    return RollupSplit(
        names=list(chosen), columns=[known[e] for e in chosen.values()], by=keys, lo=lo, hi=hi,
        rest=rest, rest_since=rest_since,
        rest_until=None if until is None else to_utc(until),
    )


def grouped_in_sql(plan: RollupSplit) -> bool:
    """Whether the rollup's rows are summed in SQL (slices coarser than the unit grid).

    Sliced by unit grid, each (grid, month) is one row of the rollup in practice (a grid lies
    in one responsibility grid, community and street): the rows come as stored and the few
    that share a key are summed in pandas. Summing 255,000 rows in SQL only to get the same
    rows back costs ~1 s in SQLite (an aggregate call per value) and ~0.3 s in PostgreSQL.
    """
    return SLICES[0] not in plan.by


def read_query(plan: RollupSplit, *, quote: Callable[[str], str],
               key: Callable[[str], str]) -> Any:
    """Return the SQL reading a :class:`RollupSplit`'s months from the rollup, as a CountQuery.

    ``_k`` holds the month ordinal (:func:`finish` turns it into a label index); *key* turns a
    stored slice column into its value (the embedded store keeps empty slices as a marker).
    Rows whose cases all left are deleted with each write; ``cases > 0`` skips any other.
    """
    from twin.store.base import CountQuery

    keys = [f"{key(k)} AS {quote(k)}" for k in plan.by]
    grouped = grouped_in_sql(plan)
    sums = [f"{'SUM(' if grouped else '('}{quote(c)}) AS _s{i}"
            for i, c in enumerate(plan.columns)]
    where, params = ["cases > 0"], {}
    if plan.lo is not None:
        where.append("month >= :lo")
        params["lo"] = plan.lo
    if plan.hi is not None:
        where.append("month < :hi")
        params["hi"] = plan.hi
    sql = (f"SELECT {', '.join([*keys, 'month AS _k', *sums])} FROM {quote(TABLE)} "
           f"WHERE {' AND '.join(where)}")
    if grouped:
        # the stored columns (not the values named alike in the SELECT): the key's order serves
        group = ", ".join([*(f"{quote(TABLE)}.{quote(k)}" for k in plan.by), "month"])
        sql += f" GROUP BY {group}"
    return CountQuery(sql, params, plan.names, plan.by, [])


def finish(query: Any, rows: Sequence[Sequence[Any]] | pd.DataFrame, plan: RollupSplit,
           components_: Any) -> pd.DataFrame:
    """Return the :meth:`Store.case_counts` frame of the rollup's rows (months labelled)."""
    from twin.store.base import count_columns, count_frame

    raw = rows if isinstance(rows, pd.DataFrame) else pd.DataFrame(
        [tuple(r) for r in rows], columns=count_columns(query))
    if len(raw) == 0:
        return count_frame(query, [], by=plan.by, components=components_, period="month")
    raw = raw.copy()
    raw["_k"] = pd.to_numeric(raw["_k"]).astype("int64")
    head = [*plan.by, "_k"]
    if not grouped_in_sql(plan) and raw.duplicated(head).any():
        raw = raw.groupby(head, dropna=False, sort=False, as_index=False).sum()
    first, last = int(raw["_k"].min()), int(raw["_k"].max())
    raw["_k"] = raw["_k"] - first
    labels = [month_label(m) for m in range(first, last + 1)]
    return count_frame(replace(query, labels=labels), raw, by=plan.by,
                       components=components_, period="month")


def combine(parts: Sequence[pd.DataFrame], head: Sequence[str]) -> pd.DataFrame:
    """Return the rollup's months and the ``GROUP BY``'s as one frame, sorted alike."""
    kept = [p for p in parts if len(p)]
    if len(kept) <= 1:
        return (kept or list(parts))[0].reset_index(drop=True)
    out = pd.concat(kept, ignore_index=True)
    return out.sort_values(list(head), na_position="last", kind="stable").reset_index(drop=True)


def counts(
    components_: dict[str, str] | Sequence[str] | None,
    by: Sequence[str],
    period: str | None,
    since: Any,
    until: Any,
    as_of: Any,
    *,
    from_rollup: Callable[[RollupSplit], pd.DataFrame] | None,
    grouped: Callable[[Any, Any], pd.DataFrame],
) -> pd.DataFrame:
    """:meth:`Store.case_counts` for both stores: the rollup where it answers, else GROUP BY.

    *from_rollup(plan)* reads the rollup's months (None: the store cannot use its rollup now);
    *grouped(since, until)* runs the ``GROUP BY`` over the cases filed in that window.
    """
    plan = None if from_rollup is None else split(components_, by, period, since, until, as_of)
    if plan is None:
        return grouped(since, until)
    parts = [from_rollup(plan)]
    if plan.rest:
        parts.append(grouped(plan.rest_since, plan.rest_until))
    return combine(parts, [*plan.by, "period"])


# -- maintaining -----------------------------------------------------------------------------


def contribution_select(source: str, *, sign: int, month: str, end: str, key: Callable[[str], str],
                        quote: Callable[[str], str], where: str = "") -> str:
    """Return the SELECT of the signed contributions of the cases of *source* (one row per case).

    *month* and *end* are SQL for the case's local month ordinal and the UTC end of that month
    (they may use columns of *source*); *key* stores a slice value (the embedded store marks
    empty ones). Columns: the slices, ``month``, ``cases`` and one per component.
    """
    flags = [
        f"{sign} * (CASE WHEN {expression.replace('{as_of}', end)} THEN 1 ELSE 0 END) "
        f"AS {quote(name)}"
        for name, expression in components().items()
    ]
    keys = [f"{key(k)} AS {quote(k)}" for k in SLICES]
    condition = "filed_at IS NOT NULL" + (f" AND {where}" if where else "")
    return (f"SELECT {', '.join([*keys, f'{month} AS month', f'{sign} AS cases', *flags])} "
            f"FROM {source} WHERE {condition}")


def trigger_names() -> list[str]:
    """Return the names of the triggers on the cases table that keep the rollup."""
    return [f"{TABLE}_{op}" for op in ("insert", "update", "delete")]


def sum_columns() -> list[str]:
    """Return the summed columns of the rollup, in order."""
    return ["cases", *components()]


def _grouped(select: str, *, having_changes: bool) -> str:
    """Sum contribution rows per rollup key (optionally only keys whose sums change)."""
    keys = ", ".join([*(quote(k) for k in SLICES), "month"])
    sums = ", ".join(f"SUM({quote(c)})" for c in sum_columns())
    having = (" HAVING " + " OR ".join(f"SUM({quote(c)}) <> 0" for c in sum_columns())
              if having_changes else "")
    # (WHERE true: SQLite's upsert needs a WHERE to tell its ON CONFLICT from a join's ON)
    return f"SELECT {keys}, {sums} FROM ({select}) AS _d WHERE true GROUP BY {keys}{having}"


def _insert_head() -> str:
    columns = ", ".join([*(quote(k) for k in SLICES), "month", *map(quote, sum_columns())])
    return f"INSERT INTO {quote(TABLE)} AS _t ({columns}) "


def _conflict() -> str:
    keys = ", ".join([*(quote(k) for k in SLICES), "month"])
    sets = ", ".join(f"{quote(c)} = _t.{quote(c)} + excluded.{quote(c)}" for c in sum_columns())
    return f" ON CONFLICT ({keys}) DO UPDATE SET {sets}"


def _table_ddl(*, postgis: bool) -> list[str]:
    """CREATE statements of the rollup: one row per key (the slices and the month).

    On PostGIS the key is a unique index whose empty slices compare equal (NULLS NOT
    DISTINCT); the embedded store keeps empty slices as a marker (:func:`sqlite_key`), so the
    key can be the primary key of a WITHOUT ROWID table: each upsert then changes one B-tree.
    """
    keys = [f"{quote(k)}{' TEXT' if postgis else ' NOT NULL'}" for k in SLICES]
    # INTEGER: PostgreSQL sums integers as bigint, bigints as numeric (twice the time here)
    sums = [f"{quote(c)} INTEGER NOT NULL" for c in sum_columns()]
    # the unit grid and month first: grouping by them reads the key in order (embedded)
    key_list = ", ".join([quote(SLICES[0]), "month", *(quote(k) for k in SLICES[1:])])
    columns = ", ".join([*keys, "month INTEGER NOT NULL", *sums])
    if postgis:
        out = [f"CREATE TABLE {quote(TABLE)} ({columns})",
               f"CREATE UNIQUE INDEX {quote(TABLE + '_key')} ON {quote(TABLE)} ({key_list}) "
               "NULLS NOT DISTINCT"]
    else:
        out = [f"CREATE TABLE {quote(TABLE)} ({columns}, PRIMARY KEY ({key_list})) "
               "WITHOUT ROWID"]
    # rows whose cases all moved away are deleted after each write, found through this
    return [*out, f"CREATE INDEX {quote(TABLE + '_empty')} ON {quote(TABLE)} (month) "
            "WHERE cases = 0"]


def _meta_ddl(time_type: str) -> list[str]:
    return [f"CREATE TABLE IF NOT EXISTS {quote(META)} (name TEXT PRIMARY KEY, "
            f"fingerprint TEXT NOT NULL, built_at {time_type})"]


# -- PostGIS: statement triggers over transition tables ----------------------------------------

def _pg_local_month(zone: str) -> tuple[str, str]:
    """Return SQL of ``filed_at``'s local month ordinal in *zone*, and of that month's UTC end.

    The zone is written into the trigger functions; :func:`fingerprint` holds it, so a store
    whose zone setting changed rebuilds its rollup (and these functions) when it opens.
    """
    literal = "'" + zone.replace("'", "''") + "'"
    local = f"filed_at AT TIME ZONE {literal}"
    month = f"(EXTRACT(YEAR FROM {local}) * 12 + EXTRACT(MONTH FROM {local}) - 1)::integer"
    end = f"((date_trunc('month', {local}) + interval '1 month') AT TIME ZONE {literal})"
    return month, end


_PG_OPS = {"insert": ("INSERT", [("_new", 1)]), "update": ("UPDATE", [("_old", -1), ("_new", 1)]),
           "delete": ("DELETE", [("_old", -1)])}


def _pg_contributions(source: str, sign: int) -> str:
    month, end = _pg_local_month(local_zone())
    inner = (f"(SELECT *, {month} AS _m, {end} AS _e FROM {source} "
             "WHERE filed_at IS NOT NULL OFFSET 0) AS _r")
    return contribution_select(inner, sign=sign, month="_m", end="_e", key=quote, quote=quote)


def postgis_statements(cases: str) -> list[str]:
    """Return the DDL (re)creating the PostGIS rollup, its triggers on *cases*, and its fill."""
    out = [f"DROP TABLE IF EXISTS {quote(TABLE)} CASCADE",
           *_table_ddl(postgis=True)]
    for op, (event, parts) in _PG_OPS.items():
        function = quote(f"{TABLE}_{op}")
        select = " UNION ALL ".join(_pg_contributions(src, sign) for src, sign in parts)
        keys = ", ".join([*(quote(k) for k in SLICES), "month"])
        body = (f"{_insert_head()}{_grouped(select, having_changes=True)} ORDER BY {keys}"
                f"{_conflict()}; DELETE FROM {quote(TABLE)} WHERE cases = 0;")
        refs = " ".join(f"{'OLD' if s == '_old' else 'NEW'} TABLE AS {s}" for s, _ in parts)
        out += [
            f"CREATE OR REPLACE FUNCTION {function}() RETURNS trigger LANGUAGE plpgsql AS "
            f"$body$ BEGIN {body} RETURN NULL; END $body$",
            f"DROP TRIGGER IF EXISTS {function} ON {quote(cases)}",
            f"CREATE TRIGGER {function} AFTER {event} ON {quote(cases)} REFERENCING {refs} "
            f"FOR EACH STATEMENT EXECUTE FUNCTION {function}()",
        ]
    truncate = quote(f"{TABLE}_truncate")
    out += [
        f"CREATE OR REPLACE FUNCTION {truncate}() RETURNS trigger LANGUAGE plpgsql AS "
        f"$body$ BEGIN TRUNCATE {quote(TABLE)}; RETURN NULL; END $body$",
        f"DROP TRIGGER IF EXISTS {truncate} ON {quote(cases)}",
        f"CREATE TRIGGER {truncate} AFTER TRUNCATE ON {quote(cases)} "
        f"FOR EACH STATEMENT EXECUTE FUNCTION {truncate}()",
        f"{_insert_head()}{_grouped(_pg_contributions(quote(cases), 1), having_changes=False)}",
        *_meta_ddl("TIMESTAMPTZ"),
        f"DELETE FROM {quote(META)} WHERE name = '{TABLE}'",
        f"INSERT INTO {quote(META)} (name, fingerprint, built_at) "
        f"VALUES ('{TABLE}', '{fingerprint('postgis')}', now())",
    ]
    return out


# -- embedded (SQLite): row triggers and a calendar of local months ------------------------------

CALENDAR = TABLE + "_calendar"
#: While this table has a row (only inside a bulk write's transaction) the embedded triggers do
#: nothing: the bulk write updates the rollup once for its whole batch (:func:`sqlite_batch`).
PAUSED = TABLE + "_paused"
#: The temporary table of the ids of a bulk write.
BATCH = "_rollup_batch"
_SQLITE_EMPTY = "X''"  # a zero-length BLOB: no TEXT slice value equals it, NULL keys would


def sqlite_key(name: str) -> str:
    """Return the stored form of a slice value in the embedded rollup (NULL → an empty BLOB)."""
    return f"coalesce({quote(name)}, {_SQLITE_EMPTY})"


def sqlite_value(name: str) -> str:
    """Return the slice value of a stored embedded rollup key."""
    return f"nullif({quote(name)}, {_SQLITE_EMPTY})"


def _sqlite_contributions(source: str, sign: int) -> str:
    # The local month is the UTC month of filed_at or one next to it (offsets are < 1 month):
    # three calendar rows by primary key. (A search on the month starts would compare the text
    # with numeric affinity, DATETIME's, and scan the calendar for every case.)
    utc_month = ("(CAST(substr(_r.filed_at, 1, 4) AS INTEGER) * 12 "
                 "+ CAST(substr(_r.filed_at, 6, 2) AS INTEGER) - 1)")
    joined = (f"{source} JOIN {quote(CALENDAR)} AS _m ON _m.month BETWEEN {utc_month} - 1 "
              f"AND {utc_month} + 1 AND _m.starts <= _r.filed_at AND _r.filed_at < _m.ends")
    return contribution_select(joined, sign=sign, month="_m.month", end="_m.ends",
                               key=sqlite_key, quote=quote)


def sqlite_statements(cases: str, time: Callable[[pd.Series], pd.Series]) -> list[tuple[str, list]]:
    """Return (SQL, rows) (re)creating the embedded rollup, calendar, triggers, and fill.

    *time* formats UTC times as the store keeps them (text that compares as the times do).
    """
    cal = calendar()
    cal_rows = list(zip(cal["month"].tolist(), time(cal["starts"]).tolist(),
                        time(cal["ends"]).tolist(), strict=True))
    used = used_columns()
    out: list[tuple[str, list]] = [(s, []) for s in (
        f"DROP TABLE IF EXISTS {quote(TABLE)}",
        f"DROP TABLE IF EXISTS {quote(CALENDAR)}",
        f"DROP TABLE IF EXISTS {quote(PAUSED)}",
        *_table_ddl(postgis=False),
        f"CREATE TABLE {quote(PAUSED)} (paused INTEGER)",
        f"CREATE TABLE {quote(CALENDAR)} (month INTEGER PRIMARY KEY, starts TEXT NOT NULL "
        "UNIQUE, ends TEXT NOT NULL)",
    )]
    out.append((f"INSERT INTO {quote(CALENDAR)} (month, starts, ends) VALUES (?, ?, ?)",
                cal_rows))
    for op in ("insert", "update", "delete"):
        out.append((f"DROP TRIGGER IF EXISTS {quote(f'{TABLE}_{op}')}", []))
    upsert = _conflict().replace("_t.", "")  # SQLite: the target table by its own name

    def row(prefix: str) -> str:
        return "(SELECT " + ", ".join(f"{prefix}.{quote(c)} AS {quote(c)}" for c in used) + \
            ") AS _r"

    def put(prefix: str, sign: int) -> str:
        columns = ", ".join([*(quote(k) for k in SLICES), "month", *map(quote, sum_columns())])
        return (f"INSERT INTO {quote(TABLE)} ({columns}) "
                f"{_sqlite_contributions(row(prefix), sign)}{upsert};")

    drop_empty = f"DELETE FROM {quote(TABLE)} WHERE cases = 0;"
    changed = " OR ".join(f"OLD.{quote(c)} IS NOT NEW.{quote(c)}" for c in used)
    running = f"NOT EXISTS (SELECT 1 FROM {quote(PAUSED)})"
    out += [(s, []) for s in (
        f"CREATE TRIGGER {quote(TABLE + '_insert')} AFTER INSERT ON {quote(cases)} "
        f"WHEN NEW.filed_at IS NOT NULL AND {running} BEGIN {put('NEW', 1)} END",
        f"CREATE TRIGGER {quote(TABLE + '_update')} AFTER UPDATE ON {quote(cases)} "
        f"WHEN ({changed}) AND {running} BEGIN {put('OLD', -1)} {put('NEW', 1)} {drop_empty} "
        "END",
        f"CREATE TRIGGER {quote(TABLE + '_delete')} AFTER DELETE ON {quote(cases)} "
        f"WHEN OLD.filed_at IS NOT NULL AND {running} BEGIN {put('OLD', -1)} {drop_empty} END",
    )]
    fill = _grouped(_sqlite_contributions(f"{quote(cases)} AS _r", 1), having_changes=False)
    columns = ", ".join([*(quote(k) for k in SLICES), "month", *map(quote, sum_columns())])
    out += [(s, []) for s in (
        f"INSERT INTO {quote(TABLE)} ({columns}) {fill}",
        *_meta_ddl("TEXT"),
        f"DELETE FROM {quote(META)} WHERE name = '{TABLE}'",
        f"INSERT INTO {quote(META)} (name, fingerprint, built_at) "
        f"VALUES ('{TABLE}', '{fingerprint('embedded')}', datetime('now'))",
    )]
    return out


def sqlite_batch(cases: str, sign: int) -> str:
    """Return SQL adding (*sign* 1) or taking away (-1) the stored cases of the bulk batch.

    A bulk write of the embedded store runs it around its INSERT with the triggers paused:
    one grouped upsert per batch instead of one upsert per case (~25 µs a case).
    """
    columns = ", ".join(f"_c.{quote(c)}" for c in used_columns())
    # CROSS JOIN keeps this order: the batch, then each case by its id (SQLite would otherwise
    # scan every stored case, the batch table having no statistics)
    source = (f"(SELECT {columns} FROM temp.{quote(BATCH)} AS _b "
              f"CROSS JOIN {quote(cases)} AS _c ON _c.id = _b.id) AS _r")
    names = ", ".join([*(quote(k) for k in SLICES), "month", *map(quote, sum_columns())])
    grouped = _grouped(_sqlite_contributions(source, sign), having_changes=True)
    return f"INSERT INTO {quote(TABLE)} ({names}) {grouped}{_conflict().replace('_t.', '')}"
