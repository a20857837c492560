"""Named pretrained checkpoints on the Hugging Face Hub, pinned: a repository, a commit, and each file's SHA-256.

`hub_file("gpt2", "model.safetensors")` is the local path of that file, downloaded once into the data cache
(`$JUPYTER_LLM_DATA`, default `~/.cache/jupyter_llm`, under `pretrained/<repo>/<commit>/`) from the pinned commit and
checked against its SHA-256: a branch that moved, a truncated download or a tampered cache never loads silently.
A file whose digest is not pinned here yet (`None`) is checked against the digest the Hub announces for the pinned
commit (as Hugging Face's own client does), recorded on first download so later loads are checked offline; where
no digest is announced it is refused rather than trusted.

`HF_ENDPOINT` (the variable Hugging Face's own client reads) replaces `https://huggingface.co`, e.g. with a mirror;
the checksums keep that safe.

Where the pins come from: no network reaches the machine this was written on, so they are the values published for
these commits, each found recorded alike by several independent public projects that pin the same commit (gpt2's
commit also in `huggingface_hub`'s documentation). Every first download is checked against them, so a wrong pin
fails loudly with both digests. Still to pin: gpt2-medium's and gpt2-large's file digests (their commits are
pinned; until then the Hub's announced digests check them, and the first download prints them).
"""

from __future__ import annotations

import dataclasses
import difflib
import http.client
import json
import os
import sys
import urllib.error
import urllib.request
from pathlib import Path

from jupyter_llm import download
from jupyter_llm.errors import ConfigError, PretrainedError

ENDPOINT_VAR = "HF_ENDPOINT"
DEFAULT_ENDPOINT = "https://huggingface.co"


@dataclasses.dataclass(frozen=True)
class Checkpoint:
    """A Hub repository at one commit, with the SHA-256 of each file we read from it (None: not pinned yet)."""

    repo: str
    revision: str
    sha256: dict[str, str | None]


_GPT2_TOKENIZER = {
    "tokenizer.json": "8414cab924d8b9b33013f0d221c5862f365ee9be39c5c2bfae8a5a9e970478a6",
    "vocab.json": "196139668be63f3b5d6574427317ae82f612a97c5d1cdaf36ed2256dbf636783",
    "merges.txt": "1ce1664773c50f3e0cc8842619a93edc4624525b728b188a9e0be33b7726adc5",
}

CHECKPOINTS: dict[str, Checkpoint] = {
    # 124 M parameters. model.safetensors: 548,105,171 bytes (it also holds the 12 causal-mask buffers).
    "gpt2": Checkpoint("openai-community/gpt2", "607a30d783dfa663caf39e06633721c8d4cfcd7e", {
        "config.json": "0daed7749b4f02b8f76240d5444551d7b08712dab4d0adb8239c56ba823bb7b4",
        "model.safetensors": "248dfc3911869ec493c76e65bf2fcf7f615828b0254c12b473182f0f81d3a707",
        **_GPT2_TOKENIZER,
    }),
    # 355 M. Digests not found published for this commit: checked against the Hub's announced ones (see above).
    "gpt2-medium": Checkpoint("openai-community/gpt2-medium", "6dcaa7a952f72f9298047fd5137cd6e4f05f41da", {
        "config.json": None,
        "model.safetensors": None,
    }),
    # 774 M. Digests not found published for this commit, as for gpt2-medium.
    "gpt2-large": Checkpoint("openai-community/gpt2-large", "32b71b12589c2f8d625668d2335a01cac3249519", {
        "config.json": None,
        "model.safetensors": None,
    }),
    # 1.56 B parameters; model.safetensors is 5.99 GiB.
    "gpt2-xl": Checkpoint("openai-community/gpt2-xl", "15ea56dee5df4983c59b2538573817e1667135e2", {
        "config.json": "be48115d52314bc27327e160bf10197760db02ea689d10adb24db4102edf7a8a",
        "model.safetensors": "0f8b28eb05a8075f48b61b6f35332978c74fc7763fa9fb4051a1c30511736a6a",
    }),
}

# Every GPT-2 size uses OpenAI's one 50,257-token byte-level BPE: its files are read from gpt2's repository.
TOKENIZER_OF = {name: "gpt2" for name in CHECKPOINTS}


def checkpoint(name: str) -> Checkpoint:
    """The pinned checkpoint called `name`, or a ConfigError that lists the names (and the closest one)."""
    if name in CHECKPOINTS:
        return CHECKPOINTS[name]
    close = difflib.get_close_matches(str(name), list(CHECKPOINTS), n=1)
    hint = f" Did you mean {close[0]!r}?" if close else ""
    raise ConfigError(f"Unknown pretrained model {name!r}; the named ones are {', '.join(CHECKPOINTS)} (or give the "
                      f"path of a folder holding config.json and model.safetensors).{hint}")


def url(name: str, filename: str) -> str:
    """Where `filename` of checkpoint `name` is downloaded from: its pinned commit, never a branch."""
    ckpt = checkpoint(name)
    endpoint = (os.environ.get(ENDPOINT_VAR) or DEFAULT_ENDPOINT).rstrip("/")
    return f"{endpoint}/{ckpt.repo}/resolve/{ckpt.revision}/{filename}"


def hub_file(name: str, filename: str, *, cache_dir=None) -> Path:
    """The local path of `filename` of the pinned checkpoint `name`: downloaded once, SHA-256 checked."""
    ckpt = checkpoint(name)
    if filename not in ckpt.sha256:
        raise PretrainedError(f"{ckpt.repo} has no pinned file {filename!r}; the pinned ones are "
                              f"{', '.join(ckpt.sha256)}.")
    digest = ckpt.sha256[filename]
    folder = download.cache_dir(cache_dir) / "pretrained" / ckpt.repo.replace("/", "--") / ckpt.revision
    what = f"{name}'s {filename}"
    if digest is None:
        return _announced_fetch(name, filename, folder, what)
    return download.fetch(url(name, filename), filename, digest, what=what, cache_dir=folder)


# -- files not pinned here: checked against the digest the Hub announces for the pinned commit ----------------------
def _announced_fetch(name: str, filename: str, folder: Path, what: str) -> Path:
    """A file whose digest is not pinned: downloaded from the pinned commit and checked against the digest the Hub
    announces for it (an LFS file's SHA-256, a small file's git object id), which is then recorded beside the cached
    file so every later load is checked against it, offline too. That guards against a truncated download and a
    damaged cache, not against a Hub serving the wrong file: a pin does that, so the digest is printed to pin."""
    record, ckpt = folder / f".{filename}.digest.json", checkpoint(name)
    if record.is_file():
        algorithm, digest = _read_record(record)
    else:
        announced = announced_digest(url(name, filename))
        if announced is None:
            page = f"{DEFAULT_ENDPOINT}/{ckpt.repo}/tree/{ckpt.revision}"
            raise PretrainedError(
                f"The SHA-256 of {what} is not pinned in this version of jupyter_llm and the Hub announced none to "
                f"check the download against, and an unchecked download is never loaded. Download config.json and "
                f"model.safetensors from {page} into a folder yourself and load that: "
                "GPT.from_pretrained('/path/to/folder').")
        algorithm, digest = announced
    path = download.fetch(url(name, filename), filename, what=what, cache_dir=folder,
                          **{algorithm.replace("-", "_"): digest})
    if not record.is_file():
        download.write_atomically(record, json.dumps({"algorithm": algorithm, "digest": digest}))
        print(f"jupyter_llm: {what} is not pinned in this version; it matched the {algorithm} the Hub announced "
              f"for commit {ckpt.revision[:12]}: {digest}", file=sys.stderr)
    return path


def _read_record(record: Path) -> tuple[str, str]:
    try:
        data = json.loads(record.read_text())
        return str(data["algorithm"]), str(data["digest"])
    except (ValueError, KeyError, TypeError, OSError):
        raise PretrainedError(f"The recorded digest {str(record)!r} is damaged; delete it and the file beside it, "
                              "and load again to download and check them anew.") from None


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kwargs):
        return None  # the Hub's own answer carries the digest; the CDN it redirects to does not


def announced_digest(address: str, timeout: float = download.TIMEOUT) -> tuple[str, str] | None:
    """(algorithm, hex digest) the Hub announces for the file at `address`, from a HEAD request whose redirect is
    not followed: `X-Linked-Etag` holds an LFS file's SHA-256, `ETag` a small file's git object id (the headers
    Hugging Face's own client reads). None when there is no such header or no answer."""
    if not address.startswith(("http://", "https://")):
        return None
    request = urllib.request.Request(address, method="HEAD",
                                     headers={"User-Agent": "jupyter_llm", "Accept-Encoding": "identity"})
    try:
        headers = urllib.request.build_opener(_NoRedirect).open(request, timeout=timeout).headers
    except urllib.error.HTTPError as exc:
        if not 300 <= exc.code < 400:
            return None
        headers = exc.headers
    except (urllib.error.URLError, http.client.HTTPException, OSError, ValueError):
        return None
    for header, algorithm, length in (("X-Linked-Etag", "sha256", 64), ("ETag", download.GIT_BLOB_SHA1, 40)):
        value = (headers.get(header) or "").removeprefix("W/").strip('"').lower()
        if len(value) == length and all(c in "0123456789abcdef" for c in value):
            return algorithm, value
    return None
