"""Host arrays that the CPU backend uses in place, so data on the "device" is not a second copy in host memory.

XLA:CPU takes a NumPy buffer without copying when it is 64-byte aligned; NumPy's large allocations are only 16-byte
aligned, so `jax.device_put` copies them. On a CPU the device is host memory: that copy doubles the dataset's
footprint. The arrays jupyter_llm makes itself (dtype conversions, the built-in loaders, a carved split's row
indices) are allocated aligned, so placing them costs no memory. A user's own large float32 array is read in place
through an aligned view of it (`in_place.py`); a small one is copied by `device_put` unless it happens to be aligned.
"""

from __future__ import annotations

import math

import numpy as np

ALIGN = 64  # bytes: what XLA:CPU needs to alias a host buffer


def empty(shape, dtype) -> np.ndarray:
    """An uninitialised C-contiguous array whose data starts on an ALIGN-byte boundary."""
    dtype = np.dtype(dtype)
    shape = tuple(shape)
    nbytes = math.prod(shape) * dtype.itemsize
    raw = np.empty(nbytes + ALIGN, np.uint8)
    start = -raw.ctypes.data % ALIGN
    return raw[start:start + nbytes].view(dtype).reshape(shape)


def astype(a: np.ndarray, dtype) -> np.ndarray:
    """`a.astype(dtype)` into an aligned array."""
    out = empty(a.shape, dtype)
    np.copyto(out, a, casting="unsafe")
    return out


def take(a: np.ndarray, idx: np.ndarray) -> np.ndarray:
    """`a[idx]` (rows) into an aligned array."""
    out = empty((len(idx), *a.shape[1:]), a.dtype)
    np.take(a, idx, axis=0, out=out)
    return out


def scaled(a: np.ndarray, divisor: float, dtype=np.float32) -> np.ndarray:
    """`a / divisor` as `dtype`, computed into an aligned array with no float64 temporary."""
    out = astype(a, dtype)
    out /= np.asarray(divisor, out.dtype)
    return out
