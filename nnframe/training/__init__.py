"""The training stack: Trainer, History, metrics, data, callbacks, checkpoints and the data-parallel path."""

from nnframe.training.trainer import History, Trainer

__all__ = ["History", "Trainer"]
