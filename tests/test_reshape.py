"""Flatten, Unflatten, Reshape, ZeroPad2d and Upsample: gradient checks, PyTorch parity,
worked examples and errors."""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import nnframe as nf
from tests.strategies import assert_torch_parity, normal_array, seeds, small

CHECKED_MODULES = [nf.Flatten, nf.Unflatten, nf.Reshape, nf.ZeroPad2d, nf.Upsample]


@given(seed=seeds, n=small, c=small, h=small, w=small, start=st.integers(0, 3))
def test_flatten_unflatten_reshape_gradcheck(seed, n, c, h, w, start):
    x = normal_array(seed, (n, c, h, w))
    end = start + (3 - start) // 2
    flat = nf.Flatten(start, end)
    y = flat(x)
    assert y.ndim == 4 - (end - start)
    nf.check_module(flat, x)
    nf.check_module(nf.Unflatten(1, (c, -1)), x.reshape(n, -1), expected_shape=(n, c, h * w))
    nf.check_module(nf.Reshape(-1, c), x, expected_shape=(n, h * w, c))


@given(
    seed=seeds,
    padding=st.one_of(st.integers(0, 2), st.tuples(*[st.integers(-1, 2)] * 4)),
    h=st.integers(3, 5),  # a crop of -1 on both sides still leaves one row or column
    w=st.integers(3, 5),
)
def test_zero_pad2d_gradcheck(seed, padding, h, w):
    nf.check_module(nf.ZeroPad2d(padding), normal_array(seed, (2, 1, h, w)))


@given(
    seed=seeds,
    dims=st.integers(1, 3),
    scale=st.sampled_from([1, 2, 3, 1.5, 0.5]),
)
def test_upsample_nearest_gradcheck(seed, dims, scale):
    shape = (1, 2) + (3,) * dims
    nf.check_module(nf.Upsample(scale_factor=scale), normal_array(seed, shape))


@given(
    seed=seeds,
    size=st.tuples(st.integers(1, 6), st.integers(1, 6)),
    align_corners=st.booleans(),
)
def test_upsample_bilinear_gradcheck(seed, size, align_corners):
    layer = nf.Upsample(size=size, mode="bilinear", align_corners=align_corners)
    nf.check_module(layer, normal_array(seed, (2, 1, 3, 4)), expected_shape=(2, 1, *size))


def test_flatten_is_a_view_and_worked_example():
    x = np.arange(24.0).reshape(2, 3, 4)
    flat = nf.Flatten()
    y = flat(x)
    assert y.shape == (2, 12) and np.shares_memory(x, y)
    np.testing.assert_array_equal(flat.backward(np.arange(24.0).reshape(2, 12)), x)
    assert nf.Flatten(0, 1)(x).shape == (6, 4)


def test_zero_pad_worked_example():
    pad = nf.ZeroPad2d((1, 0, 0, 1))  # left, right, top, bottom
    y = pad(np.array([[[[1.0, 2.0]]]]))
    np.testing.assert_array_equal(y, [[[[0, 1, 2], [0, 0, 0]]]])
    np.testing.assert_array_equal(pad.backward(np.arange(6.0).reshape(1, 1, 2, 3)), [[[[1, 2]]]])


def test_upsample_worked_examples():
    up = nf.Upsample(scale_factor=2)
    x = np.array([[[[1.0, 2.0], [3.0, 4.0]]]])
    np.testing.assert_array_equal(up(x)[0, 0, :2], [[1, 1, 2, 2], [1, 1, 2, 2]])
    # each input pixel was copied 4 times: its gradient is the sum of the 4 copies
    np.testing.assert_array_equal(up.backward(np.ones((1, 1, 4, 4))), 4 * np.ones((1, 1, 2, 2)))
    bil = nf.Upsample(scale_factor=2, mode="bilinear")
    # align_corners=False: output 1 sits at input coordinate 0.25 -> 0.75 * 1 + 0.25 * 2
    np.testing.assert_allclose(bil(np.array([[[[1.0, 2.0]]]]))[0, 0, 0], [1.0, 1.25, 1.75, 2.0])


PARITY = [
    ("Flatten", dict(start_dim=1, end_dim=2), {}, (2, 3, 4, 5)),
    ("Unflatten", dict(dim=1, unflattened_size=(3, 4)), {}, (2, 12)),
    ("ZeroPad2d", dict(padding=(2, -1, 0, 1)), {}, (2, 3, 4, 5)),
    ("Upsample", dict(scale_factor=2), {}, (2, 3, 4, 5)),
    ("Upsample", dict(scale_factor=1.7), {}, (2, 3, 4, 5)),
    ("Upsample", dict(size=(7, 3)), {}, (2, 3, 4, 5)),
    ("Upsample", dict(scale_factor=3), {}, (2, 3, 4)),
    ("Upsample", dict(scale_factor=2.5, mode="bilinear"), {}, (2, 3, 4, 5)),
    ("Upsample", dict(size=(7, 9), mode="bilinear", align_corners=True), {}, (2, 3, 4, 5)),
    ("Upsample", dict(size=(3, 2), mode="bilinear", align_corners=False), {}, (2, 3, 4, 5)),
]


@pytest.mark.parametrize("name,kwargs,_,shape", PARITY, ids=[p[0] for p in PARITY])
def test_torch_parity(name, kwargs, _, shape):
    torch = pytest.importorskip("torch")
    ref = getattr(torch.nn, name)(**kwargs)
    layer = getattr(nf, name)(**kwargs)
    rng = np.random.default_rng(5)
    assert_torch_parity(layer, ref, rng.normal(size=shape), rng, rtol=1e-12, atol=1e-12)


def test_errors():
    with pytest.raises(
        nf.ShapeError,
        match=r"Reshape\(4, -1\): expected input of shape "
        r"\(N, \*dims\) with prod\(dims\) divisible by 4, got \(2, 3, 3\)",
    ):
        nf.Reshape(4, -1)(np.zeros((2, 3, 3)))
    with pytest.raises(
        nf.ShapeError,
        match=r"Unflatten\(dim=1, unflattened_size=\(3, 4\)\): "
        r"expected dim 1 of size 12.*got shape \(2, 10\)",
    ):
        nf.Unflatten(1, (3, 4))(np.zeros((2, 10)))
    with pytest.raises(
        nf.ShapeError,
        match=r"Upsample\(.*\): expected input of shape "
        r"\(N, C, H, W\), got \(2, 3, 4\)",
    ):
        nf.Upsample(scale_factor=2, mode="bilinear")(np.zeros((2, 3, 4)))
    with pytest.raises(ValueError, match=r"Upsample: invalid size=None \(give exactly one"):
        nf.Upsample()
    with pytest.raises(ValueError, match=r"Upsample: invalid mode='area'"):
        nf.Upsample(scale_factor=2, mode="area")
    with pytest.raises(nf.ShapeError, match=r"ZeroPad2d\(\(-2, -2, 0, 0\)\): expected a positive"):
        nf.ZeroPad2d((-2, -2, 0, 0))(np.zeros((1, 1, 3, 4)))
    with pytest.raises(nf.ShapeError, match=r"Flatten\(start_dim=2, end_dim=1\): expected"):
        nf.Flatten(2, 1)(np.zeros((2, 3, 4)))
