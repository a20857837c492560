"""Tokenizers that travel with a run: character-level (built from the corpus) and byte-pair encoding.

Both serialise to plain JSON (`to_dict` / `tokenizer_from_dict`), so a checkpoint or a saved run decodes exactly as
the fit did — no pickle. BPE is trained on the corpus itself with Hugging Face `tokenizers` (nothing downloaded).
"""

from __future__ import annotations

import json
import numbers

import numpy as np

from jupyter_llm.errors import ConfigError, DataError

BPE_MIN_VOCAB = 256  # byte-level BPE starts from the 256 byte values; merges only add to them
BPE_MAX_VOCAB = 2**20  # `tokenizers` reserves memory for the whole vocabulary up front: near 2**32 it aborts Python


class CharTokenizer:
    """One token per distinct character of the corpus, in sorted order (as nanoGPT's shakespeare_char)."""

    kind = "char"

    def __init__(self, chars):
        self.chars = list(chars)
        self._index = {c: i for i, c in enumerate(self.chars)}

    @classmethod
    def train(cls, text: str) -> "CharTokenizer":
        return cls(sorted(set(text)))

    @property
    def vocab_size(self) -> int:
        return len(self.chars)

    def encode(self, text: str) -> np.ndarray:
        try:
            return np.fromiter((self._index[c] for c in text), dtype=np.int32, count=len(text))
        except KeyError:
            unknown = sorted({c for c in text if c not in self._index})
            raise DataError(f"The text has {len(unknown)} character(s) that are not in the model's vocabulary: "
                            f"{''.join(unknown)!r}. Use only characters of the training corpus.") from None

    def decode(self, ids) -> str:
        return "".join(self.chars[int(i)] for i in np.asarray(ids).reshape(-1))

    def to_dict(self) -> dict:
        return {"kind": self.kind, "chars": "".join(self.chars)}

    def __repr__(self):
        return f"CharTokenizer(vocab_size={self.vocab_size})"


class BPETokenizer:
    """Byte-level BPE trained on the corpus (Hugging Face `tokenizers`)."""

    kind = "bpe"

    def __init__(self, tokenizer):
        self._tok = tokenizer

    @classmethod
    def train(cls, text: str, vocab_size: int = 512, *, name: str = "vocab_size") -> "BPETokenizer":
        """`name`: how the caller spells the size (`max_vocab` in text_classification), for the error message."""
        vocab_size = check_bpe_vocab_size(vocab_size, name)
        try:
            from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
        except ImportError:
            raise ConfigError("tokenizer='bpe' needs the Hugging Face tokenizers package: pip install tokenizers"
                              ) from None
        tok = Tokenizer(models.BPE())
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tok.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(vocab_size=vocab_size, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                      show_progress=False)
        tok.train_from_iterator([text], trainer=trainer)
        return cls(tok)

    @property
    def vocab_size(self) -> int:
        return self._tok.get_vocab_size()

    def encode(self, text: str) -> np.ndarray:
        return np.asarray(self._tok.encode(text).ids, dtype=np.int32)

    def decode(self, ids) -> str:
        return self._tok.decode([int(i) for i in np.asarray(ids).reshape(-1)])

    def to_dict(self) -> dict:
        return {"kind": self.kind, "json": self._tok.to_str()}

    def __repr__(self):
        return f"BPETokenizer(vocab_size={self.vocab_size})"


def check_bpe_vocab_size(vocab_size, name: str = "vocab_size") -> int:
    """A size byte-level BPE can honour: below 256 `tokenizers` silently gives 256, a negative one overflows."""
    if isinstance(vocab_size, bool) or not isinstance(vocab_size, numbers.Integral):
        raise ConfigError(f"{name} must be a whole number (the BPE vocabulary size, at least {BPE_MIN_VOCAB}), got "
                          f"{vocab_size!r}.")
    if vocab_size < BPE_MIN_VOCAB:
        raise ConfigError(f"{name} must be at least {BPE_MIN_VOCAB} for byte-level BPE, got {vocab_size}: its "
                          f"vocabulary starts with the {BPE_MIN_VOCAB} byte values and merges add to them. Use e.g. "
                          f"{name}=512.")
    if vocab_size > BPE_MAX_VOCAB:
        raise ConfigError(f"{name} must be at most {BPE_MAX_VOCAB} for byte-level BPE, got {vocab_size}: the "
                          "tokenizers library reserves memory for the whole vocabulary before training.")
    return int(vocab_size)


def make_tokenizer(kind, text: str, vocab_size: int | None = None, *, name: str = "vocab_size"):
    """A tokenizer trained on `text`; `name` is how the caller spells `vocab_size`, for error messages."""
    if not isinstance(kind, str):
        return kind  # an already built tokenizer
    if kind == "char":
        return CharTokenizer.train(text)
    if kind == "bpe":
        return BPETokenizer.train(text, 512 if vocab_size is None else vocab_size, name=name)
    raise ConfigError(f"Unknown tokenizer {kind!r}; use 'char' or 'bpe'.")


def tokenizer_from_dict(d: dict):
    if d.get("kind") in ("word", "padded"):
        from jupyter_llm.data.classification import tokenizer_from_dict as classification_tokenizer

        return classification_tokenizer(d)
    if d.get("kind") == "char":
        return CharTokenizer(d["chars"])
    if d.get("kind") == "bpe":
        from tokenizers import Tokenizer

        return BPETokenizer(Tokenizer.from_str(d["json"]))
    raise DataError(f"Unknown tokenizer record {json.dumps(d)[:80]}.")
