"""On a CPU, data that jupyter_llm converted itself is placed on the device without a second copy in host memory."""

import jax
import numpy as np
import pytest

from jupyter_llm.data import aligned, builtin
from jupyter_llm.data.coerce import as_dataset
from jupyter_llm.data.sources import ArraySource
from jupyter_llm.train.sharding import data_parallel

cpu_only = pytest.mark.skipif(jax.devices()[0].platform != "cpu", reason="host-buffer aliasing is what a CPU does")


def pointer(a) -> int:
    return a.ctypes.data if isinstance(a, np.ndarray) else a.unsafe_buffer_pointer()


def test_aligned_helpers_give_numpys_values_on_aligned_buffers():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(37, 5, 3))
    idx = rng.permutation(37)[:11]
    u8 = rng.integers(0, 256, (9, 4), dtype=np.uint8)
    for got, want in ((aligned.astype(a, np.float32), a.astype(np.float32)),
                      (aligned.take(a, idx), a[idx]),
                      (aligned.scaled(u8, 255.0), u8.astype(np.float32) / 255.0),
                      (aligned.empty((0, 3), np.int32), np.empty((0, 3), np.int32))):
        assert got.dtype == want.dtype and got.shape == want.shape and got.flags.c_contiguous
        np.testing.assert_array_equal(got, want)
        assert got.size == 0 or pointer(got) % aligned.ALIGN == 0  # (an empty array has no data to align)


@cpu_only
def test_converted_and_carved_splits_are_used_in_place_by_the_cpu_device():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(500, 20))  # float64: converted to float32 by jupyter_llm
    y = rng.integers(0, 3, 500)  # int64: converted to int32
    ds = as_dataset((x, y), val_split=0.2)
    source = ArraySource(ds, 16, data_parallel(16, jax.devices()[:1]))
    for split in ("train", "validation"):
        for host, device in zip(getattr(ds, split), source.device[split], strict=True):
            assert pointer(device) == pointer(host), split  # the same memory, not a copy
            np.testing.assert_array_equal(np.asarray(device), host)


@cpu_only
def test_a_users_unaligned_array_is_copied_not_aliased():
    """The contrast that shows the test above can fail: NumPy's own buffer (16-byte aligned) is copied."""
    raw = np.empty(400 * 20 * 4 + 64, np.uint8)
    start = (-raw.ctypes.data % 64) + 16
    x = raw[start:start + 400 * 20 * 4].view(np.float32).reshape(400, 20)
    x[:] = 1.0
    ds = as_dataset((x, np.zeros(400, np.int32)))
    assert ds.train[0] is x  # a float32 array is taken as given...
    source = ArraySource(ds, 16, data_parallel(16, jax.devices()[:1]))
    assert pointer(source.device["train"][0]) != pointer(x)  # ...and device_put copies it


def test_builtin_digits_arrays_are_aligned():
    ds = builtin.load("digits")
    for split in (ds.train, ds.test):
        for a in split:
            assert pointer(a) % aligned.ALIGN == 0
