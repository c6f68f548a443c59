"""``gridtwin seed``: check the seed tables (categories, departments, calendar); print a summary."""

from __future__ import annotations

import argparse
from pathlib import Path

from twin.cli._common import add_json_option, print_json

NAME = "seed"
HELP = "check the seed tables (categories, departments, calendar)"
DESCRIPTION = (
    "Check the seed tables (categories, departments, working calendar) and print what they hold."
)
EPILOG = """\
examples:
  gridtwin seed                        check data/seed and print a summary
  gridtwin seed --seed-dir my/seed     check another folder (e.g. before copying it in)
(also: gridtwin-seed …, python scripts/seed.py …)

exit codes: 0 tables valid, 2 a table is invalid (the message says which row), 1 failure
"""


def configure(p: argparse.ArgumentParser) -> None:
    p.add_argument("--seed-dir", help="folder of the seed tables (default: data/seed)")
    add_json_option(p, "the summary")


def check(seed_dir: str | None = None) -> dict:
    """Load and validate every seed table; return counts (raises TwinError when invalid)."""
    import pandas as pd

    from twin import cases, workcal
    from twin.errors import ValidationError

    folder = Path(seed_dir) if seed_dir else None
    if folder is not None and not folder.is_dir():
        raise ValidationError(f"--seed-dir {folder}: no such folder")
    base = folder or cases._seed(None)
    missing = [n for n in ("departments.csv", "categories.csv") if not (base / n).is_file()]
    if missing:
        raise ValidationError(f"{base} lacks {', '.join(missing)}; copy them from data/seed")
    departments = pd.read_csv(base / "departments.csv", dtype=str, keep_default_na=False)
    need = {"code", "name_zh", "name_en", "kind"}
    if not need <= set(departments.columns):
        raise ValidationError(f"departments.csv needs columns {sorted(need)}")
    dup = departments["code"].duplicated()
    if dup.any():
        raise ValidationError(f"departments.csv: duplicate codes {departments.loc[dup, 'code']}")
    categories = pd.read_csv(base / "categories.csv", dtype=str, keep_default_na=False)
    cats = cases.validate_categories(categories, departments)
    days, hours = workcal.read_calendar_tables(base)
    calendar = workcal.calendar_from_tables(days, hours)
    return {
        "categories": len(cats),
        "components": int((cats["family"] == "component").sum()),
        "events": int((cats["family"] == "event").sum()),
        "city_extensions": int(cats["city_extension"].sum()),
        "departments": len(departments),
        "calendar": f"{calendar.first_day} – {calendar.last_day}",
        "provisional_years": sorted(calendar.provisional_years),
        "working_hours": ", ".join(f"{a}–{b}" for a, b in zip(hours["start"], hours["end"],
                                                              strict=True)),
    }


def run(args: argparse.Namespace) -> int:
    summary = check(args.seed_dir)
    if getattr(args, "json", False):
        print_json(summary)
        return 0
    for key, value in summary.items():
        print(f"{key}: {value}")
    return 0


def main(argv: list[str] | None = None) -> int:
    """``gridtwin-seed`` (and ``python scripts/seed.py``)."""
    from twin.cli import run_command

    return run_command(NAME, argv)
