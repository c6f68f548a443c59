"""Check the seed tables (categories, departments, working calendar) and print what they hold."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

if not __package__:  # run as `python scripts/seed.py`: make the project importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from twin.errors import TwinError  # noqa: E402

EXAMPLES = """\
examples:
  python scripts/seed.py                      check data/seed and print a summary
  python scripts/seed.py --seed-dir my/seed   check another folder (e.g. before copying it in)

exit codes: 0 tables valid, 2 a table is invalid (the message says which row), 1 internal error
"""


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="gridtwin-seed", description=__doc__, epilog=EXAMPLES,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seed-dir", help="folder of the seed tables (default: data/seed)")
    return p


def check(seed_dir: str | None = None) -> dict:
    """Load and validate every seed table; return counts (raises TwinError when invalid)."""
    import pandas as pd

    from twin import cases, workcal
    from twin.errors import ValidationError

    folder = Path(seed_dir) if seed_dir else None
    base = folder or cases._seed(None)
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


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        summary = check(args.seed_dir)
    except TwinError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    for key, value in summary.items():
        print(f"{key}: {value}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
