"""The export context: value names, initializers and nodes, and the exporter registry.

A converter is a function ``fn(ctx, module, *inputs) -> outputs``: ``inputs`` are :class:`Value`
objects (an ONNX value name plus the example array that flows through the model at that point,
so converters know every static size), and it returns the name of each output (a string, or the
same nested tuple structure that ``module.forward`` returns; None for an output it leaves out).
:meth:`ExportContext.convert` pairs those names with the module's eval-mode outputs, so the
caller gets Values back. Converters never import onnx: they call :meth:`ExportContext.node` and
:meth:`ExportContext.const`.

A graph model is one more exporter of the same shape: walk its nodes in topological order,
``ctx.convert`` each layer on the Values of its inputs (merges become ``ctx.node`` calls), and
return the names of its outputs.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import numpy as np

#: The opsets the converters are written for (17 introduced LayerNormalization).
MIN_OPSET = 17

_EXPORTERS: dict[type, Callable] = {}


class UnsupportedLayerError(TypeError):
    """``nnframe.onnx.export`` met a module with no exporter (see ``register_exporter``), or a
    layer configuration that ONNX has no equivalent for."""


def register_exporter(cls: type, fn: Callable | None = None):
    """Registers ``fn(ctx, module, *inputs)`` as the ONNX exporter of instances of ``cls``.

    The lookup is by exact class (a subclass with its own ``forward`` needs its own exporter).
    Usable as a decorator: ``@register_exporter(MyLayer)``. A later registration replaces an
    earlier one, so users may also override a built-in exporter.

    Example:
        >>> import numpy as np, nnframe as nf
        >>> from nnframe.onnx import register_exporter
        >>> class Double(nf.Module):
        ...     def forward(self, x):
        ...         return x * 2
        >>> @register_exporter(Double)
        ... def _(ctx, module, x):
        ...     return ctx.node("Mul", [x.name, ctx.const(np.float32(2))])
    """
    if not isinstance(cls, type):
        raise TypeError(f"register_exporter: expected a class, got {type(cls).__name__}")

    def register(fn: Callable) -> Callable:
        if not callable(fn):
            raise TypeError(f"register_exporter: expected a callable, got {type(fn).__name__}")
        _EXPORTERS[cls] = fn
        return fn

    return register if fn is None else register(fn)


def exporter_for(module) -> Callable:
    """The registered exporter of ``type(module)``; an UnsupportedLayerError naming it if none."""
    fn = _EXPORTERS.get(type(module))
    if fn is None:
        raise UnsupportedLayerError(
            f"{module!r}: no ONNX exporter for {type(module).__name__}. Register one with "
            "nnframe.onnx.register_exporter"
        )
    return fn


def unsupported(module, why: str) -> UnsupportedLayerError:
    """The error for a layer configuration with no ONNX equivalent."""
    return UnsupportedLayerError(f"{module!r}: cannot be exported to ONNX: {why}")


@dataclass(frozen=True)
class Value:
    """An ONNX value: its name in the graph and the example array it holds during export."""

    name: str
    value: np.ndarray

    @property
    def shape(self) -> tuple[int, ...]:
        return self.value.shape

    @property
    def ndim(self) -> int:
        return self.value.ndim

    @property
    def dtype(self) -> np.dtype:
        return self.value.dtype


class ExportContext:
    """Collects the nodes and initializers of one graph.

    Attributes:
        opset: the target ONNX opset.
        nodes: the onnx NodeProtos, in order.
        initializers: the onnx TensorProtos (weights and constants).
    """

    def __init__(self, opset: int):
        import onnx  # only ever imported inside an export

        self._onnx = onnx
        self.opset = int(opset)
        self.nodes: list = []
        self.initializers: list = []
        self._names: set[str] = set()
        self._counter = itertools.count()
        self._by_id: dict[int, tuple[np.ndarray, str]] = {}
        self._path: list[str] = []

    # ------------------------------------------------------------------ names
    def fresh(self, hint: str) -> str:
        """A value name not used yet, built from ``hint`` and the current module path."""
        base = ".".join([*self._path, hint]) if self._path else hint
        name = base
        while name in self._names:
            name = f"{base}_{next(self._counter)}"
        self._names.add(name)
        return name

    def reserve(self, name: str) -> str:
        """Claims an exact name (graph inputs and outputs); a ValueError if it is taken."""
        if name in self._names:
            raise ValueError(f"nnframe.onnx.export: the name {name!r} is used twice")
        self._names.add(name)
        return name

    # ------------------------------------------------------------------ graph parts
    def param(self, array: np.ndarray, hint: str) -> str:
        """An initializer holding ``array`` (a parameter): one per array, however often used,
        so tied weights stay tied."""
        array = np.asarray(array)
        hit = self._by_id.get(id(array))
        if hit is not None and hit[0] is array:
            return hit[1]
        name = self.const(array, hint)
        self._by_id[id(array)] = (array, name)
        return name

    def const(self, array, hint: str = "const", dtype=None) -> str:
        """An initializer holding a copy of ``array`` (cast to ``dtype`` when given)."""
        array = np.array(array, dtype=dtype)
        name = self.fresh(hint)
        self.initializers.append(self._onnx.numpy_helper.from_array(array, name))
        return name

    def ints(self, values, hint: str = "shape") -> str:
        """An int64 1-D constant (shapes, axes, pads)."""
        return self.const(np.asarray(list(values), dtype=np.int64).reshape(-1), hint)

    def node(self, op: str, inputs, outputs: int | list[str] = 1, **attrs):
        """Appends a node; returns its output name (or the list of names when ``outputs`` is a
        count other than 1 or a list). An input of None is an omitted optional input ("")."""
        inputs = list(inputs)
        while inputs and inputs[-1] is None:  # trailing optional inputs are left out
            inputs.pop()
        inputs = ["" if i is None else i for i in inputs]
        if isinstance(outputs, int):
            names = [self.fresh(op.lower()) for _ in range(outputs)]
        else:
            names = [self.reserve(n) for n in outputs]
        self.nodes.append(
            self._onnx.helper.make_node(op, inputs, names, name=self.fresh(f"{op}_node"), **attrs)
        )
        return names[0] if isinstance(outputs, int) and outputs == 1 else names

    # ------------------------------------------------------------------ opset-dependent helpers
    def reduce(self, op: str, x: str, axes, keepdims: bool = True) -> str:
        """``op`` (ReduceMean, ReduceMax, ReduceSum, ...) over ``axes``: an input from opset 18
        (ReduceSum from 13), an attribute before."""
        axes = [int(a) for a in axes]
        if op == "ReduceSum" or self.opset >= 18:
            return self.node(op, [x, self.ints(axes, "axes")], keepdims=int(keepdims))
        return self.node(op, [x], axes=axes, keepdims=int(keepdims))

    def reshape(self, x: str, shape) -> str:
        """Reshape with ONNX's rules (0 copies the input's dim, -1 is inferred)."""
        return self.node("Reshape", [x, self.ints(shape, "shape")])

    def transpose(self, x: str, perm) -> str:
        return self.node("Transpose", [x], perm=[int(p) for p in perm])

    def slice(self, x: str, starts, ends, axes) -> str:
        return self.node(
            "Slice",
            [x, self.ints(starts, "starts"), self.ints(ends, "ends"), self.ints(axes, "axes")],
        )

    def squeeze(self, x: str, axes) -> str:
        return self.node("Squeeze", [x, self.ints(axes, "axes")])

    def unsqueeze(self, x: str, axes) -> str:
        return self.node("Unsqueeze", [x, self.ints(axes, "axes")])

    def scalar(self, value: float, like: Value | np.dtype) -> str:
        """A 0-d constant of the dtype of ``like``."""
        dtype = like.dtype if isinstance(like, Value) else np.dtype(like)
        return self.const(np.asarray(value, dtype=dtype), "scalar")

    # ------------------------------------------------------------------ modules
    def convert(self, module, *inputs: Value, name: str | None = None, kwargs=None):
        """Exports ``module`` applied to ``inputs``; returns its outputs as Values (nested as
        ``module.forward``'s result is). ``name`` (a child's attribute name) prefixes the names
        of its initializers and values. ``kwargs`` are keyword inputs (Values, e.g. the
        ``lengths=`` of a recurrent layer in a graph model), passed to the exporter and to
        ``forward`` by keyword."""
        fn = exporter_for(module)
        kwargs = dict(kwargs or {})
        if name is not None:
            self._path.append(name)
        try:
            names = fn(self, module, *inputs, **kwargs)
        finally:
            if name is not None:
                self._path.pop()
        values = module(*[_unwrap(v) for v in inputs], **{k: _unwrap(v) for k, v in kwargs.items()})
        return _pair(module, names, values)


def _unwrap(v):
    if isinstance(v, Mapping):
        return {k: _unwrap(i) for k, i in v.items()}
    if isinstance(v, (tuple, list)):
        return tuple(_unwrap(i) for i in v)
    return v.value if isinstance(v, Value) else v  # None and constant arguments as given


def _pair(module, names, values):
    if isinstance(values, Mapping):  # a graph model's dict of outputs: names by key or in order
        if isinstance(names, Mapping):
            names = [names.get(k) for k in values]
        return {k: v for k, v in zip(values, _pair(module, tuple(names), tuple(values.values())))}
    if isinstance(values, (tuple, list)):
        if not isinstance(names, (tuple, list)) or len(names) != len(values):
            raise RuntimeError(
                f"{module!r}: its ONNX exporter returned {names!r} for {len(values)} outputs"
            )
        return tuple(_pair(module, n, v) for n, v in zip(names, values))
    if names is None or values is None:
        return None
    if not isinstance(names, str):
        raise RuntimeError(f"{module!r}: its ONNX exporter returned {names!r}, not a value name")
    return Value(names, np.asarray(values))
