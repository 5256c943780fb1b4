"""Trainer.fit / evaluate / predict and History: exact equivalence with the hand-written loop,
weighting, validation, clipping, NaN handling, progress output."""

import math
import os

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from scipy import sparse

import nnframe as nf
from nnframe.training.callbacks import LambdaCallback
from nnframe.training.data import ArrayDataset, DataLoader
from tests.strategies import seeds

CHECKED_MODULES = []  # no Module or Loss here


def mlp(seed=0, d_in=3, hidden=8, classes=3):
    rng = np.random.default_rng(seed)
    return nf.Sequential(
        nf.Dense(d_in, hidden, rng=rng), nf.Tanh(), nf.Dense(hidden, classes, rng=rng)
    )


def blobs(seed=0, n=60, d=3, classes=3):
    rng = np.random.default_rng(seed)
    y = np.arange(n) % classes
    x = rng.normal(size=(n, d)).astype(np.float32) + y[:, None].astype(np.float32)
    return x, y.astype(np.int64)


def flat_params(model):
    return np.concatenate([p.data.ravel() for p in model.parameters()])


@given(seed=seeds, batch_size=st.integers(1, 17), momentum=st.sampled_from([0.0, 0.9]))
def test_fit_reproduces_the_hand_written_loop_exactly(seed, batch_size, momentum):
    x, y = blobs(seed % 1000, n=37)
    hand, auto = mlp(seed % 7), mlp(seed % 7)
    loss_fn = nf.CrossEntropyLoss()
    opt = nf.optim.SGD(hand.parameters(), lr=0.1, momentum=momentum)
    order = np.random.default_rng(seed).permutation(len(x))
    for i in range(0, len(x), batch_size):
        idx = order[i : i + batch_size]
        opt.zero_grad()
        loss = loss_fn(hand(x[idx]), y[idx])
        hand.backward(loss_fn.backward())
        opt.step()

    trainer = nf.Trainer(
        auto, nf.CrossEntropyLoss(), nf.optim.SGD(auto.parameters(), lr=0.1, momentum=momentum)
    )
    history = trainer.fit(
        x, y, epochs=1, batch_size=batch_size, verbose=0, rng=np.random.default_rng(seed)
    )
    np.testing.assert_array_equal(flat_params(auto), flat_params(hand))  # bit for bit
    assert len(history) == 1 and np.isfinite(history["loss"][0]) and np.isfinite(loss)


def grads_of_first_step(x, y, **fit_kwargs):
    """The gradients after the first backward of fit (one full batch, no shuffling)."""
    model = mlp(3)
    seen = {}

    def grab(batch, logs):
        if not seen:
            seen["g"] = [p.grad.copy() for p in model.parameters()]

    trainer = nf.Trainer(model, nf.CrossEntropyLoss(), nf.optim.SGD(model.parameters(), lr=0.0))
    trainer.fit(
        x, y, batch_size=len(x), shuffle=False, verbose=0,
        callbacks=[LambdaCallback(on_after_backward=grab)], **fit_kwargs,
    )  # fmt: skip
    return seen["g"]


def hand_grads(x, y, sample_weight=None):
    model = mlp(3)
    loss_fn = nf.CrossEntropyLoss()
    loss_fn(model(x), y, sample_weight=sample_weight)
    model.backward(loss_fn.backward())
    return [p.grad.copy() for p in model.parameters()]


def test_sample_weight_and_class_weight_change_the_gradient_as_defined():
    x, y = blobs(1, n=30)
    w = np.linspace(0.1, 2.0, len(x))
    for got, want in zip(grads_of_first_step(x, y, sample_weight=w), hand_grads(x, y, w)):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-7)
    # class_weight is per-sample weights by class ...
    cw = {0: 3.0, 1: 0.5, 2: 1.0}
    per_sample = np.array([cw[c] for c in y])
    for got, want in zip(grads_of_first_step(x, y, class_weight=cw), hand_grads(x, y, per_sample)):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-7)
    # ... multiplied with sample_weight when both are given
    both = grads_of_first_step(x, y, class_weight=cw, sample_weight=w)
    for got, want in zip(both, hand_grads(x, y, per_sample * w)):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-7)
    # and it is a real change: the unweighted gradient differs
    plain = grads_of_first_step(x, y)
    assert not np.allclose(plain[0], both[0])


def test_class_weight_with_one_hot_targets_and_mse():
    x, y = blobs(2, n=12)
    target = nf.data.one_hot(y, 3)
    model = mlp(1)
    grads = {}

    def grab(batch, logs):
        grads["g"] = model.parameters()[0].grad.copy()

    trainer = nf.Trainer(model, nf.MSELoss(), nf.optim.SGD(model.parameters(), lr=0.0))
    trainer.fit(
        x, target, batch_size=12, shuffle=False, verbose=0, class_weight=[2.0, 1.0, 1.0],
        callbacks=[LambdaCallback(on_after_backward=grab)],
    )  # fmt: skip
    ref, loss = mlp(1), nf.MSELoss()
    loss(ref(x), target, sample_weight=np.where(y == 0, 2.0, 1.0))
    ref.backward(loss.backward())
    np.testing.assert_allclose(grads["g"], ref.parameters()[0].grad, rtol=1e-5, atol=1e-7)


@given(seed=seeds, split=st.sampled_from([0.2, 0.25, 0.3]))
def test_validation_split_is_stratified_when_asked(seed, split):
    rng = np.random.default_rng(seed)
    y = np.repeat([0, 1, 2], [50, 30, 20])
    rng.shuffle(y)
    x = rng.normal(size=(100, 3)).astype(np.float32)
    model = mlp(0)
    trainer = nf.Trainer(model, nf.CrossEntropyLoss(), nf.optim.SGD(model.parameters(), lr=0.01))
    history = trainer.fit(
        x, y, validation_split=split, stratify=True, verbose=0, rng=seed, batch_size=50
    )
    train_idx, val_idx = trainer.split_indices
    assert len(val_idx) == round(split * 100)
    assert sorted(np.concatenate([train_idx, val_idx]).tolist()) == list(range(100))
    expected = np.array([50, 30, 20]) * split
    assert np.all(np.abs(np.bincount(y[val_idx], minlength=3) - expected) <= 1)
    assert "val_loss" in history and len(history["val_loss"]) == 1


def test_validation_split_without_stratify_is_random_and_disjoint():
    x, y = blobs(0, n=40)
    model = mlp(0)
    trainer = nf.Trainer(model, nf.CrossEntropyLoss(), nf.optim.SGD(model.parameters(), lr=0.01))
    trainer.fit(x, y, validation_split=0.25, verbose=0, rng=1)
    train_idx, val_idx = trainer.split_indices
    assert len(val_idx) == 10 and not set(train_idx) & set(val_idx)
    assert list(val_idx) != list(range(30, 40))  # random, not the last rows


def test_history_records_loss_metrics_validation_lr_and_gradient_norms():
    x, y = blobs(0, n=60)
    model = mlp(0)
    opt = nf.optim.SGD(model.parameters(), lr=0.2, momentum=0.9)

    def hits(y_true, y_pred):
        return float((y_pred.argmax(1) == y_true).mean())

    trainer = nf.Trainer(model, nf.CrossEntropyLoss(), opt, metrics=["accuracy", hits])
    history = trainer.fit(
        x, y, epochs=4, batch_size=16, validation_data=(x, y), verbose=0, rng=0,
        callbacks=[nf.callbacks.LearningRateScheduler(nf.optim.StepLR(opt, 2, gamma=0.5))],
    )  # fmt: skip
    for key in ["loss", "accuracy", "hits", "val_loss", "val_accuracy", "val_hits", "lr",
                "grad_norm", "grad_norm_max", "time"]:  # fmt: skip
        assert len(history[key]) == 4, key
    assert history["lr"] == [0.2, 0.2, 0.1, 0.1]
    assert all(0 < g <= m for g, m in zip(history["grad_norm"], history["grad_norm_max"]))
    np.testing.assert_allclose(history["accuracy"], history["hits"], atol=1e-12)
    assert history["loss"][-1] < history["loss"][0]
    final = trainer.evaluate(x, y)
    assert final["loss"] == pytest.approx(history["val_loss"][-1], rel=1e-6)
    assert history.stop_reason is None
    with pytest.raises(KeyError, match=r"History: expected one of"):
        history["nope"]


def test_clip_norm_bounds_each_update():
    x, y = blobs(0, n=32)
    x = x * 100  # large gradients
    model = mlp(0)
    before = flat_params(model)
    trainer = nf.Trainer(model, nf.CrossEntropyLoss(), nf.optim.SGD(model.parameters(), lr=0.5))
    history = trainer.fit(x, y, batch_size=32, clip_norm=0.01, verbose=0, shuffle=False)
    step = np.linalg.norm(flat_params(model) - before)
    assert history["grad_norm"][0] > 0.01  # recorded before clipping
    assert step <= 0.5 * 0.01 * (1 + 1e-4)


def test_clip_value_bounds_each_element():
    x, y = blobs(0, n=32)
    model = mlp(0)
    before = flat_params(model)
    trainer = nf.Trainer(model, nf.CrossEntropyLoss(), nf.optim.SGD(model.parameters(), lr=1.0))
    trainer.fit(x * 100, y, batch_size=32, clip_value=1e-3, verbose=0, shuffle=False)
    assert np.max(np.abs(flat_params(model) - before)) <= 1e-3 * (1 + 1e-5)


def nan_data():
    x, y = blobs(0, n=32)
    x[20] = np.nan  # batch 2 of 4 (batch_size 8, no shuffling)
    return x, y


def params_after_two_batches(x, y):
    model = mlp(0)
    opt = nf.optim.SGD(model.parameters(), lr=0.1)
    loss_fn = nf.CrossEntropyLoss()
    for i in (0, 8):
        opt.zero_grad()
        loss_fn(model(x[i : i + 8]), y[i : i + 8])
        model.backward(loss_fn.backward())
        opt.step()
    return flat_params(model)


def fit_nan(policy, callbacks=()):
    x, y = nan_data()
    model = mlp(0)
    trainer = nf.Trainer(model, nf.CrossEntropyLoss(), nf.optim.SGD(model.parameters(), lr=0.1))
    kwargs = dict(batch_size=8, shuffle=False, verbose=0, nan_policy=policy, callbacks=callbacks)
    return trainer, model, trainer.fit(x, y, epochs=2, **kwargs)


def test_nan_policy_raise_never_applies_the_step():
    x, y = nan_data()
    model = mlp(0)
    trainer = nf.Trainer(model, nf.CrossEntropyLoss(), nf.optim.SGD(model.parameters(), lr=0.1))
    with pytest.raises(FloatingPointError, match=r"Trainer.fit: expected a finite loss, got nan"):
        trainer.fit(x, y, batch_size=8, shuffle=False, verbose=0)
    np.testing.assert_array_equal(flat_params(model), params_after_two_batches(x, y))


def test_nan_policy_stop_keeps_the_last_good_parameters():
    trainer, model, history = fit_nan("stop")
    x, y = nan_data()
    np.testing.assert_array_equal(flat_params(model), params_after_two_batches(x, y))
    assert "epoch 1, batch 3" in history.stop_reason and len(history) == 1


def test_nan_policy_skip_batch_goes_on():
    trainer, model, history = fit_nan("skip_batch")
    assert np.all(np.isfinite(flat_params(model)))
    assert history["skipped_batches"] == [1, 2] and history.stop_reason is None
    assert np.isfinite(history["loss"]).all()


def test_nan_gradient_is_caught_even_when_the_loss_is_finite():
    class Poison(nf.Module):  # finite forward, NaN gradient
        def forward(self, x):
            return x

        def backward(self, grad_output):
            return grad_output * np.nan

    model = nf.Sequential(nf.Dense(3, 3, rng=0), Poison(), nf.Dense(3, 3, rng=1))
    before = flat_params(model)
    trainer = nf.Trainer(model, nf.CrossEntropyLoss(), nf.optim.SGD(model.parameters(), lr=0.1))
    x, y = blobs(0, n=8)
    with pytest.raises(FloatingPointError, match=r"finite gradient norm"):
        trainer.fit(x, y, batch_size=8, verbose=0)
    np.testing.assert_array_equal(flat_params(model), before)
    assert np.all(np.isfinite(model.parameters()[0].grad))  # no poisoned gradient left behind


def test_terminate_on_nan_stops_without_raising():
    trainer, model, history = fit_nan("raise", callbacks=[nf.callbacks.TerminateOnNaN()])
    x, y = nan_data()
    np.testing.assert_array_equal(flat_params(model), params_after_two_batches(x, y))
    assert history.stop_reason.startswith("TerminateOnNaN") and len(history) == 1


def test_fit_on_a_dataloader_and_on_sparse_inputs():
    x, y = blobs(0, n=40)
    w = np.ones(len(x))
    model = mlp(0)
    trainer = nf.Trainer(model, nf.CrossEntropyLoss(), nf.optim.SGD(model.parameters(), lr=0.1))
    loader = DataLoader(ArrayDataset(x, y, w), batch_size=8, shuffle=True, rng=0)
    history = trainer.fit(loader, epochs=2, validation_data=loader, verbose=0)
    assert len(history["val_loss"]) == 2

    xs = sparse.random(40, 6, density=0.3, format="csr", random_state=0, dtype=np.float32)
    model = nf.Sequential(nf.Dense(6, 4, rng=0), nf.Tanh(), nf.Dense(4, 3, rng=1))
    trainer = nf.Trainer(model, nf.CrossEntropyLoss(), nf.optim.SGD(model.parameters(), lr=0.1))
    trainer.fit(xs, y, epochs=2, batch_size=8, validation_split=0.2, verbose=0, rng=0)
    np.testing.assert_allclose(trainer.predict(xs), model(xs), rtol=1e-6)


def test_evaluate_and_predict_are_batched_and_restore_the_mode():
    x, y = blobs(0, n=50)
    model = mlp(0)
    trainer = nf.Trainer(model, nf.CrossEntropyLoss(), nf.optim.SGD(model.parameters(), lr=0.1),
                         metrics="accuracy")  # fmt: skip
    model.train()
    out = trainer.predict(x, batch_size=7)
    assert model.training
    np.testing.assert_allclose(out, model(x), rtol=1e-5, atol=1e-6)
    model.eval()
    result = trainer.evaluate(x, y, batch_size=7)
    assert not model.training
    assert result["loss"] == pytest.approx(nf.CrossEntropyLoss()(model(x), y), rel=1e-5)
    assert result["accuracy"] == nf.metrics.accuracy(y, model(x))


def test_predict_uses_eval_mode():
    modes = []

    class Spy(nf.Module):
        def forward(self, x):
            modes.append(self.training)
            return x

        def backward(self, grad_output):
            return grad_output

    model = nf.Sequential(nf.Dense(3, 3, rng=0), Spy())
    trainer = nf.Trainer(model, nf.MSELoss(), nf.optim.SGD(model.parameters(), lr=0.1))
    trainer.predict(np.zeros((4, 3), np.float32))
    assert modes == [False] and model.training


def test_verbose_two_prints_one_line_per_epoch_and_non_tty_prints_lines_too(capsys):
    x, y = blobs(0, n=20)
    model = mlp(0)
    trainer = nf.Trainer(model, nf.CrossEntropyLoss(), nf.optim.SGD(model.parameters(), lr=0.1),
                         metrics=["accuracy"])  # fmt: skip
    trainer.fit(x, y, epochs=3, verbose=2)
    out = capsys.readouterr().out.strip().splitlines()
    assert len(out) == 3 and out[0].startswith("epoch 1/3") and "accuracy" in out[0]
    # pytest's streams are not terminals: verbose=1 prints one line per epoch, no bar
    # (issue 16: it used to print nothing when piped or in CI)
    trainer.fit(x, y, epochs=2, verbose=1)
    captured = capsys.readouterr()
    lines = captured.out.strip().splitlines()
    assert len(lines) == 2 and lines[1].startswith("epoch 2/2") and captured.err == ""


def test_progress_bar_on_a_terminal(monkeypatch, capsys):
    import sys

    monkeypatch.setattr(sys.stderr, "isatty", lambda: True, raising=False)
    x, y = blobs(0, n=20)
    model = mlp(0)
    trainer = nf.Trainer(model, nf.CrossEntropyLoss(), nf.optim.SGD(model.parameters(), lr=0.1))
    trainer.fit(x, y, epochs=1, batch_size=5, verbose=1, validation_data=(x, y))
    err = capsys.readouterr().err
    assert "epoch 1/1" in err and "4/4" in err and "val_loss" in err


def test_history_plot_writes_a_png(tmp_path):
    pytest.importorskip("matplotlib")
    x, y = blobs(0, n=20)
    model = mlp(0)
    trainer = nf.Trainer(model, nf.CrossEntropyLoss(), nf.optim.SGD(model.parameters(), lr=0.1),
                         metrics=["accuracy"])  # fmt: skip
    history = trainer.fit(x, y, epochs=3, validation_split=0.25, verbose=0, rng=0)
    path = history.plot(tmp_path / "sub" / "curves.png")
    assert (tmp_path / "sub" / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert path == tmp_path / "sub" / "curves.png"


def test_history_plot_says_what_to_install(monkeypatch, tmp_path):
    import sys

    history = nf.History()
    history.record(0, {"loss": 1.0})
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)
    monkeypatch.setitem(sys.modules, "matplotlib.backends.backend_agg", None)
    with pytest.raises(ImportError, match=r"pip install 'nnframe\[plot\]'"):
        history.plot(tmp_path / "x.png")


def test_history_fills_missing_keys_with_nan():
    h = nf.History()
    h.record(0, {"loss": 1.0})
    h.record(1, {"loss": 0.5, "val_loss": 0.7})
    h.record(2, {"loss": 0.4})
    assert math.isnan(h["val_loss"][0]) and h["val_loss"][1] == 0.7 and math.isnan(h["val_loss"][2])


def test_callbacks_see_every_hook_in_order():
    events = []
    hooks = {
        name: (lambda hook: lambda *args: events.append(hook))(name)
        for name in ["on_train_begin", "on_epoch_begin", "on_batch_begin", "on_after_backward",
                     "on_batch_end", "on_epoch_end", "on_train_end"]
    }  # fmt: skip
    x, y = blobs(0, n=10)
    model = mlp(0)
    trainer = nf.Trainer(model, nf.CrossEntropyLoss(), nf.optim.SGD(model.parameters(), lr=0.1))
    trainer.fit(x, y, epochs=2, batch_size=5, verbose=0, callbacks=[LambdaCallback(**hooks)])
    batch = ["on_batch_begin", "on_after_backward", "on_batch_end"]
    epoch = ["on_epoch_begin", *batch, *batch, "on_epoch_end"]
    assert events == ["on_train_begin", *epoch, *epoch, "on_train_end"]


def test_a_callback_can_stop_training():
    def stop(epoch, logs):
        trainer.stop_training = True

    x, y = blobs(0, n=10)
    model = mlp(0)
    trainer = nf.Trainer(model, nf.CrossEntropyLoss(), nf.optim.SGD(model.parameters(), lr=0.1))
    history = trainer.fit(x, y, epochs=10, verbose=0, callbacks=[LambdaCallback(on_epoch_end=stop)])
    assert len(history) == 1


def test_fit_errors_are_clear():
    x, y = blobs(0, n=10)
    model = mlp(0)
    trainer = nf.Trainer(model, nf.CrossEntropyLoss(), nf.optim.SGD(model.parameters(), lr=0.1))
    with pytest.raises(ValueError, match=r"Trainer.fit: invalid nan_policy='ignore'"):
        trainer.fit(x, y, nan_policy="ignore")
    with pytest.raises(ValueError, match=r"Trainer.fit: invalid validation_split=1.5"):
        trainer.fit(x, y, validation_split=1.5)
    with pytest.raises(ValueError, match=r"expected validation_data or validation_split, got both"):
        trainer.fit(x, y, validation_split=0.2, validation_data=(x, y))
    loader = DataLoader(ArrayDataset(x, y), batch_size=4)
    with pytest.raises(TypeError, match=r"validation_split needs array inputs"):
        trainer.fit(loader, validation_split=0.2)
    with pytest.raises(TypeError, match=r"expected targets y with array inputs"):
        trainer.fit(x)
    with pytest.raises(TypeError, match=r"expected batches \(x, y\)"):
        trainer.fit(DataLoader(ArrayDataset(x), batch_size=4), verbose=0)
    with pytest.raises(ValueError, match=r"stratify=True needs validation_split"):
        trainer.fit(x, y, stratify=True)
    with pytest.raises(TypeError, match=r"Trainer: expected model to be a Module"):
        nf.Trainer(object(), nf.MSELoss(), trainer.optimizer)
    with pytest.raises(ValueError, match=r"metrics.get: expected one of"):
        nf.Trainer(model, nf.MSELoss(), trainer.optimizer, metrics=["acc"])
    with pytest.raises(TypeError, match=r"Trainer.fit: expected Callback objects"):
        trainer.fit(x, y, callbacks=[print], verbose=0)


def test_fit_skips_the_input_gradient_and_restores_the_flag():
    calls = []

    class Probe(nf.Module):
        def forward(self, x):
            return x

        def backward(self, grad_output):
            calls.append(self.needs_input_grad)
            return grad_output

    model = nf.Sequential(Probe(), nf.Dense(3, 2, rng=0))
    x = np.random.default_rng(0).normal(size=(8, 3)).astype(np.float32)
    y = np.arange(8) % 2
    nf.Trainer(model, nf.CrossEntropyLoss(), nf.optim.SGD(model.parameters(), lr=0.1)).fit(
        x, y, batch_size=4, verbose=0
    )
    assert calls == [False, False]
    assert model.needs_input_grad  # restored: a manual backward gets dL/dx again
    model(x)
    assert model.backward(np.ones((8, 2), dtype=np.float32)).shape == (8, 3)
    assert model[0].needs_input_grad is True


# ---------------------------------------------------------------------- issue 15: rejected batches
def bn_model():
    nf.manual_seed(0)
    return nf.Sequential(nf.Dense(4, 8, rng=0), nf.BatchNorm1d(8), nf.Tanh(), nf.Dense(8, 3, rng=1))


def bn_data():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(32, 4)).astype(np.float32)
    y = rng.integers(0, 3, size=32)
    return x, y


def full_state(model, opt):
    return model.state_dict(), opt.state_dict()


def assert_same_state(a, b):
    (ma, oa), (mb, ob) = a, b
    assert list(ma) == list(mb)
    for k in ma:
        assert ma[k].tobytes() == mb[k].tobytes(), k
    assert oa["param_groups"] == ob["param_groups"]
    assert sorted(oa["state"]) == sorted(ob["state"])
    for i in oa["state"]:
        for k, v in oa["state"][i].items():
            np.testing.assert_array_equal(v, ob["state"][i][k])


@pytest.mark.parametrize("policy", ["skip_batch", "stop", "raise"])
def test_a_rejected_nan_batch_leaves_buffers_parameters_and_optimizer_state_unchanged(policy):
    # issue 15 defect 1: the skipped batch's forward pass used to leave NaN running statistics
    x, y = bn_data()
    bad = x.copy()
    bad[13, 1] = np.nan  # batch 1 of 4 (rows 8..15)
    model = bn_model()
    opt = nf.optim.Adam(model.parameters(), lr=0.01)
    trainer = nf.Trainer(model, nf.CrossEntropyLoss(), opt)
    kw = dict(batch_size=8, shuffle=False, verbose=0, nan_policy=policy)
    if policy == "raise":
        with pytest.raises(FloatingPointError):
            trainer.fit(bad, y, **kw)
    else:
        trainer.fit(bad, y, **kw)
    # the same training without the rejected rows (and, for raise/stop, without what follows)
    ref = bn_model()
    ref_opt = nf.optim.Adam(ref.parameters(), lr=0.01)
    keep = np.r_[0:8, 16:32] if policy == "skip_batch" else np.r_[0:8]
    nf.Trainer(ref, nf.CrossEntropyLoss(), ref_opt).fit(x[keep], y[keep], **kw)
    assert np.isfinite(model[1].running_mean).all() and np.isfinite(model[1].running_var).all()
    assert_same_state(full_state(model, opt), full_state(ref, ref_opt))
    assert np.isfinite(trainer.predict(x)).all()


def test_an_exception_inside_a_batch_restores_the_buffers():
    x, y = bn_data()
    model = bn_model()
    before = model.state_dict()
    trainer = nf.Trainer(model, nf.CrossEntropyLoss(), nf.optim.SGD(model.parameters(), lr=0.1))

    def boom(batch, logs):
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        trainer.fit(
            x, y, batch_size=8, verbose=0, callbacks=[LambdaCallback(on_after_backward=boom)]
        )
    for k, v in model.state_dict().items():
        assert v.tobytes() == before[k].tobytes(), k


@pytest.mark.parametrize(
    "kwargs, error, message",
    [
        (
            dict(epochs=1.5),
            TypeError,
            r"Trainer.fit: invalid epochs=1.5 \(must be an integer >= 1\)",
        ),
        (dict(epochs=float("nan")), TypeError, r"Trainer.fit: invalid epochs=nan"),
        (dict(epochs=2.0), TypeError, r"Trainer.fit: invalid epochs=2.0"),
        (dict(epochs=True), TypeError, r"Trainer.fit: invalid epochs=True"),
        (dict(epochs="3"), TypeError, r"Trainer.fit: invalid epochs='3'"),
        (dict(epochs=0), ValueError, r"Trainer.fit: invalid epochs=0 \(must be >= 1\)"),
        (dict(batch_size=2.5), TypeError, r"Trainer.fit: invalid batch_size=2.5"),
        (dict(batch_size=None), TypeError, r"Trainer.fit: invalid batch_size=None"),
        (dict(validation_split=float("nan")), ValueError, r"invalid validation_split=nan"),
        (dict(validation_split="0.2"), ValueError, r"invalid validation_split='0.2'"),
        (dict(verbose=1.0), ValueError, r"invalid verbose=1.0"),
        (dict(nan_policy=["raise"]), ValueError, r"invalid nan_policy=\['raise'\]"),
    ],
)
def test_fit_arguments_name_themselves(kwargs, error, message):
    # issue 15 defect 10: epochs=1.5 gave a raw TypeError, batch_size=2.5 was used as 2
    x, y = blobs(0, n=10)
    model = mlp(0)
    before = model.state_dict()
    trainer = nf.Trainer(model, nf.CrossEntropyLoss(), nf.optim.SGD(model.parameters(), lr=0.1))
    with pytest.raises(error, match=message):
        trainer.fit(x, y, **{"verbose": 0, **kwargs})
    for k, v in model.state_dict().items():
        assert v.tobytes() == before[k].tobytes()


def test_evaluate_and_predict_batch_size_must_be_an_integer():
    x, y = blobs(0, n=10)
    model = mlp(0)
    trainer = nf.Trainer(model, nf.CrossEntropyLoss(), nf.optim.SGD(model.parameters(), lr=0.1))
    with pytest.raises(TypeError, match=r"Trainer.evaluate: invalid batch_size=2.5"):
        trainer.evaluate(x, y, batch_size=2.5)
    with pytest.raises(TypeError, match=r"Trainer.predict: invalid batch_size=2.5"):
        trainer.predict(x, batch_size=2.5)


def test_empty_data_is_refused():
    # issue 15 defect 11: fit on zero rows returned {'loss': [nan]}, evaluate returned NaN
    x, y = blobs(0, n=10)
    model = mlp(0)
    trainer = nf.Trainer(model, nf.CrossEntropyLoss(), nf.optim.SGD(model.parameters(), lr=0.1))
    with pytest.raises(ValueError, match=r"Trainer.fit: expected at least one batch"):
        trainer.fit(x[:0], y[:0], verbose=0)
    with pytest.raises(ValueError, match=r"Trainer.evaluate: expected at least one row"):
        trainer.evaluate(x[:0], y[:0])
    with pytest.raises(ValueError, match=r"Trainer.fit: expected at least one row"):
        trainer.fit(x, y, validation_data=(x[:0], y[:0]), verbose=0)
    loader = DataLoader(ArrayDataset(x, y), batch_size=32, drop_last=True)
    with pytest.raises(ValueError, match=r"Trainer.fit: expected at least one batch"):
        trainer.fit(loader, verbose=0)


def test_a_checkpoint_template_naming_a_missing_key_fails_before_training(tmp_path):
    # issue 15 defect 12: the docs' template without validation data failed after epoch 1
    x, y = blobs(0, n=10)
    model = mlp(0)
    before = model.state_dict()
    trainer = nf.Trainer(model, nf.CrossEntropyLoss(), nf.optim.SGD(model.parameters(), lr=0.1))
    path = str(tmp_path / "ckpt-{epoch:02d}-{val_loss:.3f}.safetensors")
    for cb in (nf.callbacks.ModelCheckpoint(path), nf.TrainingCheckpoint(path)):
        with pytest.raises(KeyError, match=r"expected the path's fields .* got 'val_loss'"):
            trainer.fit(x, y, epochs=2, verbose=0, callbacks=[cb])
    bad_spec = nf.callbacks.ModelCheckpoint(str(tmp_path / "m-{epoch:q}.safetensors"))
    with pytest.raises(ValueError, match=r"ModelCheckpoint: expected a path template"):
        trainer.fit(x, y, verbose=0, callbacks=[bad_spec])
    for k, v in model.state_dict().items():
        assert v.tobytes() == before[k].tobytes()
    ok = nf.callbacks.ModelCheckpoint(path)
    trainer.fit(x, y, epochs=1, verbose=0, callbacks=[ok], validation_data=(x, y))
    assert os.path.exists(ok.last_saved)


def test_a_batch_whose_running_statistics_overflow_is_rejected():
    # found by tests/test_hostile.py: 1e30 is finite, its variance is not (float32); the loss
    # stayed finite, so the batch was applied and running_var became inf
    x, y = bn_data()
    x[3, 0] = 1e30
    model = bn_model()
    trainer = nf.Trainer(model, nf.CrossEntropyLoss(), nf.optim.SGD(model.parameters(), lr=0.1))
    history = trainer.fit(x, y, batch_size=8, shuffle=False, nan_policy="skip_batch", verbose=0)
    assert history["skipped_batches"][-1] == 1
    assert np.isfinite(model[1].running_var).all() and np.isfinite(model[1].running_mean).all()
    with pytest.raises(FloatingPointError, match=r"expected a finite buffer \(running statistic\)"):
        trainer.fit(x, y, batch_size=8, shuffle=False, verbose=0)


@pytest.mark.parametrize(
    "class_weight, error, message",
    [
        ({"a": 1.0}, TypeError, r"Trainer.fit: expected class_weight keys to be class indices"),
        ({1.5: 1.0}, TypeError, r"Trainer.fit: expected class_weight keys to be class indices"),
        ({-1: 1.0}, ValueError, r"Trainer.fit: expected class_weight keys >= 0"),
        ({0: float("nan")}, ValueError, r"Trainer.fit: expected finite class weights >= 0"),
        ({0: -2.0}, ValueError, r"Trainer.fit: expected finite class weights >= 0"),
        ([1.0, float("inf")], ValueError, r"Trainer.fit: expected finite class weights >= 0"),
    ],
)
def test_bad_class_weights_are_refused(class_weight, error, message):
    # attack campaign: a string key gave a raw int() ValueError, NaN weights trained silently
    x, y = blobs(0, n=12)
    model = mlp(0)
    trainer = nf.Trainer(model, nf.CrossEntropyLoss(), nf.optim.SGD(model.parameters(), lr=0.1))
    with pytest.raises(error, match=message):
        trainer.fit(x, y, class_weight=class_weight, verbose=0)


def test_a_huge_class_index_in_class_weight_costs_no_memory():
    # attack campaign: {10**12: 1.0} allocated a 7 TiB lookup table (MemoryError)
    x, y = blobs(0, n=12)
    a, b = mlp(0), mlp(0)
    for model, cw in ((a, {10**12: 5.0, 1: 2.0}), (b, {1: 2.0, "0": 1.0})):
        trainer = nf.Trainer(model, nf.CrossEntropyLoss(), nf.optim.SGD(model.parameters(), lr=0.1))
        trainer.fit(x, y, class_weight=cw, shuffle=False, verbose=0)
    for pa, pb in zip(a.parameters(), b.parameters()):
        np.testing.assert_array_equal(pa.data, pb.data)
