"""Hostile inputs (issue 15): property tests that generate malformed checkpoints, configs,
safetensors headers, optimizer states and training data. Each asserts the same three things:
nnframe raises its own error (ModelFormatError, SchemaError, or a named ValueError/TypeError for
arguments), nothing was changed, and memory stayed bounded. Every defect found by an attack
campaign gets its case here (see docs/reliability.md)."""

import copy
import json
import math
import struct
import tracemalloc

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import nnframe as nf
from nnframe.io.serialization import load_file, save_file

# ---------------------------------------------------------------------- helpers
json_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=8),
)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=6), inner, max_size=4)
    ),
    max_leaves=12,
)


def paths(tree, prefix=()):
    """Every path (tuple of keys/indices) into a JSON tree."""
    yield prefix
    if isinstance(tree, dict):
        for k, v in tree.items():
            yield from paths(v, (*prefix, k))
    elif isinstance(tree, list):
        for i, v in enumerate(tree):
            yield from paths(v, (*prefix, i))


def mutate(tree, data):
    """``tree`` with one node replaced by a drawn JSON value, or deleted, or its type swapped."""
    tree = copy.deepcopy(tree)
    all_paths = [p for p in paths(tree) if p]
    if not all_paths:
        return data.draw(json_values)
    path = data.draw(st.sampled_from(all_paths))
    parent = tree
    for key in path[:-1]:
        parent = parent[key]
    action = data.draw(st.sampled_from(["replace", "delete", "wrap", "stringify", "negate"]))
    key = path[-1]
    if action == "delete":
        del parent[key]
    elif action == "wrap":
        parent[key] = [parent[key]]
    elif action == "stringify":
        parent[key] = str(parent[key])
    elif (
        action == "negate"
        and isinstance(parent[key], (int, float))
        and not isinstance(parent[key], bool)
    ):
        parent[key] = -parent[key] - 1
    else:
        parent[key] = data.draw(json_values)
    return tree


def model_state(model):
    return {k: v.tobytes() for k, v in model.state_dict().items()}


def optimizer_state(opt):
    sd = opt.state_dict()
    groups = json.dumps(sd["param_groups"], default=str, sort_keys=True)
    state = {
        i: {k: (v.tobytes() if isinstance(v, np.ndarray) else v) for k, v in s.items()}
        for i, s in sd["state"].items()
    }
    return groups, state


def small_model():
    return nf.Sequential(nf.Dense(3, 4, rng=0), nf.BatchNorm1d(4), nf.Tanh(), nf.Dense(4, 2, rng=1))


def trained():
    model = small_model()
    opt = nf.optim.Adam(model.parameters(), lr=0.01)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(16, 3)).astype(np.float32)
    y = rng.integers(0, 2, size=16)
    nf.Trainer(model, nf.CrossEntropyLoss(), opt).fit(x, y, batch_size=8, verbose=0)
    return model, opt


# ---------------------------------------------------------------------- checkpoints
@given(data=st.data())
def test_a_mutated_checkpoint_tree_is_refused_or_loaded_never_half(tmp_path_factory, data):
    tmp = tmp_path_factory.mktemp("ckpt")
    model, opt = trained()
    es = nf.callbacks.EarlyStopping(monitor="loss")
    es.on_train_begin({})
    path = tmp / "c.safetensors"
    nf.save_checkpoint(path, model, opt, epoch=3, callbacks=[es], extra={"a": [1, 2]})
    tensors, meta = load_file(path)
    tree = json.loads(meta["nnframe.checkpoint"])
    meta["nnframe.checkpoint"] = json.dumps(mutate(tree, data))
    save_file(tensors, path, meta)  # checksums recomputed: they prove nothing against a crafter
    target, target_opt = small_model(), nf.optim.Adam(small_model().parameters(), lr=0.5)
    target_opt = nf.optim.Adam(target.parameters(), lr=0.5)
    cb = nf.callbacks.EarlyStopping(monitor="loss")
    cb.on_train_begin({})
    before = (model_state(target), optimizer_state(target_opt), dict(vars(cb)))
    try:
        nf.load_checkpoint(path, target, target_opt, callbacks=[cb])
    except nf.ModelFormatError:
        after = (model_state(target), optimizer_state(target_opt), dict(vars(cb)))
        assert after[0] == before[0] and after[1] == before[1]
        assert after[2].keys() == before[2].keys()
        return
    # loaded: every restored value has the declared type
    assert isinstance(cb.best, float) and isinstance(cb.wait, int)
    for g in target_opt.param_groups:
        assert math.isfinite(g["lr"]) and g["lr"] >= 0


@given(data=st.data())
def test_a_mutated_model_config_is_refused_or_builds(data):
    config = nf.get_config(small_model())
    bad = mutate(config, data)
    try:
        model = nf.from_config(bad)
    except nf.ModelFormatError:
        return
    assert isinstance(model, nf.Module)


# ---------------------------------------------------------------------- safetensors headers
headers = st.one_of(
    json_values.map(lambda v: json.dumps(v).encode()),
    st.binary(max_size=200),
    st.dictionaries(
        st.text(max_size=5),
        st.fixed_dictionaries(
            {
                "dtype": st.sampled_from(["F32", "F64", "I64", "U8", "BF16", "F8", "x"]),
                "shape": st.lists(st.integers(-2, 2**40), max_size=4),
                "data_offsets": st.lists(st.integers(-2, 2**40), max_size=3),
            }
        ),
        max_size=3,
    ).map(lambda d: json.dumps(d).encode()),
)


@given(header=headers, body=st.binary(max_size=64), length_delta=st.integers(-3, 3))
def test_a_crafted_safetensors_file_raises_model_format_error_with_bounded_memory(
    tmp_path_factory, header, body, length_delta
):
    path = tmp_path_factory.mktemp("st") / "f.safetensors"
    raw = struct.pack("<Q", max(0, len(header) + length_delta)) + header + body
    path.write_bytes(raw)
    tracemalloc.start()
    try:
        try:
            load_file(path)
        except nf.ModelFormatError:
            pass
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 100 * len(raw) + 1_000_000


@pytest.mark.parametrize("unit", [b"{},", b"[[]],", b'"ab",', b'{"a":[1]},'])
def test_a_big_header_of_tiny_values_costs_a_small_multiple_of_its_size(tmp_path, unit):
    header = b'{"x":[' + (unit * (4_000_000 // len(unit))).rstrip(b",") + b"]}"
    path = tmp_path / "f.safetensors"
    path.write_bytes(struct.pack("<Q", len(header)) + header)
    tracemalloc.start()
    try:
        with pytest.raises(nf.ModelFormatError):
            load_file(path)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 4 * len(header)


# ---------------------------------------------------------------------- optimizer states
@pytest.mark.parametrize("cls", [nf.optim.SGD, nf.optim.Adam, nf.optim.RMSprop, nf.optim.NAdam])
@given(data=st.data())
def test_a_mutated_optimizer_state_is_refused_or_loaded_never_half(cls, data):
    params = [nf.Parameter(np.ones(3, np.float32)), nf.Parameter(np.ones((2, 2), np.float32))]
    kwargs = {"momentum": 0.9} if cls in (nf.optim.SGD, nf.optim.RMSprop) else {}
    opt = cls(params, lr=0.01, **kwargs)
    for p in params:
        p.grad[...] = 0.5
    opt.step()
    sd = opt.state_dict()
    as_json = json.loads(json.dumps(sd, default=lambda a: a.tolist()))  # arrays as lists
    bad = mutate(as_json, data)
    bad_state = bad.get("state") if isinstance(bad, dict) else None
    if isinstance(bad_state, dict):  # lists back to arrays where they were arrays
        for s in bad_state.values():
            if isinstance(s, dict):
                for k, v in list(s.items()):
                    if isinstance(v, list):
                        try:
                            s[k] = np.asarray(v, dtype=np.float32)
                        except (ValueError, TypeError, OverflowError):
                            pass
    target = cls([nf.Parameter(np.ones(3, np.float32)), nf.Parameter(np.ones((2, 2), np.float32))],
                 lr=0.01, **kwargs)  # fmt: skip
    target.load_state_dict(sd)
    before = optimizer_state(target)
    try:
        target.load_state_dict(bad)
    except nf.SchemaError:
        assert optimizer_state(target) == before
        return
    for p in target.parameters():
        p.grad[...] = 0.5
    try:
        target.step()
    except nf.optim.NonFiniteUpdateError:
        pass
    for p in target.parameters():
        assert np.isfinite(p.data).all()


# ---------------------------------------------------------------------- training data
@given(
    seed=st.integers(0, 2**31 - 1),
    bad_rows=st.lists(st.integers(0, 39), max_size=6),
    value=st.sampled_from([np.nan, np.inf, -np.inf, 1e30, -1e38]),
    policy=st.sampled_from(["skip_batch", "stop"]),
)
def test_poisoned_training_data_never_corrupts_the_model(seed, bad_rows, value, policy):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(40, 3)).astype(np.float32)
    y = rng.integers(0, 2, size=40)
    for r in bad_rows:
        x[r, rng.integers(0, 3)] = value
    model = small_model()
    opt = nf.optim.Adam(model.parameters(), lr=0.05)
    trainer = nf.Trainer(model, nf.CrossEntropyLoss(), opt)
    trainer.fit(x, y, epochs=2, batch_size=8, nan_policy=policy, verbose=0, rng=seed)
    for k, v in model.state_dict().items():
        assert np.isfinite(v).all(), k
    for s in opt.state.values():
        for v in s.values():
            if isinstance(v, np.ndarray):
                assert np.isfinite(v).all()
    clean = rng.normal(size=(5, 3)).astype(np.float32)
    assert np.isfinite(trainer.predict(clean)).all()


# ---------------------------------------------------------------------- defect 14
def test_backward_of_the_loss_value_or_method_names_the_fix():
    # issue 15 defect 14 (fixed in the Core v2 containers): the float was broadcast silently
    model = nf.Sequential(nf.Dense(3, 2, rng=0))
    x = np.ones((4, 3), np.float32)
    loss_fn = nf.MSELoss()
    loss = loss_fn(model(x), np.zeros((4, 2), np.float32))
    with pytest.raises(TypeError, match=r"model.backward\(loss_fn.backward\(\)\)"):
        model.backward(loss)
    model(x)
    with pytest.raises(TypeError, match=r"model.backward\(loss_fn.backward\(\)\)"):
        model.backward(loss_fn.backward)


# ---------------------------------------------------------------------- fit arguments
def names_itself(error: Exception) -> bool:
    """nnframe's message template: 'who: ...' with who one name (Class.method, a layer)."""
    import re

    message = error.args[0] if isinstance(error, KeyError) and error.args else str(error)
    head = str(message).split(": ")[0]
    head = re.sub(r"\([^()]*\)|\[[^\[\]]*\]|'[^']*'", "", head).strip()
    return bool(re.fullmatch(r"[A-Za-z_][\w.]*( [A-Za-z_][\w.]*)?", head))


odd_numbers = st.one_of(
    st.integers(-3, 40),
    st.floats(allow_nan=True, allow_infinity=True),
    st.booleans(),
    st.none(),
    st.text(max_size=3),
)


@given(
    epochs=odd_numbers,
    batch_size=odd_numbers,
    validation_split=odd_numbers,
    class_weight=st.one_of(
        st.none(),
        st.dictionaries(
            st.one_of(st.integers(-2, 2**40), st.text(max_size=2)), odd_numbers, max_size=3
        ),
        st.lists(odd_numbers, max_size=3),
    ),
    weight=st.sampled_from([None, "ones", "nan", "negative", "short"]),
)
def test_odd_fit_arguments_train_or_are_refused_by_name(
    epochs, batch_size, validation_split, class_weight, weight
):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(20, 3)).astype(np.float32)
    y = rng.integers(0, 2, size=20)
    sample_weight = {
        None: None,
        "ones": np.ones(20),
        "nan": np.r_[np.ones(19), np.nan],
        "negative": -np.ones(20),
        "short": np.ones(3),
    }[weight]
    model = small_model()
    opt = nf.optim.SGD(model.parameters(), lr=0.05)
    before = (model_state(model), optimizer_state(opt))
    trainer = nf.Trainer(model, nf.CrossEntropyLoss(), opt)
    kwargs = dict(epochs=epochs, batch_size=batch_size, validation_split=validation_split)
    try:
        trainer.fit(x, y, class_weight=class_weight, sample_weight=sample_weight, verbose=0,
                    nan_policy="skip_batch", **kwargs)  # fmt: skip
    except (ValueError, TypeError, KeyError) as error:
        assert names_itself(error), repr(error)
        if not trainer.state.step:  # refused before any update: nothing changed
            assert (model_state(model), optimizer_state(opt)) == before
        else:  # refused by a later batch (a last batch of one row for the batch norm)
            assert "batch_size" in str(error), repr(error)
        return
    for k, v in model.state_dict().items():
        assert np.isfinite(v).all(), k


# ---------------------------------------------------------------------- scheduler states
@pytest.mark.parametrize(
    "build",
    [
        lambda opt: nf.optim.StepLR(opt, step_size=2, gamma=0.5),
        lambda opt: nf.optim.OneCycleLR(opt, max_lr=0.1, total_steps=20),
        lambda opt: nf.optim.ReduceLROnPlateau(opt, patience=1),
        lambda opt: nf.optim.SequentialLR(
            opt, [nf.optim.LinearLR(opt, 0.1, total_iters=2), nf.optim.ExponentialLR(opt, 0.9)], [2]
        ),
    ],
    ids=["StepLR", "OneCycleLR", "ReduceLROnPlateau", "SequentialLR"],
)
@given(data=st.data())
def test_a_mutated_scheduler_state_is_refused_or_loaded_with_finite_rates(build, data):
    p = nf.Parameter(np.ones(2, np.float32))
    opt = nf.optim.SGD([p], lr=0.1)
    sched = build(opt)
    state = json.loads(json.dumps(sched.state_dict()))
    bad = mutate(state, data)
    before = json.dumps(sched.state_dict(), sort_keys=True, default=str)
    try:
        sched.load_state_dict(bad)
    except nf.SchemaError:
        assert json.dumps(sched.state_dict(), sort_keys=True, default=str) == before
        return
    for _ in range(3):  # the loaded state drives finite rates, or the step refuses by name
        try:
            sched.step(1.0) if isinstance(sched, nf.optim.ReduceLROnPlateau) else sched.step()
        except (ValueError, TypeError, IndexError, ZeroDivisionError) as error:
            assert names_itself(error), repr(error)
            break
        assert all(math.isfinite(g["lr"]) for g in opt.param_groups)


@pytest.mark.parametrize("class_weight", [{}, []])
def test_empty_class_weights_weigh_every_class_one(class_weight):
    """No class named: every class weighs 1 (it was an IndexError)."""
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(8, 3)).astype(np.float32), rng.integers(0, 2, size=8)

    def fit(cw):
        nf.manual_seed(0)
        model = small_model()
        nf.Trainer(model, nf.CrossEntropyLoss(), nf.optim.SGD(model.parameters(), lr=0.1)).fit(
            x, y, class_weight=cw, batch_size=4, shuffle=False, verbose=0
        )
        return model_state(model)

    assert fit(class_weight) == fit(None)


def test_a_short_sample_weight_with_validation_split_is_refused_by_shape():
    """It was an IndexError from inside the split."""
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(20, 3)).astype(np.float32), rng.integers(0, 2, size=20)
    model = small_model()
    opt = nf.optim.SGD(model.parameters(), lr=0.1)
    before = (model_state(model), optimizer_state(opt))
    with pytest.raises(ValueError, match=r"sample_weight of shape \(20,\).*got shape \(3,\)"):
        nf.Trainer(model, nf.CrossEntropyLoss(), opt).fit(
            x, y, sample_weight=np.ones(3), validation_split=0.5, verbose=0
        )
    assert (model_state(model), optimizer_state(opt)) == before


def test_a_state_key_of_unicode_digits_is_refused_by_name():
    """'¹' is a digit to str.isdigit but not to int(): it was a raw int() ValueError."""
    model = small_model()
    opt = nf.optim.RMSprop(model.parameters(), lr=0.01)
    state = opt.state_dict()
    state["state"] = {"¹": None}
    before = optimizer_state(opt)
    with pytest.raises((ValueError, TypeError, KeyError)) as info:
        opt.load_state_dict(state)
    assert names_itself(info.value) and "RMSprop" in str(info.value), info.value
    assert optimizer_state(opt) == before


def test_a_scheduler_state_that_needs_betas_is_refused_for_sgd():
    """OneCycleLR's use_beta1 set in a saved state, on an optimizer without betas: it was a raw
    KeyError('betas') from the trial of the rates."""
    model = small_model()
    opt = nf.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    sched = nf.optim.OneCycleLR(opt, max_lr=0.1, total_steps=20)
    state = sched.state_dict()
    state["use_beta1"] = True
    with pytest.raises(ValueError, match="fits this optimizer.*'betas'.*SGD"):
        sched.load_state_dict(state)
    assert sched.use_beta1 is False
