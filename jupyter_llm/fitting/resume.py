"""Saving a fit as it goes, and continuing one: from a checkpoint directory or from an earlier Run in memory.

A checkpoint holds the whole train state (weights, optimizer, step, RNG streams) plus, as JSON, the loop's position
(epoch, chunk, the epoch's partial metric sums), the history so far, the configuration and the tokenizer — so a
resumed fit produces the same history as one that was never interrupted.
"""

from __future__ import annotations

import dataclasses
import os

import jax

from jupyter_llm.errors import ConfigError
from jupyter_llm.fitting.save import data_origin, data_tokenizer, saved_meta
from jupyter_llm.options import speaks_flags
from jupyter_llm.train.loop import Position
from jupyter_llm.train.state import fresh_copy, init_state

_RESUME_MUST_MATCH = ("batch_size", "seed", "accumulate", "block_size", "lora", "lora_alpha", "lora_targets", "freeze")


class Saver:
    """Writes checkpoints at the loop's save points, asynchronously and atomically (Orbax)."""

    def __init__(self, directory, *, keep: int, prepared, history):
        from jupyter_llm.train.checkpoint import Checkpointer

        self.checkpointer = Checkpointer(directory, keep=keep)
        self.prepared, self.history = prepared, history

    @classmethod
    def for_fit(cls, config, prepared, history) -> "Saver | None":
        if config.checkpoint is None:
            return None
        saver = cls(config.checkpoint, keep=config.keep, prepared=prepared, history=history)
        latest = saver.checkpointer.latest_step()
        if latest is not None and config.resume is None:
            saver.close()
            raise ConfigError(f"{config.checkpoint} already holds checkpoints of another fit (newest: step {latest}). "
                              "Add --resume to continue that fit, or pass a new --checkpoint directory.")
        return saver

    def save(self, state, position: Position) -> None:
        p = self.prepared
        meta = saved_meta(position, self.history.history, self.history.log, p.config, p.model, p.loss_name,
                          data_tokenizer(p.dataset), data_origin(p.dataset))
        self.checkpointer.save(position.step, state, meta)

    def close(self) -> None:
        self.checkpointer.close()


@dataclasses.dataclass(frozen=True)
class EarlierRun:
    """What a finished fit's config says of the Run it continued: the Run itself (its state, its data, its own
    earlier runs) is not kept alive by the new one."""

    step: int
    reason: str

    def __repr__(self):
        return f"<the Run at step {self.step} ({self.reason})>"


def release_earlier_run(config):
    """`config` with a resumed-from Run replaced by an `EarlierRun` note."""
    source = config.resume
    if source is None or isinstance(source, (bool, str, os.PathLike, EarlierRun)):
        return config
    return dataclasses.replace(config, resume=EarlierRun(int(getattr(source, "step", 0)),
                                                         str(getattr(source, "reason", "?"))))


def resume_point(config, prepared):
    """None, or (state, Position, (history, log)) to continue from, checked against this fit."""
    source = config.resume
    if source is None or source is False:
        return None
    from jupyter_llm.fitting.background import BackgroundRun
    from jupyter_llm.fitting.run import Run

    if isinstance(source, BackgroundRun):  # a background fit's handle: the Run it ended with
        if source.running and not source.is_own_thread():
            queue = f"--after {source.name}" if speaks_flags() else f"after={source.name}"
            raise ConfigError(f"Cannot resume {source.name} while it runs: stop it ({source.name}.stop()) or wait "
                              f"for it ({source.name}.wait()), or queue this fit behind it with {queue}.")
        if source.result is None:
            raise ConfigError(f"{source.name} has no state to resume from: it failed ({source.name}.error) or was "
                              "stopped while queued.")
        source = source.result
    like = jax.eval_shape(lambda p, r: init_state(p, r, prepared.optimizer, copy=False), prepared.params, prepared.rest)
    if isinstance(source, EarlierRun):
        raise ConfigError("This config's resume= is a note of the Run it continued, not the Run: pass the Run itself "
                          "(resume=run) or a checkpoint directory.")
    if isinstance(source, Run):
        what = "the earlier run" if source.loaded_from is None else f"the run loaded from {source.loaded_from}"
        if source.state is None or source.position is None:
            raise ConfigError("That run has no state to resume from (it failed before its first step).")
        _check_settings(source.config.to_dict(), config, what)
        saved = source.state
        if isinstance(saved, dict):  # a loaded run: its arrays by name, placed into this fit's state
            from jupyter_llm.train.checkpoint import CheckpointError, fill

            try:
                saved = fill(like, saved, what[0].upper() + what[1:])
            except CheckpointError as exc:
                raise ConfigError(f"Cannot resume: {exc} Resume with the same model and optimizer.") from None
        _check_same_structure(like, saved, what)
        position = _check_dispatches(Position.from_dict(source.position.to_dict()), prepared, what)
        _check_not_past_end(position, prepared, what)
        state = prepared.layout.put_state(fresh_copy(saved))  # the earlier Run stays usable
        return state, position, (source.history, source.log)
    directory = config.checkpoint if source is True else source
    if directory is None:
        raise ConfigError("--resume without a directory needs --checkpoint DIR (in a notebook, --resume alone "
                          "continues the run bound to --out).")
    if not isinstance(directory, (str, os.PathLike)):
        raise ConfigError(f"--resume takes a checkpoint directory or a Run, got {type(directory).__name__}.")
    if not os.path.isdir(directory):
        raise ConfigError(f"Cannot resume: there is no checkpoint directory {str(directory)!r}.")
    from jupyter_llm.train.checkpoint import Checkpointer

    like = jax.tree.map(lambda s, sharding: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=sharding), like,
                        prepared.layout.state_shardings(like))
    what = f"the checkpoint in {directory}"

    def check_settings(meta):
        _check_settings(meta.get("config", {}), config, what)

    with Checkpointer(directory, keep=config.keep) as checkpointer:  # settings first: --accumulate shapes the state
        state, meta, _ = checkpointer.restore(like, check_meta=check_settings, check_restored=_check_restored)
    position = _check_dispatches(Position.from_dict(meta["position"]), prepared, what)
    _check_not_past_end(position, prepared, what)
    return state, position, (meta.get("history", {}), meta.get("log", []))


def _check_restored(state, meta: dict) -> None:
    """Everything a resume trusts in a checkpoint's meta has the type it needs and agrees with the arrays; otherwise
    the step is damaged (skipped with a warning, like a truncated file)."""
    from jupyter_llm.train.checkpoint import DamagedCheckpoint

    why = meta_problem(meta, state.step)
    if why:
        raise DamagedCheckpoint(why)


def meta_problem(meta: dict, saved_step) -> str | None:
    """What is wrong with a checkpoint step's meta, as a resume or a load trusts it (None if nothing): its position,
    the step its arrays were saved at (`saved_step`; None where they do not say), its history."""
    why = _position_problem(meta.get("position"))
    if why is not None:
        return why
    position = meta["position"]
    if saved_step is not None and int(saved_step) != position["step"]:
        return f"its position says step {position['step']} but its arrays were saved at step {int(saved_step)}"
    return _history_problem(meta.get("history"), meta.get("log"), position)


def _whole(value, least: int = 0) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= least


def _number(value) -> bool:
    return value is None or (isinstance(value, (int, float)) and not isinstance(value, bool))


def _position_problem(position) -> str | None:
    if not isinstance(position, dict):
        return "its position is missing"
    for key in ("epoch", "dispatch", "step"):
        if not _whole(position.get(key)):
            return f"its position's {key} is {position.get(key)!r}, not a whole number >= 0"
    if not (position.get("steps_per_dispatch") is None or _whole(position["steps_per_dispatch"], 1)):
        return f"its position's steps_per_dispatch is {position['steps_per_dispatch']!r}"
    scale = position.get("lr_scale", 1.0)
    if scale is None or not _number(scale) or not 0 < scale < float("inf"):  # run.set(lr=...) may raise it
        return f"its position's lr_scale is {scale!r}, not a positive number"
    numbers = position.get("numbers") or {}
    if not (isinstance(numbers, dict) and all(k in ("clip", "weight_decay") and _number(v) and v >= 0
                                              for k, v in numbers.items())):
        return f"its position's numbers {numbers!r} are not clip / weight_decay values >= 0"
    sums = position.get("epoch_sums") or {}
    if not (isinstance(sums, dict) and all(isinstance(k, str) and _number(v) for k, v in sums.items())):
        return "its position's epoch sums are not numbers"
    if not (position.get("monitor") is None or isinstance(position["monitor"], dict)):
        return "its position's monitor state is not a JSON object"
    return None


def _history_problem(history, log, position: dict) -> str | None:
    """The history holds one row per finished epoch, each at a step the arrays have passed."""
    history, log = history or {}, log or []
    if not (isinstance(history, dict) and isinstance(log, list) and all(isinstance(row, dict) for row in log)):
        return "its history is not a table of epochs"
    if len(log) != position["epoch"]:
        return f"its history has {len(log)} epochs but its position is in epoch {position['epoch'] + 1}"
    for name, values in history.items():
        if not (isinstance(values, list) and len(values) <= len(log) and all(_number(v) for v in values)):
            return f"its history's {name!r} does not match its {len(log)} epochs"
    steps = [row.get("step") for row in log]
    if not all(_whole(s) for s in steps) or steps != sorted(steps) or (steps and steps[-1] > position["step"]):
        return "its history's steps do not lead up to its position"
    return None


def _check_not_past_end(position: Position, prepared, what: str) -> None:
    """A fit cannot run backwards: resuming past this fit's last step would train nothing and say "completed"."""
    if position.step > prepared.steps_total:
        per_epoch = prepared.source.steps_per_epoch
        done = (f"{position.step} steps" if prepared.config.steps else
                f"{position.step} steps ({position.step / per_epoch:g} epochs)")
        more = ("--steps N with N above " + str(position.step) if prepared.config.steps else
                f"--epochs N with N above {position.step / per_epoch:g}")
        raise ConfigError(f"Cannot resume from {what}: it has already trained {done}, more than the "
                          f"{prepared.steps_total} this fit asks for in all. To train it further, pass {more}.")


def _check_dispatches(position: Position, prepared, what: str) -> Position:
    """Mid-epoch, the position counts dispatches: continuing with dispatches of another size would retrain or skip
    steps."""
    old, new = position.steps_per_dispatch, prepared.steps_per_dispatch
    if position.dispatch and old is not None and old != new:
        raise ConfigError(f"Cannot resume from {what}: it stopped mid-epoch with {old} steps per dispatch and this "
                          f"fit would use {new}. Add --steps-per-dispatch {old} to continue it exactly.")
    return position


def _check_same_structure(like, state, what: str) -> None:
    a, b = jax.tree.structure(like), jax.tree.structure(state)
    shapes_a = [tuple(x.shape) for x in jax.tree.leaves(like)]
    shapes_b = [tuple(x.shape) for x in jax.tree.leaves(state)]
    if a != b or shapes_a != shapes_b:
        raise ConfigError(f"Cannot resume from {what}: its model or optimizer differs from this fit's (different "
                          "parameters or optimizer state). Resume with the same model and optimizer.")


def _check_settings(saved: dict, config, what: str) -> None:
    for name in _RESUME_MUST_MATCH:
        old, new = saved.get(name), getattr(config, name)
        if name in saved and old != new:
            flag = "--" + name.replace("_", "-")
            raise ConfigError(f"Cannot resume from {what}: it was trained with {flag} {old}, this fit asks for "
                              f"{new}. Use {flag} {old} to continue it.")
    old, new = saved.get("metrics"), config.to_dict()["metrics"]
    if "metrics" in saved and old != new:  # the epoch's partial sums and the history hold the earlier ones
        said = {None: "the loss's own metrics", "none": "no metrics"}
        raise ConfigError(f"Cannot resume from {what}: it reported --metrics {said.get(old, old)}, this fit asks for "
                          f"{said.get(new, new)}; its history and partial sums hold those. Give --metrics as it was "
                          "to continue it.")
