"""The main job: ``python -m nnframe.demo`` trains a small network end to end and reports
accuracy and speed. (A synthetic two-spirals task until the training issue brings the digits.)
"""

from __future__ import annotations

import time

import numpy as np

import nnframe as nf


def two_spirals(n: int, rng: np.random.Generator, noise: float = 0.2):
    """Two interleaved spirals in 2-D: (x (2n, 2) float32, y (2n,) int64)."""
    t = np.sqrt(rng.uniform(0, 1, n)) * 3 * np.pi
    arm = np.stack([t * np.cos(t), t * np.sin(t)], axis=1) / (3 * np.pi)
    x = np.concatenate([arm, -arm]) + rng.normal(0, noise / (3 * np.pi), (2 * n, 2))
    y = np.concatenate([np.zeros(n, np.int64), np.ones(n, np.int64)])
    return x.astype(np.float32), y


def main(epochs: int = 300, seed: int = 0) -> float:
    rng = np.random.default_rng(seed)
    x, y = two_spirals(500, rng)
    model = nf.Sequential(
        nf.Dense(2, 64, rng=rng), nf.Tanh(), nf.Dense(64, 64, rng=rng), nf.Tanh(),
        nf.Dense(64, 2, rng=rng),
    )
    loss_fn = nf.CrossEntropyLoss()
    opt = nf.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    start = time.perf_counter()
    for epoch in range(epochs):
        order = rng.permutation(len(x))
        for i in range(0, len(x), 100):
            idx = order[i : i + 100]
            opt.zero_grad()
            loss = loss_fn(model(x[idx]), y[idx])
            model.backward(loss_fn.backward())
            opt.step()
        if epoch % 50 == 0 or epoch == epochs - 1:
            print(f"epoch {epoch:4d}  loss {loss:.4f}")
    elapsed = time.perf_counter() - start
    accuracy = float((model(x).argmax(axis=1) == y).mean())
    print(f"accuracy {accuracy:.3f}  |  {epochs * len(x) / elapsed:,.0f} examples/s  |  {elapsed:.1f} s")
    return accuracy


if __name__ == "__main__":
    main()
