"""Load a staff file as a new version of a layer; show a layer's history; roll a layer back."""

from __future__ import annotations

import argparse
import getpass
import json
import logging
import os
import sys
from pathlib import Path

if not __package__:  # run as `python scripts/load_layer.py`: make the project importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from twin.errors import StoreUnavailableError, TwinError  # noqa: E402

EXAMPLES = """\
examples:
  gridtwin-load buildings 楼栋.zip                       a zipped shapefile (GBK text is detected)
  gridtwin-load parking lots.xlsx --lon 经度 --lat 纬度 --crs gcj02
  gridtwin-load cameras cams.csv --map heading_deg=朝向角 --dry-run --report check.json
  gridtwin-load grid_cells grids.gpkg --source-layer 单元网格 --strict
  gridtwin-load --history buildings
  gridtwin-load --rollback buildings 3

exit codes: 0 loaded (or dry run passed), 2 input rejected (store unchanged), 1 internal error
"""


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="gridtwin-load",
        description="Load a staff file (Shapefile, GeoPackage, GeoJSON, KML, CSV, .xlsx; a file, "
        "folder or .zip) as the next version of a GridTwin layer.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("layer", nargs="?", help="declared layer name: buildings, parking, cameras …")
    p.add_argument("path", nargs="?", help="the file, folder or .zip to load")
    p.add_argument("--db", help="store URL or .gpkg path (default: TWIN_DATABASE_URL or the demo)")
    p.add_argument("--crs", help="CRS of the coordinates: EPSG code, cgcs2000, wgs84, gcj02, bd09")
    p.add_argument("--encoding", help="text encoding of the .dbf / CSV (detected when not given)")
    p.add_argument("--source-layer", help="GeoPackage/KML layer, .xlsx sheet, or file in a folder")
    p.add_argument(
        "--map",
        action="append",
        default=[],
        metavar="FIELD=SOURCE",
        help="take layer field FIELD from source field SOURCE (repeatable)",
    )
    p.add_argument(
        "--values",
        action="append",
        default=[],
        metavar="FIELD:FROM=TO",
        help="map the file's value FROM of FIELD to TO (FIELD:FROM= leaves it empty; repeatable)",
    )
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="FIELD=VALUE",
        help="VALUE for the features without one in FIELD, e.g. --set fov_deg=360 (repeatable)",
    )
    p.add_argument(
        "--force-crs",
        action="store_true",
        help="load even when --crs contradicts the file or the features land far away",
    )
    p.add_argument("--lon", help="longitude column of a table")
    p.add_argument("--lat", help="latitude column of a table")
    p.add_argument("--wkt", help="WKT geometry column of a table")
    p.add_argument("--dry-run", action="store_true", help="check and report; write nothing")
    p.add_argument("--strict", action="store_true", help="reject rather than repair")
    p.add_argument("--report", metavar="FILE.json", help="write the machine-readable report here")
    p.add_argument("--note", default="", help="why this load (kept with the version)")
    p.add_argument("--history", metavar="LAYER", help="list the versions of LAYER and exit")
    p.add_argument(
        "--rollback",
        nargs=2,
        metavar=("LAYER", "VERSION"),
        help="make an earlier VERSION of LAYER current again",
    )
    p.add_argument("--actor", default=None, help="who is loading (default: $USER)")
    p.add_argument("--quiet", action="store_true", help="print nothing but errors")
    p.add_argument("--debug", action="store_true", help="show tracebacks of internal errors")
    return p


def _mapping(items: list[str]) -> dict[str, str]:
    out = {}
    for item in items:
        field, sep, source = item.partition("=")
        if not sep or not field.strip() or not source.strip():
            raise UsageError(f"--map {item!r}: write it as FIELD=SOURCE, e.g. --map floors=层数")
        out[field.strip()] = source.strip()
    return out


class UsageError(TwinError, ValueError):
    """The command line itself is wrong."""


def _err(message: str) -> None:
    sys.stderr.write("error: " + " ".join(str(message).split()) + "\n")


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse already printed its usage message
        return 0 if exc.code == 0 else 2
    if args.debug:
        logging.basicConfig(level=logging.DEBUG)
    progress = None
    if not args.quiet and sys.stderr.isatty():

        def progress(line: str) -> None:
            sys.stderr.write(f"… {line}\n")
            sys.stderr.flush()

    report = None
    try:
        return _run(args, progress)
    except TwinError as exc:
        report = getattr(exc, "report", None)
        _err(exc)
        code = 1 if isinstance(exc, StoreUnavailableError) else 2
    except Exception as exc:  # the one place that turns a bug into exit code 1
        if args.debug:
            raise
        _err(
            f"internal error: {type(exc).__name__}: {exc}. Rerun with --debug for the "
            "traceback and report it."
        )
        code = 1
    if report is not None and args.report:
        _write_report(args.report, report)
    return code


def _run(args: argparse.Namespace, progress) -> int:
    from twin.store import open_store

    actor = args.actor or os.environ.get("USER") or getpass.getuser() or "unknown"
    if args.history or args.rollback:
        if args.layer or args.path:
            raise UsageError("--history and --rollback take no LAYER PATH; give one or the other")
        with open_store(args.db) as store:
            return (
                _history(store, args.history)
                if args.history
                else _rollback(store, args.rollback, actor, args.quiet)
            )
    if not args.layer or not args.path:
        raise UsageError("give LAYER PATH (e.g. buildings 楼栋.zip), or --history / --rollback")
    import layers
    from twin.load import load_layer, parse_defaults, parse_values

    layers.get_layer(args.layer)  # an unknown layer fails before the store is opened
    options = {
        "crs": args.crs,
        "encoding": args.encoding,
        "source_layer": args.source_layer,
        "mapping": _mapping(args.map),
        "values": parse_values(args.values),
        "defaults": parse_defaults(args.set),
        "force_crs": args.force_crs,
        "lon": args.lon,
        "lat": args.lat,
        "wkt": args.wkt,
        "strict": args.strict,
    }
    with open_store(args.db) as store:
        result = load_layer(
            store,
            args.layer,
            args.path,
            actor=actor,
            dry_run=args.dry_run,
            note=args.note,
            progress=progress,
            **options,
        )
    if args.report:
        _write_report(args.report, result.report)
    if not args.quiet:
        _summary(args, result)
    return 0


def _summary(args, result) -> None:
    r = result.report
    c = r["counts"]
    what = "dry run passed" if r.get("dry_run") else f"{args.layer} version {r.get('version')}"
    crs = (r.get("crs") or {}).get("used", "none")
    line = (
        f"{what}: loaded {c['loaded']} feature(s) from {c['read']} read"
        f" ({c['repaired']} repaired, {c['rejected']} rejected, {c['warnings']} warning(s));"
        f" encoding {r['encoding']['chosen']}, CRS {crs}"
    )
    print(line)
    order = {"rejected": 0, "repaired": 1, "warning": 2}  # the worst first
    shown = sorted((i for i in r["issues"] if i["severity"] in order),
                   key=lambda i: order[i["severity"]])
    for item in shown[:10]:
        where = f"row {item['row']}" if "row" in item else "file"
        ident = f" ({item['id']})" if "id" in item else ""
        sys.stderr.write(f"  {item['severity']}: {where}{ident}: {item['message']}\n")
    more = len(shown) - 10 + r.get("warnings_not_listed", 0)
    if more > 0:
        listed = "lists them all" if "warnings_not_listed" not in r else (
            "lists every rejected and repaired feature; issue_counts counts them all")
        sys.stderr.write(f"  … and {more} more; --report FILE.json {listed}\n")


def _history(store, layer: str) -> int:
    import layers

    layers.get_layer(layer)
    versions = store.layer_versions(layer)
    if not versions:
        print(f"{layer}: no versions yet")
        return 0
    for v in versions:
        mark = "*" if v.current else " "
        when = v.created_at.strftime("%Y-%m-%d %H:%M:%S %Z")
        rejected = (v.report or {}).get("counts", {}).get("rejected")
        extra = f", {rejected} rejected" if rejected else ""
        note = f" — {v.note}" if v.note else ""
        print(f"{mark} v{v.version}  {when}  {v.actor}  {v.rows} rows{extra}  {v.source}{note}")
    return 0


def _rollback(store, target: list[str], actor: str, quiet: bool) -> int:
    import layers

    layer, version = target
    layers.get_layer(layer)
    try:
        number = int(version)
    except ValueError:
        raise UsageError(f"--rollback {layer} {version!r}: VERSION must be a number") from None
    v = store.set_current_version(layer, number, actor=actor)
    if not quiet:
        print(f"{layer}: version {v.version} ({v.rows} rows, {v.source}) is current again")
    return 0


def _write_report(path: str, report: dict) -> None:
    Path(path).write_text(
        json.dumps(report, ensure_ascii=False, indent=2, default=str) + "\n", encoding="utf-8"
    )


if __name__ == "__main__":
    sys.exit(main())
