"""A background fit in a real kernel (nbclient): later cells run while it trains, the display's buttons and
`run.pause/set/unpause/stop/wait` steer it, a foreground fit follows in the same kernel, and the kernel shuts down
promptly and cleanly while another background fit is still training."""

import os
import time

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")

from tests.test_nbconvert_report import KERNEL, kernel_env  # noqa: E402,F401

CELLS = [
    """\
%load_ext jupyter_llm
import time
import jax
import numpy as np
rng = np.random.default_rng(0)
x = rng.normal(size=(512, 16)).astype(np.float32)
y = (x[:, :8].sum(1) > x[:, 8:].sum(1)).astype(np.int32)
data = {"train": (x[:384], y[:384]), "validation": (x[384:], y[384:])}
model = jl.models.MLP(in_features=16, hidden=[32], num_classes=2, rngs=nnx.Rngs(0))
""",
    "%train --background --steps 1000000 --steps-per-dispatch 1 --schedule constant --lr 1e-3 --batch-size 32",
    """\
t0 = time.perf_counter()
while run.step < 5:  # this cell runs while the fit trains
    time.sleep(0.05)
s0 = run.step
time.sleep(1.0)
assert run.running and run.step > s0, (s0, run.step)
print("trained while a cell ran", s0, run.step)
""",
    """\
run.displays[0].controls.pause_button.click()  # what a click on the display's Pause does
time.sleep(0.5)
held = run.step
time.sleep(2.0)
assert run.paused and run.step == held, (held, run.step)
run.set(lr=2e-4)
run.unpause()
time.sleep(1.0)
assert run.step > held
""",
    """\
run.stop()
done = run.wait(60)
assert done.reason == "interrupted" and not run.running
assert done.changes and done.changes[0]["lr"] == 2e-4, done.changes
assert all(np.isfinite(np.asarray(p)).all() for p in jax.tree.leaves(nnx.state(model, nnx.Param)))
print("stopped at", done.step)
""",
    """\
second = jl.fit(jl.models.MLP(in_features=16, hidden=[32], num_classes=2, rngs=nnx.Rngs(1)), data, steps=30,
                display="none")
assert second.reason == "completed" and second.step == 30
print("foreground fit", second.step)
""",
    """\
last = jl.fit(model, data, steps=10**7, steps_per_dispatch=1, display="none", background=True)
while last.step < 3:
    time.sleep(0.05)
print("left running", last.step)
""",
]


def test_background_fit_in_a_kernel(kernel_env):  # noqa: F811
    from nbclient import NotebookClient
    from nbclient.util import run_sync

    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(c) for c in CELLS]
    client = NotebookClient(nb, kernel_name=KERNEL, timeout=180, resources={"metadata": {"path": repo}})
    km = client.create_kernel_manager()
    client.start_new_kernel(env={**os.environ, "PYTHONPATH": repo})
    client.start_new_kernel_client()
    try:
        for index, cell in enumerate(nb.cells):
            client.execute_cell(cell, index)
    except BaseException:
        run_sync(km.shutdown_kernel)(now=True)
        raise
    t0 = time.monotonic()
    run_sync(km.request_shutdown)()
    while run_sync(km.is_alive)() and time.monotonic() - t0 < 60:
        time.sleep(0.1)
    alive, took = run_sync(km.is_alive)(), time.monotonic() - t0
    code = km.provisioner.process.poll() if not alive else None
    run_sync(km.shutdown_kernel)(now=True)
    assert not alive and took < 30, took  # the exit hook stopped the fit and joined its thread
    assert code == 0, code  # no abort at interpreter exit (a daemon thread running JAX gives -6)

    text = ["".join(o.get("text", "") for o in c.outputs if o.output_type == "stream") for c in nb.cells]
    assert "trained while a cell ran" in text[2] and "stopped at" in text[4] and "foreground fit 30" in text[5]
    shown = [o for o in nb.cells[1].outputs if o.output_type == "display_data"]
    assert shown and "application/vnd.jupyter.widget-view+json" in shown[0].data  # the live display, at once
    errors = [o for c in nb.cells for o in c.outputs if o.output_type == "error"]
    assert not errors, errors
