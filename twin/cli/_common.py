"""What every subcommand shares: the store option, exit codes, one-line errors, JSON output."""

from __future__ import annotations

import argparse
import json
import logging
import re
import sys
from pathlib import Path
from typing import Any

from twin.errors import ConfigError, StoreUnavailableError, TwinError

LOGGER = logging.getLogger(__name__)

#: exit codes of every command: done, failed (a bug, a service down), refused (bad input or usage)
OK, FAILURE, BAD_INPUT = 0, 1, 2

STORE_HELP = (
    "store URL (postgresql+psycopg://user@host/db[?schema=NAME]) or GeoPackage path "
    "(default: TWIN_DATABASE_URL, then the demo GeoPackage)"
)
#: where each command's longer story is told (the hint of a refused command points there)
DOCS = {
    "load": "docs/loading.md",
    "query": "docs/queries.md",
    "feeds": "docs/feeds.md",
    "simulate": "docs/feeds.md",
    "export": "docs/cases.md",
    "users": "docs/trust.md",
    "retention": "docs/trust.md",
    "seed": "docs/cases.md",
    "make-demo": "README.md",
    "notify": "docs/notify.md",
}
# user:password@ in any URL a message happens to carry
_CREDENTIALS = re.compile(r"(://[^/:@\s]*):[^@\s/]*@")


def add_store_option(parser: argparse.ArgumentParser, *, aliases: tuple[str, ...] = ("--db",),
                     help: str = STORE_HELP) -> None:
    """Add ``--store`` (and the old spellings *aliases*, hidden) to *parser*.

    The default is suppressed so that a value given at one level of the command line (``gridtwin
    --store X export kpi`` or ``gridtwin export kpi --store X``) is not reset by another level.
    """
    parser.add_argument("--store", dest="store", metavar="URL_OR_PATH", default=argparse.SUPPRESS,
                        help=help)
    for alias in aliases:  # kept so that documented command lines and scripts keep working
        parser.add_argument(alias, dest="store", default=argparse.SUPPRESS, help=argparse.SUPPRESS)


def add_json_option(parser: argparse.ArgumentParser, what: str) -> None:
    """Add ``--json``: print *what* as one JSON document on stdout instead of text."""
    parser.add_argument("--json", action="store_true", default=argparse.SUPPRESS,
                        help=f"print {what} as JSON on stdout")


def add_user_option(parser: argparse.ArgumentParser) -> None:
    """Add ``--user NAME``: the stored user a command runs as (default ``TWIN_USER``)."""
    parser.add_argument("--user", dest="user", metavar="NAME", default=argparse.SUPPRESS,
                        help="run as this stored user: their role decides which personal data "
                        "the answer holds, and reading it is audited under their name "
                        "(default: TWIN_USER; without one, what the public may see)")


def command_user(store, args: argparse.Namespace):
    """Return the :class:`twin.trust.User` the command runs as (None: the public)."""
    import os

    from twin import trust

    return trust.run_as(store, getattr(args, "user", None) or os.environ.get("TWIN_USER"))


def wants_json(args: argparse.Namespace) -> bool:
    return bool(getattr(args, "json", False))


def print_json(value: Any) -> None:
    """Print *value* as one line of JSON (non-ASCII kept readable; dates as text)."""
    print(json.dumps(value, ensure_ascii=False, default=str))


def masked(url: str | Path) -> str:
    """*url* fit to print: a database URL's password replaced by ``***`` (SQLAlchemy's masking)."""
    text = str(url)
    if "://" not in text or text.startswith(("gpkg://", "file://")):
        return text
    import sqlalchemy as sa

    try:
        return sa.engine.make_url(text).render_as_string(hide_password=True)
    except Exception:  # not a URL SQLAlchemy reads: mask by hand rather than print it whole
        return _CREDENTIALS.sub(r"\1:***@", text)


def is_database_url(url: str) -> bool:
    """Whether *url* names a database (PostGIS) rather than a GeoPackage file.

    Raises
    ------
    ConfigError
        If *url* has a scheme no store knows.
    """
    if "://" not in url:
        return False
    from twin.store import STORES

    scheme = url.split("://", 1)[0]
    if scheme not in STORES:
        raise ConfigError(f"unknown store URL scheme {scheme!r} in {masked(url)}; use a .gpkg "
                          f"path or one of: {', '.join(s + '://' for s in STORES)}")
    return scheme.startswith("postgresql")


def store_url(args: argparse.Namespace) -> str:
    """Return the command's store: ``--store``, then ``TWIN_DATABASE_URL``, then the demo."""
    from twin.store import resolve_url

    return resolve_url(getattr(args, "store", None))


def open_store(args: argparse.Namespace, *, create: bool = False):
    """Open the command's store; one that does not exist is refused unless *create* is true.

    Raises
    ------
    ConfigError
        If the store does not exist and *create* is false (a typo must not make an empty store).
    """
    from twin.store import open_store as _open

    url = store_url(args)
    if not create:
        require_existing(url)
    return _open(url)


def require_existing(url: str) -> None:
    """Refuse a GeoPackage file, or a PostGIS schema, that holds no twin yet."""
    if is_database_url(url):
        if not _database_has_twin(url):
            raise ConfigError(
                f"no twin in {masked(url)}: the schema holds no GridTwin tables. Check --store "
                "(or TWIN_DATABASE_URL) and its ?schema=; fill it with `gridtwin make-demo --store "
                "URL` or `gridtwin load --create LAYER FILE --store URL`")
        return
    from twin.store.embedded import path_of

    path = path_of(url)
    if not path.is_file():
        raise ConfigError(
            f"no store at {path}: the file does not exist. Check --store (or TWIN_DATABASE_URL); "
            f"build one with `gridtwin make-demo --store {path}` or load a first layer into a new "
            "one with `gridtwin load --create`")


def _database_has_twin(url: str) -> bool:
    import sqlalchemy as sa

    parsed = sa.engine.make_url(url)
    schema = str(parsed.query.get("schema") or "public")
    parsed = parsed.difference_update_query(["schema"])
    engine = sa.create_engine(parsed, poolclass=sa.pool.NullPool)
    try:
        with engine.connect() as conn:
            # every twin's schema has the table twin.store.migrations records its migrations in
            return sa.inspect(conn).has_table("twin_schema_migrations", schema=schema)
    except sa.exc.OperationalError as exc:
        reason = (str(exc.orig or exc).strip().splitlines() or ["no answer"])[0]
        raise StoreUnavailableError(
            f"cannot reach {masked(url)}: {reason}; check that the database is running and the URL "
            "is right") from None
    finally:
        engine.dispose()


def one_line(text: object) -> str:
    """*text* on one line, any URL password in it masked."""
    return _CREDENTIALS.sub(r"\1:***@", " ".join(str(text).split()))


def hint(command: str, exc: TwinError) -> str:
    if isinstance(exc, StoreUnavailableError):
        return "check --store / TWIN_DATABASE_URL and that the database is running"
    doc = DOCS.get(command)
    more = f"; see {doc}" if doc else ""
    return f"`gridtwin {command} --help` shows the options{more}"


def refuse(command: str, exc: TwinError) -> int:
    """Print a library error as one line with a hint; return its exit code."""
    sys.stderr.write(f"error: {one_line(exc)} (hint: {hint(command, exc)})\n")
    return FAILURE if isinstance(exc, StoreUnavailableError) else BAD_INPUT


def execute(command: str, run, args: argparse.Namespace) -> int:
    """Run *run(args)*, turning errors into one-line messages and exit codes 0 / 2 / 1."""
    if getattr(args, "debug", False):
        logging.basicConfig(level=logging.DEBUG)
    try:
        return run(args)
    except TwinError as exc:
        return refuse(command, exc)
    except KeyboardInterrupt:
        sys.stderr.write("interrupted\n")
        return FAILURE
    except Exception as exc:  # the one place that turns a bug into exit code 1
        if getattr(args, "debug", False):
            raise
        sys.stderr.write(
            f"error: internal error: {type(exc).__name__}: {one_line(exc)}. Rerun with --debug "
            "for the traceback and report it.\n")
        return FAILURE
