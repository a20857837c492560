"""GPU check: a GPT-2-small-sized fit (124 M parameters) in bfloat16 for a fixed number of steps through `jl.fit`.

Prints tokens/s and model FLOPs utilisation against the device's peak (dense bf16). Run once whenever a GPU machine
is at hand and put the figures in the README; it never runs in CI (on a CPU it refuses unless --allow-cpu, with a
tiny model, to check that it runs).

    python benchmarks/gpu_check.py                 # GPT-2 small, batch 16 x 1024, 40 steps
    python benchmarks/gpu_check.py --mesh fsdp=8   # the same, parameters and optimizer state sharded over 8 GPUs
    python benchmarks/gpu_check.py --allow-cpu --tiny [--mesh fsdp=2,model=2]
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np

# Dense bf16 peak FLOP/s by device kind (vendor figures, without sparsity).
PEAKS = {"H200": 989e12, "H100": 989e12, "A100": 312e12, "L4": 121e12, "A10": 125e12, "TPU v4": 275e12,
         "TPU v5e": 197e12, "TPU v5p": 459e12}


def peak_for(kind: str) -> float | None:
    for name, flops in PEAKS.items():
        if name.lower() in kind.lower():
            return flops
    return None


class StepClock:
    """Times the steps after the first report (compile and warm-up excluded)."""

    def __init__(self):
        self.first = None
        self.last = None

    def on(self, event):
        from jupyter_llm import events as ev

        if isinstance(event, ev.Progress):
            now = (time.perf_counter(), event.step)
            if self.first is None:
                self.first = now
            self.last = now


def main():
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--steps", type=int, default=40)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--block-size", type=int, default=1024)
    p.add_argument("--tiny", action="store_true", help="a 2-layer model, for checking the script on a CPU")
    p.add_argument("--allow-cpu", action="store_true")
    p.add_argument("--mesh", default=None, help="a --mesh of jl.fit, e.g. fsdp=8 or data=2,fsdp=2,model=2")
    args = p.parse_args()

    import jax
    from flax import nnx

    import jupyter_llm as jl
    from jupyter_llm.data.text import TextCorpus
    from jupyter_llm.data.tokenizers import CharTokenizer

    device = jax.devices()[0]
    if device.platform == "cpu" and not args.allow_cpu:
        raise SystemExit("gpu_check: no GPU here (pass --allow-cpu --tiny to check the script on a CPU)")
    overrides = dict(n_layer=2, n_head=2, n_embd=128, block_size=128) if args.tiny else {}
    block = overrides.get("block_size", args.block_size)
    model = jl.models.GPT.from_preset("gpt2-small", rngs=nnx.Rngs(0), **overrides)
    vocab = model.config.vocab_size
    rng = np.random.default_rng(0)
    tokens = rng.integers(0, vocab, size=2_000_000 if not args.tiny else 50_000).astype(np.int32)
    tok = CharTokenizer([chr(0x4E00 + i) for i in range(vocab)])  # a stand-in vocabulary of the right size
    corpus = TextCorpus(train=tokens, validation=None, tokenizer=tok, name="random-tokens", block_size=block)
    clock = StepClock()
    run = jl.fit(model, corpus, steps=args.steps, batch_size=args.batch_size, block_size=block, optimizer="adamw",
                 lr=6e-4, weight_decay=0.1, precision="bf16", report_every=0.0, display="text", sinks=[clock],
                 mesh=args.mesh)
    (t0, s0), (t1, s1) = clock.first, clock.last
    tokens_per_s = (s1 - s0) * args.batch_size * block / (t1 - t0)
    devices = jax.device_count() if args.mesh is None else int(np.prod([int(p.split("=")[1])
                                                                          for p in args.mesh.split(",")]))
    n = model.num_params()
    cfg = model.config
    flops_per_token = 6 * n + 12 * cfg.n_layer * cfg.n_embd * block  # nanoGPT's estimate_mfu
    achieved = flops_per_token * tokens_per_s
    peak = peak_for(getattr(device, "device_kind", ""))
    result = {
        "device": getattr(device, "device_kind", device.platform), "params": n, "batch": args.batch_size,
        "block": block, "steps_timed": s1 - s0, "tokens_per_s": round(tokens_per_s),
        "achieved_tflops": round(achieved / 1e12, 1),
        "mesh": args.mesh, "devices": devices, "memory_per_device": run.memory,
        "mfu": round(achieved / (peak * devices), 3) if peak else None, "compile_s": round(run.compile_seconds, 1),
        "final_loss": run.history.get("loss", [None])[-1],
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
