"""Stochastic gradient descent with momentum, dampening, Nesterov and weight decay."""

from __future__ import annotations

import numpy as np

from nnframe.errors import check_hyper
from nnframe.optim.optimizer import Optimizer, effective_grad, scratch


def sgd_update(
    param: np.ndarray,
    grad: np.ndarray,
    buf: np.ndarray | None,
    *,
    lr: float,
    momentum: float,
    dampening: float,
    nesterov: bool,
    weight_decay: float,
    maximize: bool,
    first_step: bool,
    work: tuple[np.ndarray, np.ndarray] | None = None,
) -> None:
    """One SGD step in place (PyTorch's algorithm):

    g = -grad if maximize else grad;  g += weight_decay * param
    if momentum: buf = g on the first step, else buf = momentum * buf + (1 - dampening) * g;
                 g = g + momentum * buf if nesterov else buf
    param -= lr * g

    ``buf`` (the momentum buffer) is updated in place; ``work`` holds two scratch arrays.
    """
    w0, w1 = scratch(param, work)
    g = effective_grad(param, grad, weight_decay, maximize, w0)
    if momentum:
        if first_step:
            np.copyto(buf, g)
        else:
            buf *= momentum
            if dampening:
                np.multiply(g, 1.0 - dampening, out=w1)
                buf += w1
            else:
                buf += g
        if nesterov:
            np.multiply(buf, momentum, out=w1)
            g = np.add(w1, g, out=w1)
        else:
            g = buf
    np.multiply(g, lr, out=w1)
    param -= w1


class SGD(Optimizer):
    """Stochastic gradient descent (optionally with momentum), as PyTorch's ``torch.optim.SGD``.

    Args:
        params: parameters or parameter groups.
        lr: learning rate.
        momentum: momentum factor (0 disables it).
        dampening: dampening of the momentum.
        weight_decay: L2 penalty added to the gradient.
        nesterov: Nesterov momentum (needs momentum > 0 and dampening 0).
        maximize: ascend instead of descend.
        clip_norm, clip_value: gradient clipping applied before each step.

    Example:
        >>> import numpy as np, nnframe as nf
        >>> p = nf.Parameter(np.array([1.0], dtype=np.float32)); p.grad[:] = 2.0
        >>> nf.optim.SGD([p], lr=0.1).step(); p.data
        array([0.8], dtype=float32)
    """

    elementwise = True  # may update small parameters as one flat vector

    def __init__(
        self,
        params,
        lr: float = 1e-3,
        momentum: float = 0.0,
        dampening: float = 0.0,
        weight_decay: float = 0.0,
        nesterov: bool = False,
        *,
        maximize: bool = False,
        clip_norm: float | None = None,
        clip_value: float | None = None,
    ):
        defaults = dict(
            lr=lr,
            momentum=momentum,
            dampening=dampening,
            weight_decay=weight_decay,
            nesterov=nesterov,
            maximize=maximize,
        )
        super().__init__(params, defaults, clip_norm=clip_norm, clip_value=clip_value)

    def validate(self, group: dict) -> None:
        super().validate(group)
        self.check_nonnegative(group, "momentum", "dampening")
        if group["nesterov"]:
            check_hyper(
                type(self).__name__,
                "nesterov",
                True,
                group["momentum"] > 0 and group["dampening"] == 0,
                "needs momentum > 0 and dampening = 0",
            )

    def init_state(self, p, group) -> dict:
        buf = np.zeros_like(p.data) if group["momentum"] else None
        return {"momentum_buffer": buf, "step": 0}

    def update(self, p, state, group) -> None:
        if group["momentum"] and state["momentum_buffer"] is None:
            # momentum switched on after the first steps (e.g. by a scheduler): start afresh
            state["momentum_buffer"] = np.zeros_like(p.data)
            state["step"] = 0
        self.update_with(
            sgd_update, p, group, state["momentum_buffer"], first_step=state["step"] == 0
        )
        state["step"] += 1
