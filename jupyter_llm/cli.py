"""Command line: `python -m jupyter_llm train|generate|evaluate ...`.

`train` takes the fit options of `%%train` (the one option spec, worded for a shell), with built-in model names and
data given by name or as a file; it prints text progress and the final metrics. `generate` and `evaluate` work on a
saved run (`--checkpoint DIR`, or `run.save(DIR)` in Python) through `jl.load`. A user mistake prints one line to
stderr and exits with status 2.
"""

from __future__ import annotations

import json
import os
import sys

from jupyter_llm.errors import ConfigError, DataError, JupyterLLMError
from jupyter_llm.options import speaking_flags

PROG = "python -m jupyter_llm"
GPT_PRESETS = ("gpt-char-tiny", "gpt-mini", "gpt2-small")  # models/gpt.py's PRESETS (a test holds them equal)
USAGE = f"""usage: {PROG} train --model MODEL --data DATA [options]
       {PROG} generate FOLDER [PROMPT] [--tokens 200] [--temperature 0.8] [--top-k K] [--seed 0]
       {PROG} evaluate FOLDER [--data DATA] [--split SPLIT]
       {PROG} COMMAND --help

MODEL: mlp, cnn (arrays); {', '.join(GPT_PRESETS)} (text); text-classifier (labelled texts);
       gpt2 or a Hugging Face folder (a pretrained GPT-2)
DATA:  a built-in dataset (digits, mnist, fashion_mnist, tinyshakespeare, sentiment), a text file, or a
       .csv / .tsv / .jsonl file of labelled texts
FOLDER: what train --checkpoint FOLDER (or run.save(FOLDER) in Python) wrote

examples:
  {PROG} train --model mlp --data digits --epochs 5
  {PROG} train --model gpt-char-tiny --data tinyshakespeare --steps 2000 --checkpoint ckpt/shakespeare
  {PROG} generate ckpt/shakespeare "ROMEO:" --tokens 200"""


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(USAGE)
        return 0
    command, rest = argv[0], argv[1:]
    if command not in COMMANDS:
        print(f"error: unknown command {command!r}\n{USAGE}", file=sys.stderr)
        return 2
    if "-h" in rest or "--help" in rest:
        print(HELP[command]())
        return 0
    try:
        with speaking_flags():
            return COMMANDS[command](rest)
    except JupyterLLMError as exc:
        print(f"error: {one_line(exc)}", file=sys.stderr)
        return 2


def one_line(exc: Exception) -> str:
    """The message on one line: a shell user reads the error, never a traceback or a wrapped paragraph."""
    return " ".join(line.strip() for line in str(exc).splitlines() if line.strip())


# -- train -------------------------------------------------------------------------------------------------------
DISTRIBUTED_HELP = """
text data:
  --tokenizer KIND          how a text file given as --data is tokenized: char (default), bpe (trained on it), gpt2,
                            or the path of a tokenizer.json (for labelled texts: word (default), char or bpe)

several processes (each runs the same command; JAX's distributed runtime joins them, only process 0 prints):
  --coordinator HOST:PORT   address of process 0 (omit all three where JAX detects the cluster: SLURM, TPU pods)
  --num-processes N         how many processes take part
  --process-id I            this process's number, 0 to N-1
  --local-devices N         CPU only: devices this process simulates (for trials and tests)
"""


def train_help() -> str:
    from jupyter_llm.ipython.parse import train_help as option_help
    from jupyter_llm.options import command_line_options

    return option_help(f"{PROG} train", command_line_options()) + DISTRIBUTED_HELP


def _train_command(argv: list[str]) -> int:
    run = train(argv)
    from jupyter_llm.distributed import is_main

    if not is_main():  # process 0 reports for all
        return 0
    final = {k: v[-1] for k, v in run.history.items() if v}
    if run.test_metrics:
        final.update({f"test_{k}": v for k, v in run.test_metrics.items()})
    print(json.dumps({"reason": run.reason, "step": run.step, **{k: round(v, 6) for k, v in final.items()}}))
    return 0


def _command_line_only(argv: list[str]) -> tuple[dict, list[str]]:
    """The flags only the command line has (several processes, the tokenizer of a text file), taken out of the
    train options."""
    from jupyter_llm.options import _Parser

    parser = _Parser(prog=f"{PROG} train", add_help=False, allow_abbrev=False)
    parser.add_argument("--coordinator", default=None)
    parser.add_argument("--tokenizer", default=None)
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
    from jupyter_llm.fitting.build import build_model, is_pretrained, pretrained_with_text
    from jupyter_llm.fitting.orchestrate import fit
    from jupyter_llm.ipython.parse import parse_train_line
    from jupyter_llm.options import command_line_options

    extra, argv = _command_line_only(argv)
    tokenizer = extra.pop("tokenizer", None)
    if extra:
        from jupyter_llm import distributed as dist

        local = extra.pop("local_devices", None)
        if extra:
            dist.init(extra.get("coordinator"), extra.get("num_processes"), extra.get("process_id"),
                      local_devices=local)
        else:
            dist.simulate_cpu_devices(local)
    given = next((a.split("=")[0] for a in argv if a.split("=")[0] in ("--background", "--after")), None)
    if given:  # a notebook's options, named here for what they are rather than as unknown words
        raise ConfigError(f"{given} is for a notebook's %%train; the command line trains in the foreground, one fit "
                          "per process (Ctrl-C stops the fit at the next step boundary, keeping its weights and "
                          "checkpoint); run a second command after the first to queue a fit.")
    args = parse_train_line(shlex.join(argv), prog=f"{PROG} train", python_names=False,
                            options=command_line_options())
    for name in ("model", "data"):
        if getattr(args, name) is None:
            example = "mlp" if name == "model" else "digits"
            raise ConfigError(f"--{name} is required: e.g. --{name} {example} (see {PROG} train --help).")
    options = dict(args.fit_options)
    options.setdefault("display", "text")
    config = make_config(**options)  # checked before the model is built from --seed or any data is read
    if is_pretrained(args.model):  # its own tokenizer reads the text
        if tokenizer is not None:
            raise ConfigError(f"--tokenizer: a pretrained model reads text with its own tokenizer; leave "
                              f"--tokenizer {tokenizer} out.")
        model, dataset = pretrained_with_text(args.model, args.data, block_size=config.block_size)
        return fit(model, dataset, **options)
    dataset = data_from_command_line(args.data, tokenizer)
    model = build_model(args.model, dataset, seed=config.seed)
    return fit(model, dataset, **options)


def data_from_command_line(name: str, tokenizer: str | None = None):
    """--data: a built-in name, a text file (a corpus, char-level unless --tokenizer), or a labelled-text file."""
    from jupyter_llm.data.coerce import as_dataset
    from jupyter_llm.data.labelled_files import LABELLED_SUFFIXES
    from jupyter_llm.data.text import TextCorpus
    from jupyter_llm.datasets import available, load, text, text_classification

    path = os.path.expanduser(name)
    if os.path.isdir(path):
        raise DataError(f"--data {name!r} is a folder; the command line reads a built-in dataset "
                        f"({', '.join(available())}), a text file (a language model's corpus) or a .csv, .tsv or "
                        ".jsonl file of labelled texts. Pass one file.")
    if os.path.isfile(path):
        if path.lower().endswith(LABELLED_SUFFIXES):
            return text_classification(path, tokenizer=tokenizer or "word")
        return text(path, tokenizer=tokenizer or "char")
    if name not in available():
        if os.sep in name or "/" in name or os.path.splitext(name)[1]:
            raise DataError(f"--data {name!r}: there is no such file (a relative path starts from {os.getcwd()!r}).")
        load(name)  # raises: the unknown name, the closest one and the list
    from jupyter_llm.data.catalog import TEXT_CORPORA

    if tokenizer is not None and name not in TEXT_CORPORA:
        raise ConfigError(f"--tokenizer applies to text; --data {name} is not a text corpus. Leave --tokenizer out.")
    dataset = load(name, tokenizer=tokenizer) if tokenizer is not None else load(name)
    return dataset if isinstance(dataset, TextCorpus) else as_dataset(dataset)


# -- generate and evaluate: a saved run --------------------------------------------------------------------------
def _saved_parser(command: str, description: str, options):
    from jupyter_llm.options import build_parser

    parser = build_parser(f"{PROG} {command}", options, description=description)
    parser.add_argument("folder", metavar="FOLDER", help="the folder train --checkpoint (or run.save) wrote")
    return parser


def _generate_options():
    from jupyter_llm.ipython.parse import GENERATE_OPTIONS

    return tuple(o for o in GENERATE_OPTIONS if o.name != "run")


def _generate_parser():
    parser = _saved_parser("generate", "Text from a saved language model, printed as it is sampled.",
                           _generate_options())
    parser.add_argument("prompt", metavar="PROMPT", nargs="?", default="",
                        help="the text to continue (default: none; a prompt that starts with '-' goes after --)")
    return parser


def _generate_command(argv: list[str]) -> int:
    from jupyter_llm.fitting.load import load

    given = vars(_generate_parser().parse_args(argv))
    opts = {o.name: given.get(o.name, o.default) for o in _generate_options()}
    run = load(given["folder"])
    prompt = given.get("prompt") or ""
    stream = run.generate_stream(prompt, opts["tokens"], temperature=opts["temperature"], top_k=opts["top_k"],
                                 seed=opts["seed"])
    first = next(stream, "")  # a bad prompt or option fails here, before anything is printed
    sys.stdout.write(prompt + first)
    sys.stdout.flush()
    try:
        for piece in stream:
            sys.stdout.write(piece)
            sys.stdout.flush()
    except KeyboardInterrupt:  # Ctrl-C ends the text, not with a traceback
        pass
    sys.stdout.write("\n")
    return 0


EVALUATE_OPTIONS_HELP = {
    "data": "the data to evaluate on, as train's --data",
    "split": "the split to evaluate: test, validation or train",
}


def _evaluate_parser():
    from jupyter_llm.options import Option

    options = (Option("data", str, None, EVALUATE_OPTIONS_HELP["data"], fit_option=False, unset="what the run was "
                      "trained on, when that was a built-in dataset or a file that is still there"),
               Option("split", str, None, EVALUATE_OPTIONS_HELP["split"], fit_option=False,
                      unset="test, else validation"))
    return _saved_parser("evaluate", "Loss and metrics of a saved run on a split of its data, as one JSON line.",
                         options)


def _evaluate_command(argv: list[str]) -> int:
    from jupyter_llm.fitting.load import load, trained_on

    args = vars(_evaluate_parser().parse_args(argv))
    folder, data, split = args["folder"], args.get("data"), args.get("split")
    if data is None:
        data = trained_on(folder)
        if data is None and os.path.isdir(os.path.expanduser(folder)):
            raise ConfigError(f"The run in {folder} does not say which data it was trained on (arrays or a data set "
                              "of your own); pass it with --data NAME or --data FILE.")
    elif not os.path.isfile(os.path.expanduser(data)) and data not in _available():
        data_from_command_line(data)  # raises the one-line reason: a folder, no such file, an unknown name
    run = load(folder, data=data)
    if split is None:
        split = "test" if "test" in run.splits else (run.splits[-1] if run.splits else "test")
    print(json.dumps({"split": split, **{k: round(v, 6) for k, v in run.evaluate(split).items()}}))
    return 0


def _available() -> list[str]:
    from jupyter_llm.datasets import available

    return available()


COMMANDS = {"train": _train_command, "generate": _generate_command, "evaluate": _evaluate_command}
HELP = {"train": train_help, "generate": lambda: _generate_parser().format_help(),
        "evaluate": lambda: _evaluate_parser().format_help()}


if __name__ == "__main__":
    sys.exit(main())
