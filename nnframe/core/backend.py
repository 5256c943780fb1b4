"""The array module: numpy, or the module of the arrays' kind.

Layers, losses, optimizers and helpers never hard-wire numpy for the arrays they create. At the
top of ``forward``/``backward``/``step`` they ask :func:`array_module` for the module of their
input (or of a parameter) and allocate through it::

    xp = array_module(x)
    out = xp.empty((n, d), dtype=x.dtype)

For numpy arrays that module is ``numpy`` itself (one type check: the numpy path costs nothing).
For another kind of array it is that kind's numpy-compatible module: CuPy for ``cupy.ndarray``
(imported here, lazily, the first time such an array is seen; no layer imports CuPy), or a
module registered with :func:`register_array_module` (the CPU stand-in the tests use, a future
backend). numpy's ufuncs (``np.exp(x)``, ``np.maximum(a, b, out=c)``) and the functions that
dispatch through ``__array_function__`` (``np.concatenate``, ``np.zeros_like``, ``np.einsum``)
already follow their arguments' kind; what creates or converts arrays must go through ``xp``.

A device module may also compile fused element-wise kernels: :func:`elementwise` gives a layer
the kernel of an :class:`Elementwise` spec (C code for one element, CuPy's
``ElementwiseKernel`` on a GPU), or None for numpy, where the layer keeps its numpy code. One
launch then does what a dozen numpy calls do, which on a GPU is a dozen kernel launches.

Where numpy and the other modules differ, this module has the one helper layers call:
:func:`as_strided` (window views), :func:`scatter_add` (unbuffered ``a[idx] += v``, numpy's
``np.add.at``), :func:`random_generator` (a generator of the array module's kind),
:func:`to_numpy` (a host copy), :func:`is_array` (``isinstance(a, np.ndarray)`` for every
module: a CuPy array is no ``np.ndarray``) and :func:`special` (scipy.special's functions:
``expit``, ``xlogy``, ``erfc``; scipy works on numpy arrays only).
"""

from __future__ import annotations

import types
from collections.abc import Callable
from typing import Any, NamedTuple

import numpy as np
import scipy.special
from numpy.lib.stride_tricks import as_strided as _np_as_strided

__all__ = [
    "Elementwise",
    "array_module",
    "elementwise",
    "as_strided",
    "is_array",
    "random_generator",
    "register_array_module",
    "scatter_add",
    "special",
    "to_numpy",
]


class Elementwise(NamedTuple):
    """A fused element-wise kernel: C code run once per element (CuPy's ``ElementwiseKernel``).

    ``inputs`` and ``outputs`` declare the parameters, ``"T x, T y"`` (T: the arrays' float
    type, bound at the call); ``body`` assigns the outputs, and may read an output before
    writing it (an in-out array). Arrays broadcast against each other and may be strided
    views. Example (``y = a * x + b`` in one pass)::

        AXPB = Elementwise("axpb", "T a, T x, T b", "T y", "y = a * x + b")
        kernel = elementwise(xp, AXPB)  # None for numpy: use numpy there
        kernel(a, x, b, y)
    """

    name: str
    inputs: str
    outputs: str
    body: str


class _Kind:
    """One array module and its versions of the operations where it differs from numpy."""

    __slots__ = (
        "xp", "as_strided", "scatter_add", "default_rng", "to_numpy", "special", "compile",
        "kernels",
    )  # fmt: skip

    def __init__(self, xp, as_strided, scatter_add, default_rng, to_numpy, special, compile=None):
        self.xp = xp
        self.as_strided = as_strided
        self.scatter_add = scatter_add
        self.default_rng = default_rng
        self.to_numpy = to_numpy
        self.special = special
        self.compile = compile  # Elementwise -> kernel, or None: no fused kernels
        self.kernels: dict[Elementwise, Callable] = {}


_NUMPY = _Kind(np, _np_as_strided, np.add.at, np.random.default_rng, np.asarray, scipy.special)
_KINDS: dict[type, _Kind] = {}  # array type -> its kind (registered, or found and cached)
_BY_MODULE: dict[int, _Kind] = {id(np): _NUMPY}  # id(xp) -> kind
_RNGS: dict[tuple[int, int], tuple[np.random.Generator, Any]] = {}


def register_array_module(
    array_type: type,
    xp,
    *,
    as_strided: Callable | None = None,
    scatter_add: Callable | None = None,
    default_rng: Callable | None = None,
    to_numpy: Callable | None = None,
    special=None,
    elementwise: Callable | None = None,
) -> Callable[[], None]:
    """Makes ``xp`` the array module of ``array_type`` (and of its subclasses).

    ``xp`` is a numpy-compatible namespace (``xp.zeros``, ``xp.asarray``, ...). The keyword
    arguments are its versions of the operations where modules differ; each defaults to the
    numpy-named one in ``xp`` (``xp.lib.stride_tricks.as_strided``, ``xp.add.at``,
    ``xp.random.default_rng``, ``xp.asnumpy`` or else ``numpy.asarray``); ``special`` is a namespace
    with scipy.special's ``expit``, ``xlogy`` and ``erfc`` for its arrays (default ``xp.special``);
    ``elementwise`` compiles an :class:`Elementwise` spec into a kernel (None: the module has no
    fused kernels, and layers use their array code). Returns a function that undoes the
    registration.
    """
    kind = _Kind(
        xp,
        as_strided or xp.lib.stride_tricks.as_strided,
        scatter_add or xp.add.at,
        default_rng or xp.random.default_rng,
        to_numpy or getattr(xp, "asnumpy", np.asarray),
        special if special is not None else getattr(xp, "special", None),
        elementwise,
    )
    _KINDS[array_type] = kind
    _BY_MODULE[id(xp)] = kind

    def unregister() -> None:
        if _KINDS.get(array_type) is kind:
            for t in [t for t, k in _KINDS.items() if k is kind]:
                del _KINDS[t]
            if _BY_MODULE.get(id(xp)) is kind:
                del _BY_MODULE[id(xp)]
            for key in [key for key in _RNGS if key[1] == id(xp)]:
                del _RNGS[key]

    return unregister


def _load_cupy() -> _Kind:
    """Registers CuPy (imported on first use only: nnframe never needs it otherwise)."""
    import cupy
    import cupyx
    import cupyx.scipy.special

    register_array_module(
        cupy.ndarray,
        cupy,
        as_strided=cupy.lib.stride_tricks.as_strided,
        scatter_add=cupyx.scatter_add,
        default_rng=cupy.random.default_rng,
        to_numpy=cupy.asnumpy,
        special=cupyx.scipy.special,
        elementwise=lambda spec: cupy.ElementwiseKernel(
            spec.inputs, spec.outputs, spec.body, f"nnframe_{spec.name}"
        ),
    )
    return _KINDS[cupy.ndarray]


def _kind_of_type(t: type) -> _Kind:
    kind = _KINDS.get(t)
    if kind is not None:
        return kind
    for base in t.__mro__[1:]:
        kind = _KINDS.get(base)
        if kind is not None:
            break
    else:
        if t.__module__.partition(".")[0] == "cupy" and hasattr(t, "__cuda_array_interface__"):
            kind = _load_cupy()
        else:
            kind = _NUMPY  # numpy arrays and subclasses, scalars, lists, sparse matrices
    _KINDS[t] = kind
    return kind


def _kind(a) -> _Kind:
    t = type(a)
    return _NUMPY if t is np.ndarray else _kind_of_type(t)


def array_module(*arrays) -> types.ModuleType | Any:
    """The array module of the arguments: the first non-numpy kind among them, else numpy.

    Anything that is not an array (None, Python numbers, lists, numpy scalars) counts as numpy.
    """
    for a in arrays:
        if type(a) is not np.ndarray:
            kind = _kind_of_type(type(a))
            if kind is not _NUMPY:
                return kind.xp
    return np


def is_array(a) -> bool:
    """Whether ``a`` is an array of numpy (subclasses included) or of another array module
    (registered, or CuPy): what ``isinstance(a, np.ndarray)`` means for code that must accept
    device arrays too. Scalars, lists and None are not arrays. Hot paths may keep the numpy test
    first: ``isinstance(a, np.ndarray) or is_array(a)``."""
    if isinstance(a, np.ndarray):
        return True
    return _kind_of_type(type(a)) is not _NUMPY


def as_strided(x, shape, strides, *, writeable: bool = False):
    """A strided view of ``x`` (window views for convolutions and pooling); read-only unless
    ``writeable``. Modules without a ``writeable`` flag ignore it."""
    if type(x) is np.ndarray:
        return _np_as_strided(x, shape, strides, writeable=writeable)
    kind = _kind(x)
    if kind is _NUMPY:
        return _np_as_strided(x, shape, strides, writeable=writeable)
    return kind.as_strided(x, shape, strides)


def scatter_add(a, indices, values) -> None:
    """``a[indices] += values`` with repeated indices adding up (numpy's ``np.add.at``), in
    place."""
    _kind(a).scatter_add(a, indices, values)


def random_generator(xp, rng: np.random.Generator):
    """A random generator for arrays of module ``xp`` that follows ``rng``.

    For numpy it is ``rng`` itself (numpy results are unchanged). For another module it is one
    generator of that module's kind per ``rng``, seeded once from ``rng``, so a seeded run
    repeats exactly on that module too.
    """
    if xp is np:
        return rng
    kind = _BY_MODULE.get(id(xp))
    if kind is None:
        raise TypeError(f"random_generator: {xp!r} is not a registered array module")
    key = (id(rng), id(xp))
    entry = _RNGS.get(key)
    if entry is None or entry[0] is not rng:
        entry = (rng, kind.default_rng(int(rng.integers(2**63))))
        _RNGS[key] = entry
    return entry[1]


def to_numpy(a) -> np.ndarray:
    """``a`` as a numpy array on the host (the array itself when it already is one)."""
    if type(a) is np.ndarray:
        return a
    return _kind(a).to_numpy(a)


def special(*arrays):
    """scipy.special for numpy arrays, its counterpart for the arguments' module otherwise:
    ``special(x).expit(x)``, ``special(t).xlogy(t, t)``, ``special(x).erfc(x)``."""
    for a in arrays:
        if type(a) is not np.ndarray:
            kind = _kind_of_type(type(a))
            if kind is not _NUMPY:
                if kind.special is None:
                    raise TypeError(f"{kind.xp!r} was registered without special functions")
                return kind.special
    return scipy.special


def elementwise(xp, spec: Elementwise) -> Callable | None:
    """The kernel of ``spec`` for arrays of module ``xp`` (compiled once, on first use), or None
    where ``xp`` has no fused kernels (numpy: the caller runs its numpy code instead)."""
    if xp is np:
        return None
    kind = _BY_MODULE.get(id(xp))
    if kind is None or kind.compile is None:
        return None
    kernel = kind.kernels.get(spec)
    if kernel is None:
        kernel = kind.kernels[spec] = kind.compile(spec)
    return kernel
