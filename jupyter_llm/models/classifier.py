"""TextClassifier: the GPT body as a bidirectional encoder with a classification head (e.g. sentiment)."""

from __future__ import annotations

import jax.numpy as jnp
from flax import nnx

from jupyter_llm.errors import ConfigError
from jupyter_llm.models.gpt import _INIT, _LN_EPS, Block, _check_length

PAD_ID = 0
_POOLINGS = ("mean", "max", "first")


class TextClassifier(nnx.Module):
    """Transformer encoder over int token ids (B, T) -> logits (B, num_classes).

    >>> model = TextClassifier(vocab_size=1000, num_classes=2, block_size=128, rngs=nnx.Rngs(0))
    >>> model(jnp.ones((4, 50), jnp.int32)).shape
    (4, 2)

    The same blocks as `GPT`, but every token sees the whole sentence (no causal mask). Token id 0 is padding: it
    is hidden from attention and from the pooling, so padding a batch to a common length never changes a
    sentence's logits. `pooling` turns the T token vectors into one: "mean" (over real tokens), "max", or
    "first" (the first token, for data that starts with a [CLS]-like token).
    """

    def __init__(self, vocab_size: int, num_classes: int, block_size: int, n_layer: int = 2, n_head: int = 4,
                 n_embd: int = 128, dropout: float = 0.1, pooling: str = "mean", *, rngs: nnx.Rngs):
        if pooling not in _POOLINGS:
            raise ConfigError(f"Unknown pooling {pooling!r}; use one of {', '.join(_POOLINGS)}.")
        self.block_size, self.pooling = int(block_size), pooling
        self.wte = nnx.Embed(vocab_size, n_embd, embedding_init=_INIT, rngs=rngs)
        self.wpe = nnx.Embed(block_size, n_embd, embedding_init=_INIT, rngs=rngs)
        self.drop = nnx.Dropout(dropout, rngs=rngs) if dropout else None
        self.h = nnx.List([Block(n_embd, n_head, n_layer, dropout, causal=False, rngs=rngs) for _ in range(n_layer)])
        self.ln_f = nnx.LayerNorm(n_embd, epsilon=_LN_EPS, rngs=rngs)
        self.head = nnx.Linear(n_embd, num_classes, kernel_init=_INIT, rngs=rngs)

    def __call__(self, idx):
        idx = jnp.asarray(idx).astype(jnp.int32)
        _check_length(idx.shape[1], self.block_size)
        real = idx != PAD_ID  # (B, T)
        x = jnp.take(self.wte.embedding[...], idx, axis=0) + self.wpe.embedding[: idx.shape[1]][None]  # its dtype
        if self.drop is not None:
            x = self.drop(x)
        mask = real[:, None, None, :]  # (B, heads, queries, keys): no query attends to a pad key
        for block in self.h:
            x = block(x, mask)
        x = self.ln_f(x)
        if self.pooling == "first":
            pooled = x[:, 0]
        elif self.pooling == "max":
            pooled = jnp.where(real[..., None], x, -jnp.inf).max(axis=1)
            pooled = jnp.where(real.any(axis=1, keepdims=True), pooled, 0.0)  # an all-padding row
        else:
            w = real[..., None].astype(x.dtype)
            pooled = (x * w).sum(axis=1) / jnp.maximum(w.sum(axis=1), 1.0)
        return self.head(pooled)
