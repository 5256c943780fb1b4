"""nnframe's error classes and the helpers that build their messages.

Every message reads ``<who>: expected <what>, got <what>[. <hint>]`` so that a user can tell at
once which layer complained, what it wanted, and what it received.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from nnframe.core.backend import array_module


class ShapeError(ValueError):
    """An array had the wrong shape (or number of dimensions) for the layer that received it."""


class GradcheckError(AssertionError):
    """A finite-difference gradient check failed (raised by :mod:`nnframe.debug.gradcheck`)."""


def fmt_shape(shape: Sequence) -> str:
    """Formats a shape as ``(N, 3)``: ints as numbers, anything else (a symbol) as text."""
    parts = [str(s) for s in shape]
    return "(" + ", ".join(parts) + ("," if len(parts) == 1 else "") + ")"


def expected_got(who: object, expected: str, got: str, hint: str = "") -> str:
    """Builds the one message template: ``who: expected X, got Y[. hint]``."""
    message = f"{who}: expected {expected}, got {got}"
    return f"{message}. {hint}" if hint else message


def shape_error(who: object, expected: Sequence, got: Sequence, what: str = "input") -> ShapeError:
    """A ShapeError saying ``who: expected <what> of shape (N, 3), got (5, 7)``."""
    return ShapeError(expected_got(who, f"{what} of shape {fmt_shape(expected)}", fmt_shape(got)))


def check_features(who: object, x, features: int, axis: int = -1, ndim: int | None = None) -> None:
    """Raises a ShapeError unless ``x.shape[axis] == features`` (and ``x.ndim == ndim`` if given).

    ``axis`` is -1 for feature-last layers (Dense: ``(N, *, D)``) or 1 for channel-first layers
    (convolutions, normalization: ``(N, C, *)``). The message writes free dimensions as N and *.
    """
    shape = x.shape
    if (ndim is None or len(shape) == ndim) and len(shape) >= 2 and shape[axis] == features:
        return
    rank = ndim if ndim is not None else max(len(shape), 2)
    expected: list = ["N"] + ["*"] * (rank - 1)
    expected[axis] = features
    raise shape_error(who, expected, shape)


def check_grad(who, grad_output, expected) -> np.ndarray:
    """grad_output as an array; a ShapeError unless its shape is ``expected``."""
    grad_output = array_module(grad_output).asarray(grad_output)
    if grad_output.shape != tuple(expected):
        raise ShapeError(
            expected_got(
                who, f"grad_output of shape {fmt_shape(expected)}", fmt_shape(grad_output.shape)
            )
        )
    return grad_output


def check_size(who: str, name: str, value, minimum: int = 1) -> int:
    """A size argument (features, channels, layers): an integer (not a bool) >= ``minimum``,
    else a TypeError or ValueError naming the argument. Returns it as a Python int."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(expected_got(who, f"{name} to be an integer", repr(value)))
    rule = "must be > 0" if minimum == 1 else f"must be >= {minimum}"
    check_hyper(who, name, value, bool(value >= minimum), rule)
    return int(value)


def check_hyper(who: str, name: str, value, ok: bool, rule: str) -> None:
    """Raises a ValueError ``who: invalid name=value (rule)`` unless ``ok``."""
    if not ok:
        raise ValueError(f"{who}: invalid {name}={value!r} ({rule})")


def as_float_input(who: object, x, dtype: np.dtype):
    """Returns ``x`` as an ndarray of the layer's ``dtype``, without copying when it already is.

    Lists, bools, integers and other float widths are cast (safe for inputs); object, complex
    and string arrays are refused with a TypeError that names the layer and the dtype.
    """
    if type(x) is not np.ndarray:
        x = array_module(x).asarray(x)  # numpy for lists; the array's own module otherwise
    if x.dtype == dtype:
        return x
    if x.dtype.kind not in "biuf":
        raise TypeError(
            expected_got(who, f"a real numeric input (cast to {dtype})", f"dtype {x.dtype}")
        )
    return x.astype(dtype)


class ModelFormatError(ValueError):
    """A model, weights or checkpoint file is malformed, corrupted, truncated, of a newer format,
    or not a safetensors file at all (raised by :mod:`nnframe.serialization`)."""


class AnomalyError(FloatingPointError):
    """Anomaly mode (:func:`nnframe.detect_anomaly`) found a NaN or Inf: the message names the
    first layer where it appeared, forward or backward, and the step."""
