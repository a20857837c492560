"""The training core end to end: it learns, it is reproducible, and every ending keeps usable weights."""

import signal
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

import jupyter_llm as jl
from jupyter_llm import events as ev
from tests.helpers import InterruptAt, mlp, params_of, same_params


def test_quickstart_recipe_reaches_95_percent_on_digits(digits):
    model = jl.models.MLP(in_features=64, hidden=[128], num_classes=10, activation="relu", rngs=nnx.Rngs(0))
    run = jl.fit(model, digits, epochs=20, batch_size=32, lr=1e-3, val_split=0.2, seed=0, display="none")
    h = run.history
    assert set(h) == {"loss", "accuracy", "val_loss", "val_accuracy", "grad_norm", "update_ratio"}
    assert len(h["loss"]) == 20
    assert h["loss"][-1] < h["loss"][0] / 4  # the loss falls
    assert all(b < a for a, b in zip(h["loss"][:10], h["loss"][1:11]))  # steadily at first
    assert run.test_metrics["accuracy"] >= 0.95
    assert run.reason == "completed" and run.step == 20 * -(-int(len(digits.train[0]) * 0.8 + 0.5) // 32)
    # the user's model object holds the trained weights: its predictions give the reported accuracy
    x, y = digits.test
    acc = float(np.mean(np.argmax(np.asarray(model(jnp.asarray(x))), -1) == y))
    assert abs(acc - run.test_metrics["accuracy"]) < 1e-6
    assert run.model is model
    assert run.evaluate("test")["accuracy"] == pytest.approx(run.test_metrics["accuracy"], abs=1e-6)


def test_same_seed_same_history_to_the_bit(small_data):
    runs = [jl.fit(mlp(), small_data, epochs=3, val_split=0.2, seed=3, display="none") for _ in range(2)]
    assert runs[0].history == runs[1].history
    assert same_params(runs[0].model, runs[1].model)
    other = jl.fit(mlp(), small_data, epochs=3, val_split=0.2, seed=4, display="none")
    assert other.history["loss"] != runs[0].history["loss"]  # the seed drives data order and the split


def test_second_fit_reuses_compiled_steps(small_data):
    seen = []

    class Spy:
        def on(self, event):
            if isinstance(event, ev.CompileEnd):
                seen.append(event)

    for _ in range(2):
        jl.fit(mlp(hidden=(24,)), small_data, epochs=1, display="none", sinks=[Spy()])
    assert not seen[0].cached and seen[1].cached
    assert seen[1].seconds < 0.5


@pytest.mark.parametrize("optimizer", ["adam", "adamw", "sgd"])
def test_changing_the_optimizers_numbers_or_the_length_does_not_recompile(small_data, optimizer):
    """--lr, --clip, --weight-decay, the schedule and its numbers, --epochs and --steps are arguments of the compiled
    step, not constants: a newcomer trying settings waits for one compile, not one per change. Each fit still
    follows its own numbers (the reported learning rates differ)."""
    seen, lrs = [], []

    class Spy:
        def on(self, event):
            if isinstance(event, ev.CompileEnd):
                seen.append(event.cached)
            elif isinstance(event, ev.Progress) and event.lr is not None:
                lrs.append(event.lr)

    base = dict(optimizer=optimizer, clip=1.0, weight_decay=1e-4, batch_size=64, steps_per_dispatch=2,
                display="none", sinks=[Spy()])
    changes = [dict(epochs=1), dict(epochs=2, lr=3e-3), dict(epochs=1, clip=0.5), dict(epochs=1, weight_decay=0.1),
               dict(steps=5, schedule="cosine", warmup=2, min_lr=1e-5), dict(epochs=3, schedule="onecycle"),
               dict(steps=7, schedule="step", decay_every=2, decay_factor=0.5, lr=1e-2)]
    runs = [jl.fit(mlp(hidden=(20,)), small_data, **{**base, **change}) for change in changes]
    assert seen == [False] + [True] * (len(changes) - 1), seen
    assert all(r.reason == "completed" for r in runs) and runs[4].step == 5 and runs[6].step == 7
    assert len({round(lr, 9) for lr in lrs}) > 5


def test_accepts_tuple_dict_dataset_and_jax_arrays(digits):
    x, y = digits.train
    for data in [(x[:256], y[:256]), (jnp.asarray(x[:256]), jnp.asarray(y[:256])),
                 {"train": (x[:256], y[:256]), "val": (x[256:320], y[256:320])},
                 jl.datasets.Dataset(train=(x[:256], y[:256]), num_classes=10)]:
        run = jl.fit(mlp(), data, epochs=1, display="none")
        assert run.reason == "completed" and np.isfinite(run.history["loss"][0])


def test_partial_last_batch_is_exact():
    """Every example counts once per epoch: 10 examples, batch 4 -> 3 steps, the last with 2 examples."""
    x = np.linspace(-1, 1, 10, dtype=np.float32)[:, None]
    y = 3 * x[:, 0]
    model = mlp(in_features=1, hidden=(8,), num_classes=1)
    run = jl.fit(model, {"train": (x, y), "validation": (x, y)}, epochs=1, batch_size=4, lr=1e-9, optimizer="sgd",
                 display="none")
    assert run.step == 3
    expected = float(np.mean((np.asarray(model(jnp.asarray(x)))[:, 0] - y) ** 2))
    assert run.history["val_loss"][0] == pytest.approx(expected, rel=1e-5)


@pytest.mark.parametrize("optimizer", ["sgd", "momentum", "adam", "adamw"])
def test_each_optimizer_learns(small_data, optimizer):
    lr = {"sgd": 0.5, "momentum": 0.1}.get(optimizer, 3e-3)
    run = jl.fit(mlp(), small_data, epochs=4, lr=lr, optimizer=optimizer, weight_decay=1e-4, display="none")
    assert run.history["loss"][-1] < 0.6 * run.history["loss"][0]


def test_optax_object_clip_and_user_loss(small_data):
    calls = []

    def my_loss(logits, labels):
        calls.append(1)
        return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()  # a scalar is accepted

    run = jl.fit(mlp(), small_data, epochs=3, optimizer=optax.adam(3e-3), loss=my_loss, clip=1.0, display="none")
    assert calls and run.history["loss"][-1] < run.history["loss"][0]
    assert run.loss_name == "my_loss"


@pytest.mark.parametrize("activation", ["relu", "gelu", "tanh", "sigmoid"])
def test_activations(small_data, activation):
    run = jl.fit(mlp(activation=activation), small_data, epochs=3, lr=3e-3, display="none")
    assert run.history["loss"][-1] < run.history["loss"][0]


def test_regression_with_mse_and_binary_cross_entropy():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(400, 5)).astype(np.float32)
    w = rng.normal(size=5).astype(np.float32)
    reg = jl.fit(mlp(in_features=5, num_classes=1), (x, x @ w), epochs=30, lr=1e-2, display="none")
    assert reg.loss_name == "mse" and reg.history["loss"][-1] < 0.1 * reg.history["loss"][0]
    labels = (x @ w > 0).astype(np.int32)
    clf = jl.fit(mlp(in_features=5, num_classes=1), (x, labels), epochs=30, lr=1e-2, display="none")
    assert clf.loss_name == "binary_cross_entropy" and clf.history["accuracy"][-1] > 0.9
    onehot = np.eye(2, dtype=np.float32)[labels]
    soft = jl.fit(mlp(in_features=5, num_classes=2), (x, onehot), epochs=30, lr=1e-2, display="none")
    assert soft.loss_name == "cross_entropy" and soft.history["accuracy"][-1] > 0.9


def test_user_defined_module_with_dropout_is_reproducible(small_data):
    class Net(nnx.Module):
        def __init__(self, rngs):
            self.a = nnx.Linear(64, 32, rngs=rngs)
            self.drop = nnx.Dropout(0.3, rngs=rngs)
            self.b = nnx.Linear(32, 10, rngs=rngs)

        def __call__(self, x):
            return self.b(self.drop(nnx.relu(self.a(x.reshape(x.shape[0], -1)))))

    runs = [jl.fit(Net(nnx.Rngs(1)), small_data, epochs=3, lr=3e-3, display="none") for _ in range(2)]
    assert runs[0].history == runs[1].history
    assert runs[0].history["loss"][-1] < runs[0].history["loss"][0]
    x = small_data["test"][0][:8]
    np.testing.assert_array_equal(runs[0].predict(x), runs[0].predict(x))  # eval mode: dropout is off


def test_nonfinite_loss_stops_and_keeps_last_finite_weights():
    x = np.random.default_rng(0).normal(size=(256, 4)).astype(np.float32) * 100
    y = (x ** 3).sum(1)
    model = mlp(in_features=4, hidden=(16,), num_classes=1)
    run = jl.fit(model, (x, y), epochs=50, lr=10.0, optimizer="sgd", display="none")
    assert run.reason == "nan"
    assert all(np.isfinite(p).all() for p in params_of(model))
    assert "not finite at step" in run._sink.end.message
    # and what to try, in a jl.fit caller's words (the magic's display says --clip 1.0, --lr)
    assert "clip=1.0" in run._sink.end.message and "(lr)" in run._sink.end.message
    assert "--" not in run._sink.end.message


def test_a_chunk_that_turns_nonfinite_midway_keeps_exactly_the_last_finite_step():
    """The branch-free path notices the failure only at the chunk's end; the chunk is then redone step by step,
    so the weights equal those of a fit that stops right before the bad step."""
    x = np.random.default_rng(0).normal(size=(256, 4)).astype(np.float32) * 100
    y = (x ** 3).sum(1)
    opts = dict(lr=3.0, optimizer="sgd", batch_size=16, steps_per_dispatch=16, display="none")
    run = jl.fit(mlp(in_features=4, hidden=(16,), num_classes=1), (x, y), epochs=50, **opts)
    assert run.reason == "nan" and run.step % 16 not in (0, 15), run.step  # the failure was inside a chunk
    ref = jl.fit(mlp(in_features=4, hidden=(16,), num_classes=1), (x, y), steps=run.step, **opts)
    assert ref.reason == "completed"
    for a, b in zip(params_of(run.model), params_of(ref.model)):
        np.testing.assert_array_equal(a, b)


def test_interrupt_stops_at_a_step_boundary_and_keeps_weights(small_data):
    model = mlp()
    handler = signal.getsignal(signal.SIGINT)  # default_int_handler, or SIG_IGN in a process started in background
    run = jl.fit(model, small_data, epochs=200, steps_per_dispatch=1, display="none", sinks=[InterruptAt(3)])
    assert run.reason == "interrupted"
    assert 0 < run.step < 200 * 16
    assert int(run.state.step) == run.step  # the weights are those of the last completed step
    for a, b in zip(params_of(model), jax.tree.leaves(run.state.params)):
        np.testing.assert_array_equal(a, np.asarray(b))
    assert signal.getsignal(signal.SIGINT) is handler  # handler restored


def test_steps_option_trains_exactly_that_many_steps(small_data):
    run = jl.fit(mlp(), small_data, steps=25, batch_size=32, display="none")
    assert run.step == 25 and int(run.state.step) == 25


def test_core_does_not_touch_user_buffers_on_error(small_data):
    """A failing fit (bad option) leaves the earlier trained model intact."""
    model = mlp()
    jl.fit(model, small_data, epochs=1, display="none")
    before = params_of(model)
    with pytest.raises(jl.JupyterLLMError):
        jl.fit(model, small_data, epochs=1, batch_size=10**6, display="none")
    assert all(np.array_equal(a, b) for a, b in zip(before, params_of(model)))
    jl.fit(model, small_data, epochs=1, display="none")  # and the model still trains (no donated buffers)


def test_chained_resumes_keep_no_earlier_run_alive(small_data):
    """`run.config.resume` used to hold the Run it continued, with its state and device data: six resumes in a row
    grew device memory by a model state each. Only the newest Run (and what the user names) stays alive."""
    import gc
    import weakref

    options = dict(batch_size=64, display="none", seed=0)
    run = jl.fit(mlp(), small_data, epochs=1, **options)
    earlier, live = [], []
    for epochs in range(2, 8):
        earlier.append(weakref.ref(run))
        run = jl.fit(mlp(), small_data, epochs=epochs, resume=run, **options)
        gc.collect()
        live.append(sum(a.nbytes for a in jax.live_arrays()))
    assert run.reason == "completed" and len(run.history["loss"]) == 7
    assert [r() is None for r in earlier] == [True] * 6, "an earlier Run is still referenced"
    state_bytes = sum(a.nbytes for a in jax.tree.leaves(run.state))
    # flat: JAX's trace caches keep a few scalar constants per compiled fit (48 bytes here), not a model state
    assert live[-1] - live[0] < state_bytes / 10, (live, state_bytes)
    assert "step" in repr(run.config.resume) and run.config.to_dict()["resume"] == "EarlierRun"


def test_a_failing_display_at_the_start_still_ends_the_fit_and_its_saver(small_data, tmp_path):
    """FitStart is sent inside the fit's try: a sink that fails there still gets FitEnd, and the checkpoint saver's
    threads are shut down (a leaked Orbax thread kept the interpreter from exiting)."""
    import threading

    class FailsAtStart:
        def __init__(self):
            self.seen = []

        def on(self, event):
            self.seen.append(type(event).__name__)
            if isinstance(event, ev.FitStart):
                raise RuntimeError("the display broke")

    sink, before = FailsAtStart(), set(threading.enumerate())
    with pytest.raises(RuntimeError, match="the display broke"):
        jl.fit(mlp(), small_data, epochs=1, display="none", sinks=[sink], checkpoint=str(tmp_path / "ck"))
    assert sink.seen == ["FitStart", "FitEnd"]
    time.sleep(0.2)
    assert not [t for t in set(threading.enumerate()) - before if t.is_alive()], "a saver thread was left running"


def test_a_failing_last_save_is_the_fits_failure_and_fitend_is_still_sent(small_data, tmp_path, monkeypatch):
    from jupyter_llm.train.checkpoint import Checkpointer, CheckpointError

    def broken_close(self):
        raise CheckpointError("the disk went away")

    monkeypatch.setattr(Checkpointer, "close", broken_close)
    ends = []

    class Ends:
        def on(self, event):
            if isinstance(event, ev.FitEnd):
                ends.append(event)

    with pytest.raises(CheckpointError, match="the disk went away"):
        jl.fit(mlp(), small_data, epochs=1, display="none", sinks=[Ends()], checkpoint=str(tmp_path / "ck"))
    assert len(ends) == 1 and ends[0].reason == "failed" and "the disk went away" in ends[0].message


def test_a_fit_leaves_the_model_in_evaluation_mode(small_data):
    """Calling the model in the next cell must not apply dropout: it answers as run.predict does."""
    model = mlp(dropout=0.5)
    run = jl.fit(model, small_data, epochs=1, display="none")
    x = jnp.asarray(small_data["train"][0][:16])
    assert model.dropout.deterministic is True
    np.testing.assert_array_equal(np.asarray(model(x)), np.asarray(model(x)))
    np.testing.assert_allclose(np.asarray(model(x)), run.predict(np.asarray(x)), rtol=1e-6, atol=1e-6)


def test_the_compiled_programs_kept_are_bounded():
    """Each distinct model a notebook tries compiles its own steps; only the newest few are kept for re-runs."""
    from jupyter_llm.fitting.program import CompiledPrograms

    cache = CompiledPrograms(limit=3)
    for key in "abcd":
        cache.put(key, key.upper())
    assert len(cache) == 3 and cache.get("a") is None and cache.get("b") == "B"
    cache.put("e", "E")  # "b" was used last: "c" goes
    assert cache.get("c") is None and [cache.get(k) for k in "bde"] == ["B", "D", "E"]


def test_the_loop_hands_back_its_outcome(small_data):
    """The loop's generator returns how the fit ended (no attributes mutated from closures); run_to_end passes every
    event on and returns it."""
    from jupyter_llm.train.loop import Outcome, run_to_end

    def events():
        yield "a"
        yield "b"
        return Outcome(ev.EARLY_STOPPED, "no improvement")

    seen = []
    assert run_to_end(events(), seen.append) == Outcome(ev.EARLY_STOPPED, "no improvement") and seen == ["a", "b"]
    run = jl.fit(mlp(), small_data, epochs=50, batch_size=64, lr=0.5, display="none", val_split=0.25, early_stop=1,
                 keep_best=True)
    assert run.reason == "early-stopped" and "restored the best weights" in run._sink.end.message
