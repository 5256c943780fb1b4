"""Adagrad (Duchi et al., 2011): per-coordinate rates from the sum of squared gradients."""

from __future__ import annotations

import numpy as np

from nnframe.optim.optimizer import Optimizer, effective_grad, scratch


def adagrad_update(
    param: np.ndarray,
    grad: np.ndarray,
    state_sum: np.ndarray,
    *,
    step: int,
    lr: float,
    lr_decay: float = 0.0,
    weight_decay: float = 0.0,
    eps: float = 1e-10,
    maximize: bool = False,
    work: tuple[np.ndarray, np.ndarray] | None = None,
) -> None:
    """One Adagrad step in place (PyTorch's algorithm); ``step`` (t) counts from 1:

    g = -grad if maximize else grad;  g += weight_decay * param
    lr_t = lr / (1 + (t - 1) * lr_decay)
    s += g^2
    param -= lr_t * g / (sqrt(s) + eps)
    """
    w0, w1 = scratch(param, work)
    g = effective_grad(param, grad, weight_decay, maximize, w0)
    clr = lr / (1.0 + (step - 1) * lr_decay)
    np.multiply(g, g, out=w1)
    state_sum += w1
    std = np.sqrt(state_sum, out=w1)
    std += eps
    np.divide(g, std, out=w1)
    w1 *= clr
    param -= w1


class Adagrad(Optimizer):
    """Adagrad, as PyTorch's ``torch.optim.Adagrad``.

    Args:
        params: parameters or parameter groups.
        lr: learning rate.
        lr_decay: the rate at step t is ``lr / (1 + (t - 1) * lr_decay)``.
        weight_decay: L2 penalty added to the gradient.
        initial_accumulator_value: starting value of the sum of squared gradients.
        eps: added to the denominator for numerical stability.
        maximize: ascend instead of descend.
        clip_norm, clip_value: gradient clipping applied before each step.
    """

    elementwise = True  # may update small parameters as one flat vector

    def __init__(
        self,
        params,
        lr: float = 1e-2,
        lr_decay: float = 0.0,
        weight_decay: float = 0.0,
        initial_accumulator_value: float = 0.0,
        eps: float = 1e-10,
        *,
        maximize: bool = False,
        clip_norm: float | None = None,
        clip_value: float | None = None,
    ):
        defaults = dict(
            lr=lr,
            lr_decay=lr_decay,
            weight_decay=weight_decay,
            initial_accumulator_value=initial_accumulator_value,
            eps=eps,
            maximize=maximize,
        )
        super().__init__(params, defaults, clip_norm=clip_norm, clip_value=clip_value)

    def validate(self, group: dict) -> None:
        super().validate(group)
        self.check_nonnegative(group, "lr_decay", "initial_accumulator_value")

    def init_state(self, p, group) -> dict:
        s = np.full_like(p.data, group["initial_accumulator_value"])
        return {"step": 0, "sum": s}

    def update(self, p, state, group) -> None:
        state["step"] += 1
        self.update_with(adagrad_update, p, group, state["sum"], step=state["step"])
