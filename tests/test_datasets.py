"""nnframe.datasets: the bundled digits, IDX reading/writing, load_mnist from small IDX files the
tests write (gzip or not, local dir, cache, a file:// mirror, checksums, offline), synthetic sets."""

import gzip
import hashlib

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from nnframe.training import datasets as D
from tests.strategies import seeds

CHECKED_MODULES = []  # no Module or Loss here


def test_load_digits_is_the_real_bundled_set():
    pytest.importorskip("sklearn")
    x, y = D.load_digits()
    assert x.shape == (1797, 64) and x.dtype == np.float32 and y.dtype == np.int64
    assert 0.0 <= x.min() and x.max() == 1.0
    assert np.bincount(y).tolist() == [178, 182, 177, 183, 181, 182, 181, 179, 174, 180]
    images, labels = D.load_digits(as_images=True)
    assert images.shape == (1797, 1, 8, 8)
    np.testing.assert_array_equal(images.reshape(1797, 64), x)
    from sklearn.datasets import load_digits

    np.testing.assert_allclose(x * 16, load_digits().data)


@pytest.mark.parametrize("dtype", [np.uint8, np.int8, np.int16, np.int32, np.float32, np.float64])
@pytest.mark.parametrize("compress", [False, True])
def test_idx_round_trip(tmp_path, dtype, compress):
    a = (np.arange(24).reshape(2, 3, 4) - (0 if dtype == np.uint8 else 5)).astype(dtype)
    path = tmp_path / ("a.idx.gz" if compress else "a.idx")
    D.write_idx(path, a)
    raw = path.read_bytes()
    assert (raw[:2] == b"\x1f\x8b") == compress
    back = D.read_idx(path)
    assert back.dtype == np.dtype(dtype) and back.dtype.isnative
    np.testing.assert_array_equal(back, a)


def test_idx_header_is_the_published_format(tmp_path):
    path = tmp_path / "labels"
    D.write_idx(path, np.array([7, 2, 1], dtype=np.uint8))
    # magic 0x00000801 (uint8, 1 dimension), then the size 3 as a big-endian uint32, then data
    assert path.read_bytes() == bytes([0, 0, 8, 1, 0, 0, 0, 3, 7, 2, 1])


def test_idx_errors(tmp_path):
    bad = tmp_path / "bad"
    bad.write_bytes(b"\x01\x02\x03\x04")
    with pytest.raises(ValueError, match=r"read_idx\(.*\): expected an IDX header"):
        D.read_idx(bad)
    short = tmp_path / "short"
    short.write_bytes(bytes([0, 0, 8, 1, 0, 0, 0, 5, 1, 2]))
    with pytest.raises(ValueError, match=r"expected 5 data bytes for shape \(5,\), got 2"):
        D.read_idx(short)
    with pytest.raises(TypeError, match=r"write_idx: expected uint8"):
        D.write_idx(tmp_path / "x", np.zeros(2, dtype=np.uint16))


def write_mnist(directory, split="train", n=6, compress=True, seed=0):
    """Small MNIST-like IDX files; returns (images, labels, {file name: md5})."""
    directory.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
    labels = rng.integers(0, 10, size=n).astype(np.uint8)
    prefix = "train" if split == "train" else "t10k"
    suffix = ".gz" if compress else ""
    sums = {}
    for stem, arr in [
        (f"{prefix}-images-idx3-ubyte", images),
        (f"{prefix}-labels-idx1-ubyte", labels),
    ]:
        path = directory / (stem + suffix)
        D.write_idx(path, arr, compress=compress)
        sums[path.name] = hashlib.md5(path.read_bytes()).hexdigest()
    return images, labels, sums


@pytest.mark.parametrize("compress", [True, False])
def test_load_mnist_from_a_local_directory(tmp_path, compress):
    images, labels, _ = write_mnist(tmp_path / "files", "test", compress=compress)
    x, y = D.load_mnist(
        split="test", path=tmp_path / "files", cache_dir=tmp_path / "cache", download=False
    )
    assert x.shape == (6, 784) and x.dtype == np.float32 and y.dtype == np.int64
    np.testing.assert_allclose(x * 255, images.reshape(6, -1))
    np.testing.assert_array_equal(y, labels)
    x4, _ = D.load_mnist(split="test", path=tmp_path / "files", download=False, as_images=True,
                         cache_dir=tmp_path / "cache")  # fmt: skip
    assert x4.shape == (6, 1, 28, 28)


def test_load_mnist_downloads_from_a_mirror_into_the_cache_and_verifies(tmp_path):
    images, labels, sums = write_mnist(tmp_path / "mirror", "train", seed=3)
    cache = tmp_path / "cache"
    mirror = (tmp_path / "mirror").as_uri() + "/"
    x, y = D.load_mnist(kind="fashion", cache_dir=cache, mirror=mirror, checksums=sums)
    np.testing.assert_array_equal(y, labels)
    assert sorted(p.name for p in (cache / "fashion").iterdir()) == sorted(sums)
    # offline afterwards: the cache serves the files (and they are verified again)
    x2, _ = D.load_mnist(kind="fashion", cache_dir=cache, download=False, checksums=sums)
    np.testing.assert_array_equal(x2, x)


def test_load_mnist_refuses_a_bad_checksum_and_keeps_nothing(tmp_path):
    _, _, sums = write_mnist(tmp_path / "mirror", "train")
    bad = {name: "0" * 32 for name in sums}
    cache = tmp_path / "cache"
    with pytest.raises(
        ValueError, match=r"load_mnist: expected MD5 0{32} for file:.*got [0-9a-f]{32}"
    ):
        D.load_mnist(cache_dir=cache, mirror=(tmp_path / "mirror").as_uri(), checksums=bad)
    assert not any((cache / "digits").iterdir())  # the corrupted download was discarded


def test_load_mnist_detects_a_corrupted_cache_file(tmp_path):
    _, _, sums = write_mnist(tmp_path / "cache" / "digits", "train")
    path = tmp_path / "cache" / "digits" / "train-labels-idx1-ubyte.gz"
    path.write_bytes(gzip.compress(b"\x00\x00\x08\x01\x00\x00\x00\x01\x05"))
    with pytest.raises(ValueError, match=r"Delete the file to download it again"):
        D.load_mnist(cache_dir=tmp_path / "cache", download=False, checksums=sums)


def test_load_mnist_offline_says_what_to_do(tmp_path):
    with pytest.raises(FileNotFoundError) as info:
        D.load_mnist(cache_dir=tmp_path / "cache", download=False)
    message = str(info.value)
    assert "train-images-idx3-ubyte.gz" in message and str(tmp_path / "cache" / "digits") in message
    assert "path=" in message and "mirror=" in message
    unreachable = (tmp_path / "nowhere").as_uri() + "/"
    with pytest.raises(FileNotFoundError, match=r"download failed: file:"):
        D.load_mnist(cache_dir=tmp_path / "cache", mirror=unreachable)


def test_load_mnist_arguments_and_defaults(monkeypatch, tmp_path):
    with pytest.raises(ValueError, match=r"load_mnist: invalid kind='kmnist'"):
        D.load_mnist(kind="kmnist")
    with pytest.raises(ValueError, match=r"load_mnist: invalid split='val'"):
        D.load_mnist(split="val")
    monkeypatch.setenv("NNFRAME_DATA", str(tmp_path / "data"))
    assert D.default_cache_dir() == tmp_path / "data"
    assert set(D.MNIST_MD5["digits"]) == set(D.MNIST_MD5["fashion"])
    assert all(len(v) == 32 for sums in D.MNIST_MD5.values() for v in sums.values())


@given(seed=seeds, n=st.integers(4, 50))
def test_synthetic_sets_shapes_dtypes_and_seeding(seed, n):
    for make in (D.make_spirals, D.make_moons, D.make_xor):
        x, y = make(n, rng=seed)
        assert x.shape == (n, 2) and x.dtype == np.float32 and y.dtype == np.int64
        assert set(np.unique(y)) <= {0, 1}
        x2, y2 = make(n, rng=seed)
        np.testing.assert_array_equal(x, x2)
        np.testing.assert_array_equal(y, y2)
    x, y = D.make_spirals(n, n_arms=3, rng=seed)
    assert set(np.unique(y)) <= {0, 1, 2}
    xs, ys = D.make_sine_sequences(n, seq_len=7, rng=seed)
    assert xs.shape == (n, 7, 1) and ys.shape == (n, 1) and xs.dtype == np.float32


def test_synthetic_sets_have_their_structure():
    x, y = D.make_xor(400, noise=0.1, rng=0)
    np.testing.assert_array_equal(y, (np.sign(x[:, 0]) != np.sign(x[:, 1])).astype(np.int64))
    xs, ys = D.make_sine_sequences(5, seq_len=10, noise=0.0, rng=0)
    assert np.all(np.abs(xs) <= 1) and np.all(np.abs(ys) <= 1)
    x, y = D.make_spirals(200, noise=0.0, rng=0)
    radius = np.linalg.norm(x, axis=1)
    assert radius.max() <= 1.0 + 1e-6 and np.bincount(y).tolist() == [100, 100]


# ---------------------------------------------------------------------- issue 15: declared sizes
@pytest.mark.parametrize("compress", [False, True])
@pytest.mark.parametrize(
    "code, dims",
    [(0x0E, (65535, 65535, 4)), (0x08, (2**32 - 1, 3)), (0x0D, (2**32 - 1, 2**32 - 1, 2**32 - 1))],
)
def test_read_idx_checks_declared_sizes_against_the_file(tmp_path, code, dims, compress):
    # issue 15 defect 13: a 32-byte file declaring 137 GB raised MemoryError; 2**32-1 x 3 wrapped
    import gzip
    import struct
    import tracemalloc

    raw = struct.pack(">BBBB", 0, 0, code, len(dims)) + struct.pack(f">{len(dims)}I", *dims)
    raw += b"\x00" * 16
    path = tmp_path / ("crafted.idx.gz" if compress else "crafted.idx")
    path.write_bytes(gzip.compress(raw) if compress else raw)
    tracemalloc.start()
    try:
        with pytest.raises(ValueError, match=r"read_idx\(.*\): expected \d+ data bytes for shape"):
            D.read_idx(path)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 4_000_000


def test_read_idx_refuses_more_dimensions_than_numpy_holds(tmp_path):
    import struct

    path = tmp_path / "deep.idx"
    path.write_bytes(
        struct.pack(">BBBB", 0, 0, 0x08, 200) + struct.pack(">200I", *[1] * 200) + b"\x00"
    )
    with pytest.raises(ValueError, match=r"expected at most 32 dimensions, got 200"):
        D.read_idx(path)
