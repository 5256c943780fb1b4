"""Convolutions: Conv1d, Conv2d, Conv3d, ConvTranspose1d, ConvTranspose2d and ConvTranspose3d.

All of them are im2col + one GEMM per call (see :mod:`nnframe.layers._im2col` for the column
layout). With G groups the product is a batch of G GEMMs in one ``np.matmul`` call.

Forward, for a padded input ``xp (N, C, *S)``:
    cols = im2col(xp)                           (C*K, N*P)   K = prod(kernel), P = prod(out)
    y    = W (O, C*K) @ cols                    (O, N*P) -> transposed to (N, O, *out) + bias
Backward, with g = dL/dy as ``(O, N*P)``:
    dL/dW    = g @ cols.T                       (O, C*K)
    dL/dcols = W.T @ g                          (C*K, N*P) -> col2im -> un-pad -> dL/dx

The forward's columns are kept for dL/dW and then overwritten by dL/dcols, so backward allocates
no second column buffer; once consumed, that buffer is kept and the next forward of the same
shape builds its columns in it (no new allocation, no page faults). ``save_columns = False``
(a class or instance attribute) keeps only the input and rebuilds the columns in backward (and
keeps no buffer between steps): peak memory drops to one layer's columns at a time, for one
extra im2col copy per backward. A 1x1 convolution with stride 1 and no padding skips im2col:
its columns are the input itself (a plain matrix product). With ``needs_input_grad = False``
(the first layer of a model whose input is data) backward computes only the parameters'
gradients and returns None, skipping the ``W.T @ g`` product and col2im.

Stride 1 (``flat = True``, the default; ConvNd layers of CNNs are mostly this) takes another
path, over chunks of a few images so that every buffer stays in cache (FLAT_CHUNK_BYTES):
    cols  = flat columns of the padded chunk       (G, Cg*K + 1, m*L)  (see _im2col: each
            (channel, offset) row is one contiguous run of the flattened padded image, and a
            last row of ones carries the bias)
    out   = [W | b] (Og, Cg*K + 1) @ cols           (G, Og, m*L) -> valid positions -> y
    dL/dW, dL/db = cols @ g_ext^T                   g_ext: g on the same flat grid, zero at the
                                                    positions that are not outputs
    dL/dx = Wf (Cg, Og*K) @ flat columns of g, padded by d (k - 1) - pad: the correlation of
            g with the flipped kernel (no col2im, no un-pad for 'zeros' padding)
Nothing but the input is kept between forward and backward (the columns are rebuilt per chunk,
which costs less than streaming saved columns back from memory), so ``save_columns`` does not
apply there.

A transposed convolution is the adjoint of a convolution: its forward is a convolution's
input-gradient (GEMM then col2im) and its backward a convolution's forward (im2col then GEMM).
"""

from __future__ import annotations

import numpy as np

from nnframe._pytorch_args import check_device, resolve_dtype
from nnframe.core.backend import array_module
from nnframe.core.errors import (
    ShapeError,
    as_float_input,
    check_grad,
    check_hyper,
    expected_got,
    fmt_shape,
)
from nnframe.core.input_spec import InputSpec
from nnframe.core.module import Module
from nnframe.core.parameter import Parameter
from nnframe.core.random import get_rng
from nnframe.layers._im2col import (
    PAD_MODES,
    ChunkWindows,
    col2im,
    conv_out_size,
    flat_length,
    flat_positions,
    im2col,
    image_windows,
    ntuple,
    pad,
    spatial_names,
    unpad,
    windows,
)
from nnframe.layers.init import default_uniform, make_weight


def _positive_int(who: str, name: str, value) -> int:
    ok = isinstance(value, (int, np.integer)) and not isinstance(value, bool) and value > 0
    check_hyper(who, name, value, ok, "must be a positive int")
    return int(value)


def _set_channels(layer, who: str, in_channels, out_channels, groups) -> None:
    """Checks and sets in_channels, out_channels and groups (which must divide both)."""
    layer.in_channels = _positive_int(who, "in_channels", in_channels)
    layer.out_channels = _positive_int(who, "out_channels", out_channels)
    layer.groups = _positive_int(who, "groups", groups)
    for name, c in (("in_channels", in_channels), ("out_channels", out_channels)):
        check_hyper(who, "groups", groups, c % groups == 0, f"must divide {name}={c}")


def _set_parameters(layer, shape, fan_in: int, bias: bool, rng, dtype, init) -> None:
    """The weight (``init``) and, with ``bias``, PyTorch's default bias U(+-1/sqrt(fan_in))."""
    rng = get_rng(rng)
    layer.weight = Parameter(make_weight(init, shape, rng, dtype))
    layer.bias = (
        Parameter(default_uniform((layer.out_channels,), rng=rng, dtype=dtype, fan_in=fan_in))
        if bias
        else None
    )


def _conv_repr(layer, optional) -> str:
    """Channels, kernel_size and stride, then each ``(name, value, default)`` of ``optional``
    whose value is not its default, as ``name=value!r``."""
    parts = [
        f"{layer.in_channels}, {layer.out_channels}",
        f"kernel_size={layer.kernel_size}",
        f"stride={layer.stride}",
    ]
    parts += [f"{name}={value!r}" for name, value, default in optional if value != default]
    return ", ".join(parts)


def chunk_columns(cols, view, groups: int) -> None:
    """Copies the flat windows ``view (m, C, *kernel, L)`` of a chunk of m images into the
    first m image slots of ``cols (G, Cg*K, step, L)``: each group's rows for the whole
    chunk side by side, so that one GEMM per group covers the chunk (``(Cg*K, m*L)``, a view:
    the image and position axes merge)."""
    m, c = view.shape[0], view.shape[1]
    kernel, length = view.shape[2:-1], view.shape[-1]
    g, step = groups, cols.shape[2]
    dest = cols.reshape(g, c // g, *kernel, step, length)[..., :m, :]
    np.copyto(dest, np.moveaxis(view.reshape(m, g, c // g, *kernel, length), 0, -2))


class _FlatWeightGrad:
    """dL/dW (and dL/db) of a stride-1 convolution, accumulated chunk by chunk.

    Per chunk of m images and group: ``[cols; 1] (Cg*K + 1, m*L) @ g_ext^T (m*L, Og)``, where
    the columns are the forward's flat columns (rebuilt here, in cache) and g_ext is dL/dy
    placed on the flat grid (zero at the wrapped positions, so they add nothing). The row of
    ones yields dL/db in the same product.
    """

    def __init__(self, layer, x, out_shape, with_bias: bool):
        self.layer, self.out_shape = layer, out_shape
        self.groups, self.out_channels = layer.groups, layer.out_channels
        self.kernel, self.pads = layer.kernel_size, layer._pads
        self.padded = tuple(s + lo + hi for s, (lo, hi) in zip(x.shape[2:], self.pads))
        self.length = flat_length(self.padded, out_shape)
        self.rows = layer.in_channels // layer.groups * int(np.prod(self.kernel))  # Cg*K
        self.r = self.rows + with_bias
        self.x = x
        c, g, o = layer.in_channels, self.groups, self.out_channels
        self.elements = (g * self.r + o) * self.length + c * int(np.prod(self.padded))

    def allocate(self, step: int) -> None:
        xm = array_module(self.x)
        dtype = self.layer.weight.data.dtype
        g, o = self.groups, self.out_channels
        layer = self.layer
        self.windows_of = ChunkWindows(
            self.x, self.pads, layer.padding_mode, step, self.kernel, layer.dilation, self.out_shape
        )
        self.cols = xm.empty((g, self.r, step, self.length), dtype=dtype)
        if self.r > self.rows:
            self.cols[:, self.rows] = 1
        self.g_ext = xm.zeros((o, step, self.length), dtype=dtype)  # wrapped positions: 0
        self.g_at = flat_positions(self.g_ext, self.padded, self.out_shape, writeable=True)
        self.acc = xm.zeros((g, self.r, o // g), dtype=dtype)

    def add_chunk(self, n0: int, g_chunk) -> None:
        """Adds the products of images n0 .. n0 + len(g_chunk) - 1."""
        g, o, length = self.groups, self.out_channels, self.length
        view = self.windows_of(n0)
        m = view.shape[0]
        chunk_columns(self.cols[:, : self.rows], view, g)
        self.g_at[:, :m] = g_chunk.swapaxes(0, 1)
        g_ext = self.g_ext[:, :m].reshape(g, o // g, m * length)
        # (G, R, m*L) @ (G, m*L, Og) -> (G, R, Og)
        self.acc += np.matmul(
            self.cols[:, :, :m].reshape(g, self.r, m * length), g_ext.swapaxes(-1, -2)
        )

    def finish(self, weight, bias) -> None:
        """Adds the accumulated sums into weight.grad (and bias.grad when given)."""
        weight.grad += self.acc[:, : self.rows].swapaxes(-1, -2).reshape(weight.shape)
        if bias is not None:
            bias.grad += self.acc[:, self.rows].reshape(self.out_channels)


class _ImageWeightGrad:
    """dL/dW (and dL/db) of a stride-1 convolution with few column rows (Cg*K below
    IMAGE_WGRAD_ROWS: a first layer on 1 or 3 channels), image by image on exact columns.

    Per image and group ``g_n (Og, P) @ [cols_n; 1]^T (P, Cg*K + 1)``, summed over the chunk:
    dL/dy is used where it lies (N, O, P), with no copy onto the flat grid, which for so few
    rows costs more than the product itself. Same interface as :class:`_FlatWeightGrad`.
    """

    def __init__(self, layer, x, out_shape, with_bias: bool):
        self.layer, self.x, self.out_shape = layer, x, out_shape
        self.p = int(np.prod(out_shape))
        self.rows = layer.in_channels // layer.groups * int(np.prod(layer.kernel_size))
        self.r = self.rows + with_bias
        padded = tuple(s + lo + hi for s, (lo, hi) in zip(x.shape[2:], layer._pads))
        self.elements = layer.groups * self.r * self.p + layer.in_channels * int(np.prod(padded))

    def allocate(self, step: int) -> None:
        layer, g = self.layer, self.layer.groups
        xm = array_module(self.x)
        self.windows_of = ChunkWindows(
            self.x,
            layer._pads,
            layer.padding_mode,
            step,
            layer.kernel_size,
            layer.dilation,
            self.out_shape,
            view=image_windows,
        )
        self.cols = xm.empty((step, g, self.r, self.p), dtype=layer.weight.data.dtype)
        if self.r > self.rows:
            self.cols[:, :, self.rows] = 1
        self.acc = xm.zeros((g, layer.out_channels // g, self.r), dtype=self.cols.dtype)

    def add_chunk(self, n0: int, g_chunk) -> None:
        """Adds the products of images n0 .. n0 + len(g_chunk) - 1."""
        layer, g = self.layer, self.layer.groups
        view = self.windows_of(n0)  # (m, C, *kernel, *out)
        m = view.shape[0]
        # (m, C, ...) split into (m, G, Cg, ...) on both sides: splitting axes keeps the
        # destination a view of the buffer (merging G with Cg would not, past the ones row)
        split = (m, g, layer.in_channels // g, *view.shape[2:])
        np.copyto(self.cols[:m, :, : self.rows].reshape(split), view.reshape(split))
        g4 = g_chunk.reshape(m, g, layer.out_channels // g, self.p)
        # (m, G, Og, P) @ (m, G, P, R) -> (m, G, Og, R), summed over the images
        self.acc += np.matmul(g4, self.cols[:m].swapaxes(-1, -2)).sum(axis=0)

    def finish(self, weight, bias) -> None:
        """Adds the accumulated sums into weight.grad (and bias.grad when given)."""
        weight.grad += self.acc[..., : self.rows].reshape(weight.shape)
        if bias is not None:
            bias.grad += self.acc[..., self.rows].reshape(self.layer.out_channels)


class _FlatInputGrad:
    """dL/dx of a stride-1 convolution, chunk by chunk, as a correlation (no col2im).

    With stride 1, ``y[s] = sum_k xp[s + d k] W[k]``, so ``dL/dxp[j] = sum_k g[j - d k] W[k]``:
    the correlation of g, zero-padded by d (K - 1) on both sides, with the kernel flipped
    along every spatial axis (input and output channels swapped), over the padded input.
    For 'zeros' padding only the unpadded part is needed, so g is padded by d (K - 1) - lo
    before and d (K - 1) - hi after (when the padding is not larger than the dilated kernel)
    and nothing is left to crop; other modes keep the padded positions, which :func:`unpad`
    folds back onto the inputs they copied. Per chunk of m images and group the correlation
    is one GEMM, ``Wf (Cg, Og*K) @ gcols (Og*K, m*L')`` on the flat columns of the padded g.
    """

    def __init__(self, layer, x_shape, grad_output):
        self.layer, self.kernel, self.dilation = layer, layer.kernel_size, layer.dilation
        self.g_pads, self.rest = _grad_pads(layer)
        self.padded = tuple(s + lo + hi for s, (lo, hi) in zip(grad_output.shape[2:], self.g_pads))
        self.dx_shape = tuple(
            s - d * (k - 1) for s, k, d in zip(self.padded, self.kernel, self.dilation)
        )
        self.length = flat_length(self.padded, self.dx_shape)
        self.grad_output = grad_output
        c, o = layer.in_channels, layer.out_channels
        k = int(np.prod(self.kernel))
        self.elements = (o * k + c) * self.length + o * int(np.prod(self.padded))
        self.dx = array_module(grad_output).empty(
            (x_shape[0], c, *self.dx_shape), dtype=layer.weight.data.dtype
        )

    def allocate(self, step: int) -> None:
        layer, grad_output = self.layer, self.grad_output
        xm = array_module(grad_output)
        g, o, c = layer.groups, layer.out_channels, layer.in_channels
        k = int(np.prod(self.kernel))
        self.wf = _flipped_weight(layer)  # (G, Cg, Og*K)
        self.windows_of = ChunkWindows(
            grad_output, self.g_pads, "zeros", step, self.kernel, self.dilation, self.dx_shape
        )
        self.gcols = xm.empty((g, o // g * k, step, self.length), dtype=self.dx.dtype)
        self.dx_flat = xm.empty((g, c // g, step, self.length), dtype=self.dx.dtype)
        flat = self.dx_flat.reshape(c, step, self.length)
        self.valid = flat_positions(flat, self.padded, self.dx_shape)  # (C, step, *dx_shape)

    def chunk(self, n0: int) -> None:
        """Writes dL/dx of images n0 .. n0 + step - 1."""
        layer, g, length = self.layer, self.layer.groups, self.length
        view = self.windows_of(n0)  # (m, O, *kernel, L')
        m = view.shape[0]
        chunk_columns(self.gcols, view, g)
        gcols = self.gcols[:, :, :m].reshape(g, -1, m * length)
        dx_flat = self.dx_flat[:, :, :m].reshape(g, layer.in_channels // g, m * length)
        np.matmul(self.wf, gcols, out=dx_flat)  # (G, Cg, Og*K) @ (G, Og*K, m*L')
        self.dx[n0 : n0 + m] = self.valid[:, :m].swapaxes(0, 1)

    def result(self):
        return unpad(self.dx, self.rest, self.layer.padding_mode)


def _flipped_weight(layer):
    """The weight of the input gradient's correlation: per group, the kernel flipped along
    every spatial axis with input and output channels swapped, as (G, Cg, Og*K)."""
    g, o = layer.groups, layer.out_channels
    w = layer.weight.data
    wg = w.reshape(g, o // g, *w.shape[1:])  # (G, Og, Cg, *kernel)
    flipped = wg[(Ellipsis, *(slice(None, None, -1),) * layer._n)].swapaxes(1, 2)
    return array_module(w).ascontiguousarray(flipped).reshape(g, w.shape[1], -1)


def _grad_pads(layer):
    """(pads of dL/dy, pads left on dL/dx) of the input gradient as a correlation (see
    :class:`_FlatInputGrad`)."""
    g_pads, rest = [], []
    for (lo, hi), k, d in zip(layer._pads, layer.kernel_size, layer.dilation):
        reach = d * (k - 1)
        if layer.padding_mode == "zeros" and max(lo, hi) <= reach:
            g_pads.append((reach - lo, reach - hi))
            rest.append((0, 0))
        else:
            g_pads.append((reach, reach))
            rest.append((lo, hi))
    return tuple(g_pads), tuple(rest)


class _ConvNd(Module):
    """Shared code of Conv1d/2d/3d (``_n`` spatial dimensions)."""

    _n = 0
    save_columns: bool = True  # keep the columns for backward (False: rebuild them there)
    #: run the convolution over chunks of a few images (see _forward_chunked); False: one
    #: GEMM over the whole batch, with ``save_columns``
    chunked: bool = True
    #: stride-1 convolutions (chunked) use flat columns and compute dL/dx as a correlation with
    #: the flipped kernel (see _forward_flat); False: the im2col + col2im path
    flat: bool = True
    CHUNK_BYTES = 1 << 20  # a chunk's columns and outputs: about a core's L2
    #: the stride-1 path's chunk (columns, outputs, padded images): larger chunks make wider
    #: GEMMs; 2 MiB measured 2-3 % faster per training step than 1 MiB (cnn_mnist, cnn_cifar)
    FLAT_CHUNK_BYTES = 1 << 21
    #: the chunk on a GPU: there is no cache to fit, and every chunk costs kernel launches
    #: (about ten), so a chunk is the whole batch unless its buffers would pass this size
    DEVICE_CHUNK_BYTES = 1 << 30
    #: stride-1 dL/dW image by image (exact columns, no copy of dL/dy) below this many column
    #: rows Cg*K, on the flat grid from there: first layers on 1 or 3 channels
    IMAGE_WGRAD_ROWS = 64
    #: the stride-1 path from this many output elements (N * O * P) on: below, its fixed cost
    #: outweighs what it saves (a first layer on a batch of 32 8x8 images, 65536 outputs:
    #: 247 us against 144 us on the im2col path; 8 28x28 images, 200704 outputs: 339 against 369)
    FLAT_MIN_OUTPUTS = 1 << 17
    _spare = None  # a consumed column buffer, reused by the next forward (save_columns only)

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size,
        stride=1,
        padding=0,
        dilation=1,
        groups: int = 1,
        bias: bool = True,
        padding_mode: str = "zeros",
        device=None,
        dtype=np.float32,
        *,
        rng=None,
        init="default",
    ):
        super().__init__()
        who, n = type(self).__name__, self._n
        check_device(who, device)
        dtype = resolve_dtype(dtype)
        _set_channels(self, who, in_channels, out_channels, groups)
        self.kernel_size = ntuple(who, "kernel_size", kernel_size, n, 1)
        self.stride = ntuple(who, "stride", stride, n, 1)
        self.dilation = ntuple(who, "dilation", dilation, n, 1)
        check_hyper(
            who,
            "padding_mode",
            padding_mode,
            padding_mode in PAD_MODES,
            f"must be one of {sorted(PAD_MODES)}",
        )
        self.padding_mode = padding_mode
        if isinstance(padding, str):
            check_hyper(
                who, "padding", padding, padding in ("same", "valid"), "must be 'same' or 'valid'"
            )
            if padding == "same":
                check_hyper(
                    who, "padding", padding, self.stride == (1,) * n, "'same' needs stride=1"
                )
                # total d * (k - 1); an odd total puts the extra element after (as PyTorch)
                totals = [d * (k - 1) for d, k in zip(self.dilation, self.kernel_size)]
                self._pads = tuple((t // 2, t - t // 2) for t in totals)
            else:
                self._pads = ((0, 0),) * n
            self.padding = padding
        else:
            self.padding = ntuple(who, "padding", padding, n, 0)
            self._pads = tuple((p, p) for p in self.padding)
        self._pointwise = (
            self.kernel_size == (1,) * n
            and self.stride == (1,) * n
            and not any(lo or hi for lo, hi in self._pads)
        )
        shape = (out_channels, in_channels // groups, *self.kernel_size)
        fan_in = (in_channels // groups) * int(np.prod(self.kernel_size))
        _set_parameters(self, shape, fan_in, bias, rng, dtype, init)

    def extra_repr(self) -> str:
        n = self._n
        return _conv_repr(
            self,
            [
                ("padding", self.padding, (0,) * n),
                ("dilation", self.dilation, (1,) * n),
                ("groups", self.groups, 1),
                ("bias", self.bias is not None, True),
                ("padding_mode", self.padding_mode, "zeros"),
            ],
        )

    # ------------------------------------------------------------------ shapes
    def _out_shape(self, x: np.ndarray) -> tuple[int, ...]:
        """Output spatial shape; a ShapeError if the padded input is smaller than the dilated
        kernel (which is also when the output size would be non-positive)."""
        spatial = x.shape[2:]
        padded = tuple(s + lo + hi for s, (lo, hi) in zip(spatial, self._pads))
        reach = tuple(d * (k - 1) + 1 for d, k in zip(self.dilation, self.kernel_size))
        if any(p < r for p, r in zip(padded, reach)):
            names = spatial_names(self._n)
            raise ShapeError(
                expected_got(
                    self,
                    f"input of spatial size at least {fmt_shape(reach)} (the dilated kernel) "
                    f"after padding, i.e. {fmt_shape(['N', self.in_channels, *names])} with "
                    f"padded {', '.join(names)} >= {', '.join(map(str, reach))}",
                    f"{fmt_shape(x.shape)} (padded spatial size {fmt_shape(padded)})",
                )
            )
        if self.padding_mode == "reflect" and any(
            max(lo, hi) >= s for s, (lo, hi) in zip(spatial, self._pads)
        ):
            raise ShapeError(
                expected_got(
                    self,
                    "input of spatial size larger than the padding for padding_mode='reflect'",
                    fmt_shape(x.shape),
                )
            )
        return tuple(
            conv_out_size(s, k, t, lo + hi, d)
            for s, k, t, (lo, hi), d in zip(
                spatial, self.kernel_size, self.stride, self._pads, self.dilation
            )
        )

    def _columns(self, x: np.ndarray, out_shape) -> np.ndarray:
        """im2col of the padded input, as (G, Cg*K, N*P), in the spare buffer if one fits."""
        xp = pad(x, self._pads, self.padding_mode)
        spare, self._spare = self._spare, None
        cols = im2col(xp, self.kernel_size, self.stride, self.dilation, out_shape, out=spare)
        return cols.reshape(self.groups, -1, x.shape[0] * int(np.prod(out_shape)))

    # ------------------------------------------------------------------ forward / backward
    def forward(self, x):
        w = self.weight.data
        x = as_float_input(self, x, w.dtype)
        out_shape = self._out_shape(x)
        xm = array_module(x)
        if x.size == 0:  # an empty batch: an empty output, no columns to build
            self.save_for_backward(x, out_shape, None)
            return xm.zeros((0, self.out_channels, *out_shape), dtype=w.dtype)
        n, g, o = x.shape[0], self.groups, self.out_channels
        p = int(np.prod(out_shape))
        w3 = w.reshape(g, o // g, -1)  # (G, Og, Cg*K)
        if self._pointwise:
            # 1x1: the input is its own columns; (G, Og, Cg) @ (N, G, Cg, P) -> (N, G, Og, P)
            y = np.matmul(w3, x.reshape(n, g, -1, p)).reshape(n, o, *out_shape)
            if self.bias is not None:
                y += self.bias.data.reshape((o,) + (1,) * self._n)
            self.save_for_backward(x, out_shape, [None])
            return y
        if (
            self.chunked
            and self.flat
            and self.stride == (1,) * self._n
            and n * o * p >= self.FLAT_MIN_OUTPUTS
        ):
            return self._forward_flat(x, out_shape)
        if self.chunked:
            return self._forward_chunked(x, w3, out_shape)
        cols = self._columns(x, out_shape)  # (G, Cg*K, N*P)
        y2 = np.matmul(w3, cols).reshape(o, n, p)  # one GEMM per group: (O, N*P)
        y = xm.empty((n, o, *out_shape), dtype=w.dtype)
        yt = y.reshape(n, o, p).transpose(1, 0, 2)  # (O, N, P) view of the output
        if self.bias is not None:
            np.add(y2, self.bias.data[:, None, None], out=yt)  # transpose and bias in one pass
        else:
            yt[...] = y2
        self.save_for_backward(x, out_shape, [cols if self.save_columns else None])
        return y

    # ------------------------------------------------------------------ chunked path
    def _on_cpu(self) -> bool:
        return type(self.weight.data) is np.ndarray or array_module(self.weight.data) is np

    def _chunk(self, n: int, out_shape) -> int:
        """Images per chunk: their columns and outputs fit in about CHUNK_BYTES (in cache)."""
        p = int(np.prod(out_shape))
        k = int(np.prod(self.kernel_size))
        per_image = (self.in_channels * k + 2 * self.out_channels) * p * self.weight.data.itemsize
        budget = self.CHUNK_BYTES if self._on_cpu() else self.DEVICE_CHUNK_BYTES
        return max(1, min(n, budget // per_image))

    def _forward_chunked(self, x, w3, out_shape):
        """The forward GEMM over chunks of a few images: each chunk's columns are built, used
        by the GEMM and its output transposed and biased while they are in cache (over the
        whole batch, the columns and the output would stream through memory once more each).
        The columns land in one whole-batch buffer, kept for backward's dL/dW."""
        xp = pad(x, self._pads, self.padding_mode)
        n, g, o = x.shape[0], self.groups, self.out_channels
        p = int(np.prod(out_shape))
        view = windows(xp, self.kernel_size, self.stride, self.dilation, out_shape)
        spare, self._spare = self._spare, None
        xm = array_module(x)
        if (
            spare is None
            or spare.size != view.size
            or spare.dtype != xp.dtype
            or type(spare) is not type(xp)
        ):
            spare = xm.empty(view.size, dtype=xp.dtype)
        cols = spare.reshape(view.shape)  # (C, *kernel, N, *out)
        cols3 = cols.reshape(g, -1, n * p)  # (G, Cg*K, N*P)
        y = xm.empty((n, o, *out_shape), dtype=w3.dtype)
        y3 = y.reshape(n, o, p)
        bias = None if self.bias is None else self.bias.data[:, None, None]
        k = len(self.kernel_size)
        step = self._chunk(n, out_shape)
        for n0 in range(0, n, step):
            n1 = min(n, n0 + step)
            chunk = (slice(None),) * (k + 1) + (slice(n0, n1),)
            np.copyto(cols[chunk], view[chunk])
            y2 = np.matmul(w3, cols3[:, :, n0 * p : n1 * p]).reshape(o, n1 - n0, p)
            yt = y3[n0:n1].transpose(1, 0, 2)  # (O, nc, P) view of the chunk's output
            if bias is not None:
                np.add(y2, bias, out=yt)  # transpose and bias in one pass, in cache
            else:
                yt[...] = y2
        self.save_for_backward(x, out_shape, [cols3 if self.save_columns else None])
        return y

    # ------------------------------------------------------------------ stride-1 path
    def _images_per_chunk(self, n: int, elements_per_image: int) -> int:
        """Images per chunk so that the buffers of a chunk (``elements_per_image`` each) fit
        in FLAT_CHUNK_BYTES, i.e. stay in cache between their uses (DEVICE_CHUNK_BYTES on a
        GPU)."""
        per_image = elements_per_image * self.weight.data.itemsize
        budget = self.FLAT_CHUNK_BYTES if self._on_cpu() else self.DEVICE_CHUNK_BYTES
        return max(1, min(n, budget // max(1, per_image)))

    def _forward_flat(self, x, out_shape):
        """Stride 1: per chunk of m images, the flat columns (see :mod:`._im2col`) and one GEMM
        per group, ``[W | b] (Og, Cg*K + 1) @ [cols; 1] (Cg*K + 1, m*L)``: the bias rides in
        the GEMM as a row of ones (no bias pass), and the copy of the valid positions of the
        flat outputs ``(O, m, L)`` into ``y (m, O, *out)`` does the reordering (no transpose
        pass). Nothing but ``x`` is kept: backward rebuilds the columns chunk by chunk."""
        xm = array_module(x)
        dtype = self.weight.data.dtype
        n, g, o, c = x.shape[0], self.groups, self.out_channels, self.in_channels
        kernel, pads, mode = self.kernel_size, self._pads, self.padding_mode
        padded = tuple(s + lo + hi for s, (lo, hi) in zip(x.shape[2:], pads))
        length = flat_length(padded, out_shape)
        rows = c // g * int(np.prod(kernel))  # Cg*K
        wb = self._weight_rows(with_bias=self.bias is not None)  # (G, Og, rows [+ 1])
        per_image = (wb.shape[-1] * g + o) * length + c * int(np.prod(padded))
        step = self._images_per_chunk(n, per_image)
        windows_of = ChunkWindows(x, pads, mode, step, kernel, self.dilation, out_shape)
        r = wb.shape[-1]
        cols = xm.empty((g, r, step, length), dtype=dtype)
        if self.bias is not None:
            cols[:, rows] = 1  # the row of ones that multiplies the bias column
        out = xm.empty((g, o // g, step, length), dtype=dtype)  # the GEMM's flat outputs
        valid = flat_positions(out.reshape(o, step, length), padded, out_shape)
        y = xm.empty((n, o, *out_shape), dtype=dtype)
        for n0 in range(0, n, step):
            view = windows_of(n0)  # (m, C, *kernel, L)
            m = view.shape[0]
            chunk_columns(cols[:, :rows], view, g)
            # (G, Og, R) @ (G, R, m*L) -> (G, Og, m*L): (O, m, L), to (m, O, *out) below
            np.matmul(
                wb,
                cols[:, :, :m].reshape(g, r, m * length),
                out=out[:, :, :m].reshape(g, o // g, m * length),
            )
            y[n0 : n0 + m] = valid[:, :m].swapaxes(0, 1)
        self.save_for_backward(x, out_shape, "flat")
        return y

    def _weight_rows(self, with_bias: bool):
        """The weight as (G, Og, Cg*K), with the bias as one more column when asked."""
        g, o = self.groups, self.out_channels
        w3 = self.weight.data.reshape(g, o // g, -1)
        if not with_bias:
            return w3
        b = self.bias.data.reshape(g, o // g, 1)
        return array_module(w3).concatenate([w3, b.astype(w3.dtype)], axis=-1)

    def _backward_flat(self, x, out_shape, grad_output):
        """Stride 1, per chunk of images (padded and turned into columns in cache): dL/dW and
        dL/db by :class:`_FlatWeightGrad`, dL/dx by :class:`_FlatInputGrad` (a correlation of
        the padded g with the flipped kernel: no col2im). With ``needs_input_grad = False``
        only the first runs; with a frozen weight only the second (and dL/db as a sum)."""
        w, b = self.weight, self.bias
        need_w, need_x = w.requires_grad, self.needs_input_grad
        need_b = b is not None and b.requires_grad
        if need_b and not need_w:
            b.grad += grad_output.sum(axis=(0, *range(2, 2 + self._n)))
        if not need_w and not need_x:
            return None
        n = x.shape[0]
        rows = self.in_channels // self.groups * int(np.prod(self.kernel_size))
        kind = _ImageWeightGrad if rows < self.IMAGE_WGRAD_ROWS else _FlatWeightGrad
        wgrad = kind(self, x, out_shape, need_b) if need_w else None
        xgrad = _FlatInputGrad(self, x.shape, grad_output) if need_x else None
        per_image = (wgrad.elements if wgrad else 0) + (xgrad.elements if xgrad else 0)
        step = self._images_per_chunk(n, per_image)
        if wgrad:
            wgrad.allocate(step)
        if xgrad:
            xgrad.allocate(step)
        for n0 in range(0, n, step):
            if wgrad:
                wgrad.add_chunk(n0, grad_output[n0 : n0 + step])
            if xgrad:
                xgrad.chunk(n0)
        if wgrad:
            wgrad.finish(w, b if need_b else None)
        return xgrad.result() if xgrad else None

    def backward(self, grad_output):
        x, out_shape, holder = self.saved
        n, g, o = x.shape[0], self.groups, self.out_channels
        grad_output = check_grad(self, grad_output, (n, o, *out_shape))
        if holder is None:  # an empty batch: nothing reaches the parameters
            return np.zeros_like(x)
        if isinstance(holder, str):  # "flat": the stride-1 path
            return self._backward_flat(x, out_shape, grad_output)
        p = int(np.prod(out_shape))
        w = self.weight
        w3 = w.data.reshape(g, o // g, -1)
        if self._pointwise:
            g4 = grad_output.reshape(n, g, o // g, p)
            x4 = x.reshape(n, g, -1, p)
            if w.requires_grad:
                # dL/dW = sum_n g_n @ x_n^T: (Og, P) @ (P, Cg) per sample and group
                w.grad += np.matmul(g4, x4.swapaxes(-1, -2)).sum(axis=0).reshape(w.shape)
            if self.bias is not None and self.bias.requires_grad:
                self.bias.grad += g4.sum(axis=(0, 3)).reshape(o)
            if not self.needs_input_grad:
                return None  # the input is data
            return np.matmul(w3.swapaxes(-1, -2), g4).reshape(x.shape)  # W^T @ g
        # g as (G, Og, N*P): the layout of the forward GEMM's output
        gt = array_module(grad_output).ascontiguousarray(
            grad_output.reshape(n, o, p).transpose(1, 0, 2)
        )
        gt = gt.reshape(g, o // g, n * p)
        if self.bias is not None and self.bias.requires_grad:
            self.bias.grad += gt.sum(axis=-1).reshape(o)
        cols = holder[0]
        holder[0] = None  # consumed below: a second backward rebuilds them from x
        if w.requires_grad:
            if cols is None:
                cols = self._columns(x, out_shape)
            # dL/dW = g @ cols^T: (Og, N*P) @ (N*P, Cg*K) per group; with many column rows
            # as (cols @ g^T)^T, which OpenBLAS runs 10-20 % faster on these shapes
            if cols.shape[1] >= 64:
                dw = np.matmul(cols, gt.swapaxes(-1, -2)).swapaxes(-1, -2)
            else:
                dw = np.matmul(gt, cols.swapaxes(-1, -2))
            w.grad += dw.reshape(w.shape)
        if not self.needs_input_grad:  # the input is data: skip W^T @ g and col2im
            if self.save_columns and cols is not None:
                self._spare = cols
            return None
        # dL/dcols = W^T @ g: (Cg*K, Og) @ (Og, N*P), written over the forward's columns
        dcols = np.matmul(w3.swapaxes(-1, -2), gt, out=cols)
        padded = tuple(s + lo + hi for s, (lo, hi) in zip(x.shape[2:], self._pads))
        dxp = col2im(
            dcols.reshape(self.in_channels, *self.kernel_size, n, *out_shape),
            (n, self.in_channels, *padded),
            self.kernel_size,
            self.stride,
            self.dilation,
            out_shape,
        )
        if self.save_columns:
            self._spare = dcols  # consumed: the next forward builds its columns in it
        return unpad(dxp, self._pads, self.padding_mode)


class Conv1d(_ConvNd):
    """1-D convolution (cross-correlation, as PyTorch) over ``(N, C, L)`` signals.

    Args:
        in_channels, out_channels: channels of the input and of the output.
        kernel_size, stride, dilation: an int or a 1-tuple.
        padding: an int, a 1-tuple, 'valid' (none) or 'same' (output length = input length;
            stride 1 only; an odd total padding puts the extra element at the end).
        groups: splits the channels into independent groups (``groups=in_channels``:
            depthwise). Must divide both channel counts.
        bias: learn an additive bias per output channel.
        padding_mode: 'zeros', 'reflect', 'replicate' or 'circular'.
        device, dtype, rng, init: as :class:`nnframe.Dense`; the default init is PyTorch's,
            U(-1/sqrt(fan_in), 1/sqrt(fan_in)) with fan_in = in_channels / groups * kernel_size.

    Shape:
        input: (N, in_channels, L)
        output: (N, out_channels, L_out), L_out = floor((L + 2 padding - dilation (kernel_size - 1)
        - 1) / stride) + 1.
        weight: (out_channels, in_channels // groups, kernel_size); bias: (out_channels,).

    Example:
        >>> import numpy as np, nnframe as nf
        >>> conv = nf.Conv1d(2, 4, kernel_size=3, stride=2, padding=1, rng=0)
        >>> conv(np.ones((5, 2, 40), dtype=np.float32)).shape
        (5, 4, 20)
    """

    _n = 1
    input_spec = InputSpec(("N", "C", *spatial_names(1)), size="in_channels")


class Conv2d(_ConvNd):
    """2-D convolution over ``(N, C, H, W)`` images; the arguments of :class:`Conv1d`, each an
    int or a pair.

    Shape:
        input: (N, in_channels, H, W)
        output: (N, out_channels, H_out, W_out), each side as Conv1d's L_out.
        weight: (out_channels, in_channels // groups, kH, kW); bias: (out_channels,).

    Example:
        >>> import numpy as np, nnframe as nf
        >>> conv = nf.Conv2d(3, 8, kernel_size=3, padding="same", rng=0)
        >>> conv.weight.shape
        (8, 3, 3, 3)
        >>> conv(np.ones((2, 3, 10, 12), dtype=np.float32)).shape
        (2, 8, 10, 12)
    """

    _n = 2
    input_spec = InputSpec(("N", "C", *spatial_names(2)), size="in_channels")


class Conv3d(_ConvNd):
    """3-D convolution over ``(N, C, D, H, W)`` volumes; the arguments of :class:`Conv1d`, each
    an int or a triple.

    Shape:
        input: (N, in_channels, D, H, W)
        output: (N, out_channels, D_out, H_out, W_out), each side as Conv1d's L_out.
        weight: (out_channels, in_channels // groups, kD, kH, kW); bias: (out_channels,).

    Example:
        >>> import numpy as np, nnframe as nf
        >>> nf.Conv3d(1, 2, kernel_size=(1, 3, 3), rng=0)(np.ones((1, 1, 4, 5, 5))).shape
        (1, 2, 4, 3, 3)
    """

    _n = 3
    input_spec = InputSpec(("N", "C", *spatial_names(3)), size="in_channels")


class _ConvTransposeNd(Module):
    """Shared code of ConvTranspose1d/2d (``_n`` spatial dimensions)."""

    _n = 0

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size,
        stride=1,
        padding=0,
        output_padding=0,
        groups: int = 1,
        bias: bool = True,
        dilation=1,
        padding_mode: str = "zeros",
        device=None,
        dtype=np.float32,
        *,
        rng=None,
        init="default",
    ):
        super().__init__()
        who, n = type(self).__name__, self._n
        check_device(who, device)
        dtype = resolve_dtype(dtype)
        _set_channels(self, who, in_channels, out_channels, groups)
        self.kernel_size = ntuple(who, "kernel_size", kernel_size, n, 1)
        self.stride = ntuple(who, "stride", stride, n, 1)
        self.padding = ntuple(who, "padding", padding, n, 0)
        self.output_padding = ntuple(who, "output_padding", output_padding, n, 0)
        self.dilation = ntuple(who, "dilation", dilation, n, 1)
        check_hyper(
            who,
            "output_padding",
            output_padding,
            all(
                op < max(s, d) for op, s, d in zip(self.output_padding, self.stride, self.dilation)
            ),
            "must be smaller than stride or dilation",
        )
        check_hyper(
            who,
            "padding_mode",
            padding_mode,
            padding_mode == "zeros",
            "only 'zeros' is supported, as in PyTorch",
        )
        self.padding_mode = padding_mode
        # PyTorch's layout for transposed convolutions: (in, out // groups, *kernel)
        shape = (in_channels, out_channels // groups, *self.kernel_size)
        fan_in = (out_channels // groups) * int(np.prod(self.kernel_size))  # PyTorch's fan_in
        _set_parameters(self, shape, fan_in, bias, rng, dtype, init)

    def extra_repr(self) -> str:
        n = self._n
        return _conv_repr(
            self,
            [
                ("padding", self.padding, (0,) * n),
                ("output_padding", self.output_padding, (0,) * n),
                ("dilation", self.dilation, (1,) * n),
                ("groups", self.groups, 1),
                ("bias", self.bias is not None, True),
            ],
        )

    def _shapes(self, x):
        """(output spatial shape, full spatial shape before cropping the padding)."""
        out, full = [], []
        for s, k, t, p, op, d in zip(
            x.shape[2:],
            self.kernel_size,
            self.stride,
            self.padding,
            self.output_padding,
            self.dilation,
        ):
            span = (s - 1) * t + d * (k - 1) + 1  # positions the kernel reaches
            out.append(span - 2 * p + op)
            full.append(max(span, p + out[-1]))
        if any(o <= 0 for o in out):
            raise ShapeError(
                expected_got(
                    self,
                    "an input large enough for a positive output size "
                    "((L - 1) * stride - 2 * padding + dilation * (kernel_size - 1) "
                    "+ output_padding + 1 > 0)",
                    f"input {fmt_shape(x.shape)} -> output size {fmt_shape(out)}",
                )
            )
        return tuple(out), tuple(full)

    def forward(self, x):
        w = self.weight.data
        x = as_float_input(self, x, w.dtype)
        out_shape, full_shape = self._shapes(x)
        xm = array_module(x)
        if x.size == 0:  # an empty batch: an empty output (and gradients), no GEMM
            self.save_for_backward(None, x.shape, out_shape, full_shape)
            return xm.zeros((0, self.out_channels, *out_shape), dtype=w.dtype)
        n, g, c_in, c_out = x.shape[0], self.groups, self.in_channels, self.out_channels
        spatial = x.shape[2:]
        p = int(np.prod(spatial))
        # x as (G, Cin_g, N*P): the right operand of one GEMM per group
        xt = xm.ascontiguousarray(x.reshape(n, c_in, p).transpose(1, 0, 2))
        xt = xt.reshape(g, c_in // g, n * p)
        w3 = w.reshape(g, c_in // g, -1)  # (G, Cin_g, Cout_g*K)
        cols = np.matmul(w3.swapaxes(-1, -2), xt)  # (G, Cout_g*K, N*P)
        full = col2im(
            cols.reshape(c_out, *self.kernel_size, n, *spatial),
            (n, c_out, *full_shape),
            self.kernel_size,
            self.stride,
            self.dilation,
            spatial,
        )
        crop = tuple(slice(q, q + o) for q, o in zip(self.padding, out_shape))
        y = xm.ascontiguousarray(full[(Ellipsis, *crop)])
        if self.bias is not None:
            y += self.bias.data.reshape((c_out,) + (1,) * self._n)
        self.save_for_backward(xt, x.shape, out_shape, full_shape)
        return y

    def backward(self, grad_output):
        xt, x_shape, out_shape, full_shape = self.saved
        n, g, c_in, c_out = x_shape[0], self.groups, self.in_channels, self.out_channels
        grad_output = check_grad(self, grad_output, (n, c_out, *out_shape))
        if xt is None:  # an empty batch
            return array_module(grad_output).zeros(x_shape, dtype=self.weight.data.dtype)
        spatial = x_shape[2:]
        w = self.weight
        if self.bias is not None and self.bias.requires_grad:
            self.bias.grad += grad_output.sum(axis=(0, *range(2, 2 + self._n)))
        # the adjoint of cropping is zero padding back to the full size
        pads = tuple((q, f - q - o) for q, f, o in zip(self.padding, full_shape, out_shape))
        gp = pad(grad_output, pads)
        gcols = im2col(gp, self.kernel_size, self.stride, self.dilation, spatial)
        p = int(np.prod(spatial))  # explicit sizes: an empty batch has no -1 to infer
        gcols = gcols.reshape(g, c_out // g * int(np.prod(self.kernel_size)), n * p)
        if w.requires_grad:
            # dL/dW = x @ gcols^T: (Cin_g, N*P) @ (N*P, Cout_g*K) per group
            w.grad += np.matmul(xt, gcols.swapaxes(-1, -2)).reshape(w.shape)
        if not self.needs_input_grad:
            return None  # the input is data
        # dL/dx = W @ gcols: (Cin_g, Cout_g*K) @ (Cout_g*K, N*P), back to (N, Cin, *L)
        dxt = np.matmul(w.data.reshape(g, c_in // g, -1), gcols)
        dx = array_module(dxt).empty(x_shape, dtype=dxt.dtype)
        dx.reshape(n, c_in, p).transpose(1, 0, 2)[...] = dxt.reshape(c_in, n, p)
        return dx


class ConvTranspose1d(_ConvTransposeNd):
    """1-D transposed convolution (the gradient of Conv1d with respect to its input), as
    PyTorch's, often used to upsample.

    Args:
        in_channels, out_channels, kernel_size, stride, padding, groups, bias, dilation: as
            :class:`Conv1d` (padding is an int or a 1-tuple and crops the output).
        output_padding: extra size added at the end of the output (to pick among the input
            sizes a strided convolution maps to the same size); smaller than stride or dilation.
        padding_mode: only 'zeros' (as PyTorch).
        device, dtype, rng, init: as :class:`nnframe.Dense`; PyTorch's default init with
            fan_in = out_channels / groups * kernel_size.

    Shape:
        input: (N, in_channels, L)
        output: (N, out_channels, L_out), L_out = (L - 1) stride - 2 padding
        + dilation (kernel_size - 1) + output_padding + 1.
        weight: (in_channels, out_channels // groups, kernel_size); bias: (out_channels,).

    Example:
        >>> import numpy as np, nnframe as nf
        >>> up = nf.ConvTranspose1d(4, 2, kernel_size=4, stride=2, padding=1, rng=0)
        >>> up(np.ones((3, 4, 10), dtype=np.float32)).shape
        (3, 2, 20)
    """

    _n = 1
    input_spec = InputSpec(("N", "C", *spatial_names(1)), size="in_channels")


class ConvTranspose2d(_ConvTransposeNd):
    """2-D transposed convolution; the arguments of :class:`ConvTranspose1d`, each an int or
    a pair.

    Shape:
        input: (N, in_channels, H, W)
        output: (N, out_channels, H_out, W_out), each side as ConvTranspose1d's L_out.
        weight: (in_channels, out_channels // groups, kH, kW); bias: (out_channels,).

    Example:
        >>> import numpy as np, nnframe as nf
        >>> up = nf.ConvTranspose2d(8, 3, kernel_size=3, stride=2, padding=1, output_padding=1)
        >>> up(np.ones((1, 8, 7, 7), dtype=np.float32)).shape
        (1, 3, 14, 14)
    """

    _n = 2
    input_spec = InputSpec(("N", "C", *spatial_names(2)), size="in_channels")


class ConvTranspose3d(_ConvTransposeNd):
    """3-D transposed convolution; the arguments of :class:`ConvTranspose1d`, each an int or
    a triple.

    Shape:
        input: (N, in_channels, D, H, W) or (in_channels, D, H, W).
        output: (N, out_channels, D_out, H_out, W_out), each side as ConvTranspose1d's L_out.
        weight: (in_channels, out_channels // groups, kD, kH, kW); bias: (out_channels,).

    Example:
        >>> import numpy as np, nnframe as nf
        >>> up = nf.ConvTranspose3d(4, 2, kernel_size=2, stride=2, rng=0)
        >>> up(np.ones((1, 4, 3, 3, 3), dtype=np.float32)).shape
        (1, 2, 6, 6, 6)
    """

    _n = 3
    input_spec = InputSpec(("N", "C", *spatial_names(3)), size="in_channels")
