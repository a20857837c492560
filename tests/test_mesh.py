"""--mesh on 8 simulated CPU devices: data, fsdp, model (tensor parallel) and mixed meshes train like one device.

All fits run in one child process started with `XLA_FLAGS=--xla_force_host_platform_device_count=8` (the device
count is fixed when JAX starts). The reference is the same fit on a mesh of one device (`data=1`). Sharding only
changes the order of float reductions; Adam turns that noise in near-zero gradients into full-size updates, so over
20 steps histories agree to 2e-4 relative (seen: 4e-5), not to the last digit.
"""

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

SCRIPT = textwrap.dedent("""
    import json, shutil, sys
    import jax, numpy as np
    from flax import nnx
    import jupyter_llm as jl
    from jupyter_llm import events as ev
    from jupyter_llm.models.generate import generate

    class Seen:
        def on(self, event):
            if isinstance(event, ev.FitStart):
                self.devices = event.devices
            if isinstance(event, ev.CompileEnd):
                self.memory = dict(event.memory)

    corpus = jl.datasets.text(sys.argv[1], tokenizer="char", block_size=32, val_fraction=0.1)
    tmp = sys.argv[2]

    def gpt():
        return jl.models.GPT(vocab_size=corpus.vocab_size, block_size=32, n_layer=2, n_head=4, n_embd=32, bias=True,
                             dropout=0.0, rngs=nnx.Rngs(0))

    def fit(model, mesh, steps=20, lr=3e-3, **kw):
        seen = Seen()
        run = jl.fit(model, corpus, steps=steps, eval_every=5, eval_batches=4, batch_size=16, lr=lr, seed=0,
                     display="none", mesh=mesh, sinks=[seen], **kw)
        return run, seen

    out = {"device_count": jax.device_count(), "fits": {}}
    for mesh in ("data=1", "data=8", "fsdp=8", "model=2", "fsdp=4,model=2", "data=2,fsdp=2,model=2"):
        model = gpt()
        run, seen = fit(model, mesh)
        kernel = model.h[0].attn.c_attn.kernel.get_value()
        out["fits"][mesh] = {"history": run.history, "devices": seen.devices, "memory": seen.memory,
                             "spec": [str(a) for a in kernel.sharding.spec],
                             "shards": sorted({tuple(s.data.shape) for s in kernel.addressable_shards}),
                             "shard_devices": len({s.device for s in kernel.addressable_shards}),
                             "generated": generate(model, [1, 2, 3], 12, temperature=0.0).tolist()}
        if mesh == "fsdp=4,model=2":
            whole = gpt()
            nnx.update(whole, jax.device_get(nnx.state(model)))
            out["generated_unsharded"] = generate(whole, [1, 2, 3], 12, temperature=0.0).tolist()

    # LoRA on a mesh: adapters trained (sharded like the layers they adapt), base weights untouched
    out["lora"] = {}
    for mesh in ("data=1", "fsdp=4,model=2"):
        model = gpt()
        base = np.asarray(jax.device_get(model.h[0].attn.c_attn.kernel.get_value()))
        run, _ = fit(model, mesh, lora=4, lr=3e-2)
        layer = model.h[0].attn.c_attn
        out["lora"][mesh] = {"history": run.history,
                             "base_same": bool(np.array_equal(np.asarray(jax.device_get(layer.kernel.get_value())),
                                                              base)),
                             "a_shards": sorted({tuple(s.data.shape) for s in layer.lora_a.get_value()
                                                 .addressable_shards})}

    # a checkpoint saved on one mesh continues on others
    ck = tmp + "/ck"
    fit(gpt(), "fsdp=4,model=2", steps=10, checkpoint=ck, save_every=10)
    out["resumed"] = {}
    for i, mesh in enumerate(("data=1", "data=2,model=2", "fsdp=4,model=2")):
        copy = shutil.copytree(ck, f"{ck}{i}")  # each continues the same 10-step checkpoint
        run, _ = fit(gpt(), mesh, steps=20, checkpoint=copy, resume=True)
        out["resumed"][mesh] = run.history

    # a model's own nnx.with_partitioning annotations are followed
    class Annotated(nnx.Module):
        def __init__(self, rngs):
            init = nnx.with_partitioning(nnx.initializers.lecun_normal(), (None, "model"))
            self.l1 = nnx.Linear(64, 128, kernel_init=init, rngs=rngs)
            self.l2 = nnx.Linear(128, 10, rngs=rngs)

        def __call__(self, x):
            return self.l2(nnx.relu(self.l1(x.reshape(x.shape[0], -1))))

    digits = jl.datasets.load("digits")
    with nnx.use_eager_sharding(False):  # annotated, not yet placed: the fit's mesh places it
        ann = Annotated(nnx.Rngs(0))
    jl.fit(ann, digits, epochs=1, batch_size=64, display="none", mesh="data=4,model=2")
    out["annotated"] = {"spec": [str(a) for a in ann.l1.kernel.get_value().sharding.spec],
                        "shards": sorted({tuple(s.data.shape) for s in ann.l1.kernel.get_value().addressable_shards})}
    mlp = jl.models.MLP(in_features=64, hidden=[128], num_classes=10, rngs=nnx.Rngs(0))
    jl.fit(mlp, digits, epochs=1, batch_size=64, display="none", mesh="fsdp=8")
    k = mlp.layers[0].kernel.get_value() if hasattr(mlp, "layers") else jax.tree.leaves(nnx.state(mlp, nnx.Param))[1]
    out["mlp_fsdp_shards"] = sorted({tuple(s.data.shape) for s in k.addressable_shards})
    out["mlp_fsdp_shape"] = list(k.shape)

    errors = {}
    for mesh, kw in (("data=16", {}), ("data=8", {"batch_size": 12}), ("model=3", {}), ("model=2", {"mlp": True})):
        try:
            if kw.pop("mlp", False):
                jl.fit(jl.models.MLP(in_features=64, hidden=[32], num_classes=10, rngs=nnx.Rngs(0)), digits,
                       epochs=1, display="none", mesh=mesh)
            else:
                jl.fit(gpt(), corpus, steps=2, display="none", mesh=mesh, **{"batch_size": 16, **kw})
            errors[mesh] = None
        except jl.errors.ConfigError as exc:
            errors[mesh] = str(exc)
    out["errors"] = errors
    print("RESULT", json.dumps(out))
""")


@pytest.fixture(scope="module")
def result(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("mesh")
    here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    text = open(os.path.join(here, "notebooks", "data", "tinyshakespeare.txt"), encoding="utf-8").read()
    corpus = tmp / "corpus.txt"
    corpus.write_text(text[:60_000], encoding="utf-8")
    env = dict(os.environ, JUPYTER_LLM_COMPILE_CACHE="0")
    flags = [f for f in env.get("XLA_FLAGS", "").split() if "device_count" not in f]
    env["XLA_FLAGS"] = " ".join([*flags, "--xla_force_host_platform_device_count=8"])
    proc = subprocess.run([sys.executable, "-c", SCRIPT, str(corpus), str(tmp)], capture_output=True, text=True,
                          env=env, timeout=900)
    assert proc.returncode == 0, proc.stderr[-4000:]
    line = next(ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT "))
    return json.loads(line[len("RESULT "):])


MESHES = ("data=8", "fsdp=8", "model=2", "fsdp=4,model=2", "data=2,fsdp=2,model=2")


@pytest.mark.parametrize("mesh", MESHES)
def test_a_mesh_trains_like_one_device(result, mesh):
    one, many = result["fits"]["data=1"]["history"], result["fits"][mesh]["history"]
    assert set(one) == set(many)
    for key in ("loss", "val_loss"):
        np.testing.assert_allclose(many[key], one[key], rtol=2e-4, err_msg=f"{mesh}: {key}")
    assert one["val_loss"][-1] < one["val_loss"][0] - 0.3  # it learns, not merely agrees


def test_each_device_holds_only_its_shard(result):
    fits = result["fits"]
    assert result["device_count"] == 8
    assert fits["data=1"]["devices"] == "cpu x 1 (of 8) mesh data=1,fsdp=1,model=1"
    assert fits["data=2,fsdp=2,model=2"]["devices"] == "cpu x 8 mesh data=2,fsdp=2,model=2"
    # c_attn's kernel is (32, 96): fsdp splits its rows, model its columns (heads)
    assert fits["data=8"]["shards"] == [[32, 96]] and fits["data=8"]["spec"] == ["None", "None"]
    assert fits["fsdp=8"]["shards"] == [[4, 96]] and fits["fsdp=8"]["spec"] == ["fsdp", "None"]
    assert fits["model=2"]["shards"] == [[32, 48]]
    assert fits["fsdp=4,model=2"]["shards"] == [[8, 48]] and fits["fsdp=4,model=2"]["shard_devices"] == 8
    assert fits["data=2,fsdp=2,model=2"]["shards"] == [[16, 48]]


def test_per_device_memory_falls_with_sharding(result):
    fits = result["fits"]
    whole, fsdp = fits["data=1"]["memory"], fits["fsdp=8"]["memory"]
    assert set(whole) == {"parameters", "optimizer state", "data", "step temporaries"}
    assert fits["data=8"]["memory"]["parameters"] == whole["parameters"]  # data parallel replicates
    # the GPT's matrices split 8 ways; its small vectors (norms, most biases) stay whole
    assert fsdp["parameters"] < 0.2 * whole["parameters"]
    assert fsdp["optimizer state"] < 0.2 * whole["optimizer state"]
    assert fits["fsdp=4,model=2"]["memory"]["parameters"] < 0.2 * whole["parameters"]


def test_generation_on_a_sharded_model(result):
    assert result["fits"]["fsdp=4,model=2"]["generated"] == result["generated_unsharded"]
    assert len(result["generated_unsharded"]) == 12


def test_lora_on_a_mesh_trains_like_one_device(result):
    one, many = result["lora"]["data=1"], result["lora"]["fsdp=4,model=2"]
    for key in ("loss", "val_loss"):
        np.testing.assert_allclose(many["history"][key], one["history"][key], rtol=2e-4, err_msg=key)
    # a random base with frozen (tiny) embeddings caps what adapters can reach (about 3.93 here): it learns, a little
    assert one["history"]["loss"][-1] < one["history"]["loss"][0] - 0.02
    assert one["history"]["val_loss"][-1] < one["history"]["val_loss"][0]
    assert one["base_same"] and many["base_same"]
    assert one["a_shards"] == [[32, 4]] and many["a_shards"] == [[8, 4]]  # A's rows split like c_attn's


@pytest.mark.parametrize("mesh", ("data=1", "data=2,model=2", "fsdp=4,model=2"))
def test_a_checkpoint_resumes_on_another_mesh(result, mesh):
    uninterrupted = result["fits"]["fsdp=4,model=2"]["history"]
    resumed = result["resumed"][mesh]
    for key in ("loss", "val_loss"):
        np.testing.assert_allclose(resumed[key], uninterrupted[key], rtol=2e-4, err_msg=f"{mesh}: {key}")


def test_a_models_own_annotations_and_the_fsdp_rule(result):
    assert result["annotated"]["spec"] == ["None", "model"] and result["annotated"]["shards"] == [[64, 64]]
    # an MLP without annotations: its largest divisible dimension split over fsdp
    shape = result["mlp_fsdp_shape"]
    assert result["mlp_fsdp_shards"] == [[s // 8 if s == max(shape) else s for s in shape]]


def test_meshes_that_cannot_work_are_refused_clearly(result):
    errors = result["errors"]
    assert "needs 16 devices; there are 8" in errors["data=16"]
    assert "batch of 12 does not split over the mesh's data x fsdp = 8" in errors["data=8"]
    assert "model axis (3) must divide the attention heads (4); use model=1 or 2 or 4" in errors["model=3"]
    assert "nnx.with_partitioning" in errors["model=2"]


def test_a_fit_that_will_not_fit_in_device_memory_is_refused_with_the_estimate():
    """Where a device reports its memory (GPUs, TPUs), the compiled fit's needs are checked against it."""
    import types

    from jupyter_llm.errors import ConfigError
    from jupyter_llm.fitting.program import check_fits_in_memory

    def layout(limit):
        device = types.SimpleNamespace(process_index=0, memory_stats=lambda: {"bytes_limit": limit})
        return types.SimpleNamespace(mesh=types.SimpleNamespace(devices=np.array([device], dtype=object)))

    need = {"parameters": 2 << 30, "optimizer state": 4 << 30, "data": 1 << 30, "step temporaries": 1 << 30}
    check_fits_in_memory(need, layout(16 << 30))  # 8 GiB of 16: fine
    with pytest.raises(ConfigError) as info:
        check_fits_in_memory(need, layout(8 << 30))
    message = str(info.value)
    assert "needs about 8.00 GiB per device" in message and "a device has 8.00 GiB" in message
    assert "--mesh fsdp=N" in message and "--accumulate" in message
    cpu = types.SimpleNamespace(process_index=0, memory_stats=lambda: None)  # a CPU says nothing: no refusal
    check_fits_in_memory(need, types.SimpleNamespace(mesh=types.SimpleNamespace(devices=np.array([cpu],
                                                                                                   dtype=object))))


def test_the_gpu_check_runs_sharded_in_its_cpu_mode(tmp_path):
    """benchmarks/gpu_check.py's sharded case, shrunk to a tiny model on 4 simulated CPU devices (it has not run on
    GPUs here)."""
    here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = dict(os.environ, JUPYTER_LLM_COMPILE_CACHE="0",
               XLA_FLAGS="--xla_force_host_platform_device_count=4")
    proc = subprocess.run([sys.executable, os.path.join(here, "benchmarks", "gpu_check.py"), "--allow-cpu", "--tiny",
                           "--steps", "6", "--batch-size", "4", "--mesh", "fsdp=2,model=2"], capture_output=True,
                          text=True, env=env, timeout=600, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["devices"] == 4 and result["mesh"] == "fsdp=2,model=2" and result["tokens_per_s"] > 0
    assert result["memory_per_device"]["parameters"] > 0


def test_the_text_classifier_splits_like_the_gpt():
    """The built-in transformers share their tensor-parallel rules; a spec whose axis does not divide its dimension
    keeps that dimension whole (an odd vocabulary over a model axis of 2)."""
    from flax import nnx

    from jupyter_llm.models import TextClassifier
    from jupyter_llm.models.partitioning import parameter_specs

    model = TextClassifier(vocab_size=101, num_classes=3, block_size=16, n_layer=1, n_head=4, n_embd=32,
                           rngs=nnx.Rngs(0))
    specs = {".".join(map(str, path)): spec for path, (_, spec) in parameter_specs(model, {"fsdp": 2,
                                                                                            "model": 2}).items()}
    assert specs["h.0.attn.c_attn.kernel"] == ("fsdp", "model")  # columns (heads) over model
    assert specs["h.0.mlp.c_proj.kernel"] == ("model", "fsdp")  # rows over model
    assert specs["wte.embedding"] == (None, "fsdp")  # 101 rows: not split over model
    assert specs["head.kernel"] == ("fsdp", None)  # (32, 3): FSDP's rule, its largest divisible dimension
    assert specs["h.0.ln_1.scale"] == ("fsdp",)
