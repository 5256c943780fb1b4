"""Parameter: a trainable array and the gradient accumulated for it."""

from __future__ import annotations

import numpy as np

from nnframe.core.backend import array_module


class Parameter:
    """A trainable tensor: ``data`` and the gradient ``grad`` of the same shape and dtype.

    Layers *accumulate* into ``grad`` in ``backward`` (``p.grad += ...``); ``zero_grad`` resets it.
    Optimizers update ``data`` in place, so views and references to it stay valid.

    Args:
        data: initial values (kept as given: no copy if it is already an ndarray).
        requires_grad: if False the parameter is frozen: layers skip its gradient and
            optimizers skip its update.

    Shape:
        data, grad: any shape, the same for both.
    """

    __slots__ = ("data", "grad", "requires_grad")

    def __init__(self, data, requires_grad: bool = True):
        self.data = data if type(data) is np.ndarray else array_module(data).asarray(data)
        self.grad = np.zeros_like(self.data)
        self.requires_grad = bool(requires_grad)

    @property
    def shape(self) -> tuple[int, ...]:
        return self.data.shape

    @property
    def dtype(self) -> np.dtype:
        return self.data.dtype

    @property
    def size(self) -> int:
        return self.data.size

    def zero_grad(self) -> None:
        """Resets the accumulated gradient to zero, in place."""
        self.grad.fill(0)

    def __repr__(self) -> str:
        frozen = "" if self.requires_grad else ", requires_grad=False"
        return f"Parameter(shape={self.data.shape}, dtype={self.data.dtype}{frozen})"
