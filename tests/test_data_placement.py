"""On a CPU, data is placed on the device without a second copy in host memory: arrays jupyter_llm converted
itself are aligned, and a user's large float32 array is read in place through an aligned view."""

import jax
import numpy as np
import pytest

import jupyter_llm as jl
from jupyter_llm import events as ev
from jupyter_llm.data import aligned, builtin, in_place
from jupyter_llm.data.coerce import as_dataset
from jupyter_llm.data.sources import ArraySource, WindowSource
from jupyter_llm.train.layout import data_parallel
from tests.helpers import mlp, params_of, same_params

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
    train, val = ds.train, ds.validation  # Subsets: rows of the converted arrays, which both splits share
    assert train.x is val.x and train.y is val.y
    for split, hosts in (("train", (train.x, train.y, train.rows)), ("validation", (val.x, val.y))):
        for host, device in zip(hosts, source.device[split], strict=True):
            assert pointer(device) == pointer(host), split  # the same memory, not a copy
            np.testing.assert_array_equal(np.asarray(device), host)


def at_offset(shape, offset: int, dtype=np.float32) -> np.ndarray:
    """An array whose data starts `offset` bytes past a 64-byte boundary (NumPy's large arrays: 16)."""
    nbytes = int(np.prod(shape)) * np.dtype(dtype).itemsize
    raw = np.empty(nbytes + 128, np.uint8)
    start = (-raw.ctypes.data % 64) + offset
    return raw[start:start + nbytes].view(dtype).reshape(shape)


@cpu_only
def test_a_users_small_unaligned_array_is_copied_not_aliased():
    """The contrast that shows the test above can fail: NumPy's own buffer (16-byte aligned) is copied."""
    x = at_offset((400, 20), 16)
    x[:] = 1.0
    ds = as_dataset((x, np.zeros(400, np.int32)))
    assert ds.train[0] is x  # a float32 array is taken as given...
    source = ArraySource(ds, 16, data_parallel(16, jax.devices()[:1]))
    assert pointer(source.device["train"][0]) != pointer(x)  # ...and device_put copies it (under MIN_BYTES)


@cpu_only
@pytest.mark.parametrize("shape", [(300, 784), (200, 7), (900,), (120, 6, 6, 3)])
def test_a_users_large_unaligned_array_is_read_in_place_and_gathers_every_row(monkeypatch, shape):
    monkeypatch.setattr(in_place, "MIN_BYTES", 0)  # the tests' arrays stand for large ones
    layout = data_parallel(16, jax.devices()[:1])
    take = jax.jit(lambda rows, idx: rows.take(idx))
    rng = np.random.default_rng(0)
    for offset in range(4, 64, 4):  # every float32 alignment but the one device_put aliases itself
        x = at_offset(shape, offset)
        x[...] = rng.normal(size=shape)
        rows = layout.put(in_place.place(x, layout))
        assert isinstance(rows, in_place.InPlaceRows), offset
        start = pointer(rows.view)
        assert pointer(x) < start < pointer(x) + 64 and start % 64 == 0  # inside the user's buffer: no copy
        np.testing.assert_array_equal(np.asarray(take(rows, np.arange(shape[0], dtype=np.int32))), x)
        idx = rng.integers(0, shape[0], (3, 16)).astype(np.int32)  # a chunk's plan: (steps, batch)
        np.testing.assert_array_equal(np.asarray(take(rows, idx)), x[idx])


@cpu_only
def test_in_place_rows_are_kept_for_one_cpu_device_and_large_c_contiguous_arrays_only(monkeypatch):
    monkeypatch.setattr(in_place, "MIN_BYTES", 0)
    one = data_parallel(16, jax.devices()[:1])
    x = at_offset((100, 8), 16)
    assert isinstance(in_place.place(x, one), in_place.InPlaceRows)
    aligned_x = at_offset((100, 8), 0)
    for a in (aligned_x, x[:, ::2], x.astype(np.float64)[::2]):  # device_put aliases it; not contiguous
        assert in_place.place(a, one) is a
    monkeypatch.setattr(in_place, "MIN_BYTES", x.nbytes + 1)
    assert in_place.place(x, one) is x
    if len(jax.devices()) > 1:  # replicated over several devices, each holds its own copy
        monkeypatch.setattr(in_place, "MIN_BYTES", 0)
        assert in_place.place(x, data_parallel(16, jax.devices()[:2])) is x


@cpu_only
def test_a_fit_on_an_array_read_in_place_equals_one_on_its_copy_and_reuses_its_compiled_steps(monkeypatch):
    rng = np.random.default_rng(1)
    x, y = rng.normal(size=(512, 64)).astype(np.float32), rng.integers(0, 10, 512).astype(np.int32)
    compiles = []

    class Spy:
        def on(self, event):
            if isinstance(event, ev.CompileEnd):
                compiles.append(event.cached)

    def fit(x):  # a validation split given as such: a carved one would be jupyter_llm's own aligned copy
        return jl.fit(mlp(), {"train": (x[:384], y[:384]), "val": (x[384:], y[384:])}, epochs=3, batch_size=32,
                      seed=2, display="none", sinks=[Spy()])

    copied = fit(x)  # the default MIN_BYTES: this small array is copied
    monkeypatch.setattr(in_place, "MIN_BYTES", 0)
    placed, place = [], in_place.place  # what the fit put on the device (a finished Run has let it go)
    monkeypatch.setattr(in_place, "place", lambda a, layout: placed.append(place(a, layout)) or placed[-1])
    runs = []
    for offset in (16, 48):
        xo = at_offset(x.shape, offset)
        xo[...] = x
        runs.append(fit(xo))
        inputs = [a for a in placed if a.shape[1:] == x.shape[1:]]
        assert len(inputs) == 2 and all(isinstance(a, in_place.InPlaceRows) for a in inputs)  # train, validation
        placed.clear()
    assert compiles == [False, False, True]  # a new program for in-place rows, the same one at any alignment
    assert runs[0].history == runs[1].history and same_params(runs[0].model, runs[1].model)  # one program
    for a, b in zip(params_of(runs[0].model), params_of(copied.model), strict=True):  # another program: the
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)  # same batches, sums fused in another order
    for key, values in copied.history.items():
        np.testing.assert_allclose(runs[0].history[key], values, rtol=1e-5, err_msg=key)
    assert copied.history["loss"][-1] < copied.history["loss"][0]


def test_builtin_digits_arrays_are_aligned():
    ds = builtin.load("digits")
    for split in (ds.train, ds.test):
        for a in split:
            assert pointer(a) % aligned.ALIGN == 0


@cpu_only
def test_a_text_corpus_is_aligned_and_its_tokens_are_read_in_place():
    corpus = jl.datasets.text("to be or not to be, that is the question. " * 200, block_size=16)
    source = WindowSource(corpus, 4, 16, data_parallel(4, jax.devices()[:1]), steps_per_epoch=10)
    for part in ("train", "validation"):
        host = getattr(corpus, part)
        assert host.dtype == np.int32 and pointer(host) % aligned.ALIGN == 0, part
        assert pointer(source.device[part]) == pointer(host), part  # the same memory, not a copy
