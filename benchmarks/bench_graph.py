"""Graph model vs Sequential: the cost of the graph machinery on a chain.

An MNIST-sized MLP (784-256-128-10, ReLU), batch 128, one BLAS thread: the same layers run as
a ``Sequential`` and as an ``nf.Model`` built from ``nf.Input``; one training step (forward,
cross-entropy, backward with ``needs_input_grad=False``, SGD step) timed alternately, best of
several rounds. Reports the ratio graph / Sequential (issue 13 asks for at most 1.05).

    OPENBLAS_NUM_THREADS=1 python -m benchmarks.bench_graph
"""

from __future__ import annotations

import os
import time

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import numpy as np  # noqa: E402

import nnframe as nf  # noqa: E402


def build(seed: int = 0):
    layers = [
        nf.Dense(784, 256, rng=seed), nf.ReLU(), nf.Dense(256, 128, rng=seed + 1), nf.ReLU(),
        nf.Dense(128, 10, rng=seed + 2),
    ]  # fmt: skip
    seq = nf.Sequential(*layers)
    x = nf.Input((784,))
    h = x
    for layer in [type(m)(**_args(m)) for m in layers]:
        h = layer(h)
    graph = nf.Model(x, h)
    graph.load_state_dict(
        {k: v for k, v in zip(graph.state_dict(), seq.state_dict().values())}, strict=True
    )
    return seq, graph


def _args(m):
    if isinstance(m, nf.Dense):
        return {"in_features": m.in_features, "out_features": m.out_features, "rng": 0}
    return {}


def step_time(model, x, y, steps: int) -> float:
    loss_fn = nf.CrossEntropyLoss()
    opt = nf.optim.SGD(model.parameters(), lr=0.01)
    model.needs_input_grad = False
    start = time.perf_counter()
    for _ in range(steps):
        opt.zero_grad()
        loss_fn(model(x), y)
        model.backward(loss_fn.backward())
        opt.step()
    return (time.perf_counter() - start) / steps


def run(rounds: int = 7, steps: int = 50) -> dict:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(128, 784)).astype(np.float32)
    y = rng.integers(0, 10, size=128)
    seq, graph = build()
    step_time(seq, x, y, 5), step_time(graph, x, y, 5)  # warm up
    ts, tg = [], []
    for _ in range(rounds):
        ts.append(step_time(seq, x, y, steps))
        tg.append(step_time(graph, x, y, steps))
    s, g = min(ts), min(tg)
    return {"sequential_ms": 1e3 * s, "graph_ms": 1e3 * g, "ratio": g / s}


if __name__ == "__main__":
    r = run()
    print(
        f"MLP 784-256-128-10, batch 128, 1 thread: Sequential {r['sequential_ms']:.3f} ms/step, "
        f"graph Model {r['graph_ms']:.3f} ms/step, ratio {r['ratio']:.3f}"
    )
