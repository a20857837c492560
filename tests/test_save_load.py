"""run.save(folder) and jl.load(folder): a loaded run predicts, evaluates and generates as the run it was saved from
(bitwise), a fit's --checkpoint folder loads as well, a loaded run continues a fit as the uninterrupted one, a model
of the user's own loads into a template, and every refusal says what to do."""

import os
import shutil
from pathlib import Path

import jax
import numpy as np
import pytest
from flax import nnx

import jupyter_llm as jl
from jupyter_llm.errors import ConfigError, DataError, JupyterLLMError

TEXT = Path(__file__).resolve().parent.parent / "notebooks" / "data" / "tinyshakespeare.txt"


def _tiny_gpt(vocab_size):
    return jl.models.GPT(vocab_size=vocab_size, block_size=32, n_layer=1, n_head=2, n_embd=32, dropout=0.1,
                         rngs=nnx.Rngs(0))


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    path = tmp_path_factory.mktemp("text") / "shakespeare.txt"
    path.write_text(TEXT.read_text(encoding="utf-8")[:60_000], encoding="utf-8")
    return jl.datasets.text(str(path), block_size=32)


LM = dict(batch_size=8, eval_every=10, eval_batches=2, display="none")


def test_a_saved_run_loads_and_predicts_and_evaluates_as_the_original(small_data, tmp_path):
    model = jl.models.MLP(in_features=64, hidden=[32], num_classes=10, dropout=0.1, rngs=nnx.Rngs(0))
    run = jl.fit(model, small_data, epochs=2, val_split=0.2, display="none")
    path = run.save(tmp_path / "saved")
    loaded = jl.load(path)
    assert type(loaded.model) is jl.models.MLP and loaded.model is not model
    x, y = small_data["test"]
    assert np.array_equal(loaded.predict(x), run.predict(x))  # bitwise: the same weights, the same program
    assert loaded.evaluate((x, y)) == run.evaluate((x, y))
    assert loaded.history == run.history and loaded.step == run.step and loaded.reason == "completed"
    assert loaded.test_metrics == run.test_metrics and loaded.config.epochs == 2 and loaded.config.val_split == 0.2
    assert f"loaded from {path}" in repr(loaded)
    with pytest.raises(DataError, match=r"without its data.*jl\.load\(.*data=\.\.\..*run\.evaluate\(\(x, y\)\)"):
        loaded.evaluate("test")  # a dict of arrays has no name to load it by
    with_data = jl.load(path, data=small_data)  # the same val_split carved again from the same seed
    assert with_data.evaluate("validation") == run.evaluate("validation")
    assert with_data.evaluate("test") == run.evaluate("test")


def test_a_loaded_run_names_its_built_in_data(tmp_path):
    model = jl.models.MLP(in_features=64, hidden=[16], num_classes=10, rngs=nnx.Rngs(0))
    run = jl.fit(model, "digits", epochs=1, display="none")
    run.save(tmp_path / "digits-run")
    with pytest.raises(DataError, match=r"data='digits'"):
        jl.load(tmp_path / "digits-run").evaluate("test")
    assert jl.load(tmp_path / "digits-run", data="digits").evaluate("test") == run.evaluate("test")


def test_a_checkpoint_folder_loads_generates_and_resumes_as_uninterrupted(corpus, tmp_path):
    whole = jl.fit(_tiny_gpt(corpus.vocab_size), corpus, steps=30, **LM)
    model = _tiny_gpt(corpus.vocab_size)
    half = jl.fit(model, corpus, steps=20, checkpoint=str(tmp_path / "ckpt"), **LM)
    loaded = jl.load(tmp_path / "ckpt")  # the newest step a fit wrote on its way, with no run.save
    assert loaded.step == 20 and loaded.history == half.history and loaded.tokenizer.to_dict() == \
        corpus.tokenizer.to_dict()
    ids = corpus.tokenizer.encode("ROMEO: what light")[None]
    assert np.array_equal(loaded.predict(ids), half.predict(ids))
    assert loaded.generate("ROMEO:", 20, temperature=0.8, seed=3) == half.generate("ROMEO:", 20, temperature=0.8,
                                                                                   seed=3)
    text_file = corpus.meta["path"]  # a text file is tokenized with the run's own tokenizer
    assert jl.load(tmp_path / "ckpt", data=text_file).evaluate("validation") == half.evaluate("validation")
    resumed = jl.fit(_tiny_gpt(corpus.vocab_size), corpus, steps=30, resume=loaded, **LM)
    assert resumed.history == whole.history  # dropout's RNG streams and Adam's moments came back too


def test_lora_adapters_and_keep_best_weights_are_what_loads(corpus, small_data, tmp_path):
    model = _tiny_gpt(corpus.vocab_size)
    run = jl.fit(model, corpus, steps=10, lora=4, **LM)
    loaded = jl.load(run.save(tmp_path / "lora"))
    ids = corpus.tokenizer.encode("KING:")[None]
    assert np.array_equal(loaded.predict(ids), run.predict(ids))
    assert type(loaded.model.h[0].attn.c_attn).__name__ == "LoRALinear"
    mlp = jl.models.MLP(in_features=64, hidden=[32], num_classes=10, rngs=nnx.Rngs(0))
    best = jl.fit(mlp, small_data, epochs=4, val_split=0.2, lr=0.05, keep_best=True, display="none")
    x = small_data["test"][0]
    assert np.array_equal(jl.load(best.save(tmp_path / "best")).predict(x), best.predict(x))


class Net(nnx.Module):
    def __init__(self, hidden, rngs):
        self.a = nnx.Linear(64, hidden, rngs=rngs)
        self.b = nnx.Linear(hidden, 10, rngs=rngs)

    def __call__(self, x):
        return self.b(jax.nn.relu(self.a(x.reshape(x.shape[0], -1))))


def test_a_model_of_ones_own_loads_into_a_template(small_data, tmp_path):
    run = jl.fit(Net(16, nnx.Rngs(0)), small_data, epochs=1, display="none")
    run.save(tmp_path / "net")
    with pytest.raises(ConfigError, match=r"model of your own, .*Net.*jl\.load\(folder, model=Net\(\.\.\.\)\)"):
        jl.load(tmp_path / "net")
    loaded = jl.load(tmp_path / "net", model=Net(16, nnx.Rngs(7)))
    x = small_data["test"][0]
    assert np.array_equal(loaded.predict(x), run.predict(x))
    with pytest.raises(JupyterLLMError, match=r"different model: .*shape.*Pass a model built like the one"):
        jl.load(tmp_path / "net", model=Net(8, nnx.Rngs(0)))
    with pytest.raises(JupyterLLMError, match=r"model= must be a flax.nnx.Module"):
        jl.load(tmp_path / "net", model="Net")


def test_load_writes_nothing_and_refusals_say_what_to_do(small_data, tmp_path):
    model = jl.models.MLP(in_features=64, hidden=[16], num_classes=10, rngs=nnx.Rngs(0))
    run = jl.fit(model, small_data, epochs=1, display="none")
    saved = Path(run.save(tmp_path / "saved"))
    bare = tmp_path / "copied"  # a step folder copied by hand: no marker, nothing else
    bare.mkdir()
    step = next(p for p in saved.iterdir() if p.name.isdigit())
    shutil.copytree(step, bare / step.name)
    before = sorted(os.listdir(bare))
    os.chmod(bare, 0o555)
    try:
        x = small_data["test"][0]
        assert np.array_equal(jl.load(bare).predict(x), run.predict(x))
    finally:
        os.chmod(bare, 0o755)
    assert sorted(os.listdir(bare)) == before
    with pytest.raises(JupyterLLMError, match=r"no such folder. Give the folder that run.save\(folder\) or a fit's "
                                              r"checkpoint=DIR wrote"):
        jl.load(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(JupyterLLMError, match="holds no saved run"):
        jl.load(tmp_path / "empty")
    other = jl.fit(jl.models.MLP(in_features=64, hidden=[8], num_classes=10, rngs=nnx.Rngs(1)), small_data,
                   epochs=1, display="none")
    with pytest.raises(ConfigError, match="already holds a saved run"):
        other.save(saved)
    assert np.array_equal(jl.load(saved).predict(small_data["test"][0]), run.predict(small_data["test"][0]))
