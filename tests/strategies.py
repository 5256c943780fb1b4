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
