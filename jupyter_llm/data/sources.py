"""Batch sources: how a fit's data sits on the device and how each step's batch is gathered from it.

A source puts its splits on the device once and supplies two pure functions that run inside the compiled step:
`plan(key, epoch, limit, padded_steps) -> (idx, w)` makes one epoch's index plan on the device, and
`gather(data, idx) -> (x, y)` builds a batch from it. So no batch ever crosses from the host during a fit.
When the fit is over, `release()` lets the device copies go; `for_eval(split)` places a split again for a Run.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np

from jupyter_llm.data import in_place
from jupyter_llm.data.dataset import Dataset
from jupyter_llm.data.plans import epoch_plan, gather_rows, ordered_plan
from jupyter_llm.data.subset import parts, size
from jupyter_llm.data.text import TextCorpus
from jupyter_llm.errors import ConfigError, DataError


class ArraySource:
    """In-memory examples: an epoch is a permutation of the training split, cut into batches.

    Each host array goes to the device once. A `Subset` split (what val_split carves) shares the arrays of the
    split it came from and is reached through its rows: training data carries them into the gather, and an
    evaluation's plan is made of them. Once the fit is over, `release` drops the device arrays and `for_eval` places
    a split again for the Run that is asked to evaluate it.
    """

    unit = "examples"

    def __init__(self, dataset: Dataset, batch_size: int, layout):
        x, y, _ = parts(dataset.train)
        self.n = size(dataset.train)
        if batch_size > self.n:
            raise DataError(f"--batch-size {batch_size} is larger than the {self.n} training examples; "
                            f"use --batch-size {self.n} or less.")
        self.dataset, self.batch_size, self.layout = dataset, batch_size, layout
        self.steps_per_epoch = math.ceil(self.n / batch_size)
        # rows of token ids (jl.datasets.instructions) are counted in tokens, as a language model's windows are
        self.unit = "tokens" if dataset.meta.get("unit") == "tokens" else "examples"
        self.units_per_step = batch_size * (x.shape[1] if self.unit == "tokens" else 1)
        self.example = x[:2]
        self.labels = y  # all of them, a Subset's arrays too: the loss is inferred from what the user gave
        splits = {"train": dataset.train, "validation": dataset.validation, "test": dataset.test}
        self.splits = {k: v for k, v in splits.items() if v is not None}
        self.evaluable = tuple(self.splits)
        placed = {}  # id of a host array -> its device array, shared by the splits that read it
        self.device = {k: self._place(v, placed, with_rows=k == "train") for k, v in self.splits.items()}
        self.eval_plans = {k: self._eval_plan(k, batch_size) for k in self.splits if k != "train"}
        self.gather = gather_rows

    def _place(self, split, placed: dict, with_rows: bool):
        """A split's arrays on the device, `(x, y)`, each array placed once; `(x, y, rows)` for a training Subset
        (an evaluation plan holds its rows itself)."""
        x, y, rows = parts(split)
        for a in (x, y):
            if id(a) not in placed:
                placed[id(a)] = self.layout.put(in_place.place(a, self.layout))
        arrays = (placed[id(x)], placed[id(y)])
        return (*arrays, self.layout.put(rows)) if with_rows and rows is not None else arrays

    def _eval_plan(self, name: str, batch_size: int):
        """The ordered plan of a split: every example once, a Subset's as the rows of its arrays."""
        split = self.splits[name]
        idx, w = ordered_plan(size(split), batch_size)
        rows = parts(split)[2]
        return self.layout.put((idx if rows is None else jnp.asarray(rows)[idx], w))

    def for_eval(self, name: str):
        """`(data, idx, w)` to evaluate split `name`: the fit's own, or placed again after `release` (the training
        split, evaluated only on request, in batches 8 times the fit's)."""
        plan, data = self.eval_plans.get(name), self.device.get(name)  # `release` may come between (another thread)
        if plan is not None and data is not None:
            return (data, *plan)
        batch = min(self.batch_size * 8, self.n) if name == "train" else self.batch_size
        return (self._place(self.splits[name], {}, with_rows=False), *self._eval_plan(name, batch))

    def release(self) -> None:
        """Drop the device arrays and plans: a finished fit keeps no device copy of its data alive."""
        self.device, self.eval_plans = {}, {}

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

    def __init__(self, corpus: TextCorpus, batch_size: int, block_size: int, layout, *, steps_per_epoch: int,
                 eval_batches: int | None = None):
        self.corpus, self.batch_size, self.block_size, self.layout = corpus, batch_size, block_size, layout
        for part, arr in (("training", corpus.train), ("validation", corpus.validation)):
            if arr is not None and len(arr) <= block_size:
                raise DataError(f"The {part} text has {len(arr)} tokens, not more than the context of {block_size}; "
                                "use a longer text or a smaller --block-size.")
        self.n = len(corpus.train) - block_size  # valid window starts
        self.steps_per_epoch = steps_per_epoch
        self.units_per_step = batch_size * block_size
        self.example = np.zeros((2, block_size), np.int32)
        self.labels = np.zeros((1, block_size), np.int32)
        self.eval_batches = eval_batches
        self.device = {"train": layout.put(_host_tokens(corpus.train))}
        self.eval_plans = {}
        if corpus.validation is not None:
            self.device["validation"], self.eval_plans["validation"] = self._validation()
        self.evaluable = tuple(self.eval_plans)
        T = block_size

        def gather(tokens, offsets):
            window = jax.vmap(lambda o: jax.lax.dynamic_slice_in_dim(tokens, o, T + 1))(offsets)
            return window[:, :-1], window[:, 1:]

        self.gather = gather

    def _validation(self):
        """The validation tokens on the device, and the plan of the windows an evaluation reads."""
        tokens, T = self.corpus.validation, self.block_size
        starts = np.arange(0, len(tokens) - T, T)
        idx, w = ordered_plan(len(starts), self.batch_size)
        if self.eval_batches:
            idx, w = idx[:self.eval_batches], w[:self.eval_batches]
        return self.layout.put(_host_tokens(tokens)), self.layout.put((jnp.asarray(starts)[idx], w))

    def for_eval(self, name: str):
        """`(data, idx, w)` to evaluate split `name`: the fit's own, or placed again after `release`."""
        plan, data = self.eval_plans.get(name), self.device.get(name)  # `release` may come between (another thread)
        if plan is not None and data is not None:
            return (data, *plan)
        tokens, plan = self._validation()
        return (tokens, *plan)

    def release(self) -> None:
        """Drop the device tokens and plans: a finished fit keeps no device copy of its corpus alive."""
        self.device, self.eval_plans = {}, {}

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
