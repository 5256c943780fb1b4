"""Dense (fully connected) layer."""

from __future__ import annotations

import threading

import numpy as np
from scipy import sparse

from nnframe._pytorch_args import check_device, resolve_dtype
from nnframe.core.errors import as_float_input, check_size
from nnframe.core.input_spec import InputSpec
from nnframe.core.module import Module
from nnframe.core.parameter import Parameter
from nnframe.core.random import get_rng
from nnframe.functional import rows_matmul
from nnframe.layers.init import default_uniform, make_weight

# dL/dW of a large layer is computed into a per-thread scratch buffer, reused from call to call,
# then added to the gradient: a fresh array of 32 MB or more is a new memory mapping every
# time (page faults and the kernel's zeroing: ~7 ms for 4096 x 4096 float32). The buffer holds
# nothing between calls, so it is no per-call state.
_SCRATCH = threading.local()
_SCRATCH_MIN = 1 << 22  # elements (16 MB of float32): smaller arrays come from the heap
# from this many elements on, dL/dW goes straight into a zeroed gradient (one test of the
# gradient instead of a new array and an add); below, the test costs more than it saves
_DIRECT_MIN = 1 << 16


def _scratch(shape: tuple, dtype) -> np.ndarray:
    size = int(np.prod(shape))
    buf = getattr(_SCRATCH, "buf", None)
    if buf is None or buf.size < size or buf.dtype != dtype:
        buf = _SCRATCH.buf = np.empty(size, dtype=dtype)
    return buf[:size].reshape(shape)


class Dense(Module):
    """Fully connected layer: ``y = x @ weight.T + bias`` (PyTorch's ``Linear``).

    Args:
        in_features: size of each input sample's last dimension.
        out_features: size of each output sample's last dimension.
        bias: learn an additive bias.
        device: PyTorch's device: None or 'cpu' (nnframe's arrays live in main memory); any
            other device is refused.
        dtype: parameter dtype (None: float32).
        rng: Generator or seed for the initial weights (None: nnframe's default generator).
        init: weight initializer: a name from ``nnframe.init.INITIALIZERS`` or a callable
            ``(shape, rng, dtype) -> array``. The default is PyTorch's:
            U(-1/sqrt(in_features), 1/sqrt(in_features)) for weight and bias.

    Shape:
        input: (N, *, in_features), or a scipy.sparse matrix (N, in_features).
        output: (N, *, out_features).

    With a sparse input the forward product and the weight gradient are sparse products (the
    input is never densified) and ``backward`` returns None: sparse inputs are data.

    Example:
        >>> import numpy as np, nnframe as nf
        >>> layer = nf.Dense(3, 2, rng=0)
        >>> layer.weight.shape
        (2, 3)
        >>> layer(np.ones((5, 3), dtype=np.float32)).shape
        (5, 2)
    """

    input_spec = InputSpec(None, axis=-1, size="in_features")

    def __init__(
        self,
        in_features: int,
        out_features: int,
        bias: bool = True,
        device=None,
        dtype=np.float32,
        *,
        rng=None,
        init="default",
    ):
        super().__init__()
        who = "Dense"
        check_device(who, device)
        dtype = resolve_dtype(dtype)
        check_size(who, "in_features", in_features)
        check_size(who, "out_features", out_features)
        self.in_features = int(in_features)
        self.out_features = int(out_features)
        rng = get_rng(rng)
        self.weight = Parameter(make_weight(init, (out_features, in_features), rng, dtype))
        self.bias = (
            Parameter(default_uniform((out_features,), rng=rng, dtype=dtype, fan_in=in_features))
            if bias
            else None
        )

    def extra_repr(self) -> str:
        return (
            f"in_features={self.in_features}, out_features={self.out_features}, "
            f"bias={self.bias is not None}"
        )

    def forward(self, x):
        w = self.weight.data
        if type(x) is not np.ndarray and sparse.issparse(x):
            x = sparse.csr_matrix(x, dtype=w.dtype) if x.dtype != w.dtype else x.tocsr()
            y = np.asarray(x @ w.T)  # (N, D_in) sparse @ (D_in, D_out) dense -> dense
        else:
            if type(x) is not np.ndarray or x.dtype != w.dtype:
                x = as_float_input(self, x, w.dtype)
            y = rows_matmul(x, w.T)  # the transposed view costs no copy; BLAS reads it as is
        if self.bias is not None:
            y += self.bias.data  # in place: no second output array
        self.save_for_backward(x)
        return y

    def backward(self, grad_output):
        (x,) = self.saved
        w = self.weight
        g2 = grad_output if grad_output.ndim == 2 else grad_output.reshape(-1, self.out_features)
        if type(x) is not np.ndarray and sparse.issparse(x):  # g2: (N*, D_out)
            if w.requires_grad:
                # dL/dW = (x^T @ g)^T: a sparse (D_in, N) @ dense (N, D_out) product
                w.grad += np.asarray(x.T @ g2).T
            if self.bias is not None and self.bias.requires_grad:
                self.bias.grad += g2.sum(axis=0)
            return None
        if w.requires_grad:
            # dL/dW = g^T @ x: (D_out, N*) @ (N*, D_in). (scipy's BLAS could add it in place,
            # but scipy ships a second OpenBLAS whose threads fight numpy's: 5x slower steps)
            x2 = x if x.ndim == 2 else x.reshape(-1, self.in_features)
            gw = w.grad
            if gw.size < _DIRECT_MIN or not (
                type(x2) is np.ndarray
                and type(g2) is np.ndarray
                and g2.dtype == x2.dtype == gw.dtype
                and gw.flags.c_contiguous
            ):
                gw += g2.T @ x2  # (small: a new array and an add cost less than the tests)
            elif not gw.any():
                # a zeroed gradient (the first backward after zero_grad): the product goes
                # straight into it. One read of the gradient instead of a new array that is
                # then read again and added (4096 x 4096: -7 ms of 97)
                np.matmul(g2.T, x2, out=gw)
            elif gw.size >= _SCRATCH_MIN:
                gw += np.matmul(g2.T, x2, out=_scratch(gw.shape, gw.dtype))
            else:
                gw += g2.T @ x2
        if self.bias is not None and self.bias.requires_grad:
            self.bias.grad += g2.sum(axis=0)  # dL/db: summed over the batch
        if not self.needs_input_grad:
            return None  # the input is data: skip a (N, D_out) @ (D_out, D_in) product
        return rows_matmul(grad_output, w.data)  # dL/dx: (N*, D_out) @ (D_out, D_in)


#: PyTorch's name for :class:`Dense`: the very same class (``nf.Linear is nf.Dense``).
Linear = Dense
