"""REINFORCE with a learned baseline on gymnasium's CartPole-v1, written with nnframe layers.

The policy is a small network giving the logits of "push left" and "push right"; a second
network estimates the return from each state (the baseline). After every episode the policy
takes one Adam step on the policy-gradient surrogate (:class:`PolicyGradientLoss`, a loss
with a hand-written backward) and the baseline one step on the mean squared error to the
returns.

Run it from the repository root (needs ``pip install 'nnframe[control,plot]'``)::

    python docs/examples/cartpole.py          # trains, evaluates 100 episodes, plots the returns

See docs/control.md for the walk-through.
"""

from __future__ import annotations

import time

import numpy as np

import nnframe as nf


class PolicyGradientLoss(nf.Loss):
    """The REINFORCE surrogate with an entropy bonus, on the policy's logits.

    ``target[t, j]`` is the weight of action ``j`` at step ``t``: the advantage ``A_t`` at the
    action taken, 0 elsewhere. With ``p = softmax(pred)`` and the entropy
    ``H_t = -sum_j p_tj log p_tj``, each step's loss is

        l_t = -sum_j target_tj log p_tj - entropy * H_t

    so that its gradient is the policy gradient ``-A_t grad log p(a_t | s_t)`` plus a push
    towards exploring. Its derivative by the logits (the backward written by hand):

        dl_t/dpred_tj = -(target_tj - p_tj sum_k target_tk) + entropy * p_tj (log p_tj + H_t)

    Shape:
        pred: (T, C) logits.    target: (T, C) advantage-weighted one-hot actions.
        output: float, or (T,) with reduction='none'.
    """

    hyper = ("entropy",)

    def __init__(self, entropy: float = 0.0, reduction: str = "mean"):
        super().__init__(reduction)
        if entropy < 0:
            raise ValueError(f"{self.name}: invalid entropy={entropy!r} (must be >= 0)")
        self.entropy = entropy

    def elements(self, pred, target):
        y = self.same_shape(pred, target)
        z = pred - pred.max(axis=1, keepdims=True)  # subtract the row max: exp cannot overflow
        log_p = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
        p = np.exp(log_p)
        h = -(p * log_p).sum(axis=1)  # the entropy of each step's action distribution
        self.save_for_backward(y, p, log_p, h)
        return -(y * log_p).sum(axis=1) - self.entropy * h

    def grad(self, g):
        y, p, log_p, h = self.saved
        # d(sum_k y_k log p_k)/dz_j = y_j - p_j sum_k y_k;  dH/dz_j = -p_j (log p_j + H)
        d = p * y.sum(axis=1, keepdims=True) - y
        d += self.entropy * p * (log_p + h[:, None])
        return d * (g[:, None] if np.ndim(g) else g)


def make_networks(seed: int = 0, hidden: int = 64):
    """The policy (4 observations -> 2 logits) and the baseline (4 -> 1 value)."""
    rng = np.random.default_rng(seed)
    policy = nf.Sequential(nf.Dense(4, hidden, rng=rng), nf.Tanh(), nf.Dense(hidden, 2, rng=rng))
    value = nf.Sequential(nf.Dense(4, hidden, rng=rng), nf.Tanh(), nf.Dense(hidden, 1, rng=rng))
    return policy, value


def softmax(logits: np.ndarray) -> np.ndarray:
    z = np.exp(logits - logits.max(axis=-1, keepdims=True))
    return z / z.sum(axis=-1, keepdims=True)


def run_episode(env, policy, rng, *, seed=None, greedy: bool = False):
    """Plays one episode; returns the observations (T, 4), actions (T,) and rewards (T,)."""
    obs, _ = env.reset(seed=seed)
    states, actions, rewards = [], [], []
    done = False
    while not done:
        x = np.asarray(obs, dtype=np.float32)[None]
        p = softmax(policy(x)[0].astype(np.float64))
        action = int(p.argmax()) if greedy else int(rng.random() < p[1])  # two actions
        states.append(x[0])
        actions.append(action)
        obs, reward, terminated, truncated, _ = env.step(action)
        rewards.append(reward)
        done = terminated or truncated
    return np.array(states), np.array(actions), np.array(rewards, dtype=np.float64)


def discounted_returns(rewards: np.ndarray, gamma: float) -> np.ndarray:
    """G_t = r_t + gamma G_{t+1}, backwards from the end of the episode."""
    out = np.empty_like(rewards)
    g = 0.0
    for t in range(len(rewards) - 1, -1, -1):
        g = rewards[t] + gamma * g
        out[t] = g
    return out


def train(
    seed: int = 0,
    *,
    max_episodes: int = 2000,
    gamma: float = 0.99,
    lr: float = 1e-2,
    entropy: float = 0.01,
    solved: float = 490.0,
    window: int = 20,
):
    """Trains until the last ``window`` episodes average ``solved`` (or ``max_episodes``).

    Returns ``(policy, returns)``: the policy network and each training episode's return.
    """
    import gymnasium as gym

    env = gym.make("CartPole-v1")
    rng = np.random.default_rng(seed)
    policy, value = make_networks(seed)
    policy_opt = nf.optim.Adam(policy.parameters(), lr=lr)
    value_opt = nf.optim.Adam(value.parameters(), lr=lr)
    pg_loss, value_loss = PolicyGradientLoss(entropy=entropy), nf.MSELoss()
    returns: list[float] = []
    for episode in range(max_episodes):
        states, actions, rewards = run_episode(
            env, policy, rng, seed=seed if episode == 0 else None
        )
        returns.append(float(rewards.sum()))
        # scaled so that the value network sees targets near [0, 1]
        g = (discounted_returns(rewards, gamma) * (1.0 - gamma)).astype(np.float32)

        value.zero_grad()
        baseline = value(states)[:, 0]
        value_loss(baseline[:, None], g[:, None])
        value.backward(value_loss.backward())
        value_opt.step()

        advantage = g - baseline  # what the episode did better than expected, step by step
        advantage = (advantage - advantage.mean()) / (advantage.std() + 1e-8)
        target = np.zeros((len(actions), 2), dtype=np.float32)
        target[np.arange(len(actions)), actions] = advantage
        policy.zero_grad()
        pg_loss(policy(states), target)
        policy.backward(pg_loss.backward())
        policy_opt.step()

        if len(returns) >= window and np.mean(returns[-window:]) >= solved:
            break
    env.close()
    return policy, returns


def evaluate(policy, episodes: int = 100, seed: int = 10_000) -> np.ndarray:
    """The returns of ``episodes`` greedy episodes (the most probable action at every step)."""
    import gymnasium as gym

    env = gym.make("CartPole-v1")
    rng = np.random.default_rng(seed)
    out = [
        run_episode(env, policy, rng, seed=seed + i, greedy=True)[2].sum() for i in range(episodes)
    ]
    env.close()
    return np.array(out)


def plot_returns(returns, evaluation, path) -> None:
    """A PNG of the training returns (with their 20-episode mean) and the evaluation returns."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(8, 3.2), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 2, 1)
    ax.plot(returns, lw=0.8, alpha=0.6, label="episode return")
    mean = np.convolve(returns, np.ones(20) / 20, mode="valid")
    ax.plot(np.arange(19, len(returns)), mean, label="mean of 20")
    ax.set(title="training", xlabel="episode", ylabel="return")
    ax.legend()
    ax = fig.add_subplot(1, 2, 2)
    ax.plot(evaluation, ".", ms=4)
    ax.axhline(475, color="gray", ls="--", lw=0.8)
    ax.set(title=f"100 greedy episodes: mean {np.mean(evaluation):.1f}", xlabel="episode",
           ylim=(0, 520))  # fmt: skip
    fig.tight_layout()
    fig.savefig(path, format="png")


if __name__ == "__main__":
    import pathlib

    start = time.perf_counter()
    policy, returns = train(seed=0)
    seconds = time.perf_counter() - start
    evaluation = evaluate(policy)
    print(f"trained {len(returns)} episodes in {seconds:.1f} s; "
          f"greedy return over 100 episodes: {evaluation.mean():.1f} (min {evaluation.min():.0f})")  # fmt: skip
    plot_returns(returns, evaluation, pathlib.Path(__file__).with_name("cartpole_returns.png"))
