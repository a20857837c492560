"""A fit holds the user's arrays once (issue #19): a validation split carved by val_split is row indices, not copied
rows, and a finished Run keeps no device copy of its data. A 1 GiB float32 dataset used to peak at +1.7 GB during
the fit and leave 1.3 GB behind it."""

import gc
import json
import os
import subprocess
import sys

import jax
import numpy as np
import pytest
from flax import nnx

import jupyter_llm as jl
from tests.helpers import mlp

# In a fresh process: resident-set growth over the set just before a fit, the fit's compiled steps already made by
# an identical first fit (deleted), so that only what the data costs is left: the peak during the fit (VmHWM, reset
# through clear_refs), what the finished Run holds, and what is held once `run` is bound to a re-run's Run.
CHILD = """
import gc, json, sys
import numpy as np
from flax import nnx
import jupyter_llm as jl
from jupyter_llm.models import MLP

def status(key):
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) * 1024 for line in f if line.startswith(key + ":"))

def fit(x, y):
    model = MLP(in_features=x.shape[1], hidden=[32], num_classes=10, rngs=nnx.Rngs(0))
    return jl.fit(model, (x, y), val_split=0.2, epochs=1, batch_size=2048, display="none")

rng = np.random.default_rng(0)
x = rng.random((int(sys.argv[1]), 256), dtype=np.float32)
y = rng.integers(0, 10, len(x)).astype(np.int32)
run = fit(x, y)
del run
gc.collect()
with open("/proc/self/clear_refs", "w") as f:
    f.write("5")
before = status("VmRSS")
run = fit(x, y)
peak = status("VmHWM")
gc.collect()
held = status("VmRSS")
run = fit(x, y)
gc.collect()
print(json.dumps({"data": x.nbytes + y.nbytes, "peak": peak - before, "held": held - before,
                  "rerun": status("VmRSS") - before}))
"""


@pytest.mark.skipif(jax.devices()[0].platform != "cpu" or not os.path.exists("/proc/self/clear_refs"),
                    reason="the host memory of a CPU fit, read from Linux's /proc")
def test_a_val_split_fit_holds_the_users_arrays_once():
    out = subprocess.run([sys.executable, "-c", CHILD, str(2**18)], capture_output=True, text=True, check=True,
                         env=dict(os.environ, JUPYTER_LLM_COMPILE_CACHE="0"))
    got = json.loads(out.stdout.strip().splitlines()[-1])  # 256 MiB of float32 inputs
    data = got["data"]
    # copied splits held 1.0x the data after the fit (train and validation rows) and peaked at 1.6x during it
    assert got["held"] < 0.25 * data, got
    assert got["rerun"] < 0.25 * data, got  # the replaced Run's buffers went with it
    assert got["peak"] < 0.5 * data, got


def live_bytes() -> int:
    gc.collect()
    return sum(a.nbytes for a in jax.live_arrays())


def device_bytes(*trees) -> int:
    arrays = {id(a): a for a in jax.tree.leaves(trees) if isinstance(a, jax.Array)}
    return sum(a.nbytes for a in arrays.values())


def test_a_finished_run_keeps_no_device_copy_of_its_data():
    """Device arrays left by a fit: the trained weights and the optimizer state, not the data (on an accelerator a
    copy of it; on a CPU the splits' row indices and the small arrays placed by copying)."""
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(8192, 64)).astype(np.float32), rng.integers(0, 10, 8192).astype(np.int32)
    before = live_bytes()
    model = mlp()
    run = jl.fit(model, (x, y), val_split=0.2, epochs=1, batch_size=256, seed=1, display="none")
    weights = device_bytes(run.state, nnx.state(model))  # the trained model, its optimizer's state
    assert live_bytes() - before <= weights + 4096 < x.nbytes // 8
    # the splits are still there to evaluate: placed for the call, let go after it
    assert run.evaluate("validation")["loss"] == pytest.approx(run.history["val_loss"][-1], rel=1e-6)
    assert set(run.evaluate("train")) == {"loss", "accuracy"}
    assert live_bytes() - before <= weights + 4096


def test_a_carved_split_is_the_rows_copying_chose_and_reads_as_a_pair():
    """The same rows as when val_split copied them (so the same histories), and `x, y = split` still works."""
    from jupyter_llm.data.coerce import as_dataset

    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(101, 3)).astype(np.float32), rng.integers(0, 4, 101).astype(np.int32)
    ds = as_dataset((x, y), val_split=0.2, seed=7)
    order = np.random.default_rng(7).permutation(101)
    for split, rows in ((ds.train, order[20:]), (ds.validation, order[:20])):
        assert split.x is x and split.y is y  # the user's arrays, not copies
        xs, ys = split
        np.testing.assert_array_equal(xs, x[rows])
        np.testing.assert_array_equal(ys, y[rows])
    assert ds.sizes() == {"train": 81, "validation": 20, "test": 0} and ds.input_shape == (3,)


def test_the_nan_check_counts_block_by_block(monkeypatch):
    from jupyter_llm.data import coerce

    x = np.ones((50, 2, 3), np.float32)
    x[17, 1, 2] = x[18, 0, 0] = np.nan
    x[41, 0, 1] = np.inf
    whole = coerce._nonfinite(x)
    monkeypatch.setattr(coerce, "FINITE_CHECK_BYTES", 30)  # 5 rows a block: the first bad row in the 4th
    assert coerce._nonfinite(x) == whole == (3, 17)
