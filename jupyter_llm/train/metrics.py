"""`--metrics`: named metrics and the user's callables, as per-example functions `(outputs, labels) -> [batch]`.

A name means what fits the fit's outputs, its *kind*: class scores (a cross-entropy fit, or a custom loss on class
labels), one logit per 0/1 label (binary cross-entropy), or values compared with targets (regression). `accuracy`
is the arg-max accuracy of class scores and the sign accuracy of binary logits; `top<k>` counts an example right
when its label is among the k highest scores; `mse` / `mae` compare regression outputs with their targets;
`cross_entropy` is the softmax (or sigmoid) cross-entropy of the outputs, e.g. beside a custom or smoothed loss.
A name that does not fit the kind (accuracy of a regression, top5 of 3 classes) is refused before anything runs.
"""

from __future__ import annotations

import jax.numpy as jnp

from jupyter_llm.errors import ConfigError
from jupyter_llm.train.losses import (
    LossFn,
    _align,
    _per_example,
    accuracy,
    binary_accuracy,
    binary_cross_entropy,
    cross_entropy,
    infer_loss_name,
    mse,
    per_example_fn,
)

CLASSES, BINARY, REGRESSION = "classes", "binary", "regression"
KIND_OF_LOSS = {"cross_entropy": CLASSES, "binary_cross_entropy": BINARY, "mse": REGRESSION}
_KIND_TEXT = {CLASSES: "class scores", BINARY: "one logit per 0/1 label (binary)",
              REGRESSION: "values compared with targets (a regression)"}


def output_kind(loss_name: str | None, y, out_shape, task: str | None) -> str:
    """What the model's outputs are: `CLASSES`, `BINARY` or `REGRESSION`. From the named loss, or for a custom loss
    (`loss_name` None) from the labels, as the loss would have been inferred."""
    return KIND_OF_LOSS.get(loss_name) or KIND_OF_LOSS[infer_loss_name(y, out_shape, task)]


def mae(outputs, targets):
    """Mean absolute error per example."""
    return _per_example(jnp.abs(outputs - _align(targets, outputs)))


def top_k_accuracy(k: int) -> LossFn:
    """1 where the label's score is among the k highest (no other class scores strictly higher in k places)."""

    def top_k(logits, labels):
        if labels.shape == logits.shape:
            labels = jnp.argmax(labels, axis=-1)
        own = jnp.take_along_axis(logits, labels.astype(jnp.int32)[..., None], axis=-1)
        return _per_example((jnp.sum(logits > own, axis=-1) < k).astype(jnp.float32))

    top_k.__name__ = f"top{k}"
    return top_k


def named_metric(name: str, kind: str, out_shape: tuple) -> LossFn:
    """The per-example function of a metric name (already in its one spelling, `config.metric_name`)."""
    outputs = _KIND_TEXT[kind]
    if name.startswith("top"):
        k, n = int(name[3:]), out_shape[-1]
        if kind != CLASSES:
            raise ConfigError(f"--metrics {name!r} ranks class scores; this fit's outputs are {outputs}.")
        if k >= n:
            fix = f"use top{n - 1} at most, or accuracy" if n > 2 else "use accuracy"
            raise ConfigError(f"--metrics {name!r} counts a label among the {k} highest of the class scores, but the "
                              f"model outputs {n} per example, so it would always be 1: {fix}.")
        return top_k_accuracy(k)
    if name in ("mse", "mae"):
        if kind != REGRESSION:
            raise ConfigError(f"--metrics {name!r} compares outputs with regression targets; this fit's outputs are "
                              f"{outputs}: use accuracy" + (" or top<k>." if kind == CLASSES else "."))
        return mse if name == "mse" else mae
    if kind == REGRESSION:
        raise ConfigError(f"--metrics {name!r} needs class labels; this fit's outputs are {outputs}: use mse or mae.")
    if name == "accuracy":
        return accuracy if kind == CLASSES else binary_accuracy
    return cross_entropy if kind == CLASSES else binary_cross_entropy  # "cross_entropy"


def resolve_metrics(spec: tuple | None, default: dict[str, LossFn], kind: str, out_shape: tuple
                    ) -> dict[str, LossFn]:
    """{name: per-example metric} for `FitConfig.metrics` (None keeps the loss's own, `default`)."""
    if spec is None:
        return default
    out = {}
    for item in spec:
        if isinstance(item, str):
            out[item] = named_metric(item, kind, out_shape)
        else:
            name, fn = item
            out[name] = per_example_fn(fn, name)
    return out


def metrics_key(spec: tuple | None) -> tuple | None:
    """What of --metrics shapes the compiled step: the names, and for the user's callables which function."""
    if spec is None:
        return None
    return tuple(item if isinstance(item, str) else (item[0], id(item[1])) for item in spec)
