"""Merge and selection layers: combine several arrays into one, or pick a part of an output.

Merges take their inputs as separate arguments (``nf.Multiply()(a, b)``) or as one list
(``nf.Multiply()([a, b])``), in graph models and in hand-written forwards alike; ``backward``
returns one gradient per input, as a tuple. Element-wise merges broadcast (numpy's rules) and
sum the gradient over the broadcast axes. ``nf.Add()`` without branches is the sum merge
(see :class:`nnframe.Add`).

Selections make tuple outputs and sequences usable in ``Sequential``: :class:`GetItem` takes one
element of a tuple output (the final state of an LSTM), :class:`TimeStep` one time step of a
sequence (the last valid step of each padded sequence, given its length).

Example:
    >>> import numpy as np, nnframe as nf
    >>> model = nf.Sequential(
    ...     nf.Embedding(50, 8, rng=0), nf.GRU(8, 16, rng=1), nf.GetItem(0), nf.TimeStep(-1),
    ...     nf.Dense(16, 2, rng=2),
    ... )
    >>> model(np.zeros((4, 7), dtype=np.int64)).shape
    (4, 2)
"""

from __future__ import annotations

import numpy as np

from nnframe.core.backend import array_module, to_numpy
from nnframe.core.errors import ShapeError, check_hyper, expected_got, fmt_shape
from nnframe.core.module import Module

__all__ = [
    "Average",
    "Concatenate",
    "Dot",
    "GetItem",
    "Maximum",
    "Multiply",
    "Subtract",
    "TimeStep",
]


def merge_inputs(who: str, inputs: tuple, count: int | None = None) -> tuple:
    """The arrays to merge: ``(a, b, ...)`` or one list/tuple of them; at least two (or exactly
    ``count``)."""
    if len(inputs) == 1 and isinstance(inputs[0], (list, tuple)):
        inputs = tuple(inputs[0])
    n = len(inputs)
    if (count is not None and n != count) or n < 2:
        want = f"{count} inputs" if count is not None else "at least 2 inputs"
        raise TypeError(expected_got(who, want, f"{n}"))
    for i, x in enumerate(inputs):
        if not hasattr(x, "shape"):
            raise TypeError(expected_got(who, f"input {i} as an array", type(x).__name__))
    return inputs


def broadcast_shape(who: str, arrays) -> tuple:
    """The common shape of element-wise inputs; a ShapeError listing every shape if none."""
    try:
        return np.broadcast_shapes(*(a.shape for a in arrays))
    except ValueError:
        shapes = ", ".join(fmt_shape(a.shape) for a in arrays)
        raise ShapeError(
            expected_got(who, "inputs of one (or broadcastable) shape", shapes)
        ) from None


def unbroadcast(grad, shape: tuple):
    """Sums ``grad`` over the axes that broadcasting added or stretched, to ``shape``."""
    if grad.shape == shape:
        return grad
    extra = grad.ndim - len(shape)
    axes = tuple(range(extra)) + tuple(
        extra + i for i, n in enumerate(shape) if n == 1 and grad.shape[extra + i] != 1
    )
    return grad.sum(axis=axes, keepdims=True).reshape(shape)


class _Merge(Module):
    """Shared repr for merges without arguments."""

    def extra_repr(self) -> str:
        return ""


class Subtract(_Merge):
    """``a - b`` (element-wise, broadcasting).

    Shape:
        inputs: two arrays of one (broadcastable) shape.    output: their common shape.
    """

    def forward(self, *inputs):
        a, b = merge_inputs("Subtract", inputs, 2)
        broadcast_shape("Subtract", (a, b))
        self.save_for_backward(a.shape, b.shape)
        return a - b

    def backward(self, grad_output):
        sa, sb = self.saved
        return unbroadcast(grad_output, sa), unbroadcast(-grad_output, sb)


class Multiply(_Merge):
    """The element-wise product of its inputs (broadcasting): a gate, an interaction term.

    Shape:
        inputs: two or more arrays of one (broadcastable) shape.    output: their common shape.
    """

    def forward(self, *inputs):
        xs = merge_inputs("Multiply", inputs)
        broadcast_shape("Multiply", xs)
        y = xs[0] * xs[1]
        for x in xs[2:]:
            y = y * x
        self.save_for_backward(xs)
        return y

    def backward(self, grad_output):
        (xs,) = self.saved
        grads = []
        for i, x in enumerate(xs):
            g = grad_output  # dL/dx_i = g * prod of the other inputs
            for j, other in enumerate(xs):
                if j != i:
                    g = g * other
            grads.append(unbroadcast(g, x.shape))
        return tuple(grads)


class Average(_Merge):
    """The element-wise mean of its inputs (broadcasting).

    Shape:
        inputs: two or more arrays of one (broadcastable) shape.    output: their common shape.
    """

    def forward(self, *inputs):
        xs = merge_inputs("Average", inputs)
        broadcast_shape("Average", xs)
        y = xs[0] + xs[1]
        for x in xs[2:]:
            y = y + x
        y *= y.dtype.type(1.0 / len(xs))
        self.save_for_backward([x.shape for x in xs])
        return y

    def backward(self, grad_output):
        (shapes,) = self.saved
        g = grad_output * grad_output.dtype.type(1.0 / len(shapes))
        return tuple(unbroadcast(g, s) for s in shapes)


class Maximum(_Merge):
    """The element-wise maximum of its inputs (broadcasting). The gradient goes to the input
    that holds the maximum (the first one on ties).

    Shape:
        inputs: two or more arrays of one (broadcastable) shape.    output: their common shape.
    """

    def forward(self, *inputs):
        xs = merge_inputs("Maximum", inputs)
        shape = broadcast_shape("Maximum", xs)
        stacked = np.stack([np.broadcast_to(x, shape) for x in xs])
        which = stacked.argmax(axis=0)  # the first maximum on ties
        self.save_for_backward([x.shape for x in xs], which)
        return np.take_along_axis(stacked, which[None], axis=0)[0]

    def backward(self, grad_output):
        shapes, which = self.saved
        zero = grad_output.dtype.type(0)
        return tuple(
            unbroadcast(np.where(which == i, grad_output, zero), s) for i, s in enumerate(shapes)
        )


class Concatenate(_Merge):
    """Joins its inputs along ``axis`` (Keras's Concatenate; for parallel branches on one input
    see :class:`nnframe.Concat`).

    Args:
        axis: the axis to join along (default -1: the features).

    Shape:
        inputs: arrays equal on every axis but ``axis``.    output: joined along ``axis``.
    """

    def __init__(self, axis: int = -1):
        super().__init__()
        check_hyper("Concatenate", "axis", axis, isinstance(axis, (int, np.integer)), "an int")
        self.axis = int(axis)

    def extra_repr(self) -> str:
        return f"axis={self.axis}"

    def forward(self, *inputs):
        xs = merge_inputs(repr(self), inputs)
        try:
            y = np.concatenate(xs, axis=self.axis)
        except ValueError:
            shapes = ", ".join(fmt_shape(x.shape) for x in xs)
            raise ShapeError(
                expected_got(self, f"inputs that agree on every axis but {self.axis}", shapes)
            ) from None
        self.save_for_backward([x.shape[self.axis] for x in xs])
        return y

    def backward(self, grad_output):
        (sizes,) = self.saved
        return tuple(np.split(grad_output, np.cumsum(sizes)[:-1].tolist(), axis=self.axis))


class Dot(_Merge):
    """Per-sample dot products of two inputs along ``axes`` (Keras's Dot): ``(N, D), (N, D)``
    give ``(N, 1)``; ``(N, T, D), (N, S, D)`` with ``axes=2`` give ``(N, T, S)``.

    Args:
        axes: the axis of each input to contract (an int for both, or a pair); axis 0 is the
            batch and cannot be contracted.
        normalize: L2-normalize both inputs along ``axes`` first, so the result is the cosine
            similarity.
        eps: the smallest norm divided by when normalizing.

    Shape:
        inputs: ``(N, *a)`` and ``(N, *b)`` with ``a[axes[0]-1] == b[axes[1]-1]``.
        output: ``(N, *a without that axis, *b without that axis)``, or ``(N, 1)`` when that is
        ``(N,)``.
    """

    def __init__(self, axes=-1, normalize: bool = False, eps: float = 1e-12):
        super().__init__()
        pair = tuple(axes) if isinstance(axes, (tuple, list)) else (axes, axes)
        ok = len(pair) == 2 and all(isinstance(a, (int, np.integer)) for a in pair)
        check_hyper("Dot", "axes", axes, ok, "an int or a pair of ints")
        self.axes = tuple(int(a) for a in pair)
        self.normalize = bool(normalize)
        self.eps = float(eps)

    def extra_repr(self) -> str:
        axes = self.axes[0] if self.axes[0] == self.axes[1] else self.axes
        return f"axes={axes}" + (", normalize=True" if self.normalize else "")

    def _axis(self, x, k: int) -> int:
        a = self.axes[k]
        a = a + x.ndim if a < 0 else a
        if not 1 <= a < x.ndim:
            raise ShapeError(
                expected_got(
                    self, f"input {k} with a non-batch axis {self.axes[k]}", fmt_shape(x.shape)
                )
            )
        return a

    def forward(self, *inputs):
        x, y = merge_inputs(repr(self), inputs, 2)
        ax, ay = self._axis(x, 0), self._axis(y, 1)
        if x.shape[0] != y.shape[0] or x.shape[ax] != y.shape[ay]:
            raise ShapeError(
                expected_got(
                    self,
                    f"inputs with one batch size and equal sizes on axes {ax} and {ay}",
                    f"{fmt_shape(x.shape)} and {fmt_shape(y.shape)}",
                )
            )
        nx = ny = None
        if self.normalize:  # x / ||x|| along the contracted axis
            nx = np.maximum(np.sqrt((x * x).sum(axis=ax, keepdims=True)), self.eps)
            ny = np.maximum(np.sqrt((y * y).sum(axis=ay, keepdims=True)), self.eps)
            x, y = x / nx, y / ny
        xa = np.moveaxis(x, ax, -1)  # (N, *p, D)
        yb = np.moveaxis(y, ay, 1)  # (N, D, *q)
        n, d = x.shape[0], x.shape[ax]
        p, q = xa.shape[1:-1], yb.shape[2:]
        out = xa.reshape(n, -1, d) @ yb.reshape(n, d, -1)  # (N, P, Q)
        out = out.reshape(n, *p, *q) if p or q else out.reshape(n, 1)
        self.save_for_backward(x, y, nx, ny, ax, ay)
        return out

    def backward(self, grad_output):
        x, y, nx, ny, ax, ay = self.saved
        xa, yb = np.moveaxis(x, ax, -1), np.moveaxis(y, ay, 1)
        n, d = x.shape[0], x.shape[ax]
        g = grad_output.reshape(n, xa.reshape(n, -1, d).shape[1], -1)  # (N, P, Q)
        # out = xa @ yb: dL/dxa = g @ yb^T, dL/dyb = xa^T @ g
        gxa = (g @ yb.reshape(n, d, -1).transpose(0, 2, 1)).reshape(xa.shape)
        gyb = (xa.reshape(n, -1, d).transpose(0, 2, 1) @ g).reshape(yb.shape)
        gx, gy = np.moveaxis(gxa, -1, ax), np.moveaxis(gyb, 1, ay)
        if self.normalize:  # through u = x / ||x||: dL/dx = (dL/du - u (u . dL/du)) / ||x||
            gx = (gx - x * (gx * x).sum(axis=ax, keepdims=True)) / nx
            gy = (gy - y * (gy * y).sum(axis=ay, keepdims=True)) / ny
        return gx, gy


class GetItem(Module):
    """Takes one element of a tuple output, then indexes along the first axis of an array:
    ``GetItem(0)`` is an RNN's output sequence, ``GetItem(1)`` its final state,
    ``GetItem(1, 0, -1)`` the LSTM's final hidden state of the last layer (``h_n[-1]`` from
    ``(output, (h_n, c_n))``), ``GetItem(1, -1)`` the GRU's. Backward returns a gradient of the
    input's structure: the output gradient at ``index``, None (or zeros within an array)
    elsewhere.

    Args:
        *index: the position, then positions inside nested tuples or along the first axis.

    Shape:
        input: a tuple (or an array).    output: the element at ``index``.
    """

    def __init__(self, index: int, *more: int):
        super().__init__()
        index = (index, *more)
        ok = all(isinstance(i, (int, np.integer)) for i in index)
        check_hyper("GetItem", "index", index, ok, "one or more ints")
        self.index = tuple(int(i) for i in index)

    def extra_repr(self) -> str:
        return ", ".join(str(i) for i in self.index)

    def forward(self, x):
        value = x
        for i in self.index:
            n = len(value) if isinstance(value, (tuple, list)) else np.shape(value)[:1]
            n = n if isinstance(n, int) else (n[0] if n else 0)
            if not -n <= i < n:
                got = (
                    f"a tuple of {n}"
                    if isinstance(value, (tuple, list))
                    else f"an array of shape {fmt_shape(np.shape(value))}"
                )
                raise TypeError(expected_got(self, f"a tuple or array with an element {i}", got))
            value = value[i]
        self.save_for_backward(_structure(x))
        return value

    def backward(self, grad_output):
        (structure,) = self.saved
        return _place(structure, self.index, grad_output)


class _Leaf:
    """An array in a tuple input: its shape and dtype (zeros stand for it in the gradient)."""

    __slots__ = ("shape", "dtype")

    def __init__(self, x):
        self.shape, self.dtype = np.shape(x), getattr(x, "dtype", np.float64)


def _structure(x):
    """The nesting of a tuple input, each array as a _Leaf."""
    if isinstance(x, (tuple, list)):
        return tuple(_structure(v) for v in x)
    return _Leaf(x)


def _place(structure, index: tuple, grad):
    """A gradient of the input's structure: ``grad`` at ``index``, None (zeros inside an
    array) elsewhere."""
    if isinstance(structure, tuple):
        items = [None] * len(structure)
        i = index[0]
        items[i] = grad if len(index) == 1 else _place(structure[i], index[1:], grad)
        return tuple(items)
    out = array_module(grad).zeros(structure.shape, dtype=getattr(grad, "dtype", structure.dtype))
    out[index] = grad
    return out


class TimeStep(Module):
    """One time step of a sequence: ``x[:, index]``. With ``lengths`` (the real steps of each
    padded sequence, as the recurrent layers take them), a negative index counts from each
    sequence's own end: ``TimeStep(-1)`` is the last *valid* step, the one whose output equals
    a unidirectional RNN's final state. A step outside a sequence (``lengths[i] + index < 0``, or
    past its length) gives zeros and no gradient.

    Args:
        index: the step (default -1, the last).
        batch_first: inputs are (N, T, *) (default); False for time-major (T, N, *).

    ``forward(x, lengths=None)``; ``backward`` returns dL/dx (zeros off the chosen steps).

    Shape:
        input: (N, T, *) (or (T, N, *)).    output: (N, *).
    """

    def __init__(self, index: int = -1, batch_first: bool = True):
        super().__init__()
        check_hyper("TimeStep", "index", index, isinstance(index, (int, np.integer)), "an int")
        self.index = int(index)
        self.batch_first = bool(batch_first)

    def extra_repr(self) -> str:
        return f"index={self.index}" + ("" if self.batch_first else ", batch_first=False")

    def forward(self, x, *, lengths=None):
        if getattr(x, "ndim", 0) < 2:
            got = fmt_shape(x.shape) if hasattr(x, "shape") else type(x).__name__
            raise ShapeError(expected_got(self, "a sequence of shape (N, T, *)", got))
        xs = x if self.batch_first else np.swapaxes(x, 0, 1)
        n, t = xs.shape[:2]
        if lengths is None:
            step = self.index if self.index >= 0 else t + self.index
            if not 0 <= step < t:
                raise ShapeError(
                    expected_got(self, f"sequences with a step {self.index}", f"T={t}")
                )
            self.save_for_backward(x.shape, step, None, None)
            return xs[:, step].copy()
        lengths = np.asarray(to_numpy(lengths))  # checked on the host
        if (
            lengths.shape != (n,)
            or lengths.dtype.kind not in "iu"
            or (n and (lengths.min() < 0 or lengths.max() > t))
        ):
            got = f"shape {fmt_shape(lengths.shape)}, dtype {lengths.dtype}"
            raise ValueError(
                expected_got(self, f"integer lengths of shape ({n},) in [0, {t}]", got)
            )
        steps = np.full(n, self.index) if self.index >= 0 else lengths + self.index
        valid = (steps >= 0) & (steps < lengths)
        xm = array_module(xs)
        rows = xm.arange(n)
        safe = np.where(valid, steps, 0)
        if xm is not np:  # host indices join the sequence's module
            valid, safe = xm.asarray(valid), xm.asarray(safe)
        y = xs[rows, safe]
        y[~valid] = 0
        self.save_for_backward(x.shape, safe, valid, rows)
        return y

    def backward(self, grad_output):
        shape, step, valid, rows = self.saved
        dx = array_module(grad_output).zeros(shape, dtype=grad_output.dtype)
        dxs = dx if self.batch_first else np.swapaxes(dx, 0, 1)  # a view: writes reach dx
        if valid is None:
            dxs[:, step] = grad_output
        else:
            dxs[rows[valid], step[valid]] = grad_output[valid]
        return dx
