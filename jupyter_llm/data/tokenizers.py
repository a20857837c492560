"""Tokenizers that travel with a run: character-level and byte-pair encoding for language models, words (and a
language-model tokenizer shifted to keep id 0 for padding) for text classification.

All serialise to plain JSON (`to_dict` / `tokenizer_from_dict`, the one registry of kinds), so a checkpoint or a
saved run decodes exactly as the fit did — no pickle. BPE is trained on the corpus itself with Hugging Face
`tokenizers` (nothing downloaded), or is a pretrained byte-level BPE: GPT-2's by name (`"gpt2"`, downloaded once from
its pinned commit and checksum-verified, see `jupyter_llm.hub`) or any read from a `tokenizer.json` or a
`vocab.json` + `merges.txt` pair. A pretrained one is a `BPETokenizer` like a trained one, so it travels the same way
(its whole tokenizer.json inside the record: 1.4 MB for GPT-2's).
"""

from __future__ import annotations

import collections
import difflib
import json
import numbers
import os
import re
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from jupyter_llm import hub
from jupyter_llm.errors import ConfigError, DataError, PretrainedError

BPE_MIN_VOCAB = 256  # byte-level BPE starts from the 256 byte values; merges only add to them
BPE_MAX_VOCAB = 2**20  # `tokenizers` reserves memory for the whole vocabulary up front: near 2**32 it aborts Python
PAD_ID, UNK_ID = 0, 1  # of the classification tokenizers: 0 is what `models.TextClassifier` masks out
PAD, UNK = "<pad>", "<unk>"
_EOT = "<|endoftext|>"  # GPT-2's end-of-text token, a special token of its vocabulary
END_CHAR = "\x03"  # ASCII's END OF TEXT: the end token of a character vocabulary that has one (`end_of_text_id`)


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
    """Byte-level BPE (Hugging Face `tokenizers`): trained on the corpus (`train`), or pretrained (`pretrained`,
    `from_file`), such as GPT-2's 50,257 tokens."""

    kind = "bpe"

    def __init__(self, tokenizer):
        self._tok = tokenizer

    @classmethod
    def train(cls, text: str, vocab_size: int = 512, *, name: str = "vocab_size",
              end_token: bool = False) -> "BPETokenizer":
        """`name`: how the caller spells the size (`max_vocab` in text_classification), for the error message;
        `end_token`: give the vocabulary GPT-2's <|endoftext|> as a special token (id 0), as instruction data needs."""
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
                                      special_tokens=[_EOT] if end_token else [], show_progress=False)
        tok.train_from_iterator([text], trainer=trainer)
        return cls(tok)

    @classmethod
    def pretrained(cls, name: str, *, cache_dir=None) -> "BPETokenizer":
        """The tokenizer of a named pretrained model ("gpt2", ... see `jupyter_llm.hub`): its tokenizer.json,
        downloaded once from the pinned commit and checked against its SHA-256."""
        source = hub.TOKENIZER_OF.get(name)
        if source is None:
            hub.checkpoint(name)  # raises with the names
        return cls.from_file(hub.hub_file(source, "tokenizer.json", cache_dir=cache_dir))

    @classmethod
    def from_file(cls, path) -> "BPETokenizer":
        """A pretrained tokenizer from a `tokenizer.json` file, or from a folder holding a tokenizer.json or a
        `vocab.json` + `merges.txt` pair (GPT-2's original files, read as GPT-2's byte-level BPE)."""
        from tokenizers import Tokenizer

        p = Path(os.path.expanduser(str(path)))
        if p.is_dir():
            if (p / "tokenizer.json").is_file():
                p = p / "tokenizer.json"
            elif (p / "vocab.json").is_file() and (p / "merges.txt").is_file():
                return cls(_byte_level_bpe(p / "vocab.json", p / "merges.txt"))
            else:
                raise PretrainedError(f"The folder {str(p)!r} holds no tokenizer.json and no vocab.json + merges.txt "
                                      "pair; give the folder of a Hugging Face tokenizer or the path of its file.")
        elif not p.is_file():
            raise PretrainedError(f"There is no tokenizer file or folder {str(p)!r}; give a tokenizer.json, a folder "
                                  "holding one (or vocab.json + merges.txt), or a name: "
                                  f"{', '.join(hub.TOKENIZER_OF)}.")
        try:
            return cls(Tokenizer.from_file(str(p)))
        except Exception as exc:  # tokenizers raises a bare Exception for a file it cannot parse
            raise PretrainedError(f"{str(p)!r} is not a Hugging Face tokenizer.json ({exc}).") from None

    def save_pretrained(self, folder) -> Path:
        """Write `tokenizer.json` into `folder` (what transformers' GPT2TokenizerFast and `from_file` read)."""
        path = Path(os.path.expanduser(str(folder))) / "tokenizer.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        self._tok.save(str(path))
        return path

    @property
    def vocab_size(self) -> int:
        return self._tok.get_vocab_size()

    @property
    def start_id(self) -> int | None:
        """The token a generation without a prompt starts from: <|endoftext|>, which precedes every document GPT-2
        saw, when the vocabulary has it (id 50256 in GPT-2's); None otherwise."""
        return self._tok.token_to_id(_EOT)

    def encode(self, text: str) -> np.ndarray:
        return np.asarray(self._tok.encode(text).ids, dtype=np.int32)

    def decode(self, ids) -> str:
        # special tokens (GPT-2's <|endoftext|>) stay in the text, as transformers decodes: encode round-trips
        return self._tok.decode([int(i) for i in np.asarray(ids).reshape(-1)], skip_special_tokens=False)

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


def _byte_level_bpe(vocab: Path, merges: Path):
    """GPT-2's tokenizer from its two original files: byte-level pre-tokenization without a prefix space, the
    merges, and <|endoftext|> as a special token when the vocabulary has it (as transformers builds it)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors

    try:
        tok = Tokenizer(models.BPE.from_file(str(vocab), str(merges)))
    except Exception as exc:  # tokenizers raises a bare Exception for files it cannot parse
        raise PretrainedError(f"{str(vocab)!r} and {str(merges)!r} are not a BPE vocabulary and merges ({exc})."
                              ) from None
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    if tok.token_to_id(_EOT) is not None:
        tok.add_special_tokens([_EOT])
    return tok


def make_tokenizer(kind, text: str, vocab_size: int | None = None, *, name: str = "vocab_size",
                   end_token: bool = False):
    """A tokenizer for `text`: "char" or "bpe" are trained on it, a pretrained name ("gpt2") or the path of a
    tokenizer file or folder is read as it is. `name` is how the caller spells `vocab_size`, for error messages;
    `end_token` gives a trained vocabulary an end-of-text token (`end_of_text_id`)."""
    if not isinstance(kind, (str, os.PathLike)):
        return kind  # an already built tokenizer
    if kind == "char":
        return CharTokenizer.train(text + END_CHAR if end_token else text)
    if kind == "bpe":
        return BPETokenizer.train(text, 512 if vocab_size is None else vocab_size, name=name, end_token=end_token)
    pretrained = isinstance(kind, str) and kind in hub.TOKENIZER_OF
    if pretrained or isinstance(kind, os.PathLike) or _looks_like_path(kind):
        if vocab_size is not None:
            raise ConfigError(f"{name}= sets the size of a BPE trained on the text; the pretrained tokenizer "
                              f"{str(kind)!r} has its own vocabulary. Leave {name} out.")
        return BPETokenizer.pretrained(kind) if pretrained else BPETokenizer.from_file(kind)
    close = difflib.get_close_matches(kind, ["char", "bpe", *hub.TOKENIZER_OF], n=1)
    hint = f" Did you mean {close[0]!r}?" if close else ""
    raise ConfigError(f"Unknown tokenizer {kind!r}; use 'char', 'bpe', a pretrained one "
                      f"({', '.join(hub.TOKENIZER_OF)}) or the path of a tokenizer.json or of a folder holding one."
                      f"{hint}")


def end_of_text_id(tok) -> int | None:
    """The token that ends a document: <|endoftext|> in a BPE vocabulary (GPT-2's 50256), END_CHAR (U+0003,
    ASCII's END OF TEXT) in a character one; None when the vocabulary has neither."""
    if isinstance(tok, BPETokenizer):
        return tok.start_id
    if isinstance(tok, CharTokenizer):
        return tok._index.get(END_CHAR)
    return None


def _looks_like_path(kind: str) -> bool:
    """An existing file or folder, or a string shaped like a path (a typo in one must say 'no such file')."""
    return os.path.exists(os.path.expanduser(kind)) or "/" in kind or os.sep in kind or kind.endswith(".json")


# A word (letters/digits/underscore, with inner apostrophes: "don't") or one punctuation mark. Control characters
# (C0 and C1, e.g. the stray U+0096 dashes in the IMDb sentences) separate tokens and are never tokens themselves.
_TOKEN_RE = re.compile(r"\w+(?:'\w+)*|[^\w\s\x00-\x1f\x7f-\x9f]")


class WordTokenizer:
    """Lower-cased word and punctuation tokens; a vocabulary of the most frequent training words.

    >>> tok = WordTokenizer.train(["Great phone!", "Bad phone."], max_vocab=100)
    >>> tok.encode("GREAT phone, really!")      # 'really' and ',' were never seen: <unk> (id 1)
    array([6, 2, 1, 1, 3], dtype=int32)
    >>> tok.decode(tok.encode("Great phone!"))
    'great phone !'

    Id 0 is `<pad>` and id 1 is `<unk>`; the words follow by decreasing frequency (ties in alphabetical order), so
    the same texts always give the same ids. `vocab_size` counts the two special tokens.
    """

    kind = "word"

    def __init__(self, vocab: Sequence[str]):
        vocab = list(vocab)
        if vocab[:2] != [PAD, UNK]:
            raise DataError(f"A word vocabulary must start with {PAD!r} and {UNK!r}; got {vocab[:2]!r}.")
        if len(set(vocab)) != len(vocab):
            raise DataError("A word vocabulary must not repeat a token.")
        self.vocab = vocab
        self._index = {w: i for i, w in enumerate(vocab)}

    @staticmethod
    def tokenize(text: str) -> list[str]:
        """The tokens of `text`: lower-cased words (with inner apostrophes) and single punctuation marks."""
        return _TOKEN_RE.findall(str(text).lower())

    @classmethod
    def train(cls, texts: Iterable[str], max_vocab: int = 20000) -> "WordTokenizer":
        """The `max_vocab` most frequent tokens of `texts` (plus `<pad>` and `<unk>`)."""
        if isinstance(texts, str):
            texts = [texts]
        counts = collections.Counter(tok for t in texts for tok in cls.tokenize(t))
        counts.pop(PAD, None), counts.pop(UNK, None)
        words = sorted(counts, key=lambda w: (-counts[w], w))[: int(max_vocab)]
        return cls([PAD, UNK, *words])

    @property
    def vocab_size(self) -> int:
        return len(self.vocab)

    def encode(self, text: str) -> np.ndarray:
        index = self._index
        return np.asarray([index.get(tok, UNK_ID) for tok in self.tokenize(text)], dtype=np.int32)

    def decode(self, ids) -> str:
        """The tokens of `ids` joined by spaces, padding (id 0) left out."""
        vocab = self.vocab
        return " ".join(vocab[i] if 0 <= i < len(vocab) else UNK
                        for i in (int(v) for v in np.asarray(ids).reshape(-1)) if i != PAD_ID)

    def to_dict(self) -> dict:
        return {"kind": self.kind, "vocab": list(self.vocab)}

    @classmethod
    def from_dict(cls, d: dict) -> "WordTokenizer":
        if d.get("kind") != cls.kind or "vocab" not in d:
            raise DataError(f"Not a word tokenizer record: {json.dumps(d)[:80]}.")
        return cls(d["vocab"])

    def __repr__(self):
        return f"WordTokenizer(vocab_size={self.vocab_size})"


class PaddedTokenizer:
    """A language-model tokenizer (`CharTokenizer`, `BPETokenizer`) with id 0 kept free for padding.

    Every id of the wrapped tokenizer is shifted up by one: `encode` gives `inner.encode(text) + 1`, `decode` drops
    the padding and shifts back. `vocab_size` is `inner.vocab_size + 1`. With a character tokenizer, characters
    that are not in its vocabulary (never seen in the training texts) are skipped instead of raising.
    """

    kind = "padded"
    shift = 1

    def __init__(self, inner):
        self.inner = inner
        chars = getattr(inner, "chars", None) if isinstance(inner, CharTokenizer) else None
        self._known = frozenset(chars) if chars is not None else None

    @property
    def vocab_size(self) -> int:
        return int(self.inner.vocab_size) + self.shift

    def encode(self, text: str) -> np.ndarray:
        text = str(text)
        if self._known is not None:
            text = "".join(c for c in text if c in self._known)
        return np.asarray(self.inner.encode(text), dtype=np.int32) + self.shift

    def decode(self, ids) -> str:
        ids = np.asarray(ids).reshape(-1).astype(np.int64)
        return self.inner.decode(ids[ids != PAD_ID] - self.shift)

    def to_dict(self) -> dict:
        return {"kind": self.kind, "shift": self.shift, "inner": self.inner.to_dict()}

    @classmethod
    def from_dict(cls, d: dict) -> "PaddedTokenizer":
        if d.get("kind") != cls.kind or "inner" not in d or d.get("shift", cls.shift) != cls.shift:
            raise DataError(f"Not a padded tokenizer record: {json.dumps(d)[:80]}.")
        return cls(tokenizer_from_dict(d["inner"]))

    def __repr__(self):
        return f"PaddedTokenizer({self.inner!r})"


def tokenizer_from_dict(d: dict):
    """Rebuild any tokenizer of this module from its `to_dict()`."""
    kind = d.get("kind") if isinstance(d, dict) else None
    if kind == WordTokenizer.kind:
        return WordTokenizer.from_dict(d)
    if kind == PaddedTokenizer.kind:
        return PaddedTokenizer.from_dict(d)
    if kind == CharTokenizer.kind:
        return CharTokenizer(d["chars"])
    if kind == BPETokenizer.kind:
        from tokenizers import Tokenizer

        return BPETokenizer(Tokenizer.from_str(d["json"]))
    raise DataError(f"Unknown tokenizer record {json.dumps(d)[:80]}.")
