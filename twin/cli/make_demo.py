"""``gridtwin make-demo``: build the fictional Guilin demo community into any store."""

from __future__ import annotations

import argparse
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from twin.cli._common import (
    add_json_option,
    add_store_option,
    is_database_url,
    masked,
    print_json,
    store_url,
)
from twin.errors import ConfigError

NAME = "make-demo"
HELP = "build the demo community into a GeoPackage or PostGIS"
DESCRIPTION = (
    "Build the fictional demo community (every layer, and one user per role) into a store: a new "
    "GeoPackage file, or a PostGIS database or schema."
)
EPILOG = """\
examples:
  gridtwin make-demo                       data/demo/guilin_demo.gpkg (or TWIN_DATABASE_URL)
  gridtwin make-demo --store var/city.gpkg --scale city --seed 3
  gridtwin make-demo --store "$TWIN_DATABASE_URL"     into PostGIS (…/twin?schema=demo for a schema)
(also: gridtwin-make-demo …, python scripts/make_demo.py …)

A GeoPackage is written to a temporary file and moved into place when complete; --force replaces
an existing file. A database that already holds layers is refused unless --force, which adds the
demo as the next version of every layer (the history is kept).
exit codes: 0 built, 2 refused (nothing written), 1 failure
"""

#: recorded with every version the demo writes (and checked by tests/test_make_demo.py)
ACTOR = "make_demo"
ORIGIN = "scripts/make_demo.py"
#: the keys of :data:`twin.scenario.SCALES`, named here so that ``--help`` imports no geopandas
SCALES = ("community", "street", "district", "city")


def configure(p: argparse.ArgumentParser) -> None:
    add_store_option(p, aliases=("--db", "--out"),
                     help="where to build it: a GeoPackage path or a postgresql+psycopg:// URL "
                     "(default: TWIN_DATABASE_URL, then data/demo/guilin_demo.gpkg)")
    p.add_argument("--scale", choices=SCALES, default="community",
                   help="one community (default), a street, a district or a city of them")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--force", action="store_true",
                   help="replace an existing file; add new versions to a database that has layers")
    p.add_argument("--now", metavar="TIME",
                   help="the demo's present: a year of cases, alarms and polls leads up to it "
                   "(ISO 8601; default: now)")
    p.add_argument("--no-history", dest="history", action="store_false",
                   help="layers and demo users only: no cases, alarms, polls or readings")
    add_json_option(p, "the rows written per layer")


def fill(store, scenario: dict, *, scale: str, seed: int, now: Any = None, history: bool = True,
         echo: Callable[[str], None] = print) -> dict[str, int]:
    """Write *scenario*'s layers, the demo users and a lived-in year; return table → rows.

    With *history*, :func:`twin.demo.populate` writes a year of cases, alarms, notices, polls
    and readings leading up to *now* (default: the current time).
    """
    from twin.trust import create_demo_users
    from twin.twin import put_layer

    rows = {}
    # grids first, so that every located layer is assigned from the stored grids
    order = ["community", "grid_cells"] + [n for n in scenario
                                           if n not in ("community", "grid_cells")]
    for name in order:
        version = put_layer(store, name, scenario[name], actor=ACTOR,
                            source=f"{ORIGIN} seed={seed}",
                            note=f"synthetic {scale} scenario (fictional data)")
        rows[name] = version.rows
        echo(f"{name:<16} {version.rows:>7} rows  version {version.version}")
    # one user per role with the passwords documented in docs/trust.md
    users = create_demo_users(store, actor=ACTOR, origin=ORIGIN)
    echo(f"{'users':<16} {len(users):>7} demo users (docs/trust.md)")
    if history:
        from twin.demo import populate

        for table, count in populate(store, seed=seed, now=now).items():
            rows[table] = count
            echo(f"{table:<16} {count:>7} rows  (a lived-in year, fictional)")
    return rows


def build(url: str | Path, *, scale: str = "community", seed: int = 0, force: bool = False,
          now: Any = None, history: bool = True,
          echo: Callable[[str], None] = print) -> dict[str, int]:
    """Build the demo into the store at *url* (a GeoPackage path or a PostGIS URL).

    Raises
    ------
    ConfigError
        If the file exists, or the database already holds layers, and *force* is false.
    """
    text = str(url)
    if is_database_url(text):
        return _build_database(text, scale=scale, seed=seed, force=force, now=now,
                               history=history, echo=echo)
    from twin.store.embedded import path_of

    return _build_file(path_of(text), scale=scale, seed=seed, force=force, now=now,
                       history=history, echo=echo)


def _build_file(out: Path, *, scale: str, seed: int, force: bool, now: Any, history: bool,
                echo) -> dict[str, int]:
    """Write to a temporary file beside *out*, moved into place only when complete."""
    from twin import audit_anchor
    from twin.scenario import make_scenario
    from twin.store import open_store

    if out.exists() and not force:
        raise ConfigError(f"{out} exists; pass --force to replace it")
    if out.is_dir():
        raise ConfigError(f"{out} is a folder; give a file such as {out / 'twin.gpkg'}")
    out.parent.mkdir(parents=True, exist_ok=True)
    scenario = make_scenario(scale, seed)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{out.stem}-", suffix=".gpkg", dir=out.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    tmp.unlink()  # the store creates its own file
    try:
        with open_store(tmp) as store:
            rows = fill(store, scenario, scale=scale, seed=seed, now=now, history=history,
                        echo=echo)
        os.replace(tmp, out)
        audit_anchor.move(tmp, out)  # the audit log's anchored head follows the file
    finally:
        for leftover in out.parent.glob(f"{tmp.name}*"):
            leftover.unlink()
    return rows


def _build_database(url: str, *, scale: str, seed: int, force: bool, now: Any, history: bool,
                    echo) -> dict[str, int]:
    from twin.scenario import make_scenario
    from twin.store import open_store

    scenario = make_scenario(scale, seed)  # before the database is touched
    with open_store(url) as store:
        present = store.layers()
        if present and not force:
            raise ConfigError(
                f"{masked(url)} already holds layers ({', '.join(present)}); pass --force to add "
                "the demo as their next versions, or give an empty database or ?schema=NAME")
        return fill(store, scenario, scale=scale, seed=seed, now=now, history=history,
                    echo=echo)


def run(args: argparse.Namespace) -> int:
    as_json = bool(getattr(args, "json", False))
    url = store_url(args)
    rows = build(url, scale=args.scale, seed=args.seed, force=args.force, now=args.now,
                 history=args.history, echo=(lambda line: None) if as_json else print)
    if as_json:
        from twin import layers

        declared = set(layers.names())
        print_json({"store": masked(url),
                    "layers": {k: v for k, v in rows.items() if k in declared},
                    "history": {k: v for k, v in rows.items() if k not in declared}})
    else:
        print(f"wrote {sum(rows.values())} rows in {len(rows)} tables to {masked(url)}")
    return 0


def main(argv: list[str] | None = None) -> int:
    """``gridtwin-make-demo`` (and ``python scripts/make_demo.py``)."""
    from twin.cli import run_command

    return run_command(NAME, argv)
