"""The compiled steps: the only place `jax.jit` is applied to training code.

`train_chunk(state, data, idx, w, start, hyper)` runs up to K training steps in one dispatch, in one compiled loop:
it gathers each batch from device-resident data with the epoch's index plan, so there is no host-to-device copy per
step, and it returns the metric *sums* of those steps as small device arrays that the host reads only at the display
cadence. `hyper` holds the optimizer's numbers (the schedule's, the clipping norm, the weight decay, the plateau
scale: `train/optim.py`); each step computes its learning rate from them, so they are arguments, not constants of
the program.
A step whose example weights are all zero (padding at the end of an epoch), or whose loss or new state is not finite,
never reaches the weights, so they always hold the last finite update.

Two paths, two programs: the fast chunk runs the chunk's real steps with no per-step branch and tests once, at the
end, that every loss and the final state are finite (non-finite values persist in weights and optimizer moments). On
XLA:CPU a `lax.cond` per step, or a gradient norm per step, cost 30-60 % of a small model's step time. A chunk that
fails the test leaves the state where it started, marked `HELD`, and the host redoes it with `redo_chunk`, which
checks every step. That path is its own program, compiled only when a fit first needs it: inside the train chunk's
program it was a second copy of the step, which took 73 MB more memory to compile (the MNIST MLP: peak RSS after
compiling 820 -> 747 MB) and 0.9 s, in every fit, for a path most fits never take.
"""

from __future__ import annotations

from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
import optax
from flax import nnx

from jupyter_llm.data.plans import gather_rows
from jupyter_llm.train.flat_matmuls import flat_matmuls
from jupyter_llm.train.state import TrainState

Gather = Callable  # (data, idx[B]) -> (x, y)
HELD = -2  # `bad_step` of a state whose chunk awaits `redo_chunk`: chunks dispatched after it leave it alone


class StepFns(NamedTuple):
    train_chunk: Callable  # (state, data, idx[S,B], w[S,B], start, hyper) -> (state, sums); sums["held"]: redo it
    redo_chunk: Callable  # the same chunk step by step, from the state a held chunk left (compiled on first use)
    eval_split: Callable  # (params, rest, data, idx[S,B], w[S,B]) -> sums
    predict: Callable  # (params, rest, x) -> outputs
    metric_names: tuple


def cast_floats(tree, dtype):
    """Floating-point leaves of `tree` as `dtype` (integers and PRNG keys untouched)."""
    return jax.tree.map(lambda a: a.astype(dtype) if jnp.issubdtype(getattr(a, "dtype", None) or jnp.int32,
                                                                     jnp.floating) else a, tree)


def make_step_fns(graphdef_train, graphdef_eval, optimizer, loss_fn, metrics: dict, steps_per_dispatch: int, placement,
                  gather: Gather = gather_rows, skip_nonfinite: int = 0, train_loss_fn=None,
                  compute_dtype=None) -> StepFns:
    """Build and jit the steps. `placement` (train/sharding.py) fixes every input's and output's sharding.

    `compute_dtype` (e.g. bfloat16): the forward and backward passes run in it on a cast copy of the weights,
    while the master weights, the optimizer and the loss stay in float32.
    """
    names = ("loss", *metrics)

    def lowered(params, x):
        if compute_dtype is None:
            return params, x
        return cast_floats(params, compute_dtype), cast_floats(x, compute_dtype)

    def as_f32(out):
        return out if compute_dtype is None else cast_floats(out, jnp.float32)
    train_loss_fn = train_loss_fn or loss_fn  # e.g. with label smoothing; metrics report the plain loss
    rep, batch_sharding = placement.replicated, placement.batch

    def constrain(x):
        return x if batch_sharding is None else jax.lax.with_sharding_constraint(x, batch_sharding)

    def batch_sums(out, y, w):
        sums = {"loss": jnp.sum(loss_fn(out, y) * w)}
        for name, fn in metrics.items():
            sums[name] = jnp.sum(fn(out, y) * w)
        return sums

    def forward(params, rest, x):
        """The model's training forward pass as a pure function: (outputs, state after the call). The state
        that is not a parameter (dropout's RNG counts, batch statistics) may change during the call."""
        model = nnx.merge(graphdef_train, params, rest)
        out = model(x)
        return out, nnx.split(model, nnx.Param, ...)[2]

    if placement.mesh.devices.flat[0].platform == "cpu":  # measured to help on XLA:CPU only; GPUs fuse their own
        forward = flat_matmuls(forward)

    def forward_backward(state: TrainState, x, y, w, hyper, lr):
        """One optimizer step at learning rate `lr` (None for a user's optax object), unchecked: (advanced state,
        loss, grads, updates, metric sums)."""
        wsum = jnp.sum(w)
        compute_params, xc = lowered(state.params, x)

        def objective(params):
            out, rest = forward(params, state.rest, xc)
            out = as_f32(out)
            return jnp.sum(train_loss_fn(out, y) * w) / jnp.maximum(wsum, 1.0), (out, rest)

        (loss, (out, rest)), grads = jax.value_and_grad(objective, has_aux=True)(compute_params)
        grads = as_f32(grads)
        tx = optimizer.tx_for(lr, hyper)
        updates, opt_state = tx.update(grads, state.opt_state, state.params)
        if not optimizer.scheduled:  # a user's optax object: the plateau scale multiplies its updates
            updates = jax.tree.map(lambda u: u * hyper["scale"].astype(u.dtype), updates)
        params = optax.apply_updates(state.params, updates)
        advanced = state._replace(params=params, rest=rest, opt_state=opt_state, step=state.step + 1)
        sums = batch_sums(jax.lax.stop_gradient(out), y, w)
        sums["count"] = wsum
        return advanced, loss, grads, updates, sums

    def health(grads, updates, params_before):
        """Gradient norm and update/parameter ratio: three passes over the weights, so sampled, not per step."""
        return (optax.tree.norm(grads),
                optax.tree.norm(updates) / jnp.maximum(optax.tree.norm(params_before), 1e-12))

    def finite_state(state: TrainState):
        """True when every weight, optimizer moment and statistic of `state` is finite. One sum per array (a
        non-finite element makes it non-finite) is cheaper than an elementwise test."""
        leaves = [a for a in jax.tree.leaves((state.params, state.opt_state, state.rest))
                  if jnp.issubdtype(a.dtype, jnp.floating)]
        return jnp.all(jnp.stack([jnp.isfinite(jnp.sum(a)) for a in leaves])) if leaves else jnp.array(True)

    sum_names = (*names, "count", "grad_norm", "update_ratio", "measured")
    zero_sums = {k: jnp.zeros((), jnp.float32) for k in sum_names}

    def fast_chunk(state, data, idx_k, w_k, n_real, hyper):
        """The chunk's first `n_real` steps with no per-step branch: the common case (no padding inside the chunk,
        every loss finite). A loop with a dynamic trip count, so the short chunk at an epoch's end runs only its
        real steps. Returns whether every loss and the final state are finite; if not, the caller redoes the
        chunk carefully from the state it started with. The last step runs outside the loop so that its gradient
        health is measured without a branch or a carried copy of the gradients in every step."""
        lrs = optimizer.lr(state.step + jnp.arange(steps_per_dispatch), hyper, jnp)  # the chunk's, in one go

        def one(state, i):
            x, y = gather(data, idx_k[i])
            return forward_backward(state, constrain(x), constrain(y), constrain(w_k[i]), hyper,
                                    None if lrs is None else lrs[i])

        def record(rows, i, sums):  # per-step rows, summed at the end exactly as the careful chunk sums its own
            return {k: rows[k].at[i].set(sums[k].astype(jnp.float32)) for k in rows}

        def body(i, carry):
            state, rows, finite = carry
            state, loss, _, _, sums = one(state, i)
            return state, record(rows, i, sums), finite & jnp.isfinite(loss)

        rows = {k: jnp.zeros((steps_per_dispatch,), jnp.float32) for k in (*names, "count")}
        state, rows, finite = jax.lax.fori_loop(0, n_real - 1, body, (state, rows, jnp.array(True)))
        before = state.params
        state, loss, grads, updates, sums = one(state, n_real - 1)
        grad_norm, update_ratio = health(grads, updates, before)
        fine = finite & jnp.isfinite(loss) & finite_state(state)  # non-finite values persist: one test suffices
        sums = {k: jnp.sum(v) for k, v in record(rows, n_real - 1, sums).items()}
        sums.update(grad_norm=grad_norm, update_ratio=update_ratio, measured=jnp.float32(1.0))
        return state, sums, fine

    def careful_step(state: TrainState, x, y, w, measure, hyper):
        """A step that never lets a non-finite loss, weight or optimizer moment into the state."""
        new, loss, grads, updates, sums = forward_backward(state, x, y, w, hyper, optimizer.lr(state.step, hyper, jnp))
        unmeasured = lambda *_: (jnp.zeros((), jnp.float32), jnp.zeros((), jnp.float32))  # noqa: E731
        grad_norm, update_ratio = jax.lax.cond(measure, health, unmeasured, grads, updates, state.params)
        ok = jnp.isfinite(loss) & finite_state(new)
        # a non-finite step is skipped (up to --skip-nonfinite) or it stops the fit
        can_skip = state.skipped < skip_nonfinite
        held = state._replace(step=jnp.where(can_skip, state.step + 1, state.step),
                              skipped=state.skipped + can_skip.astype(jnp.int32),
                              bad_step=jnp.where(can_skip, state.bad_step, state.step + 1))
        new_state = jax.lax.cond(ok, lambda a, b: a, lambda a, b: b, new, held)
        sums = {k: jnp.where(ok, v, 0.0) for k, v in sums.items()}
        taken = ok & measure
        sums.update(grad_norm=jnp.where(taken, grad_norm, 0.0), update_ratio=jnp.where(taken, update_ratio, 0.0),
                    measured=jnp.where(taken, 1.0, 0.0))
        return new_state, sums

    def careful_chunk(state, data, idx_k, w_k, hyper):
        """K steps, each checked: padding steps (weight 0) are skipped, non-finite updates held back."""
        active = jnp.sum(w_k, axis=1) > 0
        last_active = jnp.max(jnp.where(active, jnp.arange(steps_per_dispatch), 0))

        def body(state, iw):
            i, wb, n = iw
            x, y = gather(data, i)
            go = (jnp.sum(wb) > 0) & (state.bad_step < 0)
            return jax.lax.cond(go, careful_step, lambda s, *_: (s, zero_sums), state, constrain(x), constrain(y),
                                constrain(wb), n == last_active, hyper)

        state, sums = jax.lax.scan(body, state, (idx_k, w_k, jnp.arange(steps_per_dispatch)))
        return state, {k: jnp.sum(v.astype(jnp.float32)) for k, v in sums.items()}

    def chunk_of(idx, w, start):
        return (jax.lax.dynamic_slice_in_dim(idx, start, steps_per_dispatch),
                jax.lax.dynamic_slice_in_dim(w, start, steps_per_dispatch))

    def with_counters(state, sums, held):
        return state, {**sums, "bad_step": state.bad_step, "step": state.step, "skipped": state.skipped,
                       "held": held}

    def train_chunk(state, data, idx, w, start, hyper):
        idx_k, w_k = chunk_of(idx, w, start)
        real = jnp.sum(w_k, axis=1) > 0  # steps with any example weight
        n_real = jnp.sum(real.astype(jnp.int32))
        # nothing to do: padding only, a fit that has stopped, or a state held for an earlier chunk's redo
        idle = (n_real == 0) | (state.bad_step != -1)
        fast_state, fast_sums, fine = fast_chunk(state, data, idx_k, w_k, jnp.maximum(n_real, 1), hyper)
        # the fast chunk holds when every step and the final state are finite and the real steps come first
        # (padding only ever ends an epoch or a step-limited fit); anything else is redone step by step
        ok = fine & jnp.all(real == (jnp.arange(steps_per_dispatch) < n_real)) & ~idle
        held = ~ok & ~idle
        kept = state._replace(bad_step=jnp.where(held, HELD, state.bad_step).astype(state.bad_step.dtype))
        state, sums = jax.lax.cond(ok, lambda: (fast_state, fast_sums), lambda: (kept, zero_sums))
        return with_counters(state, sums, held)

    def redo_chunk(state, data, idx, w, start, hyper):
        """The chunk a held state is waiting for, every step checked."""
        state = state._replace(bad_step=jnp.full_like(state.bad_step, -1))
        state, sums = careful_chunk(state, data, *chunk_of(idx, w, start), hyper)
        return with_counters(state, sums, jnp.array(False))

    def eval_split(params, rest, data, idx, w):
        model = nnx.merge(graphdef_eval, lowered(params, None)[0], rest)

        def body(acc, iw):
            i, wb = iw
            x, y = gather(data, i)
            sums = batch_sums(as_f32(model(lowered(params, constrain(x))[1])), constrain(y), constrain(wb))
            sums["count"] = jnp.sum(wb)
            return {k: acc[k] + v for k, v in sums.items()}, None

        init = {k: jnp.zeros((), jnp.float32) for k in (*names, "count")}
        return jax.lax.scan(body, init, (idx, w))[0]

    def predict(params, rest, x):
        params, x = lowered(params, x)
        return as_f32(nnx.merge(graphdef_eval, params, rest)(x))

    return StepFns(
        train_chunk=jax.jit(train_chunk, donate_argnums=0, in_shardings=rep, out_shardings=rep),
        redo_chunk=jax.jit(redo_chunk, donate_argnums=0, in_shardings=rep, out_shardings=rep),
        eval_split=jax.jit(eval_split, in_shardings=rep, out_shardings=rep),
        predict=jax.jit(predict),
        metric_names=names,
    )
