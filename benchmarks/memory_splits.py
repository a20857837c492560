"""Host memory of a fit with val_split on a large float32 array (issue #19), in a fresh process.

Resident-set growth over the set just before each fit (Linux's /proc/self/status; the peak is VmHWM, reset through
/proc/self/clear_refs before the fit):
  - first fit: the process's first, with the one-off costs of any first fit (the compiler, JAX's thread pools and
    caches: about 250 MB on 2 cores whatever the data);
  - again: the same fit after that Run is deleted, its compiled steps reused: what the data costs;
  - re-run: `run = fit(...)` once more, the earlier Run replaced (as re-running a notebook cell does);
  - deleted: after `del run`.
The MLP (features-64-10, batch 256, one epoch) is small: the data, not the model, is what is measured. Not part of
run.py:

    python benchmarks/memory_splits.py --mib 1024
"""

from __future__ import annotations

import argparse
import gc
import json
import subprocess
import sys


def status(key: str) -> int:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) * 1024 for line in f if line.startswith(key + ":"))


def reset_peak() -> None:
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")


def child(mib: int, features: int) -> dict:
    import jax
    import numpy as np
    from flax import nnx

    import jupyter_llm as jl
    from jupyter_llm.models import MLP

    def fit(x, y):
        model = MLP(in_features=features, hidden=[64], num_classes=10, rngs=nnx.Rngs(0))
        return jl.fit(model, (x, y), val_split=0.2, epochs=1, batch_size=256, display="none")

    rng = np.random.default_rng(0)
    x = rng.random((mib * 2**20 // (4 * features), features), dtype=np.float32)
    y = rng.integers(0, 10, len(x)).astype(np.int32)
    jax.devices()
    out = {"data_mib": (x.nbytes + y.nbytes) / 2**20}
    for name in ("first fit", "again"):
        gc.collect()
        reset_peak()
        before = status("VmRSS")
        run = fit(x, y)
        peak = status("VmHWM")
        gc.collect()
        out[name] = {"peak_mib": (peak - before) / 2**20, "held_mib": (status("VmRSS") - before) / 2**20}
        if name == "first fit":
            del run
    run = fit(x, y)  # noqa: F841 - replaces the Run bound to `run`, as a re-run cell does
    gc.collect()
    out["again"]["re-run_mib"] = (status("VmRSS") - before) / 2**20
    del run
    gc.collect()
    out["again"]["deleted_mib"] = (status("VmRSS") - before) / 2**20
    return out


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--mib", type=int, default=1024, help="size of the float32 inputs")
    p.add_argument("--features", type=int, default=256)
    p.add_argument("--child", action="store_true", help="internal: measure in this process")
    args = p.parse_args(argv)
    if args.child:
        print(json.dumps(child(args.mib, args.features)))
        return
    out = subprocess.run([sys.executable, __file__, "--child", "--mib", str(args.mib), "--features",
                          str(args.features)], capture_output=True, text=True, check=False)
    if out.returncode:
        raise SystemExit(out.stderr[-3000:])
    got = json.loads(out.stdout.strip().splitlines()[-1])
    print(f"data: {got.pop('data_mib'):.0f} MiB")
    for name, figures in got.items():
        print(f"{name}: " + ", ".join(f"{k.removesuffix('_mib')} +{v:.0f} MiB" for k, v in figures.items()))


if __name__ == "__main__":
    main()
