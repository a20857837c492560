"""Built-in datasets by name: `load("digits" | "mnist" | "fashion_mnist")` and `load_text("tinyshakespeare")`.

`digits` ships inside the package (no network ever); the others are downloaded once from their canonical mirrors,
checked against published SHA-256 sums and cached (see `jupyter_llm.data.download`). Images come back as float32
in [0, 1] with a channel axis, (N, H, W, 1), which suits a CNN and an MLP that flattens alike; labels are int32.
"""

from __future__ import annotations

import difflib
import gzip
import math
import zlib
from pathlib import Path

import numpy as np

from jupyter_llm.data import aligned, download
from jupyter_llm.data.dataset import Dataset
from jupyter_llm.errors import ChecksumError, ConfigError, DatasetNotFound

DIGITS_FILE = Path(__file__).with_name("digits.npz")
DIGITS_TEST_FRACTION, DIGITS_SEED = 0.2, 0

_IDX_FILES = ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz",
              "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")

# Mirrors are tried in order. SHA-256 sums as listed by tensorflow-datasets (url_checksums/mnist.txt and
# url_checksums/fashion_mnist.txt); the same sums appear in many independent projects.
SOURCES: dict[str, dict] = {
    "mnist": {
        "mirrors": ("https://storage.googleapis.com/cvdf-datasets/mnist/",
                    "https://ossci-datasets.s3.amazonaws.com/mnist/"),
        "sha256": {
            "train-images-idx3-ubyte.gz": "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609",
            "train-labels-idx1-ubyte.gz": "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c",
            "t10k-images-idx3-ubyte.gz": "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6",
            "t10k-labels-idx1-ubyte.gz": "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6",
        },
        "class_names": tuple(str(i) for i in range(10)),
        "description": "MNIST handwritten digits, 28x28 grey levels (LeCun, Cortes & Burges).",
    },
    "fashion_mnist": {
        "mirrors": ("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
                    "https://raw.githubusercontent.com/zalandoresearch/fashion-mnist/master/data/fashion/"),
        "sha256": {
            "train-images-idx3-ubyte.gz": "3aede38d61863908ad78613f6a32ed271626dd12800ba2636569512369268a84",
            "train-labels-idx1-ubyte.gz": "a04f17134ac03560a47e3764e11b92fc97de4d1bfaf8ba1a3aa29af54cc90845",
            "t10k-images-idx3-ubyte.gz": "346e55b948d973a97e58d2351dde16a484bd415d4595297633bb08f03db6a073",
            "t10k-labels-idx1-ubyte.gz": "67da17c76eaffca5446c3361aaab5c3cd6d1c2608764d35dfb1850b086bf8dd5",
        },
        "class_names": ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                        "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"),
        "description": "Fashion-MNIST: Zalando article images, 28x28 grey levels, a harder drop-in for MNIST.",
    },
}

TEXTS: dict[str, dict] = {
    "tinyshakespeare": {
        "urls": ("https://raw.githubusercontent.com/karpathy/char-rnn/master/data/tinyshakespeare/input.txt",),
        "filename": "tinyshakespeare.txt",
        # computed from the file; its md5 6fb458f1232090904fb40fe944165e91 is the one published for it
        "sha256": "86c4e6aa9db7c042ec79f339dcb96d42b0075e16b8fc2e86bf0ca57e2dc565ed",
    },
}


def available() -> list[str]:
    """Names `load` accepts (the image datasets; text corpora are in `TEXTS`, read with `load_text`)."""
    return sorted({"digits", *SOURCES})


def load(name: str, *, limit: int | None = None, cache_dir=None, **unknown) -> Dataset:
    """A built-in dataset. `limit` keeps the first N training examples; `cache_dir` overrides the download cache."""
    if unknown:
        raise ConfigError(f"load({name!r}) got unknown option(s) {sorted(unknown)}; it accepts limit= and cache_dir=.")
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, (int, np.integer)) or limit < 1):
        raise ConfigError(f"limit must be a positive number of training examples, got {limit!r}.")
    if name == "digits":
        ds = _digits()
    elif name in SOURCES:
        ds = _idx_dataset(name, cache_dir)
    elif name in TEXTS:
        raise DatasetNotFound(f"{name!r} is a text corpus, not (x, y) examples: use jl.datasets.load({name!r}) for "
                              f"a TextCorpus, or jupyter_llm.data.builtin.load_text({name!r}) for the raw text.")
    else:
        raise DatasetNotFound(unknown_name(name, sorted({*available(), *TEXTS})))
    if limit is not None:
        x, y = ds.train
        ds = ds.replace(train=(x[:limit], y[:limit]), meta={**ds.meta, "limit": int(limit)})
    return ds


def load_text(name: str, *, path=None, cache_dir=None) -> str:
    """The raw text of a built-in corpus, downloaded once, or read from `path` (a local copy, checksum-verified)."""
    if name not in TEXTS:
        raise DatasetNotFound(unknown_name(name, sorted(TEXTS)))
    spec = TEXTS[name]
    if path is None:
        path = download.fetch(spec["urls"], spec["filename"], spec["sha256"], cache_dir=cache_dir)
    else:
        path = Path(path).expanduser()
        if not path.is_file():
            raise DatasetNotFound(f"Cannot read {str(path)!r} as {name}: it does not exist or is not a file.")
        got = download.file_hash(path)
        if got != spec["sha256"]:
            raise ChecksumError(f"{str(path)!r} is not the published {name} (sha256 {got}, expected "
                                f"{spec['sha256']}). For other text, use jl.datasets.text({str(path)!r}).")
    return Path(path).read_text(encoding="utf-8")


def unknown_name(name, names) -> str:
    """The message for a dataset name not in `names`: the closest match and the whole list."""
    close = difflib.get_close_matches(str(name), names, n=1, cutoff=0.6)
    hint = f" Did you mean {close[0]!r}?" if close else ""
    return f"No built-in dataset named {name!r}.{hint} Available: {', '.join(names)}."


# --- digits -------------------------------------------------------------------------------------------------------


def _digits() -> Dataset:
    with np.load(DIGITS_FILE, allow_pickle=False) as f:
        images, labels = f["images"], f["labels"].astype(np.int32)
    x = aligned.scaled(images, 16.0)[..., None]
    test = stratified_test_indices(labels, DIGITS_TEST_FRACTION, DIGITS_SEED)
    train = np.setdiff1d(np.arange(len(labels)), test)
    return Dataset(train=(aligned.take(x, train), aligned.take(labels, train)),
                   test=(aligned.take(x, test), aligned.take(labels, test)), name="digits",
                   num_classes=10, class_names=tuple(str(i) for i in range(10)), task="classification",
                   description="8x8 handwritten digits (UCI, as shipped by scikit-learn), grey levels scaled to "
                               "[0, 1]; fixed stratified 80/20 train/test split.",
                   meta={"source": "sklearn.datasets.load_digits", "split_seed": DIGITS_SEED})


def stratified_test_indices(labels: np.ndarray, fraction: float, seed: int) -> np.ndarray:
    """Sorted indices of a test split of `ceil(fraction * N)` examples (as sklearn), each class getting its share.

    Each class is shuffled, its members spread evenly over [0, 1), and the first examples along that line are taken,
    so every class contributes its proportion (sklearn-style stratification without sklearn).
    """
    rng = np.random.default_rng(seed)
    order, position = [], []
    for c in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == c))
        order.append(members)
        position.append((np.arange(len(members)) + 0.5) / len(members))
    order, position = np.concatenate(order), np.concatenate(position)
    n_test = math.ceil(fraction * len(labels))
    return np.sort(order[np.argsort(position, kind="stable")[:n_test]])


# --- MNIST-style IDX files ----------------------------------------------------------------------------------------


def _idx_dataset(name: str, cache_dir) -> Dataset:
    spec = SOURCES[name]
    folder = download.cache_dir(cache_dir) / name  # mnist and fashion_mnist share file names
    arrays = {}
    for filename in _IDX_FILES:
        urls = [base + filename for base in spec["mirrors"]]
        path = download.fetch(urls, filename, spec["sha256"][filename], cache_dir=folder)
        arrays[filename] = read_idx(path, ndim=3 if "images" in filename else 1)
    splits = []
    for prefix in ("train", "t10k"):
        images, labels = arrays[f"{prefix}-images-idx3-ubyte.gz"], arrays[f"{prefix}-labels-idx1-ubyte.gz"]
        if len(images) != len(labels):
            raise DatasetNotFound(f"The cached {name} files in {str(folder)!r} disagree: {len(images)} {prefix} "
                                  f"images but {len(labels)} labels. Delete that folder to download them again.")
        splits.append((aligned.scaled(images, 255.0)[..., None], aligned.astype(labels, np.int32)))
    return Dataset(train=splits[0], test=splits[1], name=name, num_classes=len(spec["class_names"]),
                   class_names=spec["class_names"], task="classification", description=spec["description"],
                   meta={"cache": str(folder)})


def read_idx(path, ndim: int | None = None) -> np.ndarray:
    """A gzip-compressed IDX file (the MNIST format) as a uint8 array; anything malformed raises DatasetNotFound."""
    path = Path(path)
    fix = f"Delete {str(path)!r} so it is downloaded again."
    try:
        with gzip.open(path, "rb") as f:
            raw = f.read()
    except (OSError, EOFError, zlib.error) as exc:
        raise DatasetNotFound(f"{path.name} is not a readable gzip file ({exc}). {fix}") from None
    if len(raw) < 4 or raw[:2] != b"\0\0" or raw[2] != 0x08:
        raise DatasetNotFound(f"{path.name} is not an IDX file of unsigned bytes (header {raw[:4].hex() or 'empty'}"
                              f", expected 000008..). {fix}")
    dims_count = raw[3]
    if ndim is not None and dims_count != ndim:
        raise DatasetNotFound(f"{path.name} holds a {dims_count}-d array, expected {ndim}-d. {fix}")
    header = 4 + 4 * dims_count
    if len(raw) < header:
        raise DatasetNotFound(f"{path.name} ends inside its IDX header. {fix}")
    shape = tuple(int(d) for d in np.frombuffer(raw, ">u4", count=dims_count, offset=4))
    size = int(np.prod(shape, dtype=np.int64))
    if len(raw) - header != size:
        raise DatasetNotFound(f"{path.name} declares shape {shape} ({size:,} bytes) but holds "
                              f"{len(raw) - header:,} bytes of data. {fix}")
    return np.frombuffer(raw, np.uint8, offset=header).reshape(shape).copy()
