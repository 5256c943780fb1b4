"""Shared machinery of convolution and pooling: argument parsing, input and gradient shape
checks, output sizes, padding and its gradient, im2col and col2im.

Column layout. ``im2col`` turns a padded input ``(N, C, *S)`` into columns of shape
``(C, *kernel, N, *out)``, contiguous, so that ``cols.reshape(C * K, N * P)`` (K = prod(kernel),
P = prod(out)) is the right operand of ONE large GEMM ``W (O, C*K) @ cols (C*K, N*P)``. One big
product keeps BLAS efficient (a batch of N small products is slower, above all with threads), and
the copy that builds the columns has the output positions innermost, so it streams memory.
``col2im`` is its adjoint: it accumulates columns back into a padded input by looping over the
kernel offsets (prod(kernel) strided adds), never with ``np.add.at``.
"""

from __future__ import annotations

import itertools
from functools import lru_cache

import numpy as np

from nnframe.core.backend import array_module, as_strided

# PyTorch's padding_mode -> numpy.pad's mode
PAD_MODES = {"zeros": "constant", "reflect": "reflect", "replicate": "edge", "circular": "wrap"}


def ntuple(who: str, name: str, value, n: int, minimum: int) -> tuple[int, ...]:
    """An int or a length-n sequence of ints, each >= minimum, as an n-tuple."""
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
        values = (int(value),) * n
    elif (
        isinstance(value, (tuple, list))
        and len(value) == n
        and all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in value)
    ):
        values = tuple(int(v) for v in value)
    else:
        raise ValueError(f"{who}: invalid {name}={value!r} (must be an int or a tuple of {n} ints)")
    if any(v < minimum for v in values):
        raise ValueError(f"{who}: invalid {name}={value!r} (must be >= {minimum})")
    return values


def conv_out_size(size: int, kernel: int, stride: int, pad_total: int, dilation: int) -> int:
    """floor((size + pad_total - dilation * (kernel - 1) - 1) / stride) + 1."""
    return (size + pad_total - dilation * (kernel - 1) - 1) // stride + 1


def spatial_names(n: int) -> tuple[str, ...]:
    return {1: ("L",), 2: ("H", "W"), 3: ("D", "H", "W")}[n]


# ------------------------------------------------------------------------------ padding
def pad(x: np.ndarray, pads: tuple[tuple[int, int], ...], mode: str = "zeros", value=0.0):
    """Pads the trailing ``len(pads)`` dims of x by ``(before, after)`` each (returns x when
    there is nothing to pad). ``mode`` is a PyTorch padding_mode; ``value`` fills 'zeros'."""
    if not any(lo or hi for lo, hi in pads):
        return x
    lead = x.ndim - len(pads)
    if mode == "zeros":
        shape = x.shape[:lead] + tuple(s + lo + hi for s, (lo, hi) in zip(x.shape[lead:], pads))
        xm = array_module(x)
        out = xm.full(shape, value, dtype=x.dtype) if value else xm.zeros(shape, dtype=x.dtype)
        inner = tuple(slice(lo, lo + s) for s, (lo, _) in zip(x.shape[lead:], pads))
        out[(Ellipsis, *inner)] = x
        return out
    return np.pad(x, [(0, 0)] * lead + list(pads), mode=PAD_MODES[mode])


def unpad(grad: np.ndarray, pads: tuple[tuple[int, int], ...], mode: str = "zeros"):
    """The gradient of :func:`pad`: crops for 'zeros'; for the other modes folds every padded
    position back onto the input position it copied (a loop over the few padded positions)."""
    if not any(lo or hi for lo, hi in pads):
        return grad
    lead = grad.ndim - len(pads)
    if mode == "zeros":
        inner = tuple(slice(lo, s - hi) for s, (lo, hi) in zip(grad.shape[lead:], pads))
        return grad[(Ellipsis, *inner)]
    for axis_i, (lo, hi) in enumerate(pads):
        axis = lead + axis_i
        size = grad.shape[axis] - lo - hi
        # source[j]: the input index that padded position j copies (numpy.pad of an arange)
        source = np.pad(np.arange(size), (lo, hi), mode=PAD_MODES[mode])
        g = np.moveaxis(grad, axis, 0)
        out = g[lo : lo + size].copy()
        for j in itertools.chain(range(lo), range(lo + size, lo + size + hi)):
            out[source[j]] += g[j]
        grad = np.moveaxis(out, 0, axis)
    return grad


# ------------------------------------------------------------------------------ im2col
def windows(xp, kernel, stride, dilation, out_shape):
    """A strided (read-only) view of padded input ``(N, C, *S)`` as ``(C, *kernel, N, *out)``:
    element ``[c, *k, n, *o]`` is ``xp[n, c, *(o * stride + k * dilation)]``."""
    s = xp.strides
    sp = s[2:]
    shape = (xp.shape[1], *kernel, xp.shape[0], *out_shape)
    strides = (
        s[1],
        *(st * d for st, d in zip(sp, dilation)),
        s[0],
        *(st * t for st, t in zip(sp, stride)),
    )
    return as_strided(xp, shape, strides, writeable=False)


def im2col(xp, kernel, stride, dilation, out_shape, out=None) -> np.ndarray:
    """Columns ``(C, *kernel, N, *out)`` of the padded input ``(N, C, *S)``: a writable,
    contiguous array (one copy of the strided view, output positions innermost), new or
    ``out`` (any contiguous buffer of the same size and dtype, reused)."""
    view = windows(xp, kernel, stride, dilation, out_shape)
    if out is None or out.size != view.size or out.dtype != xp.dtype or type(out) is not type(xp):
        out = array_module(xp).empty(view.shape, dtype=xp.dtype)
    cols = out.reshape(view.shape)
    np.copyto(cols, view)
    return cols


@lru_cache(maxsize=256)
def offset_slices(kernel, stride, dilation, out_shape) -> tuple:
    """For each kernel offset k (row-major), the slices of the padded input it reads:
    ``o * stride + k * dilation`` for o in range(out)."""
    return tuple(
        (
            offsets,
            tuple(
                slice(k * d, k * d + t * (o - 1) + 1, t)
                for k, d, t, o in zip(offsets, dilation, stride, out_shape)
            ),
        )
        for offsets in itertools.product(*(range(k) for k in kernel))
    )


def col2im(cols, padded_shape, kernel, stride, dilation, out_shape) -> np.ndarray:
    """Adjoint of :func:`im2col`: accumulates columns ``(C, *kernel, N, *out)`` into a new
    zero array of ``padded_shape`` ``(N, C, *S)``, one strided add per kernel offset."""
    dx = array_module(cols).zeros(padded_shape, dtype=cols.dtype)
    dxt = dx.swapaxes(0, 1)  # (C, N, *S): the same memory, in the columns' order
    for offsets, sl in offset_slices(kernel, stride, dilation, out_shape):
        dxt[(slice(None), slice(None), *sl)] += cols[(slice(None), *offsets)]
    return dx


# ------------------------------------------------------------------------------ flat columns
# With stride 1 the windows of a padded input (N, C, *Sp) need not be gathered position by
# position. Number the positions of the padded grid row-major (q = sum_i s_i g_i, with the
# grid strides g_i = prod(Sp[i+1:])): the input under kernel offset k at output position s is
# at q(s) + shift(k), shift(k) = sum_i k_i d_i g_i. So every (channel, offset) row of the
# columns is ONE contiguous run of the flattened padded image, of length
# L = q(out - 1) + 1, and the product W @ cols yields the outputs at every q in [0, L): the
# valid ones (s_i < out_i) and, in between, "wrapped" positions (s_i >= out_i on an inner
# axis), which are simply dropped. The copy that builds such columns moves long runs (an
# image row and more at a time) instead of one output row per (channel, offset): far fewer,
# longer copies. The cost is the wrapped positions' share of the GEMM: (Sp_w - out_w) / Sp_w
# on the innermost axis (2 of 16 for a 14-wide image padded by one).


def grid_strides(spatial) -> tuple[int, ...]:
    """Element strides of a C-contiguous grid of shape ``spatial``: prod(spatial[i+1:])."""
    return tuple(int(np.prod(spatial[i + 1 :], dtype=np.int64)) for i in range(len(spatial)))


def flat_length(spatial, out_shape) -> int:
    """L = q(out - 1) + 1: the flat positions from the first output to the last one."""
    return sum((o - 1) * g for o, g in zip(out_shape, grid_strides(spatial))) + 1


def flat_windows(xp, kernel, dilation, out_shape):
    """A strided (read-only) view ``(N, C, *kernel, L)`` of a C-contiguous padded input
    ``(N, C, *Sp)``: element ``[n, c, *k, q]`` is ``xp[n, c].flat[q + sum_i k_i d_i g_i]``
    (stride 1). Each ``[n, c, *k]`` row is a contiguous run of the image."""
    item = xp.itemsize
    grid = grid_strides(xp.shape[2:])
    length = flat_length(xp.shape[2:], out_shape)
    shape = (xp.shape[0], xp.shape[1], *kernel, length)
    strides = (xp.strides[0], xp.strides[1], *(d * g * item for d, g in zip(dilation, grid)), item)
    return as_strided(xp, shape, strides, writeable=False)


def flat_positions(buf, spatial, out_shape, *, writeable: bool = False):
    """The valid positions ``(..., *out)`` of flat outputs ``buf (..., L)`` computed on the
    grid ``spatial`` (element ``[..., *s]`` is ``buf[..., q(s)]``): a strided view, writable on
    request (the positions are distinct, so writing through it is safe)."""
    item = buf.strides[-1]
    strides = buf.strides[:-1] + tuple(g * item for g in grid_strides(spatial))
    return as_strided(buf, buf.shape[:-1] + tuple(out_shape), strides, writeable=writeable)


def image_windows(xp, kernel, dilation, out_shape):
    """A strided (read-only) view ``(N, C, *kernel, *out)`` of a padded input ``(N, C, *Sp)``
    for stride 1: element ``[n, c, *k, *s]`` is ``xp[n, c, *(s + k * dilation)]`` (the
    windows image by image, where :func:`windows` puts the images after the kernel)."""
    sp = xp.strides[2:]
    shape = (*xp.shape[:2], *kernel, *out_shape)
    strides = (*xp.strides[:2], *(st * d for st, d in zip(sp, dilation)), *sp)
    return as_strided(xp, shape, strides, writeable=False)


class ChunkWindows:
    """The flat windows (:func:`flat_windows`) of the padded images ``x[n0:n0 + step]``,
    chunk by chunk, with the padding done per chunk, in cache (``view=image_windows``: those
    windows instead).

    With 'zeros' padding one zero buffer of ``step`` padded images serves every chunk: only
    its interior is written, so its border stays zero, and its window view is built once
    (a strided view costs more to create than a small chunk's copy). Without padding the
    windows of x itself are sliced. Other modes pad each chunk (:func:`pad`).
    """

    def __init__(
        self, x, pads, mode: str, step: int, kernel, dilation, out_shape, view=flat_windows
    ):
        self.x, self.pads, self.mode, self.step = x, pads, mode, step
        self.args = (kernel, dilation, out_shape)
        self.windows = view
        xm = array_module(x)
        self.padded = tuple(s + lo + hi for s, (lo, hi) in zip(x.shape[2:], pads))
        self.view = self.interior = None
        if not any(lo or hi for lo, hi in pads):
            self.view = view(xm.ascontiguousarray(x), *self.args)
        elif mode == "zeros":
            buffer = xm.zeros((step, x.shape[1], *self.padded), dtype=x.dtype)
            inner = tuple(slice(lo, lo + s) for s, (lo, _) in zip(x.shape[2:], pads))
            self.interior = buffer[(Ellipsis, *inner)]
            self.view = view(buffer, *self.args)

    def __call__(self, n0: int):
        """The windows ``(m, C, *kernel, L)`` of images n0 .. n0 + m - 1 (m <= step)
        (``(m, C, *kernel, *out)`` with ``view=image_windows``)."""
        chunk = self.x[n0 : n0 + self.step]
        m = chunk.shape[0]
        if self.interior is not None:
            self.interior[:m] = chunk
            return self.view[:m]
        if self.view is not None:
            return self.view[n0 : n0 + m]
        xp = array_module(chunk).ascontiguousarray(pad(chunk, self.pads, self.mode))
        return self.windows(xp, *self.args)
