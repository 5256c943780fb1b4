"""Training models with several outputs: one loss per output, weighted, and metrics per output.

:class:`nnframe.Trainer` builds these when a model has several outputs, or when ``loss`` is a
list or dict: the weighted sum ``sum_k loss_weights[k] * loss_k(pred_k, y_k)`` is the training
loss, its ``backward`` returns one gradient per output (None for an output without a loss), and
each output's metrics are logged as ``<output>_<metric>`` next to ``<output>_loss`` (Keras's
history keys). Targets come as a list (in output order) or a dict keyed by output name.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping

import numpy as np

from nnframe.training import metrics as metrics_module

__all__ = ["MultiLoss", "align_target", "structured_loss_and_metrics", "target_hint"]


_CLASS_INDEX_LOSSES = ("CrossEntropyLoss", "NLLLoss", "MultiMarginLoss")


def align_target(loss_fn, pred, y):
    """The target as the loss expects it, where there is one unambiguous reading (Keras' rule):
    a 1-D target against a single-column output becomes ``(N, 1)``; for class-index losses an
    ``(N, 1)`` column of labels becomes ``(N,)``. Anything else is left to the loss, whose
    message names the fix. Several outputs (a :class:`MultiLoss`): each output by its loss."""
    if isinstance(loss_fn, MultiLoss):
        return loss_fn.align(pred, y)
    if not isinstance(pred, np.ndarray) or not isinstance(y, np.ndarray):
        return y
    if y.ndim == 1 and pred.ndim == 2 and pred.shape[1] == 1 and len(y) == len(pred):
        if type(loss_fn).__name__ not in _CLASS_INDEX_LOSSES:
            return y.reshape(-1, 1)
    if type(loss_fn).__name__ not in _CLASS_INDEX_LOSSES or pred.ndim != 2 or pred.shape[1] < 2:
        return y
    if y.ndim == 2 and y.shape[1] == 1 and len(y) == len(pred):
        y = y.reshape(-1)  # a column of labels (pandas, scikit-learn)
    if y.ndim == 1 and y.dtype.kind == "f" and len(y) == len(pred) and np.all(np.mod(y, 1) == 0):
        y = y.astype(np.int64)  # labels such as 2.0: the same indices as 2
    return y


def target_hint(loss_fn, pred, y) -> str | None:
    """The one-line fix for a target the loss refused, when there is one to suggest."""
    if not isinstance(pred, np.ndarray) or not isinstance(y, np.ndarray):
        return None
    if type(loss_fn).__name__ in _CLASS_INDEX_LOSSES:
        if y.dtype.kind == "f" and y.shape == pred.shape[:1] and not np.all(np.mod(y, 1) == 0):
            return (
                "class indices must be whole numbers 0..C-1 (labels such as 1.0 are accepted); "
                "for class probabilities pass y of the prediction's shape "
                f"{tuple(pred.shape)}"
            )
        if y.ndim == 2 and y.shape == pred.shape:
            return None  # probabilities: the loss said what is wrong with them
        if y.ndim == 2 and y.shape[0] == len(pred) and y.shape[1] > 1 and y.dtype.kind in "iub":
            return "for one-hot rows pass y.argmax(axis=1), or float probabilities"
        return None
    if y.shape != pred.shape and y.size == pred.size:
        return f"reshape the target: y.reshape{tuple(pred.shape[1:]) and (-1, *pred.shape[1:])}"
    return None


def _per_output(who: str, value, names: list[str], what: str) -> list:
    """One entry per output from a list (in output order) or a dict keyed by output name."""
    if isinstance(value, Mapping):
        unknown = [k for k in value if k not in names]
        if unknown:
            raise KeyError(
                f"{who}: expected {what} keyed by the outputs {names}, got {list(value)}"
            )
        return [value.get(k) for k in names]
    if isinstance(value, (list, tuple)):
        if len(value) != len(names):
            raise ValueError(
                f"{who}: expected {len(names)} {what} (one per output {names}), got {len(value)}"
            )
        return list(value)
    return [value if i == 0 else copy.deepcopy(value) for i in range(len(names))]


def _select(value, k: int, name: str):
    """Output ``k`` of a prediction or target structure (a tuple/list, or a dict by name)."""
    if isinstance(value, Mapping):
        return value[name]
    if isinstance(value, (list, tuple)):
        return value[k]
    return value


class MultiLoss:
    """``sum_k w_k * loss_k(pred_k, y_k)`` over a model's outputs.

    Args:
        losses: one loss per output (a list in output order or a dict by output name; a missing
            or None entry means the output is not trained), or one loss for every output.
        loss_weights: the weights ``w_k`` (a list or dict; default 1 each).
        output_names: the model's output names.
    """

    def __init__(self, losses, loss_weights=None, output_names=None):
        names = list(output_names or [])
        if not names:
            n = len(losses) if isinstance(losses, (list, tuple, Mapping)) else 1
            names = list(losses) if isinstance(losses, Mapping) else [str(i) for i in range(n)]
        self.output_names = names
        self.losses = _per_output("Trainer", losses, names, "losses")
        for name, loss in zip(names, self.losses):
            if loss is not None and (not callable(loss) or not hasattr(loss, "backward")):
                raise TypeError(
                    f"Trainer: expected the loss of output {name!r} to have __call__ and "
                    f"backward, got {type(loss).__name__}"
                )
        if all(loss is None for loss in self.losses):
            raise ValueError(f"Trainer: expected a loss for at least one output of {names}")
        weights = [1.0] * len(names) if loss_weights is None else loss_weights
        weights = _per_output("Trainer", weights, names, "loss_weights")
        self.loss_weights = [1.0 if w is None else float(w) for w in weights]
        self._kind = "tuple"

    def __repr__(self) -> str:
        parts = [f"{n}: {loss!r} x {w:g}" for n, loss, w in self.items()]
        return "MultiLoss(" + ", ".join(parts) + ")"

    def items(self):
        return [
            (n, loss, w)
            for n, loss, w in zip(self.output_names, self.losses, self.loss_weights)
            if loss is not None
        ]

    def align(self, pred, target):
        """``target`` with each output's entry aligned to its prediction (:func:`align_target`),
        in the same structure (a dict by output name, or a list/tuple in output order)."""
        if not isinstance(pred, (tuple, list, Mapping)):
            return target
        if isinstance(target, Mapping):
            out = dict(target)
            for k, (name, loss) in enumerate(zip(self.output_names, self.losses)):
                if loss is not None and name in out:
                    out[name] = align_target(loss, _select(pred, k, name), out[name])
            return out
        if isinstance(target, (tuple, list)) and len(target) == len(self.output_names):
            return type(target)(
                y if loss is None else align_target(loss, _select(pred, k, name), y)
                for k, (name, loss, y) in enumerate(zip(self.output_names, self.losses, target))
            )
        return target

    def __call__(self, pred, target, sample_weight=None) -> float:
        self._kind = "dict" if isinstance(pred, Mapping) else "tuple"
        if not isinstance(pred, (tuple, list, Mapping)) and len(self.output_names) > 1:
            raise TypeError(
                f"Trainer: expected one prediction per output {self.output_names}, got "
                f"{type(pred).__name__}"
            )
        total = 0.0
        for k, (name, loss, w) in enumerate(zip(self.output_names, self.losses, self.loss_weights)):
            if loss is None:
                continue
            p, y = _select(pred, k, name), _select(target, k, name)
            sw = (
                _select(sample_weight, k, name)
                if isinstance(sample_weight, Mapping)
                else sample_weight
            )
            y = align_target(loss, p, y)  # a 1-D target against an (N, 1) output...
            value = loss(p, y) if sw is None else loss(p, y, sample_weight=sw)
            total += w * float(value)
        return total

    def backward(self):
        """One gradient per output (``w_k * dloss_k/dpred_k``; None for an output without a
        loss), a tuple or a dict as the prediction was."""
        grads = []
        for loss, w in zip(self.losses, self.loss_weights):
            if loss is None:
                grads.append(None)
                continue
            g = loss.backward()
            grads.append(g if w == 1.0 else g * g.dtype.type(w))
        if self._kind == "dict":
            return dict(zip(self.output_names, grads))
        return tuple(grads) if len(grads) > 1 else grads[0]


class _OutputLoss(metrics_module.Metric):
    """The mean of one output's own loss over the rows seen: logged as ``<output>_loss``."""

    def __init__(self, loss, k: int, output: str):
        self.loss, self.k, self.output = copy.deepcopy(loss), k, output
        self.name = f"{output}_loss"
        self.reset()

    def reset(self) -> None:
        self.total = 0.0
        self.count = 0.0

    def update(self, y_true, y_pred, sample_weight=None) -> None:
        p, y = _select(y_pred, self.k, self.output), _select(y_true, self.k, self.output)
        y = align_target(self.loss, p, y)
        n = float(len(p))
        self.total += float(self.loss(p, y)) * n
        self.count += n

    def result(self) -> float:
        return self.total / self.count if self.count else 0.0


_OUTPUT_CLASSES: dict[type, type] = {}


def _output_class(cls: type) -> type:
    """A subclass of a metric class whose ``update`` reads one output (``_k``, ``_output``):
    its running sums are the parent's, so data-parallel training merges them as usual, and
    copies (evaluate deep-copies metrics) stay independent."""
    if cls not in _OUTPUT_CLASSES:

        def update(self, y_true, y_pred, sample_weight=None):
            k, name = self.__dict__["_k"], self.__dict__["_output"]
            cls.update(self, _select(y_true, k, name), _select(y_pred, k, name), sample_weight)

        _OUTPUT_CLASSES[cls] = type(cls.__name__, (cls,), {"update": update})
    return _OUTPUT_CLASSES[cls]


def _for_output(metric, k: int, output: str):
    """A copy of ``metric`` that reads output ``k`` and is named ``<output>_<name>``."""
    m = copy.deepcopy(metrics_module.get(metric))
    m.__class__ = _output_class(type(m))
    m._k, m._output = k, output
    m.name = f"{output}_{m.name}"
    return m


def structured_loss_and_metrics(model, loss, metrics, loss_weights):
    """What Trainer trains with: ``loss`` and ``metrics`` unchanged for one output; for several
    outputs (or a list/dict of losses) a :class:`MultiLoss` and per-output metrics (a flat list
    of metrics applies to every output; a dict or list of lists gives each output its own),
    plus ``<output>_loss`` for every output with a loss."""
    names = list(getattr(model, "output_names", None) or [])
    multi = isinstance(loss, (list, tuple, Mapping)) or loss_weights is not None or len(names) > 1
    if not multi:
        return loss, metrics
    if not names:
        raise TypeError(
            f"Trainer: expected a model with output_names (an nf.Model) for a list or dict of "
            f"losses, got {type(model).__name__}"
        )
    multi_loss = MultiLoss(loss, loss_weights, names)
    if isinstance(metrics, (str, metrics_module.Metric)) or callable(metrics):
        metrics = [metrics]
    if isinstance(metrics, Mapping) or (
        isinstance(metrics, (list, tuple))
        and metrics
        and all(isinstance(m, (list, tuple)) for m in metrics)
    ):
        per = _per_output("Trainer", metrics, names, "metrics")
    else:
        per = [list(metrics)] * len(names)
    out = [
        _OutputLoss(lo, k, n)
        for k, (n, lo) in enumerate(zip(names, multi_loss.losses))
        if lo is not None
    ]
    for k, (name, ms) in enumerate(zip(names, per)):
        if ms is None:
            continue
        if isinstance(ms, (str, metrics_module.Metric)) or callable(ms):
            ms = [ms]
        out += [_for_output(m, k, name) for m in ms]
    return multi_loss, out


def rows(value) -> int:
    """The number of rows of an array or of the first array in a list/tuple/dict."""
    while isinstance(value, (list, tuple, Mapping)):
        value = next(iter(value.values())) if isinstance(value, Mapping) else value[0]
    return np.shape(value)[0] if not hasattr(value, "shape") else value.shape[0]
