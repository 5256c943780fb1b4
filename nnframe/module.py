"""Module: the base class of every layer and container.

A Module finds its parameters, buffers and sub-modules *structurally*: its attributes that are
Parameters, then its attributes that are Modules (or lists/tuples of Modules), in assignment order,
with dotted names. ``forward`` computes the output and saves what ``backward`` needs;
``backward`` applies the chain rule: it accumulates parameter gradients and returns the
gradient for the input.
"""

from __future__ import annotations

import functools
from collections import OrderedDict
from collections.abc import Iterator, Mapping

import numpy as np

from nnframe.anomaly import STATE as _ANOMALY
from nnframe.errors import fmt_shape
from nnframe.parameter import Parameter


class StateDictError(ValueError):
    """``load_state_dict`` found missing, unexpected or mis-shaped keys (all listed at once)."""


class Module:
    """Base class of layers: subclass it and write ``forward`` and ``backward``.

    Example:
        >>> import numpy as np, nnframe as nf
        >>> class Scale(nf.Module):
        ...     def __init__(self, features):
        ...         super().__init__()
        ...         self.gamma = nf.Parameter(np.ones(features, dtype=np.float32))
        ...     def forward(self, x):
        ...         self.save_for_backward(x)
        ...         return x * self.gamma.data
        ...     def backward(self, grad_output):
        ...         (x,) = self.saved
        ...         if self.gamma.requires_grad:
        ...             self.gamma.grad += (grad_output * x).sum(axis=0)
        ...         return grad_output * self.gamma.data
        >>> [name for name, _ in Scale(3).named_parameters()]
        ['gamma']
    """

    #: When False, ``backward`` may skip the input's gradient and return None: the input is data
    #: (the first layer of a model). Sequential passes its own flag to its first child, so
    #: ``model.needs_input_grad = False`` saves the first layer's input-gradient product.
    needs_input_grad: bool = True

    def __init__(self) -> None:
        self.training = True
        self._buffer_names: dict[str, None] = {}
        self._saved: tuple | None = None

    # ------------------------------------------------------------------ the layer contract
    def forward(self, *args, **kwargs):
        raise NotImplementedError(f"{type(self).__name__}.forward is not implemented")

    def backward(self, grad_output):
        raise NotImplementedError(f"{type(self).__name__}.backward is not implemented")

    def __call__(self, *args, **kwargs):
        if _ANOMALY.enabled:  # anomaly mode (nnframe.anomaly): off by default, one bool test
            return _ANOMALY.call(self, args, kwargs)
        return self.forward(*args, **kwargs)

    def save_for_backward(self, *arrays) -> None:
        """Keeps what ``backward`` needs; overwrites the previous call's save."""
        self._saved = arrays

    @property
    def saved(self) -> tuple:
        """What the last ``forward`` saved; a RuntimeError if forward has not run."""
        if self._saved is None:
            raise RuntimeError(f"{self!r}: backward called before forward")
        return self._saved

    # ------------------------------------------------------------------ discovery
    def named_children(self) -> Iterator[tuple[str, Module]]:
        """Direct sub-modules: Module attributes, and lists/tuples of Modules as ``name.i``."""
        for name, value in vars(self).items():
            if isinstance(value, Module):
                yield name, value
            elif isinstance(value, (list, tuple)) and value and isinstance(value[0], Module):
                for i, child in enumerate(value):
                    if isinstance(child, Module):
                        yield f"{name}.{i}", child

    def children(self) -> list[Module]:
        return [m for _, m in self.named_children()]

    def named_modules(self, prefix: str = "") -> Iterator[tuple[str, Module]]:
        """This module (named ``prefix``) and every descendant, depth first, each once."""
        seen: set[int] = set()

        def walk(module: Module, name: str):
            if id(module) in seen:
                return
            seen.add(id(module))
            yield name, module
            for child_name, child in module.named_children():
                yield from walk(child, f"{name}.{child_name}" if name else child_name)

        yield from walk(self, prefix)

    def modules(self) -> list[Module]:
        return [m for _, m in self.named_modules()]

    def _own_parameters(self) -> Iterator[tuple[str, Parameter]]:
        for name, value in vars(self).items():
            if isinstance(value, Parameter):
                yield name, value

    def named_parameters(self) -> Iterator[tuple[str, Parameter]]:
        """Every parameter with its dotted name; a shared Parameter is listed once."""
        seen: set[int] = set()
        for prefix, module in self.named_modules():
            for name, p in module._own_parameters():
                if id(p) not in seen:
                    seen.add(id(p))
                    yield (f"{prefix}.{name}" if prefix else name), p

    def parameters(self) -> list[Parameter]:
        return [p for _, p in self.named_parameters()]

    def register_buffer(self, name: str, value: np.ndarray | None) -> None:
        """Registers non-trainable state (running statistics): saved in ``state_dict``, cast by
        ``to``, never seen by optimizers. ``None`` registers the name with nothing stored."""
        self._buffer_names[name] = None
        setattr(self, name, value)

    def named_buffers(self) -> Iterator[tuple[str, np.ndarray]]:
        for prefix, module in self.named_modules():
            for name in module._buffer_names:
                value = getattr(module, name)
                if value is not None:
                    yield (f"{prefix}.{name}" if prefix else name), value

    # ------------------------------------------------------------------ modes and dtype
    def train(self, mode: bool = True) -> Module:
        """Sets training mode (dropout active, batch statistics) here and below; returns self."""
        for m in self.modules():
            m.training = mode
        return self

    def eval(self) -> Module:
        """Sets evaluation mode here and below; returns self."""
        return self.train(False)

    def requires_grad_(self, requires_grad: bool = True) -> Module:
        """Freezes (False) or unfreezes every parameter here and below; returns self."""
        for p in self.parameters():
            p.requires_grad = requires_grad
        return self

    def zero_grad(self) -> None:
        """Resets every parameter's accumulated gradient to zero."""
        for p in self.parameters():
            p.grad.fill(0)

    @property
    def dtype(self) -> np.dtype:
        """The dtype of the first parameter (float32 for a module without parameters)."""
        for _, p in self.named_parameters():
            return p.data.dtype
        return np.dtype(np.float32)

    def to(self, dtype) -> Module:
        """Casts every floating parameter and buffer to ``dtype`` (e.g. float64 for gradient
        checks); returns self. Gradients are reset to zero in the new dtype."""
        dtype = np.dtype(dtype)
        for p in self.parameters():
            if np.issubdtype(p.data.dtype, np.floating):
                p.data = p.data.astype(dtype)
                p.grad = np.zeros_like(p.data)
        for module in self.modules():
            for name in module._buffer_names:
                value = getattr(module, name)
                if isinstance(value, np.ndarray) and np.issubdtype(value.dtype, np.floating):
                    setattr(module, name, value.astype(dtype))
            module._on_dtype_change(dtype)
        return self

    def _on_dtype_change(self, dtype: np.dtype) -> None:
        """Hook for layers that cache dtype-dependent arrays (preallocated buffers)."""

    def num_parameters(self, trainable_only: bool = False) -> int:
        return sum(p.size for p in self.parameters() if p.requires_grad or not trainable_only)

    # ------------------------------------------------------------------ state
    def state_dict(self) -> OrderedDict[str, np.ndarray]:
        """Copies of every parameter and buffer, by dotted name (PyTorch's names)."""
        state: OrderedDict[str, np.ndarray] = OrderedDict()
        for name, p in self.named_parameters():
            state[name] = p.data.copy()
        for name, b in self.named_buffers():
            state[name] = np.array(b, copy=True)
        return state

    def load_state_dict(
        self, state_dict: Mapping[str, np.ndarray], strict: bool = True, cast: bool = False
    ) -> None:
        """Copies values into the parameters and buffers, in place.

        Every problem is collected and reported in one StateDictError: missing keys (with
        ``strict``), unexpected keys (with ``strict``), shape mismatches, and floating dtype
        mismatches unless ``cast=True`` asks to convert.
        """
        targets: dict[str, tuple[Module | Parameter, str]] = {}
        for name, p in self.named_parameters():
            targets[name] = (p, "data")
        for prefix, module in self.named_modules():
            for bname in module._buffer_names:
                if getattr(module, bname) is not None:
                    targets[f"{prefix}.{bname}" if prefix else bname] = (module, bname)

        missing = [k for k in targets if k not in state_dict]
        unexpected = [k for k in state_dict if k not in targets]
        problems = []
        for key, (owner, attr) in targets.items():
            if key not in state_dict:
                continue
            value = np.asarray(state_dict[key])
            current = getattr(owner, attr)
            if value.shape != current.shape:
                problems.append(
                    f"{key}: expected shape {fmt_shape(current.shape)}, got {fmt_shape(value.shape)}"
                )
            elif value.dtype != current.dtype and not cast and value.dtype.kind == "f":
                problems.append(
                    f"{key}: expected dtype {current.dtype}, got {value.dtype} (pass cast=True)"
                )
        if strict:
            problems = (
                [f"missing key {k!r}" for k in missing]
                + [f"unexpected key {k!r}" for k in unexpected]
                + problems
            )
        if problems:
            raise StateDictError(
                f"{type(self).__name__}.load_state_dict: {len(problems)} problem(s):\n  "
                + "\n  ".join(problems)
            )
        for key, (owner, attr) in targets.items():
            if key in state_dict:
                current = getattr(owner, attr)
                current[...] = np.asarray(state_dict[key]).astype(current.dtype, copy=False)

    # ------------------------------------------------------------------ configs (nnframe.config)
    def __init_subclass__(cls, **kwargs):
        """Wraps each subclass's own ``__init__`` so that the outermost constructor call records
        its arguments in ``self._init_args``: ``get_config`` then needs no code in any layer.
        Costs a microsecond or two per construction, nothing per forward/backward."""
        super().__init_subclass__(**kwargs)
        init = cls.__dict__.get("__init__")
        if init is not None and not getattr(init, "_records_args", False):
            cls.__init__ = _recording_init(init)

    def get_config(self) -> dict:
        """The architecture as JSON-ready ``{"class": name, "config": {arguments}}``: the
        constructor arguments (rng and callable initializers left out; child Modules nested).
        Override it together with ``from_config`` for a layer built in other ways."""
        from nnframe.config import get_config

        return get_config(self)

    @classmethod
    def from_config(cls, config: Mapping) -> Module:
        """Rebuilds a module from ``get_config``'s dict (class names via the layer registry)."""
        from nnframe.config import from_config

        module = from_config(config)
        if not isinstance(module, cls):
            raise TypeError(f"{cls.__name__}.from_config: got a config of {config['class']}")
        return module

    # ------------------------------------------------------------------ repr
    def extra_repr(self) -> str:
        """The text inside ``Name(...)``; layers list their constructor arguments here."""
        return ""

    def __repr__(self) -> str:
        children = list(self.named_children())
        if not children:
            return f"{type(self).__name__}({self.extra_repr()})"
        lines = [f"{type(self).__name__}({self.extra_repr()}"]
        for name, child in children:
            child_repr = repr(child).replace("\n", "\n  ")
            lines.append(f"  ({name}): {child_repr}")
        return "\n".join(lines) + "\n)"


class InitRecord:
    """The outermost constructor call of a module: the ``__init__`` run and its arguments."""

    __slots__ = ("init", "args", "kwargs")

    def __init__(self, init, args: tuple, kwargs: dict):
        self.init, self.args, self.kwargs = init, args, kwargs


def _recording_init(init):
    """``init`` wrapped to record its arguments when it is the outermost ``__init__`` call on
    ``self`` (a subclass's ``super().__init__(...)`` does not overwrite the record). The raw
    arguments are kept; ``nnframe.config`` binds them to the signature only when asked."""

    @functools.wraps(init)
    def __init__(self, *args, **kwargs):
        if "_init_args" not in self.__dict__:
            self.__dict__["_init_args"] = InitRecord(init, args, kwargs)
        init(self, *args, **kwargs)

    __init__._records_args = True
    return __init__
