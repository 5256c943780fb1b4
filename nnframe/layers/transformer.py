"""Transformer encoder: TransformerEncoderLayer and TransformerEncoder, as PyTorch's."""

from __future__ import annotations

import copy

import numpy as np

from nnframe._pytorch_args import check_device, check_flag, resolve_dtype
from nnframe.core.backend import array_module
from nnframe.core.errors import check_hyper, check_size, expected_got
from nnframe.core.module import Module
from nnframe.core.random import get_rng
from nnframe.layers.activations import GELU, ReLU
from nnframe.layers.attention import BatchFirstSpec, MultiheadAttention
from nnframe.layers.dense import Dense
from nnframe.layers.dropout import Dropout
from nnframe.layers.normalization import LayerNorm


def _layer_repr(layer) -> str:
    """The repr arguments of an encoder or decoder layer (PyTorch's, non-defaults shown)."""
    d_model, nhead, ff, dropout, activation = layer._args
    s = f"{d_model}, {nhead}, dim_feedforward={ff}, dropout={dropout}, activation={activation!r}"
    if layer.norm_first:
        s += ", norm_first=True"
    if not layer.batch_first:
        s += ", batch_first=False"
    return s


def _activation_name(activation):
    """'relu' or 'gelu' for those strings and for PyTorch's ``F.relu``/``F.gelu`` (a callable
    of that name); anything else is returned as given."""
    name = getattr(activation, "__name__", None) if callable(activation) else activation
    return name if name in ("relu", "gelu") else activation


def _activation(who: str, activation) -> Module:
    """The activation module: from a name (or PyTorch's function of that name), or a copy of
    an nnframe activation Module given as is (``nf.GELU(approximate='tanh')``)."""
    if isinstance(activation, Module):
        return copy.deepcopy(activation)
    activation = _activation_name(activation)
    check_hyper(
        who,
        "activation",
        activation,
        activation in ("relu", "gelu"),
        "must be 'relu', 'gelu', F.relu, F.gelu or an nnframe activation Module",
    )
    return ReLU() if activation == "relu" else GELU()


class TransformerEncoderLayer(Module):
    """Self-attention then a feed-forward block, each with a residual connection and LayerNorm
    (PyTorch's ``nn.TransformerEncoderLayer``: the same sub-module names, so state_dicts match).

    Post-norm (default): ``x = norm1(x + drop1(sa(x)))``, ``x = norm2(x + drop2(ff(x)))``.
    Pre-norm (``norm_first=True``): ``x = x + drop1(sa(norm1(x)))``, ``x = x + drop2(ff(norm2(x)))``.
    ``ff(x) = linear2(dropout(activation(linear1(x))))``.

    Args:
        d_model: features per position.
        nhead: attention heads (must divide d_model).
        dim_feedforward: hidden features of the feed-forward block.
        dropout: dropout probability (attention weights, residual branches, feed-forward).
        activation: 'relu' or 'gelu' (exact erf form), PyTorch's ``F.relu``/``F.gelu`` (taken
            by name), or an nnframe activation Module (copied; ``nf.GELU(approximate='tanh')``).
        layer_norm_eps: LayerNorm epsilon.
        batch_first: input (N, L, d_model) (default) or (L, N, d_model).
        norm_first: pre-norm instead of post-norm.
        bias: learn biases in the linear layers, attention and LayerNorms.
        device: None or 'cpu' (nnframe's arrays live in main memory); any other device is
            refused.
        dtype: parameter dtype (None: float32).
        rng: Generator or seed for the initial weights and every dropout mask.

    ``forward(src, src_mask=None, src_key_padding_mask=None, is_causal=False)``: the masks as in
    :class:`MultiheadAttention`. ``backward(grad_output)`` returns dL/dsrc.

    Shape:
        input: (N, L, d_model), or unbatched (L, d_model) with src_key_padding_mask (L,).
        output: same as input.

    Example:
        >>> import numpy as np, nnframe as nf
        >>> layer = nf.TransformerEncoderLayer(8, 2, dim_feedforward=16, dropout=0.0, rng=0)
        >>> layer(np.ones((2, 5, 8), dtype=np.float32)).shape
        (2, 5, 8)
    """

    # positional (src, src_mask, src_key_padding_mask): the padding mask's batch axis is 0
    input_spec = BatchFirstSpec(size="d_model", extra=(None, 0))

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
        dtype=np.float32,
        *,
        rng=None,
    ):
        super().__init__()
        who = "TransformerEncoderLayer"
        check_device(who, device)
        dtype = resolve_dtype(dtype)
        activation_module = _activation(who, activation)
        check_size(who, "dim_feedforward", dim_feedforward)
        rng = get_rng(rng)
        self.self_attn = MultiheadAttention(
            d_model, nhead, dropout=dropout, bias=bias, batch_first=True, rng=rng, dtype=dtype
        )
        self.linear1 = Dense(d_model, dim_feedforward, bias=bias, rng=rng, dtype=dtype)
        self.dropout = Dropout(dropout, rng=rng)
        self.linear2 = Dense(dim_feedforward, d_model, bias=bias, rng=rng, dtype=dtype)
        self.norm_first = bool(norm_first)
        self.norm1 = LayerNorm(d_model, eps=layer_norm_eps, bias=bias, dtype=dtype)
        self.norm2 = LayerNorm(d_model, eps=layer_norm_eps, bias=bias, dtype=dtype)
        self.dropout1 = Dropout(dropout, rng=rng)
        self.dropout2 = Dropout(dropout, rng=rng)
        self.activation = activation_module
        self.batch_first = bool(batch_first)
        self.d_model = int(d_model)
        self._args = (d_model, nhead, dim_feedforward, dropout, activation)

    def extra_repr(self) -> str:
        return _layer_repr(self)

    def _sa(self, x, src_mask, key_padding_mask, is_causal):
        out, _ = self.self_attn(
            x, attn_mask=src_mask, key_padding_mask=key_padding_mask, need_weights=False,
            is_causal=is_causal,
        )  # fmt: skip
        return self.dropout1(out)

    def _sa_backward(self, g):
        return self.self_attn.backward(self.dropout1.backward(g))

    def _ff(self, x):
        return self.dropout2(self.linear2(self.dropout(self.activation(self.linear1(x)))))

    def _ff_backward(self, g):
        g = self.linear2.backward(self.dropout2.backward(g))
        return self.linear1.backward(self.activation.backward(self.dropout.backward(g)))

    def forward(self, src, src_mask=None, src_key_padding_mask=None, is_causal: bool = False):
        x = array_module(src).asarray(src)  # (N, L, d_model) or (L, N, d_model): input_spec
        if not self.batch_first:
            x = x.transpose(1, 0, 2)
        masks = (src_mask, src_key_padding_mask, is_causal)
        if self.norm_first:
            x = x + self._sa(self.norm1(x), *masks)
            x = x + self._ff(self.norm2(x))
        else:
            x = self.norm1(x + self._sa(x, *masks))
            x = self.norm2(x + self._ff(x))
        self.save_for_backward(True)
        return x if self.batch_first else x.transpose(1, 0, 2)

    def backward(self, grad_output):
        _ = self.saved  # raises if forward has not run
        g = grad_output if self.batch_first else grad_output.transpose(1, 0, 2)
        if self.norm_first:
            g = g + self.norm2.backward(self._ff_backward(g))
            g = g + self.norm1.backward(self._sa_backward(g))
        else:
            g = self.norm2.backward(g)
            g = g + self._ff_backward(g)
            g = self.norm1.backward(g)
            if not self.needs_input_grad:  # the input is data: attention skips dL/dx
                attention = self.self_attn
                own, attention.needs_input_grad = attention.needs_input_grad, False
                try:
                    self._sa_backward(g)
                finally:
                    attention.needs_input_grad = own
                return None
            g = g + self._sa_backward(g)
        return g if self.batch_first else g.transpose(1, 0, 2)


class TransformerEncoder(Module):
    """A stack of ``num_layers`` deep copies of ``encoder_layer`` (PyTorch's
    ``nn.TransformerEncoder``: parameters ``layers.{i}.*``), then an optional final ``norm``.

    Each copy gets its own dropout generator, drawn from the original layer's, so the layers do
    not repeat each other's masks.

    Args:
        encoder_layer: a :class:`TransformerEncoderLayer` (or any module with the same call).
        num_layers: how many copies.
        norm: optional module applied to the output (a LayerNorm).
        enable_nested_tensor, mask_check: PyTorch's switches for its nested-tensor fast path
            (padded positions skipped, after checking the padding mask). Accepted, with no
            effect: nnframe has no nested tensors, and the outputs are the same either way.

    ``forward(src, mask=None, src_key_padding_mask=None, is_causal=False)``;
    ``backward(grad_output)`` returns dL/dsrc.

    Shape:
        input: (N, L, d_model), or unbatched (L, d_model).    output: same.

    Example:
        >>> import numpy as np, nnframe as nf
        >>> layer = nf.TransformerEncoderLayer(8, 2, dim_feedforward=16, rng=0)
        >>> encoder = nf.TransformerEncoder(layer, num_layers=2)
        >>> [name for name, _ in encoder.named_parameters()][:2]
        ['layers.0.self_attn.in_proj_weight', 'layers.0.self_attn.in_proj_bias']
    """

    def __init__(
        self,
        encoder_layer: Module,
        num_layers: int,
        norm: Module | None = None,
        enable_nested_tensor: bool = True,
        mask_check: bool = True,
    ):
        super().__init__()
        check_size("TransformerEncoder", "num_layers", num_layers)
        # PyTorch's fast-path switches: accepted, no effect (see the docstring)
        self.enable_nested_tensor = check_flag(
            "TransformerEncoder", "enable_nested_tensor", enable_nested_tensor
        )
        self.mask_check = check_flag("TransformerEncoder", "mask_check", mask_check)
        if not isinstance(encoder_layer, Module):
            raise TypeError(
                expected_got("TransformerEncoder", "a Module", type(encoder_layer).__name__)
            )
        self.layers = [copy.deepcopy(encoder_layer) for _ in range(num_layers)]
        source = getattr(encoder_layer, "self_attn", None)
        parent = getattr(source, "rng", None)
        if isinstance(parent, np.random.Generator):
            for layer in self.layers:
                _reseed(layer, np.random.default_rng(parent.integers(2**63)))
        self.norm = norm
        self.num_layers = int(num_layers)

    def extra_repr(self) -> str:
        return f"num_layers={self.num_layers}"

    def forward(self, src, mask=None, src_key_padding_mask=None, is_causal: bool = False):
        x = src
        for layer in self.layers:
            x = layer(
                x, src_mask=mask, src_key_padding_mask=src_key_padding_mask, is_causal=is_causal
            )
        if self.norm is not None:
            x = self.norm(x)
        self.save_for_backward(True)
        return x

    def backward(self, grad_output):
        _ = self.saved  # raises if forward has not run
        g = grad_output
        if self.norm is not None:
            g = self.norm.backward(g)
        for layer in reversed(self.layers):
            g = layer.backward(g)
        return g


def _reseed(module: Module, rng: np.random.Generator) -> None:
    """Replaces every Generator held as ``rng`` in module and below by ``rng`` (a deep copy's
    generators are copies of the original's: the same masks again)."""
    for m in module.modules():
        if isinstance(getattr(m, "rng", None), np.random.Generator):
            m.rng = rng
