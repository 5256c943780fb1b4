"""The main job's code path (``python -m nnframe.demo``), run on a subset so it stays quick."""

import numpy as np
import pytest

import nnframe as nf
from nnframe import demo

CHECKED_MODULES = []  # no Module or Loss here

pytest.importorskip("sklearn")
pytest.importorskip("matplotlib")


@pytest.mark.parametrize("model", ["auto", "mlp"])
def test_demo_runs_end_to_end_on_a_subset(model, tmp_path, capsys):
    out = tmp_path / "demo"
    result = demo.main(
        ["--epochs", "4", "--out", str(out), "--model", model, "--seed", "1"], subset=300
    )
    printed = capsys.readouterr().out
    assert "test accuracy" in printed and "examples/s" in printed and "wall" in printed
    assert "Total params" in printed  # the summary table
    expected = "cnn" if model == "auto" and demo.has_conv() else "mlp"
    assert result["model"] == expected
    assert result["accuracy"] > 0.5  # 4 epochs on 240 digits: far above chance (0.1)
    assert result["examples_per_s"] > 0 and result["wall_s"] > 0
    assert result["reloads_identically"]
    png = (out / "curves.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    reloaded = nf.load(result["model_path"])
    x_train, x_test, y_train, y_test = demo.prepare_data(expected, 1, subset=300)
    assert reloaded(x_test).shape == (len(x_test), 10)
    assert len(result["history"]["lr"]) == result["epochs"]


def test_demo_quiet_prints_nothing(tmp_path, capsys):
    demo.main(["--epochs", "1", "--out", str(tmp_path), "--quiet", "--model", "mlp"], subset=200)
    assert capsys.readouterr().out == ""


def test_demo_data_is_standardized_with_training_statistics():
    x_train, x_test, y_train, y_test = demo.prepare_data("mlp", 0)
    assert len(x_train) + len(x_test) == 1797 and len(x_test) == 359
    np.testing.assert_allclose(x_train.mean(axis=0), 0, atol=1e-5)
    assert np.bincount(y_test).min() >= 35  # stratified: every digit well represented
