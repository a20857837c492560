"""Child process of tests/test_faults.py: runs the fits a JSON job file lists, reporting what it does on stdout.

    python fit_child.py JOBS.json

Each job: {"name", "data": {n_train, n_val, features, classes, seed}, "model": {hidden, dropout, seed},
"options": <jl.fit keywords>, "instrument": bool, "state_out": npz path or null, "record": [steps] or absent,
"record_out": npz path}. Lines printed (each flushed at once):

    START <name> <t>              the fit's SIGINT handler is installed and its compilation starts (CompileStart)
    P <t> <phase> [detail]        entering a phase, t = time.monotonic() (one clock for every process on Linux):
                                  train (from CompileEnd on, and after each of the next three), wait (the host
                                  reads the metrics from the device), eval <split>, save <step> (a checkpoint save
                                  call; Orbax goes on writing in the background), step <n> (a Progress event),
                                  end (FitEnd), returned (fit returned to this script). The phases other than
                                  compile, train, step, end and returned are marked with "instrument": true only.
    R <json>                      the result of one job: reason, step, history, finite, late signals, ...
    E <json>                      a job raised: the error's class, module and message
    L <n>                         FAULT_CHILD_GATED=1: before each job after the first, the script waits for a line
                                  on stdin, then reports the signals that came after the previous fit (late)
    DONE [<n>]                    all jobs ran (and n signals came after the last fit)

A SIGINT outside a fit is only counted ("late"), so a signal that comes after the fit ended never kills this script
— unless FAULT_CHILD_DEFAULT_SIGINT=1: then Python's default handler stays (KeyboardInterrupt) and the script idles
20 s after its jobs, so a signal that comes after the fit still ends it (the "returned" line tells when it came).
`record` (optional) keeps the whole train state after each dispatch whose step is listed — one uninterrupted fit
gives the state at every chunk boundary, which checks that `steps=N` reference fits are a valid construction.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time
import traceback

LATE: list[float] = []


def say(*parts) -> None:
    sys.stdout.write(" ".join(str(p) for p in parts) + "\n")
    sys.stdout.flush()


def phase(name: str, detail="") -> None:
    say("P", repr(time.monotonic()), name, detail)


def on_late(signum, frame):
    LATE.append(time.monotonic())


def make_data(n_train, n_val, features, classes, seed):
    import numpy as np

    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n_train + n_val, features)).astype(np.float32)
    y = rng.integers(0, classes, n_train + n_val).astype(np.int32)
    data = {"train": (x[:n_train], y[:n_train])}
    if n_val:
        data["validation"] = (x[n_train:], y[n_train:])
    return data


def make_model(features, classes, hidden, dropout=0.0, seed=0):
    from flax import nnx

    import jupyter_llm as jl

    return jl.models.MLP(in_features=features, hidden=list(hidden), num_classes=classes, dropout=dropout,
                         rngs=nnx.Rngs(seed))


def leaves_of(tree) -> list:
    import jax
    import numpy as np

    out = []
    for leaf in jax.tree.leaves(tree):
        if hasattr(leaf, "dtype") and jax.numpy.issubdtype(leaf.dtype, jax.dtypes.prng_key):
            leaf = jax.random.key_data(leaf)
        out.append(np.asarray(leaf))
    return out


def dump(path, state, model) -> None:
    """The whole train state (s0, s1, ...) and the model's parameters (m0, m1, ...), bit for bit."""
    import numpy as np
    from flax import nnx

    arrays = {}
    if state is not None:
        arrays.update({f"s{i}": a for i, a in enumerate(leaves_of(state))})
    arrays.update({f"m{i}": a for i, a in enumerate(leaves_of(nnx.state(model, nnx.Param)))})
    np.savez(path, **arrays)


class PhaseSink:
    def __init__(self, name):
        self.name = name

    def on(self, event):
        from jupyter_llm import events as ev

        if isinstance(event, ev.CompileStart):
            say("START", self.name, repr(time.monotonic()))  # entering the compile phase
        elif isinstance(event, ev.CompileEnd):
            phase("train")
        elif isinstance(event, ev.Progress):
            phase("step", event.step)
        elif isinstance(event, ev.FitEnd):
            phase("end", event.reason)


def instrument() -> None:
    """Mark the phases the parent aims its signals at: evaluations, checkpoint saves, host waits on the device."""
    from jupyter_llm.fitting.prepare import PreparedFit
    from jupyter_llm.fitting.resume import Saver
    from jupyter_llm.train.loop import Loop

    def wrap(cls, name, label, detail):
        original = getattr(cls, name)

        def wrapper(self, *args, **kwargs):
            mark = detail(*args)
            if mark is not None:
                phase(label, mark)
            try:
                return original(self, *args, **kwargs)
            finally:
                if mark is not None:
                    phase("train")

        setattr(cls, name, wrapper)

    wrap(PreparedFit, "evaluate", "eval", lambda state, split, *rest, **kw: split)
    wrap(Saver, "save", "save", lambda state, position: position.step)
    wrap(Loop, "_read", "wait", lambda pending: len(pending) if pending else None)


class Recorder:
    """Copies the train state to the host after each dispatch whose step is wanted (before the next donation)."""

    def __init__(self, wanted):
        self.wanted, self.states = set(wanted), {}

    def install(self):
        import jax

        from jupyter_llm.fitting.prepare import PreparedFit

        original, recorder = PreparedFit.loop_plan, self

        def loop_plan(prepared, save=None):
            plan = original(prepared, save=save)
            chunk = plan.train_chunk

            def recorded(state, *args):
                state, sums = chunk(state, *args)
                step = int(jax.device_get(state.step))
                if step in recorder.wanted:
                    recorder.states[step] = leaves_of(state)
                return state, sums

            plan.train_chunk = recorded
            return plan

        PreparedFit.loop_plan = loop_plan


def run_job(job) -> None:
    import jax
    import numpy as np

    import jupyter_llm as jl

    d, m = job["data"], job["model"]
    data = make_data(d["n_train"], d["n_val"], d["features"], d["classes"], d["seed"])
    model = make_model(d["features"], d["classes"], m["hidden"], m.get("dropout", 0.0), m.get("seed", 0))
    if job.get("initial_out"):
        dump(job["initial_out"], None, model)
    options = dict(job["options"])
    LATE.clear()
    run = jl.fit(model, data, display="none", sinks=[PhaseSink(job["name"])], **options)
    phase("returned", run.reason)
    state_leaves = leaves_of(run.state) if run.state is not None else []
    finite = all(np.isfinite(a).all() for a in state_leaves if a.dtype.kind == "f")
    if job.get("state_out"):
        dump(job["state_out"], run.state, model)
    result = {"name": job["name"], "reason": run.reason, "step": run.step, "history": run.history,
              "finite": bool(finite), "late": len(LATE), "message": run._sink.end.message if run._sink.end else "",
              "steps_total": run._sink.start.steps_total if run._sink.start else None,
              "state_step": int(jax.device_get(run.state.step)) if run.state is not None else None}
    say("R", json.dumps(result))


def main() -> None:
    default_sigint = os.environ.get("FAULT_CHILD_DEFAULT_SIGINT") == "1"
    if not default_sigint:
        signal.signal(signal.SIGINT, on_late)
    with open(sys.argv[1]) as f:
        jobs = json.load(f)
    import jax  # noqa: F401 - imported before READY: the parent's aims start at START, after the imports

    import jupyter_llm  # noqa: F401

    recorder = None
    wanted = [s for job in jobs for s in job.get("record", [])]
    if any(job.get("instrument") for job in jobs):
        instrument()
    if wanted:
        recorder = Recorder(wanted)
        recorder.install()
    say("READY")
    gated = os.environ.get("FAULT_CHILD_GATED") == "1"
    for number, job in enumerate(jobs):
        if gated and number:  # the parent says when the next fit may start: no signal of the last one is coming
            sys.stdin.readline()
            say("L", len(LATE))
        if recorder is not None:
            recorder.wanted, recorder.states = set(job.get("record", [])), {}
        try:
            run_job(job)
        except Exception as exc:  # noqa: BLE001 - reported to the parent, which decides what it expected
            say("E", json.dumps({"name": job["name"], "type": type(exc).__name__, "module": type(exc).__module__,
                                 "message": str(exc), "traceback": traceback.format_exc()[-3000:]}))
            continue
        if recorder is not None and job.get("record"):
            import numpy as np

            np.savez(job["record_out"], **{f"{step}_{i}": a for step, leaves in recorder.states.items()
                                           for i, a in enumerate(leaves)})
    if default_sigint:
        say("DONE")
        time.sleep(20)
        return
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # a signal during the interpreter's shutdown must not kill it
    say("DONE", len(LATE))


if __name__ == "__main__":
    main()
