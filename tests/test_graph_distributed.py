"""Data-parallel training of a graph model (two inputs, two outputs) on 2 MPI ranks equals one
process with the global batch. The scenario lives in tests/mpi_graph_worker.py."""

import pathlib

from tests.test_distributed import mpirun as run_workers

WORKER = pathlib.Path(__file__).with_name("mpi_graph_worker.py")


def mpirun(scenario, ranks, tmp_path, timeout=120):
    proc, results, _ = run_workers(scenario, ranks, tmp_path, timeout, worker=WORKER)
    return proc, results


def test_graph_fit_on_two_ranks_equals_one_process_with_the_global_batch(tmp_path):
    proc, results = mpirun("graph_fit_parity", 2, tmp_path, timeout=90)
    assert proc.returncode == 0, proc.stderr
    assert len(results) == 2
    for r in results:
        assert r["param_change"] > 1e-2  # training moved the weights
        assert r["param_diff"] < 1e-10, r  # float64, shuffled rows, Adam, clipping
        expected = {"loss", "kind_loss", "value_loss", "kind_accuracy", "value_rmse"}
        expected |= {f"val_{k}" for k in expected}
        assert set(r["history_diffs"]) >= expected, r["keys"]
        assert max(r["history_diffs"].values()) < 1e-10, r["history_diffs"]
        assert r["evaluate_diff"] < 1e-10
        assert r["same_on_all_ranks"]
