"""Steps per compiled call: the only place `jax.jit` is applied to training code.

`train(state, data, idx, w, start, hyper)` runs up to K steps of `Step` in one dispatch, in one compiled loop: it
gathers each batch from device-resident data with the epoch's index plan, so no batch crosses from the host, and it
returns the metric *sums* of those steps as small device arrays that the host reads only at the display cadence. The
shardings of the state, the data and every batch come from the `Layout` (train/layout.py).
A step whose example weights are all zero (padding at the end of an epoch), or whose loss or new state is not finite,
never reaches the weights, so they always hold the last finite update.

Two paths, two programs: the fast chunk runs the chunk's real steps with no per-step branch and tests once, at the
end, that every loss and the final state are finite (non-finite values persist in weights and optimizer moments). On
XLA:CPU a `lax.cond` per step, or a gradient norm per step, cost 30-60 % of a small model's step time. A chunk that
fails the test leaves the state where it started, marked `HELD`, and the host redoes it with `redo`, which checks
every step. That path is its own program, compiled only when a fit first needs it: inside the train chunk's program
it was a second copy of the step, which took 73 MB more memory to compile (the MNIST MLP: peak RSS after compiling
820 -> 747 MB) and 0.9 s, in every fit, for a path most fits never take.
"""

from __future__ import annotations

from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp

from jupyter_llm.data.plans import gather_rows
from jupyter_llm.train.layout import Layout
from jupyter_llm.train.state import TrainState
from jupyter_llm.train.step import Step, finite_state

Gather = Callable  # (data, idx[B]) -> (x, y)
HELD = -2  # `bad_step` of a state whose chunk awaits `redo`: chunks dispatched after it leave it alone
SUM_NAMES_EXTRA = ("count", "grad_norm", "update_ratio", "measured")


class Chunks(NamedTuple):
    train: Callable  # (state, data, idx[S,B], w[S,B], start, hyper) -> (state, sums); sums["held"]: redo it
    redo: Callable  # the same chunk step by step, from the state a held chunk left (compiled on first use)
    evaluate: Callable  # (params, rest, data, idx[S,B], w[S,B]) -> sums
    predict: Callable  # (params, rest, x) -> outputs
    metric_names: tuple


def make_chunks(step: Step, layout: Layout, state_like, steps_per_dispatch: int, gather: Gather = gather_rows,
                skip_nonfinite: int = 0) -> Chunks:
    """Jit K-step chunks of `step`. `state_like`: the train state (or its shapes), for its shardings."""
    names, k = step.names, steps_per_dispatch
    zero_sums = {n: jnp.zeros((), jnp.float32) for n in (*names, *SUM_NAMES_EXTRA)}

    def batch(data, idx, w):
        x, y = gather(data, idx)
        return layout.constrain_batch(x), layout.constrain_batch(y), layout.constrain_batch(w)

    def fast(state, data, idx_k, w_k, n_real, hyper):
        """The chunk's first `n_real` steps with no per-step branch: the common case (no padding inside the chunk,
        every loss finite). A loop with a dynamic trip count, so the short chunk at an epoch's end runs only its
        real steps. Returns whether every loss and the final state are finite; if not, the caller redoes the chunk
        carefully from the state it started with. The last step runs outside the loop so that its gradient health
        is measured without a branch or a carried copy of the gradients in every step."""
        lrs = step.optimizer.lr(state.step + jnp.arange(k), hyper, jnp)  # the chunk's learning rates, in one go

        def one(state, i, measure=False):
            return step(state, batch(data, idx_k[i], w_k[i]), hyper, lr=None if lrs is None else lrs[i],
                        measure=measure)

        def record(rows, i, sums):  # per-step rows, summed at the end exactly as the careful chunk sums its own
            return {n: rows[n].at[i].set(sums[n].astype(jnp.float32)) for n in rows}

        def body(i, carry):
            state, rows, finite = carry
            state, sums = one(state, i)
            return state, record(rows, i, sums), finite & sums["finite"]

        rows = {n: jnp.zeros((k,), jnp.float32) for n in (*names, "count")}
        state, rows, finite = jax.lax.fori_loop(0, n_real - 1, body, (state, rows, jnp.array(True)))
        state, sums = one(state, n_real - 1, measure=True)
        fine = finite & sums["finite"] & finite_state(state)  # non-finite values persist: one test suffices
        out = {n: jnp.sum(v) for n, v in record(rows, n_real - 1, sums).items()}
        out.update(grad_norm=sums["grad_norm"], update_ratio=sums["update_ratio"], measured=jnp.float32(1.0))
        return state, out, fine

    def careful_step(state: TrainState, b, hyper):
        """A step that never lets a non-finite loss, weight or optimizer moment into the state: it is skipped (up to
        --skip-nonfinite) or it stops the fit. Every careful step is measured: this path is rare, not hot."""
        new, sums = step(state, b, hyper, measure=True)
        ok = sums.pop("finite") & finite_state(new)
        can_skip = state.skipped < skip_nonfinite
        held = state._replace(step=jnp.where(can_skip, state.step + 1, state.step),
                              skipped=state.skipped + can_skip.astype(jnp.int32),
                              bad_step=jnp.where(can_skip, state.bad_step, state.step + 1))
        new_state = jax.lax.cond(ok, lambda a, b: a, lambda a, b: b, new, held)
        sums = {n: jnp.where(ok, v, 0.0).astype(jnp.float32) for n, v in sums.items()}
        sums["measured"] = jnp.where(ok, 1.0, 0.0).astype(jnp.float32)
        return new_state, sums

    def careful(state, data, idx_k, w_k, hyper):
        """K steps, each checked: padding steps (weight 0) are skipped, non-finite updates held back."""
        def body(state, iw):
            i, wb = iw
            go = (jnp.sum(wb) > 0) & (state.bad_step < 0)
            return jax.lax.cond(go, careful_step, lambda s, *_: (s, zero_sums), state, batch(data, i, wb), hyper)

        state, sums = jax.lax.scan(body, state, (idx_k, w_k))
        return state, {n: jnp.sum(v) for n, v in sums.items()}

    def chunk_of(idx, w, start):
        return jax.lax.dynamic_slice_in_dim(idx, start, k), jax.lax.dynamic_slice_in_dim(w, start, k)

    def with_counters(state, sums, held):
        return state, {**sums, "bad_step": state.bad_step, "step": state.step, "skipped": state.skipped,
                       "held": held}

    def train(state, data, idx, w, start, hyper):
        idx_k, w_k = chunk_of(idx, w, start)
        real = jnp.sum(w_k, axis=1) > 0  # steps with any example weight
        n_real = jnp.sum(real.astype(jnp.int32))
        # nothing to do: padding only, a fit that has stopped, or a state held for an earlier chunk's redo
        idle = (n_real == 0) | (state.bad_step != -1)
        fast_state, fast_sums, fine = fast(state, data, idx_k, w_k, jnp.maximum(n_real, 1), hyper)
        # the fast chunk holds when every step and the final state are finite and the real steps come first
        # (padding only ever ends an epoch or a step-limited fit); anything else is redone step by step
        ok = fine & jnp.all(real == (jnp.arange(k) < n_real)) & ~idle
        held = ~ok & ~idle
        kept = state._replace(bad_step=jnp.where(held, HELD, state.bad_step).astype(state.bad_step.dtype))
        state, sums = jax.lax.cond(ok, lambda: (fast_state, fast_sums), lambda: (kept, zero_sums))
        return with_counters(state, sums, held)

    def redo(state, data, idx, w, start, hyper):
        """The chunk a held state is waiting for, every step checked."""
        state = state._replace(bad_step=jnp.full_like(state.bad_step, -1))
        state, sums = careful(state, data, *chunk_of(idx, w, start), hyper)
        return with_counters(state, sums, jnp.array(False))

    def evaluate(params, rest, data, idx, w):
        def body(acc, iw):
            sums = step.evaluate(params, rest, batch(data, *iw))
            return {n: acc[n] + v for n, v in sums.items()}, None

        init = {n: jnp.zeros((), jnp.float32) for n in (*names, "count")}
        return jax.lax.scan(body, init, (idx, w))[0]

    state_sh, rep = layout.state_shardings(state_like), layout.replicated
    train_in = (state_sh, rep, rep, rep, rep, rep)
    eval_in = (state_sh.params, state_sh.rest, rep, rep, rep)
    return Chunks(
        train=jax.jit(train, donate_argnums=0, in_shardings=train_in, out_shardings=(state_sh, rep)),
        redo=jax.jit(redo, donate_argnums=0, in_shardings=train_in, out_shardings=(state_sh, rep)),
        evaluate=jax.jit(evaluate, in_shardings=eval_in, out_shardings=rep),
        predict=jax.jit(step.predict),
        metric_names=names,
    )
