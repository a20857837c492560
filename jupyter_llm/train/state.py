"""TrainState: everything a training step changes, as one pytree (donated to each compiled call)."""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from flax import nnx


class TrainState(NamedTuple):
    params: Any  # nnx.State of the model's nnx.Param variables
    rest: Any  # nnx.State of everything else (RNG streams, batch statistics)
    opt_state: Any
    step: jax.Array  # int32: training steps completed
    bad_step: jax.Array  # int32: first step whose loss or new weights were not finite; -1 while none was
    skipped: jax.Array  # int32: non-finite updates skipped so far (--skip-nonfinite)


def split_model(model: nnx.Module, *, train: bool):
    """(graphdef, params, rest) of a train-mode or eval-mode view of `model`; the model itself is not changed."""
    flags = dict(deterministic=not train, use_running_average=not train)
    view = nnx.view(model, raise_if_not_found=False, **flags)
    return nnx.split(view, nnx.Param, ...)


def fresh_copy(tree):
    """Copy every array so donating the train state never deletes the buffers the user's model still holds."""
    return jax.tree.map(lambda a: a.copy() if isinstance(a, jax.Array) else a, tree)


def init_state(params, rest, optimizer, *, copy: bool = True) -> TrainState:
    """A fresh train state (`optimizer`: anything with `init(params)`, an `optim.Optimizer` or an optax
    transformation); `copy=False` only for abstract evaluation (`jax.eval_shape`), where nothing is donated."""
    if copy:
        params, rest = fresh_copy(params), fresh_copy(rest)
    return TrainState(params, rest, optimizer.init(params), jnp.zeros((), jnp.int32), jnp.full((), -1, jnp.int32),
                      jnp.zeros((), jnp.int32))


def count_params(params) -> int:
    return int(sum(getattr(x, "size", 0) for x in jax.tree.leaves(params)))
