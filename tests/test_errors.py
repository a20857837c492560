"""Every user mistake gets one clear message — a UsageError in the magic, a JupyterLLMError from jl.fit — and leaves
the namespace (an earlier run, the model's weights) intact."""

import numpy as np
import pytest
from flax import nnx

import jupyter_llm as jl
from jupyter_llm.errors import ConfigError, DataError, DatasetNotFound, ModelError
from tests.helpers import mlp, params_of

X = np.random.default_rng(0).random((64, 8, 8, 1), dtype=np.float32)
Y = np.arange(64) % 10

# (description, magic line, namespace additions, expected substrings of the message)
MAGIC_CASES = [
    ("unknown option", "--epoch 3", {}, ["unrecognized arguments: --epoch 3", "%%train?"]),
    ("bad int", "--epochs three", {}, ["--epochs", "whole number", "'three'"]),
    ("bad float", "--lr fast", {}, ["--lr", "number", "'fast'"]),
    ("fractional int", "--batch-size 2.5", {}, ["--batch-size", "whole number"]),
    ("negative lr", "--lr -0.1", {}, ["--lr must be greater than 0"]),
    ("zero epochs", "--epochs 0", {}, ["--epochs must be at least 1"]),
    ("val split too big", "--val-split 1.5", {}, ["--val-split must be at most 1.0"]),
    ("unknown optimizer", "--optimizer adma", {}, ["'adma' is not one of", "Did you mean 'adam'"]),
    ("unknown loss", "--loss hinge", {}, ["--loss 'hinge' is not one of"]),
    ("unknown display", "--display fancy", {}, ["--display 'fancy'"]),
    ("missing model", "--model net", {}, ["--model 'net' names nothing"]),
    ("model of wrong kind", "--model other", {"other": [1, 2]}, ["'other' is a list, not a flax.nnx.Module"]),
    ("missing data", "--data mydata", {}, ["--data 'mydata' names nothing", "digits"]),
    ("data of wrong kind", "--data other", {"other": 42}, ["Cannot train on an int", "(x, y) tuple"]),
    ("a bare array as data", "--data other", {"other": X}, ["one array of shape (64, 8, 8, 1)", "as (x, y)"]),
    ("input size mismatch", "--model other", {"other": "small_mlp"}, ["expects 32 input features",
                                                                      "shape (8, 8, 1) = 64", "in_features=64"]),
    ("labels out of range", "--data other", {"other": (X, Y + 5)}, ["labels range over [5, 14]", "10 classes"]),
    ("nan in inputs", "--data other", {"other": (np.where(np.arange(64)[:, None, None, None] == 7, np.nan, X), Y)},
     ["NaN or infinite", "first in example 7"]),
    ("empty split", "--data other", {"other": {"train": (X, Y), "test": (X[:0], Y[:0])}}, ["test split is empty"]),
    ("length mismatch", "--data other", {"other": (X, Y[:10])}, ["64 inputs but 10 labels"]),
    ("string inputs", "--data other", {"other": (np.array(["a"] * 64), Y)}, ["dtype <U1", "numeric"]),
    ("batch bigger than data", "--batch-size 100", {}, ["--batch-size 100 is larger than the 64 training examples"]),
    ("unknown dataset", "--data other", {"other": "mnistt"}, ["mnistt", "mnist"]),
    ("labels beyond the model's outputs", "--model other", {"other": "mlp5"},
     ["labels range over [0, 9]", "model has 5 classes", "num_classes=10"]),
    ("wrong num_classes", "--model other --data ds", {"other": "mlp5", "ds": "dataset10"},
     ["outputs 5 values", "10 classes", "num_classes=10"]),
    ("val split on data with validation", "--val-split 0.2 --data other",
     {"other": {"train": (X, Y), "validation": (X, Y)}}, ["already has a validation split"]),
    ("bad quotes", "--model 'oops", {}, ["check the quotes"]),
    ("misspelt option", "--batchsize 8", {}, ["unrecognized arguments: --batchsize 8", "Did you mean --batch-size?"]),
    ("steps and epochs", "--steps 3 --epochs 2", {}, ["Give --steps or --epochs, not both"]),
    ("save-every without a checkpoint", "--save-every 2", {}, ["give --checkpoint DIR as well"]),
    ("a keyword as --out", "--out class", {}, ["--out must be a Python name (not a keyword), got 'class'"]),
    ("--out over the model", "--out model", {}, ["--out 'model' is also the --model", "e.g. --out run"]),
    ("--out over the data", "--out ds --data ds", {"ds": (X, Y)}, ["--out 'ds' is also the --data"]),
    ("--out over a module", "--out jl", {}, ["--out 'jl' would replace the module jl (jupyter_llm)"]),
    # labels that do not fit the loss or the model's outputs: caught before compiling, not deep in the traced step
    ("float class labels", "--data other", {"other": (X, Y.astype(np.float32))},
     ["floats of shape (64,)", "defaulted to mean squared error", "outputs 10 values", "y.astype(int)"]),
    ("labels of shape (N, 1)", "--data other", {"other": (X, Y[:, None])}, ["shape (64, 1)", "y.ravel()"]),
    ("one-hot labels too wide", "--data other", {"other": (X, np.eye(12, dtype=np.float32)[Y])},
     ["one-hot (or soft) over 12 classes", "outputs 10 values", "num_classes=12"]),
    ("mse on class labels", "--loss mse", {}, ["Mean squared error", "(10,)", "--loss cross_entropy"]),
    ("binary loss on 10 classes", "--loss binary_cross_entropy", {}, ["one output per label", "cross_entropy"]),
    ("loss of the wrong arity", "--loss lf", {"lf": lambda a: a}, ["The loss", "loss(outputs, labels)"]),
    ("validation shaped unlike train", "--data other", {"other": {"train": (X, Y), "validation": (X[:, :4], Y)}},
     ["validation inputs have shape (4, 8, 1)", "train inputs (8, 8, 1)"]),
    ("float test labels, integer train labels", "--data other",
     {"other": {"train": (X, Y), "test": (X, Y.astype(np.float32))}}, ["test labels are float32", "int"]),
    ("complex inputs", "--data other", {"other": (X.astype(np.complex64), Y)}, ["complex64 (complex numbers)"]),
    ("date inputs", "--data other", {"other": (np.zeros((64, 3), "datetime64[s]"), Y)}, ["datetime64[s] (dates)"]),
    ("integer model outputs", "--model other", {"other": "argmax_model"}, ["returns int32 outputs", "floating"]),
]


class ArgmaxModel(nnx.Module):
    """A model whose outputs are class indices, not scores: nothing to differentiate."""

    def __init__(self):
        self.inner = mlp()

    def __call__(self, x):
        return self.inner(x).argmax(-1)


def _resolve(ns):
    out = {}
    for k, v in ns.items():
        if not isinstance(v, str):
            pass
        elif v == "small_mlp":
            v = mlp(in_features=32)
        elif v == "mlp5":
            v = mlp(num_classes=5)
        elif v == "argmax_model":
            v = ArgmaxModel()
        elif v == "dataset10":
            v = jl.datasets.Dataset(train=(X, Y), num_classes=10)
        out[k] = v
    return out


@pytest.mark.parametrize("name,line,ns,expected", MAGIC_CASES, ids=[c[0] for c in MAGIC_CASES])
def test_magic_usage_errors(ipython, name, line, ns, expected):
    from IPython.core.error import UsageError

    ipython.user_ns.update(model=mlp(), data=(X, Y), **_resolve(ns))
    ipython.run_cell("%train --epochs 1 --display none")
    earlier_run = ipython.user_ns["run"]
    weights = params_of(ipython.user_ns["model"])
    result = ipython.run_cell(f"%train --display none {line}")
    assert isinstance(result.error_in_exec, UsageError), (name, result.error_in_exec)
    message = str(result.error_in_exec)
    for part in expected:
        assert part in message, (name, message)
    assert "\n" not in message.strip() or name == "unknown option"
    assert ipython.user_ns["run"] is earlier_run  # nothing rebound
    assert all(np.array_equal(a, b) for a, b in zip(weights, params_of(ipython.user_ns["model"])))


FIT_CASES = [
    (dict(epochs=-1), ConfigError), (dict(optimizer="rmsprop"), ConfigError), (dict(bogus=1), ConfigError),
    (dict(batch_size=0), ConfigError), (dict(display="gui"), ConfigError), (dict(seed=-3), ConfigError),
]


@pytest.mark.parametrize("options,error", FIT_CASES)
def test_fit_option_errors(options, error):
    with pytest.raises(error):
        jl.fit(mlp(), (X, Y), **{"display": "none", **options})


def test_fit_data_and_model_errors():
    with pytest.raises(ModelError, match="must be a flax.nnx.Module"):
        jl.fit("not a model", (X, Y))
    with pytest.raises(DataError, match="dict needs a 'train' entry"):
        jl.fit(mlp(), {"training": (X, Y)})
    with pytest.raises(DatasetNotFound, match="mnistt"):
        jl.fit(mlp(), "mnistt")
    with pytest.raises(ModelError, match="cannot be applied to the data"):
        class Broken(nnx.Module):
            def __init__(self):
                self.w = nnx.Param(np.zeros((3, 3), np.float32))

            def __call__(self, x):
                return x.reshape(x.shape[0], -1) @ self.w

        jl.fit(Broken(), (X, Y), display="none")


def test_unknown_fit_option_suggests_the_right_name():
    with pytest.raises(ConfigError, match="Did you mean 'batch_size'"):
        jl.fit(mlp(), (X, Y), batchsize=3)


def test_evaluate_and_predict_check_arrays_against_the_fit():
    """Arrays unlike the training data get one DataError, not a JAX traceback or a silent NaN loss."""
    run = jl.fit(mlp(), (X, Y), epochs=1, display="none", seed=0)
    with pytest.raises(DataError, match=r"labels range over \[20, 29\] but the model has 10 classes"):
        run.evaluate((X, Y + 20))  # was {'accuracy': 0.0, 'loss': nan}
    with pytest.raises(DataError, match=r"evaluation labels are float32 .* trained on int"):
        run.evaluate((X, Y.astype(np.float32)))
    with pytest.raises(DataError, match=r"predict inputs have shape \(4, 8, 1\) per example, but the model was "
                                        r"trained on \(8, 8, 1\)"):
        run.predict(X[:, :4])
    with pytest.raises(DataError, match="dtype <U1"):
        run.predict(np.array(["a", "b"]))
    assert run.predict(X[:3]).shape == (3, 10)  # what is right still works
    assert 0.0 <= run.evaluate((X, Y))["accuracy"] <= 1.0


def test_each_caller_reads_the_advice_in_its_own_idiom(ipython, tmp_path):
    """The same mistake: `jl.fit` callers read keywords (lr=, steps_per_dispatch=), the magic and the command line
    read flags (--lr, --steps-per-dispatch)."""
    from IPython.core.error import UsageError

    from jupyter_llm.options import in_keyword_idiom

    with pytest.raises(ConfigError) as caught:
        jl.fit(mlp(), (X, Y), lr=1e308, display="none")
    assert "lr=1e+308 is too large" in str(caught.value) and "--" not in str(caught.value)
    jl.fit(mlp(), (X, Y), epochs=1, display="none", checkpoint=str(tmp_path / "ck"))
    with pytest.raises(ConfigError, match=r"Add resume=True to continue that fit, or pass a new checkpoint "):
        jl.fit(mlp(), (X, Y), epochs=1, display="none", checkpoint=str(tmp_path / "ck"))
    ipython.user_ns.update(model=mlp(), data=(X, Y))
    result = ipython.run_cell("%train --display none --lr 1e308")
    assert isinstance(result.error_in_exec, UsageError) and "--lr 1e+308 is too large" in str(result.error_in_exec)
    # the rewording itself: values kept, switches named, other dashes left alone
    assert in_keyword_idiom("Add --resume to continue, or use --steps-per-dispatch 4 (--keep-best is a switch); "
                            "a well-known x--y stays") == ("Add resume=True to continue, or use steps_per_dispatch=4 "
                                                            "(keep_best is a switch); a well-known x--y stays")
    assert in_keyword_idiom("--schedule 'linear' is not one of; --nonsense stays") == \
        "schedule='linear' is not one of; --nonsense stays"
