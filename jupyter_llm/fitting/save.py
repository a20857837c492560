"""`run.save(folder)`: a Run written as a checkpoint, in the format a fit's `--checkpoint` writes — and that JSON
itself, `saved_meta`, which the fit's Saver writes too.

A step folder of Orbax arrays (the whole train state: weights, optimizer moments, step, RNG streams) and JSON
(position, history, configuration, tokenizer, and the model's architecture, `models/architecture.py`): so a saved
run resumes like a checkpoint (`--resume folder`) and a checkpoint loads like a saved run (`jl.load`,
`fitting/load.py`). Never pickle.
"""

from __future__ import annotations

import json
import os
import warnings
from importlib import metadata

import jax

from jupyter_llm.errors import ConfigError
from jupyter_llm.options import in_callers_idiom
from jupyter_llm.train import checkpoint as ckpt
from jupyter_llm.train.loop import Position
from jupyter_llm.train.state import split_model, trainable_for


def _versions() -> dict:
    out = {}
    for pkg in ("jax", "flax", "optax", "jupyter_llm"):
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            out[pkg] = None
    return out


def saved_meta(position: Position, history: dict, log: list, config, model, loss_name: str, tokenizer, data: dict,
               **more) -> dict:
    """The JSON a checkpoint (and `run.save`) keeps beside the arrays: where the fit stood, its history, its
    configuration and tokenizer — enough to resume it — and the model's architecture, its loss and where its data
    came from (`data_origin`) — enough for `jl.load` to make the Run again."""
    from jupyter_llm.models.architecture import describe

    meta = {
        "position": position.to_dict(),
        "history": history,
        "log": log,
        "config": config.to_dict(),
        "tokenizer": tokenizer.to_dict() if tokenizer is not None else None,
        "versions": _versions(),
        "model": describe(model),
        "loss": loss_name,
        "data": data,
        **more,
    }
    json.dumps(meta)  # fail here, in the caller, if anything is not plain JSON
    return meta


def data_tokenizer(dataset):
    """The tokenizer of a text corpus or of labelled texts (None for arrays)."""
    return getattr(dataset, "tokenizer", None) or getattr(dataset, "meta", {}).get("tokenizer")


def data_origin(dataset) -> dict:
    """What a saved run records of its data: its name, the built-in name it was loaded as, or the file it was read
    from (the data itself is not saved)."""
    meta = getattr(dataset, "meta", {})
    return {"name": getattr(dataset, "name", None), "loaded_as": meta.get("loaded_as"), "path": meta.get("path"),
            "max_len": meta.get("max_len")}


# -- run.save -----------------------------------------------------------------------------------------------------
@in_callers_idiom
def save_run(run, directory) -> str:
    """Write `run` (a fitted or loaded Run) into `directory`; returns its path."""
    if run.state is None or run.position is None:
        raise ConfigError("This run has nothing to save: its fit failed before its first step.")
    params, rest = weights_of(run.model, run.config)
    if isinstance(run.state, dict):  # a loaded run: its saved arrays, with the model's weights as they are now
        arrays = dict(run.state)
        arrays.update(_by_name({"params": params, "rest": rest}))
        tree = ckpt.nested(arrays)
    else:
        if any(getattr(a, "is_deleted", lambda: False)() for a in jax.tree.leaves(run.state)):
            raise ConfigError("This run's train state is gone (its fit ended in an error while the state was on the "
                              "device); its model can still be saved with --checkpoint in a new fit.")
        tree = run.state._replace(params=params, rest=rest)  # the model's weights: --keep-best's, if it kept them
    origin = run._source.origin if hasattr(run._source, "origin") else data_origin(run.dataset)
    meta = saved_meta(run.position, run.history, run.log, run.config, run.model, run.loss_name, run.tokenizer,
                      origin, reason=run.reason, test_metrics=run.test_metrics, saved_by="run.save")
    step = run.position.step
    with ckpt.Checkpointer(directory, keep=None, asynchronous=False) as checkpointer:
        path = str(checkpointer.directory)
        newest = checkpointer.latest_step()
        own = {_same_path(p) for p in (run.config.checkpoint, run.loaded_from) if p}
        if newest is not None and (_same_path(path) not in own or newest > step):
            raise ConfigError(f"{path} already holds a saved run (step {newest}); run.save writes into a new or empty "
                              "folder (or the run's own --checkpoint folder). Choose another folder.")
        with warnings.catch_warnings():  # this run's own last checkpoint, replaced by the same step
            warnings.filterwarnings("ignore", category=ckpt.CheckpointWarning)
            checkpointer.save(step, tree, meta)
    return path


def _same_path(path) -> str:
    return os.path.realpath(os.path.expanduser(os.fspath(path)))


def _by_name(tree) -> dict:
    """A tree's leaves by the names `Checkpointer.save` gives them."""
    path_leaves = jax.tree_util.tree_flatten_with_path(tree)[0]
    return {"/".join(name): leaf for name, (_, leaf) in zip(ckpt._names(path_leaves), path_leaves)}


def weights_of(model, config):
    """(params, rest) of `model` as a fit of `config` splits them (the adapters trained with --lora)."""
    _, params, rest = split_model(model, train=True, trainable=trainable_for(config))
    return params, rest
