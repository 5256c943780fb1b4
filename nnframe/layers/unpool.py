"""MaxUnpool1d and MaxUnpool2d: the partial inverses of max pooling (PyTorch's).

``MaxPool2d(..., return_indices=True)`` returns, with its output, the flat index of each
window's maximum in its (N, C) plane. Unpooling writes every input value at its index in a zero
output plane: the maxima go back where they came from, everything else is zero::

    y[n, c].flat[indices[n, c, i]] = x[n, c, i]

The backward is the matching gather, ``dL/dx[n, c, i] = dL/dy[n, c].flat[indices[n, c, i]]``;
the indices are data and get no gradient. Repeated indices keep one of their values in forward
(as PyTorch leaves undefined which one) while backward gives each input the gradient at its
index.
"""

from __future__ import annotations

import numpy as np

from nnframe.core.backend import array_module
from nnframe.core.errors import ShapeError, expected_got, fmt_shape
from nnframe.core.input_spec import InputSpec
from nnframe.core.module import Module
from nnframe.layers._im2col import ntuple, spatial_names

__all__ = ["MaxUnpool1d", "MaxUnpool2d"]


class _UnpoolSpec(InputSpec):
    """The input and the indices both have a batch axis (or both lack it)."""

    __slots__ = ()

    def batch_axes(self, module) -> tuple:
        return (0, 0), 0


class _MaxUnpoolNd(Module):
    _n = 0

    def __init__(self, kernel_size, stride=None, padding=0):
        super().__init__()
        who, n = type(self).__name__, self._n
        self.kernel_size = ntuple(who, "kernel_size", kernel_size, n, 1)
        self.stride = self.kernel_size if stride is None else ntuple(who, "stride", stride, n, 1)
        self.padding = ntuple(who, "padding", padding, n, 0)

    def extra_repr(self) -> str:
        return f"kernel_size={self.kernel_size}, stride={self.stride}, padding={self.padding}"

    def _out_spatial(self, x_spatial, output_size) -> tuple[int, ...]:
        """PyTorch's default size, (L_in - 1) * stride - 2 * padding + kernel_size, or the given
        ``output_size`` (spatial, or with N and C in front), within a stride of the default."""
        default = tuple(
            (s - 1) * t - 2 * p + k
            for s, t, p, k in zip(x_spatial, self.stride, self.padding, self.kernel_size)
        )
        if output_size is None:
            if min(default) < 0:
                raise ShapeError(expected_got(self, "an output size >= 0", f"{fmt_shape(default)}"))
            return default
        size = tuple(int(s) for s in output_size)
        if len(size) == self._n + 2:
            size = size[2:]
        ok = len(size) == self._n and all(
            d - t < s < d + t for s, d, t in zip(size, default, self.stride)
        )
        if not ok:
            lo = tuple(d - t + 1 for d, t in zip(default, self.stride))
            hi = tuple(d + t - 1 for d, t in zip(default, self.stride))
            raise ShapeError(
                expected_got(
                    self,
                    f"output_size of {self._n} sizes between {fmt_shape(lo)} and {fmt_shape(hi)}",
                    repr(tuple(output_size)),
                )
            )
        return size

    def forward(self, x, indices, output_size=None):
        xm = array_module(x)
        if type(x) is not np.ndarray:
            x = xm.asarray(x)
        if x.dtype.kind != "f":
            if x.dtype.kind not in "biu":
                raise TypeError(expected_got(self, "a real numeric input", f"dtype {x.dtype}"))
            x = x.astype(np.float32)
        indices = xm.asarray(indices)  # the indices join x's module
        if indices.shape != x.shape or indices.dtype.kind not in "iu":
            raise ShapeError(
                expected_got(
                    self,
                    f"integer indices of the input's shape {fmt_shape(x.shape)}",
                    f"{indices.dtype} indices of shape {fmt_shape(indices.shape)}",
                )
            )
        spatial = self._out_spatial(x.shape[2:], output_size)
        plane = int(np.prod(spatial, dtype=np.int64))
        flat_idx = indices.reshape(x.shape[0], x.shape[1], -1).astype(np.intp, copy=False)
        if flat_idx.size and (flat_idx.min() < 0 or flat_idx.max() >= plane):
            bad = flat_idx.min() if flat_idx.min() < 0 else flat_idx.max()
            raise ValueError(
                expected_got(
                    self, f"indices in [0, {plane}) for an output of {fmt_shape(spatial)}", bad
                )
            )
        y = xm.zeros((x.shape[0], x.shape[1], plane), dtype=x.dtype)
        np.put_along_axis(y, flat_idx, x.reshape(flat_idx.shape), axis=-1)
        self.save_for_backward(flat_idx, x.shape, y.shape)
        return y.reshape(x.shape[:2] + spatial)

    def backward(self, grad_output):
        flat_idx, x_shape, flat_shape = self.saved
        g = array_module(grad_output).asarray(grad_output)
        if g.size != int(np.prod(flat_shape)) or g.shape[:2] != flat_shape[:2]:
            raise ShapeError(
                expected_got(
                    self, f"grad_output with {flat_shape[2]} values per plane", fmt_shape(g.shape)
                )
            )
        # dL/dx: each input reads the output gradient at its index (a gather)
        dx = np.take_along_axis(g.reshape(flat_shape), flat_idx, axis=-1).reshape(x_shape)
        return dx, None


class MaxUnpool1d(_MaxUnpoolNd):
    """Partial inverse of :class:`MaxPool1d`: each input value is written at its index in a
    zero output; the other positions are zero.

    Args:
        kernel_size: the max pooling's kernel size.
        stride: its stride (default: kernel_size).
        padding: its padding.

    ``forward(input, indices, output_size=None)``: ``indices`` as returned by
    ``MaxPool1d(..., return_indices=True)``; ``output_size`` (L_out, or (N, C, L_out)) picks
    among the lengths that pool to L_in (within a stride of the default). ``backward``
    returns ``(dL/dinput, None)``: the indices get no gradient.

    Shape:
        input, indices: (N, C, L_in)
        output: (N, C, L_out), L_out = (L_in - 1) stride - 2 padding + kernel_size by default.

    Example:
        >>> import numpy as np, nnframe as nf
        >>> pool, unpool = nf.MaxPool1d(2, return_indices=True), nf.MaxUnpool1d(2)
        >>> y, idx = pool(np.array([[[1.0, 3.0, 4.0, 2.0]]]))
        >>> unpool(y, idx)
        array([[[0., 3., 4., 0.]]])
    """

    _n = 1
    input_spec = _UnpoolSpec(("N", "C", *spatial_names(1)), size=None)


class MaxUnpool2d(_MaxUnpoolNd):
    """Partial inverse of :class:`MaxPool2d`; the arguments of :class:`MaxUnpool1d`, each an
    int or a pair.

    Shape:
        input, indices: (N, C, H_in, W_in)
        output: (N, C, H_out, W_out), each side as MaxUnpool1d's L_out.

    Example:
        >>> import numpy as np, nnframe as nf
        >>> pool, unpool = nf.MaxPool2d(2, return_indices=True), nf.MaxUnpool2d(2)
        >>> y, idx = pool(np.arange(16.0).reshape(1, 1, 4, 4))
        >>> unpool(y, idx)[0, 0]
        array([[ 0.,  0.,  0.,  0.],
               [ 0.,  5.,  0.,  7.],
               [ 0.,  0.,  0.,  0.],
               [ 0., 13.,  0., 15.]])
    """

    _n = 2
    input_spec = _UnpoolSpec(("N", "C", *spatial_names(2)), size=None)
