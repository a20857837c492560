"""Built-in datasets and the checksummed download cache, all offline: `file://` URLs stand in for remote files."""

import gzip
import hashlib
import struct
from pathlib import Path

import numpy as np
import pytest

from jupyter_llm.data import builtin, catalog, download
from jupyter_llm.errors import ChecksumError, DatasetNotFound

SHAKESPEARE = Path(__file__).parent.parent / "notebooks" / "data" / "tinyshakespeare.txt"


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.fixture
def cache(tmp_path, monkeypatch):
    folder = tmp_path / "cache"
    monkeypatch.setenv(download.ENV_VAR, str(folder))
    return folder


@pytest.fixture
def source(tmp_path):
    """A 'remote' file served by a file:// URL."""
    path = tmp_path / "remote" / "blob.bin"
    path.parent.mkdir()
    path.write_bytes(b"some dataset bytes\n" * 100)
    return path


# --- digits -------------------------------------------------------------------------------------------------------


def test_digits_shapes_dtypes_and_ranges():
    ds = builtin.load("digits")
    (x, y), (xt, yt) = ds.train, ds.test
    assert ds.validation is None and ds.name == "digits" and ds.task == "classification"
    assert ds.num_classes == 10 and list(ds.class_names) == [str(i) for i in range(10)]
    assert x.shape == (1437, 8, 8, 1) and xt.shape == (360, 8, 8, 1) and ds.input_shape == (8, 8, 1)
    assert x.dtype == xt.dtype == np.float32 and y.dtype == yt.dtype == np.int32
    assert x.min() == 0.0 and x.max() == 1.0 and set(np.unique(y)) == set(range(10))
    assert np.allclose(x * 16, np.round(x * 16))  # grey levels 0..16, scaled exactly


def test_digits_split_is_stratified_deterministic_and_disjoint():
    a, b = builtin.load("digits"), builtin.load("digits")
    for split in ("train", "test"):
        assert all(np.array_equal(u, v) for u, v in zip(getattr(a, split), getattr(b, split)))
    total = np.bincount(a.train[1], minlength=10) + np.bincount(a.test[1], minlength=10)
    with np.load(builtin.DIGITS_FILE) as f:
        images, labels = f["images"], f["labels"]
    assert images.shape == (1797, 8, 8) and images.dtype == labels.dtype == np.uint8
    assert np.array_equal(total, np.bincount(labels, minlength=10))
    assert np.all(np.abs(np.bincount(a.test[1], minlength=10) - 0.2 * total) <= 1)
    idx = builtin.stratified_test_indices(labels, 0.2, 0)
    assert len(np.unique(idx)) == 360 and np.array_equal(a.test[1], labels[idx])
    assert np.array_equal(a.test[0][..., 0] * 16, images[idx])
    assert not np.array_equal(idx, builtin.stratified_test_indices(labels, 0.2, 1))


def test_limit_keeps_the_first_training_examples():
    full, small = builtin.load("digits"), builtin.load("digits", limit=100)
    assert small.sizes() == {"train": 100, "validation": 0, "test": 360}
    assert np.array_equal(small.train[0], full.train[0][:100])
    with pytest.raises(Exception, match="limit"):
        builtin.load("digits", limit=0)


# --- fetch --------------------------------------------------------------------------------------------------------


def test_fetch_copies_verifies_then_uses_the_cache_without_the_source(cache, source):
    digest = sha256(source.read_bytes())
    path = download.fetch(source.as_uri(), "blob.bin", digest)
    assert path == cache / "blob.bin" and path.read_bytes() == source.read_bytes()
    source.unlink()
    assert download.fetch(source.as_uri(), "blob.bin", digest) == path
    assert sorted(p.name for p in cache.iterdir()) == ["blob.bin"]  # no temporary files left


def test_fetch_tries_mirrors_in_order_and_accepts_md5(cache, source):
    missing = (source.parent / "missing.bin").as_uri()
    md5 = hashlib.md5(source.read_bytes()).hexdigest()
    path = download.fetch([missing, source.as_uri()], "blob.bin", md5=md5)
    assert path.read_bytes() == source.read_bytes()


def test_wrong_checksum_raises_and_leaves_nothing_in_the_cache(cache, source):
    wrong = "0" * 64
    with pytest.raises(ChecksumError) as err:
        download.fetch(source.as_uri(), "blob.bin", wrong)
    message = str(err.value)
    assert "blob.bin" in message and wrong in message and sha256(source.read_bytes()) in message
    assert "mirror" in message and str(cache / "blob.bin") in message
    assert list(cache.iterdir()) == []


def test_corrupted_cached_file_is_fetched_again(cache, source):
    digest = sha256(source.read_bytes())
    cache.mkdir()
    (cache / "blob.bin").write_bytes(b"truncated")
    path = download.fetch(source.as_uri(), "blob.bin", digest)
    assert path.read_bytes() == source.read_bytes()


def test_unreachable_url_says_where_to_put_the_file(cache, tmp_path):
    with pytest.raises(DatasetNotFound) as err:
        download.fetch((tmp_path / "nowhere.bin").as_uri(), "blob.bin", "a" * 64)
    message = str(err.value)
    assert str(cache / "blob.bin") in message and "nowhere.bin" in message and "a" * 64 in message


def test_cache_dir_comes_from_the_argument_then_the_environment_then_home(tmp_path, monkeypatch):
    monkeypatch.setenv(download.ENV_VAR, str(tmp_path / "env"))
    assert download.cache_dir() == tmp_path / "env"
    assert download.cache_dir(tmp_path / "arg") == tmp_path / "arg"
    monkeypatch.delenv(download.ENV_VAR)
    assert download.cache_dir() == Path.home() / ".cache" / "jupyter_llm"


# --- MNIST-style datasets -----------------------------------------------------------------------------------------


def idx_bytes(arr: np.ndarray) -> bytes:
    """The real IDX layout: two zero bytes, type code 0x08 (uint8), rank, big-endian dims, then the data."""
    return bytes([0, 0, 8, arr.ndim]) + struct.pack(f">{arr.ndim}I", *arr.shape) + arr.astype(np.uint8).tobytes()


@pytest.fixture
def fake_mnist(tmp_path, monkeypatch):
    """Four small IDX gz files, served by file:// behind a dead first mirror, with their true checksums."""
    rng = np.random.default_rng(0)
    arrays = {"train-images-idx3-ubyte.gz": rng.integers(0, 256, (30, 28, 28)),
              "train-labels-idx1-ubyte.gz": rng.integers(0, 10, 30),
              "t10k-images-idx3-ubyte.gz": rng.integers(0, 256, (12, 28, 28)),
              "t10k-labels-idx1-ubyte.gz": rng.integers(0, 10, 12)}
    remote = tmp_path / "remote"
    remote.mkdir()
    sums = {}
    for name, arr in arrays.items():
        data = gzip.compress(idx_bytes(arr))
        (remote / name).write_bytes(data)
        sums[name] = sha256(data)
    spec = {**builtin.SOURCES["mnist"], "mirrors": ((tmp_path / "dead").as_uri() + "/", remote.as_uri() + "/"),
            "sha256": sums}
    monkeypatch.setitem(builtin.SOURCES, "mnist", spec)
    return arrays


def test_mnist_loader_reads_idx_files_into_scaled_images(fake_mnist, cache):
    ds = builtin.load("mnist")
    (x, y), (xt, yt) = ds.train, ds.test
    assert x.shape == (30, 28, 28, 1) and xt.shape == (12, 28, 28, 1) and x.dtype == np.float32
    assert np.allclose(x[..., 0] * 255, fake_mnist["train-images-idx3-ubyte.gz"])
    assert np.array_equal(yt, fake_mnist["t10k-labels-idx1-ubyte.gz"]) and y.dtype == np.int32
    assert 0.0 <= x.min() and x.max() <= 1.0 and ds.num_classes == 10 and ds.test is not None
    assert (cache / "mnist" / "train-images-idx3-ubyte.gz").is_file()
    assert builtin.load("mnist", limit=5).sizes()["train"] == 5


def test_mnist_loader_takes_cache_dir(fake_mnist, tmp_path):
    builtin.load("mnist", cache_dir=tmp_path / "elsewhere")
    assert len(list((tmp_path / "elsewhere" / "mnist").iterdir())) == 4


def test_fashion_mnist_has_named_classes():
    assert builtin.SOURCES["fashion_mnist"]["class_names"][:2] == ("T-shirt/top", "Trouser")
    assert set(builtin.available()) == {"digits", "mnist", "fashion_mnist"}


@pytest.mark.parametrize("data, words", [
    (b"not gzip at all", ["bad.gz", "gzip"]),
    (gzip.compress(b"\x00\x00\x0d\x01" + struct.pack(">I", 3) + b"abc"), ["bad.gz", "IDX"]),
    (gzip.compress(idx_bytes(np.zeros((4, 28, 28)))[:-10]), ["bad.gz", "declares shape (4, 28, 28)"]),
    (gzip.compress(idx_bytes(np.zeros(5))), ["bad.gz", "1-d array, expected 3-d"]),
])
def test_malformed_idx_gives_a_clear_error(tmp_path, data, words):
    path = tmp_path / "bad.gz"
    path.write_bytes(data)
    with pytest.raises(DatasetNotFound) as err:
        builtin.read_idx(path, ndim=3)
    assert all(w in str(err.value) for w in words) and "Delete" in str(err.value)


# --- text and names -----------------------------------------------------------------------------------------------


def test_tinyshakespeare_from_a_local_copy_is_verified(tmp_path):
    text = builtin.load_text("tinyshakespeare", path=SHAKESPEARE)
    assert text.startswith("First Citizen:") and len(text) == 1115394
    edited = tmp_path / "edited.txt"
    edited.write_text(text.replace("Citizen", "Citizens"), encoding="utf-8")
    with pytest.raises(ChecksumError, match="jl.datasets.text"):
        builtin.load_text("tinyshakespeare", path=edited)


def test_tinyshakespeare_is_downloaded_once_into_the_cache(cache, monkeypatch):
    monkeypatch.setitem(builtin.TEXTS, "tinyshakespeare",
                        {**builtin.TEXTS["tinyshakespeare"], "urls": (SHAKESPEARE.as_uri(),)})
    assert builtin.load_text("tinyshakespeare").startswith("First Citizen:")
    assert (cache / "tinyshakespeare.txt").is_file()


def test_unknown_name_lists_the_names_and_the_closest_match():
    with pytest.raises(DatasetNotFound) as err:
        builtin.load("mnistt")
    message = str(err.value)
    assert "'mnistt'" in message and "Did you mean 'mnist'?" in message and "digits" in message
    with pytest.raises(DatasetNotFound, match="tinyshakespeare"):
        builtin.load_text("tinyshakespear")


def test_the_catalogue_answers_an_unknown_name_with_every_name():
    with pytest.raises(DatasetNotFound) as err:
        catalog.load("sentimnt")
    message = str(err.value)
    assert "Did you mean 'sentiment'?" in message
    assert all(name in message for name in catalog.available())
