"""Stochastic gradient descent with momentum, dampening, Nesterov and weight decay."""

from __future__ import annotations

import functools
import math

import numpy as np

from nnframe.core.backend import Elementwise, array_module, elementwise
from nnframe.core.errors import check_hyper
from nnframe.optim.optimizer import Optimizer, effective_grad, scratch


@functools.cache
def _sgd_step(momentum: bool, first: bool, nesterov: bool) -> Elementwise:
    """The step below as one kernel for a GPU: the same operations in the same order, for one
    case of the options (sign: -1 when maximizing; damp = 1 - dampening)."""
    body = "T g = sign * grad + wd * param;"
    if momentum:
        body += "buf = g;" if first else "buf = buf * momentum + g * damp;"
        body += "g = buf * momentum + g;" if nesterov else "g = buf;"
    body += "param = param - g * lr;"
    name = f"sgd_step{'_momentum' * momentum}{'_first' * first}{'_nesterov' * nesterov}"
    outputs = "T param, T buf" if momentum else "T param"
    return Elementwise(name, "T grad, T lr, T sign, T wd, T momentum, T damp", outputs, body)


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
    kernel = elementwise(
        array_module(param), _sgd_step(bool(momentum), first_step, nesterov), param.dtype
    )
    if kernel is not None:
        buf_ = (buf,) if momentum else ()
        kernel(grad, lr, -1.0 if maximize else 1.0, weight_decay, momentum, 1.0 - dampening,
               param, *buf_)  # fmt: skip
        return
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

    # above this many elements, reading every parameter, gradient and buffer once more to bound
    # the update costs about what the block guard's backup does (see _finite_by_bound)
    BOUND_MAX_ELEMENTS = 1 << 21

    def _finite_by_bound(self) -> bool:
        """True when this step's update provably stays finite, so that ``step`` may skip the
        backup and the NaN/Inf check (Optimizer.step's guarantee holds either way).

        The 2-norms of each group's parameters P, gradients G and momentum buffers B are
        finite only when every element is, and bound every element. The update only adds
        and multiplies: |g| <= G + |wd| P, |buf'| <= |m| B + max(1, |1 - dampening|) |g|,
        |step| <= |g| + (1 + |m|) |buf'|, |p'| <= P + |lr| |step|. When that bound is 1e8 times
        below the dtype's largest value, no intermediate can overflow (rounding moves the
        values by a relative 1e-7 at most) and no NaN can appear (all inputs finite)."""
        with np.errstate(over="ignore", invalid="ignore"):  # an overflow only means "no proof"
            return self._bounded()

    def _bounded(self) -> bool:
        total = 0
        for group in self.param_groups:
            norms = [0.0, 0.0, 0.0]  # parameters, gradients, buffers
            limit = math.inf
            for p in group["params"]:
                if not p.requires_grad:
                    continue
                total += p.data.size
                if total > self.BOUND_MAX_ELEMENTS or p.data.dtype.kind != "f":
                    return False
                limit = min(limit, float(np.finfo(p.data.dtype).max) * 1e-8)
                state = self.state.get(p)
                buf = None if state is None else state.get("momentum_buffer")
                for k, a in enumerate((p.data, p.grad, buf)):
                    if a is not None:
                        n = _norm(a)
                        if not n < math.inf:  # NaN or Inf somewhere (max() would drop a NaN)
                            return False
                        norms[k] = max(norms[k], n)
            P, G, B = norms
            m, d = abs(group["momentum"]), abs(1.0 - group["dampening"])
            g = G + abs(group["weight_decay"]) * P
            buf = m * B + max(1.0, d) * g
            bound = P + abs(group["lr"]) * (g + (1.0 + m) * buf)
            if not bound < limit:  # also False for NaN
                return False
        return True

    def update(self, p, state, group) -> None:
        if group["momentum"] and state["momentum_buffer"] is None:
            # momentum switched on after the first steps (e.g. by a scheduler): start afresh
            state["momentum_buffer"] = np.zeros_like(p.data)
            state["step"] = 0
        self.update_with(
            sgd_update, p, group, state["momentum_buffer"], first_step=state["step"] == 0
        )
        state["step"] += 1


def _norm(a: np.ndarray) -> float:
    """The 2-norm of ``a`` (one BLAS pass: inf or NaN when an element is, or when the sum of
    squares overflows); inf for a layout the dot product cannot read flat."""
    if not (a.flags.c_contiguous or a.flags.f_contiguous):
        return math.inf
    v = a.ravel(order="K")
    return math.sqrt(float(np.dot(v, v)))
