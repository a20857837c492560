"""Data-parallel fits on 8 simulated CPU devices give the same history as on one device.

Each side runs in its own process (the device count is fixed when JAX starts): one with
`XLA_FLAGS=--xla_force_host_platform_device_count=8`, one without. The batch is sharded over the "data" axis and
XLA inserts the gradient all-reduce, so the only differences are float reduction order: the MLP agrees to 1e-4
throughout; the GPT's first steps do too, and later ones are held to the same course (see the GPT test).
"""

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

SCRIPT = textwrap.dedent("""
    import json, os, sys
    import jax
    import numpy as np
    from flax import nnx
    import jupyter_llm as jl
    from jupyter_llm import events as ev
    from jupyter_llm.fitting import program

    class Devices:
        def on(self, event):
            if isinstance(event, ev.FitStart):
                self.text = event.devices

    out = {"device_count": jax.device_count()}
    seen = Devices()
    digits = jl.datasets.load("digits")
    model = jl.models.MLP(in_features=64, hidden=[32], num_classes=10, rngs=nnx.Rngs(0))
    run = jl.fit(model, digits, epochs=4, batch_size=64, lr=1e-2, val_split=0.2, seed=0, display="none", sinks=[seen])
    out["mlp"] = {"devices": seen.text, "history": run.history, "test": run.evaluate("test")}
    hlo = [p.executables["train"].as_text() for p in program.COMPILED.values()]
    out["mlp"]["all_reduce"] = any("all-reduce" in h for h in hlo)

    path = sys.argv[1]
    corpus = jl.datasets.text(path, tokenizer="char", block_size=32, val_fraction=0.1)
    gpt = jl.models.GPT(vocab_size=corpus.vocab_size, block_size=32, n_layer=2, n_head=2, n_embd=32,
                        bias=False, rngs=nnx.Rngs(0))
    seen = Devices()
    run = jl.fit(gpt, corpus, steps=40, eval_every=5, eval_batches=4, batch_size=16, lr=3e-3, seed=0,
                 display="none", sinks=[seen])
    out["gpt"] = {"devices": seen.text, "history": run.history}
    print("RESULT", json.dumps(out))
""")


def show(one, eight):
    for task in ("mlp", "gpt"):
        for key in one[task]["history"]:
            print(task, key, one[task]["history"][key], eight[task]["history"][key])


def fit_in_process(tmp_path, devices: int | None) -> dict:
    corpus = tmp_path / "corpus.txt"
    if not corpus.exists():
        here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        text = open(os.path.join(here, "notebooks", "data", "tinyshakespeare.txt"), encoding="utf-8").read()
        corpus.write_text(text[:60_000], encoding="utf-8")
    env = dict(os.environ, JUPYTER_LLM_COMPILE_CACHE="0")
    flags = [f for f in env.get("XLA_FLAGS", "").split() if "device_count" not in f]
    if devices:
        flags.append(f"--xla_force_host_platform_device_count={devices}")
    env["XLA_FLAGS"] = " ".join(flags)
    proc = subprocess.run([sys.executable, "-c", SCRIPT, str(corpus)], capture_output=True, text=True, env=env,
                          timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    line = next(ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT "))
    return json.loads(line[len("RESULT "):])


@pytest.fixture(scope="module")
def both(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("multi_device")
    one, eight = fit_in_process(tmp, None), fit_in_process(tmp, 8)
    show(one, eight)  # in the log of a failure
    return one, eight


def test_the_batch_is_split_over_eight_devices(both):
    one, eight = both
    assert one["device_count"] == 1 and eight["device_count"] == 8
    assert one["mlp"]["devices"] == "cpu x 1"
    assert eight["mlp"]["devices"] == "cpu x 8"  # 64 divides over all 8
    assert eight["gpt"]["devices"].startswith("cpu x 8")  # 16 windows: 2 per device
    assert eight["mlp"]["all_reduce"] and not one["mlp"]["all_reduce"]  # gradients are summed across devices


def test_eight_devices_train_an_mlp_like_one(both):
    one, eight = both
    h1, h8 = one["mlp"]["history"], eight["mlp"]["history"]
    assert set(h1) == set(h8)
    for key in h1:  # the same fit up to float reduction order
        np.testing.assert_allclose(h8[key], h1[key], rtol=1e-4, atol=1e-6, err_msg=key)
    assert h8["loss"][-1] < h8["loss"][0] / 4  # it learns, not merely agrees
    assert eight["mlp"]["test"]["accuracy"] == pytest.approx(one["mlp"]["test"]["accuracy"], abs=0.01)
    assert eight["mlp"]["test"]["accuracy"] > 0.85


def test_eight_devices_train_a_gpt_like_one(both):
    one, eight = both
    h1, h8 = one["gpt"]["history"], eight["gpt"]["history"]
    assert set(h1) == set(h8)
    # The first steps agree to float precision: same windows, same weights, same updates ...
    for key in ("loss", "grad_norm", "val_loss"):
        np.testing.assert_allclose(h8[key][:2], h1[key][:2], rtol=1e-4, err_msg=key)
    # ... later ones drift apart (Adam turns reduction-order noise in tiny gradients into full-size steps), so the
    # rest is held to the same course, not the same digits.
    np.testing.assert_allclose(h8["val_loss"], h1["val_loss"], rtol=0.05)
    assert h8["val_loss"][-1] < h8["val_loss"][0] - 0.3 and h1["val_loss"][-1] < h1["val_loss"][0] - 0.3
