"""The layers of issue 14: 3-D pooling, LPPool1d/2d/3d, ConvTranspose3d, PixelShuffle,
PixelUnshuffle, ChannelShuffle, Fold, Unfold, Bilinear, CosineSimilarity, PairwiseDistance,
Upsample's bicubic/trilinear/linear modes and Linear. Gradient checks under drawn shapes (empty
batches included), float64 parity with PyTorch (same weights; outputs and every gradient),
unbatched inputs, examples and errors."""

import numpy as np
import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

import nnframe as nf
from tests.strategies import seeds

torch = pytest.importorskip("torch")

CHECKED_MODULES = [
    nf.MaxPool3d,
    nf.AvgPool3d,
    nf.AdaptiveAvgPool3d,
    nf.AdaptiveMaxPool3d,
    nf.LPPool1d,
    nf.LPPool2d,
    nf.LPPool3d,
    nf.ConvTranspose3d,
    nf.PixelShuffle,
    nf.PixelUnshuffle,
    nf.ChannelShuffle,
    nf.Fold,
    nf.Unfold,
    nf.Bilinear,
    nf.CosineSimilarity,
    nf.PairwiseDistance,
    nf.Linear,
]

RTOL, ATOL = 1e-9, 1e-12


class Lift(nf.Module):
    """A 0-d output (an unbatched distance) as shape (1,), for check_module; the layer's own
    backward runs inside."""

    def __init__(self, inner):
        super().__init__()
        self.inner = inner

    def forward(self, *xs):
        y = self.inner(*xs)
        self.save_for_backward(y.shape)
        return y.reshape(1)

    def backward(self, grad_output):
        (shape,) = self.saved
        return self.inner.backward(grad_output.reshape(shape))


def check(layer, *xs):
    """check_module; for an empty input an empty output and gradients of the inputs' shapes."""
    x = xs if len(xs) > 1 else xs[0]
    if all(a.size for a in xs) and np.ndim(layer(*xs)) == 0:
        layer = Lift(layer)
    if all(a.size for a in xs):
        nf.check_module(layer, x)
        return
    y = layer(*xs)
    grads = layer.backward(np.ones_like(y))
    grads = grads if isinstance(grads, tuple) else (grads,)
    assert [g.shape for g in grads] == [a.shape for a in xs]


def parity(layer, ref, *xs, seed=0, atol=ATOL):
    """Same input, same output gradient: outputs, input gradients and (when the layer has
    parameters, loaded into ref) parameter gradients agree with PyTorch (``atol``: for
    gradients that are differences of large terms, the size of their rounding)."""
    rng = np.random.default_rng(seed)
    params = dict(layer.named_parameters())
    if params:
        ref.load_state_dict({k: torch.tensor(v) for k, v in layer.state_dict().items()})
    xt = [torch.tensor(x, requires_grad=True) for x in xs]
    yt = ref(*xt)
    yt = yt[0] if isinstance(yt, tuple) else yt
    y = layer(*xs)
    y = y[0] if isinstance(y, tuple) else y
    np.testing.assert_allclose(y, yt.detach().numpy(), rtol=RTOL, atol=atol)
    g = rng.normal(size=y.shape)
    yt.backward(torch.tensor(g))
    grads = layer.backward(g)
    grads = grads if isinstance(grads, tuple) else (grads,)
    for a, t in zip(grads, xt):
        np.testing.assert_allclose(a, t.grad.numpy(), rtol=RTOL, atol=atol)
    named = dict(ref.named_parameters())
    for name, p in params.items():
        np.testing.assert_allclose(p.grad, named[name].grad.numpy(), rtol=RTOL, atol=atol)


def distinct(seed, shape):
    """Well separated values: max pooling is differentiable there."""
    rng = np.random.default_rng(seed)
    return rng.permutation(np.arange(int(np.prod(shape)), dtype=np.float64)).reshape(shape) * 0.1


# ------------------------------------------------------------------------ 3-D pooling
@st.composite
def window3d(draw):
    kernel = tuple(draw(st.integers(1, 2)) for _ in range(3))
    stride = draw(st.one_of(st.none(), st.tuples(*[st.integers(1, 2)] * 3)))
    padding = tuple(draw(st.integers(0, k // 2)) for k in kernel)
    size = tuple(draw(st.integers(k, k + 2)) for k in kernel)
    n = draw(st.integers(0, 2))
    unbatched = n == 1 and draw(st.booleans())
    shape = ((2,) if unbatched else (n, 2)) + size
    return kernel, stride, padding, draw(st.booleans()), shape


@given(case=window3d(), seed=seeds)
def test_max_pool3d_parity_and_gradcheck(case, seed):
    kernel, stride, padding, ceil_mode, shape = case
    x = distinct(seed, shape)
    args = (kernel, stride, padding, 1, False, ceil_mode)
    if shape[0]:
        parity(nf.MaxPool3d(*args), torch.nn.MaxPool3d(*args), x, seed=seed)
    check(nf.MaxPool3d(*args), x)


@given(
    case=window3d(), seed=seeds, count_include_pad=st.booleans(), divisor=st.sampled_from([None, 3])
)
def test_avg_pool3d_parity_and_gradcheck(case, seed, count_include_pad, divisor):
    kernel, stride, padding, ceil_mode, shape = case
    x = np.random.default_rng(seed).normal(size=shape)
    args = (kernel, stride, padding, ceil_mode, count_include_pad, divisor)
    if shape[0]:
        parity(nf.AvgPool3d(*args), torch.nn.AvgPool3d(*args), x, seed=seed)
    check(nf.AvgPool3d(*args), x)


@given(
    seed=seeds,
    size=st.tuples(*[st.integers(1, 5)] * 3),
    out=st.tuples(*[st.one_of(st.none(), st.integers(1, 4))] * 3),
    n=st.integers(0, 2),
)
def test_adaptive_pool3d_parity_and_gradcheck(seed, size, out, n):
    x = distinct(seed, (n, 2, *size))
    for cls in (nf.AdaptiveAvgPool3d, nf.AdaptiveMaxPool3d):
        if n:
            parity(cls(out), getattr(torch.nn, cls.__name__)(out), x, seed=seed)
        check(cls(out), x)
    if n:
        y, idx = nf.AdaptiveMaxPool3d(out, True)(x)
        _, ref = torch.nn.AdaptiveMaxPool3d(out, True)(torch.tensor(x))
        np.testing.assert_array_equal(idx, ref.numpy())


def test_pool3d_unbatched_and_global():
    x = distinct(0, (3, 4, 5, 6))  # (C, D, H, W)
    assert nf.MaxPool3d(2)(x).shape == (3, 2, 2, 3)
    parity(nf.AdaptiveMaxPool3d(1), torch.nn.AdaptiveMaxPool3d(1), x)
    parity(nf.AdaptiveAvgPool3d((2, 3, 4)), torch.nn.AdaptiveAvgPool3d((2, 3, 4)), x)
    with pytest.raises(
        nf.ShapeError, match=r"MaxPool3d\(.*\): expected input of shape \(N, C, D, H, W\)"
    ):
        nf.MaxPool3d(2)(np.ones((2, 3)))


# ------------------------------------------------------------------------ LPPool
@given(
    seed=seeds,
    dims=st.sampled_from([1, 2, 3]),
    p=st.sampled_from([1.0, 2.0, 3.0, 1.5]),
    ceil_mode=st.booleans(),
    n=st.integers(0, 2),
    data=st.data(),
)
def test_lp_pool_parity_and_gradcheck(seed, dims, p, ceil_mode, n, data):
    top = 3 if dims < 3 else 2  # 3-D: smaller windows and volumes keep the check quick
    kernel = tuple(data.draw(st.integers(1, top)) for _ in range(dims))
    stride = data.draw(st.one_of(st.none(), st.tuples(*[st.integers(1, top)] * dims)))
    size = tuple(data.draw(st.integers(k, k + top)) for k in kernel)
    # positive inputs: a fractional power of a negative window sum is NaN (in PyTorch too)
    x = np.random.default_rng(seed).uniform(0.5, 2.0, size=(n, 2, *size))
    cls = (nf.LPPool1d, nf.LPPool2d, nf.LPPool3d)[dims - 1]
    if dims == 1:  # PyTorch's LPPool1d takes ints only
        kernel, stride = kernel[0], None if stride is None else stride[0]
    args = (p, kernel, stride, ceil_mode)
    if n:
        parity(cls(*args), getattr(torch.nn, cls.__name__)(*args), x, seed=seed)
    check(cls(*args), x)


def test_lp_pool_example_and_errors():
    np.testing.assert_allclose(
        nf.LPPool1d(2, 2)(np.array([[[3.0, 4.0, 1.0, 0.0]]])), [[[5.0, 1.0]]]
    )
    with pytest.raises(ValueError, match=r"LPPool2d: invalid norm_type=0"):
        nf.LPPool2d(0, 2)
    parity(
        nf.LPPool2d(2, 2), torch.nn.LPPool2d(2, 2), np.random.default_rng(0).normal(size=(3, 4, 6))
    )


def test_lp_pool3d_example_unbatched_and_errors():
    np.testing.assert_allclose(nf.LPPool3d(2, 2)(np.full((1, 1, 2, 2, 2), 0.5)), [[[[[2**0.5]]]]])
    x = np.random.default_rng(1).uniform(0.5, 2.0, size=(3, 4, 5, 6))  # unbatched (C, D, H, W)
    args = (1.5, (2, 3, 2), (1, 2, 2), True)
    parity(nf.LPPool3d(*args), torch.nn.LPPool3d(*args), x)
    assert nf.LPPool3d(*args)(x).shape == torch.nn.LPPool3d(*args)(torch.tensor(x)).shape
    check(nf.LPPool3d(2, 2), np.ones((0, 2, 2, 3, 4)))  # an empty batch
    with pytest.raises(ValueError, match=r"LPPool3d: invalid norm_type=-1"):
        nf.LPPool3d(-1, 2)
    with pytest.raises(
        nf.ShapeError, match=r"LPPool3d\(.*\): expected input of shape \(N, C, D, H, W\)"
    ):
        nf.LPPool3d(2, 2)(np.ones((2, 3, 4)))


# ------------------------------------------------------------------------ ConvTranspose3d
@given(seed=seeds, n=st.integers(0, 2), data=st.data())
def test_conv_transpose3d_parity_and_gradcheck(seed, n, data):
    groups = data.draw(st.sampled_from([1, 2]))
    kernel = tuple(data.draw(st.integers(1, 2)) for _ in range(3))
    stride = tuple(data.draw(st.integers(1, 2)) for _ in range(3))
    dilation = tuple(data.draw(st.integers(1, 2)) for _ in range(3))
    padding = tuple(data.draw(st.integers(0, 1)) for _ in range(3))
    out_pad = tuple(data.draw(st.integers(0, max(s, d) - 1)) for s, d in zip(stride, dilation))
    size = tuple(data.draw(st.integers(2, 3)) for _ in range(3))
    bias = data.draw(st.booleans())
    out = [
        (i - 1) * s - 2 * p + d * (k - 1) + op + 1
        for i, s, p, d, k, op in zip(size, stride, padding, dilation, kernel, out_pad)
    ]
    assume(min(out) > 0)
    args = (2 * groups, 2 * groups, kernel, stride, padding, out_pad, groups, bias, dilation)
    layer = nf.ConvTranspose3d(*args, rng=seed).to(np.float64)
    x = np.random.default_rng(seed).normal(size=(n, 2 * groups, *size))
    if n:
        parity(layer, torch.nn.ConvTranspose3d(*args).double(), x, seed=seed)
    check(layer, x)


def test_conv_transpose3d_unbatched():
    layer = nf.ConvTranspose3d(3, 2, 2, stride=2, rng=0).to(np.float64)
    parity(layer, torch.nn.ConvTranspose3d(3, 2, 2, stride=2).double(), np.ones((3, 2, 2, 2)))


# ------------------------------------------------------------------------ shuffles
@given(
    seed=seeds, r=st.integers(1, 3), lead=st.lists(st.integers(0, 2), max_size=2), data=st.data()
)
def test_pixel_shuffle_and_unshuffle_parity_and_gradcheck(seed, r, lead, data):
    c, h, w = (data.draw(st.integers(1, 3)) for _ in range(3))
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(*lead, c * r * r, h, w))
    if x.size:  # PyTorch's backward fails on empty inputs
        parity(nf.PixelShuffle(r), torch.nn.PixelShuffle(r), x, seed=seed)
    check(nf.PixelShuffle(r), x)
    z = rng.normal(size=(*lead, c, h * r, w * r))
    if z.size:
        parity(nf.PixelUnshuffle(r), torch.nn.PixelUnshuffle(r), z, seed=seed)
    check(nf.PixelUnshuffle(r), z)
    np.testing.assert_array_equal(nf.PixelUnshuffle(r)(nf.PixelShuffle(r)(x)), x)


@given(
    seed=seeds,
    g=st.integers(1, 3),
    k=st.integers(1, 3),
    n=st.integers(0, 2),
    rest=st.lists(st.integers(1, 3), min_size=1, max_size=3),
)
def test_channel_shuffle_parity_and_gradcheck(seed, g, k, n, rest):
    x = np.random.default_rng(seed).normal(size=(n, g * k, *rest))
    if n:
        parity(nf.ChannelShuffle(g), torch.nn.ChannelShuffle(g), x, seed=seed)
    check(nf.ChannelShuffle(g), x)


def test_shuffle_errors():
    with pytest.raises(
        nf.ShapeError,
        match=r"PixelShuffle\(upscale_factor=2\): expected input of shape \(\*, C \* 4, H, W\), got \(1, 3, 2, 2\)",
    ):
        nf.PixelShuffle(2)(np.ones((1, 3, 2, 2)))
    with pytest.raises(
        nf.ShapeError,
        match=r"ChannelShuffle\(groups=2\): expected input of shape \(N, C, \*\) with C divisible by 2",
    ):
        nf.ChannelShuffle(2)(np.ones((1, 3, 2)))
    with pytest.raises(ValueError, match=r"PixelUnshuffle: invalid downscale_factor=0"):
        nf.PixelUnshuffle(0)


# ------------------------------------------------------------------------ Fold / Unfold
@st.composite
def blocks_case(draw):
    kernel = tuple(draw(st.integers(1, 3)) for _ in range(2))
    dilation = tuple(draw(st.integers(1, 2)) for _ in range(2))
    padding = tuple(draw(st.integers(0, 1)) for _ in range(2))
    stride = tuple(draw(st.integers(1, 2)) for _ in range(2))
    size = tuple(
        draw(st.integers(max(1, d * (k - 1) + 1 - 2 * p), d * (k - 1) + 4))
        for k, d, p in zip(kernel, dilation, padding)
    )
    return kernel, dilation, padding, stride, size


@given(case=blocks_case(), seed=seeds, n=st.integers(0, 2), unbatched=st.booleans())
def test_unfold_and_fold_parity_and_gradcheck(case, seed, n, unbatched):
    kernel, dilation, padding, stride, size = case
    rng = np.random.default_rng(seed)
    lead = () if unbatched else (n,)
    x = rng.normal(size=(*lead, 2, *size))
    unfold = nf.Unfold(kernel, dilation, padding, stride)
    cols = unfold(x)
    if x.size:
        parity(unfold, torch.nn.Unfold(kernel, dilation, padding, stride), x, seed=seed)
    check(nf.Unfold(kernel, dilation, padding, stride), x)
    fold = nf.Fold(size, kernel, dilation, padding, stride)
    c = rng.normal(size=cols.shape)
    if c.size:
        parity(fold, torch.nn.Fold(size, kernel, dilation, padding, stride), c, seed=seed)
    check(nf.Fold(size, kernel, dilation, padding, stride), c)
    # adjoints: <unfold(x), c> = <x, fold(c)>
    assert np.sum(cols * c) == pytest.approx(np.sum(x * fold(c)), abs=1e-9)


def test_fold_errors():
    with pytest.raises(
        nf.ShapeError, match=r"Fold\(.*\): expected input of shape \(N, C \* 4, 6\)"
    ):
        nf.Fold((3, 4), 2)(np.ones((1, 8, 5)))
    with pytest.raises(
        nf.ShapeError, match=r"Unfold\(.*\): expected input of shape \(N, C, H, W\)"
    ):
        nf.Unfold(3)(np.ones((1, 1, 2, 2)))


# ------------------------------------------------------------------------ Bilinear
@given(seed=seeds, lead=st.lists(st.integers(0, 3), max_size=2), bias=st.booleans(), data=st.data())
def test_bilinear_parity_and_gradcheck(seed, lead, bias, data):
    i1, i2, o = (data.draw(st.integers(1, 4)) for _ in range(3))
    layer = nf.Bilinear(i1, i2, o, bias, rng=seed).to(np.float64)
    rng = np.random.default_rng(seed)
    x1, x2 = rng.normal(size=(*lead, i1)), rng.normal(size=(*lead, i2))
    ref = torch.nn.Bilinear(i1, i2, o, bias).double()
    if x1.size or not lead:
        parity(layer, ref, x1, x2, seed=seed)
    layer.zero_grad()
    check(layer, x1, x2)


def test_bilinear_init_dtype_and_errors():
    layer = nf.Bilinear(4, 3, 2, rng=0)
    assert layer.weight.shape == (2, 4, 3) and layer.weight.dtype == np.float32
    assert np.abs(layer.weight.data).max() <= 0.5 and np.abs(layer.bias.data).max() <= 0.5
    assert nf.Bilinear(4, 3, 2, True, "cpu", np.float64).weight.dtype == np.float64
    with pytest.raises(
        nf.ShapeError, match=r"Bilinear\(.*\): expected x2 of shape \(5, 3\), got \(5, 2\)"
    ):
        layer(np.ones((5, 4)), np.ones((5, 2)))
    with pytest.raises(ValueError, match=r"Bilinear: invalid out_features=0"):
        nf.Bilinear(4, 3, 0)


# ------------------------------------------------------------------------ distances
@given(
    seed=seeds,
    n=st.integers(0, 3),
    d=st.integers(1, 4),
    dim=st.sampled_from([0, 1, -1]),
    broadcast=st.booleans(),
)
def test_cosine_similarity_parity_and_gradcheck(seed, n, d, dim, broadcast):
    rng = np.random.default_rng(seed)
    x1 = rng.normal(size=(n, d, 2))
    x2 = rng.normal(size=(1, d, 2) if broadcast else (n, d, 2))
    layer = nf.CosineSimilarity(dim)
    if x1.size:
        # d cos / dx2 = x1 / (|x1| |x2|) - cos x2 / |x2|^2: terms up to ~1/|x|^2 that cancel
        # (to 0 along an axis of size 1), so their rounding, in both frameworks, grows so too
        norms = [np.sqrt((x * x).sum(axis=dim)).min() for x in (x1, x2)]
        atol = ATOL * max(1.0, 1.0 / min(norms)) ** 2
        parity(layer, torch.nn.CosineSimilarity(dim), x1, x2, seed=seed, atol=atol)
    check(nf.CosineSimilarity(dim), x1, x2)


def test_cosine_similarity_tiny_norms_and_unbatched():
    rng = np.random.default_rng(0)
    x1 = rng.normal(size=(3, 4))
    x1[0] = 1e-10  # a norm below eps: clamped, gradient as PyTorch's
    parity(
        nf.CosineSimilarity(-1, 1e-3),
        torch.nn.CosineSimilarity(-1, 1e-3),
        x1,
        rng.normal(size=(3, 4)),
    )
    parity(
        nf.CosineSimilarity(0), torch.nn.CosineSimilarity(0), rng.normal(size=4), rng.normal(size=4)
    )


@given(
    seed=seeds,
    n=st.integers(0, 3),
    d=st.integers(1, 4),
    p=st.sampled_from([1.0, 2.0, 3.0, float("inf")]),
    keepdim=st.booleans(),
    form=st.sampled_from(["batched", "unbatched", "broadcast"]),
)
def test_pairwise_distance_parity_and_gradcheck(seed, n, d, p, keepdim, form):
    rng = np.random.default_rng(seed)
    shape1 = (d,) if form == "unbatched" else (n, d)
    shape2 = (d,) if form != "batched" else (n, d)
    x1, x2 = rng.normal(size=shape1), rng.normal(size=shape2)
    args = (p, 1e-6, keepdim)
    if x1.size:
        parity(nf.PairwiseDistance(*args), torch.nn.PairwiseDistance(*args), x1, x2, seed=seed)
    check(nf.PairwiseDistance(*args), x1, x2)


def test_distance_errors():
    with pytest.raises(
        nf.ShapeError, match=r"CosineSimilarity\(.*\): expected x1 and x2 of broadcastable shapes"
    ):
        nf.CosineSimilarity()(np.ones((2, 3)), np.ones((2, 4)))
    with pytest.raises(ValueError, match=r"PairwiseDistance: invalid p=0"):
        nf.PairwiseDistance(0)


# ------------------------------------------------------------------------ Upsample's new modes
@given(
    seed=seeds,
    mode=st.sampled_from(["bicubic", "trilinear", "linear"]),
    align_corners=st.booleans(),
    by_size=st.booleans(),
    n=st.integers(0, 2),
    data=st.data(),
)
def test_upsample_new_modes_parity_and_gradcheck(seed, mode, align_corners, by_size, n, data):
    dims = {"linear": 1, "bicubic": 2, "trilinear": 3}[mode]
    size = tuple(data.draw(st.integers(1, 4)) for _ in range(dims))
    if by_size:
        kw = {"size": tuple(data.draw(st.integers(1, 6)) for _ in range(dims))}
    else:
        kw = {
            "scale_factor": tuple(
                data.draw(st.sampled_from([0.7, 1.0, 1.5, 2.0, 2.5])) for _ in range(dims)
            )
        }
    x = np.random.default_rng(seed).normal(size=(n, 2, *size))
    layer = nf.Upsample(mode=mode, align_corners=align_corners, **kw)
    try:
        y = layer(x)
    except nf.ShapeError:  # a scale that rounds an axis down to 0
        with pytest.raises(RuntimeError):
            torch.nn.Upsample(mode=mode, align_corners=align_corners, **kw)(torch.tensor(x))
        return
    if n:
        parity(layer, torch.nn.Upsample(mode=mode, align_corners=align_corners, **kw), x, seed=seed)
    assert y.shape[:2] == (n, 2)
    check(nf.Upsample(mode=mode, align_corners=align_corners, **kw), x)


def test_upsample_mode_errors():
    with pytest.raises(
        nf.ShapeError, match=r"Upsample\(.*\): expected input of shape \(N, C, D, H, W\)"
    ):
        nf.Upsample(scale_factor=2, mode="trilinear")(np.ones((1, 1, 2, 2)))
    with pytest.raises(ValueError, match=r"Upsample: invalid mode='area'"):
        nf.Upsample(scale_factor=2, mode="area")


# ------------------------------------------------------------------------ Linear
def test_linear_is_dense():
    assert nf.Linear is nf.Dense
    layer = nf.Linear(3, 2, rng=0).to(np.float64)
    parity(layer, torch.nn.Linear(3, 2).double(), np.random.default_rng(0).normal(size=(4, 3)))
    check(nf.Linear(3, 2, rng=0), np.random.default_rng(1).normal(size=(4, 3)))
