"""Run a function's matmuls of stacked activations as 2-D matmuls: a rewrite of its traced program.

`x @ W` with `x` of shape (B, T, C) is one `dot_general` with two free dimensions on `x`. Differentiated, its weight
gradient contracts over both B and T, which XLA:CPU lowers with a transposed copy of the activations fused into
whatever produced them (GELU's gradient, for one). The same product of `x` reshaped to (B*T, C) — free for a
contiguous array — differentiates into dots with one contracting dimension, which the backend runs without that
copy. On the char GPT (2 CPU cores) a training step went from 70 to 52 ms.

On CPU the weight gradient is also computed in the orientation XLA:CPU's matmul runs fastest: `x^T dy` of shape
(in, out) with in > out (an MLP's down-projection, 512 -> 128) ran at 57-72 GFLOP/s on 2 cores, the same product
computed as `(dy^T x)^T`, a wide (out, in) result transposed, at 90-94; XLA folds a plain transpose back into the
dot, so an optimization barrier keeps it. The char GPT step takes 0.95-0.97 of its time (three interleaved A/Bs).

The rewrite works on the jaxpr of the forward pass, before it is differentiated, so every model benefits:
`nnx.Linear`, `nnx.Embed.attend` and a plain `x @ w` alike (the GPT's gradient is tested to hold no stacked matmul).
Matmuls with batch dimensions (attention's einsums) and matmuls inside custom-derivative functions, control flow
(`scan`, `cond`) or other call primitives are left as they are; nested `jax.jit` calls are inlined and rewritten.
"""

from __future__ import annotations

import math
from typing import Callable

import jax
from jax.extend import core as jcore

_INLINED = ("jit", "pjit")  # nested jit calls (the primitive's name now, and before JAX 0.7): rewritten in place


def flat_matmuls(fun: Callable) -> Callable:
    """`fun` with every eligible matmul of a >2-D left operand done on its 2-D reshape: the same products (the
    last bits may round differently)."""

    def rewritten(*args):
        closed, out_shape = jax.make_jaxpr(fun, return_shape=True)(*args)
        out = _eval(closed.jaxpr, closed.consts, jax.tree.leaves(args))
        return jax.tree.unflatten(jax.tree.structure(out_shape), out)

    return rewritten


def _eval(jaxpr, consts, args):
    env = {}

    def read(v):
        return v.val if isinstance(v, jcore.Literal) else env[v]

    env.update(zip(jaxpr.constvars, consts))
    env.update(zip(jaxpr.invars, args))
    for eqn in jaxpr.eqns:
        out = _apply(eqn, [read(v) for v in eqn.invars])
        if not eqn.primitive.multiple_results:
            out = [out]
        for v, val in zip(eqn.outvars, out):
            if not isinstance(v, jcore.DropVar):
                env[v] = val
    return [read(v) for v in jaxpr.outvars]


def _apply(eqn, invals):
    name = eqn.primitive.name
    if name == "dot_general":
        flat = _flat_dot(*invals, **eqn.params)
        if flat is not None:
            return flat
    elif name in _INLINED and isinstance(eqn.params.get("jaxpr"), jcore.ClosedJaxpr):
        inner = eqn.params["jaxpr"]
        return _eval(inner.jaxpr, inner.consts, invals)
    params = eqn.primitive.get_bind_params(eqn.params)
    subfuns, params = params if isinstance(params, tuple) else ((), params)  # older JAX also returns sub-functions
    with eqn.ctx.manager:  # e.g. a remat or metadata context the equation was traced under
        return eqn.primitive.bind(*subfuns, *invals, **params)


def _flat_dot(lhs, rhs, *, dimension_numbers, precision, preferred_element_type, **_):
    """`lhs (..., c) . rhs` as `lhs (N, c) . rhs`, reshaped back; None when the dot is not of that form."""
    (lc, rc), (lb, rb) = dimension_numbers
    if lb or rb or len(lc) != 1 or lhs.ndim < 3 or tuple(lc) != (lhs.ndim - 1,):
        return None
    lead = lhs.shape[:-1]
    flat = lhs.reshape(math.prod(lead), lhs.shape[-1])
    if _reorient(flat, rhs, tuple(rc), preferred_element_type):
        out = _oriented_matmul(tuple(rc), precision)(flat, rhs)
    else:
        out = jax.lax.dot_general(flat, rhs, (((1,), tuple(rc)), ((), ())), precision=precision,
                                  preferred_element_type=preferred_element_type)
    return out.reshape(*lead, *out.shape[1:])


# Below this many rows (B*T) the swapped weight gradient is not faster (784 -> 128 at 32 rows: 61 -> 44 GFLOP/s).
_MIN_ROWS_TO_REORIENT = 256


def _reorient(x, w, rc, preferred_element_type) -> bool:
    """Whether the weight gradient of `x (N, c) . w` (a 2-D weight contracting on `rc`) is faster computed as the
    transpose of the wide product: on CPU, for a tall gradient (more rows than columns) and enough rows N."""
    if w.ndim != 2 or x.dtype != w.dtype or preferred_element_type not in (None, x.dtype):
        return False
    if jax.default_backend() != "cpu" or x.shape[0] < _MIN_ROWS_TO_REORIENT:
        return False
    rows, cols = w.shape if rc == (0,) else w.shape[::-1]  # the natural gradient: x^T dy (in, out) or dy^T x
    return rows > cols


def _oriented_matmul(rc, precision):
    """`x (N, c) . w` whose weight gradient is computed as the transpose of the wide product, kept from being
    folded back by an optimization barrier. `rc`: w's contracting dimension, (0,) for (in, out), (1,) for
    (out, in) as in a tied embedding's `attend`."""
    def dot(a, b, contract):
        return jax.lax.dot_general(a, b, (contract, ((), ())), precision=precision)

    @jax.custom_vjp
    def matmul(x, w):
        return dot(x, w, ((1,), rc))

    def forward(x, w):
        return matmul(x, w), (x, w)

    def backward(res, g):
        x, w = res
        g = g.astype(x.dtype)
        if rc == (0,):  # w (in, out): dx = g w^T, dw = x^T g = (g^T x)^T
            dx, dw_t = dot(g, w, ((1,), (1,))), dot(g, x, ((0,), (0,)))
        else:  # w (out, in): dx = g w, dw = g^T x = (x^T g)^T
            dx, dw_t = dot(g, w, ((1,), (0,))), dot(x, g, ((0,), (0,)))
        return dx, jax.lax.optimization_barrier(dw_t).T

    matmul.defvjp(forward, backward)
    return matmul
