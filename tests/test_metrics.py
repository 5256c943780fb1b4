"""Metrics: hand-computed worked examples, scikit-learn agreement, stateful accumulation."""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from nnframe import metrics as M
from tests.strategies import seeds

CHECKED_MODULES = []  # no Module or Loss here


def test_accuracy_worked_examples():
    logits = np.array([[2.0, 1.0, 0.0], [0.0, 3.0, 1.0], [1.0, 0.0, 5.0], [4.0, 0.0, 0.0]])
    target = np.array([0, 1, 1, 2])
    assert M.accuracy(logits, target) == 0.5  # predicted 0, 1, 2, 0
    assert M.accuracy(logits, np.eye(3)[target]) == 0.5  # one-hot targets
    assert M.accuracy(np.array([0.9, 0.2, 0.6]), np.array([1, 0, 0])) == pytest.approx(2 / 3)
    assert M.accuracy(np.array([2.0, -1.0]), np.array([1, 0]), threshold=0.0) == 1.0  # logits


def test_top_k_accuracy_worked_example():
    scores = np.array([[0.5, 0.3, 0.2], [0.1, 0.2, 0.7], [0.3, 0.4, 0.3]])
    target = np.array([1, 0, 2])
    assert M.top_k_accuracy(scores, target, k=1) == 0.0
    assert M.top_k_accuracy(scores, target, k=2) == pytest.approx(1 / 3)  # only row 0
    assert M.top_k_accuracy(scores, target, k=3) == 1.0


def test_confusion_precision_recall_f1_worked_example():
    pred = np.array([0, 0, 1, 1, 1, 2])
    target = np.array([0, 1, 1, 1, 2, 2])
    cm = M.confusion_matrix(pred, target)
    np.testing.assert_array_equal(cm, [[1, 0, 0], [1, 2, 0], [0, 1, 1]])
    # class 0: tp 1, predicted 2, actual 1; class 1: tp 2, predicted 3, actual 3;
    # class 2: tp 1, predicted 1, actual 2
    np.testing.assert_allclose(M.precision(pred, target, average=None), [1 / 2, 2 / 3, 1.0])
    np.testing.assert_allclose(M.recall(pred, target, average=None), [1.0, 2 / 3, 1 / 2])
    f1 = [2 * 0.5 * 1 / 1.5, 2 / 3, 2 * 1 * 0.5 / 1.5]
    np.testing.assert_allclose(M.f1_score(pred, target, average=None), f1)
    assert M.f1_score(pred, target) == pytest.approx(np.mean(f1))
    assert M.precision(pred, target, average="micro") == pytest.approx(4 / 6)


def test_class_never_predicted_scores_zero_not_nan():
    pred, target = np.array([0, 0, 0]), np.array([0, 1, 1])
    np.testing.assert_allclose(M.precision(pred, target, average=None), [1 / 3, 0.0])
    assert np.isfinite(M.f1_score(pred, target))


def test_regression_worked_examples():
    pred, target = np.array([1.0, 2.0, 3.0]), np.array([1.0, 2.0, 4.0])
    assert M.mse(pred, target) == pytest.approx(1 / 3)
    assert M.mae(pred, target) == pytest.approx(1 / 3)
    # SS_res = 1; mean 7/3, SS_tot = (16 + 1 + 25) / 9
    assert M.r2_score(pred, target) == pytest.approx(1 - 1 / (42 / 9))
    assert M.r2_score(np.ones(3), np.ones(3)) == 1.0  # constant target, predicted exactly


@given(seed=seeds, n=st.integers(2, 40), classes=st.integers(2, 5))
def test_classification_metrics_match_scikit_learn(seed, n, classes):
    sk = pytest.importorskip("sklearn.metrics")
    rng = np.random.default_rng(seed)
    target = rng.integers(0, classes, n)
    logits = rng.normal(size=(n, classes))
    pred = logits.argmax(1)
    labels = list(range(classes))
    assert M.accuracy(logits, target) == pytest.approx(sk.accuracy_score(target, pred))
    np.testing.assert_array_equal(
        M.confusion_matrix(logits, target), sk.confusion_matrix(target, pred, labels=labels)
    )
    for ours, theirs in [
        (M.precision, sk.precision_score),
        (M.recall, sk.recall_score),
        (M.f1_score, sk.f1_score),
    ]:
        want = theirs(target, pred, average="macro", labels=labels, zero_division=0)
        assert ours(logits, target) == pytest.approx(want)
        per = theirs(target, pred, average=None, labels=labels, zero_division=0)
        np.testing.assert_allclose(ours(logits, target, average=None), per)
    if classes > 2:
        k = 2
        want = sk.top_k_accuracy_score(target, logits, k=k, labels=labels)
        assert M.top_k_accuracy(logits, target, k=k) == pytest.approx(want)


@given(seed=seeds, n=st.integers(2, 30), outputs=st.integers(1, 3))
def test_regression_metrics_match_scikit_learn(seed, n, outputs):
    sk = pytest.importorskip("sklearn.metrics")
    rng = np.random.default_rng(seed)
    target = rng.normal(size=(n, outputs))
    pred = target + rng.normal(scale=0.5, size=(n, outputs))
    assert M.mse(pred, target) == pytest.approx(sk.mean_squared_error(target, pred))
    assert M.mae(pred, target) == pytest.approx(sk.mean_absolute_error(target, pred))
    assert M.r2_score(pred, target) == pytest.approx(sk.r2_score(target, pred))


@given(seed=seeds, n=st.integers(4, 60), batches=st.integers(1, 5))
def test_stateful_metrics_equal_the_functions_over_the_whole_set(seed, n, batches):
    rng = np.random.default_rng(seed)
    logits = rng.normal(size=(n, 4))
    target = rng.integers(0, 4, n)
    reg_pred, reg_target = rng.normal(size=(n, 2)), rng.normal(size=(n, 2))
    cls = {
        "accuracy": (M.Accuracy(), M.accuracy),
        "top_k_accuracy": (M.TopKAccuracy(k=2), lambda p, t: M.top_k_accuracy(p, t, k=2)),
        "precision": (M.Precision(), M.precision),
        "recall": (M.Recall(), M.recall),
        "f1_score": (M.F1Score(), M.f1_score),
    }
    reg = {
        "mse": (M.MeanSquaredError(), M.mse),
        "mae": (M.MeanAbsoluteError(), M.mae),
        "r2_score": (M.R2Score(), M.r2_score),
    }
    splits = np.array_split(np.arange(n), batches)
    for name, (metric, fn) in cls.items():
        assert metric.name == name
        for idx in splits:
            metric.update(logits[idx], target[idx])
        assert metric.result() == pytest.approx(fn(logits, target)), name
    for name, (metric, fn) in reg.items():
        assert metric.name == name
        for idx in splits:
            metric.update(reg_pred[idx], reg_target[idx])
        assert metric.result() == pytest.approx(fn(reg_pred, reg_target), rel=1e-9), name
        metric.reset()
        assert metric.result() == 0.0


def test_get_resolves_names_metrics_and_callables():
    assert isinstance(M.get("accuracy"), M.Accuracy)
    acc = M.Accuracy()
    assert M.get(acc) is acc

    def my_metric(pred, target):
        return 1.0

    fm = M.get(my_metric)
    assert fm.name == "my_metric"
    fm.update(np.zeros(3), np.zeros(3))
    fm.update(np.zeros(1), np.zeros(1))
    assert fm.result() == 1.0
    with pytest.raises(ValueError, match=r"metrics.get: expected one of .*got 'acc'"):
        M.get("acc")
    with pytest.raises(TypeError, match=r"metrics.get: expected a metric name"):
        M.get(3)


def test_errors_are_clear():
    with pytest.raises(ValueError, match=r"accuracy: expected pred and target with the same"):
        M.accuracy(np.zeros((3, 2)), np.zeros(4))
    with pytest.raises(ValueError, match=r"mse: pred and target must have the same shape"):
        M.mse(np.zeros(3), np.zeros((3, 1)))
    with pytest.raises(ValueError, match=r"top_k_accuracy: expected pred of shape \(N, C\)"):
        M.top_k_accuracy(np.zeros(3), np.zeros(3))
    with pytest.raises(ValueError, match=r"invalid average='weighted'"):
        M.f1_score(np.zeros(2), np.zeros(2), average="weighted")
