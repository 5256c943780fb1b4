"""Checkpoints: everything a training run needs to resume, bit for bit, in one safetensors file.

A checkpoint holds the model's weights (tensors ``model/<name>``), its architecture config when
it has one, and a JSON tree (metadata ``nnframe.checkpoint``) with the optimizer and scheduler
state, the random generators' states (nnframe's default generator and every Generator held by a
layer), the epoch, the step, the data-loader position, the callbacks' state and any ``extra``
values. Arrays inside the tree are stored as tensors ``state/<i>``; nothing is pickled, and
loading maps a fixed set of tags back to numbers, strings, lists, tuples, dicts and arrays.

Writes are atomic (see :mod:`nnframe.serialization`), so a crash during a save leaves the
previous checkpoint intact; :func:`latest_checkpoint` finds the newest complete one.
"""

from __future__ import annotations

import glob
import json
import math
import os
from dataclasses import dataclass, field

import numpy as np

from nnframe.core.backend import is_array, to_numpy
from nnframe.core.errors import ModelFormatError
from nnframe.core.random import default_rng
from nnframe.io import schema as S
from nnframe.io.schema import SchemaError
from nnframe.io.serialization import load_file, model_from_file_parts, save_file
from nnframe.training.callbacks import Callback, check_path_template

_MODEL = "model/"
_STATE = "state/"
_MAX_DEPTH = 64


@dataclass
class Checkpoint:
    """What :func:`load_checkpoint` read. Objects passed to it were restored in place; the
    states are here for everything else."""

    model: object | None
    model_state: dict
    optimizer_state: dict | None = None
    scheduler_state: dict | None = None
    rng_state: dict | None = None
    epoch: int = 0
    step: int = 0
    loader_state: object = None
    callback_states: list | None = None
    extra: object = None
    metadata: dict = field(default_factory=dict)


def save_checkpoint(
    path,
    model,
    optimizer=None,
    scheduler=None,
    *,
    epoch: int = 0,
    step: int = 0,
    loader=None,
    callbacks=None,
    extra=None,
) -> None:
    """Saves a resumable training state to ``path`` atomically.

    Args:
        path: the file to write (replaced atomically when it exists).
        model: the Module; its weights and buffers, and its config when it has one.
        optimizer, scheduler: objects with ``state_dict()`` (or None).
        epoch, step: where training stands.
        loader: the data loader (its ``state_dict()``) or a value giving its position.
        callbacks: a list of callbacks; those with ``state_dict()`` are saved.
        extra: any tree of numbers, strings, arrays, lists, tuples and dicts.
    """
    tensors = {_MODEL + k: v for k, v in model.state_dict().items()}
    arrays: list[np.ndarray] = []
    tree = {
        "epoch": int(epoch),
        "step": int(step),
        "optimizer": _state_of(optimizer),
        "scheduler": _state_of(scheduler),
        "rng": {"default": default_rng().bit_generator.state, "layers": _layer_rngs(model)},
        "loader": _state_of(loader) if hasattr(loader, "state_dict") else loader,
        "callbacks": None if callbacks is None else [callback_state(cb) for cb in callbacks],
        "extra": extra,
    }
    encoded = {k: _encode(v, arrays, k, 0) for k, v in tree.items()}
    for i, a in enumerate(arrays):
        tensors[f"{_STATE}{i}"] = a
    meta = {"nnframe.kind": "checkpoint", "nnframe.checkpoint": json.dumps(encoded)}
    try:
        from nnframe.io.config import get_config

        meta["nnframe.config"] = json.dumps(get_config(model))
    except (TypeError, ValueError):  # a layer without a config: load into a built model
        pass
    save_file(tensors, path, meta)


def load_checkpoint(
    path,
    model=None,
    optimizer=None,
    scheduler=None,
    *,
    loader=None,
    callbacks=None,
    restore_rng: bool = True,
    cast: bool = False,
) -> Checkpoint:
    """Reads a checkpoint and restores, in place, every object given.

    ``model`` (if None, it is rebuilt from the stored config), ``optimizer``, ``scheduler``,
    ``loader`` and ``callbacks`` get their ``load_state_dict``; with ``restore_rng`` nnframe's
    default generator and the layers' generators get their saved states back. Returns a
    :class:`Checkpoint` with the epoch, step, extra values and every state.
    """
    ckpt, steps = _prepare(path, model, optimizer, scheduler, loader, callbacks, restore_rng, cast)
    _apply(steps)
    return ckpt


_TREE = S.Record(
    {
        "epoch": S.Int(min=0, what="epoch"),
        "step": S.Int(min=0, what="step"),
        "optimizer": S.Any(),
        "scheduler": S.Any(),
        "rng": S.Nullable(
            S.Record(
                {"default": S.Any(), "layers": S.Nullable(S.DictOf(S.Str(), S.Any()))},
                optional=("default", "layers"),
            )
        ),
        "loader": S.Any(),
        "callbacks": S.Nullable(S.ListOf(S.Any(), max_len=10_000)),
        "extra": S.Any(),
    },
    optional=("epoch", "step", "optimizer", "scheduler", "rng", "loader", "callbacks", "extra"),
)


def _prepare(path, model, optimizer, scheduler, loader, callbacks, restore_rng, cast):
    """Reads and validates everything in the checkpoint; returns the :class:`Checkpoint` and
    the list of functions that apply it. Nothing outside is changed here: every problem is
    found before the first of those functions runs (all-or-nothing loading)."""
    tensors, metadata = load_file(path)
    where = f"load_checkpoint: {os.fspath(path)!r}"
    text = metadata.get("nnframe.checkpoint")
    if metadata.get("nnframe.kind") != "checkpoint" or text is None:
        raise ModelFormatError(f"{where}: expected a checkpoint file, got a model or weights file")
    try:
        encoded = json.loads(text)
    except (ValueError, RecursionError):
        raise ModelFormatError(f"{where}: the checkpoint state is not valid JSON") from None
    if not isinstance(encoded, dict):
        raise ModelFormatError(f"{where}: the checkpoint state is not a JSON object")
    tree = {k: _decode(v, tensors, where, 0) for k, v in encoded.items()}
    tree = S.validate(_TREE, tree, where)
    model_state = {k[len(_MODEL) :]: v for k, v in tensors.items() if k.startswith(_MODEL)}
    steps = []
    if model is None and "nnframe.config" in metadata:  # a new model: eval mode, as nf.load
        model = model_from_file_parts(tensors, metadata, os.fspath(path), prefix=_MODEL).eval()
    elif model is not None:  # validates every key first, then copies: it goes first
        steps.append(lambda: model.load_state_dict(model_state, cast=cast))
    ckpt = Checkpoint(
        model=model,
        model_state=model_state,
        optimizer_state=tree.get("optimizer"),
        scheduler_state=tree.get("scheduler"),
        rng_state=tree.get("rng"),
        epoch=tree.get("epoch", 0),
        step=tree.get("step", 0),
        loader_state=tree.get("loader"),
        callback_states=tree.get("callbacks"),
        extra=tree.get("extra"),
        metadata=metadata,
    )
    for obj, state in ((optimizer, ckpt.optimizer_state), (scheduler, ckpt.scheduler_state)):
        if obj is not None and state is not None:
            steps.append(_checked_loader(obj, state))
    if loader is not None and hasattr(loader, "load_state_dict") and ckpt.loader_state is not None:
        steps.append(_checked_loader(loader, ckpt.loader_state))
    if callbacks is not None and ckpt.callback_states is not None:
        for cb, state in zip(callbacks, ckpt.callback_states):
            checked = check_callback_state(cb, state)
            steps.append(lambda cb=cb, checked=checked: apply_callback_state(cb, checked))
    if restore_rng and ckpt.rng_state is not None:
        steps.append(_checked_rngs(ckpt.rng_state, model, where))
    return ckpt, steps


def _apply(steps) -> None:
    for step in steps:
        step()


def _checked_loader(obj, state):
    """Validates ``state`` for ``obj`` now (``check_state_dict``, when ``obj`` has one) and
    returns the function that applies it."""
    if hasattr(obj, "check_state_dict") and hasattr(obj, "apply_state_dict"):
        checked = obj.check_state_dict(state)
        return lambda: obj.apply_state_dict(checked)
    return lambda: obj.load_state_dict(state)


def _check_generator_state(generator: np.random.Generator, state, where: str, what: str):
    """``state`` tried on a fresh bit generator of ``generator``'s kind (nothing changed)."""
    trial = type(generator.bit_generator)()
    try:
        trial.state = state
    except (TypeError, ValueError, KeyError, AttributeError, OverflowError) as e:
        raise SchemaError(f"{where}: {what}: invalid random generator state ({e})") from None
    return trial.state


def latest_checkpoint(directory, pattern: str = "*.safetensors") -> str | None:
    """The newest file in ``directory`` matching ``pattern`` that loads as a complete, valid
    checkpoint (newest by modification time); None when there is none. Temporary files of an
    interrupted save are never returned."""
    paths = [
        p
        for p in glob.glob(os.path.join(os.fspath(directory), pattern))
        if not os.path.basename(p).startswith(".") and os.path.isfile(p)
    ]
    paths.sort(key=lambda p: (os.path.getmtime(p), p), reverse=True)
    for p in paths:
        try:
            _, metadata = load_file(p)
        except (ModelFormatError, OSError):
            continue
        if metadata.get("nnframe.kind") == "checkpoint":
            return p
    return None


# ---------------------------------------------------------------------- fit integration
class TrainingCheckpoint(Callback):
    """A ``Trainer.fit`` callback that saves a full checkpoint every ``every`` epochs, for
    ``fit(..., resume_from=path)``: model, optimizer, epoch, the shuffling generator, nnframe's
    default generator and the layers' generators, every callback's state and the history.

    Args:
        path: the file; may hold ``{epoch}`` and epoch-log fields (``"ckpt-{epoch:03d}.st"``).
        every: save every this many epochs.

    ``last_saved`` holds the path of the latest file written.
    """

    def __init__(self, path, every: int = 1):
        if int(every) < 1:
            raise ValueError(f"TrainingCheckpoint: invalid every={every!r} (must be >= 1)")
        self.path = os.fspath(path)
        self.every = int(every)
        self.last_saved: str | None = None

    def on_train_begin(self, logs: dict) -> None:
        check_path_template("TrainingCheckpoint", self.path, self.trainer)

    def on_epoch_end(self, epoch: int, logs: dict) -> None:
        if (epoch + 1) % self.every:
            return
        path = self.path.format(epoch=epoch + 1, **logs)
        if getattr(self.trainer, "is_root", True):  # data-parallel fit: only rank 0 writes
            save_trainer_checkpoint(self.trainer, path, epoch + 1, logs)
        self.last_saved = path

    def __repr__(self) -> str:
        return f"TrainingCheckpoint(path={self.path!r}, every={self.every})"


def save_trainer_checkpoint(trainer, path, epoch: int, logs: dict | None = None) -> None:
    """Saves everything ``Trainer.fit(resume_from=path)`` needs to go on after ``epoch``
    epochs (called by :class:`TrainingCheckpoint` at the end of an epoch): the model, the
    optimizer, the callbacks' state, the history, and the trainer's state
    (:class:`nnframe.TrainerState`: step and skipped-batch counters, the generators of the
    split and the shuffles)."""
    state = trainer.state
    history = trainer.history
    epochs_done = list(history.epoch)
    logs_so_far = {k: list(v) for k, v in history.history.items()}
    if logs is not None and epoch - 1 not in epochs_done:  # this epoch is not recorded yet
        epochs_done.append(epoch - 1)
        for k in set(logs_so_far) | set(logs):
            logs_so_far.setdefault(k, [math.nan] * (len(epochs_done) - 1))
            logs_so_far[k].append(float(logs[k]) if k in logs else math.nan)
    loader_rng = getattr(state.loader, "rng", None)  # a DataLoader built by fit has one
    loader = {
        "fit_rng": _generator_state(state.rng),
        "loader_rng": _generator_state(loader_rng),
    }
    callbacks = [cb for cb in state.callbacks if not isinstance(cb, TrainingCheckpoint)]
    counters = state.counters()
    save_checkpoint(
        path,
        trainer.model,
        trainer.optimizer,
        epoch=epoch,
        step=counters["step"],
        loader=loader,
        callbacks=callbacks,
        extra={
            "history": {"epoch": epochs_done, "logs": logs_so_far},
            "trainer": {"skipped_batches": counters["skipped_batches"]},
        },
    )


def _generator_state(gen):
    return gen.bit_generator.state if isinstance(gen, np.random.Generator) else None


_HISTORY = S.Record(
    {
        "epoch": S.ListOf(S.Int(min=0), max_len=1_000_000),
        "logs": S.DictOf(S.Str(max_len=200), S.ListOf(S.Float(finite=False), max_len=1_000_000)),
    }
)
_TRAINER = S.Record({"skipped_batches": S.Int(min=0)}, optional=("skipped_batches",))


def resume_fit(trainer, path, callbacks, loader) -> int:
    """Restores a :class:`TrainingCheckpoint` into ``trainer`` (its model, optimizer,
    callbacks, history and :class:`nnframe.TrainerState`) at the start of ``fit`` (after
    ``on_train_begin``); returns the epoch to start from. Everything is validated before
    anything is restored: a bad checkpoint changes nothing. Files written before the trainer
    state was stored resume with zero counters."""
    callbacks = [cb for cb in callbacks if not isinstance(cb, TrainingCheckpoint)]
    ckpt, steps = _prepare(
        path, trainer.model, trainer.optimizer, None, None, callbacks, True, False
    )
    where = f"Trainer.fit: resume_from={os.fspath(path)!r}"
    state = trainer.state
    stored = ckpt.loader_state if isinstance(ckpt.loader_state, dict) else {}
    generators = []
    for key, gen in (("fit_rng", state.rng), ("loader_rng", getattr(loader, "rng", None))):
        if stored.get(key) is not None and isinstance(gen, np.random.Generator):
            generators.append((gen, _check_generator_state(gen, stored[key], where, key)))
    extra = ckpt.extra if isinstance(ckpt.extra, dict) else {}
    saved = extra.get("history")
    if saved is not None:
        saved = S.validate(_HISTORY, saved, where, "history")
    counters = S.validate(_TRAINER, extra.get("trainer") or {}, where, "trainer")
    _apply(steps)
    for gen, gen_state in generators:
        gen.bit_generator.state = gen_state
    state.step = ckpt.step
    state.skipped_batches = counters.get("skipped_batches", 0)
    if saved is not None:
        logs = saved["logs"]
        for i, epoch in enumerate(saved["epoch"]):
            trainer.history.record(epoch, {k: v[i] for k, v in logs.items() if i < len(v)})
    return ckpt.epoch


def callback_state(cb) -> dict | None:
    """A callback's state: ``{"state_dict": cb.state_dict()}`` (for a :class:`Callback`, its
    declared ``state_fields``); None for an object without ``state_dict``."""
    if cb is None or not hasattr(cb, "state_dict"):
        return None
    return {"state_dict": cb.state_dict()}


def _legacy_state(cb, state: dict) -> dict:
    """A callback state written before the declared fields (``{"attrs", "objects"}``): only
    the names ``cb`` declares are kept; every other name in the file is ignored, never set."""
    fields = {**getattr(cb, "state_fields", {}), **dict.fromkeys(getattr(cb, "state_objects", ()))}
    attrs = state.get("attrs") if isinstance(state.get("attrs"), dict) else {}
    objects = state.get("objects") if isinstance(state.get("objects"), dict) else {}
    kept = {k: v for k, v in attrs.items() if k in fields}
    kept.update({k: v for k, v in objects.items() if k in fields})
    return kept


def check_callback_state(cb, state):
    """Validates one callback's stored state (nothing applied); returns what
    :func:`apply_callback_state` applies, or None when there is nothing to restore."""
    if state is None or cb is None:
        return None
    who = f"{type(cb).__name__}.load_state_dict"
    if not isinstance(state, dict):
        raise SchemaError(f"{who}: expected a dict of callback state, got {type(state).__name__}")
    if set(state) <= {"attrs", "objects"}:  # written by nnframe before declared fields
        inner = _legacy_state(cb, state)
    elif set(state) == {"state_dict"}:
        inner = state["state_dict"]
    else:
        raise SchemaError(f"{who}: expected a dict with key 'state_dict', got {sorted(state)}")
    if hasattr(cb, "check_state") and hasattr(cb, "apply_state"):
        return ("checked", cb.check_state(inner))
    if hasattr(cb, "load_state_dict"):  # not an nnframe Callback: its own method validates
        return ("load", inner)
    return None


def apply_callback_state(cb, checked) -> None:
    if checked is None:
        return
    how, value = checked
    if how == "checked":
        cb.apply_state(value)
    else:
        cb.load_state_dict(value)


def load_callback_state(cb, state) -> None:
    """Validates, then restores, one callback's state (see :class:`nnframe.callbacks.Callback`:
    only declared, typed fields are ever set)."""
    apply_callback_state(cb, check_callback_state(cb, state))


# ---------------------------------------------------------------------- states and generators
def _state_of(obj):
    if obj is None:
        return None
    if hasattr(obj, "state_dict"):
        return obj.state_dict()
    return None


def _layer_rngs(model) -> dict:
    """The state of every numpy Generator a layer holds (dropout masks, ...), by dotted name."""
    states = {}
    for prefix, module in model.named_modules():
        for attr, value in vars(module).items():
            if isinstance(value, np.random.Generator):
                states[f"{prefix}.{attr}" if prefix else attr] = value.bit_generator.state
    return states


def _checked_rngs(rng_state, model, where: str):
    """Validates the stored generator states; returns the function that sets them."""
    states = []
    if rng_state.get("default") is not None:
        gen = default_rng()
        states.append((gen, _check_generator_state(gen, rng_state["default"], where, "rng")))
    layers = rng_state.get("layers") or {}
    if model is not None and layers:
        for prefix, module in model.named_modules():
            for attr, value in vars(module).items():
                key = f"{prefix}.{attr}" if prefix else attr
                if isinstance(value, np.random.Generator) and key in layers:
                    state = _check_generator_state(value, layers[key], where, f"rng {key}")
                    states.append((value, state))

    def apply():
        for gen, state in states:
            gen.bit_generator.state = state

    return apply


def _int(value, where: str, what: str) -> int:
    if type(value) is not int:
        raise ModelFormatError(f"{where}: expected an integer {what}, got {value!r}")
    return value


# ---------------------------------------------------------------------- the state tree
def _encode(value, arrays: list, where: str, depth: int):
    """A JSON-ready form of ``value``; arrays (and numpy scalars) go to ``arrays``."""
    if depth > _MAX_DEPTH:
        raise ValueError(f"save_checkpoint: {where}: nested deeper than {_MAX_DEPTH}")
    if value is None or isinstance(value, (bool, str)):
        return value
    if is_array(value) and not isinstance(value, np.ndarray):
        value = to_numpy(value)  # a device array (optimizer state on a GPU): from the host
    if isinstance(value, (np.ndarray, np.generic)):  # before float: np.float64 is a float
        a = np.asarray(value)
        if a.dtype.kind not in "biuf":
            raise TypeError(f"save_checkpoint: {where}: cannot store an array of dtype {a.dtype}")
        arrays.append(a)
        tag = "__tensor__" if isinstance(value, np.ndarray) else "__scalar__"
        return {tag: len(arrays) - 1}
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else {"__float__": repr(value)}
    if isinstance(value, list):
        return [_encode(v, arrays, f"{where}[{i}]", depth + 1) for i, v in enumerate(value)]
    if isinstance(value, tuple):
        return {
            "__tuple__": [
                _encode(v, arrays, f"{where}[{i}]", depth + 1) for i, v in enumerate(value)
            ]
        }
    if isinstance(value, dict):
        if all(isinstance(k, str) and not k.startswith("__") for k in value):
            return {k: _encode(v, arrays, f"{where}.{k}", depth + 1) for k, v in value.items()}
        return {
            "__dict__": [
                [
                    _encode(k, arrays, where, depth + 1),
                    _encode(v, arrays, f"{where}.{k}", depth + 1),
                ]
                for k, v in value.items()
            ]
        }
    raise TypeError(
        f"save_checkpoint: {where}: cannot store a {type(value).__name__} (checkpoints hold "
        "numbers, strings, arrays, lists, tuples and dicts; nothing is pickled)"
    )


def _decode(value, tensors: dict, where: str, depth: int):
    if depth > _MAX_DEPTH:
        raise ModelFormatError(f"{where}: the checkpoint state is nested too deeply")
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, list):
        return [_decode(v, tensors, where, depth + 1) for v in value]
    if not isinstance(value, dict):  # pragma: no cover - json gives nothing else
        raise ModelFormatError(f"{where}: malformed checkpoint state")
    tags = [k for k in value if k.startswith("__")]
    if not tags:
        return {k: _decode(v, tensors, where, depth + 1) for k, v in value.items()}
    if len(value) != 1:
        raise ModelFormatError(f"{where}: malformed tagged value in the checkpoint state")
    tag, inner = next(iter(value.items()))
    if tag in ("__tensor__", "__scalar__"):
        key = f"{_STATE}{inner}" if type(inner) is int else None
        if key not in tensors:
            raise ModelFormatError(f"{where}: the state refers to a missing tensor {inner!r}")
        a = tensors[key]
        if tag == "__tensor__":
            return a.copy()
        if a.ndim != 0:
            raise ModelFormatError(f"{where}: a stored scalar is not 0-dimensional")
        return a[()]
    if tag == "__float__" and inner in ("nan", "inf", "-inf"):
        return float(inner)
    if tag == "__tuple__" and isinstance(inner, list):
        return tuple(_decode(v, tensors, where, depth + 1) for v in inner)
    if tag == "__dict__" and isinstance(inner, list):
        out = {}
        for item in inner:
            if not (isinstance(item, list) and len(item) == 2):
                raise ModelFormatError(f"{where}: malformed dict item in the checkpoint state")
            key = _decode(item[0], tensors, where, depth + 1)
            try:
                out[key] = _decode(item[1], tensors, where, depth + 1)
            except TypeError:
                raise ModelFormatError(
                    f"{where}: invalid dict key in the checkpoint state"
                ) from None
        return out
    raise ModelFormatError(f"{where}: unknown tag {tag!r} in the checkpoint state")
