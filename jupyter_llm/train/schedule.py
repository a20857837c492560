"""The learning rate as a pure function of the update count and a few numbers the compiled step receives.

One definition serves the device (jnp, inside the compiled step) and the host (numpy, for the display and the
history), so the two never disagree. Every number of the schedule — `--lr`, `--warmup`, `--min-lr`, the length of
the fit, even which schedule — is an argument of the compiled step, not a constant baked into it: changing them
between two runs of a cell reuses the compiled program. Each schedule gives the values of its Optax counterpart
(`optax.cosine_decay_schedule`, `exponential_decay`, `piecewise_constant_schedule`, `cosine_onecycle_schedule`,
with `linear_schedule` warm-up joined in front; tests compare them).
"""

from __future__ import annotations

import math

import numpy as np

from jupyter_llm.config import FLOAT32_MAX, FLOAT32_TINY
from jupyter_llm.errors import ConfigError

KINDS = ("constant", "cosine", "exponential", "step", "onecycle")
ONECYCLE_DIV = 25.0  # the first and the last learning rate of onecycle are the peak / 25 and / (25 * final_div)


def schedule_numbers(config, total_updates: int) -> dict[str, float]:
    """The numbers that define the schedule of `config` over `total_updates` optimizer updates."""
    lr, floor, name = float(config.lr), float(config.min_lr), config.schedule
    warmup = int(config.warmup * total_updates) if 0 < config.warmup < 1 else int(config.warmup)
    if warmup >= total_updates and config.warmup:
        raise ConfigError(f"--warmup {config.warmup} covers all {total_updates} updates of the fit; use fewer warm-up "
                          "steps (or a fraction such as 0.1).")
    rest = max(total_updates - warmup, 1)
    every = config.decay_every or max(rest // 3, 1)
    end = max(floor, lr * config.decay_factor)
    pct = max(warmup / total_updates, 0.05) if warmup else 0.3
    return {
        "kind": float(KINDS.index(name)), "lr": lr, "floor": floor, "warmup": float(warmup), "rest": float(rest),
        "decay_rate": end / lr, "end": end, "factor": float(config.decay_factor), "every": float(every),
        "bounds": float(len(range(every, rest, every))), "total": float(total_updates),
        "rise": float(int(pct * total_updates)), "final_div": lr / floor if floor else 1e4,
    }


def learning_rate(count, n: dict, xp=np):
    """The learning rate at update `count` (an array) for the numbers `n`, computed with `xp` (numpy or jax.numpy).
    Every schedule is evaluated and the chosen one selected: a few scalar operations per step."""
    c = xp.asarray(count).astype(xp.float32) if xp is not np else np.asarray(count, np.float64)
    lr, warm, rest = n["lr"], n["warmup"], n["rest"]
    t = xp.maximum(c - warm, 0.0)  # the count within the schedule after the warm-up
    decayed = xp.minimum(t, rest) / rest
    alpha = n["floor"] / lr
    cosine = lr * ((1 - alpha) * 0.5 * (1 + xp.cos(math.pi * decayed)) + alpha)
    exponential = xp.maximum(lr * n["decay_rate"] ** (t / rest), n["end"])
    decays = (t - xp.mod(t, n["every"])) / n["every"]  # exact for whole numbers, where floor(t / every) rounds
    step = xp.maximum(lr * n["factor"] ** xp.minimum(decays, n["bounds"]), n["floor"])
    main = xp.where(n["kind"] == 1, cosine, xp.where(n["kind"] == 2, exponential,
                                                     xp.where(n["kind"] == 3, step, lr)))
    first = lr / xp.maximum(warm, 1.0)
    warming = first + (lr - first) * xp.minimum(c, warm) / xp.maximum(warm, 1.0)
    main = xp.where(c < warm, warming, main)
    return xp.where(n["kind"] == 4, _onecycle(c, n, xp), main)


def _onecycle(c, n: dict, xp):
    """Cosine up from lr / 25 to lr over the first `rise` updates, then down to lr / (25 * final_div) at `total`."""
    start, peak, rise, total = n["lr"] / ONECYCLE_DIV, n["lr"], n["rise"], n["total"]
    low = start / n["final_div"]
    up = peak + (start - peak) / 2.0 * (xp.cos(math.pi * c / xp.maximum(rise, 1.0)) + 1)
    down = low + (peak - low) / 2.0 * (xp.cos(math.pi * (c - rise) / xp.maximum(total - rise, 1.0)) + 1)
    return xp.where(c < rise, up, xp.where(c < total, down, low))


def scale_for(lr: float, base: float) -> float | None:
    """The multiplier that turns the schedule's rate `base` into `lr` (how `run.set(lr=...)` acts, so the schedule
    goes on in proportion); None where none does: a rate of 0 stays 0 whatever it is multiplied by, and the device
    computes in float32, where a rate below its smallest normal number is 0 too, or the multiplier infinite."""
    if not base >= FLOAT32_TINY:
        return None
    scale = lr / base
    return scale if scale <= FLOAT32_MAX else None
