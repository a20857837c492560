"""Workload 6: a character-level GPT with nanoGPT's CPU recipe, against the same recipe in PyTorch eager mode.

4 layers, 4 heads, 128 wide, context 64, batch 12, dropout 0, no bias, vocabulary 65 from tiny-shakespeare;
AdamW (0.9, 0.99), weight decay 0.1 on 2-D parameters, warm-up + cosine schedule, clipping at 1.0 (the recipe of
https://github.com/karpathy/nanoGPT#quick-start; gpt_torch.py holds it). Three columns, each timed on iterations
after a warm-up (so compilation is excluded):
  - jl.fit on the corpus, with the recipe's optimizer as an optax chain, per-iteration time from the events;
  - a hand-written JAX training step of the same `jupyter_llm.models.GPT` (jit, donated state, host-drawn random
    windows);
  - PyTorch eager (gpt_torch.py, this project's own PyTorch version of the recipe, in a subprocess per repeat,
    alternating with the JAX runs).
ms/iteration, tokens/s, and model FLOPs utilisation (6 FLOPs per parameter per token plus attention) against the
matmul peak measured here. Also generation speed (ms/token, batch 1, one-token prompt): `jupyter_llm.models.generate`
with its key/value cache against gpt_torch.py's cacheless sampling, for a length inside the context and one past it.
Full mode (or `--val-at N`) also trains each for 2,000 (N) iterations and scores it on the validation text two ways:
the mean loss over every window of 64 tokens in it (the figure that compares implementations), and the loss on
240 random windows drawn at the seed (`gpt_torch.eval_windows`), the same windows for every implementation.

`--nanogpt DIR` also runs nanoGPT's own train.py from a checkout of it at DIR (nothing of it is part of this
project) with its README's CPU command, in a subprocess, and reports its ms/iteration (and, with `--val-at`, the
val loss it prints) against jl.fit. Without it that row is skipped with a note.

Known difference: the PyTorch reference's MLP uses the exact (erf) GELU, jupyter_llm's GPT the tanh approximation.
"""

from __future__ import annotations

import functools
import json
import re
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
    """The recipe's optimizer as an optax chain: clip 1.0, AdamW (0.9, 0.99), decay on 2-D params, its schedule."""
    import jax
    import jax.numpy as jnp
    import optax

    o = gpt_torch.OPTIM

    def schedule(it):
        warm = o["learning_rate"] * (it + 1) / (o["warmup_iters"] + 1)
        ratio = (it - o["warmup_iters"]) / (o["lr_decay_iters"] - o["warmup_iters"])
        cos = o["min_lr"] + 0.5 * (1.0 + jnp.cos(jnp.pi * ratio)) * (o["learning_rate"] - o["min_lr"])
        return jnp.where(it < o["warmup_iters"], warm, jnp.where(it > o["lr_decay_iters"], o["min_lr"], cos))

    def mask(params):  # weight decay on matrices only, as the recipe
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
    """Random training batches on the host: `batch` random windows of `block` tokens and their next tokens."""

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
    """The windows of the drawn-window estimate when there is no PyTorch run to take them from (the same draw)."""
    return gpt_torch.eval_windows(len(val_ids), cfg, seed)


def val_rows(label: str, ours: dict, theirs: list, ref_name: str, val_at: int, n_windows: int, n_drawn: int) -> list:
    """Rows for the validation losses: `ours` maps a name to [(every window, the drawn windows)] per seed;
    `theirs` holds PyTorch's JSON per seed. The drawn-windows row is for the first name only (jl.fit)."""
    rows = []
    every = [t["val_loss_all"] for t in theirs] or None
    drawn = [t["val_loss"] for t in theirs] or None
    for name, v in ours.items():
        rows.append(common.Row(f"GPT char val loss @{val_at}{label}, every window: {name} vs PyTorch", "nats",
                               [a for a, _ in v], every, ref_name,
                               note=f"mean over all {n_windows:,} validation windows (the figure that compares)"))
    for name, v in list(ours.items())[:1]:
        rows.append(common.Row(f"GPT char val loss @{val_at}{label}, 20 random batches: {name} vs PyTorch",
                               "nats", [b for _, b in v], drawn, ref_name,
                               note=f"both models on the same {n_drawn} windows, drawn at the seed "
                                    "(an estimate of the every-window loss)"))
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


NANOGPT_ITER = re.compile(r"^iter (\d+): loss ([\d.]+), time ([\d.]+)ms")
NANOGPT_EVAL = re.compile(r"^step (\d+): train loss ([\d.]+), val loss ([\d.]+)")


def parse_nanogpt(log: str, warmup: int) -> dict:
    """nanoGPT train.py's printed lines -> {"ms_per_iter": median time of the iterations from `warmup` on,
    "iters": how many, "val_loss": {step: val loss}}. Its "iter N: loss L, time Tms, mfu M%" lines time one
    iteration each (iteration 0's includes the first evaluation, hence the warm-up)."""
    times, val = [], {}
    for line in log.splitlines():
        if m := NANOGPT_ITER.match(line.strip()):
            if int(m.group(1)) >= warmup:
                times.append(float(m.group(3)))
        elif m := NANOGPT_EVAL.match(line.strip()):
            val[int(m.group(1))] = float(m.group(3))
    return {"ms_per_iter": statistics.median(times) if times else None, "iters": len(times), "val_loss": val}


def nanogpt_run(checkout: str, iters: int, threads: int, corpus_path: str, warmup: int = 0,
                timeout: float = 3600, cfg: dict = gpt_torch.CONFIG) -> dict:
    """Run nanoGPT's own train.py from the checkout at `checkout` with its README's CPU shakespeare_char command
    (the model's sizes from `cfg`) for `iters` iterations; return `parse_nanogpt` of its output.
    Its data step, data/shakespeare_char/prepare.py, downloads the text unless input.txt is there: the local
    copy is written there first. Checkpoints go to a temporary directory, not into the checkout."""
    import os
    import shutil
    import tempfile

    checkout = os.path.abspath(checkout)
    data_dir = os.path.join(checkout, "data", "shakespeare_char")
    if not os.path.isfile(os.path.join(checkout, "train.py")) or not os.path.isdir(data_dir):
        raise SystemExit(f"--nanogpt {checkout}: not a nanoGPT checkout (no train.py or data/shakespeare_char)")
    env = dict(os.environ, OMP_NUM_THREADS=str(threads))
    if not all(os.path.isfile(os.path.join(data_dir, f)) for f in ("train.bin", "val.bin", "meta.pkl")):
        if not os.path.isfile(os.path.join(data_dir, "input.txt")):
            shutil.copyfile(corpus_path, os.path.join(data_dir, "input.txt"))
        subprocess.run([sys.executable, "prepare.py"], cwd=data_dir, env=env, check=True, capture_output=True)
    c = cfg
    with tempfile.TemporaryDirectory() as out_dir:
        cmd = [sys.executable, "train.py", "config/train_shakespeare_char.py", "--device=cpu", "--compile=False",
               f"--eval_iters={gpt_torch.EVAL_ITERS}", "--log_interval=1", f"--block_size={c['block_size']}",
               f"--batch_size={c['batch_size']}", f"--n_layer={c['n_layer']}", f"--n_head={c['n_head']}",
               f"--n_embd={c['n_embd']}", f"--max_iters={iters}", f"--lr_decay_iters={iters}", "--dropout=0.0",
               f"--out_dir={out_dir}"]
        common.log(f"gpt: nanoGPT: {' '.join(cmd[1:])} (in {checkout})")
        out = subprocess.run(cmd, cwd=checkout, env=env, capture_output=True, text=True, timeout=timeout,
                             check=False)
    if out.returncode:
        raise RuntimeError(f"nanoGPT's train.py failed:\n{out.stderr[-3000:]}")
    return parse_nanogpt(out.stdout + "\n" + out.stderr, warmup)


def nanogpt_rows(args, fit_ms: list, warmup: int, iters: int, val_at: int, corpus_path: str, fit_val=None,
                 cfg: dict = gpt_torch.CONFIG) -> list:
    """The row(s) against nanoGPT's own train.py; one skipped row (no values, a note) without --nanogpt."""
    name = "GPT char: jl.fit vs nanoGPT's train.py"
    if not args.nanogpt:
        return [common.Row(name, "ms/iter", [], None, "skipped",
                           note="pass --nanogpt DIR (a checkout of github.com/karpathy/nanoGPT) to run its train.py")]
    n = val_at or warmup + iters
    res = nanogpt_run(args.nanogpt, n, args.torch_threads, corpus_path, warmup, cfg=cfg)
    times = res["ms_per_iter"]
    rows = [common.Row(name, "ms/iter", [statistics.median(fit_ms)] if fit_ms else [],
                       [times] if times else None, "nanoGPT train.py",
                       note=f"nanoGPT: median of its printed times, {res['iters']} iterations of a {n}-iteration run "
                            "(eager, --compile=False); jl.fit: median over its repeats")]
    if val_at and fit_val is not None and res["val_loss"]:
        step = max(res["val_loss"])  # its last printed evaluation
        rows.append(common.Row(f"GPT char val loss @{val_at}: jl.fit (every window) vs nanoGPT's printed estimate",
                               "nats", [fit_val], [res["val_loss"][step]], "nanoGPT train.py",
                               note=f"nanoGPT: its 'val loss' line at step {step} ({gpt_torch.EVAL_ITERS} random "
                                    "batches); jl.fit: over every validation window"))
    return rows


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
        p.add_argument("--nanogpt", default=None, metavar="DIR",
                       help="a checkout of nanoGPT: also run its own train.py, reported against jl.fit")

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
                                   [ref] if ref else None, "PyTorch eager" if ref else "PyTorch not installed",
                                   note=f"{how}; {common.num(1000 / ours)} tokens/s; one-token prompt, batch 1"))
    ours = {}
    if val_at:
        common.log(f"gpt: {val_at} iterations each for the validation loss")
        t = torch_run(args, 0, 1, val_at=val_at)
        windows = t["val_windows"] if t else random_windows(val_ids, cfg, gpt_torch.SEED)
        if jax_side:
            model = jl_fit(cfg, corpus, corpus.vocab_size, 0, val_at, min(250, val_at))[1]
            ours["jl.fit"] = [val_losses(model, val_ids, cfg, windows)]
            ours["hand JAX"] = [val_losses(hand_jax(cfg, train_ids, vocab, 0, val_at)[1], val_ids, cfg, windows)]
        rows += val_rows("", ours, [t] if t else [], torch_name, val_at, len(val_ids) - cfg["block_size"],
                         len(windows))
    fit_val = ours["jl.fit"][0][0] if "jl.fit" in ours else None
    rows += nanogpt_rows(args, ms["jl.fit"], warmup, iters, val_at, path, fit_val, cfg)
    common.report(rows, args, "Character-level GPT (nanoGPT's CPU recipe)")
    return rows


if __name__ == "__main__":
    main()
