"""Tokenizers that travel with a run: character-level (built from the corpus) and byte-pair encoding.

Both serialise to plain JSON (`to_dict` / `tokenizer_from_dict`), so a checkpoint or a saved run decodes exactly as
the fit did — no pickle. BPE is trained on the corpus itself with Hugging Face `tokenizers` (nothing downloaded).
"""

from __future__ import annotations

import json

import numpy as np

from jupyter_llm.errors import ConfigError, DataError


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
    def train(cls, text: str, vocab_size: int = 512) -> "BPETokenizer":
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


def make_tokenizer(kind, text: str, vocab_size: int | None = None):
    if not isinstance(kind, str):
        return kind  # an already built tokenizer
    if kind == "char":
        return CharTokenizer.train(text)
    if kind == "bpe":
        return BPETokenizer.train(text, vocab_size or 512)
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
