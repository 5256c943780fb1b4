"""Gradient clipping: guards against exploding gradients before an optimizer step.

Both functions act in place on ``p.grad`` of the given parameters (frozen ones are ignored),
as PyTorch's ``torch.nn.utils.clip_grad_norm_`` and ``clip_grad_value_``; every optimizer also
takes them as options (``clip_norm=``, ``clip_value=``) applied before its update.

Example:
    >>> import numpy as np, nnframe as nf
    >>> p = nf.Parameter(np.zeros(2)); p.grad[:] = [3.0, 4.0]
    >>> nf.clip_grad_norm_([p], max_norm=1.0)  # returns the norm before clipping
    5.0
    >>> p.grad.round(6)
    array([0.6, 0.8])
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import numpy as np

from nnframe.core.backend import array_module
from nnframe.core.parameter import Parameter


def _grads(parameters: Iterable[Parameter] | Parameter) -> list[np.ndarray]:
    if isinstance(parameters, Parameter):
        parameters = [parameters]
    return [p.grad for p in parameters if p.requires_grad]


def total_norm(grads: list[np.ndarray], norm_type: float = 2.0) -> float:
    """The p-norm of all gradients seen as one long vector (``inf`` gives the max |g|).

    NaN anywhere gives NaN; an infinite element gives inf.
    """
    if not grads:
        return 0.0
    xp = array_module(grads[0])
    if xp is not np:  # on a device: one reduction per array, then one wait for the result
        return _device_norm(xp, grads, norm_type)
    if norm_type == math.inf:
        norm = 0.0
        for g in grads:
            if g.size:
                m = float(np.max(np.abs(g)))
                if math.isnan(m):  # max() would drop it
                    return m
                norm = max(norm, m)
        return norm
    if norm_type == 2.0:
        # a dot product per array: no temporary |g|^2 array, and BLAS-fast
        with np.errstate(over="ignore"):
            norm = math.sqrt(sum(float(np.dot(g.ravel(), g.ravel())) for g in grads))
        if norm == math.inf:  # float32 squares can overflow while the norm itself is finite
            return _scaled_norm(grads, 2.0)
        return norm
    with np.errstate(over="ignore"):
        total = sum(float(np.sum(np.abs(g) ** norm_type)) for g in grads)
    norm = float(total ** (1.0 / norm_type))
    if norm == math.inf:
        return _scaled_norm(grads, norm_type)
    return norm


def _device_norm(xp, grads: list, norm_type: float) -> float:
    """total_norm of device arrays: the per-array terms are combined on the device (in
    float64, as the host sums them) and read once, instead of once per array."""
    acc = xp.zeros((), dtype=np.float64)
    if norm_type == math.inf:
        for g in grads:
            if g.size:
                acc = xp.maximum(acc, xp.abs(g).max())  # (NaN wins, as on the host)
        return float(acc)
    for g in grads:
        v = g.ravel()
        acc += xp.dot(v, v) if norm_type == 2.0 else xp.sum(xp.abs(v) ** norm_type)
    total = float(acc)
    norm = math.sqrt(total) if norm_type == 2.0 else total ** (1.0 / norm_type)
    if norm == math.inf:  # the float32 terms overflowed while the norm itself is finite
        return _scaled_norm(grads, norm_type)
    return norm


def _scaled_norm(grads: list[np.ndarray], norm_type: float) -> float:
    """The p-norm computed as ``m * ||g / m||_p`` with m = max |g|, in float64 (no overflow)."""
    m = total_norm(grads, math.inf)
    if not math.isfinite(m) or m == 0.0:
        return m
    s = sum(float(np.sum((np.abs(g, dtype=np.float64) / m) ** norm_type)) for g in grads)
    return m * s ** (1.0 / norm_type)


def clip_grad_norm_(
    parameters: Iterable[Parameter] | Parameter,
    max_norm: float,
    norm_type: float = 2.0,
    error_if_nonfinite: bool = False,
) -> float:
    """Scales all gradients together so that their global norm is at most ``max_norm``.

    Every gradient is multiplied by one factor, ``max_norm / (norm + 1e-6)`` when that is below 1
    (PyTorch's formula), so the direction of the whole gradient is kept; nothing changes when
    the norm is within the limit, and a zero gradient never divides by zero.

    Args:
        parameters: the parameters whose ``.grad`` are clipped (frozen ones are ignored).
        max_norm: the largest allowed global norm (> 0).
        norm_type: p of the p-norm; ``math.inf`` for the max-norm.
        error_if_nonfinite: raise a RuntimeError if the norm is NaN or infinite. Otherwise such
            a norm is used as is, as in PyTorch: an infinite norm scales every gradient by 0
            (its infinite elements become NaN) and a NaN norm makes every gradient NaN.

    Returns:
        The global norm before clipping.
    """
    if not max_norm > 0:
        raise ValueError(f"clip_grad_norm_: invalid max_norm={max_norm!r} (must be > 0)")
    if not (norm_type == math.inf or norm_type > 0):
        raise ValueError(f"clip_grad_norm_: invalid norm_type={norm_type!r} (must be > 0 or inf)")
    grads = _grads(parameters)
    norm = total_norm(grads, norm_type)
    if error_if_nonfinite and not math.isfinite(norm):
        raise RuntimeError(
            f"clip_grad_norm_: expected a finite gradient norm, got {norm}. "
            "Pass error_if_nonfinite=False to clip anyway"
        )
    scale = max_norm / (norm + 1e-6)  # the epsilon is PyTorch's: never divides by zero
    if not scale >= 1.0:  # below 1, or NaN (a NaN norm), which then spreads as in PyTorch
        with np.errstate(invalid="ignore"):  # inf * 0 is NaN, as documented
            for g in grads:
                g *= g.dtype.type(scale)
    return norm


def clip_grad_value_(parameters: Iterable[Parameter] | Parameter, clip_value: float) -> None:
    """Clamps every gradient element to ``[-clip_value, clip_value]``, in place (NaN stays NaN).

    Args:
        parameters: the parameters whose ``.grad`` are clamped (frozen ones are ignored).
        clip_value: the largest allowed magnitude (> 0).
    """
    if not clip_value > 0:
        raise ValueError(f"clip_grad_value_: invalid clip_value={clip_value!r} (must be > 0)")
    for g in _grads(parameters):
        np.clip(g, -clip_value, clip_value, out=g)
