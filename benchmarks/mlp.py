"""MLP cases: one training step (forward, cross-entropy, backward, optimizer step) per call.

Every case has the same math in each implementation: nnframe, a hand-written numpy loop (the
floor a numpy framework can reach), PyTorch CPU and scikit-learn's MLPClassifier (when
installed). Each builder returns a zero-argument ``step`` callable.
"""

from __future__ import annotations

import numpy as np

MOMENTUM, LR, ADAM_LR, CLIP = 0.9, 0.01, 1e-3, 1.0
POOL = 16  # batches cycled through: one repeated batch is memorized within a few steps, and
# the vanishing gradients that follow turn into float32 denormals (10x slower arithmetic)


def make_data(sizes, batch, seed=0):
    """A pool of POOL batches, (POOL, batch, in) float32 and (POOL, batch) labels."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(POOL, batch, sizes[0])).astype(np.float32)
    y = rng.integers(0, sizes[-1], size=(POOL, batch))
    return x, y


def cycle(n: int):
    """A callable returning 0, 1, ..., n - 1, 0, 1, ... (the batch to use next)."""
    state = [-1]

    def next_index():
        state[0] = (state[0] + 1) % n
        return state[0]

    return next_index


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
def nnframe_model(sizes):
    """Dense/ReLU layers with the weights of init_weights (PyTorch's Linear init)."""
    import nnframe as nf

    layers = []
    for i, (d_in, d_out) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers.append(nf.Dense(d_in, d_out, rng=i))
        if i < len(sizes) - 2:
            layers.append(nf.ReLU())
    model = nf.Sequential(*layers)
    model.load_state_dict(dict(zip([n for n, _ in model.named_parameters()], init_weights(sizes))))
    model.needs_input_grad = False  # x is data, as in the numpy and PyTorch versions
    return model


def nnframe_step(sizes, batch, optimizer):
    import nnframe as nf

    model = nnframe_model(sizes)
    x, y = make_data(sizes, batch)
    nxt = cycle(POOL)
    loss_fn = nf.CrossEntropyLoss()
    if optimizer == "sgd":
        opt = nf.optim.SGD(model.parameters(), lr=LR, momentum=MOMENTUM)
    else:
        opt = nf.optim.Adam(model.parameters(), lr=ADAM_LR, clip_norm=CLIP)

    def step():
        i = nxt()
        opt.zero_grad()
        loss_fn(model(x[i]), y[i])
        model.backward(loss_fn.backward())
        opt.step()

    return step


def nnframe_inference(sizes, batch):
    model = nnframe_model(sizes).eval()
    x = make_data(sizes, batch)[0][0]
    return lambda: model(x)


# ---------------------------------------------------------------- hand-written numpy
def numpy_step(sizes, batch, optimizer):
    """The same step written directly in numpy, with in-place updates: the floor."""
    params = init_weights(sizes)
    grads = [np.zeros_like(p) for p in params]
    m = [np.zeros_like(p) for p in params]
    v = [np.zeros_like(p) for p in params]
    xs, ys = make_data(sizes, batch)
    nxt = cycle(POOL)
    n_layers = len(sizes) - 1
    t = [0]
    rows = np.arange(batch)

    def step():
        i = nxt()
        x, y = xs[i], ys[i]
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
        total = e.sum(axis=1, keepdims=True)
        float(np.mean(np.log(total[:, 0]) - z[rows, y]))  # the loss value, as every version reports
        g = e / total
        g[rows, y] -= 1
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
                w -= (ADAM_LR / c1) * mi / (np.sqrt(vi / c2) + eps)

    return step


def numpy_inference(sizes, batch):
    params = init_weights(sizes)
    x = make_data(sizes, batch)[0][0]
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
def torch_model(sizes):
    """The PyTorch twin of nnframe_model: Linear/ReLU layers with the weights of init_weights."""
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
    return model


def torch_step(sizes, batch, optimizer):
    import torch

    model = torch_model(sizes)
    xs, ys = make_data(sizes, batch)
    xs, ys = torch.from_numpy(xs), torch.from_numpy(ys)
    nxt = cycle(POOL)
    loss_fn = torch.nn.CrossEntropyLoss()
    if optimizer == "sgd":
        opt = torch.optim.SGD(model.parameters(), lr=LR, momentum=MOMENTUM)
    else:
        opt = torch.optim.Adam(model.parameters(), lr=ADAM_LR)

    def step():
        i = nxt()
        opt.zero_grad()
        loss = loss_fn(model(xs[i]), ys[i])
        loss.backward()
        loss.item()  # the loss as a number, as nnframe and numpy give it
        if optimizer != "sgd":
            torch.nn.utils.clip_grad_norm_(model.parameters(), CLIP)
        opt.step()

    return step


def torch_inference(sizes, batch):
    import torch

    model = torch_model(sizes).eval()
    x = torch.from_numpy(make_data(sizes, batch)[0][0])

    def forward():
        with torch.inference_mode():
            return model(x)

    return forward


# ---------------------------------------------------------------- scikit-learn
def sklearn_step(sizes, batch, optimizer):
    import warnings

    from sklearn.neural_network import MLPClassifier

    xs, ys = make_data(sizes, batch)
    nxt = cycle(POOL)
    clf = MLPClassifier(
        hidden_layer_sizes=tuple(sizes[1:-1]),
        solver="sgd" if optimizer == "sgd" else "adam",
        learning_rate_init=LR if optimizer == "sgd" else ADAM_LR,
        momentum=MOMENTUM,
        nesterovs_momentum=False,
        alpha=0.0,
        batch_size=batch,
        random_state=0,
    )
    classes = np.arange(sizes[-1])
    warnings.filterwarnings("ignore")

    def step():
        i = nxt()
        clf.partial_fit(xs[i], ys[i], classes=classes)

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
