"""GPT: a decoder-only transformer in the style of nanoGPT, written with Flax NNX.

Token + learned position embeddings, pre-LayerNorm blocks (causal self-attention, GELU MLP), a final LayerNorm,
and output logits tied to the token embedding. Parameter names and initialisation follow nanoGPT, so its
parameter counts and training recipes carry over unchanged.

Dropout (while training) follows nanoGPT on the embeddings and on the attention and MLP outputs; nanoGPT's extra
dropout on the attention weights is left out, so that attention stays one call of `jax.nn.dot_product_attention`
(fused kernels on GPU; on CPU the equivalent 4-D einsums of `models/attention.py`, which XLA:CPU runs faster).

The attention takes an optional key/value cache, so the same weights serve training (full causal forward) and
fast generation (one token at a time, see `jupyter_llm.models.generate`).

This is also GPT-2's architecture: `GPT.from_pretrained("gpt2")` loads OpenAI's weights, `save_pretrained` writes
Hugging Face's format (`models/hf_gpt2.py`). The config fields that GPT-2 checkpoints may vary beyond nanoGPT's
(LayerNorm epsilon, the GELU's form, the MLP's width) default to GPT-2's values.
"""

from __future__ import annotations

import dataclasses
import difflib
import math

import jax
import jax.numpy as jnp
from flax import nnx

from jupyter_llm.errors import ConfigError
from jupyter_llm.models.attention import dot_product_attention


def _normal(std: float):
    """N(0, std^2) initializer. It draws a flat vector and reshapes it: the same distribution, but JAX compiles a
    1-D random draw much faster than a 2-D one on CPU, and compiling is most of the time it takes to build a
    small model."""

    def init(key, shape, dtype=jnp.float32):
        return (std * jax.random.normal(key, (math.prod(shape),), dtype)).reshape(shape)

    return init


# nanoGPT initialises every Linear and Embedding with N(0, 0.02); biases start at zero.
_INIT = _normal(0.02)
_LN_EPS = 1e-5  # PyTorch's LayerNorm default: keeps results comparable with nanoGPT


@dataclasses.dataclass(frozen=True)
class GPTConfig:
    """Hyper-parameters of a GPT. `vocab_size` may be None in a preset: it then comes from the data."""

    vocab_size: int | None
    block_size: int
    n_layer: int
    n_head: int
    n_embd: int
    dropout: float = 0.0
    bias: bool = True
    # What else it takes to express any GPT-2 of Hugging Face's format (see `models/hf_gpt2.py`); the defaults are
    # GPT-2's own, which is also what the presets have always been.
    ln_eps: float = _LN_EPS  # layer_norm_epsilon
    gelu_approximate: bool = True  # tanh-approximated GELU ("gelu_new"); False: the exact erf form ("gelu")
    n_inner: int | None = None  # the MLP's hidden width; None: 4 * n_embd


PRESETS: dict[str, GPTConfig] = {
    # nanoGPT's "train a character-level Shakespeare model on a CPU" recipe: ~0.80M parameters for 65 characters.
    # No biases, as nanoGPT's train.py defaults (bias = False).
    "gpt-char-tiny": GPTConfig(vocab_size=None, block_size=64, n_layer=4, n_head=4, n_embd=128, dropout=0.0,
                               bias=False),
    # minGPT's gpt-mini: a few minutes on a laptop, ~2.7M parameters plus the embedding.
    "gpt-mini": GPTConfig(vocab_size=None, block_size=128, n_layer=6, n_head=6, n_embd=192, dropout=0.1),
    # GPT-2 124M; 50304 = 50257 rounded up to a multiple of 64, as nanoGPT does for faster matmuls.
    "gpt2-small": GPTConfig(vocab_size=50304, block_size=1024, n_layer=12, n_head=12, n_embd=768, dropout=0.0),
}


def _check_length(t: int, block_size: int, what: str = "sequence") -> None:
    if t > block_size:
        raise ConfigError(
            f"The {what} has {t} tokens but the model's block_size is {block_size}; "
            f"crop the input to its last {block_size} tokens or build the model with a larger block_size."
        )


class CausalSelfAttention(nnx.Module):
    """Multi-head self-attention with one fused q/k/v projection (one large matmul instead of three).

    Without a cache: `attn(x, mask=None) -> y`, causal if `causal` (the GPT) or bidirectional with an optional
    key-padding `mask` (the TextClassifier). With a cache `(k, v)` of shape (B, block_size, heads, head_dim):
    `attn(x, cache=cache, pos=pos) -> (y, cache)` writes the keys and values of x's tokens at positions
    pos .. pos+T-1 and lets token i attend to cache positions <= pos+i, i.e. the same causal attention as the
    full forward pass.
    """

    def __init__(self, n_embd: int, n_head: int, n_layer: int, dropout: float = 0.0, bias: bool = True,
                 causal: bool = True, *, rngs: nnx.Rngs):
        if n_embd % n_head:
            raise ConfigError(f"n_embd ({n_embd}) must be a multiple of n_head ({n_head}).")
        self.n_head, self.head_dim, self.causal = n_head, n_embd // n_head, causal
        self.c_attn = nnx.Linear(n_embd, 3 * n_embd, use_bias=bias, kernel_init=_INIT, rngs=rngs)
        # GPT-2's scaled init: the residual stream gets 2 * n_layer additions, keep its variance in check.
        proj_init = _normal(0.02 / math.sqrt(2 * n_layer))
        self.c_proj = nnx.Linear(n_embd, n_embd, use_bias=bias, kernel_init=proj_init, rngs=rngs)
        self.resid_dropout = nnx.Dropout(dropout, rngs=rngs) if dropout else None

    def __call__(self, x, mask=None, *, cache=None, pos=None):
        b, t, c = x.shape
        # (B, T, 3, heads, head_dim): the (B, T, N, H) layout dot_product_attention wants, no transposes.
        q, k, v = jnp.unstack(self.c_attn(x).reshape(b, t, 3, self.n_head, self.head_dim), axis=2)
        if cache is None:
            y = dot_product_attention(q, k, v, mask, is_causal=self.causal)
        else:
            k_cache, v_cache = cache
            k = k_cache = jax.lax.dynamic_update_slice(k_cache, k.astype(k_cache.dtype), (0, pos, 0, 0))
            v = v_cache = jax.lax.dynamic_update_slice(v_cache, v.astype(v_cache.dtype), (0, pos, 0, 0))
            # Token i of x sits at position pos + i; it may see cache slots 0 .. pos + i. Later slots hold stale
            # or zero entries and are masked out.
            visible = jnp.arange(k_cache.shape[1])[None, :] <= pos + jnp.arange(t)[:, None]
            y = dot_product_attention(q, k, v, visible[None, None])
        y = self.c_proj(y.reshape(b, t, c))
        if self.resid_dropout is not None:
            y = self.resid_dropout(y)
        return y if cache is None else (y, (k_cache, v_cache))


class MLP(nnx.Module):
    """Position-wise feed-forward: n_embd -> n_inner (default 4 n_embd) -> GELU -> n_embd."""

    def __init__(self, n_embd: int, n_layer: int, dropout: float = 0.0, bias: bool = True, *,
                 n_inner: int | None = None, gelu_approximate: bool = True, rngs: nnx.Rngs):
        hidden = n_inner or 4 * n_embd
        self.gelu_approximate = gelu_approximate
        self.c_fc = nnx.Linear(n_embd, hidden, use_bias=bias, kernel_init=_INIT, rngs=rngs)
        proj_init = _normal(0.02 / math.sqrt(2 * n_layer))
        self.c_proj = nnx.Linear(hidden, n_embd, use_bias=bias, kernel_init=proj_init, rngs=rngs)
        self.dropout = nnx.Dropout(dropout, rngs=rngs) if dropout else None

    def __call__(self, x):
        # tanh-approximate GELU by default, as in the original GPT-2
        x = self.c_proj(jax.nn.gelu(self.c_fc(x), approximate=self.gelu_approximate))
        return self.dropout(x) if self.dropout is not None else x


class Block(nnx.Module):
    """Pre-LayerNorm transformer block: x + attn(ln(x)), then x + mlp(ln(x))."""

    def __init__(self, n_embd: int, n_head: int, n_layer: int, dropout: float = 0.0, bias: bool = True,
                 causal: bool = True, *, ln_eps: float = _LN_EPS, n_inner: int | None = None,
                 gelu_approximate: bool = True, rngs: nnx.Rngs):
        self.ln_1 = nnx.LayerNorm(n_embd, epsilon=ln_eps, use_bias=bias, rngs=rngs)
        self.attn = CausalSelfAttention(n_embd, n_head, n_layer, dropout, bias, causal, rngs=rngs)
        self.ln_2 = nnx.LayerNorm(n_embd, epsilon=ln_eps, use_bias=bias, rngs=rngs)
        self.mlp = MLP(n_embd, n_layer, dropout, bias, n_inner=n_inner, gelu_approximate=gelu_approximate, rngs=rngs)

    def __call__(self, x, mask=None, *, cache=None, pos=None):
        if cache is None:
            x = x + self.attn(self.ln_1(x), mask)
            return x + self.mlp(self.ln_2(x))
        h, cache = self.attn(self.ln_1(x), cache=cache, pos=pos)
        x = x + h
        return x + self.mlp(self.ln_2(x)), cache


class GPT(nnx.Module):
    """Decoder-only transformer language model.

    >>> model = GPT.from_preset("gpt-char-tiny", vocab_size=65, rngs=nnx.Rngs(0))
    >>> model(jnp.zeros((2, 16), jnp.int32)).shape
    (2, 16, 65)

    `model(idx)` maps int token ids (B, T), T <= block_size, to float32 next-token logits (B, T, vocab_size).
    `model.decode(idx, cache, pos)` is the incremental form used for generation (see `init_cache`).
    """

    def __init__(self, vocab_size: int, block_size: int, n_layer: int, n_head: int, n_embd: int,
                 dropout: float = 0.0, bias: bool = True, *, ln_eps: float = _LN_EPS, gelu_approximate: bool = True,
                 n_inner: int | None = None, rngs: nnx.Rngs):
        if not vocab_size or vocab_size < 1:
            raise ConfigError(f"GPT needs a positive vocab_size, got {vocab_size!r}.")
        self.config = GPTConfig(int(vocab_size), int(block_size), int(n_layer), int(n_head), int(n_embd),
                                float(dropout), bool(bias), float(ln_eps), bool(gelu_approximate),
                                None if n_inner is None else int(n_inner))
        self.wte = nnx.Embed(vocab_size, n_embd, embedding_init=_INIT, rngs=rngs)
        self.wpe = nnx.Embed(block_size, n_embd, embedding_init=_INIT, rngs=rngs)
        self.drop = nnx.Dropout(dropout, rngs=rngs) if dropout else None
        self.h = nnx.List([Block(n_embd, n_head, n_layer, dropout, bias, ln_eps=ln_eps, n_inner=n_inner,
                                 gelu_approximate=gelu_approximate, rngs=rngs) for _ in range(n_layer)])
        self.ln_f = nnx.LayerNorm(n_embd, epsilon=ln_eps, use_bias=bias, rngs=rngs)

    @classmethod
    def from_preset(cls, name: str, vocab_size: int | None = None, *, rngs: nnx.Rngs, **overrides) -> "GPT":
        """A GPT from a named recipe in `PRESETS`; `vocab_size` (and any keyword in `overrides`) replaces the
        preset's value. Character-level presets have no vocabulary of their own: pass the data's."""
        if name not in PRESETS:
            close = difflib.get_close_matches(name, list(PRESETS), n=1)
            hint = f" Did you mean {close[0]!r}?" if close else ""
            raise ConfigError(f"Unknown GPT preset {name!r}; presets: {', '.join(PRESETS)}.{hint}")
        fields = {f.name for f in dataclasses.fields(GPTConfig)}
        unknown = sorted(set(overrides) - fields)
        if unknown:
            raise ConfigError(f"Unknown GPT option(s) {', '.join(unknown)}; options: {', '.join(sorted(fields))}.")
        config = dataclasses.replace(PRESETS[name], **overrides)
        if vocab_size is not None:
            config = dataclasses.replace(config, vocab_size=vocab_size)
        if config.vocab_size is None:
            raise ConfigError(f"Preset {name!r} takes its vocabulary from the data: pass vocab_size=...")
        return cls(**dataclasses.asdict(config), rngs=rngs)

    @classmethod
    def from_pretrained(cls, name_or_path, *, dropout: float = 0.0, block_size: int | None = None,
                        rngs: nnx.Rngs | None = None, cache_dir=None) -> "GPT":
        """A GPT holding pretrained GPT-2 weights: `name_or_path` is a pinned name ("gpt2", "gpt2-medium",
        "gpt2-large", "gpt2-xl": downloaded once into the data cache, SHA-256 checked, see `jupyter_llm.hub`) or a
        folder in Hugging Face's format (config.json + model.safetensors, as `save_pretrained` and transformers
        write; a name wins over a folder called the same: write "./gpt2" for the folder). `dropout` is for
        fine-tuning (GPT-2's own config says 0.1; the default is none); `block_size` keeps only the first positions
        (a shorter context costs less memory and compute). Read as NumPy through `safetensors`: no torch, no
        pickle."""
        from jupyter_llm.models.hf_gpt2 import load

        return load(cls, name_or_path, dropout=dropout, block_size=block_size, rngs=rngs, cache_dir=cache_dir)

    def save_pretrained(self, directory, *, tokenizer=None):
        """Write this GPT as a Hugging Face GPT-2 folder (config.json + model.safetensors, float32), which
        transformers' GPT2LMHeadModel and `GPT.from_pretrained` load; with `tokenizer` (a BPE one) also its
        tokenizer.json. A GPT without biases is saved as the GPT-2 with zero biases (the same function). Returns
        the folder's path."""
        from jupyter_llm.models.hf_gpt2 import save

        return save(self, directory, tokenizer=tokenizer)

    @property
    def block_size(self) -> int:
        return self.config.block_size

    def num_params(self, non_embedding: bool = True) -> int:
        """Parameter count; like nanoGPT, the position embedding is left out unless `non_embedding=False`
        (the token embedding is counted once: it doubles as the output layer)."""
        def count(module):
            return sum(p.size for p in jax.tree.leaves(nnx.state(module, nnx.Param)))

        return count(self) - count(self.wpe) if non_embedding else count(self)

    def _embed(self, idx, pos):
        t = idx.shape[1]
        pe = jax.lax.dynamic_slice_in_dim(self.wpe.embedding[...], pos, t) if pos is not None else \
            self.wpe.embedding[:t]
        # the embedding table read directly (nnx.Embed's call and attend cast to the dtype it was built with), so a
        # bf16 copy of the weights computes in bf16 end to end
        x = jnp.take(self.wte.embedding[...], idx, axis=0) + pe[None]
        return self.drop(x) if self.drop is not None else x

    def _logits(self, x):
        return jnp.dot(self.ln_f(x), self.wte.embedding[...].T).astype(jnp.float32)

    def __call__(self, idx):
        _check_length(idx.shape[1], self.config.block_size)
        x = self._embed(idx, None)
        for block in self.h:
            x = block(x)
        return self._logits(x)

    def init_cache(self, batch_size: int = 1, dtype=jnp.float32) -> list:
        """An empty key/value cache: per layer a pair of (B, block_size, heads, head_dim) zero arrays."""
        c = self.config
        shape = (batch_size, c.block_size, c.n_head, c.n_embd // c.n_head)
        return [(jnp.zeros(shape, dtype), jnp.zeros(shape, dtype)) for _ in range(c.n_layer)]

    def decode(self, idx, cache, pos):
        """Logits for tokens `idx` (B, T) placed at positions pos .. pos+T-1, attending to the cached keys and
        values of positions < pos; returns (logits (B, T, V), updated cache). The caller keeps
        pos + T <= block_size (`pos` may be a traced integer)."""
        _check_length(idx.shape[1], self.config.block_size)
        x = self._embed(idx, pos)
        new_cache = []
        for block, layer_cache in zip(self.h, cache):
            x, layer_cache = block(x, cache=layer_cache, pos=pos)
            new_cache.append(layer_cache)
        return self._logits(x), new_cache
