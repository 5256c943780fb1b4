"""nnframe.data: datasets, the loader (dense and sparse), splits, one_hot, Standardizer."""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from scipy import sparse

import nnframe as nf
from nnframe.training.data import (
    ArrayDataset,
    DataLoader,
    Standardizer,
    Subset,
    one_hot,
    random_split,
    train_test_split,
)
from tests.strategies import seeds

CHECKED_MODULES = []  # no Module or Loss here


@given(
    n=st.integers(1, 40),
    batch_size=st.integers(1, 12),
    drop_last=st.booleans(),
    seed=seeds,
)
def test_loader_batches_follow_one_permutation_per_epoch(n, batch_size, drop_last, seed):
    x = np.arange(n * 2, dtype=np.float32).reshape(n, 2)
    y = np.arange(n)
    loader = DataLoader(ArrayDataset(x, y), batch_size, shuffle=True, drop_last=drop_last, rng=seed)
    reference = np.random.default_rng(seed)
    for _ in range(2):  # two epochs: two successive permutations of the same generator
        order = reference.permutation(n)
        batches = list(loader)
        assert len(batches) == len(loader)
        stop = n - n % batch_size if drop_last else n
        expected = [order[i : i + batch_size] for i in range(0, stop, batch_size)]
        assert len(batches) == len(expected)
        for (xb, yb), idx in zip(batches, expected):
            np.testing.assert_array_equal(yb, idx)
            np.testing.assert_array_equal(xb, x[idx])


def test_loader_without_shuffle_keeps_order_and_counts():
    loader = DataLoader(ArrayDataset(np.arange(10)), batch_size=4)
    assert [b[0].tolist() for b in loader] == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]
    assert len(loader) == 3 and len(DataLoader(ArrayDataset(np.arange(10)), 4, drop_last=True)) == 2


def test_loader_default_rng_follows_manual_seed():
    loader = DataLoader(ArrayDataset(np.arange(20)), batch_size=20, shuffle=True)
    nf.manual_seed(5)
    first = next(iter(loader))[0]
    nf.manual_seed(5)
    np.testing.assert_array_equal(next(iter(loader))[0], first)


def test_loader_over_sparse_inputs_never_densifies():
    x = sparse.random(30, 7, density=0.2, format="coo", random_state=0, dtype=np.float32)
    y = np.arange(30)
    loader = DataLoader(ArrayDataset(x, y), batch_size=8, shuffle=True, rng=0)
    rows = []
    for xb, yb in loader:
        assert sparse.issparse(xb) and xb.format == "csr" and xb.shape[0] == len(yb)
        np.testing.assert_array_equal(xb.toarray(), x.toarray()[yb])
        rows.extend(yb.tolist())
    assert sorted(rows) == list(range(30))


def test_loader_collates_a_generic_dataset():
    samples = [(np.full(3, i, dtype=np.float32), i) for i in range(7)]
    batches = list(DataLoader(samples, batch_size=3))
    assert batches[0][0].shape == (3, 3) and batches[-1][1].tolist() == [6]


def test_array_dataset_and_subset():
    ds = ArrayDataset(np.zeros((5, 2)), np.arange(5))
    assert len(ds) == 5 and ds[np.array([4, 0])][1].tolist() == [4, 0]
    sub = Subset(ds, [3, 1])
    assert len(sub) == 2 and sub[0][1] == 3
    with pytest.raises(
        ValueError, match=r"ArrayDataset: expected arrays with the same number of rows"
    ):
        ArrayDataset(np.zeros((5, 2)), np.zeros(4))
    with pytest.raises(ValueError, match=r"DataLoader: invalid batch_size=0"):
        DataLoader(ds, batch_size=0)


@given(seed=seeds, test_size=st.sampled_from([0.1, 0.2, 0.25, 0.5]))
def test_stratified_split_keeps_class_proportions(seed, test_size):
    rng = np.random.default_rng(seed)
    y = rng.permutation(np.repeat([0, 1, 2, 3], [40, 25, 20, 15]))
    x = np.arange(100)
    x_tr, x_te, y_tr, y_te = train_test_split(x, y, test_size=test_size, stratify=y, rng=seed)
    assert len(x_te) == round(test_size * 100) and len(x_tr) + len(x_te) == 100
    assert sorted(np.concatenate([x_tr, x_te]).tolist()) == list(range(100))
    np.testing.assert_array_equal(y[x_te], y_te)  # rows stay aligned across arrays
    expected = np.array([40, 25, 20, 15]) * test_size
    assert np.all(np.abs(np.bincount(y_te, minlength=4) - expected) < 1)


def test_split_sizes_sparse_and_errors():
    x = sparse.random(20, 4, density=0.5, format="csr", random_state=0)
    y = np.arange(20)
    x_tr, x_te, y_tr, y_te = train_test_split(x, y, test_size=5, rng=0)
    assert x_te.shape == (5, 4) and sparse.issparse(x_te)
    np.testing.assert_array_equal(x_te.toarray(), x.toarray()[y_te])
    with pytest.raises(ValueError, match=r"train_test_split: invalid test_size=1.0"):
        train_test_split(y, test_size=1.0)
    with pytest.raises(
        ValueError, match=r"train_test_split: expected stratify labels of length 20"
    ):
        train_test_split(y, stratify=np.zeros(3))


def test_random_split_fractions_counts_and_stratify():
    ds = ArrayDataset(np.arange(11))
    parts = random_split(ds, [0.5, 0.3, 0.2], rng=0)
    assert [len(p) for p in parts] == [6, 3, 2]
    every = np.concatenate([p.indices for p in parts])
    assert sorted(every.tolist()) == list(range(11))
    y = np.repeat([0, 1], [30, 10])
    a, b = random_split(ArrayDataset(y), [30, 10], rng=1, stratify=y)
    counts = np.bincount(y[b.indices], minlength=2)
    assert counts.sum() == 10 and np.all(np.abs(counts - [7.5, 2.5]) < 1)  # 1/4 of each class
    with pytest.raises(ValueError, match=r"random_split: expected lengths summing to 11"):
        random_split(ds, [5, 5])


def test_one_hot():
    np.testing.assert_array_equal(one_hot(np.array([1, 0, 2])), np.eye(3)[[1, 0, 2]])
    assert one_hot(np.array([[0, 1]]), 4).shape == (1, 2, 4)
    assert one_hot(np.array([1]), 2).dtype == np.float32
    with pytest.raises(ValueError, match=r"one_hot: expected class indices in \[0, 2\), got 3"):
        one_hot(np.array([3]), 2)
    with pytest.raises(TypeError, match=r"one_hot: expected integer class indices"):
        one_hot(np.array([0.5]))


@given(seed=seeds, n=st.integers(2, 30), d=st.integers(1, 5))
def test_standardizer_zero_mean_unit_variance_and_inverse(seed, n, d):
    rng = np.random.default_rng(seed)
    x = (rng.normal(size=(n, d)) * rng.uniform(0.5, 10, d) + rng.normal(size=d) * 5).astype(
        np.float64
    )
    x[:, 0] = 3.0  # a constant feature is centred, never divided by zero
    s = Standardizer().fit(x)
    z = s.transform(x)
    np.testing.assert_allclose(z.mean(axis=0), 0, atol=1e-9)
    assert np.all(np.isfinite(z)) and np.all(z[:, 0] == 0)
    if d > 1 and n > 2:
        np.testing.assert_allclose(z[:, 1:].std(axis=0), 1, rtol=1e-6)
    np.testing.assert_allclose(s.inverse_transform(z), x, rtol=1e-9, atol=1e-9)
    other = Standardizer()
    other.load_state_dict(s.state_dict())
    np.testing.assert_array_equal(other.transform(x), z)


def test_standardizer_per_channel_keeps_dtype_and_handles_sparse():
    rng = np.random.default_rng(0)
    images = rng.normal(3, 2, size=(10, 3, 4, 4)).astype(np.float32)
    z = Standardizer(axis=(0, 2, 3)).fit_transform(images)
    assert z.dtype == np.float32
    np.testing.assert_allclose(z.mean(axis=(0, 2, 3)), 0, atol=1e-5)
    xs = sparse.random(50, 4, density=0.5, format="csr", random_state=1) * 10
    zs = Standardizer().fit_transform(xs)
    assert sparse.issparse(zs) and zs.nnz == xs.nnz  # scaled, not centred: stays sparse
    np.testing.assert_allclose(zs.toarray().std(axis=0), 1, rtol=1e-6)
    with pytest.raises(RuntimeError, match=r"Standardizer.transform: called before fit"):
        Standardizer().transform(images)


@pytest.mark.parametrize(
    "state",
    [{}, {"mean": np.zeros(2)}, {"mean": [0.0], "std": [1.0]}, {"mean": np.zeros(2), "std": np.zeros(2)},
     {"mean": np.zeros(2), "std": np.ones(3)}, {"mean": np.full(2, np.nan), "std": np.ones(2)},
     {"mean": np.zeros(2), "std": np.ones(2), "extra": 1}],
)  # fmt: skip
def test_a_crafted_standardizer_state_is_refused_and_changes_nothing(state):
    s = Standardizer().fit(np.arange(6, dtype=np.float32).reshape(3, 2))
    mean, std = s.mean.copy(), s.std.copy()
    with pytest.raises(nf.SchemaError, match="Standardizer.load_state_dict: "):
        s.load_state_dict(state)
    np.testing.assert_array_equal(s.mean, mean)
    np.testing.assert_array_equal(s.std, std)
