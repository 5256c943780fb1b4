"""Gradient clipping: guards against exploding gradients before an optimizer step."""

from __future__ import annotations

import math
from collections.abc import Iterable

import numpy as np

from nnframe.parameter import Parameter


def _grads(parameters: Iterable[Parameter]) -> list[np.ndarray]:
    if isinstance(parameters, Parameter):
        parameters = [parameters]
    return [p.grad for p in parameters if p.requires_grad]


def total_norm(grads: list[np.ndarray], norm_type: float = 2.0) -> float:
    """The norm of all gradients seen as one long vector (``inf`` gives the max |g|)."""
    if not grads:
        return 0.0
    if norm_type == math.inf:
        return float(max(np.max(np.abs(g)) if g.size else 0.0 for g in grads))
    if norm_type == 2.0:
        # a dot product per array: no temporary |g|^2 array, and BLAS-fast
        return math.sqrt(sum(float(np.dot(g.ravel(), g.ravel())) for g in grads))
    return float(sum(float(np.sum(np.abs(g) ** norm_type)) for g in grads) ** (1.0 / norm_type))


def clip_grad_norm_(
    parameters: Iterable[Parameter],
    max_norm: float,
    norm_type: float = 2.0,
    error_if_nonfinite: bool = False,
) -> float:
    """Scales all gradients together so that their global norm is at most ``max_norm``.

    The direction of the whole gradient is kept; nothing changes when the norm is already within
    the limit (or zero: no division by zero).

    Args:
        parameters: the parameters whose ``.grad`` are clipped (frozen ones are ignored).
        max_norm: the largest allowed global norm (> 0).
        norm_type: p of the p-norm; ``math.inf`` for the max-norm.
        error_if_nonfinite: raise a RuntimeError if the norm is NaN or infinite.

    Returns:
        The global norm before clipping.
    """
    if not max_norm > 0:
        raise ValueError(f"clip_grad_norm_: invalid max_norm={max_norm!r} (must be > 0)")
    if not (norm_type == math.inf or norm_type > 0):
        raise ValueError(f"clip_grad_norm_: invalid norm_type={norm_type!r} (must be > 0 or inf)")
    grads = _grads(parameters)
    norm = total_norm(grads, norm_type)
    if not math.isfinite(norm):
        if error_if_nonfinite:
            raise RuntimeError(
                f"clip_grad_norm_: expected a finite gradient norm, got {norm}. "
                "Pass error_if_nonfinite=False to clip anyway"
            )
        return norm
    scale = max_norm / (norm + 1e-6)  # the epsilon is PyTorch's: never divides by zero
    if scale < 1.0:
        for g in grads:
            g *= g.dtype.type(scale)
    return norm


def clip_grad_value_(parameters: Iterable[Parameter], clip_value: float) -> None:
    """Clamps every gradient element to ``[-clip_value, clip_value]``, in place."""
    if not clip_value > 0:
        raise ValueError(f"clip_grad_value_: invalid clip_value={clip_value!r} (must be > 0)")
    for g in _grads(parameters):
        np.clip(g, -clip_value, clip_value, out=g)
