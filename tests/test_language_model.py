"""Language models through the whole path: tokenizers, corpora, a GPT fit with %%train, generation, errors."""

from pathlib import Path

import numpy as np
import pytest
from flax import nnx

import jupyter_llm as jl
from jupyter_llm.data.tokenizers import BPETokenizer, CharTokenizer, tokenizer_from_dict
from jupyter_llm.errors import ConfigError, DataError, DatasetNotFound

SHAKESPEARE = Path(__file__).parent.parent / "notebooks" / "data" / "tinyshakespeare.txt"
TEXT = SHAKESPEARE.read_text()[:60_000]


def tiny_gpt(vocab, block=32, seed=0):
    return jl.models.GPT(vocab_size=vocab, block_size=block, n_layer=2, n_head=2, n_embd=64, rngs=nnx.Rngs(seed))


def test_char_tokenizer_round_trip_and_serialisation():
    tok = CharTokenizer.train(TEXT)
    ids = tok.encode("ROMEO: hello")
    assert ids.dtype == np.int32 and tok.decode(ids) == "ROMEO: hello"
    again = tokenizer_from_dict(tok.to_dict())
    assert again.decode(again.encode(TEXT[:500])) == TEXT[:500]
    with pytest.raises(DataError, match="not in the model's vocabulary"):
        tok.encode("naïve ✓")


def test_bpe_tokenizer_trained_on_the_corpus():
    pytest.importorskip("tokenizers")
    tok = BPETokenizer.train(TEXT, vocab_size=400)
    assert 256 < tok.vocab_size <= 400
    sample = TEXT[1000:1400]
    ids = tok.encode(sample)
    assert tok.decode(ids) == sample and len(ids) < len(sample)
    assert tokenizer_from_dict(tok.to_dict()).encode(sample).tolist() == ids.tolist()


def test_text_corpus_splits_and_errors(tmp_path):
    corpus = jl.datasets.text(SHAKESPEARE, block_size=64, val_fraction=0.1)
    n = len(SHAKESPEARE.read_text())
    assert len(corpus.train) + len(corpus.validation) == n and len(corpus.validation) == int(n * 0.1)
    assert corpus.tokenizer.decode(corpus.train[:20]) == SHAKESPEARE.read_text()[:20]
    empty = tmp_path / "empty.txt"
    empty.write_text("  \n")
    with pytest.raises(DataError, match="is empty"):
        jl.datasets.text(empty)
    with pytest.raises(DatasetNotFound, match="does not exist"):
        jl.datasets.text(tmp_path / "missing.txt")
    with pytest.raises(DatasetNotFound, match="my corpus.txt': it does not exist"):
        jl.datasets.text(str(tmp_path / "my corpus.txt"))  # a missing path with a space is still a path
    with pytest.raises(DataError, match="a file path or a string of text, got int"):
        jl.datasets.text(12345)
    with pytest.raises(DataError, match="not more than block_size"):
        jl.datasets.text("a short text\n", block_size=64)
    binary = tmp_path / "bin.txt"
    binary.write_bytes(b"\xff\xfe\x00abc")
    with pytest.raises(DataError, match="not UTF-8"):
        jl.datasets.text(binary)


def test_untrained_loss_is_near_log_vocab_and_a_fit_learns():
    corpus = jl.datasets.text(TEXT, block_size=32)
    model = tiny_gpt(corpus.vocab_size)
    run = jl.fit(model, corpus, steps=300, eval_every=100, batch_size=16, lr=3e-3, optimizer="adamw",
                 eval_batches=20, display="none")
    first_train = run.log[0]["loss"]
    assert run.history["val_loss"][-1] < 2.6 < np.log(corpus.vocab_size)  # far below chance after 300 steps
    assert set(run.history) >= {"loss", "val_loss", "perplexity", "val_bits_per_token"}
    assert run.history["val_perplexity"][-1] == pytest.approx(np.exp(run.history["val_loss"][-1]))
    assert first_train > run.history["loss"][-1]
    assert run._sink.start.unit == "tokens" and run._sink.start.units_per_step == 16 * 32


def test_untrained_model_loss_is_ln_vocab():
    corpus = jl.datasets.text(TEXT, block_size=32)
    run = jl.fit(tiny_gpt(corpus.vocab_size), corpus, steps=1, lr=1e-9, eval_batches=10, batch_size=8,
                 display="none")
    assert run.history["val_loss"][0] == pytest.approx(np.log(corpus.vocab_size), abs=0.3)


def test_tiny_gpt_overfits_a_tiny_corpus_and_generates_it():
    text = "to be or not to be, that is the question. " * 40
    corpus = jl.datasets.text(text, block_size=16, val_fraction=0.0)
    run = jl.fit(tiny_gpt(corpus.vocab_size, block=16), corpus, steps=600, eval_every=100, batch_size=16, lr=3e-3,
                 display="none")
    assert len(run.history["loss"]) == 6 and run.history["loss"][-1] < 0.2
    out = run.generate("to be or", 30, temperature=0.0)
    assert out.startswith(" not to be, that")
    assert run.generate("to be", 40, seed=3) == run.generate("to be", 40, seed=3)
    assert "".join(run.generate_stream("to be", 40, seed=3, chunk=7)) == run.generate("to be", 40, seed=3)


def test_generation_errors():
    corpus = jl.datasets.text(TEXT, block_size=32)
    run = jl.fit(tiny_gpt(corpus.vocab_size), corpus, steps=2, display="none", eval_batches=1)
    with pytest.raises(DataError, match="not in the model's vocabulary"):
        run.generate("héllo ✓", 5)
    array_run = jl.fit(jl.models.MLP(in_features=4, hidden=[4], num_classes=2, rngs=nnx.Rngs(0)),
                       (np.zeros((8, 4), np.float32), np.arange(8) % 2), epochs=1, batch_size=4, display="none")
    with pytest.raises(DataError, match="not trained on text"):
        array_run.generate("hi")


def test_block_size_longer_than_the_model_is_rejected():
    corpus = jl.datasets.text(TEXT, block_size=64)
    with pytest.raises(ConfigError, match="longer than the model's context of 32"):
        jl.fit(tiny_gpt(corpus.vocab_size, block=32), corpus, steps=1, block_size=64, display="none")
    with pytest.raises(ConfigError, match="a text corpus has its validation part already"):
        jl.fit(tiny_gpt(corpus.vocab_size, block=64), corpus, steps=1, val_split=0.2, display="none")
    small_vocab = tiny_gpt(10)
    with pytest.raises(jl.JupyterLLMError, match="vocabulary of"):
        jl.fit(small_vocab, corpus, steps=1, display="none")


def test_train_and_generate_magics(ipython, capsys):
    ipython.user_ns["text_path"] = str(SHAKESPEARE)
    cell = ("corpus = jl.datasets.text(open(text_path).read()[:60000], block_size=32)\n"
            "model = jl.models.GPT(vocab_size=corpus.vocab_size, block_size=32, n_layer=2, n_head=2, n_embd=64, "
            "rngs=nnx.Rngs(0))\n")
    result = ipython.run_cell("%%train --data corpus --steps 60 --eval-every 30 --eval-batches 5 --batch-size 8 "
                              "--display none --out lm\n" + cell)
    assert result.success, result.error_in_exec
    capsys.readouterr()
    assert ipython.run_cell("%generate --run lm --tokens 40 --seed 1 ROMEO:").success
    printed = capsys.readouterr().out
    assert printed.startswith("ROMEO:") and len(printed.strip()) >= 40
    bad = ipython.run_cell("%generate --run lm naïve ✓")
    assert "not in the model's vocabulary" in str(bad.error_in_exec)
    assert capsys.readouterr().out == ""  # the prompt is not printed before the error
    typo = ipython.run_cell("%generate --run lm -tokens 5 to be")  # not a prompt that begins '-tokens 5'
    assert "Did you mean --tokens?" in str(typo.error_in_exec)
    assert ipython.run_cell("%generate --run lm --tokens 5 -- -to be").success  # after --, all of it is prompt
    assert capsys.readouterr().out.startswith("-to be")
    missing = ipython.run_cell("%generate --run nothing hello")
    assert "'nothing' is not a Run" in str(missing.error_in_exec)

    def stopped_midway(prompt, tokens, **kw):  # the stop button pressed while the third piece is decoded
        yield from ("a", "bc")
        raise KeyboardInterrupt

    ipython.user_ns["lm"].generate_stream = stopped_midway
    assert ipython.run_cell("%generate --run lm --tokens 40 to be").success
    assert capsys.readouterr().out == "to beabc\n[generation stopped]\n"


def test_sample_every_shows_generated_text_at_evaluations():
    from jupyter_llm import events as ev

    corpus = jl.datasets.text(TEXT, block_size=32)
    seen = []

    class Samples:
        def on(self, event):
            if isinstance(event, ev.Sample):
                seen.append(event)

    jl.fit(tiny_gpt(corpus.vocab_size), corpus, steps=40, eval_every=10, eval_batches=2, sample_every=20,
           batch_size=8, display="none", sinks=[Samples()])
    assert [s.step for s in seen] == [20, 40]
    assert all(len(s.text) == 200 and s.prompt == "\n" for s in seen)
    with pytest.raises(ConfigError, match="sample_every shows text from a language model"):
        jl.fit(jl.models.MLP(in_features=4, hidden=[4], num_classes=2, rngs=nnx.Rngs(0)),
               (np.zeros((8, 4), np.float32), np.arange(8) % 2), batch_size=4, sample_every=5, display="none")


def test_a_language_model_fit_is_described_in_steps(tmp_path):
    """A real char-level GPT fit on a text corpus: the text display, report and run.json speak steps."""
    import io
    import json

    from jupyter_llm.sinks.position import format_epochs
    from jupyter_llm.sinks.text import TextSink

    corpus = jl.datasets.text("the quick brown fox jumps over the lazy dog. " * 40, tokenizer="char", block_size=8)
    model = jl.models.GPT(vocab_size=corpus.vocab_size, block_size=8, n_layer=1, n_head=1, n_embd=8,
                          rngs=nnx.Rngs(0))
    out = io.StringIO()
    run = jl.fit(model, corpus, steps=4, eval_every=2, batch_size=2, display="none", sinks=[TextSink(out)],
                 logdir=str(tmp_path))
    per_step = 2 * 8 / corpus.sizes()["train"]  # tokens of a step over the training tokens
    assert run._sink.start.steps_per_pass == pytest.approx(1 / per_step)
    assert f"step 4/4 ({format_epochs(4 * per_step)})" in repr(run._report())
    assert "epoch 1/2" not in out.getvalue() and "step 2/4 (" in out.getvalue()
    card = json.load(open(tmp_path / "run.json"))
    assert card["steps_per_pass"] == pytest.approx(1 / per_step) and card["epochs_are"].startswith("evaluation")
