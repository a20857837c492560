"""Activation functions by name (relu, gelu, tanh, sigmoid), shared by the built-in models."""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp

from jupyter_llm.errors import ConfigError

ACTIVATIONS: dict[str, Callable] = {
    "relu": jax.nn.relu,
    "gelu": jax.nn.gelu,
    "tanh": jnp.tanh,
    "sigmoid": jax.nn.sigmoid,
}


def get_activation(name_or_fn) -> Callable:
    """The function for a name (case-insensitive), or the callable itself: options stay plain strings in a magic
    line, while code can pass any function."""
    if callable(name_or_fn):
        return name_or_fn
    fn = ACTIVATIONS.get(str(name_or_fn).lower())
    if fn is None:
        raise ConfigError(f"Unknown activation {name_or_fn!r}; use one of {', '.join(ACTIVATIONS)} or a function.")
    return fn
