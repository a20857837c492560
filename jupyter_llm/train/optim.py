"""The Optax chain for a FitConfig: optimizer by name, weight decay, gradient clipping.

Weight decay applies to weight matrices only (ndim >= 2), not to biases or norm scales, as nanoGPT and most
recipes do: decoupled for adamw, an L2 term added to the gradient for the others.
"""

from __future__ import annotations

import jax
import optax

from jupyter_llm.errors import ConfigError


def _decay_mask(params):
    return jax.tree.map(lambda p: getattr(p, "ndim", 0) >= 2, params)


def make_optimizer(config) -> optax.GradientTransformation:
    opt = config.optimizer
    if isinstance(opt, optax.GradientTransformation):
        tx = opt
    elif isinstance(opt, str):
        lr, wd = config.lr, config.weight_decay
        if opt == "adamw":
            tx = optax.adamw(lr, b1=config.momentum, weight_decay=wd, mask=_decay_mask)
        else:
            base = {
                "sgd": lambda: optax.sgd(lr),
                "momentum": lambda: optax.sgd(lr, momentum=config.momentum),
                "adam": lambda: optax.adam(lr, b1=config.momentum),
            }[opt]()
            tx = optax.chain(optax.add_decayed_weights(wd, mask=_decay_mask), base) if wd else base
    else:
        raise ConfigError(f"optimizer must be a name or an optax.GradientTransformation, got {type(opt).__name__}.")
    if config.clip is not None:
        tx = optax.chain(optax.clip_by_global_norm(config.clip), tx)
    return tx


def optimizer_key(config):
    """Hashable identity of the optimizer, for reusing compiled steps across fits in one session."""
    if isinstance(config.optimizer, str):
        return (config.optimizer, config.lr, config.momentum, config.weight_decay, config.clip)
    return (id(config.optimizer), config.clip)
