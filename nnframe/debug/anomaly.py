"""Anomaly mode: find the first layer where a NaN or Inf appears, forward or backward.

Off by default, and then it costs nothing. Switched on (a context manager,
:func:`detect_anomaly`, or :func:`set_detect_anomaly`), it registers global hooks
(:mod:`nnframe.hooks`) through which every module call checks its
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
    nnframe.core.errors.AnomalyError: Sequential[0] anomaly: the output of layer '0' Dense(...) holds 1 Inf (forward, step 1)
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from nnframe.core.backend import is_array
from nnframe.core.errors import AnomalyError
from nnframe.core.hooks import (
    CALL,
    register_module_backward_hook,
    register_module_backward_pre_hook,
    register_module_forward_hook,
    register_module_forward_pre_hook,
)

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
    """What anomaly mode tracks while on; its checks run as global hooks (nnframe.hooks)."""

    __slots__ = ("enabled", "step", "names", "first", "handles")

    def __init__(self) -> None:
        self.enabled = False
        self.step = 0
        self.names: dict[int, str] = {}
        self.first: Anomaly | None = None
        self.handles: list = []

    def switch(self, on: bool) -> None:
        for handle in self.handles:
            handle.remove()
        self.handles = []
        self.enabled = on
        if on:
            self.handles = [
                register_module_forward_pre_hook(self.before_forward),
                register_module_forward_hook(self.after_forward),
                register_module_backward_pre_hook(self.before_backward),
                register_module_backward_hook(self.after_backward),
            ]

    # ----------------------------------------------------------------- the hooks
    def before_forward(self, module, args) -> None:
        if CALL.depth == 1:  # the outermost call: a new step
            self.step += 1
        for a in args:
            self.check(module, a, "input", "forward")

    def after_forward(self, module, args, out) -> None:
        for o in out if isinstance(out, tuple) else (out,):
            self.check(module, o, "output", "forward")

    def before_backward(self, module, grad_output) -> None:
        # non-finite here and not caught before: it came from the loss
        self.check(module, grad_output, "incoming gradient", "backward")

    def after_backward(self, module, grad_input, grad_output) -> None:
        for g in grad_input if isinstance(grad_input, tuple) else (grad_input,):
            self.check(module, g, "input gradient", "backward")
        for name, p in module._own_parameters():
            self.check(module, p.grad, f"gradient of {name}", "backward")

    # ----------------------------------------------------------------- the check
    def check(self, module, value, what: str, phase: str) -> None:
        if not (isinstance(value, np.ndarray) or is_array(value)) or value.dtype.kind not in "fc":
            return
        if np.isfinite(value).all():
            return
        nan = int(np.isnan(value).sum())
        inf = int(value.size - nan - np.isfinite(value).sum())
        name = self.names.get(id(module))
        short = module._who()  # a container's repr spans lines: its class is enough
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
    STATE.names = {}
    if mode:
        if model is not None:
            for name, m in model.named_modules():
                STATE.names[id(m)] = name  # "" for the model itself
        STATE.step = 0
        STATE.first = None
    STATE.switch(bool(mode))


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
            STATE.switch(True)
            STATE.names = names
            STATE.step = step
