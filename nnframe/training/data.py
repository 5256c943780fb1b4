"""Data helpers: datasets over arrays, a batching loader, splits, one-hot labels, standardization.

Everything takes an explicit ``rng`` (a Generator, an int seed, or None for nnframe's default
generator), so a seeded program repeats exactly. scipy.sparse inputs are batched by rows without
ever being densified.

Example:
    >>> import numpy as np
    >>> from nnframe.training.data import ArrayDataset, DataLoader
    >>> x, y = np.arange(10.0).reshape(5, 2), np.array([0, 1, 0, 1, 1])
    >>> [xb.shape for xb, yb in DataLoader(ArrayDataset(x, y), batch_size=2)]
    [(2, 2), (2, 2), (1, 2)]
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping, Sequence

import numpy as np
from scipy import sparse

from nnframe.core.errors import ShapeError, check_hyper, fmt_shape
from nnframe.core.random import get_rng

__all__ = [
    "ArrayDataset",
    "Subset",
    "DataLoader",
    "random_split",
    "train_test_split",
    "stratified_indices",
    "one_hot",
    "Standardizer",
]


def _rows(a) -> int:
    return first_array(a).shape[0]


def _is_structure(a) -> bool:
    """A dict of arrays, or a list/tuple of arrays (or of such structures): the several inputs
    or targets of a graph model. A list of numbers stays one array-like."""
    if isinstance(a, Mapping):
        return True
    return (
        isinstance(a, (list, tuple))
        and len(a) > 0
        and all(isinstance(v, np.ndarray) or sparse.issparse(v) or _is_structure(v) for v in a)
    )


def first_array(a):
    """The array itself, or the first array of a list/tuple/dict of them."""
    while _is_structure(a):
        a = next(iter(a.values())) if isinstance(a, Mapping) else a[0]
    return a


def _leaves(a) -> list:
    if _is_structure(a):
        values = a.values() if isinstance(a, Mapping) else a
        return [leaf for v in values for leaf in _leaves(v)]
    return [a]


def _map(fn, a):
    if isinstance(a, Mapping):
        return {k: _map(fn, v) for k, v in a.items()}
    if _is_structure(a):
        return type(a)(_map(fn, v) for v in a) if isinstance(a, tuple) else [_map(fn, v) for v in a]
    return fn(a)


def _take(a, idx):
    """Rows ``idx`` of an ndarray or a sparse matrix (CSR row slicing, never densified), or of
    every array of a list/tuple/dict."""
    if _is_structure(a):
        return _map(lambda v: v[idx], a)
    return a[idx]


def take_rows(a, idx):
    """Rows ``idx`` of an array-like, or of every array of a list/tuple/dict (as arrays)."""
    return _take(_as_array(a), idx)


def _as_array(a):
    if _is_structure(a):
        return _map(_as_array, a)
    if sparse.issparse(a):
        return a.tocsr()  # CSR: fast row indexing
    return np.asarray(a)


class ArrayDataset:
    """Samples held in arrays with the same number of rows (inputs, targets, weights...).

    ``dataset[i]`` returns one row of each array; ``dataset[idx]`` with an index array or a slice
    returns a whole batch at once (what :class:`DataLoader` asks for: one fancy index per array,
    no Python loop over samples). scipy.sparse matrices are kept sparse (as CSR).

    Args:
        *arrays: ndarrays (or array-likes) and/or scipy.sparse matrices, all with N rows.

    Example:
        >>> import numpy as np
        >>> ds = ArrayDataset(np.zeros((4, 3)), np.arange(4))
        >>> len(ds), ds[1][1]
        (4, np.int64(1))
    """

    def __init__(self, *arrays):
        if not arrays:
            raise ValueError("ArrayDataset: expected at least one array, got none")
        arrays = tuple(_as_array(a) for a in arrays)  # a list/dict of arrays: several inputs
        leaves = [leaf for a in arrays for leaf in _leaves(a)]
        for a in leaves:
            if a.ndim == 0:
                raise ShapeError("ArrayDataset: expected arrays with a batch axis, got a scalar")
        n = _rows(arrays[0])
        shapes = [fmt_shape(a.shape) for a in leaves]
        if any(_rows(a) != n for a in leaves):
            raise ShapeError(
                f"ArrayDataset: expected arrays with the same number of rows, got shapes "
                f"{', '.join(shapes)}"
            )
        self.arrays = arrays

    def __len__(self) -> int:
        return _rows(self.arrays[0])

    def __getitem__(self, index):
        return tuple(_take(a, index) for a in self.arrays)

    def __repr__(self) -> str:
        shapes = ", ".join(fmt_shape(v.shape) for a in self.arrays for v in _leaves(a))
        return f"ArrayDataset({shapes})"


class Subset:
    """A view of ``dataset`` restricted to ``indices`` (what :func:`random_split` returns)."""

    def __init__(self, dataset, indices):
        self.dataset = dataset
        self.indices = np.asarray(indices, dtype=np.int64)

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, index):
        return self.dataset[self.indices[index]]

    def __repr__(self) -> str:
        return f"Subset({self.dataset!r}, n={len(self)})"


def _collate(samples: list) -> tuple:
    """Stacks a list of per-sample tuples into a tuple of batch arrays (generic datasets)."""
    first = samples[0]
    if not isinstance(first, tuple):
        return (np.stack([np.asarray(s) for s in samples]),)
    out = []
    for column in zip(*samples):
        if _is_structure(column[0]):  # several inputs or targets per sample: stack each
            out.append(_collate_structure(list(column)))
        elif sparse.issparse(column[0]):
            out.append(sparse.vstack(column, format="csr"))
        else:
            out.append(np.stack([np.asarray(c) for c in column]))
    return tuple(out)


def _collate_structure(column: list):
    first = column[0]
    if isinstance(first, Mapping):
        return {k: _collate_structure([c[k] for c in column]) for k in first}
    if _is_structure(first):
        return [_collate_structure([c[i] for c in column]) for i in range(len(first))]
    if sparse.issparse(first):
        return sparse.vstack(column, format="csr")
    return np.stack([np.asarray(c) for c in column])


class DataLoader:
    """Iterates over a dataset in batches, optionally shuffled.

    Each epoch (each ``iter``) with ``shuffle=True`` draws one permutation with
    ``rng.permutation(len(dataset))`` and yields consecutive slices of it, so a hand-written
    loop that does the same with the same seed sees the same batches. Datasets that accept an
    index array (:class:`ArrayDataset`, :class:`Subset`) are indexed once per batch; any other
    dataset (``__len__`` and ``__getitem__`` of one sample) is collated by stacking.

    Args:
        dataset: an ArrayDataset, a Subset, or any sized, indexable collection of samples.
        batch_size: samples per batch (> 0).
        shuffle: reshuffle at every epoch.
        drop_last: drop the last, smaller batch.
        rng: Generator or int seed for the shuffling (None: nnframe's default generator, looked
            up at each epoch so ``nnframe.manual_seed`` applies).

    Yields:
        tuples of batch arrays (ndarray, or CSR matrix for sparse inputs).
    """

    def __init__(
        self,
        dataset,
        batch_size: int = 32,
        shuffle: bool = False,
        drop_last: bool = False,
        rng=None,
    ):
        check_hyper("DataLoader", "batch_size", batch_size, int(batch_size) > 0, "must be > 0")
        if not hasattr(dataset, "__len__") or not hasattr(dataset, "__getitem__"):
            raise TypeError(
                f"DataLoader: expected a dataset with __len__ and __getitem__, "
                f"got {type(dataset).__name__}"
            )
        self.dataset = dataset
        self.batch_size = int(batch_size)
        self.shuffle = bool(shuffle)
        self.drop_last = bool(drop_last)
        self.rng = rng if rng is None else get_rng(rng)
        self._batched = isinstance(dataset, (ArrayDataset, Subset))

    def __len__(self) -> int:
        n = len(self.dataset)
        return n // self.batch_size if self.drop_last else math.ceil(n / self.batch_size)

    def __iter__(self) -> Iterator[tuple]:
        n = len(self.dataset)
        order = get_rng(self.rng).permutation(n) if self.shuffle else None
        stop = n - n % self.batch_size if self.drop_last else n
        for start in range(0, stop, self.batch_size):
            end = min(start + self.batch_size, n)
            idx = order[start:end] if order is not None else slice(start, end)
            if self._batched:
                yield self.dataset[idx]
            else:
                rows = range(start, end) if order is None else idx
                yield _collate([self.dataset[int(i)] for i in rows])

    def __repr__(self) -> str:
        return (
            f"DataLoader({self.dataset!r}, batch_size={self.batch_size}, "
            f"shuffle={self.shuffle}, drop_last={self.drop_last})"
        )


def _class_labels(who: str, labels) -> np.ndarray:
    y = np.asarray(labels)
    if y.ndim == 2 and y.shape[1] > 1:
        y = y.argmax(axis=1)  # one-hot rows: stratify on their class
    if y.ndim != 1:
        raise ShapeError(
            f"{who}: expected stratify labels of shape (N,) or one-hot (N, C), got "
            f"{fmt_shape(y.shape)}"
        )
    return y


def stratified_indices(labels, n_test: int, rng=None) -> tuple[np.ndarray, np.ndarray]:
    """Splits ``range(len(labels))`` into (train, test) index arrays, ``n_test`` in test, with
    each class's share of the test set as close as possible to its share of the whole.

    Counts per class are allocated by largest remainder, so they sum exactly to ``n_test``;
    both index arrays are returned shuffled.
    """
    rng = get_rng(rng)
    y = _class_labels("stratified_indices", labels)
    n = len(y)
    classes, inverse = np.unique(y, return_inverse=True)
    counts = np.bincount(inverse, minlength=len(classes))
    exact = counts * (n_test / n)
    take = np.floor(exact).astype(np.int64)
    remainder = n_test - int(take.sum())
    if remainder > 0:  # hand out the rest to the classes with the largest fractional parts
        order = np.lexsort((rng.random(len(classes)), -(exact - take)))
        take[order[:remainder]] += 1
    train, test = [], []
    for c in range(len(classes)):
        members = rng.permutation(np.flatnonzero(inverse == c))
        test.append(members[: take[c]])
        train.append(members[take[c] :])
    train_idx, test_idx = np.concatenate(train), np.concatenate(test)
    return rng.permutation(train_idx), rng.permutation(test_idx)


def _split_size(who: str, size, n: int) -> int:
    if isinstance(size, float):
        check_hyper(who, "test_size", size, 0.0 < size < 1.0, "a fraction must be in (0, 1)")
        return max(1, min(n - 1, round(size * n)))
    check_hyper(who, "test_size", size, 0 < int(size) < n, f"a count must be in (0, {n})")
    return int(size)


def train_test_split(*arrays, test_size: float | int = 0.25, stratify=None, rng=None) -> list:
    """Splits arrays (same number of rows) into random train and test parts.

    Args:
        *arrays: ndarrays or scipy.sparse matrices with N rows.
        test_size: a fraction in (0, 1) or a number of rows.
        stratify: class labels (N,) (or one-hot rows): each class keeps its proportion in both
            parts. Usually the targets themselves.
        rng: Generator or int seed (None: nnframe's default generator).

    Returns:
        ``[a_train, a_test, b_train, b_test, ...]``, as scikit-learn's function of the same name.

    Example:
        >>> import numpy as np
        >>> x, y = np.zeros((10, 2)), np.array([0] * 6 + [1] * 4)
        >>> x_tr, x_te, y_tr, y_te = train_test_split(x, y, test_size=0.5, stratify=y, rng=0)
        >>> np.bincount(y_te).tolist()
        [3, 2]
    """
    if not arrays:
        raise ValueError("train_test_split: expected at least one array, got none")
    ds = ArrayDataset(*arrays)
    n = len(ds)
    n_test = _split_size("train_test_split", test_size, n)
    rng = get_rng(rng)
    if stratify is not None:
        labels = _class_labels("train_test_split", stratify)
        if len(labels) != n:
            raise ShapeError(
                f"train_test_split: expected stratify labels of length {n}, got {len(labels)}"
            )
        train_idx, test_idx = stratified_indices(labels, n_test, rng)
    else:
        order = rng.permutation(n)
        test_idx, train_idx = order[:n_test], order[n_test:]
    out = []
    for a in ds.arrays:
        out.extend([_take(a, train_idx), _take(a, test_idx)])
    return out


def random_split(dataset, lengths: Sequence, rng=None, stratify=None) -> list[Subset]:
    """Splits a dataset into non-overlapping random :class:`Subset` s (PyTorch's function).

    Args:
        dataset: anything with ``__len__`` and ``__getitem__``.
        lengths: sizes that sum to ``len(dataset)``, or fractions that sum to 1 (the rows left
            over by rounding go to the first parts, one each).
        rng: Generator or int seed (None: nnframe's default generator).
        stratify: class labels (N,): each part keeps the class proportions (two parts only).

    Example:
        >>> import numpy as np
        >>> a, b = random_split(ArrayDataset(np.arange(10)), [0.7, 0.3], rng=0)
        >>> len(a), len(b)
        (7, 3)
    """
    n = len(dataset)
    lengths = list(lengths)
    if lengths and all(isinstance(v, float) for v in lengths) and math.isclose(sum(lengths), 1.0):
        counts = [math.floor(n * f) for f in lengths]
        for i in range(n - sum(counts)):
            counts[i % len(counts)] += 1
        lengths = counts
    if sum(int(v) for v in lengths) != n or any(int(v) < 0 for v in lengths):
        raise ValueError(
            f"random_split: expected lengths summing to {n} (or fractions summing to 1), "
            f"got {lengths}"
        )
    rng = get_rng(rng)
    if stratify is not None:
        if len(lengths) != 2:
            raise ValueError(
                f"random_split: stratify expected 2 lengths, got {len(lengths)} lengths"
            )
        first, second = stratified_indices(stratify, int(lengths[1]), rng)
        return [Subset(dataset, first), Subset(dataset, second)]
    order = rng.permutation(n)
    out, start = [], 0
    for length in lengths:
        out.append(Subset(dataset, order[start : start + int(length)]))
        start += int(length)
    return out


def one_hot(labels, num_classes: int | None = None, dtype=np.float32) -> np.ndarray:
    """Class indices (any shape) to one-hot vectors along a new last axis.

    Example:
        >>> one_hot(np.array([0, 2]), 3)
        array([[1., 0., 0.],
               [0., 0., 1.]], dtype=float32)
    """
    y = np.asarray(labels)
    if y.dtype.kind not in "iu":
        if y.dtype.kind == "f" and np.all(np.mod(y, 1) == 0):
            y = y.astype(np.int64)
        else:
            raise TypeError(f"one_hot: expected integer class indices, got dtype {y.dtype}")
    if num_classes is None:
        num_classes = int(y.max()) + 1 if y.size else 0
    if y.size and (y.min() < 0 or y.max() >= num_classes):
        bad = y[(y < 0) | (y >= num_classes)].flat[0]
        raise ValueError(f"one_hot: expected class indices in [0, {num_classes}), got {bad}")
    out = np.zeros(y.shape + (num_classes,), dtype=dtype)
    np.put_along_axis(out, y[..., None], 1, axis=-1)
    return out


class Standardizer:
    """Zero mean and unit variance per feature, learned on training data: ``(x - mean) / std``.

    Args:
        axis: the axes reduced to compute the statistics (0: per feature of (N, D) data;
            ``(0, 2, 3)``: per channel of NCHW images).
        eps: features whose standard deviation is below ``eps`` are only centered (divided by 1),
            so constant features never turn into NaN.

    scipy.sparse inputs are scaled but not centered (centering would densify them).

    Example:
        >>> s = Standardizer().fit(np.array([[0.0, 1.0], [2.0, 1.0]]))
        >>> s.transform(np.array([[1.0, 1.0]])).tolist()
        [[0.0, 0.0]]
    """

    def __init__(self, axis: int | tuple[int, ...] = 0, eps: float = 1e-8):
        self.axis = axis
        self.eps = eps
        self.mean: np.ndarray | None = None
        self.std: np.ndarray | None = None

    def fit(self, x) -> Standardizer:
        if sparse.issparse(x):
            x = x.tocsr()
            mean = np.asarray(x.mean(axis=0))
            sq = np.asarray(x.multiply(x).mean(axis=0))
            self.mean = np.zeros_like(mean)
            std = np.sqrt(np.maximum(sq - mean * mean, 0))
        else:
            x = np.asarray(x)
            self.mean = x.mean(axis=self.axis, keepdims=True)
            std = x.std(axis=self.axis, keepdims=True)
        self.std = np.where(std < self.eps, 1.0, std).astype(self.mean.dtype)
        return self

    def _check(self, who: str) -> None:
        if self.mean is None:
            raise RuntimeError(f"Standardizer.{who}: called before fit")

    def transform(self, x):
        self._check("transform")
        if sparse.issparse(x):
            return sparse.csr_matrix(x.multiply(1.0 / self.std), dtype=x.dtype)
        x = np.asarray(x)
        out = (x - self.mean) / self.std
        return out.astype(x.dtype) if x.dtype.kind == "f" else out

    def fit_transform(self, x):
        return self.fit(x).transform(x)

    def inverse_transform(self, x):
        self._check("inverse_transform")
        x = np.asarray(x)
        out = x * self.std + self.mean
        return out.astype(x.dtype) if x.dtype.kind == "f" else out

    def state_dict(self) -> dict:
        self._check("state_dict")
        return {"mean": self.mean.copy(), "std": self.std.copy()}

    def load_state_dict(self, state: dict) -> None:
        """Restores ``mean`` and ``std`` (validated first: float arrays of one shape, finite,
        ``std > 0``; a bad state raises SchemaError and changes nothing)."""
        from nnframe.io import schema as S

        who = "Standardizer.load_state_dict"
        spec = S.Record({"mean": S.Array("f"), "std": S.Array("f")})
        checked = S.validate(spec, state, who)
        if checked["mean"].shape != checked["std"].shape or not (checked["std"] > 0).all():
            raise S.SchemaError(f"{who}: expected mean and std of one shape with std > 0, got "
                                f"shapes {checked['mean'].shape} and {checked['std'].shape}")  # fmt: skip
        self.mean, self.std = checked["mean"], checked["std"]

    def __repr__(self) -> str:
        return f"Standardizer(axis={self.axis})"
