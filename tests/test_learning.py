"""End-to-end learning from fixed seeds: the explicit forward/backward loop trains real models."""

import numpy as np

import nnframe as nf


def two_spirals(n: int, rng: np.random.Generator):
    """Two interleaved noisy spirals: x (2n, 2) float32, y (2n,) in {0, 1}."""
    t = np.sqrt(rng.uniform(0, 1, n)) * 3 * np.pi
    arm = np.stack([t * np.cos(t), t * np.sin(t)], axis=1) / (3 * np.pi)
    x = np.concatenate([arm, -arm]) + rng.normal(0, 0.02, (2 * n, 2))
    return x.astype(np.float32), np.repeat([0, 1], n)


def train(model, x, y, opt, epochs, batch_size, rng):
    loss_fn = nf.CrossEntropyLoss()
    for _ in range(epochs):
        order = rng.permutation(len(x))
        for i in range(0, len(x), batch_size):
            idx = order[i : i + batch_size]
            opt.zero_grad()
            loss_fn(model(x[idx]), y[idx])
            model.backward(loss_fn.backward())
            opt.step()
    return loss_fn(model(x), y)


def test_xor_reaches_near_zero_loss():
    rng = np.random.default_rng(0)
    x = np.array([[0, 0], [0, 1], [1, 0], [1, 1]], dtype=np.float32)
    y = np.array([0, 1, 1, 0])
    model = nf.Sequential(nf.Dense(2, 8, rng=rng), nf.Tanh(), nf.Dense(8, 2, rng=rng))
    opt = nf.optim.SGD(model.parameters(), lr=0.5, momentum=0.9)
    loss = train(model, x, y, opt, epochs=500, batch_size=4, rng=rng)
    assert loss < 0.01
    assert np.array_equal(model(x).argmax(axis=1), y)


def test_two_spirals_above_95_percent():
    rng = np.random.default_rng(0)
    x, y = two_spirals(300, rng)
    model = nf.Sequential(
        nf.Dense(2, 64, rng=rng),
        nf.Tanh(),
        nf.Dense(64, 64, rng=rng),
        nf.Tanh(),
        nf.Dense(64, 2, rng=rng),
    )
    opt = nf.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, clip_norm=10.0)
    train(model, x, y, opt, epochs=200, batch_size=50, rng=rng)
    accuracy = (model(x).argmax(axis=1) == y).mean()
    assert accuracy > 0.95, accuracy
