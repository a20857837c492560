"""CNN: the second model of every course: a few conv + pool stages, then a small dense head.

Two choices make it both accurate and quick on a CPU (measured with `benchmarks/cnn.py`):
- The head keeps *where* features are: the last feature map is average-pooled onto a fixed grid of cells (7x7 by
  default: a 28x28 image's map exactly, so there it is the classic convnet's flatten) and flattened, while still
  taking any image size. Global average pooling (`grid=1`, this model's old head) keeps only *which* features occur:
  after two small stages that is a bag of strokes, and the MNIST fit of the issue reached 0.81 held-out accuracy
  with it against the MLP's 0.95. On Fashion-MNIST (8,000 to train, 2,000 held out, 5 epochs, seed 0) a 3x3 grid
  reached 0.841, a 7x7 grid 0.873.
- Each 3x3 convolution is one matmul of the image's 3x3 patches (`conv3x3`), with `nnx.Conv`'s own weights. XLA:CPU
  runs a native convolution inside a loop about 15x slower than outside it (a train step at batch 32 on 28x28
  images: 183 against 12.6 ms of CPU time), and jl.fit runs several steps per dispatch in a loop; matmuls keep their
  speed there (9.6 ms for the same step shape with patch matmuls, in the loop or not). (A model with native
  convolutions is run one step per call on a CPU instead, `train/primitives.py`: it loses the loop's gains.)
- 2x2 max pooling is a reshape and a max. Flax's `max_pool` is XLA's reduce_window, whose gradient is a
  select-and-scatter that XLA:CPU runs slowly: in a train step at batch 32 on 28x28 images it took about a third of
  the time (with 'SAME' padding, as this model had, near half).
"""

from __future__ import annotations

import math
from typing import Callable, Sequence

import jax
import jax.numpy as jnp
from flax import nnx

from jupyter_llm.errors import ConfigError, ModelError
from jupyter_llm.models.activations import get_activation

_POOLS = ("max", "avg")


def _fan_in_normal(key, shape, dtype=jnp.float32):
    """LeCun-normal kernels (std 1/sqrt(fan_in)), drawn as a flat vector and reshaped. Same scale as Flax's
    default, but JAX compiles a 1-D random draw in a fraction of the seconds a 4-D one takes on CPU, which
    otherwise dominates the time to build the model."""
    fan_in = math.prod(shape[:-1])
    return (jax.random.normal(key, (math.prod(shape),), dtype) / math.sqrt(fan_in)).reshape(shape)


def conv3x3(x, kernel, bias):
    """A 'SAME' 3x3 convolution of (N, H, W, C) with an HWIO kernel, as one matmul of the zero-padded image's 3x3
    patches: the patch's pixels in the kernel's (row, column, channel) order, so `kernel` reshapes to the matrix."""
    n, h, w, c = x.shape
    padded = jnp.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
    patches = jnp.concatenate([padded[:, i:i + h, j:j + w] for i in range(3) for j in range(3)], axis=-1)
    out = patches.reshape(n * h * w, 9 * c) @ kernel.reshape(9 * c, -1) + bias
    return out.reshape(n, h, w, -1)


def pool2x2(x, kind: str = "max"):
    """2x2 pooling with stride 2 of (N, H, W, C) as a reshape and a reduction; an odd side is first extended by its
    last row or column, so it rounds up and even a 1x1 map survives any number of stages."""
    n, h, w, c = x.shape
    if h % 2 or w % 2:
        x = jnp.pad(x, ((0, 0), (0, h % 2), (0, w % 2), (0, 0)), mode="edge")
    x = x.reshape(n, x.shape[1] // 2, 2, x.shape[2] // 2, 2, c)
    return x.max(axis=(2, 4)) if kind == "max" else x.mean(axis=(2, 4))


def grid_pool(x, grid: int):
    """Average (N, H, W, C) onto grid x grid cells, flattened to (N, grid * grid * C). Cell i along a side covers
    rows floor(i H / grid) to ceil((i + 1) H / grid), so neighbouring cells overlap when the side does not divide."""
    n, h, w, c = x.shape
    if h % grid == 0 and w % grid == 0:
        cells = x.reshape(n, grid, h // grid, grid, w // grid, c).mean(axis=(2, 4))
        return cells.reshape(n, -1)

    def bounds(size):
        return [(i * size // grid, -(-(i + 1) * size // grid)) for i in range(grid)]

    cells = [x[:, r0:r1, c0:c1].mean(axis=(1, 2)) for r0, r1 in bounds(h) for c0, c1 in bounds(w)]
    return jnp.concatenate(cells, axis=-1)


class CNN(nnx.Module):
    """Small image classifier on NHWC images.

    >>> model = CNN(in_channels=1, num_classes=10, rngs=nnx.Rngs(0))
    >>> model(jnp.zeros((2, 28, 28, 1))).shape
    (2, 10)

    Each entry of `channels` is a 3x3 convolution ('SAME' padding), the activation and a 2x2 pooling that halves
    the image. The last map is then average-pooled onto `grid` x `grid` cells and flattened, so the head knows where
    each feature was and the same model accepts any image size (8x8 digits and 28x28 MNIST alike); `grid=1` is
    global average pooling. A dense hidden layer of `hidden` units (0: none), dropout (while training) and a dense
    output give the logits. Grey-scale images may come as (N, H, W): a channel axis is added.
    """

    def __init__(
        self,
        in_channels: int = 1,
        num_classes: int = 10,
        channels: Sequence[int] = (32, 64),
        hidden: int = 128,
        activation: str | Callable = "relu",
        dropout: float = 0.0,
        *,
        pool: str = "max",
        grid: int = 7,
        rngs: nnx.Rngs,
    ):
        if pool not in _POOLS:
            raise ConfigError(f"Unknown pool {pool!r}; use one of {', '.join(_POOLS)}.")
        if isinstance(channels, int):
            channels = [channels]
        if not channels:
            raise ConfigError("CNN needs at least one conv stage: give channels=(32, 64), say.")
        if int(grid) < 1:
            raise ConfigError(f"CNN grid is the side of the pooled feature grid, at least 1; got {grid}.")
        self.in_channels = int(in_channels)
        self.num_classes = int(num_classes)
        self.pool = pool
        self.grid = int(grid)
        self.act = get_activation(activation)
        sizes = [self.in_channels, *channels]
        init = dict(kernel_init=_fan_in_normal, rngs=rngs)
        self.convs = nnx.List([nnx.Conv(a, b, (3, 3), padding="SAME", **init) for a, b in zip(sizes[:-1], sizes[1:])])
        features = sizes[-1] * self.grid * self.grid
        self.hidden = nnx.Linear(features, hidden, **init) if hidden else None
        self.dropout = nnx.Dropout(dropout, rngs=rngs) if dropout else None
        self.out = nnx.Linear(hidden or features, self.num_classes, **init)

    def __call__(self, x):
        x = jnp.asarray(x)
        if x.ndim == 3:
            x = x[..., None]
        if x.ndim != 4 or x.shape[-1] != self.in_channels:
            raise ModelError(
                f"CNN expects images shaped (N, H, W, {self.in_channels}) (or (N, H, W) for one channel), "
                f"got {tuple(x.shape)}; set in_channels to the number of colour channels."
            )
        if not jnp.issubdtype(x.dtype, jnp.floating):  # uint8 pixels, say
            x = x.astype(jnp.float32)
        for conv in self.convs:
            x = pool2x2(self.act(conv3x3(x, conv.kernel[...], conv.bias[...])), self.pool)
        x = grid_pool(x, self.grid)
        if self.hidden is not None:
            x = self.act(self.hidden(x))
        if self.dropout is not None:
            x = self.dropout(x)
        return self.out(x)
