"""A model by name for the command line: a built-in one sized for the data (`--model mlp`, `--model gpt-char-tiny`),
or a pretrained GPT-2 (`--model gpt2`, or a Hugging Face folder) with the data tokenized by its own tokenizer.

Here, on the orchestration floor, because it joins the two parts below it: models never import data.
"""

from __future__ import annotations

import difflib
import os

import numpy as np
from flax import nnx

from jupyter_llm import hub, models
from jupyter_llm.data import builtin
from jupyter_llm.data.text import TextCorpus, text
from jupyter_llm.errors import ConfigError
from jupyter_llm.models.gpt import PRESETS


def build_model(name: str, dataset, *, seed: int = 0):
    """A built-in model by name, sized for `dataset` (used by the command line: `--model mlp`).

    Names: `mlp`, `cnn` for (x, y) data; the GPT presets (`gpt-char-tiny`, `gpt-mini`, `gpt2-small`) for a
    TextCorpus, with the corpus's vocabulary; `text-classifier` for labelled texts (`text_classification`).
    """
    rngs = nnx.Rngs(seed)
    if isinstance(dataset, TextCorpus):
        if name in PRESETS:
            return models.GPT.from_preset(name, vocab_size=dataset.vocab_size, rngs=rngs)
        choices = list(PRESETS)
    elif getattr(dataset, "meta", {}).get("tokenizer") is not None:  # token ids of labelled texts
        if name == "text-classifier":
            classes = dataset.num_classes or int(np.max(dataset.train[1])) + 1
            return models.TextClassifier(vocab_size=dataset.meta["tokenizer"].vocab_size, num_classes=classes,
                                         block_size=dataset.input_shape[0], rngs=rngs)
        choices = ["text-classifier"]
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


def is_pretrained(name: str) -> bool:
    """A pinned checkpoint name (gpt2, ...) or a folder in Hugging Face's format (one holding config.json)."""
    path = os.path.expanduser(str(name))
    return name in hub.CHECKPOINTS or os.path.isfile(os.path.join(path, "config.json"))


def pretrained_with_text(name: str, data: str, *, block_size: int | None = None):
    """(GPT, TextCorpus): the pretrained GPT-2 `name` and `data` — a text file or a built-in corpus name —
    tokenized with the checkpoint's own tokenizer (a folder's tokenizer.json, or GPT-2's for a pinned name), in
    windows of `block_size` tokens (default: the model's context)."""
    model = models.GPT.from_pretrained(name)
    tokenizer = hub.TOKENIZER_OF.get(name) or os.path.expanduser(name)
    if os.path.isfile(os.path.expanduser(data)):
        source, label = os.path.expanduser(data), None
    elif data in builtin.TEXTS:
        source, label = builtin.load_text(data), data
    else:
        raise ConfigError(f"--data {data!r} is neither a text file nor a built-in text corpus "
                          f"({', '.join(builtin.TEXTS)}); a pretrained language model trains on text.")
    corpus = text(source, tokenizer=tokenizer, block_size=block_size or model.block_size, name=label)
    return model, corpus
