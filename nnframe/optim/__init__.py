"""Optimizers (one file per algorithm) and learning-rate schedulers."""

from nnframe.optim.adadelta import Adadelta, adadelta_update
from nnframe.optim.adagrad import Adagrad, adagrad_update
from nnframe.optim.adam import Adam, adam_update
from nnframe.optim.adamax import Adamax, adamax_update
from nnframe.optim.adamw import AdamW
from nnframe.optim.lion import Lion, lion_update
from nnframe.optim.nadam import NAdam, nadam_update
from nnframe.optim.optimizer import NonFiniteUpdateError, Optimizer
from nnframe.optim.radam import RAdam, radam_update
from nnframe.optim.rmsprop import RMSprop, rmsprop_update
from nnframe.optim.schedulers import (
    CosineAnnealingLR,
    CosineAnnealingWarmRestarts,
    ExponentialLR,
    LambdaLR,
    LinearLR,
    LRScheduler,
    MultiStepLR,
    OneCycleLR,
    PolynomialLR,
    ReduceLROnPlateau,
    SequentialLR,
    StepLR,
)
from nnframe.optim.sgd import SGD, sgd_update

__all__ = [
    # optimizers and their pure update functions
    "Optimizer",
    "NonFiniteUpdateError",
    "SGD",
    "sgd_update",
    "Adam",
    "AdamW",
    "NAdam",
    "RAdam",
    "Adamax",
    "RMSprop",
    "Adagrad",
    "Adadelta",
    "Lion",
    "adam_update",
    "nadam_update",
    "radam_update",
    "adamax_update",
    "rmsprop_update",
    "adagrad_update",
    "adadelta_update",
    "lion_update",
    # learning-rate schedulers
    "LRScheduler",
    "LambdaLR",
    "StepLR",
    "MultiStepLR",
    "ExponentialLR",
    "CosineAnnealingLR",
    "CosineAnnealingWarmRestarts",
    "LinearLR",
    "OneCycleLR",
    "PolynomialLR",
    "ReduceLROnPlateau",
    "SequentialLR",
]
