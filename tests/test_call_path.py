"""The call path every module goes through: per-call saved state, hooks, no_grad, and the
guardrails of Module.__call__ / backward."""

import numpy as np
import pytest

import nnframe as nf
from tests.strategies import normal_array


class TwiceEncoder(nf.Module):
    """A user's module that calls one encoder on two inputs (a siamese pair)."""

    def __init__(self, enc):
        super().__init__()
        self.enc = enc

    def forward(self, x):
        a, b = self.enc(x), self.enc(x * 2.0)
        self.save_for_backward(a, b)
        return a * b

    def backward(self, grad_output):
        a, b = self.saved
        grad = self.enc.backward(grad_output * a) * 2.0  # the second call's backward first
        return grad + self.enc.backward(grad_output * b)


def test_user_module_calling_a_layer_twice_passes_check_module():
    model = TwiceEncoder(nf.Sequential(nf.Dense(3, 3, rng=0), nf.Tanh()))
    nf.check_module(model, normal_array(0, (4, 3)))


def test_a_module_shared_after_a_first_run_gets_both_gradients():
    d = nf.Dense(3, 3, rng=0)
    box = nf.Sequential(nf.Tanh())
    model = nf.Sequential(d, box)
    model(np.ones((2, 3), np.float32))
    box.inner = d  # now d is also used inside box, through an attribute
    box._layers.append(d)
    nf.check_module(model, normal_array(1, (4, 3)))


def test_backwards_in_reverse_order_consume_each_calls_state():
    layer = nf.Dense(2, 2, rng=0).to(np.float64)
    x1, x2 = np.ones((1, 2)), np.full((1, 2), 3.0)
    g = np.ones((1, 2))

    class Pair(nf.Module):
        def __init__(self):
            super().__init__()
            self.layer = layer

        def forward(self, x):
            return self.layer(x1), self.layer(x2)

        def backward(self, grad_output):
            self.layer.backward(grad_output[1])
            self.layer.backward(grad_output[0])

    Pair()(None)
    layer.zero_grad()
    Pair().backward((g, g))
    # dL/dW = sum over calls of g^T x: each call's own input, not the latest one twice
    np.testing.assert_allclose(layer.weight.grad, g.T @ x1 + g.T @ x2)


def test_saved_entries_of_forward_only_passes_do_not_pile_up():
    model = nf.Sequential(nf.Dense(3, 3, rng=0), nf.Tanh())
    for _ in range(5):
        model(np.ones((2, 3), np.float32))  # training mode, no backward
    assert len(model[0]._call.stack) == 1 and len(model[1]._call.stack) == 1


def test_no_grad_saves_nothing_and_backward_says_why():
    model = nf.Sequential(nf.Dense(3, 3, rng=0), nf.ReLU())
    with nf.no_grad():
        assert not nf.is_grad_enabled()
        y = model(np.ones((2, 3), np.float32))
        with nf.enable_grad():
            assert nf.is_grad_enabled()
    assert nf.is_grad_enabled()
    assert all(not m._call.stack for m in model.modules())
    with pytest.raises(RuntimeError, match="no_grad"):
        model.backward(np.ones_like(y))


def test_no_grad_as_a_decorator_restores_the_mode_on_error():
    @nf.no_grad()
    def fails():
        raise KeyError("x")

    with pytest.raises(KeyError):
        fails()
    assert nf.is_grad_enabled()


def test_forward_that_saves_nothing_is_named_at_backward():
    class Forgetful(nf.Module):
        def forward(self, x):
            return x * 2

        def backward(self, grad_output):
            (x,) = self.saved
            return grad_output

    layer = Forgetful()
    layer(np.ones(3))
    with pytest.raises(RuntimeError, match="forward saved nothing.*save_for_backward"):
        layer.backward(np.ones(3))


def test_backward_before_forward_names_a_container_briefly():
    model = nf.Sequential(*[nf.Dense(4, 4, rng=i) for i in range(30)])
    with pytest.raises(RuntimeError, match=r"^Sequential\(\.\.\.\): backward called before"):
        model.backward(np.ones((2, 4), np.float32))


def test_missing_super_init_is_named_with_the_fix():
    class NoInit(nf.Module):
        def __init__(self):
            self.w = nf.Parameter(np.ones(2, np.float32))

        def forward(self, x):
            return x

    with pytest.raises(RuntimeError, match=r"Add super\(\).__init__\(\).*NoInit.__init__"):
        NoInit()(np.ones(2))


def test_a_plain_dict_of_modules_is_refused_naming_moduledict():
    class Heads(nf.Module):
        def __init__(self):
            super().__init__()
            self.heads = {"a": nf.Dense(2, 2, rng=0)}

    with pytest.raises(TypeError, match=r"Heads.heads.*nf.ModuleDict"):
        Heads().parameters()


@pytest.mark.parametrize("bad", [0.37, np.float32(1.5), 3])
def test_backward_refuses_a_loss_value(bad):
    model = nf.Sequential(nf.Dense(3, 2, rng=0))
    model(np.ones((4, 3), np.float32))
    with pytest.raises(TypeError, match=r"not the loss value"):
        model.backward(bad)
    assert not np.any(model[0].weight.grad)  # nothing was accumulated


def test_backward_refuses_the_loss_method_and_names_the_fix():
    model = nf.Dense(3, 2, rng=0)
    loss_fn = nf.MSELoss()
    loss_fn(model(np.ones((4, 3), np.float32)), np.zeros((4, 2), np.float32))
    with pytest.raises(TypeError, match=r"model.backward\(loss_fn.backward\(\)\)"):
        model.backward(loss_fn.backward)


def test_sequential_checks_the_incoming_gradient_shape():
    model = nf.Sequential(nf.Dense(4, 3, rng=0), nf.Tanh())
    model(np.ones((8, 4), np.float32))
    with pytest.raises(nf.ShapeError, match=r"grad_output of the output's shape \(8, 3\), got"):
        model.backward(np.ones((8, 4), np.float32))


def test_hooks_run_in_order_can_replace_values_and_are_removable():
    layer = nf.Dense(2, 2, rng=0)
    seen = []
    h1 = layer.register_forward_pre_hook(lambda m, args: (args[0] * 0,))
    h2 = layer.register_forward_hook(lambda m, args, out: seen.append(("fwd", out.shape)))
    h3 = layer.register_backward_pre_hook(lambda m, g: g * 0)
    h4 = layer.register_backward_hook(lambda m, gi, go: seen.append(("bwd", float(go.sum()))))
    y = layer(np.ones((3, 2), np.float32))
    np.testing.assert_allclose(y, np.broadcast_to(layer.bias.data, (3, 2)))  # input zeroed
    layer.backward(np.ones((3, 2), np.float32))
    assert seen == [("fwd", (3, 2)), ("bwd", 0.0)]
    assert not np.any(layer.weight.grad)  # the pre-hook zeroed the gradient
    for h in (h1, h2, h3, h4):
        h.remove()
    assert not layer._hooks.active
    layer(np.ones((3, 2), np.float32))
    assert len(seen) == 2


def test_global_hooks_see_every_module_and_go_away():
    names = []
    with nf.hooks.register_module_forward_hook(lambda m, args, out: names.append(type(m).__name__)):
        nf.Sequential(nf.Dense(2, 2, rng=0), nf.ReLU())(np.ones((1, 2), np.float32))
    nf.Dense(2, 2, rng=0)(np.ones((1, 2), np.float32))
    assert names == ["Dense", "ReLU", "Sequential"]
    assert not nf.hooks.GLOBAL_HOOKS.active


def test_cells_in_a_hand_written_loop_keep_every_step():
    cell = nf.RNNCell(2, 3, rng=0)
    h = None
    for _ in range(4):
        h = cell(np.ones((1, 2), np.float32), h)
    assert len(cell._call.stack) == 4
    cell.clear_saved()
    with pytest.raises(RuntimeError, match="backward called before forward"):
        cell.backward(np.ones((1, 3), np.float32))


# ---------------------------------------------------------------------- inputs without a batch axis
UNBATCHED = [
    (lambda: nf.Dense(3, 2, rng=0), (3,)),
    (lambda: nf.Conv1d(2, 3, 3, rng=0), (2, 7)),
    (lambda: nf.Conv2d(2, 3, 3, padding=1, rng=0), (2, 5, 4)),
    (lambda: nf.Conv3d(2, 2, 2, rng=0), (2, 3, 3, 3)),
    (lambda: nf.ConvTranspose1d(2, 3, 3, rng=0), (2, 5)),
    (lambda: nf.ConvTranspose2d(2, 3, 3, stride=2, rng=0), (2, 3, 4)),
    (lambda: nf.MaxPool1d(2), (3, 8)),
    (lambda: nf.MaxPool2d(2), (3, 4, 6)),
    (lambda: nf.AvgPool1d(3, stride=2), (2, 9)),
    (lambda: nf.AvgPool2d(2), (2, 4, 4)),
    (lambda: nf.AdaptiveAvgPool1d(3), (2, 7)),
    (lambda: nf.AdaptiveAvgPool2d((2, 3)), (2, 5, 7)),
    (lambda: nf.AdaptiveMaxPool1d(2), (2, 6)),
    (lambda: nf.AdaptiveMaxPool2d(2), (1, 4, 4)),
]


@pytest.mark.parametrize("make, shape", UNBATCHED)
def test_unbatched_input_equals_a_batch_of_one(make, shape):
    layer = make().to(np.float64)
    x = normal_array(3, shape).astype(np.float64)
    y = layer(x)
    dx = layer.backward(np.ones_like(y))
    grads = [p.grad.copy() for p in layer.parameters()]
    layer.zero_grad()
    y1 = layer(x[None])
    dx1 = layer.backward(np.ones_like(y1))
    np.testing.assert_allclose(y, y1[0])  # the output loses the batch axis
    np.testing.assert_allclose(dx, dx1[0])  # and so does the input gradient
    for g, p in zip(grads, layer.parameters()):
        np.testing.assert_allclose(g, p.grad)
    nf.check_module(layer, x)


def test_a_shared_layer_mixes_batched_and_unbatched_calls():
    layer = nf.Dense(3, 2, rng=0).to(np.float64)

    class Mixed(nf.Module):
        def __init__(self):
            super().__init__()
            self.layer = layer

        def forward(self, x):
            return self.layer(x[0]) + self.layer(x)  # (2,) + (N, 2)

        def backward(self, grad_output):
            g = self.layer.backward(grad_output)
            g[0] += self.layer.backward(grad_output.sum(axis=0))
            return g

    nf.check_module(Mixed(), normal_array(4, (4, 3)))


def test_apply_visits_children_before_parents_each_once():
    shared = nf.Dense(2, 2, rng=0)
    inner = nf.Sequential(shared, nf.Tanh())
    model = nf.Sequential(inner, shared)
    seen = []
    assert model.apply(lambda m: seen.append(m)) is model
    assert seen[-1] is model and seen.count(shared) == 1
    assert seen.index(shared) < seen.index(inner) < seen.index(model)


def test_unbatched_recurrent_state_may_be_passed_by_keyword():
    lstm = nf.LSTM(3, 4, num_layers=2, rng=0).to(np.float64)
    x = normal_array(5, (6, 3)).astype(np.float64)
    h0 = (np.zeros((2, 4)), np.ones((2, 4)))
    out_kw, (h_kw, c_kw) = lstm(x, hx=h0)
    grads_kw = lstm.backward((np.ones_like(out_kw), None))
    out, (h, c) = lstm(x, h0)
    grads = lstm.backward((np.ones_like(out), None))
    np.testing.assert_array_equal(out_kw, out)
    assert h_kw.shape == (2, 4) and c_kw.shape == (2, 4)
    np.testing.assert_array_equal(grads_kw[0], grads[0])
    cell = nf.GRUCell(3, 4, rng=0)
    assert cell(np.ones(3, np.float32), h=np.zeros(4, np.float32)).shape == (4,)


def test_load_state_dict_refuses_integers_into_floats_unless_cast():
    layer = nf.Dense(2, 2, rng=0)
    state = {k: v.astype(np.int32) for k, v in layer.state_dict().items()}
    with pytest.raises(nf.StateDictError, match=r"weight: expected dtype float32, got int32"):
        layer.load_state_dict(state)
    layer.load_state_dict(state, cast=True)
    assert layer.weight.data.dtype == np.float32


def test_pytorchs_input_keyword_names_the_first_input():
    layer = nf.Dense(3, 2, rng=0)
    x = np.ones((4, 3), np.float32)
    np.testing.assert_array_equal(layer(input=x), layer(x))
    conv = nf.Conv1d(2, 2, 3, rng=0)
    assert conv(input=np.ones((2, 5), np.float32)).shape == (2, 3)  # unbatched too


def test_input_errors_name_a_container_briefly():
    layer = nf.TransformerEncoderLayer(8, 2, 16)
    with pytest.raises(nf.ShapeError, match=r"^TransformerEncoderLayer\(\.\.\.\): expected input"):
        layer(np.ones((2, 3, 5), np.float32))


def test_a_failed_call_leaves_the_next_top_level_call_a_new_pass():
    # a module missing super().__init__() raised inside the call path after it counted the call
    # as nested: every later top-level call then looked nested (a shared layer's gradient lost)
    class NoInit(nf.Module):
        def __init__(self):
            pass

        def forward(self, x):
            return x

    with pytest.raises(RuntimeError):
        NoInit()(np.ones(2))
    d = nf.Dense(3, 3, rng=0)
    model = nf.Sequential(d)
    x = np.ones((2, 3), np.float32)
    for _ in range(3):
        model(x)  # each a new pass: the layer's entries of older passes are dropped
    assert len(d._call.stack) == 1
