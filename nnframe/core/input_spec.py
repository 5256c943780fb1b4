"""Input specs: what a layer's input looks like, declared once on the class and checked by the
call path (``Module.__call__``) before ``forward`` runs.

A spec states the ranks a batched input may have, the feature (channel) axis and the attribute
that holds its size, and whether PyTorch accepts the input without its batch axis. The call
path then does two things that no layer writes again:

- **the check**, with the one message form: ``Conv2d(...): expected input of shape
  (N, 3, H, W), got (2, 3)``;
- **unbatched inputs** (PyTorch's rule): an input one rank short is given a batch axis of size
  1 on the way in; the output, and in backward the input gradient, lose it again (the output
  gradient gains it). The batch axes of every input and output come from
  :meth:`InputSpec.batch_axes`, so layers whose batch axis moves (recurrent layers with
  ``batch_first=False``) or whose outputs put it elsewhere (a recurrent state) override one
  method.

Example:
    >>> import numpy as np, nnframe as nf
    >>> conv = nf.Conv2d(3, 4, 3, padding=1, rng=0)
    >>> conv(np.ones((3, 5, 5), dtype=np.float32)).shape  # (C, H, W): no batch axis
    (4, 5, 5)
    >>> conv(np.ones((2, 5), dtype=np.float32))
    Traceback (most recent call last):
    ...
    nnframe.core.errors.ShapeError: Conv2d(3, 4, kernel_size=(3, 3), stride=(1, 1), padding=(1, 1)): expected input of shape (N, 3, H, W), got (2, 5)
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from nnframe.core.backend import array_module
from nnframe.core.device import DeviceError, device_of
from nnframe.core.errors import ShapeError, expected_got, fmt_shape

__all__ = ["InputSpec", "Unbatched"]


class InputSpec:
    """The input a layer takes: declared as a class attribute ``input_spec``.

    Args:
        names: the axes of a batched input, for messages (``("N", "C", "H", "W")``). Their
            number is the batched rank; several tuples allow several ranks (BatchNorm1d takes
            ``(N, C)`` and ``(N, C, L)``). None: any rank of at least 2, written ``(N, *, D)``.
        axis: the feature axis checked against ``size`` (1 for channels, -1 for features).
        size: the name of the layer attribute holding the size of ``axis`` (``"in_features"``),
            or None to leave the axis unchecked.
        unbatched: whether an input one rank short (no batch axis) is accepted.
    """

    __slots__ = ("ranks", "batched_ranks", "names", "axis", "size", "unbatched")

    def __init__(
        self,
        names: Sequence[str] | Sequence[Sequence[str]] | None,
        *,
        axis: int = 1,
        size: str | None = None,
        unbatched: bool = True,
    ):
        self.names: tuple[tuple[str, ...], ...] | None = None
        if names is not None:
            nested = names if names and not isinstance(names[0], str) else (names,)
            self.names = tuple(tuple(n) for n in nested)  # type: ignore[arg-type]
        self.ranks = None if self.names is None else frozenset(len(n) for n in self.names)
        # the ranks of a batched input (numpy allows 64 axes)
        self.batched_ranks = frozenset(range(2, 65)) if self.ranks is None else self.ranks
        self.axis, self.size, self.unbatched = axis, size, unbatched

    # ------------------------------------------------------------------ the check
    def fits(self, module, x) -> bool:
        """The common case, answered fast: ``x`` is a batched ndarray of the right size (else
        ``admit`` checks it, converts it or adds its batch axis)."""
        if type(x) is not np.ndarray or x.ndim not in self.batched_ranks or module._device:
            return False
        return self.size is None or x.shape[self.axis] == getattr(module, self.size)

    def admit(self, module, args: tuple) -> tuple[tuple, Unbatched | None]:
        """Checks the first argument; returns the arguments (with a batch axis added when the
        input came without one) and, for an unbatched call, how to undo it."""
        x = args[0]
        ndim = getattr(x, "ndim", None)
        if ndim is None:  # a list or a scalar: what the layer's own conversion would make of it
            x = np.asarray(x)
            ndim = x.ndim
            args = (x, *args[1:])
        if module._device is not None or type(x) is not np.ndarray:
            _check_device(module, x)
        batched = ndim >= 2 if self.ranks is None else ndim in self.ranks
        if batched:
            self._check_size(module, x.shape, x.shape)
            return args, None
        unbatched_rank = ndim == 1 if self.ranks is None else ndim + 1 in self.ranks
        if not (self.unbatched and unbatched_rank):
            raise self._error(module, x.shape)
        self._check_size(module, (1, *x.shape), x.shape)
        undo = Unbatched(*self.batch_axes(module))
        return undo.add_to_inputs(args), undo

    #: Keyword arguments that are inputs too, by name -> position in ``batch_axes``' input axes
    #: (a recurrent layer's ``hx``): an unbatched call expands them like positional ones.
    keyword_inputs: dict[str, int] = {}

    def _check_size(self, module, shape: tuple, got: tuple) -> None:
        if self.size is not None and shape[self.axis] != getattr(module, self.size):
            raise self._error(module, got)

    def _error(self, module, got: tuple) -> ShapeError:
        size = "C" if self.size is None else getattr(module, self.size)
        layout: list
        names = self.layouts(module)
        if names is None:  # (N, D) or (N, *, D): as many axes as the input had, >= 2
            layout = ["N"] + ["*"] * (max(len(got), 2) - 1)
        else:
            distance = {abs(len(n) - len(got)): n for n in reversed(names)}
            layout = list(distance[min(distance)])  # the declared rank nearest the input's
        layout[self.axis] = size
        return ShapeError(
            expected_got(module._who(), f"input of shape {fmt_shape(layout)}", fmt_shape(got))
        )

    def layouts(self, module) -> tuple[tuple[str, ...], ...] | None:
        """The batched layouts that messages name; override where they depend on the module
        (``(T, N, F)`` for a recurrent layer with ``batch_first=False``)."""
        return self.names

    # ------------------------------------------------------------------ where the batch axis is
    def batch_axes(self, module) -> tuple:
        """(input axes, output axes): the batch axis of each positional input and of each
        output (nested like the output: ``(0, (1, 1))`` for ``(out, (h, c))``). Axis 0 for one
        input and one output; override for other layouts."""
        return (0,), 0


def _check_device(module, x) -> None:
    """The input lives where the module's parameters do (a numpy input into a model moved to a
    GPU, or the reverse, is named with the fix instead of failing inside the layer)."""
    p = next(iter(module.parameters()), None)
    if p is None or not hasattr(x, "dtype"):
        return
    if array_module(x) is array_module(p.data) and module._device is None:
        return
    here, there = device_of(p.data), device_of(x)
    if here == there:  # (on a GPU: the same one, cuda:0 is not cuda:1)
        return
    raise DeviceError(
        expected_got(
            module._who(),
            f"an input on {here} (where its parameters are)",
            f"an array on {there}",
            f"move it: nf.to_device(x, {str(here)!r}), or the model: model.to({str(there)!r})",
        )
    )


class Unbatched:
    """How one unbatched call is undone: the batch axes of its inputs and outputs. Kept with
    the call's saved state, so its backward adds and removes the same axes."""

    __slots__ = ("in_axes", "out_axes", "entry")

    def __init__(self, in_axes: tuple, out_axes):
        self.in_axes, self.out_axes = in_axes, out_axes
        self.entry = None  # the call's saved state, once forward has run

    def add_to_inputs(self, args: tuple) -> tuple:
        return tuple(
            _map(_expand, a, self.in_axes[i]) if i < len(self.in_axes) else a
            for i, a in enumerate(args)
        )

    def add_to_keywords(self, kwargs: dict, positions: dict[str, int]) -> dict:
        return {
            k: _map(_expand, v, self.in_axes[positions[k]])
            if k in positions and positions[k] < len(self.in_axes)
            else v
            for k, v in kwargs.items()
        }

    def remove_from_output(self, out):
        return _map(_squeeze, out, self.out_axes)

    def add_to_grad_output(self, grad_output):
        """The output gradient(s) with their batch axes back (a bare array for a module with
        several outputs is the first output's gradient)."""
        axes = self.out_axes
        if isinstance(axes, tuple) and not isinstance(grad_output, (tuple, list)):
            axes = axes[0]
        return _map(_expand, grad_output, axes)

    def remove_from_grad_input(self, grad_input):
        if isinstance(grad_input, tuple):
            return tuple(_map(_squeeze, g, a) for g, a in zip(grad_input, self.in_axes))
        return _map(_squeeze, grad_input, self.in_axes[0])


def _map(fn, value, axes):
    """``fn(array, axis)`` over a value nested like ``axes`` (tuples); None stays None."""
    if value is None:
        return None
    if isinstance(value, (tuple, list)):
        if isinstance(axes, tuple):
            return tuple(_map(fn, v, a) for v, a in zip(value, axes))
        return tuple(_map(fn, v, axes) for v in value)
    return fn(value, axes)


def _expand(a, axis: int):
    return np.expand_dims(array_module(a).asarray(a), axis) if axis is not None else a


def _squeeze(a, axis: int):
    return np.squeeze(a, axis) if axis is not None and hasattr(a, "ndim") else a
