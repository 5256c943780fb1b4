"""Groups of small parameters are updated as one flat vector: the same numbers as one update
per parameter, bit for bit, with the per-parameter state kept current."""

import numpy as np
import pytest

import nnframe as nf

OPTIMIZERS = [
    (nf.optim.SGD, {"lr": 0.1, "momentum": 0.9, "nesterov": True, "weight_decay": 0.01}),
    (nf.optim.Adam, {"lr": 0.01, "amsgrad": True, "weight_decay": 0.01}),
    (nf.optim.AdamW, {"lr": 0.01}),
    (nf.optim.NAdam, {"lr": 0.01}),
    (nf.optim.RAdam, {"lr": 0.01}),
    (nf.optim.Adamax, {"lr": 0.01}),
    (nf.optim.RMSprop, {"lr": 0.01, "momentum": 0.5, "centered": True}),
    (nf.optim.Adagrad, {"lr": 0.1, "lr_decay": 0.01}),
    (nf.optim.Adadelta, {"lr": 1.0}),
    (nf.optim.Lion, {"lr": 0.01}),
]


def make_params(seed=0):
    rng = np.random.default_rng(seed)
    return [
        nf.Parameter(rng.normal(size=s).astype(np.float32)) for s in [(4, 3), (4,), (2, 4), (2,)]
    ]


def run(cls, kwargs, steps, fuse, params=None, freeze_at=None, seed=1):
    params = params or make_params()
    opt = cls(params, **kwargs)
    if not fuse:
        opt.FUSE_MEAN_SIZE = 0
    rng = np.random.default_rng(seed)
    for t in range(steps):
        if t == freeze_at:
            params[1].requires_grad = False
        for p in params:
            p.grad[...] = rng.normal(size=p.shape)
        opt.step()
    return params, opt


@pytest.mark.parametrize(("cls", "kwargs"), OPTIMIZERS, ids=lambda v: getattr(v, "__name__", ""))
def test_fused_equals_per_parameter_updates(cls, kwargs):
    fused, opt = run(cls, kwargs, 8, fuse=True)
    plain, _ = run(cls, kwargs, 8, fuse=False)
    assert opt._fused, "the group should have been fused"
    for a, b in zip(fused, plain):
        np.testing.assert_array_equal(a.data, b.data)


@pytest.mark.parametrize(
    ("cls", "kwargs"), OPTIMIZERS[:3], ids=lambda v: getattr(v, "__name__", "")
)
def test_fused_state_is_current_and_resumes(cls, kwargs):
    params = make_params()
    data_ids = [id(p.data) for p in params]
    params, opt = run(cls, kwargs, 5, fuse=True, params=params)
    assert [id(p.data) for p in params] == data_ids  # updated in place, never replaced
    assert all(opt.state[p]["step"] == 5 for p in params if "step" in opt.state[p])
    saved = opt.state_dict()
    # continue fused, and continue from the saved state with per-parameter updates
    copies = [nf.Parameter(p.data.copy()) for p in params]
    other = cls(copies, **kwargs)
    other.FUSE_MEAN_SIZE = 0
    other.load_state_dict(saved)
    rng_a, rng_b = np.random.default_rng(9), np.random.default_rng(9)
    for _ in range(3):
        for p in params:
            p.grad[...] = rng_a.normal(size=p.shape)
        for p in copies:
            p.grad[...] = rng_b.normal(size=p.shape)
        opt.step()
        other.step()
    for a, b in zip(params, copies):
        np.testing.assert_array_equal(a.data, b.data)


def test_freezing_a_parameter_falls_back_to_per_parameter_updates():
    kwargs = {"lr": 0.01}
    fused, opt = run(nf.optim.Adam, kwargs, 8, fuse=True, freeze_at=4)
    plain, _ = run(nf.optim.Adam, kwargs, 8, fuse=False, freeze_at=4)
    assert not opt._fused
    for a, b in zip(fused, plain):
        np.testing.assert_array_equal(a.data, b.data)


def test_external_changes_to_parameters_are_seen():
    params = make_params()
    opt = nf.optim.SGD(params, lr=0.1)
    for p in params:
        p.grad[...] = 1.0
    opt.step()
    params[0].data[...] = 5.0  # e.g. load_state_dict on the model between steps
    opt.step()
    np.testing.assert_allclose(params[0].data, 5.0 - 0.1)


def test_large_parameters_are_not_fused():
    big = [nf.Parameter(np.zeros(100_000, dtype=np.float32)) for _ in range(2)]
    opt = nf.optim.SGD(big, lr=0.1)
    opt.step()
    assert not opt._fused


def test_casting_the_model_rebuilds_the_flat_vector():
    model = nf.Sequential(nf.Dense(3, 4, rng=0), nf.Tanh(), nf.Dense(4, 2, rng=1))
    opt = nf.optim.Adam(model.parameters(), lr=0.01)
    for p in model.parameters():
        p.grad[...] = 1.0
    opt.step()
    model.to(np.float64)  # replaces every p.data
    for p in model.parameters():
        p.grad[...] = 1.0
    before = [p.data.copy() for p in model.parameters()]
    opt.step()
    assert all(p.data.dtype == np.float64 for p in model.parameters())
    assert all(np.all(p.data != b) for p, b in zip(model.parameters(), before))


def test_a_fused_step_that_would_overflow_writes_nothing():
    # small parameters: one flat vector, checked once before anything is written back
    model = nf.Sequential(nf.Dense(3, 4, rng=0), nf.Tanh(), nf.Dense(4, 2, rng=1))
    opt = nf.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    for p in model.parameters():
        p.grad[...] = 1.0
    opt.step()  # a first finite step creates the momentum buffers
    before = [p.data.copy() for p in model.parameters()]
    state = {k: v.copy() for k, v in opt.state_dict()["state"][0].items() if hasattr(v, "copy")}
    model[2].weight.grad[0, 0] = np.float32(3e38)
    model[2].weight.grad[0, 1] = np.inf
    with pytest.raises(nf.optim.NonFiniteUpdateError, match=r"SGD.step: expected finite values"):
        opt.step()
    for p, b in zip(model.parameters(), before):
        np.testing.assert_array_equal(p.data, b)
    for k, v in state.items():
        np.testing.assert_array_equal(opt.state_dict()["state"][0][k], v)
