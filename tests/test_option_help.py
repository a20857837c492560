"""`%%train?` and `--help` say each option's default once."""

import re

from jupyter_llm.ipython.parse import train_help
from jupyter_llm.options import options_table_markdown


def test_every_option_states_its_default_once():
    text = " ".join(train_help().split())  # argparse wraps lines
    entries = re.split(r"\s(?=--[a-z])", text.split("options:", 1)[-1])
    twice = [e for e in entries if e.count("(default:") > 1]
    assert not twice, twice
    assert "--eval-batches EVAL_BATCHES evaluate on at most this many validation batches (default: all)" in text


def test_the_readme_options_table_is_the_option_spec():
    from tests import readme_options

    text = readme_options.README.read_text(encoding="utf-8")
    assert readme_options.current(text) == options_table_markdown(), (
        "README.md's options table differs from the option spec: run python -m tests.readme_options")
