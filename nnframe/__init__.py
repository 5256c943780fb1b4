"""nnframe: a layer-based neural-network framework on numpy; every layer writes its own backward.

The public API is exactly ``__all__``. Sections are grouped by area; keep the marker comments.
"""

from nnframe import init, optim
from nnframe.activations import Identity, ReLU, Sigmoid, Tanh
from nnframe.clip import clip_grad_norm_, clip_grad_value_
from nnframe.containers import Sequential
from nnframe.errors import GradcheckError, ShapeError
from nnframe.gradcheck import check_loss, check_module
from nnframe.layers.dense import Dense
from nnframe.losses import CrossEntropyLoss, Loss, MSELoss
from nnframe.module import Module, StateDictError
from nnframe.parameter import Parameter
from nnframe.random import default_rng, manual_seed

# --- activations: imports ---
# --- losses: imports ---
# --- conv: imports ---
# --- normalization: imports ---
# --- recurrent: imports ---
# --- training: imports ---
# --- serialization: imports ---
# --- distributed: imports ---

__version__ = "0.1.0"

__all__ = [
    # core
    "Module",
    "Parameter",
    "Sequential",
    "Dense",
    "ShapeError",
    "StateDictError",
    "GradcheckError",
    "check_module",
    "check_loss",
    "clip_grad_norm_",
    "clip_grad_value_",
    "manual_seed",
    "default_rng",
    "init",
    "optim",
    # activations
    "ReLU",
    "Sigmoid",
    "Tanh",
    "Identity",
    # --- activations: names ---
    # losses
    "Loss",
    "MSELoss",
    "CrossEntropyLoss",
    # --- losses: names ---
    # --- conv: names ---
    # --- normalization: names ---
    # --- recurrent: names ---
    # --- training: names ---
    # --- serialization: names ---
    # --- distributed: names ---
]
