"""Run a planner query against the twin and write the answer as GeoJSON, GeoPackage or CSV."""

from __future__ import annotations

import argparse
import inspect
import json
import logging
import sys
from pathlib import Path

if not __package__:  # run as `python scripts/query.py`: make the project importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from twin.errors import StoreUnavailableError, TwinError, ValidationError  # noqa: E402

EXAMPLES = """\
examples:
  python scripts/query.py within --param layer=buildings --param distance_m=300 \\
      --param point=110.2905,25.0802 --out near.geojson
  python scripts/query.py nearest --param layer=parking --param k=3 --param of=buildings:B001 \\
      --state lots.csv --param where=available_spaces>0 --out lots.csv
  python scripts/query.py coverage --param output=blind_spots --out blind.gpkg
  python scripts/query.py life_circles --param circles=5=300,10=500,15=1000 --out lc.geojson
  python scripts/query.py hot_spots --param source=cases --param start=2026-01-01 --out hot.gpkg
  python scripts/query.py counts --param source=events --param type=alarm \\
      --param level=resp_grid --db postgresql+psycopg://twin:twin@127.0.0.1/twin --out n.csv
  python scripts/query.py what_if --param query=coverage \\
      --param 'add=[{"camera_id":"NEW1","heading_deg":90,"fov_deg":90,"range_m":40,
      "lon":110.291,"lat":25.081}]' --out whatif.csv

exit codes: 0 answered, 2 bad query or parameters (a one-line reason and a hint), 1 internal error
"""


def build_parser(names: list[str]) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="gridtwin-query",
        description="Ask the twin a planner question; the answer is written to --out "
        "(.geojson, .gpkg or .csv) and its parameters, CRS and layer versions printed as JSON.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("name", help=f"the query: {', '.join(names)}")
    p.add_argument(
        "--param",
        "-p",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a parameter of the query (repeat); numbers, true/false and JSON are read as such",
    )
    p.add_argument(
        "--state",
        metavar="CSV",
        help="live state table (e.g. lot_id, available_spaces) for nearest and parking",
    )
    p.add_argument(
        "--db",
        metavar="URL",
        help="store URL (default: TWIN_DATABASE_URL, then the demo GeoPackage)",
    )
    p.add_argument("--out", required=True, metavar="FILE", help="where to write the answer")
    p.add_argument(
        "--summary", metavar="CSV", help="also write the summary table (life circles, what-if) here"
    )
    p.add_argument("-v", "--verbose", action="store_true", help="log what happens")
    return p


def _value(text: str):
    low = text.strip().lower()
    if low in {"true", "false"}:
        return low == "true"
    if low in {"none", "null"}:
        return None
    for parse in (int, float):
        try:
            return parse(text)
        except ValueError:
            pass
    if text[:1] in "[{":
        try:
            return json.loads(text)
        except json.JSONDecodeError:
            raise ValidationError(f"cannot read the JSON value {text!r}") from None
    return text


def parse_params(items: list[str]) -> dict:
    params = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise ValidationError(f"--param {item!r} must read KEY=VALUE")
        params[key.strip()] = _value(raw)
    for key in ("remove", "kinds", "uses"):  # lists given as a,b,c
        if isinstance(params.get(key), str) and key == "remove":
            params[key] = [v for v in params[key].split(",") if v]
    return params


def run(args: argparse.Namespace, queries: dict) -> int:
    import pandas as pd

    from twin.store import open_store

    if args.name not in queries:
        raise ValidationError(f"unknown query {args.name!r}; queries: {', '.join(queries)}")
    fn = queries[args.name]
    params = parse_params(args.param)
    accepted = inspect.signature(fn).parameters
    if args.state:
        if "state" not in accepted:
            raise ValidationError(f"query {args.name!r} takes no live state")
        params["state"] = pd.read_csv(args.state, dtype={"lot_id": str})
    takes_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in accepted.values())
    unknown = [k for k in params if k not in accepted or k == "store"]
    if unknown and not takes_any:
        allowed = [k for k in accepted if k != "store"]
        raise ValidationError(
            f"query {args.name!r} has no parameter {unknown}; it takes {', '.join(allowed)}"
        )
    missing = [
        k
        for k, p in accepted.items()
        if k != "store"
        and p.default is p.empty
        and p.kind is not inspect.Parameter.VAR_KEYWORD
        and k not in params
    ]
    if missing:
        raise ValidationError(f"query {args.name!r} needs --param {missing[0]}=…")
    with open_store(args.db) as store:
        result = fn(store, **params)
    out = result.to_file(args.out)
    if args.summary and result.summary is not None:
        result.summary.to_csv(args.summary, index=False)
    print(json.dumps({**result.metadata(), "out": str(out)}, ensure_ascii=False, default=str))
    return 0


def main(argv: list[str] | None = None) -> int:
    from twin.query import QUERIES

    args = build_parser(list(QUERIES)).parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )
    try:
        return run(args, QUERIES)
    except StoreUnavailableError as exc:
        print(f"error: {exc}", file=sys.stderr)
        print(
            "hint: check --db / TWIN_DATABASE_URL and that the database is running", file=sys.stderr
        )
        return 2
    except TwinError as exc:
        print(f"error: {exc}", file=sys.stderr)
        print(
            "hint: python scripts/query.py --help shows each query's parameters; "
            "see docs/queries.md",
            file=sys.stderr,
        )
        return 2


if __name__ == "__main__":
    sys.exit(main())
