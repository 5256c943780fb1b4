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

import nnframe as nf
from nnframe.distributed import DataParallel, DistributedSampler, LocalCommunicator

WORKER = pathlib.Path(__file__).with_name("mpi_worker.py")
MPIEXEC = pathlib.Path(sys.executable).parent / "mpiexec"


def mpirun(scenario, ranks, tmp_path, timeout=120):
    if not MPIEXEC.exists():
        if os.environ.get("CI") == "true":
            pytest.fail("mpiexec missing in CI: the test command must install nnframe[mpi]")
        pytest.skip("mpiexec not installed (pip install 'nnframe[mpi]')")
    env = dict(os.environ, OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1")
    env["PYTHONPATH"] = str(WORKER.parent.parent) + os.pathsep + env.get("PYTHONPATH", "")
    cmd = [
        str(MPIEXEC),
        "-n",
        str(ranks),
        sys.executable,
        "-m",
        "mpi4py",
        str(WORKER),
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
    with pytest.raises(ValueError, match="DistributedSampler: expected at least"):
        DistributedSampler(1, type("C", (), {"size": 2, "rank": 0})(), drop_last=True)
