"""Exporters of RNN, LSTM and GRU (and their cells) as ONNX's own RNN/LSTM/GRU operators.

ONNX orders the gates differently from PyTorch (whose layout nnframe keeps):
LSTM: PyTorch (i, f, g, o) -> ONNX (i, o, f, c); GRU: PyTorch (r, z, n) -> ONNX (z, r, h), with
``linear_before_reset=1`` because PyTorch's new gate is ``tanh(W_in x + b_in + r * (W_hn h + b_hn))``.
ONNX runs one layer per operator (both directions at once), time-major: a multi-layer stack is a
chain of operators, and batch-first inputs are transposed on the way in and out.
"""

from __future__ import annotations

import numpy as np

import nnframe as nf
from nnframe.onnx._context import register_exporter, unsupported

_PERM = {"LSTM": [0, 3, 1, 2], "GRU": [1, 0, 2], "RNN_TANH": [0], "RNN_RELU": [0]}
_OP = {"LSTM": "LSTM", "GRU": "GRU", "RNN_TANH": "RNN", "RNN_RELU": "RNN"}


def _gates(a: np.ndarray, mode: str, H: int) -> np.ndarray:
    """Rows of a stacked-gate weight or bias reordered from PyTorch's order to ONNX's."""
    return np.concatenate([a[g * H : (g + 1) * H] for g in _PERM[mode]], axis=0)


def _layer_params(ctx, mode, H, params: list[dict], hint: str):
    """W, R, B initializers of one layer: params holds each direction's arrays."""
    W = np.stack([_gates(p["weight_ih"], mode, H) for p in params])
    R = np.stack([_gates(p["weight_hh"], mode, H) for p in params])
    names = [ctx.const(W, f"{hint}.W"), ctx.const(R, f"{hint}.R")]
    if "bias_ih" in params[0]:
        B = np.stack(
            [
                np.concatenate([_gates(p["bias_ih"], mode, H), _gates(p["bias_hh"], mode, H)])
                for p in params
            ]
        )
        names.append(ctx.const(B, f"{hint}.B"))
    return names


def _run_layer(ctx, mode, H, D, x_tm: str, wrb: list[str], h0=None, c0=None, lens=None):
    """One ONNX recurrent operator over a time-major (T, N, F) input: (Y, Y_h[, Y_c]), Y of
    shape (T, D, N, H). ``lens``: int32 sequence lengths (padded steps output zeros and keep
    the state, as nnframe's ``lengths=``)."""
    attrs = {"hidden_size": H, "direction": "bidirectional" if D == 2 else "forward"}
    if mode == "GRU":
        attrs["linear_before_reset"] = 1
    if mode.startswith("RNN"):
        attrs["activations"] = ["Relu" if mode == "RNN_RELU" else "Tanh"] * D
    inputs = [x_tm, *wrb] + [None] * (3 - len(wrb)) + [lens, h0]
    if mode == "LSTM":
        inputs.append(c0)
    while inputs[-1] is None:
        inputs.pop()
    return ctx.node(_OP[mode], inputs, 3 if mode == "LSTM" else 2, **attrs)


@register_exporter(nf.RNN)
@register_exporter(nf.LSTM)
@register_exporter(nf.GRU)
def recurrent(ctx, m, x, hx=None, lengths=None):
    if m.proj_size:
        raise unsupported(m, "ONNX's LSTM has no projection (proj_size > 0)")
    mode, H, D = m.mode, m.hidden_size, m.num_directions
    lens = None if lengths is None else ctx.node("Cast", [lengths.name], to=6)  # int32
    seq = ctx.transpose(x.name, (1, 0, 2)) if m.batch_first else x.name  # (T, N, F)
    h0 = c0 = None
    if hx is not None:
        h0, c0 = (hx[0].name, hx[1].name) if mode == "LSTM" else (hx.name, None)
    h_parts, c_parts = [], []
    for layer in range(m.num_layers):
        params = []
        for d in range(D):
            sfx = f"_l{layer}" + ("_reverse" if d else "")
            p = {"weight_ih": getattr(m, "weight_ih" + sfx).data}
            p["weight_hh"] = getattr(m, "weight_hh" + sfx).data
            if m.bias:
                p["bias_ih"] = getattr(m, "bias_ih" + sfx).data
                p["bias_hh"] = getattr(m, "bias_hh" + sfx).data
            params.append(p)
        wrb = _layer_params(ctx, mode, H, params, f"l{layer}")
        rows = [layer * D, (layer + 1) * D]
        h0k = None if h0 is None else ctx.slice(h0, rows[:1], rows[1:], [0])
        c0k = None if c0 is None else ctx.slice(c0, rows[:1], rows[1:], [0])
        outs = _run_layer(ctx, mode, H, D, seq, wrb, h0k, c0k, lens)
        h_parts.append(outs[1])
        if mode == "LSTM":
            c_parts.append(outs[2])
        # Y (T, D, N, H) -> (T, N, D * H): the directions side by side, as the layer's output
        seq = ctx.reshape(ctx.transpose(outs[0], (0, 2, 1, 3)), [0, 0, D * H])
    out = ctx.transpose(seq, (1, 0, 2)) if m.batch_first else seq
    h_n = h_parts[0] if len(h_parts) == 1 else ctx.node("Concat", h_parts, axis=0)
    if mode != "LSTM":
        return out, h_n
    c_n = c_parts[0] if len(c_parts) == 1 else ctx.node("Concat", c_parts, axis=0)
    return out, (h_n, c_n)


@register_exporter(nf.RNNCell)
@register_exporter(nf.GRUCell)
@register_exporter(nf.LSTMCell)
def cell(ctx, m, x, hx=None):
    """One step: the sequence operator over a length-1 sequence."""
    mode, H = m.mode, m.hidden_size
    p = {"weight_ih": m.weight_ih.data, "weight_hh": m.weight_hh.data}
    if m.bias_ih is not None:
        p["bias_ih"], p["bias_hh"] = m.bias_ih.data, m.bias_hh.data
    wrb = _layer_params(ctx, mode, H, [p], "cell")
    h0 = c0 = None
    if hx is not None:
        h0, c0 = (hx[0].name, hx[1].name) if mode == "LSTM" else (hx.name, None)
        h0 = ctx.unsqueeze(h0, [0])
        c0 = None if c0 is None else ctx.unsqueeze(c0, [0])
    outs = _run_layer(ctx, mode, H, 1, ctx.unsqueeze(x.name, [0]), wrb, h0, c0)
    h = ctx.squeeze(outs[1], [0])  # (1, N, H) -> (N, H)
    return (h, ctx.squeeze(outs[2], [0])) if mode == "LSTM" else h
