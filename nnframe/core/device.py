"""Devices: where a model's arrays live, and moving arrays between them.

``"cpu"`` is main memory (numpy arrays). ``"cuda"`` and ``"cuda:1"`` are NVIDIA GPUs (CuPy
arrays; CuPy is imported the first time a GPU is asked for, and never otherwise). The array
module of each device comes from :mod:`nnframe.core.backend`, so a layer written against
``array_module(x)`` runs on every device. Other device types (a future backend, or the CPU
stand-in the tests use) are added with :func:`register_device`.

    model.to("cuda")                 # parameters, gradients and buffers move to GPU 0
    x = nf.to_device(x, "cuda")      # arrays, and tuples/lists/dicts of them
    nf.device_of(model)              # device(type='cuda', index=0)
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any

import numpy as np

from nnframe.core.backend import array_module, to_numpy
from nnframe.core.errors import expected_got
from nnframe.core.parameter import Parameter

__all__ = [
    "Device",
    "DeviceError",
    "cuda_is_available",
    "cuda_missing",
    "device_of",
    "device_types",
    "register_device",
    "to_device",
    "use",
]


class DeviceError(RuntimeError):
    """A device that cannot be used (CuPy missing, no GPU), or arrays of two devices that met."""


class Device:
    """A device: its ``type`` (``"cpu"``, ``"cuda"``) and ``index`` (which GPU; None for the CPU).

    Args:
        spec: ``"cpu"``, ``"cuda"``, ``"cuda:1"``, another Device, or anything with ``type`` and
            ``index`` attributes (``torch.device``).
        index: the GPU number, when ``spec`` does not give it (``Device("cuda", 1)``).

    ``Device("cuda")`` means GPU 0, as the arrays CuPy makes by default.
    """

    __slots__ = ("type", "index")
    type: str
    index: int | None

    def __init__(self, spec: Any, index: int | None = None):
        given: int | None
        if isinstance(spec, Device):
            kind, given = spec.type, spec.index
        elif isinstance(spec, str):
            kind, colon, number = spec.partition(":")
            given = _index_text(spec, number) if colon else None
        elif isinstance(getattr(spec, "type", None), str):  # torch.device
            kind, given = spec.type, getattr(spec, "index", None)
        else:
            raise TypeError(
                expected_got("Device", "a device such as 'cpu', 'cuda' or 'cuda:1'", repr(spec))
            )
        if index is not None and given is not None and index != given:
            raise ValueError(expected_got("Device", f"one index for {spec!r}", f"also {index}"))
        if kind not in _BACKENDS and kind != "cuda":
            known = ", ".join(repr(k) for k in sorted({*_BACKENDS, "cuda"}))
            raise ValueError(expected_got("Device", f"a device type of {known}", repr(spec)))
        index = given if index is None else index
        if index is not None and (isinstance(index, bool) or not isinstance(index, int)):
            raise TypeError(expected_got("Device", "an integer index", repr(index)))
        if index is not None and index < 0:
            raise ValueError(expected_got("Device", "an index >= 0", str(index)))
        self.type = kind
        self.index = None if kind == "cpu" else (index or 0)

    def __eq__(self, other) -> bool:
        if isinstance(other, str):
            try:
                other = Device(other)
            except ValueError:  # no device at all: not this one
                return False
        return isinstance(other, Device) and (self.type, self.index) == (other.type, other.index)

    def __hash__(self) -> int:
        return hash((self.type, self.index))

    def __str__(self) -> str:
        return self.type if self.index is None else f"{self.type}:{self.index}"

    def __repr__(self) -> str:
        if self.index is None:
            return f"device(type={self.type!r})"
        return f"device(type={self.type!r}, index={self.index})"


def _index_text(spec: str, number: str) -> int:
    if not (number.isascii() and number.isdigit()):
        raise ValueError(expected_got("Device", "a device such as 'cuda:1'", repr(spec)))
    return int(number)


class _Backend:
    """What a device type needs: its array module, how an array gets there (``move(a, index)``,
    from any device), which of its devices holds an array (``index_of(a)``), and a context
    in which new arrays are made on device ``index`` (``use(index)``)."""

    __slots__ = ("xp", "move", "index_of", "use")

    def __init__(self, xp, move: Callable, index_of: Callable, use: Callable | None = None):
        self.xp, self.move, self.index_of = xp, move, index_of
        self.use = use or (lambda index: contextlib.nullcontext())


_BACKENDS: dict[str, _Backend] = {
    "cpu": _Backend(np, lambda a, index: to_numpy(a), lambda a: None),
}
CPU = Device("cpu")


def register_device(
    type_name: str,
    xp,
    *,
    move: Callable,
    index_of: Callable | None = None,
    use: Callable | None = None,
) -> Callable[[], None]:
    """Adds (or replaces) a device type: ``move(array, index)`` returns the array on device
    ``index`` of this type (from any device, numpy included); ``index_of(array)`` says which
    of them holds an array of module ``xp`` (default: 0); ``use(index)`` is a context manager in
    which ``xp`` makes new arrays on device ``index`` (default: none needed). Returns a function
    that undoes it. ``xp`` must be the array module :mod:`nnframe.core.backend` knows for those
    arrays."""
    before = _BACKENDS.get(type_name)
    backend = _BACKENDS[type_name] = _Backend(xp, move, index_of or (lambda a: 0), use)

    def unregister() -> None:
        if _BACKENDS.get(type_name) is backend:
            if before is None:
                del _BACKENDS[type_name]
            else:
                _BACKENDS[type_name] = before

    return unregister


def _cuda() -> _Backend:
    """CuPy, imported now (the first GPU use); a DeviceError that says what to install, or that
    no GPU is visible."""
    try:
        import cupy
    except ImportError as error:
        raise DeviceError(
            "device 'cuda': expected CuPy, got ImportError "
            f"({error}). Install it: pip install 'nnframe[cuda]'"
        ) from None
    try:
        count = cupy.cuda.runtime.getDeviceCount()
    except Exception as error:  # CUDARuntimeError: no driver, no device
        raise DeviceError(f"device 'cuda': expected a CUDA GPU, got {error}") from None
    if count == 0:
        raise DeviceError("device 'cuda': expected a CUDA GPU, got none")

    def move(a, index: int):
        if isinstance(a, cupy.ndarray) and a.device.id == index:
            return a
        with cupy.cuda.Device(index):
            return cupy.array(a)  # a host array is copied up; another GPU's, across

    return _BACKENDS.setdefault(
        "cuda", _Backend(cupy, move, lambda a: a.device.id, lambda index: cupy.cuda.Device(index))
    )


def _backend(device: Device) -> _Backend:
    backend = _BACKENDS.get(device.type)
    return backend if backend is not None else _cuda()


def cuda_device(device: int | str | None = None) -> Device:
    """What ``cuda(device)`` of a Module or a Loss means: GPU 0, GPU ``device`` (an int), or
    the device named (``"cuda:1"``)."""
    if device is None or isinstance(device, int):
        return Device("cuda", device)
    return Device(device)


def device_types() -> set[str]:
    """The device types known: ``"cpu"``, ``"cuda"`` and any registered one."""
    return {*_BACKENDS, "cuda"}


def cuda_missing() -> str | None:
    """Why ``"cuda"`` cannot be used (CuPy missing, or no GPU visible), or None when it can.
    Imports CuPy but creates no CUDA context."""
    try:
        _backend(Device("cuda"))
    except DeviceError as error:
        return str(error)
    return None


def cuda_is_available() -> bool:
    """Whether ``"cuda"`` can be used: CuPy imports and sees at least one GPU."""
    return cuda_missing() is None


def device_of(obj) -> Device:
    """The device of an array, of a Parameter, or of a Module (its first parameter or buffer;
    the CPU for a module without any)."""
    if isinstance(obj, Parameter):
        obj = obj.data
    elif callable(getattr(obj, "parameters", None)):  # a Module (module.py imports this file)
        first = next((p.data for p in obj.parameters()), None)
        if first is None:
            first = next((b for _, b in obj.named_buffers() if b is not None), None)
        if first is None:
            return CPU
        obj = first
    xp = array_module(obj)
    if xp is np:
        return CPU
    for kind, backend in _BACKENDS.items():
        if backend.xp is xp:
            return Device(kind, backend.index_of(obj))
    raise DeviceError(f"device_of: expected an array of a known device, got {type(obj).__name__}")


def to_device(obj, device):
    """``obj`` on ``device``: an array (numpy or another module's) or a tuple, list or dict of
    them (nested), with everything else (None, numbers, strings) left as it is. An array already
    there is returned as is (no copy)."""
    device = device if isinstance(device, Device) else Device(device)
    backend = _backend(device)
    return _move(obj, backend, device.index)


def _move(obj, backend: _Backend, index):
    if isinstance(obj, (tuple, list)):
        return type(obj)(_move(v, backend, index) for v in obj)
    if isinstance(obj, dict):
        return {k: _move(v, backend, index) for k, v in obj.items()}
    if isinstance(obj, np.ndarray) or array_module(obj) is not np:
        if array_module(obj) is backend.xp and (index is None or backend.index_of(obj) == index):
            return obj
        return backend.move(obj, index)
    return obj


def use(device) -> contextlib.AbstractContextManager:
    """A context in which new arrays of ``device``'s module are made on that device: CuPy
    allocates on its *current* GPU, so work on a model on ``cuda:1`` runs inside
    ``with use("cuda:1"):`` (``Trainer`` does it for its model). Nothing to do for the CPU."""
    device = device if isinstance(device, Device) else Device(device)
    return _backend(device).use(device.index)


def array_mover(device: Device) -> Callable:
    """A function moving one array to ``device`` (what ``Module.to`` applies)."""
    backend = _backend(device)
    return lambda a: _move(a, backend, device.index)
