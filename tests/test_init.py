"""Initializers: bounds and moments from fixed seeds, fans, gains against PyTorch, orthogonality,
truncation, dtype, reproducibility and errors."""

import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import nnframe as nf
from nnframe.layers import init
from tests.strategies import seeds

CHECKED_MODULES: list = []  # no Module or Loss here

N = 60_000  # samples for the moment checks: the sample std is then within ~0.6% (3 sigma)
weight_shapes = st.sampled_from([(3, 5), (8, 2), (4, 3, 2), (6, 2, 3, 3), (1, 7)])


def check_moments(w, mean, std, rel=0.02):
    """Sample mean within 5 standard errors, sample std within ``rel``."""
    x = w.astype(np.float64).ravel()
    assert abs(x.mean() - mean) < 5 * std / math.sqrt(x.size), (x.mean(), mean)
    assert x.std() == pytest.approx(std, rel=rel)


# --------------------------------------------------------------------------------- fans, gains
def test_fans():
    assert init.fans((4, 3)) == (3, 4)  # Dense weight (out_features, in_features)
    assert init.fans((8, 2, 3, 3)) == (18, 72)  # conv (out, in, kh, kw): fans times the kernel
    assert init.fans((8, 2, 5)) == (10, 40)
    assert init.fans((5,)) == (5, 5)
    assert init.fans(5) == (5, 5)


def test_fans_match_torch():
    torch = pytest.importorskip("torch")
    for shape in [(4, 3), (8, 2, 3, 3), (8, 2, 5), (2, 3, 2, 2, 2)]:
        w = torch.empty(shape)
        assert init.fans(shape) == torch.nn.init._calculate_fan_in_and_fan_out(w)


GAINS = [
    ("linear", None),
    ("conv1d", None),
    ("conv2d", None),
    ("conv3d", None),
    ("conv_transpose1d", None),
    ("conv_transpose2d", None),
    ("conv_transpose3d", None),
    ("sigmoid", None),
    ("tanh", None),
    ("relu", None),
    ("leaky_relu", None),
    ("leaky_relu", 0.2),
    ("leaky_relu", 0),
    ("leaky_relu", 1),
    ("selu", None),
]


@pytest.mark.parametrize("nonlinearity, param", GAINS)
def test_calculate_gain_matches_torch(nonlinearity, param):
    torch = pytest.importorskip("torch")
    expected = torch.nn.init.calculate_gain(nonlinearity, param)
    assert init.calculate_gain(nonlinearity, param) == pytest.approx(expected, rel=1e-15)


def test_calculate_gain_values():
    assert init.calculate_gain("relu") == math.sqrt(2)
    assert init.calculate_gain("tanh") == 5 / 3
    assert init.calculate_gain("selu") == 0.75
    assert init.calculate_gain("leaky_relu") == pytest.approx(math.sqrt(2 / 1.0001))
    assert init.calculate_gain("leaky_relu", 0.2) == pytest.approx(math.sqrt(2 / 1.04))


# ----------------------------------------------------------------------------- distributions
def test_uniform_and_normal_moments():
    w = init.uniform((200, 300), -1.0, 3.0, rng=0)
    assert w.min() >= -1 and w.max() <= 3
    check_moments(w, 1.0, 4 / math.sqrt(12))
    check_moments(init.normal((200, 300), 0.5, 2.0, rng=1), 0.5, 2.0)
    np.testing.assert_array_equal(init.constant((2, 3), 0.25), np.full((2, 3), 0.25, np.float32))
    np.testing.assert_array_equal(init.zeros((2,)), [0.0, 0.0])
    np.testing.assert_array_equal(init.ones((1, 2)), [[1.0, 1.0]])


@pytest.mark.parametrize("gain", [1.0, 2.5])
def test_xavier(gain):
    shape = (300, 200)  # fan_in 200, fan_out 300
    bound = gain * math.sqrt(6 / 500)
    w = init.xavier_uniform(shape, gain, rng=2)
    assert np.abs(w).max() <= np.float32(bound) and np.abs(w).max() > 0.99 * bound
    check_moments(w, 0.0, bound / math.sqrt(3))
    check_moments(init.xavier_normal(shape, gain, rng=3), 0.0, gain * math.sqrt(2 / 500))


@pytest.mark.parametrize("mode", ["fan_in", "fan_out"])
@pytest.mark.parametrize(
    "nonlinearity, a",
    [("relu", 0), ("leaky_relu", 0), ("leaky_relu", 0.2), ("tanh", 0), ("linear", 0)],
)
def test_kaiming(mode, nonlinearity, a):
    shape = (150, 40, 3, 3)  # fan_in 360, fan_out 1350
    fan = 360 if mode == "fan_in" else 1350
    std = init.calculate_gain(nonlinearity, a) / math.sqrt(fan)
    w = init.kaiming_uniform(shape, a, mode, nonlinearity, rng=4)
    bound = math.sqrt(3) * std
    assert np.abs(w).max() <= np.float32(bound) and np.abs(w).max() > 0.99 * bound
    check_moments(w, 0.0, std)
    check_moments(init.kaiming_normal(shape, a, mode, nonlinearity, rng=5), 0.0, std)


def test_kaiming_defaults_are_torchs():
    # PyTorch's defaults: a=0, mode='fan_in', nonlinearity='leaky_relu' (slope 0: gain sqrt 2)
    w = init.kaiming_normal((500, 120), rng=6)
    check_moments(w, 0.0, math.sqrt(2 / 120))


def test_lecun_and_default_uniform():
    shape = (400, 150)
    w = init.lecun_uniform(shape, rng=7)
    assert np.abs(w).max() <= np.float32(math.sqrt(3 / 150))
    check_moments(w, 0.0, 1 / math.sqrt(150))
    check_moments(init.lecun_normal(shape, rng=8), 0.0, 1 / math.sqrt(150))
    d = init.default_uniform(shape, rng=9)
    assert np.abs(d).max() <= np.float32(1 / math.sqrt(150))
    check_moments(d, 0.0, 1 / math.sqrt(3 * 150))
    b = init.default_uniform((400,), fan_in=4, rng=9)  # a bias uses its layer's fan_in
    assert np.abs(b).max() <= 0.5 and np.abs(b).max() > 0.45


@pytest.mark.parametrize(
    "mean, std, a, b", [(0.0, 1.0, -2.0, 2.0), (0.5, 0.2, 0.1, 0.6), (0.0, 1.0, 1.0, 3.0)]
)
def test_trunc_normal(mean, std, a, b):
    from scipy.stats import truncnorm

    w = init.trunc_normal((300, 200), mean, std, a, b, rng=10)
    assert w.min() >= np.float32(a) and w.max() <= np.float32(b)
    dist = truncnorm((a - mean) / std, (b - mean) / std, loc=mean, scale=std)
    check_moments(w, dist.mean(), dist.std())


@given(
    seed=seeds,
    shape=weight_shapes,
    a=st.floats(-3, 0.5),
    width=st.floats(0.01, 3),
    std=st.floats(0.1, 3),
)
def test_trunc_normal_always_within_bounds(seed, shape, a, width, std):
    b = a + width
    w = init.trunc_normal(shape, 0.0, std, a, b, rng=seed)
    assert w.shape == shape and w.dtype == np.float32
    assert w.min() >= np.float32(a) and w.max() <= np.float32(b)


@given(
    seed=seeds,
    shape=st.sampled_from([(3, 5), (5, 3), (4, 4), (4, 2, 3), (6, 2, 2, 2), (1, 9), (9, 1)]),
    gain=st.sampled_from([1.0, 0.5, 2.0]),
)
def test_orthogonal(seed, shape, gain):
    w = init.orthogonal(shape, gain, rng=seed, dtype=np.float64)
    assert w.shape == shape
    flat = w.reshape(shape[0], -1)
    rows, cols = flat.shape
    if rows <= cols:  # orthonormal rows
        np.testing.assert_allclose(flat @ flat.T, gain**2 * np.eye(rows), atol=1e-12)
    else:  # orthonormal columns
        np.testing.assert_allclose(flat.T @ flat, gain**2 * np.eye(cols), atol=1e-12)


@given(seed=seeds, shape=weight_shapes)
def test_bounded_initializers_stay_in_their_bounds(seed, shape):
    fan_in, fan_out = init.fans(shape)
    cases = [
        (init.xavier_uniform(shape, rng=seed), math.sqrt(6 / (fan_in + fan_out))),
        (init.kaiming_uniform(shape, rng=seed), math.sqrt(6 / fan_in)),
        (init.lecun_uniform(shape, rng=seed), math.sqrt(3 / fan_in)),
        (init.default_uniform(shape, rng=seed), 1 / math.sqrt(fan_in)),
    ]
    for w, bound in cases:
        assert w.shape == shape and w.dtype == np.float32
        assert np.abs(w).max() <= np.float32(bound)


# ------------------------------------------------------------------ dtype and reproducibility
ALL = [
    lambda s, **k: init.uniform(s, **k),
    lambda s, **k: init.normal(s, **k),
    lambda s, **k: init.trunc_normal(s, **k),
    lambda s, **k: init.xavier_uniform(s, **k),
    lambda s, **k: init.xavier_normal(s, **k),
    lambda s, **k: init.kaiming_uniform(s, **k),
    lambda s, **k: init.kaiming_normal(s, **k),
    lambda s, **k: init.lecun_uniform(s, **k),
    lambda s, **k: init.lecun_normal(s, **k),
    lambda s, **k: init.orthogonal(s, **k),
    lambda s, **k: init.default_uniform(s, **k),
]


@pytest.mark.parametrize("fn", ALL)
def test_dtype_and_same_seed_same_values(fn):
    a = fn((4, 3), rng=42)
    assert a.dtype == np.float32 and a.shape == (4, 3)
    np.testing.assert_array_equal(a, fn((4, 3), rng=42))
    np.testing.assert_array_equal(a, fn((4, 3), rng=np.random.default_rng(42)))
    assert not np.array_equal(a, fn((4, 3), rng=43))
    assert fn((4, 3), rng=42, dtype=np.float64).dtype == np.float64
    # the default generator follows nnframe.manual_seed
    nf.manual_seed(7)
    first = fn((4, 3))
    nf.manual_seed(7)
    np.testing.assert_array_equal(first, fn((4, 3)))
    # a shared Generator advances: two draws differ
    g = np.random.default_rng(0)
    assert not np.array_equal(fn((4, 3), rng=g), fn((4, 3), rng=g))


@pytest.mark.parametrize("fn", ALL)
def test_zero_size_shapes(fn):
    for shape in [(0, 3), (3, 0)]:
        w = fn(shape, rng=0)
        assert w.shape == shape and w.dtype == np.float32


def test_make_weight():
    w = init.make_weight("glorot_uniform", (3, 4), np.random.default_rng(0), np.float32)
    np.testing.assert_array_equal(w, init.xavier_uniform((3, 4), rng=np.random.default_rng(0)))
    w = init.make_weight(lambda shape, rng, dtype: np.ones(shape), (2, 2), None, np.float32)
    assert w.dtype == np.float32
    for name in init.INITIALIZERS:
        assert init.make_weight(name, (3, 4), np.random.default_rng(0), np.float32).shape == (3, 4)


def test_errors():
    with pytest.raises(
        ValueError, match=r"calculate_gain: expected one of \[.*'relu'.*\], got 'rely'"
    ):
        init.calculate_gain("rely")
    with pytest.raises(
        ValueError,
        match="calculate_gain: expected a number as leaky_relu's negative slope, got True",
    ):
        init.calculate_gain("leaky_relu", True)
    with pytest.raises(
        ValueError, match=r"fans: expected a shape with at least one dimension, got \(\)"
    ):
        init.fans(())
    with pytest.raises(
        ValueError, match=r"init: expected mode 'fan_in' or 'fan_out', got 'fan_avg'"
    ):
        init.kaiming_uniform((3, 4), mode="fan_avg")
    with pytest.raises(
        ValueError, match=r"orthogonal: expected a shape with at least 2 dimensions, got \(3,\)"
    ):
        init.orthogonal((3,))
    with pytest.raises(ValueError, match=r"normal: invalid std=-1.0 \(must be >= 0\)"):
        init.normal((2,), std=-1.0)
    with pytest.raises(ValueError, match=r"trunc_normal: invalid std=0.0 \(must be > 0\)"):
        init.trunc_normal((2,), std=0.0)
    with pytest.raises(ValueError, match="trunc_normal: expected bounds a < b, got a=1.0, b=-1.0"):
        init.trunc_normal((2,), a=1.0, b=-1.0)
    with pytest.raises(ValueError, match=r"init: expected a callable or one of \[.*\], got 'nope'"):
        init.make_weight("nope", (2, 2), None, np.float32)
    with pytest.raises(ValueError, match=r"init: expected an array of shape \(2, 2\), got \(3,\)"):
        init.make_weight(lambda shape, rng, dtype: np.ones(3), (2, 2), None, np.float32)
    with pytest.raises(
        TypeError, match="rng: expected a numpy.random.Generator, an int seed or None, got str"
    ):
        init.uniform((2,), rng="seed")
