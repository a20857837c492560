"""The command line and the four entry points: %%train, %train, jl.fit and `python -m jupyter_llm train` give
the same history for the same seed."""

import json
import subprocess
import sys
from pathlib import Path

from flax import nnx

import jupyter_llm as jl
from jupyter_llm import cli

ROOT = Path(__file__).resolve().parent.parent
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


def test_the_usage_and_train_help_speak_to_a_shell(capsys):
    from jupyter_llm.models.gpt import PRESETS

    assert cli.main(["--help"]) == 0
    usage = capsys.readouterr().out
    assert set(cli.GPT_PRESETS) == set(PRESETS) and all(p in usage for p in PRESETS)
    assert "generate FOLDER" in usage and "evaluate FOLDER" in usage
    assert cli.main(["train", "--help"]) == 0
    text = " ".join(capsys.readouterr().out.split())
    for notebook_only in ("--out", "--cluster", "--background", "namespace", "notebook", "a Run"):
        assert notebook_only not in text, notebook_only
    assert "--tokenizer" in text and "gpt-char-tiny" in text and "optimizer: sgd, momentum, adam or adamw" in text


def test_generate_and_evaluate_a_saved_run(tmp_path, capsys):
    corpus = tmp_path / "poem.txt"
    corpus.write_text((ROOT / "notebooks" / "data" / "tinyshakespeare.txt").read_text(encoding="utf-8")[:20_000])
    folder = str(tmp_path / "ckpt")
    assert cli.main(["train", "--model", "gpt-char-tiny", "--data", str(corpus), "--steps", "4", "--batch-size", "2",
                     "--block-size", "16", "--eval-batches", "2", "--checkpoint", folder, "--display", "none"]) == 0
    capsys.readouterr()
    assert cli.main(["generate", folder, "ROMEO:", "--tokens", "12", "--seed", "2"]) == 0
    printed = capsys.readouterr().out
    run = jl.load(folder)
    assert printed == "ROMEO:" + run.generate("ROMEO:", 12, temperature=0.8, seed=2) + "\n"
    assert cli.main(["evaluate", folder]) == 0  # the text file it was trained on, read again
    shown = json.loads(capsys.readouterr().out)
    expected = jl.load(folder, data=str(corpus)).evaluate("validation")
    assert shown == {"split": "validation", **{k: round(v, 6) for k, v in expected.items()}}
    for argv, message in ((["evaluate", str(tmp_path / "none")], "error: Cannot load"),
                          (["evaluate", folder, "--data", str(tmp_path)], "is a folder"),
                          (["generate", folder, "--tokenz", "3"], "Did you mean --tokens?")):
        assert cli.main(argv) == 2
        err = capsys.readouterr().err.strip()
        assert message in err and len(err.splitlines()) == 1, err
