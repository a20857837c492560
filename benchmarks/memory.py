"""Workload 5: peak host memory of jl.fit against the hand-written JAX loops (MLP, batch 256, two epochs).

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

VARIANTS = ("jl.fit", "hand jit", "hand scan")


def rss_mb() -> float:
    """Current resident set (MB), from /proc (Linux)."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * resource.getpagesize() / 2**20
    except OSError:
        return float("nan")


def child(variant: str, n: int, epochs: int) -> dict:
    import jax
    import mlp
    import optax  # noqa: F401 - every library is imported before the baseline
    from flax import nnx  # noqa: F401

    import jupyter_llm as jl

    jl.fit  # noqa: B018 - load it now

    x, y = mlp.make_data(n)
    jax.devices()  # start the backend before the baseline
    before = rss_mb()
    fn = {"jl.fit": mlp.jl_fit_epochs, "hand jit": mlp.hand_jit_epochs, "hand scan": mlp.hand_scan_epochs}[variant]
    fn(x, y, 256, epochs)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KB on Linux
    return {"peak_mb": peak, "before_mb": before}


def measure(variant: str, mode: str) -> dict:
    env = dict(os.environ, JUPYTER_LLM_COMPILE_CACHE="0")  # every variant compiles (none loads from disk)
    out = subprocess.run([sys.executable, __file__, "--child", variant, f"--{mode}"], capture_output=True,
                         text=True, env=env, check=False)
    if out.returncode:
        raise RuntimeError(f"memory child {variant!r} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv=None):
    args = common.parse_args(__doc__.splitlines()[0], argv,
                             extra=lambda p: p.add_argument("--child", choices=VARIANTS, help=argparse_help))
    n = common.pick(args, 2048, 60_000, 60_000)
    epochs = 2
    if args.child:
        print(json.dumps(child(args.child, n, epochs)))
        return None
    runs = {v: [] for v in VARIANTS}
    variants = VARIANTS[:2] if args.mode == "tiny" else VARIANTS  # tiny: one child of each kind is enough
    for r in range(common.pick(args, 1, 2, 3)):  # the peak barely varies: fewer runs than elsewhere
        for v in variants:
            common.log(f"memory: repeat {r + 1}, {v}")
            runs[v].append(measure(v, args.mode))
    ours = [d["peak_mb"] for d in runs["jl.fit"]]
    added = {v: common.num(sorted(d["peak_mb"] - d["before_mb"] for d in runs[v])[len(runs[v]) // 2])
             for v in variants}
    rows = [common.Row(f"peak RSS: jl.fit vs {v}", "MB", ours, [d["peak_mb"] for d in runs[v]], v,
                       target=common.Target("ratio", "<=", 1.2),
                       note=f"{n:,}×784 f32 data ({n * 784 * 4 / 2**20:.0f} MB); added by training: jl.fit "
                            f"{added['jl.fit']} MB, {v} {added[v]} MB")
            for v in variants[1:]]
    common.report(rows, args, "Peak host memory")
    return rows


argparse_help = "internal: run one variant and print its memory as JSON"

if __name__ == "__main__":
    main()
