"""The harness: timing (warm-up, median of repeats), peak RSS per side, result records, PostGIS."""

from __future__ import annotations

import contextlib
import gc
import os
import secrets
import statistics
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from typing import Any

PG_URL = os.environ.get(
    "TWIN_BENCH_DATABASE_URL", "postgresql+psycopg://twin:twin@127.0.0.1:5432/twin"
)
BROKER = os.environ.get("TWIN_BENCH_BROKER", "127.0.0.1:18830")
SCALES = ("community", "street", "district", "city")


def reset_peak() -> bool:
    """Reset this process's peak RSS (VmHWM) so the next side's peak is its own (Linux ≥ 4.0)."""
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
        return True
    except OSError:
        return False


def peak_rss_mb() -> float:
    """Peak resident set size of this process since the last :func:`reset_peak`, in MB."""
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


@dataclass
class Timing:
    """Wall-clock seconds of each repeat after the warm-up, the last answer and the peak RSS."""

    times: list[float]
    answer: Any
    peak_mb: float
    extra: dict = field(default_factory=dict)

    @property
    def median(self) -> float:
        return statistics.median(self.times)

    def pct(self, q: float) -> float:
        s = sorted(self.times)
        return s[min(len(s) - 1, max(0, round(q * (len(s) - 1))))]


def measure(fn: Callable[[], Any], repeats: int = 5, warmup: int = 1) -> Timing:
    """Run *fn* ``warmup`` times untimed, then *repeats* timed times; keep the last answer."""
    answer = None
    gc.collect()
    reset_peak()
    for _ in range(warmup):
        answer = fn()
    times = []
    for _ in range(repeats):
        gc.collect()
        t0 = time.perf_counter()
        answer = fn()
        times.append(time.perf_counter() - t0)
    return Timing(times, answer, peak_rss_mb())


def interleaved(sides: list[Callable[[], tuple[float, Any]]], rounds: int, warmup: int = 1
                ) -> list[tuple[list[float], Any]]:
    """Time each side *rounds* times in turns (A B, B A, A B …); return each side's times and
    last answer.

    A side is called with no arguments and returns its seconds and its answer (a child process
    is timed by :func:`run_child`). Taking turns puts a shared machine's slow minutes on both
    sides; the order alternates so that neither always runs on the other's warm caches. The
    collector is frozen first, so our side is not timed collecting the harness's objects.
    """
    for side in sides:
        for _ in range(warmup):
            side()
    gc.collect()
    gc.freeze()
    times: list[list[float]] = [[] for _ in sides]
    answers: list[Any] = [None] * len(sides)
    try:
        for r in range(rounds):
            order = range(len(sides)) if r % 2 == 0 else reversed(range(len(sides)))
            for i in order:
                seconds, answers[i] = sides[i]()
                times[i].append(seconds)
    finally:
        gc.unfreeze()
    return list(zip(times, answers, strict=True))


def timed(fn: Callable[[], Any]) -> Callable[[], tuple[float, Any]]:
    """*fn* as a side for :func:`interleaved`: its wall-clock seconds and its answer."""

    def side() -> tuple[float, Any]:
        t0 = time.perf_counter()
        answer = fn()
        return time.perf_counter() - t0, answer

    return side


def run_child(cmd: list[str], **kwargs: Any) -> tuple[float, float, subprocess.CompletedProcess]:
    """Run a command; return its wall time, its own peak RSS in MB and the result.

    The peak comes from GNU ``/usr/bin/time`` when installed (a child forked from this large
    process would otherwise report this process's pages as its own), else from ``wait4``.
    """
    import tempfile

    gnu_time = os.path.exists("/usr/bin/time")
    with tempfile.NamedTemporaryFile("w+", suffix=".rss") as rss, \
            tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        full = ["/usr/bin/time", "-f", "%M", "-o", rss.name, *cmd] if gnu_time else cmd
        t0 = time.perf_counter()
        proc = subprocess.Popen(full, stdout=out, stderr=err, text=True, **kwargs)
        _, status, usage = os.wait4(proc.pid, 0)
        elapsed = time.perf_counter() - t0
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        done = subprocess.CompletedProcess(cmd, proc.returncode, out.read(), err.read())
        rss.seek(0)
        text = rss.read().strip().splitlines()
        peak_kb = int(text[-1]) if gnu_time and text and text[-1].isdigit() else usage.ru_maxrss
    if done.returncode != 0:
        raise RuntimeError(f"{cmd[0]} failed ({done.returncode}): {done.stderr.strip()[:500]}")
    return elapsed, peak_kb / 1024, done


@dataclass
class Figure:
    """One line of the results: our code against its anchor on the same data."""

    measurement: str
    case: str
    scale: str
    size: dict
    ours: str
    anchor: str
    ours_s: float | None
    anchor_s: float | None
    repeats: int
    same_answer: bool | None
    ours_peak_mb: float | None = None
    anchor_peak_mb: float | None = None
    ours_p95_s: float | None = None
    anchor_p95_s: float | None = None
    unit: str = "s"  # "s" (lower is better) or "per_s" (throughput: higher is better)
    notes: str = ""
    extra: dict = field(default_factory=dict)

    @property
    def speedup(self) -> float | None:
        """How many times faster ours is than the anchor (> 1: ours faster)."""
        if not self.ours_s or not self.anchor_s:
            return None
        if self.unit == "per_s":
            return self.ours_s / self.anchor_s
        return self.anchor_s / self.ours_s

    def as_dict(self) -> dict:
        d = asdict(self)
        d["speedup"] = self.speedup
        return d


def figure(measurement: str, case: str, scale: str, size: dict, ours: str, anchor: str,
           t_ours: Timing | None, t_anchor: Timing | None, same: bool | None, **kw: Any
           ) -> Figure:
    """Build a :class:`Figure` from two timings (either may be missing)."""
    return Figure(
        measurement, case, scale, size, ours, anchor,
        ours_s=t_ours.median if t_ours else None,
        anchor_s=t_anchor.median if t_anchor else None,
        repeats=len((t_ours or t_anchor).times) if (t_ours or t_anchor) else 0,
        same_answer=same,
        ours_peak_mb=round(t_ours.peak_mb, 1) if t_ours else None,
        anchor_peak_mb=round(t_anchor.peak_mb, 1) if t_anchor else None,
        ours_p95_s=t_ours.pct(0.95) if t_ours else None,
        anchor_p95_s=t_anchor.pct(0.95) if t_anchor else None,
        **kw,
    )


def repeats_for(scale: str, quick: bool) -> int:
    """Median of 5 (3 in a quick pass); at city scale 3 (the doc says so)."""
    if quick:
        return 3
    return 3 if scale == "city" else 5


# -- PostGIS -------------------------------------------------------------------------------------


@contextlib.contextmanager
def pg_store(prefix: str = "bench") -> Iterator[Any]:
    """A PostGIS store in a fresh schema of its own, dropped afterwards."""
    from twin.store import open_store

    schema = f"{prefix}_{secrets.token_hex(4)}"
    store = open_store(f"{PG_URL}?schema={schema}", drop_schema_on_close=True)
    try:
        yield store
    finally:
        engine = _PLAIN_ENGINES.pop(schema, None)
        if engine is not None:
            engine.dispose()
        store.close()


_PLAIN_ENGINES: dict[str | None, Any] = {}


def plain_engine(store: Any) -> Any:
    """The engine a user writing SQL by hand would open on the store's schema.

    ``sqlalchemy.create_engine(url)`` with SQLAlchemy's defaults (a transaction around each
    ``connect()``, no pre-ping), not the store's own tuned engines: the anchors' SQL runs as a
    planner or analyst would run it.
    """
    import sqlalchemy as sa

    schema = store.schema
    if schema not in _PLAIN_ENGINES:
        options = "-ctimezone=UTC" + (f" -csearch_path={schema},public" if schema else "")
        _PLAIN_ENGINES[schema] = sa.create_engine(PG_URL, connect_args={"options": options})
    return _PLAIN_ENGINES[schema]


def pg_libpq(schema: str | None = None) -> str:
    """The bench database as a libpq connection string (for ogr2ogr and psql)."""
    import sqlalchemy as sa

    u = sa.make_url(PG_URL)
    out = f"host={u.host} port={u.port or 5432} dbname={u.database} user={u.username}"
    if u.password:
        out += f" password={u.password}"
    if schema:
        out += f" active_schema={schema}"
    return out


def sql_rows(store: Any, sql: str, params: dict | None = None) -> list[tuple]:
    """Run a hand-written statement through :func:`plain_engine` and return its rows."""
    import sqlalchemy as sa

    with plain_engine(store).connect() as conn:
        return [tuple(r) for r in conn.execute(sa.text(sql), params or {})]
