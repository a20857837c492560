"""TextSink: compact text progress for terminals, CI and front ends without HTML.

`live=True` (a notebook with `--display text`) rewrites one line in place with a carriage return, at most a few
times per second; otherwise it prints at most one line per epoch (or evaluation), so logs stay short.
"""

from __future__ import annotations

import sys
import time

from jupyter_llm import events as ev
from jupyter_llm.sinks.position import position_text, windowed


def format_duration(seconds: float | None) -> str:
    if seconds is None or seconds != seconds:
        return "?"
    seconds = int(round(seconds))
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m:02d}:{s:02d}"


def format_bytes(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:.3g} {unit}" if unit != "B" else f"{int(n)} B"
        n /= 1000
    return f"{n:.3g} TB"


def format_memory(memory) -> str:
    """'parameters 1.2 MB, optimizer state 2.4 MB, ... per device' (empty without figures)."""
    if not memory:
        return ""
    return ", ".join(f"{k} {format_bytes(v)}" for k, v in memory.items()) + " per device"


def format_metrics(metrics, keys=None) -> str:
    items = [(k, v) for k, v in metrics.items() if keys is None or k in keys]
    return " ".join(f"{k} {v:.4g}" for k, v in items)


def format_rate(value: float, unit: str) -> str:
    short = {"examples": "ex/s", "tokens": "tok/s"}.get(unit, unit + "/s")
    return f"{value / 1000:.1f}k {short}" if value >= 10_000 else f"{value:.0f} {short}"


class TextSink:
    def __init__(self, stream=None, live: bool = False, interval: float = 0.5):
        self.stream = stream or sys.stdout
        self.live = live
        self.interval = interval
        self._last = 0.0
        self._start: ev.FitStart | None = None
        self._progress: ev.Progress | None = None
        self._line_open = False

    def _write(self, text: str) -> None:
        self.stream.write(text)
        self.stream.flush()

    def _println(self, text: str) -> None:
        if self._line_open:
            self._write("\r" + " " * 100 + "\r")
            self._line_open = False
        self._write(text + "\n")

    def on(self, event) -> None:
        if isinstance(event, ev.FitStart):
            self._start = event
            sizes = ", ".join(f"{k} {v}" for k, v in event.split_sizes.items() if v)
            every = (f", evaluated every {event.steps_per_epoch} steps" if windowed(event) else "")
            self._println(f"{event.model_name} ({event.param_count:,} params) on {event.devices} | {sizes} | "
                          f"batch {event.batch_size}, {event.steps_total} steps{every}")
        elif isinstance(event, ev.CompileEnd):
            what = "reused compiled steps" if event.cached else "compiled"
            memory = format_memory(event.memory)
            self._println(f"{what} in {event.seconds:.2f}s" + (f" | {memory}" if memory else ""))
        elif isinstance(event, ev.Progress):
            self._progress = event
            now = time.monotonic()
            if self.live and now - self._last >= self.interval:
                self._last = now
                self._write("\r" + self._progress_line(event)[:100].ljust(100))
                self._line_open = True
        elif isinstance(event, ev.EpochEnd):
            p = self._progress
            rate = f" | {format_rate(p.units_per_s, self._start.unit)}" if p and self._start else ""
            eta = f" | ETA {format_duration(p.eta)}" if p else ""
            where = (position_text(self._start, event.step, event.epoch, sep=" ") if self._start
                     else f"epoch {event.epoch} step {event.step}")
            self._println(f"{where} | {format_metrics(event.logs)}{rate} | {format_duration(event.elapsed)}{eta}")
        elif isinstance(event, ev.Sample):
            self._println(f"sample at step {event.step}:\n{event.prompt}{event.text}\n")
        elif isinstance(event, ev.Control):
            self._println(f"set at step {event.step}: " + ", ".join(f"{k} {v:.4g}" for k, v in event.changes.items()))
        elif isinstance(event, ev.Eval) and event.split == "test":
            self._println(f"test: {format_metrics(event.metrics)}")
        elif isinstance(event, ev.FitEnd):
            note = f" ({event.message})" if event.message else ""
            self._println(f"{event.reason} at step {event.step} in {format_duration(event.elapsed)}{note}")

    def _progress_line(self, p: ev.Progress) -> str:
        unit = self._start.unit if self._start else "examples"
        where = (position_text(self._start, p.step, p.epoch, sep=" ") if self._start
                 else f"epoch {p.epoch} step {p.step}/{p.steps_total}")
        shown = format_metrics(p.metrics, ("loss", "accuracy"))
        return (f"{where} | {shown}"
                f" | {format_rate(p.units_per_s, unit)} | {format_duration(p.elapsed)} ETA {format_duration(p.eta)}")
