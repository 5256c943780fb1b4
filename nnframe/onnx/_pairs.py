"""Exporters of the layers of two inputs: Bilinear (Einsum), CosineSimilarity and
PairwiseDistance (element-wise operators and reductions)."""

from __future__ import annotations

import numpy as np

import nnframe as nf
from nnframe.onnx._context import register_exporter, unsupported


@register_exporter(nf.Bilinear)
def bilinear(ctx, m, x1, x2):
    w = ctx.param(m.weight.data, "weight")
    y = ctx.node("Einsum", [x1.name, w, x2.name], equation="...i,oij,...j->...o")
    if m.bias is None:
        return y
    return ctx.node("Add", [y, ctx.param(m.bias.data, "bias")])


def _norm(ctx, v: str, axis: int, keepdims: bool = True) -> str:
    return ctx.node("Sqrt", [ctx.reduce("ReduceSum", ctx.node("Mul", [v, v]), [axis], keepdims)])


@register_exporter(nf.CosineSimilarity)
def cosine_similarity(ctx, m, x1, x2):
    eps = ctx.scalar(m.eps, x1)
    n1 = ctx.node("Max", [_norm(ctx, x1.name, m.dim), eps])
    n2 = ctx.node("Max", [_norm(ctx, x2.name, m.dim), eps])
    dot = ctx.reduce("ReduceSum", ctx.node("Mul", [x1.name, x2.name]), [m.dim], keepdims=False)
    denom = ctx.node("Mul", [n1, n2])
    return ctx.node("Div", [dot, ctx.squeeze(denom, [m.dim])])


@register_exporter(nf.PairwiseDistance)
def pairwise_distance(ctx, m, x1, x2):
    d = ctx.node("Add", [ctx.node("Sub", [x1.name, x2.name]), ctx.scalar(m.eps, x1)])
    a = ctx.node("Abs", [d])
    keep = bool(m.keepdim)
    p = m.norm
    if p == 2:
        return _norm(ctx, d, -1, keep)
    if p == 1:
        return ctx.reduce("ReduceSum", a, [-1], keep)
    if np.isinf(p):
        return ctx.reduce("ReduceMax", a, [-1], keep)
    if p <= 0:
        raise unsupported(m, f"p={p}")
    powered = ctx.node("Pow", [a, ctx.scalar(p, x1)])
    total = ctx.reduce("ReduceSum", powered, [-1], keep)
    return ctx.node("Pow", [total, ctx.scalar(1.0 / p, x1)])
