"""Text classification data: labelled sentences as padded token ids, ready for `fit`.

`text_classification(path)` reads a CSV / TSV / JSON Lines file with a text column and a label column; labels may
be strings (mapped to 0..C-1 in sorted order, the strings kept as `class_names`) or integers. The rows are split
train / validation / test by a deterministic stratified shuffle, the tokenizer is built from the training texts
only (so the held-out splits never leak into the vocabulary), and every text becomes a row of `max_len` int32 ids,
truncated or padded with 0.

`load_sentiment()` is the standard set: the UCI "Sentiment Labelled Sentences" (Kotzias et al., KDD 2015; CC BY
4.0), 3000 one-line reviews from Amazon, IMDb and Yelp labelled negative (0) or positive (1). It downloads the UCI
zip once, caches it, and checks every file against its SHA-256. `sentiment_from_dir(folder)` builds the same data
set from a folder that holds the three files (the repository ships them in `notebooks/data/sentiment_labelled/`).

Token id 0 is always padding (what `jupyter_llm.models.TextClassifier` masks out); the tokenizers are those of
`jupyter_llm.data.tokenizers`:

* `tokenizer="word"` (the default): a `WordTokenizer`, lower-cased words and punctuation marks, the `max_vocab`
  most frequent words of the training texts; id 0 = `<pad>`, id 1 = `<unk>` (a word never seen in training).
* `tokenizer="char"` or `"bpe"`: the language-model tokenizers, wrapped in a `PaddedTokenizer` that shifts every id
  up by one to keep 0 free. A character that is not in the training texts is skipped (the character tokenizer has
  no unknown token); byte-level BPE covers any text.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import numbers
import os
import shutil
import sys
import tempfile
import urllib.error
import urllib.request
import zipfile
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from jupyter_llm.data import download
from jupyter_llm.data.dataset import Dataset
from jupyter_llm.data.tokenizers import (
    PAD_ID,
    BPETokenizer,
    CharTokenizer,
    PaddedTokenizer,
    WordTokenizer,
    make_tokenizer,
)
from jupyter_llm.errors import ChecksumError, ConfigError, DataError, DatasetNotFound

__all__ = ["encode_texts", "text_classification", "load_sentiment", "sentiment_from_dir"]


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


# ------------------------------------------------------------------------------------------------ reading files
_DELIMITERS = {".csv": ",", ".tsv": "\t", ".tab": "\t"}
_JSON_SUFFIXES = (".jsonl", ".json", ".ndjson")


def _check_path(p: Path) -> None:
    if not p.exists():
        raise DatasetNotFound(f"Cannot read {str(p)!r}: there is no such file. Check the path (a relative path "
                              f"starts from the current folder, {os.getcwd()!r}).")
    if p.is_dir():
        raise DatasetNotFound(f"Cannot read {str(p)!r}: it is a folder; pass the path of a .csv, .tsv or .jsonl "
                              "file inside it.")


def _read_file_text(p: Path) -> str:
    try:
        raw = p.read_bytes()
    except OSError as exc:
        raise DatasetNotFound(f"Cannot read {str(p)!r}: {exc.strerror or exc}. Check that the file is readable."
                              ) from None
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise DataError(f"{str(p)!r} is not UTF-8 text (byte 0x{raw[exc.start]:02x} at line {line} cannot be "
                        "decoded); save the file as UTF-8, e.g. with an editor's 'Save with encoding' or "
                        "iconv -f latin1 -t utf-8.") from None


def _missing_column(p: Path, which: str, wanted: str, found: Sequence[str]) -> DataError:
    kind = "field" if p.suffix.lower() in _JSON_SUFFIXES else "column"
    return DataError(f"{str(p)!r} has no {kind} {wanted!r} for the {which}; the {kind}s are "
                     f"{[str(c) for c in found]}. Pass {which}='...' with one of them, e.g. "
                     f"text_classification(path, text=..., label=...).")


def _read_delimited(p: Path, body: str, delimiter: str, text_col: str, label_col: str):
    reader = csv.reader(io.StringIO(body, newline=""), delimiter=delimiter)
    try:
        header = next(reader)
    except StopIteration:
        header = []
    except csv.Error as exc:
        raise DataError(f"{str(p)!r} is not valid delimited text at line 1 ({exc}).") from None
    header = [h.strip() for h in header]
    for which, col in (("text", text_col), ("label", label_col)):
        if col not in header:
            raise _missing_column(p, which, col, header)
    ti, li = header.index(text_col), header.index(label_col)
    rows, line = [], reader.line_num
    while True:
        start = line + 1
        try:
            row = next(reader)
        except StopIteration:
            break
        except csv.Error as exc:
            raise DataError(f"Line {start} of {str(p)!r} is not valid delimited text ({exc}); check its quotes."
                            ) from None
        line = reader.line_num
        if not row or all(not c.strip() for c in row):
            continue  # a blank line
        text = row[ti] if ti < len(row) else ""
        label = row[li].strip() if li < len(row) else ""
        rows.append((start, text, label))
    return rows


def _read_json_records(p: Path, body: str, text_col: str, label_col: str):
    stripped = body.lstrip()
    if stripped.startswith("["):  # a .json file holding one array of objects
        try:
            records = list(enumerate(json.loads(body), 1))
        except json.JSONDecodeError as exc:
            raise DataError(f"{str(p)!r} is not valid JSON (line {exc.lineno}: {exc.msg}).") from None
        where = "record"
    else:  # JSON Lines: one object per line
        records = []
        for n, line in enumerate(body.split("\n"), 1):
            if not line.strip():
                continue
            try:
                records.append((n, json.loads(line)))
            except json.JSONDecodeError as exc:
                raise DataError(f"Line {n} of {str(p)!r} is not a JSON object ({exc.msg}); a JSON Lines file "
                                "holds one object per line, like {\"text\": \"...\", \"label\": \"...\"}.") from None
        where = "line"
    rows = []
    for i, (n, rec) in enumerate(records):
        if not isinstance(rec, dict):
            raise DataError(f"{where.capitalize()} {n} of {str(p)!r} is {type(rec).__name__}, not a JSON object "
                            f"with {text_col!r} and {label_col!r} fields.")
        if i == 0:
            for which, col in (("text", text_col), ("label", label_col)):
                if col not in rec:
                    raise _missing_column(p, which, col, list(rec))
        text = rec.get(text_col)
        label = rec.get(label_col)
        rows.append((n, "" if text is None else str(text), label))
    return rows, where


def _label_value(v):
    """A label as an int when it is an integer (1, 1.0, "1", True), else as a stripped string; None if empty."""
    if v is None:
        return None
    if isinstance(v, bool):
        return int(v)
    if isinstance(v, (int, np.integer)):
        return int(v)
    if isinstance(v, float):
        return int(v) if v.is_integer() else str(v)
    s = str(v).strip()
    if not s:
        return None
    try:
        return int(s)
    except ValueError:
        return s


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


def _read_labelled(p: Path, text_col: str, label_col: str, sep: str | None):
    _check_path(p)
    suffix = p.suffix.lower()
    if sep is None and suffix not in _DELIMITERS and suffix not in _JSON_SUFFIXES:
        raise ConfigError(f"Cannot tell the format of {str(p)!r} from its extension {suffix or '(none)'!r}: use "
                          "a .csv, .tsv or .jsonl (.json) file, or pass sep=',' or sep='\\t' for delimited text.")
    body = _read_file_text(p)
    if not body.strip():
        raise DataError(f"{str(p)!r} is empty; it needs a header row naming the columns and one row per text.")
    if sep is None and suffix in _JSON_SUFFIXES:
        rows, where = _read_json_records(p, body, text_col, label_col)
    else:
        if sep is not None and (not isinstance(sep, str) or len(sep) != 1):
            raise ConfigError(f"sep must be a single character such as ',' or '\\t', got {sep!r}.")
        rows, where = _read_delimited(p, body, sep or _DELIMITERS[suffix], text_col, label_col), "line"
    if not rows:
        raise DataError(f"{str(p)!r} has no rows of data, only a header; add one row per text.")
    texts, labels = [], []
    for n, text, label in rows:
        if not text.strip():
            raise DataError(f"{where.capitalize()} {n} of {str(p)!r} has an empty text in {text_col!r}; fill it in "
                            "or remove the row.")
        value = _label_value(label)
        if value is None:
            raise DataError(f"{where.capitalize()} {n} of {str(p)!r} has no label in {label_col!r}; give every "
                            "row a label or remove it.")
        texts.append(text.strip())
        labels.append(value)
    return texts, labels


# -------------------------------------------------------------------------------------- splitting and building
def _check_options(max_len, val_fraction, test_fraction, max_vocab):
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


def _build_dataset(texts: Sequence[str], y: np.ndarray, class_names: Sequence[str], *, name: str,
                   description: str, tokenizer, max_len: int, val_fraction: float, test_fraction: float, seed: int,
                   max_vocab: int, strata: np.ndarray | None = None, per_row: dict[str, np.ndarray] | None = None,
                   meta: dict | None = None) -> Dataset:
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
    _check_options(max_len, val_fraction, test_fraction, max_vocab)
    p = Path(os.path.expanduser(str(path)))
    texts, raw_labels = _read_labelled(p, text, label, sep)
    y, class_names = _encode_labels(raw_labels, f"{str(p)!r} (column {label!r})")
    return _build_dataset(texts, y, class_names, name=name or p.stem, description=f"Labelled texts from {p.name}.",
                          tokenizer=tokenizer, max_len=max_len, val_fraction=val_fraction,
                          test_fraction=test_fraction, seed=seed, max_vocab=max_vocab,
                          meta={"path": str(p), "text_column": text, "label_column": label})


# ------------------------------------------------------------------------------------------- sentiment sentences
SENTIMENT_URLS = ("https://archive.ics.uci.edu/static/public/331/sentiment+labelled+sentences.zip",)
"""Where the UCI archive is downloaded from (mirrors tried in order; `file://` works too)."""
SENTIMENT_ZIP = "sentiment_labelled_sentences.zip"
SENTIMENT_DIR = "sentiment_labelled"
SENTIMENT_FILES = {
    "amazon": ("amazon_cells_labelled.txt", "47003fc0a0d4840b00e96e715b6189bad09e7443a3da41c4cbe12ffc79f86ae3"),
    "imdb": ("imdb_labelled.txt", "be0486aeb23ceab15bff6dc08f9246cfac13d1b5c9b28fc342ae70fab5920d7d"),
    "yelp": ("yelp_labelled.txt", "c76468b7b5c6e56a0804d728345c5f84aa2142ddb214420f61cc9cfd4c00d2ea"),
}
"""Source name -> (file name, SHA-256 of the file as published in the UCI archive)."""
SENTIMENT_CLASSES = ("negative", "positive")
SENTIMENT_DESCRIPTION = ("Sentiment Labelled Sentences (Kotzias, Denil, de Freitas & Smyth, 'From Group to "
                         "Individual Labels using Deep Features', KDD 2015; UCI Machine Learning Repository, "
                         "CC BY 4.0): one-line reviews from amazon.com, imdb.com and yelp.com, 500 negative and "
                         "500 positive from each.")


def _check_sources(sources) -> tuple[str, ...]:
    if isinstance(sources, str):
        sources = (sources,)
    sources = tuple(sources)
    unknown = [s for s in sources if s not in SENTIMENT_FILES]
    if unknown or not sources:
        raise ConfigError(f"Unknown sentiment source(s) {unknown or sources!r}; choose from "
                          f"{', '.join(SENTIMENT_FILES)}.")
    return sources


def _parse_sentiment_file(p: Path, raw: bytes):
    try:
        body = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise DataError(f"{str(p)!r} is not UTF-8 text (byte {exc.start}); use the file as published.") from None
    texts, labels = [], []
    for n, line in enumerate(body.split("\n"), 1):  # not splitlines(): the IMDb file holds U+0085 characters
        line = line.rstrip("\r")
        if not line.strip():
            continue
        sentence, tab, label = line.rpartition("\t")
        if not tab or label.strip() not in ("0", "1") or not sentence.strip():
            raise DataError(f"Line {n} of {str(p)!r} is not 'sentence<TAB>0' or 'sentence<TAB>1': {line[:60]!r}.")
        texts.append(sentence.strip())
        labels.append(int(label))
    return texts, labels


def _sentiment_dataset(contents: dict[str, tuple[Path, bytes]], *, name: str, tokenizer="word",
                       max_len: int = 64, val_fraction: float = 0.1, test_fraction: float = 0.2, seed: int = 0,
                       max_vocab: int = 20000, meta: dict | None = None) -> Dataset:
    _check_options(max_len, val_fraction, test_fraction, max_vocab)
    texts, labels, sources = [], [], []
    for source, (p, raw) in contents.items():
        t, y = _parse_sentiment_file(p, raw)
        texts += t
        labels += y
        sources += [source] * len(t)
    y = np.asarray(labels, dtype=np.int32)
    src = np.asarray(sources)
    strata = np.unique(src, return_inverse=True)[1].reshape(-1) * 2 + y  # every (source, class) split alike
    return _build_dataset(texts, y, SENTIMENT_CLASSES, name=name, description=SENTIMENT_DESCRIPTION,
                          tokenizer=tokenizer, max_len=max_len, val_fraction=val_fraction,
                          test_fraction=test_fraction, seed=seed, max_vocab=max_vocab, strata=strata,
                          per_row={"source": src}, meta=meta)


def _verify(what: str, raw: bytes, sha256: str, fix: str) -> None:
    got = hashlib.sha256(raw).hexdigest()
    if got != sha256:
        raise ChecksumError(f"{what} does not match the published Sentiment Labelled Sentences file: expected "
                            f"sha256 {sha256}, got {got}. {fix}")


def sentiment_from_dir(path, *, sources: Sequence[str] = ("amazon", "imdb", "yelp"), verify: bool = True,
                       **kwargs) -> Dataset:
    """The sentiment `Dataset` from a folder holding `amazon_cells_labelled.txt`, `imdb_labelled.txt` and
    `yelp_labelled.txt` (as in the UCI zip, or `notebooks/data/sentiment_labelled/` of this repository).

    Each file is checked against its published SHA-256 (`verify=False` accepts edited copies). `sources` picks a
    subset; the other options are those of `text_classification` (`tokenizer`, `max_len`, `val_fraction`,
    `test_fraction`, `seed`, `max_vocab`). The split is stratified by source and class; `meta["source"][split]`
    names each row's source.
    """
    sources = _check_sources(sources)
    folder = Path(os.path.expanduser(str(path)))
    if not folder.is_dir():
        raise DatasetNotFound(f"Cannot read the sentiment files: {str(folder)!r} is not a folder. Pass the folder "
                              "that holds amazon_cells_labelled.txt, imdb_labelled.txt and yelp_labelled.txt, or "
                              "use load_sentiment() to download them.")
    contents = {}
    for source in sources:
        filename, sha256 = SENTIMENT_FILES[source]
        p = folder / filename
        if not p.is_file():
            present = sorted(q.name for q in folder.iterdir())[:10]
            raise DatasetNotFound(f"{filename} is not in {str(folder)!r} (it holds {present}). Unzip the UCI "
                                  "archive there, or use load_sentiment() to download it.")
        raw = p.read_bytes()
        if verify:
            _verify(repr(str(p)), raw, sha256,
                    "Replace it with the file from the UCI archive, or pass verify=False to use an edited copy.")
        contents[source] = (p, raw)
    return _sentiment_dataset(contents, name="sentiment", meta={"path": str(folder)}, **kwargs)


def _download(urls: Sequence[str], target: Path, timeout: float) -> None:
    """Download to `target` from the first URL that works (a temporary file moved into place, never half-written).

    The archive itself has no published checksum, so it is not checked here: its three files are, once extracted.
    """
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DatasetNotFound(f"Cannot create the data cache folder {str(target.parent)!r} ({exc.strerror}); set "
                              f"{download.ENV_VAR} or pass cache_dir= a writable folder.") from None
    failures = []
    for url in urls:
        print(f"jupyter_llm: downloading {target.name} from {url}", file=sys.stderr)
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".part")
        try:
            with os.fdopen(fd, "wb") as out:
                request = urllib.request.Request(url, headers={"User-Agent": "jupyter_llm"})
                with urllib.request.urlopen(request, timeout=timeout) as response:
                    shutil.copyfileobj(response, out, 1 << 20)
            os.replace(tmp, target)
            return
        except (urllib.error.URLError, OSError, ValueError) as exc:  # ValueError: a malformed URL
            reason = getattr(exc, "reason", None) or getattr(exc, "strerror", None) or exc
            failures.append(f"{url} ({reason})")
        finally:
            if os.path.exists(tmp):
                os.remove(tmp)
    raise DatasetNotFound(
        f"Could not download the Sentiment Labelled Sentences archive: tried {'; '.join(failures) or 'no URL'}. "
        f"Check the network connection, or download the zip yourself and put it at {str(target)!r}, or unzip it "
        "and call sentiment_from_dir(folder).")


def _zip_members(zf: zipfile.ZipFile, names: set[str], depth: int = 0) -> dict[str, bytes]:
    """The bytes of the members whose base name is in `names`, skipping macOS metadata (`__MACOSX/`, `._*`) and
    looking one level into a nested zip (the UCI archives are sometimes wrapped)."""
    found: dict[str, bytes] = {}
    for info in zf.infolist():
        parts = info.filename.replace("\\", "/").split("/")
        base = parts[-1]
        if info.is_dir() or "__MACOSX" in parts or base.startswith("._"):
            continue
        if base in names and base not in found:
            found[base] = zf.read(info)
        elif base.lower().endswith(".zip") and depth == 0:
            with zipfile.ZipFile(io.BytesIO(zf.read(info))) as inner:
                for k, v in _zip_members(inner, names, depth + 1).items():
                    found.setdefault(k, v)
    return found


def load_sentiment(*, cache_dir=None, sources: Sequence[str] = ("amazon", "imdb", "yelp"),
                   urls: Sequence[str] | None = None, timeout: float = download.TIMEOUT, **kwargs) -> Dataset:
    """The UCI Sentiment Labelled Sentences as a `Dataset` (3000 sentences, classes negative / positive).

    The first call downloads the UCI zip (from `urls`, default `SENTIMENT_URLS`) into the cache
    (`cache_dir`, else `$JUPYTER_LLM_DATA`, else `~/.cache/jupyter_llm`), extracts the three files and checks each
    against its published SHA-256 (a mismatch raises `ChecksumError`); later calls use the verified files without
    any network. Other options as in `sentiment_from_dir`.
    """
    sources = _check_sources(sources)
    folder = download.cache_dir(cache_dir)
    files_dir = folder / SENTIMENT_DIR
    wanted = {SENTIMENT_FILES[s][0]: SENTIMENT_FILES[s][1] for s in SENTIMENT_FILES}
    ready = all((files_dir / f).is_file() and download.file_hash(files_dir / f) == h for f, h in wanted.items())
    if not ready:
        archive = folder / SENTIMENT_ZIP
        if not archive.is_file():
            _download(list(urls) if urls is not None else list(SENTIMENT_URLS), archive, timeout)
        try:
            with zipfile.ZipFile(archive) as zf:
                members = _zip_members(zf, set(wanted))
        except zipfile.BadZipFile:
            archive.unlink(missing_ok=True)
            raise ChecksumError(f"{str(archive)!r} is not a valid zip archive (a truncated or wrong download); it "
                                "was removed, so the next call downloads it again.") from None
        for filename, sha256 in wanted.items():
            if filename not in members:
                raise ChecksumError(f"The archive {str(archive)!r} has no {filename}: it is not the Sentiment "
                                    "Labelled Sentences zip. Delete it and call load_sentiment() again.")
            _verify(f"{filename} in the archive {str(archive)!r}", members[filename], sha256,
                    f"The download may be damaged or the archive changed upstream: delete {str(archive)!r} and "
                    "try again, or use sentiment_from_dir() on a folder with verified copies.")
        files_dir.mkdir(parents=True, exist_ok=True)
        for filename, raw in members.items():
            fd, tmp = tempfile.mkstemp(dir=files_dir, prefix=f".{filename}.", suffix=".part")
            with os.fdopen(fd, "wb") as out:
                out.write(raw)
            os.replace(tmp, files_dir / filename)
    return sentiment_from_dir(files_dir, sources=sources, **kwargs)
