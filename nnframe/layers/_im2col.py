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
