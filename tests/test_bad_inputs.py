"""Inputs that used to train silently wrong, end deep in JAX, or raise a bare TypeError/OverflowError now get one
clear message before any training work, through the entry points users call: `jl.fit`, `%train` and the command line.

Covered: wide integer labels checked before the int32 cast, a model with no parameters, float options beyond float32,
NumPy numbers as options, seeds beyond JAX's range (and the command line's one-line errors), malformed data-dict
splits, `jl.datasets.text` options, BPE vocabulary sizes and bool labels.
"""

import re
import subprocess
import sys

import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import jupyter_llm as jl
from jupyter_llm import cli
from jupyter_llm.errors import ConfigError, DataError, ModelError
from tests.helpers import mlp, params_of

X = np.random.default_rng(0).random((32, 4), dtype=np.float32)
Y = np.arange(32) % 3
CORPUS = "the quick brown fox jumps over the lazy dog. " * 30


def small_mlp():
    return mlp(in_features=4, hidden=(8,), num_classes=3)


def fit(data=(X, Y), model=None, **options):
    return jl.fit(model or small_mlp(), data, **{"epochs": 1, "batch_size": 8, "display": "none", **options})


def magic_error(ipython, line: str, **ns) -> str:
    """The UsageError message of `%train line`, after checking that the earlier run and the weights are intact."""
    from IPython.core.error import UsageError

    ipython.user_ns.update(model=small_mlp(), data=(X, Y), **ns)
    assert ipython.run_cell("%train --epochs 1 --batch-size 8 --display none").success
    earlier_run, weights = ipython.user_ns["run"], params_of(ipython.user_ns["model"])
    result = ipython.run_cell(f"%train --epochs 1 --batch-size 8 --display none {line}")
    assert isinstance(result.error_in_exec, UsageError), result.error_in_exec
    assert ipython.user_ns["run"] is earlier_run
    assert all(np.array_equal(a, b) for a, b in zip(weights, params_of(ipython.user_ns["model"])))
    message = str(result.error_in_exec)
    assert "\n" not in message.strip()
    return message


def command_line(*args):
    return subprocess.run([sys.executable, "-m", "jupyter_llm", "train", "--model", "mlp", "--data", "digits",
                           "--epochs", "1", "--display", "none", *args], capture_output=True, text=True, timeout=300)


# -- 1. integer labels are range-checked in their own dtype, before the cast to int32 -------------------------------
@pytest.mark.parametrize("labels,lo", [
    (Y.astype(np.int64) + 2**32, "4294967296"),
    (Y.astype(np.uint64) + np.uint64(2**63), "9223372036854775808"),
    (Y.astype(np.int64) - 2**32, "-4294967296"),
], ids=["int64 2**32+y", "uint64 2**63+y", "int64 -2**32+y"])
def test_wide_integer_labels_are_refused_not_wrapped(labels, lo):
    with pytest.raises(DataError, match=rf"train labels range over \[{lo}, .*32-bit integers.*np\.unique"):
        fit((X, labels))


def test_wide_integer_labels_in_the_magic(ipython):
    message = magic_error(ipython, "--data other", other=(X, Y.astype(np.int64) + 2**32))
    assert "labels range over [4294967296, 4294967298]" in message and "0..k-1" in message


def test_wide_values_in_inputs_are_refused():
    with pytest.raises(DataError, match=r"train inputs range over .*32-bit integers.*astype\(np.float32\)"):
        fit((X.astype(np.int64) + 2**40, Y))
    with pytest.raises(DataError, match=r"validation inputs range over \[.*1e\+300\], beyond float32"):
        fit({"train": (X, Y), "validation": (np.full((4, 4), 1e300), Y[:4])})


# -- 2. a model with no parameters ---------------------------------------------------------------------------------
class NoParams(nnx.Module):
    """Outputs of the right shape, but nothing to train."""

    def __call__(self, x):
        return jnp.zeros((x.shape[0], 3)) + 0.0 * x[:, :1]


class PlainArrayWeights(nnx.Module):
    """Weights as a plain array attribute, not an nnx.Param: not trained."""

    def __init__(self):
        self.w = jnp.ones((4, 3))

    def __call__(self, x):
        return x @ self.w


@pytest.mark.parametrize("model", [NoParams, PlainArrayWeights])
def test_model_without_parameters_is_refused(model):
    with pytest.raises(ModelError, match=rf"{model.__name__} has no trainable parameters \(no nnx.Param\)"):
        fit(model=model())


def test_model_without_parameters_in_the_magic(ipython):
    assert "NoParams has no trainable parameters" in magic_error(ipython, "--model other", other=NoParams())


# -- 3. float options hold in float32 ------------------------------------------------------------------------------
@pytest.mark.parametrize("options,expected", [
    (dict(lr=1e308), "lr=1e+308 is too large for float32"),
    (dict(lr=1e39), "lr=1e+39 is too large for float32"),
    (dict(weight_decay=1e308), "weight_decay=1e+308 is too large"),
    (dict(clip=1e39), "clip=1e+39 is too large"),
    (dict(min_lr=1e39), "min_lr=1e+39 is too large"),
    (dict(lr=1e-50), "lr=1e-50 is too small for float32"),
    (dict(clip=1e-45), "clip=1e-45 is too small"),
    (dict(decay_factor=1e-50), "decay_factor=1e-50 is too small"),
], ids=["lr 1e308", "lr 1e39", "weight_decay 1e308", "clip 1e39", "min_lr 1e39", "lr 1e-50", "clip 1e-45",
        "decay_factor 1e-50"])
def test_float_options_beyond_float32_are_refused(options, expected):
    with pytest.raises(ConfigError, match=re.escape(expected)):
        fit(**options)


def test_float_options_beyond_float32_in_the_magic(ipython):
    assert "--lr 1e+308 is too large for float32" in magic_error(ipython, "--lr 1e308")
    assert "--lr 1e-50 is too small for float32" in magic_error(ipython, "--lr 1e-50")


# -- 4. NumPy numbers are numbers -----------------------------------------------------------------------------------
def test_numpy_integers_and_floats_are_accepted_as_options():
    run = fit(epochs=np.int64(1), batch_size=np.int32(8), seed=np.uint64(3), keep=np.int16(2), lr=np.float32(0.01),
              weight_decay=np.float64(0.0), clip=np.float32(1.0))
    assert run.reason == "completed"
    assert type(run.config.epochs) is int and type(run.config.batch_size) is int and type(run.config.lr) is float
    run = jl.fit(small_mlp(), (X, Y), steps=np.int64(2), batch_size=8, eval_every=np.int8(1), display="none")
    assert run.step == 2
    for flag in (True, np.bool_(True)):
        with pytest.raises(ConfigError, match="epochs must be a whole number"):
            fit(epochs=flag)


def test_numpy_fractions_in_text_classification(tmp_path):
    path = tmp_path / "texts.csv"
    path.write_text("text,label\n" + "".join(f"text number {i},{i % 2}\n" for i in range(40)))
    ds = jl.datasets.text_classification(path, val_fraction=np.float32(0.25), test_fraction=np.float32(0.25))
    assert ds.sizes()["validation"] == 10


# -- 5. seeds JAX cannot take, and the command line's errors -------------------------------------------------------
@pytest.mark.parametrize("seed", [2**64, 2**63])
def test_seed_beyond_jax_range_is_refused(seed):
    with pytest.raises(ConfigError, match=rf"seed must be at most 9223372036854775807 .*got {seed}"):
        fit(seed=seed)


def test_seed_in_the_magic(ipython):
    assert "--seed must be at most 9223372036854775807" in magic_error(ipython, "--seed 18446744073709551616")
    ipython.user_ns.update(model=small_mlp(), data=(X, Y))
    assert ipython.run_cell("%train --epochs 1 --batch-size 8 --display none --seed 9223372036854775807").success
    assert ipython.user_ns["run"].config.seed == 2**63 - 1  # read exactly, not through a float (2**63)


@pytest.mark.parametrize("args,expected", [
    (["--seed", "18446744073709551616"], "error: --seed must be at most 9223372036854775807"),
    (["--lr", "1e308"], "error: --lr 1e+308 is too large for float32"),
], ids=["seed", "lr"])
def test_command_line_refuses_with_one_line(args, expected):
    proc = command_line(*args)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.startswith(expected) and len(proc.stderr.strip().splitlines()) == 1, proc.stderr


def test_command_line_prints_every_library_error_on_one_line(monkeypatch, capsys):
    def fails(argv):
        raise DataError("The data is wrong\n  in two ways.")

    monkeypatch.setattr(cli, "train", fails)
    assert cli.main(["train", "--data", "digits"]) == 2
    assert capsys.readouterr().err == "error: The data is wrong in two ways.\n"


# -- 6. splits of a data dict --------------------------------------------------------------------------------------
@pytest.mark.parametrize("data,expected", [
    ({"train": None}, "The 'train' entry of the data dict is None; a split must be an (x, y) pair"),
    ({"train": 5}, "The train split must be an (x, y) pair of arrays (inputs and labels), got an int."),
    ({"train": (X,)}, "got a tuple of 1 item."),
    ({"train": [X, Y, Y]}, "got a list of 3 items."),
    ({"train": (X, Y), "validation": None}, "The 'validation' entry of the data dict is None"),
    ({"train": (X, Y), "test": None}, "or leave the 'test' key out"),
    (jl.datasets.Dataset(train=None), "The train split must be an (x, y) pair of arrays (inputs and labels), got None"),
], ids=["train None", "train 5", "train (x,)", "train [x, y, y]", "validation None", "test None", "Dataset None"])
def test_malformed_splits_are_refused(data, expected):
    with pytest.raises(DataError) as info:
        fit(data)
    assert expected in str(info.value)


def test_malformed_split_in_the_magic(ipython):
    assert "'train' entry of the data dict is None" in magic_error(ipython, "--data other", other={"train": None})


# -- 7. numeric options of jl.datasets.text ------------------------------------------------------------------------
@pytest.mark.parametrize("options,expected", [
    (dict(block_size="8"), "block_size must be a positive whole number (tokens per training window), got '8'."),
    (dict(block_size=2.5), "block_size must be a positive whole number (tokens per training window), got 2.5."),
    (dict(block_size=True), "block_size must be a positive whole number"),
    (dict(val_fraction="0.1"), "val_fraction must be a number in [0, 1)"),
    (dict(val_fraction=None), "val_fraction must be a number in [0, 1)"),
], ids=["block_size '8'", "block_size 2.5", "block_size True", "val_fraction '0.1'", "val_fraction None"])
def test_text_options_are_checked(options, expected):
    with pytest.raises(ConfigError) as info:
        jl.datasets.text(CORPUS, **options)
    assert expected in str(info.value)


def test_text_accepts_whole_numbers_of_any_kind():
    for block_size in (np.int64(8), 8.0):
        corpus = jl.datasets.text(CORPUS, block_size=block_size, val_fraction=np.float32(0.1))
        assert type(corpus.block_size) is int and corpus.block_size == 8


# -- 8. BPE vocabulary sizes ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("vocab_size,expected", [
    (-5, "vocab_size must be at least 256 for byte-level BPE, got -5"),
    (1, "vocab_size must be at least 256 for byte-level BPE, got 1"),
    (0, "got 0"),
    (255, "got 255"),
    ("300", "vocab_size must be a whole number (the BPE vocabulary size, at least 256), got '300'"),
    (2**20 + 1, "vocab_size must be at most 1048576"),
], ids=["-5", "1", "0", "255", "'300'", "2**20+1"])
def test_bpe_vocab_size_it_cannot_honour_is_refused(vocab_size, expected):
    with pytest.raises(ConfigError) as info:
        jl.datasets.text(CORPUS, tokenizer="bpe", vocab_size=vocab_size, block_size=8)
    assert expected in str(info.value)


def test_bpe_minimum_is_the_byte_alphabet():
    """256 is honoured exactly (no merges); one less was silently raised to 256."""
    assert jl.datasets.text(CORPUS, tokenizer="bpe", vocab_size=np.int64(256), block_size=8).vocab_size == 256
    with pytest.raises(ConfigError, match="at least 256"):
        jl.datasets.text(CORPUS, tokenizer="bpe", vocab_size=np.int64(255), block_size=8)


def test_bpe_max_vocab_of_text_classification(tmp_path):
    path = tmp_path / "texts.csv"
    path.write_text("text,label\n" + "".join(f"text number {i},{i % 2}\n" for i in range(40)))
    with pytest.raises(ConfigError, match="max_vocab must be at least 256 for byte-level BPE, got 100"):
        jl.datasets.text_classification(path, tokenizer="bpe", max_vocab=100)


# -- 9. bool labels are called bool --------------------------------------------------------------------------------
def test_bool_labels_are_called_bool():
    with pytest.raises(DataError) as info:
        fit((X, Y > 0))
    message = str(info.value)
    assert "The labels are bool of shape (32,)" in message and "y.astype(int)" in message
    assert "labels are floats" not in message
    with pytest.raises(DataError, match=r"the labels are bool of shape \(\) per example.*y.astype\(int\)"):
        fit((X, Y > 0), loss="cross_entropy")


def test_bool_labels_in_the_magic(ipython):
    message = magic_error(ipython, "--data other", other=(X, Y > 0))
    assert "labels are bool" in message and "y.astype(int)" in message


# -- neighbours outside jl.fit: the sampling seed of %generate and the range test's learning rates -------------------
@pytest.mark.parametrize("seed", [2**64, -1, 1.5])
def test_generate_seed_beyond_jax_range_is_refused(seed):
    from jupyter_llm.models import GPT
    from jupyter_llm.models.generate import generate

    model = GPT.from_preset("gpt-char-tiny", vocab_size=11, rngs=nnx.Rngs(0))
    with pytest.raises(ConfigError, match=r"seed must be a whole number from 0 to 9223372036854775807"):
        generate(model, np.array([1, 2]), 3, seed=seed)


@pytest.mark.parametrize("options,expected", [
    ({"min_lr": 1e-50}, "lr_find's min_lr 1e-50 is too small for float32"),
    ({"max_lr": 1e39}, "lr_find's max_lr 1e+39 is too large for float32"),
])
def test_lr_find_rates_beyond_float32_are_refused(options, expected):
    model = small_mlp()
    before = params_of(model)
    with pytest.raises(ConfigError, match=re.escape(expected)):
        jl.lr_find(model, (X, Y), steps=5, **options)
    assert all(np.array_equal(a, b) for a, b in zip(before, params_of(model)))
