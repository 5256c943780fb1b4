"""The training stack with graph models: checkpoints and bit-identical resume, nan_policy,
callbacks monitoring per-output metrics, and nf.save/nf.load of a trained graph model."""

import numpy as np
import pytest

import nnframe as nf


def graph_model(seed=0, dropout=0.2):
    """Dict inputs, two outputs, a shared layer, a nested graph model, BatchNorm and Dropout
    (so resume must restore buffers and the dropout generator)."""
    xa, xb = nf.Input((4,), name="a"), nf.Input((3,), name="b")
    inner_in = nf.Input((8,), name="h")
    inner = nf.Model(inner_in, nf.Tanh()(nf.Dense(8, 8, rng=seed + 1)(inner_in)), name="block")
    h = nf.ReLU()(nf.Dense(7, 8, rng=seed)(nf.Concatenate()(xa, xb)))
    h = nf.Dropout(dropout, rng=seed + 2)(nf.BatchNorm1d(8)(h))
    shared = nf.Dense(8, 8, rng=seed + 3)
    h = nf.Add()(shared(h), shared(inner(h)))
    outputs = {"kind": nf.Dense(8, 2, rng=seed + 4)(h), "value": nf.Dense(8, 1, rng=seed + 5)(h)}
    return nf.Model({"a": xa, "b": xb}, outputs)


def data(n=96, seed=0):
    rng = np.random.default_rng(seed)
    a = rng.normal(size=(n, 4)).astype(np.float32)
    b = rng.normal(size=(n, 3)).astype(np.float32)
    kind = ((a[:, 0] + b[:, 0]) > 0).astype(np.int64)
    value = (a[:, 1] - 2 * b[:, 1]).astype(np.float32)[:, None]
    return {"a": a, "b": b}, {"kind": kind, "value": value}


def trainer_for(model, lr=0.05):
    opt = nf.optim.SGD(model.parameters(), lr=lr, momentum=0.9)
    return nf.Trainer(
        model, {"kind": nf.CrossEntropyLoss(), "value": nf.MSELoss()}, opt,
        metrics={"kind": ["accuracy"], "value": ["rmse"]}, loss_weights={"value": 0.5},
    )  # fmt: skip


def flat(model):
    return np.concatenate([v.ravel() for v in model.state_dict().values()])


# ---------------------------------------------------------------------- checkpoints and resume
def test_fit_resumes_bit_identically(tmp_path):
    x, y = data()
    kwargs = dict(batch_size=16, validation_split=0.25, rng=7, verbose=0)

    def callbacks(opt):
        sched = nf.optim.StepLR(opt, step_size=1, gamma=0.7)
        return [
            nf.callbacks.LearningRateScheduler(sched),
            nf.callbacks.EarlyStopping(monitor="val_kind_loss", patience=50),
        ]

    straight = trainer_for(graph_model())
    history = straight.fit(x, y, epochs=4, callbacks=callbacks(straight.optimizer), **kwargs)

    first = trainer_for(graph_model())
    ckpt = tmp_path / "ckpt.safetensors"
    cbs = [*callbacks(first.optimizer), nf.TrainingCheckpoint(ckpt, every=2)]
    first.fit(x, y, epochs=2, callbacks=cbs, **kwargs)
    resumed = trainer_for(graph_model(seed=10))  # other initial weights: all come from the file
    cbs = callbacks(resumed.optimizer)
    resumed_history = resumed.fit(x, y, epochs=4, callbacks=cbs, resume_from=ckpt, **kwargs)

    np.testing.assert_array_equal(flat(resumed.model), flat(straight.model))
    for key in ("loss", "kind_loss", "value_rmse", "val_kind_accuracy", "val_value_loss"):
        assert resumed_history[key] == history[key], key
    assert resumed.optimizer.param_groups[0]["lr"] == straight.optimizer.param_groups[0]["lr"]
    assert cbs[1].best == min(history["val_kind_loss"])


# ---------------------------------------------------------------------- nan_policy
def test_nan_policy_skip_batch_skips_exactly_the_poisoned_batch():
    x, y = data(32)
    x["b"][20, 1] = np.nan  # batch 2 of 4 (batch_size 8, no shuffling), in the second input
    kw = dict(epochs=2, batch_size=8, shuffle=False, verbose=0)
    # no dropout: the rejected batch's forward draws its masks, so the stream would move on
    trainer = trainer_for(graph_model(dropout=0.0))
    history = trainer.fit(x, y, nan_policy="skip_batch", **kw)
    assert history["skipped_batches"] == [1, 2] and history.stop_reason is None  # cumulative
    assert np.isfinite(history["loss"]).all() and np.isfinite(history["value_rmse"]).all()
    # the same steps as training on the other three batches
    keep = np.r_[0:16, 24:32]
    reference = trainer_for(graph_model(dropout=0.0))
    reference.fit({k: v[keep] for k, v in x.items()}, {k: v[keep] for k, v in y.items()}, **kw)
    np.testing.assert_array_equal(flat(trainer.model), flat(reference.model))
    with pytest.raises(FloatingPointError, match="finite"):
        trainer_for(graph_model()).fit(x, y, **kw)  # the default policy raises


# ---------------------------------------------------------------------- callbacks
def test_early_stopping_and_checkpoint_on_a_per_output_metric(tmp_path):
    x, y = data(160, seed=3)
    val = data(64, seed=4)
    trainer = trainer_for(graph_model())
    stop = nf.callbacks.EarlyStopping(
        monitor="val_kind_accuracy", patience=2, restore_best_weights=True
    )
    best = nf.callbacks.ModelCheckpoint(
        tmp_path / "best-{epoch}.safetensors", monitor="val_kind_accuracy", save_best_only=True
    )
    history = trainer.fit(
        x, y, epochs=40, batch_size=16, validation_data=val, callbacks=[stop, best], verbose=0,
        rng=0,
    )  # fmt: skip
    accuracy = history["val_kind_accuracy"]
    best_epoch = int(np.argmax(accuracy))  # the first best: mode 'max' from the name
    assert stop.best == accuracy[best_epoch] == max(accuracy)
    assert len(accuracy) < 40 and len(accuracy) == best_epoch + 1 + 2  # stopped by patience
    assert best.last_saved == str(tmp_path / f"best-{best_epoch + 1}.safetensors")
    # the restored weights and the best checkpoint are the best epoch's model
    restored = trainer.evaluate(*val)["kind_accuracy"]
    assert restored == accuracy[best_epoch]
    from_file = graph_model(seed=20)
    nf.load_weights(from_file, best.last_saved)
    np.testing.assert_array_equal(flat(from_file), flat(trainer.model))
    # an unknown per-output key fails before training, listing the keys there will be
    with pytest.raises(KeyError, match="val_kind_accuracy"):
        trainer_for(graph_model()).fit(
            x, y, epochs=1, validation_data=val, verbose=0,
            callbacks=[nf.callbacks.EarlyStopping(monitor="val_kind_acc")],
        )  # fmt: skip


# ---------------------------------------------------------------------- saving
def test_a_trained_graph_model_saves_loads_and_trains_on_identically(tmp_path):
    x, y = data()
    trainer = trainer_for(graph_model())
    trainer.fit(x, y, epochs=2, batch_size=16, verbose=0, rng=0)
    nf.save(trainer.model, tmp_path / "model.safetensors")
    loaded = nf.load(tmp_path / "model.safetensors")
    assert type(loaded) is nf.Model and loaded.output_names == ["kind", "value"]
    assert list(loaded.layers) == list(trainer.model.layers)
    for m in (loaded, trainer.model):
        m.eval()
    out, expected = loaded(x), trainer.model(x)
    for k in ("kind", "value"):
        np.testing.assert_array_equal(out[k], expected[k])
    np.testing.assert_array_equal(flat(loaded), flat(trainer.model))  # BatchNorm buffers too
    # the loaded model keeps one shared Dense: training it continues like the original
    assert len(list(loaded.parameters())) == len(list(trainer.model.parameters()))
    again, again_orig = trainer_for(loaded), trainer_for(trainer.model)  # fresh optimizers
    loaded.train()
    trainer.model.train()
    for m in (loaded, trainer.model):  # the same dropout stream in both
        for layer in m.modules():
            if isinstance(layer, nf.Dropout):
                layer.rng = np.random.default_rng(5)
    again.fit(x, y, epochs=1, batch_size=16, verbose=0, rng=1, shuffle=False)
    again_orig.fit(x, y, epochs=1, batch_size=16, verbose=0, rng=1, shuffle=False)
    np.testing.assert_array_equal(flat(loaded), flat(trainer.model))
