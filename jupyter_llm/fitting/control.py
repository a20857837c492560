"""Steering: requests from the notebook (or a display's buttons) to a fit running on another thread.

Callers only change a few flags and a small dict under a lock; the loop reads them between two dispatches (the
`steer` hook of `train/loop.py`), so the hot path gains no host sync and the compiled step never changes: new
numbers are arguments of it. A copy of the weights is asked for the same way and made by the loop at its next step
boundary, before the next dispatch donates the state's buffers. Also the one-fit-per-device rule: the background
fits running or queued, if any.
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass
from typing import Any, Callable

from jupyter_llm.config import SETTABLE
from jupyter_llm.errors import ConfigError
from jupyter_llm.options import speaks_flags
from jupyter_llm.train.schedule import scale_for


@dataclass
class Live:
    """What a running fit shows its handle, once prepared: its history (a resumed fit's earlier epochs included),
    how to make a Run on a copy of its weights, and its schedule (None for a user's optax object)."""

    history: Any  # the fit's HistorySink
    view: Callable  # (step, (params, rest)) -> a Run on those weights
    lr_at: Callable | None  # (step, scale) -> the learning rate


class Ticket:
    """One request for a copy of the weights: filled with (step, weights) at a step boundary, or with None when the
    fit ended first."""

    def __init__(self):
        self._ready = threading.Event()
        self.value = None

    def fill(self, value) -> None:
        self.value = value
        self._ready.set()

    def wait(self, timeout: float | None = None) -> bool:
        return self._ready.wait(timeout)


class Steering:
    """Pause, stop, new optimizer numbers and copies of the weights for one fit; every method is safe from any
    thread."""

    def __init__(self):
        self._cond = threading.Condition()
        self._paused = self._stop = self._ended = False
        self._changes: dict[str, float] = {}
        self._wanted: list[Ticket] = []
        self.live: Live | None = None

    @property
    def paused(self) -> bool:
        return self._paused and not self._stop

    @property
    def stopped(self) -> bool:
        return self._stop

    def pause(self) -> None:
        with self._cond:
            self._paused = True

    def unpause(self) -> None:
        with self._cond:
            self._paused = False
            self._cond.notify_all()

    def stop(self) -> None:
        with self._cond:
            self._stop = True
            self._cond.notify_all()  # a paused loop wakes up to stop

    def request(self, changes: dict[str, float]) -> None:
        with self._cond:
            self._changes.update(changes)

    def want_weights(self) -> Ticket:
        """Ask for a copy of the weights at the fit's next step boundary (or at once while it is paused)."""
        ticket = Ticket()
        with self._cond:
            if self._ended:
                ticket.fill(None)
            else:
                self._wanted.append(ticket)
                self._cond.notify_all()
        return ticket

    def started(self, live: Live) -> None:
        self.live = live

    def ended(self) -> None:
        """The fit is over: requests still waiting get None (the caller then uses the finished Run)."""
        with self._cond:
            self._ended = True
            wanted, self._wanted = self._wanted, []
        for ticket in wanted:
            ticket.fill(None)

    def __call__(self, step: int, weights: Callable | None = None) -> dict[str, float]:
        """The loop's hook between dispatches: hands out copies of the weights asked for, waits while paused (still
        handing them out), then hands over the numbers set since."""
        with self._cond:
            while True:
                wanted, self._wanted = (self._wanted, []) if weights is not None else ([], self._wanted)
                if wanted:
                    self._cond.release()  # the copy is dispatched without holding up the callers
                    copy = None  # if making it fails, the callers get None: they wait for the fit's end, and its error
                    try:
                        copy = weights()
                    finally:
                        for ticket in wanted:
                            ticket.fill(None if copy is None else (step, copy))
                        self._cond.acquire()
                    continue
                if not self.paused:
                    break
                self._cond.wait()
            changes, self._changes = self._changes, {}
        return changes

    def should_stop(self) -> bool:
        return self._stop


def check_changes(config, live: Live | None = None, step: int = 0, **changes) -> dict[str, float]:
    """The numbers `run.set` may change in a fit built from `config`, checked: the optimizer's structure is compiled
    in (clipping, weight decay, a user's own optax object), only its numbers can move; and a learning rate is a
    multiplier of the schedule (`live.lr_at`, at `step`), which cannot move a rate of 0."""
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
    if "lr" in out and live is not None and live.lr_at is not None:
        base = live.lr_at(step, 1.0)
        if scale_for(out["lr"], base) is None:
            raise ConfigError(f"run.set(lr={out['lr']:g}) cannot take effect: the schedule's learning rate at step "
                              f"{step} is {base:g} (--schedule {config.schedule}), and a learning rate set while "
                              "a fit runs multiplies the schedule so that it goes on in proportion, which leaves 0 "
                              "at 0. Stop the fit (run.stop()) and continue it with --resume and a schedule that "
                              "stays above 0 there (a --min-lr above 0, or --schedule constant).")
    if "clip" in out and (config.clip is None or out["clip"] <= 0):
        raise ConfigError("This fit was started without --clip, so its compiled step has no clipping to adjust; "
                          "start it with --clip (e.g. --clip 1.0) to change the clipping norm while it runs."
                          if config.clip is None else "run.set(clip=...) needs a norm > 0.")
    if "weight_decay" in out and not (named and (config.optimizer == "adamw" or config.weight_decay)):
        raise ConfigError("This fit was started without weight decay, so its compiled step has none to adjust; "
                          "start it with --weight-decay (or --optimizer adamw) to change it while it runs.")
    return out


class Replay:
    """The loop's hook that applies recorded changes (`run.changes`, `--changes`) at their steps, as `run.set` did:
    the same numbers at the same step boundaries give the same fit, bit for bit."""

    def __init__(self, changes, first_step: int = 0):
        """`changes` as checked by the config; those at or before `first_step` (a resumed fit's) are in force
        already (the checkpoint keeps them)."""
        self.at: dict[int, dict] = {}
        for change in changes or ():
            if change["step"] > first_step:
                self.at.setdefault(change["step"], {}).update({k: v for k, v in change.items() if k != "step"})

    def check(self, config, boundaries: Callable[[int], bool], steps_per_dispatch: int) -> None:
        """Each change is one `run.set` could make in this fit, at one of its step boundaries."""
        for step, numbers in self.at.items():
            check_changes(config, **numbers)
            if not boundaries(step):
                raise ConfigError(f"--changes: step {step} is not a step boundary of this fit, which runs "
                                  f"{steps_per_dispatch} steps per compiled call; replay with the recorded fit's "
                                  "own --steps-per-dispatch (the changes were made between two calls).")

    def __call__(self, step: int, weights=None) -> dict[str, float]:
        return self.at.pop(step, {})


def steering_hook(steer: Steering | None, replay: Replay | None):
    """The loop's one hook: recorded changes first, then what was set while it runs."""
    if replay is None or not replay.at:
        return steer
    if steer is None:
        return replay

    def hook(step, weights=None):
        return {**replay(step), **steer(step, weights)}

    return hook


# -- one fit per device ------------------------------------------------------------------------------------------
_live: list = []  # background fits not yet ended, running or queued, oldest first: a chain, each after the one before
_live_lock = threading.Lock()


def claim(run, after=None) -> None:
    """Make `run` a background fit of the device (queued behind `after`), or refuse while another one runs."""
    with _live_lock:
        refuse_if_busy(after)
        _live.append(run)


def release(run) -> None:
    with _live_lock:
        if run in _live:
            _live.remove(run)


def _busy() -> list:
    return [r for r in _live if r.running and not r.is_own_thread()]


def refuse_if_busy(after=None) -> None:
    """One fit per device at a time: refuse a new fit while one runs (or waits) in the background, unless it is
    queued behind the last of them (`after`). A fit started from a background fit's own thread is not refused."""
    busy = _busy()
    if not busy or (after is not None and after is busy[-1]):
        return
    last = busy[-1]
    queue = f"--after {last.name}" if speaks_flags() else f"after={last.name}"
    named, listed = getattr(after, "name", "That run"), "; ".join(r.describe() for r in busy)
    if after is not None and after in busy:
        raise ConfigError(f"{named} is not the last fit in the background queue ({listed}): queue this fit behind "
                          f"the last one, with {queue}.")
    if after is not None:
        raise ConfigError(f"{named} has ended, but another fit is in the background ({listed}): queue this fit "
                          f"behind it, with {queue}, or stop it ({last.name}.stop()).")
    what = "A fit is running in the background" if len(busy) == 1 else "Fits are running in the background"
    raise ConfigError(f"{what} ({listed}); one fit trains on a device at a time. "
                      f"Stop it with {last.name}.stop(), wait for it with {last.name}.wait(), or queue this fit "
                      f"to start when it ends with {queue} ({last.name} being the object that fit returned).")
