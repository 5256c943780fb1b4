"""RNN, LSTM, GRU and their cells: gradient checks, PyTorch parity, lengths, learning."""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import nnframe as nf
from tests.strategies import normal_array, seeds

CHECKED_MODULES = [nf.RNN, nf.LSTM, nf.GRU, nf.RNNCell, nf.LSTMCell, nf.GRUCell]

KINDS = ["RNN", "LSTM", "GRU"]
tiny = st.integers(min_value=1, max_value=3)


class LSTMStates(nf.Module):
    """Test adapter: an LSTM with its state tuples flattened, so that check_module can feed
    (x, h0, c0) and check the gradients of (output, h_n, c_n)."""

    def __init__(self, lstm, lengths=None):
        super().__init__()
        self.lstm = lstm
        self.lengths = lengths

    def forward(self, x, h0, c0):
        out, (h_n, c_n) = self.lstm(x, (h0, c0), lengths=self.lengths)
        return out, h_n, c_n

    def backward(self, grad_output):
        g_out, g_h, g_c = grad_output
        gx, (gh0, gc0) = self.lstm.backward((g_out, (g_h, g_c)))
        return gx, gh0, gc0


class LSTMCellStates(nf.Module):
    """Test adapter: LSTMCell with (x, h, c) in and (h', c') out."""

    def __init__(self, cell):
        super().__init__()
        self.cell = cell

    def forward(self, x, h, c):
        return self.cell(x, (h, c))

    def backward(self, grad_output):
        gx, (gh, gc) = self.cell.backward(grad_output)
        return gx, gh, gc


def draw_lengths(seed, n, t):
    return np.random.default_rng(seed).integers(0, t + 1, size=n)


# ------------------------------------------------------------------ gradient checks
@given(
    seed=seeds, n=tiny, t=tiny, f=tiny, h=tiny, kind=st.sampled_from(["RNN", "GRU"]),
    relu=st.booleans(), with_state=st.booleans(), with_lengths=st.booleans(),
)  # fmt: skip
def test_rnn_gru_gradcheck_single_layer(seed, n, t, f, h, kind, relu, with_state, with_lengths):
    kwargs = {"nonlinearity": "relu"} if kind == "RNN" and relu else {}
    layer = getattr(nf, kind)(f, h, rng=seed, **kwargs)
    x = normal_array(seed, (n, t, f))
    inputs = (x, normal_array(seed + 1, (1, n, h))) if with_state else x
    fk = {"lengths": draw_lengths(seed, n, t)} if with_lengths else None
    nf.check_module(layer, inputs, forward_kwargs=fk, expected_shape=((n, t, h), (1, n, h)))


@given(seed=seeds, kind=st.sampled_from(KINDS), batch_first=st.booleans(), bias=st.booleans())
def test_multilayer_bidirectional_gradcheck(seed, kind, batch_first, bias):
    n, t, f, h = 2, 3, 2, 3
    layer = getattr(nf, kind)(
        f, h, num_layers=2, bidirectional=True, batch_first=batch_first, bias=bias, rng=seed
    )
    shape = (n, t, f) if batch_first else (t, n, f)
    state = normal_array(seed + 1, (4, n, h))
    if kind == "LSTM":
        module, inputs = LSTMStates(layer), (normal_array(seed, shape), state, state[..., ::-1])
    else:
        module, inputs = layer, (normal_array(seed, shape), state)
    nf.check_module(module, inputs, directional=True)


@given(seed=seeds, n=tiny, t=tiny, f=tiny, with_lengths=st.booleans())
def test_lstm_gradcheck_with_states(seed, n, t, f, with_lengths):
    h = 3
    lengths = draw_lengths(seed, n, t) if with_lengths else None
    module = LSTMStates(nf.LSTM(f, h, rng=seed), lengths)
    x = normal_array(seed, (n, t, f))
    h0, c0 = normal_array(seed + 1, (1, n, h)), normal_array(seed + 2, (1, n, h))
    nf.check_module(module, (x, h0, c0), expected_shape=((n, t, h), (1, n, h), (1, n, h)))


@given(seed=seeds, bidirectional=st.booleans(), with_lengths=st.booleans())
def test_lstm_proj_size_gradcheck(seed, bidirectional, with_lengths):
    n, t, f, h, p = 2, 3, 2, 3, 2
    d = 2 if bidirectional else 1
    lstm = nf.LSTM(f, h, num_layers=2, proj_size=p, bidirectional=bidirectional, rng=seed)
    lengths = np.array([t, 1]) if with_lengths else None
    x = normal_array(seed, (n, t, f))
    h0, c0 = normal_array(seed + 1, (2 * d, n, p)), normal_array(seed + 2, (2 * d, n, h))
    nf.check_module(
        LSTMStates(lstm, lengths), (x, h0, c0), directional=True,
        expected_shape=((n, t, d * p), (2 * d, n, p), (2 * d, n, h)),
    )  # fmt: skip


def test_lstm_output_only_gradcheck():
    # check_module on the LSTM itself: the output is checked (the nested state is not a float array)
    nf.check_module(nf.LSTM(2, 3, rng=0), normal_array(0, (2, 4, 2)))


@given(seed=seeds)
def test_dropout_between_layers_gradcheck(seed):
    layer = nf.GRU(2, 3, num_layers=2, dropout=0.5, rng=seed)
    nf.check_module(layer, normal_array(seed, (2, 3, 2)), directional=True)


@given(seed=seeds, n=tiny, f=tiny, h=tiny, kind=st.sampled_from(["RNNCell", "GRUCell"]))
def test_rnn_gru_cell_gradcheck(seed, n, f, h, kind):
    cell = getattr(nf, kind)(f, h, rng=seed)
    x, h0 = normal_array(seed, (n, f)), normal_array(seed + 1, (n, h))
    nf.check_module(cell, (x, h0), expected_shape=(n, h))
    nf.check_module(cell, x, expected_shape=(n, h))


@given(seed=seeds, n=tiny, f=tiny, h=tiny)
def test_lstm_cell_gradcheck(seed, n, f, h):
    cell = nf.LSTMCell(f, h, rng=seed)
    x = normal_array(seed, (n, f))
    h0, c0 = normal_array(seed + 1, (n, h)), normal_array(seed + 2, (n, h))
    nf.check_module(LSTMCellStates(cell), (x, h0, c0), expected_shape=((n, h), (n, h)))
    nf.check_module(cell, x, expected_shape=((n, h), (n, h)))


# ------------------------------------------------------------------ PyTorch parity
def _torch_run(torch, t_layer, x, hx, lengths, batch_first):
    xt = torch.tensor(x, requires_grad=True)
    inp = xt
    if lengths is not None:
        inp = torch.nn.utils.rnn.pack_padded_sequence(
            xt, torch.tensor(lengths), batch_first=batch_first, enforce_sorted=False
        )
    out, state = t_layer(inp, hx)
    if lengths is not None:
        total = x.shape[1] if batch_first else x.shape[0]
        out, _ = torch.nn.utils.rnn.pad_packed_sequence(
            out, batch_first=batch_first, total_length=total
        )
    return xt, out, state


PARITY_CONFIGS = [
    (kind, config)
    for kind in KINDS
    for config in [
        dict(num_layers=1, bidirectional=False, batch_first=True, lengths=None),
        dict(num_layers=2, bidirectional=True, batch_first=True, lengths=None),
        dict(num_layers=2, bidirectional=True, batch_first=False, lengths=[4, 1, 3]),
        dict(num_layers=1, bidirectional=False, batch_first=True, lengths=[2, 4, 4]),
    ]
] + [
    ("LSTM", dict(num_layers=2, bidirectional=False, batch_first=True, lengths=None, proj_size=2)),
    (
        "LSTM",
        dict(num_layers=2, bidirectional=True, batch_first=True, lengths=[3, 4, 1], proj_size=3),
    ),
]


@pytest.mark.parametrize(("kind", "config"), PARITY_CONFIGS)
def test_matches_torch(kind, config):
    torch = pytest.importorskip("torch")
    config = dict(config)
    lengths = config.pop("lengths")
    rng = np.random.default_rng(3)
    n, t, f, h = 3, 4, 3, 5
    ours = getattr(nf, kind)(f, h, rng=1, **config).to(np.float64)
    theirs = getattr(torch.nn, kind)(f, h, **config).double()
    theirs.load_state_dict({k: torch.tensor(v) for k, v in ours.state_dict().items()})
    assert list(ours.state_dict()) == list(theirs.state_dict())
    layers = config["num_layers"] * (2 if config["bidirectional"] else 1)
    h_out = config.get("proj_size") or h
    x = rng.normal(size=(n, t, f) if config["batch_first"] else (t, n, f))
    h0, c0 = rng.normal(size=(layers, n, h_out)), rng.normal(size=(layers, n, h))
    hx = (h0, c0) if kind == "LSTM" else h0
    out, state = ours(x, hx, lengths=lengths)

    h0t = torch.tensor(h0, requires_grad=True)
    c0t = torch.tensor(c0, requires_grad=True)
    hxt = (h0t, c0t) if kind == "LSTM" else h0t
    xt, out_t, state_t = _torch_run(torch, theirs, x, hxt, lengths, config["batch_first"])
    np.testing.assert_allclose(out, out_t.detach().numpy(), atol=1e-10)
    states = state if kind == "LSTM" else (state,)
    states_t = state_t if kind == "LSTM" else (state_t,)
    for a, b in zip(states, states_t):
        np.testing.assert_allclose(a, b.detach().numpy(), atol=1e-10)

    g_out = rng.normal(size=out.shape)
    g_states = [rng.normal(size=s.shape) for s in states]
    loss = (out_t * torch.tensor(g_out)).sum()
    for s, g in zip(states_t, g_states):
        loss = loss + (s * torch.tensor(g)).sum()
    loss.backward()
    gx, g_init = ours.backward((g_out, tuple(g_states) if kind == "LSTM" else g_states[0]))
    np.testing.assert_allclose(gx, xt.grad.numpy(), atol=1e-10)
    if kind == "LSTM":
        np.testing.assert_allclose(g_init[0], h0t.grad.numpy(), atol=1e-10)
        np.testing.assert_allclose(g_init[1], c0t.grad.numpy(), atol=1e-10)
    else:
        np.testing.assert_allclose(g_init, h0t.grad.numpy(), atol=1e-10)
    torch_grads = dict(theirs.named_parameters())
    for name, p in ours.named_parameters():
        np.testing.assert_allclose(p.grad, torch_grads[name].grad.numpy(), atol=1e-10, err_msg=name)


@pytest.mark.parametrize("kind", ["RNNCell", "LSTMCell", "GRUCell"])
def test_cells_match_torch(kind):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(5)
    ours = getattr(nf, kind)(3, 4, rng=2).to(np.float64)
    theirs = getattr(torch.nn, kind)(3, 4).double()
    theirs.load_state_dict({k: torch.tensor(v) for k, v in ours.state_dict().items()})
    x, h, c = rng.normal(size=(2, 3)), rng.normal(size=(2, 4)), rng.normal(size=(2, 4))
    xt, ht, ct = (torch.tensor(a, requires_grad=True) for a in (x, h, c))
    if kind == "LSTMCell":
        (h1, c1), (h1t, c1t) = ours(x, (h, c)), theirs(xt, (ht, ct))
        np.testing.assert_allclose(h1, h1t.detach().numpy(), atol=1e-12)
        np.testing.assert_allclose(c1, c1t.detach().numpy(), atol=1e-12)
        gh, gc = rng.normal(size=(2, 4)), rng.normal(size=(2, 4))
        ((h1t * torch.tensor(gh)).sum() + (c1t * torch.tensor(gc)).sum()).backward()
        gx, (dh, dc) = ours.backward((gh, gc))
        np.testing.assert_allclose(dc, ct.grad.numpy(), atol=1e-12)
    else:
        h1, h1t = ours(x, h), theirs(xt, ht)
        np.testing.assert_allclose(h1, h1t.detach().numpy(), atol=1e-12)
        gh = rng.normal(size=(2, 4))
        (h1t * torch.tensor(gh)).sum().backward()
        gx, dh = ours.backward(gh)
    np.testing.assert_allclose(gx, xt.grad.numpy(), atol=1e-12)
    np.testing.assert_allclose(dh, ht.grad.numpy(), atol=1e-12)
    for name, p in theirs.named_parameters():
        np.testing.assert_allclose(getattr(ours, name).grad, p.grad.numpy(), atol=1e-12)


# ------------------------------------------------------------------ semantics
def test_parameter_names_shapes_and_init_bounds():
    lstm = nf.LSTM(3, 8, num_layers=2, bidirectional=True, proj_size=4, rng=0)
    shapes = {name: p.shape for name, p in lstm.named_parameters()}
    assert list(shapes)[:5] == [
        "weight_ih_l0", "weight_hh_l0", "bias_ih_l0", "bias_hh_l0", "weight_hr_l0",
    ]  # fmt: skip
    assert shapes["weight_ih_l0"] == (32, 3)
    assert shapes["weight_hh_l0"] == (32, 4)
    assert shapes["weight_hr_l0_reverse"] == (4, 8)
    assert shapes["weight_ih_l1"] == (32, 8)  # two directions of 4 projected features
    assert len(shapes) == 20
    for p in lstm.parameters():
        assert p.dtype == np.float32
        assert np.abs(p.data).max() <= 1 / np.sqrt(8)
    gru = nf.GRU(3, 5, bias=False, rng=0)
    assert [n for n, _ in gru.named_parameters()] == ["weight_ih_l0", "weight_hh_l0"]
    assert gru.weight_ih_l0.shape == (15, 3)


@pytest.mark.parametrize("kind", KINDS)
def test_lengths_padding_changes_nothing(kind):
    """A padded batch gives, for each sequence, the output and final state of that sequence run
    alone; padded inputs get zero gradient and padded outputs are zero."""
    rng = np.random.default_rng(0)
    layer = getattr(nf, kind)(3, 4, num_layers=2, bidirectional=True, rng=0).to(np.float64)
    x = rng.normal(size=(3, 6, 3))
    lengths = np.array([6, 2, 4])
    out, state = layer(x, lengths=lengths)
    h_n = state[0] if kind == "LSTM" else state
    g = rng.normal(size=out.shape)
    gx = layer.backward(g)
    for i, length in enumerate(lengths):
        assert not out[i, length:].any()
        assert not gx[i, length:].any()
        alone, s_alone = layer(x[i : i + 1, :length])
        np.testing.assert_allclose(out[i, :length], alone[0], atol=1e-12)
        h_alone = s_alone[0] if kind == "LSTM" else s_alone
        np.testing.assert_allclose(h_n[:, i], h_alone[:, 0], atol=1e-12)
        gx_alone = layer.backward(g[i : i + 1, :length])
        np.testing.assert_allclose(gx[i, :length], gx_alone[0], atol=1e-12)


def test_gru_worked_example():
    """One step of a 1-unit GRU, by hand: r = z = sigmoid(0) = 1/2, n = tanh(1 + r * 2)."""
    gru = nf.GRU(1, 1, bias=False, rng=0).to(np.float64)
    gru.weight_ih_l0.data[...] = [[0.0], [0.0], [1.0]]  # W_ir, W_iz, W_in
    gru.weight_hh_l0.data[...] = [[0.0], [0.0], [2.0]]  # W_hr, W_hz, W_hn
    out, h_n = gru(np.array([[[1.0]]]), np.array([[[1.0]]]))
    n = np.tanh(1.0 + 0.5 * 2.0)
    np.testing.assert_allclose(h_n[0, 0, 0], 0.5 * n + 0.5 * 1.0)


def test_lstm_worked_example():
    """One step, zero weights but the biases: i = f = o = sigmoid(0) = 1/2, g = tanh(0) = 0 except
    the cell bias: g = tanh(1)."""
    lstm = nf.LSTM(1, 1, rng=0).to(np.float64)
    lstm.weight_ih_l0.data[...] = 0
    lstm.weight_hh_l0.data[...] = 0
    lstm.bias_ih_l0.data[...] = [0.0, 0.0, 1.0, 0.0]  # i, f, g, o
    lstm.bias_hh_l0.data[...] = 0
    out, (h_n, c_n) = lstm(np.zeros((1, 1, 1)), (np.zeros((1, 1, 1)), np.full((1, 1, 1), 2.0)))
    c = 0.5 * 2.0 + 0.5 * np.tanh(1.0)
    np.testing.assert_allclose(c_n[0, 0, 0], c)
    np.testing.assert_allclose(h_n[0, 0, 0], 0.5 * np.tanh(c))
    np.testing.assert_allclose(out[0, 0, 0], h_n[0, 0, 0])


def test_cell_loop_matches_layer_forward_and_backward():
    """A hand-written LSTMCell loop, backpropagated step by step, equals the LSTM layer."""
    rng = np.random.default_rng(1)
    lstm = nf.LSTM(3, 4, rng=0).to(np.float64)
    cell = nf.LSTMCell(3, 4, rng=0).to(np.float64)
    cell.load_state_dict({k[:-3]: v for k, v in lstm.state_dict().items()})
    x = rng.normal(size=(2, 5, 3))
    out, (h_n, c_n) = lstm(x)
    state, hs = (np.zeros((2, 4)), np.zeros((2, 4))), []
    for t in range(5):
        state = cell(x[:, t], state)
        hs.append(state[0])
    np.testing.assert_allclose(np.stack(hs, axis=1), out, atol=1e-12)
    g = rng.normal(size=out.shape)
    gx = lstm.backward(g)
    gh, gc, gx_cell = np.zeros((2, 4)), np.zeros((2, 4)), []
    for t in reversed(range(5)):
        dx, (gh, gc) = cell.backward((g[:, t] + gh, gc))
        gx_cell.append(dx)
    np.testing.assert_allclose(np.stack(gx_cell[::-1], axis=1), gx, atol=1e-12)
    for name, p in lstm.named_parameters():
        np.testing.assert_allclose(getattr(cell, name[:-3]).grad, p.grad, atol=1e-12)
    with pytest.raises(RuntimeError, match="backward called before forward"):
        cell.backward((gh, gc))


def test_backward_without_output_gradient_and_needs_input_grad():
    gru = nf.GRU(2, 3, rng=0)
    x = np.ones((4, 5, 2), dtype=np.float32)
    _, h_n = gru(x)
    gx = gru.backward((None, np.ones_like(h_n)))
    assert gx.shape == x.shape and gx.dtype == np.float32 and np.abs(gx).sum() > 0
    gru.zero_grad()
    gru.needs_input_grad = False
    gru(x)
    assert gru.backward((None, np.ones_like(h_n))) is None
    assert np.abs(gru.weight_hh_l0.grad).sum() > 0


def test_dropout_only_in_training_and_from_the_layer_rng():
    x = np.ones((2, 4, 3), dtype=np.float32)
    a = nf.LSTM(3, 5, num_layers=2, dropout=0.5, rng=7)
    b = nf.LSTM(3, 5, num_layers=2, dropout=0.5, rng=7)
    np.testing.assert_array_equal(a(x)[0], b(x)[0])  # same seed, same masks
    assert not np.allclose(a(x)[0], a(x)[0])  # fresh masks each call
    a.eval()
    np.testing.assert_array_equal(a(x)[0], a(x)[0])


def test_float32_by_default_no_upcast():
    lstm = nf.LSTM(3, 4, bidirectional=True, rng=0)
    out, (h, c) = lstm(np.ones((2, 3, 3)))  # float64 input is cast to the layer's dtype
    assert out.dtype == h.dtype == c.dtype == np.float32
    assert lstm.backward(np.ones_like(out)).dtype == np.float32
    assert lstm.weight_hh_l0.grad.dtype == np.float32


def test_errors():
    lstm = nf.LSTM(3, 4, rng=0)
    with pytest.raises(
        nf.ShapeError, match=r"LSTM\(3, 4\): expected input of shape \(N, T, 3\), got \(2, 5\)"
    ):
        lstm(np.ones((2, 5)))
    with pytest.raises(
        nf.ShapeError, match=r"expected input of shape \(T, N, 3\), got \(2, 5, 2\)"
    ):
        nf.GRU(3, 4, batch_first=False)(np.ones((2, 5, 2)))
    with pytest.raises(nf.ShapeError, match=r"expected h0 of shape \(1, 2, 4\), got \(2, 4\)"):
        lstm(np.ones((2, 5, 3)), (np.ones((2, 4)), np.ones((1, 2, 4))))
    with pytest.raises(TypeError, match=r"expected an initial state \(h0, c0\), got ndarray"):
        lstm(np.ones((2, 5, 3)), np.ones((1, 2, 4)))
    with pytest.raises(
        ValueError,
        match=r"expected integer lengths of shape \(2,\) in \[0, 5\], got values in \[1, 6\]",
    ):
        lstm(np.ones((2, 5, 3)), lengths=[1, 6])
    with pytest.raises(RuntimeError, match="backward called before forward"):
        nf.GRU(2, 2).backward(np.ones((1, 1, 2)))
    out, _ = lstm(np.ones((2, 5, 3)))
    with pytest.raises(
        nf.ShapeError, match=r"expected grad_output of the output's shape \(2, 5, 4\), got \(2, 4\)"
    ):
        lstm.backward(np.ones((2, 4)))
    with pytest.raises(
        ValueError, match=r"LSTM: invalid proj_size=4 \(must be in \[0, hidden_size\)\)"
    ):
        nf.LSTM(3, 4, proj_size=4)
    with pytest.raises(ValueError, match=r"RNN: invalid nonlinearity='gelu'"):
        nf.RNN(3, 4, nonlinearity="gelu")
    with pytest.raises(ValueError, match=r"GRU: invalid dropout=1.0"):
        nf.GRU(3, 4, dropout=1.0)
    with pytest.raises(
        nf.ShapeError, match=r"GRUCell\(2, 3\): expected input of shape \(N, 2\), got \(4, 3\)"
    ):
        nf.GRUCell(2, 3)(np.ones((4, 3)))


def test_repr():
    assert repr(nf.LSTM(3, 4, num_layers=2, bidirectional=True)) == (
        "LSTM(3, 4, num_layers=2, bidirectional=True)"
    )
    assert repr(nf.RNNCell(2, 3, nonlinearity="relu")) == "RNNCell(2, 3, nonlinearity='relu')"


# ------------------------------------------------------------------ learning
def test_lstm_learns_the_adding_problem():
    """Each step carries (value, marker); the target is the sum of the two marked values.
    Predicting the mean (1.0) gives MSE 1/6 ~ 0.167; the LSTM must do far better."""
    rng = np.random.default_rng(0)
    T, N = 10, 64

    def batch():
        values = rng.uniform(0, 1, size=(N, T))
        markers = np.zeros((N, T))
        for row in markers:
            row[rng.choice(T, size=2, replace=False)] = 1
        x = np.stack([values, markers], axis=2).astype(np.float32)
        return x, (values * markers).sum(axis=1, keepdims=True).astype(np.float32)

    class Adder(nf.Module):
        def __init__(self):
            super().__init__()
            self.lstm = nf.LSTM(2, 32, rng=1)
            self.head = nf.Dense(32, 1, rng=2)

        def forward(self, x):
            _, (h_n, _) = self.lstm(x)
            return self.head(h_n[-1])

        def backward(self, grad_output):
            g_h = self.head.backward(grad_output)[None]
            return self.lstm.backward((None, (g_h, None)))

    model, loss_fn = Adder(), nf.MSELoss()
    opt = nf.optim.Adam(model.parameters(), lr=0.02)
    for _ in range(300):
        x, y = batch()
        opt.zero_grad()
        loss_fn(model(x), y)
        model.backward(loss_fn.backward())
        opt.step()
    x, y = batch()
    assert loss_fn(model(x), y) < 0.005


@pytest.mark.parametrize("kind", KINDS)
def test_float32_matches_torch(kind):
    """The kernels compute sigmoid as (1 + tanh(x/2)) / 2: still float32-accurate."""
    torch = pytest.importorskip("torch")
    ours = getattr(nf, kind)(8, 16, num_layers=2, bidirectional=True, rng=0)
    theirs = getattr(torch.nn, kind)(8, 16, num_layers=2, bidirectional=True, batch_first=True)
    theirs.load_state_dict({k: torch.from_numpy(v) for k, v in ours.state_dict().items()})
    x = np.random.default_rng(0).normal(size=(4, 20, 8)).astype(np.float32) * 3
    out, _ = ours(x)
    np.testing.assert_allclose(out, theirs(torch.from_numpy(x))[0].detach().numpy(), atol=2e-6)
