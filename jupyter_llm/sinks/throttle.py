"""Throttle: say yes at most once per `interval` seconds of wall time, and always when forced.

Every redraw of a display costs a comm message (widget) or a re-render (HTML); the loop may send Progress faster
than a person can read, so displays ask `ready()` first and `force` it on final events so the end is never lost.

>>> t = Throttle(0.25)
>>> t.ready(now=10.0), t.ready(now=10.1), t.ready(now=10.3), t.ready(now=10.31, force=True)
(True, False, True, True)
"""

from __future__ import annotations

import time


class Throttle:
    def __init__(self, interval: float = 0.25):
        self.interval = interval
        self._last = float("-inf")

    def ready(self, now: float | None = None, force: bool = False) -> bool:
        """True when `interval` seconds have passed since the last True (the first call is always True)."""
        now = time.monotonic() if now is None else now
        if force or now - self._last >= self.interval:
            self._last = now
            return True
        return False

    def reset(self) -> None:
        self._last = float("-inf")
