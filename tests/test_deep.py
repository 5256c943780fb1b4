"""The vanishing-gradient story: a deep plain sigmoid network does not learn, the same depth with
BatchNorm or residual connections does (docs/normalization.md tells it with the numbers)."""

import numpy as np
import pytest

import nnframe as nf

CHECKED_MODULES: list = []  # the layers used here are checked in their own files

DEPTH, WIDTH = 20, 16


def deep_net(kind: str) -> nf.Sequential:
    """DEPTH Dense layers with sigmoid activations, then a 2-class head.

    kind: "plain" (Dense, Sigmoid), "batchnorm" (Dense, BatchNorm1d, Sigmoid) or "residual"
    (the first Dense, then blocks x + sigmoid(Dense(x)))."""
    layers: list = [nf.Dense(8, WIDTH, rng=0)]
    if kind == "batchnorm":
        layers.append(nf.BatchNorm1d(WIDTH))
    layers.append(nf.Sigmoid())
    for i in range(1, DEPTH):
        dense = nf.Dense(WIDTH, WIDTH, rng=i)
        if kind == "plain":
            layers += [dense, nf.Sigmoid()]
        elif kind == "batchnorm":
            layers += [dense, nf.BatchNorm1d(WIDTH), nf.Sigmoid()]
        else:
            layers.append(nf.Residual(nf.Sequential(dense, nf.Sigmoid())))
    layers.append(nf.Dense(WIDTH, 2, rng=DEPTH))
    return nf.Sequential(*layers)


def data():
    x = np.random.default_rng(0).normal(size=(128, 8)).astype(np.float32)
    y = (x[:, :4].sum(axis=1) > 0).astype(np.int64)
    return x, y


def dense_layers(model):
    return [m for m in model.modules() if isinstance(m, nf.Dense)]


def gradient_ratio(model) -> float:
    """||dL/dW|| of the first Dense over that of the last, after one backward pass."""
    x, y = data()
    loss = nf.CrossEntropyLoss()
    model.zero_grad()
    loss(model(x), y)
    model.backward(loss.backward())
    dense = dense_layers(model)
    return float(np.linalg.norm(dense[0].weight.grad) / np.linalg.norm(dense[-1].weight.grad))


def train(model, steps: int = 80) -> tuple[float, float]:
    """(first loss, last loss) of full-batch SGD with momentum."""
    x, y = data()
    loss = nf.CrossEntropyLoss()
    opt = nf.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    losses = []
    for _ in range(steps):
        opt.zero_grad()
        losses.append(loss(model(x), y))
        model.backward(loss.backward())
        opt.step()
    return losses[0], losses[-1]


def test_plain_deep_sigmoid_network_has_vanishing_gradients():
    ratio = gradient_ratio(deep_net("plain"))
    assert ratio < 1e-8  # measured 1.4e-17: each sigmoid layer scales it by <= 1/4 * ||W||
    first, last = train(deep_net("plain"))
    assert last > 0.6 and abs(first - last) < 0.05  # chance level (ln 2 = 0.69): nothing learned


@pytest.mark.parametrize("kind", ["batchnorm", "residual"])
def test_batchnorm_or_residual_connections_let_the_same_depth_train(kind):
    ratio = gradient_ratio(deep_net(kind))
    assert ratio > 1e-3  # measured 1.0 (batchnorm), 8e-3 (residual)
    first, last = train(deep_net(kind))
    assert last < 0.2 < first  # it learns the task
