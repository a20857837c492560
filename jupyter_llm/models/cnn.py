"""CNN: the second model of every course: a few conv + pool stages, then a small dense head."""

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


class CNN(nnx.Module):
    """Small image classifier on NHWC images.

    >>> model = CNN(in_channels=1, num_classes=10, rngs=nnx.Rngs(0))
    >>> model(jnp.zeros((2, 28, 28, 1))).shape
    (2, 10)

    Each entry of `channels` is a 3x3 convolution ('SAME' padding), the activation and a 2x2 pooling that halves
    the image. Global average pooling then reduces the image to one vector, so the same model accepts any image
    size (8x8 digits and 28x28 MNIST alike) and needs no input size up front. A dense hidden layer, dropout (while
    training) and a dense output give the logits. Grey-scale images may come as (N, H, W): a channel axis is added.
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
        rngs: nnx.Rngs,
    ):
        if pool not in _POOLS:
            raise ConfigError(f"Unknown pool {pool!r}; use one of {', '.join(_POOLS)}.")
        if isinstance(channels, int):
            channels = [channels]
        self.in_channels = int(in_channels)
        self.num_classes = int(num_classes)
        self.pool = pool
        self.act = get_activation(activation)
        sizes = [self.in_channels, *channels]
        init = dict(kernel_init=_fan_in_normal, rngs=rngs)
        self.convs = nnx.List([nnx.Conv(a, b, (3, 3), padding="SAME", **init) for a, b in zip(sizes[:-1], sizes[1:])])
        self.hidden = nnx.Linear(sizes[-1], hidden, **init)
        self.dropout = nnx.Dropout(dropout, rngs=rngs) if dropout else None
        self.out = nnx.Linear(hidden, self.num_classes, **init)

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
            x = self.act(conv(x))
            # 'SAME' pooling rounds odd sizes up, so even a 1x1 map survives any number of stages.
            if self.pool == "max":
                x = nnx.max_pool(x, (2, 2), strides=(2, 2), padding="SAME")
            else:
                x = nnx.avg_pool(x, (2, 2), strides=(2, 2), padding="SAME", count_include_pad=False)
        x = x.mean(axis=(1, 2))  # global average pooling: any image size works
        x = self.act(self.hidden(x))
        if self.dropout is not None:
            x = self.dropout(x)
        return self.out(x)
