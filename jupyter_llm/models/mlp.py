"""MLP: the first model of every course — flatten, hidden Dense layers with an activation, Dense logits."""

from __future__ import annotations

from typing import Callable, Sequence

import jax.numpy as jnp
from flax import nnx

from jupyter_llm.models.activations import get_activation


class MLP(nnx.Module):
    """Multi-layer perceptron on flattened inputs.

    >>> model = MLP(in_features=64, hidden=[128], num_classes=10, rngs=nnx.Rngs(0))
    >>> model(jnp.zeros((2, 8, 8, 1))).shape
    (2, 10)

    `num_classes` is the width of the output (logits for classification, 1 for a scalar regression or a binary
    logit). `dropout` is applied after each hidden activation while training.
    """

    def __init__(
        self,
        in_features: int,
        hidden: Sequence[int] = (128,),
        num_classes: int = 10,
        activation: str | Callable = "relu",
        dropout: float = 0.0,
        *,
        rngs: nnx.Rngs,
    ):
        if isinstance(hidden, int):
            hidden = [hidden]
        self.in_features = int(in_features)
        self.num_classes = int(num_classes)
        self.activation_name = activation if isinstance(activation, str) else getattr(activation, "__name__", "fn")
        self.act = get_activation(activation)
        sizes = [self.in_features, *hidden]
        self.hidden = nnx.List([nnx.Linear(a, b, rngs=rngs) for a, b in zip(sizes[:-1], sizes[1:])])
        self.dropout = nnx.Dropout(dropout, rngs=rngs) if dropout else None
        self.out = nnx.Linear(sizes[-1], self.num_classes, rngs=rngs)

    def __call__(self, x):
        x = jnp.reshape(x, (x.shape[0], -1))
        for layer in self.hidden:
            x = self.act(layer(x))
            if self.dropout is not None:
                x = self.dropout(x)
        return self.out(x)
