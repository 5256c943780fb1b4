"""Optimizers: each update function against its published equations, 20-step trajectories
against torch.optim in float64, the base class (groups, state, state_dict, errors, clipping),
worked examples with hand-computed numbers, float32 kept and no per-step allocation."""

import copy
import math
import tracemalloc

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import nnframe as nf
from nnframe import optim
from tests.strategies import normal_array, seeds

CHECKED_MODULES: list = []  # no Module or Loss here

ALL = [
    optim.SGD,
    optim.Adam,
    optim.AdamW,
    optim.NAdam,
    optim.RAdam,
    optim.Adamax,
    optim.RMSprop,
    optim.Adagrad,
    optim.Adadelta,
    optim.Lion,
]


# ---------------------------------------------------------------------------------------------
# The published equations, written plainly (new arrays, float64, no tricks): PyTorch's
# documented algorithms (and the Lion paper's). Each takes the parameter, the gradient and the
# state dict, and returns the new parameter and state.
# ---------------------------------------------------------------------------------------------
def _g(theta, grad, wd, maximize, decoupled=False, lr=0.0):
    g = -grad if maximize else grad
    if wd and decoupled:
        theta = theta - lr * wd * theta
    elif wd:
        g = g + wd * theta
    return theta, g


def ref_sgd(theta, grad, s, t, lr, momentum, dampening, nesterov, weight_decay, maximize):
    theta, g = _g(theta, grad, weight_decay, maximize)
    if momentum:
        b = g if t == 1 else momentum * s["b"] + (1 - dampening) * g
        s["b"] = b
        g = g + momentum * b if nesterov else b
    return theta - lr * g


def ref_adam(theta, grad, s, t, lr, betas, eps, weight_decay, amsgrad, maximize, decoupled):
    b1, b2 = betas
    theta, g = _g(theta, grad, weight_decay, maximize, decoupled, lr)
    s["m"] = b1 * s.get("m", 0) + (1 - b1) * g
    s["v"] = b2 * s.get("v", 0) + (1 - b2) * g**2
    m_hat = s["m"] / (1 - b1**t)
    if amsgrad:
        s["vmax"] = np.maximum(s.get("vmax", 0), s["v"])
        v_hat = s["vmax"] / (1 - b2**t)
    else:
        v_hat = s["v"] / (1 - b2**t)
    return theta - lr * m_hat / (np.sqrt(v_hat) + eps)


def ref_nadam(theta, grad, s, t, lr, betas, eps, weight_decay, psi, decoupled, maximize):
    b1, b2 = betas
    theta, g = _g(theta, grad, weight_decay, maximize, decoupled, lr)
    mu = [b1 * (1 - 0.5 * 0.96 ** (i * psi)) for i in range(1, t + 2)]  # mu_1 .. mu_{t+1}
    s["m"] = b1 * s.get("m", 0) + (1 - b1) * g
    s["v"] = b2 * s.get("v", 0) + (1 - b2) * g**2
    m_hat = mu[t] * s["m"] / (1 - math.prod(mu[: t + 1])) + (1 - mu[t - 1]) * g / (
        1 - math.prod(mu[:t])
    )
    v_hat = s["v"] / (1 - b2**t)
    return theta - lr * m_hat / (np.sqrt(v_hat) + eps)


def ref_radam(theta, grad, s, t, lr, betas, eps, weight_decay, decoupled, maximize):
    b1, b2 = betas
    theta, g = _g(theta, grad, weight_decay, maximize, decoupled, lr)
    s["m"] = b1 * s.get("m", 0) + (1 - b1) * g
    s["v"] = b2 * s.get("v", 0) + (1 - b2) * g**2
    m_hat = s["m"] / (1 - b1**t)
    rho_inf = 2 / (1 - b2) - 1
    rho_t = rho_inf - 2 * t * b2**t / (1 - b2**t)
    if rho_t > 5:
        l_t = np.sqrt(1 - b2**t) / (np.sqrt(s["v"]) + eps)
        r_t = np.sqrt((rho_t - 4) * (rho_t - 2) * rho_inf / ((rho_inf - 4) * (rho_inf - 2) * rho_t))
        return theta - lr * m_hat * r_t * l_t
    return theta - lr * m_hat


def ref_adamax(theta, grad, s, t, lr, betas, eps, weight_decay, maximize):
    b1, b2 = betas
    theta, g = _g(theta, grad, weight_decay, maximize)
    s["m"] = b1 * s.get("m", 0) + (1 - b1) * g
    s["u"] = np.maximum(b2 * s.get("u", 0), np.abs(g) + eps)
    return theta - lr * s["m"] / ((1 - b1**t) * s["u"])


def ref_rmsprop(theta, grad, s, t, lr, alpha, eps, weight_decay, momentum, centered, maximize):
    theta, g = _g(theta, grad, weight_decay, maximize)
    s["v"] = alpha * s.get("v", 0) + (1 - alpha) * g**2
    v_tilde = s["v"]
    if centered:
        s["ga"] = alpha * s.get("ga", 0) + (1 - alpha) * g
        v_tilde = v_tilde - s["ga"] ** 2
    if momentum > 0:
        s["b"] = momentum * s.get("b", 0) + g / (np.sqrt(v_tilde) + eps)
        return theta - lr * s["b"]
    return theta - lr * g / (np.sqrt(v_tilde) + eps)


def ref_adagrad(
    theta, grad, s, t, lr, lr_decay, weight_decay, initial_accumulator_value, eps, maximize
):
    theta, g = _g(theta, grad, weight_decay, maximize)
    lr_t = lr / (1 + (t - 1) * lr_decay)
    s["sum"] = s.get("sum", initial_accumulator_value) + g**2
    return theta - lr_t * g / (np.sqrt(s["sum"]) + eps)


def ref_adadelta(theta, grad, s, t, lr, rho, eps, weight_decay, maximize):
    theta, g = _g(theta, grad, weight_decay, maximize)
    s["v"] = rho * s.get("v", 0) + (1 - rho) * g**2
    dx = np.sqrt(s.get("u", 0) + eps) / np.sqrt(s["v"] + eps) * g
    s["u"] = rho * s.get("u", 0) + (1 - rho) * dx**2
    return theta - lr * dx


def ref_lion(theta, grad, s, t, lr, betas, weight_decay, maximize):
    b1, b2 = betas
    g = -grad if maximize else grad
    m = s.get("m", 0)
    c = b1 * m + (1 - b1) * g
    theta = theta - lr * (np.sign(c) + weight_decay * theta)
    s["m"] = b2 * m + (1 - b2) * g
    return theta


# the pure update function of each algorithm, called the way its optimizer calls it
def run_update(name, theta, grad, st_, t, hp, work):
    """Applies one step of the library's pure function in place; ``st_`` holds its state."""
    if name == "sgd":
        if "b" not in st_:
            st_["b"] = np.zeros_like(theta)
        optim.sgd_update(theta, grad, st_["b"], first_step=t == 1, work=work, **hp)
    elif name == "adam":
        for k in ("m", "v", "vmax"):
            st_.setdefault(k, np.zeros_like(theta))
        b1, b2 = hp["betas"]
        kw = {k: v for k, v in hp.items() if k not in ("betas", "decoupled")}
        optim.adam_update(
            theta, grad, st_["m"], st_["v"], st_["vmax"], step=t, beta1=b1, beta2=b2,
            decoupled_weight_decay=hp["decoupled"], work=work, **kw,
        )  # fmt: skip
    elif name == "nadam":
        for k in ("m", "v"):
            st_.setdefault(k, np.zeros_like(theta))
        b1, b2 = hp["betas"]
        st_["mu_product"] = optim.nadam_update(
            theta, grad, st_["m"], st_["v"], step=t, mu_product=st_.get("mu_product", 1.0),
            lr=hp["lr"], beta1=b1, beta2=b2, eps=hp["eps"], weight_decay=hp["weight_decay"],
            momentum_decay=hp["psi"], decoupled_weight_decay=hp["decoupled"],
            maximize=hp["maximize"], work=work,
        )  # fmt: skip
    elif name == "radam":
        for k in ("m", "v"):
            st_.setdefault(k, np.zeros_like(theta))
        b1, b2 = hp["betas"]
        optim.radam_update(
            theta, grad, st_["m"], st_["v"], step=t, lr=hp["lr"], beta1=b1, beta2=b2,
            eps=hp["eps"], weight_decay=hp["weight_decay"],
            decoupled_weight_decay=hp["decoupled"], maximize=hp["maximize"], work=work,
        )  # fmt: skip
    elif name == "adamax":
        for k in ("m", "u"):
            st_.setdefault(k, np.zeros_like(theta))
        b1, b2 = hp["betas"]
        kw = {k: v for k, v in hp.items() if k != "betas"}
        optim.adamax_update(
            theta, grad, st_["m"], st_["u"], step=t, beta1=b1, beta2=b2, work=work, **kw
        )
    elif name == "rmsprop":
        for k in ("v", "ga", "b"):
            st_.setdefault(k, np.zeros_like(theta))
        optim.rmsprop_update(theta, grad, st_["v"], st_["ga"], st_["b"], work=work, **hp)
    elif name == "adagrad":
        st_.setdefault("sum", np.full_like(theta, hp["initial_accumulator_value"]))
        kw = {k: v for k, v in hp.items() if k != "initial_accumulator_value"}
        optim.adagrad_update(theta, grad, st_["sum"], step=t, work=work, **kw)
    elif name == "adadelta":
        for k in ("v", "u"):
            st_.setdefault(k, np.zeros_like(theta))
        optim.adadelta_update(theta, grad, st_["v"], st_["u"], work=work, **hp)
    elif name == "lion":
        st_.setdefault("m", np.zeros_like(theta))
        b1, b2 = hp["betas"]
        optim.lion_update(
            theta, grad, st_["m"], lr=hp["lr"], beta1=b1, beta2=b2,
            weight_decay=hp["weight_decay"], maximize=hp["maximize"], work=work,
        )  # fmt: skip


REFERENCES = {
    "sgd": ref_sgd,
    "adam": ref_adam,
    "nadam": ref_nadam,
    "radam": ref_radam,
    "adamax": ref_adamax,
    "rmsprop": ref_rmsprop,
    "adagrad": ref_adagrad,
    "adadelta": ref_adadelta,
    "lion": ref_lion,
}


def draw_hyper(name, data):
    """Hyperparameters of one algorithm, with the options drawn."""
    b = st.booleans()
    wd = st.sampled_from([0.0, 0.1])
    betas = st.sampled_from([(0.9, 0.999), (0.8, 0.9), (0.5, 0.99)])
    d = data.draw
    if name == "sgd":
        nesterov = d(b)
        return dict(
            lr=0.1, momentum=0.9 if nesterov else d(st.sampled_from([0.0, 0.5])),
            dampening=0.0 if nesterov else d(st.sampled_from([0.0, 0.3])),
            nesterov=nesterov, weight_decay=d(wd), maximize=d(b),
        )  # fmt: skip
    if name == "adam":
        return dict(
            lr=0.05, betas=d(betas), eps=1e-8, weight_decay=d(wd), amsgrad=d(b),
            maximize=d(b), decoupled=d(b),
        )  # fmt: skip
    if name == "nadam":
        return dict(
            lr=0.05, betas=d(betas), eps=1e-8, weight_decay=d(wd),
            psi=d(st.sampled_from([4e-3, 0.1])), decoupled=d(b), maximize=d(b),
        )  # fmt: skip
    if name == "radam":
        return dict(
            lr=0.05, betas=d(betas), eps=1e-8, weight_decay=d(wd), decoupled=d(b), maximize=d(b)
        )
    if name == "adamax":
        return dict(lr=0.05, betas=d(betas), eps=1e-8, weight_decay=d(wd), maximize=d(b))
    if name == "rmsprop":
        return dict(
            lr=0.01, alpha=d(st.sampled_from([0.99, 0.9])), eps=1e-8, weight_decay=d(wd),
            momentum=d(st.sampled_from([0.0, 0.9])), centered=d(b), maximize=d(b),
        )  # fmt: skip
    if name == "adagrad":
        return dict(
            lr=0.1, lr_decay=d(st.sampled_from([0.0, 0.1])), weight_decay=d(wd),
            initial_accumulator_value=d(st.sampled_from([0.0, 0.5])), eps=1e-10, maximize=d(b),
        )  # fmt: skip
    if name == "adadelta":
        return dict(
            lr=d(st.sampled_from([1.0, 0.5])), rho=d(st.sampled_from([0.9, 0.5])), eps=1e-6,
            weight_decay=d(wd), maximize=d(b),
        )  # fmt: skip
    return dict(
        lr=0.01,
        betas=d(st.sampled_from([(0.9, 0.99), (0.95, 0.98)])),
        weight_decay=d(wd),
        maximize=d(b),
    )


@pytest.mark.parametrize("name", sorted(REFERENCES))
@given(
    seed=seeds, data=st.data(), shape=st.sampled_from([(3,), (2, 3), (1, 2, 2)]), lend=st.booleans()
)
def test_update_function_matches_published_equations(name, seed, data, shape, lend):
    hp = draw_hyper(name, data)
    rng = np.random.default_rng(seed)
    theta = rng.normal(size=shape)
    expected = theta.copy()
    mine: dict = {}
    ref: dict = {}
    work = (np.empty(shape), np.empty(shape)) if lend else None
    for t in range(1, 7):  # past RAdam's rho_t > 5 threshold for small beta2
        grad = rng.normal(size=shape)
        grad_before = grad.copy()
        run_update(name, theta, grad, mine, t, hp, work)
        expected = REFERENCES[name](expected, grad, ref, t, **hp)
        np.testing.assert_allclose(theta, expected, rtol=1e-10, atol=1e-12, err_msg=f"step {t}")
        np.testing.assert_array_equal(grad, grad_before)  # the gradient is never modified


def test_radam_takes_both_branches():
    # beta2 = 0.999: rho_t <= 5 for the first steps (plain momentum), > 5 later (rectified)
    theta, grad, s = np.zeros(2), np.ones(2), {}
    moves = []
    for t in range(1, 9):
        before = theta.copy()
        run_update("radam", theta, grad, s, t, dict(lr=1.0, betas=(0.9, 0.999), eps=0.0,
                   weight_decay=0.0, decoupled=False, maximize=False), None)  # fmt: skip
        moves.append(before[0] - theta[0])
    # un-rectified steps move by exactly lr * m_hat = 1; rectified ones by r_t * l_t < 1
    np.testing.assert_allclose(moves[:5], 1.0)
    assert all(0 < m < 1 for m in moves[5:])


# ---------------------------------------------------------------------------------------------
# Worked examples with hand-computed numbers
# ---------------------------------------------------------------------------------------------
def test_sgd_momentum_worked_example():
    # lr = 0.1, momentum = 0.9, p0 = 1, grads 2 then 1:
    # step 1: buf = 2 (the first gradient itself);  p = 1 - 0.1 * 2 = 0.8
    # step 2: buf = 0.9 * 2 + 1 = 2.8;               p = 0.8 - 0.1 * 2.8 = 0.52
    p = nf.Parameter(np.array([1.0]))
    opt = optim.SGD([p], lr=0.1, momentum=0.9)
    p.grad[:] = 2.0
    opt.step()
    np.testing.assert_allclose(p.data, [0.8], rtol=1e-14)
    np.testing.assert_allclose(opt.state[p]["momentum_buffer"], [2.0])
    p.grad[:] = 1.0
    opt.step()
    np.testing.assert_allclose(p.data, [0.52], rtol=1e-14)
    np.testing.assert_allclose(opt.state[p]["momentum_buffer"], [2.8])


def test_adam_worked_example():
    # lr = 0.1, betas = (0.9, 0.999), eps = 1e-8, p0 = 1, grads 2 then 1:
    # step 1: m = 0.1 * 2 = 0.2, v = 0.001 * 4 = 0.004; m_hat = 0.2 / 0.1 = 2,
    #         v_hat = 0.004 / 0.001 = 4; p = 1 - 0.1 * 2 / (2 + 1e-8) = 0.9 (+5e-10)
    # step 2: m = 0.9 * 0.2 + 0.1 * 1 = 0.28, v = 0.999 * 0.004 + 0.001 * 1 = 0.004996;
    #         m_hat = 0.28 / 0.19 = 1.4736842105263, v_hat = 0.004996 / 0.001999 = 2.4992496248124,
    #         sqrt(v_hat) = 1.5809015228...; p = 0.9 - 0.1 * 1.4736842 / 1.5809015 = 0.8067819...
    p = nf.Parameter(np.array([1.0]))
    opt = optim.Adam([p], lr=0.1)
    p.grad[:] = 2.0
    opt.step()
    np.testing.assert_allclose(p.data, [0.9 + 5e-10], rtol=1e-12)
    np.testing.assert_allclose(opt.state[p]["exp_avg"], [0.2])
    np.testing.assert_allclose(opt.state[p]["exp_avg_sq"], [0.004])
    p.grad[:] = 1.0
    opt.step()
    np.testing.assert_allclose(opt.state[p]["exp_avg"], [0.28])
    np.testing.assert_allclose(opt.state[p]["exp_avg_sq"], [0.004996])
    np.testing.assert_allclose(
        p.data, [0.9 - 0.1 * (0.28 / 0.19) / math.sqrt(0.004996 / 0.001999)], rtol=1e-8
    )
    np.testing.assert_allclose(p.data, [0.80678198], atol=1e-8)


def test_lion_worked_example():
    # lr = 0.1, betas = (0.9, 0.99), weight_decay = 0.5, p0 = 2, grads -3 then 1:
    # step 1: c = 0.1 * -3 < 0 -> sign -1;  p = 2 - 0.1 * (-1 + 0.5 * 2) = 2.0;   m = 0.01 * -3 = -0.03
    # step 2: c = 0.9 * -0.03 + 0.1 * 1 = 0.073 > 0;  p = 2 - 0.1 * (1 + 1) = 1.8
    p = nf.Parameter(np.array([2.0]))
    opt = optim.Lion([p], lr=0.1, weight_decay=0.5)
    p.grad[:] = -3.0
    opt.step()
    np.testing.assert_allclose(p.data, [2.0])
    np.testing.assert_allclose(opt.state[p]["exp_avg"], [-0.03])
    p.grad[:] = 1.0
    opt.step()
    np.testing.assert_allclose(p.data, [1.8])


# ---------------------------------------------------------------------------------------------
# PyTorch parity: 20 steps in float64 on a fixed problem, same start, same gradients
# ---------------------------------------------------------------------------------------------
def problem(seed=0):
    """Two parameters (a matrix and a vector) and a gradient function: the gradient of
    sum_i 0.5 * x_i^T A_i x_i + b_i^T x_i + 0.1 * sum(sin(3 x_i)) (non-quadratic, so that
    trajectories diverge quickly when an update is wrong)."""
    rng = np.random.default_rng(seed)
    shapes = [(3, 4), (5,)]
    start = [rng.normal(size=s) for s in shapes]
    mats = []
    for s in shapes:
        n = math.prod(s)
        q = rng.normal(size=(n, n))
        mats.append((q @ q.T / n + 0.1 * np.eye(n), rng.normal(size=n)))

    def grad(i, x):
        a, b = mats[i]
        return (a @ x.ravel() + b).reshape(x.shape) + 0.3 * np.cos(3 * x)

    return start, grad


TORCH_CASES = [
    ("SGD", dict(lr=0.05)),
    ("SGD", dict(lr=0.05, momentum=0.9)),
    ("SGD", dict(lr=0.05, momentum=0.9, dampening=0.5, weight_decay=0.1)),
    ("SGD", dict(lr=0.05, momentum=0.9, nesterov=True, weight_decay=0.1)),
    ("SGD", dict(lr=0.05, momentum=0.5, maximize=True)),
    ("Adam", dict(lr=0.05)),
    ("Adam", dict(lr=0.05, amsgrad=True, weight_decay=0.1)),
    ("Adam", dict(lr=0.05, betas=(0.8, 0.9), maximize=True)),
    ("Adam", dict(lr=0.05, weight_decay=0.1, decoupled_weight_decay=True, amsgrad=True)),
    ("AdamW", dict(lr=0.05)),
    ("AdamW", dict(lr=0.05, weight_decay=0.1, amsgrad=True, maximize=True)),
    ("NAdam", dict(lr=0.05)),
    ("NAdam", dict(lr=0.05, weight_decay=0.1, momentum_decay=0.01)),
    ("NAdam", dict(lr=0.05, weight_decay=0.1, decoupled_weight_decay=True, maximize=True)),
    ("RAdam", dict(lr=0.05)),
    ("RAdam", dict(lr=0.05, betas=(0.8, 0.9), weight_decay=0.1)),
    ("RAdam", dict(lr=0.05, weight_decay=0.1, decoupled_weight_decay=True, maximize=True)),
    ("Adamax", dict(lr=0.05)),
    ("Adamax", dict(lr=0.05, betas=(0.8, 0.9), weight_decay=0.1, maximize=True)),
    ("RMSprop", dict(lr=0.01)),
    ("RMSprop", dict(lr=0.01, centered=True)),
    ("RMSprop", dict(lr=0.01, momentum=0.9, weight_decay=0.1)),
    ("RMSprop", dict(lr=0.01, alpha=0.9, centered=True, momentum=0.5, maximize=True)),
    ("Adagrad", dict(lr=0.1)),
    ("Adagrad", dict(lr=0.1, lr_decay=0.05, initial_accumulator_value=0.3, weight_decay=0.1)),
    ("Adagrad", dict(lr=0.1, maximize=True)),
    ("Adadelta", dict()),
    ("Adadelta", dict(lr=0.5, rho=0.8, weight_decay=0.1)),
    ("Adadelta", dict(maximize=True)),
]


@pytest.mark.parametrize("name, kwargs", TORCH_CASES, ids=[f"{n}-{k}" for n, k in TORCH_CASES])
def test_trajectory_matches_torch(name, kwargs):
    torch = pytest.importorskip("torch")
    # torch keeps scalar state (NAdam's mu_product, the step) in the default dtype: float64 here
    default = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        compare_with_torch(torch, name, kwargs)
    finally:
        torch.set_default_dtype(default)


def compare_with_torch(torch, name, kwargs):
    start, grad = problem()
    mine = [nf.Parameter(x.copy()) for x in start]
    theirs = [torch.tensor(x.copy(), requires_grad=True) for x in start]
    # two groups with their own lr, so that per-group options are exercised too
    lr = kwargs.get("lr", 1.0)
    groups = lambda ps: [{"params": [ps[0]]}, {"params": [ps[1]], "lr": lr / 2}]  # noqa: E731
    opt = getattr(optim, name)(groups(mine), **kwargs)
    ref = getattr(torch.optim, name)(groups(theirs), **kwargs)
    for step in range(20):
        for i, (p, q) in enumerate(zip(mine, theirs)):
            g = grad(i, p.data)
            p.grad[...] = g
            q.grad = torch.from_numpy(grad(i, q.detach().numpy()))
        opt.step()
        ref.step()
        for p, q in zip(mine, theirs):
            np.testing.assert_allclose(
                p.data, q.detach().numpy(), rtol=1e-10, atol=1e-12, err_msg=f"step {step + 1}"
            )
    assert not np.allclose(mine[0].data, start[0])  # it moved


@pytest.mark.parametrize("amsgrad", [False, True])
def test_adamw_is_adam_with_decoupled_decay(amsgrad):
    start, grad = problem(1)
    a = [nf.Parameter(x.copy()) for x in start]
    b = [nf.Parameter(x.copy()) for x in start]
    oa = optim.AdamW(a, lr=0.01, weight_decay=0.3, amsgrad=amsgrad)
    ob = optim.Adam(b, lr=0.01, weight_decay=0.3, amsgrad=amsgrad, decoupled_weight_decay=True)
    for _ in range(5):
        for i in range(2):
            a[i].grad[...] = grad(i, a[i].data)
            b[i].grad[...] = grad(i, b[i].data)
        oa.step()
        ob.step()
    for p, q in zip(a, b):
        np.testing.assert_array_equal(p.data, q.data)


# ---------------------------------------------------------------------------------------------
# The base: state_dict, groups, frozen parameters, clipping, errors
# ---------------------------------------------------------------------------------------------
OPTIONS = {
    optim.SGD: dict(lr=0.05, momentum=0.9, nesterov=True),
    optim.Adam: dict(lr=0.05, amsgrad=True),
    optim.AdamW: dict(lr=0.05),
    optim.NAdam: dict(lr=0.05),
    optim.RAdam: dict(lr=0.05),
    optim.Adamax: dict(lr=0.05),
    optim.RMSprop: dict(lr=0.01, centered=True, momentum=0.5),
    optim.Adagrad: dict(lr=0.1, lr_decay=0.01),
    optim.Adadelta: dict(),
    optim.Lion: dict(lr=0.01, weight_decay=0.1),
}


def run_steps(opt, params, grad, n):
    for _ in range(n):
        for i, p in enumerate(params):
            p.grad[...] = grad(i, p.data)
        opt.step()


@pytest.mark.parametrize("cls", ALL, ids=lambda c: c.__name__)
def test_state_dict_round_trip_continues_the_trajectory(cls):
    start, grad = problem(2)
    a = [nf.Parameter(x.copy()) for x in start]
    opt_a = cls(a, **OPTIONS[cls])
    run_steps(opt_a, a, grad, 5)
    saved = opt_a.state_dict()
    # a fresh optimizer (other defaults) on copies of the parameters, loaded from the save
    b = [nf.Parameter(p.data.copy()) for p in a]
    opt_b = cls(b, lr=0.5)
    opt_b.load_state_dict(saved)
    assert opt_b.param_groups[0]["lr"] == opt_a.param_groups[0]["lr"]
    run_steps(opt_a, a, grad, 5)
    run_steps(opt_b, b, grad, 5)
    for p, q in zip(a, b):
        np.testing.assert_array_equal(p.data, q.data)


@pytest.mark.parametrize("cls", ALL, ids=lambda c: c.__name__)
def test_state_dict_is_a_copy(cls):
    p = nf.Parameter(np.ones(3))
    opt = cls([p], **OPTIONS[cls])
    p.grad[:] = 1.0
    opt.step()
    saved = opt.state_dict()
    snapshot = {
        k: (v.copy() if isinstance(v, np.ndarray) else v) for k, v in saved["state"][0].items()
    }
    opt.step()
    for k, v in snapshot.items():
        if isinstance(v, np.ndarray):
            np.testing.assert_array_equal(saved["state"][0][k], v)
        else:
            assert saved["state"][0][k] == v
    assert saved["param_groups"][0]["params"] == [0]


def test_load_state_dict_casts_to_the_parameter_dtype():
    p64 = nf.Parameter(np.ones(3))
    opt = optim.Adam([p64], lr=0.1)
    p64.grad[:] = 1.0
    opt.step()
    p32 = nf.Parameter(np.ones(3, dtype=np.float32))
    opt32 = optim.Adam([p32])
    opt32.load_state_dict(opt.state_dict())
    assert opt32.state[p32]["exp_avg"].dtype == np.float32


def test_load_state_dict_errors():
    p, q = nf.Parameter(np.ones(3)), nf.Parameter(np.ones(2))
    opt = optim.Adam([p, q])
    p.grad[:] = 1.0
    opt.step()
    saved = opt.state_dict()
    with pytest.raises(
        ValueError,
        match=r"Adam.load_state_dict: expected 2 group\(s\) of sizes \[1, 1\], got 1 of sizes \[2\]",
    ):
        optim.Adam([{"params": [p]}, {"params": [q]}]).load_state_dict(saved)
    other = optim.Adam([q, p])  # same count, but the state of a 3-vector lands on a 2-vector
    with pytest.raises(
        ValueError,
        match=r"expected state matching the parameters, got state\[0\]\['exp_avg'\] of shape \(3,\) for a parameter of shape \(2,\)",
    ):
        other.load_state_dict(saved)
    assert other.state == {}  # nothing half-loaded


def test_param_groups_per_group_options():
    a, b = nf.Parameter(np.ones(2)), nf.Parameter(np.ones(2))
    opt = optim.SGD([{"params": [a]}, {"params": [b], "lr": 0.01}], lr=0.1, momentum=0.0)
    assert opt.param_groups[0]["lr"] == 0.1 and opt.param_groups[1]["lr"] == 0.01
    assert opt.param_groups[1]["momentum"] == 0.0  # the rest come from the defaults
    a.grad[:] = 1.0
    b.grad[:] = 1.0
    opt.step()
    np.testing.assert_allclose(a.data, 0.9)
    np.testing.assert_allclose(b.data, 0.99)
    c = nf.Parameter(np.ones(1))
    opt.add_param_group({"params": c, "lr": 1.0})
    c.grad[:] = 0.5
    opt.step()
    np.testing.assert_allclose(c.data, 0.5)
    assert opt.parameters() == [a, b, c]


def test_group_errors():
    a, b = nf.Parameter(np.ones(2)), nf.Parameter(np.ones(2))
    with pytest.raises(
        ValueError, match="SGD: a parameter appears in more than one parameter group"
    ):
        optim.SGD([{"params": [a]}, {"params": [a, b]}])
    with pytest.raises(
        ValueError, match="SGD: a parameter appears more than once in a parameter group"
    ):
        optim.SGD([a, b, a])
    with pytest.raises(
        ValueError, match=r"SGD: expected options among .*, got unknown \['betas'\]"
    ):
        optim.SGD([{"params": [a], "betas": (0.9, 0.9)}])
    with pytest.raises(ValueError, match=r"SGD: invalid lr=-1 \(must be >= 0\)"):
        optim.SGD([{"params": [a]}, {"params": [b], "lr": -1}])
    with pytest.raises(
        TypeError, match="SGD: expected all Parameters or all parameter-group dicts, got a mix"
    ):
        optim.SGD([{"params": [a]}, b])
    with pytest.raises(TypeError, match="SGD: expected Parameters, got ndarray"):
        optim.SGD([np.ones(2)])
    with pytest.raises(
        TypeError, match="SGD: expected an iterable of Parameters, got a single Parameter"
    ):
        optim.SGD(a)
    with pytest.raises(ValueError, match="SGD: expected a parameter group with a 'params' key"):
        optim.SGD([{"lr": 0.1}])


@pytest.mark.parametrize("cls", ALL, ids=lambda c: c.__name__)
def test_empty_parameter_list(cls):
    with pytest.raises(
        ValueError,
        match=f"{cls.__name__}: expected a non-empty list of parameters, got an empty one",
    ):
        cls([])
    with pytest.raises(ValueError, match="non-empty"):
        cls(iter([]))


HYPER_ERRORS = [
    (optim.SGD, dict(lr=-0.01), r"SGD: invalid lr=-0.01 \(must be >= 0\)"),
    (optim.SGD, dict(momentum=-0.5), r"SGD: invalid momentum=-0.5 \(must be >= 0\)"),
    (optim.SGD, dict(weight_decay=-1.0), r"SGD: invalid weight_decay=-1.0 \(must be >= 0\)"),
    (
        optim.SGD,
        dict(nesterov=True),
        r"SGD: invalid nesterov=True \(needs momentum > 0 and dampening = 0\)",
    ),
    (optim.SGD, dict(nesterov=True, momentum=0.9, dampening=0.1), r"SGD: invalid nesterov=True"),
    (optim.SGD, dict(clip_norm=0.0), r"SGD: invalid clip_norm=0.0 \(must be > 0\)"),
    (optim.SGD, dict(clip_value=-1.0), r"SGD: invalid clip_value=-1.0 \(must be > 0\)"),
    (optim.SGD, dict(lr=float("nan")), r"SGD: invalid lr=nan"),
    (
        optim.Adam,
        dict(betas=(1.0, 0.999)),
        r"Adam: invalid betas=\(1.0, 0.999\) \(expected two values in \[0, 1\)\)",
    ),
    (optim.Adam, dict(betas=(0.9,)), r"Adam: invalid betas=\(0.9,\)"),
    (optim.Adam, dict(eps=-1e-8), r"Adam: invalid eps=-1e-08 \(must be > 0\)"),
    (optim.AdamW, dict(weight_decay=-0.01), r"AdamW: invalid weight_decay=-0.01 \(must be >= 0\)"),
    (optim.AdamW, dict(lr=-1), r"AdamW: invalid lr=-1 \(must be >= 0\)"),
    (
        optim.NAdam,
        dict(momentum_decay=-1.0),
        r"NAdam: invalid momentum_decay=-1.0 \(must be >= 0\)",
    ),
    (optim.NAdam, dict(betas=(0.9, -0.1)), r"NAdam: invalid betas=\(0.9, -0.1\)"),
    (optim.RAdam, dict(betas=(0.9, 1.5)), r"RAdam: invalid betas=\(0.9, 1.5\)"),
    (optim.Adamax, dict(eps=-1.0), r"Adamax: invalid eps=-1.0 \(must be > 0\)"),
    (optim.RMSprop, dict(alpha=-0.1), r"RMSprop: invalid alpha=-0.1 \(must be >= 0\)"),
    (optim.RMSprop, dict(momentum=-0.1), r"RMSprop: invalid momentum=-0.1 \(must be >= 0\)"),
    (optim.Adagrad, dict(lr_decay=-0.1), r"Adagrad: invalid lr_decay=-0.1 \(must be >= 0\)"),
    (
        optim.Adagrad,
        dict(initial_accumulator_value=-1.0),
        r"Adagrad: invalid initial_accumulator_value=-1.0 \(must be >= 0\)",
    ),
    (optim.Adadelta, dict(rho=1.5), r"Adadelta: invalid rho=1.5 \(must be in \[0, 1\]\)"),
    (optim.Lion, dict(betas=(0.9, 1.0)), r"Lion: invalid betas=\(0.9, 1.0\)"),
    (optim.Lion, dict(lr=-1e-4), r"Lion: invalid lr=-0.0001 \(must be >= 0\)"),
]


@pytest.mark.parametrize("cls, kwargs, message", HYPER_ERRORS)
def test_hyperparameter_errors(cls, kwargs, message):
    p = nf.Parameter(np.ones(2))
    with pytest.raises(ValueError, match=message):
        cls([p], **kwargs)


@pytest.mark.parametrize("cls", ALL, ids=lambda c: c.__name__)
def test_frozen_parameters_are_skipped(cls):
    live = nf.Parameter(np.ones(3))
    frozen = nf.Parameter(np.ones(3), requires_grad=False)
    opt = cls([live, frozen], **OPTIONS[cls])
    live.grad[:] = 1.0
    frozen.grad[:] = 1.0
    opt.step()
    np.testing.assert_array_equal(frozen.data, 1.0)
    assert frozen not in opt.state and live in opt.state
    assert not np.allclose(live.data, 1.0)


@pytest.mark.parametrize("cls", ALL, ids=lambda c: c.__name__)
@given(seed=seeds)
def test_clip_norm_option_equals_clipping_first(cls, seed):
    start, _ = problem(3)
    grads = [normal_array(seed + i, x.shape, scale=3.0) for i, x in enumerate(start)]
    a = [nf.Parameter(x.copy()) for x in start]
    b = [nf.Parameter(x.copy()) for x in start]
    opt_a = cls(a, clip_norm=0.5, **OPTIONS[cls])
    opt_b = cls(b, **OPTIONS[cls])
    for _ in range(2):
        for p, q, g in zip(a, b, grads):
            p.grad[...] = g
            q.grad[...] = g
        opt_a.step()
        norm = nf.clip_grad_norm_(b, 0.5)
        opt_b.step()
        assert opt_a.last_grad_norm == norm
    for p, q in zip(a, b):
        np.testing.assert_array_equal(p.data, q.data)
        np.testing.assert_array_equal(p.grad, q.grad)  # the clipped gradients are left in .grad


@pytest.mark.parametrize("cls", ALL, ids=lambda c: c.__name__)
def test_clip_value_option_equals_clipping_first(cls):
    start, grad = problem(4)
    a = [nf.Parameter(x.copy()) for x in start]
    b = [nf.Parameter(x.copy()) for x in start]
    opt_a = cls(a, clip_value=0.2, **OPTIONS[cls])
    opt_b = cls(b, **OPTIONS[cls])
    for _ in range(3):
        for i, (p, q) in enumerate(zip(a, b)):
            p.grad[...] = grad(i, p.data)
            q.grad[...] = grad(i, q.data)
        opt_a.step()
        nf.clip_grad_value_(b, 0.2)
        opt_b.step()
    for p, q in zip(a, b):
        np.testing.assert_array_equal(p.data, q.data)
        assert np.abs(p.grad).max() <= 0.2


@pytest.mark.parametrize("cls", ALL, ids=lambda c: c.__name__)
def test_float32_kept_in_place_and_without_allocation(cls):
    rng = np.random.default_rng(0)
    params = [nf.Parameter(rng.normal(size=(256, 256)).astype(np.float32)) for _ in range(2)]
    data_ids = [id(p.data) for p in params]
    opt = cls(params, **OPTIONS[cls])
    for p in params:
        p.grad[...] = rng.normal(size=p.shape).astype(np.float32)
    opt.step()  # the first step creates the state and the scratch buffers
    tracemalloc.start()
    try:
        opt.step()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < params[0].data.nbytes // 4, f"{cls.__name__}.step allocated {peak} bytes"
    assert [id(p.data) for p in params] == data_ids
    for p in params:
        assert p.data.dtype == np.float32 and np.isfinite(p.data).all()
        for v in opt.state[p].values():
            if isinstance(v, np.ndarray):
                assert v.dtype == np.float32


def test_zero_grad_closure_and_repr():
    p = nf.Parameter(np.ones(2))
    opt = optim.Adam([p], lr=0.1)
    p.grad[:] = 3.0
    opt.zero_grad()
    np.testing.assert_array_equal(p.grad, 0.0)

    def closure():
        p.grad[:] = 1.0
        return 42.0

    assert opt.step(closure) == 42.0
    assert not np.allclose(p.data, 1.0)
    text = repr(opt)
    assert text.startswith("Adam (\nParameter Group 0\n") and "    lr: 0.1" in text


def test_momentum_switched_on_later_starts_afresh():
    # a scheduler may raise momentum from 0: the buffer is then created from the gradient
    p = nf.Parameter(np.ones(1))
    opt = optim.SGD([p], lr=0.1)
    p.grad[:] = 1.0
    opt.step()
    opt.param_groups[0]["momentum"] = 0.9
    opt.step()
    np.testing.assert_allclose(p.data, [0.8])
    opt.step()  # buf = 0.9 * 1 + 1
    np.testing.assert_allclose(p.data, [0.8 - 0.19])


def test_optimizers_train_a_tiny_model():
    # every optimizer lowers the loss of a small regression from a fixed seed
    rng = np.random.default_rng(0)
    x = rng.normal(size=(32, 3))
    y = x @ np.array([[1.0], [-2.0], [0.5]]) + 0.3
    # Adadelta's first steps are ~sqrt(eps) long: a larger eps gets it going within 30 steps
    kwargs = {optim.Adadelta: dict(lr=1.0, eps=1e-2), optim.Lion: dict(lr=0.01)}
    for cls in ALL:
        model = nf.Dense(3, 1, rng=np.random.default_rng(1)).to(np.float64)
        loss = nf.MSELoss()
        opt = cls(model.parameters(), **kwargs.get(cls, dict(lr=0.05)))
        first = None
        for _ in range(30):
            opt.zero_grad()
            value = loss(model(x), y)
            first = value if first is None else first
            model.backward(loss.backward())
            opt.step()
        assert loss(model(x), y) < 0.7 * first, cls.__name__


@pytest.mark.parametrize("cls", ALL, ids=lambda c: c.__name__)
def test_blocked_updates_equal_whole_ones(cls):
    # apply_update runs the element-wise math on blocks of CHUNK elements: the result is
    # bit-identical to one whole-array call, for C- and F-ordered parameters, and a parameter
    # whose grad has another layout than its data is updated whole
    rng = np.random.default_rng(6)

    def make():
        r = np.random.default_rng(6)
        ps = [
            nf.Parameter(r.normal(size=(5, 7))),
            nf.Parameter(r.normal(size=(3,))),
            nf.Parameter(np.asfortranarray(r.normal(size=(4, 6)))),
            nf.Parameter(np.asfortranarray(r.normal(size=(6, 4)))),
        ]
        ps[3].grad = np.zeros((6, 4))  # C-ordered grad for F-ordered data
        return ps

    blocked, whole = make(), make()
    opt_b = cls(blocked, **OPTIONS[cls])
    opt_b.CHUNK = 4
    opt_w = cls(whole, **OPTIONS[cls])
    opt_w.CHUNK = 10**6
    for _ in range(4):
        for p, q in zip(blocked, whole):
            g = rng.normal(size=p.shape)
            p.grad[...] = g
            q.grad[...] = g
        opt_b.step()
        opt_w.step()
    for p, q in zip(blocked, whole):
        np.testing.assert_array_equal(p.data, q.data)
        assert p.data.flags.f_contiguous == q.data.flags.f_contiguous
    assert not np.array_equal(blocked[0].data, make()[0].data)


def test_base_class_contract():
    p = nf.Parameter(np.ones((3, 2), dtype=np.float32))

    class Bare(optim.Optimizer):
        def __init__(self, params):
            super().__init__(params, dict(lr=0.1))

    opt = Bare([p])
    with pytest.raises(NotImplementedError, match="Bare.update is not implemented"):
        opt.step()
    w0, w1 = opt.work(p)
    assert w0.shape == w1.shape == (3, 2) and w0.dtype == np.float32
    assert not np.shares_memory(w0, w1)


# ---------------------------------------------------------------------- issue 15: finite updates
def _snapshot(opt, params):
    return [p.data.copy() for p in params], opt.state_dict()


def _assert_unchanged(before, opt, params):
    datas, sd = before
    for p, d in zip(params, datas):
        assert p.data.tobytes() == d.tobytes()
    now = opt.state_dict()
    assert now["param_groups"] == sd["param_groups"]
    assert sorted(now["state"]) == sorted(sd["state"])
    for i, s in sd["state"].items():
        for k, v in s.items():
            np.testing.assert_array_equal(now["state"][i][k], v)


@pytest.mark.parametrize("value", [float("inf"), float("-inf"), float("nan")])
def test_non_finite_hyperparameters_are_refused_in_the_constructor(value):
    p = nf.Parameter(np.ones(2, dtype=np.float32))
    with pytest.raises(ValueError, match=r"SGD: invalid lr="):
        optim.SGD([p], lr=value)
    with pytest.raises(ValueError, match=r"Adam: invalid weight_decay="):
        optim.Adam([p], weight_decay=value)


@pytest.mark.parametrize("cls", [c for c in ALL if "eps" in c([nf.Parameter(np.ones(1))]).defaults])
def test_eps_zero_is_refused_because_it_divides_zero_by_zero(cls):
    with pytest.raises(ValueError, match=rf"{cls.__name__}: invalid eps=0.0 \(must be > 0\)"):
        cls([nf.Parameter(np.ones(1))], eps=0.0)


@pytest.mark.parametrize("value", [float("nan"), float("inf"), -1.0, "abc"])
def test_a_rate_set_through_param_groups_is_checked_at_the_step(value):
    p = nf.Parameter(np.ones(3, dtype=np.float32))
    opt = optim.SGD([p], lr=0.1, momentum=0.9)
    p.grad[:] = 1.0
    opt.step()
    before = _snapshot(opt, [p])
    opt.param_groups[0]["lr"] = value
    with pytest.raises(ValueError, match=r"SGD: invalid lr="):
        opt.step()
    opt.param_groups[0]["lr"] = 0.1
    _assert_unchanged(before, opt, [p])


def test_a_scheduler_never_writes_a_non_finite_rate():
    p = nf.Parameter(np.ones(3, dtype=np.float32))
    opt = optim.SGD([p], lr=0.1)
    with pytest.raises(ValueError, match=r"LambdaLR: expected finite learning rates"):
        optim.LambdaLR(opt, lambda epoch: float("nan"))
    sched = optim.LambdaLR(opt, lambda epoch: 1.0 if epoch < 2 else float("inf"))
    sched.step()
    with pytest.raises(ValueError, match=r"LambdaLR: expected finite learning rates"):
        sched.step()
    assert opt.param_groups[0]["lr"] == 0.1


@pytest.mark.parametrize("cls", ALL, ids=lambda c: c.__name__)
def test_an_update_that_would_not_be_finite_is_never_written(cls):
    # issue 15 defect 4: every optimizer shares one guarantee in Optimizer.step
    rng = np.random.default_rng(0)
    params = [nf.Parameter(rng.normal(size=(4, 3)).astype(np.float32)) for _ in range(3)]
    opt = cls(params, **{**OPTIONS[cls], "lr": 1e30})
    for p in params:
        p.grad[...] = 1.0
    opt.step()  # a first (finite or refused) step creates the state
    for p in params:
        p.grad[...] = 3e38  # float32's edge: squares, sums and products overflow
    params[0].grad[0, 0] = -3e38
    before = _snapshot(opt, params)
    try:
        opt.step()
    except optim.NonFiniteUpdateError as e:
        assert f"{cls.__name__}.step: expected finite values after the update" in str(e)
        _assert_unchanged(before, opt, params)
    for p in params:
        assert np.isfinite(p.data).all()
    for s in opt.state.values():
        for v in s.values():
            if isinstance(v, np.ndarray):
                assert np.isfinite(v).all()


def test_sgd_overflow_is_undone_and_the_trainer_skips_the_batch():
    p = nf.Parameter(np.ones(2, dtype=np.float32))
    opt = optim.SGD([p], lr=3e38, momentum=0.9)
    p.grad[:] = 10.0
    before = _snapshot(opt, [p])
    with pytest.raises(optim.NonFiniteUpdateError, match="nothing was written"):
        opt.step()
    _assert_unchanged(before, opt, [p])
    assert opt.state == {}


def test_fit_with_an_overflowing_rate_never_corrupts_the_parameters():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(32, 3)).astype(np.float32)
    y = rng.integers(0, 2, size=32)
    model = nf.Sequential(nf.Dense(3, 4, rng=0), nf.Tanh(), nf.Dense(4, 2, rng=1))
    before = model.state_dict()
    opt = optim.SGD(model.parameters(), lr=3e38, weight_decay=10.0)  # every update overflows
    trainer = nf.Trainer(model, nf.CrossEntropyLoss(), opt)
    history = trainer.fit(x, y, batch_size=8, nan_policy="skip_batch", verbose=0)
    assert history["skipped_batches"][-1] == 4
    for k, v in model.state_dict().items():
        assert v.tobytes() == before[k].tobytes()
    with pytest.raises(FloatingPointError, match=r"expected a finite update"):
        trainer.fit(x, y, batch_size=8, verbose=0)


# ---------------------------------------------------------------------- issue 15: crafted state
def _trained_adam():
    p, q = nf.Parameter(np.ones(3, dtype=np.float32)), nf.Parameter(np.ones(2, dtype=np.float32))
    opt = optim.Adam([p, q], lr=0.01)
    p.grad[:] = 1.0
    q.grad[:] = 2.0
    opt.step()
    return opt, [p, q]


def _crafted_states():
    opt, _ = _trained_adam()
    good = opt.state_dict()
    sgd_state = optim.SGD([nf.Parameter(np.ones(3)), nf.Parameter(np.ones(2))]).state_dict()

    def edit(fn):
        sd = copy.deepcopy(good)
        fn(sd)
        return sd

    return {
        "no param_groups": edit(lambda sd: sd.pop("param_groups")),
        "no state": edit(lambda sd: sd.pop("state")),
        "param_groups=5": edit(lambda sd: sd.__setitem__("param_groups", 5)),
        "group not a dict": edit(lambda sd: sd.__setitem__("param_groups", ["x"])),
        "state key x": edit(lambda sd: sd["state"].__setitem__("x", {})),
        "state key 99": edit(lambda sd: sd["state"].__setitem__(99, {})),
        "state key -1": edit(lambda sd: sd["state"].__setitem__(-1, {})),
        "lr abc": edit(lambda sd: sd["param_groups"][0].__setitem__("lr", "abc")),
        "lr nan": edit(lambda sd: sd["param_groups"][0].__setitem__("lr", float("nan"))),
        "lr inf": edit(lambda sd: sd["param_groups"][0].__setitem__("lr", float("inf"))),
        "lr negative": edit(lambda sd: sd["param_groups"][0].__setitem__("lr", -1.0)),
        "betas of 3": edit(lambda sd: sd["param_groups"][0].__setitem__("betas", (0.9, 0.9, 0.9))),
        "beta of 1": edit(lambda sd: sd["param_groups"][0].__setitem__("betas", (1.0, 0.9))),
        "amsgrad string": edit(lambda sd: sd["param_groups"][0].__setitem__("amsgrad", "yes")),
        "unknown option": edit(lambda sd: sd["param_groups"][0].__setitem__("momentum", 0.9)),
        "step negative": edit(lambda sd: sd["state"][0].__setitem__("step", -3)),
        "step float": edit(lambda sd: sd["state"][0].__setitem__("step", 1.5)),
        "moment nan": edit(lambda sd: sd["state"][0]["exp_avg"].__setitem__(0, np.nan)),
        "moment list": edit(lambda sd: sd["state"][0].__setitem__("exp_avg", [1, 2, 3])),
        "moment int": edit(lambda sd: sd["state"][0].__setitem__("exp_avg", np.ones(3, np.int64))),
        "unknown entry": edit(lambda sd: sd["state"][0].__setitem__("__class__", 1)),
        "state not a dict": edit(lambda sd: sd["state"].__setitem__(0, 7)),
        "sgd state": sgd_state,
    }


@pytest.mark.parametrize("name", list(_crafted_states()))
def test_a_crafted_optimizer_state_is_refused_and_changes_nothing(name):
    # issue 15 defect 5: raw KeyError/TypeError, or bad values loaded and failing later
    opt, params = _trained_adam()
    before = _snapshot(opt, params)
    with pytest.raises(nf.SchemaError, match=r"Adam.load_state_dict: "):
        opt.load_state_dict(_crafted_states()[name])
    _assert_unchanged(before, opt, params)


def test_an_adam_state_loaded_into_sgd_is_refused():
    opt, _ = _trained_adam()
    sgd = optim.SGD([nf.Parameter(np.ones(3)), nf.Parameter(np.ones(2))], lr=0.1)
    with pytest.raises(nf.SchemaError, match=r"SGD.load_state_dict: .*unknown"):
        sgd.load_state_dict(opt.state_dict())
    assert "betas" not in sgd.param_groups[0] and sgd.state == {}


def test_sgd_bound_path_matches_the_guarded_path_and_refuses_what_could_overflow():
    # issue 19: SGD skips the backup when a norm bound proves the step finite; same results
    rng = np.random.default_rng(0)
    shapes = [(5, 4), (4,), (3, 5)]
    a = [nf.Parameter(rng.normal(size=s).astype(np.float32)) for s in shapes]
    b = [nf.Parameter(p.data.copy()) for p in a]
    opt_a = optim.SGD(a, lr=0.1, momentum=0.9, nesterov=True, weight_decay=0.01)
    opt_b = optim.SGD(b, lr=0.1, momentum=0.9, nesterov=True, weight_decay=0.01)
    opt_b._finite_by_bound = lambda: False  # the block-guarded path
    for _ in range(3):
        for p, q in zip(a, b):
            p.grad[...] = q.grad[...] = rng.normal(size=p.data.shape)
        assert opt_a._finite_by_bound()
        opt_a.step()
        opt_b.step()
    for p, q in zip(a, b):
        assert np.array_equal(p.data, q.data)
        assert np.array_equal(opt_a.state[p]["momentum_buffer"], opt_b.state[q]["momentum_buffer"])
    a[0].grad[0, 0] = 1e36  # the bound no longer proves it: the guarded path decides
    assert not opt_a._finite_by_bound()
    a[0].grad[0, 0] = np.nan
    assert not opt_a._finite_by_bound()
