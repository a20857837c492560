"""The downloader, under the name data code has always used: it lives on the base floor (`jupyter_llm.download`) so
that models can fetch pretrained weights with it too (models never import data)."""

from jupyter_llm.download import DEFAULT_CACHE_DIR, ENV_VAR, TIMEOUT, cache_dir, fetch, file_hash

__all__ = ["DEFAULT_CACHE_DIR", "ENV_VAR", "TIMEOUT", "cache_dir", "fetch", "file_hash"]
