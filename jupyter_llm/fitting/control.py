"""Steering: requests from the notebook (or a display's buttons) to a fit running on another thread.

Callers only set `threading.Event`s and a small dict under a lock; the loop reads them between two dispatches (the
`steer` hook of `train/loop.py`), so the hot path gains no host sync and the compiled step never changes: new
numbers are arguments of it. Also the one-fit-per-device rule: the fit running in the background, if any.
"""

from __future__ import annotations

import math
import threading

from jupyter_llm.errors import ConfigError

SETTABLE = ("lr", "clip", "weight_decay")


class Steering:
    """Pause, stop and new optimizer numbers for one fit; every method is safe from any thread."""

    def __init__(self):
        self._go = threading.Event()
        self._go.set()
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._changes: dict[str, float] = {}

    @property
    def paused(self) -> bool:
        return not self._go.is_set() and not self._stop.is_set()

    @property
    def stopped(self) -> bool:
        return self._stop.is_set()

    def pause(self) -> None:
        self._go.clear()

    def unpause(self) -> None:
        self._go.set()

    def stop(self) -> None:
        self._stop.set()
        self._go.set()  # a paused loop wakes up to stop

    def request(self, changes: dict[str, float]) -> None:
        with self._lock:
            self._changes.update(changes)

    def __call__(self, step: int) -> dict[str, float]:
        """The loop's hook between dispatches: waits while paused, then hands over the numbers set since."""
        self._go.wait()
        with self._lock:
            changes, self._changes = self._changes, {}
        return changes

    def should_stop(self) -> bool:
        return self._stop.is_set()


def check_changes(config, **changes) -> dict[str, float]:
    """The numbers `run.set` may change in a fit built from `config`, checked: the optimizer's structure is compiled
    in (clipping, weight decay, a user's own optax object), only its numbers can move."""
    unknown = sorted(set(changes) - set(SETTABLE))
    if unknown:
        raise ConfigError(f"run.set takes {', '.join(SETTABLE)}; got {', '.join(unknown)}.")
    out = {}
    for key, value in changes.items():
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
            raise ConfigError(f"run.set({key}=...) takes a finite number >= 0, got {value!r}.")
        out[key] = float(value)
    named = isinstance(config.optimizer, str)
    if "lr" in out and (not named or out["lr"] <= 0):
        raise ConfigError("run.set(lr=...) needs a learning rate > 0 and a named optimizer (--optimizer adam, ...); "
                          "a fit given its own optax object keeps the learning rate inside that object."
                          if named else "run.set(lr=...) works with a named optimizer (--optimizer adam, ...); this "
                          "fit was given its own optax object, whose learning rate is inside it.")
    if "clip" in out and (config.clip is None or out["clip"] <= 0):
        raise ConfigError("This fit was started without --clip, so its compiled step has no clipping to adjust; "
                          "start it with --clip (e.g. --clip 1.0) to change the clipping norm while it runs."
                          if config.clip is None else "run.set(clip=...) needs a norm > 0.")
    if "weight_decay" in out and not (named and (config.optimizer == "adamw" or config.weight_decay)):
        raise ConfigError("This fit was started without weight decay, so its compiled step has none to adjust; "
                          "start it with --weight-decay (or --optimizer adamw) to change it while it runs.")
    return out


_active = {"run": None}
_active_lock = threading.Lock()


def claim(run) -> None:
    """Make `run` the device's background fit, or refuse while another one runs."""
    with _active_lock:
        refuse_if_busy()
        _active["run"] = run


def release(run) -> None:
    with _active_lock:
        if _active["run"] is run:
            _active["run"] = None


def refuse_if_busy() -> None:
    """One fit per device at a time: refuse a new fit while one runs in the background (not from its own thread)."""
    run = _active["run"]
    if run is None or not run.running or run.is_own_thread():
        return
    raise ConfigError(f"A fit is running in the background ({run.describe()}); one fit trains on a device at a time. "
                      "Stop it with run.stop() or wait for it with run.wait() (run being the object that fit "
                      "returned), then train again.")
