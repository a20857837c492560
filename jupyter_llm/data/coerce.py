"""Turn whatever the user passed as data into a checked `Dataset`.

All checks a user can fail live here, with messages that name the split, the shapes and the fix: wrong container,
mismatched lengths, non-numeric or NaN inputs, empty splits, labels out of range.
"""

from __future__ import annotations

import math
from typing import Any, Mapping

import numpy as np

from jupyter_llm.data import aligned
from jupyter_llm.data.dataset import IGNORED, Dataset
from jupyter_llm.data.subset import Subset, parts, row_index, size
from jupyter_llm.errors import ConfigError, DataError, a_or_an

ACCEPTED = ("an (x, y) tuple of arrays, a dict with 'train' (and optional 'validation', 'test') entries, "
            "a jupyter_llm.datasets.Dataset, or a built-in dataset name such as 'digits'")
FINITE_CHECK_BYTES = 16 * 2**20  # the mask of one block of rows in the NaN check
_SPLIT_ALIASES = {"train": "train", "validation": "validation", "val": "validation", "valid": "validation",
                  "test": "test"}


def as_dataset(data: Any, *, val_split: float = 0.0, seed: int = 0) -> Dataset:
    """Coerce, check, and (with `val_split`) carve a validation split from train."""
    ds = _coerce(data)
    if _labels_are_bool(ds.train):
        ds = ds.replace(meta={**ds.meta, "labels_given_as": "bool"})  # so messages call them bool, not floats
    ds = ds.replace(train=check_split(ds.train, "train", required=True),
                    validation=check_split(ds.validation, "validation"),
                    test=check_split(ds.test, "test"))
    _check_splits_agree(ds)
    if val_split:
        if ds.validation is not None:
            raise ConfigError("The data already has a validation split, so --val-split has nothing to do: "
                              "drop --val-split, or pass only the training arrays.")
        ds = _carve_validation(ds, val_split, seed)
    _check_labels(ds)
    return ds


def _coerce(data: Any) -> Dataset:
    if isinstance(data, Dataset):
        return data
    if isinstance(data, str):
        from jupyter_llm.data.catalog import load

        loaded = load(data)
        if not isinstance(loaded, Dataset):
            raise DataError(f"{data!r} is a text corpus for language models, not (x, y) examples.")
        return loaded
    if isinstance(data, Mapping):
        unknown = [k for k in data if k not in _SPLIT_ALIASES]
        if unknown or "train" not in data:
            raise DataError(f"A data dict needs a 'train' entry and may have 'validation' and 'test'; "
                            f"got keys {sorted(map(str, data))}.")
        for key, value in data.items():
            if value is None:
                fix = "" if _SPLIT_ALIASES[key] == "train" else f", or leave the {key!r} key out"
                raise DataError(f"The {key!r} entry of the data dict is None; a split must be an (x, y) pair of "
                                f"arrays, e.g. {{{key!r}: (x, y)}}{fix}.")
        splits = {_SPLIT_ALIASES[k]: v for k, v in data.items()}
        return Dataset(train=splits["train"], validation=splits.get("validation"), test=splits.get("test"))
    if isinstance(data, (tuple, list)) and len(data) == 2:
        return Dataset(train=tuple(data))
    if isinstance(data, np.ndarray) or hasattr(data, "__array__"):
        raise DataError(f"Cannot train on one array of shape {np.shape(data)}: pass the inputs and their labels "
                        "together, as (x, y).")
    raise DataError(f"Cannot train on {a_or_an(type(data).__name__)}: data must be {ACCEPTED}.")


def as_array(a, what: str) -> np.ndarray:
    """`a` as a numeric array (float32, or int32 for wide integers), or a DataError naming `what`."""
    try:
        arr = np.asarray(a)  # also pulls JAX arrays to the host once, before placement
    except Exception as exc:  # noqa: BLE001 - any conversion failure is the user's data
        raise DataError(f"{what} could not be read as an array ({exc}).") from None
    if arr.dtype == object or arr.dtype.kind in "USVcmM":
        kind = {"c": " (complex numbers)", "m": " (time spans)", "M": " (dates)"}.get(arr.dtype.kind, "")
        raise DataError(f"{what} have dtype {arr.dtype}{kind}; they must be real numeric values (float or int). "
                        "Convert them, e.g. with np.asarray(x, dtype=np.float32).")
    if arr.dtype.kind == "b" or (arr.dtype.kind == "f" and arr.dtype != np.float32):
        if arr.dtype.kind == "f" and arr.dtype.itemsize > 4:
            _check_fits(arr, np.float32, what)
        arr = aligned.astype(arr, np.float32)  # our own copy: aligned, so the CPU device uses it in place
    elif arr.dtype.kind in "iu" and arr.dtype.itemsize > 4:
        _check_fits(arr, np.int32, what)
        arr = aligned.astype(arr, np.int32)
    return arr


def _check_fits(arr: np.ndarray, dtype, what: str) -> None:
    """Values checked in their own dtype before the narrowing cast: a label of 2**32 + y would otherwise wrap round
    to y and train as y, and a float beyond float32 would become inf."""
    if arr.size == 0:
        return
    floats = np.dtype(dtype).kind == "f"
    info, exact = (np.finfo(dtype), float) if floats else (np.iinfo(dtype), int)
    lo, hi, least, most = exact(arr.min()), exact(arr.max()), exact(info.min), exact(info.max)
    if not (lo < least or hi > most) or (floats and not (math.isfinite(lo) and math.isfinite(hi))):
        return  # in range, or NaN / inf values, which check_split names
    if floats:
        raise DataError(f"{what} range over [{lo:.4g}, {hi:.4g}], beyond float32 (largest {most:.4g}), the "
                        "precision training uses; rescale them, e.g. standardise with (x - x.mean()) / x.std().")
    fix = ("class labels must be integers 0..k-1: renumber them, e.g. np.unique(y, return_inverse=True)[1]"
           if "labels" in what else "rescale them, or convert them with x.astype(np.float32)")
    raise DataError(f"{what} range over [{lo}, {hi}], beyond the 32-bit integers training uses "
                    f"([{least}, {most}]); {fix}.")


def _labels_are_bool(split) -> bool:
    """Whether the train labels are bool: they become float32, but the user still has (and should hear of) bool."""
    if not isinstance(split, (tuple, list)) or len(split) != 2:
        return False
    dtype = getattr(split[1], "dtype", None)
    if dtype is None:
        try:
            dtype = np.asarray(split[1]).dtype
        except Exception:  # noqa: BLE001 - unreadable labels: check_split says so
            return False
    return np.dtype(dtype).kind == "b"


def check_split(split, name: str, required: bool = False):
    """An (x, y) pair as arrays of matching length, or a one-line DataError saying what is wrong."""
    if split is None and not required:
        return None
    if isinstance(split, Subset):  # a split carved earlier (a Run's dataset): its arrays checked, its rows kept
        return Subset(*check_split((split.x, split.y), name, required), split.rows)
    if not isinstance(split, (tuple, list)) or len(split) != 2:
        raise DataError(f"The {name} split must be an (x, y) pair of arrays (inputs and labels), got "
                        f"{_describe_split(split)}.")
    x = as_array(split[0], f"The {name} inputs")
    y = as_array(split[1], f"The {name} labels")
    if x.ndim == 0 or y.ndim == 0:
        raise DataError(f"The {name} split needs arrays with an example dimension; got shapes {x.shape} and {y.shape}.")
    if len(x) != len(y):
        raise DataError(f"The {name} split has {len(x)} inputs but {len(y)} labels; they must have the same length.")
    if len(x) == 0:
        raise DataError(f"The {name} split is empty; it needs at least one example.")
    for arr, what in ((x, "inputs"), (y, "labels")):
        if arr.dtype.kind == "f":
            bad, first = _nonfinite(arr)
            if bad:
                raise DataError(f"The {name} {what} contain {bad} NaN or infinite values (first in example {first}); "
                                "clean or impute them before training, e.g. np.nan_to_num(x).")
    return (x, y)


def _nonfinite(arr: np.ndarray) -> tuple[int, int | None]:
    """How many values of `arr` are NaN or infinite, and the first example holding one. A block of rows at a time:
    a mask of the whole array (a byte per value) would add a quarter of a float32 dataset to the fit's peak."""
    per_row = max(1, math.prod(arr.shape[1:]))
    step = max(1, FINITE_CHECK_BYTES // per_row)
    bad, first = 0, None
    for start in range(0, len(arr), step):
        finite = np.isfinite(arr[start:start + step]).reshape(-1, per_row)
        missing = finite.size - np.count_nonzero(finite)
        if missing and first is None:
            first = start + int(np.argmin(finite.all(axis=1)))
        bad += missing
    return bad, first


def _describe_split(split) -> str:
    if split is None:
        return "None"
    if isinstance(split, (tuple, list)):
        n = len(split)
        return f"{a_or_an(type(split).__name__)} of {n} item{'' if n == 1 else 's'}"
    return a_or_an(type(split).__name__)


def _check_splits_agree(ds: Dataset) -> None:
    """Validation and test examples and labels shaped like the training ones (one compiled model serves all)."""
    x, y, _ = parts(ds.train)
    for name, split in (("validation", ds.validation), ("test", ds.test)):
        if split is None:
            continue
        split = parts(split)
        for what, a, b in (("inputs", split[0], x), ("labels", split[1], y)):
            if a.shape[1:] != b.shape[1:]:
                raise DataError(f"The {name} {what} have shape {a.shape[1:]} per example but the train {what} "
                                f"{b.shape[1:]}; every split needs the same per-example shape.")
        if (split[1].dtype.kind in "iu") != (y.dtype.kind in "iu"):
            raise DataError(f"The {name} labels are {split[1].dtype} but the train labels {y.dtype}; give every split "
                            "the same kind of labels (integer classes, or float targets).")


def _carve_validation(ds: Dataset, fraction: float, seed: int) -> Dataset:
    """Validation rows drawn at random from train, as row indices into the same arrays (`Subset`), not copies."""
    x, y, rows = parts(ds.train)
    n = size(ds.train)
    n_val = int(round(n * fraction))
    if n_val < 1 or n_val >= n:
        raise ConfigError(f"--val-split {fraction} of {n} training examples leaves {n_val} for validation and "
                          f"{n - n_val} for training; both need at least one.")
    order = np.random.default_rng(seed).permutation(n)
    if rows is not None:  # train is itself a Subset: its own rows, drawn in the same way
        order = rows[order]
    return ds.replace(train=Subset(x, y, row_index(order[n_val:])), validation=Subset(x, y, row_index(order[:n_val])))


def _check_labels(ds: Dataset) -> None:
    if ds.num_classes is None:
        return
    for name, split in (("train", ds.train), ("validation", ds.validation), ("test", ds.test)):
        if split is not None:
            check_class_labels(split[1], ds.num_classes, name)


def check_class_labels(y: np.ndarray, num_classes: int, split: str) -> None:
    """Integer class labels must lie in [0, num_classes); labels of a sequence (one per position) may also be -1,
    IGNORED, a position the loss leaves out (train/losses.py)."""
    if y.dtype.kind not in "iu" or y.size == 0:
        return
    lo, hi = int(y.min()), int(y.max())
    if y.ndim > 1 and lo >= IGNORED and hi < num_classes:
        return
    if y.ndim > 1 and hi < num_classes:
        raise DataError(f"The {split} labels go down to {lo}; labels of a sequence must be integers in "
                        f"[0, {num_classes - 1}], or {IGNORED} for a position the loss leaves out.")
    if lo < 0 or hi >= num_classes:
        raise DataError(f"The {split} labels range over [{lo}, {hi}] but the model has {num_classes} classes; "
                        f"labels must be integers in [0, {num_classes - 1}]. Check the labels or give the model "
                        f"num_classes={hi + 1}.")
