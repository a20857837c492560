"""The training core runs in a plain script with IPython and ipywidgets impossible to import."""

import json
import os
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


def test_a_new_process_reuses_compiled_steps_from_the_persistent_cache(tmp_path):
    script = textwrap.dedent("""
        import json
        import jax.monitoring
        import numpy as np
        from flax import nnx
        import jupyter_llm as jl
        events = []
        jax.monitoring.register_event_listener(lambda name, **kw: events.append(name))
        x = np.random.default_rng(0).random((256, 64), dtype=np.float32)
        y = (x.sum(1) > 32).astype(np.int32)
        jl.fit(jl.models.CNN(in_channels=1, num_classes=2, rngs=nnx.Rngs(0)), (x.reshape(-1, 8, 8, 1), y),
               epochs=1, val_split=0.25, display="none")
        print(json.dumps(sum("cache_hits" in e for e in events)))
    """)
    env = {**os.environ, "JUPYTER_LLM_COMPILE_CACHE": str(tmp_path / "xla")}
    hits = []
    for _ in range(2):
        proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300, env=env)
        assert proc.returncode == 0, proc.stderr[-2000:]
        hits.append(json.loads(proc.stdout.strip().splitlines()[-1]))
    assert any((tmp_path / "xla").iterdir())  # executables were written by the first session
    assert hits[0] == 0 and hits[1] >= 1, hits  # and the second session read them back


def test_jl_fit_stays_the_function_after_submodule_imports():
    import jupyter_llm as jl
    import jupyter_llm.fitting.lr_find  # noqa: F401 - a submodule import must not shadow the lazy export
    import jupyter_llm.fitting.orchestrate  # noqa: F401

    assert callable(jl.fit) and jl.fit.__name__ == "fit"
    assert callable(jl.lr_find) and jl.lr_find.__name__ == "lr_find"
