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
__all__ = [*_LAZY, "build"]


def __getattr__(name: str):
    if name not in _LAZY:
        raise AttributeError(f"module 'jupyter_llm.models' has no attribute {name!r}")
    value = getattr(importlib.import_module(_LAZY[name]), name)
    globals()[name] = value
    return value


def build(name: str, dataset, *, seed: int = 0):
    """A built-in model by name, sized for `dataset` (used by the command line: `--model mlp`).

    Names: `mlp`, `cnn` for (x, y) data; the GPT presets (`gpt-char-tiny`, `gpt-mini`, `gpt2-small`) for a
    TextCorpus, with the corpus's vocabulary.
    """
    import difflib

    import numpy as np
    from flax import nnx

    from jupyter_llm.data.text import TextCorpus
    from jupyter_llm.errors import ConfigError
    from jupyter_llm.models.gpt import PRESETS

    rngs = nnx.Rngs(seed)
    if isinstance(dataset, TextCorpus):
        if name in PRESETS:
            return __getattr__("GPT").from_preset(name, vocab_size=dataset.vocab_size, rngs=rngs)
        choices = list(PRESETS)
    else:
        shape = dataset.input_shape
        classes = dataset.num_classes or int(np.max(dataset.train[1])) + 1
        if name == "mlp":
            return __getattr__("MLP")(in_features=int(np.prod(shape)), hidden=[128], num_classes=classes, rngs=rngs)
        if name == "cnn":
            channels = shape[-1] if len(shape) == 3 else 1
            return __getattr__("CNN")(in_channels=channels, num_classes=classes, rngs=rngs)
        choices = ["mlp", "cnn"]
    close = difflib.get_close_matches(name, choices, n=1)
    hint = f" Did you mean {close[0]!r}?" if close else ""
    raise ConfigError(f"Unknown model {name!r} for this data; built-in models: {', '.join(choices)}.{hint}")
