"""The activations of issue 14: Threshold, Hardshrink, Softshrink, Tanhshrink, Softmin,
Softmax2d and GLU. Gradient checks under drawn shapes (empty ones included), float64 parity
with PyTorch (outputs and input gradients), examples and errors."""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import nnframe as nf
from tests.strategies import assert_torch_parity, seeds

torch = pytest.importorskip("torch")

CHECKED_MODULES = [
    nf.Threshold,
    nf.Hardshrink,
    nf.Softshrink,
    nf.Tanhshrink,
    nf.Softmin,
    nf.Softmax2d,
    nf.GLU,
]

shapes = st.lists(st.integers(0, 4), min_size=1, max_size=4).map(tuple)


def check(layer, x):
    """check_module, or for an empty input, an empty output and input gradient."""
    if x.size:
        nf.check_module(layer, x)
        return
    y = layer(x)
    assert layer.backward(np.ones_like(y)).shape == x.shape


def away_from_kinks(seed, shape, kinks):
    """Normal values with none within 0.01 of a kink (no derivative there)."""
    x = np.random.default_rng(seed).normal(size=shape) * 2
    for k in kinks:
        near = np.abs(x - k) < 0.01
        x[near] = k + 0.05
    return x


CASES = [
    ("Threshold", (0.3, -2.0), (0.3,)),
    ("Hardshrink", (0.7,), (0.7, -0.7)),
    ("Softshrink", (0.4,), (0.4, -0.4)),
    ("Tanhshrink", (), ()),
]


@pytest.mark.parametrize("name, args, kinks", CASES)
@given(seed=seeds, shape=shapes)
def test_elementwise_parity_and_gradcheck(name, args, kinks, seed, shape):
    x = away_from_kinks(seed, shape, kinks)
    rng = np.random.default_rng(seed)
    assert_torch_parity(
        getattr(nf, name)(*args), getattr(torch.nn, name)(*args), x, rng, 1e-12, 1e-12
    )
    check(getattr(nf, name)(*args), x)


@given(
    seed=seeds, shape=st.lists(st.integers(0, 4), min_size=1, max_size=4).map(tuple), data=st.data()
)
def test_softmin_parity_and_gradcheck(seed, shape, data):
    dim = data.draw(st.one_of(st.none(), st.integers(-len(shape), len(shape) - 1)))
    x = np.random.default_rng(seed).normal(size=shape) * 3
    ref = torch.nn.Softmin(dim=dim if dim is not None else (0 if len(shape) in (0, 1, 3) else 1))
    assert_torch_parity(nf.Softmin(dim), ref, x, np.random.default_rng(seed), 1e-12, 1e-12)
    check(nf.Softmin(dim), x)


@given(seed=seeds, shape=st.lists(st.integers(0, 3), min_size=3, max_size=4).map(tuple))
def test_softmax2d_parity_and_gradcheck(seed, shape):
    x = np.random.default_rng(seed).normal(size=shape) * 3
    rng = np.random.default_rng(seed)
    assert_torch_parity(nf.Softmax2d(), torch.nn.Softmax2d(), x, rng, 1e-12, 1e-12)
    check(nf.Softmax2d(), x)


@given(
    seed=seeds, shape=st.lists(st.integers(0, 4), min_size=1, max_size=4).map(tuple), data=st.data()
)
def test_glu_parity_and_gradcheck(seed, shape, data):
    dim = data.draw(st.integers(-len(shape), len(shape) - 1))
    shape = tuple(2 * s if i == dim % len(shape) else s for i, s in enumerate(shape))
    x = np.random.default_rng(seed).normal(size=shape) * 2
    rng = np.random.default_rng(seed)
    assert_torch_parity(nf.GLU(dim), torch.nn.GLU(dim), x, rng, 1e-12, 1e-12)
    check(nf.GLU(dim), x)


def test_float32_stays_float32_and_extremes_are_finite():
    x = np.array([-1e4, -1.0, 0.0, 1.0, 1e4], dtype=np.float32)
    for layer in (nf.Threshold(0.0, 1.0), nf.Hardshrink(), nf.Softshrink(), nf.Tanhshrink()):
        y = layer(x)
        assert y.dtype == np.float32 and np.isfinite(y).all()
        assert np.isfinite(layer.backward(np.ones_like(y))).all()
    y = nf.GLU()(np.array([[1e4, -1e4, -1e4, 1e4]], dtype=np.float32))
    assert y.dtype == np.float32 and np.isfinite(y).all()
    assert np.isfinite(nf.Softmin(-1)(x)).all()


def test_errors_name_the_layer():
    with pytest.raises(nf.ShapeError, match=r"GLU\(dim=-1\): expected an input whose dimension -1"):
        nf.GLU()(np.ones((2, 3)))
    with pytest.raises(
        nf.ShapeError, match=r"Softmax2d\(\): expected input of shape \(N, C, H, W\)"
    ):
        nf.Softmax2d()(np.ones((2, 3)))
    with pytest.raises(ValueError, match=r"Softshrink: invalid lambd=-1"):
        nf.Softshrink(-1)
    with pytest.raises(TypeError, match=r"Threshold: expected threshold to be a real number"):
        nf.Threshold("a", 0.0)
    with pytest.raises(
        nf.ShapeError, match=r"Softmin\(dim=2\): expected an input with a dimension 2"
    ):
        nf.Softmin(2)(np.ones((2, 3)))


def test_threshold_inplace_is_accepted_and_leaves_the_input():
    x = np.array([-1.0, 2.0])
    y = nf.Threshold(0.0, 5.0, True)(x)
    assert x[0] == -1.0 and y[0] == 5.0
    with pytest.raises(TypeError, match=r"Threshold: expected inplace to be a bool"):
        nf.Threshold(0.0, 5.0, "yes")
