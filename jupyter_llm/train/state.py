"""TrainState: everything a training step changes, as one pytree (donated to each compiled call).

What is trained is one idea, `Trainable`: a filter over the model's variables. Its matches are the state's `params`
(differentiated, with optimizer moments); every other variable, frozen weights included, is `rest`, which the step
carries through unchanged. Full fine-tuning trains every `nnx.Param`; `--freeze PATTERN` leaves out the matched
ones; `--lora` trains only the adapters (`nnx.LoRAParam`), so the base weights sit in `rest`.
"""

from __future__ import annotations

import dataclasses
import fnmatch
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from flax import nnx

from jupyter_llm.errors import ConfigError


class TrainState(NamedTuple):
    params: Any  # nnx.State of the model's nnx.Param variables
    rest: Any  # nnx.State of everything else (RNG streams, batch statistics)
    opt_state: Any
    step: jax.Array  # int32: training steps completed
    bad_step: jax.Array  # int32: first step whose loss or new weights were not finite; -1 while none was
    skipped: jax.Array  # int32: non-finite updates skipped so far (--skip-nonfinite)


def dotted(path) -> str:
    """A variable's path as text: ('h', 0, 'attn', 'c_attn', 'kernel') -> 'h.0.attn.c_attn.kernel'."""
    return ".".join(str(k) for k in path)


def _matches(name: str, pattern: str) -> bool:
    """A pattern names a parameter's dotted path or anything below it ('h.0' is h.0.*, never h.10); '*' and '?'
    are fnmatch globs, and '*' also crosses dots."""
    return fnmatch.fnmatchcase(name, pattern) or fnmatch.fnmatchcase(name, pattern + ".*")


@dataclasses.dataclass(frozen=True)
class Trainable:
    """The variables a fit trains: those of type `kind` whose path matches none of `frozen`. Hashable, as it shapes
    the compiled step (the cache of programs keys on it); callable as an nnx filter `(path, variable) -> bool`."""

    kind: type = nnx.Param
    frozen: tuple[str, ...] = ()

    def __call__(self, path, variable) -> bool:
        if not isinstance(variable, self.kind):
            return False
        name = dotted(path)
        return not any(_matches(name, p) for p in self.frozen)


ALL_PARAMS = Trainable()


def trainable_for(config) -> Trainable:
    """What a FitConfig trains: the adapters with --lora, otherwise every parameter; less the --freeze matches."""
    kind = nnx.LoRAParam if config.lora else nnx.Param
    return Trainable(kind, parse_patterns(config.freeze) if config.freeze else ())


def parse_patterns(text) -> tuple[str, ...]:
    """--freeze's text ('wte,wpe,h.0') as its patterns; empty items dropped."""
    if not isinstance(text, str):
        raise ConfigError(f"--freeze takes comma-separated parameter paths or globs (e.g. wte,wpe,h.0), got "
                          f"{type(text).__name__}.")
    return tuple(p.strip() for p in text.split(",") if p.strip())


def check_freeze(model: nnx.Module, trainable: Trainable) -> None:
    """Each --freeze pattern names at least one parameter the fit would otherwise train, and something is left to
    train: a typo must not silently train everything, nor a broad pattern silently nothing."""
    if not trainable.frozen:
        return
    names = [dotted(path) for path, v in nnx.to_flat_state(nnx.state(model, trainable.kind))]
    for pattern in trainable.frozen:
        if not any(_matches(n, pattern) for n in names):
            shown = ", ".join(names[:6]) + (", ..." if len(names) > 6 else "")
            if trainable.kind is nnx.LoRAParam:
                raise ConfigError(f"--freeze {pattern!r} matches no adapter of {type(model).__name__}: with --lora "
                                  f"only the adapters train (named like {shown}), everything else is frozen "
                                  "already.")
            raise ConfigError(f"--freeze {pattern!r} matches no parameter of {type(model).__name__}; its parameters "
                              f"are named like {shown}. A pattern is a dotted path (wte, h.0 for a whole block) or "
                              "an fnmatch glob (h.*.ln_1).")
    if all(any(_matches(n, p) for p in trainable.frozen) for n in names):
        raise ConfigError(f"--freeze {','.join(trainable.frozen)!r} freezes every parameter of "
                          f"{type(model).__name__}, so nothing would train. Name fewer parameters.")


def split_model(model: nnx.Module, *, train: bool, trainable=ALL_PARAMS):
    """(graphdef, params, rest) of a train-mode or eval-mode view of `model`: `params` are the variables
    `trainable` matches, `rest` everything else. The model itself is not changed."""
    flags = dict(deterministic=not train, use_running_average=not train)
    view = nnx.view(model, raise_if_not_found=False, **flags)
    return nnx.split(view, trainable, ...)


def fresh_copy(tree):
    """Copy every array so donating the train state never deletes the buffers the user's model still holds."""
    return jax.tree.map(lambda a: a.copy() if isinstance(a, jax.Array) else a, tree)


def init_state(params, rest, optimizer, *, copy: bool = True) -> TrainState:
    """A fresh train state (`optimizer`: anything with `init(params)`, an `optim.Optimizer` or an optax
    transformation); `copy=False` only for abstract evaluation (`jax.eval_shape`), where nothing is donated."""
    if copy:
        params, rest = fresh_copy(params), fresh_copy(rest)
    return TrainState(params, rest, optimizer.init(params), jnp.zeros((), jnp.int32), jnp.full((), -1, jnp.int32),
                      jnp.zeros((), jnp.int32))


def count_params(params) -> int:
    return int(sum(getattr(x, "size", 0) for x in jax.tree.leaves(params)))
