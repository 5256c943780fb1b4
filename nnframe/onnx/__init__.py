"""ONNX export: ``nnframe.onnx.export(model, example_input, path)``.

Needs the optional extra ``pip install nnframe[onnx]`` (onnx, and onnxruntime to serve the
file); ``import nnframe`` and ``import nnframe.onnx`` never import onnx, only ``export`` does.

Every built-in layer with an ONNX equivalent has an exporter (one module per layer family:
``_basic``, ``_conv``, ``_norm``, ``_recurrent``, ``_attention``, ``_containers``). Custom layers
register theirs with :func:`register_exporter`; see docs/onnx.md.
"""

from __future__ import annotations

import copy

import numpy as np

from nnframe.core.backend import to_numpy
from nnframe.onnx import (  # noqa: F401
    _attention,
    _basic,
    _containers,
    _conv,
    _decoder,
    _graph,
    _norm,
    _pairs,
    _rearrange,
    _recurrent,
)
from nnframe.onnx._context import (
    MIN_OPSET,
    ExportContext,
    UnsupportedLayerError,
    Value,
    register_exporter,
)

__all__ = ["export", "register_exporter", "ExportContext", "Value", "UnsupportedLayerError"]


def _as_inputs(example_input) -> list[np.ndarray]:
    items = example_input if isinstance(example_input, (tuple, list)) else (example_input,)
    arrays = []
    for item in items:
        a = np.asarray(to_numpy(item))  # a device array: its host copy
        if a.dtype.kind in "biu" and a.dtype != np.bool_:
            a = a.astype(np.int64)  # indices: ONNX's Gather takes int64
        elif a.dtype.kind != "f" and a.dtype != np.bool_:
            raise TypeError(
                f"nnframe.onnx.export: expected numeric example inputs, got dtype {a.dtype}"
            )
        arrays.append(a)
    return arrays


def _flatten(outputs) -> list:
    if isinstance(outputs, dict):  # a graph model's outputs by name, in the model's order
        outputs = tuple(outputs.values())
    if isinstance(outputs, tuple):
        return [v for o in outputs for v in _flatten(o)]
    return [] if outputs is None else [outputs]


def _names(given, count: int, default: str, what: str) -> list[str]:
    if given is None:
        return [default] if count == 1 else [f"{default}{i}" for i in range(count)]
    given = [given] if isinstance(given, str) else list(given)
    if len(given) != count:
        raise ValueError(
            f"nnframe.onnx.export: expected {count} {what} name(s), got {len(given)}: {given}"
        )
    return given


def _value_info(onnx, name: str, array: np.ndarray, dynamic: tuple[bool, ...]):
    elem = onnx.helper.np_dtype_to_tensor_dtype(array.dtype)
    # True: the symbolic batch; None: unknown; False: the example's size
    dims = ["batch" if d else None if d is None else int(s) for s, d in zip(array.shape, dynamic)]
    return onnx.helper.make_tensor_value_info(name, elem, dims)


def _grown(arrays: list[np.ndarray]) -> list[np.ndarray]:
    """The inputs with one more sample (the first repeated): which output dims follow the
    batch is read from the outputs of both runs."""
    return [np.concatenate([a, a[:1]], axis=0) if a.ndim else a for a in arrays]


def export(
    model,
    example_input,
    path=None,
    *,
    opset: int = 17,
    dynamic_batch: bool = True,
    input_names=None,
    output_names=None,
):
    """Exports ``model`` (in eval mode) to ONNX and returns the ``onnx.ModelProto``.

    The model is run once on ``example_input`` (its training flags are restored afterwards),
    each layer's exporter emitting ONNX nodes as it goes; the graph is checked with
    ``onnx.checker.check_model``.

    Args:
        model: an nnframe Module (a graph model ``nf.Model``, Sequential, a container, a
            layer, or a custom module with a registered exporter).
        example_input: an array, or a tuple of arrays for a model taking several inputs (a
            graph model also takes a dict keyed by its input names). Float inputs keep their
            dtype; integer ones (token ids) become int64.
        path: where to write the ``.onnx`` file (a str or path-like), or None to only return it.
        opset: the ONNX opset to target (>= 17).
        dynamic_batch: make axis 0 of every input (and each output axis that follows it) a
            symbolic ``batch`` dimension; False fixes every size to the example's. (For a
            time-major layer, axis 0 is the time axis: the sequence length is then the free
            size and the batch is fixed.)
        input_names, output_names: graph input/output names (default ``input``/``output``, or
            ``input0``, ``input1``, ... when there are several; a graph model's own input and
            output names).

    Returns:
        The ``onnx.ModelProto``.

    Raises:
        UnsupportedLayerError: a module has no exporter (its repr is in the message), or uses a
            feature ONNX cannot express.
        ImportError: onnx is not installed.
    """
    try:
        import onnx
    except ImportError as error:  # pragma: no cover - the tests need onnx
        raise ImportError(
            "nnframe.onnx.export needs the onnx package: pip install 'nnframe[onnx]'"
        ) from error
    if not isinstance(opset, int) or opset < MIN_OPSET:
        raise ValueError(
            f"nnframe.onnx.export: invalid opset={opset!r} (must be an int >= {MIN_OPSET})"
        )
    if model._device is not None:  # a model on a GPU: a host copy is exported (the same file)
        model = copy.deepcopy(model).to("cpu")
    graph_inputs = getattr(model, "input_names", None)  # a graph model (nf.Model)
    if isinstance(example_input, dict) and graph_inputs is not None:
        example_input = [example_input[k] for k in graph_inputs]
    arrays = _as_inputs(example_input)
    if input_names is None and graph_inputs is not None and len(graph_inputs) == len(arrays):
        input_names = list(graph_inputs)
    if output_names is None and getattr(model, "output_names", None) is not None:
        output_names = list(model.output_names)
    in_names = _names(input_names, len(arrays), "input", "input")
    flags = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        ctx = ExportContext(opset)
        inputs = [Value(ctx.reserve(n), a) for n, a in zip(in_names, arrays)]
        outputs = _flatten(ctx.convert(model, *inputs))
        out_names = _names(output_names, len(outputs), "output", "output")
        for value, name in zip(outputs, out_names):
            ctx.node("Identity", [value.name], [name])
        if dynamic_batch:
            try:
                grown = _flatten(model(*_grown(arrays)))
                grown = [np.asarray(g) for g in grown if g is not None]
                out_dynamic = [
                    tuple(a != b for a, b in zip(v.shape, g.shape)) for v, g in zip(outputs, grown)
                ]
            except Exception:  # inputs whose axis 0 is not the batch (a state): sizes unknown
                out_dynamic = [(None,) * v.ndim for v in outputs]
        else:
            out_dynamic = [(False,) * v.ndim for v in outputs]
    finally:
        for m, training in flags:
            m.training = training
    graph = onnx.helper.make_graph(
        ctx.nodes,
        type(model).__name__,
        [
            _value_info(onnx, v.name, v.value, (dynamic_batch,) + (False,) * (v.ndim - 1))
            for v in inputs
        ],
        [
            _value_info(onnx, name, v.value, d)
            for v, name, d in zip(outputs, out_names, out_dynamic)
        ],
        initializer=ctx.initializers,
    )
    proto = onnx.helper.make_model(
        graph,
        producer_name="nnframe",
        opset_imports=[onnx.helper.make_opsetid("", opset)],
    )
    onnx.checker.check_model(proto)
    if path is not None:
        onnx.save(proto, path)
    return proto
