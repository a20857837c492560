"""LoRA fine-tuning of a GPT-2-small-shaped model on CPU: jl.fit full fine-tune vs LoRA, and LoRA against Hugging
Face PEFT + transformers (PyTorch eager), same weights, same batch, same optimizer, same machine, back to back.

The model: GPT-2 small's shape (12 layers, 768 wide, 12 heads, vocabulary 50,257, 1,024 positions; 124 M
parameters) with random weights, written once by transformers (`GPT2LMHeadModel(GPT2Config(...))` at a fixed seed,
dropout 0) into a temporary Hugging Face folder that both sides read: nothing is downloaded. The batch: 4 windows of
128 random token ids (drawn at the seed), the same batch at every step on both sides, so their losses compare step
by step. Adam (0.9, 0.999, eps 1e-8), lr 1e-4, no clipping, no weight decay: jl.fit's defaults and
`torch.optim.Adam` on the trainable parameters. LoRA: rank 8, alpha 16 (jl.fit's default 2 x rank), dropout 0, on
`c_attn` (each block's fused q/k/v projection; `--targets c_attn,c_proj,c_fc` adapts every linear layer of the
blocks, jl.fit's default `attn,mlp`). Both sides start from the same adapters: PEFT's own initialisation (A
Kaiming-uniform, B zero), copied into jl.fit's adapters, which the fit then continues.

Configurations, each in its own process per repeat (peak RSS, `ru_maxrss`, is that process's: interpreter, library,
weights, optimizer state, step), in a rotated order per repeat so a busy machine's slow phases hit all alike:
  - jl.fit full fine-tune and jl.fit --lora 8 (`GPT.from_pretrained(folder)`, then `jl.fit`): ms/step from the fit's
    own events (one step per epoch: the difference of consecutive `EpochEnd.elapsed`, compile excluded), the
    median over the steps after the warm-up; and the fit's own account of its parameters and optimizer state
    (`run.memory`);
  - PEFT LoRA (`peft.get_peft_model` on transformers' `GPT2LMHeadModel`, its default attention, eager) and PyTorch
    full fine-tune (the same model without PEFT): each step timed (forward, cross-entropy, backward, Adam step),
    the median after the warm-up; `torch.set_num_threads` = the cores JAX uses (`--torch-threads`).
Checks printed under the tables: the step-0 loss is the same on both sides (same weights, same batch) within 1e-4,
the losses of every step are compared (the largest gap printed), and the loss falls on every side. Not part of
run.py (full mode: 49 minutes on 2 cores at load 9-13, the run in results/lora.md; a quiet machine should take a
third of that, not measured):

    python benchmarks/lora.py            # full mode; writes benchmarks/results/lora.md
    python benchmarks/lora.py --tiny     # a tiny GPT-2, 2 steps (what the tests run): 70-110 s on the busy 2 cores

PEFT is a benchmark-only extra: `pip install -e ".[bench]"` (or `pip install peft`); without it the PEFT row reads
"not installed" and the rest runs.
"""

from __future__ import annotations

import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile

import common
from memory import rss_mb  # the one reading of /proc's resident set

SEED = 0
RANK, ALPHA = 8, 16.0
STEP0_TOLERANCE = 1e-4  # nats: float32 on both sides (measured 0 to 1e-6)
CONFIGS = ("jl.fit full", "jl.fit LoRA", "PEFT LoRA", "PyTorch full")
GPT2_SMALL = dict(n_layer=12, n_embd=768, n_head=12, vocab_size=50257, n_positions=1024)
TINY = dict(n_layer=2, n_embd=64, n_head=4, vocab_size=1000, n_positions=64)


def shapes(mode: str) -> dict:
    """Model, batch, steps and lr of a mode. tiny: a 2-layer GPT-2, 2 steps (the first is the warm-up)."""
    if mode == "tiny":
        return dict(model=TINY, batch=2, tokens=16, warmup=1, timed=1, lr=1e-3)
    return dict(model=GPT2_SMALL, batch=4, tokens=128, warmup=2, timed=3 if mode == "quick" else 6, lr=1e-4)


def peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KB on Linux


def batch(s: dict):
    """The one batch both sides train on: (inputs, next tokens), int32, [batch, tokens]."""
    import numpy as np

    ids = np.random.default_rng(SEED).integers(0, s["model"]["vocab_size"], (s["batch"], s["tokens"] + 1))
    return ids[:, :-1].astype(np.int32), ids[:, 1:].astype(np.int32)


def layer_names(targets: str) -> list[str]:
    return [t.strip() for t in targets.split(",") if t.strip()]


# -- the shared starting point: weights and adapters -------------------------------------------------------------
def child_prepare(folder: str, s: dict, targets: str) -> dict:
    """The model in Hugging Face's format (transformers' own initialisation at the seed, dropout 0), and, with PEFT
    installed, its initial adapter matrices A as `lora_a.npz`, keyed by the layer's path in jupyter_llm's GPT, shaped
    [in, rank]."""
    import numpy as np
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(SEED)
    last = s["model"]["vocab_size"] - 1
    config = GPT2Config(**s["model"], resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,
                        bos_token_id=min(50256, last), eos_token_id=min(50256, last))
    model = GPT2LMHeadModel(config)
    model.save_pretrained(folder)
    if not common.have("peft"):
        return {"params": sum(p.numel() for p in model.parameters()), "adapters": None}
    lora = peft_model(model, targets)
    a = {name: module.lora_A["default"].weight.detach().numpy().T for name, module in peft_layers(lora)}
    np.savez(os.path.join(folder, "lora_a.npz"), **a)
    return {"params": sum(p.numel() for p in model.parameters()), "adapters": len(a)}


def peft_model(model, targets: str):
    import peft

    config = peft.LoraConfig(r=RANK, lora_alpha=ALPHA, target_modules=layer_names(targets), lora_dropout=0.0,
                             fan_in_fan_out=True, bias="none")  # GPT-2's Conv1D holds [in, out] weights
    return peft.get_peft_model(model, config)


def peft_layers(model):
    """(path in jupyter_llm's GPT, PEFT LoRA layer): 'base_model.model.transformer.h.0.attn.c_attn' -> 'h.0...'."""
    for name, module in model.named_modules():
        if hasattr(module, "lora_A") and "default" in getattr(module, "lora_A", {}):
            yield name.split("transformer.", 1)[1], module


# -- jupyter_llm -------------------------------------------------------------------------------------------------
def child_jl(folder: str, s: dict, targets: str, lora: bool) -> dict:
    import jax
    import numpy as np
    import optax  # noqa: F401 - every library is imported before the baseline
    from flax import nnx

    import jupyter_llm as jl
    from jupyter_llm import events as ev
    from jupyter_llm.models import lora as lora_mod

    x, y = batch(s)
    jax.devices()
    model = jl.models.GPT.from_pretrained(folder)
    options = {}
    if lora:
        options = dict(lora=RANK, lora_alpha=ALPHA, lora_targets=targets)
        path = os.path.join(folder, "lora_a.npz")
        if os.path.exists(path):  # PEFT's initial A in our adapters; the fit continues adapters of the same rank
            lora_mod.add_adapters(model, RANK, ALPHA, targets, seed=SEED)
            given = np.load(path)
            layers = {".".join(map(str, p)): m for p, m in lora_mod.linear_layers(model)
                      if isinstance(m, lora_mod.LoRALinear)}
            assert sorted(layers) == sorted(given.files), (sorted(layers), given.files)
            for name, layer in layers.items():
                layer.lora_a = nnx.LoRAParam(jax.numpy.asarray(given[name]))
    before = rss_mb()
    ends = []

    class Clock:
        def on(self, event):
            if isinstance(event, ev.EpochEnd):
                ends.append(event.elapsed)

    steps = s["warmup"] + s["timed"]
    run = jl.fit(model, (x, y), steps=steps, batch_size=s["batch"], lr=s["lr"], seed=SEED, display="none",
                 sinks=[Clock()], **options)
    times = [b - a for a, b in zip(ends, ends[1:])][s["warmup"] - 1:]  # step k's time: EpochEnd k - EpochEnd k-1
    return {"ms": 1000 * statistics.median(times), "losses": [float(v) for v in run.history["loss"]],
            "peak_mb": peak_mb(), "before_mb": before, "memory": run.memory, "compile_s": run.compile_seconds}


# -- PyTorch: PEFT LoRA and full fine-tune -----------------------------------------------------------------------
def child_torch(folder: str, s: dict, targets: str, lora: bool, threads: int) -> dict:
    import numpy as np
    import torch
    import torch.nn.functional as F
    from transformers import GPT2LMHeadModel

    if lora:
        import peft  # noqa: F401 - every library is imported before the baseline
    torch.set_num_threads(threads)
    torch.manual_seed(SEED)
    model = GPT2LMHeadModel.from_pretrained(folder)
    if lora:
        model = peft_model(model, targets)
        given = np.load(os.path.join(folder, "lora_a.npz"))
        with torch.no_grad():
            for name, module in peft_layers(model):
                module.lora_A["default"].weight.copy_(torch.from_numpy(given[name].T.copy()))
    model.train()
    x, y = (torch.from_numpy(a.astype(np.int64)) for a in batch(s))
    trained = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.Adam(trained, lr=s["lr"], betas=(0.9, 0.999), eps=1e-8)
    before = rss_mb()
    times, losses = [], []
    for _ in range(s["warmup"] + s["timed"]):
        t0 = common.clock()
        logits = model(input_ids=x).logits
        loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), y.reshape(-1))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(loss.item())
        times.append(common.clock() - t0)
    state = sum(t.numel() * t.element_size() for st in opt.state.values() for t in st.values() if t.dim() > 0)
    return {"ms": 1000 * statistics.median(times[s["warmup"]:]), "losses": losses, "peak_mb": peak_mb(),
            "before_mb": before, "threads": torch.get_num_threads(), "torch": torch.__version__,
            "attention": model.config._attn_implementation,
            "memory": {"parameters": sum(p.numel() * p.element_size() for p in trained), "optimizer state": state}}


# -- the parent: runs the children, compares, reports ------------------------------------------------------------
def child(args, name: str, folder: str, timeout: float = 3600) -> dict:
    env = dict(os.environ, JUPYTER_LLM_COMPILE_CACHE="0")  # every jl.fit compiles (none loads from disk)
    cmd = [sys.executable, __file__, f"--{args.mode}", "--child", name, "--folder", folder, "--targets", args.targets,
           "--torch-threads", str(args.torch_threads)]
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False, timeout=timeout)
    if out.returncode:
        raise RuntimeError(f"lora child {name!r} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def run_child(args) -> dict:
    s = shapes(args.mode)
    if args.child == "prepare":
        return child_prepare(args.folder, s, args.targets)
    if args.child.startswith("jl.fit"):
        return child_jl(args.folder, s, args.targets, lora=args.child == "jl.fit LoRA")
    return child_torch(args.folder, s, args.targets, lora=args.child == "PEFT LoRA", threads=args.torch_threads)


def mb(n_bytes) -> float:
    return n_bytes / 2**20


def configs_table(res: dict, s: dict) -> str:
    lines = ["| configuration | ms/step (median, min–max) | peak RSS MB | RSS before training MB | trained params + "
             "optimizer state MB | loss at step 0 → last |", "|---|---|---|---|---|---|"]
    for name in CONFIGS:
        runs = res.get(name) or []
        if not runs:
            lines.append(f"| {name} | not run | | | | |")
            continue
        m = runs[0]["memory"] or {}
        state = f"{common.num(mb(m.get('parameters', 0)))} + {common.num(mb(m.get('optimizer state', 0)))}"
        loss = f"{runs[0]['losses'][0]:.4f} → {runs[0]['losses'][-1]:.4f}"
        lines.append(f"| {name} | {common.spread([r['ms'] for r in runs])} | "
                     f"{common.spread([r['peak_mb'] for r in runs])} | {common.spread([r['before_mb'] for r in runs])}"
                     f" | {state} | {loss} |")
    return "\n".join(lines)


def checks(res: dict) -> tuple[list[str], bool]:
    """Step-0 losses equal across sides, losses agree step by step, and fall on every side."""
    lines, ok = [], True
    for ours, theirs in (("jl.fit LoRA", "PEFT LoRA"), ("jl.fit full", "PyTorch full")):
        if not res.get(ours) or not res.get(theirs):
            lines.append(f"- {ours} vs {theirs}: skipped ({theirs if not res.get(theirs) else ours} not run)")
            continue
        a, b = res[ours][0]["losses"], res[theirs][0]["losses"]
        d0 = abs(a[0] - b[0])
        dmax = max(abs(u - v) for u, v in zip(a, b))
        good = d0 <= STEP0_TOLERANCE
        ok &= good
        lines.append(f"- step-0 loss, {ours} vs {theirs}: {a[0]:.6f} vs {b[0]:.6f}, |Δ| {d0:.2g} (tolerance "
                     f"{STEP0_TOLERANCE:g}): {'ok' if good else 'FAILED'}; largest |Δ| over the {len(a)} steps "
                     f"{dmax:.2g}")
    for name, runs in res.items():
        if runs:
            falls = all(r["losses"][-1] < r["losses"][0] for r in runs)
            ok &= falls
            lines.append(f"- {name}: loss falls in every repeat ({runs[0]['losses'][0]:.4f} → "
                         f"{runs[0]['losses'][-1]:.4f} in the first): {'ok' if falls else 'FAILED'}")
    return lines, ok


def rows(res: dict, s: dict, args) -> list:
    ms = {k: [r["ms"] for r in v] for k, v in res.items()}
    peak = {k: [r["peak_mb"] for r in v] for k, v in res.items()}
    peft_name = "PEFT LoRA" if ms.get("PEFT LoRA") else "PEFT not installed"
    torch_name = "PyTorch full" if ms.get("PyTorch full") else "PyTorch not installed"
    jl_state = res["jl.fit full"][0]["memory"]["optimizer state"]
    freed = [f - lo for f, lo in zip(peak["jl.fit full"], peak["jl.fit LoRA"])]
    m = s["model"]
    shape = (f"{m['n_layer']} layers × {m['n_embd']} wide, vocab {m['vocab_size']:,}; batch {s['batch']} × "
             f"{s['tokens']} tokens; steps {s['warmup'] + 1}..{s['warmup'] + s['timed']} timed")
    threads = f"torch threads {args.torch_threads}"
    return [
        common.Row("GPT-2 LoRA step: jl.fit vs PEFT", "ms/step", ms["jl.fit LoRA"], ms.get("PEFT LoRA") or None,
                   peft_name, target=common.Target("ratio", "<", 1.0),
                   note=f"rank {RANK} on {args.targets}; {shape}; {threads}"),
        common.Row("GPT-2 step: jl.fit LoRA vs jl.fit full", "ms/step", ms["jl.fit LoRA"], ms["jl.fit full"],
                   "jl.fit full", note="LoRA skips the frozen weights' gradients and their Adam update"),
        common.Row("GPT-2 step: PEFT LoRA vs PyTorch full", "ms/step", ms.get("PEFT LoRA") or [],
                   ms.get("PyTorch full") or None, torch_name, note="the same ratio on the PyTorch side"),
        common.Row("GPT-2 full fine-tune step: jl.fit vs PyTorch", "ms/step", ms["jl.fit full"],
                   ms.get("PyTorch full") or None, torch_name, note=threads),
        common.Row("peak RSS freed by LoRA (full − LoRA) vs full's optimizer state", "MB", freed,
                   [mb(jl_state)] * len(freed), "Adam state", target=common.Target("ratio", ">=", 1.0),
                   note="jl.fit, each configuration in its own process; Adam's state from run.memory"),
        common.Row("peak RSS: jl.fit LoRA vs PEFT LoRA", "MB", peak["jl.fit LoRA"], peak.get("PEFT LoRA") or None,
                   peft_name, note="whole process: JAX or PyTorch runtime included"),
        common.Row("peak RSS: jl.fit full vs PyTorch full", "MB", peak["jl.fit full"], peak.get("PyTorch full") or None,
                   torch_name, note="whole process"),
    ]


def main(argv=None):
    def extra(p):
        p.add_argument("--child", choices=("prepare", *CONFIGS), help="internal: run one configuration, print JSON")
        p.add_argument("--folder", help="internal: the model's folder")
        p.add_argument("--targets", default="c_attn",
                       help="the layers both sides adapt, comma-separated GPT-2 module names (default c_attn)")
        p.add_argument("--torch-threads", type=int, default=os.cpu_count(),
                       help="torch.set_num_threads (default: every core, as XLA:CPU uses)")
        p.add_argument("--save", nargs="?", const=os.path.join(common.HERE, "results", "lora.md"), default=None,
                       metavar="PATH", help="also write the tables to PATH (default benchmarks/results/lora.md); "
                                            "on by default in full mode")

    args = common.parse_args(__doc__.splitlines()[0], argv, extra=extra)
    if args.child:
        print(json.dumps(run_child(args)))
        return None
    if args.save is None and args.mode == "full":
        args.save = os.path.join(common.HERE, "results", "lora.md")
    s = shapes(args.mode)
    repeats = args.repeats if "--repeats" in (argv or sys.argv[1:]) else common.pick(args, 1, 1, 3)
    have_torch = common.have("torch") and common.have("transformers")
    if not have_torch:
        raise SystemExit("lora.py needs torch and transformers to write the shared GPT-2 weights: "
                         "pip install -e \".[test]\" (or \".[bench]\")")
    have_peft = common.have("peft")
    configs = [c for c in CONFIGS if c != "PEFT LoRA" or have_peft]
    if not have_peft:
        common.log("lora: peft is not installed (pip install -e \".[bench]\"): the PEFT LoRA configuration is skipped")
    res = {c: [] for c in configs}
    with tempfile.TemporaryDirectory() as folder:
        made = child(args, "prepare", folder)  # without PEFT, jl.fit's adapters start as it initialises them
        common.log(f"lora: weights written ({made})")
        for r in range(repeats):
            for c in common.rotated(configs, r):
                common.log(f"lora: repeat {r + 1}/{repeats}, {c}")
                res[c].append(child(args, c, folder))
                common.log(f"lora:   {common.num(res[c][-1]['ms'])} ms/step, peak {common.num(res[c][-1]['peak_mb'])}"
                           f" MB, losses {[round(v, 4) for v in res[c][-1]['losses']]}")
    check_lines, ok = checks(res)
    torch_info = next((r[0] for k, r in res.items() if k in ("PEFT LoRA", "PyTorch full") and r), {})
    title = "LoRA fine-tuning, GPT-2 small shape on CPU" if args.mode != "tiny" else "LoRA fine-tuning (tiny)"
    text = (f"## {title}\n\n{common.header(args.mode)}\n- peft {_version('peft')}, transformers "
            f"{_version('transformers')}; PyTorch attention {torch_info.get('attention', 'n/a')}, threads "
            f"{torch_info.get('threads', 'n/a')}\n\n{configs_table(res, s)}\n\n{common.table(rows(res, s, args))}\n\n"
            "Checks (same weights, same batch, same optimizer):\n\n" + "\n".join(check_lines) + "\n")
    print("\n" + text, flush=True)
    if args.save:
        with open(args.save, "w") as f:
            f.write(text)
        common.log(f"saved to {args.save}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump([r.to_dict() for r in rows(res, s, args)], f, indent=1)
    return 0 if ok else 1


def _version(name: str) -> str:
    from importlib import metadata

    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "not installed"


if __name__ == "__main__":
    sys.exit(main())
