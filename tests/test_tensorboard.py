"""nnframe.TensorBoard, checked the way TensorBoard reads it: the event files are loaded back
with tensorboard's own EventAccumulator."""

import math
import subprocess
import sys

import numpy as np
import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.plugins.hparams import plugin_data_pb2

import nnframe as nf
from nnframe.training import callbacks


def _load(log_dir) -> EventAccumulator:
    acc = EventAccumulator(str(log_dir), size_guidance={"scalars": 0, "histograms": 0})
    return acc.Reload()


def _fit(log_dir, epochs=4, **kwargs):
    x, y = nf.datasets.make_moons(96, noise=0.2, rng=0)
    model = nf.Sequential(nf.Dense(2, 8, rng=0), nf.Tanh(), nf.Dense(8, 2, rng=1))
    optimizer = nf.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    trainer = nf.Trainer(model, nf.CrossEntropyLoss(), optimizer, metrics=["accuracy"])
    board = nf.TensorBoard(log_dir, **kwargs)
    history = trainer.fit(
        x, y, epochs=epochs, batch_size=32, validation_split=0.25, verbose=0, rng=0,
        callbacks=[board, callbacks.LearningRateScheduler(lambda epoch, lr: 0.1 / (epoch + 1))],
    )  # fmt: skip
    return history, model, board


def test_epoch_scalars_match_the_history(tmp_path):
    history, _, _ = _fit(tmp_path, epochs=4)
    acc = _load(tmp_path)
    scalars = acc.Tags()["scalars"]
    for key, tag in [
        ("loss", "loss/train"), ("val_loss", "loss/val"), ("accuracy", "accuracy/train"),
        ("val_accuracy", "accuracy/val"), ("lr", "lr"), ("grad_norm", "grad_norm"),
    ]:  # fmt: skip
        events = acc.Scalars(tag)
        assert [e.step for e in events] == [0, 1, 2, 3], tag
        np.testing.assert_allclose([e.value for e in events], history[key], rtol=1e-6)
    np.testing.assert_allclose([e.value for e in acc.Scalars("lr")], [0.1, 0.05, 0.1 / 3, 0.025])
    assert not any(t.startswith("batch/") for t in scalars)  # update_freq='epoch'
    assert acc.Tags()["histograms"] == []  # histogram_freq=0


def test_batch_scalars_every_n_steps(tmp_path):
    losses = []
    recorder = callbacks.LambdaCallback(
        on_batch_end=lambda batch, logs: losses.append(logs["loss"])
    )
    x, y = nf.datasets.make_moons(96, noise=0.2, rng=0)
    model = nf.Sequential(nf.Dense(2, 8, rng=0), nf.Tanh(), nf.Dense(8, 2, rng=1))
    trainer = nf.Trainer(model, nf.CrossEntropyLoss(), nf.optim.SGD(model.parameters(), lr=0.1))
    trainer.fit(x, y, epochs=3, batch_size=32, verbose=0, rng=0,
                callbacks=[nf.TensorBoard(tmp_path, update_freq=2), recorder])  # fmt: skip
    events = _load(tmp_path).Scalars("batch/loss")
    assert len(losses) == 9  # 3 epochs of 3 steps
    assert [e.step for e in events] == [0, 2, 4, 6, 8]
    np.testing.assert_allclose([e.value for e in events], losses[::2], rtol=1e-6)
    assert [e.step for e in _load(tmp_path).Scalars("batch/grad_norm")] == [0, 2, 4, 6, 8]


def test_histograms_of_weights_and_gradients_every_n_epochs(tmp_path):
    grads = {}

    def keep_first_grads(batch, logs):
        if batch == 0:
            grads[len(grads)] = model[0].weight.grad.copy()

    x, y = nf.datasets.make_moons(96, noise=0.2, rng=0)
    model = nf.Sequential(nf.Dense(2, 8, rng=0), nf.Tanh(), nf.Dense(8, 2, rng=1))
    trainer = nf.Trainer(model, nf.CrossEntropyLoss(), nf.optim.SGD(model.parameters(), lr=0.1))
    board = nf.TensorBoard(tmp_path, histogram_freq=2)
    trainer.fit(x, y, epochs=5, batch_size=32, verbose=0, rng=0,
                callbacks=[callbacks.LambdaCallback(on_after_backward=keep_first_grads), board])  # fmt: skip
    acc = _load(tmp_path)
    names = [name for name, _ in model.named_parameters()]
    assert sorted(acc.Tags()["histograms"]) == sorted(
        [f"weights/{n}" for n in names] + [f"grads/{n}" for n in names]
    )
    weights = acc.Histograms("weights/0.weight")
    assert [h.step for h in weights] == [0, 2, 4]
    last = weights[-1].histogram_value  # the final weights, written after epoch 4
    w = model[0].weight.data
    assert last.num == w.size
    assert math.isclose(last.min, w.min(), rel_tol=1e-6) and math.isclose(
        last.max, w.max(), rel_tol=1e-6
    )
    assert math.isclose(last.sum, w.sum(), rel_tol=1e-4, abs_tol=1e-5)
    grad_hist = acc.Histograms("grads/0.weight")
    assert [h.step for h in grad_hist] == [0, 2, 4]
    for h in grad_hist:  # the gradient of that epoch's first step
        g = grads[h.step]
        assert math.isclose(h.histogram_value.max, g.max(), rel_tol=1e-6)
        assert math.isclose(
            h.histogram_value.sum_squares, float((g.astype(np.float64) ** 2).sum()), rel_tol=1e-4
        )


def test_hyperparameters_and_final_metrics(tmp_path):
    history, model, board = _fit(tmp_path, epochs=3, hparams={"batch_size": 32, "note": "moons"})
    acc = _load(tmp_path)
    content = acc.PluginTagToContent("hparams")
    start = plugin_data_pb2.HParamsPluginData.FromString(
        content["_hparams_/session_start_info"]
    ).session_start_info
    hp = dict(start.hparams)
    assert hp["optimizer"].string_value == "SGD"
    assert hp["momentum"].number_value == pytest.approx(0.9)
    assert hp["batch_size"].number_value == 32
    assert hp["note"].string_value == "moons"
    assert hp["loss"].string_value == repr(nf.CrossEntropyLoss())
    assert hp["parameters"].number_value == sum(p.data.size for p in model.parameters())
    experiment = plugin_data_pb2.HParamsPluginData.FromString(content["_hparams_/experiment"])
    metric_tags = {m.name.tag for m in experiment.experiment.metric_infos}
    assert metric_tags == {
        "hparam/loss",
        "hparam/accuracy",
        "hparam/val_loss",
        "hparam/val_accuracy",
    }
    (final,) = acc.Scalars("hparam/val_accuracy")
    assert final.value == pytest.approx(history["val_accuracy"][-1])


def test_only_rank_zero_writes(tmp_path):
    class Rank1:  # what a data-parallel Trainer on rank 1 says
        is_root = False

    board = nf.TensorBoard(tmp_path / "r1", histogram_freq=1, update_freq=1)
    board.set_trainer(Rank1())
    board.on_train_begin({})
    board.on_epoch_begin(0, {})
    board.on_after_backward(0, {"loss": 1.0})
    board.on_batch_end(0, {"loss": 1.0, "grad_norm": 1.0})
    board.on_epoch_end(0, {"loss": 1.0})
    board.on_train_end({})
    assert not (tmp_path / "r1").exists()


def test_arguments_are_checked():
    with pytest.raises(ValueError, match="update_freq"):
        nf.TensorBoard(update_freq="batch")
    with pytest.raises(ValueError, match="histogram_freq"):
        nf.TensorBoard(histogram_freq=-1)
    with pytest.raises(TypeError, match="hparams"):
        nf.TensorBoard(hparams=[("lr", 1)])


def test_import_nnframe_does_not_import_tensorboardx():
    code = "import sys, nnframe; nnframe.TensorBoard('x'); print('tensorboardX' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
