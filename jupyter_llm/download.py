"""Download a file once, verify its checksum, and keep it in a local cache: data sets and pretrained weights.

It sits on the base floor so that both `data/` (corpora, images) and `models/` (pretrained checkpoints, see
`jupyter_llm.hub`) use this one downloader; `jupyter_llm.data.download` is the same module's name for data code.

A cached file is trusted only while its hash matches, so a truncated or tampered file is fetched again instead of
silently training on it. Downloads go to a temporary file in the cache folder and are moved into place with
`os.replace`, so an interrupted download never leaves a half-written file under the final name.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import shutil
import sys
import tempfile
import urllib.error
import urllib.request
from pathlib import Path
from typing import Iterable

from jupyter_llm.errors import ChecksumError, DatasetNotFound

ENV_VAR = "JUPYTER_LLM_DATA"
"""Environment variable that moves the cache (tests point it at a temporary folder)."""
DEFAULT_CACHE_DIR = Path("~") / ".cache" / "jupyter_llm"
"""Where downloads are kept when `JUPYTER_LLM_DATA` is not set."""
TIMEOUT = 30.0
"""Seconds a connection or a read may stall before a mirror is given up."""
_CHUNK = 1 << 20


def _resolve(override=None) -> Path:
    folder = override if override is not None else (os.environ.get(ENV_VAR) or DEFAULT_CACHE_DIR)
    return Path(os.path.expanduser(str(folder)))


def cache_dir(override=None) -> Path:
    """The cache folder: `override` if given, else `$JUPYTER_LLM_DATA`, else `~/.cache/jupyter_llm`."""
    return _resolve(override)


GIT_BLOB_SHA1 = "git-blob-sha1"
"""A file's git object id: SHA-1 of `blob <size>\\0` and its bytes (what a Hub announces for a small, non-LFS file)."""


def file_hash(path, algorithm: str = "sha256") -> str:
    """Hex digest of a file, read in chunks (MNIST archives are tens of MB)."""
    if algorithm == GIT_BLOB_SHA1:
        digest = hashlib.sha1(b"blob %d\0" % os.path.getsize(path))
    else:
        digest = hashlib.new(algorithm)
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _mismatch(path, expected: dict[str, str]) -> tuple[str, str, str] | None:
    """(algorithm, expected, actual) for the first hash that differs, or None when all match."""
    for algorithm, want in expected.items():
        got = file_hash(path, algorithm)
        if got != want.lower():
            return algorithm, want.lower(), got
    return None


def fetch(url_or_urls: str | Iterable[str], filename: str, sha256: str | None = None, *, md5: str | None = None,
          git_blob_sha1: str | None = None, unchecked: bool = False, what: str | None = None, fix: str | None = None,
          cache_dir=None, timeout: float = TIMEOUT) -> Path:
    """The path of `filename` in the cache, downloaded from the first mirror that works if not already cached.

    `url_or_urls` is one URL or a sequence of mirrors tried in order (`file://` works too). The file must match
    `sha256` (preferred), `md5` or `git_blob_sha1`. Raises `ChecksumError` when a download does not match,
    `DatasetNotFound` when no mirror can be reached.

    `unchecked=True` is for a file with no published checksum (an archive whose members have one): it is kept as
    downloaded, a cached copy is used as it is, and the caller checks what it holds. `what` names the file in the
    messages (default: `filename`); `fix` replaces the message's advice to place a copy in the cache by hand.
    """
    expected = {k: v for k, v in (("sha256", sha256), ("md5", md5), (GIT_BLOB_SHA1, git_blob_sha1)) if v}
    if not expected and not unchecked:
        raise ValueError(f"fetch({filename!r}) needs a sha256 or md5 checksum to verify the download against.")
    urls = [url_or_urls] if isinstance(url_or_urls, str) else list(url_or_urls)
    what = what or filename
    folder = _resolve(cache_dir)
    target = folder / filename
    if target.is_file() and _mismatch(target, expected) is None:
        return target
    stale = target.exists()  # present but wrong: re-downloaded, never trusted

    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DatasetNotFound(f"Cannot create the data cache folder {str(folder)!r} ({exc.strerror}); set "
                              f"{ENV_VAR} or pass cache_dir= a writable folder.") from None
    failures, bad = [], None
    for url in urls:
        print(f"jupyter_llm: downloading {filename} from {url}", file=sys.stderr)
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{filename}.", suffix=".part")
        try:
            with os.fdopen(fd, "wb") as out:
                request = urllib.request.Request(url, headers={"User-Agent": "jupyter_llm"})
                with urllib.request.urlopen(request, timeout=timeout) as response:
                    shutil.copyfileobj(response, out, _CHUNK)
            wrong = _mismatch(tmp, expected)
            if wrong is None:
                os.replace(tmp, target)
                return target
            bad = (url, *wrong)
            failures.append(f"{url} (checksum mismatch)")
        except (urllib.error.URLError, http.client.HTTPException, OSError, ValueError) as exc:  # ValueError: bad URL
            reason = getattr(exc, "reason", None) or getattr(exc, "strerror", None) or exc
            failures.append(f"{url} ({reason})")
        finally:
            if os.path.exists(tmp):
                os.remove(tmp)

    if bad is not None:
        url, algorithm, want, got = bad
        raise ChecksumError(
            f"The download of {what} from {url} does not match its published checksum: expected {algorithm} "
            f"{want}, got {got}. The mirror may serve a truncated or different file; nothing was saved. Try again "
            f"later, check the mirror, or place a verified copy at {str(target)!r}.")
    note = (f" The cached copy at {str(target)!r} has the wrong checksum; delete it or replace it."
            if stale and expected else "")
    if fix is None:
        checksum = f" ({next(iter(expected))} {next(iter(expected.values()))})" if expected else ""
        fix = (f"download the file yourself and place it at {str(target)!r}{checksum}; it is then used from there "
               "without any network.")
    raise DatasetNotFound(f"Could not download {what}: tried {'; '.join(failures) or 'no URL'}. Check "
                          f"the network connection, or {fix}{note}")


def write_atomically(path, text: str) -> None:
    """`text` into `path` through a temporary file and `os.replace`: a reader never sees half of it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".part")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            out.write(text)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
