"""Module, Parameter, Sequential, Dense and the gradient checker."""

import re

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from scipy import sparse

import nnframe as nf
from tests.strategies import normal_array, seeds, small

CHECKED_MODULES = [nf.Dense, nf.Sequential]


@given(seed=seeds, n=small, d_in=small, d_out=small, bias=st.booleans())
def test_dense_gradcheck(seed, n, d_in, d_out, bias):
    layer = nf.Dense(d_in, d_out, bias=bias, rng=seed)
    nf.check_module(layer, normal_array(seed, (n, d_in)), expected_shape=(n, d_out))


@given(seed=seeds, n=small)
def test_dense_accepts_extra_leading_dims(seed, n):
    nf.check_module(
        nf.Dense(3, 2, rng=seed), normal_array(seed, (n, 2, 3)), expected_shape=(n, 2, 2)
    )


@given(seed=seeds)
def test_sequential_gradcheck(seed):
    model = nf.Sequential(nf.Dense(3, 5, rng=seed), nf.Tanh(), nf.Dense(5, 2, rng=seed + 1))
    nf.check_module(model, normal_array(seed, (4, 3)))


def test_dense_worked_example():
    layer = nf.Dense(2, 1)
    layer.weight.data[...] = [[2.0, -1.0]]
    layer.bias.data[...] = [0.5]
    x = np.array([[1.0, 3.0], [0.0, 1.0]], dtype=np.float32)
    y = layer(x)
    np.testing.assert_allclose(y, [[2 - 3 + 0.5], [-1 + 0.5]])  # = [[-0.5], [-0.5]]
    dx = layer.backward(np.array([[1.0], [2.0]], dtype=np.float32))
    np.testing.assert_allclose(dx, [[2, -1], [4, -2]])  # g @ W
    np.testing.assert_allclose(layer.weight.grad, [[1 * 1 + 2 * 0, 1 * 3 + 2 * 1]])  # g^T @ x
    np.testing.assert_allclose(layer.bias.grad, [3.0])


def test_sequential_worked_example():
    a, b = nf.Dense(1, 1, bias=False), nf.Dense(1, 1, bias=False)
    a.weight.data[...] = 3.0
    b.weight.data[...] = -2.0
    model = nf.Sequential(a, nf.ReLU(), b)
    y = model(np.array([[1.0], [-1.0]], dtype=np.float32))
    np.testing.assert_allclose(y, [[-6.0], [0.0]])  # relu(3x) * -2
    dx = model.backward(np.ones((2, 1), dtype=np.float32))
    np.testing.assert_allclose(dx, [[-6.0], [0.0]])  # -2 * 1[3x > 0] * 3
    np.testing.assert_allclose(a.weight.grad, [[-2.0]])  # only the first sample passes relu
    np.testing.assert_allclose(b.weight.grad, [[3.0]])


def test_dense_float32_by_default_and_no_upcast():
    layer = nf.Dense(3, 2, rng=0)
    assert layer.weight.dtype == np.float32 and layer.bias.dtype == np.float32
    y = layer(np.ones((4, 3)))  # float64 input is cast to the layer's dtype
    assert y.dtype == np.float32
    assert layer.backward(np.ones((4, 2), dtype=np.float32)).dtype == np.float32


@pytest.mark.parametrize("size", ["small", "direct", "scratch"])
def test_dense_weight_gradient_accumulates_on_every_path(monkeypatch, rng, size):
    # larger layers write dL/dW straight into a zeroed gradient, and the largest add it through
    # a scratch buffer when the gradient holds something: all equal the plain g^T @ x sums
    import nnframe.layers.dense as dense_module

    if size != "small":
        monkeypatch.setattr(dense_module, "_DIRECT_MIN", 1)
    if size == "scratch":
        monkeypatch.setattr(dense_module, "_SCRATCH_MIN", 1)
    layer = nf.Dense(5, 4, rng=0, dtype=np.float64)
    x1, x2 = rng.normal(size=(3, 5)), rng.normal(size=(2, 5))
    g1, g2 = rng.normal(size=(3, 4)), rng.normal(size=(2, 4))
    layer(x1)
    layer.backward(g1)
    np.testing.assert_allclose(layer.weight.grad, g1.T @ x1, rtol=1e-12)
    layer(x2)
    layer.backward(g2)  # accumulates onto a gradient that is not zero
    np.testing.assert_allclose(layer.weight.grad, g1.T @ x1 + g2.T @ x2, rtol=1e-12)
    np.testing.assert_allclose(layer.bias.grad, g1.sum(0) + g2.sum(0), rtol=1e-12)


def test_dense_sparse_input_matches_dense(rng):
    x = sparse.random(6, 10, density=0.3, format="csr", random_state=1, dtype=np.float32)
    a, b = nf.Dense(10, 3, rng=0), nf.Dense(10, 3, rng=0)
    np.testing.assert_allclose(a(x), b(x.toarray()), rtol=1e-6)
    g = rng.normal(size=(6, 3)).astype(np.float32)
    assert a.backward(g) is None  # sparse inputs are data: no input gradient
    b.backward(g)
    np.testing.assert_allclose(a.weight.grad, b.weight.grad, rtol=1e-5)
    np.testing.assert_allclose(a.bias.grad, b.bias.grad, rtol=1e-5)


def test_sequential_with_sparse_first_layer(rng):
    x = sparse.random(6, 10, density=0.3, format="csr", random_state=1, dtype=np.float32)
    model = nf.Sequential(nf.Dense(10, 4, rng=0), nf.ReLU(), nf.Dense(4, 2, rng=1))
    model(x)
    assert model.backward(np.ones((6, 2), dtype=np.float32)) is None
    assert np.any(model[0].weight.grad)


def test_dense_shape_error_message():
    with pytest.raises(
        nf.ShapeError,
        match=re.escape(
            "Dense(in_features=3, out_features=4, bias=True): expected input of shape (N, 3), got (5, 7)"
        ),
    ):
        nf.Dense(3, 4)(np.zeros((5, 7), dtype=np.float32))


def test_dense_refuses_object_input():
    with pytest.raises(
        TypeError, match=r"Dense\(.*\): expected a real numeric input .* got dtype object"
    ):
        nf.Dense(1, 1)(np.array([[object()]], dtype=object))


def test_dense_invalid_hyperparameters():
    with pytest.raises(ValueError, match=r"Dense: invalid in_features=0 \(must be > 0\)"):
        nf.Dense(0, 3)


def test_sequential_error_names_position():
    model = nf.Sequential(nf.Dense(4, 16), nf.ReLU(), nf.Dense(16, 8))
    bad = nf.Sequential(nf.Dense(4, 16), nf.ReLU(), nf.Dense(4, 8))
    with pytest.raises(
        nf.ShapeError,
        match=re.escape(
            "Sequential[2] Dense(in_features=4, out_features=8, bias=True): "
            "expected input of shape (N, 4), got (32, 16)"
        ),
    ):
        bad(np.zeros((32, 4), dtype=np.float32))
    assert len(model) == 3


class _WrongGrad(nf.Module):
    def forward(self, x):
        return x

    def backward(self, grad_output):
        return grad_output[:, :1]


def test_sequential_checks_returned_gradient_shape():
    model = nf.Sequential(nf.Dense(2, 3), _WrongGrad())
    model(np.zeros((4, 2), dtype=np.float32))
    with pytest.raises(
        nf.ShapeError,
        match=re.escape(
            "Sequential[1] _WrongGrad(): expected backward to return a gradient of the input's shape "
            "(4, 3), got (4, 1)"
        ),
    ):
        model.backward(np.zeros((4, 3), dtype=np.float32))


def test_backward_before_forward_is_a_clear_error():
    with pytest.raises(RuntimeError, match=r"Dense\(.*\): backward called before forward"):
        nf.Dense(2, 2).backward(np.zeros((1, 2)))
    with pytest.raises(RuntimeError, match="(?s)Sequential.*: backward called before forward"):
        nf.Sequential(nf.Dense(2, 2)).backward(np.zeros((1, 2)))


def test_sequential_container_protocol():
    layers = [nf.Dense(2, 3), nf.ReLU(), nf.Dense(3, 1)]
    model = nf.Sequential(*layers)
    assert len(model) == 3 and list(model) == layers and model[1] is layers[1]
    head = model[:2]
    assert isinstance(head, nf.Sequential) and list(head) == layers[:2]
    model.append(nf.Sigmoid())
    assert len(model) == 4
    with pytest.raises(TypeError, match=r"Sequential\[4\]: expected a Module, got int"):
        model.append(3)


def test_structural_discovery_and_names():
    class Block(nf.Module):
        def __init__(self):
            super().__init__()
            self.scale = nf.Parameter(np.ones(2, dtype=np.float32))
            self.inner = nf.Dense(2, 2)
            self.heads = [nf.Dense(2, 1), nf.Dense(2, 1, bias=False)]
            self.nothing = None
            self.register_buffer("running", np.zeros(2, dtype=np.float32))

    block = Block()
    names = [n for n, _ in block.named_parameters()]
    assert names == [
        "scale",
        "inner.weight",
        "inner.bias",
        "heads.0.weight",
        "heads.0.bias",
        "heads.1.weight",
    ]
    assert list(block.state_dict()) == names + ["running"]
    assert [n for n, _ in block.named_modules()] == ["", "inner", "heads.0", "heads.1"]


def test_shared_parameter_listed_once_and_accumulates():
    shared = nf.Dense(2, 2, rng=0)
    model = nf.Sequential(shared, nf.Tanh(), shared)
    assert len(model.parameters()) == 2
    nf.check_module(model, normal_array(0, (3, 2)))


def test_train_eval_recurse_and_return_self():
    model = nf.Sequential(nf.Dense(2, 2), nf.Sequential(nf.ReLU()))
    assert model.eval() is model
    assert not any(m.training for m in model.modules())
    assert model.train() is model and all(m.training for m in model.modules())


def test_zero_grad_and_to_dtype():
    model = nf.Sequential(nf.Dense(2, 2))
    model(np.ones((1, 2), dtype=np.float32))
    model.backward(np.ones((1, 2), dtype=np.float32))
    assert np.any(model[0].weight.grad)
    model.zero_grad()
    assert not np.any(model[0].weight.grad)
    model.to(np.float64)
    assert all(
        p.data.dtype == np.float64 and p.grad.dtype == np.float64 for p in model.parameters()
    )
    assert model.dtype == np.float64


def test_requires_grad_freezes():
    layer = nf.Dense(2, 2, rng=0).requires_grad_(False)
    layer(np.ones((1, 2), dtype=np.float32))
    layer.backward(np.ones((1, 2), dtype=np.float32))
    assert not np.any(layer.weight.grad) and not np.any(layer.bias.grad)
    before = layer.weight.data.copy()
    opt = nf.optim.SGD(layer.parameters(), lr=1.0)
    layer.weight.grad[...] = 1.0
    opt.step()
    np.testing.assert_array_equal(layer.weight.data, before)


def test_state_dict_round_trip():
    a = nf.Sequential(nf.Dense(3, 4, rng=0), nf.ReLU(), nf.Dense(4, 2, rng=1))
    b = nf.Sequential(nf.Dense(3, 4, rng=5), nf.ReLU(), nf.Dense(4, 2, rng=6))
    b.load_state_dict(a.state_dict())
    x = np.ones((2, 3), dtype=np.float32)
    np.testing.assert_array_equal(a(x), b(x))
    state = a.state_dict()
    state["0.weight"][...] = 0  # a copy: the model is untouched
    assert np.any(a[0].weight.data)


def test_load_state_dict_reports_every_problem_at_once():
    model = nf.Sequential(nf.Dense(3, 4), nf.Dense(4, 2))
    state = model.state_dict()
    del state["0.bias"]
    state["extra"] = np.zeros(1)
    state["1.weight"] = np.zeros((3, 3), dtype=np.float32)
    with pytest.raises(nf.StateDictError) as info:
        model.load_state_dict(state)
    message = str(info.value)
    assert "3 problem(s)" in message
    assert "missing key '0.bias'" in message
    assert "unexpected key 'extra'" in message
    assert "1.weight: expected shape (2, 4), got (3, 3)" in message


def test_load_state_dict_dtype_needs_cast():
    model = nf.Dense(2, 2)
    state = {k: v.astype(np.float64) for k, v in model.state_dict().items()}
    with pytest.raises(nf.StateDictError, match="expected dtype float32, got float64"):
        model.load_state_dict(state)
    model.load_state_dict(state, cast=True)
    assert model.weight.dtype == np.float32


def test_nested_repr():
    model = nf.Sequential(nf.Dense(2, 3), nf.Sequential(nf.ReLU()))
    assert repr(model) == (
        "Sequential(\n"
        "  (0): Dense(in_features=2, out_features=3, bias=True)\n"
        "  (1): Sequential(\n"
        "    (0): ReLU()\n"
        "  )\n"
        ")"
    )


def test_seeded_construction_repeats():
    nf.manual_seed(7)
    a = nf.Dense(4, 4)
    nf.manual_seed(7)
    b = nf.Dense(4, 4)
    np.testing.assert_array_equal(a.weight.data, b.weight.data)
    np.testing.assert_array_equal(
        nf.Dense(4, 4, rng=3).weight.data, nf.Dense(4, 4, rng=3).weight.data
    )


class _BadLayer(nf.Module):
    """y = 2x but backward forgets the factor 2."""

    def forward(self, x):
        return 2 * x

    def backward(self, grad_output):
        return grad_output


class _AssigningLayer(nf.Module):
    def __init__(self):
        super().__init__()
        self.w = nf.Parameter(np.ones(2))

    def forward(self, x):
        self.save_for_backward(x)
        return x * self.w.data

    def backward(self, grad_output):
        (x,) = self.saved
        self.w.grad = (grad_output * x).sum(axis=0)  # assigns instead of accumulating
        return grad_output * self.w.data


class _MutatingLayer(nf.Module):
    def forward(self, x):
        x *= 1.0
        x[0, 0] += 1.0
        return x

    def backward(self, grad_output):
        return grad_output


def test_gradcheck_catches_wrong_gradient():
    with pytest.raises(
        nf.GradcheckError,
        match=r"check_module _BadLayer\(\): gradient of the input "
        r"at index \(0, 0\) disagrees: analytic .*, numeric .*",
    ):
        nf.check_module(_BadLayer(), np.ones((2, 2)))


def test_gradcheck_catches_missing_accumulation():
    with pytest.raises(nf.GradcheckError, match="does not accumulate"):
        nf.check_module(_AssigningLayer(), np.ones((2, 2)))


def test_gradcheck_catches_mutation():
    with pytest.raises(nf.GradcheckError, match="mutated input"):
        nf.check_module(_MutatingLayer(), np.ones((2, 2)))


def test_gradcheck_directional_catches_wrong_gradient():
    with pytest.raises(nf.GradcheckError, match="directional derivative of the input"):
        nf.check_module(_BadLayer(), np.ones((20, 20)), directional=True)


def test_gradcheck_checks_output_shape():
    with pytest.raises(nf.GradcheckError, match="expected output shape"):
        nf.check_module(nf.Dense(2, 3), np.ones((4, 2)), expected_shape=(4, 2))


def test_needs_input_grad_false_skips_first_layer_input_gradient(rng):
    model = nf.Sequential(nf.Dense(3, 4, rng=0), nf.Tanh(), nf.Dense(4, 2, rng=1))
    reference = nf.Sequential(nf.Dense(3, 4, rng=0), nf.Tanh(), nf.Dense(4, 2, rng=1))
    x = rng.normal(size=(5, 3)).astype(np.float32)
    g = rng.normal(size=(5, 2)).astype(np.float32)
    model.needs_input_grad = False
    model(x)
    assert model.backward(g) is None
    reference(x)
    assert reference.backward(g).shape == (5, 3)
    for p, q in zip(model.parameters(), reference.parameters()):
        np.testing.assert_array_equal(p.grad, q.grad)
    model.needs_input_grad = True  # switching back restores the input gradient
    model(x)
    assert model.backward(g).shape == (5, 3)


def test_module_shared_across_nesting_levels_accumulates_both_uses():
    d = nf.Dense(3, 3, rng=0)
    nf.check_module(nf.Sequential(d, nf.Tanh(), nf.Residual(d)), normal_array(1, (4, 3)))
    inner = nf.Sequential(d, nf.Tanh())
    nf.check_module(nf.Sequential(inner, d, nf.Tanh()), normal_array(2, (4, 3)))


def test_sharing_plan_follows_structure_changes():
    d = nf.Dense(3, 3, rng=0)
    inner = nf.Sequential(nf.Tanh())
    model = nf.Sequential(d, inner)
    model(np.ones((2, 3)))  # plan computed: nothing shared yet
    inner.append(d)  # now d is used twice, once inside a nested container
    nf.check_module(model, normal_array(3, (4, 3)))
