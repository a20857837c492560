"""The one option spec: magic options, `jl.fit` keywords, `%%train?` help and the command line come from here.

The fit options are the fields of `FitConfig`; the magic adds the names of the objects it works on
(`--model`, `--data`, `--out`).
"""

from __future__ import annotations

import argparse
import contextlib
import contextvars
import dataclasses
import difflib
import functools
import re
from dataclasses import MISSING, dataclass
from typing import Any

from jupyter_llm.config import config_fields
from jupyter_llm.errors import ConfigError, JupyterLLMError


@dataclass(frozen=True)
class Option:
    name: str  # python name: batch_size
    type: type
    default: Any
    help: str
    choices: tuple | None = None
    fit_option: bool = True  # False: magic-only (names in the notebook namespace)
    unset: str = "auto"  # how a None default reads in help
    nargs: str | None = None  # "?": the flag may stand alone (e.g. --resume)
    cli_help: str | None = None  # the help as the command line words it (None: the same)
    keyword: bool = False  # a magic option that is also a keyword of jl.fit (its messages speak either idiom)
    metavar: str | None = None

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")


MAGIC_OPTIONS = (
    Option("model", str, "model", "name of the nnx.Module to train in the notebook namespace", fit_option=False),
    Option("data", str, "data",
           "name of the data in the namespace: (x, y), a dict of splits, a Dataset, or a built-in name "
           "such as digits", fit_option=False),
    Option("out", str, "run", "name to bind the result (a Run) to", fit_option=False),
    Option("cluster", int, None, "run the fit on N ipyparallel engines joined by JAX's distributed runtime (started "
           "once per session)", fit_option=False, unset="off", keyword=True),
    Option("cluster_profile", str, None, "the ipyparallel profile whose engines --cluster uses (engines on other "
           "machines)", fit_option=False, unset="a local cluster", keyword=True),
    Option("background", bool, False, "train on a worker thread: the cell returns at once with the run bound, which "
           "run.pause(), run.set(lr=...), run.stop() and run.wait() steer", fit_option=False, keyword=True),
    Option("after", str, None, "queue this fit behind the background fit bound to NAME: it starts when that one "
           "ends, however it ends (implies --background)", fit_option=False, unset="start at once", keyword=True,
           metavar="NAME"),
)


def _python_type(annotation: str) -> type:
    base = annotation.split("|")[0].strip()
    return {"int": int, "float": float, "bool": bool}.get(base, str)


# The command line's own: --model and --data name built-in models and data or files, not notebook objects; the
# notebook's --out, --cluster and --background have no meaning there.
CLI_OPTIONS = (
    Option("model", str, None, "a built-in model: mlp or cnn (arrays), gpt-char-tiny, gpt-mini or gpt2-small (text), "
           "text-classifier (labelled texts); or a pretrained GPT-2: gpt2 or a Hugging Face folder",
           fit_option=False, unset="required"),
    Option("data", str, None, "a built-in dataset (digits, mnist, fashion_mnist, tinyshakespeare, sentiment), a text "
           "file (a language model's corpus) or a .csv, .tsv or .jsonl file of labelled texts", fit_option=False,
           unset="required"),
)


def fit_options() -> tuple[Option, ...]:
    out = []
    for f in config_fields():
        default = f.default if f.default is not MISSING else None
        out.append(Option(f.name, _python_type(str(f.type)), default, f.metadata["help"], f.metadata.get("choices"),
                          unset=f.metadata.get("unset", "auto"), nargs=f.metadata.get("nargs"),
                          cli_help=f.metadata.get("cli_help")))
    return tuple(out)


def all_options() -> tuple[Option, ...]:
    return MAGIC_OPTIONS + fit_options()


def command_line_options() -> tuple[Option, ...]:
    """The train command's options, each worded for a shell."""
    return CLI_OPTIONS + tuple(dataclasses.replace(o, help=o.cli_help or o.help) for o in fit_options())


class _Parser(argparse.ArgumentParser):
    """argparse that raises ConfigError instead of printing usage and exiting the kernel."""

    def error(self, message):
        hint = ""
        if message.startswith("unrecognized arguments:"):
            flags = [s for action in self._actions for s in action.option_strings]
            for word in message.split(":", 1)[1].split():
                close = difflib.get_close_matches("--" + word.lstrip("-").split("=")[0], flags, n=1)
                if word.startswith("-") and close:
                    hint = f" Did you mean {close[0]}?"
                    break
        see = f"{self.prog}?" if self.prog.startswith("%") else f"{self.prog} --help"  # a magic's help, a shell's
        raise ConfigError(f"{message}.{hint} See {see} for the options.")

    def exit(self, status=0, message=None):  # --help inside a magic line
        raise ConfigError(self.format_help())


def build_parser(prog: str = "%%train", options=None, description: str | None = None) -> argparse.ArgumentParser:
    parser = _Parser(prog=prog, add_help=False, allow_abbrev=False, description=description or
                     "Train a Flax NNX model. Every option is also a keyword of jupyter_llm.fit.")
    for opt in options or all_options():
        default_text = opt.unset if opt.default is None else opt.default
        if opt.type is bool:
            parser.add_argument(opt.flag, dest=opt.name, action="store_true", default=argparse.SUPPRESS,
                                help=f"{opt.help} (default: off)")
        elif opt.nargs == "?":
            parser.add_argument(opt.flag, dest=opt.name, nargs="?", const=True, default=argparse.SUPPRESS,
                                metavar="DIR", help=f"{opt.help} (default: {default_text})")
        else:
            parser.add_argument(opt.flag, dest=opt.name, type=_typed(opt), default=argparse.SUPPRESS,
                                metavar=opt.metavar or opt.name.upper(), help=f"{opt.help} (default: {default_text})")
    return parser


def _typed(opt: Option):
    def convert(text: str):
        if opt.type is str:
            return text
        if text.lower() in ("none", "auto", "off") and opt.default is None:  # options that may be left unset
            return None
        if opt.type is int:
            try:
                return int(text)  # exact: through a float, a seed like 2**63 - 1 would come out as 2**63
            except ValueError:
                pass  # '1e3' is a whole number too
        try:
            value = float(text)
        except ValueError:
            value = None
        if value is None or (opt.type is int and not value.is_integer()):
            kind = "a whole number" if opt.type is int else "a number"
            raise argparse.ArgumentTypeError(f"expects {kind}, got {text!r}")
        return int(value) if opt.type is int else value

    convert.__name__ = opt.type.__name__
    return convert


def options_table_markdown() -> str:
    """The README's options table."""
    rows = ["| option | default | meaning |", "|---|---|---|"]
    for opt in all_options():
        default = opt.unset if opt.default is None else ("off" if opt.default is False else opt.default)
        rows.append(f"| `{opt.flag}` | `{default}` | {opt.help} |")
    return "\n".join(rows)


# -- the caller's idiom ------------------------------------------------------------------------------------------
# Messages are written as a magic or command-line user reads them (--lr 0.5, --keep-best); a jl.fit caller reads
# them in keywords (lr=0.5, keep_best=True). The face marks the calls it makes; everything else is a keyword caller.
_SPEAKING_FLAGS: contextvars.ContextVar[bool] = contextvars.ContextVar("jupyter_llm_speaking_flags", default=False)
_VALUE = r"-?\d+(?:\.\d+)?(?:e[+-]?\d+)?\b|'[^']*'|[A-Z]{1,5}\b"  # a number, a quoted word, or DIR / N
_FLAG_AND_VALUE = re.compile(rf"(?<![\w-])(--[a-z][a-z0-9-]*)(?:(?: |=)({_VALUE}))?")


@contextlib.contextmanager
def speaking_flags():
    """Calls made inside this block (by the magic, the command line) keep their messages' --flags."""
    token = _SPEAKING_FLAGS.set(True)
    try:
        yield
    finally:
        _SPEAKING_FLAGS.reset(token)


def speaks_flags() -> bool:
    """Whether the current call came from the magic or the command line (messages in --flags), not from jl.fit."""
    return _SPEAKING_FLAGS.get()


def in_keyword_idiom(message: str) -> str:
    """`message` with every fit option's flag written as the keyword of `jl.fit`: '--lr 1e+308' -> 'lr=1e+308',
    'add --resume' -> 'add resume=True', '--steps or --epochs' -> 'steps or epochs'."""
    options = {o.flag: o for o in (*fit_options(), *(o for o in MAGIC_OPTIONS if o.keyword))}

    def keyword(match):
        opt = options.get(match.group(1))
        if opt is None:
            return match.group(0)
        value = match.group(2)
        before = match.string[:match.start()].lower()
        if value is None and (opt.type is bool or opt.nargs == "?") and before.endswith(("add ", "with ")):
            value = "True"  # 'Add --resume' -> 'Add resume=True'; '--keep-best is a switch' keeps the name
        return opt.name if value is None else f"{opt.name}={value}"

    return _FLAG_AND_VALUE.sub(keyword, message)


def for_caller(message: str) -> str:
    """`message` in the idiom of whoever made the current call (flags for the face, keywords for jl.fit)."""
    return message if _SPEAKING_FLAGS.get() else in_keyword_idiom(message)


def in_callers_idiom(fn):
    """Decorate a public entry point (jl.fit, jl.lr_find): its library errors speak keywords unless the face called."""

    @functools.wraps(fn)
    def entry(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except JupyterLLMError as exc:
            if not _SPEAKING_FLAGS.get() and exc.args and isinstance(exc.args[0], str):
                exc.args = (in_keyword_idiom(exc.args[0]), *exc.args[1:])
            raise

    return entry
