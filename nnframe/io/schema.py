"""One validation layer for everything nnframe reads back from a file.

Configs, checkpoint trees, optimizer, scheduler and callback states are all untrusted: a file can
be edited, truncated or crafted. Each reader declares the shape of what it accepts as a small
schema built from the constructors below, and calls :func:`validate` before it applies anything.
``validate`` checks the whole value (types, ranges, lengths, allowed keys) and returns a cleaned
copy; on the first problem it raises :class:`SchemaError` (a :class:`~nnframe.ModelFormatError`)
naming where in the state the problem is, what was expected and what came. Appliers then change
their object only after every part has been validated, so a rejected file changes nothing.

Example:
    >>> from nnframe.io import schema as s
    >>> spec = s.Record({"lr": s.Float(min=0), "steps": s.Int(min=0)})
    >>> s.validate(spec, {"lr": 0.1, "steps": 3}, "SGD.load_state_dict")
    {'lr': 0.1, 'steps': 3}
    >>> s.validate(spec, {"lr": "abc", "steps": 3}, "SGD.load_state_dict")
    Traceback (most recent call last):
    ...
    nnframe.io.schema.SchemaError: SGD.load_state_dict: lr: expected a finite number >= 0, got 'abc'
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping

import numpy as np

from nnframe.core.backend import is_array, to_numpy
from nnframe.core.errors import ModelFormatError

__all__ = [
    "SchemaError",
    "Any",
    "Array",
    "Bool",
    "Check",
    "DictOf",
    "Float",
    "Int",
    "ListOf",
    "Nullable",
    "OneOf",
    "Record",
    "Str",
    "Tuple",
    "like",
    "validate",
]

#: the longest list or dict, and the deepest nesting, any schema accepts by default
MAX_ITEMS = 1_000_000
MAX_DEPTH = 32


class SchemaError(ModelFormatError):
    """A value read from a file (checkpoint, optimizer, scheduler or callback state, config) does
    not match what its reader declared. Nothing was changed."""


def _short(value, limit: int = 60) -> str:
    if is_array(value):
        return f"an array of shape {value.shape} and dtype {value.dtype}"
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


class _Spec:
    """A schema node: ``check(value, path, depth)`` returns the cleaned value or raises."""

    expected = "a value"

    def fail(self, path: str, value, expected: str | None = None):
        where = path or "state"
        raise SchemaError(f"{where}: expected {expected or self.expected}, got {_short(value)}")

    def check(self, value, path: str, depth: int):  # pragma: no cover - abstract
        raise NotImplementedError


def _join(path: str, key) -> str:
    return f"{path}.{key}" if path else str(key)


class Any(_Spec):
    """Anything already decoded from a file (used only where the consumer validates later)."""

    def check(self, value, path, depth):
        return value


class Bool(_Spec):
    expected = "a bool"

    def check(self, value, path, depth):
        if isinstance(value, (bool, np.bool_)):
            return bool(value)
        self.fail(path, value)


class Int(_Spec):
    """An integer (not a bool, not a float) in ``[min, max]``."""

    def __init__(self, min: int | None = None, max: int | None = None, what: str = ""):
        self.min, self.max = min, max
        bounds = [f">= {min}"] if min is not None else []
        bounds += [f"<= {max}"] if max is not None else []
        noun = f"an integer {what}".strip()
        self.expected = noun + (" " + " and ".join(bounds) if bounds else "")

    def check(self, value, path, depth):
        if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
            self.fail(path, value)
        value = int(value)
        if (self.min is not None and value < self.min) or (
            self.max is not None and value > self.max
        ):
            self.fail(path, value)
        return value


class Float(_Spec):
    """A real number (ints accepted), finite unless ``finite=False``, in ``[min, max]``
    (``max_open``: strictly below ``max``; ``min_open``: strictly above ``min``)."""

    def __init__(
        self,
        min: float | None = None,
        max: float | None = None,
        *,
        finite: bool = True,
        min_open: bool = False,
        max_open: bool = False,
    ):
        self.min, self.max, self.finite = min, max, finite
        self.min_open, self.max_open = min_open, max_open
        bounds = [f"{'>' if min_open else '>='} {min:g}"] if min is not None else []
        bounds += [f"{'<' if max_open else '<='} {max:g}"] if max is not None else []
        self.expected = ("a finite number" if finite else "a number") + (
            " " + " and ".join(bounds) if bounds else ""
        )

    def check(self, value, path, depth):
        if isinstance(value, (bool, np.bool_)) or not isinstance(
            value, (int, float, np.integer, np.floating)
        ):
            self.fail(path, value)
        value = float(value)
        if math.isnan(value) or (self.finite and math.isinf(value)):
            self.fail(path, value)
        lo, hi = self.min, self.max
        if lo is not None and (value < lo or (self.min_open and value == lo)):
            self.fail(path, value)
        if hi is not None and (value > hi or (self.max_open and value == hi)):
            self.fail(path, value)
        return value


class Str(_Spec):
    """A string, of at most ``max_len`` characters, one of ``choices`` if given."""

    def __init__(self, choices=None, max_len: int = 10_000):
        self.choices = None if choices is None else tuple(choices)
        self.max_len = max_len
        self.expected = "a string" if choices is None else f"one of {list(self.choices)}"

    def check(self, value, path, depth):
        if not isinstance(value, str) or len(value) > self.max_len:
            self.fail(path, value)
        if self.choices is not None and value not in self.choices:
            self.fail(path, value)
        return value


class Nullable(_Spec):
    """None, or a value matching ``inner``."""

    def __init__(self, inner: _Spec):
        self.inner = inner
        self.expected = f"None or {inner.expected}"

    def check(self, value, path, depth):
        return None if value is None else self.inner.check(value, path, depth)


class OneOf(_Spec):
    """The first of several schemas that accepts the value."""

    def __init__(self, *options: _Spec):
        self.options = options
        self.expected = " or ".join(o.expected for o in options)

    def check(self, value, path, depth):
        for option in self.options:
            try:
                return option.check(value, path, depth)
            except SchemaError:
                continue
        self.fail(path, value)


def _depth(path: str, depth: int) -> int:
    if depth >= MAX_DEPTH:
        raise SchemaError(f"{path}: expected nesting of at most {MAX_DEPTH} levels, got deeper")
    return depth + 1


class ListOf(_Spec):
    """A list (or tuple) of items matching ``item``, with ``min_len <= len <= max_len``;
    returned as a list (``as_tuple``: a tuple)."""

    def __init__(self, item: _Spec, *, min_len: int = 0, max_len: int = MAX_ITEMS, as_tuple=False):
        self.item, self.min_len, self.max_len, self.as_tuple = item, min_len, max_len, as_tuple
        self.expected = f"a list of {min_len}..{max_len} items"

    def check(self, value, path, depth):
        if not isinstance(value, (list, tuple)) or not self.min_len <= len(value) <= self.max_len:
            self.fail(path, value)
        depth = _depth(path, depth)
        out = [self.item.check(v, f"{path}[{i}]", depth) for i, v in enumerate(value)]
        return tuple(out) if self.as_tuple else out


class Tuple(_Spec):
    """A list or tuple of exactly ``len(items)`` values, each matching its schema; a tuple."""

    def __init__(self, *items: _Spec):
        self.items = items
        self.expected = f"a pair/tuple of {len(items)} values"

    def check(self, value, path, depth):
        if not isinstance(value, (list, tuple)) or len(value) != len(self.items):
            self.fail(path, value)
        depth = _depth(path, depth)
        return tuple(
            spec.check(v, f"{path}[{i}]", depth)
            for i, (spec, v) in enumerate(zip(self.items, value))
        )


class DictOf(_Spec):
    """A dict whose keys match ``key`` and values match ``value`` (at most ``max_len`` items)."""

    def __init__(self, key: _Spec, value: _Spec, *, max_len: int = MAX_ITEMS):
        self.key, self.value, self.max_len = key, value, max_len
        self.expected = "a dict"

    def check(self, value, path, depth):
        if not isinstance(value, Mapping) or len(value) > self.max_len:
            self.fail(path, value)
        depth = _depth(path, depth)
        out = {}
        for k, v in value.items():
            k2 = self.key.check(k, f"{path} key", depth)
            if k2 in out:
                raise SchemaError(f"{path}: expected distinct keys, got {k!r} twice")
            out[k2] = self.value.check(v, _join(path, k), depth)
        return out


class Record(_Spec):
    """A dict with declared fields: ``fields`` maps each name to its schema. Names in
    ``optional`` may be absent; any other name is refused unless ``extra`` allows it."""

    def __init__(self, fields: Mapping[str, _Spec], *, optional=(), extra: bool = False):
        self.fields, self.optional, self.extra = dict(fields), set(optional), extra
        self.expected = f"a dict with keys {sorted(self.fields)}"

    def check(self, value, path, depth):
        if not isinstance(value, Mapping):
            self.fail(path, value)
        depth = _depth(path, depth)
        unknown = [k for k in value if k not in self.fields]
        if unknown and not self.extra:
            raise SchemaError(
                f"{path or 'state'}: expected keys among {sorted(self.fields)}, got unknown "
                f"{sorted(map(str, unknown))[:10]}"
            )
        missing = [k for k in self.fields if k not in value and k not in self.optional]
        if missing:
            raise SchemaError(f"{path or 'state'}: expected keys {sorted(missing)}, got none")
        return {
            k: spec.check(value[k], _join(path, k), depth)
            for k, spec in self.fields.items()
            if k in value
        }


class Array(_Spec):
    """A numpy array of one of ``kinds`` (``'f'`` floats, ``'i'`` ints, ...), of ``shape`` if
    given, all finite unless ``finite=False``; returned as a copy (``dtype``: cast to it)."""

    def __init__(self, kinds: str = "f", shape=None, *, finite: bool = True, dtype=None):
        self.kinds, self.shape, self.finite, self.dtype = kinds, shape, finite, dtype
        self.expected = f"an array of kind {kinds!r}" + (f" and shape {shape}" if shape else "")

    def check(self, value, path, depth):
        arrayish = isinstance(value, (np.ndarray, np.generic)) or is_array(value)
        if not arrayish or value.dtype.kind not in self.kinds:
            self.fail(path, value)
        value = np.asarray(to_numpy(value))  # a device array is checked as its host copy
        if self.shape is not None and value.shape != tuple(self.shape):
            self.fail(path, value)
        if self.finite and value.dtype.kind in "fc" and not np.isfinite(value).all():
            self.fail(path, "an array holding NaN or Inf", self.expected + " of finite values")
        return np.array(value, dtype=self.dtype or value.dtype, copy=True)


class Check(_Spec):
    """``inner``, then ``predicate(cleaned) -> bool`` (``expected`` says what it requires)."""

    def __init__(self, inner: _Spec, predicate: Callable[[object], bool], expected: str,
                 convert: Callable | None = None):  # fmt: skip
        self.inner, self.predicate, self.expected = inner, predicate, expected
        self.convert = convert

    def check(self, value, path, depth):
        cleaned = self.inner.check(value, path, depth)
        if not self.predicate(cleaned):
            self.fail(path, value)
        return cleaned if self.convert is None else self.convert(cleaned)


def like(template, *, finite: bool = False, same_strings: bool = False) -> _Spec:
    """A schema accepting values of the same kind as ``template`` (a state as this object
    would write it): bools, ints, floats (ints too; ``finite`` refuses NaN and Inf), strings
    (``same_strings``: only the template's own, for settings such as ``mode``), None (then any
    scalar), lists of the same length, dicts with the same keys, arrays of the same shape and
    kind."""
    kw = {"finite": finite, "same_strings": same_strings}
    if template is None:
        return Nullable(OneOf(Bool(), Float(finite=finite), Str()))
    if isinstance(template, (bool, np.bool_)):
        return Bool()
    if isinstance(template, (int, np.integer)):
        return Int()
    if isinstance(template, (float, np.floating)):
        return Float(finite=finite)
    if isinstance(template, str):
        return Str(choices=[template]) if same_strings else Str()
    if is_array(template):
        return Array(template.dtype.kind, template.shape, finite=False, dtype=template.dtype)
    if isinstance(template, (list, tuple)):  # the same length, each item of its own kind
        items = Tuple(*(like(t, **kw) for t in template))
        if isinstance(template, tuple):
            return items
        return Check(items, lambda v: True, items.expected, convert=list)
    if isinstance(template, Mapping):
        return Record({k: like(v, **kw) for k, v in template.items()})
    return Check(Any(), lambda v: False, f"nothing (a {type(template).__name__} is not stored)")


def validate(spec: _Spec, value, who: str, path: str = ""):
    """``value`` checked against ``spec`` completely; returns the cleaned copy. Raises
    :class:`SchemaError` ``who: <where>: expected <what>, got <what>`` on the first problem."""
    try:
        return spec.check(value, path, 0)
    except SchemaError as e:
        raise SchemaError(f"{who}: {e}") from None
    except RecursionError:
        raise SchemaError(f"{who}: expected a state nested at most {MAX_DEPTH} levels") from None
