"""Data for a fit: `load("digits")`, the `Dataset` container, and the list of built-in names."""

from jupyter_llm.data.builtin import available, load, load_text  # noqa: F401
from jupyter_llm.data.dataset import Dataset  # noqa: F401

__all__ = ["Dataset", "available", "load", "load_text"]
