"""Built-in models: CNN shapes, GPT correctness (size, causality, learning, cached generation), TextClassifier."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from jupyter_llm.errors import ConfigError, DataError, ModelError
from jupyter_llm.models.activations import get_activation
from jupyter_llm.models.classifier import TextClassifier
from jupyter_llm.models.cnn import CNN
from jupyter_llm.models.generate import _decode, generate, generate_stream
from jupyter_llm.models.gpt import GPT, PRESETS


def tiny_gpt(vocab=11, block=32, seed=1, sharpen=5.0, **kw):
    """A small GPT. Untrained GPTs with tied embeddings mostly repeat the last token; scaling the weights up gives
    peaked, varied predictions so greedy decoding produces a non-trivial sequence."""
    cfg = dict(n_layer=2, n_head=2, n_embd=16) | kw
    model = GPT(vocab_size=vocab, block_size=block, rngs=nnx.Rngs(seed), **cfg)
    if sharpen != 1:
        nnx.update(model, jax.tree.map(lambda p: p * sharpen, nnx.state(model, nnx.Param)))
    return model


@nnx.jit
def forward(model, x):
    """One compiled forward pass: op-by-op (eager) calls compile every operation and make the tests slow."""
    return model(x)


def tokens(shape, vocab, seed=0):
    return jnp.asarray(np.random.default_rng(seed).integers(0, vocab, shape), jnp.int32)


# ---------------------------------------------------------------- CNN and activations


@pytest.mark.parametrize("shape", [(3, 8, 8, 1), (3, 28, 28, 1), (3, 28, 28)])
def test_cnn_output_shape(shape):
    model = CNN(in_channels=1, num_classes=10, channels=(8, 16), hidden=32, rngs=nnx.Rngs(0))
    out = forward(model, jnp.ones(shape))
    assert out.shape == (3, 10) and out.dtype == jnp.float32


def test_cnn_options():
    model = CNN(in_channels=3, num_classes=4, channels=(8,), activation="gelu", dropout=0.5, pool="avg",
                rngs=nnx.Rngs(0))
    assert forward(model, jnp.ones((2, 9, 7, 3))).shape == (2, 4)


def test_cnn_patch_convolution_is_nnx_conv():
    """The CNN's 3x3 convolutions are matmuls of patches (XLA:CPU runs native convolutions slowly inside jl.fit's
    loop of steps) with nnx.Conv's weights: the same outputs as nnx.Conv itself."""
    from jupyter_llm.models.cnn import conv3x3

    conv = nnx.Conv(3, 5, (3, 3), padding="SAME", rngs=nnx.Rngs(1))
    conv.bias[...] = jnp.arange(5.0)
    x = jnp.asarray(np.random.default_rng(0).standard_normal((2, 7, 6, 3)), jnp.float32)
    np.testing.assert_allclose(conv3x3(x, conv.kernel[...], conv.bias[...]), conv(x), rtol=1e-5, atol=1e-5)


def test_cnn_pooling_rounds_odd_sides_up_and_keeps_where_features_are():
    from jupyter_llm.models.cnn import grid_pool, pool2x2

    x = jnp.arange(2 * 5 * 5 * 1, dtype=jnp.float32).reshape(2, 5, 5, 1)
    assert pool2x2(x).shape == (2, 3, 3, 1) and float(pool2x2(x)[0, 0, 0, 0]) == 6.0
    np.testing.assert_array_equal(pool2x2(x, "avg")[0, 2, 2], x[0, 4, 4])  # the extended corner averages itself
    cells = grid_pool(jnp.ones((1, 7, 7, 2)).at[0, :2, :2].set(0.0), 3)
    assert cells.shape == (1, 18) and float(cells[0, 0]) < 1.0 and float(cells[0, -1]) == 1.0
    assert grid_pool(x, 1).shape == (2, 1) and float(grid_pool(x, 1)[0, 0]) == float(x[0].mean())


def test_cnn_beats_the_mlp_on_the_digits():
    """Same data, settings and seed: the default CNN's held-out accuracy beats the first lesson's MLP by a clear
    margin (seen at seeds 0, 1, 2: 0.986, 0.990, 0.993 against 0.955, 0.948, 0.965)."""
    import jupyter_llm as jl

    data = jl.datasets.load("digits")
    options = dict(epochs=10, batch_size=32, lr=1e-3, val_split=0.2, seed=0, display="none")
    cnn = jl.fit(CNN(in_channels=1, num_classes=10, rngs=nnx.Rngs(0)), data, **options)
    mlp = jl.fit(jl.models.MLP(in_features=64, hidden=[128], num_classes=10, rngs=nnx.Rngs(0)), data, **options)
    assert cnn.history["val_accuracy"][-1] > mlp.history["val_accuracy"][-1] + 0.02


def test_unknown_activation_lists_valid_names():
    with pytest.raises(ConfigError, match="relu.*gelu.*tanh.*sigmoid"):
        get_activation("swish-ish")
    with pytest.raises(ConfigError):
        CNN(activation="nope", rngs=nnx.Rngs(0))
    assert get_activation(jnp.sin) is jnp.sin


# ---------------------------------------------------------------- GPT forward pass


def test_gpt_output_shape_and_length_check():
    model = tiny_gpt(sharpen=1)
    logits = forward(model, tokens((2, 5), 11))
    assert logits.shape == (2, 5, 11) and logits.dtype == jnp.float32
    with pytest.raises(ConfigError, match="block_size is 32"):
        forward(model, tokens((1, 33), 11))


def test_gpt_char_tiny_matches_nanogpt_parameter_count():
    # eval_shape: the parameters' shapes without computing (or compiling) their initial values
    model = nnx.eval_shape(lambda: GPT.from_preset("gpt-char-tiny", vocab_size=65, rngs=nnx.Rngs(0)))
    n_layer, n_embd, vocab, block = 4, 128, 65, 64
    # No biases, as nanoGPT's train.py defaults: per block 2 LayerNorm scales (2C), qkv (3C^2), attention proj
    # (C^2), MLP (8C^2); then the final LayerNorm scale and the tied token embedding.
    per_block = 12 * n_embd**2 + 2 * n_embd
    expected = n_layer * per_block + n_embd + vocab * n_embd
    assert expected == 795_904  # nanoGPT: "number of parameters: 0.80M"
    assert model.num_params() == expected
    assert model.num_params(non_embedding=False) == expected + block * n_embd


def test_presets():
    assert PRESETS["gpt2-small"].n_embd == 768 and PRESETS["gpt2-small"].vocab_size == 50304
    with pytest.raises(ConfigError, match="vocab_size"):
        GPT.from_preset("gpt-char-tiny", rngs=nnx.Rngs(0))
    with pytest.raises(ConfigError, match="gpt-mini"):
        GPT.from_preset("gpt-minni", vocab_size=10, rngs=nnx.Rngs(0))
    model = nnx.eval_shape(lambda: GPT.from_preset("gpt-mini", vocab_size=10, n_layer=1, rngs=nnx.Rngs(0)))
    assert model.config.n_layer == 1 and model.config.n_embd == 192 and model.config.dropout == 0.1


def test_gpt_is_causal():
    model = tiny_gpt(sharpen=1)
    a = tokens((1, 8), 11, seed=1)
    base = forward(model, a)
    for t in range(7):
        b = a.at[0, t + 1 :].set((a[0, t + 1 :] + 1) % 11)
        changed = forward(model, b)
        np.testing.assert_allclose(changed[0, : t + 1], base[0, : t + 1], atol=1e-5)
        assert not np.allclose(changed[0, t + 1 :], base[0, t + 1 :], atol=1e-5)


def test_untrained_loss_is_about_log_vocab():
    model = tiny_gpt(sharpen=1)  # nanoGPT's init: small weights, near-uniform predictions
    x = tokens((8, 9), 11)
    logits = forward(model, x[:, :-1])
    loss = optax.softmax_cross_entropy_with_integer_labels(logits, x[:, 1:]).mean()
    assert abs(float(loss) - math.log(11)) < 0.3


def test_tiny_gpt_overfits_a_repeated_string():
    text = "hello jax! " * 8
    chars = sorted(set(text))
    ids = np.array([chars.index(c) for c in text], np.int32)
    block = 32  # the tiny_gpt shapes: its compiled functions are shared with the other tests
    windows = np.stack([ids[i : i + block + 1] for i in range(len(ids) - block)])
    x, y = jnp.asarray(windows[:, :-1]), jnp.asarray(windows[:, 1:])
    model = tiny_gpt(vocab=11, block=block, seed=0, sharpen=1)  # 9 distinct characters fit in 11 ids
    opt = nnx.Optimizer(model, optax.adam(1e-2), wrt=nnx.Param)

    @nnx.jit
    def step(model, opt, x, y):
        def loss_fn(model):
            return optax.softmax_cross_entropy_with_integer_labels(model(x), y).mean()

        loss, grads = nnx.value_and_grad(loss_fn)(model)
        opt.update(model, grads)
        return loss

    for i in range(200):
        loss = float(step(model, opt, x, y))
        if loss < 0.1:
            break
    assert loss < 0.1, f"loss {loss:.3f} after {i + 1} steps"
    # Trained, it continues the pattern: greedy generation reproduces the text (also past block_size).
    out = generate(model, ids[:5], 40, temperature=0)
    assert "".join(chars[t] for t in out) == text[5:45]


# ---------------------------------------------------------------- cached generation


def test_cached_decode_gives_the_full_forward_logits():
    model = tiny_gpt()
    decode = nnx.jit(lambda model, x, cache, pos: model.decode(x, cache, pos))
    x = tokens((2, 8), 11, seed=3)
    full = forward(model, x)
    logits, cache = decode(model, x[:, :3], model.init_cache(2), jnp.int32(0))  # prefill 3, then one at a time
    steps = [logits]
    for t in range(3, 8):
        logits, cache = decode(model, x[:, t : t + 1], cache, jnp.int32(t))
        steps.append(logits)
    np.testing.assert_allclose(np.concatenate(steps, axis=1), full, rtol=1e-5, atol=1e-4)


def naive_greedy(model, prompt, n):
    """nanoGPT's generate: crop to the last block_size tokens, full forward pass, arg-max, append. (The context
    is right-padded to block_size so one compiled forward serves every length: the model is causal.)"""
    seq, block = list(prompt), model.config.block_size
    for _ in range(n):
        ctx = seq[-block:]
        logits = forward(model, jnp.asarray(ctx + [0] * (block - len(ctx)), jnp.int32)[None])
        seq.append(int(jnp.argmax(logits[0, len(ctx) - 1])))
    return seq[len(prompt) :]


# Prompts of 1, 3, 20 and 33 tokens: prefills of 16 and 32 tokens, and one longer than block_size (cropped).
@pytest.mark.parametrize("prompt", [[1], [4, 2, 7], [3, 1, 4, 1, 5] * 4, list(range(11)) * 3])
def test_cached_greedy_generation_equals_full_forward(prompt):
    model = tiny_gpt()
    out = generate(model, np.array(prompt), 40, temperature=0)  # runs past block_size: the window slides
    assert out.dtype == np.int32 and out.shape == (40,)
    assert out.tolist() == naive_greedy(model, prompt, 40)
    assert len(set(out.tolist())) > 1  # a non-trivial sequence, or the test would prove little


def test_sampling_is_reproducible_and_streams_the_same_tokens():
    model = tiny_gpt(sharpen=1)
    prompt = np.array([1, 2, 3])
    a = generate(model, prompt, 40, seed=1)
    compiled = _decode._cache_size()
    generate(model, np.array([5, 6, 7, 8, 9]), 40, seed=1, temperature=0.7)
    assert _decode._cache_size() == compiled  # a new prompt length or temperature does not recompile
    assert generate(model, prompt, 40, seed=1).tolist() == a.tolist()
    assert generate(model, prompt, 40, seed=2).tolist() != a.tolist()
    chunks = list(generate_stream(model, prompt, 40, seed=1, chunk=16))
    assert [len(c) for c in chunks] == [16, 16, 8]
    assert np.concatenate(chunks).tolist() == a.tolist()
    top1 = generate(model, prompt, 40, seed=4, top_k=1)
    assert top1.tolist() == generate(model, prompt, 40, temperature=0).tolist()


def test_generate_rejects_bad_arguments():
    model = tiny_gpt(sharpen=1)
    with pytest.raises(DataError, match="empty"):
        generate(model, np.array([], np.int32), 3)
    with pytest.raises(DataError, match=r"\[0, 11\)"):
        generate(model, np.array([99]), 3)
    with pytest.raises(ConfigError, match="temperature"):
        generate(model, np.array([1]), 3, temperature=-1)
    with pytest.raises(ModelError):
        generate(CNN(rngs=nnx.Rngs(0)), np.array([1]), 3)
    assert generate(model, np.array([1]), 0).shape == (0,)


# ---------------------------------------------------------------- TextClassifier


def test_text_classifier_shape_and_padding_invariance():
    model = TextClassifier(vocab_size=30, num_classes=3, block_size=16, n_layer=1, n_head=2, n_embd=16,
                           dropout=0.0, rngs=nnx.Rngs(0))
    x = jnp.array([[5, 6, 7, 8, 0, 0], [9, 3, 2, 0, 0, 0]], jnp.int32)
    out = forward(model, x)
    assert out.shape == (2, 3)
    padded = forward(model, jnp.pad(x, ((0, 0), (0, 10))))
    np.testing.assert_allclose(padded, out, atol=1e-5)
    alone = forward(model, x[1:, :3])  # the same sentence without any padding
    np.testing.assert_allclose(alone, out[1:], atol=1e-5)
    with pytest.raises(ConfigError):
        model(jnp.ones((1, 17), jnp.int32))
