"""A CPU stand-in for a device array module (CI has no GPU).

``TaggedArray`` is a numpy subclass that behaves like a device array: its ufuncs and
``__array_function__`` keep the tag, and it refuses what would break on CuPy: mixing with plain
numpy arrays, scipy's ufuncs, ``ufunc.at`` (scatters go through ``backend.scatter_add``) and
``reduceat`` of any ufunc but ``add``. ``fake`` is its array module; the ``on_fake`` fixture
registers it with nnframe's array module, and ``on_fake_device`` also as the ``"cuda"`` device,
so that ``model.to("cuda")`` runs every device path on the CPU.
"""

from __future__ import annotations

import re
import types

import numpy as np
import pytest
from numpy.lib.stride_tricks import as_strided as np_as_strided

from nnframe.core import backend, device


class LeakError(TypeError):
    """A plain numpy array met a device array (CuPy raises TypeError there too)."""


_NUMPY_UFUNCS = {v for v in vars(np).values() if isinstance(v, np.ufunc)}


def _unwrap(value, where):
    if type(value) is TaggedArray:
        return value.view(np.ndarray)
    if type(value) is np.ndarray:
        raise LeakError(
            f"{where}: a plain numpy array {value.shape} {value.dtype} met a device array"
        )
    if isinstance(value, (list, tuple)):
        return type(value)(_unwrap(v, where) for v in value)
    if isinstance(value, dict):
        return {k: _unwrap(v, where) for k, v in value.items()}
    return value


def _wrap(value):
    if type(value) is np.ndarray:
        return value.view(TaggedArray)
    if isinstance(value, tuple):
        return tuple(_wrap(v) for v in value)
    if isinstance(value, list):
        return [_wrap(v) for v in value]
    return value


class TaggedArray(np.ndarray):
    """A device array stand-in: numpy's math, CuPy's rules."""

    def __array_ufunc__(self, ufunc, method, *inputs, out=None, **kwargs):
        name = f"{ufunc.__name__}.{method}"
        if ufunc not in _NUMPY_UFUNCS:
            raise LeakError(f"{name}: not a numpy ufunc (scipy?) on a device array")
        if method == "at":
            raise LeakError(f"{name}: ufunc.at on a device array (use backend.scatter_add)")
        if method == "reduceat" and ufunc is not np.add:
            raise LeakError(f"{name}: CuPy's ufunc.reduceat is add-only")
        inputs = _unwrap(inputs, name)
        if out is not None:
            kwargs["out"] = _unwrap(out, name)
        result = getattr(ufunc, method)(*inputs, **kwargs)
        if out is not None:
            return out[0] if len(out) == 1 else out
        return _wrap(result)

    def __array_function__(self, func, types_, args, kwargs):
        name = getattr(func, "__name__", str(func))
        result = func(*_unwrap(args, name), **_unwrap(kwargs, name))
        out = kwargs.get("out")
        return out if out is not None else _wrap(result)


def _host_array(a, dtype=None, copy=True):
    """What fake.asarray/array copy from: a tagged array is used as is (no copy needed)."""
    if type(a) is TaggedArray:
        a = a.view(np.ndarray)
    a = np.array(a, dtype=dtype, copy=copy)
    if a.dtype == object:
        raise LeakError(f"fake.asarray: no device array of Python objects ({a!r})")
    return a


# what CuPy's functions take from the host: these create arrays or describe types; every other
# function of the module wants a device array (or a list of them) first, and refuses a numpy
# scalar or array there (``cupy.expand_dims(np.float32(2), -1)`` is a TypeError)
_FROM_HOST = {
    "array", "asarray", "ascontiguousarray", "asfortranarray", "asanyarray", "zeros", "ones",
    "empty", "full", "arange", "linspace", "logspace", "eye", "identity", "tri", "finfo",
    "iinfo", "dtype", "result_type", "promote_types", "can_cast", "isscalar", "ndim", "shape",
    "issubdtype", "errstate", "default_rng",
}  # fmt: skip


def _host_first(args) -> bool:
    first = args[0] if args else None
    if isinstance(first, (list, tuple)) and first:
        first = first[0]
    return isinstance(first, np.generic) or type(first) is np.ndarray


class _Namespace:
    """numpy's namespace with every array it returns tagged (a module of the other kind)."""

    def __init__(self, base):
        self._base = base

    def __getattr__(self, name):
        attr = getattr(self._base, name)
        if isinstance(attr, types.ModuleType):
            return _Namespace(attr)
        if isinstance(attr, (types.FunctionType, types.BuiltinFunctionType)) or (
            callable(attr) and not isinstance(attr, (type, np.ufunc))
        ):

            def call(*args, **kwargs):
                if name not in _FROM_HOST and _host_first(args):
                    raise LeakError(f"fake.{name}: a host value {args[0]!r} as a device array")
                return _wrap(attr(*args, **kwargs))

            return call
        return attr


class _FakeModule(_Namespace):
    def __init__(self):
        super().__init__(np)

    @staticmethod
    def asarray(a, dtype=None):
        if type(a) is TaggedArray and (dtype is None or a.dtype == np.dtype(dtype)):
            return a
        return _host_array(a, dtype).view(TaggedArray)

    @staticmethod
    def array(a, dtype=None, copy=True):
        return _host_array(a, dtype).view(TaggedArray)

    @staticmethod
    def ascontiguousarray(a, dtype=None):
        return np.ascontiguousarray(_unwrap(a, "ascontiguousarray"), dtype=dtype).view(TaggedArray)


fake = _FakeModule()


def _fake_as_strided(x, shape, strides):
    return np_as_strided(x.view(np.ndarray), shape, strides).view(TaggedArray)


def _fake_scatter_add(a, indices, values):
    np.add.at(a.view(np.ndarray), _unwrap(indices, "scatter_add"), _unwrap(values, "scatter_add"))


class _FakeGenerator:
    def __init__(self, seed):
        self._rng = np.random.default_rng(seed)

    def __getattr__(self, name):
        method = getattr(self._rng, name)
        return lambda *args, **kwargs: _wrap(method(*args, **kwargs))


class _FakeSpecial:
    """scipy.special for tagged arrays (as cupyx.scipy.special is for CuPy's)."""

    def __getattr__(self, name):
        import scipy.special

        f = getattr(scipy.special, name)
        return lambda *args: _wrap(f(*_unwrap(args, name)))


_KERNEL_FUNCTIONS = {"tanh": np.tanh, "exp": np.exp, "log": np.log, "sqrt": np.sqrt,
                     "fabs": np.abs, "max": np.maximum, "min": np.minimum}  # fmt: skip


def _fake_elementwise(spec):
    """CuPy's ElementwiseKernel on the CPU: the C body read as numpy, statement by statement
    over all elements at once. It reads what nnframe's kernels use: ``T name = expr;`` and
    ``out = expr;`` or ``out[index] = expr;`` statements with arithmetic, ``(T)`` casts and
    math functions; ``raw`` arrays indexed by the element index ``i`` (0 .. size - 1, a numpy
    range here), which must then be contiguous (their flat views are written). Arguments must
    be device arrays or Python numbers, as for CuPy."""
    params = [q.split() for q in f"{spec.inputs}, {spec.outputs}".split(",")]
    names = [q[-1] for q in params]
    raw = {q[-1] for q in params if q[0] == "raw"}
    outputs = [q.split()[-1] for q in spec.outputs.split(",")]
    lines = []
    for statement in filter(None, (part.strip() for part in spec.body.split(";"))):
        match = re.fullmatch(r"(?:T\s+)?([\w\[\]\s+*]+?)\s*=\s*(.+)", statement, re.S)
        if match is None:
            raise LeakError(f"stand-in kernel {spec.name}: cannot read {statement!r}")
        target, expr = match.groups()
        expr = re.sub(r"\(T\)\s*", "", expr)
        whole = target in outputs and target not in raw  # an element-wise output: all of it
        lines.append(f"{target}[...] = {expr}" if whole else f"{target} = {expr}")
    code = compile("\n".join(lines), f"<kernel {spec.name}>", "exec")

    def run(*args, size=None):
        if len(args) != len(names):
            raise TypeError(f"kernel {spec.name}: {len(args)} arguments for {names}")
        env = {} if size is None else {"i": np.arange(size)}
        for name, a in zip(names, args):
            if type(a) is np.ndarray or isinstance(a, np.generic):
                raise LeakError(f"kernel {spec.name}: a host value for {name}")
            if name in outputs and type(a) is not TaggedArray:
                raise LeakError(f"kernel {spec.name}: output {name} is no device array")
            if name in raw:
                if not a.flags.c_contiguous:
                    raise LeakError(f"kernel {spec.name}: raw {name} {a.shape} not contiguous")
                a = a.reshape(-1)
            env[name] = a.view(np.ndarray) if type(a) is TaggedArray else a
        exec(code, dict(_KERNEL_FUNCTIONS), env)

    return run


@pytest.fixture
def on_fake():
    undo = backend.register_array_module(
        TaggedArray,
        fake,
        as_strided=_fake_as_strided,
        scatter_add=_fake_scatter_add,
        default_rng=_FakeGenerator,
        to_numpy=lambda a: np.array(a.view(np.ndarray)),
        special=_FakeSpecial(),
        elementwise=_fake_elementwise,
    )
    yield fake
    undo()


def to_fake(a):
    if isinstance(a, np.ndarray) and type(a) is not TaggedArray:
        return fake.asarray(a)
    return a


def is_fake(a) -> bool:
    return type(a) is TaggedArray


@pytest.fixture
def on_fake_device(on_fake):
    """The stand-in as the "cuda" device (GPU 0 only): what ``to("cuda")`` does with CuPy."""
    undo = device.register_device("cuda", fake, move=lambda a, index: _to_fake_device(a))
    yield fake
    undo()


def _to_fake_device(a):
    if type(a) is TaggedArray:
        return a
    return fake.array(np.asarray(a))
