"""AdamW (Loshchilov and Hutter, 2019): Adam with decoupled weight decay."""

from __future__ import annotations

from nnframe.optim.adam import Adam


class AdamW(Adam):
    """Adam with decoupled weight decay, as PyTorch's ``torch.optim.AdamW``: each step first
    shrinks the weights, ``param *= 1 - lr * weight_decay``, then takes an Adam step on the
    unmodified gradient (the update math is :func:`nnframe.optim.adam_update` with
    ``decoupled_weight_decay=True``).

    Args:
        params: parameters or parameter groups.
        lr: learning rate.
        betas: decay rates of the running averages of the gradient and its square.
        eps: added to the denominator for numerical stability.
        weight_decay: decoupled decay rate (PyTorch's default 0.01).
        amsgrad: use the running maximum of the second moment (AMSGrad).
        maximize: ascend instead of descend.
        clip_norm, clip_value: gradient clipping applied before each step.
    """

    def __init__(
        self,
        params,
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 1e-2,
        amsgrad: bool = False,
        *,
        maximize: bool = False,
        clip_norm: float | None = None,
        clip_value: float | None = None,
    ):
        super().__init__(
            params,
            lr=lr,
            betas=betas,
            eps=eps,
            weight_decay=weight_decay,
            amsgrad=amsgrad,
            maximize=maximize,
            decoupled_weight_decay=True,
            clip_norm=clip_norm,
            clip_value=clip_value,
        )
