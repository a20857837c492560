"""Batch sources: how a fit's data sits on the device and how each step's batch is gathered from it.

A source puts its splits on the device once and supplies two pure functions that run inside the compiled step:
`plan(key, epoch, limit, padded_steps) -> (idx, w)` makes one epoch's index plan on the device, and
`gather(data, idx) -> (x, y)` builds a batch from it. So no batch ever crosses from the host during a fit.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np

from jupyter_llm.data import in_place
from jupyter_llm.data.dataset import Dataset
from jupyter_llm.data.plans import epoch_plan, gather_rows, ordered_plan
from jupyter_llm.data.text import TextCorpus
from jupyter_llm.errors import ConfigError, DataError


class ArraySource:
    """In-memory examples: an epoch is a permutation of the training split, cut into batches."""

    unit = "examples"

    def __init__(self, dataset: Dataset, batch_size: int, placement):
        x, y = dataset.train
        if batch_size > len(x):
            raise DataError(f"--batch-size {batch_size} is larger than the {len(x)} training examples; "
                            f"use --batch-size {len(x)} or less.")
        self.dataset, self.batch_size, self.placement = dataset, batch_size, placement
        self.n = len(x)
        self.steps_per_epoch = math.ceil(self.n / batch_size)
        self.units_per_step = batch_size
        self.example = x[:2]
        self.labels = y
        splits = {"train": dataset.train, "validation": dataset.validation, "test": dataset.test}
        self.device = {k: placement.put(tuple(in_place.place(a, placement) for a in v))
                       for k, v in splits.items() if v is not None}
        self.eval_plans = {k: placement.put(ordered_plan(len(v[0]), batch_size))
                           for k, v in self.device.items() if k != "train"}
        self.gather = gather_rows

    def plan(self, key, epoch, limit, padded_steps):
        return epoch_plan(key, epoch, n=self.n, batch_size=self.batch_size, padded_steps=padded_steps,
                          step_limit=limit)

    def sizes(self) -> dict[str, int]:
        return self.dataset.sizes()

    @staticmethod
    def derive(metrics: dict) -> dict:
        return metrics


class WindowSource:
    """A token stream for language models: each batch is `batch_size` windows of `block_size` tokens.

    Training windows start at random offsets drawn on the device per step; an "epoch" is `steps_per_epoch` steps
    (the evaluation interval), so the history has one row per evaluation. Evaluation reads non-overlapping windows
    of the validation part in order — deterministic, and exact over the whole part unless `eval_batches` caps it.
    """

    unit = "tokens"

    def __init__(self, corpus: TextCorpus, batch_size: int, block_size: int, placement, *, steps_per_epoch: int,
                 eval_batches: int | None = None):
        self.corpus, self.batch_size, self.block_size, self.placement = corpus, batch_size, block_size, placement
        for part, arr in (("training", corpus.train), ("validation", corpus.validation)):
            if arr is not None and len(arr) <= block_size:
                raise DataError(f"The {part} text has {len(arr)} tokens, not more than the context of {block_size}; "
                                "use a longer text or a smaller --block-size.")
        self.n = len(corpus.train) - block_size  # valid window starts
        self.steps_per_epoch = steps_per_epoch
        self.units_per_step = batch_size * block_size
        self.example = np.zeros((2, block_size), np.int32)
        self.labels = np.zeros((1, block_size), np.int32)
        self.device = {"train": placement.put(_host_tokens(corpus.train))}
        self.eval_plans = {}
        if corpus.validation is not None:
            self.device["validation"] = placement.put(_host_tokens(corpus.validation))
            starts = np.arange(0, len(corpus.validation) - block_size, block_size)
            idx, w = ordered_plan(len(starts), batch_size)
            if eval_batches:
                idx, w = idx[:eval_batches], w[:eval_batches]
            self.eval_plans["validation"] = placement.put((jnp.asarray(starts)[idx], w))
        T = block_size

        def gather(tokens, offsets):
            window = jax.vmap(lambda o: jax.lax.dynamic_slice_in_dim(tokens, o, T + 1))(offsets)
            return window[:, :-1], window[:, 1:]

        self.gather = gather

    def plan(self, key, epoch, limit, padded_steps):
        offsets = jax.random.randint(jax.random.fold_in(key, epoch), (padded_steps, self.batch_size), 0, self.n)
        w = jnp.broadcast_to((jnp.arange(padded_steps) < limit)[:, None], offsets.shape).astype(jnp.float32)
        return offsets, w

    def sizes(self) -> dict[str, int]:
        return self.corpus.sizes()

    @staticmethod
    def derive(metrics: dict) -> dict:
        """Perplexity and bits per token, from the mean cross-entropy (nats)."""
        if "loss" in metrics:
            metrics = dict(metrics)
            metrics["perplexity"] = float(np.exp(min(metrics["loss"], 50.0)))
            metrics["bits_per_token"] = metrics["loss"] / math.log(2)
        return metrics


def _host_tokens(tokens):
    """Token ids as device_put takes them without a copy: a NumPy int32 array (an aligned one is read in place on
    a CPU; `jnp.asarray` would copy it) or an array already on a device."""
    return tokens if isinstance(tokens, jax.Array) else np.asarray(tokens, np.int32)


def block_size_for(model, corpus: TextCorpus, requested: int | None) -> int:
    """The window length: --block-size, else the model's context, else the corpus's default."""
    model_block = getattr(model, "block_size", None)
    block = requested or model_block or corpus.block_size
    if not block:
        raise ConfigError("Give the context length with --block-size for this language model.")
    if model_block and block > model_block:
        raise ConfigError(f"--block-size {block} is longer than the model's context of {model_block} tokens; "
                          f"use --block-size {model_block} or less.")
    return int(block)
