"""Magic line -> options. Pure argparse over the one option spec; no IPython import, so it is testable anywhere."""

from __future__ import annotations

import shlex
from dataclasses import dataclass, field

from jupyter_llm.errors import ConfigError
from jupyter_llm.options import MAGIC_OPTIONS, build_parser


@dataclass(frozen=True)
class TrainArgs:
    model: str = "model"
    data: str = "data"
    out: str = "run"
    fit_options: dict = field(default_factory=dict)  # only the options the user gave; fit supplies defaults


def parse_train_line(line: str, prog: str = "%%train") -> TrainArgs:
    try:
        argv = shlex.split(line, comments=True)
    except ValueError as exc:
        raise ConfigError(f"Cannot read the options ({exc}); check the quotes in {line!r}.") from None
    parsed = vars(build_parser(prog).parse_args(argv))
    magic = {o.name: parsed.pop(o.name, o.default) for o in MAGIC_OPTIONS}
    for name in ("model", "data", "out"):
        if not str(magic[name]).isidentifier() and name != "data":
            raise ConfigError(f"--{name} must be a Python name, got {magic[name]!r}.")
    return TrainArgs(**magic, fit_options=parsed)


def train_help(prog: str = "%%train") -> str:
    return build_parser(prog).format_help()
