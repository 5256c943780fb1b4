"""The recurrent layers' fast paths against PyTorch in float64.

The LSTM runs each step as one GEMM over the stacked ``[h; x; 1]``, skips the first step's
recurrent product when no initial state is given, keeps every step's gate gradients only when
dL/dx is needed, and returns its sequence output as a transposed view of an array of its own.
Each of these paths is compared with PyTorch here: with and without initial states (zero or
not), gradients of the initial states, one step, a batch of one, an empty batch, both
directions, several layers, projections, lengths, no biases, and outputs written to in place.
"""

import numpy as np
import pytest

import nnframe as nf

torch = pytest.importorskip("torch")

from tests.test_recurrent import _torch_run  # noqa: E402  (after the skip: needs torch)

ATOL = 1e-10


def _pair(kind, f, h, rng_seed=1, **config):
    """The same layer in nnframe and PyTorch, float64, with nnframe's initial weights."""
    ours = getattr(nf, kind)(f, h, rng=rng_seed, **config).to(np.float64)
    theirs = getattr(torch.nn, kind)(f, h, **config).double()
    theirs.load_state_dict({k: torch.tensor(v) for k, v in ours.state_dict().items()})
    return ours, theirs


def _states(kind, state):
    return tuple(state) if kind == "LSTM" else (state,)


def check_parity(
    kind,
    *,
    n=3,
    t=4,
    f=3,
    h=5,
    init="random",
    lengths=None,
    needs_input_grad=True,
    grad_out=True,
    grad_state=True,
    mutate_output=False,
    seed=0,
    **config,
):
    """Forward and backward of nnframe's layer against PyTorch's: outputs, final states, dL/dx,
    dL/d(initial states) when given, and every parameter gradient.

    init: "none" (no initial state: the zero-state fast path), "zeros" (zeros given
    explicitly) or "random". mutate_output: write to nnframe's output in place between forward
    and backward (the saved state must not share its memory)."""
    rng = np.random.default_rng(seed)
    config.setdefault("batch_first", True)  # nnframe's default; PyTorch's is False
    batch_first = config["batch_first"]
    ours, theirs = _pair(kind, f, h, **config)
    ours.needs_input_grad = needs_input_grad
    layers = config.get("num_layers", 1) * (2 if config.get("bidirectional") else 1)
    h_out = config.get("proj_size") or h
    x = rng.normal(size=(n, t, f) if batch_first else (t, n, f))
    hx = hxt = h0t = c0t = None
    if init != "none":
        make = np.zeros if init == "zeros" else (lambda shape: rng.normal(size=shape))
        h0, c0 = make((layers, n, h_out)), make((layers, n, h))
        h0t = torch.tensor(h0, requires_grad=True)
        c0t = torch.tensor(c0, requires_grad=True)
        hx = (h0, c0) if kind == "LSTM" else h0
        hxt = (h0t, c0t) if kind == "LSTM" else h0t

    out, state = ours(x, hx, lengths=lengths)
    xt, out_t, state_t = _torch_run(torch, theirs, x, hxt, lengths, batch_first)
    np.testing.assert_allclose(out, out_t.detach().numpy(), atol=ATOL)
    assert out.shape == tuple(out_t.shape)
    for a, b in zip(_states(kind, state), _states(kind, state_t)):
        np.testing.assert_allclose(a, b.detach().numpy(), atol=ATOL)

    g_out = rng.normal(size=out.shape) if grad_out else None
    g_states = [rng.normal(size=s.shape) for s in _states(kind, state)] if grad_state else None
    loss = out_t.sum() * 0
    if g_out is not None:
        loss = loss + (out_t * torch.tensor(g_out)).sum()
    if g_states is not None:
        for s, g in zip(_states(kind, state_t), g_states):
            loss = loss + (s * torch.tensor(g)).sum()
    loss.backward()
    if mutate_output:
        out *= 7.0  # a caller's in-place write: the saved state must not see it
        out[...] = -3.0
    if g_states is None:
        grad_state_arg = None
    else:
        grad_state_arg = tuple(g_states) if kind == "LSTM" else g_states[0]
    result = ours.backward((g_out, grad_state_arg))
    if init == "none":
        gx = result
    else:
        gx, g_init = result
        g_init = _states(kind, g_init)
        np.testing.assert_allclose(g_init[0], h0t.grad.numpy(), atol=ATOL)
        if kind == "LSTM":
            np.testing.assert_allclose(g_init[1], c0t.grad.numpy(), atol=ATOL)
    if needs_input_grad:
        np.testing.assert_allclose(gx, xt.grad.numpy(), atol=ATOL)
        assert gx.shape == x.shape
    else:
        assert gx is None
    torch_grads = dict(theirs.named_parameters())
    for name, p in ours.named_parameters():
        expected = torch_grads[name].grad
        expected = np.zeros(p.shape) if expected is None else expected.numpy()
        np.testing.assert_allclose(p.grad, expected, atol=ATOL, err_msg=name)


INITS = ["none", "zeros", "random"]


@pytest.mark.parametrize("init", INITS)
@pytest.mark.parametrize(
    "config",
    [
        dict(),
        dict(bidirectional=True),
        dict(num_layers=2, bidirectional=True, batch_first=False),
        dict(proj_size=2),
        dict(proj_size=3, bidirectional=True, num_layers=2),
        dict(bias=False),
        dict(bias=False, bidirectional=True),
    ],
)
def test_lstm_matches_torch_with_and_without_initial_state(init, config):
    check_parity("LSTM", init=init, **config)


@pytest.mark.parametrize("init", INITS)
@pytest.mark.parametrize("lengths", [[4, 1, 3], [1, 4, 2], [4, 4, 4]])
@pytest.mark.parametrize("bidirectional", [False, True])
def test_lstm_lengths_match_torch(init, lengths, bidirectional):
    check_parity("LSTM", init=init, lengths=lengths, bidirectional=bidirectional)


@pytest.mark.parametrize("kind", ["LSTM", "GRU", "RNN"])
@pytest.mark.parametrize("init", INITS)
@pytest.mark.parametrize(("n", "t"), [(1, 1), (3, 1), (1, 5), (0, 3), (0, 1)])
def test_one_step_batch_of_one_and_empty_batch(kind, init, n, t):
    check_parity(kind, n=n, t=t, init=init, bidirectional=True)
    check_parity(kind, n=n, t=t, init=init, num_layers=2)


@pytest.mark.parametrize("init", ["none", "random"])
@pytest.mark.parametrize("grads", [(True, False), (False, True), (True, True)])
@pytest.mark.parametrize("bidirectional", [False, True])
def test_lstm_without_input_gradient(init, grads, bidirectional):
    """needs_input_grad False: backward keeps no per-step gate gradients, weights still right."""
    grad_out, grad_state = grads
    check_parity(
        "LSTM", init=init, needs_input_grad=False, grad_out=grad_out, grad_state=grad_state,
        bidirectional=bidirectional,
    )  # fmt: skip


@pytest.mark.parametrize("kind", ["LSTM", "GRU", "RNN"])
@pytest.mark.parametrize(
    "config",
    [dict(), dict(bidirectional=True), dict(batch_first=False), dict(lengths=[2, 4, 1])],
)
def test_writing_to_the_output_leaves_backward_intact(kind, config):
    check_parity(kind, mutate_output=True, init="none", **config)
    check_parity(kind, mutate_output=True, init="random", **config)


@pytest.mark.parametrize("kind", ["LSTM", "GRU", "RNN"])
@pytest.mark.parametrize("batch_first", [True, False])
def test_output_is_a_view_of_its_own_array(kind, batch_first):
    """The output, like PyTorch's batch_first output, may be a transposed view; it shares no
    memory with the inputs, the returned states, or another call's output."""
    layer = getattr(nf, kind)(3, 4, batch_first=batch_first, rng=0)
    x = np.ones((2, 5, 3), dtype=np.float32)
    out, state = layer(x)
    out2, _ = layer(x)
    for s in _states(kind, state):
        assert not np.shares_memory(out, s)
    assert not np.shares_memory(out, out2)
    assert not np.shares_memory(out, x)
    np.testing.assert_array_equal(out, out2)
    layer.backward(np.ones_like(out2))
    layer.backward(np.ones_like(out))


def test_lstm_two_calls_before_backward_keep_their_own_state():
    """Two forwards, then their backwards in reverse order: the parameter gradients are the sum
    of the two calls' gradients, each computed from its own saved state (PyTorch as reference)."""
    rng = np.random.default_rng(7)
    ours, theirs = _pair("LSTM", 3, 4, batch_first=True)
    x1, x2 = rng.normal(size=(2, 5, 3)), rng.normal(size=(3, 2, 3))
    h0 = rng.normal(size=(1, 3, 4)), rng.normal(size=(1, 3, 4))
    out1, (h1, c1) = ours(x1)
    out2, (h2, c2) = ours(x2, h0)
    g1, g2 = rng.normal(size=out1.shape), rng.normal(size=h2.shape)
    gx2, (gh0, gc0) = ours.backward((None, (g2, None)))
    gx1 = ours.backward(g1)

    x1t, x2t = torch.tensor(x1, requires_grad=True), torch.tensor(x2, requires_grad=True)
    h0t = tuple(torch.tensor(a, requires_grad=True) for a in h0)
    out1t, _ = theirs(x1t)
    _, (h2t, _) = theirs(x2t, h0t)
    ((out1t * torch.tensor(g1)).sum() + (h2t * torch.tensor(g2)).sum()).backward()
    np.testing.assert_allclose(gx1, x1t.grad.numpy(), atol=ATOL)
    np.testing.assert_allclose(gx2, x2t.grad.numpy(), atol=ATOL)
    np.testing.assert_allclose(gh0, h0t[0].grad.numpy(), atol=ATOL)
    np.testing.assert_allclose(gc0, h0t[1].grad.numpy(), atol=ATOL)
    for name, p in theirs.named_parameters():
        np.testing.assert_allclose(getattr(ours, name).grad, p.grad.numpy(), atol=ATOL)


def test_lstm_float32_matches_float64_closely():
    """The float32 fast path (the benchmarks' dtype) agrees with the float64 computation."""
    rng = np.random.default_rng(11)
    lstm64 = nf.LSTM(6, 16, rng=3).to(np.float64)
    lstm32 = nf.LSTM(6, 16, rng=3)
    x = rng.normal(size=(8, 12, 6))
    out64, (h64, c64) = lstm64(x)
    out32, (h32, c32) = lstm32(x.astype(np.float32))
    assert out32.dtype == h32.dtype == np.float32
    np.testing.assert_allclose(out32, out64, atol=1e-5)
    g = rng.normal(size=h64.shape)
    lstm64.backward((None, (g, None)))
    lstm32.backward((None, (g.astype(np.float32), None)))
    for (name, p64), p32 in zip(lstm64.named_parameters(), lstm32.parameters()):
        assert p32.grad.dtype == np.float32
        np.testing.assert_allclose(p32.grad, p64.grad, atol=1e-4, err_msg=name)
