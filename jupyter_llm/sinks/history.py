"""HistorySink: always attached; turns events into `run.history` (per-epoch lists) and a bounded step trace."""

from __future__ import annotations

from jupyter_llm import events as ev

MAX_TRACE = 2048


class HistorySink:
    def __init__(self, history: dict | None = None, log: list | None = None):
        """`history` and `log` continue those of a resumed fit."""
        self.history: dict[str, list[float]] = {k: list(v) for k, v in (history or {}).items()}
        self.log: list[dict] = list(log or [])  # one row per epoch (or evaluation): epoch, step, elapsed, logs
        self.trace: list[tuple[int, float]] = []  # (step, train loss) at the reporting cadence, thinned
        self.start: ev.FitStart | None = None
        self.compile: ev.CompileEnd | None = None
        self.end: ev.FitEnd | None = None
        self.evals: list[ev.Eval] = []
        self.changes: list[dict] = []  # run.set's changes as they took effect: {"step": ..., "lr": ...}
        self._stride = 1
        self._seen = 0

    def on(self, event) -> None:
        if isinstance(event, ev.FitStart):
            self.start = event
        elif isinstance(event, ev.CompileEnd):
            self.compile = event
        elif isinstance(event, ev.Progress) and "loss" in event.metrics:
            self._seen += 1
            if self._seen % self._stride == 0:
                self.trace.append((event.step, event.metrics["loss"]))
                if len(self.trace) >= MAX_TRACE:  # keep memory bounded: drop every other point
                    self.trace = self.trace[::2]
                    self._stride *= 2
        elif isinstance(event, ev.Eval):
            self.evals.append(event)
        elif isinstance(event, ev.EpochEnd):
            for key, value in event.logs.items():
                self.history.setdefault(key, []).append(value)
            self.log.append({"epoch": event.epoch, "step": event.step, "elapsed": event.elapsed, **event.logs})
        elif isinstance(event, ev.Control):
            self.changes.append({"step": event.step, **event.changes})
        elif isinstance(event, ev.FitEnd):
            self.end = event
