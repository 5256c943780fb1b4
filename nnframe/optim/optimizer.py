"""Optimizer base: parameter groups, lazily created per-parameter state, clipping, state_dict."""

from __future__ import annotations

import copy
from collections.abc import Iterable

import numpy as np

from nnframe.clip import clip_grad_norm_, clip_grad_value_
from nnframe.errors import check_hyper
from nnframe.parameter import Parameter


class Optimizer:
    """Base class of optimizers.

    A subclass passes its hyperparameters as ``defaults`` (validated in its constructor) and
    writes ``init_state(p, group)`` (the per-parameter state, created at the first step) and
    ``update(p, state, group)`` (one in-place update of ``p.data`` from ``p.grad``).

    Args:
        params: an iterable of Parameters, or of dicts ``{"params": [...], "lr": ...}`` (parameter
            groups, each overriding any default).
        defaults: the default value of every option.
        clip_norm: if set, ``step`` first clips the global gradient norm to this value.
        clip_value: if set, ``step`` first clamps every gradient element to ``[-v, v]``.

    Frozen parameters (``requires_grad=False``) are skipped by ``step``.
    """

    def __init__(
        self,
        params: Iterable,
        defaults: dict,
        *,
        clip_norm: float | None = None,
        clip_value: float | None = None,
    ):
        name = type(self).__name__
        if isinstance(params, Parameter):
            raise TypeError(f"{name}: expected an iterable of Parameters, got a single Parameter")
        params = list(params)
        if not params:
            raise ValueError(f"{name}: expected a non-empty list of parameters, got an empty one")
        if clip_norm is not None:
            check_hyper(name, "clip_norm", clip_norm, clip_norm > 0, "must be > 0")
        if clip_value is not None:
            check_hyper(name, "clip_value", clip_value, clip_value > 0, "must be > 0")
        self.defaults = dict(defaults)
        self.clip_norm = clip_norm
        self.clip_value = clip_value
        self.param_groups: list[dict] = []
        self.state: dict[Parameter, dict] = {}
        self.last_grad_norm: float | None = None
        groups = params if isinstance(params[0], dict) else [{"params": params}]
        for group in groups:
            self.add_param_group(group)

    def add_param_group(self, group: dict) -> None:
        """Adds a group of parameters with its own options (the others from ``defaults``)."""
        name = type(self).__name__
        params = group["params"]
        params = [params] if isinstance(params, Parameter) else list(params)
        for p in params:
            if not isinstance(p, Parameter):
                raise TypeError(f"{name}: expected Parameters, got {type(p).__name__}")
        seen = {id(p) for g in self.param_groups for p in g["params"]}
        if any(id(p) in seen for p in params):
            raise ValueError(f"{name}: a parameter appears in more than one parameter group")
        unknown = set(group) - set(self.defaults) - {"params"}
        if unknown:
            raise ValueError(f"{name}: unknown option(s) {sorted(unknown)} in a parameter group")
        full = {**self.defaults, **group, "params": params}
        self.validate(full)
        self.param_groups.append(full)

    def validate(self, group: dict) -> None:
        """Checks one group's hyperparameters; subclasses extend it (call super)."""
        lr = group.get("lr", 0.0)
        check_hyper(type(self).__name__, "lr", lr, lr >= 0, "must be >= 0")
        wd = group.get("weight_decay", 0.0)
        check_hyper(type(self).__name__, "weight_decay", wd, wd >= 0, "must be >= 0")

    def parameters(self) -> list[Parameter]:
        return [p for g in self.param_groups for p in g["params"]]

    def zero_grad(self) -> None:
        """Resets the gradient of every parameter this optimizer updates."""
        for group in self.param_groups:
            for p in group["params"]:
                p.grad.fill(0)

    def clip_gradients(self) -> float | None:
        """Applies ``clip_value`` and then ``clip_norm`` if set; returns the pre-clip norm."""
        params = self.parameters()
        if self.clip_value is not None:
            clip_grad_value_(params, self.clip_value)
        if self.clip_norm is not None:
            self.last_grad_norm = clip_grad_norm_(params, self.clip_norm)
            return self.last_grad_norm
        return None

    def step(self) -> None:
        """Clips (if asked), then updates every trainable parameter in place."""
        if self.clip_value is not None or self.clip_norm is not None:
            self.clip_gradients()
        state = self.state
        for group in self.param_groups:
            for p in group["params"]:
                if not p.requires_grad:
                    continue
                s = state.get(p)
                if s is None:
                    s = state[p] = self.init_state(p, group)
                self.update(p, s, group)

    def init_state(self, p: Parameter, group: dict) -> dict:
        return {}

    def update(self, p: Parameter, state: dict, group: dict) -> None:
        raise NotImplementedError(f"{type(self).__name__}.update is not implemented")

    # ------------------------------------------------------------------ state
    def state_dict(self) -> dict:
        """Options per group (parameters as indices) and per-parameter state, as copies."""
        index = {id(p): i for i, p in enumerate(self.parameters())}
        groups = [
            {
                **{k: v for k, v in g.items() if k != "params"},
                "params": [index[id(p)] for p in g["params"]],
            }
            for g in self.param_groups
        ]
        state = {index[id(p)]: copy.deepcopy(s) for p, s in self.state.items() if id(p) in index}
        return {"state": state, "param_groups": groups}

    def load_state_dict(self, state_dict: dict) -> None:
        """Restores options and per-parameter state saved by ``state_dict``."""
        name = type(self).__name__
        groups = state_dict["param_groups"]
        if len(groups) != len(self.param_groups) or any(
            len(g["params"]) != len(own["params"]) for g, own in zip(groups, self.param_groups)
        ):
            raise ValueError(
                f"{name}.load_state_dict: expected {len(self.param_groups)} group(s) of sizes "
                f"{[len(g['params']) for g in self.param_groups]}, got {len(groups)} of sizes "
                f"{[len(g['params']) for g in groups]}"
            )
        params = self.parameters()
        for g, own in zip(groups, self.param_groups):
            own.update({k: v for k, v in g.items() if k != "params"})
        self.state = {}
        for i, s in state_dict["state"].items():
            p = params[int(i)]
            self.state[p] = {
                k: (
                    np.array(v, dtype=p.data.dtype)
                    if isinstance(v, np.ndarray) and v.dtype.kind == "f"
                    else copy.deepcopy(v)
                )
                for k, v in s.items()
            }

    def __repr__(self) -> str:
        lines = [f"{type(self).__name__} ("]
        for i, g in enumerate(self.param_groups):
            lines.append(f"Parameter Group {i}")
            for k in sorted(g):
                if k != "params":
                    lines.append(f"    {k}: {g[k]}")
        return "\n".join(lines) + "\n)"
