"""Workload 6: a character-level GPT with nanoGPT's CPU recipe, against nanoGPT itself in PyTorch eager mode.

4 layers, 4 heads, 128 wide, context 64, batch 12, dropout 0, no bias, vocabulary 65 from tiny-shakespeare;
AdamW (0.9, 0.99), weight decay 0.1 on 2-D parameters, warm-up + cosine schedule, clipping at 1.0 (gpt_torch.py
has the recipe). Three columns, each timed on iterations after a warm-up (so compilation is excluded):
  - jl.fit on the corpus, with the same optax chain as nanoGPT's optimizer, per-iteration time from the events;
  - a hand-written JAX training step of the same `jupyter_llm.models.GPT` (jit, donated state, host-drawn random
    windows as nanoGPT's get_batch);
  - PyTorch eager (gpt_torch.py, in a subprocess per repeat, alternating with the JAX runs).
ms/iteration, tokens/s, and model FLOPs utilisation (nanoGPT's estimate_mfu count) against the matmul peak measured
here. Also generation speed (ms/token, batch 1, one-token prompt): `jupyter_llm.models.generate` with its
key/value cache against nanoGPT's `generate`, for a length inside the context and one past it. Full mode (or
`--val-at N`) also trains each for 2,000 (N) iterations and scores it on the validation text two ways: the mean
loss over every window of 64 tokens in it (the quantity nanoGPT's estimate estimates), and the loss on the 240
windows that nanoGPT's train.py drew for its own printed estimate (gpt_torch.py runs that loop as it is).

Known difference: nanoGPT's MLP uses the exact (erf) GELU, jupyter_llm's GPT the tanh approximation.
"""

from __future__ import annotations

import functools
import json
import statistics
import subprocess
import sys

import common
import gpt_torch
import matmul
import numpy as np


def have_jl_gpt() -> bool:
    """HOOK: the jupyter_llm side needs jupyter_llm.models.gpt (and a TextCorpus data path for jl.fit)."""
    try:
        from jupyter_llm.data.text import text  # noqa: F401
        from jupyter_llm.models.gpt import GPT  # noqa: F401
    except ImportError as exc:
        common.log(f"gpt: the jupyter_llm GPT is not available ({exc}); only PyTorch runs")
        return False
    return True


def jl_gpt(cfg: dict, vocab: int, seed: int = gpt_torch.SEED):
    from flax import nnx

    from jupyter_llm.models.gpt import GPT

    return GPT(vocab_size=vocab, block_size=cfg["block_size"], n_layer=cfg["n_layer"], n_head=cfg["n_head"],
               n_embd=cfg["n_embd"], dropout=cfg["dropout"], bias=cfg["bias"], rngs=nnx.Rngs(seed))


def nanogpt_optimizer():
    """nanoGPT's optimizer as an optax chain: clip 1.0, AdamW (0.9, 0.99), decay on 2-D params, its schedule."""
    import jax
    import jax.numpy as jnp
    import optax

    o = gpt_torch.OPTIM

    def schedule(it):
        warm = o["learning_rate"] * (it + 1) / (o["warmup_iters"] + 1)
        ratio = (it - o["warmup_iters"]) / (o["lr_decay_iters"] - o["warmup_iters"])
        cos = o["min_lr"] + 0.5 * (1.0 + jnp.cos(jnp.pi * ratio)) * (o["learning_rate"] - o["min_lr"])
        return jnp.where(it < o["warmup_iters"], warm, jnp.where(it > o["lr_decay_iters"], o["min_lr"], cos))

    def mask(params):  # weight decay on matrices only, as nanoGPT
        return jax.tree.map(lambda p: p.ndim >= 2, params)

    return optax.chain(optax.clip_by_global_norm(o["grad_clip"]),
                       optax.adamw(schedule, b1=o["beta1"], b2=o["beta2"], eps=1e-8, weight_decay=o["weight_decay"],
                                   mask=mask))


def lm_loss(graphdef, params, rest, x, y):
    import optax
    from flax import nnx

    logits = nnx.merge(graphdef, params, rest)(x)
    return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()


class Windows:
    """nanoGPT's get_batch on the host: `batch` random windows of `block` tokens and their next tokens."""

    def __init__(self, ids, block: int, batch: int, seed: int):
        self.ids, self.block, self.batch = np.asarray(ids, np.int32), block, batch
        self.rng = np.random.default_rng(seed)
        self.offsets = np.arange(block)

    def __call__(self):
        ix = self.rng.integers(0, len(self.ids) - self.block, self.batch)[:, None] + self.offsets
        return self.ids[ix], self.ids[ix + 1]


def val_losses(model, val_ids, cfg, windows) -> tuple[float, float]:
    """The mean loss over every window of the validation text, and over the windows starting at `windows`."""
    import jax
    from flax import nnx

    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    f = jax.jit(functools.partial(lm_loss, graphdef))
    ids, offsets = np.asarray(val_ids, np.int32), np.arange(cfg["block_size"])

    def mean_over(starts, chunk=1024):
        total = 0.0
        for s0 in range(0, len(starts), chunk):
            ix = starts[s0:s0 + chunk, None] + offsets
            total += float(f(params, rest, ids[ix], ids[ix + 1])) * len(ix)
        return total / len(starts)

    return mean_over(np.arange(len(ids) - cfg["block_size"])), mean_over(np.asarray(windows))


def random_windows(val_ids, cfg, seed: int) -> np.ndarray:
    """Windows for the estimate when there is no PyTorch run to take them from: 20 batches, as nanoGPT draws."""
    n = gpt_torch.EVAL_ITERS * cfg["batch_size"]
    return np.random.default_rng(seed).integers(0, len(val_ids) - cfg["block_size"], n)


def val_rows(label: str, ours: dict, theirs: list, ref_name: str, val_at: int, n_windows: int, n_drawn: int) -> list:
    """Rows for the validation losses: `ours` maps a name to [(every window, nanoGPT's windows)] per seed;
    `theirs` holds PyTorch's JSON per seed. The drawn-windows row is for the first name only (jl.fit)."""
    rows = []
    every = [t["val_loss_all"] for t in theirs] or None
    drawn = [t["val_loss"] for t in theirs] or None
    for name, v in ours.items():
        rows.append(common.Row(f"GPT char val loss @{val_at}{label}, every window: {name} vs PyTorch", "nats",
                               [a for a, _ in v], every, ref_name,
                               note=f"mean over all {n_windows:,} validation windows (what an estimate estimates)"))
    for name, v in list(ours.items())[:1]:
        rows.append(common.Row(f"GPT char val loss @{val_at}{label}, nanoGPT's 20 batches: {name} vs PyTorch",
                               "nats", [b for _, b in v], drawn, ref_name,
                               note="PyTorch: the val loss train.py prints (eval_iters 20, the README's command); "
                                    f"{name}: its model on the same {n_drawn} windows"))
    return rows


def hand_jax(cfg, train_ids, vocab, warmup: int, iters: int):
    """A hand-written JAX loop over the same model: returns (seconds per timed iteration, trained model)."""
    import jax
    import optax
    from flax import nnx

    model = jl_gpt(cfg, vocab)
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    tx = nanogpt_optimizer()
    opt = tx.init(params)

    @functools.partial(jax.jit, donate_argnums=(0, 1))
    def step(params, opt, x, y):
        loss, grads = jax.value_and_grad(functools.partial(lm_loss, graphdef))(params, rest, x, y)
        updates, opt = tx.update(grads, opt, params)
        return optax.apply_updates(params, updates), opt, loss

    batches = Windows(train_ids, cfg["block_size"], cfg["batch_size"], gpt_torch.SEED)
    t0 = None
    for it in range(warmup + iters):
        if it == warmup:
            jax.block_until_ready(params)
            t0 = common.clock()
        params, opt, loss = step(params, opt, *batches())
    jax.block_until_ready((params, loss))
    seconds = (common.clock() - t0) / iters
    nnx.update(model, params)
    return seconds, model


def jl_fit(cfg, corpus, vocab, warmup: int, iters: int, chunk: int, seed: int = gpt_torch.SEED):
    """jl.fit on the corpus: returns (seconds per timed iteration, trained model). The fit's "epochs" are `chunk`
    steps (eval_every); the first `warmup` steps are left out of the timing. `seed`: initialisation and batches."""
    import dataclasses

    import jupyter_llm as jl
    from jupyter_llm import events as ev

    ends = []

    class Clock:
        def on(self, event):
            if isinstance(event, ev.EpochEnd):
                ends.append((event.step, event.elapsed))

    model = jl_gpt(cfg, vocab, seed)
    train_only = dataclasses.replace(corpus, validation=None)  # no evaluation inside the timed fit
    jl.fit(model, train_only, steps=warmup + iters, eval_every=chunk, batch_size=cfg["batch_size"],
           optimizer=nanogpt_optimizer(), display="none", seed=seed, sinks=[Clock()])
    (s0, t0), (s1, t1) = next(e for e in ends if e[0] >= warmup), ends[-1]
    return ((t1 - t0) / (s1 - s0) if s1 > s0 else float("nan")), model


def jl_generate_ms(model, n: int) -> float:
    """ms per token of `jupyter_llm.models.generate.generate` for `n` new tokens from a one-token prompt (the
    second call: the first compiles)."""
    from jupyter_llm.models.generate import generate

    generate(model, [0], n, temperature=1.0, seed=0)
    t0 = common.clock()
    generate(model, [0], n, temperature=1.0, seed=1)
    return 1000 * (common.clock() - t0) / n


def torch_run(args, warmup: int, iters: int, val_at: int = 0, gen=(), seed: int = gpt_torch.SEED) -> dict | None:
    if not common.have("torch"):
        return None
    cmd = [sys.executable, gpt_torch.__file__, "--warmup", str(warmup), "--iters", str(iters),
           "--threads", str(args.torch_threads), "--seed", str(seed)]
    cmd += ["--tiny"] if args.mode == "tiny" else []
    cmd += ["--val-at", str(val_at)] if val_at else []
    cmd += ["--gen", *map(str, gen)] if gen else []
    out = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if out.returncode:
        raise RuntimeError(f"gpt_torch.py failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv=None):
    import os

    def extra(p):
        p.add_argument("--torch-threads", type=int, default=os.cpu_count(),
                       help="torch.set_num_threads for the reference (default: all cores, as the brief asks)")
        p.add_argument("--val-at", type=int, default=None,
                       help="train this many iterations for the validation loss (default: 2000 in full mode, else off)")

    args = common.parse_args(__doc__.splitlines()[0], argv, extra=extra)
    cfg = gpt_torch.TINY if args.mode == "tiny" else gpt_torch.CONFIG
    warmup, iters, chunk = common.pick(args, (2, 4, 2), (20, 100, 20), (50, 300, 50))
    val_at = args.val_at if args.val_at is not None else common.pick(args, 0, 0, gpt_torch.OPTIM["lr_decay_iters"])
    path = gpt_torch.find_corpus()
    if path is None:
        rows = [common.Row("GPT char (nanoGPT CPU recipe)", "ms/iter", [], None, "tinyshakespeare.txt not found")]
        common.report(rows, args, "Character-level GPT")
        return rows
    train_ids, val_ids, vocab = gpt_torch.load_corpus(path)
    jax_side = have_jl_gpt()
    if jax_side:
        import jupyter_llm as jl

        corpus = jl.datasets.text(path, block_size=cfg["block_size"], val_fraction=0.1)
    peak = matmul.peak_gflops(tries=2) * 1e9 if args.mode != "tiny" else matmul.jax_gflops(256, 256, 256) * 1e9
    ms = {"jl.fit": [], "hand JAX": [], "PyTorch": []}
    t = None
    for r in range(args.repeats):
        common.log(f"gpt: repeat {r + 1}/{args.repeats}")
        for name in common.rotated(ms, r):
            if name == "jl.fit" and jax_side:
                ms[name].append(1000 * jl_fit(cfg, corpus, corpus.vocab_size, warmup, iters, chunk)[0])
            elif name == "hand JAX" and jax_side:
                ms[name].append(1000 * hand_jax(cfg, train_ids, vocab, warmup, iters)[0])
            elif name == "PyTorch":
                t = torch_run(args, warmup, iters)
                if t:
                    ms[name].append(t["ms_per_iter"])
    n_params = jl_gpt(cfg, vocab).num_params() if jax_side else (t or {}).get("params_non_embedding", 0)
    flops = gpt_torch.flops_per_iter(n_params, cfg)
    tokens = cfg["batch_size"] * cfg["block_size"]

    def perf(name):
        v = ms[name]
        if not v:
            return f"{name}: n/a"
        s = statistics.median(v) / 1000
        return f"{name} {common.num(tokens / s)} tok/s, MFU {100 * flops / s / peak:.1f} %"

    torch_ref = ms["PyTorch"] or None
    torch_name = "PyTorch eager" if torch_ref else "PyTorch not installed"
    threads = f"torch threads {args.torch_threads}; " if torch_ref else ""
    base = (f"{n_params / 1e6:.2f}M params, {flops / 1e9:.2f} GFLOP/iter, peak {peak / 1e9:.0f} GFLOP/s; {threads}"
            f"iters {warmup + 1}..{warmup + iters} timed")
    rows = [
        common.Row("GPT char: jl.fit vs PyTorch", "ms/iter", ms["jl.fit"], torch_ref, torch_name,
                   note=f"{perf('jl.fit')}; {perf('PyTorch')}; {base}"),
        common.Row("GPT char: hand JAX step vs PyTorch", "ms/iter", ms["hand JAX"], torch_ref, torch_name,
                   note=f"{perf('hand JAX')}"),
        common.Row("GPT char: jl.fit vs hand JAX step", "ms/iter", ms["jl.fit"], ms["hand JAX"] or None,
                   "hand JAX", note="the cost of jl.fit's loop over a bare jitted step"),
    ]
    gen = common.pick(args, (8, 40), (63, 500), (63, 500))  # within the context; past it (sliding window)
    if jax_side:
        model = jl_gpt(cfg, vocab)
        t = torch_run(args, 1, 1, gen=gen) or {}
        for n in gen:
            how = "inside the context: KV cache" if n < cfg["block_size"] else "past the context: sliding window"
            ours = jl_generate_ms(model, n)
            ref = t.get("gen_ms_per_token", {}).get(str(n))
            rows.append(common.Row(f"GPT char generation, {n} tokens: jl vs PyTorch", "ms/token", [ours],
                                   [ref] if ref else None, "nanoGPT generate" if ref else "PyTorch not installed",
                                   note=f"{how}; {common.num(1000 / ours)} tokens/s; one-token prompt, batch 1"))
    if val_at:
        common.log(f"gpt: {val_at} iterations each for the validation loss")
        t = torch_run(args, 0, 1, val_at=val_at)
        windows = t["val_windows"] if t else random_windows(val_ids, cfg, gpt_torch.SEED)
        ours = {}
        if jax_side:
            model = jl_fit(cfg, corpus, corpus.vocab_size, 0, val_at, min(250, val_at))[1]
            ours["jl.fit"] = [val_losses(model, val_ids, cfg, windows)]
            ours["hand JAX"] = [val_losses(hand_jax(cfg, train_ids, vocab, 0, val_at)[1], val_ids, cfg, windows)]
        rows += val_rows("", ours, [t] if t else [], torch_name, val_at, len(val_ids) - cfg["block_size"],
                         len(windows))
    common.report(rows, args, "Character-level GPT (nanoGPT CPU recipe)")
    return rows


if __name__ == "__main__":
    main()
