"""`%%train?` and `--help` say each option's default once."""

import re

from jupyter_llm.ipython.parse import train_help


def test_every_option_states_its_default_once():
    text = " ".join(train_help().split())  # argparse wraps lines
    entries = re.split(r"\s(?=--[a-z])", text.split("options:", 1)[-1])
    twice = [e for e in entries if e.count("(default:") > 1]
    assert not twice, twice
    assert "--eval-batches EVAL_BATCHES evaluate on at most this many validation batches (default: all)" in text


def test_the_readme_options_table_is_the_option_spec():
    from pathlib import Path

    from jupyter_llm.options import options_table_markdown

    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text(encoding="utf-8")
    assert options_table_markdown() in readme
