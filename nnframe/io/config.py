"""Architecture configs: a model as JSON, rebuilt through a registry of layer classes.

Every Module records the arguments of its outermost constructor call (see
``Module.__init_subclass__``), so ``get_config`` needs no code in the layers: a layer's config is
its class name and the arguments it was built with. Arguments that only shape the initial random
weights (``rng``, a callable ``init``) are left out: the weights come from the file anyway.
Child modules given as arguments (``Sequential(*layers)``, ``Residual(block)``) become nested
configs; a module used twice is stored once and referenced.

Loading looks class names up in a registry: nnframe's public layers, plus the classes users
register with :func:`register_layer`. Nothing named in a config is ever imported, evaluated or
unpickled; an unknown name is a :class:`~nnframe.core.errors.ModelFormatError` saying how to register
it.

Example:
    >>> import nnframe as nf
    >>> model = nf.Sequential(nf.Dense(3, 4, rng=0), nf.ReLU())
    >>> config = nf.get_config(model)
    >>> config["class"], config["config"]["layers"][0]
    ('Sequential', {'__module__': {'class': 'Dense', 'config': {'in_features': 3, 'out_features': 4}}})
    >>> nf.from_config(config)
    Sequential(
      (0): Dense(in_features=3, out_features=4, bias=True)
      (1): ReLU()
    )
"""

from __future__ import annotations

import functools
import inspect
import math
from collections.abc import Mapping

import numpy as np

from nnframe.core.errors import ModelFormatError
from nnframe.core.module import CONFIG_IO, Module
from nnframe.core.random import default_rng
from nnframe.io import schema as S

_USER_LAYERS: dict[str, type] = {}
# numeric dtypes a config may name (never a structured or object dtype)
_DTYPE_NAMES = {
    "bool",
    "int8",
    "int16",
    "int32",
    "int64",
    "uint8",
    "uint16",
    "uint32",
    "uint64",
    "float16",
    "float32",
    "float64",
}
_MAX_DEPTH = 64


def register_layer(cls: type | None = None, *, name: str | None = None):
    """Registers a custom Module class so that configs naming it can be loaded.

    Use it as a decorator (``@nf.register_layer``) or call it (``nf.register_layer(MyLayer)``,
    ``nf.register_layer(MyLayer, name="my.Layer")``). A name already taken by another class is
    refused. Returns the class.
    """

    def register(cls):
        if not (isinstance(cls, type) and issubclass(cls, Module)):
            raise TypeError(f"register_layer: expected a Module subclass, got {cls!r}")
        key = name if name is not None else cls.__name__
        if not isinstance(key, str) or not key:
            raise ValueError(f"register_layer: invalid name={key!r} (must be a non-empty str)")
        taken = _builtin_layers().get(key) or _USER_LAYERS.get(key)
        redefined = taken is not None and key in _USER_LAYERS and _same_definition(taken, cls)
        if taken is not None and taken is not cls and not redefined:
            raise ValueError(
                f"register_layer: the name {key!r} is taken by {taken.__module__}."
                f"{taken.__qualname__}; pass name=... to register {cls.__qualname__}"
            )
        _USER_LAYERS[key] = cls
        return cls

    return register if cls is None else register(cls)


def _same_definition(a: type, b: type) -> bool:
    """The same class statement run again (a reloaded module, a re-run notebook cell)."""
    return (a.__module__, a.__qualname__) == (b.__module__, b.__qualname__)


def _builtin_layers() -> dict[str, type]:
    """nnframe's own layer classes: every Module subclass defined in the package whose name is
    public (walked each time, so layers added by any part of the package are found)."""
    found = {}
    stack = list(Module.__subclasses__())
    while stack:
        cls = stack.pop()
        stack.extend(cls.__subclasses__())
        if cls.__module__.split(".")[0] == "nnframe" and not cls.__name__.startswith("_"):
            found[cls.__name__] = cls
    return found


def layer_registry() -> dict[str, type]:
    """Every name a config may use: nnframe's public layers and the registered ones."""
    return {**_builtin_layers(), **_USER_LAYERS}


def _class_name(cls: type) -> str:
    for key, value in _USER_LAYERS.items():
        if value is cls:
            return key
    return cls.__name__


# ---------------------------------------------------------------------- get_config
def get_config(module: Module) -> dict:
    """The architecture of ``module`` as a JSON-ready dict ``{"class": name, "config": args}``."""
    refs: dict[int, int] = {}
    used: set[int] = set()
    config = _module_config(module, refs, used, 0)
    _drop_unused_refs(config, used)
    return config


def _module_config(module: Module, refs: dict, used: set, depth: int) -> dict:
    if depth > _MAX_DEPTH:
        raise ValueError(f"get_config: modules nested deeper than {_MAX_DEPTH}")
    if type(module).get_config is not Module.get_config:  # the class writes its own
        config = module.get_config()
        return {"class": config["class"], "config": config["config"]}
    refs[id(module)] = len(refs)
    args = _recorded_args(module)
    encoded = {}
    for name, value in args.items():
        if _initial_weights_only(name, value):
            continue
        try:
            encoded[name] = _encode(value, refs, used, depth + 1)
        except TypeError as e:
            raise TypeError(
                f"get_config: {type(module).__name__} argument {name}={value!r} cannot be "
                f"stored in a config ({e}); give the class its own get_config/from_config"
            ) from None
    return {"class": _class_name(type(module)), "config": encoded, "ref": refs[id(module)]}


def _recorded_args(module: Module) -> dict:
    # containers whose children may change after construction give their current children
    # (the class itself, not a subclass with a constructor of its own)
    current = type(module).__dict__.get("_config_args")
    if current is not None:
        return current(module)
    record = module.__dict__.get("_init_args")
    if record is None:  # a class without an __init__ of its own: no arguments
        return {}
    try:
        bound = _signature(record.init).bind(module, *record.args, **record.kwargs).arguments
    except TypeError:  # pragma: no cover - the constructor accepted these arguments
        return {}
    bound.pop(next(iter(bound)))  # self
    return dict(bound)


@functools.lru_cache(maxsize=1024)
def _signature(init) -> inspect.Signature:
    return inspect.signature(init)


def _initial_weights_only(name: str, value) -> bool:
    """Arguments that only decide the initial random weights (or where they were built): not
    part of the architecture."""
    if isinstance(value, (np.random.Generator, np.random.RandomState)) or name in ("rng", "device"):
        return True
    return (
        callable(value)
        and (name == "init" or name.endswith("_init"))
        and not isinstance(value, Module)
    )


def _encode(value, refs: dict, used: set, depth: int):
    if depth > _MAX_DEPTH:
        raise TypeError("nested too deeply")
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, (int, np.integer)) and not isinstance(value, np.bool_):
        return int(value)
    if isinstance(value, np.bool_):
        return bool(value)
    if isinstance(value, (float, np.floating)):
        value = float(value)
        return value if math.isfinite(value) else {"__float__": repr(value)}
    if isinstance(value, Module):
        if id(value) in refs:
            used.add(refs[id(value)])
            return {"__shared__": refs[id(value)]}
        return {"__module__": _module_config(value, refs, used, depth)}
    if isinstance(value, np.dtype) or (isinstance(value, type) and value in (float, int, bool)):
        return {"__dtype__": _dtype_name(value)}
    if isinstance(value, type) and issubclass(value, np.generic):
        return {"__dtype__": _dtype_name(value)}
    if isinstance(value, list):
        return [_encode(v, refs, used, depth + 1) for v in value]
    if isinstance(value, tuple):
        return {"__tuple__": [_encode(v, refs, used, depth + 1) for v in value]}
    if isinstance(value, np.ndarray):
        name = _dtype_name(value.dtype)
        return {
            "__array__": {"dtype": name, "shape": list(value.shape), "data": value.ravel().tolist()}
        }
    if isinstance(value, Mapping):
        items = [(k, _encode(v, refs, used, depth + 1)) for k, v in value.items()]
        if all(isinstance(k, str) and not k.startswith("__") for k, _ in items):
            return dict(items)
        return {"__dict__": [[_encode(k, refs, used, depth + 1), v] for k, v in items]}
    raise TypeError(f"a {type(value).__name__} is not a JSON value, dtype, array or Module")


def _dtype_name(value) -> str:
    name = np.dtype(value).name
    if name not in _DTYPE_NAMES:
        raise TypeError(f"dtype {name} is not a numeric dtype")
    return name


def _drop_unused_refs(node, used: set) -> None:
    if isinstance(node, dict):
        if "ref" in node and "class" in node and node["ref"] not in used:
            del node["ref"]
        for v in node.values():
            _drop_unused_refs(v, used)
    elif isinstance(node, list):
        for v in node:
            _drop_unused_refs(v, used)


# ---------------------------------------------------------------------- from_config
def from_config(config: Mapping, registry: Mapping[str, type] | None = None) -> Module:
    """Rebuilds a module from :func:`get_config`'s dict. Class names are looked up in
    nnframe's layers, the registered layers and ``registry`` (name -> class), only there."""
    names = {**layer_registry(), **(registry or {})}
    return _build(config, names, {}, 0)


# one module's node in a config (nnframe.io.schema): what get_config writes, nothing else
_NODE = S.Record(
    {"class": S.Str(max_len=200), "config": S.Any(), "ref": S.Nullable(S.Int(min=0))},
    optional=("config", "ref"),
)


def _build(config, names: Mapping[str, type], built: dict, depth: int) -> Module:
    if depth > _MAX_DEPTH:
        raise ModelFormatError(f"from_config: modules nested deeper than {_MAX_DEPTH}")
    if not isinstance(config, Mapping) or not isinstance(config.get("class"), str):
        raise ModelFormatError(
            f"from_config: expected a dict with a 'class' name and a 'config', got {_short(config)}"
        )
    name = config["class"]
    cls = names.get(name)
    if cls is None:
        raise ModelFormatError(
            f"from_config: unknown layer class {name!r}. Register it before saving and loading: "
            f"nnframe.register_layer({name.rsplit('.', 1)[-1]}) (or pass registry={{{name!r}: cls}})"
        )
    args = config.get("config", {})
    if not isinstance(args, Mapping):
        raise ModelFormatError(f"from_config: {name}: expected 'config' to be an object")
    S.validate(_NODE, config, f"from_config: {name}")  # the node's keys and their kinds
    ref = config.get("ref")
    if ref in built:
        raise ModelFormatError(f"from_config: {name}: 'ref' {ref} is used twice")
    if cls.from_config.__func__ is not Module.from_config.__func__:  # the class reads its own
        try:
            module = cls.from_config({"class": name, "config": dict(args)})
        except ModelFormatError:
            raise
        except Exception as e:  # a bad value in the file: say which layer refused it
            raise ModelFormatError(
                f"from_config: {name}: the stored config was refused: {e}"
            ) from None
    else:
        decoded = {k: _decode(v, names, built, depth + 1, f"{name}.{k}") for k, v in args.items()}
        module = _construct(cls, name, decoded)
    if ref is not None:
        if ref in built:  # a child claimed the same reference
            raise ModelFormatError(f"from_config: {name}: 'ref' {ref} is used twice")
        built[ref] = module
    return module


def _construct(cls: type, name: str, args: dict) -> Module:
    try:
        signature = inspect.signature(cls.__init__)
    except (TypeError, ValueError):
        signature = None
    positional, keywords = [], {}
    if signature is None:
        keywords = args
    else:
        params = list(signature.parameters.values())[1:]  # without self
        known = {p.name for p in params}
        var_kw = any(p.kind is p.VAR_KEYWORD for p in params)
        unknown = [k for k in args if k not in known and not var_kw]
        if unknown:
            raise ModelFormatError(f"from_config: {name}: unknown argument(s) {unknown}")
        var_positional = next((p for p in params if p.kind is p.VAR_POSITIONAL), None)
        use_positional = var_positional is not None and args.get(var_positional.name)
        for p in params:
            if p.name not in args:
                continue
            value = args[p.name]
            if p.kind is p.VAR_POSITIONAL:
                if not isinstance(value, (list, tuple)):
                    raise ModelFormatError(f"from_config: {name}: *{p.name} must be a list")
                positional.extend(value)
            elif p.kind is p.VAR_KEYWORD:
                if not isinstance(value, Mapping) or not all(isinstance(k, str) for k in value):
                    raise ModelFormatError(f"from_config: {name}: **{p.name} must be an object")
                keywords.update(value)
            elif p.kind is p.POSITIONAL_ONLY or (
                use_positional and p.kind is p.POSITIONAL_OR_KEYWORD
            ):
                positional.append(value)
            else:
                keywords[p.name] = value
    try:
        return cls(*positional, **keywords)
    except Exception as e:  # a bad value in the file: say which layer refused it
        raise ModelFormatError(
            f"from_config: {name}: the stored arguments were refused: {e}"
        ) from None


def _decode(value, names, built: dict, depth: int, where: str):
    if depth > _MAX_DEPTH:
        raise ModelFormatError(f"from_config: {where}: nested deeper than {_MAX_DEPTH}")
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, list):
        return [_decode(v, names, built, depth + 1, where) for v in value]
    if not isinstance(value, Mapping):
        raise ModelFormatError(f"from_config: {where}: unexpected value {_short(value)}")
    tags = [k for k in value if isinstance(k, str) and k.startswith("__")]
    if not tags:
        return {k: _decode(v, names, built, depth + 1, where) for k, v in value.items()}
    if len(value) != 1:
        raise ModelFormatError(f"from_config: {where}: malformed tagged value {_short(value)}")
    tag, inner = next(iter(value.items()))
    if tag == "__module__":
        return _build(inner, names, built, depth + 1)
    if tag == "__shared__":
        if not isinstance(inner, int) or inner not in built:
            raise ModelFormatError(f"from_config: {where}: reference to unknown module {inner!r}")
        return built[inner]
    if tag == "__tuple__" and isinstance(inner, list):
        return tuple(_decode(v, names, built, depth + 1, where) for v in inner)
    if tag == "__float__" and isinstance(inner, str) and inner in ("nan", "inf", "-inf"):
        return float(inner)
    if tag == "__dtype__" and isinstance(inner, str) and inner in _DTYPE_NAMES:
        return np.dtype(inner).type
    if tag == "__array__":
        return _decode_array(inner, where)
    if tag == "__dict__" and isinstance(inner, list):
        out = {}
        for item in inner:
            if not (isinstance(item, list) and len(item) == 2):
                raise ModelFormatError(f"from_config: {where}: malformed dict item {_short(item)}")
            key = _decode(item[0], names, built, depth + 1, where)
            try:
                out[key] = _decode(item[1], names, built, depth + 1, where)
            except TypeError:  # an unhashable key
                raise ModelFormatError(f"from_config: {where}: invalid dict key") from None
        return out
    raise ModelFormatError(f"from_config: {where}: unknown or malformed tag {tag!r}")


def _decode_array(inner, where: str) -> np.ndarray:
    ok = (
        isinstance(inner, Mapping)
        and isinstance(inner.get("dtype"), str)
        and inner["dtype"] in _DTYPE_NAMES
        and isinstance(inner.get("shape"), list)
        and all(type(s) is int and s >= 0 for s in inner["shape"])
        and isinstance(inner.get("data"), list)
        and all(isinstance(v, (bool, int, float)) for v in inner["data"])
    )
    if ok and math.prod(inner["shape"]) == len(inner["data"]):
        try:
            return np.array(inner["data"], dtype=inner["dtype"]).reshape(inner["shape"])
        except (ValueError, OverflowError):
            pass
    raise ModelFormatError(f"from_config: {where}: malformed array")


def _short(value) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


# ---------------------------------------------------------------------- save-time check
def check_rebuild(model: Module, config: dict, registry: Mapping[str, type] | None = None) -> None:
    """Rebuilds ``config`` and checks that it has ``model``'s parameter and buffer names and
    shapes, so that a model whose config is incomplete fails when saved, not when loaded.
    nnframe's default generator is restored afterwards: saving never changes a random stream."""
    rng = default_rng()
    state = rng.bit_generator.state
    try:
        rebuilt = from_config(config, registry=registry)
    except ModelFormatError as e:
        raise ValueError(f"save: the model's config cannot be rebuilt: {e}") from None
    finally:
        rng.bit_generator.state = state
    have = {k: v.shape for k, v in model.state_dict().items()}
    got = {k: v.shape for k, v in rebuilt.state_dict().items()}
    if have != got:
        diff = sorted(set(have.items()) ^ set(got.items()))
        raise ValueError(
            f"save: {type(model).__name__}'s config rebuilds a different architecture "
            f"(differing names/shapes: {diff[:6]}). A layer whose attributes changed after "
            "construction needs its own get_config/from_config"
        )


# Module.get_config / Module.from_config reach this module through CONFIG_IO: config depends on
# module, never the reverse.
CONFIG_IO.get_config = get_config
CONFIG_IO.from_config = from_config
