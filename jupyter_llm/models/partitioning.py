"""How a model's parameters split over a mesh's `fsdp` and `model` axes: the model's own word first, then ours.

A spec names, per dimension of a parameter, the mesh axis it is split over (`None`: kept whole). Three sources, in
this order:
1. the model's own `nnx.with_partitioning` annotations (the `out_sharding` metadata of its `nnx.Param`s);
2. tensor-parallel rules for the built-in transformers (GPT, TextClassifier), Megatron-style: the attention's
   input projection and the MLP's first layer split by columns (their outputs: heads and hidden units), the output
   projections by rows, the token embedding (tied to the output layer) by vocabulary — each also split over `fsdp`
   along its other dimension;
3. for any other parameter, FSDP's rule: its largest dimension that `fsdp` divides, split over `fsdp`.
A spec whose axis does not divide its dimension keeps that dimension whole (e.g. a vocabulary of 65 characters over
a `model` axis of 2): sharding is a saving, and correctness does not depend on it.
"""

from __future__ import annotations

from flax import nnx

from jupyter_llm.errors import ConfigError

# (path suffix, spec): the built-in transformers' tensor-parallel rules
TRANSFORMER_RULES = (
    (("attn", "c_attn", "kernel"), ("fsdp", "model")),  # (C, 3C): column parallel
    (("attn", "c_attn", "bias"), ("model",)),
    (("mlp", "c_fc", "kernel"), ("fsdp", "model")),  # (C, 4C): column parallel
    (("mlp", "c_fc", "bias"), ("model",)),
    (("attn", "c_proj", "kernel"), ("model", "fsdp")),  # (C, C): row parallel
    (("mlp", "c_proj", "kernel"), ("model", "fsdp")),  # (4C, C): row parallel
    (("wte", "embedding"), ("model", "fsdp")),  # (V, C): vocabulary parallel
    (("wpe", "embedding"), (None, "fsdp")),
)


def _has_transformer_blocks(model) -> bool:
    return hasattr(model, "h") and hasattr(model, "wte")


def check_tensor_parallel(model, model_axis: int) -> None:
    """A `model` axis must divide the heads and widths it splits: a clear error here, not a wrong shape in XLA."""
    if model_axis <= 1:
        return
    blocks = list(getattr(model, "h", ())) if _has_transformer_blocks(model) else []
    if not blocks and not _annotated(model):
        raise ConfigError(f"A 'model' mesh axis splits a model by its layers' annotations or, for jl.models.GPT "
                          f"and TextClassifier, by attention heads; {type(model).__name__} has neither. Annotate "
                          "its parameters with nnx.with_partitioning, or use the 'data' and 'fsdp' axes.")
    for block in blocks[:1]:
        heads, width = block.attn.n_head, block.attn.n_head * block.attn.head_dim
        if heads % model_axis:
            raise ConfigError(f"The mesh's model axis ({model_axis}) must divide the attention heads "
                              f"({heads}); use model={_divisors_text(heads)}.")
        if width % model_axis:
            raise ConfigError(f"The mesh's model axis ({model_axis}) must divide the model width ({width}).")


def _divisors_text(n: int) -> str:
    return " or ".join(str(d) for d in range(1, n + 1) if n % d == 0)


def _annotated(model) -> bool:
    return any(_annotation(v) for _, v in nnx.iter_graph(model) if isinstance(v, nnx.Param))


def _annotation(var) -> tuple | None:
    meta = var.get_metadata() if hasattr(var, "get_metadata") else {}
    spec = meta.get("out_sharding") or meta.get("sharding_names")
    return tuple(spec) if spec else None


def parameter_specs(model, axis_sizes: dict) -> dict[tuple, tuple]:
    """Every parameter's shape and spec (path -> (shape, one mesh axis or None per dimension)), the spec fitted to
    `axis_sizes`."""
    tp = _has_transformer_blocks(model)
    specs = {}
    for path, var in nnx.iter_graph(model):
        if not isinstance(var, nnx.Param):
            continue
        shape = tuple(var.shape)
        spec = _annotation(var)
        if spec is None and tp:
            spec = next((s for suffix, s in TRANSFORMER_RULES if tuple(path[-len(suffix):]) == suffix), None)
        if spec is None:
            spec = _largest_divisible(shape, axis_sizes.get("fsdp", 1))
        specs[tuple(path)] = (shape, _fitted(spec, shape, axis_sizes))
    return specs


def _largest_divisible(shape: tuple, n: int) -> tuple:
    spec = [None] * len(shape)
    if n > 1:
        dims = sorted((d for d in range(len(shape)) if shape[d] % n == 0), key=lambda d: -shape[d])
        if dims:
            spec[dims[0]] = "fsdp"
    return tuple(spec)


def _fitted(spec: tuple, shape: tuple, axis_sizes: dict) -> tuple:
    spec = tuple(spec) + (None,) * (len(shape) - len(spec))
    return tuple(ax if ax is not None and axis_sizes.get(ax, 1) > 1 and dim % axis_sizes[ax] == 0 else None
                 for ax, dim in zip(spec, shape))
