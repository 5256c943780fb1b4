"""Containers: modules that chain or combine other modules."""

from __future__ import annotations

from collections.abc import Iterator

from nnframe.errors import ShapeError, fmt_shape
from nnframe.module import Module


def snapshot_saved(module: Module) -> list[tuple[Module, tuple | None]]:
    """What ``module`` and its descendants saved for backward. A container that calls the same
    module twice keeps one snapshot per call and restores it before that call's backward, so a
    shared module backpropagates through both uses and accumulates both gradients."""
    return [(m, m._saved) for m in module.modules()]


def restore_saved(snapshot: list[tuple[Module, tuple | None]]) -> None:
    for m, saved in snapshot:
        m._saved = saved


def reraise_with_prefix(error: Exception, prefix: str) -> None:
    """Re-raises ``error`` as the same type with ``prefix`` before its message, so a failure
    deep inside a model says where it happened (``Sequential[2] Dense(...): ...``).
    Falls back to the original error when its type cannot be rebuilt from one message."""
    try:
        new = type(error)(f"{prefix}{error}")
    except Exception:  # an exception type with a different constructor: keep it as it is
        raise error from None
    raise new.with_traceback(error.__traceback__) from error


class Sequential(Module):
    """Chains modules: ``forward`` runs them in order, ``backward`` in reverse.

    Children are named by position (``"0.weight"``), as in PyTorch. An error raised by a child
    is re-raised with its position; a child whose backward returns a gradient of the wrong shape
    is caught at once.

    Args:
        *layers: the modules, in order.

    Shape:
        input: whatever the first layer takes.    output: whatever the last layer returns.

    Example:
        >>> import numpy as np, nnframe as nf
        >>> model = nf.Sequential(nf.Dense(4, 8, rng=0), nf.ReLU(), nf.Dense(8, 2, rng=1))
        >>> model(np.ones((3, 4), dtype=np.float32)).shape
        (3, 2)
    """

    def __init__(self, *layers: Module):
        super().__init__()
        for i, layer in enumerate(layers):
            _check_module(layer, i)
        self._layers: list[Module] = list(layers)

    def named_children(self) -> Iterator[tuple[str, Module]]:
        for i, layer in enumerate(self._layers):
            yield str(i), layer

    def __len__(self) -> int:
        return len(self._layers)

    def __iter__(self) -> Iterator[Module]:
        return iter(self._layers)

    def __getitem__(self, index):
        if isinstance(index, slice):
            return Sequential(*self._layers[index])
        return self._layers[index]

    def append(self, layer: Module) -> Sequential:
        """Adds a layer at the end; returns self."""
        _check_module(layer, len(self._layers))
        self._layers.append(layer)
        return self

    def _shared_positions(self) -> set[int]:
        """Positions of layers that appear more than once (their saves need snapshots)."""
        counts: dict[int, int] = {}
        for layer in self._layers:
            counts[id(layer)] = counts.get(id(layer), 0) + 1
        return {i for i, layer in enumerate(self._layers) if counts[id(layer)] > 1}

    def forward(self, x):
        shapes = []
        snapshots = {}
        shared = self._shared_positions() if len(self._layers) > 1 else ()
        for i, layer in enumerate(self._layers):
            shapes.append(getattr(x, "shape", None))
            try:
                x = layer(x)
            except Exception as error:
                reraise_with_prefix(error, f"Sequential[{i}] ")
            if i in shared:
                snapshots[i] = snapshot_saved(layer)
        self.save_for_backward(shapes, snapshots)
        return x

    def backward(self, grad_output):
        shapes, snapshots = self.saved
        if self._layers and 0 not in snapshots:  # (a shared first layer keeps its own flag)
            self._layers[0].needs_input_grad = self.needs_input_grad
        grad = grad_output
        for i in range(len(self._layers) - 1, -1, -1):
            layer = self._layers[i]
            if i in snapshots:
                restore_saved(snapshots[i])
            try:
                grad = layer.backward(grad)
            except Exception as error:
                reraise_with_prefix(error, f"Sequential[{i}] ")
            if grad is None and i == 0:
                return None  # the input is data (sparse, or needs_input_grad is False)
            if getattr(grad, "shape", None) != shapes[i]:
                got = fmt_shape(grad.shape) if hasattr(grad, "shape") else type(grad).__name__
                raise ShapeError(
                    f"Sequential[{i}] {layer!r}: expected backward to return a gradient of the "
                    f"input's shape {fmt_shape(shapes[i])}, got {got}"
                )
        return grad


def _check_module(layer, index: int) -> None:
    if not isinstance(layer, Module):
        raise TypeError(f"Sequential[{index}]: expected a Module, got {type(layer).__name__}")
