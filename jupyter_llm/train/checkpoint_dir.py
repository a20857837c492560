"""Which entries of a checkpoint directory this library wrote: the only ones it may ever delete.

A checkpoint directory is *claimed* before anything is written into it: a marker file (`MARKER`) says this library
keeps its checkpoints there. A directory is claimed when it is new or empty, or when everything in it is a step
folder whose `info/metadata` this library wrote (a directory from a version before the marker). Anything else —
the filesystem root, the home folder, a folder holding the user's own files — is refused before any work, so a
mistyped `--checkpoint` can never lose a file.

Inside a claimed directory:
- a step is a real folder named by its step number holding only what a save writes (Orbax's `_CHECKPOINT_METADATA`
  and `commit_success.txt`, the `state` and `info` items). Only such folders are ever deleted (damaged or not);
- an entry named like a step that is anything else (the user's own folder `3/`, a file `12`) is refused by name;
- a link named like a step is skipped with a warning, never followed, never deleted;
- other files (a README the user put there) are left alone.
Deleting renames the step out of the way first, so a process killed halfway leaves no half-deleted step behind.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path

MARKER = ".jupyter_llm-checkpoints"
STEP_ENTRIES = frozenset({"_CHECKPOINT_METADATA", "commit_success.txt", "state", "info"})
_IN_FLIGHT = re.compile(r"^\d+\.orbax-checkpoint-tmp")  # Orbax writes a step here, then renames it
_DELETING = ".jupyter_llm-deleting"
_PROBE = ".write-test-"


@dataclass
class Listing:
    """A checkpoint directory's entries, sorted by what may be done with them."""

    steps: dict[int, Path] = field(default_factory=dict)  # step folders this library wrote
    links: list[str] = field(default_factory=list)  # links named like a step: skipped
    foreign: list[str] = field(default_factory=list)  # named like a step, not written here
    leftovers: list[Path] = field(default_factory=list)  # half-written or half-deleted steps of a killed process
    marked: bool = False
    others: list[str] = field(default_factory=list)  # anything else (left alone)


def obviously_not_a_home(path: Path) -> str | None:
    """Why `path` can never be a checkpoint directory (the root, the home folder itself), or None."""
    if path == Path(path.anchor):
        return "it is the root of the filesystem"
    if path == Path(os.path.abspath(os.path.expanduser("~"))):
        return "it is your home folder"
    return None


def is_step_folder(path: Path) -> bool:
    """A real folder holding nothing but what a checkpoint save writes (damaged or half-emptied steps included)."""
    if path.is_symlink() or not path.is_dir():
        return False
    try:
        return all(entry.name in STEP_ENTRIES and not entry.is_symlink() for entry in path.iterdir())
    except OSError:
        return False


def written_by_us(step_folder: Path) -> bool:
    """The folder's `info/metadata` is this library's checkpoint info: proof for a directory without the marker."""
    if not is_step_folder(step_folder):
        return False
    try:
        info = json.loads((step_folder / "info" / "metadata").read_text())
    except (OSError, ValueError, RecursionError):
        return False
    return isinstance(info, dict) and {"format", "meta", "leaves"} <= set(info)


def scan(directory: Path) -> Listing:
    out = Listing()
    for entry in sorted(directory.iterdir(), key=lambda e: e.name):
        name = entry.name
        if name == MARKER:
            out.marked = True
        elif name.isdigit():
            if entry.is_symlink():
                out.links.append(name)
            elif is_step_folder(entry):
                out.steps[int(name)] = entry
            else:
                out.foreign.append(name)
        elif (_IN_FLIGHT.match(name) or name.endswith(_DELETING)) and entry.is_dir() and not entry.is_symlink():
            out.leftovers.append(entry)
        elif name.startswith(_PROBE):
            continue
        else:
            out.others.append(name)
    return out


def claim(directory: Path) -> Listing:
    """Make sure `directory` is this library's checkpoint directory (marking it if it is new), or raise `Refused`
    with the reason; returns its listing."""
    listing = scan(directory)
    if listing.marked:
        if listing.foreign:
            raise Refused(f"it holds {_names(listing.foreign)}, named like checkpoint steps but not written by "
                          "jupyter_llm. Move them out of the folder, or choose another one")
        return listing
    legacy = all(written_by_us(path) for path in listing.steps.values())
    unproven = [] if legacy else [str(step) for step in listing.steps]
    unknown = sorted(listing.others + listing.foreign + listing.links + unproven)
    if unknown:
        raise Refused(f"it already holds files that jupyter_llm did not write ({_names(unknown)}). Checkpoints go "
                      "into a new or empty folder, or one that holds only jupyter_llm checkpoints")
    _write_marker(directory)
    listing.marked = True
    return listing


def delete_step(path: Path) -> None:
    """Remove a step folder this library wrote: renamed first, so a kill halfway leaves no half step behind."""
    if not is_step_folder(path):
        raise Refused(f"{path.name} is not a step folder written by jupyter_llm; it was left alone")
    doomed = path.with_name(path.name + _DELETING)
    os.replace(path, doomed)
    shutil.rmtree(doomed, ignore_errors=True)


def delete_leftover(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)


def _write_marker(directory: Path) -> None:
    tmp = directory / f"{MARKER}.tmp"
    tmp.write_text(json.dumps({"written_by": "jupyter_llm", "what": "checkpoints: step folders named by step number",
                               "deletes": "only step folders it wrote"}) + "\n")
    os.replace(tmp, directory / MARKER)


def _names(names: list[str], most: int = 3) -> str:
    shown = ", ".join(repr(n) for n in names[:most])
    return shown + (f" and {len(names) - most} more" if len(names) > most else "")


class Refused(Exception):
    """Internal: this directory (or entry) is not this library's to write into or delete; the message says why."""
