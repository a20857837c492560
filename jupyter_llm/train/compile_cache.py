"""JAX's persistent compilation cache, switched on for fits: a new session compiles the same steps from disk.

The directory is `$JUPYTER_LLM_COMPILE_CACHE`, else `~/.cache/jupyter_llm/xla`; `JUPYTER_LLM_COMPILE_CACHE=0` turns
it off. A cache directory the user configured for JAX themselves is left alone.
"""

from __future__ import annotations

import os

import jax

ENV_VAR = "JUPYTER_LLM_COMPILE_CACHE"
_enabled = False


def enable() -> str | None:
    """Point JAX at the cache directory once per process; returns the directory in use (None when off)."""
    global _enabled
    current = jax.config.jax_compilation_cache_dir
    if _enabled or current:
        return current
    setting = os.environ.get(ENV_VAR, "")
    if setting == "0":
        return None
    path = os.path.abspath(os.path.expanduser(setting or os.path.join("~", ".cache", "jupyter_llm", "xla")))
    try:
        os.makedirs(path, exist_ok=True)
    except OSError:
        return None  # an unwritable home: compile as usual, nothing is lost
    jax.config.update("jax_compilation_cache_dir", path)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)
    _enabled = True
    return path
