"""Lion (Chen et al., 2023, "Symbolic Discovery of Optimization Algorithms"): sign updates."""

from __future__ import annotations

import numpy as np

from nnframe.optim.optimizer import Optimizer, effective_grad, lerp_, scratch, zeros_state


def lion_update(
    param: np.ndarray,
    grad: np.ndarray,
    exp_avg: np.ndarray,
    *,
    lr: float,
    beta1: float,
    beta2: float,
    weight_decay: float = 0.0,
    maximize: bool = False,
    work: tuple[np.ndarray, np.ndarray] | None = None,
) -> None:
    """One Lion step in place (the paper's Algorithm 2):

    g = -grad if maximize else grad
    c = beta1 * m + (1 - beta1) * g
    param -= lr * (sign(c) + weight_decay * param)      (decoupled weight decay)
    m = beta2 * m + (1 - beta2) * g
    """
    w0, w1 = scratch(param, work)
    g = effective_grad(param, grad, 0.0, maximize, w0)
    # c = m + (1 - beta1) * (g - m), the interpolation, then only its sign is used
    np.subtract(g, exp_avg, out=w1)
    w1 *= 1.0 - beta1
    w1 += exp_avg
    np.sign(w1, out=w1)
    if weight_decay:
        param *= 1.0 - lr * weight_decay
    w1 *= lr
    param -= w1
    lerp_(exp_avg, g, 1.0 - beta2, w1)


class Lion(Optimizer):
    """Lion: the sign of an interpolated momentum, so every coordinate moves by exactly ``lr``
    (plus decay). Not in PyTorch; the update follows the paper. Use a learning rate 3-10x
    smaller than AdamW's and a weight decay 3-10x larger.

    Args:
        params: parameters or parameter groups.
        lr: learning rate.
        betas: interpolation factor of the update and decay rate of the momentum.
        weight_decay: decoupled weight decay (``param *= 1 - lr * weight_decay``).
        maximize: ascend instead of descend.
        clip_norm, clip_value: gradient clipping applied before each step.
    """

    elementwise = True  # may update small parameters as one flat vector

    def __init__(
        self,
        params,
        lr: float = 1e-4,
        betas: tuple[float, float] = (0.9, 0.99),
        weight_decay: float = 0.0,
        *,
        maximize: bool = False,
        clip_norm: float | None = None,
        clip_value: float | None = None,
    ):
        defaults = dict(lr=lr, betas=betas, weight_decay=weight_decay, maximize=maximize)
        super().__init__(params, defaults, clip_norm=clip_norm, clip_value=clip_value)

    def init_state(self, p, group) -> dict:
        return {"step": 0, **zeros_state(p, "exp_avg")}

    def update(self, p, state, group) -> None:
        state["step"] += 1
        self.update_with(lion_update, p, group, state["exp_avg"])
