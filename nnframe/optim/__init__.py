"""Optimizers (one file per algorithm) and learning-rate schedulers."""

from nnframe.optim.optimizer import Optimizer
from nnframe.optim.sgd import SGD, sgd_update

# --- optimizers: imports (keep this marker) ---

__all__ = [
    "Optimizer",
    "SGD",
    "sgd_update",
    # --- optimizers: names (keep this marker) ---
]
