"""Low-rank adapters (LoRA) on a model's `nnx.Linear` layers, added in place: `y = x W + b + dropout(x) A B · α/r`.

An adapted layer is a `LoRALinear`: the same `nnx.Linear` (it shares the original kernel and bias variables, so the
paths `...c_attn.kernel` and `...c_attn.bias` stay where they were) plus `lora_a` (in × r, He-uniform) and `lora_b`
(r × out, zeros), both `nnx.LoRAParam`. B starts at zero, so the adapted model computes exactly what the base did.
Flax's own `nnx.LoRALinear` builds a new kernel and has neither the α/r scale nor dropout; this one wraps the
weights a model already holds. `merged(model)` folds the adapters into plain kernels (W + A B · α/r) for export.
"""

from __future__ import annotations

import fnmatch

import jax
import jax.numpy as jnp
from flax import nnx

from jupyter_llm.errors import ConfigError

DEFAULT_TARGETS = "attn,mlp"


def _copy_attributes(dst: nnx.Module, src: nnx.Module, skip=()) -> None:
    for name, value in vars(src).items():
        if not name.startswith("_") and name not in skip:
            setattr(dst, name, value)


class LoRALinear(nnx.Linear):
    """An `nnx.Linear` with a low-rank adapter: `base`'s own variables (shared, not copied) plus A and B."""

    def __init__(self, base: nnx.Linear, rank: int, alpha: float, dropout: float = 0.0, *, rngs: nnx.Rngs):
        _copy_attributes(self, base)
        self.lora_rank, self.lora_scale = int(rank), float(alpha) / int(rank)
        self.lora_a = nnx.LoRAParam(nnx.initializers.he_uniform()(rngs.params(), (base.in_features, rank),
                                                                  jnp.float32))
        self.lora_b = nnx.LoRAParam(jnp.zeros((rank, base.out_features), jnp.float32))
        self.lora_dropout = nnx.Dropout(dropout, rngs=rngs) if dropout else None

    def __call__(self, x):
        y = super().__call__(x)
        h = self.lora_dropout(x) if self.lora_dropout is not None else x
        a, b = self.lora_a[...].astype(h.dtype), self.lora_b[...].astype(h.dtype)
        return y + ((h @ a @ b) * self.lora_scale).astype(y.dtype)

    def delta(self):
        """The adapter as a full matrix, A B · α/r (what merging adds to the kernel)."""
        return (self.lora_a[...] @ self.lora_b[...]) * self.lora_scale

    def plain(self, *, merge: bool) -> nnx.Linear:
        """This layer as an `nnx.Linear` again: the base weights, or with `merge` the adapter folded in."""
        linear = nnx.eval_shape(lambda: nnx.Linear(self.in_features, self.out_features, use_bias=self.use_bias,
                                                   rngs=nnx.Rngs(0)))
        _copy_attributes(linear, self, skip=("lora_rank", "lora_scale", "lora_a", "lora_b", "lora_dropout"))
        if merge:
            kernel = self.kernel[...]
            linear.kernel = nnx.Param((kernel + self.delta()).astype(kernel.dtype))
        return linear


def _dotted(path) -> str:
    return ".".join(str(k) for k in path)


def _target_matches(name: str, target: str) -> bool:
    """A target names a layer by a dotted piece of its path, anywhere ('attn' is every layer under an attn,
    'c_fc' every c_fc, 'h.0.attn.c_attn' one layer); '*' and '?' are fnmatch globs."""
    return any(fnmatch.fnmatchcase(name, p) for p in (target, f"*.{target}", f"{target}.*", f"*.{target}.*"))


def parse_targets(text) -> tuple[str, ...]:
    if not isinstance(text, str) or not text.strip(",").strip():
        raise ConfigError(f"--lora-targets takes comma-separated layer names, e.g. {DEFAULT_TARGETS} or c_attn, got "
                          f"{text!r}.")
    return tuple(t.strip() for t in text.split(",") if t.strip())


def linear_layers(model: nnx.Module) -> list[tuple[tuple, nnx.Linear]]:
    """(path, layer) of every `nnx.Linear` in `model` (adapted ones included), in graph order."""
    return [(path, node) for path, node in nnx.iter_graph(model) if isinstance(node, nnx.Linear)]


def _parent(model, path):
    node = model
    for key in path[:-1]:
        node = node[key] if isinstance(key, int) else getattr(node, key)
    return node


def _set(model, path, value) -> None:
    parent, key = _parent(model, path), path[-1]
    if isinstance(key, int):
        parent[key] = value
    else:
        setattr(parent, key, value)


def add_adapters(model: nnx.Module, rank: int, alpha: float, targets: str = DEFAULT_TARGETS, dropout: float = 0.0,
                 *, seed: int = 0) -> list[tuple]:
    """Give each targeted `nnx.Linear` of `model` an adapter, in place; returns the paths of the layers it adapted
    (a layer already adapted alike is kept as it is, adapters and all: a second fit continues them)."""
    wanted = parse_targets(targets)
    layers = linear_layers(model)
    names = [_dotted(p) for p, _ in layers]
    if not names:
        raise ConfigError(f"{type(model).__name__} has no nnx.Linear layer for --lora to adapt; train its weights "
                          "(leave out --lora) or freeze some with --freeze.")
    for target in wanted:
        if not any(_target_matches(n, target) for n in names):
            have = ", ".join(names[:6]) + (", ..." if len(names) > 6 else "")
            raise ConfigError(f"--lora-targets {targets!r}: {target!r} names no nnx.Linear layer of "
                              f"{type(model).__name__}, whose linear layers are {have}. Name the layers to adapt by "
                              "a piece of their path (attn, mlp, c_attn, c_fc for a GPT) or a glob.")
    key = jax.random.fold_in(jax.random.key(seed), 0x4C6F5241)  # not the stream a model built from `seed` drew
    rngs = nnx.Rngs(params=jax.random.fold_in(key, 0), dropout=jax.random.fold_in(key, 1))
    added = []
    for (path, layer), name in zip(layers, names):
        if not any(_target_matches(name, t) for t in wanted):
            continue
        if isinstance(layer, LoRALinear):
            same = layer.lora_rank == rank and abs(layer.lora_scale - alpha / rank) < 1e-12
            if not same:
                raise ConfigError(f"{type(model).__name__}'s layer {name} already has an adapter of rank "
                                  f"{layer.lora_rank} (scale {layer.lora_scale:g}); this fit asks for --lora {rank} "
                                  f"with scale {alpha / rank:g}. Keep the first settings, or start from the base "
                                  "model.")
            continue
        _set(model, path, LoRALinear(layer, rank, alpha, dropout, rngs=rngs))
        added.append(path)
    return added


def remove_adapters(model: nnx.Module, paths=None, *, merge: bool = False) -> None:
    """Put plain `nnx.Linear`s back in place of adapted layers (those at `paths`, or all), in place; with `merge`
    the adapters are folded into the kernels, otherwise dropped."""
    for path, layer in linear_layers(model):
        if isinstance(layer, LoRALinear) and (paths is None or path in paths):
            _set(model, path, layer.plain(merge=merge))


def adapted_layers(model: nnx.Module) -> set[tuple]:
    """The paths of `model`'s adapted layers."""
    return {path for path, layer in linear_layers(model) if isinstance(layer, LoRALinear)}


def has_adapters(model: nnx.Module) -> bool:
    return any(isinstance(layer, LoRALinear) for _, layer in linear_layers(model))


def merged(model: nnx.Module) -> nnx.Module:
    """A copy of `model` whose adapted layers are plain `nnx.Linear`s with W + A B · α/r; `model` is unchanged."""
    copy = nnx.clone(model)
    remove_adapters(copy, merge=True)
    return copy
