"""PreparedFit: the checked, placed and compiled pieces of one fit.

Everything a user can get wrong is checked before any work starts (`fitting/checks.py`): the model against the data's
example shape and classes, the loss against the model's outputs, the monitored quantity, the options that depend on
the data. Then the programs are compiled ahead of time, or reused from earlier fits of this session
(`fitting/program.py`). What the loop needs is handed over as one `LoopPlan`.

With --lora the adapters are added to the model here, first (the split into trained and frozen needs them), and
taken out again if the fit is refused before it starts.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from jupyter_llm import events as ev
from jupyter_llm.config import FitConfig
from jupyter_llm.data.augment import Augment, seed_key
from jupyter_llm.data.sources import ArraySource, WindowSource, block_size_for
from jupyter_llm.data.text import TextCorpus
from jupyter_llm.errors import ConfigError
from jupyter_llm.fitting import checks
from jupyter_llm.fitting.program import compile_program
from jupyter_llm.models.gpt import GPT
from jupyter_llm.models.lora import add_adapters, remove_adapters
from jupyter_llm.train import loop as loop_mod
from jupyter_llm.train.layout import data_parallel, from_mesh
from jupyter_llm.train.losses import resolve_loss, smoothed
from jupyter_llm.train.metrics import output_kind, resolve_metrics
from jupyter_llm.train.monitor import Monitor
from jupyter_llm.train.optim import make_optimizer
from jupyter_llm.train.primitives import CONVOLUTION
from jupyter_llm.train.state import check_freeze, count_params, init_state, split_model, trainable_for
from jupyter_llm.train.step import Step


def compute_precision(precision: str, model, platform: str) -> str:
    """--precision as fp32 or bf16. `auto` is bf16 for a GPT language model on GPUs and TPUs, whose matrix units
    run bf16 several times faster than fp32 and where transformers train in it by custom (nanoGPT's default there
    too; float32 master weights keep small updates), and fp32 elsewhere: on CPUs bf16 is emulated and slower."""
    if precision != "auto":
        return precision
    return "bf16" if platform in ("gpu", "tpu", "cuda", "rocm") and isinstance(model, GPT) else "fp32"


class PreparedFit:
    """The checked, placed and compiled pieces of one fit: the model's split views, the data's source on the devices,
    the loss, the optimizer, the monitor, the dispatch policy, the step and (after `compile`) its programs."""

    def __init__(self, model: nnx.Module, dataset, config: FitConfig):
        self.model, self.dataset, self.config = model, dataset, config
        self.trainable = trainable_for(config)
        added = add_adapters(model, config.lora, config.lora_alpha or 2.0 * config.lora, config.lora_targets,
                             config.lora_dropout, seed=config.seed) if config.lora else []
        try:
            self._prepare()
        except BaseException:  # a fit refused before it starts leaves the model as it was given
            remove_adapters(model, added)
            raise

    def _prepare(self) -> None:
        model, dataset, config = self.model, self.dataset, self.config
        check_freeze(model, self.trainable)
        self.graphdef_train, self.params, self.rest = split_model(model, train=True, trainable=self.trainable)
        self.graphdef_eval, _, _ = split_model(model, train=False, trainable=self.trainable)
        checks.check_trainable(model, self.params)
        sizes = config.mesh_sizes
        self.layout = data_parallel(config.batch_size) if sizes is None else from_mesh(sizes, config.batch_size, model)
        checks.check_rows_context(config, model, dataset)
        self.source = self._make_source()
        out_shape, out_dtype, self.primitives = checks.check_model_input(model, self.graphdef_eval, self.params,
                                                                         self.rest, self.source.example)
        y = self.source.labels
        task = getattr(dataset, "task", None)
        self.loss_name, self.loss_fn, self.metrics = resolve_loss(config.loss, y, out_shape, task)
        self.output_kind = output_kind(None if callable(config.loss) else self.loss_name, y, out_shape, task)
        self.metrics = resolve_metrics(config.metrics, self.metrics, self.output_kind, out_shape)
        checks.check_outputs(model, dataset, self.loss_name, out_shape)
        checks.check_loss(self.loss_name, self.loss_fn, self.metrics, user_loss=callable(config.loss),
                          inferred=config.loss is None, out_shape=out_shape, out_dtype=out_dtype, y=y,
                          labels_given_as=getattr(dataset, "meta", {}).get("labels_given_as"))
        checks.check_sampling(config, model, dataset)
        self.augment = self._make_augment()
        train_loss_fn = self.loss_fn
        if config.label_smoothing:
            if self.loss_name != "cross_entropy":
                raise ConfigError(f"--label-smoothing applies to cross-entropy; this fit's loss is {self.loss_name}.")
            train_loss_fn = smoothed(self.loss_fn, config.label_smoothing)
        src = self.source
        self.steps_total = config.steps or config.epochs * src.steps_per_epoch
        self.epochs = -(-self.steps_total // src.steps_per_epoch)
        self.optimizer = make_optimizer(config, self.steps_total)
        self.precision = compute_precision(config.precision, model, self.layout.platform)
        self.monitor = Monitor.from_config(config, self.logged_names())
        self.step = Step(self.graphdef_train, self.graphdef_eval, self.optimizer, self.loss_fn, self.metrics,
                         train_loss_fn=train_loss_fn, platform=self.layout.platform,
                         compute_dtype=jnp.bfloat16 if self.precision == "bf16" else None,
                         trainable=self.trainable, augment=self.augment)
        self._set_dispatch()
        self.data_key = jax.random.fold_in(jax.random.key(config.seed), 1)
        self.program = None  # after compile()

    def _make_source(self):
        c = self.config
        if isinstance(self.dataset, TextCorpus):
            block = block_size_for(self.model, self.dataset, c.block_size)
            per_epoch = c.eval_every or c.steps or 1000
            return WindowSource(self.dataset, c.batch_size, block, self.layout, steps_per_epoch=per_epoch,
                                eval_batches=c.eval_batches)
        return ArraySource(self.dataset, c.batch_size, self.layout)

    def _make_augment(self) -> Augment | None:
        """--augment for this data: images only (checked here, before any work)."""
        spec = self.config.augment_spec
        if not spec:
            return None
        if isinstance(self.source, WindowSource):
            raise ConfigError("--augment changes images; a language model's windows are token ids. Leave it off.")
        x = self.source.example
        return Augment.from_spec(spec, x.shape[1:], x.dtype)

    def _set_dispatch(self) -> None:
        """How many steps each compiled call runs, and so how an epoch is cut into calls."""
        src, c = self.source, self.config
        self.eval_every = c.eval_every if isinstance(src, ArraySource) else None
        # the step runs through every weight, trained or frozen: counting only the trained ones put 20 LoRA steps
        # of GPT-2 small (about a minute on 2 CPU cores) into each call, and the display moved once a minute
        flops_estimate = 6.0 * count_params(nnx.state(self.model, nnx.Param)) * src.units_per_step
        self.steps_per_dispatch = loop_mod.choose_steps_per_dispatch(
            src.steps_per_epoch, flops_estimate, eval_every=self.eval_every, given=c.steps_per_dispatch,
            on_cpu=self.layout.platform == "cpu", convolutions=CONVOLUTION in self.primitives)
        self.dispatches_per_epoch = -(-src.steps_per_epoch // self.steps_per_dispatch)
        self.padded_steps = self.dispatches_per_epoch * self.steps_per_dispatch

    def is_step_boundary(self, step: int) -> bool:
        """Whether the loop stands between two compiled calls after `step` steps (where `run.set` takes effect)."""
        spe, k = self.source.steps_per_epoch, self.steps_per_dispatch
        if not 1 <= step <= self.steps_total:
            return False
        epoch = (step - 1) // spe
        into, limit = step - epoch * spe, min(spe, self.steps_total - epoch * spe)
        return into == limit or (into % k == 0 and into < limit)

    def logged_names(self) -> set[str]:
        """The quantities the history will hold (what --monitor may name)."""
        train = set(self.source.derive({"loss": 1.0, **{m: 1.0 for m in self.metrics}}))
        val = {f"val_{k}" for k in train} if "validation" in self.source.eval_plans else set()
        return train | val

    # -- what the loop and the sinks are given -----------------------------------------------------------------
    def fit_start(self) -> ev.FitStart:
        c, src = self.config, self.source
        return ev.FitStart(config=c, model_name=type(self.model).__name__, param_count=count_params(self.params),
                           devices=self.layout.describe() + (" · bf16 compute" if self.precision == "bf16" else ""),
                           batch_size=c.batch_size, steps_total=self.steps_total,
                           steps_per_epoch=src.steps_per_epoch, epochs=self.epochs, split_sizes=src.sizes(),
                           unit=src.unit, units_per_step=src.units_per_step,
                           steps_per_pass=(src.sizes()["train"] / src.units_per_step
                                           if isinstance(src, WindowSource) else None))

    def compile(self) -> ev.CompileEnd:
        self.program, end = compile_program(self)
        return end

    def plan(self, key, epoch, limit):
        """One epoch's index plan (traced into the compiled plan program)."""
        return self.source.plan(key, epoch, limit, self.padded_steps)

    def evaluate(self, state, split: str, weights=None) -> dict[str, float]:
        """Means over a split; `weights` = (params, rest) to evaluate instead of the state's (the best ones)."""
        params, rest = weights or (state.params, state.rest)
        sums = self.program.evaluate_sums(split, params, rest, self.source)
        return self.source.derive(means(jax.device_get(sums)))  # host sync: once per evaluation

    def init_state(self):
        return self.layout.put_state(init_state(self.params, self.rest, self.optimizer))

    def hyper(self, scale: float, changed: dict | None = None) -> dict:
        """The optimizer's numbers as the compiled step takes them: float32 scalars on the device; `changed` holds
        those set while the fit runs (clip, weight_decay)."""
        numbers = {**self.optimizer.hyper, **(changed or {}), "scale": scale}
        hyper = {k: np.float32(v) for k, v in numbers.items()}
        if self.augment is not None:  # not a number: the seed's key data, from which each step draws
            hyper["augment_key"] = np.asarray(seed_key(self.config.seed))
        return self.layout.put(hyper)

    def lr_at(self, step: int, scale: float) -> float:
        """The learning rate of the update at `step`, from the same formula the compiled step uses."""
        return float(self.optimizer.lr(step, {**self.optimizer.hyper, "scale": scale}, np))

    def loop_plan(self, save=None) -> loop_mod.LoopPlan:
        program, src, c = self.program, self.source, self.config
        plan_fn = program.executables["plan"]
        return loop_mod.LoopPlan(
            train_chunk=program.executables["train"], redo_chunk=program.chunks.redo, evaluate=self.evaluate,
            plan_epoch=lambda epoch, limit: plan_fn(self.data_key, epoch, limit), train_data=src.device["train"],
            steps_per_epoch=src.steps_per_epoch, steps_per_dispatch=self.steps_per_dispatch,
            dispatches_per_epoch=self.dispatches_per_epoch,
            epochs=self.epochs, steps_total=self.steps_total, units_per_step=src.units_per_step,
            eval_every=self.eval_every, has_validation="validation" in src.eval_plans, derive=src.derive,
            hyper=self.hyper, lr_at=self.lr_at if self.optimizer.scheduled else None, monitor=self.monitor,
            keep_best=c.keep_best, save=save, save_every=c.save_every, report_every=c.report_every,
            profile=self._profile(), sample=self._sample if c.sample_every else None, sample_every=c.sample_every)

    def _sample(self, state):
        from jupyter_llm.fitting.sample import sample_text

        return sample_text(self.dataset, nnx.merge(self.graphdef_eval, state.params, state.rest))

    def _profile(self):
        if not self.config.profile:
            return None
        import os

        return (self.config.profile, os.path.join(os.path.abspath(self.config.logdir), "profile"))


def means(sums: dict) -> dict[str, float]:
    """Per-example means from a program's sums (with their `count`)."""
    count = float(sums["count"])
    return {k: float(v) / count for k, v in sums.items() if k != "count"}
