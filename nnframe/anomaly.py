"""Anomaly mode: find the first layer where a NaN or Inf appears, forward or backward.

Off by default, and then it costs one boolean test per layer call. Switched on (a context
manager, :func:`detect_anomaly`, or :func:`set_detect_anomaly`), every module call checks its
inputs and its output, and every module's ``backward`` checks the gradient it returns and the
gradients of its parameters. The first non-finite value raises :class:`AnomalyError` naming the
layer (its dotted name when the model was given, else its repr, with its container positions),
what was checked, and the step.

The step counts the outermost forward calls since the mode was switched on (1 = the first one),
so in a training loop with one forward per batch it is the batch index, counting from 1; fit
and other loops can set it with :func:`set_step`.

Example:
    >>> import numpy as np, nnframe as nf
    >>> model = nf.Sequential(nf.Dense(2, 2, rng=0), nf.Tanh())
    >>> model[0].weight.data[0, 0] = np.inf
    >>> with nf.detect_anomaly(model):
    ...     model(np.ones((1, 2), dtype=np.float32))  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    nnframe.errors.AnomalyError: Sequential[0] anomaly: the output of layer '0' Dense(...) holds 1 Inf (forward, step 1)
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from nnframe.errors import AnomalyError

__all__ = ["detect_anomaly", "set_detect_anomaly", "set_step", "Anomaly", "STATE"]


@dataclass(frozen=True)
class Anomaly:
    """Where the first non-finite value appeared."""

    layer: str  # the dotted name in the model given to detect_anomaly ("" for the model
    # itself), or the layer's repr
    what: str  # "input", "output", "incoming gradient", "input gradient", "gradient of <name>"
    phase: str  # "forward" or "backward"
    step: int
    nan: int
    inf: int


class _State:
    """The switch read by ``Module.__call__`` and what anomaly mode tracks while on."""

    __slots__ = ("enabled", "step", "depth", "names", "wrapped", "first")

    def __init__(self) -> None:
        self.enabled = False
        self.step = 0
        self.depth = 0
        self.names: dict[int, str] = {}
        self.wrapped: dict[int, object] = {}
        self.first: Anomaly | None = None

    # ----------------------------------------------------------------- forward (Module.__call__)
    def call(self, module, args, kwargs):
        if self.depth == 0:
            self.step += 1
        self._wrap_backward(module)
        for a in args:
            self.check(module, a, "input", "forward")
        self.depth += 1
        try:
            out = module.forward(*args, **kwargs)
        finally:
            self.depth -= 1
        for o in out if isinstance(out, tuple) else (out,):
            self.check(module, o, "output", "forward")
        return out

    # ----------------------------------------------------------------- backward
    def _wrap_backward(self, module) -> None:
        """Shadows ``module.backward`` with a checking version (an instance attribute, removed
        when the mode is switched off), so containers need no hook of their own."""
        if id(module) in self.wrapped or "backward" in module.__dict__:
            return
        original = module.backward

        def backward(grad_output, *args, **kwargs):
            if self.enabled:  # non-finite here and not caught before: it came from the loss
                self.check(module, grad_output, "incoming gradient", "backward")
            grad = original(grad_output, *args, **kwargs)
            if self.enabled:
                for g in grad if isinstance(grad, tuple) else (grad,):
                    self.check(module, g, "input gradient", "backward")
                for name, p in module._own_parameters():
                    self.check(module, p.grad, f"gradient of {name}", "backward")
            return grad

        module.__dict__["backward"] = backward
        self.wrapped[id(module)] = module

    def unwrap_all(self) -> None:
        for module in self.wrapped.values():
            module.__dict__.pop("backward", None)
        self.wrapped = {}

    # ----------------------------------------------------------------- the check
    def check(self, module, value, what: str, phase: str) -> None:
        if not isinstance(value, np.ndarray) or value.dtype.kind not in "fc":
            return
        if np.isfinite(value).all():
            return
        nan = int(np.isnan(value).sum())
        inf = int(value.size - nan - np.isfinite(value).sum())
        name = self.names.get(id(module))
        # a container's repr spans lines: its class is enough (its children are named apart)
        short = f"{type(module).__name__}(...)" if module.children() else repr(module)
        if name == "":
            layer = f"model {short}"
        else:
            layer = f"layer {name!r} {short}" if name is not None else f"layer {short}"
        counts = " and ".join(f"{n} {label}" for n, label in ((nan, "NaN"), (inf, "Inf")) if n)
        self.first = Anomaly(short if name is None else name, what, phase, self.step, nan, inf)
        raise AnomalyError(
            f"anomaly: the {what} of {layer} holds {counts} ({phase}, step {self.step})"
        )


STATE = _State()


def set_step(step: int) -> None:
    """Sets the step counter: the next outermost forward call counts as ``step + 1``."""
    STATE.step = int(step)


def set_detect_anomaly(mode: bool, model=None) -> None:
    """Switches anomaly mode on or off. ``model`` (optional) gives layers their dotted names
    in messages. Switching on resets the step counter."""
    if mode:
        STATE.unwrap_all()
        STATE.names = {}
        if model is not None:
            for name, m in model.named_modules():
                STATE.names[id(m)] = name  # "" for the model itself
                STATE._wrap_backward(m)
        STATE.step = 0
        STATE.depth = 0
        STATE.first = None
        STATE.enabled = True
    else:
        STATE.enabled = False
        STATE.unwrap_all()
        STATE.names = {}


class detect_anomaly:
    """Context manager: anomaly mode inside the ``with`` block (see the module docstring).

    Args:
        model: optional; its layers are named by their dotted names (``'2.0'``) in messages.

    After the block, ``.anomaly`` holds the first :class:`Anomaly` found (or None).
    """

    def __init__(self, model=None):
        self.model = model
        self.anomaly: Anomaly | None = None
        self._previous = None

    def __enter__(self) -> detect_anomaly:
        self._previous = (STATE.enabled, STATE.step, dict(STATE.names))
        set_detect_anomaly(True, self.model)
        return self

    def __exit__(self, *exc) -> None:
        self.anomaly = STATE.first
        set_detect_anomaly(False)
        enabled, step, names = self._previous
        if enabled:  # nested use: the outer block's mode goes on
            STATE.names = names
            STATE.step = step
            STATE.enabled = True
