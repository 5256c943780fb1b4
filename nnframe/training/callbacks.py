"""Callbacks: code that :class:`nnframe.Trainer` runs at the start and end of training, of each
epoch and of each batch, and right after each backward pass (before clipping and the step).

A callback subclasses :class:`Callback` and overrides the hooks it needs. ``self.trainer`` is
the running Trainer: ``trainer.model``, ``trainer.optimizer``, ``trainer.history``; setting
``trainer.stop_training = True`` ends training after the current batch (``stop_reason`` says
why). Epoch logs hold ``loss``, the metrics, ``val_*`` values, ``lr`` and ``grad_norm``; batch
logs hold ``loss``, ``batch_size`` and ``grad_norm``.
"""

from __future__ import annotations

import csv
import math
import os
import string
import tempfile
import warnings
from collections.abc import Callable

import numpy as np

from nnframe.core.errors import check_hyper
from nnframe.io import schema as S

__all__ = [
    "Callback",
    "CallbackList",
    "HOOKS",
    "as_callback",
    "EarlyStopping",
    "ModelCheckpoint",
    "LearningRateScheduler",
    "ReduceLROnPlateau",
    "TerminateOnNaN",
    "CSVLogger",
    "GradientMonitor",
    "GradientWarning",
    "LambdaCallback",
    "save_weights",
]

_MAX_LIKE = ("acc", "precision", "recall", "f1", "r2", "auc")


class Callback:
    """Base class: every hook does nothing.

    A callback's resumable state is declared, never guessed: ``state_fields`` maps each
    attribute a checkpoint saves to the :mod:`nnframe.io.schema` it must match. ``state_dict()``
    returns those attributes; ``load_state_dict()`` validates the whole state first (unknown
    names, wrong types and ranges raise :class:`nnframe.io.schema.SchemaError` and change nothing),
    then sets only the declared attributes. Paths, functions and settings are never restored.
    """

    trainer = None
    #: the attributes saved in a checkpoint, each with the schema its stored value must match
    state_fields: dict = {}
    #: attributes holding an object with its own state_dict (a scheduler), saved through it
    state_objects: tuple = ()

    def set_trainer(self, trainer) -> None:
        self.trainer = trainer

    def state_dict(self) -> dict:
        """The declared ``state_fields`` that are set, and the ``state_dict()`` of each
        ``state_objects`` attribute (copies are made by the checkpoint)."""
        state = {name: getattr(self, name) for name in self.state_fields if hasattr(self, name)}
        for name in self.state_objects:
            obj = getattr(self, name, None)
            if hasattr(obj, "state_dict"):
                state[name] = obj.state_dict()
        return state

    def check_state(self, state) -> dict:
        """``state`` validated against ``state_fields`` (and each object's own check), nothing
        applied; returns the cleaned state for :meth:`apply_state`. Raises SchemaError."""
        who = f"{type(self).__name__}.load_state_dict"
        fields = {**self.state_fields, **{name: S.Any() for name in self.state_objects}}
        checked = S.validate(S.Record(fields, optional=fields), state, who)
        for name in self.state_objects:
            if name not in checked:
                continue
            obj = getattr(self, name, None)
            if hasattr(obj, "check_state_dict"):
                checked[name] = ("checked", obj.check_state_dict(checked[name]))
            elif hasattr(obj, "load_state_dict"):
                checked[name] = ("load", checked[name])
            else:
                raise S.SchemaError(f"{who}: {name}: expected no state, got some")
        return checked

    def apply_state(self, checked: dict) -> None:
        """Sets the attributes of a state returned by :meth:`check_state`."""
        for name, value in checked.items():
            if name in self.state_objects:
                how, inner = value
                obj = getattr(self, name)
                obj.apply_state_dict(inner) if how == "checked" else obj.load_state_dict(inner)
            else:
                setattr(self, name, value)

    def load_state_dict(self, state) -> None:
        """Restores a state from :meth:`state_dict`: validated completely, then applied."""
        self.apply_state(self.check_state(state))

    # ------------------------------------------------------------------ the hooks
    # Every hook Trainer calls is a method here (HOOKS lists them); a subclass that defines an
    # on_* method with any other name is refused when the class is created (a typo such as
    # on_epoch_ends would otherwise never run).

    def on_train_begin(self, logs: dict) -> None:
        """At the start of ``fit`` (after the epoch-log keys are known, before resuming)."""

    def on_train_end(self, logs: dict) -> None:
        """At the end of ``fit``, with the last epoch's logs."""

    def on_epoch_begin(self, epoch: int, logs: dict) -> None:
        """At the start of each training epoch (0-based)."""

    def on_epoch_end(self, epoch: int, logs: dict) -> None:
        """After each epoch's training and validation: ``logs`` holds the epoch's values."""

    def on_train_batch_begin(self, batch: int, logs: dict) -> None:
        """Before each training step (the default calls :meth:`on_batch_begin`)."""
        self.on_batch_begin(batch, logs)

    def on_train_batch_end(self, batch: int, logs: dict) -> None:
        """After each training step, with ``loss``, ``batch_size`` and ``grad_norm`` (the
        default calls :meth:`on_batch_end`)."""
        self.on_batch_end(batch, logs)

    def on_batch_begin(self, batch: int, logs: dict) -> None:
        """Keras' older name of :meth:`on_train_batch_begin` (called by its default)."""

    def on_batch_end(self, batch: int, logs: dict) -> None:
        """Keras' older name of :meth:`on_train_batch_end` (called by its default)."""

    def on_after_backward(self, batch: int, logs: dict) -> None:
        """After ``model.backward`` filled the gradients, before clipping and the step."""

    def on_test_begin(self, logs: dict) -> None:
        """At the start of ``evaluate`` and of each epoch's validation in ``fit``."""

    def on_test_end(self, logs: dict) -> None:
        """At the end of an evaluation, with its results."""

    def on_test_batch_begin(self, batch: int, logs: dict) -> None:
        """Before each evaluation step."""

    def on_test_batch_end(self, batch: int, logs: dict) -> None:
        """After each evaluation step, with ``loss`` and ``batch_size``."""

    def on_predict_begin(self, logs: dict) -> None:
        """At the start of ``predict``."""

    def on_predict_end(self, logs: dict) -> None:
        """At the end of ``predict``."""

    def on_predict_batch_begin(self, batch: int, logs: dict) -> None:
        """Before each prediction step."""

    def on_predict_batch_end(self, batch: int, logs: dict) -> None:
        """After each prediction step, with ``batch_size``."""

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        unknown = [
            name for name, value in vars(cls).items()
            if name.startswith("on_") and callable(value) and name not in HOOKS
        ]  # fmt: skip
        if unknown:
            raise TypeError(
                f"{cls.__name__}: expected hook methods among {list(HOOKS)}, got "
                f"{unknown} (a misspelled hook would never be called; rename it, or drop the "
                "on_ prefix of a helper)"
            )

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


#: the hooks Trainer calls, in the order of a training run
HOOKS = (
    "on_train_begin",
    "on_train_end",
    "on_epoch_begin",
    "on_epoch_end",
    "on_train_batch_begin",
    "on_train_batch_end",
    "on_batch_begin",
    "on_batch_end",
    "on_after_backward",
    "on_test_begin",
    "on_test_end",
    "on_test_batch_begin",
    "on_test_batch_end",
    "on_predict_begin",
    "on_predict_end",
    "on_predict_batch_begin",
    "on_predict_batch_end",
)


def as_callback(obj, who: str = "Trainer.fit") -> Callback:
    """``obj`` as a Callback: callbacks unchanged; a learning-rate scheduler from
    :mod:`nnframe.optim` wrapped in :class:`LearningRateScheduler` (per epoch; ``OneCycleLR``
    per step, as it is built to run); anything else refused."""
    if isinstance(obj, Callback):
        return obj
    name = type(obj).__name__
    if name == "ReduceLROnPlateau" and hasattr(obj, "step"):  # its step needs the monitored value
        raise TypeError(
            f"{who}: expected Callback objects, got the scheduler ReduceLROnPlateau (it needs "
            "a monitored value: pass nnframe.callbacks.ReduceLROnPlateau(monitor=...) instead)"
        )
    if hasattr(obj, "step") and hasattr(obj, "get_last_lr") and hasattr(obj, "optimizer"):
        return LearningRateScheduler(obj, interval="step" if name == "OneCycleLR" else "epoch")
    raise TypeError(f"{who}: expected Callback objects (or nnframe.optim schedulers), got {name}")


class CallbackList:
    """Calls each hook on every callback, in order. Schedulers are wrapped (:func:`as_callback`)."""

    def __init__(self, callbacks, trainer):
        if isinstance(callbacks, Callback) or hasattr(callbacks, "get_last_lr"):
            callbacks = [callbacks]  # one callback (or scheduler) on its own
        self.callbacks = [as_callback(cb) for cb in (callbacks or [])]
        for cb in self.callbacks:
            cb.set_trainer(trainer)

    def on_train_begin(self, logs: dict) -> None:
        for cb in self.callbacks:
            cb.on_train_begin(logs)

    def on_train_end(self, logs: dict) -> None:
        for cb in self.callbacks:
            cb.on_train_end(logs)

    def on_epoch_begin(self, epoch: int, logs: dict) -> None:
        for cb in self.callbacks:
            cb.on_epoch_begin(epoch, logs)

    def on_epoch_end(self, epoch: int, logs: dict) -> None:
        for cb in self.callbacks:
            cb.on_epoch_end(epoch, logs)

    def on_train_batch_begin(self, batch: int, logs: dict) -> None:
        for cb in self.callbacks:
            cb.on_train_batch_begin(batch, logs)

    def on_train_batch_end(self, batch: int, logs: dict) -> None:
        for cb in self.callbacks:
            cb.on_train_batch_end(batch, logs)

    def on_after_backward(self, batch: int, logs: dict) -> None:
        for cb in self.callbacks:
            cb.on_after_backward(batch, logs)

    def on_test_begin(self, logs: dict) -> None:
        for cb in self.callbacks:
            cb.on_test_begin(logs)

    def on_test_end(self, logs: dict) -> None:
        for cb in self.callbacks:
            cb.on_test_end(logs)

    def on_test_batch_begin(self, batch: int, logs: dict) -> None:
        for cb in self.callbacks:
            cb.on_test_batch_begin(batch, logs)

    def on_test_batch_end(self, batch: int, logs: dict) -> None:
        for cb in self.callbacks:
            cb.on_test_batch_end(batch, logs)

    def on_predict_begin(self, logs: dict) -> None:
        for cb in self.callbacks:
            cb.on_predict_begin(logs)

    def on_predict_end(self, logs: dict) -> None:
        for cb in self.callbacks:
            cb.on_predict_end(logs)

    def on_predict_batch_begin(self, batch: int, logs: dict) -> None:
        for cb in self.callbacks:
            cb.on_predict_batch_begin(batch, logs)

    def on_predict_batch_end(self, batch: int, logs: dict) -> None:
        for cb in self.callbacks:
            cb.on_predict_batch_end(batch, logs)


def _writes_files(trainer) -> bool:
    """False on the ranks other than 0 of a data-parallel fit (``trainer.is_root``): callbacks
    keep their state on every rank, but only rank 0 writes."""
    return getattr(trainer, "is_root", True)


def _monitored(who: str, monitor: str, logs: dict) -> float:
    if monitor not in logs:
        hint = " Pass validation_data or validation_split, or" if monitor.startswith("val_") else ""
        raise KeyError(
            f"{who}: expected {monitor!r} in the epoch logs, got {sorted(logs)}.{hint} "
            f"choose monitor= among those"
        )
    return float(logs[monitor])


def _check_monitor(who: str, monitor: str, trainer) -> None:
    """Raises the error of :func:`_monitored` before training when ``monitor`` will not be in
    the epoch logs (``trainer.epoch_log_keys``: what ``fit`` will log)."""
    keys = getattr(trainer, "epoch_log_keys", None)
    if keys is not None and monitor not in keys:
        _monitored(who, monitor, dict.fromkeys(keys, 0.0))


def check_path_template(who: str, path: str, trainer) -> None:
    """Raises before training when ``path`` names a log key that will not exist, or has a
    format the epoch logs cannot fill (``{epoch}`` and the keys of ``trainer.epoch_log_keys``)."""
    keys = getattr(trainer, "epoch_log_keys", None)
    if keys is None:
        return
    try:
        fields = [f for _, f, _, _ in string.Formatter().parse(path) if f is not None]
    except ValueError as e:
        raise ValueError(f"{who}: expected a path template, got {path!r} ({e})") from None
    for field in fields:
        name = field.split(".")[0].split("[")[0]
        if name != "epoch" and name not in keys:
            hint = " Pass validation_data or validation_split." if name.startswith("val_") else ""
            raise KeyError(
                f"{who}: expected the path's fields among epoch and the epoch logs "
                f"{sorted(keys)}, got {name!r}.{hint}"
            )
    try:
        example = path.format(epoch=1, **dict.fromkeys(keys, 0.0))
    except (ValueError, KeyError, IndexError, AttributeError, TypeError) as e:
        raise ValueError(
            f"{who}: expected a path template the epoch logs fill, got {path!r} ({e})"
        ) from None
    directory = os.path.dirname(os.path.abspath(example))
    writes = _writes_files(trainer)  # data-parallel: only rank 0's folder matters
    if writes and not example.endswith(".npz") and not os.path.isdir(directory):  # npz: makedirs
        raise FileNotFoundError(
            f"{who}: expected the checkpoint folder to exist, got {directory!r} (create it first)"
        )


def _resolve_mode(who: str, mode: str, monitor: str) -> str:
    check_hyper(who, "mode", mode, mode in ("auto", "min", "max"), "must be 'auto', 'min' or 'max'")
    if mode == "auto":
        return "max" if any(k in monitor for k in _MAX_LIKE) else "min"
    return mode


class EarlyStopping(Callback):
    """Stops training when ``monitor`` has not improved by more than ``min_delta`` for
    ``patience`` epochs in a row (as Keras; 0 stops at the first epoch without improvement).

    Args:
        monitor: an epoch-log key ('val_loss', 'val_accuracy', 'loss'...).
        patience: epochs without improvement before stopping.
        min_delta: the smallest change that counts as an improvement.
        mode: 'min', 'max', or 'auto' (max for accuracy-like names, else min).
        restore_best_weights: at the end of training, load the weights of the best epoch.
    """

    state_fields = {
        "best": S.Float(finite=False),
        "best_epoch": S.Nullable(S.Int(min=0)),
        "wait": S.Int(min=0),
        "stopped_epoch": S.Nullable(S.Int(min=0)),
        "best_weights": S.Nullable(S.DictOf(S.Str(), S.Array("biuf", finite=False))),
    }

    def check_state(self, state) -> dict:
        checked = super().check_state(state)
        weights = checked.get("best_weights")
        model = getattr(self.trainer, "model", None)
        if weights is not None and model is not None:  # must load into this model later
            own = {k: v.shape for k, v in model.state_dict().items()}
            got = {k: v.shape for k, v in weights.items()}
            if own != got:
                raise S.SchemaError(
                    f"EarlyStopping.load_state_dict: best_weights: expected the model's keys and "
                    f"shapes, got {len(got)} entries that differ"
                )
        return checked

    def __init__(
        self,
        monitor: str = "val_loss",
        patience: int = 0,
        min_delta: float = 0.0,
        mode: str = "auto",
        restore_best_weights: bool = False,
    ):
        check_hyper("EarlyStopping", "patience", patience, patience >= 0, "must be >= 0")
        check_hyper("EarlyStopping", "min_delta", min_delta, min_delta >= 0, "must be >= 0")
        self.monitor = monitor
        self.patience = int(patience)
        self.min_delta = float(min_delta)
        self.mode = _resolve_mode("EarlyStopping", mode, monitor)
        self.restore_best_weights = restore_best_weights

    def on_train_begin(self, logs) -> None:
        _check_monitor("EarlyStopping", self.monitor, self.trainer)
        self.best = math.inf if self.mode == "min" else -math.inf
        self.best_epoch: int | None = None
        self.best_weights = None
        self.wait = 0
        self.stopped_epoch: int | None = None

    def _improved(self, value: float) -> bool:
        if self.mode == "min":
            return value < self.best - self.min_delta
        return value > self.best + self.min_delta

    def on_epoch_end(self, epoch, logs) -> None:
        value = _monitored("EarlyStopping", self.monitor, logs)
        if self._improved(value):
            self.best, self.best_epoch, self.wait = value, epoch, 0
            if self.restore_best_weights:
                self.best_weights = self.trainer.model.state_dict()
            return
        self.wait += 1
        if self.wait >= max(1, self.patience):  # Keras' count: stop after `patience` bad epochs
            self.stopped_epoch = epoch
            self.trainer.stop_training = True
            self.trainer.stop_reason = (
                f"EarlyStopping: {self.monitor} did not improve for {self.wait} epoch(s) "
                f"(best {self.best:.6g} at epoch {self.best_epoch + 1})"
            )

    def on_train_end(self, logs) -> None:
        if self.restore_best_weights and self.best_weights is not None:
            self.trainer.model.load_state_dict(self.best_weights)


def save_weights(model, path) -> None:
    """Writes ``model``'s state_dict to ``path`` atomically (a temporary file in the same
    directory, then ``os.replace``): as safetensors through :mod:`nnframe.serialization`, or as
    ``.npz`` when the path ends in ``.npz``."""
    path = os.fspath(path)
    if not path.endswith(".npz"):
        try:
            from nnframe.io import serialization
        except ImportError:  # pragma: no cover - serialization is part of nnframe
            serialization = None
        if serialization is not None and hasattr(serialization, "save_weights"):
            serialization.save_weights(model, path)
            return
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=directory, suffix=".npz.tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, **model.state_dict())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


class ModelCheckpoint(Callback):
    """Saves the model's weights after each epoch (or only when ``monitor`` improves).

    Args:
        path: the file; may hold format fields from the epoch logs and ``epoch`` (1-based),
            e.g. ``"ckpt-{epoch:02d}-{val_loss:.3f}.safetensors"``. A ``.npz`` path writes numpy's
            format, anything else safetensors (see :func:`save_weights`).
        monitor: the epoch-log key compared with ``save_best_only``.
        save_best_only: save only when ``monitor`` improves on the best so far.
        mode: 'min', 'max' or 'auto'.

    ``last_saved`` holds the path of the latest file written. Only ``best`` is checkpointed:
    the path is a setting of the callback, never read from a file.
    """

    state_fields = {"best": S.Float(finite=False)}

    def __init__(
        self,
        path,
        monitor: str = "val_loss",
        save_best_only: bool = False,
        mode: str = "auto",
    ):
        self.path = os.fspath(path)
        self.monitor = monitor
        self.save_best_only = save_best_only
        self.mode = _resolve_mode("ModelCheckpoint", mode, monitor)
        self.last_saved: str | None = None

    def on_train_begin(self, logs) -> None:
        check_path_template("ModelCheckpoint", self.path, self.trainer)
        if self.save_best_only:
            _check_monitor("ModelCheckpoint", self.monitor, self.trainer)
        self.best = math.inf if self.mode == "min" else -math.inf

    def on_epoch_end(self, epoch, logs) -> None:
        if self.save_best_only:
            value = _monitored("ModelCheckpoint", self.monitor, logs)
            better = value < self.best if self.mode == "min" else value > self.best
            if not better:
                return
            self.best = value
        path = self.path.format(epoch=epoch + 1, **logs)
        if _writes_files(self.trainer):
            save_weights(self.trainer.model, path)
        self.last_saved = path


class LearningRateScheduler(Callback):
    """Steps a learning-rate scheduler during training.

    Args:
        schedule: an ``nnframe.optim`` scheduler (stepped at the end of each epoch, or of each
            batch with ``interval='step'``), or a function ``schedule(epoch, lr) -> lr`` that
            sets every group's rate at the start of each epoch (Keras' form).
        interval: 'epoch' or 'step'.
    """

    state_objects = ("schedule",)  # a scheduler's position (a function has none)

    def __init__(self, schedule, interval: str = "epoch"):
        check_hyper(
            "LearningRateScheduler", "interval", interval, interval in ("epoch", "step"),
            "must be 'epoch' or 'step'",
        )  # fmt: skip
        if not (hasattr(schedule, "step") or callable(schedule)):
            raise TypeError(
                f"LearningRateScheduler: expected a scheduler or a function (epoch, lr) -> lr, "
                f"got {type(schedule).__name__}"
            )
        self.schedule = schedule
        self.interval = interval
        self._is_scheduler = hasattr(schedule, "step") and hasattr(schedule, "get_last_lr")

    def on_epoch_begin(self, epoch, logs) -> None:
        if not self._is_scheduler:
            groups = self.trainer.optimizer.param_groups
            lr = float(self.schedule(epoch, groups[0]["lr"]))
            for g in groups:
                g["lr"] = lr

    def on_batch_end(self, batch, logs) -> None:
        if self._is_scheduler and self.interval == "step":
            self.schedule.step()

    def on_epoch_end(self, epoch, logs) -> None:
        if self._is_scheduler and self.interval == "epoch":
            self.schedule.step()


class ReduceLROnPlateau(Callback):
    """Lowers the learning rate when ``monitor`` plateaus: a callback around
    :class:`nnframe.optim.ReduceLROnPlateau` (same arguments and PyTorch's count: the rate drops
    after more than ``patience`` bad epochs; ``mode='auto'`` picks max for accuracy-like
    names). ``scheduler`` is the wrapped scheduler, built at the start of fit."""

    state_objects = ("scheduler",)

    def __init__(
        self,
        monitor: str = "val_loss",
        factor: float = 0.1,
        patience: int = 10,
        mode: str = "auto",
        threshold: float = 1e-4,
        threshold_mode: str = "rel",
        cooldown: int = 0,
        min_lr: float = 0.0,
    ):
        check_hyper("ReduceLROnPlateau", "factor", factor, 0 <= factor < 1, "must be in [0, 1)")
        self.monitor = monitor
        self.kwargs = dict(
            mode=_resolve_mode("ReduceLROnPlateau", mode, monitor),
            factor=factor,
            patience=patience,
            threshold=threshold,
            threshold_mode=threshold_mode,
            cooldown=cooldown,
            min_lr=min_lr,
        )
        self.scheduler = None

    def on_train_begin(self, logs) -> None:
        from nnframe.optim.schedulers import ReduceLROnPlateau as Plateau

        _check_monitor("ReduceLROnPlateau", self.monitor, self.trainer)
        self.scheduler = Plateau(self.trainer.optimizer, **self.kwargs)

    def on_epoch_end(self, epoch, logs) -> None:
        self.scheduler.step(_monitored("ReduceLROnPlateau", self.monitor, logs))


class TerminateOnNaN(Callback):
    """Stops training at the first batch whose loss is NaN or infinite (that batch's update is
    never applied: the Trainer checks before stepping)."""

    epoch = 0

    def on_epoch_begin(self, epoch, logs) -> None:
        self.epoch = epoch

    def on_batch_end(self, batch, logs) -> None:
        loss = logs.get("loss")
        if loss is not None and not math.isfinite(loss):
            self.trainer.stop_training = True
            self.trainer.stop_reason = (
                f"TerminateOnNaN: loss {loss} at epoch {self.epoch + 1}, batch {batch + 1}"
            )


class CSVLogger(Callback):
    """Writes one row of epoch logs per epoch to a CSV file (header from the first epoch).

    Args:
        path: the file.
        separator: the field separator.
        append: add to an existing file instead of overwriting it.
    """

    def __init__(self, path, separator: str = ",", append: bool = False):
        self.path = os.fspath(path)
        self.separator = separator
        self.append = append
        self._file = None
        self._writer = None

    def on_train_begin(self, logs) -> None:
        if not _writes_files(self.trainer):  # data-parallel: rank 0 alone writes the log
            return
        exists = self.append and os.path.exists(self.path) and os.path.getsize(self.path) > 0
        try:
            self._file = open(self.path, "a" if self.append else "w", newline="")  # noqa: SIM115
        except OSError as e:  # before the first epoch: say which callback and file
            raise type(e)(
                e.errno, f"CSVLogger: could not open {self.path!r}: {e.strerror}"
            ) from None
        self._writer = None
        self._header_written = exists

    def on_epoch_end(self, epoch, logs) -> None:
        if not _writes_files(self.trainer):
            return
        row = {"epoch": epoch, **logs}
        if self._writer is None:
            self._writer = csv.DictWriter(
                self._file, fieldnames=list(row), delimiter=self.separator, extrasaction="ignore"
            )
            if not self._header_written:
                self._writer.writeheader()
        self._writer.writerow(row)
        self._file.flush()

    def on_train_end(self, logs) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


class GradientWarning(UserWarning):
    """A layer's gradient vanished or exploded (from :class:`GradientMonitor`)."""


class GradientMonitor(Callback):
    """Records every layer's gradient norm at each step and flags vanishing or exploding ones.

    A layer is a module with parameters of its own (``"0"``, ``"block.2"``...); its norm is the
    2-norm of all its trainable parameters' gradients, read right after backward (before any
    clipping). A norm below ``vanishing`` or above ``exploding`` (or NaN) is flagged, with the
    layer named: the classic failure of deep sigmoid networks shows up as the first layers'
    norms collapsing while the last ones stay healthy.

    Args:
        vanishing: norms below this are flagged 'vanishing'.
        exploding: norms above this (or non-finite) are flagged 'exploding'.
        every: record every ``every``-th step.
        warn: issue a :class:`GradientWarning` the first time each layer is flagged.

    Attributes:
        norms: ``{layer name: [norm per recorded step]}``.
        flags: one dict per flag: epoch, step, layer, module, kind, norm.
    """

    def __init__(
        self,
        vanishing: float = 1e-7,
        exploding: float = 1e3,
        every: int = 1,
        warn: bool = True,
    ):
        check_hyper("GradientMonitor", "vanishing", vanishing, vanishing >= 0, "must be >= 0")
        check_hyper(
            "GradientMonitor", "exploding", exploding, exploding > vanishing, "must be > vanishing"
        )
        check_hyper("GradientMonitor", "every", every, int(every) >= 1, "must be >= 1")
        self.vanishing = vanishing
        self.exploding = exploding
        self.every = int(every)
        self.warn = warn

    def on_train_begin(self, logs) -> None:
        self.layers = []
        for name, module in self.trainer.model.named_modules():
            params = [p for _, p in module._own_parameters() if p.requires_grad]
            if params:
                self.layers.append((name or type(module).__name__, module, params))
        self.norms: dict[str, list[float]] = {name: [] for name, _, _ in self.layers}
        self.flags: list[dict] = []
        self._warned: set = set()
        self._step = 0
        self._epoch = 0

    def on_epoch_begin(self, epoch, logs) -> None:
        self._epoch = epoch

    def on_after_backward(self, batch, logs) -> None:
        self._step += 1
        if (self._step - 1) % self.every:
            return
        for name, module, params in self.layers:
            norm = math.sqrt(sum(float(np.dot(p.grad.ravel(), p.grad.ravel())) for p in params))
            self.norms[name].append(norm)
            kind = None
            if not math.isfinite(norm) or norm > self.exploding:
                kind = "exploding"
            elif norm < self.vanishing:
                kind = "vanishing"
            if kind is None:
                continue
            flag = dict(
                epoch=self._epoch, step=self._step, layer=name, module=repr(module).split("\n")[0],
                kind=kind, norm=norm,
            )  # fmt: skip
            self.flags.append(flag)
            if self.warn and (name, kind) not in self._warned:
                self._warned.add((name, kind))
                warnings.warn(self.describe(flag), GradientWarning, stacklevel=2)

    def describe(self, flag: dict) -> str:
        limit = f"< {self.vanishing:g}" if flag["kind"] == "vanishing" else f"> {self.exploding:g}"
        return (
            f"GradientMonitor: {flag['kind']} gradient in layer {flag['layer']!r} "
            f"{flag['module']}: norm {flag['norm']:.3g} {limit} (epoch {flag['epoch'] + 1}, "
            f"step {flag['step']})"
        )

    def flagged_layers(self, kind: str | None = None) -> list[str]:
        """Names of the layers flagged (of one ``kind`` if given), in model order."""
        hit = {f["layer"] for f in self.flags if kind is None or f["kind"] == kind}
        return [name for name, _, _ in self.layers if name in hit]

    def report(self) -> str:
        """One line per layer: the median and range of its recorded norms, and its flags."""
        lines = []
        for name, module, _ in self.layers:
            values = np.array(self.norms[name]) if self.norms[name] else np.zeros(1)
            kinds = sorted({f["kind"] for f in self.flags if f["layer"] == name})
            mark = f"  <- {', '.join(kinds)}" if kinds else ""
            lines.append(
                f"{name:>12} {type(module).__name__:<12} median {np.median(values):.3g} "
                f"[{values.min():.3g}, {values.max():.3g}]{mark}"
            )
        return "\n".join(lines)


class LambdaCallback(Callback):
    """A callback from plain functions: ``LambdaCallback(on_epoch_end=lambda epoch, logs: ...)``.
    Accepts any hook name of :class:`Callback` as a keyword."""

    _HOOKS = HOOKS

    def __init__(self, **hooks: Callable):
        unknown = set(hooks) - set(self._HOOKS)
        if unknown:
            raise TypeError(
                f"LambdaCallback: expected hooks among {list(self._HOOKS)}, got {sorted(unknown)}"
            )
        for name, fn in hooks.items():
            setattr(self, name, fn)
        self.hooks = sorted(hooks)

    def __repr__(self) -> str:
        return f"LambdaCallback({', '.join(self.hooks)})"
