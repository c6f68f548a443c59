"""Export the indicator report (CSV / Excel) and Open311 GeoReport v2 XML or JSON from the store."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

if not __package__:  # run as `python scripts/export.py`: make the project importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from twin.errors import TwinError  # noqa: E402

EXAMPLES = """\
examples:
  python scripts/export.py kpi --period 2026-03 --by grid --out report.xlsx
  python scripts/export.py kpi --period 2026-Q1 --by department --by post --out q1.csv
  python scripts/export.py kpi --freq M --by street --out monthly.csv --lang en
  python scripts/export.py open311 services --out services.json
  python scripts/export.py open311 requests --out requests.json
  python scripts/export.py open311 requests --out requests.xml   (the spec's default format)

exit codes: 0 written, 2 bad input (nothing written), 1 internal error
"""


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="gridtwin-export", description=__doc__, epilog=EXAMPLES,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--db", help="store URL or .gpkg path (default: TWIN_DATABASE_URL or the demo)")
    sub = p.add_subparsers(dest="what", required=True)
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
    return p


def kpi_report(store, *, period=None, by=(), freq=None, as_of=None, lang="zh-CN"):
    """The indicator table of the store's cases with official column names."""
    from twin import cases, kpi

    table = kpi.indicators(cases.case_table(store.read_cases()), period=period,
                           by=list(by) or None, freq=freq, as_of=as_of)
    for col in table.columns:
        if table[col].dtype == "float64":
            table[col] = table[col].round(2)
    return table.rename(columns={c: kpi.label(c, lang) for c in table.columns})


def write_table(table, out: Path) -> None:
    from twin.errors import ValidationError

    if out.suffix.lower() == ".csv":
        table.to_csv(out, index=False, encoding="utf-8-sig")  # BOM: Excel opens Chinese right
    elif out.suffix.lower() == ".xlsx":
        try:
            import openpyxl  # noqa: F401
        except ImportError:
            raise ValidationError("writing .xlsx needs openpyxl (pip install openpyxl); "
                                  "or write .csv") from None
        table.to_excel(out, index=False, sheet_name="绩效评价")
    else:
        raise ValidationError(f"--out must end in .csv or .xlsx; got {out.name!r}")


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        from twin import open311
        from twin.store import open_store

        out = Path(args.out)
        if args.what == "open311" and args.kind == "services":  # the seed table; no store needed
            payload = open311.services(lang=args.lang)
        else:
            with open_store(args.db) as store:
                if args.what == "kpi":
                    table = kpi_report(store, period=args.period, by=args.by, freq=args.freq,
                                       as_of=args.as_of, lang=args.lang)
                    write_table(table, out)
                    print(f"wrote {len(table)} rows to {out}")
                    return 0
                payload = open311.requests(store.read_cases(), lang=args.lang)
        open311.write_file(out, args.kind, payload)  # .xml or .json, by the name
        rows = len(payload)
    except TwinError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"wrote {rows} rows to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
