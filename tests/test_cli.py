"""The command line and the four entry points: %%train, %train, jl.fit and `python -m jupyter_llm train` give
the same history for the same seed."""

import json
import subprocess
import sys

from flax import nnx

import jupyter_llm as jl
from jupyter_llm import cli

ARGS = ["--model", "mlp", "--data", "digits", "--epochs", "2", "--val-split", "0.2", "--seed", "1"]


def test_command_line_prints_progress_and_final_metrics():
    proc = subprocess.run([sys.executable, "-m", "jupyter_llm", "train", *ARGS], capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.strip().splitlines()
    assert any(line.startswith("epoch 2/2") for line in lines)
    final = json.loads(lines[-1])
    assert final["reason"] == "completed" and 0.5 < final["val_accuracy"] <= 1 and "test_accuracy" in final


def test_command_line_errors_exit_2_with_one_line():
    proc = subprocess.run([sys.executable, "-m", "jupyter_llm", "train", "--model", "transformer", "--data", "digits"],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2
    assert proc.stderr.strip().startswith("error: Unknown model 'transformer' for this data")
    assert len(proc.stderr.strip().splitlines()) == 1


def test_command_line_help_lists_options(capsys):
    assert cli.main(["train", "--help"]) == 0
    out = capsys.readouterr().out
    assert "--batch-size" in out and "--val-split" in out


def test_all_entry_points_agree(ipython):
    body = ("model = jl.models.MLP(in_features=64, hidden=[128], num_classes=10, rngs=nnx.Rngs(1))\n"
            "data = jl.datasets.load('digits')\n")
    line = "--epochs 2 --val-split 0.2 --seed 1 --display none"
    assert ipython.run_cell(f"%%train {line}\n{body}").success
    cell_history = ipython.user_ns["run"].history
    ipython.run_cell(body)
    assert ipython.run_cell(f"%train {line}").success
    line_history = ipython.user_ns["run"].history
    model = jl.models.MLP(in_features=64, hidden=[128], num_classes=10, rngs=nnx.Rngs(1))
    fit_history = jl.fit(model, "digits", epochs=2, val_split=0.2, seed=1, display="none").history
    cli_history = cli.train(ARGS + ["--display", "none"]).history
    assert cell_history == line_history == fit_history == cli_history
