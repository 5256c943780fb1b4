"""Shared helpers of the conformance tests (unbatched inputs, empty batches): run an nnframe
layer or loss and its PyTorch counterpart on the same inputs and weights, and compare outputs
and every gradient. PyTorch is optional: the helpers that need it import it lazily."""

from __future__ import annotations

import numpy as np

import nnframe as nf

RTOL = 1e-7
ATOL = 1e-9
MAX_ERR = {"value": 0.0}  # the largest relative difference seen, for the report


def leaves(value) -> list:
    """The arrays of a nested value (tuples, lists), in order; None is skipped."""
    if value is None:
        return []
    if isinstance(value, (tuple, list)):
        return [a for v in value for a in leaves(v)]
    return [value]


def nest_map(fn, value):
    """``fn`` over every array of a nested value; None and non-arrays other than tuples stay."""
    if value is None:
        return None
    if isinstance(value, (tuple, list)):
        return tuple(nest_map(fn, v) for v in value)
    if isinstance(value, np.ndarray):
        return fn(value)
    return value


def is_float(a) -> bool:
    return isinstance(a, np.ndarray) and a.dtype.kind == "f"


def output_grads(out, seed: int):
    """A random output gradient nested like ``out`` (None for non-float outputs)."""
    rng = np.random.default_rng(seed)
    return nest_map(lambda o: rng.normal(size=o.shape) if is_float(o) else None, out)


def close(actual, desired, what: str) -> None:
    actual, desired = np.asarray(actual), np.asarray(desired)
    assert actual.shape == desired.shape, f"{what}: shape {actual.shape} != {desired.shape}"
    np.testing.assert_allclose(actual, desired, rtol=RTOL, atol=ATOL, err_msg=what)
    if actual.size:
        finite = np.isfinite(desired)
        diff = np.abs(actual - desired)[finite]
        scale = np.maximum(np.abs(desired[finite]), 1e-3)
        if diff.size:
            MAX_ERR["value"] = max(MAX_ERR["value"], float((diff / scale).max()))


def run_nf(layer, args, kwargs, seed: int = 0):
    """(output, input gradients, parameter gradients) of one forward and backward."""
    layer.zero_grad()
    out = layer(*args, **kwargs)
    g = output_grads(out, seed)
    grads = layer.backward(g)
    params = {name: p.grad.copy() for name, p in layer.named_parameters()}
    return out, g, grads, params


def to_torch(value, grad: bool = True):
    import torch

    def conv(a):
        t = torch.from_numpy(np.array(a))
        if grad and a.dtype.kind == "f":
            t.requires_grad_(True)
        return t

    if value is None:
        return None
    if isinstance(value, (tuple, list)):
        return tuple(to_torch(v, grad) for v in value)
    if isinstance(value, np.ndarray):
        return conv(value)
    return value


def run_torch(module, args, kwargs, g):
    """PyTorch's output, input gradients (leaves of the float inputs, in order) and parameter
    gradients for output gradient ``g`` (nested like the output)."""
    import torch

    targs = to_torch(args)
    tkwargs = {k: to_torch(v, grad=False) for k, v in kwargs.items()}
    out = module(*targs, **tkwargs)
    total = sum(
        (o * torch.from_numpy(gg)).sum()
        for o, gg in zip(leaves(out), leaves(nest_map(lambda a: a, g)))
        if gg is not None and o.requires_grad
    )
    inputs = [t for t in leaves(targs) if t.dtype.is_floating_point]
    if isinstance(total, torch.Tensor):
        total.backward()
    grads = [np.zeros(t.shape) if t.grad is None else t.grad.numpy() for t in inputs]
    params = {
        n: (np.zeros(tuple(p.shape)) if p.grad is None else p.grad.numpy())
        for n, p in module.named_parameters()
    }
    out = nest_map(lambda a: a, _detach(out))
    return out, grads, params


def _detach(value):
    if value is None:
        return None
    if isinstance(value, (tuple, list)):
        return tuple(_detach(v) for v in value)
    return value.detach().numpy()


def load_weights(theirs, ours) -> None:
    """Gives the PyTorch module nnframe's weights (the names match)."""
    import torch

    state = {k: torch.from_numpy(np.array(v)) for k, v in ours.state_dict().items()}
    theirs.load_state_dict(state, strict=True)


def assert_parity(ours, theirs, args, kwargs=None, seed: int = 0) -> None:
    """Same outputs, input gradients and parameter gradients as PyTorch (float64)."""
    kwargs = kwargs or {}
    load_weights(theirs, ours)
    out, g, grads, params = run_nf(ours, args, kwargs, seed)
    t_out, t_grads, t_params = run_torch(theirs, args, kwargs, g)
    for i, (a, b) in enumerate(zip(leaves(out), leaves(t_out))):
        close(a, b, f"output {i}")
    assert len(leaves(out)) == len(leaves(t_out))
    float_args = [a for a in leaves(args) if is_float(a)]
    ours_in = leaves(grads)
    assert len(ours_in) == len(float_args), f"{len(ours_in)} input gradients for {len(float_args)}"
    for i, (a, b) in enumerate(zip(ours_in, t_grads)):
        close(a, b, f"input gradient {i}")
    for name, value in params.items():
        close(value, t_params[name], f"gradient of {name}")


def as_float64(layer):
    return layer.to(np.float64)


def expand(value, axes):
    """Adds a batch axis of size 1 to every array of ``value`` at ``axes`` (nested like it)."""
    if value is None or axes is None:
        return value
    if isinstance(value, (tuple, list)):
        if isinstance(axes, tuple):
            return tuple(expand(v, a) for v, a in zip(value, axes))
        return tuple(expand(v, axes) for v in value)
    return np.expand_dims(value, axes) if isinstance(value, np.ndarray) else value


def squeeze(value, axes):
    if value is None or axes is None:
        return value
    if isinstance(value, (tuple, list)):
        if isinstance(axes, tuple):
            return tuple(squeeze(v, a) for v, a in zip(value, axes))
        return tuple(squeeze(v, axes) for v in value)
    return np.squeeze(value, axes) if isinstance(value, np.ndarray) else value


def torch_loss_call(loss, pred, target):
    """PyTorch's loss value and dL/dpred (a tuple for pair losses) for nnframe's pred form."""
    import torch

    pair = isinstance(pred, tuple)
    tp = tuple(to_torch(p) for p in pred) if pair else (to_torch(pred),)
    tt = torch.from_numpy(np.array(target))
    value = loss(*tp, tt)
    return value, tp


def nf_loss_grads(loss, pred, target, reduction: str, seed: int = 0):
    value = loss(pred, target)
    g = None
    if reduction == "none":
        g = np.random.default_rng(seed).normal(size=np.shape(value))
    return value, g, loss.backward(g)


def assert_loss_parity(ours, theirs, pred, target, reduction: str, seed: int = 0) -> None:
    import torch

    value, g, grads = nf_loss_grads(ours, pred, target, reduction, seed)
    t_value, t_pred = torch_loss_call(theirs, pred, target)
    close(np.asarray(value), t_value.detach().numpy(), "loss")
    if t_value.requires_grad:
        (
            t_value * (torch.tensor(1.0, dtype=torch.float64) if g is None else torch.from_numpy(g))
        ).sum().backward()
    grads = grads if isinstance(grads, tuple) else (grads,)
    for i, (a, t) in enumerate(zip(grads, t_pred)):
        b = np.zeros(t.shape) if t.grad is None else t.grad.numpy()
        close(a, b, f"dL/dpred {i}")


def nf_module_names() -> list[str]:
    return [n for n in nf.__all__ if isinstance(getattr(nf, n), type)]
