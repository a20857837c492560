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
WORKLOADS = ("matmul f32", "MLP b32: jl.fit vs hand scan", "MLP b32: jl.fit vs Keras", "display overhead",
             "re-run start", "peak RSS: jl.fit vs hand jit", "GPT char: jl.fit vs")


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
    loss over every validation window, and on the windows of nanoGPT's own 20-batch estimate."""
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    proc = subprocess.run([sys.executable, os.path.join(BENCH, "gpt_seeds.py"), "--tiny"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=600, check=False)
    assert proc.returncode == 0, proc.stderr[-4000:]
    for row in ("every window", "nanoGPT's 20 batches"):
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
