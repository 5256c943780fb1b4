"""Exporters of the rearranging layers: PixelShuffle, PixelUnshuffle, ChannelShuffle (Reshape
and Transpose; DepthToSpace for a 4-D PixelShuffle), Unfold and Fold (a grouped Conv and
ConvTranspose with one-hot kernels: the im2col and col2im of the layers, as ONNX operators)."""

from __future__ import annotations

import numpy as np

import nnframe as nf
from nnframe.onnx._context import register_exporter


@register_exporter(nf.PixelShuffle)
def pixel_shuffle(ctx, m, x):
    r = m.upscale_factor
    if x.ndim == 4:  # DepthToSpace's CRD mode is PyTorch's channel order c r^2 + i r + j
        return ctx.node("DepthToSpace", [x.name], blocksize=r, mode="CRD")
    *lead, c, h, w = x.shape
    k = len(lead)
    y = ctx.reshape(x.name, [0] * k + [c // (r * r), r, r, h, w])
    y = ctx.transpose(y, [*range(k), k, k + 3, k + 1, k + 4, k + 2])
    return ctx.reshape(y, [0] * k + [c // (r * r), h * r, w * r])


@register_exporter(nf.PixelUnshuffle)
def pixel_unshuffle(ctx, m, x):
    r = m.downscale_factor
    *lead, c, h, w = x.shape
    k = len(lead)
    y = ctx.reshape(x.name, [0] * k + [c, h // r, r, w // r, r])
    y = ctx.transpose(y, [*range(k), k, k + 2, k + 4, k + 1, k + 3])
    return ctx.reshape(y, [0] * k + [c * r * r, h // r, w // r])


@register_exporter(nf.ChannelShuffle)
def channel_shuffle(ctx, m, x):
    g, c, rest = m.groups, x.shape[1], list(x.shape[2:])
    y = ctx.reshape(x.name, [0, g, c // g, *rest])
    y = ctx.transpose(y, [0, 2, 1, *range(3, 3 + len(rest))])
    return ctx.reshape(y, [0, c, *rest])


def _one_hot(m, channels: int, dtype) -> np.ndarray:
    """(C kH kW, 1, kH, kW): output channel c K + k picks kernel position k of channel c."""
    k = int(np.prod(m.kernel_size))
    eye = np.eye(k, dtype=dtype).reshape(k, 1, *m.kernel_size)
    return np.tile(eye, (channels, 1, 1, 1))


def _attrs(m) -> dict:
    return {
        "kernel_shape": list(m.kernel_size),
        "strides": list(m.stride),
        "dilations": list(m.dilation),
        "pads": list(m.padding) * 2,
    }


@register_exporter(nf.Unfold)
def unfold(ctx, m, x):
    c = x.shape[1]
    w = ctx.const(_one_hot(m, c, x.dtype), "one_hot")
    blocks = ctx.node("Conv", [x.name, w], group=c, **_attrs(m))  # (N, C K, H_out, W_out)
    return ctx.reshape(blocks, [0, 0, -1])


@register_exporter(nf.Fold)
def fold(ctx, m, x):
    k = int(np.prod(m.kernel_size))
    c = x.shape[1] // k
    out = m._blocks(m.output_size)
    grid = ctx.reshape(x.name, [0, 0, *out])  # (N, C K, H_out, W_out)
    # the rows and columns no block reaches: ConvTranspose's output_padding (< stride)
    extra = [
        size + 2 * p - ((o - 1) * s + d * (kk - 1) + 1)
        for size, p, o, s, d, kk in zip(
            m.output_size, m.padding, out, m.stride, m.dilation, m.kernel_size
        )
    ]
    w = ctx.const(_one_hot(m, c, x.dtype), "one_hot")
    return ctx.node("ConvTranspose", [grid, w], group=c, output_padding=extra, **_attrs(m))
