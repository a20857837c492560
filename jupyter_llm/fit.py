"""`fit(model, data, **options) -> Run`: the whole training path, with no IPython in sight.

It checks everything a user can get wrong before any work starts, compiles the steps ahead of time (reusing them
within the session when nothing changed), drives the event loop, feeds the sinks, and writes the trained weights
back into the user's model whatever the ending — completed, interrupted, or stopped on a non-finite loss.
"""

from __future__ import annotations

import time
from typing import Iterable

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from jupyter_llm import events as ev
from jupyter_llm.config import FitConfig, make_config
from jupyter_llm.data.coerce import as_dataset, check_class_labels
from jupyter_llm.data.sources import ArraySource, WindowSource, block_size_for
from jupyter_llm.data.text import TextCorpus
from jupyter_llm.errors import JupyterLLMError, ModelError
from jupyter_llm.sinks.history import HistorySink
from jupyter_llm.train import loop as loop_mod
from jupyter_llm.train.interrupt import stop_on_interrupt
from jupyter_llm.train.losses import resolve_loss
from jupyter_llm.train.optim import make_optimizer, optimizer_key
from jupyter_llm.train.sharding import data_parallel
from jupyter_llm.train.state import count_params, init_state, split_model
from jupyter_llm.train.step import make_step_fns

_COMPILED: dict = {}  # compiled steps of this session, keyed by everything that shapes them


def fit(model: nnx.Module, data, *, sinks: Iterable = (), config: FitConfig | None = None, **options):
    """Train `model` on `data` and return a `Run`.

    >>> run = fit(MLP(in_features=64, hidden=[128], num_classes=10, rngs=nnx.Rngs(0)), "digits",
    ...           epochs=20, val_split=0.2)                                      # doctest: +SKIP
    >>> run.history["val_accuracy"][-1]                                          # doctest: +SKIP

    Options are the fields of `FitConfig` (the same as the `%%train` options). `sinks` receive the progress
    events besides the display chosen by `display`.
    """
    config = config or make_config(**options)
    if not isinstance(model, nnx.Module):
        raise ModelError(f"The model must be a flax.nnx.Module, got {type(model).__name__}. Build it with one of "
                         "jupyter_llm.models (e.g. MLP) or subclass nnx.Module.")
    dataset = data if isinstance(data, TextCorpus) else as_dataset(data, val_split=config.val_split, seed=config.seed)
    prepared = _Prepared(model, dataset, config)
    history = HistorySink()
    all_sinks = [history, *_display_sinks(config.display), *sinks]

    def emit(event):
        for sink in all_sinks:
            sink.on(event)

    emit(prepared.fit_start())
    loop = None
    reason, message, test_metrics = ev.FAILED, "", None
    with stop_on_interrupt() as stop:
        try:
            emit(ev.CompileStart())
            compile_end = prepared.compile()
            emit(compile_end)
            state = prepared.placement.put(init_state(prepared.params, prepared.rest, prepared.tx))
            loop = loop_mod.Loop(prepared.loop_plan(), state, stop)
            for event in loop.events():
                emit(event)
            reason = loop.reason
            if reason == ev.NAN:
                message = f"loss or gradient not finite at step {loop.bad_step}; weights kept from step {loop.step}"
            if "test" in prepared.source.eval_plans and reason in (ev.COMPLETED, ev.EARLY_STOPPED):
                test_metrics = prepared.evaluate(loop.state, "test")
                emit(ev.Eval(loop.step, loop.epoch, "test", test_metrics))
        except KeyboardInterrupt:
            reason, message = ev.INTERRUPTED, "second interrupt"
            raise
        except Exception as exc:
            message = f"{type(exc).__name__}: {exc}"
            raise
        finally:
            if loop is not None and _alive(loop.state):
                nnx.update(model, loop.state.params, loop.state.rest)  # the user's model now holds the weights
            step = loop.step if loop else 0
            emit(ev.FitEnd(reason=reason, step=step, epoch=loop.epoch if loop else 0,
                           elapsed=loop.elapsed if loop else 0.0,
                           compile_seconds=history.compile.seconds if history.compile else 0.0,
                           history=history.history, test_metrics=test_metrics, message=message))
    from jupyter_llm.run import Run

    return Run(model=model, config=config, dataset=prepared.dataset, source=prepared.source, history_sink=history,
               steps=prepared.steps,
               loss_name=prepared.loss_name, state=loop.state)


def _alive(state) -> bool:
    return not any(getattr(a, "is_deleted", lambda: False)() for a in jax.tree.leaves(state))


def _display_sinks(mode: str) -> list:
    if mode == "none":
        return []
    try:
        from jupyter_llm.sinks.select import make_display_sinks
    except ImportError:  # display package not available: plain text
        from jupyter_llm.sinks.text import TextSink

        return [TextSink()]
    return make_display_sinks(mode)


class _Prepared:
    """The checked, placed and compiled pieces of one fit."""

    def __init__(self, model: nnx.Module, dataset, config: FitConfig):
        self.model, self.dataset, self.config = model, dataset, config
        self.placement = data_parallel(config.batch_size)
        self.graphdef_train, self.params, self.rest = split_model(model, train=True)
        self.graphdef_eval, _, _ = split_model(model, train=False)
        self.source = self._make_source()
        out_shape = self._check_model_input(self.source.example)
        y = self.source.labels
        self.loss_name, self.loss_fn, self.metrics = resolve_loss(config.loss, y, out_shape,
                                                                  getattr(dataset, "task", None))
        self._check_outputs(out_shape)
        self.tx = make_optimizer(config)
        src = self.source
        self.steps_total = config.steps or config.epochs * src.steps_per_epoch
        self.epochs = -(-self.steps_total // src.steps_per_epoch)
        self.flops_estimate = 6.0 * count_params(self.params) * src.units_per_step
        eval_every = config.eval_every if isinstance(src, ArraySource) else None
        self.k = loop_mod.choose_steps_per_call(
            src.steps_per_epoch, self.flops_estimate, eval_every=eval_every,
            requested=config.steps_per_dispatch, on_cpu=jax.devices()[0].platform == "cpu")
        self.eval_every = eval_every
        self.calls_per_epoch = -(-src.steps_per_epoch // self.k)
        self.padded_steps = self.calls_per_epoch * self.k
        self.data_key = jax.random.fold_in(jax.random.key(config.seed), 1)

    def _make_source(self):
        c = self.config
        if isinstance(self.dataset, TextCorpus):
            block = block_size_for(self.model, self.dataset, c.block_size)
            per_epoch = c.eval_every or c.steps or 1000
            return WindowSource(self.dataset, c.batch_size, block, self.placement, steps_per_epoch=per_epoch,
                                eval_batches=c.eval_batches)
        return ArraySource(self.dataset, c.batch_size, self.placement)

    # -- checks ----------------------------------------------------------------------------------------------
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
            first_line = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else type(exc).__name__
            raise ModelError(f"{type(self.model).__name__} cannot be applied to the data: examples of shape "
                             f"{tuple(example.shape[1:])} (dtype {example.dtype}) gave: {first_line}. Check the "
                             "model's input size against the data's example shape.") from None
        if not hasattr(out, "shape") or not out.shape or out.shape[0] != example.shape[0]:
            raise ModelError(f"{type(self.model).__name__} must return one array with a batch dimension; for "
                             f"input of shape {spec.shape} it returned {out!r}.")
        return tuple(out.shape)

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
        return (self.graphdef_train, self.graphdef_eval, optimizer_key(self.config), self.loss_name,
                id(self.loss_fn) if self.loss_name not in ("cross_entropy", "mse", "binary_cross_entropy") else 0,
                type(self.source), getattr(self.source, "block_size", None), self.k, self.config.batch_size,
                self.padded_steps, shapes, plans, self.placement.mesh)

    def compile(self) -> ev.CompileEnd:
        """Compile the train chunk, the evaluations and the epoch plan ahead of time, or reuse this session's."""
        t0 = time.perf_counter()
        key = self._cache_key()
        if key in _COMPILED:
            self.steps, self.compiled, flops = _COMPILED[key]
            return ev.CompileEnd(seconds=time.perf_counter() - t0, flops_per_step=flops, cached=True)
        src = self.source
        self.steps = make_step_fns(self.graphdef_train, self.graphdef_eval, self.tx, self.loss_fn, self.metrics,
                                   self.k, self.placement, gather=src.gather)
        state = jax.eval_shape(lambda: init_state(self.params, self.rest, self.tx))
        plan = jax.jit(self._plan, out_shardings=self.placement.replicated)
        idx, w = jax.eval_shape(plan, self.data_key, 0, 1)
        compiled = {"train": self.steps.train_chunk.lower(state, src.device["train"], idx, w, 0).compile(),
                    "plan": plan.lower(self.data_key, 0, 1).compile()}
        for name, (pidx, pw) in src.eval_plans.items():
            compiled[name] = self.steps.eval_split.lower(self.params, self.rest, src.device[name], pidx, pw).compile()
        flops = _flops_per_step(compiled["train"], self.k)
        self.compiled = compiled
        _COMPILED[key] = (self.steps, compiled, flops)
        return ev.CompileEnd(seconds=time.perf_counter() - t0, flops_per_step=flops)

    def _plan(self, key, epoch, limit):
        return self.source.plan(key, epoch, limit, self.padded_steps)

    def evaluate(self, state, split: str) -> dict[str, float]:
        idx, w = self.source.eval_plans[split]
        sums = self.compiled[split](state.params, state.rest, self.source.device[split], idx, w)
        return self.source.derive(_means(jax.device_get(sums)))  # host sync: once per evaluation

    def loop_plan(self) -> loop_mod.LoopPlan:
        plan_fn, src = self.compiled["plan"], self.source
        return loop_mod.LoopPlan(
            train_chunk=self.compiled["train"], evaluate=self.evaluate,
            plan_epoch=lambda epoch, limit: plan_fn(self.data_key, epoch, limit), train_data=src.device["train"],
            steps_per_epoch=src.steps_per_epoch, steps_per_call=self.k, calls_per_epoch=self.calls_per_epoch,
            epochs=self.epochs, steps_total=self.steps_total, units_per_step=src.units_per_step,
            eval_every=self.eval_every, has_validation="validation" in src.eval_plans, derive=src.derive)


def _means(sums: dict) -> dict[str, float]:
    count = float(sums["count"])
    return {k: float(v) / count for k, v in sums.items() if k != "count"}


def _flops_per_step(compiled, k: int) -> float | None:
    try:
        cost = compiled.cost_analysis()
        if isinstance(cost, (list, tuple)):
            cost = cost[0]
        flops = float(cost.get("flops", 0.0))
    except Exception:  # noqa: BLE001 - cost analysis is optional information
        return None
    return flops or None
