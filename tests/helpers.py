"""Small shared helpers for tests."""

import os
import signal

import jax
import numpy as np
from flax import nnx


def mlp(in_features=64, hidden=(32,), num_classes=10, seed=0, **kw):
    from jupyter_llm.models import MLP

    return MLP(in_features=in_features, hidden=list(hidden), num_classes=num_classes, rngs=nnx.Rngs(seed), **kw)


def params_of(model):
    return [np.asarray(a) for a in jax.tree.leaves(nnx.state(model, nnx.Param))]


def same_params(a, b) -> bool:
    return all(np.array_equal(x, y) for x, y in zip(params_of(a), params_of(b)))


class InterruptAt:
    """A sink that sends SIGINT to this process at the n-th Progress event: the notebook's stop button."""

    def __init__(self, n):
        self.n = n

    def on(self, event):
        from jupyter_llm import events as ev

        if isinstance(event, ev.Progress):
            self.n -= 1
            if self.n == 0:
                os.kill(os.getpid(), signal.SIGINT)


class Recorder:
    """A sink that keeps every event, for tests that look at what a fit emitted."""

    def __init__(self):
        self.events = []

    def on(self, event):
        self.events.append(event)

    def of(self, kind):
        return [e for e in self.events if isinstance(e, kind)]
