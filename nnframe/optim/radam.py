"""RAdam (Liu et al., 2020): Adam with a rectified adaptive learning rate."""

from __future__ import annotations

import math

import numpy as np

from nnframe.optim.optimizer import (
    Optimizer,
    effective_grad,
    lerp_,
    scratch,
    square_avg_,
    zeros_state,
)


def radam_update(
    param: np.ndarray,
    grad: np.ndarray,
    exp_avg: np.ndarray,
    exp_avg_sq: np.ndarray,
    *,
    step: int,
    lr: float,
    beta1: float,
    beta2: float,
    eps: float,
    weight_decay: float = 0.0,
    decoupled_weight_decay: bool = False,
    maximize: bool = False,
    work: tuple[np.ndarray, np.ndarray] | None = None,
) -> None:
    """One RAdam step in place (PyTorch's algorithm); ``step`` (t) counts from 1:

    g = -grad if maximize else grad;  weight decay coupled (g += wd * param) or decoupled
    m = beta1 * m + (1 - beta1) * g;   v = beta2 * v + (1 - beta2) * g^2
    m_hat = m / (1 - beta1^t)
    rho_inf = 2 / (1 - beta2) - 1;   rho_t = rho_inf - 2 t beta2^t / (1 - beta2^t)
    if rho_t > 5:  l = sqrt(1 - beta2^t) / (sqrt(v) + eps)
                   r = sqrt((rho_t - 4)(rho_t - 2) rho_inf / ((rho_inf - 4)(rho_inf - 2) rho_t))
                   param -= lr * m_hat * r * l
    else:          param -= lr * m_hat            (early steps: no adaptive rate)
    """
    w0, w1 = scratch(param, work)
    if weight_decay and decoupled_weight_decay:
        param *= 1.0 - lr * weight_decay
        g = effective_grad(param, grad, 0.0, maximize, w0)
    else:
        g = effective_grad(param, grad, weight_decay, maximize, w0)
    lerp_(exp_avg, g, 1.0 - beta1, w1)
    square_avg_(exp_avg_sq, g, beta2, w1)
    bias_correction1 = 1.0 - beta1**step
    bias_correction2 = 1.0 - beta2**step
    rho_inf = 2.0 / (1.0 - beta2) - 1.0
    rho_t = rho_inf - 2.0 * step * beta2**step / bias_correction2
    if rho_t > 5.0:
        rect = math.sqrt(
            (rho_t - 4) * (rho_t - 2) * rho_inf / ((rho_inf - 4) * (rho_inf - 2) * rho_t)
        )
        denom = np.sqrt(exp_avg_sq, out=w1)
        denom += eps
        np.divide(exp_avg, denom, out=w1)
        w1 *= lr * rect * math.sqrt(bias_correction2) / bias_correction1
    else:
        np.multiply(exp_avg, lr / bias_correction1, out=w1)
    param -= w1


class RAdam(Optimizer):
    """RAdam, as PyTorch's ``torch.optim.RAdam``.

    Args:
        params: parameters or parameter groups.
        lr: learning rate.
        betas: decay rates of the running averages of the gradient and its square.
        eps: added to the denominator for numerical stability.
        weight_decay: weight decay (L2 penalty, or decoupled as AdamW).
        decoupled_weight_decay: decay the weights directly instead of the gradient.
        maximize: ascend instead of descend.
        clip_norm, clip_value: gradient clipping applied before each step.
    """

    elementwise = True  # may update small parameters as one flat vector

    def __init__(
        self,
        params,
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0.0,
        decoupled_weight_decay: bool = False,
        *,
        maximize: bool = False,
        clip_norm: float | None = None,
        clip_value: float | None = None,
    ):
        defaults = dict(
            lr=lr,
            betas=betas,
            eps=eps,
            weight_decay=weight_decay,
            decoupled_weight_decay=decoupled_weight_decay,
            maximize=maximize,
        )
        super().__init__(params, defaults, clip_norm=clip_norm, clip_value=clip_value)

    def init_state(self, p, group) -> dict:
        return {"step": 0, **zeros_state(p, "exp_avg", "exp_avg_sq")}

    def update(self, p, state, group) -> None:
        state["step"] += 1
        moments = state["exp_avg"], state["exp_avg_sq"]
        self.update_with(radam_update, p, group, *moments, step=state["step"])
