"""Text corpora for language models: a token stream split into train and validation parts.

`text(path_or_string, tokenizer="char", block_size=64, val_fraction=0.1)` reads a local text file (or takes the text
itself), builds the tokenizer from it, and keeps the last `val_fraction` of the tokens for validation, so the two
parts never overlap. Batches are random windows drawn on the device during the fit.
"""

from __future__ import annotations

import numbers
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from jupyter_llm.data import aligned
from jupyter_llm.data.tokenizers import make_tokenizer
from jupyter_llm.errors import ConfigError, DataError, DatasetNotFound


@dataclass(frozen=True)
class TextCorpus:
    """Token ids of a corpus (int32), its tokenizer, and the default window length."""

    train: np.ndarray
    validation: np.ndarray | None
    tokenizer: Any
    name: str = "text"
    block_size: int | None = None
    meta: dict = field(default_factory=dict)

    @property
    def vocab_size(self) -> int:
        return self.tokenizer.vocab_size

    def sizes(self) -> dict[str, int]:
        return {"train": len(self.train), "validation": 0 if self.validation is None else len(self.validation),
                "test": 0}

    def __repr__(self):
        return (f"TextCorpus({self.name!r}, train={len(self.train):,} tokens, validation="
                f"{self.sizes()['validation']:,} tokens, vocab_size={self.vocab_size}, block_size={self.block_size})")


def read_text(path) -> str:
    p = Path(os.path.expanduser(str(path)))
    if not p.is_file():
        raise DatasetNotFound(f"Cannot read the text file {str(p)!r}: it does not exist or is not a file.")
    try:
        return p.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise DataError(f"{str(p)!r} is not UTF-8 text ({exc.reason} at byte {exc.start}); convert it to UTF-8."
                        ) from None
    except OSError as exc:
        raise DatasetNotFound(f"Cannot read the text file {str(p)!r}: {exc.strerror}.") from None


def _looks_like_path(source: str) -> bool:
    """An existing file, or a short string with no spaces that has a suffix or a slash (a mistyped path must
    fail loudly instead of becoming a corpus of one line)."""
    if len(source) > 1024 or "\n" in source:
        return False
    if os.path.isfile(os.path.expanduser(source)):
        return True
    if source.startswith(("/", "~", "./", "../")) or Path(source).suffix.lower() in _TEXT_SUFFIXES:
        return True  # e.g. 'my corpus.txt': spaces and all, a missing file, not a one-line corpus
    return not any(c.isspace() for c in source) and (Path(source).suffix != "" or os.sep in source)


_TEXT_SUFFIXES = {".txt", ".text", ".md", ".csv", ".tsv", ".json", ".jsonl", ".xml", ".html"}


def text(source, *, tokenizer="char", block_size: int = 64, val_fraction: float = 0.1, vocab_size: int | None = None,
         name: str | None = None) -> TextCorpus:
    """A TextCorpus from a local file path or a string of text."""
    if not isinstance(source, (str, os.PathLike)):
        raise DataError(f"jl.datasets.text takes a file path or a string of text, got {type(source).__name__}.")
    block_size, val_fraction = _check_options(block_size, val_fraction)
    is_path = isinstance(source, os.PathLike) or _looks_like_path(source)
    body = read_text(source) if is_path else str(source)
    label = name or (Path(str(source)).stem if is_path else "text")
    if not body.strip():
        raise DataError(f"The text {label!r} is empty; a language model needs a corpus to learn from.")
    tok = make_tokenizer(tokenizer, body, vocab_size)
    ids = tok.encode(body)
    n_val = int(len(ids) * val_fraction)
    # aligned copies, which the CPU device reads in place (data/aligned.py): no second copy of the corpus
    train = aligned.astype(ids[: len(ids) - n_val], np.int32)
    val = aligned.astype(ids[len(ids) - n_val:], np.int32) if n_val else None
    del ids
    for part, arr in (("training", train), ("validation", val)):
        if arr is not None and len(arr) <= block_size:
            raise DataError(f"The {part} part of {label!r} has {len(arr)} tokens, not more than block_size="
                            f"{block_size}; use a longer text, a smaller block_size or a different val_fraction.")
    meta = {"path": os.path.abspath(os.path.expanduser(str(source)))} if is_path else {}
    return TextCorpus(train=train, validation=val, tokenizer=tok, name=label, block_size=block_size, meta=meta)


def _check_options(block_size, val_fraction) -> tuple[int, float]:
    """(block_size, val_fraction) as int and float, checked before the text is read or a tokenizer trained."""
    whole = isinstance(block_size, numbers.Integral) or (isinstance(block_size, numbers.Real)
                                                         and float(block_size).is_integer())
    if isinstance(block_size, bool) or not whole or block_size < 1:
        raise ConfigError(f"block_size must be a positive whole number (tokens per training window), got "
                          f"{block_size!r}.")
    if isinstance(val_fraction, bool) or not isinstance(val_fraction, numbers.Real) or not 0.0 <= val_fraction < 1.0:
        raise ConfigError(f"val_fraction must be a number in [0, 1) (the share of the text kept for validation), "
                          f"got {val_fraction!r}.")
    return int(block_size), float(val_fraction)
