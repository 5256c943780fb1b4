"""Trainer with a two-input, two-output graph model (dict x and y), and save/load of graph
models."""

import numpy as np

import nnframe as nf


def two_io_data(n=800, seed=0):
    rng = np.random.default_rng(seed)
    a = rng.normal(size=(n, 4)).astype(np.float32)
    b = rng.normal(size=(n, 3)).astype(np.float32)
    kind = ((a[:, 0] + b[:, 0]) > 0).astype(np.int64)
    value = (a[:, 1] - 2 * b[:, 1]).astype(np.float32)[:, None]
    return {"a": a, "b": b}, {"kind": kind, "value": value}


def two_io_model():
    xa, xb = nf.Input((4,), name="a"), nf.Input((3,), name="b")
    h = nf.ReLU()(nf.Dense(7, 32, rng=0)(nf.Concatenate()(xa, xb)))
    return nf.Model(
        {"a": xa, "b": xb}, {"kind": nf.Dense(32, 2, rng=1)(h), "value": nf.Dense(32, 1, rng=2)(h)}
    )


def test_dict_inputs_two_outputs_train_to_a_stated_accuracy():
    x, y = two_io_data()
    model = two_io_model()
    trainer = nf.Trainer(
        model, {"kind": nf.CrossEntropyLoss(), "value": nf.MSELoss()},
        nf.optim.Adam(model.parameters(), lr=0.01),
        metrics={"kind": ["accuracy"], "value": ["rmse"]}, loss_weights={"value": 0.5},
    )  # fmt: skip
    history = trainer.fit(
        x, y, epochs=10, batch_size=32, validation_split=0.2, stratify=True, verbose=0, rng=0
    )
    for key in ("kind_loss", "value_loss", "kind_accuracy", "val_kind_accuracy", "val_value_rmse"):
        assert key in history
    assert history["val_kind_accuracy"][-1] >= 0.95
    assert history["val_value_rmse"][-1] <= 0.3
    pred = trainer.predict(x)
    assert pred["kind"].shape == (800, 2) and pred["value"].shape == (800, 1)
    result = trainer.evaluate(x, y)
    assert result["kind_accuracy"] >= 0.95
    np.testing.assert_allclose(result["loss"], result["kind_loss"] + 0.5 * result["value_loss"])


def test_lists_a_data_loader_and_sample_weights():
    x, y = two_io_data(200)
    model = two_io_model()
    trainer = nf.Trainer(
        model, [nf.CrossEntropyLoss(), None], nf.optim.SGD(model.parameters(), lr=0.05),
        metrics=[["accuracy"], []],
    )  # fmt: skip
    h = trainer.fit([x["a"], x["b"]], [y["kind"], y["value"]], epochs=2, verbose=0,
                    sample_weight=np.ones(200), class_weight={0: 1.0, 1: 2.0})  # fmt: skip
    assert "kind_loss" in h and "value_loss" not in h
    loader = nf.data.DataLoader(nf.data.ArrayDataset(x, y), 50, shuffle=True, rng=0)
    xb, yb = next(iter(loader))
    assert set(xb) == {"a", "b"} and xb["a"].shape == (50, 4) and yb["value"].shape == (50, 1)
    assert trainer.fit(loader, epochs=1, verbose=0)["loss"][0] > 0


def test_graph_models_save_and_load_with_identical_outputs(tmp_path):
    ids = nf.Input((None,), dtype=np.int64, name="ids")
    lengths = nf.Input((), dtype=np.int64, name="lengths")
    seq, (h, c) = nf.LSTM(6, 7, rng=1)(nf.Embedding(20, 6, rng=0)(ids), lengths=lengths)
    shared = nf.Dense(7, 7, rng=5)
    last = nf.TimeStep()(seq, lengths=lengths)
    both = nf.Concatenate()(shared(last), shared(nf.GetItem(-1)(h)), nf.GetItem(-1)(c))
    model = nf.Model({"ids": ids, "lengths": lengths}, {"out": nf.Dense(21, 2, rng=2)(both)})
    rng = np.random.default_rng(0)
    x, n = rng.integers(0, 20, size=(4, 6)), np.array([6, 3, 1, 4])
    nf.save(model, tmp_path / "m.safetensors")
    loaded = nf.load(tmp_path / "m.safetensors")
    np.testing.assert_array_equal(loaded(x, n)["out"], model(x, n)["out"])
    assert list(loaded.state_dict()) == list(model.state_dict())
    assert "Connected to" in str(nf.summary(loaded))
