"""Issue 12 (the training step) and issue 16 (everyday training ergonomics): overridable steps,
the trainer state in checkpoints, clipping in one place, explicit callback hooks, inference
under no_grad, Trainer without a loss for predict, load modes, progress output, History.plot,
target alignment and schedulers as callbacks. Each test fails on the code before these changes.
"""

import numpy as np
import pytest

import nnframe as nf
from nnframe.training import callbacks as C
from nnframe.training.checkpoint import load_checkpoint


def mlp(seed=0, d_in=3, hidden=8, out=3):
    return nf.Sequential(
        nf.Dense(d_in, hidden, rng=seed), nf.Tanh(), nf.Dense(hidden, out, rng=seed + 1)
    )


def blobs(seed=0, n=40, d=3, classes=3):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, classes, size=n)
    x = (rng.normal(size=(n, d)) + y[:, None]).astype(np.float32)
    return x, y.astype(np.int64)


def trainer_for(model, loss=None, lr=0.1, **opt):
    return nf.Trainer(
        model, loss or nf.CrossEntropyLoss(), nf.optim.SGD(model.parameters(), lr=lr, **opt)
    )


def flat(model):
    return np.concatenate([v.ravel() for v in model.state_dict().values()])


# ---------------------------------------------------------------------- issue 12: the step
def test_a_subclass_overrides_train_step_and_its_logs_reach_callbacks():
    seen = []

    class Counting(nf.Trainer):
        def train_step(self, batch):
            logs = super().train_step(batch)
            logs["rows_so_far"] = self.state.step * 10 + logs["batch_size"]
            return logs

    x, y = blobs()
    model = mlp()
    t = Counting(model, nf.CrossEntropyLoss(), nf.optim.SGD(model.parameters(), lr=0.1))
    cb = C.LambdaCallback(on_train_batch_end=lambda b, logs: seen.append(logs["rows_so_far"]))
    t.fit(x, y, epochs=2, batch_size=10, verbose=0, rng=0, callbacks=[cb])
    assert seen == [step * 10 + 10 for step in range(8)]  # 4 batches per epoch, 2 epochs
    assert t.state.step == 8 and t.state.epoch == 1 and t.state.epochs == 2


def test_the_default_train_step_is_the_fit_loop_bit_for_bit():
    x, y = blobs()
    a, b = mlp(), mlp()
    trainer_for(a, momentum=0.9).fit(x, y, epochs=1, batch_size=10, shuffle=False, verbose=0)
    tb = trainer_for(b, momentum=0.9)  # train_step runs outside fit too: a hand-written loop
    for i in range(0, 40, 10):
        logs = tb.train_step((x[i : i + 10], y[i : i + 10]))
        assert logs["rejected"] is None and logs["batch_size"] == 10
    np.testing.assert_array_equal(flat(a), flat(b))


def test_train_step_outside_fit_needs_an_optimizer_and_says_so():
    x, y = blobs()
    with pytest.raises(TypeError, match=r"Trainer.train_step: expected an optimizer, got None"):
        nf.Trainer(mlp(), nf.CrossEntropyLoss()).train_step((x, y))


def test_a_custom_test_step_changes_evaluate():
    class Halved(nf.Trainer):
        def test_step(self, batch):
            logs = super().test_step(batch)
            return {**logs, "loss": logs["loss"] / 2}

    x, y = blobs()
    model = mlp()
    plain = trainer_for(model).evaluate(x, y)["loss"]
    halved = Halved(model, nf.CrossEntropyLoss()).evaluate(x, y)["loss"]
    assert halved == pytest.approx(plain / 2)


def test_trainer_state_counters_survive_a_resume(tmp_path):
    x, y = blobs(n=40)
    x[5] = np.nan  # one rejected batch per epoch

    def run(epochs, resume=None):
        model = mlp()
        t = trainer_for(model)
        h = t.fit(x, y, epochs=epochs, batch_size=10, verbose=0, rng=0, nan_policy="skip_batch",
                  callbacks=[nf.TrainingCheckpoint(str(tmp_path / "c{epoch}.safetensors"))],
                  resume_from=resume)  # fmt: skip
        return t, h

    full, h_full = run(3)
    assert h_full["skipped_batches"] == [1.0, 2.0, 3.0] and full.state.step == 9
    resumed, h_res = run(3, resume=tmp_path / "c1.safetensors")
    assert h_res["skipped_batches"] == h_full["skipped_batches"]
    assert resumed.state.step == 9 and resumed.state.skipped_batches == 3
    np.testing.assert_array_equal(flat(full.model), flat(resumed.model))
    assert load_checkpoint(tmp_path / "c2.safetensors", mlp()).step == 6


def test_clipping_has_one_owner_the_optimizer():
    x, y = blobs()
    x = x * 100
    a, b = mlp(), mlp()
    ta = trainer_for(a, lr=0.5)
    ta.fit(x, y, epochs=1, batch_size=10, clip_norm=0.01, verbose=0, rng=0)
    assert ta.optimizer.clip_norm is None  # fit's shortcut is the optimizer's for the fit only
    tb = nf.Trainer(b, nf.CrossEntropyLoss(), nf.optim.SGD(b.parameters(), lr=0.5, clip_norm=0.01))
    tb.fit(x, y, epochs=1, batch_size=10, verbose=0, rng=0)
    np.testing.assert_array_equal(flat(a), flat(b))
    with pytest.raises(
        ValueError,
        match=r"Trainer.fit: expected clip_norm in one place, got "
        r"clip_norm=0.5 here and clip_norm=0.01 on the optimizer",
    ):
        tb.fit(x, y, epochs=1, clip_norm=0.5, verbose=0)
    with pytest.raises(ValueError, match=r"Trainer.fit: invalid clip_value=-1"):
        ta.fit(x, y, epochs=1, clip_value=-1, verbose=0)


# ---------------------------------------------------------------------- issue 12: hooks
def test_a_misspelled_hook_is_refused_when_the_class_is_created():
    with pytest.raises(
        TypeError, match=r"Typo: expected hook methods among .*got \['on_epoch_ends'\]"
    ):

        class Typo(C.Callback):
            def on_epoch_ends(self, epoch, logs):
                pass

    class Fine(C.Callback):  # every real hook, and helpers without the on_ prefix, are fine
        def on_test_batch_end(self, batch, logs):
            pass

        def helper(self):
            pass

    assert "on_predict_batch_end" in C.HOOKS and "on_train_batch_begin" in C.HOOKS
    assert not hasattr(C.CallbackList([], None), "on_epoch_ends")


def test_test_and_predict_hooks_are_called():
    events = []

    def record(hook):
        return lambda *args: events.append(hook)

    hooks = {h: record(h) for h in C.HOOKS if h.startswith(("on_test", "on_predict"))}
    x, y = blobs(n=20)
    t = trainer_for(mlp())
    t.fit(x, y, epochs=1, batch_size=10, validation_data=(x, y), verbose=0,
          callbacks=[C.LambdaCallback(**hooks)])  # fmt: skip
    batches = ["on_test_batch_begin", "on_test_batch_end"] * 2
    assert events == ["on_test_begin", *batches, "on_test_end"]
    events.clear()
    t.predict(x, batch_size=10, callbacks=[C.LambdaCallback(**hooks)])
    assert events == ["on_predict_begin"] + [
        "on_predict_batch_begin",
        "on_predict_batch_end",
    ] * 2 + ["on_predict_end"]


def test_on_batch_hooks_still_run_as_the_train_batch_hooks():
    calls = []

    class Old(C.Callback):
        def on_batch_end(self, batch, logs):
            calls.append(batch)

    x, y = blobs(n=20)
    trainer_for(mlp()).fit(x, y, epochs=1, batch_size=10, verbose=0, callbacks=[Old()])
    assert calls == [0, 1]


# ---------------------------------------------------------------------- issue 16: inference
def test_predict_and_evaluate_run_under_no_grad():
    model = mlp()
    modes = []
    model[0].register_forward_hook(lambda m, args, out: modes.append(nf.is_grad_enabled()))
    x, y = blobs(n=8)
    t = trainer_for(model)
    t.predict(x)
    t.evaluate(x, y)
    assert modes == [False, False]
    with pytest.raises(RuntimeError, match="no_grad"):
        model.backward(np.ones((8, 3), np.float32))
    t.fit(x, y, epochs=1, verbose=0)  # training saves again
    assert modes[-1] is True


def test_a_trainer_without_loss_or_optimizer_predicts():
    model = mlp()
    x, y = blobs(n=8)
    out = nf.Trainer(model).predict(x)
    assert out.shape == (8, 3)
    with pytest.raises(
        TypeError, match=r"^Trainer.fit: expected a loss and an optimizer, got None"
    ):
        nf.Trainer(model).fit(x, y, verbose=0)
    with pytest.raises(TypeError, match=r"^Trainer.fit: expected an optimizer, got None"):
        nf.Trainer(model, nf.CrossEntropyLoss()).fit(x, y, verbose=0)
    with pytest.raises(TypeError, match=r"^Trainer.evaluate: expected a loss, got None"):
        nf.Trainer(model).evaluate(x, y)
    assert nf.Trainer(model, nf.CrossEntropyLoss()).evaluate(x, y)["loss"] > 0


def test_loaded_models_are_in_eval_mode_and_fit_trains(tmp_path):
    model = nf.Sequential(nf.Dense(3, 8, rng=0), nf.Dropout(0.5), nf.Dense(8, 3, rng=1))
    nf.save(model, tmp_path / "m.safetensors")
    loaded = nf.load(tmp_path / "m.safetensors")
    assert not loaded.training and not loaded[1].training
    x, y = blobs(n=8)
    np.testing.assert_array_equal(loaded(x), loaded(x))  # no dropout noise
    t = trainer_for(loaded)
    t.fit(
        x,
        y,
        epochs=1,
        verbose=0,
        callbacks=[nf.TrainingCheckpoint(str(tmp_path / "c.safetensors"))],
    )
    assert loaded.training  # fit switches to training and leaves it there
    assert not load_checkpoint(tmp_path / "c.safetensors").model.training  # a new model: eval
    kept = mlp().eval()
    nf.save_weights(mlp(), tmp_path / "w.safetensors")
    assert nf.load_weights(kept, tmp_path / "w.safetensors").training is False  # mode kept
    assert nf.load_weights(mlp(), tmp_path / "w.safetensors").training is True


# ---------------------------------------------------------------------- issue 16: progress
def fit_with_validation(verbose=1):
    x, y = blobs(n=20)
    t = nf.Trainer(mlp(), nf.CrossEntropyLoss(), nf.optim.SGD(mlp().parameters(), lr=0.1),
                   metrics=["accuracy", "f1_score"])  # fmt: skip
    t.optimizer = nf.optim.SGD(t.model.parameters(), lr=0.1)
    t.fit(x, y, epochs=2, batch_size=5, verbose=verbose, validation_data=(x, y))


def test_a_narrow_terminal_gets_every_metric_on_a_line(monkeypatch, capsys):
    import sys

    monkeypatch.setattr(sys.stderr, "isatty", lambda: True, raising=False)
    monkeypatch.setenv("COLUMNS", "40")
    fit_with_validation()
    out = capsys.readouterr().out.splitlines()
    assert len(out) == 2 and out[1].startswith("epoch 2/2")
    assert all(k in out[1] for k in ("loss", "f1_score", "val_accuracy", "val_f1_score"))


def test_a_wide_terminal_shows_the_bar_only(monkeypatch, capsys):
    import sys

    monkeypatch.setattr(sys.stderr, "isatty", lambda: True, raising=False)
    monkeypatch.setenv("COLUMNS", "1000")
    fit_with_validation()
    captured = capsys.readouterr()
    assert captured.out == "" and "val_f1_score" in captured.err


def test_a_notebook_gets_a_bar_and_one_line_per_epoch(monkeypatch, capsys):
    import nnframe.training.trainer as training

    monkeypatch.setattr(training, "_in_notebook", lambda: True)
    fit_with_validation()
    captured = capsys.readouterr()
    assert "4/4" in captured.err  # the bar was drawn (tqdm.auto: a widget in a real notebook)
    assert len(captured.out.splitlines()) == 2 and "val_f1_score" in captured.out


def test_history_plot_without_a_path_returns_a_figure():
    pytest.importorskip("matplotlib")
    from matplotlib.figure import Figure

    x, y = blobs(n=20)
    h = trainer_for(mlp()).fit(x, y, epochs=2, verbose=0)
    fig = h.plot()
    assert isinstance(fig, Figure) and fig.axes


# ---------------------------------------------------------------------- issue 16: shapes
def test_a_1d_target_is_aligned_with_a_single_column_output():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(30, 3)).astype(np.float32)
    y = x.sum(axis=1).astype(np.float32)  # 1-D, as load_diabetes gives it
    a, b = mlp(out=1), mlp(out=1)
    ha = trainer_for(a, nf.MSELoss(), lr=0.01).fit(x, y, epochs=2, batch_size=8, verbose=0, rng=0)
    hb = trainer_for(b, nf.MSELoss(), lr=0.01).fit(x, y.reshape(-1, 1), epochs=2, batch_size=8,
                                                   verbose=0, rng=0)  # fmt: skip
    assert ha["loss"] == hb["loss"]
    np.testing.assert_array_equal(flat(a), flat(b))
    t = trainer_for(a, nf.MSELoss())
    assert t.evaluate(x, y) == t.evaluate(x, y.reshape(-1, 1))


@pytest.mark.parametrize("labels", ["column", "float_column", "float"])
def test_cross_entropy_accepts_unambiguous_labels(labels):
    x, y = blobs()
    given = {"column": y.reshape(-1, 1), "float_column": y.reshape(-1, 1).astype(np.float32),
             "float": y.astype(np.float64)}[labels]  # fmt: skip
    a, b = mlp(), mlp()
    ta, tb = trainer_for(a), trainer_for(b)
    ta.metrics = tb.metrics = [nf.metrics.get("accuracy")]
    ha = ta.fit(x, given, epochs=2, batch_size=8, verbose=0, rng=0)
    hb = tb.fit(x, y, epochs=2, batch_size=8, verbose=0, rng=0)
    assert ha["loss"] == hb["loss"] and ha["accuracy"] == hb["accuracy"]
    np.testing.assert_array_equal(flat(a), flat(b))


def test_ambiguous_targets_are_refused_with_the_fix():
    x, y = blobs(n=8)
    with pytest.raises(TypeError, match=r"class indices must be whole numbers"):
        trainer_for(mlp()).fit(x, y + 0.5, verbose=0)
    with pytest.raises(nf.ShapeError, match=r"reshape the target: y.reshape\(-1, 3\)"):
        trainer_for(mlp(), nf.MSELoss()).fit(x, np.zeros((8, 3, 1), np.float32), verbose=0)


def test_a_scheduler_is_accepted_in_callbacks():
    x, y = blobs(n=20)
    model = mlp()
    opt = nf.optim.SGD(model.parameters(), lr=0.1)
    h = nf.Trainer(model, nf.CrossEntropyLoss(), opt).fit(
        x, y, epochs=3, verbose=0, callbacks=[nf.optim.StepLR(opt, step_size=1, gamma=0.5)]
    )
    assert h["lr"] == pytest.approx([0.1, 0.05, 0.025])
    with pytest.raises(TypeError, match=r"callbacks.ReduceLROnPlateau"):
        nf.Trainer(model, nf.CrossEntropyLoss(), opt).fit(
            x, y, verbose=0, callbacks=[nf.optim.ReduceLROnPlateau(opt)]
        )
    with pytest.raises(TypeError, match=r"^Trainer.fit: expected Callback objects .*got int"):
        nf.Trainer(model, nf.CrossEntropyLoss(), opt).fit(x, y, verbose=0, callbacks=[3])


def test_a_graph_model_gets_its_targets_aligned_per_output():
    from tests.test_graph_trainer_features import data, graph_model
    from tests.test_graph_trainer_features import trainer_for as graph_trainer

    x, y = data()
    loose = {"kind": y["kind"].reshape(-1, 1), "value": y["value"].ravel()}  # (N, 1) and (N,)
    a, b = graph_model(), graph_model()
    ha = graph_trainer(a).fit(x, loose, epochs=2, batch_size=16, verbose=0, rng=0)
    hb = graph_trainer(b).fit(x, y, epochs=2, batch_size=16, verbose=0, rng=0)
    assert ha.keys() == hb.keys()
    assert all(np.array_equal(ha[k], hb[k]) for k in hb.keys() if k != "time")
    np.testing.assert_array_equal(flat(a), flat(b))
