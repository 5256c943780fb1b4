"""Exporters of MultiheadAttention, the Transformer encoder and PositionalEncoding, decomposed
into MatMul, Softmax, Transpose and Reshape (ONNX has no attention operator at opset 17)."""

from __future__ import annotations

import math

import numpy as np

import nnframe as nf
from nnframe.onnx._context import Value, register_exporter, unsupported


def _project(ctx, m, x: str, i: int) -> str:
    """x @ W_i^T + b_i: projection i (0 query, 1 key, 2 value) of (N, L, F)."""
    E = m.embed_dim
    packed = getattr(m, "in_proj_weight", None)
    if packed is not None:  # query, key and value weights stacked in one (3E, E) Parameter
        w = packed.data[i * E : (i + 1) * E]
    else:
        w = (m.q_proj_weight, m.k_proj_weight, m.v_proj_weight)[i].data
    y = ctx.node("MatMul", [x, ctx.const(np.ascontiguousarray(w.T), "qkv"[i] + "_weight")])
    if m.in_proj_bias is not None:
        b = m.in_proj_bias.data[i * E : (i + 1) * E]
        y = ctx.node("Add", [y, ctx.const(b, "qkv"[i] + "_bias")])
    return y


def _heads(ctx, m, y: str) -> str:
    """(N, L, E) -> (N, heads, L, head_dim)."""
    return ctx.transpose(ctx.reshape(y, [0, 0, m.num_heads, m.head_dim]), (0, 2, 1, 3))


@register_exporter(nf.MultiheadAttention)
def multihead_attention(ctx, m, query, key=None, value=None):
    """Returns (output, attention weights averaged over the heads), as ``forward`` does by
    default; masks are not part of the export (the example call has none)."""
    if getattr(m, "bias_k", None) is not None or getattr(m, "add_zero_attn", False):
        raise unsupported(m, "add_bias_kv and add_zero_attn are not exported")
    names = [v.name for v in (query, key, value) if v is not None]
    if not m.batch_first:  # (L, N, E) -> (N, L, E)
        names = [ctx.transpose(n, (1, 0, 2)) for n in names]
    q_in = names[0]
    k_in, v_in = (q_in, q_in) if key is None else (names[1], names[2])
    qh, kh, vh = (_heads(ctx, m, _project(ctx, m, a, i)) for i, a in enumerate((q_in, k_in, v_in)))
    scale = ctx.scalar(1.0 / math.sqrt(m.head_dim), query)
    kt = ctx.transpose(kh, (0, 1, 3, 2))
    scores = ctx.node("MatMul", [ctx.node("Mul", [qh, scale]), kt])  # (N, h, L, S)
    p = ctx.node("Softmax", [scores], axis=-1)
    oh = ctx.node("MatMul", [p, vh])  # (N, h, L, head_dim)
    merged = ctx.reshape(ctx.transpose(oh, (0, 2, 1, 3)), [0, 0, m.embed_dim])
    n, length = query.shape[:2] if m.batch_first else query.shape[1::-1]
    example = np.zeros((n, length, m.embed_dim), dtype=query.dtype)
    out = ctx.convert(m.out_proj, Value(merged, example), name="out_proj").name
    if not m.batch_first:
        out = ctx.transpose(out, (1, 0, 2))
    weights = ctx.reduce("ReduceMean", p, [1], keepdims=False)
    return out, weights


@register_exporter(nf.TransformerEncoderLayer)
def encoder_layer(ctx, m, src):
    x = (
        src
        if m.batch_first
        else Value(ctx.transpose(src.name, (1, 0, 2)), src.value.swapaxes(0, 1))
    )

    def sa(v):
        out, _ = ctx.convert(m.self_attn, v, name="self_attn")
        return ctx.convert(m.dropout1, out, name="dropout1")

    def ff(v):
        for name in ("linear1", "activation", "dropout", "linear2", "dropout2"):
            v = ctx.convert(getattr(m, name), v, name=name)
        return v

    def add(a, b):
        return Value(ctx.node("Add", [a.name, b.name]), a.value + b.value)

    if m.norm_first:
        x = add(x, sa(ctx.convert(m.norm1, x, name="norm1")))
        x = add(x, ff(ctx.convert(m.norm2, x, name="norm2")))
    else:
        x = ctx.convert(m.norm1, add(x, sa(x)), name="norm1")
        x = ctx.convert(m.norm2, add(x, ff(x)), name="norm2")
    return x.name if m.batch_first else ctx.transpose(x.name, (1, 0, 2))


@register_exporter(nf.TransformerEncoder)
def encoder(ctx, m, src):
    x = src
    for i, layer in enumerate(m.layers):
        x = ctx.convert(layer, x, name=f"layers.{i}")
    if m.norm is not None:
        x = ctx.convert(m.norm, x, name="norm")
    return x.name


@register_exporter(nf.PositionalEncoding)
def positional_encoding(ctx, m, x):
    T = x.shape[1] if m.batch_first else x.shape[0]
    pe = m.pe[:T] if m.batch_first else m.pe[:T, None]
    return ctx.node("Add", [x.name, ctx.const(pe, "pe")])
