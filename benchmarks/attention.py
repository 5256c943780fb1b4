"""Attention case: one training step of a transformer-encoder classifier.

Batch 32 sequences of 32 tokens, d_model 64, 4 heads, feed-forward 128, no dropout; the encoder
output is mean-pooled over time and a Dense head gives 10 classes; cross-entropy; Adam. The same
weights in nnframe and PyTorch (``batch_first=True``, post-norm, ReLU).
"""

from __future__ import annotations

import numpy as np

N, T, D, HEADS, FF, CLASSES = 32, 32, 64, 4, 128, 10


def _data():
    rng = np.random.default_rng(0)
    return rng.normal(size=(N, T, D)).astype(np.float32), rng.integers(0, CLASSES, size=N)


def nnframe_step():
    import nnframe as nf

    class Classifier(nf.Module):
        def __init__(self):
            super().__init__()
            self.encoder = nf.TransformerEncoderLayer(D, HEADS, FF, dropout=0.0, rng=0)
            self.encoder.needs_input_grad = False  # x is data, as in the PyTorch version
            self.head = nf.Dense(D, CLASSES, rng=1)

        def forward(self, x):
            return self.head(self.encoder(x).mean(axis=1))  # mean over time: (N, D)

        def backward(self, grad_output):
            g = self.head.backward(grad_output)  # (N, D)
            g = np.repeat(g[:, None, :] / T, T, axis=1)  # d mean / d x: 1/T at every step
            return self.encoder.backward(g)

    model = Classifier()
    x, y = _data()
    loss = nf.CrossEntropyLoss()
    opt = nf.optim.Adam(model.parameters(), lr=1e-3)

    def step():
        opt.zero_grad()
        loss(model(x), y)
        model.backward(loss.backward())
        opt.step()

    return step


def torch_step():
    import torch

    torch.manual_seed(0)
    encoder = torch.nn.TransformerEncoderLayer(D, HEADS, FF, dropout=0.0, batch_first=True)
    head = torch.nn.Linear(D, CLASSES)
    params = list(encoder.parameters()) + list(head.parameters())
    x, y = (torch.from_numpy(a) for a in _data())
    loss = torch.nn.CrossEntropyLoss()
    opt = torch.optim.Adam(params, lr=1e-3)

    def step():
        opt.zero_grad()
        value = loss(head(encoder(x).mean(dim=1)), y)
        value.backward()
        value.item()
        opt.step()

    return step


def cases() -> dict:
    builders = {"nnframe": nnframe_step, "torch": torch_step}
    return {
        "attention_encoder_train": (
            lambda impl: builders[impl]() if impl in builders else None,
            None,
        )
    }
