"""Command line: `python -m jupyter_llm train --model mlp --data digits --epochs 5`.

The same option spec as `%%train`, with built-in model and dataset names; prints text progress and the final
metrics. A user mistake prints one line to stderr and exits with status 2.
"""

from __future__ import annotations

import json
import os
import sys

from jupyter_llm.errors import ConfigError, JupyterLLMError
from jupyter_llm.options import speaking_flags

USAGE = """usage: python -m jupyter_llm train --model mlp|cnn|gpt-char-tiny|gpt2|HF_FOLDER --data NAME|FILE [options]
       python -m jupyter_llm train --help"""


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(USAGE)
        return 0
    command, rest = argv[0], argv[1:]
    if command != "train":
        print(f"error: unknown command {command!r}\n{USAGE}", file=sys.stderr)
        return 2
    from jupyter_llm.ipython.parse import train_help

    if "-h" in rest or "--help" in rest:
        print(train_help("python -m jupyter_llm train") + DISTRIBUTED_HELP)
        return 0
    try:
        with speaking_flags():
            run = train(rest)
    except JupyterLLMError as exc:
        print(f"error: {one_line(exc)}", file=sys.stderr)
        return 2
    from jupyter_llm.distributed import is_main

    if not is_main():  # process 0 reports for all
        return 0
    final = {k: v[-1] for k, v in run.history.items() if v}
    if run.test_metrics:
        final.update({f"test_{k}": v for k, v in run.test_metrics.items()})
    print(json.dumps({"reason": run.reason, "step": run.step, **{k: round(v, 6) for k, v in final.items()}}))
    return 0


def one_line(exc: Exception) -> str:
    """The message on one line: a shell user reads the error, never a traceback or a wrapped paragraph."""
    return " ".join(line.strip() for line in str(exc).splitlines() if line.strip())


DISTRIBUTED_HELP = """
several processes (each runs the same command; JAX's distributed runtime joins them, only process 0 prints):
  --coordinator HOST:PORT   address of process 0 (omit all three where JAX detects the cluster: SLURM, TPU pods)
  --num-processes N         how many processes take part
  --process-id I            this process's number, 0 to N-1
  --local-devices N         CPU only: devices this process simulates (for trials and tests)
"""


def _distributed_options(argv: list[str]) -> tuple[dict, list[str]]:
    """The multi-process flags, taken out of the train options."""
    from jupyter_llm.options import _Parser

    parser = _Parser(prog="python -m jupyter_llm train", add_help=False, allow_abbrev=False)
    parser.add_argument("--coordinator", default=None)
    for flag in ("--num-processes", "--process-id", "--local-devices"):
        parser.add_argument(flag, type=_whole(flag), default=None)
    known, rest = parser.parse_known_args(argv)
    return {k: v for k, v in vars(known).items() if v is not None}, rest


def _whole(flag: str):
    def convert(text: str) -> int:
        if not text.strip().isdigit():
            raise ValueError(f"{flag} takes a whole number, got {text!r}")
        return int(text)

    convert.__name__ = "whole number"
    return convert


def train(argv: list[str]):
    import shlex

    from jupyter_llm.config import make_config
    from jupyter_llm.data.coerce import as_dataset
    from jupyter_llm.data.text import TextCorpus
    from jupyter_llm.fitting.build import build_model, is_pretrained, pretrained_with_text
    from jupyter_llm.fitting.orchestrate import fit
    from jupyter_llm.ipython.parse import parse_train_line

    distributed, argv = _distributed_options(argv)
    if distributed:
        from jupyter_llm import distributed as dist

        local = distributed.pop("local_devices", None)
        if distributed:
            dist.init(distributed.get("coordinator"), distributed.get("num_processes"),
                      distributed.get("process_id"), local_devices=local)
        else:
            dist.simulate_cpu_devices(local)
    args = parse_train_line(shlex.join(argv), prog="python -m jupyter_llm train", python_names=False)
    if args.background or args.after is not None:
        given = "--background" if args.background else "--after"
        raise ConfigError(f"{given} is for a notebook's %%train; the command line trains in the foreground, one fit "
                          "per process (Ctrl-C stops the fit at the next step boundary, keeping its weights and "
                          "checkpoint); run a second command after the first to queue a fit.")
    options = dict(args.fit_options)
    options.setdefault("display", "text")
    config = make_config(**options)  # checked before the model is built from --seed or any data is read
    if is_pretrained(args.model):  # its own tokenizer reads the text
        model, dataset = pretrained_with_text(args.model, args.data, block_size=config.block_size)
        return fit(model, dataset, **options)
    from jupyter_llm.datasets import load, text

    dataset = text(args.data) if os.path.isfile(args.data) else load(args.data)
    if not isinstance(dataset, TextCorpus):
        dataset = as_dataset(dataset)
    model = build_model(args.model, dataset, seed=config.seed)
    return fit(model, dataset, **options)


if __name__ == "__main__":
    sys.exit(main())
