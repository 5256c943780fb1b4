"""Metrics: plain functions for standalone use, and stateful classes that ``Trainer`` accumulates
over batches (so precision or R2 of an epoch are exact, not averages of per-batch values).

Classification metrics take ``pred`` as scores (N, C) (logits or probabilities: the arg-max is the
predicted class), or as class indices (N,); ``target`` as class indices (N,) or one-hot rows (N, C).
Floating binary scores of shape (N,) or (N, 1) are thresholded at ``threshold`` (0.5 for
probabilities; pass 0.0 for logits); integer arrays of shape (N,) are class labels.

Example:
    >>> import numpy as np
    >>> from nnframe import metrics
    >>> metrics.accuracy(np.array([[2.0, 1.0], [0.0, 3.0]]), np.array([0, 0]))
    0.5
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from nnframe.errors import ShapeError, check_hyper, fmt_shape

__all__ = [
    "accuracy",
    "top_k_accuracy",
    "confusion_matrix",
    "precision",
    "recall",
    "f1_score",
    "mse",
    "mae",
    "r2_score",
    "Metric",
    "Accuracy",
    "TopKAccuracy",
    "Precision",
    "Recall",
    "F1Score",
    "MeanSquaredError",
    "MeanAbsoluteError",
    "R2Score",
    "FunctionMetric",
    "get",
]


# ---------------------------------------------------------------------- label helpers
def _one_per_sample(who: str, a, expected: str) -> np.ndarray:
    """``a`` as (N,): the arg-max of each row of (N, C > 1) (integers), the column of (N, 1), or
    a 1-D array as it is; a ShapeError naming ``expected`` for any other shape."""
    a = np.asarray(a)
    if a.ndim == 2 and a.shape[1] > 1:
        return a.argmax(axis=1)
    if a.ndim == 2 and a.shape[1] == 1:
        a = a[:, 0]
    if a.ndim != 1:
        raise ShapeError(f"{who}: expected {expected}, got {fmt_shape(a.shape)}")
    return a


def _target_labels(who: str, target) -> np.ndarray:
    t = _one_per_sample(who, target, "target of shape (N,) or one-hot (N, C)")
    if t.dtype.kind == "f":
        t = np.rint(t).astype(np.int64)
    return t


def _pred_labels(who: str, pred, threshold: float = 0.5) -> np.ndarray:
    p = _one_per_sample(who, pred, "pred of shape (N, C) scores or (N,) labels")
    if p.dtype.kind == "f":
        return (p > threshold).astype(np.int64)  # binary scores (floats); labels are integers
    return p.astype(np.int64)


def _pair(who: str, pred, target, threshold: float = 0.5) -> tuple[np.ndarray, np.ndarray]:
    p = _pred_labels(who, pred, threshold)
    t = _target_labels(who, target)
    if p.shape != t.shape:
        raise ShapeError(
            f"{who}: expected pred and target with the same number of samples, got "
            f"{len(p)} and {len(t)}"
        )
    return p, t


# ---------------------------------------------------------------------- functions
def accuracy(pred, target, threshold: float = 0.5) -> float:
    """Fraction of samples whose predicted class equals the target.

    Example:
        >>> accuracy(np.array([1, 2, 3, 3]), np.array([1, 2, 0, 3]))
        0.75
    """
    p, t = _pair("accuracy", pred, target, threshold)
    return float((p == t).mean()) if len(t) else 0.0


def top_k_accuracy(pred, target, k: int = 5) -> float:
    """Fraction of samples whose target is among the ``k`` highest scores of ``pred`` (N, C).

    Example:
        >>> top_k_accuracy(np.array([[0.1, 0.5, 0.4], [0.6, 0.3, 0.1]]), np.array([2, 2]), k=2)
        0.5
    """
    correct, n = _top_k_counts(pred, target, k)
    return correct / n if n else 0.0


def _top_k_counts(pred, target, k: int) -> tuple[int, int]:
    check_hyper("top_k_accuracy", "k", k, int(k) >= 1, "must be >= 1")
    p = np.asarray(pred)
    if p.ndim != 2:
        raise ShapeError(
            f"top_k_accuracy: expected pred of shape (N, C) scores, got {fmt_shape(p.shape)}"
        )
    t = _target_labels("top_k_accuracy", target)
    k = min(int(k), p.shape[1])
    top = np.argpartition(-p, k - 1, axis=1)[:, :k]
    return int((top == t[:, None]).any(axis=1).sum()), len(t)


def confusion_matrix(pred, target, num_classes: int | None = None) -> np.ndarray:
    """Counts ``C[i, j]``: samples of true class i predicted as class j (scikit-learn's layout).

    Example:
        >>> confusion_matrix(np.array([0, 1, 1]), np.array([0, 0, 1])).tolist()
        [[1, 1], [0, 1]]
    """
    p, t = _pair("confusion_matrix", pred, target)
    if num_classes is None:
        scores = np.asarray(pred)
        from_scores = scores.shape[1] if scores.ndim == 2 and scores.shape[1] > 1 else 0
        num_classes = max(from_scores, int(max(p.max(initial=-1), t.max(initial=-1))) + 1)
    k = int(num_classes)
    if len(t) and (min(p.min(), t.min()) < 0 or max(p.max(), t.max()) >= k):
        raise ValueError(f"confusion_matrix: expected class indices in [0, {k}), got others")
    return np.bincount(t * k + p, minlength=k * k).reshape(k, k).astype(np.int64)


def _from_confusion(cm: np.ndarray, kind: str, average: str | None):
    """precision / recall / F1 per class from a confusion matrix, then averaged.

    A class with no predicted (precision) or true (recall) samples scores 0, as scikit-learn's
    ``zero_division=0``; 'macro' averages over every class of the matrix.
    """
    tp = np.diag(cm).astype(np.float64)
    predicted = cm.sum(axis=0).astype(np.float64)
    actual = cm.sum(axis=1).astype(np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        prec = np.where(predicted > 0, tp / predicted, 0.0)
        rec = np.where(actual > 0, tp / actual, 0.0)
        f1 = np.where(prec + rec > 0, 2 * prec * rec / (prec + rec), 0.0)
    per_class = {"precision": prec, "recall": rec, "f1_score": f1}[kind]
    if average is None:
        return per_class
    if average == "macro":
        return float(per_class.mean()) if len(per_class) else 0.0
    if average == "micro":  # every sample counts once: equals accuracy for single-label data
        total = cm.sum()
        return float(tp.sum() / total) if total else 0.0
    raise ValueError(f"{kind}: invalid average={average!r} (must be 'macro', 'micro' or None)")


def precision(pred, target, average: str | None = "macro", num_classes: int | None = None):
    """tp / (tp + fp) per class; ``average='macro'`` (mean over classes), 'micro', or None
    (the per-class array)."""
    return _from_confusion(confusion_matrix(pred, target, num_classes), "precision", average)


def recall(pred, target, average: str | None = "macro", num_classes: int | None = None):
    """tp / (tp + fn) per class; ``average`` as in :func:`precision`."""
    return _from_confusion(confusion_matrix(pred, target, num_classes), "recall", average)


def f1_score(pred, target, average: str | None = "macro", num_classes: int | None = None):
    """Harmonic mean of precision and recall per class; ``average`` as in :func:`precision`.

    Example:
        >>> round(f1_score(np.array([0, 1, 1, 1]), np.array([0, 0, 1, 1])), 4)
        0.7333
    """
    return _from_confusion(confusion_matrix(pred, target, num_classes), "f1_score", average)


def _regression_pair(who: str, pred, target) -> tuple[np.ndarray, np.ndarray]:
    p = np.asarray(pred, dtype=np.float64)
    t = np.asarray(target, dtype=np.float64)
    if p.shape != t.shape:
        raise ShapeError(
            f"{who}: pred and target must have the same shape, got {fmt_shape(p.shape)} and "
            f"{fmt_shape(t.shape)}"
        )
    return p, t


def mse(pred, target) -> float:
    """Mean squared error over all elements."""
    p, t = _regression_pair("mse", pred, target)
    return float(np.mean((p - t) ** 2)) if p.size else 0.0


def mae(pred, target) -> float:
    """Mean absolute error over all elements."""
    p, t = _regression_pair("mae", pred, target)
    return float(np.mean(np.abs(p - t))) if p.size else 0.0


def r2_score(pred, target) -> float:
    """Coefficient of determination 1 - SS_res / SS_tot, averaged uniformly over output columns
    (scikit-learn's default). A constant target column scores 1 if predicted exactly, else 0.

    Example:
        >>> r2_score(np.array([1.0, 2.0, 3.0]), np.array([1.0, 2.0, 4.0]))
        0.7857142857142857
    """
    p, t = _regression_pair("r2_score", pred, target)
    t2, p2 = t.reshape(len(t), -1), p.reshape(len(p), -1)  # one column per output
    ss_res = ((t2 - p2) ** 2).sum(axis=0)
    ss_tot = ((t2 - t2.mean(axis=0)) ** 2).sum(axis=0) if len(t) else ss_res
    return _r2(ss_res, ss_tot)


def _r2_from_sums(ss_res, sum_t, sum_t2, n) -> float:
    """R2 from running sums (what R2Score accumulates): SS_tot = sum t^2 - (sum t)^2 / n."""
    ss_tot = sum_t2 - sum_t * sum_t / n
    # the subtraction cancels for (near) constant targets: treat round-off as exactly constant
    ss_tot = np.where(ss_tot > 1e-12 * np.maximum(sum_t2, 1e-300), ss_tot, 0.0)
    return _r2(ss_res, ss_tot)


def _r2(ss_res, ss_tot) -> float:
    with np.errstate(divide="ignore", invalid="ignore"):
        score = np.where(ss_tot > 0, 1.0 - ss_res / ss_tot, np.where(ss_res == 0, 1.0, 0.0))
    return float(np.mean(score))


# ---------------------------------------------------------------------- stateful metrics
class Metric:
    """A metric accumulated over batches: ``reset()``, ``update(pred, target)`` per batch,
    ``result()`` for the value over everything seen since the reset. ``name`` keys the logs."""

    name = "metric"

    def reset(self) -> None:
        raise NotImplementedError

    def update(self, pred, target) -> None:
        raise NotImplementedError

    def result(self) -> float:
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class Accuracy(Metric):
    """Running :func:`accuracy`."""

    name = "accuracy"

    def __init__(self, threshold: float = 0.5):
        self.threshold = threshold
        self.reset()

    def reset(self) -> None:
        self.correct = 0
        self.total = 0

    def update(self, pred, target) -> None:
        p, t = _pair("accuracy", pred, target, self.threshold)
        self.correct += int((p == t).sum())
        self.total += len(t)

    def result(self) -> float:
        return self.correct / self.total if self.total else 0.0


class TopKAccuracy(Metric):
    """Running :func:`top_k_accuracy`; named ``top_k_accuracy``."""

    name = "top_k_accuracy"

    def __init__(self, k: int = 5):
        check_hyper("TopKAccuracy", "k", k, int(k) >= 1, "must be >= 1")
        self.k = int(k)
        self.reset()

    def reset(self) -> None:
        self.correct = 0
        self.total = 0

    def update(self, pred, target) -> None:
        c, n = _top_k_counts(pred, target, self.k)
        self.correct += c
        self.total += n

    def result(self) -> float:
        return self.correct / self.total if self.total else 0.0


class _ConfusionMetric(Metric):
    kind = ""

    def __init__(self, num_classes: int | None = None, average: str = "macro"):
        if average not in ("macro", "micro"):
            raise ValueError(
                f"{type(self).__name__}: invalid average={average!r} (must be 'macro' or 'micro')"
            )
        self.num_classes = num_classes
        self.average = average
        self.name = self.kind
        self.reset()

    def reset(self) -> None:
        self.cm = np.zeros((0, 0), dtype=np.int64)

    def update(self, pred, target) -> None:
        k = self.num_classes
        if k is None:
            scores = np.asarray(pred)
            k = scores.shape[1] if scores.ndim == 2 and scores.shape[1] > 1 else None
        cm = confusion_matrix(pred, target, k)
        size = max(cm.shape[0], self.cm.shape[0])
        grown = np.zeros((size, size), dtype=np.int64)
        grown[: self.cm.shape[0], : self.cm.shape[0]] += self.cm
        grown[: cm.shape[0], : cm.shape[0]] += cm
        self.cm = grown

    def result(self) -> float:
        return _from_confusion(self.cm, self.kind, self.average)


class Precision(_ConfusionMetric):
    """Running :func:`precision` (macro by default), from an accumulated confusion matrix."""

    kind = "precision"


class Recall(_ConfusionMetric):
    """Running :func:`recall` (macro by default)."""

    kind = "recall"


class F1Score(_ConfusionMetric):
    """Running :func:`f1_score` (macro by default)."""

    kind = "f1_score"


class MeanSquaredError(Metric):
    """Running :func:`mse`; named ``mse``."""

    name = "mse"

    def __init__(self):
        self.reset()

    def reset(self) -> None:
        self.total = 0.0
        self.count = 0

    def _term(self, d):
        return d * d

    def update(self, pred, target) -> None:
        p, t = _regression_pair(self.name, pred, target)
        self.total += float(self._term(p - t).sum())
        self.count += p.size

    def result(self) -> float:
        return self.total / self.count if self.count else 0.0


class MeanAbsoluteError(MeanSquaredError):
    """Running :func:`mae`; named ``mae``."""

    name = "mae"

    def _term(self, d):
        return np.abs(d)


class R2Score(Metric):
    """Running :func:`r2_score` from sums (exact over the epoch, not a mean of batch scores)."""

    name = "r2_score"

    def __init__(self):
        self.reset()

    def reset(self) -> None:
        self.ss_res = self.sum_t = self.sum_t2 = 0.0
        self.n = 0

    def update(self, pred, target) -> None:
        p, t = _regression_pair("r2_score", pred, target)
        cols = int(np.prod(t.shape[1:]))  # not -1: an empty batch must reshape too
        t2, p2 = t.reshape(len(t), cols), p.reshape(len(p), cols)
        self.ss_res = self.ss_res + ((t2 - p2) ** 2).sum(axis=0)
        self.sum_t = self.sum_t + t2.sum(axis=0)
        self.sum_t2 = self.sum_t2 + (t2 * t2).sum(axis=0)
        self.n += len(t)

    def result(self) -> float:
        if not self.n:
            return 0.0
        return _r2_from_sums(
            np.asarray(self.ss_res), np.asarray(self.sum_t), np.asarray(self.sum_t2), self.n
        )


class FunctionMetric(Metric):
    """Any ``fn(pred, target) -> float``, averaged over batches weighted by their size."""

    def __init__(self, fn: Callable, name: str | None = None):
        self.fn = fn
        self.name = name or getattr(fn, "__name__", type(fn).__name__)
        self.reset()

    def reset(self) -> None:
        self.total = 0.0
        self.count = 0

    def update(self, pred, target) -> None:
        n = len(pred) if hasattr(pred, "__len__") else 1
        self.total += float(self.fn(pred, target)) * n
        self.count += n

    def result(self) -> float:
        return self.total / self.count if self.count else 0.0

    def __repr__(self) -> str:
        return f"FunctionMetric({self.name})"


_BY_NAME: dict[str, Callable[[], Metric]] = {
    "accuracy": Accuracy,
    "top_k_accuracy": TopKAccuracy,
    "precision": Precision,
    "recall": Recall,
    "f1_score": F1Score,
    "mse": MeanSquaredError,
    "mae": MeanAbsoluteError,
    "r2_score": R2Score,
}


def get(metric) -> Metric:
    """A fresh :class:`Metric` from a name (``'accuracy'``, ``'top_k_accuracy'``,
    ``'precision'``, ``'recall'``, ``'f1_score'``, ``'mse'``, ``'mae'``, ``'r2_score'``), a Metric
    instance (used as is) or a callable ``fn(pred, target) -> float``."""
    if isinstance(metric, Metric):
        return metric
    if isinstance(metric, str):
        if metric not in _BY_NAME:
            raise ValueError(
                f"metrics.get: expected one of {sorted(_BY_NAME)} or a callable, got {metric!r}"
            )
        return _BY_NAME[metric]()
    if callable(metric):
        return FunctionMetric(metric)
    raise TypeError(
        f"metrics.get: expected a metric name, a Metric or a callable, got {type(metric).__name__}"
    )
