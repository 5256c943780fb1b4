"""Finite-difference gradient checks for modules and losses: the same calls nnframe's own tests use.

``check_module`` runs a copy of the module in float64 and compares every gradient that
``backward`` produces (the input's and each trainable parameter's) with central differences of
the scalar ``L = sum(output * G)`` for a random ``G``. It also checks the output shape, that
neither the input nor ``G`` is mutated, that gradients *accumulate* (a second backward doubles
them), that frozen parameters receive nothing, and that the module can be shared: called twice
before two backwards in reverse order, each backward uses its own call's saved state. ``directional=True`` compares one random
directional derivative per tensor instead of every element: use it for large shapes.

Random layers (dropout) are handled by restoring every ``numpy.random.Generator`` found in the
module tree before each forward, so all evaluations see the same draws.

Example:
    >>> import numpy as np, nnframe as nf
    >>> x = np.random.default_rng(0).normal(size=(4, 3))
    >>> nf.check_module(nf.Dense(3, 2, rng=0), x)
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import numpy as np

from nnframe.core.errors import GradcheckError, fmt_shape
from nnframe.core.module import Module


def _as_tuple(value) -> tuple:
    return value if isinstance(value, tuple) else (value,)


def _is_float(a) -> bool:
    return isinstance(a, np.ndarray) and a.dtype.kind == "f"


def _to_float64(a):
    return a.astype(np.float64) if _is_float(a) else a


def _generators(obj) -> list[np.random.Generator]:
    """Every numpy Generator reachable through the attributes of obj and its sub-modules."""
    found, seen = [], set()

    def walk(o):
        if id(o) in seen:
            return
        seen.add(id(o))
        if isinstance(o, np.random.Generator):
            found.append(o)
        elif isinstance(o, (list, tuple)):
            for item in o:
                walk(item)
        elif isinstance(o, dict):
            for item in o.values():
                walk(item)
        elif hasattr(o, "__dict__") and not isinstance(o, (np.ndarray, type)):
            for item in vars(o).values():
                walk(item)

    walk(obj)
    return found


class _Frozen:
    """Restores the state of a set of generators, so repeated evaluations draw the same numbers."""

    def __init__(self, obj):
        self.generators = _generators(obj)
        self.states = [g.bit_generator.state for g in self.generators]

    def restore(self) -> None:
        for g, s in zip(self.generators, self.states):
            g.bit_generator.state = s


def _close(a: float, n: float, atol: float, rtol: float) -> bool:
    return abs(a - n) <= atol + rtol * max(abs(a), abs(n))


def _compare(
    who: str,
    tensor_name: str,
    tensor: np.ndarray,
    analytic: np.ndarray,
    objective: Callable[[], float],
    *,
    eps: float,
    atol: float,
    rtol: float,
    directional: bool,
    rng: np.random.Generator,
) -> None:
    """Central differences of ``objective`` w.r.t. ``tensor`` (perturbed in place, restored)."""
    if analytic is None or analytic.shape != tensor.shape:
        got = "None" if analytic is None else fmt_shape(analytic.shape)
        raise GradcheckError(
            f"{who}: expected the gradient of {tensor_name} to have shape "
            f"{fmt_shape(tensor.shape)}, got {got}"
        )
    if directional:
        v = rng.normal(size=tensor.shape)
        v /= np.linalg.norm(v) or 1.0
        base = tensor.copy()
        tensor[...] = base + eps * v
        plus = objective()
        tensor[...] = base - eps * v
        minus = objective()
        tensor[...] = base
        numeric = (plus - minus) / (2 * eps)
        exact = float(np.sum(analytic * v))
        if not _close(exact, numeric, atol, rtol):
            raise GradcheckError(
                f"{who}: directional derivative of {tensor_name} disagrees: "
                f"analytic {exact:.8g}, numeric {numeric:.8g}"
            )
        return
    flat = tensor.reshape(-1)  # a view: perturbing it perturbs the tensor
    if not np.shares_memory(flat, tensor):
        raise GradcheckError(f"{who}: {tensor_name} must be contiguous to be checked")
    for i in range(flat.size):
        old = flat[i]
        flat[i] = old + eps
        plus = objective()
        flat[i] = old - eps
        minus = objective()
        flat[i] = old
        numeric = (plus - minus) / (2 * eps)
        exact = float(analytic.reshape(-1)[i])
        if not _close(exact, numeric, atol, rtol):
            index = np.unravel_index(i, tensor.shape)
            raise GradcheckError(
                f"{who}: gradient of {tensor_name} at index {tuple(int(j) for j in index)} "
                f"disagrees: analytic {exact:.8g}, numeric {numeric:.8g}"
            )


def check_module(
    module,
    x,
    *,
    forward_kwargs: dict | None = None,
    expected_shape: tuple | None = None,
    directional: bool = False,
    eps: float = 1e-6,
    atol: float = 1e-6,
    rtol: float = 1e-5,
    seed: int = 0,
) -> None:
    """Checks ``module.backward`` against central differences, in float64, on a copy.

    Args:
        module: the Module to check (not modified: a float64 copy is checked).
        x: the input array, or a tuple of inputs for modules that take several. Integer inputs
            (indices) are passed through and not differentiated.
        forward_kwargs: extra keyword arguments for forward (masks, lengths).
        expected_shape: if given, the output shape (or tuple of shapes) that forward must return.
        directional: compare one random directional derivative per tensor (large shapes).
        eps, atol, rtol: the difference step and the tolerance ``atol + rtol * max(|a|, |n|)``.
        seed: seed of the random output gradient ``G`` and of the directions.

    Raises:
        GradcheckError: naming the module, the tensor, the index, the analytic and numeric values.
    """
    kwargs = forward_kwargs or {}
    m = copy.deepcopy(module).to(np.float64)
    who = f"check_module {module!r}".replace("\n", " ")
    xs: tuple[Any, ...] = tuple(
        _to_float64(np.asarray(a)) if a is not None else None for a in _as_tuple(x)
    )
    originals: list[Any] = [None if a is None else a.copy() for a in xs]
    frozen = _Frozen(m)
    rng = np.random.default_rng(seed)

    def run():
        frozen.restore()
        return m(*xs, **kwargs)

    out = run()
    outs = _as_tuple(out)
    if expected_shape is not None:
        shapes = tuple(getattr(o, "shape", None) for o in outs)
        want = expected_shape if isinstance(out, tuple) else (tuple(expected_shape),)
        if shapes != tuple(tuple(s) if s is not None else None for s in want):
            raise GradcheckError(f"{who}: expected output shape {want}, got {shapes}")
    gs = tuple(rng.normal(size=o.shape) if _is_float(o) else None for o in outs)
    g_copies: list[Any] = [None if g is None else g.copy() for g in gs]

    def objective() -> float:
        return float(sum(np.sum(o * g) for o, g in zip(_as_tuple(run()), gs) if g is not None))

    m.zero_grad()
    grad_arg = gs if isinstance(out, tuple) else gs[0]
    grads_in = _as_tuple(m.backward(grad_arg))
    for g, g0 in zip(gs, g_copies):
        if g is not None and not np.array_equal(g, g0):
            raise GradcheckError(f"{who}: backward mutated grad_output")
    for i, (a, a0) in enumerate(zip(xs, originals)):
        if a is not None and not np.array_equal(a, a0, equal_nan=True):
            raise GradcheckError(f"{who}: forward or backward mutated input {i}")
    params = [(name, p) for name, p in m.named_parameters()]
    first = {name: p.grad.copy() for name, p in params}

    opts: dict[str, Any] = dict(eps=eps, atol=atol, rtol=rtol, directional=directional, rng=rng)
    float_inputs = [i for i, a in enumerate(xs) if _is_float(a)]
    if len(grads_in) < len(float_inputs):
        raise GradcheckError(
            f"{who}: expected backward to return {len(xs)} input gradient(s), got {len(grads_in)}"
        )
    for i in float_inputs:
        name = "the input" if len(xs) == 1 else f"input {i}"
        _compare(who, name, xs[i], grads_in[i], objective, **opts)
    for name, p in params:
        if p.requires_grad:
            _compare(who, f"parameter {name!r}", p.data, first[name], objective, **opts)
        elif np.any(first[name]):
            raise GradcheckError(f"{who}: frozen parameter {name!r} received a gradient")

    # accumulation: a second forward/backward without zero_grad doubles every parameter gradient
    run()
    m.backward(grad_arg)
    for name, p in params:
        if not np.allclose(p.grad, 2 * first[name], atol=atol, rtol=rtol):
            raise GradcheckError(
                f"{who}: gradient of parameter {name!r} does not accumulate: a second backward "
                f"should double it (did backward assign instead of add?)"
            )
    _check_sharing(who, m, xs, kwargs, gs, frozen, params, atol, rtol)


def _check_sharing(who, m, xs, kwargs, gs, frozen, params, atol, rtol) -> None:
    """A module called twice before its two backwards (a shared layer) must give each call's
    backward that call's gradients: backward uses what *its* forward saved, not the latest."""
    xs2 = tuple(_other_input(a) for a in xs)
    gs2 = tuple(None if g is None else 0.5 * g[::-1].copy() for g in gs)

    def single(inputs, grads):
        frozen.restore()
        out = m(*inputs, **kwargs)
        m.zero_grad()
        g_in = _as_tuple(m.backward(grads if isinstance(out, tuple) else grads[0]))
        return g_in, {name: p.grad.copy() for name, p in params}

    in1, p1 = single(xs, gs)
    in2, p2 = single(xs2, gs2)
    twice = _CalledTwice(m, frozen)
    out, _ = twice((xs, xs2), kwargs)
    m.zero_grad()
    tup = isinstance(out, tuple)
    got1, got2 = twice.backward(tuple(g if tup else g[0] for g in (gs, gs2)))
    for want, got, call in ((in1, got1, "first"), (in2, got2, "second")):
        for i, (w, g) in enumerate(zip(want, got)):
            if _is_float(w) and not np.allclose(g, w, atol=atol, rtol=rtol):
                raise GradcheckError(
                    f"{who}: called twice, the {call} call's backward returned a wrong gradient for "
                    f"input {i}: backward must use what its own forward saved (save_for_backward), "
                    f"not attributes set by the latest forward"
                )
    for name, p in params:
        if p.requires_grad and not np.allclose(p.grad, p1[name] + p2[name], atol=atol, rtol=rtol):
            raise GradcheckError(
                f"{who}: called twice, parameter {name!r} did not get the sum of both calls' "
                f"gradients: backward must use what its own forward saved (save_for_backward)"
            )


class _CalledTwice(Module):
    """A user's module that calls ``module`` twice in its forward (a shared layer) and runs the
    two backwards in reverse order."""

    def __init__(self, module: Module, frozen: _Frozen):
        super().__init__()
        self.module, self.frozen = module, frozen

    def forward(self, inputs, kwargs):
        outs = []
        for xs in inputs:
            self.frozen.restore()
            outs.append(self.module(*xs, **kwargs))
        return tuple(outs)

    def backward(self, grad_output):
        g1, g2 = grad_output
        got2 = _as_tuple(self.module.backward(g2))  # the latest call first
        return _as_tuple(self.module.backward(g1)), got2


def _other_input(a):
    """A second, different input of the same kind: the batch rolled, floats also shifted."""
    if not isinstance(a, np.ndarray) or a.ndim == 0:
        return a
    b = np.roll(a, 1, axis=0) if a.shape[0] > 1 else a.copy()
    if _is_float(b):
        b = b * 1.25 + 0.125
    return b


def _cast_arrays(obj):
    """A deep copy of a loss with every floating array attribute in float64."""
    obj = copy.deepcopy(obj)
    for name, value in vars(obj).items():
        if _is_float(value):
            setattr(obj, name, value.astype(np.float64))
    return obj


def check_loss(
    loss,
    pred,
    target,
    *,
    sample_weight=None,
    directional: bool = False,
    eps: float = 1e-6,
    atol: float = 1e-6,
    rtol: float = 1e-5,
    seed: int = 0,
) -> None:
    """Checks ``loss.backward()`` (dL/dpred) against central differences, in float64, on a copy.

    For ``reduction='none'`` the loss returns an array ``l`` and the checked scalar is
    ``sum(l * G)`` for a random ``G`` passed to ``backward(G)``. A tuple ``pred`` (pair losses)
    expects a tuple of gradients from ``backward`` and checks each. Also checks that neither
    ``pred`` nor ``target`` is mutated and that a reduced loss is a Python float.

    Raises:
        GradcheckError: naming the loss, the index, the analytic and numeric values.
    """
    lossf = _cast_arrays(loss)
    who = f"check_loss {loss!r}"
    # a tuple pred (pair losses such as CosineEmbeddingLoss) is checked input by input
    preds = tuple(np.asarray(p, dtype=np.float64).copy() for p in _as_tuple(pred))
    pred = preds if isinstance(pred, tuple) else preds[0]
    target = _to_float64(np.asarray(target))
    preds0, target0 = [p.copy() for p in preds], target.copy()
    kwargs = (
        {} if sample_weight is None else {"sample_weight": _to_float64(np.asarray(sample_weight))}
    )
    rng = np.random.default_rng(seed)

    value = lossf(pred, target, **kwargs)
    if isinstance(value, np.ndarray):
        g = rng.normal(size=value.shape)
        analytic = lossf.backward(g)

        def objective() -> float:
            return float(np.sum(lossf(pred, target, **kwargs) * g))
    else:
        if not isinstance(value, float):
            raise GradcheckError(f"{who}: expected a float loss, got {type(value).__name__}")
        analytic = lossf.backward()

        def objective() -> float:
            return lossf(pred, target, **kwargs)

    unchanged = all(np.array_equal(p, p0) for p, p0 in zip(preds, preds0))
    if not (unchanged and np.array_equal(target, target0)):
        raise GradcheckError(f"{who}: the loss mutated pred or target")
    analytics = _as_tuple(analytic) if isinstance(pred, tuple) else (analytic,)
    if len(analytics) != len(preds):
        raise GradcheckError(
            f"{who}: expected backward to return {len(preds)} gradient(s), got {len(analytics)}"
        )
    for i, (p, a) in enumerate(zip(preds, analytics)):
        name = f"pred[{i}]" if isinstance(pred, tuple) else "pred"
        opts: dict[str, Any] = dict(atol=atol, rtol=rtol, directional=directional, rng=rng)
        _compare(who, name, p, a, objective, eps=eps, **opts)
