"""Workload 2: the mission's MLP (784-128-10 relu, softmax cross-entropy, Adam 1e-3) on MNIST-shaped data.

Seconds per epoch, compile excluded (epochs 2..n are timed), at batch 32 and 256, for
  (a) `jl.fit(..., display="none")`, per-epoch times from the `EpochEnd` events;
  (b) a minimal hand-written JAX loop: a jitted step with donated state over host-shuffled batches;
  (c) the best hand-written JAX loop: one `lax.scan` over the whole epoch, batches gathered on the device;
  (d) Keras 3 `model.fit` on the JAX backend (skipped when keras is not installed).
Data: 60,000 x 784 float32 standard-normal inputs, random labels 0..9 (no download; the speed is the same);
`--mnist` uses the real MNIST from `jl.datasets.load("mnist")` instead.
Each repeat runs the variants back to back; the ratios pair the figures of one repeat.
"""

from __future__ import annotations

import os

os.environ.setdefault("KERAS_BACKEND", "jax")  # before anything imports keras

import functools
import itertools
import statistics

import common
import numpy as np

IN, HIDDEN, CLASSES, LR = 784, 128, 10, 1e-3


def make_data(n: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, IN), dtype=np.float32)
    y = rng.integers(0, CLASSES, n).astype(np.int32)
    return x, y


def load_mnist():
    """The real MNIST through jl.datasets (downloaded once into its cache), flattened to float32 (60000, 784)."""
    import jupyter_llm as jl

    x, y = jl.datasets.load("mnist").train
    return np.asarray(x, np.float32).reshape(len(x), -1), np.asarray(y, np.int32)


def jl_model(seed: int = 0):
    from flax import nnx

    import jupyter_llm as jl

    return jl.models.MLP(in_features=IN, hidden=[HIDDEN], num_classes=CLASSES, activation="relu", rngs=nnx.Rngs(seed))


class EpochClock:
    """A sink that keeps what the timing needs from jl.fit's events."""

    def __init__(self):
        self.ends: list[float] = []  # EpochEnd.elapsed (seconds of training since the loop started)
        self.compile = None  # the CompileEnd event

    def on(self, event) -> None:
        from jupyter_llm import events as ev

        if isinstance(event, ev.EpochEnd):
            self.ends.append(event.elapsed)
        elif isinstance(event, ev.CompileEnd):
            self.compile = event

    def epoch_seconds(self) -> list[float]:
        """Durations of epochs 2..n (epoch 1 may include warm-up work)."""
        return [b - a for a, b in itertools.pairwise(self.ends)]


def jl_fit_epochs(x, y, batch_size: int, epochs: int, sinks=(), display: str = "none") -> list[float]:
    """(a) per-epoch seconds of jl.fit, epochs 2..n."""
    import jupyter_llm as jl

    clock = EpochClock()
    jl.fit(jl_model(), (x, y), epochs=epochs, batch_size=batch_size, lr=LR, display=display, sinks=[clock, *sinks])
    return clock.epoch_seconds()


# -- the hand-written JAX reference ------------------------------------------------------------------------------
def init_params(seed: int = 0):
    import jax
    import jax.numpy as jnp

    k1, k2 = jax.random.split(jax.random.key(seed))
    init = jax.nn.initializers.lecun_normal()  # nnx.Linear's default kernel init
    return {"w1": init(k1, (IN, HIDDEN)), "b1": jnp.zeros(HIDDEN), "w2": init(k2, (HIDDEN, CLASSES)),
            "b2": jnp.zeros(CLASSES)}


def loss_fn(p, x, y):
    import jax
    import optax

    logits = jax.nn.relu(x @ p["w1"] + p["b1"]) @ p["w2"] + p["b2"]
    return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()


def sgd_update(tx, p, o, x, y):
    import jax
    import optax

    loss, g = jax.value_and_grad(loss_fn)(p, x, y)
    updates, o = tx.update(g, o, p)
    return optax.apply_updates(p, updates), o, loss


def hand_jit_epochs(x, y, batch_size: int, epochs: int, seed: int = 0) -> list[float]:
    """(b) the loop most people write first: jitted step, donated state, host-side shuffle and batch slicing.
    The last partial batch is kept (one extra compile, in epoch 1)."""
    import jax
    import optax

    tx = optax.adam(LR)
    p = init_params(seed)
    o = tx.init(p)
    step = jax.jit(functools.partial(sgd_update, tx), donate_argnums=(0, 1))
    rng = np.random.default_rng(seed)
    n, ends, t0 = len(x), [], common.clock()
    for _ in range(epochs):
        perm = rng.permutation(n)
        for i in range(0, n, batch_size):
            idx = perm[i:i + batch_size]
            p, o, loss = step(p, o, x[idx], y[idx])
        jax.block_until_ready((p, loss))
        ends.append(common.clock() - t0)
    return [b - a for a, b in itertools.pairwise(ends)]


def hand_scan_epochs(x, y, batch_size: int, epochs: int, seed: int = 0) -> list[float]:
    """(c) the fastest plain-JAX loop: data on the device once, each epoch one compiled `lax.scan` over a device-side
    permutation, batches gathered inside. It drops the last partial batch (slightly less work than the others)."""
    import jax
    import optax

    tx = optax.adam(LR)
    p = init_params(seed)
    o = tx.init(p)
    n = len(x)
    steps = n // batch_size
    xd, yd = jax.device_put(x), jax.device_put(y)

    @functools.partial(jax.jit, donate_argnums=(0, 1))
    def epoch(p, o, xd, yd, key):
        idx = jax.random.permutation(key, n)[: steps * batch_size].reshape(steps, batch_size)

        def body(carry, i):
            p, o, loss = sgd_update(tx, *carry, xd[i], yd[i])
            return (p, o), loss

        (p, o), losses = jax.lax.scan(body, (p, o), idx)
        return p, o, losses.mean()

    key, ends, t0 = jax.random.key(seed), [], common.clock()
    for e in range(epochs):
        p, o, loss = epoch(p, o, xd, yd, jax.random.fold_in(key, e))
        jax.block_until_ready((p, loss))
        ends.append(common.clock() - t0)
    return [b - a for a, b in itertools.pairwise(ends)]


def keras_epochs(x, y, batch_size: int, epochs: int, seed: int = 0) -> list[float]:
    """(d) Keras 3 on the JAX backend: the same layers, Adam 1e-3, loss and accuracy as jl.fit reports."""
    import keras

    keras.utils.set_random_seed(seed)
    model = keras.Sequential([keras.Input((IN,)), keras.layers.Dense(HIDDEN, activation="relu"),
                              keras.layers.Dense(CLASSES)])
    model.compile(optimizer=keras.optimizers.Adam(LR),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True), metrics=["accuracy"])
    ends: list[float] = []

    class Clock(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            ends.append(common.clock())

    model.fit(x, y, batch_size=batch_size, epochs=epochs, verbose=0, shuffle=True, callbacks=[Clock()])
    return [b - a for a, b in itertools.pairwise(ends)]


VARIANTS = {"jl.fit": jl_fit_epochs, "hand jit": hand_jit_epochs, "hand scan": hand_scan_epochs,
            "Keras": keras_epochs}
TARGETS = {  # jl.fit time / reference time, per batch size
    ("Keras", 32): common.Target("ratio", "<=", 0.5),  # at least 2x faster than Keras
    ("Keras", 256): common.Target("ratio", "<=", 1.0),  # no slower
    ("hand scan", 32): common.Target("ratio", "<=", 1.0),  # as fast as the best hand-written loop
    ("hand scan", 256): common.Target("ratio", "<=", 1.0),
}


def main(argv=None):
    args = common.parse_args(__doc__.splitlines()[0], argv, extra=lambda p: p.add_argument(
        "--mnist", action="store_true", help="use the real MNIST (jl.datasets, may download) instead of random data"))
    epochs = common.pick(args, 2, 3, 4)  # epochs 2..n are timed
    x, y = load_mnist() if args.mnist else make_data(common.pick(args, 2048, 60_000, 60_000))
    n = len(x)
    variants = dict(VARIANTS)
    if not common.have("keras"):
        common.log("keras is not installed: skipping the Keras reference (pip install keras==3.15.1)")
        variants.pop("Keras")
    rows = []
    for bs in common.pick(args, (32,), (32, 256), (32, 256)):
        seconds = {name: [] for name in variants}
        for r in range(args.repeats):
            for name in common.rotated(variants, r):
                fn = variants[name]
                common.log(f"mlp: batch {bs}, repeat {r + 1}/{args.repeats}, {name}")
                seconds[name].append(statistics.mean(fn(x, y, bs, epochs)))
        ours = seconds["jl.fit"]
        for name in variants:
            if name == "jl.fit":
                continue
            rows.append(common.Row(f"MLP b{bs}: jl.fit vs {name}", "s/epoch", ours, seconds[name], name,
                                   target=TARGETS.get((name, bs)),
                                   note=f"{n:,} examples; epochs 2..{epochs} timed"))
        if "Keras" not in variants:
            rows.append(common.Row(f"MLP b{bs}: jl.fit vs Keras", "s/epoch", ours, None,
                                   "Keras not installed", target=TARGETS[("Keras", bs)]))
    rows.append(shuffle_row(n, args))
    common.report(rows, args, "MLP 784-128-10 on MNIST-shaped data")
    return rows


def shuffle_row(n: int, args) -> common.Row:
    """The epoch's shuffle alone: jupyter_llm's sortless permutation (data/shuffle.py) against
    `jax.random.permutation`, which the hand scan uses; ms for one permutation of n indices, best of 5 batches."""
    import jax

    from jupyter_llm.data.shuffle import permutation

    key = jax.random.key(0)
    fns = {"ours": jax.jit(lambda k: permutation(k, n)), "jax": jax.jit(lambda k: jax.random.permutation(k, n))}
    ms = {name: [] for name in fns}
    for r in range(args.repeats):
        for name in common.rotated(fns, r):
            rate = common.best_rate(lambda f=fns[name]: jax.block_until_ready(f(key)), 1.0, min_seconds=0.1)
            ms[name].append(1000 / rate)
    return common.Row(f"epoch shuffle ({n:,} indices): jupyter_llm vs jax.random.permutation", "ms", ms["ours"],
                      ms["jax"], "jax.random.permutation", note="the hand scan's shuffle; ours is a keyed bijection, "
                      "no sort")


if __name__ == "__main__":
    main()
