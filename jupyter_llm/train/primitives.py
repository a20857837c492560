"""The names of the primitives a traced program uses, nested programs (loops, conditionals, custom rules) included.

The loop asks this of the model's forward pass before it decides how many steps one compiled call runs: XLA:CPU
runs a native convolution inside a loop many times slower than in a straight-line program (jax-ml/jax#12868,
open since 2022), so a model with convolutions gets one step per call on a CPU.

>>> import jax, jax.numpy as jnp
>>> names = primitive_names(jax.make_jaxpr(lambda x: jax.lax.fori_loop(0, 2, lambda i, v: jnp.sin(v), x))(1.0))
>>> "scan" in names, "sin" in names, "cos" in names
(True, True, False)
"""

from __future__ import annotations

from typing import Iterator

CONVOLUTION = "conv_general_dilated"


def primitive_names(closed_jaxpr) -> frozenset[str]:
    """Every primitive of `closed_jaxpr` (a `jax.make_jaxpr` result) and of the programs nested in it."""
    return frozenset(_names(closed_jaxpr.jaxpr))


def _names(jaxpr) -> Iterator[str]:
    for eqn in jaxpr.eqns:
        yield eqn.primitive.name
        for value in eqn.params.values():
            for inner in value if isinstance(value, (tuple, list)) else (value,):
                if hasattr(inner, "eqns"):  # a Jaxpr
                    yield from _names(inner)
                elif hasattr(inner, "jaxpr") and hasattr(inner.jaxpr, "eqns"):  # a ClosedJaxpr
                    yield from _names(inner.jaxpr)
