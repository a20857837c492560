"""What a user can get wrong about a model, its data and its loss, checked abstractly before any work starts.

Each check traces shapes only (`jax.eval_shape`, `jax.make_jaxpr`), so a model that cannot take the data, a loss
that cannot take the model's outputs or labels out of the model's range are reported in the user's terms, not as an
XLA error mid-fit.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from jupyter_llm.data.coerce import check_class_labels
from jupyter_llm.data.text import TextCorpus
from jupyter_llm.errors import ConfigError, DataError, JupyterLLMError, ModelError
from jupyter_llm.train.losses import LOSSES, check_labels_fit
from jupyter_llm.train.primitives import primitive_names
from jupyter_llm.train.state import count_params


def _first_line(exc: Exception) -> str:
    text = str(exc).strip()
    return text.splitlines()[0][:300].rstrip(".") if text else type(exc).__name__


def check_trainable(model, params) -> None:
    """A model without parameters would 'complete' a fit at its initial loss, having learned nothing."""
    if count_params(params) == 0:
        raise ModelError(f"{type(model).__name__} has no trainable parameters (no nnx.Param), so a fit "
                         "would change nothing. Give it layers with weights, e.g. nnx.Linear(..., rngs=rngs), or "
                         "wrap its weights in nnx.Param (plain arrays and other nnx.Variable kinds are not "
                         "trained).")


def check_model_input(model, graphdef_eval, params, rest, example: np.ndarray):
    """The model applied, abstractly, to two examples: (output shape, output dtype, the names of the primitives its
    forward pass uses)."""
    name = type(model).__name__
    in_features = getattr(model, "in_features", None)
    per_example = int(np.prod(example.shape[1:]))
    if isinstance(in_features, int) and per_example != in_features:
        raise ModelError(f"{name} expects {in_features} input features per example, but the data's examples have "
                         f"shape {tuple(example.shape[1:])} = {per_example} features. Build the model with "
                         f"in_features={per_example}, or reshape the data.")
    spec = jax.ShapeDtypeStruct(example.shape, example.dtype)
    try:
        traced, out = jax.make_jaxpr(lambda p, r, xb: nnx.merge(graphdef_eval, p, r)(xb), return_shape=True)(
            params, rest, spec)
    except JupyterLLMError:
        raise
    except Exception as exc:  # noqa: BLE001 - the model cannot take this input: say both shapes
        raise ModelError(f"{name} cannot be applied to the data: examples of shape {tuple(example.shape[1:])} "
                         f"(dtype {example.dtype}) gave: {_first_line(exc)}. Check the model's input size against "
                         "the data's example shape.") from None
    if not hasattr(out, "shape") or not out.shape or out.shape[0] != example.shape[0]:
        raise ModelError(f"{name} must return one array with a batch dimension; for input of shape {spec.shape} it "
                         f"returned {out!r}.")
    if not jnp.issubdtype(out.dtype, jnp.floating):
        raise ModelError(f"{name} returns {out.dtype} outputs; a model must return floating-point values (logits, "
                         "scores or predictions) for a loss to differentiate.")
    return tuple(out.shape), out.dtype, primitive_names(traced)


def check_loss(loss_name: str, loss_fn, metrics: dict, *, user_loss: bool, inferred: bool, out_shape: tuple,
               out_dtype, y: np.ndarray, labels_given_as=None) -> None:
    """The loss and metrics applied, abstractly, to a batch of the model's outputs and labels."""
    if loss_name in LOSSES and not user_loss:
        check_labels_fit(loss_name, out_shape, y, inferred=inferred, given_as=labels_given_as)
    outs = jax.ShapeDtypeStruct((2, *out_shape[1:]), out_dtype)
    labels = jax.ShapeDtypeStruct((2, *y.shape[1:]), y.dtype)
    shapes = (f"outputs of shape {tuple(out_shape[1:])} and labels of shape {tuple(y.shape[1:])} ({y.dtype}) "
              "per example")
    for name, fn in {"loss": loss_fn, **metrics}.items():
        what = f"The loss {loss_name!r}" if name == "loss" else f"The metric {name!r}"
        try:
            value = jax.eval_shape(fn, outs, labels)
        except JupyterLLMError:
            raise
        except Exception as exc:  # noqa: BLE001 - the loss cannot take these: say both shapes
            fix = (" A loss is called as loss(outputs, labels) and returns one value per example or their "
                   "mean." if user_loss and name == "loss" else "")
            error = ConfigError if fix else DataError  # a user loss of the wrong form, or data unlike it
            raise error(f"{what} cannot be applied to {shapes}: {_first_line(exc)}.{fix}") from None
        if getattr(value, "shape", None) != (2,):
            raise DataError(f"{what} returned shape {getattr(value, 'shape', type(value).__name__)} for a batch "
                            f"of 2 with {shapes}; return one value per example or their mean.")


def check_outputs(model, dataset, loss_name: str, out_shape: tuple) -> None:
    """A classifier's outputs against the data's classes (or a language model's against the vocabulary)."""
    if loss_name != "cross_entropy":
        return
    name, classes = type(model).__name__, out_shape[-1]
    per_token = isinstance(dataset, TextCorpus) or len(out_shape) > 2  # next-token scores at every position
    vocab = (dataset.vocab_size if isinstance(dataset, TextCorpus) else dataset.meta.get("vocab_size")) \
        if per_token else None  # (a text classifier's vocabulary is its input's, not its outputs')
    if vocab is not None and vocab > classes:  # a corpus, or rows of tokens (jl.datasets.instructions)
        what = "corpus" if isinstance(dataset, TextCorpus) else "data's tokenizer"
        raise ModelError(f"{name} predicts {classes} tokens but the {what} has a vocabulary of {vocab}; build it "
                         f"with vocab_size={vocab}, or tokenize with the model's own tokenizer.")
    if isinstance(dataset, TextCorpus):
        return
    if dataset.num_classes is not None and dataset.num_classes != classes:
        raise ModelError(f"{name} outputs {classes} values per example but the data has {dataset.num_classes} "
                         f"classes; build the model with num_classes={dataset.num_classes}.")
    for split_name, split in (("train", dataset.train), ("validation", dataset.validation), ("test", dataset.test)):
        if split is not None:
            check_class_labels(split[1], classes, split_name)


def check_rows_context(config, model, dataset) -> None:
    """Rows of tokens cut to a length when the data was built (jl.datasets.instructions' block_size) against the
    model's context, and --block-size, which sets the windows of a text corpus only."""
    block = None if isinstance(dataset, TextCorpus) else dataset.meta.get("block_size")
    if block is None:
        return
    if config.block_size and config.block_size != block:
        raise ConfigError(f"--block-size {config.block_size} does not apply to this data: its rows were cut to "
                          f"{block} tokens when it was built; build it again with block_size={config.block_size} "
                          "and leave --block-size out.")
    context = getattr(model, "block_size", None)
    if isinstance(context, int) and block > context:
        raise ConfigError(f"The data's rows are {block} tokens long, more than the model's context of {context}; "
                          f"build the data with block_size={context} (or less).")


def check_sampling(config, model, dataset) -> None:
    """--sample-every needs text and a model that generates."""
    if config.sample_every and not isinstance(dataset, TextCorpus):
        raise ConfigError("--sample-every shows text from a language model; this fit's data is not a text corpus.")
    if config.sample_every and not hasattr(model, "init_cache"):
        raise ConfigError(f"--sample-every needs a model that can generate (jl.models.GPT); "
                          f"{type(model).__name__} cannot.")
