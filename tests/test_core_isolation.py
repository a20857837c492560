"""The training core runs in a plain script with IPython and ipywidgets impossible to import."""

import subprocess
import sys
import textwrap


def test_fit_runs_with_ipython_and_widgets_blocked():
    script = textwrap.dedent("""
        import sys
        class Block:
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] in ("IPython", "ipywidgets", "ipykernel", "matplotlib"):
                    raise ImportError(f"blocked: {name}")
        sys.meta_path.insert(0, Block())
        import numpy as np
        from flax import nnx
        import jupyter_llm as jl
        x = np.random.default_rng(0).random((128, 64), dtype=np.float32)
        y = (x.sum(1) > 32).astype(np.int32)
        run = jl.fit(jl.models.MLP(in_features=64, hidden=[16], num_classes=2, rngs=nnx.Rngs(0)), (x, y),
                     epochs=2, val_split=0.25)
        assert run.reason == "completed", run.reason
        assert not any(m.split(".")[0] in ("IPython", "ipywidgets") for m in sys.modules)
        print("OK", run.history["loss"][-1])
    """)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "OK" in proc.stdout
    assert "epoch 2/2" in proc.stdout  # the text display of a script
