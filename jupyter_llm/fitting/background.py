"""A fit on a worker thread: `fit(..., background=True)` returns this handle at once.

The thread is started inside a copy of the caller's context, so anything it displays lands in the cell that started
it. It is not a daemon (a daemon thread running JAX aborts the interpreter at exit) and an exit hook stops it at the
next step boundary and joins it, so a kernel shut down mid-fit neither hangs nor crashes. Once the fit has ended,
the handle answers as the `Run` it returned (`run.evaluate`, `run.generate`, ...).
"""

from __future__ import annotations

import atexit
import contextvars
import threading
from typing import Callable

from jupyter_llm import events as ev
from jupyter_llm.fitting import control
from jupyter_llm.sinks.history import HistorySink

_all: list = []  # handles whose thread may still run, for the exit hook


class BackgroundRun:
    """A running fit: watch it (`running`, `step`, `history`), steer it (`pause`, `unpause`, `stop`, `set`), and
    `wait` for the `Run` it ends with."""

    def __init__(self, config, work: Callable, displays: list, name: str = "run"):
        """`work(steer, sinks)` runs the fit and returns its `Run`; `displays` are the live display's sinks."""
        self.config, self.name = config, name
        self.steering = control.Steering()
        self.displays = displays
        self.error: BaseException | None = None
        self.result = None
        self._live = HistorySink()
        self._step = 0
        self._done = threading.Event()
        self._work = work
        context = contextvars.copy_context()
        self._thread = threading.Thread(target=context.run, args=(self._main,), name="jupyter_llm fit", daemon=False)
        for sink in displays:
            if hasattr(sink, "attach"):
                sink.attach(self)

    def start(self) -> "BackgroundRun":
        control.claim(self)
        _all.append(self)
        self.display()  # in the starting cell, before it returns
        self._thread.start()
        return self

    def _main(self) -> None:
        try:
            self.result = self._work(self.steering, [self, *self.displays])
        except BaseException as exc:  # kept for wait() and run.error; the display shows it already (FitEnd)
            self.error = exc
        finally:
            self._done.set()
            control.release(self)

    # -- watching ---------------------------------------------------------------------------------------------
    def on(self, event) -> None:
        """The handle is a sink of its own fit: the live history and step, read from any thread."""
        self._live.on(event)
        step = getattr(event, "step", None)
        if isinstance(step, int) and not isinstance(event, ev.FitEnd):
            self._step = step

    @property
    def running(self) -> bool:
        return not self._done.is_set()

    @property
    def paused(self) -> bool:
        return self.running and self.steering.paused

    @property
    def step(self) -> int:
        """Steps completed, as of the last report (a few times a second)."""
        return self.result.step if self.result is not None else self._step

    @property
    def history(self) -> dict[str, list[float]]:
        return self.result.history if self.result is not None else self._live.history

    @property
    def changes(self) -> list[dict]:
        """Every `set` that took effect: {"step": ..., "lr": ...}, in order."""
        return self.result.changes if self.result is not None else list(self._live.changes)

    def is_own_thread(self) -> bool:
        return threading.current_thread() is self._thread

    def describe(self) -> str:
        start = self._live.start
        what = f"{start.model_name}, step {self._step} of {start.steps_total}" if start else "starting"
        return f"{self.name}: {what}{', paused' if self.paused else ''}"

    # -- steering ---------------------------------------------------------------------------------------------
    def pause(self) -> None:
        """Hold the fit before its next dispatch (the weights stay those of the last completed step)."""
        self.steering.pause()

    def unpause(self) -> None:
        self.steering.unpause()

    def stop(self) -> None:
        """End the fit at the next step boundary, as an interrupt does: weights of the last completed step written
        back, a checkpoint if on (`--resume` continues from it)."""
        self.steering.stop()

    def set(self, **changes) -> None:
        """New optimizer numbers (`lr`, `clip`, `weight_decay`) from the next compiled call on, without recompiling."""
        self.steering.request(control.check_changes(self.config, **changes))

    def wait(self, timeout: float | None = None):
        """Wait for the fit to end and return its `Run`; re-raises the fit's error. None when `timeout` passed."""
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
        state = "running" if self.running else f"failed: {self.error!r}"
        return f"<background fit {self.describe()} — {state}>"

    def _repr_html_(self):
        return self.result._repr_html_() if self.result is not None else None


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
