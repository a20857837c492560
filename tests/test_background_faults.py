"""Faults of a background fit: a stop during compilation ends it before its first step; one during an evaluation or
a checkpoint save ends it at the next step boundary, with the weights an uninterrupted fit of as many steps has
(and the checkpoint resumes exactly); an error in a sink ends the fit with the weights of its last completed step,
frees the device, and lets a fit queued behind it start. (The interpreter's exit while a fit runs, with another
queued: test_background.py.)"""

import time

import pytest

import jupyter_llm as jl
from jupyter_llm import events as ev
from jupyter_llm.fitting.prepare import PreparedFit
from jupyter_llm.fitting.resume import Saver
from tests.helpers import Recorder, params_of, same_params
from tests.test_background import DATA, QUICK, model


class Boxed:
    """A sink that calls `act(run)` on the first event of type `kind` (the run is put in `box` once started)."""

    def __init__(self, kind, act):
        self.kind, self.act, self.box, self.done = kind, act, {}, False

    def on(self, event):
        if isinstance(event, self.kind) and not self.done:
            self.done = True
            while "run" not in self.box:
                time.sleep(0.01)
            self.act(self.box["run"])


def started(sink, **options):
    run = jl.fit(model(), DATA, sinks=[sink], background=True, **{**QUICK, **options})
    sink.box["run"] = run
    return run


def straight(**options):
    m = model()
    jl.fit(m, DATA, **{**QUICK, **options})
    return m


def test_stop_during_compilation_trains_nothing():
    untouched = params_of(model())
    rec = Recorder()
    run = jl.fit(model(), DATA, sinks=[sink := Boxed(ev.CompileStart, lambda r: r.stop()), rec], background=True,
                 **{**QUICK, "steps": 400})
    sink.box["run"] = run
    t0 = time.monotonic()
    done = run.wait(60)
    assert time.monotonic() - t0 < 60 and done.reason == ev.INTERRUPTED and done.step == 0
    assert not rec.of(ev.Progress) and len(rec.of(ev.FitEnd)) == 1
    assert all((a == b).all() for a, b in zip(params_of(done.model), untouched))  # not one update
    jl.fit(model(), DATA, **{**QUICK, "steps": 2})  # the device is free again


@pytest.mark.parametrize("eval_every", [None, 5])
def test_stop_during_an_evaluation_ends_the_fit_at_the_next_step_boundary(monkeypatch, eval_every):
    """The stop comes while a (slow) validation pass runs — at the end of the first epoch (12 steps), or at the first
    --eval-every point: the pass completes, and the fit ends at the next step boundary, one dispatch on."""
    box = {}
    original = PreparedFit.evaluate

    def slow(self, state, split, weights=None):
        if split == "validation" and "run" in box:
            box.pop("run").stop()
            time.sleep(0.3)
        return original(self, state, split, weights)

    monkeypatch.setattr(PreparedFit, "evaluate", slow)
    run = jl.fit(model(), DATA, background=True, **{**QUICK, "epochs": 5, "eval_every": eval_every})
    box["run"] = run
    done = run.wait(60)
    at = (eval_every or 12) + 1
    assert done.reason == ev.INTERRUPTED and done.step == at
    assert same_params(done.model, straight(steps=at))
    if eval_every is None:
        assert len(done.history["val_loss"]) == 1  # the evaluated epoch is in the history


def test_stop_during_a_checkpoint_save_leaves_a_checkpoint_that_resumes_exactly(monkeypatch, tmp_path):
    box = {}
    original = Saver.save

    def slow(self, state, position):
        if "run" in box:
            box.pop("run").stop()
            time.sleep(0.3)
        return original(self, state, position)

    monkeypatch.setattr(Saver, "save", slow)
    ck = str(tmp_path / "ck")
    run = jl.fit(model(), DATA, background=True, **{**QUICK, "steps": 60, "checkpoint": ck, "save_every": 5})
    box["run"] = run
    done = run.wait(60)
    assert done.reason == ev.INTERRUPTED and done.step == 6  # the next step boundary, saved as any stop is
    monkeypatch.setattr(Saver, "save", original)
    resumed = model(seed=1)
    again = jl.fit(resumed, DATA, **{**QUICK, "steps": 60, "resume": ck})
    assert again.reason == ev.COMPLETED and same_params(resumed, straight(steps=60))


def test_an_error_in_a_sink_keeps_the_weights_of_the_last_completed_step_and_the_queue_goes_on():
    class Broken:
        def on(self, event):
            if isinstance(event, ev.Progress) and event.step == 3:
                raise RuntimeError("sink broke")

    trained = model()
    run = jl.fit(trained, DATA, sinks=[Broken()], background=True, **{**QUICK, "steps": 400})
    following = jl.fit(model(), DATA, after=run, **{**QUICK, "steps": 4})  # starts whatever the ending
    with pytest.raises(RuntimeError, match="sink broke"):
        run.wait(60)
    assert isinstance(run.error, RuntimeError)
    assert following.wait(60).reason == ev.COMPLETED and following.step == 4
    assert same_params(trained, straight(steps=3))  # the user's model holds step 3's weights
