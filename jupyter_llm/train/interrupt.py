"""Stop a fit cleanly on SIGINT (the notebook's stop button, Ctrl-C).

The first interrupt only sets a flag, so the loop stops at the next step boundary with consistent weights; a second
one raises KeyboardInterrupt as usual, so a user is never stuck. Outside the main thread nothing is installed.
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


@contextlib.contextmanager
def stop_on_interrupt():
    flag = StopFlag()
    if threading.current_thread() is not threading.main_thread():
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
