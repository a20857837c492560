"""A saved notebook's outputs do not grow with the length of the fit: a 5,000-step %%train cell, executed by a real
kernel and saved with its widget state, is about the size of a 50-step one."""

import json

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")
pytest.importorskip("ipykernel")
pytest.importorskip("ipywidgets")

CELL = """%%train --steps {steps} --batch-size 8 --val-split 0.25 --eval-every {every} --display widget
import numpy as np
rng = np.random.default_rng(0)
x = rng.normal(size=(256, 8)).astype(np.float32)
data = (x, (x.sum(1) > 0).astype(np.int32))
model = jl.models.MLP(in_features=8, hidden=[8], num_classes=2, rngs=nnx.Rngs(0))
"""


def saved_size(tmp_path, steps: int) -> tuple[int, dict]:
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell("%load_ext jupyter_llm"),
                nbformat.v4.new_code_cell(CELL.format(steps=steps, every=max(steps // 10, 1)))]
    nbclient.NotebookClient(nb, timeout=600, kernel_name="python3", record_timing=False).execute()
    path = tmp_path / f"fit{steps}.ipynb"
    nbformat.write(nb, path)
    return path.stat().st_size, json.loads(path.read_text())


def test_saved_notebook_size_does_not_grow_with_steps(tmp_path):
    small, small_nb = saved_size(tmp_path, 50)
    large, large_nb = saved_size(tmp_path, 5000)
    assert "application/vnd.jupyter.widget-state+json" in large_nb["metadata"]["widgets"]  # the widget was saved
    outputs = large_nb["cells"][1]["outputs"]
    assert any("text/html" in o.get("data", {}) for o in outputs)  # the static report is there too
    assert large < 1.5 * small, (small, large)
