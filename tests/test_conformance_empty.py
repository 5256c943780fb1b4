"""Empty batches (N = 0, and the other zero-size axes PyTorch allows): every layer and loss gives
an empty output and empty gradients, never a crash; a 'mean' over zero elements is NaN, as in
PyTorch.

Without PyTorch these tests check nnframe's own promise (empty in, empty out, gradients of the
inputs' shapes, parameter gradients zero); with PyTorch they compare output shapes and values
and every gradient with it in float64, with the same weights."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import nnframe as nf
from tests.conformance import as_float64, assert_loss_parity, assert_parity, leaves, run_nf


def r(seed: int, *shape):
    return np.random.default_rng(seed).normal(size=shape)


def ints(*shape, high: int = 10):
    return np.random.default_rng(0).integers(0, high, size=shape)


def _case(name, make, make_torch, args, kwargs=None, train=True):
    return (name, make, make_torch, args, kwargs or {}, train)


def _encoder(nf_or_nn, torch_side: bool):
    if torch_side:
        return nf_or_nn.TransformerEncoderLayer(8, 2, 16, dropout=0.0, batch_first=True)
    return nf.TransformerEncoderLayer(8, 2, dim_feedforward=16, dropout=0.0, rng=0)


ACTIVATIONS = [
    "ReLU", "LeakyReLU", "ELU", "CELU", "SELU", "GELU", "SiLU", "Mish", "Softplus", "Softsign",
    "Sigmoid", "LogSigmoid", "Tanh", "Hardtanh", "Hardsigmoid", "Hardswish", "ReLU6", "Identity",
]  # fmt: skip

CASES = [
    _case("Dense-N0", lambda: nf.Dense(3, 4, rng=0), lambda nn: nn.Linear(3, 4), (r(0, 0, 3),)),
    _case(
        "Dense-lead0", lambda: nf.Dense(3, 4, rng=0), lambda nn: nn.Linear(3, 4), (r(0, 2, 0, 3),)
    ),
    _case(
        "Conv1d",
        lambda: nf.Conv1d(4, 5, 3, rng=0),
        lambda nn: nn.Conv1d(4, 5, 3),
        (r(0, 0, 4, 10),),
    ),
    _case(
        "Conv1d-groups-stride",
        lambda: nf.Conv1d(4, 6, 3, stride=2, padding=1, groups=2, rng=0),
        lambda nn: nn.Conv1d(4, 6, 3, stride=2, padding=1, groups=2),
        (r(0, 0, 4, 9),),
    ),
    _case(
        "Conv2d",
        lambda: nf.Conv2d(2, 3, 3, padding=1, rng=0),
        lambda nn: nn.Conv2d(2, 3, 3, padding=1),
        (r(0, 0, 2, 5, 5),),
    ),
    _case(
        "Conv3d",
        lambda: nf.Conv3d(2, 3, 2, rng=0),
        lambda nn: nn.Conv3d(2, 3, 2),
        (r(0, 0, 2, 3, 4, 3),),
    ),
    _case(
        "ConvTranspose1d",
        lambda: nf.ConvTranspose1d(2, 3, 3, stride=2, rng=0),
        lambda nn: nn.ConvTranspose1d(2, 3, 3, stride=2),
        (r(0, 0, 2, 5),),
    ),
    _case(
        "ConvTranspose2d",
        lambda: nf.ConvTranspose2d(2, 3, 3, stride=2, rng=0),
        lambda nn: nn.ConvTranspose2d(2, 3, 3, stride=2),
        (r(0, 0, 2, 3, 4),),
    ),
    _case("MaxPool1d", lambda: nf.MaxPool1d(2), lambda nn: nn.MaxPool1d(2), (r(0, 0, 3, 8),)),
    _case("MaxPool2d", lambda: nf.MaxPool2d(2), lambda nn: nn.MaxPool2d(2), (r(0, 0, 3, 6, 4),)),
    _case("AvgPool1d", lambda: nf.AvgPool1d(3, 2), lambda nn: nn.AvgPool1d(3, 2), (r(0, 0, 3, 8),)),
    _case("AvgPool2d", lambda: nf.AvgPool2d(2), lambda nn: nn.AvgPool2d(2), (r(0, 0, 3, 6, 4),)),
    _case(
        "AdaptiveAvgPool1d",
        lambda: nf.AdaptiveAvgPool1d(3),
        lambda nn: nn.AdaptiveAvgPool1d(3),
        (r(0, 0, 3, 7),),
    ),
    _case(
        "AdaptiveAvgPool2d",
        lambda: nf.AdaptiveAvgPool2d((2, 3)),
        lambda nn: nn.AdaptiveAvgPool2d((2, 3)),
        (r(0, 0, 3, 5, 7),),
    ),
    _case(
        "AdaptiveMaxPool1d",
        lambda: nf.AdaptiveMaxPool1d(3),
        lambda nn: nn.AdaptiveMaxPool1d(3),
        (r(0, 0, 3, 7),),
    ),
    _case(
        "AdaptiveMaxPool2d",
        lambda: nf.AdaptiveMaxPool2d(2),
        lambda nn: nn.AdaptiveMaxPool2d(2),
        (r(0, 0, 3, 5, 4),),
    ),
    _case(
        "BatchNorm1d-NCL", lambda: nf.BatchNorm1d(5), lambda nn: nn.BatchNorm1d(5), (r(0, 0, 5, 9),)
    ),
    _case("BatchNorm1d-NC", lambda: nf.BatchNorm1d(5), lambda nn: nn.BatchNorm1d(5), (r(0, 0, 5),)),
    _case(
        "BatchNorm1d-L0", lambda: nf.BatchNorm1d(5), lambda nn: nn.BatchNorm1d(5), (r(0, 2, 5, 0),)
    ),
    _case(
        "BatchNorm1d-eval",
        lambda: nf.BatchNorm1d(5),
        lambda nn: nn.BatchNorm1d(5),
        (r(0, 0, 5, 9),),
        train=False,
    ),
    _case(
        "BatchNorm2d", lambda: nf.BatchNorm2d(3), lambda nn: nn.BatchNorm2d(3), (r(0, 0, 3, 4, 4),)
    ),
    _case(
        "BatchNorm3d",
        lambda: nf.BatchNorm3d(2),
        lambda nn: nn.BatchNorm3d(2),
        (r(0, 0, 2, 3, 3, 3),),
    ),
    _case(
        "InstanceNorm1d-N0",
        lambda: nf.InstanceNorm1d(3),  # PyTorch refuses N = 0 with affine=True
        lambda nn: nn.InstanceNorm1d(3),
        (r(0, 0, 3, 6),),
    ),
    _case(
        "InstanceNorm1d-L0",
        lambda: nf.InstanceNorm1d(3, affine=True, track_running_stats=True),
        lambda nn: nn.InstanceNorm1d(3, affine=True, track_running_stats=True),
        (r(0, 2, 3, 0),),
    ),
    _case(
        "InstanceNorm2d",
        lambda: nf.InstanceNorm2d(3),
        lambda nn: nn.InstanceNorm2d(3),
        (r(0, 0, 3, 4, 4),),
    ),
    _case("LayerNorm-N0", lambda: nf.LayerNorm(4), lambda nn: nn.LayerNorm(4), (r(0, 0, 4),)),
    _case("LayerNorm-T0", lambda: nf.LayerNorm(4), lambda nn: nn.LayerNorm(4), (r(0, 2, 0, 4),)),
    _case(
        "GroupNorm-N0", lambda: nf.GroupNorm(2, 4), lambda nn: nn.GroupNorm(2, 4), (r(0, 0, 4, 5),)
    ),
    _case(
        "GroupNorm-L0", lambda: nf.GroupNorm(2, 4), lambda nn: nn.GroupNorm(2, 4), (r(0, 2, 4, 0),)
    ),
    _case("RMSNorm", lambda: nf.RMSNorm(4), lambda nn: nn.RMSNorm(4), (r(0, 0, 4),)),
    *[
        _case(a, (lambda a=a: getattr(nf, a)()), (lambda nn, a=a: getattr(nn, a)()), (r(0, 0, 5),))
        for a in ACTIVATIONS
    ],
    _case("PReLU", lambda: nf.PReLU(3), lambda nn: nn.PReLU(3), (r(0, 0, 3, 4),)),
    _case("Softmax", lambda: nf.Softmax(dim=1), lambda nn: nn.Softmax(dim=1), (r(0, 0, 4),)),
    _case(
        "LogSoftmax", lambda: nf.LogSoftmax(dim=-1), lambda nn: nn.LogSoftmax(dim=-1), (r(0, 0, 4),)
    ),
    _case("Softmax-C0", lambda: nf.Softmax(dim=0), lambda nn: nn.Softmax(dim=0), (r(0, 0, 4),)),
    _case("Dropout", lambda: nf.Dropout(0.5, rng=0), lambda nn: nn.Dropout(0.5), (r(0, 0, 4),)),
    _case(
        "Dropout1d",
        lambda: nf.Dropout1d(0.5, rng=0),
        lambda nn: nn.Dropout1d(0.5),
        (r(0, 0, 3, 5),),
    ),
    _case(
        "Dropout2d",
        lambda: nf.Dropout2d(0.5, rng=0),
        lambda nn: nn.Dropout2d(0.5),
        (r(0, 0, 3, 4, 4),),
    ),
    _case(
        "AlphaDropout",
        lambda: nf.AlphaDropout(0.5, rng=0),
        lambda nn: nn.AlphaDropout(0.5),
        (r(0, 0, 4),),
    ),
    _case(
        "Embedding-0",
        lambda: nf.Embedding(10, 3, rng=0),
        lambda nn: nn.Embedding(10, 3),
        (ints(0),),
    ),
    _case(
        "Embedding-2x0",
        lambda: nf.Embedding(10, 3, rng=0),
        lambda nn: nn.Embedding(10, 3),
        (ints(2, 0),),
    ),
    _case(
        "EmbeddingBag-2D",
        lambda: nf.EmbeddingBag(10, 3, rng=0),
        lambda nn: nn.EmbeddingBag(10, 3),
        (ints(0, 3),),
    ),
    _case(
        "EmbeddingBag-1D",
        lambda: nf.EmbeddingBag(10, 3, mode="sum", rng=0),
        lambda nn: nn.EmbeddingBag(10, 3, mode="sum"),
        (ints(0), np.zeros(0, dtype=np.int64)),
    ),
    _case("Flatten", lambda: nf.Flatten(), lambda nn: nn.Flatten(), (r(0, 0, 3, 4),)),
    _case(
        "Unflatten",
        lambda: nf.Unflatten(1, (2, 2)),
        lambda nn: nn.Unflatten(1, (2, 2)),
        (r(0, 0, 4),),
    ),
    _case("ZeroPad2d", lambda: nf.ZeroPad2d(1), lambda nn: nn.ZeroPad2d(1), (r(0, 0, 2, 4, 5),)),
    _case(
        "Upsample-nearest",
        lambda: nf.Upsample(scale_factor=2),
        lambda nn: nn.Upsample(scale_factor=2),
        (r(0, 0, 3, 5),),
    ),
    _case(
        "Upsample-bilinear",
        lambda: nf.Upsample(scale_factor=2, mode="bilinear", align_corners=False),
        lambda nn: nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False),
        (r(0, 0, 2, 3, 3),),
    ),
    _case(
        "RNN",
        lambda: nf.RNN(2, 3, rng=0),
        lambda nn: nn.RNN(2, 3, batch_first=True),
        (r(0, 0, 4, 2),),
    ),
    _case(
        "LSTM-state",
        lambda: nf.LSTM(2, 3, num_layers=2, rng=0),
        lambda nn: nn.LSTM(2, 3, num_layers=2, batch_first=True),
        (r(0, 0, 4, 2), (r(1, 2, 0, 3), r(2, 2, 0, 3))),
    ),
    _case(
        "GRU-bidirectional",
        lambda: nf.GRU(2, 3, batch_first=False, bidirectional=True, rng=0),
        lambda nn: nn.GRU(2, 3, bidirectional=True),
        (r(0, 4, 0, 2),),
    ),
    _case("RNNCell", lambda: nf.RNNCell(5, 4, rng=0), lambda nn: nn.RNNCell(5, 4), (r(0, 0, 5),)),
    _case(
        "GRUCell",
        lambda: nf.GRUCell(5, 4, rng=0),
        lambda nn: nn.GRUCell(5, 4),
        (r(0, 0, 5), r(1, 0, 4)),
    ),
    _case(
        "LSTMCell",
        lambda: nf.LSTMCell(5, 4, rng=0),
        lambda nn: nn.LSTMCell(5, 4),
        (r(0, 0, 5), (r(1, 0, 4), r(2, 0, 4))),
    ),
    _case(
        "MHA-N0",
        lambda: nf.MultiheadAttention(4, 2, rng=0),
        lambda nn: nn.MultiheadAttention(4, 2, batch_first=True),
        (r(0, 0, 3, 4), r(1, 0, 5, 4), r(2, 0, 5, 4)),
    ),
    _case(
        "MHA-L0",
        lambda: nf.MultiheadAttention(4, 2, rng=0),
        lambda nn: nn.MultiheadAttention(4, 2, batch_first=True),
        (r(0, 2, 0, 4), r(1, 2, 5, 4), r(2, 2, 5, 4)),
    ),
    _case(
        "EncoderLayer",
        lambda: _encoder(nf, False),
        lambda nn: _encoder(nn, True),
        (r(0, 0, 5, 8),),
    ),
    _case(
        "Sequential",
        lambda: nf.Sequential(nf.Dense(3, 4, rng=0), nf.ReLU(), nf.Dense(4, 2, rng=1)),
        None,
        (r(0, 0, 3),),
    ),
    _case(
        "PositionalEncoding", lambda: nf.PositionalEncoding(4, max_len=10), None, (r(0, 0, 5, 4),)
    ),
]
IDS = [c[0] for c in CASES]


def _prepare(make, train):
    layer = as_float64(make())
    return layer.train(train)


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_empty_in_empty_out(case):
    _, make, _, args, kwargs, train = case
    layer = _prepare(make, train)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no 'mean of empty slice' or division warnings either
        out, _, grads, params = run_nf(layer, args, kwargs)
    assert any(o.size == 0 for o in leaves(out))
    float_args = [a for a in leaves(args) if a.dtype.kind == "f"]
    assert len(leaves(grads)) == len(float_args)
    for g, a in zip(leaves(grads), float_args):
        assert g.shape == a.shape
    for name, g in params.items():
        assert not np.any(g), name


# GroupNorm over zero positions: PyTorch's weight gradient is NaN (0 * the NaN statistics of no
# values); nnframe's is 0, the sum over no elements. test_empty_in_empty_out covers it.
TORCH_CASES = [c for c in CASES if c[2] is not None and c[0] != "GroupNorm-L0"]


@pytest.mark.parametrize("case", TORCH_CASES, ids=[c[0] for c in TORCH_CASES])
def test_empty_matches_torch(case):
    torch = pytest.importorskip("torch")
    _, make, make_torch, args, kwargs, train = case
    theirs = make_torch(torch.nn).double().train(train)
    ours = _prepare(make, train)
    assert_parity(ours, theirs, args, kwargs)
    for name, value in ours.named_buffers():  # running statistics as PyTorch leaves them
        np.testing.assert_array_equal(
            value, dict(theirs.named_buffers())[name].numpy(), err_msg=name
        )


def test_empty_batch_norm_keeps_running_statistics_and_counts_the_batch():
    bn = nf.BatchNorm1d(3)
    bn.running_mean[:] = 0.5
    bn(np.zeros((0, 3, 4), np.float32))
    np.testing.assert_array_equal(bn.running_mean, 0.5)
    np.testing.assert_array_equal(bn.running_var, 1.0)
    assert int(bn.num_batches_tracked) == 1


# ----------------------------------------------------------------------------- drawn shapes
@settings(max_examples=25, deadline=None)
@given(n=st.integers(0, 2), lead=st.integers(0, 2), f=st.integers(1, 3), out=st.integers(1, 3))
def test_dense_with_zero_size_axes_matches_torch(n, lead, f, out):
    torch = pytest.importorskip("torch")
    assert_parity(
        as_float64(nf.Dense(f, out, rng=0)), torch.nn.Linear(f, out).double(), (r(0, n, lead, f),)
    )


@settings(max_examples=25, deadline=None)
@given(n=st.integers(0, 2), c=st.integers(1, 3), length=st.integers(3, 6), stride=st.integers(1, 2))
def test_conv1d_with_drawn_batches_matches_torch(n, c, length, stride):
    torch = pytest.importorskip("torch")
    ours = as_float64(nf.Conv1d(c, 2, 3, stride=stride, rng=0))
    assert_parity(ours, torch.nn.Conv1d(c, 2, 3, stride=stride).double(), (r(0, n, c, length),))


@settings(max_examples=25, deadline=None)
@given(shape=st.lists(st.integers(0, 3), min_size=1, max_size=4), act=st.sampled_from(ACTIVATIONS))
def test_activations_on_drawn_shapes_with_zero_axes(shape, act):
    x = r(0, *shape)
    layer = getattr(nf, act)().to(np.float64)
    y = layer(x)
    assert y.shape == x.shape and layer.backward(np.ones_like(y)).shape == x.shape


# ----------------------------------------------------------------------------- losses
LOSSES = [
    ("MSELoss", {}, lambda n: (r(0, n, 3), r(1, n, 3))),
    ("L1Loss", {}, lambda n: (r(0, n, 3), r(1, n, 3))),
    ("HuberLoss", {}, lambda n: (r(0, n, 3), r(1, n, 3))),
    ("SmoothL1Loss", {}, lambda n: (r(0, n, 3), r(1, n, 3))),
    ("PoissonNLLLoss", {}, lambda n: (r(0, n, 3), np.abs(r(1, n, 3)))),
    ("BCELoss", {}, lambda n: (1 / (1 + np.exp(r(0, n, 3))), np.ones((n, 3)) * 0.3)),
    ("BCEWithLogitsLoss", {}, lambda n: (r(0, n, 3), np.ones((n, 3)) * 0.3)),
    ("CrossEntropyLoss", {}, lambda n: (r(0, n, 4), ints(n, high=4))),
    ("CrossEntropyLoss", {"label_smoothing": 0.1}, lambda n: (r(0, n, 4, 2), ints(n, 2, high=4))),
    ("CrossEntropyLoss", {}, lambda n: (r(0, n, 4), np.full((n, 4), 0.25))),
    ("NLLLoss", {}, lambda n: (r(0, n, 4), ints(n, high=4))),
    ("KLDivLoss", {}, lambda n: (r(0, n, 4), np.full((n, 4), 0.25))),
    ("MultiMarginLoss", {}, lambda n: (r(0, n, 4), ints(n, high=4))),
    ("HingeEmbeddingLoss", {}, lambda n: (r(0, n, 3), np.ones((n, 3)))),
    ("CosineEmbeddingLoss", {}, lambda n: ((r(0, n, 5), r(1, n, 5)), np.ones(n))),
    ("MarginRankingLoss", {}, lambda n: ((r(0, n), r(1, n)), np.ones(n))),
]
LOSS_IDS = [f"{name}-{i}" for i, (name, _, _) in enumerate(LOSSES)]


def _torch_kwargs(kw):
    return dict(kw)


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("case", LOSSES, ids=LOSS_IDS)
def test_empty_loss(case, reduction):
    name, kw, data = case
    pred, target = data(0)
    loss = getattr(nf, name)(reduction=reduction, **kw)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        value = loss(pred, target)
        g = np.zeros(np.shape(value)) if reduction == "none" else None
        grad = loss.backward(g)
    if reduction == "none":
        assert np.size(value) == 0
    else:
        assert np.isnan(value) if reduction == "mean" else value == 0.0
    for d, p in zip(leaves(grad), leaves(pred)):
        assert d.shape == p.shape


# MultiMarginLoss 'mean' over an empty batch: PyTorch returns uninitialized memory; nnframe gives
# NaN like every other loss (test_empty_loss checks it).
TORCH_LOSSES = [
    pytest.param(case, red, id=f"{i}-{red}")
    for i, case in zip(LOSS_IDS, LOSSES)
    for red in ("mean", "sum", "none")
    if not (case[0] == "MultiMarginLoss" and red == "mean")
]


@pytest.mark.parametrize(("case", "reduction"), TORCH_LOSSES)
def test_empty_loss_matches_torch(case, reduction):
    torch = pytest.importorskip("torch")
    name, kw, data = case
    pred, target = data(0)
    assert_loss_parity(
        getattr(nf, name)(reduction=reduction, **kw),
        getattr(torch.nn, name)(reduction=reduction, **_torch_kwargs(kw)),
        pred,
        target,
        reduction,
    )


def test_kl_batchmean_over_an_empty_batch_is_nan():
    torch = pytest.importorskip("torch")
    pred, target = r(0, 0, 4), np.zeros((0, 4))
    assert_loss_parity(
        nf.KLDivLoss(reduction="batchmean"),
        torch.nn.KLDivLoss(reduction="batchmean"),
        pred,
        target,
        "batchmean",
    )


@settings(max_examples=25, deadline=None)
@given(n=st.integers(0, 3), c=st.integers(1, 4), reduction=st.sampled_from(["mean", "sum", "none"]))
def test_cross_entropy_on_drawn_batches_matches_torch(n, c, reduction):
    torch = pytest.importorskip("torch")
    pred, target = r(n, n, c), np.random.default_rng(n).integers(0, c, size=n)
    assert_loss_parity(
        nf.CrossEntropyLoss(reduction=reduction),
        torch.nn.CrossEntropyLoss(reduction=reduction),
        pred,
        target,
        reduction,
    )
