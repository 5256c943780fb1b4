"""Initializers: functions that return a new array of a given shape.

Every initializer takes ``rng`` (a numpy Generator, an int seed, or None for nnframe's seeded
default) and ``dtype`` (float32 by default). Fans follow PyTorch: for a weight of shape
``(out, in, *kernel)``, ``fan_in = in * prod(kernel)`` and ``fan_out = out * prod(kernel)``.

Example:
    >>> import nnframe as nf
    >>> w = nf.init.kaiming_uniform((4, 3), nonlinearity="relu", rng=0)
    >>> w.shape, str(w.dtype)
    ((4, 3), 'float32')
"""

from __future__ import annotations

import math

import numpy as np

from nnframe.core.random import get_rng

_GAINS = {
    "linear": 1.0,
    "identity": 1.0,
    "conv1d": 1.0,
    "conv2d": 1.0,
    "conv3d": 1.0,
    "conv_transpose1d": 1.0,
    "conv_transpose2d": 1.0,
    "conv_transpose3d": 1.0,
    "sigmoid": 1.0,
    "tanh": 5.0 / 3,
    "relu": math.sqrt(2.0),
    "selu": 3.0 / 4,
}


def calculate_gain(nonlinearity: str, param: float | None = None) -> float:
    """The recommended gain for a nonlinearity (PyTorch's table): relu sqrt(2), tanh 5/3,
    leaky_relu sqrt(2 / (1 + slope^2)) with ``param`` the slope (default 0.01), selu 3/4."""
    if nonlinearity == "leaky_relu":
        if param is None:
            param = 0.01
        elif isinstance(param, bool) or not isinstance(
            param, (int, float, np.integer, np.floating)
        ):
            raise ValueError(
                f"calculate_gain: expected a number as leaky_relu's negative slope, got {param!r}"
            )
        return math.sqrt(2.0 / (1 + float(param) ** 2))
    if nonlinearity not in _GAINS:
        raise ValueError(
            f"calculate_gain: expected one of {sorted([*_GAINS, 'leaky_relu'])}, got {nonlinearity!r}"
        )
    return _GAINS[nonlinearity]


def _shape(shape) -> tuple[int, ...]:
    """A shape as a tuple of ints (an int is a 1-d shape)."""
    if isinstance(shape, (int, np.integer)):
        return (int(shape),)
    return tuple(int(n) for n in shape)


def fans(shape: tuple[int, ...]) -> tuple[int, int]:
    """(fan_in, fan_out) of a weight of shape ``(out, in, *kernel)``; a vector uses its length
    for both (PyTorch refuses vectors; biases and norms use it here)."""
    shape = _shape(shape)
    if len(shape) == 0:
        raise ValueError("fans: expected a shape with at least one dimension, got ()")
    if len(shape) == 1:
        return shape[0], shape[0]
    receptive = math.prod(shape[2:])
    return shape[1] * receptive, shape[0] * receptive


def _is_empty(shape) -> bool:
    return math.prod(_shape(shape)) == 0


def _fan(shape, mode: str) -> int:
    if mode not in ("fan_in", "fan_out"):
        raise ValueError(f"init: expected mode 'fan_in' or 'fan_out', got {mode!r}")
    fan_in, fan_out = fans(shape)
    return fan_in if mode == "fan_in" else fan_out


def zeros(shape, *, dtype=np.float32, rng=None) -> np.ndarray:
    return np.zeros(shape, dtype=dtype)


def ones(shape, *, dtype=np.float32, rng=None) -> np.ndarray:
    return np.ones(shape, dtype=dtype)


def constant(shape, value: float, *, dtype=np.float32, rng=None) -> np.ndarray:
    return np.full(shape, value, dtype=dtype)


def uniform(shape, a: float = 0.0, b: float = 1.0, *, rng=None, dtype=np.float32) -> np.ndarray:
    """Samples U(a, b)."""
    return get_rng(rng).uniform(a, b, size=shape).astype(dtype)


def normal(shape, mean: float = 0.0, std: float = 1.0, *, rng=None, dtype=np.float32) -> np.ndarray:
    """Samples N(mean, std^2)."""
    if not std >= 0:
        raise ValueError(f"normal: invalid std={std!r} (must be >= 0)")
    return get_rng(rng).normal(mean, std, size=shape).astype(dtype)


def trunc_normal(
    shape, mean=0.0, std=1.0, a=-2.0, b=2.0, *, rng=None, dtype=np.float32
) -> np.ndarray:
    """Samples N(mean, std^2) restricted to [a, b] (absolute bounds, as PyTorch), by inverting
    the normal CDF on the truncated interval. Float32 values lie in ``[float32(a), float32(b)]``."""
    from scipy.special import ndtr, ndtri

    if not std > 0:
        raise ValueError(f"trunc_normal: invalid std={std!r} (must be > 0)")
    if not a < b:
        raise ValueError(f"trunc_normal: expected bounds a < b, got a={a!r}, b={b!r}")

    lo, hi = ndtr((a - mean) / std), ndtr((b - mean) / std)
    u = get_rng(rng).uniform(lo, hi, size=shape)
    return np.clip(mean + std * ndtri(u), a, b).astype(dtype)


def xavier_uniform(shape, gain: float = 1.0, *, rng=None, dtype=np.float32) -> np.ndarray:
    """Glorot uniform: U(-b, b) with b = gain * sqrt(6 / (fan_in + fan_out))."""
    if _is_empty(shape):
        return np.zeros(_shape(shape), dtype=dtype)
    fan_in, fan_out = fans(shape)
    bound = gain * math.sqrt(6.0 / (fan_in + fan_out))
    return uniform(shape, -bound, bound, rng=rng, dtype=dtype)


def xavier_normal(shape, gain: float = 1.0, *, rng=None, dtype=np.float32) -> np.ndarray:
    """Glorot normal: N(0, std^2) with std = gain * sqrt(2 / (fan_in + fan_out))."""
    if _is_empty(shape):
        return np.zeros(_shape(shape), dtype=dtype)
    fan_in, fan_out = fans(shape)
    return normal(shape, 0.0, gain * math.sqrt(2.0 / (fan_in + fan_out)), rng=rng, dtype=dtype)


def kaiming_uniform(
    shape, a: float = 0.0, mode="fan_in", nonlinearity="leaky_relu", *, rng=None, dtype=np.float32
) -> np.ndarray:
    """He uniform: U(-b, b) with b = gain * sqrt(3 / fan); ``a`` is leaky_relu's slope."""
    if _is_empty(shape):
        return np.zeros(_shape(shape), dtype=dtype)
    bound = calculate_gain(nonlinearity, a) * math.sqrt(3.0 / _fan(shape, mode))
    return uniform(shape, -bound, bound, rng=rng, dtype=dtype)


def kaiming_normal(
    shape, a: float = 0.0, mode="fan_in", nonlinearity="leaky_relu", *, rng=None, dtype=np.float32
) -> np.ndarray:
    """He normal: N(0, std^2) with std = gain / sqrt(fan); ``a`` is leaky_relu's slope."""
    if _is_empty(shape):
        return np.zeros(_shape(shape), dtype=dtype)
    std = calculate_gain(nonlinearity, a) / math.sqrt(_fan(shape, mode))
    return normal(shape, 0.0, std, rng=rng, dtype=dtype)


def lecun_uniform(shape, *, rng=None, dtype=np.float32) -> np.ndarray:
    """LeCun uniform: U(-b, b) with b = sqrt(3 / fan_in)."""
    if _is_empty(shape):
        return np.zeros(_shape(shape), dtype=dtype)
    bound = math.sqrt(3.0 / fans(shape)[0])
    return uniform(shape, -bound, bound, rng=rng, dtype=dtype)


def lecun_normal(shape, *, rng=None, dtype=np.float32) -> np.ndarray:
    """LeCun normal: N(0, 1 / fan_in) (the initialization SELU networks assume)."""
    if _is_empty(shape):
        return np.zeros(_shape(shape), dtype=dtype)
    return normal(shape, 0.0, 1.0 / math.sqrt(fans(shape)[0]), rng=rng, dtype=dtype)


def orthogonal(shape, gain: float = 1.0, *, rng=None, dtype=np.float32) -> np.ndarray:
    """A (semi-)orthogonal matrix from the QR decomposition of a Gaussian one; trailing
    dimensions are flattened, so rows (or columns) of ``w.reshape(shape[0], -1)`` are orthonormal."""
    shape = _shape(shape)
    if len(shape) < 2:
        raise ValueError(f"orthogonal: expected a shape with at least 2 dimensions, got {shape}")
    if _is_empty(shape):
        return np.zeros(shape, dtype=dtype)
    rows, cols = shape[0], math.prod(shape[1:])
    a = get_rng(rng).normal(size=(max(rows, cols), min(rows, cols)))
    q, r = np.linalg.qr(a)
    q *= np.sign(np.diag(r))  # make the decomposition unique (uniform over orthogonal matrices)
    if rows < cols:
        q = q.T
    return (gain * q).reshape(shape).astype(dtype)


def default_uniform(shape, *, rng=None, dtype=np.float32, fan_in: int | None = None) -> np.ndarray:
    """PyTorch's default for Linear and Conv weights and biases: U(-1/sqrt(fan_in), 1/sqrt(fan_in))
    (kaiming_uniform with a=sqrt(5)). ``fan_in`` defaults to the shape's own."""
    fan_in = fans(shape)[0] if fan_in is None else fan_in
    bound = 1.0 / math.sqrt(fan_in) if fan_in > 0 else 0.0
    return uniform(shape, -bound, bound, rng=rng, dtype=dtype)


# names accepted by the ``init=`` argument of layers
INITIALIZERS = {
    "default": default_uniform,
    "xavier_uniform": xavier_uniform,
    "glorot_uniform": xavier_uniform,
    "xavier_normal": xavier_normal,
    "glorot_normal": xavier_normal,
    "kaiming_uniform": lambda shape, rng, dtype: kaiming_uniform(
        shape, nonlinearity="relu", rng=rng, dtype=dtype
    ),
    "he_uniform": lambda shape, rng, dtype: kaiming_uniform(
        shape, nonlinearity="relu", rng=rng, dtype=dtype
    ),
    "kaiming_normal": lambda shape, rng, dtype: kaiming_normal(
        shape, nonlinearity="relu", rng=rng, dtype=dtype
    ),
    "he_normal": lambda shape, rng, dtype: kaiming_normal(
        shape, nonlinearity="relu", rng=rng, dtype=dtype
    ),
    "lecun_uniform": lecun_uniform,
    "lecun_normal": lecun_normal,
    "orthogonal": orthogonal,
    "zeros": zeros,
}


def make_weight(init, shape, rng, dtype) -> np.ndarray:
    """Builds a weight from an ``init=`` argument: a name in INITIALIZERS or a callable
    ``(shape, rng, dtype) -> array``."""
    if callable(init):
        w = np.asarray(init(shape, rng, dtype), dtype=dtype)
    elif init in INITIALIZERS:
        w = INITIALIZERS[init](shape, rng=rng, dtype=dtype)
    else:
        raise ValueError(
            f"init: expected a callable or one of {sorted(INITIALIZERS)}, got {init!r}"
        )
    if w.shape != tuple(shape):
        raise ValueError(f"init: expected an array of shape {tuple(shape)}, got {w.shape}")
    return w
