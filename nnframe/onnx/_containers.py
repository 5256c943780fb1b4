"""Exporters of Sequential and the branch/merge containers (Concat, Add, Residual)."""

from __future__ import annotations

import nnframe as nf
from nnframe.onnx._context import register_exporter


@register_exporter(nf.Sequential)
def sequential(ctx, m, *inputs):
    values = inputs
    for i, layer in enumerate(m):
        out = ctx.convert(layer, *values, name=str(i))
        # the next layer gets the whole output, a tuple included (LSTM -> GetItem), as forward
        values = (out,)
    return _names(values[0])


def _names(values):
    if isinstance(values, tuple):
        return tuple(_names(v) for v in values)
    return None if values is None else values.name


@register_exporter(nf.Concat)
def concat(ctx, m, x):
    outs = [ctx.convert(b, x, name=str(i)) for i, b in enumerate(m)]
    return ctx.node("Concat", [o.name for o in outs], axis=int(m.axis))


@register_exporter(nf.Add)
def add(ctx, m, *inputs):
    if not len(m):  # Add() without branches: the merge of several inputs (graph models)
        from nnframe.onnx._graph import _add_merge

        return _add_merge(ctx, m, *inputs)
    (x,) = inputs
    outs = [ctx.convert(b, x, name=str(i)) for i, b in enumerate(m)]
    return outs[0].name if len(outs) == 1 else ctx.node("Sum", [o.name for o in outs])


@register_exporter(nf.Residual)
def residual(ctx, m, x):
    y = ctx.convert(m.module, x, name="module")
    skip = x if m.projection is None else ctx.convert(m.projection, x, name="projection")
    return ctx.node("Add", [y.name, skip.name])
