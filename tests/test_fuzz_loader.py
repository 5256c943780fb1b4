"""Fuzzing the loader: mutated bytes of a valid model file either load identically or raise
ModelFormatError; nothing else (no other exception, no hang, no wrong tensors)."""

import json
import os

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

import nnframe as nf
from nnframe.io.serialization import load_file

CHECKED_MODULES = []

_VALID = {}


def valid_file_bytes(tmp_dir) -> bytes:
    if "m" not in _VALID:
        model = nf.Sequential(nf.Dense(2, 3, rng=0), nf.ReLU(), nf.Dense(3, 1, rng=1))
        path = os.path.join(tmp_dir, "valid.safetensors")
        nf.save(model, path)
        with open(path, "rb") as f:
            _VALID["m"] = f.read()
        _VALID["loaded"] = load_file(path)
    return _VALID["m"]


@settings(max_examples=200)  # one example costs about a millisecond
@given(
    edits=st.lists(
        st.tuples(st.integers(min_value=0), st.integers(min_value=0, max_value=255)),
        min_size=1,
        max_size=3,
    ),
    cut=st.one_of(st.none(), st.integers(min_value=0)),
    extra=st.binary(max_size=3),
)
def test_fuzz_mutated_files_load_identically_or_raise(edits, cut, extra, tmp_path_factory):
    directory = tmp_path_factory.getbasetemp()
    data = bytearray(valid_file_bytes(directory))
    for position, value in edits:
        data[position % len(data)] = value
    if cut is not None:
        data = data[: cut % (len(data) + 1)]
    data += extra
    path = directory / "fuzzed.safetensors"
    path.write_bytes(bytes(data))
    try:
        tensors, metadata = load_file(path)
    except nf.ModelFormatError:
        return
    good_tensors, good_metadata = _VALID["loaded"]
    assert metadata == good_metadata
    assert list(tensors) == list(good_tensors)
    for k in tensors:
        assert tensors[k].dtype == good_tensors[k].dtype
        assert np.array_equal(tensors[k], good_tensors[k])
    assert repr(nf.load(path)) == repr(nf.load(directory / "valid.safetensors"))


def test_whitespace_after_the_header_json_loads_identically(tmp_path):
    data = valid_file_bytes(tmp_path)
    n = int.from_bytes(data[:8], "little")
    header = data[8 : 8 + n] + b" \t\n\r    "  # JSON whitespace: the same contents
    (tmp_path / "ws.safetensors").write_bytes(
        len(header).to_bytes(8, "little") + header + data[8 + n :]
    )
    tensors, metadata = load_file(tmp_path / "ws.safetensors")
    assert metadata == _VALID["loaded"][1]
    for k, v in _VALID["loaded"][0].items():
        assert np.array_equal(tensors[k], v)


# Files with valid checksums but hostile contents: random configs and checkpoint states. The
# checksums prove nothing about intent (anyone can compute them): only ModelFormatError (or a
# StateDictError for weights that do not fit the architecture) may come out.
_NAMES = st.sampled_from(
    ["Dense", "Sequential", "ReLU", "LSTM", "Conv2d", "Embedding", "Residual", "ModuleDict", "Nope"]
)
_SCALARS = st.one_of(
    st.integers(-3, 9),
    st.floats(allow_nan=False, allow_infinity=False, width=16),
    st.booleans(),
    st.none(),
    st.text(max_size=3),
)
_TAGS = st.sampled_from(
    ["__module__", "__shared__", "__tuple__", "__float__", "__dtype__", "__array__", "__dict__"]
)
_JSON = st.recursive(
    _SCALARS,
    lambda c: st.one_of(
        st.lists(c, max_size=3),
        st.dictionaries(st.one_of(_TAGS, st.text(max_size=4)), c, max_size=3),
    ),
    max_leaves=10,
)
_ARGS = st.sampled_from(["in_features", "out_features", "layers", "module", "bias", "hidden_size"])
_CONFIG = st.recursive(
    st.fixed_dictionaries({"class": _NAMES, "config": st.dictionaries(_ARGS, _JSON, max_size=3)}),
    lambda c: st.fixed_dictionaries(
        {
            "class": _NAMES,
            "config": st.fixed_dictionaries(
                {"layers": st.lists(st.fixed_dictionaries({"__module__": c}), max_size=3)}
            ),
        }
    ),
    max_leaves=4,
)


@given(config=_CONFIG, state=_JSON)
def test_hostile_configs_and_states_with_valid_checksums(config, state, tmp_path_factory):
    from nnframe.io.serialization import save_file

    path = tmp_path_factory.getbasetemp() / "hostile.safetensors"
    meta = {
        "nnframe.kind": "checkpoint",
        "nnframe.config": json.dumps(config),
        "nnframe.checkpoint": json.dumps({"extra": state, "rng": state, "loader": state}),
    }
    save_file({"model/weight": np.zeros((2, 2), np.float32), "state/0": np.ones(1)}, path, meta)
    for load in (nf.load, nf.load_checkpoint):
        try:
            load(path)
        except (nf.ModelFormatError, nf.StateDictError):
            pass
