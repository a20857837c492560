"""The Optax chain for a FitConfig: optimizer by name, learning-rate schedule, weight decay, clipping, accumulation.

Weight decay applies to weight matrices only (ndim >= 2), not to biases or norm scales, as nanoGPT and most
recipes do: decoupled for adamw, an L2 term added to the gradient for the others. Reduce-on-plateau is not part of
the chain: it is a scale the loop keeps in the train state (`lr_scale`), so no optimizer state is rewritten.
"""

from __future__ import annotations

import jax
import optax

from jupyter_llm.errors import ConfigError


def _decay_mask(params):
    return jax.tree.map(lambda p: getattr(p, "ndim", 0) >= 2, params)


def make_schedule(config, total_updates: int):
    """An optax schedule (a pure function of the update count) for the named schedule, with linear warm-up."""
    lr, floor = config.lr, config.min_lr
    warmup = int(config.warmup * total_updates) if 0 < config.warmup < 1 else int(config.warmup)
    if warmup >= total_updates and config.warmup:
        raise ConfigError(f"--warmup {config.warmup} covers all {total_updates} updates of the fit; use fewer warm-up "
                          "steps (or a fraction such as 0.1).")
    rest = max(total_updates - warmup, 1)
    name = config.schedule
    if name == "onecycle":
        return optax.cosine_onecycle_schedule(total_updates, lr, pct_start=max(warmup / total_updates, 0.05) if
                                              warmup else 0.3, final_div_factor=lr / floor if floor else 1e4)
    if name == "constant":
        main = optax.constant_schedule(lr)
    elif name == "cosine":
        main = optax.cosine_decay_schedule(lr, rest, alpha=floor / lr)
    elif name == "exponential":
        end = max(floor, lr * config.decay_factor)
        main = optax.exponential_decay(lr, rest, decay_rate=end / lr, end_value=end)
    elif name == "step":
        every = config.decay_every or max(rest // 3, 1)
        boundaries = {b: config.decay_factor for b in range(every, rest, every)}
        main = optax.piecewise_constant_schedule(lr, boundaries)
        if floor:
            main = _floored(main, floor)
    else:  # guarded by FitConfig
        raise ConfigError(f"Unknown schedule {name!r}.")
    if not warmup:
        return main
    return optax.join_schedules([optax.linear_schedule(lr / max(warmup, 1), lr, warmup), main], [warmup])


def _floored(schedule, floor):
    import jax.numpy as jnp

    return lambda count: jnp.maximum(schedule(count), floor)


def make_optimizer(config, total_steps: int):
    """(tx, schedule): the optax transformation and the learning rate as a function of the update count
    (None for a user's optax object, whose learning rate we cannot see)."""
    opt = config.optimizer
    schedule = None
    if isinstance(opt, optax.GradientTransformation):
        tx = opt
    elif isinstance(opt, str):
        updates = max(total_steps // config.accumulate, 1)
        schedule = make_schedule(config, updates)
        wd = config.weight_decay
        if opt == "adamw":
            tx = optax.adamw(schedule, b1=config.momentum, b2=config.beta2, weight_decay=wd, mask=_decay_mask)
        else:
            base = {
                "sgd": lambda: optax.sgd(schedule),
                "momentum": lambda: optax.sgd(schedule, momentum=config.momentum),
                "adam": lambda: optax.adam(schedule, b1=config.momentum, b2=config.beta2),
            }[opt]()
            tx = optax.chain(optax.add_decayed_weights(wd, mask=_decay_mask), base) if wd else base
    else:
        raise ConfigError(f"optimizer must be a name or an optax.GradientTransformation, got {type(opt).__name__}.")
    if config.clip is not None:
        tx = optax.chain(optax.clip_by_global_norm(config.clip), tx)
    if config.accumulate > 1:
        tx = optax.MultiSteps(tx, every_k_schedule=config.accumulate)
    return tx, schedule


def optimizer_key(config, total_steps: int):
    """Hashable identity of the optimizer, for reusing compiled steps across fits in one session."""
    if isinstance(config.optimizer, str):
        return (config.optimizer, config.lr, config.momentum, config.beta2, config.weight_decay, config.clip,
                config.schedule,
                config.warmup, config.min_lr, config.decay_every, config.decay_factor, config.accumulate, total_steps)
    return (id(config.optimizer), config.clip, config.accumulate)
