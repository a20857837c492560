"""The benchmark scripts run (tiny sizes, one process per script) and print one table; their numbers are not checked.

The benchmarks themselves are not part of the test suite: `python benchmarks/run.py --quick` (or full mode) measures.
Keras and PyTorch are optional here: without them their reference columns read "not installed".
"""

import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BENCH = os.path.join(ROOT, "benchmarks")
WORKLOADS = ("matmul f32", "MLP b32: jl.fit vs hand scan", "MLP b32: jl.fit vs Keras", "CNN b32: jl.models.CNN vs",
             "CNN held-out accuracy", "display overhead b32:", "display overhead b32, background fit:",
             "background fit vs foreground", "re-run start", "peak RSS: jl.fit vs hand jit", "GPT char: jl.fit vs")


@pytest.fixture
def bench_path(monkeypatch):
    monkeypatch.syspath_prepend(BENCH)


def test_run_all_tiny(tmp_path):
    saved = tmp_path / "latest.md"
    env = dict(os.environ, JL_BENCH_MODE="tiny", PYTHONUNBUFFERED="1")
    proc = subprocess.run([sys.executable, os.path.join(BENCH, "run.py"), "--save", str(saved)], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=600, check=False)
    assert proc.returncode == 0, proc.stderr[-4000:]
    out = proc.stdout
    assert "| workload | ours | reference |" in out
    assert "FAILED" not in out, out
    for name in WORKLOADS:
        assert name in out, f"{name!r} missing from the table:\n{out}"
    for line in ("- machine:", "- versions:", "- command: `python benchmarks/run.py --save", "tiny mode"):
        assert line in out
    assert saved.read_text().strip() == out.strip()


def test_table_statistics(bench_path):
    import common

    rows = [common.Row("fast", "s", [1.0, 2.0, 4.0], [2.0, 2.0, 2.0], "ref", target=common.Target("ratio", "<=", 1.0)),
            common.Row("slow", "s", [3.0], [1.0], "ref", target=common.Target("ours", "<", 1.0)),
            common.Row("alone", "MB", [5.0], None, "not installed")]
    assert rows[0].ratio == [0.5, 1.0, 2.0]
    text = common.table(rows)
    assert "| fast | 2.00 (1.00–4.00) s | ref: 2.00 (2.00–2.00) s | 1.00 (0.500–2.00) | yes (ratio ≤ 1) |" in text
    assert "| slow | 3.00 s | ref: 1.00 s | 3.00 | **no** (ours < 1) |" in text
    assert "| alone | 5.00 MB | not installed | n/a | — |" in text
    again = [common.Row.from_dict(r.to_dict()) for r in rows]
    assert common.table(again) == text


def test_modes(bench_path, monkeypatch):
    import common

    monkeypatch.setenv("JL_BENCH_MODE", "quick")
    args = common.parse_args("x", [])
    assert (args.mode, args.repeats) == ("quick", 3)
    assert common.parse_args("x", ["--tiny"]).mode == "tiny"
    assert common.pick(common.parse_args("x", ["--full"]), 1, 2, 3) == 3
    # each repeat starts the variants one further along, so none always runs first
    assert [common.rotated("abc", r) for r in range(4)] == [list("abc"), list("bca"), list("cab"), list("abc")]
    assert common.rotated([], 3) == []


def test_gpt_seeds_tiny():
    """The seed study (not part of run.py: it trains 2,000 iterations per seed) runs and prints its two rows: the
    loss over every validation window, and on 20 random batches of windows drawn at the seed."""
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    proc = subprocess.run([sys.executable, os.path.join(BENCH, "gpt_seeds.py"), "--tiny"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=600, check=False)
    assert proc.returncode == 0, proc.stderr[-4000:]
    for row in ("every window", "20 random batches"):
        assert f"| GPT char val loss @20, 1 seed, {row}: jl.fit vs PyTorch |" in proc.stdout, proc.stdout


def test_gpt_parts_tiny():
    """The step decomposition (not part of run.py) runs every variant and prints one row each against the full
    step."""
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    proc = subprocess.run([sys.executable, os.path.join(BENCH, "gpt_parts.py"), "--tiny"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=600, check=False)
    assert proc.returncode == 0, proc.stderr[-4000:]
    for name in ("GELU -> identity", "LayerNorm -> identity", "attention core -> q+k+v", "matmul skeleton (all three)",
                 "optimizer -> SGD", "forward only"):
        assert f"| GPT step: {name} |" in proc.stdout and "full step: " in proc.stdout, proc.stdout


FAKE_TRAIN = """import sys
args = dict(a[2:].split("=", 1) for a in sys.argv[2:])
n = int(args["max_iters"])
assert sys.argv[1] == "config/train_shakespeare_char.py" and args["device"] == "cpu" and args["compile"] == "False"
for it in range(n + 1):
    if it % 250 == 0 or it == n:
        print(f"step {it}: train loss 1.9, val loss {2.0 - it / 10000:.4f}")
    print(f"iter {it}: loss 2.5, time {30.0 + (100 if it == 0 else it % 3):.2f}ms, mfu 1.2%")
"""


def fake_nanogpt(root):
    """A stand-in for a nanoGPT checkout: a train.py printing lines in nanoGPT's documented format, and a
    prepare.py that fails if the text it would download is not there."""
    data = root / "data" / "shakespeare_char"
    data.mkdir(parents=True)
    (root / "config").mkdir()
    (root / "train.py").write_text(FAKE_TRAIN)
    (data / "prepare.py").write_text("import os\nassert os.path.getsize('input.txt') > 1000\n"
                                     "for f in ('train.bin', 'val.bin', 'meta.pkl'):\n    open(f, 'w').close()\n")
    return root


def test_nanogpt_parse_and_run(bench_path, tmp_path):
    """--nanogpt DIR: nanoGPT's printed iteration times and val losses are parsed; its data step finds the local
    text in place of the download; the row compares its median iteration time with jl.fit's."""
    import types

    import gpt
    import gpt_torch

    log = "iter 0: loss 4.2, time 900.00ms, mfu -100.00%\niter 1: loss 3.9, time 31.00ms, mfu 1.2%\n" \
          "step 250: train loss 1.9, val loss 2.0\niter 2: loss 3.1, time 29.50ms, mfu 1.3%\n"
    parsed = gpt.parse_nanogpt(log, warmup=1)
    assert parsed == {"ms_per_iter": 30.25, "iters": 2, "val_loss": {250: 2.0}}
    checkout = fake_nanogpt(tmp_path / "nanoGPT")
    corpus = gpt_torch.find_corpus()
    if corpus is None:
        pytest.skip("tinyshakespeare.txt not found")
    res = gpt.nanogpt_run(str(checkout), 300, 1, corpus, warmup=2)
    assert (checkout / "data" / "shakespeare_char" / "input.txt").exists()
    assert res["iters"] == 299 and res["val_loss"] == {0: 2.0, 250: 1.975, 300: 1.97}
    args = types.SimpleNamespace(nanogpt=str(checkout), torch_threads=1)
    rows = gpt.nanogpt_rows(args, [15.0, 16.0], 2, 4, 300, corpus, fit_val=1.9)
    assert rows[0].reference == [res["ms_per_iter"]] and rows[0].ours == [15.5]
    assert rows[1].reference == [1.97] and "step 300" in rows[1].note
    skipped = gpt.nanogpt_rows(types.SimpleNamespace(nanogpt=None), [15.0], 2, 4, 0, corpus)
    assert skipped[0].ours == [] and "--nanogpt DIR" in skipped[0].note


def test_lora_tiny(tmp_path):
    """The LoRA benchmark (not part of run.py) runs on a tiny GPT-2: one row per configuration, the comparison rows,
    and its checks pass (same step-0 loss on both sides, losses fall). PEFT is a benchmark-only extra: without it
    (as in CI) its configuration is skipped, said so, and the rest runs."""
    import importlib.util

    saved = tmp_path / "lora.md"
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    proc = subprocess.run([sys.executable, os.path.join(BENCH, "lora.py"), "--tiny", "--save", str(saved)], cwd=ROOT,
                          env=env, capture_output=True, text=True, timeout=600, check=False)
    assert proc.returncode == 0, proc.stderr[-4000:] + proc.stdout
    out = proc.stdout
    assert "| configuration | ms/step (median, min–max) | peak RSS MB |" in out
    for name in ("jl.fit full", "jl.fit LoRA", "PyTorch full"):
        assert f"| {name} | " in out and f"| {name} | not run |" not in out, out
    for row in ("GPT-2 LoRA step: jl.fit vs PEFT", "GPT-2 step: jl.fit LoRA vs jl.fit full",
                "peak RSS freed by LoRA (full − LoRA) vs full's optimizer state", "peak RSS: jl.fit LoRA vs PEFT LoRA"):
        assert f"| {row} | " in out, out
    assert "step-0 loss, jl.fit full vs PyTorch full" in out and "FAILED" not in out, out
    if importlib.util.find_spec("peft") is None:
        assert "| PEFT LoRA | not run |" in out and "PEFT not installed" in out and "skipped" in proc.stderr
    else:
        assert "step-0 loss, jl.fit LoRA vs PEFT LoRA" in out and "| PEFT LoRA | not run |" not in out
    assert saved.read_text().strip() == out.strip()
