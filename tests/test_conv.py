"""Conv1d/2d/3d and ConvTranspose1d/2d: gradient checks over the argument space, PyTorch parity,
worked examples, errors, and a small CNN that learns."""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import nnframe as nf
from tests.strategies import assert_torch_parity, normal_array, seeds

CHECKED_MODULES = [nf.Conv1d, nf.Conv2d, nf.Conv3d, nf.ConvTranspose1d, nf.ConvTranspose2d]

CONV = {1: nf.Conv1d, 2: nf.Conv2d, 3: nf.Conv3d}
TRANSPOSED = {1: nf.ConvTranspose1d, 2: nf.ConvTranspose2d}
MODES = ["zeros", "reflect", "replicate", "circular"]


@st.composite
def conv_case(draw, dims):
    """A convolution (any argument combination) and an input it accepts, kept small."""
    groups = draw(st.sampled_from([1, 1, 2]))
    cin = groups * draw(st.integers(1, 2))
    depthwise = draw(st.booleans())
    if depthwise:  # groups == in_channels, channel multiplier 1 or 2
        groups = cin
    cout = groups * draw(st.integers(1, 2))
    kernel = tuple(draw(st.integers(1, 3)) for _ in range(dims))
    dilation = tuple(draw(st.integers(1, 2)) for _ in range(dims))
    mode = draw(st.sampled_from(MODES))
    kind = draw(st.sampled_from(["int", "tuple", "same", "valid"]))
    if kind == "same":
        stride, padding = (1,) * dims, "same"
    else:
        stride = tuple(draw(st.integers(1, 3)) for _ in range(dims))
        if kind == "valid":
            padding = "valid"
        elif kind == "int":
            padding = draw(st.integers(0, 2))
        else:
            padding = tuple(draw(st.integers(0, 2)) for _ in range(dims))
    pads = (
        [d * (k - 1) for k, d in zip(kernel, dilation)]
        if padding == "same"
        else [0] * dims
        if padding == "valid"
        else [2 * p for p in ((padding,) * dims if isinstance(padding, int) else padding)]
    )
    # spatial size: the dilated kernel must fit after padding; reflect needs size > padding
    low = [
        max(d * (k - 1) + 1 - p, (p + 1) // 2 + 1 if p else 1, 1)
        for k, d, p in zip(kernel, dilation, pads)
    ]
    size = tuple(draw(st.integers(lo, lo + (3 if dims < 3 else 1))) for lo in low)
    layer_kw = dict(
        stride=stride,
        padding=padding,
        dilation=dilation,
        groups=groups,
        bias=draw(st.booleans()),
        padding_mode=mode,
    )
    n = draw(st.integers(1, 2))
    return cin, cout, kernel, layer_kw, (n, cin, *size)


@pytest.mark.parametrize("dims", [1, 2, 3])
@given(data=st.data(), seed=seeds)
def test_conv_gradcheck(dims, data, seed):
    cin, cout, kernel, kw, shape = data.draw(conv_case(dims))
    layer = CONV[dims](cin, cout, kernel, rng=seed, **kw)
    nf.check_module(layer, normal_array(seed, shape))


@st.composite
def transposed_case(draw, dims):
    groups = draw(st.sampled_from([1, 2]))
    cin, cout = groups * draw(st.integers(1, 2)), groups * draw(st.integers(1, 2))
    kernel = tuple(draw(st.integers(1, 3)) for _ in range(dims))
    stride = tuple(draw(st.integers(1, 3)) for _ in range(dims))
    dilation = tuple(draw(st.integers(1, 2)) for _ in range(dims))
    output_padding = tuple(draw(st.integers(0, max(s, d) - 1)) for s, d in zip(stride, dilation))
    padding = tuple(draw(st.integers(0, 1)) for _ in range(dims))
    # enough input for a positive output: (L-1) s + d (k-1) + 1 - 2p + op > 0
    low = [
        next(n for n in range(1, 9) if (n - 1) * s + d * (k - 1) + 1 - 2 * p + op > 0)
        for s, d, k, p, op in zip(stride, dilation, kernel, padding, output_padding)
    ]
    size = tuple(draw(st.integers(lo, lo + 2)) for lo in low)
    kw = dict(
        stride=stride,
        padding=padding,
        output_padding=output_padding,
        groups=groups,
        bias=draw(st.booleans()),
        dilation=dilation,
    )
    return cin, cout, kernel, kw, (draw(st.integers(1, 2)), cin, *size)


@pytest.mark.parametrize("dims", [1, 2])
@given(data=st.data(), seed=seeds)
def test_conv_transpose_gradcheck(dims, data, seed):
    cin, cout, kernel, kw, shape = data.draw(transposed_case(dims))
    layer = TRANSPOSED[dims](cin, cout, kernel, rng=seed, **kw)
    nf.check_module(layer, normal_array(seed, shape))


@given(seed=seeds, stride=st.integers(1, 2))
def test_pointwise_fast_path_matches_general_path(seed, stride):
    x = normal_array(seed, (2, 4, 5, 3)).astype(np.float32)
    fast = nf.Conv2d(4, 6, 1, groups=2, rng=seed)
    general = nf.Conv2d(4, 6, (1, 1), stride=stride, groups=2, rng=seed)
    assert fast._pointwise and general._pointwise == (stride == 1)
    y = fast(x)
    np.testing.assert_allclose(y[:, :, ::stride, ::stride], general(x), rtol=1e-5, atol=1e-6)
    nf.check_module(fast, x)


def test_columns_are_rebuilt_when_not_saved_and_on_a_second_backward(rng):
    x = rng.normal(size=(3, 2, 7, 6)).astype(np.float32)
    g = rng.normal(size=(3, 4, 4, 3)).astype(np.float32)
    saved = nf.Conv2d(2, 4, 3, stride=2, padding=1, rng=0)
    rebuilt = nf.Conv2d(2, 4, 3, stride=2, padding=1, rng=0)
    rebuilt.save_columns = False
    np.testing.assert_array_equal(saved(x), rebuilt(x))
    dx1 = saved.backward(g)
    np.testing.assert_allclose(rebuilt.backward(g), dx1, rtol=1e-6)
    np.testing.assert_allclose(rebuilt.weight.grad, saved.weight.grad, rtol=1e-6)
    # the first backward wrote over the saved columns: a second one must rebuild them
    w_grad = saved.weight.grad.copy()
    np.testing.assert_allclose(saved.backward(g), dx1, rtol=1e-6)
    np.testing.assert_allclose(saved.weight.grad, 2 * w_grad, rtol=1e-5)


def test_conv2d_worked_example():
    conv = nf.Conv2d(1, 1, 2, bias=True)
    conv.weight.data[...] = [[[[1.0, 2.0], [3.0, 4.0]]]]
    conv.bias.data[...] = 0.5
    x = np.arange(9.0, dtype=np.float32).reshape(1, 1, 3, 3)  # [[0,1,2],[3,4,5],[6,7,8]]
    y = conv(x)
    # top-left window [[0,1],[3,4]] . [[1,2],[3,4]] = 0 + 2 + 9 + 16 = 27, plus 0.5
    np.testing.assert_allclose(y, [[[[27.5, 37.5], [57.5, 67.5]]]])
    dx = conv.backward(np.ones((1, 1, 2, 2), dtype=np.float32))
    # each input pixel receives the sum of the weights that touched it
    np.testing.assert_allclose(dx, [[[[1, 3, 2], [4, 10, 6], [3, 7, 4]]]])
    # dL/dW[i, j] = sum of the inputs under weight (i, j): [[0+1+3+4, 1+2+4+5], ...]
    np.testing.assert_allclose(conv.weight.grad, [[[[8, 12], [20, 24]]]])
    np.testing.assert_allclose(conv.bias.grad, [4.0])


def test_conv1d_same_padding_puts_the_extra_element_at_the_end():
    conv = nf.Conv1d(1, 1, 2, padding="same", bias=False)
    conv.weight.data[...] = [[[1.0, 10.0]]]
    y = conv(np.array([[[1.0, 2.0, 3.0]]], dtype=np.float32))
    np.testing.assert_allclose(y, [[[21.0, 32.0, 3.0]]])  # the last window reads a zero


def test_conv_transpose_worked_example():
    up = nf.ConvTranspose1d(1, 1, 2, stride=2, bias=False)
    up.weight.data[...] = [[[1.0, -1.0]]]
    y = up(np.array([[[3.0, 5.0]]], dtype=np.float32))
    np.testing.assert_allclose(y, [[[3.0, -3.0, 5.0, -5.0]]])
    dx = up.backward(np.array([[[1.0, 2.0, 3.0, 4.0]]], dtype=np.float32))
    np.testing.assert_allclose(dx, [[[1 - 2, 3 - 4]]])
    np.testing.assert_allclose(up.weight.grad, [[[3 * 1 + 5 * 3, 3 * 2 + 5 * 4]]])


def test_float32_by_default_and_weight_layout():
    conv = nf.Conv2d(6, 8, (3, 5), groups=2, rng=0)
    assert conv.weight.shape == (8, 3, 3, 5) and conv.weight.dtype == np.float32
    assert conv.bias.shape == (8,)
    bound = 1 / np.sqrt(3 * 3 * 5)  # PyTorch's default: fan_in = in / groups * prod(kernel)
    assert np.abs(conv.weight.data).max() <= bound and np.abs(conv.bias.data).max() <= bound
    assert nf.ConvTranspose2d(6, 8, 3, groups=2).weight.shape == (6, 4, 3, 3)
    y = conv(np.ones((1, 6, 5, 7)))  # float64 input, cast to the layer's dtype
    assert y.dtype == np.float32
    assert conv.backward(np.ones_like(y)).dtype == np.float32
    assert [name for name, _ in conv.named_parameters()] == ["weight", "bias"]
    assert repr(conv) == "Conv2d(6, 8, kernel_size=(3, 5), stride=(1, 1), groups=2)"


# ---------------------------------------------------------------------------- PyTorch parity
PARITY = [
    ("Conv1d", dict(in_channels=3, out_channels=4, kernel_size=3, stride=2, padding=1), (2, 3, 11)),
    (
        "Conv1d",
        dict(
            in_channels=4,
            out_channels=4,
            kernel_size=4,
            padding="same",
            dilation=2,
            groups=4,
            padding_mode="reflect",
        ),
        (2, 4, 12),
    ),
    (
        "Conv2d",
        dict(
            in_channels=4,
            out_channels=6,
            kernel_size=(3, 2),
            stride=(2, 1),
            padding=(1, 0),
            dilation=(1, 2),
            groups=2,
        ),
        (2, 4, 9, 8),
    ),
    (
        "Conv2d",
        dict(in_channels=3, out_channels=5, kernel_size=3, padding=2, padding_mode="circular"),
        (2, 3, 6, 7),
    ),
    (
        "Conv2d",
        dict(
            in_channels=3,
            out_channels=5,
            kernel_size=3,
            padding="same",
            padding_mode="replicate",
            bias=False,
        ),
        (2, 3, 6, 7),
    ),
    ("Conv2d", dict(in_channels=4, out_channels=6, kernel_size=1), (3, 4, 5, 5)),
    (
        "Conv3d",
        dict(in_channels=2, out_channels=3, kernel_size=(2, 3, 2), stride=(1, 2, 2), padding=1),
        (2, 2, 4, 6, 5),
    ),
    (
        "ConvTranspose1d",
        dict(
            in_channels=4,
            out_channels=2,
            kernel_size=3,
            stride=2,
            padding=1,
            output_padding=1,
            groups=2,
            dilation=2,
        ),
        (2, 4, 6),
    ),
    (
        "ConvTranspose2d",
        dict(
            in_channels=3,
            out_channels=4,
            kernel_size=(3, 4),
            stride=(2, 3),
            padding=(1, 2),
            output_padding=(1, 2),
        ),
        (2, 3, 5, 4),
    ),
]


@pytest.mark.parametrize("name,kwargs,shape", PARITY, ids=[p[0] for p in PARITY])
def test_torch_parity_forward_backward(name, kwargs, shape):
    torch = pytest.importorskip("torch")
    ref = getattr(torch.nn, name)(**kwargs).double()
    layer = getattr(nf, name)(**kwargs, dtype=np.float64)
    layer.load_state_dict({k: v.detach().numpy() for k, v in ref.state_dict().items()})
    rng = np.random.default_rng(7)
    assert_torch_parity(layer, ref, rng.normal(size=shape), rng, rtol=1e-10, atol=1e-12)
    for pname, p in layer.named_parameters():
        expected = getattr(ref, pname).grad.numpy()
        np.testing.assert_allclose(p.grad, expected, rtol=1e-10, atol=1e-12)
    # and back: nnframe's state_dict loads into PyTorch
    ref.load_state_dict({k: torch.tensor(v) for k, v in layer.state_dict().items()})


# ---------------------------------------------------------------------------- errors
def test_error_wrong_channel_count():
    conv = nf.Conv2d(3, 8, 3)
    with pytest.raises(
        nf.ShapeError,
        match=r"Conv2d\(3, 8, .*\): expected input of shape "
        r"\(N, 3, H, W\), got \(2, 4, 8, 8\)",
    ):
        conv(np.zeros((2, 4, 8, 8), dtype=np.float32))
    with pytest.raises(nf.ShapeError, match=r"expected input of shape \(N, 3, L\), got \(2, 3\)"):
        nf.Conv1d(3, 8, 3)(np.zeros((2, 3), dtype=np.float32))


def test_error_input_smaller_than_dilated_kernel():
    conv = nf.Conv2d(1, 2, 3, dilation=2, padding=1)
    with pytest.raises(
        nf.ShapeError,
        match=r"Conv2d\(1, 2, .*dilation=\(2, 2\)\): expected input of spatial size at least "
        r"\(5, 5\) \(the dilated kernel\) after padding.*got \(1, 1, 2, 6\) \(padded spatial "
        r"size \(4, 8\)\)",
    ):
        conv(np.zeros((1, 1, 2, 6), dtype=np.float32))


def test_error_non_positive_transposed_output():
    up = nf.ConvTranspose1d(1, 1, 1, padding=1)
    with pytest.raises(
        nf.ShapeError,
        match=r"ConvTranspose1d\(1, 1, .*\): expected an input large enough for "
        r"a positive output size.*got input \(1, 1, 1\) -> output size \(-1,\)",
    ):
        up(np.zeros((1, 1, 1), dtype=np.float32))


def test_error_groups_and_hyperparameters():
    with pytest.raises(ValueError, match=r"Conv2d: invalid groups=2 \(must divide in_channels=3\)"):
        nf.Conv2d(3, 4, 3, groups=2)
    with pytest.raises(
        ValueError, match=r"Conv1d: invalid groups=3 \(must divide out_channels=4\)"
    ):
        nf.Conv1d(3, 4, 3, groups=3)
    with pytest.raises(
        ValueError, match=r"Conv2d: invalid padding='same' \('same' needs stride=1\)"
    ):
        nf.Conv2d(3, 4, 3, stride=2, padding="same")
    with pytest.raises(ValueError, match=r"Conv2d: invalid padding_mode='mirror'"):
        nf.Conv2d(3, 4, 3, padding_mode="mirror")
    with pytest.raises(ValueError, match=r"Conv2d: invalid kernel_size=\(3, 3, 3\)"):
        nf.Conv2d(3, 4, (3, 3, 3))
    with pytest.raises(ValueError, match=r"Conv1d: invalid stride=0 \(must be >= 1\)"):
        nf.Conv1d(3, 4, 3, stride=0)
    with pytest.raises(ValueError, match=r"ConvTranspose2d: invalid output_padding=2"):
        nf.ConvTranspose2d(3, 4, 3, stride=2, output_padding=2)


def test_error_reflect_padding_larger_than_input():
    conv = nf.Conv1d(1, 1, 5, padding=2, padding_mode="reflect")
    with pytest.raises(nf.ShapeError, match=r"larger than the padding for padding_mode='reflect'"):
        conv(np.zeros((1, 1, 2), dtype=np.float32))


def test_error_grad_output_shape_and_backward_before_forward():
    conv = nf.Conv1d(1, 2, 3)
    with pytest.raises(RuntimeError, match="backward called before forward"):
        conv.backward(np.zeros((1, 2, 3)))
    conv(np.zeros((1, 1, 5), dtype=np.float32))
    with pytest.raises(nf.ShapeError, match=r"expected grad_output of shape \(1, 2, 3\), got"):
        conv.backward(np.zeros((1, 2, 4), dtype=np.float32))


# ---------------------------------------------------------------------------- learning
def oriented_bars(n: int, rng: np.random.Generator, size: int = 10):
    """Images with one bar, horizontal (class 0), vertical (1), diagonal (2) or anti-diagonal
    (3), at a random place, plus noise."""
    labels = rng.integers(0, 4, size=n)
    images = rng.normal(0.0, 0.3, size=(n, 1, size, size)).astype(np.float32)
    for i, c in enumerate(labels):
        r, s = rng.integers(2, size - 2, size=2)
        t = np.arange(-2, 3)
        rows, cols = {
            0: (np.full(5, r), s + t),
            1: (r + t, np.full(5, s)),
            2: (r + t, s + t),
            3: (r + t, s - t),
        }[int(c)]
        images[i, 0, rows, cols] += 1.0
    return images, labels


def test_small_cnn_learns_oriented_bars():
    rng = np.random.default_rng(0)
    x_train, y_train = oriented_bars(512, rng)
    x_test, y_test = oriented_bars(256, rng)
    model = nf.Sequential(
        nf.Conv2d(1, 8, 3, padding=1, rng=1),
        nf.ReLU(),
        nf.MaxPool2d(2),
        nf.Conv2d(8, 16, 3, padding=1, rng=2),
        nf.ReLU(),
        nf.AdaptiveMaxPool2d(1),
        nf.Flatten(),
        nf.Dense(16, 4, rng=3),
    )
    loss = nf.CrossEntropyLoss()
    opt = nf.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    for _ in range(15):
        order = rng.permutation(len(x_train))
        for start in range(0, len(order), 32):
            batch = order[start : start + 32]
            model.zero_grad()
            loss(model(x_train[batch]), y_train[batch])
            model.backward(loss.backward())
            opt.step()
    accuracy = (model(x_test).argmax(axis=1) == y_test).mean()
    assert accuracy > 0.95, accuracy


@given(seed=seeds, save_columns=st.booleans())
def test_shared_conv_called_twice_accumulates_both_uses(seed, save_columns):
    # the same layer twice in one model: each call keeps its own columns until its backward,
    # and a reused column buffer never overwrites columns that a pending backward still needs
    conv = nf.Conv2d(2, 2, 3, padding=1, rng=seed)
    conv.save_columns = save_columns
    model = nf.Sequential(conv, nf.Tanh(), conv)
    x = normal_array(seed, (2, 2, 4, 3))
    nf.check_module(model, x)
    model.to(np.float64)
    grads = []
    for _ in range(2):  # the second step reuses the column buffers of the first
        model.zero_grad()
        model(x)
        dx = model.backward(np.ones((2, 2, 4, 3)))
        grads.append((conv.weight.grad.copy(), dx))
    np.testing.assert_array_equal(grads[1][0], grads[0][0])
    np.testing.assert_array_equal(grads[1][1], grads[0][1])


@pytest.mark.parametrize(
    "make",
    [
        lambda: nf.Conv2d(3, 4, 3, stride=2, padding=1, rng=0),
        lambda: nf.Conv2d(3, 4, 1, rng=0),
        lambda: nf.ConvTranspose2d(3, 4, 3, stride=2, rng=0),
    ],
    ids=["general", "pointwise", "transposed"],
)
def test_needs_input_grad_false_skips_the_input_gradient(make, rng):
    full, data_only = make(), make()
    model = nf.Sequential(data_only)
    model.needs_input_grad = False  # Sequential hands the flag to its first layer
    x = rng.normal(size=(2, 3, 6, 5)).astype(np.float32)
    y = full(x)
    np.testing.assert_array_equal(model(x), y)
    g = rng.normal(size=y.shape).astype(np.float32)
    assert full.backward(g).shape == x.shape
    assert model.backward(g) is None
    for (name, p), q in zip(full.named_parameters(), data_only.parameters()):
        np.testing.assert_allclose(q.grad, p.grad, rtol=1e-6, err_msg=name)
