"""Workload 1: the machine's practical matmul peak, so utilisation elsewhere is measured, not assumed.

- float32 2048x2048 @ 2048x2048 through `jax.jit` (GFLOP/s), against NumPy's BLAS on the same arrays;
- the GPT-shaped matmul (768x128) @ (128x512) (a batch of 12x64 tokens through a 128-wide layer), against the
  2048 figure: its ratio is the fraction of the peak such small matmuls reach.
"""

from __future__ import annotations

import common


def jax_gflops(m: int, k: int, n: int, seed: int = 0, tries: int = 5) -> float:
    """GFLOP/s of a jitted float32 (m, k) @ (k, n), best of `tries`."""
    import jax
    import jax.numpy as jnp

    ka, kb = jax.random.split(jax.random.key(seed))
    a = jax.random.normal(ka, (m, k), jnp.float32)
    b = jax.random.normal(kb, (k, n), jnp.float32)
    f = jax.jit(jnp.matmul)
    return common.best_rate(lambda: f(a, b).block_until_ready(), 2.0 * m * k * n, tries=tries) / 1e9


def numpy_gflops(m: int, k: int, n: int, seed: int = 0, tries: int = 5) -> float:
    import numpy as np

    rng = np.random.default_rng(seed)
    a = rng.standard_normal((m, k), dtype=np.float32)
    b = rng.standard_normal((k, n), dtype=np.float32)
    return common.best_rate(lambda: a @ b, 2.0 * m * k * n, tries=tries) / 1e9


def peak_gflops(tries: int = 3) -> float:
    """The practical float32 peak through jax.jit (2048^3 matmul), for utilisation figures in other workloads."""
    return jax_gflops(2048, 2048, 2048, tries=tries)


def main(argv=None):
    args = common.parse_args(__doc__.splitlines()[0], argv)
    big = common.pick(args, 256, 2048, 2048)
    tries = common.pick(args, 1, 3, 5)
    jax_big, np_big, gpt_shaped, big_again = [], [], [], []
    for r in range(args.repeats):
        common.log(f"matmul: repeat {r + 1}/{args.repeats}")
        jax_big.append(jax_gflops(big, big, big, tries=tries))
        np_big.append(numpy_gflops(big, big, big, tries=tries))
        gpt_shaped.append(jax_gflops(768, 128, 512, tries=tries))
        big_again.append(jax_gflops(big, big, big, tries=tries))
    # the small matmul is compared with the peak measured around it in the same repeat
    around = [max(a, b) for a, b in zip(jax_big, big_again)]
    rows = [
        common.Row(f"matmul f32 {big}² jax.jit", "GFLOP/s", jax_big, np_big, "NumPy BLAS",
                   note="the practical peak used for utilisation"),
        common.Row("matmul f32 (768×128)·(128×512) jax.jit", "GFLOP/s", gpt_shaped, around, f"jax.jit {big}²",
                   note="ratio = fraction of the peak a GPT-sized matmul reaches"),
    ]
    common.report(rows, args, "Matmul peak")
    return rows


if __name__ == "__main__":
    main()
