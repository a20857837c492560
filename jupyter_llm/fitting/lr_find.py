"""`lr_find(model, data)`: the learning-rate range test (Smith 2015; fastai's lr_find).

A short fit whose learning rate grows exponentially from `min_lr` to `max_lr`, reading the loss after every step;
it stops by itself when the loss diverges (a non-finite loss ends the fit). The model's weights — and every other
variable, RNG streams included — are put back exactly as they were.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from html import escape

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from jupyter_llm import events as ev
from jupyter_llm.config import check_float32
from jupyter_llm.errors import ConfigError
from jupyter_llm.models.lora import adapted_layers, remove_adapters
from jupyter_llm.options import in_callers_idiom

_OPTIMIZERS = {
    "sgd": lambda s: optax.sgd(s),
    "momentum": lambda s: optax.sgd(s, momentum=0.9),
    "adam": lambda s: optax.adam(s),
    "adamw": lambda s: optax.adamw(s),
}


@dataclass
class LRFinderResult:
    lrs: list[float]
    losses: list[float]
    suggestion: float | None  # the steepest descent of the smoothed loss
    smoothing: float = 0.9  # of the smoothed loss the suggestion was read from

    def __repr__(self):
        found = f"{self.suggestion:.2e}" if self.suggestion else "none (the loss never fell)"
        return f"LRFinderResult(suggested lr {found}, {len(self.lrs)} steps)"

    def y_range(self) -> tuple[float, float] | None:
        """The chart's loss axis: from the lowest loss to a little above the highest one before it (the starting
        loss, as a rule). The divergence that ends a sweep (losses of 15 after 2) would otherwise set the scale and
        flatten the part that matters; it leaves the chart at the top instead."""
        finite = [(i, v) for i, v in enumerate(self.losses) if math.isfinite(v)]
        if not finite:
            return None
        low_at, low = min(finite, key=lambda iv: iv[1])
        high = max(v for i, v in finite if i <= low_at)
        if high <= low:  # the loss never fell: show it whole
            high = max(v for _, v in finite)
        if high <= low:
            return (low - 1.0, low + 1.0)
        return (low - 0.02 * (high - low), high + 0.1 * (high - low))

    def chart_svg(self) -> str:
        """The losses (and the smoothed loss) over a log learning-rate axis, the suggestion marked."""
        from jupyter_llm.sinks.svg import line_chart_svg

        series = {"loss": list(zip(self.lrs, self.losses))}
        if len(self.losses) >= 2:
            series["smoothed"] = list(zip(self.lrs, smoothed(self.losses, self.smoothing)))
        marks = [(self.suggestion, f"suggested {self.suggestion:.1e}")] if self.suggestion else []
        return line_chart_svg(series, width=520, height=260, title="learning-rate range test",
                              xlabel="learning rate", log_x=True, y_range=self.y_range(), marks=marks)

    def _repr_html_(self):
        try:
            from jupyter_llm.sinks.svg import svg_img
        except ImportError:
            return None
        return f"<div>{svg_img(self.chart_svg(), 'learning-rate range test')}<p>{escape(repr(self))}</p></div>"

    def plot(self, ax=None):
        import matplotlib.pyplot as plt

        ax = ax or plt.gca()
        ax.plot(self.lrs, self.losses)
        ax.set_xscale("log")
        ax.set_xlabel("learning rate")
        ax.set_ylabel("loss")
        if self.suggestion:
            ax.axvline(self.suggestion, color="tab:red", linestyle="--", label=f"suggested {self.suggestion:.1e}")
            ax.legend()
        return ax


class _StepLosses:
    def __init__(self):
        self.points: list[tuple[int, float]] = []

    def on(self, event):
        if isinstance(event, ev.Progress) and "loss" in event.metrics:
            self.points.append((event.step, event.metrics["loss"]))


@in_callers_idiom
def lr_find(model: nnx.Module, data, *, min_lr: float = 1e-7, max_lr: float = 10.0, steps: int = 100,
            optimizer: str = "adam", batch_size: int = 32, seed: int = 0, smoothing: float = 0.9,
            **options) -> LRFinderResult:
    """Run the range test on `model` and `data` (any form `fit` accepts); the model is left unchanged."""
    from jupyter_llm.fitting.orchestrate import fit

    if not 0 < min_lr < max_lr:
        raise ConfigError(f"lr_find needs 0 < min_lr < max_lr, got min_lr={min_lr}, max_lr={max_lr}.")
    for name, value in (("min_lr", min_lr), ("max_lr", max_lr)):
        check_float32(f"lr_find's {name}", float(value), positive=True)
    if optimizer not in _OPTIMIZERS:
        raise ConfigError(f"lr_find optimizer must be one of {', '.join(_OPTIMIZERS)}, got {optimizer!r}.")
    if steps < 5:
        raise ConfigError(f"lr_find needs at least 5 steps, got {steps}.")
    ratio = max_lr / min_lr

    def schedule(count):
        return min_lr * ratio ** (jnp.minimum(count, steps - 1) / (steps - 1))

    snapshot = jax.tree.map(jnp.copy, nnx.state(model))  # every variable, RNG streams included
    adapted = adapted_layers(model)
    recorder = _StepLosses()
    from jupyter_llm.fitting.runlog import paused

    try:
        with paused():  # a range test is not a run to compare
            fit(model, data, optimizer=_OPTIMIZERS[optimizer](schedule), steps=steps, batch_size=batch_size, seed=seed,
                steps_per_dispatch=1, report_every=0.0, display="none", sinks=[recorder], **options)
    finally:
        remove_adapters(model, adapted_layers(model) - adapted)  # a range test with --lora adds none for good
        nnx.update(model, snapshot)
    lrs = [float(schedule(step - 1)) for step, _ in recorder.points]
    losses = [loss for _, loss in recorder.points]
    return LRFinderResult(lrs, losses, suggest(lrs, losses, smoothing), smoothing)


def smoothed(losses, smoothing: float = 0.9) -> list[float]:
    """The losses' exponential moving average, bias-corrected (its first value is the first loss)."""
    smooth, avg = [], 0.0
    for i, loss in enumerate(losses):
        avg = smoothing * avg + (1 - smoothing) * loss
        smooth.append(avg / (1 - smoothing ** (i + 1)))
    return smooth


def suggest(lrs, losses, smoothing: float = 0.9) -> float | None:
    """The learning rate where the smoothed loss falls fastest (per decade), before it starts to diverge."""
    if len(losses) < 5:
        return None
    smooth = np.asarray(smoothed(losses, smoothing))
    best = int(np.argmin(smooth))
    if best < 2:
        return None
    slopes = np.gradient(smooth[: best + 1], np.log10(np.asarray(lrs[: best + 1])))
    return float(lrs[int(np.argmin(slopes))])
