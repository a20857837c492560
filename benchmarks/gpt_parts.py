"""Where the char GPT's training step spends its time: the step with one part of the model replaced at a time.

Each variant is the step jl.fit compiles for the nanoGPT CPU recipe (the model's forward pass through
`flat_matmuls`, its gradient, nanoGPT's clip + AdamW, 10 steps per dispatch in one compiled loop), with one part
swapped for the cheapest stand-in that keeps every shape and every matmul:
  - GELU -> identity; LayerNorm -> identity; the attention's mask and softmax -> none (its two einsums stay);
  - the attention core (head transposes, both einsums, mask, softmax) -> q + k + v;
  - all of those at once: what is left is the matmul skeleton (every Linear, embeddings, loss, optimizer);
  - the optimizer -> plain SGD; forward pass only (no gradient, no update).
The variants are timed in rotation, each repeat in a new order, and each row is that variant / the full step in the
same repeat; "saves" is the difference. Not part of run.py (about 4 minutes in quick mode):

    python benchmarks/gpt_parts.py --quick
"""

from __future__ import annotations

import contextlib
import functools
import statistics
from unittest import mock

import common
import gpt
import gpt_torch

STEPS_PER_CALL = 10


def _no_softmax(q, k, v, mask=None, *, is_causal=False):
    import jax.numpy as jnp

    return jnp.einsum("bnts,bsnh->btnh", jnp.einsum("btnh,bsnh->bnts", q, k) * 0.01, v)


def _sum_qkv(q, k, v, mask=None, *, is_causal=False):
    return q + k + v


def _identity_ln(self, x, *args, **kwargs):
    return x


def _identity(x, *args, **kwargs):
    return x


# name -> the patches that replace the part (applied while the step is traced)
VARIANTS = {
    "full step": (),
    "GELU -> identity": (("jax.nn.gelu", _identity),),
    "LayerNorm -> identity": (("flax.nnx.LayerNorm.__call__", _identity_ln),),
    "attention mask+softmax -> none": (("jupyter_llm.models.gpt.dot_product_attention", _no_softmax),),
    "attention core -> q+k+v": (("jupyter_llm.models.gpt.dot_product_attention", _sum_qkv),),
    "matmul skeleton (all three)": (("jax.nn.gelu", _identity), ("flax.nnx.LayerNorm.__call__", _identity_ln),
                                    ("jupyter_llm.models.gpt.dot_product_attention", _sum_qkv)),
    "optimizer -> SGD": (),
    "forward only": (),
}


def build(name: str, cfg: dict, vocab: int, train_ids):
    """The compiled chunk of `name` and its inputs: a function that runs STEPS_PER_CALL steps and blocks."""
    import jax
    import jax.numpy as jnp
    import optax
    from flax import nnx

    from jupyter_llm.train.flat_matmuls import flat_matmuls

    with contextlib.ExitStack() as patches:
        for target, new in VARIANTS[name]:
            patches.enter_context(mock.patch(target, new))
        model = gpt.jl_gpt(cfg, vocab)
        graphdef, params, rest = nnx.split(model, nnx.Param, ...)
        tx = optax.sgd(1e-3) if name == "optimizer -> SGD" else gpt.nanogpt_optimizer()
        forward = flat_matmuls(lambda p, x: nnx.merge(graphdef, p, rest)(x))

        def loss(p, x, y):
            return optax.softmax_cross_entropy_with_integer_labels(forward(p, x), y).mean()

        def step(i, carry):
            p, opt, xs, ys = carry
            if name == "forward only":  # the loss feeds the carry, so the forward pass is not dead code
                value = loss(p, xs[i], ys[i])
                return jax.tree.map(lambda a: a + 0.0 * value, p), opt, xs, ys
            grads = jax.grad(loss)(p, xs[i], ys[i])
            updates, opt = tx.update(grads, opt, p)
            return optax.apply_updates(p, updates), opt, xs, ys

        @functools.partial(jax.jit, donate_argnums=(0, 1))
        def chunk(p, opt, xs, ys):
            return jax.lax.fori_loop(0, STEPS_PER_CALL, step, (p, opt, xs, ys))[:2]

        batches = gpt.Windows(train_ids, cfg["block_size"], cfg["batch_size"], gpt_torch.SEED)
        xs, ys = (jnp.asarray(a) for a in zip(*(batches() for _ in range(STEPS_PER_CALL))))
        state = chunk(params, tx.init(params), xs, ys)  # compiles while the patches hold
        jax.block_until_ready(state)

    def run(calls: int) -> float:
        """Seconds per step over `calls` dispatches."""
        nonlocal state
        t0 = common.clock()
        for _ in range(calls):
            state = chunk(*state, xs, ys)
        jax.block_until_ready(state)
        return (common.clock() - t0) / (calls * STEPS_PER_CALL)

    return run


def main(argv=None):
    args = common.parse_args(__doc__.splitlines()[0], argv)
    cfg = gpt_torch.TINY if args.mode == "tiny" else gpt_torch.CONFIG
    calls = common.pick(args, 1, 10, 20)
    path = gpt_torch.find_corpus()
    if path is None or not gpt.have_jl_gpt():
        common.report([common.Row("GPT step parts", "ms/step", [], None, "tinyshakespeare.txt or jupyter_llm "
                                  "missing")], args, "Where the char GPT's training step spends its time")
        return
    train_ids, _, vocab = gpt_torch.load_corpus(path)
    runs = {}
    for name in VARIANTS:
        common.log(f"gpt_parts: compiling '{name}'")
        runs[name] = build(name, cfg, vocab, train_ids)
    ms = {name: [] for name in VARIANTS}
    for r in range(args.repeats):
        common.log(f"gpt_parts: repeat {r + 1}/{args.repeats}")
        for name in common.rotated(VARIANTS, r):
            runs[name](1)  # one untimed dispatch after the switch
            ms[name].append(1000 * runs[name](calls))
    full = ms["full step"]
    rows = []
    for name, values in ms.items():
        if name == "full step":
            rows.append(common.Row(f"GPT step: {name}", "ms/step", values, note=f"{STEPS_PER_CALL} steps per "
                                   f"dispatch, {calls} dispatch{'es' if calls != 1 else ''} timed per repeat"))
            continue
        saved = statistics.median(f - v for f, v in zip(full, values))
        rows.append(common.Row(f"GPT step: {name}", "ms/step", values, full, "full step",
                               note=f"saves {common.num(saved)} ms/step (median of the paired differences)"))
    common.report(rows, args, "Where the char GPT's training step spends its time")
    return rows


if __name__ == "__main__":
    main()
