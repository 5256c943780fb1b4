"""MLP cases: one training step (forward, cross-entropy, backward, optimizer step) per call.

Every case has the same math in each implementation: nnframe, a hand-written numpy loop (the
floor a numpy framework can reach), PyTorch CPU and scikit-learn's MLPClassifier (when
installed). Each builder returns a zero-argument ``step`` callable.
"""

from __future__ import annotations

import numpy as np

MOMENTUM, LR, CLIP = 0.9, 0.01, 1.0


def make_data(sizes, batch, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(batch, sizes[0])).astype(np.float32)
    y = rng.integers(0, sizes[-1], size=batch)
    return x, y


def init_weights(sizes, seed=0):
    """PyTorch's Linear default: U(-1/sqrt(fan_in), 1/sqrt(fan_in)), weight (out, in)."""
    rng = np.random.default_rng(seed)
    params = []
    for d_in, d_out in zip(sizes[:-1], sizes[1:]):
        bound = 1 / np.sqrt(d_in)
        params.append(rng.uniform(-bound, bound, (d_out, d_in)).astype(np.float32))
        params.append(rng.uniform(-bound, bound, d_out).astype(np.float32))
    return params


# ---------------------------------------------------------------- nnframe
def nnframe_step(sizes, batch, optimizer):
    import nnframe as nf

    layers = []
    for i, (d_in, d_out) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers.append(nf.Dense(d_in, d_out, rng=i))
        if i < len(sizes) - 2:
            layers.append(nf.ReLU())
    model = nf.Sequential(*layers)
    model.load_state_dict(dict(zip([n for n, _ in model.named_parameters()], init_weights(sizes))))
    model.needs_input_grad = False  # x is data, as in the numpy and PyTorch versions
    x, y = make_data(sizes, batch)
    loss_fn = nf.CrossEntropyLoss()
    if optimizer == "sgd":
        opt = nf.optim.SGD(model.parameters(), lr=LR, momentum=MOMENTUM)
    else:
        opt = nf.optim.Adam(model.parameters(), lr=LR, clip_norm=CLIP)

    def step():
        opt.zero_grad()
        loss_fn(model(x), y)
        model.backward(loss_fn.backward())
        opt.step()

    return step


def nnframe_inference(sizes, batch):
    import nnframe as nf

    layers = []
    for i, (d_in, d_out) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers.append(nf.Dense(d_in, d_out, rng=i))
        if i < len(sizes) - 2:
            layers.append(nf.ReLU())
    model = nf.Sequential(*layers).eval()
    x, _ = make_data(sizes, batch)
    return lambda: model(x)


# ---------------------------------------------------------------- hand-written numpy
def numpy_step(sizes, batch, optimizer):
    """The same step written directly in numpy, with in-place updates: the floor."""
    params = init_weights(sizes)
    grads = [np.zeros_like(p) for p in params]
    m = [np.zeros_like(p) for p in params]
    v = [np.zeros_like(p) for p in params]
    x, y = make_data(sizes, batch)
    n_layers = len(sizes) - 1
    t = [0]

    def step():
        acts = [x]
        h = x
        for i in range(n_layers):
            h = h @ params[2 * i].T
            h += params[2 * i + 1]
            if i < n_layers - 1:
                h = np.maximum(h, 0)
            acts.append(h)
        z = h - h.max(axis=1, keepdims=True)
        e = np.exp(z)
        p = e / e.sum(axis=1, keepdims=True)
        g = p
        g[np.arange(batch), y] -= 1
        g /= batch
        for i in range(n_layers - 1, -1, -1):
            a = acts[i]
            np.matmul(g.T, a, out=grads[2 * i])
            np.sum(g, axis=0, out=grads[2 * i + 1])
            if i > 0:
                g = g @ params[2 * i]
                g *= a > 0
        if optimizer == "sgd":
            for w, gw, buf in zip(params, grads, m):
                buf *= MOMENTUM
                buf += gw
                w -= LR * buf
        else:
            norm = np.sqrt(sum(float(np.dot(gw.ravel(), gw.ravel())) for gw in grads))
            if norm > CLIP:
                for gw in grads:
                    gw *= CLIP / (norm + 1e-6)
            t[0] += 1
            b1, b2, eps = 0.9, 0.999, 1e-8
            c1, c2 = 1 - b1 ** t[0], 1 - b2 ** t[0]
            for w, gw, mi, vi in zip(params, grads, m, v):
                mi *= b1
                mi += (1 - b1) * gw
                vi *= b2
                vi += (1 - b2) * gw * gw
                w -= (LR / c1) * mi / (np.sqrt(vi / c2) + eps)

    return step


def numpy_inference(sizes, batch):
    params = init_weights(sizes)
    x, _ = make_data(sizes, batch)
    n_layers = len(sizes) - 1

    def forward():
        h = x
        for i in range(n_layers):
            h = h @ params[2 * i].T
            h += params[2 * i + 1]
            if i < n_layers - 1:
                np.maximum(h, 0, out=h)
        return h

    return forward


# ---------------------------------------------------------------- PyTorch
def torch_step(sizes, batch, optimizer):
    import torch

    layers = []
    for i, (d_in, d_out) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers.append(torch.nn.Linear(d_in, d_out))
        if i < len(sizes) - 2:
            layers.append(torch.nn.ReLU())
    model = torch.nn.Sequential(*layers)
    with torch.no_grad():
        for p, w in zip(model.parameters(), init_weights(sizes)):
            p.copy_(torch.from_numpy(w))
    x, y = make_data(sizes, batch)
    x, y = torch.from_numpy(x), torch.from_numpy(y)
    loss_fn = torch.nn.CrossEntropyLoss()
    if optimizer == "sgd":
        opt = torch.optim.SGD(model.parameters(), lr=LR, momentum=MOMENTUM)
    else:
        opt = torch.optim.Adam(model.parameters(), lr=LR)

    def step():
        opt.zero_grad()
        loss_fn(model(x), y).backward()
        if optimizer != "sgd":
            torch.nn.utils.clip_grad_norm_(model.parameters(), CLIP)
        opt.step()

    return step


def torch_inference(sizes, batch):
    import torch

    layers = []
    for i, (d_in, d_out) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers.append(torch.nn.Linear(d_in, d_out))
        if i < len(sizes) - 2:
            layers.append(torch.nn.ReLU())
    model = torch.nn.Sequential(*layers).eval()
    x = torch.from_numpy(make_data(sizes, batch)[0])

    def forward():
        with torch.inference_mode():
            return model(x)

    return forward


# ---------------------------------------------------------------- scikit-learn
def sklearn_step(sizes, batch, optimizer):
    import warnings

    from sklearn.neural_network import MLPClassifier

    x, y = make_data(sizes, batch)
    clf = MLPClassifier(
        hidden_layer_sizes=tuple(sizes[1:-1]),
        solver="sgd" if optimizer == "sgd" else "adam",
        learning_rate_init=LR,
        momentum=MOMENTUM,
        nesterovs_momentum=False,
        alpha=0.0,
        batch_size=batch,
        random_state=0,
    )
    classes = np.arange(sizes[-1])
    warnings.filterwarnings("ignore")

    def step():
        clf.partial_fit(x, y, classes=classes)

    return step


IMPLEMENTATIONS = {
    "nnframe": nnframe_step,
    "numpy": numpy_step,
    "torch": torch_step,
    "sklearn": sklearn_step,
}
INFERENCE = {"nnframe": nnframe_inference, "numpy": numpy_inference, "torch": torch_inference}

SIZES = {
    "small_mlp": ((40, 100, 100, 10), 100),
    "mnist_mlp": ((784, 512, 256, 10), 128),
    "wide_mlp": ((1024, 4096, 4096, 1024), 256),
}


def training_flops(sizes, batch) -> float:
    """Multiply-adds x2 of forward (x W^T), dW (g^T x) and dX (g W, all but the first layer)."""
    pairs = list(zip(sizes[:-1], sizes[1:]))
    forward = sum(2 * batch * a * b for a, b in pairs)
    backward = 2 * forward - 2 * batch * pairs[0][0] * pairs[0][1]
    return float(forward + backward)


def cases() -> dict:
    """name -> (builder(impl) -> step or None, flops per step or None)."""
    out = {}
    for name, (sizes, batch) in SIZES.items():
        for opt in ("sgd", "adam_clip"):
            out[f"{name}_{opt}"] = (
                lambda impl, s=sizes, b=batch, o=opt: IMPLEMENTATIONS[impl](s, b, o),
                training_flops(sizes, batch),
            )
    sizes, batch = SIZES["mnist_mlp"]
    out["mnist_mlp_inference"] = (
        lambda impl: INFERENCE[impl](sizes, batch) if impl in INFERENCE else None,
        None,
    )
    return out
