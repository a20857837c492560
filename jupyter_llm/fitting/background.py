"""A fit on a worker thread: `fit(..., background=True)` returns this handle at once.

The thread is started inside a copy of the caller's context, so anything it displays lands in the cell that started
it. It is not a daemon (a daemon thread running JAX aborts the interpreter at exit) and an exit hook stops it at the
next step boundary and joins it, so a kernel shut down mid-fit neither hangs nor crashes. While the fit runs,
`evaluate`, `predict` and `generate` use a copy of its weights taken at a step boundary (`snapshot`); once it has
ended, the handle answers as the `Run` it returned. `fit(..., after=handle)` queues a fit: its thread waits for the
earlier fit to end, then trains.
"""

from __future__ import annotations

import atexit
import contextvars
import threading
from typing import Callable

from jupyter_llm import events as ev
from jupyter_llm.errors import ConfigError
from jupyter_llm.fitting import control
from jupyter_llm.sinks.history import HistorySink

_all: list = []  # handles whose thread may still run, for the exit hook


class BackgroundRun:
    """A running fit: watch it (`running`, `step`, `history`), steer it (`pause`, `unpause`, `stop`, `set`), and
    `wait` for the `Run` it ends with."""

    def __init__(self, config, work: Callable, displays: list, name: str = "run", after=None):
        """`work(steer, sinks)` runs the fit and returns its `Run`; `displays` are the live display's sinks; `after`:
        a fit (handle or Run) to wait for before starting."""
        self.config, self.name, self.after = config, name, after
        self.cancelled = False  # stopped while queued: it never started
        self.steering = control.Steering()
        self.displays = displays
        self.error: BaseException | None = None
        self.result = None
        self._live = HistorySink()
        self._step = 0
        self._done = threading.Event()
        self._started = threading.Event()
        self._work = work
        context = contextvars.copy_context()
        self._thread = threading.Thread(target=context.run, args=(self._main,), name="jupyter_llm fit", daemon=False)
        for sink in displays:
            if hasattr(sink, "attach"):
                sink.attach(self)

    def start(self) -> "BackgroundRun":
        control.claim(self, self.after)
        _all.append(self)
        self.display()  # in the starting cell, before it returns
        self._thread.start()
        return self

    def _main(self) -> None:
        try:
            if self._wait_for_turn():
                self._started.set()
                self.result = self._work(self.steering, [self, *self.displays])
            else:
                self.cancelled = True
        except BaseException as exc:  # kept for wait() and run.error; the display shows it already (FitEnd)
            self.error = exc
        finally:
            self.steering.ended()
            self._done.set()
            control.release(self)

    def _wait_for_turn(self) -> bool:
        """Wait for the fit this one is queued behind to end, however it ends; False if this one was stopped
        first (it then never starts)."""
        done = getattr(self.after, "_done", None)
        while done is not None and not done.wait(0.1) and not self.steering.stopped:
            pass
        return not self.steering.stopped

    # -- watching ---------------------------------------------------------------------------------------------
    def on(self, event) -> None:
        """The handle is a sink of its own fit: the live history and step, read from any thread."""
        self._live.on(event)
        step = getattr(event, "step", None)
        if isinstance(step, int) and not isinstance(event, ev.FitEnd):
            self._step = step

    @property
    def running(self) -> bool:
        """True until the fit has ended, including while it waits for its turn (`queued`)."""
        return not self._done.is_set()

    @property
    def queued(self) -> bool:
        """Waiting for the fit named by `after` to end."""
        return self.running and not self._started.is_set()

    @property
    def paused(self) -> bool:
        return self.running and self.steering.paused

    @property
    def step(self) -> int:
        """Steps completed, as of the last report (a few times a second)."""
        return self.result.step if self.result is not None else self._step

    @property
    def history(self) -> dict[str, list[float]]:
        """Per-epoch lists as they grow (a resumed fit's earlier epochs included)."""
        if self.result is not None:
            return self.result.history
        live = self.steering.live
        history = live.history.history if live is not None else self._live.history
        return {k: list(v) for k, v in list(history.items())}

    @property
    def changes(self) -> list[dict]:
        """Every `set` that took effect: {"step": ..., "lr": ...}, in order."""
        return self.result.changes if self.result is not None else list(self._live.changes)

    def is_own_thread(self) -> bool:
        return threading.current_thread() is self._thread

    def describe(self) -> str:
        start = self._live.start
        if self.queued and self.after is not None:
            what = f"queued after {getattr(self.after, 'name', 'an earlier fit')}"
        else:
            what = f"{start.model_name}, step {self._step} of {start.steps_total}" if start else "starting"
        return f"{self.name}: {what}{', paused' if self.paused else ''}"

    # -- using the weights while it runs ----------------------------------------------------------------------
    def snapshot(self):
        """A `Run` on a copy of the weights of the latest completed step, taken at the fit's next step boundary (at
        once while it is paused) without stopping it: `.step` says which step, `.evaluate`, `.predict` and
        `.generate` work as on a finished Run. Once the fit has ended, its Run. Waits while the fit compiles."""
        if self.running:
            if self.is_own_thread():
                raise ConfigError("A sink of a background fit cannot ask that fit for its weights: the fit would "
                                  "wait for itself. Use the events' metrics, or run.snapshot() from the notebook.")
            ticket = self.steering.want_weights()
            ticket.wait()
            if ticket.value is not None:
                step, weights = ticket.value
                return self.steering.live.view(step, weights)
        return self._finished()

    def evaluate(self, split_or_arrays="test") -> dict[str, float]:
        """Loss and metrics of the current weights (those of the latest completed step while the fit runs)."""
        return self.snapshot().evaluate(split_or_arrays)

    def predict(self, x):
        """Model outputs for `x` with the current weights (those of the latest completed step while it runs)."""
        return self.snapshot().predict(x)

    def generate(self, prompt: str = "", max_new_tokens: int = 200, **options) -> str:
        """Text sampled from the current weights (those of the latest completed step while it runs)."""
        return self.snapshot().generate(prompt, max_new_tokens, **options)

    def _finished(self):
        done = self.wait()
        if done is None:
            raise ConfigError(f"{self.name} was stopped while it was queued, so it never trained: there are no "
                              "weights of its own to use.")
        return done

    # -- steering ---------------------------------------------------------------------------------------------
    def pause(self) -> None:
        """Hold the fit before its next dispatch (the weights stay those of the last completed step)."""
        self.steering.pause()

    def unpause(self) -> None:
        self.steering.unpause()

    def stop(self) -> None:
        """End the fit at the next step boundary, as an interrupt does: weights of the last completed step written
        back, a checkpoint if on (`--resume` continues from it). A queued fit is cancelled: it never starts."""
        self.steering.stop()

    def set(self, **changes) -> None:
        """New optimizer numbers (`lr`, `clip`, `weight_decay`) from the next compiled call on, without recompiling.
        A learning rate multiplies the schedule from there on, so one that is 0 at this step is refused."""
        self.steering.request(control.check_changes(self.config, self.steering.live, self._step, **changes))

    def wait(self, timeout: float | None = None):
        """Wait for the fit to end and return its `Run`; re-raises the fit's error. None when `timeout` passed, or
        when the fit was stopped while queued (`cancelled`: it never started)."""
        if not self._done.wait(timeout):
            return None
        if self.error is not None:
            raise self.error
        return self.result

    def display(self):
        """Show the live display (with its buttons) again, e.g. in a new cell after the outputs were lost."""
        for sink in self.displays:
            if hasattr(sink, "show"):
                return sink.show()
        return None

    def _shutdown(self, timeout: float | None = None) -> None:
        self.stop()
        if self._thread.is_alive() and not self.is_own_thread():
            self._thread.join(timeout)

    # -- once ended: the Run ----------------------------------------------------------------------------------
    def __getattr__(self, name):
        if name.startswith("_"):
            raise AttributeError(name)
        result = self.__dict__.get("result")
        if result is None:
            raise AttributeError(f"{name!r}: the fit is still running (run.wait() returns the Run when it ends), or "
                                 f"it failed (run.error)." if self.running or self.error else name)
        return getattr(result, name)

    def __repr__(self) -> str:
        if self.result is not None:
            return repr(self.result)
        if self.cancelled:
            return f"<background fit {self.name}: stopped while queued, never started>"
        state = "running" if self.running else f"failed: {self.error!r}"
        return f"<background fit {self.describe()} — {state}>"

    def _repr_html_(self):
        return self.result._repr_html_() if self.result is not None else None


def check_after(after) -> None:
    """`after` is something a fit can wait for: a background fit's handle, or a Run (ended already)."""
    from jupyter_llm.fitting.run import Run

    if not isinstance(after, (BackgroundRun, Run)):
        raise ConfigError(f"--after takes the run of another fit (a background fit's handle, to start when it "
                          f"ends), got {type(after).__name__}.")


def _stop_all() -> None:
    """At exit: stop every background fit at its next step boundary and wait for it (it is not a daemon)."""
    for run in list(_all):
        run._shutdown()


# Non-daemon threads are joined before atexit's hooks run, so the stop must come from threading's own exit hook;
# where that is missing, atexit still stops the fit (and the interpreter's join then returns).
_register = getattr(threading, "_register_atexit", None)
if _register is not None:
    _register(_stop_all)
else:  # pragma: no cover
    atexit.register(_stop_all)
