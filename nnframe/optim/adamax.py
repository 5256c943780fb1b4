"""Adamax (Kingma and Ba, 2015): Adam with the infinity norm of past gradients."""

from __future__ import annotations

import numpy as np

from nnframe.optim.optimizer import Optimizer, effective_grad, lerp_, scratch, zeros_state


def adamax_update(
    param: np.ndarray,
    grad: np.ndarray,
    exp_avg: np.ndarray,
    exp_inf: np.ndarray,
    *,
    step: int,
    lr: float,
    beta1: float,
    beta2: float,
    eps: float,
    weight_decay: float = 0.0,
    maximize: bool = False,
    work: tuple[np.ndarray, np.ndarray] | None = None,
) -> None:
    """One Adamax step in place (PyTorch's algorithm); ``step`` (t) counts from 1:

    g = -grad if maximize else grad;  g += weight_decay * param
    m = beta1 * m + (1 - beta1) * g
    u = max(beta2 * u, |g| + eps)
    param -= lr / (1 - beta1^t) * m / u
    """
    w0, w1 = scratch(param, work)
    g = effective_grad(param, grad, weight_decay, maximize, w0)
    lerp_(exp_avg, g, 1.0 - beta1, w1)
    exp_inf *= beta2
    np.abs(g, out=w1)
    w1 += eps
    np.maximum(exp_inf, w1, out=exp_inf)
    np.divide(exp_avg, exp_inf, out=w1)
    w1 *= lr / (1.0 - beta1**step)
    param -= w1


class Adamax(Optimizer):
    """Adamax, as PyTorch's ``torch.optim.Adamax``.

    Args:
        params: parameters or parameter groups.
        lr: learning rate.
        betas: decay rates of the running average of the gradient and of the infinity norm.
        eps: added to ``|g|`` for numerical stability.
        weight_decay: L2 penalty added to the gradient.
        maximize: ascend instead of descend.
        clip_norm, clip_value: gradient clipping applied before each step.
    """

    elementwise = True  # may update small parameters as one flat vector

    def __init__(
        self,
        params,
        lr: float = 2e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0.0,
        *,
        maximize: bool = False,
        clip_norm: float | None = None,
        clip_value: float | None = None,
    ):
        defaults = dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay, maximize=maximize)
        super().__init__(params, defaults, clip_norm=clip_norm, clip_value=clip_value)

    def init_state(self, p, group) -> dict:
        return {"step": 0, **zeros_state(p, "exp_avg", "exp_inf")}

    def update(self, p, state, group) -> None:
        state["step"] += 1
        moments = state["exp_avg"], state["exp_inf"]
        self.update_with(adamax_update, p, group, *moments, step=state["step"])
