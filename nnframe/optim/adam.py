"""Adam (Kingma and Ba, 2015), with AMSGrad and coupled or decoupled weight decay."""

from __future__ import annotations

import math

import numpy as np

from nnframe.core.backend import Elementwise, array_module, elementwise
from nnframe.optim.optimizer import (
    Optimizer,
    effective_grad,
    lerp_,
    scratch,
    square_avg_,
    zeros_state,
)

# The step below in one kernel on a GPU (in-out: param and both moments), the same operations
# in the same order. decay: 1 - lr*wd when decoupled, else 1; wd: the coupled decay, else 0;
# sign: -1 when maximizing; w1 = 1 - beta1, w2 = 1 - beta2; bc2 = sqrt(1 - beta2^step);
# step_size = lr / (1 - beta1^step)
_ADAM_STEP = Elementwise(
    "adam_step",
    "T grad, T decay, T wd, T sign, T w1, T beta2, T w2, T bc2, T eps, T step_size",
    "T param, T exp_avg, T exp_avg_sq",
    """
    T p = param * decay;
    T g = sign * grad + wd * p;
    exp_avg = exp_avg + (g - exp_avg) * w1;
    exp_avg_sq = exp_avg_sq * beta2 + (g * g) * w2;
    param = p - (exp_avg / (sqrt(exp_avg_sq) / bc2 + eps)) * step_size;
    """,
)


def adam_update(
    param: np.ndarray,
    grad: np.ndarray,
    exp_avg: np.ndarray,
    exp_avg_sq: np.ndarray,
    max_exp_avg_sq: np.ndarray | None = None,
    *,
    step: int,
    lr: float,
    beta1: float,
    beta2: float,
    eps: float,
    weight_decay: float = 0.0,
    amsgrad: bool = False,
    maximize: bool = False,
    decoupled_weight_decay: bool = False,
    work: tuple[np.ndarray, np.ndarray] | None = None,
) -> None:
    """One Adam step in place (PyTorch's algorithm); ``step`` counts from 1:

    g = -grad if maximize else grad
    decoupled: param *= 1 - lr * weight_decay      else: g += weight_decay * param
    m = beta1 * m + (1 - beta1) * g;   v = beta2 * v + (1 - beta2) * g^2
    amsgrad: v_max = max(v_max, v), used for v below
    param -= lr / (1 - beta1^step) * m / (sqrt(v) / sqrt(1 - beta2^step) + eps)
    """
    kernel = None if amsgrad else elementwise(array_module(param), _ADAM_STEP, param.dtype)
    if kernel is not None:
        decoupled = bool(weight_decay and decoupled_weight_decay)
        kernel(
            grad, 1.0 - lr * weight_decay if decoupled else 1.0,
            0.0 if decoupled else weight_decay, -1.0 if maximize else 1.0, 1.0 - beta1, beta2,
            1.0 - beta2, math.sqrt(1.0 - beta2**step), eps, lr / (1.0 - beta1**step),
            param, exp_avg, exp_avg_sq,
        )  # fmt: skip
        return
    w0, w1 = scratch(param, work)
    if weight_decay and decoupled_weight_decay:
        param *= 1.0 - lr * weight_decay
        g = effective_grad(param, grad, 0.0, maximize, w0)
    else:
        g = effective_grad(param, grad, weight_decay, maximize, w0)
    lerp_(exp_avg, g, 1.0 - beta1, w1)
    square_avg_(exp_avg_sq, g, beta2, w1)
    v = exp_avg_sq
    if amsgrad:
        np.maximum(max_exp_avg_sq, exp_avg_sq, out=max_exp_avg_sq)
        v = max_exp_avg_sq
    # denominator: sqrt(v_hat) + eps, with v_hat = v / (1 - beta2^step)
    denom = np.sqrt(v, out=w1)
    denom /= math.sqrt(1.0 - beta2**step)
    denom += eps
    np.divide(exp_avg, denom, out=w1)
    w1 *= lr / (1.0 - beta1**step)
    param -= w1


class Adam(Optimizer):
    """Adam, as PyTorch's ``torch.optim.Adam``.

    Args:
        params: parameters or parameter groups.
        lr: learning rate.
        betas: decay rates of the running averages of the gradient and its square.
        eps: added to the denominator for numerical stability.
        weight_decay: L2 penalty (added to the gradient, or applied to the weights directly
            when ``decoupled_weight_decay``).
        amsgrad: use the running maximum of the second moment (AMSGrad).
        maximize: ascend instead of descend.
        decoupled_weight_decay: AdamW's decay ``param *= 1 - lr * weight_decay``.
        clip_norm, clip_value: gradient clipping applied before each step.

    Example:
        >>> import numpy as np, nnframe as nf
        >>> p = nf.Parameter(np.array([1.0, -1.0], dtype=np.float32)); p.grad[:] = [0.5, -2.0]
        >>> nf.optim.Adam([p], lr=0.1).step()
        >>> p.data.round(6)  # the first step moves each coordinate by ~lr, against its gradient
        array([ 0.9, -0.9], dtype=float32)
    """

    elementwise = True  # may update small parameters as one flat vector

    def __init__(
        self,
        params,
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0.0,
        amsgrad: bool = False,
        *,
        maximize: bool = False,
        decoupled_weight_decay: bool = False,
        clip_norm: float | None = None,
        clip_value: float | None = None,
    ):
        defaults = dict(
            lr=lr,
            betas=betas,
            eps=eps,
            weight_decay=weight_decay,
            amsgrad=amsgrad,
            maximize=maximize,
            decoupled_weight_decay=decoupled_weight_decay,
        )
        super().__init__(params, defaults, clip_norm=clip_norm, clip_value=clip_value)

    def init_state(self, p, group) -> dict:
        state = {"step": 0, **zeros_state(p, "exp_avg", "exp_avg_sq")}
        if group["amsgrad"]:
            state["max_exp_avg_sq"] = np.zeros_like(p.data)
        return state

    def update(self, p, state, group) -> None:
        if group["amsgrad"] and "max_exp_avg_sq" not in state:
            state["max_exp_avg_sq"] = np.zeros_like(p.data)
        state["step"] += 1
        moments = state["exp_avg"], state["exp_avg_sq"], state.get("max_exp_avg_sq")
        self.update_with(adam_update, p, group, *moments, step=state["step"])
