"""Containers: modules that chain or combine other modules."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from nnframe.core.backend import is_array
from nnframe.core.errors import ShapeError, fmt_shape
from nnframe.core.module import Module
from nnframe.layers.merge import broadcast_shape, merge_inputs, unbroadcast


def reraise_with_prefix(error: Exception, prefix: str) -> None:
    """Re-raises ``error`` as the same type with ``prefix`` before its message, so a failure
    deep inside a model says where it happened (``Sequential[2] Dense(...): ...``).
    Falls back to the original error when its type cannot be rebuilt from one message."""
    try:
        new = type(error)(f"{prefix}{error}")
    except Exception:  # an exception type with a different constructor: keep it as it is
        raise error from None
    raise new.with_traceback(error.__traceback__) from error


class Sequential(Module):
    """Chains modules: ``forward`` runs them in order, ``backward`` in reverse.

    Children are named by position (``"0.weight"``), as in PyTorch. An error raised by a child
    is re-raised with its position; a child whose backward returns a gradient of the wrong shape
    is caught at once.

    Args:
        *layers: the modules, in order.

    Shape:
        input: whatever the first layer takes.    output: whatever the last layer returns.

    Example:
        >>> import numpy as np, nnframe as nf
        >>> model = nf.Sequential(nf.Dense(4, 8, rng=0), nf.ReLU(), nf.Dense(8, 2, rng=1))
        >>> model(np.ones((3, 4), dtype=np.float32)).shape
        (3, 2)
    """

    def __init__(self, *layers: Module):
        super().__init__()
        for i, layer in enumerate(layers):
            _check_module(layer, i)
        self._layers: list[Module] = list(layers)

    def named_children(self) -> Iterator[tuple[str, Module]]:
        for i, layer in enumerate(self._layers):
            yield str(i), layer

    def __len__(self) -> int:
        return len(self._layers)

    def _config_args(self) -> dict:
        """Its current layers (appended ones included), for nnframe.config."""
        return {"layers": list(self._layers)}

    def __iter__(self) -> Iterator[Module]:
        return iter(self._layers)

    def __getitem__(self, index):
        if isinstance(index, slice):
            return Sequential(*self._layers[index])
        return self._layers[index]

    def append(self, layer: Module) -> Sequential:
        """Adds a layer at the end; returns self."""
        _check_module(layer, len(self._layers))
        self._layers.append(layer)
        return self

    def forward(self, x):
        shapes = []
        for i, layer in enumerate(self._layers):
            shapes.append(getattr(x, "shape", None))
            try:
                x = layer(x)
            except Exception as error:
                reraise_with_prefix(error, f"Sequential[{i}] ")
        self.save_for_backward(shapes, getattr(x, "shape", None))
        return x

    def backward(self, grad_output):
        shapes, out_shape = self.saved
        if out_shape is not None and (isinstance(grad_output, np.ndarray) or is_array(grad_output)):
            if grad_output.shape != out_shape:
                raise ShapeError(
                    f"Sequential.backward: expected grad_output of the output's shape "
                    f"{fmt_shape(out_shape)}, got {fmt_shape(grad_output.shape)}"
                )
        grad = grad_output
        for i in range(len(self._layers) - 1, -1, -1):
            layer = self._layers[i]
            try:
                if i == 0:
                    grad = _backward_with_flag(layer, grad, self.needs_input_grad)
                else:
                    grad = layer.backward(grad)
            except Exception as error:
                reraise_with_prefix(error, f"Sequential[{i}] ")
            if grad is None and i == 0:
                return None  # the input is data (sparse, or needs_input_grad is False)
            if getattr(grad, "shape", None) != shapes[i]:
                got = fmt_shape(grad.shape) if hasattr(grad, "shape") else type(grad).__name__
                raise ShapeError(
                    f"Sequential[{i}] {layer._who()}: expected backward to return a gradient of "
                    f"the input's shape {fmt_shape(shapes[i])}, got {got}"
                )
        return grad


def _backward_with_flag(layer: Module, grad, needs_input_grad: bool):
    """``layer.backward(grad)`` with the container's ``needs_input_grad`` for this call only (a
    first layer that is also used elsewhere keeps its own flag for its other calls)."""
    own = layer.needs_input_grad
    if own == needs_input_grad:
        return layer.backward(grad)
    layer.needs_input_grad = needs_input_grad
    try:
        return layer.backward(grad)
    finally:
        layer.needs_input_grad = own


def _check_module(layer, index: int) -> None:
    if not isinstance(layer, Module):
        raise TypeError(f"Sequential[{index}]: expected a Module, got {type(layer).__name__}")


# ---------------------------------------------------------------------- branch and merge containers


def _sum_gradients(grads: list) -> object:
    """Sum of the input gradients of several branches; None ones (data inputs) are left out."""
    total = None
    for g in grads:
        if g is None:
            continue
        if total is None:
            total = g.copy()
        else:
            total += g
    return total


class _Branches(Module):
    """Runs several modules on the same input; backward runs the branches in reverse order (so
    a module used in two branches consumes each call's saved state) and sums their input
    gradients."""

    def __init__(self, *branches: Module):
        super().__init__()
        for i, branch in enumerate(branches):
            if not isinstance(branch, Module):
                raise TypeError(
                    f"{type(self).__name__}[{i}]: expected a Module, got {type(branch).__name__}"
                )
        self._branches: list[Module] = list(branches)

    def named_children(self) -> Iterator[tuple[str, Module]]:
        for i, branch in enumerate(self._branches):
            yield str(i), branch

    def __len__(self) -> int:
        return len(self._branches)

    def __iter__(self) -> Iterator[Module]:
        return iter(self._branches)

    def __getitem__(self, index: int) -> Module:
        return self._branches[index]

    def _where(self, i: int) -> str:
        """How errors name branch i: ``Concat[1]``."""
        return f"{type(self).__name__}[{i}]"

    def _run_branches(self, x) -> list:
        outputs = []
        for i, branch in enumerate(self._branches):
            try:
                outputs.append(branch(x))
            except Exception as error:
                reraise_with_prefix(error, f"{self._where(i)} ")
        return outputs

    def _backward_branches(self, grads: list, shape) -> object:
        grads_in = []
        for i in range(len(self._branches) - 1, -1, -1):
            branch = self._branches[i]
            try:
                g = branch.backward(grads[i])
            except Exception as error:
                reraise_with_prefix(error, f"{self._where(i)} ")
            _check_gradient(f"{self._where(i)} {branch._who()}", g, shape)
            grads_in.append(g)
        return _sum_gradients(grads_in)


def _check_gradient(who: str, grad, shape) -> None:
    if grad is not None and getattr(grad, "shape", None) != shape:
        got = fmt_shape(grad.shape) if hasattr(grad, "shape") else type(grad).__name__
        raise ShapeError(
            f"{who}: expected backward to return a gradient of the input's shape "
            f"{fmt_shape(shape)}, got {got}"
        )


class Concat(_Branches):
    """Feeds the same input to every branch and concatenates their outputs along ``axis``
    (Keras's ``Concatenate`` of parallel branches; Inception-style blocks, wide-and-deep models).

    Backward splits the output gradient along ``axis`` and sums the branches' input gradients.

    Args:
        *branches: the modules, each applied to the same input.
        axis: the axis along which the outputs are joined (default -1, the features of (N, D)
            and (N, T, F) inputs; use 1 for the channels of (N, C, H, W) feature maps).

    Shape:
        input: whatever every branch takes.
        output: the branches' outputs joined along ``axis`` (equal along every other axis).

    Example:
        >>> import numpy as np, nnframe as nf
        >>> block = nf.Concat(nf.Dense(4, 3, rng=0), nf.Dense(4, 5, rng=1))
        >>> block(np.ones((2, 4), dtype=np.float32)).shape
        (2, 8)
    """

    def __init__(self, *branches: Module, axis: int = -1):
        super().__init__(*branches)
        if not branches:
            raise ValueError("Concat: expected at least one branch, got none")
        self.axis = int(axis)

    def extra_repr(self) -> str:
        return f"axis={self.axis}"

    def forward(self, x):
        outputs = self._run_branches(x)
        try:
            y = np.concatenate(outputs, axis=self.axis)
        except ValueError as error:  # numpy's AxisError is a ValueError too
            shapes = ", ".join(fmt_shape(o.shape) for o in outputs)
            raise ShapeError(
                f"Concat(axis={self.axis}): expected branch outputs that agree on every axis but "
                f"{self.axis}, got {shapes}"
            ) from error
        sizes = [o.shape[self.axis] for o in outputs]
        self.save_for_backward(getattr(x, "shape", None), sizes)
        return y

    def backward(self, grad_output):
        shape, sizes = self.saved
        grads = np.split(grad_output, np.cumsum(sizes)[:-1].tolist(), axis=self.axis)
        return self._backward_branches(grads, shape)


class Add(_Branches):
    """Sums: with branches, feeds the same input to every branch and sums their outputs; with
    none, ``Add()`` is the Keras-style merge that sums its several inputs (graph models).

    Backward gives every branch the whole output gradient and sums their input gradients; the
    merge returns the output gradient once per input (summed over broadcast axes), as a tuple.

    Args:
        *branches: the modules, each applied to the same input; none for the merge.

    Shape:
        input: whatever every branch takes (the merge: two or more arrays of one, or
        broadcastable, shape).    output: the common shape of the branches' outputs (the inputs).

    Example:
        >>> import numpy as np, nnframe as nf
        >>> block = nf.Add(nf.Dense(4, 3, rng=0), nf.Dense(4, 3, rng=1))
        >>> block(np.ones((2, 4), dtype=np.float32)).shape
        (2, 3)
        >>> float(nf.Add()(np.ones((2, 3)), np.ones((2, 3))).sum())
        12.0
    """

    def __init__(self, *branches: Module):
        super().__init__(*branches)

    def forward(self, *inputs):
        if not self._branches:  # the merge of several inputs
            xs = merge_inputs("Add", inputs)
            broadcast_shape("Add", xs)
            y = xs[0] + xs[1]
            for x in xs[2:]:
                y = y + x
            self.save_for_backward([x.shape for x in xs])
            return y
        if len(inputs) != 1:
            raise TypeError(
                f"Add: expected one input for its {len(self._branches)} branches, got "
                f"{len(inputs)} (Add() without branches sums several inputs)"
            )
        x = inputs[0]
        outputs = self._run_branches(x)
        shapes = [o.shape for o in outputs]
        if any(s != shapes[0] for s in shapes):
            raise ShapeError(
                "Add: expected branch outputs of one shape, got "
                + ", ".join(fmt_shape(s) for s in shapes)
            )
        y = outputs[0].copy()
        for o in outputs[1:]:
            y += o
        self.save_for_backward(getattr(x, "shape", None))
        return y

    def backward(self, grad_output):
        (shape,) = self.saved
        if not self._branches:
            return tuple(unbroadcast(grad_output, s) for s in shape)
        grads = [grad_output] * len(self._branches)
        return self._backward_branches(grads, shape)


class Residual(_Branches):
    """A skip connection: ``y = x + module(x)``, or ``y = projection(x) + module(x)`` when the
    module changes the shape (a Dense or 1x1 convolution as ``projection``).

    The skip path carries the output gradient back unchanged, so the gradient reaching the
    input is ``grad_output + module.backward(grad_output)``: however small the module's share,
    the identity share gets through. That is why deep residual networks train.

    Args:
        module: the residual branch f.
        projection: optional module applied to the skip path.

    Shape:
        input: whatever ``module`` takes.    output: module's output, of the skip path's shape.

    Example:
        >>> import numpy as np, nnframe as nf
        >>> block = nf.Residual(nf.Sequential(nf.Dense(4, 4, rng=0), nf.Tanh()))
        >>> block(np.ones((2, 4), dtype=np.float32)).shape
        (2, 4)
    """

    def __init__(self, module: Module, projection: Module | None = None):
        branches = (module,) if projection is None else (module, projection)
        super().__init__(*branches)
        self.module = module
        self.projection = projection

    def named_children(self) -> Iterator[tuple[str, Module]]:
        yield "module", self.module
        if self.projection is not None:
            yield "projection", self.projection

    def _where(self, i: int) -> str:
        return "Residual.module" if i == 0 else "Residual.projection"

    def forward(self, x):
        outputs = self._run_branches(x)
        skip = x if self.projection is None else outputs[1]
        if outputs[0].shape != np.shape(skip):
            what = "x" if self.projection is None else "projection(x)"
            raise ShapeError(
                f"Residual: expected module(x) of the shape of {what} "
                f"{fmt_shape(np.shape(skip))}, got {fmt_shape(outputs[0].shape)}"
                + ("" if self.projection else ". Pass a projection to change the shape")
            )
        y = outputs[0] + skip
        self.save_for_backward(getattr(x, "shape", None))
        return y

    def backward(self, grad_output):
        (shape,) = self.saved
        grads = [grad_output] * len(self._branches)
        grad = self._backward_branches(grads, shape)
        if self.projection is not None:
            return grad
        return grad_output.copy() if grad is None else grad + grad_output


class ModuleList(Module):
    """A list of modules, registered as children ``"0"``, ``"1"``, ... (PyTorch's ModuleList).

    It holds modules for your own ``forward``; it has no forward of its own.

    Args:
        modules: an iterable of modules.

    Example:
        >>> import nnframe as nf
        >>> blocks = nf.ModuleList(nf.Dense(4, 4, rng=i) for i in range(3))
        >>> len(blocks), [name for name, _ in blocks.named_parameters()][:2]
        (3, ['0.weight', '0.bias'])
    """

    def __init__(self, modules=None):
        super().__init__()
        self._modules: list[Module] = []
        if modules is not None:
            self.extend(modules)

    def _checked(self, module, where) -> Module:
        if not isinstance(module, Module):
            raise TypeError(f"ModuleList[{where}]: expected a Module, got {type(module).__name__}")
        return module

    def named_children(self) -> Iterator[tuple[str, Module]]:
        for i, module in enumerate(self._modules):
            yield str(i), module

    def __len__(self) -> int:
        return len(self._modules)

    def _config_args(self) -> dict:
        return {"modules": list(self._modules)}

    def __iter__(self) -> Iterator[Module]:
        return iter(self._modules)

    def __getitem__(self, index):
        if isinstance(index, slice):
            return ModuleList(self._modules[index])
        return self._modules[index]

    def __setitem__(self, index: int, module: Module) -> None:
        self._modules[index] = self._checked(module, index)

    def __delitem__(self, index) -> None:
        del self._modules[index]

    def append(self, module: Module) -> ModuleList:
        """Adds a module at the end; returns self."""
        self._modules.append(self._checked(module, len(self._modules)))
        return self

    def extend(self, modules) -> ModuleList:
        """Adds every module of an iterable at the end; returns self."""
        for module in modules:
            self.append(module)
        return self

    def insert(self, index: int, module: Module) -> None:
        self._modules.insert(index, self._checked(module, index))

    def forward(self, *args, **kwargs):
        raise RuntimeError(
            "ModuleList: expected to be iterated in a forward of your own, got a call (a "
            "ModuleList has no forward; use Sequential to chain modules)"
        )


class ModuleDict(Module):
    """An ordered dict of modules, registered as children under their keys (PyTorch's
    ModuleDict): parameters are named ``"<key>.weight"``.

    Args:
        modules: a mapping or an iterable of (key, module) pairs.

    Example:
        >>> import nnframe as nf
        >>> heads = nf.ModuleDict({"age": nf.Dense(8, 1, rng=0), "kind": nf.Dense(8, 3, rng=1)})
        >>> list(heads.keys()), heads["kind"].out_features
        (['age', 'kind'], 3)
    """

    def __init__(self, modules=None):
        super().__init__()
        self._modules: dict[str, Module] = {}
        if modules is not None:
            self.update(modules)

    def named_children(self) -> Iterator[tuple[str, Module]]:
        yield from self._modules.items()

    def __len__(self) -> int:
        return len(self._modules)

    def _config_args(self) -> dict:
        return {"modules": dict(self._modules)}

    def __iter__(self) -> Iterator[str]:
        return iter(self._modules)

    def __contains__(self, key) -> bool:
        return key in self._modules

    def __getitem__(self, key: str) -> Module:
        try:
            return self._modules[key]
        except KeyError:
            raise KeyError(
                f"ModuleDict: expected one of the keys {list(self._modules)}, got {key!r}"
            ) from None

    def __setitem__(self, key: str, module: Module) -> None:
        if not isinstance(key, str) or not key or "." in key:
            raise KeyError(f"ModuleDict: expected a non-empty str key without '.', got {key!r}")
        if not isinstance(module, Module):
            raise TypeError(f"ModuleDict[{key!r}]: expected a Module, got {type(module).__name__}")
        self._modules[key] = module

    def __delitem__(self, key: str) -> None:
        del self._modules[key]

    def keys(self):
        return self._modules.keys()

    def values(self):
        return self._modules.values()

    def items(self):
        return self._modules.items()

    def pop(self, key: str) -> Module:
        module = self[key]
        del self._modules[key]
        return module

    def update(self, modules) -> None:
        """Adds (or replaces) modules from a mapping or an iterable of (key, module) pairs."""
        pairs = modules.items() if hasattr(modules, "items") else modules
        for key, module in pairs:
            self[key] = module

    def forward(self, *args, **kwargs):
        raise RuntimeError(
            "ModuleDict: expected to be indexed in a forward of your own, got a call (a "
            "ModuleDict has no forward)"
        )
