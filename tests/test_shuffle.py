"""The epoch shuffle (data/shuffle.py): a bijection for every size, uniform over orders, free of the data's order."""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jupyter_llm.data.plans import epoch_plan
from jupyter_llm.data.shuffle import permutation


@pytest.mark.parametrize("n", [0, 1, 2, 3, 4, 5, 7, 8, 9, 16, 17, 255, 256, 257, 1000, 4097, 60000])
def test_every_index_exactly_once(n):
    p = np.asarray(permutation(jax.random.key(n), n))
    assert p.dtype == np.int32 and p.shape == (n,)
    np.testing.assert_array_equal(np.sort(p), np.arange(n))


def test_same_key_same_order_other_key_other_order():
    a, b = (np.asarray(permutation(jax.random.key(k), 1000)) for k in (0, 0))
    np.testing.assert_array_equal(a, b)
    c = np.asarray(permutation(jax.random.key(1), 1000))
    assert (a != c).mean() > 0.95


def test_uniform_over_all_orders_of_four():
    """All 24 orders of 4 elements come up about equally often (chi-square, df = 23, p ~ 0.999 bound)."""
    keys = jax.random.split(jax.random.key(0), 24_000)
    perms = np.asarray(jax.vmap(lambda k: permutation(k, 4))(keys))
    counts = {o: 0 for o in itertools.permutations(range(4))}
    for row in map(tuple, perms.tolist()):
        counts[row] += 1
    expected = len(keys) / 24
    chi2 = sum((c - expected) ** 2 / expected for c in counts.values())
    assert chi2 < 51.2, counts  # the 0.9995 quantile of chi-square with 23 degrees of freedom


def test_positions_uniform_for_a_size_that_needs_cycle_walking():
    """n = 10 lives in a domain of 16: each element lands in each position about equally often."""
    n, trials = 10, 20_000
    perms = np.asarray(jax.vmap(lambda k: permutation(k, n))(jax.random.split(jax.random.key(1), trials)))
    counts = np.stack([np.bincount(perms[:, i], minlength=n) for i in range(n)])
    expected = trials / n
    chi2 = ((counts - expected) ** 2 / expected).sum()
    assert chi2 < 135, counts  # df = 81; the 0.9999 quantile is about 131


def test_no_trace_of_the_data_order():
    """Sorted labels (10 classes in blocks, as MNIST-like files often come) are mixed into every batch as by a
    uniform shuffle, and neighbouring positions are uncorrelated."""
    n, batch = 60_000, 32
    p = np.asarray(permutation(jax.random.key(7), n))
    labels = np.arange(n) * 10 // n
    distinct = np.array([len(set(labels[p[i:i + batch]])) for i in range(0, n - batch + 1, batch)])
    # a uniform shuffle: E[distinct classes in 32 draws from 10] = 10 * (1 - 0.9**32) = 9.66
    assert abs(distinct.mean() - 10 * (1 - 0.9 ** 32)) < 0.05
    assert abs(np.corrcoef(np.arange(n), p)[0, 1]) < 0.02
    assert abs(np.corrcoef(p[:-1], p[1:])[0, 1]) < 0.02
    gaps = np.abs(np.diff(p))  # a uniform shuffle's neighbours are about n/3 apart
    assert abs(gaps.mean() / (n / 3) - 1) < 0.02


def test_epoch_plan_uses_it_and_differs_per_epoch():
    key = jax.random.key(3)
    idx0, w0 = epoch_plan(key, 0, n=100, batch_size=8, padded_steps=13, step_limit=13)
    idx1, _ = epoch_plan(key, 1, n=100, batch_size=8, padded_steps=13, step_limit=13)
    flat0 = np.asarray(idx0).ravel()
    np.testing.assert_array_equal(np.sort(flat0[:100]), np.arange(100))  # every example once, then padding
    assert float(jnp.sum(w0)) == 100
    assert (np.asarray(idx1).ravel()[:100] != flat0[:100]).mean() > 0.9
    np.testing.assert_array_equal(flat0[:100], np.asarray(permutation(jax.random.fold_in(key, 0), 100)))


def test_sizes_beyond_int32_indexing_refused():
    with pytest.raises(ValueError, match="up to 2\\*\\*31"):
        permutation(jax.random.key(0), 2 ** 31 + 1)
