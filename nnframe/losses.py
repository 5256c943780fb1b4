"""Losses: ``loss(pred, target)`` returns a float; ``loss.backward()`` returns dL/dpred.

Losses are their own base (not Modules): they hold no parameters and end the chain. Every loss
takes ``reduction='mean'|'sum'|'none'`` and an optional per-sample ``sample_weight`` at call time.
With ``reduction='none'`` the call returns the per-element losses and ``backward`` takes their
gradient (``backward(grad_output)``).
"""

from __future__ import annotations

import numpy as np

from nnframe.errors import ShapeError, check_hyper, fmt_shape

_REDUCTIONS = ("mean", "sum", "none")


class Loss:
    """Base class: subclasses write ``forward`` (per-element losses and what backward needs) and
    ``backward_elements`` (dL/dpred for a gradient of the per-element losses)."""

    def __init__(self, reduction: str = "mean"):
        if reduction not in _REDUCTIONS:
            raise ValueError(
                f"{type(self).__name__}: invalid reduction={reduction!r} (must be one of {_REDUCTIONS})"
            )
        self.reduction = reduction
        self._saved = None

    def extra_repr(self) -> str:
        return f"reduction={self.reduction!r}" if self.reduction != "mean" else ""

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.extra_repr()})"

    def __call__(self, pred, target, sample_weight=None):
        return self.forward(pred, target, sample_weight=sample_weight)

    def forward(self, pred, target, sample_weight=None):
        raise NotImplementedError

    def backward(self, grad_output=None):
        raise NotImplementedError

    def check_same_shape(self, pred, target) -> None:
        """Refuses to broadcast pred against target: (8, 1) vs (8,) is a bug, not a feature."""
        if pred.shape != target.shape:
            raise ShapeError(
                f"{type(self).__name__}: pred and target must have the same shape, "
                f"got {fmt_shape(pred.shape)} and {fmt_shape(target.shape)}"
            )


def _sample_weight(who: Loss, sample_weight, n: int, dtype) -> np.ndarray | None:
    if sample_weight is None:
        return None
    w = np.asarray(sample_weight, dtype=dtype)
    if w.shape != (n,):
        raise ShapeError(
            f"{type(who).__name__}: expected sample_weight of shape ({n},), got {fmt_shape(w.shape)}"
        )
    return w


class ElementwiseLoss(Loss):
    """A loss that is a mean/sum of per-element terms l(pred, target) over same-shaped arrays.

    Subclasses write ``elements(pred, target) -> l`` and ``grad(pred, target) -> dl/dpred``.
    ``sample_weight`` (shape (N,)) weights each sample's elements; 'mean' divides by the number
    of elements (as PyTorch does without weights).
    """

    def forward(self, pred, target, sample_weight=None):
        pred = np.asarray(pred)
        target = np.asarray(target, dtype=pred.dtype)
        self.check_same_shape(pred, target)
        w = _sample_weight(self, sample_weight, pred.shape[0] if pred.ndim else 1, pred.dtype)
        loss = self.elements(pred, target)
        if w is not None:
            w = w.reshape((-1,) + (1,) * (pred.ndim - 1))
            loss = loss * w
        self._saved = (pred, target, w)
        if self.reduction == "none":
            return loss
        total = float(loss.sum())
        return total / pred.size if self.reduction == "mean" and pred.size else total

    def backward(self, grad_output=None):
        if self._saved is None:
            raise RuntimeError(f"{self!r}: backward called before forward")
        pred, target, w = self._saved
        g = self.grad(pred, target)
        if w is not None:
            g = g * w
        if self.reduction == "none":
            if grad_output is None:
                raise ValueError(f"{self!r}: backward needs grad_output with reduction='none'")
            return g * grad_output
        if self.reduction == "mean" and pred.size:
            g = g * pred.dtype.type(1.0 / pred.size)
        return g

    def elements(self, pred, target):
        raise NotImplementedError

    def grad(self, pred, target):
        raise NotImplementedError


class MSELoss(ElementwiseLoss):
    """Mean squared error: l = (pred - target)^2.

    Shape:
        pred: any.    target: same as pred.    output: float (or pred's shape with 'none').
    """

    def elements(self, pred, target):
        d = pred - target
        return d * d

    def grad(self, pred, target):
        return 2 * (pred - target)


def log_softmax(x: np.ndarray, axis: int = -1) -> np.ndarray:
    """log softmax, stable: subtract the max so exp cannot overflow (log-sum-exp)."""
    shifted = x - x.max(axis=axis, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=axis, keepdims=True))


class CrossEntropyLoss(Loss):
    """Softmax cross-entropy from logits (softmax fused in: stable for logits of +-1e4).

    Args:
        weight: per-class weights, shape (C,).
        ignore_index: target value whose samples contribute nothing (class-index targets).
        reduction: 'mean' (weighted mean over non-ignored samples, as PyTorch), 'sum' or 'none'.
        label_smoothing: mixes the target with the uniform distribution by this amount.

    Shape:
        pred: (N, C) or (N, C, d1, ...) logits.
        target: (N,) or (N, d1, ...) integer class indices, or probabilities of pred's shape.
        output: float, or (N,) / (N, d1, ...) with 'none'.

    Example:
        >>> import numpy as np, nnframe as nf
        >>> loss = nf.CrossEntropyLoss()
        >>> round(loss(np.zeros((2, 4)), np.array([0, 3])), 4)  # log(4)
        1.3863
    """

    def __init__(
        self,
        weight=None,
        ignore_index: int = -100,
        reduction: str = "mean",
        label_smoothing: float = 0.0,
    ):
        super().__init__(reduction)
        check_hyper(
            "CrossEntropyLoss",
            "label_smoothing",
            label_smoothing,
            0.0 <= label_smoothing <= 1.0,
            "must be in [0, 1]",
        )
        self.weight = None if weight is None else np.asarray(weight, dtype=np.float64)
        self.ignore_index = ignore_index
        self.label_smoothing = float(label_smoothing)

    def extra_repr(self) -> str:
        parts = [super().extra_repr()] if super().extra_repr() else []
        if self.label_smoothing:
            parts.append(f"label_smoothing={self.label_smoothing}")
        return ", ".join(parts)

    def _effective_target(self, pred, target):
        """Q such that the per-sample loss is -sum_c Q[:, c] * log_softmax(pred)[:, c], and the
        per-sample weights whose sum divides the 'mean' reduction.

        Class indices y with weights w and smoothing e: Q = (1 - e) w[y] onehot(y) + (e / C) w,
        zero for ignored samples; the mean divides by sum of w[y] over the kept samples (PyTorch).
        Probabilities q: Q = w * ((1 - e) q + e / C); the mean divides by the number of samples.
        """
        name = type(self).__name__
        n, c = pred.shape[0], pred.shape[1]
        expand = (1, c) + (1,) * (pred.ndim - 2)  # broadcasts a (C,) vector along axis 1
        cw = None if self.weight is None else self.weight.astype(pred.dtype).reshape(expand)
        e = self.label_smoothing
        if target.shape == pred.shape and target.dtype.kind == "f":
            q = target.astype(pred.dtype, copy=False)
            if e:
                q = q * (1 - e) + e / c
            return (q if cw is None else q * cw), np.ones((n,) + pred.shape[2:], pred.dtype)
        expected = (n,) + pred.shape[2:]
        if target.shape != expected:
            raise ShapeError(
                f"{name}: expected target of shape {fmt_shape(expected)} (class indices) or "
                f"{fmt_shape(pred.shape)} (probabilities), got {fmt_shape(target.shape)}"
            )
        if target.dtype.kind not in "iu":
            if target.dtype.kind == "f" and np.all(np.mod(target, 1) == 0):
                target = target.astype(np.int64)
            else:
                raise TypeError(f"{name}: expected integer class indices, got dtype {target.dtype}")
        valid = target != self.ignore_index
        t = np.where(valid, target, 0)
        bad = (t < 0) | (t >= c)
        if bad.any():
            raise ValueError(
                f"{name}: target must hold class indices in [0, {c}), got {int(t[bad].flat[0])}"
            )
        onehot = (np.arange(c).reshape(expand) == t[:, None]).astype(pred.dtype)
        wy = valid.astype(pred.dtype)  # w[y] for kept samples, 0 for ignored ones
        if cw is not None:
            wy *= self.weight.astype(pred.dtype)[t]
        q = onehot * ((1 - e) * wy)[:, None]
        if e:
            smooth = np.full(expand, e / c, pred.dtype) if cw is None else cw * (e / c)
            q += smooth * valid[:, None]
        return q, wy

    def forward(self, pred, target, sample_weight=None):
        pred = np.asarray(pred)
        if pred.dtype.kind != "f":
            pred = pred.astype(np.float32)
        target = np.asarray(target)
        if pred.ndim < 2:
            raise ShapeError(
                f"{type(self).__name__}: expected pred of shape (N, C) or (N, C, d1, ...), "
                f"got {fmt_shape(pred.shape)}"
            )
        q, denom_w = self._effective_target(pred, target)
        sw = _sample_weight(self, sample_weight, pred.shape[0], pred.dtype)
        if sw is not None:
            q = q * sw.reshape((-1,) + (1,) * (pred.ndim - 1))
        logp = log_softmax(pred, axis=1)
        per = -(q * logp).sum(axis=1)
        self._saved = (logp, q, float(denom_w.sum()))
        if self.reduction == "none":
            return per
        total = float(per.sum())
        if self.reduction == "sum":
            return total
        return total / self._saved[2] if self._saved[2] else 0.0

    def backward(self, grad_output=None):
        if self._saved is None:
            raise RuntimeError(f"{self!r}: backward called before forward")
        logp, q, denom = self._saved
        # d/dz of -sum_k q_k log softmax(z)_k = softmax(z) * sum_k q_k - q
        g = np.exp(logp) * q.sum(axis=1, keepdims=True) - q
        if self.reduction == "none":
            if grad_output is None:
                raise ValueError(f"{self!r}: backward needs grad_output with reduction='none'")
            return g * np.expand_dims(grad_output, 1)
        if self.reduction == "mean":
            g *= g.dtype.type(1.0 / denom) if denom else 0
        return g
