"""A model with native convolutions runs one step per compiled call on a CPU: XLA:CPU runs a convolution inside a
loop several times slower than in a straight-line program (jax-ml/jax#12868), and jl.fit's calls loop over steps.
`benchmarks/cnn.py` measures the speed; these tests pin the choice and that a fit still learns under it."""

import doctest

import jax
import numpy as np
import pytest
from flax import nnx

import jupyter_llm as jl
from jupyter_llm.config import FitConfig
from jupyter_llm.data.coerce import as_dataset
from jupyter_llm.fitting.prepare import PreparedFit
from jupyter_llm.train import primitives


class TinyConvNet(nnx.Module):
    """The convnet a user writes: nnx.Conv, max pooling, a dense head."""

    def __init__(self, rngs: nnx.Rngs):
        self.conv = nnx.Conv(1, 8, (3, 3), padding="SAME", rngs=rngs)
        self.head = nnx.Linear(4 * 4 * 8, 10, rngs=rngs)

    def __call__(self, x):
        x = nnx.max_pool(nnx.relu(self.conv(x)), (2, 2), strides=(2, 2))
        return self.head(x.reshape(x.shape[0], -1))


@pytest.fixture
def images(digits):
    x, y = digits.train
    return x[:512].reshape(-1, 8, 8, 1), y[:512]


def prepared(model, data, **options):
    config = FitConfig(epochs=1, batch_size=16, display="none", **options)
    return PreparedFit(model, as_dataset(data), config)


def test_the_primitive_walker_reaches_into_nested_programs():
    assert doctest.testmod(primitives).failed == 0
    closed = jax.make_jaxpr(lambda x: jax.lax.cond(x.sum() > 0, lambda v: jax.lax.conv(v, v, (1, 1), "SAME"),
                                                   lambda v: v, x))(np.ones((1, 1, 3, 3), np.float32))
    assert primitives.CONVOLUTION in primitives.primitive_names(closed)


def test_a_convnet_runs_one_step_per_call_on_cpu_and_the_rest_keep_their_count(images, digits):
    conv = prepared(TinyConvNet(nnx.Rngs(0)), images)
    assert primitives.CONVOLUTION in conv.primitives
    assert conv.steps_per_dispatch == 1 and conv.dispatches_per_epoch == 32
    # the built-in CNN computes its convolutions as patch matmuls: it keeps several steps per call
    builtin = prepared(jl.models.CNN(in_channels=1, num_classes=10, rngs=nnx.Rngs(0)), images)
    assert primitives.CONVOLUTION not in builtin.primitives and builtin.steps_per_dispatch > 1
    mlp = prepared(jl.models.MLP(in_features=64, hidden=[32], num_classes=10, rngs=nnx.Rngs(0)), digits.train)
    assert mlp.steps_per_dispatch > 1
    # a count the user gives is kept
    assert prepared(TinyConvNet(nnx.Rngs(0)), images, steps_per_dispatch=8).steps_per_dispatch == 8


def test_a_convnet_learns_at_one_step_per_call(images):
    x, y = images
    run = jl.fit(TinyConvNet(nnx.Rngs(0)), (x, y), epochs=4, batch_size=16, lr=3e-3, val_split=0.2, display="none")
    assert run.history["val_accuracy"][-1] > 0.8 and run.history["loss"][-1] < run.history["loss"][0] / 2
