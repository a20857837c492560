"""Checkpoints of a `TrainState` plus a JSON `meta` dict: asynchronous, atomic, readable by a new process, never pickle.

Built on Orbax 0.12.8 (an `AsyncCheckpointer` of a `CompositeCheckpointHandler`, one step folder at a time). Orbax
writes and commits; which steps exist, which are kept and which are deleted is decided here, and only ever about
folders this library wrote (`checkpoint_dir`). Each step is one directory::

    <directory>/<step>/                  renamed from <step>.orbax-checkpoint-tmp only once every file is written
        commit_success.txt, _CHECKPOINT_METADATA    Orbax's commit marker and step metadata
        state/                           the arrays (OCDBT / tensorstore), as a nested dict named by pytree path
        info/metadata                    JSON: {"format": 2, "meta": <the caller's meta>, "leaves": [[name, shape,
                                         dtype, key_impl], ...]}

The state's pytree structure is not stored: `restore(like)` takes it from `like`. Typed PRNG keys (`nnx.Rngs` streams)
are stored as their `jax.random.key_data` (uint32) and wrapped again on restore with the implementation recorded in
`leaves`. The `leaves` table lets `restore` check the shapes against `like` before Orbax reads anything, so restoring
into a different model is one clear line instead of an Orbax traceback.

A step counts as intact when its directory has Orbax's commit marker, a readable `_CHECKPOINT_METADATA`, both items
and an info of this format whose every field has the type a restore trusts (`steps()` checks these files); `restore`
also reads every array and lets the caller check the arrays against the meta, so a truncated data file or a
tampered position shows up there. `restore()` without a step falls back to the newest intact step, with one warning
that names the damaged ones.
"""

from __future__ import annotations

import functools
import gc
import json
import os
import re
import sys
import tempfile
import time
import warnings
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from jupyter_llm.errors import ConfigError, JupyterLLMError, a_or_an
from jupyter_llm.train import checkpoint_dir
from jupyter_llm.train.interrupt import interrupts_held

FORMAT = 2  # 2: the train state has no lr_scale (the loop's position keeps it)
_STATE, _INFO = "state", "info"
_REQUIRED_FILES = ("commit_success.txt", "_CHECKPOINT_METADATA", f"{_STATE}/_METADATA", f"{_INFO}/metadata")


class CheckpointError(JupyterLLMError):
    """A checkpoint directory cannot be used: not writable, no intact checkpoint, or saved from another model."""


class CheckpointWarning(UserWarning):
    """A damaged checkpoint or a link was skipped, or newer checkpoints were replaced."""


class DamagedCheckpoint(Exception):
    """Raised by a caller's check of a restored step (its arrays disagree with its meta): the step is skipped like
    any damaged one. The message says why."""


def _ocp():
    import orbax.checkpoint as ocp  # slow import: only when checkpoints are used

    return ocp


def _short(exc: BaseException, limit: int = 200) -> str:
    """One line out of an Orbax / TensorStore error: its innermost cause, without the JSON spec they carry."""
    seen = {id(exc)}
    while (inner := exc.__cause__ or exc.__context__) is not None and id(inner) not in seen:
        seen.add(id(inner))
        exc = inner
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    text = text.split(" See full TensorStore details")[0].split(" [tensorstore_spec=")[0]
    text = re.sub(r'(Error opening "\w+" driver: )+', "", text)
    text = f"{type(exc).__name__}: {text}" if text else type(exc).__name__
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _each_step(problems: list[tuple[int, str]]) -> str:
    return "; ".join(f"step {step}: {reason}" for step, reason in problems)


def _segment(key) -> str:
    for attr in ("name", "key", "idx"):  # GetAttrKey, DictKey / FlattenedIndexKey, SequenceKey
        if hasattr(key, attr):
            key = getattr(key, attr)
            break
    text = str(key).replace(".", "_").replace("/", "_")  # Orbax joins names with "."
    return text or "_"


def _names(path_leaves) -> list[tuple[str, ...]]:
    return [tuple(_segment(k) for k in path) or ("_",) for path, _ in path_leaves]


def _display(name: tuple[str, ...]) -> str:
    """'params/hidden/0/kernel' (the nnx Variable's trailing '.value' is left out)."""
    parts = name[:-1] if len(name) > 1 and name[-1] == "value" else name
    return "/".join(parts) or "<root>"


def _nest(names, values) -> dict:
    out: dict = {}
    for name, value in zip(names, values):
        node = out
        for part in name[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise CheckpointError(f"Cannot checkpoint this state: two entries map to the name "
                                      f"{'/'.join(name)!r}. Rename one of the model's attributes.")
        if name[-1] in node:
            raise CheckpointError(f"Cannot checkpoint this state: two entries map to the name {'/'.join(name)!r}. "
                                  "Rename one of the model's attributes.")
        node[name[-1]] = value
    return out


def _pluck(tree: dict, name: tuple[str, ...]):
    for part in name:
        tree = tree[part]
    return tree


def _is_key(dtype) -> bool:
    return jnp.issubdtype(dtype, jax.dtypes.prng_key)


def _plain_json(meta) -> dict:
    """A JSON-native deep copy (numpy / jax scalars become numbers): what is saved is exactly what comes back, and
    the caller may change its dict while the asynchronous save is still writing."""

    def default(obj):
        if hasattr(obj, "tolist"):
            return obj.tolist()
        raise TypeError(f"{a_or_an(type(obj).__name__)} is not JSON-serialisable")

    try:
        return json.loads(json.dumps(meta, default=default))
    except (TypeError, ValueError) as exc:
        raise CheckpointError(f"Checkpoint meta must be plain JSON (dicts, lists, str, numbers): {exc}") from None


def _together(name: str) -> None:
    """A barrier of every process of a distributed job (nothing to wait for in one process)."""
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils

        multihost_utils.sync_global_devices(name)


def _default_sharding():
    return jax.sharding.SingleDeviceSharding(jax.local_devices()[0])


class Checkpointer:
    """Save and restore `TrainState`s in one directory, keeping the newest `keep` intact steps.

    >>> with Checkpointer("/tmp/run1/ckpt", keep=3) as ckpt:      # doctest: +SKIP
    ...     ckpt.save(step, state, {"epoch": 2})                    # returns at once; written in the background
    ...     state, meta, step = ckpt.restore(like=state)            # newest intact step

    The directory is claimed first (`checkpoint_dir.claim`): a folder holding anything this library did not write is
    refused. Saving a step at or below an existing one first deletes those newer-or-equal steps (a fit continued from
    an older checkpoint replaces the abandoned ones), with a `CheckpointWarning`. Steps beyond `keep` are deleted only
    once a newer one is committed, oldest first. Not writable is detected by writing a probe file (permission bits
    alone say nothing when running as root).
    """

    def __init__(self, directory, *, keep: int | None = 3, asynchronous: bool = True):
        if keep is not None and (isinstance(keep, bool) or not isinstance(keep, int) or keep < 1):
            raise ConfigError(f"keep must be a positive number of checkpoints (or None for all), not {keep!r}.")
        self.directory = Path(os.path.abspath(os.path.expanduser(os.fspath(directory))))
        self.keep, self.asynchronous = keep, bool(asynchronous)
        # several processes (jax.distributed): each writes its shards through Orbax, process 0 alone manages the
        # folder (claims it, replaces and deletes steps), and the others wait for it at each such point
        self._lead = jax.process_index() == 0
        if self._lead:
            self._prepare_directory()
        _together("jupyter_llm-checkpoint-folder")
        if not self._lead:
            self._prepare_directory()  # claimed already: this only reads
        self._cleaned = self._saved = False
        ocp = _ocp()
        with interrupts_held():  # Orbax starts threads here too
            handler = ocp.CompositeCheckpointHandler()
            self._orbax = ocp.AsyncCheckpointer(handler) if self.asynchronous else ocp.Checkpointer(handler)

    # -- directory ------------------------------------------------------------------------------------------------
    def _prepare_directory(self) -> None:
        path = self.directory
        why_not = checkpoint_dir.obviously_not_a_home(path)
        if why_not:
            raise CheckpointError(f"Checkpoint directory {path} cannot be used: {why_not}. Give --checkpoint a "
                                  "folder of its own, e.g. checkpoints/run1.")
        if path.exists() and not path.is_dir():
            raise CheckpointError(f"Checkpoint directory {path} is an existing file, not a folder. "
                                  "Choose another path for --checkpoint.")
        try:
            path.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            blocker = next((p for p in path.parents if p.exists() and not p.is_dir()), None)
            why = f"{blocker} is a file, not a folder" if blocker else (exc.strerror or str(exc))
            raise CheckpointError(f"Cannot create checkpoint directory {path}: {why}.") from None
        try:
            with tempfile.NamedTemporaryFile(dir=path, prefix=".write-test-"):
                pass
        except OSError as exc:
            raise CheckpointError(f"Checkpoint directory {path} is not writable: {exc.strerror or exc}.") from None
        self._listing()

    def _listing(self, *, warn_links: bool = False) -> checkpoint_dir.Listing:
        """The directory's entries, claimed for this library (refused when anything in it is not ours)."""
        try:
            listing = checkpoint_dir.claim(self.directory)
        except checkpoint_dir.Refused as refused:
            raise CheckpointError(f"Checkpoint directory {self.directory} cannot be used: {refused}.") from None
        except OSError as exc:
            raise CheckpointError(f"Checkpoint directory {self.directory} cannot be read: "
                                  f"{exc.strerror or exc}.") from None
        if warn_links and listing.links:
            warnings.warn(f"Skipping the link{'s' * (len(listing.links) > 1)} {', '.join(listing.links)} in "
                          f"{self.directory}: checkpoints are never read or deleted through links.",
                          CheckpointWarning, stacklevel=3)
        return listing

    def _remove_leftovers(self) -> None:
        """Half-written `<step>.orbax-checkpoint-tmp` folders of a killed process (only before our own first save,
        so a reader never deletes what a running writer is writing)."""
        for path in self._listing().leftovers:
            checkpoint_dir.delete_leftover(path)
        self._cleaned = True

    def _delete(self, step: int) -> None:
        try:
            checkpoint_dir.delete_step(self.directory / str(step))
        except checkpoint_dir.Refused as refused:
            raise CheckpointError(f"Cannot replace checkpoint step {step} in {self.directory}: {refused}.") from None
        except OSError as exc:
            raise CheckpointError(f"Cannot delete checkpoint step {step} in {self.directory}: "
                                  f"{exc.strerror or exc}.") from None

    def _prune(self) -> None:
        """Delete the steps older than the newest `keep` intact ones (committed saves only)."""
        if self.keep is None:
            return
        intact = 0
        for step in sorted(self._listing().steps, reverse=True):
            if intact >= self.keep:
                self._delete(step)
            elif self._damage(step) is None:
                intact += 1

    # -- saving ---------------------------------------------------------------------------------------------------
    def save(self, step: int, state, meta: dict) -> None:
        """Start writing `state` and `meta` as `step`; returns once the arrays are copied off the device."""
        ocp = _ocp()
        step = int(step)
        info = {"format": FORMAT, "written_by": "jupyter_llm", "meta": _plain_json(meta), "leaves": []}
        path_leaves = jax.tree_util.tree_flatten_with_path(state)[0]
        names, values = _names(path_leaves), []
        for name, (_, leaf) in zip(names, path_leaves):
            if not isinstance(leaf, jax.Array):
                leaf = np.asarray(leaf)  # numpy / Python scalars: a 0-d array Orbax stores like any other
            impl, shape, dtype = None, list(leaf.shape), str(leaf.dtype)
            if _is_key(leaf.dtype):  # typed PRNG key: store its uint32 data, wrap it again on restore
                impl, leaf = str(jax.random.key_impl(leaf)), jax.random.key_data(leaf)
            values.append(leaf)
            info["leaves"].append(["/".join(name), shape, dtype, impl])
        tree = _nest(names, values)
        self._finish_pending()  # the previous save is committed (Orbax would wait for it too): it counts for `keep`
        refused = None
        if self._lead:
            try:
                self._make_room(step)
            except CheckpointError as exc:
                refused = exc
        _together(f"jupyter_llm-checkpoint-save-{step}")
        if refused is not None:
            raise refused
        self._saved = True
        try:
            with interrupts_held():  # see interrupts_held: an interrupt inside Orbax's save can hang the process
                self._orbax.save(self.directory / str(step), args=ocp.args.Composite(
                    **{_STATE: ocp.args.StandardSave(tree), _INFO: ocp.args.JsonSave(info)}))
        except Exception as exc:
            raise CheckpointError(f"Saving checkpoint step {step} to {self.directory} failed: {_short(exc)}") from exc

    def _make_room(self, step: int) -> None:
        """Before saving `step`: leftovers of a killed writer gone, newer steps replaced, the oldest pruned."""
        if not self._cleaned:
            self._remove_leftovers()
        listing = self._listing()
        if str(step) in listing.links:
            raise CheckpointError(f"Cannot save checkpoint step {step}: {self.directory / str(step)} is a link. "
                                  "Move it out of the checkpoint folder.")
        newer = sorted(s for s in listing.steps if s >= step)
        if newer:
            self._replace(newer, step)
        self._prune()  # after the replacement: the step a fit continued from is one of the newest kept

    def _replace(self, newer: list[int], step: int) -> None:
        damaged = [s for s in newer if self._damage(s) is not None]
        what = "damaged " if damaged == newer else ""
        warnings.warn(f"Replacing {what}checkpoint step(s) {', '.join(map(str, newer))} in {self.directory} by the "
                      f"new step {step}.", CheckpointWarning, stacklevel=3)
        for s in newer:
            self._delete(s)

    def wait(self) -> None:
        """Block until every pending save is committed (renamed to its final `<step>` folder); after saving, drop the
        steps beyond `keep` (a reader deletes nothing)."""
        self._finish_pending()
        if self._saved and self._lead:
            self._prune()

    def _finish_pending(self) -> None:
        if not self.asynchronous:  # a synchronous Orbax checkpointer has returned committed (and has no wait)
            return
        try:
            self._orbax.wait_until_finished()
        except Exception as exc:
            raise CheckpointError(f"Saving a checkpoint to {self.directory} failed: {_short(exc)}") from exc

    # -- listing --------------------------------------------------------------------------------------------------
    def _all_step_dirs(self, *, warn_links: bool = False) -> list[int]:
        return sorted(self._listing(warn_links=warn_links).steps)

    def _damage(self, step: int) -> str | None:
        """Why step `step` is not intact (cheap file checks), or None."""
        return _read_step(self.directory / str(step))[1]

    def steps(self) -> list[int]:
        """Committed steps whose files look intact, ascending."""
        return [s for s in self._all_step_dirs() if self._damage(s) is None]

    def latest_step(self) -> int | None:
        steps = self.steps()
        return steps[-1] if steps else None

    # -- restoring ------------------------------------------------------------------------------------------------
    def restore(self, like, step: int | None = None, check_meta=None, check_restored=None):
        """(state, meta, step) from `step`, or from the newest intact step when `step` is None.

        `like` gives the structure, shapes, dtypes and shardings (concrete arrays or `jax.ShapeDtypeStruct`s; a
        struct without a sharding is put on the first local device). `check_meta(meta)` runs before the arrays are
        compared with `like`, so a caller can refuse with its own reason (a setting that changed the optimizer's
        structure) instead of a list of mismatched arrays. `check_restored(state, meta)` runs last and raises
        `DamagedCheckpoint` when the two disagree: that step is then skipped like any damaged one."""
        self.wait()
        path_leaves, treedef = jax.tree_util.tree_flatten_with_path(like)
        names = _names(path_leaves)
        likes = [leaf for _, leaf in path_leaves]
        _nest(names, likes)  # same name clashes as save would find
        on_disk = self._all_step_dirs(warn_links=True)
        if step is not None:
            step = int(step)
            if step not in on_disk:
                have = ", ".join(map(str, self.steps())) or "none"
                raise CheckpointError(f"{self.directory} has no checkpoint for step {step} (intact steps: {have}).")
            candidates = [step]
        else:
            candidates = on_disk[::-1]
            if not candidates:
                raise CheckpointError(f"No checkpoint in {self.directory}: it has no step folders (a fit writes them "
                                      "with --checkpoint DIR). Check the path, or start the fit without --resume.")
        problems = []
        with _QuietAbandonedReads() as quiet:
            for s in candidates:
                try:
                    state, meta = self._restore_step(s, names, likes, treedef, check_meta, check_restored)
                except (_Damaged, DamagedCheckpoint) as damaged:
                    quiet.failed = True
                    if step is not None:
                        raise CheckpointError(f"Checkpoint step {s} in {self.directory} is damaged: "
                                              f"{damaged}") from None
                    problems.append((s, str(damaged)))
                    continue
                if problems:  # one warning, and only when an older step is used: otherwise the error says it all
                    steps = ", ".join(str(bad) for bad, _ in problems)
                    why = problems[0][1] if len(problems) == 1 else _each_step(problems)
                    warnings.warn(f"Skipping damaged checkpoint step{'s' * (len(problems) > 1)} {steps} in "
                                  f"{self.directory} ({why}); restored step {s}.", CheckpointWarning, stacklevel=2)
                return state, meta, s
        raise CheckpointError(f"No intact checkpoint in {self.directory}: {_each_step(problems)}. Start the fit "
                              "without --resume, or resume from another directory.")

    def _restore_step(self, s: int, names, likes, treedef, check_meta=None, check_restored=None):
        ocp = _ocp()
        folder = self.directory / str(s)
        info, reason = _read_step(folder)
        if reason:
            raise _Damaged(reason)
        saved = {tuple(n.split("/")): (tuple(shape), dtype, impl) for n, shape, dtype, impl in info["leaves"]}
        meta = info["meta"]
        if check_meta is not None:
            check_meta(meta)
        self._check_fits(s, names, likes, saved)
        targets = []
        for name, leaf in zip(names, likes):
            shape, dtype = tuple(np.shape(leaf)), _dtype(leaf)
            if not isinstance(leaf, (jax.Array, jax.ShapeDtypeStruct)):
                targets.append(np.zeros(shape, dtype))  # numpy / Python scalars come back as numpy, dtype kept
                continue
            if _is_key(dtype):
                shape, dtype = shape + _key_shape(saved[name][2]), np.dtype("uint32")
            sharding = getattr(leaf, "sharding", None) or _default_sharding()
            targets.append(jax.ShapeDtypeStruct(shape, dtype, sharding=sharding))
        try:
            arrays = self._orbax.restore(folder, args=ocp.args.Composite(
                **{_STATE: ocp.args.StandardRestore(_nest(names, targets))}))[_STATE]
            values = [_pluck(arrays, name) for name in names]
        except Exception as exc:  # noqa: BLE001 - TensorStore raises plain Exception / ValueError
            raise _Damaged(f"its arrays cannot be read: {_short(exc)}") from None
        out = []
        for name, leaf, value in zip(names, likes, values):
            if _is_key(_dtype(leaf)):
                value = jax.random.wrap_key_data(value, impl=saved[name][2])
            elif isinstance(leaf, np.generic):
                value = np.asarray(value, leaf.dtype)[()]
            elif isinstance(leaf, (bool, int, float, complex)):
                value = type(leaf)(np.asarray(value).item())
            elif not isinstance(leaf, (jax.Array, jax.ShapeDtypeStruct)):
                value = np.asarray(value)
            out.append(value)
        state = jax.tree_util.tree_unflatten(treedef, out)
        if check_restored is not None:
            check_restored(state, meta)
        return state, meta

    def _check_fits(self, s: int, names, likes, saved: dict) -> None:
        problems = []
        for name, leaf in zip(names, likes):
            dtype, shape = _dtype(leaf), tuple(np.shape(leaf))
            if name not in saved:
                problems.append(f"{_display(name)}: the model has it with shape {shape}, the checkpoint does not")
                continue
            saved_shape, saved_dtype, impl = saved[name]
            if saved_shape != shape:
                problems.append(f"{_display(name)}: the checkpoint has shape {saved_shape}, the model {shape}")
            elif _is_key(dtype) != (impl is not None) or (impl is not None and str(dtype) != saved_dtype):
                problems.append(f"{_display(name)}: the checkpoint has dtype {saved_dtype}, the model {dtype}")
        extra = [n for n in saved if n not in set(names)]
        problems += [f"{_display(n)}: the checkpoint has it with shape {saved[n][0]}, the model does not"
                     for n in extra]
        if problems:
            more = f" (and {len(problems) - 1} more differences)" if len(problems) > 1 else ""
            raise CheckpointError(f"The checkpoint in {self.directory} (step {s}) was saved from a different model "
                                  f"or optimizer: {problems[0]}{more}. Restore it into the model it was saved "
                                  "from, or use another checkpoint directory.")

    # -- lifetime -------------------------------------------------------------------------------------------------
    def close(self) -> None:
        """Wait for pending saves, then release Orbax's threads."""
        try:
            self.wait()
        finally:
            with interrupts_held():  # nothing is pending after wait(): this only shuts Orbax's threads down
                self._orbax.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False

    def __repr__(self):
        return f"Checkpointer({str(self.directory)!r}, keep={self.keep}, asynchronous={self.asynchronous})"


class _QuietAbandonedReads:
    """While restoring: drop the noise of the reads a failed Orbax restore abandons.

    When one array of a damaged step cannot be read, Orbax's `asyncio.gather` fails fast and `asyncio.run` closes its
    loop; the other reads then report "Event loop is closed" from TensorStore threads, and their coroutines raise
    again when garbage-collected. Both only reach `sys.unraisablehook` ("Exception ignored in ..."); after a failure
    this collects them (with a short wait) before the previous hook is put back. Every other unraisable exception
    goes to the previous hook. Orbax's coroutines that the failure left unawaited warn when collected ("coroutine ...
    was never awaited", whenever the collector happens to run): those warnings are dropped here too."""

    def __init__(self):
        self.failed = False

    def _hook(self, unraisable):
        exc, obj = unraisable.exc_value, unraisable.object
        closed_loop = isinstance(exc, RuntimeError) and str(exc) == "Event loop is closed" and obj is None
        orbax_coroutine = "orbax" in getattr(getattr(obj, "cr_code", None), "co_filename", "")
        if not (closed_loop or orbax_coroutine):
            self._previous(unraisable)

    def __enter__(self):
        self._previous, sys.unraisablehook = sys.unraisablehook, self._hook
        self._warnings = warnings.catch_warnings()
        self._warnings.__enter__()
        # (attributed to whatever frame the collector interrupts, so matched by message: a restore runs no other)
        warnings.filterwarnings("ignore", message="coroutine .* was never awaited", category=RuntimeWarning)
        return self

    def __exit__(self, *exc):
        try:
            if self.failed:
                time.sleep(0.05)
                gc.collect()
        finally:
            self._warnings.__exit__(None, None, None)
            if sys.unraisablehook == self._hook:
                sys.unraisablehook = self._previous
        return False


class _Damaged(Exception):
    """Internal: this step cannot be read; the message says why."""


def _read_step(folder: Path) -> tuple[dict | None, str | None]:
    """(info, None) for an intact-looking step folder, else (None, why not): every file a restore relies on is there
    and every field of the info has the type the restore trusts."""
    if not folder.is_dir():
        return None, "its folder is missing"
    for rel in _REQUIRED_FILES:
        if not (folder / rel).is_file():
            return None, f"{rel} is missing" + (" (the save never committed)" if rel == "commit_success.txt" else "")
    found = {}
    for rel in ("_CHECKPOINT_METADATA", f"{_INFO}/metadata"):
        try:
            found[rel] = json.loads((folder / rel).read_text())
        except (OSError, ValueError) as exc:
            return None, f"{rel} cannot be read: {_short(exc, 80)}"
        except RecursionError:
            return None, f"{rel} is nested too deeply to be a checkpoint's"
        if not isinstance(found[rel], dict):
            return None, f"{rel} holds {a_or_an(type(found[rel]).__name__)}, not a JSON object"
    info = found[f"{_INFO}/metadata"]
    why = _info_problem(info)
    return (None, why) if why else (info, None)


def _info_problem(info: dict) -> str | None:
    if info.get("format") != FORMAT:
        return f"its format is {info.get('format')!r}; this version reads format {FORMAT}"
    if not isinstance(info.get("meta"), dict):
        return "its meta is not a JSON object"
    leaves = info.get("leaves")
    if not isinstance(leaves, list):
        return "its table of arrays is missing"
    for row in leaves:
        ok = (isinstance(row, list) and len(row) == 4 and isinstance(row[0], str) and isinstance(row[1], list)
              and all(isinstance(n, int) and not isinstance(n, bool) and n >= 0 for n in row[1])
              and isinstance(row[2], str) and (row[3] is None or isinstance(row[3], str)))
        if not ok:
            return f"its table of arrays has a malformed row {str(row)[:60]}"
    if len({row[0] for row in leaves}) != len(leaves):
        return "its table of arrays names one array twice"
    return None


@functools.cache
def _key_shape(impl: str) -> tuple[int, ...]:
    """The trailing shape `jax.random.key_data` adds for a key implementation (threefry2x32: (2,), rbg: (4,))."""
    return tuple(jax.eval_shape(lambda: jax.random.key_data(jax.random.key(0, impl=impl))).shape)


def _dtype(leaf):
    dtype = getattr(leaf, "dtype", None)
    return dtype if dtype is not None else np.asarray(leaf).dtype


# -- reading a saved run without a model at hand (jl.load) ----------------------------------------------------------
def read(directory, step: int | None = None, check=None) -> tuple[dict, dict, int]:
    """(arrays, meta, step) of the newest intact step of `directory` (or of `step`): `arrays` maps each saved array's
    name ('params/h/0/attn/c_attn/kernel/value') to its value, typed PRNG keys wrapped again. Reads only: nothing is
    claimed, written or deleted, so a read-only folder or one a running fit writes into can be read.
    `check(arrays, meta)` raises `DamagedCheckpoint` when the two disagree; that step is then skipped like any
    damaged one, with one warning, as `Checkpointer.restore` does."""
    path = Path(os.path.abspath(os.path.expanduser(os.fspath(directory))))
    if not path.is_dir():
        why = "it is a file" if path.exists() else "there is no such folder"
        raise CheckpointError(f"Cannot load {path}: {why}. Give the folder that run.save(folder) or a fit's "
                              "--checkpoint DIR wrote.")
    try:
        steps = sorted(checkpoint_dir.scan(path).steps)
    except OSError as exc:
        raise CheckpointError(f"Cannot read {path}: {exc.strerror or exc}.") from None
    if step is not None:
        if int(step) not in steps:
            raise CheckpointError(f"{path} has no saved step {step} (steps: {', '.join(map(str, steps)) or 'none'}).")
        steps = [int(step)]
    if not steps:
        raise CheckpointError(f"{path} holds no saved run: it has no step folders (run.save(folder) and "
                              "--checkpoint DIR write them). Check the path.")
    problems = []
    ocp = _ocp()
    with _QuietAbandonedReads() as quiet:
        orbax = ocp.Checkpointer(ocp.CompositeCheckpointHandler())
        try:
            for s in reversed(steps):
                try:
                    arrays, meta = _read_arrays(orbax, path / str(s))
                    if check is not None:
                        check(arrays, meta)
                except (_Damaged, DamagedCheckpoint) as damaged:
                    quiet.failed = True
                    problems.append((s, str(damaged)))
                    continue
                if problems:
                    bad = ", ".join(str(b) for b, _ in problems)
                    warnings.warn(f"Skipping damaged step{'s' * (len(problems) > 1)} {bad} in {path} "
                                  f"({_each_step(problems)}); loaded step {s}.", CheckpointWarning, stacklevel=2)
                return arrays, meta, s
        finally:
            orbax.close()
    raise CheckpointError(f"No intact saved step in {path}: {_each_step(problems)}.")


def newest_meta(directory) -> dict | None:
    """The meta of the newest step of `directory` whose files look intact (no array is read), or None."""
    path = Path(os.path.abspath(os.path.expanduser(os.fspath(directory))))
    try:
        steps = sorted(checkpoint_dir.scan(path).steps, reverse=True) if path.is_dir() else []
    except OSError:
        return None
    for s in steps:
        info, reason = _read_step(path / str(s))
        if reason is None:
            return info["meta"]
    return None


def _read_arrays(orbax, folder: Path) -> tuple[dict, dict]:
    ocp = _ocp()
    info, reason = _read_step(folder)
    if reason:
        raise _Damaged(reason)
    names, targets = [], []
    for name, shape, dtype, impl in info["leaves"]:
        try:
            dtype = np.dtype("uint32") if impl else jnp.dtype(dtype)
            shape = tuple(shape) + (_key_shape(impl) if impl else ())
        except (TypeError, ValueError, KeyError) as exc:
            raise _Damaged(f"its array {name} has an unknown dtype or key kind ({_short(exc, 80)})") from None
        names.append(tuple(name.split("/")))
        targets.append(jax.ShapeDtypeStruct(shape, dtype, sharding=_default_sharding()))
    try:
        restored = orbax.restore(folder, args=ocp.args.Composite(
            **{_STATE: ocp.args.StandardRestore(_nest(names, targets))}))[_STATE]
        values = [_pluck(restored, name) for name in names]
    except Exception as exc:  # noqa: BLE001 - TensorStore raises plain Exception / ValueError
        raise _Damaged(f"its arrays cannot be read: {_short(exc)}") from None
    arrays = {}
    for (name, _, _, impl), value in zip(info["leaves"], values):
        arrays[name] = jax.random.wrap_key_data(value, impl=impl) if impl else value
    return arrays, info["meta"]


def fill(like, arrays: dict, where: str):
    """A tree shaped like `like` whose leaves are `arrays[name]` (the names `save` gives a tree's leaves); a name
    missing from `arrays`, one of another shape or dtype, or an array under `like`'s top-level names that `like` has
    no place for is refused with a `CheckpointError` that names the first and counts the others."""
    path_leaves, treedef = jax.tree_util.tree_flatten_with_path(like)
    names = ["/".join(n) for n in _names(path_leaves)]
    problems, values = [], []
    for name, (_, leaf) in zip(names, path_leaves):
        shape, dtype = tuple(np.shape(leaf)), _dtype(leaf)
        value = arrays.get(name)
        if value is None:
            problems.append(f"{_display(tuple(name.split('/')))}: the model has it with shape {shape}, the saved run "
                            "does not")
        elif tuple(value.shape) != shape:
            problems.append(f"{_display(tuple(name.split('/')))}: saved with shape {tuple(value.shape)}, the model "
                            f"has {shape}")
        elif str(value.dtype) != str(dtype):
            problems.append(f"{_display(tuple(name.split('/')))}: saved as {value.dtype}, the model has {dtype}")
        values.append(value)
    tops, known = {n.split("/")[0] for n in names}, set(names)
    problems += [f"{_display(tuple(n.split('/')))}: saved with shape {tuple(arrays[n].shape)}, the model does not "
                 "have it" for n in arrays if n.split("/")[0] in tops and n not in known]
    if problems:
        more = f" (and {len(problems) - 1} more differences)" if len(problems) > 1 else ""
        raise CheckpointError(f"{where} was saved from a different model: {problems[0]}{more}.")
    return jax.tree_util.tree_unflatten(treedef, values)


def nested(arrays: dict) -> dict:
    """`arrays` (name -> array, as `read` gives them) as the tree `save` writes under the same names."""
    return _nest([tuple(name.split("/")) for name in arrays], list(arrays.values()))
