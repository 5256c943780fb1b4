"""Model files: round trips, interop with the safetensors package and PyTorch, checksums, atomic
writes, and every malformed-file case raising ModelFormatError with a clear message."""

import json
import os
import pickle
import struct
import tracemalloc
import zipfile

import numpy as np
import pytest
from hypothesis import given

import nnframe as nf
from nnframe.io.serialization import FORMAT_VERSION, load_file, save_file
from tests.strategies import seeds

CHECKED_MODULES = []


def mlp(seed=0):
    return nf.Sequential(nf.Dense(3, 5, rng=seed), nf.Tanh(), nf.Dense(5, 2, rng=seed + 1))


def assert_same_state(a, b):
    sa, sb = a.state_dict(), b.state_dict()
    assert list(sa) == list(sb)
    for k in sa:
        assert sa[k].dtype == sb[k].dtype and np.array_equal(sa[k], sb[k]), k


# ---------------------------------------------------------------------- round trips
@given(seed=seeds)
def test_save_load_whole_model_round_trip(seed, tmp_path_factory):
    path = tmp_path_factory.mktemp("m") / "model.safetensors"
    model = mlp(seed % 1000)
    nf.save(model, path)
    loaded = nf.load(path)
    assert repr(loaded) == repr(model)
    assert_same_state(model, loaded)
    x = np.random.default_rng(seed).normal(size=(4, 3)).astype(np.float32)
    assert np.array_equal(model(x), loaded(x))


def test_save_load_float64_model_keeps_dtype(tmp_path):
    model = mlp().to(np.float64)
    nf.save(model, tmp_path / "m.safetensors")
    loaded = nf.load(tmp_path / "m.safetensors")
    assert loaded.dtype == np.float64
    assert_same_state(model, loaded)


def test_save_weights_load_weights(tmp_path):
    a, b = mlp(0), mlp(7)
    nf.save_weights(a, tmp_path / "w.safetensors")
    assert nf.load_weights(b, tmp_path / "w.safetensors") is b
    assert_same_state(a, b)


def test_load_of_weights_only_file_says_what_to_do(tmp_path):
    nf.save_weights(mlp(), tmp_path / "w.safetensors")
    with pytest.raises(nf.ModelFormatError, match="weights only .*load_weights"):
        nf.load(tmp_path / "w.safetensors")


def test_file_tensors_and_dtypes_round_trip(tmp_path):
    tensors = {
        "f32": np.arange(6, dtype=np.float32).reshape(2, 3),
        "f64": np.array([1.5, -2.0]),
        "f16": np.array([0.5], dtype=np.float16),
        "i64": np.array([[1, -2]], dtype=np.int64),
        "u8": np.array([255], dtype=np.uint8),
        "b": np.array([True, False]),
        "scalar": np.array(3.0, dtype=np.float32),
        "empty": np.zeros((0, 4), dtype=np.float32),
        "big_endian": np.array([1.0, 2.0], dtype=">f8"),
        "strided": np.arange(10, dtype=np.int32)[::3],
    }
    save_file(tensors, tmp_path / "t.safetensors", {"note": "hello"})
    loaded, meta = load_file(tmp_path / "t.safetensors")
    assert list(loaded) == list(tensors)
    for k, v in tensors.items():
        assert loaded[k].shape == v.shape and np.array_equal(loaded[k], v), k
        assert loaded[k].dtype == v.dtype.newbyteorder("="), k
        assert loaded[k].flags.writeable
    assert meta["note"] == "hello"
    assert meta["nnframe.format_version"] == str(FORMAT_VERSION)
    assert meta["nnframe.version"] == nf.__version__


def test_save_refuses_unstorable_values(tmp_path):
    with pytest.raises(TypeError, match="tensor 'x': expected a bool, integer or float array"):
        save_file({"x": np.array(["a"], dtype=object)}, tmp_path / "t.safetensors")
    with pytest.raises(TypeError, match="expected str tensor names"):
        save_file({1: np.zeros(1)}, tmp_path / "t.safetensors")
    with pytest.raises(TypeError, match="metadata 'k': expected a str"):
        save_file({"x": np.zeros(1)}, tmp_path / "t.safetensors", {"k": 1})
    assert not os.listdir(tmp_path)


# ---------------------------------------------------------------------- interop
def test_safetensors_package_reads_nnframe_files(tmp_path):
    st_numpy = pytest.importorskip("safetensors.numpy")
    model = mlp()
    nf.save(model, tmp_path / "m.safetensors")
    theirs = st_numpy.load_file(str(tmp_path / "m.safetensors"))
    state = model.state_dict()
    assert set(theirs) == set(state)
    for k in state:
        assert np.array_equal(theirs[k], state[k])


def test_nnframe_reads_safetensors_package_files(tmp_path):
    st_numpy = pytest.importorskip("safetensors.numpy")
    tensors = {
        "a": np.arange(12, dtype=np.float32).reshape(3, 4),
        "b": np.array([1, 2, 3], dtype=np.int16),
        "c": np.array([0.25], dtype=np.float64),
    }
    st_numpy.save_file(tensors, str(tmp_path / "t.safetensors"), metadata={"who": "them"})
    loaded, meta = load_file(tmp_path / "t.safetensors")
    assert meta == {"who": "them"}  # a foreign file: no nnframe checksums, accepted as is
    for k, v in tensors.items():
        assert loaded[k].dtype == v.dtype and np.array_equal(loaded[k], v)


def test_pytorch_state_dict_loads_into_equivalent_model(tmp_path):
    torch = pytest.importorskip("torch")
    st_torch = pytest.importorskip("safetensors.torch")
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(3, 5), torch.nn.Tanh(), torch.nn.Linear(5, 2))
    st_torch.save_file(net.state_dict(), str(tmp_path / "torch.safetensors"))
    model = nf.load_weights(mlp(99), tmp_path / "torch.safetensors")
    x = np.random.default_rng(0).normal(size=(4, 3)).astype(np.float32)
    with torch.no_grad():
        expected = net(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(model(x), expected, rtol=1e-5, atol=1e-6)
    # and back: PyTorch reads nnframe's file into the same network
    nf.save_weights(model, tmp_path / "nf.safetensors")
    net2 = torch.nn.Sequential(torch.nn.Linear(3, 5), torch.nn.Tanh(), torch.nn.Linear(5, 2))
    net2.load_state_dict(st_torch.load_file(str(tmp_path / "nf.safetensors")))
    with torch.no_grad():
        np.testing.assert_array_equal(net2(torch.from_numpy(x)).numpy(), expected)


def test_pytorch_cnn_and_lstm_files_load_into_nnframe_models(tmp_path):
    torch = pytest.importorskip("torch")
    st_torch = pytest.importorskip("safetensors.torch")
    torch.manual_seed(0)
    cnn = torch.nn.Sequential(
        torch.nn.Conv2d(2, 4, 3, padding=1),
        torch.nn.BatchNorm2d(4),
        torch.nn.ReLU(),
        torch.nn.MaxPool2d(2),
        torch.nn.Flatten(),
        torch.nn.Linear(36, 5),
    )
    cnn(torch.randn(8, 2, 6, 6))  # running statistics move away from their initial values
    cnn.eval()
    st_torch.save_file(cnn.state_dict(), str(tmp_path / "cnn.safetensors"))
    model = nf.Sequential(
        nf.Conv2d(2, 4, 3, padding=1),
        nf.BatchNorm2d(4),
        nf.ReLU(),
        nf.MaxPool2d(2),
        nf.Flatten(),
        nf.Dense(36, 5),
    )
    nf.load_weights(model, tmp_path / "cnn.safetensors").eval()
    x = np.random.default_rng(0).normal(size=(3, 2, 6, 6)).astype(np.float32)
    with torch.no_grad():
        np.testing.assert_allclose(model(x), cnn(torch.from_numpy(x)).numpy(), atol=1e-5)

    lstm = torch.nn.LSTM(3, 4, num_layers=2, batch_first=True)
    st_torch.save_file(lstm.state_dict(), str(tmp_path / "lstm.safetensors"))
    ours = nf.load_weights(
        nf.LSTM(3, 4, num_layers=2, batch_first=True), tmp_path / "lstm.safetensors"
    )
    x = np.random.default_rng(1).normal(size=(2, 5, 3)).astype(np.float32)
    out = ours(x)
    out = out[0] if isinstance(out, tuple) else out
    with torch.no_grad():
        np.testing.assert_allclose(out, lstm(torch.from_numpy(x))[0].numpy(), atol=1e-5)


def test_bfloat16_files_widen_to_float32(tmp_path):
    torch = pytest.importorskip("torch")
    st_torch = pytest.importorskip("safetensors.torch")
    t = torch.tensor([1.0, -2.5, 3.140625, 1e30], dtype=torch.bfloat16)
    st_torch.save_file({"w": t}, str(tmp_path / "bf.safetensors"))
    loaded, _ = load_file(tmp_path / "bf.safetensors")
    assert loaded["w"].dtype == np.float32
    np.testing.assert_array_equal(loaded["w"], t.float().numpy())


def test_mismatched_model_reports_every_key_at_once(tmp_path):
    nf.save_weights(mlp(), tmp_path / "w.safetensors")
    other = nf.Sequential(nf.Dense(3, 4, rng=0), nf.Tanh(), nf.Dense(4, 2), nf.Dense(2, 2))
    with pytest.raises(nf.StateDictError) as info:
        nf.load_weights(other, tmp_path / "w.safetensors")
    message = str(info.value)
    assert "missing key '3.weight'" in message and "missing key '3.bias'" in message
    assert "0.weight: expected shape (4, 3), got (5, 3)" in message
    assert "2.weight: expected shape (2, 4), got (2, 5)" in message


def test_float64_file_into_float32_model_casts_only_when_asked(tmp_path):
    nf.save_weights(mlp().to(np.float64), tmp_path / "w.safetensors")
    model = mlp(3)
    with pytest.raises(nf.StateDictError, match="expected dtype float32, got float64"):
        nf.load_weights(model, tmp_path / "w.safetensors")
    nf.load_weights(model, tmp_path / "w.safetensors", cast=True)
    assert model.dtype == np.float32
    np.testing.assert_array_equal(model[0].weight.data, mlp()[0].weight.data)


# ---------------------------------------------------------------------- checksums, versions
def test_flipped_bit_in_tensor_bytes_is_caught(tmp_path):
    path = tmp_path / "m.safetensors"
    nf.save(mlp(), path)
    raw = bytearray(path.read_bytes())
    raw[-3] ^= 0x10
    path.write_bytes(bytes(raw))
    with pytest.raises(nf.ModelFormatError, match="checksum mismatch: the tensor bytes"):
        nf.load(path)


def rewrite_header(path, edit):
    """Rewrites ``path``'s JSON header through ``edit(header_dict)``, keeping the body."""
    raw = path.read_bytes()
    n = int.from_bytes(raw[:8], "little")
    header = json.loads(raw[8 : 8 + n])
    edit(header)
    new = json.dumps(header).encode()
    path.write_bytes(len(new).to_bytes(8, "little") + new + raw[8 + n :])


def test_renamed_tensor_is_caught_by_the_header_checksum(tmp_path):
    path = tmp_path / "m.safetensors"
    nf.save(mlp(), path)
    rewrite_header(path, lambda h: h.__setitem__("0.bias_", h.pop("0.bias")))
    with pytest.raises(nf.ModelFormatError, match="checksum mismatch: the header"):
        nf.load(path)


def test_newer_format_version_is_refused(tmp_path):
    path = tmp_path / "m.safetensors"
    nf.save(mlp(), path)
    rewrite_header(path, lambda h: h["__metadata__"].__setitem__("nnframe.format_version", "999"))
    with pytest.raises(nf.ModelFormatError, match="expected format version <= 1, got 999.*newer"):
        nf.load(path)


def test_missing_checksum_in_nnframe_file_is_refused(tmp_path):
    path = tmp_path / "m.safetensors"
    nf.save(mlp(), path)
    rewrite_header(path, lambda h: h["__metadata__"].pop("nnframe.sha256"))
    with pytest.raises(nf.ModelFormatError, match="no nnframe.sha256 checksum"):
        nf.load(path)


# ---------------------------------------------------------------------- malformed files
def raw_file(header, body=b"", length=None) -> bytes:
    """A safetensors file from a header (dict, str or bytes), a body and an optional header
    length that disagrees with the header."""
    if isinstance(header, dict):
        header = json.dumps(header)
    if isinstance(header, str):
        header = header.encode()
    n = len(header) if length is None else length
    return struct.pack("<Q", n) + header + body


F32_2 = {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}
GOOD_BODY = np.array([1.0, 2.0], dtype="<f4").tobytes()

MALFORMED = {
    "empty": (b"", "the file is empty"),
    "fewer than 8 bytes": (b"\x05\x00\x00", "fewer than the 8-byte header length"),
    "header longer than file": (raw_file({"a": F32_2}, GOOD_BODY, 10_000), "larger than the rest"),
    "absurd header length": (raw_file("{}", b"", 2**63), "absurdly large"),
    "invalid utf-8": (raw_file(b'{"\xff\xfe": 1}'), "not valid UTF-8"),
    "invalid json": (raw_file('{"a": '), "not valid JSON"),
    "json list": (raw_file("[1, 2]"), "not a JSON object"),
    "json number": (raw_file("12"), "not a JSON object"),
    "deeply nested json": (raw_file("{" + '"a":[' * 100_000), "nested too deeply|not valid JSON"),
    "NaN constant": (raw_file('{"__metadata__": {"x": NaN}}'), "NaN in the header"),
    "duplicate tensor names": (
        raw_file(f'{{"a": {json.dumps(F32_2)}, "a": {json.dumps(F32_2)}}}', GOOD_BODY),
        "duplicate key 'a'",
    ),
    "unknown dtype": (raw_file({"a": {**F32_2, "dtype": "F33"}}, GOOD_BODY), "unknown dtype 'F33'"),
    "fp8 dtype": (raw_file({"a": {**F32_2, "dtype": "F8_E4M3"}}, GOOD_BODY), "F8_E4M3 is not supp"),
    "negative shape": (raw_file({"a": {**F32_2, "shape": [-2]}}, GOOD_BODY), "non-negative integ"),
    "float shape": (raw_file({"a": {**F32_2, "shape": [2.0]}}, GOOD_BODY), "non-negative integ"),
    "bool shape": (raw_file({"a": {**F32_2, "shape": [True]}}, GOOD_BODY), "non-negative integ"),
    "overflowing shape": (
        raw_file({"a": {**F32_2, "shape": [2**40, 2**40, 2**40]}}, GOOD_BODY),
        r"needs \d+ bytes, but data_offsets \[0, 8\] span 8",
    ),
    "huge dimension of an empty tensor": (
        raw_file({"a": {"dtype": "F32", "shape": [0, 2**70], "data_offsets": [0, 0]}}),
        "too many or too large dimensions",
    ),
    "too many dimensions": (
        raw_file({"a": {"dtype": "F32", "shape": [0] * 70, "data_offsets": [0, 0]}}),
        "too many or too large dimensions",
    ),
    "size disagrees with offsets": (
        raw_file({"a": {**F32_2, "shape": [3]}}, GOOD_BODY),
        "needs 12 bytes, but data_offsets",
    ),
    "offsets reversed": (
        raw_file({"a": {**F32_2, "data_offsets": [8, 0]}}, GOOD_BODY),
        r"data_offsets must be \[begin, end\]",
    ),
    "missing field": (
        raw_file({"a": {"dtype": "F32", "shape": [2]}}, GOOD_BODY),
        "dtype, shape and",
    ),
    "overlapping offsets": (
        raw_file(
            {"a": F32_2, "b": {"dtype": "F32", "shape": [1], "data_offsets": [4, 8]}}, GOOD_BODY
        ),
        "overlaps",
    ),
    "gap": (
        raw_file({"a": {"dtype": "F32", "shape": [1], "data_offsets": [4, 8]}}, GOOD_BODY),
        "gap of 4 bytes before tensor 'a'",
    ),
    "offsets past the end": (
        raw_file({"a": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]}}, GOOD_BODY),
        "truncated body: the tensors need 16 bytes, the file holds 8",
    ),
    "trailing bytes": (raw_file({"a": F32_2}, GOOD_BODY + b"\x00" * 4), "4 trailing bytes"),
    "truncated body": (raw_file({"a": F32_2}, GOOD_BODY[:5]), "truncated body"),
    "metadata not strings": (raw_file({"__metadata__": {"x": 1}}), "__metadata__ must be"),
    "pickle": (pickle.dumps({"w": [1.0, 2.0]}), "got a Python pickle"),
    "pickle protocol 2": (pickle.dumps([1], protocol=2), "got a Python pickle"),
    "npy": (b"\x93NUMPY\x01\x00v\x00{'descr': '<f8'}", "got a numpy .npy file"),
}


@pytest.mark.parametrize("case", sorted(MALFORMED))
def test_malformed_file_raises_model_format_error(case, tmp_path):
    data, message = MALFORMED[case]
    path = tmp_path / "bad.safetensors"
    path.write_bytes(data)
    with pytest.raises(nf.ModelFormatError, match=message):
        load_file(path)
    with pytest.raises(nf.ModelFormatError, match=message):
        nf.load_weights(mlp(), path)
    assert "bad.safetensors" in str(pytest.raises(nf.ModelFormatError, load_file, path).value)


def test_npz_and_torch_zip_are_named(tmp_path):
    np.savez(tmp_path / "w.npz", a=np.zeros(3))
    with pytest.raises(nf.ModelFormatError, match="got a zip archive .*npz"):
        nf.load(tmp_path / "w.npz")
    with zipfile.ZipFile(tmp_path / "t.pt", "w") as z:
        z.writestr("archive/data.pkl", b"\x80\x02}q\x00.")
    with pytest.raises(nf.ModelFormatError, match="zip archive"):
        nf.load(tmp_path / "t.pt")


def test_directory_and_special_paths(tmp_path):
    with pytest.raises(nf.ModelFormatError, match="expected a safetensors file, got a directory"):
        nf.load(tmp_path)
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)  # opening it would block forever: refused from its type alone
    with pytest.raises(nf.ModelFormatError, match="expected a regular file"):
        nf.load(fifo)
    with pytest.raises(FileNotFoundError, match="no such file"):
        nf.load(tmp_path / "missing.safetensors")


@pytest.mark.parametrize(
    "data",
    [
        raw_file("{}", b"", 90_000_000),  # a large header length, below the absurd limit
        raw_file({"a": {"dtype": "F64", "shape": [2**40], "data_offsets": [0, 2**43]}}),
        raw_file({"a": {"dtype": "F64", "shape": [2**20], "data_offsets": [0, 2**23]}}),
    ],
)
def test_loader_never_allocates_beyond_the_file_size(data, tmp_path):
    path = tmp_path / "bad.safetensors"
    path.write_bytes(data)
    tracemalloc.start()
    try:
        with pytest.raises(nf.ModelFormatError):
            load_file(path)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 64 * 1024 + 4 * len(data)


def test_valid_file_whose_length_bytes_look_like_a_pickle_loads(tmp_path):
    header = json.dumps({"a": F32_2}).encode()
    header += b" " * (0x0280 - len(header))  # length 640: bytes 80 02, a pickle's first two
    path = tmp_path / "t.safetensors"
    path.write_bytes(raw_file(header, GOOD_BODY))
    assert path.read_bytes()[:2] == b"\x80\x02"
    np.testing.assert_array_equal(load_file(path)[0]["a"], [1.0, 2.0])


# ---------------------------------------------------------------------- issue 15: bounded headers
@pytest.mark.parametrize(
    "unit",
    [b"{},", b"[],", b"0,", b'"ab",', b'{"k":1},'],
    ids=["objects", "lists", "numbers", "strings", "small dicts"],
)
def test_a_header_of_millions_of_tiny_values_is_refused_with_bounded_memory(tmp_path, unit):
    # issue 15 defect 3: 94 MB of tiny JSON objects cost +2.46 GB before being refused
    header = b'{"x":[' + (unit * (6_000_000 // len(unit))).rstrip(b",") + b"]}"
    path = tmp_path / "crafted.safetensors"
    path.write_bytes(raw_file(header))
    size = path.stat().st_size
    tracemalloc.start()
    try:
        with pytest.raises(nf.ModelFormatError, match="crafted header|expected an object"):
            load_file(path)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 4 * size, f"{peak / size:.1f}x the file size"


def test_a_real_header_of_many_tensors_still_loads(tmp_path):
    # the density bounds pass real files: 20000 small 4-D tensors make a header over 1 MiB
    tensors = {f"block{i}.conv.weight": np.zeros((1, 1, 1, 1), np.float32) for i in range(20000)}
    path = tmp_path / "many.safetensors"
    save_file(tensors, path, {"note": '{"a": [1, 2, {"b": "c"}]}' * 2000})
    loaded, meta = load_file(path)
    assert len(loaded) == 20000 and meta["note"].startswith('{"a"')


# ---------------------------------------------------------------------- issue 15: temporaries
def _dead_pid() -> int:
    import subprocess
    import sys

    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_a_255_byte_file_name_can_be_saved(tmp_path):
    # issue 15 defect 9: the temporary name added ~19 characters (File name too long)
    name = "m" * 243 + ".safetensors"
    assert len(name) == 255
    save_file({"a": np.ones(2, np.float32)}, tmp_path / name)
    assert load_file(tmp_path / name)[0]["a"].tolist() == [1.0, 1.0]
    assert os.listdir(tmp_path) == [name]
    utf8 = "é" * 120 + ".st"  # 243 bytes: shortening must not split a character
    save_file({"a": np.ones(1, np.float32)}, tmp_path / utf8)
    assert sorted(os.listdir(tmp_path)) == sorted([name, utf8])


def test_a_successful_save_removes_stale_temporaries_of_killed_saves(tmp_path):
    # issue 15 defect 8: 15 stale temporaries of killed saves held 2 GB
    from nnframe.io import serialization as ser

    target = tmp_path / "ckpt.safetensors"
    prefix = ser._temp_prefix(target.name, str(tmp_path))
    dead = tmp_path / f"{prefix}{ser._HOST}-{_dead_pid():x}.0123abcd.tmp"
    live = tmp_path / f"{prefix}{ser._HOST}-{os.getppid():x}.0123abcd.tmp"
    other_host = tmp_path / f"{prefix}ffffff-{_dead_pid():x}.0123abcd.tmp"
    legacy_old = tmp_path / ".ckpt.safetensors.0123456789ab.tmp"
    legacy_new = tmp_path / ".ckpt.safetensors.ba9876543210.tmp"
    other_target = tmp_path / ".other.safetensors.0123456789ab.tmp"
    for f in (dead, live, other_host, legacy_old, legacy_new, other_target):
        f.write_bytes(b"x" * 100)
    two_hours_ago = os.path.getmtime(legacy_old) - 7200
    os.utime(legacy_old, (two_hours_ago, two_hours_ago))
    os.utime(other_target, (two_hours_ago, two_hours_ago))
    save_file({"a": np.ones(2, np.float32)}, target)
    left = set(os.listdir(tmp_path))
    assert dead.name not in left and legacy_old.name not in left
    assert {live.name, other_host.name, legacy_new.name, other_target.name} <= left


def test_killed_saves_leave_no_temporaries_after_the_next_save(tmp_path):
    import signal
    import subprocess
    import sys
    import time

    target = tmp_path / "big.safetensors"
    code = (
        "import numpy as np, sys; from nnframe.io.serialization import save_file;"
        "save_file({'a': np.zeros(60_000_000, np.float32)}, sys.argv[1])"
    )
    for _ in range(2):
        child = subprocess.Popen([sys.executable, "-c", code, str(target)])
        deadline = time.time() + 60
        while not any(n.endswith(".tmp") for n in os.listdir(tmp_path)) and time.time() < deadline:
            time.sleep(0.01)
        child.send_signal(signal.SIGKILL)
        child.wait()
    assert any(n.endswith(".tmp") for n in os.listdir(tmp_path))
    save_file({"a": np.ones(2, np.float32)}, target)
    assert os.listdir(tmp_path) == ["big.safetensors"]


def test_saving_over_a_symbolic_link_replaces_its_target_and_keeps_the_link(tmp_path):
    real = tmp_path / "ckpt-1.safetensors"
    save_file({"a": np.zeros(2, np.float32)}, real)
    link = tmp_path / "latest.safetensors"
    link.symlink_to(real.name)
    save_file({"a": np.ones(2, np.float32)}, link)
    assert link.is_symlink() and os.readlink(link) == real.name
    assert load_file(real)[0]["a"].tolist() == [1.0, 1.0]


@pytest.mark.parametrize("base, odd", [(np.float32, np.float64), (np.float64, np.float32)])
def test_a_model_with_layers_of_two_dtypes_loads_as_saved(tmp_path, base, odd):
    # issue 15 defect 6: saved, then load refused 'expected dtype float32, got float64'
    model = nf.Sequential(
        nf.Dense(3, 4, rng=0), nf.Tanh(), nf.Dense(4, 2, rng=1), nf.BatchNorm1d(2)
    ).to(base)
    model[2].to(odd)
    nf.save(model, tmp_path / "m.safetensors")
    loaded = nf.load(tmp_path / "m.safetensors")
    assert loaded[0].weight.data.dtype == base and loaded[2].weight.data.dtype == odd
    assert loaded[3].running_mean.dtype == base
    for k, v in model.state_dict().items():
        got = loaded.state_dict()[k]
        assert got.dtype == v.dtype and got.tobytes() == v.tobytes(), k


# ---------------------------------------------------------------------- issue 15: design notes
def test_integer_tensors_need_cast_to_go_into_a_float_model(tmp_path):
    model = nf.Sequential(nf.Dense(2, 2, rng=0))
    path = tmp_path / "w.safetensors"
    save_file({k: v.astype(np.int32) for k, v in model.state_dict().items()}, path)
    before = model.state_dict()
    with pytest.raises(nf.ModelFormatError, match=r"0.weight: expected dtype float32, got int32"):
        nf.load_weights(model, path)
    assert model.state_dict()["0.weight"].tobytes() == before["0.weight"].tobytes()
    nf.load_weights(model, path, cast=True)
    assert model[0].weight.data.dtype == np.float32


def test_parameters_tied_after_construction_are_refused_by_save_with_a_clear_message(tmp_path):
    model = nf.Sequential(nf.Dense(3, 3, rng=0), nf.Dense(3, 3, rng=1))
    model[1].weight = model[0].weight
    with pytest.raises(
        ValueError, match=r"save: expected parameters tied by a layer's constructor"
    ):
        nf.save(model, tmp_path / "m.safetensors")
    assert not os.listdir(tmp_path)
    shared = nf.Dense(3, 3, rng=0)  # a module used twice comes back shared
    nf.save(nf.Sequential(shared, nf.Tanh(), shared), tmp_path / "s.safetensors")
    loaded = nf.load(tmp_path / "s.safetensors")
    assert loaded[0] is loaded[2]
