"""Magic line -> options. Pure argparse over the one option spec; no IPython import, so it is testable anywhere."""

from __future__ import annotations

import difflib
import keyword
import shlex
from dataclasses import dataclass, field

from jupyter_llm.errors import ConfigError
from jupyter_llm.options import Option, all_options, build_parser


@dataclass(frozen=True)
class TrainArgs:
    model: str = "model"
    data: str = "data"
    out: str = "run"
    cluster: int | None = None  # engines to run the fit on
    cluster_profile: str | None = None
    background: bool = False
    after: str | None = None  # the name of the background fit to queue behind
    fit_options: dict = field(default_factory=dict)  # only the options the user gave; fit supplies defaults


def parse_train_line(line: str, prog: str = "%%train", *, python_names: bool = True, options=None) -> TrainArgs:
    """The options of a %%train line. `python_names`: --model and --out name objects in the namespace (the
    command line's --model is a built-in model's name, such as gpt-char-tiny, and its `options` are its own)."""
    try:
        argv = shlex.split(line, comments=True)
    except ValueError as exc:
        raise ConfigError(f"Cannot read the options ({exc}); check the quotes in {line!r}.") from None
    options = options or all_options()
    parsed = vars(build_parser(prog, options).parse_args(argv))
    magic = {o.name: parsed.pop(o.name, o.default) for o in options if not o.fit_option}
    for name in ("model", "out", "after") if python_names else ():
        if magic.get(name) is None:
            continue
        if not str(magic[name]).isidentifier() or keyword.iskeyword(str(magic[name])):
            raise ConfigError(f"--{name} must be a Python name (not a keyword), got {magic[name]!r}.")
    given = {k for k, v in parsed.items() if v is not None}  # what the user set: fit supplies the defaults
    if {"steps", "epochs"} <= given:
        raise ConfigError("Give --steps or --epochs, not both: --steps sets the length of the fit in optimizer "
                          "steps, --epochs in passes over the data.")
    if "save_every" in given and "checkpoint" not in given and not isinstance(parsed.get("resume"), str):
        raise ConfigError("--save-every sets how often checkpoints are written; give --checkpoint DIR as well.")
    return TrainArgs(**magic, fit_options=parsed)


def train_help(prog: str = "%%train", options=None) -> str:
    return build_parser(prog, options).format_help()


LR_FIND_OPTIONS = (
    Option("model", str, "model", "name of the nnx.Module in the notebook namespace", fit_option=False),
    Option("data", str, "data", "name of the data in the namespace, or a built-in dataset name", fit_option=False),
    Option("out", str, "lr_finder", "name to bind the result to", fit_option=False),
    Option("min_lr", float, 1e-7, "smallest learning rate of the sweep"),
    Option("max_lr", float, 10.0, "largest learning rate of the sweep"),
    Option("steps", int, 100, "steps of the sweep"),
    Option("optimizer", str, "adam", "sgd, momentum, adam or adamw"),
    Option("batch_size", int, 32, "examples per step"),
    Option("seed", int, 0, "seed of the data order"),
)


def parse_lr_find_line(line: str) -> dict:
    """`%lr_find` options -> dict with every option filled in."""
    try:
        argv = shlex.split(line, comments=True)
    except ValueError as exc:
        raise ConfigError(f"Cannot read the options ({exc}); check the quotes in {line!r}.") from None
    parsed = vars(build_parser("%lr_find", LR_FIND_OPTIONS).parse_args(argv))
    return {o.name: parsed.get(o.name, o.default) for o in LR_FIND_OPTIONS}


GENERATE_OPTIONS = (
    Option("run", str, "run", "name of the Run of a language model", fit_option=False),
    Option("tokens", int, 200, "number of new tokens"),
    Option("temperature", float, 0.8, "sampling temperature (0: greedy)"),
    Option("top_k", int, None, "sample among the k most likely tokens"),
    Option("seed", int, 0, "seed of the sampling"),
)


def parse_generate_line(line: str) -> tuple[dict, str]:
    """`%generate [options] PROMPT...` -> (options, prompt). After `--` everything is prompt, even '-' words."""
    try:
        argv = shlex.split(line, comments=False)
    except ValueError as exc:
        raise ConfigError(f"Cannot read the options ({exc}); check the quotes in {line!r}.") from None
    separated = "--" in argv
    argv, tail = (argv[:argv.index("--")], argv[argv.index("--") + 1:]) if separated else (argv, [])
    parser = build_parser("%generate", GENERATE_OPTIONS)
    parsed, rest = parser.parse_known_args(argv)
    flags = [o.flag for o in GENERATE_OPTIONS]
    for arg in rest:  # a mistyped option would otherwise become part of the prompt
        word = arg.split("=", 1)[0]
        if word.startswith("--") or (word.startswith("-") and "--" + word.lstrip("-") in flags):
            close = difflib.get_close_matches("--" + word.lstrip("-"), flags, n=1)
            hint = f" Did you mean {close[0]}?" if close else ""
            raise ConfigError(f"{arg!r} looks like an option of %generate but is not one.{hint} See %generate? "
                              "for the options; a prompt that starts with '-' goes after --, as in "
                              "%generate --tokens 50 -- -the prompt.")
    opts = vars(parsed)
    if rest and separated:  # a '--' after the prompt's first words is text, not the separator
        rest = [*rest, "--"]
    return {o.name: opts.get(o.name, o.default) for o in GENERATE_OPTIONS}, " ".join(rest + tail)
