"""Hypothesis strategies shared by the test files."""

import numpy as np
from hypothesis import strategies as st

seeds = st.integers(min_value=0, max_value=2**32 - 1)
small = st.integers(min_value=1, max_value=4)


def normal_array(seed: int, shape, scale: float = 1.0, away_from_zero: float = 0.0) -> np.ndarray:
    """float64 N(0, scale^2) values from a drawn seed; with ``away_from_zero`` every |value| is
    at least that (for kinks such as ReLU's at 0)."""
    x = np.random.default_rng(seed).normal(0.0, scale, size=shape)
    if away_from_zero:
        x = np.where(x >= 0, x + away_from_zero, x - away_from_zero)
    return x


def assert_torch_parity(layer, ref, x: np.ndarray, rng, rtol: float, atol: float) -> None:
    """Runs an nnframe ``layer`` and its PyTorch ``ref`` forward on x, then backward on one
    output gradient drawn from ``rng``; asserts equal outputs and input gradients (within rtol
    and atol). The caller has done ``pytest.importorskip("torch")``."""
    import torch

    xt = torch.tensor(x, requires_grad=True)
    yt = ref(xt)
    y = layer(x)
    np.testing.assert_allclose(y, yt.detach().numpy(), rtol=rtol, atol=atol)
    g = rng.normal(size=y.shape)
    yt.backward(torch.tensor(g))
    np.testing.assert_allclose(layer.backward(g), xt.grad.numpy(), rtol=rtol, atol=atol)
