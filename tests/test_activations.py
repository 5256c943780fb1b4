"""Activations: gradient checks, worked examples, stability at +-1e4, dtype, errors, PyTorch parity."""

import math
import warnings
from dataclasses import dataclass, field

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from scipy import special

import nnframe as nf
from nnframe.layers import activations as A
from tests.strategies import normal_array, seeds, small

CHECKED_MODULES = [
    nf.ReLU,
    nf.LeakyReLU,
    nf.PReLU,
    nf.ELU,
    nf.CELU,
    nf.SELU,
    nf.GELU,
    nf.SiLU,
    nf.Mish,
    nf.Softplus,
    nf.Softsign,
    nf.Sigmoid,
    nf.LogSigmoid,
    nf.Tanh,
    nf.Hardtanh,
    nf.Hardsigmoid,
    nf.Hardswish,
    nf.ReLU6,
    nf.Softmax,
    nf.LogSoftmax,
    nf.Identity,
]


@dataclass
class Case:
    """An activation built as ``nf.<name>(*args, **kwargs)``; PyTorch's ``torch.nn.<name>`` takes
    the same arguments. ``kinks``: points where the derivative jumps (inputs are drawn away from
    them). ``channels``: PReLU's per-channel count (the input then has that size on axis 1)."""

    name: str
    args: tuple = ()
    kwargs: dict = field(default_factory=dict)
    kinks: tuple = ()
    channels: int = 0
    min_ndim: int = 0
    torch_rtol: float = 1e-9  # PyTorch computes a few constants in float32 even in float64

    def make(self):
        return getattr(nf, self.name)(*self.args, **self.kwargs)

    def make_torch(self, torch):
        return getattr(torch.nn, self.name)(*self.args, **self.kwargs)

    def shape(self, drawn) -> tuple:
        shape = tuple(drawn)
        if self.channels:
            return (shape[0] if shape else 2, self.channels) + shape[1:]
        return (2,) * (self.min_ndim - len(shape)) + shape

    def __str__(self) -> str:
        inner = [repr(a) for a in self.args] + [f"{k}={v!r}" for k, v in self.kwargs.items()]
        return f"{self.name}({', '.join(inner)})"


CASES = [
    Case("ReLU", kinks=(0.0,)),
    Case("LeakyReLU", kinks=(0.0,)),
    Case("LeakyReLU", (0.2,), kinks=(0.0,)),
    Case("PReLU", kinks=(0.0,)),
    Case("PReLU", (3,), {"init": 0.1}, kinks=(0.0,), channels=3),
    Case("ELU", kinks=(0.0,)),
    Case("ELU", (0.5,), kinks=(0.0,)),
    Case("CELU", (2.0,), kinks=(0.0,)),
    Case("SELU", kinks=(0.0,)),
    Case("GELU"),
    Case("GELU", kwargs={"approximate": "tanh"}),
    Case("SiLU"),
    Case("Mish"),
    Case("Softplus"),
    Case("Softplus", (2.0, 3.0), kinks=(1.5,)),  # linear where beta * x > threshold
    Case("Softsign", kinks=(0.0,)),  # C1 at 0, but its second derivative jumps
    Case("Sigmoid"),
    Case("LogSigmoid"),
    Case("Tanh"),
    Case("Hardtanh", kinks=(-1.0, 1.0)),
    Case("Hardtanh", (-2.0, 0.5), kinks=(-2.0, 0.5)),
    Case("Hardsigmoid", kinks=(-3.0, 3.0), torch_rtol=1e-7),  # its 1/6 slope is a float32
    Case("Hardswish", kinks=(-3.0, 3.0)),
    Case("ReLU6", kinks=(0.0, 6.0)),
    Case("Softmax", kwargs={"dim": -1}, min_ndim=1),  # PyTorch's default dim=None guesses
    Case("Softmax", kwargs={"dim": 1}, min_ndim=2),
    Case("LogSoftmax", kwargs={"dim": -1}, min_ndim=1),
    Case("LogSoftmax", kwargs={"dim": 0}, min_ndim=1),
    Case("Identity"),
]
IDS = [str(c) for c in CASES]
shapes = st.lists(small, min_size=1, max_size=3)
# with () too: for a 0-d input the activations return numpy scalars, as numpy's ufuncs do, which
# check_module does not differentiate; test_zero_d_input and the PyTorch parity test cover them
shapes_with_0d = st.lists(small, min_size=0, max_size=3)


def away_from(x: np.ndarray, kinks, margin: float = 1e-2) -> np.ndarray:
    """x with every value within ``margin`` of a kink pushed to the kink +- margin."""
    for k in kinks:
        near = np.abs(x - k) < margin
        x = np.where(near, np.where(x >= k, k + margin, k - margin), x)
    return x


def draw_input(case: Case, seed: int, shape) -> np.ndarray:
    """float64 N(0, 3^2) values (wide enough to reach the flat parts of the hard functions)."""
    return away_from(normal_array(seed, case.shape(shape), scale=3.0), case.kinks)


def randomize(module, seed: int):
    """PReLU's slopes drawn from the seed, so the weight gradient is checked at generic values."""
    for p in module.parameters():
        p.data[...] = np.random.default_rng(seed).uniform(-0.5, 0.5, size=p.shape)
    return module


# ---------------------------------------------------------------------------- gradient checks
@pytest.mark.parametrize("case", CASES, ids=IDS)
@given(seed=seeds, shape=shapes)
def test_gradcheck(case, seed, shape):
    x = draw_input(case, seed, shape)
    nf.check_module(randomize(case.make(), seed), x, expected_shape=x.shape, seed=seed % 1000)


@given(seed=seeds, shape=shapes)
def test_prelu_frozen_weight_gets_no_gradient(seed, shape):
    layer = randomize(nf.PReLU(), seed).requires_grad_(False)
    nf.check_module(layer, away_from(normal_array(seed, tuple(shape)), (0.0,)))


def test_check_module_catches_a_wrong_derivative():
    """The checker is sensitive enough to see a derivative off by a small factor."""

    class BadSiLU(nf.SiLU):
        def backward(self, grad_output):
            return super().backward(grad_output) * 1.001

    with pytest.raises(nf.GradcheckError, match="gradient of the input"):
        nf.check_module(BadSiLU(), np.linspace(-2, 2, 6))


# ---------------------------------------------------------------------------- worked examples
LN2, LN3 = math.log(2.0), math.log(3.0)
SA, SS = 1.6732632423543772848170429916717, 1.0507009873554804934193349852946  # SELU constants

# (module, x, expected y, expected dy/dx elementwise), all computed by hand
WORKED = [
    (nf.ReLU(), [-1.0, 2.0], [0.0, 2.0], [0.0, 1.0]),
    (nf.LeakyReLU(0.1), [-2.0, 3.0], [-0.2, 3.0], [0.1, 1.0]),
    # alpha (e^x - 1) at x = -ln 2 is alpha (1/2 - 1) = -alpha/2; slope alpha e^x = alpha/2
    (nf.ELU(2.0), [-LN2, 1.0], [-1.0, 1.0], [1.0, 1.0]),
    # x / alpha = -ln 2: alpha (1/2 - 1) = -1; slope e^(x / alpha) = 1/2
    (nf.CELU(2.0), [-2 * LN2, 3.0], [-1.0, 3.0], [0.5, 1.0]),
    (nf.SELU(), [-LN2, 2.0], [-SS * SA / 2, 2 * SS], [SS * SA / 2, SS]),
    # Phi(0) = 1/2, Phi(1) = 0.8413447461, phi(1) = 0.2419707245: slope Phi + x phi
    (nf.GELU(), [0.0, 1.0], [0.0, 0.8413447461], [0.5, 0.8413447461 + 0.2419707245]),
    # u(1) = sqrt(2/pi) * 1.044715 = 0.8335565; 0.5 (1 + tanh u) = 0.8411920 at x = 1
    (nf.GELU("tanh"), [0.0, 1.0], [0.0, 0.8411919906], [0.5, 1.0829640838]),
    # sigmoid(ln 3) = 3/4: y = 3/4 ln 3; slope s (1 + x (1 - s)) = 3/4 (1 + ln 3 / 4)
    (nf.SiLU(), [0.0, LN3], [0.0, 0.75 * LN3], [0.5, 0.75 * (1 + LN3 / 4)]),
    # softplus(0) = ln 2, tanh(ln 2) = 3/5; softplus(ln 3) = ln 4, tanh(ln 4) = 15/17
    # slope at 0: tanh(ln 2) + 0 = 3/5
    (
        nf.Mish(),
        [0.0, LN3],
        [0.0, 15 / 17 * LN3],
        [0.6, 15 / 17 + LN3 * (1 - (15 / 17) ** 2) * 0.75],
    ),
    # beta = 2: ln(1 + e^0) / 2 = ln 2 / 2, slope sigmoid(0) = 1/2; beta x = 2 > 1: linear
    (nf.Softplus(beta=2.0, threshold=1.0), [0.0, 1.0], [LN2 / 2, 1.0], [0.5, 1.0]),
    (nf.Softsign(), [3.0, -1.0], [0.75, -0.5], [1 / 16, 1 / 4]),
    (nf.Sigmoid(), [0.0, LN3], [0.5, 0.75], [0.25, 3 / 16]),
    (nf.LogSigmoid(), [0.0, LN3], [-LN2, math.log(0.75)], [0.5, 0.25]),
    (nf.Tanh(), [LN2], [0.6], [0.64]),  # tanh(ln 2) = (4 - 1) / (4 + 1)
    (nf.Hardtanh(-2.0, 0.5), [-3.0, 0.25, 1.0], [-2.0, 0.25, 0.5], [0.0, 1.0, 0.0]),
    (nf.Hardsigmoid(), [-4.0, 0.0, 1.5, 4.0], [0.0, 0.5, 0.75, 1.0], [0.0, 1 / 6, 1 / 6, 0.0]),
    # x (x + 3) / 6 between -3 and 3, slope x / 3 + 1/2
    (nf.Hardswish(), [-4.0, -1.5, 1.5, 4.0], [0.0, -0.375, 1.125, 4.0], [0.0, 0.0, 1.0, 1.0]),
    (nf.ReLU6(), [-1.0, 3.0, 7.0], [0.0, 3.0, 6.0], [0.0, 1.0, 0.0]),
    (nf.Identity(), [-1.5, 2.0], [-1.5, 2.0], [1.0, 1.0]),
]


@pytest.mark.parametrize("module, x, y, dydx", WORKED, ids=[repr(w[0]) for w in WORKED])
def test_worked_example(module, x, y, dydx):
    x = np.array(x, dtype=np.float32)
    out = module(x)
    assert out.dtype == np.float32
    np.testing.assert_allclose(out, y, rtol=1e-6, atol=1e-7)
    g = np.array([2.0] * len(x), dtype=np.float32)  # a gradient of 2 doubles each slope
    np.testing.assert_allclose(module.backward(g), 2 * np.array(dydx), rtol=1e-6, atol=1e-7)


def test_prelu_worked_example_per_channel():
    layer = nf.PReLU(2, init=0.5)
    x = np.array([[-2.0, 4.0], [1.0, -6.0]], dtype=np.float32)  # channel 0: -2, 1; channel 1: 4, -6
    np.testing.assert_allclose(layer(x), [[-1.0, 4.0], [1.0, -3.0]])
    dx = layer.backward(np.ones_like(x))
    np.testing.assert_allclose(dx, [[0.5, 1.0], [1.0, 0.5]])
    np.testing.assert_allclose(layer.weight.grad, [-2.0, -6.0])  # sum of x where x <= 0


def test_prelu_per_channel_on_axis_1_of_nchw():
    layer = nf.PReLU(2, init=0.0)
    layer.weight.data[...] = [0.5, 2.0]
    x = -np.ones((1, 2, 2, 2), dtype=np.float32)
    np.testing.assert_allclose(layer(x)[0, :, 0, 0], [-0.5, -2.0])
    layer.backward(np.ones_like(x))
    np.testing.assert_allclose(layer.weight.grad, [-4.0, -4.0])  # 4 elements per channel


def test_softmax_and_log_softmax_worked_example():
    x = np.array([[0.0, LN3]], dtype=np.float32)  # e^x = (1, 3)
    sm, lsm = nf.Softmax(dim=-1), nf.LogSoftmax(dim=-1)
    np.testing.assert_allclose(sm(x), [[0.25, 0.75]], rtol=1e-6)
    np.testing.assert_allclose(lsm(x), [[math.log(0.25), math.log(0.75)]], rtol=1e-6)
    g = np.array([[1.0, 0.0]], dtype=np.float32)
    # softmax: y * (g - <g, y>) = (1/4 * 3/4, 3/4 * -1/4)
    np.testing.assert_allclose(sm.backward(g), [[0.1875, -0.1875]], rtol=1e-6)
    # log-softmax: g - softmax * sum(g) = (1 - 1/4, -3/4)
    np.testing.assert_allclose(lsm.backward(g), [[0.75, -0.75]], rtol=1e-6)


def test_softmax_default_dim_is_the_last():
    assert nf.Softmax().dim == nf.LogSoftmax().dim == -1
    x = np.zeros((2, 4), dtype=np.float32)
    np.testing.assert_allclose(nf.Softmax()(x), np.full((2, 4), 0.25))


def test_softmax_dim_chooses_the_axis():
    x = np.log(np.array([[1.0, 3.0], [1.0, 1.0]], dtype=np.float32))
    np.testing.assert_allclose(nf.Softmax(dim=0)(x), [[0.5, 0.75], [0.5, 0.25]], rtol=1e-6)
    np.testing.assert_allclose(nf.Softmax(dim=1)(x).sum(axis=1), [1.0, 1.0], rtol=1e-6)


# ---------------------------------------------------------------------------- stability, dtype
EXTREMES = [-1e4, -1e3, -100, -30, -20, -3, -1, -0.5, 0, 0.5, 1, 3, 20, 30, 100, 1e3, 1e4, -1e4]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_stable_at_plus_minus_1e4(case, dtype):
    """No overflow, division-by-zero or invalid operation, and finite outputs and gradients.

    Underflow is left at numpy's default (ignored): exp(-1e4) rounding to 0 is the right answer.
    """
    x = np.array(EXTREMES, dtype=dtype).reshape(2, 3, 3)  # axis 1 has PReLU(3)'s 3 channels
    module = case.make().to(dtype)
    g = np.random.default_rng(0).normal(size=x.shape).astype(dtype)
    with warnings.catch_warnings(), np.errstate(over="raise", divide="raise", invalid="raise"):
        warnings.simplefilter("error")
        y = module(x)
        dx = module.backward(g)
    assert y.dtype == dtype and dx.dtype == dtype
    assert np.all(np.isfinite(y)), y
    assert np.all(np.isfinite(dx)), dx
    for p in module.parameters():
        assert np.all(np.isfinite(p.grad))


def test_stable_values_at_the_extremes():
    x = np.array([-1e4, 1e4], dtype=np.float32)
    np.testing.assert_array_equal(nf.Sigmoid()(x), [0.0, 1.0])
    np.testing.assert_array_equal(nf.LogSigmoid()(x), [-1e4, 0.0])
    np.testing.assert_array_equal(nf.Softplus()(x), [0.0, 1e4])
    np.testing.assert_array_equal(nf.GELU()(x), [0.0, 1e4])
    np.testing.assert_array_equal(nf.GELU("tanh")(x), [0.0, 1e4])
    np.testing.assert_array_equal(nf.SiLU()(x), [0.0, 1e4])
    np.testing.assert_array_equal(nf.Mish()(x), [0.0, 1e4])
    np.testing.assert_allclose(nf.ELU()(x), [-1.0, 1e4])
    np.testing.assert_allclose(nf.Softmax()(x), [0.0, 1.0])
    np.testing.assert_allclose(nf.LogSoftmax()(x), [-2e4, 0.0])


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_float32_stays_float32(case):
    module = case.make()
    x = draw_input(case, 3, (2, 3)).astype(np.float32)
    y = module(x)
    assert y.dtype == np.float32
    assert module.backward(np.ones_like(y)).dtype == np.float32
    for p in module.parameters():
        assert p.data.dtype == p.grad.dtype == np.float32


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_non_float_input_becomes_float32(case):
    x = np.arange(-3, 3).reshape(1, 6) if not case.channels else np.ones((2, 3), dtype=np.int64)
    assert case.make()(x.tolist() if case.name != "Identity" else x.astype(np.float32)).dtype == (
        np.float32
    )


@pytest.mark.parametrize("case", [c for c in CASES if not c.min_ndim and not c.channels], ids=str)
def test_zero_d_input(case):
    """A 0-d input gives a 0-d output and gradient, equal to the one-element array's."""
    one, scalar = case.make(), case.make()
    x = np.array([-0.7], dtype=np.float32)
    y1, y0 = one(x), scalar(x[0, ...])
    g1, g0 = one.backward(np.ones_like(y1)), scalar.backward(np.ones((), np.float32))
    assert np.shape(y0) == np.shape(g0) == ()
    assert np.asarray(y0).dtype == np.asarray(g0).dtype == np.float32
    np.testing.assert_array_equal(y0, y1[0])
    np.testing.assert_array_equal(g0, g1[0])


def test_float64_input_keeps_float64_and_prelu_casts_to_its_weight():
    x = np.linspace(-2, 2, 5)
    assert nf.GELU()(x).dtype == np.float64
    assert nf.PReLU()(x).dtype == np.float32  # like Dense: the input follows the parameters
    assert nf.PReLU().to(np.float64)(x).dtype == np.float64


def test_forward_does_not_write_into_its_input():
    for case in CASES:
        x = draw_input(case, 1, (3, 3)).astype(np.float32)
        x0 = x.copy()
        module = case.make()
        module.backward(module(x))
        np.testing.assert_array_equal(x, x0, err_msg=str(case))


# ---------------------------------------------------------------------------- pure functions
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_pure_functions_match_scipy(dtype):
    x = np.array([-1e4, -50, -3, -0.1, 0, 0.1, 3, 50, 1e4], dtype=dtype)
    rtol = 1e-6 if dtype == np.float32 else 1e-13
    with np.errstate(over="raise", divide="raise", invalid="raise"):
        results = {
            "sigmoid": (A.sigmoid(x), special.expit(x)),
            "softplus": (A.softplus(x), np.logaddexp(0, x)),
            "log_sigmoid": (A.log_sigmoid(x), special.log_expit(x)),
            "softmax": (A.softmax(x), special.softmax(x)),
            "log_softmax": (A.log_softmax(x), special.log_softmax(x)),
        }
    for name, (ours, ref) in results.items():
        assert ours.dtype == dtype, name
        np.testing.assert_allclose(ours, ref, rtol=rtol, atol=1e-30, err_msg=name)


def test_float32_erfc_fit_is_accurate_to_a_few_ulps():
    z = np.linspace(0, 15, 30001).astype(np.float32)
    ref = special.erfc(z.astype(np.float64))
    with np.errstate(over="raise", divide="raise", invalid="raise"):
        ours = A._erfc_nonnegative(z)
    assert ours.dtype == np.float32
    normal = ref > np.finfo(np.float32).tiny  # below it float32 itself has fewer digits
    np.testing.assert_allclose(ours[normal], ref[normal], rtol=1e-6)
    assert np.all(ours[~normal] < 2 * np.finfo(np.float32).tiny)


@given(seed=seeds)
def test_float32_gelu_matches_float64(seed):
    x = np.random.default_rng(seed).normal(0, 4, size=64).astype(np.float32)
    cdf32, cdf64 = A.normal_cdf(x), special.ndtr(x.astype(np.float64))
    assert cdf32.dtype == np.float32
    # relative to Phi, plus the float32 rounding of x / sqrt(2), amplified by x^2 in the tail
    normal = cdf64 > np.finfo(np.float32).tiny  # below it float32 itself has fewer digits
    rel = np.abs(cdf32 - cdf64)[normal] / cdf64[normal]
    assert np.all(rel <= 1e-6 * (1 + x[normal].astype(np.float64) ** 2)), (x, rel)
    assert np.all(cdf32[~normal] < 2 * np.finfo(np.float32).tiny)
    m32, m64 = nf.GELU(), nf.GELU().to(np.float64)
    np.testing.assert_allclose(m32(x), m64(x.astype(np.float64)), rtol=2e-6, atol=1e-7)
    g = np.ones_like(x)
    np.testing.assert_allclose(
        m32.backward(g), m64.backward(g.astype(np.float64)), rtol=2e-6, atol=1e-7
    )


# ---------------------------------------------------------------------------- errors
@pytest.mark.parametrize(
    "build, error, message",
    [
        (lambda: nf.LeakyReLU(math.inf), ValueError, r"^LeakyReLU: invalid negative_slope=inf \(must be finite\)$"),
        (lambda: nf.LeakyReLU("0.1"), TypeError, r"^LeakyReLU: expected negative_slope to be a real number, got str$"),
        (lambda: nf.PReLU(0), ValueError, r"^PReLU: invalid num_parameters=0 \(must be an integer >= 1\)$"),
        (lambda: nf.PReLU(2.5), ValueError, r"^PReLU: invalid num_parameters=2.5 \(must be an integer >= 1\)$"),
        (lambda: nf.PReLU(init=math.nan), ValueError, r"^PReLU: invalid init=nan \(must not be NaN\)$"),
        (lambda: nf.ELU(alpha=math.nan), ValueError, r"^ELU: invalid alpha=nan \(must not be NaN\)$"),
        (lambda: nf.CELU(alpha=0), ValueError, r"^CELU: invalid alpha=0.0 \(must be > 0\)$"),
        (lambda: nf.CELU(alpha=-1.0), ValueError, r"^CELU: invalid alpha=-1.0 \(must be > 0\)$"),
        (lambda: nf.GELU("exact"), ValueError, r"^GELU: invalid approximate='exact' \(must be 'none' or 'tanh'\)$"),
        (lambda: nf.Softplus(beta=0), ValueError, r"^Softplus: invalid beta=0.0 \(must be > 0\)$"),
        (lambda: nf.Softplus(beta=-2.0), ValueError, r"^Softplus: invalid beta=-2.0 \(must be > 0\)$"),
        (lambda: nf.Softplus(threshold=None), TypeError, r"^Softplus: expected threshold to be a real number, got NoneType$"),
        (lambda: nf.Hardtanh(1.0, -1.0), ValueError, r"^Hardtanh: invalid max_val=-1.0 \(must be > min_val=1.0\)$"),
        (lambda: nf.Hardtanh(0.5, 0.5), ValueError, r"^Hardtanh: invalid max_val=0.5 \(must be > min_val=0.5\)$"),
        (lambda: nf.Softmax(dim=1.0), TypeError, r"^Softmax: expected dim to be an int, got float$"),
        (lambda: nf.LogSoftmax(dim=None), TypeError, r"^LogSoftmax: expected dim to be an int, got NoneType$"),
    ],
)  # fmt: skip
def test_bad_hyperparameters(build, error, message):
    with pytest.raises(error, match=message):
        build()


def test_prelu_channel_mismatch():
    x = np.zeros((2, 4), dtype=np.float32)
    with pytest.raises(
        nf.ShapeError,
        match=r"^PReLU\(num_parameters=3\): expected input of shape \(N, 3\), got \(2, 4\)$",
    ):
        nf.PReLU(3)(x)
    with pytest.raises(
        nf.ShapeError, match=r"expected input of shape \(N, 3, \*\), got \(5, 2, 3\)"
    ):
        nf.PReLU(3)(np.zeros((5, 2, 3)))
    with pytest.raises(nf.ShapeError, match=r"expected input of shape \(N, 3\), got \(3,\)"):
        nf.PReLU(3)(np.zeros(3))  # a 1-D input has no channel axis (as PyTorch)


def test_softmax_dim_out_of_range():
    x = np.zeros((2, 3), dtype=np.float32)
    with pytest.raises(
        nf.ShapeError,
        match=r"^Softmax\(dim=2\): expected an input with at least 3 dimension\(s\), got shape \(2, 3\)$",
    ):
        nf.Softmax(dim=2)(x)
    with pytest.raises(
        nf.ShapeError,
        match=r"^LogSoftmax\(dim=-3\): expected an input with at least 3 dimension\(s\), got shape \(2, 3\)$",
    ):
        nf.LogSoftmax(dim=-3)(x)


@pytest.mark.parametrize("case", [c for c in CASES if c.name != "Identity"], ids=IDS[:-1])
def test_backward_before_forward(case):
    module = case.make()
    with pytest.raises(RuntimeError, match=r": backward called before forward$"):
        module.backward(np.ones((2, 3), dtype=np.float32))


def test_complex_input_refused():
    with pytest.raises(
        TypeError, match=r"^GELU\(approximate='none'\): expected a real numeric input"
    ):
        nf.GELU()(np.ones(2, dtype=np.complex64))


def test_inplace_is_accepted_and_never_overwrites_the_input():
    x = np.array([-1.0, 2.0], dtype=np.float32)
    y = nf.ReLU(inplace=True)(x)
    np.testing.assert_array_equal(y, [0.0, 2.0])
    np.testing.assert_array_equal(x, [-1.0, 2.0])  # PyTorch's flag; nnframe returns a new array
    with pytest.raises(TypeError, match="ReLU: expected inplace to be a bool, got 'yes'"):
        nf.ReLU(inplace="yes")


# ---------------------------------------------------------------------------- PyTorch parity
@pytest.mark.parametrize("case", CASES, ids=IDS)
@given(seed=seeds, shape=shapes_with_0d)
def test_matches_torch_float64(case, seed, shape):
    torch = pytest.importorskip("torch")
    x = draw_input(case, seed, shape)
    g = np.random.default_rng(seed).normal(size=x.shape)
    ours = randomize(case.make(), seed).to(np.float64)
    theirs = case.make_torch(torch).double()
    if case.name == "PReLU":
        with torch.no_grad():
            theirs.weight.copy_(torch.from_numpy(ours.weight.data))
    xt = torch.from_numpy(x.copy()).requires_grad_(True)
    yt = theirs(xt)
    yt.backward(torch.from_numpy(g))
    y = ours(x)
    np.testing.assert_allclose(y, yt.detach().numpy(), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(ours.backward(g), xt.grad.numpy(), rtol=case.torch_rtol, atol=1e-12)
    if case.name == "PReLU":
        np.testing.assert_allclose(
            ours.weight.grad, theirs.weight.grad.numpy(), rtol=1e-9, atol=1e-12
        )


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_repr_matches_torch(case):
    torch = pytest.importorskip("torch")
    assert repr(case.make()) == repr(case.make_torch(torch))


def test_prelu_state_dict_loads_from_torch():
    torch = pytest.importorskip("torch")
    theirs = torch.nn.PReLU(3, init=0.1)
    with torch.no_grad():
        theirs.weight.copy_(torch.tensor([0.1, 0.2, 0.3]))
    ours = nf.PReLU(3)
    ours.load_state_dict({k: v.numpy() for k, v in theirs.state_dict().items()})
    np.testing.assert_allclose(ours.weight.data, [0.1, 0.2, 0.3])
