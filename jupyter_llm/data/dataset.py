"""`Dataset`: named splits of in-memory arrays plus the metadata a fit needs.

Every form of data `fit` accepts — an `(x, y)` tuple, a dict of splits, a built-in name, a Dataset — is turned into
a Dataset by `jupyter_llm.data.coerce.as_dataset`, which is where shapes, dtypes and values are checked.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any, Sequence

import numpy as np

from jupyter_llm.data import subset

IGNORED = -1  # an integer label of a sequence position that no loss or metric counts (train/losses.py)
Split = tuple  # (x, y) pair of arrays with equal leading dimension, or a `Subset` (rows of such a pair)


@dataclass(frozen=True)
class Dataset:
    """Train / validation / test splits, each an `(x, y)` pair of NumPy arrays (or None); a split carved by
    `val_split` is a `Subset`, rows of the training arrays.

    `num_classes` is set for classification; `class_names` optionally names them. `task` is one of
    "classification", "binary", "regression"; None lets `fit` infer it from the labels.
    """

    train: Split
    validation: Split | None = None
    test: Split | None = None
    name: str = "data"
    num_classes: int | None = None
    class_names: Sequence[str] | None = None
    task: str | None = None
    description: str = ""
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def input_shape(self) -> tuple[int, ...]:
        """Shape of one example (without the batch dimension)."""
        return tuple(np.shape(subset.parts(self.train)[0])[1:])

    def sizes(self) -> dict[str, int]:
        """Number of examples per split (0 for a missing split)."""
        return {
            name: (0 if split is None else subset.size(split))
            for name, split in (("train", self.train), ("validation", self.validation), ("test", self.test))
        }

    def replace(self, **changes) -> "Dataset":
        return replace(self, **changes)

    def __repr__(self) -> str:
        sizes = ", ".join(f"{k}={v}" for k, v in self.sizes().items() if v)
        classes = f", num_classes={self.num_classes}" if self.num_classes else ""
        return f"Dataset({self.name!r}, {sizes}, input_shape={self.input_shape}{classes})"
