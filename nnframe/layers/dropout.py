"""Dropout layers: Dropout, Dropout1d, Dropout2d (whole channels) and AlphaDropout (for SELU).

Every mask is drawn from the layer's own generator (``rng=``: a Generator, an int seed, or None
for nnframe's default generator, taken when the layer is built), so a seeded run repeats
exactly. Dropout is *inverted*: kept values are scaled by ``1 / (1 - p)`` at training time, so
the expected activation is unchanged and evaluation mode is the identity.
"""

from __future__ import annotations

import warnings

import numpy as np

from nnframe._pytorch_args import check_flag
from nnframe.core.backend import array_module, random_generator
from nnframe.core.errors import ShapeError, as_float_input, check_hyper, expected_got, fmt_shape
from nnframe.core.input_spec import InputSpec
from nnframe.core.module import Module
from nnframe.core.random import get_rng


class _DropoutBase(Module):
    def __init__(self, p: float = 0.5, inplace: bool = False, *, rng=None):
        super().__init__()
        check_hyper(type(self).__name__, "p", p, 0.0 <= p <= 1.0, "must be in [0, 1]")
        self.p = float(p)
        # PyTorch's in-place flag: accepted; the input is never overwritten (see Dropout)
        self.inplace = check_flag(type(self).__name__, "inplace", inplace)
        self.rng = get_rng(rng)

    def extra_repr(self) -> str:
        return f"p={self.p}, inplace=True" if self.inplace else f"p={self.p}"

    def _input(self, x) -> np.ndarray:
        if type(x) is np.ndarray and x.dtype.kind == "f":
            return x
        if array_module(x) is not np and x.dtype.kind == "f":
            return x  # a floating array of another module (CuPy)
        return as_float_input(self, x, np.float32)

    def _mask_shape(self, x: np.ndarray) -> tuple[int, ...]:
        return x.shape

    def _keep_mask(self, x: np.ndarray) -> np.ndarray:
        """A {0, 1/(1-p)} mask of ``_mask_shape`` in x's dtype (all zeros for p = 1)."""
        shape = self._mask_shape(x)
        if self.p == 1.0:
            return array_module(x).zeros(shape, dtype=x.dtype)
        draw_dtype = x.dtype if x.dtype in (np.float32, np.float64) else np.float64
        u = random_generator(array_module(x), self.rng).random(shape, dtype=draw_dtype)
        keep = u >= self.p  # P(keep) = 1 - p
        return keep * x.dtype.type(1.0 / (1.0 - self.p))

    def forward(self, x):
        x = self._input(x)
        if not self.training or self.p == 0.0:
            self.save_for_backward(None)
            return x
        mask = self._keep_mask(x)
        self.save_for_backward(mask)
        return x * mask  # the mask broadcasts over the spatial axes of the channel variants

    def backward(self, grad_output):
        (mask,) = self.saved
        return grad_output if mask is None else grad_output * mask


class Dropout(_DropoutBase):
    """Zeroes each element with probability ``p`` in training mode and scales the kept ones by
    ``1 / (1 - p)``; the identity in evaluation mode.

    Args:
        p: probability of dropping an element, in [0, 1].
        inplace: PyTorch's in-place flag. Accepted; the input is never overwritten: in training
            the output is a new array, in evaluation mode the input itself (as PyTorch's
            dropout without ``inplace``). The same for every dropout layer.
        rng: Generator or int seed for the masks (None: nnframe's default generator).

    Shape:
        input: any.    output: same as input.

    Example:
        >>> import numpy as np, nnframe as nf
        >>> drop = nf.Dropout(0.5, rng=0)
        >>> y = drop(np.ones((2, 4), dtype=np.float32))
        >>> sorted(set(y.ravel().tolist()))  # dropped, or kept and doubled
        [0.0, 2.0]
        >>> drop.eval()(np.ones(3, dtype=np.float32))
        array([1., 1., 1.], dtype=float32)
    """


class _ChannelDropout(_DropoutBase):
    """Drops whole channels: one draw per (sample, channel), broadcast over the positions."""

    _ndim = 0
    _layout = ""

    def _input(self, x) -> np.ndarray:
        x = super()._input(x)
        if x.ndim != self._ndim:
            raise ShapeError(
                expected_got(self, f"input of shape {self._layout}", fmt_shape(x.shape))
            )
        return x

    def _mask_shape(self, x: np.ndarray) -> tuple[int, ...]:
        return x.shape[:2] + (1,) * (x.ndim - 2)


class Dropout1d(_ChannelDropout):
    """Channel dropout for (N, C, L) inputs: each channel of each sample is zeroed entirely with
    probability ``p`` (kept ones scaled by ``1 / (1 - p)``); the identity in evaluation mode.

    Args:
        p: probability of dropping a channel.
        inplace: accepted; the input is never overwritten (see Dropout).
        rng: Generator or int seed for the masks.

    Shape:
        input: (N, C, L), or unbatched (C, L).    output: same as input.
    """

    _ndim = 3
    _layout = "(N, C, L)"
    input_spec = InputSpec(("N", "C", "L"))  # PyTorch's Dropout1d takes (C, L) too


class Dropout2d(_ChannelDropout):
    """Channel dropout for (N, C, H, W) inputs: each feature map is zeroed entirely with
    probability ``p`` (kept ones scaled by ``1 / (1 - p)``); the identity in evaluation mode.

    Args:
        p: probability of dropping a channel.
        inplace: accepted; the input is never overwritten (see Dropout).
        rng: Generator or int seed for the masks.

    A 3-D input is read as PyTorch 2.x reads it, as (N, C, L) with whole (sample, channel)
    rows dropped (what Dropout1d does), with PyTorch's UserWarning: PyTorch plans to read it
    as an unbatched (C, H, W) image in a future release. Use Dropout1d for (N, C, L) inputs.

    Shape:
        input: (N, C, H, W), or (N, C, L) with a warning.    output: same as input.
    """

    _ndim = 4
    _layout = "(N, C, H, W)"

    def _input(self, x) -> np.ndarray:
        x = _DropoutBase._input(self, x)
        if x.ndim == 3:  # PyTorch's historical rule, in training and evaluation mode alike
            warnings.warn(
                f"{self!r}: a 3-D input is read as (N, C, L) and its channels dropped as "
                "Dropout1d does, as PyTorch does (a future PyTorch reads it as an unbatched "
                "(C, H, W) image); use Dropout1d for (N, C, L) inputs",
                UserWarning,
                stacklevel=4,
            )
            return x
        return super()._input(x)


# SELU's negative saturation value: -scale * alpha
_SELU_ALPHA_PRIME = -1.0507009873554804934193349852946 * 1.6732632423543772848170429916717


class AlphaDropout(_DropoutBase):
    """Dropout for self-normalizing (SELU) networks: dropped elements are set to SELU's
    saturation value ``alpha' = -scale * alpha`` and an affine map ``a * x + b`` restores zero
    mean and unit variance, so activations keep their statistics. The identity in evaluation.

    With keep probability ``q = 1 - p``: ``a = (q + alpha'^2 q p)^(-1/2)``, ``b = -a alpha' p``.

    Args:
        p: probability of dropping an element.
        inplace: accepted; the input is never overwritten (see Dropout).
        rng: Generator or int seed for the masks.

    Shape:
        input: any.    output: same as input.
    """

    def forward(self, x):
        x = self._input(x)
        if not self.training or self.p == 0.0:
            self.save_for_backward(None)
            return x
        if self.p == 1.0:
            mask = array_module(x).zeros(x.shape, dtype=x.dtype)
            self.save_for_backward(mask)
            return mask.copy()
        p, q = self.p, 1.0 - self.p
        a = (q + _SELU_ALPHA_PRIME**2 * q * p) ** -0.5
        b = -a * _SELU_ALPHA_PRIME * p
        draw_dtype = x.dtype if x.dtype in (np.float32, np.float64) else np.float64
        keep = random_generator(array_module(x), self.rng).random(x.shape, dtype=draw_dtype) >= p
        # y = a * (x * keep + alpha' * (1 - keep)) + b; dy/dx = a * keep
        grad_mask = keep * x.dtype.type(a)
        y = x * grad_mask
        y += np.where(keep, x.dtype.type(b), x.dtype.type(a * _SELU_ALPHA_PRIME + b))
        self.save_for_backward(grad_mask)
        return y
