"""Exporters of TransformerDecoderLayer, TransformerDecoder and Transformer, built from the
exporters of their parts (MultiheadAttention, Dense, LayerNorm, the activations, dropout and
the encoder). Masks are not part of the export (the example call has none)."""

from __future__ import annotations

import nnframe as nf
from nnframe.onnx._context import Value, register_exporter


def _add(ctx, a: Value, b: Value) -> Value:
    return Value(ctx.node("Add", [a.name, b.name]), a.value + b.value)


def _batch_first(ctx, v: Value, batch_first: bool) -> Value:
    if batch_first:
        return v
    return Value(ctx.transpose(v.name, (1, 0, 2)), v.value.swapaxes(0, 1))


@register_exporter(nf.TransformerDecoderLayer)
def decoder_layer(ctx, m, tgt, memory):
    x = _batch_first(ctx, tgt, m.batch_first)
    mem = _batch_first(ctx, memory, m.batch_first)

    def sa(v):
        out, _ = ctx.convert(m.self_attn, v, name="self_attn")
        return ctx.convert(m.dropout1, out, name="dropout1")

    def mha(v):
        out, _ = ctx.convert(m.multihead_attn, v, mem, mem, name="multihead_attn")
        return ctx.convert(m.dropout2, out, name="dropout2")

    def ff(v):
        for name in ("linear1", "activation", "dropout", "linear2", "dropout3"):
            v = ctx.convert(getattr(m, name), v, name=name)
        return v

    if m.norm_first:
        x = _add(ctx, x, sa(ctx.convert(m.norm1, x, name="norm1")))
        x = _add(ctx, x, mha(ctx.convert(m.norm2, x, name="norm2")))
        x = _add(ctx, x, ff(ctx.convert(m.norm3, x, name="norm3")))
    else:
        x = ctx.convert(m.norm1, _add(ctx, x, sa(x)), name="norm1")
        x = ctx.convert(m.norm2, _add(ctx, x, mha(x)), name="norm2")
        x = ctx.convert(m.norm3, _add(ctx, x, ff(x)), name="norm3")
    return x.name if m.batch_first else ctx.transpose(x.name, (1, 0, 2))


@register_exporter(nf.TransformerDecoder)
def decoder(ctx, m, tgt, memory):
    x = tgt
    for i, layer in enumerate(m.layers):
        x = ctx.convert(layer, x, memory, name=f"layers.{i}")
    if m.norm is not None:
        x = ctx.convert(m.norm, x, name="norm")
    return x.name


@register_exporter(nf.Transformer)
def transformer(ctx, m, src, tgt):
    memory = ctx.convert(m.encoder, src, name="encoder")
    return ctx.convert(m.decoder, tgt, memory, name="decoder").name
