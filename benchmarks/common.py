"""Shared pieces of the benchmarks: run modes, timing, statistics, the result rows and the one Markdown table.

Every workload script builds a list of `Row`s and hands it to `report(rows, args)`, which prints the table (with the
date, machine, versions and command) and, with `--json PATH`, writes the rows for `run.py` to gather.

A row compares *ours* with a *reference*; `ratio` is always ours / reference, one value per repeat, measured back to
back in the same repeat, so slow phases of a busy machine hit both sides. A target says which way is good.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import math
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from importlib import metadata

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
MODES = ("tiny", "quick", "full")


# -- run modes ---------------------------------------------------------------------------------------------------
def parse_args(description: str, argv: Sequence[str] | None = None, extra: Callable | None = None):
    """`--full` (default), `--quick` or `--tiny` (also `JL_BENCH_MODE=tiny|quick|full`), `--repeats N`, `--json PATH`.

    `--tiny` only checks that a script runs (tiny sizes, seconds); its numbers mean nothing."""
    p = argparse.ArgumentParser(description=description)
    g = p.add_mutually_exclusive_group()
    for mode in MODES:
        g.add_argument(f"--{mode}", dest="mode", action="store_const", const=mode, help=f"{mode} mode")
    p.add_argument("--repeats", type=int, default=None, help="runs per measurement (default from the mode)")
    p.add_argument("--json", default=None, help="also write the rows as JSON to this path (used by run.py)")
    if extra:
        extra(p)
    args = p.parse_args(argv)
    args.mode = args.mode or os.environ.get("JL_BENCH_MODE", "full")
    if args.mode not in MODES:
        p.error(f"JL_BENCH_MODE must be one of {', '.join(MODES)}, got {args.mode!r}")
    args.repeats = args.repeats or {"tiny": 1, "quick": 3, "full": 5}[args.mode]
    return args


def pick(args, tiny, quick, full):
    """The value for the current mode."""
    return {"tiny": tiny, "quick": quick, "full": full}[args.mode]


def rotated(items, r: int) -> list:
    """`items` starting at position r (mod len): the order of the variants in repeat r, so that no variant always
    runs first, or always right after the same other one, on a machine whose speed drifts."""
    items = list(items)
    k = r % len(items) if items else 0
    return items[k:] + items[:k]


# -- timing --------------------------------------------------------------------------------------------------------
def clock() -> float:
    return time.perf_counter()


def best_rate(fn: Callable[[], object], work: float, *, min_seconds: float = 0.2, tries: int = 5) -> float:
    """`work` / (best seconds per call of fn) over `tries` timed batches of calls. fn must block on its result."""
    fn()  # warm-up (compile)
    t0 = clock()
    fn()
    once = max(clock() - t0, 1e-7)
    calls = max(1, int(min_seconds / once))
    best = math.inf
    for _ in range(tries):
        t0 = clock()
        for _ in range(calls):
            fn()
        best = min(best, (clock() - t0) / calls)
    return work / best


# -- statistics and rows -----------------------------------------------------------------------------------------
@dataclasses.dataclass
class Target:
    """`ratio <= 0.5`, `ours < 1.0`, ... judged on the median."""

    on: str  # "ratio" or "ours"
    op: str  # "<=", "<", ">=" or ">"
    value: float

    def met(self, row: Row) -> bool | None:
        values = row.ratio if self.on == "ratio" else row.ours
        if not values:
            return None
        m = statistics.median(values)
        return {"<=": m <= self.value, "<": m < self.value, ">=": m >= self.value, ">": m > self.value}[self.op]

    def __str__(self) -> str:
        op = {"<=": "≤", ">=": "≥"}.get(self.op, self.op)
        return f"{'ratio' if self.on == 'ratio' else 'ours'} {op} {self.value:g}"


@dataclasses.dataclass
class Row:
    workload: str
    unit: str
    ours: list
    reference: list | None = None  # None: no reference (e.g. a library not installed)
    ref_name: str = ""
    ratio: list | None = None  # ours / reference, per repeat; computed from ours and reference when None
    target: Target | None = None
    note: str = ""

    def __post_init__(self):
        if self.ratio is None and self.reference and self.ours and len(self.reference) == len(self.ours):
            self.ratio = [o / r for o, r in zip(self.ours, self.reference) if r]

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["target"] = dataclasses.asdict(self.target) if self.target else None
        return d

    @classmethod
    def from_dict(cls, d: dict) -> Row:
        d = dict(d)
        d["target"] = Target(**d["target"]) if d.get("target") else None
        return cls(**d)


def num(v: float) -> str:
    """Three significant figures, without scientific notation for everyday magnitudes."""
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "n/a"
    a = abs(v)
    if a >= 1000:
        return f"{v:,.0f}"
    if a >= 100:
        return f"{v:.0f}"
    if a >= 10:
        return f"{v:.1f}"
    if a >= 1:
        return f"{v:.2f}"
    if a >= 0.1:
        return f"{v:.3f}"
    return f"{v:.3g}"


def spread(values: list | None, unit: str = "") -> str:
    """`median (min–max) unit`, or just the value when there is one."""
    if not values:
        return "n/a"
    u = f" {unit}" if unit else ""
    med = statistics.median(values)
    if len(values) == 1:
        return f"{num(med)}{u}"
    return f"{num(med)} ({num(min(values))}–{num(max(values))}){u}"


def table(rows: list[Row]) -> str:
    lines = ["| workload | ours | reference | ratio ours/ref (median, min–max) | target met? | notes |",
             "|---|---|---|---|---|---|"]
    for r in rows:
        ref = f"{r.ref_name}: {spread(r.reference, r.unit)}" if r.reference else (r.ref_name or "—")
        met = r.target.met(r) if r.target else None
        verdict = "—" if r.target is None else ("n/a" if met is None else ("yes" if met else "**no**"))
        if r.target:
            verdict += f" ({r.target})"
        lines.append(f"| {r.workload} | {spread(r.ours, r.unit)} | {ref} | {spread(r.ratio)} | {verdict} | "
                     f"{r.note} |")
    return "\n".join(lines)


# -- context: date, machine, versions, command -------------------------------------------------------------------
def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def versions() -> str:
    parts = [f"python {platform.python_version()}"]
    for name in ("jax", "jaxlib", "flax", "optax", "numpy", "keras", "torch"):
        try:
            parts.append(f"{name} {metadata.version(name)}")
        except metadata.PackageNotFoundError:
            parts.append(f"{name} (not installed)")
    return ", ".join(parts)


def header(mode: str, command: str | None = None) -> str:
    command = command or " ".join(["python", os.path.relpath(sys.argv[0], ROOT), *sys.argv[1:]])
    load = ""
    if hasattr(os, "getloadavg"):
        load = f", load average {os.getloadavg()[0]:.1f} at the end"
    return "\n".join([
        f"- date: {datetime.datetime.now().astimezone().strftime('%Y-%m-%d %H:%M %Z')}",
        f"- machine: {cpu_model()}, {os.cpu_count()} cores{load}",
        f"- versions: {versions()}",
        f"- command: `{command}` ({mode} mode{'; tiny sizes, the numbers mean nothing' if mode == 'tiny' else ''})",
        "- ratio = ours / reference per repeat (both measured back to back); below 1 is faster for times",
    ])


def report(rows: list[Row], args, title: str) -> None:
    print(f"\n## {title}\n\n{header(args.mode)}\n\n{table(rows)}\n", flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump([r.to_dict() for r in rows], f, indent=1)


def log(*parts) -> None:
    """Progress lines go to stderr, so stdout holds only the table."""
    print(*parts, file=sys.stderr, flush=True)


def have(module: str) -> bool:
    """Is `module` installed (and not listed in JL_BENCH_WITHOUT=keras,torch, which skips a reference)?"""
    import importlib.util

    if module in os.environ.get("JL_BENCH_WITHOUT", "").split(","):
        return False
    return importlib.util.find_spec(module) is not None
