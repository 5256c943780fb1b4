"""The call path of every module: pass counting, gradient mode and hooks.

``Module.__call__`` and every ``backward`` go through one path (see :mod:`nnframe.core.module`):

- **Passes.** A call made outside any other module's forward starts a new *pass*. What a
  module's forward saves for backward belongs to that call; a module called several times in
  one pass keeps one save per call, and each ``backward`` consumes the latest (reverse order,
  as the chain rule runs).
- **Gradient mode.** Inside ``with nf.no_grad():`` forward saves nothing (no memory is held
  for backward) and a later backward says why it cannot run.
- **Hooks.** Functions called around every forward and backward of one module
  (``module.register_forward_hook``) or of every module (``register_module_forward_hook``).
  Anomaly mode is a set of such global hooks.

A hook's signature (PyTorch's):

=========================  =====================================================================
forward pre-hook           ``hook(module, args) -> None or new args (a tuple)``
forward hook               ``hook(module, args, output) -> None or a new output``
backward pre-hook          ``hook(module, grad_output) -> None or a new grad_output``
backward hook              ``hook(module, grad_input, grad_output) -> None or a new grad_input``
=========================  =====================================================================

Example:
    >>> import numpy as np, nnframe as nf
    >>> layer = nf.Dense(2, 3, rng=0)
    >>> shapes = []
    >>> handle = layer.register_forward_hook(lambda m, args, out: shapes.append(out.shape))
    >>> _ = layer(np.ones((4, 2), dtype=np.float32))
    >>> handle.remove()
    >>> _ = layer(np.ones((1, 2), dtype=np.float32))
    >>> shapes
    [(4, 3)]
"""

from __future__ import annotations

import functools
import itertools
from collections.abc import Callable

__all__ = [
    "CALL",
    "GLOBAL_HOOKS",
    "HookSet",
    "RemovableHandle",
    "enable_grad",
    "is_grad_enabled",
    "no_grad",
    "register_module_backward_hook",
    "register_module_backward_pre_hook",
    "register_module_forward_hook",
    "register_module_forward_pre_hook",
]


class _CallState:
    """Where the call path is: nesting depth of forward calls, the current pass, grad mode."""

    __slots__ = ("depth", "pass_id", "grad_enabled")

    def __init__(self) -> None:
        self.depth = 0
        self.pass_id = 0
        self.grad_enabled = True


CALL = _CallState()

_handle_ids = itertools.count()


class RemovableHandle:
    """Returned by every ``register_*`` function: ``handle.remove()`` unregisters the hook."""

    __slots__ = ("_hooks", "_key")

    def __init__(self, hooks: HookSet, key: int):
        self._hooks, self._key = hooks, key

    def remove(self) -> None:
        for table in self._hooks.tables():
            table.pop(self._key, None)
        self._hooks.refresh()

    def __enter__(self) -> RemovableHandle:
        return self

    def __exit__(self, *exc) -> None:
        self.remove()


class HookSet:
    """The four kinds of hooks of one module (or of all modules): dicts in registration order.
    ``active`` is one bool for the fast path: False while no hook is registered."""

    __slots__ = ("forward_pre", "forward", "backward_pre", "backward", "active")

    def __init__(self) -> None:
        self.forward_pre: dict[int, Callable] = {}
        self.forward: dict[int, Callable] = {}
        self.backward_pre: dict[int, Callable] = {}
        self.backward: dict[int, Callable] = {}
        self.active = False

    def tables(self) -> tuple[dict, ...]:
        return (self.forward_pre, self.forward, self.backward_pre, self.backward)

    def refresh(self) -> None:
        self.active = any(self.tables())

    def add(self, kind: str, hook: Callable) -> RemovableHandle:
        if not callable(hook):
            raise TypeError(f"register_{kind}_hook: expected a callable, got {type(hook).__name__}")
        key = next(_handle_ids)
        getattr(self, kind)[key] = hook
        self.active = True
        return RemovableHandle(self, key)


GLOBAL_HOOKS = HookSet()


def register_module_forward_pre_hook(hook: Callable) -> RemovableHandle:
    """Calls ``hook(module, args)`` before every module's forward (may return new args)."""
    return GLOBAL_HOOKS.add("forward_pre", hook)


def register_module_forward_hook(hook: Callable) -> RemovableHandle:
    """Calls ``hook(module, args, output)`` after every module's forward (may return a new
    output)."""
    return GLOBAL_HOOKS.add("forward", hook)


def register_module_backward_pre_hook(hook: Callable) -> RemovableHandle:
    """Calls ``hook(module, grad_output)`` before every module's backward (may return a new
    grad_output)."""
    return GLOBAL_HOOKS.add("backward_pre", hook)


def register_module_backward_hook(hook: Callable) -> RemovableHandle:
    """Calls ``hook(module, grad_input, grad_output)`` after every module's backward (may return
    a new grad_input)."""
    return GLOBAL_HOOKS.add("backward", hook)


def run_forward(module, hooks: HookSet | None, args: tuple, kwargs: dict):
    """``module.forward`` with the global hooks, then the module's own, around it."""
    sets = [h for h in (GLOBAL_HOOKS, hooks) if h is not None and h.active]
    for hs in sets:
        for hook in tuple(hs.forward_pre.values()):
            new = hook(module, args)
            if new is not None:
                args = new if isinstance(new, tuple) else (new,)
    out = module.forward(*args, **kwargs)
    for hs in sets:
        for hook in tuple(hs.forward.values()):
            new = hook(module, args, out)
            if new is not None:
                out = new
    return out


def run_backward(module, hooks: HookSet | None, fn: Callable, args: tuple, kwargs: dict):
    """A backward implementation ``fn`` (called with ``args``, the output gradient first) with
    the global hooks, then the module's own, around it."""
    sets = [h for h in (GLOBAL_HOOKS, hooks) if h is not None and h.active]
    grad_output = args[0] if args else None
    for hs in sets:
        for hook in tuple(hs.backward_pre.values()):
            new = hook(module, grad_output)
            if new is not None:
                grad_output = new
    if args:
        args = (grad_output, *args[1:])
    grad_input = fn(module, *args, **kwargs)
    for hs in sets:
        for hook in tuple(hs.backward.values()):
            new = hook(module, grad_input, grad_output)
            if new is not None:
                grad_input = new
    return grad_input


class _GradMode:
    """Context manager and decorator that sets gradient mode and restores it on exit."""

    enabled: bool

    def __enter__(self) -> None:
        self._previous = CALL.grad_enabled
        CALL.grad_enabled = self.enabled

    def __exit__(self, *exc) -> None:
        CALL.grad_enabled = self._previous

    def __call__(self, fn: Callable) -> Callable:
        @functools.wraps(fn)
        def wrapper(*args, **kwargs):
            with type(self)():
                return fn(*args, **kwargs)

        return wrapper


class no_grad(_GradMode):
    """Inference mode: forward saves nothing for backward (a context manager or a decorator).

    Saved activations are what makes training memory grow with depth and batch; under
    ``no_grad`` no module keeps any, and calling a module's ``backward`` afterwards raises a
    RuntimeError that says the forward ran under ``no_grad``. ``Trainer.predict`` and
    ``evaluate`` run under it.

    Example:
        >>> import numpy as np, nnframe as nf
        >>> model = nf.Sequential(nf.Dense(3, 2, rng=0), nf.ReLU())
        >>> with nf.no_grad():
        ...     y = model(np.ones((4, 3), dtype=np.float32))
        >>> nf.is_grad_enabled(), y.shape
        (True, (4, 2))
    """

    enabled = False


class enable_grad(_GradMode):
    """Switches saving for backward back on inside a ``no_grad`` block."""

    enabled = True


def is_grad_enabled() -> bool:
    """Whether forward calls save what backward needs (False inside ``no_grad``)."""
    return CALL.grad_enabled
