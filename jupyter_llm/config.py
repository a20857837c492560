"""FitConfig: every setting of a fit, frozen, documented and validated once at the boundary.

Each field's metadata carries its help text (and for named choices, the accepted names). `options.py` derives the
magic's options, `%%train?`, the command line and `fit`'s keyword check from these fields, so they cannot drift.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import os
from dataclasses import dataclass, field
from typing import Any

from jupyter_llm.errors import ConfigError

OPTIMIZERS = ("sgd", "momentum", "adam", "adamw")
LOSSES = ("cross_entropy", "mse", "binary_cross_entropy")
DISPLAYS = ("auto", "widget", "html", "text", "none")
PRECISIONS = ("fp32", "bf16")
SCHEDULES = ("constant", "cosine", "exponential", "step", "onecycle")


def _opt(default, help, choices=None, cli=True, **extra):
    return field(default=default, metadata={"help": help, "choices": choices, "cli": cli, **extra})


@dataclass(frozen=True)
class FitConfig:
    """The frozen configuration of one fit (bound as `run.config`)."""

    # length and batches
    epochs: int = _opt(10, "passes over the training split")
    steps: int | None = _opt(None, "train for this many steps instead of --epochs (language models)")
    batch_size: int = _opt(32, "examples per training step")
    accumulate: int = _opt(1, "accumulate gradients over N batches before each update")
    # optimizer and learning rate
    lr: float = _opt(1e-3, "learning rate (the peak of a schedule)")
    optimizer: Any = _opt("adam", "optimizer name, or an optax GradientTransformation (a namespace name in the magic)",
                          OPTIMIZERS)
    momentum: float = _opt(0.9, "momentum of the 'momentum' optimizer (and beta1 of adam/adamw)")
    beta2: float = _opt(0.999, "second-moment decay of adam/adamw (nanoGPT's small-batch recipes use 0.99)")
    weight_decay: float = _opt(0.0, "decoupled weight decay for adamw, L2 penalty for the others")
    schedule: str = _opt("constant", "learning-rate schedule: constant, cosine, exponential, step or onecycle",
                         SCHEDULES)
    warmup: float = _opt(0, "linear warm-up steps (a value below 1 is a fraction of all steps)")
    min_lr: float = _opt(0.0, "the learning rate a decaying schedule ends at")
    decay_every: int | None = _opt(None, "steps between decays of the 'step' schedule (default: a third of the fit)")
    decay_factor: float = _opt(0.1, "factor of each 'step' decay")
    plateau: int | None = _opt(None, "halve the learning rate after N evaluations without improvement of --monitor")
    clip: float | None = _opt(None, "clip gradients to this global norm", unset="off")
    skip_nonfinite: int = _opt(0, "skip up to N updates with a non-finite loss or gradient before stopping")
    # loss and evaluation
    loss: Any = _opt(None, "loss name or callable(outputs, labels) -> per-example loss; default from the labels",
                     LOSSES)
    label_smoothing: float = _opt(0.0, "label smoothing for cross-entropy")
    val_split: float = _opt(0.0, "fraction of train held out for validation when the data has no validation split")
    eval_every: int | None = _opt(None, "evaluate every N steps (default: at the end of each epoch)")
    eval_batches: int | None = _opt(None, "evaluate on at most this many validation batches (default: all)")
    block_size: int | None = _opt(None, "context length of language-model windows (default: the model's)")
    # stopping and selection
    early_stop: int | None = _opt(None, "stop after N evaluations without improvement of --monitor", unset="off")
    monitor: str = _opt("val_loss", "the quantity early stopping, --plateau and --keep-best watch")
    keep_best: bool = _opt(False, "end with the weights of the best evaluation of --monitor")
    # saving and observing
    checkpoint: str | None = _opt(None, "directory for Orbax checkpoints", unset="off")
    save_every: int | None = _opt(None, "checkpoint every N steps (default: at each evaluation)")
    keep: int = _opt(3, "checkpoints to keep")
    resume: Any = _opt(None, "continue from the newest checkpoint in DIR (or --checkpoint), or from a Run",
                       unset="off", nargs="?")
    logdir: str | None = _opt(None, "write TensorBoard scalars and the history (JSON, CSV) here", unset="off")
    profile: int | None = _opt(None, "record a JAX profiler trace of N steps into --logdir", unset="off")
    # runtime
    precision: str = _opt("fp32", "compute precision: fp32, or bf16 (float32 master weights; for GPUs and TPUs)",
                          PRECISIONS)
    seed: int = _opt(0, "seed of data order, validation split and dropout of built-in models")
    display: str = _opt("auto", "progress display: auto, widget, html, text or none", DISPLAYS)
    steps_per_dispatch: int | None = _opt(None, "training steps per compiled call (default: from the step's cost)")
    report_every: float = _opt(0.25, "seconds between reads of the training metrics from the device")

    def __post_init__(self):
        for name, minimum in (("epochs", 1), ("batch_size", 1), ("accumulate", 1), ("seed", 0), ("keep", 1),
                              ("skip_nonfinite", 0)):
            _check_int(self, name, minimum=minimum)
        for name in ("steps", "eval_every", "eval_batches", "block_size", "steps_per_dispatch", "decay_every",
                     "save_every", "profile"):
            if getattr(self, name) is not None:
                _check_int(self, name, minimum=1)
        for name in ("plateau", "early_stop"):
            if getattr(self, name) is not None:
                _check_int(self, name, minimum=0)
        _check_float(self, "lr", minimum=0.0, strict=True)
        _check_float(self, "momentum", minimum=0.0, maximum=1.0)
        _check_float(self, "beta2", minimum=0.0, maximum=1.0)
        _check_float(self, "weight_decay", minimum=0.0)
        _check_float(self, "warmup", minimum=0.0)
        _check_float(self, "report_every", minimum=0.0)
        _check_float(self, "min_lr", minimum=0.0)
        _check_float(self, "decay_factor", minimum=0.0, maximum=1.0, strict=True)
        _check_float(self, "label_smoothing", minimum=0.0, maximum=1.0)
        if not self.label_smoothing < 1.0:
            raise ConfigError(f"--label-smoothing must be below 1, got {self.label_smoothing}.")
        if self.min_lr >= self.lr and self.schedule != "constant":
            raise ConfigError(f"--min-lr {self.min_lr} must be below --lr {self.lr} for a decaying schedule.")
        if self.clip is not None:
            _check_float(self, "clip", minimum=0.0, strict=True)
        _check_float(self, "val_split", minimum=0.0, maximum=1.0)
        if not self.val_split < 1.0:
            raise ConfigError(f"--val-split {self.val_split} leaves no training data; use a fraction like 0.2.")
        if not isinstance(self.keep_best, bool):
            raise ConfigError(f"--keep-best is a switch (True or False), got {self.keep_best!r}.")
        if not isinstance(self.monitor, str) or not self.monitor:
            raise ConfigError(f"--monitor must name a logged quantity such as val_loss, got {self.monitor!r}.")
        for name in ("checkpoint", "logdir"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, (str, os.PathLike)) or not str(value).strip()):
                raise ConfigError(f"--{name} must be a directory path, got {value!r}.")
        if self.profile is not None and self.logdir is None:
            raise ConfigError("--profile writes its trace into --logdir; give --logdir DIR as well.")
        _check_choice(self, "optimizer", OPTIMIZERS, allow_object=True)
        _check_choice(self, "loss", LOSSES, allow_object=True, allow_none=True)
        _check_choice(self, "display", DISPLAYS)
        _check_choice(self, "schedule", SCHEDULES)
        _check_choice(self, "precision", PRECISIONS)
        if not isinstance(self.optimizer, str) and (self.schedule != "constant" or self.warmup):
            raise ConfigError("--schedule and --warmup apply to named optimizers; an optax object brings its own "
                              "learning rate (build it with an optax schedule instead).")

    @property
    def monitor_mode(self) -> str:
        """'min' for losses and errors, 'max' for accuracies and scores."""
        return "min" if any(t in self.monitor for t in ("loss", "error", "perplexity", "bits")) else "max"

    def to_dict(self) -> dict:
        """Plain values for a run card or a JSON file (objects shown by their repr)."""
        out = {}
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            out[f.name] = v if isinstance(v, (int, float, str, bool, type(None))) else _describe(v)
        return out


def _describe(obj) -> str:
    return getattr(obj, "__name__", None) or type(obj).__name__


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _check_int(cfg, name, minimum=None):
    v = getattr(cfg, name)
    if isinstance(v, bool) or not isinstance(v, int):
        if isinstance(v, float) and v.is_integer():
            object.__setattr__(cfg, name, int(v))
            v = int(v)
        else:
            raise ConfigError(f"{_flag(name)} must be a whole number, got {v!r}.")
    if minimum is not None and v < minimum:
        raise ConfigError(f"{_flag(name)} must be at least {minimum}, got {v}.")


def _check_float(cfg, name, minimum=None, maximum=None, strict=False):
    v = getattr(cfg, name)
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise ConfigError(f"{_flag(name)} must be a number, got {v!r}.")
    v = float(v)
    object.__setattr__(cfg, name, v)
    if not math.isfinite(v):
        raise ConfigError(f"{_flag(name)} must be finite, got {v}.")
    if minimum is not None and (v <= minimum if strict else v < minimum):
        bound = "greater than" if strict else "at least"
        raise ConfigError(f"{_flag(name)} must be {bound} {minimum}, got {v}.")
    if maximum is not None and v > maximum:
        raise ConfigError(f"{_flag(name)} must be at most {maximum}, got {v}.")


def _check_choice(cfg, name, choices, allow_object=False, allow_none=False):
    v = getattr(cfg, name)
    if v is None and allow_none:
        return
    if isinstance(v, str):
        key = v.strip().lower().replace("-", "_")
        if key in choices:
            object.__setattr__(cfg, name, key)
            return
        close = difflib.get_close_matches(key, choices, n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise ConfigError(f"{_flag(name)} {v!r} is not one of: {', '.join(choices)}.{hint}")
    if allow_object and v is not None:
        return
    raise ConfigError(f"{_flag(name)} must be one of: {', '.join(choices)}; got {v!r}.")


def config_fields() -> list[dataclasses.Field]:
    return list(dataclasses.fields(FitConfig))


def make_config(**kwargs) -> FitConfig:
    """Build a FitConfig, turning an unknown keyword into a ConfigError that suggests the closest name."""
    names = [f.name for f in dataclasses.fields(FitConfig)]
    for key in kwargs:
        if key not in names:
            close = difflib.get_close_matches(key, names, n=1)
            hint = f" Did you mean {close[0]!r}?" if close else ""
            raise ConfigError(f"Unknown fit option {key!r}.{hint} Options: {', '.join(names)}.")
    return FitConfig(**kwargs)
