"""Exporters of the normalization layers, in their evaluation form."""

from __future__ import annotations

import numpy as np

import nnframe as nf
from nnframe.onnx._context import register_exporter


def _per_channel(array: np.ndarray, ndim: int) -> np.ndarray:
    """(C,) -> (C, 1, ..., 1): broadcasts against (N, C, *spatial) from the right."""
    return array.reshape((-1,) + (1,) * (ndim - 2))


def _normalize(ctx, x, axes, eps: float) -> str:
    """(x - mean) / sqrt(var + eps) over ``axes`` (biased variance), as the layers compute it."""
    mean = ctx.reduce("ReduceMean", x.name, axes)
    d = ctx.node("Sub", [x.name, mean])
    var = ctx.reduce("ReduceMean", ctx.node("Mul", [d, d]), axes)
    std = ctx.node("Sqrt", [ctx.node("Add", [var, ctx.scalar(eps, x)])])
    return ctx.node("Mul", [d, ctx.node("Reciprocal", [std])])


def _affine(ctx, m, y: str, ndim: int) -> str:
    """y * weight + bias, per channel (axis 1)."""
    if m.weight is not None:
        y = ctx.node("Mul", [y, ctx.const(_per_channel(m.weight.data, ndim), "weight")])
    if m.bias is not None:
        y = ctx.node("Add", [y, ctx.const(_per_channel(m.bias.data, ndim), "bias")])
    return y


def _running(ctx, m, x) -> str:
    """The running statistics' normalization: (x - mean) * 1/sqrt(var + eps), then affine."""
    inv_std = 1.0 / np.sqrt(m.running_var + np.asarray(m.eps, m.running_var.dtype))
    y = ctx.node("Sub", [x.name, ctx.const(_per_channel(m.running_mean, x.ndim), "running_mean")])
    y = ctx.node("Mul", [y, ctx.const(_per_channel(inv_std, x.ndim), "inv_std")])
    return _affine(ctx, m, y, x.ndim)


@register_exporter(nf.BatchNorm1d)
@register_exporter(nf.BatchNorm2d)
@register_exporter(nf.BatchNorm3d)
def batch_norm(ctx, m, x):
    if m.track_running_stats:
        return _running(ctx, m, x)
    # no running statistics: even in evaluation the batch's own statistics are used
    return _affine(ctx, m, _normalize(ctx, x, [0, *range(2, x.ndim)], m.eps), x.ndim)


@register_exporter(nf.InstanceNorm1d)
@register_exporter(nf.InstanceNorm2d)
def instance_norm(ctx, m, x):
    if m.track_running_stats:
        return _running(ctx, m, x)
    return _affine(ctx, m, _normalize(ctx, x, list(range(2, x.ndim)), m.eps), x.ndim)


@register_exporter(nf.LayerNorm)
def layer_norm(ctx, m, x):
    k = len(m.normalized_shape)
    dtype = x.dtype
    scale = (
        ctx.param(m.weight.data, "weight")
        if m.weight is not None
        else ctx.const(np.ones(m.normalized_shape, dtype=dtype), "ones")
    )
    bias = None if m.bias is None else ctx.param(m.bias.data, "bias")
    return ctx.node("LayerNormalization", [x.name, scale, bias], axis=-k, epsilon=float(m.eps))


@register_exporter(nf.GroupNorm)
def group_norm(ctx, m, x):
    # (N, C, *spatial) -> (N, G, C/G * spatial), normalized over the last axis, then back
    grouped = ctx.reshape(x.name, [0, m.num_groups, -1])
    g = type(x)(grouped, x.value.reshape(x.shape[0], m.num_groups, -1))
    y = _normalize(ctx, g, [2], m.eps)
    y = ctx.node("Reshape", [y, ctx.node("Shape", [x.name])])
    return _affine(ctx, m, y, x.ndim)


@register_exporter(nf.RMSNorm)
def rms_norm(ctx, m, x):
    axes = list(range(x.ndim - len(m.normalized_shape), x.ndim))
    eps = np.finfo(x.dtype).eps if m.eps is None else m.eps
    ms = ctx.reduce("ReduceMean", ctx.node("Mul", [x.name, x.name]), axes)
    rms = ctx.node("Sqrt", [ctx.node("Add", [ms, ctx.scalar(eps, x)])])
    y = ctx.node("Mul", [x.name, ctx.node("Reciprocal", [rms])])
    if m.weight is not None:
        y = ctx.node("Mul", [y, ctx.param(m.weight.data, "weight")])
    return y
