"""Learning-rate schedulers: their rate sequences against PyTorch's, worked examples, state."""

import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import nnframe as nf
from nnframe.optim import schedulers as S

CHECKED_MODULES = []  # no Module or Loss here

STEPS = 30


def make_opt(lr=0.1, momentum=0.9, groups=1):
    params = [nf.Parameter(np.zeros(2, dtype=np.float32)) for _ in range(groups)]
    if groups == 1:
        return nf.optim.SGD(params, lr=lr, momentum=momentum)
    return nf.optim.SGD(
        [{"params": [p], "lr": lr * (i + 1)} for i, p in enumerate(params)],
        lr=lr,
        momentum=momentum,
    )


def our_sequence(build, steps=STEPS, groups=1, **opt_kwargs):
    opt = make_opt(groups=groups, **opt_kwargs)
    sched = build(opt)
    rates = []
    for _ in range(steps):
        rates.append([g["lr"] for g in opt.param_groups])
        sched.step()
    return np.array(rates)


def torch_sequence(torch, build, steps=STEPS, groups=1, lr=0.1, momentum=0.9):
    params = [torch.nn.Parameter(torch.zeros(2)) for _ in range(groups)]
    if groups == 1:
        opt = torch.optim.SGD(params, lr=lr, momentum=momentum)
    else:
        opt = torch.optim.SGD(
            [{"params": [p], "lr": lr * (i + 1)} for i, p in enumerate(params)],
            lr=lr,
            momentum=momentum,
        )
    sched = build(opt)
    rates = []
    for _ in range(steps):
        rates.append([g["lr"] for g in opt.param_groups])
        opt.step()
        sched.step()
    return np.array(rates)


CASES = {
    "LambdaLR": (
        lambda o: S.LambdaLR(o, lambda e: 0.95**e),
        lambda t, o: t.optim.lr_scheduler.LambdaLR(o, lambda e: 0.95**e),
    ),
    "StepLR": (
        lambda o: S.StepLR(o, step_size=7, gamma=0.3),
        lambda t, o: t.optim.lr_scheduler.StepLR(o, step_size=7, gamma=0.3),
    ),
    "MultiStepLR": (
        lambda o: S.MultiStepLR(o, milestones=[15, 4, 22], gamma=0.5),
        lambda t, o: t.optim.lr_scheduler.MultiStepLR(o, milestones=[15, 4, 22], gamma=0.5),
    ),
    "ExponentialLR": (
        lambda o: S.ExponentialLR(o, gamma=0.9),
        lambda t, o: t.optim.lr_scheduler.ExponentialLR(o, gamma=0.9),
    ),
    "CosineAnnealingLR": (
        lambda o: S.CosineAnnealingLR(o, T_max=12, eta_min=0.001),
        lambda t, o: t.optim.lr_scheduler.CosineAnnealingLR(o, T_max=12, eta_min=0.001),
    ),
    "CosineAnnealingWarmRestarts": (
        lambda o: S.CosineAnnealingWarmRestarts(o, T_0=4, T_mult=2, eta_min=0.002),
        lambda t, o: t.optim.lr_scheduler.CosineAnnealingWarmRestarts(
            o, T_0=4, T_mult=2, eta_min=0.002
        ),
    ),
    "CosineAnnealingWarmRestarts_mult1": (
        lambda o: S.CosineAnnealingWarmRestarts(o, T_0=5),
        lambda t, o: t.optim.lr_scheduler.CosineAnnealingWarmRestarts(o, T_0=5),
    ),
    "LinearLR": (
        lambda o: S.LinearLR(o, start_factor=0.1, end_factor=0.9, total_iters=8),
        lambda t, o: t.optim.lr_scheduler.LinearLR(
            o, start_factor=0.1, end_factor=0.9, total_iters=8
        ),
    ),
    "PolynomialLR": (
        lambda o: S.PolynomialLR(o, total_iters=20, power=2.0),
        lambda t, o: t.optim.lr_scheduler.PolynomialLR(o, total_iters=20, power=2.0),
    ),
    "OneCycleLR": (
        lambda o: S.OneCycleLR(o, max_lr=1.0, total_steps=STEPS),
        lambda t, o: t.optim.lr_scheduler.OneCycleLR(o, max_lr=1.0, total_steps=STEPS),
    ),
    "OneCycleLR_linear_three_phase": (
        lambda o: S.OneCycleLR(
            o,
            max_lr=0.5,
            epochs=3,
            steps_per_epoch=10,
            anneal_strategy="linear",
            three_phase=True,
            pct_start=0.25,
        ),
        lambda t, o: t.optim.lr_scheduler.OneCycleLR(
            o,
            max_lr=0.5,
            epochs=3,
            steps_per_epoch=10,
            anneal_strategy="linear",
            three_phase=True,
            pct_start=0.25,
        ),
    ),  # fmt: skip
    "SequentialLR": (
        lambda o: S.SequentialLR(
            o,
            [S.LinearLR(o, start_factor=0.2, total_iters=5), S.CosineAnnealingLR(o, T_max=20)],
            milestones=[5],
        ),
        lambda t, o: t.optim.lr_scheduler.SequentialLR(
            o,
            [
                t.optim.lr_scheduler.LinearLR(o, start_factor=0.2, total_iters=5),
                t.optim.lr_scheduler.CosineAnnealingLR(o, T_max=20),
            ],
            milestones=[5],
        ),
    ),  # fmt: skip
    "SequentialLR_three": (
        lambda o: S.SequentialLR(
            o,
            [
                S.LinearLR(o, start_factor=0.5, total_iters=3),
                S.ExponentialLR(o, gamma=0.8),
                S.StepLR(o, step_size=4, gamma=0.5),
            ],
            milestones=[4, 12],
        ),
        lambda t, o: t.optim.lr_scheduler.SequentialLR(
            o,
            [
                t.optim.lr_scheduler.LinearLR(o, start_factor=0.5, total_iters=3),
                t.optim.lr_scheduler.ExponentialLR(o, gamma=0.8),
                t.optim.lr_scheduler.StepLR(o, step_size=4, gamma=0.5),
            ],
            milestones=[4, 12],
        ),
    ),  # fmt: skip
}


@pytest.mark.parametrize("name", sorted(CASES))
@pytest.mark.parametrize("groups", [1, 2])
def test_matches_pytorch_sequence(name, groups):
    torch = pytest.importorskip("torch")
    ours, theirs = CASES[name]
    a = our_sequence(ours, groups=groups)
    b = torch_sequence(torch, lambda o: theirs(torch, o), groups=groups)
    np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-15)


def test_onecycle_cycles_momentum_like_pytorch():
    torch = pytest.importorskip("torch")
    opt = make_opt()
    sched = S.OneCycleLR(opt, max_lr=1.0, total_steps=20)
    p = torch.nn.Parameter(torch.zeros(1))
    topt = torch.optim.SGD([p], lr=0.1, momentum=0.9)
    tsched = torch.optim.lr_scheduler.OneCycleLR(topt, max_lr=1.0, total_steps=20)
    for _ in range(19):
        assert opt.param_groups[0]["momentum"] == pytest.approx(topt.param_groups[0]["momentum"])
        sched.step()
        topt.step()
        tsched.step()


def test_reduce_on_plateau_matches_pytorch():
    torch = pytest.importorskip("torch")
    losses = [1.0, 0.9, 0.91, 0.92, 0.93, 0.5, 0.5, 0.5, 0.5, 0.5, 0.49999, 0.5, 0.5, 0.5, 0.5]
    opt = make_opt(lr=1.0)
    ours = S.ReduceLROnPlateau(opt, factor=0.5, patience=2, cooldown=1, min_lr=0.1)
    p = torch.nn.Parameter(torch.zeros(1))
    topt = torch.optim.SGD([p], lr=1.0)
    theirs = torch.optim.lr_scheduler.ReduceLROnPlateau(
        topt, factor=0.5, patience=2, cooldown=1, min_lr=0.1
    )
    for value in losses:
        ours.step(value)
        theirs.step(value)
        assert opt.param_groups[0]["lr"] == pytest.approx(topt.param_groups[0]["lr"], rel=1e-12)
    assert opt.param_groups[0]["lr"] < 1.0


def test_step_lr_worked_example():
    rates = our_sequence(lambda o: S.StepLR(o, step_size=2, gamma=0.5), steps=6)[:, 0]
    np.testing.assert_allclose(rates, [0.1, 0.1, 0.05, 0.05, 0.025, 0.025])


def test_cosine_worked_example():
    rates = our_sequence(lambda o: S.CosineAnnealingLR(o, T_max=2), steps=3)[:, 0]
    np.testing.assert_allclose(rates, [0.1, 0.05, 0.0], atol=1e-15)


def test_linear_warmup_worked_example():
    rates = our_sequence(lambda o: S.LinearLR(o, start_factor=0.5, total_iters=2), steps=4)[:, 0]
    np.testing.assert_allclose(rates, [0.05, 0.075, 0.1, 0.1])


def test_reduce_on_plateau_worked_example():
    opt = make_opt(lr=1.0)
    sched = S.ReduceLROnPlateau(opt, factor=0.1, patience=1)
    for value in [1.0, 1.0]:  # one bad epoch: within patience
        sched.step(value)
    assert opt.param_groups[0]["lr"] == 1.0
    sched.step(1.0)  # the second bad epoch exceeds patience=1
    assert opt.param_groups[0]["lr"] == pytest.approx(0.1)
    sched = S.ReduceLROnPlateau(opt, mode="max", factor=0.5, patience=0, min_lr=0.08)
    sched.step(0.5)
    sched.step(0.4)
    assert opt.param_groups[0]["lr"] == pytest.approx(0.08)  # floored at min_lr


@pytest.mark.parametrize("name", sorted(CASES))
def test_state_dict_round_trip_resumes_the_sequence(name):
    build = CASES[name][0]
    full = our_sequence(build, steps=21)
    opt = make_opt()
    sched = build(opt)
    for _ in range(8):
        sched.step()
    state = sched.state_dict()
    assert "optimizer" not in state
    opt2 = make_opt()
    opt2.param_groups[0]["lr"] = opt.param_groups[0]["lr"]
    sched2 = build(opt2)
    sched2.load_state_dict(state)
    rest = []
    for _ in range(12):
        sched2.step()
        rest.append(opt2.param_groups[0]["lr"])
    np.testing.assert_allclose(rest, full[9:21, 0], rtol=1e-12)


def test_plateau_state_dict_round_trip():
    opt = make_opt(lr=1.0)
    sched = S.ReduceLROnPlateau(opt, patience=3)
    for v in [3.0, 2.0, 2.5]:
        sched.step(v)
    state = sched.state_dict()
    other = S.ReduceLROnPlateau(make_opt(lr=1.0))
    other.load_state_dict(state)
    assert other.best == 2.0 and other.num_bad_epochs == 1 and other.patience == 3


@given(
    gamma=st.floats(0.1, 0.99),
    step_size=st.integers(1, 6),
    epoch=st.integers(0, 40),
)
def test_step_lr_closed_form(gamma, step_size, epoch):
    opt = make_opt(lr=0.3)
    sched = S.StepLR(opt, step_size=step_size, gamma=gamma)
    for _ in range(epoch):
        sched.step()
    assert sched.get_last_lr()[0] == pytest.approx(0.3 * gamma ** (epoch // step_size))


@given(T_0=st.integers(1, 6), T_mult=st.integers(1, 3), epoch=st.integers(0, 60))
def test_warm_restarts_jump_equals_stepping(T_0, T_mult, epoch):
    a = S.CosineAnnealingWarmRestarts(make_opt(), T_0=T_0, T_mult=T_mult)
    for _ in range(epoch):
        a.step()
    b = S.CosineAnnealingWarmRestarts(make_opt(), T_0=T_0, T_mult=T_mult)
    b.step(epoch)
    assert a.get_last_lr()[0] == pytest.approx(b.get_last_lr()[0], abs=1e-12)
    assert 0.0 <= a.get_last_lr()[0] <= 0.1 + 1e-12


def test_invalid_arguments_are_clear():
    opt = make_opt()
    with pytest.raises(ValueError, match=r"StepLR: invalid step_size=0"):
        S.StepLR(opt, step_size=0)
    with pytest.raises(ValueError, match=r"OneCycleLR: expected total_steps"):
        S.OneCycleLR(opt, max_lr=1.0)
    with pytest.raises(ValueError, match=r"ReduceLROnPlateau: invalid factor=1.5"):
        S.ReduceLROnPlateau(opt, factor=1.5)
    with pytest.raises(TypeError, match=r"expected an nnframe Optimizer"):
        S.StepLR(object(), step_size=1)
    with pytest.raises(ValueError, match=r"SequentialLR: expected 1 milestone"):
        S.SequentialLR(opt, [S.StepLR(opt, 1), S.StepLR(opt, 2)], milestones=[])
    sched = S.OneCycleLR(opt, max_lr=1.0, total_steps=3)
    for _ in range(3):
        sched.step()
    with pytest.raises(ValueError, match=r"at most total_steps=3"):
        sched.step()


def test_schedulers_exported_from_optim():
    for name in S.__all__:
        assert getattr(nf.optim, name) is getattr(S, name)
    assert math.isclose(
        our_sequence(lambda o: nf.optim.ExponentialLR(o, 0.5), steps=3)[-1, 0], 0.025
    )


# ---------------------------------------------------------------------- issue 15: crafted state
def _steplr():
    p = nf.Parameter(np.ones(2))
    opt = nf.optim.SGD([p], lr=0.1)
    sched = nf.optim.StepLR(opt, step_size=2, gamma=0.5)
    sched.step()
    return sched


@pytest.mark.parametrize(
    "edit",
    [
        {"optimizer": 5},
        {"lr_at": "x"},
        {"last_epoch": "3"},
        {"last_epoch": 1.5},
        {"gamma": float("nan")},
        {"base_lrs": [float("inf")]},
        {"base_lrs": [0.1, 0.2]},
        {"_last_lr": "abc"},
    ],
)
def test_a_crafted_scheduler_state_is_refused_and_changes_nothing(edit):
    sched = _steplr()
    before = dict(vars(sched))
    state = {**sched.state_dict(), **edit}
    with pytest.raises(nf.SchemaError, match="StepLR.load_state_dict: "):
        sched.load_state_dict(state)
    assert vars(sched) == before


def test_a_crafted_plateau_state_cannot_change_its_settings():
    p = nf.Parameter(np.ones(2))
    sched = nf.optim.ReduceLROnPlateau(nf.optim.SGD([p], lr=0.1))
    for edit in ({"mode": "evil"}, {"best": float("nan")}, {"min_lrs": [float("nan")]}):
        with pytest.raises(nf.SchemaError, match="ReduceLROnPlateau.load_state_dict: "):
            sched.load_state_dict({**sched.state_dict(), **edit})
    state = {**sched.state_dict(), "best": 0.5, "num_bad_epochs": 2}
    sched.load_state_dict(state)
    assert sched.best == 0.5 and sched.num_bad_epochs == 2


def test_plateau_refuses_non_finite_floors_and_settings_from_a_file():
    p = nf.Parameter(np.ones(2))
    with pytest.raises(ValueError, match=r"ReduceLROnPlateau: min_lr: expected finite"):
        nf.optim.ReduceLROnPlateau(nf.optim.SGD([p], lr=0.1), min_lr=float("nan"))
    sched = nf.optim.ReduceLROnPlateau(nf.optim.SGD([p], lr=0.1))
    for edit in (
        {"factor": 5.0},
        {"factor": float("inf")},
        {"patience": -1},
        {"eps": float("inf")},
    ):
        with pytest.raises(nf.SchemaError, match=r"ReduceLROnPlateau.load_state_dict: "):
            sched.load_state_dict({**sched.state_dict(), **edit})
    assert sched.factor == 0.1 and sched.patience == 10


def test_scheduler_states_whose_numbers_disagree_are_refused_on_load():
    # found by tests/test_hostile.py (300 examples): accepted, then a raw error at the next step
    p = nf.Parameter(np.ones(2))
    opt = nf.optim.SGD([p], lr=0.1)
    step = nf.optim.StepLR(opt, step_size=2, gamma=0.5)
    for edit in ({"step_size": 0}, {"gamma": 1e300, "last_epoch": 10**6}):
        with pytest.raises(
            nf.SchemaError, match=r"StepLR.load_state_dict: expected a state giving"
        ):
            step.load_state_dict({**step.state_dict(), **edit})
    cycle = nf.optim.OneCycleLR(opt, max_lr=0.1, total_steps=20)
    momentum = opt.param_groups[0]["momentum"]
    state = cycle.state_dict()
    phases = [list(ph) for ph in state["phases"]]
    phases[0][1] = "max_m"  # a name of the wrong place, or a number where a name goes
    for bad in (phases, [[5.0, 1.0, "max", "max_m", "base_m"], state["phases"][1]]):
        with pytest.raises(nf.SchemaError, match=r"OneCycleLR.load_state_dict: phases"):
            cycle.load_state_dict({**state, "phases": bad})
    cycle.load_state_dict({**state, "last_epoch": 7})  # a good state: tried on a stand-in
    assert opt.param_groups[0]["momentum"] == momentum  # the trial never touched the optimizer
    before = opt.param_groups[0]["lr"]
    step.last_epoch, step.gamma = 10**6, 1e300  # set by hand: the step says what went wrong
    with pytest.raises(ValueError, match=r"StepLR.step: expected finite learning rates"):
        step.step()
    assert step.last_epoch == 10**6 and opt.param_groups[0]["lr"] == before


def test_a_lazily_created_optimizer_entry_must_be_an_array():
    # found by tests/test_hostile.py: RMSprop accepted momentum_buffer=None, then a raw TypeError
    p = nf.Parameter(np.ones(2, np.float32))
    opt = nf.optim.RMSprop([p], lr=0.01, momentum=0.9)
    p.grad[:] = 1.0
    opt.step()
    state = opt.state_dict()
    state["state"][0]["momentum_buffer"] = None
    with pytest.raises(
        nf.SchemaError, match=r"RMSprop.load_state_dict: state\[0\].momentum_buffer"
    ):
        opt.load_state_dict(state)
