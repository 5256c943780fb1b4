"""The losses of issue 14: SoftMarginLoss, MultiLabelSoftMarginLoss, MultiLabelMarginLoss,
TripletMarginLoss, GaussianNLLLoss and CTCLoss. Gradient checks under drawn shapes (empty
batches included), PyTorch parity in float64 (outputs and every input gradient), worked
examples and errors."""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import nnframe as nf
from nnframe.layers.losses import log_softmax
from tests.strategies import seeds

torch = pytest.importorskip("torch")

CHECKED_MODULES = [
    nf.SoftMarginLoss,
    nf.MultiLabelSoftMarginLoss,
    nf.MultiLabelMarginLoss,
    nf.TripletMarginLoss,
    nf.GaussianNLLLoss,
    nf.CTCLoss,
]

REDUCTIONS = ("mean", "sum", "none")
RTOL = 1e-9


class Called(nf.Loss):
    """check_loss takes ``loss(pred, target)``; this adapter calls a loss with PyTorch's call
    form (``anchor, positive, negative``; ``input, target, var``; ``log_probs, targets,
    input_lengths, target_lengths``) and returns its backward: the loss's own code is checked."""

    def __init__(self, inner, form, *extra):
        super().__init__(inner.reduction)
        self.inner, self.form, self.extra = inner, form, extra

    def __repr__(self):
        return repr(self.inner)

    def __call__(self, pred, target, sample_weight=None):
        if self.form == "triplet":
            return self.inner(*pred)
        if self.form == "gaussian":
            return self.inner(pred[0], target, pred[1])
        return self.inner(pred, target, *self.extra)

    def backward(self, grad_output=None):
        return self.inner.backward(grad_output)


def _t(a, grad=True):
    return torch.tensor(np.asarray(a), requires_grad=grad)


def _torch_loss(name, *args, **kwargs):
    return getattr(torch.nn, name)(*args, **kwargs)


def _backward_both(value, out, rng):
    """One output gradient for both: a random array for 'none', 1 otherwise."""
    g = rng.normal(size=np.shape(value)) if isinstance(value, np.ndarray) else None
    out.backward(torch.tensor(g) if g is not None else None)
    return g


def check(loss, pred, target):
    """check_loss; for an empty input (nothing to differentiate) the loss and its backward
    run and the gradients are empty arrays of the inputs' shapes."""
    preds = pred if isinstance(pred, tuple) else (pred,)
    if all(np.size(p) for p in preds):
        nf.check_loss(loss, pred, target)
        return
    value = loss(pred, target)
    grads = loss.backward(np.ones(np.shape(value)) if isinstance(value, np.ndarray) else None)
    grads = grads if isinstance(grads, tuple) else (grads,)
    assert [g.shape for g in grads] == [np.shape(p) for p in preds]


def _close(a, b):
    np.testing.assert_allclose(np.asarray(a), b.detach().numpy(), rtol=RTOL, atol=1e-12)


# ------------------------------------------------------------------------ simple margin losses
@given(seed=seeds, n=st.integers(0, 4), c=st.integers(1, 5), red=st.sampled_from(REDUCTIONS))
def test_soft_margin_parity_and_gradcheck(seed, n, c, red):
    rng = np.random.default_rng(seed)
    x, y = rng.normal(size=(n, c)) * 3, np.where(rng.random((n, c)) < 0.5, -1.0, 1.0)
    loss = nf.SoftMarginLoss(reduction=red)
    xt = _t(x)
    out = _torch_loss("SoftMarginLoss", reduction=red)(xt, _t(y, False))
    value = loss(x, y)
    _close(value, out)
    _close(loss.backward(_backward_both(value, out, rng)), xt.grad)
    check(nf.SoftMarginLoss(reduction=red), x, y)


@given(
    seed=seeds,
    n=st.integers(0, 4),
    c=st.integers(1, 5),
    red=st.sampled_from(REDUCTIONS),
    weighted=st.booleans(),
    unbatched=st.booleans(),
)
def test_multilabel_soft_margin_parity_and_gradcheck(seed, n, c, red, weighted, unbatched):
    rng = np.random.default_rng(seed)
    shape = (c,) if unbatched else (n, c)
    x, y = rng.normal(size=shape), (rng.random(shape) < 0.5).astype(float)
    w = rng.uniform(0.2, 2.0, c) if weighted else None
    loss = nf.MultiLabelSoftMarginLoss(w, reduction=red)
    xt = _t(x)
    ref = _torch_loss(
        "MultiLabelSoftMarginLoss", None if w is None else torch.tensor(w), reduction=red
    )
    out = ref(xt, _t(y, False))
    value = loss(x, y)
    _close(value, out)
    _close(loss.backward(_backward_both(value, out, rng)), xt.grad)
    check(loss, x, y)


def _multilabel_targets(rng, n, c):
    """Rows of target indices (repeats allowed) ended by -1, with junk after the -1."""
    t = rng.integers(0, c, size=(n, c))
    for row in t:
        k = rng.integers(0, c + 1)
        if k < c:
            row[k] = -1
    return t


@given(
    seed=seeds,
    n=st.integers(0, 4),
    c=st.integers(1, 5),
    red=st.sampled_from(REDUCTIONS),
    unbatched=st.booleans(),
)
def test_multilabel_margin_parity_and_gradcheck(seed, n, c, red, unbatched):
    rng = np.random.default_rng(seed)
    n = 1 if unbatched else n
    # distinct values 0.31 apart (plus an offset): no hinge sits at its kink
    x = rng.permutation(np.arange(n * c)).reshape(n, c) * 0.31 + 0.013
    t = _multilabel_targets(rng, n, c)
    if unbatched:
        x, t = x[0], t[0]
    loss = nf.MultiLabelMarginLoss(reduction=red)
    xt = _t(x)
    out = _torch_loss("MultiLabelMarginLoss", reduction=red)(xt, torch.tensor(t))
    value = loss(x, t)
    if n:  # PyTorch's mean over an empty batch is uninitialized memory; ours is nan
        _close(value, out)
        _close(loss.backward(_backward_both(value, out, rng)), xt.grad)
    check(loss, x, t)


def test_multilabel_margin_worked_example_and_errors():
    x = np.array([[0.1, 0.2, 0.4, 0.8]])
    # targets 3 and 0: hinges against classes 1 and 2, over C = 4 (PyTorch's documented example)
    expected = ((1 - (0.1 - 0.2)) + (1 - (0.1 - 0.4)) + (1 - (0.8 - 0.2)) + (1 - (0.8 - 0.4))) / 4
    assert nf.MultiLabelMarginLoss()(x, np.array([[3, 0, -1, 1]])) == pytest.approx(expected)
    with pytest.raises(ValueError, match=r"MultiLabelMarginLoss: target must hold class .* got 7"):
        nf.MultiLabelMarginLoss()(x, np.array([[7, -1, 0, 0]]))
    with pytest.raises(nf.ShapeError, match=r"expected target of shape \(1, 4\), got \(1, 3\)"):
        nf.MultiLabelMarginLoss()(x, np.array([[0, 1, 2]]))
    assert np.isnan(nf.MultiLabelMarginLoss()(np.zeros((0, 3)), np.zeros((0, 3), int)))


def test_legacy_size_average_and_reduce_follow_pytorch():
    assert nf.SoftMarginLoss(None, False).reduction == "none"
    assert nf.MultiLabelMarginLoss(False).reduction == "sum"
    assert nf.TripletMarginLoss(1.0, 2.0, 1e-6, False, None, None, "sum").reduction == "sum"


# ------------------------------------------------------------------------ triplets
@given(
    seed=seeds,
    n=st.integers(0, 4),
    d=st.integers(1, 5),
    red=st.sampled_from(REDUCTIONS),
    p=st.sampled_from([1.0, 2.0, 3.0]),
    swap=st.booleans(),
    unbatched=st.booleans(),
)
def test_triplet_margin_parity_and_gradcheck(seed, n, d, red, p, swap, unbatched):
    rng = np.random.default_rng(seed)
    shape = (d,) if unbatched else (n, d)
    xs = [rng.normal(size=shape) for _ in range(3)]
    loss = nf.TripletMarginLoss(0.7, p, 1e-6, swap, reduction=red)
    ts = [_t(x) for x in xs]
    out = _torch_loss("TripletMarginLoss", 0.7, p, 1e-6, swap, reduction=red)(*ts)
    value = loss(*xs)
    _close(value, out)
    for g, t in zip(loss.backward(_backward_both(value, out, rng)), ts):
        _close(g, t.grad)
    check(Called(loss, "triplet"), tuple(xs), np.zeros(()))


def test_triplet_margin_errors():
    with pytest.raises(ValueError, match=r"TripletMarginLoss: invalid margin=0"):
        nf.TripletMarginLoss(margin=0)
    with pytest.raises(nf.ShapeError, match=r"expected anchor, positive and negative of one shape"):
        nf.TripletMarginLoss()(np.zeros((2, 3)), np.zeros((2, 3)), np.zeros((2, 4)))


# ------------------------------------------------------------------------ Gaussian NLL
@given(
    seed=seeds,
    n=st.integers(0, 4),
    d=st.integers(1, 4),
    red=st.sampled_from(REDUCTIONS),
    full=st.booleans(),
    form=st.sampled_from(["same", "short", "one", "target-one"]),
)
def test_gaussian_nll_parity_and_gradcheck(seed, n, d, red, full, form):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, d))
    var_shape = {"short": (n,), "one": (n, 1)}.get(form, (n, d))
    y = rng.normal(size=(n, 1) if form == "target-one" else (n, d))
    var = rng.uniform(0.1, 2.0, size=var_shape)
    loss = nf.GaussianNLLLoss(full=full, reduction=red)
    xt, vt = _t(x), _t(var)
    out = _torch_loss("GaussianNLLLoss", full=full, reduction=red)(xt, _t(y, False), vt)
    value = loss(x, y, var)
    _close(value, out)
    gx, gv = loss.backward(_backward_both(value, out, rng))
    _close(gx, xt.grad)
    _close(gv, vt.grad)
    check(Called(loss, "gaussian"), (x, var), y)


def test_gaussian_nll_clamps_var_as_pytorch_and_refuses_negative_var():
    x, y, var = np.array([0.5, 1.0]), np.zeros(2), np.array([0.0, 1.0])
    loss = nf.GaussianNLLLoss(eps=1e-3, reduction="sum")
    xt, vt = _t(x), _t(var)
    out = _torch_loss("GaussianNLLLoss", eps=1e-3, reduction="sum")(xt, _t(y, False), vt)
    _close(loss(x, y, var), out)
    out.backward()
    for g, t in zip(loss.backward(), (xt, vt)):
        _close(g, t.grad)
    with pytest.raises(ValueError, match=r"GaussianNLLLoss: expected var >= 0, got -1"):
        loss(x, y, np.array([-1.0, 1.0]))
    with pytest.raises(nf.ShapeError, match=r"GaussianNLLLoss: expected var of shape \(2,\)"):
        loss(x, y, np.ones(3))


# ------------------------------------------------------------------------ CTC
@st.composite
def ctc_case(draw):
    seed = draw(seeds)
    rng = np.random.default_rng(seed)
    n, c, t = draw(st.integers(0, 3)), draw(st.integers(2, 5)), draw(st.integers(1, 7))
    s = draw(st.integers(0, 4))
    blank = draw(st.integers(0, c - 1))
    labels = [k for k in range(c) if k != blank]
    targets = rng.choice(labels, size=(n, s)) if n * s else np.zeros((n, s), np.int64)
    if n and s > 1 and draw(st.booleans()):
        targets[0, 1] = targets[0, 0]  # a repeated label needs a blank between
    in_len = rng.integers(0, t + 1, size=n)
    tg_len = rng.integers(0, s + 1, size=n)
    logits = rng.normal(size=(t, n, c))
    return seed, logits, targets, in_len, tg_len, blank


@given(case=ctc_case(), red=st.sampled_from(REDUCTIONS), concatenated=st.booleans())
def test_ctc_parity_through_log_softmax_and_gradcheck(case, red, concatenated):
    seed, logits, targets, in_len, tg_len, blank = case
    rng = np.random.default_rng(seed)
    if concatenated:
        targets = np.concatenate([targets[i, :k] for i, k in enumerate(tg_len)] + [[]]).astype(int)
    lsm = nf.LogSoftmax(-1)
    lp = lsm(logits)
    loss = nf.CTCLoss(blank, red, zero_infinity=True)
    value = loss(lp, targets, in_len, tg_len)
    if logits.shape[1] == 0:  # PyTorch refuses an empty batch; ours is empty (nan for 'mean')
        assert np.shape(value) == () or value.shape == (0,)
        assert loss.backward(np.zeros(0) if red == "none" else None).shape == logits.shape
        return
    lt = _t(logits)
    lpt = torch.log_softmax(lt, 2)
    ref = _torch_loss("CTCLoss", blank, red, zero_infinity=True)
    out = ref(lpt, torch.tensor(targets), torch.tensor(in_len), torch.tensor(tg_len))
    _close(value, out)
    grad = loss.backward(_backward_both(value, out, rng))
    _close(lsm.backward(grad), lt.grad)
    check(Called(loss, "ctc", in_len, tg_len), lp, targets)


def test_ctc_unbatched_and_infinite_losses():
    rng = np.random.default_rng(0)
    lp = log_softmax(rng.normal(size=(6, 4)), axis=-1)
    y = np.array([1, 2, 2])
    lt = _t(lp)
    out = _torch_loss("CTCLoss", reduction="none")(
        lt, torch.tensor(y), torch.tensor(6), torch.tensor(3)
    )
    loss = nf.CTCLoss(reduction="none")
    value = loss(lp, y, 6, 3)
    assert value.shape == ()
    _close(value, out)
    # a target that needs more frames than there are: inf, or 0 with zero_infinity
    assert nf.CTCLoss(reduction="sum")(lp, y, 3, 3) == np.inf
    zero = nf.CTCLoss(reduction="sum", zero_infinity=True)
    assert zero(lp, y, 3, 3) == 0.0
    assert not zero.backward().any()


def test_ctc_is_stable_for_long_sequences():
    rng = np.random.default_rng(1)
    lp = log_softmax(rng.normal(size=(2000, 1, 6)) * 5, axis=-1)
    y = rng.integers(1, 6, size=(1, 300))
    value = nf.CTCLoss()(lp, y, [2000], [300])
    out = _torch_loss("CTCLoss")(
        _t(lp, False), torch.tensor(y), torch.tensor([2000]), torch.tensor([300])
    )
    assert np.isfinite(value)
    _close(value, out)


def test_ctc_errors():
    lp = np.zeros((4, 2, 3))
    with pytest.raises(ValueError, match=r"CTCLoss: targets must hold class indices .* got 0"):
        nf.CTCLoss()(lp, np.array([[1, 0], [1, 2]]), [4, 4], [2, 2])
    with pytest.raises(ValueError, match=r"CTCLoss: expected input_lengths <= T=4, got 5"):
        nf.CTCLoss()(lp, np.array([[1], [2]]), [5, 4], [1, 1])
    with pytest.raises(nf.ShapeError, match=r"CTCLoss: expected target_lengths of shape \(2,\)"):
        nf.CTCLoss()(lp, np.array([[1], [2]]), [4, 4], [1])
    with pytest.raises(ValueError, match=r"CTCLoss: invalid blank=3"):
        nf.CTCLoss(blank=3)(lp, np.array([[1], [2]]), [4, 4], [1, 1])
