"""``gridtwin load``: a staff file as a new version of a layer; a layer's history; a rollback."""

from __future__ import annotations

import argparse
import getpass
import json
import os
import sys
from pathlib import Path

from twin.cli._common import add_json_option, add_store_option, open_store, print_json
from twin.errors import TwinError, ValidationError

NAME = "load"
HELP = "load a staff file as a layer's next version; history; rollback"
DESCRIPTION = (
    "Load a staff file (Shapefile, GeoPackage, GeoJSON, KML, CSV, .xlsx; a file, folder or .zip) "
    "as the next version of a GridTwin layer."
)
EPILOG = """\
examples:
  gridtwin load buildings 楼栋.zip                        a zipped shapefile (GBK text is detected)
  gridtwin load parking lots.xlsx --lon 经度 --lat 纬度 --crs gcj02
  gridtwin load cameras cams.csv --map heading_deg=朝向角 --dry-run --report check.json
  gridtwin load grid_cells grids.gpkg --source-layer 单元网格 --strict
  gridtwin load community 边界.shp --store new.gpkg --create    start a new store
  gridtwin load --history buildings
  gridtwin load --rollback buildings 3
(also: gridtwin-load …, python scripts/load_layer.py …)

exit codes: 0 loaded (or dry run passed), 2 input rejected (store unchanged), 1 internal error
"""


def configure(p: argparse.ArgumentParser) -> None:
    p.add_argument("layer", nargs="?", help="declared layer name: buildings, parking, cameras …")
    p.add_argument("path", nargs="?", help="the file, folder or .zip to load")
    add_store_option(p)
    p.add_argument("--create", action="store_true",
                   help="create the store if it does not exist yet (otherwise that is an error)")
    p.add_argument("--crs", help="CRS of the coordinates: EPSG code, cgcs2000, wgs84, gcj02, bd09")
    p.add_argument("--encoding", help="text encoding of the .dbf / CSV (detected when not given)")
    p.add_argument("--source-layer", help="GeoPackage/KML layer, .xlsx sheet, or file in a folder")
    p.add_argument("--map", action="append", default=[], metavar="FIELD=SOURCE",
                   help="take layer field FIELD from source field SOURCE (repeatable)")
    p.add_argument("--values", action="append", default=[], metavar="FIELD:FROM=TO",
                   help="map the file's value FROM of FIELD to TO (FIELD:FROM= leaves it empty; "
                   "repeatable)")
    p.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                   help="VALUE for the features without one in FIELD, e.g. --set fov_deg=360 "
                   "(repeatable)")
    p.add_argument("--force-crs", action="store_true",
                   help="load even when --crs contradicts the file or the features land far away")
    p.add_argument("--lon", help="longitude column of a table")
    p.add_argument("--lat", help="latitude column of a table")
    p.add_argument("--wkt", help="WKT geometry column of a table")
    p.add_argument("--dry-run", action="store_true", help="check and report; write nothing")
    p.add_argument("--strict", action="store_true", help="reject rather than repair")
    p.add_argument("--report", metavar="FILE.json", help="write the machine-readable report here")
    p.add_argument("--note", default="", help="why this load (kept with the version)")
    p.add_argument("--history", metavar="LAYER", help="list the versions of LAYER and exit")
    p.add_argument("--rollback", nargs=2, metavar=("LAYER", "VERSION"),
                   help="make an earlier VERSION of LAYER current again")
    p.add_argument("--actor", default=None, help="who is loading (default: $USER)")
    p.add_argument("--quiet", action="store_true", help="print nothing but errors")
    add_json_option(p, "the load report (or the history)")


def _mapping(items: list[str]) -> dict[str, str]:
    out = {}
    for item in items:
        field, sep, source = item.partition("=")
        if not sep or not field.strip() or not source.strip():
            raise ValidationError(
                f"--map {item!r}: write it as FIELD=SOURCE, e.g. --map floors=层数")
        out[field.strip()] = source.strip()
    return out


def run(args: argparse.Namespace) -> int:
    try:
        return _run(args)
    except TwinError as exc:  # the report of a refused file is written all the same
        report = getattr(exc, "report", None)
        if report is not None and args.report:
            _write_report(args.report, report)
        raise


def _run(args: argparse.Namespace) -> int:
    from twin import layers

    actor = args.actor or os.environ.get("USER") or getpass.getuser() or "unknown"
    if args.history or args.rollback:
        if args.layer or args.path:
            raise ValidationError("--history and --rollback take no LAYER PATH; give one or the "
                                  "other")
        with open_store(args) as store:
            if args.history:
                return _history(store, args.history, as_json=bool(getattr(args, "json", False)))
            return _rollback(store, args.rollback, actor, args.quiet)
    if not args.layer or not args.path:
        raise ValidationError("give LAYER PATH (e.g. buildings 楼栋.zip), or --history / "
                              "--rollback")
    from twin.load import load_layer, parse_defaults, parse_values

    layers.get_layer(args.layer)  # an unknown layer fails before the store is opened
    progress = None
    if not args.quiet and sys.stderr.isatty():

        def progress(line: str) -> None:
            sys.stderr.write(f"… {line}\n")
            sys.stderr.flush()

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
    with open_store(args, create=args.create) as store:
        result = load_layer(store, args.layer, args.path, actor=actor, dry_run=args.dry_run,
                            note=args.note, progress=progress, **options)
    if args.report:
        _write_report(args.report, result.report)
    if getattr(args, "json", False):
        print(json.dumps(result.report, ensure_ascii=False, default=str))
    elif not args.quiet:
        _summary(args, result)
    return 0


def _summary(args, result) -> None:
    r = result.report
    c = r["counts"]
    what = "dry run passed" if r.get("dry_run") else f"{args.layer} version {r.get('version')}"
    crs = (r.get("crs") or {}).get("used", "none")
    print(
        f"{what}: loaded {c['loaded']} feature(s) from {c['read']} read"
        f" ({c['repaired']} repaired, {c['rejected']} rejected, {c['warnings']} warning(s));"
        f" encoding {r['encoding']['chosen']}, CRS {crs}"
    )
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


def _history(store, layer: str, *, as_json: bool = False) -> int:
    from twin import layers

    layers.get_layer(layer)
    versions = store.layer_versions(layer)
    if as_json:
        print_json([{"version": v.version, "current": v.current, "created_at": v.created_at,
                     "actor": v.actor, "rows": v.rows, "source": v.source, "note": v.note}
                    for v in versions])
        return 0
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
    from twin import layers

    layer, version = target
    layers.get_layer(layer)
    try:
        number = int(version)
    except ValueError:
        raise ValidationError(f"--rollback {layer} {version!r}: VERSION must be a number") from None
    v = store.set_current_version(layer, number, actor=actor)
    if not quiet:
        print(f"{layer}: version {v.version} ({v.rows} rows, {v.source}) is current again")
    return 0


def _write_report(path: str, report: dict) -> None:
    Path(path).write_text(
        json.dumps(report, ensure_ascii=False, indent=2, default=str) + "\n", encoding="utf-8"
    )


def main(argv: list[str] | None = None) -> int:
    """``gridtwin-load`` (and ``python scripts/load_layer.py``)."""
    from twin.cli import run_command

    return run_command(NAME, argv)
