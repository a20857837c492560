"""Stop a fit cleanly on SIGINT (the notebook's stop button, Ctrl-C).

The first interrupt only sets a flag, so the loop stops at the next step boundary with consistent weights; a second
one raises KeyboardInterrupt as usual, so a user is never stuck. Outside the main thread, or where SIGINT's handler
was set outside Python, nothing is installed.
"""

from __future__ import annotations

import contextlib
import signal
import threading


class StopFlag:
    def __init__(self):
        self.requested = False

    def __call__(self) -> bool:
        return self.requested


def _left_to_python() -> bool:
    """Whether SIGINT's handler may be swapped here: only Python's main thread can, and a handler set outside Python
    (getsignal gives None) could not be put back."""
    return threading.current_thread() is threading.main_thread() and signal.getsignal(signal.SIGINT) is not None


@contextlib.contextmanager
def stop_on_interrupt():
    flag = StopFlag()
    if not _left_to_python():
        yield flag
        return

    def handler(signum, frame):
        if flag.requested:
            raise KeyboardInterrupt
        flag.requested = True

    previous = signal.signal(signal.SIGINT, handler)
    try:
        yield flag
    finally:
        signal.signal(signal.SIGINT, previous)


@contextlib.contextmanager
def interrupts_held():
    """Hold SIGINT for a short call that starts threads (Orbax's save), then deliver it to the handler in place.

    A KeyboardInterrupt raised halfway through Orbax's checkpointer's `save` leaves a half-made thread that the
    interpreter waits for at exit, forever: the process hangs instead of stopping. Held here, the interrupt arrives a
    moment later, when the call has returned, and does what it would have done (a first one asks the fit to stop, a
    second raises). Outside the main thread nothing is changed.
    """
    if not _left_to_python():
        yield
        return
    frames = []
    previous = signal.signal(signal.SIGINT, lambda signum, frame: frames.append(frame))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
        if frames:
            _deliver(previous, frames[0])


def _deliver(handler, frame) -> None:
    if callable(handler):
        handler(signal.SIGINT, frame)  # ours, IPython's or Python's default one (which raises KeyboardInterrupt)
    elif handler == signal.SIG_DFL:
        signal.raise_signal(signal.SIGINT)
    # SIG_IGN: the interrupt was not wanted here either
