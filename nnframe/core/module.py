"""Module: the base class of every layer and container.

A Module finds its parameters, buffers and sub-modules *structurally*: its attributes that are
Parameters, then its attributes that are Modules (or lists/tuples of Modules), in assignment order,
with dotted names. ``forward`` computes the output and saves what ``backward`` needs;
``backward`` applies the chain rule: it accumulates parameter gradients and returns the
gradient for the input.
"""

from __future__ import annotations

import functools
import inspect
from collections import OrderedDict
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import numpy as np

from nnframe.core.backend import array_module, is_array
from nnframe.core.device import Device, array_mover, cuda_device, device_types
from nnframe.core.errors import expected_got, fmt_shape
from nnframe.core.hooks import (
    CALL,
    GLOBAL_HOOKS,
    HookSet,
    RemovableHandle,
    run_backward,
    run_forward,
)
from nnframe.core.input_spec import InputSpec, Unbatched
from nnframe.core.parameter import Parameter


class StateDictError(ValueError):
    """``load_state_dict`` found missing, unexpected or mis-shaped keys (all listed at once)."""


class _Unsaved:
    """Stands where a call's saved state would be: says why backward cannot run."""

    __slots__ = ("reason",)

    def __init__(self, reason: str):
        self.reason = reason


_NEVER_RUN = _Unsaved("backward called before forward")
_EXHAUSTED = _Unsaved(
    "backward called before forward: every forward call of this pass has had its backward"
)
_NO_GRAD = _Unsaved(
    "backward called after a forward under nf.no_grad(), which saves nothing for backward; "
    "run the forward outside no_grad to train"
)
_NOTHING_SAVED = _Unsaved(
    "backward called, but forward saved nothing for it: call self.save_for_backward(...) in "
    "forward with what backward needs"
)


class _CallSlots:
    """A module's per-call state (see ``Module.save_for_backward``): one saved entry per forward
    call not yet consumed by a backward (``stack``), the pass they belong to (-1 after a
    backward), how many calls pushed since the stack was last cleared, the saves counter of
    the call path, the current entry, its batch-axis undo, and whether a backward is running."""

    __slots__ = ("stack", "pass_id", "calls", "saves", "saved", "unbatched", "in_backward")

    def __init__(self) -> None:
        self.stack: list = []
        self.pass_id = -1
        self.calls = 0
        self.saves = 0
        self.saved: tuple | _Unsaved = _NEVER_RUN
        self.unbatched: Unbatched | None = None
        self.in_backward = False

    def new_pass(self, pass_id: int, clear: bool) -> None:
        """The first save of a new pass: leftovers of older passes go (``clear``: a nested
        call, or eval mode), except for a module called by hand at the top level in training
        mode (a cell stepped through a loop) before a backward."""
        if clear or self.pass_id < 0:
            self.stack.clear()
            self.calls = 0
        self.pass_id = pass_id


# attribute types that never hold a module or a parameter: discovery skips them at once
_PLAIN = frozenset((type(None), bool, int, float, str, _CallSlots, np.dtype, np.ndarray))
# the attributes Module.__init__ sets: reading one that is missing means it did not run
_INIT_ATTRIBUTES = frozenset(("training", "_buffer_names", "_hooks", "_call"))


class _SymbolicCalls:
    """The hook of graph models (set by :mod:`nnframe.layers.graph`): ``record(module, args, kwargs)``
    records a call on symbolic nodes and returns its output node(s), or NotImplemented when no
    argument is a node. Tried only when the first argument is not an ndarray."""

    __slots__ = ("record",)

    def __init__(self) -> None:
        self.record = None


SYMBOLIC = _SymbolicCalls()


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

    #: What the first input looks like (nnframe.core.input_spec): the call path checks it and
    #: handles inputs without a batch axis. None: the layer checks its inputs itself.
    input_spec: InputSpec | None = None

    #: The device ``to`` moved this module to, when it is not the CPU (the input check then
    #: compares the input's device with it).
    _device: Device | None = None

    def __init__(self) -> None:
        self.training = True
        self._buffer_names: dict[str, None] = {}
        self._hooks: HookSet | None = None
        # per-call state (see save_for_backward): one entry per forward call not yet consumed
        # by a backward, the pass they belong to (-1 after a backward), the current entry
        self._call = _CallSlots()  # per-call saved state: one attribute, cheap to skip

    # ------------------------------------------------------------------ the layer contract
    def forward(self, *args, **kwargs):
        raise NotImplementedError(f"{type(self).__name__}.forward is not implemented")

    def backward(self, grad_output):
        raise NotImplementedError(f"{type(self).__name__}.backward is not implemented")

    def __call__(self, *args, **kwargs):
        """Runs ``forward`` through the call path: pass counting, hooks (nnframe.hooks), and
        exactly one saved entry per call (a forward that saved nothing gets a marker, so that
        a later backward says so)."""
        if args and type(args[0]) is not np.ndarray and SYMBOLIC.record is not None:
            out = SYMBOLIC.record(self, args, kwargs)  # nnframe.graph: a call on nodes
            if out is not NotImplemented:
                return out
        call = CALL
        undo = None
        if kwargs and not args and "input" in kwargs and not _takes_input_keyword(type(self)):
            args = (kwargs.pop("input"),)  # PyTorch's name for the first input: layer(input=x)
        spec = self.input_spec
        if spec is not None and args and not spec.fits(self, args[0]):
            args, undo = spec.admit(self, args)  # checks; adds a missing batch axis
            if undo is not None and kwargs and spec.keyword_inputs:
                kwargs = undo.add_to_keywords(kwargs, spec.keyword_inputs)
        slots = self._call  # (before the depth changes: a missing super().__init__() raises)
        saves = slots.saves
        if call.depth == 0:
            call.pass_id += 1  # a call from outside any forward starts a new pass
        call.depth += 1
        try:
            if self._hooks is None and not GLOBAL_HOOKS.active:
                out = self.forward(*args, **kwargs)
            else:
                out = run_forward(self, self._hooks, args, kwargs)
        finally:
            call.depth -= 1
        if call.grad_enabled:
            n = slots.saves - saves
            if n != 1:
                if n == 0:
                    self._push(_NOTHING_SAVED, call.depth > 0)
                else:  # several saves in one call (a subclass's forward around its parent's)
                    del slots.stack[-n:-1]
            if undo is not None:  # this call's backward adds and removes the same axes
                undo.entry = slots.stack[-1]
                slots.stack[-1] = undo
        if undo is not None:
            out = undo.remove_from_output(out)
        return out

    def save_for_backward(self, *arrays) -> None:
        """Keeps what ``backward`` needs from this call.

        Each call's save is kept apart: a module called several times before its backwards
        (a shared layer, a recurrent cell in a hand-written loop) keeps one entry per call, and
        each ``backward`` consumes the latest one, so backwards run in the reverse order of
        the forwards. Entries left over from an earlier pass are dropped when a new pass saves.
        Under ``nf.no_grad()`` nothing is kept.
        """
        call, slots = CALL, self._call
        if not call.grad_enabled:
            slots.saved = _NO_GRAD
            return
        if slots.pass_id != call.pass_id:  # (_push, inlined: this runs once per layer call)
            if slots.stack or slots.calls:  # (else there is nothing to drop)
                slots.new_pass(call.pass_id, call.depth > 1 or not self.training)
            else:
                slots.pass_id = call.pass_id
        slots.stack.append(arrays)
        slots.calls += 1
        slots.saves += 1
        slots.saved = arrays

    def _push(self, entry, nested: bool) -> None:
        slots, pass_id = self._call, CALL.pass_id
        if slots.pass_id != pass_id:
            slots.new_pass(pass_id, nested or not self.training)
        slots.stack.append(entry)
        slots.calls += 1
        slots.saved = entry

    @property
    def saved(self) -> tuple:
        """What this call's ``forward`` saved; a RuntimeError saying why if there is nothing."""
        saved = self._call.saved
        if isinstance(saved, _Unsaved):
            raise RuntimeError(f"{self._who()}: {saved.reason}")
        return saved

    def clear_saved(self) -> None:
        """Forgets every saved call (after a forward-only pass in training mode)."""
        self._call.stack.clear()
        self._call.saved = _NEVER_RUN
        self._call.pass_id = -1
        self._call.calls = 0

    def _who(self) -> str:
        """How messages name this module: its repr, or ``Class(...)`` for a container."""
        return f"{type(self).__name__}(...)" if self.children() else repr(self)

    # ------------------------------------------------------------------ hooks
    def _hook_set(self) -> HookSet:
        if self._hooks is None:
            self._hooks = HookSet()
        return self._hooks

    def register_forward_pre_hook(self, hook) -> RemovableHandle:
        """Calls ``hook(module, args)`` before each forward; it may return new args."""
        return self._hook_set().add("forward_pre", hook)

    def register_forward_hook(self, hook) -> RemovableHandle:
        """Calls ``hook(module, args, output)`` after each forward; it may return a new output."""
        return self._hook_set().add("forward", hook)

    def register_backward_pre_hook(self, hook) -> RemovableHandle:
        """Calls ``hook(module, grad_output)`` before each backward; it may return a new
        grad_output."""
        return self._hook_set().add("backward_pre", hook)

    def register_backward_hook(self, hook) -> RemovableHandle:
        """Calls ``hook(module, grad_input, grad_output)`` after each backward; it may return a
        new grad_input."""
        return self._hook_set().add("backward", hook)

    def __getattr__(self, name: str):
        # only reached when normal lookup fails: the usual cause is a missing super().__init__()
        if name in _INIT_ATTRIBUTES and "_call" not in self.__dict__:
            cls = type(self).__name__
            raise RuntimeError(
                f"{cls}: expected Module.__init__ to have run, got an object without it. Add "
                f"super().__init__() as the first line of {cls}.__init__"
            )
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    # ------------------------------------------------------------------ discovery
    def named_children(self) -> Iterator[tuple[str, Module]]:
        """Direct sub-modules: Module attributes, and lists/tuples of Modules as ``name.i``."""
        for name, value in vars(self).items():
            if value.__class__ in _PLAIN:  # most attributes: one set lookup, no isinstance
                continue
            if isinstance(value, Module):
                yield name, value
            elif isinstance(value, (list, tuple)) and value and isinstance(value[0], Module):
                for i, child in enumerate(value):
                    if isinstance(child, Module):
                        yield f"{name}.{i}", child
            elif isinstance(value, dict) and any(isinstance(v, Module) for v in value.values()):
                # a plain dict would hide its modules' parameters from optimizers and state_dict
                cls = type(self).__name__
                raise TypeError(
                    f"{cls}.{name}: expected modules in a dict to be held by nf.ModuleDict, got "
                    f"a plain dict (its parameters would be invisible). Write "
                    f"self.{name} = nf.ModuleDict({{...}})"
                )

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
            if value.__class__ not in _PLAIN and isinstance(value, Parameter):
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

    def apply(self, fn) -> Module:
        """Calls ``fn(module)`` on every sub-module, then on this one (PyTorch's order: children
        first), each once; returns self. The usual use is initialization:

        Example:
            >>> import numpy as np, nnframe as nf
            >>> def init(m):
            ...     if isinstance(m, nf.Dense):
            ...         m.weight.data[...] = 0.5
            >>> model = nf.Sequential(nf.Dense(2, 3, rng=0), nf.ReLU()).apply(init)
            >>> float(model[0].weight.data.max())
            0.5
        """
        for module in reversed(self.modules()):
            fn(module)
        return self

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

    def to(self, *args, **kwargs) -> Module:
        """Moves and/or casts every parameter, gradient and buffer; returns self.

        As PyTorch's: ``to(dtype)``, ``to(device)``, ``to(device, dtype)``, or by keyword
        (``to(device="cuda:1", dtype=np.float64)``). The dtype is a floating one; it applies to
        floating arrays (integer buffers, such as counters, keep theirs). Gradients follow
        their parameters. The device is ``"cpu"`` or ``"cuda"``/``"cuda:N"`` (CuPy, see
        :mod:`nnframe.core.device`); an optimizer's state follows at its next step.
        """
        device, dtype, convert = to_conversion(self, args, kwargs)
        self._apply(convert)
        for module in self.modules():
            if dtype is not None:
                module._on_dtype_change(dtype)
            if device is not None:
                module._device = None if device.type == "cpu" else device
        return self

    def cpu(self) -> Module:
        """``to("cpu")``: every array into main memory (numpy)."""
        return self.to("cpu")

    def cuda(self, device: int | str | None = None) -> Module:
        """``to("cuda")`` (GPU ``device`` when given: ``cuda(1)``)."""
        return self.to(cuda_device(device))

    def _apply(self, fn) -> Module:
        """Replaces every parameter's data and every buffer by ``fn(array)`` (which returns the
        array itself to leave it); a parameter whose data changed gets ``fn`` of its gradient
        too. The one place where ``to`` (dtypes and devices) touches the arrays."""
        for p in self.parameters():
            data = fn(p.data)
            if data is not p.data:
                p.data = data
                p.grad = fn(p.grad)
        for module in self.modules():
            for name in module._buffer_names:
                value = getattr(module, name)
                if value is not None:
                    setattr(module, name, fn(value))
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
            state[name] = np.array(b, copy=True) if array_module(b) is np else b.copy()
        return state

    def load_state_dict(
        self, state_dict: Mapping[str, np.ndarray], strict: bool = True, cast: bool = False
    ) -> None:
        """Copies values into the parameters and buffers, in place.

        Every problem is collected and reported in one StateDictError: missing keys (with
        ``strict``), unexpected keys (with ``strict``), shape mismatches, and dtype mismatches
        (float64 into float32, integers into floats, ...) unless ``cast=True`` asks to convert.
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
            value = state_dict[key]
            if not (hasattr(value, "shape") and hasattr(value, "dtype")):
                value = np.asarray(value)  # lists; arrays of any module are read as they are
            current = getattr(owner, attr)
            if value.shape != current.shape:
                problems.append(
                    f"{key}: expected shape {fmt_shape(current.shape)}, got {fmt_shape(value.shape)}"
                )
            elif value.dtype != current.dtype and not cast and value.dtype.kind in "fiub":
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
                value = array_module(current).asarray(state_dict[key])  # onto current's kind
                current[...] = value.astype(current.dtype, copy=False)

    # ------------------------------------------------------------------ configs (nnframe.io.config)
    def __init_subclass__(cls, **kwargs):
        """Wraps each subclass's own ``__init__`` so that the outermost constructor call records
        its arguments in ``self._init_args``: ``get_config`` then needs no code in any layer.
        Costs a microsecond or two per construction, nothing per forward/backward."""
        super().__init_subclass__(**kwargs)
        init = cls.__dict__.get("__init__")
        if init is not None and not getattr(init, "_records_args", False):
            cls.__init__ = _recording_init(init)
        backward = cls.__dict__.get("backward")
        if backward is not None and not getattr(backward, "_call_path", False):
            cls.backward = _backward_call_path(backward)

    def get_config(self) -> dict:
        """The architecture as JSON-ready ``{"class": name, "config": {arguments}}``: the
        constructor arguments (rng and callable initializers left out; child Modules nested).
        Override it together with ``from_config`` for a layer built in other ways."""
        return CONFIG_IO.get_config(self)

    @classmethod
    def from_config(cls, config: Mapping) -> Module:
        """Rebuilds a module from ``get_config``'s dict (class names via the layer registry)."""
        module = CONFIG_IO.from_config(config)
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


class _ConfigIO:
    """How ``Module.get_config``/``from_config`` reach :mod:`nnframe.io.config`, which fills this
    slot when it is imported (always, by ``import nnframe``): configs depend on modules, and
    module.py imports nothing of them."""

    get_config: Callable[[Module], dict]
    from_config: Callable[[Mapping], Module]


CONFIG_IO = _ConfigIO()


class InitRecord:
    """The outermost constructor call of a module: the ``__init__`` run and its arguments."""

    __slots__ = ("init", "args", "kwargs")

    def __init__(self, init, args: tuple, kwargs: dict):
        self.init, self.args, self.kwargs = init, args, kwargs


def to_conversion(owner, args: tuple, kwargs: dict) -> tuple[Device | None, Any, Callable]:
    """``to``'s arguments (see ``_to_arguments``) and the function it applies to each array:
    a floating array cast to the dtype, then any array moved to the device (what ``Module.to``
    and ``Loss.to`` share)."""
    device, dtype = _to_arguments(owner, args, kwargs)
    move = None if device is None else array_mover(device)

    def convert(array):  # any array module's arrays (numpy, CuPy, ...): they have a dtype
        if dtype is not None and is_array(array) and array.dtype.kind == "f":
            array = array.astype(dtype)
        return array if move is None else move(array)

    return device, dtype, convert


def _to_arguments(owner, args: tuple, kwargs: dict) -> tuple[Device | None, Any]:
    """``to``'s arguments (of a Module or a Loss) as (device or None, floating dtype or None),
    PyTorch's way: positional devices and dtypes in any order, or ``device=``/``dtype=``
    (``non_blocking`` and ``copy`` are accepted and mean nothing here: numpy copies
    synchronously)."""
    who = f"{type(owner).__name__}.to"
    unknown = set(kwargs) - {"device", "dtype", "non_blocking", "copy"}
    if unknown:
        raise TypeError(f"{who}: got unexpected keyword arguments {sorted(unknown)}")
    found: dict[str, Any] = {k: kwargs[k] for k in ("device", "dtype") if kwargs.get(k) is not None}
    for a in args:
        key = "device" if _is_device(a) else "dtype"
        if key in found:
            raise TypeError(f"{who}: expected at most one {key}, got {found[key]!r} and {a!r}")
        found[key] = a
    if not found:
        raise TypeError(f"{who}: expected a device, a dtype or both, got neither")
    device = found.get("device")
    device = None if device is None else Device(device)
    dtype = found.get("dtype")
    if dtype is not None:
        try:
            dtype = np.dtype(dtype)
        except TypeError:
            raise TypeError(
                expected_got(who, "a device ('cpu', 'cuda') or a floating dtype", repr(dtype))
            ) from None
        if dtype.kind != "f":
            raise TypeError(expected_got(who, "a floating dtype", str(dtype)))
    return device, dtype


def _is_device(a) -> bool:
    if isinstance(a, Device):
        return True
    if isinstance(a, str):
        return a.partition(":")[0] in device_types()
    return isinstance(getattr(a, "type", None), str)  # torch.device (np.dtype.type is a class)


@functools.cache
def _takes_input_keyword(cls: type[Module]) -> bool:
    """Whether ``cls.forward`` has a parameter named ``input`` (else ``input=`` is the first)."""
    try:
        return "input" in inspect.signature(cls.forward).parameters
    except (TypeError, ValueError):  # a forward without a readable signature
        return True


def _backward_call_path(backward):
    """A subclass's ``backward`` wrapped in the call path: it checks the incoming gradient's
    kind, takes the matching call's saved state (the latest not yet consumed), and runs the
    backward hooks. A ``super().backward(...)`` inside it runs the parent's code directly."""

    @functools.wraps(backward)
    def call_path(self, *args, **kwargs):
        slots = self._call
        if slots.in_backward:
            return backward(self, *args, **kwargs)
        if args and type(args[0]) is not np.ndarray:
            _check_grad_output(self, args[0])
        stack = slots.stack
        if stack:
            entry = stack.pop()
            if type(entry) is Unbatched:
                slots.unbatched, slots.saved = entry, entry.entry
            else:
                slots.unbatched, slots.saved = None, entry
        undo = slots.unbatched
        if undo is not None and args:  # an unbatched call: the same axes as its forward
            args = (undo.add_to_grad_output(args[0]), *args[1:])
        # a module called once may run backward again (gradients accumulate); one called
        # several times has consumed every call's entry once its stack is empty
        exhausted = not stack and slots.calls > 1
        slots.pass_id = -1  # a backward ran: the next save starts afresh
        slots.in_backward = True
        try:
            if self._hooks is None and not GLOBAL_HOOKS.active:
                grad = backward(self, *args, **kwargs)
            else:
                grad = run_backward(self, self._hooks, backward, args, kwargs)
            return grad if undo is None else undo.remove_from_grad_input(grad)
        finally:
            slots.in_backward = False
            if exhausted:
                slots.saved = _EXHAUSTED

    call_path._call_path = True
    return call_path


def _check_grad_output(module: Module, grad_output) -> None:
    """The output gradient is an array (a tuple, list or dict of them, or None, for several
    outputs); a loss
    value or the loss's backward method passed by mistake would otherwise broadcast silently."""
    if grad_output is None or isinstance(grad_output, (np.ndarray, tuple, list, Mapping)):
        return
    if hasattr(grad_output, "shape") and hasattr(grad_output, "dtype"):
        if getattr(grad_output, "ndim", 1) > 0:  # another array type (sparse, GPU)
            return
    who = f"{module._who()}.backward"
    if callable(grad_output):
        name = getattr(grad_output, "__qualname__", type(grad_output).__name__)
        raise TypeError(
            f"{who}: expected grad_output as an array of the output's shape, got the callable "
            f"{name}. Call it: model.backward(loss_fn.backward())"
        )
    raise TypeError(
        f"{who}: expected grad_output as an array of the output's shape, got "
        f"{type(grad_output).__name__} {grad_output!r}. Pass dL/doutput: "
        f"model.backward(loss_fn.backward()), not the loss value"
    )


def _recording_init(init):
    """``init`` wrapped to record its arguments when it is the outermost ``__init__`` call on
    ``self`` (a subclass's ``super().__init__(...)`` does not overwrite the record). The raw
    arguments are kept; ``nnframe.config`` binds them to the signature only when asked."""

    @functools.wraps(init)
    def __init__(self, *args, **kwargs):
        outermost = "_init_args" not in self.__dict__
        if outermost:
            self.__dict__["_init_args"] = InitRecord(init, args, kwargs)
        init(self, *args, **kwargs)
        if outermost:  # PyTorch's Linear(4, 3, device="cuda"): built here, then moved there
            device = _device_argument(init, args, kwargs)
            if device is not None and device.type != "cpu":
                self.to(device)

    __init__._records_args = True
    return __init__


def _device_argument(init, args: tuple, kwargs: dict) -> Device | None:
    """The ``device`` a constructor was given (by keyword or at its position), when it names a
    device; None otherwise (a parameter of that name meaning something else is left alone)."""
    if "device" in kwargs:
        value = kwargs["device"]
    else:
        position = _device_position(init)
        value = args[position] if position is not None and position < len(args) else None
    if value is None:
        return None
    try:
        return Device(value)
    except (TypeError, ValueError):
        return None


@functools.cache
def _device_position(init) -> int | None:
    """Where ``device`` sits among ``init``'s positional parameters after self, if it does."""
    try:
        parameters = list(inspect.signature(init).parameters.values())[1:]
    except (TypeError, ValueError):
        return None
    positional = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    for i, parameter in enumerate(parameters):
        if parameter.name == "device":
            return i if parameter.kind in positional else None
    return None
