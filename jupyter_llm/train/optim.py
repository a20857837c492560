"""The Optax chain for a FitConfig: optimizer by name, learning-rate schedule, weight decay, clipping, accumulation.

The chain's *structure* (which optimizer, whether it clips, decays or accumulates) shapes the optimizer's state and
the compiled step; its *numbers* — the learning rate of each update (from `train/schedule.py`), the clipping norm,
the weight decay and the plateau scale — are `hyper`, an argument of the compiled step. The step builds the chain
from them at each update (`tx_for(lr, hyper)`), so a fit with another `--lr`, `--clip`, `--weight-decay`, schedule
or length reuses the compiled program, and a running fit can be given new numbers without recompiling.

Weight decay applies to weight matrices only (ndim >= 2), not to biases or norm scales, as nanoGPT and most
recipes do: decoupled for adamw, an L2 term added to the gradient for the others. Reduce-on-plateau multiplies the
learning rate by `hyper["scale"]`, which the loop owns (and a checkpoint's position keeps).
"""

from __future__ import annotations

from typing import Callable, NamedTuple

import jax
import optax

from jupyter_llm.errors import ConfigError
from jupyter_llm.train.schedule import learning_rate, schedule_numbers


class Optimizer(NamedTuple):
    tx_for: Callable  # (lr, hyper) -> optax.GradientTransformation; lr is None for a user's own optax object
    hyper: dict  # the numbers the compiled step receives: the schedule's, "scale", "clip", "weight_decay"
    key: tuple  # what shapes the optimizer's state and the compiled step (for reusing it across fits)
    accumulate: int
    scheduled: bool  # the learning rate comes from the schedule (a named optimizer), not from the user's object

    def init(self, params):
        return self.tx_for(0.0 if self.scheduled else None, self.hyper).init(params)

    def lr(self, step, hyper: dict, xp):
        """The learning rate of the update made at micro-step `step` (None for a user's optax object)."""
        if not self.scheduled:
            return None
        return learning_rate(step // self.accumulate, hyper, xp) * hyper["scale"]


def _decay_mask(params):
    return jax.tree.map(lambda p: getattr(p, "ndim", 0) >= 2, params)


def make_optimizer(config, total_steps: int) -> Optimizer:
    opt, clip, wd, accumulate = config.optimizer, config.clip, config.weight_decay, config.accumulate
    hyper = {"scale": 1.0, "clip": float(clip or 0.0), "weight_decay": float(wd)}
    if isinstance(opt, optax.GradientTransformation):
        base, key = (lambda lr, hp: opt), (id(opt),)
    elif isinstance(opt, str):
        hyper.update(schedule_numbers(config, max(total_steps // accumulate, 1)))
        b1, b2 = config.momentum, config.beta2
        if opt == "adamw":
            def base(lr, hp):
                return optax.adamw(lr, b1=b1, b2=b2, weight_decay=hp["weight_decay"], mask=_decay_mask)
        else:
            plain = {
                "sgd": lambda lr: optax.sgd(lr),
                "momentum": lambda lr: optax.sgd(lr, momentum=b1),
                "adam": lambda lr: optax.adam(lr, b1=b1, b2=b2),
            }[opt]
            if wd:  # structure: adding the decay term (its value is a number of `hyper`)
                def base(lr, hp):
                    return optax.chain(optax.add_decayed_weights(hp["weight_decay"], mask=_decay_mask), plain(lr))
            else:
                def base(lr, hp):
                    return plain(lr)
        key = (opt, b1, b2, bool(wd) or opt == "adamw")
    else:
        raise ConfigError(f"optimizer must be a name or an optax.GradientTransformation, got {type(opt).__name__}.")

    def tx_for(lr, hp):
        tx = base(lr, hp)
        if clip is not None:
            tx = optax.chain(optax.clip_by_global_norm(hp["clip"]), tx)
        if accumulate > 1:
            tx = optax.MultiSteps(tx, every_k_schedule=accumulate)
        return tx

    return Optimizer(tx_for, hyper, (*key, clip is not None, accumulate), accumulate, isinstance(opt, str))
