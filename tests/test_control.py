"""Control of a fit: schedules, regularisation, early stopping, plateau, best weights, NaN skipping, lr_find,
and resuming an interrupted fit to exactly the history of an uninterrupted one."""


import jax
import numpy as np
import optax
import pytest
from flax import nnx

import jupyter_llm as jl
from jupyter_llm import events as ev
from jupyter_llm.config import FitConfig
from jupyter_llm.errors import ConfigError
from jupyter_llm.train.schedule import learning_rate, schedule_numbers
from tests.helpers import InterruptAt, Recorder, mlp, params_of, same_params

RNG = np.random.default_rng(0)
X = RNG.normal(size=(512, 16)).astype(np.float32)
Y = (X[:, :8].sum(1) > X[:, 8:].sum(1)).astype(np.int32) + 2 * (X[:, 0] > 0)
DATA = {"train": (X[:384], Y[:384]), "validation": (X[384:], Y[384:])}


def model(seed=0, **kw):
    return mlp(in_features=16, hidden=(32,), num_classes=4, seed=seed, **kw)


def schedule_of(cfg, total):
    numbers = schedule_numbers(cfg, total)
    return lambda counts: learning_rate(np.asarray(counts), numbers)


@pytest.mark.parametrize("schedule", ["constant", "cosine", "exponential", "step", "onecycle"])
def test_schedules_shape(schedule):
    cfg = FitConfig(lr=1e-2, schedule=schedule, warmup=10, min_lr=1e-4)
    values = schedule_of(cfg, 100)(np.arange(100))
    assert values.max() == pytest.approx(1e-2, rel=1e-3)
    if schedule != "onecycle":
        assert values[0] < values[9] < values[10] * 1.0001  # linear warm-up to the peak
    if schedule != "constant":
        assert values[-1] < 0.5 * values.max() and values[-1] >= 1e-4 * 0.999 * (schedule != "onecycle")


def optax_schedule(cfg, total):
    """The Optax schedule each of ours is meant to equal (what the optimizer used before it took runtime numbers)."""
    lr, floor = cfg.lr, cfg.min_lr
    warmup = int(cfg.warmup * total) if 0 < cfg.warmup < 1 else int(cfg.warmup)
    rest = max(total - warmup, 1)
    if cfg.schedule == "onecycle":
        return optax.cosine_onecycle_schedule(total, lr, pct_start=max(warmup / total, 0.05) if warmup else 0.3,
                                              final_div_factor=lr / floor if floor else 1e4)
    every = cfg.decay_every or max(rest // 3, 1)
    main = {
        "constant": lambda: optax.constant_schedule(lr),
        "cosine": lambda: optax.cosine_decay_schedule(lr, rest, alpha=floor / lr),
        "exponential": lambda: optax.exponential_decay(lr, rest, decay_rate=max(floor, lr * cfg.decay_factor) / lr,
                                                       end_value=max(floor, lr * cfg.decay_factor)),
        "step": lambda: (lambda c, f=optax.piecewise_constant_schedule(
            lr, {b: cfg.decay_factor for b in range(every, rest, every)}): jax.numpy.maximum(f(c), floor)),
    }[cfg.schedule]()
    if not warmup:
        return main
    return optax.join_schedules([optax.linear_schedule(lr / warmup, lr, warmup), main], [warmup])


@pytest.mark.parametrize("schedule", ["constant", "cosine", "exponential", "step", "onecycle"])
def test_each_schedule_equals_optaxs_on_host_and_device(schedule):
    """One formula serves the compiled step (jax.numpy, float32) and the history (numpy): both give Optax's values,
    within float32 rounding, over warm-ups, floors and lengths — step boundaries included."""
    import jax.numpy as jnp

    for warmup in (0, 10, 0.25):
        for min_lr in (0.0, 1e-4):
            for total in (7, 100, 1000):
                if warmup and (warmup if warmup >= 1 else int(warmup * total)) >= total:
                    continue
                cfg = FitConfig(lr=1e-2, schedule=schedule, warmup=warmup, min_lr=min_lr, decay_factor=0.3)
                counts = np.arange(total + 5)
                reference = np.array([float(optax_schedule(cfg, total)(int(c))) for c in counts])
                numbers = schedule_numbers(cfg, total)
                host = learning_rate(counts, numbers)
                device = learning_rate(jnp.asarray(counts), {k: jnp.float32(v) for k, v in numbers.items()}, jnp)
                np.testing.assert_allclose(host, reference, rtol=0, atol=3e-7 * cfg.lr)
                np.testing.assert_allclose(np.asarray(device), reference, rtol=0, atol=3e-7 * cfg.lr)


def test_lr_is_reported_and_follows_the_schedule():
    rec = Recorder()
    jl.fit(model(), DATA, epochs=4, lr=1e-2, schedule="cosine", warmup=0.25, report_every=0.0, steps_per_dispatch=1,
           display="none", sinks=[rec])
    lrs = [p.lr for p in rec.of(ev.Progress)]
    peak = int(np.argmax(lrs))
    assert 0 < peak < len(lrs) - 1 and max(lrs) == pytest.approx(1e-2, rel=1e-3)
    assert lrs[-1] < 0.05 * max(lrs)


def test_early_stopping_and_keep_best_restore_the_best_weights():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(96, 16)).astype(np.float32)
    y = rng.integers(0, 4, 96)  # random labels: validation loss soon rises (overfitting)
    data = {"train": (x[:64], y[:64]), "validation": (x[64:], y[64:])}
    m = mlp(in_features=16, hidden=(256,), num_classes=4)
    run = jl.fit(m, data, epochs=300, lr=1e-2, batch_size=16, early_stop=3, keep_best=True, display="none")
    assert run.reason == "early-stopped" and len(run.history["loss"]) < 300
    val = run.history["val_loss"]
    best = int(np.argmin(val))
    assert len(val) == best + 1 + 3  # stopped after 3 evaluations without improvement
    assert run.evaluate("validation")["loss"] == pytest.approx(val[best], rel=1e-5)  # the model holds the best
    assert "restored the best weights" in run._sink.end.message


def test_plateau_halves_the_learning_rate():
    rec = Recorder()
    rng = np.random.default_rng(2)
    x = rng.normal(size=(96, 16)).astype(np.float32)
    data = {"train": (x[:64], rng.integers(0, 4, 64)), "validation": (x[64:], rng.integers(0, 4, 32))}
    jl.fit(model(), data, epochs=40, lr=1e-2, plateau=1, report_every=0.0, display="none", sinks=[rec])
    lrs = sorted({round(p.lr, 12) for p in rec.of(ev.Progress)}, reverse=True)
    assert lrs[0] == pytest.approx(1e-2) and lrs[1] == pytest.approx(5e-3) and len(lrs) >= 3


def test_monitor_must_be_logged():
    with pytest.raises(ConfigError, match="no validation split"):
        jl.fit(model(), (X, Y), epochs=1, early_stop=2, display="none")
    with pytest.raises(ConfigError, match="'val_acc' is not logged"):
        jl.fit(model(), DATA, epochs=1, early_stop=2, monitor="val_acc", display="none")


def test_accumulation_equals_a_bigger_batch_for_sgd():
    """Four accumulated batches of 8 make the same update as one batch of 32 (mean gradients, plain SGD)."""
    a = jl.fit(model(), (X[:32], Y[:32]), epochs=1, batch_size=32, optimizer="sgd", lr=0.1, display="none")
    b = jl.fit(model(), (X[:32], Y[:32]), epochs=1, batch_size=8, accumulate=4, optimizer="sgd", lr=0.1, seed=0,
               display="none")
    for p, q in zip(params_of(a.model), params_of(b.model)):
        np.testing.assert_allclose(p, q, atol=1e-6)


def test_label_smoothing_and_weight_decay_change_training():
    base = jl.fit(model(), DATA, epochs=3, display="none")
    smooth = jl.fit(model(), DATA, epochs=3, label_smoothing=0.2, display="none")
    decayed = jl.fit(model(), DATA, epochs=3, optimizer="adamw", weight_decay=0.5, display="none")
    assert not same_params(base.model, smooth.model)
    def norm(m):
        return sum(float((p ** 2).sum()) for p in params_of(m) if p.ndim == 2)
    assert norm(decayed.model) < norm(base.model)
    with pytest.raises(ConfigError, match="label_smoothing applies to cross-entropy"):
        jl.fit(mlp(in_features=16, num_classes=1), (X, X[:, 0]), label_smoothing=0.1, display="none")


def test_skip_nonfinite_skips_bad_batches_and_goes_on():
    x = X.copy()
    x[5] = 1e30  # one example makes its batch's loss infinite
    y = Y.copy()
    run = jl.fit(model(), (x, y), epochs=3, batch_size=32, skip_nonfinite=5, display="none")
    assert run.reason == "completed" and "skipped 3 non-finite updates" in run._sink.end.message
    assert all(np.isfinite(p).all() for p in params_of(run.model))
    stopped = jl.fit(model(), (x, y), epochs=3, batch_size=32, display="none")
    assert stopped.reason == "nan"


def test_a_held_chunk_and_the_chunks_dispatched_after_it_are_redone(monkeypatch):
    """With two steps per dispatch and no read until the epoch's end, the chunk holding a non-finite batch is
    noticed while the next chunks are already dispatched: it is redone step by step and they are dispatched again.
    The fit equals one whose chunks are whole epochs (nothing in flight behind the bad chunk)."""
    from jupyter_llm.fitting.prepare import PreparedFit

    calls = {"train": 0, "redo": 0}
    original = PreparedFit.loop_plan

    def counted(prepared, save=None):
        plan = original(prepared, save=save)
        for name, attr in (("train", "train_chunk"), ("redo", "redo_chunk")):
            def wrapped(*args, _fn=getattr(plan, attr), _name=name):
                calls[_name] += 1
                return _fn(*args)
            setattr(plan, attr, wrapped)
        return plan

    monkeypatch.setattr(PreparedFit, "loop_plan", counted)
    x = X.copy()
    x[5] = 1e30  # one example makes its batch's update non-finite, once an epoch
    opts = dict(epochs=3, batch_size=32, skip_nonfinite=10, report_every=1e9, display="none")
    runs, counts = {}, {}
    for k in (2, 16):  # 16 steps per epoch
        calls.update(train=0, redo=0)
        runs[k] = jl.fit(model(), (x, Y), steps_per_dispatch=k, **opts)
        counts[k] = dict(calls)
    assert counts[2]["redo"] == counts[16]["redo"] == 3  # one per bad batch
    assert counts[16]["train"] == 3  # one chunk per epoch: nothing to dispatch again
    assert counts[2]["train"] > 3 * 8  # 8 chunks per epoch, and the ones dispatched again
    for run in runs.values():
        assert run.reason == "completed" and "skipped 3 non-finite updates" in run._sink.end.message
        assert run.step == 48 and all(np.isfinite(p).all() for p in params_of(run.model))
    for a, b in zip(params_of(runs[2].model), params_of(runs[16].model)):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(runs[2].history["loss"], runs[16].history["loss"], rtol=1e-6)


def test_gradient_health_metrics_are_reported():
    rec = Recorder()
    jl.fit(model(), DATA, epochs=2, clip=0.5, report_every=0.0, display="none", sinks=[rec])
    metrics = rec.of(ev.Progress)[-1].metrics
    assert metrics["grad_norm"] > 0 and 0 < metrics["update_ratio"] < 1


def test_lr_find_restores_weights_and_suggests_a_rate():
    m = model()
    before = [np.asarray(a) for a in jax.tree.leaves(jl.models.MLP.__mro__ and __import__("flax").nnx.state(m))]
    result = jl.lr_find(m, DATA, steps=60)
    after = [np.asarray(a) for a in jax.tree.leaves(__import__("flax").nnx.state(m))]
    assert all(np.array_equal(a, b) for a, b in zip(before, after))
    assert len(result.lrs) == len(result.losses) >= 30
    assert result.lrs == sorted(result.lrs)
    assert 1e-5 < result.suggestion < 1.0
    assert min(result.losses) < result.losses[0]


@pytest.mark.parametrize("stop_at", [1, 7, 12, 25])
def test_resume_in_memory_equals_uninterrupted(stop_at):
    options = dict(epochs=4, batch_size=32, lr=3e-3, steps_per_dispatch=1, report_every=0.0, display="none",
                   schedule="cosine", warmup=5)
    full = jl.fit(model(), DATA, **options)
    first = jl.fit(model(), DATA, sinks=[InterruptAt(stop_at)], **options)
    assert first.reason == "interrupted" and first.step == stop_at + 1  # the next step boundary
    resumed = jl.fit(model(seed=99), DATA, resume=first, **options)  # a fresh model object: weights come from `first`
    assert resumed.reason == "completed"
    assert resumed.history == full.history  # to the bit
    assert same_params(resumed.model, full.model)
    again = jl.fit(model(), DATA, resume=first, **options)  # the earlier run is still usable
    assert again.history == full.history


def test_resume_rejects_a_different_batch_size():
    first = jl.fit(model(), DATA, epochs=1, display="none")
    with pytest.raises(ConfigError, match="batch_size=32"):
        jl.fit(model(), DATA, epochs=2, batch_size=16, resume=first, display="none")


def test_option_errors_of_the_control_options():
    for options, message in [
        (dict(schedule="cosin"), "Did you mean 'cosine'"),
        (dict(warmup=-1), "warmup must be at least 0"),
        (dict(early_stop=-2), "early_stop must be at least 0"),
        (dict(plateau=-1), "plateau must be at least 0"),
        (dict(accumulate=0), "accumulate must be at least 1"),
        (dict(label_smoothing=1.0), "label_smoothing must be below 1"),
        (dict(min_lr=0.1, lr=0.01, schedule="cosine"), "min_lr=0.1 must be below lr"),
        (dict(clip=0), "clip must be greater than 0"),
        (dict(decay_factor=1.5), "decay_factor must be at most 1.0"),
        (dict(keep_best="yes"), "keep_best is a switch"),
        (dict(profile=5), "profile writes its trace into logdir"),
        (dict(optimizer=optax.sgd(0.1), schedule="cosine"), "an optax object brings its own"),
        (dict(warmup=1000, epochs=1), "warmup=1000.0 covers all"),
        (dict(skip_nonfinite=-1), "skip_nonfinite must be at least 0"),
        (dict(save_every=0), "save_every must be at least 1"),
        (dict(keep=0), "keep must be at least 1"),
        (dict(report_every=-1), "report_every must be at least 0"),
        (dict(resume=True), "resume without a directory needs checkpoint"),
    ]:
        with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
            jl.fit(model(), DATA, display="none", **options)


def test_bf16_compute_keeps_float32_master_weights():
    run = jl.fit(model(), DATA, epochs=4, lr=3e-3, precision="bf16", display="none")
    assert run.history["loss"][-1] < 0.8 * run.history["loss"][0]
    assert all(p.dtype == np.float32 for p in params_of(run.model))
    assert all(leaf.dtype == np.float32 for leaf in jax.tree.leaves(run.state.opt_state) if leaf.ndim >= 1)
    with pytest.raises(ConfigError, match="precision='fp16' is not one of"):
        jl.fit(model(), DATA, precision="fp16", display="none")


def test_auto_precision_is_bf16_only_for_a_gpt_on_an_accelerator():
    from jupyter_llm.fitting.prepare import compute_precision

    gpt = jl.models.GPT(vocab_size=11, block_size=8, n_layer=1, n_head=1, n_embd=8, rngs=nnx.Rngs(0))
    assert [compute_precision("auto", gpt, p) for p in ("cpu", "gpu", "tpu")] == ["fp32", "bf16", "bf16"]
    assert [compute_precision("auto", model(), p) for p in ("cpu", "gpu")] == ["fp32", "fp32"]
    assert compute_precision("fp32", gpt, "gpu") == "fp32" and compute_precision("bf16", model(), "cpu") == "bf16"
    # on this CPU, auto trains a GPT in float32: the same history as fp32 asked for
    corpus = jl.datasets.text("abcdefghij" * 40, block_size=8)
    runs = [jl.fit(jl.models.GPT(vocab_size=corpus.vocab_size, block_size=8, n_layer=1, n_head=1, n_embd=8,
                                 rngs=nnx.Rngs(0)), corpus, steps=6, batch_size=4, precision=p, display="none")
            for p in ("auto", "fp32")]
    assert runs[0].history["loss"] == runs[1].history["loss"]
