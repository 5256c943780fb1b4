"""The device fast paths: fused element-wise kernels (nnframe.core.backend.elementwise) of the
recurrent layers and the optimizers, the stepped GEMM, and gradient norms read once.

On a GPU an LSTM or GRU step is one kernel forward and one backward, and an SGD or Adam update
one kernel, instead of a dozen numpy calls each. CI has no GPU: the CPU stand-in
(tests/standin.py) reads each kernel's C body as numpy, so these tests run the kernel path (its
arguments, offsets and step order) and compare it with the numpy path in float64;
tests/test_gpu.py compares the compiled kernels on a real GPU.
"""

import numpy as np
import pytest

import nnframe as nf
from nnframe.core import backend
from nnframe.layers import recurrent
from nnframe.optim import adam, sgd

CHECKED_MODULES: list = []  # the kernel path against the numpy path, not gradient checks


@pytest.fixture
def launched(on_fake_device, monkeypatch):
    """The names of the kernels the layers and optimizers launch (on the stand-in device)."""
    names: set[str] = set()

    def spy(xp, spec, dtype):
        kernel = backend.elementwise(xp, spec, dtype)

        def run(*args, **kwargs):
            names.add(spec.name)
            return kernel(*args, **kwargs)

        return None if kernel is None else run

    for module in (recurrent, sgd, adam):
        monkeypatch.setattr(module, "elementwise", spy)
    return names


def _run(make, device, x, grads):
    model = make().to(device, np.float64)
    move = (lambda a: nf.to_device(a, device)) if device != "cpu" else (lambda a: a)
    out, state = model(move(x))
    g_out, g_state = grads(out, state)
    dx = model.backward((None if g_out is None else move(g_out), nf.to_device(g_state, device)))
    arrays = [out, *(state if isinstance(state, tuple) else (state,)), dx]
    arrays += [p.grad for p in model.parameters()]
    return [backend.to_numpy(a) for a in arrays]


def _output_grads(out, state):
    rng = np.random.default_rng(1)
    shaped = tuple(
        rng.normal(size=s.shape) for s in (state if isinstance(state, tuple) else (state,))
    )
    return rng.normal(size=out.shape), shaped if isinstance(state, tuple) else shaped[0]


def _state_grads_only(out, state):
    _, g_state = _output_grads(out, state)
    return None, g_state


@pytest.mark.parametrize("grads", [_output_grads, _state_grads_only], ids=["dout", "no dout"])
@pytest.mark.parametrize(
    "make, kernels",
    [
        (lambda: nf.LSTM(3, 5, batch_first=True, rng=0), {"lstm_step_own", "lstm_step_back"}),
        (
            lambda: nf.LSTM(3, 5, num_layers=2, bidirectional=True, rng=0),
            {"lstm_step", "lstm_step_back"},
        ),
        (lambda: nf.GRU(3, 5, batch_first=True, rng=0), {"gru_step", "gru_step_back"}),
        (
            lambda: nf.GRU(3, 5, num_layers=2, bidirectional=True, bias=False, rng=0),
            {"gru_step", "gru_step_back"},
        ),
    ],
    ids=["LSTM", "LSTM(2 layers, bidirectional)", "GRU", "GRU(2 layers, bidirectional, no bias)"],
)
def test_recurrent_kernels_give_the_numpy_numbers(launched, make, kernels, grads):
    x = np.random.default_rng(0).normal(size=(4, 6, 3))
    want = _run(make, "cpu", x, grads)
    assert not launched  # numpy: no kernels
    got = _run(make, "cuda", x, grads)
    with_dout = grads is _output_grads
    expected = {k + "_out" if "back" in k and with_dout else k for k in kernels}
    assert expected <= launched, launched
    for i, (a, b) in enumerate(zip(want, got)):
        np.testing.assert_allclose(b, a, rtol=1e-12, atol=1e-12, err_msg=f"array {i}")


def test_packed_sequences_keep_the_array_path(launched):
    """Masked steps (per-sequence lengths) run the array code on a device: no kernel."""
    model = nf.LSTM(3, 4, batch_first=True, rng=0).to("cuda")
    x = nf.to_device(np.ones((2, 5, 3), np.float32), "cuda")
    out, _ = model(x, lengths=np.array([5, 3]))
    model.backward((nf.to_device(np.ones(out.shape, np.float32), "cuda"), None))
    assert not launched


@pytest.mark.parametrize(
    "make, kernel",
    [
        (lambda ps: nf.optim.SGD(ps, lr=0.1), "sgd_step"),
        (lambda ps: nf.optim.SGD(ps, lr=0.1, weight_decay=0.01, maximize=True), "sgd_step"),
        (lambda ps: nf.optim.SGD(ps, lr=0.1, momentum=0.9, dampening=0.2), "sgd_step_momentum"),
        (
            lambda ps: nf.optim.SGD(ps, lr=0.1, momentum=0.9, nesterov=True, weight_decay=0.1),
            "sgd_step_momentum_nesterov",
        ),
        (lambda ps: nf.optim.Adam(ps, lr=0.01), "adam_step"),
        (lambda ps: nf.optim.Adam(ps, lr=0.01, weight_decay=0.1, maximize=True), "adam_step"),
        (lambda ps: nf.optim.AdamW(ps, lr=0.01, weight_decay=0.1), "adam_step"),
    ],
    ids=[
        "SGD",
        "SGD(wd, maximize)",
        "SGD(momentum, dampening)",
        "SGD(nesterov, wd)",
        "Adam",
        "Adam(wd, maximize)",
        "AdamW",
    ],  # fmt: skip
)
def test_optimizer_kernels_give_the_numpy_numbers(launched, make, kernel):
    """Three steps (the first momentum step differs) on two parameters, float64."""
    rng = np.random.default_rng(0)
    values = [rng.normal(size=(3, 4)), rng.normal(size=(5,))]
    grads = [[rng.normal(size=v.shape) for v in values] for _ in range(3)]

    def run(device):
        params = [nf.Parameter(nf.to_device(v.copy(), device)) for v in values]
        opt = make(params)
        for step in grads:
            for p, g in zip(params, step):
                p.grad[...] = nf.to_device(g, device)
            opt.step()
        return [backend.to_numpy(p.data) for p in params]

    want = run("cpu")
    assert not launched
    got = run("cuda")
    assert kernel in launched, launched
    for a, b in zip(want, got):
        np.testing.assert_allclose(b, a, rtol=1e-12, atol=1e-14)


def test_stepped_matmul_gives_matmuls_numbers(on_fake_device):
    """out[j] = a @ b[i] for a column block of a wider matrix and row blocks of a stack (the
    layouts the recurrent layers use), on numpy and on the stand-in device."""
    rng = np.random.default_rng(0)
    wide, b = rng.normal(size=(5, 9)), rng.normal(size=(4, 12, 6))
    for move in (lambda a: a, lambda a: nf.to_device(a, "cuda")):
        out = move(np.zeros((3, 5, 6)))
        backend.stepped_matmul(move(wide)[:, 2:], move(b)[:, 5:], out)(3, 1)
        got = backend.to_numpy(out)
        np.testing.assert_allclose(got[1], wide[:, 2:] @ b[3, 5:], rtol=1e-13)
        assert not got[[0, 2]].any()


@pytest.mark.parametrize("norm_type", [2.0, 1.0, 3.0, float("inf")])
def test_gradient_norms_on_a_device_match_the_host(on_fake_device, norm_type):
    """clip_grad_norm_ on device gradients combines the per-array terms there (one wait for
    the device) and gives the host's norm and clipped gradients."""
    rng = np.random.default_rng(0)
    grads = [rng.normal(size=(4, 3)), rng.normal(size=(5,)), np.zeros((0, 2))]

    def clip(device):
        params = [nf.Parameter(nf.to_device(np.zeros_like(g), device)) for g in grads]
        for p, g in zip(params, grads):
            p.grad[...] = nf.to_device(g, device)
        norm = nf.clip_grad_norm_(params, max_norm=0.5, norm_type=norm_type)
        return norm, [backend.to_numpy(p.grad) for p in params]

    (want, want_grads), (got, got_grads) = clip("cpu"), clip("cuda")
    assert got == pytest.approx(want, rel=1e-14)
    for a, b in zip(want_grads, got_grads):
        np.testing.assert_allclose(b, a, rtol=1e-14)


def test_float16_keeps_the_array_path(launched):
    """The kernels are written for float32 and float64: a float16 model runs the array code."""
    model = nf.GRU(3, 4, rng=0).to("cuda", np.float16)
    out, _ = model(nf.to_device(np.ones((2, 5, 3), np.float16), "cuda"))
    model.backward((nf.to_device(np.ones(out.shape, np.float16), "cuda"), None))
    assert out.dtype == np.float16 and not launched
