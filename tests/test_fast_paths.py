"""The rewrites that make every model faster on CPU compute the same values: 2-D matmuls (`flat_matmuls`) and the
4-D einsum attention (`models.attention`)."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from jupyter_llm.models.attention import dot_product_attention
from jupyter_llm.models.gpt import GPT
from jupyter_llm.train.flat_matmuls import flat_matmuls


def equations(fn, *args):
    """Every equation in the jaxpr of `fn`, nested calls included."""
    found = []

    def walk(jaxpr):
        for eqn in jaxpr.eqns:
            found.append(eqn)
            for p in eqn.params.values():
                for j in p if isinstance(p, (tuple, list)) else (p,):
                    inner = getattr(j, "jaxpr", j)
                    if hasattr(inner, "eqns"):
                        walk(inner)

    walk(jax.make_jaxpr(fn)(*args).jaxpr)
    return found


def dots(fn, *args):
    """(lhs rank, has batch dims) of every dot_general in the jaxpr of `fn`, nested calls included."""
    return [(eqn.invars[0].aval.ndim, bool(eqn.params["dimension_numbers"][1][0]))
            for eqn in equations(fn, *args) if eqn.primitive.name == "dot_general"]


def primitives(fn, *args):
    """Names of every primitive in the jaxpr of `fn`, nested calls included."""
    return [eqn.primitive.name for eqn in equations(fn, *args)]


def gpt_loss(forward):
    def loss(params, rest, x, y):
        return optax.softmax_cross_entropy_with_integer_labels(forward(params, rest, x), y).mean()
    return loss


@pytest.mark.parametrize("batch", [3, 16])  # 48 rows: plain 2-D dots; 256 rows: tall weight gradients reoriented
def test_flat_matmuls_gives_the_same_loss_and_gradients_as_the_model(batch):
    model = GPT(vocab_size=13, block_size=16, n_layer=2, n_head=2, n_embd=16, rngs=nnx.Rngs(0))
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    x = jnp.asarray(np.random.default_rng(0).integers(0, 13, (batch, 16)), jnp.int32)
    y = jnp.roll(x, -1, axis=1)

    def forward(params, rest, x):
        return nnx.merge(graphdef, params, rest)(x)

    plain = jax.jit(jax.value_and_grad(gpt_loss(forward)))(params, rest, x, y)
    flat = jax.jit(jax.value_and_grad(gpt_loss(flat_matmuls(forward))))(params, rest, x, y)
    np.testing.assert_allclose(flat[0], plain[0], rtol=1e-6)
    for a, b in zip(jax.tree.leaves(flat[1]), jax.tree.leaves(plain[1]), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-7)
    # the point of the rewrite: no matmul of a stacked (>2-D) operand is left, forward or backward, except
    # attention's batched einsums
    grad_fn = jax.grad(gpt_loss(flat_matmuls(forward)))
    assert all(rank <= 2 or batched for rank, batched in dots(grad_fn, params, rest, x, y))
    assert any(rank == 3 and not batched for rank, batched in dots(jax.grad(gpt_loss(forward)), params, rest, x, y))
    # tall weight gradients, computed wide and transposed at 256 rows: the MLPs' (64, 16) down-projections and
    # the tied output layer (`attend` multiplies by the (16, 13) transposed embedding)
    barriers = primitives(grad_fn, params, rest, x, y).count("optimization_barrier")
    assert barriers == (3 if batch * 16 >= 256 else 0)


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
def test_reoriented_weight_gradients_equal_the_plain_ones(dtype):
    """Both weight layouts, (in, out) as in a Linear and (out, in) as in a tied embedding's `attend`, tall and
    wide, at enough rows to be reoriented: values and gradients as without the rewrite."""
    rng = np.random.default_rng(3)
    x = jnp.asarray(rng.standard_normal((4, 80, 48)), dtype)
    weights = {"tall": jnp.asarray(rng.standard_normal((48, 16)) / 7, dtype),  # (in, out), in > out
               "wide": jnp.asarray(rng.standard_normal((48, 96)) / 7, dtype),
               "tied": jnp.asarray(rng.standard_normal((96, 48)) / 7, dtype)}  # (out, in), contracted on in

    def fn(x, w):
        h = jnp.tanh(x @ w["wide"]) @ w["tied"]  # (4, 80, 48)
        return jnp.sum(jnp.tanh(h @ w["tall"]).astype(jnp.float32) ** 2) + jnp.sum(
            jnp.einsum("btc,vc->btv", x, w["tied"]).astype(jnp.float32) ** 2) / 100

    want = jax.jit(jax.value_and_grad(fn, argnums=(0, 1)))(x, weights)
    got = jax.jit(jax.value_and_grad(flat_matmuls(fn), argnums=(0, 1)))(x, weights)
    assert primitives(jax.grad(flat_matmuls(fn), argnums=1), x, weights).count("optimization_barrier") == 2
    tol = 1e-5 if dtype == jnp.float32 else 3e-2
    for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want), strict=True):
        assert a.dtype == b.dtype and a.shape == b.shape
        np.testing.assert_allclose(np.asarray(a, np.float32), np.asarray(b, np.float32), rtol=tol, atol=tol)


def test_flat_matmuls_keeps_pytrees_control_flow_and_custom_derivatives():
    w = jnp.arange(12.0).reshape(4, 3) / 10

    @jax.custom_vjp
    def clipped_grad(x):  # a custom VJP, as some user layers have
        return x

    clipped_grad.defvjp(lambda x: (x, None), lambda _, g: (jnp.clip(g, -1.0, 1.0),))

    def fn(inputs, w):
        x = inputs["x"]
        h = jax.nn.relu(x @ w)  # custom_jvp inside, left as it is
        scanned = jax.lax.scan(lambda c, xi: (c + jnp.sum(xi @ w), None), 0.0, x)[0]  # a matmul in a scan body
        remat = jax.checkpoint(lambda x: jnp.tanh(x @ w))(x)  # rematerialised
        return {"h": h + remat, "e": jnp.einsum("btc,cd->btd", clipped_grad(x), w), "s": scanned}, [jnp.tanh(x).sum()]

    inputs = {"x": jnp.linspace(-1, 1, 2 * 5 * 4).reshape(2, 5, 4)}
    want, got = fn(inputs, w), jax.jit(flat_matmuls(fn))(inputs, w)
    assert jax.tree.structure(got) == jax.tree.structure(want)
    for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)
    def total(fn):
        return lambda inputs, w: sum(jnp.sum(v) for v in jax.tree.leaves(fn(inputs, w)))

    for argnum in (0, 1):
        g_want = jax.grad(total(fn), argnums=argnum)(inputs, w)
        g_got = jax.grad(total(flat_matmuls(fn)), argnums=argnum)(inputs, w)
        for a, b in zip(jax.tree.leaves(g_got), jax.tree.leaves(g_want), strict=True):
            np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_flat_matmuls_rewrites_matmuls_inside_nested_jit():
    w = jnp.arange(12.0).reshape(4, 3) / 10
    x = jnp.linspace(-1, 1, 2 * 5 * 4).reshape(2, 5, 4)
    inner = jax.jit(lambda x, w: jnp.tanh(x @ w))  # e.g. a user's layer that jits its own call

    def fn(x, w):
        return inner(x, w) * 2

    assert (3, False) in dots(fn, x, w)  # the stacked matmul is there before the rewrite...
    assert all(rank <= 2 for rank, _ in dots(flat_matmuls(fn), x, w))  # ...and gone after it
    np.testing.assert_allclose(jax.jit(flat_matmuls(fn))(x, w), fn(x, w), rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("case", ["causal", "mask", "causal+mask", "fully masked row"])
@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
def test_cpu_attention_equals_jax_dot_product_attention(case, dtype):
    rng = np.random.default_rng(1)
    q, k, v = (jnp.asarray(rng.standard_normal((2, 7, 3, 8)), dtype) for _ in range(3))
    keep = jnp.asarray(rng.random((2, 1, 1, 7)) > 0.3)
    if case == "fully masked row":
        keep = keep.at[0].set(False)
    mask = None if case == "causal" else keep
    causal = case.startswith("causal")
    want = jax.nn.dot_product_attention(q, k, v, mask=mask, is_causal=causal)
    got = jax.jit(lambda q, k, v: dot_product_attention(q, k, v, mask, is_causal=causal))(q, k, v)
    assert got.dtype == want.dtype and got.shape == want.shape
    tol = 1e-5 if dtype == jnp.float32 else 2e-2
    np.testing.assert_allclose(np.asarray(got, np.float32), np.asarray(want, np.float32), rtol=tol, atol=tol)
    grads = [jax.grad(lambda q: f(q, k, v).astype(jnp.float32).sum())(q) for f in (
        lambda q, k, v: jax.nn.dot_product_attention(q, k, v, mask=mask, is_causal=causal),
        lambda q, k, v: dot_product_attention(q, k, v, mask, is_causal=causal))]
    np.testing.assert_allclose(np.asarray(grads[1], np.float32), np.asarray(grads[0], np.float32),
                               rtol=tol, atol=tol)


@pytest.mark.parametrize("t,blocks", [(64, 4), (40, 2), (32, 2), (24, 1), (7, 1)])
def test_causal_attention_in_query_blocks_equals_the_whole(t, blocks):
    """Causal self-attention on CPU skips the fully masked blocks: same values and gradients as JAX's."""
    rng = np.random.default_rng(t)
    q, k, v = (jnp.asarray(rng.standard_normal((2, t, 2, 8)), jnp.float32) for _ in range(3))
    # two einsums per block: the split happened where it should
    assert len(dots(lambda q, k, v: dot_product_attention(q, k, v, is_causal=True), q, k, v)) == 2 * blocks

    def loss(f):
        return lambda q, k, v: jnp.sum(jnp.sin(f(q, k, v)))

    want = jax.value_and_grad(loss(lambda q, k, v: jax.nn.dot_product_attention(q, k, v, is_causal=True)),
                              argnums=(0, 1, 2))(q, k, v)
    got = jax.jit(jax.value_and_grad(loss(lambda q, k, v: dot_product_attention(q, k, v, is_causal=True)),
                                     argnums=(0, 1, 2)))(q, k, v)
    for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)
    # a future key never changes an earlier output, across block boundaries too
    out = dot_product_attention(q, k, v, is_causal=True)
    changed = dot_product_attention(q, k.at[:, t - 1].add(5.0), v.at[:, t - 1].add(5.0), is_causal=True)
    np.testing.assert_array_equal(out[:, : t - 1], changed[:, : t - 1])


@pytest.mark.parametrize("platform,rewritten", [("cpu", True), ("gpu", False), ("tpu", False)])
def test_flat_matmuls_applies_only_where_it_was_measured_to_help(monkeypatch, platform, rewritten):
    """The 2-D matmul rewrite was measured on XLA:CPU; on other backends the step traces the model as it is."""

    from jupyter_llm.config import FitConfig
    from jupyter_llm.train import step
    from jupyter_llm.train.optim import make_optimizer
    from jupyter_llm.train.state import split_model
    from tests.helpers import mlp

    wrapped = []
    monkeypatch.setattr(step, "flat_matmuls", lambda f: wrapped.append(f) or f)
    g_train, _, _ = split_model(mlp(in_features=4, hidden=(8,), num_classes=3), train=True)
    g_eval, _, _ = split_model(mlp(in_features=4, hidden=(8,), num_classes=3), train=False)
    opt = make_optimizer(FitConfig(), 10)
    one = step.Step(g_train, g_eval, opt, lambda o, y: jnp.zeros(o.shape[0]), {}, platform=platform)
    assert bool(wrapped) == rewritten and callable(one)
