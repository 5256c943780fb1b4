"""Test configuration: hypothesis profiles and shared fixtures.

Profiles: ``dev`` (quick, the default), ``ci`` (more examples, derandomized, no deadline) and
``deep`` (500 random examples, for hunting defects by hand), chosen by ``HYPOTHESIS_PROFILE``
or, when unset, by ``CI=true``.
"""

import os

import numpy as np
import pytest
from hypothesis import HealthCheck, settings

from tests.standin import on_fake, on_fake_device  # noqa: F401  (fixtures: the CPU stand-in device)

settings.register_profile(
    "dev", max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
settings.register_profile(
    "ci",
    max_examples=40,
    deadline=None,
    derandomize=True,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow],
)
# for hunting defects by hand: HYPOTHESIS_PROFILE=deep pytest tests/test_hostile.py
# (HYPOTHESIS_DEEP_EXAMPLES=3000 for a longer hunt)
settings.register_profile(
    "deep",
    max_examples=int(os.environ.get("HYPOTHESIS_DEEP_EXAMPLES", "500")),
    deadline=None,
    suppress_health_check=list(HealthCheck),
)
settings.load_profile(
    os.environ.get("HYPOTHESIS_PROFILE", "ci" if os.environ.get("CI") == "true" else "dev")
)


@pytest.fixture
def rng() -> np.random.Generator:
    """A fixed-seed generator: tests never touch numpy's global RNG."""
    return np.random.default_rng(1234)
