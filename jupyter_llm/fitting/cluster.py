"""`%%train --cluster N`: the fit on N ipyparallel engines joined by JAX's distributed runtime, seen from the notebook.

The engines are started once per session (or reached through a named ipyparallel profile, which is how engines on
other machines — SSH, MPI, SLURM launchers are ipyparallel's — take part) and join `jax.distributed` once; each
fit then runs `jl.fit` on every engine at the same time, so the mesh spans all their devices. Process 0 publishes
its progress events as they happen (ipyparallel's data publication); the notebook feeds them to its own display and
history, so the live display, the report and `run.history` look as they do for a local fit. When the fit ends, the
weights come back from process 0 into the user's model, and the `Run` is made here, with the model's programs
compiled for this kernel's device (evaluate and predict run locally).
"""

from __future__ import annotations

import atexit
import dataclasses
import os
import signal
import socket
import time
from typing import Iterable

from jupyter_llm import errors
from jupyter_llm.config import FitConfig
from jupyter_llm.errors import ConfigError
from jupyter_llm.fitting.prepare import PreparedFit
from jupyter_llm.fitting.wiring import dataset_for, display_sinks, logdir_sinks
from jupyter_llm.sinks.history import HistorySink

_SESSION: dict = {}  # the session's engines: {"key": (n, profile), "cluster": ..., "client": ..., "view": ...}


def _engines(n: int, profile: str | None):
    """A view on N engines that have joined jax.distributed (started here, or found under `profile`)."""
    try:
        import ipyparallel as ipp
    except ImportError:
        raise ConfigError("--cluster runs the fit on ipyparallel engines: install it with "
                          "pip install 'jupyter_llm[cluster]' (or pip install ipyparallel).") from None
    if _SESSION.get("key") == (n, profile):
        return _SESSION["view"]
    shutdown_engines()
    if profile is None:
        cluster = ipp.Cluster(n=n)
        client = cluster.start_and_connect_sync()
    else:
        cluster, client = None, ipp.Client(profile=profile)
    client.wait_for_engines(n, timeout=300)
    ids = client.ids[:n]
    view = client[ids]
    view.block = True
    view.use_cloudpickle()  # models and data defined in the notebook travel by value
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    host = "127.0.0.1" if profile is None else socket.gethostbyname(socket.gethostname())
    for rank, engine in enumerate(ids):
        client[engine].push({"_jl_rank": rank})
    view.apply_sync(_join, ipp.Reference("_jl_rank"), n, f"{host}:{port}")
    _SESSION.update(key=(n, profile), cluster=cluster, client=client, view=view)
    atexit.register(shutdown_engines)  # engines this kernel started end with it
    return view


def _join(rank: int, n: int, coordinator: str) -> None:  # runs on each engine
    import jupyter_llm as jl

    jl.distributed.init(coordinator, n, rank)


def shutdown_engines() -> None:
    """Leave the distributed job (a barrier: every engine at once) and stop engines this session started."""
    if not _SESSION:
        return
    view, cluster = _SESSION.get("view"), _SESSION.get("cluster")
    try:
        view.apply_sync(_leave)
    except Exception:  # noqa: BLE001 - engines already gone
        pass
    if cluster is not None:
        cluster.stop_cluster_sync()
    _SESSION.clear()


def _leave() -> None:  # runs on each engine
    import jax

    jax.distributed.shutdown()


class _Publisher:
    """On process 0: each event, published under a growing key (ipyparallel merges published dicts)."""

    def __init__(self):
        self.count = 0

    def on(self, event) -> None:
        from ipyparallel.datapub import publish_data

        publish_data({f"{self.count:09d}": event})
        self.count += 1


def _engine_fit(rank: int, model, data, options: dict):  # runs on each engine
    """jl.fit here; process 0 publishes its events and returns the trained weights as NumPy arrays."""
    import jax
    from flax import nnx
    from jax.experimental import multihost_utils

    import jupyter_llm as jl

    publisher = _Publisher()
    try:
        jl.fit(model, data, sinks=[publisher] if rank == 0 else [], **{**options, "display": "none"})
    except jl.errors.JupyterLLMError as exc:
        return {"error": (type(exc).__name__, str(exc)), "events": publisher.count}

    def host(a):  # every process takes part in gathering a leaf split across processes
        return jax.device_get(a) if a.is_fully_addressable or a.is_fully_replicated else \
            multihost_utils.process_allgather(a, tiled=True)

    weights = jax.tree.map(host, nnx.state(model))
    return {"weights": weights, "events": publisher.count} if rank == 0 else {}


def _outcome(pending) -> dict:
    """Process 0's answer: its weights and event count, or the library error it met."""
    import ipyparallel as ipp

    try:
        return pending.get()[0]
    except ipp.error.RemoteError as exc:
        return {"error": ("JupyterLLMError", f"The fit failed on an engine: {exc.ename}: {exc.evalue}")}


def fit_on_cluster(model, data, *, engines: int, profile: str | None = None, sinks=(), **options):
    """Train `model` on `data` on `engines` ipyparallel engines; returns a local `Run` whose model holds the result."""
    import ipyparallel as ipp
    from flax import nnx

    from jupyter_llm.config import make_config

    if not isinstance(engines, int) or isinstance(engines, bool) or engines < 1:
        raise ConfigError(f"--cluster takes a number of engines of at least 1, got {engines!r}.")
    config = make_config(**options)  # a bad option is refused here, before any engine starts
    if not isinstance(config.resume, (str, os.PathLike, bool, type(None))):
        raise ConfigError("--resume with --cluster continues from a checkpoint directory (--checkpoint DIR): the "
                          "engines hold the fit's state, not this kernel.")
    view = _engines(engines, profile)
    pending = view.apply_async(_engine_fit, ipp.Reference("_jl_rank"), model, data, options)

    outcome = {}

    def published():
        return pending.data[0] if pending.data else {}

    def events():
        """Process 0's events as they arrive; then, the fit over, the ones still on their way (published data and
        the result travel on different channels, so the result can come first)."""
        seen = 0
        try:
            while not pending.ready():
                new = sorted(published())[seen:]
                yield from (published()[key] for key in new)
                seen += len(new)
                pending.wait(0.1)
        except KeyboardInterrupt:  # the engines stop at their next step boundary and report as interrupted
            cluster = _SESSION.get("cluster")
            if cluster is not None:
                cluster.signal_engines_sync(signal.SIGINT)
            pending.wait()
        outcome.update(_outcome(pending))
        deadline = time.monotonic() + 30
        while len(published()) < outcome.get("events", 0) and time.monotonic() < deadline:
            view.client.spin()
            time.sleep(0.02)
        yield from (published()[key] for key in sorted(published())[seen:])

    def result():
        if "error" in outcome:
            name, message = outcome["error"]
            raise getattr(errors, name, errors.JupyterLLMError)(message)
        nnx.update(model, outcome["weights"])
        nnx.Module.eval(model)

    return fit_from_events(model, data, config, events(), result, sinks=sinks)


def fit_from_events(model, data, config: FitConfig, events: Iterable, finish, *, sinks: Iterable = ()):
    """A fit that ran elsewhere (a cluster's engines), seen here: its events go to this kernel's display and history
    as they arrive, `finish()` brings the trained weights into `model`, and the `Run` is made here, its programs
    compiled for this kernel's device so that evaluate and predict run locally."""
    dataset = dataset_for(data, config)
    history = HistorySink()
    all_sinks = [history, *display_sinks(config.display), *logdir_sinks(config), *sinks]
    for event in events:
        for sink in all_sinks:
            sink.on(event)
    finish()
    local = dataclasses.replace(config, mesh=None, display="none")  # this kernel's devices, for evaluate/predict
    prepared = PreparedFit(model, dataset, local)
    prepared.compile()
    prepared.source.release()  # the Run places a split again when asked to evaluate it
    from jupyter_llm.fitting.run import Run
    from jupyter_llm.fitting.runlog import record

    run = Run(model=model, config=config, dataset=prepared.dataset, source=prepared.source, history_sink=history,
              chunks=prepared.program.chunks, loss_name=prepared.loss_name,
              output_kind=prepared.output_kind, state=None, position=None)
    record(run)
    return run
