"""Run every benchmark and print one table (workload | ours | reference | ratio | target met?).

    python benchmarks/run.py            # full mode: the figures for the README (tens of minutes)
    python benchmarks/run.py --quick    # a few minutes
    python benchmarks/run.py --tiny     # seconds per script: checks that they run (the tests use this)
    python benchmarks/run.py --quick --only mlp,gpt --save   # also write benchmarks/results/latest.md
    python benchmarks/run.py --quick --val-at 2000 --save   # quick timings + the GPT validation loss at 2,000 iters

Each script runs in its own process (JAX, Keras and PyTorch never share one; memory figures stay clean) and hands
its rows back as JSON; their own tables and progress lines go to stderr, the combined table to stdout.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile

import common

SCRIPTS = ("matmul", "mlp", "cnn", "display", "rerun", "memory", "gpt")


def extra(p):
    p.add_argument("--only", default=None, help=f"comma-separated subset of {', '.join(SCRIPTS)}")
    p.add_argument("--save", nargs="?", const=os.path.join(common.HERE, "results", "latest.md"), default=None,
                   metavar="PATH", help="also write the table to PATH (default benchmarks/results/latest.md)")
    p.add_argument("--torch-threads", type=int, default=None, help="passed to gpt.py")
    p.add_argument("--val-at", type=int, default=None,
                   help="passed to gpt.py: train each GPT this many iterations for the validation loss")
    p.add_argument("--nanogpt", default=None, metavar="DIR",
                   help="passed to gpt.py: a checkout of nanoGPT whose own train.py runs as a further reference")


def run_script(name: str, args) -> list[common.Row]:
    with tempfile.TemporaryDirectory() as tmp:
        out_json = os.path.join(tmp, "rows.json")
        cmd = [sys.executable, os.path.join(common.HERE, f"{name}.py"), f"--{args.mode}", "--json", out_json]
        if args.repeats_given:
            cmd += ["--repeats", str(args.repeats)]
        if name == "gpt" and args.torch_threads:
            cmd += ["--torch-threads", str(args.torch_threads)]
        if name == "gpt" and args.val_at is not None:
            cmd += ["--val-at", str(args.val_at)]
        if name == "gpt" and args.nanogpt:
            cmd += ["--nanogpt", args.nanogpt]
        common.log(f"== {name}: {' '.join(cmd[1:])}")
        t0 = common.clock()
        proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=None, text=True, check=False)
        sys.stderr.write(proc.stdout)  # the script's own table, for the log
        common.log(f"== {name}: {common.clock() - t0:.0f} s, exit {proc.returncode}")
        if proc.returncode or not os.path.exists(out_json):
            return [common.Row(f"{name}: FAILED", "", [], note=f"exit status {proc.returncode}; see the log above")]
        with open(out_json) as f:
            return [common.Row.from_dict(d) for d in json.load(f)]


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    args = common.parse_args(__doc__.splitlines()[0], argv, extra=extra)
    args.repeats_given = "--repeats" in argv
    names = SCRIPTS if not args.only else tuple(s.strip() for s in args.only.split(",") if s.strip())
    unknown = [n for n in names if n not in SCRIPTS]
    if unknown:
        raise SystemExit(f"unknown benchmark(s) {', '.join(unknown)}; choose from {', '.join(SCRIPTS)}")
    rows: list[common.Row] = []
    for name in names:
        rows += run_script(name, args)
    text = f"## jupyter_llm benchmarks\n\n{common.header(args.mode)}\n\n{common.table(rows)}\n"
    print("\n" + text, flush=True)
    if args.save:
        os.makedirs(os.path.dirname(os.path.abspath(args.save)), exist_ok=True)
        with open(args.save, "w") as f:
            f.write(text)
        common.log(f"saved to {args.save}")
    return 1 if any(r.workload.endswith("FAILED") for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
