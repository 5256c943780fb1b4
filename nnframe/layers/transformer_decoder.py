"""Transformer decoder and the full encoder-decoder: TransformerDecoderLayer,
TransformerDecoder and Transformer, as PyTorch's (the same sub-module names, so state_dicts
match). Built from the encoder's parts: MultiheadAttention, Dense, LayerNorm, Dropout and
:class:`~nnframe.layers.transformer.TransformerEncoder`.
"""

from __future__ import annotations

import copy

import numpy as np

from nnframe._pytorch_args import check_device, resolve_dtype
from nnframe.core.backend import array_module
from nnframe.core.errors import ShapeError, check_hyper, check_size, expected_got, fmt_shape
from nnframe.core.module import Module
from nnframe.core.random import get_rng
from nnframe.layers.attention import BatchFirstSpec, MultiheadAttention
from nnframe.layers.dense import Dense
from nnframe.layers.dropout import Dropout
from nnframe.layers.init import xavier_uniform
from nnframe.layers.normalization import LayerNorm
from nnframe.layers.transformer import (
    TransformerEncoder,
    TransformerEncoderLayer,
    _activation,
    _layer_repr,
    _reseed,
)


class _SequencesSpec(BatchFirstSpec):
    """The first input checked as (N, L, d_model) (or (L, N, d_model)); ``sequences`` leading
    positional inputs are sequences with the same batch axis, the rest (masks) have
    ``extra``'s. Unbatched calls drop the batch axis of every sequence."""

    def __init__(self, sequences: int, extra: tuple):
        super().__init__(size="d_model", extra=extra)
        self.sequences = sequences

    def batch_axes(self, module):
        b = 0 if module.batch_first else 1
        return (b,) * self.sequences + self.extra, b


def _padding_mask(mask):
    """A key padding mask (N, S), or (S,) from an unbatched call, as (N, S)."""
    if mask is None:
        return None
    mask = array_module(mask).asarray(mask)
    return mask[None] if mask.ndim == 1 else mask


def _check_memory(who, x, memory, d_model: int, batch_first: bool) -> np.ndarray:
    """memory as an array of the target's batch size and d_model features."""
    memory = array_module(memory).asarray(memory)
    n = x.shape[0] if batch_first else x.shape[1]
    batch = memory.shape[0 if batch_first else 1] if memory.ndim == 3 else None
    if memory.ndim != 3 or memory.shape[2] != d_model or batch != n:
        layout = (n, "S") if batch_first else ("S", n)
        raise ShapeError(
            expected_got(
                who._who(),
                f"memory of shape {fmt_shape((*layout, d_model))}",
                fmt_shape(memory.shape),
            )
        )
    return memory


class TransformerDecoderLayer(Module):
    """Self-attention, attention over the encoder's output (``memory``), then a feed-forward
    block, each with a residual connection and LayerNorm (PyTorch's
    ``nn.TransformerDecoderLayer``).

    Post-norm (default): ``x = norm1(x + drop1(sa(x)))``, ``x = norm2(x + drop2(mha(x, m)))``,
    ``x = norm3(x + drop3(ff(x)))``. Pre-norm (``norm_first=True``): ``x = x + drop1(sa(norm1(x)))``,
    ``x = x + drop2(mha(norm2(x), m))``, ``x = x + drop3(ff(norm3(x)))``.
    ``ff(x) = linear2(dropout(activation(linear1(x))))``.

    Args:
        d_model: features per position.
        nhead: attention heads (must divide d_model).
        dim_feedforward: hidden features of the feed-forward block.
        dropout: dropout probability (attention weights, residual branches, feed-forward).
        activation: 'relu' or 'gelu' (exact erf form), PyTorch's ``F.relu``/``F.gelu`` (taken
            by name), or an nnframe activation Module (copied; ``nf.GELU(approximate='tanh')``).
        layer_norm_eps: LayerNorm epsilon.
        batch_first: inputs (N, L, d_model) (nnframe's default, as the encoder's) or
            (L, N, d_model) (PyTorch's default).
        norm_first: pre-norm instead of post-norm.
        bias: learn biases in the linear layers, attention and LayerNorms.
        device: None or 'cpu' (nnframe's arrays live in main memory).
        dtype: parameter dtype (None: float32).
        rng: Generator or seed for the initial weights and every dropout mask.

    ``forward(tgt, memory, tgt_mask=None, memory_mask=None, tgt_key_padding_mask=None,
    memory_key_padding_mask=None, tgt_is_causal=False, memory_is_causal=False)``: the masks as
    in :class:`MultiheadAttention` (``*_is_causal`` without a mask applies the causal mask).
    ``backward(grad_output)`` returns ``(dL/dtgt, dL/dmemory)``.

    Shape:
        tgt: (N, T, d_model).    memory: (N, S, d_model).    output: (N, T, d_model).
        Unbatched: tgt (T, d_model), memory (S, d_model), key padding masks (T,) and (S,).

    Example:
        >>> import numpy as np, nnframe as nf
        >>> layer = nf.TransformerDecoderLayer(8, 2, dim_feedforward=16, dropout=0.0, rng=0)
        >>> tgt, memory = np.ones((2, 5, 8), np.float32), np.ones((2, 7, 8), np.float32)
        >>> layer(tgt, memory, tgt_is_causal=True).shape
        (2, 5, 8)
    """

    # positional (tgt, memory, tgt_mask, memory_mask, tgt_key_padding_mask,
    # memory_key_padding_mask): the padding masks' batch axis is 0
    input_spec = _SequencesSpec(2, (None, None, 0, 0))

    def __init__(
        self,
        d_model: int,
        nhead: int,
        dim_feedforward: int = 2048,
        dropout: float = 0.1,
        activation: str = "relu",
        layer_norm_eps: float = 1e-5,
        batch_first: bool = True,
        norm_first: bool = False,
        bias: bool = True,
        device=None,
        dtype=None,
        *,
        rng=None,
    ):
        super().__init__()
        who = "TransformerDecoderLayer"
        check_size(who, "dim_feedforward", dim_feedforward)
        check_device(who, device)
        dtype = resolve_dtype(dtype)
        rng = get_rng(rng)
        attn = {"dropout": dropout, "bias": bias, "batch_first": True, "rng": rng, "dtype": dtype}
        self.self_attn = MultiheadAttention(d_model, nhead, **attn)
        self.multihead_attn = MultiheadAttention(d_model, nhead, **attn)
        self.linear1 = Dense(d_model, dim_feedforward, bias=bias, rng=rng, dtype=dtype)
        self.dropout = Dropout(dropout, rng=rng)
        self.linear2 = Dense(dim_feedforward, d_model, bias=bias, rng=rng, dtype=dtype)
        self.norm_first = bool(norm_first)
        norm = {"eps": layer_norm_eps, "bias": bias, "dtype": dtype}
        self.norm1 = LayerNorm(d_model, **norm)
        self.norm2 = LayerNorm(d_model, **norm)
        self.norm3 = LayerNorm(d_model, **norm)
        self.dropout1 = Dropout(dropout, rng=rng)
        self.dropout2 = Dropout(dropout, rng=rng)
        self.dropout3 = Dropout(dropout, rng=rng)
        self.activation = _activation(who, activation)
        self.batch_first = bool(batch_first)
        self.d_model = int(d_model)
        self._args = (d_model, nhead, dim_feedforward, dropout, activation)

    def extra_repr(self) -> str:
        return _layer_repr(self)

    # the three blocks and their backwards
    def _sa(self, x, mask, padding, is_causal):
        out, _ = self.self_attn(
            x, attn_mask=mask, key_padding_mask=padding, need_weights=False, is_causal=is_causal
        )
        return self.dropout1(out)

    def _sa_backward(self, g):
        return self.self_attn.backward(self.dropout1.backward(g))

    def _mha(self, x, memory, mask, padding, is_causal):
        out, _ = self.multihead_attn(
            x, memory, memory, attn_mask=mask, key_padding_mask=padding, need_weights=False,
            is_causal=is_causal,
        )  # fmt: skip
        return self.dropout2(out)

    def _mha_backward(self, g):
        """(dL/dx, dL/dmemory): memory is both the key and the value."""
        dq, dk, dv = self.multihead_attn.backward(self.dropout2.backward(g))
        return dq, dk + dv

    def _ff(self, x):
        return self.dropout3(self.linear2(self.dropout(self.activation(self.linear1(x)))))

    def _ff_backward(self, g):
        g = self.linear2.backward(self.dropout3.backward(g))
        return self.linear1.backward(self.activation.backward(self.dropout.backward(g)))

    def forward(
        self,
        tgt,
        memory,
        tgt_mask=None,
        memory_mask=None,
        tgt_key_padding_mask=None,
        memory_key_padding_mask=None,
        tgt_is_causal: bool = False,
        memory_is_causal: bool = False,
    ):
        x = array_module(tgt).asarray(tgt)  # (N, T, d_model) or (T, N, d_model): input_spec
        m = _check_memory(self, x, memory, self.d_model, self.batch_first)
        if not self.batch_first:
            x, m = x.transpose(1, 0, 2), m.transpose(1, 0, 2)
        sa = (tgt_mask, _padding_mask(tgt_key_padding_mask), bool(tgt_is_causal))
        ca = (memory_mask, _padding_mask(memory_key_padding_mask), bool(memory_is_causal))
        if self.norm_first:
            x = x + self._sa(self.norm1(x), *sa)
            x = x + self._mha(self.norm2(x), m, *ca)
            x = x + self._ff(self.norm3(x))
        else:
            x = self.norm1(x + self._sa(x, *sa))
            x = self.norm2(x + self._mha(x, m, *ca))
            x = self.norm3(x + self._ff(x))
        self.save_for_backward(True)
        return x if self.batch_first else x.transpose(1, 0, 2)

    def backward(self, grad_output):
        _ = self.saved  # raises if forward has not run
        g = grad_output if self.batch_first else grad_output.transpose(1, 0, 2)
        if self.norm_first:
            g = g + self.norm3.backward(self._ff_backward(g))
            dx, dm = self._mha_backward(g)
            g = g + self.norm2.backward(dx)
            g = g + self.norm1.backward(self._sa_backward(g))
        else:
            g = self.norm3.backward(g)
            g = self.norm2.backward(g + self._ff_backward(g))
            dx, dm = self._mha_backward(g)
            g = self.norm1.backward(g + dx)
            g = g + self._sa_backward(g)
        if not self.batch_first:
            g, dm = g.transpose(1, 0, 2), dm.transpose(1, 0, 2)
        return g, dm


class TransformerDecoder(Module):
    """A stack of ``num_layers`` deep copies of ``decoder_layer`` (PyTorch's
    ``nn.TransformerDecoder``: parameters ``layers.{i}.*``), then an optional final ``norm``.
    Every layer attends to the same ``memory``; its gradient sums the layers' contributions.

    Each copy gets its own dropout generator, drawn from the original layer's.

    Args:
        decoder_layer: a :class:`TransformerDecoderLayer`.
        num_layers: how many copies.
        norm: optional module applied to the output (a LayerNorm).

    ``forward(tgt, memory, tgt_mask=None, memory_mask=None, tgt_key_padding_mask=None,
    memory_key_padding_mask=None, tgt_is_causal=None, memory_is_causal=False)``;
    ``backward(grad_output)`` returns ``(dL/dtgt, dL/dmemory)``.

    Shape:
        tgt: (N, T, d_model).    memory: (N, S, d_model).    output: (N, T, d_model).
        Unbatched: (T, d_model) and (S, d_model).

    Example:
        >>> import numpy as np, nnframe as nf
        >>> layer = nf.TransformerDecoderLayer(8, 2, dim_feedforward=16, rng=0)
        >>> decoder = nf.TransformerDecoder(layer, num_layers=2)
        >>> [name for name, _ in decoder.named_parameters()][:2]
        ['layers.0.self_attn.in_proj_weight', 'layers.0.self_attn.in_proj_bias']
    """

    def __init__(self, decoder_layer: Module, num_layers: int, norm: Module | None = None):
        super().__init__()
        who = "TransformerDecoder"
        ok = isinstance(num_layers, (int, np.integer)) and not isinstance(num_layers, bool)
        check_hyper(who, "num_layers", num_layers, ok and num_layers > 0, "must be an int > 0")
        if not isinstance(decoder_layer, Module):
            raise TypeError(expected_got(who, "a Module", type(decoder_layer).__name__))
        self.layers = [copy.deepcopy(decoder_layer) for _ in range(num_layers)]
        parent = getattr(getattr(decoder_layer, "self_attn", None), "rng", None)
        if isinstance(parent, np.random.Generator):
            for layer in self.layers:
                _reseed(layer, np.random.default_rng(parent.integers(2**63)))
        self.norm = norm
        self.num_layers = int(num_layers)

    def extra_repr(self) -> str:
        return f"num_layers={self.num_layers}"

    def forward(
        self,
        tgt,
        memory,
        tgt_mask=None,
        memory_mask=None,
        tgt_key_padding_mask=None,
        memory_key_padding_mask=None,
        tgt_is_causal: bool | None = None,
        memory_is_causal: bool = False,
    ):
        x = tgt
        for layer in self.layers:
            x = layer(
                x, memory, tgt_mask, memory_mask, tgt_key_padding_mask, memory_key_padding_mask,
                tgt_is_causal=bool(tgt_is_causal), memory_is_causal=memory_is_causal,
            )  # fmt: skip
        if self.norm is not None:
            x = self.norm(x)
        self.save_for_backward(True)
        return x

    def backward(self, grad_output):
        _ = self.saved  # raises if forward has not run
        g = grad_output
        if self.norm is not None:
            g = self.norm.backward(g)
        dm = None
        for layer in reversed(self.layers):
            g, d = layer.backward(g)
            dm = d if dm is None else dm + d
        return g, dm


class Transformer(Module):
    """The encoder-decoder Transformer (Vaswani et al. 2017), as PyTorch's ``nn.Transformer``:
    ``encoder`` (a :class:`TransformerEncoder` with a final LayerNorm) reads ``src``,
    ``decoder`` (a :class:`TransformerDecoder` with a final LayerNorm) reads ``tgt`` and attends
    to the encoder's output. Every weight matrix starts Xavier-uniform, as PyTorch's.

    Args:
        d_model, nhead, dim_feedforward, dropout, activation, layer_norm_eps, batch_first,
            norm_first, bias, device, dtype, rng: as :class:`TransformerDecoderLayer`
            (``batch_first=True`` by default, as nnframe's other sequence layers);
            ``activation`` as the layers take it (a name, ``F.relu``/``F.gelu`` or an
            nnframe activation Module, copied into every layer).
        num_encoder_layers, num_decoder_layers: the depth of each stack.
        custom_encoder, custom_decoder: modules used instead of the built stacks (called as the
            stacks are; their weights are left as given).

    ``forward(src, tgt, src_mask=None, tgt_mask=None, memory_mask=None,
    src_key_padding_mask=None, tgt_key_padding_mask=None, memory_key_padding_mask=None,
    src_is_causal=None, tgt_is_causal=None, memory_is_causal=False)``;
    ``backward(grad_output)`` returns ``(dL/dsrc, dL/dtgt)``.
    ``Transformer.generate_square_subsequent_mask(sz)`` is PyTorch's float causal mask.

    Shape:
        src: (N, S, d_model).    tgt: (N, T, d_model).    output: (N, T, d_model).
        Unbatched: (S, d_model) and (T, d_model).

    Example:
        >>> import numpy as np, nnframe as nf
        >>> model = nf.Transformer(16, 2, 1, 1, dim_feedforward=32, dropout=0.0, rng=0)
        >>> src, tgt = np.ones((2, 6, 16), np.float32), np.ones((2, 4, 16), np.float32)
        >>> model(src, tgt, tgt_is_causal=True).shape
        (2, 4, 16)
    """

    # positional (src, tgt, src_mask, tgt_mask, memory_mask, src_key_padding_mask,
    # tgt_key_padding_mask, memory_key_padding_mask)
    input_spec = _SequencesSpec(2, (None, None, None, 0, 0, 0))

    def __init__(
        self,
        d_model: int = 512,
        nhead: int = 8,
        num_encoder_layers: int = 6,
        num_decoder_layers: int = 6,
        dim_feedforward: int = 2048,
        dropout: float = 0.1,
        activation: str = "relu",
        custom_encoder: Module | None = None,
        custom_decoder: Module | None = None,
        layer_norm_eps: float = 1e-5,
        batch_first: bool = True,
        norm_first: bool = False,
        bias: bool = True,
        device=None,
        dtype=None,
        *,
        rng=None,
    ):
        super().__init__()
        who = "Transformer"
        check_device(who, device)
        dtype = resolve_dtype(dtype)
        rng = get_rng(rng)
        for name, value in (("num_encoder_layers", num_encoder_layers), ("num_decoder_layers", num_decoder_layers)):  # fmt: skip
            ok = isinstance(value, (int, np.integer)) and not isinstance(value, bool)
            check_hyper(who, name, value, ok and value > 0, "must be an int > 0")
        common = {
            "dim_feedforward": dim_feedforward, "dropout": dropout, "activation": activation,
            "layer_norm_eps": layer_norm_eps, "batch_first": batch_first,
            "norm_first": norm_first, "bias": bias, "dtype": dtype,
        }  # fmt: skip
        norm = {"eps": layer_norm_eps, "bias": bias, "dtype": dtype}
        if custom_encoder is not None:
            self.encoder = custom_encoder
        else:
            layer = TransformerEncoderLayer(d_model, nhead, **common, rng=rng)
            self.encoder = TransformerEncoder(layer, num_encoder_layers, LayerNorm(d_model, **norm))
            _xavier(self.encoder, rng)
        if custom_decoder is not None:
            self.decoder = custom_decoder
        else:
            layer = TransformerDecoderLayer(d_model, nhead, **common, rng=rng)
            self.decoder = TransformerDecoder(layer, num_decoder_layers, LayerNorm(d_model, **norm))
            _xavier(self.decoder, rng)
        self.d_model, self.nhead = int(d_model), int(nhead)
        self.batch_first = bool(batch_first)

    def extra_repr(self) -> str:
        return f"d_model={self.d_model}, nhead={self.nhead}, batch_first={self.batch_first}"

    @staticmethod
    def generate_square_subsequent_mask(sz: int, dtype=np.float32) -> np.ndarray:
        """(sz, sz) float mask: 0 on and below the diagonal, -inf above (PyTorch's)."""
        return np.triu(np.full((sz, sz), -np.inf, dtype=dtype), k=1)

    def forward(
        self,
        src,
        tgt,
        src_mask=None,
        tgt_mask=None,
        memory_mask=None,
        src_key_padding_mask=None,
        tgt_key_padding_mask=None,
        memory_key_padding_mask=None,
        src_is_causal: bool | None = None,
        tgt_is_causal: bool | None = None,
        memory_is_causal: bool = False,
    ):
        src, tgt = array_module(src).asarray(src), array_module(tgt).asarray(tgt)
        b = 0 if self.batch_first else 1
        if tgt.ndim != 3 or tgt.shape[b] != src.shape[b] or tgt.shape[2] != self.d_model:
            layout = (src.shape[b], "T") if self.batch_first else ("T", src.shape[b])
            raise ShapeError(
                expected_got(
                    self._who(),
                    f"tgt of shape {fmt_shape((*layout, self.d_model))}",
                    fmt_shape(tgt.shape),
                )
            )
        memory = self.encoder(
            src, mask=src_mask, src_key_padding_mask=_padding_mask(src_key_padding_mask),
            is_causal=bool(src_is_causal),
        )  # fmt: skip
        out = self.decoder(
            tgt, memory, tgt_mask=tgt_mask, memory_mask=memory_mask,
            tgt_key_padding_mask=tgt_key_padding_mask,
            memory_key_padding_mask=memory_key_padding_mask,
            tgt_is_causal=tgt_is_causal, memory_is_causal=memory_is_causal,
        )  # fmt: skip
        self.save_for_backward(True)
        return out

    def backward(self, grad_output):
        _ = self.saved  # raises if forward has not run
        d_tgt, d_memory = self.decoder.backward(grad_output)
        return self.encoder.backward(d_memory), d_tgt


def _xavier(module: Module, rng: np.random.Generator) -> None:
    """PyTorch's Transformer._reset_parameters: Xavier-uniform for every parameter of more
    than one dimension."""
    for p in module.parameters():
        if p.data.ndim > 1:
            p.data[...] = xavier_uniform(p.data.shape, rng=rng, dtype=p.data.dtype)
