"""A smoke run of the benchmark suite (one step per case), so that the suite cannot rot.

No timing is asserted: only that every case runs for every implementation and that the JSON
and the regression check work.
"""

import json
import os
import pathlib
import subprocess
import sys

import pytest

from benchmarks.run import compare

ROOT = pathlib.Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench") / "smoke.json"
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    cmd = [sys.executable, "-m", "benchmarks", "--smoke", "--threads", "1", "--json", str(out)]
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr
    return json.loads(out.read_text()), proc.stdout


def test_every_case_runs_for_nnframe_and_numpy(smoke):
    results, stdout = smoke
    cases = {row["case"] for row in results["runs"]}
    assert {
        "small_mlp_sgd",
        "mnist_mlp_adam_clip",
        "wide_mlp_sgd",
        "mnist_mlp_inference",
        "cnn_mnist_train",
        "cnn_conv1d_train",
        "rnn_lstm_train",
        "rnn_gru_train",
        "rnn_lstm_adding_train",
        "attention_encoder_train",
    } <= cases
    for row in results["runs"]:
        nf = row["impls"]["nnframe"]
        assert nf.get("median_s", 0) > 0, (row["case"], nf)
        numpy_result = row["impls"]["numpy"]
        assert "median_s" in numpy_result or "skipped" in numpy_result, (row["case"], numpy_result)
        assert "error" not in json.dumps(row["impls"]), row
    assert results["matmul_peak_gflops"]["1"] > 0
    assert "small_mlp_sgd" in stdout and "nf/np" in stdout


def test_results_describe_the_machine(smoke):
    machine = smoke[0]["machine"]
    assert machine["numpy"] and machine["cpu_count"] >= 1 and "python" in machine


def test_compare_flags_only_real_regressions(smoke, tmp_path):
    results, _ = smoke
    same = tmp_path / "same.json"
    same.write_text(json.dumps(results))
    assert compare(results, str(same)) == []
    faster = json.loads(json.dumps(results))
    for row in faster["runs"]:
        row["impls"]["nnframe"]["median_s"] /= 3  # an old run three times faster
        row["impls"]["nnframe"]["spread"] = 0.0
    old = tmp_path / "old.json"
    old.write_text(json.dumps(faster))
    flagged = compare(results, str(old))
    assert len(flagged) == len(results["runs"]) and "+200%" in flagged[0]
