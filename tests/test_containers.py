"""Residual, Concat, Add, ModuleList, ModuleDict: gradients, sharing, freezing, naming, errors."""

import copy

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import nnframe as nf
from tests.strategies import normal_array, seeds, small

CHECKED_MODULES = [nf.Residual, nf.Concat, nf.Add, nf.ModuleList, nf.ModuleDict]


def block(d_in, d_out, seed):
    return nf.Sequential(nf.Dense(d_in, d_out, rng=seed), nf.Tanh())


@given(seed=seeds, n=small, d=small, project=st.booleans(), d_out=small)
def test_residual_gradcheck(seed, n, d, project, d_out):
    if project:
        layer = nf.Residual(block(d, d_out, seed), nf.Dense(d, d_out, rng=seed + 1))
    else:
        layer, d_out = nf.Residual(block(d, d, seed)), d
    nf.check_module(layer, normal_array(seed, (n, d)), expected_shape=(n, d_out))


@given(seed=seeds, n=small, d=small, widths=st.lists(small, min_size=1, max_size=3))
def test_concat_gradcheck(seed, n, d, widths):
    branches = [block(d, w, seed + i) for i, w in enumerate(widths)]
    nf.check_module(
        nf.Concat(*branches), normal_array(seed, (n, d)), expected_shape=(n, sum(widths))
    )


@given(seed=seeds, n=small, t=small)
def test_concat_along_another_axis_gradcheck(seed, n, t):
    """(N, T, 3) -> two (N, T, 4) branches joined along T: (N, 2T, 4)."""
    layer = nf.Concat(nf.Dense(3, 4, rng=seed), block(3, 4, seed + 1), axis=1)
    nf.check_module(layer, normal_array(seed, (n, t, 3)), expected_shape=(n, 2 * t, 4))


@given(seed=seeds, n=small, d=small, k=st.integers(1, 3))
def test_add_gradcheck(seed, n, d, k):
    layer = nf.Add(*[block(d, 3, seed + i) for i in range(k)])
    nf.check_module(layer, normal_array(seed, (n, d)), expected_shape=(n, 3))


class TwoHeads(nf.Module):
    """A user's own module built on ModuleList and ModuleDict: a trunk of blocks and two heads
    whose outputs are added."""

    def __init__(self, seed):
        super().__init__()
        self.trunk = nf.ModuleList([block(3, 3, seed), block(3, 3, seed + 1)])
        self.heads = nf.ModuleDict(
            {"a": nf.Dense(3, 2, rng=seed + 2), "b": nf.Dense(3, 2, rng=seed + 3)}
        )

    def forward(self, x):
        for layer in self.trunk:
            x = layer(x)
        return self.heads["a"](x) + self.heads["b"](x)

    def backward(self, grad_output):
        g = self.heads["a"].backward(grad_output) + self.heads["b"].backward(grad_output)
        for layer in reversed(list(self.trunk)):
            g = layer.backward(g)
        return g


@given(seed=seeds, n=small)
def test_modulelist_and_moduledict_in_a_users_module_gradcheck(seed, n):
    model = TwoHeads(seed)
    nf.check_module(model, normal_array(seed, (n, 3)))
    assert [name for name, _ in model.named_parameters()] == [
        "trunk.0.0.weight",
        "trunk.0.0.bias",
        "trunk.1.0.weight",
        "trunk.1.0.bias",
        "heads.a.weight",
        "heads.a.bias",
        "heads.b.weight",
        "heads.b.bias",
    ]


# ---------------------------------------------------------------------- worked examples


def test_residual_worked_example():
    f = nf.Dense(1, 1, bias=False)
    f.weight.data[...] = 3.0
    layer = nf.Residual(f)
    np.testing.assert_allclose(layer(np.array([[2.0]], dtype=np.float32)), [[2 + 6]])
    np.testing.assert_allclose(layer.backward(np.array([[1.0]], dtype=np.float32)), [[1 + 3]])
    np.testing.assert_allclose(f.weight.grad, [[2.0]])


def test_concat_and_add_worked_example():
    a, b = nf.Dense(1, 1, bias=False), nf.Dense(1, 2, bias=False)
    a.weight.data[...] = [[2.0]]
    b.weight.data[...] = [[3.0], [-1.0]]
    x = np.array([[1.0], [2.0]], dtype=np.float32)
    cat = nf.Concat(a, b)
    np.testing.assert_allclose(cat(x), [[2, 3, -1], [4, 6, -2]])
    g = np.array([[1, 1, 1], [0, 1, 0]], dtype=np.float32)
    np.testing.assert_allclose(cat.backward(g), [[2 + 3 - 1], [0 + 3 + 0]])
    add = nf.Add(nf.Identity(), nf.Identity())
    np.testing.assert_allclose(add(x), 2 * x)
    np.testing.assert_allclose(add.backward(np.ones_like(x)), 2 * np.ones_like(x))


# ---------------------------------------------------------------------- shared modules


def test_shared_module_in_two_branches_accumulates_both_gradients(rng):
    d = nf.Dense(3, 3, rng=0)
    x = rng.normal(size=(4, 3)).astype(np.float32)
    g = rng.normal(size=(4, 3)).astype(np.float32)
    shared = nf.Add(d, d)
    shared(x)
    dx = shared.backward(g)
    single = copy.deepcopy(d)
    single.zero_grad()
    single(x)
    dx1 = single.backward(g)
    np.testing.assert_allclose(d.weight.grad, 2 * single.weight.grad, rtol=1e-6)
    np.testing.assert_allclose(dx, 2 * dx1, rtol=1e-6)


@given(seed=seeds)
def test_shared_module_across_containers_gradcheck(seed):
    """The same Dense inside two Residuals (different inputs at each use) and in two branches
    at different depths: every use backpropagates with its own saved input."""
    d = nf.Dense(3, 3, rng=seed)
    nf.check_module(
        nf.Sequential(nf.Residual(d), nf.Tanh(), nf.Residual(d)), normal_array(seed, (2, 3))
    )
    e = nf.Dense(3, 3, rng=seed + 1)
    nf.check_module(nf.Concat(e, nf.Sequential(e, nf.Tanh(), e)), normal_array(seed, (2, 3)))


def test_shared_module_matches_unrolled_copies(rng):
    d = nf.Dense(3, 3, rng=0)
    model = nf.Sequential(nf.Residual(block(3, 3, 1)), nf.Residual(nf.Sequential(d, nf.Tanh(), d)))
    twin = copy.deepcopy(model)
    first, second = twin[1].module[0], copy.deepcopy(twin[1].module[0])
    twin[1].module._layers[2] = second  # the same weights, now as two separate layers
    x = rng.normal(size=(5, 3)).astype(np.float32)
    g = rng.normal(size=(5, 3)).astype(np.float32)
    np.testing.assert_allclose(model(x), twin(x), rtol=1e-6)
    np.testing.assert_allclose(model.backward(g), twin.backward(g), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(d.weight.grad, first.weight.grad + second.weight.grad, rtol=1e-5)


# ---------------------------------------------------------------------- freezing


def test_requires_grad_false_freezes_end_to_end(rng):
    trunk = nf.Residual(block(4, 4, 0))
    head = nf.Dense(4, 2, rng=1)
    model = nf.Sequential(trunk, nf.BatchNorm1d(4), nf.Dropout(0.2, rng=2), head)
    trunk.requires_grad_(False)
    model[1].requires_grad_(False)
    before = model.state_dict()
    opt = nf.optim.SGD(model.parameters(), lr=0.1)
    loss = nf.CrossEntropyLoss()
    x = rng.normal(size=(8, 4)).astype(np.float32)
    y = rng.integers(0, 2, size=8)
    for _ in range(3):
        opt.zero_grad()
        loss(model(x), y)
        model.backward(loss.backward())
        opt.step()
    after = model.state_dict()
    for name in ["0.module.0.weight", "0.module.0.bias", "1.weight", "1.bias"]:
        np.testing.assert_array_equal(after[name], before[name])
    assert not np.any(trunk.module[0].weight.grad)
    assert not np.array_equal(after["3.weight"], before["3.weight"])  # the head trained
    assert model.num_parameters(trainable_only=True) == head.num_parameters()


@given(seed=seeds)
def test_frozen_branch_gradcheck(seed):
    layer = nf.Concat(nf.Dense(3, 2, rng=seed).requires_grad_(False), block(3, 2, seed + 1))
    nf.check_module(layer, normal_array(seed, (2, 3)))  # also asserts: no grad for frozen ones


# ---------------------------------------------------------------------- protocol and names


def test_names_and_state_dict():
    model = nf.Residual(block(3, 4, 0), projection=nf.Dense(3, 4, rng=1))
    assert list(model.state_dict()) == [
        "module.0.weight",
        "module.0.bias",
        "projection.weight",
        "projection.bias",
    ]
    cat = nf.Concat(nf.Dense(3, 1, rng=0), nf.Dense(3, 1, rng=1))
    assert [n for n, _ in cat.named_parameters()] == ["0.weight", "0.bias", "1.weight", "1.bias"]
    assert len(cat) == 2 and cat[1] is list(cat)[1]


def test_modulelist_protocol():
    layers = nf.ModuleList([nf.Dense(2, 2, rng=i) for i in range(3)])
    layers.append(nf.Tanh())
    layers.insert(0, nf.Identity())
    assert len(layers) == 5 and isinstance(layers[0], nf.Identity)
    assert isinstance(layers[1:3], nf.ModuleList) and len(layers[1:3]) == 2
    del layers[0]
    layers[0] = nf.Dense(2, 2, rng=9)
    assert [n for n, _ in layers.named_children()] == ["0", "1", "2", "3"]
    assert len(layers.parameters()) == 6
    with pytest.raises(TypeError, match=r"ModuleList\[4\]: expected a Module, got int"):
        layers.append(3)
    with pytest.raises(RuntimeError, match="ModuleList: expected to be iterated"):
        layers(np.zeros((1, 2)))


def test_moduledict_protocol():
    heads = nf.ModuleDict([("a", nf.Dense(2, 1, rng=0))])
    heads["b"] = nf.Dense(2, 3, rng=1)
    heads.update({"c": nf.Tanh()})
    assert list(heads) == ["a", "b", "c"] and "b" in heads and len(heads) == 3
    assert [k for k, _ in heads.items()] == list(heads.keys())
    assert heads.pop("c").__class__ is nf.Tanh and "c" not in heads
    del heads["a"]
    assert list(heads.state_dict()) == ["b.weight", "b.bias"]
    with pytest.raises(KeyError, match=r"ModuleDict: expected one of the keys \['b'\], got 'z'"):
        heads["z"]
    with pytest.raises(KeyError, match=r"expected a non-empty str key without '.', got 'x.y'"):
        heads["x.y"] = nf.Tanh()
    with pytest.raises(TypeError, match=r"ModuleDict\['q'\]: expected a Module, got str"):
        heads["q"] = "layer"


def test_train_eval_and_dtype_reach_every_branch(rng):
    model = nf.Concat(
        nf.Dropout(0.5, rng=0), nf.Residual(nf.Sequential(nf.Dense(3, 3, rng=1), nf.BatchNorm1d(3)))
    )
    heads = nf.ModuleDict({"x": model})
    heads.eval()
    assert all(not m.training for m in model.modules())
    heads.to(np.float64)
    assert model[1].module[1].running_mean.dtype == np.float64
    x = rng.normal(size=(2, 3))
    np.testing.assert_array_equal(model(x), model(x))


def test_embedding_branches_return_no_input_gradient(rng):
    cat = nf.Concat(nf.Embedding(5, 2, rng=0), nf.Embedding(5, 3, rng=1))
    index = rng.integers(0, 5, size=(4, 6))
    assert cat(index).shape == (4, 6, 5)
    assert cat.backward(np.ones((4, 6, 5), dtype=np.float32)) is None


EVAL_CASES = [
    lambda: nf.Residual(nf.Sequential(nf.Dense(3, 3, rng=0), nf.Dropout(0.5, rng=1))),
    lambda: nf.Concat(
        nf.Dense(3, 2, rng=0), nf.Sequential(nf.Dense(3, 3, rng=1), nf.BatchNorm1d(3))
    ),
    lambda: nf.Add(nf.Dense(3, 3, rng=0), nf.Sequential(nf.LayerNorm(3), nf.Dropout(0.3, rng=1))),
]


@pytest.mark.parametrize("make", EVAL_CASES)
def test_eval_mode_is_deterministic_and_per_sample(make, rng):
    model = make()
    model(rng.normal(size=(6, 3)))
    model.eval()
    x = rng.normal(size=(5, 3)).astype(np.float32)
    y = model(x)
    np.testing.assert_array_equal(model(x), y)
    for i in range(5):
        np.testing.assert_allclose(model(x[i : i + 1])[0], y[i], rtol=1e-5, atol=1e-6)


# ---------------------------------------------------------------------- errors


def test_errors_say_where():
    with pytest.raises(
        nf.ShapeError,
        match=r"Residual: expected module\(x\) of the shape of x \(2, 3\), got \(2, 4\). Pass a projection",
    ):
        nf.Residual(nf.Dense(3, 4))(np.zeros((2, 3)))
    with pytest.raises(
        nf.ShapeError,
        match=r"Concat\(axis=-1\): expected branch outputs that agree on every axis but -1, got \(2, 3\), \(2, 1, 3\)",
    ):
        nf.Concat(nf.Identity(), _AddAxis())(np.zeros((2, 3)))
    with pytest.raises(
        nf.ShapeError, match=r"Add: expected branch outputs of one shape, got \(2, 3\), \(2, 4\)"
    ):
        nf.Add(nf.Identity(), nf.Dense(3, 4))(np.zeros((2, 3)))
    with pytest.raises(
        nf.ShapeError,
        match=r"Concat\[1\] Dense\(in_features=4.*expected input of shape \(N, 4\), got \(2, 3\)",
    ):
        nf.Concat(nf.Identity(), nf.Dense(4, 2))(np.zeros((2, 3)))
    with pytest.raises(TypeError, match=r"Add\[1\]: expected a Module, got function"):
        nf.Add(nf.Identity(), lambda x: x)
    with pytest.raises(ValueError, match=r"Concat: expected at least one branch, got none"):
        nf.Concat()
    with pytest.raises(
        nf.ShapeError, match=r"Residual.projection Dense\(in_features=5.*got \(2, 3\)"
    ):
        nf.Residual(nf.Dense(3, 2), projection=nf.Dense(5, 2))(np.zeros((2, 3)))


class _AddAxis(nf.Module):
    def forward(self, x):
        return x[:, None, :]

    def backward(self, grad_output):
        return grad_output[:, 0, :]


class _WrongGradient(nf.Module):
    def forward(self, x):
        return x

    def backward(self, grad_output):
        return grad_output[:, :1]


def test_a_branch_returning_a_wrong_gradient_shape_is_caught():
    layer = nf.Add(nf.Identity(), _WrongGradient())
    layer(np.zeros((2, 3)))
    with pytest.raises(
        nf.ShapeError,
        match=r"Add\[1\] _WrongGradient\(\): expected backward to return a gradient of the input's shape \(2, 3\), got \(2, 1\)",
    ):
        layer.backward(np.zeros((2, 3)))
