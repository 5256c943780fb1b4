"""Max, average and adaptive pooling: gradient checks, PyTorch parity (ties included), worked
examples and errors."""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import nnframe as nf
from tests.strategies import assert_torch_parity, normal_array, seeds

CHECKED_MODULES = [
    nf.MaxPool1d,
    nf.MaxPool2d,
    nf.AvgPool1d,
    nf.AvgPool2d,
    nf.AdaptiveMaxPool1d,
    nf.AdaptiveMaxPool2d,
    nf.AdaptiveAvgPool1d,
    nf.AdaptiveAvgPool2d,
]

MAX = {1: nf.MaxPool1d, 2: nf.MaxPool2d}
AVG = {1: nf.AvgPool1d, 2: nf.AvgPool2d}


def distinct_values(seed, shape):
    """A permutation of well separated values: no two window entries are within the finite
    difference step of each other, so max pooling is differentiable at x."""
    rng = np.random.default_rng(seed)
    return rng.permutation(np.arange(int(np.prod(shape)), dtype=np.float64)).reshape(shape) * 0.1


@st.composite
def window_case(draw, dims, dilation: bool):
    kernel = tuple(draw(st.integers(1, 3)) for _ in range(dims))
    stride = draw(st.one_of(st.none(), st.tuples(*[st.integers(1, 3)] * dims)))
    dil = tuple(draw(st.integers(1, 2)) for _ in range(dims)) if dilation else (1,) * dims
    padding = tuple(draw(st.integers(0, (d * (k - 1) + 1) // 2)) for k, d in zip(kernel, dil))
    ceil_mode = draw(st.booleans())
    # at least the dilated kernel: then every window reads some input (none is all padding)
    low = [d * (k - 1) + 1 for k, d in zip(kernel, dil)]
    size = tuple(draw(st.integers(lo, lo + 4)) for lo in low)
    shape = (draw(st.integers(1, 2)), draw(st.integers(1, 2)), *size)
    return kernel, stride, padding, dil, ceil_mode, shape


@pytest.mark.parametrize("dims", [1, 2])
@given(data=st.data(), seed=seeds)
def test_max_pool_gradcheck(dims, data, seed):
    kernel, stride, padding, dil, ceil_mode, shape = data.draw(window_case(dims, True))
    layer = MAX[dims](kernel, stride, padding, dil, ceil_mode=ceil_mode)
    nf.check_module(layer, distinct_values(seed, shape))


@pytest.mark.parametrize("dims", [1, 2])
@given(data=st.data(), seed=seeds, count_include_pad=st.booleans())
def test_avg_pool_gradcheck(dims, data, seed, count_include_pad):
    kernel, stride, padding, _, ceil_mode, shape = data.draw(window_case(dims, False))
    layer = AVG[dims](kernel, stride, padding, ceil_mode, count_include_pad)
    nf.check_module(layer, normal_array(seed, shape))


@given(seed=seeds, divisor=st.integers(1, 5))
def test_avg_pool_divisor_override_gradcheck(seed, divisor):
    layer = nf.AvgPool2d(3, 2, 1, divisor_override=divisor)
    nf.check_module(layer, normal_array(seed, (2, 2, 5, 4)))


@pytest.mark.parametrize("dims", [1, 2])
@given(data=st.data(), seed=seeds)
def test_adaptive_pools_gradcheck(dims, data, seed):
    size = tuple(data.draw(st.integers(1, 7)) for _ in range(dims))
    shape = (data.draw(st.integers(1, 2)), 2, *size)
    if dims == 1:
        cls_max, cls_avg, arg = (
            nf.AdaptiveMaxPool1d,
            nf.AdaptiveAvgPool1d,
            data.draw(st.integers(1, 7)),
        )
    else:  # None keeps that input size
        cls_max, cls_avg = nf.AdaptiveMaxPool2d, nf.AdaptiveAvgPool2d
        arg = data.draw(st.tuples(*[st.one_of(st.integers(1, 7), st.none())] * 2))
    nf.check_module(cls_max(arg), distinct_values(seed, shape))
    nf.check_module(cls_avg(arg), normal_array(seed, shape))


@given(seed=seeds, out=st.sampled_from([1, 2]), n=st.integers(1, 2))
def test_adaptive_pools_big_even_windows_gradcheck(seed, out, n):
    shape = (n, 2, 10, 10)  # windows of 100 or 25 elements: the block (arg-max) paths
    nf.check_module(nf.AdaptiveMaxPool2d(out), distinct_values(seed, shape))
    nf.check_module(nf.AdaptiveAvgPool2d(out), normal_array(seed, shape))


# ---------------------------------------------------------------------------- worked examples
def test_max_pool_worked_example_and_first_maximum_tie_rule():
    pool = nf.MaxPool2d(2)
    x = np.array([[[[1.0, 4.0, 2.0, 2.0], [4.0, 0.0, 2.0, 2.0]]]], dtype=np.float32)
    np.testing.assert_array_equal(pool(x), [[[[4.0, 2.0]]]])
    dx = pool.backward(np.array([[[[10.0, 20.0]]]], dtype=np.float32))
    # both windows tie: the gradient goes to the first maximum in row-major order
    np.testing.assert_array_equal(dx, [[[[0, 10, 20, 0], [0, 0, 0, 0]]]])


def test_max_pool_overlapping_windows_accumulate():
    pool = nf.MaxPool1d(3, stride=1)
    x = np.array([[[0.0, 5.0, 1.0, 2.0]]])
    np.testing.assert_array_equal(pool(x), [[[5.0, 5.0]]])
    np.testing.assert_array_equal(pool.backward(np.array([[[1.0, 2.0]]])), [[[0, 3, 0, 0]]])


def test_max_pool_propagates_nan():
    y = nf.MaxPool1d(2)(np.array([[[1.0, np.nan, 3.0, 2.0]]]))
    assert np.isnan(y[0, 0, 0]) and y[0, 0, 1] == 3.0


def test_avg_pool_count_include_pad_worked_example():
    x = np.array([[[2.0, 4.0]]])
    # windows of 3 with padding 1: [0, 2, 4] and [4, 0] (ceil_mode adds the last one)
    np.testing.assert_allclose(nf.AvgPool1d(3, 2, 1)(x), [[[2.0]]])  # 6 / 3
    np.testing.assert_allclose(nf.AvgPool1d(3, 2, 1, count_include_pad=False)(x), [[[3.0]]])
    ceil = nf.AvgPool1d(3, 2, 1, ceil_mode=True)
    np.testing.assert_allclose(ceil(x), [[[2.0, 2.0]]])  # 6 / 3, then 4 / 2 (input + pad)
    np.testing.assert_allclose(ceil.backward(np.array([[[3.0, 4.0]]])), [[[1.0, 3.0]]])


def test_global_pooling_worked_example():
    x = np.arange(8.0).reshape(1, 2, 2, 2)
    np.testing.assert_allclose(nf.AdaptiveAvgPool2d(1)(x), [[[[1.5]], [[5.5]]]])
    pool = nf.AdaptiveMaxPool2d(1)
    np.testing.assert_allclose(pool(x), [[[[3.0]], [[7.0]]]])
    dx = pool.backward(np.ones((1, 2, 1, 1)))
    np.testing.assert_array_equal(dx.reshape(2, 4), [[0, 0, 0, 1], [0, 0, 0, 1]])


def test_adaptive_uneven_windows_overlap():
    # length 5 into 3 windows: [0, 2), [1, 4), [3, 5)
    x = np.array([[[1.0, 2.0, 9.0, 3.0, 0.0]]])
    np.testing.assert_allclose(nf.AdaptiveAvgPool1d(3)(x), [[[1.5, 14 / 3, 1.5]]])
    pool = nf.AdaptiveMaxPool1d(3)
    np.testing.assert_allclose(pool(x), [[[2.0, 9.0, 3.0]]])
    np.testing.assert_allclose(pool.backward(np.ones((1, 1, 3))), [[[0, 1, 1, 1, 0]]])


def test_pooling_keeps_float32():
    x = np.ones((1, 1, 4, 4), dtype=np.float32)
    for layer in (
        nf.MaxPool2d(2),
        nf.AvgPool2d(2),
        nf.AdaptiveAvgPool2d(3),
        nf.AdaptiveMaxPool2d(3),
    ):
        y = layer(x)
        assert y.dtype == np.float32 and layer.backward(np.ones_like(y)).dtype == np.float32


# ---------------------------------------------------------------------------- PyTorch parity
PARITY = [
    ("MaxPool1d", dict(kernel_size=3, stride=2, padding=1, ceil_mode=True), (2, 3, 10)),
    ("MaxPool2d", dict(kernel_size=3, stride=2, padding=1, ceil_mode=True), (2, 3, 8, 9)),
    ("MaxPool2d", dict(kernel_size=2, stride=1, padding=1, dilation=2), (2, 3, 6, 7)),
    ("MaxPool2d", dict(kernel_size=2), (2, 3, 8, 9)),
    ("AvgPool1d", dict(kernel_size=4, stride=3, padding=2, ceil_mode=True), (2, 3, 10)),
    (
        "AvgPool2d",
        dict(kernel_size=3, stride=2, padding=1, ceil_mode=True, count_include_pad=False),
        (2, 3, 8, 9),
    ),
    ("AvgPool2d", dict(kernel_size=(2, 3), stride=(1, 2), padding=(1, 0)), (2, 3, 5, 7)),
    ("AvgPool2d", dict(kernel_size=3, padding=1, divisor_override=4), (2, 3, 6, 7)),
    ("AdaptiveMaxPool1d", dict(output_size=3), (2, 3, 7)),
    ("AdaptiveMaxPool2d", dict(output_size=(3, 4)), (2, 3, 8, 9)),
    ("AdaptiveMaxPool2d", dict(output_size=(2, 3)), (2, 3, 8, 9)),
    ("AdaptiveAvgPool1d", dict(output_size=4), (2, 3, 7)),
    ("AdaptiveAvgPool2d", dict(output_size=(3, None)), (2, 3, 8, 5)),
    # even windows: block mean, block arg-max (global pooling) and window max pooling
    ("AdaptiveAvgPool2d", dict(output_size=(2, 3)), (2, 3, 8, 9)),
    ("AdaptiveAvgPool1d", dict(output_size=1), (2, 3, 20)),
    ("AdaptiveMaxPool2d", dict(output_size=1), (2, 3, 8, 9)),
    ("AdaptiveMaxPool1d", dict(output_size=2), (2, 3, 40)),
    ("AdaptiveMaxPool2d", dict(output_size=(4, 3)), (2, 3, 8, 9)),
]


@pytest.mark.parametrize("name,kwargs,shape", PARITY, ids=[p[0] for p in PARITY])
def test_torch_parity_with_ties(name, kwargs, shape):
    torch = pytest.importorskip("torch")
    ref = getattr(torch.nn, name)(**kwargs)
    layer = getattr(nf, name)(**kwargs)
    rng = np.random.default_rng(3)
    x = np.round(rng.normal(size=shape))  # many ties: the gradient must go where PyTorch's goes
    assert_torch_parity(layer, ref, x, rng, rtol=1e-12, atol=1e-12)


# ---------------------------------------------------------------------------- errors
def test_error_input_smaller_than_window():
    with pytest.raises(
        nf.ShapeError,
        match=r"MaxPool2d\(kernel_size=\(3, 3\), stride=\(3, 3\)\): expected input of shape "
        r"\(N, C, H, W\) with each padded spatial size >= the \(dilated\) kernel \(3, 3\), "
        r"got \(1, 2, 2, 5\)",
    ):
        nf.MaxPool2d(3)(np.zeros((1, 2, 2, 5)))


def test_error_wrong_rank():
    with pytest.raises(
        nf.ShapeError,
        match=r"AvgPool1d\(.*\): expected input of shape "
        r"\(N, C, L\), got \(5,\)",
    ):
        nf.AvgPool1d(2)(np.zeros((5,)))  # (C, L) without the batch axis is accepted
    with pytest.raises(
        nf.ShapeError,
        match=r"AdaptiveAvgPool2d\(output_size=\(2, 2\)\): "
        r"expected input of shape \(N, C, H, W\), got \(5, 3\)",
    ):
        nf.AdaptiveAvgPool2d(2)(np.zeros((5, 3)))


def test_error_hyperparameters():
    with pytest.raises(ValueError, match=r"MaxPool2d: invalid padding=2 \(must be at most half"):
        nf.MaxPool2d(3, padding=2)
    with pytest.raises(ValueError, match=r"AvgPool1d: invalid kernel_size=0 \(must be >= 1\)"):
        nf.AvgPool1d(0)
    with pytest.raises(ValueError, match=r"AdaptiveMaxPool2d: invalid output_size=0"):
        nf.AdaptiveMaxPool2d(0)
    # PyTorch's positional order: the fifth argument is return_indices, the sixth ceil_mode
    assert nf.MaxPool2d(2, 2, 0, 1, True).return_indices
    assert nf.MaxPool2d(2, 2, 0, 1, False, True).ceil_mode


def test_error_grad_output_shape():
    pool = nf.MaxPool2d(2)
    pool(np.zeros((1, 1, 4, 4)))
    with pytest.raises(nf.ShapeError, match=r"expected grad_output of shape \(1, 1, 2, 2\)"):
        pool.backward(np.zeros((1, 1, 4, 4)))


def test_error_non_numeric_input():
    with pytest.raises(TypeError, match=r"MaxPool1d\(.*\): expected a real numeric input, got"):
        nf.MaxPool1d(2)(np.array([[["a", "b"]]]))
