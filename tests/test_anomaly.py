"""Anomaly mode: the first layer producing a NaN/Inf, forward or backward, is named with the step;
off by default, and switching it off restores everything."""

import numpy as np
import pytest

import nnframe as nf

CHECKED_MODULES = []


class Blowup(nf.Module):
    """Identity forward; its backward multiplies the gradient by ``factor`` (inf: an Inf)."""

    def __init__(self, factor):
        super().__init__()
        self.factor = factor

    def forward(self, x):
        return x

    def backward(self, grad_output):
        return grad_output * self.factor


def model_and_data():
    model = nf.Sequential(
        nf.Dense(3, 4, rng=0), nf.Tanh(), nf.Sequential(nf.Dense(4, 4, rng=1), nf.Tanh())
    )
    x = np.random.default_rng(0).normal(size=(5, 3)).astype(np.float32)
    return model, x


def test_forward_names_the_first_layer_and_the_step():
    model, x = model_and_data()
    with nf.detect_anomaly(model) as detector:
        model(x)
        model(x)
        model[2][0].weight.data[1, 2] = np.nan  # from step 3 on, layer '2.0' produces NaN
        with pytest.raises(nf.AnomalyError) as info:
            model(x)
    message = str(info.value)
    assert "the output of layer '2.0' Dense(in_features=4, out_features=4" in message
    assert "holds 5 NaN" in message and "(forward, step 3)" in message
    assert message.startswith("Sequential[2] Sequential[0] ")  # the container positions too
    assert detector.anomaly == nf.anomaly.Anomaly("2.0", "output", "forward", 3, 5, 0)


def test_nan_input_is_blamed_on_the_data_not_the_layer():
    model, x = model_and_data()
    x[1, 1] = np.inf
    with nf.detect_anomaly(), pytest.raises(nf.AnomalyError, match="the input of layer Seq"):
        model(x)


def test_backward_names_the_first_layer_whose_gradient_is_not_finite():
    model = nf.Sequential(nf.Dense(3, 4, rng=0), Blowup(np.inf), nf.Tanh(), nf.Dense(4, 2, rng=1))
    x = np.ones((2, 3), dtype=np.float32)
    with nf.detect_anomaly(model) as detector:
        out = model(x)
        with pytest.raises(nf.AnomalyError) as info:
            model.backward(np.ones_like(out))
    assert "the input gradient of layer '1' Blowup()" in str(info.value)
    assert "(backward, step 1)" in str(info.value)
    assert detector.anomaly.layer == "1" and detector.anomaly.phase == "backward"
    assert "backward" not in vars(model[1])  # the checking wrappers are gone afterwards


def test_parameter_gradient_anomaly_and_loss_gradient():
    model = nf.Sequential(nf.Dense(3, 2, rng=0))
    x = np.ones((2, 3), dtype=np.float32)
    with nf.detect_anomaly() as detector:
        out = model(x)
        g = np.ones_like(out)
        g[0, 0] = np.nan
        with pytest.raises(nf.AnomalyError, match="incoming gradient of layer Sequential"):
            model.backward(g)  # a NaN from the loss is blamed on the loss, not on a layer
    assert detector.anomaly.what == "incoming gradient"

    class NaNWeightGrad(nf.Module):
        def __init__(self):
            super().__init__()
            self.w = nf.Parameter(np.ones(3, dtype=np.float32))

        def forward(self, x):
            return x

        def backward(self, grad_output):
            self.w.grad += np.nan
            return grad_output

    model = nf.Sequential(nf.Dense(3, 3, rng=0), NaNWeightGrad())
    with nf.detect_anomaly(model) as detector:
        with pytest.raises(nf.AnomalyError, match="the gradient of w of layer '1' NaNWeightGrad"):
            model.backward(model(x))
    assert detector.anomaly.what == "gradient of w" and detector.anomaly.nan == 3


def test_without_anomaly_mode_nothing_is_checked_and_state_is_clean():
    model, x = model_and_data()
    model[0].weight.data[0, 0] = np.nan
    assert np.isnan(model(x)).any()  # no error: the mode is off by default
    assert not nf.anomaly.STATE.enabled
    nf.set_detect_anomaly(True)
    try:
        with pytest.raises(nf.AnomalyError, match="step 1"):
            model(x)
    finally:
        nf.set_detect_anomaly(False)
    assert not nf.anomaly.STATE.enabled and not nf.hooks.GLOBAL_HOOKS.active
    assert np.isnan(model(x)).any()


def test_anomaly_mode_does_not_change_results():
    model, x = model_and_data()
    reference = model(x)
    grad_ref = model.backward(np.ones_like(reference))
    model.zero_grad()
    with nf.detect_anomaly(model) as detector:
        out = model(x)
        grad = model.backward(np.ones_like(out))
    np.testing.assert_array_equal(out, reference)
    np.testing.assert_array_equal(grad, grad_ref)
    assert detector.anomaly is None


def test_set_step_counts_from_the_given_step():
    model, x = model_and_data()
    model[0].bias.data[0] = np.inf
    with nf.detect_anomaly(model):
        nf.anomaly.set_step(41)
        with pytest.raises(nf.AnomalyError, match="step 42"):
            model(x)
