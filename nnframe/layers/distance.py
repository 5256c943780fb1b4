"""Distances between pairs of inputs: CosineSimilarity and PairwiseDistance, as PyTorch's.

Both take two inputs that broadcast against each other; backward returns one gradient per
input, summed over the axes that input was broadcast along.
"""

from __future__ import annotations

import numbers

import numpy as np

from nnframe.core.backend import array_module
from nnframe.core.errors import ShapeError, as_float_input, check_hyper, expected_got, fmt_shape
from nnframe.core.module import Module
from nnframe.layers.losses import pnorm, pnorm_grad


def _pair(who, x1, x2):
    """Both inputs as float arrays of one dtype, and their broadcast shape."""
    xm = array_module(x1, x2)
    a, b = xm.asarray(x1), xm.asarray(x2)
    dtype = (
        np.result_type(a.dtype, b.dtype)
        if a.dtype.kind == "f" or b.dtype.kind == "f"
        else np.float32
    )
    a, b = as_float_input(who, a, np.dtype(dtype)), as_float_input(who, b, np.dtype(dtype))
    try:
        shape = np.broadcast_shapes(a.shape, b.shape)
    except ValueError:
        raise ShapeError(
            expected_got(
                who,
                "x1 and x2 of broadcastable shapes",
                f"{fmt_shape(a.shape)} and {fmt_shape(b.shape)}",
            )
        ) from None
    return a, b, shape


def _unbroadcast(g: np.ndarray, shape: tuple) -> np.ndarray:
    """Sums a gradient of the broadcast shape back to an input's ``shape``."""
    lead = g.ndim - len(shape)
    g = g.sum(axis=tuple(range(lead))) if lead else g
    axes = tuple(i for i, s in enumerate(shape) if s == 1 and g.shape[i] != 1)
    return g.sum(axis=axes, keepdims=True) if axes else g


class CosineSimilarity(Module):
    """Cosine similarity along ``dim``: x1 . x2 / (max(|x1|, eps) max(|x2|, eps)).

    The gradient is PyTorch's: the clamp at eps passes the norms' gradients on.

    Args:
        dim: the axis of the vectors (default 1).
        eps: the floor of each norm.

    ``forward(x1, x2)``; ``backward(grad_output)`` returns ``(dL/dx1, dL/dx2)``.

    Shape:
        x1: (*1, D, *2).    x2: broadcastable to x1.    output: the broadcast shape without
        ``dim``.

    Example:
        >>> import numpy as np, nnframe as nf
        >>> nf.CosineSimilarity(dim=1)(np.array([[1.0, 0.0]]), np.array([[1.0, 1.0]])).round(4)
        array([0.7071])
    """

    def __init__(self, dim: int = 1, eps: float = 1e-8):
        super().__init__()
        if isinstance(dim, bool) or not isinstance(dim, (int, np.integer)):
            raise TypeError(
                expected_got("CosineSimilarity", "dim to be an int", type(dim).__name__)
            )
        ok = isinstance(eps, numbers.Real) and eps >= 0
        check_hyper("CosineSimilarity", "eps", eps, ok, "must be a real number >= 0")
        self.dim, self.eps = int(dim), float(eps)

    def extra_repr(self) -> str:
        return f"dim={self.dim}, eps={self.eps}"

    def forward(self, x1, x2):
        a, b, shape = _pair(self, x1, x2)
        if not -len(shape) <= self.dim < max(len(shape), 1) or not shape:
            raise ShapeError(
                expected_got(
                    self, f"inputs with a dimension {self.dim}", f"shape {fmt_shape(shape)}"
                )
            )
        a, b = np.broadcast_to(a, shape), np.broadcast_to(b, shape)
        d = self.dim
        n1 = np.sqrt((a * a).sum(axis=d, keepdims=True))
        n2 = np.sqrt((b * b).sum(axis=d, keepdims=True))
        c1, c2 = np.maximum(n1, self.eps), np.maximum(n2, self.eps)  # the clamped norms
        cos = (a * b).sum(axis=d, keepdims=True) / (c1 * c2)
        self.save_for_backward(a, b, n1, n2, c1, c2, cos, np.shape(x1), np.shape(x2))
        return np.squeeze(cos, axis=d)

    def backward(self, grad_output):
        a, b, n1, n2, c1, c2, cos, s1, s2 = self.saved
        g = np.expand_dims(array_module(grad_output).asarray(grad_output), self.dim)
        # d cos / d x1 = x2 / (c1 c2) - cos x1 / (c1 n1): as PyTorch, which clamps the norms
        # outside autograd, the norm's own derivative x1 / n1 passes the clamp
        with np.errstate(invalid="ignore", divide="ignore"):
            r1 = np.where(n1 > 0, cos / (c1 * np.where(n1 > 0, n1, 1)), 0)
            r2 = np.where(n2 > 0, cos / (c2 * np.where(n2 > 0, n2, 1)), 0)
        g1 = g * (b / (c1 * c2) - r1 * a)
        g2 = g * (a / (c1 * c2) - r2 * b)
        return _unbroadcast(g1, s1), _unbroadcast(g2, s2)


class PairwiseDistance(Module):
    """p-norm distance over the last axis: ||x1 - x2 + eps||_p, as PyTorch's.

    Args:
        p: the norm degree (> 0; ``float('inf')`` for the max norm).
        eps: added to the difference (keeps the norm differentiable at 0).
        keepdim: keep the last axis (size 1).

    ``forward(x1, x2)``; ``backward(grad_output)`` returns ``(dL/dx1, dL/dx2)``.

    Shape:
        x1: (N, D) or (D,).    x2: broadcastable to x1.    output: (N,) or () (with keepdim:
        (N, 1) or (1,)).

    Example:
        >>> import numpy as np, nnframe as nf
        >>> nf.PairwiseDistance(eps=0.0)(np.array([[3.0, 0.0]]), np.array([[0.0, 4.0]]))
        array([5.])
    """

    def __init__(self, p: float = 2.0, eps: float = 1e-6, keepdim: bool = False):
        super().__init__()
        ok = isinstance(p, numbers.Real) and p > 0
        check_hyper("PairwiseDistance", "p", p, ok, "must be a real number > 0")
        self.norm, self.eps, self.keepdim = float(p), float(eps), bool(keepdim)

    def extra_repr(self) -> str:
        return f"p={self.norm:g}, eps={self.eps}, keepdim={self.keepdim}"

    def forward(self, x1, x2):
        a, b, shape = _pair(self, x1, x2)
        if len(shape) not in (1, 2):
            raise ShapeError(
                expected_got(
                    self,
                    "inputs of shape (N, D) or (D,)",
                    f"{fmt_shape(np.shape(x1))} and {fmt_shape(np.shape(x2))}",
                )
            )
        diff = np.broadcast_to(a, shape) - np.broadcast_to(b, shape) + self.eps
        n = pnorm(diff, self.norm, keepdim=True)
        self.save_for_backward(diff, n, np.shape(x1), np.shape(x2))
        return n if self.keepdim else n[..., 0]

    def backward(self, grad_output):
        diff, n, s1, s2 = self.saved
        g = array_module(grad_output).asarray(grad_output)
        g = g if self.keepdim else g[..., None]
        gd = g * pnorm_grad(diff, n, self.norm)
        return _unbroadcast(gd, s1), _unbroadcast(-gd, s2)
