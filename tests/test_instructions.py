"""Instruction data (#21): (prompt, response) pairs trained on the response only. The rows hold exactly the examples'
tokens with every prompt target at -1; the losses leave those positions out (equal to a hand-computed mean over
the response, zero gradient elsewhere); a fit on a tiny repetitive set teaches a pretrained GPT-2 of
tests/test_pretrained.py its answers; every mistake is one message."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

import jupyter_llm as jl
from jupyter_llm.data.instructions import DEFAULT_TEMPLATE
from jupyter_llm.data.tokenizers import END_CHAR, WordTokenizer
from jupyter_llm.errors import ConfigError, DataError, DatasetNotFound
from jupyter_llm.train.losses import accuracy, cross_entropy, smoothed
from tests.test_pretrained import EOT, LOGIT_ATOL, _logits, hf_dir, text_path, tok_dir  # noqa: F401

PAIRS = [("What colour is the sky?", "Blue."), ("Say hello.", "Hello there!"), ("Count to three.", "One, two, three."),
         ("Name a fruit.", "An apple."), ("What do cats say?", "Meow."), ("Is fire cold?", "No, it is hot.")]
RECORDS = [{"prompt": p, "response": r} for p, r in PAIRS]
TEMPLATE = "Q: {prompt}\nA:"


def _fill(prompt, template=DEFAULT_TEMPLATE):
    return template.replace("{prompt}", prompt)


def _stream(tok, pairs, end, template=DEFAULT_TEMPLATE):
    """The examples as the module should lay them out: template(prompt), response, end; and the learned tokens."""
    ids, learn = [], []
    for p, r in pairs:
        prompt, response = tok.encode(_fill(p, template)).tolist(), tok.encode(r).tolist()
        ids += prompt + response + [end]
        learn += [False] * len(prompt) + [True] * (len(response) + 1)
    return np.array(ids), np.array(learn)


# ----------------------------------------------------------------------------------------------- the rows
@pytest.mark.parametrize("tokenizer", ["char", "bpe", "folder"])
def test_padded_rows_mask_exactly_the_prompt(tokenizer, tok_dir):  # noqa: F811
    data = jl.datasets.instructions(RECORDS, tokenizer=tok_dir if tokenizer == "folder" else tokenizer,
                                    packing=False, val_fraction=0)
    tok, end = data.meta["tokenizer"], data.meta["end_id"]
    assert tok.decode([end]) == (END_CHAR if tokenizer == "char" else EOT)
    x, y = data.train
    assert x.dtype == y.dtype == np.int32 and data.validation is None
    assert x.shape == (len(PAIRS), data.meta["block_size"])
    for (p, r), xs, ys in zip(PAIRS, x, y):
        n_prompt = len(tok.encode(_fill(p)))
        n = n_prompt + len(tok.encode(r)) + 1  # the example's tokens
        assert tok.decode(xs[:n - 1]) + tok.decode([end]) == _fill(p) + r + tok.decode([end])
        assert (xs[n - 1:] == end).all()  # padding
        assert (ys[:n_prompt - 1] == -1).all() and (ys[n - 1:] == -1).all()  # the prompt's targets, the padding's
        assert tok.decode(ys[n_prompt - 1:n - 1]) == r + tok.decode([end])  # every other target: the response, end
    longest = max(len(tok.encode(_fill(p))) + len(tok.encode(r)) for p, r in PAIRS)
    assert data.meta["block_size"] == longest  # the default: no example cut
    assert data.meta["truncated"] == data.meta["dropped"] == 0


def test_packing_keeps_every_token_once_and_validation_apart(tok_dir):  # noqa: F811
    records = RECORDS * 3
    data = jl.datasets.instructions(records, tokenizer=tok_dir, block_size=24, val_fraction=1 / 6, template=TEMPLATE)
    tok, end = data.meta["tokenizer"], data.meta["end_id"]
    assert data.meta["examples"] == {"train": 15, "validation": 3} and data.meta["dropped"] == 0
    for split, pairs in ((data.train, PAIRS * 2 + PAIRS[:3]), (data.validation, PAIRS[3:])):
        ids, learn = _stream(tok, pairs, end, TEMPLATE)
        x, y = split
        flat_x, flat_y = x.reshape(-1), y.reshape(-1)
        n = len(ids) - 1
        assert len(flat_x) - n < 24  # only the last block is padded
        np.testing.assert_array_equal(flat_x[:n], ids[:-1])  # every token an input once, in order
        np.testing.assert_array_equal(flat_y[:n], np.where(learn[1:], ids[1:], -1))  # and a target once
        assert (flat_x[n:] == end).all() and (flat_y[n:] == -1).all()
    # the validation examples in blocks of their own, starting with the first of them
    assert tok.decode(data.validation[0][0]).startswith(_fill(PAIRS[3][0], TEMPLATE))


def test_truncation_and_blocks_without_a_response_are_counted():
    long = [{"prompt": "p" * 40, "response": "r" * 5}, {"prompt": "short", "response": "answer"}]
    with pytest.warns(UserWarning, match="1 of 2 examples of 'instructions' are longer than block_size=20 tokens and "
                                         "were cut, 1 of them to no response token"):
        data = jl.datasets.instructions(long, template="{prompt}", packing=False, block_size=20, val_fraction=0)
    assert data.meta["truncated"] == 1 and data.meta["dropped"] == 1 and len(data.train[0]) == 1
    with pytest.warns(UserWarning, match="2 blocks of 'instructions' hold only prompt tokens"):
        data = jl.datasets.instructions(long, template="{prompt}", block_size=16, val_fraction=0)
    assert data.meta["dropped"] == 2 and (data.train[1] != -1).any(axis=1).all()


# ----------------------------------------------------------------------------------------------- the losses
def _log_softmax(z):
    z = z - z.max(-1, keepdims=True)
    return z - np.log(np.exp(z).sum(-1, keepdims=True))


def test_losses_leave_out_ignored_positions():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(3, 5, 7)).astype(np.float32) * 3
    labels = rng.integers(0, 7, (3, 5)).astype(np.int32)
    labels[0, :3] = -1
    labels[2] = -1  # an example with nothing to learn: 0
    logp = _log_softmax(logits.astype(np.float64))
    keep = labels >= 0
    nll = -np.take_along_axis(logp, np.maximum(labels, 0)[..., None], -1)[..., 0]
    expected = [nll[i][keep[i]].mean() if keep[i].any() else 0.0 for i in range(3)]
    np.testing.assert_allclose(cross_entropy(jnp.asarray(logits), jnp.asarray(labels)), expected, rtol=1e-6)
    hits = logits.argmax(-1) == labels
    np.testing.assert_allclose(accuracy(jnp.asarray(logits), jnp.asarray(labels)),
                               [hits[i][keep[i]].mean() if keep[i].any() else 0.0 for i in range(3)])
    # smoothed targets: (1 - a) one-hot + a / classes on the labelled positions only
    a = 0.1
    smooth = -((1 - a) * -nll + a * logp.mean(-1))
    np.testing.assert_allclose(smoothed(cross_entropy, a)(jnp.asarray(logits), jnp.asarray(labels)),
                               [smooth[i][keep[i]].mean() if keep[i].any() else 0.0 for i in range(3)], rtol=1e-5)
    # no gradient reaches an ignored position, with or without smoothing
    for fn in (cross_entropy, smoothed(cross_entropy, a)):
        grad = np.asarray(jax.grad(lambda z, f=fn: f(z, jnp.asarray(labels)).sum())(jnp.asarray(logits)))
        assert (grad[~keep] == 0).all() and (np.abs(grad[keep]).sum(-1) > 0).all()


def test_labels_without_ignored_positions_keep_their_values():
    rng = np.random.default_rng(1)
    logits = jnp.asarray(rng.normal(size=(4, 6, 9)), jnp.float32)
    seq = jnp.asarray(rng.integers(0, 9, (4, 6)), jnp.int32)
    np.testing.assert_allclose(cross_entropy(logits, seq),
                               optax.softmax_cross_entropy_with_integer_labels(logits, seq).mean(1), rtol=1e-6)
    np.testing.assert_allclose(accuracy(logits, seq), (logits.argmax(-1) == seq).mean(1), rtol=1e-6)
    one = jnp.asarray(rng.integers(0, 9, (4,)), jnp.int32)  # classification: the very same computation as before
    np.testing.assert_array_equal(cross_entropy(logits[:, 0], one),
                                  optax.softmax_cross_entropy_with_integer_labels(logits[:, 0], one))


# ----------------------------------------------------------------------------------------------- fits
@pytest.fixture(scope="module")
def tuned(hf_dir):  # noqa: F811
    """A tiny GPT-2 of transformers' fine-tuned on six question/answer pairs, four times over."""
    model = jl.models.GPT.from_pretrained(hf_dir)
    data = jl.datasets.instructions(RECORDS * 4, tokenizer=hf_dir, template=TEMPLATE, packing=False,
                                    val_fraction=0.25)
    return jl.fit(model, data, epochs=20, batch_size=6, lr=3e-3, display="none"), data


def test_a_fit_teaches_the_answers(tuned):
    run, data = tuned
    h = run.history
    assert h["loss"][-1] < h["loss"][0] / 10 and h["val_loss"][-1] < h["val_loss"][0] / 10, h
    assert h["val_accuracy"][-1] == 1.0
    assert run.tokenizer is data.meta["tokenizer"]
    for prompt, answer in PAIRS[:2]:  # greedy decoding gives the trained answer, then the end token
        assert run.generate(_fill(prompt, TEMPLATE), 10, temperature=0, stop_at_end=False).startswith(answer + EOT)
        assert run.generate(_fill(prompt, TEMPLATE), 10, temperature=0) == answer  # stopped there
        assert "".join(run.generate_stream(_fill(prompt, TEMPLATE), 10, temperature=0, chunk=2)) == answer


def test_the_gradient_is_that_of_the_response_tokens_alone(tuned):
    """The fit's loss on a batch of rows has the gradient of a loss written by hand over each example's response
    positions only; counting the prompt's next tokens as targets too would change it."""
    run, data = tuned
    x, y = (np.asarray(a[:6]) for a in data.train)
    positions = [np.flatnonzero(row >= 0) for row in y]  # picked on the host: the response targets of each example

    def by_hand(m):
        logp = jax.nn.log_softmax(m(jnp.asarray(x)), axis=-1)
        return jnp.mean(jnp.stack([-logp[i, p, y[i, p]].mean() for i, p in enumerate(positions)]))

    def fit_loss(m, labels):
        return cross_entropy(m(jnp.asarray(x)), jnp.asarray(labels)).mean()

    model = run.model
    assert float(nnx.jit(fit_loss)(model, y)) == pytest.approx(float(nnx.jit(by_hand)(model)), rel=1e-5)
    ours = nnx.state(nnx.jit(nnx.grad(fit_loss))(model, y))
    ref = nnx.state(nnx.jit(nnx.grad(by_hand))(model))
    for a, b in zip(jax.tree.leaves(ours), jax.tree.leaves(ref)):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-4, atol=1e-7)
    every = np.where(y < 0, np.roll(x, -1, axis=1), y)  # the prompt's next tokens as targets as well
    assert abs(float(nnx.jit(fit_loss)(model, every)) - float(nnx.jit(fit_loss)(model, y))) > 0.1


def test_lora_steps_and_the_magic_and_save_pretrained(ipython, tok_dir, tmp_path):  # noqa: F811
    ipython.user_ns["records"] = RECORDS * 4
    cell = ("%%train --steps 30 --batch-size 6 --lr 1e-2 --lora 4 --display none\n"
            f"data = jl.datasets.instructions(records, tokenizer={str(tok_dir)!r}, template={TEMPLATE!r}, "
            "packing=False, val_fraction=0.25)\n"
            "model = jl.models.GPT(vocab_size=data.meta['vocab_size'], block_size=32, n_layer=2, n_head=2, n_embd=32, "
            "rngs=nnx.Rngs(0))")
    assert ipython.run_cell(cell).success
    run = ipython.user_ns["run"]
    assert run.step == 30 and run.history["val_loss"][-1] < run.history["val_loss"][0]
    folder = run.save_pretrained(tmp_path / "tuned")
    again = jl.models.GPT.from_pretrained(folder)
    ids = run.tokenizer.encode(_fill(PAIRS[0][0], TEMPLATE))[None]
    np.testing.assert_allclose(_logits(again, ids), _logits(run.model, ids), atol=LOGIT_ATOL)
    saved = jl.datasets.instructions(RECORDS, tokenizer=folder, template=TEMPLATE).meta["tokenizer"]
    assert saved.to_dict() == run.tokenizer.to_dict()  # the tokenizer was saved with the model


# ----------------------------------------------------------------------------------------------- mistakes
def test_mistakes_get_one_clear_message(tmp_path, hf_dir):  # noqa: F811
    with pytest.raises(DatasetNotFound, match="there is no such file"):
        jl.datasets.instructions(tmp_path / "missing.jsonl")
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps(RECORDS[0]) + "\n\n" + "{'prompt': 'single quotes'}\n")
    with pytest.raises(DataError, match="Line 3 of .*bad.jsonl' is not a JSON object"):
        jl.datasets.instructions(bad)
    other = tmp_path / "other.jsonl"
    other.write_text("\n".join(json.dumps(r) for r in [RECORDS[0], {"instruction": "x", "output": "y"}]))
    with pytest.raises(DataError, match=r"Line 2 of .*other.jsonl' has no 'prompt' field; its fields are "
                                        r"\['instruction', 'output'\]"):
        jl.datasets.instructions(other)
    with pytest.raises(DataError, match="Record 1 has no 'response' field.*Pass response='responses'"):
        jl.datasets.instructions([{"prompt": "a", "responses": "b"}])
    with pytest.raises(DataError, match="Record 2 has int 42 in 'response'; the response must be text"):
        jl.datasets.instructions([RECORDS[0], {"prompt": "a", "response": 42}])
    with pytest.raises(DataError, match="Record 1 is str, not an object"):
        jl.datasets.instructions(["just text"])
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n \n")
    with pytest.raises(DataError, match="empty.jsonl' holds no examples"):
        jl.datasets.instructions(empty)
    with pytest.raises(DataError, match="path of a JSON Lines file or a list of dicts, got dict"):
        jl.datasets.instructions(RECORDS[0])
    with pytest.raises(ConfigError, match="template must be a string that holds \\{prompt\\} once"):
        jl.datasets.instructions(RECORDS, template="Question:")
    with pytest.raises(ConfigError, match="block_size must be a positive whole number"):
        jl.datasets.instructions(RECORDS, block_size=0)
    with pytest.raises(DataError, match="1 example\\(s\\) are too few to keep val_fraction=0.1"):
        jl.datasets.instructions(RECORDS[:1])
    with pytest.raises(ConfigError, match="has no end-of-text token"):
        jl.datasets.instructions(RECORDS, tokenizer=WordTokenizer.train(["a b"]))
    data = jl.datasets.instructions(RECORDS, val_fraction=0, block_size=40, template=TEMPLATE)
    small = jl.models.GPT(vocab_size=data.meta["vocab_size"], block_size=32, n_layer=1, n_head=1, n_embd=8,
                          rngs=nnx.Rngs(0))
    with pytest.raises(ConfigError, match="rows are 40 tokens long, more than the model's context of 32; build "
                                          "the data with block_size=32"):
        jl.fit(small, data, epochs=1, batch_size=2, display="none")
    with pytest.raises(ConfigError, match="block_size=16 does not apply to this data"):
        jl.fit(small, data, epochs=1, batch_size=2, block_size=16, display="none")
    narrow = jl.models.GPT(vocab_size=5, block_size=64, n_layer=1, n_head=1, n_embd=8, rngs=nnx.Rngs(0))
    with pytest.raises(jl.errors.ModelError, match="predicts 5 tokens but the data's tokenizer has a vocabulary of"):
        jl.fit(narrow, data, epochs=1, batch_size=2, display="none")
