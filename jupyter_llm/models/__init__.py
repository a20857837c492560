"""Flax NNX models: MLP and CNN for images, GPT for language, TextClassifier for sentiment."""

from __future__ import annotations

import importlib

_LAZY = {
    "MLP": "jupyter_llm.models.mlp",
    "CNN": "jupyter_llm.models.cnn",
    "GPT": "jupyter_llm.models.gpt",
    "GPTConfig": "jupyter_llm.models.gpt",
    "TextClassifier": "jupyter_llm.models.classifier",
}
__all__ = list(_LAZY)


def __getattr__(name: str):
    if name not in _LAZY:
        raise AttributeError(f"module 'jupyter_llm.models' has no attribute {name!r}")
    value = getattr(importlib.import_module(_LAZY[name]), name)
    globals()[name] = value
    return value
