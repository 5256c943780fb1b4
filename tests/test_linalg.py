"""The BLAS accumulate helper equals ``out += a @ b`` for every memory layout."""

import numpy as np
from hypothesis import given
from hypothesis import strategies as st

from nnframe.linalg import matmul_accumulate_
from tests.strategies import seeds

layouts = st.sampled_from(["C", "F", "strided"])


def _layout(m: np.ndarray, layout: str) -> np.ndarray:
    if layout == "F":
        return np.asfortranarray(m)
    if layout == "strided":
        wide = np.zeros((m.shape[0], 2 * m.shape[1]), dtype=m.dtype)
        wide[:, ::2] = m
        return wide[:, ::2]
    return np.ascontiguousarray(m)


@given(
    seed=seeds,
    m=st.integers(1, 6),
    n=st.integers(1, 6),
    k=st.integers(1, 6),
    la=layouts,
    lb=layouts,
    dtype=st.sampled_from([np.float32, np.float64]),
)
def test_matches_numpy(seed, m, n, k, la, lb, dtype):
    rng = np.random.default_rng(seed)
    a = _layout(rng.normal(size=(m, n)).astype(dtype), la)
    b = _layout(rng.normal(size=(n, k)).astype(dtype), lb)
    out = rng.normal(size=(m, k)).astype(dtype)
    expected = out + a @ b
    a0, b0 = a.copy(), b.copy()
    result = matmul_accumulate_(out, a, b)
    assert result is out
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(a, a0)
    np.testing.assert_array_equal(b, b0)


def test_transposed_views_accumulate_in_place(rng):
    g = rng.normal(size=(7, 3)).astype(np.float32)
    x = rng.normal(size=(7, 5)).astype(np.float32)
    grad = np.ones((3, 5), dtype=np.float32)
    matmul_accumulate_(grad, g.T, x)
    np.testing.assert_allclose(grad, 1 + g.T @ x, rtol=1e-5)
