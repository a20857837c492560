"""`fit(model, data, **options) -> Run`: the whole training path, with no IPython in sight.

It checks everything a user can get wrong before any work starts (`PreparedFit`), compiles the steps ahead of time,
drives the event loop, feeds the sinks, and writes the trained weights back into the user's model whatever the
ending — completed, early-stopped, interrupted, or stopped on a non-finite loss.
"""

from __future__ import annotations

from typing import Iterable

import jax
from flax import nnx

from jupyter_llm import events as ev
from jupyter_llm.config import FitConfig, make_config
from jupyter_llm.data.coerce import as_dataset
from jupyter_llm.data.text import TextCorpus
from jupyter_llm.distributed import is_main
from jupyter_llm.errors import ConfigError, ModelError
from jupyter_llm.fitting.control import refuse_if_busy
from jupyter_llm.fitting.prepare import PreparedFit
from jupyter_llm.fitting.resume import Saver, release_earlier_run, resume_point
from jupyter_llm.options import for_caller, in_callers_idiom
from jupyter_llm.sinks.history import HistorySink
from jupyter_llm.train import compile_cache
from jupyter_llm.train import loop as loop_mod
from jupyter_llm.train.interrupt import stop_on_interrupt


@in_callers_idiom
def fit(model: nnx.Module, data, *, sinks: Iterable = (), config: FitConfig | None = None, background: bool = False,
        **options):
    """Train `model` on `data` and return a `Run`.

    >>> model = jl.models.MLP(in_features=64, hidden=[128], num_classes=10, rngs=nnx.Rngs(0))  # doctest: +SKIP
    >>> run = jl.fit(model, "digits", epochs=20, val_split=0.2)                              # doctest: +SKIP
    >>> run.history["val_accuracy"][-1], run.test_metrics["accuracy"]                         # doctest: +SKIP

    Options are the fields of `FitConfig` (the same as the `%%train` options); `resume` also takes a `Run`.
    `sinks` receive the progress events besides the display chosen by `display`.
    `background=True` returns at once a handle on a fit running on a worker thread (fitting/background.py).
    """
    config = config or make_config(**options)
    refuse_if_busy()
    if background:
        return _in_background(model, data, sinks, config)
    return _fit(model, data, sinks=sinks, config=config)


def _in_background(model, data, sinks, config, name: str = "run"):
    """The display's sinks are made here, on the caller's thread (widgets belong to the cell that starts the fit);
    the fit itself runs on the handle's worker thread."""
    from jupyter_llm.fitting.background import BackgroundRun

    displays = _display_sinks(config.display)

    def work(steer, extra):
        return _fit(model, data, sinks=[*extra, *sinks], config=config, steer=steer, displays=[])

    return BackgroundRun(config, work, displays, name=name).start()


def _fit(model, data, *, sinks, config, steer=None, displays=None):
    """The fit itself; `steer` (fitting/control.py) pauses it and changes its numbers, `displays` replace the
    display sinks `config.display` would choose."""
    compile_cache.enable()
    if not isinstance(model, nnx.Module):
        raise ModelError(f"The model must be a flax.nnx.Module, got {type(model).__name__}. Build it with one of "
                         "jupyter_llm.models (e.g. MLP) or subclass nnx.Module.")
    if isinstance(data, str):
        from jupyter_llm.datasets import load

        data = load(data)
    if isinstance(data, TextCorpus) and config.val_split:
        raise ConfigError("--val-split carves a validation split from array data; a text corpus has its validation "
                          "part already: set it with jl.datasets.text(..., val_fraction=0.1) and drop --val-split.")
    dataset = data if isinstance(data, TextCorpus) else as_dataset(data, val_split=config.val_split, seed=config.seed)
    prepared = PreparedFit(model, dataset, config)
    if prepared.layout.processes > 1 and (config.checkpoint is not None or config.resume not in (None, False) and
                                          not _is_run(config.resume)):
        raise ConfigError("--checkpoint and --resume DIR are not available yet with several processes: every "
                          "process would manage the same folder. Train in one process to keep checkpoints, or "
                          "resume from a Run.")
    start = resume_point(config, prepared)  # None, or (state, position, history) — checked before any work
    history = HistorySink(*(start[2] if start else ()))
    if config.logdir is not None:  # refuse a bad --logdir before the checkpoint folder is made
        from jupyter_llm.sinks.logdir import check_logdir

        check_logdir(config.logdir)
    saver = Saver.for_fit(config, prepared, history)
    config = prepared.config = release_earlier_run(config)  # the new Run must not keep the old one alive
    try:
        shown = _display_sinks(config.display) if displays is None else displays
        all_sinks = [history, *shown, *_logdir_sinks(config), *sinks]
    except BaseException:
        if saver is not None:
            saver.close()
        raise

    def emit(event):
        for sink in all_sinks:
            sink.on(event)

    loop, error = None, None
    reason, message, test_metrics = ev.FAILED, "", None
    with stop_on_interrupt() as interrupted:
        def stop():
            return interrupted() or (steer is not None and steer.should_stop())

        try:
            emit(prepared.fit_start())
            emit(ev.CompileStart())
            emit(prepared.compile())
            state, position = (start[0], start[1]) if start else (prepared.init_state(), None)
            loop = loop_mod.Loop(prepared.loop_plan(save=saver.save if saver else None), state, stop, position,
                                 steer=steer)
            outcome = loop_mod.run_to_end(loop.events(), emit)
            reason, message = outcome.reason, for_caller(outcome.message)
            if "test" in prepared.source.eval_plans and reason in (ev.COMPLETED, ev.EARLY_STOPPED):
                weights = loop.best if (config.keep_best and loop.best) else None
                test_metrics = prepared.evaluate(loop.state, "test", weights=weights)
                emit(ev.Eval(loop.step, loop.epoch, "test", test_metrics))
        except KeyboardInterrupt as exc:
            reason, message, error = ev.INTERRUPTED, "stopped by a second interrupt", exc
        except BaseException as exc:  # an error, or anything else that ends the fit (SystemExit...)
            message, error = f"{type(exc).__name__}: {exc}", exc
        # whatever happened above: the weights go back, the saver's threads end, FitEnd is sent exactly once
        if loop is not None:
            _write_back(model, loop, config)
        nnx.Module.eval(model)  # as run.predict uses it: dropout off, batch norm on its running averages
        if saver is not None:
            try:
                saver.close()  # waits for the last checkpoint: a failed save is this fit's failure
            except Exception as exc:
                if error is None:
                    reason, message, error = ev.FAILED, f"{type(exc).__name__}: {exc}", exc
        emit(ev.FitEnd(reason=reason, step=loop.step if loop else 0, epoch=loop.epoch if loop else 0,
                       elapsed=loop.elapsed if loop else 0.0,
                       compile_seconds=history.compile.seconds if history.compile else 0.0,
                       history=history.history, test_metrics=test_metrics, message=message,
                       memory=history.compile.memory if history.compile else None))
        if error is not None:
            raise error
    from jupyter_llm.fitting.run import Run
    from jupyter_llm.fitting.runlog import record

    run = Run(model=model, config=config, dataset=prepared.dataset, source=prepared.source, history_sink=history,
              chunks=prepared.program.chunks, loss_name=prepared.loss_name, state=loop.state, position=loop.position)
    record(run)
    return run


def _is_run(obj) -> bool:
    from jupyter_llm.fitting.run import Run

    return isinstance(obj, Run)


def _write_back(model, loop, config) -> None:
    """The user's model gets the final (or, with keep_best, the best) weights — never a deleted buffer."""
    if config.keep_best and loop.best is not None:
        nnx.update(model, *loop.best)
    elif _alive(loop.state):
        nnx.update(model, loop.state.params, loop.state.rest)


def _alive(state) -> bool:
    return not any(getattr(a, "is_deleted", lambda: False)() for a in jax.tree.leaves(state))


def _display_sinks(mode: str) -> list:
    if mode == "none" or not is_main():  # with several processes, process 0 speaks for all
        return []
    try:
        from jupyter_llm.sinks.select import make_display_sinks
    except ImportError:  # display package not available: plain text
        from jupyter_llm.sinks.text import TextSink

        return [TextSink()]
    return make_display_sinks(mode)


def _logdir_sinks(config) -> list:
    if config.logdir is None or not is_main():
        return []
    from jupyter_llm.sinks.logdir import LogdirSink

    return [LogdirSink(config.logdir)]
