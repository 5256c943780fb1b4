"""Channel and pixel rearrangements: PixelShuffle, PixelUnshuffle and ChannelShuffle.

Each is a reshape, one transpose and a reshape back (one copy); backward applies the inverse
permutation to the gradient.
"""

from __future__ import annotations

import numpy as np

from nnframe.core.backend import array_module
from nnframe.core.errors import ShapeError, check_grad, check_hyper, expected_got, fmt_shape
from nnframe.core.module import Module


def _factor(who: str, name: str, value) -> int:
    ok = isinstance(value, (int, np.integer)) and not isinstance(value, bool) and value > 0
    check_hyper(who, name, value, ok, "must be a positive int")
    return int(value)


def _array(x) -> np.ndarray:
    return x if type(x) is np.ndarray else array_module(x).asarray(x)


def pixel_shuffle(x: np.ndarray, r: int) -> np.ndarray:
    """(*, C r^2, H, W) -> (*, C, H r, W r): out[..., c, h r + i, w r + j] = x[..., c r^2 + i r + j, h, w]."""
    *lead, c, h, w = x.shape
    y = x.reshape(*lead, c // (r * r), r, r, h, w)
    k = len(lead)
    y = y.transpose(*range(k), k, k + 3, k + 1, k + 4, k + 2)  # (*, C, H, r, W, r)
    return y.reshape(*lead, c // (r * r), h * r, w * r)


def pixel_unshuffle(x: np.ndarray, r: int) -> np.ndarray:
    """The inverse of :func:`pixel_shuffle`: (*, C, H r, W r) -> (*, C r^2, H, W)."""
    *lead, c, hr, wr = x.shape
    y = x.reshape(*lead, c, hr // r, r, wr // r, r)
    k = len(lead)
    y = y.transpose(*range(k), k, k + 2, k + 4, k + 1, k + 3)  # (*, C, r, r, H, W)
    return y.reshape(*lead, c * r * r, hr // r, wr // r)


class PixelShuffle(Module):
    """Rearranges (*, C r^2, H, W) into (*, C, H r, W r) (sub-pixel convolution upsampling,
    Shi et al. 2016), as PyTorch's.

    Args:
        upscale_factor: r.

    Shape:
        input: (*, C r^2, H, W), at least 3 dimensions.    output: (*, C, H r, W r).

    Example:
        >>> import numpy as np, nnframe as nf
        >>> nf.PixelShuffle(2)(np.arange(4.0).reshape(1, 4, 1, 1))
        array([[[[0., 1.],
                 [2., 3.]]]])
    """

    def __init__(self, upscale_factor: int):
        super().__init__()
        self.upscale_factor = _factor("PixelShuffle", "upscale_factor", upscale_factor)

    def extra_repr(self) -> str:
        return f"upscale_factor={self.upscale_factor}"

    def forward(self, x):
        x = _array(x)
        r = self.upscale_factor
        if x.ndim < 3 or x.shape[-3] % (r * r):
            raise ShapeError(
                expected_got(self, f"input of shape (*, C * {r * r}, H, W)", fmt_shape(x.shape))
            )
        self.save_for_backward(x.shape)
        return pixel_shuffle(x, r)

    def backward(self, grad_output):
        (shape,) = self.saved
        r = self.upscale_factor
        expected = (*shape[:-3], shape[-3] // (r * r), shape[-2] * r, shape[-1] * r)
        return pixel_unshuffle(check_grad(self, grad_output, expected), r)


class PixelUnshuffle(Module):
    """Rearranges (*, C, H r, W r) into (*, C r^2, H, W): the inverse of PixelShuffle.

    Args:
        downscale_factor: r.

    Shape:
        input: (*, C, H r, W r), at least 3 dimensions.    output: (*, C r^2, H, W).

    Example:
        >>> import numpy as np, nnframe as nf
        >>> nf.PixelUnshuffle(2)(np.arange(4.0).reshape(1, 1, 2, 2)).ravel()
        array([0., 1., 2., 3.])
    """

    def __init__(self, downscale_factor: int):
        super().__init__()
        self.downscale_factor = _factor("PixelUnshuffle", "downscale_factor", downscale_factor)

    def extra_repr(self) -> str:
        return f"downscale_factor={self.downscale_factor}"

    def forward(self, x):
        x = _array(x)
        r = self.downscale_factor
        if x.ndim < 3 or x.shape[-2] % r or x.shape[-1] % r:
            raise ShapeError(
                expected_got(self, f"input of shape (*, C, H * {r}, W * {r})", fmt_shape(x.shape))
            )
        self.save_for_backward(x.shape)
        return pixel_unshuffle(x, r)

    def backward(self, grad_output):
        (shape,) = self.saved
        r = self.downscale_factor
        expected = (*shape[:-3], shape[-3] * r * r, shape[-2] // r, shape[-1] // r)
        return pixel_shuffle(check_grad(self, grad_output, expected), r)


class ChannelShuffle(Module):
    """Interleaves the channels of ``groups`` groups (ShuffleNet, Zhang et al. 2018): channel
    ``g * (C / groups) + k`` moves to ``k * groups + g``.

    Args:
        groups: the number of groups; must divide the channels.

    Shape:
        input: (N, C, *), at least 3 dimensions.    output: same.

    Example:
        >>> import numpy as np, nnframe as nf
        >>> nf.ChannelShuffle(2)(np.arange(4.0).reshape(1, 4, 1)).ravel()
        array([0., 2., 1., 3.])
    """

    def __init__(self, groups: int):
        super().__init__()
        self.groups = _factor("ChannelShuffle", "groups", groups)

    def extra_repr(self) -> str:
        return f"groups={self.groups}"

    @staticmethod
    def _shuffle(x: np.ndarray, a: int) -> np.ndarray:
        """(N, a * b, *) -> (N, b * a, *): the channel grid (a, b) transposed."""
        n, c, *rest = x.shape
        return x.reshape(n, a, c // a, *rest).swapaxes(1, 2).reshape(x.shape)

    def forward(self, x):
        x = _array(x)
        g = self.groups
        if x.ndim < 3 or x.shape[1] % g:
            raise ShapeError(
                expected_got(
                    self, f"input of shape (N, C, *) with C divisible by {g}", fmt_shape(x.shape)
                )
            )
        self.save_for_backward(x.shape)
        return self._shuffle(x, g)

    def backward(self, grad_output):
        (shape,) = self.saved
        g = check_grad(self, grad_output, shape)
        return self._shuffle(g, shape[1] // self.groups)  # the transposed grid, transposed back
