"""Unbatched inputs (PyTorch's rule): every layer and loss that PyTorch calls without a batch
axis takes that input here too; the output and the input gradients drop the batch axis.

Without PyTorch these tests check nnframe's own promise (an unbatched call equals a batch of
one with the axis removed, gradients included); with PyTorch they check outputs and every
gradient against it in float64, with the same weights."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import nnframe as nf
from tests.conformance import (
    as_float64,
    assert_loss_parity,
    assert_parity,
    close,
    expand,
    leaves,
    run_nf,
    squeeze,
)

f64 = np.float64


def r(seed: int, *shape):
    return np.random.default_rng(seed).normal(size=shape)


def _rnn_case(kind, batch_first, state, **kw):
    """A recurrent layer on (T, F), with or without its state (L * D, H)."""
    L = kw.get("num_layers", 1) * (2 if kw.get("bidirectional") else 1)
    h = kw.get("proj_size") or 3

    def args():
        x = r(0, 4, 2)
        if not state:
            return (x,)
        h0 = r(1, L, h)
        return (x, (h0, r(2, L, 3))) if kind == "LSTM" else (x, h0)

    b = 0 if batch_first else 1
    in_axes = (b, (1, 1) if kind == "LSTM" else 1)
    out_axes = (b, (1, 1) if kind == "LSTM" else 1)
    return (
        f"{kind}-bf{int(batch_first)}-state{int(state)}-{'-'.join(map(str, kw.values()))}",
        lambda: getattr(nf, kind)(2, 3, batch_first=batch_first, rng=0, **kw),
        lambda nn: getattr(nn, kind)(2, 3, batch_first=batch_first, **kw),
        args,
        {},
        in_axes,
        out_axes,
    )


def _cell_case(kind, state):
    def args():
        x = r(0, 5)
        if not state:
            return (x,)
        return (x, (r(1, 4), r(2, 4))) if kind == "LSTMCell" else (x, r(1, 4))

    axes = (0, (0, 0) if kind == "LSTMCell" else 0)
    out = (0, 0) if kind == "LSTMCell" else 0
    return (
        f"{kind}-state{int(state)}",
        lambda: getattr(nf, kind)(5, 4, rng=0),
        lambda nn: getattr(nn, kind)(5, 4),
        args,
        {},
        axes,
        out,
    )


def _mha_case(batch_first, cross, masked):
    def args():
        q = r(0, 3, 4)
        if not cross:
            return (q, q, q)
        return (q, r(1, 5, 4), r(2, 5, 4))

    s = 5 if cross else 3
    kwargs = {}
    if masked:
        kwargs["key_padding_mask"] = np.arange(s) == s - 1
        kwargs["attn_mask"] = np.triu(np.ones((3, s), bool), 1 + s - 3)
    b = 0 if batch_first else 1
    return (
        f"MHA-bf{int(batch_first)}-cross{int(cross)}-mask{int(masked)}",
        lambda: nf.MultiheadAttention(4, 2, batch_first=batch_first, rng=0),
        lambda nn: nn.MultiheadAttention(4, 2, batch_first=batch_first),
        args,
        kwargs,
        (b, b, b),
        (b, 0),
    )


def _encoder_case(batch_first, stack, masked):
    def make():
        layer = nf.TransformerEncoderLayer(
            8, 2, dim_feedforward=16, dropout=0.0, batch_first=batch_first, rng=0
        )
        return nf.TransformerEncoder(layer, 2) if stack else layer

    def make_torch(nn):
        layer = nn.TransformerEncoderLayer(8, 2, 16, dropout=0.0, batch_first=batch_first)
        return nn.TransformerEncoder(layer, 2, enable_nested_tensor=False) if stack else layer

    kwargs = {}
    if masked:
        kwargs = {"src_key_padding_mask": np.arange(5) >= 4}
        kwargs["mask" if stack else "src_mask"] = np.triu(np.ones((5, 5), bool), 1)
    b = 0 if batch_first else 1
    return (
        f"Encoder{'Stack' if stack else 'Layer'}-bf{int(batch_first)}-mask{int(masked)}",
        make,
        make_torch,
        lambda: (r(0, 5, 8),),
        kwargs,
        (b,),
        b,
    )


def _simple(name, make, make_torch, shape, kwargs=None):
    return (name, make, make_torch, lambda: (r(0, *shape),), kwargs or {}, (0,), 0)


CASES = [
    _simple("Dense", lambda: nf.Dense(3, 4, rng=0), lambda nn: nn.Linear(3, 4), (3,)),
    _simple("Conv1d", lambda: nf.Conv1d(2, 3, 3, rng=0), lambda nn: nn.Conv1d(2, 3, 3), (2, 7)),
    _simple(
        "Conv2d",
        lambda: nf.Conv2d(2, 3, 3, padding=1, rng=0),
        lambda nn: nn.Conv2d(2, 3, 3, padding=1),
        (2, 5, 4),
    ),
    _simple(
        "Conv3d", lambda: nf.Conv3d(2, 3, 2, rng=0), lambda nn: nn.Conv3d(2, 3, 2), (2, 3, 4, 3)
    ),
    _simple(
        "ConvTranspose1d",
        lambda: nf.ConvTranspose1d(2, 3, 3, stride=2, rng=0),
        lambda nn: nn.ConvTranspose1d(2, 3, 3, stride=2),
        (2, 5),
    ),
    _simple(
        "ConvTranspose2d",
        lambda: nf.ConvTranspose2d(2, 3, 3, stride=2, rng=0),
        lambda nn: nn.ConvTranspose2d(2, 3, 3, stride=2),
        (2, 3, 4),
    ),
    _simple("MaxPool1d", lambda: nf.MaxPool1d(2), lambda nn: nn.MaxPool1d(2), (3, 8)),
    _simple("MaxPool2d", lambda: nf.MaxPool2d(2), lambda nn: nn.MaxPool2d(2), (3, 6, 4)),
    _simple("AvgPool1d", lambda: nf.AvgPool1d(3, 2), lambda nn: nn.AvgPool1d(3, 2), (3, 8)),
    _simple("AvgPool2d", lambda: nf.AvgPool2d(2), lambda nn: nn.AvgPool2d(2), (3, 6, 4)),
    _simple(
        "AdaptiveAvgPool1d",
        lambda: nf.AdaptiveAvgPool1d(3),
        lambda nn: nn.AdaptiveAvgPool1d(3),
        (3, 7),
    ),
    _simple(
        "AdaptiveAvgPool2d",
        lambda: nf.AdaptiveAvgPool2d((2, 3)),
        lambda nn: nn.AdaptiveAvgPool2d((2, 3)),
        (3, 5, 7),
    ),
    _simple(
        "AdaptiveMaxPool1d",
        lambda: nf.AdaptiveMaxPool1d(3),
        lambda nn: nn.AdaptiveMaxPool1d(3),
        (3, 7),
    ),
    _simple(
        "AdaptiveMaxPool2d",
        lambda: nf.AdaptiveMaxPool2d(2),
        lambda nn: nn.AdaptiveMaxPool2d(2),
        (3, 5, 4),
    ),
    _simple(
        "InstanceNorm1d",
        lambda: nf.InstanceNorm1d(3, affine=True),
        lambda nn: nn.InstanceNorm1d(3, affine=True),
        (3, 6),
    ),
    _simple(
        "InstanceNorm2d",
        lambda: nf.InstanceNorm2d(3, affine=True),
        lambda nn: nn.InstanceNorm2d(3, affine=True),
        (3, 4, 5),
    ),
    _simple("LayerNorm", lambda: nf.LayerNorm(4), lambda nn: nn.LayerNorm(4), (4,)),
    _simple("RMSNorm", lambda: nf.RMSNorm(4), lambda nn: nn.RMSNorm(4), (4,)),
    _simple("PReLU", lambda: nf.PReLU(), lambda nn: nn.PReLU(), (5,)),
    _simple("Softmax", lambda: nf.Softmax(dim=-1), lambda nn: nn.Softmax(dim=-1), (5,)),
    _simple("LogSoftmax", lambda: nf.LogSoftmax(dim=-1), lambda nn: nn.LogSoftmax(dim=-1), (5,)),
    _simple("Tanh", lambda: nf.Tanh(), lambda nn: nn.Tanh(), (5,)),
    _simple("GELU", lambda: nf.GELU(), lambda nn: nn.GELU(), (5,)),
    _simple("Dropout1d", lambda: nf.Dropout1d(0.0), lambda nn: nn.Dropout1d(0.0), (3, 5)),
    _simple("Dropout", lambda: nf.Dropout(0.0), lambda nn: nn.Dropout(0.0), (5,)),
    _simple("ZeroPad2d-HW", lambda: nf.ZeroPad2d(1), lambda nn: nn.ZeroPad2d(1), (4, 5)),
    _simple(
        "ZeroPad2d-CHW",
        lambda: nf.ZeroPad2d((1, 0, 2, 1)),
        lambda nn: nn.ZeroPad2d((1, 0, 2, 1)),
        (2, 4, 5),
    ),
    _simple(
        "Unflatten", lambda: nf.Unflatten(-1, (2, 3)), lambda nn: nn.Unflatten(-1, (2, 3)), (6,)
    ),
    (
        "Embedding",
        lambda: nf.Embedding(10, 3, rng=0),
        lambda nn: nn.Embedding(10, 3),
        lambda: (np.array([1, 4, 4, 9]),),
        {},
        (0,),
        0,
    ),
    *[
        _rnn_case(k, bf, st_)
        for k in ("RNN", "LSTM", "GRU")
        for bf in (True, False)
        for st_ in (0, 1)
    ],
    _rnn_case("LSTM", False, True, num_layers=2, bidirectional=True),
    _rnn_case("GRU", True, True, num_layers=2),
    *[_cell_case(k, s) for k in ("RNNCell", "GRUCell", "LSTMCell") for s in (False, True)],
    *[_mha_case(bf, c, m) for bf in (True, False) for c in (False, True) for m in (False, True)],
    *[
        _encoder_case(bf, s, m)
        for bf in (True, False)
        for s in (False, True)
        for m in (False, True)
    ],
]
IDS = [c[0] for c in CASES]


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_unbatched_equals_a_batch_of_one(case):
    _, make, _, args_fn, kwargs, in_axes, out_axes = case
    args = args_fn()
    layer = as_float64(make())
    out, g, grads, params = run_nf(layer, args, kwargs)
    batched_kwargs = dict(kwargs)
    for k in ("key_padding_mask", "src_key_padding_mask"):
        if k in batched_kwargs:
            batched_kwargs[k] = batched_kwargs[k][None]
    layer.zero_grad()
    out1 = layer(*expand(args, in_axes), **batched_kwargs)
    grads1 = layer.backward(expand(g, out_axes))
    for i, (a, b) in enumerate(zip(leaves(out), leaves(squeeze(out1, out_axes)))):
        close(a, b, f"output {i}")
    ours_in = leaves(grads)
    assert len(ours_in) == sum(a.dtype.kind == "f" for a in leaves(args))
    want = squeeze(grads1, in_axes if isinstance(grads1, tuple) else in_axes[0])
    for i, (a, b) in enumerate(zip(ours_in, leaves(want))):
        assert a.shape == leaves(args)[i].shape
        close(a, b, f"input gradient {i}")
    for name, p in layer.named_parameters():
        close(params[name], p.grad, f"gradient of {name}")


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_unbatched_matches_torch(case):
    torch = pytest.importorskip("torch")
    _, make, make_torch, args_fn, kwargs, _, _ = case
    torch.manual_seed(0)
    theirs = make_torch(torch.nn).double()
    assert_parity(as_float64(make()), theirs, args_fn(), kwargs)


GRADCHECKED = [
    c
    for c in CASES
    if not c[0].startswith(("Encoder", "MHA"))
    and not (c[0].startswith(("RNN-", "GRU-", "LSTM-")) and "state1" in c[0])
    and not c[0].startswith("LSTMCell-state1")
]


@pytest.mark.parametrize("case", GRADCHECKED, ids=[c[0] for c in GRADCHECKED])
def test_check_module_on_unbatched_inputs(case):
    _, make, _, args_fn, kwargs, _, _ = case
    args = args_fn()
    nf.check_module(make(), args if len(args) > 1 else args[0], forward_kwargs=kwargs or None)


def test_check_module_on_unbatched_attention():
    q = r(0, 3, 4)
    nf.check_module(nf.MultiheadAttention(4, 2, rng=0), (q, r(1, 5, 4), r(2, 5, 4)))
    layer = nf.TransformerEncoderLayer(4, 2, dim_feedforward=6, dropout=0.0, rng=0)
    nf.check_module(layer, q, forward_kwargs={"src_key_padding_mask": np.arange(3) == 2})


@settings(max_examples=15, deadline=None)
@given(
    seed=st.integers(0, 2**16),
    kind=st.sampled_from(["RNN", "LSTM", "GRU"]),
    batch_first=st.booleans(),
    t=st.integers(1, 4),
    f=st.integers(1, 3),
    h=st.integers(1, 3),
)
def test_recurrent_unbatched_drawn_shapes_match_torch(seed, kind, batch_first, t, f, h):
    torch = pytest.importorskip("torch")
    ours = as_float64(getattr(nf, kind)(f, h, batch_first=batch_first, rng=seed))
    theirs = getattr(torch.nn, kind)(f, h, batch_first=batch_first).double()
    x = r(seed, t, f)
    assert_parity(ours, theirs, (x,))


def test_refused_ranks_keep_their_messages():
    with pytest.raises(nf.ShapeError, match=r"expected input of shape \(N, T, 2\), got \(2,\)"):
        nf.LSTM(2, 3, rng=0)(np.ones(2))
    with pytest.raises(nf.ShapeError, match=r"got \(2, 3, 4, 5\)"):
        nf.MultiheadAttention(4, 2, rng=0)(np.ones((2, 3, 4, 5)))
    with pytest.raises(nf.ShapeError, match=r"expected input of shape \(N, 4, L\), got \(4,\)"):
        nf.InstanceNorm1d(4)(np.ones(4))
    with pytest.raises(
        nf.ShapeError, match=r"expected input of shape \(N, 5\) or \(N, 5, L\), got \(5, 9\)"
    ):
        nf.BatchNorm1d(5)(np.ones((5, 9)))  # PyTorch has no unbatched batch norm


# ----------------------------------------------------------------------------- losses
LOSS_CASES = [
    ("CrossEntropy-index", lambda m: m.CrossEntropyLoss, {}, lambda: (r(0, 4), np.array(2))),
    (
        "CrossEntropy-probs",
        lambda m: m.CrossEntropyLoss,
        {"label_smoothing": 0.1},
        lambda: (r(0, 4), np.exp(r(1, 4)) / np.exp(r(1, 4)).sum()),
    ),
    (
        "CrossEntropy-weight",
        lambda m: m.CrossEntropyLoss,
        {"weight": np.array([1.0, 2.0, 0.5, 3.0])},
        lambda: (r(0, 4), np.array(3)),
    ),
    ("NLL", lambda m: m.NLLLoss, {}, lambda: (r(0, 4), np.array(1))),
    ("MultiMargin", lambda m: m.MultiMarginLoss, {}, lambda: (r(0, 4), np.array(1))),
    ("MultiMargin-p2", lambda m: m.MultiMarginLoss, {"p": 2}, lambda: (r(0, 4), np.array(0))),
    (
        "CosineEmbedding-pos",
        lambda m: m.CosineEmbeddingLoss,
        {},
        lambda: ((r(0, 5), r(1, 5)), np.array(1)),
    ),
    (
        "CosineEmbedding-neg",
        lambda m: m.CosineEmbeddingLoss,
        {"margin": -0.5},
        lambda: ((r(0, 5), r(1, 5)), np.array(-1)),
    ),
    ("MSE-vector", lambda m: m.MSELoss, {}, lambda: (r(0, 4), r(1, 4))),
    ("MSE-scalar", lambda m: m.MSELoss, {}, lambda: (r(0), r(1))),
    (
        "MarginRanking-scalar",
        lambda m: m.MarginRankingLoss,
        {"margin": 0.5},
        lambda: ((r(0), r(1)), np.array(1.0)),
    ),
    (
        "KLDiv-batchmean",
        lambda m: m.KLDivLoss,
        {"reduction": "batchmean"},
        lambda: (r(0, 4), np.exp(r(1, 4))),
    ),
]
LOSS_IDS = [c[0] for c in LOSS_CASES]


def _torch_kwargs(kw):
    import torch

    return {k: torch.from_numpy(v) if isinstance(v, np.ndarray) else v for k, v in kw.items()}


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("case", LOSS_CASES, ids=LOSS_IDS)
def test_unbatched_loss_matches_torch(case, reduction):
    torch = pytest.importorskip("torch")
    _, cls, kw, data = case
    kw = {"reduction": reduction, **kw} if "reduction" not in kw else kw
    pred, target = data()
    assert_loss_parity(
        cls(nf)(**kw), cls(torch.nn)(**_torch_kwargs(kw)), pred, target, kw["reduction"]
    )


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("case", LOSS_CASES[:-1], ids=LOSS_IDS[:-1])  # not batchmean: / N
def test_unbatched_loss_equals_a_batch_of_one(case, reduction):
    _, cls, kw, data = case
    kw = {"reduction": reduction, **kw} if "reduction" not in kw else kw
    pred, target = data()
    loss = cls(nf)(**kw)
    value = loss(pred, target)
    g = None if np.ndim(value) == 0 and kw["reduction"] != "none" else np.ones(np.shape(value))
    grad = loss.backward(g)
    value1 = loss(expand(pred, 0), target[None])
    grad1 = loss.backward(None if g is None else g[None])
    close(value, squeeze(np.asarray(value1), 0) if kw["reduction"] == "none" else value1, "loss")
    for a, b in zip(leaves(grad), leaves(squeeze(grad1, 0))):
        close(a, b, "dL/dpred")
    assert np.shape(grad if not isinstance(grad, tuple) else grad[0]) == np.shape(leaves(pred)[0])


@pytest.mark.parametrize("case", LOSS_CASES, ids=LOSS_IDS)
def test_check_loss_on_unbatched_inputs(case):
    _, cls, kw, data = case
    pred, target = data()
    nf.check_loss(cls(nf)(**kw), pred, target)


def test_unbatched_loss_errors_name_the_unbatched_shapes():
    with pytest.raises(nf.ShapeError, match=r"an unbatched call: pred \(4,\) and target \(1,\)"):
        nf.CrossEntropyLoss()(np.zeros(4), np.array([1]))
