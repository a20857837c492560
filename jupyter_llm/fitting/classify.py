"""Probabilities and class names from a classifier's outputs: `run.predict(x, probabilities=True)` and
`run.classify(texts_or_x)`.

The outputs are read as the fit's loss reads them (`train/metrics.py`'s output kinds): class scores become a softmax,
one logit per label a sigmoid; a regression's outputs are not probabilities of anything, and are refused.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from jupyter_llm.data.classification import encode_texts
from jupyter_llm.data.dataset import Dataset
from jupyter_llm.errors import DataError
from jupyter_llm.train.metrics import BINARY, CLASSES


@dataclass(frozen=True)
class Prediction:
    """One example classified: the predicted class's name, the model's probability of it, and every class's."""

    label: str
    probability: float
    probabilities: dict[str, float]

    def __repr__(self) -> str:
        return f"Prediction({self.label!r}, probability={self.probability:.3f})"


def check_has_probabilities(kind: str) -> None:
    """Refuse, before any work, the outputs of a regression: they are values, not scores of classes."""
    if kind not in (CLASSES, BINARY):
        raise DataError("probabilities=True turns class scores (or binary logits) into probabilities; this run is a "
                        "regression (its outputs are values, not scores). Call run.predict(x) for the values.")


def probabilities(outputs: np.ndarray, kind: str) -> np.ndarray:
    """Softmax of class scores (over the last axis), sigmoid of binary logits."""
    check_has_probabilities(kind)
    if kind == CLASSES:
        shifted = outputs - outputs.max(axis=-1, keepdims=True)
        e = np.exp(shifted)
        return e / e.sum(axis=-1, keepdims=True)
    return 1.0 / (1.0 + np.exp(-outputs))


def _is_texts(inputs) -> bool:
    if isinstance(inputs, str):
        return True
    return isinstance(inputs, Sequence) and len(inputs) > 0 and all(isinstance(t, str) for t in inputs)


def _encoded(run, texts) -> np.ndarray:
    meta = getattr(run.dataset, "meta", {}) or {}
    if run.tokenizer is None or "max_len" not in meta:
        raise DataError("classify takes texts for a text classifier (trained on jl.datasets.text_classification or "
                        "the sentiment set); this run was trained on arrays: pass inputs shaped like its training "
                        "data.")
    return encode_texts([texts] if isinstance(texts, str) else texts, run.tokenizer, meta["max_len"])


def class_names(dataset, n: int) -> tuple[str, ...]:
    names = getattr(dataset, "class_names", None)
    return tuple(str(c) for c in names) if names is not None and len(names) == n else tuple(str(i) for i in range(n))


def classify(run, inputs) -> Prediction | list[Prediction]:
    """The predicted class of each input (texts are encoded with the fit's tokenizer): a list of `Prediction`s, or
    one for a single text."""
    if not isinstance(run.dataset, Dataset):
        raise DataError("classify names the classes of a classification fit; this run is a language model: use "
                        "run.generate(prompt) for text, or run.predict(x, probabilities=True) for next-token "
                        "probabilities.")
    if run.output_kind not in (CLASSES, BINARY):
        raise DataError("classify names the classes of a classification fit; this run is a regression: use "
                        "run.predict(x) for its values.")
    x = _encoded(run, inputs) if _is_texts(inputs) else inputs
    probs = run.predict(x, probabilities=True)
    if run.output_kind == BINARY:
        probs = probs.reshape(len(probs), -1)
        if probs.shape[1] != 1:
            raise DataError(f"classify gives one class per example; this model outputs {probs.shape[1]} binary "
                            "labels per example. Use run.predict(x, probabilities=True) for each label's probability.")
        probs = np.concatenate([1.0 - probs, probs], axis=1)
    elif probs.ndim != 2:
        raise DataError(f"classify gives one class per example; this model outputs scores of shape "
                        f"{probs.shape[1:]} per example. Use run.predict(x, probabilities=True).")
    names = class_names(run.dataset, probs.shape[1])
    picked = probs.argmax(axis=1)
    out = [Prediction(names[i], float(row[i]), dict(zip(names, map(float, row)))) for i, row in zip(picked, probs)]
    return out[0] if isinstance(inputs, str) else out
