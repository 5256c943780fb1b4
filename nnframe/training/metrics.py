"""Metrics: plain functions for standalone use, and stateful classes that ``Trainer`` accumulates
over batches (so precision, ROC AUC or R2 of an epoch are exact, not averages of per-batch values).

Every function and every ``Metric.update`` takes scikit-learn's order: ``(y_true, y_pred)``
(``y_score`` for ROC AUC and top-k), and where scikit-learn has ``sample_weight`` so does nnframe.

Classification: ``y_true`` holds class indices (N,) (or (N, 1)), or one-hot / probability rows
(N, C) whose arg-max is the class. ``y_pred`` holds scores (N, C) (logits or probabilities: the
arg-max is the predicted class) or class indices (N,); floating binary scores of shape (N,) or
(N, 1) are thresholded at ``threshold`` (0.5 for probabilities; pass 0.0 for logits). Classes are
``0 .. num_classes - 1``: ``num_classes`` defaults to the number of score columns or the largest
label + 1, and 'macro' averages over all of them (scikit-learn's ``labels=range(num_classes)``).

Example:
    >>> import numpy as np
    >>> from nnframe.training import metrics
    >>> metrics.accuracy(np.array([0, 0]), np.array([[2.0, 1.0], [0.0, 3.0]]))
    0.5
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from nnframe.core.errors import ShapeError, check_hyper, fmt_shape

__all__ = [
    "accuracy",
    "balanced_accuracy",
    "top_k_accuracy",
    "confusion_matrix",
    "precision",
    "recall",
    "f1_score",
    "roc_auc_score",
    "log_loss",
    "mse",
    "rmse",
    "mae",
    "r2_score",
    "Metric",
    "Accuracy",
    "BalancedAccuracy",
    "TopKAccuracy",
    "Precision",
    "Recall",
    "F1Score",
    "ROCAUC",
    "LogLoss",
    "MeanSquaredError",
    "RootMeanSquaredError",
    "MeanAbsoluteError",
    "R2Score",
    "FunctionMetric",
    "get",
]

_ORDER_HINT = "Metrics take (y_true, y_pred), scikit-learn's order"


# ---------------------------------------------------------------------- input helpers
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


def _true_labels(who: str, y_true) -> np.ndarray:
    """Class indices (N,) from labels or one-hot rows. Logits or probabilities passed as
    ``y_true`` (the old ``(pred, target)`` order) are refused: they are not labels."""
    a = np.asarray(y_true)
    if a.ndim == 2 and a.shape[1] > 1 and a.dtype.kind == "f" and (a < 0).any():
        raise ValueError(
            f"{who}: expected y_true as class indices (N,) or one-hot rows (N, C), got rows with "
            f"negative values (scores?). {_ORDER_HINT}"
        )
    t = _one_per_sample(who, a, "y_true of shape (N,) or one-hot (N, C)")
    if t.dtype.kind == "f":
        whole = np.rint(t)
        if not np.array_equal(whole, t):
            bad = t[whole != t][0]
            raise ValueError(
                f"{who}: expected y_true to hold class indices, got the non-integer value "
                f"{bad:g} (scores? round soft labels first). {_ORDER_HINT}"
            )
        t = whole
    return t.astype(np.int64)


def _pred_labels(who: str, y_pred, threshold: float = 0.5) -> np.ndarray:
    p = _one_per_sample(who, y_pred, "y_pred of shape (N, C) scores or (N,) labels")
    if p.dtype.kind == "f":
        return (p > threshold).astype(np.int64)  # binary scores (floats); labels are integers
    return p.astype(np.int64)


def _same_length(who: str, t, p) -> None:
    if len(p) != len(t):
        raise ShapeError(
            f"{who}: expected y_true and y_pred with the same number of samples, got "
            f"{len(t)} and {len(p)}"
        )


def _pair(who: str, y_true, y_pred, threshold: float = 0.5) -> tuple[np.ndarray, np.ndarray]:
    t = _true_labels(who, y_true)
    p = _pred_labels(who, y_pred, threshold)
    _same_length(who, t, p)
    return t, p


def _weights(who: str, sample_weight, n: int) -> np.ndarray | None:
    """``sample_weight`` as float64 (n,), checked; None stays None (every sample weighs 1)."""
    if sample_weight is None:
        return None
    w = np.asarray(sample_weight, dtype=np.float64)
    if w.ndim == 2 and w.shape[1] == 1:
        w = w[:, 0]
    if w.shape != (n,):
        raise ShapeError(f"{who}: expected sample_weight of shape ({n},), got {fmt_shape(w.shape)}")
    if not np.all(np.isfinite(w)) or (w < 0).any():
        raise ValueError(f"{who}: expected finite sample_weight >= 0, got {w.min():g}")
    return w


def _weighted_mean(values: np.ndarray, w: np.ndarray | None) -> float:
    """Mean of ``values`` (N,) weighted by ``w``; 0.0 when nothing (or no weight) was seen."""
    total = len(values) if w is None else w.sum()
    if not total:
        return 0.0
    return float((values.sum() if w is None else (values * w).sum()) / total)


def _num_classes(y_pred, t: np.ndarray, p: np.ndarray, num_classes: int | None) -> int:
    if num_classes is not None:
        return int(num_classes)
    scores = np.asarray(y_pred)
    from_scores = scores.shape[1] if scores.ndim == 2 and scores.shape[1] > 1 else 0
    return max(from_scores, int(max(p.max(initial=-1), t.max(initial=-1))) + 1)


def _check_classes(who: str, t: np.ndarray, k: int) -> None:
    if len(t) and (t.min() < 0 or t.max() >= k):
        bad = t[(t < 0) | (t >= k)][0]
        raise ValueError(f"{who}: expected y_true class indices in [0, {k}), got {bad}")


# ---------------------------------------------------------------------- classification
def accuracy(y_true, y_pred, *, threshold: float = 0.5, sample_weight=None) -> float:
    """Fraction of samples (or of the sample weight) whose predicted class equals the true one.

    Example:
        >>> accuracy(np.array([1, 2, 0, 3]), np.array([1, 2, 3, 3]))
        0.75
    """
    t, p = _pair("accuracy", y_true, y_pred, threshold)
    return _weighted_mean(t == p, _weights("accuracy", sample_weight, len(t)))


def _top_k_hits(who: str, y_true, y_score, k: int) -> np.ndarray:
    """Whether each sample's true class is among its ``k`` highest scores. Ties are broken as
    scikit-learn does: among equal scores the higher class index ranks first."""
    check_hyper(who, "k", k, int(k) >= 1, "must be >= 1")
    s = np.asarray(y_score)
    if s.ndim != 2:
        raise ShapeError(
            f"{who}: expected y_score of shape (N, C) scores, got {fmt_shape(s.shape)}"
        )
    t = _true_labels(who, y_true)
    _same_length(who, t, s)
    _check_classes(who, t, s.shape[1])
    own = s[np.arange(len(t)), t][:, None]
    classes = np.arange(s.shape[1])
    # the true class's rank: classes scoring higher, plus tied classes with a higher index
    rank = (s > own).sum(axis=1) + ((s == own) & (classes > t[:, None])).sum(axis=1)
    return rank < int(k)


def top_k_accuracy(y_true, y_score, *, k: int = 5, sample_weight=None) -> float:
    """Fraction of samples whose true class is among the ``k`` highest scores of ``y_score``
    (N, C); ties as scikit-learn's ``top_k_accuracy_score``.

    Example:
        >>> top_k_accuracy(np.array([2, 2]), np.array([[0.1, 0.5, 0.4], [0.6, 0.3, 0.1]]), k=2)
        0.5
    """
    hits = _top_k_hits("top_k_accuracy", y_true, y_score, k)
    return _weighted_mean(hits, _weights("top_k_accuracy", sample_weight, len(hits)))


def confusion_matrix(
    y_true,
    y_pred,
    *,
    num_classes: int | None = None,
    sample_weight=None,
    normalize: str | None = None,
) -> np.ndarray:
    """Counts ``C[i, j]``: samples of true class i predicted as class j (scikit-learn's layout);
    integers, or sums of ``sample_weight``. ``normalize='true'`` divides each row by its sum,
    ``'pred'`` each column, ``'all'`` the whole matrix (empty rows or columns stay 0).

    Example:
        >>> confusion_matrix(np.array([0, 0, 1]), np.array([0, 1, 1])).tolist()
        [[1, 1], [0, 1]]
    """
    who = "confusion_matrix"
    t, p = _pair(who, y_true, y_pred)
    w = _weights(who, sample_weight, len(t))
    k = _num_classes(y_pred, t, p, num_classes)
    if len(t) and (min(p.min(), t.min()) < 0 or max(p.max(), t.max()) >= k):
        raise ValueError(f"{who}: expected class indices in [0, {k}), got others")
    cm = np.bincount(t * k + p, weights=w, minlength=k * k).reshape(k, k)
    cm = cm.astype(np.int64) if w is None else cm
    if normalize is None:
        return cm
    axis = {"true": 1, "pred": 0, "all": None}.get(normalize, -1)
    if axis == -1:
        raise ValueError(f"{who}: invalid normalize={normalize!r} (must be 'true', 'pred', 'all')")
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.nan_to_num(cm / cm.sum(axis=axis, keepdims=axis is not None))


_AVERAGES = ("macro", "micro", "weighted")


def _from_confusion(cm: np.ndarray, kind: str, average: str | None):
    """precision / recall / F1 per class from a confusion matrix, then averaged.

    A class with no predicted (precision) or true (recall) samples scores 0, as scikit-learn's
    ``zero_division=0``; 'macro' averages over every class of the matrix, 'weighted' weighs each
    class by its true support, 'micro' counts every sample once (for single-label data all three
    kinds then equal accuracy).
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
    if average == "weighted":
        total = actual.sum()
        return float((per_class * actual).sum() / total) if total else 0.0
    if average == "micro":
        total = cm.sum()
        return float(tp.sum() / total) if total else 0.0
    raise ValueError(
        f"{kind}: invalid average={average!r} (must be 'macro', 'micro', 'weighted' or None)"
    )


def precision(
    y_true, y_pred, *, average: str | None = "macro", num_classes=None, sample_weight=None
):
    """tp / (tp + fp) per class; ``average='macro'`` (mean over classes), 'micro', 'weighted'
    (by true support), or None (the per-class array).

    Example:
        >>> precision(np.array([0, 1, 1]), np.array([0, 0, 1]), average=None).tolist()
        [0.5, 1.0]
    """
    cm = confusion_matrix(y_true, y_pred, num_classes=num_classes, sample_weight=sample_weight)
    return _from_confusion(cm, "precision", average)


def recall(y_true, y_pred, *, average: str | None = "macro", num_classes=None, sample_weight=None):
    """tp / (tp + fn) per class; ``average`` as in :func:`precision`."""
    cm = confusion_matrix(y_true, y_pred, num_classes=num_classes, sample_weight=sample_weight)
    return _from_confusion(cm, "recall", average)


def f1_score(
    y_true, y_pred, *, average: str | None = "macro", num_classes=None, sample_weight=None
):
    """Harmonic mean of precision and recall per class; ``average`` as in :func:`precision`.

    Example:
        >>> round(f1_score(np.array([0, 0, 1, 1]), np.array([0, 1, 1, 1])), 4)
        0.7333
    """
    cm = confusion_matrix(y_true, y_pred, num_classes=num_classes, sample_weight=sample_weight)
    return _from_confusion(cm, "f1_score", average)


def _balanced(cm: np.ndarray, adjusted: bool) -> float:
    """Mean recall over the classes present in y_true (scikit-learn skips the others)."""
    actual = cm.sum(axis=1).astype(np.float64)
    present = actual > 0
    if not present.any():
        return 0.0
    score = float(np.mean(np.diag(cm)[present] / actual[present]))
    if adjusted:  # rescaled so that chance scores 0 and perfect 1
        chance = 1.0 / present.sum()
        with np.errstate(divide="ignore", invalid="ignore"):
            score = float((np.float64(score) - chance) / (1.0 - chance))
    return score


def balanced_accuracy(
    y_true, y_pred, *, sample_weight=None, adjusted: bool = False, threshold: float = 0.5
) -> float:
    """Mean per-class recall over the classes that occur in ``y_true``; ``adjusted=True``
    rescales it so that random guessing scores 0.

    Example:
        >>> balanced_accuracy(np.array([0, 0, 0, 1]), np.array([0, 0, 0, 0]))
        0.5
    """
    t, p = _pair("balanced_accuracy", y_true, y_pred, threshold)
    cm = confusion_matrix(t, p, sample_weight=sample_weight)
    return _balanced(cm, adjusted)


def _binary_auc(positive: np.ndarray, score: np.ndarray, w: np.ndarray | None) -> float:
    """Area under the ROC curve: the (weighted) probability that a positive outscores a
    negative, ties counting one half (the trapezoids of scikit-learn's curve); nan when there
    is no positive or no negative weight."""
    w = np.ones(len(score)) if w is None else w
    w_pos, w_neg = w * positive, w * ~positive
    total_pos, total_neg = w_pos.sum(), w_neg.sum()
    if total_pos <= 0 or total_neg <= 0:
        return float("nan")
    distinct, group = np.unique(score, return_inverse=True)  # ascending; ties share a group
    pos = np.bincount(group, weights=w_pos, minlength=len(distinct))
    neg = np.bincount(group, weights=w_neg, minlength=len(distinct))
    neg_below = np.cumsum(neg) - neg
    return float((pos * (neg_below + 0.5 * neg)).sum() / (total_pos * total_neg))


def roc_auc_score(y_true, y_score, *, average: str | None = "macro", sample_weight=None):
    """Area under the ROC curve, binary or one-vs-rest multi-class.

    Binary: ``y_true`` in {0, 1}, ``y_score`` the positive class's scores (N,) or (N, 1), or
    two-column scores (N, 2): probabilities (rows in [0, 1] summing to 1) are ranked by column 1,
    as scikit-learn does (so rounding ties stay ties), logits by column 1 minus column 0 (which
    ranks as the positive probability does). Multi-class: ``y_score`` (N, C); each class against the rest,
    then ``average``: 'macro', 'weighted' (by true support), 'micro' (all classes' decisions
    pooled) or None (the per-class array). scikit-learn asks for probabilities here (rows summing
    to 1); nnframe ranks whatever scores it is given, so pass softmax probabilities to get
    scikit-learn's number. A class with no positive or no negative sample scores nan.

    Example:
        >>> roc_auc_score(np.array([0, 0, 1, 1]), np.array([0.1, 0.4, 0.35, 0.8]))
        0.75
    """
    who = "roc_auc_score"
    s = np.asarray(y_score, dtype=np.float64)
    if np.isnan(s).any():
        raise ValueError(f"{who}: expected scores without nan, got nan")
    if s.ndim == 2 and s.shape[1] == 1:
        s = s[:, 0]
    elif s.ndim == 2 and s.shape[1] == 2:
        probabilities = s.min() >= 0 and s.max() <= 1 and np.allclose(s.sum(axis=1), 1)
        s = s[:, 1] if probabilities else s[:, 1] - s[:, 0]  # logits: monotone in p1
    if s.ndim not in (1, 2):
        raise ShapeError(
            f"{who}: expected y_score of shape (N,) or (N, C), got {fmt_shape(s.shape)}"
        )
    t = _true_labels(who, y_true)
    _same_length(who, t, s)
    w = _weights(who, sample_weight, len(t))
    classes = 2 if s.ndim == 1 else s.shape[1]
    _check_classes(who, t, classes)
    if s.ndim == 1:
        return _binary_auc(t == 1, s, w)
    onehot = t[:, None] == np.arange(classes)
    if average == "micro":
        return _binary_auc(onehot.ravel(), s.ravel(), None if w is None else np.repeat(w, classes))
    if average not in ("macro", "weighted", None):
        raise ValueError(
            f"{who}: invalid average={average!r} (must be 'macro', 'micro', 'weighted' or None)"
        )
    per_class = np.array([_binary_auc(onehot[:, c], s[:, c], w) for c in range(classes)])
    if average is None:
        return per_class
    if average == "macro":
        return float(per_class.mean())
    support = (onehot * (1.0 if w is None else w[:, None])).sum(axis=0)
    if not support.sum():
        return 0.0
    # a class without weight adds nothing (not its nan), as scikit-learn
    return float(np.where(support > 0, per_class, 0.0) @ support / support.sum())


def _log_loss_terms(y_true, y_pred) -> np.ndarray:
    """-log of the probability each sample's true class got, clipped to [eps, 1 - eps] with
    eps the machine precision of ``y_pred``'s float type (scikit-learn's rule)."""
    who = "log_loss"
    p = np.asarray(y_pred)
    eps = np.finfo(p.dtype if p.dtype.kind == "f" else np.float64).eps
    p = p.astype(np.float64)
    if p.ndim == 2 and p.shape[1] == 1:
        p = p[:, 0]
    if p.ndim not in (1, 2):
        raise ShapeError(
            f"{who}: expected y_pred of shape (N,) or (N, C), got {fmt_shape(p.shape)}"
        )
    if p.size and (np.isnan(p).any() or p.min() < 0 or p.max() > 1):
        raise ValueError(
            f"{who}: expected probabilities in [0, 1], got values in [{p.min():g}, {p.max():g}]. "
            "Apply a sigmoid or softmax to logits first"
        )
    t = _true_labels(who, y_true)
    _same_length(who, t, p)
    if p.ndim == 1:  # the positive class's probability
        _check_classes(who, t, 2)
        chosen = np.where(t == 1, p, 1.0 - p)
    else:
        _check_classes(who, t, p.shape[1])
        chosen = p[np.arange(len(t)), t]
    return -np.log(np.clip(chosen, eps, 1.0 - eps))


def log_loss(y_true, y_pred, *, sample_weight=None) -> float:
    """Mean negative log-likelihood of the true classes (cross-entropy) under predicted
    probabilities: (N, C) rows, or the positive class's probability (N,) for binary labels.
    Rows are not renormalized.

    Example:
        >>> round(log_loss(np.array([1, 0]), np.array([0.8, 0.4])), 4)
        0.367
    """
    terms = _log_loss_terms(y_true, y_pred)
    return _weighted_mean(terms, _weights("log_loss", sample_weight, len(terms)))


# ---------------------------------------------------------------------- regression
def _regression_pair(who: str, y_true, y_pred) -> tuple[np.ndarray, np.ndarray]:
    """Both as float64 (N, outputs): one column per output."""
    t = np.asarray(y_true, dtype=np.float64)
    p = np.asarray(y_pred, dtype=np.float64)
    if p.shape != t.shape:
        raise ShapeError(
            f"{who}: y_true and y_pred must have the same shape, got {fmt_shape(t.shape)} and "
            f"{fmt_shape(p.shape)}"
        )
    if t.ndim == 0:
        raise ShapeError(f"{who}: expected arrays of shape (N,) or (N, outputs), got ()")
    cols = int(np.prod(t.shape[1:]))  # not -1: an empty batch must reshape too
    return t.reshape(len(t), cols), p.reshape(len(p), cols)


def _column_means(who: str, values: np.ndarray, sample_weight) -> np.ndarray | None:
    """Per-output (weighted) means of ``values`` (N, outputs); None when there is no weight."""
    w = _weights(who, sample_weight, len(values))
    total = len(values) if w is None else w.sum()
    if not total:
        return None
    return (values.sum(axis=0) if w is None else w @ values) / total


def mse(y_true, y_pred, *, sample_weight=None) -> float:
    """Mean squared error, averaged over outputs (scikit-learn's 'uniform_average').

    Example:
        >>> mse(np.array([1.0, 2.0]), np.array([1.0, 4.0]))
        2.0
    """
    t, p = _regression_pair("mse", y_true, y_pred)
    per_output = _column_means("mse", (t - p) ** 2, sample_weight)
    return float(per_output.mean()) if per_output is not None and per_output.size else 0.0


def rmse(y_true, y_pred, *, sample_weight=None) -> float:
    """Root mean squared error of each output, averaged over outputs (scikit-learn's
    ``root_mean_squared_error``).

    Example:
        >>> rmse(np.array([1.0, 2.0]), np.array([1.0, 4.0]))
        1.4142135623730951
    """
    t, p = _regression_pair("rmse", y_true, y_pred)
    per_output = _column_means("rmse", (t - p) ** 2, sample_weight)
    return float(np.sqrt(per_output).mean()) if per_output is not None and per_output.size else 0.0


def mae(y_true, y_pred, *, sample_weight=None) -> float:
    """Mean absolute error, averaged over outputs."""
    t, p = _regression_pair("mae", y_true, y_pred)
    per_output = _column_means("mae", np.abs(t - p), sample_weight)
    return float(per_output.mean()) if per_output is not None and per_output.size else 0.0


def r2_score(y_true, y_pred, *, sample_weight=None) -> float:
    """Coefficient of determination 1 - SS_res / SS_tot, averaged uniformly over output columns
    (scikit-learn's default). A constant target column scores 1 if predicted exactly, else 0.

    Example:
        >>> r2_score(np.array([1.0, 2.0, 4.0]), np.array([1.0, 2.0, 3.0]))
        0.7857142857142857
    """
    t, p = _regression_pair("r2_score", y_true, y_pred)
    w = _weights("r2_score", sample_weight, len(t))
    w = np.ones(len(t)) if w is None else w
    if not w.sum():
        return 0.0
    mean = w @ t / w.sum()
    return _r2(w @ (t - p) ** 2, w @ (t - mean) ** 2)


def _r2_from_sums(ss_res, sum_t, sum_t2, total_weight) -> float:
    """R2 from running sums (what R2Score accumulates): SS_tot = sum w t^2 - (sum w t)^2 / sum w."""
    ss_tot = sum_t2 - sum_t * sum_t / total_weight
    # the subtraction cancels for (near) constant targets: treat round-off as exactly constant
    ss_tot = np.where(ss_tot > 1e-12 * np.maximum(sum_t2, 1e-300), ss_tot, 0.0)
    return _r2(ss_res, ss_tot)


def _r2(ss_res, ss_tot) -> float:
    with np.errstate(divide="ignore", invalid="ignore"):
        score = np.where(ss_tot > 0, 1.0 - ss_res / ss_tot, np.where(ss_res == 0, 1.0, 0.0))
    return float(np.mean(score)) if np.size(score) else 0.0


# ---------------------------------------------------------------------- stateful metrics
class Metric:
    """A metric accumulated over batches: ``reset()``, ``update(y_true, y_pred,
    sample_weight=None)`` per batch, ``result()`` for the value over everything seen since the
    reset. ``name`` keys the logs.

    ``reset()`` must set only the running sums (numbers, arrays or lists): distributed training
    merges them over ranks by adding them.
    """

    name = "metric"

    def reset(self) -> None:
        raise NotImplementedError

    def update(self, y_true, y_pred, sample_weight=None) -> None:
        raise NotImplementedError

    def result(self) -> float:
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class _MeanMetric(Metric):
    """A weighted mean of per-sample values: ``total`` over ``count`` (0.0 before any sample)."""

    def __init__(self):
        self.reset()

    def reset(self) -> None:
        self.total = 0.0
        self.count = 0.0

    def _values(self, y_true, y_pred) -> np.ndarray:
        raise NotImplementedError

    def update(self, y_true, y_pred, sample_weight=None) -> None:
        values = self._values(y_true, y_pred)
        w = _weights(self.name, sample_weight, len(values))
        self.total += float(values.sum() if w is None else values @ w)
        self.count += float(len(values) if w is None else w.sum())

    def result(self) -> float:
        return self.total / self.count if self.count else 0.0


class Accuracy(_MeanMetric):
    """Running :func:`accuracy`."""

    name = "accuracy"

    def __init__(self, threshold: float = 0.5):
        self.threshold = threshold
        super().__init__()

    def _values(self, y_true, y_pred):
        t, p = _pair("accuracy", y_true, y_pred, self.threshold)
        return (t == p).astype(np.float64)


class TopKAccuracy(_MeanMetric):
    """Running :func:`top_k_accuracy`; named ``top_k_accuracy``."""

    name = "top_k_accuracy"

    def __init__(self, k: int = 5):
        check_hyper("TopKAccuracy", "k", k, int(k) >= 1, "must be >= 1")
        self.k = int(k)
        super().__init__()

    def _values(self, y_true, y_pred):
        return _top_k_hits("top_k_accuracy", y_true, y_pred, self.k).astype(np.float64)


class LogLoss(_MeanMetric):
    """Running :func:`log_loss` (y_pred must be probabilities); named ``log_loss``."""

    name = "log_loss"

    def _values(self, y_true, y_pred):
        return _log_loss_terms(y_true, y_pred)


class _ConfusionMetric(Metric):
    """Accumulates a (weighted) confusion matrix, grown as new classes appear."""

    kind = ""

    def __init__(self, num_classes: int | None = None, average: str = "macro"):
        if average not in _AVERAGES:
            raise ValueError(
                f"{type(self).__name__}: invalid average={average!r} "
                "(must be 'macro', 'micro' or 'weighted')"
            )
        self.num_classes = num_classes
        self.average = average
        self.name = self.kind
        self.reset()

    def reset(self) -> None:
        self.cm = np.zeros((0, 0))

    def update(self, y_true, y_pred, sample_weight=None) -> None:
        k = self.num_classes
        if k is None:
            scores = np.asarray(y_pred)
            k = scores.shape[1] if scores.ndim == 2 and scores.shape[1] > 1 else None
        t, p = _pair(self.kind, y_true, y_pred)
        if k is None:
            k = int(max(p.max(initial=-1), t.max(initial=-1))) + 1
        cm = confusion_matrix(t, p, num_classes=k, sample_weight=sample_weight)
        size = max(cm.shape[0], self.cm.shape[0])
        grown = np.zeros((size, size))
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


class BalancedAccuracy(_ConfusionMetric):
    """Running :func:`balanced_accuracy`; named ``balanced_accuracy``."""

    kind = "balanced_accuracy"

    def __init__(self, num_classes: int | None = None, adjusted: bool = False):
        self.adjusted = bool(adjusted)
        super().__init__(num_classes)

    def result(self) -> float:
        return _balanced(self.cm, self.adjusted)


class ROCAUC(Metric):
    """Running :func:`roc_auc_score` (exact: it keeps the epoch's labels and scores; nan until
    both a positive and a negative were seen); named ``roc_auc_score``."""

    name = "roc_auc_score"

    def __init__(self, average: str = "macro"):
        if average not in _AVERAGES:
            raise ValueError(
                f"ROCAUC: invalid average={average!r} (must be 'macro', 'micro' or 'weighted')"
            )
        self.average = average
        self.reset()

    def reset(self) -> None:
        self.labels = []
        self.scores = []
        self.weights = []

    def update(self, y_true, y_score, sample_weight=None) -> None:
        t = _true_labels(self.name, y_true)
        s = np.asarray(y_score, dtype=np.float64)
        _same_length(self.name, t, s)
        w = _weights(self.name, sample_weight, len(t))
        self.labels.append(t)
        self.scores.append(s)
        self.weights.append(np.ones(len(t)) if w is None else w)

    def result(self) -> float:
        if not self.labels:
            return float("nan")
        return roc_auc_score(
            np.concatenate(self.labels),
            np.concatenate(self.scores),
            average=self.average,
            sample_weight=np.concatenate(self.weights),
        )


class MeanSquaredError(Metric):
    """Running :func:`mse`; named ``mse``."""

    name = "mse"

    def __init__(self):
        self.reset()

    def reset(self) -> None:
        self.total = 0.0  # per output: the (weighted) sums of the terms
        self.count = 0.0  # the weight seen (samples when unweighted)

    def _term(self, d):
        return d * d

    def update(self, y_true, y_pred, sample_weight=None) -> None:
        t, p = _regression_pair(self.name, y_true, y_pred)
        w = _weights(self.name, sample_weight, len(t))
        terms = self._term(t - p)
        self.total = self.total + (terms.sum(axis=0) if w is None else w @ terms)
        self.count += float(len(t) if w is None else w.sum())

    def _per_output(self) -> np.ndarray:
        return np.asarray(self.total) / self.count

    def result(self) -> float:
        if not self.count or not np.size(self.total):
            return 0.0
        return float(self._per_output().mean())


class RootMeanSquaredError(MeanSquaredError):
    """Running :func:`rmse`; named ``rmse``."""

    name = "rmse"

    def _per_output(self) -> np.ndarray:
        return np.sqrt(np.asarray(self.total) / self.count)


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
        self.weight = 0.0

    def update(self, y_true, y_pred, sample_weight=None) -> None:
        t, p = _regression_pair("r2_score", y_true, y_pred)
        w = _weights("r2_score", sample_weight, len(t))
        w = np.ones(len(t)) if w is None else w
        self.ss_res = self.ss_res + w @ (t - p) ** 2
        self.sum_t = self.sum_t + w @ t
        self.sum_t2 = self.sum_t2 + w @ (t * t)
        self.weight += float(w.sum())

    def result(self) -> float:
        if not self.weight:
            return 0.0
        return _r2_from_sums(
            np.asarray(self.ss_res), np.asarray(self.sum_t), np.asarray(self.sum_t2), self.weight
        )


class FunctionMetric(Metric):
    """Any ``fn(y_true, y_pred) -> float``, averaged over batches weighted by their size."""

    def __init__(self, fn: Callable, name: str | None = None):
        self.fn = fn
        self.name = name or getattr(fn, "__name__", type(fn).__name__)
        self.reset()

    def reset(self) -> None:
        self.total = 0.0
        self.count = 0

    def update(self, y_true, y_pred, sample_weight=None) -> None:
        if sample_weight is not None:
            raise TypeError(
                f"{self!r}: expected no sample_weight (fn(y_true, y_pred) takes none), got one. "
                "Subclass metrics.Metric to weigh samples"
            )
        n = len(y_pred) if hasattr(y_pred, "__len__") else 1
        self.total += float(self.fn(y_true, y_pred)) * n
        self.count += n

    def result(self) -> float:
        return self.total / self.count if self.count else 0.0

    def __repr__(self) -> str:
        return f"FunctionMetric({self.name})"


_BY_NAME: dict[str, Callable[[], Metric]] = {
    "accuracy": Accuracy,
    "balanced_accuracy": BalancedAccuracy,
    "top_k_accuracy": TopKAccuracy,
    "precision": Precision,
    "recall": Recall,
    "f1_score": F1Score,
    "roc_auc_score": ROCAUC,
    "log_loss": LogLoss,
    "mse": MeanSquaredError,
    "rmse": RootMeanSquaredError,
    "mae": MeanAbsoluteError,
    "r2_score": R2Score,
}


def get(metric) -> Metric:
    """A fresh :class:`Metric` from a name (``'accuracy'``, ``'balanced_accuracy'``,
    ``'top_k_accuracy'``, ``'precision'``, ``'recall'``, ``'f1_score'``, ``'roc_auc_score'``,
    ``'log_loss'``, ``'mse'``, ``'rmse'``, ``'mae'``, ``'r2_score'``: each the running version of
    the function of that name), a Metric instance (used as is) or a callable
    ``fn(y_true, y_pred) -> float``."""
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
