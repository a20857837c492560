"""Sampling text from a GPT with a key/value cache, compiled once.

How it works: the prompt is cropped to its last `block_size` tokens, right-padded to exactly `block_size` and run
through the model in one pass ("prefill") that fills a fixed-size key/value cache of length `block_size` per
layer. Then one `jax.lax.fori_loop` inside one `jax.jit` samples a token, appends it and runs the model on just
that token against the cache. The prompt's length and the temperature are traced values, so a new prompt or
temperature never recompiles; the compiled programs depend only on the model's graph, the number of tokens per
call and `top_k`.

Long sequences (prompt + new tokens > block_size) slide the window exactly like nanoGPT's `generate`: every token
is predicted from (at most) the last `block_size` tokens. While the sequence fits, that is the cached decode; once
the window is full the positions of all context tokens shift with every new token (learned absolute position
embeddings), so the cache cannot be reused and each further token costs one full forward pass over the last
`block_size` tokens. Results are therefore identical to recomputing everything from scratch, only faster while
the context fits.
"""

from __future__ import annotations

import numbers
from functools import partial
from typing import Iterator

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from jupyter_llm.config import MAX_SEED
from jupyter_llm.errors import ConfigError, DataError, ModelError


def generate(model, prompt_ids, max_new_tokens: int, *, temperature: float = 1.0, top_k: int | None = None,
             seed: int = 0) -> np.ndarray:
    """`max_new_tokens` token ids sampled after `prompt_ids` (a 1-D int array), as a NumPy int32 array.

    `temperature` 0 is greedy (arg-max) decoding; `top_k` keeps only the k most likely tokens at each step.
    The same seed gives the same tokens (also the same as `generate_stream` with that seed).
    """
    graphdef, state, carry, top_k = _start(model, prompt_ids, max_new_tokens, temperature, top_k, seed)
    if int(max_new_tokens) == 0:
        return np.zeros((0,), np.int32)
    out, _ = _decode(graphdef, state, carry, jnp.float32(temperature), jax.random.key(seed),
                     steps=int(max_new_tokens), top_k=top_k)
    return np.asarray(out)


def generate_stream(model, prompt_ids, max_new_tokens: int, *, temperature: float = 1.0, top_k: int | None = None,
                    seed: int = 0, chunk: int = 16) -> Iterator[np.ndarray]:
    """Like `generate`, but yields the new tokens in arrays of up to `chunk` ids as soon as they exist, so a
    caller can print text while it is produced. One compiled loop of `chunk` tokens is called repeatedly,
    carrying the cache; the concatenated chunks equal `generate(...)` with the same arguments."""
    if int(chunk) < 1:
        raise ConfigError(f"chunk must be a positive number of tokens, got {chunk!r}.")
    graphdef, state, carry, top_k = _start(model, prompt_ids, max_new_tokens, temperature, top_k, seed)
    key, temp, left = jax.random.key(seed), jnp.float32(temperature), int(max_new_tokens)
    while left > 0:
        out, carry = _decode(graphdef, state, carry, temp, key, steps=int(chunk), top_k=top_k)
        yield np.asarray(out[: min(left, chunk)])  # the last call may run past the end: drop the extra tokens
        left -= chunk


def _start(model, prompt_ids, max_new_tokens, temperature, top_k, seed):
    """Validate the arguments and prefill the cache with the prompt. Returns (graphdef, state, loop state, top_k
    as a plain int no larger than the vocabulary, or None)."""
    if not (hasattr(model, "decode") and hasattr(model, "init_cache") and hasattr(model, "config")):
        raise ModelError(f"generate needs a GPT-like model with decode/init_cache, not {type(model).__name__}.")
    if int(max_new_tokens) < 0:
        raise ConfigError(f"max_new_tokens must be >= 0, got {max_new_tokens!r}.")
    if temperature is None or not temperature >= 0:
        raise ConfigError(f"temperature must be >= 0 (0 is greedy), got {temperature!r}.")
    if top_k is not None and int(top_k) < 1:
        raise ConfigError(f"top_k must be a positive integer or None, got {top_k!r}.")
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or not 0 <= seed <= MAX_SEED:
        raise ConfigError(f"seed must be a whole number from 0 to {MAX_SEED} (2**63 - 1, the largest seed JAX "
                          f"takes), got {seed!r}.")
    prompt = np.asarray(prompt_ids).reshape(-1)
    vocab, block = model.config.vocab_size, model.config.block_size
    if prompt.size == 0:
        raise DataError("The prompt is empty; give at least one token id to start from.")
    if not np.issubdtype(prompt.dtype, np.integer) or prompt.min() < 0 or prompt.max() >= vocab:
        raise DataError(f"Prompt token ids must be integers in [0, {vocab}); got {prompt.dtype} values "
                        f"from {prompt.min()} to {prompt.max()}.")
    prompt = prompt[-block:]  # nanoGPT's crop: the model only ever sees the last block_size tokens
    ctx = np.zeros((block,), np.int32)
    ctx[: prompt.size] = prompt
    graphdef, state = nnx.split(model)
    # Prefill only a power-of-two prefix that holds the prompt (not all of block_size: for GPT-2 that is 1024
    # tokens): a handful of compiled sizes per model, and a short prompt costs a short forward pass.
    length = min(block, max(16, 1 << (prompt.size - 1).bit_length()))
    carry = _prefill(graphdef, state, jnp.asarray(ctx), jnp.int32(prompt.size), length=length)
    return graphdef, state, carry, (None if top_k is None else min(int(top_k), vocab))


@partial(jax.jit, static_argnames=("graphdef", "length"))
def _prefill(graphdef, state, ctx, n, *, length):
    """One forward pass over the first `length` tokens of the padded prompt (n <= length of them are real).
    Returns the loop state: (context tokens, how many are real, cache, logits for the next token, tokens sampled
    so far). Cache slots >= n hold padding's keys and values or zeros; each is overwritten before any token can
    attend to it."""
    model = _eval_model(graphdef, state)
    logits, cache = model.decode(ctx[None, :length], model.init_cache(1), 0)
    return ctx, n, cache, logits[0, n - 1], jnp.int32(0)


@partial(jax.jit, static_argnames=("graphdef", "steps", "top_k"))
def _decode(graphdef, state, carry, temperature, key, *, steps, top_k):
    """Sample `steps` tokens in one compiled loop; returns (tokens (steps,), loop state to continue from)."""
    model = _eval_model(graphdef, state)
    block = model.config.block_size

    def cached(tok, ctx, n, cache):  # room left: append the token and run only it against the cache
        logits, cache = model.decode(tok.reshape(1, 1), cache, n)
        return ctx.at[n].set(tok), n + 1, cache, logits[0, 0]

    def window(tok, ctx, n, cache):  # window full: slide it by one token and recompute it
        ctx = jnp.concatenate([ctx[1:], tok[None]])
        return ctx, n, cache, model(ctx[None])[0, -1]

    def body(i, loop):
        out, (ctx, n, cache, logits, t) = loop
        tok = _sample(logits, jax.random.fold_in(key, t), temperature, top_k)
        ctx, n, cache, logits = jax.lax.cond(n < block, cached, window, tok, ctx, n, cache)
        return out.at[i].set(tok), (ctx, n, cache, logits, t + 1)

    return jax.lax.fori_loop(0, steps, body, (jnp.zeros((steps,), jnp.int32), carry))


def _eval_model(graphdef, state):
    """The model in eval mode (no dropout). Taking the view inside the traced function costs nothing per call."""
    return nnx.view(nnx.merge(graphdef, state), deterministic=True, raise_if_not_found=False)


def _sample(logits, key, temperature, top_k):
    """A token id from next-token logits: arg-max when temperature == 0, else softmax(logits / T) over the top k."""
    if top_k is not None:
        kth = jax.lax.top_k(logits, top_k)[0][-1]
        logits = jnp.where(logits < kth, -jnp.inf, logits)
    sampled = jax.random.categorical(key, logits / jnp.where(temperature > 0, temperature, 1.0))
    return jnp.where(temperature > 0, sampled, jnp.argmax(logits)).astype(jnp.int32)
