"""Gradient clipping as properties: the bound holds, the direction is kept, nothing changes under
the limit, the pre-clip norm is returned, zero and non-finite gradients are handled, frozen
parameters are ignored; and parity with torch.nn.utils."""

import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import nnframe as nf
from tests.strategies import normal_array, seeds

CHECKED_MODULES: list = []  # no Module or Loss here

norm_types = st.sampled_from([1.0, 2.0, 3.0, math.inf])
dtypes = st.sampled_from([np.float32, np.float64])
shape_lists = st.lists(
    st.lists(st.integers(1, 4), min_size=0, max_size=3).map(tuple), min_size=1, max_size=3
)


def make_params(seed, shapes, dtype, scale=1.0):
    return [nf.Parameter(np.zeros(s, dtype=dtype)) for s in shapes], [
        normal_array(seed + i, s, scale).astype(dtype) for i, s in enumerate(shapes)
    ]


def with_grads(params, grads):
    for p, g in zip(params, grads):
        p.grad[...] = g
    return params


def flat_norm(grads, p):
    flat = np.concatenate([np.asarray(g, dtype=np.float64).ravel() for g in grads])
    return float(np.linalg.norm(flat, ord=p)) if flat.size else 0.0


@given(seed=seeds, shapes=shape_lists, p=norm_types, dtype=dtypes, frac=st.floats(0.01, 0.9))
def test_clip_bounds_the_norm_keeps_direction_and_returns_the_pre_clip_norm(
    seed, shapes, p, dtype, frac
):
    params, grads = make_params(seed, shapes, dtype, scale=3.0)
    with_grads(params, grads)
    before = flat_norm(grads, p)
    max_norm = max(frac * before, 1e-3)
    returned = nf.clip_grad_norm_(params, max_norm, norm_type=p)
    tol = 1e-5 if dtype == np.float32 else 1e-12
    assert returned == pytest.approx(before, rel=tol, abs=1e-12)
    after = [q.grad for q in params]
    assert flat_norm(after, p) <= max_norm * (1 + tol)
    # direction kept: every gradient is the original times one common factor in (0, 1]
    if before > max_norm:
        factor = max_norm / (before + 1e-6)
        for g, a in zip(grads, after):
            np.testing.assert_allclose(a, g * factor, rtol=tol, atol=1e-30)
    for a in after:
        assert a.dtype == dtype


@given(seed=seeds, shapes=shape_lists, p=norm_types, dtype=dtypes, margin=st.floats(1.01, 10))
def test_nothing_changes_under_the_limit(seed, shapes, p, dtype, margin):
    params, grads = make_params(seed, shapes, dtype)
    with_grads(params, grads)
    norm = flat_norm(grads, p)
    returned = nf.clip_grad_norm_(params, max(norm * margin, 1e-3), norm_type=p)
    for q, g in zip(params, grads):
        np.testing.assert_array_equal(q.grad, g)
    assert returned == pytest.approx(norm, rel=1e-5)


@pytest.mark.parametrize("p", [1.0, 2.0, math.inf])
def test_zero_gradient_is_fine(p):
    params = [nf.Parameter(np.zeros((2, 3), dtype=np.float32)), nf.Parameter(np.zeros(0))]
    with np.errstate(all="raise"):
        assert nf.clip_grad_norm_(params, 1.0, norm_type=p, error_if_nonfinite=True) == 0.0
    np.testing.assert_array_equal(params[0].grad, 0.0)


@pytest.mark.parametrize("p", [1.0, 2.0, math.inf])
@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
@pytest.mark.parametrize("where", [0, 1])
def test_non_finite(p, bad, where):
    # the bad value in either array: the inf-norm must not drop a NaN in a later array
    params = [nf.Parameter(np.zeros(3)), nf.Parameter(np.zeros(2))]
    params[0].grad[:] = [1.0, -2.0, 0.5]
    params[1].grad[:] = [0.3, 0.1]
    params[where].grad[1] = bad
    with pytest.raises(
        RuntimeError, match=r"clip_grad_norm_: expected a finite gradient norm, got (nan|inf)"
    ):
        nf.clip_grad_norm_(params, 1.0, norm_type=p, error_if_nonfinite=True)
    # not asked to raise: PyTorch's behaviour (scale by max_norm / norm: 0 or NaN)
    norm = nf.clip_grad_norm_(params, 1.0, norm_type=p)
    if math.isnan(bad):
        assert math.isnan(norm)
        assert np.isnan(params[0].grad).all() and np.isnan(params[1].grad).all()
    else:
        assert norm == math.inf
        assert (params[1 - where].grad == 0).all()


def test_frozen_parameters_are_ignored():
    live = nf.Parameter(np.zeros(2))
    frozen = nf.Parameter(np.zeros(2), requires_grad=False)
    live.grad[:] = [3.0, 4.0]
    frozen.grad[:] = [100.0, 100.0]
    assert nf.clip_grad_norm_([live, frozen], 1.0) == 5.0  # the frozen one is not counted
    np.testing.assert_allclose(live.grad, [0.6, 0.8], rtol=1e-6)
    np.testing.assert_array_equal(frozen.grad, 100.0)
    nf.clip_grad_value_([live, frozen], 0.1)
    np.testing.assert_array_equal(frozen.grad, 100.0)


def test_a_single_parameter_and_a_generator_are_accepted():
    p = nf.Parameter(np.zeros(2))
    p.grad[:] = [3.0, 4.0]
    assert nf.clip_grad_norm_(p, 10.0) == 5.0
    assert nf.clip_grad_norm_(iter([p]), 10.0) == 5.0
    nf.clip_grad_value_(p, 3.5)
    np.testing.assert_array_equal(p.grad, [3.0, 3.5])


def test_float32_overflowing_squares_still_give_the_norm():
    p = nf.Parameter(np.zeros(2, dtype=np.float32))
    p.grad[:] = [3e30, 4e30]  # squares overflow float32, the norm (5e30) does not
    assert nf.clip_grad_norm_(p, 1.0) == pytest.approx(5e30, rel=1e-6)
    np.testing.assert_allclose(p.grad, [0.6, 0.8], rtol=1e-5)


@given(seed=seeds, shapes=shape_lists, dtype=dtypes, v=st.floats(0.01, 2.0))
def test_clip_value_clamps(seed, shapes, dtype, v):
    params, grads = make_params(seed, shapes, dtype)
    with_grads(params, grads)
    assert nf.clip_grad_value_(params, v) is None
    for q, g in zip(params, grads):
        np.testing.assert_array_equal(q.grad, np.clip(g, -dtype(v), dtype(v)))
        assert q.grad.dtype == dtype
        inside = np.abs(g) <= v
        np.testing.assert_array_equal(q.grad[inside], g[inside])


def test_errors():
    p = nf.Parameter(np.zeros(2))
    with pytest.raises(ValueError, match=r"clip_grad_norm_: invalid max_norm=0 \(must be > 0\)"):
        nf.clip_grad_norm_([p], 0)
    with pytest.raises(ValueError, match=r"clip_grad_norm_: invalid max_norm=nan"):
        nf.clip_grad_norm_([p], math.nan)
    with pytest.raises(
        ValueError, match=r"clip_grad_norm_: invalid norm_type=-1 \(must be > 0 or inf\)"
    ):
        nf.clip_grad_norm_([p], 1.0, norm_type=-1)
    with pytest.raises(
        ValueError, match=r"clip_grad_value_: invalid clip_value=-0.5 \(must be > 0\)"
    ):
        nf.clip_grad_value_([p], -0.5)


@pytest.mark.parametrize("p", [1.0, 2.0, 3.0, math.inf])
def test_matches_torch(p):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(5)
    grads = [rng.normal(size=(3, 4)) * 3, rng.normal(size=(5,))]
    mine = with_grads([nf.Parameter(np.zeros_like(g)) for g in grads], grads)
    theirs = [torch.zeros(g.shape, dtype=torch.float64, requires_grad=True) for g in grads]
    for t, g in zip(theirs, grads):
        t.grad = torch.from_numpy(g.copy())
    norm = nf.clip_grad_norm_(mine, 1.5, norm_type=p)
    ref = torch.nn.utils.clip_grad_norm_(theirs, 1.5, norm_type=p)
    assert norm == pytest.approx(float(ref), rel=1e-12)
    for q, t in zip(mine, theirs):
        np.testing.assert_allclose(q.grad, t.grad.numpy(), rtol=1e-12)
    for t, g in zip(theirs, grads):
        t.grad = torch.from_numpy(g.copy())
    with_grads(mine, grads)
    nf.clip_grad_value_(mine, 0.7)
    torch.nn.utils.clip_grad_value_(theirs, 0.7)
    for q, t in zip(mine, theirs):
        np.testing.assert_array_equal(q.grad, t.grad.numpy())
