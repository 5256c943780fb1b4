"""Data-parallel training over MPI (mpi4py), with a single-process fallback.

Every rank holds a full copy of the model and sees its own shard of the data. After each
backward, :class:`DataParallel` averages the gradients of all ranks with one allreduce of a flat
buffer, then every rank clips and steps identically, so the replicas never drift apart.

Launch with ``mpiexec -n 4 python -m mpi4py train.py``: the ``-m mpi4py`` form aborts the whole
job when one rank raises, instead of leaving the others waiting forever in a collective.

Example (single process: the local communicator needs no MPI):
    >>> import numpy as np, nnframe as nf
    >>> from nnframe.distributed import DataParallel, LocalCommunicator
    >>> model = nf.Dense(3, 1, rng=0)
    >>> dp = DataParallel(model, nf.optim.SGD(model.parameters(), lr=0.1), LocalCommunicator())
    >>> dp.comm.rank, dp.comm.size
    (0, 1)
"""

from __future__ import annotations

import math
import os

import numpy as np

from nnframe.clip import clip_grad_norm_, clip_grad_value_
from nnframe.errors import check_hyper


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


def launched_by_mpi() -> bool:
    """True when this process was started by mpiexec (MPICH/Hydra or Open MPI)."""
    return any(
        v in os.environ for v in ("PMI_RANK", "PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "PMIX_RANK")
    )


def get_communicator():
    """An MPICommunicator when launched by mpiexec, else the LocalCommunicator."""
    return MPICommunicator() if launched_by_mpi() else LocalCommunicator()


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
    5. runs the wrapped optimizer's step.

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
            self.comm.broadcast_(p.data, root)
        for _, buffer in self.model.named_buffers():
            if isinstance(buffer, np.ndarray) and buffer.flags.c_contiguous:
                self.comm.broadcast_(buffer, root)
        state = self.comm.broadcast_object(self.optimizer.state_dict(), root)
        if self.comm.rank != root:
            self.optimizer.load_state_dict(state)

    def zero_grad(self) -> None:
        self.optimizer.zero_grad()

    def average_gradients(self) -> bool:
        """Allreduces the mean gradient into every ``p.grad``; returns whether it is finite."""
        if self.comm.size == 1:  # nothing to average: skip the pack and unpack copies
            return all(np.isfinite(p.grad).all() for _, p in self._named)
        flat, offset = self._flat, 0
        for _, p in self._named:
            flat[offset : offset + p.size] = p.grad.reshape(-1)
            offset += p.size
        self.comm.allreduce_mean_(flat)
        offset = 0
        for _, p in self._named:
            p.grad[...] = flat[offset : offset + p.size].reshape(p.shape)
            offset += p.size
        return bool(np.isfinite(flat).all())

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
        self.optimizer.step()
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

    def indices(self) -> np.ndarray:
        """This rank's sample indices for the current epoch."""
        n, size = self.num_samples, self.comm.size
        if self.shuffle:
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
