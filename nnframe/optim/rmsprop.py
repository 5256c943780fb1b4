"""RMSprop (Hinton's lecture 6e), optionally centered and with momentum."""

from __future__ import annotations

import numpy as np

from nnframe.optim.optimizer import Optimizer, effective_grad, lerp_, scratch, square_avg_


def rmsprop_update(
    param: np.ndarray,
    grad: np.ndarray,
    square_avg: np.ndarray,
    grad_avg: np.ndarray | None = None,
    momentum_buffer: np.ndarray | None = None,
    *,
    lr: float,
    alpha: float,
    eps: float,
    weight_decay: float = 0.0,
    momentum: float = 0.0,
    centered: bool = False,
    maximize: bool = False,
    work: tuple[np.ndarray, np.ndarray] | None = None,
) -> None:
    """One RMSprop step in place (PyTorch's algorithm):

    g = -grad if maximize else grad;  g += weight_decay * param
    v = alpha * v + (1 - alpha) * g^2
    centered: g_avg = alpha * g_avg + (1 - alpha) * g;  v~ = v - g_avg^2   (else v~ = v)
    momentum > 0: b = momentum * b + g / (sqrt(v~) + eps);  param -= lr * b
    else:         param -= lr * g / (sqrt(v~) + eps)
    """
    w0, w1 = scratch(param, work)
    g = effective_grad(param, grad, weight_decay, maximize, w0)
    square_avg_(square_avg, g, alpha, w1)
    if centered:
        lerp_(grad_avg, g, 1.0 - alpha, w1)
        np.multiply(grad_avg, grad_avg, out=w1)
        avg = np.subtract(square_avg, w1, out=w1)
        np.sqrt(avg, out=avg)
    else:
        avg = np.sqrt(square_avg, out=w1)
    avg += eps
    step = np.divide(g, avg, out=w1)
    if momentum > 0:
        momentum_buffer *= momentum
        momentum_buffer += step
        step = np.multiply(momentum_buffer, lr, out=w1)
    else:
        step *= lr
    param -= step


class RMSprop(Optimizer):
    """RMSprop, as PyTorch's ``torch.optim.RMSprop``.

    Args:
        params: parameters or parameter groups.
        lr: learning rate.
        alpha: decay rate of the running average of the squared gradient.
        eps: added to the denominator for numerical stability.
        weight_decay: L2 penalty added to the gradient.
        momentum: momentum factor (0 disables it).
        centered: normalize by an estimate of the gradient's variance instead of its
            second moment.
        maximize: ascend instead of descend.
        clip_norm, clip_value: gradient clipping applied before each step.
    """

    elementwise = True  # may update small parameters as one flat vector

    def __init__(
        self,
        params,
        lr: float = 1e-2,
        alpha: float = 0.99,
        eps: float = 1e-8,
        weight_decay: float = 0.0,
        momentum: float = 0.0,
        centered: bool = False,
        *,
        maximize: bool = False,
        clip_norm: float | None = None,
        clip_value: float | None = None,
    ):
        defaults = dict(
            lr=lr,
            alpha=alpha,
            eps=eps,
            weight_decay=weight_decay,
            momentum=momentum,
            centered=centered,
            maximize=maximize,
        )
        super().__init__(params, defaults, clip_norm=clip_norm, clip_value=clip_value)

    def validate(self, group: dict) -> None:
        super().validate(group)
        self.check_nonnegative(group, "alpha", "momentum")

    lazy_state = ("grad_avg", "momentum_buffer")  # created when centered/momentum is on

    def init_state(self, p, group) -> dict:
        return {"step": 0, "square_avg": np.zeros_like(p.data)}

    def update(self, p, state, group) -> None:
        # buffers for options switched on later start at zero, as in PyTorch
        if group["centered"] and "grad_avg" not in state:
            state["grad_avg"] = np.zeros_like(p.data)
        if group["momentum"] > 0 and "momentum_buffer" not in state:
            state["momentum_buffer"] = np.zeros_like(p.data)
        state["step"] += 1
        buffers = state["square_avg"], state.get("grad_avg"), state.get("momentum_buffer")
        self.update_with(rmsprop_update, p, group, *buffers)
