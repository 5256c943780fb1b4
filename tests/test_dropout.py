"""Dropout, Dropout1d, Dropout2d, AlphaDropout."""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import nnframe as nf
from tests.strategies import normal_array, seeds, small

CHECKED_MODULES = [nf.Dropout, nf.Dropout1d, nf.Dropout2d, nf.AlphaDropout]

probabilities = st.sampled_from([0.0, 0.1, 0.5, 0.9, 1.0])


@given(seed=seeds, p=probabilities, shape=st.lists(small, min_size=1, max_size=3))
def test_dropout_gradcheck(seed, p, shape):
    """check_module restores the layer's generator before each forward: every evaluation sees
    the same mask, so the finite differences are those of one fixed masked function."""
    nf.check_module(nf.Dropout(p, rng=seed), normal_array(seed, shape), expected_shape=tuple(shape))


@given(seed=seeds, p=probabilities, n=small, c=small, length=small)
def test_channel_dropout_gradcheck(seed, p, n, c, length):
    nf.check_module(nf.Dropout1d(p, rng=seed), normal_array(seed, (n, c, length)))
    nf.check_module(nf.Dropout2d(p, rng=seed), normal_array(seed, (n, c, length, 2)))


@given(seed=seeds, p=probabilities, shape=st.lists(small, min_size=1, max_size=3))
def test_alpha_dropout_gradcheck(seed, p, shape):
    nf.check_module(nf.AlphaDropout(p, rng=seed), normal_array(seed, shape))


@pytest.mark.parametrize("p", [0.1, 0.5, 0.8])
def test_mean_is_preserved_within_a_statistical_bound(p):
    n = 200_000
    y = nf.Dropout(p, rng=3)(np.ones(n, dtype=np.float32))
    # each element is 1/(1-p) with probability 1-p, else 0: mean 1, variance p/(1-p)
    bound = 5 * np.sqrt(p / (1 - p) / n)
    assert abs(float(y.mean(dtype=np.float64)) - 1.0) < bound
    assert abs(float(np.mean(y == 0)) - p) < 5 * np.sqrt(p * (1 - p) / n)
    np.testing.assert_allclose(np.unique(y), [0.0, 1 / (1 - p)], rtol=1e-6)


@pytest.mark.parametrize("cls", [nf.Dropout1d, nf.Dropout2d])
def test_channel_dropout_drops_whole_channels(cls):
    shape = (50, 40, 6) if cls is nf.Dropout1d else (50, 40, 3, 2)
    y = cls(0.5, rng=1)(np.ones(shape, dtype=np.float32))
    per_channel = y.reshape(50, 40, -1)
    assert np.all(per_channel.min(axis=2) == per_channel.max(axis=2))  # all or nothing
    kept = per_channel[:, :, 0] > 0
    assert abs(kept.mean() - 0.5) < 5 * np.sqrt(0.25 / kept.size)
    np.testing.assert_allclose(per_channel[kept], 2.0)


def test_dropout2d_reads_a_3d_input_as_channels_of_n_c_l_as_pytorch():
    """PyTorch 2.x: Dropout2d on (N, C, L) drops whole (sample, channel) rows, with a
    UserWarning (in evaluation mode too); nnframe does the same."""
    torch = pytest.importorskip("torch")
    x = np.random.default_rng(0).normal(size=(30, 20, 5))
    drop = nf.Dropout2d(0.5, rng=2)
    with pytest.warns(UserWarning, match=r"Dropout2d\(p=0.5\): a 3-D input is read as \(N, C, L\)"):
        y = drop(x)
    with pytest.warns(UserWarning, match="3D input to dropout2d"):
        y_torch = torch.nn.Dropout2d(0.5)(torch.from_numpy(x)).numpy()
    for out in (y, y_torch):
        mask = out / x  # 0 or 1 / (1 - p) = 2 for each element
        assert np.all((mask[:, :, :1] == mask).all(axis=2))  # one draw per (n, c)
        assert set(np.unique(mask.round(12))) == {0.0, 2.0}
        kept = mask[:, :, 0] > 0
        assert abs(kept.mean() - 0.5) < 5 * np.sqrt(0.25 / kept.size)
    g = np.random.default_rng(1).normal(size=x.shape)
    np.testing.assert_allclose(drop.backward(g), g * (y / x))
    with pytest.warns(UserWarning, match=r"read as \(N, C, L\)"):
        nf.check_module(nf.Dropout2d(0.3, rng=3), x[:3, :4])
    with pytest.warns(UserWarning, match=r"read as \(N, C, L\)"):
        assert drop.eval()(x) is x
    with pytest.raises(nf.ShapeError, match=r"expected input of shape \(N, C, H, W\)"):
        nf.Dropout2d(0.5)(np.ones((2, 3, 4, 5, 6)))


def test_alpha_dropout_keeps_zero_mean_unit_variance():
    x = np.random.default_rng(0).normal(size=200_000)
    y = nf.AlphaDropout(0.2, rng=4)(x)
    assert abs(y.mean()) < 0.02
    assert abs(y.var() - 1.0) < 0.02


ALL = [
    (lambda: nf.Dropout(0.5, rng=0), (6, 5)),
    (lambda: nf.Dropout1d(0.5, rng=0), (6, 5, 3)),
    (lambda: nf.Dropout2d(0.5, rng=0), (6, 5, 2, 2)),
    (lambda: nf.AlphaDropout(0.5, rng=0), (6, 5)),
]


@pytest.mark.parametrize("make, shape", ALL)
def test_identity_in_eval_mode(make, shape, rng):
    layer = make().eval()
    x = rng.normal(size=shape).astype(np.float32)
    y = layer(x)
    np.testing.assert_array_equal(y, x)
    np.testing.assert_array_equal(layer.backward(x), x)
    for i in range(shape[0]):  # deterministic and per-sample independent
        np.testing.assert_array_equal(layer(x[i : i + 1])[0], y[i])


@pytest.mark.parametrize("make, shape", ALL)
def test_same_seed_same_mask(make, shape, rng):
    x = rng.normal(size=shape).astype(np.float32)
    a, b = make(), make()
    ya, yb = a(x), b(x)
    np.testing.assert_array_equal(ya, yb)
    g = rng.normal(size=shape).astype(np.float32)
    np.testing.assert_array_equal(a.backward(g), b.backward(g))
    assert not np.array_equal(a(x), ya)  # the generator moves on: the next mask differs


def test_manual_seed_repeats_layers_built_without_rng():
    x = np.ones((8, 8), dtype=np.float32)
    nf.manual_seed(11)
    first = nf.Dropout(0.5)(x)
    nf.manual_seed(11)
    again = nf.Dropout(0.5)(x)
    np.testing.assert_array_equal(first, again)


def test_backward_applies_the_forward_mask(rng):
    drop = nf.Dropout(0.3, rng=5)
    y = drop(np.ones((4, 6), dtype=np.float32))
    g = rng.normal(size=(4, 6)).astype(np.float32)
    np.testing.assert_allclose(drop.backward(g), g * y)  # mask = y for an input of ones


def test_p_zero_and_one(rng):
    x = rng.normal(size=(3, 4)).astype(np.float32)
    np.testing.assert_array_equal(nf.Dropout(0.0)(x), x)
    np.testing.assert_array_equal(nf.Dropout(1.0)(x), np.zeros_like(x))
    np.testing.assert_array_equal(nf.AlphaDropout(1.0)(x), np.zeros_like(x))


def test_dtype_is_kept(rng):
    for dtype in (np.float32, np.float64):
        x = rng.normal(size=(3, 4, 5)).astype(dtype)
        for layer in (
            nf.Dropout(0.5, rng=0),
            nf.Dropout1d(0.5, rng=0),
            nf.AlphaDropout(0.5, rng=0),
        ):
            assert layer(x).dtype == dtype
            assert layer.backward(x).dtype == dtype


def test_train_eval_through_a_model(rng):
    model = nf.Sequential(nf.Dense(4, 4, rng=0), nf.Dropout(0.5, rng=1))
    x = rng.normal(size=(3, 4)).astype(np.float32)
    model.eval()
    np.testing.assert_array_equal(model(x), model(x))
    model.train()
    assert not np.array_equal(model(x), model(x))


def test_errors():
    with pytest.raises(ValueError, match=r"Dropout: invalid p=1.5 \(must be in \[0, 1\]\)"):
        nf.Dropout(1.5)
    with pytest.raises(ValueError, match=r"AlphaDropout: invalid p=-0.1"):
        nf.AlphaDropout(-0.1)
    with pytest.raises(
        nf.ShapeError,
        match=r"Dropout2d\(p=0.5\): expected input of shape \(N, C, H, W\), got \(2, 3\)",
    ):
        nf.Dropout2d(0.5)(np.zeros((2, 3)))
    with pytest.raises(
        nf.ShapeError, match=r"Dropout1d\(p=0.5\): expected input of shape \(N, C, L\)"
    ):
        nf.Dropout1d(0.5)(np.zeros(3))  # (C, L) is PyTorch's unbatched form: accepted
    with pytest.raises(TypeError, match=r"rng: expected a numpy.random.Generator"):
        nf.Dropout(0.5, rng="seed")
    with pytest.raises(TypeError, match=r"Dropout\(p=0.5\): expected a real numeric input"):
        nf.Dropout(0.5)(np.array(["a"]))
