"""Normalization layers: BatchNorm1d/2d/3d, LayerNorm, GroupNorm, InstanceNorm1d/2d, RMSNorm.

Every layer normalizes ``x_hat = (x - mean) / sqrt(var + eps)`` over some axes, then applies a
learned per-feature scale ``weight`` and shift ``bias``. Names, arguments, buffers and the
running-statistics update follow PyTorch, so a PyTorch ``state_dict`` loads as it is.

The backward of a normalization over axes A (M elements each) is the batch-coupled one::

    dx = inv_std * (dx_hat - mean_A(dx_hat) - x_hat * mean_A(dx_hat * x_hat))

where ``dx_hat = grad_output * weight``: every element of a group receives a share of every other
element's gradient, because each one moved the group's mean and variance.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from nnframe._pytorch_args import check_device, check_flag, resolve_dtype
from nnframe.core.backend import array_module
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


def _normalize(x: np.ndarray, axes: tuple[int, ...], eps: float):
    """Mean, biased variance, x_hat and 1/sqrt(var + eps) over ``axes`` (kept as size-1 dims)."""
    mean = x.mean(axis=axes, keepdims=True)
    centered = x - mean
    var = np.mean(centered * centered, axis=axes, keepdims=True)
    inv_std = 1.0 / np.sqrt(var + x.dtype.type(eps))  # a scalar: any array module
    centered *= inv_std  # in place: centered becomes x_hat, no third full-size array
    return mean, var, centered, inv_std


def _normalize_backward(dxhat, xhat, inv_std, axes: tuple[int, ...]) -> np.ndarray:
    """dL/dx through x_hat = (x - mean(x)) * inv_std(x), over ``axes``."""
    mean_dxhat = dxhat.mean(axis=axes, keepdims=True)
    mean_dxhat_xhat = np.mean(dxhat * xhat, axis=axes, keepdims=True)
    dx = dxhat - mean_dxhat
    dx -= xhat * mean_dxhat_xhat
    dx *= inv_std
    return dx


def _check_momentum(who: str, momentum) -> None:
    if momentum is not None:
        check_hyper(who, "momentum", momentum, 0.0 <= momentum <= 1.0, "must be in [0, 1] or None")


class _NormBase(Module):
    """Shared state of the per-channel norms (BatchNorm, InstanceNorm): weight/bias of shape (C,)
    and, when tracking, the buffers running_mean, running_var and num_batches_tracked."""

    _ranks: tuple[int, ...] = ()  # accepted input ranks
    _spatial: str = ""  # the accepted spatial dimensions, as written in messages
    _counts_batches = True  # InstanceNorm, as PyTorch's, leaves num_batches_tracked at 0

    def __init__(
        self,
        num_features: int,
        eps: float,
        momentum: float | None,
        affine: bool,
        track_running_stats: bool,
        device,
        dtype,
        bias: bool,
    ):
        super().__init__()
        who = type(self).__name__
        check_device(who, device)
        dtype = resolve_dtype(dtype)
        bias = check_flag(who, "bias", bias)
        check_size(who, "num_features", num_features)
        check_hyper(who, "eps", eps, eps >= 0, "must be >= 0")
        _check_momentum(who, momentum)
        self.num_features = int(num_features)
        self.eps = float(eps)
        self.momentum = None if momentum is None else float(momentum)
        self.affine = bool(affine)
        self.track_running_stats = bool(track_running_stats)
        self._dtype = np.dtype(dtype)
        c = self.num_features
        self.weight = Parameter(np.ones(c, dtype=dtype)) if affine else None
        # bias=False (PyTorch's keyword): a learned scale without a shift
        self.bias = Parameter(np.zeros(c, dtype=dtype)) if affine and bias else None
        if track_running_stats:
            self.register_buffer("running_mean", np.zeros(c, dtype=dtype))
            self.register_buffer("running_var", np.ones(c, dtype=dtype))
            self.register_buffer("num_batches_tracked", np.array(0, dtype=np.int64))
        else:
            self.register_buffer("running_mean", None)
            self.register_buffer("running_var", None)
            self.register_buffer("num_batches_tracked", None)

    def _on_dtype_change(self, dtype: np.dtype) -> None:
        self._dtype = np.dtype(dtype)

    def extra_repr(self) -> str:
        return (
            f"{self.num_features}, eps={self.eps}, momentum={self.momentum}, "
            f"affine={self.affine}, track_running_stats={self.track_running_stats}"
            + (", bias=False" if self.affine and self.bias is None else "")
        )

    def reset_running_stats(self) -> None:
        """Running mean 0, running variance 1, no batches tracked."""
        if self.track_running_stats:
            self.running_mean.fill(0)
            self.running_var.fill(1)
            self.num_batches_tracked[...] = 0

    def _check_input(self, x) -> np.ndarray:
        x = as_float_input(self, x, self._dtype)
        if x.ndim not in self._ranks or x.shape[1] != self.num_features:
            raise ShapeError(
                expected_got(self, f"input of shape {self._layout()}", fmt_shape(x.shape))
            )
        return x

    def _layout(self) -> str:
        return f"(N, {self.num_features}{self._spatial})"

    def _param_shape(self, ndim: int) -> tuple[int, ...]:
        return (1, self.num_features) + (1,) * (ndim - 2)

    def _update_running(self, mean: np.ndarray, var: np.ndarray, count: int) -> None:
        """running = (1 - f) * running + f * batch, with the *unbiased* batch variance and
        f = momentum, or 1 / num_batches_tracked for a cumulative average (momentum=None)."""
        if self.momentum is None:
            self.num_batches_tracked += 1
            f = 1.0 / int(self.num_batches_tracked)
        else:
            if self._counts_batches:
                self.num_batches_tracked += 1
            f = self.momentum
        unbiased = var * (count / (count - 1)) if count > 1 else var
        self.running_mean *= 1 - f
        self.running_mean += f * mean.astype(self.running_mean.dtype, copy=False)
        self.running_var *= 1 - f
        self.running_var += f * unbiased.astype(self.running_var.dtype, copy=False)

    def _affine(self, xhat: np.ndarray) -> np.ndarray:
        if not self.affine:
            return xhat.copy()
        shape = self._param_shape(xhat.ndim)
        y = xhat * self.weight.data.reshape(shape)
        if self.bias is not None:
            y += self.bias.data.reshape(shape)
        return y

    def _affine_backward(self, grad_output: np.ndarray, xhat: np.ndarray, axes) -> np.ndarray:
        """Accumulates dL/dweight and dL/dbias; returns dL/dx_hat = grad_output * weight."""
        if not self.affine:
            return grad_output
        if self.weight.requires_grad:
            self.weight.grad += np.sum(grad_output * xhat, axis=axes)
        if self.bias is not None and self.bias.requires_grad:
            self.bias.grad += grad_output.sum(axis=axes)
        return grad_output * self.weight.data.reshape(self._param_shape(grad_output.ndim))

    def _empty_forward(self, x: np.ndarray) -> np.ndarray:
        """A zero-size input in training mode: there are no statistics to take, the running
        ones stay (PyTorch counts the batch in num_batches_tracked all the same)."""
        if self.training and self.track_running_stats and self._counts_batches:
            self.num_batches_tracked += 1
        inv_std = array_module(x).ones(self._param_shape(x.ndim), dtype=x.dtype)
        self.save_for_backward(True, x, inv_std)
        return self._affine(x)

    def _eval_forward(self, x: np.ndarray) -> np.ndarray:
        """Normalization with the running statistics: a per-element affine map."""
        shape = self._param_shape(x.ndim)
        inv_std = 1.0 / np.sqrt(self.running_var + np.dtype(self._dtype).type(self.eps))
        inv_std = inv_std.reshape(shape)
        xhat = (x - self.running_mean.reshape(shape)) * inv_std
        self.save_for_backward(False, xhat, inv_std)
        return self._affine(xhat)


class _BatchNorm(_NormBase):
    """Batch normalization over the batch and every spatial position, per channel."""

    def __init__(
        self,
        num_features: int,
        eps: float = 1e-5,
        momentum: float | None = 0.1,
        affine: bool = True,
        track_running_stats: bool = True,
        device=None,
        dtype=np.float32,
        *,
        bias: bool = True,
    ):
        super().__init__(
            num_features, eps, momentum, affine, track_running_stats, device, dtype, bias
        )

    def forward(self, x):
        x = self._check_input(x)
        if not self.training and self.track_running_stats:
            return self._eval_forward(x)
        axes = (0, *range(2, x.ndim))  # all but the channel axis
        count = x.size // self.num_features
        if count == 0:  # an empty batch: empty output, running statistics kept (as PyTorch)
            return self._empty_forward(x)
        if count < 2 and self.training:
            hint = (
                "A batch of one row, such as the last one of an epoch: pick a batch_size that "
                "leaves none, or drop_last=True in a DataLoader"
                if x.shape[0] == 1
                else ""
            )
            raise ValueError(
                expected_got(
                    self,
                    "more than 1 value per channel when training",
                    f"input of shape {fmt_shape(x.shape)}",
                    hint,
                )
            )
        mean, var, xhat, inv_std = _normalize(x, axes, self.eps)
        if self.training and self.track_running_stats:
            self._update_running(mean.reshape(-1), var.reshape(-1), count)
        self.save_for_backward(True, xhat, inv_std)
        return self._affine(xhat)

    def backward(self, grad_output):
        batch_stats, xhat, inv_std = self.saved
        axes = (0, *range(2, xhat.ndim))
        shape = self._param_shape(xhat.ndim)
        # the per-channel sums serve both the parameter gradients and the input gradient
        sum_g = grad_output.sum(axis=axes)  # dL/dbias
        sum_g_xhat = np.sum(grad_output * xhat, axis=axes)  # dL/dweight
        scale = inv_std
        if self.affine:
            if self.weight.requires_grad:
                self.weight.grad += sum_g_xhat
            if self.bias is not None and self.bias.requires_grad:
                self.bias.grad += sum_g
            scale = inv_std * self.weight.data.reshape(shape)
        if not batch_stats or xhat.size == 0:
            return grad_output * scale  # running statistics are constants
        # dx = w * inv_std * (g - mean(g) - x_hat * mean(g * x_hat)): the normalization's
        # backward with dx_hat = g * w, where w factors out of the per-channel means
        count = xhat.size // self.num_features
        dx = grad_output - (sum_g / count).reshape(shape)
        dx -= xhat * (sum_g_xhat / count).reshape(shape)
        dx *= scale
        return dx


class BatchNorm1d(_BatchNorm):
    """Batch normalization of (N, C) or (N, C, L) inputs, per channel (PyTorch's BatchNorm1d).

    Training mode normalizes with the statistics of the batch (over N and L) and updates the
    running ones: ``running = (1 - momentum) * running + momentum * batch`` with the unbiased
    batch variance (``momentum=None``: a cumulative average). Evaluation mode normalizes with
    the running statistics; without ``track_running_stats`` it always uses the batch's.

    Args:
        num_features: C.
        eps: added to the variance.
        momentum: weight of the new batch in the running statistics, or None.
        affine: learn ``weight`` (ones) and ``bias`` (zeros) of shape (C,).
        track_running_stats: keep the buffers ``running_mean``, ``running_var`` and
            ``num_batches_tracked`` (saved in the state_dict under PyTorch's names).
        device: None or ``"cpu"`` (nnframe's arrays live in main memory; others are refused).
        dtype: parameter and buffer dtype (None: float32).
        bias: keyword-only, as in PyTorch: with ``affine``, ``bias=False`` learns the scale
            ``weight`` only (no ``bias`` parameter in the state_dict).

    Shape:
        input: (N, C) or (N, C, L).    output: same as input.

    Example:
        >>> import numpy as np, nnframe as nf
        >>> bn = nf.BatchNorm1d(2)
        >>> y = bn(np.array([[1.0, 10.0], [3.0, 30.0]], dtype=np.float32))
        >>> np.round(y, 3)
        array([[-1., -1.],
               [ 1.,  1.]], dtype=float32)
        >>> np.round(bn.running_mean, 3), np.round(bn.running_var, 3)
        (array([0.2, 2. ], dtype=float32), array([ 1.1, 20.9], dtype=float32))
    """

    _ranks = (2, 3)

    def _layout(self) -> str:
        return f"(N, {self.num_features}) or (N, {self.num_features}, L)"


class BatchNorm2d(_BatchNorm):
    """Batch normalization of (N, C, H, W) inputs, per channel (PyTorch's BatchNorm2d).

    Same arguments and semantics as :class:`BatchNorm1d`; statistics are taken over N, H and W.

    Shape:
        input: (N, C, H, W).    output: same as input.
    """

    _ranks = (4,)
    _spatial = ", H, W"


class BatchNorm3d(_BatchNorm):
    """Batch normalization of (N, C, D, H, W) inputs, per channel (PyTorch's BatchNorm3d).

    Same arguments and semantics as :class:`BatchNorm1d`; statistics are taken over N, D, H, W.

    Shape:
        input: (N, C, D, H, W).    output: same as input.
    """

    _ranks = (5,)
    _spatial = ", D, H, W"


class _InstanceNorm(_NormBase):
    """Normalization of each sample's channel over its spatial positions."""

    _counts_batches = False

    def __init__(
        self,
        num_features: int,
        eps: float = 1e-5,
        momentum: float | None = 0.1,
        affine: bool = False,
        track_running_stats: bool = False,
        device=None,
        dtype=np.float32,
        *,
        bias: bool = True,
    ):
        if momentum is None:
            raise ValueError(
                f"{type(self).__name__}: invalid momentum=None (must be in [0, 1]; the "
                "cumulative average of momentum=None is BatchNorm's)"
            )
        super().__init__(
            num_features, eps, momentum, affine, track_running_stats, device, dtype, bias
        )

    def forward(self, x):
        x = as_float_input(self, x, self._dtype)  # (N, C, *spatial): checked by input_spec
        if not self.training and self.track_running_stats:
            return self._eval_forward(x)
        axes = tuple(range(2, x.ndim))
        count = math.prod(x.shape[2:])
        if x.size == 0:  # an empty batch or no positions: empty output (as PyTorch)
            return self._empty_forward(x)
        if count < 2 and self.training:
            raise ValueError(
                expected_got(
                    self,
                    "more than 1 spatial element per channel when training",
                    f"input of shape {fmt_shape(x.shape)}",
                )
            )
        mean, var, xhat, inv_std = _normalize(x, axes, self.eps)
        if self.training and self.track_running_stats:
            # as PyTorch: the batch's contribution is the average of the instances' statistics
            self._update_running(mean.mean(axis=0).reshape(-1), var.mean(axis=0).reshape(-1), count)
        self.save_for_backward(True, xhat, inv_std)
        return self._affine(xhat)

    def backward(self, grad_output):
        instance_stats, xhat, inv_std = self.saved
        dxhat = self._affine_backward(grad_output, xhat, (0, *range(2, xhat.ndim)))
        if not instance_stats or xhat.size == 0:
            return dxhat * inv_std
        return _normalize_backward(dxhat, xhat, inv_std, tuple(range(2, xhat.ndim)))


class InstanceNorm1d(_InstanceNorm):
    """Instance normalization of (N, C, L) inputs: each sample's channel over its L positions.

    PyTorch's defaults: ``affine=False``, ``track_running_stats=False`` (the statistics of the
    sample itself are used in training and evaluation alike). With ``track_running_stats`` the
    running statistics average the instances' ones and evaluation uses them; as in PyTorch,
    ``num_batches_tracked`` stays 0. ``momentum`` must be a number: PyTorch silently freezes the
    running statistics for ``momentum=None``, nnframe refuses it.

    Args:
        num_features: C.
        eps, momentum, affine, track_running_stats, device, dtype, bias: as in
            :class:`BatchNorm1d`.

    Shape:
        input: (N, C, L), or unbatched (C, L).    output: same as input.
    """

    _ranks = (3,)
    _spatial = ", L"
    input_spec = InputSpec(("N", "C", "L"), size="num_features")  # and unbatched (C, L)


class InstanceNorm2d(_InstanceNorm):
    """Instance normalization of (N, C, H, W) inputs: each sample's channel over H and W.

    Same arguments and semantics as :class:`InstanceNorm1d`.

    Shape:
        input: (N, C, H, W), or unbatched (C, H, W).    output: same as input.
    """

    _ranks = (4,)
    _spatial = ", H, W"
    input_spec = InputSpec(("N", "C", "H", "W"), size="num_features")


def _as_shape(who: str, normalized_shape) -> tuple[int, ...]:
    if isinstance(normalized_shape, (int, np.integer)):
        normalized_shape = (int(normalized_shape),)
    shape = tuple(int(s) for s in normalized_shape)
    check_hyper(
        who,
        "normalized_shape",
        normalized_shape,
        len(shape) > 0 and all(s > 0 for s in shape),
        "must be a positive int or a non-empty tuple of them",
    )
    return shape


class _LastAxesNorm(Module):
    """Shared input checks of the norms over the trailing ``normalized_shape`` dimensions."""

    def _check_input(self, x) -> np.ndarray:
        x = as_float_input(self, x, self._dtype)
        k = len(self.normalized_shape)
        if x.ndim < k or x.shape[x.ndim - k :] != self.normalized_shape:
            raise ShapeError(
                expected_got(
                    self,
                    f"input of shape (*, {', '.join(map(str, self.normalized_shape))})",
                    fmt_shape(x.shape),
                )
            )
        return x

    def _on_dtype_change(self, dtype: np.dtype) -> None:
        self._dtype = np.dtype(dtype)

    def _axes(self, ndim: int) -> tuple[int, ...]:
        return tuple(range(ndim - len(self.normalized_shape), ndim))


class LayerNorm(_LastAxesNorm):
    """Layer normalization over the trailing ``normalized_shape`` dimensions of each sample.

    The same in training and evaluation: each sample uses its own statistics.

    Args:
        normalized_shape: an int D or a tuple: the trailing dimensions normalized together.
        eps: added to the variance.
        elementwise_affine: learn ``weight`` (ones) of shape ``normalized_shape``.
        bias: with ``elementwise_affine``, also learn ``bias`` (zeros).
        device: None or ``"cpu"`` (as in :class:`BatchNorm1d`).
        dtype: parameter dtype (None: float32).

    Shape:
        input: (*, *normalized_shape).    output: same as input.

    Example:
        >>> import numpy as np, nnframe as nf
        >>> y = nf.LayerNorm(3)(np.array([[1.0, 2.0, 3.0]], dtype=np.float32))
        >>> np.round(y, 4)
        array([[-1.2247,  0.    ,  1.2247]], dtype=float32)
    """

    def __init__(
        self,
        normalized_shape: int | Sequence[int],
        eps: float = 1e-5,
        elementwise_affine: bool = True,
        bias: bool = True,
        device=None,
        dtype=np.float32,
    ):
        super().__init__()
        check_device("LayerNorm", device)
        dtype = resolve_dtype(dtype)
        self.normalized_shape = _as_shape("LayerNorm", normalized_shape)
        check_hyper("LayerNorm", "eps", eps, eps >= 0, "must be >= 0")
        self.eps = float(eps)
        self.elementwise_affine = bool(elementwise_affine)
        self._dtype = np.dtype(dtype)
        shape = self.normalized_shape
        self.weight = Parameter(np.ones(shape, dtype=dtype)) if elementwise_affine else None
        self.bias = Parameter(np.zeros(shape, dtype=dtype)) if elementwise_affine and bias else None

    def extra_repr(self) -> str:
        return (
            f"{self.normalized_shape}, eps={self.eps}, "
            f"elementwise_affine={self.elementwise_affine}, bias={self.bias is not None}"
        )

    def forward(self, x):
        x = self._check_input(x)
        _, _, xhat, inv_std = _normalize(x, self._axes(x.ndim), self.eps)
        self.save_for_backward(xhat, inv_std)
        if self.weight is None:
            return xhat.copy()
        y = xhat * self.weight.data
        if self.bias is not None:
            y += self.bias.data
        return y

    def backward(self, grad_output):
        xhat, inv_std = self.saved
        lead = tuple(range(xhat.ndim - len(self.normalized_shape)))  # batch-like axes
        dxhat = grad_output
        if self.weight is not None:
            if self.weight.requires_grad:
                self.weight.grad += np.sum(grad_output * xhat, axis=lead)
            if self.bias is not None and self.bias.requires_grad:
                self.bias.grad += grad_output.sum(axis=lead)
            dxhat = grad_output * self.weight.data
        return _normalize_backward(dxhat, xhat, inv_std, self._axes(xhat.ndim))


class RMSNorm(_LastAxesNorm):
    """Root-mean-square normalization: ``y = x / sqrt(mean(x^2) + eps) * weight`` over the
    trailing ``normalized_shape`` dimensions (no centering, no bias), as PyTorch's RMSNorm.

    Args:
        normalized_shape: an int D or a tuple of trailing dimensions.
        eps: added to the mean square; None means the machine epsilon of the input's dtype.
        elementwise_affine: learn ``weight`` (ones) of shape ``normalized_shape``.
        device: None or ``"cpu"`` (as in :class:`BatchNorm1d`).
        dtype: parameter dtype (None: float32).

    Shape:
        input: (*, *normalized_shape).    output: same as input.

    Example:
        >>> import numpy as np, nnframe as nf
        >>> y = nf.RMSNorm(2, eps=0.0)(np.array([[3.0, 4.0]], dtype=np.float32))
        >>> np.round(y, 4)  # rms = sqrt((9 + 16) / 2)
        array([[0.8485, 1.1314]], dtype=float32)
    """

    def __init__(
        self,
        normalized_shape: int | Sequence[int],
        eps: float | None = None,
        elementwise_affine: bool = True,
        device=None,
        dtype=np.float32,
    ):
        super().__init__()
        check_device("RMSNorm", device)
        dtype = resolve_dtype(dtype)
        self.normalized_shape = _as_shape("RMSNorm", normalized_shape)
        if eps is not None:
            check_hyper("RMSNorm", "eps", eps, eps >= 0, "must be >= 0 or None")
        self.eps = None if eps is None else float(eps)
        self.elementwise_affine = bool(elementwise_affine)
        self._dtype = np.dtype(dtype)
        shape = self.normalized_shape
        self.weight = Parameter(np.ones(shape, dtype=dtype)) if elementwise_affine else None

    def extra_repr(self) -> str:
        return (
            f"{self.normalized_shape}, eps={self.eps}, elementwise_affine={self.elementwise_affine}"
        )

    def forward(self, x):
        x = self._check_input(x)
        eps = np.finfo(x.dtype).eps if self.eps is None else self.eps
        axes = self._axes(x.ndim)
        inv_rms = 1.0 / np.sqrt(np.mean(x * x, axis=axes, keepdims=True) + x.dtype.type(eps))
        xhat = x * inv_rms
        self.save_for_backward(xhat, inv_rms)
        return xhat * self.weight.data if self.weight is not None else xhat

    def backward(self, grad_output):
        xhat, inv_rms = self.saved
        dxhat = grad_output
        if self.weight is not None:
            if self.weight.requires_grad:
                lead = tuple(range(xhat.ndim - len(self.normalized_shape)))
                self.weight.grad += np.sum(grad_output * xhat, axis=lead)
            dxhat = grad_output * self.weight.data
        # d(x * r)/dx with r = (mean(x^2) + eps)^-1/2: r * (dxhat - xhat * mean(dxhat * xhat))
        axes = self._axes(xhat.ndim)
        dx = dxhat - xhat * np.mean(dxhat * xhat, axis=axes, keepdims=True)
        dx *= inv_rms
        return dx


class GroupNorm(Module):
    """Group normalization: the C channels of each sample are split into ``num_groups`` groups,
    each normalized over its channels and spatial positions; then a per-channel affine map.

    The same in training and evaluation (each sample uses its own statistics).

    Args:
        num_groups: number of groups; must divide ``num_channels``.
        num_channels: C.
        eps: added to the variance.
        affine: learn per-channel ``weight`` (ones) and ``bias`` (zeros).
        device: None or ``"cpu"`` (as in :class:`BatchNorm1d`).
        dtype: parameter dtype (None: float32).
        bias: keyword-only, as in PyTorch: with ``affine``, ``bias=False`` learns ``weight`` only.

    Shape:
        input: (N, C, *).    output: same as input.
    """

    def __init__(
        self,
        num_groups: int,
        num_channels: int,
        eps: float = 1e-5,
        affine: bool = True,
        device=None,
        dtype=np.float32,
        *,
        bias: bool = True,
    ):
        super().__init__()
        who = "GroupNorm"
        check_device(who, device)
        dtype = resolve_dtype(dtype)
        bias = check_flag(who, "bias", bias)
        check_size(who, "num_groups", num_groups)
        check_size(who, "num_channels", num_channels)
        check_hyper(
            who,
            "num_groups",
            num_groups,
            num_channels % num_groups == 0,
            f"must divide num_channels={num_channels}",
        )
        check_hyper(who, "eps", eps, eps >= 0, "must be >= 0")
        self.num_groups = int(num_groups)
        self.num_channels = int(num_channels)
        self.eps = float(eps)
        self.affine = bool(affine)
        self._dtype = np.dtype(dtype)
        self.weight = Parameter(np.ones(num_channels, dtype=dtype)) if affine else None
        self.bias = Parameter(np.zeros(num_channels, dtype=dtype)) if affine and bias else None

    def _on_dtype_change(self, dtype: np.dtype) -> None:
        self._dtype = np.dtype(dtype)

    def extra_repr(self) -> str:
        text = f"{self.num_groups}, {self.num_channels}, eps={self.eps}, affine={self.affine}"
        return text + (", bias=False" if self.affine and self.bias is None else "")

    def forward(self, x):
        x = as_float_input(self, x, self._dtype)
        if x.ndim < 2 or x.shape[1] != self.num_channels:
            raise ShapeError(
                expected_got(
                    self, f"input of shape (N, {self.num_channels}, *)", fmt_shape(x.shape)
                )
            )
        if x.size == 0:  # an empty batch or no positions: an empty output (as PyTorch)
            self.save_for_backward(x, None)
            return x.copy()
        n = x.shape[0]
        grouped = x.reshape(n, self.num_groups, -1)  # (N, G, C/G * spatial)
        _, _, xhat, inv_std = _normalize(grouped, (2,), self.eps)
        xhat = xhat.reshape(x.shape)
        self.save_for_backward(xhat, inv_std)
        if not self.affine:
            return xhat.copy()
        shape = (1, self.num_channels) + (1,) * (x.ndim - 2)
        y = xhat * self.weight.data.reshape(shape)
        if self.bias is not None:
            y += self.bias.data.reshape(shape)
        return y

    def backward(self, grad_output):
        xhat, inv_std = self.saved
        if inv_std is None:  # an empty batch: nothing reaches the parameters
            return np.zeros_like(xhat)
        dxhat = grad_output
        if self.affine:
            axes = (0, *range(2, xhat.ndim))
            if self.weight.requires_grad:
                self.weight.grad += np.sum(grad_output * xhat, axis=axes)
            if self.bias is not None and self.bias.requires_grad:
                self.bias.grad += grad_output.sum(axis=axes)
            shape = (1, self.num_channels) + (1,) * (xhat.ndim - 2)
            dxhat = grad_output * self.weight.data.reshape(shape)
        n = xhat.shape[0]
        dx = _normalize_backward(
            dxhat.reshape(n, self.num_groups, -1),
            xhat.reshape(n, self.num_groups, -1),
            inv_std,
            (2,),
        )
        return dx.reshape(xhat.shape)
