"""The PyTorch reference for workload 6: the char GPT recipe in PyTorch eager mode, on the CPU, written for this
project.

The recipe is nanoGPT's "shakespeare_char on a CPU" (https://github.com/karpathy/nanoGPT#quick-start): a pre-LayerNorm
GPT of 4 layers, 4 heads, 128 wide, context 64, batch 12, no biases, no dropout, output tied to the token embedding,
GELU in the MLP; AdamW with betas (0.9, 0.99), lr 1e-3, weight decay 0.1 on the 2-D weights only, 100 warm-up
iterations then a cosine to 1e-4 at 2,000, gradient norm clipped at 1.0, float32. The code is this project's own,
shaped like `jupyter_llm/models/gpt.py` (fused q/k/v, N(0, 0.02) weights with the residual projections scaled by
1/sqrt(2 * layers)). To compare against nanoGPT's own code, `gpt.py --nanogpt DIR` runs its train.py from a
checkout you name.

The validation figure that compares implementations is `val_loss_all`: the mean loss over every window of the
validation text. `--val-at N` also gives `val_loss`, the loss on `EVAL_ITERS` x batch windows drawn by
`eval_windows` (a NumPy generator at the seed), and those windows (`val_windows`), so another implementation can be
scored on the same ones; it is an estimate of `val_loss_all`, not a reproduction of anyone's printed number.

Run by gpt.py in a subprocess (so PyTorch and JAX never share a process); standalone:
    python benchmarks/gpt_torch.py --iters 100 --warmup 20 [--val-at 2000] [--gen 63 500] [--tiny]
It prints one JSON line: ms/iteration, tokens/s, model FLOPs per iteration, and the validation losses when asked.
This module imports torch only inside its functions, so gpt.py can share the recipe (CONFIG, data, FLOPs, schedule).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
DATA_CANDIDATES = (
    os.environ.get("JL_BENCH_SHAKESPEARE", ""),
    os.path.join(os.path.dirname(HERE), "tests", "data", "tinyshakespeare.txt"),
    "/work/shared/data/tinyshakespeare.txt",
)

# The CPU recipe, and a tiny model that only checks the scripts run
CONFIG = {"n_layer": 4, "n_head": 4, "n_embd": 128, "block_size": 64, "batch_size": 12, "dropout": 0.0, "bias": False}
TINY = {"n_layer": 1, "n_head": 2, "n_embd": 32, "block_size": 16, "batch_size": 4, "dropout": 0.0, "bias": False}
OPTIM = {"learning_rate": 1e-3, "min_lr": 1e-4, "warmup_iters": 100, "lr_decay_iters": 2000, "weight_decay": 0.1,
         "beta1": 0.9, "beta2": 0.99, "grad_clip": 1.0}
EVAL_ITERS = 20  # batches in the drawn-window estimate (the recipe's CPU command uses 20)
EVAL_INTERVAL = 250  # the recipe's evaluation interval (gpt.py --nanogpt uses it)
SEED = 1337


def find_corpus() -> str | None:
    for path in DATA_CANDIDATES:
        if path and os.path.isfile(path):
            return path
    return None


def load_corpus(path: str):
    """Characters as ids in sorted order; the first 90 % of the text trains, the rest validates.
    Returns (train ids, validation ids, vocabulary size)."""
    import numpy as np

    with open(path, encoding="utf-8") as f:
        text = f.read()
    alphabet = sorted(set(text))
    index = {ch: i for i, ch in enumerate(alphabet)}
    ids = np.fromiter((index[ch] for ch in text), dtype=np.int64, count=len(text))
    cut = int(len(ids) * 0.9)
    return ids[:cut], ids[cut:], len(alphabet)


def get_lr(it: int, o: dict = OPTIM) -> float:
    """The learning rate at iteration `it` (from 0): a linear ramp over the warm-up, a half cosine from the peak to
    `min_lr` at `lr_decay_iters`, flat after."""
    peak, floor, warm, end = o["learning_rate"], o["min_lr"], o["warmup_iters"], o["lr_decay_iters"]
    if it < warm:
        return peak * (it + 1) / (warm + 1)
    if it > end:
        return floor
    progress = (it - warm) / (end - warm)
    return floor + (peak - floor) * (1.0 + math.cos(math.pi * progress)) / 2


def flops_per_iter(n_params_non_embedding: int, cfg: dict) -> float:
    """Model FLOPs of one training iteration: 6 per parameter per token (forward and backward) plus the attention's
    score and value products (12 x layers x width x context per token), times the tokens in a batch."""
    layers, width, context = cfg["n_layer"], cfg["n_embd"], cfg["block_size"]
    per_token = 6 * n_params_non_embedding + 12 * layers * width * context
    return per_token * context * cfg["batch_size"]


def eval_windows(n_val: int, cfg: dict, seed: int):
    """The start offsets of the drawn-window estimate: EVAL_ITERS batches of random windows from a NumPy generator
    seeded with `seed` (so the JAX side draws the same ones without PyTorch)."""
    import numpy as np

    n = EVAL_ITERS * cfg["batch_size"]
    return np.random.default_rng(seed).integers(0, n_val - cfg["block_size"], n)


def build(cfg: dict, vocab_size: int):
    """The GPT of the recipe as a torch module: `model(ids) -> logits` for ids of shape (batch, time)."""
    import torch
    from torch import nn
    from torch.nn import functional as F

    width, heads, layers, bias = cfg["n_embd"], cfg["n_head"], cfg["n_layer"], cfg["bias"]
    resid_std = 0.02 / math.sqrt(2 * layers)  # each block adds to the residual stream twice

    def linear(n_in, n_out, std=0.02):
        layer = nn.Linear(n_in, n_out, bias=bias)
        nn.init.normal_(layer.weight, 0.0, std)
        if layer.bias is not None:
            nn.init.zeros_(layer.bias)
        return layer

    class Block(nn.Module):
        """Pre-LayerNorm: x + attention(norm(x)), then x + mlp(norm(x))."""

        def __init__(self):
            super().__init__()
            self.norm_attn = nn.LayerNorm(width, bias=bias)
            self.qkv = linear(width, 3 * width)
            self.attn_out = linear(width, width, resid_std)
            self.norm_mlp = nn.LayerNorm(width, bias=bias)
            self.mlp_in = linear(width, 4 * width)
            self.mlp_out = linear(4 * width, width, resid_std)

        def forward(self, x):
            b, t, c = x.shape
            # (B, T, 3, heads, head_dim) -> three (B, heads, T, head_dim)
            q, k, v = self.qkv(self.norm_attn(x)).view(b, t, 3, heads, c // heads).permute(2, 0, 3, 1, 4)
            y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
            x = x + self.attn_out(y.transpose(1, 2).reshape(b, t, c))
            return x + self.mlp_out(F.gelu(self.mlp_in(self.norm_mlp(x))))  # exact (erf) GELU

    class CharGPT(nn.Module):
        def __init__(self):
            super().__init__()
            self.tokens = nn.Embedding(vocab_size, width)
            self.positions = nn.Embedding(cfg["block_size"], width)
            for table in (self.tokens, self.positions):
                nn.init.normal_(table.weight, 0.0, 0.02)
            self.blocks = nn.ModuleList(Block() for _ in range(layers))
            self.norm_out = nn.LayerNorm(width, bias=bias)

        def forward(self, ids):
            x = self.tokens(ids) + self.positions(torch.arange(ids.shape[1]))
            for block in self.blocks:
                x = block(x)
            return self.norm_out(x) @ self.tokens.weight.T  # tied output

        def n_params(self) -> int:
            """Parameters without the position table (the tied token table counts once), as the FLOP count
            wants."""
            return sum(p.numel() for p in self.parameters()) - self.positions.weight.numel()

    return CharGPT()


def make_optimizer(model):
    import torch

    o = OPTIM
    matrices = [p for p in model.parameters() if p.dim() >= 2]
    vectors = [p for p in model.parameters() if p.dim() < 2]
    return torch.optim.AdamW([{"params": matrices, "weight_decay": o["weight_decay"]},
                              {"params": vectors, "weight_decay": 0.0}],
                             lr=o["learning_rate"], betas=(o["beta1"], o["beta2"]))


def generate(model, n_new: int, context: int):
    """Sample `n_new` tokens from a one-token prompt, batch 1, recomputing the last `context` tokens each step (no
    key/value cache)."""
    import torch

    seq = torch.zeros((1, 1), dtype=torch.long)
    with torch.inference_mode():
        for _ in range(n_new):
            logits = model(seq[:, -context:])[:, -1]
            seq = torch.cat([seq, torch.multinomial(torch.softmax(logits, -1), 1)], dim=1)
    return seq


class Trainer:
    """The recipe's loop: random training windows each step, scheduled AdamW, clipping."""

    def __init__(self, cfg, vocab, train_ids, seed):
        import torch

        torch.manual_seed(seed)
        self.cfg, self.torch = cfg, torch
        self.model = build(cfg, vocab)
        self.opt = make_optimizer(self.model)
        self.train_ids = torch.from_numpy(train_ids)
        self.rng = torch.Generator().manual_seed(seed)
        self.offsets = torch.arange(cfg["block_size"])
        self.step_no = 0

    def batch(self):
        t = self.cfg["block_size"]
        starts = self.torch.randint(len(self.train_ids) - t, (self.cfg["batch_size"], 1), generator=self.rng)
        ix = starts + self.offsets
        return self.train_ids[ix], self.train_ids[ix + 1]

    def step(self):
        torch, model = self.torch, self.model
        x, y = self.batch()
        for group in self.opt.param_groups:
            group["lr"] = get_lr(self.step_no)
        logits = model(x)
        loss = torch.nn.functional.cross_entropy(logits.flatten(0, 1), y.flatten())
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), OPTIM["grad_clip"])
        self.opt.step()
        self.step_no += 1
        return loss

    def mean_loss(self, ids, starts, chunk=1024) -> float:
        """Mean next-token loss of the windows of `ids` starting at `starts`."""
        torch = self.torch
        ids, offsets = torch.from_numpy(ids), self.offsets
        starts = torch.as_tensor(starts)
        total = 0.0
        with torch.inference_mode():
            for s0 in range(0, len(starts), chunk):
                ix = starts[s0:s0 + chunk, None] + offsets
                logits = self.model(ids[ix])
                total += torch.nn.functional.cross_entropy(logits.flatten(0, 1), ids[ix + 1].flatten()).item() * len(ix)
        return total / len(starts)


def main(argv=None):
    p = argparse.ArgumentParser(description="The char GPT recipe in PyTorch eager: ms/iteration on the CPU")
    p.add_argument("--iters", type=int, default=100, help="timed iterations")
    p.add_argument("--warmup", type=int, default=20, help="untimed iterations first")
    p.add_argument("--val-at", type=int, default=0, help="also train a fresh model this many iterations and score it")
    p.add_argument("--tiny", action="store_true", help="tiny model (only checks that the script runs)")
    p.add_argument("--seed", type=int, default=SEED)
    p.add_argument("--threads", type=int, default=os.cpu_count(), help="torch.set_num_threads (default: all cores)")
    p.add_argument("--gen", type=int, nargs="*", default=[],
                   help="also time generation of these numbers of new tokens (ms/token)")
    args = p.parse_args(argv)

    import numpy as np
    import torch

    torch.set_num_threads(args.threads)
    cfg = TINY if args.tiny else CONFIG
    path = find_corpus()
    if path is None:
        raise SystemExit(f"tinyshakespeare.txt not found (looked at {[c for c in DATA_CANDIDATES if c]})")
    train_ids, val_ids, vocab = load_corpus(path)
    tokens = cfg["batch_size"] * cfg["block_size"]

    run = Trainer(cfg, vocab, train_ids, args.seed)
    for _ in range(args.warmup):
        run.step()
    t0 = time.perf_counter()
    for _ in range(args.iters):
        loss = run.step()
    loss.item()
    seconds = time.perf_counter() - t0
    n_params = run.model.n_params()
    out = {"ms_per_iter": 1000 * seconds / args.iters, "tokens_per_s": args.iters * tokens / seconds,
           "params_non_embedding": n_params, "flops_per_iter": flops_per_iter(n_params, cfg),
           "threads": torch.get_num_threads(), "torch": torch.__version__, "val_loss": None, "gen_ms_per_token": {}}
    run.model.eval()
    for n in args.gen:
        generate(run.model, 8, cfg["block_size"])  # warm-up
        t0 = time.perf_counter()
        generate(run.model, n, cfg["block_size"])
        out["gen_ms_per_token"][str(n)] = 1000 * (time.perf_counter() - t0) / n
    if args.val_at:
        run = Trainer(cfg, vocab, train_ids, args.seed)
        for it in range(args.val_at):
            loss = run.step()
            if (it + 1) % EVAL_INTERVAL == 0:
                print(f"gpt_torch: iteration {it + 1}, training loss {loss.item():.4f}", file=sys.stderr)
        run.model.eval()
        windows = eval_windows(len(val_ids), cfg, args.seed)
        out["val_loss"] = run.mean_loss(val_ids, windows)
        out["val_windows"] = windows.tolist()
        out["val_loss_all"] = run.mean_loss(val_ids, np.arange(len(val_ids) - cfg["block_size"]))
    print(json.dumps(out))


if __name__ == "__main__":
    main()
