"""Optimizer base: parameter groups, lazily created per-parameter state, clipping, state_dict.

Every algorithm lives in its own file as two parts: a small pure function that performs one
in-place update of one parameter from its gradient and state (``sgd_update``, ``adam_update``,
...; tested on its own against the published equations), and a thin :class:`Optimizer` subclass
that validates hyperparameters, creates the state and calls the function.

The update functions are element-wise and take an optional ``work`` pair of scratch arrays of
the parameter's shape and dtype. The base class calls them through :meth:`Optimizer.apply_update`,
on blocks of ``CHUNK`` elements with two block-sized scratch arrays it keeps, so that a step
allocates no new arrays and each block's passes run in the CPU cache.
"""

from __future__ import annotations

import copy
import functools
import inspect
import math
from collections.abc import Callable, Iterable

import numpy as np

from nnframe.core.backend import array_module, is_array, to_numpy
from nnframe.core.errors import check_hyper
from nnframe.core.parameter import Parameter
from nnframe.io import schema as S
from nnframe.optim.clip import clip_grad_norm_, clip_grad_value_, total_norm


class NonFiniteUpdateError(FloatingPointError):
    """An optimizer step would have written NaN or Inf into a parameter or its state; the step
    was undone, so parameters and optimizer state are exactly as before it."""


def effective_grad(
    param: np.ndarray,
    grad: np.ndarray,
    weight_decay: float,
    maximize: bool,
    out: np.ndarray,
) -> np.ndarray:
    """The gradient an update uses: ``g = -grad if maximize else grad; g += weight_decay * param``.

    Returns ``grad`` itself when neither applies (no copy), else ``out`` holding ``g``.
    """
    if weight_decay:
        np.multiply(param, weight_decay, out=out)
        # -grad + wd * param == wd * param - grad, exactly
        return np.subtract(out, grad, out=out) if maximize else np.add(out, grad, out=out)
    if maximize:
        return np.negative(grad, out=out)
    return grad


def scratch(param: np.ndarray, work: tuple | None) -> tuple[np.ndarray, np.ndarray]:
    """The two scratch arrays an update function writes into: ``work`` or new ones."""
    if work is None:
        return np.empty_like(param), np.empty_like(param)
    return work


def zeros_state(p: Parameter, *names: str) -> dict[str, np.ndarray]:
    """``{name: zeros shaped like p.data}`` for each name: the zeroed moments of a new state."""
    return {name: np.zeros_like(p.data) for name in names}


@functools.cache
def _keyword_options(fn: Callable) -> tuple[str, ...]:
    """The keyword-only parameters of an update function, less ``work``."""
    return tuple(
        name
        for name, q in inspect.signature(fn).parameters.items()
        if q.kind is inspect.Parameter.KEYWORD_ONLY and name != "work"
    )


def lerp_(avg: np.ndarray, x: np.ndarray, weight: float, tmp: np.ndarray) -> None:
    """``avg += weight * (x - avg)`` in place (PyTorch's ``lerp_``): a running average with
    ``avg = (1 - weight) * avg + weight * x``."""
    np.subtract(x, avg, out=tmp)
    tmp *= weight
    avg += tmp


def square_avg_(avg: np.ndarray, x: np.ndarray, decay: float, tmp: np.ndarray) -> None:
    """``avg = decay * avg + (1 - decay) * x**2`` in place (a running average of squares)."""
    avg *= decay
    np.multiply(x, x, out=tmp)
    tmp *= 1.0 - decay
    avg += tmp


#: optimizer class -> whether its steps can be block-guarded (see ``_blocks_guardable``)
_GUARDABLE: dict[type, bool] = {}


class Optimizer:
    """Base class of optimizers.

    A subclass passes its hyperparameters as ``defaults`` (checked by ``validate``, which it
    extends) and writes ``init_state(p, group)`` (the per-parameter state, created at the first
    step; ``zeros_state`` makes zeroed moments) and ``update(p, state, group)`` (one in-place
    update of ``p.data`` from ``p.grad``; ``update_with`` calls a pure update function with the
    group's options).

    Args:
        params: an iterable of Parameters, or of dicts ``{"params": [...], "lr": ...}`` (parameter
            groups, each overriding any default).
        defaults: the default value of every option.
        clip_norm: if set, ``step`` first clips the global gradient 2-norm to this value
            (as :func:`nnframe.clip_grad_norm_`); the pre-clip norm is kept in ``last_grad_norm``.
        clip_value: if set, ``step`` first clamps every gradient element to ``[-v, v]``.

    Frozen parameters (``requires_grad=False``) are skipped by ``step`` (no state, no update).
    """

    # elements per block of an element-wise update (see apply_update): 6 float32 arrays of
    # 32768 elements (p, grad, two states, two scratch) take 768 KiB, within a core's L2 cache
    CHUNK = 32768

    #: True when ``update`` is element-wise with state that depends only on the step count
    #: (every built-in optimizer). Such an optimizer may update a group of small parameters as
    #: one flat vector (see ``_FusedGroup``); a subclass with per-tensor math leaves it False.
    elementwise: bool = False
    # fuse a group when its parameters average at most this many elements: below it, the
    # Python cost of one update call per parameter outweighs copying them into one vector
    FUSE_MEAN_SIZE = 16384

    def __init__(
        self,
        params: Iterable,
        defaults: dict,
        *,
        clip_norm: float | None = None,
        clip_value: float | None = None,
    ):
        name = type(self).__name__
        if isinstance(params, Parameter) or is_array(params):
            raise TypeError(
                f"{name}: expected an iterable of Parameters, got a single {type(params).__name__}"
            )
        params = list(params)
        if not params:
            raise ValueError(f"{name}: expected a non-empty list of parameters, got an empty one")
        if clip_norm is not None:
            check_hyper(name, "clip_norm", clip_norm, clip_norm > 0, "must be > 0")
        if clip_value is not None:
            check_hyper(name, "clip_value", clip_value, clip_value > 0, "must be > 0")
        self.defaults = dict(defaults)
        self.clip_norm = clip_norm
        self.clip_value = clip_value
        self.param_groups: list[dict] = []
        self.state: dict[Parameter, dict] = {}
        self.last_grad_norm: float | None = None
        self._workspace: dict = {}
        self._fused: dict[int, _FusedGroup] = {}
        self._validated: dict[int, tuple] = {}  # per group: the options last validated
        self._backups: dict[int, np.ndarray] = {}  # see step: what it puts back on NaN/Inf
        is_group = [isinstance(p, dict) for p in params]
        if any(is_group) and not all(is_group):
            raise TypeError(
                f"{name}: expected all Parameters or all parameter-group dicts, got a mix"
            )
        groups = params if is_group[0] else [{"params": params}]
        for group in groups:
            self.add_param_group(group)

    def add_param_group(self, group: dict) -> None:
        """Adds a group of parameters with its own options (the others from ``defaults``)."""
        name = type(self).__name__
        if "params" not in group:
            raise ValueError(
                f"{name}: expected a parameter group with a 'params' key, got {sorted(group)}"
            )
        params = group["params"]
        params = [params] if isinstance(params, Parameter) else list(params)
        for p in params:
            if not isinstance(p, Parameter):
                raise TypeError(f"{name}: expected Parameters, got {type(p).__name__}")
        if len({id(p) for p in params}) != len(params):
            raise ValueError(f"{name}: a parameter appears more than once in a parameter group")
        seen = {id(p) for g in self.param_groups for p in g["params"]}
        if any(id(p) in seen for p in params):
            raise ValueError(f"{name}: a parameter appears in more than one parameter group")
        unknown = set(group) - set(self.defaults) - {"params"}
        if unknown:
            raise ValueError(
                f"{name}: expected options among {sorted(self.defaults)}, got unknown "
                f"{sorted(unknown)} in a parameter group"
            )
        full = {**self.defaults, **group, "params": params}
        self.validate(full)
        self.param_groups.append(full)
        self._workspace.clear()  # resized for the new largest parameter at the next step

    # ------------------------------------------------------------------ validation helpers
    def validate(self, group: dict) -> None:
        """Checks one group's hyperparameters (``betas`` too, when the group has them);
        subclasses extend it (call super)."""
        self.check_nonnegative(group, "lr", "weight_decay")
        # eps divides: 0 would make 0 / 0 on a parameter whose gradient is always zero
        self.check_positive(group, "eps")
        if "betas" in group:
            self.check_betas(group)

    def check_nonnegative(self, group: dict, *names: str) -> None:
        for key in names:
            if key in group:
                v = group[key]
                finite = _is_real(v) and math.isfinite(v)
                rule = "must be >= 0" if finite else "must be finite and >= 0"
                check_hyper(type(self).__name__, key, v, finite and v >= 0, rule)

    def check_positive(self, group: dict, *names: str) -> None:
        for key in names:
            if key in group:
                v = group[key]
                finite = _is_real(v) and math.isfinite(v)
                rule = "must be > 0" if finite else "must be finite and > 0"
                check_hyper(type(self).__name__, key, v, finite and v > 0, rule)

    def check_betas(self, group: dict) -> None:
        betas = group["betas"]
        ok = (
            isinstance(betas, (tuple, list))
            and len(betas) == 2
            and all(_is_real(b) and 0 <= b < 1 for b in betas)
        )
        check_hyper(type(self).__name__, "betas", betas, ok, "expected two values in [0, 1)")

    def check_unit(self, group: dict, key: str, closed: bool = True) -> None:
        v = group[key]
        ok = _is_real(v) and 0 <= v and (v <= 1 if closed else v < 1)
        check_hyper(
            type(self).__name__, key, v, ok, "must be in [0, 1]" if closed else "must be in [0, 1)"
        )

    # ------------------------------------------------------------------ stepping
    def parameters(self) -> list[Parameter]:
        return [p for g in self.param_groups for p in g["params"]]

    def zero_grad(self) -> None:
        """Resets the gradient of every parameter this optimizer updates."""
        for group in self.param_groups:
            for p in group["params"]:
                p.grad.fill(0)

    def clip_gradients(self) -> float | None:
        """Applies ``clip_value`` and then ``clip_norm`` if set; returns the pre-clip norm."""
        params = self.parameters()
        if self.clip_value is not None:
            clip_grad_value_(params, self.clip_value)
        if self.clip_norm is not None:
            self.last_grad_norm = clip_grad_norm_(params, self.clip_norm)
            return self.last_grad_norm
        return None

    def step(self, closure: Callable[[], float] | None = None) -> float | None:
        """Clips (if asked), then updates every trainable parameter in place.

        A step is all or nothing: every group's options are checked first (a rate set through
        ``param_groups`` or a scheduler included), and when the update would leave a NaN or Inf
        in a parameter or in the optimizer state, everything is put back as it was and
        :class:`NonFiniteUpdateError` is raised (lower the rate, raise ``eps``, clip).

        Args:
            closure: optional function that recomputes the loss (and the gradients); it is
                called first and its value is returned, as in PyTorch.
        """
        loss = closure() if closure is not None else None
        for i, group in enumerate(self.param_groups):  # options may have changed since added
            options = tuple(group.items())  # (the params list compares by identity: fast)
            try:
                same = self._validated.get(i) == options  # (a NaN never equals: checked again)
            except ValueError:  # an array-valued option: compare by checking again
                same = False
            if not same:
                self.validate(group)
                self._validated[i] = options
        if self.clip_value is not None or self.clip_norm is not None:
            self.clip_gradients()
        if self._blocks_guardable():
            fused = self._step_fused_guarded()
            if fused:
                return loss
            if (
                fused is None and self._finite_by_bound()
            ):  # no NaN/Inf can come out: nothing to back up or check
                self._step()
                return loss
            if self._step_block_guarded():
                return loss
        # the general path (and the rerun of a step the block guard undid, to name the array)
        undo = self._snapshot()
        try:
            with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
                self._step()  # an overflow is not warned about: the step is undone below
            where = self._first_non_finite()
        except BaseException:
            self._restore(undo)
            raise
        if where is not None:
            self._restore(undo)
            raise NonFiniteUpdateError(
                f"{type(self).__name__}.step: expected finite values after the update, got "
                f"NaN/Inf in {where} (nothing was written). Lower the learning rate, raise eps, "
                "or clip gradients"
            )
        self._reserve()
        return loss

    def _reserve(self) -> None:
        """Backup buffers for state arrays the step created, so the next step allocates none."""
        for _, a in self._guarded():
            b = self._backups.get(id(a))
            if b is None or b.shape != a.shape or b.dtype != a.dtype:
                self._backups[id(a)] = np.empty_like(a)

    def _step(self) -> None:
        state = self.state
        for i, group in enumerate(self.param_groups):
            fused = self._fused_group(i, group)
            if fused is not None:
                fused.step(self, group)
                continue
            for p in group["params"]:
                if not p.requires_grad:
                    continue
                s = state.get(p)
                if s is None:
                    s = state[p] = self.init_state(p, group)
                else:
                    _follow(p, s)
                self.update(p, s, group)

    # ------------------------------------------------------------------ the finite guarantee
    _guard: _BlockGuard | None = None  # set during a block-guarded step (see apply_update)

    def _blocks_guardable(self) -> bool:
        """True when every write of a step goes through ``apply_update`` via ``update_with``
        (the built-in optimizers' ``update``): each block can then be backed up and checked
        while it is in cache, instead of copying and re-reading every array around the step."""
        cls = type(self)
        known = _GUARDABLE.get(cls)
        if known is None:
            known = _GUARDABLE[cls] = (
                getattr(cls.update, "__module__", "").startswith("nnframe.optim")
                and cls.apply_update is Optimizer.apply_update
                and cls.update_with is Optimizer.update_with
                and cls._step is Optimizer._step
            )
        return known

    def _step_fused_guarded(self) -> bool | None:
        """The step when every group is a fused flat vector (small parameters): each flat
        vector and its state is updated, then checked once, and only then written back, so a
        non-finite update writes nothing (one pass over a few small arrays instead of a backup
        of every parameter). None when a group is not fused; False when something came out
        NaN/Inf: the state is put back and ``step`` reruns on its general path, which names the
        array and raises."""
        groups = []
        for i, group in enumerate(self.param_groups):
            fused = self._fused_group(i, group)
            if fused is None:
                return None
            groups.append((fused, group))
        backups = []
        with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
            for fused, group in groups:
                backups.append(fused.backup())
                fused.update(self, group)
                if not fused.finite():
                    for undone, backup in zip([f for f, _ in groups], backups):
                        undone.restore(backup)
                    return False
        for fused, _ in groups:
            fused.write_back(self)
        return True

    def _finite_by_bound(self) -> bool:
        """True when this step provably writes only finite values (every input finite and the
        largest value the update can reach far below the dtype's maximum); then ``step`` needs
        no backup and no check. The base class cannot tell: False. An optimizer overrides it
        where a bound is cheap (SGD)."""
        return False

    def _step_block_guarded(self) -> bool:
        """The step, each block of every written array backed up before its update and checked
        for NaN/Inf after it (see ``apply_update``). True when it is done; False when something
        was not finite: everything is then put back as it was, and ``step`` reruns the step on
        its general path, which names the array and raises. Same result, fewer passes over
        memory: the general path copies every array, updates it, then reads it again."""
        states = {p: dict(s) for p, s in self.state.items()}
        guard = self._guard = _BlockGuard(self._backups)
        try:
            with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
                self._step()
            ok = all(
                not isinstance(v, float) or math.isfinite(v)
                for s in self.state.values()
                for v in s.values()
            )
        except _NonFiniteBlock:  # raised at once: nothing past the block is written
            ok = False
        except BaseException:
            guard.restore()
            self._restore(([], states))
            raise
        finally:
            self._guard = None
        if not ok:
            guard.restore()
            self._restore(([], states))
        return ok

    def _guarded(self) -> list[tuple[str, np.ndarray]]:
        """Every array a step writes: the trainable parameters and the state arrays."""
        arrays = {}
        for i, p in enumerate(self.parameters()):
            if p.requires_grad:
                arrays.setdefault(id(p.data), (f"parameter {i}", p.data))
        index = {id(p): i for i, p in enumerate(self.parameters())}
        for p, s in self.state.items():
            for k, v in s.items():
                if isinstance(v, np.ndarray) or is_array(v):
                    arrays.setdefault(id(v), (f"state[{index.get(id(p))}][{k!r}]", v))
        return list(arrays.values())

    def _snapshot(self):
        """Copies of what a step may change, in buffers kept from step to step."""
        backups = self._backups
        saved = []
        for _, a in self._guarded():
            b = backups.get(id(a))
            if b is None or b.shape != a.shape or b.dtype != a.dtype:
                b = backups[id(a)] = np.empty_like(a)
            np.copyto(b, a)
            saved.append((a, b))
        if len(backups) > 2 * len(saved) + 8:  # arrays gone since: drop their buffers
            live = {id(a) for a, _ in saved}
            for key in [k for k in backups if k not in live]:
                del backups[key]
        states = {p: dict(s) for p, s in self.state.items()}
        return saved, states

    def _restore(self, undo) -> None:
        saved, states = undo
        for a, b in saved:
            np.copyto(a, b)
        self.state = {p: dict(s) for p, s in states.items()}
        self._fused.clear()  # rebuilt from the restored per-parameter state

    def _first_non_finite(self) -> str | None:
        for name, a in self._guarded():
            if a.dtype.kind == "f" and not _all_finite(a):
                return name
        for s in self.state.values():
            for k, v in s.items():
                if isinstance(v, float) and not math.isfinite(v):
                    return f"state {k!r}"
        return None

    def _fused_group(self, i: int, group: dict) -> _FusedGroup | None:
        """The flat view of group ``i`` when it can be updated as one vector, else None."""
        if not self.elementwise:
            return None
        fused = self._fused.get(i)
        if fused is not None and fused.valid(group["params"]):
            return fused
        fused = _FusedGroup.build(self, group)
        if fused is None:
            self._fused.pop(i, None)
        else:
            self._fused[i] = fused
        return fused

    def apply_update(self, fn: Callable, *arrays: np.ndarray | None, **hyper):
        """Calls the element-wise update ``fn(*arrays, work=..., **hyper)`` on blocks of
        ``CHUNK`` elements at a time and returns what its last call returned.

        Each block's dozen passes (running averages, square root, division, update) then stay
        in the CPU cache instead of streaming whole arrays through memory a dozen times, and
        the scratch buffers are block-sized. Arrays of different layouts (rare) are updated
        whole, with scratch arrays allocated for them.
        """
        first = arrays[0]
        n = first.size
        guard = self._guard
        # what a block-guarded step backs up and checks: the parameter and the state arrays
        # (update_with passes the gradient, which is only read, second)
        written = None if guard is None else [a for a in (first, *arrays[2:]) if a is not None]
        xp = array_module(first)
        if n <= self.CHUNK or xp is not np:  # (blocks are for a CPU's caches; a GPU takes all)
            w0, w1 = self._block(n, first.dtype, xp)
            if first.ndim != 1:
                w0, w1 = w0.reshape(first.shape), w1.reshape(first.shape)
            if guard is None:
                return fn(*arrays, work=(w0, w1), **hyper)
            guard.save(written)
            out = fn(*arrays, work=(w0, w1), **hyper)
            guard.check(written)
            return out
        present = [a for a in arrays if a is not None]
        strides = first.strides
        if not all(
            a.strides == strides and (a.flags.c_contiguous or a.flags.f_contiguous) for a in present
        ):
            if guard is None:
                return fn(*arrays, work=None, **hyper)
            guard.save(written)
            out = fn(*arrays, work=None, **hyper)
            guard.check(written)
            return out
        flat = [None if a is None else a.ravel(order="K") for a in arrays]
        w0, w1 = self._block(self.CHUNK, first.dtype)
        if guard is not None:
            written = guard.entries(written, [f for f in (flat[0], *flat[2:]) if f is not None])
        out = None
        for i in range(0, n, self.CHUNK):
            j = min(i + self.CHUNK, n)
            k = j - i
            if guard is not None:
                guard.save_block(written, i, j)
            out = fn(*[None if a is None else a[i:j] for a in flat], work=(w0[:k], w1[:k]), **hyper)
            if guard is not None:
                guard.check_block(written, i, j)
        return out

    def update_with(self, fn: Callable, p: Parameter, group: dict, *states, **given):
        """``apply_update(fn, p.data, p.grad, *states, **options)``, where ``options`` are
        ``given`` plus each of ``fn``'s keyword-only options found in ``group`` (``betas``
        split into ``beta1`` and ``beta2``); returns what ``fn`` returned."""
        names = _keyword_options(fn)
        options = {k: group[k] for k in names if k in group}
        if "beta1" in names:
            options["beta1"], options["beta2"] = group["betas"]
        return self.apply_update(fn, p.data, p.grad, *states, **options, **given)

    def _block(self, n: int, dtype, xp=np) -> tuple[np.ndarray, np.ndarray]:
        """Two flat scratch arrays of ``n`` elements of ``dtype`` (grown once to the largest n:
        at most CHUNK on the CPU)."""
        key = ("block", np.dtype(dtype)) if xp is np else ("block", np.dtype(dtype), xp)
        buf = self._workspace.get(key)
        if buf is None or buf.shape[1] < n:
            buf = self._workspace[key] = xp.empty((2, n), dtype=dtype)
        return buf[0, :n], buf[1, :n]

    def work(self, p: Parameter) -> tuple[np.ndarray, np.ndarray]:
        """Two scratch arrays of ``p``'s shape and dtype: views into a buffer shared by every
        parameter (updates run one at a time), so a step allocates nothing new."""
        data = p.data
        key = data.dtype if type(data) is np.ndarray else (data.dtype, array_module(data))
        buf = self._workspace.get(key)
        if buf is None or buf.shape[1] < data.size:
            largest = max(
                [q.data.size for q in self.parameters() if q.data.dtype == data.dtype] + [data.size]
            )
            buf = self._workspace[key] = array_module(data).empty((2, largest), dtype=data.dtype)
        n = data.size
        return buf[0, :n].reshape(data.shape), buf[1, :n].reshape(data.shape)

    def init_state(self, p: Parameter, group: dict) -> dict:
        return {}

    def update(self, p: Parameter, state: dict, group: dict) -> None:
        raise NotImplementedError(f"{type(self).__name__}.update is not implemented")

    # ------------------------------------------------------------------ state
    def state_dict(self) -> dict:
        """Options per group (parameters as indices) and per-parameter state, as copies."""
        index = {id(p): i for i, p in enumerate(self.parameters())}
        groups = [
            {
                **{k: copy.deepcopy(v) for k, v in g.items() if k != "params"},
                "params": [index[id(p)] for p in g["params"]],
            }
            for g in self.param_groups
        ]
        state = {index[id(p)]: copy.deepcopy(s) for p, s in self.state.items() if id(p) in index}
        return {"state": state, "param_groups": groups}

    #: state entries an update may create after the first step (besides init_state's)
    lazy_state: tuple = ()

    def check_state_dict(self, state_dict) -> tuple:
        """Validates a state saved by ``state_dict`` against this optimizer (nothing applied):
        the same number of groups and parameters, only this optimizer's options with valid
        values, state for existing parameters with this optimizer's entries, shapes and finite
        values. Raises :class:`nnframe.io.schema.SchemaError`; returns what
        :meth:`apply_state_dict` applies."""
        name = type(self).__name__
        who = f"{name}.load_state_dict"
        top = S.Record({"state": S.DictOf(S.Any(), S.Any()), "param_groups": S.ListOf(S.Any())})
        state_dict = S.validate(top, state_dict, who)
        groups = state_dict["param_groups"]
        sizes = [len(g["params"]) for g in self.param_groups]
        got = [len(g["params"]) if isinstance(g, dict) and isinstance(g.get("params"), list)
               else None for g in groups]  # fmt: skip
        if got != sizes:
            raise S.SchemaError(
                f"{who}: expected {len(sizes)} group(s) of sizes {sizes}, got {len(got)} of "
                f"sizes {got}"
            )
        options = []
        for i, (g, own) in enumerate(zip(groups, self.param_groups)):
            spec = {k: _option_spec(v) for k, v in own.items() if k != "params"}
            spec["params"] = S.ListOf(S.Int(min=0))
            checked = S.validate(S.Record(spec, optional=spec), g, who, f"param_groups[{i}]")
            checked.pop("params", None)
            try:
                self.validate({**own, **checked})
            except (ValueError, TypeError) as e:
                raise S.SchemaError(f"{who}: param_groups[{i}]: {e}") from None
            options.append(checked)
        params = self.parameters()
        problems = [  # every mis-shaped moment, reported together
            f"state[{k}][{n!r}] of shape {v.shape} for a parameter of shape "
            f"{params[_index(k)].data.shape}"
            for k, s in state_dict["state"].items()
            if type(_index(k)) is int and 0 <= _index(k) < len(params) and isinstance(s, dict)
            for n, v in s.items()
            if is_array(v) and v.ndim and v.shape != params[_index(k)].data.shape
        ]
        if problems:
            raise S.SchemaError(
                f"{who}: expected state matching the parameters, got " + "; ".join(problems)
            )
        new_state: dict[Parameter, dict] = {}
        for key, s in state_dict["state"].items():
            i = S.validate(S.Int(min=0, max=len(params) - 1), _index(key), who, "state key")
            p = params[i]
            group = next(g for g in self.param_groups if any(q is p for q in g["params"]))
            template = self.init_state(p, {**group, **options[self.param_groups.index(group)]})
            names = set(template) | set(self.lazy_state) | set(self.state.get(p, {}))
            # an entry an update creates later (a momentum buffer) must be an array
            spec = {
                k: _state_spec(template[k], p) if k in template else S.Array("f", p.data.shape)
                for k in names
            }
            optional = names - set(template)  # what init_state makes, a step needs
            entry = S.validate(S.Record(spec, optional=optional), s, who, f"state[{i}]")
            new_state[p] = {
                k: _state_array(v, p.data) if is_array(v) else v for k, v in entry.items()
            }
        return options, new_state

    def apply_state_dict(self, checked: tuple) -> None:
        """Applies what :meth:`check_state_dict` returned (cannot fail)."""
        options, new_state = checked
        for own, opts in zip(self.param_groups, options):
            own.update(opts)
        self.state = new_state
        self._fused.clear()  # rebuilt from the loaded per-parameter state at the next step

    def load_state_dict(self, state_dict: dict) -> None:
        """Restores options and per-parameter state saved by ``state_dict``: validated
        completely first (see :meth:`check_state_dict`), then applied; a bad state changes
        nothing. Arrays are copied and cast to each parameter's dtype."""
        self.apply_state_dict(self.check_state_dict(state_dict))

    def __repr__(self) -> str:
        lines = [f"{type(self).__name__} ("]
        for i, g in enumerate(self.param_groups):
            lines.append(f"Parameter Group {i}")
            for k in sorted(g):
                if k != "params":
                    lines.append(f"    {k}: {g[k]}")
        return "\n".join(lines) + "\n)"


def check_lrs(who: str, lrs, negative: bool = False) -> list[float]:
    """``lrs`` as a list, or a ValueError naming ``who`` unless every rate is finite and >= 0
    (a scheduler or a callback never writes a NaN or infinite rate). ``negative`` lets a
    finite negative rate through (PyTorch's OneCycleLR sequences can dip below 0; the
    optimizer's step refuses it)."""
    lrs = list(lrs)
    for lr in lrs:
        if not (_is_real(lr) and math.isfinite(lr) and (negative or lr >= 0)):
            rule = "finite learning rates" if negative else "finite learning rates >= 0"
            raise ValueError(f"{who}: expected {rule}, got {lr!r}")
    return lrs


def _index(key):
    """A state key as saved (an int) or as JSON writes it (a decimal string of ASCII digits:
    ``int`` refuses other digits, such as '¹')."""
    if isinstance(key, str) and key.isascii() and key.isdigit() and len(key) < 10:
        return int(key)
    return key


def _option_spec(current):
    """What a stored group option may hold, from the option's current value."""
    if isinstance(current, (bool, np.bool_)):
        return S.Bool()
    if isinstance(current, (int, float, np.integer, np.floating)):
        return S.Float()  # finite; the optimizer's validate checks the range
    if isinstance(current, (tuple, list)):
        return S.ListOf(S.Float(), min_len=len(current), max_len=len(current), as_tuple=True)
    return S.like(current, finite=True)


def _state_spec(template, p: Parameter):
    """What a stored state entry may hold, from the entry ``init_state`` creates."""
    if isinstance(template, (bool, np.bool_)):
        return S.Bool()
    if isinstance(template, (int, np.integer)):
        return S.Int(min=0)
    if isinstance(template, (float, np.floating)):
        return S.Float()
    array = S.Array("f", p.data.shape)
    return array if is_array(template) else S.Nullable(array)


class _NonFiniteBlock(Exception):
    """A block-guarded step wrote a NaN or Inf (caught in ``Optimizer.step``)."""


class _BlockGuard:
    """Backups of what a step writes, taken block by block just before each block's update
    (so the block is read into cache once, for both), and the NaN/Inf check of each updated
    block while it is still in cache, which raises _NonFiniteBlock to stop the step there.
    ``restore`` puts back every element saved so far."""

    def __init__(self, backups: dict):
        self.backups = backups  # id(array) -> buffer like it, kept from step to step
        self.saved: dict[int, list] = {}  # id(array) -> [array, its buffer, elements saved]

    def _entry(self, a: np.ndarray) -> list:
        entry = self.saved.get(id(a))
        if entry is None:
            b = self.backups.get(id(a))
            if b is None or b.shape != a.shape or b.dtype != a.dtype or b.strides != a.strides:
                b = self.backups[id(a)] = np.empty_like(a)
            entry = self.saved[id(a)] = [a, b, 0]
        return entry

    def save(self, arrays) -> None:
        """Backs up whole arrays (once per step: a second update keeps the first backup)."""
        for a in arrays:
            entry = self._entry(a)
            if entry[2] == 0:
                np.copyto(entry[1], a)
                entry[2] = a.size

    def check(self, arrays) -> None:
        for a in arrays:
            if a.dtype.kind == "f" and not _block_finite(a):
                raise _NonFiniteBlock

    def entries(self, arrays, flats) -> list:
        """(entry, flat view of the array, flat view of its backup) for contiguous arrays."""
        out = []
        for a, f in zip(arrays, flats):
            entry = self._entry(a)
            out.append((entry, f, entry[1].ravel(order="K")))
        return out

    def save_block(self, entries, i: int, j: int) -> None:
        for entry, f, b in entries:
            if entry[2] == i:  # the elements before i are saved, these not yet
                np.copyto(b[i:j], f[i:j])
                entry[2] = j

    def check_block(self, entries, i: int, j: int) -> None:
        for _, f, _ in entries:
            if f.dtype.kind == "f" and not _block_finite(f[i:j]):
                raise _NonFiniteBlock

    def restore(self) -> None:
        for a, b, stop in self.saved.values():
            if stop == a.size:
                np.copyto(a, b)
            elif stop:  # saved block by block: a and b are contiguous alike
                np.copyto(a.ravel(order="K")[:stop], b.ravel(order="K")[:stop])


def _block_finite(a: np.ndarray) -> bool:
    """True when ``a`` holds no NaN or Inf. One NaN or Inf makes the dot product a . a NaN or
    Inf, so a finite one answers at once (BLAS: one fast pass, no allocation); one that is not
    finite (or overflowed on huge values) is checked element by element."""
    if a.flags.c_contiguous or a.flags.f_contiguous:
        v = a.ravel(order="K")
        if math.isfinite(float(np.dot(v, v))):
            return True
    return bool(np.isfinite(a).all())


def _all_finite(a: np.ndarray) -> bool:
    """True when ``a`` holds no NaN or Inf: one NaN or Inf makes the sum NaN or Inf, so a
    finite sum answers at once (no allocation); a sum that is not finite (or overflowed) is
    checked element by element."""
    total = a.sum()
    return bool(np.isfinite(total)) or bool(np.isfinite(a).all())


def _is_real(v) -> bool:
    return (
        isinstance(v, (int, float, np.integer, np.floating))
        and not isinstance(v, bool)
        and not math.isnan(v)
    )


class _FusedGroup:
    """A group of small parameters updated as one flat vector by an element-wise optimizer.

    A step gathers the parameters and their gradients into two flat arrays, runs the
    optimizer's ``update`` once on a stand-in Parameter made of them, and writes the parameters
    back: a few copies instead of one Python-level update (a dozen numpy calls) per parameter.
    The parameters' own arrays are never replaced, so references to ``p.data`` stay valid. The
    optimizer state lives in flat arrays; ``optimizer.state[p]`` holds views into them (and the
    step count), so ``state_dict`` and anything reading the state see the same values.
    """

    def __init__(self, params, param: Parameter, state: dict, slices):
        self.params = list(params)
        self.param, self.state, self.slices = param, state, slices
        self.datas = [p.data for p in params]  # a replaced p.data (to(dtype)) means: rebuild
        # each parameter's piece of the flat vector, shaped like the parameter
        self.pieces = [param.data[sl].reshape(p.data.shape) for sl, p in zip(slices, params)]

    @classmethod
    def build(cls, opt: Optimizer, group: dict) -> _FusedGroup | None:
        params = group["params"]
        if len(params) < 2 or not all(p.requires_grad for p in params):
            return None
        dtype = params[0].data.dtype
        if any(p.data.dtype != dtype for p in params):
            return None
        total = sum(p.data.size for p in params)
        xp = array_module(params[0].data)
        if total > opt.FUSE_MEAN_SIZE * len(params) and xp is np:
            return None  # (on a GPU always: a dozen launches per step instead of per parameter)
        slices, offset = [], 0
        for p in params:
            slices.append(slice(offset, offset + p.data.size))
            offset += p.data.size
        flat = Parameter(xp.empty(total, dtype=dtype))
        states = [opt.state.get(p) for p in params]
        if all(s is None for s in states):
            state = opt.init_state(flat, group)
        elif any(s is None for s in states) or any(s.keys() != states[0].keys() for s in states):
            return None
        else:  # continue from per-parameter state (loaded, or from unfused steps)
            for p, s in zip(params, states):
                _follow(p, s)
            state = {}
            for key, first in states[0].items():
                if (isinstance(first, np.ndarray) or is_array(first)) and first.dtype == dtype:
                    if any(s[key].shape != p.data.shape for s, p in zip(states, params)):
                        return None
                    state[key] = np.concatenate([s[key].reshape(-1) for s in states])
                elif all(_same(s[key], first) for s in states):
                    state[key] = copy.deepcopy(first)
                else:
                    return None  # e.g. different step counts: keep per-parameter updates
        fused = cls(params, flat, state, slices)
        fused.publish(opt)
        return fused

    def valid(self, params) -> bool:
        """Still the same parameters, all trainable, holding the same arrays."""
        return len(params) == len(self.params) and all(
            p is q and p.data is d and p.requires_grad
            for p, q, d in zip(params, self.params, self.datas)
        )

    def publish(self, opt: Optimizer) -> None:
        """Points ``opt.state[p]`` at views of the flat state (and copies its scalars)."""
        total = self.param.data.size
        for p, sl in zip(self.params, self.slices):
            opt.state[p] = {
                k: (
                    v[sl].reshape(p.data.shape)
                    if (isinstance(v, np.ndarray) or is_array(v)) and v.shape == (total,)
                    else v
                )
                for k, v in self.state.items()
            }
        self.published = _array_ids(self.state)

    def step(self, opt: Optimizer, group: dict) -> None:
        self.update(opt, group)
        self.write_back(opt)

    def update(self, opt: Optimizer, group: dict) -> None:
        """Gathers the parameters and gradients (p.data may have changed between steps) and
        updates the flat vector and state; the parameters are not written yet."""
        np.concatenate([p.data.reshape(-1) for p in self.params], out=self.param.data)
        np.concatenate([p.grad.reshape(-1) for p in self.params], out=self.param.grad)
        opt.update(self.param, self.state, group)

    def finite(self) -> bool:
        """Whether the updated flat vector and every state value are finite."""
        arrays = [self.param.data]
        for v in self.state.values():
            if isinstance(v, np.ndarray) or is_array(v):
                if v.dtype.kind in "fc":
                    arrays.append(v)
            elif isinstance(v, float) and not math.isfinite(v):
                return False
        if array_module(self.param.data) is np:
            return all(_block_finite(a) for a in arrays)
        # on a device: one norm over every array, read once (NaN or Inf when an element is)
        return math.isfinite(total_norm(arrays))

    def backup(self) -> dict:
        """The state as it is (arrays copied), for ``restore``."""
        return {
            k: v.copy() if isinstance(v, np.ndarray) or is_array(v) else v
            for k, v in self.state.items()
        }

    def restore(self, backup: dict) -> None:
        for k in list(self.state):
            if k not in backup:
                del self.state[k]
        for k, v in backup.items():
            current = self.state.get(k)
            if (
                (isinstance(v, np.ndarray) or is_array(v))
                and current is not None
                and current.shape == v.shape
            ):
                current[...] = v  # in place: opt.state[p] holds views of it
            else:
                self.state[k] = v

    def write_back(self, opt: Optimizer) -> None:
        """Copies the updated flat vector into the parameters and publishes the state: views
        again when ``update`` created or replaced a state array (momentum switched on), else
        just the scalars (the step count)."""
        for p, piece in zip(self.params, self.pieces):
            np.copyto(p.data, piece)
        arrays = _array_ids(self.state)
        if arrays != self.published:
            self.publish(opt)
        else:
            scalars = [(k, v) for k, v in self.state.items() if (k, id(v)) not in arrays]
            for p in self.params:
                opt.state[p].update(scalars)


def _follow(p: Parameter, state: dict) -> None:
    """Moves ``p``'s state arrays to ``p``'s array module when they are elsewhere (the model
    was moved with ``to(device)`` after steps were taken: PyTorch leaves that to the user)."""
    xp = array_module(p.data)
    for k, v in state.items():
        if (isinstance(v, np.ndarray) or is_array(v)) and array_module(v) is not xp:
            state[k] = xp.array(to_numpy(v) if xp is np else v, dtype=v.dtype)


def _array_ids(state: dict) -> list:
    return [(k, id(v)) for k, v in state.items() if isinstance(v, np.ndarray) or is_array(v)]


def _same(a, b) -> bool:
    if is_array(a) or is_array(b):
        return is_array(a) and is_array(b) and bool(np.array_equal(a, b))
    return a == b


def _state_array(v, like):
    """A loaded state array (from a file: numpy) in the dtype and array module of the
    parameter ``like``; always a copy."""
    xm = array_module(like)
    if xm is np and isinstance(v, np.ndarray):
        return v.astype(like.dtype)
    return xm.array(to_numpy(v) if xm is np else v, dtype=like.dtype)
