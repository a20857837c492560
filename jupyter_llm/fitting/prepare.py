"""PreparedFit: the checked, placed and compiled pieces of one fit.

Everything a user can get wrong is checked here, before any work starts: the model against the data's example
shape and classes, the monitored quantity, the options that depend on the data. Then the steps are compiled ahead
of time (so compilation is its own phase), or reused from earlier fits of this session when nothing changed.
"""

from __future__ import annotations

import collections
import time

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from jupyter_llm import events as ev
from jupyter_llm.config import FitConfig
from jupyter_llm.data.coerce import check_class_labels
from jupyter_llm.data.sources import ArraySource, WindowSource, block_size_for
from jupyter_llm.data.text import TextCorpus
from jupyter_llm.errors import ConfigError, DataError, JupyterLLMError, ModelError
from jupyter_llm.train import host_memory
from jupyter_llm.train import loop as loop_mod
from jupyter_llm.train.losses import LOSSES, check_labels_fit, resolve_loss, smoothed
from jupyter_llm.train.monitor import Monitor
from jupyter_llm.train.optim import make_optimizer
from jupyter_llm.train.sharding import data_parallel
from jupyter_llm.train.state import count_params, init_state, split_model
from jupyter_llm.train.step import make_step_fns


class CompiledPrograms:
    """The session's compiled steps, keyed by everything that shapes them, newest `limit` kept: each entry holds
    executables and their step functions, and a notebook that tries one model after another must not keep them all."""

    def __init__(self, limit: int = 8):
        self.limit = limit
        self._entries: collections.OrderedDict = collections.OrderedDict()

    def get(self, key):
        entry = self._entries.get(key)
        if entry is not None:
            self._entries.move_to_end(key)
        return entry

    def put(self, key, entry) -> None:
        self._entries[key] = entry
        self._entries.move_to_end(key)
        while len(self._entries) > self.limit:
            self._entries.popitem(last=False)

    def values(self) -> list:
        return list(self._entries.values())

    def __len__(self) -> int:
        return len(self._entries)


COMPILED = CompiledPrograms()


class PreparedFit:
    """The checked, placed and compiled pieces of one fit."""

    def __init__(self, model: nnx.Module, dataset, config: FitConfig):
        self.model, self.dataset, self.config = model, dataset, config
        self.placement = data_parallel(config.batch_size)
        self.graphdef_train, self.params, self.rest = split_model(model, train=True)
        self.graphdef_eval, _, _ = split_model(model, train=False)
        self._check_trainable()
        self.source = self._make_source()
        out_shape = self._check_model_input(self.source.example)
        y = self.source.labels
        self.loss_name, self.loss_fn, self.metrics = resolve_loss(config.loss, y, out_shape,
                                                                  getattr(dataset, "task", None))
        self._check_outputs(out_shape)
        self._check_loss(out_shape, y)
        self.train_loss_fn = self.loss_fn
        if config.label_smoothing:
            if self.loss_name != "cross_entropy":
                raise ConfigError(f"--label-smoothing applies to cross-entropy; this fit's loss is {self.loss_name}.")
            self.train_loss_fn = smoothed(self.loss_fn, config.label_smoothing)
        src = self.source
        self.steps_total = config.steps or config.epochs * src.steps_per_epoch
        self.epochs = -(-self.steps_total // src.steps_per_epoch)
        self.optimizer = make_optimizer(config, self.steps_total)
        self.monitor = Monitor.from_config(config, self.logged_names())
        self.flops_estimate = 6.0 * count_params(self.params) * src.units_per_step
        eval_every = config.eval_every if isinstance(src, ArraySource) else None
        if config.sample_every and not isinstance(dataset, TextCorpus):
            raise ConfigError("--sample-every shows text from a language model; this fit's data is not a text corpus.")
        if config.sample_every and not hasattr(model, "init_cache"):
            raise ConfigError(f"--sample-every needs a model that can generate (jl.models.GPT); "
                              f"{type(model).__name__} cannot.")
        self.steps_per_dispatch = loop_mod.choose_steps_per_dispatch(
            src.steps_per_epoch, self.flops_estimate, eval_every=eval_every,
            given=config.steps_per_dispatch, on_cpu=jax.devices()[0].platform == "cpu")
        self.eval_every = eval_every
        self.dispatches_per_epoch = -(-src.steps_per_epoch // self.steps_per_dispatch)
        self.padded_steps = self.dispatches_per_epoch * self.steps_per_dispatch
        self.data_key = jax.random.fold_in(jax.random.key(config.seed), 1)

    def logged_names(self) -> set[str]:
        """The quantities the history will hold (what --monitor may name)."""
        train = set(self.source.derive({"loss": 1.0, **{m: 1.0 for m in self.metrics}}))
        val = {f"val_{k}" for k in train} if "validation" in self.source.eval_plans else set()
        return train | val

    def _make_source(self):
        c = self.config
        if isinstance(self.dataset, TextCorpus):
            block = block_size_for(self.model, self.dataset, c.block_size)
            per_epoch = c.eval_every or c.steps or 1000
            return WindowSource(self.dataset, c.batch_size, block, self.placement, steps_per_epoch=per_epoch,
                                eval_batches=c.eval_batches)
        return ArraySource(self.dataset, c.batch_size, self.placement)

    # -- checks ----------------------------------------------------------------------------------------------
    def _check_trainable(self) -> None:
        """A model without parameters would 'complete' a fit at its initial loss, having learned nothing."""
        if count_params(self.params) == 0:
            raise ModelError(f"{type(self.model).__name__} has no trainable parameters (no nnx.Param), so a fit "
                             "would change nothing. Give it layers with weights, e.g. nnx.Linear(..., rngs=rngs), or "
                             "wrap its weights in nnx.Param (plain arrays and other nnx.Variable kinds are not "
                             "trained).")

    def _check_model_input(self, example: np.ndarray) -> tuple:
        in_features = getattr(self.model, "in_features", None)
        per_example = int(np.prod(example.shape[1:]))
        if isinstance(in_features, int) and per_example != in_features:
            raise ModelError(f"{type(self.model).__name__} expects {in_features} input features per example, but the "
                             f"data's examples have shape {tuple(example.shape[1:])} = {per_example} features. Build "
                             f"the model with in_features={per_example}, or reshape the data.")
        spec = jax.ShapeDtypeStruct(example.shape, example.dtype)
        try:
            out = jax.eval_shape(lambda p, r, xb: nnx.merge(self.graphdef_eval, p, r)(xb), self.params, self.rest, spec)
        except JupyterLLMError:
            raise
        except Exception as exc:  # noqa: BLE001 - the model cannot take this input: say both shapes
            first_line = (str(exc).strip().splitlines()[0][:300].rstrip(".") if str(exc).strip()
                          else type(exc).__name__)
            raise ModelError(f"{type(self.model).__name__} cannot be applied to the data: examples of shape "
                             f"{tuple(example.shape[1:])} (dtype {example.dtype}) gave: {first_line}. Check the "
                             "model's input size against the data's example shape.") from None
        if not hasattr(out, "shape") or not out.shape or out.shape[0] != example.shape[0]:
            raise ModelError(f"{type(self.model).__name__} must return one array with a batch dimension; for "
                             f"input of shape {spec.shape} it returned {out!r}.")
        if not jnp.issubdtype(out.dtype, jnp.floating):
            raise ModelError(f"{type(self.model).__name__} returns {out.dtype} outputs; a model must return "
                             "floating-point values (logits, scores or predictions) for a loss to differentiate.")
        self.out_dtype = out.dtype
        return tuple(out.shape)

    def _check_loss(self, out_shape: tuple, y: np.ndarray) -> None:
        """The loss and metrics applied, abstractly, to a batch of the model's outputs and labels."""
        user = callable(self.config.loss)
        if self.loss_name in LOSSES and not user:
            check_labels_fit(self.loss_name, out_shape, y, inferred=self.config.loss is None,
                             given_as=getattr(self.dataset, "meta", {}).get("labels_given_as"))
        outs = jax.ShapeDtypeStruct((2, *out_shape[1:]), self.out_dtype)
        labels = jax.ShapeDtypeStruct((2, *y.shape[1:]), y.dtype)
        shapes = (f"outputs of shape {tuple(out_shape[1:])} and labels of shape {tuple(y.shape[1:])} ({y.dtype}) "
                  "per example")
        for name, fn in {"loss": self.loss_fn, **self.metrics}.items():
            what = f"The loss {self.loss_name!r}" if name == "loss" else f"The metric {name!r}"
            try:
                value = jax.eval_shape(fn, outs, labels)
            except JupyterLLMError:
                raise
            except Exception as exc:  # noqa: BLE001 - the loss cannot take these: say both shapes
                first = str(exc).strip().splitlines()[0][:300].rstrip(".") if str(exc).strip() else type(exc).__name__
                fix = (" A loss is called as loss(outputs, labels) and returns one value per example or their "
                       "mean." if user and name == "loss" else "")
                error = ConfigError if fix else DataError  # a user loss of the wrong form, or data unlike it
                raise error(f"{what} cannot be applied to {shapes}: {first}.{fix}") from None
            if getattr(value, "shape", None) != (2,):
                raise DataError(f"{what} returned shape {getattr(value, 'shape', type(value).__name__)} for a batch "
                                f"of 2 with {shapes}; return one value per example or their mean.")

    def _check_outputs(self, out_shape: tuple) -> None:
        if self.loss_name != "cross_entropy":
            return
        classes = out_shape[-1]
        if isinstance(self.dataset, TextCorpus):
            if self.dataset.vocab_size > classes:
                raise ModelError(f"{type(self.model).__name__} predicts {classes} tokens but the corpus has a "
                                 f"vocabulary of {self.dataset.vocab_size}; build it with vocab_size="
                                 f"{self.dataset.vocab_size}.")
            return
        if self.dataset.num_classes is not None and self.dataset.num_classes != classes:
            raise ModelError(f"{type(self.model).__name__} outputs {classes} values per example but the data has "
                             f"{self.dataset.num_classes} classes; build the model with num_classes="
                             f"{self.dataset.num_classes}.")
        for name, split in (("train", self.dataset.train), ("validation", self.dataset.validation),
                            ("test", self.dataset.test)):
            if split is not None:
                check_class_labels(split[1], classes, name)

    # -- events and compiled steps ---------------------------------------------------------------------------
    def fit_start(self) -> ev.FitStart:
        c, src = self.config, self.source
        return ev.FitStart(config=c, model_name=type(self.model).__name__, param_count=count_params(self.params),
                           devices=self.placement.describe(), batch_size=c.batch_size, steps_total=self.steps_total,
                           steps_per_epoch=src.steps_per_epoch, epochs=self.epochs, split_sizes=src.sizes(),
                           unit=src.unit, units_per_step=src.units_per_step)

    def _cache_key(self):
        shapes = tuple((k, tuple(a.shape), str(a.dtype)) for k, arrs in self.source.device.items()
                       for a in jax.tree.leaves(arrs))
        plans = tuple((k, tuple(p[0].shape)) for k, p in self.source.eval_plans.items())
        return (self.graphdef_train, self.graphdef_eval, self.optimizer.key, self.loss_name,
                self.config.label_smoothing, self.config.skip_nonfinite, self.config.precision,
                id(self.loss_fn) if self.loss_name not in ("cross_entropy", "mse", "binary_cross_entropy") else 0,
                type(self.source), getattr(self.source, "block_size", None), self.steps_per_dispatch,
                self.config.batch_size,
                self.padded_steps, shapes, plans, self.placement.mesh)

    def compile(self) -> ev.CompileEnd:
        """Compile the train chunk, the evaluations and the epoch plan ahead of time, or reuse this session's."""
        t0 = time.perf_counter()
        key = self._cache_key()
        if (entry := COMPILED.get(key)) is not None:
            self.steps, self.compiled, flops = entry
            return ev.CompileEnd(seconds=time.perf_counter() - t0, flops_per_step=flops, cached=True)
        src = self.source
        self.steps = make_step_fns(self.graphdef_train, self.graphdef_eval, self.optimizer, self.loss_fn, self.metrics,
                                   self.steps_per_dispatch, self.placement, gather=src.gather,
                                   skip_nonfinite=self.config.skip_nonfinite, train_loss_fn=self.train_loss_fn,
                                   compute_dtype=jnp.bfloat16 if self.config.precision == "bf16" else None)
        state = jax.eval_shape(lambda p, r: init_state(p, r, self.optimizer, copy=False), self.params, self.rest)
        plan = jax.jit(self._plan, out_shardings=self.placement.replicated)
        idx, w = jax.eval_shape(plan, self.data_key, 0, 1)
        hyper = self.hyper(1.0)
        compiled = {"train": self.steps.train_chunk.lower(state, src.device["train"], idx, w, 0, hyper).compile(),
                    "plan": plan.lower(self.data_key, 0, 1).compile()}
        for name, (pidx, pw) in src.eval_plans.items():
            compiled[name] = self.steps.eval_split.lower(self.params, self.rest, src.device[name], pidx, pw).compile()
        flops = _flops_per_step(compiled["train"], self.steps_per_dispatch)
        if self.placement.mesh.devices.flat[0].platform == "cpu":
            host_memory.keep_scratch_mapped(max(_scratch_bytes(c) for c in compiled.values()))
        self.compiled = compiled
        COMPILED.put(key, (self.steps, compiled, flops))
        return ev.CompileEnd(seconds=time.perf_counter() - t0, flops_per_step=flops)

    def _plan(self, key, epoch, limit):
        return self.source.plan(key, epoch, limit, self.padded_steps)

    def evaluate(self, state, split: str, weights=None) -> dict[str, float]:
        """Means over a split; `weights` = (params, rest) to evaluate instead of the state's (the best ones)."""
        idx, w = self.source.eval_plans[split]
        params, rest = weights or (state.params, state.rest)
        sums = self.compiled[split](params, rest, self.source.device[split], idx, w)
        return self.source.derive(_means(jax.device_get(sums)))  # host sync: once per evaluation

    def init_state(self):
        return self.placement.put(init_state(self.params, self.rest, self.optimizer))

    def hyper(self, scale: float) -> dict:
        """The optimizer's numbers as the compiled step takes them: float32 scalars on the device."""
        numbers = {**self.optimizer.hyper, "scale": scale}
        return self.placement.put({k: np.float32(v) for k, v in numbers.items()})

    def lr_at(self, step: int, scale: float) -> float:
        """The learning rate of the update at `step`, from the same formula the compiled step uses."""
        return float(self.optimizer.lr(step, {**self.optimizer.hyper, "scale": scale}, np))

    def loop_plan(self, save=None) -> loop_mod.LoopPlan:
        plan_fn, src = self.compiled["plan"], self.source
        return loop_mod.LoopPlan(
            train_chunk=self.compiled["train"], redo_chunk=self.steps.redo_chunk, evaluate=self.evaluate,
            plan_epoch=lambda epoch, limit: plan_fn(self.data_key, epoch, limit), train_data=src.device["train"],
            steps_per_epoch=src.steps_per_epoch, steps_per_dispatch=self.steps_per_dispatch,
            dispatches_per_epoch=self.dispatches_per_epoch,
            epochs=self.epochs, steps_total=self.steps_total, units_per_step=src.units_per_step,
            eval_every=self.eval_every, has_validation="validation" in src.eval_plans, derive=src.derive,
            hyper=self.hyper, lr_at=self.lr_at if self.optimizer.scheduled else None, monitor=self.monitor,
            keep_best=self.config.keep_best, save=save, save_every=self.config.save_every,
            report_every=self.config.report_every, profile=self._profile(),
            sample=self._sample if self.config.sample_every else None, sample_every=self.config.sample_every)

    def _sample(self, state, tokens: int = 200):
        """(prompt, text) sampled from the model as it stands: a newline prompt, temperature 0.8, seed 0."""
        from jupyter_llm.models.generate import generate

        tok = self.dataset.tokenizer
        prompt = "\n" if "\n" in getattr(tok, "chars", ()) else self.dataset.tokenizer.decode(self.dataset.train[:1])
        model = nnx.merge(self.graphdef_eval, state.params, state.rest)
        ids = generate(model, tok.encode(prompt), tokens, temperature=0.8, seed=0)
        return prompt, tok.decode(ids)

    def _profile(self):
        if not self.config.profile:
            return None
        import os

        return (self.config.profile, os.path.join(os.path.abspath(self.config.logdir), "profile"))


def _means(sums: dict) -> dict[str, float]:
    count = float(sums["count"])
    return {k: float(v) / count for k, v in sums.items() if k != "count"}


def _scratch_bytes(compiled) -> int:
    """The temporary buffers one execution of `compiled` allocates (0 where XLA does not say)."""
    try:
        return int(compiled.memory_analysis().temp_size_in_bytes)
    except Exception:  # noqa: BLE001 - an analysis some backends lack
        return 0


def _flops_per_step(compiled, k: int) -> float | None:
    try:
        cost = compiled.cost_analysis()
        if isinstance(cost, (list, tuple)):
            cost = cost[0]
        flops = float(cost.get("flops", 0.0))
    except Exception:  # noqa: BLE001 - cost analysis is optional information
        return None
    return flops or None
