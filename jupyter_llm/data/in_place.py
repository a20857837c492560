"""A user's large array used in place by the CPU device, instead of the copy `jax.device_put` would make.

On a CPU the "device" is host memory, and XLA:CPU aliases a NumPy buffer only when it starts on a 64-byte boundary;
NumPy's large arrays start 16 bytes past one, so placing them copies the whole dataset (the MNIST-sized MLP: a
second 179 MB, which a loop that slices batches on the host never holds). `place` instead hands the device an
aligned view that starts a few elements into the array, plus copies of the first and last rows (which that view
does not cover whole); `take_rows` gathers a batch from the view and patches in those rows. The view's length and
the copies' shapes depend only on the array's shape, so the same compiled step serves any alignment.

Like `jax.device_put` of an aligned array, the device then reads the user's buffer: changing the array in place
later changes what the fit's splits hold (`Run.evaluate("validation")`, for one).
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np

from jupyter_llm.data.aligned import ALIGN

MIN_BYTES = 16 * 2**20  # smaller arrays are copied: the copy costs little and keeps the plain gather


@jax.tree_util.register_pytree_node_class
class InPlaceRows:
    """Rows of an (n, *row_shape) array held as an aligned flat view plus copies of its end rows."""

    def __init__(self, view, head, tail, skip, n: int, row_shape: tuple):
        self.view, self.head, self.tail, self.skip = view, head, tail, skip
        self.n, self.row_shape = n, tuple(row_shape)

    @property
    def shape(self):
        return (self.n, *self.row_shape)

    @property
    def dtype(self):
        return self.view.dtype

    def __len__(self):
        return self.n

    def tree_flatten(self):
        return (self.view, self.head, self.tail, self.skip), (self.n, self.row_shape)

    @classmethod
    def tree_unflatten(cls, aux, children):
        return cls(*children, *aux)

    def take(self, idx):
        """Rows `idx` (any shape of row indices), as `a[idx]` would give them."""
        d, k = math.prod(self.row_shape), self.head.shape[0]
        flat_idx = idx.reshape(-1)
        starts = jnp.clip(flat_idx * d - self.skip, 0, self.view.shape[0] - d)
        rows = jax.vmap(lambda s: jax.lax.dynamic_slice_in_dim(self.view, s, d))(starts)
        rows = rows.reshape((-1, *self.row_shape))
        last = self.n - k
        at_head = (flat_idx < k).reshape((-1,) + (1,) * len(self.row_shape))
        at_tail = (flat_idx >= last).reshape(at_head.shape)
        rows = jnp.where(at_head, self.head[jnp.clip(flat_idx, 0, k - 1)], rows)
        rows = jnp.where(at_tail, self.tail[jnp.clip(flat_idx - last, 0, k - 1)], rows)
        return rows.reshape(idx.shape + tuple(self.row_shape))


def take_rows(a, idx):
    """`a[idx]` for a device array or an `InPlaceRows`."""
    return a.take(idx) if isinstance(a, InPlaceRows) else a[idx]


def place(a, layout):
    """`a` as `InPlaceRows` where that saves a copy of it on a one-device CPU layout, else `a` unchanged."""
    if not _worth_it(a, layout):
        return a
    per_align = ALIGN // a.itemsize
    n, d = a.shape[0], math.prod(a.shape[1:])
    skip = (-a.ctypes.data % ALIGN) // a.itemsize  # elements before the first aligned one
    k = _end_rows(a)
    view = a.reshape(-1)[skip:skip + n * d - per_align]
    return InPlaceRows(view, np.ascontiguousarray(a[:k]), np.ascontiguousarray(a[n - k:]), np.int32(skip), n,
                       a.shape[1:])


def _worth_it(a, layout) -> bool:
    if not isinstance(a, np.ndarray) or a.ndim < 1 or not a.flags.c_contiguous or a.nbytes < MIN_BYTES:
        return False
    if layout.num_devices != 1 or layout.mesh.devices.flat[0].platform != "cpu":
        return False
    if a.ctypes.data % ALIGN == 0 or ALIGN % a.itemsize or a.ctypes.data % a.itemsize:
        return False  # aligned: device_put uses it in place already; odd item sizes: no aligned element
    return a.size > 0 and a.shape[0] > 2 * _end_rows(a) and a.size < 2**31 - 1


def _end_rows(a) -> int:
    """Rows at each end that an aligned view a few elements in may not cover whole."""
    return math.ceil(ALIGN // a.itemsize / math.prod(a.shape[1:]))
