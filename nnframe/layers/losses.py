"""Losses: ``loss(pred, target)`` returns a float; ``loss.backward()`` returns dL/dpred.

Losses are their own base (not Modules): they hold no parameters and end the chain. Names,
arguments and formulas are PyTorch's. Every loss takes ``reduction='mean'|'sum'|'none'`` and an
optional per-sample ``sample_weight`` (shape (N,)) at call time, which scales each sample's
losses; 'mean' keeps its unweighted denominator (so all-ones weights change nothing). With
``reduction='none'`` the call returns the per-element losses and ``backward(grad_output)`` takes
their gradient. A 'mean' over nothing (empty batch, every target ignored) is nan with a zero
gradient, as in PyTorch.

Pair losses (CosineEmbeddingLoss, MarginRankingLoss) take ``pred`` as a tuple ``(x1, x2)`` and
their ``backward`` returns the tuple ``(dL/dx1, dL/dx2)``, the way multi-output modules pass
gradients.
"""

from __future__ import annotations

import numpy as np

from nnframe.core.backend import array_module, is_array, scatter_add, special
from nnframe.core.device import cuda_device
from nnframe.core.errors import ShapeError, as_float_input, check_hyper, expected_got, fmt_shape
from nnframe.core.module import to_conversion
from nnframe.functional import log_softmax


def _float_array(who: str, x) -> np.ndarray:
    """``x`` as a float array: float inputs keep their dtype, others become float32."""
    x = array_module(x).asarray(x)
    return x if x.dtype.kind == "f" else as_float_input(who, x, np.dtype(np.float32))


def _expand_classes(g):
    """A per-position array (N, d1, ...) as (N, 1, d1, ...), to broadcast along the class axis 1
    (a scalar stays a scalar). A reshape: cheaper than np.expand_dims on small batches."""
    return g.reshape(g.shape[:1] + (1,) + g.shape[1:]) if np.ndim(g) else g


def _indices_within(target, n: int) -> bool:
    """Whether every index of ``target`` is in [0, n): two reductions on the CPU; on a device
    one test, so that the host waits for the device once."""
    if type(target) is np.ndarray:
        return bool(target.min() >= 0 and target.max() < n)
    return not bool(((target < 0) | (target >= n)).any())


def _expand_last(g):
    """A per-sample array (N, ...) as (N, ..., 1), to broadcast along a last axis (a scalar,
    numpy's even for device arrays, stays a scalar)."""
    return g[..., None] if np.ndim(g) else g


class Loss:
    """Base class of every loss. A subclass writes two methods:

    - ``elements(pred, target)``: validates, computes the per-element losses (before sample
      weights and reduction) and keeps what ``grad`` needs with ``save_for_backward``;
    - ``grad(g)``: dL/dpred, given ``g`` = dL/d(elements), a scalar or an array that broadcasts
      against the elements.

    The base does the reduction, ``sample_weight`` and the 'none' gradient for every loss;
    ``mean_denominator`` says what 'mean' divides by (default: the number of elements).

    Example:
        >>> import numpy as np, nnframe as nf
        >>> class L4Loss(nf.Loss):
        ...     def elements(self, pred, target):
        ...         d = pred - self.same_shape(pred, target)
        ...         self.save_for_backward(d)
        ...         return d**4
        ...     def grad(self, g):
        ...         (d,) = self.saved
        ...         return 4 * d**3 * g
        >>> nf.check_loss(L4Loss(), np.array([[0.5, -1.0]]), np.array([[0.0, 0.0]]))
    """

    reductions: tuple[str, ...] = ("mean", "sum", "none")
    hyper: tuple[str, ...] = ()  # scalar hyperparameters shown by repr
    #: The rank of ``pred`` without its batch axis, for a loss that PyTorch also calls that way
    #: ((C,) logits with a 0-d target): the base adds a batch axis of 1 to pred and target,
    #: and removes it from the 'none' losses, their gradient and dL/dpred. None: no such form.
    unbatched_rank: int | None = None
    _unbatched = False  # whether the latest call came without its batch axis

    def __init__(self, reduction: str = "mean"):
        if reduction not in self.reductions:
            raise ValueError(
                f"{type(self).__name__}: invalid reduction={reduction!r} "
                f"(must be one of {self.reductions})"
            )
        self.reduction = reduction
        self._saved = None
        self._reduced = None

    @property
    def name(self) -> str:
        return type(self).__name__

    def extra_repr(self) -> str:
        parts = [f"{k}={getattr(self, k)!r}" for k in self.hyper]
        if self.reduction != "mean":
            parts.append(f"reduction={self.reduction!r}")
        return ", ".join(parts)

    def __repr__(self) -> str:
        return f"{self.name}({self.extra_repr()})"

    def __call__(self, pred, target, sample_weight=None):
        return self.forward(pred, target, sample_weight=sample_weight)

    def to(self, *args, **kwargs) -> Loss:
        """Moves and/or casts the loss's own arrays (class ``weight``, ``pos_weight``) as
        ``Module.to`` does a model's; returns self: ``nf.CrossEntropyLoss(weight=w).to("cuda")``.
        (``Trainer`` moves its loss to its model's device by itself.)"""
        _, _, convert = to_conversion(self, args, kwargs)
        for name, value in list(vars(self).items()):
            if is_array(value) and not name.startswith("_"):
                setattr(self, name, convert(value))
        return self

    def cpu(self) -> Loss:
        """``to("cpu")``."""
        return self.to("cpu")

    def cuda(self, device: int | str | None = None) -> Loss:
        """``to("cuda")`` (GPU ``device`` when given: ``cuda(1)``)."""
        return self.to(cuda_device(device))

    def forward(self, pred, target, sample_weight=None) -> float | np.ndarray:
        """The reduced loss as a Python float, or the per-element losses with 'none'."""
        self._reduced = None
        pred = self.as_pred(pred)
        xp = array_module(*pred) if isinstance(pred, (tuple, list)) else array_module(pred)
        if target is not None:  # (None: a loss of its inputs alone, such as a triplet loss)
            target = xp.asarray(target)
        self._unbatched = unbatched = (
            self.unbatched_rank is not None
            and (pred[0] if isinstance(pred, tuple) else pred).ndim == self.unbatched_rank
        )
        if unbatched:
            losses = self._unbatched_elements(pred, target)
        else:
            losses = self.elements(pred, target)
        w = self._sample_weight(sample_weight, losses)
        if w is not None:
            losses = losses * w
        denom = 1.0 if self.reduction in ("sum", "none") else float(self.mean_denominator(losses))
        self._reduced = (w, denom, losses.shape, losses.dtype)
        if self.reduction == "none":
            return losses[0] if unbatched else losses
        total = float(losses.sum())
        return total / denom if denom else float("nan")

    def backward(self, grad_output=None):
        """dL/dpred (a tuple for pair losses). ``grad_output``: dL/d(loss), required with 'none'
        (shaped like the losses), an optional scalar otherwise."""
        if self._reduced is None:
            raise RuntimeError(f"{self!r}: backward called before forward")
        w, denom, shape, dtype = self._reduced
        if self.reduction == "none":
            if grad_output is None:
                raise ValueError(f"{self!r}: backward needs grad_output with reduction='none'")
            g = as_float_input(self.name, grad_output, dtype)
            if self._unbatched:
                shape = shape[1:]
            if g.shape != shape:
                raise ShapeError(
                    expected_got(
                        self.name, f"grad_output of shape {fmt_shape(shape)}", fmt_shape(g.shape)
                    )
                )
            if self._unbatched:
                g = g[None]
        else:
            scale = 1.0 if grad_output is None else float(grad_output)
            g = dtype.type(scale / denom if denom else 0.0)
        if w is not None:
            g = g * w
        grad = self.grad(g)
        if self._unbatched:  # dL/dpred of the unbatched pred: the batch axis goes again
            return tuple(d[0] for d in grad) if isinstance(grad, tuple) else grad[0]
        return grad

    def _unbatched_elements(self, pred, target):
        """``elements`` of a batch of one; a shape error names the unbatched shapes."""
        batched = tuple(p[None] for p in pred) if isinstance(pred, tuple) else pred[None]
        try:
            return self.elements(batched, target[None])
        except ShapeError as e:
            got = pred[0].shape if isinstance(pred, tuple) else pred.shape
            raise ShapeError(
                f"{e} (an unbatched call: pred {fmt_shape(got)} and target "
                f"{fmt_shape(target.shape)}, given a batch axis of 1 each)"
            ) from None

    # ----------------------------------------------------------------- for subclasses
    def elements(self, pred, target) -> np.ndarray:
        raise NotImplementedError

    def grad(self, g):
        raise NotImplementedError

    def mean_denominator(self, losses: np.ndarray) -> float:
        return losses.size

    def as_pred(self, pred):
        return _float_array(self.name, pred)

    def save_for_backward(self, *arrays) -> None:
        self._saved = arrays

    @property
    def saved(self) -> tuple:
        if self._saved is None:
            raise RuntimeError(f"{self!r}: backward called before forward")
        return self._saved

    def same_shape(self, pred, target, what: str = "pred") -> np.ndarray:
        """``target`` in pred's dtype; refuses to broadcast: (8, 1) against (8,) is a bug."""
        if pred.shape != target.shape:
            hint = ""
            if getattr(target, "size", None) == pred.size:  # the same values, another layout
                hint = f". Reshape the target: target.reshape{fmt_shape(pred.shape)}"
            raise ShapeError(
                f"{self.name}: {what} and target must have the same shape, "
                f"got {fmt_shape(pred.shape)} and {fmt_shape(target.shape)}{hint}"
            )
        return as_float_input(self.name, target, pred.dtype)

    def _sample_weight(self, sample_weight, losses: np.ndarray):
        """Per-sample weights (N,), reshaped to broadcast against the losses, or None."""
        if sample_weight is None:
            return None
        if losses.ndim == 0:
            raise ShapeError(
                expected_got(self.name, "a batch axis for sample_weight", "a scalar loss")
            )
        n = losses.shape[0]
        w = as_float_input(self.name, sample_weight, losses.dtype)
        if w.shape != (n,):
            raise ShapeError(
                expected_got(self.name, f"sample_weight of shape ({n},)", fmt_shape(w.shape))
            )
        return w.reshape((n,) + (1,) * (losses.ndim - 1))

    def _broadcast(self, what: str, value, shape: tuple, dtype, like=None):
        """A weight array that broadcasts to exactly ``shape`` (as PyTorch allows), in ``dtype``
        and in the array module of ``like`` (the data: constructor weights live on the host)."""
        if value is None:
            return None
        try:
            ok = np.broadcast_shapes(value.shape, shape) == shape
        except ValueError:
            ok = False
        if not ok:
            raise ShapeError(
                expected_got(
                    self.name, f"{what} broadcastable to {fmt_shape(shape)}", fmt_shape(value.shape)
                )
            )
        xm = array_module(like)
        if xm is not np:
            return xm.asarray(value, dtype=dtype)
        return value.astype(dtype, copy=False)

    def _check_range(self, what: str, x, low: float, high: float) -> None:
        bad = ~((x >= low) & (x <= high))
        if bad.any():
            raise ValueError(
                expected_got(self.name, f"{what} in [{low:g}, {high:g}]", f"{x[bad].flat[0]:g}")
            )

    def _check_signs(self, y) -> np.ndarray:
        """``y == 1`` for targets that must hold 1 or -1 (a clear error for anything else)."""
        pos = y == 1
        bad = ~(pos | (y == -1))
        if bad.any():
            raise ValueError(f"{self.name}: target must hold 1 or -1, got {y[bad].flat[0]:g}")
        return pos


def _weight_array(who: str, value) -> np.ndarray | None:
    if value is None:
        return None
    w = array_module(value).asarray(value)
    return w if w.dtype.kind == "f" else as_float_input(who, w, np.dtype(np.float64))


def _class_weights(w, pred):
    """A copy of the (C,) class weights in pred's dtype and array module (constructor weights
    live where they were given, on the host by default; they are converted where they are used)."""
    xm = array_module(pred)
    if xm is np and type(w) is np.ndarray:
        return w.astype(pred.dtype)
    return xm.array(w, dtype=pred.dtype)


# --------------------------------------------------------------------------- regression
class MSELoss(Loss):
    """Mean squared error: l = (pred - target)^2.

    Shape:
        pred: any.    target: same as pred.    output: float (pred's shape with 'none').

    Example:
        >>> import nnframe as nf
        >>> nf.MSELoss()([1.0, 2.0], [0.0, 4.0])  # (1 + 4) / 2
        2.5
    """

    def __init__(self, size_average=None, reduce=None, reduction: str = "mean"):
        super().__init__(_legacy(type(self).__name__, size_average, reduce, reduction))

    def elements(self, pred, target):
        d = pred - self.same_shape(pred, target)
        self.save_for_backward(d)
        return d * d

    def grad(self, g):
        (d,) = self.saved
        return 2 * d * g


class L1Loss(Loss):
    """Mean absolute error: l = |pred - target| (gradient sign(pred - target), 0 at 0).

    Shape:
        pred: any.    target: same as pred.    output: float (pred's shape with 'none').
    """

    def __init__(self, size_average=None, reduce=None, reduction: str = "mean"):
        super().__init__(_legacy(type(self).__name__, size_average, reduce, reduction))

    def elements(self, pred, target):
        d = pred - self.same_shape(pred, target)
        self.save_for_backward(d)
        return np.abs(d)

    def grad(self, g):
        (d,) = self.saved
        return np.sign(d) * g


class HuberLoss(Loss):
    """Huber: l = d^2 / 2 if |d| < delta, else delta * (|d| - delta / 2), with d = pred - target.

    Shape:
        pred: any.    target: same as pred.    output: float (pred's shape with 'none').
    """

    hyper = ("delta",)

    def __init__(self, reduction: str = "mean", delta: float = 1.0):
        super().__init__(reduction)
        check_hyper(self.name, "delta", delta, delta > 0, "must be > 0")
        self.delta = float(delta)

    def elements(self, pred, target):
        d = pred - self.same_shape(pred, target)
        self.save_for_backward(d)
        a = np.abs(d)
        return np.where(a < self.delta, 0.5 * d * d, self.delta * (a - 0.5 * self.delta))

    def grad(self, g):
        (d,) = self.saved
        return np.clip(d, -self.delta, self.delta) * g  # d inside the band, delta*sign(d) outside


class SmoothL1Loss(Loss):
    """Smooth L1: l = d^2 / (2 beta) if |d| < beta, else |d| - beta / 2 (L1 when beta = 0).

    Shape:
        pred: any.    target: same as pred.    output: float (pred's shape with 'none').
    """

    hyper = ("beta",)

    def __init__(self, size_average=None, reduce=None, reduction: str = "mean", beta: float = 1.0):
        super().__init__(_legacy(type(self).__name__, size_average, reduce, reduction))
        check_hyper(self.name, "beta", beta, beta >= 0, "must be >= 0")
        self.beta = float(beta)

    def elements(self, pred, target):
        d = pred - self.same_shape(pred, target)
        self.save_for_backward(d)
        a = np.abs(d)
        if self.beta == 0:
            return a
        return np.where(a < self.beta, 0.5 * d * d / self.beta, a - 0.5 * self.beta)

    def grad(self, g):
        (d,) = self.saved
        return (np.sign(d) if self.beta == 0 else np.clip(d / self.beta, -1, 1)) * g


class PoissonNLLLoss(Loss):
    """Poisson negative log-likelihood of ``target`` counts.

    ``log_input=True``: l = exp(pred) - target * pred; else l = pred - target * log(pred + eps).
    ``full=True`` adds Stirling's approximation of log(target!) where target > 1:
    target * log(target) - target + log(2 pi target) / 2 (a constant: no gradient).

    Shape:
        pred: any.    target: same as pred.    output: float (pred's shape with 'none').
    """

    hyper = ("log_input", "full", "eps")

    def __init__(
        self,
        log_input: bool = True,
        full: bool = False,
        size_average=None,
        eps: float = 1e-8,
        reduce=None,
        reduction: str = "mean",
    ):
        super().__init__(_legacy(type(self).__name__, size_average, reduce, reduction))
        check_hyper(self.name, "eps", eps, eps >= 0, "must be >= 0")
        self.log_input, self.full, self.eps = bool(log_input), bool(full), float(eps)

    def elements(self, pred, target):
        y = self.same_shape(pred, target)
        if self.log_input:
            rate = np.exp(pred)
            losses = rate - y * pred
            self.save_for_backward(rate - y)
        else:
            losses = pred - y * np.log(pred + self.eps)
            self.save_for_backward(1 - y / (pred + self.eps))
        if self.full:
            big = y > 1
            yb = np.where(big, y, 1)  # log of 1 is 0: no warning for the masked entries
            losses = losses + big * (yb * np.log(yb) - yb + 0.5 * np.log(2 * np.pi * yb))
        return losses

    def grad(self, g):
        (dl,) = self.saved
        return dl * g


# --------------------------------------------------------------------------- probabilities
class BCELoss(Loss):
    """Binary cross-entropy on probabilities: l = -w [y log p + (1 - y) log(1 - p)].

    As PyTorch, each log is clamped at -100 (so p = 0 or 1 gives a finite loss) and the gradient
    w (p - y) / max(p (1 - p), 1e-12) is finite. Prefer BCEWithLogitsLoss on logits.

    Args:
        weight: rescaling weight, broadcastable to pred's shape.

    Shape:
        pred: any, values in [0, 1].    target: same as pred, in [0, 1].
        output: float (pred's shape with 'none').
    """

    def __init__(self, weight=None, size_average=None, reduce=None, reduction: str = "mean"):
        super().__init__(_legacy(type(self).__name__, size_average, reduce, reduction))
        self.weight = _weight_array(self.name, weight)

    def elements(self, pred, target):
        y = self.same_shape(pred, target)
        self._check_range("pred", pred, 0, 1)
        self._check_range("target", y, 0, 1)
        w = self._broadcast("weight", self.weight, pred.shape, pred.dtype, pred)
        with np.errstate(divide="ignore"):  # log(0) = -inf, clamped just below
            log_p = np.maximum(np.log(pred), -100)
            log_q = np.maximum(np.log1p(-pred), -100)
        self.save_for_backward(pred, y, w)
        losses = -(y * log_p + (1 - y) * log_q)
        return losses if w is None else losses * w

    def grad(self, g):
        p, y, w = self.saved
        dl = (p - y) / np.maximum(p * (1 - p), 1e-12)
        return (dl if w is None else dl * w) * g


class BCEWithLogitsLoss(Loss):
    """Sigmoid + binary cross-entropy, fused: l = w [pw y softplus(-x) + (1 - y) softplus(x)].

    log sigmoid(x) = -softplus(-x) and log(1 - sigmoid(x)) = -softplus(x), computed with
    log-sum-exp, so logits of +-1e4 give finite losses and gradients without warnings.

    Args:
        weight: rescaling weight, broadcastable to pred's shape.
        pos_weight: weight of positive examples, broadcastable to pred's shape (per class: (C,)).

    Shape:
        pred: any (logits).    target: same as pred, in [0, 1].
        output: float (pred's shape with 'none').
    """

    def __init__(
        self, weight=None, size_average=None, reduce=None, reduction: str = "mean", pos_weight=None
    ):
        super().__init__(_legacy(type(self).__name__, size_average, reduce, reduction))
        self.weight = _weight_array(self.name, weight)
        self.pos_weight = _weight_array(self.name, pos_weight)

    def elements(self, pred, target):
        y = self.same_shape(pred, target)
        w = self._broadcast("weight", self.weight, pred.shape, pred.dtype, pred)
        pw = self._broadcast("pos_weight", self.pos_weight, pred.shape, pred.dtype, pred)
        py = y if pw is None else pw * y
        self.save_for_backward(pred, y, py, w)
        # logaddexp(0, x) = softplus(x): never overflows
        losses = py * np.logaddexp(0, -pred) + (1 - y) * np.logaddexp(0, pred)
        return losses if w is None else losses * w

    def grad(self, g):
        x, y, py, w = self.saved
        # d/dx [py softplus(-x) + (1 - y) softplus(x)] = (py + 1 - y) sigmoid(x) - py
        dl = (py + 1 - y) * special(x).expit(x) - py
        return (dl if w is None else dl * w) * g


class KLDivLoss(Loss):
    """Kullback-Leibler divergence; ``pred`` holds log-probabilities.

    l = target * (log target - pred) (0 where target = 0), or with ``log_target=True`` (target
    given as log-probabilities) l = exp(target) * (target - pred). ``reduction='batchmean'``
    divides the sum by the batch size N: the true KL divergence per sample; 'mean' divides by
    the number of elements (as PyTorch).

    Shape:
        pred: (N, *) log-probabilities.    target: same as pred.
        output: float (pred's shape with 'none').
    """

    reductions = ("mean", "batchmean", "sum", "none")
    hyper = ("log_target",)

    def __init__(
        self, size_average=None, reduce=None, reduction: str = "mean", log_target: bool = False
    ):
        super().__init__(_legacy(type(self).__name__, size_average, reduce, reduction))
        self.log_target = bool(log_target)

    def elements(self, pred, target):
        t = self.same_shape(pred, target)
        p = np.exp(t) if self.log_target else t  # target as probabilities: dl/dpred = -p
        self.save_for_backward(p)
        return p * (t - pred) if self.log_target else special(t).xlogy(t, t) - t * pred

    def grad(self, g):
        (p,) = self.saved
        return -p * g

    def mean_denominator(self, losses):
        if self.reduction == "batchmean":
            return losses.shape[0] if losses.ndim else 1
        return losses.size


# --------------------------------------------------------------------------- classification
def _class_indices(who: str, target, shape: tuple, c: int, ignore_index=None, or_probs=None):
    """Checks class-index targets of ``shape``; returns (indices, ignored ones set to 0; kept mask).
    ``or_probs``: the shape of probability targets, when those are accepted too (for the message)."""
    if target.shape != shape:
        expected = f"target of shape {fmt_shape(shape)} (class indices)"
        if or_probs is not None:
            expected += f" or {fmt_shape(or_probs)} (probabilities)"
        raise ShapeError(expected_got(who, expected, fmt_shape(target.shape)))
    if target.dtype.kind not in "iu":
        if target.dtype.kind == "f" and np.all(np.mod(target, 1) == 0):
            target = target.astype(np.int64)
        else:
            raise TypeError(expected_got(who, "integer class indices", f"dtype {target.dtype}"))
    keep = (
        array_module(target).ones(shape, bool) if ignore_index is None else target != ignore_index
    )
    t = np.where(keep, target, 0)
    bad = (t < 0) | (t >= c)
    if bad.any():
        raise ValueError(
            f"{who}: target must hold class indices in [0, {c}), got {int(t[bad].flat[0])}"
        )
    return t, keep


class NLLLoss(Loss):
    """Negative log-likelihood of class indices; ``pred`` holds log-probabilities.

    l_i = -weight[y_i] * pred[i, y_i], 0 for targets equal to ``ignore_index``; 'mean' divides
    the sum by the sum of weight[y_i] over the kept targets (as PyTorch).

    Args:
        weight: per-class weights, shape (C,).
        ignore_index: target value whose positions contribute nothing.

    Shape:
        pred: (N, C) or (N, C, d1, ...).    target: (N,) or (N, d1, ...) class indices.
        output: float, or (N,) / (N, d1, ...) with 'none'. Unbatched: pred (C,), target 0-d.
    """

    hyper = ("ignore_index",)
    unbatched_rank = 1  # (C,) with a 0-d target
    label_smoothing = 0.0
    probability_targets = False  # CrossEntropyLoss also takes class probabilities

    def __init__(
        self,
        weight=None,
        size_average=None,
        ignore_index: int = -100,
        reduce=None,
        reduction: str = "mean",
    ):
        super().__init__(_legacy(type(self).__name__, size_average, reduce, reduction))
        self.weight = _weight_array(self.name, weight)
        self.ignore_index = int(ignore_index)

    def target_distribution(self, pred, target):
        """Q such that each loss is -sum_c Q[:, c] * logp[:, c]; sets the 'mean' denominator.

        Indices y, class weights w, smoothing e: Q = (1 - e) w[y] onehot(y) + (e / C) w, zero where
        ignored; 'mean' divides by the sum of w[y] over kept targets (PyTorch's nll_loss, and its
        label-smoothing term, use that one denominator). Probabilities q (CrossEntropyLoss):
        Q = w ((1 - e) q + e / C); 'mean' divides by the number of positions N * d1 * ...
        """
        n, c = pred.shape[:2]
        expand = (1, c) + (1,) * (pred.ndim - 2)  # a (C,) vector broadcast along axis 1
        if self.weight is not None and self.weight.shape != (c,):
            raise ShapeError(
                expected_got(self.name, f"weight of shape ({c},)", fmt_shape(self.weight.shape))
            )
        cw = None if self.weight is None else _class_weights(self.weight, pred).reshape(expand)
        e = self.label_smoothing
        if self.probability_targets and target.shape == pred.shape and target.dtype.kind == "f":
            if self.ignore_index >= 0:  # as PyTorch: there is nothing to ignore in probabilities
                got = f"probabilities of shape {fmt_shape(target.shape)}"
                raise ValueError(
                    expected_got(
                        self.name, f"class indices with ignore_index={self.ignore_index}", got
                    )
                )
            q = as_float_input(self.name, target, pred.dtype)
            if e:
                q = q * (1 - e) + e / c
            self._denominator = q[:, 0].size
            return q if cw is None else q * cw
        expected = (n,) + pred.shape[2:]
        probs = pred.shape if self.probability_targets else None
        t, keep = _class_indices(self.name, target, expected, c, self.ignore_index, probs)
        wy = keep.astype(pred.dtype)  # w[y] for kept targets, 0 for ignored ones
        if cw is not None:
            wy *= cw.reshape(-1)[t]
        self._denominator = float(wy.sum())
        onehot = array_module(t).arange(c).reshape(expand) == _expand_classes(t)
        q = onehot * _expand_classes((1 - e) * wy)  # pred's dtype
        if e:
            q += (e / c if cw is None else cw * (e / c)) * _expand_classes(keep)
        return q

    def check_pred(self, pred) -> None:
        if pred.ndim < 2:
            raise ShapeError(
                expected_got(
                    self.name, "pred of shape (N, C) or (N, C, d1, ...)", fmt_shape(pred.shape)
                )
            )

    def elements(self, pred, target):
        self.check_pred(pred)
        q = self.target_distribution(pred, target)
        self.save_for_backward(q)
        return -(q * pred).sum(axis=1)

    def grad(self, g):
        (q,) = self.saved
        return -q * _expand_classes(g)

    def mean_denominator(self, losses):
        return self._denominator


class CrossEntropyLoss(NLLLoss):
    """Softmax cross-entropy from logits: NLLLoss on log_softmax(pred), fused (log-sum-exp: stable
    for logits of +-1e4).

    Args:
        weight: per-class weights, shape (C,).
        ignore_index: target value whose positions contribute nothing (class-index targets).
        reduction: 'mean' (class-index targets: the sum over kept positions divided by the sum
            of their weight[y]; probability targets: divided by the number of positions), 'sum'
            or 'none'.
        label_smoothing: mixes the target with the uniform distribution by this amount.

    Shape:
        pred: (N, C) or (N, C, d1, ...) logits.
        target: (N,) or (N, d1, ...) integer class indices, or float probabilities of pred's shape.
        output: float, or (N,) / (N, d1, ...) with 'none'.
        Unbatched: pred (C,), target a 0-d index or (C,) probabilities; output 0-d with 'none'.

    Example:
        >>> import numpy as np, nnframe as nf
        >>> loss = nf.CrossEntropyLoss()
        >>> round(loss(np.zeros((2, 4)), np.array([0, 3])), 4)  # log(4)
        1.3863
    """

    hyper = ("ignore_index", "label_smoothing")
    probability_targets = True

    def __init__(
        self,
        weight=None,
        size_average=None,
        ignore_index: int = -100,
        reduce=None,
        reduction: str = "mean",
        label_smoothing: float = 0.0,
    ):
        super().__init__(weight, size_average, ignore_index, reduce, reduction)
        ok = 0.0 <= label_smoothing <= 1.0
        check_hyper(self.name, "label_smoothing", label_smoothing, ok, "must be in [0, 1]")
        self.label_smoothing = float(label_smoothing)

    def elements(self, pred, target):
        self.check_pred(pred)
        if self._plain_indices(pred, target):
            return self._plain_elements(pred, target)
        q = self.target_distribution(pred, target)
        logp = log_softmax(pred, axis=1)
        self.save_for_backward(logp, q)
        return -(q * logp).sum(axis=1)

    def grad(self, g):
        if len(self.saved) == 3:  # the plain fast path: (softmax, targets, rows)
            p, t, rows = self.saved
            d = p.copy()
            d[rows, t] -= 1  # softmax - onehot
            return d * _expand_classes(g)
        logp, q = self.saved
        # d/dz of -sum_k q_k log softmax(z)_k = softmax(z) * sum_k q_k - q
        return (np.exp(logp) * q.sum(axis=1, keepdims=True) - q) * _expand_classes(g)

    def _plain_indices(self, pred, target) -> bool:
        """The common case: (N, C) logits, valid integer indices, no weight, no smoothing."""
        return (
            pred.ndim == 2
            and target.ndim == 1
            and target.dtype.kind in "iu"
            and target.shape[0] == pred.shape[0] > 0
            and self.weight is None
            and not self.label_smoothing
            and not 0 <= self.ignore_index < pred.shape[1]  # (it cannot match a valid index)
            and _indices_within(target, pred.shape[1])
        )

    def _plain_elements(self, pred, target):
        """Fast path: no one-hot matrix; picks the target logits by index. Same math."""
        rows = array_module(pred).arange(pred.shape[0])
        shifted = pred - pred.max(axis=1, keepdims=True)  # exp cannot overflow
        e = np.exp(shifted)
        total = e.sum(axis=1)
        self._denominator = float(pred.shape[0])
        e /= total[:, None]  # softmax, kept for the gradient
        self.save_for_backward(e, target, rows)
        return np.log(total) - shifted[rows, target]  # -log softmax(z)_y


class MultiMarginLoss(Loss):
    """Multi-class hinge: l_i = sum_{c != y_i} weight[y_i] max(0, margin - x[y_i] + x[c])^p / C.

    (PyTorch's implementation: the class weight multiplies the powered hinge.)

    Args:
        p: 1 or 2.
        margin: the margin.
        weight: per-class weights, shape (C,).

    Shape:
        pred: (N, C) scores.    target: (N,) class indices.    output: float, or (N,) with 'none'.
        Unbatched: pred (C,), target 0-d.
    """

    hyper = ("p", "margin")
    unbatched_rank = 1  # (C,) with a 0-d target

    def __init__(
        self,
        p: int = 1,
        margin: float = 1.0,
        weight=None,
        size_average=None,
        reduce=None,
        reduction: str = "mean",
    ):
        super().__init__(_legacy(type(self).__name__, size_average, reduce, reduction))
        check_hyper(self.name, "p", p, p in (1, 2), "must be 1 or 2")
        self.p, self.margin = int(p), float(margin)
        self.weight = _weight_array(self.name, weight)

    def elements(self, pred, target):
        if pred.ndim != 2:
            raise ShapeError(expected_got(self.name, "pred of shape (N, C)", fmt_shape(pred.shape)))
        n, c = pred.shape
        t, _ = _class_indices(self.name, target, (n,), c)
        rows = array_module(pred).arange(n)
        h = np.maximum(self.margin - pred[rows, t][:, None] + pred, 0)  # hinge of every class
        h[rows, t] = 0  # the target class itself does not count
        wy = None
        if self.weight is not None:
            if self.weight.shape != (c,):
                raise ShapeError(
                    expected_got(self.name, f"weight of shape ({c},)", fmt_shape(self.weight.shape))
                )
            wy = _class_weights(self.weight, pred)[t]
        self.save_for_backward(h, t, wy)
        losses = (h if self.p == 1 else h * h).sum(axis=1) / c
        return losses if wy is None else losses * wy

    def grad(self, g):
        h, t, wy = self.saved
        n, c = h.shape
        coef = (h > 0).astype(h.dtype) if self.p == 1 else 2 * h  # d h^p / d h
        coef = coef * _expand_classes(g / c if wy is None else g * wy / c)
        coef[array_module(coef).arange(n), t] = -coef.sum(
            axis=1
        )  # x[y] enters every hinge with a minus sign
        return coef


# --------------------------------------------------------------------------- embeddings, ranking
class HingeEmbeddingLoss(Loss):
    """l = x where target = 1, max(0, margin - x) where target = -1 (x: a distance).

    Shape:
        pred: any.    target: same as pred, holding 1 or -1.    output: float (pred's shape with 'none').
    """

    hyper = ("margin",)

    def __init__(
        self, margin: float = 1.0, size_average=None, reduce=None, reduction: str = "mean"
    ):
        super().__init__(_legacy(type(self).__name__, size_average, reduce, reduction))
        self.margin = float(margin)

    def elements(self, pred, target):
        pos = self._check_signs(self.same_shape(pred, target))
        dl = np.where(pos, 1.0, np.where(pred < self.margin, -1.0, 0.0)).astype(pred.dtype)
        self.save_for_backward(dl)
        return np.where(pos, pred, np.maximum(self.margin - pred, 0))

    def grad(self, g):
        (dl,) = self.saved
        return dl * g


class _PairLoss(Loss):
    """A loss of two inputs: ``pred`` is the tuple ``(x1, x2)``; backward returns a tuple."""

    def as_pred(self, pred):
        if not (isinstance(pred, (tuple, list)) and len(pred) == 2):
            raise TypeError(expected_got(self.name, "pred as a pair (x1, x2)", type(pred).__name__))
        x1, x2 = (_float_array(self.name, x) for x in pred)
        if x1.shape != x2.shape:
            raise ShapeError(
                f"{self.name}: x1 and x2 must have the same shape, "
                f"got {fmt_shape(x1.shape)} and {fmt_shape(x2.shape)}"
            )
        dtype = np.result_type(x1, x2)
        return x1.astype(dtype, copy=False), x2.astype(dtype, copy=False)


class CosineEmbeddingLoss(_PairLoss):
    """l = 1 - cos(x1, x2) where target = 1, max(0, cos(x1, x2) - margin) where target = -1.

    cos = x1.x2 / sqrt((|x1|^2 + 1e-12) (|x2|^2 + 1e-12)), as PyTorch. Call as
    ``loss((x1, x2), target)``; ``backward()`` returns ``(dL/dx1, dL/dx2)``.

    Shape:
        pred: a pair (x1, x2) of (N, D).    target: (N,), holding 1 or -1.
        output: float, or (N,) with 'none'. Unbatched: x1, x2 (D,), target 0-d.
    """

    hyper = ("margin",)
    unbatched_rank = 1  # (D,) pairs with a 0-d target

    def __init__(
        self, margin: float = 0.0, size_average=None, reduce=None, reduction: str = "mean"
    ):
        super().__init__(_legacy(type(self).__name__, size_average, reduce, reduction))
        self.margin = float(margin)

    def elements(self, pred, target):
        x1, x2 = pred
        if x1.ndim != 2:
            raise ShapeError(
                expected_got(self.name, "x1 and x2 of shape (N, D)", fmt_shape(x1.shape))
            )
        n = x1.shape[0]
        if target.shape != (n,):
            raise ShapeError(
                expected_got(self.name, f"target of shape ({n},)", fmt_shape(target.shape))
            )
        pos = self._check_signs(target)
        m1 = (x1 * x1).sum(axis=1) + 1e-12  # squared norms, kept off zero
        m2 = (x2 * x2).sum(axis=1) + 1e-12
        denom = np.sqrt(m1 * m2)
        cos = (x1 * x2).sum(axis=1) / denom
        dcos = np.where(pos, -1, cos > self.margin).astype(x1.dtype)  # dl/dcos
        self.save_for_backward(x1, x2, m1, m2, denom, cos, dcos)
        return np.where(pos, 1 - cos, np.maximum(cos - self.margin, 0))

    def grad(self, g):
        x1, x2, m1, m2, denom, cos, dcos = self.saved
        c = (dcos * g)[:, None]
        cos, denom = cos[:, None], denom[:, None]
        # d cos / d x1 = x2 / denom - cos x1 / |x1|^2, and symmetrically for x2
        return c * (x2 / denom - cos * x1 / m1[:, None]), c * (x1 / denom - cos * x2 / m2[:, None])


class MarginRankingLoss(_PairLoss):
    """l = max(0, -target (x1 - x2) + margin): target = 1 means x1 should rank higher.

    Call as ``loss((x1, x2), target)``; ``backward()`` returns ``(dL/dx1, dL/dx2)``.

    Shape:
        pred: a pair (x1, x2) of the same shape, (N,) or (N, *).    target: same as x1.
        output: float (x1's shape with 'none').
    """

    hyper = ("margin",)

    def __init__(
        self, margin: float = 0.0, size_average=None, reduce=None, reduction: str = "mean"
    ):
        super().__init__(_legacy(type(self).__name__, size_average, reduce, reduction))
        self.margin = float(margin)

    def elements(self, pred, target):
        x1, x2 = pred
        y = self.same_shape(x1, target, "x1")
        z = self.margin - y * (x1 - x2)
        self.save_for_backward(-y * (z > 0))  # dl/dx1 (and dl/dx2 is its negative)
        return np.maximum(z, 0)

    def grad(self, g):
        (d1,) = self.saved
        g1 = d1 * g
        return g1, -g1


# --------------------------------------------------------------------------- margins, triplets
def _legacy(who: str, size_average, reduce, reduction: str) -> str:
    from nnframe._pytorch_args import legacy_reduction

    return legacy_reduction(who, size_average, reduce, reduction)


class SoftMarginLoss(Loss):
    """Two-class logistic loss: l = log(1 + exp(-y x)) for targets y of 1 or -1.

    Computed as softplus(-y x) (log-sum-exp: stable for scores of +-1e4).

    Args:
        size_average, reduce: PyTorch's deprecated spelling of ``reduction``.
        reduction: 'mean' (over every element), 'sum' or 'none'.

    Shape:
        pred: any.    target: same as pred.    output: float (pred's shape with 'none').

    Example:
        >>> import nnframe as nf
        >>> round(nf.SoftMarginLoss()([0.0, 2.0], [1.0, -1.0]), 4)  # (log 2 + log(1 + e^2)) / 2
        1.41
    """

    def __init__(self, size_average=None, reduce=None, reduction: str = "mean"):
        super().__init__(_legacy("SoftMarginLoss", size_average, reduce, reduction))

    def elements(self, pred, target):
        yx = self.same_shape(pred, target) * pred
        self.save_for_backward(self.same_shape(pred, target), yx)
        return np.logaddexp(0, -yx)

    def grad(self, g):
        y, yx = self.saved
        return -y * special(yx).expit(-yx) * g  # d softplus(-y x) / dx = -y sigmoid(-y x)


class MultiLabelSoftMarginLoss(Loss):
    """Multi-label one-versus-all logistic loss, averaged over the C classes:
    l = -(1 / C) sum_c w_c [y_c log sigmoid(x_c) + (1 - y_c) log sigmoid(-x_c)].

    Args:
        weight: per-class weights, shape (C,).
        size_average, reduce: PyTorch's deprecated spelling of ``reduction``.
        reduction: 'mean' (over the samples), 'sum' or 'none'.

    Shape:
        pred: (N, C) or (C,) scores.    target: same as pred, in [0, 1].
        output: float, or (N,) (a 0-d array for (C,)) with 'none'.

    Example:
        >>> import numpy as np, nnframe as nf
        >>> round(nf.MultiLabelSoftMarginLoss()(np.zeros((1, 3)), np.ones((1, 3))), 4)  # log 2
        0.6931
    """

    def __init__(self, weight=None, size_average=None, reduce=None, reduction: str = "mean"):
        super().__init__(_legacy("MultiLabelSoftMarginLoss", size_average, reduce, reduction))
        self.weight = _weight_array(self.name, weight)

    def elements(self, pred, target):
        if pred.ndim < 1:
            raise ShapeError(expected_got(self.name, "pred of shape (N, C) or (C,)", "a scalar"))
        y = self.same_shape(pred, target)
        c = pred.shape[-1]
        w = self.weight
        if w is not None:
            w = self._broadcast("weight", w, pred.shape, pred.dtype, pred)
        self.save_for_backward(pred, y, w, c)
        # -[y log sigmoid(x) + (1 - y) log sigmoid(-x)] = y softplus(-x) + (1 - y) softplus(x)
        losses = y * np.logaddexp(0, -pred) + (1 - y) * np.logaddexp(0, pred)
        if w is not None:
            losses = losses * w
        return array_module(losses).asarray(
            losses.sum(axis=-1) / c
        )  # a 0-d array for an unbatched (C,)

    def grad(self, g):
        x, y, w, c = self.saved
        d = (special(x).expit(x) - y) / c  # d/dx of the bracket is sigmoid(x) - y
        if w is not None:
            d = d * w
        return d * _expand_last(g)


class MultiLabelMarginLoss(Loss):
    """Multi-label hinge: l = sum_{j, i} max(0, 1 - (x[y_j] - x[i])) / C, over the target
    classes y_j (the leading entries of the target row, up to the first -1) and the classes i
    that are not targets.

    Args:
        size_average, reduce: PyTorch's deprecated spelling of ``reduction``.
        reduction: 'mean' (over the samples), 'sum' or 'none'.

    Shape:
        pred: (N, C) or (C,) scores.    target: same shape, integer class indices padded with -1.
        output: float, or (N,) (a 0-d array for (C,)) with 'none'.

    Example:
        >>> import numpy as np, nnframe as nf
        >>> x = np.array([[0.1, 0.2, 0.4, 0.8]])
        >>> round(nf.MultiLabelMarginLoss()(x, np.array([[3, 0, -1, 1]])), 4)  # PyTorch's example
        0.85
    """

    def __init__(self, size_average=None, reduce=None, reduction: str = "mean"):
        super().__init__(_legacy("MultiLabelMarginLoss", size_average, reduce, reduction))

    def elements(self, pred, target):
        if pred.ndim not in (1, 2):
            raise ShapeError(
                expected_got(self.name, "pred of shape (N, C) or (C,)", fmt_shape(pred.shape))
            )
        if target.shape != pred.shape:
            raise ShapeError(
                expected_got(
                    self.name, f"target of shape {fmt_shape(pred.shape)}", fmt_shape(target.shape)
                )
            )
        x = pred.reshape(-1, pred.shape[-1])
        c = x.shape[1]
        t = target.reshape(x.shape)
        if t.dtype.kind not in "iu":
            if t.dtype.kind == "f" and np.all(np.mod(t, 1) == 0):
                t = t.astype(np.int64)
            else:
                got = f"dtype {t.dtype}"
                raise TypeError(expected_got(self.name, "integer class indices", got))
        # the targets of a row are its entries before the first -1
        valid = np.cumprod(t != -1, axis=1).astype(bool)
        bad = valid & ((t < 0) | (t >= c))
        if bad.any():
            raise ValueError(
                f"{self.name}: target must hold class indices in [0, {c}) or -1, "
                f"got {int(t[bad].flat[0])}"
            )
        xp = array_module(x)
        rows = xp.arange(x.shape[0])[:, None]
        ti = np.where(valid, t, 0)
        is_target = xp.zeros(x.shape, bool)
        is_target[np.broadcast_to(rows, ti.shape)[valid], ti[valid]] = True
        # hinge[n, j, i] = max(0, 1 - x[n, y_j] + x[n, i]) for target slot j, non-target class i
        xt = np.take_along_axis(x, ti, axis=1)
        h = 1 - xt[:, :, None] + x[:, None, :]
        active = (h > 0) & valid[:, :, None] & ~is_target[:, None, :]
        self.save_for_backward(active, ti, c, pred.shape)
        return xp.asarray((h * active).sum(axis=(1, 2)).reshape(pred.shape[:-1]) / c)

    def grad(self, g):
        active, ti, c, shape = self.saved
        gn = (g.reshape(-1, 1, 1) if np.ndim(g) else g) / c  # one factor per sample
        a = active * gn
        d = a.sum(axis=1)  # + for every non-target x[i] in an active hinge
        scatter_add(
            d, (array_module(d).arange(d.shape[0])[:, None], ti), -a.sum(axis=2)
        )  # - for x[y_j]
        return d.reshape(shape)


def pairwise_distance(x1, x2, p: float = 2.0, eps: float = 1e-6, keepdim: bool = False):
    """(distance, difference): ||x1 - x2 + eps||_p over the last axis, as PyTorch's
    ``pairwise_distance``, and the difference ``x1 - x2 + eps`` that :func:`pnorm_grad` needs."""
    d = x1 - x2 + eps
    return pnorm(d, p, keepdim), d


def pnorm(d, p: float, keepdim: bool = False):
    """The p-norm of d over its last axis."""
    a = np.abs(d)
    if p == 2:
        n = np.sqrt((a * a).sum(axis=-1, keepdims=True))
    elif p == 1:
        n = a.sum(axis=-1, keepdims=True)
    elif np.isinf(p):
        n = a.max(axis=-1, keepdims=True, initial=0)
    else:
        n = ((a**p).sum(axis=-1, keepdims=True)) ** (1 / p)
    return n if keepdim else n[..., 0]


def pnorm_grad(d, n, p: float):
    """d ||d||_p / d d, with n the norm keeping its last axis: sign(d) |d|^(p-1) / n^(p-1);
    0 where the norm is 0 (PyTorch's subgradient)."""
    safe = np.where(n == 0, 1, n)
    if p == 2:
        r = d / safe
    elif p == 1:
        r = np.sign(d)
    elif np.isinf(p):
        hit = np.abs(d) == n
        r = np.sign(d) * hit / np.maximum(hit.sum(axis=-1, keepdims=True), 1)
    else:
        r = np.sign(d) * (np.abs(d) / safe) ** (p - 1)
    return np.where(n == 0, 0, r)


class TripletMarginLoss(Loss):
    """Triplet loss: l = max(d(a, p) - d(a, n) + margin, 0), d(x, y) = ||x - y + eps||_p.

    With ``swap=True`` the negative distance is min(d(a, n), d(p, n)) (Balntas et al. 2016).
    Call as ``loss(anchor, positive, negative)`` (as PyTorch); ``backward()`` returns the tuple
    ``(dL/danchor, dL/dpositive, dL/dnegative)``.

    Args:
        margin: the margin, > 0.
        p: the norm degree, > 0.
        eps: added to each difference (keeps the norm differentiable).
        swap: use the distance swap.
        size_average, reduce: PyTorch's deprecated spelling of ``reduction``.
        reduction: 'mean' (over the triplets), 'sum' or 'none'.

    Shape:
        anchor, positive, negative: (N, D) or (D,).    output: float, or (N,) with 'none'.

    Example:
        >>> import numpy as np, nnframe as nf
        >>> a, p, n = np.zeros((1, 2)), np.zeros((1, 2)), np.ones((1, 2))
        >>> round(nf.TripletMarginLoss(margin=2.0)(a, p, n), 4)  # 2 - sqrt(2), eps aside
        0.5858
    """

    hyper = ("margin", "p", "eps", "swap")

    def __init__(
        self,
        margin: float = 1.0,
        p: float = 2.0,
        eps: float = 1e-6,
        swap: bool = False,
        size_average=None,
        reduce=None,
        reduction: str = "mean",
    ):
        super().__init__(_legacy("TripletMarginLoss", size_average, reduce, reduction))
        check_hyper(self.name, "margin", margin, margin > 0, "must be > 0")
        check_hyper(self.name, "p", p, p > 0, "must be > 0")
        self.margin, self.p, self.eps, self.swap = float(margin), float(p), float(eps), bool(swap)

    def __call__(self, anchor, positive, negative, sample_weight=None):
        return self.forward((anchor, positive, negative), None, sample_weight=sample_weight)

    def as_pred(self, pred):
        xs = [_float_array(self.name, x) for x in pred]
        shape = xs[0].shape
        if len(shape) not in (1, 2) or any(x.shape != shape for x in xs):
            raise ShapeError(
                expected_got(
                    self.name,
                    "anchor, positive and negative of one shape (N, D) or (D,)",
                    ", ".join(fmt_shape(x.shape) for x in xs),
                )
            )
        dtype = np.result_type(*xs)
        return tuple(x.astype(dtype, copy=False) for x in xs)

    def elements(self, pred, target):
        a, pos, neg = pred
        d_ap, v_ap = pairwise_distance(a, pos, self.p, self.eps, keepdim=True)
        d_an, v_an = pairwise_distance(a, neg, self.p, self.eps, keepdim=True)
        swapped = array_module(d_an).zeros(d_an.shape, bool)
        d_pn = v_pn = None
        if self.swap:
            d_pn, v_pn = pairwise_distance(pos, neg, self.p, self.eps, keepdim=True)
            swapped = d_pn < d_an
            d_an = np.where(swapped, d_pn, d_an)
        z = self.margin + d_ap - d_an
        active = (z > 0).astype(a.dtype)
        self.save_for_backward(d_ap, v_ap, d_an, v_an, d_pn, v_pn, swapped, active)
        return np.maximum(z, 0)[..., 0]

    def grad(self, g):
        d_ap, v_ap, d_an, v_an, d_pn, v_pn, swapped, active = self.saved
        c = active * _expand_last(g)
        g_ap = c * pnorm_grad(v_ap, d_ap, self.p)  # d d(a, p) / da; the negative for p
        ga, gp = g_ap, -g_ap
        if self.swap:
            g_an = c * pnorm_grad(v_an, np.where(swapped, 1, d_an), self.p) * ~swapped
            g_pn = c * pnorm_grad(v_pn, np.where(swapped, d_pn, 1), self.p) * swapped
            return ga - g_an, gp - g_pn, g_an + g_pn
        g_an = c * pnorm_grad(v_an, d_an, self.p)
        return ga - g_an, gp, g_an


class GaussianNLLLoss(Loss):
    """Gaussian negative log-likelihood of ``target`` under N(input, var):
    l = (log max(var, eps) + (input - target)^2 / max(var, eps)) / 2 (+ log(2 pi) / 2 if full).

    Call as ``loss(input, target, var)`` (as PyTorch); ``backward()`` returns the tuple
    ``(dL/dinput, dL/dvar)``. The clamp at eps passes the gradient on, as PyTorch's does.

    Args:
        full: add the constant log(2 pi) / 2.
        eps: the clamp of var, for stability.
        reduction: 'mean' (over every element), 'sum' or 'none'.

    Shape:
        input: (N, *) or (*).    target: input's shape, or broadcastable to it.
        var: input's shape, input's shape without the last axis, or with one axis of size 1.
        output: float (input's shape with 'none').

    Example:
        >>> import numpy as np, nnframe as nf
        >>> nf.GaussianNLLLoss()(np.zeros(2), np.array([1.0, -1.0]), np.ones(2))
        0.5
    """

    hyper = ("full", "eps")

    def __init__(self, *, full: bool = False, eps: float = 1e-6, reduction: str = "mean"):
        super().__init__(reduction)
        check_hyper(self.name, "eps", eps, eps >= 0, "must be >= 0")
        self.full, self.eps = bool(full), float(eps)

    def __call__(self, input, target, var, sample_weight=None):  # noqa: A002 (PyTorch's name)
        return self.forward((input, var), target, sample_weight=sample_weight)

    def as_pred(self, pred):
        x, var = (_float_array(self.name, a) for a in pred)
        dtype = np.result_type(x, var)
        return x.astype(dtype, copy=False), var.astype(dtype, copy=False)

    def elements(self, pred, target):
        x, var = pred
        v = var
        if var.shape != x.shape:
            if var.shape == x.shape[:-1]:
                v = var[..., None]
            elif not (
                var.ndim == x.ndim and sum(b for a, b in zip(x.shape, var.shape) if a != b) == 1
            ):
                raise ShapeError(
                    expected_got(
                        self.name,
                        f"var of shape {fmt_shape(x.shape)}, {fmt_shape(x.shape[:-1])} or with "
                        "one axis of size 1",
                        fmt_shape(var.shape),
                    )
                )
        if (var < 0).any():
            raise ValueError(expected_got(self.name, "var >= 0", f"{var[var < 0].flat[0]:g}"))
        y = as_float_input(self.name, target, x.dtype)
        try:
            shape = np.broadcast_shapes(x.shape, y.shape, v.shape)
        except ValueError:
            shape = None
        if shape != x.shape:
            raise ShapeError(
                expected_got(
                    self.name, f"target broadcastable to {fmt_shape(x.shape)}", fmt_shape(y.shape)
                )
            )
        v = np.maximum(v, self.eps)
        d = x - y
        self.save_for_backward(d, v, var.shape)
        losses = 0.5 * (np.log(v) + d * d / v)
        return losses + 0.5 * np.log(2 * np.pi) if self.full else losses

    def grad(self, g):
        d, v, var_shape = self.saved
        gx = d / v * g
        gv = 0.5 * (1 / v - d * d / (v * v)) * g
        # sum the var gradient over the axes var was broadcast along (var (*) of input (*, D))
        vshape = var_shape if len(var_shape) == gv.ndim else (*var_shape, 1)
        axes = tuple(i for i, (a, b) in enumerate(zip(gv.shape, vshape)) if a != b)
        gv = gv.sum(axis=axes, keepdims=True).reshape(var_shape)
        return gx, gv
