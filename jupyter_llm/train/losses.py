"""Losses and metrics as per-example functions `(outputs, labels) -> [batch]`.

Per-example values let the step weight every example (padding of the last batch gets weight 0), so epoch means are
exact. Outputs with extra dimensions (a language model's (B, T, V) logits) are averaged over them per example.

Integer sequence labels (B, T) may hold -1, IGNORED: a position no loss or accuracy counts (the prompt of an
instruction example, the padding after it; `data/instructions.py`). The value of such an example is the mean over its
labelled positions, 0 when it has none. One label per example (classification) has no such marker: those labels are
checked to lie in [0, classes) before a fit, and their loss is computed as before, at the same cost.
"""

from __future__ import annotations

import math
from typing import Callable

import jax
import jax.numpy as jnp
import optax

from jupyter_llm.data.dataset import IGNORED
from jupyter_llm.errors import ConfigError, DataError

LossFn = Callable[[jax.Array, jax.Array], jax.Array]


def _per_example(values: jax.Array) -> jax.Array:
    return values.reshape(values.shape[0], -1).mean(axis=1) if values.ndim > 1 else values


def _labelled_mean(values: jax.Array, labels: jax.Array) -> jax.Array:
    """Per example, the mean of `values` over the positions whose integer label is not negative (0 if none)."""
    keep = (labels > IGNORED).reshape(labels.shape[0], -1)
    values = jnp.where(keep, values.reshape(values.shape[0], -1), 0.0)  # where, not *: 0 * inf would be NaN
    return values.sum(axis=1) / jnp.maximum(keep.sum(axis=1), 1).astype(values.dtype)


def _is_sequence(labels) -> bool:
    """Integer labels with positions (B, T, ...): the ones that may hold IGNORED."""
    return labels.ndim > 1 and jnp.issubdtype(labels.dtype, jnp.integer)


def cross_entropy(logits, labels):
    """Softmax cross-entropy with integer class labels (negative ones ignored in sequences), or one-hot / soft labels
    of the logits' shape."""
    if labels.shape == logits.shape and jnp.issubdtype(labels.dtype, jnp.floating):
        return _per_example(optax.softmax_cross_entropy(logits, labels))
    if _is_sequence(labels):
        labels = labels.astype(jnp.int32)
        values = optax.softmax_cross_entropy_with_integer_labels(logits, jnp.maximum(labels, 0))
        return _labelled_mean(values, labels)
    return _per_example(optax.softmax_cross_entropy_with_integer_labels(logits, labels.astype(jnp.int32)))


def mse(outputs, targets):
    """Mean squared error per example (targets broadcast to the outputs' shape when they have as many values)."""
    targets = _align(targets, outputs)
    return _per_example(jnp.square(outputs - targets))


def binary_cross_entropy(logits, labels):
    """Sigmoid cross-entropy on logits with 0/1 labels."""
    labels = _align(labels, logits).astype(logits.dtype)
    return _per_example(optax.sigmoid_binary_cross_entropy(logits, labels))


def accuracy(logits, labels):
    """Fraction of correct arg-max predictions (integer or one-hot labels)."""
    if labels.shape == logits.shape:
        labels = jnp.argmax(labels, axis=-1)
    elif _is_sequence(labels):
        return _labelled_mean((jnp.argmax(logits, axis=-1) == labels).astype(jnp.float32), labels)
    return _per_example((jnp.argmax(logits, axis=-1) == labels).astype(jnp.float32))


def binary_accuracy(logits, labels):
    """Fraction of labels on the logit's side of 0 (0/1 labels, one logit each)."""
    labels = _align(labels, logits)
    return _per_example(((logits > 0) == (labels > 0.5)).astype(jnp.float32))


def _align(labels, outputs):
    if labels.shape != outputs.shape and labels.size == outputs.size:
        return labels.reshape(outputs.shape)
    return labels


LOSSES: dict[str, LossFn] = {
    "cross_entropy": cross_entropy,
    "mse": mse,
    "binary_cross_entropy": binary_cross_entropy,
}
METRICS_FOR_LOSS: dict[str, dict[str, LossFn]] = {
    "cross_entropy": {"accuracy": accuracy},
    "binary_cross_entropy": {"accuracy": binary_accuracy},
    "mse": {},
}


def infer_loss_name(y, output_shape, task: str | None) -> str:
    """Pick a loss from the labels and the model's output when the user named none."""
    if task == "binary":
        return "binary_cross_entropy"
    if task == "regression":
        return "mse"
    if jnp.issubdtype(y.dtype, jnp.integer):
        return "binary_cross_entropy" if output_shape[-1] == 1 else "cross_entropy"
    if tuple(y.shape[1:]) == tuple(output_shape[1:]) and y.ndim >= 2 and output_shape[-1] > 1:
        if _looks_like_distributions(y):
            return "cross_entropy"  # one-hot or soft labels
    return "mse"


def resolve_loss(loss, y, output_shape, task) -> tuple[str, LossFn, dict[str, LossFn]]:
    """(name, per-example loss, metrics) for a loss name, a callable, or None (inferred)."""
    if loss is None:
        loss = infer_loss_name(y, output_shape, task)
    if callable(loss):
        name = getattr(loss, "__name__", "loss")
        return name, per_example_fn(loss, name), {}
    if loss not in LOSSES:
        raise ConfigError(f"Unknown loss {loss!r}; use one of {', '.join(LOSSES)} or a callable.")
    return loss, LOSSES[loss], METRICS_FOR_LOSS[loss]


def smoothed(loss_fn: LossFn, smoothing: float) -> LossFn:
    """Cross-entropy against labels smoothed towards uniform (integer or one-hot labels). An IGNORED position's
    one-hot row is all zeros, which smoothing would turn into a uniform target of mass `smoothing`: it is masked."""

    def per_example(logits, labels):
        if labels.shape != logits.shape and _is_sequence(labels):
            targets = optax.smooth_labels(jax.nn.one_hot(labels, logits.shape[-1], dtype=logits.dtype), smoothing)
            return _labelled_mean(optax.softmax_cross_entropy(logits, targets), labels)
        if labels.shape != logits.shape:
            labels = jax.nn.one_hot(labels, logits.shape[-1], dtype=logits.dtype)
        return loss_fn(logits, optax.smooth_labels(labels.astype(logits.dtype), smoothing))

    return per_example


def per_example_fn(fn: LossFn, name: str) -> LossFn:
    """A user's loss or metric may return per-example values or a scalar mean; a scalar is spread over the batch."""

    def per_example(outputs, labels):
        value = jnp.asarray(fn(outputs, labels))
        if value.ndim == 0:
            return jnp.broadcast_to(value, (outputs.shape[0],))
        return _per_example(value)

    per_example.__name__ = name
    return per_example


def _looks_like_distributions(y) -> bool:
    rows = y.reshape(-1, y.shape[-1])
    return bool(((rows >= 0) & (rows <= 1)).all()) and bool(abs(rows.sum(-1) - 1).max() < 1e-3)


def _scalar_labels_message(y, n_out: int, given_as: str | None) -> str:
    """Float (or bool) labels, one per example, for a model with several outputs: mse was inferred."""
    if given_as == "bool":
        return (f"The labels are bool of shape {tuple(y.shape)} (they train as 0/1 floats), so the loss defaulted to "
                f"mean squared error, but the model outputs {n_out} values per example. For classification pass "
                "integer class labels, y.astype(int), to a model with num_classes=2.")
    return (f"The labels are floats of shape {tuple(y.shape)}, so the loss defaulted to mean squared error, but the "
            f"model outputs {n_out} values per example. For classification pass integer class labels "
            "(y.astype(int)); for regression build the model with one output.")


def check_labels_fit(loss_name: str, out_shape: tuple, y, inferred: bool, given_as: str | None = None) -> None:
    """The labels' shape and dtype against the loss and the model's outputs, before anything is compiled: a
    mismatch otherwise surfaces as a broadcasting error deep inside the traced step. `given_as`: the dtype the user
    passed when it differs from `y`'s (bool labels arrive as float32), so messages name what the user has."""
    per_out, per_y = tuple(out_shape[1:]), tuple(y.shape[1:])
    dtype = given_as or str(y.dtype)
    n_out, n_y = math.prod(per_out), math.prod(per_y)
    integer = jnp.issubdtype(y.dtype, jnp.integer)
    if loss_name == "cross_entropy":
        if integer and per_y == per_out[:-1]:
            return
        if not integer and per_y == per_out:
            return
        if integer and per_y == (*per_out[:-1], 1):
            raise DataError(f"The labels have shape {tuple(y.shape)}; cross-entropy takes integer class labels "
                            f"with one entry per example, shape {(y.shape[0], *per_out[:-1])}: pass y.ravel().")
        if integer:
            raise DataError(f"The model outputs scores of shape {per_out} per example, so integer class labels "
                            f"must have shape {per_out[:-1] or '()'} per example; they have {per_y}.")
        raise DataError(f"Cross-entropy takes integer class labels, or one-hot / soft labels of the outputs' shape "
                        f"{per_out} per example; the labels are {dtype} of shape {per_y} per example. For class "
                        "labels pass y.astype(int).")
    if n_y == n_out:
        return  # mse and binary cross-entropy compare element by element (labels reshaped to the outputs)
    if loss_name == "mse":
        if inferred and not integer and n_out > 1 and n_y == 1:
            raise DataError(_scalar_labels_message(y, n_out, given_as))
        if inferred and not integer and n_out > 1 and len(per_y) == 1 and _looks_like_distributions(y):
            raise DataError(f"The labels look one-hot (or soft) over {n_y} classes, but the model outputs {n_out} "
                            f"values per example; build it with num_classes={n_y}.")
        hint = (" For integer class labels use --loss cross_entropy (the default for them)."
                if integer and n_y == 1 else "")
        raise DataError(f"Mean squared error compares outputs and targets of the same size: the model outputs "
                        f"{per_out} per example, the targets are {per_y}. Build the model with {n_y} output(s) or "
                        f"reshape the targets.{hint}")
    if loss_name == "binary_cross_entropy":
        hint = " For class labels 0..k-1 use --loss cross_entropy with a k-output model." if integer else ""
        raise DataError(f"Binary cross-entropy needs one output per label: the model outputs {per_out} per example, "
                        f"the labels are {per_y}.{hint}")
