"""Graph models: any acyclic network of layers, with several inputs and outputs.

``nf.Input(shape)`` makes a symbolic node; calling any Module on symbolic nodes records a
*call* instead of computing, and returns the node(s) of its output (a tuple output gives a tuple
node that can be unpacked or indexed). ``nf.Model(inputs, outputs)`` turns the recorded calls
into a Module: ``forward`` runs them in the order they were recorded (a topological order: a
call only takes nodes made before it), ``backward`` runs each layer's own ``backward`` in exactly
the reverse order, summing the gradients of a node that feeds several calls.

Shapes propagate when the graph is built: every call runs its layer once (in eval mode, under
``no_grad``) on small example batches of zeros, so a layer that refuses its input says so at the
line that built the node. Free axes (``None`` in ``Input``'s shape) are tried at two sizes, and
an output axis that follows them is shown as ``None``.

A module called at several places (a shared encoder) keeps one saved entry per call (Core v2),
so its parameters receive the sum of the gradients of every call.

Example:
    >>> import numpy as np, nnframe as nf
    >>> a, b = nf.Input((4,), name="a"), nf.Input((3,), name="b")
    >>> h = nf.Concatenate()(nf.Dense(4, 5, rng=0)(a), b)
    >>> model = nf.Model([a, b], nf.Dense(8, 2, rng=1)(h, name="out"))
    >>> model(np.ones((6, 4), np.float32), np.ones((6, 3), np.float32)).shape
    (6, 2)
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Mapping

import numpy as np

from nnframe.core.backend import is_array
from nnframe.core.errors import ShapeError, fmt_shape
from nnframe.core.hooks import no_grad
from nnframe.core.module import SYMBOLIC, Module
from nnframe.layers.containers import reraise_with_prefix

__all__ = ["Input", "Model", "Node"]

# two example sizes of the batch axis and of the free (None) axes of an Input: an output axis
# whose size differs between the two runs follows them, and is shown as None
_BATCH = (2, 3)
_FREE = (32, 33)
_order = itertools.count()  # creation order of calls: always a topological order


class Node:
    """A symbolic array (or tuple of arrays) in a graph under construction.

    Made by :func:`Input` or by calling a Module on nodes. ``shape`` has ``None`` for the batch
    axis and for axes that depend on a free input axis; a tuple node (the output of LSTM, GRU,
    MultiheadAttention) has ``shape`` None and can be unpacked or indexed.
    """

    __slots__ = ("call", "path", "examples", "items", "shape", "dtype", "input_name")

    def __init__(self, call, path: tuple, examples: tuple, input_name: str | None = None):
        self.call = call  # the _Call that made it, None for an Input
        self.path = path  # where it sits in its call's output (() for the whole output)
        self.examples = examples  # the example values (one or two) that flowed here
        self.input_name = input_name
        first = examples[0]
        if isinstance(first, tuple):
            self.items = tuple(
                Node(call, (*path, i), tuple(e[i] for e in examples), None)
                for i in range(len(first))
            )
            self.shape = None
            self.dtype = None
        else:
            self.items = None
            self.shape = _symbolic_shape([np.shape(e) for e in examples])
            self.dtype = getattr(first, "dtype", None)

    @property
    def name(self) -> str:
        """The input's name, or ``<call name>`` (``[i]`` appended per index into a tuple)."""
        if self.call is None:
            return self.input_name
        return self.call.name + "".join(f"[{i}]" for i in self.path)

    @property
    def is_tuple(self) -> bool:
        return self.items is not None

    def __len__(self) -> int:
        if self.items is None:
            raise TypeError(
                f"Node {self.name!r}: expected a tuple node to take len(), got an array"
            )
        return len(self.items)

    def __iter__(self):
        if self.items is None:
            raise TypeError(
                f"Node {self.name!r}: expected a tuple node to unpack, got an array node of "
                f"shape {fmt_shape(self.shape)}"
            )
        return iter(self.items)

    def __getitem__(self, index: int) -> Node:
        if self.items is None:
            raise TypeError(
                f"Node {self.name!r}: expected a tuple node to index, got an array node of shape "
                f"{fmt_shape(self.shape)} (index arrays in a layer, e.g. nf.TimeStep)"
            )
        return self.items[index]

    def __array__(self, *args, **kwargs):
        raise TypeError(
            f"Node {self.name!r}: expected to be used symbolically (call layers on it, pass it "
            "to nf.Model), got a conversion to an array"
        )

    def __repr__(self) -> str:
        if self.items is not None:
            return f"<Node {self.name!r}: tuple of {len(self.items)}>"
        return f"<Node {self.name!r}: shape={fmt_shape(self.shape)}, dtype={self.dtype}>"

    def describe(self) -> str:
        """``'name' (None, 4)`` for messages."""
        if self.items is not None:
            return f"{self.name!r} (a tuple of {len(self.items)})"
        return f"{self.name!r} {fmt_shape(self.shape)}"


def _symbolic_shape(shapes: list[tuple]) -> tuple:
    """The shape with None for the batch axis and for axes that differ between the examples."""
    first = shapes[0]
    if len(first) == 0:
        return ()
    if any(len(s) != len(first) for s in shapes):
        return (None,) * len(first)
    return tuple(
        first[i] if all(s[i] == first[i] for s in shapes) else None for i in range(len(first))
    )


def Input(shape, dtype=np.float32, name: str | None = None) -> Node:  # noqa: N802 (Keras name)
    """A symbolic input of a graph model.

    Args:
        shape: the shape of one sample, without the batch axis; ``None`` for a free axis
            (a sequence length), e.g. ``(None,)`` for token ids of any length.
        dtype: the array dtype (``np.int64`` for token ids and lengths).
        name: the input's name: the key of this input when ``fit``/``predict`` get a dict.

    Returns:
        a :class:`Node` of shape ``(None, *shape)``.
    """
    if isinstance(shape, (int, np.integer)):
        shape = (int(shape),)
    if not isinstance(shape, (tuple, list)) or not all(
        s is None or (isinstance(s, (int, np.integer)) and s >= 0) for s in shape
    ):
        raise TypeError(f"Input: expected shape as a tuple of ints >= 0 or None, got {shape!r}")
    if name is not None and (not isinstance(name, str) or not name or "." in name):
        raise ValueError(f"Input: expected name as a non-empty str without '.', got {name!r}")
    dtype = np.dtype(dtype)
    shape = tuple(None if s is None else int(s) for s in shape)
    examples = tuple(
        np.zeros((n, *[f if s is None else s for s in shape]), dtype=dtype)
        for n, f in zip(_BATCH, _FREE)
    )
    node = Node(None, (), examples, name or f"input_{next(_input_ids)}")
    node.shape = (None, *shape)
    return node


_input_ids = itertools.count(1)


# ---------------------------------------------------------------------- recording calls
class _Call:
    """One call of a module on nodes: the module, the arguments (nodes left in place), the
    output node, and a name (given with ``name=``, else the module's class in snake case)."""

    __slots__ = ("module", "args", "kwargs", "output", "name", "given_name", "order")

    def __init__(self, module: Module, args: tuple, kwargs: dict, name: str | None):
        self.module, self.args, self.kwargs = module, args, kwargs
        self.given_name = name
        self.name = name or _snake(type(module).__name__)
        self.order = next(_order)
        self.output: Node | None = None

    def arg_nodes(self) -> list[Node]:
        found: list[Node] = []
        _collect((self.args, self.kwargs), found)
        return found


def _snake(name: str) -> str:
    return re.sub(r"(?<=[a-z0-9])(?=[A-Z])", "_", name).lower()


def _collect(value, found: list) -> None:
    if type(value) is Node:
        found.append(value)
    elif isinstance(value, (list, tuple)):
        for v in value:
            _collect(v, found)
    elif isinstance(value, dict):
        for v in value.values():
            _collect(v, found)


def _has_node(args: tuple, kwargs: dict) -> bool:
    for value in itertools.chain(args, kwargs.values()):
        if type(value) is Node:
            return True
        if isinstance(value, (list, tuple)) and any(type(v) is Node for v in value):
            return True
        if isinstance(value, dict) and any(type(v) is Node for v in value.values()):
            return True
    return False


def _substitute(value, k: int):
    """The arguments with each node replaced by its k-th example."""
    if type(value) is Node:
        return value.examples[k]
    if isinstance(value, tuple):
        return tuple(_substitute(v, k) for v in value)
    if isinstance(value, list):
        return [_substitute(v, k) for v in value]
    if isinstance(value, dict):
        return {key: _substitute(v, k) for key, v in value.items()}
    return value


def _record(module: Module, args: tuple, kwargs: dict):
    """Module.__call__'s symbolic branch: NotImplemented unless an argument is a node."""
    if not _has_node(args, kwargs):
        return NotImplemented
    name = kwargs.pop("name", None)
    if name is not None and (not isinstance(name, str) or not name or "." in name):
        raise ValueError(
            f"{module._who()}: expected name as a non-empty str without '.', got {name!r}"
        )
    call = _Call(module, args, kwargs, name)
    nodes = call.arg_nodes()
    runs = len(_BATCH)
    on = ", ".join(n.describe() for n in nodes)
    modes = [(m, m.training) for m in module.modules()]
    examples = []
    try:
        module.eval()
        with no_grad():
            for k in range(runs):
                out = module(*_substitute(args, k), **_substitute(kwargs, k))
                examples.append(_check_output(module, out))
    except Exception as error:
        tuples = [_tuple_of(a) for a in args]
        tuples = [t for t in tuples if t is not None]
        if tuples and isinstance(error, (TypeError, ValueError, AttributeError)):
            raise TypeError(
                f"{call.name} {module._who()}: expected array nodes, got the tuple node "
                f"{tuples[0].describe()}. Unpack it (out, h = layer(x)) or index it "
                f"(node[0])"
            ) from error
        reraise_with_prefix(error, f"{call.name} on {on}: ")
    finally:
        for m, mode in modes:
            m.training = mode
    call.output = Node(call, (), tuple(examples))
    return call.output.items if call.output.is_tuple else call.output


def _tuple_of(arg) -> Node | None:
    """The tuple node that ``arg`` is (a tuple node, or the tuple a call on nodes returned)."""
    if type(arg) is Node:
        return arg if arg.is_tuple else None
    if type(arg) is tuple and arg and type(arg[0]) is Node and arg[0].call is not None:
        parent = arg[0].call.output
        for i in arg[0].path[:-1]:
            parent = parent.items[i]
        if parent.items is arg:
            return parent
    return None


def _check_output(module: Module, out):
    if isinstance(out, tuple):
        return tuple(_check_output(module, o) for o in out)
    if not hasattr(out, "shape"):
        raise TypeError(
            f"{module._who()}: expected forward to return an array or a tuple of arrays in a "
            f"graph, got {type(out).__name__}"
        )
    return out


SYMBOLIC.record = _record


# ---------------------------------------------------------------------- the model
class Model(Module):
    """A Module made of the calls recorded between ``inputs`` and ``outputs``.

    Args:
        inputs: an :func:`Input` node, a list of them, or a dict ``{name: node}``.
        outputs: a node, a list of nodes, or a dict ``{name: node}`` (the names key the outputs
            in ``fit`` and in history, e.g. ``val_price_loss``).
        name: the model's name (shown by summary; a prefix of nothing).

    ``forward`` takes one array per input (positionally, as one list, or as one dict keyed by
    input name) and returns an array (one output), a tuple (a list of outputs) or a dict (a dict
    of outputs). ``backward`` takes the output gradients in the same structure (None for an output
    that gets no gradient) and returns the input gradient, a tuple of them (several inputs), or
    a dict (forward was given a dict); None for integer and data inputs.

    Layers are named after their class in snake case, numbered when the name repeats
    (``dense``, ``dense_1``), or as given with ``layer(x, name="out")``; parameters are named
    ``<layer>.<param>`` (``dense_1.weight``).

    Shape:
        inputs: ``(N, *shape)`` of each Input.    outputs: those of the output nodes.
    """

    def __init__(self, inputs, outputs, name: str | None = None):
        super().__init__()
        self.name = name
        in_nodes, self._in_kind, in_names = _normalize("inputs", inputs)
        out_nodes, self._out_kind, out_names = _normalize("outputs", outputs)
        for node in in_nodes:
            if node.call is not None:
                raise TypeError(
                    f"Model: expected inputs to be nf.Input nodes, got the node {node.describe()} "
                    "(an output of a layer)"
                )
        self.input_names = [n.input_name for n in in_nodes] if in_names is None else in_names
        if len(set(self.input_names)) != len(self.input_names):
            raise ValueError(f"Model: expected distinct input names, got {self.input_names}")
        if len({id(n) for n in in_nodes}) != len(in_nodes):
            raise ValueError("Model: expected each input node once, got one twice")
        self._inputs = in_nodes
        self._outputs = out_nodes
        calls = _reachable(out_nodes, in_nodes)
        self._graph_calls = calls
        self._name_layers(calls)
        self.output_names = out_names if out_names is not None else self._output_names()
        if len(set(self.output_names)) != len(self.output_names):
            raise ValueError(f"Model: expected distinct output names, got {self.output_names}")
        self._compile()

    # ------------------------------------------------------------------ construction
    def _name_layers(self, calls: list[_Call]) -> None:
        """Unique layer names: the given ones, then class names numbered in call order."""
        names: dict[int, str] = {}
        taken: dict[str, Module] = {}
        for call in calls:
            if call.given_name is not None:
                other = taken.get(call.given_name)
                if other is not None and other is not call.module:
                    raise ValueError(
                        f"Model: expected distinct layer names, got {call.given_name!r} for "
                        f"{other._who()} and {call.module._who()}"
                    )
                if id(call.module) not in names:
                    names[id(call.module)] = call.given_name
                    taken[call.given_name] = call.module
        counts: dict[str, int] = {}
        for call in calls:
            if id(call.module) in names:
                continue
            base = _snake(type(call.module).__name__)
            while True:
                k = counts.get(base, 0)
                counts[base] = k + 1
                candidate = base if k == 0 else f"{base}_{k}"
                if candidate not in taken:
                    break
            names[id(call.module)] = candidate
            taken[candidate] = call.module
        self._layers: dict[str, Module] = {}
        for call in calls:
            lname = names[id(call.module)]
            self._layers.setdefault(lname, call.module)
        uses: dict[int, int] = {}
        for call in calls:
            uses[id(call.module)] = uses.get(id(call.module), 0) + 1
        seen: dict[int, int] = {}
        self._call_names = []
        for call in calls:
            lname = names[id(call.module)]
            k = seen.get(id(call.module), 0)
            seen[id(call.module)] = k + 1
            self._call_names.append(lname if uses[id(call.module)] == 1 else f"{lname}#{k}")

    def _output_names(self) -> list[str]:
        """The output nodes' names (a layer's name, ``_i`` per tuple index), made distinct by
        a numeric suffix when a node repeats or a shared layer gives several outputs."""
        names: list[str] = []
        for node in self._outputs:
            if node.call is None:
                name = node.input_name
            else:
                i = self._graph_calls.index(node.call)
                name = self._call_names[i].split("#")[0] + "".join(f"_{j}" for j in node.path)
            base, k = name, 1
            while name in names:
                name, k = f"{base}_{k}", k + 1
            names.append(name)
        return names

    def _compile(self) -> None:
        """Slots for every node that carries a value, and a plan per call."""
        slots: dict[int, int] = {}

        def slot(node: Node) -> int:
            if id(node) not in slots:
                slots[id(node)] = len(slots)
            return slots[id(node)]

        self._in_slots = [slot(n) for n in self._inputs]
        # per input: its rank and the (axis, size) pairs a batch must match (the fast check)
        self._in_checks = [
            (
                len(n.shape),
                None if None in n.shape[1:] else tuple(n.shape[1:]),  # no free axis: compare
                tuple((i, d) for i, d in enumerate(n.shape) if d is not None),
            )
            for n in self._inputs
        ]
        used_sub: dict[int, list] = {}  # call index -> [(slot, path)] of sub-nodes in use
        call_index = {id(c): i for i, c in enumerate(self._graph_calls)}

        def use(node: Node) -> int:
            s = slot(node)
            if node.call is not None and node.path:
                entries = used_sub.setdefault(call_index[id(node.call)], [])
                if all(e[0] != s for e in entries):
                    entries.append((s, node.path))
            return s

        self._arg_specs = []
        for call in self._graph_calls:
            self._arg_specs.append(
                (_spec(call.args, use), _spec(call.kwargs, use), slot(call.output))
            )
        self._out_slots = [use(n) for n in self._outputs]
        self._unpack = [tuple(used_sub.get(i, ())) for i in range(len(self._graph_calls))]
        self._n_slots = len(slots)
        # modules (or modules inside them) used by several calls must always run backward
        count: dict[int, int] = {}
        for call in self._graph_calls:
            for m in call.module.modules():
                count[id(m)] = count.get(id(m), 0) + 1
        self._shared = [
            any(count[id(m)] > 1 for m in call.module.modules()) for call in self._graph_calls
        ]
        in_ids = {id(n) for n in self._inputs}
        plan = []
        for i, call in enumerate(self._graph_calls):
            args, kwargs, out_slot = self._arg_specs[i]
            fast = (
                not kwargs
                and len(args) == 1
                and type(args[0]) is _Slot
                and not call.output.is_tuple
                and not self._unpack[i]
            )
            nodes = call.arg_nodes()
            data_only = all(id(n) in in_ids for n in nodes)
            plan.append((call.module, args, kwargs, out_slot, fast, data_only))
        self._plan = plan
        self._back_steps = tuple(  # what backward runs, in reverse call order
            (i, module, args, out_slot, fast, data_only)
            for i, (module, args, _, out_slot, fast, data_only) in reversed(list(enumerate(plan)))
        )
        # what forward runs per call: (index, module, the input slot on the fast path or -1,
        # arguments, keyword arguments, output slot, sub-nodes to unpack, shared)
        self._steps = tuple(
            (
                i,
                module,
                args[0].s if fast else -1,
                args,
                kwargs,
                out_slot,
                self._unpack[i],
                self._shared[i],
            )
            for i, (module, args, kwargs, out_slot, fast, _) in enumerate(plan)
        )
        self._skeletons = [_skeleton(c.output) for c in self._graph_calls]

    def named_children(self):
        yield from self._layers.items()

    def extra_repr(self) -> str:
        return "" if self.name is None else f"name={self.name!r}"

    @property
    def layers(self) -> dict[str, Module]:
        """The distinct modules of the graph, by layer name, in call order."""
        return dict(self._layers)

    @property
    def inputs(self) -> list[Node]:
        return list(self._inputs)

    @property
    def outputs(self) -> list[Node]:
        return list(self._outputs)

    def nodes(self) -> list[tuple[str, Module, list[str], Node]]:
        """``(call name, module, names of the nodes it takes, output node)`` per call, in
        topological order (what ``nf.summary`` lists)."""
        names = {id(n): n.name for n in self._inputs}
        for call, cname in zip(self._graph_calls, self._call_names):
            _name_nodes(call.output, cname, names)
        return [
            (cname, call.module, [names.get(id(n), n.name) for n in call.arg_nodes()], call.output)
            for call, cname in zip(self._graph_calls, self._call_names)
        ]

    def example_inputs(self, batch_size: int = 1, free: int = 8) -> list[np.ndarray]:
        """A zero batch per input (free axes of size ``free``): what ``nf.summary`` runs."""
        return [
            np.zeros((batch_size, *[free if d is None else d for d in n.shape[1:]]), n.dtype)
            for n in self._inputs
        ]

    # ------------------------------------------------------------------ forward
    def _parse_inputs(self, args: tuple) -> tuple[list, bool]:
        if len(args) == len(self._in_checks):  # the common case: one array per input, fitting
            for x, (ndim, tail, fixed) in zip(args, self._in_checks):
                if type(x) is not np.ndarray or x.ndim != ndim:
                    break
                if tail is not None:
                    if x.shape[1:] != tail:
                        break
                elif any(x.shape[i] != d for i, d in fixed):
                    break
            else:
                return list(args), False
        n = len(self._inputs)
        as_dict = False
        if len(args) == 1 and isinstance(args[0], Mapping):
            given = args[0]
            unknown = [k for k in given if k not in self.input_names]
            missing = [k for k in self.input_names if k not in given]
            if unknown or missing:
                raise KeyError(
                    f"{self._who()}: expected inputs keyed by {self.input_names}, got {list(given)}"
                )
            args = tuple(given[k] for k in self.input_names)
            as_dict = True
        elif len(args) == 1 and n > 1 and isinstance(args[0], (list, tuple)):
            args = tuple(args[0])
        if len(args) != n:
            raise TypeError(
                f"{self._who()}: expected {n} input(s) {self.input_names}, got {len(args)}"
            )
        for x, node, name in zip(args, self._inputs, self.input_names):
            shape = getattr(x, "shape", None)
            if (
                shape is None
                or len(shape) != len(node.shape)
                or any(d is not None and d != s for d, s in zip(node.shape, shape))
            ):
                got = fmt_shape(shape) if shape is not None else type(x).__name__
                want = fmt_shape(("N", *node.shape[1:]))
                raise ShapeError(
                    f"{self._who()}: expected input {name!r} of shape {want}, got {got}"
                )
        return list(args), as_dict

    def _who(self) -> str:
        return f"Model({self.name!r})" if self.name else "Model"

    def forward(self, *args):
        xs, as_dict = self._parse_inputs(args)
        vals = [None] * self._n_slots
        for s, x in zip(self._in_slots, xs):
            vals[s] = x
        in_shapes = [None] * len(self._plan)
        out_info = {}
        i = -1
        try:
            for i, module, in_slot, args_, kwargs, out_slot, unpack, shared in self._steps:
                if in_slot >= 0:  # one array in, one array out: the chain's fast path
                    x = vals[in_slot]
                    in_shapes[i] = getattr(x, "shape", None)
                    vals[out_slot] = out = module(x)
                    if shared:
                        out_info[i] = _zeros_spec(out)
                    continue
                out = module(*_fill(args_, vals), **_fill(kwargs, vals))
                vals[out_slot] = out
                for s, path in unpack:
                    vals[s] = _get(out, path)
                if shared:
                    out_info[i] = _zeros_spec(out)
        except Exception as error:
            reraise_with_prefix(error, f"{self._who()}[{self._call_names[i]!r}] ")
        outs = [vals[s] for s in self._out_slots]
        dtypes = [getattr(x, "dtype", None) for x in xs]
        self.save_for_backward(in_shapes, out_info, as_dict, dtypes, [_shape_of(o) for o in outs])
        if self._out_kind == "single":
            return outs[0]
        if self._out_kind == "dict":
            return dict(zip(self.output_names, outs))
        return tuple(outs)

    # ------------------------------------------------------------------ backward
    def backward(self, grad_output):
        in_shapes, out_info, as_dict, in_dtypes, out_shapes = self.saved
        grads = [None] * self._n_slots
        parsed = self._parse_grads(grad_output)
        for s, g, shape, name in zip(self._out_slots, parsed, out_shapes, self.output_names):
            if g is not None:
                if shape is not None and getattr(g, "shape", None) != shape:
                    got = fmt_shape(g.shape) if hasattr(g, "shape") else type(g).__name__
                    raise ShapeError(
                        f"{self._who()}.backward: expected the gradient of output {name!r} of "
                        f"its shape {fmt_shape(shape)}, got {got}"
                    )
                grads[s] = _add(grads[s], g)
        names, needs = self._call_names, self.needs_input_grad
        for i, module, args_, out_slot, fast, data_only in self._back_steps:
            if fast:
                g = grads[out_slot]
            else:
                g = self._output_grad(i, grads)
            if g is None or (type(g) is tuple and _all_none(g)):
                if i not in out_info and module._call.calls <= 1:
                    continue  # nothing reaches this call and its module is not shared
                g = _zeros_like(out_info[i]) if i in out_info else g
            try:
                if data_only and not needs:
                    own = module.needs_input_grad
                    module.needs_input_grad = False
                    try:
                        gin = module.backward(g)
                    finally:
                        module.needs_input_grad = own
                else:
                    gin = module.backward(g)
            except Exception as error:
                reraise_with_prefix(error, f"{self._who()}[{names[i]!r}] ")
            if fast:
                if gin is not None:
                    shape = in_shapes[i]
                    if getattr(gin, "shape", None) != shape:
                        got = fmt_shape(gin.shape) if hasattr(gin, "shape") else type(gin).__name__
                        raise ShapeError(
                            f"{self._who()}[{names[i]!r}] {module._who()}: expected backward to "
                            f"return a gradient of the input's shape {fmt_shape(shape)}, got {got}"
                        )
                    s = args_[0].s
                    prev = grads[s]  # a node feeding several calls sums their gradients
                    grads[s] = gin if prev is None else prev + gin
            else:
                self._scatter(i, args_, gin, grads)
        result = []
        for s, dtype in zip(self._in_slots, in_dtypes):
            g = grads[s]
            if not needs or dtype is None or np.dtype(dtype).kind not in "fc":
                g = None
            result.append(g)
        if as_dict:
            return dict(zip(self.input_names, result))
        return result[0] if self._in_kind == "single" else tuple(result)

    def _parse_grads(self, grad_output) -> list:
        n = len(self._outputs)
        if self._out_kind == "single":
            return [grad_output]
        if isinstance(grad_output, Mapping):
            unknown = [k for k in grad_output if k not in self.output_names]
            if unknown:
                raise KeyError(
                    f"{self._who()}.backward: expected gradients keyed by {self.output_names}, "
                    f"got {list(grad_output)}"
                )
            return [grad_output.get(k) for k in self.output_names]
        if not isinstance(grad_output, (tuple, list)) or len(grad_output) != n:
            got = (
                f"{len(grad_output)} gradients"
                if isinstance(grad_output, (tuple, list))
                else type(grad_output).__name__
            )
            raise TypeError(
                f"{self._who()}.backward: expected {n} output gradients {self.output_names} "
                f"(a tuple, list or dict; None for no gradient), got {got}"
            )
        return list(grad_output)

    def _output_grad(self, i: int, grads: list):
        g = grads[self._plan[i][3]]
        for s, path in self._unpack[i]:
            if grads[s] is not None:
                g = _add_at(g, self._skeletons[i], path, grads[s])
        return g

    def _scatter(self, i: int, args_: tuple, gin, grads: list) -> None:
        """Adds the gradients a call's backward returned into the slots of its argument nodes."""
        if len(args_) == 1:
            pairs = [(args_[0], gin)]
        else:
            if gin is None:
                return
            if not isinstance(gin, (tuple, list)) or len(gin) != len(args_):
                raise TypeError(
                    f"{self._who()}[{self._call_names[i]!r}] {self._plan[i][0]._who()}: expected "
                    f"backward to return {len(args_)} gradients (one per input), got "
                    f"{type(gin).__name__}"
                )
            pairs = list(zip(args_, gin))
        for spec, g in pairs:
            _scatter_one(spec, g, grads)


def _shape_of(value):
    return value.shape if is_array(value) else None


def _name_nodes(node: Node, name: str, names: dict) -> None:
    names[id(node)] = name
    if node.items is not None:
        for i, item in enumerate(node.items):
            _name_nodes(item, f"{name}[{i}]", names)


# ---------------------------------------------------------------------- helpers
class _Slot:
    """Where an argument node's value lives during a forward."""

    __slots__ = ("s",)

    def __init__(self, s: int):
        self.s = s


def _spec(value, use):
    """The argument template with each node replaced by its _Slot."""
    if type(value) is Node:
        return _Slot(use(value))
    if isinstance(value, tuple):
        return tuple(_spec(v, use) for v in value)
    if isinstance(value, list):
        return [_spec(v, use) for v in value]
    if isinstance(value, dict):
        return {k: _spec(v, use) for k, v in value.items()}
    return value


def _fill(spec, vals):
    if type(spec) is _Slot:
        return vals[spec.s]
    if isinstance(spec, tuple):
        return tuple(_fill(v, vals) for v in spec)
    if isinstance(spec, list):
        return [_fill(v, vals) for v in spec]
    if isinstance(spec, dict):
        return {k: _fill(v, vals) for k, v in spec.items()}
    return spec


def _scatter_one(spec, g, grads: list) -> None:
    if g is None:
        return
    if type(spec) is _Slot:
        grads[spec.s] = _add(grads[spec.s], g)
    elif isinstance(spec, (tuple, list)) and isinstance(g, (tuple, list)):
        for s, gi in zip(spec, g):
            _scatter_one(s, gi, grads)
    elif isinstance(spec, dict) and isinstance(g, Mapping):
        for k, s in spec.items():
            _scatter_one(s, g.get(k), grads)
    elif isinstance(spec, dict) and isinstance(g, (tuple, list)):
        for s, gi in zip(spec.values(), g):
            _scatter_one(s, gi, grads)


def _get(value, path: tuple):
    for i in path:
        value = value[i]
    return value


def _add(a, b):
    """a + b for gradients: arrays (a new array: neither is modified), tuples leaf by leaf,
    None for a missing gradient."""
    if a is None:
        return b
    if b is None:
        return a
    if isinstance(a, tuple):
        return tuple(_add(x, y) for x, y in zip(a, b))
    return a + b


def _all_none(g) -> bool:
    if g is None:
        return True
    if isinstance(g, tuple):
        return all(_all_none(x) for x in g)
    return False


def _skeleton(node: Node):
    return None if node.items is None else tuple(_skeleton(n) for n in node.items)


def _empty(skeleton):
    return None if skeleton is None else tuple(_empty(s) for s in skeleton)


def _add_at(g, skeleton, path: tuple, value):
    """``g`` (a tuple gradient, None leaves allowed) with ``value`` added at ``path``."""
    if not path:
        return _add(g, value)
    if g is None:
        g = _empty(skeleton)
    items = list(g)
    items[path[0]] = _add_at(items[path[0]], skeleton[path[0]], path[1:], value)
    return tuple(items)


class _Zeros:
    """The shape and dtype of one output of a shared call: zeros stand in for no gradient."""

    __slots__ = ("shape", "dtype")

    def __init__(self, out):
        self.shape, self.dtype = out.shape, out.dtype


def _zeros_spec(out):
    if isinstance(out, tuple):
        return tuple(_zeros_spec(o) for o in out)
    return _Zeros(out)


def _zeros_like(spec):
    if isinstance(spec, tuple):
        return tuple(_zeros_like(s) for s in spec)
    return np.zeros(spec.shape, dtype=spec.dtype)


def _normalize(what: str, value):
    """(nodes, kind, names or None) from a node, a list/tuple of nodes or a dict of nodes."""
    if type(value) is Node:
        return [value], "single", None
    if isinstance(value, Mapping):
        nodes, names = list(value.values()), [str(k) for k in value]
        kind = "dict"
    elif isinstance(value, (list, tuple)):
        nodes, names, kind = list(value), None, "list"
    else:
        raise TypeError(
            f"Model: expected {what} as a node, a list of nodes or a dict of nodes, got "
            f"{type(value).__name__}"
        )
    if not nodes:
        raise ValueError(f"Model: expected at least one node in {what}, got none")
    for i, node in enumerate(nodes):
        if type(node) is not Node:
            where = names[i] if names else i
            raise TypeError(
                f"Model: expected {what}[{where!r}] to be a node (nf.Input or a layer called on "
                f"nodes), got {type(node).__name__}"
            )
    return nodes, kind, names


def _reachable(outputs: list[Node], inputs: list[Node]) -> list[_Call]:
    """Every call the outputs depend on, in topological (creation) order; errors for an
    output that needs an input not given and for an input that no output uses."""
    given = {id(n) for n in inputs}
    calls: dict[int, _Call] = {}
    used_inputs: set[int] = set()
    for out in outputs:
        stack = [out]
        while stack:
            node = stack.pop()
            if node.call is None:
                if id(node) not in given:
                    raise ValueError(
                        f"Model: expected every output to depend only on the given inputs "
                        f"{[n.name for n in inputs]}, got the output {out.describe()} that "
                        f"depends on the input {node.describe()}"
                    )
                used_inputs.add(id(node))
                continue
            if id(node.call) in calls:
                continue
            calls[id(node.call)] = node.call
            stack.extend(node.call.arg_nodes())
    for node in inputs:
        if id(node) not in used_inputs:
            raise ValueError(
                f"Model: expected every input to be used by an output, got the input "
                f"{node.describe()} that no output depends on"
            )
    return sorted(calls.values(), key=lambda c: c.order)


# ---------------------------------------------------------------------- configs
_NODE = "__node__"


def _model_get_config(model: Model) -> dict:
    """Layers (each module once, shared sub-modules by reference), inputs, the calls in
    topological order with their arguments (nodes as references), and outputs."""
    from nnframe.io import config as cfg

    refs: dict = {}
    used: set = set()
    layer_of = {id(m): name for name, m in model._layers.items()}
    layers = [
        {"name": name, "module": cfg._module_config(m, refs, used, 1)}
        for name, m in model._layers.items()
    ]
    index = {id(c): i for i, c in enumerate(model._graph_calls)}

    def enc(value):
        if type(value) is Node:
            if value.call is None:
                return {_NODE: ["input", value.input_name]}
            return {_NODE: [index[id(value.call)], *value.path]}
        if isinstance(value, tuple):
            if value and type(value[0]) is Node and _tuple_of(value) is not None:
                return enc(_tuple_of(value))
            return {"__tuple__": [enc(v) for v in value]}
        if isinstance(value, list):
            return [enc(v) for v in value]
        if isinstance(value, dict) and all(isinstance(k, str) for k in value):
            return {k: enc(v) for k, v in value.items()}
        return cfg._encode(value, refs, used, 2)

    calls = [
        {"layer": layer_of[id(c.module)], "args": enc(list(c.args)), "kwargs": enc(c.kwargs)}
        for c in model._graph_calls
    ]
    cfg._drop_unused_refs(layers, used)
    inputs = [
        {"name": n.input_name, "shape": list(n.shape[1:]), "dtype": np.dtype(n.dtype).name}
        for n in model._inputs
    ]
    outputs = [enc(n) for n in model._outputs]
    return {
        "class": "Model",
        "config": {
            "name": model.name,
            "inputs": inputs,
            "input_kind": model._in_kind,
            "input_names": model.input_names,
            "layers": layers,
            "calls": calls,
            "outputs": outputs,
            "output_kind": model._out_kind,
            "output_names": model.output_names,
        },
    }


def _model_from_config(config: Mapping) -> Model:
    """Rebuilds a Model, checking every part of the config first (ModelFormatError)."""
    from nnframe.core.errors import ModelFormatError
    from nnframe.io import config as cfg

    def bad(what: str) -> ModelFormatError:
        return ModelFormatError(f"from_config: Model: {what}")

    c = config.get("config")
    keys = {
        "name", "inputs", "input_kind", "input_names", "layers", "calls", "outputs",
        "output_kind", "output_names",
    }  # fmt: skip
    if not isinstance(c, Mapping) or set(c) != keys:
        got = sorted(map(str, c)) if isinstance(c, Mapping) else type(c).__name__
        raise bad(f"expected the keys {sorted(keys)}, got {got}")
    kinds = ("single", "list", "dict")
    if c["input_kind"] not in kinds or c["output_kind"] not in kinds:
        raise bad(f"expected input_kind and output_kind in {kinds}")
    if c["name"] is not None and not isinstance(c["name"], str):
        raise bad("expected name to be a str or null")
    for what in ("inputs", "layers", "calls", "outputs", "input_names", "output_names"):
        if not isinstance(c[what], list):
            raise bad(f"expected {what} to be a list, got {type(c[what]).__name__}")
    names = cfg.layer_registry()
    built: dict = {}
    layers: dict[str, Module] = {}
    for i, entry in enumerate(c["layers"]):
        if not (isinstance(entry, Mapping) and set(entry) == {"name", "module"}):
            raise bad(f"layers[{i}]: expected {{'name', 'module'}}")
        name = entry["name"]
        if not isinstance(name, str) or not name or "." in name or name in layers:
            raise bad(f"layers[{i}]: expected a new name without '.', got {name!r}")
        layers[name] = cfg._build(entry["module"], names, built, 1)
    inputs: dict[str, Node] = {}
    for i, entry in enumerate(c["inputs"]):
        ok = (
            isinstance(entry, Mapping)
            and set(entry) == {"name", "shape", "dtype"}
            and isinstance(entry["name"], str)
            and entry["name"]
            and entry["name"] not in inputs
            and isinstance(entry["shape"], list)
            and all(s is None or (type(s) is int and s >= 0) for s in entry["shape"])
            and entry["dtype"] in cfg._DTYPE_NAMES
        )
        if not ok:
            raise bad(f"inputs[{i}]: expected {{'name', 'shape', 'dtype'}}, got {entry!r:.80}")
        inputs[entry["name"]] = Input(tuple(entry["shape"]), entry["dtype"], entry["name"])
    outputs: list[Node] = []

    def dec(value, where: str, depth: int = 0):
        if depth > 32:
            raise bad(f"{where}: nested too deeply")
        if isinstance(value, Mapping) and _NODE in value:
            ref = value[_NODE]
            if len(value) != 1 or not isinstance(ref, list) or not ref:
                raise bad(f"{where}: malformed node reference {value!r:.80}")
            if ref[0] == "input":
                if len(ref) != 2 or ref[1] not in inputs:
                    raise bad(f"{where}: reference to an unknown input {ref!r:.80}")
                return inputs[ref[1]]
            j = ref[0]
            if type(j) is not int or not 0 <= j < len(outputs):
                raise bad(
                    f"{where}: expected a reference to an earlier node (0..{len(outputs) - 1}), "
                    f"got {j!r} (a cycle or a forward reference)"
                )
            node = outputs[j]
            for k in ref[1:]:
                if type(k) is not int or node.items is None or not 0 <= k < len(node.items):
                    raise bad(f"{where}: invalid index path {ref!r:.80}")
                node = node.items[k]
            return node
        if isinstance(value, list):
            return [dec(v, where, depth + 1) for v in value]
        if isinstance(value, Mapping) and set(value) == {"__tuple__"}:
            if not isinstance(value["__tuple__"], list):
                raise bad(f"{where}: malformed tuple")
            return tuple(dec(v, where, depth + 1) for v in value["__tuple__"])
        if isinstance(value, Mapping) and not any(str(k).startswith("__") for k in value):
            return {k: dec(v, where, depth + 1) for k, v in value.items()}
        return cfg._decode(value, names, built, 1, where)

    for i, entry in enumerate(c["calls"]):
        where = f"calls[{i}]"
        if not (isinstance(entry, Mapping) and set(entry) == {"layer", "args", "kwargs"}):
            raise bad(f"{where}: expected {{'layer', 'args', 'kwargs'}}")
        module = layers.get(entry["layer"]) if isinstance(entry["layer"], str) else None
        if module is None:
            raise bad(f"{where}: expected a layer among {list(layers)}, got {entry['layer']!r:.40}")
        args, kwargs = dec(entry["args"], where), dec(entry["kwargs"], where)
        if not isinstance(args, list) or not isinstance(kwargs, dict) or "name" in kwargs:
            raise bad(f"{where}: expected args as a list and kwargs as an object")
        if not _has_node(tuple(args), kwargs):
            raise bad(f"{where}: expected a call on nodes, got no node argument")
        try:
            out = module(*args, name=entry["layer"], **kwargs)
        except Exception as e:
            raise bad(f"{where} ({entry['layer']!r}): the layer refused its inputs: {e}") from None
        outputs.append(out[0].call.output if isinstance(out, tuple) else out)
    outs = [dec(v, "outputs") for v in c["outputs"]]
    if not all(type(o) is Node for o in outs) or not outs:
        raise bad("expected outputs to be node references")
    in_list = list(inputs.values())
    ins = {
        "single": in_list[0] if len(in_list) == 1 else in_list,
        "list": in_list,
        "dict": dict(zip(c["input_names"], in_list)),
    }[c["input_kind"]]
    outputs_arg = {
        "single": outs[0],
        "list": outs,
        "dict": dict(zip(c["output_names"], outs)),
    }[c["output_kind"]]
    if c["output_kind"] == "dict" and len(c["output_names"]) != len(outs):
        raise bad("expected one output name per output")
    try:
        model = Model(ins, outputs_arg, name=c["name"])
    except (TypeError, ValueError) as e:
        raise bad(str(e)) from None
    if list(model.layers) != list(layers):
        raise bad(f"expected every layer to be called, got layers {list(layers)}")
    return model


def _get_config(self) -> dict:
    return _model_get_config(self)


def _from_config(cls, config: Mapping) -> Model:
    return _model_from_config(config)


Model.get_config = _get_config  # type: ignore[method-assign]
Model.from_config = classmethod(_from_config)  # type: ignore[method-assign,assignment]
