"""Data-parallel training over MPI (mpi4py), with a single-process fallback.

Every rank holds a full copy of the model and sees its own shard of the data. After each
backward, :class:`DataParallel` averages the gradients of all ranks with one allreduce of a flat
buffer, then every rank clips and steps identically, so the replicas never drift apart.

Launch with ``mpiexec -n 4 python -m mpi4py train.py``: the ``-m mpi4py`` form aborts the whole
job when one rank raises, instead of leaving the others waiting forever in a collective.

Example (single process: the local communicator needs no MPI):
    >>> import numpy as np, nnframe as nf
    >>> from nnframe.training.distributed import DataParallel, LocalCommunicator
    >>> model = nf.Dense(3, 1, rng=0)
    >>> dp = DataParallel(model, nf.optim.SGD(model.parameters(), lr=0.1), LocalCommunicator())
    >>> dp.comm.rank, dp.comm.size
    (0, 1)
"""

from __future__ import annotations

import math
import os

import numpy as np

from nnframe.core.backend import array_module, is_array, to_numpy
from nnframe.core.errors import check_hyper
from nnframe.optim.clip import clip_grad_norm_, clip_grad_value_
from nnframe.optim.optimizer import NonFiniteUpdateError


class LocalCommunicator:
    """The single-process communicator: rank 0 of 1; every collective is the identity."""

    rank = 0
    size = 1

    @property
    def is_root(self) -> bool:
        return self.rank == 0

    def broadcast_(self, array: np.ndarray, root: int = 0) -> np.ndarray:
        """Overwrites ``array`` on every rank with root's values (in place); returns it."""
        return array

    def broadcast_object(self, obj, root: int = 0):
        """Root's (picklable, trusted) object, on every rank."""
        return obj

    def allreduce_mean_(self, array: np.ndarray) -> np.ndarray:
        """Replaces ``array`` on every rank by the mean over ranks (in place); returns it."""
        return array

    def allgather(self, obj) -> list:
        """Every rank's small object, in rank order, on every rank."""
        return [obj]

    def barrier(self) -> None:
        """Waits until every rank has arrived."""

    def __repr__(self) -> str:
        return "LocalCommunicator(rank=0, size=1)"


class MPICommunicator(LocalCommunicator):
    """A communicator over an mpi4py communicator (``MPI.COMM_WORLD`` by default).

    mpi4py is imported only here, so nnframe works without it; install ``nnframe[mpi]``
    (mpi4py and MPICH from PyPI, which brings ``mpiexec`` into the virtual environment).
    """

    def __init__(self, comm=None):
        try:
            from mpi4py import MPI
        except ImportError as error:  # pragma: no cover - depends on the environment
            raise ImportError(
                "MPICommunicator: expected mpi4py to be installed, got ImportError. "
                "Install the extra: pip install 'nnframe[mpi]'"
            ) from error
        self._mpi = MPI
        self.comm = comm if comm is not None else MPI.COMM_WORLD
        self.rank = self.comm.Get_rank()
        self.size = self.comm.Get_size()

    def broadcast_(self, array: np.ndarray, root: int = 0) -> np.ndarray:
        buffer = _contiguous(array, "broadcast_")
        self.comm.Bcast(buffer, root=root)
        return array

    def broadcast_object(self, obj, root: int = 0):
        return self.comm.bcast(obj, root=root)

    def allreduce_mean_(self, array: np.ndarray) -> np.ndarray:
        buffer = _contiguous(array, "allreduce_mean_")
        self.comm.Allreduce(self._mpi.IN_PLACE, buffer, op=self._mpi.SUM)
        buffer /= buffer.dtype.type(self.size)
        return array

    def allgather(self, obj) -> list:
        return self.comm.allgather(obj)

    def barrier(self) -> None:
        self.comm.Barrier()

    def __repr__(self) -> str:
        return f"MPICommunicator(rank={self.rank}, size={self.size})"


def _contiguous(array: np.ndarray, who: str) -> np.ndarray:
    if not (isinstance(array, np.ndarray) and array.flags.c_contiguous and array.flags.writeable):
        raise TypeError(
            f"{who}: expected a writeable C-contiguous ndarray, got {type(array).__name__}"
        )
    return array


def is_communicator(obj) -> bool:
    """Whether ``obj`` offers what data-parallel training uses (rank, size and collectives)."""
    needed = ("rank", "size", "broadcast_", "broadcast_object", "allreduce_mean_", "allgather")
    return all(hasattr(obj, name) for name in needed)


def launched_by_mpi() -> bool:
    """True when this process was started by mpiexec (MPICH/Hydra or Open MPI)."""
    return any(
        v in os.environ for v in ("PMI_RANK", "PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "PMIX_RANK")
    )


def get_communicator():
    """An MPICommunicator when launched by mpiexec, else the LocalCommunicator."""
    return MPICommunicator() if launched_by_mpi() else LocalCommunicator()


def _staged(collective, array, *args) -> None:
    """``collective(array, *args)`` in place, for an array of any device: MPI reads and writes
    host memory, so a device array goes through a host copy (CUDA-aware MPI is not assumed)."""
    if type(array) is np.ndarray:
        collective(array, *args)
        return
    host = np.array(to_numpy(array))  # a copy of its own: the collective writes into it
    collective(host, *args)
    array[...] = array_module(array).asarray(host)


class DataParallel:
    """Wraps an optimizer for synchronous data-parallel training.

    At construction every rank checks that all ranks hold the same parameters (names, shapes,
    dtypes: raw MPI would silently corrupt data on a mismatch) and then takes rank 0's parameters,
    buffers and optimizer state. ``step()`` then:

    1. packs every gradient into one flat buffer, in the fixed order of ``named_parameters``;
    2. averages it over ranks with one allreduce and unpacks it;
    3. skips the step on *every* rank if the averaged gradient is not finite (a NaN anywhere
       reaches every rank through the sum, so all ranks agree without another message);
    4. clips (``clip_norm`` / ``clip_value``): the gradients are equal, so every rank clips alike;
    5. runs the wrapped optimizer's step, which writes nothing when the update would not be
       finite (:class:`nnframe.optim.NonFiniteUpdateError`): then ``step`` returns False on every
       rank, as for a non-finite gradient.

    Args:
        model: the Module being trained (the same architecture on every rank).
        optimizer: any nnframe optimizer over ``model``'s parameters.
        comm: a communicator (default: :func:`get_communicator`).
        clip_norm, clip_value: gradient clipping after averaging.

    Each rank should call ``step`` the same number of times: use :class:`DistributedSampler`,
    which gives every rank the same number of batches.
    """

    def __init__(self, model, optimizer, comm=None, *, clip_norm=None, clip_value=None):
        if clip_norm is not None:
            check_hyper("DataParallel", "clip_norm", clip_norm, clip_norm > 0, "must be > 0")
        if clip_value is not None:
            check_hyper("DataParallel", "clip_value", clip_value, clip_value > 0, "must be > 0")
        if comm is not None and not is_communicator(comm):
            raise TypeError(
                f"DataParallel: expected comm to be a communicator from nnframe.training.distributed or "
                f"None, got {type(comm).__name__}"
            )
        self.model = model
        self.optimizer = optimizer
        self.comm = comm if comm is not None else get_communicator()
        self.clip_norm = clip_norm
        self.clip_value = clip_value
        self.skipped_steps = 0
        self.last_grad_norm: float | None = None
        self._named = list(model.named_parameters())
        self._check_signatures()
        dtypes = {p.data.dtype for _, p in self._named}
        if len(dtypes) != 1:
            raise TypeError(
                f"DataParallel: expected parameters of one dtype, got {sorted(map(str, dtypes))}"
            )
        total = sum(p.size for _, p in self._named)
        self._flat = np.empty(total, dtype=dtypes.pop())
        self._flat_extra: np.ndarray | None = None  # gradients + a few values (the loss)
        self.broadcast_state()

    @property
    def bytes_per_step(self) -> int:
        """Bytes each rank contributes to the gradient allreduce of one step."""
        return self._flat.nbytes

    def _check_signatures(self) -> None:
        mine = [(name, tuple(p.shape), str(p.dtype)) for name, p in self._named]
        everyone = self.comm.allgather(mine)
        for rank, theirs in enumerate(everyone):
            if theirs != mine:
                differ = next(
                    (f"{a} vs {b}" for a, b in zip(mine, theirs) if a != b),
                    f"{len(mine)} vs {len(theirs)} parameters",
                )
                raise ValueError(
                    f"DataParallel: expected every rank to hold the same parameters (name, shape, "
                    f"dtype), got a difference between rank {self.comm.rank} and rank {rank}: "
                    f"{differ}"
                )

    def broadcast_state(self, root: int = 0) -> None:
        """Copies root's parameters, buffers and optimizer state to every rank (call it again
        after loading a checkpoint on root)."""
        for _, p in self._named:
            _staged(self.comm.broadcast_, p.data, root)
        for _, buffer in self.model.named_buffers():
            if is_array(buffer) and buffer.flags.c_contiguous:
                _staged(self.comm.broadcast_, buffer, root)
        state = self.comm.broadcast_object(self.optimizer.state_dict(), root)
        if self.comm.rank != root:
            self.optimizer.load_state_dict(state)

    def average_buffers(self) -> None:
        """Averages every floating-point buffer over ranks and gives the others rank 0's values.

        BatchNorm's running statistics are updated by each rank from its own shard; their
        average is what one process with the global batch would hold for the running mean
        (the update is linear in the batch means), and close to it for the variance.
        :class:`nnframe.Trainer` calls this at the end of every epoch, before validation.
        """
        if self.comm.size == 1:
            return
        for _, buffer in self.model.named_buffers():
            if not (is_array(buffer) and buffer.flags.c_contiguous):
                continue
            if buffer.dtype.kind == "f":
                _staged(self.comm.allreduce_mean_, buffer)
            else:
                _staged(self.comm.broadcast_, buffer, 0)

    def zero_grad(self) -> None:
        self.optimizer.zero_grad()

    def average_gradients(self, extra: np.ndarray | None = None) -> bool:
        """Allreduces the mean gradient into every ``p.grad``; returns whether it is finite.

        ``extra``: a few more values (such as the batch loss) averaged in place in the same
        message, in the parameters' dtype.
        """
        if self.comm.size == 1:  # nothing to average: skip the pack and unpack copies
            return all(np.isfinite(p.grad).all() for _, p in self._named)
        total = self._flat.size
        flat = self._flat
        if extra is not None:
            if self._flat_extra is None or self._flat_extra.size != total + extra.size:
                self._flat_extra = np.empty(total + extra.size, dtype=self._flat.dtype)
            flat = self._flat_extra
            flat[total:] = extra.reshape(-1)
        offset = 0  # the gradients meet in one host array (a GPU's are copied down and up)
        for _, p in self._named:
            flat[offset : offset + p.size] = to_numpy(p.grad).reshape(-1)
            offset += p.size
        self.comm.allreduce_mean_(flat)
        offset = 0
        for _, p in self._named:
            piece = flat[offset : offset + p.size].reshape(p.shape)
            p.grad[...] = (
                piece if type(p.grad) is np.ndarray else array_module(p.grad).asarray(piece)
            )
            offset += p.size
        if extra is not None:
            extra[...] = flat[total:].reshape(extra.shape)
        return bool(np.isfinite(flat[:total]).all())

    def average_loss_and_gradients(self, loss: float) -> float:
        """Averages the gradients and this rank's ``loss`` in one allreduce; returns the mean
        loss, which is non-finite on every rank when it is on any (what
        :class:`nnframe.Trainer` uses to take the same NaN decisions on every rank)."""
        if self.comm.size == 1:
            return float(loss)
        slot = np.array([loss], dtype=self._flat.dtype)
        self.average_gradients(slot)
        return float(slot[0])

    def step(self) -> bool:
        """Averages, checks, clips and steps; returns False when a non-finite step was skipped."""
        if not self.average_gradients():
            self.skipped_steps += 1
            self.optimizer.zero_grad()
            return False
        params = [p for _, p in self._named]
        if self.clip_value is not None:
            clip_grad_value_(params, self.clip_value)
        if self.clip_norm is not None:
            self.last_grad_norm = clip_grad_norm_(params, self.clip_norm)
        try:  # every rank holds the same parameters and gradients: they all decide alike
            self.optimizer.step()
        except NonFiniteUpdateError:  # the optimizer undid it: nothing was written
            self.skipped_steps += 1
            self.optimizer.zero_grad()
            return False
        return True

    def average_metrics(self, metrics: dict[str, float]) -> dict[str, float]:
        """The mean of each metric over ranks (for validation on sharded data)."""
        gathered = self.comm.allgather({k: float(v) for k, v in metrics.items()})
        return {k: sum(m[k] for m in gathered) / len(gathered) for k in metrics}


class DistributedSampler:
    """Splits ``range(num_samples)`` into one disjoint shard per rank, the same size on each.

    The shuffle is the same on all ranks (a generator seeded with ``seed + epoch``) and changes
    with ``set_epoch``. When the samples do not divide evenly, ``drop_last=False`` pads by
    repeating the first indices of the permutation, ``drop_last=True`` drops the tail; either way
    every rank gets the same number of samples, hence of batches and of optimizer steps.

    Args:
        num_samples: the dataset's length.
        comm: the communicator (for rank and size).
        shuffle: permute each epoch.
        seed: base seed of the shuffle (must be equal on all ranks).
        drop_last: drop the tail instead of padding.
    """

    def __init__(self, num_samples: int, comm=None, *, shuffle=True, seed=0, drop_last=False):
        self.comm = comm if comm is not None else get_communicator()
        ok = isinstance(num_samples, (int, np.integer)) and not isinstance(num_samples, bool)
        if not ok or num_samples < 0:
            raise ValueError(
                f"DistributedSampler: invalid num_samples={num_samples!r} (must be an integer >= 0)"
            )
        if num_samples < self.comm.size and drop_last:
            raise ValueError(
                f"DistributedSampler: expected at least {self.comm.size} samples for "
                f"{self.comm.size} ranks with drop_last=True, got {num_samples}"
            )
        self.num_samples = num_samples
        self.shuffle = shuffle
        self.seed = seed
        self.drop_last = drop_last
        self.epoch = 0
        size = self.comm.size
        self.per_rank = num_samples // size if drop_last else math.ceil(num_samples / size)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def indices(self, order: np.ndarray | None = None) -> np.ndarray:
        """This rank's sample indices for the current epoch: every ``size``-th entry of the
        epoch's order (padded or cut to equal shares), or of ``order`` when given (a
        permutation of ``range(num_samples)``, the same on every rank)."""
        n, size = self.num_samples, self.comm.size
        if order is not None:
            order = np.asarray(order)
            if order.shape != (n,):
                raise ValueError(
                    f"DistributedSampler.indices: expected an order of shape ({n},), "
                    f"got {order.shape}"
                )
        elif self.shuffle:
            order = np.random.default_rng(self.seed + self.epoch).permutation(n)
        else:
            order = np.arange(n)
        total = self.per_rank * size
        if total > n:
            order = np.resize(order, total)  # pads by repeating from the start
        return order[:total][self.comm.rank :: size]

    def __iter__(self):
        return iter(self.indices())

    def __len__(self) -> int:
        return self.per_rank

    def batches(self, batch_size: int):
        """This rank's index batches (the same count on every rank)."""
        idx = self.indices()
        for start in range(0, len(idx), batch_size):
            yield idx[start : start + batch_size]


# ---------------------------------------------------------------- what Trainer.fit uses
def shared_generator(rng: np.random.Generator, comm) -> np.random.Generator:
    """A generator in rank 0's state on every rank: ``rng`` itself on rank 0, a copy elsewhere
    (so the shuffles and the validation split drawn from it agree on all ranks, and rank 0
    draws exactly what a single process would)."""
    state = comm.broadcast_object(rng.bit_generator.state if comm.rank == 0 else None)
    if comm.rank == 0:
        return rng
    bit_generator = getattr(np.random, state["bit_generator"])()
    bit_generator.state = state
    return np.random.Generator(bit_generator)


def _rows_of(dataset, indices: np.ndarray):
    """``dataset`` restricted to ``indices``, keeping batched indexing where it has it."""
    from nnframe.training.data import ArrayDataset, Subset

    if isinstance(dataset, (ArrayDataset, Subset)):
        return Subset(dataset, indices)
    return _IndexedView(dataset, indices)


class _IndexedView:
    """A per-sample view of a generic dataset (collated by the DataLoader)."""

    def __init__(self, dataset, indices):
        self.dataset, self.indices = dataset, np.asarray(indices, dtype=np.int64)

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i):
        return self.dataset[int(self.indices[i])]


class ShardedLoader:
    """This rank's batches of a dataset for data-parallel training: the drop-in for a
    :class:`nnframe.data.DataLoader` that :class:`nnframe.Trainer` uses when given a
    communicator of size > 1.

    Each epoch (each ``iter``) draws one order, ``rng.permutation(N)`` (``rng`` in the same
    state on every rank, see :func:`shared_generator`) or ``range(N)``, and gives rank ``r``
    every ``size``-th entry from ``r`` (:meth:`DistributedSampler.indices`), in batches of
    ``batch_size``. So batch ``b`` of all ranks together is rows
    ``order[b*size*batch_size : (b+1)*size*batch_size]``: exactly the batch of one process with
    ``batch_size * size`` rows and the same generator. Every rank gets the same number of
    batches: the tail is padded with the first rows of the order, or with ``drop_last`` the
    rows past the last full global batch are dropped, as one process would.

    Args:
        dataset: an ArrayDataset, a Subset or any sized, indexable collection of samples.
        batch_size: rows per rank and step (the global batch is ``batch_size * comm.size``).
        comm: the communicator.
        shuffle: a new order every epoch.
        rng: the shuffling generator, in the same state on every rank.
        drop_last: drop the tail rows instead of padding.
    """

    def __init__(self, dataset, batch_size: int, comm, *, shuffle=False, rng=None, drop_last=False):
        ok = isinstance(batch_size, (int, np.integer)) and not isinstance(batch_size, bool)
        check_hyper("ShardedLoader", "batch_size", batch_size, ok and batch_size > 0,
                    "must be an integer > 0")  # fmt: skip
        self.dataset = dataset
        self.batch_size = int(batch_size)
        self.comm = comm
        self.shuffle = bool(shuffle)
        self.rng = rng  # restored by fit(resume_from=) like a DataLoader's
        self.drop_last = bool(drop_last)
        self.sampler = DistributedSampler(len(dataset), comm, shuffle=False, drop_last=drop_last)

    @classmethod
    def from_loader(cls, loader, comm) -> ShardedLoader:
        """The shard of ``loader``'s dataset, batch size, shuffling and generator. Raises on
        every rank when the ranks' datasets or batching differ (they would take different
        numbers of steps and wait for each other forever)."""
        from nnframe.core.random import get_rng

        mine = (len(loader.dataset), loader.batch_size, loader.shuffle, loader.drop_last)
        everyone = comm.allgather(mine)
        if any(theirs != everyone[0] for theirs in everyone):
            raise ValueError(
                "Trainer.fit: expected the same (rows, batch_size, shuffle, drop_last) on every "
                f"rank, got {', '.join(f'rank {r}: {e}' for r, e in enumerate(everyone))}"
            )
        rng = shared_generator(get_rng(loader.rng), comm) if loader.shuffle else None
        return cls(
            loader.dataset, loader.batch_size, comm, shuffle=loader.shuffle, rng=rng,
            drop_last=loader.drop_last,
        )  # fmt: skip

    def __len__(self) -> int:
        if self.drop_last:
            return len(self.sampler) // self.batch_size
        return math.ceil(len(self.sampler) / self.batch_size)

    def __iter__(self):
        from nnframe.training.data import DataLoader

        order = self.rng.permutation(len(self.dataset)) if self.shuffle else None
        rows = _rows_of(self.dataset, self.sampler.indices(order))
        return iter(DataLoader(rows, self.batch_size, drop_last=self.drop_last))

    def __repr__(self) -> str:
        return (
            f"ShardedLoader(rank={self.comm.rank}, size={self.comm.size}, "
            f"batch_size={self.batch_size}, batches={len(self)}, shuffle={self.shuffle})"
        )


def shard_for_evaluation(loader, comm):
    """A DataLoader over this rank's share of ``loader``'s rows (every ``size``-th row from
    ``rank``, no padding: every row is evaluated once over all ranks)."""
    from nnframe.training.data import DataLoader

    rows = np.arange(comm.rank, len(loader.dataset), comm.size)
    return DataLoader(_rows_of(loader.dataset, rows), loader.batch_size)


def _accumulators(metric) -> list[str] | None:
    """The attributes a metric's ``reset()`` sets (its running sums), or None if unknown."""
    blank = object.__new__(type(metric))
    try:
        type(metric).reset(blank)
    except Exception:  # a reset() that reads configuration: no generic merge
        return None
    return list(vars(blank))


def _add(a, b):
    """a + b for running sums: numbers, arrays (zero-padded to a common shape, as confusion
    matrices that grew to different class counts), lists (concatenated)."""
    if isinstance(a, np.ndarray) and isinstance(b, np.ndarray) and a.shape != b.shape:
        if a.ndim == b.ndim:
            shape = tuple(np.maximum(a.shape, b.shape))
            a = np.pad(a, [(0, s - n) for s, n in zip(shape, a.shape)])
            b = np.pad(b, [(0, s - n) for s, n in zip(shape, b.shape)])
    return a + b


def _result_or_nan(metric) -> float:
    try:
        return float(metric.result())
    except (ArithmeticError, ValueError, TypeError, IndexError):
        return math.nan


def reduce_sums(comm, sums: list[float], metrics=()) -> tuple[list[float], list[float]]:
    """Sums ``sums`` over ranks and merges every metric's running sums in place, in one
    allgather; returns the sums and the metrics' results, which are those of one process
    over all ranks' data.

    A metric whose sums cannot be found or added (a ``reset()`` that needs its configuration)
    gets the mean of the ranks' results instead.
    """
    states = []
    for m in metrics:
        keys = _accumulators(m)
        states.append({k: getattr(m, k) for k in keys} if keys is not None else None)
    local = [_result_or_nan(m) for m in metrics]  # for the fallback
    gathered = comm.allgather((list(sums), states, local))
    totals = [math.fsum(g[0][i] for g in gathered) for i in range(len(sums))]
    results = []
    for i, m in enumerate(metrics):
        merged = None
        if states[i] is not None:
            try:
                merged = {}
                for k in states[i]:
                    value = gathered[0][1][i][k]
                    for g in gathered[1:]:
                        value = _add(value, g[1][i][k])
                    merged[k] = value
            except (TypeError, ValueError):
                merged = None
        if merged is not None:
            for k, value in merged.items():
                setattr(m, k, value)
            results.append(float(m.result()))
        else:  # every rank takes this branch alike (the same gathered data)
            results.append(float(np.mean([g[2][i] for g in gathered])))
    return totals, results


def agree_stop(comm, stop: bool, reason: str | None) -> tuple[bool, str | None]:
    """Whether any rank asked to stop, and why (the lowest such rank's reason), on every rank:
    one allreduce of one number, and an allgather only when the ranks disagree."""
    flag = np.array([1.0 if stop else 0.0])
    comm.allreduce_mean_(flag)
    if flag[0] == 0.0:
        return False, reason
    if flag[0] == 1.0:  # every rank stopped: on the same averaged values, for the same reason
        return True, reason
    everyone = comm.allgather((bool(stop), reason))
    first = next(r for r, (s, _) in enumerate(everyone) if s)
    return True, f"rank {first}: {everyone[first][1] or 'stop_training set by a callback'}"
