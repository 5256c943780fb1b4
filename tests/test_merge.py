"""Merge and selection layers: gradients (check_module, sharing included), broadcasting,
shapes, the Add merge next to Add's branches, and errors."""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import nnframe as nf
from tests.strategies import normal_array, seeds, small

CHECKED_MODULES = [
    nf.Multiply,
    nf.Subtract,
    nf.Concatenate,
    nf.Dot,
    nf.Average,
    nf.Maximum,
    nf.GetItem,
    nf.TimeStep,
]


@given(seed=seeds, n=small, d=small, k=st.integers(2, 4))
def test_elementwise_merges_gradcheck(seed, n, d, k):
    xs = tuple(normal_array(seed + i, (n, d)) for i in range(k))
    for layer in (nf.Add(), nf.Multiply(), nf.Average(), nf.Maximum()):
        nf.check_module(layer, xs, expected_shape=(n, d))
    nf.check_module(nf.Subtract(), xs[:2], expected_shape=(n, d))


@given(seed=seeds, n=small, d=small)
def test_broadcasting_merges_sum_the_gradient_over_broadcast_axes(seed, n, d):
    a, b = normal_array(seed, (n, d)), normal_array(seed + 1, (n, 1))
    for layer in (nf.Add(), nf.Multiply(), nf.Subtract(), nf.Average(), nf.Maximum()):
        nf.check_module(layer, (a, b), expected_shape=(n, d))
    g = nf.Multiply()
    g(a, b)
    ga, gb = g.backward(np.ones((n, d)))
    np.testing.assert_allclose(gb[:, 0], a.sum(axis=1))
    assert ga.shape == a.shape


@given(
    seed=seeds,
    n=small,
    widths=st.lists(small, min_size=2, max_size=4),
    axis=st.sampled_from([1, -1]),
)
def test_concatenate_gradcheck(seed, n, widths, axis):
    xs = tuple(normal_array(seed + i, (n, w)) for i, w in enumerate(widths))
    nf.check_module(nf.Concatenate(axis), xs, expected_shape=(n, sum(widths)))


def test_concatenate_along_channels():
    xs = (np.ones((2, 3, 4, 4)), np.zeros((2, 5, 4, 4)))
    assert nf.Concatenate(axis=1)(xs).shape == (2, 8, 4, 4)  # one list argument works too


@given(seed=seeds, n=small, d=small, normalize=st.booleans())
def test_dot_of_vectors_gradcheck(seed, n, d, normalize):
    x, y = normal_array(seed, (n, d)), normal_array(seed + 1, (n, d))
    layer = nf.Dot(axes=1, normalize=normalize)
    nf.check_module(layer, (x, y), expected_shape=(n, 1))
    out = layer(x, y)
    want = (x * y).sum(axis=1, keepdims=True)
    if normalize:
        want /= np.linalg.norm(x, axis=1, keepdims=True) * np.linalg.norm(y, axis=1, keepdims=True)
    np.testing.assert_allclose(out, want, rtol=1e-12)


@given(seed=seeds, n=small, t=small, s=small, d=small, normalize=st.booleans())
def test_dot_of_sequences_gradcheck(seed, n, t, s, d, normalize):
    """(N, T, D) . (N, S, D) along D: the (N, T, S) attention scores."""
    x, y = normal_array(seed, (n, t, d)), normal_array(seed + 1, (n, s, d))
    layer = nf.Dot(axes=2, normalize=normalize)
    nf.check_module(layer, (x, y), expected_shape=(n, t, s))
    np.testing.assert_allclose(
        nf.Dot(axes=2)(x, y), np.einsum("ntd,nsd->nts", x, y), rtol=1e-12, atol=1e-12
    )
    nf.check_module(nf.Dot(axes=(1, 1)), (x, normal_array(seed, (n, t, s))))  # over T


def test_maximum_gives_ties_to_the_first_input():
    layer = nf.Maximum()
    layer(np.array([[1.0, 2.0]]), np.array([[1.0, 3.0]]))
    ga, gb = layer.backward(np.ones((1, 2)))
    np.testing.assert_array_equal(ga, [[1.0, 0.0]])
    np.testing.assert_array_equal(gb, [[0.0, 1.0]])


def test_add_without_branches_is_the_merge_and_with_branches_the_container():
    a, b = np.ones((2, 3)), np.full((2, 3), 2.0)
    merge = nf.Add()
    np.testing.assert_array_equal(merge(a, b), np.full((2, 3), 3.0))
    ga, gb = merge.backward(np.ones((2, 3)))
    np.testing.assert_array_equal(ga, gb)
    branches = nf.Add(nf.Identity(), nf.Identity())
    np.testing.assert_array_equal(branches(a), 2 * a)
    with pytest.raises(TypeError, match=r"Add: expected one input for its 2 branches, got 2"):
        branches(a, b)
    assert nf.from_config(nf.get_config(merge))(a, b).shape == (2, 3)


@given(seed=seeds, n=small, t=small, f=small)
def test_timestep_gradcheck(seed, n, t, f):
    x = normal_array(seed, (n, t, f))
    nf.check_module(nf.TimeStep(), x, expected_shape=(n, f))
    nf.check_module(nf.TimeStep(0), x, expected_shape=(n, f))
    lengths = np.random.default_rng(seed).integers(0, t + 1, size=n)
    nf.check_module(nf.TimeStep(), x, expected_shape=(n, f), forward_kwargs={"lengths": lengths})
    time_major = np.ascontiguousarray(x.transpose(1, 0, 2))
    nf.check_module(nf.TimeStep(batch_first=False), time_major, expected_shape=(n, f))


def test_timestep_with_lengths_takes_the_last_valid_step():
    x = np.arange(2 * 4 * 1, dtype=np.float64).reshape(2, 4, 1)
    out = nf.TimeStep()(x, lengths=np.array([2, 0]))
    np.testing.assert_array_equal(out, [[1.0], [0.0]])  # an empty sequence has no last step
    out = nf.TimeStep(-2)(x, lengths=np.array([4, 3]))
    np.testing.assert_array_equal(out, [[2.0], [5.0]])
    layer = nf.TimeStep(1)
    np.testing.assert_array_equal(layer(x, lengths=np.array([4, 1])), [[1.0], [0.0]])
    g = layer.backward(np.ones((2, 1)))
    assert g.sum() == 1.0 and g[0, 1, 0] == 1.0


def test_timestep_equals_the_rnn_final_state_with_lengths():
    rnn = nf.GRU(3, 5, rng=0)
    x = np.random.default_rng(0).normal(size=(4, 6, 3)).astype(np.float32)
    lengths = np.array([6, 2, 4, 1])
    out, h_n = rnn(x, lengths=lengths)
    np.testing.assert_allclose(nf.TimeStep()(out, lengths=lengths), h_n[-1], rtol=1e-6)


def test_getitem_takes_tuple_elements_and_rows():
    rng = np.random.default_rng(0)
    out, h, c = rng.normal(size=(2, 3, 4)), rng.normal(size=(1, 2, 4)), rng.normal(size=(1, 2, 4))
    layer = nf.GetItem(1, 0, -1)
    np.testing.assert_array_equal(layer((out, (h, c))), h[-1])
    g = layer.backward(np.ones((2, 4)))
    assert g[0] is None and g[1][1] is None
    np.testing.assert_array_equal(g[1][0], np.ones((1, 2, 4)))
    nf.check_module(nf.Sequential(nf.GRU(4, 3, rng=0), nf.GetItem(1, -1)), out)
    nf.check_module(nf.Sequential(nf.LSTM(4, 3, rng=0), nf.GetItem(0)), out)


def test_embedding_lstm_last_state_dense_in_sequential_trains():
    rng = np.random.default_rng(0)
    x = rng.integers(0, 10, size=(64, 5))
    y = (x == 3).any(axis=1).astype(np.int64)
    model = nf.Sequential(
        nf.Embedding(10, 8, rng=0), nf.LSTM(8, 16, rng=1), nf.GetItem(1, 0, -1),
        nf.Dense(16, 2, rng=2),
    )  # fmt: skip
    trainer = nf.Trainer(model, nf.CrossEntropyLoss(), nf.optim.Adam(model.parameters(), lr=0.03))
    history = trainer.fit(x, y, epochs=15, batch_size=16, verbose=0, rng=0)
    assert history["loss"][-1] < 0.5 * history["loss"][0]


def test_errors_name_the_layer():
    with pytest.raises(
        ShapeErrorOrValue, match=r"Concatenate\(axis=-1\): expected inputs that agree"
    ):
        nf.Concatenate()(np.ones((2, 3)), np.ones((3, 3)))
    with pytest.raises(
        nf.ShapeError, match=r"Multiply: expected inputs of one \(or broadcastable\)"
    ):
        nf.Multiply()(np.ones((2, 3)), np.ones((2, 4)))
    with pytest.raises(TypeError, match="Subtract: expected 2 inputs, got 3"):
        nf.Subtract()(np.ones(2), np.ones(2), np.ones(2))
    with pytest.raises(TypeError, match="Average: expected at least 2 inputs, got 1"):
        nf.Average()(np.ones((2, 2)))
    with pytest.raises(nf.ShapeError, match=r"Dot\(axes=1\): expected inputs with one batch"):
        nf.Dot(axes=1)(np.ones((2, 3)), np.ones((2, 4)))
    with pytest.raises(
        TypeError, match=r"GetItem\(2\): expected a tuple or array with an element 2"
    ):
        nf.GetItem(2)((np.ones(1), np.ones(1)))
    with pytest.raises(ValueError, match=r"TimeStep\(index=-1\): expected integer lengths"):
        nf.TimeStep()(np.ones((2, 3, 1)), lengths=np.array([4, 1]))
    with pytest.raises(ValueError, match=r"GetItem: invalid index=\(1, 'a'\)"):
        nf.GetItem(1, "a")


ShapeErrorOrValue = nf.ShapeError
