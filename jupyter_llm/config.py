"""FitConfig: every setting of a fit, frozen, documented and validated once at the boundary.

Each field's metadata carries its help text (and for named choices, the accepted names). `options.py` derives the
magic's options, `%%train?`, the command line and `fit`'s keyword check from these fields, so they cannot drift.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import math
import numbers
import os
import re
from dataclasses import dataclass, field
from typing import Any, Mapping

import numpy as np

from jupyter_llm.errors import ConfigError

OPTIMIZERS = ("sgd", "momentum", "adam", "adamw")
LOSSES = ("cross_entropy", "mse", "binary_cross_entropy")
METRICS = ("accuracy", "top5", "mse", "mae", "cross_entropy")  # top5 stands for any top<k>: top2, top3, ...
# names a metric may not take: the loss, what the step and the language-model sources add, and the split prefixes
RESERVED_METRIC_NAMES = ("loss", "count", "finite", "grad_norm", "update_ratio", "perplexity", "bits_per_token", "lr")
_TOP_K = re.compile(r"top_?(\d+)")
DISPLAYS = ("auto", "widget", "html", "text", "none")
PRECISIONS = ("auto", "fp32", "bf16")
SCHEDULES = ("constant", "cosine", "exponential", "step", "onecycle")
AUGMENTATIONS = ("shift", "flip", "rotate", "noise")  # data/augment.py makes them; `auto` is AUGMENT_AUTO
AUGMENT_AUTO = ("shift",)  # what suits any image: a flip changes a digit's class, rotation and noise are mild help
MAX_SEED = 2**63 - 1  # jax.random.key takes a C long: a larger seed ends in an OverflowError deep in the fit
MAX_INT32 = 2**31 - 1  # counts that reach the compiled step as int32 arguments
FLOAT32_MAX = float(np.finfo(np.float32).max)  # training computes in float32: beyond this a value becomes inf
FLOAT32_TINY = float(np.finfo(np.float32).tiny)  # and below this (the smallest normal float32) it becomes 0


def _opt(default, help, choices=None, **extra):
    """A field with its help text; `cli_help` words it for the command line where the help speaks of Python
    objects or the notebook."""
    return field(default=default, metadata={"help": help, "choices": choices, **extra})


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
                          OPTIMIZERS, cli_help="optimizer: sgd, momentum, adam or adamw")
    momentum: float = _opt(0.9, "momentum of the 'momentum' optimizer (and beta1 of adam/adamw)")
    beta2: float = _opt(0.999, "second-moment decay of adam/adamw (nanoGPT's small-batch recipes use 0.99)")
    weight_decay: float = _opt(0.0, "decoupled weight decay for adamw, L2 penalty for the others")
    schedule: str = _opt("constant", "learning-rate schedule: constant, cosine, exponential, step or onecycle",
                         SCHEDULES)
    warmup: float = _opt(0, "linear warm-up steps (a value below 1 is a fraction of all steps)")
    min_lr: float = _opt(0.0, "the learning rate a decaying schedule ends at")
    decay_every: int | None = _opt(None, "steps between decays of the 'step' schedule", unset="a third of the fit")
    decay_factor: float = _opt(0.1, "factor of each 'step' decay")
    plateau: int | None = _opt(None, "halve the learning rate after N evaluations without improvement of --monitor")
    clip: float | None = _opt(None, "clip gradients to this global norm", unset="off")
    skip_nonfinite: int = _opt(0, "skip up to N updates with a non-finite loss or gradient before stopping")
    # loss and evaluation
    loss: Any = _opt(None, "loss name or callable(outputs, labels) -> per-example loss; default from the labels",
                     LOSSES, cli_help="loss: cross_entropy, mse or binary_cross_entropy; default from the labels")
    metrics: Any = _opt(None, "metrics reported beside the loss, comma-separated: accuracy, top<k> (top5...), mse, "
                              "mae, cross_entropy, none; jl.fit also takes callables(outputs, labels) or a dict "
                              "name -> callable", unset="accuracy for a classification loss")
    label_smoothing: float = _opt(0.0, "label smoothing for cross-entropy")
    augment: str | None = _opt(None, "random changes to each training image, made on the device from --seed: "
                                     "comma-separated shift, flip, rotate, noise (each may take =AMOUNT: pixels, "
                                     "degrees, a fraction of the pixels' std), or auto (shift)", unset="off")
    val_split: float = _opt(0.0, "fraction of train held out for validation when the data has no validation split")
    eval_every: int | None = _opt(None, "evaluate every N steps", unset="at the end of each epoch")
    eval_batches: int | None = _opt(None, "evaluate on at most this many validation batches", unset="all")
    block_size: int | None = _opt(None, "context length of language-model windows", unset="the model's")
    sample_every: int | None = _opt(None, "show text generated by a language model every N steps (at evaluations)",
                                    unset="off")
    # stopping and selection
    early_stop: int | None = _opt(None, "stop after N evaluations without improvement of --monitor", unset="off")
    monitor: str = _opt("val_loss", "the quantity early stopping, --plateau and --keep-best watch")
    keep_best: bool = _opt(False, "end with the weights of the best evaluation of --monitor")
    # saving and observing
    checkpoint: str | None = _opt(None, "directory for Orbax checkpoints", unset="off")
    save_every: int | None = _opt(None, "checkpoint every N steps", unset="at each evaluation")
    keep: int = _opt(3, "checkpoints to keep")
    resume: Any = _opt(None, "continue from the newest checkpoint in DIR (or --checkpoint), or from a Run",
                       unset="off", nargs="?", cli_help="continue from the newest checkpoint in DIR (or in "
                       "--checkpoint), or from a folder run.save wrote")
    changes: Any = _opt(None, "change the optimizer's numbers at these steps, as run.changes records them (JSON in "
                              "the magic, e.g. '[{\"step\": 120, \"lr\": 3e-4}]'): replays a steered fit",
                        unset="none")
    logdir: str | None = _opt(None, "write TensorBoard scalars and the history (JSON, CSV) here", unset="off")
    profile: int | None = _opt(None, "record a JAX profiler trace of N steps into --logdir", unset="off")
    # fine-tuning: what trains (default: every parameter)
    lora: int | None = _opt(None, "train low-rank adapters of this rank on --lora-targets instead of the weights "
                                  "(base weights frozen)", unset="off")
    lora_alpha: float | None = _opt(None, "adapter scale numerator: each adapter adds (x A B) * alpha/rank",
                                    unset="2 x rank")
    lora_targets: str = _opt("attn,mlp", "the nnx.Linear layers --lora adapts, by a piece of their path: attn "
                                         "(c_attn, attn.c_proj), mlp (c_fc, mlp.c_proj), c_attn, ... or globs")
    lora_dropout: float = _opt(0.0, "dropout on the adapters' input while training")
    freeze: str | None = _opt(None, "leave these parameters untrained: comma-separated dotted paths or globs, "
                                    "e.g. wte,wpe,h.0", unset="off")
    # runtime
    precision: str = _opt("auto", "compute precision: fp32, bf16 (float32 master weights; for GPUs and TPUs), or "
                                  "auto: bf16 for a GPT on GPUs and TPUs, fp32 otherwise", PRECISIONS)
    mesh: Any = _opt(None, "devices as a mesh, e.g. data=2,fsdp=2,model=2: data splits the batch, fsdp also shards "
                           "parameters and optimizer state, model splits layers (tensor parallel)",
                     unset="every local device on data")
    seed: int = _opt(0, "seed of data order, validation split and dropout of built-in models")
    display: str = _opt("auto", "progress display: auto, widget, html, text or none", DISPLAYS)
    steps_per_dispatch: int | None = _opt(None, "training steps per compiled call",
                                          unset="from the step's cost (1 for convolutions on a CPU)")
    report_every: float = _opt(0.25, "seconds between reads of the training metrics from the device")

    def __post_init__(self):
        for name, minimum in (("epochs", 1), ("batch_size", 1), ("keep", 1), ("skip_nonfinite", 0)):
            _check_int(self, name, minimum=minimum)
        _check_int(self, "accumulate", minimum=1, maximum=MAX_INT32)
        _check_int(self, "seed", minimum=0, maximum=MAX_SEED, why=" (2**63 - 1, the largest seed JAX takes)")
        for name in ("steps", "eval_every", "eval_batches", "block_size", "steps_per_dispatch", "decay_every",
                     "sample_every",
                     "save_every", "profile"):
            if getattr(self, name) is not None:
                _check_int(self, name, minimum=1)
        for name in ("plateau", "early_stop"):
            if getattr(self, name) is not None:
                _check_int(self, name, minimum=0)
        _check_float(self, "lr", minimum=0.0, strict=True)
        _check_fine_tuning(self)
        _check_float(self, "momentum", minimum=0.0, maximum=1.0)
        _check_float(self, "beta2", minimum=0.0, maximum=1.0)
        _check_float(self, "weight_decay", minimum=0.0)
        _check_float(self, "warmup", minimum=0.0, on_device=False)
        _check_float(self, "report_every", minimum=0.0, on_device=False)
        _check_float(self, "min_lr", minimum=0.0)
        _check_float(self, "decay_factor", minimum=0.0, maximum=1.0, strict=True)
        _check_float(self, "label_smoothing", minimum=0.0, maximum=1.0)
        if not self.label_smoothing < 1.0:
            raise ConfigError(f"--label-smoothing must be below 1, got {self.label_smoothing}.")
        if self.min_lr >= self.lr and self.schedule != "constant":
            raise ConfigError(f"--min-lr {self.min_lr} must be below --lr {self.lr} for a decaying schedule.")
        if self.clip is not None:
            _check_float(self, "clip", minimum=0.0, strict=True)
        _check_float(self, "val_split", minimum=0.0, maximum=1.0, on_device=False)
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
        object.__setattr__(self, "mesh", _mesh_text(self.mesh))
        object.__setattr__(self, "changes", _changes(self.changes))
        object.__setattr__(self, "metrics", metrics_spec(self.metrics))
        object.__setattr__(self, "augment", _augment_text(self.augment))
        _check_choice(self, "optimizer", OPTIMIZERS, allow_object=True)
        _check_choice(self, "loss", LOSSES, allow_object=True, allow_none=True)
        _check_choice(self, "display", DISPLAYS)
        _check_choice(self, "schedule", SCHEDULES)
        _check_choice(self, "precision", PRECISIONS)
        if not isinstance(self.optimizer, str) and (self.schedule != "constant" or self.warmup):
            raise ConfigError("--schedule and --warmup apply to named optimizers; an optax object brings its own "
                              "learning rate (build it with an optax schedule instead).")

    @property
    def mesh_sizes(self) -> dict[str, int] | None:
        """--mesh as {axis: size}, or None for the default (every local device on data)."""
        if self.mesh is None:
            return None
        return {axis: int(n) for axis, n in (part.split("=") for part in self.mesh.split(","))}

    @property
    def augment_spec(self) -> tuple[tuple[str, float | None], ...]:
        """--augment as (name, amount) pairs in the order given, amount None for the default; () when off."""
        if self.augment is None:
            return ()
        return tuple((name, float(amount) if amount else None)
                     for name, _, amount in (part.partition("=") for part in self.augment.split(",")))

    @property
    def monitor_mode(self) -> str:
        """'min' for losses and errors, 'max' for accuracies and scores."""
        lower_is_better = ("loss", "error", "perplexity", "bits", "mse", "mae", "cross_entropy")
        return "min" if any(t in self.monitor for t in lower_is_better) else "max"

    @property
    def metric_names(self) -> tuple[str, ...] | None:
        """The names --metrics asked for, in order (None: the loss's own metrics)."""
        if self.metrics is None:
            return None
        return tuple(m if isinstance(m, str) else m[0] for m in self.metrics)

    def to_dict(self) -> dict:
        """Plain values for a run card or a JSON file (objects shown by their repr)."""
        out = {}
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            if f.name == "changes" and v is not None:
                out[f.name] = [dict(c) for c in v]
                continue
            if f.name == "metrics" and v is not None:
                out[f.name] = ",".join(self.metric_names) or "none"
                continue
            out[f.name] = v if isinstance(v, (int, float, str, bool, type(None))) else _describe(v)
        return out


def _check_fine_tuning(cfg) -> None:
    if cfg.lora is not None:
        _check_int(cfg, "lora", minimum=1, maximum=MAX_INT32)
    elif cfg.lora_alpha is not None or cfg.lora_dropout:
        given = "--lora-alpha" if cfg.lora_alpha is not None else "--lora-dropout"
        raise ConfigError(f"{given} applies to LoRA adapters; add --lora RANK (e.g. --lora 8).")
    if cfg.lora_alpha is not None:
        _check_float(cfg, "lora_alpha", minimum=0.0, strict=True)
    _check_float(cfg, "lora_dropout", minimum=0.0, maximum=1.0)
    if not cfg.lora_dropout < 1.0:
        raise ConfigError(f"--lora-dropout must be below 1, got {cfg.lora_dropout}.")
    if not isinstance(cfg.lora_targets, str) or not cfg.lora_targets.strip(", "):
        raise ConfigError(f"--lora-targets takes comma-separated layer names such as attn,mlp, got "
                          f"{cfg.lora_targets!r}.")
    if cfg.freeze is not None and (not isinstance(cfg.freeze, str) or not cfg.freeze.strip(", ")):
        raise ConfigError(f"--freeze takes comma-separated parameter paths or globs such as wte,wpe,h.0, got "
                          f"{cfg.freeze!r}.")


SETTABLE = ("lr", "clip", "weight_decay")  # the optimizer's numbers a running fit takes (run.set, --changes)


def _changes(value) -> tuple[dict, ...] | None:
    """--changes as a tuple of {"step": int, number: float}, from `run.changes` (a list of dicts) or its JSON."""
    if value is None:
        return None
    usage = ("--changes takes what run.changes records: a list like [{\"step\": 120, \"lr\": 0.0003}] (a step "
             "and the numbers set there: " + ", ".join(SETTABLE) + "), or its JSON")
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError:
            raise ConfigError(f"{usage}; got {value!r}, which is not JSON.") from None
    if not isinstance(value, (list, tuple)):
        raise ConfigError(f"{usage}; got {type(value).__name__}.")
    out = []
    for item in value:
        if not isinstance(item, dict) or set(item) - {"step", *SETTABLE} or len(item) < 2 or "step" not in item:
            raise ConfigError(f"{usage}; got {item!r}.")
        step = item["step"]
        if isinstance(step, bool) or not isinstance(step, numbers.Real) or not float(step).is_integer() or step < 1:
            raise ConfigError(f"{usage}; the step {step!r} is not a whole number of at least 1.")
        for key, number in item.items():
            if key != "step" and (isinstance(number, bool) or not isinstance(number, numbers.Real)
                                  or not math.isfinite(number) or number < 0):
                raise ConfigError(f"{usage}; {key}={number!r} at step {step} is not a finite number >= 0.")
        out.append({"step": int(step), **{k: float(v) for k, v in item.items() if k != "step"}})
    return tuple(out)


def metric_name(text: str) -> str:
    """A named metric in its one spelling ('Top-5' -> 'top5'), or a ConfigError naming the closest one."""
    key = text.strip().lower().replace("-", "_")
    top = _TOP_K.fullmatch(key)
    if top and int(top.group(1)) >= 1:
        return f"top{int(top.group(1))}"
    if key in METRICS:
        return key
    if key in ("perplexity", "bits_per_token"):
        raise ConfigError(f"--metrics {text!r}: perplexity and bits_per_token are reported for every language-model "
                          "fit, from its loss; leave them out of --metrics.")
    close = difflib.get_close_matches(key, [*METRICS, "top1", "top3", "top10"], n=1)
    hint = f" Did you mean {close[0]!r}?" if close else ""
    raise ConfigError(f"--metrics {text!r} is not a metric; the named ones are accuracy, top<k> (e.g. top5: the label "
                      f"among the k highest scores), mse, mae and cross_entropy.{hint}")


def is_metric_name(text: str) -> bool:
    try:
        metric_name(text)
    except ConfigError:
        return False
    return True


def metrics_spec(value) -> tuple | None:
    """--metrics in one form: None (the loss's own metrics), or a tuple whose items are metric names and
    (name, callable) pairs. Text is comma-separated names ('none': no metric); jl.fit also takes a callable, a list
    of names and callables, or a dict name -> callable."""
    if value is None:
        return None
    if isinstance(value, str):
        items = [p for p in (part.strip() for part in value.split(",")) if p]
        if [p.lower() for p in items] == ["none"]:
            return ()
    elif callable(value):
        items = [value]
    elif isinstance(value, Mapping):
        items = list(value.items())
    elif isinstance(value, (list, tuple)):
        items = list(value)
    else:
        raise ConfigError(f"--metrics takes names such as accuracy,top5 (or, in jl.fit, callables or a dict name -> "
                          f"callable), got {type(value).__name__}.")
    out = []
    for item in items:
        if isinstance(item, str):
            out.append(metric_name(item))
        elif callable(item):
            name = getattr(item, "__name__", "")
            if not name.isidentifier():
                raise ConfigError(f"--metrics: the function {item!r} has no usable name ({name!r}) for the history; "
                                  "name it with a dict, e.g. metrics={'my_metric': fn}.")
            out.append((name, item))
        elif isinstance(item, tuple) and len(item) == 2 and isinstance(item[0], str) and callable(item[1]):
            if not item[0].isidentifier():
                raise ConfigError(f"--metrics: a metric's name must be a Python name (it becomes the history's key "
                                  f"and val_{item[0]}), got {item[0]!r}.")
            out.append(item)
        else:
            raise ConfigError(f"--metrics: {item!r} is neither a metric name nor a callable(outputs, labels).")
    names = [m if isinstance(m, str) else m[0] for m in out]
    for name in names:
        if name in RESERVED_METRIC_NAMES or name.startswith(("val_", "test_")):
            raise ConfigError(f"--metrics: {name!r} is a name the history already uses; give the metric another.")
        if names.count(name) > 1:
            raise ConfigError(f"--metrics names {name!r} twice.")
    return tuple(out)


MESH_AXES = ("data", "fsdp", "model")


def _mesh_text(mesh) -> str | None:
    """--mesh as its one spelling, 'data=D,fsdp=F,model=M' (all three axes, in that order), from text naming any
    of them or a dict; None for the default."""
    if mesh is None:
        return None
    example = "Give it as data=2,fsdp=2,model=2 (any of the three axes, each a whole number of devices)."
    if isinstance(mesh, str):
        pairs = []
        for part in mesh.replace(" ", "").split(","):
            if part.count("=") != 1:
                raise ConfigError(f"--mesh {mesh!r} is not a mesh. {example}")
            pairs.append(tuple(part.split("=")))
    elif isinstance(mesh, dict):
        pairs = list(mesh.items())
    else:
        raise ConfigError(f"--mesh must be text or a dict of axis sizes, got {type(mesh).__name__}. {example}")
    sizes = {}
    for axis, n in pairs:
        if axis not in MESH_AXES:
            raise ConfigError(f"--mesh has no axis {axis!r}; its axes are data, fsdp and model. {example}")
        if axis in sizes:
            raise ConfigError(f"--mesh names {axis} twice. {example}")
        if isinstance(n, numbers.Integral) and not isinstance(n, bool):
            size = int(n)
        elif isinstance(n, str) and n.strip().isdigit():
            size = int(n)
        else:
            raise ConfigError(f"--mesh {axis}={n!r} is not a whole number of devices. {example}")
        if size < 1:
            raise ConfigError(f"--mesh {axis}={size}: a mesh axis has at least 1 device.")
        sizes[axis] = size
    return ",".join(f"{a}={sizes.get(a, 1)}" for a in MESH_AXES)


def _augment_text(augment) -> str | None:
    """--augment as its one spelling ('shift,noise=0.2'; None when off), every name and amount checked."""
    example = "e.g. --augment shift,noise or --augment shift=2,rotate=15 (shift, flip, rotate, noise, or auto)"
    if augment is None or augment is False:
        return None
    if not isinstance(augment, str):
        raise ConfigError(f"--augment takes comma-separated names, {example}; got {type(augment).__name__}.")
    text = augment.strip().lower()
    if text in ("", "off", "none"):
        return None
    parts = []
    for part in text.replace(" ", "").split(","):
        name, eq, amount = part.partition("=")
        if name == "auto" and not eq:
            parts += [p for p in AUGMENT_AUTO if p not in [q.partition("=")[0] for q in parts]]
            continue
        if name not in AUGMENTATIONS:
            close = difflib.get_close_matches(name, [*AUGMENTATIONS, "auto"], n=1)
            hint = f" Did you mean {close[0]!r}?" if close else ""
            raise ConfigError(f"--augment has no {name!r}.{hint} Use {example}.")
        if name in [q.partition("=")[0] for q in parts]:
            raise ConfigError(f"--augment names {name} twice; {example}.")
        if eq:
            if name == "flip":
                raise ConfigError("--augment flip takes no amount: it mirrors half the images left to right.")
            try:
                value = float(amount)
            except ValueError:
                raise ConfigError(f"--augment {part!r}: {amount!r} is not a number; {example}.") from None
            if not (math.isfinite(value) and value > 0) or (name == "shift" and not value.is_integer()):
                unit = {"shift": "a whole number of pixels", "rotate": "degrees", "noise": "a fraction of the "
                        "pixels' standard deviation"}[name]
                raise ConfigError(f"--augment {part!r}: the amount must be positive, {unit}.")
            if name == "rotate" and value > 180:
                raise ConfigError(f"--augment {part!r}: at most 180 degrees either way.")
            parts.append(f"{name}={value:g}")
        else:
            parts.append(name)
    return ",".join(parts)


def _describe(obj) -> str:
    return getattr(obj, "__name__", None) or type(obj).__name__


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _check_int(cfg, name, minimum=None, maximum=None, why=""):
    """Any integer (Python or NumPy, not bool) or a whole float, stored as a Python int."""
    v = getattr(cfg, name)
    if isinstance(v, bool) or not isinstance(v, numbers.Integral):
        if isinstance(v, bool) or not isinstance(v, numbers.Real) or not float(v).is_integer():
            raise ConfigError(f"{_flag(name)} must be a whole number, got {v!r}.")
    v = int(v)
    object.__setattr__(cfg, name, v)
    if minimum is not None and v < minimum:
        raise ConfigError(f"{_flag(name)} must be at least {minimum}, got {v}.")
    if maximum is not None and v > maximum:
        raise ConfigError(f"{_flag(name)} must be at most {maximum}{why}, got {v}.")


def _check_float(cfg, name, minimum=None, maximum=None, strict=False, on_device=True):
    """Any real number (Python or NumPy, not bool), stored as a Python float; `on_device` values must also hold
    in float32, where an overflow becomes inf (a NaN loss) and an underflow 0 (a fit that learns nothing)."""
    v = getattr(cfg, name)
    if isinstance(v, bool) or not isinstance(v, numbers.Real):
        raise ConfigError(f"{_flag(name)} must be a number, got {v!r}.")
    try:
        v = float(v)
    except OverflowError:  # an int beyond float64
        v = math.copysign(math.inf, v)
    object.__setattr__(cfg, name, v)
    if not math.isfinite(v):
        raise ConfigError(f"{_flag(name)} must be finite, got {v}.")
    if minimum is not None and (v <= minimum if strict else v < minimum):
        bound = "greater than" if strict else "at least"
        raise ConfigError(f"{_flag(name)} must be {bound} {minimum}, got {v}.")
    if maximum is not None and v > maximum:
        raise ConfigError(f"{_flag(name)} must be at most {maximum}, got {v}.")
    if on_device:
        check_float32(_flag(name), v, positive=strict and minimum == 0.0)


def check_float32(what: str, v: float, positive: bool) -> None:
    """A value used on the device holds in float32: not inf, and (where it must be positive) not flushed to 0."""
    if abs(v) > FLOAT32_MAX:
        raise ConfigError(f"{what} {v:g} is too large for float32, the precision training computes in "
                          f"(its largest value is {FLOAT32_MAX:.3g}); use a smaller value.")
    if positive and v < FLOAT32_TINY:
        raise ConfigError(f"{what} {v:g} is too small for float32, the precision training computes in: "
                          f"below {FLOAT32_TINY:.3g} it is rounded or flushed to 0. Use a larger value.")


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
