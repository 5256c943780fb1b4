"""Bad input during training: every case raises a clear error naming the layer or loss, or is
cast safely; odd memory layouts work without mutating the caller's arrays; batch size 1 works;
a NaN batch never silently corrupts the parameters."""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import nnframe as nf
from tests.strategies import normal_array, seeds, small

CHECKED_MODULES = [nf.Dense, nf.Sequential, nf.CrossEntropyLoss, nf.MSELoss]

DENSE = r"Dense\(in_features=3, out_features=2, bias=True\)"


def mlp(seed=0):
    return nf.Sequential(nf.Dense(3, 4, rng=seed), nf.Tanh(), nf.Dense(4, 2, rng=seed + 1))


# ---------------------------------------------------------------------- shapes
@pytest.mark.parametrize(
    "shape, expected, got",
    [
        ((4,), r"\(N, 3\)", r"\(4,\)"),  # (3,) is an unbatched input, accepted
        ((), r"\(N, 3\)", r"\(\)"),
        ((2, 4), r"\(N, 3\)", r"\(2, 4\)"),
        ((2, 3, 4), r"\(N, \*, 3\)", r"\(2, 3, 4\)"),
    ],
)
def test_dense_wrong_ndim_or_feature_count(shape, expected, got):
    with pytest.raises(
        nf.ShapeError, match=rf"^{DENSE}: expected input of shape {expected}, got {got}$"
    ):
        nf.Dense(3, 2, rng=0)(np.ones(shape, dtype=np.float32))


def test_sequential_names_the_position_of_the_layer_that_refused():
    with pytest.raises(
        nf.ShapeError, match=r"^Sequential\[0\] Dense\(in_features=3.*got \(5, 7\)$"
    ):
        mlp()(np.ones((5, 7), dtype=np.float32))
    model = mlp()
    model.append(nf.Dense(3, 1, rng=0))  # wrong: the previous layer gives 2 features
    with pytest.raises(
        nf.ShapeError, match=r"^Sequential\[3\] Dense\(in_features=3.*\(N, 3\), got \(5, 2\)"
    ):
        model(np.ones((5, 3), dtype=np.float32))


# ---------------------------------------------------------------------- dtypes
@pytest.mark.parametrize("dtype", [np.int64, np.int8, np.uint16, np.bool_, np.float16, np.float64])
def test_numeric_inputs_are_cast_to_the_layer_dtype(dtype):
    x = (np.arange(6).reshape(2, 3) % 2).astype(dtype)
    model = mlp()
    out = model(x)
    assert out.dtype == np.float32
    np.testing.assert_array_equal(out, mlp()(x.astype(np.float32)))
    assert model.backward(np.ones_like(out)).dtype == np.float32


@pytest.mark.parametrize(
    "x, dtype",
    [
        (np.array([[1, 2, 3]], dtype=object), "object"),
        (np.array([[1j, 2, 3]]), "complex128"),
        (np.array([["a", "b", "c"]]), "<U1"),
        (np.array([[None, 1, 2]]), "object"),
    ],
)
def test_object_complex_and_string_inputs_are_refused(x, dtype):
    with pytest.raises(
        TypeError,
        match=rf"^{DENSE}: expected a real numeric input \(cast to float32\), got dtype {dtype}$",
    ):
        nf.Dense(3, 2, rng=0)(x)
    with pytest.raises(TypeError, match=rf"^Sequential\[0\] Dense.*got dtype {dtype}$"):
        nf.Sequential(nf.Dense(3, 2, rng=0))(x)


def test_lists_are_accepted_like_arrays():
    np.testing.assert_array_equal(mlp()([[1, 2, 3]]), mlp()(np.array([[1.0, 2.0, 3.0]])))


# ---------------------------------------------------------------------- memory layouts
def layouts(x):
    """The same values as a Fortran-ordered array, a strided view and a read-only array."""
    fortran = np.asfortranarray(x)
    wide = np.zeros((x.shape[0], 2 * x.shape[1]), dtype=x.dtype)
    wide[:, ::2] = x
    strided = wide[:, ::2]
    read_only = x.copy()
    read_only.flags.writeable = False
    return {"fortran": fortran, "strided": strided, "read_only": read_only}


@given(seed=seeds, n=small)
def test_non_contiguous_and_read_only_inputs_work_without_mutation(seed, n):
    x = normal_array(seed, (n, 3)).astype(np.float32)
    reference = mlp(seed % 100)
    expected = reference(x)
    expected_grad = reference.backward(np.ones_like(expected))
    for name, variant in layouts(x).items():
        before = variant.copy()
        model = mlp(seed % 100)
        out = model(variant)
        np.testing.assert_allclose(out, expected, rtol=1e-6, atol=1e-6, err_msg=name)
        grad_out = np.ones_like(out)
        grad_out.flags.writeable = False  # backward must not write into its gradient either
        np.testing.assert_allclose(model.backward(grad_out), expected_grad, rtol=1e-6, atol=1e-6)
        np.testing.assert_array_equal(variant, before)
        for p, q in zip(model.parameters(), reference.parameters()):
            np.testing.assert_allclose(p.grad, q.grad, rtol=1e-5, atol=1e-6, err_msg=name)


def test_read_only_targets_and_predictions_in_losses():
    pred = np.array([[0.5, -1.0, 2.0], [0.1, 0.2, 0.3]], dtype=np.float32)
    target = np.array([2, 0])
    for a in (pred, target):
        a.flags.writeable = False
    loss = nf.CrossEntropyLoss()
    value = loss(pred, target)
    assert np.isfinite(value) and loss.backward().shape == pred.shape
    mse = nf.MSELoss()
    mse(pred, pred[::-1])
    assert mse.backward().shape == pred.shape


# ---------------------------------------------------------------------- labels
@pytest.mark.parametrize(
    "target, error, message",
    [
        (np.array([0, 3]), ValueError, r"target must hold class indices in \[0, 3\), got 3"),
        (np.array([0, -1]), ValueError, r"target must hold class indices in \[0, 3\), got -1"),
        (np.array([[0], [1]]), nf.ShapeError, r"expected target of shape \(2,\) .*got \(2, 1\)"),
        (np.array([0, 1, 2]), nf.ShapeError, r"expected target of shape \(2,\) .*got \(3,\)"),
        (np.array([0.5, 1.0]), TypeError, "expected integer class indices, got dtype float64"),
        (np.array([True, False]), TypeError, "expected integer class indices, got dtype bool"),
        (np.array(["a", "b"]), TypeError, "expected integer class indices, got dtype <U1"),
    ],
)
def test_cross_entropy_labels_of_wrong_shape_type_or_range(target, error, message):
    with pytest.raises(error, match=f"^CrossEntropyLoss: {message}"):
        nf.CrossEntropyLoss()(np.zeros((2, 3), dtype=np.float32), target)


def test_integral_float_labels_are_accepted():
    loss = nf.CrossEntropyLoss()
    pred = np.array([[1.0, 2.0, 0.5]], dtype=np.float32)
    assert loss(pred, np.array([1.0])) == loss(pred, np.array([1]))


def test_mse_refuses_broadcasting_and_non_numeric_targets():
    with pytest.raises(
        nf.ShapeError,
        match=r"^MSELoss: pred and target must have the same shape, got \(8, 1\) and \(8,\)\. "
        r"Reshape the target: target\.reshape\(8, 1\)$",
    ):
        nf.MSELoss()(np.zeros((8, 1), dtype=np.float32), np.zeros(8))
    with pytest.raises(
        TypeError, match="^MSELoss: expected a real numeric input.*got dtype object"
    ):
        nf.MSELoss()(np.zeros((2, 1), dtype=np.float32), np.zeros((2, 1), dtype=object))


# ---------------------------------------------------------------------- batch size 1
@given(seed=seeds, d=small)
def test_batch_size_one_gradients(seed, d):
    x = normal_array(seed, (1, d))
    nf.check_module(nf.Dense(d, 2, rng=seed), x, expected_shape=(1, 2))
    model = nf.Sequential(nf.Dense(d, 3, rng=seed), nf.Tanh(), nf.Dense(3, 2, rng=seed + 1))
    nf.check_module(model, x, expected_shape=(1, 2))
    nf.check_loss(nf.CrossEntropyLoss(), normal_array(seed, (1, 3)), np.array([seed % 3]))
    nf.check_loss(nf.MSELoss(), normal_array(seed, (1, 2)), normal_array(seed + 1, (1, 2)))


# ---------------------------------------------------------------------- fit
def trainer(model=None):
    model = model or mlp()
    return nf.Trainer(model, nf.CrossEntropyLoss(), nf.optim.SGD(model.parameters(), lr=0.1))


@pytest.mark.parametrize("batch_size", [1, 2, 64])
def test_fit_with_a_dataset_smaller_than_a_batch_and_batch_size_one(batch_size):
    x = np.random.default_rng(0).normal(size=(3, 3)).astype(np.float32)
    t = trainer()
    history = t.fit(x, np.array([0, 1, 1]), batch_size=batch_size, epochs=2, verbose=0, rng=0)
    assert len(history) == 2 and np.isfinite(history["loss"]).all()


@pytest.mark.parametrize(
    "x, y, error, message",
    [
        (
            np.ones((3, 4)),
            np.array([0, 1, 1]),
            nf.ShapeError,
            r"Dense\(in_features=3.*got \(\d, 4\)",
        ),
        (np.ones((3, 3), dtype=object), np.array([0, 1, 1]), TypeError, "got dtype object"),
        (np.ones((3, 3)), np.array([0, 1]), nf.ShapeError, "same number of rows"),
        (np.ones((3, 3)), np.array([0, 1, 5]), ValueError, r"class indices in \[0, 2\), got 5"),
        # (N, 1) labels are read as (N,) by Trainer since issue 16; (N, 1, 1) is still refused
        (np.ones((3, 3)), np.zeros((3, 1, 1), np.int64), nf.ShapeError, "expected target of shape"),
    ],
)
def test_fit_reports_bad_data(x, y, error, message):
    with pytest.raises(error, match=message):
        trainer().fit(x, y, batch_size=3, verbose=0)


@pytest.mark.parametrize("policy", ["raise", "skip_batch", "stop"])
def test_a_nan_batch_never_corrupts_the_parameters(policy):
    x = np.random.default_rng(0).normal(size=(8, 3)).astype(np.float32)
    x[4, 1] = np.nan  # the third batch of two rows
    t = trainer()
    before = [p.data.copy() for p in t.model.parameters()]
    if policy == "raise":
        with pytest.raises(FloatingPointError, match="epoch 1, batch 3"):
            t.fit(x, np.arange(8) % 2, batch_size=2, shuffle=False, verbose=0, nan_policy=policy)
    else:
        t.fit(x, np.arange(8) % 2, batch_size=2, shuffle=False, verbose=0, nan_policy=policy)
    after = [p.data for p in t.model.parameters()]
    assert all(np.isfinite(p).all() for p in after)
    assert any(not np.array_equal(a, b) for a, b in zip(before, after))  # earlier steps applied
    assert all(np.isfinite(p.grad).all() for p in t.model.parameters())


def test_anomaly_mode_finds_the_nan_input_row_in_fit():
    x = np.random.default_rng(0).normal(size=(4, 3)).astype(np.float32)
    x[3, 0] = np.inf
    t = trainer()
    with (
        nf.detect_anomaly(t.model),
        pytest.raises(
            nf.AnomalyError,
            match=r"the input of model Sequential\(...\) holds 1 Inf \(forward, step 2\)",
        ),
    ):
        t.fit(x, np.array([0, 1, 0, 1]), batch_size=2, shuffle=False, verbose=0)


@given(dtype=st.sampled_from([np.int32, np.bool_, np.float16]), seed=seeds)
def test_fit_casts_safe_dtypes(dtype, seed):
    x = (np.random.default_rng(seed).normal(size=(4, 3)) > 0).astype(dtype)
    history = trainer(mlp(seed % 50)).fit(x, np.array([0, 1, 0, 1]), batch_size=2, verbose=0)
    assert np.isfinite(history["loss"]).all()


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda: nf.Dense(2.5, 3), r"^Dense: expected in_features to be an integer, got 2\.5$"),
        (lambda: nf.Dense(True, 3), r"^Dense: expected in_features to be an integer, got True$"),
        (lambda: nf.LSTM("a", 3), r"^LSTM: expected input_size to be an integer, got 'a'$"),
        (lambda: nf.Embedding(3.0, 2), r"^Embedding: expected num_embeddings to be an integer"),
        (lambda: nf.BatchNorm1d(2.0), r"^BatchNorm1d: expected num_features to be an integer"),
    ],
)
def test_size_arguments_must_be_integers(make, message):
    with pytest.raises(TypeError, match=message):
        make()
