"""Training made easy: :class:`Trainer` runs the forward/backward/step loop for you.

A Trainer binds a model, a loss, an optimizer and metrics (Keras' ``compile``); ``fit`` trains on
arrays or a DataLoader with validation, callbacks, weighting and clipping and returns a
:class:`History`; ``evaluate`` and ``predict`` run batched in eval mode. Each training step is
exactly the loop one would write by hand, so nothing is hidden::

    model.zero_grad(); loss = loss_fn(model(x), y); model.backward(loss_fn.backward())
    # (gradient norm, NaN check, clipping)
    optimizer.step()

Example:
    >>> import numpy as np, nnframe as nf
    >>> rng = np.random.default_rng(0)
    >>> x = rng.normal(size=(64, 2)).astype(np.float32); y = (x[:, 0] > 0).astype(np.int64)
    >>> model = nf.Sequential(nf.Dense(2, 8, rng=0), nf.Tanh(), nf.Dense(8, 2, rng=1))
    >>> trainer = nf.Trainer(model, nf.CrossEntropyLoss(), nf.optim.SGD(model.parameters(), lr=0.5),
    ...                      metrics=["accuracy"])
    >>> history = trainer.fit(x, y, epochs=20, batch_size=16, verbose=0, rng=0)
    >>> history["accuracy"][-1] > 0.9
    True
"""

from __future__ import annotations

import copy
import functools
import math
import os
import sys
import time
from dataclasses import dataclass, field

import numpy as np
from scipy import sparse

from nnframe.core.backend import array_module, is_array, to_numpy
from nnframe.core.device import to_device, use
from nnframe.core.errors import ShapeError, check_hyper
from nnframe.core.hooks import no_grad
from nnframe.core.module import Module
from nnframe.core.random import get_rng
from nnframe.optim.clip import total_norm
from nnframe.optim.optimizer import NonFiniteUpdateError
from nnframe.training import metrics as metrics_module
from nnframe.training.callbacks import CallbackList
from nnframe.training.data import (
    ArrayDataset,
    DataLoader,
    first_array,
    stratified_indices,
    take_rows,
)
from nnframe.training.distributed import (
    DataParallel,
    ShardedLoader,
    agree_stop,
    is_communicator,
    reduce_sums,
    shard_for_evaluation,
    shared_generator,
)
from nnframe.training.graph_training import (
    align_target,
    rows,
    structured_loss_and_metrics,
    target_hint,
)

__all__ = ["Trainer", "TrainerState", "History"]

_NAN_POLICIES = ("raise", "skip_batch", "stop")


class History:
    """Per-epoch values recorded by :meth:`Trainer.fit`.

    ``history[key]`` is the list of one value per epoch for ``loss``, each metric, their
    ``val_`` counterparts, ``lr`` (the rate used during the epoch), ``grad_norm`` and
    ``grad_norm_max`` (mean and max over the epoch's steps of the global gradient norm, before
    clipping), ``time`` (seconds) and ``skipped_batches``. ``stop_reason`` says why training
    ended early (None when it ran all its epochs).
    """

    def __init__(self) -> None:
        self.history: dict[str, list[float]] = {}
        self.epoch: list[int] = []
        self.stop_reason: str | None = None

    def record(self, epoch: int, logs: dict) -> None:
        self.epoch.append(epoch)
        for key, value in logs.items():
            self.history.setdefault(key, [math.nan] * (len(self.epoch) - 1)).append(float(value))
        for values in self.history.values():  # keys missing this epoch get NaN
            if len(values) < len(self.epoch):
                values.append(math.nan)

    def __getitem__(self, key: str) -> list[float]:
        if key not in self.history:
            raise KeyError(f"History: expected one of {sorted(self.history)}, got {key!r}")
        return self.history[key]

    def __contains__(self, key: str) -> bool:
        return key in self.history

    def keys(self) -> list[str]:
        return list(self.history)

    def __len__(self) -> int:
        return len(self.epoch)

    def __repr__(self) -> str:
        return f"History(epochs={len(self.epoch)}, keys={self.keys()})"

    def plot(self, path=None, keys: list[str] | None = None, dpi: int = 100):
        """The curves: one panel per quantity (loss, each metric, lr), training and validation
        together. With ``path``, writes a PNG there and returns ``path``; without, returns the
        matplotlib ``Figure`` (a notebook shows it inline). Needs matplotlib
        (``pip install 'nnframe[plot]'``); uses its object-oriented API, so no global backend
        or pyplot state is touched.
        """
        try:
            from matplotlib.backends.backend_agg import FigureCanvasAgg
            from matplotlib.figure import Figure
        except ImportError as error:
            raise ImportError(
                "History.plot: expected matplotlib to be installed, got none. "
                "Install it with: pip install 'nnframe[plot]'"
            ) from error
        if not self.epoch:
            raise RuntimeError("History.plot: nothing recorded yet (call Trainer.fit first)")
        if keys is None:
            skip = {"time", "skipped_batches", "grad_norm_max"}
            keys = [k for k in self.history if not k.startswith("val_") and k not in skip]
        cols = min(3, len(keys))
        rows = math.ceil(len(keys) / cols)
        fig = Figure(figsize=(4.2 * cols, 3.2 * rows), dpi=dpi)
        FigureCanvasAgg(fig)
        epochs = [e + 1 for e in self.epoch]
        for i, key in enumerate(keys):
            ax = fig.add_subplot(rows, cols, i + 1)
            ax.plot(epochs, self[key], label="train" if f"val_{key}" in self.history else key)
            if f"val_{key}" in self.history:
                ax.plot(epochs, self[f"val_{key}"], label="validation")
            if key in ("lr", "grad_norm") or key.endswith("loss"):
                values = [v for v in self[key] if v > 0 and math.isfinite(v)]
                if values and max(values) / min(values) > 50:
                    ax.set_yscale("log")
            ax.set_title(key)
            ax.set_xlabel("epoch")
            ax.grid(alpha=0.3)
            ax.legend()
        fig.tight_layout()
        if path is None:
            return fig
        directory = os.path.dirname(os.path.abspath(os.fspath(path)))
        os.makedirs(directory, exist_ok=True)
        fig.savefig(path, format="png")
        return path


def _progress_bar(total: int, epoch: int, epochs: int, show: bool):
    """A bar for one epoch: tqdm.auto's (a widget in a notebook, text on a terminal);
    disabled, and free, when not shown."""
    # a runtime dependency; imported here to keep `import nnframe` light
    from tqdm.auto import tqdm

    return tqdm(
        total=total, desc=f"epoch {epoch + 1}/{epochs}", unit="batch", disable=not show,
        leave=True, file=sys.stderr, dynamic_ncols=True,
    )  # fmt: skip


def _bar_holds(bar) -> bool:
    """Whether a drawn bar shows its whole line (a notebook widget: not known, so no; a
    terminal narrower than the line: no, tqdm cuts it)."""
    if _in_notebook():
        return False
    import shutil

    width = shutil.get_terminal_size(fallback=(80, 24)).columns
    return len(str(bar)) <= width


def _in_notebook() -> bool:
    """True inside a Jupyter kernel (where tqdm.auto draws a widget)."""
    shell = sys.modules.get("IPython")
    if shell is None or "ipykernel" not in sys.modules:
        return False
    try:
        ip = shell.get_ipython()
    except Exception:  # noqa: BLE001 - an odd IPython: no notebook
        return False
    return ip is not None and "IPKernelApp" in getattr(ip, "config", {})


def _is_tty(stream) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


class _BufferGuard:
    """Puts the model's buffers (BatchNorm running statistics, counters...) back as they were
    before a batch that is rejected: a NaN loss, gradient or update, or an exception.

    The forward pass of a training batch updates buffers before the loss is known, so the
    Trainer copies them first (they are small: a few values per channel) and restores them, in
    place, when the batch is not applied. Buffers are found once per ``fit`` by their dotted
    names (``model.named_buffers()``), through the public module tree.
    """

    def __init__(self, model: Module):
        modules = dict(model.named_modules())
        self.slots = []  # (module, attribute name)
        for name, _ in model.named_buffers():
            prefix, _, attr = name.rpartition(".")
            self.slots.append((modules[prefix], attr))
        self.saved: list = []

    def snapshot(self) -> None:
        self.saved = [(m, a, getattr(m, a)) for m, a in self.slots]
        self.saved = [(m, a, v, None if v is None else v.copy() if is_array(v) else np.array(v))
                      for m, a, v in self.saved]  # fmt: skip

    def finite(self) -> bool:
        """True when no float buffer holds NaN or Inf (after this batch's forward pass)."""
        for module, attr, _, _ in self.saved:
            value = getattr(module, attr)
            if is_array(value) and value.dtype.kind == "f":
                if not np.isfinite(value).all():
                    return False
        return True

    def restore(self) -> None:
        for module, attr, original, values in self.saved:
            if original is not None:
                np.copyto(original, values)  # the same array object, with its old values
            if getattr(module, attr) is not original:  # the layer replaced it: put it back
                setattr(module, attr, original)


def _is_number(v) -> bool:
    return isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool)


def _check_count(who: str, name: str, value) -> None:
    """``value`` must be an integer >= 1 (not a float such as 1.5, nan or 2.0, not a bool)."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{who}: invalid {name}={value!r} (must be an integer >= 1)")
    check_hyper(who, name, value, value >= 1, "must be >= 1")


def _rows(a) -> int:
    return a.shape[0] if hasattr(a, "shape") else rows(a)  # a list/dict: its first array's


def _on_the_models_device(method):
    """``method`` run inside ``use(model's device)``: new arrays land on the model's GPU (CuPy
    makes them on its current one, GPU 0 unless told); the loss's arrays move there first."""

    @functools.wraps(method)
    def run(self, *args, **kwargs):
        device = self.model._device
        if device is None:
            return method(self, *args, **kwargs)
        if callable(getattr(self.loss, "to", None)):
            self.loss.to(device)  # its class weights follow the model (nothing moves twice)
        if not device.index:
            return method(self, *args, **kwargs)
        with use(device):
            return method(self, *args, **kwargs)

    return run


def _as_output(out, host: bool):
    """A batch's output as ``predict`` collects it: host (numpy) arrays when ``host``."""
    if isinstance(out, tuple):
        return tuple(_as_output(o, host) for o in out)
    if isinstance(out, dict):
        return {k: _as_output(o, host) for k, o in out.items()}
    return to_numpy(out) if host else out


def _concatenate(batches: list):
    """The batches' outputs joined along the batch axis, in their array module."""
    return array_module(batches[0]).concatenate(batches, axis=0)


def _labels(y) -> np.ndarray:
    y = np.asarray(first_array(y))  # several targets: the first one's classes
    if y.ndim == 2 and y.shape[1] > 1:
        return y.argmax(axis=1)
    return y.reshape(len(y)).astype(np.int64)


def _loss(loss_fn, pred, y, w):
    """``loss_fn(pred, y[, sample_weight=w])``; a refused target gets the fix added."""
    try:
        return loss_fn(pred, y) if w is None else loss_fn(pred, y, sample_weight=w)
    except (ValueError, TypeError) as e:
        hint = target_hint(loss_fn, pred, y)
        if hint is None:
            raise
        raise type(e)(f"{e}. Trainer: {hint}") from e


@dataclass
class TrainerState:
    """Where a ``fit`` stands: what :class:`nnframe.TrainingCheckpoint` saves and
    ``fit(resume_from=)`` restores, kept in one object (``trainer.state``).

    Attributes:
        epoch: the epoch running (0-based); after fit, the last one run.
        epochs: the epochs asked of fit.
        batch: the batch running within the epoch (0-based).
        step: optimizer steps applied since training began (a resumed fit goes on counting).
        skipped_batches: batches rejected under ``nan_policy='skip_batch'`` since training
            began.
        stop_training: set it (or ``trainer.stop_training``) to end training after this batch.
        stop_reason: why training stopped early, or None.
        rng: the generator of the validation split and the shuffles.
        loader: the training DataLoader (its generator draws each epoch's order).
        callbacks: the running callbacks (schedulers wrapped).
        epoch_log_keys: what every epoch will log (callbacks check their monitors against it).
    """

    epoch: int = 0
    epochs: int = 0
    batch: int = 0
    step: int = 0
    skipped_batches: int = 0
    stop_training: bool = False
    stop_reason: str | None = None
    rng: np.random.Generator | None = None
    loader: object = None
    callbacks: list = field(default_factory=list)
    epoch_log_keys: list | None = None

    def counters(self) -> dict:
        """The counters a checkpoint stores (the generators are stored by their states)."""
        return {"step": self.step, "skipped_batches": self.skipped_batches}


class Trainer:
    """Trains a model with a loss and an optimizer: Keras' fit/evaluate/predict on the explicit
    nnframe loop.

    One training step is :meth:`train_step`, one evaluation step :meth:`test_step`, one
    prediction step :meth:`predict_step`: override them in a subclass to change what a step
    does (Keras' ``train_step(data)``); ``fit``, ``evaluate`` and ``predict`` keep the loops,
    callbacks, progress and logs around them.

    Args:
        model: the Module to train.
        loss: a loss (``loss(pred, target[, sample_weight=])`` returns a float,
            ``loss.backward()`` returns dL/dpred), e.g. ``nf.CrossEntropyLoss()``. Needed by
            ``fit`` and ``evaluate``; ``predict`` runs without it.
        optimizer: an optimizer over (some of) the model's parameters. Needed by ``fit``.
            Gradient clipping belongs to it (``SGD(..., clip_norm=1.0)``).
        metrics: names (``'accuracy'``, ``'f1_score'``, ``'roc_auc_score'``, ``'rmse'``...: see
            :func:`nnframe.metrics.get`), :class:`nnframe.metrics.Metric` objects, or functions
            ``fn(y_true, y_pred) -> float`` (scikit-learn's argument order).
        loss_weights: for a model with several outputs (an ``nf.Model``), the weight of each
            output's loss (a list in output order or a dict by output name). With several
            outputs, ``loss`` may be a list or dict of losses (one per output; a single loss
            applies to every output), ``metrics`` a flat list (for every output) or a dict/list
            of lists per output; history keys are ``<output>_loss`` and ``<output>_<metric>``,
            and x and y may be lists or dicts (keyed by input and output names) of arrays.
        comm: a communicator from :mod:`nnframe.distributed` (e.g. ``get_communicator()``).
            With more than one rank, ``fit`` trains data-parallel: every rank takes its shard
            of each batch (``batch_size`` rows per rank), gradients and the loss are averaged
            over ranks before every step, logged metrics and ``evaluate`` cover all ranks'
            rows, stop decisions agree, and only rank 0 prints and writes files. None (the
            default) or a size-1 communicator: one process, unchanged.

    Attributes:
        history: the :class:`History` of the last ``fit``.
        state: the :class:`TrainerState` of the running (or last) ``fit``.
        stop_training: set it to True (from a callback) to end training after this batch.
        stop_reason: why training stopped early, or None.
        split_indices: ``(train_rows, validation_rows)`` chosen by ``validation_split``.
    """

    def __init__(
        self, model: Module, loss=None, optimizer=None, metrics=(), *, loss_weights=None,
        comm=None,
    ):  # fmt: skip
        if not isinstance(model, Module):
            raise TypeError(f"Trainer: expected model to be a Module, got {type(model).__name__}")
        # several outputs (nf.Model): a weighted sum of per-output losses, metrics per output
        if loss is not None:
            loss, metrics = structured_loss_and_metrics(model, loss, metrics, loss_weights)
        if loss is not None and (not callable(loss) or not hasattr(loss, "backward")):
            raise TypeError(
                f"Trainer: expected a loss with __call__ and backward, got {type(loss).__name__}"
            )
        if optimizer is not None and (
            not hasattr(optimizer, "step") or not hasattr(optimizer, "param_groups")
        ):
            raise TypeError(
                f"Trainer: expected an optimizer with step and param_groups, "
                f"got {type(optimizer).__name__}"
            )
        self.model = model
        self.loss = loss
        self.optimizer = optimizer
        if isinstance(metrics, (str, metrics_module.Metric)) or callable(metrics):
            metrics = [metrics]
        self.metrics = [metrics_module.get(m) for m in metrics]
        names = [m.name for m in self.metrics]
        if len(set(names)) != len(names) or "loss" in names:
            raise ValueError(
                f"Trainer: expected distinct metric names other than 'loss', got {names}"
            )
        if comm is not None and not is_communicator(comm):
            raise TypeError(
                f"Trainer: expected comm to be a communicator from nnframe.training.distributed or None, "
                f"got {type(comm).__name__}"
            )
        self.comm = comm
        self._dp: DataParallel | None = None  # set by fit when training data-parallel
        self.history = History()
        self.state = TrainerState()
        self.split_indices: tuple[np.ndarray, np.ndarray] | None = None
        self.eval_metrics: list = []  # the metrics of the evaluation running (test_step)
        self._who = "evaluate"  # the public method running test_step, for its messages
        self._lut = None  # class weights of the running fit
        self._all_params: list | None = None  # what train_step works on (see _prepare_steps)
        self._callbacks = CallbackList((), self)

    # the running fit's state, under the names callbacks have always used
    @property
    def stop_training(self) -> bool:
        return self.state.stop_training

    @stop_training.setter
    def stop_training(self, value: bool) -> None:
        self.state.stop_training = bool(value)

    @property
    def stop_reason(self) -> str | None:
        return self.state.stop_reason

    @stop_reason.setter
    def stop_reason(self, value: str | None) -> None:
        self.state.stop_reason = value

    @property
    def epoch_log_keys(self) -> list | None:
        return self.state.epoch_log_keys

    def _require(self, who: str, optimizer: bool) -> None:
        """fit needs a loss and an optimizer, evaluate a loss: say so before anything runs."""
        missing = [n for n, v in (("a loss", self.loss), ("an optimizer", self.optimizer))
                   if v is None and (n == "a loss" or optimizer)]  # fmt: skip
        if missing:
            raise TypeError(
                f"Trainer.{who}: expected {' and '.join(missing)}, got None (build the "
                f"Trainer with them: nf.Trainer(model, loss, optimizer); predict needs neither)"
            )

    @property
    def is_root(self) -> bool:
        """False on every rank but 0 of a data-parallel Trainer: rank 0 alone prints and writes
        files (checkpoints, logs); True in a single process."""
        return self.comm is None or self.comm.rank == 0

    def _dist(self):
        """The communicator when training data-parallel (more than one rank), else None."""
        return self.comm if self.comm is not None and self.comm.size > 1 else None

    def __repr__(self) -> str:
        names = [m.name for m in self.metrics]
        optimizer = None if self.optimizer is None else type(self.optimizer).__name__
        return (
            f"Trainer(model={type(self.model).__name__}, loss={self.loss!r}, "
            f"optimizer={optimizer}, metrics={names})"
        )

    # ------------------------------------------------------------------ data plumbing
    def _loader(self, who: str, x, y, sample_weight, batch_size, shuffle, rng) -> DataLoader:
        if isinstance(x, DataLoader):
            if y is not None or sample_weight is not None:
                raise TypeError(
                    f"Trainer.{who}: expected y=None and sample_weight=None with a DataLoader "
                    "(its batches carry (x, y[, sample_weight])), got arrays"
                )
            return x
        if y is None:
            raise TypeError(f"Trainer.{who}: expected targets y with array inputs, got None")
        arrays = [x, y] if sample_weight is None else [x, y, np.asarray(sample_weight)]
        return DataLoader(ArrayDataset(*arrays), batch_size, shuffle=shuffle, rng=rng)

    @staticmethod
    def _unpack(who: str, batch) -> tuple:
        if not isinstance(batch, (tuple, list)) or len(batch) not in (2, 3):
            got = f"a tuple of {len(batch)}" if isinstance(batch, (tuple, list)) else type(batch)
            raise TypeError(
                f"Trainer.{who}: expected batches (x, y) or (x, y, sample_weight), got {got}"
            )
        return batch[0], batch[1], (batch[2] if len(batch) == 3 else None)

    def _split(self, x, y, sample_weight, validation_split, stratify, rng):
        """Holds out a random (or stratified) ``validation_split`` of the rows."""
        x = x.tocsr() if sparse.issparse(x) else take_rows(x, slice(None))
        y = take_rows(y, slice(None))
        w = None if sample_weight is None else np.asarray(sample_weight)
        take = take_rows  # rows of an array, or of every array of a list/dict
        n = _rows(x)
        if w is not None and (w.ndim != 1 or len(w) != n):
            raise ValueError(
                f"Trainer.fit: expected sample_weight of shape ({n},) (one weight per row of x), "
                f"got shape {w.shape}"
            )
        n_val = max(1, round(validation_split * n))
        if n_val >= n:
            raise ValueError(
                f"Trainer.fit: expected validation_split to leave training rows, got "
                f"{validation_split} of {n} rows"
            )
        if stratify:
            train_idx, val_idx = stratified_indices(_labels(y), n_val, rng)
        else:
            order = rng.permutation(n)
            val_idx, train_idx = order[:n_val], order[n_val:]
        self.split_indices = (train_idx, val_idx)
        if w is None:
            return (
                take(x, train_idx),
                take(y, train_idx),
                None,
                (take(x, val_idx), take(y, val_idx)),
            )
        return (
            take(x, train_idx), take(y, train_idx), w[train_idx],
            (take(x, val_idx), take(y, val_idx), w[val_idx]),
        )  # fmt: skip

    def _class_weights(self, class_weight):
        """``(classes, weights)``: sorted class indices and their weights (a dict), or a dense
        table (a sequence: index = class); None without class weights."""
        if class_weight is None or (isinstance(class_weight, dict) and not class_weight):
            return None  # (no class named: every class weighs 1, as in Keras)
        who = "Trainer.fit"
        if isinstance(class_weight, dict):
            # "3" as written by JSON is class 3; anything else that is not an integer is refused
            class_weight = {
                int(k) if isinstance(k, str) and k.isdecimal() and len(k) < 19 else k: v
                for k, v in class_weight.items()
            }
            keys = list(class_weight)
            if not all(isinstance(k, (int, np.integer)) and not isinstance(k, bool) for k in keys):
                raise TypeError(
                    f"{who}: expected class_weight keys to be class indices (integers), got "
                    f"{[k for k in keys if not isinstance(k, (int, np.integer))][:5]}"
                )
            if any(k < 0 for k in keys):
                raise ValueError(
                    f"{who}: expected class_weight keys >= 0 (class indices), got {keys}"
                )
            values = [class_weight[k] for k in keys]
            classes = np.array(keys, dtype=np.int64)
        else:
            values = list(np.asarray(class_weight, dtype=np.float64).reshape(-1))
            classes = np.arange(len(values), dtype=np.int64)
        weights = np.array(values, dtype=np.float64)
        if not len(weights):
            return None
        if not np.isfinite(weights).all() or (weights < 0).any():
            raise ValueError(f"{who}: expected finite class weights >= 0, got {values[:10]}")
        order = np.argsort(classes)
        return classes[order], weights[order]

    @staticmethod
    def _weights(yb, wb, lut):
        """Per-sample weights: sample_weight times class_weight[label] (either may be absent;
        a class without a weight gets 1). ``lut`` is ``(sorted classes, weights)``: a search,
        so a class index of 10**12 costs nothing."""
        if lut is None:
            return wb
        classes, weights = lut
        labels = _labels(yb)
        at = np.minimum(np.searchsorted(classes, labels), len(classes) - 1)
        cw = np.where(classes[at] == labels, weights[at], 1.0)
        return cw if wb is None else cw * np.asarray(wb, dtype=np.float64)

    # ------------------------------------------------------------------ fit
    @_on_the_models_device
    def fit(
        self,
        x,
        y=None,
        *,
        epochs: int = 1,
        batch_size: int = 32,
        validation_data=None,
        validation_split: float = 0.0,
        stratify: bool = False,
        shuffle: bool = True,
        sample_weight=None,
        class_weight=None,
        callbacks=(),
        clip_norm: float | None = None,
        clip_value: float | None = None,
        nan_policy: str = "raise",
        verbose: int = 1,
        rng=None,
        resume_from=None,
    ) -> History:
        """Trains for ``epochs`` epochs and returns the :class:`History`.

        Args:
            x: inputs (ndarray or scipy.sparse matrix, N rows), or a DataLoader of
                ``(x, y[, sample_weight])`` batches (then leave ``y`` None).
            y: targets, N rows.
            epochs: passes over the training data.
            batch_size: rows per step (array inputs); per rank with a communicator.
            validation_data: ``(x, y)``, ``(x, y, sample_weight)`` or a DataLoader, evaluated at
                the end of each epoch (``val_loss``, ``val_<metric>``).
            validation_split: a fraction of the rows held out for validation, at random
                (array inputs; exclusive with ``validation_data``).
            stratify: hold out ``validation_split`` with each class in proportion (from y).
            shuffle: reshuffle the training rows every epoch (array inputs).
            sample_weight: per-row weights (N,), passed to the loss as ``sample_weight=``.
            class_weight: ``{class: weight}`` or a per-class sequence: each row's weight is
                multiplied by its class's (from y's class indices or one-hot rows).
            callbacks: :mod:`nnframe.callbacks` objects; an ``nnframe.optim`` scheduler may be
                passed directly (it is wrapped in ``callbacks.LearningRateScheduler``).
            clip_norm: clip the global gradient norm to this before each step: a shortcut for
                the optimizer's own ``clip_norm`` (set on it for the duration of fit; the
                optimizer is the one place clipping happens).
            clip_value: clamp every gradient element to [-clip_value, clip_value] first (the
                optimizer's ``clip_value``, likewise).
            nan_policy: what a NaN/Inf loss or gradient does. The step is never applied, so
                parameters are never corrupted; then 'raise' raises FloatingPointError,
                'skip_batch' goes on with the next batch (counted in ``skipped_batches``),
                'stop' ends training (``stop_reason`` says where). A callback that sets
                ``stop_training`` on that batch (TerminateOnNaN) stops without raising.
            verbose: 0 silent; 1 a progress bar during each epoch where one can be drawn (a
                terminal, or a notebook widget) and one line per epoch with every value; 2
                one line per epoch only.
            rng: Generator or int seed for shuffling and the validation split (None: nnframe's
                default generator). Epoch e's order is the e-th ``rng.permutation(N)``.
            resume_from: a checkpoint written by :class:`nnframe.TrainingCheckpoint`: the
                model, optimizer, generators, callbacks' state and history are restored and
                training goes on from the epoch after it (call with the same data, ``rng`` and
                ``epochs``: the result is bit-identical to an uninterrupted run).

        The model is put in training mode for the epochs (``evaluate`` and the validation
        switch to eval mode and back) and stays in training mode afterwards.
        """
        self._require("fit", optimizer=True)
        self._check_fit_args(epochs, batch_size, validation_split, nan_policy, verbose)
        clipping = self._clipping(clip_norm, clip_value)
        rng = get_rng(rng)
        state = self.state = TrainerState(epochs=epochs, rng=rng)
        dist = self._dist()
        if dist is not None:  # data-parallel: the same split and shuffles on every rank
            rng = shared_generator(rng, dist)
        if validation_split:
            if validation_data is not None:
                raise ValueError(
                    "Trainer.fit: expected validation_data or validation_split, got both"
                )
            if isinstance(x, DataLoader):
                raise TypeError(
                    "Trainer.fit: validation_split needs array inputs, got a DataLoader "
                    "(split it with nnframe.data.random_split, or pass validation_data)"
                )
            x, y, sample_weight, validation_data = self._split(
                x, y, sample_weight, validation_split, stratify, rng
            )
        elif stratify:
            raise ValueError("Trainer.fit: stratify=True needs validation_split > 0, got 0")
        train = self._loader("fit", x, y, sample_weight, batch_size, shuffle, rng)
        if len(train) == 0:
            raise ValueError(
                "Trainer.fit: expected at least one batch of training rows, got none "
                "(empty inputs, or drop_last with fewer rows than batch_size)"
            )
        if dist is not None:  # this rank's share of every global batch
            train = ShardedLoader.from_loader(train, dist)
        self._lut = self._class_weights(class_weight)
        self._prepare_steps()
        history = self.history = History()
        # what every epoch will log: callbacks check their monitors and paths against it
        names = ["loss"] + [m.name for m in self.metrics]
        state.epoch_log_keys = (
            names
            + ([f"val_{k}" for k in names] if validation_data is not None else [])
            + ["lr", "grad_norm", "grad_norm_max", "skipped_batches", "time"]
        )
        cbs = self._callbacks = CallbackList(callbacks, self)
        state.loader, state.callbacks = train, cbs.callbacks  # for TrainingCheckpoint
        show_bar = verbose == 1 and self.is_root and (_is_tty(sys.stderr) or _in_notebook())
        logs: dict = {}
        with clipping:
            cbs.on_train_begin(logs)
            start_epoch = 0
            if resume_from is not None:  # nnframe.checkpoint restores everything the loop uses
                from nnframe.training.checkpoint import resume_fit

                start_epoch = resume_fit(self, resume_from, cbs.callbacks, train)
            # data-parallel: check the ranks' parameters alike, then take rank 0's (after resuming)
            self._dp = None if dist is None else DataParallel(self.model, self.optimizer, dist)
            for epoch in range(start_epoch, epochs):
                state.epoch = epoch
                cbs.on_epoch_begin(epoch, {})
                bar = _progress_bar(len(train), epoch, epochs, show_bar)
                holds = False  # whether the bar showed the epoch's whole line
                try:
                    logs = self._train_epoch(train, epoch, cbs, nan_policy, bar)
                    if self._dp is not None:  # BatchNorm statistics: the mean over ranks
                        self._dp.average_buffers()
                    if validation_data is not None and logs["_steps"]:
                        val = self._evaluate(validation_data, batch_size, "fit", cbs)
                        logs.update({f"val_{k}": v for k, v in val.items()})
                    logs.pop("_steps")
                    logs["time"] = time.perf_counter() - logs.pop("_start")
                    if dist is not None:  # rank 0's time, so that History is equal on all ranks
                        logs["time"] = dist.broadcast_object(logs["time"])
                    if show_bar:  # the bar's last state shows the whole epoch, validation too
                        bar.set_postfix_str(self._epoch_line(epoch, epochs, logs, short=True))
                        holds = _bar_holds(bar)
                finally:
                    bar.close()
                history.record(epoch, logs)
                # one line per epoch with every value where there is no bar (piped, CI), in a
                # notebook, and where the terminal is too narrow for the bar's line
                if self.is_root and (verbose == 2 or (verbose == 1 and not holds)):
                    print(self._epoch_line(epoch, epochs, logs), flush=True)
                cbs.on_epoch_end(epoch, logs)
                if dist is not None:  # a callback that stops one rank stops them all
                    self._agree_stop(dist)
                if self.stop_training:
                    break
            cbs.on_train_end(logs)
        history.stop_reason = self.stop_reason
        return history

    def _clipping(self, clip_norm, clip_value):
        """fit's clip_norm/clip_value, handed to the optimizer (the one place clipping is done)
        for the duration of fit: a context manager that puts the optimizer's own back."""
        who = "Trainer.fit"
        for name, v in (("clip_norm", clip_norm), ("clip_value", clip_value)):
            if v is not None:
                ok = _is_number(v) and math.isfinite(v) and v > 0
                check_hyper(who, name, v, ok, "must be a finite number > 0")
                if not hasattr(self.optimizer, "clip_gradients"):
                    raise TypeError(
                        f"{who}: expected an nnframe optimizer to clip with {name}=, got "
                        f"{type(self.optimizer).__name__} (clip in its step instead)"
                    )
                own = getattr(self.optimizer, name, None)
                if own is not None and own != v:
                    raise ValueError(
                        f"{who}: expected {name} in one place, got {name}={v!r} here and "
                        f"{name}={own!r} on the optimizer (keep the optimizer's)"
                    )
        return _OptimizerClipping(self.optimizer, clip_norm, clip_value)

    @staticmethod
    def _check_fit_args(epochs, batch_size, validation_split, nan_policy, verbose) -> None:
        who = "Trainer.fit"
        _check_count(who, "epochs", epochs)
        _check_count(who, "batch_size", batch_size)
        split_ok = _is_number(validation_split) and 0.0 <= validation_split < 1.0
        check_hyper(who, "validation_split", validation_split, split_ok, "must be in [0, 1)")
        check_hyper(
            who, "nan_policy", nan_policy, isinstance(nan_policy, str) and nan_policy in _NAN_POLICIES,
            f"must be one of {_NAN_POLICIES}",
        )  # fmt: skip
        verbose_ok = type(verbose) is int and verbose in (0, 1, 2)
        check_hyper(who, "verbose", verbose, verbose_ok, "must be 0, 1 or 2")

    def _train_epoch(self, loader, epoch, cbs, nan_policy, bar) -> dict:
        show_bar = not bar.disable
        state, model, dp = self.state, self.model, self._dp
        model.train()
        for m in self.metrics:
            m.reset()
        start = time.perf_counter()
        lr = float(self.optimizer.param_groups[0]["lr"])
        total_loss, seen, steps, norms = 0.0, 0, 0, []
        for batch, data in enumerate(loader):
            state.batch = batch
            cbs.on_train_batch_begin(batch, {})
            step_logs = self.train_step(data)
            bad = step_logs.pop("rejected", None)
            loss = step_logs.get("loss", math.nan)
            norm = step_logs.get("grad_norm", math.nan)
            n = step_logs["batch_size"] if "batch_size" in step_logs else _rows(data[0])
            if bad is None:
                total_loss += loss * n
                seen += n
                steps += 1
                norms.append(norm)
                state.step += 1
            batch_logs = {"loss": loss, "batch_size": n, "grad_norm": norm, **step_logs}
            cbs.on_train_batch_end(batch, batch_logs)
            if show_bar:
                bar.set_postfix_str(self._postfix(total_loss, seen), refresh=False)
                bar.update(1)
            if bad is not None and not self.stop_training:
                where = f"epoch {epoch + 1}, batch {batch + 1}"  # 1-based, as printed
                if nan_policy == "raise":
                    raise FloatingPointError(
                        f"Trainer.fit: expected a finite {bad}, got "
                        f"{loss if bad == 'loss' else norm if bad == 'gradient norm' else 'NaN/Inf'} "
                        f"at {where} (the step was not applied). Lower the learning rate, "
                        "clip gradients (clip_norm=), or pass nan_policy='skip_batch' or 'stop'"
                    )
                if nan_policy == "stop":
                    self.stop_training = True
                    self.stop_reason = f"nan_policy='stop': non-finite {bad} at {where}"
                else:
                    state.skipped_batches += 1
            if dp is not None:
                self._agree_stop(dp.comm)
            if self.stop_training:
                break
        logs = {"loss": total_loss / seen if seen else math.nan}
        if dp is not None:  # the metrics over every rank's rows (equal on all ranks)
            results = reduce_sums(dp.comm, [], self.metrics)[1]
        else:
            results = [m.result() if seen else math.nan for m in self.metrics]
        for m, result in zip(self.metrics, results):
            logs[m.name] = result if seen else math.nan
        logs["lr"] = lr
        logs["grad_norm"] = float(np.mean(norms)) if norms else math.nan
        logs["grad_norm_max"] = float(np.max(norms)) if norms else math.nan
        logs["skipped_batches"] = state.skipped_batches
        logs["_steps"] = steps
        logs["_start"] = start
        return logs

    # ------------------------------------------------------------------ the steps
    def _prepare_steps(self) -> None:
        """What ``train_step`` works on, found once (a tree walk per step costs ~0.2 ms): the
        parameters and the buffer guard. ``fit`` calls it; a ``train_step`` called on its own
        (a hand-written loop) calls it the first time."""
        all_params = self.model.parameters()
        self._params = [p for p in all_params if p.requires_grad]
        self._all_params = all_params
        self._buffers = _BufferGuard(self.model)  # a rejected batch leaves them unchanged

    def train_step(self, batch) -> dict:
        """One training step on ``batch`` (``(x, y)`` or ``(x, y, sample_weight)``, as the
        loader gives it); returns the step's logs. Override it to change what a step does.

        The default: zero the gradients, forward, loss (with class and sample weights),
        backward, ``on_after_backward``, the global gradient norm, the optimizer step (which
        clips); then the metrics are updated. A batch whose loss, buffers, gradient norm or
        update is not finite is rejected: nothing of it stays (parameters, buffers, optimizer
        state, gradients) and ``'rejected'`` names what was not finite, for ``nan_policy``.

        Returns:
            ``{'loss': float, 'batch_size': int, 'grad_norm': float, 'rejected': str|None}``;
            ``fit`` averages ``loss`` over the epoch weighted by ``batch_size``, passes every
            key but ``rejected`` to the batch callbacks, and applies ``nan_policy`` to a
            rejected batch after them.
        """
        if self._all_params is None:  # called outside fit
            self._require("train_step", optimizer=True)
            self._prepare_steps()
        xb, yb, wb = self._unpack("fit", batch)
        wb = self._weights(yb, wb, self._lut)
        xb, yb, wb = self._on_model_device(xb, yb, wb)
        for p in self._all_params:  # model.zero_grad(), without walking the module tree
            p.grad.fill(0)
        buffers = self._buffers
        buffers.snapshot()
        try:
            pred, yb, loss, norm, bad = self._forward_backward_step(xb, yb, wb)
        except BaseException:
            buffers.restore()  # an exception rejects the batch too: nothing of it stays
            raise
        if bad is None:
            if self.metrics:
                y_host, pred_host = self._host_pair(yb, pred)
                for m in self.metrics:
                    m.update(y_host, pred_host)
        else:
            buffers.restore()  # the forward pass moved the running statistics: undo it
            for p in self._all_params:  # the step is skipped: leave no poisoned gradient behind
                p.grad.fill(0)
        return {"loss": loss, "batch_size": _rows(xb), "grad_norm": norm, "rejected": bad}

    def _forward_backward_step(self, xb, yb, wb):
        """One forward, backward and step; returns ``(pred, target, loss, norm, bad)`` where
        ``bad`` names what was not finite (the loss, the gradient norm, the update) or is None."""
        model, loss_fn, optimizer, dp = self.model, self.loss, self.optimizer, self._dp
        pred = model(xb)
        yb = align_target(loss_fn, pred, yb)
        loss = float(_loss(loss_fn, pred, yb, wb))
        norm = math.nan
        bad = None if math.isfinite(loss) else "loss"
        if bad is None and not self._buffers.finite():  # e.g. a variance that overflowed
            bad = "buffer (running statistic)"
        if bad is None:
            needs_input_grad = model.needs_input_grad
            model.needs_input_grad = False  # fit never uses dL/dx: the first layer skips it
            try:
                model.backward(loss_fn.backward())
            finally:
                model.needs_input_grad = needs_input_grad
        if dp is not None:  # mean gradients and loss over ranks: every rank decides alike
            # a rank whose batch is bad for any reason sends NaN: every rank then rejects it
            shared = dp.average_loss_and_gradients(loss if bad is None else math.nan)
            if bad is None and not math.isfinite(shared):
                bad = "loss"  # on another rank
            loss = shared if bad is None or bad == "loss" else loss
        if bad is None:
            self._callbacks.on_after_backward(self.state.batch, {"loss": loss})
            norm = total_norm([p.grad for p in self._params])
            if not math.isfinite(norm):
                bad = "gradient norm"
        if bad is None:
            try:
                optimizer.step()  # clips (clip_norm/clip_value), and writes nothing when the
            except NonFiniteUpdateError:  # update would not be finite
                bad = "update"
        return pred, yb, loss, norm, bad

    def test_step(self, batch) -> dict:
        """One evaluation step on ``batch`` (``(x, y[, sample_weight])``), run under
        ``nf.no_grad()`` in eval mode: forward, loss, and the update of the metrics being
        accumulated (``self.eval_metrics``). Returns ``{'loss': float, 'batch_size': int}``;
        override it to change what an evaluation step does."""
        xb, yb, wb = self._on_model_device(*self._unpack(self._who, batch))
        pred = self.model(xb)
        yb = align_target(self.loss, pred, yb)
        loss = _loss(self.loss, pred, yb, wb)
        if self.eval_metrics:
            y_host, pred_host = self._host_pair(yb, pred)
            for m in self.eval_metrics:
                m.update(y_host, pred_host)
        return {"loss": float(loss), "batch_size": _rows(xb)}

    def _on_model_device(self, *values) -> tuple:
        """``values`` (a batch's inputs, targets, weights) moved to the model's device, when
        ``model.to`` put it on one other than the CPU."""
        device = self.model._device
        return values if device is None else to_device(values, device)

    def _host_pair(self, y, pred) -> tuple:
        """Targets and predictions for the metrics, which compute on the host."""
        return (y, pred) if self.model._device is None else to_device((y, pred), "cpu")

    def predict_step(self, x):
        """The model's output for one batch of inputs ``x`` (under ``nf.no_grad()``, in eval
        mode); override it to post-process predictions."""
        return self.model(x)

    def _agree_stop(self, comm) -> None:
        self.stop_training, self.stop_reason = agree_stop(
            comm, self.stop_training, self.stop_reason
        )

    def _postfix(self, total_loss: float, seen: int) -> str:
        parts = [f"loss {total_loss / seen:.4f}" if seen else "loss nan"]
        parts += [f"{m.name} {m.result():.4f}" for m in self.metrics if seen]
        return " ".join(parts)

    def _epoch_line(self, epoch: int, epochs: int, logs: dict, short: bool = False) -> str:
        parts = [] if short else [f"epoch {epoch + 1}/{epochs}", f"{logs['time']:.2f}s"]
        for key, value in logs.items():
            if key in ("time", "grad_norm_max", "skipped_batches"):
                continue
            if short and key in ("lr", "grad_norm"):
                continue
            parts.append(
                f"{key} {value:.4g}" if key in ("lr", "grad_norm") else f"{key} {value:.4f}"
            )
        return " - ".join(parts)

    # ------------------------------------------------------------------ evaluate / predict
    def _evaluate(self, data, batch_size, who, cbs=None) -> dict:
        if isinstance(data, DataLoader):
            loader = data
        elif isinstance(data, (tuple, list)) and len(data) in (2, 3):
            loader = DataLoader(ArrayDataset(*data), batch_size)
        else:
            raise TypeError(
                f"Trainer.{who}: expected validation data as (x, y), (x, y, sample_weight) or "
                f"a DataLoader, got {type(data).__name__}"
            )
        dist = self._dist()
        if dist is not None:  # data-parallel: each rank evaluates its share of the rows
            loader = shard_for_evaluation(loader, dist)
        metrics = [copy.deepcopy(m) for m in self.metrics]
        for m in metrics:
            m.reset()
        self.eval_metrics, self._who = metrics, who
        if cbs is not None:
            cbs.on_test_begin({})
        was_training = self.model.training
        self.model.eval()
        total, seen = 0.0, 0
        try:
            with no_grad():  # nothing is saved for a backward that will not come
                for batch, data_batch in enumerate(loader):
                    if cbs is not None:
                        cbs.on_test_batch_begin(batch, {})
                    step_logs = self.test_step(data_batch)
                    n = step_logs["batch_size"]
                    total += float(step_logs["loss"]) * n
                    seen += n
                    if cbs is not None:
                        cbs.on_test_batch_end(batch, step_logs)
        finally:
            self.model.train(was_training)
        if dist is not None:  # sums over ranks: what one process gets on all the rows
            (total, seen), results = reduce_sums(dist, [total, seen], metrics)
        else:
            results = [m.result() for m in metrics]
        if not seen:
            raise ValueError(f"Trainer.{who}: expected at least one row to evaluate, got none")
        out = {"loss": total / seen}
        out.update({m.name: r for m, r in zip(metrics, results)})
        if cbs is not None:
            cbs.on_test_end(dict(out))
        return out

    @_on_the_models_device
    def evaluate(
        self, x, y=None, *, batch_size: int = 256, sample_weight=None, callbacks=()
    ) -> dict:
        """The loss and every metric over ``(x, y)`` (or a DataLoader), batched, in eval mode
        (the previous mode is restored) and under ``nf.no_grad()``. Returns
        ``{'loss': ..., '<metric>': ...}``. With a communicator, each rank evaluates a share
        of the rows and every rank gets the results over all of them. ``callbacks`` get the
        ``on_test_*`` hooks."""
        self._require("evaluate", optimizer=False)
        _check_count("Trainer.evaluate", "batch_size", batch_size)
        loader = self._loader("evaluate", x, y, sample_weight, batch_size, False, None)
        cbs = CallbackList(callbacks, self) if callbacks else None
        return self._evaluate(loader, batch_size, "evaluate", cbs)

    @_on_the_models_device
    def predict(
        self, x, *, batch_size: int = 256, callbacks=(), device_output: bool = False
    ) -> np.ndarray:
        """The model's outputs for ``x`` (ndarray, scipy.sparse matrix or DataLoader whose
        batches start with x), batched, in eval mode (the previous mode is restored) and under
        ``nf.no_grad()`` (no activation is kept for backward). Needs no loss or optimizer:
        ``nf.Trainer(model).predict(x)``. ``callbacks`` get the ``on_predict_*`` hooks. A
        model on a GPU gets each batch moved there, and its outputs come back as numpy arrays
        unless ``device_output=True`` keeps them on the device."""
        _check_count("Trainer.predict", "batch_size", batch_size)
        if isinstance(x, DataLoader):
            batches = (b[0] if isinstance(b, (tuple, list)) else b for b in x)
        else:
            if not sparse.issparse(x):
                x = take_rows(x, slice(None))  # an array, or a list/dict of them
                if getattr(x, "ndim", 1) == 0:
                    raise ShapeError(
                        "Trainer.predict: expected inputs with a batch axis, got a scalar"
                    )
            else:
                x = x.tocsr()
            batches = (
                take_rows(x, slice(i, i + batch_size)) for i in range(0, _rows(x), batch_size)
            )
        cbs = CallbackList(callbacks, self) if callbacks else None
        if cbs is not None:
            cbs.on_predict_begin({})
        was_training = self.model.training
        self.model.eval()
        outputs = []
        try:
            with no_grad():  # nothing is saved for backward: memory is released batch by batch
                for batch, xb in enumerate(batches):
                    if cbs is not None:
                        cbs.on_predict_batch_begin(batch, {})
                    (xb,) = self._on_model_device(xb)
                    outputs.append(_as_output(self.predict_step(xb), not device_output))
                    if cbs is not None:
                        cbs.on_predict_batch_end(batch, {"batch_size": _rows(xb)})
        finally:
            self.model.train(was_training)
        if not outputs:
            raise ValueError("Trainer.predict: expected at least one row, got none")
        if cbs is not None:
            cbs.on_predict_end({})
        if isinstance(outputs[0], (tuple, dict)):  # several outputs: each one concatenated
            keys = outputs[0].keys() if isinstance(outputs[0], dict) else range(len(outputs[0]))
            joined = {k: _concatenate([o[k] for o in outputs]) for k in keys}
            return joined if isinstance(outputs[0], dict) else tuple(joined.values())
        return _concatenate(outputs)


class _OptimizerClipping:
    """Sets fit's clip_norm/clip_value on the optimizer for the duration of fit, then puts
    the optimizer's own settings back."""

    def __init__(self, optimizer, clip_norm, clip_value):
        self.optimizer, self.clip_norm, self.clip_value = optimizer, clip_norm, clip_value

    def __enter__(self):
        opt = self.optimizer
        self.saved = (getattr(opt, "clip_norm", None), getattr(opt, "clip_value", None))
        if self.clip_norm is not None:
            opt.clip_norm = self.clip_norm
        if self.clip_value is not None:
            opt.clip_value = self.clip_value
        return self

    def __exit__(self, *exc) -> None:
        if self.clip_norm is not None or self.clip_value is not None:
            self.optimizer.clip_norm, self.optimizer.clip_value = self.saved
