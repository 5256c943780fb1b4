"""``summary(model, input_shape)``: a table of a model's layers with their output shapes, parameter
counts (trainable and frozen), estimated FLOPs and activation memory, and the totals.

It runs one forward pass on a zero batch in eval mode, recording each layer's output; the model's
mode and saved state are restored afterwards.

Example:
    >>> import nnframe as nf
    >>> model = nf.Sequential(nf.Dense(4, 8, rng=0), nf.ReLU(), nf.Dense(8, 2, rng=1))
    >>> s = nf.summary(model, (4,))
    >>> s.total_params, s.rows[0].output_shape
    (58, ('N', 8))
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from nnframe.core.backend import is_array
from nnframe.core.device import to_device
from nnframe.core.hooks import no_grad
from nnframe.core.module import Module

__all__ = ["summary", "Summary", "LayerRow"]

_MISSING = object()


@dataclass
class LayerRow:
    """One layer of a :class:`Summary`."""

    name: str
    kind: str
    depth: int
    output_shape: tuple
    trainable: int
    frozen: int
    flops: int | None  # None: unknown (a layer defined outside nnframe)
    activation_bytes: int
    inbound: list[str] = field(default_factory=list)  # graph models: the nodes it takes


@dataclass
class Summary:
    """The result of :func:`summary`; ``str(summary)`` is the table.

    FLOPs count a multiply-add as 2 and are estimates: layers with a ``weight`` cost
    ``2 * weight.size`` per output position (Dense, convolutions, normalization), other layers
    with parameters ``2 * parameters`` per position (recurrent cells), and layers without
    parameters one operation per output element. Layers defined outside nnframe (custom layers,
    subclasses of built-in ones) have unknown FLOPs: their row shows ``?``, ``flops`` is None,
    ``total_flops`` counts the known layers only and ``unknown_flops`` names the others.
    Activation memory is the bytes of each layer's output for the given batch (what backward
    keeps alive, roughly). A layer that returns several arrays (an LSTM's output and its
    states) shows the first one's shape; its memory counts them all.
    """

    model_name: str
    batch_size: int
    input_shape: tuple
    rows: list[LayerRow]
    total_params: int
    trainable_params: int
    frozen_params: int
    total_flops: int
    activation_bytes: int
    parameter_bytes: int
    unknown_flops: list[str] = field(default_factory=list)

    def __str__(self) -> str:
        header = ("Layer (type)", "Output shape", "Params", "Frozen", "FLOPs", "Act. memory")
        body = [
            (
                "  " * row.depth + f"{row.name} ({row.kind})",
                _shape(row.output_shape),
                f"{row.trainable:,}",
                f"{row.frozen:,}",
                "?" if row.flops is None else _si(row.flops),
                _bytes(row.activation_bytes),
            )
            for row in self.rows
        ]
        if any(row.inbound for row in self.rows):  # a graph model: where each layer's input is from
            header = (*header, "Connected to")
            body = [(*b, ", ".join(r.inbound)) for b, r in zip(body, self.rows)]
        widths = [max(len(r[i]) for r in [header, *body]) for i in range(len(header))]

        def line(cells):
            first = cells[0].ljust(widths[0])
            rest = [c.rjust(w) for c, w in zip(cells[1:6], widths[1:6])]
            rest += [c.ljust(w) for c, w in zip(cells[6:], widths[6:])]
            return "  ".join([first, *rest]).rstrip()

        rule = "=" * len(line(header))
        out = [
            f"{self.model_name}: input {_shape(('N', *self.input_shape))}, batch N={self.batch_size}",
            rule,
            line(header),
            "-" * len(rule),
            *[line(r) for r in body],
            rule,
            f"Total params: {self.total_params:,} ({_bytes(self.parameter_bytes)})",
            f"Trainable params: {self.trainable_params:,}",
            f"Frozen params: {self.frozen_params:,}",
            f"Forward FLOPs (estimate, batch {self.batch_size}): {_si(self.total_flops)}"
            + _unknown_note(self.unknown_flops),
            f"Activation memory (batch {self.batch_size}): {_bytes(self.activation_bytes)}",
        ]
        return "\n".join(out)


def _unknown_note(names: list[str]) -> str:
    if not names:
        return ""
    shown = ", ".join(names[:3]) + (", ..." if len(names) > 3 else "")
    return f" + unknown for {len(names)} custom layer{'s' * (len(names) > 1)} ({shown})"


def _shape(shape) -> str:
    return "(" + ", ".join(str(s) for s in shape) + ")"


def _si(n: float) -> str:
    for unit, size in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if n >= size:
            return f"{n / size:.2f}{unit}"
    return str(int(n))


def _bytes(n: float) -> str:
    for unit, size in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if n >= size:
            return f"{n / size:.1f} {unit}"
    return f"{int(n)} B"


def _own_counts(module: Module) -> tuple[int, int]:
    trainable = frozen = 0
    for _, p in module._own_parameters():
        if p.requires_grad:
            trainable += p.size
        else:
            frozen += p.size
    return trainable, frozen


def _flops(module: Module, out: np.ndarray, x) -> int | None:
    if not type(module).__module__.startswith("nnframe."):
        return None  # a custom layer: its cost is not ours to guess
    params = dict(module._own_parameters())
    if type(module).__name__ == "Embedding":
        return 0  # a table lookup
    weight = params.get("weight")
    if weight is not None and weight.data.ndim >= 1 and out.ndim >= 1:
        positions = out.size // max(1, weight.shape[0])
        bias = out.size if params.get("bias") is not None else 0
        return 2 * weight.size * positions + bias
    if params:
        positions = out.size // max(1, out.shape[-1]) if out.ndim else 1
        return 2 * sum(p.size for p in params.values()) * positions
    size_in = getattr(x, "size", 0)
    return int(max(out.size, size_in))


def summary(
    model: Module,
    input_shape: tuple | None = None,
    *,
    input=None,
    batch_size: int = 1,
    dtype=None,
) -> Summary:
    """Describes ``model`` layer by layer.

    Args:
        model: any Module.
        input_shape: one sample's shape, without the batch axis (``(1, 8, 8)`` for 8x8
            single-channel images); a zero batch of ``batch_size`` is run.
        input: a batch to run instead (integer indices for an Embedding, say).
        batch_size: rows in the zero batch; FLOPs and memory are for this batch.
        dtype: the zero batch's dtype: by default int64 (index 0) when the first layer is an
            Embedding or EmbeddingBag, else the model's dtype.

    Returns:
        a :class:`Summary` (its ``str`` is the table; nothing is printed).
    """
    if not isinstance(model, Module):
        raise TypeError(f"summary: expected a Module, got {type(model).__name__}")
    inputs = None
    if input is None and input_shape is None and hasattr(model, "example_inputs"):
        inputs = model.example_inputs(int(batch_size))  # a graph model: one zero batch per Input
        input = inputs[0]
    elif input is None:
        if input_shape is None:
            raise TypeError("summary: expected input_shape or input, got neither")
        shape = (int(batch_size), *tuple(int(s) for s in input_shape))
        input = np.zeros(shape, dtype=dtype or _input_dtype(model))
    else:
        input = input if is_array(input) else np.asarray(input)
        batch_size = input.shape[0]
    if model._device is not None:  # a model on a GPU: its zero batch goes there too
        input, inputs = to_device((input, inputs), model._device)
    records: list[list] = []
    depth = {id(model): -1}
    names = {}
    for name, m in model.named_modules():
        names[id(m)] = name
        for child in m.children():
            depth.setdefault(id(child), depth.get(id(m), -1) + 1)

    originals = []

    def wrap(module: Module):
        forward = module.forward

        def recorded(*args, **kwargs):
            entry = [module, None, args[0] if args else None]
            records.append(entry)
            out = forward(*args, **kwargs)
            entry[1] = out
            return out

        return recorded

    modules = [m for m in model.modules() if m is not model] or [model]
    for m in modules:
        originals.append((m, vars(m).get("forward", _MISSING)))
        m.forward = wrap(m)
    was_training = model.training
    model.eval()
    try:
        with no_grad():  # what the model saved for a pending backward stays as it is
            model(*(inputs or [input]))
    finally:
        for m, own in originals:
            if own is _MISSING:
                del m.forward
            else:
                m.forward = own
        model.train(was_training)

    rows = []
    for module, out, x in records:
        is_leaf = not module.children()
        trainable, frozen = _own_counts(module)
        if not is_leaf and not (trainable or frozen):
            arrays = _arrays(out)
            shape = _out_shape(arrays[0]) if arrays else ()
            rows.append(
                LayerRow(names.get(id(module), "?"), type(module).__name__, depth.get(id(module), 0),
                         shape, 0, 0, 0, 0)
            )  # fmt: skip
            continue
        arrays = _arrays(out)  # (output, (h, c)) of an LSTM: the first is the output proper
        arr = arrays[0] if arrays else np.asarray(0.0)
        rows.append(
            LayerRow(
                name=names.get(id(module), "?"),
                kind=type(module).__name__,
                depth=max(0, depth.get(id(module), 0)),
                output_shape=_out_shape(arr) if arrays else (),
                trainable=trainable,
                frozen=frozen,
                flops=_flops(module, arr, x),
                activation_bytes=sum(int(a.nbytes) for a in arrays),
            )
        )
    if hasattr(model, "nodes"):  # a graph model: rows named by call, with their inbound nodes
        calls = {}
        for cname, module, inbound, _ in model.nodes():
            calls.setdefault(id(module), []).append((cname, inbound))
        for row, (module, _, _) in zip(rows, records):
            if row.depth == 0 and calls.get(id(module)):
                row.name, row.inbound = calls[id(module)].pop(0)
    params = model.parameters()
    trainable = sum(p.size for p in params if p.requires_grad)
    return Summary(
        model_name=type(model).__name__,
        batch_size=int(batch_size),
        input_shape=tuple(input.shape[1:]),
        rows=rows,
        total_params=sum(p.size for p in params),
        trainable_params=trainable,
        frozen_params=sum(p.size for p in params) - trainable,
        total_flops=sum(r.flops for r in rows if r.flops is not None),
        activation_bytes=sum(r.activation_bytes for r in rows),
        parameter_bytes=sum(p.data.nbytes for p in params),
        unknown_flops=[f"{r.name} ({r.kind})" for r in rows if r.flops is None],
    )


def _input_dtype(model: Module):
    """int64 when the first layer (the first leaf in definition order) takes indices."""
    from nnframe.layers.embedding import Embedding, EmbeddingBag

    first = next((m for m in model.modules() if not m.children()), model)
    return np.int64 if isinstance(first, (Embedding, EmbeddingBag)) else model.dtype


def _arrays(out) -> list[np.ndarray]:
    """Every array (of any array module) in a (possibly nested) output, depth first."""
    if is_array(out):
        return [out]
    if isinstance(out, (tuple, list)):
        return [a for o in out for a in _arrays(o)]
    return []


def _out_shape(out) -> tuple:
    if is_array(out):
        return ("N", *out.shape[1:]) if out.ndim else ()
    if isinstance(out, (tuple, list)):
        return tuple(_out_shape(o) for o in out)
    return ()
