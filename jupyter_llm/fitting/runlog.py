"""The runs of this session, for comparing them: `jl.runs()` in Python, `%runs` in a notebook.

`fit` calls `record(run)` at the end of every fit. What is kept is a small `RunRecord` — configuration, history,
final metrics, timings — never the `Run` itself, which holds the model, the optimizer state and device buffers:
a session of many fits must not keep every model alive. The list is bounded (the newest `MAX_RUNS`).

`runs()` returns a `RunsTable`: one row per run with only the configuration fields that differ between the runs
shown (what you changed), the final metrics, how each fit ended, and the curves of the runs overlaid.

>>> table = runs()           # doctest: +SKIP
>>> table.columns            # doctest: +SKIP
['run', 'lr', 'batch_size', 'loss', 'val_loss', 'val_accuracy', 'reason', 'steps', 'time', 'compile', 'at']
>>> runs(clear=True)         # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import itertools
import math
import threading
import time
import warnings
from collections import deque
from dataclasses import dataclass, field
from html import escape
from typing import Any, Iterable

MAX_RUNS = 100  # records kept: the newest
MAX_CHART_RUNS = 10  # curves overlaid in the chart: the newest of the table
MAX_CURVE_POINTS = 256  # per curve: enough for the shape, bounded in the saved notebook
# Settings that change how a fit is shown, not what it learns: never a "difference" worth a column.
IGNORED_FIELDS = ("display", "report_every")
# Ten distinguishable colours (matplotlib's tab10), so ten overlaid runs do not share one.
COLORS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22",
          "#17becf")
CELL = 'style="text-align:right;padding:1px 8px;white-space:nowrap"'
LEFT = 'style="text-align:left;padding:1px 8px;white-space:nowrap"'


@dataclass(frozen=True)
class RunRecord:
    """What `runs()` keeps of one fit: plain Python values only (no model, no arrays, no `Run`)."""

    index: int  # 1, 2, ... in the order of the session's fits (not reset by clearing)
    time: float  # when the fit ended, seconds since the epoch
    config: dict[str, Any]  # `run.config.to_dict()`
    history: dict[str, list[float]]  # a copy of `run.history`
    test_metrics: dict[str, float] | None
    reason: str
    step: int
    model: str  # the model's class name
    params: int | None  # its parameter count
    elapsed: float  # training seconds (compile excluded)
    compile_seconds: float
    val_curve: tuple[tuple[float, float], ...] = ()  # (step, validation loss) of each evaluation, bounded
    train_curve: tuple[tuple[float, float], ...] = ()  # (step, training loss) from the trace, bounded
    steps_per_pass: float | None = None  # a text corpus: steps per pass over its tokens (`FitStart.steps_per_pass`)
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return f"#{self.index}"

    def final(self) -> dict[str, float]:
        """The last value of each logged quantity, then the test metrics as `test_<name>`."""
        out = {k: v[-1] for k, v in self.history.items() if v}
        out.update({f"test_{k}": v for k, v in (self.test_metrics or {}).items()})
        return out

    def comparable(self) -> dict[str, Any]:
        """The settings compared between runs: the model, then the configuration fields."""
        out = {"model": self.model, "params": self.params}
        out.update({k: v for k, v in self.config.items() if k not in IGNORED_FIELDS})
        return out


_RUNS: deque[RunRecord] = deque(maxlen=MAX_RUNS)
_COUNTER = itertools.count(1)
_LOCK = threading.Lock()
_PAUSED = threading.local()


def record(run) -> None:
    """Keep a lightweight record of a finished `Run` (called by `fit`). A failure to record must not cost the user
    the fit they just ran, nor go unseen: it is a warning, and the run is missing from `%runs`."""
    if getattr(_PAUSED, "depth", 0):
        return
    try:
        rec = _record_of(run)
    except Exception as exc:  # noqa: BLE001 — comparing runs is a convenience, never a reason for a fit to fail
        warnings.warn(f"This run could not be recorded for %runs / jl.runs(): {type(exc).__name__}: {exc}",
                      RuntimeWarning, stacklevel=3)
        return
    with _LOCK:
        _RUNS.append(rec)


@contextlib.contextmanager
def paused():
    """Fits inside this block are not recorded (for internal fits such as the learning-rate range test)."""
    _PAUSED.depth = getattr(_PAUSED, "depth", 0) + 1
    try:
        yield
    finally:
        _PAUSED.depth -= 1


def _floats(values: Iterable) -> list[float]:
    return [float(v) for v in values]


def _thin(points: list[tuple[float, float]], limit: int = MAX_CURVE_POINTS) -> tuple[tuple[float, float], ...]:
    """At most `limit` points, evenly strided, always keeping the last."""
    if len(points) <= limit:
        return tuple(points)
    stride = math.ceil(len(points) / limit)
    kept = points[::stride]
    if kept[-1] != points[-1]:
        kept = kept[:-1] + [points[-1]]
    return tuple(kept)


def _record_of(run) -> RunRecord:
    sink = run._sink  # the HistorySink: plain events and numbers
    start = sink.start
    config = run.config.to_dict() if hasattr(run.config, "to_dict") else dict(vars(run.config))
    val_curve = [(float(e.step), float(e.metrics["loss"])) for e in sink.evals
                 if e.split == "validation" and "loss" in e.metrics]
    train_curve = [(float(s), float(v)) for s, v in sink.trace]
    test = run.test_metrics
    return RunRecord(
        index=next(_COUNTER),
        time=time.time(),
        config=config,
        history={str(k): _floats(v) for k, v in run.history.items()},
        test_metrics={str(k): float(v) for k, v in test.items()} if test else None,
        reason=str(run.reason),
        step=int(run.step),
        model=str(start.model_name) if start is not None else type(run.model).__name__,
        params=int(start.param_count) if start is not None else None,
        elapsed=float(run.elapsed),
        compile_seconds=float(run.compile_seconds),
        val_curve=_thin(val_curve),
        train_curve=_thin(train_curve),
        steps_per_pass=getattr(start, "steps_per_pass", None),
    )


def records() -> list[RunRecord]:
    """The records kept, oldest first."""
    with _LOCK:
        return list(_RUNS)


def clear_runs() -> int:
    """Forget every recorded run; returns how many there were."""
    with _LOCK:
        n = len(_RUNS)
        _RUNS.clear()
    return n


def runs(clear: bool = False) -> "RunsTable":
    """The runs of this session as a table (only the settings that differ, the final metrics, the curves).

    `runs(clear=True)` forgets them and returns the (now empty) table.
    """
    if clear:
        clear_runs()
    return RunsTable(records())


# -- the table ------------------------------------------------------------------------------------------------
def _fmt(value) -> str:
    if value is None:
        return "—"
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, int):
        return f"{value:,}" if abs(value) >= 10_000 else str(value)
    return str(value)


def _duration(seconds: float) -> str:
    """Short fits are compared in tenths of a second; longer ones as m:ss / h:mm:ss."""
    if seconds < 1:
        return f"{seconds:.2f} s"
    if seconds < 60:
        return f"{seconds:.1f} s"
    from jupyter_llm.sinks.text import format_duration

    return format_duration(seconds)


def _clock(t: float) -> str:
    return time.strftime("%H:%M:%S", time.localtime(t))


class RunsTable:
    """A comparison of recorded runs. `columns` and `rows()` give the table as plain data; in a notebook it shows
    as HTML (table and overlaid curves), in a terminal as text."""

    def __init__(self, recs: Iterable[RunRecord]):
        self.records: list[RunRecord] = list(recs)
        self.differing: list[str] = self._differing()
        self.metrics: list[str] = self._metric_columns()

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, i) -> RunRecord:
        return self.records[i]

    # -- what goes in ---------------------------------------------------------------------------------------
    def _differing(self) -> list[str]:
        """Settings whose value is not the same in every run (in the configuration's order)."""
        if len(self.records) < 2:
            return []
        dicts = [r.comparable() for r in self.records]
        keys = list(dict.fromkeys(k for d in dicts for k in d))
        missing = object()
        return [k for k in keys if len({repr(d.get(k, missing)) for d in dicts}) > 1]

    def _metric_columns(self) -> list[str]:
        """loss, the validation quantities, then the test metrics — those at least one run has."""
        finals = [r.final() for r in self.records]
        present = list(dict.fromkeys(k for f in finals for k in f))
        val = sorted((k for k in present if k.startswith("val_")), key=lambda k: k != "val_loss")
        test = [k for k in present if k.startswith("test_")]
        return (["loss"] if "loss" in present else []) + val + test

    @property
    def columns(self) -> list[str]:
        # "steps run" (what happened) is not the setting --steps (what was asked), which may be a column too
        return ["run", *self.differing, *self.metrics, "reason", "steps run", "time", "compile", "at"]

    def rows(self) -> list[dict[str, Any]]:
        """One dict per run, keyed by `columns` (raw values: numbers stay numbers)."""
        out = []
        for r in self.records:
            settings, final = r.comparable(), r.final()
            row = {"run": r.name}
            row.update({k: settings.get(k) for k in self.differing})
            row.update({k: final.get(k) for k in self.metrics})
            row.update({"reason": r.reason, "steps run": r.step, "time": r.elapsed, "compile": r.compile_seconds,
                        "at": r.time})
            out.append(row)
        return out

    def _display_rows(self) -> list[dict[str, Any]]:
        """`rows()` with what the cells need beside the columns."""
        out = self.rows()
        for row, r in zip(out, self.records):
            row["_steps_per_pass"] = r.steps_per_pass
        return out

    def _cells(self, row: dict) -> list[str]:
        cells = []
        for c in self.columns:
            v = row[c]
            if c in ("time",):
                cells.append(_duration(v))
            elif c == "compile":
                cells.append(f"{v:.1f} s")
            elif c == "at":
                cells.append(_clock(v))
            elif c == "params" and isinstance(v, int):
                cells.append(f"{v:,}")
            elif c == "steps run" and row.get("_steps_per_pass"):  # a text corpus: steps, and how much text
                from jupyter_llm.sinks.position import format_epochs

                cells.append(f"{_fmt(v)} ({format_epochs(v / row['_steps_per_pass'])})")
            else:
                cells.append(_fmt(v))
        return cells

    # -- curves ---------------------------------------------------------------------------------------------
    def curves(self) -> tuple[dict[str, list[tuple[float, float]]], str, str]:
        """({run name: points}, quantity, x label) for the newest `MAX_CHART_RUNS` runs.

        Epoch-based fits are compared per epoch (runs with different batch sizes line up); the quantity is the
        validation loss when every charted run has one, else the training loss. Step-based fits (`steps=`) and fits
        on a text corpus (whose epochs are only evaluation intervals) are compared per step, from the validation
        evaluations or the training-loss trace.
        """
        shown = self.records[-MAX_CHART_RUNS:]
        if not shown:
            return {}, "loss", "epoch"
        if all(r.config.get("steps") is None and not r.steps_per_pass for r in shown):
            key = "val_loss" if all(r.history.get("val_loss") for r in shown) else "loss"
            series = {r.name: list(_thin([(float(i), v) for i, v in enumerate(r.history.get(key, []), 1)]))
                      for r in shown}
            return series, key.replace("_", " "), "epoch"
        if all(r.val_curve for r in shown):
            return {r.name: list(r.val_curve) for r in shown}, "val loss", "step"
        return {r.name: list(r.train_curve) for r in shown}, "loss", "step"

    def colors(self) -> dict[str, str]:
        shown = self.records[-MAX_CHART_RUNS:]
        return {r.name: COLORS[i % len(COLORS)] for i, r in enumerate(shown)}

    def chart_svg(self) -> str:
        from jupyter_llm.sinks.svg import line_chart_svg

        series, quantity, xlabel = self.curves()
        n = len(series)
        of = f" (newest {n} of {len(self.records)})" if len(self.records) > n else ""
        return line_chart_svg(series, 560, 300, title=f"{quantity} per {xlabel}{of}", xlabel=xlabel,
                              colors=self.colors())

    # -- display --------------------------------------------------------------------------------------------
    def _repr_html_(self) -> str:
        if not self.records:
            return f'<div class="jl-runs" style="color:#777">{escape(_EMPTY)}</div>'
        from jupyter_llm.sinks.svg import svg_img

        colors = self.colors()
        head = "".join(f"<th {LEFT if c == 'run' else CELL}>{escape(c)}</th>" for c in self.columns)
        body = []
        for row in self._display_rows():
            cells = self._cells(row)
            swatch = colors.get(row["run"])
            mark = (f'<span style="display:inline-block;width:10px;height:10px;background:{swatch};'
                    f'margin-right:5px;border-radius:2px"></span>' if swatch else "")
            tds = [f"<td {LEFT}>{mark}{escape(cells[0])}</td>"]
            tds += [f"<td {CELL}>{escape(c)}</td>" for c in cells[1:]]
            body.append("<tr>" + "".join(tds) + "</tr>")
        same = (f'<div style="color:#777;font-size:11px">{len(self.records)} runs; settings not shown are the '
                "same in all of them.</div>" if len(self.records) > 1 else "")
        table = (f'<table class="jl-runs-table" style="border-collapse:collapse;font-size:12px;'
                 f'font-variant-numeric:tabular-nums"><thead><tr>{head}</tr></thead><tbody>{"".join(body)}</tbody>'
                 f"</table>{same}")
        return f'<div class="jl-runs">{table}{svg_img(self.chart_svg(), "runs compared")}</div>'

    def __repr__(self) -> str:
        if not self.records:
            return _EMPTY
        grid = [self.columns] + [self._cells(row) for row in self._display_rows()]
        widths = [max(len(r[i]) for r in grid) for i in range(len(self.columns))]
        lines = ["  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths)))
                 for r in grid]
        if len(self.records) > 1:
            lines.append(f"({len(self.records)} runs; settings not shown are the same in all of them)")
        return "\n".join(lines)

    def _repr_pretty_(self, p, cycle) -> None:
        p.text(repr(self))


_EMPTY = "No runs recorded in this session yet: train with %%train or jl.fit, then compare with %runs."
