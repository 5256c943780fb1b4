"""Activations as Modules, with PyTorch's names and arguments.

Every activation is stable for inputs of +-1e4 in float32: no overflow, division or invalid
warnings, and finite outputs and gradients. ``exp`` is only ever taken of a non-positive number
(or of a clipped one), so the worst that can happen is a harmless underflow to 0.

dtype: a floating input keeps its dtype (float32 in, float32 out; float64 for gradient checks);
any other input (lists, ints, bools) is cast to float32. PReLU, which holds a parameter, casts its
input to the parameter's dtype like Dense does.

Where the derivative is cheaper from the output (sigmoid, tanh, softmax, ...), the output is
cached instead of the input. The math lives in small pure functions (:mod:`nnframe.functional`: ``sigmoid``,
``softplus``, ``log_sigmoid``, ``softmax``, ``log_softmax``; here: :func:`normal_cdf`) that the
Modules call and that users may call on plain arrays.

PyTorch's ``inplace=`` is accepted (and shown in the repr when True, as PyTorch shows it), but a
forward never writes into its input: the output is always a new array.

Performance: a data-dependent ``np.where`` (or a masked copy) costs several times a plain
arithmetic pass, so the piecewise functions are written as sums of one-sided pieces instead
(``max(x, 0) + slope * min(x, 0)``), and their derivatives as a 0/1 mask turned into numbers.
"""

from __future__ import annotations

import math
import numbers

import numpy as np

from nnframe._pytorch_args import check_device as _check_device
from nnframe._pytorch_args import check_flag as _check_flag
from nnframe._pytorch_args import resolve_dtype as _resolve_dtype
from nnframe.core.backend import array_module
from nnframe.core.backend import special as special_functions
from nnframe.core.errors import (
    ShapeError,
    as_float_input,
    check_features,
    check_hyper,
    expected_got,
    fmt_shape,
)
from nnframe.core.module import Module
from nnframe.core.parameter import Parameter
from nnframe.functional import log_sigmoid, log_softmax, sigmoid, softmax, softplus


# ---------------------------------------------------------------------------- helpers
def _input(who: Module, x) -> np.ndarray:
    """A floating input as is (no copy); anything else cast to float32 (or refused)."""
    if type(x) is np.ndarray and x.dtype.kind == "f":
        return x
    if array_module(x) is not np and x.dtype.kind == "f":
        return x  # a floating array of another module (CuPy)
    return as_float_input(who, x, np.dtype(np.float32))


def _real(who: str, name: str, value) -> float:
    """A hyperparameter as a Python float (a weak scalar: it never upcasts float32 arrays)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(expected_got(who, f"{name} to be a real number", type(value).__name__))
    value = float(value)
    check_hyper(who, name, value, not math.isnan(value), "must not be NaN")
    return value


def _mix(mask: np.ndarray, a, b, dtype) -> np.ndarray:
    """``a`` where mask else ``b`` (scalars or broadcastable arrays), as a float array of dtype:
    b + mask * (a - b), a few cheap passes instead of a data-dependent np.where."""
    d = mask.astype(dtype)
    d *= a - b
    d += b
    return d


def _with_inplace(module: Module, text: str = "") -> str:
    """``extra_repr`` text followed by ``inplace=True`` when set, as PyTorch's reprs show it."""
    if not module.inplace:
        return text
    return f"{text}, inplace=True" if text else "inplace=True"


def _finite(who: str, name: str, value) -> float:
    value = _real(who, name, value)
    check_hyper(who, name, value, math.isfinite(value), "must be finite")
    return value


class _InplaceFlag(Module):
    """An activation whose only argument is PyTorch's ``inplace`` flag: accepted, shown in the
    repr where PyTorch shows it (``_shows_inplace``); the output is always a new array here."""

    _shows_inplace = True

    def __init__(self, inplace: bool = False):
        super().__init__()
        self.inplace = _check_flag(type(self).__name__, "inplace", inplace)

    def extra_repr(self) -> str:
        return _with_inplace(self) if self._shows_inplace else ""


# ---------------------------------------------------------------------------- piecewise linear
class ReLU(_InplaceFlag):
    """max(0, x).

    Shape:
        input: any.    output: same as input.

    Example:
        >>> import numpy as np, nnframe as nf
        >>> nf.ReLU()(np.array([-1.0, 2.0], dtype=np.float32))
        array([0., 2.], dtype=float32)
    """

    def forward(self, x):
        y = np.maximum(_input(self, x), 0)  # one pass; the int 0 keeps the input's dtype
        self.save_for_backward(y)
        return y

    def backward(self, grad_output):
        (y,) = self.saved
        return grad_output * (y > 0)  # derivative 1 where x > 0, else 0: read from the output


class LeakyReLU(Module):
    """x for x > 0, negative_slope * x otherwise.

    Args:
        negative_slope: the slope for x <= 0 (any finite number, as PyTorch).

    Shape:
        input: any.    output: same as input.
    """

    def __init__(self, negative_slope: float = 0.01, inplace: bool = False):
        super().__init__()
        self.inplace = _check_flag("LeakyReLU", "inplace", inplace)  # accepted: a new array
        self.negative_slope = _finite("LeakyReLU", "negative_slope", negative_slope)

    def extra_repr(self) -> str:
        return _with_inplace(self, f"negative_slope={self.negative_slope}")

    def forward(self, x):
        x = _input(self, x)
        self.save_for_backward(x > 0)
        y = np.minimum(x, 0)
        y *= self.negative_slope
        y += np.maximum(x, 0)  # max(x, 0) + slope * min(x, 0): one piece is 0, the other exact
        return y

    def backward(self, grad_output):
        (mask,) = self.saved
        # derivative 1 where x > 0, negative_slope elsewhere
        return grad_output * _mix(mask, 1, self.negative_slope, grad_output.dtype)


class PReLU(Module):
    """x for x > 0, weight * x otherwise, with a learnable slope ``weight``.

    Args:
        num_parameters: 1 (one slope shared by every element) or the number of channels C of
            the input (one slope per channel, channels on axis 1 as in PyTorch).
        init: the initial slope.
        dtype: parameter dtype (float32); the input is cast to it.

    Parameters:
        weight: (num_parameters,), as PyTorch's, so their state_dicts load into each other.

    Shape:
        input: any when num_parameters == 1, else (N, C, *).    output: same as input.
    """

    def __init__(self, num_parameters: int = 1, init: float = 0.25, device=None, dtype=np.float32):
        super().__init__()
        _check_device("PReLU", device)
        dtype = _resolve_dtype(dtype)
        check_hyper(
            "PReLU",
            "num_parameters",
            num_parameters,
            isinstance(num_parameters, (int, np.integer)) and num_parameters >= 1,
            "must be an integer >= 1",
        )
        init = _finite("PReLU", "init", init)
        self.num_parameters = int(num_parameters)
        self.weight = Parameter(np.full(self.num_parameters, init, dtype=dtype))

    def extra_repr(self) -> str:
        return f"num_parameters={self.num_parameters}"

    def _slope(self, ndim: int) -> np.ndarray:
        """The weight shaped to broadcast against an input of ``ndim`` dimensions."""
        w = self.weight.data
        if self.num_parameters == 1:
            return w.reshape(())  # 0-d: keeps the input's shape, even for a 0-d input
        return w.reshape((1, -1) + (1,) * (ndim - 2))  # (1, C, 1, ...): axis 1

    def forward(self, x):
        x = as_float_input(self, x, self.weight.data.dtype)
        if self.num_parameters > 1:
            check_features(self, x, self.num_parameters, axis=1)
        negative = np.minimum(x, 0)
        self.save_for_backward(x > 0, negative)
        return np.maximum(x, 0) + negative * self._slope(x.ndim)

    def backward(self, grad_output):
        mask, negative = self.saved
        if self.weight.requires_grad:
            # dL/dw_c = sum of g * min(x, 0) over the elements of channel c
            gx = grad_output * negative
            if self.num_parameters == 1:
                self.weight.grad += gx.sum()
            else:
                axes = (0,) + tuple(range(2, gx.ndim))
                self.weight.grad += gx.sum(axis=axes)
        # dL/dx: g where x > 0, g * w elsewhere
        return grad_output * _mix(mask, 1, self._slope(mask.ndim), grad_output.dtype)


class Hardtanh(Module):
    """x clipped to [min_val, max_val].

    Args:
        min_val, max_val: the bounds (min_val < max_val).
        inplace: PyTorch's in-place flag. Accepted; nnframe never overwrites a layer's
            input (its backward may need it), so the output is always a new array.
        min_value, max_value: PyTorch's deprecated spellings of min_val and max_val; when
            given, they take their place.

    Shape:
        input: any.    output: same as input.
    """

    def __init__(
        self,
        min_val: float = -1.0,
        max_val: float = 1.0,
        inplace: bool = False,
        min_value: float | None = None,
        max_value: float | None = None,
    ):
        super().__init__()
        who = type(self).__name__
        self.inplace = _check_flag(who, "inplace", inplace)  # accepted: a new array
        min_val = min_val if min_value is None else min_value
        max_val = max_val if max_value is None else max_value
        self.min_val = _real(who, "min_val", min_val)
        self.max_val = _real(who, "max_val", max_val)
        check_hyper(
            who,
            "max_val",
            self.max_val,
            self.max_val > self.min_val,
            f"must be > min_val={min_val}",
        )

    def extra_repr(self) -> str:
        return _with_inplace(self, f"min_val={self.min_val}, max_val={self.max_val}")

    def forward(self, x):
        x = _input(self, x)
        self.save_for_backward((x > self.min_val) & (x < self.max_val))
        return np.clip(x, self.min_val, self.max_val)

    def backward(self, grad_output):
        (inside,) = self.saved
        return grad_output * inside  # slope 1 strictly inside the bounds, 0 outside (PyTorch)


class ReLU6(Hardtanh):
    """min(max(0, x), 6): Hardtanh(0, 6).

    Shape:
        input: any.    output: same as input.
    """

    def __init__(self, inplace: bool = False):
        super().__init__(0.0, 6.0, inplace)

    def extra_repr(self) -> str:
        return _with_inplace(self)


def _hardsigmoid(x: np.ndarray) -> np.ndarray:
    """clip(x / 6 + 1/2, 0, 1), in place on one new array."""
    y = array_module(x).asarray(x / 6)
    y += 0.5
    np.clip(y, 0, 1, out=y)
    return y


class Hardsigmoid(_InplaceFlag):
    """A piecewise-linear sigmoid: 0 for x <= -3, 1 for x >= 3, x / 6 + 1/2 between.

    Shape:
        input: any.    output: same as input.
    """

    _shows_inplace = False  # PyTorch's repr leaves the flag out

    def forward(self, x):
        x = _input(self, x)
        self.save_for_backward((x > -3) & (x < 3))
        return _hardsigmoid(x)

    def backward(self, grad_output):
        (inside,) = self.saved
        g = grad_output * inside
        g /= 6  # slope 1/6 on (-3, 3), 0 outside
        return g


class Hardswish(_InplaceFlag):
    """x * hardsigmoid(x): 0 for x <= -3, x for x >= 3, x (x + 3) / 6 between.

    Shape:
        input: any.    output: same as input.
    """

    _shows_inplace = False  # PyTorch's repr leaves the flag out

    def forward(self, x):
        x = _input(self, x)
        self.save_for_backward(x)
        y = _hardsigmoid(x)
        y *= x
        return y

    def backward(self, grad_output):
        (x,) = self.saved
        # d/dx x (x + 3) / 6 = x / 3 + 1/2 on [-3, 3]; 0 below, 1 above (PyTorch's convention)
        d = x / 3
        d += 0.5
        d *= (x >= -3) & (x <= 3)
        d += x > 3
        d *= grad_output
        return d


# ---------------------------------------------------------------------------- exponential
class ELU(Module):
    """x for x > 0, alpha * (exp(x) - 1) otherwise.

    Args:
        alpha: the value approached as x -> -inf is -alpha (any finite number, as PyTorch).

    Shape:
        input: any.    output: same as input.
    """

    def __init__(self, alpha: float = 1.0, inplace: bool = False):
        super().__init__()
        self.inplace = _check_flag(type(self).__name__, "inplace", inplace)  # a new array
        self.alpha = _finite(type(self).__name__, "alpha", alpha)

    def extra_repr(self) -> str:
        return _with_inplace(self, f"alpha={self.alpha}")

    def forward(self, x):
        x = _input(self, x)
        # expm1 of min(x, 0) <= 0 cannot overflow, is accurate near 0, and is 0 for x > 0
        e = np.expm1(np.minimum(x, 0))
        self.save_for_backward(x > 0 if self.alpha != 1 else None, e)
        y = e * self.alpha
        y += np.maximum(x, 0)
        return y

    def backward(self, grad_output):
        mask, e = self.saved
        # x <= 0: d/dx alpha (exp(x) - 1) = alpha (e + 1); x > 0: 1. As e = 0 for x > 0,
        # alpha (e + 1) is alpha there, and the mask adds the missing 1 - alpha.
        d = e + 1
        if mask is not None:
            d *= self.alpha
            d += _mix(mask, 1 - self.alpha, 0, d.dtype)
        return grad_output * d


class CELU(Module):
    """max(0, x) + min(0, alpha * (exp(x / alpha) - 1)): an ELU that is C1 for every alpha.

    Args:
        alpha: > 0. (PyTorch also accepts alpha < 0, but then exp(x / alpha) overflows for very
            negative x; nnframe refuses it.)

    Shape:
        input: any.    output: same as input.
    """

    def __init__(self, alpha: float = 1.0, inplace: bool = False):
        super().__init__()
        self.inplace = _check_flag(type(self).__name__, "inplace", inplace)  # a new array
        alpha = _finite("CELU", "alpha", alpha)
        check_hyper("CELU", "alpha", alpha, alpha > 0, "must be > 0")
        self.alpha = alpha

    def extra_repr(self) -> str:
        return _with_inplace(self, f"alpha={self.alpha}")

    def forward(self, x):
        x = _input(self, x)
        e = array_module(x).asarray(np.minimum(x, 0))
        e /= self.alpha
        np.expm1(e, out=e)  # of a number <= 0: no overflow; exactly 0 for x > 0
        self.save_for_backward(e)
        y = e * self.alpha
        y += np.maximum(x, 0)
        return y

    def backward(self, grad_output):
        (e,) = self.saved
        # x <= 0: d/dx alpha (exp(x / alpha) - 1) = exp(x / alpha) = e + 1; x > 0: e + 1 = 1
        return grad_output * (e + 1)


class SELU(ELU):
    """scale * ELU(x, alpha) with the self-normalizing constants of Klambauer et al. (2017).

    Shape:
        input: any.    output: same as input.
    """

    ALPHA = 1.6732632423543772848170429916717
    SCALE = 1.0507009873554804934193349852946

    def __init__(self, inplace: bool = False):
        super().__init__(self.ALPHA, inplace)

    def extra_repr(self) -> str:
        return _with_inplace(self)

    def forward(self, x):
        return super().forward(x) * self.SCALE

    def backward(self, grad_output):
        # d SELU = scale * d ELU; the ELU's cached output is the unscaled one
        return super().backward(grad_output) * self.SCALE


# ---------------------------------------------------------------------------- smooth gates
_SQRT2 = math.sqrt(2.0)
_INV_SQRT_2PI = 1.0 / math.sqrt(2.0 * math.pi)
_SQRT_2_OVER_PI = math.sqrt(2.0 / math.pi)
_GELU_CUBIC = 0.044715


# erfc(z) = t exp(-z^2 + P(t)), t = 1 / (1 + z / 2), for z >= 0: the Chebyshev fit of Numerical
# Recipes (erfcc), relative error below 1.2e-7 for every z >= 0; P's coefficients, constant first.
_ERFC_P = (
    -1.26551223,
    1.00002368,
    0.37409196,
    0.09678418,
    -0.18628806,
    0.27886807,
    -1.13520398,
    1.48851587,
    -0.82215223,
    0.17087277,
)


def _erfc_nonnegative(z: np.ndarray) -> np.ndarray:
    """erfc(z) for float32 z in [0, 15] by the fit above, with numpy's fast (SIMD) exp.

    Relative error about 5e-7 (a few float32 ulps) everywhere, tails included: -z^2 is split as
    -s^2 - (z - s)(z + s), with s = z with its 12 low mantissa bits cleared, so s^2 is exact
    and exp(-s^2) does not amplify the rounding of a large argument.
    """
    xp = array_module(z)
    t = xp.asarray(z * 0.5)
    t += 1
    np.reciprocal(t, out=t)
    p = xp.asarray(t * _ERFC_P[-1])
    for c in _ERFC_P[-2:0:-1]:  # Horner's rule
        p += c
        p *= t
    p += _ERFC_P[0]
    s = xp.asarray(z.view(np.int32) & np.int32(-4096)).view(np.float32)
    p -= (z - s) * (z + s)
    np.exp(p, out=p)
    s *= s
    np.negative(s, out=s)
    np.exp(s, out=s)
    p *= s
    p *= t
    return p


def normal_cdf(x: np.ndarray) -> np.ndarray:
    """Phi(x), the standard normal CDF, with full relative precision in both tails.

    Phi(x) = erfc(-x / sqrt 2) / 2 (no 1 + erf cancellation for negative x). float64 uses
    scipy's erfc; float32 uses a rational-exponential fit (:func:`_erfc_nonnegative`), accurate
    to a few float32 ulps and several times faster than scipy's erfc, which computes in double.
    """
    if x.dtype != np.float32:
        return special_functions(x).erfc(x * -(1 / _SQRT2)) * 0.5
    # the upper tail q = erfc(|x| / sqrt 2) / 2 = Phi(-|x|); |x| / sqrt 2 is clipped at 15,
    # where erfc is below 1e-99 (0 in float32), so z * z cannot overflow
    z = array_module(x).asarray(np.abs(x))
    z *= 1 / _SQRT2
    np.minimum(z, 15, out=z)
    q = _erfc_nonnegative(z)
    q *= 0.5
    # Phi(x) = q for x < 0 and 1 - q for x >= 0: q * (1 - 2 [x >= 0]) + [x >= 0]
    positive = x >= 0
    q *= _mix(positive, -1, 1, x.dtype)
    q += positive
    return q


def gelu(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Exact GELU x * Phi(x), with Phi the standard normal CDF; returns (y, Phi(x)).

    The derivative is Phi(x) + x * phi(x), with phi the normal density (:func:`gelu_grad`).
    """
    cdf = normal_cdf(x)
    return x * cdf, cdf


def gelu_grad(x: np.ndarray, cdf: np.ndarray) -> np.ndarray:
    """d/dx x Phi(x) = Phi(x) + x phi(x), phi(x) = exp(-x^2 / 2) / sqrt(2 pi).

    x is clipped to [-40, 40] inside phi: beyond it phi is below exp(-800), which is 0 even in
    float64, so the clip changes nothing and x * x cannot overflow.
    """
    pdf = array_module(x).asarray(np.clip(x, -40, 40))
    pdf *= pdf
    pdf *= -0.5
    np.exp(pdf, out=pdf)
    pdf *= _INV_SQRT_2PI
    pdf *= x
    pdf += cdf
    return pdf


def gelu_tanh(x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """GELU's tanh approximation 0.5 x (1 + tanh(u)), u = sqrt(2/pi) (x + 0.044715 x^3).

    Written as x * sigmoid(2u) (since 0.5 (1 + tanh(u)) = sigmoid(2u)), which keeps precision for
    negative x. x is clipped to [-20, 20] inside u: there sigmoid(2u) is already 1 (or below
    1e-260), so the clip changes nothing and x^3 cannot overflow. Returns (y, s, xc) with
    s = sigmoid(2u) and xc the clipped x, which is what :func:`gelu_tanh_grad` needs.
    """
    xc = np.clip(x, -20, 20)
    s = sigmoid(xc * (1 + _GELU_CUBIC * xc * xc) * (2 * _SQRT_2_OVER_PI))
    return x * s, s, xc


def gelu_tanh_grad(xc: np.ndarray, s: np.ndarray) -> np.ndarray:
    """d/dx x sigmoid(2u) = s + x * 2 s (1 - s) * du/dx, du/dx = sqrt(2/pi) (1 + 3 * 0.044715 x^2).

    Uses the clipped x: where |x| > 20, s (1 - s) is 0 (or below 1e-260), so the term vanishes.
    """
    du = (1 + (3 * _GELU_CUBIC) * xc * xc) * (2 * _SQRT_2_OVER_PI)
    return s + xc * s * (1 - s) * du


class GELU(Module):
    """Gaussian error linear unit x * Phi(x), or its tanh approximation.

    Args:
        approximate: 'none' (the exact erf form) or 'tanh'.

    Shape:
        input: any.    output: same as input.
    """

    def __init__(self, approximate: str = "none"):
        super().__init__()
        check_hyper(
            "GELU",
            "approximate",
            approximate,
            approximate in ("none", "tanh"),
            "must be 'none' or 'tanh'",
        )
        self.approximate = approximate

    def extra_repr(self) -> str:
        return f"approximate={self.approximate!r}"

    def forward(self, x):
        x = _input(self, x)
        if self.approximate == "tanh":
            y, s, xc = gelu_tanh(x)
            self.save_for_backward(xc, s)
        else:
            y, cdf = gelu(x)
            self.save_for_backward(x, cdf)
        return y

    def backward(self, grad_output):
        a, b = self.saved
        d = gelu_tanh_grad(a, b) if self.approximate == "tanh" else gelu_grad(a, b)
        return grad_output * d


class SiLU(_InplaceFlag):
    """x * sigmoid(x) (also called swish).

    Shape:
        input: any.    output: same as input.
    """

    def forward(self, x):
        x = _input(self, x)
        s = sigmoid(x)
        self.save_for_backward(x, s)
        return x * s

    def backward(self, grad_output):
        x, s = self.saved
        # d/dx x s = s + x s (1 - s) = s (1 + x (1 - s))
        return grad_output * (s * (1 + x * (1 - s)))


class Mish(_InplaceFlag):
    """x * tanh(softplus(x)).

    Shape:
        input: any.    output: same as input.
    """

    def forward(self, x):
        x = _input(self, x)
        sp = softplus(x)
        t = np.tanh(sp)
        s = -np.expm1(-sp)  # sigmoid(x) = 1 - exp(-softplus(x)), from what we already have
        self.save_for_backward(x, t, s)
        return x * t

    def backward(self, grad_output):
        x, t, s = self.saved
        # d/dx x tanh(sp) = tanh(sp) + x (1 - tanh(sp)^2) sp', and sp' = sigmoid(x)
        return grad_output * (t + x * (1 - t * t) * s)


class Softplus(Module):
    """log(1 + exp(beta * x)) / beta, and x itself where beta * x > threshold (as PyTorch).

    Args:
        beta: > 0, the sharpness.
        threshold: above it (in beta * x) the function is linear.

    Shape:
        input: any.    output: same as input.
    """

    def __init__(self, beta: float = 1.0, threshold: float = 20.0):
        super().__init__()
        beta = _finite("Softplus", "beta", beta)
        check_hyper("Softplus", "beta", beta, beta > 0, "must be > 0")
        self.beta = beta
        self.threshold = _real("Softplus", "threshold", threshold)

    def extra_repr(self) -> str:
        return f"beta={self.beta}, threshold={self.threshold}"

    def forward(self, x):
        x = _input(self, x)
        z = x * self.beta if self.beta != 1 else x
        y = array_module(z).asarray(softplus(z))
        if self.beta != 1:
            y /= self.beta
        linear = z > self.threshold
        if linear.any():  # rare (x > 20 by default): only then pay for the masked copy
            np.copyto(y, x, where=linear)
        else:
            linear = None
        self.save_for_backward(linear, y)
        return y

    def backward(self, grad_output):
        linear, y = self.saved
        # d/dx softplus(beta x) / beta = sigmoid(beta x) = 1 - exp(-beta y), from the output
        d = array_module(y).asarray(y * -self.beta)
        np.expm1(d, out=d)
        np.negative(d, out=d)
        if linear is not None:
            d[linear] = 1  # the linear part's slope
        return grad_output * d


class Softsign(Module):
    """x / (1 + |x|).

    Shape:
        input: any.    output: same as input.
    """

    def forward(self, x):
        x = _input(self, x)
        d = 1 / (1 + np.abs(x))
        self.save_for_backward(d)
        return x * d

    def backward(self, grad_output):
        (d,) = self.saved
        # d/dx x / (1 + |x|) = 1 / (1 + |x|)^2; caching d, not y, keeps 1 - |y| from cancelling
        return grad_output * (d * d)


class Sigmoid(Module):
    """1 / (1 + exp(-x)), computed without overflow for large |x|.

    Shape:
        input: any.    output: same as input.
    """

    def forward(self, x):
        y = sigmoid(_input(self, x))
        self.save_for_backward(y)
        return y

    def backward(self, grad_output):
        (y,) = self.saved
        return grad_output * (y * (1 - y))  # d sigmoid = y (1 - y)


class LogSigmoid(Module):
    """log(sigmoid(x)) = -softplus(-x), stable for large |x|.

    Shape:
        input: any.    output: same as input.
    """

    def forward(self, x):
        y = log_sigmoid(_input(self, x))
        self.save_for_backward(y)
        return y

    def backward(self, grad_output):
        (y,) = self.saved
        return grad_output * -np.expm1(y)  # d = 1 - sigmoid(x) = 1 - exp(y)


class Tanh(Module):
    """Hyperbolic tangent.

    Shape:
        input: any.    output: same as input.
    """

    def forward(self, x):
        y = np.tanh(_input(self, x))
        self.save_for_backward(y)
        return y

    def backward(self, grad_output):
        (y,) = self.saved
        return grad_output * (1 - y * y)  # d tanh = 1 - y^2


# ---------------------------------------------------------------------------- row-wise
class _AlongDim(Module):
    """Base of Softmax and LogSoftmax: one ``dim`` (PyTorch's name), validated at call time."""

    def __init__(self, dim: int = -1):
        super().__init__()
        who = type(self).__name__
        if isinstance(dim, bool) or not isinstance(dim, (int, np.integer)):
            raise TypeError(expected_got(who, "dim to be an int", type(dim).__name__))
        self.dim = int(dim)

    def extra_repr(self) -> str:
        return f"dim={self.dim}"

    def _check(self, x) -> np.ndarray:
        x = _input(self, x)
        if not -x.ndim <= self.dim < x.ndim:
            raise ShapeError(
                expected_got(
                    self,
                    f"an input with at least {self.dim + 1 if self.dim >= 0 else -self.dim} "
                    "dimension(s)",
                    f"shape {fmt_shape(x.shape)}",
                )
            )
        return x


class Softmax(_AlongDim):
    """exp(x) / sum(exp(x)) along ``dim`` (stable: the max is subtracted first).

    Args:
        dim: the axis that sums to 1 (default -1, the last).

    Shape:
        input: any with ``dim`` in range.    output: same as input.

    Example:
        >>> import numpy as np, nnframe as nf
        >>> nf.Softmax(dim=-1)(np.log(np.array([[1.0, 3.0]], dtype=np.float32)))
        array([[0.25, 0.75]], dtype=float32)
    """

    def forward(self, x):
        x = self._check(x)
        y = softmax(x, axis=self.dim) if x.size else x.copy()  # empty: an empty output
        self.save_for_backward(y)
        return y

    def backward(self, grad_output):
        (y,) = self.saved
        # Jacobian diag(y) - y y^T applied to g: y * (g - <g, y>) along dim
        return y * (grad_output - (grad_output * y).sum(axis=self.dim, keepdims=True))


class LogSoftmax(_AlongDim):
    """log(softmax(x)) along ``dim``, by log-sum-exp (stable for inputs of +-1e4).

    Args:
        dim: the axis normalized over (default -1, the last).

    Shape:
        input: any with ``dim`` in range.    output: same as input.
    """

    def forward(self, x):
        x = self._check(x)
        y = log_softmax(x, axis=self.dim) if x.size else x.copy()  # empty: an empty output
        self.save_for_backward(y)
        return y

    def backward(self, grad_output):
        (y,) = self.saved
        # d/dx_j of y_i = delta_ij - softmax_j, so g - softmax * sum(g) along dim
        return grad_output - np.exp(y) * grad_output.sum(axis=self.dim, keepdims=True)


class Identity(Module):
    """Returns its input unchanged (a placeholder layer).

    Shape:
        input: any.    output: same as input.
    """

    def forward(self, x):
        return x

    def backward(self, grad_output):
        return grad_output


# ---------------------------------------------------------------------------- shrinkage, gating
class Threshold(Module):
    """x where x > threshold, else ``value`` (PyTorch's ``nn.Threshold``).

    Args:
        threshold: the threshold.
        value: what replaces the inputs at or below the threshold.
        inplace: accepted for PyTorch compatibility; a forward never writes into its input.

    Shape:
        input: any.    output: same as input.

    Example:
        >>> import numpy as np, nnframe as nf
        >>> nf.Threshold(0.5, -1.0)(np.array([0.2, 0.5, 2.0]))
        array([-1., -1.,  2.])
    """

    def __init__(self, threshold: float, value: float, inplace: bool = False):
        super().__init__()
        self.threshold = _real("Threshold", "threshold", threshold)
        self.value = _real("Threshold", "value", value)
        self.inplace = _check_flag("Threshold", "inplace", inplace)  # accepted: a new array

    def extra_repr(self) -> str:
        return _with_inplace(self, f"threshold={self.threshold}, value={self.value}")

    def forward(self, x):
        x = _input(self, x)
        keep = x > self.threshold  # NaN compares False: replaced by value, as PyTorch
        self.save_for_backward(keep)
        return np.where(keep, x, x.dtype.type(self.value))

    def backward(self, grad_output):
        (keep,) = self.saved
        return grad_output * keep  # 1 where the input passed, 0 where value replaced it


class Hardshrink(Module):
    """x where |x| > lambd, else 0.

    Args:
        lambd: the half-width of the zeroed band (default 0.5).

    Shape:
        input: any.    output: same as input.

    Example:
        >>> import numpy as np, nnframe as nf
        >>> nf.Hardshrink(0.5)(np.array([-1.0, 0.3, 0.7]))
        array([-1. ,  0. ,  0.7])
    """

    def __init__(self, lambd: float = 0.5):
        super().__init__()
        self.lambd = _finite("Hardshrink", "lambd", lambd)

    def extra_repr(self) -> str:
        return f"{self.lambd}"

    def forward(self, x):
        x = _input(self, x)
        keep = (x > self.lambd) | (x < -self.lambd)
        self.save_for_backward(keep)
        return x * keep

    def backward(self, grad_output):
        (keep,) = self.saved
        return grad_output * keep


class Softshrink(Module):
    """x - lambd where x > lambd, x + lambd where x < -lambd, else 0.

    Args:
        lambd: the half-width of the zeroed band, >= 0 (default 0.5).

    Shape:
        input: any.    output: same as input.

    Example:
        >>> import numpy as np, nnframe as nf
        >>> nf.Softshrink(0.5)(np.array([-1.0, 0.3, 2.0]))
        array([-0.5,  0. ,  1.5])
    """

    def __init__(self, lambd: float = 0.5):
        super().__init__()
        self.lambd = _finite("Softshrink", "lambd", lambd)
        check_hyper("Softshrink", "lambd", lambd, self.lambd >= 0, "must be >= 0")

    def extra_repr(self) -> str:
        return f"{self.lambd}"

    def forward(self, x):
        x = _input(self, x)
        keep = (x > self.lambd) | (x < -self.lambd)
        self.save_for_backward(keep)
        # x - clip(x, -lambd, lambd): x -+ lambd outside the band, exactly 0 inside
        return (x - np.clip(x, -self.lambd, self.lambd)) * keep

    def backward(self, grad_output):
        (keep,) = self.saved
        return grad_output * keep


class Tanhshrink(Module):
    """x - tanh(x).

    Shape:
        input: any.    output: same as input.

    Example:
        >>> import numpy as np, nnframe as nf
        >>> nf.Tanhshrink()(np.array([0.0, 1.0])).round(4)
        array([0.    , 0.2384])
    """

    def forward(self, x):
        x = _input(self, x)
        t = np.tanh(x)
        self.save_for_backward(t)
        return x - t

    def backward(self, grad_output):
        (t,) = self.saved
        return grad_output * (t * t)  # d(x - tanh x) = 1 - (1 - tanh^2) = tanh^2


def _implicit_dim(ndim: int) -> int:
    """PyTorch's choice of axis for softmax-like layers built with ``dim=None``."""
    return 0 if ndim in (0, 1, 3) else 1


class Softmin(Module):
    """exp(-x) / sum(exp(-x)) along ``dim``: softmax of -x (stable).

    Args:
        dim: the axis that sums to 1. None (PyTorch's default) picks as PyTorch does: 0 for
            inputs of 0, 1 or 3 dimensions, else 1.

    Shape:
        input: any with ``dim`` in range.    output: same as input.

    Example:
        >>> import numpy as np, nnframe as nf
        >>> nf.Softmin(dim=-1)(np.log(np.array([[1.0, 3.0]])))
        array([[0.75, 0.25]])
    """

    def __init__(self, dim: int | None = None):
        super().__init__()
        if dim is not None and (isinstance(dim, bool) or not isinstance(dim, (int, np.integer))):
            raise TypeError(expected_got("Softmin", "dim to be an int or None", type(dim).__name__))
        self.dim = None if dim is None else int(dim)

    def extra_repr(self) -> str:
        return f"dim={self.dim}"

    def forward(self, x):
        x = _input(self, x)
        dim = _implicit_dim(x.ndim) if self.dim is None else self.dim
        if not -max(x.ndim, 1) <= dim < max(x.ndim, 1):
            raise ShapeError(
                expected_got(
                    self, f"an input with a dimension {dim}", f"shape {fmt_shape(x.shape)}"
                )
            )
        dim = dim if x.ndim else None
        y = softmax(-x, axis=dim) if x.size else -x  # an empty input: an empty output
        self.save_for_backward(y, dim)
        return y

    def backward(self, grad_output):
        y, dim = self.saved
        # softmax's Jacobian-vector product, times d(-x)/dx = -1
        return -y * (grad_output - (grad_output * y).sum(axis=dim, keepdims=True))


class Softmax2d(Module):
    """Softmax over the channels at every spatial position (PyTorch's ``nn.Softmax2d``).

    Shape:
        input: (N, C, H, W) or (C, H, W).    output: same as input.

    Example:
        >>> import numpy as np, nnframe as nf
        >>> nf.Softmax2d()(np.zeros((1, 4, 2, 2)))[0, :, 0, 0]
        array([0.25, 0.25, 0.25, 0.25])
    """

    def forward(self, x):
        x = _input(self, x)
        if x.ndim not in (3, 4):
            raise ShapeError(
                expected_got(self, "input of shape (N, C, H, W) or (C, H, W)", fmt_shape(x.shape))
            )
        y = softmax(x, axis=-3) if x.size else x.copy()  # empty: an empty output
        self.save_for_backward(y)
        return y

    def backward(self, grad_output):
        (y,) = self.saved
        return y * (grad_output - (grad_output * y).sum(axis=-3, keepdims=True))


class GLU(Module):
    """Gated linear unit: the input split in halves a, b along ``dim``; a * sigmoid(b).

    Args:
        dim: the axis split in two (its size must be even; default -1).

    Shape:
        input: (*, 2 M, *).    output: (*, M, *).

    Example:
        >>> import numpy as np, nnframe as nf
        >>> nf.GLU()(np.array([[2.0, 4.0, 0.0, 0.0]]))
        array([[1., 2.]])
    """

    def __init__(self, dim: int = -1):
        super().__init__()
        if isinstance(dim, bool) or not isinstance(dim, (int, np.integer)):
            raise TypeError(expected_got("GLU", "dim to be an int", type(dim).__name__))
        self.dim = int(dim)

    def extra_repr(self) -> str:
        return f"dim={self.dim}"

    def forward(self, x):
        x = _input(self, x)
        if not -x.ndim <= self.dim < x.ndim or x.shape[self.dim] % 2:
            raise ShapeError(
                expected_got(
                    self,
                    f"an input whose dimension {self.dim} has an even size",
                    f"shape {fmt_shape(x.shape)}",
                )
            )
        a, b = np.split(x, 2, axis=self.dim)
        s = sigmoid(b)
        self.save_for_backward(a, s)
        return a * s

    def backward(self, grad_output):
        a, s = self.saved
        # d(a s)/da = s; d(a s)/db = a s (1 - s)
        ga = grad_output * s
        gb = ga * a * (1 - s)
        return np.concatenate((ga, gb), axis=self.dim)
