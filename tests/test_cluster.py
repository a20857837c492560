"""`%%train --cluster 2` in a real notebook kernel: two ipyparallel engines join JAX's distributed runtime, train,
stream process 0's events into the notebook's display, and the bound Run's model holds the trained weights.

The reference is the same fit in the notebook's own kernel (one device): the engines split each batch over their two
devices, so the histories agree to float reduction order.
"""

import nbformat
import pytest
from nbclient import NotebookClient

pytest.importorskip("ipyparallel")

CELLS = [
    "%load_ext jupyter_llm",
    "%%train --data digits --epochs 3 --batch-size 64 --val-split 0.2 --lr 1e-2 --display text --cluster 2 "
    "--out far\n"
    "model = jl.models.MLP(in_features=64, hidden=[32], num_classes=10, rngs=nnx.Rngs(0))\n"
    "far_model = model",
    "%%train --data digits --epochs 3 --batch-size 64 --val-split 0.2 --lr 1e-2 --display none --out near\n"
    "model = jl.models.MLP(in_features=64, hidden=[32], num_classes=10, rngs=nnx.Rngs(0))",
    "import numpy as np\n"
    "np.testing.assert_allclose(far.history['val_loss'], near.history['val_loss'], rtol=1e-5)\n"
    "np.testing.assert_allclose(far.history['accuracy'], near.history['accuracy'], rtol=1e-5)\n"
    "assert far.model is far_model, (far.model, far_model)\nassert far.reason == 'completed', far.reason\n"
    "x, _ = jl.datasets.load('digits').test\n"
    "np.testing.assert_allclose(far.predict(x), near.predict(x), rtol=1e-4, atol=1e-5)  # the weights came back\n"
    "assert far.evaluate('test')['accuracy'] > 0.8\n"
    "print('CLUSTER OK', far.history['val_loss'][-1])",
    "from jupyter_llm.fitting.cluster import shutdown_engines\nshutdown_engines()",
]


def test_train_on_a_cluster_of_two_engines_from_a_notebook(tmp_path):
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(c) for c in CELLS])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    NotebookClient(nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}).execute()
    texts = ["".join(o.get("text", "")) for o in nb.cells[1].outputs if o.get("output_type") == "stream"]
    shown = "\n".join(texts)
    assert "on cpu x 2" in shown and "per device" in shown and "completed at step 54" in shown  # engine 0's events
    assert any("CLUSTER OK" in o.get("text", "") for o in nb.cells[3].outputs)
