"""Exporters of the convolutions and the pooling layers (window, adaptive and global) and of
MaxUnpool1d/2d."""

from __future__ import annotations

import numpy as np

import nnframe as nf
from nnframe.onnx._context import register_exporter

_PAD_MODES = {"reflect": "reflect", "replicate": "edge"}


def _conv_pads(m) -> list[tuple[int, int]]:
    """(before, after) per spatial axis, as the layer pads."""
    n = len(m.kernel_size)
    if m.padding == "valid":
        return [(0, 0)] * n
    if m.padding == "same":
        # total d * (k - 1); an odd total puts the extra element after (as PyTorch)
        totals = [d * (k - 1) for d, k in zip(m.dilation, m.kernel_size)]
        return [(t // 2, t - t // 2) for t in totals]
    return [(p, p) for p in m.padding]


def _onnx_pads(pads) -> list[int]:
    return [lo for lo, _ in pads] + [hi for _, hi in pads]


def _circular(ctx, x: str, pads, ndim: int) -> str:
    """Circular padding: each axis gets its last ``lo`` and first ``hi`` elements wrapped."""
    for i, (lo, hi) in enumerate(pads):
        axis = ndim - len(pads) + i
        parts = []
        if lo:
            parts.append(ctx.slice(x, [-lo], [np.iinfo(np.int64).max], [axis]))
        parts.append(x)
        if hi:
            parts.append(ctx.slice(x, [0], [hi], [axis]))
        if len(parts) > 1:
            x = ctx.node("Concat", parts, axis=axis)
    return x


@register_exporter(nf.Conv1d)
@register_exporter(nf.Conv2d)
@register_exporter(nf.Conv3d)
def conv(ctx, m, x):
    pads = _conv_pads(m)
    inp = x.name
    if m.padding_mode != "zeros" and any(lo or hi for lo, hi in pads):
        if m.padding_mode == "circular":
            inp = _circular(ctx, inp, pads, x.ndim)
        else:
            full = [(0, 0), (0, 0), *pads]
            inp = ctx.node(
                "Pad", [inp, ctx.ints(_onnx_pads(full), "pads")], mode=_PAD_MODES[m.padding_mode]
            )
        pads = [(0, 0)] * len(pads)
    w = ctx.param(m.weight.data, "weight")
    b = None if m.bias is None else ctx.param(m.bias.data, "bias")
    return ctx.node(
        "Conv",
        [inp, w, b],
        kernel_shape=list(m.kernel_size),
        strides=list(m.stride),
        dilations=list(m.dilation),
        pads=_onnx_pads(pads),
        group=int(m.groups),
    )


@register_exporter(nf.ConvTranspose1d)
@register_exporter(nf.ConvTranspose2d)
@register_exporter(nf.ConvTranspose3d)
def conv_transpose(ctx, m, x):
    # ONNX keeps PyTorch's (in, out // groups, *kernel) weight layout and output-size rule
    w = ctx.param(m.weight.data, "weight")
    b = None if m.bias is None else ctx.param(m.bias.data, "bias")
    return ctx.node(
        "ConvTranspose",
        [x.name, w, b],
        kernel_shape=list(m.kernel_size),
        strides=list(m.stride),
        dilations=list(m.dilation),
        pads=list(m.padding) * 2,
        output_padding=list(m.output_padding),
        group=int(m.groups),
    )


# ---------------------------------------------------------------------------------- window pooling
def _geometry(m, spatial):
    """(output sizes, (before, after) pads) of a window pool: the after side grows so the last
    ceil_mode window fits, which must start inside the input or the left padding (PyTorch)."""
    out, pads = [], []
    for size, k, s, p, d in zip(spatial, m.kernel_size, m.stride, m.padding, m.dilation):
        reach = d * (k - 1) + 1
        span = size + 2 * p - reach
        o = (span + (s - 1 if m.ceil_mode else 0)) // s + 1
        if m.ceil_mode and (o - 1) * s >= size + p:
            o -= 1
        out.append(o)
        pads.append((p, p + max(0, (o - 1) * s + reach - (size + 2 * p))))
    return out, pads


@register_exporter(nf.MaxPool1d)
@register_exporter(nf.MaxPool2d)
@register_exporter(nf.MaxPool3d)
def max_pool(ctx, m, x):
    _, pads = _geometry(m, x.shape[2:])
    # MaxPool ignores padded positions, as the layer's -inf padding does
    attrs = {
        "kernel_shape": list(m.kernel_size),
        "strides": list(m.stride),
        "dilations": list(m.dilation),
        "pads": _onnx_pads(pads),
    }
    if not m.return_indices:
        return ctx.node("MaxPool", [x.name], **attrs)
    # ONNX's indices run over the whole (N, C, *spatial) tensor, row-major (padding not
    # counted); PyTorch's over each (N, C) plane: the remainder by the plane size
    y, flat = ctx.node("MaxPool", [x.name], 2, **attrs)
    plane = int(np.prod(x.shape[2:], dtype=np.int64))
    return y, ctx.node("Mod", [flat, ctx.const(np.int64(plane), "plane")])


@register_exporter(nf.MaxUnpool1d)
@register_exporter(nf.MaxUnpool2d)
def max_unpool(ctx, m, x, indices, output_size=None):
    """ONNX's MaxUnpool takes indices over the whole output tensor: each (n, c) plane's
    indices are shifted by (n C + c) times the output plane's size, the batch read from the
    graph."""
    n = len(m.kernel_size)
    spatial = m._out_spatial(x.shape[2:], output_size)
    plane = int(np.prod(spatial, dtype=np.int64))
    lead = ctx.node("Shape", [x.name], start=0, end=2)  # [N, C]
    planes = ctx.node("ReduceProd", [lead], keepdims=0)  # N C, a scalar
    zero, one = ctx.const(np.int64(0), "zero"), ctx.const(np.int64(1), "one")
    offsets = ctx.node("Range", [zero, planes, one])  # (N C,): n C + c
    offsets = ctx.node("Mul", [offsets, ctx.const(np.int64(plane), "plane")])
    offsets = ctx.reshape(offsets, [-1, x.shape[1]] + [1] * n)
    idx = indices.name if indices.dtype == np.int64 else ctx.node("Cast", [indices.name], to=7)
    flat = ctx.node("Add", [idx, offsets])
    # the output size as a tensor: (N, C) from the input, the spatial sizes fixed
    shape = ctx.node("Concat", [lead, ctx.ints(spatial, "spatial")], axis=0)
    return ctx.node(
        "MaxUnpool",
        [x.name, flat, shape],
        kernel_shape=list(m.kernel_size),
        strides=list(m.stride),
        pads=list(m.padding) * 2,
    )


def _avg_counts(size, k, s, p, o, include_pad) -> np.ndarray:
    """Per-axis divisors: window positions inside [0, size + 2p) (padding counted) or inside the
    input [p, p + size)."""
    lo, hi = (0, size + 2 * p) if include_pad else (p, p + size)
    starts = np.arange(o) * s
    return np.minimum(starts + k, hi) - np.maximum(starts, lo)


@register_exporter(nf.AvgPool1d)
@register_exporter(nf.AvgPool2d)
@register_exporter(nf.AvgPool3d)
def avg_pool(ctx, m, x):
    out, pads = _geometry(m, x.shape[2:])
    attrs = {"kernel_shape": list(m.kernel_size), "strides": list(m.stride)}
    if not any(lo or hi for lo, hi in pads) and m.divisor_override is None:
        return ctx.node("AveragePool", [x.name], **attrs)
    # pad with zeros, take window means over k elements, then rescale to the layer's divisor
    full = [(0, 0), (0, 0), *pads]
    padded = ctx.node("Pad", [x.name, ctx.ints(_onnx_pads(full), "pads")], mode="constant")
    mean = ctx.node("AveragePool", [padded], **attrs)
    if m.divisor_override is not None:
        divisor = np.asarray(float(m.divisor_override))
    else:
        counts = [
            _avg_counts(size, k, s, p, o, m.count_include_pad)
            for size, k, s, p, o in zip(x.shape[2:], m.kernel_size, m.stride, m.padding, out)
        ]
        divisor = counts[0]
        for c in counts[1:]:
            divisor = np.multiply.outer(divisor, c)
    factor = (float(np.prod(m.kernel_size)) / divisor).astype(x.dtype)
    return ctx.node("Mul", [mean, ctx.const(factor, "divisor")])


# ---------------------------------------------------------------------------------- adaptive pooling
def _adaptive_sizes(m, x) -> list[int]:
    return [s if o is None else o for s, o in zip(x.shape[2:], m.output_size)]


def _bounds(size: int, o: int) -> list[tuple[int, int]]:
    """Window i covers [floor(i L / o), ceil((i + 1) L / o))."""
    return [((i * size) // o, -((-(i + 1) * size) // o)) for i in range(o)]


def _adaptive(ctx, m, x, op: str, global_op: str):
    out = _adaptive_sizes(m, x)
    spatial = x.shape[2:]
    if all(o == 1 for o in out):
        return ctx.node(global_op, [x.name])
    if all(s % o == 0 for s, o in zip(spatial, out)):
        kernel = [s // o for s, o in zip(spatial, out)]
        return ctx.node(op, [x.name], kernel_shape=kernel, strides=kernel)
    return None


@register_exporter(nf.AdaptiveAvgPool1d)
@register_exporter(nf.AdaptiveAvgPool2d)
@register_exporter(nf.AdaptiveAvgPool3d)
def adaptive_avg_pool(ctx, m, x):
    y = _adaptive(ctx, m, x, "AveragePool", "GlobalAveragePool")
    if y is not None:
        return y
    # uneven windows: one (o, L) averaging matrix per axis, y = A_H @ x @ A_W^T
    mats = []
    for size, o in zip(x.shape[2:], _adaptive_sizes(m, x)):
        a = np.zeros((o, size), dtype=x.dtype)
        for i, (s, e) in enumerate(_bounds(size, o)):
            a[i, s:e] = 1.0 / (e - s)
        mats.append(a)
    y = ctx.node("MatMul", [x.name, ctx.const(mats[-1].T, "avg_matrix")])
    if len(mats) >= 2:
        y = ctx.node("MatMul", [ctx.const(mats[-2], "avg_matrix"), y])
    if len(mats) == 3:  # along D: (D_out, D) contracted with axis 2
        y = ctx.node("Einsum", [ctx.const(mats[0], "avg_matrix"), y], equation="ed,ncdhw->ncehw")
    return y


@register_exporter(nf.AdaptiveMaxPool1d)
@register_exporter(nf.AdaptiveMaxPool2d)
@register_exporter(nf.AdaptiveMaxPool3d)
def adaptive_max_pool(ctx, m, x):
    y = _adaptive(ctx, m, x, "MaxPool", "GlobalMaxPool")
    if y is not None:
        return y
    # uneven windows: separable, the last axis first (a max of maxima is the max)
    y = x.name
    for axis in range(x.ndim - 1, 1, -1):
        size, o = x.shape[axis], _adaptive_sizes(m, x)[axis - 2]
        parts = [
            ctx.reduce("ReduceMax", ctx.slice(y, [s], [e], [axis]), [axis])
            for s, e in _bounds(size, o)
        ]
        y = ctx.node("Concat", parts, axis=axis)
    return y


# ---------------------------------------------------------------------------------- power-average pooling
@register_exporter(nf.LPPool1d)
@register_exporter(nf.LPPool2d)
@register_exporter(nf.LPPool3d)
def lp_pool(ctx, m, x):
    """(window average of x^p, padded for ceil_mode) times kernel / count, to the 1/p."""
    out, pads = _geometry(m, x.shape[2:])
    powered = ctx.node("Pow", [x.name, ctx.scalar(m.norm_type, x)])
    if any(lo or hi for lo, hi in pads):
        full = [(0, 0), (0, 0), *pads]
        powered = ctx.node("Pad", [powered, ctx.ints(_onnx_pads(full), "pads")], mode="constant")
    attrs = {"kernel_shape": list(m.kernel_size), "strides": list(m.stride)}
    mean = ctx.node("AveragePool", [powered], **attrs)  # the sum over the window / kernel size
    counts = [
        _avg_counts(size, k, s, 0, o, True)
        for size, k, s, o in zip(x.shape[2:], m.kernel_size, m.stride, out)
    ]
    divisor = counts[0]
    for c in counts[1:]:
        divisor = np.multiply.outer(divisor, c)
    # PyTorch: avg_pool (divided by the in-input count) times the full kernel size
    k = float(np.prod(m.kernel_size))
    factor = (k * k / divisor).astype(x.dtype)
    total = ctx.node("Mul", [mean, ctx.const(factor, "scale")])
    return ctx.node("Pow", [total, ctx.scalar(1.0 / m.norm_type, x)])
