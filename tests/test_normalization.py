"""Normalization layers: BatchNorm1d/2d/3d, LayerNorm, GroupNorm, InstanceNorm1d/2d, RMSNorm."""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import nnframe as nf
from tests.strategies import normal_array, seeds, small

CHECKED_MODULES = [
    nf.BatchNorm1d,
    nf.BatchNorm2d,
    nf.BatchNorm3d,
    nf.LayerNorm,
    nf.GroupNorm,
    nf.InstanceNorm1d,
    nf.InstanceNorm2d,
    nf.RMSNorm,
]

batch = st.integers(min_value=2, max_value=4)  # batch statistics need at least 2 values


def randomize(module, seed: int):
    """Random affine parameters and running statistics, so that no check passes by symmetry
    (weight 1, bias 0, mean 0, variance 1 would hide a missing term)."""
    rng = np.random.default_rng(seed + 1)
    for p in module.parameters():
        p.data[...] = rng.normal(size=p.shape)
    if getattr(module, "running_mean", None) is not None:
        module.running_mean[...] = rng.normal(size=module.running_mean.shape)
        module.running_var[...] = rng.uniform(0.5, 2.0, size=module.running_var.shape)
    return module


# ---------------------------------------------------------------------- gradient checks


@given(
    seed=seeds,
    n=batch,
    c=small,
    length=st.sampled_from([None, 1, 3]),
    affine=st.booleans(),
    track=st.booleans(),
    training=st.booleans(),
    freeze=st.booleans(),
)
def test_batchnorm1d_gradcheck(seed, n, c, length, affine, track, training, freeze):
    """Training mode is checked as a whole: the batch statistics couple every sample."""
    shape = (n, c) if length is None else (n, c, length)
    bn = randomize(nf.BatchNorm1d(c, affine=affine, track_running_stats=track), seed)
    bn.train(training).requires_grad_(not freeze)
    nf.check_module(bn, normal_array(seed, shape, scale=2.0) + 1.0, expected_shape=shape)


@given(seed=seeds, n=batch, c=small, training=st.booleans(), momentum=st.sampled_from([0.1, None]))
def test_batchnorm2d_gradcheck(seed, n, c, training, momentum):
    bn = randomize(nf.BatchNorm2d(c, momentum=momentum), seed).train(training)
    nf.check_module(bn, normal_array(seed, (n, c, 2, 3)))


@given(seed=seeds, c=small, training=st.booleans())
def test_batchnorm3d_gradcheck(seed, c, training):
    bn = randomize(nf.BatchNorm3d(c), seed).train(training)
    nf.check_module(bn, normal_array(seed, (2, c, 2, 1, 2)))


@given(
    seed=seeds,
    lead=st.lists(small, min_size=0, max_size=2),
    normalized=st.lists(st.integers(2, 4), min_size=1, max_size=2),
    affine=st.booleans(),
    bias=st.booleans(),
)
def test_layernorm_gradcheck(seed, lead, normalized, affine, bias):
    ln = randomize(nf.LayerNorm(tuple(normalized), elementwise_affine=affine, bias=bias), seed)
    shape = (*lead, *normalized)
    nf.check_module(ln, normal_array(seed, shape), expected_shape=shape)


@given(seed=seeds, lead=st.lists(small, max_size=2), d=st.integers(1, 5), affine=st.booleans())
def test_rmsnorm_gradcheck(seed, lead, d, affine):
    rms = randomize(nf.RMSNorm(d, eps=1e-6, elementwise_affine=affine), seed)
    nf.check_module(rms, normal_array(seed, (*lead, d)))


@given(
    seed=seeds,
    n=small,
    groups=st.integers(1, 3),
    per_group=st.integers(1, 2),
    spatial=st.sampled_from([(), (3,), (2, 2)]),
    affine=st.booleans(),
)
def test_groupnorm_gradcheck(seed, n, groups, per_group, spatial, affine):
    c = groups * per_group
    if c * int(np.prod(spatial)) // groups < 2:
        spatial = (2,)  # a group of one value has zero variance: x_hat is 0 whatever x is
    gn = randomize(nf.GroupNorm(groups, c, affine=affine), seed)
    nf.check_module(gn, normal_array(seed, (n, c, *spatial)))


@given(
    seed=seeds,
    n=small,
    c=small,
    affine=st.booleans(),
    track=st.booleans(),
    training=st.booleans(),
    two_d=st.booleans(),
)
def test_instancenorm_gradcheck(seed, n, c, affine, track, training, two_d):
    cls, spatial = (nf.InstanceNorm2d, (2, 3)) if two_d else (nf.InstanceNorm1d, (4,))
    layer = randomize(cls(c, affine=affine, track_running_stats=track), seed).train(training)
    nf.check_module(layer, normal_array(seed, (n, c, *spatial)))


# ---------------------------------------------------------------------- worked examples


def test_batchnorm_worked_example():
    bn = nf.BatchNorm1d(1, eps=0.0, momentum=0.5)
    x = np.array([[1.0], [3.0]], dtype=np.float32)  # mean 2, biased var 1, unbiased var 2
    np.testing.assert_allclose(bn(x), [[-1.0], [1.0]])
    np.testing.assert_allclose(bn.running_mean, [0.5 * 0 + 0.5 * 2])
    np.testing.assert_allclose(bn.running_var, [0.5 * 1 + 0.5 * 2])
    assert int(bn.num_batches_tracked) == 1
    # y = x_hat, so dL/dx for g = (1, 0): (g - mean(g) - x_hat * mean(g * x_hat)) / std
    # = ((1, 0) - 0.5 - (-1, 1) * (-0.5)) / 1 = (0, 0): shifting x by the same amount is free,
    # and scaling is undone by the normalization
    dx = bn.backward(np.array([[1.0], [0.0]], dtype=np.float32))
    np.testing.assert_allclose(dx, [[0.0], [0.0]], atol=1e-7)
    np.testing.assert_allclose(bn.weight.grad, [-1.0])  # sum(g * x_hat)
    np.testing.assert_allclose(bn.bias.grad, [1.0])  # sum(g)
    bn.eval()  # now (x - running_mean) / sqrt(running_var) = (x - 1) / sqrt(1.5)
    np.testing.assert_allclose(bn(np.array([[2.0]])), [[1 / np.sqrt(1.5)]], rtol=1e-6)


def test_batchnorm_momentum_none_is_a_cumulative_average():
    bn = nf.BatchNorm1d(1, momentum=None)
    batches = [np.array([[0.0], [2.0]]), np.array([[4.0], [8.0]]), np.array([[1.0], [1.0]])]
    for b in batches:
        bn(b)
    np.testing.assert_allclose(bn.running_mean, [np.mean([1.0, 6.0, 1.0])], rtol=1e-6)
    np.testing.assert_allclose(bn.running_var, [np.mean([2.0, 8.0, 0.0])], rtol=1e-6)
    assert int(bn.num_batches_tracked) == 3


def test_layernorm_and_rmsnorm_worked_examples():
    x = np.array([[1.0, 2.0, 3.0]], dtype=np.float32)
    np.testing.assert_allclose(nf.LayerNorm(3, eps=0.0)(x), [[-np.sqrt(1.5), 0, np.sqrt(1.5)]])
    rms = np.sqrt((1 + 4 + 9) / 3)
    np.testing.assert_allclose(nf.RMSNorm(3, eps=0.0)(x), x / rms, rtol=1e-6)


def test_groupnorm_with_one_group_per_channel_is_instancenorm(rng):
    x = rng.normal(size=(3, 4, 5)).astype(np.float32)
    np.testing.assert_allclose(nf.GroupNorm(4, 4)(x), nf.InstanceNorm1d(4)(x), atol=1e-6)
    # and one group for every channel is a LayerNorm over (C, L)
    np.testing.assert_allclose(nf.GroupNorm(1, 4)(x), nf.LayerNorm((4, 5))(x), atol=1e-6)


# ---------------------------------------------------------------------- buffers, modes, dtype


def test_batchnorm_buffers_in_state_dict_under_pytorch_names():
    model = nf.Sequential(nf.Dense(3, 4, rng=0), nf.BatchNorm1d(4))
    assert list(model.state_dict()) == [
        "0.weight",
        "0.bias",
        "1.weight",
        "1.bias",
        "1.running_mean",
        "1.running_var",
        "1.num_batches_tracked",
    ]
    assert [name for name, _ in model.named_parameters()] == [
        "0.weight",
        "0.bias",
        "1.weight",
        "1.bias",
    ]  # optimizers never see the buffers
    assert model.state_dict()["1.num_batches_tracked"].dtype == np.int64


def test_batchnorm_state_dict_round_trip_and_dtype(rng):
    a = nf.BatchNorm2d(3)
    a(rng.normal(size=(4, 3, 2, 2)))
    b = nf.BatchNorm2d(3)
    b.load_state_dict(a.state_dict())
    np.testing.assert_array_equal(b.running_var, a.running_var)
    assert int(b.num_batches_tracked) == 1
    b.to(np.float64)
    assert b.running_mean.dtype == np.float64 and b.weight.dtype == np.float64
    assert b.num_batches_tracked.dtype == np.int64  # integers are not cast
    assert b(rng.normal(size=(2, 3, 1, 1))).dtype == np.float64


def test_untracked_batchnorm_has_no_buffers_and_uses_batch_stats_in_eval(rng):
    bn = nf.BatchNorm1d(3, track_running_stats=False, affine=False).eval()
    assert bn.state_dict() == {}
    x = rng.normal(size=(6, 3)) * 3 + 2
    y = bn(x)
    np.testing.assert_allclose(y.mean(axis=0), 0, atol=1e-5)


def test_float32_by_default_no_upcast(rng):
    x64 = rng.normal(size=(4, 3, 5))
    for layer in [
        nf.BatchNorm1d(3),
        nf.LayerNorm(5),
        nf.GroupNorm(1, 3),
        nf.InstanceNorm1d(3),
        nf.RMSNorm(5),
        nf.InstanceNorm1d(3, affine=False),
    ]:
        y = layer(x64)
        assert y.dtype == np.float32, layer
        assert layer.backward(np.ones_like(y)).dtype == np.float32, layer


def test_forward_does_not_mutate_running_stats_in_eval(rng):
    bn = randomize(nf.BatchNorm1d(3), 0).eval()
    before = bn.state_dict()
    bn(rng.normal(size=(5, 3)))
    for key, value in bn.state_dict().items():
        np.testing.assert_array_equal(value, before[key])


EVAL_CASES = [
    (lambda: nf.BatchNorm1d(3), (5, 3)),
    (lambda: nf.BatchNorm1d(3), (5, 3, 4)),
    (lambda: nf.BatchNorm2d(3), (5, 3, 2, 2)),
    (lambda: nf.BatchNorm3d(3), (5, 3, 1, 2, 2)),
    (lambda: nf.LayerNorm((3, 4)), (5, 3, 4)),
    (lambda: nf.GroupNorm(3, 3), (5, 3, 4)),
    (lambda: nf.InstanceNorm1d(3), (5, 3, 4)),
    (lambda: nf.InstanceNorm2d(3, track_running_stats=True), (5, 3, 2, 2)),
    (lambda: nf.RMSNorm(4), (5, 3, 4)),
]
# Declared batch-coupled even in evaluation mode: they normalize with the batch's statistics.
BATCH_COUPLED_IN_EVAL = [lambda: nf.BatchNorm1d(3, track_running_stats=False)]


@pytest.mark.parametrize("make, shape", EVAL_CASES)
def test_eval_mode_is_deterministic_and_per_sample(make, shape, rng):
    layer = make()
    layer(rng.normal(size=shape))  # one training step, so running statistics are not trivial
    layer.eval()
    x = rng.normal(size=shape).astype(np.float32)
    y = layer(x)
    np.testing.assert_array_equal(layer(x), y)
    for i in range(shape[0]):
        np.testing.assert_allclose(layer(x[i : i + 1])[0], y[i], rtol=1e-5, atol=1e-6)


def test_batch_coupled_layers_are_declared_and_coupled(rng):
    for make in BATCH_COUPLED_IN_EVAL:
        layer = make().eval()
        x = rng.normal(size=(5, 3)).astype(np.float32)
        assert not np.allclose(layer(x)[:2], layer(x[:2]))  # another batch, another output


def test_training_mode_is_batch_coupled(rng):
    bn = nf.BatchNorm1d(3)
    x = rng.normal(size=(5, 3))
    assert not np.allclose(bn(x)[:2], bn(x[:2]))


# ---------------------------------------------------------------------- errors


def test_shape_errors_name_the_layer():
    with pytest.raises(nf.ShapeError, match=r"BatchNorm1d\(4.*expected input of shape \(N, 4\) "):
        nf.BatchNorm1d(4)(np.zeros((2, 3)))
    with pytest.raises(
        nf.ShapeError, match=r"expected input of shape \(N, 3, H, W\), got \(2, 3\)"
    ):
        nf.BatchNorm2d(3)(np.zeros((2, 3)))
    with pytest.raises(nf.ShapeError, match=r"LayerNorm.*expected input of shape \(\*, 4\), got"):
        nf.LayerNorm(4)(np.zeros((2, 3)))
    with pytest.raises(nf.ShapeError, match=r"GroupNorm.*expected input of shape \(N, 4, \*\)"):
        nf.GroupNorm(2, 4)(np.zeros((2, 3)))
    with pytest.raises(nf.ShapeError, match=r"InstanceNorm1d.*\(N, 2, L\), got \(2,\)"):
        nf.InstanceNorm1d(2)(np.zeros(2))  # (C, L) is PyTorch's unbatched form: accepted


def test_one_value_per_channel_in_training_is_an_error():
    with pytest.raises(ValueError, match="expected more than 1 value per channel when training"):
        nf.BatchNorm1d(3)(np.zeros((1, 3)))
    nf.BatchNorm1d(3).eval()(np.zeros((1, 3)))  # fine in evaluation mode


def test_invalid_hyperparameters():
    with pytest.raises(ValueError, match=r"BatchNorm1d: invalid momentum=1.5 \(must be in"):
        nf.BatchNorm1d(3, momentum=1.5)
    with pytest.raises(ValueError, match=r"BatchNorm2d: invalid num_features=0"):
        nf.BatchNorm2d(0)
    with pytest.raises(ValueError, match=r"GroupNorm: invalid num_groups=3 \(must divide"):
        nf.GroupNorm(3, 4)
    with pytest.raises(ValueError, match=r"LayerNorm: invalid normalized_shape=\(\)"):
        nf.LayerNorm(())
    with pytest.raises(ValueError, match=r"RMSNorm: invalid eps=-1"):
        nf.RMSNorm(3, eps=-1)


def test_backward_before_forward():
    with pytest.raises(RuntimeError, match="backward called before forward"):
        nf.LayerNorm(3).backward(np.zeros((1, 3)))


# ---------------------------------------------------------------------- PyTorch parity


def _torch_pair(torch, name):
    """(nnframe layer, torch layer, input shape), float64, same random affine parameters."""
    tnn = torch.nn
    cases = {
        "bn1d": (nf.BatchNorm1d(3), tnn.BatchNorm1d(3), (6, 3)),
        "bn1d_seq": (nf.BatchNorm1d(3, momentum=0.3), tnn.BatchNorm1d(3, momentum=0.3), (4, 3, 5)),
        "bn1d_cumulative": (
            nf.BatchNorm1d(3, momentum=None),
            tnn.BatchNorm1d(3, momentum=None),
            (5, 3),
        ),
        "bn2d": (nf.BatchNorm2d(2), tnn.BatchNorm2d(2), (3, 2, 3, 4)),
        "bn3d": (nf.BatchNorm3d(2), tnn.BatchNorm3d(2), (2, 2, 2, 3, 2)),
        "in1d": (
            nf.InstanceNorm1d(3, affine=True, track_running_stats=True),
            tnn.InstanceNorm1d(3, affine=True, track_running_stats=True),
            (4, 3, 6),
        ),
        "in2d": (nf.InstanceNorm2d(2), tnn.InstanceNorm2d(2), (3, 2, 3, 3)),
        "ln": (nf.LayerNorm((3, 4)), tnn.LayerNorm((3, 4)), (5, 3, 4)),
        "gn": (nf.GroupNorm(2, 4), tnn.GroupNorm(2, 4), (3, 4, 5)),
        "rms": (nf.RMSNorm(4), tnn.RMSNorm(4), (5, 2, 4)),
    }
    ours, theirs, shape = cases[name]
    return ours.to(np.float64), theirs.double(), shape


@pytest.mark.parametrize(
    "name",
    ["bn1d", "bn1d_seq", "bn1d_cumulative", "bn2d", "bn3d", "in1d", "in2d", "ln", "gn", "rms"],
)
def test_matches_pytorch_over_training_steps(name):
    torch = pytest.importorskip("torch")
    ours, theirs, shape = _torch_pair(torch, name)
    rng = np.random.default_rng(7)
    lr = 0.1
    params = list(zip(ours.parameters(), theirs.parameters()))
    for p, tp in params:
        p.data[...] = rng.normal(size=p.shape)
        with torch.no_grad():
            tp.copy_(torch.from_numpy(p.data))
    for _ in range(4):  # forward, backward and one SGD step on both
        x = rng.normal(size=shape) * 2 + 0.5
        g = rng.normal(size=shape)
        ours.zero_grad()
        theirs.zero_grad()
        xt = torch.tensor(x, requires_grad=True)
        yt = theirs(xt)
        yt.backward(torch.from_numpy(g))
        np.testing.assert_allclose(ours(x), yt.detach().numpy(), rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(ours.backward(g), xt.grad.numpy(), rtol=1e-9, atol=1e-11)
        for p, tp in params:
            np.testing.assert_allclose(p.grad, tp.grad.numpy(), rtol=1e-9, atol=1e-11)
            p.data -= lr * p.grad
            with torch.no_grad():
                tp -= lr * tp.grad
        theirs_state = {k: v.numpy() for k, v in theirs.state_dict().items()}
        ours_state = ours.state_dict()
        assert list(ours_state) == list(theirs_state)
        for key, value in theirs_state.items():
            np.testing.assert_allclose(ours_state[key], value, rtol=1e-10, atol=1e-12, err_msg=key)
    ours.eval()
    theirs.eval()
    x = rng.normal(size=shape)
    np.testing.assert_allclose(ours(x), theirs(torch.from_numpy(x)).detach().numpy(), rtol=1e-10)


def test_pytorch_state_dict_loads():
    torch = pytest.importorskip("torch")
    theirs = torch.nn.BatchNorm1d(3)
    theirs(torch.randn(8, 3, generator=torch.Generator().manual_seed(0)))
    ours = nf.BatchNorm1d(3)
    ours.load_state_dict({k: v.numpy() for k, v in theirs.state_dict().items()}, cast=True)
    np.testing.assert_allclose(ours.running_var, theirs.running_var.numpy())
    assert int(ours.num_batches_tracked) == 1
