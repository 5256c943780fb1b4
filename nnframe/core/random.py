"""nnframe's only source of randomness.

Every layer that draws random numbers takes an explicit ``rng`` (a ``numpy.random.Generator``).
Without one it asks :func:`default_rng`, a generator that :func:`manual_seed` re-seeds, so a
whole program repeats exactly after ``nnframe.manual_seed(n)``. numpy's global RNG is never used.
"""

from __future__ import annotations

import numpy as np

_default = np.random.default_rng()


def manual_seed(seed: int) -> np.random.Generator:
    """Re-seeds nnframe's default generator and returns it."""
    global _default
    _default = np.random.default_rng(seed)
    return _default


def default_rng() -> np.random.Generator:
    """The generator used by layers, initializers and data loaders given no ``rng``."""
    return _default


def get_rng(rng: np.random.Generator | int | None) -> np.random.Generator:
    """Resolves an ``rng`` argument: a Generator is used as is, an int seeds a new one,
    None means nnframe's default generator."""
    if rng is None:
        return _default
    if isinstance(rng, np.random.Generator):
        return rng
    if isinstance(rng, (int, np.integer)) and not isinstance(rng, bool):
        return np.random.default_rng(int(rng))
    raise TypeError(
        f"rng: expected a numpy.random.Generator, an int seed or None, got {type(rng).__name__}"
    )
