"""Losses: gradient checks under drawn shapes, values and reductions (with and without
sample_weight), PyTorch parity in float64, worked examples, stability and every error message."""

import math
import warnings

import numpy as np
import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

import nnframe as nf
from nnframe.layers.losses import log_softmax
from tests.strategies import normal_array, seeds

CHECKED_MODULES = [
    nf.MSELoss,
    nf.L1Loss,
    nf.HuberLoss,
    nf.SmoothL1Loss,
    nf.BCELoss,
    nf.BCEWithLogitsLoss,
    nf.CrossEntropyLoss,
    nf.NLLLoss,
    nf.KLDivLoss,
    nf.PoissonNLLLoss,
    nf.HingeEmbeddingLoss,
    nf.MultiMarginLoss,
    nf.CosineEmbeddingLoss,
    nf.MarginRankingLoss,
]

REDUCTIONS = ("mean", "sum", "none")
KINK = 1e-3  # drawn values stay this far from a loss's kinks, where no derivative exists


def _signs(rng, shape):
    return np.where(rng.random(shape) < 0.5, -1.0, 1.0)


def _class_weight(rng, c, on):
    return rng.uniform(0.2, 2.0, size=c) if on else None


def make_case(kind: str, seed: int, n: int, c: int):
    """(class name, constructor kwargs, pred, target) for a drawn case. The kwargs are PyTorch's
    own, so the same call builds the torch.nn loss for parity checks. None when the draw lands
    on a kink (the caller rejects it)."""
    rng = np.random.default_rng(seed)
    x = normal_array(seed, (n, c))
    away = normal_array(seed + 1, (n, c), away_from_zero=0.05)  # |away| >= 0.05
    opt = rng.random(4) < 0.5  # optional features, drawn
    if kind == "MSELoss":
        return kind, {}, x, normal_array(seed + 2, (n, c))
    if kind == "L1Loss":
        return kind, {}, x, x - away
    if kind == "HuberLoss":  # C1 at |d| = delta: no kink to avoid
        return kind, {"delta": float(rng.uniform(0.3, 2.0))}, 2 * x, normal_array(seed + 2, (n, c))
    if kind == "SmoothL1Loss":  # beta = 0 is L1: keep d off 0
        return kind, {"beta": float(rng.choice([0.0, 0.5, 1.5]))}, x, x - 2 * away
    if kind == "BCELoss":
        kwargs = {"weight": _class_weight(rng, c, opt[0])}
        return kind, kwargs, rng.uniform(0.05, 0.95, (n, c)), rng.random((n, c))
    if kind == "BCEWithLogitsLoss":
        kwargs = {
            "weight": _class_weight(rng, c, opt[0]),
            "pos_weight": _class_weight(rng, c, opt[1]),
        }
        return kind, kwargs, 3 * x, rng.random((n, c))
    if kind in ("CrossEntropyLoss", "NLLLoss"):
        shape = (n, c) if not opt[2] else (n, c, 2)  # (N, C) or (N, C, d1)
        logits = normal_array(seed, shape, scale=2.0)
        target = rng.integers(0, c, size=(n,) + shape[2:])
        ignore = int(rng.integers(0, c)) if opt[3] else -100
        target.flat[rng.random(target.size) < 0.3] = ignore
        target.flat[0] = (ignore + 1) % c  # at least one kept target: the mean is defined
        kwargs = {"weight": _class_weight(rng, c, opt[0]), "ignore_index": ignore}
        if kind == "NLLLoss":
            return kind, kwargs, log_softmax(logits, axis=1), target
        kwargs["label_smoothing"] = float(rng.choice([0.0, 0.1, 0.3]))
        if opt[1]:  # class probabilities instead of indices (nothing to ignore then)
            target = np.exp(log_softmax(normal_array(seed + 3, shape), axis=1))
            kwargs["ignore_index"] = -100
        return kind, kwargs, logits, target
    if kind == "KLDivLoss":
        log_target = bool(opt[0])
        target = log_softmax(normal_array(seed + 2, (n, c)), axis=1)
        if not log_target:
            target = np.exp(target) * (rng.random((n, c)) < 0.8)  # some exact zeros: 0 log 0 = 0
        return kind, {"log_target": log_target}, log_softmax(x, axis=1), target
    if kind == "PoissonNLLLoss":
        kwargs = {"log_input": bool(opt[0]), "full": bool(opt[1]), "eps": 1e-8}
        pred = x if opt[0] else rng.uniform(0.2, 3.0, (n, c))
        return kind, kwargs, pred, rng.poisson(2.0, (n, c)).astype(np.float64)
    if kind == "HingeEmbeddingLoss":
        margin = float(rng.uniform(0.5, 1.5))
        return kind, {"margin": margin}, margin + away, _signs(rng, (n, c))
    if kind == "MultiMarginLoss":
        p, margin = int(rng.choice([1, 2])), float(rng.uniform(0.0, 1.5))
        target = rng.integers(0, c, size=n)
        z = margin - x[np.arange(n), target][:, None] + x
        if np.any(np.abs(z) < KINK):
            return None
        return kind, {"p": p, "margin": margin, "weight": _class_weight(rng, c, opt[0])}, x, target
    x2 = normal_array(seed + 2, (n, c))
    y = _signs(rng, (n,))
    margin = float(rng.uniform(-0.5, 0.5))
    if kind == "CosineEmbeddingLoss":
        cos = (x * x2).sum(1) / np.sqrt((x * x).sum(1) * (x2 * x2).sum(1))
        return (
            None if np.any(np.abs(cos - margin) < KINK) else (kind, {"margin": margin}, (x, x2), y)
        )
    if kind == "MarginRankingLoss":
        x1, x2 = x[:, 0], x2[:, 0]
        return (
            None
            if np.any(np.abs(margin - y * (x1 - x2)) < KINK)
            else (kind, {"margin": margin}, (x1, x2), y)
        )
    raise AssertionError(kind)


KINDS = [cls.__name__ for cls in CHECKED_MODULES]
sizes = st.integers(min_value=1, max_value=4)


def reductions_of(kind):
    return ("mean", "batchmean", "sum", "none") if kind == "KLDivLoss" else REDUCTIONS


def draw_case(data, kind):
    seed, n, c = data.draw(seeds), data.draw(sizes), data.draw(st.integers(2, 4))
    case = make_case(kind, seed, n, c)
    assume(case is not None)
    reduction = data.draw(st.sampled_from(reductions_of(kind)))
    name, kwargs, pred, target = case
    return getattr(nf, name)(reduction=reduction, **kwargs), kwargs, pred, target, n, seed


def batch(pred):
    return (pred[0] if isinstance(pred, tuple) else pred).shape[0]


# ------------------------------------------------------------------------ gradient checks
@pytest.mark.parametrize("kind", KINDS)
@given(data=st.data())
def test_gradcheck(kind, data):
    loss, _, pred, target, n, seed = draw_case(data, kind)
    nf.check_loss(loss, pred, target)
    w = np.random.default_rng(seed).uniform(0.0, 2.0, size=n)
    nf.check_loss(loss, pred, target, sample_weight=w)


@pytest.mark.parametrize("kind", KINDS)
@given(data=st.data())
def test_sample_weight_scales_each_sample(kind, data):
    loss, kwargs, pred, target, n, seed = draw_case(data, kind)
    w = np.random.default_rng(seed).uniform(0.0, 2.0, size=n)
    cls = type(loss)
    per = cls(reduction="none", **kwargs)(pred, target)
    weighted = cls(reduction="none", **kwargs)(pred, target, sample_weight=w)
    np.testing.assert_allclose(weighted, per * w.reshape((n,) + (1,) * (per.ndim - 1)), rtol=1e-12)
    total = cls(reduction="sum", **kwargs)
    np.testing.assert_allclose(total(pred, target, sample_weight=w), weighted.sum(), rtol=1e-10)
    # with all-ones weights nothing changes; 'mean' keeps its unweighted denominator
    for red in reductions_of(kind):
        plain = cls(reduction=red, **kwargs)(pred, target)
        ones = cls(reduction=red, **kwargs)(pred, target, sample_weight=np.ones(n))
        np.testing.assert_allclose(ones, plain, rtol=1e-12)
    mean = cls(reduction="mean", **kwargs)
    if per.sum():
        denom = per.sum() / mean(pred, target)
        np.testing.assert_allclose(
            mean(pred, target, sample_weight=w) * denom, weighted.sum(), rtol=1e-10
        )


# ------------------------------------------------------------------------ PyTorch parity
def _torch_args(torch, kwargs):
    return {k: torch.tensor(v) if isinstance(v, np.ndarray) else v for k, v in kwargs.items()}


@pytest.mark.filterwarnings("ignore:reduction. 'mean' divides the total loss:UserWarning")
@pytest.mark.parametrize("kind", KINDS)
@given(data=st.data())
def test_matches_torch_float64(kind, data):
    torch = pytest.importorskip("torch")
    loss, kwargs, pred, target, n, seed = draw_case(data, kind)
    tloss = getattr(torch.nn, kind)(reduction=loss.reduction, **_torch_args(torch, kwargs))
    preds = pred if isinstance(pred, tuple) else (pred,)
    tpreds = [torch.tensor(p, requires_grad=True) for p in preds]
    ttarget = torch.tensor(target)
    value = loss(pred, target)
    tvalue = tloss(*tpreds, ttarget)
    g = np.random.default_rng(seed).normal(size=np.shape(value))
    grads = loss.backward(g) if loss.reduction == "none" else loss.backward()
    tvalue.backward(torch.tensor(g) if loss.reduction == "none" else None)
    np.testing.assert_allclose(value, tvalue.detach().numpy(), rtol=1e-10, atol=1e-12)
    grads = grads if isinstance(grads, tuple) else (grads,)
    for got, tp in zip(grads, tpreds, strict=True):
        np.testing.assert_allclose(got, tp.grad.numpy(), rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("kdim", [False, True])
@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("smoothing", [0.0, 0.25])
@pytest.mark.parametrize("ignore_index", [-100, 1])
@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_cross_entropy_grid_matches_torch(kdim, weighted, smoothing, ignore_index, reduction):
    """Every combination of weight, label_smoothing, ignore_index and reduction: the values,
    the gradients and so the 'mean' denominators are PyTorch's."""
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(7)
    shape = (5, 3, 2) if kdim else (5, 3)
    z = rng.normal(size=shape) * 2
    y = np.array([0, 1, 2, 1, 1] if not kdim else [[0, 1], [2, 1], [1, 1], [0, 2], [1, 0]])
    kwargs = dict(weight=np.array([0.5, 2.0, 1.5]) if weighted else None, ignore_index=ignore_index)
    for name, extra, pred in [
        ("CrossEntropyLoss", {"label_smoothing": smoothing}, z),
        ("NLLLoss", {}, log_softmax(z, axis=1)),
    ]:
        loss = getattr(nf, name)(reduction=reduction, **kwargs, **extra)
        tloss = getattr(torch.nn, name)(reduction=reduction, **_torch_args(torch, kwargs | extra))
        tz = torch.tensor(pred, requires_grad=True)
        value, tvalue = loss(pred, y), tloss(tz, torch.tensor(y))
        g = rng.normal(size=np.shape(value))
        grad = loss.backward(g) if reduction == "none" else loss.backward()
        tvalue.backward(torch.tensor(g) if reduction == "none" else None)
        np.testing.assert_allclose(value, tvalue.detach().numpy(), rtol=1e-12)
        np.testing.assert_allclose(grad, tz.grad.numpy(), rtol=1e-10, atol=1e-14)


# ------------------------------------------------------------------------ dtype
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_float32_in_float32_out(kind, reduction):
    case = None
    for seed in range(20):
        case = case or make_case(kind, seed, 3, 3)
    name, kwargs, pred, target = case
    pred32 = (
        tuple(p.astype(np.float32) for p in pred)
        if isinstance(pred, tuple)
        else pred.astype(np.float32)
    )
    target32 = target.astype(np.float32) if target.dtype.kind == "f" else target
    loss = getattr(nf, name)(reduction=reduction, **kwargs)
    value = loss(pred32, target32, sample_weight=np.ones(3))
    if reduction == "none":
        assert value.dtype == np.float32
        grads = loss.backward(np.ones(value.shape))  # a float64 grad_output is cast, not upcast
    else:
        assert type(value) is float
        grads = loss.backward()
    for g in grads if isinstance(grads, tuple) else (grads,):
        assert g.dtype == np.float32


# ------------------------------------------------------------------------ worked examples
def test_mse_worked_example():
    pred, target = np.array([1.0, 2.0, 3.0]), np.array([0.0, 2.0, 5.0])
    loss = nf.MSELoss()
    assert loss(pred, target) == pytest.approx(5 / 3)  # (1 + 0 + 4) / 3
    np.testing.assert_allclose(loss.backward(), [2 / 3, 0.0, -4 / 3])  # 2 (pred - target) / 3
    assert nf.MSELoss(reduction="sum")(pred, target) == pytest.approx(5.0)
    np.testing.assert_allclose(nf.MSELoss(reduction="none")(pred, target), [1.0, 0.0, 4.0])
    weighted = nf.MSELoss()(pred, target, sample_weight=[1.0, 1.0, 0.5])
    assert weighted == pytest.approx(3 / 3)  # (1 + 0 + 0.5 * 4) / 3


def test_cross_entropy_worked_examples():
    loss = nf.CrossEntropyLoss()
    assert loss(np.zeros((1, 4)), np.array([2])) == pytest.approx(math.log(4))
    np.testing.assert_allclose(loss.backward(), [[0.25, 0.25, -0.75, 0.25]])  # softmax - onehot
    # two classes: logits (1, 3), class 0: -log(e / (e + e^3)) = log(1 + e^2)
    assert loss(np.array([[1.0, 3.0]]), np.array([0])) == pytest.approx(math.log(1 + math.e**2))
    s = 1 / (1 + math.exp(-2))  # softmax of class 1 = sigmoid(3 - 1)
    np.testing.assert_allclose(loss.backward(), [[(1 - s) - 1, s]])
    # logits (0, ln 3): softmax (1/4, 3/4)
    z = np.array([[0.0, math.log(3)], [0.0, math.log(3)]])
    weighted = nf.CrossEntropyLoss(weight=[1.0, 3.0])(z, np.array([0, 1]))
    assert weighted == pytest.approx((math.log(4) + 3 * math.log(4 / 3)) / (1 + 3))
    smooth = nf.CrossEntropyLoss(label_smoothing=0.5)(z[:1], np.array([0]))
    assert smooth == pytest.approx(0.75 * math.log(4) + 0.25 * math.log(4 / 3))  # q = (3/4, 1/4)
    ignored = nf.CrossEntropyLoss(ignore_index=-100)(z, np.array([0, -100]))
    assert ignored == pytest.approx(math.log(4))  # the ignored sample leaves the mean too
    probs = nf.CrossEntropyLoss()(z[:1], np.array([[0.5, 0.5]]))
    assert probs == pytest.approx(0.5 * math.log(4) + 0.5 * math.log(4 / 3))


def test_other_worked_examples():
    # BCE with logits at 0: log 2 per element, gradient sigmoid(0) - y
    loss = nf.BCEWithLogitsLoss(reduction="sum")
    assert loss(np.zeros(2), np.array([0.0, 1.0])) == pytest.approx(2 * math.log(2))
    np.testing.assert_allclose(loss.backward(), [0.5, -0.5])
    assert nf.BCELoss()(np.array([0.5]), np.array([1.0])) == pytest.approx(math.log(2))
    # PyTorch's documented MultiMarginLoss example
    assert nf.MultiMarginLoss()(np.array([[0.1, 0.2, 0.4, 0.8]]), np.array([3])) == pytest.approx(
        0.325
    )
    hinge = nf.HingeEmbeddingLoss(reduction="none")(np.array([0.3, 0.3]), np.array([1, -1]))
    np.testing.assert_allclose(hinge, [0.3, 0.7])
    cos = nf.CosineEmbeddingLoss(reduction="none")
    np.testing.assert_allclose(cos((np.eye(2), np.eye(2)[::-1]), np.array([1, -1])), [1.0, 0.0])
    assert nf.MarginRankingLoss()((np.array([1.0]), np.array([2.0])), np.array([1])) == 1.0
    kl = nf.KLDivLoss(reduction="batchmean")
    q = np.array([[0.5, 0.5], [1.0, 0.0]])
    assert kl(np.log(np.full((2, 2), 0.5)), q) == pytest.approx(math.log(2) / 2)  # (0 + log 2) / 2
    assert nf.PoissonNLLLoss()(np.zeros(1), np.ones(1)) == 1.0  # exp(0) - 1 * 0
    assert nf.HuberLoss(delta=1.0)(np.array([3.0]), np.zeros(1)) == 2.5  # 1 * (3 - 0.5)
    assert nf.SmoothL1Loss(beta=2.0)(np.array([1.0]), np.zeros(1)) == 0.25  # 1 / (2 * 2)


def test_mean_over_nothing_is_nan_with_zero_gradient():
    loss = nf.CrossEntropyLoss(ignore_index=1, label_smoothing=0.2)
    assert math.isnan(loss(np.zeros((2, 3)), np.array([1, 1])))
    np.testing.assert_array_equal(loss.backward(), np.zeros((2, 3)))
    assert (
        nf.CrossEntropyLoss(ignore_index=1, reduction="sum")(np.zeros((2, 3)), np.array([1, 1]))
        == 0
    )


def test_repr_shows_hyperparameters():
    assert repr(nf.HuberLoss(delta=2.0, reduction="sum")) == "HuberLoss(delta=2.0, reduction='sum')"
    assert repr(nf.MSELoss()) == "MSELoss()"


# ------------------------------------------------------------------------ stability
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_extreme_logits_are_finite(dtype):
    z = np.array([[1e4, -1e4, 0.0], [-1e4, 1e4, 1e4]], dtype=dtype)
    with warnings.catch_warnings(), np.errstate(over="raise", divide="raise", invalid="raise"):
        warnings.simplefilter("error")
        for loss, target in [
            (nf.CrossEntropyLoss(label_smoothing=0.1), np.array([1, 0])),
            (nf.CrossEntropyLoss(), np.full(z.shape, 1 / 3)),
            (
                nf.BCEWithLogitsLoss(pos_weight=np.array([1.0, 2.0, 3.0])),
                np.array([[0, 1, 1], [1, 0, 1.0]]),
            ),
        ]:
            value = loss(z, target)
            g = loss.backward()
            assert np.isfinite(value) and np.all(np.isfinite(g)) and g.dtype == dtype
    ce = nf.CrossEntropyLoss()
    assert ce(z[:1], np.array([0])) == 0.0 and ce(z[:1], np.array([1])) == pytest.approx(2e4)


def test_bce_clamps_log_at_minus_100():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        loss = nf.BCELoss(reduction="none")
        value = loss(np.array([0.0, 1.0, 0.0]), np.array([1.0, 0.0, 0.0]))
        np.testing.assert_array_equal(value, [100.0, 100.0, 0.0])
        np.testing.assert_allclose(loss.backward(np.ones(3)), [-1e12, 1e12, 0.0])


# ------------------------------------------------------------------------ errors
def test_shape_traps_raise():
    with pytest.raises(
        nf.ShapeError,
        match=r"^MSELoss: pred and target must have the same shape, got \(8, 1\) and \(8,\)\. "
        r"Reshape the target: target\.reshape\(8, 1\)$",
    ):
        nf.MSELoss()(np.zeros((8, 1)), np.zeros(8))
    with pytest.raises(
        nf.ShapeError, match=r"BCEWithLogitsLoss: pred and target must have the same shape"
    ):
        nf.BCEWithLogitsLoss()(np.zeros(8), np.zeros((8, 1)))
    with pytest.raises(
        nf.ShapeError,
        match=r"MarginRankingLoss: x1 and target must have the same shape, got \(4,\) and \(4, 1\)",
    ):
        nf.MarginRankingLoss()((np.zeros(4), np.zeros(4)), np.ones((4, 1)))


@pytest.mark.parametrize(
    "call, error, message",
    [
        (
            lambda: nf.CrossEntropyLoss()(np.zeros((4, 3)), np.array([0, 5, 1, 2])),
            ValueError,
            r"^CrossEntropyLoss: target must hold class indices in \[0, 3\), got 5$",
        ),
        (
            lambda: nf.CrossEntropyLoss()(np.zeros((4, 3)), np.array([0, -1, 1, 2])),
            ValueError,
            r"got -1$",
        ),
        (
            lambda: nf.CrossEntropyLoss()(np.zeros((4, 3)), np.zeros((4, 1), int)),
            nf.ShapeError,
            r"^CrossEntropyLoss: expected target of shape \(4,\) \(class indices\) or \(4, 3\) \(probabilities\), got \(4, 1\)$",
        ),
        (
            lambda: nf.CrossEntropyLoss()(np.zeros((2, 3)), np.array([0.5, 1.0])),
            TypeError,
            r"^CrossEntropyLoss: expected integer class indices, got dtype float64$",
        ),
        (
            lambda: nf.CrossEntropyLoss()(np.zeros(()), np.array(1)),
            nf.ShapeError,
            r"^CrossEntropyLoss: expected pred of shape \(N, C\) or \(N, C, d1, ...\), got \(\)$",
        ),
        (
            lambda: nf.CrossEntropyLoss(weight=[1.0, 2.0])(np.zeros((2, 3)), np.array([0, 1])),
            nf.ShapeError,
            r"^CrossEntropyLoss: expected weight of shape \(3,\), got \(2,\)$",
        ),
        (
            lambda: nf.CrossEntropyLoss(label_smoothing=1.5),
            ValueError,
            r"^CrossEntropyLoss: invalid label_smoothing=1.5 \(must be in \[0, 1\]\)$",
        ),
        (
            lambda: nf.NLLLoss()(np.zeros((2, 3)), np.full((2, 3), 0.5)),
            nf.ShapeError,
            r"^NLLLoss: expected target of shape \(2,\) \(class indices\), got \(2, 3\)$",
        ),
        (
            lambda: nf.MSELoss(reduction="avg"),
            ValueError,
            r"^MSELoss: invalid reduction='avg' \(must be one of \('mean', 'sum', 'none'\)\)$",
        ),
        (
            lambda: nf.MSELoss(reduction="batchmean"),
            ValueError,
            r"MSELoss: invalid reduction='batchmean'",
        ),
        (
            lambda: nf.MSELoss()(np.zeros((4, 2)), np.zeros((4, 2)), sample_weight=np.ones((4, 1))),
            nf.ShapeError,
            r"^MSELoss: expected sample_weight of shape \(4,\), got \(4, 1\)$",
        ),
        (
            lambda: nf.MSELoss()(np.zeros(()), np.zeros(()), sample_weight=np.ones(1)),
            nf.ShapeError,
            r"^MSELoss: expected a batch axis for sample_weight, got a scalar loss$",
        ),
        (
            lambda: nf.MSELoss()(np.array(["a"]), np.zeros(1)),
            TypeError,
            r"^MSELoss: expected a real numeric input",
        ),
        (
            lambda: nf.HuberLoss(delta=0.0),
            ValueError,
            r"^HuberLoss: invalid delta=0.0 \(must be > 0\)$",
        ),
        (
            lambda: nf.SmoothL1Loss(beta=-1.0),
            ValueError,
            r"^SmoothL1Loss: invalid beta=-1.0 \(must be >= 0\)$",
        ),
        (
            lambda: nf.PoissonNLLLoss(eps=-1.0),
            ValueError,
            r"^PoissonNLLLoss: invalid eps=-1.0 \(must be >= 0\)$",
        ),
        (
            lambda: nf.MultiMarginLoss(p=3),
            ValueError,
            r"^MultiMarginLoss: invalid p=3 \(must be 1 or 2\)$",
        ),
        (
            lambda: nf.BCELoss()(np.array([0.5, 1.5]), np.zeros(2)),
            ValueError,
            r"^BCELoss: expected pred in \[0, 1\], got 1.5$",
        ),
        (
            lambda: nf.BCELoss()(np.array([0.5]), np.array([-1.0])),
            ValueError,
            r"^BCELoss: expected target in \[0, 1\], got -1$",
        ),
        (
            lambda: nf.BCELoss(weight=[1.0, 2.0])(np.full((4, 3), 0.5), np.zeros((4, 3))),
            nf.ShapeError,
            r"^BCELoss: expected weight broadcastable to \(4, 3\), got \(2,\)$",
        ),
        (
            lambda: nf.BCEWithLogitsLoss(pos_weight=np.ones((2, 4, 3)))(
                np.zeros((4, 3)), np.zeros((4, 3))
            ),
            nf.ShapeError,
            r"^BCEWithLogitsLoss: expected pos_weight broadcastable to \(4, 3\), got \(2, 4, 3\)$",
        ),
        (
            lambda: nf.HingeEmbeddingLoss()(np.zeros(2), np.array([1, 0])),
            ValueError,
            r"^HingeEmbeddingLoss: target must hold 1 or -1, got 0$",
        ),
        (
            lambda: nf.MultiMarginLoss()(np.zeros(()), np.array(1)),
            nf.ShapeError,
            r"^MultiMarginLoss: expected pred of shape \(N, C\), got \(\)$",
        ),
        (
            lambda: nf.MultiMarginLoss()(np.zeros((2, 3)), np.array([0, 3])),
            ValueError,
            r"^MultiMarginLoss: target must hold class indices in \[0, 3\), got 3$",
        ),
        (
            lambda: nf.MultiMarginLoss()(np.zeros((2, 3)), np.array([[0], [1]])),
            nf.ShapeError,
            r"^MultiMarginLoss: expected target of shape \(2,\) \(class indices\), got \(2, 1\)$",
        ),
        (
            lambda: nf.MultiMarginLoss(weight=[1.0])(np.zeros((2, 3)), np.array([0, 1])),
            nf.ShapeError,
            r"^MultiMarginLoss: expected weight of shape \(3,\), got \(1,\)$",
        ),
        (
            lambda: nf.CosineEmbeddingLoss()(np.zeros((2, 3)), np.ones(2)),
            TypeError,
            r"^CosineEmbeddingLoss: expected pred as a pair \(x1, x2\), got ndarray$",
        ),
        (
            lambda: nf.CosineEmbeddingLoss()((np.zeros((2, 3)), np.zeros((2, 4))), np.ones(2)),
            nf.ShapeError,
            r"^CosineEmbeddingLoss: x1 and x2 must have the same shape, got \(2, 3\) and \(2, 4\)$",
        ),
        (
            lambda: nf.CosineEmbeddingLoss()((np.zeros(()), np.zeros(())), np.ones(1)),
            nf.ShapeError,
            r"^CosineEmbeddingLoss: expected x1 and x2 of shape \(N, D\), got \(\)$",
        ),
        (
            lambda: nf.CosineEmbeddingLoss()((np.ones((2, 3)), np.ones((2, 3))), np.ones((2, 1))),
            nf.ShapeError,
            r"^CosineEmbeddingLoss: expected target of shape \(2,\), got \(2, 1\)$",
        ),
        (
            lambda: nf.CosineEmbeddingLoss()((np.ones((2, 3)), np.ones((2, 3))), np.array([1, 2])),
            ValueError,
            r"^CosineEmbeddingLoss: target must hold 1 or -1, got 2$",
        ),
    ],
)
def test_error_messages(call, error, message):
    with pytest.raises(error, match=message):
        call()


def test_backward_misuse():
    with pytest.raises(RuntimeError, match=r"^MSELoss\(\): backward called before forward$"):
        nf.MSELoss().backward()
    loss = nf.L1Loss(reduction="none")
    loss(np.zeros(4), np.ones(4))
    with pytest.raises(ValueError, match=r"backward needs grad_output with reduction='none'"):
        loss.backward()
    with pytest.raises(
        nf.ShapeError, match=r"^L1Loss: expected grad_output of shape \(4,\), got \(3,\)$"
    ):
        loss.backward(np.ones(3))
    failed = nf.MSELoss()
    failed(np.zeros(2), np.zeros(2))
    with pytest.raises(nf.ShapeError):
        failed(np.zeros(2), np.zeros(3))
    with pytest.raises(RuntimeError, match="backward called before forward"):
        failed.backward()  # a failed forward leaves nothing stale to differentiate


def test_reduced_backward_takes_a_scalar_scale():
    loss = nf.MSELoss()
    loss(np.array([1.0, 2.0]), np.zeros(2))
    np.testing.assert_allclose(loss.backward(3.0), 3 * loss.backward())


@given(seed=seeds, n=st.integers(1, 6), c=st.integers(2, 5))
def test_cross_entropy_fast_path_equals_general_path(seed, n, c):
    """Plain integer targets take a fast path; weights of ones force the general one."""
    rng = np.random.default_rng(seed)
    z = rng.normal(size=(n, c)) * 3
    y = rng.integers(0, c, size=n)
    fast, general = nf.CrossEntropyLoss(), nf.CrossEntropyLoss(weight=np.ones(c))
    assert fast(z, y) == pytest.approx(general(z, y), rel=1e-12)
    np.testing.assert_allclose(fast.backward(), general.backward(), rtol=1e-12, atol=1e-15)
