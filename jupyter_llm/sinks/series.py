"""Bounded series for the live chart: append points forever, keep at most `capacity` of them.

A fit may report hundreds of thousands of times; the chart (and the SVG string sent to the front end on each
redraw) must not grow with it. When full, a `Series` merges adjacent pairs (averaging step and value) and from
then on averages `stride` new points into one, so every stored point stands for the same number of raw points.

>>> s = Series(capacity=4)
>>> for i in range(10):
...     s.append(i, float(i))
>>> s.points()  # 2 stored points of 4 raw points each, plus the partial bucket of the newest
[(1.5, 1.5), (5.5, 5.5), (8.5, 8.5)]
>>> len(s) <= s.capacity, s.count, s.last
(True, 10, (9, 9.0))
"""

from __future__ import annotations

import math
from typing import Iterable, Mapping

CAPACITY = 512


class Series:
    """At most `capacity` points: fewer than `capacity` stored, plus the bucket being filled."""

    def __init__(self, capacity: int = CAPACITY):
        if capacity < 2 or capacity % 2:
            raise ValueError(f"capacity must be an even number >= 2, got {capacity}")
        self.capacity = capacity
        self.count = 0  # raw points appended
        self.last: tuple[float, float] | None = None  # the latest raw point, for labels
        self._points: list[tuple[float, float]] = []
        self._stride = 1
        self._acc = [0.0, 0.0, 0]  # sum of x, sum of y, n, of the bucket being filled

    def append(self, x: float, y: float) -> None:
        """Add a point; non-finite values are skipped (a chart cannot draw them)."""
        if not math.isfinite(y):
            return
        self.count += 1
        self.last = (x, y)
        acc = self._acc
        acc[0] += x
        acc[1] += y
        acc[2] += 1
        if acc[2] < self._stride:
            return
        self._points.append((acc[0] / acc[2], acc[1] / acc[2]))
        self._acc = [0.0, 0.0, 0]
        if len(self._points) >= self.capacity:
            pts = self._points
            self._points = [((a[0] + b[0]) / 2, (a[1] + b[1]) / 2) for a, b in zip(pts[::2], pts[1::2])]
            self._stride *= 2

    def points(self) -> list[tuple[float, float]]:
        """The stored points plus the bucket being filled (so the newest value is always drawn)."""
        sx, sy, n = self._acc
        return self._points + [(sx / n, sy / n)] if n else list(self._points)

    def __len__(self) -> int:
        return len(self._points) + (1 if self._acc[2] else 0)


class Ema:
    """Exponential moving average with bias correction (TensorBoard-style smoothing of a noisy loss).

    >>> e = Ema(0.5)
    >>> e.update(1.0), round(e.update(3.0), 3)
    (1.0, 2.333)
    """

    def __init__(self, beta: float = 0.6):
        self.beta = beta
        self._value = 0.0
        self._weight = 0.0

    def update(self, x: float) -> float:
        if math.isfinite(x):
            self._value = self.beta * self._value + (1 - self.beta) * x
            self._weight = self.beta * self._weight + (1 - self.beta)
        return self._value / self._weight if self._weight else x


def main_metric(metrics: Mapping[str, float]) -> str | None:
    """The metric worth a panel of its own: accuracy if present, else the first one that is not a loss."""
    names = [k for k in metrics if "loss" not in k and k != "grad_norm"]
    return "accuracy" if "accuracy" in names else (names[0] if names else None)


class Curves:
    """The three curves of the chart, fed from events or from a finished fit's trace and per-epoch log.

    Train loss is smoothed (it is noisy); val loss and the main val metric are drawn as reported.
    """

    TRAIN = "train loss (smoothed)"
    VAL = "val loss"

    def __init__(self, capacity: int = CAPACITY, beta: float = 0.6):
        self.train = Series(capacity)
        self.val = Series(capacity)
        self.metric = Series(capacity)
        self.metric_name: str | None = None
        self._ema = Ema(beta)
        self.version = 0  # bumped on each change, so a display redraws the SVG only when needed

    def add_train(self, step: float, loss: float) -> None:
        self.train.append(step, self._ema.update(loss))
        self.version += 1

    def add_eval(self, step: float, metrics: Mapping[str, float]) -> None:
        """Validation metrics keyed without prefix (as in `Eval.metrics`)."""
        if "loss" in metrics:
            self.val.append(step, metrics["loss"])
        self.metric_name = self.metric_name or main_metric(metrics)
        if self.metric_name in metrics:
            self.metric.append(step, metrics[self.metric_name])
        self.version += 1

    @classmethod
    def from_history(cls, trace: Iterable[tuple[float, float]] = (), log: Iterable[Mapping] = (),
                     capacity: int = CAPACITY) -> "Curves":
        """From a step trace [(step, loss)] and per-epoch rows {"step", "loss", "val_loss", "val_accuracy", ...}."""
        curves = cls(capacity)
        for step, loss in trace:
            curves.add_train(step, loss)
        for row in log:
            val = {k[4:]: v for k, v in row.items() if k.startswith("val_")}
            if val:
                curves.add_eval(row.get("step", row.get("epoch", 0)), val)
        if not curves.train.count:  # no step trace: fall back to the per-epoch train loss
            for row in log:
                if "loss" in row:
                    curves.add_train(row.get("step", row.get("epoch", 0)), row["loss"])
        return curves

    def series(self) -> dict[str, list[tuple[float, float]]]:
        out = {self.TRAIN: self.train.points(), self.VAL: self.val.points()}
        if self.metric_name:
            out[f"val {self.metric_name}"] = self.metric.points()
        return {k: v for k, v in out.items() if v}

    def secondary(self) -> tuple[str, ...]:
        """Names drawn in the lower panel (the metric, on its own scale)."""
        return (f"val {self.metric_name}",) if self.metric_name else ()
