"""``gridtwin query``: a planner question; the answer to a file, its provenance as JSON."""

from __future__ import annotations

import argparse
import inspect
import json
import logging

from twin.cli._common import add_json_option, add_store_option, add_user_option
from twin.errors import ValidationError

NAME = "query"
HELP = "ask a planner question: within, nearest, coverage, what_if …"
DESCRIPTION = (
    "Ask the twin a planner question; the answer is written to --out (.geojson, .gpkg or .csv) "
    "and its parameters, CRS and layer versions printed as one line of JSON."
)
EPILOG = """\
examples:
  gridtwin query within --param layer=buildings --param distance_m=300 \\
      --param point=110.2905,25.0802 --out near.geojson
  gridtwin query nearest --param layer=parking --param k=3 --param of=buildings:B001 \\
      --state lots.csv --param where=available_spaces>0 --out lots.csv
  gridtwin query coverage --param output=blind_spots --out blind.gpkg
  gridtwin query life_circles --param circles=5=300,10=500,15=1000 --out lc.geojson
  gridtwin query hot_spots --param source=cases --param start=2026-01-01 --out hot.gpkg
  gridtwin query counts --param source=events --param type=alarm \\
      --param level=resp_grid --store postgresql+psycopg://twin@127.0.0.1/twin --out n.csv
  gridtwin query what_if --param query=coverage \\
      --param 'add=[{"camera_id":"NEW1","heading_deg":90,"fov_deg":90,"range_m":40,
      "lon":110.291,"lat":25.081}]' --out whatif.csv
(also: gridtwin-query …, python scripts/query.py …)

exit codes: 0 answered, 2 bad query or parameters (a one-line reason and a hint), 1 failure
"""


def _names() -> str:
    from twin.query import QUERIES

    return ", ".join(QUERIES)


def configure(p: argparse.ArgumentParser) -> None:
    p.add_argument("name", metavar="NAME", help="the query (see docs/queries.md)")
    p.add_argument("--param", "-p", action="append", default=[], metavar="KEY=VALUE",
                   help="a parameter of the query (repeat); numbers, true/false and JSON are "
                   "read as such")
    p.add_argument("--state", metavar="CSV",
                   help="live state table (e.g. lot_id, available_spaces) for nearest and parking")
    add_store_option(p)
    add_user_option(p)
    p.add_argument("--out", required=True, metavar="FILE", help="where to write the answer")
    p.add_argument("--summary", metavar="CSV",
                   help="also write the summary table (life circles, what-if) here")
    p.add_argument("-v", "--verbose", action="store_true", help="log what happens")
    add_json_option(p, "the answer's provenance (always JSON; the flag is accepted for symmetry)")


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
    """``KEY=VALUE`` items → keyword arguments (numbers, booleans and JSON read as such)."""
    params = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise ValidationError(f"--param {item!r} must read KEY=VALUE")
        params[key.strip()] = _value(raw)
    if isinstance(params.get("remove"), str):  # a list given as a,b,c
        params["remove"] = [v for v in params["remove"].split(",") if v]
    return params


def run(args: argparse.Namespace) -> int:
    import pandas as pd

    from twin import trust
    from twin.cli._common import command_user, open_store
    from twin.query import QUERIES

    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    if args.name not in QUERIES:
        raise ValidationError(f"unknown query {args.name!r}; queries: {_names()}")
    fn = QUERIES[args.name]
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
    with open_store(args) as store:
        result = trust.query_as(store, command_user(store, args), args.name,
                                origin="cli:query", **params)
    out = result.to_file(args.out)
    if args.summary and result.summary is not None:
        result.summary.to_csv(args.summary, index=False)
    print(json.dumps({**result.metadata(), "out": str(out)}, ensure_ascii=False, default=str))
    return 0


def main(argv: list[str] | None = None) -> int:
    """``gridtwin-query`` (and ``python scripts/query.py``)."""
    from twin.cli import run_command

    return run_command(NAME, argv)
