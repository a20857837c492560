"""A built-in model's architecture as plain JSON, and the model built again from it: what lets `jl.load` make the
model of a saved run without the code that made it.

`describe(model)` reads the architecture off the model itself (its layers' sizes, its activation's name, its
dropout rates, its LoRA adapters), so a model built by hand, by a preset or by `from_pretrained` is described alike.
A model of the user's own class (or a built-in one with a callable activation) is described by its class name only:
it is built again from a template the user gives (`jl.load(dir, model=...)`), to which the recorded adapters are
added.
"""

from __future__ import annotations

import dataclasses

from flax import nnx

from jupyter_llm.models.activations import ACTIVATIONS
from jupyter_llm.models.classifier import TextClassifier
from jupyter_llm.models.cnn import CNN
from jupyter_llm.models.gpt import GPT
from jupyter_llm.models.lora import LoRALinear, _set, linear_layers
from jupyter_llm.models.mlp import MLP

BUILT_IN = {"MLP": MLP, "CNN": CNN, "GPT": GPT, "TextClassifier": TextClassifier}


def _rate(dropout) -> float:
    return float(dropout.rate) if dropout is not None else 0.0


def _arguments(model) -> dict | None:
    """The constructor's keywords that make `model` again (without rngs), or None when that is not known."""
    kind = type(model)
    if kind in (MLP, CNN):  # an activation of the user's own has no name to build it from
        activation = next((name for name, fn in ACTIVATIONS.items() if fn is model.act), None)
        if activation is None:
            return None
    if kind is MLP:
        return {"in_features": model.in_features, "hidden": [layer.out_features for layer in model.hidden],
                "num_classes": model.num_classes, "activation": activation, "dropout": _rate(model.dropout)}
    if kind is CNN:
        return {"in_channels": model.in_channels, "num_classes": model.num_classes,
                "channels": [conv.out_features for conv in model.convs], "hidden": model.hidden.out_features,
                "activation": activation, "dropout": _rate(model.dropout), "pool": model.pool}
    if kind is GPT:
        return dataclasses.asdict(model.config)
    if kind is TextClassifier:
        block = model.h[0]
        return {"vocab_size": model.wte.num_embeddings, "num_classes": model.head.out_features,
                "block_size": model.block_size, "n_layer": len(model.h), "n_head": block.attn.n_head,
                "n_embd": model.wte.features, "dropout": _rate(model.drop), "pooling": model.pooling}
    return None


def describe(model: nnx.Module) -> dict:
    """{"class": ..., "arguments": {...} or None, "adapters": [...]}: plain JSON."""
    kind = type(model)
    name = kind.__name__ if BUILT_IN.get(kind.__name__) is kind else f"{kind.__module__}.{kind.__qualname__}"
    adapters = [{"path": list(path), "rank": layer.lora_rank, "scale": layer.lora_scale,
                 "dropout": _rate(layer.lora_dropout)}
                for path, layer in linear_layers(model) if isinstance(layer, LoRALinear)]
    return {"class": name, "arguments": _arguments(model), "adapters": adapters}


def buildable(description: dict) -> bool:
    return description.get("class") in BUILT_IN and isinstance(description.get("arguments"), dict)


def build(description: dict, *, seed: int = 0) -> nnx.Module:
    """The model `description` names, freshly initialised (the caller restores the weights), adapters included."""
    model = BUILT_IN[description["class"]](**description["arguments"], rngs=nnx.Rngs(seed))
    add_recorded_adapters(model, description.get("adapters") or [], seed=seed)
    return model


def add_recorded_adapters(model: nnx.Module, adapters: list, *, seed: int = 0) -> None:
    """Give `model` the adapters a description records, at the same paths (a layer adapted already is kept)."""
    if not adapters:
        return
    layers = {tuple(path): layer for path, layer in linear_layers(model)}
    rngs = nnx.Rngs(seed)
    for adapter in adapters:
        path = tuple(adapter["path"])
        layer = layers.get(path)
        if layer is None or isinstance(layer, LoRALinear):
            continue  # missing: the restore names it; adapted: the restore checks its shapes
        rank = int(adapter["rank"])
        _set(model, path, LoRALinear(layer, rank, float(adapter["scale"]) * rank, float(adapter["dropout"]),
                                     rngs=rngs))
