"""Callbacks: early stopping with best-weight restore, checkpoints, LR scheduling, plateau
reduction, NaN termination, CSV logging, gradient monitoring, lambdas."""

import csv
import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import nnframe as nf
from nnframe.training import callbacks as C
from tests.strategies import seeds

CHECKED_MODULES = []  # no Module or Loss here


def mlp(seed=0):
    rng = np.random.default_rng(seed)
    return nf.Sequential(nf.Dense(2, 8, rng=rng), nf.Tanh(), nf.Dense(8, 2, rng=rng))


def data(seed=0, n=40):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 2)).astype(np.float32)
    return x, (x[:, 0] > 0).astype(np.int64)


def trainer_for(model, lr=0.5, metrics=()):
    return nf.Trainer(model, nf.CrossEntropyLoss(), nf.optim.SGD(model.parameters(), lr=lr),
                      metrics=metrics)  # fmt: skip


def record_weights():
    """A callback keeping each epoch's state_dict (after the epoch)."""
    states = []
    return states, C.LambdaCallback(
        on_epoch_end=lambda epoch, logs: states.append(trainer_ref[0].model.state_dict())
    )


trainer_ref = [None]


@given(seed=seeds, patience=st.integers(0, 2))
def test_early_stopping_restores_the_best_weights(seed, patience):
    x, y = data(seed % 100)
    # validating on flipped labels: the better the fit, the worse val_loss -> best is epoch 0
    model = mlp(seed % 5)
    trainer = trainer_ref[0] = trainer_for(model)
    states, keeper = record_weights()
    stopper = C.EarlyStopping(monitor="val_loss", patience=patience, restore_best_weights=True)
    history = trainer.fit(
        x, y, epochs=20, batch_size=10, validation_data=(x, 1 - y), verbose=0, rng=seed,
        callbacks=[keeper, stopper],
    )  # fmt: skip
    best = int(np.argmin(history["val_loss"]))
    assert len(history) < 20 and history.stop_reason.startswith("EarlyStopping")
    assert stopper.best_epoch == best
    assert len(history) == best + max(1, patience) + 1  # `patience` bad epochs (Keras' count)
    for key, value in model.state_dict().items():
        np.testing.assert_array_equal(value, states[best][key])
    assert not np.array_equal(states[-1]["0.weight"], states[best]["0.weight"])


def test_early_stopping_without_restore_keeps_the_last_weights_and_min_delta():
    x, y = data(0)
    model = mlp(0)
    trainer = trainer_ref[0] = trainer_for(model)
    states, keeper = record_weights()
    stopper = C.EarlyStopping(monitor="loss", patience=0, min_delta=10.0)  # nothing is enough
    history = trainer.fit(x, y, epochs=5, verbose=0, callbacks=[keeper, stopper])
    assert len(history) == 2  # epoch 0 sets the best, epoch 1 fails to beat it by 10
    np.testing.assert_array_equal(model.state_dict()["0.weight"], states[-1]["0.weight"])


def test_early_stopping_mode_auto_and_missing_monitor():
    assert C.EarlyStopping(monitor="val_accuracy").mode == "max"
    assert C.EarlyStopping(monitor="val_loss").mode == "min"
    x, y = data(0)
    trainer = trainer_for(mlp(0))
    with pytest.raises(KeyError, match=r"EarlyStopping: expected 'val_loss' in the epoch logs"):
        trainer.fit(x, y, epochs=2, verbose=0, callbacks=[C.EarlyStopping()])
    with pytest.raises(ValueError, match=r"EarlyStopping: invalid patience=-1"):
        C.EarlyStopping(patience=-1)


def test_reduce_lr_on_plateau_lowers_the_rate():
    x, y = data(0)
    trainer = trainer_for(mlp(0), lr=0.5)
    reducer = C.ReduceLROnPlateau(monitor="val_loss", factor=0.5, patience=1)
    history = trainer.fit(
        x, y, epochs=8, batch_size=10, validation_data=(x, 1 - y), verbose=0, rng=0,
        callbacks=[reducer],
    )  # fmt: skip
    lrs = history["lr"]
    # val_loss only gets worse: after epoch 0 sets the best, every 2 bad epochs halve the rate
    assert lrs[:3] == [0.5, 0.5, 0.5]
    assert lrs[3] == 0.25 and lrs[5] == 0.125 and lrs[7] == 0.0625
    assert reducer.scheduler.get_last_lr()[0] == trainer.optimizer.param_groups[0]["lr"]


def test_learning_rate_scheduler_function_and_step_interval():
    x, y = data(0, n=20)
    trainer = trainer_for(mlp(0), lr=1.0)
    sched = C.LearningRateScheduler(lambda epoch, lr: 0.1 / (epoch + 1))
    history = trainer.fit(x, y, epochs=3, verbose=0, callbacks=[sched])
    np.testing.assert_allclose(history["lr"], [0.1, 0.05, 0.1 / 3])

    model = mlp(0)
    opt = nf.optim.SGD(model.parameters(), lr=1.0)
    per_step = nf.optim.ExponentialLR(opt, gamma=0.5)
    trainer = nf.Trainer(model, nf.CrossEntropyLoss(), opt)
    history = trainer.fit(
        x, y, epochs=2, batch_size=5, verbose=0,
        callbacks=[C.LearningRateScheduler(per_step, interval="step")],
    )  # fmt: skip
    assert history["lr"] == [1.0, 0.5**4]  # 4 steps per epoch
    with pytest.raises(ValueError, match=r"LearningRateScheduler: invalid interval='batch'"):
        C.LearningRateScheduler(per_step, interval="batch")


def test_model_checkpoint_saves_best_only_and_formats_the_path(tmp_path):
    x, y = data(0)
    model = mlp(0)
    trainer = trainer_for(model)
    ckpt = C.ModelCheckpoint(tmp_path / "best.npz", monitor="val_loss", save_best_only=True)
    every = C.ModelCheckpoint(str(tmp_path / "e{epoch:02d}-{loss:.2f}.npz"), monitor="loss")
    states, keeper = record_weights()
    trainer_ref[0] = trainer
    history = trainer.fit(
        x, y, epochs=4, batch_size=10, validation_data=(x, 1 - y), verbose=0, rng=0,
        callbacks=[keeper, ckpt, every],
    )  # fmt: skip
    best = int(np.argmin(history["val_loss"]))
    with np.load(tmp_path / "best.npz") as saved:
        np.testing.assert_array_equal(saved["0.weight"], states[best]["0.weight"])
    files = sorted(p.name for p in tmp_path.glob("e*.npz"))
    assert len(files) == 4 and files[0].startswith("e01-")
    assert every.last_saved.endswith(files[-1])
    assert not list(tmp_path.glob("*.tmp"))  # atomic writes leave no temporary file


def test_model_checkpoint_safetensors_round_trip(tmp_path):
    serialization = pytest.importorskip("nnframe.serialization")
    x, y = data(0)
    model = mlp(0)
    trainer = trainer_for(model)
    trainer.fit(x, y, epochs=1, verbose=0,
                callbacks=[C.ModelCheckpoint(tmp_path / "w.safetensors", monitor="loss")])  # fmt: skip
    fresh = mlp(1)
    serialization.load_weights(fresh, tmp_path / "w.safetensors")
    for key, value in model.state_dict().items():
        np.testing.assert_array_equal(fresh.state_dict()[key], value)


def test_csv_logger_writes_one_row_per_epoch(tmp_path):
    x, y = data(0, n=20)
    trainer = trainer_for(mlp(0), metrics=["accuracy"])
    path = tmp_path / "log.csv"
    trainer.fit(x, y, epochs=3, verbose=0, callbacks=[C.CSVLogger(path)])
    rows = list(csv.DictReader(path.open()))
    assert [r["epoch"] for r in rows] == ["0", "1", "2"]
    assert {"loss", "accuracy", "lr", "grad_norm"} <= set(rows[0])
    trainer.fit(x, y, epochs=2, verbose=0, callbacks=[C.CSVLogger(path, append=True)])
    rows = list(csv.DictReader(path.open()))
    assert len(rows) == 5  # appended without a second header
    assert math.isfinite(float(rows[-1]["loss"]))


def deep_sigmoid(depth=10, width=8, seed=0):
    rng = np.random.default_rng(seed)
    layers = []
    for _ in range(depth):
        layers += [nf.Dense(width, width, rng=rng), nf.Sigmoid()]
    layers.append(nf.Dense(width, 2, rng=rng))
    return nf.Sequential(*layers)


def test_gradient_monitor_names_the_layer_whose_gradient_vanishes():
    model = deep_sigmoid()
    rng = np.random.default_rng(0)
    x = rng.normal(size=(32, 8)).astype(np.float32)
    y = (x[:, 0] > 0).astype(np.int64)
    monitor = C.GradientMonitor(vanishing=1e-7)
    trainer = nf.Trainer(model, nf.CrossEntropyLoss(), nf.optim.SGD(model.parameters(), lr=0.1))
    with pytest.warns(C.GradientWarning) as caught:
        trainer.fit(x, y, epochs=1, batch_size=16, verbose=0, callbacks=[monitor])
    messages = [str(w.message) for w in caught]
    assert "vanishing gradient in layer '0' Dense(in_features=8" in messages[0]
    assert len(messages) == len(set(messages))  # once per layer, not once per step
    vanishing = monitor.flagged_layers("vanishing")
    assert vanishing[0] == "0" and "20" not in vanishing  # the first layer, not the last
    assert len(monitor.norms["0"]) == 2  # one norm per step
    assert monitor.norms["0"][0] < 1e-3 * monitor.norms["20"][0]
    assert "<- vanishing" in monitor.report().splitlines()[0]


def test_gradient_monitor_flags_exploding_gradients():
    model = mlp(0)  # Dense, Tanh, Dense: huge inputs saturate the tanh
    x, y = data(0, n=8)
    monitor = C.GradientMonitor(exploding=1.0, warn=False)
    trainer = trainer_for(model, lr=0.0)
    trainer.fit(x * 1e4, y, epochs=1, batch_size=8, verbose=0, callbacks=[monitor])
    assert monitor.flagged_layers("exploding") == ["2"]  # the last layer sees huge activations
    assert monitor.norms["2"][0] > 1.0 > monitor.norms["0"][0]
    flag = next(f for f in monitor.flags if f["kind"] == "exploding")
    assert flag["layer"] == "2" and flag["step"] == 1 and flag["norm"] > 1.0


def test_lambda_callback_rejects_unknown_hooks():
    with pytest.raises(TypeError, match=r"LambdaCallback: expected hooks among"):
        C.LambdaCallback(on_epoch_ended=print)
    assert "on_epoch_end" in repr(C.LambdaCallback(on_epoch_end=print))


def test_save_weights_npz_is_atomic_on_failure(tmp_path, monkeypatch):
    model = mlp(0)
    path = tmp_path / "w.npz"
    C.save_weights(model, path)
    before = path.read_bytes()

    def boom(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(np, "savez", boom)
    with pytest.raises(OSError, match="disk full"):
        C.save_weights(mlp(1), path)
    assert path.read_bytes() == before and len(list(tmp_path.iterdir())) == 1


def test_file_callbacks_fail_before_training_when_their_folder_is_missing(tmp_path):
    # attack campaign: a checkpoint into a missing folder failed after the first epoch
    x, y = data(0)
    model = mlp(0)
    before = model.state_dict()
    trainer = trainer_for(model)
    missing = tmp_path / "no" / "such"
    for cb, error, message in (
        (C.ModelCheckpoint(missing / "m-{epoch}.safetensors", monitor="loss"), FileNotFoundError,
         r"ModelCheckpoint: expected the checkpoint folder to exist"),
        (nf.TrainingCheckpoint(missing / "c.safetensors"), FileNotFoundError,
         r"TrainingCheckpoint: expected the checkpoint folder to exist"),
        (C.CSVLogger(missing / "log.csv"), FileNotFoundError, r"CSVLogger: could not open"),
    ):  # fmt: skip
        with pytest.raises(error, match=message):
            trainer.fit(x, y, epochs=2, verbose=0, callbacks=[cb])
    for k, v in model.state_dict().items():
        assert v.tobytes() == before[k].tobytes()
    npz = C.ModelCheckpoint(missing / "m.npz", monitor="loss")  # numpy's format makes folders
    trainer.fit(x, y, epochs=1, verbose=0, callbacks=[npz])
    assert (missing / "m.npz").exists()
