"""Text classification data: labelled sentences as padded token ids, ready for `fit`.

`text_classification(path)` reads a CSV / TSV / JSON Lines file with a text column and a label column
(labelled_files.py); labels may be strings (mapped to 0..C-1 in sorted order, the strings kept as `class_names`) or
integers. The rows are split train / validation / test by a deterministic stratified shuffle, the tokenizer is built
from the training texts only (so the held-out splits never leak into the vocabulary), and every text becomes a row
of `max_len` int32 ids, truncated or padded with 0. `build_dataset` does that last part for any labelled texts (the
sentiment set of sentiment.py too).

Token id 0 is always padding (what `jupyter_llm.models.TextClassifier` masks out); the tokenizers are those of
`jupyter_llm.data.tokenizers`:

* `tokenizer="word"` (the default): a `WordTokenizer`, lower-cased words and punctuation marks, the `max_vocab`
  most frequent words of the training texts; id 0 = `<pad>`, id 1 = `<unk>` (a word never seen in training).
* `tokenizer="char"` or `"bpe"`: the language-model tokenizers, wrapped in a `PaddedTokenizer` that shifts every id
  up by one to keep 0 free. A character that is not in the training texts is skipped (the character tokenizer has
  no unknown token); byte-level BPE covers any text.
"""

from __future__ import annotations

import numbers
import os
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from jupyter_llm.data.dataset import Dataset
from jupyter_llm.data.labelled_files import read_labelled
from jupyter_llm.data.tokenizers import (
    PAD_ID,
    BPETokenizer,
    CharTokenizer,
    PaddedTokenizer,
    WordTokenizer,
    make_tokenizer,
)
from jupyter_llm.errors import ConfigError, DataError

__all__ = ["encode_texts", "text_classification"]


# --------------------------------------------------------------------------------------------------- tokenizers
def _build_tokenizer(tokenizer, texts: Sequence[str], max_vocab: int):
    if isinstance(tokenizer, str):
        if tokenizer == "word":
            return WordTokenizer.train(texts, max_vocab=max_vocab)
        if tokenizer in ("char", "bpe"):
            # The tokenizer's corpus: the training texts, one per line.
            return PaddedTokenizer(make_tokenizer(tokenizer, "\n".join(texts), max_vocab, name="max_vocab"))
        raise ConfigError(f"Unknown tokenizer {tokenizer!r}; use 'word', 'char' or 'bpe', or pass a tokenizer "
                          "object (e.g. the meta['tokenizer'] of another data set).")
    if isinstance(tokenizer, (WordTokenizer, PaddedTokenizer)):
        return tokenizer  # already built (e.g. shared with another data set): used as it is
    if isinstance(tokenizer, (CharTokenizer, BPETokenizer)):
        return PaddedTokenizer(tokenizer)
    if callable(getattr(tokenizer, "encode", None)) and hasattr(tokenizer, "vocab_size"):
        return tokenizer  # a user's own tokenizer: its ids are used as they are, so it must keep 0 for padding
    raise ConfigError(f"tokenizer must be 'word', 'char', 'bpe' or a tokenizer object with encode() and "
                      f"vocab_size; got {type(tokenizer).__name__}.")


def encode_texts(texts: Iterable[str], tokenizer, max_len: int) -> np.ndarray:
    """Token ids of `texts` as an int32 array (N, max_len): each text truncated to its first `max_len` tokens and
    padded with 0 (use it to prepare new sentences for a trained model, with the data set's tokenizer)."""
    if isinstance(texts, str):
        texts = [texts]
    texts = list(texts)
    out = np.zeros((len(texts), int(max_len)), dtype=np.int32)
    for row, t in enumerate(texts):
        ids = np.asarray(tokenizer.encode(t), dtype=np.int32)[: int(max_len)]
        out[row, : len(ids)] = ids
    return out


def _encode_labels(values: Sequence, what: str) -> tuple[np.ndarray, tuple[str, ...]]:
    """int32 labels 0..C-1 and the class names, from ints or strings (sorted order either way)."""
    if all(isinstance(v, int) for v in values):
        classes = sorted(set(values))
        names = tuple(str(c) for c in classes)
    else:
        values = [str(v) for v in values]
        classes = sorted(set(values))
        names = tuple(classes)
    if len(classes) < 2:
        only = names[0] if names else "none"
        raise DataError(f"{what} has only one class ({only!r}); a classifier needs at least two. Check the label "
                        "column, or add examples of the other classes.")
    index = {c: i for i, c in enumerate(classes)}
    return np.asarray([index[v] for v in values], dtype=np.int32), names


# -------------------------------------------------------------------------------------- splitting and building
def check_options(max_len, val_fraction, test_fraction, max_vocab):
    """The options every labelled-text data set takes, checked before any file is read."""
    if isinstance(max_len, bool) or not isinstance(max_len, (int, np.integer)) or max_len < 1:
        raise ConfigError(f"max_len must be a positive integer (tokens per text), got {max_len!r}.")
    if isinstance(max_vocab, bool) or not isinstance(max_vocab, (int, np.integer)) or max_vocab < 1:
        raise ConfigError(f"max_vocab must be a positive integer, got {max_vocab!r}.")
    for name, f in (("val_fraction", val_fraction), ("test_fraction", test_fraction)):
        if not isinstance(f, numbers.Real) or isinstance(f, bool) or not 0.0 <= f < 1.0:
            raise ConfigError(f"{name} must be a fraction in [0, 1), got {f!r}.")
    if val_fraction + test_fraction >= 1.0:
        raise ConfigError(f"val_fraction + test_fraction = {val_fraction + test_fraction:g} leaves nothing to "
                          "train on; keep their sum below 1.")


def _stratified_split(strata: np.ndarray, val_fraction: float, test_fraction: float, seed: int):
    """Index arrays (train, validation, test): each stratum shuffled and cut in the given proportions."""
    rng = np.random.default_rng(seed)
    parts: dict[str, list[np.ndarray]] = {"train": [], "validation": [], "test": []}
    for s in np.unique(strata):
        idx = rng.permutation(np.flatnonzero(strata == s))
        n_test = int(round(len(idx) * test_fraction))
        n_val = int(round(len(idx) * val_fraction))
        parts["test"].append(idx[:n_test])
        parts["validation"].append(idx[n_test:n_test + n_val])
        parts["train"].append(idx[n_test + n_val:])
    return tuple(rng.permutation(np.concatenate(parts[k])) for k in ("train", "validation", "test"))


def build_dataset(texts: Sequence[str], y: np.ndarray, class_names: Sequence[str], *, name: str,
                  description: str, tokenizer, max_len: int, val_fraction: float, test_fraction: float, seed: int,
                  max_vocab: int, strata: np.ndarray | None = None, per_row: dict[str, np.ndarray] | None = None,
                  meta: dict | None = None) -> Dataset:
    """A `Dataset` of labelled texts: split by `strata` (default the labels), the tokenizer built on the training
    texts, every text `max_len` ids; `per_row` columns are split alongside (into `meta[column][split]`)."""
    train, val, test = _stratified_split(y if strata is None else strata, val_fraction, test_fraction, seed)
    if len(train) == 0:
        raise DataError(f"{name!r} has {len(y)} texts, too few to leave any for training after the validation "
                        "and test splits; use more data or smaller val_fraction / test_fraction.")
    texts = np.asarray(texts, dtype=object)
    tok = _build_tokenizer(tokenizer, list(texts[train]), max_vocab)
    splits, split_texts, split_rows = {}, {}, {k: {} for k in (per_row or {})}
    for key, idx in (("train", train), ("validation", val), ("test", test)):
        if len(idx) == 0:
            splits[key] = None
            continue
        splits[key] = (encode_texts(texts[idx], tok, max_len), y[idx].astype(np.int32))
        split_texts[key] = [str(t) for t in texts[idx]]
        for col, values in (per_row or {}).items():
            split_rows[col][key] = np.asarray(values)[idx]
    return Dataset(train=splits["train"], validation=splits["validation"], test=splits["test"], name=name,
                   num_classes=len(class_names), class_names=tuple(class_names), task="classification",
                   description=description,
                   meta={"tokenizer": tok, "max_len": int(max_len), "vocab_size": int(tok.vocab_size),
                         "pad_id": PAD_ID, "texts": split_texts, **split_rows, **(meta or {})})


def text_classification(path, *, text: str = "text", label: str = "label", tokenizer="word", max_len: int = 64,
                        val_fraction: float = 0.1, test_fraction: float = 0.2, seed: int = 0,
                        max_vocab: int = 20000, sep: str | None = None, name: str | None = None) -> Dataset:
    """A `Dataset` of token ids from a labelled-text file.

    The format follows the extension: `.csv` (comma) and `.tsv` (tab) with a header row, read with the `csv`
    module (quoted fields may hold commas and newlines); `.jsonl` / `.json`, one JSON object per line (or a .json
    array of objects). `sep` forces delimited text with that delimiter whatever the extension. `text` and `label`
    name the columns (fields).

    Labels that are all integers keep their order; strings are sorted; either way they become 0..C-1 and the
    original values are the `class_names`. The split is stratified by class and fixed by `seed`:
    `test_fraction` and `val_fraction` of each class go to test and validation, the rest to train. The tokenizer
    ("word", "char", "bpe", or a built tokenizer) is built on the training texts only and kept in
    `meta["tokenizer"]`; `meta["max_len"]` is the row length, `meta["texts"][split]` the texts in row order.
    """
    check_options(max_len, val_fraction, test_fraction, max_vocab)
    p = Path(os.path.expanduser(str(path)))
    texts, raw_labels = read_labelled(p, text, label, sep)
    y, class_names = _encode_labels(raw_labels, f"{str(p)!r} (column {label!r})")
    return build_dataset(texts, y, class_names, name=name or p.stem, description=f"Labelled texts from {p.name}.",
                         tokenizer=tokenizer, max_len=max_len, val_fraction=val_fraction,
                         test_fraction=test_fraction, seed=seed, max_vocab=max_vocab,
                         meta={"path": str(p), "text_column": text, "label_column": label})
