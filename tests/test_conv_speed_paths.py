"""The fast paths of convolution and max pooling, against PyTorch in float64 and against the
general paths they replace.

- Stride-1 convolutions (``_ConvNd.flat``): flat columns over chunks of images, the bias in
  the GEMM, dL/dW on the flat grid (Cg*K >= 64) or image by image (fewer column rows), dL/dx
  as a correlation of the padded output gradient with the flipped kernel.
  Every option that changes that path's shapes or its fallbacks: dilation, groups, 'same'
  padding with an odd total, non-square kernels, each padding mode, padding larger than the
  dilated kernel, batches that do not divide into chunks, batch 1, an empty batch, no bias,
  frozen parameters, data inputs (no input gradient), 1-D and 3-D.
- Max pooling with disjoint windows: the first-maximum masks built in forward (ties, as after
  a ReLU), the NaN fallback, no masks under no_grad.
"""

from __future__ import annotations

import numpy as np
import pytest

import nnframe as nf
from nnframe.layers.conv import _ConvNd

CONV = {1: "Conv1d", 2: "Conv2d", 3: "Conv3d"}


# (dims, kwargs, input shape, images per chunk or None for the default chunking)
@pytest.fixture(autouse=True)
def _flat_at_any_size(monkeypatch):
    """The small cases below take the stride-1 path too (it starts at FLAT_MIN_OUTPUTS)."""
    monkeypatch.setattr(_ConvNd, "FLAT_MIN_OUTPUTS", 0)


def test_small_batches_take_the_im2col_path_and_large_ones_the_flat_path(monkeypatch):
    monkeypatch.setattr(_ConvNd, "FLAT_MIN_OUTPUTS", 1 << 17)
    layer = nf.Conv2d(1, 32, 3, padding=1, rng=0)
    small = np.ones((32, 1, 8, 8), np.float32)  # 65536 outputs
    layer(small)
    assert layer.saved[2] != "flat"
    layer.backward(np.ones((32, 32, 8, 8), np.float32))
    layer(np.ones((64, 1, 8, 8), np.float32))  # 131072 outputs
    assert layer.saved[2] == "flat"


FLAT_CASES = [
    (2, dict(in_channels=3, out_channels=5, kernel_size=3, padding=1), (7, 3, 6, 5), 2),
    (2, dict(in_channels=3, out_channels=5, kernel_size=3, padding=1), (7, 3, 6, 5), None),
    (2, dict(in_channels=2, out_channels=4, kernel_size=(2, 3), padding=(1, 0)), (5, 2, 6, 7), 3),
    (
        2,
        dict(in_channels=2, out_channels=3, kernel_size=3, padding="same", dilation=2),
        (3, 2, 7, 6),
        2,
    ),
    (2, dict(in_channels=2, out_channels=3, kernel_size=(2, 4), padding="same"), (4, 2, 5, 7), 3),
    (2, dict(in_channels=4, out_channels=6, kernel_size=3, padding=1, groups=2), (5, 4, 5, 6), 2),
    (2, dict(in_channels=4, out_channels=4, kernel_size=3, padding=2, groups=4), (3, 4, 5, 5), 2),
    (2, dict(in_channels=3, out_channels=2, kernel_size=3, padding=3), (3, 3, 4, 5), 2),
    (
        2,
        dict(in_channels=2, out_channels=3, kernel_size=3, padding="valid", bias=False),
        (5, 2, 6, 6),
        2,
    ),
    (
        2,
        dict(in_channels=2, out_channels=3, kernel_size=3, padding=1, padding_mode="reflect"),
        (5, 2, 5, 6),
        2,
    ),
    (
        2,
        dict(in_channels=2, out_channels=3, kernel_size=3, padding=2, padding_mode="circular"),
        (3, 2, 5, 6),
        2,
    ),
    (
        2,
        dict(
            in_channels=2, out_channels=3, kernel_size=(3, 2), padding=1, padding_mode="replicate"
        ),
        (3, 2, 4, 5),
        2,
    ),
    (2, dict(in_channels=3, out_channels=4, kernel_size=3, padding=1), (1, 3, 5, 5), None),
    (1, dict(in_channels=2, out_channels=3, kernel_size=3, padding=2, dilation=2), (5, 2, 9), 2),
    (1, dict(in_channels=2, out_channels=4, kernel_size=4, padding="same", groups=2), (3, 2, 8), 2),
    (3, dict(in_channels=2, out_channels=3, kernel_size=(2, 3, 2), padding=1), (3, 2, 3, 4, 4), 2),
    # Cg*K >= 64: dL/dW on the flat grid (_FlatWeightGrad) instead of image by image
    (2, dict(in_channels=8, out_channels=5, kernel_size=3, padding=1), (5, 8, 6, 5), 2),
    (2, dict(in_channels=16, out_channels=6, kernel_size=3, padding=1, groups=2), (3, 16, 5, 6), 2),
    (
        2,
        dict(in_channels=8, out_channels=3, kernel_size=(3, 4), padding="same", dilation=2),
        (3, 8, 7, 8),
        2,
    ),
    (2, dict(in_channels=8, out_channels=3, kernel_size=3, padding=3, bias=False), (3, 8, 4, 5), 2),
    (
        2,
        dict(in_channels=8, out_channels=4, kernel_size=3, padding=1, padding_mode="reflect"),
        (3, 8, 5, 6),
        2,
    ),
    (1, dict(in_channels=32, out_channels=3, kernel_size=3, padding=2, dilation=2), (5, 32, 9), 2),
    (
        3,
        dict(in_channels=8, out_channels=3, kernel_size=(2, 3, 2), padding=1),
        (3, 8, 3, 4, 4),
        None,
    ),
]


def _chunked(layer, images: int | None, shape):
    """Makes chunks of ``images`` images (None: the default sizing, FLAT_CHUNK_BYTES); the
    batches of FLAT_CASES do not divide into them, so a last, smaller chunk is covered."""
    if images is not None:
        assert shape[0] % images or shape[0] < images or images == 1
        layer._images_per_chunk = lambda n, elements: max(1, min(n, images))
    return layer


@pytest.mark.parametrize("dims,kwargs,shape,images", FLAT_CASES)
def test_flat_path_matches_torch_float64(dims, kwargs, shape, images):
    torch = pytest.importorskip("torch")
    ref = getattr(torch.nn, CONV[dims])(**kwargs).double()
    layer = getattr(nf, CONV[dims])(**kwargs, dtype=np.float64)
    layer.load_state_dict({k: v.detach().numpy() for k, v in ref.state_dict().items()})
    _chunked(layer, images, shape)
    rng = np.random.default_rng(3)
    x = rng.normal(size=shape)
    xt = torch.tensor(x, requires_grad=True)
    yt = ref(xt)
    y = layer(x)
    np.testing.assert_allclose(y, yt.detach().numpy(), rtol=1e-10, atol=1e-12)
    g = rng.normal(size=y.shape)
    yt.backward(torch.tensor(g))
    np.testing.assert_allclose(layer.backward(g), xt.grad.numpy(), rtol=1e-10, atol=1e-12)
    for name, p in layer.named_parameters():
        np.testing.assert_allclose(p.grad, getattr(ref, name).grad.numpy(), rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("dims,kwargs,shape,images", FLAT_CASES)
def test_flat_path_matches_im2col_path_float32(dims, kwargs, shape, images):
    """The same layer with ``flat = False`` (im2col + col2im) gives the same results."""
    fast = _chunked(getattr(nf, CONV[dims])(**kwargs, rng=1), images, shape)
    general = getattr(nf, CONV[dims])(**kwargs, rng=1)
    general.flat = False
    rng = np.random.default_rng(4)
    x = rng.normal(size=shape).astype(np.float32)
    y = fast(x)
    np.testing.assert_allclose(y, general(x), rtol=1e-5, atol=1e-5)
    g = rng.normal(size=y.shape).astype(np.float32)
    np.testing.assert_allclose(fast.backward(g), general.backward(g), rtol=1e-5, atol=1e-5)
    for (name, p), q in zip(fast.named_parameters(), general.parameters()):
        np.testing.assert_allclose(p.grad, q.grad, rtol=1e-4, atol=1e-4, err_msg=name)


def test_flat_path_is_taken_for_stride_one_only():
    x = np.ones((2, 1, 5, 5), dtype=np.float32)
    flat = nf.Conv2d(1, 2, 3, padding=1, rng=0)
    flat(x)
    assert flat.saved[2] == "flat"
    strided = nf.Conv2d(1, 2, 3, stride=2, padding=1, rng=0)
    strided(x)
    assert strided.saved[2] != "flat"


@pytest.mark.parametrize("channels", [3, 8])  # Cg*K = 27 (image by image) and 72 (flat grid)
def test_flat_path_partial_gradients(channels):
    """Frozen weight (only dL/db and dL/dx), frozen bias, and data inputs (no dL/dx)."""
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(5)
    x = rng.normal(size=(5, channels, 6, 4))
    ref = torch.nn.Conv2d(channels, 4, 3, padding=1).double()
    xt = torch.tensor(x, requires_grad=True)
    yt = ref(xt)
    g = rng.normal(size=tuple(yt.shape))
    yt.backward(torch.tensor(g))
    state = {k: v.detach().numpy() for k, v in ref.state_dict().items()}
    for frozen in ("weight", "bias", None):
        layer = nf.Conv2d(channels, 4, 3, padding=1, dtype=np.float64)
        layer.load_state_dict(state)
        layer.FLAT_CHUNK_BYTES = 1  # one image per chunk
        assert layer._images_per_chunk(5, 100) == 1
        if frozen is not None:
            getattr(layer, frozen).requires_grad = False
        layer.needs_input_grad = frozen is not None
        layer(x)
        dx = layer.backward(g)
        if frozen is None:
            assert dx is None
        else:
            np.testing.assert_allclose(dx, xt.grad.numpy(), rtol=1e-10, atol=1e-12)
        for name in ("weight", "bias"):
            p = getattr(layer, name)
            expected = 0 if name == frozen else getattr(ref, name).grad.numpy()
            np.testing.assert_allclose(p.grad, np.broadcast_to(expected, p.shape), atol=1e-12)


def test_flat_path_empty_batch_and_second_backward():
    layer = nf.Conv2d(2, 3, 3, padding=1, rng=0)
    y = layer(np.ones((0, 2, 4, 4), dtype=np.float32))
    assert y.shape == (0, 3, 4, 4)
    assert layer.backward(np.ones(y.shape, dtype=np.float32)).shape == (0, 2, 4, 4)
    assert not layer.weight.grad.any()
    # one forward, two backwards: the second adds the same gradients again
    x = np.random.default_rng(0).normal(size=(3, 2, 4, 4)).astype(np.float32)
    g = np.ones((3, 3, 4, 4), dtype=np.float32)
    layer(x)
    dx = layer.backward(g)
    first = layer.weight.grad.copy()
    np.testing.assert_allclose(layer.backward(g), dx, rtol=1e-6)
    np.testing.assert_allclose(layer.weight.grad, 2 * first, rtol=1e-5)


# ---------------------------------------------------------------------------- max pooling
POOL_CASES = [
    (dict(kernel_size=2), (3, 2, 6, 8)),
    (dict(kernel_size=2), (3, 2, 7, 5)),  # the last row and column are in no window
    (dict(kernel_size=(2, 3), stride=(3, 3)), (2, 2, 8, 9)),
    (dict(kernel_size=2, stride=3, padding=1), (2, 3, 7, 7)),
    (dict(kernel_size=2, dilation=2, stride=4), (2, 2, 9, 9)),
    (dict(kernel_size=3, ceil_mode=True), (2, 2, 7, 8)),
    (dict(kernel_size=3, stride=2), (2, 2, 7, 7)),  # overlapping windows: the general path
]


@pytest.mark.parametrize("kwargs,shape", POOL_CASES)
@pytest.mark.parametrize("ties", [False, True])
def test_max_pool_masks_match_torch_float64(kwargs, shape, ties):
    """With ties (ReLU zeros, repeated values) the first maximum in row-major window order
    takes the gradient, as in PyTorch."""
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(6)
    x = rng.normal(size=shape)
    if ties:
        x = np.maximum(np.round(x), 0.0)  # many equal values, many zeros
    layer = nf.MaxPool2d(**kwargs)
    ref = torch.nn.MaxPool2d(**kwargs)
    xt = torch.tensor(x, requires_grad=True)
    yt = ref(xt)
    y = layer(x)
    np.testing.assert_array_equal(y, yt.detach().numpy())
    g = rng.normal(size=y.shape)
    yt.backward(torch.tensor(g))
    np.testing.assert_allclose(layer.backward(g), xt.grad.numpy(), rtol=1e-12, atol=0)


def test_max_pool_masks_are_built_only_when_useful():
    x = np.random.default_rng(0).normal(size=(2, 2, 4, 4))
    layer = nf.MaxPool2d(2)
    layer(x)
    assert layer.saved[4] is not None  # disjoint windows: masks
    nan = x.copy()
    nan[0, 0, 0, 1] = np.nan
    y = layer(nan)
    assert layer.saved[4] is None  # a NaN maximum: backward finds the arg-max itself
    dx = layer.backward(np.ones_like(y))
    assert dx[0, 0, 0, 1] == 1 and dx[0, 0, :2, :2].sum() == 1  # the NaN took the gradient
    overlapping = nf.MaxPool2d(3, stride=2)
    overlapping(x)
    assert overlapping.saved[4] is None
    with nf.no_grad():
        assert layer(x).shape == (2, 2, 2, 2)  # no masks built, nothing saved


def test_max_pool_masks_empty_batch():
    layer = nf.MaxPool2d(2)
    y = layer(np.ones((0, 2, 4, 4), dtype=np.float32))
    assert y.shape == (0, 2, 2, 2)
    assert layer.backward(np.ones(y.shape, dtype=np.float32)).shape == (0, 2, 4, 4)


# ---------------------------------------------------------------------------- array module
# the CPU stand-in array module of the backend tests: every array these paths allocate must be of
# the input's kind (tests/test_backend.py's table covers dL/dW image by image and the general
# pooling; these cases cover the flat dL/dW and the masks)
try:
    from tests.standin import is_fake, on_fake, to_fake  # noqa: F401
except ImportError:  # the stand-in still inside tests/test_backend.py
    from tests.test_backend import is_fake, on_fake, to_fake  # noqa: F401

STAND_IN = {
    "flat dL/dW, zeros": (lambda: nf.Conv2d(8, 4, 3, padding=1, rng=0), (2, 8, 5, 4)),
    "flat dL/dW, groups, reflect": (
        lambda: nf.Conv2d(16, 4, 3, padding=1, groups=2, padding_mode="reflect", rng=0),
        (3, 16, 4, 5),
    ),
    "MaxPool2d masks": (lambda: nf.MaxPool2d(2), (2, 3, 4, 6)),
}


@pytest.mark.parametrize("name", list(STAND_IN))
def test_fast_paths_run_on_the_registered_module(name, on_fake):  # noqa: F811
    make, shape = STAND_IN[name]
    model = make()
    model._apply(to_fake)
    x = to_fake(np.random.default_rng(0).normal(size=shape).astype(np.float32))
    for _ in range(2):  # a second step: buffers of the first one
        y = model(x)
        dx = model.backward(to_fake(np.ones(y.shape, dtype=np.float32)))
        assert is_fake(y) and is_fake(dx)
        for pname, p in model.named_parameters():
            assert is_fake(p.grad), pname
