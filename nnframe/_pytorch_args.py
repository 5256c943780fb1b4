"""PyTorch's constructor arguments that mean nothing, or something fixed, in nnframe.

Every class that shares a name with a PyTorch class takes PyTorch's arguments in PyTorch's
positional order (see docs/coming-from-pytorch.md). A few of them cannot change anything here:

- ``device``: a layer is built in main memory and, given another device (``"cuda"``), moved
  there once built (see :mod:`nnframe.core.device`); not recorded in its config, so a saved
  model loads anywhere (``nf.load(path, device=...)`` places it).
- ``dtype``: a numpy dtype (or its name); ``None`` means nnframe's default, float32.
- ``inplace``: nnframe never overwrites a layer's input (a layer called twice keeps both calls'
  inputs intact), so ``inplace=True`` returns a new array with the same values.
- ``sparse`` (Embedding, EmbeddingBag): gradients are always dense arrays of the weight's shape;
  ``sparse=True`` gives the same values.
- ``size_average`` and ``reduce`` (losses): PyTorch's deprecated spelling of ``reduction``,
  turned into it by PyTorch's rule (:func:`legacy_reduction`).
"""

from __future__ import annotations

import warnings

import numpy as np

from nnframe.core.device import Device
from nnframe.core.errors import expected_got


def check_device(who: str, device) -> None:
    """Accepts ``None`` or a device (``"cpu"``, ``"cuda"``, ``"cuda:1"``, a ``torch.device``).
    The layer is built in main memory; a constructor given another device moves the whole
    layer there once it is built (``Module``'s constructor wrapper: one ``to(device)``)."""
    if device is None:
        return
    try:
        Device(device)
    except (TypeError, ValueError):
        raise ValueError(
            expected_got(who, "device None or a device such as 'cpu' or 'cuda'", repr(device))
        ) from None


def resolve_dtype(dtype) -> np.dtype:
    """``None`` (PyTorch's default) is nnframe's default, float32."""
    return np.dtype(np.float32 if dtype is None else dtype)


def check_flag(who: str, name: str, value) -> bool:
    """A boolean argument (``inplace``, ``sparse``, ``bias``...), refused unless it is a bool."""
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(expected_got(who, f"{name} to be a bool", repr(value)))
    return bool(value)


def legacy_reduction(who: str, size_average, reduce, reduction: str) -> str:
    """PyTorch's rule for the deprecated ``size_average``/``reduce``: when either is given (not
    None) it decides, each defaulting to True: ``reduce=False`` -> ``'none'``, else
    ``size_average`` -> ``'mean'``, else ``'sum'``, and ``reduction`` is ignored (with a
    FutureWarning naming the ``reduction=`` to write instead, as PyTorch warns); otherwise
    ``reduction`` stands."""
    for name, value in (("size_average", size_average), ("reduce", reduce)):
        if value is not None and not isinstance(value, (bool, np.bool_)):
            raise TypeError(
                expected_got(
                    who,
                    f"{name} to be None or a bool",
                    repr(value),
                    "size_average and reduce are PyTorch's deprecated arguments, in PyTorch's "
                    "positional places; write reduction=... by keyword",
                )
            )
    if size_average is None and reduce is None:
        return reduction
    size_average = True if size_average is None else bool(size_average)
    reduce = True if reduce is None else bool(reduce)
    result = "none" if not reduce else "mean" if size_average else "sum"
    warnings.warn(
        f"{who}: size_average and reduce are deprecated (as in PyTorch); "
        f"write reduction={result!r} instead",
        FutureWarning,
        stacklevel=4,
    )
    return result
