"""Losses and metrics as per-example functions `(outputs, labels) -> [batch]`.

Per-example values let the step weight every example (padding of the last batch gets weight 0), so epoch means are
exact. Outputs with extra dimensions (a language model's (B, T, V) logits) are averaged over them per example.
"""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp
import optax

from jupyter_llm.errors import ConfigError

LossFn = Callable[[jax.Array, jax.Array], jax.Array]


def _per_example(values: jax.Array) -> jax.Array:
    return values.reshape(values.shape[0], -1).mean(axis=1) if values.ndim > 1 else values


def cross_entropy(logits, labels):
    """Softmax cross-entropy with integer class labels, or one-hot / soft labels of the logits' shape."""
    if labels.shape == logits.shape and jnp.issubdtype(labels.dtype, jnp.floating):
        return _per_example(optax.softmax_cross_entropy(logits, labels))
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
    return _per_example((jnp.argmax(logits, axis=-1) == labels).astype(jnp.float32))


def binary_accuracy(logits, labels):
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
        rows = y.reshape(-1, y.shape[-1])
        if bool(((rows >= 0) & (rows <= 1)).all()) and bool(abs(rows.sum(-1) - 1).max() < 1e-3):
            return "cross_entropy"  # one-hot or soft labels
    return "mse"


def resolve_loss(loss, y, output_shape, task) -> tuple[str, LossFn, dict[str, LossFn]]:
    """(name, per-example loss, metrics) for a loss name, a callable, or None (inferred)."""
    if loss is None:
        loss = infer_loss_name(y, output_shape, task)
    if callable(loss):
        name = getattr(loss, "__name__", "loss")
        return name, _wrap_user_loss(loss), {}
    if loss not in LOSSES:
        raise ConfigError(f"Unknown loss {loss!r}; use one of {', '.join(LOSSES)} or a callable.")
    return loss, LOSSES[loss], METRICS_FOR_LOSS[loss]


def smoothed(loss_fn: LossFn, smoothing: float) -> LossFn:
    """Cross-entropy against labels smoothed towards uniform (integer or one-hot labels)."""

    def per_example(logits, labels):
        if labels.shape != logits.shape:
            labels = jax.nn.one_hot(labels, logits.shape[-1], dtype=logits.dtype)
        return loss_fn(logits, optax.smooth_labels(labels.astype(logits.dtype), smoothing))

    return per_example


def _wrap_user_loss(fn: LossFn) -> LossFn:
    """A user loss may return per-example values or a scalar mean; a scalar is spread over the batch."""

    def per_example(outputs, labels):
        value = jnp.asarray(fn(outputs, labels))
        if value.ndim == 0:
            return jnp.broadcast_to(value, (outputs.shape[0],))
        return _per_example(value)

    per_example.__name__ = getattr(fn, "__name__", "loss")
    return per_example
