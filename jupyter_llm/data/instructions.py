"""Instruction data for fine-tuning a language model: (prompt, response) pairs, trained on the response only.

`instructions(path_or_records, prompt="prompt", response="response", tokenizer=...)` reads a JSON Lines file (or a
.json array, or takes a list of dicts), writes each pair as one example of tokens —

    template(prompt)  response  <end>

— and returns a `Dataset` of next-token blocks: x the tokens, y the token that follows each, with every target that
is a prompt token (or padding) set to -1, which the cross-entropy loss and the accuracy ignore (train/losses.py:
IGNORED). So the model is taught to answer, not to write prompts. The end token (GPT-2's <|endoftext|>, U+0003 for
characters) is a target too: the model learns where an answer stops.

Packing (the default) concatenates the examples into one stream and cuts it into blocks of block_size + 1 tokens
that overlap by one, x = block[:-1] and y = block[1:], so every token is an input once and a target once; an example
may straddle two blocks, and attention sees the examples before it in its block. `packing=False` gives each example a
row of its own, padded with the end token (targets -1) or cut to block_size. The validation split is the last
`val_fraction` of the examples, packed on its own: no example is in both.
"""

from __future__ import annotations

import difflib
import json
import numbers
import os
import warnings
from pathlib import Path
from typing import Callable

import numpy as np

from jupyter_llm import hub
from jupyter_llm.data import aligned
from jupyter_llm.data.dataset import IGNORED, Dataset
from jupyter_llm.data.labelled_files import read_json_objects
from jupyter_llm.data.tokenizers import end_of_text_id, make_tokenizer
from jupyter_llm.errors import ConfigError, DataError

DEFAULT_TEMPLATE = "### Instruction:\n{prompt}\n### Response:\n"
GPT2_CONTEXT = 1024  # n_positions of every pinned GPT-2 (hub.CHECKPOINTS)


def instructions(source, prompt: str = "prompt", response: str = "response", *, tokenizer="char",
                 block_size: int | None = None, val_fraction: float = 0.1, template=None, packing: bool = True,
                 name: str | None = None) -> Dataset:
    """A Dataset of instruction examples, the loss on their responses only.

    `source`: the path of a JSON Lines file (one object per line; a .json array of objects works too) or a list of
    dicts; `prompt` and `response` name their fields. `tokenizer`: as `jl.datasets.text` takes it ("char", "bpe",
    "gpt2", a tokenizer.json or a model folder); a trained one gets an end token. `template`: a string holding
    "{prompt}" once (default DEFAULT_TEMPLATE) or a function of the prompt; generate from `template` filled in with a
    new prompt. `block_size`: tokens per row; by default the longest example's, less one (its number of
    next-token targets), at most the context of the model the tokenizer came with (1,024 for "gpt2", a folder's
    n_positions) — so nothing is cut unless that context is shorter.
    """
    fill = _template(template)
    block_size, val_fraction = _check_options(block_size, val_fraction, packing)
    pairs, label = _pairs(source, prompt, response, name)
    texts = [(fill(p), r) for p, r in pairs]
    tok = make_tokenizer(tokenizer, "".join(p + r for p, r in texts), end_token=True)
    end = end_of_text_id(tok)
    if end is None:
        raise ConfigError(f"The tokenizer {tok!r} has no end-of-text token to close each example with: a BPE needs "
                          "<|endoftext|> in its vocabulary, characters need U+0003. Use tokenizer='char', 'bpe', "
                          "'gpt2' or a GPT-2 tokenizer.json.")
    examples = [(tok.encode(p), tok.encode(r)) for p, r in texts]
    longest = max(len(p) + len(r) for p, r in examples)  # + the end token, less one: the targets of the longest
    context = _known_context(tokenizer)
    block = block_size or (min(longest, context) if context else longest)
    n_val = _validation_count(len(examples), val_fraction)
    cut = len(examples) - n_val
    build = _pack if packing else _pad
    train, train_counts = build(examples[:cut], block, end)
    val, val_counts = build(examples[cut:], block, end) if n_val else (None, {})
    counts = {k: train_counts.get(k, 0) + val_counts.get(k, 0) for k in ("truncated", "dropped")}
    for split, rows in (("training", train), ("validation", val)):
        if rows is not None and len(rows[0]) == 0:
            raise DataError(f"The {split} examples of {label!r} leave no response token within block_size={block}; "
                            "use a larger block_size or shorter prompts.")
    if counts["truncated"]:
        warnings.warn(f"{counts['truncated']} of {len(examples)} examples of {label!r} are longer than block_size="
                      f"{block} tokens and were cut, {counts['dropped']} of them to no response token (those are "
                      "left out); use a larger block_size to keep them whole.", stacklevel=2)
    elif counts["dropped"]:
        warnings.warn(f"{counts['dropped']} blocks of {label!r} hold only prompt tokens, nothing to learn, and were "
                      "left out; a larger block_size keeps each response with its prompt.", stacklevel=2)
    rows = "blocks" if packing else "rows"
    description = (f"{cut:,} instruction examples in {len(train[0]):,} {rows} of {block} tokens"
                   + (f", {n_val:,} for validation in {len(val[0]):,}" if n_val else ""))
    meta = {"tokenizer": tok, "vocab_size": tok.vocab_size, "block_size": block, "template": template or
            DEFAULT_TEMPLATE, "end_id": end, "packing": packing, "examples": {"train": cut, "validation": n_val},
            **counts, "unit": "tokens"}
    return Dataset(train=train, validation=val, name=label, description=description, meta=meta)


def _template(template) -> Callable[[str], str]:
    if template is None:
        template = DEFAULT_TEMPLATE
    if callable(template):
        def fill(p):
            text = template(p)
            if not isinstance(text, str):
                raise ConfigError(f"template={template!r} returned {type(text).__name__}; it must return the prompt "
                                  "as text (a str).")
            return text
        return fill
    if not isinstance(template, str) or template.count("{prompt}") != 1:
        raise ConfigError(f"template must be a string that holds {{prompt}} once, where each prompt goes (e.g. "
                          f"{DEFAULT_TEMPLATE!r}), or a function of the prompt; got {template!r}.")
    return lambda p: template.replace("{prompt}", p)  # not format(): braces elsewhere are text


def _check_options(block_size, val_fraction, packing) -> tuple[int | None, float]:
    if block_size is not None and (isinstance(block_size, bool) or not isinstance(block_size, numbers.Integral)
                                   or block_size < 1):
        raise ConfigError(f"block_size must be a positive whole number (tokens per row), or None for the longest "
                          f"example's; got {block_size!r}.")
    if isinstance(val_fraction, bool) or not isinstance(val_fraction, numbers.Real) or not 0 <= val_fraction < 1:
        raise ConfigError(f"val_fraction must be a number in [0, 1) (the share of the examples kept for "
                          f"validation), got {val_fraction!r}.")
    if not isinstance(packing, bool):
        raise ConfigError(f"packing must be True or False, got {packing!r}.")
    return (None if block_size is None else int(block_size)), float(val_fraction)


def _pairs(source, prompt: str, response: str, name) -> tuple[list[tuple[str, str]], str]:
    """The (prompt, response) texts of a file or a list of dicts, each mistake named with its line or record."""
    for what, field in (("prompt", prompt), ("response", response)):
        if not isinstance(field, str):
            raise ConfigError(f"{what}= names the field that holds the {what}s, a string; got {field!r}.")
    if isinstance(source, (str, os.PathLike)):
        path = Path(os.path.expanduser(str(source)))
        records, where = read_json_objects(path, (prompt, response))
        label, origin = name or path.stem, f" of {str(path)!r}"
    elif isinstance(source, (list, tuple)):
        records, where = list(enumerate(source, 1)), "record"
        label, origin = name or "instructions", ""
    else:
        raise DataError(f"jl.datasets.instructions takes the path of a JSON Lines file or a list of dicts, got "
                        f"{type(source).__name__}.")
    if not records:
        raise DataError(f"{'The file' + origin if origin else 'The list'} holds no examples; give one object per "
                        f"line with {prompt!r} and {response!r} fields.")
    pairs = []
    for n, rec in records:
        at = f"{where.capitalize()} {n}{origin}"
        if not isinstance(rec, dict):
            raise DataError(f"{at} is {type(rec).__name__}, not an object with {prompt!r} and {response!r} fields.")
        for what, field in (("prompt", prompt), ("response", response)):
            if field not in rec:
                close = difflib.get_close_matches(field, [str(k) for k in rec], n=1)
                hint = f" Pass {what}={close[0]!r} if that is it." if close else f" Pass {what}='...' to name it."
                raise DataError(f"{at} has no {field!r} field; its fields are {sorted(map(str, rec))}.{hint}")
            if not isinstance(rec[field], str):
                raise DataError(f"{at} has {type(rec[field]).__name__} {json.dumps(rec[field])[:40]} in {field!r}; "
                                f"the {what} must be text (a JSON string).")
        pairs.append((rec[prompt], rec[response]))
    return pairs, label


def _known_context(tokenizer) -> int | None:
    """The context of the model a tokenizer was named after: a pinned GPT-2's, or a Hugging Face folder's config."""
    if isinstance(tokenizer, str) and tokenizer in hub.TOKENIZER_OF:
        return GPT2_CONTEXT
    if isinstance(tokenizer, (str, os.PathLike)):
        path = Path(os.path.expanduser(str(tokenizer)))
        config = (path if path.is_dir() else path.parent) / "config.json"  # a model folder, or a file inside one
        try:
            n = json.loads(config.read_text()).get("n_positions")
        except (OSError, ValueError, AttributeError):
            return None
        return int(n) if isinstance(n, int) and n > 0 else None
    return None


def _validation_count(n: int, val_fraction: float) -> int:
    if not val_fraction:
        return 0
    n_val = max(1, round(n * val_fraction))
    if n_val >= n:
        raise DataError(f"{n} example(s) are too few to keep val_fraction={val_fraction} of them for validation and "
                        "train on the rest; add examples, or pass val_fraction=0.")
    return n_val


def _stream(examples, end: int) -> tuple[np.ndarray, np.ndarray]:
    """The examples' tokens one after another, each closed by `end`, and whether each token is one to learn."""
    tokens = np.concatenate([np.concatenate([p, r, [end]]) for p, r in examples]).astype(np.int32)
    learn = np.concatenate([np.r_[np.zeros(len(p), bool), np.ones(len(r) + 1, bool)] for p, r in examples])
    return tokens, learn


def _pack(examples, block: int, end: int):
    """Blocks of block + 1 tokens overlapping by one, the last padded with `end` (targets IGNORED); a block whose
    targets are all prompt tokens is left out (it would teach nothing and dilute the mean loss)."""
    tokens, learn = _stream(examples, end)
    n = -(-(len(tokens) - 1) // block)  # every token but the first is a target once
    size = n * block + 1
    tokens = np.r_[tokens, np.full(size - len(tokens), end, np.int32)]
    targets = np.where(np.r_[learn, np.zeros(size - len(learn), bool)], tokens, IGNORED)
    starts = np.arange(n)[:, None] * block + np.arange(block)
    x, y = tokens[starts], targets[starts + 1]
    keep = (y != IGNORED).any(axis=1)
    return _rows(x[keep], y[keep]), {"dropped": int(n - keep.sum())}


def _pad(examples, block: int, end: int):
    """One row per example: its tokens less the last as x, the rest as y (prompt targets IGNORED), padded with `end`
    (targets IGNORED) or cut to `block`; an example cut to no response target is left out."""
    x = np.full((len(examples), block), end, np.int32)
    y = np.full((len(examples), block), IGNORED, np.int32)
    truncated = 0
    for i, example in enumerate(examples):
        tokens, learn = _stream([example], end)
        t = min(len(tokens) - 1, block)
        truncated += len(tokens) - 1 > block
        x[i, :t], y[i, :t] = tokens[:t], np.where(learn[1:t + 1], tokens[1:t + 1], IGNORED)
    keep = (y != IGNORED).any(axis=1)
    return _rows(x[keep], y[keep]), {"truncated": truncated, "dropped": int(len(examples) - keep.sum())}


def _rows(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Aligned int32 copies, which a CPU device reads in place (data/aligned.py)."""
    return aligned.astype(x, np.int32), aligned.astype(y, np.int32)
