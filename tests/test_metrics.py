"""Metrics: hand-computed worked examples, scikit-learn agreement on hypothesis-drawn data (sample
weights, ties, a single class, classes that never occur), stateful accumulation, names."""

import numpy as np
import pytest
from hypothesis import assume, given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import nnframe as nf
from nnframe.training import metrics as M

CHECKED_MODULES = []  # no Module or Loss here

sk = pytest.importorskip("sklearn.metrics")

# scikit-learn warns on undefined values (a class never present, one class only): nnframe
# returns the same numbers, and the comparison is the test
quiet = pytest.mark.filterwarnings("ignore")

WEIGHTS = st.sampled_from([0.0, 0.25, 1.0, 3.0])  # zeros drop samples; exact in float


@st.composite
def classification(draw, min_classes=2, max_classes=5, min_n=1, max_n=30, ties=None):
    """(y_true, scores, weights or None, classes): labels may miss classes or hold one class
    only; scores come from a small grid (many ties) or a continuous range."""
    classes = draw(st.integers(min_classes, max_classes))
    n = draw(st.integers(min_n, max_n))
    present = draw(st.integers(1, classes))  # labels drawn from the first `present` classes only
    y_true = draw(hnp.arrays(np.int64, n, elements=st.integers(0, present - 1)))
    perm = draw(st.permutations(range(classes)))  # the missing classes are any, not the last
    y_true = np.asarray(perm)[y_true]
    tied = draw(st.booleans()) if ties is None else ties
    values = st.sampled_from([0.0, 0.5, 1.0]) if tied else st.floats(-3, 3, width=32)
    scores = draw(hnp.arrays(np.float64, (n, classes), elements=values))
    weights = None
    if draw(st.booleans()):
        weights = draw(hnp.arrays(np.float64, n, elements=WEIGHTS))
        assume(weights.sum() > 0)
    return y_true, scores, weights, classes


def softmax(z):
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


# ---------------------------------------------------------------------- worked examples
def test_accuracy_worked_examples():
    logits = np.array([[2.0, 1.0, 0.0], [0.0, 3.0, 1.0], [1.0, 0.0, 5.0], [4.0, 0.0, 0.0]])
    y_true = np.array([0, 1, 1, 2])
    assert M.accuracy(y_true, logits) == 0.5  # predicted 0, 1, 2, 0
    assert M.accuracy(np.eye(3)[y_true], logits) == 0.5  # one-hot targets
    assert M.accuracy(np.array([1, 0, 0]), np.array([0.9, 0.2, 0.6])) == pytest.approx(2 / 3)
    assert M.accuracy(np.array([1, 0]), np.array([2.0, -1.0]), threshold=0.0) == 1.0  # logits
    # weights 1, 1, 2, 0: correct rows 0 and 1 carry 2 of 4
    assert M.accuracy(y_true, logits, sample_weight=[1, 1, 2, 0]) == 0.5


def test_the_issue_example_is_scikit_learns_number():
    y_true = np.array([3.0, -0.5, 2.0, 7.0, 4.2])
    y_pred = np.array([2.5, 0.0, 2.1, 7.8, 1.0])
    assert M.r2_score(y_true, y_pred) == pytest.approx(sk.r2_score(y_true, y_pred), rel=1e-12)
    assert M.r2_score(y_true, y_pred) != pytest.approx(M.r2_score(y_pred, y_true))


def test_top_k_accuracy_worked_example_and_ties():
    scores = np.array([[0.5, 0.3, 0.2], [0.1, 0.2, 0.7], [0.3, 0.4, 0.3]])
    y_true = np.array([1, 0, 2])
    assert M.top_k_accuracy(y_true, scores, k=1) == 0.0
    # row 0 hits; row 2 too: class 2 ties class 0 at 0.3 and the higher index ranks first
    assert M.top_k_accuracy(y_true, scores, k=2) == pytest.approx(2 / 3)
    assert M.top_k_accuracy(y_true, scores, k=3) == 1.0
    # a three-way tie: the higher class index ranks first (scikit-learn's rule)
    tie = np.array([[1.0, 1.0, 1.0]] * 3)
    hits = [M.top_k_accuracy(np.array([c]), tie[:1], k=1) for c in range(3)]
    assert hits == [0.0, 0.0, 1.0]


def test_confusion_precision_recall_f1_worked_example():
    y_pred = np.array([0, 0, 1, 1, 1, 2])
    y_true = np.array([0, 1, 1, 1, 2, 2])
    cm = M.confusion_matrix(y_true, y_pred)
    np.testing.assert_array_equal(cm, [[1, 0, 0], [1, 2, 0], [0, 1, 1]])
    # class 0: tp 1, predicted 2, actual 1; class 1: tp 2, predicted 3, actual 3;
    # class 2: tp 1, predicted 1, actual 2
    np.testing.assert_allclose(M.precision(y_true, y_pred, average=None), [1 / 2, 2 / 3, 1.0])
    np.testing.assert_allclose(M.recall(y_true, y_pred, average=None), [1.0, 2 / 3, 1 / 2])
    f1 = np.array([2 * 0.5 * 1 / 1.5, 2 / 3, 2 * 1 * 0.5 / 1.5])
    np.testing.assert_allclose(M.f1_score(y_true, y_pred, average=None), f1)
    assert M.f1_score(y_true, y_pred) == pytest.approx(f1.mean())
    assert M.f1_score(y_true, y_pred, average="weighted") == pytest.approx(f1 @ [1, 3, 2] / 6)
    assert M.precision(y_true, y_pred, average="micro") == pytest.approx(4 / 6)
    assert M.balanced_accuracy(y_true, y_pred) == pytest.approx((1 + 2 / 3 + 1 / 2) / 3)
    np.testing.assert_allclose(
        M.confusion_matrix(y_true, y_pred, normalize="true"), cm / cm.sum(1, keepdims=True)
    )
    weighted = M.confusion_matrix(y_true, y_pred, sample_weight=[1, 2, 1, 1, 0.5, 1])
    np.testing.assert_allclose(weighted, [[1, 0, 0], [2, 2, 0], [0, 0.5, 1]])


def test_class_never_predicted_scores_zero_not_nan():
    y_true, y_pred = np.array([0, 1, 1]), np.array([0, 0, 0])
    np.testing.assert_allclose(M.precision(y_true, y_pred, average=None), [1 / 3, 0.0])
    assert np.isfinite(M.f1_score(y_true, y_pred))


def test_roc_auc_and_log_loss_worked_examples():
    y_true = np.array([0, 0, 1, 1])
    scores = np.array([0.1, 0.4, 0.35, 0.8])
    # pairs (positive, negative): 0.35 > 0.1, 0.35 < 0.4, 0.8 > both: 3 of 4
    assert M.roc_auc_score(y_true, scores) == 0.75
    assert M.roc_auc_score(y_true, np.array([0.5, 0.5, 0.5, 0.9])) == 0.75  # a tie counts 1/2
    two = np.stack([-scores, scores], axis=1)  # two-column logits rank as column 1 - column 0
    assert M.roc_auc_score(y_true, two) == 0.75
    assert np.isnan(M.roc_auc_score(np.array([1, 1]), np.array([0.2, 0.3])))  # one class only
    # -(log 0.8 + log 0.6) / 2
    assert M.log_loss(np.array([1, 0]), np.array([0.8, 0.4])) == pytest.approx(
        -(np.log(0.8) + np.log(0.6)) / 2
    )
    assert np.isfinite(M.log_loss(np.array([1]), np.array([0.0])))  # clipped, as scikit-learn


def test_regression_worked_examples():
    y_true, y_pred = np.array([1.0, 2.0, 4.0]), np.array([1.0, 2.0, 3.0])
    assert M.mse(y_true, y_pred) == pytest.approx(1 / 3)
    assert M.rmse(y_true, y_pred) == pytest.approx(np.sqrt(1 / 3))
    assert M.mae(y_true, y_pred) == pytest.approx(1 / 3)
    # SS_res = 1; mean 7/3, SS_tot = (16 + 1 + 25) / 9
    assert M.r2_score(y_true, y_pred) == pytest.approx(1 - 1 / (42 / 9))
    assert M.r2_score(np.ones(3), np.ones(3)) == 1.0  # constant target, predicted exactly
    # RMSE is per output, then averaged (scikit-learn's root_mean_squared_error)
    two = M.rmse(np.zeros((2, 2)), np.array([[1.0, 0.0], [1.0, 2.0]]))
    assert two == pytest.approx((1.0 + np.sqrt(2.0)) / 2)


# ---------------------------------------------------------------------- scikit-learn agreement
@quiet
@given(data=classification(), from_scores=st.booleans())
def test_label_metrics_match_scikit_learn(data, from_scores):
    y_true, scores, w, classes = data
    y_pred_labels = scores.argmax(1)
    y_pred = scores if from_scores else y_pred_labels
    labels = list(range(classes))
    kw = {"num_classes": classes, "sample_weight": w}
    assert M.accuracy(y_true, y_pred, sample_weight=w) == pytest.approx(
        sk.accuracy_score(y_true, y_pred_labels, sample_weight=w)
    )
    np.testing.assert_allclose(
        M.confusion_matrix(y_true, y_pred, **kw),
        sk.confusion_matrix(y_true, y_pred_labels, labels=labels, sample_weight=w),
    )
    for normalize in ("true", "pred", "all"):
        np.testing.assert_allclose(
            M.confusion_matrix(y_true, y_pred, normalize=normalize, **kw),
            sk.confusion_matrix(
                y_true, y_pred_labels, labels=labels, sample_weight=w, normalize=normalize
            ),
        )
    for ours, theirs in [
        (M.precision, sk.precision_score),
        (M.recall, sk.recall_score),
        (M.f1_score, sk.f1_score),
    ]:
        for average in (None, "macro", "micro", "weighted"):
            want = theirs(
                y_true, y_pred_labels, average=average, labels=labels, sample_weight=w,
                zero_division=0,
            )  # fmt: skip
            got = ours(y_true, y_pred, average=average, **kw)
            np.testing.assert_allclose(got, want, err_msg=f"{ours.__name__} {average}")
    want = sk.balanced_accuracy_score(y_true, y_pred_labels, sample_weight=w)
    assert M.balanced_accuracy(y_true, y_pred, sample_weight=w) == pytest.approx(want)
    weight = np.ones(len(y_true)) if w is None else w
    if len(np.unique(y_true[weight > 0])) > 1:  # adjusted needs two classes (chance < 1)
        want = sk.balanced_accuracy_score(y_true, y_pred_labels, sample_weight=w, adjusted=True)
        got = M.balanced_accuracy(y_true, y_pred, sample_weight=w, adjusted=True)
        assert got == pytest.approx(want)


@quiet
@given(data=classification(min_classes=3), k=st.integers(1, 4))
def test_top_k_accuracy_matches_scikit_learn_with_ties(data, k):
    y_true, scores, w, classes = data
    want = sk.top_k_accuracy_score(
        y_true, scores, k=k, labels=list(range(classes)), sample_weight=w
    )
    assert M.top_k_accuracy(y_true, scores, k=k, sample_weight=w) == pytest.approx(want)


@quiet
@given(data=classification(max_classes=2, min_classes=2, min_n=2), column=st.booleans())
def test_binary_roc_auc_matches_scikit_learn(data, column):
    y_true, scores, w, _ = data
    s = scores[:, 1]
    want = sk.roc_auc_score(y_true, s, sample_weight=w)
    got = M.roc_auc_score(y_true, s[:, None] if column else s, sample_weight=w)
    np.testing.assert_allclose(got, want)  # nan (one class only) equals nan
    probs = softmax(scores)
    got2 = M.roc_auc_score(y_true, probs, sample_weight=w)  # (N, 2): the positive column
    want2 = sk.roc_auc_score(y_true, probs[:, 1], sample_weight=w)
    np.testing.assert_allclose(got2, want2, rtol=1e-12)


@quiet
@given(data=classification(min_classes=3, min_n=2))
def test_one_vs_rest_roc_auc_matches_scikit_learn(data):
    y_true, scores, w, classes = data
    probs = softmax(scores)  # tied logits stay tied
    labels = list(range(classes))
    for average in ("macro", "weighted", "micro", None):
        want = sk.roc_auc_score(
            y_true, probs, multi_class="ovr", average=average, labels=labels, sample_weight=w
        )
        got = M.roc_auc_score(y_true, probs, average=average, sample_weight=w)
        np.testing.assert_allclose(got, want, rtol=1e-10, err_msg=str(average))


@quiet
@given(data=classification(max_n=20), binary=st.booleans(), clipped=st.booleans())
def test_log_loss_matches_scikit_learn(data, binary, clipped):
    y_true, scores, w, classes = data
    if binary:
        y_true = y_true % 2
        probs = 1 / (1 + np.exp(-scores[:, 0]))
        if clipped:  # exact 0 and 1: clipped to [eps, 1 - eps]
            probs = np.round(probs)
        want = sk.log_loss(y_true, probs, labels=[0, 1], sample_weight=w)
    else:
        probs = softmax(scores * 40 if clipped else scores)  # near-0 probabilities
        want = sk.log_loss(y_true, probs, labels=list(range(classes)), sample_weight=w)
    assert M.log_loss(y_true, probs, sample_weight=w) == pytest.approx(want, rel=1e-9)


@st.composite
def regression(draw):
    n = draw(st.integers(2, 25))
    outputs = draw(st.sampled_from([None, 1, 2, 3]))
    shape = (n,) if outputs is None else (n, outputs)
    grid = st.integers(-20, 20).map(lambda v: v / 4)  # exact values; ties and constants occur
    y_true = draw(hnp.arrays(np.float64, shape, elements=grid))
    y_pred = draw(hnp.arrays(np.float64, shape, elements=grid))
    if draw(st.booleans()):
        y_pred = y_true.copy()  # a perfect prediction (R2 of a constant target is 1)
    weights = None
    if draw(st.booleans()):
        weights = draw(hnp.arrays(np.float64, n, elements=WEIGHTS))
        assume(weights.sum() > 0)
    return y_true, y_pred, weights


@quiet
@given(data=regression())
def test_regression_metrics_match_scikit_learn(data):
    y_true, y_pred, w = data
    for ours, theirs in [
        (M.mse, sk.mean_squared_error),
        (M.rmse, sk.root_mean_squared_error),
        (M.mae, sk.mean_absolute_error),
        (M.r2_score, sk.r2_score),
    ]:
        want = theirs(y_true, y_pred, sample_weight=w)
        got = ours(y_true, y_pred, sample_weight=w)
        assert got == pytest.approx(want, rel=1e-9, abs=1e-12), ours.__name__


# ---------------------------------------------------------------------- stateful metrics
CLASSIFICATION_NAMES = [
    "accuracy", "balanced_accuracy", "top_k_accuracy", "precision", "recall", "f1_score",
    "roc_auc_score", "log_loss",
]  # fmt: skip
REGRESSION_NAMES = ["mse", "rmse", "mae", "r2_score"]


def _function_of(name):
    fn = getattr(M, name)
    return (lambda t, p, **kw: fn(t, p, k=5, **kw)) if name == "top_k_accuracy" else fn


@quiet
@given(data=classification(min_n=0, max_n=40), batches=st.integers(1, 5))
def test_stateful_classification_metrics_equal_the_functions(data, batches):
    y_true, scores, w, classes = data
    probs = softmax(scores)
    splits = np.array_split(np.arange(len(y_true)), batches)  # may hold empty batches
    for name in CLASSIFICATION_NAMES:
        metric = M.get(name)
        assert metric.name == name
        for idx in splits:
            metric.update(y_true[idx], probs[idx], None if w is None else w[idx])
        if not len(y_true):
            continue
        want = _function_of(name)(y_true, probs, sample_weight=w)
        np.testing.assert_allclose(metric.result(), want, rtol=1e-9, err_msg=name)
        metric.reset()
        metric.update(y_true, probs)
        np.testing.assert_allclose(metric.result(), _function_of(name)(y_true, probs), rtol=1e-9)


@given(data=regression(), batches=st.integers(1, 5))
def test_stateful_regression_metrics_equal_the_functions(data, batches):
    y_true, y_pred, w = data
    splits = np.array_split(np.arange(len(y_true)), batches)
    for name in REGRESSION_NAMES:
        metric = M.get(name)
        assert metric.name == name
        for idx in splits:
            metric.update(y_true[idx], y_pred[idx], None if w is None else w[idx])
        want = getattr(M, name)(y_true, y_pred, sample_weight=w)
        assert metric.result() == pytest.approx(want, rel=1e-9, abs=1e-12), name
        metric.reset()
        assert metric.result() == 0.0


class _Rank:
    """Rank ``rank`` of 2: its allgather records what this rank sends and answers it followed
    by ``other`` (what the other rank sent)."""

    size = 2

    def __init__(self, rank, other=None):
        self.rank, self.other, self.sent = rank, other, []

    def allgather(self, obj):
        self.sent.append(obj)
        return [obj, self.other if self.other is not None else obj]


@quiet
@given(data=classification(min_n=1, max_n=30), split=st.integers(0, 30))
def test_every_metric_merges_over_ranks_like_one_process(data, split):
    from nnframe.training.distributed import reduce_sums

    y_true, scores, w, _ = data
    probs = softmax(scores)
    weights = np.ones(len(y_true)) if w is None else w
    names = CLASSIFICATION_NAMES + REGRESSION_NAMES

    def inputs(name, rows):  # regression metrics read the first probability as a prediction
        if name in REGRESSION_NAMES:
            return y_true[rows].astype(np.float64), probs[rows, 0], weights[rows]
        return y_true[rows], probs[rows], weights[rows]

    ranks = []
    for rows in (slice(0, split), slice(split, None)):  # rank 0 may see no row at all
        metrics = [M.get(name) for name in names]
        for name, m in zip(names, metrics):
            if len(y_true[rows]):
                m.update(*inputs(name, rows))
        ranks.append(metrics)
    rank1 = _Rank(1)
    reduce_sums(rank1, [], ranks[1])  # records rank 1's payload
    _, results = reduce_sums(_Rank(0, rank1.sent[0]), [], ranks[0])
    for name, result in zip(names, results):
        full = M.get(name)
        full.update(*inputs(name, slice(None)))
        np.testing.assert_allclose(result, full.result(), rtol=1e-9, atol=1e-12, err_msg=name)


def test_get_resolves_names_metrics_and_callables():
    assert isinstance(M.get("accuracy"), M.Accuracy)
    assert isinstance(M.get("roc_auc_score"), M.ROCAUC)
    assert isinstance(M.get("rmse"), M.RootMeanSquaredError)
    acc = M.Accuracy()
    assert M.get(acc) is acc
    seen = []

    def my_metric(y_true, y_pred):
        seen.append((y_true[0], y_pred[0]))
        return 1.0

    fm = M.get(my_metric)
    assert fm.name == "my_metric"
    fm.update(np.zeros(3), np.ones(3))
    fm.update(np.zeros(1), np.ones(1))
    assert fm.result() == 1.0
    assert seen[0] == (0.0, 1.0)  # called as fn(y_true, y_pred)
    with pytest.raises(ValueError, match=r"metrics.get: expected one of .*got 'acc'"):
        M.get("acc")
    with pytest.raises(TypeError, match=r"metrics.get: expected a metric name"):
        M.get(3)


def test_every_name_works_in_trainer_fit_and_evaluate():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(48, 4)).astype(np.float32)
    y = (x[:, 0] + x[:, 1] > 0).astype(np.int64) + (x[:, 2] > 1)  # 3 classes, unbalanced
    model = nf.Sequential(nf.Dense(4, 3, rng=0), nf.Softmax())  # probabilities, for log_loss
    optimizer = nf.optim.SGD(model.parameters(), lr=0.1)
    trainer = nf.Trainer(model, _ProbabilityNLL(), optimizer, metrics=CLASSIFICATION_NAMES)
    trainer.fit(x, y, epochs=1, batch_size=16, verbose=0)
    result = trainer.evaluate(x, y, batch_size=16)
    probs = model(x)
    for name in CLASSIFICATION_NAMES:
        assert name in trainer.history
        want = _function_of(name)(y, probs)
        assert result[name] == pytest.approx(want, rel=1e-6), name


class _ProbabilityNLL:
    """Mean -log p[target] for a model that ends in Softmax (the test's loss)."""

    def __call__(self, pred, target, sample_weight=None):
        self.pred, self.target = pred, target
        return float(-np.log(pred[np.arange(len(target)), target] + 1e-12).mean())

    def backward(self):
        grad = np.zeros_like(self.pred)
        rows = np.arange(len(self.target))
        grad[rows, self.target] = -1.0 / (self.pred[rows, self.target] + 1e-12) / len(rows)
        return grad


# ---------------------------------------------------------------------- errors
def test_errors_are_clear():
    with pytest.raises(ValueError, match=r"accuracy: expected y_true and y_pred with the same"):
        M.accuracy(np.zeros(4), np.zeros((3, 2)))
    with pytest.raises(ValueError, match=r"mse: y_true and y_pred must have the same shape"):
        M.mse(np.zeros(3), np.zeros((3, 1)))
    with pytest.raises(ValueError, match=r"top_k_accuracy: expected y_score of shape \(N, C\)"):
        M.top_k_accuracy(np.zeros(3), np.zeros(3))
    with pytest.raises(ValueError, match=r"invalid average='binary'"):
        M.f1_score(np.zeros(2), np.zeros(2), average="binary")
    with pytest.raises(ValueError, match=r"sample_weight of shape \(2,\), got \(3,\)"):
        M.accuracy(np.zeros(2), np.zeros(2), sample_weight=np.ones(3))
    with pytest.raises(ValueError, match=r"log_loss: expected probabilities in \[0, 1\]"):
        M.log_loss(np.array([0, 1]), np.array([[2.0, -1.0], [0.0, 1.0]]))
    with pytest.raises(ValueError, match=r"roc_auc_score: expected y_true class indices in"):
        M.roc_auc_score(np.array([0, 2]), np.array([0.1, 0.9]))
    with pytest.raises(TypeError, match=r"FunctionMetric\(f\): expected no sample_weight"):
        M.FunctionMetric(lambda t, p: 0.0, name="f").update([1], [1], sample_weight=[1])


def test_the_old_pred_target_order_is_refused_where_it_shows():
    logits = np.array([[2.0, -1.0], [-0.5, 1.0]])
    with pytest.raises(ValueError, match=r"negative values \(scores\?\)\. Metrics take \(y_true"):
        M.accuracy(logits, np.array([0, 1]))
    with pytest.raises(ValueError, match=r"non-integer value 0.9 .*\(y_true, y_pred\)"):
        M.precision(np.array([0.9, 0.2]), np.array([1, 0]))
    with pytest.raises(TypeError):  # options are keyword-only: a stray threshold cannot slip in
        M.accuracy(np.array([1]), np.array([0.2]), 0.0)


def test_two_column_probabilities_rank_by_the_positive_column_as_scikit_learn():
    """Softmax rows of near-equal logits: column 1 ties at 0.5 while 1 - 0 does not (the
    deep hypothesis profile found AUC 0 against scikit-learn's 0.5); logits still rank by
    their difference."""
    probs = np.array([[0.49999999999999994, 0.5], [0.5, 0.5]])
    y = np.array([0, 1])
    assert M.roc_auc_score(y, probs) == sk.roc_auc_score(y, probs[:, 1]) == 0.5
    logits = np.array([[3.0, 1.0], [0.0, 2.5]])  # rows not probabilities: column 1 - column 0
    assert M.roc_auc_score(y, logits) == 1.0
