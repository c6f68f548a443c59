"""Before and after a change: ``python -m benchmarks.compare BASE [--rounds N] [--only …]``.

A commit *BASE* is checked out beside this checkout (a detached ``git worktree``), and the quick
pass (``python -m benchmarks --quick --no-doc``) runs in each, taking turns (before, after;
after, before; …) so that a busy minute of the machine falls on both sides alike. Each side runs
its own code and its own benchmarks, in processes of their own, with this interpreter.

Every row (measurement, case, scale) gets the median of its ratio to the anchor over the rounds
on each side, and *after ÷ before*: above 1 the change made the row better, below 0.95 worse by
more than 5%; it exits with 1 if a ratio is. Rows without an anchor compare our own times
(before ÷ after), reported apart: a time alone carries the machine's drift. Run it against
``HEAD`` with a clean working tree for an A/A run: it shows how far identical code drifts on this
machine, the noise any verdict has to be read against.

The table is printed, the figures of every pass are written as JSON, and ``--doc`` puts the
table into docs/benchmarks.md between markers that a full ``python -m benchmarks`` keeps.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable
from pathlib import Path

from benchmarks import MEASUREMENTS
from benchmarks.common import SCALES

ROOT = Path(__file__).resolve().parents[1]
#: After ÷ before below this is "worse by more than 5%".
WORSE = 0.95
#: docs/benchmarks.md keeps what stands between these across full runs (benchmarks.report).
BEGIN = "<!-- benchmarks.compare: begin -->"
END = "<!-- benchmarks.compare: end -->"

Key = tuple[str, str, str]


def parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m benchmarks.compare",
                                description=__doc__.splitlines()[0])
    p.add_argument("base", help="the commit before the change (any git revision)")
    p.add_argument("--rounds", type=int, default=5,
                   help="quick passes on each side, taking turns (default 5)")
    p.add_argument("--only", action="append", choices=sorted(MEASUREMENTS),
                   help="measurement(s) to run (default: those of a quick pass)")
    p.add_argument("--scale", action="append", choices=SCALES,
                   help="scale(s) to run (default: each measurement's quick scales)")
    p.add_argument("--full", action="store_true",
                   help="full passes instead of quick ones (more messages and repeats: slower, "
                        "steadier where a quick pass is mostly noise)")
    p.add_argument("--json", type=Path, default=ROOT / "benchmarks" / "out" / "compare.json",
                   help="where to write every pass's figures (default benchmarks/out/compare.json)")
    p.add_argument("--doc", type=Path, default=None,
                   help="also put the table into this report (e.g. docs/benchmarks.md)")
    return p.parse_args(argv)


def checkout(base: str, where: Path) -> str:
    """Check out *base* at *where* (a detached worktree of this repository); return its sha."""
    sha = subprocess.run(["git", "rev-parse", "--verify", f"{base}^{{commit}}"], cwd=ROOT,
                         capture_output=True, text=True)
    if sha.returncode != 0:
        raise SystemExit(f"compare: {base!r} is not a commit of {ROOT}; give a sha, tag or branch")
    subprocess.run(["git", "worktree", "add", "--detach", "--quiet", str(where),
                    sha.stdout.strip()], cwd=ROOT, check=True)
    return sha.stdout.strip()


def quick_pass(root: Path, args: argparse.Namespace, out: Path) -> dict:
    """Run one pass (quick unless ``--full``) of the code at *root*; return its results."""
    cmd = [sys.executable, "-m", "benchmarks", *([] if args.full else ["--quick"]), "--no-doc",
           "--json", str(out)]
    cmd += [a for name in args.only or () for a in ("--only", name)]
    cmd += [a for scale in args.scale or () for a in ("--scale", scale)]
    env = dict(os.environ, PYTHONPATH=str(root))
    done = subprocess.run(cmd, cwd=root, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        tail = " | ".join(done.stderr.strip().splitlines()[-3:])
        raise RuntimeError(f"the quick pass at {root} failed ({done.returncode}): {tail}")
    return json.loads(out.read_text())


def _key(figure: dict) -> Key:
    return figure["measurement"], figure["case"], figure["scale"]


def _ratio(figure: dict) -> float | None:
    """The figure's ratio to its anchor (higher is better), None without one."""
    return None if "error" in figure else figure.get("speedup")


def _ours(figure: dict) -> float | None:
    """Our time in seconds (throughputs as their inverse: lower is better either way)."""
    value = None if "error" in figure else figure.get("ours_s")
    if not value:
        return None
    return 1.0 / value if figure.get("unit") == "per_s" else value


def _median(values: Iterable[float | None]) -> float | None:
    kept = [v for v in values if v is not None]
    return statistics.median(kept) if kept else None


def summarise(before: list[dict], after: list[dict]) -> list[dict]:
    """One row per (measurement, case, scale) measured on either side, in the passes' order.

    *before* and *after* are the results of each side's passes. A row holds the number of
    passes that measured it on each side, the median ratio to the anchor on each side, the
    medians of our own times, *change* (after ÷ before of the ratios, or before ÷ after of our
    times for a row without an anchor) and *worse* (change below :data:`WORSE`; None when a
    side has no figure).
    """
    figures: dict[Key, dict[str, list[dict]]] = {}
    for side, runs in (("before", before), ("after", after)):
        for run in runs:
            for f in run["figures"]:
                figures.setdefault(_key(f), {"before": [], "after": []})[side].append(f)
    rows = []
    for key, sides in figures.items():
        row: dict = {"measurement": key[0], "case": key[1], "scale": key[2],
                     "passes": [len(sides["before"]), len(sides["after"])],
                     "errors": [f["error"] for fs in sides.values() for f in fs if "error" in f]}
        for side, fs in sides.items():
            row[f"ratio_{side}"] = _median(_ratio(f) for f in fs)
            row[f"ours_{side}_s"] = _median(_ours(f) for f in fs)
        if row["ratio_before"] and row["ratio_after"]:
            row["change"], row["by"] = row["ratio_after"] / row["ratio_before"], "ratio"
        elif row["ours_before_s"] and row["ours_after_s"]:
            row["change"], row["by"] = row["ours_before_s"] / row["ours_after_s"], "time"
        else:
            row["change"], row["by"] = None, None
        row["worse"] = None if row["change"] is None else row["change"] < WORSE
        rows.append(row)
    return rows


def _num(value: float | None) -> str:
    return "—" if value is None else f"{value:.3g}"


def _ms(seconds: float | None) -> str:
    return "—" if seconds is None else f"{seconds * 1e3:,.3g} ms"


def table(rows: list[dict], *, base: str, head: str, rounds: int, started: str,
          full: bool = False, command: str | None = None) -> str:
    """The comparison as Markdown: how it was run, the verdict and one line per row."""
    kind = "full" if full else "quick"
    command = command or f"python -m benchmarks.compare {base[:12]} --rounds {rounds}" + (
        " --full" if full else "")
    judged = [r for r in rows if r["by"] == "ratio"]
    worse = [r for r in judged if r["worse"]]
    own = [r for r in rows if r["by"] == "time"]
    slower = [r for r in own if r["worse"]]
    lines = [
        f"`{command}`, started {started}: "
        f"before is {base[:12]}, after is {head}; each side's {kind} pass ran {rounds} times, "
        "the two taking turns. Ratios are to each row's anchor (higher is better, median of "
        "the passes); *change* is after ÷ before (for a row without an anchor, our time "
        "before ÷ after).",
        "",
        f"**Ratios: {len(judged) - len(worse)} of {len(judged)} rows within 5% or better"
        + (f"; worse by more than 5%: {', '.join(_name(r) for r in worse)}.**" if worse
           else ".**"),
        "",
        f"Rows without an anchor (our own time only, for information): "
        f"{len(own) - len(slower)} of {len(own)} within 5% or better"
        + (f"; slower by more than 5%: {', '.join(_name(r) for r in slower)}." if slower
           else "."),
        "",
        "| measurement | case | scale | passes | ratio before | ratio after | change | "
        "ours, before → after |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        change = "—" if r["change"] is None else f"{r['change']:.2f}" + (
            " (time)" if r["by"] == "time" else "")
        if r["worse"]:
            change = f"**{change}**"
        lines.append(
            f"| {r['measurement']} | {r['case']} | {r['scale']} | {r['passes'][0]} / "
            f"{r['passes'][1]} | {_num(r['ratio_before'])} | {_num(r['ratio_after'])} | "
            f"{change} | {_ms(r['ours_before_s'])} → {_ms(r['ours_after_s'])} |")
    errors = sorted({e for r in rows for e in r["errors"]})
    lines += [f"\nFailed in some pass: {e}" for e in errors]
    return "\n".join(lines) + "\n"


def _name(row: dict) -> str:
    return f"{row['case']} at {row['scale']} ({row['change']:.2f})"


def kept_block(doc: Path) -> str:
    """What *doc* holds between the compare markers, markers included ('' if none)."""
    try:
        text = doc.read_text(encoding="utf-8")
    except OSError:
        return ""
    start, end = text.find(BEGIN), text.find(END)
    return text[start:end + len(END)] if 0 <= start < end else ""


def put_block(doc: Path, body: str) -> None:
    """Put *body* between the compare markers of *doc* (at its end if it has none)."""
    text = doc.read_text(encoding="utf-8") if doc.exists() else ""
    block = f"{BEGIN}\n## Before and after a change (`python -m benchmarks.compare`)\n\n{body}{END}"
    old = kept_block(doc)
    text = text.replace(old, block) if old else text.rstrip("\n") + "\n\n" + block + "\n"
    doc.write_text(text, encoding="utf-8")


def _head() -> str:
    sha = subprocess.run(["git", "rev-parse", "--short=12", "HEAD"], cwd=ROOT,
                         capture_output=True, text=True).stdout.strip()
    dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT,
                           capture_output=True, text=True).stdout.strip()
    return f"{sha} (this checkout{', with uncommitted changes' if dirty else ''})"


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    if args.rounds < 1:
        raise SystemExit("compare: --rounds must be at least 1")
    started = time.strftime("%Y-%m-%d %H:%M:%S %z")
    head = _head()
    runs: dict[str, list[dict]] = {"before": [], "after": []}
    with tempfile.TemporaryDirectory(prefix="bench-compare-") as tmp:
        old = Path(tmp) / "before"
        base = checkout(args.base, old)
        try:
            for r in range(args.rounds):
                order = ("before", "after") if r % 2 == 0 else ("after", "before")
                for side in order:
                    root = old if side == "before" else ROOT
                    sys.stderr.write(f"[compare] pass {r + 1}/{args.rounds}: {side}\n")
                    runs[side].append(quick_pass(root, args, Path(tmp) / f"{side}{r}.json"))
        finally:
            subprocess.run(["git", "worktree", "remove", "--force", str(old)], cwd=ROOT,
                           capture_output=True)
    rows = summarise(runs["before"], runs["after"])
    command = " ".join(["python -m benchmarks.compare", *(sys.argv[1:] if argv is None
                                                          else argv)])
    text = table(rows, base=base, head=head, rounds=args.rounds, started=started,
                 full=args.full, command=command)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps({"command": command, "base": base, "head": head,
                                     "started": started,
                                     "rounds": args.rounds, "rows": rows, "runs": runs},
                                    indent=1, default=str, ensure_ascii=False))
    sys.stdout.write(text)
    if args.doc is not None:
        put_block(args.doc, text)
        sys.stderr.write(f"[compare] wrote {args.doc}\n")
    return 1 if any(r["worse"] for r in rows if r["by"] == "ratio") else 0


if __name__ == "__main__":
    sys.exit(main())
