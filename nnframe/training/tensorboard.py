"""The :class:`TensorBoard` callback: training curves, learning rate, weight and gradient
histograms and hyper-parameters, written as TensorBoard event files through ``tensorboardX``
(``pip install 'nnframe[tensorboard]'``, then ``tensorboard --logdir runs``).

``tensorboardX`` is imported when training starts, so ``nnframe.TensorBoard`` exists (and
pickles, and configures) without it.
"""

from __future__ import annotations

import numbers

import numpy as np

from nnframe.core.backend import to_numpy
from nnframe.core.errors import check_hyper
from nnframe.training.callbacks import Callback

__all__ = ["TensorBoard"]

# epoch-log keys that are bookkeeping, not curves
_SKIPPED = ("time", "skipped_batches", "grad_norm_max")


class TensorBoard(Callback):
    """Writes what :class:`nnframe.Trainer` logs as TensorBoard event files, like Keras'
    ``callbacks.TensorBoard`` and PyTorch's ``SummaryWriter``.

    Tags (steps are 0-based epochs, or optimizer steps for ``batch/``):

    - ``<name>/train`` and ``<name>/val`` for the loss and every metric (``loss/train``,
      ``accuracy/val``...), once per epoch;
    - ``lr`` (the rate used during the epoch) and ``grad_norm`` (its mean global gradient norm);
    - ``batch/loss`` and ``batch/grad_norm`` at every ``update_freq``-th step when
      ``update_freq`` is an int;
    - ``weights/<parameter>`` at the end of the epoch and ``grads/<parameter>`` (the epoch's
      first step, before clipping) as histograms, every ``histogram_freq`` epochs;
    - the hyper-parameters (TensorBoard's HPARAMS tab) when training ends: the optimizer's
      scalar options, the loss, the parameter count and ``hparams``, with the last epoch's
      values as ``hparam/<name>`` metrics.

    Under data-parallel training only rank 0 writes (the other ranks skip every hook).

    Args:
        log_dir: the run's directory (created as needed; each ``fit`` adds an event file).
        update_freq: ``'epoch'``, or an int N to also write the batch loss every N steps.
        histogram_freq: write histograms every N epochs (0: never).
        hparams: extra hyper-parameters to record (numbers, strings, bools; others as text).
        flush_secs: how often tensorboardX flushes to disk.

    Example:
        >>> import nnframe as nf
        >>> nf.TensorBoard("runs/mlp", update_freq=10, histogram_freq=5, hparams={"batch": 32})
        TensorBoard(log_dir='runs/mlp', update_freq=10, histogram_freq=5)
    """

    def __init__(
        self,
        log_dir="runs",
        *,
        update_freq: str | int = "epoch",
        histogram_freq: int = 0,
        hparams: dict | None = None,
        flush_secs: int = 10,
    ):
        ok = update_freq == "epoch" or (
            isinstance(update_freq, numbers.Integral) and not isinstance(update_freq, bool)
            and update_freq >= 1
        )  # fmt: skip
        check_hyper("TensorBoard", "update_freq", update_freq, ok, "must be 'epoch' or an int >= 1")
        check_hyper(
            "TensorBoard", "histogram_freq", histogram_freq,
            isinstance(histogram_freq, numbers.Integral) and histogram_freq >= 0, "must be >= 0",
        )  # fmt: skip
        if hparams is not None and not isinstance(hparams, dict):
            raise TypeError(
                f"TensorBoard: expected hparams to be a dict, got {type(hparams).__name__}"
            )
        self.log_dir = str(log_dir)
        self.update_freq = update_freq
        self.histogram_freq = int(histogram_freq)
        self.hparams = dict(hparams or {})
        self.flush_secs = flush_secs
        self.writer = None
        self._step = 0
        self._epoch = 0
        self._last_logs: dict = {}

    def __repr__(self) -> str:
        return (
            f"TensorBoard(log_dir={self.log_dir!r}, update_freq={self.update_freq!r}, "
            f"histogram_freq={self.histogram_freq})"
        )

    def _active(self) -> bool:
        """Writing: this is rank 0 (or a single process) and training has started."""
        return self.writer is not None

    def _histogram_epoch(self, epoch: int) -> bool:
        return self.histogram_freq > 0 and epoch % self.histogram_freq == 0

    # ------------------------------------------------------------------ hooks
    def on_train_begin(self, logs) -> None:
        self._step = 0
        self._last_logs = {}
        if not getattr(self.trainer, "is_root", True):  # data-parallel: rank 0 alone writes
            self.writer = None
            return
        try:
            from tensorboardX import SummaryWriter
        except ImportError as error:
            raise ImportError(
                "TensorBoard: expected tensorboardX to be installed, got none. "
                "Install it with: pip install 'nnframe[tensorboard]'"
            ) from error
        self.writer = SummaryWriter(logdir=self.log_dir, flush_secs=self.flush_secs)

    def on_epoch_begin(self, epoch, logs) -> None:
        self._epoch = epoch

    def on_after_backward(self, batch, logs) -> None:
        if self._active() and batch == 0 and self._histogram_epoch(self._epoch):
            for name, p in self.trainer.model.named_parameters():
                if p.requires_grad:
                    self.writer.add_histogram(f"grads/{name}", to_numpy(p.grad), self._epoch)

    def on_batch_end(self, batch, logs) -> None:
        step = self._step
        self._step += 1
        if not self._active() or self.update_freq == "epoch" or step % self.update_freq:
            return
        for key in ("loss", "grad_norm"):
            value = logs.get(key)
            if value is not None and np.isfinite(value):
                self.writer.add_scalar(f"batch/{key}", float(value), step)

    def on_epoch_end(self, epoch, logs) -> None:
        if not self._active():
            return
        for key, value in logs.items():
            if key not in _SKIPPED and isinstance(value, numbers.Real):
                self.writer.add_scalar(_tag(key), float(value), epoch)
        if self._histogram_epoch(epoch):
            for name, p in self.trainer.model.named_parameters():
                self.writer.add_histogram(f"weights/{name}", to_numpy(p.data), epoch)
        self._last_logs = {k: v for k, v in logs.items() if isinstance(v, numbers.Real)}

    def on_train_end(self, logs) -> None:
        if not self._active():
            return
        try:
            metrics = {
                f"hparam/{k}": float(v)
                for k, v in self._last_logs.items()
                if k not in _SKIPPED and k not in ("lr", "grad_norm") and np.isfinite(v)
            }
            if metrics:
                self._write_hparams(metrics)
        finally:
            self.writer.close()
            self.writer = None

    # ------------------------------------------------------------------ hyper-parameters
    def run_hparams(self) -> dict:
        """The hyper-parameters recorded for this run: the optimizer's class and scalar
        options (group 0), the loss, the number of parameters, then ``hparams``."""
        trainer = self.trainer
        out: dict = {"optimizer": type(trainer.optimizer).__name__}
        for key, value in trainer.optimizer.param_groups[0].items():
            if key != "params":
                out[key] = value
        out["loss"] = repr(trainer.loss)
        out["parameters"] = int(sum(p.data.size for p in trainer.model.parameters()))
        out.update(self.hparams)
        return {k: _hparam_value(v) for k, v in out.items()}

    def _write_hparams(self, metrics: dict) -> None:
        from tensorboardX.summary import hparams

        experiment, start, end = hparams(self.run_hparams(), metrics)
        for summary in (experiment, start, end):
            self.writer.file_writer.add_summary(summary)
        for tag, value in metrics.items():
            self.writer.add_scalar(tag, value, self._epoch)


def _tag(key: str) -> str:
    """``val_accuracy`` -> ``accuracy/val``, ``loss`` -> ``loss/train``; ``lr`` and
    ``grad_norm`` keep their names."""
    if key in ("lr", "grad_norm"):
        return key
    if key.startswith("val_"):
        return f"{key[4:]}/val"
    return f"{key}/train"


def _hparam_value(value):
    """What TensorBoard's hparams take: bool, number or string (anything else as text)."""
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, numbers.Real):
        return float(value) if isinstance(value, (float, np.floating)) else int(value)
    if isinstance(value, str):
        return value
    return str(value)
