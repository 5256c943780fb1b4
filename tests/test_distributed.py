"""Data-parallel training: the local communicator in process, MPI scenarios under mpiexec.

The MPI scenarios live in tests/mpi_worker.py and run under ``mpiexec -n K`` in a subprocess
with a timeout. CI installs the ``mpi`` extra (mpi4py and MPICH from PyPI), so they run there.
"""

import json
import os
import pathlib
import subprocess
import sys
import time

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import nnframe as nf
from nnframe.training.data import ArrayDataset, DataLoader
from nnframe.training.distributed import (
    DataParallel,
    DistributedSampler,
    LocalCommunicator,
    ShardedLoader,
    agree_stop,
    reduce_sums,
    shard_for_evaluation,
)
from nnframe.training.metrics import get as get_metric
from tests.strategies import seeds

WORKER = pathlib.Path(__file__).with_name("mpi_worker.py")
MPIEXEC = pathlib.Path(sys.executable).parent / "mpiexec"


def mpirun(scenario, ranks, tmp_path, timeout=120, worker=WORKER):
    """Runs ``scenario`` of ``worker`` on ``ranks`` MPI ranks; returns (process, each rank's
    JSON result, seconds)."""
    if not MPIEXEC.exists():
        if os.environ.get("CI") == "true":
            pytest.fail("mpiexec missing in CI: the test command must install nnframe[mpi]")
        pytest.skip("mpiexec not installed (pip install 'nnframe[mpi]')")
    env = dict(os.environ, OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1")
    env["PYTHONPATH"] = str(worker.parent.parent) + os.pathsep + env.get("PYTHONPATH", "")
    cmd = [
        str(MPIEXEC),
        "-n",
        str(ranks),
        sys.executable,
        "-m",
        "mpi4py",
        str(worker),
        scenario,
        str(tmp_path),
    ]
    start = time.monotonic()
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)
    results = [
        json.loads((tmp_path / f"{scenario}_{r}.json").read_text())
        for r in range(ranks)
        if (tmp_path / f"{scenario}_{r}.json").exists()
    ]
    return proc, results, time.monotonic() - start


@pytest.mark.parametrize("ranks", [1, 2, 4])
def test_parameters_identical_after_broadcast(ranks, tmp_path):
    proc, results, _ = mpirun("broadcast", ranks, tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert len(results) == ranks and all(r["identical"] for r in results)


@pytest.mark.parametrize("ranks", [2, 4])
def test_averaged_gradient_equals_full_batch_gradient(ranks, tmp_path):
    proc, results, _ = mpirun("gradient", ranks, tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert len(results) == ranks and all(r["max_diff"] < 1e-10 for r in results), results


@pytest.mark.parametrize("ranks", [2, 4])
def test_data_parallel_steps_equal_single_process_global_batch(ranks, tmp_path):
    proc, results, _ = mpirun("train", ranks, tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert len(results) == ranks and all(r["max_diff"] < 1e-10 for r in results), results


def test_mismatched_parameters_raise_on_every_rank(tmp_path):
    proc, results, _ = mpirun("mismatch", 2, tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert len(results) == 2
    for r in results:
        assert r["raised"] and "expected every rank to hold the same parameters" in r["raised"]
        assert "(2, 6)" in r["raised"] or "(6, 4)" in r["raised"]


def test_exception_on_one_rank_ends_the_job_quickly(tmp_path):
    proc, results, elapsed = mpirun("crash", 2, tmp_path, timeout=60)
    assert proc.returncode != 0
    assert "rank 1 fails on purpose" in proc.stderr
    assert not results  # rank 0 never finished its allreduce: the job was aborted
    assert elapsed < 30


def test_unequal_shards_give_equal_step_counts(tmp_path):
    proc, results, _ = mpirun("uneven", 4, tmp_path)
    assert proc.returncode == 0, proc.stderr
    padded = [r["drop_last=False"] for r in results]
    dropped = [r["drop_last=True"] for r in results]
    assert {r["batches"] for r in padded} == {2}  # ceil(10 / 4) = 3 samples -> 2 batches of 2
    assert {r["batches"] for r in dropped} == {1}  # 10 // 4 = 2 samples -> 1 batch
    kept = sum((r["indices"] for r in dropped), [])
    assert len(kept) == len(set(kept)) == 8  # disjoint shards
    everything = sum((r["indices"] for r in padded), [])
    assert set(everything) == set(range(10))  # every sample seen; 2 padded repeats


def test_only_rank_zero_writes(tmp_path):
    proc, results, _ = mpirun("root_writes", 2, tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert all(r["files"] == ["weights.npz"] for r in results)


# ---------------------------------------------------------------- Trainer.fit over MPI
def test_fit_equals_single_process_fit_with_the_global_batch(tmp_path):
    proc, results, _ = mpirun("fit_parity", 2, tmp_path, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert len(results) == 2
    for r in results:
        assert r["param_diff"] < 1e-10, r  # shuffled rows, Adam, clipping: float64
        # History holds what one process computes over all rows: training loss and metrics,
        # validation metrics (each rank evaluated a share), gradient norms
        assert set(r["history_diffs"]) >= {"loss", "accuracy", "f1_score", "val_loss"}
        assert max(r["history_diffs"].values()) < 1e-10, r["history_diffs"]
        assert r["evaluate_diff"] < 1e-10
        assert r["same_on_all_ranks"]  # parameters and History (time included) on every rank
        assert r["buffers_same_on_all_ranks"] and r["running_mean_diff"] < 1e-10


def test_fit_writes_only_on_rank_zero_and_stops_every_rank_together(tmp_path):
    proc, results, _ = mpirun("fit_files", 2, tmp_path, timeout=60)
    assert proc.returncode == 0, proc.stderr
    root, other = sorted(results, key=lambda r: r["rank"])
    assert root["files"] == ["best.npz", "ckpt-2.safetensors", "log.csv"]
    assert other["files"] == []  # its ModelCheckpoint, CSVLogger, TrainingCheckpoint wrote nothing
    # EarlyStopping on averaged validation loss: the same epoch on both ranks, and the epoch
    # where one process with the global batch stops; callbacks' state is equal on both ranks
    assert root["stopped_epoch"] == other["stopped_epoch"] == root["ref_stopped_epoch"]
    assert root["epochs"] == other["epochs"] == root["ref_epochs"] < 30
    assert root["same_on_all_ranks"] and other["same_on_all_ranks"]
    lines = [line for line in proc.stdout.splitlines() if line.startswith("epoch ")]
    assert len(lines) == root["epochs"]  # verbose=2 prints on rank 0 only
    header = (tmp_path / "rank0" / "log.csv").read_text().splitlines()
    assert len(header) == root["epochs"] + 1


def test_fit_resumes_from_a_checkpoint_written_by_rank_zero(tmp_path):
    proc, results, _ = mpirun("fit_resume", 2, tmp_path, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert len(results) == 2
    for r in results:
        assert r["param_diff"] == 0.0 and r["epochs"] == [0, 1, 2, 3]


def test_fit_takes_nan_and_stop_decisions_together(tmp_path):
    proc, results, _ = mpirun("fit_agree", 2, tmp_path, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert len(results) == 2
    r = results[0]
    assert r["same_on_all_ranks"]  # params, counts and reasons equal on both ranks
    assert r["skip"]["skipped"] == 2  # the NaN row (rank 1's) skips one global step per epoch
    assert np.isfinite(r["skip"]["params"]).all()
    assert r["stop"] == {
        "epochs": 1,
        "reason": "nan_policy='stop': non-finite loss at epoch 1, batch 1",
    }
    assert r["raise"].startswith("Trainer.fit: expected a finite loss, got nan at epoch 1, batch 1")
    # rank 1 alone sets stop_training after its batch 3: rank 0 stops after the same batch
    assert r["callback"]["batches"] == [0, 1, 2] and r["callback"]["epochs"] == 1
    assert r["callback"]["reason"] == "rank 1: rank 1 had enough"
    assert r["lengths"] == (
        "Trainer.fit: expected the same (rows, batch_size, shuffle, drop_last) on every rank, "
        "got rank 0: (32, 32, True, False), rank 1: (30, 32, True, False)"
    )


# ---------------------------------------------------------------- in process, no MPI needed
def test_local_data_parallel_equals_plain_optimizer(rng):
    x = rng.normal(size=(8, 3)).astype(np.float32)
    y = rng.integers(0, 2, size=8)
    a, b = nf.Dense(3, 2, rng=0), nf.Dense(3, 2, rng=0)
    dp = DataParallel(a, nf.optim.SGD(a.parameters(), lr=0.1), LocalCommunicator(), clip_norm=0.5)
    opt = nf.optim.SGD(b.parameters(), lr=0.1, clip_norm=0.5)
    loss = nf.CrossEntropyLoss()
    for model, step in ((a, dp.step), (b, opt.step)):
        for _ in range(3):
            model.zero_grad()
            loss(model(x), y)
            model.backward(loss.backward())
            step()
    np.testing.assert_allclose(a.weight.data, b.weight.data, rtol=1e-6)
    assert dp.bytes_per_step == (3 * 2 + 2) * 4


def test_non_finite_gradient_skips_the_step():
    model = nf.Dense(2, 1, rng=0)
    dp = DataParallel(model, nf.optim.SGD(model.parameters(), lr=0.1), LocalCommunicator())
    before = model.weight.data.copy()
    model.weight.grad[0, 0] = np.nan
    assert dp.step() is False and dp.skipped_steps == 1
    np.testing.assert_array_equal(model.weight.data, before)


def test_sampler_shuffle_changes_per_epoch_and_repeats():
    s = DistributedSampler(20, LocalCommunicator(), seed=1)
    first = s.indices()
    s.set_epoch(1)
    second = s.indices()
    assert sorted(first) == sorted(second) == list(range(20))
    assert not np.array_equal(first, second)
    s.set_epoch(0)
    np.testing.assert_array_equal(s.indices(), first)


def test_invalid_arguments():
    model = nf.Dense(2, 1)
    with pytest.raises(ValueError, match=r"DataParallel: invalid clip_norm=0 \(must be > 0\)"):
        DataParallel(model, nf.optim.SGD(model.parameters()), LocalCommunicator(), clip_norm=0)
    with pytest.raises(ValueError, match=r"indices: expected an order of shape \(4,\), got \(3,\)"):
        DistributedSampler(4, LocalCommunicator()).indices(np.arange(3))
    with pytest.raises(ValueError, match="DistributedSampler: expected at least"):
        DistributedSampler(1, type("C", (), {"size": 2, "rank": 0})(), drop_last=True)


class FakeRank:
    """Rank ``rank`` of ``size`` for the pieces that only read rank and size, with an allgather
    that answers this rank's object followed by ``others`` (recorded from other ranks)."""

    def __init__(self, rank=0, size=2, others=()):
        self.rank, self.size, self.others, self.sent = rank, size, list(others), []

    def allgather(self, obj):
        self.sent.append(obj)
        return [obj, *self.others]

    def allreduce_mean_(self, array):
        array[...] = (array + sum(self.others)) / self.size
        return array


@given(
    seed=seeds,
    ranks=st.integers(1, 4),
    per_rank=st.integers(1, 5),
    steps=st.integers(1, 3),
    tail=st.integers(0, 7),
    generic=st.booleans(),
)
def test_sharded_batches_together_are_the_global_batches(
    seed, ranks, per_rank, steps, tail, generic
):
    """Step b of all ranks together takes the rows of one process's batch b (batch size
    ranks * per_rank, same generator); with drop_last, the same steps as that process."""
    n = ranks * per_rank * steps + tail * (ranks * per_rank > tail)  # full steps + a part
    x = np.arange(n * 2.0).reshape(n, 2)
    data = [(row,) for row in x] if generic else ArrayDataset(x)
    glob = DataLoader(data, ranks * per_rank, shuffle=True, drop_last=True, rng=seed)
    shards = [
        ShardedLoader(data, per_rank, FakeRank(r, ranks), shuffle=True, drop_last=True,
                      rng=np.random.default_rng(seed))
        for r in range(ranks)
    ]  # fmt: skip
    assert [len(s) for s in shards] == [len(glob)] * ranks == [steps] * ranks
    shards = [iter(s) for s in shards]
    for (global_batch,) in glob:
        parts = [next(s)[0] for s in shards]
        assert all(len(p) == per_rank for p in parts)
        together = np.concatenate(parts)
        assert sorted(together[:, 0]) == sorted(global_batch[:, 0])  # same rows, same step
    assert all(next(s, None) is None for s in shards)


def test_sharded_loader_pads_the_tail_to_equal_batch_counts():
    data = ArrayDataset(np.arange(7.0))
    counts = [[len(b[0]) for b in ShardedLoader(data, 2, FakeRank(r, 3))] for r in range(3)]
    assert counts == [[2, 1], [2, 1], [2, 1]]  # ceil(7 / 3) = 3 rows each: 2 padded


def test_evaluation_shards_cover_every_row_once():
    loader = DataLoader(ArrayDataset(np.arange(10.0)), batch_size=3)
    rows = [
        np.concatenate([b[0] for b in shard_for_evaluation(loader, FakeRank(r, 4))])
        for r in range(4)
    ]
    assert sorted(np.concatenate(rows).tolist()) == list(range(10))


@given(seed=seeds, split=st.integers(0, 30))
def test_merged_metrics_equal_the_metrics_over_all_rows(seed, split):
    rng = np.random.default_rng(seed)
    pred, target = rng.normal(size=(30, 3)), rng.integers(0, 3, size=30)
    target[:split] = np.minimum(target[:split], 1)  # rank 0 may never see class 2
    names = ["accuracy", "precision", "f1_score", "top_k_accuracy"]
    ranks = [[get_metric(n) for n in names] for _ in range(2)]
    for metrics, rows in zip(ranks, (slice(0, split), slice(split, 30))):
        for m in metrics:
            m.reset()
            if len(target[rows]):
                m.update(target[rows], pred[rows])
    other = FakeRank(1, 2)
    reduce_sums(other, [1.5, 2.0], ranks[1])  # records rank 1's payload
    totals, results = reduce_sums(FakeRank(0, 2, other.sent), [0.5, 1.0], ranks[0])
    assert totals == [2.0, 3.0]
    for name, result in zip(names, results):
        full = get_metric(name)
        full.reset()
        full.update(target, pred)
        assert result == pytest.approx(full.result(), abs=1e-12), name


def test_regression_metrics_merge_and_unknown_metrics_average():
    class Configured(nf.metrics.Metric):  # its reset() needs configuration: no generic merge
        name = "configured"

        def __init__(self, value):
            self.value = value
            self.reset()

        def reset(self):
            self.seen = self.value

        def update(self, y_true, y_pred, sample_weight=None):
            pass

        def result(self):
            return self.seen

    rng = np.random.default_rng(0)
    pred, target = rng.normal(size=(12, 2)), rng.normal(size=(12, 2))
    ranks = []
    for rows, value in ((slice(0, 5), 1.0), (slice(5, 12), 3.0)):
        metrics = [get_metric("r2_score"), get_metric("mse"), Configured(value)]
        for m in metrics[:2]:
            m.update(target[rows], pred[rows])
        ranks.append(metrics)
    other = FakeRank(1, 2)
    reduce_sums(other, [], ranks[1])
    _, results = reduce_sums(FakeRank(0, 2, other.sent), [], ranks[0])
    r2, mse = get_metric("r2_score"), get_metric("mse")
    r2.update(target, pred)
    mse.update(target, pred)
    assert results == pytest.approx([r2.result(), mse.result(), 2.0], abs=1e-12)


def test_agree_stop():
    assert agree_stop(LocalCommunicator(), False, None) == (False, None)
    assert agree_stop(LocalCommunicator(), True, "why") == (True, "why")
    other = FakeRank(1, 2, [np.array([0.0])])
    assert agree_stop(other, False, None) == (False, None)
    # rank 0 stops, rank 1 does not: both learn that rank 0 stopped, and why
    stopper = FakeRank(0, 2, [np.array([0.0])])
    stopper.allgather = lambda obj: [obj, (False, None)]
    assert agree_stop(stopper, True, "enough") == (True, "rank 0: enough")


def test_trainer_with_a_local_communicator_is_the_plain_trainer(rng):
    x = rng.normal(size=(20, 3)).astype(np.float32)
    y = rng.integers(0, 2, size=20)
    runs = []
    for comm in (None, LocalCommunicator()):
        model = nf.Sequential(nf.Dense(3, 4, rng=0), nf.Tanh(), nf.Dense(4, 2, rng=1))
        trainer = nf.Trainer(
            model, nf.CrossEntropyLoss(), nf.optim.SGD(model.parameters(), lr=0.1),
            metrics=["accuracy"], comm=comm,
        )  # fmt: skip
        assert trainer.is_root
        h = trainer.fit(x, y, epochs=2, batch_size=8, validation_split=0.25, verbose=0, rng=3)
        runs.append((np.concatenate([p.data.ravel() for p in model.parameters()]), h, trainer))
    (p0, h0, t0), (p1, h1, t1) = runs
    np.testing.assert_array_equal(p0, p1)
    assert {k: v for k, v in h0.history.items() if k != "time"} == {
        k: v for k, v in h1.history.items() if k != "time"
    }
    assert t0.evaluate(x, y) == t1.evaluate(x, y)


def test_trainer_rejects_a_non_communicator():
    model = nf.Dense(2, 1)
    with pytest.raises(TypeError, match="Trainer: expected comm to be a communicator .*got int"):
        nf.Trainer(model, nf.MSELoss(), nf.optim.SGD(model.parameters()), comm=3)


def test_average_loss_and_gradients_in_one_message():
    model = nf.Dense(2, 1, rng=0).to(np.float64)
    model.weight.grad[...] = 1.0
    comm = FakeRank(0, 2, [np.concatenate([np.full(3, 3.0), [5.0]])])
    dp = DataParallel.__new__(DataParallel)  # bypass the start-up broadcast of a real comm
    dp.comm, dp.model, dp._named = comm, model, list(model.named_parameters())
    dp._flat, dp._flat_extra = np.empty(3), None
    assert dp.average_loss_and_gradients(1.0) == 3.0  # (1 + 5) / 2
    np.testing.assert_array_equal(model.weight.grad, [[2.0, 2.0]])  # (1 + 3) / 2
    np.testing.assert_array_equal(model.bias.grad, [1.5])  # (0 + 3) / 2


def test_a_rank_with_poisoned_buffers_makes_every_rank_reject_the_batch(tmp_path):
    # issue 15: BatchNorm statistics and the finite-update guarantee on the data-parallel path
    proc, results, _ = mpirun("fit_poisoned_buffers", 2, tmp_path, timeout=60)
    assert proc.returncode == 0, proc.stderr
    r = results[0]
    assert r["same_on_all_ranks"] and r["finite"]
    assert r["skipped"] == 2  # rank 1's poisoned batch, once per epoch, on both ranks
    assert r["dp_step"] is False and r["dp_unchanged"]


def test_an_update_that_would_overflow_is_skipped_by_data_parallel():
    model = nf.Dense(2, 1, rng=0)
    dp = DataParallel(model, nf.optim.SGD(model.parameters(), lr=3e38), LocalCommunicator())
    before = model.weight.data.copy()
    model.weight.grad[...] = 10.0
    assert dp.step() is False and dp.skipped_steps == 1
    np.testing.assert_array_equal(model.weight.data, before)
    assert not model.weight.grad.any()


@pytest.mark.parametrize("n", [-1, 2.5, "8", True])
def test_distributed_sampler_refuses_a_bad_sample_count(n):
    # attack campaign: num_samples=-1 was accepted (an empty shard on every rank)
    with pytest.raises(ValueError, match=r"DistributedSampler: invalid num_samples="):
        DistributedSampler(n, LocalCommunicator())


@pytest.mark.parametrize("batch_size", [0, 2.5, "4", True])
def test_sharded_loader_refuses_a_bad_batch_size(batch_size):
    # attack campaign: batch_size=2.5 was used as 2
    with pytest.raises(ValueError, match=r"ShardedLoader: invalid batch_size="):
        ShardedLoader(ArrayDataset(np.ones((4, 2))), batch_size, LocalCommunicator())


def test_data_parallel_refuses_an_object_that_is_not_a_communicator():
    # attack campaign: a raw AttributeError ('object' has no attribute 'allgather')
    model = nf.Dense(2, 2)
    with pytest.raises(TypeError, match=r"DataParallel: expected comm to be a communicator"):
        DataParallel(model, nf.optim.SGD(model.parameters(), lr=0.1), object())
