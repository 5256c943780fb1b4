"""Bilinear: y = x1^T A x2 + b, one bilinear form per output feature, as PyTorch's."""

from __future__ import annotations

import numpy as np

from nnframe._pytorch_args import check_device, resolve_dtype
from nnframe.core.errors import (
    ShapeError,
    as_float_input,
    check_grad,
    check_hyper,
    expected_got,
    fmt_shape,
)
from nnframe.core.input_spec import InputSpec
from nnframe.core.module import Module
from nnframe.core.parameter import Parameter
from nnframe.core.random import get_rng
from nnframe.layers.init import default_uniform, make_weight


class _PairSpec(InputSpec):
    """Both inputs lose (or gain) the batch axis together: ``(H1,)`` and ``(H2,)`` unbatched."""

    def batch_axes(self, module) -> tuple:
        return (0, 0), 0


class Bilinear(Module):
    """Bilinear layer: ``y[..., o] = x1 @ weight[o] @ x2 + bias[o]`` (PyTorch's ``nn.Bilinear``).

    Args:
        in1_features, in2_features: features of the two inputs.
        out_features: features of the output.
        bias: learn an additive bias.
        device: None or 'cpu' (nnframe's arrays live in main memory).
        dtype: parameter dtype (None: float32).
        rng: Generator or seed for the initial weights.
        init: weight initializer (a name or a callable); the default is PyTorch's,
            U(-1/sqrt(in1_features), 1/sqrt(in1_features)) for weight and bias.

    ``forward(x1, x2)``; ``backward(grad_output)`` returns ``(dL/dx1, dL/dx2)``.

    Shape:
        x1: (N, *, in1_features) or (in1_features,).    x2: (N, *, in2_features), the same
        leading axes.    output: (N, *, out_features).
        weight: (out_features, in1_features, in2_features); bias: (out_features,).

    Example:
        >>> import numpy as np, nnframe as nf
        >>> layer = nf.Bilinear(3, 4, 2, rng=0)
        >>> layer(np.ones((5, 3), np.float32), np.ones((5, 4), np.float32)).shape
        (5, 2)
    """

    input_spec = _PairSpec(None, axis=-1, size="in1_features")

    def __init__(
        self,
        in1_features: int,
        in2_features: int,
        out_features: int,
        bias: bool = True,
        device=None,
        dtype=None,
        *,
        rng=None,
        init="default",
    ):
        super().__init__()
        for name, v in (
            ("in1_features", in1_features),
            ("in2_features", in2_features),
            ("out_features", out_features),
        ):
            ok = isinstance(v, (int, np.integer)) and not isinstance(v, bool) and v > 0
            check_hyper("Bilinear", name, v, ok, "must be a positive int")
        check_device("Bilinear", device)
        dtype = resolve_dtype(dtype)
        self.in1_features, self.in2_features = int(in1_features), int(in2_features)
        self.out_features = int(out_features)
        rng = get_rng(rng)
        shape = (self.out_features, self.in1_features, self.in2_features)
        if init == "default":  # PyTorch: the bound 1/sqrt(in1_features)
            w = default_uniform(shape, rng=rng, dtype=dtype, fan_in=self.in1_features)
        else:
            w = make_weight(init, shape, rng, dtype)
        self.weight = Parameter(w)
        self.bias = (
            Parameter(
                default_uniform(
                    (self.out_features,), rng=rng, dtype=dtype, fan_in=self.in1_features
                )
            )
            if bias
            else None
        )

    def extra_repr(self) -> str:
        return (
            f"in1_features={self.in1_features}, in2_features={self.in2_features}, "
            f"out_features={self.out_features}, bias={self.bias is not None}"
        )

    def forward(self, x1, x2):
        w = self.weight.data
        x1 = as_float_input(self, x1, w.dtype)
        x2 = as_float_input(self, x2, w.dtype)
        if x2.shape != x1.shape[:-1] + (self.in2_features,):
            expected = fmt_shape((*x1.shape[:-1], self.in2_features))
            raise ShapeError(expected_got(self, f"x2 of shape {expected}", fmt_shape(x2.shape)))
        lead = x1.shape[:-1]
        a = x1.reshape(-1, self.in1_features)  # (M, I)
        b = x2.reshape(-1, self.in2_features)  # (M, J)
        # t[m, o, j] = sum_i a[m, i] W[o, i, j]: one GEMM (M, I) @ (I, O*J)
        m, o, i1, i2 = len(a), self.out_features, self.in1_features, self.in2_features
        t = (a @ w.transpose(1, 0, 2).reshape(i1, o * i2)).reshape(m, o, i2)
        y = np.einsum("moj,mj->mo", t, b)
        if self.bias is not None:
            y += self.bias.data
        self.save_for_backward(a, b, t, lead)
        return y.reshape(*lead, self.out_features)

    def backward(self, grad_output):
        a, b, t, lead = self.saved
        g = check_grad(self, grad_output, (*lead, self.out_features)).reshape(-1, self.out_features)
        w = self.weight
        if w.requires_grad:
            # dL/dW[o, i, j] = sum_m g[m, o] a[m, i] b[m, j]: (O, M) @ (M, I*J)
            outer = (a[:, :, None] * b[:, None, :]).reshape(len(a), w.data[0].size)
            w.grad += (g.T @ outer).reshape(w.shape)
        if self.bias is not None and self.bias.requires_grad:
            self.bias.grad += g.sum(axis=0)
        # dL/db[m, j] = sum_o g[m, o] t[m, o, j]; dL/da[m, i] = sum_oj g[m, o] W[o, i, j] b[m, j]
        gb = np.einsum("mo,moj->mj", g, t)
        shape = (len(a), self.in1_features, self.in2_features)
        gw = (g @ w.data.reshape(self.out_features, -1)).reshape(shape)
        ga = np.einsum("mij,mj->mi", gw, b)
        return ga.reshape(*lead, self.in1_features), gb.reshape(*lead, self.in2_features)
