"""Exporters of Dense, the activations, dropout, reshaping layers and embeddings."""

from __future__ import annotations

import math

import numpy as np

import nnframe as nf
from nnframe.onnx._context import register_exporter, unsupported


# ---------------------------------------------------------------------------------- Dense
@register_exporter(nf.Dense)
def dense(ctx, m, x):
    w = ctx.param(m.weight.data, "weight")
    b = None if m.bias is None else ctx.param(m.bias.data, "bias")
    if x.ndim == 2:  # Gemm reads PyTorch's (out, in) layout with transB
        return ctx.node("Gemm", [x.name, w, b], transB=1)
    y = ctx.node("MatMul", [x.name, ctx.transpose(w, (1, 0))])
    return y if b is None else ctx.node("Add", [y, b])


# ---------------------------------------------------------------------------------- activations
def _simple(op: str, **attrs):
    def fn(ctx, m, x):
        return ctx.node(op, [x.name], **attrs)

    return fn


for _cls, _op in [
    (nf.ReLU, "Relu"),
    (nf.Sigmoid, "Sigmoid"),
    (nf.Tanh, "Tanh"),
    (nf.Softsign, "Softsign"),
    (nf.Hardswish, "HardSwish"),
    (nf.Identity, "Identity"),
    # dropout is the identity in evaluation, which is what an exported model runs
    (nf.Dropout, "Identity"),
    (nf.Dropout1d, "Identity"),
    (nf.Dropout2d, "Identity"),
    (nf.AlphaDropout, "Identity"),
]:
    register_exporter(_cls, _simple(_op))


@register_exporter(nf.Hardsigmoid)
def hardsigmoid(ctx, m, x):
    return ctx.node("HardSigmoid", [x.name], alpha=1.0 / 6.0, beta=0.5)


@register_exporter(nf.LeakyReLU)
def leaky_relu(ctx, m, x):
    return ctx.node("LeakyRelu", [x.name], alpha=float(m.negative_slope))


@register_exporter(nf.ELU)
def elu(ctx, m, x):
    return ctx.node("Elu", [x.name], alpha=float(m.alpha))


@register_exporter(nf.CELU)
def celu(ctx, m, x):
    return ctx.node("Celu", [x.name], alpha=float(m.alpha))


@register_exporter(nf.SELU)
def selu(ctx, m, x):
    return ctx.node("Selu", [x.name], alpha=float(m.ALPHA), gamma=float(m.SCALE))


@register_exporter(nf.Hardtanh)
@register_exporter(nf.ReLU6)
def hardtanh(ctx, m, x):
    lo, hi = ctx.scalar(m.min_val, x), ctx.scalar(m.max_val, x)
    return ctx.node("Clip", [x.name, lo, hi])


@register_exporter(nf.PReLU)
def prelu(ctx, m, x):
    w = m.weight.data
    # one slope for every element, or one per channel (axis 1), broadcast from the right
    shape = (1,) if w.size == 1 else (w.size,) + (1,) * max(x.ndim - 2, 0)
    return ctx.node("PRelu", [x.name, ctx.const(w.reshape(shape), "slope")])


@register_exporter(nf.Softmax)
def softmax(ctx, m, x):
    return ctx.node("Softmax", [x.name], axis=int(m.dim))


@register_exporter(nf.LogSoftmax)
def log_softmax(ctx, m, x):
    return ctx.node("LogSoftmax", [x.name], axis=int(m.dim))


@register_exporter(nf.LogSigmoid)
def log_sigmoid(ctx, m, x):
    # log sigmoid(x) = -softplus(-x)
    return ctx.node("Neg", [ctx.node("Softplus", [ctx.node("Neg", [x.name])])])


@register_exporter(nf.SiLU)
def silu(ctx, m, x):
    return ctx.node("Mul", [x.name, ctx.node("Sigmoid", [x.name])])


@register_exporter(nf.Mish)
def mish(ctx, m, x):
    return ctx.node("Mul", [x.name, ctx.node("Tanh", [ctx.node("Softplus", [x.name])])])


@register_exporter(nf.Softplus)
def softplus(ctx, m, x):
    beta = float(m.beta)
    z = x.name if beta == 1 else ctx.node("Mul", [x.name, ctx.scalar(beta, x)])
    y = ctx.node("Softplus", [z])
    if beta != 1:
        y = ctx.node("Div", [y, ctx.scalar(beta, x)])
    # linear above the threshold (in beta * x), as PyTorch
    linear = ctx.node("Greater", [z, ctx.scalar(m.threshold, x)])
    return ctx.node("Where", [linear, x.name, y])


@register_exporter(nf.GELU)
def gelu(ctx, m, x):
    if ctx.opset >= 20:
        return ctx.node("Gelu", [x.name], approximate=m.approximate)
    half = ctx.node("Mul", [x.name, ctx.scalar(0.5, x)])
    if m.approximate == "tanh":
        # 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))
        cube = ctx.node("Mul", [ctx.node("Mul", [x.name, x.name]), x.name])
        inner = ctx.node("Add", [x.name, ctx.node("Mul", [cube, ctx.scalar(0.044715, x)])])
        t = ctx.node("Tanh", [ctx.node("Mul", [inner, ctx.scalar(math.sqrt(2 / math.pi), x)])])
    else:
        # 0.5 x (1 + erf(x / sqrt 2))
        t = ctx.node("Erf", [ctx.node("Mul", [x.name, ctx.scalar(1 / math.sqrt(2), x)])])
    return ctx.node("Mul", [half, ctx.node("Add", [t, ctx.scalar(1.0, x)])])


# ---------------------------------------------------------------------------------- reshaping
@register_exporter(nf.Flatten)
def flatten(ctx, m, x):
    nd = max(x.ndim, 1)
    start, end = m.start_dim % nd, m.end_dim % nd
    # 0 copies a leading dim (the batch stays symbolic); the flattened run is inferred
    shape = [0] * start + [-1] + list(x.shape[end + 1 :])
    return ctx.reshape(x.name, shape)


@register_exporter(nf.Unflatten)
def unflatten(ctx, m, x):
    dim = m.dim % x.ndim
    shape = [0] * dim + list(m.unflattened_size) + list(x.shape[dim + 1 :])
    return ctx.reshape(x.name, shape)


@register_exporter(nf.Reshape)
def reshape(ctx, m, x):
    return ctx.reshape(x.name, [0, *m.shape])  # the batch dim is kept (Keras' Reshape)


@register_exporter(nf.ZeroPad2d)
def zero_pad(ctx, m, x):
    left, right, top, bottom = m.padding
    lead = [0] * (x.ndim - 2)
    pads = [*lead, top, left, *lead, bottom, right]  # negative amounts crop, as in ONNX's Pad
    return ctx.node("Pad", [x.name, ctx.ints(pads, "pads")], mode="constant")


@register_exporter(nf.Upsample)
def upsample(ctx, m, x):
    n = x.ndim - 2
    if m.mode == "nearest":
        # PyTorch's nearest: src = floor(dst / scale), scale = scale_factor or out / in
        attrs = {"mode": "nearest", "coordinate_transformation_mode": "asymmetric"}
        attrs["nearest_mode"] = "floor"
    elif m.mode == "bicubic":  # Keys' A = -0.75; PyTorch does not clamp the source index at 0
        coords = "align_corners" if m.align_corners else "half_pixel"
        attrs = {"mode": "cubic", "coordinate_transformation_mode": coords}
        attrs["cubic_coeff_a"] = -0.75
    else:
        coords = "align_corners" if m.align_corners else "pytorch_half_pixel"
        attrs = {"mode": "linear", "coordinate_transformation_mode": coords}
    if m.size is None:
        f = m.scale_factor if isinstance(m.scale_factor, (tuple, list)) else (m.scale_factor,) * n
        scales = ctx.const(np.array([1, 1, *f], dtype=np.float32), "scales")
        return ctx.node("Resize", [x.name, None, scales], **attrs)
    size = m.size if isinstance(m.size, (tuple, list)) else (m.size,) * n
    # sizes (N, C, *size) with N read at run time, so the batch stays dynamic
    nc = ctx.slice(ctx.node("Shape", [x.name]), [0], [2], [0])
    sizes = ctx.node("Concat", [nc, ctx.ints(size, "size")], axis=0)
    return ctx.node("Resize", [x.name, None, None, sizes], **attrs)


# ---------------------------------------------------------------------------------- embeddings
def _table(ctx, m):
    w = m.weight.data
    if m.max_norm is None:
        return ctx.param(w, "weight")
    # forward rescales each looked-up row whose norm exceeds max_norm: do it to every row once
    norms = np.linalg.norm(w.astype(np.float64), ord=m.norm_type, axis=1)
    scale = np.where(norms > m.max_norm, m.max_norm / (norms + 1e-7), 1.0)
    return ctx.const((w * scale[:, None].astype(w.dtype)).astype(w.dtype), "weight")


@register_exporter(nf.Embedding)
def embedding(ctx, m, x):
    return ctx.node("Gather", [_table(ctx, m), x.name], axis=0)


@register_exporter(nf.EmbeddingBag)
def embedding_bag(ctx, m, x):
    if x.ndim != 2:
        raise unsupported(m, "only (N, L) index inputs (fixed-size bags, no offsets) export")
    rows = ctx.node("Gather", [_table(ctx, m), x.name], axis=0)  # (N, L, D)
    dtype = m.weight.data.dtype
    if m.padding_idx is None:
        op = {"sum": "ReduceSum", "mean": "ReduceMean", "max": "ReduceMax"}[m.mode]
        return ctx.reduce(op, rows, [1], keepdims=False)
    keep = ctx.node("Not", [ctx.node("Equal", [x.name, ctx.ints([m.padding_idx], "pad")])])
    keep = ctx.unsqueeze(keep, [2])  # (N, L, 1)
    if m.mode == "max":
        low = ctx.const(np.asarray(-np.inf, dtype=dtype), "neg_inf")
        best = ctx.reduce("ReduceMax", ctx.node("Where", [keep, rows, low]), [1], keepdims=False)
        # an all-padding bag is zeros, as PyTorch
        return ctx.node("Where", [ctx.node("IsInf", [best]), ctx.scalar(0.0, dtype), best])
    kept = ctx.node("Cast", [keep], to=1 if dtype == np.float32 else 11)
    total = ctx.reduce("ReduceSum", ctx.node("Mul", [rows, kept]), [1], keepdims=False)
    if m.mode == "sum":
        return total
    count = ctx.reduce("ReduceSum", kept, [1], keepdims=False)  # (N, 1)
    count = ctx.node("Max", [count, ctx.scalar(1.0, dtype)])
    return ctx.node("Div", [total, count])


# ---------------------------------------------------------------------------------- issue 14's activations
@register_exporter(nf.Threshold)
def threshold(ctx, m, x):
    keep = ctx.node("Greater", [x.name, ctx.scalar(m.threshold, x)])
    return ctx.node("Where", [keep, x.name, ctx.scalar(m.value, x)])


@register_exporter(nf.Hardshrink)
def hardshrink(ctx, m, x):
    return ctx.node("Shrink", [x.name], lambd=float(m.lambd), bias=0.0)


@register_exporter(nf.Softshrink)
def softshrink(ctx, m, x):
    return ctx.node("Shrink", [x.name], lambd=float(m.lambd), bias=float(m.lambd))


@register_exporter(nf.Tanhshrink)
def tanhshrink(ctx, m, x):
    return ctx.node("Sub", [x.name, ctx.node("Tanh", [x.name])])


@register_exporter(nf.Softmin)
def softmin(ctx, m, x):
    dim = (0 if x.ndim in (0, 1, 3) else 1) if m.dim is None else int(m.dim)
    return ctx.node("Softmax", [ctx.node("Neg", [x.name])], axis=dim)


@register_exporter(nf.Softmax2d)
def softmax2d(ctx, m, x):
    return ctx.node("Softmax", [x.name], axis=-3)


@register_exporter(nf.GLU)
def glu(ctx, m, x):
    half = x.shape[m.dim] // 2
    a, b = ctx.node("Split", [x.name, ctx.ints([half, half], "split")], outputs=2, axis=m.dim)
    return ctx.node("Mul", [a, ctx.node("Sigmoid", [b])])
