"""Labelled texts from a file, for `text_classification`: CSV / TSV (the `csv` module) and JSON Lines (or a .json
array of objects), every mistake reported with the line it is on.

Reading file formats is a job of its own; building the data set from the texts is classification.py's.
"""

from __future__ import annotations

import csv
import io
import json
import os
from pathlib import Path
from typing import Sequence

import numpy as np

from jupyter_llm.errors import ConfigError, DataError, DatasetNotFound

_DELIMITERS = {".csv": ",", ".tsv": "\t", ".tab": "\t"}
_JSON_SUFFIXES = (".jsonl", ".json", ".ndjson")
LABELLED_SUFFIXES = (*_DELIMITERS, *_JSON_SUFFIXES)  # the files text_classification reads


def _check_path(p: Path) -> None:
    if not p.exists():
        raise DatasetNotFound(f"Cannot read {str(p)!r}: there is no such file. Check the path (a relative path "
                              f"starts from the current folder, {os.getcwd()!r}).")
    if p.is_dir():
        raise DatasetNotFound(f"Cannot read {str(p)!r}: it is a folder; pass the path of a .csv, .tsv or .jsonl "
                              "file inside it.")


def _read_file_text(p: Path) -> str:
    try:
        raw = p.read_bytes()
    except OSError as exc:
        raise DatasetNotFound(f"Cannot read {str(p)!r}: {exc.strerror or exc}. Check that the file is readable."
                              ) from None
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise DataError(f"{str(p)!r} is not UTF-8 text (byte 0x{raw[exc.start]:02x} at line {line} cannot be "
                        "decoded); save the file as UTF-8, e.g. with an editor's 'Save with encoding' or "
                        "iconv -f latin1 -t utf-8.") from None


def _missing_column(p: Path, which: str, wanted: str, found: Sequence[str]) -> DataError:
    kind = "field" if p.suffix.lower() in _JSON_SUFFIXES else "column"
    return DataError(f"{str(p)!r} has no {kind} {wanted!r} for the {which}; the {kind}s are "
                     f"{[str(c) for c in found]}. Pass {which}='...' with one of them, e.g. "
                     f"text_classification(path, text=..., label=...).")


def _read_delimited(p: Path, body: str, delimiter: str, text_col: str, label_col: str):
    reader = csv.reader(io.StringIO(body, newline=""), delimiter=delimiter)
    try:
        header = next(reader)
    except StopIteration:
        header = []
    except csv.Error as exc:
        raise DataError(f"{str(p)!r} is not valid delimited text at line 1 ({exc}).") from None
    header = [h.strip() for h in header]
    for which, col in (("text", text_col), ("label", label_col)):
        if col not in header:
            raise _missing_column(p, which, col, header)
    ti, li = header.index(text_col), header.index(label_col)
    rows, line = [], reader.line_num
    while True:
        start = line + 1
        try:
            row = next(reader)
        except StopIteration:
            break
        except csv.Error as exc:
            raise DataError(f"Line {start} of {str(p)!r} is not valid delimited text ({exc}); check its quotes."
                            ) from None
        line = reader.line_num
        if not row or all(not c.strip() for c in row):
            continue  # a blank line
        text = row[ti] if ti < len(row) else ""
        label = row[li].strip() if li < len(row) else ""
        rows.append((start, text, label))
    return rows


def json_objects(p: Path, body: str, fields: Sequence[str]) -> tuple[list[tuple[int, object]], str]:
    """The values of a JSON Lines text (one per line, blank lines skipped) or of a .json array, each with its line
    (or record) number, and which of the two that number is: "line" or "record". `fields` name the fields the
    caller wants, for the example in the message about a line that is not JSON."""
    if body.lstrip().startswith("["):  # a .json file holding one array of objects
        try:
            return list(enumerate(json.loads(body), 1)), "record"
        except json.JSONDecodeError as exc:
            raise DataError(f"{str(p)!r} is not valid JSON (line {exc.lineno}: {exc.msg}).") from None
    records, example = [], "{" + ", ".join(f'"{f}": "..."' for f in fields) + "}"
    for n, line in enumerate(body.split("\n"), 1):
        if not line.strip():
            continue
        try:
            records.append((n, json.loads(line)))
        except json.JSONDecodeError as exc:
            raise DataError(f"Line {n} of {str(p)!r} is not a JSON object ({exc.msg}); a JSON Lines file holds one "
                            f"object per line, like {example}.") from None
    return records, "line"


def read_json_objects(p: Path, fields: Sequence[str]) -> tuple[list[tuple[int, object]], str]:
    """`json_objects` of the file `p`, with the file's own mistakes (missing, a folder, not UTF-8) reported."""
    _check_path(p)
    return json_objects(p, _read_file_text(p), fields)


def _read_json_records(p: Path, body: str, text_col: str, label_col: str):
    records, where = json_objects(p, body, (text_col, label_col))
    rows = []
    for i, (n, rec) in enumerate(records):
        if not isinstance(rec, dict):
            raise DataError(f"{where.capitalize()} {n} of {str(p)!r} is {type(rec).__name__}, not a JSON object "
                            f"with {text_col!r} and {label_col!r} fields.")
        if i == 0:
            for which, col in (("text", text_col), ("label", label_col)):
                if col not in rec:
                    raise _missing_column(p, which, col, list(rec))
        text = rec.get(text_col)
        label = rec.get(label_col)
        rows.append((n, "" if text is None else str(text), label))
    return rows, where


def _label_value(v):
    """A label as an int when it is an integer (1, 1.0, "1", True), else as a stripped string; None if empty."""
    if v is None:
        return None
    if isinstance(v, bool):
        return int(v)
    if isinstance(v, (int, np.integer)):
        return int(v)
    if isinstance(v, float):
        return int(v) if v.is_integer() else str(v)
    s = str(v).strip()
    if not s:
        return None
    try:
        return int(s)
    except ValueError:
        return s


def read_labelled(p: Path, text_col: str, label_col: str, sep: str | None) -> tuple[list[str], list]:
    """The texts and raw labels (ints or strings) of a labelled-text file, in file order; the format follows the
    extension unless `sep` forces delimited text."""
    _check_path(p)
    suffix = p.suffix.lower()
    if sep is None and suffix not in _DELIMITERS and suffix not in _JSON_SUFFIXES:
        raise ConfigError(f"Cannot tell the format of {str(p)!r} from its extension {suffix or '(none)'!r}: use "
                          "a .csv, .tsv or .jsonl (.json) file, or pass sep=',' or sep='\\t' for delimited text.")
    body = _read_file_text(p)
    if not body.strip():
        raise DataError(f"{str(p)!r} is empty; it needs a header row naming the columns and one row per text.")
    if sep is None and suffix in _JSON_SUFFIXES:
        rows, where = _read_json_records(p, body, text_col, label_col)
    else:
        if sep is not None and (not isinstance(sep, str) or len(sep) != 1):
            raise ConfigError(f"sep must be a single character such as ',' or '\\t', got {sep!r}.")
        rows, where = _read_delimited(p, body, sep or _DELIMITERS[suffix], text_col, label_col), "line"
    if not rows:
        raise DataError(f"{str(p)!r} has no rows of data, only a header; add one row per text.")
    texts, labels = [], []
    for n, text, label in rows:
        if not text.strip():
            raise DataError(f"{where.capitalize()} {n} of {str(p)!r} has an empty text in {text_col!r}; fill it in "
                            "or remove the row.")
        value = _label_value(label)
        if value is None:
            raise DataError(f"{where.capitalize()} {n} of {str(p)!r} has no label in {label_col!r}; give every "
                            "row a label or remove it.")
        texts.append(text.strip())
        labels.append(value)
    return texts, labels
