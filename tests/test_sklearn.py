"""nnframe.sklearn: scikit-learn's own estimator checks, and the estimators in Pipelines,
GridSearchCV, cross-validation and pickles."""

import inspect

import numpy as np
import pytest
from sklearn.utils.estimator_checks import parametrize_with_checks

from nnframe.sklearn import NeuralNetClassifier, NeuralNetRegressor

# small and quick, yet accurate enough for the checks' score thresholds
SMALL = dict(epochs=40, batch_size=16, optimizer__lr=0.01, module__hidden_layer_sizes=(16,))


def _expected_failures(estimator):
    """The checks these estimators are exempt from, and why."""
    return {
        # The check passes a keyword named after every entry of the signature, including the
        # variadic **kwargs that carries the prefixed options (optimizer__lr...): an unprefixed
        # name is a typo, refused at once with a TypeError as Python refuses any unknown
        # keyword; set_params(kwargs=...) likewise raises scikit-learn's own ValueError.
        "check_do_not_raise_errors_in_init_or_set_params": (
            "**kwargs holds prefixed options only; other names are refused"
        ),
        # Mini-batch training: an integer weight k is not the same as repeating the row k
        # times, which changes the number of steps per epoch, which rows share a batch and the
        # mean's denominator. The two agree in expectation, not to the checks' tolerance.
        # (Weights of ones do reproduce an unweighted fit exactly: check_sample_weights_invariance
        # passes, and test_sample_weight_* below test the weighting itself.)
        "check_sample_weight_equivalence_on_dense_data": (
            "mini-batch SGD: weight k is not k repeated rows"
        ),
        "check_sample_weight_equivalence_on_sparse_data": (
            "mini-batch SGD: weight k is not k repeated rows"
        ),
    }


# an exemption that stops failing is an error (scikit-learn >= 1.8 can say so)
_STRICT = (
    {"xfail_strict": True}
    if "xfail_strict" in inspect.signature(parametrize_with_checks).parameters
    else {}
)


@parametrize_with_checks(
    # the defaults (100 epochs, 64 hidden units) too: they must meet the checks' score bars
    [NeuralNetClassifier(**SMALL), NeuralNetRegressor(**SMALL)]
    + [NeuralNetClassifier(), NeuralNetRegressor()],
    expected_failed_checks=_expected_failures,
    **_STRICT,
)
def test_sklearn_estimator_checks(estimator, check):
    check(estimator)


# ---------------------------------------------------------------------- in scikit-learn's tools
def _blobs(n=240, seed=0):
    rng = np.random.default_rng(seed)
    centers = np.array([[0.0, 3.0, 0.0], [3.0, 0.0, 0.0], [0.0, 0.0, 3.0]])
    y = rng.integers(0, 3, size=n)
    X = centers[y] + rng.normal(size=(n, 3))
    return X * 50.0 + 10.0, np.array(["a", "b", "c"])[y]  # far from unit scale on purpose


def test_pipeline_with_standard_scaler_learns():
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    X, y = _blobs()
    pipe = make_pipeline(StandardScaler(), NeuralNetClassifier(**SMALL, random_state=0))
    pipe.fit(X[:180], y[:180])
    assert pipe.score(X[180:], y[180:]) > 0.9
    assert pipe.predict(X[:5]).dtype == y.dtype


def test_grid_search_tunes_prefixed_options():
    from sklearn.model_selection import GridSearchCV

    X, y = _blobs()
    X = (X - X.mean(0)) / X.std(0)
    grid = GridSearchCV(
        NeuralNetClassifier(**SMALL, random_state=0),
        {"optimizer__lr": [1e-5, 1e-2], "module__hidden_layer_sizes": [(8,), (16,)]},
        cv=3,
    )
    grid.fit(X, y)
    assert grid.best_params_["optimizer__lr"] == 1e-2  # 1e-5 barely moves in 40 epochs
    best = grid.best_estimator_
    assert best.optimizer_.param_groups[0]["lr"] == 1e-2
    assert best.module_[0].out_features == grid.best_params_["module__hidden_layer_sizes"][0]
    assert grid.best_score_ > 0.9


def test_cross_val_score_regressor():
    from sklearn.model_selection import cross_val_score

    rng = np.random.default_rng(1)
    X = rng.normal(size=(150, 4))
    y = np.sin(X[:, 0]) + X[:, 1] * X[:, 2]
    scores = cross_val_score(NeuralNetRegressor(**SMALL, random_state=0), X, y, cv=3)
    assert scores.shape == (3,) and scores.min() > 0.6, scores


def test_pickled_fitted_estimator_predicts_the_same(tmp_path):
    import pickle

    import joblib

    X, y = _blobs()
    X = X / 50.0
    clf = NeuralNetClassifier(**SMALL, random_state=0).fit(X, y)
    joblib.dump(clf, tmp_path / "clf.joblib")
    for again in (joblib.load(tmp_path / "clf.joblib"), pickle.loads(pickle.dumps(clf))):
        np.testing.assert_array_equal(again.predict_proba(X), clf.predict_proba(X))
        again.partial_fit(X, y)  # the optimizer still drives the unpickled network's weights
        assert not np.array_equal(again.predict_proba(X), clf.predict_proba(X))
        assert again.optimizer_.param_groups[0]["params"][0] is again.module_[0].weight


def test_grid_search_in_worker_processes():
    from sklearn.model_selection import GridSearchCV

    X, y = _blobs(120)
    grid = GridSearchCV(
        NeuralNetClassifier(**SMALL, random_state=0), {"epochs": [5, 10]}, cv=2, n_jobs=2
    )
    grid.fit(X / 50.0, y)  # estimators travel to the workers and back pickled
    assert grid.best_estimator_.n_iter_ == grid.best_params_["epochs"]


# ---------------------------------------------------------------------- the estimator itself
def test_get_set_params_and_clone_keep_prefixed_options():
    from sklearn.base import clone

    clf = NeuralNetClassifier(optimizer__lr=0.1, epochs=3)
    assert clf.get_params()["optimizer__lr"] == 0.1
    clf.set_params(optimizer__lr=0.2, optimizer__weight_decay=1e-4, batch_size=8)
    twin = clone(clf)
    assert twin.get_params()["optimizer__lr"] == 0.2
    assert twin.get_params()["optimizer__weight_decay"] == 1e-4
    assert twin.batch_size == 8
    assert "optimizer__lr=0.2" in repr(twin)
    with pytest.raises(TypeError, match="optimizr__lr"):
        NeuralNetClassifier(optimizr__lr=0.1)
    with pytest.raises(ValueError, match="Invalid parameter"):
        clf.set_params(epoch=3)


def test_module_instance_is_copied_and_fit_restarts_from_it():
    import nnframe as nf

    net = nf.Sequential(nf.Dense(3, 8, rng=0), nf.Tanh(), nf.Dense(8, 3, rng=1))
    before = net[0].weight.data.copy()
    X, y = _blobs()
    X = X / 50.0
    clf = NeuralNetClassifier(net, epochs=5, random_state=0).fit(X, y)
    np.testing.assert_array_equal(net[0].weight.data, before)  # the parameter is untouched
    assert clf.module_ is not net
    first = clf.predict_proba(X)
    np.testing.assert_array_equal(clf.fit(X, y).predict_proba(X), first)  # fit restarts
    with pytest.raises(ValueError, match="module__ options need a module function"):
        NeuralNetClassifier(net, module__hidden=3).fit(X, y)


def test_module_function_gets_sizes_options_and_rng():
    import nnframe as nf

    calls = []

    def build(n_features_in, n_classes, *, width=4, rng=None):
        calls.append((n_features_in, n_classes, width, isinstance(rng, np.random.Generator)))
        return nf.Sequential(nf.Dense(n_features_in, width, rng=rng), nf.Tanh(),
                             nf.Dense(width, n_classes, rng=rng))  # fmt: skip

    X, y = _blobs()
    clf = NeuralNetClassifier(build, module__width=6, epochs=2, random_state=0).fit(X / 50, y)
    assert calls == [(3, 3, 6, True)]
    assert clf.module_[0].out_features == 6


def test_random_state_fixes_the_result():
    X, y = _blobs()
    X = X / 50.0
    a = NeuralNetClassifier(**SMALL, random_state=3).fit(X, y).predict_proba(X)
    b = NeuralNetClassifier(**SMALL, random_state=3).fit(X, y).predict_proba(X)
    c = NeuralNetClassifier(**SMALL, random_state=4).fit(X, y).predict_proba(X)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


def test_sample_weight_decides_between_conflicting_labels():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(100, 2))
    X = np.concatenate([X, X])
    y = np.array([0] * 100 + [1] * 100)
    w = np.array([1.0] * 100 + [5.0] * 100)  # every point has both labels; label 1 weighs more
    clf = NeuralNetClassifier(**SMALL, random_state=0)
    assert (clf.fit(X, y, sample_weight=w).predict(X) == 1).all()
    assert (clf.fit(X, y, sample_weight=w[::-1]).predict(X) == 0).all()
    assert clf.score(X, y, sample_weight=w[::-1]) == pytest.approx(5 / 6)


def test_partial_fit_goes_on_training():
    X, y = _blobs()
    X = X / 50.0
    clf = NeuralNetClassifier(module__hidden_layer_sizes=(16,), random_state=0)
    with pytest.raises(ValueError, match="classes="):
        clf.partial_fit(X, y)
    clf.partial_fit(X[:100], y[:100], classes=["a", "b", "c"])
    for _ in range(9):
        clf.partial_fit(X, y)
    assert clf.n_iter_ == 10 and len(clf.history_["loss"]) == 10
    assert clf.history_["loss"][-1] < clf.history_["loss"][0]
    with pytest.raises(ValueError, match="expected labels among"):
        clf.partial_fit(X[:3], ["a", "b", "z"])
    with pytest.raises(ValueError, match="features"):
        clf.partial_fit(X[:, :2], y)

    reg = NeuralNetRegressor(random_state=0)
    reg.partial_fit(X, X[:, :2]).partial_fit(X, X[:, :2])
    assert reg.n_iter_ == 2 and reg.predict(X).shape == (len(X), 2)


def test_validation_split_callbacks_and_loss_options():
    from nnframe.training import callbacks

    X, y = _blobs()
    X = X / 50.0
    stop = callbacks.EarlyStopping("val_loss", patience=2)
    clf = NeuralNetClassifier(
        epochs=500, validation_split=0.25, callbacks=[stop], loss__label_smoothing=0.1,
        optimizer__lr=0.05, random_state=0,
    ).fit(X, y)  # fmt: skip
    assert clf.n_iter_ < 500 and clf.history_.stop_reason is not None
    assert len(clf.history_["val_loss"]) == clf.n_iter_
    assert clf.loss_.label_smoothing == 0.1


def test_predict_proba_is_the_softmax_of_the_outputs():
    X, y = _blobs()
    X = X / 50.0
    clf = NeuralNetClassifier(**SMALL, random_state=0).fit(X, y)
    p = clf.predict_proba(X)
    np.testing.assert_allclose(p.sum(axis=1), 1.0)
    np.testing.assert_array_equal(clf.classes_[p.argmax(axis=1)], clf.predict(X))
    logits = clf.module_(X.astype(np.float32)).astype(np.float64)
    e = np.exp(logits - logits.max(axis=1, keepdims=True))
    np.testing.assert_allclose(p, e / e.sum(axis=1, keepdims=True), rtol=1e-6)


def test_regressor_one_and_many_targets():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(200, 3))
    Y = np.stack([X[:, 0] - X[:, 1], X[:, 2] * 0.5], axis=1)
    reg = NeuralNetRegressor(**SMALL, random_state=0)
    assert reg.fit(X, Y).predict(X).shape == (200, 2) and reg.n_outputs_ == 2
    assert reg.score(X, Y) > 0.95
    assert reg.fit(X, Y[:, 0]).predict(X).shape == (200,)


@pytest.mark.parametrize(
    ("params", "error", "match"),
    [
        (dict(epochs=0), ValueError, "invalid epochs=0"),
        (dict(batch_size=0), ValueError, "invalid batch_size=0"),
        (dict(validation_split=1.0), ValueError, "invalid validation_split"),
        (dict(optimizer="adam"), TypeError, "optimizer class"),
        (dict(module="mlp"), TypeError, "expected module"),
    ],
)
def test_bad_parameters_fail_at_fit(params, error, match):
    X, y = _blobs(30)
    clf = NeuralNetClassifier(**params)  # scikit-learn's rule: no validation in __init__
    with pytest.raises(error, match=match):
        clf.fit(X, y)
