"""Attention: MultiheadAttention (PyTorch's names and masks) and a sinusoidal PositionalEncoding.

Scaled dot-product attention per head: ``softmax(q k^T / sqrt(d) + mask) v``. Masks are additive
inside the softmax: a boolean mask (True = may not attend) becomes -inf, a float mask is added as
given. The softmax subtracts each row's finite maximum and divides by a guarded sum, so a row
whose every key is masked gives zero weights (and zero output before ``out_proj``), never NaN.
"""

from __future__ import annotations

import math

import numpy as np

from nnframe._pytorch_args import check_device, check_flag, resolve_dtype
from nnframe.core.backend import array_module, random_generator
from nnframe.core.errors import (
    ShapeError,
    as_float_input,
    check_hyper,
    check_size,
    expected_got,
    fmt_shape,
)
from nnframe.core.input_spec import InputSpec
from nnframe.core.module import Module
from nnframe.core.parameter import Parameter
from nnframe.core.random import get_rng
from nnframe.functional import rows_matmul
from nnframe.layers.dense import Dense
from nnframe.layers.init import xavier_normal, xavier_uniform


def masked_softmax(scores: np.ndarray) -> np.ndarray:
    """Softmax over the last axis that tolerates -inf entries: a row of only -inf gives zeros.

    ``scores`` is overwritten (it is a scratch array of the caller's)."""
    m = scores.max(axis=-1, keepdims=True)
    m[~np.isfinite(m)] = 0  # a fully masked row: exp(-inf - 0) = 0 everywhere
    scores -= m  # subtract the row max so exp cannot overflow
    np.exp(scores, out=scores)
    z = scores.sum(axis=-1, keepdims=True)
    z[z == 0] = 1  # 0 / 1 = 0 for fully masked rows
    scores /= z
    return scores


def causal_mask(L: int, S: int | None = None) -> np.ndarray:
    """Boolean (L, S) mask, True above the diagonal: position i may attend to keys j <= i."""
    S = L if S is None else S
    return np.triu(np.ones((L, S), dtype=bool), k=1)


class BatchFirstSpec(InputSpec):
    """A sequence input (N, L, E), or (L, N, E) with the module's ``batch_first=False``;
    unbatched (L, E) either way (PyTorch's rule). ``extra``: the batch axes of the positional
    arguments after the first (a key padding mask (N, S): 0; an attention mask: None)."""

    def __init__(self, names=("N", "L", "E"), size: str | None = None, extra: tuple = ()):
        super().__init__(names, axis=-1, size=size)
        self.extra = extra

    def layouts(self, module):
        (names,) = self.names
        return (names,) if module.batch_first else ((names[1], names[0], *names[2:]),)

    def batch_axes(self, module):
        b = 0 if module.batch_first else 1
        return (b, *self.extra), b


class _AttentionSpec(InputSpec):
    """Query, key and value (N, L, E), or (L, N, E) with ``batch_first=False``; unbatched
    (L, E) either way, with a key_padding_mask (S,) given positionally (batch axis 0), and the
    attention weights (L, S) or (heads, L, S)."""

    def __init__(self):
        super().__init__(("N", "L", "E"), axis=-1, size="embed_dim")

    def layouts(self, module):
        return (("N", "L", "E"),) if module.batch_first else (("L", "N", "E"),)

    def batch_axes(self, module):
        b = 0 if module.batch_first else 1
        return (b, b, b, 0), (b, 0)  # (query, key, value, key_padding_mask), (out, weights)

    def _error(self, module, got):
        layout = ("N", "L") if module.batch_first else ("L", "N")
        expected = f"query of shape {fmt_shape((*layout, module.embed_dim))}"
        return ShapeError(expected_got(module, expected, fmt_shape(got)))


class MultiheadAttention(Module):
    """Multi-head attention, as PyTorch's ``nn.MultiheadAttention`` (parameter names and layouts,
    masks, returned weights).

    Args:
        embed_dim: E, the model dimension (query features and output features).
        num_heads: heads; E must be divisible by it (head dimension E / num_heads).
        dropout: dropout probability on the attention weights (training only).
        bias: learn ``in_proj_bias`` and ``out_proj.bias``.
        add_bias_kv: learn ``bias_k`` and ``bias_v`` of shape (1, 1, E) (Xavier-normal), appended
            to the projected keys and values as one more key position: S becomes S + 1.
        add_zero_attn: append a key and a value of zeros to every head after the projections
            (and after ``bias_k``/``bias_v``): one more key position, with score 0, that takes
            a share of the softmax and adds nothing to the output.
            The masks are given for the S keys of the input; the added positions are never
            masked. The returned weights include them: (N, L, S + add_bias_kv + add_zero_attn).
        kdim, vdim: features of key and value (default E). When either differs from E the
            projections are separate: ``q_proj_weight`` (E, E), ``k_proj_weight`` (E, kdim),
            ``v_proj_weight`` (E, vdim); otherwise one ``in_proj_weight`` (3E, E).
        batch_first: inputs and output are (N, L, E) (default, unlike PyTorch's False) instead
            of (L, N, E).
        device: None or ``"cpu"`` (nnframe's arrays live in main memory; others are refused).
        dtype: parameter dtype (None: float32).
        rng: Generator or seed for the initial weights and the dropout masks.

    Initialization follows PyTorch: Xavier-uniform projection weights, zero biases, and
    ``out_proj`` (a :class:`Dense`) with its default weight.

    ``forward(query, key=None, value=None, key_padding_mask=None, need_weights=True,
    attn_mask=None, average_attn_weights=True, is_causal=False)`` returns ``(output, weights)``
    (weights None unless ``need_weights``). Without key and value it is self-attention on
    ``query``. ``backward((grad_output, grad_weights))`` (or dL/doutput alone) returns
    ``(dL/dquery, dL/dkey, dL/dvalue)``, or dL/dquery alone for self-attention.

    Masks:
        attn_mask: (L, S) or (N * num_heads, L, S); boolean (True = masked) or float (added).
        key_padding_mask: (N, S); boolean (True = padding, ignored) or float (added).
        is_causal: without attn_mask, apply the causal mask (query i sees keys j <= i); with
            one, a hint that attn_mask is causal (it is used as given), as PyTorch.
        A query whose keys are all masked gets zero weights (PyTorch gives NaN there).

    Shape:
        query: (N, L, E).    key: (N, S, kdim).    value: (N, S, vdim).    output: (N, L, E).
        weights: (N, L, S) averaged over heads, or (N, num_heads, L, S).
        Unbatched (PyTorch's rule): query (L, E), key (S, kdim), value (S, vdim),
        key_padding_mask (S,), attn_mask (L, S) or (num_heads, L, S); output (L, E), weights
        (L, S) or (num_heads, L, S).

    Example:
        >>> import numpy as np, nnframe as nf
        >>> mha = nf.MultiheadAttention(8, 2, rng=0)
        >>> x = np.ones((3, 5, 8), dtype=np.float32)
        >>> out, w = mha(x, x, x, is_causal=True)
        >>> out.shape, w.shape
        ((3, 5, 8), (3, 5, 5))
        >>> bool(np.allclose(w[0, 0], [1, 0, 0, 0, 0]))  # the first query sees only itself
        True
    """

    input_spec = _AttentionSpec()

    def __init__(
        self,
        embed_dim: int,
        num_heads: int,
        dropout: float = 0.0,
        bias: bool = True,
        add_bias_kv: bool = False,
        add_zero_attn: bool = False,
        kdim: int | None = None,
        vdim: int | None = None,
        batch_first: bool = True,
        device=None,
        dtype=np.float32,
        *,
        rng=None,
    ):
        super().__init__()
        who = "MultiheadAttention"
        check_device(who, device)
        dtype = resolve_dtype(dtype)
        add_bias_kv = check_flag(who, "add_bias_kv", add_bias_kv)
        self.add_zero_attn = check_flag(who, "add_zero_attn", add_zero_attn)
        check_size(who, "embed_dim", embed_dim)
        check_size(who, "num_heads", num_heads)
        check_hyper(
            who, "num_heads", num_heads, embed_dim % num_heads == 0,
            f"must divide embed_dim={embed_dim}",
        )  # fmt: skip
        check_hyper(who, "dropout", dropout, 0 <= dropout < 1, "must be in [0, 1)")
        self.embed_dim = int(embed_dim)
        self.num_heads = int(num_heads)
        self.head_dim = embed_dim // num_heads
        self.kdim = int(kdim) if kdim is not None else self.embed_dim
        self.vdim = int(vdim) if vdim is not None else self.embed_dim
        self.dropout = float(dropout)
        self.batch_first = bool(batch_first)
        self.rng = get_rng(rng)
        E = embed_dim
        self._same_dims = self.kdim == E and self.vdim == E
        if self._same_dims:
            self.in_proj_weight = Parameter(xavier_uniform((3 * E, E), rng=self.rng, dtype=dtype))
        else:
            self.q_proj_weight = Parameter(xavier_uniform((E, E), rng=self.rng, dtype=dtype))
            self.k_proj_weight = Parameter(
                xavier_uniform((E, self.kdim), rng=self.rng, dtype=dtype)
            )
            self.v_proj_weight = Parameter(
                xavier_uniform((E, self.vdim), rng=self.rng, dtype=dtype)
            )
        self.in_proj_bias = Parameter(np.zeros(3 * E, dtype=dtype)) if bias else None
        self.out_proj = Dense(E, E, bias=bias, rng=self.rng, dtype=dtype)
        if bias:
            self.out_proj.bias.data[...] = 0
        # PyTorch's add_bias_kv: one learned key and value appended to every sequence
        self.bias_k = self.bias_v = None
        if add_bias_kv:
            self.bias_k = Parameter(xavier_normal((1, 1, E), rng=self.rng, dtype=dtype))
            self.bias_v = Parameter(xavier_normal((1, 1, E), rng=self.rng, dtype=dtype))

    def extra_repr(self) -> str:
        s = f"{self.embed_dim}, num_heads={self.num_heads}"
        if self.dropout:
            s += f", dropout={self.dropout}"
        if self.in_proj_bias is None:
            s += ", bias=False"
        if self.bias_k is not None:
            s += ", add_bias_kv=True"
        if self.add_zero_attn:
            s += ", add_zero_attn=True"
        if not self._same_dims:
            s += f", kdim={self.kdim}, vdim={self.vdim}"
        if not self.batch_first:
            s += ", batch_first=False"
        return s

    # ------------------------------------------------------------------ projections
    def _proj(self, i: int) -> tuple[Parameter, slice | None]:
        """The Parameter holding projection i (0 q, 1 k, 2 v) and its row slice, if packed."""
        E = self.embed_dim
        if self._same_dims:
            return self.in_proj_weight, slice(i * E, (i + 1) * E)
        return (self.q_proj_weight, self.k_proj_weight, self.v_proj_weight)[i], None

    def _weight(self, i: int) -> np.ndarray:
        p, rows = self._proj(i)
        return p.data if rows is None else p.data[rows]

    def _bias(self, i: int) -> np.ndarray | None:
        if self.in_proj_bias is None:
            return None
        E = self.embed_dim
        return self.in_proj_bias.data[i * E : (i + 1) * E]

    def _check(self, x, name: str, features: int, dtype):
        x = as_float_input(self, x, dtype)
        if x.ndim != 3 or x.shape[2] != features:
            layout = ("N", "L") if self.batch_first else ("L", "N")
            if name != "query":
                layout = ("N", "S") if self.batch_first else ("S", "N")
            expected = f"{name} of shape {fmt_shape((*layout, features))}"
            raise ShapeError(expected_got(self, expected, fmt_shape(x.shape)))
        return x if self.batch_first else x.transpose(1, 0, 2)

    def _heads(self, y: np.ndarray) -> np.ndarray:
        """(N, L, E) -> (N, heads, L, head_dim)."""
        N, L, _ = y.shape
        return y.reshape(N, L, self.num_heads, self.head_dim).transpose(0, 2, 1, 3)

    def _merge(self, y: np.ndarray) -> np.ndarray:
        """(N, heads, L, head_dim) -> (N, L, E)."""
        N, _, L, _ = y.shape
        return y.transpose(0, 2, 1, 3).reshape(N, L, self.embed_dim)

    # ------------------------------------------------------------------ masks
    def _mask_bias(self, attn_mask, key_padding_mask, is_causal, N, L, S, dtype):
        """The additive mask, broadcastable to (N, heads, L, S), or None."""
        bias = None
        h = self.num_heads
        xm = array_module(self._weight(0))  # masks are data: they join the weights' module
        if attn_mask is None and is_causal:
            attn_mask = causal_mask(L, S)
        if attn_mask is not None:
            m = xm.asarray(attn_mask)
            if m.shape == (L, S):
                pass
            elif m.shape == (N * h, L, S):
                m = m.reshape(N, h, L, S)
            else:
                expected = f"attn_mask of shape ({L}, {S}) or ({N * h}, {L}, {S})"
                raise ShapeError(expected_got(self, expected, fmt_shape(m.shape)))
            bias = _additive(self, m, dtype, "attn_mask")
        if key_padding_mask is not None:
            m = xm.asarray(key_padding_mask)
            if N == 1 and m.shape == (S,):  # an unbatched call's mask given by keyword
                m = m[None]
            if m.shape != (N, S):
                raise ShapeError(
                    expected_got(self, f"key_padding_mask of shape ({N}, {S})", fmt_shape(m.shape))
                )
            kp = _additive(self, m, dtype, "key_padding_mask")[:, None, None, :]
            bias = kp if bias is None else bias + kp
        return bias

    # ------------------------------------------------------------------ forward / backward
    def forward(
        self,
        query,
        key=None,
        value=None,
        key_padding_mask=None,
        need_weights: bool = True,
        attn_mask=None,
        average_attn_weights: bool = True,
        is_causal: bool = False,
    ):
        dtype = self._weight(0).dtype
        self_attention = key is None and value is None
        if (key is None) != (value is None):
            raise TypeError(f"{self!r}: expected both key and value, or neither (self-attention)")
        q_in = self._check(query, "query", self.embed_dim, dtype)
        if self_attention:
            k_in = v_in = q_in
        else:
            k_in = self._check(key, "key", self.kdim, dtype)
            v_in = self._check(value, "value", self.vdim, dtype)
            if k_in.shape[:2] != v_in.shape[:2] or k_in.shape[0] != q_in.shape[0]:
                raise ShapeError(
                    expected_got(
                        self, "query, key and value with the same batch and key/value the same length",
                        f"{fmt_shape(query.shape)}, {fmt_shape(key.shape)}, {fmt_shape(value.shape)}",
                    )
                )  # fmt: skip
        N, L, E = q_in.shape
        S = k_in.shape[1]
        if self_attention and self._same_dims:
            # one GEMM for the three projections: (N*L, E) @ (E, 3E)
            qkv = rows_matmul(q_in, self.in_proj_weight.data.T)
            if self.in_proj_bias is not None:
                qkv += self.in_proj_bias.data
            q, k, v = (qkv[..., i * E : (i + 1) * E] for i in range(3))
        else:
            q, k, v = (
                _affine(a, self._weight(i), self._bias(i)) for i, a in enumerate((q_in, k_in, v_in))
            )
        if self.bias_k is not None:  # one more key/value position: (N, S + 1, E)
            k = np.concatenate([k, np.broadcast_to(self.bias_k.data[0], (N, 1, E))], axis=1)
            v = np.concatenate([v, np.broadcast_to(self.bias_v.data[0], (N, 1, E))], axis=1)
        qh, kh, vh = self._heads(q), self._heads(k), self._heads(v)
        if self.add_zero_attn:  # a zero key (score 0) and a zero value in every head
            zeros = array_module(kh).zeros((N, self.num_heads, 1, self.head_dim), dtype=dtype)
            kh = np.concatenate([kh, zeros], axis=2)
            vh = np.concatenate([vh, zeros], axis=2)
        scale = 1.0 / math.sqrt(self.head_dim)
        scores = (qh * dtype.type(scale)) @ kh.transpose(0, 1, 3, 2)  # (N, h, L, S + extra)
        bias = self._mask_bias(attn_mask, key_padding_mask, is_causal, N, L, S, dtype)
        extra = kh.shape[2] - S  # the appended positions are never masked
        if bias is not None and extra:
            pad = array_module(bias).zeros((*bias.shape[:-1], extra), dtype)
            bias = np.concatenate([bias, pad], axis=-1)
        if bias is not None:
            scores += bias
        p = masked_softmax(scores)
        drop = None
        pd = p
        if self.dropout and self.training:
            keep = 1.0 - self.dropout
            u = random_generator(array_module(p), self.rng).random(p.shape)
            drop = (u < keep).astype(dtype) / dtype.type(keep)
            pd = p * drop
        oh = pd @ vh  # (N, h, L, head_dim)
        out = self.out_proj(self._merge(oh))
        self.save_for_backward(
            q_in, k_in, v_in, qh, kh, vh, p, pd, drop, scale, self_attention,
            need_weights and average_attn_weights,
        )  # fmt: skip
        if not self.batch_first:
            out = out.transpose(1, 0, 2)
        weights = None
        if need_weights:
            weights = pd.mean(axis=1) if average_attn_weights else pd
        return out, weights

    def _packed_backward(self, x, d_heads) -> np.ndarray | None:
        """The input projections' backward for self-attention with the packed in_proj_weight:
        the three head gradients (N, heads, L, head_dim) laid side by side as dL/d[q k v]
        (N, L, 3E), so that dL/dW, dL/db and dL/dx are one product or sum each (the input's
        three gradients summed by the product itself). Returns dL/dx, batch first, or None
        without ``needs_input_grad``."""
        N, L, E = x.shape
        h, d = self.num_heads, self.head_dim
        d_cat = array_module(x).empty((N, L, 3, h, d), dtype=d_heads[0].dtype)
        for i, dh in enumerate(d_heads):
            d_cat[:, :, i] = dh.transpose(0, 2, 1, 3)  # (N, L, heads, head_dim)
        d2 = d_cat.reshape(N * L, 3 * E)
        w = self.in_proj_weight
        if w.requires_grad:
            w.grad += d2.T @ x.reshape(N * L, E)  # (3E, N*L) @ (N*L, E)
        if self.in_proj_bias is not None and self.in_proj_bias.requires_grad:
            self.in_proj_bias.grad += d2.sum(axis=0)
        if not self.needs_input_grad:
            return None
        return (d2 @ w.data).reshape(N, L, E)  # (N*L, 3E) @ (3E, E): q's, k's and v's summed

    def backward(self, grad_output):
        """Args:
            grad_output: one gradient per output, ``(dL/doutput, dL/dweights)`` (dL/dweights
                None when the returned weights do not feed the loss); a bare array is
                dL/doutput alone.

        Returns:
            ``(dL/dquery, dL/dkey, dL/dvalue)``, or dL/dquery for self-attention.
        """
        q_in, k_in, v_in, qh, kh, vh, p, pd, drop, scale, self_attention, averaged = self.saved
        grad_weights = None
        if isinstance(grad_output, (tuple, list)):  # one gradient per output
            grad_output, grad_weights = grad_output
        N, L, E = q_in.shape
        if not self.batch_first:
            grad_output = grad_output.transpose(1, 0, 2)
        if grad_output.shape != (N, L, E):
            expected = (
                f"grad_output of shape {fmt_shape((N, L, E) if self.batch_first else (L, N, E))}"
            )
            raise ShapeError(expected_got(self, expected, fmt_shape(grad_output.shape)))
        d_oh = self._heads(self.out_proj.backward(grad_output))  # (N, h, L, d)
        d_pd = d_oh @ vh.transpose(0, 1, 3, 2)  # (N, h, L, S)
        if grad_weights is not None:
            d_pd += (grad_weights[:, None] / self.num_heads) if averaged else grad_weights
        d_vh = pd.transpose(0, 1, 3, 2) @ d_oh  # (N, h, S, d)
        d_p = d_pd if drop is None else d_pd * drop
        # softmax backward: dS = P * (dP - sum(dP * P)); masked entries have P = 0
        d_s = d_p - (d_p * p).sum(axis=-1, keepdims=True)
        d_s *= p
        d_qh = (d_s @ kh) * scale  # scores = (q * scale) @ k^T
        d_kh = (d_s.transpose(0, 1, 3, 2) @ qh) * scale
        S = k_in.shape[1]
        if self_attention and self._same_dims and self.bias_k is None and not self.add_zero_attn:
            grad = self._packed_backward(q_in, (d_qh, d_kh, d_vh))
            return grad if grad is None or self.batch_first else grad.transpose(1, 0, 2)
        d_proj = [self._merge(d) for d in (d_qh, d_kh, d_vh)]  # each (N, L or S + extra, E)
        if self.bias_k is not None:  # position S of the keys and values is bias_k / bias_v
            for p_kv, d in ((self.bias_k, d_proj[1]), (self.bias_v, d_proj[2])):
                if p_kv.requires_grad:
                    p_kv.grad += d[:, S].sum(axis=0).reshape(p_kv.grad.shape)
        # the zero key/value are constants; the projections saw the first S positions only
        d_proj[1], d_proj[2] = d_proj[1][:, :S], d_proj[2][:, :S]
        inputs = (q_in, k_in, v_in)
        grads_in = []
        for i, (d, a) in enumerate(zip(d_proj, inputs)):
            param, rows = self._proj(i)
            d2 = d.reshape(-1, E)
            if param.requires_grad:
                dw = d2.T @ a.reshape(-1, a.shape[-1])  # (E, N*L) @ (N*L, F)
                if rows is None:
                    param.grad += dw
                else:
                    param.grad[rows] += dw
            if self.in_proj_bias is not None and self.in_proj_bias.requires_grad:
                self.in_proj_bias.grad[i * E : (i + 1) * E] += d2.sum(axis=0)
            grads_in.append(rows_matmul(d, self._weight(i)) if self.needs_input_grad else None)
        if not self.needs_input_grad:
            return None if self_attention else (None, None, None)
        if not self.batch_first:
            grads_in = [g.transpose(1, 0, 2) for g in grads_in]
        if self_attention:
            return grads_in[0] + grads_in[1] + grads_in[2]
        return tuple(grads_in)


def _affine(x: np.ndarray, w: np.ndarray, b: np.ndarray | None) -> np.ndarray:
    y = rows_matmul(x, w.T)
    if b is not None:
        y += b
    return y


def _additive(who, mask: np.ndarray, dtype, name: str) -> np.ndarray:
    """A boolean mask (True = masked) as 0 / -inf, or a float mask as given, in ``dtype``."""
    if mask.dtype == bool:
        out = array_module(mask).zeros(mask.shape, dtype=dtype)
        out[mask] = -np.inf
        return out
    if mask.dtype.kind not in "fiu":
        raise TypeError(expected_got(who, f"a boolean or float {name}", f"dtype {mask.dtype}"))
    return mask.astype(dtype, copy=False)


class PositionalEncoding(Module):
    """Adds the sinusoidal position code of "Attention Is All You Need", then dropout:
    ``PE[t, 2i] = sin(t / 10000^(2i/d))``, ``PE[t, 2i+1] = cos(t / 10000^(2i/d))``.

    The table is computed once (not a parameter, not in the state_dict).

    Args:
        d_model: features per position.
        max_len: the longest sequence accepted.
        dropout: dropout probability after the addition (training only).
        batch_first: input (N, T, d_model) (default) or (T, N, d_model).
        rng: Generator or seed for the dropout masks.
        dtype: dtype of the table.

    Shape:
        input: (N, T, d_model), or unbatched (T, d_model).    output: same.

    Example:
        >>> import numpy as np, nnframe as nf
        >>> pe = nf.PositionalEncoding(4, max_len=10)
        >>> y = pe(np.zeros((1, 3, 4), dtype=np.float32))
        >>> np.round(y[0, 1], 4)  # position 1: sin(1), cos(1), sin(0.01), cos(0.01)
        array([0.8415, 0.5403, 0.01  , 1.    ], dtype=float32)
    """

    input_spec = BatchFirstSpec(("N", "T", "E"), size="d_model")

    def __init__(
        self,
        d_model: int,
        max_len: int = 5000,
        dropout: float = 0.0,
        batch_first: bool = True,
        *,
        rng=None,
        dtype=np.float32,
    ):
        super().__init__()
        who = "PositionalEncoding"
        check_size(who, "d_model", d_model)
        check_hyper(who, "max_len", max_len, max_len > 0, "must be > 0")
        check_hyper(who, "dropout", dropout, 0 <= dropout < 1, "must be in [0, 1)")
        self.d_model = int(d_model)
        self.max_len = int(max_len)
        self.dropout = float(dropout)
        self.batch_first = bool(batch_first)
        self.rng = get_rng(rng)
        pos = np.arange(max_len, dtype=np.float64)[:, None]
        div = np.exp(np.arange(0, d_model, 2) * (-math.log(10000.0) / d_model))
        pe = np.zeros((max_len, d_model))
        pe[:, 0::2] = np.sin(pos * div)
        pe[:, 1::2] = np.cos(pos * div[: d_model // 2])
        self._pe64 = pe
        self.pe = pe.astype(dtype)

    def _on_dtype_change(self, dtype: np.dtype) -> None:
        self.pe = self._pe64.astype(dtype)

    def extra_repr(self) -> str:
        s = f"{self.d_model}, max_len={self.max_len}"
        if self.dropout:
            s += f", dropout={self.dropout}"
        return s

    def forward(self, x):
        x = as_float_input(self, x, self.pe.dtype)  # rank and d_model: checked by input_spec
        t_axis = 1 if self.batch_first else 0
        if x.shape[t_axis] > self.max_len:
            layout = ("N", "T") if self.batch_first else ("T", "N")
            expected = (
                f"input of shape {fmt_shape((*layout, self.d_model))} with T <= {self.max_len}"
            )
            raise ShapeError(expected_got(self, expected, fmt_shape(x.shape)))
        T = x.shape[t_axis]
        pe = self.pe[:T] if self.batch_first else self.pe[:T, None]
        xm = array_module(x)
        if xm is not np:  # the table lives on the host: its first T rows join x's module
            pe = xm.asarray(pe)
        y = x + pe
        drop = None
        if self.dropout and self.training:
            keep = 1.0 - self.dropout
            u = random_generator(xm, self.rng).random(y.shape)
            drop = (u < keep).astype(y.dtype) / y.dtype.type(keep)
            y *= drop
        self.save_for_backward(drop)
        return y

    def backward(self, grad_output):
        (drop,) = self.saved
        return grad_output if drop is None else grad_output * drop
