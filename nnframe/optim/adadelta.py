"""Adadelta (Zeiler, 2012): step sizes from running averages of squared gradients and updates."""

from __future__ import annotations

import numpy as np

from nnframe.optim.optimizer import Optimizer, effective_grad, scratch, square_avg_, zeros_state


def adadelta_update(
    param: np.ndarray,
    grad: np.ndarray,
    square_avg: np.ndarray,
    acc_delta: np.ndarray,
    *,
    lr: float,
    rho: float,
    eps: float,
    weight_decay: float = 0.0,
    maximize: bool = False,
    work: tuple[np.ndarray, np.ndarray] | None = None,
) -> None:
    """One Adadelta step in place (PyTorch's algorithm):

    g = -grad if maximize else grad;  g += weight_decay * param
    v = rho * v + (1 - rho) * g^2
    delta = sqrt(u + eps) / sqrt(v + eps) * g
    u = rho * u + (1 - rho) * delta^2
    param -= lr * delta
    """
    w0, w1 = scratch(param, work)
    g = effective_grad(param, grad, weight_decay, maximize, w0)
    square_avg_(square_avg, g, rho, w1)
    std = np.add(square_avg, eps, out=w1)
    np.sqrt(std, out=std)
    np.divide(g, std, out=w1)  # g / sqrt(v + eps); g (maybe in w0) is not needed after this
    delta = np.add(acc_delta, eps, out=w0)
    np.sqrt(delta, out=delta)
    delta *= w1
    square_avg_(acc_delta, delta, rho, w1)
    delta *= lr
    param -= delta


class Adadelta(Optimizer):
    """Adadelta, as PyTorch's ``torch.optim.Adadelta``.

    Args:
        params: parameters or parameter groups.
        lr: scale of the update (1.0 is the published algorithm).
        rho: decay rate of the running averages.
        eps: added inside the square roots for numerical stability.
        weight_decay: L2 penalty added to the gradient.
        maximize: ascend instead of descend.
        clip_norm, clip_value: gradient clipping applied before each step.
    """

    elementwise = True  # may update small parameters as one flat vector

    def __init__(
        self,
        params,
        lr: float = 1.0,
        rho: float = 0.9,
        eps: float = 1e-6,
        weight_decay: float = 0.0,
        *,
        maximize: bool = False,
        clip_norm: float | None = None,
        clip_value: float | None = None,
    ):
        defaults = dict(lr=lr, rho=rho, eps=eps, weight_decay=weight_decay, maximize=maximize)
        super().__init__(params, defaults, clip_norm=clip_norm, clip_value=clip_value)

    def validate(self, group: dict) -> None:
        super().validate(group)
        self.check_unit(group, "rho")

    def init_state(self, p, group) -> dict:
        return {"step": 0, **zeros_state(p, "square_avg", "acc_delta")}

    def update(self, p, state, group) -> None:
        state["step"] += 1
        self.update_with(adadelta_update, p, group, state["square_avg"], state["acc_delta"])
