"""Exporters of graph models (``nf.Model``) and of the merge and selection layers.

A graph model is exported by walking its recorded calls in topological order (the order
``forward`` runs them): each call's argument nodes are replaced by the Values computed so far
(a tuple node by the tuple of Values its layer returned), the layer is converted under its layer
name (``dense_1``; ``encoder#0``, ``encoder#1`` for the calls of a shared layer, whose
parameters stay one initializer each), and the output nodes' Values are returned in the model's
output structure. A nested graph model is one more layer.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

import nnframe as nf
from nnframe.layers.graph import Model, Node
from nnframe.onnx._context import Value, register_exporter


# ---------------------------------------------------------------------------------- graph models
def _names(values):
    if isinstance(values, Mapping):
        return {k: _names(v) for k, v in values.items()}
    if isinstance(values, (tuple, list)):
        return tuple(_names(v) for v in values)
    return values.name if isinstance(values, Value) else None


def _bind(node: Node, values, env: dict) -> None:
    """Records the Value (or tuple of Values) of ``node`` and of each node inside a tuple node."""
    env[id(node)] = values
    if node.items is not None:
        for item, v in zip(node.items, values):
            _bind(item, v, env)


def _substitute(value, env: dict):
    """A call's argument template with each node replaced by its Value(s)."""
    if type(value) is Node:
        return env[id(value)]
    if isinstance(value, tuple):
        return tuple(_substitute(v, env) for v in value)
    if isinstance(value, list):
        return [_substitute(v, env) for v in value]
    if isinstance(value, dict):
        return {k: _substitute(v, env) for k, v in value.items()}
    return value


def _model_inputs(m: Model, inputs: tuple) -> list:
    """One Value per input of ``m`` from the ways a Model may be called: positionally, one
    list, or one dict keyed by input name."""
    if len(inputs) == 1 and isinstance(inputs[0], Mapping):
        return [inputs[0][k] for k in m.input_names]
    if len(inputs) == 1 and len(m.inputs) > 1 and isinstance(inputs[0], (tuple, list)):
        return list(inputs[0])
    if len(inputs) != len(m.inputs):
        raise TypeError(
            f"{m._who()}: expected {len(m.inputs)} input(s) {m.input_names} to export, got "
            f"{len(inputs)}"
        )
    return list(inputs)


@register_exporter(Model)
def graph_model(ctx, m: Model, *inputs):
    env: dict = {}
    for node, value in zip(m.inputs, _model_inputs(m, inputs)):
        env[id(node)] = value
    for call, cname in zip(m._graph_calls, m._call_names):
        args = _substitute(call.args, env)
        kwargs = _substitute(call.kwargs, env)
        out = ctx.convert(call.module, *args, name=cname.replace("#", "_"), kwargs=kwargs)
        _bind(call.output, out, env)
    outs = [_names(env[id(node)]) for node in m.outputs]
    if m._out_kind == "single":
        return outs[0]
    if m._out_kind == "dict":
        return dict(zip(m.output_names, outs))
    return tuple(outs)


# ---------------------------------------------------------------------------------- merges
def _merged(inputs: tuple) -> list[Value]:
    """The arrays of a merge: ``(a, b, ...)`` or one list/tuple of them (merge_inputs' rule)."""
    if len(inputs) == 1 and isinstance(inputs[0], (tuple, list)):
        inputs = tuple(inputs[0])
    return list(inputs)


def _chain(ctx, op: str, values: list[Value]) -> str:
    """``((x0 op x1) op x2) ...``: the order in which the layers compute, so rounding agrees."""
    y = values[0].name
    for v in values[1:]:
        y = ctx.node(op, [y, v.name])
    return y


def _add_merge(ctx, m, *inputs):
    return _chain(ctx, "Add", _merged(inputs))


@register_exporter(nf.Multiply)
def multiply(ctx, m, *inputs):
    return _chain(ctx, "Mul", _merged(inputs))


@register_exporter(nf.Subtract)
def subtract(ctx, m, *inputs):
    a, b = _merged(inputs)
    return ctx.node("Sub", [a.name, b.name])


@register_exporter(nf.Average)
def average(ctx, m, *inputs):
    xs = _merged(inputs)
    total = _chain(ctx, "Add", xs)
    # the layer multiplies the sum by 1/n in the output's dtype
    dtype = np.result_type(*[x.dtype for x in xs])
    return ctx.node("Mul", [total, ctx.scalar(1.0 / len(xs), dtype)])


@register_exporter(nf.Maximum)
def maximum(ctx, m, *inputs):
    return ctx.node("Max", [x.name for x in _merged(inputs)])


@register_exporter(nf.Concatenate)
def concatenate(ctx, m, *inputs):
    return ctx.node("Concat", [x.name for x in _merged(inputs)], axis=int(m.axis))


@register_exporter(nf.Dot)
def dot(ctx, m, *inputs):
    x, y = _merged(inputs)
    ax, ay = m._axis(x.value, 0), m._axis(y.value, 1)
    xn, yn = x.name, y.name
    if m.normalize:  # x / max(||x||, eps) along the contracted axis
        eps = ctx.scalar(m.eps, x)
        norms = []
        for name, axis in ((xn, ax), (yn, ay)):
            sq = ctx.reduce("ReduceSum", ctx.node("Mul", [name, name]), [axis], keepdims=True)
            norms.append(ctx.node("Div", [name, ctx.node("Max", [ctx.node("Sqrt", [sq]), eps])]))
        xn, yn = norms
    d = x.shape[ax]
    # x with the contracted axis last, y with it first after the batch: (N, P, D) @ (N, D, Q)
    px = [i for i in range(x.ndim) if i != ax] + [ax]
    py = [0, ay] + [i for i in range(1, y.ndim) if i != ay]
    xa = ctx.reshape(ctx.transpose(xn, px), [0, -1, d])
    yb = ctx.reshape(ctx.transpose(yn, py), [0, d, -1])
    out = ctx.node("MatMul", [xa, yb])  # (N, P, Q)
    p = [x.shape[i] for i in px[1:-1]]
    q = [y.shape[i] for i in py[2:]]
    return ctx.reshape(out, [0, *p, *q] if p or q else [0, 1])


# ---------------------------------------------------------------------------------- selections
@register_exporter(nf.GetItem)
def get_item(ctx, m, *inputs):
    value = inputs[0] if len(inputs) == 1 else tuple(inputs)
    for i in m.index:
        if isinstance(value, (tuple, list)):
            value = value[i]
        else:  # along the first axis of an array: Gather of a 0-d index drops that axis
            index = ctx.const(np.asarray(i, dtype=np.int64), "index")
            value = Value(ctx.node("Gather", [value.name, index], axis=0), value.value[i])
    return _names(value)


@register_exporter(nf.TimeStep)
def time_step(ctx, m, x, lengths=None):
    axis = 1 if m.batch_first else 0
    if lengths is None:  # Gather takes negative indices from the end, as numpy
        index = ctx.const(np.asarray(m.index, dtype=np.int64), "index")
        return ctx.node("Gather", [x.name, index], axis=axis)
    seq = x.name if m.batch_first else ctx.transpose(x.name, [1, 0, *range(2, x.ndim)])
    lens = ctx.node("Cast", [lengths.name], to=7)  # int64
    index = ctx.const(np.asarray(m.index, dtype=np.int64), "index")
    # the step of each sequence: index from the start, or from its own end when negative
    steps = (
        ctx.node("Add", [lens, index])
        if m.index < 0
        else ctx.node("Expand", [index, ctx.node("Shape", [lens])])
    )
    zero = ctx.const(np.asarray(0, dtype=np.int64), "zero")
    valid = ctx.node(
        "And",
        [ctx.node("GreaterOrEqual", [steps, zero]), ctx.node("Less", [steps, lens])],
    )
    safe = ctx.node("Where", [valid, steps, zero])
    # x[rows, safe]: GatherND over (N, T, *) with one index per row
    y = ctx.node("GatherND", [seq, ctx.unsqueeze(safe, [1])], batch_dims=1)
    if x.ndim > 2:  # valid (N,) against the step's (N, *) axes
        valid = ctx.unsqueeze(valid, list(range(1, x.ndim - 1)))
    return ctx.node("Where", [valid, y, ctx.scalar(0.0, x)])
