"""Meta-test: every public Module and Loss goes through the gradient checker somewhere.

Each test file lists the classes it checks in a module-level ``CHECKED_MODULES``; this test
fails when a class in ``nnframe.__all__`` is in none of those lists.
"""

import importlib
import pathlib

import nnframe as nf

BASES = {nf.Module, nf.Loss}


def public_layer_classes() -> set[type]:
    found = set()
    for name in nf.__all__:
        obj = getattr(nf, name)
        if isinstance(obj, type) and issubclass(obj, (nf.Module, nf.Loss)) and obj not in BASES:
            found.add(obj)
    return found


def checked_classes() -> set[type]:
    checked = set()
    for path in sorted(pathlib.Path(__file__).parent.glob("test_*.py")):
        module = importlib.import_module(f"tests.{path.stem}")
        checked.update(getattr(module, "CHECKED_MODULES", ()))
    return checked


def test_every_public_layer_and_loss_is_gradchecked():
    missing = sorted(c.__name__ for c in public_layer_classes() - checked_classes())
    assert not missing, f"public classes with no gradient check (add to CHECKED_MODULES): {missing}"


def test_registry_sees_the_core():
    assert {nf.Dense, nf.Sequential} <= checked_classes()
