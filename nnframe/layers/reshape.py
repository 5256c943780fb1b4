"""Shape layers: Flatten, Unflatten, Reshape, ZeroPad2d and Upsample.

Flatten, Unflatten and Reshape return views where numpy can (no copy) and backward reshapes the
gradient back. Upsample is separable: along each spatial axis the output is a fixed (out, in)
interpolation matrix times the input (nearest: one 1 per row; (bi/tri)linear: two weights per
row; bicubic: four),
so backward is the transposed matrices.
"""

from __future__ import annotations

import math

import numpy as np

from nnframe._pytorch_args import check_flag
from nnframe.core.backend import array_module
from nnframe.core.errors import ShapeError, check_grad, check_hyper, expected_got, fmt_shape
from nnframe.core.module import Module


def _as_array(x) -> np.ndarray:
    return x if type(x) is np.ndarray else array_module(x).asarray(x)


class Flatten(Module):
    """Flattens dims ``start_dim`` to ``end_dim`` into one (PyTorch's defaults keep the batch).

    Args:
        start_dim: first dim to flatten (default 1).
        end_dim: last dim to flatten (default -1).

    Shape:
        input: (N, *dims)    output: (N, prod(dims)) with the defaults.

    Example:
        >>> import numpy as np, nnframe as nf
        >>> nf.Flatten()(np.zeros((2, 3, 4, 5))).shape
        (2, 60)
    """

    def __init__(self, start_dim: int = 1, end_dim: int = -1):
        super().__init__()
        self.start_dim = int(start_dim)
        self.end_dim = int(end_dim)

    def extra_repr(self) -> str:
        return f"start_dim={self.start_dim}, end_dim={self.end_dim}"

    def forward(self, x):
        x = _as_array(x)
        nd = max(x.ndim, 1)
        start, end = self.start_dim % nd, self.end_dim % nd
        if not (-nd <= self.start_dim < nd and -nd <= self.end_dim < nd) or start > end:
            raise ShapeError(
                expected_got(
                    self,
                    f"an input with dims {self.start_dim} to {self.end_dim} in order",
                    f"shape {fmt_shape(x.shape)}",
                )
            )
        shape = x.shape[:start] + (math.prod(x.shape[start : end + 1]),) + x.shape[end + 1 :]
        self.save_for_backward(x.shape)
        return x.reshape(shape)

    def backward(self, grad_output):
        (shape,) = self.saved
        return array_module(grad_output).asarray(grad_output).reshape(shape)


class Unflatten(Module):
    """Splits dim ``dim`` into ``unflattened_size`` (the inverse of Flatten).

    Args:
        dim: the dim to split.
        unflattened_size: the new sizes; their product must equal the dim's size (one may be
            -1, inferred).

    Shape:
        input: (*, S, *)    output: (*, *unflattened_size, *)

    Example:
        >>> import numpy as np, nnframe as nf
        >>> nf.Unflatten(1, (3, 4))(np.zeros((2, 12))).shape
        (2, 3, 4)
    """

    def __init__(self, dim: int, unflattened_size):
        super().__init__()
        self.dim = int(dim)
        sizes = tuple(int(s) for s in unflattened_size)
        check_hyper(
            "Unflatten",
            "unflattened_size",
            unflattened_size,
            len(sizes) > 0 and all(s > 0 or s == -1 for s in sizes) and sizes.count(-1) <= 1,
            "must be positive sizes, at most one -1",
        )
        self.unflattened_size = sizes

    def extra_repr(self) -> str:
        return f"dim={self.dim}, unflattened_size={self.unflattened_size}"

    def forward(self, x):
        x = _as_array(x)
        nd = x.ndim
        if not -nd <= self.dim < nd:
            raise ShapeError(
                expected_got(self, f"an input with dim {self.dim}", fmt_shape(x.shape))
            )
        d = self.dim % nd
        size, known = x.shape[d], math.prod(s for s in self.unflattened_size if s != -1)
        sizes = tuple(size // known if s == -1 else s for s in self.unflattened_size)
        if math.prod(sizes) != size:
            raise ShapeError(
                expected_got(
                    self,
                    f"dim {self.dim} of size {math.prod(self.unflattened_size)} "
                    f"(= prod{self.unflattened_size})",
                    f"shape {fmt_shape(x.shape)}",
                )
            )
        self.save_for_backward(x.shape)
        return x.reshape(x.shape[:d] + sizes + x.shape[d + 1 :])

    def backward(self, grad_output):
        (shape,) = self.saved
        return array_module(grad_output).asarray(grad_output).reshape(shape)


class Reshape(Module):
    """Reshapes each sample to ``shape`` (the batch dim is kept, as in Keras' Reshape).

    Args:
        *shape: the per-sample shape; one entry may be -1 (inferred).

    Shape:
        input: (N, *dims)    output: (N, *shape), with prod(shape) == prod(dims).

    Example:
        >>> import numpy as np, nnframe as nf
        >>> nf.Reshape(4, -1)(np.zeros((2, 3, 8))).shape
        (2, 4, 6)
    """

    def __init__(self, *shape: int):
        super().__init__()
        if len(shape) == 1 and isinstance(shape[0], (tuple, list)):
            shape = tuple(shape[0])
        ok = all(isinstance(s, (int, np.integer)) and (s > 0 or s == -1) for s in shape)
        check_hyper(
            "Reshape", "shape", shape, ok and list(shape).count(-1) <= 1, "positive, one -1 at most"
        )
        self.shape = tuple(int(s) for s in shape)

    def extra_repr(self) -> str:
        return ", ".join(map(str, self.shape))

    def forward(self, x):
        x = _as_array(x)
        per_sample = math.prod(x.shape[1:]) if x.ndim else 0
        known = math.prod(s for s in self.shape if s != -1)
        fits = x.ndim >= 1 and (
            per_sample == known if -1 not in self.shape else per_sample % known == 0
        )
        if not fits:
            raise ShapeError(
                expected_got(
                    self,
                    f"input of shape (N, *dims) with prod(dims) "
                    f"{'divisible by ' if -1 in self.shape else '== '}{known}",
                    fmt_shape(x.shape),
                )
            )
        self.save_for_backward(x.shape)
        return x.reshape((x.shape[0], *self.shape))

    def backward(self, grad_output):
        (shape,) = self.saved
        return array_module(grad_output).asarray(grad_output).reshape(shape)


class ZeroPad2d(Module):
    """Pads the last two dims with zeros; negative amounts crop (as PyTorch).

    Args:
        padding: an int (all four sides) or ``(left, right, top, bottom)``.

    Shape:
        input: (*, H, W)    output: (*, H + top + bottom, W + left + right)

    Example:
        >>> import numpy as np, nnframe as nf
        >>> nf.ZeroPad2d((1, 0, 2, 0))(np.ones((1, 1, 1, 2)))[0, 0]
        array([[0., 0., 0.],
               [0., 0., 0.],
               [0., 1., 1.]])
    """

    def __init__(self, padding):
        super().__init__()
        if isinstance(padding, (int, np.integer)) and not isinstance(padding, bool):
            padding = (int(padding),) * 4
        ok = (
            isinstance(padding, (tuple, list))
            and len(padding) == 4
            and all(isinstance(p, (int, np.integer)) for p in padding)
        )
        check_hyper("ZeroPad2d", "padding", padding, ok, "must be an int or 4 ints")
        self.padding = tuple(int(p) for p in padding)

    def extra_repr(self) -> str:
        return f"{self.padding}"

    def _slices(self, shape):
        """(output shape, slices of the output and of the input that overlap)."""
        left, right, top, bottom = self.padding
        out_shape, out_sl, in_sl = list(shape[:-2]), [], []
        for size, lo, hi in ((shape[-2], top, bottom), (shape[-1], left, right)):
            out = size + lo + hi
            if out <= 0:
                raise ShapeError(
                    expected_got(
                        self, "a positive output size after cropping", f"input {fmt_shape(shape)}"
                    )
                )
            out_shape.append(out)
            out_sl.append(slice(max(lo, 0), out - max(hi, 0)))
            in_sl.append(slice(max(-lo, 0), size - max(-hi, 0)))
        return tuple(out_shape), (Ellipsis, *out_sl), (Ellipsis, *in_sl)

    def forward(self, x):
        x = _as_array(x)
        if x.ndim < 2:
            raise ShapeError(expected_got(self, "input of shape (*, H, W)", fmt_shape(x.shape)))
        if x.dtype.kind != "f":
            x = x.astype(np.float32)
        out_shape, out_sl, in_sl = self._slices(x.shape)
        y = array_module(x).zeros(out_shape, dtype=x.dtype)
        y[out_sl] = x[in_sl]
        self.save_for_backward(x.shape, out_shape, out_sl, in_sl)
        return y

    def backward(self, grad_output):
        shape, out_shape, out_sl, in_sl = self.saved
        g = check_grad(self, grad_output, out_shape)
        dx = array_module(g).zeros(shape, dtype=g.dtype)
        dx[in_sl] = g[out_sl]
        return dx


def _interp_matrix(n_in, n_out, mode, align_corners, scale, dtype) -> np.ndarray:
    """(n_out, n_in) matrix of one axis' interpolation, PyTorch's index rules.

    ``scale`` is the user's scale_factor for this axis (or None): PyTorch then maps with
    1 / scale_factor rather than n_in / n_out."""
    m = np.zeros((n_out, n_in), dtype=dtype)
    rows = np.arange(n_out)
    ratio = (1.0 / scale) if scale else n_in / n_out
    if mode == "nearest":
        src = np.minimum(np.floor(rows * ratio).astype(np.int64), n_in - 1)
        m[rows, src] = 1.0
        return m
    if mode == "bicubic":
        return _cubic_matrix(m, rows, n_in, n_out, align_corners, ratio)
    if align_corners:
        src = rows * ((n_in - 1) / (n_out - 1) if n_out > 1 else 0.0)
    else:
        src = np.maximum((rows + 0.5) * ratio - 0.5, 0.0)
    i0 = np.minimum(np.floor(src).astype(np.int64), n_in - 1)
    i1 = np.minimum(i0 + 1, n_in - 1)
    lam = src - i0
    m[rows, i0] += 1.0 - lam
    m[rows, i1] += lam
    return m


def _cubic_matrix(m, rows, n_in, n_out, align_corners, ratio) -> np.ndarray:
    """Cubic convolution (Keys, A = -0.75) as PyTorch's bicubic: the source index is not
    clamped at 0, and the four taps src - 1 .. src + 2 are clamped into the input."""
    if align_corners:
        src = rows * ((n_in - 1) / (n_out - 1) if n_out > 1 else 0.0)
    else:
        src = (rows + 0.5) * ratio - 0.5
    i0 = np.floor(src).astype(np.int64)
    t = src - i0
    a = -0.75

    def near(x):  # |x| <= 1
        return ((a + 2) * x - (a + 3)) * x * x + 1

    def far(x):  # 1 < |x| < 2
        return ((a * x - 5 * a) * x + 8 * a) * x - 4 * a

    for k, w in enumerate((far(t + 1), near(t), near(1 - t), far(2 - t))):
        np.add.at(m, (rows, np.clip(i0 - 1 + k, 0, n_in - 1)), w)  # clamped taps may coincide
    return m


# the interpolating modes and the number of spatial dims each takes (None: any)
_MODES = {"nearest": None, "linear": 1, "bilinear": 2, "bicubic": 2, "trilinear": 3}


class Upsample(Module):
    """Upsamples (or resizes) the spatial dims: nearest neighbour, (bi/tri)linear or bicubic,
    as PyTorch.

    Args:
        size: the output spatial size (an int or a tuple), or None.
        scale_factor: a multiplier per spatial dim (a number or a tuple), or None; exactly one
            of size and scale_factor is given.
        mode: 'nearest' (any number of spatial dims), 'linear' (3-D input), 'bilinear' or
            'bicubic' (4-D input), 'trilinear' (5-D input). Bicubic is Keys' cubic convolution
            with A = -0.75, as PyTorch (it may overshoot the input's range).
        align_corners: for the interpolating modes: map corner pixels' centres onto each other
            (default False, as PyTorch).
        recompute_scale_factor: with ``scale_factor``, True interpolates as if the computed
            output size had been given as ``size`` (the scale used is output / input size,
            not ``scale_factor``; they differ when the product is not an integer); None or
            False use ``scale_factor`` itself, as PyTorch. Refused with ``size``.

    Shape:
        input: (N, C, *spatial)    output: (N, C, *size) or (N, C, *floor(spatial * scale)).

    Example:
        >>> import numpy as np, nnframe as nf
        >>> nf.Upsample(scale_factor=2)(np.array([[[1.0, 2.0]]]))
        array([[[1., 1., 2., 2.]]])
    """

    def __init__(
        self,
        size=None,
        scale_factor=None,
        mode: str = "nearest",
        align_corners=None,
        recompute_scale_factor=None,
    ):
        super().__init__()
        if recompute_scale_factor is not None:
            check_flag("Upsample", "recompute_scale_factor", recompute_scale_factor)
            if recompute_scale_factor and size is not None:
                raise ValueError(
                    expected_got(
                        "Upsample",
                        "recompute_scale_factor only with scale_factor",
                        f"size={size!r}",
                        "it is not meaningful with an explicit size, as in PyTorch",
                    )
                )
        self.recompute_scale_factor = (
            None if recompute_scale_factor is None else bool(recompute_scale_factor)
        )
        check_hyper(
            "Upsample",
            "mode",
            mode,
            mode in _MODES,
            f"must be one of {sorted(_MODES)}",
        )
        check_hyper(
            "Upsample",
            "size",
            size,
            (size is None) != (scale_factor is None),
            "give exactly one of size and scale_factor",
        )
        if mode == "nearest" and align_corners is not None:
            raise ValueError("Upsample: invalid align_corners (only for the interpolating modes)")
        self.size = size
        self.scale_factor = scale_factor
        self.mode = mode
        self.align_corners = bool(align_corners) if align_corners is not None else None

    def extra_repr(self) -> str:
        what = f"size={self.size}" if self.size is not None else f"scale_factor={self.scale_factor}"
        return f"{what}, mode={self.mode!r}"

    def _per_axis(self, value, n):
        return tuple(value) if isinstance(value, (tuple, list)) else (value,) * n

    def forward(self, x):
        x = _as_array(x)
        if x.dtype.kind != "f":
            x = x.astype(np.float32)
        n = x.ndim - 2
        dims = _MODES[self.mode]
        if n < 1 or (dims is not None and n != dims):
            want = {None: "(N, C, *spatial)", 1: "(N, C, L)", 2: "(N, C, H, W)"}.get(
                dims, "(N, C, D, H, W)"
            )
            raise ShapeError(expected_got(self, f"input of shape {want}", fmt_shape(x.shape)))
        if self.size is not None:
            out = self._per_axis(self.size, n)
            scales = (None,) * n
        else:
            scales = tuple(float(s) for s in self._per_axis(self.scale_factor, n))
            out = tuple(int(math.floor(s * f)) for s, f in zip(x.shape[2:], scales))
            if self.recompute_scale_factor:  # interpolate as if out had been given as size
                scales = (None,) * n
        if len(out) != n or any(o <= 0 for o in out):
            raise ShapeError(
                expected_got(
                    self, f"{n} positive output size(s)", f"{out} for input {fmt_shape(x.shape)}"
                )
            )
        mats = [
            _interp_matrix(s, o, self.mode, self.align_corners, f, x.dtype)
            for s, o, f in zip(x.shape[2:], out, scales)
        ]
        xm = array_module(x)
        if xm is not np:  # built on the host (a few small matrices), used in x's module
            mats = [xm.asarray(m) for m in mats]
        y = x
        for axis, m in enumerate(mats):
            y = np.moveaxis(np.moveaxis(y, 2 + axis, -1) @ m.T, -1, 2 + axis)
        self.save_for_backward(x.shape, mats)
        return xm.ascontiguousarray(y)

    def backward(self, grad_output):
        shape, mats = self.saved
        g = check_grad(self, grad_output, shape[:2] + tuple(m.shape[0] for m in mats))
        for axis, m in enumerate(mats):
            g = np.moveaxis(np.moveaxis(g, 2 + axis, -1) @ m, -1, 2 + axis)
        return array_module(g).ascontiguousarray(g)
