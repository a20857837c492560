"""Every name `jl.datasets.load` accepts, in one list: the built-in image sets, the text corpora, the sentiment set.

The names are served by different modules (builtin.py, classification.py); only here are they all known, so an
unknown name is answered here, with the whole list and the closest match.
"""

from __future__ import annotations

from jupyter_llm.data import builtin
from jupyter_llm.data.sentiment import load_sentiment, sentiment_from_dir
from jupyter_llm.data.text import text
from jupyter_llm.errors import DatasetNotFound

TEXT_CORPORA = tuple(builtin.TEXTS)


def available() -> list[str]:
    return sorted({*builtin.available(), *TEXT_CORPORA, "sentiment"})


def load(name: str, **kwargs):
    """A built-in dataset by name: a `Dataset`, or a `TextCorpus` for text corpora. Loaded with no options, its
    `meta["loaded_as"]` is the name: a saved run records it, so `jl.load` can find the data again."""
    data = _load(name, **kwargs)
    if not kwargs:
        data.meta["loaded_as"] = name
    return data


def _load(name: str, **kwargs):
    if name in TEXT_CORPORA:
        options = {k: kwargs.pop(k) for k in ("tokenizer", "block_size", "val_fraction", "vocab_size") if k in kwargs}
        return text(builtin.load_text(name, **kwargs), name=name, **options)
    if name == "sentiment":
        path = kwargs.pop("path", None)
        return sentiment_from_dir(path, **kwargs) if path else load_sentiment(**kwargs)
    if name not in builtin.available():
        raise DatasetNotFound(builtin.unknown_name(name, available()))
    return builtin.load(name, **kwargs)
