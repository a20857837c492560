"""Data for a fit: `load(name)` for built-in sets, `text(...)` for language models, `text_classification(...)`
for labelled texts, and the `Dataset` / `TextCorpus` containers.

Built-in names: `digits` (embedded), `mnist` and `fashion_mnist` (downloaded once, checksummed, cached),
`tinyshakespeare` (a TextCorpus, character-level), `sentiment` (the UCI sentiment-labelled sentences).
Downloads are cached under `~/.cache/jupyter_llm`, or `$JUPYTER_LLM_DATA` when set.
"""

from __future__ import annotations

from jupyter_llm.data.dataset import Dataset
from jupyter_llm.data.text import TextCorpus, text

__all__ = ["Dataset", "TextCorpus", "available", "load", "text", "text_classification"]

TEXT_CORPORA = ("tinyshakespeare",)


def available() -> list[str]:
    from jupyter_llm.data import builtin

    return sorted({*builtin.available(), *TEXT_CORPORA, "sentiment"})


def load(name: str, **kwargs):
    """A built-in dataset by name: a `Dataset`, or a `TextCorpus` for text corpora."""
    if name in TEXT_CORPORA:
        from jupyter_llm.data.builtin import load_text

        options = {k: kwargs.pop(k) for k in ("tokenizer", "block_size", "val_fraction", "vocab_size") if k in kwargs}
        return text(load_text(name, **kwargs), name=name, **options)
    if name == "sentiment":
        from jupyter_llm.data.classification import load_sentiment, sentiment_from_dir

        path = kwargs.pop("path", None)
        return sentiment_from_dir(path, **kwargs) if path else load_sentiment(**kwargs)
    from jupyter_llm.data.builtin import load as load_builtin

    return load_builtin(name, **kwargs)


def text_classification(path, **kwargs) -> Dataset:
    """Labelled texts from a CSV / TSV / JSON Lines file (see `jupyter_llm.data.classification`)."""
    from jupyter_llm.data.classification import text_classification as read

    return read(path, **kwargs)
