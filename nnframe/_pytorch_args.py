"""PyTorch's constructor arguments that mean nothing, or something fixed, in nnframe.

Every class that shares a name with a PyTorch class takes PyTorch's arguments in PyTorch's
positional order (see docs/coming-from-pytorch.md). A few of them cannot change anything here:

- ``device``: nnframe's layers are built in main memory. ``None`` and ``"cpu"`` (or a
  ``torch.device("cpu")``) are accepted; any other device is refused, never silently ignored,
  with the fix: move the built model, ``model.to("cuda")``.
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

from nnframe.core.errors import expected_got


def check_device(who: str, device) -> None:
    """Accepts ``None`` or a CPU device (``"cpu"``, ``"cpu:0"``, ``torch.device("cpu")``)."""
    if device is None:
        return
    text = device if isinstance(device, str) else str(getattr(device, "type", device))
    if not (text == "cpu" or text.startswith("cpu:")):
        raise ValueError(
            expected_got(
                who,
                "device None or 'cpu'",
                repr(device),
                "layers are built in main memory: move the model once it is built, "
                f"model.to({text!r})",
            )
        )


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
