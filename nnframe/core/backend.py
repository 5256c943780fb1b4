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
    "stepped_matmul",
    "to_numpy",
]


class Elementwise(NamedTuple):
    """A fused element-wise kernel: C code run once per element (CuPy's ``ElementwiseKernel``).

    ``inputs`` and ``outputs`` declare the parameters, ``"T x, T y"`` (T: the arrays' float
    type, bound at the call); ``body`` assigns the outputs, and may read an output before
    writing it (an in-out array). Arrays broadcast against each other and may be strided
    views. A ``raw T a`` parameter is instead read by flat index (``a[i + offset]``, ``i`` the
    element index; ``int64`` scalars carry offsets), and the call then says how many elements
    it runs over (``kernel(..., size=n)``). Example (``y = a * x + b`` in one pass)::

        AXPB = Elementwise("axpb", "T a, T x, T b", "T y", "y = a * x + b")
        kernel = elementwise(xp, AXPB, x.dtype)  # None for numpy: use numpy there
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
        "kernels", "stepped_matmul",
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
        self.stepped_matmul: Callable | None = None  # (a, b, out) -> step(i, j), or None


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
    kind = _KINDS[cupy.ndarray]
    kind.stepped_matmul = _cublas_stepped_matmul
    return kind


def _cublas_stepped_matmul(a, b, out):
    """stepped_matmul for CuPy: each step one cuBLAS GEMM on pointers computed from the step
    indices (CuPy's matmul spends about 35 us of Python per call, this about 5), or None where
    the layouts or the dtype do not suit it (the caller then uses matmul)."""
    import cupy
    from cupy_backends.cuda.libs import cublas

    gemm = {np.dtype(np.float32): cublas.sgemm, np.dtype(np.float64): cublas.dgemm}.get(b.dtype)
    it = b.dtype.itemsize
    if (
        gemm is None
        or not a.device.id == b.device.id == out.device.id == cupy.cuda.Device().id
        or not a.dtype == b.dtype == out.dtype
        or a.strides[1] != it
        or b.strides[2] != it
        or out.strides[2] != it
        or any(s % it for s in (*a.strides, *b.strides, *out.strides))
    ):
        return None
    (m, k), n = a.shape, b.shape[2]
    # row-major out (m, n) = a (m, k) @ b (k, n) is column-major out^T = b^T a^T: cuBLAS's
    # (n x k) @ (k x m) on the same memory, leading dimensions the row strides
    lda, ldb, ldc = a.strides[0] // it, b.strides[1] // it, out.strides[1] // it
    scalars = np.array([1, 0], dtype=b.dtype)  # alpha, beta on the host (kept alive below)
    one, zero = scalars.ctypes.data, scalars.ctypes.data + it
    handle = cupy.cuda.device.get_cublas_handle()
    cublas.setPointerMode(handle, cublas.CUBLAS_POINTER_MODE_HOST)
    pa, pb, po = a.data.ptr, b.data.ptr, out.data.ptr
    sb, so = b.strides[0], out.strides[0]

    def step(i: int, j: int, _alive=(scalars, a, b, out)) -> None:  # (the memory it points to)
        gemm(handle, 0, 0, n, m, k, one, pb + i * sb, ldb, pa, lda, zero, po + j * so, ldc)

    return step


def stepped_matmul(a, b, out) -> Callable[[int, int], None]:
    """A function ``step(i, j)`` that computes ``out[j] = a @ b[i]`` in place, for a recurrent
    loop's per-step products: ``a`` (M, K), ``b`` (S, K, N), ``out`` (S', M, N), each with unit
    stride along its last axis (row slices and column blocks are fine).

    numpy runs ``np.matmul(a, b[i], out=out[j])``; on a GPU each step is one GEMM call on
    precomputed pointers, without the views and checks of a matmul call (the step's cost is
    then the launch alone). Checked once per process against matmul on the GPU; where they
    differ (an unexpected library version), matmul is used.
    """
    kind = _kind(b)
    stepped = kind.stepped_matmul
    if stepped is not None and _raw_gemm_ok(kind.xp, stepped):
        step = stepped(a, b, out)
        if step is not None:
            return step

    def matmul_step(i: int, j: int) -> None:
        np.matmul(a, b[i], out=out[j])

    return matmul_step


_RAW_GEMM_OK: dict[int, bool] = {}


def _raw_gemm_ok(xp, stepped: Callable) -> bool:
    """Whether module ``xp``'s stepped GEMM gives matmul's numbers (a column block of a wider
    matrix, a row block of a stack, a stacked output), tried once."""
    ok = _RAW_GEMM_OK.get(id(xp))
    if ok is None:
        rng = np.random.default_rng(0)
        wide = xp.asarray(rng.normal(size=(3, 7)))
        b = xp.asarray(rng.normal(size=(2, 9, 4)))
        out = xp.zeros((3, 3, 4))
        try:
            stepped(wide[:, 2:], b[:, 4:], out)(1, 2)
            want = xp.matmul(wide[:, 2:], b[1, 4:])
            ok = bool(xp.allclose(out[2], want, rtol=1e-12, atol=0)) and not bool(out[:2].any())
        except Exception:
            ok = False
        _RAW_GEMM_OK[id(xp)] = ok
    return ok


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


_KERNEL_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))


def elementwise(xp, spec: Elementwise, dtype) -> Callable | None:
    """The kernel of ``spec`` for arrays of module ``xp`` and float type ``dtype`` (compiled
    once, on first use), or None where there is none: numpy (the caller runs its numpy code
    instead), a module without fused kernels, or a dtype other than float32 and float64 (the
    C math functions of the kernels are those of these two)."""
    if xp is np or np.dtype(dtype) not in _KERNEL_DTYPES:
        return None
    kind = _BY_MODULE.get(id(xp))
    if kind is None or kind.compile is None:
        return None
    kernel = kind.kernels.get(spec)
    if kernel is None:
        kernel = kind.kernels[spec] = kind.compile(spec)
    return kernel
