"""jupyter_llm: train Flax NNX models — from a first MLP to a small GPT — with one `%%train` cell.

`import jupyter_llm as jl` is instant: JAX and Flax load on first use of `jl.fit`, `jl.models` or `jl.datasets`.
In a notebook, `%load_ext jupyter_llm` registers the magics.
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

_LAZY = {
    "fit": ("jupyter_llm.fitting.orchestrate", "fit"),
    "Run": ("jupyter_llm.fitting.run", "Run"),
    "lr_find": ("jupyter_llm.fitting.lr_find", "lr_find"),
    "load": ("jupyter_llm.fitting.load", "load"),
    "FitConfig": ("jupyter_llm.config", "FitConfig"),
    "models": ("jupyter_llm.models", None),
    "datasets": ("jupyter_llm.datasets", None),
    "events": ("jupyter_llm.events", None),
    "sinks": ("jupyter_llm.sinks", None),
    "errors": ("jupyter_llm.errors", None),
    "JupyterLLMError": ("jupyter_llm.errors", "JupyterLLMError"),
    "runs": ("jupyter_llm.fitting.runlog", "runs"),
    "distributed": ("jupyter_llm.distributed", None),
}

__all__ = ["__version__", "load_ipython_extension", "unload_ipython_extension", *_LAZY]


def __getattr__(name: str):
    if name not in _LAZY:
        raise AttributeError(f"module 'jupyter_llm' has no attribute {name!r}")
    module_name, attr = _LAZY[name]
    module = importlib.import_module(module_name)
    value = module if attr is None else getattr(module, attr)
    globals()[name] = value
    return value


def __dir__():
    return sorted(__all__)


def load_ipython_extension(ipython) -> None:
    """`%load_ext jupyter_llm`: register `%%train` and friends; put `jl` and `nnx` in the namespace."""
    from jupyter_llm.ipython.magic import load

    load(ipython)


def unload_ipython_extension(ipython) -> None:
    from jupyter_llm.ipython.magic import unload

    unload(ipython)
