"""`fit(model, data, **options) -> Run`: the whole training path, with no IPython in sight.

It checks everything a user can get wrong before any work starts (`PreparedFit`), compiles the steps ahead of time,
drives the event loop, feeds the sinks, and writes the trained weights back into the user's model whatever the
ending — completed, early-stopped, interrupted, or stopped on a non-finite loss.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Iterable

import jax
from flax import nnx

from jupyter_llm import events as ev
from jupyter_llm.config import FitConfig, make_config
from jupyter_llm.errors import ConfigError, ModelError
from jupyter_llm.fitting.control import Live, Replay, refuse_if_busy, steering_hook
from jupyter_llm.fitting.prepare import PreparedFit
from jupyter_llm.fitting.resume import Saver, release_earlier_run, resume_point
from jupyter_llm.fitting.wiring import dataset_for, display_sinks, logdir_sinks
from jupyter_llm.options import for_caller, in_callers_idiom
from jupyter_llm.sinks.history import HistorySink
from jupyter_llm.train import compile_cache
from jupyter_llm.train import loop as loop_mod
from jupyter_llm.train.interrupt import stop_on_interrupt


@in_callers_idiom
def fit(model: nnx.Module, data, *, sinks: Iterable = (), config: FitConfig | None = None, background: bool = False,
        after=None, cluster: int | None = None, cluster_profile: str | None = None, **options):
    """Train `model` on `data` and return a `Run`.

    >>> model = jl.models.MLP(in_features=64, hidden=[128], num_classes=10, rngs=nnx.Rngs(0))  # doctest: +SKIP
    >>> run = jl.fit(model, "digits", epochs=20, val_split=0.2)                              # doctest: +SKIP
    >>> run.history["val_accuracy"][-1], run.test_metrics["accuracy"]                         # doctest: +SKIP

    Options are the fields of `FitConfig` (the same as the `%%train` options); `resume` also takes a `Run`.
    `sinks` receive the progress events besides the display chosen by `display`.
    `background=True` returns at once a handle on a fit running on a worker thread (fitting/background.py);
    `after=handle` queues the fit behind that background fit: it returns a handle at once and starts when that fit
    ends, however it ends (so it implies `background=True`).
    `cluster=N` runs the fit on N ipyparallel engines joined by JAX's distributed runtime (`cluster_profile`:
    engines of a named profile).
    """
    if cluster is not None:
        from jupyter_llm.fitting.cluster import fit_on_cluster

        if background or after is not None:
            given = "--after" if after is not None else "--background"
            raise ConfigError(f"{given} and --cluster do not go together yet: a cluster fit streams into the "
                              "cell that started it. Drop one of them.")
        if config is not None:
            options = {**config_options(config), **options}
        return fit_on_cluster(model, data, engines=cluster, profile=cluster_profile, sinks=sinks, **options)
    config = config or make_config(**options)
    if after is not None:
        from jupyter_llm.fitting.background import check_after

        check_after(after)
    refuse_if_busy(after)
    if background or after is not None:
        return _in_background(model, data, sinks, config, after=after)
    return _fit(model, data, sinks=sinks, config=config)


def _in_background(model, data, sinks, config, name: str = "run", after=None):
    """The display's sinks are made here, on the caller's thread (widgets belong to the cell that starts the fit);
    the fit itself runs on the handle's worker thread."""
    from jupyter_llm.fitting.background import BackgroundRun

    displays = display_sinks(config.display)

    def work(steer, extra):
        return _fit(model, data, sinks=[*extra, *sinks], config=config, steer=steer, displays=[])

    return BackgroundRun(config, work, displays, name=name, after=after).start()


def _fit(model, data, *, sinks, config, steer=None, displays=None):
    """The fit itself; `steer` (fitting/control.py) pauses it and changes its numbers, `displays` replace the
    display sinks `config.display` would choose."""
    compile_cache.enable()
    if not isinstance(model, nnx.Module):
        raise ModelError(f"The model must be a flax.nnx.Module, got {type(model).__name__}. Build it with one of "
                         "jupyter_llm.models (e.g. MLP) or subclass nnx.Module.")
    prepared = PreparedFit(model, dataset_for(data, config), config)
    start = resume_point(config, prepared)  # None, or (state, position, history) — checked before any work
    history = HistorySink(*(start[2] if start else ()))
    if config.logdir is not None:  # refuse a bad --logdir before the checkpoint folder is made
        from jupyter_llm.sinks.logdir import check_logdir

        check_logdir(config.logdir)
    replay = Replay(config.changes, first_step=start[1].step if start else 0) if config.changes else None
    if replay is not None:
        replay.check(config, prepared.is_step_boundary, prepared.steps_per_dispatch)
    saver = Saver.for_fit(config, prepared, history)
    config = prepared.config = release_earlier_run(config)  # the new Run must not keep the old one alive
    if steer is not None:
        steer.started(Live(history, functools.partial(_weights_view, prepared, history),
                           prepared.lr_at if prepared.optimizer.scheduled else None))
    try:
        shown = display_sinks(config.display) if displays is None else displays
        all_sinks = [history, *shown, *logdir_sinks(config), *sinks]
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
                                 steer=steering_hook(steer, replay))
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
        prepared.source.release()  # no device copy of the data outlives the fit: the Run places a split if asked
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
                       memory=history.compile.memory if history.compile else None,
                       weights_epoch=_best_epoch(prepared, loop, config)))
        if error is not None:
            raise error
    from jupyter_llm.fitting.run import Run
    from jupyter_llm.fitting.runlog import record

    run = Run(model=model, config=config, dataset=prepared.dataset, source=prepared.source, history_sink=history,
              chunks=prepared.program.chunks, loss_name=prepared.loss_name,
              output_kind=prepared.output_kind, state=loop.state, position=loop.position)
    record(run)
    return run


def _weights_view(prepared, history, step: int, weights):
    """A Run on a copy of a running fit's weights (`run.snapshot()`): evaluate, predict or generate with them while
    the fit goes on."""
    from jupyter_llm.fitting.run import Run

    return Run(model=nnx.merge(prepared.graphdef_eval, *weights), config=prepared.config, dataset=prepared.dataset,
               source=prepared.source, history_sink=history, chunks=prepared.program.chunks,
               loss_name=prepared.loss_name, output_kind=prepared.output_kind, state=None, at_step=step)


def config_options(config: FitConfig) -> dict:
    """A config's fields as the keywords that make it."""
    return {f.name: getattr(config, f.name) for f in dataclasses.fields(config)}


def _best_epoch(prepared, loop, config) -> int | None:
    """The epoch whose weights --keep-best left in the model (None when they are the last ones)."""
    if loop is None or not (config.keep_best and loop.best is not None and prepared.monitor is not None):
        return None
    return prepared.monitor.best_epoch


def _write_back(model, loop, config) -> None:
    """The user's model gets the final (or, with keep_best, the best) weights — never a deleted buffer."""
    if config.keep_best and loop.best is not None:
        nnx.update(model, *loop.best)
    elif _alive(loop.state):
        nnx.update(model, loop.state.params, loop.state.rest)


def _alive(state) -> bool:
    return not any(getattr(a, "is_deleted", lambda: False)() for a in jax.tree.leaves(state))
