"""`jl.load(folder)`: a Run made again from any checkpoint this library wrote (`run.save`, `fitting/save.py`, or a
fit's `--checkpoint DIR`).

One format for both: a step folder of Orbax arrays (the whole train state: weights, optimizer moments, step, RNG
streams) and JSON (position, history, configuration, tokenizer, and the model's architecture — `models/
architecture.py`). So a saved run resumes like a checkpoint (`--resume folder`), and a checkpoint loads like a
saved run. Never pickle: a built-in model is built again from its recorded architecture; a model of the user's own
class from a template instance (`jl.load(folder, model=Net(...))`). The data is not saved: `jl.load(folder,
data=...)` gives the Run its splits to evaluate, or `run.evaluate((x, y))` takes arrays.
"""

from __future__ import annotations

import dataclasses
import os

import jax
import jax.numpy as jnp
from flax import nnx

from jupyter_llm.config import LOSSES, OPTIMIZERS, FitConfig, config_fields
from jupyter_llm.errors import ConfigError, DataError, ModelError
from jupyter_llm.fitting.resume import meta_problem
from jupyter_llm.fitting.run import NoData, Run
from jupyter_llm.fitting.save import data_tokenizer, weights_of
from jupyter_llm.options import in_callers_idiom
from jupyter_llm.train import checkpoint as ckpt
from jupyter_llm.train.loop import Position
from jupyter_llm.train.state import split_model, trainable_for

LOADED = "checkpoint"  # the reason of a run loaded from a checkpoint a fit wrote on its way (not from run.save)


# -- loading -----------------------------------------------------------------------------------------------------
@in_callers_idiom
def load(directory, *, model: nnx.Module | None = None, data=None, step: int | None = None) -> Run:
    """The Run saved in `directory` by `run.save` or a fit's `--checkpoint DIR` (its newest intact step, or `step`):
    its model with the saved weights, its history, configuration and tokenizer, ready for `evaluate`, `predict`,
    `generate`, `save_pretrained`, `save`, and for `fit(..., resume=run)`.

    A built-in model (MLP, CNN, GPT, TextClassifier, with LoRA adapters) is built from the architecture the folder
    records; a model of your own class is given as `model=`, an instance with the saved shapes (its weights are
    replaced). `data` (what `fit` takes: a built-in name, arrays, a Dataset; or a text file, tokenized with the
    run's tokenizer) gives `run.evaluate("test")` its splits; without it, `run.evaluate((x, y))` takes arrays."""
    arrays, meta, step = ckpt.read(directory, step, check=_check_saved)
    where = os.path.abspath(os.path.expanduser(os.fspath(directory)))
    config = _config_from(meta.get("config") or {}, where)
    template, model = model, _model_for(meta.get("model"), model, config, where)
    params, rest = weights_of(model, config)
    try:
        filled = ckpt.fill({"params": params, "rest": rest}, arrays, f"The run in {where}")
    except ckpt.CheckpointError as exc:
        hint = ("" if template is None else " Pass a model built like the one that was saved (the same layers and "
                "sizes) as model=.")
        raise ckpt.CheckpointError(f"{exc}{hint}") from None
    nnx.update(model, filled["params"], filled["rest"])
    nnx.Module.eval(model)  # as a fit leaves it: dropout off, batch norm on its running averages
    from jupyter_llm.data.tokenizers import tokenizer_from_dict

    tokenizer = tokenizer_from_dict(meta["tokenizer"]) if meta.get("tokenizer") else None
    loss_name = meta.get("loss")
    if data is None:
        dataset, source = None, NoData(_layout(config), where, meta.get("data") or {})
        chunks = _chunks_without_data(model, config, loss_name, source.layout, where)
    else:
        dataset, source, chunks, loss_name = _with_data(model, config, data, tokenizer, loss_name,
                                                        meta.get("data") or {}, where)
    from jupyter_llm import events as ev
    from jupyter_llm.sinks.history import HistorySink

    history = HistorySink(meta.get("history") or {}, meta.get("log") or [])
    position = Position.from_dict(meta["position"])
    history.on(ev.FitEnd(reason=meta.get("reason") or LOADED, step=position.step, epoch=position.epoch, elapsed=0.0,
                         compile_seconds=0.0, history=history.history, test_metrics=meta.get("test_metrics")))
    return Run(model=model, config=config, dataset=dataset, source=source, history_sink=history, chunks=chunks,
               loss_name=loss_name, state=arrays, position=position, loaded_from=where, tokenizer=tokenizer)


def trained_on(directory) -> str | None:
    """The data a saved run records it was trained on, as `load(data=...)` takes it: a built-in name, or the file it
    was read from while that file exists (None when it recorded neither)."""
    origin = (ckpt.newest_meta(directory) or {}).get("data") or {}
    if origin.get("loaded_as"):
        return origin["loaded_as"]
    path = origin.get("path")
    return path if path and os.path.isfile(path) else None


def _check_saved(arrays: dict, meta: dict) -> None:
    """What a load trusts in a step's meta agrees with its arrays (else the step is skipped as damaged)."""
    why = meta_problem(meta, arrays.get("step"))
    if why:
        raise ckpt.DamagedCheckpoint(why)


class Unsaved:
    """A config value that was an object (an optax optimizer, a loss function): only its name was saved."""

    def __init__(self, kind: str, name):
        self.kind, self.__name__ = kind, str(name)

    def __repr__(self):
        return f"<{self.kind} {self.__name__!r}, not saved>"


def _config_from(saved: dict, where: str) -> FitConfig:
    """The saved configuration as a FitConfig: objects that were not saved become `Unsaved` placeholders, and
    `resume` is kept only as a folder (a Run it continued is gone)."""
    known = {f.name for f in config_fields()}
    values = {k: v for k, v in saved.items() if k in known}
    if isinstance(values.get("optimizer"), str) and values["optimizer"] not in OPTIMIZERS:
        values["optimizer"] = Unsaved("optimizer", values["optimizer"])
    if isinstance(values.get("loss"), str) and values["loss"] not in LOSSES:
        values["loss"] = Unsaved("loss function", values["loss"])
    if not isinstance(values.get("resume"), str) or values.get("resume") == "EarlierRun":
        values.pop("resume", None)
    try:
        return FitConfig(**values)
    except ConfigError as exc:
        raise ConfigError(f"The configuration saved in {where} cannot be read: {exc}") from None


def _model_for(description, template, config, where: str) -> nnx.Module:
    from jupyter_llm.models import architecture
    from jupyter_llm.models.lora import add_adapters, has_adapters

    if template is not None:
        if not isinstance(template, nnx.Module):
            raise ModelError(f"model= must be a flax.nnx.Module built like the saved one (its weights are replaced), "
                             f"got {type(template).__name__}.")
        if description and description.get("adapters"):
            architecture.add_recorded_adapters(template, description["adapters"], seed=config.seed)
        elif config.lora and not has_adapters(template):  # a checkpoint of an older version records no adapters
            add_adapters(template, config.lora, config.lora_alpha or 2.0 * config.lora, config.lora_targets,
                         config.lora_dropout, seed=config.seed)
        return template
    if description and architecture.buildable(description):
        return architecture.build(description, seed=config.seed)
    if not description:
        raise ConfigError(f"The run in {where} does not record its model's architecture (a checkpoint of an earlier "
                          "version): pass the model, an instance built like the saved one, as "
                          "jl.load(folder, model=...).")
    name = str(description.get("class"))
    raise ConfigError(f"The run in {where} was trained on a model of your own, {name}, which cannot be built from "
                      "the folder (only its weights are saved, never code): build one with the same layers and sizes "
                      f"and pass it, jl.load(folder, model={name.rsplit('.', 1)[-1]}(...)); its weights are replaced "
                      "by the saved ones.")


def _layout(config):
    from jupyter_llm.train.layout import data_parallel

    return data_parallel(config.batch_size)


def _evaluation_config(config: FitConfig, loss_name) -> FitConfig:
    """The config the evaluation pieces are built with: the saved one on this machine's devices, its loss by name
    (an inferred one included), and an optimizer the program can be built with (evaluation never steps it)."""
    return dataclasses.replace(config, mesh=None, checkpoint=None, resume=None, logdir=None, profile=None,
                               display="none", optimizer=config.optimizer if isinstance(config.optimizer, str)
                               else "sgd", schedule=config.schedule if isinstance(config.optimizer, str) else
                               "constant", loss=loss_name if loss_name in LOSSES else None)


def _user_loss(config, loss_name) -> bool:
    return isinstance(config.loss, Unsaved) or (loss_name is not None and loss_name not in LOSSES)


def _chunks_without_data(model, config, loss_name, layout, where: str):
    """The compiled evaluation and prediction of a run loaded without data (built as a fit builds them)."""
    from jupyter_llm.train.chunk import make_chunks
    from jupyter_llm.train.losses import resolve_loss
    from jupyter_llm.train.optim import make_optimizer
    from jupyter_llm.train.step import Step

    trainable = trainable_for(config)
    graphdef_train, params, rest = split_model(model, train=True, trainable=trainable)
    graphdef_eval, _, _ = split_model(model, train=False, trainable=trainable)
    user_loss = _user_loss(config, loss_name) or loss_name is None
    name, loss_fn, metrics = resolve_loss("mse" if user_loss else loss_name, None, None, None)
    optimizer = make_optimizer(_evaluation_config(config, name), 1)
    step = Step(graphdef_train, graphdef_eval, optimizer, loss_fn, metrics, platform=layout.platform,
                compute_dtype=jnp.bfloat16 if config.precision == "bf16" else None, trainable=trainable)
    like = jax.eval_shape(lambda p, r: _state_like(p, r, optimizer), params, rest)
    chunks = make_chunks(step, layout, like, 1)
    if user_loss:
        def refuse(*_):
            raise ConfigError(f"The run in {where} was trained with a loss function of your own "
                              f"({getattr(config.loss, '__name__', loss_name)!r}), which is not saved: it cannot be "
                              "evaluated here. run.predict(x) gives the outputs to score yourself.")

        chunks = chunks._replace(evaluate=refuse)
    return chunks


def _state_like(params, rest, optimizer):
    from jupyter_llm.train.state import init_state

    return init_state(params, rest, optimizer, copy=False)


def _read_with(path: str, tokenizer, model, config, origin: dict, where: str):
    """A text file (a corpus) or a labelled-text file, tokenized with the run's own tokenizer."""
    from jupyter_llm.data.labelled_files import LABELLED_SUFFIXES

    if tokenizer is None:
        raise DataError(f"data={path!r} is a text file, but the run in {where} was not trained on text. Pass the "
                        "data it was trained on: a built-in name, arrays or a Dataset.")
    if path.lower().endswith(LABELLED_SUFFIXES):
        from jupyter_llm.data.classification import text_classification

        return text_classification(path, tokenizer=tokenizer, max_len=origin.get("max_len") or _block_size(model))
    from jupyter_llm.data.text import text

    return text(path, tokenizer=tokenizer, block_size=config.block_size or _block_size(model))


def _with_data(model, config, data, tokenizer, loss_name, origin: dict, where: str):
    """(dataset, source, chunks, loss name) of a run loaded with data: the data checked against the model as a fit
    checks it, its splits ready to evaluate (placed on the device only when evaluated)."""
    from jupyter_llm.fitting.prepare import PreparedFit
    from jupyter_llm.fitting.wiring import dataset_for
    from jupyter_llm.train.chunk import make_chunks

    if _user_loss(config, loss_name):
        raise ConfigError(f"The run in {where} was trained with a loss function of your own, which is not saved, so "
                          "it cannot evaluate data. Load it without data= for run.predict and run.generate.")
    if isinstance(data, (str, os.PathLike)) and os.path.isfile(os.path.expanduser(os.fspath(data))):
        data = _read_with(os.path.expanduser(os.fspath(data)), tokenizer, model, config, origin, where)
    eval_config = _evaluation_config(config, loss_name)
    dataset = dataset_for(data, eval_config)
    given = data_tokenizer(dataset)
    if tokenizer is not None and given is not None and given.to_dict() != tokenizer.to_dict():
        raise DataError(f"This data was tokenized with another vocabulary than the run in {where}: its token ids "
                        "would mean other tokens to the model. Pass a text file (tokenized with the run's own "
                        "tokenizer), or the data the run was trained on.")
    prepared = PreparedFit(model, dataset, eval_config)
    like = jax.eval_shape(lambda p, r: _state_like(p, r, prepared.optimizer), prepared.params, prepared.rest)
    chunks = make_chunks(prepared.step, prepared.layout, like, prepared.steps_per_dispatch,
                         gather=prepared.source.gather)
    prepared.source.release()  # placed again when a split is evaluated, as for a fitted run
    return prepared.dataset, prepared.source, chunks, prepared.loss_name


def _block_size(model) -> int:
    return int(getattr(model, "block_size", 64))

