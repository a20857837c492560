"""LogdirSink (`--logdir DIR`): TensorBoard scalars, the history as JSON and CSV, and a run card, in one directory.

What DIR holds:

* `events.out.tfevents.<time>.<hostname>`: scalars for TensorBoard (`tensorboard --logdir DIR`):
  `train/<metric>` (loss, accuracy, grad_norm, update_ratio...), `train/lr` and `train/throughput` (examples or
  tokens per second) at the reporting cadence, `val/<metric>` and `test/<metric>` at each evaluation (all against
  the global step), and `epoch/<key>` from each epoch's logs (against the epoch number, as Keras does). A text
  corpus has no epochs, only evaluation intervals (`sinks/position.py`): its interval means are `interval/<key>`,
  against the step.
* `history.json` (columns: `{"epoch": [...], "step": [...], "elapsed": [...], "loss": [...], ...}`, the same lists
  as `run.history` plus the three position columns) and `history.csv` (one row per epoch, same columns).
  Non-finite numbers are `null` in the JSON (strict JSON), `nan`/`inf` in the CSV.
* `run.json`: the configuration, model, devices and split sizes (from the start; for a text corpus `steps_per_pass`,
  the steps whose tokens make one pass over the training split, and `epochs_are` says what the history's rows are),
  then how the fit ended
  (reason, message, test metrics). `reason` is null while the fit runs.

The JSON and CSV files are replaced atomically (a temporary file in DIR, flushed and fsynced, then `os.replace`),
so a reader never sees a half-written file; they are rewritten at each epoch end (at most every `history_every`
seconds, the rest at the next event) and at the end of the fit. Event-file writes are buffered and reach the disk
from a background thread every `flush_secs` seconds. A failing write (disk full...) warns once and never stops the
training. Reusing a directory adds an event file and replaces the history, except when the fit resumes: then the
earlier epochs in `history.json` are kept. (TensorBoard reads a fresh fit in a used directory as a restart and hides
the earlier fit's points from the new fit's first step on: give each fit its own subdirectory to compare them.)
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import time
import uuid
import warnings

from jupyter_llm import events as ev
from jupyter_llm.errors import ConfigError
from jupyter_llm.sinks.position import windowed
from jupyter_llm.sinks.tensorboard import EventWriter

HISTORY_JSON = "history.json"
HISTORY_CSV = "history.csv"
RUN_JSON = "run.json"
_POSITION = ("epoch", "step", "elapsed")
_PREFIX = {"validation": "val", "test": "test"}


class LogdirSink:
    def __init__(self, logdir, *, flush_secs: float = 2.0, history_every: float = 0.5):
        self.path = _make_dir(logdir)
        try:
            self.writer = EventWriter(self.path, flush_secs=flush_secs)
        except OSError as exc:
            raise ConfigError(f"--logdir {os.fspath(logdir)}: cannot write there ({exc.strerror or exc}). "
                              "Give a directory you can write to.") from None
        self.history_every = float(history_every)
        self.rows: list[dict] = []  # this fit's epochs: epoch, step, elapsed, logs
        self.prior: list[dict] = []  # a resumed fit's earlier epochs, read back from history.json
        self.run: dict = {}
        self.windowed = False
        self._dirty = False
        self._written_at = -math.inf
        self._warned = False
        self._closed = False

    # -- events

    def on(self, event) -> None:
        if self._closed:
            return
        try:
            self._on(event)
        except OSError as exc:
            self._warn(exc)
        if self.writer.error is not None:
            self._warn(self.writer.error)

    def _on(self, event) -> None:
        w = self.writer
        if isinstance(event, ev.Progress):
            values = {f"train/{k}": v for k, v in event.metrics.items() if _is_number(v)}
            if _is_number(event.lr):
                values["train/lr"] = event.lr
            if _is_number(event.units_per_s):
                values["train/throughput"] = event.units_per_s
            w.scalars(values, event.step)
        elif isinstance(event, ev.Eval):
            prefix = _PREFIX.get(event.split, event.split)
            w.scalars({f"{prefix}/{k}": v for k, v in event.metrics.items() if _is_number(v)}, event.step)
        elif isinstance(event, ev.EpochEnd):
            if self.windowed:  # evaluation intervals, not passes: against the step
                w.scalars({f"interval/{k}": v for k, v in event.logs.items() if _is_number(v)}, event.step)
            else:
                w.scalars({f"epoch/{k}": v for k, v in event.logs.items() if _is_number(v)}, event.epoch)
            self.prior = [r for r in self.prior if r.get("epoch", 0) < event.epoch]  # a resumed fit redoes these
            self.rows.append({"epoch": event.epoch, "step": event.step, "elapsed": event.elapsed, **event.logs})
            self._dirty = True
        elif isinstance(event, ev.Control):  # run.set: a scalar per number, and a list in run.json
            w.scalars({f"control/{k}": v for k, v in event.changes.items() if _is_number(v)}, event.step)
            self.run.setdefault("changes", []).append({"step": event.step, **event.changes})
            _write_atomic(os.path.join(self.path, RUN_JSON), _dumps(self.run))
        elif isinstance(event, ev.FitStart):
            self._start(event)
        elif isinstance(event, ev.FitEnd):
            self._end(event)
            return
        if self._dirty and time.monotonic() - self._written_at >= self.history_every:
            self.write_history()

    def _start(self, event: ev.FitStart) -> None:
        self.windowed = windowed(event)
        config = event.config
        to_dict = getattr(config, "to_dict", None)
        self.run = {
            "config": to_dict() if callable(to_dict) else repr(config),
            "model": event.model_name,
            "param_count": event.param_count,
            "devices": event.devices,
            "batch_size": event.batch_size,
            "epochs": event.epochs,
            "steps_per_epoch": event.steps_per_epoch,
            "steps_total": event.steps_total,
            "split_sizes": dict(event.split_sizes),
            "unit": event.unit,
            "steps_per_pass": event.steps_per_pass,
            "epochs_are": (f"evaluation intervals of {event.steps_per_epoch} steps (a text corpus, sampled in windows)"
                           if windowed(event) else "passes over the training split"),
            "started": _now(),
            "event_file": os.path.basename(self.writer.path),
            "reason": None,
        }
        if getattr(config, "resume", None) not in (None, False):
            self.prior = _read_rows(os.path.join(self.path, HISTORY_JSON))
        _write_atomic(os.path.join(self.path, RUN_JSON), _dumps(self.run))

    def _end(self, event: ev.FitEnd) -> None:
        try:
            self.run.update(reason=event.reason, message=event.message, step=event.step, epoch=event.epoch,
                            elapsed=event.elapsed, compile_seconds=event.compile_seconds,
                            test_metrics=dict(event.test_metrics) if event.test_metrics is not None else None,
                            ended=_now())
            self.write_history()
            _write_atomic(os.path.join(self.path, RUN_JSON), _dumps(self.run))
        finally:
            self.close()

    # -- files

    def write_history(self) -> None:
        """Replace history.json and history.csv with every epoch so far (atomically)."""
        rows = self.prior + self.rows
        columns = list(_POSITION)
        for row in rows:
            columns.extend(k for k in row if k not in columns)
        table = {c: [row.get(c) for row in rows] for c in columns}
        _write_atomic(os.path.join(self.path, HISTORY_JSON), _dumps_columns(table))
        buf = io.StringIO()
        out = csv.writer(buf, lineterminator="\n")
        out.writerow(columns)
        out.writerows([["" if row.get(c) is None else row.get(c) for c in columns] for row in rows])
        _write_atomic(os.path.join(self.path, HISTORY_CSV), buf.getvalue())
        self._dirty = False
        self._written_at = time.monotonic()

    def close(self) -> None:
        """Flush and close the event file (done at the end of the fit)."""
        if self._closed:
            return
        self._closed = True
        try:
            self.writer.close()
        except OSError as exc:
            self._warn(exc)

    def _warn(self, exc: BaseException) -> None:
        if not self._warned:
            self._warned = True
            warnings.warn(f"--logdir {self.path}: a write failed ({exc}); the training goes on without it.",
                          RuntimeWarning, stacklevel=3)


# ---------------------------------------------------------------- helpers


def check_logdir(logdir) -> str:
    """The absolute path, or the refusals `_make_dir` would give, without creating anything: `fit` runs this before
    it makes the checkpoint folder, so a refused --logdir leaves nothing behind."""
    given = os.fspath(logdir)
    path = os.path.abspath(os.path.expanduser(given))
    if os.path.exists(path) and not os.path.isdir(path):
        raise ConfigError(f"--logdir {given} is a file, not a directory. Give a directory path (it is created if "
                          "missing).")
    if os.path.isdir(path) and not os.access(path, os.W_OK | os.X_OK):
        raise ConfigError(f"--logdir {given} is not writable. Give a directory you can write to.")
    blocker = None if os.path.exists(path) else _file_above(path)
    if blocker:
        raise _cannot_create(given, f"{blocker} is a file")
    return path


def _make_dir(logdir) -> str:
    given = os.fspath(logdir)
    path = check_logdir(logdir)
    try:
        os.makedirs(path, exist_ok=True)
    except OSError as exc:
        blocker = _file_above(path)
        raise _cannot_create(given, f"{blocker} is a file" if blocker else (exc.strerror or str(exc))) from None
    if not os.access(path, os.W_OK | os.X_OK):
        raise ConfigError(f"--logdir {given} is not writable. Give a directory you can write to.")
    return path


def _cannot_create(given: str, why: str) -> ConfigError:
    return ConfigError(f"--logdir {given} cannot be created ({why}). Give a directory you can write to.")


def _file_above(path: str) -> str | None:
    """The nearest existing ancestor of `path` when it is a file (why a directory cannot be made there)."""
    parent = os.path.dirname(path)
    while parent and not os.path.exists(parent):
        if os.path.dirname(parent) == parent:
            return None
        parent = os.path.dirname(parent)
    return parent if parent and os.path.exists(parent) and not os.path.isdir(parent) else None


def _write_atomic(path: str, text: str) -> None:
    """Write `text` to a temporary file next to `path`, flush and fsync it, then rename it over `path`."""
    directory, name = os.path.split(path)
    tmp = os.path.join(directory, f".{name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        with open(tmp, "x", encoding="utf-8", newline="") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def _read_rows(path: str) -> list[dict]:
    """Rows of an earlier history.json (for a resumed fit); none when missing or unreadable."""
    try:
        with open(path, encoding="utf-8") as f:
            table = json.load(f)
        n = len(table["epoch"])
        return [{k: v[i] for k, v in table.items() if i < len(v) and v[i] is not None} for i in range(n)]
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return []


def _is_number(v) -> bool:
    if v is None or isinstance(v, (str, bytes)):
        return False
    try:
        float(v)
    except (TypeError, ValueError):
        return False
    return True


def _plain(obj):
    """JSON-safe: non-finite floats to None, NumPy scalars to Python numbers, mappings and sequences walked."""
    if isinstance(obj, bool) or obj is None or isinstance(obj, (str, int)):
        return obj
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict) or hasattr(obj, "items"):
        return {str(k): _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    item = getattr(obj, "item", None)
    if callable(item):
        try:
            return _plain(item())
        except (TypeError, ValueError):
            pass
    return repr(obj)


def _dumps(obj) -> str:
    return json.dumps(_plain(obj), indent=1, allow_nan=False) + "\n"


def _dumps_columns(table: dict) -> str:
    """One column per line: readable, and diff-friendly."""
    lines = [f" {json.dumps(k)}: {json.dumps(_plain(v), allow_nan=False)}" for k, v in table.items()]
    return "{\n" + ",\n".join(lines) + "\n}\n"


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")
