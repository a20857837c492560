"""The standard text classification set: the UCI Sentiment Labelled Sentences, downloaded once or read from a folder.

Its own module because it is one corpus with its own files, checksums and archive layout; the data set itself is
built as any labelled texts are (classification.py).
"""

from __future__ import annotations

import hashlib
import io
import os
import tempfile
import zipfile
from pathlib import Path
from typing import Sequence

import numpy as np

from jupyter_llm.data import download
from jupyter_llm.data.classification import build_dataset, check_options
from jupyter_llm.data.dataset import Dataset
from jupyter_llm.errors import ChecksumError, ConfigError, DataError, DatasetNotFound

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
    check_options(max_len, val_fraction, test_fraction, max_vocab)
    texts, labels, sources = [], [], []
    for source, (p, raw) in contents.items():
        t, y = _parse_sentiment_file(p, raw)
        texts += t
        labels += y
        sources += [source] * len(t)
    y = np.asarray(labels, dtype=np.int32)
    src = np.asarray(sources)
    strata = np.unique(src, return_inverse=True)[1].reshape(-1) * 2 + y  # every (source, class) split alike
    return build_dataset(texts, y, SENTIMENT_CLASSES, name=name, description=SENTIMENT_DESCRIPTION,
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
        # The archive itself has no published checksum, so it is not checked here: its three files are, once
        # extracted. A cached archive is used as it is.
        archive = download.fetch(
            SENTIMENT_URLS if urls is None else urls, SENTIMENT_ZIP, unchecked=True, cache_dir=folder,
            timeout=timeout, what="the Sentiment Labelled Sentences archive",
            fix=f"download the zip yourself and put it at {str(folder / SENTIMENT_ZIP)!r}, or unzip it and call "
                "sentiment_from_dir(folder).")
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
