"""NAdam (Dozat, 2016): Adam with Nesterov momentum and a momentum-decay schedule."""

from __future__ import annotations

import numpy as np

from nnframe.optim.optimizer import (
    Optimizer,
    effective_grad,
    lerp_,
    scratch,
    square_avg_,
    zeros_state,
)


def nadam_update(
    param: np.ndarray,
    grad: np.ndarray,
    exp_avg: np.ndarray,
    exp_avg_sq: np.ndarray,
    *,
    step: int,
    mu_product: float,
    lr: float,
    beta1: float,
    beta2: float,
    eps: float,
    weight_decay: float = 0.0,
    momentum_decay: float = 4e-3,
    decoupled_weight_decay: bool = False,
    maximize: bool = False,
    work: tuple[np.ndarray, np.ndarray] | None = None,
) -> float:
    """One NAdam step in place (PyTorch's algorithm); ``step`` counts from 1 and
    ``mu_product`` is the product of the previous steps' mu (1.0 before the first step):

    g = -grad if maximize else grad;  weight decay coupled (g += wd * param) or decoupled
    mu_t = beta1 * (1 - 0.5 * 0.96^(t * psi)),  mu_{t+1} likewise,  psi = momentum_decay
    m = beta1 * m + (1 - beta1) * g;   v = beta2 * v + (1 - beta2) * g^2
    denom = sqrt(v / (1 - beta2^t)) + eps
    param -= lr * (1 - mu_t) / (1 - prod_{i<=t} mu_i) * g / denom
           + lr * mu_{t+1} / (1 - prod_{i<=t+1} mu_i) * m / denom

    Returns:
        The new ``mu_product`` (times mu_t), to keep for the next step.
    """
    w0, w1 = scratch(param, work)
    if weight_decay and decoupled_weight_decay:
        param *= 1.0 - lr * weight_decay
        g = effective_grad(param, grad, 0.0, maximize, w0)
    else:
        g = effective_grad(param, grad, weight_decay, maximize, w0)
    mu = beta1 * (1.0 - 0.5 * 0.96 ** (step * momentum_decay))
    mu_next = beta1 * (1.0 - 0.5 * 0.96 ** ((step + 1) * momentum_decay))
    mu_product = mu_product * mu
    lerp_(exp_avg, g, 1.0 - beta1, w1)
    square_avg_(exp_avg_sq, g, beta2, w1)
    denom = np.divide(exp_avg_sq, 1.0 - beta2**step, out=w1)
    np.sqrt(denom, out=denom)
    denom += eps
    # the gradient term (g may live in w0: it is not needed after this)
    np.divide(g, denom, out=w0)
    w0 *= lr * (1.0 - mu) / (1.0 - mu_product)
    param -= w0
    # the momentum term, looking one step ahead
    np.divide(exp_avg, denom, out=w0)
    w0 *= lr * mu_next / (1.0 - mu_product * mu_next)
    param -= w0
    return mu_product


class NAdam(Optimizer):
    """NAdam, as PyTorch's ``torch.optim.NAdam``.

    Args:
        params: parameters or parameter groups.
        lr: learning rate.
        betas: decay rates of the running averages of the gradient and its square.
        eps: added to the denominator for numerical stability.
        weight_decay: weight decay (L2 penalty, or decoupled as AdamW).
        momentum_decay: psi of the momentum schedule.
        decoupled_weight_decay: decay the weights directly (NAdamW) instead of the gradient.
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
        momentum_decay: float = 4e-3,
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
            momentum_decay=momentum_decay,
            decoupled_weight_decay=decoupled_weight_decay,
            maximize=maximize,
        )
        super().__init__(params, defaults, clip_norm=clip_norm, clip_value=clip_value)

    def validate(self, group: dict) -> None:
        super().validate(group)
        self.check_nonnegative(group, "momentum_decay")

    def init_state(self, p, group) -> dict:
        return {"step": 0, "mu_product": 1.0, **zeros_state(p, "exp_avg", "exp_avg_sq")}

    def update(self, p, state, group) -> None:
        state["step"] += 1
        state["mu_product"] = self.update_with(
            nadam_update,
            p,
            group,
            state["exp_avg"],
            state["exp_avg_sq"],
            step=state["step"],
            mu_product=state["mu_product"],
        )
