"""scikit-learn estimators around nnframe models: :class:`NeuralNetClassifier` and
:class:`NeuralNetRegressor` (``pip install 'nnframe[sklearn]'``).

They follow scikit-learn's estimator API, so an nnframe model works in a ``Pipeline``, under
``GridSearchCV`` and ``cross_val_score``, and pickles with joblib. Fitting is
:class:`nnframe.Trainer`'s loop; the estimator adds the data checks, the label encoding and the
seeding.

The network is given as ``module``: an :class:`nnframe.Module` (copied at every ``fit``, so the
object passed in is never trained), or a function ``module(n_features_in, n_outputs, **kw)``
that builds one (``n_outputs`` is the number of classes or of regression targets; the function
also gets ``rng=`` when it takes such an argument, drawn from ``random_state``). ``None`` builds
a one-hidden-layer ReLU network with :func:`mlp`.

Options of the module function, the optimizer and the loss are estimator parameters with a
prefix, as in skorch: ``optimizer__lr=0.01``, ``module__hidden_layer_sizes=(64, 64)``,
``loss__label_smoothing=0.1``. ``get_params``/``set_params`` list and change them, so
``GridSearchCV(est, {"optimizer__lr": [1e-3, 1e-2]})`` searches them.

Example:
    >>> import numpy as np
    >>> from nnframe.sklearn import NeuralNetClassifier
    >>> rng = np.random.default_rng(0)
    >>> X = rng.normal(size=(200, 2)); y = np.where(X[:, 0] + X[:, 1] > 0, "yes", "no")
    >>> clf = NeuralNetClassifier(epochs=20, optimizer__lr=0.01, random_state=0).fit(X, y)
    >>> clf.classes_.tolist(), clf.n_features_in_
    (['no', 'yes'], 2)
    >>> clf.score(X, y) > 0.9
    True
"""

from __future__ import annotations

import copy
import copyreg
import importlib
import inspect
import io
import pickle

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin, RegressorMixin
from sklearn.preprocessing import LabelEncoder
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import _check_sample_weight, check_is_fitted

from nnframe.core.errors import check_hyper
from nnframe.core.module import InitRecord, Module
from nnframe.core.random import get_rng
from nnframe.layers.activations import ReLU
from nnframe.layers.containers import Sequential
from nnframe.layers.dense import Dense
from nnframe.layers.losses import CrossEntropyLoss, Loss, MSELoss
from nnframe.optim import Adam
from nnframe.training.trainer import History, Trainer

try:
    from sklearn.utils.validation import validate_data as _validate_data
except ImportError:  # scikit-learn < 1.6: the method on BaseEstimator

    def _validate_data(estimator, *args, **kwargs):
        return estimator._validate_data(*args, **kwargs)


__all__ = ["NeuralNetClassifier", "NeuralNetRegressor", "mlp"]

# the prefixes of the options passed on to the module function, the optimizer and the loss
_PREFIXES = ("module__", "optimizer__", "loss__")


def mlp(
    n_features_in: int,
    n_outputs: int,
    *,
    hidden_layer_sizes: tuple[int, ...] = (64,),
    rng=None,
) -> Sequential:
    """The default network: Dense layers of ``hidden_layer_sizes`` units with ReLU between
    them, then a Dense layer of ``n_outputs`` (logits or regression values).

    Example:
        >>> mlp(4, 3, hidden_layer_sizes=(8,), rng=0)
        Sequential(
          (0): Dense(in_features=4, out_features=8, bias=True)
          (1): ReLU()
          (2): Dense(in_features=8, out_features=3, bias=True)
        )
    """
    rng = get_rng(rng)
    sizes = [int(n_features_in), *(int(h) for h in hidden_layer_sizes)]
    layers: list[Module] = []
    for d_in, d_out in zip(sizes[:-1], sizes[1:]):
        layers += [Dense(d_in, d_out, rng=rng), ReLU()]
    layers.append(Dense(sizes[-1], int(n_outputs), rng=rng))
    return Sequential(*layers)


def _generator(random_state) -> np.random.Generator:
    """A Generator from an sklearn-style ``random_state`` (None, int, Generator or RandomState)."""
    if isinstance(random_state, np.random.RandomState):
        return np.random.default_rng(random_state.randint(2**31 - 1))
    return get_rng(random_state)


class _NeuralNet(BaseEstimator):
    """What the classifier and the regressor share: parameters, building, fit/partial_fit."""

    _default_loss: type[Loss] = MSELoss

    def __init__(
        self,
        module=None,
        *,
        loss=None,
        optimizer=Adam,
        epochs: int = 100,
        batch_size: int = 32,
        callbacks=None,
        validation_split: float = 0.0,
        random_state=None,
        verbose: int = 0,
        **kwargs,
    ):
        self.module = module
        self.loss = loss
        self.optimizer = optimizer
        self.epochs = epochs
        self.batch_size = batch_size
        self.callbacks = callbacks
        self.validation_split = validation_split
        self.random_state = random_state
        self.verbose = verbose
        unknown = [k for k in kwargs if not k.startswith(_PREFIXES)]
        if unknown:
            raise TypeError(
                f"{type(self).__name__}: expected keyword arguments among the parameters or "
                f"prefixed by {', '.join(_PREFIXES)}, got {sorted(unknown)}"
            )
        # prefixed options live in a private dict: get_params/set_params expose them
        self._prefixed = dict(kwargs)

    # ------------------------------------------------------------------ parameters
    def get_params(self, deep: bool = True) -> dict:
        """The constructor's parameters, and the prefixed options (``optimizer__lr``...)."""
        params = super().get_params(deep=deep)
        params.update(self._prefixed)
        return params

    def set_params(self, **params):
        """Sets parameters, including prefixed options (``optimizer__lr=0.01``); returns self."""
        prefixed = {k: v for k, v in params.items() if k.startswith(_PREFIXES)}
        rest = {k: v for k, v in params.items() if k not in prefixed}
        self._prefixed.update(prefixed)
        if rest:
            super().set_params(**rest)
        return self

    def _options(self, prefix: str) -> dict:
        return {k[len(prefix) :]: v for k, v in self._prefixed.items() if k.startswith(prefix)}

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.sparse = True  # the default network's first Dense takes CSR rows
        tags.non_deterministic = False  # random_state fixes the weights and the shuffles
        return tags

    # ------------------------------------------------------------------ building
    def _check_params(self) -> None:
        who = type(self).__name__
        check_hyper(who, "epochs", self.epochs, int(self.epochs) >= 1, "must be >= 1")
        check_hyper(who, "batch_size", self.batch_size, int(self.batch_size) >= 1, "must be >= 1")
        check_hyper(
            who, "validation_split", self.validation_split,
            0.0 <= self.validation_split < 1.0, "must be in [0, 1)",
        )  # fmt: skip
        if not callable(self.optimizer):
            raise TypeError(
                f"{who}: expected optimizer to be an optimizer class (nf.optim.Adam...), "
                f"got {type(self.optimizer).__name__}"
            )

    def _build(self, n_features_in: int, n_outputs: int, rng: np.random.Generator) -> None:
        """Makes ``module_``, ``loss_`` and ``optimizer_`` afresh."""
        who = type(self).__name__
        module_options = self._options("module__")
        if isinstance(self.module, Module):
            if module_options:
                raise ValueError(
                    f"{who}: module__ options need a module function, got a Module instance "
                    f"and {sorted(module_options)}"
                )
            model = copy.deepcopy(self.module)  # the parameter itself is never trained
        else:
            build = mlp if self.module is None else self.module
            if not callable(build):
                raise TypeError(
                    f"{who}: expected module to be a Module, a function "
                    f"(n_features_in, n_outputs) -> Module or None, got {type(build).__name__}"
                )
            if _takes_rng(build) and "rng" not in module_options:
                module_options["rng"] = rng
            model = build(n_features_in, n_outputs, **module_options)
            if not isinstance(model, Module):
                raise TypeError(
                    f"{who}: expected the module function to return a Module, "
                    f"got {type(model).__name__}"
                )
        loss_options = self._options("loss__")
        loss = self._default_loss if self.loss is None else self.loss
        if isinstance(loss, type):
            loss = loss(**loss_options)
        elif loss_options:
            raise ValueError(
                f"{who}: loss__ options need a loss class, got an instance and "
                f"{sorted(loss_options)}"
            )
        else:
            loss = copy.deepcopy(loss)
        self.module_ = model
        self.loss_ = loss
        self.optimizer_ = self.optimizer(model.parameters(), **self._options("optimizer__"))
        self.history_ = History()

    # ------------------------------------------------------------------ fitting
    def _validate(self, X, y, reset: bool):
        return _validate_data(
            self, X, y, reset=reset, accept_sparse="csr", dtype=np.float32,
            multi_output=self._multi_output, y_numeric=self._multi_output,
        )  # fmt: skip

    def _fit(self, X, y, sample_weight, *, partial: bool):
        """Trains on already validated data: ``epochs`` epochs of a new network (``fit``), or
        one more epoch of the current one (``partial_fit``; a new one on the first call)."""
        if sample_weight is not None:  # checked before anything changes
            sample_weight = _check_sample_weight(sample_weight, X, dtype=np.float32)
        if not partial or not hasattr(self, "module_"):
            init_rng, fit_rng = (
                np.random.default_rng(s)
                for s in _generator(self.random_state).integers(2**63, size=2)
            )
            self._build(self.n_features_in_, self._n_outputs(), init_rng)
            self._fit_rng = fit_rng  # partial_fit goes on shuffling from here
        trainer = Trainer(self.module_, self.loss_, self.optimizer_)
        history = trainer.fit(
            X, y, epochs=1 if partial else int(self.epochs), batch_size=int(self.batch_size),
            validation_split=self.validation_split, sample_weight=sample_weight,
            callbacks=list(self.callbacks or ()), verbose=self.verbose, rng=self._fit_rng,
        )  # fmt: skip
        if partial:  # one more epoch in the same History
            for epoch_logs in _epoch_logs(history):
                self.history_.record(len(self.history_), epoch_logs)
        else:
            self.history_ = history
        self.n_iter_ = len(self.history_)
        return self

    # ------------------------------------------------------------------ pickling
    def __getstate__(self) -> dict:
        state = dict(super().__getstate__())  # a copy: self keeps its optimizer
        # Optimizers may keep views into flat buffers, which pickle would turn into copies:
        # the optimizer travels as its state_dict and is rebuilt on the unpickled network.
        optimizer = state.pop("optimizer_", None)
        if optimizer is not None:
            state["_optimizer_state"] = optimizer.state_dict()
        # Modules record their constructor call (the raw __init__ function, for get_config),
        # which the standard pickler cannot find by name: the state goes through a pickler
        # that stores those records by the class's qualified name.
        buffer = io.BytesIO()
        _StatePickler(buffer, protocol=pickle.HIGHEST_PROTOCOL).dump(state)
        return {"_nnframe_state": buffer.getvalue()}

    def __setstate__(self, state: dict) -> None:
        if "_nnframe_state" in state:
            state = pickle.loads(state["_nnframe_state"])
        optimizer_state = state.pop("_optimizer_state", None)
        super().__setstate__(state)
        if optimizer_state is not None:
            options = self._options("optimizer__")
            self.optimizer_ = self.optimizer(self.module_.parameters(), **options)
            self.optimizer_.load_state_dict(optimizer_state)

    def _predict_raw(self, X) -> np.ndarray:
        check_is_fitted(self, "module_")
        X = _validate_data(self, X, reset=False, accept_sparse="csr", dtype=np.float32)
        return Trainer(self.module_, self.loss_, self.optimizer_).predict(X)


def _init_function(module_name: str, qualname: str):
    """The original ``__init__`` behind a Module class's recording wrapper."""
    target = importlib.import_module(module_name)
    for part in qualname.split("."):
        target = getattr(target, part)
    return getattr(target, "__wrapped__", target)


def _reduce_init_record(record: InitRecord):
    init = record.init
    return _make_init_record, (init.__module__, init.__qualname__, record.args, record.kwargs)


def _make_init_record(module_name: str, qualname: str, args: tuple, kwargs: dict) -> InitRecord:
    return InitRecord(_init_function(module_name, qualname), args, kwargs)


class _StatePickler(pickle.Pickler):
    dispatch_table = {**copyreg.dispatch_table, InitRecord: _reduce_init_record}


def _takes_rng(fn) -> bool:
    try:
        return "rng" in inspect.signature(fn).parameters
    except (TypeError, ValueError):  # builtins without a signature
        return False


def _epoch_logs(history: History):
    for i in range(len(history)):
        yield {k: history[k][i] for k in history.keys()}


class NeuralNetClassifier(ClassifierMixin, _NeuralNet):
    """A scikit-learn classifier training an nnframe network with :class:`nnframe.Trainer`.

    The network maps ``(N, n_features_in_)`` inputs to ``(N, n_classes)`` logits (or
    log-probabilities); the loss is ``nf.CrossEntropyLoss`` unless given, with the labels
    encoded as class indices in the order of ``classes_``. ``predict_proba`` is the softmax of
    the outputs.

    Args:
        module: an :class:`nnframe.Module`, a function ``(n_features_in, n_classes, **kw)``
            returning one (``module__`` options go to it, and ``rng=`` when it takes one), or
            None for :func:`mlp` (``module__hidden_layer_sizes=(64,)``).
        loss: a loss class (``loss__`` options go to it) or instance; None: CrossEntropyLoss.
        optimizer: an optimizer class, built on the network's parameters with the
            ``optimizer__`` options (``optimizer__lr=1e-3``...).
        epochs: passes over the data per ``fit`` (``partial_fit`` runs one).
        batch_size: rows per step.
        callbacks: :mod:`nnframe.callbacks` objects, handed to every ``fit`` as they are.
        validation_split: a fraction of the rows held out to compute ``val_loss`` each epoch.
        random_state: None, an int or a Generator: initial weights (of ``mlp`` or a module
            function taking ``rng``), shuffling and the validation split.
        verbose: the Trainer's verbosity (0 silent, 1 progress bar, 2 one line per epoch).
        **kwargs: ``module__*``, ``optimizer__*`` and ``loss__*`` options.

    Attributes:
        classes_: the class labels, sorted.
        n_features_in_: the number of input features.
        module_: the trained network.
        optimizer_, loss_: the optimizer and loss used.
        history_: the :class:`nnframe.History` of the training (``loss``, ``val_loss``...).
        n_iter_: the epochs trained.
    """

    _default_loss = CrossEntropyLoss
    _multi_output = False

    def _n_outputs(self) -> int:
        return len(self.classes_)

    def fit(self, X, y, sample_weight=None):
        """Trains a new network for ``epochs`` epochs on ``X`` and labels ``y``; returns self."""
        self._check_params()
        X, y = self._validate(X, y, reset=True)
        check_classification_targets(y)
        encoder = LabelEncoder().fit(y)
        self.classes_ = encoder.classes_
        indices = encoder.transform(y).astype(np.int64)
        return self._fit(X, indices, sample_weight, partial=False)

    def partial_fit(self, X, y, classes=None, sample_weight=None):
        """One epoch on ``(X, y)``, continuing the current network (a new one on the first
        call, which needs every label in ``classes``); returns self."""
        first = not hasattr(self, "module_")
        if first:
            self._check_params()
        X, y = self._validate(X, y, reset=first)
        check_classification_targets(y)
        if first:
            if classes is None:
                raise ValueError(
                    f"{type(self).__name__}.partial_fit: expected classes= (every label) on the "
                    "first call, got None"
                )
            self.classes_ = np.unique(np.asarray(classes))
        elif classes is not None and not np.array_equal(np.unique(classes), self.classes_):
            raise ValueError(
                f"{type(self).__name__}.partial_fit: expected classes={self.classes_.tolist()} "
                f"as in the first call, got {np.unique(classes).tolist()}"
            )
        unseen = np.setdiff1d(np.unique(y), self.classes_)
        if unseen.size:
            raise ValueError(
                f"{type(self).__name__}.partial_fit: expected labels among "
                f"{self.classes_.tolist()}, got {unseen.tolist()}"
            )
        indices = np.searchsorted(self.classes_, y).astype(np.int64)
        return self._fit(X, indices, sample_weight, partial=True)

    def predict_proba(self, X) -> np.ndarray:
        """Class probabilities ``(N, n_classes)``: the softmax of the network's outputs."""
        logits = self._predict_raw(X).astype(np.float64)
        logits -= logits.max(axis=1, keepdims=True)  # exp cannot overflow
        p = np.exp(logits)
        return p / p.sum(axis=1, keepdims=True)

    def predict(self, X) -> np.ndarray:
        """The most probable class label for each row."""
        scores = self._predict_raw(X)  # checks that the estimator is fitted first
        return self.classes_[scores.argmax(axis=1)]


class NeuralNetRegressor(RegressorMixin, _NeuralNet):
    """A scikit-learn regressor training an nnframe network with :class:`nnframe.Trainer`.

    The network maps ``(N, n_features_in_)`` inputs to ``(N, n_targets)`` values; the loss is
    ``nf.MSELoss`` unless given. ``y`` may be ``(N,)`` (then ``predict`` returns ``(N,)``) or
    ``(N, n_targets)``. Scale the targets (``TransformedTargetRegressor``) when they are far
    from unit size, as for any neural network.

    Takes the same arguments as :class:`NeuralNetClassifier` (the module function gets
    ``(n_features_in, n_targets)``).

    Attributes:
        n_features_in_: the number of input features.
        n_outputs_: the number of targets.
        module_, optimizer_, loss_, history_, n_iter_: as for the classifier.
    """

    _default_loss = MSELoss
    _multi_output = True

    def _n_outputs(self) -> int:
        return self.n_outputs_

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.target_tags.multi_output = True
        return tags

    def _targets(self, y, first: bool) -> np.ndarray:
        y = np.asarray(y, dtype=np.float32)
        if first:
            self._y_1d = y.ndim == 1
            self.n_outputs_ = 1 if y.ndim == 1 else y.shape[1]
        y2 = y.reshape(len(y), -1)
        if y2.shape[1] != self.n_outputs_:
            raise ValueError(
                f"{type(self).__name__}.partial_fit: expected {self.n_outputs_} targets per row, "
                f"got {y2.shape[1]}"
            )
        return y2

    def fit(self, X, y, sample_weight=None):
        """Trains a new network for ``epochs`` epochs on ``X`` and targets ``y``; returns self."""
        self._check_params()
        X, y = self._validate(X, y, reset=True)
        y = self._targets(y, first=True)
        return self._fit(X, y, sample_weight, partial=False)

    def partial_fit(self, X, y, sample_weight=None):
        """One epoch on ``(X, y)``, continuing the current network (a new one on the first
        call); returns self."""
        first = not hasattr(self, "module_")
        if first:
            self._check_params()
        X, y = self._validate(X, y, reset=first)
        return self._fit(X, self._targets(y, first), sample_weight, partial=True)

    def predict(self, X) -> np.ndarray:
        """The network's outputs: ``(N,)`` when fitted on 1-D targets, else ``(N, n_targets)``."""
        out = self._predict_raw(X).astype(np.float64)  # scikit-learn's regressors return float64
        return out.reshape(len(out)) if self._y_1d else out
