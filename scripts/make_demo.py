"""Build the fictional Guilin demo community into an embedded GeoPackage store."""

from __future__ import annotations

import argparse
import logging
import os
import sys
import tempfile
from pathlib import Path

from twin import audit_anchor, settings
from twin.errors import TwinError
from twin.scenario import SCALES, make_scenario
from twin.store import open_store
from twin.trust import create_demo_users
from twin.twin import put_layer

LOGGER = logging.getLogger(__name__)


def build(out: Path, *, scale: str = "community", seed: int = 0, force: bool = False) -> dict:
    """Write every layer of the scenario into a new store at *out*; return layer → rows.

    The store is written to a temporary file in the same folder and moved into place only when
    complete, so an interrupted run never leaves a half-built demo behind.
    """
    out = Path(out)
    if out.exists() and not force:
        raise FileExistsError(f"{out} exists; pass --force to replace it.")
    out.parent.mkdir(parents=True, exist_ok=True)
    scenario = make_scenario(scale, seed)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{out.stem}-", suffix=".gpkg", dir=out.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    tmp.unlink()  # the store creates its own file
    rows = {}
    try:
        store = open_store(tmp)
        try:
            # grids first, so that every located layer is assigned from the stored grids
            order = ["community", "grid_cells"] + [
                n for n in scenario if n not in ("community", "grid_cells")
            ]
            for name in order:
                version = put_layer(
                    store,
                    name,
                    scenario[name],
                    actor="make_demo",
                    source=f"scripts/make_demo.py seed={seed}",
                    note=f"synthetic {scale} scenario (fictional data)",
                )
                rows[name] = version.rows
                print(f"{name:<16} {version.rows:>7} rows  version {version.version}")
            # one user per role with the passwords documented in docs/trust.md
            users = create_demo_users(store, actor="make_demo", origin="scripts/make_demo.py")
            print(f"{'users':<16} {len(users):>7} demo users (docs/trust.md)")
        finally:
            store.close()
        os.replace(tmp, out)
        audit_anchor.move(tmp, out)  # the audit log's anchored head follows the file
    finally:
        for leftover in out.parent.glob(f"{tmp.name}*"):
            leftover.unlink()
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="Build the fictional demo community into an embedded GeoPackage store."
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=None,
        help="GeoPackage to write (default: data/demo/guilin_demo.gpkg under TWIN_DATA_DIR)",
    )
    parser.add_argument("--scale", choices=list(SCALES), default="community")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--force", action="store_true", help="replace the file if it exists")
    args = parser.parse_args(argv)
    out = args.out or settings.default_store_path()
    try:
        rows = build(out, scale=args.scale, seed=args.seed, force=args.force)
    except (TwinError, FileExistsError) as exc:
        print(f"make_demo: {exc}", file=sys.stderr)
        return 2
    print(f"wrote {sum(rows.values())} rows in {len(rows)} layers to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
