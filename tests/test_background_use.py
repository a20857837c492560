"""Using a background fit while it runs: queue another behind it (`after=`, `%%train --after`), evaluate and
predict with its weights at a step boundary without changing the fit, read a resumed fit's whole history, a
learning rate the schedule cannot take refused, and a steered fit replayed from its record to the bit."""

import json
import time

import numpy as np
import pytest

import jupyter_llm as jl
from jupyter_llm import events as ev
from jupyter_llm.config import make_config
from jupyter_llm.errors import ConfigError
from jupyter_llm.train.schedule import scale_for
from tests.helpers import Recorder, same_params
from tests.test_background import DATA, QUICK, PauseAt, X, held, model, start_paused


def straight(steps, seed=0, **options):
    m = model(seed)
    return jl.fit(m, DATA, **{**QUICK, "steps": steps, **options})


class Order:
    """Appends `label` to a shared list at the first event of `kind`."""

    def __init__(self, seen, kind, label):
        self.seen, self.kind, self.label = seen, kind, label

    def on(self, event):
        if isinstance(event, self.kind) and self.label not in self.seen:
            self.seen.append(self.label)


# -- queueing -------------------------------------------------------------------------------------------------------
def test_after_queues_a_fit_that_starts_when_the_running_one_ends():
    seen = []
    first = start_paused(5, sinks=[Order(seen, ev.FitEnd, "first ended")])
    first.name = "first"
    held(first)
    t0 = time.perf_counter()
    second = jl.fit(model(1), DATA, sinks=[Order(seen, ev.FitStart, "second started")], after=first,
                    **{**QUICK, "steps": 30})
    second.name = "second"
    assert time.perf_counter() - t0 < 5 and second.queued and second.describe() == "second: queued after first"
    time.sleep(0.5)
    assert second.queued and seen == []  # waits while the first one runs (paused, here)
    with pytest.raises(ConfigError, match=r"first: MLP, step \d+ of 400, paused; second: queued after first.*"
                                          r"queue this fit to start when it ends with after=second"):
        jl.fit(model(), DATA, **{**QUICK, "steps": 5})
    with pytest.raises(ConfigError, match="first is not the last fit in the background queue.*with after=second"):
        jl.fit(model(), DATA, after=first, **{**QUICK, "steps": 5})
    first.stop()
    done = second.wait(60)
    assert first.wait(0).reason == ev.INTERRUPTED and done.reason == ev.COMPLETED and done.step == 30
    assert seen == ["first ended", "second started"]
    assert same_params(done.model, straight(30, seed=1).model)  # an ordinary fit, once started


def test_after_a_finished_run_starts_at_once_and_bad_after_is_refused():
    finished = straight(3)
    run = jl.fit(model(), DATA, after=finished, **{**QUICK, "steps": 4})  # background, starts at once
    assert run.wait(60).step == 4
    with pytest.raises(ConfigError, match="after takes the run of another fit .*got str"):
        jl.fit(model(), DATA, after="run", **{**QUICK, "steps": 4})


def test_stopping_a_queued_fit_cancels_it():
    first = start_paused(5)
    held(first)
    untouched = model(1)
    queued = jl.fit(untouched, DATA, after=first, **{**QUICK, "steps": 30})
    queued.stop()
    assert queued.wait(10) is None and queued.cancelled and not queued.running  # without waiting for the first
    assert first.running and "never started" in repr(queued)
    with pytest.raises(ConfigError, match="stopped while it was queued"):
        queued.evaluate("validation")
    first.stop()
    first.wait(60)
    assert same_params(untouched, model(1))


def test_magic_after(ipython):
    ipython.user_ns.update(model=model(), data=DATA, other=model(1), number=3)
    quick = "--steps-per-dispatch 1 --display none --batch-size 32"
    ipython.run_line_magic("train", f"--background --steps 100000 {quick} --out first")
    first = ipython.user_ns["first"]
    try:
        with pytest.raises(Exception, match=r"queue this fit to start when it ends with --after first"):
            ipython.run_line_magic("train", f"--model other --steps 5 {quick} --out x")
        for line, message in [("--after nothing", "--after 'nothing' names nothing in the notebook"),
                              ("--after number", "--after 'number' is an int, not a fit"),
                              ("--after first --out first", "--out 'first' is also --after")]:
            with pytest.raises(Exception, match=message):
                ipython.run_line_magic("train", f"--model other --steps 5 {quick} {line}")
        ipython.run_line_magic("train", f"--model other --steps 5 {quick} --after first --out second")
        second = ipython.user_ns["second"]
        assert second.name == "second" and second.queued
    finally:
        first.stop()
    assert second.wait(60).step == 5


def test_the_command_line_refuses_after(capsys):
    from jupyter_llm.cli import main

    assert main(["train", "--after", "run", "--data", "digits", "--model", "mlp"]) != 0
    assert "--after is for a notebook's %%train; the command line trains in the foreground" in capsys.readouterr().err


def test_magic_changes_by_name_or_as_json(ipython):
    ipython.user_ns.update(model=model(), data=DATA, recorded=[{"step": 4, "lr": 5e-4}])
    line = "--steps 8 --steps-per-dispatch 4 --display none --batch-size 32 --changes "
    ipython.run_line_magic("train", line + "recorded --out a")
    ipython.user_ns["model"] = model()
    ipython.run_line_magic("train", line + """'[{"step": 4, "lr": 0.0005}]' --out b""")
    a, b = ipython.user_ns["a"], ipython.user_ns["b"]
    assert a.changes == b.changes == [{"step": 4, "lr": 5e-4}] and same_params(a.model, b.model)


def test_after_in_the_option_spec():
    from jupyter_llm.ipython.parse import train_help

    text = " ".join(train_help().split())
    assert "--after NAME queue this fit behind the background fit bound to NAME" in text
    assert "(implies --background) (default: start at once)" in text


# -- the weights of a running fit -----------------------------------------------------------------------------------
def test_evaluate_and_predict_while_it_runs_use_a_steps_weights_and_leave_the_fit_unchanged():
    run = start_paused(20, steps=600)
    held(run)
    paused = run.snapshot()  # served while the fit is paused
    assert paused.step == 21 and paused.reason == "running" and run.paused
    at_21 = (paused.evaluate("validation"), run.predict(X[:7]))
    run.unpause()
    snaps = []
    while run.running and len(snaps) < 30:  # while it trains, one after another: any race would show
        snap = run.snapshot()
        if snap.reason == "running":
            snaps.append((snap.step, snap.evaluate("validation"), snap.predict(X[:7])))
    done = run.wait(60)
    steps = [s for s, _, _ in snaps]
    assert done.reason == ev.COMPLETED and len(set(steps)) >= 3 and steps == sorted(steps), steps
    assert all(21 <= s < 600 for s in steps), steps
    assert same_params(done.model, straight(600).model)  # evaluating did not touch the fit, to the bit
    reference = straight(21)
    assert at_21[0] == reference.evaluate("validation") and np.array_equal(at_21[1], reference.predict(X[:7]))
    step, metrics, outputs = snaps[-1]
    reference = straight(step)
    assert metrics == reference.evaluate("validation") and np.array_equal(outputs, reference.predict(X[:7]))
    assert run.evaluate("validation") == done.evaluate("validation")  # once ended: the Run's own weights


# -- history of a resumed fit ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("source", ["run", "checkpoint"])
def test_a_resumed_background_fit_shows_its_earlier_history_while_it_runs(tmp_path, source):
    options = {**QUICK, "epochs": 4}
    ck = str(tmp_path / "ck")
    earlier = jl.fit(model(), DATA, **{**options, "epochs": 2, **({"checkpoint": ck} if source != "run" else {})})
    resume = earlier if source == "run" else ck
    pause = PauseAt(30)  # in the third epoch (12 steps each)
    run = jl.fit(model(), DATA, sinks=[pause], background=True, resume=resume,
                 **{**options, **({"checkpoint": ck} if source != "run" else {})})
    pause.box["run"] = run
    held(run)
    assert run.history == earlier.history and len(run.history["loss"]) == 2
    run.unpause()
    done = run.wait(60)
    assert done.history == jl.fit(model(), DATA, **options).history and len(done.history["loss"]) == 4


# -- a learning rate the schedule cannot take -----------------------------------------------------------------------
def test_scale_for():
    assert scale_for(1e-3, 1e-3) == 1.0 and scale_for(2e-3, 1e-3) == 2.0
    assert scale_for(1e-3, 0.0) is None and scale_for(1e-3, 1e-39) is None  # 0, or 0 in float32
    assert scale_for(1e30, 1e-10) is None  # a multiplier float32 cannot hold


# 'step' decaying tenfold at every update: the rate is 1e-3 * 10**-k after k updates, below float32's smallest
# normal number (about 1.2e-38, where the device's rate is 0) from k = 35 on
DECAYING = dict(lr=1e-3, schedule="step", decay_every=1, decay_factor=0.1, steps=400)


def test_set_lr_where_the_schedule_is_zero_is_refused_with_what_to_do():
    rec = Recorder()
    run = start_paused(40, sinks=[rec], **DECAYING)
    try:
        held(run)
        with pytest.raises(ConfigError, match=r"run.set\(lr=0.001\) cannot take effect: the schedule's learning "
                                              r"rate at step 40 is 1e-43 .*multiplies the schedule.*leaves 0 at "
                                              r"0.*--resume.*--min-lr above 0"):
            run.set(lr=1e-3)
    finally:
        run.stop()
    assert run.wait(60).changes == [] and not rec.of(ev.Control)


def test_set_lr_where_the_schedule_is_small_but_not_zero_takes_effect():
    rec = Recorder()
    run = start_paused(5, sinks=[rec], **DECAYING)
    held(run)  # the change applies at step 6, where the schedule's rate is 1e-9
    run.set(lr=1e-3)
    run.stop()
    assert run.wait(60).changes == [{"step": 6, "lr": 1e-3}]
    assert [p.lr for p in rec.of(ev.Progress) if p.step == 6] == pytest.approx([1e-3])


def test_a_zero_reached_between_the_check_and_the_step_boundary_is_not_applied_and_said():
    """run.set checks the rate at the step last reported (34: 1e-37); the change comes at the next step boundary
    (35: below float32's smallest normal number), where the loop leaves it out with a warning."""
    rec = Recorder()
    run = start_paused(34, sinks=[rec], **DECAYING)
    held(run)
    with pytest.warns(RuntimeWarning, match=r"run.set\(lr=0.001\) was not applied at step 35"):
        run.set(lr=1e-3)
        run.stop()
        done = run.wait(60)
    assert done.changes == [] and not rec.of(ev.Control)


# -- replay ---------------------------------------------------------------------------------------------------------
def test_a_steered_fit_replays_from_its_record_to_the_bit(tmp_path):
    options = dict(lr=1e-3, clip=1.0, steps=60)
    second = PauseAt(30)
    run = start_paused(10, sinks=[second], logdir=str(tmp_path / "log"), **options)
    second.box["run"] = run
    held(run)
    run.set(lr=5e-4, clip=0.5)
    run.unpause()
    assert held(run) == 30  # the step last reported: the loop holds at the next boundary, 31
    run.set(lr=2e-3)
    run.unpause()
    done = run.wait(60)
    assert done.reason == ev.COMPLETED
    assert done.changes == [{"step": 11, "lr": 5e-4, "clip": 0.5}, {"step": 31, "lr": 2e-3}]
    recorded = json.loads((tmp_path / "log" / "run.json").read_text())["changes"]
    assert recorded == done.changes
    replayed = straight(changes=recorded, **options)  # from the logdir's record, in the foreground
    assert replayed.changes == done.changes and replayed.history == done.history
    assert same_params(replayed.model, done.model)
    assert not same_params(straight(**options).model, done.model)  # the changes did change the fit
    text = make_config(changes=json.dumps(recorded)).changes  # what --changes takes in the magic and the CLI
    assert list(text) == recorded


def test_changes_that_this_fit_cannot_replay_are_refused():
    for changes, message in [
        ([{"step": 11, "lr": 5e-4}], "changes: step 11 is not a step boundary of this fit, which runs 4 steps"),
        ([{"step": 12, "clip": 0.5}], "started without clip"),
        ([{"step": 12, "momentum": 0.5}], "changes takes what run.changes records"),
        ("[{'step': 1}]", "which is not JSON"),
        ([{"step": 0, "lr": 1e-3}], "not a whole number of at least 1"),
    ]:
        with pytest.raises(ConfigError, match=message):
            straight(steps=20, changes=changes, steps_per_dispatch=4)
