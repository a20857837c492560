"""Data for a fit: `load(name)` for built-in sets, `text(...)` for language models, `instructions(...)` for
fine-tuning one on (prompt, response) pairs, `text_classification(...)` for labelled texts, and the `Dataset` /
`TextCorpus` containers.

Built-in names: `digits` (embedded), `mnist` and `fashion_mnist` (downloaded once, checksummed, cached),
`tinyshakespeare` (a TextCorpus, character-level), `sentiment` (the UCI sentiment-labelled sentences).
Downloads are cached under `~/.cache/jupyter_llm`, or `$JUPYTER_LLM_DATA` when set.

This module is the public face (`jl.datasets`); the work is done in `jupyter_llm.data`.
"""

from __future__ import annotations

from jupyter_llm.data.catalog import available, load
from jupyter_llm.data.classification import text_classification
from jupyter_llm.data.dataset import Dataset
from jupyter_llm.data.instructions import instructions
from jupyter_llm.data.text import TextCorpus, text

__all__ = ["Dataset", "TextCorpus", "available", "instructions", "load", "text", "text_classification"]
