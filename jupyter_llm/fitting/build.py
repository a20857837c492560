"""A built-in model by name, sized for a dataset: the command line's `--model mlp` or `--model gpt-char-tiny`.

Here, on the orchestration floor, because it joins the two parts below it: models never import data.
"""

from __future__ import annotations

import difflib

import numpy as np
from flax import nnx

from jupyter_llm import models
from jupyter_llm.data.text import TextCorpus
from jupyter_llm.errors import ConfigError
from jupyter_llm.models.gpt import PRESETS


def build_model(name: str, dataset, *, seed: int = 0):
    """A built-in model by name, sized for `dataset` (used by the command line: `--model mlp`).

    Names: `mlp`, `cnn` for (x, y) data; the GPT presets (`gpt-char-tiny`, `gpt-mini`, `gpt2-small`) for a
    TextCorpus, with the corpus's vocabulary.
    """
    rngs = nnx.Rngs(seed)
    if isinstance(dataset, TextCorpus):
        if name in PRESETS:
            return models.GPT.from_preset(name, vocab_size=dataset.vocab_size, rngs=rngs)
        choices = list(PRESETS)
    else:
        shape = dataset.input_shape
        classes = dataset.num_classes or int(np.max(dataset.train[1])) + 1
        if name == "mlp":
            return models.MLP(in_features=int(np.prod(shape)), hidden=[128], num_classes=classes, rngs=rngs)
        if name == "cnn":
            channels = shape[-1] if len(shape) == 3 else 1
            return models.CNN(in_channels=channels, num_classes=classes, rngs=rngs)
        choices = ["mlp", "cnn"]
    close = difflib.get_close_matches(name, choices, n=1)
    hint = f" Did you mean {close[0]!r}?" if close else ""
    raise ConfigError(f"Unknown model {name!r} for this data; built-in models: {', '.join(choices)}.{hint}")
