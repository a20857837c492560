"""The PyTorch reference for workload 6: nanoGPT's model.py and train.py loop, eager mode, on the CPU.

A faithful transcription of Karpathy's nanoGPT (github.com/karpathy/nanoGPT, model.py and train.py) with the
"shakespeare_char on a CPU" recipe from its README:

    python train.py config/train_shakespeare_char.py --device=cpu --compile=False --eval_iters=20
      --log_interval=1 --block_size=64 --batch_size=12 --n_layer=4 --n_head=4 --n_embd=128 --max_iters=2000
      --lr_decay_iters=2000 --dropout=0.0

i.e. 4 layers, 4 heads, 128 wide, context 64, batch 12, no bias (train.py's default), dropout 0, AdamW
lr 1e-3 with betas (0.9, 0.99) and weight decay 0.1 on 2-D parameters, warm-up 100 iterations then cosine decay to
1e-4 at 2,000, gradient clipping at 1.0, float32.

The validation loss (`--val-at N`) comes from train.py's loop as it is, random-number order included: evaluations
every 250 iterations of `--eval-iters` random batches (20, as the README's command; train.py's default is 200), so at
seed 1337 it prints the same "val loss" the README's command prints here (1.8857 at 2,000 on torch 2.13). That
figure is an estimate from 240 windows; the JSON also gives the loss over every window of the validation text
(`val_loss_all`, what the estimate estimates) and the windows the last estimate drew (`val_windows`), so another
implementation can be scored on the same ones.

Run by gpt.py in a subprocess (so PyTorch and JAX never share a process); standalone:
    python benchmarks/gpt_torch.py --iters 100 --warmup 20 [--val-at 2000 [--eval-iters 20]] [--tiny]
It prints train.py's evaluation lines to stderr and one JSON line: ms/iteration, tokens/s, model FLOPs per
iteration, and the validation losses when asked.
This module imports torch only in `main`, so gpt.py can share the recipe (CONFIG, data, FLOPs, schedule).
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

# nanoGPT's CPU recipe, and a tiny one that only checks the scripts run
CONFIG = {"n_layer": 4, "n_head": 4, "n_embd": 128, "block_size": 64, "batch_size": 12, "dropout": 0.0, "bias": False}
TINY = {"n_layer": 1, "n_head": 2, "n_embd": 32, "block_size": 16, "batch_size": 4, "dropout": 0.0, "bias": False}
OPTIM = {"learning_rate": 1e-3, "min_lr": 1e-4, "warmup_iters": 100, "lr_decay_iters": 2000, "weight_decay": 0.1,
         "beta1": 0.9, "beta2": 0.99, "grad_clip": 1.0}
EVAL_ITERS = 20  # the README's CPU command
EVAL_INTERVAL = 250  # config/train_shakespeare_char.py
SEED = 1337


def find_corpus() -> str | None:
    for path in DATA_CANDIDATES:
        if path and os.path.isfile(path):
            return path
    return None


def load_corpus(path: str):
    """nanoGPT's data/shakespeare_char/prepare.py: sorted characters, first 90 % train, last 10 % validation."""
    import numpy as np

    with open(path, encoding="utf-8") as f:
        data = f.read()
    chars = sorted(set(data))
    stoi = {ch: i for i, ch in enumerate(chars)}
    ids = np.array([stoi[c] for c in data], dtype=np.int64)
    n = len(ids)
    return ids[: int(n * 0.9)], ids[int(n * 0.9):], len(chars)


def get_lr(it: int, o: dict = OPTIM) -> float:
    """train.py's learning-rate schedule: linear warm-up, cosine decay, then min_lr."""
    if it < o["warmup_iters"]:
        return o["learning_rate"] * (it + 1) / (o["warmup_iters"] + 1)
    if it > o["lr_decay_iters"]:
        return o["min_lr"]
    ratio = (it - o["warmup_iters"]) / (o["lr_decay_iters"] - o["warmup_iters"])
    return o["min_lr"] + 0.5 * (1.0 + math.cos(math.pi * ratio)) * (o["learning_rate"] - o["min_lr"])


def flops_per_iter(n_params_non_embedding: int, cfg: dict) -> float:
    """model.py's estimate_mfu: 6N per token plus the attention term, times tokens per iteration."""
    L, H, Q, T = cfg["n_layer"], cfg["n_head"], cfg["n_embd"] // cfg["n_head"], cfg["block_size"]
    per_token = 6 * n_params_non_embedding + 12 * L * H * Q * T
    return per_token * T * cfg["batch_size"]


def build(cfg: dict, vocab_size: int):
    """model.py, unchanged in substance (flash attention path; no generate/crop/from_pretrained)."""
    import torch
    from torch import nn
    from torch.nn import functional as F

    class LayerNorm(nn.Module):
        def __init__(self, ndim, bias):
            super().__init__()
            self.weight = nn.Parameter(torch.ones(ndim))
            self.bias = nn.Parameter(torch.zeros(ndim)) if bias else None

        def forward(self, input):
            return F.layer_norm(input, self.weight.shape, self.weight, self.bias, 1e-5)

    class CausalSelfAttention(nn.Module):
        def __init__(self, c):
            super().__init__()
            assert c["n_embd"] % c["n_head"] == 0
            self.c_attn = nn.Linear(c["n_embd"], 3 * c["n_embd"], bias=c["bias"])
            self.c_proj = nn.Linear(c["n_embd"], c["n_embd"], bias=c["bias"])
            self.attn_dropout = nn.Dropout(c["dropout"])
            self.resid_dropout = nn.Dropout(c["dropout"])
            self.n_head, self.n_embd, self.dropout = c["n_head"], c["n_embd"], c["dropout"]

        def forward(self, x):
            B, T, C = x.size()
            q, k, v = self.c_attn(x).split(self.n_embd, dim=2)
            k = k.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)
            q = q.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)
            v = v.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=None,
                                               dropout_p=self.dropout if self.training else 0, is_causal=True)
            y = y.transpose(1, 2).contiguous().view(B, T, C)
            return self.resid_dropout(self.c_proj(y))

    class MLP(nn.Module):
        def __init__(self, c):
            super().__init__()
            self.c_fc = nn.Linear(c["n_embd"], 4 * c["n_embd"], bias=c["bias"])
            self.gelu = nn.GELU()
            self.c_proj = nn.Linear(4 * c["n_embd"], c["n_embd"], bias=c["bias"])
            self.dropout = nn.Dropout(c["dropout"])

        def forward(self, x):
            return self.dropout(self.c_proj(self.gelu(self.c_fc(x))))

    class Block(nn.Module):
        def __init__(self, c):
            super().__init__()
            self.ln_1 = LayerNorm(c["n_embd"], bias=c["bias"])
            self.attn = CausalSelfAttention(c)
            self.ln_2 = LayerNorm(c["n_embd"], bias=c["bias"])
            self.mlp = MLP(c)

        def forward(self, x):
            x = x + self.attn(self.ln_1(x))
            return x + self.mlp(self.ln_2(x))

    class GPT(nn.Module):
        def __init__(self, c):
            super().__init__()
            self.config = c
            self.transformer = nn.ModuleDict(dict(  # noqa: C408 - as in model.py
                wte=nn.Embedding(c["vocab_size"], c["n_embd"]),
                wpe=nn.Embedding(c["block_size"], c["n_embd"]),
                drop=nn.Dropout(c["dropout"]),
                h=nn.ModuleList([Block(c) for _ in range(c["n_layer"])]),
                ln_f=LayerNorm(c["n_embd"], bias=c["bias"]),
            ))
            self.lm_head = nn.Linear(c["n_embd"], c["vocab_size"], bias=False)
            self.transformer.wte.weight = self.lm_head.weight  # weight tying
            self.apply(self._init_weights)
            for pn, p in self.named_parameters():
                if pn.endswith("c_proj.weight"):
                    torch.nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(2 * c["n_layer"]))

        def get_num_params(self, non_embedding=True):
            n_params = sum(p.numel() for p in self.parameters())
            if non_embedding:
                n_params -= self.transformer.wpe.weight.numel()
            return n_params

        def _init_weights(self, module):
            if isinstance(module, nn.Linear):
                torch.nn.init.normal_(module.weight, mean=0.0, std=0.02)
                if module.bias is not None:
                    torch.nn.init.zeros_(module.bias)
            elif isinstance(module, nn.Embedding):
                torch.nn.init.normal_(module.weight, mean=0.0, std=0.02)

        def forward(self, idx, targets=None):
            _, t = idx.size()
            pos = torch.arange(0, t, dtype=torch.long, device=idx.device)
            x = self.transformer.drop(self.transformer.wte(idx) + self.transformer.wpe(pos))
            for block in self.transformer.h:
                x = block(x)
            x = self.transformer.ln_f(x)
            if targets is None:  # generation: only the last position's logits, as nanoGPT
                return self.lm_head(x[:, [-1], :]), None
            logits = self.lm_head(x)
            loss = F.cross_entropy(logits.view(-1, logits.size(-1)), targets.view(-1), ignore_index=-1)
            return logits, loss

        def configure_optimizers(self, weight_decay, learning_rate, betas):
            params = {pn: p for pn, p in self.named_parameters() if p.requires_grad}
            decay = [p for p in params.values() if p.dim() >= 2]
            nodecay = [p for p in params.values() if p.dim() < 2]
            groups = [{"params": decay, "weight_decay": weight_decay}, {"params": nodecay, "weight_decay": 0.0}]
            return torch.optim.AdamW(groups, lr=learning_rate, betas=betas)  # fused only on CUDA in nanoGPT

    return GPT(dict(cfg, vocab_size=vocab_size))


def generate(model, max_new_tokens: int, block_size: int, temperature: float = 1.0):
    """nanoGPT's GPT.generate from a one-token prompt: each new token runs the model over the (cropped) context,
    no key/value cache."""
    import torch

    model.eval()
    idx = torch.zeros((1, 1), dtype=torch.long)
    with torch.no_grad():
        for _ in range(max_new_tokens):
            cond = idx if idx.size(1) <= block_size else idx[:, -block_size:]
            logits, _ = model(cond)
            probs = torch.softmax(logits[:, -1, :] / temperature, dim=-1)
            idx = torch.cat((idx, torch.multinomial(probs, num_samples=1)), dim=1)
    model.train()
    return idx


def main(argv=None):
    p = argparse.ArgumentParser(description="nanoGPT (PyTorch eager) reference: ms/iteration on the CPU")
    p.add_argument("--iters", type=int, default=100, help="timed iterations")
    p.add_argument("--warmup", type=int, default=20, help="untimed iterations first")
    p.add_argument("--val-at", type=int, default=0, help="also run train.py's loop for this many iterations")
    p.add_argument("--eval-iters", type=int, default=EVAL_ITERS, help="batches per validation estimate")
    p.add_argument("--tiny", action="store_true", help="tiny model (only checks that the script runs)")
    p.add_argument("--seed", type=int, default=SEED)
    p.add_argument("--threads", type=int, default=os.cpu_count(), help="torch.set_num_threads (default: all cores)")
    p.add_argument("--gen", type=int, nargs="*", default=[],
                   help="also time nanoGPT's generate for these numbers of new tokens (ms/token)")
    args = p.parse_args(argv)

    import torch

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    cfg = TINY if args.tiny else CONFIG
    path = find_corpus()
    if path is None:
        raise SystemExit(f"tinyshakespeare.txt not found (looked at {[c for c in DATA_CANDIDATES if c]})")
    train_ids, val_ids, vocab = load_corpus(path)
    train_t, val_t = torch.from_numpy(train_ids), torch.from_numpy(val_ids)
    B, T = cfg["batch_size"], cfg["block_size"]

    def get_batch(split, windows=None):
        """train.py's get_batch; the windows it draws are appended to `windows` when given."""
        data = train_t if split == "train" else val_t
        ix = torch.randint(len(data) - T, (B,))
        if windows is not None:
            windows += ix.tolist()
        x = torch.stack([data[i:i + T] for i in ix])
        y = torch.stack([data[i + 1:i + 1 + T] for i in ix])
        return x, y

    def train(iters, start_it=0, timed_from=0):
        """train.py's loop; returns seconds of the iterations from `timed_from` on."""
        model.train()
        X, Y = get_batch("train")
        t0 = None
        for it in range(start_it, start_it + iters):
            if it - start_it == timed_from:
                t0 = time.perf_counter()
            lr = get_lr(it)
            for group in optimizer.param_groups:
                group["lr"] = lr
            _, loss = model(X, Y)
            X, Y = get_batch("train")  # prefetch, as train.py does
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), OPTIM["grad_clip"])
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
        loss.item()
        return time.perf_counter() - t0

    @torch.no_grad()
    def estimate_loss():
        """train.py's estimate_loss; also returns the windows its validation batches drew."""
        model.eval()
        out, windows = {}, []
        for split in ("train", "val"):
            losses = torch.zeros(args.eval_iters)
            for k in range(args.eval_iters):
                X, Y = get_batch(split, windows if split == "val" else None)
                losses[k] = model(X, Y)[1].item()
            out[split] = float(losses.mean())
        model.train()
        return out, windows

    @torch.no_grad()
    def loss_over_every_window(chunk=1024):
        model.eval()
        n, total = len(val_t) - T, 0.0
        for s0 in range(0, n, chunk):
            ix = range(s0, min(n, s0 + chunk))
            x = torch.stack([val_t[i:i + T] for i in ix])
            y = torch.stack([val_t[i + 1:i + 1 + T] for i in ix])
            total += model(x, y)[1].item() * len(ix)
        model.train()
        return total / n

    def train_py(max_iters):
        """train.py's `while True` loop (gradient_accumulation_steps 1), evaluating every EVAL_INTERVAL."""
        X, Y = get_batch("train")
        it = 0
        while True:
            lr = get_lr(it)
            for group in optimizer.param_groups:
                group["lr"] = lr
            if it % EVAL_INTERVAL == 0 or it == max_iters:
                losses, windows = estimate_loss()
                print(f"step {it}: train loss {losses['train']:.4f}, val loss {losses['val']:.4f}", file=sys.stderr)
                if it == max_iters:  # train.py takes one more step and stops; the weights evaluated are these
                    return losses["val"], windows, loss_over_every_window()
            _, loss = model(X, Y)
            X, Y = get_batch("train")
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), OPTIM["grad_clip"])
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            it += 1

    def fresh():
        m = build(cfg, vocab)
        return m, m.configure_optimizers(OPTIM["weight_decay"], OPTIM["learning_rate"],
                                         (OPTIM["beta1"], OPTIM["beta2"]))

    model, optimizer = fresh()
    seconds = train(args.warmup + args.iters, timed_from=args.warmup)
    n_params = model.get_num_params()
    out = {"ms_per_iter": 1000 * seconds / args.iters, "tokens_per_s": args.iters * B * T / seconds,
           "params_non_embedding": n_params, "flops_per_iter": flops_per_iter(n_params, cfg),
           "threads": torch.get_num_threads(), "torch": torch.__version__, "val_loss": None}
    out["gen_ms_per_token"] = {}
    for n in args.gen:
        generate(model, 8, T)  # warm-up
        t0 = time.perf_counter()
        generate(model, n, T)
        out["gen_ms_per_token"][str(n)] = 1000 * (time.perf_counter() - t0) / n
    if args.val_at:
        torch.manual_seed(args.seed)
        model, optimizer = fresh()
        out["val_loss"], out["val_windows"], out["val_loss_all"] = train_py(args.val_at)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
