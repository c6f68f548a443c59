"""Who may change a PostGIS store's audit table: give it to a NOLOGIN owner, the app INSERT/SELECT.

The migration's triggers (:func:`twin.store.migrations._audit_append_only`) refuse UPDATE,
DELETE and TRUNCATE, but the table's owner may disable them and drop the table, and so may the
owner of its schema. :func:`protect_audit_table`, run once by a database administrator, takes
both away from the application's login role. See docs/trust.md, "Audit log".
"""

from __future__ import annotations

import logging
from typing import Any

import sqlalchemy as sa

from twin.errors import ConfigError, StoreUnavailableError
from twin.schema import AUDIT
from twin.store.migrations import AUDIT_GUARD, quote

LOGGER = logging.getLogger(__name__)

PRIVILEGES = ("SELECT", "INSERT", "UPDATE", "DELETE", "TRUNCATE")


def audit_privileges(conn: sa.Connection, role: str, schema: str | None = None) -> dict[str, Any]:
    """Return what *role* may do to the audit table of *schema* (None: public).

    Keys: each of :data:`PRIVILEGES` (True when granted), ``owns_table``, ``owns_schema``
    (either lets it drop the table and disable its triggers), ``superuser`` and ``may_drop``.
    """
    table = f"{quote(schema or 'public')}.{quote(AUDIT.name)}"
    row = conn.execute(
        sa.text(
            "SELECT " + ", ".join(
                f"has_table_privilege(:r, c.oid, '{p}') AS {p.lower()}" for p in PRIVILEGES
            ) + ", pg_has_role(:r, c.relowner, 'MEMBER') AS owns_table, "
            "pg_has_role(:r, n.nspowner, 'MEMBER') AS owns_schema, "
            "(SELECT rolsuper FROM pg_roles WHERE rolname = :r) AS superuser "
            "FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE c.oid = to_regclass(:t)"
        ),
        {"r": role, "t": table},
    ).mappings().first()
    if row is None:
        raise ConfigError(f"no audit table {table}; open the store once so that it is created")
    out = {p: bool(row[p.lower()]) for p in PRIVILEGES}
    out.update(owns_table=bool(row["owns_table"]), owns_schema=bool(row["owns_schema"]),
               superuser=bool(row["superuser"]))
    out["may_drop"] = out["owns_table"] or out["owns_schema"] or out["superuser"]
    return out


def protect_audit_table(
    admin_url: str,
    app_role: str,
    *,
    schema: str | None = None,
    owner_role: str = "twin_audit_owner",
) -> dict[str, Any]:
    """Give the audit table to *owner_role* (NOLOGIN) and let *app_role* only INSERT and SELECT.

    Run as an administrator (a superuser, or a role with CREATEROLE that owns the table's
    schema), after the application has opened the store once (so the table and its
    append-only triggers exist). In one transaction it creates *owner_role* if missing, makes
    it the owner of the audit table, of its trigger function and — when *app_role* owns the
    schema, which would let it drop any table there — of the schema too (*app_role* keeps
    USAGE and CREATE on it); then revokes everything on the table from PUBLIC and *app_role*
    and grants *app_role* SELECT and INSERT. Running it again changes nothing.

    Parameters
    ----------
    admin_url
        ``postgresql+psycopg://admin@host:port/db`` of the store's database.
    app_role
        The login role in the application's ``TWIN_DATABASE_URL``.
    schema
        The store's schema (None: public).
    owner_role
        The role to own the audit table; it cannot log in.

    Returns
    -------
    dict
        :func:`audit_privileges` of *app_role* afterwards, with ``owns_database`` (a
        database owner may still drop the whole database: give the database to an admin).

    Raises
    ------
    ConfigError
        If *app_role* does not exist, is a superuser (no privilege binds one) or a member of
        *owner_role*, or the store was not opened yet.
    """
    url = sa.make_url(admin_url)
    if url.drivername in ("postgresql", "postgres"):
        url = url.set(drivername="postgresql+psycopg")
    where = quote(schema or "public")
    table = f"{where}.{quote(AUDIT.name)}"
    engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
    try:
        try:
            connection = engine.connect()
        except sa.exc.OperationalError as exc:
            reason = str(exc.orig).strip().splitlines()[0] if exc.orig else type(exc).__name__
            if url.password:
                reason = reason.replace(str(url.password), "***")
            raise StoreUnavailableError(
                f"cannot connect as the administrator to {url.host}:{url.port or 5432}/"
                f"{url.database} ({reason}); check the administrator's URL"
            ) from None
        with connection as conn, conn.begin():
            superuser = conn.execute(sa.text("SELECT rolsuper FROM pg_roles WHERE rolname = :r"),
                                     {"r": app_role}).scalar()
            if superuser is None:
                raise ConfigError(f"no database role {app_role!r}; give the login role of "
                                  "TWIN_DATABASE_URL")
            if superuser:
                raise ConfigError(
                    f"{app_role!r} is a superuser, which no privilege binds; connect the "
                    "application as a plain login role and protect the table for that role"
                )
            if conn.execute(sa.text("SELECT to_regclass(:t)"), {"t": table}).scalar() is None \
                    or not _has_guard(conn, table):
                raise ConfigError(
                    f"{table} or its append-only triggers do not exist yet; open the store "
                    "once with the application's role (it migrates), then run this again"
                )
            if conn.execute(sa.text("SELECT 1 FROM pg_roles WHERE rolname = :r"),
                            {"r": owner_role}).scalar() is None:
                conn.execute(sa.text(f"CREATE ROLE {quote(owner_role)} NOLOGIN"))
                LOGGER.info("created role %s (NOLOGIN) to own the audit table", owner_role)
            if conn.execute(sa.text("SELECT pg_has_role(:a, :o, 'MEMBER')"),
                            {"a": app_role, "o": owner_role}).scalar():
                raise ConfigError(f"{app_role!r} is a member of {owner_role!r}; choose an "
                                  "owner role the application does not belong to")
            if not conn.execute(sa.text("SELECT rolsuper FROM pg_roles "
                                        "WHERE rolname = current_user")).scalar():
                # outside superuser, ALTER ... OWNER TO needs membership in the new owner
                conn.execute(sa.text(f"GRANT {quote(owner_role)} TO current_user"))
            owner = quote(owner_role)
            app = quote(app_role)
            conn.execute(sa.text(f"ALTER TABLE {table} OWNER TO {owner}"))
            conn.execute(sa.text(f"ALTER FUNCTION {where}.{AUDIT_GUARD}() OWNER TO {owner}"))
            conn.execute(sa.text(f"REVOKE ALL ON TABLE {table} FROM PUBLIC, {app}"))
            conn.execute(sa.text(f"GRANT SELECT, INSERT ON TABLE {table} TO {app}"))
            if conn.execute(sa.text("SELECT pg_has_role(:a, nspowner, 'MEMBER') "
                                    "FROM pg_namespace WHERE nspname = :s"),
                            {"a": app_role, "s": schema or "public"}).scalar():
                conn.execute(sa.text(f"ALTER SCHEMA {where} OWNER TO {owner}"))
                conn.execute(sa.text(f"GRANT USAGE, CREATE ON SCHEMA {where} TO {app}"))
            report = audit_privileges(conn, app_role, schema)
            report["owns_database"] = bool(conn.execute(sa.text(
                "SELECT pg_has_role(:a, datdba, 'MEMBER') FROM pg_database "
                "WHERE datname = current_database()"), {"a": app_role}).scalar())
    finally:
        engine.dispose()
    LOGGER.info("audit table %s: owned by %s; %s may %s", table, owner_role, app_role,
                ", ".join(p for p in PRIVILEGES if report[p]))
    return report


def _has_guard(conn: sa.Connection, table: str) -> bool:
    names = set(conn.execute(
        sa.text("SELECT tgname FROM pg_trigger WHERE tgrelid = CAST(:t AS regclass)"),
        {"t": table},
    ).scalars())
    return {f"{AUDIT_GUARD}_rows", f"{AUDIT_GUARD}_truncate"} <= names
