"""The one training step, as a pure function: `step(state, batch, hyper) -> (state, metrics)`.

Everything that runs a model for training or evaluation goes through `Step`: the fast chunk and the careful redo
path (train/chunk.py) call the same `Step.__call__`, and evaluation calls `Step.evaluate`, so a loss, a metric, a
precision or an optimizer means the same thing on every path. `batch` is `(x, y, w)`: inputs, labels and per-example
weights (0 for the padding that fills an epoch's last batch). `hyper` holds the optimizer's numbers (the schedule's,
the clipping norm, the weight decay, the plateau scale: `train/optim.py`) as arguments, not constants of the program,
and with --augment the key data of the fit's seed (`augment_key`), from which each step draws its batch's changes.

The metrics are *sums* over the batch's examples (with `count`, their weight), so chunks and epochs add them up and
divide once. `finite` says whether the loss was finite; the caller decides what a non-finite step means.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax
from flax import nnx

from jupyter_llm.data.augment import batch_key
from jupyter_llm.train.flat_matmuls import flat_matmuls
from jupyter_llm.train.state import ALL_PARAMS, TrainState


def cast_floats(tree, dtype):
    """Floating-point leaves of `tree` as `dtype` (integers and PRNG keys untouched)."""
    return jax.tree.map(lambda a: a.astype(dtype) if jnp.issubdtype(getattr(a, "dtype", None) or jnp.int32,
                                                                     jnp.floating) else a, tree)


def health(grads, updates, params_before):
    """Gradient norm and update/parameter ratio: three passes over the weights, so sampled, not every step."""
    return (optax.tree.norm(grads),
            optax.tree.norm(updates) / jnp.maximum(optax.tree.norm(params_before), 1e-12))


def finite_state(state: TrainState):
    """True when every weight, optimizer moment and statistic of `state` is finite. One sum per array (a non-finite
    element makes it non-finite) is cheaper than an elementwise test."""
    leaves = [a for a in jax.tree.leaves((state.params, state.opt_state, state.rest))
              if jnp.issubdtype(a.dtype, jnp.floating)]
    return jnp.all(jnp.stack([jnp.isfinite(jnp.sum(a)) for a in leaves])) if leaves else jnp.array(True)


class Step:
    """A model's training step and evaluation batch, built from its split graph (train and eval mode views).

    `compute_dtype` (e.g. bfloat16): the forward and backward passes run in it on a cast copy of the weights, while
    the master weights, the optimizer and the loss stay in float32. `train_loss_fn` is what is differentiated (e.g.
    with label smoothing); the metrics report the plain `loss_fn`. `platform` picks the measures measured to help
    there (the 2-D matmul rewrite on XLA:CPU only; GPUs and TPUs fuse their own). `trainable` is the filter the
    state was split by (`train/state.py`): what it leaves out is carried through in `rest`, never differentiated.
    `augment` (data/augment.py) changes each training batch from a key of the seed and the step; never evaluation.
    """

    def __init__(self, graphdef_train, graphdef_eval, optimizer, loss_fn, metrics: dict, *, train_loss_fn=None,
                 compute_dtype=None, platform: str = "cpu", trainable=ALL_PARAMS, augment=None):
        self.graphdef_train, self.graphdef_eval = graphdef_train, graphdef_eval
        self.optimizer, self.loss_fn, self.metrics = optimizer, loss_fn, metrics
        self.train_loss_fn = train_loss_fn or loss_fn
        self.compute_dtype = compute_dtype
        self.trainable = trainable
        self.augment = augment
        self.names = ("loss", *metrics)
        self._forward = flat_matmuls(self._train_forward) if platform == "cpu" else self._train_forward

    # -- precision ---------------------------------------------------------------------------------------------
    def _lowered(self, tree):
        return tree if self.compute_dtype is None else cast_floats(tree, self.compute_dtype)

    def _as_f32(self, tree):
        return tree if self.compute_dtype is None else cast_floats(tree, jnp.float32)

    def _lowered_rest(self, rest):
        """`rest` with its frozen parameters (--freeze, the base under --lora) cast like the trained ones, so their
        matmuls run in the compute dtype too; its other state (RNG counts, batch statistics) is left as it is."""
        if self.compute_dtype is None:
            return rest
        frozen, other = nnx.split_state(rest, nnx.Param, ...)
        return nnx.merge_state(self._lowered(frozen), other)

    def _with_frozen_of(self, new_rest, rest):
        """The state after a call, with the frozen parameters of `rest` as they were (float32, never cast copies)."""
        if self.compute_dtype is None:
            return new_rest
        _, other = nnx.split_state(new_rest, nnx.Param, ...)
        frozen, _ = nnx.split_state(rest, nnx.Param, ...)
        return nnx.merge_state(frozen, other)

    # -- the pieces --------------------------------------------------------------------------------------------
    def _train_forward(self, params, rest, x):
        """The training-mode forward pass as a pure function: (outputs, state after the call). The state that is not
        a parameter (dropout's RNG counts, batch statistics) may change during the call."""
        model = nnx.merge(self.graphdef_train, params, self._lowered_rest(rest))
        out = model(x)
        return out, self._with_frozen_of(nnx.split(model, self.trainable, ...)[2], rest)

    def _sums(self, out, y, w) -> dict:
        sums = {"loss": jnp.sum(self.loss_fn(out, y) * w)}
        for name, fn in self.metrics.items():
            sums[name] = jnp.sum(fn(out, y) * w)
        sums["count"] = jnp.sum(w)
        return sums

    def lr(self, state: TrainState, hyper: dict):
        """The learning rate of the update `state` is about to take (None for a user's optax object)."""
        return self.optimizer.lr(state.step, hyper, jnp)

    # -- the step ----------------------------------------------------------------------------------------------
    def __call__(self, state: TrainState, batch, hyper: dict, *, lr=None, measure: bool = False):
        """One optimizer step, unchecked: (advanced state, metric sums with `finite`, and with `grad_norm` and
        `update_ratio` when `measure`). `lr`: the step's learning rate when the caller computed it already."""
        x, y, w = batch
        if self.augment is not None:
            x = self.augment(batch_key(hyper["augment_key"], state.step), x)
        wsum = jnp.sum(w)
        xc = self._lowered(x)

        def objective(params):
            out, rest = self._forward(self._lowered(params), state.rest, xc)
            out = self._as_f32(out)
            return jnp.sum(self.train_loss_fn(out, y) * w) / jnp.maximum(wsum, 1.0), (out, rest)

        (loss, (out, rest)), grads = jax.value_and_grad(objective, has_aux=True)(state.params)
        tx = self.optimizer.tx_for(self.lr(state, hyper) if lr is None else lr, hyper)
        updates, opt_state = tx.update(grads, state.opt_state, state.params)
        if not self.optimizer.scheduled:  # a user's optax object: the plateau scale multiplies its updates
            updates = jax.tree.map(lambda u: u * hyper["scale"].astype(u.dtype), updates)
        params = optax.apply_updates(state.params, updates)
        advanced = state._replace(params=params, rest=rest, opt_state=opt_state, step=state.step + 1)
        metrics = self._sums(jax.lax.stop_gradient(out), y, w)
        metrics["finite"] = jnp.isfinite(loss)
        if measure:
            metrics["grad_norm"], metrics["update_ratio"] = health(grads, updates, state.params)
        return advanced, metrics

    def evaluate(self, params, rest, batch) -> dict:
        """Metric sums of the eval-mode model on one batch."""
        x, y, w = batch
        out = self._as_f32(nnx.merge(self.graphdef_eval, self._lowered(params), self._lowered_rest(rest))(
            self._lowered(x)))
        return self._sums(out, y, w)

    def predict(self, params, rest, x):
        """The eval-mode model's outputs for `x` (float32)."""
        return self._as_f32(nnx.merge(self.graphdef_eval, self._lowered(params), self._lowered_rest(rest))(
            self._lowered(x)))
