"""Embedding and EmbeddingBag."""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import nnframe as nf
from nnframe.layers.embedding import scatter_rows
from tests.strategies import seeds, small

CHECKED_MODULES = [nf.Embedding, nf.EmbeddingBag]


@given(
    seed=seeds,
    vocab=st.integers(1, 6),
    dim=small,
    shape=st.lists(small, min_size=0, max_size=3),
)
def test_embedding_gradcheck(seed, vocab, dim, shape):
    rng = np.random.default_rng(seed)
    index = rng.integers(0, vocab, size=shape)  # repeated indices are likely: vocab is small
    emb = nf.Embedding(vocab, dim, rng=seed)
    nf.check_module(emb, index, expected_shape=(*shape, dim))


@given(seed=seeds, vocab=st.integers(2, 6), dim=small, padding=st.integers(-2, 1))
def test_embedding_padding_row_gets_no_gradient(seed, vocab, dim, padding):
    rng = np.random.default_rng(seed)
    emb = nf.Embedding(vocab, dim, padding_idx=padding, rng=seed)
    row = padding % vocab
    np.testing.assert_array_equal(emb.weight.data[row], 0)
    others = [i for i in range(vocab) if i != row]
    nf.check_module(emb, rng.choice(others, size=(3, 2)))  # the others are checked as usual
    index = np.append(rng.integers(0, vocab, size=5), row)
    emb(index)
    emb.backward(rng.normal(size=(6, dim)).astype(np.float32))
    np.testing.assert_array_equal(emb.weight.grad[row], 0)


def test_repeated_indices_match_a_dense_one_hot_reference(rng):
    vocab, dim = 50, 8
    index = rng.integers(0, 10, size=(16, 12))  # only 10 distinct: many repeats
    emb = nf.Embedding(vocab, dim, rng=0).to(np.float64)
    y = emb(index)
    g = rng.normal(size=y.shape)
    assert emb.backward(g) is None  # indices have no gradient
    one_hot = np.eye(vocab)[index.reshape(-1)]  # (M, V)
    np.testing.assert_allclose(emb.weight.grad, one_hot.T @ g.reshape(-1, dim), rtol=1e-12)
    np.testing.assert_allclose(y.reshape(-1, dim), one_hot @ emb.weight.data)


def test_scatter_rows_matches_add_at(rng):
    index = rng.integers(0, 30, size=200)
    rows = rng.normal(size=(200, 4))
    scale = rng.uniform(size=200)
    expected = np.zeros((30, 4))
    np.add.at(expected, index, rows * scale[:, None])
    np.testing.assert_allclose(scatter_rows(30, index, rows, scale), expected, rtol=1e-12)


def test_scale_grad_by_freq(rng):
    """Not the gradient of the lookup (so not gradchecked): each index's sum divided by its
    count in the batch, as PyTorch's scale_grad_by_freq."""
    emb = nf.Embedding(4, 2, scale_grad_by_freq=True, rng=0)
    emb(np.array([1, 1, 1, 3]))
    emb.backward(np.ones((4, 2), dtype=np.float32))
    np.testing.assert_allclose(emb.weight.grad, [[0, 0], [1, 1], [0, 0], [1, 1]])


def test_embedding_worked_example():
    emb = nf.Embedding(3, 2)
    emb.weight.data[...] = [[0, 0], [1, 2], [3, 4]]
    y = emb(np.array([[2, 1], [1, 1]]))
    np.testing.assert_array_equal(y, [[[3, 4], [1, 2]], [[1, 2], [1, 2]]])
    emb.backward(np.ones((2, 2, 2), dtype=np.float32))
    np.testing.assert_array_equal(emb.weight.grad, [[0, 0], [3, 3], [1, 1]])  # row 1 used 3 times


def test_max_norm_renormalizes_looked_up_rows_like_pytorch():
    torch = pytest.importorskip("torch")
    emb = nf.Embedding(6, 3, max_norm=1.0, rng=0).to(np.float64)
    theirs = torch.nn.Embedding(6, 3, max_norm=1.0).double()
    with torch.no_grad():
        theirs.weight.copy_(torch.from_numpy(emb.weight.data))
    index = np.array([[0, 2], [2, 5]])
    y = emb(index)
    yt = theirs(torch.from_numpy(index))
    np.testing.assert_allclose(y, yt.detach().numpy(), rtol=1e-12)
    np.testing.assert_allclose(emb.weight.data, theirs.weight.detach().numpy(), rtol=1e-12)
    norms = np.linalg.norm(emb.weight.data, axis=1)
    assert np.all(norms[[0, 2, 5]] <= 1.0 + 1e-6)


def test_embedding_matches_pytorch_with_padding():
    torch = pytest.importorskip("torch")
    emb = nf.Embedding(7, 3, padding_idx=1, rng=0).to(np.float64)
    theirs = torch.nn.Embedding(7, 3, padding_idx=1).double()
    with torch.no_grad():
        theirs.weight.copy_(torch.from_numpy(emb.weight.data))
    index = np.array([[1, 2, 2], [6, 1, 0]])
    g = np.random.default_rng(0).normal(size=(2, 3, 3))
    theirs(torch.from_numpy(index)).backward(torch.from_numpy(g))
    emb(index)
    emb.backward(g)
    np.testing.assert_allclose(emb.weight.grad, theirs.weight.grad.numpy(), rtol=1e-12)


def test_embedding_first_in_a_sequential(rng):
    model = nf.Sequential(nf.Embedding(10, 4, rng=0), nf.Dense(4, 2, rng=1))
    index = rng.integers(0, 10, size=(5, 3))
    assert model(index).shape == (5, 3, 2)
    assert model.backward(np.ones((5, 3, 2), dtype=np.float32)) is None
    nf.check_module(model, index)


def test_frozen_embedding_gets_no_gradient(rng):
    emb = nf.Embedding(5, 2, rng=0).requires_grad_(False)
    emb(np.array([1, 2]))
    emb.backward(np.ones((2, 2), dtype=np.float32))
    assert not np.any(emb.weight.grad)
    bag = nf.EmbeddingBag(5, 2, rng=0).requires_grad_(False)
    bag(np.array([[1, 2]]))
    bag.backward(np.ones((1, 2), dtype=np.float32))
    assert not np.any(bag.weight.grad)


def test_index_errors():
    emb = nf.Embedding(5, 2)
    with pytest.raises(IndexError, match=r"Embedding\(5, 2\): expected indices in \[0, 5\), got 5"):
        emb(np.array([0, 5]))
    with pytest.raises(IndexError, match=r"expected indices in \[0, 5\), got -1"):
        emb(np.array([[-1, 2]]))
    with pytest.raises(
        TypeError, match=r"Embedding\(5, 2\): expected integer indices, got dtype float64"
    ):
        emb(np.array([1.0, 2.0]))
    with pytest.raises(IndexError, match=r"EmbeddingBag\(5, 2, mode='mean'\): expected indices in"):
        nf.EmbeddingBag(5, 2)(np.array([[7]]))
    with pytest.raises(
        ValueError, match=r"Embedding: invalid padding_idx=5 \(must be in \[-5, 5\)\)"
    ):
        nf.Embedding(5, 2, padding_idx=5)
    with pytest.raises(ValueError, match=r"Embedding: invalid embedding_dim=0"):
        nf.Embedding(5, 0)


def test_embedding_float32_and_state_dict():
    emb = nf.Embedding(5, 2, rng=0)
    assert emb(np.array([1])).dtype == np.float32
    assert list(emb.state_dict()) == ["weight"]


# ---------------------------------------------------------------------- EmbeddingBag


def _random_bags(rng, vocab, n_bags, max_len):
    lengths = rng.integers(0, max_len + 1, size=n_bags)  # empty bags included
    index = rng.integers(0, vocab, size=int(lengths.sum()))
    offsets = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64)
    return index, offsets


@given(seed=seeds, mode=st.sampled_from(["sum", "mean", "max"]), n_bags=small, dim=small)
def test_embedding_bag_gradcheck_offsets(seed, mode, n_bags, dim):
    rng = np.random.default_rng(seed)
    index, offsets = _random_bags(rng, 6, n_bags, 4)
    bag = nf.EmbeddingBag(6, dim, mode=mode, rng=seed)
    nf.check_module(bag, index, forward_kwargs={"offsets": offsets}, expected_shape=(n_bags, dim))


@given(seed=seeds, mode=st.sampled_from(["sum", "mean", "max"]), b=small, length=small)
def test_embedding_bag_gradcheck_2d(seed, mode, b, length):
    rng = np.random.default_rng(seed)
    bag = nf.EmbeddingBag(5, 3, mode=mode, rng=seed)
    nf.check_module(bag, rng.integers(0, 5, size=(b, length)), expected_shape=(b, 3))


@given(seed=seeds, n_bags=small)
def test_embedding_bag_per_sample_weights_gradcheck(seed, n_bags):
    rng = np.random.default_rng(seed)
    index, offsets = _random_bags(rng, 6, n_bags, 4)
    kwargs = {"offsets": offsets, "per_sample_weights": rng.normal(size=index.shape)}
    nf.check_module(nf.EmbeddingBag(6, 2, mode="sum", rng=seed), index, forward_kwargs=kwargs)


@pytest.mark.parametrize("mode", ["sum", "mean", "max"])
@pytest.mark.parametrize("padding_idx", [None, 2])
def test_embedding_bag_matches_pytorch(mode, padding_idx):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(3)
    ours = nf.EmbeddingBag(8, 3, mode=mode, padding_idx=padding_idx, rng=0).to(np.float64)
    theirs = torch.nn.EmbeddingBag(8, 3, mode=mode, padding_idx=padding_idx).double()
    with torch.no_grad():
        theirs.weight.copy_(torch.from_numpy(ours.weight.data))
    index = np.array([2, 1, 4, 2, 2, 7, 0, 1, 3, 3])
    offsets = np.array([0, 3, 3, 5, 6])  # bag 1 is empty; bag 2 is only padding when padded
    kwargs, tkwargs = {}, {}
    if mode == "sum":
        w = rng.normal(size=index.shape)
        kwargs["per_sample_weights"], tkwargs["per_sample_weights"] = w, torch.from_numpy(w)
    y = ours(index, offsets=offsets, **kwargs)
    yt = theirs(torch.from_numpy(index), torch.from_numpy(offsets), **tkwargs)
    np.testing.assert_allclose(y, yt.detach().numpy(), rtol=1e-12, atol=1e-15)
    g = rng.normal(size=y.shape)
    yt.backward(torch.from_numpy(g))
    assert ours.backward(g) is None
    np.testing.assert_allclose(ours.weight.grad, theirs.weight.grad.numpy(), rtol=1e-12, atol=1e-15)


def test_embedding_bag_include_last_offset_and_2d_input(rng):
    bag = nf.EmbeddingBag(6, 2, mode="sum", include_last_offset=True, rng=0)
    y = bag(np.array([1, 2, 3, 4]), offsets=np.array([0, 1, 4]))
    np.testing.assert_allclose(y[0], bag.weight.data[1])
    np.testing.assert_allclose(y[1], bag.weight.data[[2, 3, 4]].sum(axis=0), rtol=1e-6)
    square = nf.EmbeddingBag(6, 2, mode="mean", rng=0)
    index = rng.integers(0, 6, size=(3, 4))
    np.testing.assert_allclose(
        square(index), nf.Embedding(6, 2, rng=0)(index).mean(axis=1), rtol=1e-6
    )


@pytest.mark.parametrize(
    "layer",
    [
        nf.EmbeddingBag(6, 2, mode="max", rng=0),
        nf.EmbeddingBag(6, 2, rng=0),
        nf.Embedding(6, 2, rng=0),
    ],
    ids=repr,
)
def test_eval_mode_is_deterministic_and_per_sample(layer, rng):
    layer.eval()
    index = rng.integers(0, 6, size=(4, 3))
    y = layer(index)
    np.testing.assert_array_equal(layer(index), y)
    for i in range(4):
        np.testing.assert_array_equal(layer(index[i : i + 1])[0], y[i])


def test_embedding_bag_errors():
    bag = nf.EmbeddingBag(5, 2)
    with pytest.raises(ValueError, match=r"expected offsets with a 1-D input, got offsets=None"):
        bag(np.array([1, 2]))
    with pytest.raises(ValueError, match=r"expected offsets=None with a 2-D input"):
        bag(np.array([[1, 2]]), offsets=np.array([0]))
    with pytest.raises(ValueError, match=r"expected non-decreasing offsets starting at 0"):
        bag(np.array([1, 2]), offsets=np.array([1]))
    with pytest.raises(ValueError, match=r"expected per_sample_weights only with mode='sum'"):
        bag(np.array([[1, 2]]), per_sample_weights=np.ones((1, 2)))
    with pytest.raises(
        nf.ShapeError, match=r"expected per_sample_weights of the input's shape \(1, 2\)"
    ):
        nf.EmbeddingBag(5, 2, mode="sum")(np.array([[1, 2]]), per_sample_weights=np.ones(3))
    with pytest.raises(ValueError, match=r"EmbeddingBag: invalid mode='median'"):
        nf.EmbeddingBag(5, 2, mode="median")
