"""Sliding blocks: Unfold (image -> columns of blocks, im2col) and Fold (columns -> image,
summing overlaps, col2im), as PyTorch's; each is the other's adjoint, so backward of one is
the forward of the other. Both reuse the column machinery of :mod:`nnframe.layers._im2col`.

PyTorch's layout: block columns ``(N, C * kH * kW, L)``, row ``c * kH * kW + i * kW + j``, and
L the block positions in row-major order.
"""

from __future__ import annotations

import numpy as np

from nnframe.core.backend import array_module
from nnframe.core.errors import ShapeError, as_float_input, check_grad, expected_got, fmt_shape
from nnframe.core.input_spec import InputSpec
from nnframe.core.module import Module
from nnframe.layers._im2col import col2im, conv_out_size, im2col, ntuple, pad, unpad


def _float(who, x) -> np.ndarray:
    """A floating input keeps its dtype (no parameters here); others become float32."""
    x = array_module(x).asarray(x)
    return x if x.dtype.kind == "f" else as_float_input(who, x, np.dtype(np.float32))


class _Blocks(Module):
    def _parse(self, kernel_size, dilation, padding, stride):
        who = type(self).__name__
        self.kernel_size = ntuple(who, "kernel_size", kernel_size, 2, 1)
        self.dilation = ntuple(who, "dilation", dilation, 2, 1)
        self.padding = ntuple(who, "padding", padding, 2, 0)
        self.stride = ntuple(who, "stride", stride, 2, 1)
        self._pads = tuple((p, p) for p in self.padding)

    def _blocks(self, spatial) -> tuple[int, int] | None:
        """Block positions per axis for an image of ``spatial`` size (None if not positive)."""
        out = tuple(
            conv_out_size(s, k, t, 2 * p, d)
            for s, k, t, p, d in zip(
                spatial, self.kernel_size, self.stride, self.padding, self.dilation
            )
        )
        return out if all(o > 0 for o in out) else None

    def _args_repr(self) -> str:
        return (
            f"kernel_size={self.kernel_size}, dilation={self.dilation}, padding={self.padding}, "
            f"stride={self.stride}"
        )

    def _unfold(self, x, out_shape):
        """(N, C, H, W) -> (N, C * K, L)."""
        n, c = x.shape[:2]
        xp = pad(x, self._pads)
        cols = im2col(
            xp, self.kernel_size, self.stride, self.dilation, out_shape
        )  # (C, kH, kW, N, *out)
        k = int(np.prod(self.kernel_size))
        return cols.reshape(c * k, n, int(np.prod(out_shape))).transpose(1, 0, 2).copy()

    def _fold(self, cols, n, c, spatial, out_shape):
        """(N, C * K, L) -> (N, C, *spatial), overlaps summed."""
        padded = tuple(s + 2 * p for s, p in zip(spatial, self.padding))
        grid = cols.transpose(1, 0, 2).reshape(c, *self.kernel_size, n, *out_shape)
        xp = col2im(grid, (n, c, *padded), self.kernel_size, self.stride, self.dilation, out_shape)
        return unpad(xp, self._pads)


class Unfold(_Blocks):
    """Extracts sliding blocks of an image as columns (im2col), as PyTorch's ``nn.Unfold``.

    Args:
        kernel_size: block size (an int or a pair).
        dilation: spacing between block elements.
        padding: zero padding on both sides of each spatial axis.
        stride: step between blocks.

    Shape:
        input: (N, C, H, W) or (C, H, W).
        output: (N, C * kH * kW, L), L = prod over the axes of
        floor((size + 2 padding - dilation (kernel - 1) - 1) / stride) + 1.

    Example:
        >>> import numpy as np, nnframe as nf
        >>> nf.Unfold(2)(np.arange(9.0).reshape(1, 1, 3, 3))[0]
        array([[0., 1., 3., 4.],
               [1., 2., 4., 5.],
               [3., 4., 6., 7.],
               [4., 5., 7., 8.]])
    """

    input_spec = InputSpec(("N", "C", "H", "W"))

    def __init__(self, kernel_size, dilation=1, padding=0, stride=1):
        super().__init__()
        self._parse(kernel_size, dilation, padding, stride)

    def extra_repr(self) -> str:
        return self._args_repr()

    def forward(self, x):
        x = _float(self, x)
        out_shape = self._blocks(x.shape[2:])
        if out_shape is None:
            raise ShapeError(
                expected_got(
                    self,
                    "input of shape (N, C, H, W) with padded H, W at least the dilated kernel",
                    fmt_shape(x.shape),
                )
            )
        self.save_for_backward(x.shape, out_shape)
        return self._unfold(x, out_shape)

    def backward(self, grad_output):
        shape, out_shape = self.saved
        n, c = shape[:2]
        k = int(np.prod(self.kernel_size))
        g = check_grad(self, grad_output, (n, c * k, int(np.prod(out_shape))))
        return self._fold(g, n, c, shape[2:], out_shape)


class Fold(_Blocks):
    """Combines columns of sliding blocks into an image, summing where blocks overlap (col2im),
    as PyTorch's ``nn.Fold``: the adjoint of :class:`Unfold`.

    Args:
        output_size: the image's spatial size (an int or a pair).
        kernel_size, dilation, padding, stride: as :class:`Unfold`.

    Shape:
        input: (N, C * kH * kW, L) or (C * kH * kW, L), L the number of blocks that fit.
        output: (N, C, *output_size).

    Example:
        >>> import numpy as np, nnframe as nf
        >>> nf.Fold((3, 3), 2)(np.ones((1, 4, 4)))[0, 0]  # overlaps summed
        array([[1., 2., 1.],
               [2., 4., 2.],
               [1., 2., 1.]])
    """

    input_spec = InputSpec(("N", "CK", "L"))

    def __init__(self, output_size, kernel_size, dilation=1, padding=0, stride=1):
        super().__init__()
        self.output_size = ntuple("Fold", "output_size", output_size, 2, 1)
        self._parse(kernel_size, dilation, padding, stride)

    def extra_repr(self) -> str:
        return f"output_size={self.output_size}, " + self._args_repr()

    def forward(self, x):
        x = _float(self, x)
        out_shape = self._blocks(self.output_size)
        k = int(np.prod(self.kernel_size))
        blocks = None if out_shape is None else int(np.prod(out_shape))
        if blocks is None or x.shape[1] % k or x.shape[2] != blocks:
            raise ShapeError(
                expected_got(
                    self,
                    f"input of shape (N, C * {k}, {blocks}) (C * kernel positions, blocks)",
                    fmt_shape(x.shape),
                )
            )
        self.save_for_backward(x.shape, out_shape)
        return self._fold(x, x.shape[0], x.shape[1] // k, self.output_size, out_shape)

    def backward(self, grad_output):
        shape, out_shape = self.saved
        n, c = shape[0], shape[1] // int(np.prod(self.kernel_size))
        g = check_grad(self, grad_output, (n, c, *self.output_size))
        return self._unfold(g, out_shape)
