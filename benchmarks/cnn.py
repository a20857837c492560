"""Workload: the built-in CNN against the classic small convnet a user writes in NNX, both trained with jl.fit.

The reference is the convnet of the Keras MNIST example, written here in ten lines of Flax NNX (`Classic`): conv 32
-> max pool -> conv 64 -> max pool -> flatten -> dropout 0.5 -> dense, with Flax's own layers and pooling. Each
repeat fits, back to back and in rotated order, `jl.models.CNN(...)` with its defaults, `Classic` and the MLP of the
first lesson (784-128-10), all with the settings of the issue: 8,000 training examples, 2,000 held out
(`val_split=0.2`), 5 epochs, batch 32, Adam 1e-3, seed = the repeat's number.
Classic is fitted twice: as jl.fit runs it by default (on a CPU one step per compiled call, since its forward pass
has native convolutions, which XLA:CPU runs several times slower inside a loop: jax-ml/jax#12868) and at 8 steps per
call (`steps_per_dispatch=8`, what a loop of steps costs it; before 2026-12-06 jl.fit's default gave it more).
Rows: seconds per epoch (epochs 2..n: compilation excluded) of CNN against Classic, and of Classic's default against
8 steps per call; held-out accuracy after the last epoch of CNN against the MLP and against Classic.
The data: `--idx DIR` reads MNIST-format files
(train-images-idx3-ubyte.gz and train-labels-idx1-ubyte.gz: MNIST, or Fashion-MNIST as Debian's
dataset-fashion-mnist package installs them in /usr/share/datasets/fashion-mnist), `--mnist` the real MNIST through
`jl.datasets` (downloaded once), and otherwise random 28x28 images: the same speed, and accuracies that mean nothing
(the accuracy rows then use the embedded 8x8 digits instead, 10 epochs).
"""

from __future__ import annotations

import itertools
import os
import statistics

import common
import numpy as np

N, EPOCHS, LR, BATCH = 10_000, 5, 1e-3, 32


def classic(rngs, channels: int = 1, classes: int = 10, size: int = 28):
    """The reference convnet, as a user writes it."""
    from flax import nnx

    class Classic(nnx.Module):
        def __init__(self):
            side = ((size - 2) // 2 - 2) // 2
            self.conv1 = nnx.Conv(channels, 32, (3, 3), padding="VALID", rngs=rngs)
            self.conv2 = nnx.Conv(32, 64, (3, 3), padding="VALID", rngs=rngs)
            self.dropout = nnx.Dropout(0.5, rngs=rngs)
            self.out = nnx.Linear(side * side * 64, classes, rngs=rngs)

        def __call__(self, x):
            x = nnx.max_pool(nnx.relu(self.conv1(x)), (2, 2), strides=(2, 2))
            x = nnx.max_pool(nnx.relu(self.conv2(x)), (2, 2), strides=(2, 2))
            return self.out(self.dropout(x.reshape(x.shape[0], -1)))

    return Classic()


def models(seed: int, shape) -> dict:
    from flax import nnx

    import jupyter_llm as jl

    h, w, c = shape
    return {"CNN": lambda: jl.models.CNN(in_channels=c, num_classes=10, rngs=nnx.Rngs(seed)),
            "Classic": lambda: classic(nnx.Rngs(seed), c, 10, h),
            "Classic, 8 steps per call": lambda: classic(nnx.Rngs(seed), c, 10, h),
            "MLP": lambda: jl.models.MLP(in_features=h * w * c, hidden=[128], num_classes=10, rngs=nnx.Rngs(seed))}


def load(args):
    """(x (N, 28, 28, 1) float32 in [0, 1], y int32, what it is, whether its accuracies mean anything)."""
    n = common.pick(args, 512, N, N)
    if args.idx:
        from jupyter_llm.data.builtin import read_idx

        x = read_idx(os.path.join(args.idx, "train-images-idx3-ubyte.gz"), ndim=3)[:n]
        y = read_idx(os.path.join(args.idx, "train-labels-idx1-ubyte.gz"), ndim=1)[:n]
        return (x.astype(np.float32) / 255.0)[..., None], y.astype(np.int32), f"{args.idx} (first {n:,})", True
    if args.mnist:
        import jupyter_llm as jl

        x, y = jl.datasets.load("mnist").train
        return np.asarray(x[:n], np.float32), np.asarray(y[:n], np.int32), f"MNIST (first {n:,})", True
    rng = np.random.default_rng(0)
    return (rng.random((n, 28, 28, 1), dtype=np.float32), rng.integers(0, 10, n).astype(np.int32),
            f"random 28x28 images ({n:,})", False)


def fit(make, data, epochs: int, seed: int, steps_per_dispatch=None):
    """(seconds per epoch for epochs 2..n, held-out accuracy after the last epoch)."""
    import jupyter_llm as jl
    from jupyter_llm import events as ev

    ends = []

    class Clock:
        def on(self, event):
            if isinstance(event, ev.EpochEnd):
                ends.append(event.elapsed)

    run = jl.fit(make(), data, epochs=epochs, batch_size=BATCH, lr=LR, val_split=0.2, seed=seed, display="none",
                 sinks=[Clock()], steps_per_dispatch=steps_per_dispatch)
    return [b - a for a, b in itertools.pairwise(ends)], run.history["val_accuracy"][-1]


def main(argv=None):
    def extra(p):
        p.add_argument("--idx", default=None, metavar="DIR", help="MNIST-format IDX files to use (see the docstring)")
        p.add_argument("--mnist", action="store_true", help="the real MNIST through jl.datasets (may download)")

    args = common.parse_args(__doc__.splitlines()[0], argv, extra=extra)
    epochs = common.pick(args, 2, 3, EPOCHS)
    x, y, what, real = load(args)
    seconds = {name: [] for name in ("CNN", "Classic", "Classic, 8 steps per call", "MLP")}
    accuracy = {name: [] for name in seconds}
    for r in range(args.repeats):
        makers = models(r, x.shape[1:])
        for name in common.rotated(makers, r):
            common.log(f"cnn: repeat {r + 1}/{args.repeats}, {name}")
            s, acc = fit(makers[name], (x, y), epochs, seed=r, steps_per_dispatch=8 if "8 steps" in name else None)
            seconds[name].append(statistics.mean(s))
            accuracy[name].append(acc)
    note = f"{what}; 80/20 split, {epochs} epochs, batch {BATCH}, Adam {LR:g}; epochs 2..{epochs} timed"
    rows = [common.Row("CNN b32: jl.models.CNN vs classic NNX convnet, both jl.fit", "s/epoch", seconds["CNN"],
                       seconds["Classic"], "classic convnet", target=common.Target("ratio", "<=", 1.0), note=note),
            common.Row("classic NNX convnet b32: jl.fit's default vs 8 steps per call", "s/epoch", seconds["Classic"],
                       seconds["Classic, 8 steps per call"], "steps_per_dispatch=8",
                       note=f"{note}; the default is one step per call on a CPU for a model with convolutions")]
    if real:
        acc_note = f"held-out accuracy; {what}; {epochs} epochs"
    else:  # random images: the accuracies say nothing, so they come from the embedded digits
        import jupyter_llm as jl

        digits = jl.datasets.load("digits").train
        digit_epochs = common.pick(args, 2, 10, 10)
        accuracy = {name: [] for name in seconds}
        for r in range(args.repeats):
            makers = models(r, (8, 8, 1))
            for name in ("CNN", "MLP"):
                common.log(f"cnn: digits, repeat {r + 1}/{args.repeats}, {name}")
                accuracy[name].append(fit(makers[name], digits, digit_epochs, seed=r)[1])
        acc_note = f"held-out accuracy on the embedded 8x8 digits, {digit_epochs} epochs"
    rows.append(common.Row("CNN held-out accuracy: jl.models.CNN vs MLP", "accuracy", accuracy["CNN"],
                           accuracy["MLP"], "MLP 784-128-10" if real else "MLP 64-128-10",
                           target=common.Target("ratio", ">=", 1.02), note=acc_note))
    if real:
        rows.append(common.Row("CNN held-out accuracy: jl.models.CNN vs classic NNX convnet", "accuracy",
                               accuracy["CNN"], accuracy["Classic"], "classic convnet", note=acc_note))
    common.report(rows, args, "The built-in CNN against a hand-written classic convnet")
    return rows


if __name__ == "__main__":
    main()
