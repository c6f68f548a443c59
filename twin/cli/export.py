"""``gridtwin export``: the indicator report (CSV / Excel) and Open311 GeoReport v2 XML or JSON."""

from __future__ import annotations

import argparse
from pathlib import Path

from twin.cli._common import (
    add_json_option,
    add_store_option,
    add_user_option,
    command_user,
    open_store,
    print_json,
)
from twin.errors import ValidationError

NAME = "export"
HELP = "export the indicator report (CSV, .xlsx), Open311 XML/JSON, or a layer as --user sees it"
DESCRIPTION = (
    "Export the indicator report (CSV / Excel), Open311 GeoReport v2 XML or JSON, or a layer "
    "as the user running the command may see it (personal columns masked or left out by role)."
)
EPILOG = """\
examples:
  gridtwin export kpi --period 2026-03 --by grid --out report.xlsx
  gridtwin export kpi --period 2026-Q1 --by department --by post --out q1.csv
  gridtwin export kpi --freq M --by street --out monthly.csv --lang en
  gridtwin export open311 services --out services.json
  gridtwin export open311 requests --out requests.json --store twin.gpkg
  gridtwin export open311 requests --out requests.xml   (the spec's default format)
  gridtwin export layer grid_cells --out grids.gpkg --user admin
  gridtwin export gpkg --user planner1 shared.gpkg   (every map layer, for a GIS user)
(also: gridtwin-export …, python scripts/export.py …)

exit codes: 0 written, 2 bad input (nothing written), 1 failure
"""


def configure(p: argparse.ArgumentParser) -> None:
    add_store_option(p)
    add_json_option(p, "what was written (file and rows)")
    sub = p.add_subparsers(dest="what", required=True, metavar="WHAT")
    k = sub.add_parser("kpi", help="the indicator report (绩效评价) as .csv or .xlsx")
    k.add_argument("--period", help="2026-03, 2026-Q1, 2026 (default: all cases)")
    k.add_argument("--by", action="append", default=[],
                   help="slice: grid, resp_grid, community, street, department, post, person")
    k.add_argument("--freq", choices=["M", "Q", "Y"], help="also slice by month/quarter/year")
    k.add_argument("--as-of", help="close the books at this time (default: period end or now)")
    k.add_argument("--lang", default="zh-CN", help="column names: zh-CN (default) or en")
    k.add_argument("--out", required=True, help="report.csv or report.xlsx")
    o = sub.add_parser("open311", help="Open311 GeoReport v2 XML or JSON")
    o.add_argument("kind", choices=["services", "requests"])
    o.add_argument("--lang", default="zh-CN")
    o.add_argument("--out", required=True, help="FILE.xml or FILE.json")
    la = sub.add_parser("layer", help="a layer as .geojson, .gpkg or .csv, as --user may see it")
    la.add_argument("layer", metavar="LAYER", help="the layer (e.g. grid_cells, buildings)")
    la.add_argument("--out", required=True, help="FILE.geojson, FILE.gpkg or FILE.csv")
    add_user_option(la)
    g = sub.add_parser("gpkg", help="every map layer as --user may see it, in one GeoPackage "
                       "to share (never users, cases, audit or residents)")
    g.add_argument("out_file", nargs="?", metavar="OUT", help="FILE.gpkg")
    g.add_argument("--out", help="FILE.gpkg (or give it as OUT)")
    add_user_option(g)
    for child in (k, o, la, g):  # the store and --json may also follow the subcommand
        add_store_option(child)
        add_json_option(child, "what was written (file and rows)")


def kpi_report(store, *, period=None, by=(), freq=None, as_of=None, lang="zh-CN"):
    """Return the indicator table of the store's cases with official column names."""
    from twin import cases, kpi

    table = kpi.indicators(cases.case_table(store.read_cases()), period=period,
                           by=list(by) or None, freq=freq, as_of=as_of)
    for col in table.columns:
        if table[col].dtype == "float64":
            table[col] = table[col].round(2)
    return table.rename(columns={c: kpi.label(c, lang) for c in table.columns})


def write_table(table, out: Path) -> None:
    """Write *table* as .csv (with a BOM, so that Excel reads the Chinese right) or .xlsx."""
    if out.suffix.lower() == ".csv":
        table.to_csv(out, index=False, encoding="utf-8-sig")
    elif out.suffix.lower() == ".xlsx":
        try:
            import openpyxl  # noqa: F401
        except ImportError:
            raise ValidationError("writing .xlsx needs openpyxl (pip install openpyxl); "
                                  "or write .csv") from None
        table.to_excel(out, index=False, sheet_name="绩效评价")
    else:
        raise ValidationError(f"--out must end in .csv or .xlsx; got {out.name!r}")


def run(args: argparse.Namespace) -> int:
    from twin import open311

    out = Path(args.out) if args.what != "gpkg" else None
    if args.what == "open311" and args.kind == "services":  # the seed table; no store needed
        payload = open311.services(lang=args.lang)
    else:
        with open_store(args) as store:
            if args.what == "gpkg":
                return _share_geopackage(store, args)
            if args.what == "layer":
                from twin import trust

                written, rows = trust.export_layer(store, command_user(store, args), args.layer,
                                                   out, origin="cli:export")
                return _done(args, written, rows)
            if args.what == "kpi":
                table = kpi_report(store, period=args.period, by=args.by, freq=args.freq,
                                   as_of=args.as_of, lang=args.lang)
                write_table(table, out)
                return _done(args, out, len(table))
            payload = open311.requests(store.read_cases(), lang=args.lang)
    open311.write_file(out, args.kind, payload)  # .xml (the spec's default) or .json, by the name
    return _done(args, out, len(payload))


def _share_geopackage(store, args: argparse.Namespace) -> int:
    """``export gpkg``: the map layers as the user may see them, one GeoPackage to share."""
    from twin import trust

    out = args.out or args.out_file
    if not out:
        raise ValidationError("name the GeoPackage to write: gridtwin export gpkg OUT.gpkg")
    written, rows = trust.export_geopackage(store, command_user(store, args), out,
                                            origin="cli:export")
    if getattr(args, "json", False):
        print_json({"out": str(written), "rows": sum(rows.values()), "layers": rows})
    else:
        print(f"wrote {sum(rows.values())} features of {len(rows)} layers "
              f"({', '.join(rows)}) to {written}")
    return 0


def _done(args: argparse.Namespace, out: Path, rows: int) -> int:
    if getattr(args, "json", False):
        print_json({"out": str(out), "rows": rows})
    else:
        print(f"wrote {rows} rows to {out}")
    return 0


def main(argv: list[str] | None = None) -> int:
    """``gridtwin-export`` (and ``python scripts/export.py``)."""
    from twin.cli import run_command

    return run_command(NAME, argv)
