"""Pooling: MaxPool1d/2d/3d, AvgPool1d/2d/3d, AdaptiveMaxPool1d/2d/3d, AdaptiveAvgPool1d/2d/3d
and LPPool1d/2d/3d.

Window pooling loops over the kernel offsets (prod(kernel) strided passes over the output, as
col2im does), so no window copy of the input is ever built:

- max: a running ``np.maximum`` (NaN propagates). Each output gradient goes to the FIRST input
  equal to the maximum in row-major window order: PyTorch's tie rule. When the windows do not
  overlap (the usual kernel = stride) forward also keeps, per kernel offset, a boolean plane
  marking where that offset holds the first maximum (built while the planes are in cache), and
  backward is one product per offset; otherwise (or when an output is NaN) backward compares
  each offset's inputs with the output. (Tracking an arg-max index in forward needs masked
  copies, which numpy runs an order of magnitude slower than plain element-wise passes.)
- average: a running sum divided by the window's count (PyTorch's ``count_include_pad`` rule).

Adaptive pooling splits each axis into ``output_size`` windows ``[floor(i L / o), ceil((i+1) L / o))``.
When every axis divides evenly this is window pooling with kernel = stride = L / o (global pooling
is the case o = 1). Otherwise it is separable: average pooling is a matrix product per axis,
max pooling a max over the last axis then over the one before (which keeps the row-major
first-maximum rule).
"""

from __future__ import annotations

import numpy as np

from nnframe._pytorch_args import check_flag
from nnframe.core.backend import array_module
from nnframe.core.errors import ShapeError, check_grad, check_hyper, expected_got, fmt_shape
from nnframe.core.hooks import is_grad_enabled
from nnframe.core.input_spec import InputSpec
from nnframe.core.module import Module
from nnframe.layers._im2col import (
    ntuple,
    offset_slices,
    pad,
    spatial_names,
    unpad,
)


def _float_input(who, x) -> np.ndarray:
    """Pooling has no parameters: a floating input keeps its dtype, others become float32."""
    if type(x) is not np.ndarray:
        x = array_module(x).asarray(x)  # numpy for lists; the array's own module otherwise
    if x.dtype.kind == "f":
        return x
    if x.dtype.kind not in "biu":
        raise TypeError(expected_got(who, "a real numeric input", f"dtype {x.dtype}"))
    return x.astype(np.float32)


def _geometry(who, x, kernel, stride, padding, dilation, ceil_mode):
    """(output spatial shape, pads) where pads extend the right side so the last (ceil_mode)
    window fits; errors name the layer when the output would be empty."""
    out, pads = [], []
    for size, k, s, p, d in zip(x.shape[2:], kernel, stride, padding, dilation):
        reach = d * (k - 1) + 1
        span = size + 2 * p - reach
        if span < 0:
            raise ShapeError(
                expected_got(
                    who,
                    f"input of shape {fmt_shape(['N', 'C', *spatial_names(len(kernel))])} with "
                    f"each padded spatial size >= the (dilated) kernel {fmt_shape(kernel)}",
                    f"{fmt_shape(x.shape)} (padding {fmt_shape(padding)})",
                )
            )
        o = (span + (s - 1 if ceil_mode else 0)) // s + 1
        if ceil_mode and (o - 1) * s >= size + p:
            o -= 1  # the last window must start inside the input or the left padding
        out.append(o)
        pads.append((p, p + max(0, (o - 1) * s + reach - (size + 2 * p))))
    return tuple(out), tuple(pads)


def max_pool(x, kernel, stride, dilation, pads, out_shape):
    """(y, xp): the window maxima (a running ``np.maximum`` over the kernel offsets, which
    propagates NaN) and the padded input, which backward needs to find the arg-max."""
    xp = pad(x, pads, value=-np.inf)
    slices = offset_slices(kernel, stride, dilation, out_shape)
    y = xp[(Ellipsis, *slices[0][1])].copy()
    for _, sl in slices[1:]:
        np.maximum(y, xp[(Ellipsis, *sl)], out=y)
    return y, xp


def max_pool_backward(g, y, xp, kernel, stride, dilation, pads, out_shape):
    """Routes each output gradient to the FIRST input of its window (row-major) equal to the
    maximum: PyTorch's tie rule. Finding the arg-max here, from the saved input and output,
    costs a comparison per offset and keeps forward (and inference) free of index bookkeeping."""
    slices = offset_slices(kernel, stride, dilation, out_shape)
    disjoint = _disjoint(kernel, stride, dilation)
    tiles = not any(lo or hi for lo, hi in pads) and all(
        d == 1 and s == k and o * k == size
        for s, k, d, o, size in zip(stride, kernel, dilation, out_shape, xp.shape[2:])
    )
    # windows that tile the input write every element once: no zero fill needed
    xm = array_module(g)
    dxp = xm.empty(xp.shape, dtype=g.dtype) if tiles else xm.zeros(xp.shape, dtype=g.dtype)
    nan = np.isnan(y)
    nan = nan if nan.any() else None
    taken = None
    for _, sl in slices:
        v = xp[(Ellipsis, *sl)]
        hit = v == y
        if nan is not None:
            hit |= np.isnan(v) & nan
        if taken is None:
            taken = hit
        else:
            np.greater(hit, taken, out=hit)  # a hit only where no earlier offset took it
            taken |= hit
        if disjoint:
            np.multiply(g, hit, out=dxp[(Ellipsis, *sl)])
        else:
            dxp[(Ellipsis, *sl)] += g * hit
    return unpad(dxp, pads)


def _disjoint(kernel, stride, dilation) -> bool:
    """Whether the windows never overlap (stride >= the dilated kernel on every axis)."""
    return all(s >= d * (k - 1) + 1 for s, k, d in zip(stride, kernel, dilation))


def max_pool_masks(y, xp, kernel, stride, dilation, out_shape):
    """For disjoint windows and a NaN-free output: one boolean plane per kernel offset
    (row-major), ``(K, *y.shape)``, True where that offset holds its window's FIRST maximum
    (PyTorch's tie rule), or None when y holds a NaN (then backward finds the arg-max itself,
    see :func:`max_pool_backward`).

    Built in forward, from the planes the maximum was just read from (still in cache), so that
    backward is one product per offset, ``dL/dx[offset k] = g * mask_k``, with no comparison.
    """
    if np.isnan(y).any():
        return None
    slices = offset_slices(kernel, stride, dilation, out_shape)
    masks = array_module(y).empty((len(slices), *y.shape), dtype=bool)
    taken = None
    for k, (_, sl) in enumerate(slices):
        hit = np.equal(xp[(Ellipsis, *sl)], y, out=masks[k])
        if taken is None:
            taken = hit.copy()
        else:
            np.greater(hit, taken, out=hit)  # a hit only where no earlier offset took it
            taken |= hit
    return masks


def max_pool_backward_masks(g, masks, xp_shape, kernel, stride, dilation, pads, out_shape):
    """:func:`max_pool_backward` from the masks of :func:`max_pool_masks`: each offset's
    plane of the input gradient is ``g * mask_k``; positions no window covers stay zero."""
    slices = offset_slices(kernel, stride, dilation, out_shape)
    xm = array_module(g)
    tiles = not any(lo or hi for lo, hi in pads) and all(
        d == 1 and s == k and o * k == size
        for s, k, d, o, size in zip(stride, kernel, dilation, out_shape, xp_shape[2:])
    )
    # windows that tile the input write every element once: no zero fill needed
    dxp = xm.empty(xp_shape, dtype=g.dtype) if tiles else xm.zeros(xp_shape, dtype=g.dtype)
    for mask, (_, sl) in zip(masks, slices):
        np.multiply(g, mask, out=dxp[(Ellipsis, *sl)])
    return unpad(dxp, pads)


def max_pool_indices(y, xp, kernel, stride, dilation, pads, out_shape, in_spatial):
    """PyTorch's ``return_indices``: for each output, the flat index into its (N, C) plane of
    the unpadded input of the window's first maximum (row-major; NaN counts as a maximum), as
    int64. Only computed when asked: separable, ``base(o) + offset(first hit)``."""
    mult = [int(np.prod(in_spatial[a + 1 :], dtype=np.int64)) for a in range(len(in_spatial))]
    xm = array_module(y)
    base = xm.zeros(out_shape, dtype=np.int64)
    for a, (o, s, (lo, _), m) in enumerate(zip(out_shape, stride, pads, mult)):
        shape = [1] * len(out_shape)
        shape[a] = o
        base = base + ((xm.arange(o) * s - lo) * m).reshape(shape)
    idx = xm.zeros(y.shape, dtype=np.int64)
    taken = xm.zeros(y.shape, dtype=bool)
    nan = np.isnan(y)
    for offsets, sl in offset_slices(kernel, stride, dilation, out_shape):
        v = xp[(Ellipsis, *sl)]
        hit = (v == y) | (np.isnan(v) & nan)
        hit &= ~taken
        shift = sum(j * d * m for j, d, m in zip(offsets, dilation, mult))
        np.copyto(idx, base + shift, where=hit)
        taken |= hit
    return idx


def _avg_counts(size, k, s, p, o, include_pad) -> np.ndarray:
    """Per-axis window counts for the divisor: positions inside [0, size + 2p) (padding
    counted) or inside the input [p, p + size) (padding not counted)."""
    lo, hi = (0, size + 2 * p) if include_pad else (p, p + size)
    starts = np.arange(o) * s
    return np.minimum(starts + k, hi) - np.maximum(starts, lo)


class _PoolNd(Module):
    _n = 0

    def _parse(self, kernel_size, stride, padding, dilation, ceil_mode):
        who, n = type(self).__name__, self._n
        self.kernel_size = ntuple(who, "kernel_size", kernel_size, n, 1)
        self.stride = self.kernel_size if stride is None else ntuple(who, "stride", stride, n, 1)
        self.padding = ntuple(who, "padding", padding, n, 0)
        self.dilation = ntuple(who, "dilation", dilation, n, 1)
        reach = [d * (k - 1) + 1 for k, d in zip(self.kernel_size, self.dilation)]
        check_hyper(
            who,
            "padding",
            padding,
            all(2 * p <= r for p, r in zip(self.padding, reach)),
            f"must be at most half the (dilated) kernel size {tuple(reach)}",
        )
        self.ceil_mode = bool(ceil_mode)

    def _window_input(self, x):
        """(x as a float array, output spatial shape, pads), errors naming the layer."""
        x = _float_input(self, x)
        out_shape, pads = _geometry(
            self, x, self.kernel_size, self.stride, self.padding, self.dilation, self.ceil_mode
        )
        return x, out_shape, pads

    def _base_repr(self) -> str:
        parts = [f"kernel_size={self.kernel_size}", f"stride={self.stride}"]
        if any(self.padding):
            parts.append(f"padding={self.padding}")
        if self.dilation != (1,) * self._n:
            parts.append(f"dilation={self.dilation}")
        if self.ceil_mode:
            parts.append("ceil_mode=True")
        return ", ".join(parts)


class _MaxPoolNd(_PoolNd):
    def __init__(
        self,
        kernel_size,
        stride=None,
        padding=0,
        dilation=1,
        return_indices: bool = False,
        ceil_mode: bool = False,
    ):
        super().__init__()
        self.return_indices = check_flag(type(self).__name__, "return_indices", return_indices)
        self._parse(kernel_size, stride, padding, dilation, ceil_mode)

    def extra_repr(self) -> str:
        text = self._base_repr()
        return text + ", return_indices=True" if self.return_indices else text

    def forward(self, x):
        x, out_shape, pads = self._window_input(x)
        kernel, stride, dilation = self.kernel_size, self.stride, self.dilation
        y, xp = max_pool(x, kernel, stride, dilation, pads, out_shape)
        masks = None
        if _disjoint(kernel, stride, dilation) and y.size and is_grad_enabled():
            masks = max_pool_masks(y, xp, kernel, stride, dilation, out_shape)
        if masks is None:
            self.save_for_backward(y, xp, pads, out_shape, None)
        else:  # the masks replace the input: backward needs only its shape
            self.save_for_backward(y, xp.shape, pads, out_shape, masks)
        if self.return_indices:  # (output, int64 indices for MaxUnpool), as PyTorch
            args = (self.kernel_size, self.stride, self.dilation, pads, out_shape, x.shape[2:])
            return y, max_pool_indices(y, xp, *args)
        return y

    def backward(self, grad_output):
        y, xp, pads, out_shape, masks = self.saved
        if isinstance(grad_output, tuple):  # return_indices: (dL/doutput, None for the indices)
            grad_output = grad_output[0]
        g = check_grad(self, grad_output, y.shape)
        if masks is not None:
            return max_pool_backward_masks(
                g, masks, xp, self.kernel_size, self.stride, self.dilation, pads, out_shape
            )
        return max_pool_backward(
            g, y, xp, self.kernel_size, self.stride, self.dilation, pads, out_shape
        )


class MaxPool1d(_MaxPoolNd):
    """Max over sliding windows of ``(N, C, L)`` signals.

    Args:
        kernel_size: window size (an int or a 1-tuple).
        stride: window step (default: kernel_size).
        padding: implicit -inf padding on both sides, at most half the (dilated) kernel.
        dilation: spacing between window elements.
        return_indices: forward returns ``(output, indices)``: for each output, the int64 flat
            index of its maximum in the input's (L) or (H, W) plane, as PyTorch's (what
            :class:`MaxUnpool1d` takes); backward then takes ``(grad_output, None)``.
        ceil_mode: round the output size up (a last partial window, if it starts inside the
            input or the left padding).

    Backward sends each output's gradient to its window's first maximum (PyTorch's tie rule).

    Shape:
        input: (N, C, L)
        output: (N, C, L_out), L_out = floor_or_ceil((L + 2 padding - dilation (kernel_size - 1)
        - 1) / stride) + 1.

    Example:
        >>> import numpy as np, nnframe as nf
        >>> nf.MaxPool1d(2)(np.array([[[1.0, 3.0, 2.0, 2.0, 5.0]]]))
        array([[[3., 2.]]])
    """

    _n = 1
    input_spec = InputSpec(("N", "C", *spatial_names(1)))


class MaxPool2d(_MaxPoolNd):
    """Max over sliding windows of ``(N, C, H, W)`` images; the arguments of
    :class:`MaxPool1d`, each an int or a pair.

    Shape:
        input: (N, C, H, W)
        output: (N, C, H_out, W_out), each side as MaxPool1d's L_out.

    Example:
        >>> import numpy as np, nnframe as nf
        >>> nf.MaxPool2d(2)(np.arange(16.0).reshape(1, 1, 4, 4))
        array([[[[ 5.,  7.],
                 [13., 15.]]]])
    """

    _n = 2
    input_spec = InputSpec(("N", "C", *spatial_names(2)))


class _AvgPoolNd(_PoolNd):
    def __init__(
        self,
        kernel_size,
        stride=None,
        padding=0,
        ceil_mode=False,
        count_include_pad=True,
        divisor_override=None,
    ):
        super().__init__()
        self._parse(kernel_size, stride, padding, 1, ceil_mode)
        self.count_include_pad = bool(count_include_pad)
        if divisor_override is not None:
            check_hyper(
                type(self).__name__,
                "divisor_override",
                divisor_override,
                isinstance(divisor_override, (int, np.integer)) and divisor_override > 0,
                "must be a positive int or None",
            )
        self.divisor_override = divisor_override

    def extra_repr(self) -> str:
        text = self._base_repr()
        if not self.count_include_pad:
            text += ", count_include_pad=False"
        if self.divisor_override is not None:
            text += f", divisor_override={self.divisor_override}"
        return text

    def _divisor(self, x, out_shape):
        if self.divisor_override is not None:
            return float(self.divisor_override)
        counts = [
            _avg_counts(size, k, s, p, o, self.count_include_pad)
            for size, k, s, p, o in zip(
                x.shape[2:], self.kernel_size, self.stride, self.padding, out_shape
            )
        ]
        divisor = counts[0]
        for c in counts[1:]:
            divisor = np.multiply.outer(divisor, c)
        return array_module(x).asarray(divisor, dtype=x.dtype)  # host counts, x's module

    def forward(self, x):
        x, out_shape, pads = self._window_input(x)
        xp = pad(x, pads)
        slices = offset_slices(self.kernel_size, self.stride, self.dilation, out_shape)
        y = xp[(Ellipsis, *slices[0][1])].copy()
        for _, sl in slices[1:]:
            y += xp[(Ellipsis, *sl)]
        divisor = self._divisor(x, out_shape)
        y /= divisor
        self.save_for_backward(x.shape, pads, out_shape, divisor)
        return y

    def backward(self, grad_output):
        x_shape, pads, out_shape, divisor = self.saved
        g = check_grad(self, grad_output, x_shape[:2] + out_shape)
        g = g / divisor
        padded = x_shape[:2] + tuple(s + lo + hi for s, (lo, hi) in zip(x_shape[2:], pads))
        dxp = array_module(g).zeros(padded, dtype=g.dtype)
        for _, sl in offset_slices(self.kernel_size, self.stride, self.dilation, out_shape):
            dxp[(Ellipsis, *sl)] += g
        return unpad(dxp, pads)


class AvgPool1d(_AvgPoolNd):
    """Average over sliding windows of ``(N, C, L)`` signals.

    Args:
        kernel_size, stride, padding, ceil_mode: as :class:`MaxPool1d` (zero padding).
        count_include_pad: count the zero padding in the divisor (positions beyond the padding,
            reached only with ceil_mode, are never counted: PyTorch's rule).
        divisor_override: divide by this instead of the window count.

    Shape:
        input: (N, C, L)
        output: (N, C, L_out), as :class:`MaxPool1d` with dilation 1.

    Example:
        >>> import numpy as np, nnframe as nf
        >>> nf.AvgPool1d(2)(np.array([[[1.0, 3.0, 2.0, 4.0]]]))
        array([[[2., 3.]]])
    """

    _n = 1
    input_spec = InputSpec(("N", "C", *spatial_names(1)))

    def __init__(
        self, kernel_size, stride=None, padding=0, ceil_mode=False, count_include_pad=True
    ):
        super().__init__(kernel_size, stride, padding, ceil_mode, count_include_pad)


class AvgPool2d(_AvgPoolNd):
    """Average over sliding windows of ``(N, C, H, W)`` images; the arguments of
    :class:`AvgPool1d`, each an int or a pair.

    Shape:
        input: (N, C, H, W)
        output: (N, C, H_out, W_out).

    Example:
        >>> import numpy as np, nnframe as nf
        >>> nf.AvgPool2d(2)(np.arange(16.0).reshape(1, 1, 4, 4))
        array([[[[ 2.5,  4.5],
                 [10.5, 12.5]]]])
    """

    _n = 2
    input_spec = InputSpec(("N", "C", *spatial_names(2)))


# ---------------------------------------------------------------------------- adaptive pooling
def _bounds(size: int, o: int) -> list[tuple[int, int]]:
    """Window i of an adaptive pool: [floor(i size / o), ceil((i + 1) size / o))."""
    return [((i * size) // o, -(-((i + 1) * size) // o)) for i in range(o)]


def _axis_slice(ndim: int, axis: int, sl) -> tuple:
    return (slice(None),) * (ndim + axis) + (sl,)


def _blocks(x: np.ndarray, out_shape) -> np.ndarray:
    """x ``(N, C, *S)`` as a view ``(N, C, *out, *kernel)`` of the windows that tile it
    (kernel = S / out on every axis)."""
    n = len(out_shape)
    kernel = [s // o for s, o in zip(x.shape[2:], out_shape)]
    split = x.reshape(x.shape[:2] + tuple(v for o, k in zip(out_shape, kernel) for v in (o, k)))
    order = (0, 1, *range(2, 2 + 2 * n, 2), *range(3, 3 + 2 * n, 2))
    return split.transpose(order)


class _AdaptivePoolNd(Module):
    _n = 0

    def __init__(self, output_size):
        super().__init__()
        who, n = type(self).__name__, self._n
        sizes = output_size if isinstance(output_size, (tuple, list)) else (output_size,) * n
        ok = len(sizes) == n and all(
            s is None or (isinstance(s, (int, np.integer)) and not isinstance(s, bool) and s > 0)
            for s in sizes
        )
        check_hyper(who, "output_size", output_size, ok, f"must be a positive int or {n} of them")
        self.output_size = tuple(None if s is None else int(s) for s in sizes)

    def extra_repr(self) -> str:
        size = self.output_size[0] if self._n == 1 else self.output_size
        return f"output_size={size}"

    def _out_shape(self, x) -> tuple[int, ...]:
        return tuple(s if o is None else o for s, o in zip(x.shape[2:], self.output_size))


class _AdaptiveAvgPoolNd(_AdaptivePoolNd):
    def forward(self, x):
        x = _float_input(self, x)
        out_shape = self._out_shape(x)
        n = self._n
        if all(s % o == 0 for s, o in zip(x.shape[2:], out_shape)):
            # even windows (global pooling included): a mean over each block
            y = _blocks(x, out_shape).mean(axis=tuple(range(2 + n, 2 + 2 * n)))
            self.save_for_backward(x.shape, out_shape, None)
            return y
        # one (o, L) averaging matrix per axis: y = A_H @ x @ A_W^T (2-D), x @ A_L^T (1-D)
        mats, xm = [], array_module(x)
        for size, o in zip(x.shape[2:], out_shape):
            a = np.zeros((o, size), dtype=x.dtype)  # built on the host, row by row
            for i, (s, e) in enumerate(_bounds(size, o)):
                a[i, s:e] = 1.0 / (e - s)
            mats.append(a if xm is np else xm.asarray(a))
        y = x @ mats[-1].T
        if n >= 2:
            y = mats[-2] @ y
        if n == 3:  # along D: (D_out, D) contracted with axis 2, moved back to axis 2
            y = np.tensordot(mats[0], y, axes=([1], [2])).transpose(1, 2, 0, 3, 4)
        self.save_for_backward(x.shape, out_shape, mats)
        return y

    def backward(self, grad_output):
        x_shape, out_shape, mats = self.saved
        g = check_grad(self, grad_output, x_shape[:2] + out_shape)
        if mats is None:  # each input gets its block's gradient / block size
            dx = array_module(g).empty(x_shape, dtype=g.dtype)
            size = np.prod(x_shape[2:]) // np.prod(out_shape)
            _blocks(dx, out_shape)[...] = (g / g.dtype.type(size)).reshape(g.shape + (1,) * self._n)
            return dx
        if self._n == 3:
            g = np.tensordot(mats[0].T, g, axes=([1], [2])).transpose(1, 2, 0, 3, 4)
        if self._n >= 2:
            g = mats[-2].T @ g
        return g @ mats[-1]


class AdaptiveAvgPool1d(_AdaptiveAvgPoolNd):
    """Average pooling to a fixed output length (``output_size=1``: global average pooling).

    Args:
        output_size: the output length L_out.

    Shape:
        input: (N, C, L)    output: (N, C, L_out)

    Example:
        >>> import numpy as np, nnframe as nf
        >>> nf.AdaptiveAvgPool1d(2)(np.array([[[1.0, 2.0, 3.0, 4.0, 5.0]]]))
        array([[[2., 4.]]])
    """

    _n = 1
    input_spec = InputSpec(("N", "C", *spatial_names(1)))


class AdaptiveAvgPool2d(_AdaptiveAvgPoolNd):
    """Average pooling to a fixed output size (``output_size=1``: global average pooling).

    Args:
        output_size: an int (square) or a pair (H_out, W_out); None keeps that input size.

    Shape:
        input: (N, C, H, W)    output: (N, C, H_out, W_out)

    Example:
        >>> import numpy as np, nnframe as nf
        >>> nf.AdaptiveAvgPool2d(1)(np.ones((2, 3, 5, 7))).shape
        (2, 3, 1, 1)
    """

    _n = 2
    input_spec = InputSpec(("N", "C", *spatial_names(2)))


class _AdaptiveMaxPoolNd(_AdaptivePoolNd):
    def __init__(self, output_size, return_indices: bool = False):
        super().__init__(output_size)
        self.return_indices = check_flag(type(self).__name__, "return_indices", return_indices)

    def extra_repr(self) -> str:
        text = super().extra_repr()
        return text + ", return_indices=True" if self.return_indices else text

    def forward(self, x):
        x = _float_input(self, x)
        out_shape = self._out_shape(x)
        sizes = x.shape[2:]
        # the flat position of every input element in its (N, C) plane, for return_indices
        pos = None
        if self.return_indices:
            ar = array_module(x).arange(int(np.prod(sizes)))
            pos = np.broadcast_to(ar.reshape(sizes), x.shape)
        if all(s % o == 0 for s, o in zip(sizes, out_shape)):
            kernel = tuple(s // o for s, o in zip(sizes, out_shape))
            if np.prod(kernel) > 16:
                # big even windows (global pooling): arg-max over each block, flattened
                # row-major, so np.argmax's first maximum is PyTorch's
                flat = array_module(x).ascontiguousarray(_blocks(x, out_shape))
                # explicit block size: an empty batch has no -1 to infer
                flat = flat.reshape(flat.shape[: 2 + self._n] + (int(np.prod(kernel)),))
                arg = flat.argmax(axis=-1)[..., None]
                y = np.take_along_axis(flat, arg, axis=-1)[..., 0]
                self.save_for_backward(x.shape, out_shape, ("blocks", arg, flat.shape))
                if pos is not None:
                    where = _blocks(pos, out_shape).reshape(flat.shape)
                    return y, np.take_along_axis(where, arg, axis=-1)[..., 0].astype(np.int64)
                return y
            # small even windows: window max pooling with kernel = stride = L / o
            pads = ((0, 0),) * self._n
            y, xp = max_pool(x, kernel, kernel, (1,) * self._n, pads, out_shape)
            self.save_for_backward(x.shape, out_shape, ("windows", kernel, y, xp))
            if pos is not None:
                ones = (1,) * self._n
                return y, max_pool_indices(y, xp, kernel, kernel, ones, pads, out_shape, sizes)
            return y
        # uneven windows: max over the last axis, then over the one before (row-major ties)
        stages, y = [], x
        for axis in range(-1, -self._n - 1, -1):
            o = out_shape[axis]
            ys, args, ps = [], [], []
            for s, e in _bounds(y.shape[axis], o):
                sl = _axis_slice(y.ndim, axis, slice(s, e))
                seg = y[sl]
                a = seg.argmax(axis=axis, keepdims=True)  # the first maximum (or NaN)
                ys.append(np.take_along_axis(seg, a, axis=axis))
                args.append(a)
                if pos is not None:  # carry each maximum's input position through the stages
                    ps.append(np.take_along_axis(pos[sl], a, axis=axis))
            stages.append((axis, y.shape, args))
            y = np.concatenate(ys, axis=axis)
            if pos is not None:
                pos = np.concatenate(ps, axis=axis)
        self.save_for_backward(x.shape, out_shape, ("stages", stages))
        if pos is not None:
            return y, pos.astype(np.int64)
        return y

    def backward(self, grad_output):
        if isinstance(grad_output, tuple):  # return_indices: (dL/doutput, None for the indices)
            grad_output = grad_output[0]
        x_shape, out_shape, how = self.saved
        g = check_grad(self, grad_output, x_shape[:2] + out_shape)
        if how[0] == "blocks":
            arg, flat_shape = how[1:]
            xm = array_module(g)
            dflat = xm.zeros(flat_shape, dtype=g.dtype)
            np.put_along_axis(dflat, arg, g[..., None], axis=-1)
            dx = xm.empty(x_shape, dtype=g.dtype)
            _blocks(dx, out_shape)[...] = dflat.reshape(_blocks(dx, out_shape).shape)
            return dx
        if how[0] == "windows":
            kernel, y, xp = how[1:]
            pads = ((0, 0),) * self._n
            return max_pool_backward(g, y, xp, kernel, kernel, (1,) * self._n, pads, out_shape)
        xm = array_module(g)
        for axis, in_shape, args in reversed(how[1]):
            dx = xm.zeros(in_shape, dtype=g.dtype)
            for i, ((s, e), a) in enumerate(zip(_bounds(in_shape[axis], len(args)), args)):
                gi = g[_axis_slice(g.ndim, axis, slice(i, i + 1))]
                seg = dx[_axis_slice(dx.ndim, axis, slice(s, e))]
                positions = xm.arange(e - s).reshape((-1,) + (1,) * (-axis - 1))
                seg += np.where(positions == a, gi, 0)  # windows may overlap by one: add
            g = dx
        return g


class AdaptiveMaxPool1d(_AdaptiveMaxPoolNd):
    """Max pooling to a fixed output length (``output_size=1``: global max pooling).

    Args:
        output_size: the output length L_out.
        return_indices: forward returns ``(output, indices)`` (int64 positions of the maxima,
            as :class:`MaxPool1d`'s); backward then takes ``(grad_output, None)``.

    Shape:
        input: (N, C, L)    output: (N, C, L_out)

    Example:
        >>> import numpy as np, nnframe as nf
        >>> nf.AdaptiveMaxPool1d(2)(np.array([[[1.0, 5.0, 3.0, 4.0, 2.0]]]))
        array([[[5., 4.]]])
    """

    _n = 1
    input_spec = InputSpec(("N", "C", *spatial_names(1)))


class AdaptiveMaxPool2d(_AdaptiveMaxPoolNd):
    """Max pooling to a fixed output size (``output_size=1``: global max pooling).

    Args:
        output_size: an int (square) or a pair (H_out, W_out); None keeps that input size.
        return_indices: forward returns ``(output, indices)`` (int64 flat positions of the
            maxima in each (H, W) plane, as :class:`MaxPool2d`'s).

    Shape:
        input: (N, C, H, W)    output: (N, C, H_out, W_out)

    Example:
        >>> import numpy as np, nnframe as nf
        >>> nf.AdaptiveMaxPool2d(1)(np.arange(6.0).reshape(1, 1, 2, 3))
        array([[[[5.]]]])
    """

    _n = 2
    input_spec = InputSpec(("N", "C", *spatial_names(2)))


# ---------------------------------------------------------------------------- 3-D pooling
class MaxPool3d(_MaxPoolNd):
    """Max over sliding windows of ``(N, C, D, H, W)`` volumes; the arguments of
    :class:`MaxPool1d`, each an int or a triple.

    Shape:
        input: (N, C, D, H, W) or (C, D, H, W).
        output: (N, C, D_out, H_out, W_out), each side as MaxPool1d's L_out.

    Example:
        >>> import numpy as np, nnframe as nf
        >>> nf.MaxPool3d(2)(np.arange(8.0).reshape(1, 1, 2, 2, 2))
        array([[[[[7.]]]]])
    """

    _n = 3
    input_spec = InputSpec(("N", "C", *spatial_names(3)))


class AvgPool3d(_AvgPoolNd):
    """Average over sliding windows of ``(N, C, D, H, W)`` volumes; the arguments of
    :class:`AvgPool1d` (and ``divisor_override``), each an int or a triple.

    Shape:
        input: (N, C, D, H, W) or (C, D, H, W).
        output: (N, C, D_out, H_out, W_out).

    Example:
        >>> import numpy as np, nnframe as nf
        >>> nf.AvgPool3d(2)(np.arange(8.0).reshape(1, 1, 2, 2, 2))
        array([[[[[3.5]]]]])
    """

    _n = 3
    input_spec = InputSpec(("N", "C", *spatial_names(3)))


class AdaptiveAvgPool3d(_AdaptiveAvgPoolNd):
    """Average pooling to a fixed output size (``output_size=1``: global average pooling).

    Args:
        output_size: an int (cube) or a triple (D_out, H_out, W_out); None keeps that size.

    Shape:
        input: (N, C, D, H, W) or (C, D, H, W).    output: (N, C, D_out, H_out, W_out).

    Example:
        >>> import numpy as np, nnframe as nf
        >>> nf.AdaptiveAvgPool3d((1, 2, None))(np.ones((2, 3, 5, 4, 7))).shape
        (2, 3, 1, 2, 7)
    """

    _n = 3
    input_spec = InputSpec(("N", "C", *spatial_names(3)))


class AdaptiveMaxPool3d(_AdaptiveMaxPoolNd):
    """Max pooling to a fixed output size (``output_size=1``: global max pooling).

    Args:
        output_size: an int (cube) or a triple (D_out, H_out, W_out); None keeps that size.
        return_indices: forward returns ``(output, indices)`` (int64 flat positions of the
            maxima in each (D, H, W) volume, as PyTorch's).

    Shape:
        input: (N, C, D, H, W) or (C, D, H, W).    output: (N, C, D_out, H_out, W_out).

    Example:
        >>> import numpy as np, nnframe as nf
        >>> nf.AdaptiveMaxPool3d(1)(np.arange(24.0).reshape(1, 1, 2, 3, 4))
        array([[[[[23.]]]]])
    """

    _n = 3
    input_spec = InputSpec(("N", "C", *spatial_names(3)))


# ---------------------------------------------------------------------------- power-average pooling
class _LPPoolNd(_PoolNd):
    """(sum over each window of x^p)^(1/p), as PyTorch: the window average of x^p times the
    kernel size (so a last partial window of ceil_mode is scaled up to a full one), then the
    1/p power."""

    def __init__(self, norm_type: float, kernel_size, stride=None, ceil_mode: bool = False):
        super().__init__()
        who = type(self).__name__
        ok = isinstance(norm_type, (int, float, np.integer, np.floating)) and not isinstance(
            norm_type, bool
        )
        ok = ok and 0 < norm_type < np.inf
        check_hyper(who, "norm_type", norm_type, ok, "must be > 0 and finite")
        self.norm_type = float(norm_type)
        self._parse(kernel_size, stride, 0, 1, ceil_mode)

    def extra_repr(self) -> str:
        return f"norm_type={self.norm_type:g}, " + self._base_repr()

    def forward(self, x):
        x, out_shape, pads = self._window_input(x)
        p = self.norm_type
        xp = pad(x, pads)
        powered = xp**p
        slices = offset_slices(self.kernel_size, self.stride, self.dilation, out_shape)
        total = powered[(Ellipsis, *slices[0][1])].copy()
        for _, sl in slices[1:]:
            total += powered[(Ellipsis, *sl)]
        # the average pool's divisor (window positions inside the input) times the kernel size
        counts = [
            _avg_counts(size, k, s, 0, o, True)
            for size, k, s, o in zip(x.shape[2:], self.kernel_size, self.stride, out_shape)
        ]
        scale = counts[0]
        for c in counts[1:]:
            scale = np.multiply.outer(scale, c)
        scale = array_module(x).asarray(int(np.prod(self.kernel_size)) / scale, dtype=x.dtype)
        total *= scale
        with np.errstate(invalid="ignore", divide="ignore"):
            y = total ** (1 / p)
        self.save_for_backward(xp, total, y, scale, pads, out_shape)
        return y

    def backward(self, grad_output):
        xp, total, y, scale, pads, out_shape = self.saved
        g = check_grad(self, grad_output, y.shape)
        p = self.norm_type
        with np.errstate(invalid="ignore", divide="ignore"):
            # d y / d total = y / (p total); d total / d x = scale p x^(p - 1)
            gt = g * y / total * scale
            dxp = array_module(g).zeros(xp.shape, dtype=g.dtype)
            for _, sl in offset_slices(self.kernel_size, self.stride, self.dilation, out_shape):
                dxp[(Ellipsis, *sl)] += gt
            dxp *= xp ** (p - 1)
        return unpad(dxp, pads)


class LPPool1d(_LPPoolNd):
    """Power-average pooling: (sum over each window of x^p)^(1/p) (p = 1: sum pooling; large p
    approaches max pooling), as PyTorch's.

    Args:
        norm_type: p, > 0.
        kernel_size: window size (an int or a 1-tuple).
        stride: window step (default: kernel_size).
        ceil_mode: round the output size up (a last partial window, scaled to a full one).

    Shape:
        input: (N, C, L) or (C, L).
        output: (N, C, L_out), L_out = floor_or_ceil((L - kernel_size) / stride) + 1.

    Example:
        >>> import numpy as np, nnframe as nf
        >>> nf.LPPool1d(2, 2)(np.array([[[3.0, 4.0, 1.0, 0.0]]]))
        array([[[5., 1.]]])
    """

    _n = 1
    input_spec = InputSpec(("N", "C", *spatial_names(1)))


class LPPool2d(_LPPoolNd):
    """Power-average pooling over ``(N, C, H, W)`` images; the arguments of :class:`LPPool1d`,
    each an int or a pair.

    Shape:
        input: (N, C, H, W) or (C, H, W).    output: (N, C, H_out, W_out).

    Example:
        >>> import numpy as np, nnframe as nf
        >>> nf.LPPool2d(1, 2)(np.ones((1, 1, 4, 4)))
        array([[[[4., 4.],
                 [4., 4.]]]])
    """

    _n = 2
    input_spec = InputSpec(("N", "C", *spatial_names(2)))


class LPPool3d(_LPPoolNd):
    """Power-average pooling over ``(N, C, D, H, W)`` volumes; the arguments of
    :class:`LPPool1d`, each an int or a triple.

    Shape:
        input: (N, C, D, H, W) or (C, D, H, W).    output: (N, C, D_out, H_out, W_out).

    Example:
        >>> import numpy as np, nnframe as nf
        >>> nf.LPPool3d(2, 2)(np.full((1, 1, 2, 2, 2), 0.5))
        array([[[[[1.41421356]]]]])
    """

    _n = 3
    input_spec = InputSpec(("N", "C", *spatial_names(3)))
