"""--metrics (named metrics and callables), run.predict(probabilities=True) and run.classify: real fits, checked
against the same quantities computed by hand from the model's outputs."""

import numpy as np
import optax
import pytest

import jupyter_llm as jl
from jupyter_llm.config import make_config
from jupyter_llm.errors import ConfigError, DataError
from jupyter_llm.fitting.classify import Prediction
from tests.helpers import mlp

NAMES = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
FAST = dict(epochs=2, batch_size=128, lr=3e-3, display="none", seed=0)


def digits_named():
    d = jl.datasets.load("digits")
    return jl.datasets.Dataset(train=d.train, test=d.test, num_classes=10, class_names=NAMES, name="digits")


@pytest.fixture(scope="module")
def top3_run():
    return jl.fit(mlp(hidden=(16,)), digits_named(), val_split=0.2, metrics="accuracy,top3", **FAST)


def test_top_k_is_a_hand_computation_and_at_least_the_accuracy(top3_run):
    run = top3_run
    assert {"top3", "val_top3", "accuracy", "val_accuracy"} <= set(run.history)
    x, y = run.dataset.test
    logits = run.predict(x)
    hand_top3 = float(np.mean([label in np.argsort(-row)[:3] for row, label in zip(logits, y)]))
    hand_accuracy = float(np.mean(logits.argmax(1) == y))
    got = run.evaluate("test")
    assert got["top3"] == pytest.approx(hand_top3, abs=1e-6)
    assert got["accuracy"] == pytest.approx(hand_accuracy, abs=1e-6)
    assert got["top3"] > got["accuracy"]  # two epochs of a small MLP: far from perfect, so top-3 finds more
    assert run.test_metrics["top3"] == pytest.approx(hand_top3, abs=1e-6)
    assert all(t >= a for t, a in zip(run.history["val_top3"], run.history["val_accuracy"]))


def test_metrics_show_in_the_report_and_the_live_table(top3_run):
    report = top3_run._report()
    assert "top3" in report.final and set(report.final["top3"]) == {"train", "validation", "test"}
    assert "top3" in repr(report) and "top3" in report._repr_html_()
    from jupyter_llm.sinks.html import LiveView

    view = LiveView()
    for event in [top3_run._sink.start, *top3_run._sink.evals]:
        view.on(event)
    assert "val_top3" in view.table_html()


def test_probabilities_sum_to_one_and_keep_the_argmax(top3_run):
    x = top3_run.dataset.test[0][:50]
    logits, probs = top3_run.predict(x), top3_run.predict(x, probabilities=True)
    assert probs.shape == logits.shape
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-5)
    assert (probs.argmax(1) == logits.argmax(1)).all()
    np.testing.assert_allclose(probs, np.exp(logits) / np.exp(logits).sum(1, keepdims=True), rtol=1e-5)


def test_classify_names_the_argmax_through_class_names(top3_run):
    x = top3_run.dataset.test[0][:20]
    got = top3_run.classify(x)
    probs = top3_run.predict(x, probabilities=True)
    assert [p.label for p in got] == [NAMES[i] for i in probs.argmax(1)]
    for p, row in zip(got, probs):
        assert isinstance(p, Prediction)
        assert p.probability == pytest.approx(float(row.max()), rel=1e-6)
        assert list(p.probabilities) == list(NAMES) and sum(p.probabilities.values()) == pytest.approx(1, abs=1e-5)
    with pytest.raises(DataError, match="trained on arrays"):
        top3_run.classify(["a sentence"])


def cross_entropy_by_hand(outputs, labels):
    return optax.softmax_cross_entropy_with_integer_labels(outputs, labels)


def test_a_custom_loss_asks_for_accuracy_and_reports_the_built_in_losss(top3_run):
    """The same fit with the loss written by hand: --metrics accuracy gives the accuracy the built-in loss reports
    (the fixture's fit, whose extra top3 metric changes nothing it learns)."""
    custom = jl.fit(mlp(hidden=(16,)), digits_named(), val_split=0.2, loss=cross_entropy_by_hand,
                    metrics="accuracy", **FAST)
    for key in ("val_accuracy", "accuracy", "val_loss"):
        np.testing.assert_allclose(custom.history[key], top3_run.history[key], rtol=1e-5, err_msg=key)
    assert custom.evaluate("test")["accuracy"] == pytest.approx(top3_run.evaluate("test")["accuracy"], abs=1e-6)
    assert "top3" not in custom.history


def error_rate(outputs, labels):
    return (outputs.argmax(-1) != labels).astype("float32")


def test_callables_named_by_themselves_or_by_a_pair():
    run = jl.fit(mlp(hidden=(16,)), "digits", metrics=["accuracy", error_rate, ("wrong", error_rate)], **FAST)
    np.testing.assert_allclose(run.history["error_rate"], 1 - np.asarray(run.history["accuracy"]), atol=1e-6)
    np.testing.assert_allclose(run.history["wrong"], run.history["error_rate"], atol=1e-6)
    assert run.config.to_dict()["metrics"] == "accuracy,error_rate,wrong"
    assert make_config(metrics={"wrong": error_rate}).metrics == (("wrong", error_rate),)


def test_regression_metrics_are_hand_computations():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(256, 8)).astype(np.float32)
    y = (x @ rng.normal(size=(8, 1))).astype(np.float32)
    run = jl.fit(mlp(in_features=8, hidden=(16,), num_classes=1), (x, y), metrics="mse,mae", epochs=3, batch_size=64,
                 display="none")
    got, out = run.evaluate((x, y)), run.predict(x)
    assert got["mae"] == pytest.approx(float(np.abs(out - y).mean()), rel=1e-5)
    assert got["mse"] == pytest.approx(got["loss"], rel=1e-6)
    with pytest.raises(DataError, match="regression"):
        run.predict(x, probabilities=True)
    with pytest.raises(DataError, match="regression"):
        run.classify(x)
    with pytest.raises(ConfigError, match="metrics='accuracy' needs class labels.*mse or mae"):
        jl.fit(mlp(in_features=8, hidden=(16,), num_classes=1), (x, y), metrics="accuracy", **FAST)


def test_binary_probabilities_are_a_sigmoid_and_classify_has_two_classes():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(256, 4)).astype(np.float32)
    y = (x[:, 0] > 0).astype(np.int32)
    data = jl.datasets.Dataset(train=(x, y), class_names=("no", "yes"), task="binary")
    run = jl.fit(mlp(in_features=4, hidden=(8,), num_classes=1), data, metrics="accuracy,cross_entropy", **FAST)
    logits, probs = run.predict(x), run.predict(x, probabilities=True)
    np.testing.assert_allclose(probs, 1 / (1 + np.exp(-logits)), rtol=1e-5)
    assert run.evaluate((x, y))["accuracy"] == pytest.approx(float(np.mean((logits[:, 0] > 0) == y)), abs=1e-6)
    got = run.classify(x[:10])
    assert [p.label for p in got] == [("no", "yes")[int(v > 0)] for v in logits[:10, 0]]
    assert all(set(p.probabilities) == {"no", "yes"} for p in got)


def test_metric_mistakes_are_one_clear_line():
    with pytest.raises(ConfigError, match="Did you mean 'accuracy'"):
        make_config(metrics="acuracy")
    with pytest.raises(ConfigError, match="perplexity and bits_per_token are reported"):
        make_config(metrics="perplexity")
    with pytest.raises(ConfigError, match="'loss' is a name the history already uses"):
        make_config(metrics={"loss": error_rate})
    with pytest.raises(ConfigError, match="names 'top3' twice"):
        make_config(metrics="top3,Top-3")
    with pytest.raises(ConfigError, match="no usable name"):
        make_config(metrics=[lambda o, y: o])
    assert make_config(metrics="Top-5, accuracy").metrics == ("top5", "accuracy")
    assert make_config(metrics="none").metrics == ()
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(256, 4)).astype(np.float32), rng.integers(0, 3, 256).astype(np.int32)
    with pytest.raises(ConfigError, match=r"metrics='top5'.*outputs 3 per example.*use top2 at most"):
        jl.fit(mlp(in_features=4, hidden=(8,), num_classes=3), (x, y), metrics="top5", **FAST)
    with pytest.raises(ConfigError, match=r"metrics='mae' compares outputs with regression targets"):
        jl.fit(mlp(in_features=4, hidden=(8,), num_classes=3), (x, y), metrics="mae", **FAST)
    with pytest.raises(ConfigError, match="metrics='acuracy'.*Did you mean 'accuracy'"):  # jl.fit's idiom
        jl.fit(mlp(in_features=4, hidden=(8,), num_classes=3), (x, y), metrics="acuracy", **FAST)


def test_magic_and_command_line_take_metrics(ipython, capsys):
    ipython.run_cell("def wrong(outputs, labels):\n    return (outputs.argmax(-1) != labels).astype('float32')\n"
                     "model = jl.models.MLP(in_features=64, hidden=[16], num_classes=10, rngs=nnx.Rngs(0))")
    result = ipython.run_cell("%train --data digits --epochs 1 --batch-size 128 --metrics top2,wrong --display none")
    assert result.success, result.error_in_exec
    assert {"top2", "wrong"} <= set(ipython.user_ns["run"].history)
    bad = ipython.run_cell("%train --data digits --epochs 1 --metrics top20 --display none")
    assert "--metrics 'top20'" in str(bad.error_in_exec)  # the magic speaks flags
    from jupyter_llm.cli import main

    assert main(["train", "--model", "mlp", "--data", "digits", "--epochs", "1", "--metrics", "top2"]) == 0
    assert "top2" in capsys.readouterr().out


def test_classify_encodes_texts_with_the_fits_tokenizer(tmp_path):
    from flax import nnx

    from jupyter_llm.data.classification import encode_texts

    good = ["great food and friendly staff", "loved it, wonderful", "excellent and great value", "best ever"]
    bad = ["awful service, never again", "terrible and cold food", "worst purchase, broken", "bad, bad, bad"]
    rows = [(t, "pos") for t in good * 8] + [(t, "neg") for t in bad * 8]
    (tmp_path / "reviews.csv").write_text("text,label\n" + "\n".join(f'"{t}",{label}' for t, label in rows))
    data = jl.datasets.text_classification(tmp_path / "reviews.csv", max_len=8, val_fraction=0.0, test_fraction=0.0)
    model = jl.models.TextClassifier(vocab_size=data.meta["vocab_size"], num_classes=2, block_size=8, n_layer=1,
                                     n_head=2, n_embd=16, dropout=0.0, rngs=nnx.Rngs(0))
    run = jl.fit(model, data, epochs=3, batch_size=16, lr=3e-3, display="none")
    texts = ["great and friendly", "cold and broken", "never again"]
    got = run.classify(texts)
    logits = run.predict(encode_texts(texts, run.tokenizer, data.meta["max_len"]))
    assert [p.label for p in got] == [data.class_names[i] for i in logits.argmax(1)]
    one = run.classify("great and friendly")
    assert isinstance(one, Prediction) and one == got[0]


def test_a_language_model_is_not_classified():
    from types import SimpleNamespace

    from jupyter_llm.fitting.classify import classify

    corpus = jl.datasets.text("abcabcabd " * 80, tokenizer="char", block_size=8)
    lm = SimpleNamespace(dataset=corpus, output_kind="classes")  # what classify reads of a language model's Run
    with pytest.raises(DataError, match="language model: use run.generate"):
        classify(lm, np.zeros((1, 8), np.int32))


def test_a_resume_keeps_the_metrics_it_was_trained_with(top3_run):
    with pytest.raises(ConfigError, match="reported metrics accuracy,top3, this fit asks for the loss's own"):
        jl.fit(top3_run.model, digits_named(), val_split=0.2, resume=top3_run, **{**FAST, "epochs": 3})
