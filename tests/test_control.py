"""The CartPole control example (docs/examples/cartpole.py, walked through in docs/control.md):
its hand-written policy-gradient loss is checked like any nnframe loss, and the agent learns
CartPole-v1 (slow test, fixed seed)."""

import importlib.util
import inspect
import pathlib
import sys
import time

import numpy as np
import pytest

import nnframe as nf

ROOT = pathlib.Path(__file__).resolve().parent.parent
_spec = importlib.util.spec_from_file_location(
    "cartpole", ROOT / "docs" / "examples" / "cartpole.py"
)
cartpole = importlib.util.module_from_spec(_spec)
sys.modules["cartpole"] = cartpole  # inspect.getsource finds the file through it
_spec.loader.exec_module(cartpole)


@pytest.mark.parametrize("entropy", [0.0, 0.05])
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_policy_gradient_loss_backward_matches_finite_differences(entropy, reduction):
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(6, 3))
    target = np.zeros((6, 3))
    target[np.arange(6), rng.integers(0, 3, size=6)] = rng.normal(size=6)  # advantages
    nf.check_loss(cartpole.PolicyGradientLoss(entropy, reduction=reduction), logits, target)


def test_policy_gradient_loss_worked_example():
    # one step, two actions, logits (0, 0): p = (1/2, 1/2), H = log 2; action 1, advantage 2
    loss = cartpole.PolicyGradientLoss(entropy=0.1)
    value = loss(np.zeros((1, 2)), np.array([[0.0, 2.0]]))
    assert value == pytest.approx(-2 * np.log(0.5) - 0.1 * np.log(2))
    # d/dz = p * sum(target) - target + 0.1 * p * (log p + H) = (1, 1) - (0, 2) + 0 = (1, -1)
    np.testing.assert_allclose(loss.backward(), [[1.0, -1.0]])


def test_discounted_returns():
    np.testing.assert_allclose(cartpole.discounted_returns(np.ones(3), 0.5), [1.75, 1.5, 1.0])


def test_docs_show_the_example_loss_verbatim():
    page = (ROOT / "docs" / "control.md").read_text()
    assert inspect.getsource(cartpole.PolicyGradientLoss) in page


@pytest.mark.slow
def test_reinforce_learns_cartpole(tmp_path):
    start = time.perf_counter()
    policy, returns = cartpole.train(seed=0)
    seconds = time.perf_counter() - start
    evaluation = cartpole.evaluate(policy, episodes=100)
    print(f"{len(returns)} episodes, {seconds:.1f} s; greedy mean return {evaluation.mean():.1f}")
    assert evaluation.mean() >= 475, evaluation
    assert np.mean(returns[:20]) < 150  # it started from a poor random policy
    assert seconds < 180
    cartpole.plot_returns(returns, evaluation, tmp_path / "returns.png")
    assert (tmp_path / "returns.png").stat().st_size > 0
