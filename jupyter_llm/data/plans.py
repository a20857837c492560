"""Index plans: which rows make each batch of an epoch, and the batch gathered from them.

They describe the data, not the training, so they live in data/ (data/sources.py hands them to the compiled step,
where the plan is made and the batch gathered on the device: no batch crosses from the host).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from jupyter_llm.data.in_place import take_rows
from jupyter_llm.data.shuffle import permutation


def gather_rows(data, idx):
    """Batch from in-memory arrays: rows `idx` of x and y (either may be an `InPlaceRows`). Data `(x, y, rows)` is
    a `Subset` of x and y: `idx` counts its rows, and `rows` maps them to rows of x and y."""
    x, y, *rows = data
    if rows:
        idx = rows[0][idx]
    return take_rows(x, idx), take_rows(y, idx)


def epoch_plan(key, epoch, *, n: int, batch_size: int, padded_steps: int, step_limit):
    """Index plan of one epoch: a permutation of `n` examples cut into `padded_steps` batches.

    Weights are 0 for padding past the data and for steps at or beyond `step_limit` (a fit given in steps), so
    every chunk has the same shape and one compiled program serves every epoch.
    """
    perm = permutation(jax.random.fold_in(key, epoch), n)  # no sort: 1 ms for 60,000 examples, not 32
    pos = jnp.arange(padded_steps * batch_size)
    idx = perm[pos % n].reshape(padded_steps, batch_size)
    w = ((pos < n) & (pos // batch_size < step_limit)).astype(jnp.float32).reshape(padded_steps, batch_size)
    return idx, w


def ordered_plan(n: int, batch_size: int):
    """Index plan for evaluation: every example once, in order, the last batch padded with weight 0."""
    steps = -(-n // batch_size)
    pos = jnp.arange(steps * batch_size)
    return (pos % n).reshape(steps, batch_size), (pos < n).astype(jnp.float32).reshape(steps, batch_size)
