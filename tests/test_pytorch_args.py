"""PyTorch's constructor arguments (issue 14): each new argument against PyTorch in float64, with
the same weights (outputs, input gradients and every parameter gradient), and through
``check_module``. The signatures themselves are compared in test_conformance_signatures.py."""

import numpy as np
import pytest

import nnframe as nf

CHECKED_MODULES = [
    nf.BatchNorm1d,
    nf.BatchNorm2d,
    nf.BatchNorm3d,
    nf.GroupNorm,
    nf.InstanceNorm1d,
    nf.InstanceNorm2d,
    nf.LayerNorm,
]

RTOL = 1e-7  # float64 on both sides: the same math up to summation order


def _allclose(name, ours, theirs, rtol=RTOL):
    ours, theirs = np.asarray(ours, dtype=np.float64), np.asarray(theirs, dtype=np.float64)
    assert ours.shape == theirs.shape, f"{name}: shape {ours.shape} != {theirs.shape}"
    scale = max(1.0, float(np.max(np.abs(theirs), initial=0.0)))
    np.testing.assert_allclose(ours, theirs, rtol=rtol, atol=rtol * scale, err_msg=name)


def parity(torch, ours, theirs, inputs, *, n_float=None, train=True, seed=0):
    """Runs both modules on the same inputs (floats get gradients) and the same random output
    gradients; compares outputs, input gradients and every parameter gradient by name."""
    ours = ours.to(np.float64)
    theirs = theirs.double()
    theirs.load_state_dict({k: torch.from_numpy(np.array(v)) for k, v in ours.state_dict().items()})
    ours.train(train)
    theirs.train(train)
    rng = np.random.default_rng(seed)
    inputs = tuple(inputs)
    t_in = []
    for a in inputs:
        t = torch.from_numpy(np.array(a))
        if t.is_floating_point():
            t.requires_grad_(True)
        t_in.append(t)
    out = ours(*inputs)
    t_out = theirs(*t_in)
    outs = out if isinstance(out, tuple) else (out,)
    t_outs = t_out if isinstance(t_out, tuple) else (t_out,)
    assert len(outs) == len(t_outs)
    grads = []
    for i, (o, t) in enumerate(zip(outs, t_outs)):
        if t.is_floating_point():
            _allclose(f"output {i}", o, t.detach().numpy())
            grads.append(rng.normal(size=o.shape))
        else:
            np.testing.assert_array_equal(o, t.numpy(), err_msg=f"output {i}")
            grads.append(None)
    ours.zero_grad()
    g_in = ours.backward(tuple(grads) if isinstance(out, tuple) else grads[0])
    g_in = g_in if isinstance(g_in, tuple) else (g_in,)
    pairs = [(t, torch.from_numpy(g)) for t, g in zip(t_outs, grads) if g is not None]
    torch.autograd.backward([t for t, _ in pairs], [g for _, g in pairs])
    for i, t in enumerate(t_in):
        if t.requires_grad:
            _allclose(f"grad of input {i}", g_in[i], t.grad.numpy())
    t_params = dict(theirs.named_parameters())
    for name, p in ours.named_parameters():
        assert name in t_params, f"{name} is not a PyTorch parameter"
        want = t_params[name].grad
        want = np.zeros(p.data.shape) if want is None else want.to_dense().numpy()
        _allclose(f"grad of {name}", p.grad, want)
    return out


# ---------------------------------------------------------------------- bias= on the norms
NORMS = [
    ("BatchNorm1d", (4,), (5, 4, 3)),
    ("BatchNorm2d", (3,), (4, 3, 2, 3)),
    ("BatchNorm3d", (2,), (3, 2, 2, 2, 3)),
    ("InstanceNorm1d", (3,), (2, 3, 5)),
    ("InstanceNorm2d", (3,), (2, 3, 3, 4)),
    ("GroupNorm", (2, 4), (3, 4, 5)),
    ("LayerNorm", ((3, 4),), (2, 3, 4)),
]


def _affine_kwargs(name):
    return {"elementwise_affine": True} if name == "LayerNorm" else {"affine": True}


@pytest.mark.parametrize("name, args, shape", NORMS)
@pytest.mark.parametrize("train", [True, False])
def test_norm_without_bias_matches_pytorch(name, args, shape, train):
    torch = pytest.importorskip("torch")
    kwargs = {**_affine_kwargs(name), "bias": False}
    ours = getattr(nf, name)(*args, **kwargs)
    theirs = getattr(torch.nn, name)(*args, **kwargs)
    assert ours.bias is None and theirs.bias is None
    rng = np.random.default_rng(1)
    ours.weight.data[...] = rng.normal(size=ours.weight.shape)
    if getattr(ours, "running_mean", None) is not None:
        ours.running_mean[...] = rng.normal(size=ours.running_mean.shape)
        ours.running_var[...] = rng.uniform(0.5, 2.0, size=ours.running_var.shape)
    x = rng.normal(size=shape) * 2 + 1
    parity(torch, ours, theirs, (x,), train=train)
    assert set(ours.state_dict()) == set(theirs.state_dict())


@pytest.mark.parametrize("name, args, shape", NORMS)
def test_norm_without_bias_gradcheck(name, args, shape):
    layer = getattr(nf, name)(*args, **_affine_kwargs(name), bias=False)
    layer.weight.data[...] = np.random.default_rng(2).normal(size=layer.weight.shape)
    nf.check_module(layer, np.random.default_rng(3).normal(size=shape), expected_shape=shape)
    assert "bias" not in dict(layer.named_parameters())


def test_norm_bias_must_be_a_bool():
    with pytest.raises(TypeError, match=r"BatchNorm1d: expected bias to be a bool, got 'no'"):
        nf.BatchNorm1d(3, bias="no")


def test_norm_device_and_dtype_in_pytorch_places():
    bn = nf.BatchNorm1d(3, 1e-5, 0.1, True, True, "cpu", np.float64)
    assert bn.weight.data.dtype == np.float64
    assert nf.GroupNorm(1, 2, 1e-5, True, None, None).weight.data.dtype == np.float32
    with pytest.raises(ValueError, match=r"GroupNorm: expected device None or 'cpu', got 'cuda'"):
        nf.GroupNorm(1, 2, device="cuda")
