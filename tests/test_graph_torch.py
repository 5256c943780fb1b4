"""Graph models against PyTorch in float64, same weights: outputs and every gradient to 1e-10."""

import numpy as np
import pytest

import nnframe as nf
from nnframe.training.graph_training import MultiLoss

torch = pytest.importorskip("torch")
TOL = dict(rtol=1e-10, atol=1e-10)


def _torch_params(model, named):
    """PyTorch tensors holding the nnframe model's weights, by nnframe name."""
    return {
        k: torch.tensor(v, requires_grad=True) for k, v in model.state_dict().items() if k in named
    }


def _compare_grads(model, params):
    grads = dict(model.named_parameters())
    for name, t in params.items():
        np.testing.assert_allclose(grads[name].grad, t.grad.numpy(), err_msg=name, **TOL)


def _lin(p, prefix, x):
    return x @ p[f"{prefix}.weight"].T + p[f"{prefix}.bias"]


def test_two_tower_recommender_matches_pytorch():
    users, items = (
        nf.Input((), dtype=np.int64, name="user"),
        nf.Input((), dtype=np.int64, name="item"),
    )
    u = nf.Embedding(7, 4, rng=0)(users)
    v = nf.Embedding(9, 4, rng=1)(items)
    dot = nf.Dot(axes=1)(u, v)
    mlp = nf.Dense(6, 1, rng=3)(nf.Tanh()(nf.Dense(8, 6, rng=2)(nf.Concatenate()(u, v))))
    model = nf.Model([users, items], nf.Add()(dot, mlp)).to(np.float64)
    rng = np.random.default_rng(0)
    ub, ib = rng.integers(0, 7, 10), rng.integers(0, 9, 10)
    g = rng.normal(size=(10, 1))
    out = model(ub, ib)
    model.backward(g)
    p = _torch_params(model, [n for n, _ in model.named_parameters()])
    tu, tv = p["embedding.weight"][torch.tensor(ub)], p["embedding_1.weight"][torch.tensor(ib)]
    h = torch.tanh(_lin(p, "dense", torch.cat([tu, tv], dim=1)))
    ref = (tu * tv).sum(dim=1, keepdim=True) + _lin(p, "dense_1", h)
    ref.backward(torch.tensor(g))
    np.testing.assert_allclose(out, ref.detach().numpy(), **TOL)
    _compare_grads(model, p)


def test_siamese_contrastive_and_skip_concat_match_pytorch():
    a, b = nf.Input((5,), name="a"), nf.Input((5,), name="b")
    enc = nf.Sequential(nf.Dense(5, 6, rng=0), nf.Tanh(), nf.Dense(6, 3, rng=1))
    ea, eb = enc(a), enc(b)
    skip = nf.Dense(8, 2, rng=2)(nf.Concatenate()(ea, a))  # a skip concatenation of the input
    model = nf.Model([a, b], [nf.Subtract()(ea, eb), skip]).to(np.float64)
    rng = np.random.default_rng(1)
    xa, xb = rng.normal(size=(6, 5)), rng.normal(size=(6, 5))
    same = rng.integers(0, 2, 6).astype(np.float64)
    diff, sk = model(xa, xb)
    # contrastive loss: same * d^2 + (1 - same) * max(0, 1 - d)^2, d = ||ea - eb||
    d = np.sqrt((diff**2).sum(axis=1))
    gd = (2 * same * d - 2 * (1 - same) * np.maximum(0, 1 - d)) / len(d)
    g_diff = gd[:, None] * diff / d[:, None]
    g_skip = rng.normal(size=sk.shape)
    ga, gb = model.backward((g_diff, g_skip))
    p = _torch_params(model, [n for n, _ in model.named_parameters()])
    ta, tb = torch.tensor(xa, requires_grad=True), torch.tensor(xb, requires_grad=True)

    def t_enc(x):
        return _lin(p, "sequential.2", torch.tanh(_lin(p, "sequential.0", x)))

    tea, teb = t_enc(ta), t_enc(tb)
    td = torch.sqrt(((tea - teb) ** 2).sum(dim=1))
    ts = torch.tensor(same)
    loss = (ts * td**2 + (1 - ts) * torch.clamp(1 - td, min=0) ** 2).mean()
    tsk = _lin(p, "dense", torch.cat([tea, ta], dim=1))
    (loss + (tsk * torch.tensor(g_skip)).sum()).backward()
    np.testing.assert_allclose(sk, tsk.detach().numpy(), **TOL)
    np.testing.assert_allclose(ga, ta.grad.numpy(), **TOL)
    np.testing.assert_allclose(gb, tb.grad.numpy(), **TOL)
    _compare_grads(model, p)


def test_embedding_lstm_last_state_dense_in_sequential_matches_pytorch():
    model = nf.Sequential(
        nf.Embedding(12, 5, rng=0),
        nf.LSTM(5, 7, rng=1),
        nf.GetItem(1, 0, -1),
        nf.Dense(7, 3, rng=2),
    ).to(np.float64)
    emb = torch.nn.Embedding(12, 5).double()
    lstm = torch.nn.LSTM(5, 7, batch_first=True).double()
    lin = torch.nn.Linear(7, 3).double()
    state = model.state_dict()
    emb.load_state_dict({"weight": torch.tensor(state["0.weight"])})
    lstm.load_state_dict({k[2:]: torch.tensor(v) for k, v in state.items() if k.startswith("1.")})
    lin.load_state_dict({k[2:]: torch.tensor(v) for k, v in state.items() if k.startswith("3.")})
    x = np.random.default_rng(2).integers(0, 12, size=(4, 6))
    g = np.random.default_rng(3).normal(size=(4, 3))
    out = model(x)
    model.backward(g)
    _, (h, _) = lstm(emb(torch.tensor(x)))
    ref = lin(h[-1])
    ref.backward(torch.tensor(g))
    np.testing.assert_allclose(out, ref.detach().numpy(), **TOL)
    torch_grads = {
        **{f"0.{k}": v.grad for k, v in emb.named_parameters()},
        **{f"1.{k}": v.grad for k, v in lstm.named_parameters()},
        **{f"3.{k}": v.grad for k, v in lin.named_parameters()},
    }
    for name, p in model.named_parameters():
        np.testing.assert_allclose(p.grad, torch_grads[name].numpy(), err_msg=name, **TOL)


def test_two_output_model_with_loss_weights_matches_pytorch():
    x = nf.Input((4,), name="x")
    h = nf.ReLU()(nf.Dense(4, 8, rng=0)(x))
    model = nf.Model(x, {"kind": nf.Dense(8, 3, rng=1)(h), "value": nf.Dense(8, 1, rng=2)(h)})
    model.to(np.float64)
    rng = np.random.default_rng(4)
    xb = rng.normal(size=(9, 4))
    yk, yv = rng.integers(0, 3, 9), rng.normal(size=(9, 1))
    trainer_loss = MultiLoss(
        {"kind": nf.CrossEntropyLoss(), "value": nf.MSELoss()}, {"kind": 1.0, "value": 0.3},
        model.output_names,
    )  # fmt: skip
    out = model(xb)
    loss = trainer_loss(out, {"kind": yk, "value": yv})
    model.backward(trainer_loss.backward())
    p = _torch_params(model, [n for n, _ in model.named_parameters()])
    th = torch.relu(_lin(p, "dense", torch.tensor(xb)))
    tk, tv = _lin(p, "dense_1", th), _lin(p, "dense_2", th)
    tl = torch.nn.functional.cross_entropy(
        tk, torch.tensor(yk)
    ) + 0.3 * torch.nn.functional.mse_loss(tv, torch.tensor(yv))
    tl.backward()
    np.testing.assert_allclose(loss, tl.item(), **TOL)
    np.testing.assert_allclose(out["kind"], tk.detach().numpy(), **TOL)
    _compare_grads(model, p)
