"""`Subset`: a split that is some rows of another split's arrays, kept as row indices instead of copied rows.

`val_split` carves validation rows out of the training arrays at random. Copying them (fancy indexing) made a second
copy of the whole dataset — 1 GiB more for a 1 GiB training set, for as long as the Run lived. As row indices, the
arrays stay the user's: the device holds them once (on a CPU, read in place) and each split's plans index its rows.
"""

from __future__ import annotations

import numpy as np

from jupyter_llm.data import aligned


class Subset:
    """Rows `rows` of the arrays `x` and `y`: an `(x, y)` pair whose arrays are gathered only when asked for.

    `x, y = subset` (or `subset[0]`) gives copies of the rows, for code that wants plain arrays; jupyter_llm reads
    `subset.x`, `subset.y` and `subset.rows` and never copies.
    """

    __slots__ = ("x", "y", "rows")

    def __init__(self, x, y, rows):
        self.x, self.y, self.rows = x, y, rows

    def __len__(self) -> int:
        return 2  # a pair, like every split

    def __getitem__(self, i):
        return (self.x, self.y)[i][self.rows]

    def __iter__(self):
        return (self[i] for i in range(2))

    def __repr__(self) -> str:
        return f"Subset({len(self.rows)} of {len(self.x)} rows, x {self.x.shape[1:]}, y {self.y.shape[1:]})"


def parts(split) -> tuple:
    """`(x, y, rows)` of a split: `rows` is None for a plain `(x, y)` pair, which is all of its rows."""
    if isinstance(split, Subset):
        return split.x, split.y, split.rows
    x, y = split
    return x, y, None


def size(split) -> int:
    """How many examples a split has."""
    x, _, rows = parts(split)
    return len(x) if rows is None else len(rows)


def row_index(order: np.ndarray) -> np.ndarray:
    """Row indices as the device gathers them (int32), in an aligned array the CPU device reads in place."""
    return aligned.astype(np.asarray(order), np.int32)
