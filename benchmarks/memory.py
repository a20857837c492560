"""Workload 5: peak host memory of jl.fit against the hand-written JAX loops (MLP, batch 256, two epochs).

Float32 input (the user's array: jl.fit places a copy on the device) and, outside tiny mode, float64 input (as pandas
and scikit-learn give data: jl.fit converts it into an aligned array that the CPU device uses in place; the hand
loop converts it with `astype`).

Each variant runs in a fresh subprocess that builds the data, trains, and reports `ru_maxrss` (the peak resident
set of the process: the interpreter, JAX, the data, its device copy and the loop's own copies). The notes give the
part added after the data was built (peak minus the resident set just before training). Target: within 1.2x.
jl.fit's persistent compilation cache is off in these processes, so every variant compiles its steps.
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys

import common
import numpy as np

VARIANTS = ("jl.fit", "hand jit", "hand scan")


def rss_mb() -> float:
    """Current resident set (MB), from /proc (Linux)."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * resource.getpagesize() / 2**20
    except OSError:
        return float("nan")


def child(variant: str, n: int, epochs: int, dtype: str = "float32") -> dict:
    import jax
    import mlp
    import optax  # noqa: F401 - every library is imported before the baseline
    from flax import nnx  # noqa: F401

    import jupyter_llm as jl

    jl.fit  # noqa: B018 - load it now

    x, y = mlp.make_data(n)
    x = x.astype(dtype, copy=False)  # float64: as pandas and scikit-learn give data
    jax.devices()  # start the backend before the baseline
    before = rss_mb()
    fn = {"jl.fit": mlp.jl_fit_epochs, "hand jit": mlp.hand_jit_epochs, "hand scan": mlp.hand_scan_epochs}[variant]
    given = x  # the user's array stays alive, as it does in a notebook's namespace
    if variant != "jl.fit" and x.dtype != np.float32:
        x = x.astype(np.float32)  # the hand-written loops convert it themselves (jl.fit converts what it is given)
    fn(x, y, 256, epochs)
    del given
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KB on Linux
    return {"peak_mb": peak, "before_mb": before}


def measure(variant: str, mode: str, dtype: str = "float32") -> dict:
    env = dict(os.environ, JUPYTER_LLM_COMPILE_CACHE="0")  # every variant compiles (none loads from disk)
    out = subprocess.run([sys.executable, __file__, "--child", variant, "--dtype", dtype, f"--{mode}"],
                         capture_output=True, text=True, env=env, check=False)
    if out.returncode:
        raise RuntimeError(f"memory child {variant!r} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv=None):
    def extra(p):
        p.add_argument("--child", choices=VARIANTS, help=argparse_help)
        p.add_argument("--dtype", default="float32", choices=("float32", "float64"), help=argparse_help)

    args = common.parse_args(__doc__.splitlines()[0], argv, extra=extra)
    n = common.pick(args, 2048, 60_000, 60_000)
    epochs = 2
    if args.child:
        print(json.dumps(child(args.child, n, epochs, args.dtype)))
        return None
    runs = {v: [] for v in VARIANTS}
    f64 = {v: [] for v in VARIANTS[:2]}  # float64 input: jl.fit converts it, the hand loop converts it itself
    variants = VARIANTS[:2] if args.mode == "tiny" else VARIANTS  # tiny: one child of each kind is enough
    for r in range(common.pick(args, 1, 2, 3)):  # the peak barely varies: fewer runs than elsewhere
        for v in common.rotated(variants, r):
            common.log(f"memory: repeat {r + 1}, {v}")
            runs[v].append(measure(v, args.mode))
        if args.mode != "tiny":
            for v in common.rotated(f64, r):
                common.log(f"memory: repeat {r + 1}, {v}, float64 input")
                f64[v].append(measure(v, args.mode, "float64"))
    ours = [d["peak_mb"] for d in runs["jl.fit"]]
    added = {v: common.num(sorted(d["peak_mb"] - d["before_mb"] for d in runs[v])[len(runs[v]) // 2])
             for v in variants}
    rows = [common.Row(f"peak RSS: jl.fit vs {v}", "MB", ours, [d["peak_mb"] for d in runs[v]], v,
                       target=common.Target("ratio", "<=", 1.2),
                       note=f"{n:,}×784 f32 data ({n * 784 * 4 / 2**20:.0f} MB); added by training: jl.fit "
                            f"{added['jl.fit']} MB, {v} {added[v]} MB")
            for v in variants[1:]]
    if f64["jl.fit"]:
        added64 = {v: common.num(sorted(d["peak_mb"] - d["before_mb"] for d in f64[v])[len(f64[v]) // 2])
                   for v in f64}
        rows.append(common.Row(
            "peak RSS, float64 input: jl.fit vs hand jit", "MB", [d["peak_mb"] for d in f64["jl.fit"]],
            [d["peak_mb"] for d in f64["hand jit"]], "hand jit", target=common.Target("ratio", "<=", 1.2),
            note=f"{n:,}×784 f64 data ({n * 784 * 8 / 2**20:.0f} MB), converted to f32 by each; added by training: "
                 f"jl.fit {added64['jl.fit']} MB (its aligned f32 copy is the device array), hand jit "
                 f"{added64['hand jit']} MB"))
    common.report(rows, args, "Peak host memory")
    return rows


argparse_help = "internal: run one variant and print its memory as JSON"

if __name__ == "__main__":
    main()
